"""Training (§5): the epoch loop, the paper's SGD and schedule, checkpoints, the run folder.

`fit(recipe, run_dir)` trains a network from a recipe and writes everything a run keeps into one
folder: `recipe.json`, `metrics.jsonl` (one JSON object per epoch), `last.pt` every epoch,
`best.pt` on the best validation top-1 error, `curves.png`, `conv1.png` (Figure 3) and
`train.log`. `fit(..., resume=True)` continues a run from its `last.pt`.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
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
    DataStats,
    Splits,
    TransformedDataset,
    compute_stats,
    eval_transform,
    make_loader,
    open_source,
    train_transform,
)
from alexnet.data.loader import default_workers
from alexnet.evaluate import autocast_for, evaluate
from alexnet.figures import plot_conv1, plot_curves
from alexnet.model import AlexNet
from alexnet.optim import PaperSGD, plateau_schedule
from alexnet.recipe import Recipe

log = logging.getLogger("alexnet")


class RunError(ValueError):
    """A run folder that cannot be used as asked (already holds a run, or holds none)."""


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


def resolve_device(name: str) -> torch.device:
    """`"auto"`: CUDA when there is one, else the CPU; anything else as torch reads it."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RunError(f"device {name!r} asked for, but this machine has no CUDA device")
    return device


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def datasets(recipe: Recipe, splits: Splits, stats: DataStats, *, ten_crop: bool = False):
    """The training and validation sets with the paper's transforms applied (§2, §4.1)."""
    train = TransformedDataset(splits.train, train_transform(recipe.data, stats))
    val = TransformedDataset(splits.val, eval_transform(recipe.data, stats, ten_crop=ten_crop))
    return train, val


def train_one_epoch(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    batches,
    device: torch.device,
    *,
    epoch: int,
    bf16: bool,
    channels_last: bool,
    progress: bool,
) -> dict[str, float | int]:
    """One pass over the training batches; returns loss, top-1 error, images/s and skips."""
    model.train()
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    loss_sum = torch.zeros((), device=device)
    wrong = torch.zeros((), device=device, dtype=torch.long)
    images, skipped, start = 0, 0, time.perf_counter()
    bar = tqdm(batches, desc=f"epoch {epoch}", unit="batch", disable=not progress, leave=False)
    for step, (batch, labels, batch_skipped) in enumerate(bar):
        skipped += batch_skipped
        if len(labels) == 0:
            continue
        batch = batch.to(device, non_blocking=True, memory_format=memory_format)  # (B, 3, H, W)
        labels = labels.to(device, non_blocking=True)
        with autocast_for(device, bf16):
            logits = model(batch)
        loss = F.cross_entropy(logits.float(), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        loss_sum += loss.detach() * len(labels)
        wrong += (logits.detach().argmax(dim=1) != labels).sum()
        images += len(labels)
        if step % 10 == 0 or step == len(bar) - 1:
            mean_loss = loss_sum.item() / images
            if not math.isfinite(mean_loss):
                raise TrainingDiverged(
                    f"loss became {mean_loss} in epoch {epoch}; try a lower optim.lr"
                )
            bar.set_postfix(
                loss=f"{mean_loss:.3f}",
                top1_err=f"{wrong.item() / images:.3f}",
                img_s=f"{images / (time.perf_counter() - start):.0f}",
                lr=f"{optimizer.param_groups[0]['lr']:.0e}",
            )
    seconds = time.perf_counter() - start
    if images == 0:
        raise RunError("no readable training images in this epoch")
    mean_loss = loss_sum.item() / images
    if not math.isfinite(mean_loss):
        raise TrainingDiverged(f"loss became {mean_loss} in epoch {epoch}; try a lower optim.lr")
    return {
        "loss": mean_loss,
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


def _write_text_atomically(path: Path, text: str) -> None:
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(text)
    os.replace(temporary, path)


def fit(recipe: Recipe, run_dir: Path | str, *, resume: bool = False, progress: bool = True):
    """Train as the recipe says, writing the run folder; returns the last epoch's record.

    With `resume`, the run continues from `run_dir/last.pt` (model, optimizer, schedule, epoch
    and RNG states), so that stopping and resuming ends with the same weights as one run.
    """
    run_dir = Path(run_dir)
    saved = checkpoint.load(run_dir / "last.pt") if resume else None
    if not resume and (run_dir / "last.pt").exists():
        raise RunError(f"{run_dir} already holds a run; continue it with --resume {run_dir}")
    if saved is not None:
        checkpoint.ensure_variant(saved, recipe.model.variant)
    if saved is not None and saved["epoch"] >= recipe.schedule.epochs:
        raise RunError(
            f"{run_dir} has trained all {recipe.schedule.epochs} epochs; ask for more with --epochs"
        )
    run_dir.mkdir(parents=True, exist_ok=True)
    handler = _attach_log_file(run_dir)
    try:
        return _fit(recipe, run_dir, saved, progress)
    finally:
        log.removeHandler(handler)
        handler.close()


def _fit(recipe: Recipe, run_dir: Path, saved: dict | None, progress: bool) -> dict[str, Any]:
    seed_everything(recipe.run.seed)
    device = resolve_device(recipe.run.device)
    on_cuda = device.type == "cuda"
    bf16, channels_last = recipe.run.bf16 and on_cuda, recipe.run.channels_last and on_cuda
    workers = default_workers() if recipe.run.workers < 0 else recipe.run.workers
    splits = open_source(
        recipe.data.source, val_fraction=recipe.data.val_fraction, seed=recipe.run.seed
    )
    log.info("data: %s", splits.description)
    if saved is not None:
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

    if saved is not None:
        model = checkpoint.build_model(saved, recipe)
    else:
        model = AlexNet(len(splits.classes), **dataclasses.asdict(recipe.model))
    model = model.to(
        device, memory_format=torch.channels_last if channels_last else torch.preserve_format
    )
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
        _write_text_atomically(metrics_path, "".join(json.dumps(r) + "\n" for r in records))
        log.info("resuming %s at epoch %d", run_dir, start_epoch)
    else:
        records = []
        metrics_path.write_text("")
    _write_text_atomically(run_dir / "recipe.json", recipe.to_json())
    step_model = torch.compile(model) if recipe.run.compile else model
    log.info(
        "training %s AlexNet (%s parameters) on %s, %d classes, %d train / %d val images",
        recipe.model.variant,
        f"{sum(p.numel() for p in model.parameters()):,}",
        device,
        len(splits.classes),
        len(train_set),
        len(val_set),
    )

    # Each pass over a loader is the next epoch, seeded from (seed, epoch): see data/loader.py.
    loader_options = dict(workers=workers, seed=recipe.run.seed, device=device, epoch=start_epoch)
    train_loader = make_loader(train_set, recipe.optim.batch_size, train=True, **loader_options)
    val_loader = make_loader(val_set, recipe.optim.batch_size, train=False, **loader_options)
    for epoch in range(start_epoch, recipe.schedule.epochs + 1):
        lr = optimizer.param_groups[0]["lr"]
        trained = train_one_epoch(
            step_model,
            optimizer,
            train_loader,
            device,
            epoch=epoch,
            bf16=bf16,
            channels_last=channels_last,
            progress=progress,
        )
        validated = evaluate(step_model, val_loader, device, bf16=bf16, channels_last=channels_last)
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
        records.append(record)
        with metrics_path.open("a") as file:
            file.write(json.dumps(record) + "\n")
        plot_curves(records, run_dir / "curves.png")
        plot_conv1(
            model.learned_layers()["conv1"].weight, model.conv1_towers(), run_dir / "conv1.png"
        )
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
