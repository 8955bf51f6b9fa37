"""The run folder (§5's training leaves one): whose it is, its lock, its log, metrics.jsonl, and
whether it can resume.

A run folder belongs to one run. `claim` lets training write only into a new or empty folder, or
one holding nothing but a run's own files (to resume it), and refuses anything else before a
byte is written. `lock` is held while one process writes there (training, the report, an
export into it): a second one stops at once. Only rank 0 of a data-parallel run writes here.
A line of `metrics.jsonl` is appended after each epoch, before that epoch's checkpoint;
`read_metrics` drops a line half-written when the process was killed (with a warning), and
resuming also drops the lines its checkpoint does not cover.
"""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
from pathlib import Path
from typing import Any

from alexnet.data.sources.specs import absolute_source
from alexnet.placement.ranks import Ranks
from alexnet.recipe import Recipe, RecipeError
from alexnet.run import checkpoint
from alexnet.run.lock import LOCK, RunError, lock
from alexnet.run.state_checks import check_training_state

log = logging.getLogger("alexnet")

RESUMABLE = ("schedule.epochs", "run.")  # what a resumed run may change in its recipe
RESUME_KEYS = ("optimizer", "schedule", "rng", "best_val_top1_error")  # run/state.py restore


RUN_FILES = {  # what training, the report, eval, export and the demo write into a run folder
    "recipe.json", "metrics.jsonl", "last.pt", "best.pt", "curves.png", "conv1.png", "train.log",
    "tensorboard", "report.html", "top5.png", "neighbours.png", "codes.json", "cache", "features",
    "samples", LOCK,
}  # fmt: skip
RUN_FILE_SUFFIXES = (".safetensors", ".onnx")  # exports beside the checkpoints


def is_run_file(name: str) -> bool:
    """A name a run folder holds: a run's own file, an eval-*.json, an export, or the temporary
    file of an atomic write of one of them (`.NAME.<random>.tmp` or `.NAME.link.tmp`)."""
    if name.startswith(".") and name.endswith(".tmp"):
        written = name[1:].rsplit(".", 2)[0]  # .NAME.<random>.tmp -> NAME
        return written != name and is_run_file(written)
    return (
        name in RUN_FILES
        or (name.startswith("eval-") and name.endswith(".json"))
        or name.endswith(RUN_FILE_SUFFIXES)
    )


def claim(run_dir: Path, *, resuming: bool) -> None:
    """Refuse, before anything is written, a folder that is not this run's: a file; a folder
    that holds a run, unless resuming it; a folder without a run that holds anything but a run's
    files. Hidden files (`.DS_Store`, NFS's `.nfs*`, a stranger's `.notes.tmp`) are never
    counted, and never touched. A run being resumed may hold other files (a scheduler's log,
    predictions written beside it): they are named in a warning and left alone."""
    if not run_dir.exists():
        return
    if not run_dir.is_dir():
        raise RunError(f"{run_dir} is a file, not a run folder; give a new or empty folder")
    holds_a_run = (run_dir / "last.pt").exists()
    if holds_a_run and not resuming:
        raise RunError(f"{run_dir} already holds a run; continue it with --resume {run_dir}")
    strangers = sorted(
        path.name
        for path in run_dir.iterdir()
        if not path.name.startswith(".") and not is_run_file(path.name)
    )
    if strangers and holds_a_run:
        log.warning("%s also holds %s; left as they are", run_dir, ", ".join(strangers))
    elif strangers:
        more = f" and {len(strangers) - 3} more" if len(strangers) > 3 else ""
        raise RunError(
            f"{run_dir} is not a run folder (it holds {', '.join(strangers[:3])}{more}); give a "
            "new or empty folder"
        )


def lock_if_main(folder: Path) -> contextlib.AbstractContextManager:
    """`lock(folder)` in the one process that writes it: not in torchrun's ranks other than 0."""
    return lock(folder) if Ranks.main_process() else contextlib.nullcontext()


def lock_if_a_run(folder: Path) -> contextlib.AbstractContextManager:
    """`lock(folder)` when the folder holds a run (an export written into it), else nothing."""
    holds_a_run = (folder / "recipe.json").is_file() or (folder / "last.pt").is_file()
    return lock(folder) if holds_a_run else contextlib.nullcontext()


def attach_log_file(run_dir: Path) -> logging.Handler:
    handler = logging.FileHandler(run_dir / "train.log", errors="backslashreplace")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    log.addHandler(handler)
    if log.level == logging.NOTSET:
        log.setLevel(logging.INFO)
    return handler


def read_metrics(path: Path, up_to_epoch: float = float("inf")) -> list[dict[str, Any]]:
    """metrics.jsonl's records up to `up_to_epoch` (a checkpoint's: lines written after it drop);
    a line cut short by a kill is dropped with a warning. No file: no records."""
    if not path.exists():
        return []
    records = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            record = None
        if not isinstance(record, dict) or not isinstance(record.get("epoch"), int):
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
    (device, workers, ...) may change. A run the schedule ended (§5) stays ended; a network
    imported or exported without its training state (optimizer, schedule, RNG) cannot resume."""
    missing = [key for key in RESUME_KEYS if key not in saved]
    if missing:
        raise RunError(
            f"{saved['path']} holds a network but not its training state ({', '.join(missing)}); "
            "it cannot be resumed: start a new run"
        )
    checkpoint.ensure_variant(saved, recipe.model.variant)
    check_training_state(saved, recipe)
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
