"""Training end to end on tiny data: run folder, resume equality, the paper preset at full size."""

import json
import math

import pytest
import torch
from torch import nn

from alexnet.cli import main
from alexnet.optim import PaperSGD
from alexnet.placement import Placement
from alexnet.recipe import RecipeError, apply_overrides, preset
from alexnet.run import checkpoint
from alexnet.run.folder import RunError
from alexnet.train import (
    DIVERGENCE_CHECK_EVERY,
    TrainingDiverged,
    fit,
    train_one_epoch,
)

RUN_FILES = {
    "recipe.json",
    "metrics.jsonl",
    "last.pt",
    "best.pt",
    "curves.png",
    "conv1.png",
    "train.log",
}
METRIC_KEYS = {
    "epoch",
    "lr",
    "train_loss",
    "train_top1_error",
    "val_loss",
    "val_top1_error",
    "val_top5_error",
    "images_per_s",
    "seconds",
    "skipped",
}


def tiny_recipe(source, epochs=2):
    recipe = preset("digits")
    return apply_overrides(
        recipe,
        [
            f"data.source={source}",
            f"schedule.epochs={epochs}",
            "optim.batch_size=8",
            "run.workers=0",
            "data.val_fraction=0.25",
        ],
    )


def test_fit_writes_the_run_folder(tmp_path, colour_tree):
    recipe = tiny_recipe(colour_tree)
    summary = fit(recipe, tmp_path / "run", progress=False)
    run = tmp_path / "run"
    assert RUN_FILES <= {p.name for p in run.iterdir()}
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2]
    assert all(set(r) == METRIC_KEYS for r in records)
    assert records[0]["lr"] == recipe.optim.lr
    assert json.loads((run / "recipe.json").read_text()) == recipe.to_dict()
    best = checkpoint.load(run / "best.pt")
    assert best["val"]["top1_error"] == min(r["val_top1_error"] for r in records)
    assert best["recipe"] == recipe.to_dict()
    assert best["classes"] == ["blue", "green", "red"]
    assert summary["best_val_top1_error"] == best["val"]["top1_error"]
    assert "epoch 2/2" in (run / "train.log").read_text()


def test_an_existing_run_is_not_overwritten(tmp_path, colour_tree):
    run = tmp_path / "run"
    fit(tiny_recipe(colour_tree, epochs=1), run, progress=False)
    before = (run / "last.pt").read_bytes()
    with pytest.raises(RunError, match="already holds a run"):
        fit(tiny_recipe(colour_tree, epochs=1), run, progress=False)
    assert (run / "last.pt").read_bytes() == before


def test_resume_gives_the_same_weights_as_one_run(tmp_path, colour_tree):
    """Stop after epoch 3 and resume with the CLI: the same weights as 4 epochs straight.

    patience=0 puts an lr drop before the stop, so velocity and schedule state must survive;
    two loader workers check that batches do not depend on the process that made them.
    """
    overrides = ["schedule.shape=plateau", "schedule.warmup_epochs=0", "schedule.patience=0"]
    overrides.append("run.workers=2")
    straight, stopped = tmp_path / "straight", tmp_path / "stopped"
    fit(apply_overrides(tiny_recipe(colour_tree, epochs=4), overrides), straight, progress=False)
    fit(apply_overrides(tiny_recipe(colour_tree, epochs=3), overrides), stopped, progress=False)
    argv = ["train", "--resume", str(stopped), "--epochs", "4", "--no-progress"]
    assert main([*argv, "--set", "run.report=false"]) == 0
    a, b = checkpoint.load(straight), checkpoint.load(stopped)
    assert a["epoch"] == b["epoch"] == 4
    for name, tensor in a["model"].items():
        assert torch.equal(tensor, b["model"][name]), name
    records = [json.loads(line) for line in (stopped / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2, 3, 4]
    assert records[3]["lr"] < records[2]["lr"]  # the drop came between the stop and the resume
    assert (straight / "metrics.jsonl").read_text().count("\n") == 4


def test_resuming_a_finished_run_says_so(tmp_path, colour_tree):
    run = tmp_path / "run"
    fit(tiny_recipe(colour_tree, epochs=1), run, progress=False)
    with pytest.raises(RunError, match="trained all 1 epochs; ask for more with --epochs"):
        fit(tiny_recipe(colour_tree, epochs=1), run, resume_from=checkpoint.load(run))


def test_a_resumed_run_keeps_its_recipe(tmp_path, colour_tree):
    run = tmp_path / "run"
    fit(tiny_recipe(colour_tree, epochs=1), run, progress=False)
    changed = apply_overrides(tiny_recipe(colour_tree, epochs=2), ["optim.lr=0.1", "model.lrn=off"])
    with pytest.raises(RecipeError, match="optim.lr, model.lrn cannot change|model.lrn, optim.lr"):
        fit(changed, run, resume_from=checkpoint.load(run))
    longer = apply_overrides(tiny_recipe(colour_tree, epochs=2), ["run.workers=1"])
    fit(longer, run, resume_from=checkpoint.load(run), progress=False)  # allowed
    assert checkpoint.load(run)["epoch"] == 2


def test_paper_preset_one_epoch_at_full_size(tmp_path, ilsvrc_tree):
    recipe = apply_overrides(
        preset("paper"),
        [f"data.source={ilsvrc_tree}", "schedule.epochs=1", "optim.batch_size=4", "run.workers=0"],
    )
    fit(recipe, tmp_path / "run", progress=False)
    state = checkpoint.load(tmp_path / "run" / "last.pt")
    assert state["data_stats"]["mean_image"].shape == (3, 256, 256)
    assert state["model"]["features.0.weight"].shape == (96, 3, 11, 11)
    assert state["model"]["features.4.weight"].shape == (256, 48, 5, 5)  # two towers
    assert len(state["classes"]) == 2
    record = json.loads((tmp_path / "run" / "metrics.jsonl").read_text())
    assert record["epoch"] == 1 and record["images_per_s"] > 0


def _tiny_batches(count, nan_at=None):
    generator = torch.Generator().manual_seed(0)
    batches = []
    for index in range(count):
        images = torch.randn(4, 3, 2, 2, generator=generator)
        if index == nan_at:
            images[0, 0, 0, 0] = float("nan")
        batches.append((images, torch.randint(0, 3, (4,), generator=generator), 0))
    return batches


def _tiny_epoch(batches):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 3))
    placement = Placement(torch.device("cpu"))
    return train_one_epoch(
        model, PaperSGD(model.parameters()), batches, placement, epoch=3, progress=False
    )


def test_the_step_loop_reads_from_the_device_only_every_few_steps(monkeypatch):
    """No host-device sync per step: the running sums are read for the divergence check every
    DIVERGENCE_CHECK_EVERY steps, then once for the epoch's figures."""
    reads = []
    item, tolist = torch.Tensor.item, torch.Tensor.tolist
    monkeypatch.setattr(torch.Tensor, "item", lambda self: reads.append(1) or item(self))
    monkeypatch.setattr(torch.Tensor, "tolist", lambda self: reads.append(1) or tolist(self))
    result = _tiny_epoch(_tiny_batches(35))
    assert len(reads) == 35 // DIVERGENCE_CHECK_EVERY + 3  # checks; last check, loss, errors
    assert math.isfinite(result["loss"]) and 0 <= result["top1_error"] <= 1


def test_a_nan_loss_stops_the_epoch_within_a_check_naming_epoch_and_step():
    with pytest.raises(TrainingDiverged, match=r"loss became nan in epoch 3 by step 10"):
        _tiny_epoch(_tiny_batches(35, nan_at=6))


def test_a_linear_shape_sets_each_steps_rate_and_no_plateau_acts(tmp_path, colour_tree):
    """27 training images, batches of 8: 3 steps an epoch. Warm-up over epoch 1, then a linear
    fall: ε at the last step of epoch 1 is ε, of epoch 2 ε/3 (StepRate); no ε÷10 at a plateau."""
    recipe = apply_overrides(
        tiny_recipe(colour_tree, epochs=2),
        ["schedule.warmup_epochs=1", "schedule.shape=linear", "schedule.patience=0"],
    )
    fit(recipe, tmp_path / "run", progress=False)
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").open()]
    assert [r["lr"] for r in records] == pytest.approx([recipe.optim.lr, recipe.optim.lr / 3])
