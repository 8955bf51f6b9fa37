"""Ablations (§3.2-§4.2): the paper's net against each of its choices removed, over seeds.

Every run is an ordinary run folder, `OUT/<ablation>/seed-<n>/`, trained by `fit` from a preset
(or recipe file) with the paper's choices all on (two towers, LRN, overlapping pooling, PCA
lighting, dropout), then the ablation's change, then the user's `--set` and flags. A run that
stopped is resumed from its `last.pt`; a finished one is read, not retrained: rerunning the
command continues where it stopped. Each finished run's checkpoint is evaluated once more to
keep which validation images it gets wrong (`val_wrong.json`), for the test paired by image.
Once the full net's seeds are trained, the design's resolution is logged before any ablation
trains (ablation_verdicts.py). The table gives the last epoch's validation top-1/top-5 error,
mean ± std over the seeds, the difference to the full net paired by seed and by image, the
verdict, and the difference the paper reports beside it.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from alexnet.analysis.report import Section, write_report
from alexnet.evaluate import evaluate_checkpoint
from alexnet.experiments.ablation_verdicts import ablation_table, compare, markdown, resolution
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
    effect: float | None = None  # the paper's top-1 difference (points), if it gives one


PAPER_CHOICES = [  # the full net: every choice the ablations remove, switched on
    "model.variant=paper",
    "model.lrn=paper",
    "model.overlapping_pool=true",
    "model.dropout=0.5",
    "data.pca_lighting=true",
]
ABLATIONS = [
    Ablation("full", [], "—"),
    Ablation("no-lrn", ["model.lrn=off"], "+1.4 / +1.2 (§3.3)", 1.4),
    Ablation("non-overlapping-pool", ["model.overlapping_pool=false"], "+0.4 / +0.3 (§3.4)", 0.4),
    Ablation("no-pca-lighting", ["data.pca_lighting=false"], "> +1 / — (§4.1)", 1.0),
    Ablation("no-dropout", ["model.dropout=0.0"], "substantial overfitting, no figure (§4.2)"),
    Ablation("one-tower-half-width", ["model.variant=half-width"], "+1.7 / +1.2 (§3.2)", 1.7),
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
        if "stopped" in fit(recipe, run_dir, resume_from=saved, progress=progress):
            raise KeyboardInterrupt  # a signal stopped the run: a rerun resumes it
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


def misses(run_dir: Path, recipe: Recipe, epoch: float) -> np.ndarray:
    """Which validation images the run's last checkpoint (of `epoch`) gets wrong (top-1), in
    the validation set's order; kept in `val_wrong.json` (indices, epoch) once evaluated."""
    path = run_dir / "val_wrong.json"
    saved = json.loads(path.read_text()) if path.exists() else {}
    if saved.get("epoch") == epoch:  # a run trained further since is evaluated again
        wrong = np.zeros(saved["images"], dtype=bool)
        wrong[saved["wrong"]] = True
        return wrong
    collected: list = []
    evaluate_checkpoint(checkpoint.load(run_dir / "last.pt"), device=recipe.run.device,
                        wrong=collected)  # fmt: skip
    wrong = np.concatenate([batch.numpy() for batch in collected])
    saved = {"epoch": epoch, "images": len(wrong), "wrong": np.flatnonzero(wrong).tolist()}
    write_text_atomically(path, json.dumps(saved) + "\n")
    return wrong


def _run_ablations(out, base, seeds, overrides, fields, progress) -> dict:
    results, design = {}, {}
    for ablation in ABLATIONS:
        recipes = [
            ablation_recipe(base, ablation, seed, overrides, fields) for seed in range(seeds)
        ]
        runs = [out / ablation.name / f"seed-{seed}" for seed in range(seeds)]
        records = [train_or_resume(r, run, progress) for r, run in zip(recipes, runs, strict=True)]
        result = {
            "overrides": ablation.overrides,
            "paper": ablation.paper,
            "top1": [r["val_top1_error"] for r in records],
            "top5": [r["val_top5_error"] for r in records],
            "wrong": np.stack(
                [
                    misses(run, r, record["epoch"])
                    for r, run, record in zip(recipes, runs, records, strict=True)
                ]
            ),  # fmt: skip
        }
        if ablation.name == "full":
            design = resolution(result["top1"], result["wrong"])
            log.info(
                "full net: %.2f%% top-1 error (mean of %d seeds); smallest resolvable difference "
                "(expected 95%% half-width of a paired difference): ±%.2f points over seeds, "
                "±%.2f over the %d validation images (paired per image)",
                100 * np.mean(result["top1"]), seeds, design["by_seed"], design["by_image"],
                design["images"],
            )  # fmt: skip
        else:
            result["comparison"] = compare(result, results["full"], ablation.effect)
        results[ablation.name] = result
    recipe = ablation_recipe(base, ABLATIONS[0], 0, overrides, fields)
    summary = {
        "recipe": base,
        "seeds": seeds,
        "epochs": recipe.schedule.epochs,
        "data": recipe.data.source,
        "overrides": overrides,
        "fields": fields,
        "resolution": design,
        "ablations": {
            name: {key: value for key, value in result.items() if key != "wrong"}
            for name, result in results.items()
        },  # fmt: skip
    }
    table = ablation_table(results)
    write_text_atomically(out / "ablations.json", json.dumps(summary, indent=2) + "\n")
    write_text_atomically(out / "ablations.md", markdown(table) + "\n")
    text = (
        f"Recipe {base!r} with the paper's choices on, {seeds} seeds, {recipe.schedule.epochs} "
        f"epochs, data {recipe.data.source}; extra --set: {', '.join(overrides) or 'none'}; "
        f"flags: {', '.join(f'{k}={v}' for k, v in fields.items()) or 'none'}. "
        "Validation error (%) at the last epoch, mean ± std over seeds; Δ: ablation − full net, "
        "95% intervals paired by seed (t) and by validation image (paired z); resolution "
        f"expected before the ablations ran: ±{design['by_seed']:.2f} points over seeds, "
        f"±{design['by_image']:.2f} over images."
    )
    section = Section("Ablations (§3.2-§4.2)", [text], table)
    write_report(out / "report.html", "Experiment: ablations", str(out), [section])
    return summary
