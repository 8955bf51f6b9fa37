"""Which checkpoint file a path names: torch-free, so that `alexnet report` can find a kept page
(analysis/cache.py) before it imports torch, by the same rule `checkpoint.load` reads by."""

from __future__ import annotations

from pathlib import Path


def checkpoint_file(target: Path | str, prefer: str = "last.pt") -> Path:
    """A file names itself; a run folder means its `prefer` checkpoint (`last.pt` to resume,
    `best.pt` to evaluate), or its `last.pt` when that one is missing."""
    target = Path(target)
    if target.is_dir():
        return target / prefer if (target / prefer).is_file() else target / "last.pt"
    return target
