"""A run folder belongs to one run (run/folder.py): claimed before a byte is written, locked
while one process writes it, and its metrics read back whatever a kill left."""

import json
import logging
import subprocess
import sys

import pytest

from alexnet import files
from alexnet.cli import main
from alexnet.data import DataError
from alexnet.recipe import RecipeError, assign
from alexnet.run import checkpoint
from alexnet.run.folder import LOCK, METRIC_KEYS, RunError, lock, read_metrics
from alexnet.train import fit
from tests.test_train import tiny_recipe


def snapshot(folder):
    return {path.name: path.read_bytes() for path in folder.iterdir()}


def test_a_folder_that_is_not_a_run_is_refused_before_a_byte_is_written(tmp_path, colour_tree):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "recipe.json").write_text("my own notes")
    (folder / "notes.txt").write_text("keep me")
    (folder / ".draft.tmp").write_text("keep me too")
    before = snapshot(folder)
    with pytest.raises(RunError, match=r"is not a run folder \(it holds notes\.txt\)"):
        fit(tiny_recipe(colour_tree, epochs=1), folder, progress=False)
    assert snapshot(folder) == before


def test_a_run_resumes_beside_other_files_and_names_them(tmp_path, colour_tree, caplog):
    run = tmp_path / "run"
    fit(tiny_recipe(colour_tree, epochs=1), run, progress=False)
    (run / "slurm-123.out").write_text("a scheduler's log")
    with caplog.at_level(logging.WARNING, logger="alexnet"):
        resumed = tiny_recipe(colour_tree, epochs=2)
        fit(resumed, run, progress=False, resume_from=checkpoint.load(run))
    assert "also holds slurm-123.out; left as they are" in caplog.text
    assert (run / "slurm-123.out").read_text() == "a scheduler's log"
    with pytest.raises(RunError, match="already holds a run"):
        fit(tiny_recipe(colour_tree, epochs=1), run, progress=False)


def test_a_file_is_not_a_run_folder(tmp_path, colour_tree):
    (tmp_path / "run").write_text("a file")
    with pytest.raises(RunError, match="is a file, not a run folder"):
        fit(tiny_recipe(colour_tree, epochs=1), tmp_path / "run", progress=False)


HOLDER = """
import fcntl, sys, time
lock = open(sys.argv[1], "a")
fcntl.lockf(lock, fcntl.LOCK_EX)
print("locked", flush=True)
time.sleep(120)
"""


@pytest.fixture
def held_lock(tmp_path):
    """Another process holding the lock of tmp_path/run, as a running `alexnet train` does."""
    (tmp_path / "run").mkdir()
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(tmp_path / "run" / LOCK)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout.readline().strip() == "locked"
    yield tmp_path / "run"
    holder.kill()
    holder.wait()


def test_a_second_writer_is_refused_in_one_line(held_lock, colour_tree, capsys):
    argv = ["train", "--data", str(colour_tree), "--out", str(held_lock), "--epochs", "1"]
    assert main([*argv, "--workers", "0", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        f"alexnet: error: {held_lock} is in use by another alexnet process (training, a report, "
        "an export or an experiment); wait for it to end"
    ]
    assert sorted(path.name for path in held_lock.iterdir()) == [LOCK]  # nothing else written


def test_a_lock_file_without_its_process_does_not_stop_a_run(tmp_path, colour_tree):
    run = tmp_path / "run"
    run.mkdir()
    (run / LOCK).write_text("")  # what a kill -9 leaves: the file, but no lock held on it
    fit(tiny_recipe(colour_tree, epochs=1), run, progress=False)
    assert [r["epoch"] for r in read_metrics(run / "metrics.jsonl")] == [1]
    assert not (run / LOCK).exists()


def record(epoch: int) -> str:
    """A metrics.jsonl line as training writes it."""
    return json.dumps({key: epoch if key == "epoch" else 0.5 for key in METRIC_KEYS})


def test_read_metrics_drops_what_a_kill_cut_short_with_a_warning(tmp_path, caplog):
    path = tmp_path / "metrics.jsonl"
    path.write_text(f"{record(1)}\n{record(2)}\n{record(3)[:20]}")
    with caplog.at_level(logging.WARNING, logger="alexnet"):
        assert [r["epoch"] for r in read_metrics(path)] == [1, 2]
    assert "line 3 is cut short" in caplog.text
    path.write_text(f"{record(1)}\n3\n")  # a line cut to a bare number is no record either
    assert [r["epoch"] for r in read_metrics(path, up_to_epoch=1)] == [1]


def test_a_recipe_that_cannot_fit_in_memory_is_refused_before_any_work(tmp_path, colour_tree):
    recipe = assign(tiny_recipe(colour_tree), {"optim.batch_size": 10**7})
    with pytest.raises(RecipeError, match=r"optim.batch_size=10000000 .* needs at least"):
        fit(recipe, tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()


def test_the_lock_holds_when_its_file_is_replaced_between_open_and_lock(tmp_path, monkeypatch):
    """The race a release leaves: we open the lock file, its holder removes it and lets go,
    a third process makes a new one and locks it, and only then do we lock our open file, which
    no longer is the folder's lock: the lock must be taken again, and refused."""
    run = tmp_path / "run"
    run.mkdir()
    (run / LOCK).write_text("")
    lockf, third = files.fcntl.lockf, []

    def lock_after_the_race(file, flags):
        if not third:
            (run / LOCK).unlink()  # the holder's release
            third.append(
                subprocess.Popen(
                    [sys.executable, "-c", HOLDER, str(run / LOCK)],
                    stdout=subprocess.PIPE,
                    text=True,
                )  # fmt: skip
            )
            assert third[0].stdout.readline().strip() == "locked"
        return lockf(file, flags)

    monkeypatch.setattr(files.fcntl, "lockf", lock_after_the_race)
    try:
        with pytest.raises(RunError, match="is in use by another alexnet process"):
            lock(run)
    finally:
        third[0].kill()
        third[0].wait()


def another_tools_run(folder):
    """recipe.json, metrics.jsonl and train.log as another training tool writes them."""
    folder.mkdir()
    (folder / "recipe.json").write_text('{"model": "resnet50", "lr": 0.1}')
    (folder / "metrics.jsonl").write_text('{"step": 100, "loss": 2.3}\n')
    (folder / "train.log").write_text("[INFO] resnet50 started\n")


def test_another_tools_files_under_a_runs_names_are_refused_and_unchanged(
    tmp_path, colour_tree, capsys
):
    folder = tmp_path / "theirs"
    another_tools_run(folder)
    before = snapshot(folder)
    argv = ["train", "--data", str(colour_tree), "--out", str(folder), "--epochs", "1"]
    assert main([*argv, "--workers", "0", "--no-progress"]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"alexnet: error: {folder} is not a run folder: its recipe.json was not written by "
        "alexnet; give a new or empty folder"
    ]
    assert snapshot(folder) == before


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("metrics.jsonl", '{"epoch": 1, "loss": 0.5}\n'),
        ("train.log", "Epoch 1/10 loss 0.5\n"),
    ],
)
def test_a_runs_recipe_beside_another_tools_file_is_refused(tmp_path, colour_tree, name, content):
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "recipe.json").write_text(tiny_recipe(colour_tree, epochs=1).to_json())
    (folder / name).write_text(content)
    before = snapshot(folder)
    with pytest.raises(RunError, match=f"its {name} was not written by alexnet"):
        fit(tiny_recipe(colour_tree, epochs=1), folder, progress=False)
    assert snapshot(folder) == before


def test_a_run_that_died_before_its_first_checkpoint_starts_again_and_says_so(
    tmp_path, colour_tree, caplog
):
    folder = tmp_path / "run"
    folder.mkdir()
    recipe = tiny_recipe(colour_tree, epochs=1)
    (folder / "recipe.json").write_text(recipe.to_json())
    (folder / "metrics.jsonl").write_text("")
    (folder / "train.log").write_text("2026-12-07 18:00:00,000 INFO data: 36 images\n")
    with caplog.at_level(logging.WARNING, logger="alexnet"):
        fit(recipe, folder, progress=False)
    assert f"{folder} holds a run that ended before its first checkpoint" in caplog.text
    assert [r["epoch"] for r in read_metrics(folder / "metrics.jsonl")] == [1]


def test_an_error_found_after_the_lock_leaves_no_new_folder(tmp_path, colour_tree, monkeypatch):
    def no_images(*args, **kwargs):
        raise DataError("no readable training images in this epoch")

    monkeypatch.setattr("alexnet.train.start_run", no_images)
    with pytest.raises(DataError):
        fit(tiny_recipe(colour_tree, epochs=1), tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()


def test_metrics_lines_of_bytes_or_shapes_not_ours_are_dropped(tmp_path, caplog):
    path = tmp_path / "metrics.jsonl"
    wrong_type = json.dumps({**json.loads(record(4)), "val_top1_error": "x"})
    lines = [record(1), "\udcff\udcfe", '{"epoch": 3, "lr": 0.01}', wrong_type]  # \udcff: 0xff
    path.write_bytes("\n".join(lines).encode("utf-8", "surrogateescape") + b"\n")
    with caplog.at_level(logging.WARNING, logger="alexnet"):
        assert [r["epoch"] for r in read_metrics(path)] == [1]
    assert all(f"line {n} is cut short" in caplog.text for n in (2, 3, 4))
