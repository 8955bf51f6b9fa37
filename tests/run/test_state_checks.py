"""A tampered last.pt is refused in one line before a resume uses it (run/state_checks.py):
each case builds the hostile checkpoint from a real run's."""

import copy
import json
import math
import subprocess
import sys

import pytest
import torch

from alexnet.run import checkpoint
from alexnet.run.checkpoint import CheckpointError
from alexnet.run.folder import RunError, check_resumable
from alexnet.train import fit
from tests.test_train import tiny_recipe


@pytest.fixture(scope="module")
def one_epoch(tmp_path_factory, colour_tree):
    run = tmp_path_factory.mktemp("state") / "run"
    recipe = tiny_recipe(colour_tree, epochs=2)
    fit(tiny_recipe(colour_tree, epochs=1), run, progress=False)
    return run, recipe


def set_in(*keys_and_value):
    """A change of a checkpoint: the value at state[key][key]... becomes the last argument."""
    *keys, value = keys_and_value

    def change(state):
        for key in keys[:-1]:
            state = state[key]
        state[keys[-1]] = value

    return change


CASES = [
    (set_in("optimizer", {}), "optimizer is not an optimizer's state"),
    (set_in("optimizer", "param_groups", [{"params": [0]}]), "not the network's 16"),
    (set_in("optimizer", "param_groups", 0, "lr", -1.0), "optimizer lr=-1.0 is not a number"),
    (set_in("optimizer", "state", 99, {"momentum_buffer": torch.zeros(1)}), "parameter 99"),
    (set_in("optimizer", "state", 3, {"momentum_buffer": "x"}), r"state\[3\] is not one momen"),
    (set_in("rng", "torch", torch.zeros(7, dtype=torch.uint8)), "rng is not a set of generator"),
    (set_in("rng", "numpy", "keys", torch.zeros(3, dtype=torch.int64)), "rng is not a set of"),
    (set_in("rng", "python", "junk"), "rng is not a set of generator states"),
    (set_in("rng", {}), "rng is not a set of generator states"),
    (set_in("best_val_top1_error", "abc"), r"best_val_top1_error='abc' is not an error rate"),
    (set_in("best_val_top1_error", math.nan), "best_val_top1_error=nan is not an error rate"),
    (set_in("schedule", "factor", -0.1), "schedule factor=-0.1, its recipe gives 0.1"),
    (set_in("schedule", "best", "x"), "schedule best='x' is not an error rate"),
    (set_in("schedule", "optimizer", None), "schedule holds entries a schedule has not"),
    (set_in("schedule", "num_bad_epochs", -3), "num_bad_epochs=-3 is not a whole number"),
    (set_in("schedule", [1, 2]), "schedule is not a schedule's state"),
    (set_in("partial", {"loss": "x"}), "partial is not an epoch's partial metrics"),
    (set_in("finished", "done\nalexnet: error: forged"), "finished='done.* is not one line"),
    (set_in("finished", 3), "finished=3 is not one line of text"),
    (
        set_in("partial", dict(loss=1.0, top1_error=2.0, images=8, seconds=1, skipped=0, steps=1)),
        "partial top1_error=2.0 is not an error rate",
    ),
]


@pytest.mark.parametrize(("change", "message"), CASES)
def test_a_tampered_training_state_is_refused_in_one_line(one_epoch, change, message):
    run, recipe = one_epoch
    state = copy.deepcopy({k: v for k, v in checkpoint.load(run).items() if k != "model"})
    state["model"] = checkpoint.load(run)["model"]  # mapped from the file, not copied
    change(state)
    with pytest.raises(CheckpointError, match=message) as error:
        check_resumable(state, recipe, run)
    assert "\n" not in str(error.value) and "cannot be resumed" in str(error.value)


def test_a_momentum_buffer_of_the_wrong_shape_is_one_line_not_a_crash(one_epoch, tmp_path):
    """torch's fused SGD reads a buffer by its parameter's size: on main it went on with rc 0
    (or died of SIGSEGV inside the kernel)."""
    run, _ = one_epoch
    tampered = tmp_path / "run"
    tampered.mkdir()
    for name in ("recipe.json", "metrics.jsonl"):
        (tampered / name).write_bytes((run / name).read_bytes())
    state = checkpoint.load(run)
    state["optimizer"]["state"][0]["momentum_buffer"] = torch.zeros(2)
    torch.save(state, tampered / "last.pt")
    before = (tampered / "last.pt").read_bytes()
    done = subprocess.run(
        [sys.executable, "-m", "alexnet", "train", "--resume", str(tampered), "--epochs", "2"],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 2, done.stderr[-2000:]
    assert done.stderr.strip().splitlines() == [
        f"alexnet: error: {tampered / 'last.pt'} cannot be resumed: optimizer.state[0]'s "
        "momentum buffer is torch.float32 (2,), its parameter (96, 3, 11, 11)"
    ]
    assert (tampered / "last.pt").read_bytes() == before


def test_resume_refuses_a_recipe_json_edited_since_the_checkpoint(one_epoch, tmp_path):
    run, recipe = one_epoch
    edited = json.loads((run / "recipe.json").read_text())
    edited["optim"]["lr"] = 0.5
    (tmp_path / "recipe.json").write_text(json.dumps(edited))
    with pytest.raises(RunError, match=r"recipe.json was edited \(optim.lr\) and is not the rec"):
        check_resumable(checkpoint.load(run), recipe, tmp_path)
    assert json.loads((tmp_path / "recipe.json").read_text()) == edited
