"""Writing files so that a crash or a kill never leaves half of one: temporary file, then rename."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO


def _read_umask() -> int:
    mask = os.umask(0o022)  # read once, at import, before any thread could create a file
    os.umask(mask)
    return mask


UMASK = _read_umask()


def write_atomically(path: Path | str, write: Callable[[BinaryIO], object]) -> None:
    """`write(file)` to a temporary file beside `path`, flushed to disk, then renamed to `path`.

    Readers see the old file or the new one, never a partial one; on failure the temporary file
    is removed and the old file stays.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(temporary, 0o666 & ~UMASK)  # mkstemp's 0600 would hide the file from others
        with os.fdopen(handle, "wb") as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def write_text_atomically(path: Path | str, text: str) -> None:
    write_atomically(path, lambda file: file.write(text.encode()))


def remove_temporaries(folder: Path) -> None:
    """Delete the temporary files a killed `write_atomically` left in `folder` (`.NAME.*.tmp`)."""
    for path in Path(folder).glob(".*.tmp"):
        path.unlink(missing_ok=True)
