"""Nothing lost: SIGTERM / Ctrl-C mid-epoch, kill -9 (also while last.pt is written), a cut
metrics line, a diverging loss, and §5's termination after the third drop.

Every stopped run is resumed and must end with the weights of a run that was never stopped,
bit for bit (CPU, same thread count: the subprocesses inherit this process's environment).
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from alexnet.cli import main
from alexnet.optim import PaperSGD
from alexnet.run import checkpoint
from alexnet.train import fit
from tests.test_train import tiny_recipe

SRC = str(Path(__file__).parents[2] / "src")
EPOCHS = 3  # 27 training images in batches of 8: 3 steps an epoch, 9 in all


def argv(colour_tree, run, epochs=EPOCHS):
    return [
        "train", "--data", str(colour_tree), "--out", str(run), "--epochs", str(epochs),
        "--batch-size", "8", "--workers", "0", "--no-progress",
        "--set", "data.val_fraction=0.25", "--set", "schedule.patience=0",
        "--set", "run.report=false",
    ]  # fmt: skip


def resume(run, epochs=EPOCHS) -> int:
    argv = ["train", "--resume", str(run), "--epochs", str(epochs), "--no-progress"]
    return main([*argv, "--set", "run.report=false"])


def start(*args: str, script: str | None = None) -> subprocess.Popen:
    """`python -m alexnet ARGS` (or `python -c SCRIPT ARGS`) in a new process."""
    env = {**os.environ, "PYTHONPATH": SRC}
    command = [sys.executable, *(["-c", script] if script else ["-m", "alexnet"]), *args]
    return subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def wait_for(condition, process: subprocess.Popen, timeout=120.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert process.poll() is None, process.communicate()[1][-2000:]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def training_started(run: Path):
    return lambda: "training paper AlexNet" in _read(run / "train.log")


def _read(path: Path) -> str:
    return path.read_text() if path.exists() else ""


def assert_same_weights(a: Path, b: Path) -> None:
    first, second = checkpoint.load(a), checkpoint.load(b)
    assert first["epoch"] == second["epoch"] == EPOCHS
    for name, tensor in first["model"].items():
        assert torch.equal(tensor, second["model"][name]), name


def epochs_in(run: Path) -> list[int]:
    return [json.loads(line)["epoch"] for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def straight(colour_tree, tmp_path_factory) -> Path:
    """The run never stopped, trained through the CLI."""
    run = tmp_path_factory.mktemp("straight") / "run"
    assert main(argv(colour_tree, run)) == 0
    return run


def test_sigint_finishes_the_step_and_resume_is_bit_exact(straight, colour_tree, tmp_path,
                                                          monkeypatch, capsys):  # fmt: skip
    """Ctrl-C during step 1 of epoch 2: that step ends, last.pt holds it, --resume goes on."""
    steps = []

    class InterruptedSGD(PaperSGD):
        def step(self, closure=None):
            steps.append(1)
            if len(steps) == 5:  # epoch 2, step 1 (counting from 0)
                os.kill(os.getpid(), signal.SIGINT)
            return super().step(closure)

    monkeypatch.setattr("alexnet.run.state.PaperSGD", InterruptedSGD)
    run = tmp_path / "run"
    assert main(argv(colour_tree, run)) == 128 + signal.SIGINT
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"alexnet: stopped at epoch 2 step 2 (SIGINT); checkpoint written; "
        f"continue with: alexnet train --resume {run}"
    )
    saved = checkpoint.load(run)
    assert (saved["epoch"], saved["step"], len(steps)) == (1, 2, 5)
    assert epochs_in(run) == [1]
    monkeypatch.undo()
    assert resume(run) == 0
    assert_same_weights(straight, run)
    assert epochs_in(run) == [1, 2, 3]
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    expected = [json.loads(line) for line in (straight / "metrics.jsonl").read_text().splitlines()]
    assert lines[1]["train_loss"] == pytest.approx(expected[1]["train_loss"], rel=1e-6)
    assert lines[1]["train_top1_error"] == expected[1]["train_top1_error"]


def stop_after(steps_to_take: int, monkeypatch) -> None:
    """Ctrl-C during training step `steps_to_take` (counted over the whole run, from 1)."""
    steps = []

    class InterruptedSGD(PaperSGD):
        def step(self, closure=None):
            steps.append(1)
            if len(steps) == steps_to_take:
                os.kill(os.getpid(), signal.SIGINT)
            return super().step(closure)

    monkeypatch.setattr("alexnet.run.state.PaperSGD", InterruptedSGD)


STEPS = 3 * EPOCHS  # 27 training images in batches of 8: 3 steps an epoch


@pytest.mark.parametrize(
    "stopped_after",
    [pytest.param(step, marks=[] if step == 8 else pytest.mark.slow) for step in range(1, STEPS)],
)
def test_resuming_from_any_step_matches_the_straight_run(straight, colour_tree, tmp_path,
                                                         monkeypatch, stopped_after):  # fmt: skip
    """Stopped after any step (step 8, mid-epoch, by default; every step with -m slow) and
    resumed: the weights and the metrics of the run that never stopped."""
    stop_after(stopped_after, monkeypatch)
    run = tmp_path / "run"
    assert main(argv(colour_tree, run)) == 128 + signal.SIGINT
    saved = checkpoint.load(run)
    assert saved["epoch"] * 3 + saved["step"] == stopped_after
    monkeypatch.undo()
    assert resume(run) == 0
    assert_same_weights(straight, run)
    timing = {"images_per_s", "seconds"}
    lines, expected = (
        [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
        for folder in (run, straight)
    )
    for line, reference in zip(lines, expected, strict=True):
        for key, value in reference.items():
            if key not in timing:
                assert line[key] == pytest.approx(value, rel=1e-6), key


def test_sigterm_from_outside_then_resume_is_bit_exact(straight, colour_tree, tmp_path):
    run = tmp_path / "run"
    process = start(*argv(colour_tree, run))
    wait_for(lambda: (run / "last.pt").exists(), process)  # mid-run, wherever that is
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=120)
    if process.returncode == 0:
        pytest.skip("the run finished before SIGTERM arrived")
    assert process.returncode == 128 + signal.SIGTERM, err
    assert "(SIGTERM); checkpoint written; continue with" in err.strip().splitlines()[-1]
    assert resume(run) == 0
    assert_same_weights(straight, run)


def test_a_second_ctrl_c_exits_at_once_and_corrupts_nothing(colour_tree, tmp_path):
    run = tmp_path / "run"
    process = start(*argv(colour_tree, run, epochs=20))
    wait_for(training_started(run), process)
    process.send_signal(signal.SIGINT)
    time.sleep(0.02)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=60)
    assert process.returncode in (130, -signal.SIGINT), err
    assert "Traceback" not in err
    if (run / "last.pt").exists():
        checkpoint.load(run)
    assert not list(run.glob(".*.tmp"))


def test_kill_9_mid_epoch_then_resume_is_bit_exact(straight, colour_tree, tmp_path):
    run = tmp_path / "run"
    process = start(*argv(colour_tree, run))
    wait_for(lambda: (run / "last.pt").exists(), process)
    time.sleep(0.3)
    process.kill()
    process.communicate()
    assert checkpoint.load(run)["epoch"] >= 1
    assert resume(run) == 0
    assert_same_weights(straight, run)


KILLED_WHILE_SAVING = """
import os, signal, sys
from alexnet.cli import main
from alexnet.files import FlushedInBackground, write_atomically

saves = []
real_write = FlushedInBackground.write

def dying_write(self, path, write, then=None, **options):
    self.wait()  # epoch 1's checkpoint in place first, as the real write does
    saves.append(path)
    if len(saves) == 2:  # last.pt after epoch 2: half of it written, then kill -9
        def half(file):
            file.write(b"PK half a checkpoint")
            file.flush()
            os.kill(os.getpid(), signal.SIGKILL)
        write_atomically(path, half)
    real_write(self, path, write, then, **options)

FlushedInBackground.write = dying_write
sys.exit(main(sys.argv[1:]))
"""


def test_kill_9_while_last_pt_is_written(straight, colour_tree, tmp_path):
    run = tmp_path / "run"
    process = start(*argv(colour_tree, run), script=KILLED_WHILE_SAVING)
    process.communicate(timeout=240)
    assert process.returncode == -signal.SIGKILL
    assert list(run.glob(".last.pt.*.tmp"))  # the half-written file never replaced last.pt
    assert checkpoint.load(run)["epoch"] == 1  # the previous checkpoint still loads
    assert resume(run) == 0
    assert_same_weights(straight, run)
    assert not list(run.glob(".*.tmp"))
    assert epochs_in(run) == [1, 2, 3]  # epoch 2's line, written before the kill, not doubled


def test_a_cut_metrics_line_is_dropped_on_resume(colour_tree, tmp_path):
    run = tmp_path / "run"
    fit(tiny_recipe(colour_tree, epochs=1), run, progress=False)
    with (run / "metrics.jsonl").open("a") as file:
        file.write('{"epoch": 2, "lr": 0.0')  # a kill in the middle of the line
    assert resume(run, epochs=2) == 0
    assert epochs_in(run) == [1, 2]


def test_a_diverging_loss_stops_with_status_1_and_no_nan_checkpoint(colour_tree, tmp_path,
                                                                    capsys):  # fmt: skip
    run = tmp_path / "run"
    assert main([*argv(colour_tree, run), "--lr", "1e6"]) == 1
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line.startswith("alexnet: training stopped: loss became nan in epoch 1 by step ")
    for path in (run / "last.pt", run / "best.pt"):
        if path.exists():  # a checkpoint from before the loss diverged
            assert all(torch.isfinite(t).all() for t in checkpoint.load(path)["model"].values())


def test_the_run_ends_at_the_plateau_after_the_last_drop(colour_tree, tmp_path, capsys):
    """§5: ε "reduced three times prior to termination"; here max_drops=1 and an ε so small
    that validation error never changes: epoch 2 drops ε, epoch 3 ends the run."""
    run = tmp_path / "run"
    overrides = ["--set", "schedule.max_drops=1", "--set", "schedule.shape=plateau"]
    overrides += ["--lr", "1e-12"]
    assert main([*argv(colour_tree, run, epochs=10), *overrides]) == 0
    assert epochs_in(run) == [1, 2, 3]
    reason = "validation error stopped improving at the lowest ε (1 drops)"
    assert f"stopped after epoch 3: {reason}" in (run / "train.log").read_text()
    assert f"stopped early: {reason}" in capsys.readouterr().out
    assert resume(run, epochs=10) == 2
    assert "ended after epoch 3" in capsys.readouterr().err
