"""What the report computes from a checkpoint, kept once per checkpoint in `RUN/cache/`.

A run's report evaluates the checkpoint on ten crops (§4.1), embeds every image by fc7 (§6.1),
fits the binary codes and draws Figure 4: seconds on digits, hours on ImageNet. Each result is
one file, `cache/<checkpoint>-<what>-<key>.<suffix>`. The key changes with the checkpoint file
(its path, inode, size and modification time: every save writes a new file), with the data
(the fingerprints of the splits it reads), with the options that change the result and with
`VERSION`, so a stale result is never read, and a second `alexnet report` of the same
checkpoint only reads.
Every file is written atomically (files.py): a report killed half-way leaves no partial result.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from alexnet.files import write_atomically, write_text_atomically

FOLDER = "cache"
VERSION = 1  # raised when what is cached is computed or drawn differently: old files are not read


def cache_path(checkpoint: Path, what: str, suffix: str, *key: object) -> Path:
    """The cache file of `what` computed from `checkpoint` with `key` (data fingerprints,
    options), e.g. `RUN/cache/best-evaluation-3f2a9c01b7de.json`."""
    checkpoint = Path(checkpoint)
    stat = checkpoint.stat()
    parts = [VERSION, checkpoint.resolve(), stat.st_ino, stat.st_size, stat.st_mtime_ns, *key]
    digest = hashlib.sha256("\0".join(map(str, parts)).encode()).hexdigest()[:12]
    return checkpoint.parent / FOLDER / f"{checkpoint.stem}-{what}-{digest}{suffix}"


def cached_json(path: Path, compute: Callable[[], Any]) -> Any:
    """The JSON value at `path`, or `compute()`, written there first."""
    if path.exists():
        return json.loads(path.read_text())
    value = compute()
    write_text_atomically(path, json.dumps(value, indent=2) + "\n")
    return value


def cached_file(path: Path, make: Callable[[Path], None], copy_to: Path) -> None:
    """Copy the file at `path` to `copy_to`, calling `make(path)` first when it is not there."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        make(path)
    data = path.read_bytes()
    write_atomically(copy_to, lambda file: file.write(data))
