"""The paper's experiments on tiny data: Figure 1 (ReLU against tanh) and the ablations."""

import json

import pytest
import torch

import alexnet.experiments.ablations as ablations
from alexnet.cli import main
from alexnet.experiments.relu_vs_tanh import Curve, FourLayerNet, _ratio, reached_targets


def test_the_four_layer_net_has_three_conv_layers_and_one_fully_connected():
    net = FourLayerNet(10, "tanh")
    learned = [m for m in net.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    assert [type(m).__name__ for m in learned] == ["Conv2d"] * 3 + ["Linear"]
    assert net(torch.zeros(2, 3, 32, 32)).shape == (2, 10)
    assert any(isinstance(m, torch.nn.Tanh) for m in net.modules())


def test_the_target_is_interpolated_between_checks():
    curve = Curve([0.0, 0.5, 1.0], [0.0, 2.0, 4.0], [0.9, 0.5, 0.1])
    assert curve.reaches(0.25) == pytest.approx((0.5 + 0.5 * 0.25 / 0.4, 2.0 + 2.0 * 0.25 / 0.4))
    assert curve.reaches(0.05) is None


def test_relu_vs_tanh_writes_figure_json_and_report(tmp_path, colour_tree, capsys):
    out = tmp_path / "fig1"
    argv = ["experiment", "relu-vs-tanh", "--data", str(colour_tree), "--out", str(out)]
    argv += ["--epochs", "2", "--lrs", "0.01,0.03", "--batch-size", "8", "--device", "cpu"]
    assert main(argv) == 0
    assert "tanh / ReLU epochs" in capsys.readouterr().out
    result = json.loads((out / "relu-vs-tanh.json").read_text())
    for name in ("relu", "tanh"):
        assert result[name]["lr"] in (0.01, 0.03)
        assert set(result[name]["sweep"]) == {"0.01", "0.03"}
        assert result[name]["curve"]["epochs"][-1] == 2
    assert (out / "relu-vs-tanh.png").stat().st_size > 0
    assert "data:image/png;base64," in (out / "report.html").read_text()


def test_ablations_table_and_resume(tmp_path, colour_tree, monkeypatch, capsys):
    out = tmp_path / "ablations"
    argv = ["experiment", "ablations", "--data", str(colour_tree), "--out", str(out)]
    argv += ["--seeds", "1", "--epochs", "1", "--batch-size", "8", "--workers", "0"]
    argv += ["--set", "data.val_fraction=0.25", "--no-progress"]
    assert main(argv) == 0
    summary = json.loads((out / "ablations.json").read_text())
    assert list(summary["ablations"]) == [a.name for a in ablations.ABLATIONS]
    assert (out / "one-tower-half-width" / "seed-0" / "recipe.json").exists()
    recipe = json.loads((out / "no-lrn" / "seed-0" / "recipe.json").read_text())
    assert recipe["model"]["lrn"] == "off" and recipe["data"]["pca_lighting"] is True
    table = (out / "ablations.md").read_text()
    assert "+1.4 / +1.2 (§3.3)" in table and "Δ top-1" in table
    capsys.readouterr()

    def no_training(*args, **kwargs):
        raise AssertionError("a finished ablation was trained again")

    monkeypatch.setattr(ablations, "fit", no_training)
    assert main(argv) == 0  # everything finished: read, not retrained
    assert "no-dropout" in capsys.readouterr().out


def test_ablations_resume_a_stopped_run(tmp_path, colour_tree, monkeypatch):
    base = ["data.source=" + str(colour_tree), "optim.batch_size=8", "run.workers=0"]
    base += ["data.val_fraction=0.25"]
    full = ablations.ABLATIONS[0]
    run = tmp_path / "full" / "seed-0"
    ablations.train_or_resume(
        ablations.ablation_recipe("digits", full, 0, base + ["schedule.epochs=1"]), run, False
    )
    resumed = []
    real_fit = ablations.fit
    monkeypatch.setattr(
        ablations,
        "fit",
        lambda *a, **k: resumed.append(k["resume_from"]["epoch"]) or real_fit(*a, **k),
    )
    record = ablations.train_or_resume(
        ablations.ablation_recipe("digits", full, 0, base + ["schedule.epochs=2"]), run, False
    )
    assert resumed == [1] and record["epoch"] == 2


@pytest.mark.slow
def test_relu_vs_tanh_on_digits_within_minutes(tmp_path):
    argv = ["experiment", "relu-vs-tanh", "--data", "digits", "--out", str(tmp_path)]
    assert main([*argv, "--epochs", "5", "--batch-size", "32", "--device", "cpu"]) == 0
    result = json.loads((tmp_path / "relu-vs-tanh.json").read_text())
    assert result["relu"]["epochs_to_target"] is not None


def test_each_target_is_timed_and_the_ratio_is_tanh_over_relu():
    relu = Curve([0.0, 1.0, 2.0], [0.0, 1.0, 2.0], [0.9, 0.2, 0.1])
    tanh = Curve([0.0, 1.0, 2.0], [0.0, 1.0, 2.0], [0.9, 0.5, 0.2])
    result = {name: {"reached": reached_targets(curve, (0.5, 0.2, 0.1))}
              for name, curve in (("relu", relu), ("tanh", tanh))}  # fmt: skip
    assert result["relu"]["reached"]["0.5"]["epochs"] == pytest.approx(4 / 7)
    assert result["tanh"]["reached"]["0.5"]["epochs"] == pytest.approx(1.0)
    assert _ratio(result, "0.5", "epochs") == pytest.approx(1.0 / (4 / 7))
    assert _ratio(result, "0.2", "epochs") == pytest.approx(2.0)
    assert _ratio(result, "0.1", "epochs") is None  # tanh never got there


def test_cuda_convnets_init_is_its_gaussians():
    torch.manual_seed(0)
    net = FourLayerNet(10, "relu", init="cuda-convnet")
    learned = [m for m in net.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    for layer, std in zip(learned, (1e-4, 1e-2, 1e-2, 1e-2), strict=True):
        assert layer.weight.std().item() == pytest.approx(std, rel=0.1)
        assert not layer.bias.any()


def test_relu_vs_tanh_times_several_targets_on_a_subset(tmp_path, colour_tree, capsys):
    out = tmp_path / "fig1"
    argv = ["experiment", "relu-vs-tanh", "--data", str(colour_tree), "--out", str(out)]
    argv += ["--epochs", "1", "--sweep-epochs", "1", "--lrs", "0.01", "--batch-size", "8"]
    argv += ["--target", "0.6", "--target", "0.4", "--train-subset", "20", "--device", "cpu"]
    assert main([*argv, "--init", "cuda-convnet"]) == 0
    printed = capsys.readouterr().out
    assert "60% training error" in printed and "40% training error" in printed
    result = json.loads((out / "relu-vs-tanh.json").read_text())
    assert result["targets"] == [0.6, 0.4] and set(result["ratios"]) == {"0.6", "0.4"}
    assert result["init"] == "cuda-convnet"
    assert "fixed subset of 20" in result["data"]
    assert "tanh / ReLU" in (out / "report.html").read_text()


def test_the_difference_to_the_full_net_is_paired_by_seed_with_a_t_interval():
    mean, low, high = ablations.paired_difference([0.30, 0.32, 0.34], [0.20, 0.21, 0.22])
    half = 4.302653 * 0.01 / 3**0.5  # t(0.975, 2 df) × sd of the differences / √3
    assert (mean, low, high) == pytest.approx((0.11, 0.11 - half, 0.11 + half), abs=1e-6)
    assert ablations.verdict(low, high) == "reproduced"
    assert (
        ablations.verdict(*ablations.paired_difference([0.1, 0.1], [0.2, 0.21])[1:]) == "reversed"
    )
    assert ablations.verdict(*ablations.paired_difference([0.2, 0.3], [0.25, 0.24])[1:]) == (
        "within noise"
    )
    assert ablations.verdict(*ablations.paired_difference([0.3], [0.2])[1:]) == (
        "one seed: no interval"
    )
