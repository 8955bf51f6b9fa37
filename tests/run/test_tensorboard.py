"""`run.tensorboard=true`: each epoch's metrics and conv1 kernels as TensorBoard events."""

import sys

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from alexnet.cli import main
from alexnet.recipe import PRESETS, apply_overrides, preset
from alexnet.train import fit
from tests.test_train import tiny_recipe


def test_each_epoch_is_logged(tmp_path, colour_tree):
    recipe = apply_overrides(tiny_recipe(colour_tree, epochs=2), ["run.tensorboard=true"])
    fit(recipe, tmp_path / "run", progress=False)
    events = EventAccumulator(str(tmp_path / "run" / "tensorboard")).Reload()
    for key in ("lr", "train_loss", "val_top1_error", "val_top5_error", "images_per_s"):
        assert [event.step for event in events.Scalars(key)] == [1, 2], key
    assert events.Scalars("lr")[0].value == pytest.approx(recipe.optim.lr)  # float32
    assert [event.step for event in events.Images("conv1")] == [1, 2]


def test_off_by_default():
    assert not any(preset(name).run.tensorboard for name in PRESETS)


def test_without_the_extra_one_line_and_nothing_written(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails
    argv = ["train", "--out", str(tmp_path / "run"), "--set", "run.tensorboard=true"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["alexnet: error: run.tensorboard=true needs TensorBoard: pip install "
                   "'alexnet[tensorboard]'"]  # fmt: skip
    assert not (tmp_path / "run").exists()
