"""files.py's atomic writers: a checkpoint's flush to disk off the training path, still atomic;
a file written over keeps its permission bits; an error names the file asked for."""

import errno
import os
import signal
import stat
import threading
from pathlib import Path

import pytest

import alexnet.files
from alexnet.files import UMASK, FlushedInBackground, write_atomically, write_text_atomically


def test_the_old_file_stays_until_the_new_one_is_flushed(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    path.write_bytes(b"old")
    release, flushed = threading.Event(), []
    real_fsync = os.fsync

    def slow_fsync(descriptor):
        release.wait(timeout=30)
        flushed.append(descriptor)
        real_fsync(descriptor)

    monkeypatch.setattr(alexnet.files.os, "fsync", slow_fsync)
    linked = []
    writer = FlushedInBackground()
    writer.write(
        path, lambda file: file.write(b"new"), then=lambda: linked.append(path.read_bytes())
    )
    assert path.read_bytes() == b"old"  # written, not yet flushed: not in place
    assert len(list(tmp_path.glob(".last.pt.*.tmp"))) == 1
    release.set()
    writer.wait()
    assert path.read_bytes() == b"new" and flushed
    assert linked == [b"new"]  # `then` ran after the rename
    assert list(tmp_path.glob("*.tmp")) == []


def test_a_second_write_waits_for_the_first(tmp_path):
    writer = FlushedInBackground()
    for content in (b"one", b"two", b"three"):
        writer.write(tmp_path / "f", lambda file, c=content: file.write(c))
    writer.wait()
    assert (tmp_path / "f").read_bytes() == b"three"


def test_the_replaced_file_hands_back_its_cached_pages_just_before_the_new_one_is_written(
    tmp_path, monkeypatch
):
    calls = []
    real_fsync = os.fsync
    monkeypatch.setattr(
        alexnet.files.os, "fsync", lambda fd: calls.append("fsync") or real_fsync(fd)
    )

    def advise(descriptor, offset, length, advice):
        calls.append((advice, os.fstat(descriptor).st_ino))

    monkeypatch.setattr(alexnet.files.os, "posix_fadvise", advise)
    path = tmp_path / "last.pt"
    writer = FlushedInBackground()
    writer.write(path, lambda file: calls.append("write a") or file.write(b"a"))
    writer.wait()
    first = path.stat().st_ino
    writer.write(path, lambda file: calls.append("write b") or file.write(b"b"))
    writer.wait()
    # nothing to hand back before the first; the newest file stays cached
    assert calls == ["write a", "fsync", (os.POSIX_FADV_DONTNEED, first), "write b", "fsync"]
    assert path.read_bytes() == b"b" and path.stat().st_ino != first


def test_a_failed_flush_is_raised_by_wait_and_leaves_no_temporary(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    path.write_bytes(b"old")

    def full(source, destination):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(alexnet.files.os, "replace", full)
    writer = FlushedInBackground()
    writer.write(path, lambda file: file.write(b"new"))
    with pytest.raises(OSError, match="No space"):
        writer.wait()
    assert path.read_bytes() == b"old"
    assert list(tmp_path.glob("*.tmp")) == []
    writer.wait()  # raised once


def test_a_ctrl_c_during_wait_is_raised_once_the_file_is_in_place(tmp_path, monkeypatch, request):
    """fit releases the run folder's lock after wait(): a second Ctrl-C there must not let the
    lock go while the flush thread is still renaming last.pt."""
    path = tmp_path / "last.pt"
    release = threading.Event()
    real_fsync = os.fsync

    def slow_fsync(descriptor):
        release.wait(timeout=30)
        real_fsync(descriptor)

    monkeypatch.setattr(alexnet.files.os, "fsync", slow_fsync)
    writer = FlushedInBackground()
    writer.write(path, lambda file: file.write(b"new"))
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)  # Ctrl-C raises
    request.addfinalizer(lambda: signal.signal(signal.SIGINT, previous))
    main = threading.main_thread().ident
    threading.Timer(0.2, signal.pthread_kill, args=(main, signal.SIGINT)).start()  # in wait()
    threading.Timer(0.6, release.set).start()  # the flush ends later
    with pytest.raises(KeyboardInterrupt):
        writer.wait()
    assert release.is_set() and path.read_bytes() == b"new"


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.mark.parametrize("before", [0o600, 0o640, 0o755, 0o4755])
def test_a_file_written_over_keeps_its_permission_bits(tmp_path, before):
    path = tmp_path / "predictions.csv"
    path.write_text("old")
    os.chmod(path, before)
    write_text_atomically(path, "new")
    assert path.read_text() == "new"
    assert mode(path) == before & 0o777  # set-user-ID stays with the file replaced


def test_a_checkpoint_written_in_the_background_keeps_its_bits_and_a_new_file_gets_the_umasks(
    tmp_path,
):
    path = tmp_path / "last.pt"
    writer = FlushedInBackground()
    writer.write(path, lambda file: file.write(b"first"))
    writer.wait()
    assert mode(path) == 0o666 & ~UMASK  # not mkstemp's 0600
    os.chmod(path, 0o600)
    writer.write(path, lambda file: file.write(b"second"))
    writer.wait()
    assert path.read_bytes() == b"second" and mode(path) == 0o600


def assert_names_the_path(error: pytest.ExceptionInfo, path: Path) -> None:
    assert error.value.filename == str(path) and error.value.filename2 is None
    assert ".tmp" not in str(error.value)


def test_an_output_over_a_folder_names_the_output_and_leaves_no_temporary(tmp_path):
    folder = tmp_path / "out.csv"
    folder.mkdir()
    with pytest.raises(IsADirectoryError) as error:
        write_text_atomically(folder, "rows")
    assert_names_the_path(error, folder)
    assert os.listdir(tmp_path) == ["out.csv"] and os.listdir(folder) == []


@pytest.mark.skipif(not os.path.isdir("/sys"), reason="needs Linux's /sys")
def test_an_output_in_a_folder_nobody_may_write_names_the_output():
    path = Path("/sys/predictions.csv")  # not writable, by root neither
    with pytest.raises(OSError) as error:
        write_text_atomically(path, "rows")
    assert_names_the_path(error, path)


def test_a_full_disk_names_the_output_and_keeps_the_old_file(tmp_path):
    path = tmp_path / "out.json"
    path.write_text("old")

    def full(file):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    with pytest.raises(OSError) as error:
        write_atomically(path, full)
    assert_names_the_path(error, path)
    assert error.value.errno == errno.ENOSPC
    assert path.read_text() == "old" and os.listdir(tmp_path) == ["out.json"]


def test_an_error_about_another_file_keeps_its_name(tmp_path):
    """Where the two must part: a parent that is a file is named as itself."""
    parent = tmp_path / "notes.txt"
    parent.write_text("a file")
    with pytest.raises(OSError) as error:
        write_text_atomically(parent / "out.csv", "rows")
    assert error.value.filename == str(parent)
