"""Files a command writes: never half of one (temporary file, then rename), never one of its own
inputs (`refuse_overwriting`), never two writers in one folder at once (`FolderLock`)."""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import stat
import tempfile
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import IO, BinaryIO

from alexnet.errors import UserError

log = logging.getLogger("alexnet")


def _read_umask() -> int:
    mask = os.umask(0o022)  # read once, at import, before any thread could create a file
    os.umask(mask)
    return mask


UMASK = _read_umask()


CACHE_KINDS = ("stats", "downloads", "kernels")  # each kept in a folder of its own


def cache_root() -> Path:
    """The folder of what the tool keeps between runs: `$ALEXNET_CACHE`, or ~/.cache/alexnet."""
    return Path(os.environ.get("ALEXNET_CACHE") or Path.home() / ".cache" / "alexnet")


def cache_dir(kind: str) -> Path:
    """The cache's folder for one kind of thing: data statistics, data sets downloaded once, or
    compiled kernels, kept apart so that clearing one leaves the others."""
    if kind not in CACHE_KINDS:
        raise ValueError(f"unknown cache kind {kind!r}; one of {CACHE_KINDS}")
    return cache_root() / kind


def write_atomically(path: Path | str, write: Callable[[BinaryIO], object]) -> None:
    """`write(file)` to a temporary file beside `path`, flushed to disk, then renamed to `path`.

    Readers see the old file or the new one, never a partial one; on failure the temporary file
    is removed and the old file stays. A file replaced keeps its permission bits; an error
    names `path`, never the temporary file.
    """
    temporary = _written_beside(Path(path), write)
    try:
        _flush_and_rename(temporary, Path(path))
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def _written_beside(path: Path, write: Callable[[BinaryIO], object]) -> Path:
    """A temporary file `.NAME.<random>.tmp` beside `path`, holding what `write` wrote, with the
    permission bits of the file at `path` (a new one's: 0666 less the umask)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(
            dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"
        )
    except OSError as error:
        raise _naming(path, error) from None
    try:
        os.chmod(temporary, _mode_for(path))  # mkstemp's 0600 would hide a new file from others
        with os.fdopen(handle, "wb") as file:
            write(file)
    except BaseException as error:
        Path(temporary).unlink(missing_ok=True)
        if isinstance(error, OSError):
            raise _naming(path, error) from None
        raise
    return Path(temporary)


def _mode_for(path: Path) -> int:
    """The permission bits of the regular file at `path` (a 0600 one stays private), else those
    of a new file. Never set-user-ID and the like: they belong to the file replaced."""
    try:
        status = os.stat(path)
    except OSError:
        return 0o666 & ~UMASK
    return stat.S_IMODE(status.st_mode) & 0o777 if stat.S_ISREG(status.st_mode) else 0o666 & ~UMASK


def _naming(path: Path, error: OSError) -> OSError:
    """`error` naming `path` where it named only `path`, a temporary file beside it or no file
    (a full disk), so that the message names the file the user asked for."""

    def ours(name) -> bool:
        named = Path(os.fsdecode(name))
        temporary = named.name.startswith(f".{path.name}.") and named.name.endswith(".tmp")
        return named == path or temporary

    names = [name for name in (error.filename, error.filename2) if name is not None]
    if error.errno is None or not all(map(ours, names)):
        return error  # about another file: a parent folder that is a file, say
    return type(error)(error.errno, error.strerror, str(path))


def _flush_and_rename(temporary: Path, path: Path) -> None:
    try:
        descriptor = os.open(temporary, os.O_RDONLY)
        try:
            os.fsync(descriptor)  # the data on disk before the name points at it
        finally:
            os.close(descriptor)
        os.replace(temporary, path)
    except OSError as error:
        raise _naming(path, error) from None


def _hand_back_cached_pages(path: Path) -> None:
    """Drop `path`'s clean pages from the page cache (the file itself is untouched, and dirty
    pages stay), so that the next write can take them at once."""
    if not hasattr(os, "posix_fadvise"):
        return
    try:
        descriptor = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return
    try:
        os.posix_fadvise(descriptor, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(descriptor)


class FlushedInBackground:
    """Atomic writes whose slow last part runs in a thread while the caller goes on.

    `write(path, ...)` writes the temporary file at once (into the page cache), then a thread
    flushes it to disk, renames it to `path` and calls `then()`: a checkpoint of this net is
    456 MB, and its flush is most of its write (docs/measurements.md, "Checkpoints"). Until the
    thread is done the old file stays in place, so a kill then loses only the newest write.
    The next `write` and `wait()` wait for it and raise what it raised; the thread is not a
    daemon, so the interpreter waits for it too before exiting.

    Just before it writes, the file it replaces (on disk since its own flush) hands its cached
    pages back to the system, and the new file is written into them at once. Memory freed
    here goes back to the virtual machine's host within seconds, and taking fresh memory is
    what a write pays for (docs/measurements.md, "Checkpoints"). The newest file stays cached:
    the report reads it.
    """

    def __init__(self) -> None:
        self._thread: threading.Thread | None = None
        self._done = threading.Event()  # set when the thread's flush has ended
        self._error: BaseException | None = None

    def write(
        self,
        path: Path | str,
        write: Callable[[BinaryIO], object],
        then: Callable[[], object] | None = None,
    ) -> None:
        self.wait()
        path = Path(path)
        _hand_back_cached_pages(path)
        temporary = _written_beside(path, write)

        done = threading.Event()

        def finish() -> None:
            try:
                _flush_and_rename(temporary, path)
                if then is not None:
                    then()
            except BaseException as error:  # raised again by wait(), in the caller's thread
                temporary.unlink(missing_ok=True)
                self._error = error
            finally:
                done.set()

        self._thread = threading.Thread(target=finish, name=f"flush {path.name}")
        self._done = done
        self._thread.start()

    def wait(self) -> None:
        """Return once the last write is in place; raise what it raised. A Ctrl-C meanwhile is
        raised once the write is in place (seconds), so that the caller's folder lock is never
        released while a file is still being renamed into the folder."""
        interrupted = None
        while self._thread is not None:
            try:  # an Event: a Thread.join() cut short by Ctrl-C returns early when retried
                self._done.wait()
                self._thread.join()
                self._thread = None
            except KeyboardInterrupt as error:
                interrupted = error
        if self._error is not None:
            error, self._error = self._error, None
            raise error
        if interrupted is not None:
            raise interrupted


def write_text_atomically(path: Path | str, text: str) -> None:
    """UTF-8; a file name that is not UTF-8 (a surrogate escape) is written as its own bytes."""
    write_atomically(path, lambda file: file.write(text.encode("utf-8", "surrogateescape")))


def remove_temporaries(folder: Path, ours: Callable[[str], bool] = lambda name: True) -> None:
    """Delete the temporary files a killed `write_atomically` left in `folder` (`.NAME.*.tmp`),
    those whose name `ours` accepts (a run folder's: run.folder.is_run_file)."""
    for path in Path(folder).glob(".*.tmp"):
        if ours(path.name):
            path.unlink(missing_ok=True)


class OverwritesInput(UserError):
    """An output path is one of the command's inputs."""


class FolderLock:
    """An exclusive lock on `folder` (made if need be), held until `release` or the `with` block
    ends, so that a second writer stops at once (raising `busy`) instead of writing the same
    files. A POSIX lock on the file `folder/name`: the kernel drops it when the process dies
    (kill -9 leaves no stale lock), and forked workers never hold it. The file goes on release,
    removed while still locked; a lock taken on a file that was removed meanwhile is taken
    again on the file now there, so that two processes never hold the lock at once."""

    def __init__(self, folder: Path, name: str, busy: Exception):
        folder.mkdir(parents=True, exist_ok=True)
        self.path = folder / name
        while True:
            self.file = open(self.path, "a")  # noqa: SIM115 (closed in release)
            try:
                fcntl.lockf(self.file, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as error:
                if error.errno not in (errno.EAGAIN, errno.EACCES):  # no POSIX locks (some NFS)
                    log.warning("cannot lock %s (%s); going on without a lock", self.path, error)
                    return
                self.file.close()
                raise busy from None
            if _identity(self.path) == _descriptor_identity(self.file):
                return
            self.file.close()  # its holder removed it between our open and our lock

    def release(self) -> None:
        self.path.unlink(missing_ok=True)  # the folder as it was
        self.file.close()  # releases the lock

    def __enter__(self) -> FolderLock:
        return self

    def __exit__(self, *exception) -> None:
        self.release()


def _descriptor_identity(file: IO) -> tuple[int, int]:
    stat = os.fstat(file.fileno())
    return stat.st_dev, stat.st_ino


def _identity(path: Path) -> tuple[int, int] | None:
    """(device, inode) of the file or folder at `path`, links followed; None if there is none."""
    try:
        stat = path.stat()
    except OSError:
        return None
    return stat.st_dev, stat.st_ino


def same_file(first: Path | str, second: Path | str) -> bool:
    """True when the two paths are one file: the same resolved path, or (existing) the same
    device and inode, so that symlinks and hard links count."""
    first, second = Path(first), Path(second)
    if first.resolve() == second.resolve():
        return True
    identity = _identity(first)
    return identity is not None and identity == _identity(second)


def refuse_overwriting(outputs: Iterable[Path | str | None], inputs: Iterable[Path | str]) -> None:
    """Raise OverwritesInput (naming both) when an output would replace one of the inputs, or
    lie inside an input that is a folder (a data set, a store); checked before anything is
    written. None outputs (not asked for) are left out."""
    inputs = [Path(path) for path in inputs]
    for output in filter(None, outputs):
        for source in inputs:
            if same_file(output, source):
                raise OverwritesInput(
                    f"{output} is {source}, which this command reads; write the output elsewhere"
                )
            if source.is_dir() and inside(output, source):
                raise OverwritesInput(
                    f"{output} lies inside {source}, which this command reads; write the output "
                    "elsewhere"
                )


def inside(path: Path | str, folder: Path | str) -> bool:
    """True when `path` is `folder` or lies below it: by their resolved paths, or because one
    of `path`'s folders is `folder` itself (device and inode), as through a bind mount."""
    path, folder = Path(path).resolve(), Path(folder).resolve()
    if path == folder or folder in path.parents:
        return True
    identity = _identity(folder)
    return identity is not None and any(_identity(p) == identity for p in (path, *path.parents))
