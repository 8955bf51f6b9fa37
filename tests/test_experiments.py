"""The paper's experiments on tiny data: Figure 1 (ReLU against tanh) and the ablations."""

import json

import pytest
import torch

import alexnet.experiments.ablation_verdicts as verdicts
import alexnet.experiments.ablations as ablations
from alexnet.cli import main
from alexnet.experiments.curves import Curve, reached_targets
from alexnet.experiments.four_layer_net import FourLayerNet
from alexnet.experiments.relu_vs_tanh import _level


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
    argv += ["--widen", "0"]
    assert main(argv) == 0
    assert "tanh / ReLU epochs" in capsys.readouterr().out
    result = json.loads((out / "relu-vs-tanh.json").read_text())
    for name in ("relu", "tanh"):
        assert result[name]["lr"] in (0.01, 0.03)
        assert set(result[name]["sweep"]["rates"]) == {"0.01", "0.03"}
        assert result[name]["runs"][0]["curve"]["epochs"][-1] == 2
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
    assert result["levels"]["0.25"]["relu_epochs"][0] is not None


def test_each_target_is_timed_and_the_ratio_is_tanh_over_relu():
    relu = Curve([0.0, 1.0, 2.0], [0.0, 1.0, 2.0], [0.9, 0.2, 0.1])
    tanh = Curve([0.0, 1.0, 2.0], [0.0, 1.0, 2.0], [0.9, 0.5, 0.2])
    result = {name: {"runs": [{"reached": reached_targets(curve, (0.5, 0.2, 0.1))}]}
              for name, curve in (("relu", relu), ("tanh", tanh))}  # fmt: skip
    result["linear_floor"] = 0.3
    assert result["relu"]["runs"][0]["reached"]["0.5"]["epochs"] == pytest.approx(4 / 7)
    assert result["tanh"]["runs"][0]["reached"]["0.5"]["epochs"] == pytest.approx(1.0)
    above = _level(result, "0.5", 0.5, epochs=2)
    assert above["ratio"] == pytest.approx(1.0 / (4 / 7)) and not above["below_linear_floor"]
    assert _level(result, "0.2", 0.2, epochs=2)["ratio"] == pytest.approx(2.0)
    missed = _level(result, "0.1", 0.1, epochs=2)  # tanh never got there: at least 2 / 2
    assert missed["lower_bound"] and missed["ratio"] == pytest.approx(1.0)
    assert missed["below_linear_floor"]


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
    argv += ["--widen", "0"]
    assert main([*argv, "--init", "cuda-convnet"]) == 0
    printed = capsys.readouterr().out
    assert "\n60% | " in printed and "\n40% | " in printed
    result = json.loads((out / "relu-vs-tanh.json").read_text())
    assert result["targets"] == [0.6, 0.4] and set(result["ratios"]) == {"0.6", "0.4"}
    assert result["init"] == "cuda-convnet"
    assert "fixed subset of 20" in result["data"]
    assert "tanh / ReLU" in (out / "report.html").read_text()


def test_the_difference_to_the_full_net_is_paired_by_seed_with_a_t_interval():
    mean, low, high = verdicts.paired_difference([0.30, 0.32, 0.34], [0.20, 0.21, 0.22])
    half = 4.302653 * 0.01 / 3**0.5  # t(0.975, 2 df) × sd of the differences / √3
    assert (mean, low, high) == pytest.approx((0.11, 0.11 - half, 0.11 + half), abs=1e-6)
    assert verdicts.verdict(100 * low, 100 * high, 1.4) == "reproduced"
    assert verdicts.verdict(-3.0, -0.5, 1.4) == "reversed"
    assert verdicts.verdict(-0.5, 0.72, 1.4) == "no effect larger than 0.8 points"
    assert verdicts.verdict(-0.5, 0.72, 0.4) == "undecided"  # the paper's 0.4 is inside
    assert verdicts.verdict(-0.5, 1.2, None) == "undecided"  # no paper figure: 1 point asked
    assert verdicts.verdict(*verdicts.paired_difference([0.3], [0.2])[1:], 1.0) == (
        "undecided (one seed)"
    )


def test_raw_scale_subtracts_the_mean_image_and_divides_nothing(colour_tree):
    from alexnet.data import open_source
    from alexnet.experiments.training_set import TrainingSet

    train = open_source(str(colour_tree)).train
    raw = TrainingSet.from_source(train, input_scale="raw")
    pixels = raw.images.double()  # the float64 reference, on 0-255
    images, _ = raw.batch(torch.arange(len(raw.labels)), "cpu")
    torch.testing.assert_close(images.double(), pixels - pixels.mean(dim=0), atol=1e-4, rtol=0)
    standardised = TrainingSet.from_source(train, input_scale="standardised")
    images, _ = standardised.batch(torch.arange(len(raw.labels)), "cpu")
    channels = images.double().transpose(0, 1).reshape(3, -1)
    torch.testing.assert_close(channels.mean(dim=1), torch.zeros(3, dtype=torch.float64),
                               atol=1e-5, rtol=0)  # fmt: skip
    torch.testing.assert_close(channels.std(dim=1), torch.ones(3, dtype=torch.float64),
                               atol=1e-3, rtol=0)  # fmt: skip


def test_the_linear_baseline_is_softmax_regression_started_at_zero():
    from alexnet.experiments.four_layer_net import build_net

    linear = build_net("linear", 10)
    learned = [m for m in linear.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    assert [tuple(m.weight.shape) for m in learned] == [(10, 3 * 32 * 32)]
    assert not any(p.any() for p in linear.parameters())
    x = torch.randn(4, 3, 32, 32)
    torch.testing.assert_close(linear(x), x.flatten(1) @ learned[0].weight.T)


def test_the_ratio_over_seeds_is_a_geometric_mean_with_a_t_interval_on_logs():
    import math

    from alexnet.experiments.intervals import ratio_interval

    ratio, low, high = ratio_interval([2.0, 8.0], [1.0, 1.0])
    half = 12.706205 * math.log(4) / 2  # t(0.975, 1 df) × sd(ln 2, ln 8) = ln 4 / √2, / √2
    assert (ratio, low, high) == pytest.approx((4.0, 4 * math.exp(-half), 4 * math.exp(half)))


def test_the_per_image_paired_test_against_a_hand_computed_case():
    import numpy as np

    from alexnet.experiments.intervals import mcnemar, per_image_difference

    full = np.array([1, 0, 0, 0, 0, 0, 0, 0, 0, 0], bool)
    ablated = np.array([1, 1, 1, 0, 0, 0, 0, 0, 0, 0], bool)  # two more images wrong
    # per image: two differences of 1, eight of 0: mean 0.2, sd √(1.6 / 9), n = 10
    half = 1.959964 * (1.6 / 9) ** 0.5 / 10**0.5
    assert per_image_difference(ablated[None], full[None]) == pytest.approx(
        (0.2, 0.2 - half, 0.2 + half)
    )
    assert mcnemar(ablated, full) == (2, 0, pytest.approx(0.5))  # 2 × (1/2)², two-sided
    two_seeds = per_image_difference(np.stack([ablated, full]), np.stack([full, full]))
    assert two_seeds[0] == pytest.approx(0.1)  # each image's difference averaged over seeds


def test_the_design_resolution_comes_from_the_full_nets_seeds():
    import numpy as np

    wrong = np.zeros((2, 100), bool)
    wrong[0, :10], wrong[1, 5:15] = True, True  # two seeds disagree on 10 of 100 images
    design = verdicts.resolution([0.10, 0.12], wrong)
    assert design["discordant"] == pytest.approx(0.1)
    spread = 2**0.5 * np.std([0.10, 0.12], ddof=1)
    assert design["by_seed"] == pytest.approx(100 * 12.706205 * spread / 2**0.5, rel=1e-6)
    assert design["by_image"] == pytest.approx(100 * 1.959964 * (0.1 / 100) ** 0.5 / 2**0.5)


def test_unit_statistics_against_a_hand_computed_tanh_layer():
    from alexnet.experiments.curves import UnitStatistics

    layer = torch.nn.Linear(1, 1)
    torch.nn.init.ones_(layer.weight)
    torch.nn.init.zeros_(layer.bias)
    model = torch.nn.Sequential(layer, torch.nn.Tanh())
    units = UnitStatistics(model)
    with torch.no_grad():
        model(torch.tensor([[0.0], [0.5], [3.0], [-3.0]]))
    assert units.saturated() == [0.5]  # |tanh(±3)| = 0.995 > 0.95; tanh(0.5) = 0.46
    assert units.stds() == pytest.approx([float(torch.tensor([0, 0.5, 3, -3.0]).double().std(
        unbiased=False))])  # fmt: skip


def test_a_sweep_widens_until_its_choice_is_inside(monkeypatch):
    import math

    import alexnet.experiments.lr_sweep as lr_sweep

    def curve_best_at_a_tenth(data, kind, lr, **options):  # lowest error at lr = 0.1
        return Curve([0.0, 1.0], [0.0, 1.0], [0.9, 0.2 + abs(math.log10(lr) + 1) / 10])

    monkeypatch.setattr(lr_sweep, "train_curve", curve_best_at_a_tenth)
    lr, record = lr_sweep.sweep(None, "relu", [0.001, 0.003, 0.01], epochs=1, targets=[0.1])
    assert lr == pytest.approx(0.1, rel=0.02) and record["inside"]
    assert len(record["rates"]) == 6  # 0.001 ... 0.01, then 0.0316, 0.1 and 0.316 beyond
    lr, record = lr_sweep.sweep(None, "relu", [0.001, 0.003], epochs=1, targets=[0.1], widen=1)
    assert not record["inside"]  # one step was not enough: said so


def test_relu_vs_tanh_over_seeds_with_the_linear_floor(tmp_path, colour_tree, capsys, monkeypatch):
    import alexnet.experiments.relu_vs_tanh as experiment

    drawn = {}
    monkeypatch.setattr(experiment, "plot_training_error",
                        lambda curves, path, targets, floor, title: drawn.update(
                            curves=curves, floor=floor, title=title))  # fmt: skip
    out = tmp_path / "fig1"
    argv = ["experiment", "relu-vs-tanh", "--data", str(colour_tree), "--out", str(out)]
    argv += ["--epochs", "2", "--lrs", "0.003,0.01,0.03", "--batch-size", "8", "--seeds", "2"]
    argv += ["--target", "0.7", "--target", "0.01", "--input-scale", "raw", "--device", "cpu"]
    argv += ["--linear-lrs", "1e-6,1e-5,1e-4", "--linear-epochs", "3", "--widen", "1"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    result = json.loads((out / "relu-vs-tanh.json").read_text())
    assert result["input_scale"] == "raw" and result["seeds"] == [0, 1]
    linear = [run["curve"]["errors"] for run in result["linear"]["runs"]]
    assert result["linear_floor"] == min(map(min, linear))
    assert result["linear"]["runs"][0]["curve"]["epochs"][-1] == 3
    floor = (
        f"linear floor (lowest training error of a linear classifier): {result['linear_floor']:.1%}"
    )
    assert floor in printed
    for key, level in result["levels"].items():  # marked where the floor says
        assert level["below_linear_floor"] == (float(key) < result["linear_floor"])
        marked = f"\n{float(key):.0%} (below linear floor) | " in printed
        assert marked == level["below_linear_floor"]
    for name in ("relu", "tanh"):
        assert len(result[name]["runs"]) == 2 and len(drawn["curves"][name]) == 2
        assert len(result[name]["preactivation_std"]) == 4  # 3 convolutions, 1 fully connected
    assert len(result["tanh"]["saturated_first_epoch"]) == 3  # one per tanh layer
    assert result["relu"]["saturated_first_epoch"] == []
    assert drawn["floor"] == result["linear_floor"] and drawn["title"].startswith("raw inputs")
    level = result["levels"]["0.7"]
    if level["ratio"] is not None and not level["lower_bound"]:
        assert level["low"] <= level["ratio"] <= level["high"]


def test_the_gpu_ablations_script_runs_unchanged_on_a_cpu(tmp_path):
    import os
    import subprocess
    import sys
    from pathlib import Path

    from tests.data.test_idx import write_idx_set

    write_idx_set(tmp_path / "fashion")
    out = tmp_path / "ablations"
    script = Path(__file__).parents[1] / "bench" / "ablations_full.sh"
    tiny = ["--data", f"fashion-mnist:{tmp_path / 'fashion'}", "--seeds", "1", "--epochs", "1"]
    tiny += ["--batch-size", "4", "--workers", "0", "--set", "data.train_subset=8"]
    done = subprocess.run(["bash", str(script), "cpu", str(out), *tiny], capture_output=True,
                          text=True, env={**os.environ, "PYTHON": sys.executable}, cwd=tmp_path,
                          timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert "smallest resolvable difference" in done.stderr
    summary = json.loads((out / "ablations.json").read_text())
    assert summary["recipe"] == "fashion-mnist" and summary["seeds"] == 1
    assert summary["resolution"]["images"] == 5  # the generated test set, every run on it
    for name in summary["ablations"]:
        wrong = json.loads((out / name / "seed-0" / "val_wrong.json").read_text())
        assert wrong["images"] == 5
        assert "verdict" in summary["ablations"][name].get("comparison", {"verdict": ""})


def test_an_ablation_run_stopped_by_a_signal_stops_the_experiment(tmp_path, monkeypatch):
    recipe = ablations.ablation_recipe("digits", ablations.ABLATIONS[0], 0, [])
    monkeypatch.setattr(ablations, "fit", lambda *a, **k: {"stopped": {"epoch": 1, "step": 3}})
    with pytest.raises(KeyboardInterrupt):  # not on to the next run: a rerun resumes this one
        ablations.train_or_resume(recipe, tmp_path / "full" / "seed-0", False)
