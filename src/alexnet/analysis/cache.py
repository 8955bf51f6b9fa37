"""What the report computes from a checkpoint, kept once per checkpoint in `RUN/cache/`.

A run's report evaluates the checkpoint on ten crops (§4.1), embeds every image by fc7 (§6.1),
fits the binary codes and draws Figure 4: seconds on digits, hours on ImageNet. Each result is
one file, `cache/<checkpoint>-<what>-<key>.<suffix>`. The key changes with the checkpoint file
(its path, inode, size and modification time: every save writes a new file), with the data
(the fingerprints of the splits it reads), with the options that change the result and with
`VERSION`, so a stale result is never read, and a second `alexnet report` of the same
checkpoint only reads.
Every file is written atomically (files.py): a report killed half-way leaves no partial result.

The page itself is kept too (`keep_page`), keyed also by the run files it shows and by a stamp
of the data's files (their names, sizes and modification times, cheaper than the fingerprints
that read every image): `saved_page` finds it for an unchanged run without importing torch, the
data sources or matplotlib, so `alexnet report` of such a run takes a fraction of a second.
This module imports none of them.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from alexnet.files import write_atomically, write_text_atomically
from alexnet.run.checkpoint_file import checkpoint_file

FOLDER = "cache"
VERSION = 2  # raised when what is cached is computed or drawn differently: old files are not read
SHOWN_RUN_FILES = ("metrics.jsonl", "curves.png", "conv1.png")  # what a page shows of the run
MAX_STAMPED_ENTRIES = 100_000  # data with more files is not stamped: its page is not kept


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


def page_path(checkpoint: Path, options: dict[str, Any], data_stamp: str) -> Path:
    """Where the report page of `checkpoint` made with `options` from data of `data_stamp` is
    kept; the key also changes with the run files the page shows."""
    shown = [_stat_key(checkpoint.parent / name) for name in SHOWN_RUN_FILES]
    return cache_path(checkpoint, "report", ".html", data_stamp, *shown, *sorted(options.items()))


def keep_page(
    html: Path, checkpoint: Path, options: dict[str, Any], data: Sequence[Path], stamp: str
) -> None:
    """Keep the page just written at `html` for `saved_page`: `stamp` is `data_stamp(data)`
    taken before the data was read."""
    page = page_path(checkpoint, options, stamp)
    text = html.read_text()
    write_text_atomically(page, text)
    record = {"paths": [str(path) for path in data], "stamp": stamp}
    write_text_atomically(_data_record(checkpoint), json.dumps(record) + "\n")  # last: a key


def saved_page(target: Path, options: dict[str, Any]) -> Path | None:
    """The kept page of the checkpoint `target` names, made with `options`, when neither the
    checkpoint, the run files the page shows nor the data's files changed since; else None."""
    checkpoint = checkpoint_file(target, prefer="best.pt")  # as the report reads it
    try:
        record = json.loads(_data_record(checkpoint).read_text())
        paths, stamp = [Path(path) for path in record["paths"]], record["stamp"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if data_stamp(paths) != stamp:
        return None
    page = page_path(checkpoint, options, stamp)
    return page if page.is_file() else None


def data_stamp(paths: Sequence[Path]) -> str | None:
    """A digest of the names, sizes and modification times of `paths` and of every file and
    folder under them (a folder's time changes when a file is added to it or removed); None for
    none, or for more than MAX_STAMPED_ENTRIES."""
    if not paths:
        return None
    digest, entries = hashlib.sha256(), 0
    for root in paths:
        for path in _tree(Path(root)):
            entries += 1
            if entries > MAX_STAMPED_ENTRIES:
                return None
            digest.update(f"{path}\0{_stat_key(path)}\n".encode("utf-8", "surrogateescape"))
    return digest.hexdigest()


def _tree(root: Path):
    """`root` and, for a folder, every folder and file under it, in a fixed order."""
    yield root
    if root.is_dir():
        for folder, folders, files in os.walk(root):
            folders.sort()
            for name in sorted(folders) + sorted(files):
                yield Path(folder) / name


def _stat_key(path: Path) -> str:
    try:
        stat = path.stat()
    except OSError:
        return "missing"
    return f"{stat.st_size} {stat.st_mtime_ns}"


def _data_record(checkpoint: Path) -> Path:
    """The stamp of the data the last report of `checkpoint` read, and the paths it covers."""
    return cache_path(checkpoint, "data", ".json")
