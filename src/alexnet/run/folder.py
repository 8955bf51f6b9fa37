"""The run folder (§5's training leaves one): its log, metrics.jsonl, and whether it can resume.

Only rank 0 of a data-parallel run writes here. A line of `metrics.jsonl` is appended after each
epoch, before that epoch's checkpoint; resuming keeps the lines its checkpoint covers and drops
the rest, including a line half-written when the process was killed.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

from alexnet.data.sources import absolute_source
from alexnet.errors import UserError
from alexnet.recipe import Recipe, RecipeError
from alexnet.run import checkpoint

log = logging.getLogger("alexnet")

RESUMABLE = ("schedule.epochs", "run.")  # what a resumed run may change in its recipe


class RunError(UserError):
    """A run folder that cannot be used as asked (already holds a run, or holds none)."""


def attach_log_file(run_dir: Path) -> logging.Handler:
    handler = logging.FileHandler(run_dir / "train.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    log.addHandler(handler)
    if log.level == logging.NOTSET:
        log.setLevel(logging.INFO)
    return handler


def read_metrics(path: Path, up_to_epoch: int) -> list[dict[str, Any]]:
    """The epochs a checkpoint covers; lines written after it, or cut short by a kill, drop."""
    if not path.exists():
        return []
    records = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            log.warning("%s line %d is cut short (a kill mid-write?); dropped", path, number)
            continue
        if record["epoch"] <= up_to_epoch:
            records.append(record)
    return records


def append_metrics(path: Path, record: dict[str, Any]) -> None:
    with path.open("a") as file:
        file.write(json.dumps(record) + "\n")


def check_resumable(saved: dict[str, Any], recipe: Recipe, run_dir: Path) -> None:
    """A resumed run keeps its network, data and optimisation; only its length and run settings
    (device, workers, ...) may change. A run the schedule ended (§5) stays ended."""
    checkpoint.ensure_variant(saved, recipe.model.variant)
    before, after = Recipe.from_dict(saved["recipe"]).to_dict(), recipe.to_dict()
    for values in (before, after):  # runs from before data paths were stored absolute
        values["data"]["source"] = absolute_source(values["data"]["source"])
    changed = [
        f"{section}.{key}"
        for section, values in after.items()
        if isinstance(values, dict)
        for key, value in values.items()
        if value != before[section][key] and not f"{section}.{key}".startswith(RESUMABLE)
    ]
    if changed:
        raise RecipeError(
            f"a resumed run keeps its recipe: {', '.join(changed)} cannot change "
            "(only schedule.epochs and run.* can)"
        )
    if saved.get("finished"):
        raise RunError(f"{run_dir} ended after epoch {saved['epoch']}: {saved['finished']}")
    if saved["epoch"] >= recipe.schedule.epochs:
        raise RunError(
            f"{run_dir} has trained all {recipe.schedule.epochs} epochs; ask for more with --epochs"
        )


def discard_unfinished(run_dir: Path) -> None:
    """Remove a run folder this run created when it holds no checkpoint (a failed start)."""
    if run_dir.is_dir() and not (run_dir / "last.pt").exists():
        shutil.rmtree(run_dir, ignore_errors=True)
