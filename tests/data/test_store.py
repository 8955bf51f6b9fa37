"""`alexnet prepare` and the prepared store: the same images, labels, classes and statistics as
the source after §2; resumable after a kill; never rewritten; usable as any --data source."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from data_helpers import BAD_FILES, write_tree
from PIL import Image
from torchvision.io import decode_jpeg

from alexnet.data import DataError, compute_stats, open_source
from alexnet.data.store import prepare as prepare_module
from alexnet.data.store.prepare import Settings, prepare_store
from alexnet.data.store.read import PreparedSource

SIZE = 16  # small images keep the suite fast; §2's arithmetic is the same at 256


def prepare(source: str, destination: Path, size: int = SIZE, **options) -> dict:
    settings = Settings(source, size, **options)
    splits = open_source(source, val_fraction=settings.val_fraction, seed=settings.split_seed)
    return prepare_store(splits, destination, settings, workers=0, progress=False)


def jpeg_of(pixels: torch.Tensor, quality: int) -> torch.Tensor:
    """(3, H, W) uint8 as the bytes of a JPEG file (Pillow's encoder)."""
    buffer = io.BytesIO()
    Image.fromarray(pixels.permute(1, 2, 0).numpy()).save(buffer, "JPEG", quality=quality)
    return torch.frombuffer(bytearray(buffer.getvalue()), dtype=torch.uint8)


def store_files(folder: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(folder.iterdir())}


@pytest.mark.parametrize("encoding", ["raw", "jpeg"])
def test_the_store_holds_the_sources_images_after_section_2(ilsvrc_kaggle, tmp_path, encoding):
    source = open_source(str(ilsvrc_kaggle))
    prepare(str(ilsvrc_kaggle), tmp_path / "store", encoding=encoding)
    store = open_source(str(tmp_path / "store"))
    assert isinstance(store.train, PreparedSource)
    assert store.classes == source.classes
    for split in ("train", "val"):
        original, stored = getattr(source, split), getattr(store, split)
        assert stored.labels.tolist() == original.labels.tolist()
        for index in range(len(original)):
            expected = original.pixels(index, SIZE)  # (3, S, S): §2 applied to the file
            if encoding == "jpeg":  # what a JPEG of quality 90 of those pixels decodes to
                expected = decode_jpeg(jpeg_of(expected, quality=90))
            assert torch.equal(stored.pixels(index, SIZE), expected)
            image, label = stored.load(index)
            assert image.size == (SIZE, SIZE) and label == original.labels[index]


def test_the_stores_statistics_are_those_of_the_statistics_pass(ilsvrc_kaggle, tmp_path):
    prepare(str(ilsvrc_kaggle), tmp_path / "store")
    expected = compute_stats(open_source(str(ilsvrc_kaggle)).train, SIZE, cache_dir=None)
    stored = open_source(str(tmp_path / "store")).train
    stats = compute_stats(stored, SIZE, cache_dir=tmp_path / "cache")  # no pass: the store's own
    assert not (tmp_path / "cache").exists()
    for name, value in expected.state_dict().items():
        assert torch.equal(torch.as_tensor(stats.state_dict()[name]), torch.as_tensor(value)), name


def test_the_store_does_not_depend_on_the_number_of_workers(image_tree, tmp_path, monkeypatch):
    monkeypatch.setattr(prepare_module, "CHUNK", 3)  # several chunks for the pool to share
    prepare(str(image_tree), tmp_path / "alone")
    settings = Settings(str(image_tree), SIZE)
    splits = open_source(str(image_tree))
    prepare_store(splits, tmp_path / "pool", settings, workers=2, progress=False)
    assert store_files(tmp_path / "alone") == store_files(tmp_path / "pool")


class Killed(BaseException):
    """What a kill does to the writer: it stops where it is."""


@pytest.mark.parametrize("kill_at", [1, 6, 13, 15])  # train: first, middle, finished; val
def test_a_killed_prepare_run_again_gives_the_same_store(
    image_tree, tmp_path, monkeypatch, kill_at
):
    monkeypatch.setattr(prepare_module, "CHUNK", 3)
    monkeypatch.setattr(prepare_module, "COMMIT_SECONDS", 0.0)  # a commit after every chunk
    prepare(str(image_tree), tmp_path / "straight")
    commit, calls = prepare_module._commit, []

    def dying_commit(files, state, sums, progress_file):
        calls.append(1)
        if len(calls) == kill_at:  # the chunk's data is written, its record is not
            for file in files:
                file.write(b"half of a chunk")
            raise Killed
        commit(files, state, sums, progress_file)

    monkeypatch.setattr(prepare_module, "_commit", dying_commit)
    with pytest.raises(Killed):
        prepare(str(image_tree), tmp_path / "killed")
    with pytest.raises(DataError, match="unfinished prepared store"):
        open_source(str(tmp_path / "killed"))
    monkeypatch.setattr(prepare_module, "_commit", commit)
    prepare(str(image_tree), tmp_path / "killed")
    assert store_files(tmp_path / "killed") == store_files(tmp_path / "straight")


def test_prepare_killed_by_sigkill_finishes_when_run_again(image_tree, tmp_path):
    """A real `kill -9` in the middle of the pass (the process kills itself after a commit)."""
    script = """
import os, signal, sys
from alexnet.cli import main
from alexnet.data.store import prepare
prepare.CHUNK, prepare.COMMIT_SECONDS = 3, 0.0
commit, calls = prepare._commit, []
def dying_commit(*args):
    commit(*args)
    calls.append(1)
    if len(calls) == 5 and os.environ.get("DIE"):
        os.kill(os.getpid(), signal.SIGKILL)
prepare._commit = dying_commit
sys.exit(main(sys.argv[1:]))
"""
    command = [sys.executable, "-c", script, "prepare", str(image_tree), str(tmp_path / "killed")]
    size = 64  # the CLI's smallest: the net's smallest crop
    options = ["--set", f"data.image_size={size}", "--workers", "2", "--no-progress"]
    killed = subprocess.run([*command, *options], env={**os.environ, "DIE": "1"})
    assert killed.returncode == -signal.SIGKILL
    assert (tmp_path / "killed" / "train.progress.pt").is_file()  # it died half way
    prepare(str(image_tree), tmp_path / "killed", size)  # run again (here, to save a start-up)
    prepare(str(image_tree), tmp_path / "straight", size)
    assert store_files(tmp_path / "killed") == store_files(tmp_path / "straight")


def test_a_kill_while_tidying_up_or_mid_write_leaves_nothing_behind(
    image_tree, tmp_path, monkeypatch
):
    prepare(str(image_tree), tmp_path / "straight")
    killed = tmp_path / "killed"
    monkeypatch.setattr(prepare_module, "_remove_job_files", lambda folder: _raise(Killed))
    with pytest.raises(Killed):  # store.json is written; the job files are still there
        prepare(str(image_tree), killed)
    monkeypatch.undo()
    (killed / ".train.progress.pt.x1y2.tmp").write_bytes(b"half a progress record")
    prepare(str(image_tree), killed)  # finishes the tidying up, rewrites nothing
    assert store_files(killed) == store_files(tmp_path / "straight")
    assert not list(killed.glob(".*"))
    # a kill while the job file was first written: nothing but a temporary file
    (tmp_path / "early").mkdir()
    (tmp_path / "early" / ".prepare.json.a1b2.tmp").write_text("{")
    prepare(str(image_tree), tmp_path / "early")
    assert store_files(tmp_path / "early") == store_files(tmp_path / "straight")


def _raise(error):
    raise error


def test_a_second_prepare_into_the_same_folder_is_refused_while_one_runs(image_tree, tmp_path):
    (tmp_path / "store").mkdir()
    holder = """
import fcntl, sys, time
lock = open(sys.argv[1], "a")
fcntl.lockf(lock, fcntl.LOCK_EX)
print("locked", flush=True)
time.sleep(60)
"""
    lock = tmp_path / "store" / prepare_module.LOCK
    other = subprocess.Popen([sys.executable, "-c", holder, str(lock)], stdout=subprocess.PIPE)
    try:
        assert other.stdout.readline() == b"locked\n"  # another process holds the folder
        with pytest.raises(DataError, match="another alexnet prepare is writing"):
            prepare(str(image_tree), tmp_path / "store")
    finally:
        other.kill()
        other.wait()
    prepare(str(image_tree), tmp_path / "store")  # its lock died with it
    assert not lock.exists()


def test_a_store_file_shorter_than_its_commit_is_damage(image_tree, tmp_path, monkeypatch):
    monkeypatch.setattr(prepare_module, "CHUNK", 3)
    monkeypatch.setattr(prepare_module, "COMMIT_SECONDS", 0.0)
    commit, calls = prepare_module._commit, []

    def dying_commit(*args):
        commit(*args)
        calls.append(1)
        if len(calls) == 3:
            raise Killed

    monkeypatch.setattr(prepare_module, "_commit", dying_commit)
    with pytest.raises(Killed):
        prepare(str(image_tree), tmp_path / "store")
    monkeypatch.undo()
    (tmp_path / "store" / "train.bin").write_bytes(b"")  # lost, as on a failing disk
    with pytest.raises(DataError, match="shorter than its last commit"):
        prepare(str(image_tree), tmp_path / "store")


def test_a_finished_store_is_never_rewritten(image_tree, tmp_path):
    prepare(str(image_tree), tmp_path / "store")
    before = store_files(tmp_path / "store")
    with pytest.raises(DataError, match="already holds a finished prepared store"):
        prepare(str(image_tree), tmp_path / "store")
    with pytest.raises(DataError, match="already holds a finished prepared store"):
        prepare(str(image_tree), tmp_path / "store", quality=50)
    assert store_files(tmp_path / "store") == before


def test_prepare_refuses_a_folder_it_did_not_start(image_tree, tmp_path, monkeypatch):
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    (tmp_path / "busy" / ".draft.tmp").write_text("mine too")
    with pytest.raises(DataError, match="not empty"):
        prepare(str(image_tree), tmp_path / "busy")
    assert sorted(path.name for path in (tmp_path / "busy").iterdir()) == [
        ".draft.tmp",
        "notes.txt",
    ]
    monkeypatch.setattr(prepare_module, "CHUNK", 3)
    monkeypatch.setattr(prepare_module, "COMMIT_SECONDS", 0.0)
    monkeypatch.setattr(prepare_module, "_commit", lambda *args: (_ for _ in ()).throw(Killed))
    with pytest.raises(Killed):
        prepare(str(image_tree), tmp_path / "half", quality=90)
    monkeypatch.undo()
    with pytest.raises(DataError, match="unfinished store of other settings"):
        prepare(str(image_tree), tmp_path / "half", quality=80)


def test_bad_files_are_skipped_named_and_counted(odd_tree, tmp_path):
    manifest = prepare(str(odd_tree), tmp_path / "store", val_fraction=0.3)
    skipped = [path for split in ("train", "val") for path, _ in manifest["skipped"][split]]
    assert sorted(Path(path).name for path in skipped) == sorted(BAD_FILES)
    source = open_source(str(odd_tree), val_fraction=0.3)
    images = {split: len(getattr(source, split)) for split in ("train", "val")}
    assert sum(manifest["images"].values()) == sum(images.values()) - len(BAD_FILES)
    on_disk = json.loads((tmp_path / "store" / "store.json").read_text())
    assert on_disk["skipped"] == manifest["skipped"]
    assert (
        f"{len(BAD_FILES)} unreadable files left out"
        in open_source(str(tmp_path / "store")).description
    )


def test_a_store_opens_for_validation_only(image_tree, tmp_path):
    prepare(str(image_tree), tmp_path / "store")
    full, val_only = (open_source(str(tmp_path / "store"), val_only=v) for v in (False, True))
    assert val_only.train is None
    assert val_only.val.labels.tolist() == full.val.labels.tolist()
    assert np.array_equal(val_only.val.offsets, full.val.offsets)


def test_a_store_refuses_to_be_prepared_again(image_tree, tmp_path):
    prepare(str(image_tree), tmp_path / "store")
    with pytest.raises(DataError, match="is a prepared store already"):
        prepare(str(tmp_path / "store"), tmp_path / "again")


def _relabel(store: Path) -> None:
    rows = np.fromfile(store / "val.index", dtype="<i8").reshape(-1, 3)
    rows[1, 2] = 7  # the store has 3 classes
    rows.tofile(store / "val.index")


def _reach_past_the_end(store: Path) -> None:
    rows = np.fromfile(store / "train.index", dtype="<i8").reshape(-1, 3)
    rows[-1, 1] += 10**6
    rows.tofile(store / "train.index")


def _resize_in_manifest(store: Path) -> None:
    manifest = json.loads((store / "store.json").read_text())
    manifest["image_size"] = "huge"
    (store / "store.json").write_text(json.dumps(manifest))


def _shrink_the_mean_image(store: Path) -> None:
    from safetensors.torch import load_file, save_file

    tensors = load_file(store / "stats.safetensors")
    tensors["mean_image"] = tensors["mean_image"][:, :8, :8].contiguous()
    save_file(tensors, store / "stats.safetensors")


@pytest.mark.parametrize(
    ("damage", "file", "message"),
    [
        (_relabel, "val.index", "image 1 has label 7, outside the 3 classes"),
        (_reach_past_the_end, "train.index", "lies outside train.bin"),
        (_resize_in_manifest, "store.json", "image_size='huge' is not a size in 1..4096"),
        (_shrink_the_mean_image, "stats.safetensors",
         r"data_stats.mean_image is \(3, 8, 8\), expected \(3, 16, 16\)"),
    ],
)  # fmt: skip
def test_a_damaged_store_is_one_line_naming_the_file_before_any_work(
    image_tree, tmp_path, damage, file, message
):
    store = tmp_path / "store"
    prepare(str(image_tree), store)
    damage(store)
    with pytest.raises(DataError, match=message) as error:
        splits = open_source(str(store))
        compute_stats(splits.train, SIZE, cache_dir=None, progress=False)
    assert str(store / file) in str(error.value) and "\n" not in str(error.value)


def test_prepare_refuses_a_destination_inside_its_source_and_the_reverse(image_tree, tmp_path):
    with pytest.raises(DataError, match="must not contain one another"):
        prepare(str(image_tree), image_tree / "store")
    assert not (image_tree / "store").exists()
    (tmp_path / "outer").mkdir()
    inner = write_tree(tmp_path / "outer" / "data", {"a": 2, "b": 2})
    with pytest.raises(DataError, match="must not contain one another"):
        prepare(str(inner), tmp_path / "outer")
