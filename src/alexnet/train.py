"""Training (§5): the epoch loop, the paper's SGD and schedule, checkpoints, the run folder.

`fit(recipe, run_dir)` trains a network from a recipe and writes everything a run keeps into one
folder: `recipe.json`, `metrics.jsonl` (one JSON object per epoch), `last.pt` every epoch,
`best.pt` on the best validation top-1 error, `curves.png`, `conv1.png` (Figure 3) and
`train.log` (and `tensorboard/` with `run.tensorboard=true`), then `report.html` (report.py).
`fit(..., resume_from=checkpoint.load(run_dir))` continues a run.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import random
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from alexnet import checkpoint
from alexnet.data import (
    DataError,
    DataStats,
    Splits,
    TransformedDataset,
    compute_stats,
    eval_transform,
    make_loader,
    open_splits,
    train_transform,
)
from alexnet.device import Placement
from alexnet.evaluate import evaluate
from alexnet.figures import plot_conv1, plot_curves
from alexnet.files import write_text_atomically
from alexnet.model import AlexNet
from alexnet.optim import PaperSGD, plateau_schedule
from alexnet.recipe import Recipe, RecipeError
from alexnet.report import write_report_after_training
from alexnet.tensorboard_log import Board, open_board

log = logging.getLogger("alexnet")


class RunError(ValueError):
    """A run folder that cannot be used as asked (already holds a run, or holds none)."""


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def datasets(recipe: Recipe, splits: Splits, stats: DataStats):
    """The training and validation sets with the paper's transforms applied (§2, §4.1)."""
    train = TransformedDataset(splits.train, train_transform(recipe.data, stats))
    val = TransformedDataset(splits.val, eval_transform(recipe.data, stats))
    return train, val


DIVERGENCE_CHECK_EVERY = 10  # steps between reads of the running loss (each read syncs)
PROGRESS_EVERY = 25  # steps between the progress bar's figures (each read syncs)


def training_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    images: torch.Tensor,
    labels: torch.Tensor,
    placement: Placement,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One SGD step (§5) on a batch. Returns the batch's summed loss and its top-1 errors, both
    left on the device: nothing here waits for the device to finish."""
    images, labels = placement.batch(images, labels)  # (B, 3, H, W), (B,)
    with placement.autocast():
        logits = model(images)  # (B, classes)
    loss = F.cross_entropy(logits.float(), labels)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.detach() * len(labels), (logits.detach().argmax(dim=1) != labels).sum()


def _check_finite(loss_sum: torch.Tensor, epoch: int, step: int) -> None:
    """Stop a run whose loss became NaN or infinite (a sum stays so once one batch is)."""
    value = loss_sum.item()
    if not math.isfinite(value):
        raise TrainingDiverged(
            f"loss became {value} in epoch {epoch} by step {step}; try a lower optim.lr"
        )


def train_one_epoch(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    batches,
    placement: Placement,
    *,
    epoch: int,
    progress: bool,
) -> dict[str, float | int]:
    """One pass over the training batches; returns loss, top-1 error, images/s and skips.

    The running sums stay on the device; they are read every DIVERGENCE_CHECK_EVERY steps to stop
    a diverged run, and every PROGRESS_EVERY steps for the progress bar when it is shown.
    """
    model.train()
    loss_sum = torch.zeros((), device=placement.device)
    wrong = torch.zeros((), device=placement.device, dtype=torch.long)
    images, skipped, step, start = 0, 0, 0, time.perf_counter()
    bar = tqdm(batches, desc=f"epoch {epoch}", unit="batch", disable=not progress, leave=False)
    for step, (batch, labels, batch_skipped) in enumerate(bar, start=1):
        skipped += batch_skipped
        if len(labels) == 0:
            continue
        batch_loss, batch_wrong = training_step(model, optimizer, batch, labels, placement)
        loss_sum += batch_loss
        wrong += batch_wrong
        images += len(labels)
        if step % DIVERGENCE_CHECK_EVERY == 0:
            _check_finite(loss_sum, epoch, step)
        if progress and step % PROGRESS_EVERY == 0:
            bar.set_postfix(
                loss=f"{loss_sum.item() / images:.3f}",
                top1_err=f"{wrong.item() / images:.3f}",
                img_s=f"{images / (time.perf_counter() - start):.0f}",
                lr=f"{optimizer.param_groups[0]['lr']:.0e}",
            )
    if images == 0:
        raise DataError("no readable training images in this epoch")
    _check_finite(loss_sum, epoch, step)
    seconds = time.perf_counter() - start
    return {
        "loss": loss_sum.item() / images,
        "top1_error": wrong.item() / images,
        "images_per_s": images / seconds,
        "seconds": seconds,
        "skipped": skipped,
    }


def _attach_log_file(run_dir: Path) -> logging.Handler:
    handler = logging.FileHandler(run_dir / "train.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    log.addHandler(handler)
    if log.level == logging.NOTSET:
        log.setLevel(logging.INFO)
    return handler


def _read_metrics(path: Path, up_to_epoch: int) -> list[dict[str, Any]]:
    """The epochs a checkpoint covers; a line written after the last checkpoint is dropped."""
    if not path.exists():
        return []
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r for r in records if r["epoch"] <= up_to_epoch]


RESUMABLE = ("schedule.epochs", "run.")  # what a resumed run may change in its recipe


def _check_resumable(saved: dict[str, Any], recipe: Recipe, run_dir: Path) -> None:
    """A resumed run keeps its network, data and optimisation; only its length and run settings
    (device, workers, ...) may change."""
    checkpoint.ensure_variant(saved, recipe.model.variant)
    before, after = Recipe.from_dict(saved["recipe"]).to_dict(), recipe.to_dict()
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
    if saved["epoch"] >= recipe.schedule.epochs:
        raise RunError(
            f"{run_dir} has trained all {recipe.schedule.epochs} epochs; ask for more with --epochs"
        )


def fit(
    recipe: Recipe,
    run_dir: Path | str,
    *,
    resume_from: dict[str, Any] | None = None,
    progress: bool = True,
    download: bool = False,
) -> dict[str, Any]:
    """Train as the recipe says, writing the run folder; returns the last epoch's record.

    `resume_from` (the run's `last.pt`, as `checkpoint.load` reads it) continues the run: model,
    optimizer, schedule, epoch and RNG states, so that stopping and resuming ends with the same
    weights as one run. `download` lets a CIFAR-10 source fetch the data set if it is missing.
    """
    run_dir = Path(run_dir)
    recipe.validate()
    if resume_from is None and (run_dir / "last.pt").exists():
        raise RunError(f"{run_dir} already holds a run; continue it with --resume {run_dir}")
    if resume_from is not None:
        _check_resumable(resume_from, recipe, run_dir)
    placement = Placement.for_run(recipe.run)
    board = open_board(run_dir, recipe.run.tensorboard)  # no TensorBoard: nothing written yet
    splits = open_splits(recipe.data, download=download)  # bad data: nothing written yet
    run_dir.mkdir(parents=True, exist_ok=True)
    handler = _attach_log_file(run_dir)
    try:
        summary = _fit(recipe, run_dir, splits, resume_from, placement, progress, board)
        write_report_after_training(run_dir, recipe)  # report.html; a failure only warns
        return summary
    finally:
        board.close()
        log.removeHandler(handler)
        handler.close()


def _fit(
    recipe: Recipe,
    run_dir: Path,
    splits: Splits,
    saved: dict | None,
    placement: Placement,
    progress: bool,
    board: Board,
) -> dict[str, Any]:
    workers = recipe.run.workers  # -1: one per core, resolved where each loader is made
    log.info("data: %s", splits.description)
    if saved is not None:
        checkpoint.ensure_classes(saved, splits.classes, recipe.data.source)
        stats = DataStats.from_state_dict(saved["data_stats"])
    else:
        stats = compute_stats(
            splits.train,
            recipe.data.image_size,
            cache_dir=run_dir,
            workers=workers,
            progress=progress,
        )
    train_set, val_set = datasets(recipe, splits, stats)

    seed_everything(recipe.run.seed)  # here, so the init does not depend on the stats cache
    if saved is not None:
        model = checkpoint.build_model(saved, recipe)
    else:
        model = AlexNet(len(splits.classes), **dataclasses.asdict(recipe.model))
    model = placement.model(model)
    optimizer = PaperSGD(
        model.parameters(),
        lr=recipe.optim.lr,
        momentum=recipe.optim.momentum,
        weight_decay=recipe.optim.weight_decay,
    )
    schedule = plateau_schedule(
        optimizer,
        drop=recipe.schedule.lr_drop,
        patience=recipe.schedule.patience,
        max_drops=recipe.schedule.max_drops,
    )
    metrics_path = run_dir / "metrics.jsonl"
    start_epoch, best_error = 1, math.inf
    if saved is not None:
        optimizer.load_state_dict(saved["optimizer"])
        schedule.load_state_dict(saved["schedule"])
        checkpoint.restore_rng_states(saved["rng"])
        start_epoch, best_error = saved["epoch"] + 1, saved["best_val_top1_error"]
        records = _read_metrics(metrics_path, saved["epoch"])
        log.info("resuming %s at epoch %d", run_dir, start_epoch)
    else:
        records = []
    write_text_atomically(metrics_path, "".join(json.dumps(r) + "\n" for r in records))
    write_text_atomically(run_dir / "recipe.json", recipe.to_json())
    placement.prepare()
    step_model = placement.step_model(model)
    log.info(
        "training %s AlexNet (%s parameters) on %s%s, %d classes, %d train / %d val images",
        recipe.model.variant,
        f"{sum(p.numel() for p in model.parameters()):,}",
        placement.device,
        placement.description,
        len(splits.classes),
        len(train_set),
        len(val_set),
    )

    # Each pass over a loader is the next epoch, seeded from (seed, epoch): see data/loader.py.
    loader_options = dict(
        workers=workers, seed=recipe.run.seed, device=placement.device, epoch=start_epoch
    )
    train_loader = make_loader(train_set, recipe.optim.batch_size, train=True, **loader_options)
    val_loader = make_loader(val_set, recipe.optim.batch_size, train=False, **loader_options)
    for epoch in range(start_epoch, recipe.schedule.epochs + 1):
        lr = optimizer.param_groups[0]["lr"]
        trained = train_one_epoch(
            step_model, optimizer, train_loader, placement, epoch=epoch, progress=progress
        )
        validated = evaluate(step_model, val_loader, placement)
        schedule.step(validated["top1_error"])
        record = {
            "epoch": epoch,
            "lr": lr,
            "train_loss": trained["loss"],
            "train_top1_error": trained["top1_error"],
            "val_loss": validated["loss"],
            "val_top1_error": validated["top1_error"],
            "val_top5_error": validated["top5_error"],
            "images_per_s": trained["images_per_s"],
            "seconds": trained["seconds"],
            "skipped": trained["skipped"] + validated["skipped"],
        }
        improved = validated["top1_error"] < best_error
        best_error = min(best_error, validated["top1_error"])
        # The metrics line first: a kill before the checkpoint replays this epoch on resume,
        # and resuming drops the line again (_read_metrics), so no epoch is lost or doubled.
        records.append(record)
        with metrics_path.open("a") as file:
            file.write(json.dumps(record) + "\n")
        state = {
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "schedule": schedule.state_dict(),
            "epoch": epoch,
            "best_val_top1_error": best_error,
            "val": {k: validated[k] for k in ("loss", "top1_error", "top5_error")},
            "recipe": recipe.to_dict(),
            "classes": list(splits.classes),
            "data_stats": stats.state_dict(),
            "rng": checkpoint.rng_states(),
        }
        checkpoint.save_atomically(state, run_dir / "last.pt")
        if improved:
            checkpoint.link_atomically(run_dir / "last.pt", run_dir / "best.pt")
        plot_curves(records, run_dir / "curves.png")
        plot_conv1(
            model.learned_layers()["conv1"].weight, model.conv1_towers(), run_dir / "conv1.png"
        )
        board.log_epoch(record, model)
        log.info(
            "epoch %d/%d  lr %.0e  train loss %.4f top-1 err %.2f%%  val loss %.4f "
            "top-1 err %.2f%% top-5 err %.2f%%  %.0f img/s  %.0f s  skipped %d%s",
            epoch,
            recipe.schedule.epochs,
            lr,
            record["train_loss"],
            100 * record["train_top1_error"],
            record["val_loss"],
            100 * record["val_top1_error"],
            100 * record["val_top5_error"],
            record["images_per_s"],
            record["seconds"],
            record["skipped"],
            "  (best)" if improved else "",
        )
    return {**records[-1], "best_val_top1_error": best_error}
