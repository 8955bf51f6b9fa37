"""Ablations (§3.2-§4.2): the paper's net against each of its choices removed, over seeds.

Every run is an ordinary run folder, `OUT/<ablation>/seed-<n>/`, trained by `fit` from a preset
(or recipe file) with the paper's choices all on (two towers, LRN, overlapping pooling, PCA
lighting, dropout), then the ablation's change, then the user's `--set` and flags. A run that
stopped is resumed from its `last.pt`; a finished one is read, not retrained: rerunning the
command continues where it stopped. The table gives the last epoch's validation top-1/top-5
error, mean ± std over the seeds, the difference to the full net and the difference the paper
reports beside it.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from alexnet.analysis.report import Section, Table, write_report
from alexnet.files import write_text_atomically
from alexnet.recipe import Recipe, apply_overrides, assign, load_recipe
from alexnet.run import checkpoint
from alexnet.run import folder as run_folder
from alexnet.run.folder import read_metrics
from alexnet.train import fit

log = logging.getLogger("alexnet")


class Ablation(NamedTuple):
    name: str
    overrides: list[str]
    paper: str  # the paper's difference to the full net, top-1 / top-5 error points


PAPER_CHOICES = [  # the full net: every choice the ablations remove, switched on
    "model.variant=paper",
    "model.lrn=paper",
    "model.overlapping_pool=true",
    "model.dropout=0.5",
    "data.pca_lighting=true",
]
ABLATIONS = [
    Ablation("full", [], "—"),
    Ablation("no-lrn", ["model.lrn=off"], "+1.4 / +1.2 (§3.3)"),
    Ablation("non-overlapping-pool", ["model.overlapping_pool=false"], "+0.4 / +0.3 (§3.4)"),
    Ablation("no-pca-lighting", ["data.pca_lighting=false"], "> +1 / — (§4.1)"),
    Ablation("no-dropout", ["model.dropout=0.0"], "substantial overfitting, no figure (§4.2)"),
    Ablation("one-tower-half-width", ["model.variant=half-width"], "+1.7 / +1.2 (§3.2)"),
]


def ablation_recipe(
    base: str, ablation: Ablation, seed: int, extra: list[str], fields: dict[str, Any] | None = None
) -> Recipe:
    """The base recipe, the paper's choices, the ablation, `extra` (--set), `fields` (flags)."""
    recipe = apply_overrides(load_recipe(base), [*PAPER_CHOICES, *ablation.overrides, *extra])
    return assign(recipe, {**(fields or {}), "run.seed": seed})


def train_or_resume(recipe: Recipe, run_dir: Path, progress: bool) -> dict:
    """The run's last metrics line, training or resuming it first when it is not finished."""
    saved = checkpoint.load(run_dir / "last.pt") if (run_dir / "last.pt").exists() else None
    if saved is None or (saved["epoch"] < recipe.schedule.epochs and not saved.get("finished")):
        log.info("ablation run %s", run_dir)
        fit(recipe, run_dir, resume_from=saved, progress=progress)
    records = read_metrics(run_dir / "metrics.jsonl", recipe.schedule.epochs)
    return records[-1]


def run_ablations(
    out: Path,
    *,
    base: str = "digits",
    seeds: int = 2,
    overrides: list[str] | None = None,
    fields: dict[str, Any] | None = None,
    progress: bool = False,
) -> dict:
    """Train (or resume) every ablation for every seed; write ablations.md, .json, report.html.
    overrides: `--set` assignments; fields: typed values for recipe fields (the CLI's flags).
    `out` is locked meanwhile (a second run of the experiment there is turned away)."""
    with run_folder.lock_if_main(out):
        return _run_ablations(out, base, seeds, overrides or [], fields or {}, progress)


def _run_ablations(out, base, seeds, overrides, fields, progress) -> dict:
    results = {}
    for ablation in ABLATIONS:
        records = [
            train_or_resume(
                ablation_recipe(base, ablation, seed, overrides, fields),
                out / ablation.name / f"seed-{seed}",
                progress,
            )
            for seed in range(seeds)
        ]
        results[ablation.name] = {
            "overrides": ablation.overrides,
            "paper": ablation.paper,
            "top1": [r["val_top1_error"] for r in records],
            "top5": [r["val_top5_error"] for r in records],
        }
    recipe = ablation_recipe(base, ABLATIONS[0], 0, overrides, fields)
    summary = {
        "recipe": base,
        "seeds": seeds,
        "epochs": recipe.schedule.epochs,
        "data": recipe.data.source,
        "overrides": overrides,
        "fields": fields,
        "ablations": results,
    }
    table = ablation_table(results)
    write_text_atomically(out / "ablations.json", json.dumps(summary, indent=2) + "\n")
    write_text_atomically(out / "ablations.md", markdown(table) + "\n")
    text = (
        f"Recipe {base!r} with the paper's choices on, {seeds} seeds, {recipe.schedule.epochs} "
        f"epochs, data {recipe.data.source}; extra --set: {', '.join(overrides) or 'none'}; "
        f"flags: {', '.join(f'{k}={v}' for k, v in fields.items()) or 'none'}. "
        "Validation error (%) at the last epoch, mean ± std over seeds; Δ: ablation − full net."
    )
    section = Section("Ablations (§3.2-§4.2)", [text], table)
    write_report(out / "report.html", "Experiment: ablations", str(out), [section])
    return summary


def paired_difference(ablation: list[float], full: list[float]) -> tuple[float, float, float]:
    """The mean of the seed-paired differences ablation − full (each seed trains both on the
    same split, order and augmentation draws) and its 95% interval (Student's t); a single seed
    gives no interval (nan, nan)."""
    differences = np.asarray(ablation) - np.asarray(full)
    mean = float(differences.mean())
    if len(differences) < 2:
        return mean, math.nan, math.nan
    from scipy.stats import t  # imported here: only the table needs it

    half = (
        t.ppf(0.975, len(differences) - 1) * differences.std(ddof=1) / math.sqrt(len(differences))
    )
    return mean, mean - half, mean + half


def verdict(low: float, high: float) -> str:
    """The paper reports every choice as helping: the ablation's error is higher."""
    if math.isnan(low):
        return "one seed: no interval"
    if low > 0:
        return "reproduced"
    if high < 0:
        return "reversed"
    return "within noise"


def ablation_table(results: dict[str, dict]) -> Table:
    """Validation error, mean ± std over seeds; Δ top-1 (ablation − full) with its 95% interval
    over the seed-paired differences, the verdict against the paper's direction, Δ top-5."""
    full = results["full"]
    rows = []
    for name, result in results.items():
        cells = [name]
        for key in ("top1", "top5"):
            errors = 100 * np.array(result[key])
            cells.append(
                f"{errors.mean():.2f} ± {errors.std(ddof=1 if len(errors) > 1 else 0):.2f}"
            )
        if name == "full":
            cells += ["—", "—", "—"]
        else:
            mean, low, high = (
                100 * value for value in paired_difference(result["top1"], full["top1"])
            )
            interval = "" if math.isnan(low) else f" [{low:+.2f}, {high:+.2f}]"
            cells += [f"{mean:+.2f}{interval}", verdict(low, high)]
            cells.append(f"{100 * (np.mean(result['top5']) - np.mean(full['top5'])):+.2f}")
        rows.append([*cells, result["paper"]])
    headers = ["ablation", "top-1 err", "top-5 err", "Δ top-1 [95% interval]", "verdict",
               "Δ top-5", "paper Δ top-1/top-5"]  # fmt: skip
    return Table(headers, rows)


def markdown(table: Table) -> str:
    lines = ["| " + " | ".join(table.headers) + " |", "|" + "---|" * len(table.headers)]
    lines += ["| " + " | ".join(row) + " |" for row in table.rows]
    return "\n".join(lines)
