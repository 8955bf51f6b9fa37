"""A `--data SOURCE` string as a path: which sources name a folder (`cifar10:PATH`,
`fashion-mnist:PATH`, a folder or store) and which name nothing on disk (`digits`, a bare IDX
data set's name). open.py opens them; runs keep them absolute so a recipe works from any folder.
"""

from __future__ import annotations

import os
from pathlib import Path

from alexnet.data.sources.dataset import DataError
from alexnet.data.sources.idx import IDX_DATA_SETS

CIFAR_PREFIX = "cifar10:"
PATH_PREFIXES = (CIFAR_PREFIX, *(f"{name}:" for name in IDX_DATA_SETS))  # NAME:PATH sources


def checked_spec(spec: str) -> str:
    """`spec`, unless it is empty: Path("") is the current folder, which would be scanned."""
    if not spec.strip():
        raise DataError(
            "the data source is empty: give digits, cifar10:PATH, fashion-mnist[:PATH], "
            "mnist[:PATH] or an image folder"
        )
    return spec


def absolute_source(spec: str) -> str:
    """`spec` with its path made absolute, so a run's recipe works from any folder."""
    checked_spec(spec)
    if spec == "digits" or spec in IDX_DATA_SETS:
        return spec
    for prefix in PATH_PREFIXES:
        if spec.startswith(prefix):
            path = spec[len(prefix) :]
            return prefix + os.path.abspath(os.path.expanduser(path)) if path else spec
    return os.path.abspath(os.path.expanduser(spec))


def source_path(spec: str) -> Path | None:
    """The file-system path a source reads (its folder), or None for one without a path."""
    if spec == "digits" or spec in IDX_DATA_SETS:
        return None
    for prefix in PATH_PREFIXES:
        if spec.startswith(prefix):
            return Path(spec[len(prefix) :]).expanduser() if spec[len(prefix) :] else None
    return Path(spec).expanduser()
