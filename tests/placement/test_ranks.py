"""Data parallelism (torchrun + DistributedDataParallel, gloo on the CPU): 2 processes = 1.

The recipe's batch is the global batch and every image keeps its (seed, epoch, index)
augmentation and its dropout masks (counted from seed, step and its index in the global batch:
ops/dropout.py), so two processes taking half of each batch train the weights one process
trains, up to float rounding (the two half-batch gradients are averaged instead of one mean
over the batch), and a run stopped mid-epoch resumes to the bits of one never stopped.
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
from alexnet.run import checkpoint
from alexnet.train import fit
from tests.placement.test_towers import largest_relative_difference
from tests.test_train import tiny_recipe

pytestmark = pytest.mark.distributed

WEIGHT_TOLERANCE = 1e-6  # measured: 3e-8 after 6 steps (2 epochs of 3 batches of 8), dropout 0.5
RELATIVE_TOLERANCE = 1e-4  # relative to each tensor's largest weight; measured 1.5e-6
FLAGS = ["--batch-size", "8", "--workers", "0", "--no-progress", "--set", "run.report=false"]
SETTINGS = ["--set", "data.val_fraction=0.25"]  # and the recipe's dropout, the paper's 0.5


def torchrun(processes: int, *argv: str, script: Path | None = None,
             returncode: int | None = 0) -> subprocess.CompletedProcess:  # fmt: skip
    """`torchrun --standalone --nproc-per-node N -m alexnet ARGV` (or SCRIPT ARGV), one thread
    per process; its exit status must be `returncode` unless that is None."""
    src = str(Path(__file__).parents[2] / "src")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": src}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    command += [f"--nproc-per-node={processes}", *([str(script)] if script else ["-m", "alexnet"])]
    result = subprocess.run([*command, *argv], capture_output=True, text=True, env=env, timeout=240)
    assert returncode is None or result.returncode == returncode, result.stderr[-3000:]
    return result


def one_process(source, run, epochs):
    recipe = tiny_recipe(source, epochs)
    assert recipe.model.dropout == 0.5
    fit(recipe, run, progress=False)


def assert_close_weights(a, b):
    difference = max((a["model"][k] - b["model"][k]).abs().max().item() for k in a["model"])
    assert difference <= WEIGHT_TOLERANCE, difference
    assert largest_relative_difference(a["model"], b["model"]) < RELATIVE_TOLERANCE


@pytest.fixture(scope="module")
def straight_one(colour_tree, tmp_path_factory):
    run = tmp_path_factory.mktemp("one") / "run"
    one_process(colour_tree, run, epochs=2)
    return run


@pytest.fixture(scope="module")
def straight_two(colour_tree, tmp_path_factory):
    """(run folder, torchrun's stdout) of 2 processes trained as `straight_one`."""
    run = tmp_path_factory.mktemp("two") / "run"
    return run, torchrun(2, *two_epochs(colour_tree, run)).stdout


def two_epochs(source, run) -> list[str]:
    return ["train", "--data", str(source), "--out", str(run), "--epochs", "2", *FLAGS, *SETTINGS]


def test_two_processes_reach_the_weights_and_metrics_of_one(straight_one, straight_two):
    run, stdout = straight_two
    assert "× 2 processes (DistributedDataParallel)" in (run / "train.log").read_text()
    assert stdout.count("run folder:") == 1  # rank 0 alone reports
    one, two = checkpoint.load(straight_one), checkpoint.load(run)
    assert_close_weights(one, two)
    lines = [
        [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
        for folder in (straight_one, run)
    ]
    for a, b in zip(*lines, strict=True):
        for key in ("train_loss", "val_loss"):
            assert b[key] == pytest.approx(a[key], rel=1e-5), key
        for key in ("epoch", "lr", "train_top1_error", "val_top1_error", "val_top5_error",
                    "skipped"):  # fmt: skip
            assert b[key] == a[key], key
    assert sorted(p.name for p in run.iterdir() if p.suffix == ".pt") == [
        "best.pt", "last.pt", *[p.name for p in run.glob("stats-*.pt")]
    ]  # fmt: skip


def test_a_run_resumes_with_another_number_of_processes(straight_one, colour_tree, tmp_path):
    run = tmp_path / "run"
    one_process(colour_tree, run, epochs=1)
    torchrun(2, "train", "--resume", str(run), "--epochs", "2", *FLAGS)
    resumed = checkpoint.load(run)
    assert resumed["epoch"] == 2
    assert_close_weights(checkpoint.load(straight_one), resumed)


def test_the_global_batch_must_split_evenly(colour_tree, tmp_path):
    src = str(Path(__file__).parents[2] / "src")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": src, "WORLD_SIZE": "3",
           "RANK": "0", "LOCAL_RANK": "0"}  # fmt: skip
    argv = ["train", "--data", str(colour_tree), "--out", str(tmp_path / "run"), *FLAGS]
    result = subprocess.run(
        [sys.executable, "-m", "alexnet", *argv], capture_output=True, text=True, env=env
    )
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "alexnet: error: optim.batch_size=8 does not split evenly over 3 processes; "
        "the recipe's batch is the global batch"
    )


SIGNALLED_RANK = """
import os, signal, sys
import alexnet.run.state
from alexnet.cli import main
from alexnet.optim import PaperSGD

class SignalledSGD(PaperSGD):  # rank 0 sends torchrun SIGTERM during step 4 (epoch 2, step 1)
    steps = 0
    def step(self, closure=None):
        SignalledSGD.steps += 1
        if SignalledSGD.steps == 4 and os.environ["RANK"] == "0":
            os.kill(os.getppid(), signal.SIGTERM)
        return super().step(closure)

alexnet.run.state.PaperSGD = SignalledSGD
sys.exit(main(sys.argv[1:]))
"""


def test_sigterm_mid_epoch_and_resume_on_two_processes_are_exact(straight_two, colour_tree,
                                                                tmp_path):  # fmt: skip
    """torchrun gets SIGTERM in epoch 2 and passes it on; both ranks stop at one step, rank 0
    writes last.pt there, and 2 processes resume it to the straight run's exact weights."""
    script, run = tmp_path / "signalled_rank.py", tmp_path / "run"
    script.write_text(SIGNALLED_RANK)
    stopped = torchrun(2, *two_epochs(colour_tree, run), script=script, returncode=None)
    assert "(SIGTERM); checkpoint written; continue with" in stopped.stderr, stopped.stderr[-3000:]
    saved = checkpoint.load(run)
    assert (saved["epoch"], saved["step"]) in ((1, 1), (1, 2))  # mid-epoch
    torchrun(2, "train", "--resume", str(run), "--epochs", "2", *FLAGS)
    straight, resumed = checkpoint.load(straight_two[0]), checkpoint.load(run)
    assert resumed["epoch"] == 2
    for name, tensor in straight["model"].items():
        assert torch.equal(resumed["model"][name], tensor), name


@pytest.mark.slow
def test_sigterm_to_torchrun_stops_every_rank_at_one_step(colour_tree, tmp_path):
    """torchrun passes SIGTERM to its processes; they agree on the step, rank 0 writes last.pt,
    and one process resumes it to the weights of a straight one-process run (slow: ~70 s)."""
    run, straight = tmp_path / "run", tmp_path / "straight"
    src = str(Path(__file__).parents[2] / "src")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": src}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               "--nproc-per-node=2", "-m", "alexnet", "train", "--data", str(colour_tree),
               "--out", str(run), "--epochs", "4", *FLAGS, *SETTINGS]  # fmt: skip
    process = subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 180
    while not (run / "last.pt").exists():
        assert process.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=120)
    assert "(SIGTERM); checkpoint written; continue with" in err
    assert "stopped at" in (run / "train.log").read_text()
    one_process(colour_tree, straight, epochs=4)
    assert main(["train", "--resume", str(run), "--epochs", "4", "--no-progress"]) == 0
    assert_close_weights(checkpoint.load(straight), checkpoint.load(run))
