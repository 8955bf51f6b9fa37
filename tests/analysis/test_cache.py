"""The kept report page (cache.py): found for an unchanged run, never after the checkpoint, the
run files the page shows, the data's files or the options changed."""

import os

import pytest

from alexnet.analysis.cache import data_stamp, keep_page, saved_page
from alexnet.run.checkpoint_file import checkpoint_file

OPTIONS = {"samples": 8, "indices": None, "ten_crop": True, "device": "auto"}


@pytest.fixture
def kept(tmp_path):
    """A run folder with best.pt, its shown files and a page kept from a folder of data."""
    run, data = tmp_path / "run", tmp_path / "data"
    for path in [run / "best.pt", run / "last.pt", run / "metrics.jsonl", run / "curves.png",
                 data / "a" / "1.png", data / "b" / "2.png"]:  # fmt: skip
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(path.name.encode())
    (run / "report.html").write_text("<html>the page</html>")
    keep_page(run / "report.html", run / "best.pt", OPTIONS, [data], data_stamp([data]))
    return run, data


def later(path):
    """Give `path` a later modification time, as a new write would."""
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))


def test_an_unchanged_run_finds_its_page(kept):
    run, _ = kept
    page = saved_page(run, OPTIONS)
    assert page is not None and page.read_text() == "<html>the page</html>"
    assert saved_page(run / "best.pt", OPTIONS) == page  # the checkpoint named itself


def test_other_options_find_no_page(kept):
    run, _ = kept
    assert saved_page(run, {**OPTIONS, "samples": 4}) is None
    assert saved_page(run, {**OPTIONS, "ten_crop": False}) is None


@pytest.mark.parametrize("changed", ["best.pt", "metrics.jsonl", "curves.png"])
def test_a_newer_checkpoint_or_shown_file_finds_no_page(kept, changed):
    run, _ = kept
    later(run / changed)
    assert saved_page(run, OPTIONS) is None


def test_a_shown_file_that_appears_finds_no_page(kept):
    run, _ = kept
    (run / "conv1.png").write_bytes(b"new")
    assert saved_page(run, OPTIONS) is None


def test_changed_data_finds_no_page(kept):
    run, data = kept
    later(data / "a" / "1.png")
    assert saved_page(run, OPTIONS) is None


def test_an_image_added_to_the_data_finds_no_page(kept):
    run, data = kept
    (data / "b" / "3.png").write_bytes(b"3")
    assert saved_page(run, OPTIONS) is None


def test_an_image_removed_from_the_data_finds_no_page(kept):
    run, data = kept
    (data / "b" / "2.png").unlink()
    assert saved_page(run, OPTIONS) is None


def test_a_run_folder_without_best_reports_last(tmp_path):
    (tmp_path / "last.pt").write_bytes(b"")
    assert checkpoint_file(tmp_path, prefer="best.pt") == tmp_path / "last.pt"
    (tmp_path / "best.pt").write_bytes(b"")
    assert checkpoint_file(tmp_path, prefer="best.pt") == tmp_path / "best.pt"
    assert checkpoint_file(tmp_path) == tmp_path / "last.pt"
    assert checkpoint_file(tmp_path / "best.pt") == tmp_path / "best.pt"


def test_data_too_large_to_stamp_is_not_stamped(tmp_path, monkeypatch):
    for n in range(3):
        (tmp_path / f"{n}.png").write_bytes(b"")
    assert data_stamp([tmp_path]) is not None
    monkeypatch.setattr("alexnet.analysis.cache.MAX_STAMPED_ENTRIES", 3)
    assert data_stamp([tmp_path]) is None  # the folder and its three files: four entries
    assert data_stamp([]) is None


def test_a_data_file_name_that_is_not_utf8_is_stamped(tmp_path):
    """`alexnet report` of a run whose data holds such a name (training reads it) failed with a
    UnicodeEncodeError here."""
    (tmp_path / os.fsdecode(b"\xff.png")).write_bytes(b"not read")
    first = data_stamp([tmp_path])
    (tmp_path / os.fsdecode(b"\xfe.png")).write_bytes(b"not read")
    assert first is not None and data_stamp([tmp_path]) not in (None, first)
