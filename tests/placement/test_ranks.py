"""Data parallelism (torchrun + DistributedDataParallel, gloo on the CPU): 2 processes = 1.

The recipe's batch is the global batch and every image keeps its (seed, epoch, index)
augmentation, so two processes taking half of each batch train the weights one process trains,
up to float rounding (the two half-batch gradients are averaged instead of one mean over the
batch). Dropout is off here: its masks are drawn per process (same distribution, other draws).
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from alexnet.cli import main
from alexnet.recipe import apply_overrides
from alexnet.run import checkpoint
from alexnet.train import fit
from tests.test_train import tiny_recipe

pytestmark = pytest.mark.distributed

WEIGHT_TOLERANCE = 1e-6  # measured: 3e-8 after 6 steps (2 epochs of 3 batches of 8)
FLAGS = ["--batch-size", "8", "--workers", "0", "--no-progress", "--set", "run.report=false"]
SETTINGS = ["--set", "data.val_fraction=0.25", "--set", "model.dropout=0"]


def torchrun(processes: int, *argv: str) -> subprocess.CompletedProcess:
    """`torchrun --standalone --nproc-per-node N -m alexnet ARGV`, one thread per process."""
    src = str(Path(__file__).parents[2] / "src")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": src}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    command += [f"--nproc-per-node={processes}", "-m", "alexnet", *argv]
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def one_process(source, run, epochs):
    recipe = apply_overrides(tiny_recipe(source, epochs), ["model.dropout=0"])
    fit(recipe, run, progress=False)


def assert_close_weights(a, b):
    difference = max((a["model"][k] - b["model"][k]).abs().max().item() for k in a["model"])
    assert difference <= WEIGHT_TOLERANCE, difference


@pytest.fixture(scope="module")
def straight_one(colour_tree, tmp_path_factory):
    run = tmp_path_factory.mktemp("one") / "run"
    one_process(colour_tree, run, epochs=2)
    return run


def test_two_processes_reach_the_weights_and_metrics_of_one(straight_one, colour_tree, tmp_path):
    run = tmp_path / "two"
    result = torchrun(2, "train", "--data", str(colour_tree), "--out", str(run), "--epochs", "2",
                      *FLAGS, *SETTINGS)  # fmt: skip
    assert "× 2 processes (DistributedDataParallel)" in (run / "train.log").read_text()
    assert result.stdout.count("run folder:") == 1  # rank 0 alone reports
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
