"""The run folder's lock: one process writes a run folder at a time (training, a report, an
export, an experiment). Torch-free, so that `alexnet report` can take it before it knows whether
it needs torch (cli/experiments.py)."""

from __future__ import annotations

from pathlib import Path

from alexnet.errors import UserError
from alexnet.files import FolderLock

LOCK = ".alexnet.lock"  # held by the one process writing the folder


class RunError(UserError):
    """A run folder that cannot be used as asked (already holds a run, holds none, is busy)."""


def lock(run_dir: Path) -> FolderLock:
    """The run folder's lock, held until released; another holder: one RunError line."""
    busy = RunError(
        f"{run_dir} is in use by another alexnet process (training, a report, an export or an "
        "experiment); wait for it to end"
    )
    return FolderLock(run_dir, LOCK, busy)
