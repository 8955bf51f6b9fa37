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
import re
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from alexnet.data.sources.idx import IDX_DATA_SETS, candidate_folders
from alexnet.data.sources.specs import absolute_source, source_path
from alexnet.files import refuse_overwriting
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
RUN_RECORDS = ("recipe.json", "metrics.jsonl", "last.pt", "best.pt")  # what only a run holds


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


def claim(run_dir: Path, *, resuming: bool, quiet: bool = False) -> None:
    """Refuse, before anything is written, a folder that is not this run's: a file; a folder
    that holds a run, unless resuming it; a folder without a run that holds anything but a run's
    files, or a run's file names over another tool's content. Hidden files (`.DS_Store`, NFS's
    `.nfs*`, a stranger's `.notes.tmp`) are never counted, and never touched. A run being
    resumed may hold other files (a scheduler's log, predictions written beside it): they are
    named in a warning and left alone. A run of ours that died before its first checkpoint
    starts again, with a warning (`quiet`: none, as when claimed a second time)."""
    if not run_dir.exists():
        return
    if not run_dir.is_dir():
        raise RunError(f"{run_dir} is a file, not a run folder; give a new or empty folder")
    holds_a_run = (run_dir / "last.pt").exists()
    if holds_a_run and not resuming:
        raise RunError(f"{run_dir} already holds a run; continue it with --resume {run_dir}")
    names = _names(run_dir)
    strangers = [name for name in names if not is_run_file(name)]
    if strangers and holds_a_run:
        log.warning("%s also holds %s; left as they are", run_dir, ", ".join(strangers))
    elif strangers:
        _refuse_strangers(run_dir, strangers, "a run")
    elif names and not holds_a_run:
        foreign = _not_written_by_a_run(run_dir, names)
        if foreign:
            raise RunError(
                f"{run_dir} is not a run folder: its {foreign} was not written by alexnet; give "
                "a new or empty folder"
            )
        if not quiet:
            log.warning("%s holds a run that ended before its first checkpoint; it starts "
                        "again from the beginning", run_dir)  # fmt: skip


WRITTEN_FIRST = {"train.log", "tensorboard"}  # written before recipe.json (train.py's fit)
LOG_LINE = re.compile(rb"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} [A-Z]+ ")  # attach_log_file's


def _not_written_by_a_run(run_dir: Path, names: list[str]) -> str | None:
    """The first file of a checkpoint-less folder whose content a run of ours cannot have left:
    a recipe.json that is not a recipe (or none, beside files written after it), a metrics line
    that is not a full metrics record, a train.log that does not start with a log line."""
    recipe = run_dir / "recipe.json"
    if not recipe.is_file():
        later = sorted(set(names) - WRITTEN_FIRST)
        if later:
            return later[0]
    else:
        try:
            Recipe.from_dict(json.loads(recipe.read_bytes()))
        except (ValueError, TypeError, AttributeError, RecursionError):
            return "recipe.json"
    metrics = run_dir / "metrics.jsonl"
    if metrics.is_file():
        if not all(map(_record, metrics.read_bytes().splitlines())):
            return "metrics.jsonl"
    log_file = run_dir / "train.log"
    if log_file.is_file():
        with log_file.open("rb") as file:
            first = file.readline(4096)
        if first and not LOG_LINE.match(first):
            return "train.log"
    return None


def files_of_run(path: Path | str) -> list[Path]:
    """A saved network's file and its run folder's files (recipe.json, metrics.jsonl, the
    checkpoints, the log, ...): what no output of eval, predict or export may replace."""
    path = Path(path)
    return [path, *(path.parent / name for name in sorted(RUN_FILES))]


def data_inputs(spec: str | None) -> list[Path]:
    """The folders a `--data SOURCE` reads (its images, store or IDX files; a bare IDX name's
    package and download folders): no output may lie inside them."""
    if spec in IDX_DATA_SETS:
        return candidate_folders(IDX_DATA_SETS[spec], None)
    path = source_path(spec) if spec else None
    return [path] if path is not None else []


def claim_experiment(out: Path, own: Iterable[str] | None = None, data: str | None = None):
    """Refuse, before anything is written, an experiment's folder that is not its own: one
    inside its data, a file, a folder that holds a run (its recipe.json, metrics.jsonl or
    checkpoints) or, given the experiment's `own` names, anything but those and report.html.
    Hidden files never count."""
    refuse_overwriting([out], data_inputs(data))
    if not out.exists():
        return
    if not out.is_dir():
        raise RunError(f"{out} is a file, not an experiment's folder; give a new or empty folder")
    names = _names(out)
    if own is None:
        strangers = [name for name in names if name in RUN_RECORDS]
    else:
        strangers = [name for name in names if name not in {*own, "report.html"}]
    _refuse_strangers(out, strangers, "this experiment's")


def _names(folder: Path) -> list[str]:
    """What a folder holds, hidden files left out."""
    return sorted(path.name for path in folder.iterdir() if not path.name.startswith("."))


def _refuse_strangers(folder: Path, strangers: list[str], whose: str) -> None:
    if strangers:
        more = f" and {len(strangers) - 3} more" if len(strangers) > 3 else ""
        raise RunError(
            f"{folder} is not {whose} folder (it holds {', '.join(strangers[:3])}{more}); give "
            "a new or empty folder"
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


METRIC_KEYS = (  # a metrics.jsonl line, as train.py's _record writes it
    "epoch", "lr", "train_loss", "train_top1_error", "val_loss", "val_top1_error",
    "val_top5_error", "images_per_s", "seconds", "skipped",
)  # fmt: skip


def read_metrics(path: Path, up_to_epoch: float = float("inf")) -> list[dict[str, Any]]:
    """metrics.jsonl's records up to `up_to_epoch` (a checkpoint's: lines written after it drop);
    a line cut short by a kill, or one that is no metrics record (bytes that are not UTF-8, a
    value that is not a number), is dropped with a warning. No file: no records."""
    if not path.exists():
        return []
    records = []
    for number, line in enumerate(path.read_bytes().splitlines(), start=1):
        record = _record(line)
        if record is None:
            log.warning("%s line %d is cut short or not a metrics record (a kill mid-write?); "
                        "dropped", path, number)  # fmt: skip
        elif record["epoch"] <= up_to_epoch:
            records.append(record)
    return records


def _record(line: bytes) -> dict[str, Any] | None:
    """A metrics line's record: a JSON object of every metric (what the report and the curves
    read), each a number, the epoch a whole one; else None."""
    try:
        record = json.loads(line)
    except (ValueError, RecursionError):  # not JSON, or not UTF-8
        return None
    if not isinstance(record, dict) or not isinstance(record.get("epoch"), int):
        return None
    numbers = all(
        isinstance(record.get(key), int | float) and not isinstance(record[key], bool)
        for key in METRIC_KEYS
    )
    return record if numbers else None


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
    changed = _fixed_fields_changed(Recipe.from_dict(saved["recipe"]), recipe)
    if changed:
        raise RecipeError(
            f"a resumed run keeps its recipe: {', '.join(changed)} cannot change "
            "(only schedule.epochs and run.* can)"
        )
    check_training_state(saved, recipe)  # against the recipe it trained with, as checked above
    try:
        edited = _fixed_fields_changed(
            Recipe.from_dict(json.loads((run_dir / "recipe.json").read_bytes())), recipe
        )
    except FileNotFoundError:
        edited = []
    except (ValueError, TypeError, AttributeError, RecursionError):
        edited = ["its content"]
    if edited:
        raise RunError(
            f"{run_dir / 'recipe.json'} was edited ({', '.join(edited)}) and is not the recipe "
            f"{saved['path']} trains with; put it back, or change schedule.epochs and run.* "
            "with --epochs and --set"
        )
    if saved.get("finished"):
        raise RunError(f"{run_dir} ended after epoch {saved['epoch']}: {saved['finished']}")
    if saved["epoch"] >= recipe.schedule.epochs:
        raise RunError(
            f"{run_dir} has trained all {recipe.schedule.epochs} epochs; ask for more with --epochs"
        )


def _fixed_fields_changed(before: Recipe, after: Recipe) -> list[str]:
    """The fields a resumed run cannot change (all but RESUMABLE) that differ."""
    before_values, after_values = before.to_dict(), after.to_dict()
    for values in (before_values, after_values):  # runs from before data paths were absolute
        values["data"]["source"] = absolute_source(values["data"]["source"])
    return [
        f"{section}.{key}"
        for section, values in after_values.items()
        if isinstance(values, dict)
        for key, value in values.items()
        if value != before_values[section][key] and not f"{section}.{key}".startswith(RESUMABLE)
    ]


def discard_unfinished(run_dir: Path) -> None:
    """Remove a run folder this run created when it holds no checkpoint (a failed start)."""
    if run_dir.is_dir() and not (run_dir / "last.pt").exists():
        shutil.rmtree(run_dir, ignore_errors=True)
