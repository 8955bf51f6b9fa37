"""What the epoch loop (train.py) works on: a run's data, network, optimizer, schedule, loaders.

`start_run` builds them for a new run, or from a checkpoint, also one written in the middle of
an epoch (preemption.py); `training_state` is what a checkpoint keeps of them, in the
single-device layout whether or not the towers were split over two devices (parallel.py).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from alexnet import checkpoint
from alexnet.data import DataStats, Splits, compute_stats, make_batches
from alexnet.data.stats import stats_cache_dir
from alexnet.device import Placement
from alexnet.distributed import Ranks
from alexnet.files import write_text_atomically
from alexnet.model import AlexNet
from alexnet.optim import PaperSGD, plateau_schedule
from alexnet.parallel import load_optimizer_state, place_network, single_layout_optimizer_state
from alexnet.recipe import Recipe
from alexnet.run_folder import read_metrics

log = logging.getLogger("alexnet")

PARTIAL_KEYS = ("loss", "top1_error", "images", "seconds", "skipped", "steps")  # mid-epoch


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


@dataclass
class Run:
    """What the epoch loop works on; built by `start_run`."""

    recipe: Recipe
    run_dir: Path
    ranks: Ranks
    placement: Placement
    classes: list[str]
    stats: DataStats
    network: nn.Module  # an AlexNet, or parallel.TwoTowers holding one's weights (§3.2)
    step_model: nn.Module  # the network as trained: DistributedDataParallel, compiled
    optimizer: PaperSGD
    schedule: torch.optim.lr_scheduler.ReduceLROnPlateau
    train_loader: Any
    val_loader: Any
    records: list[dict[str, Any]]
    start_epoch: int = 1
    start_step: int = 0
    best_error: float = math.inf
    partial: dict[str, Any] | None = None  # the figures of an epoch stopped midway


def start_run(recipe, run_dir, splits: Splits, saved, placement, ranks, progress) -> Run:
    """Data statistics, network, optimizer, schedule and loaders; a resumed run's state."""
    workers = recipe.run.workers  # -1: one per core, resolved where each loader is made
    log.info("data: %s", splits.description)
    if saved is not None:
        checkpoint.ensure_classes(saved, splits.classes, recipe.data.source)
        stats = DataStats.from_state_dict(saved["data_stats"])
    else:
        stats = _shared_stats(recipe, splits, ranks, progress)

    seed_everything(recipe.run.seed)  # here, so the init does not depend on the stats cache
    if saved is not None:
        network = checkpoint.build_model(saved, recipe)
    else:
        network = AlexNet(len(splits.classes), **dataclasses.asdict(recipe.model))
    network = place_network(network, recipe.run.model_parallel, placement, ranks)
    optimizer = PaperSGD(
        network.parameters(),
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
    placement.prepare()
    step_model = placement.step_model(ranks.wrap(network, placement.device))
    # Each pass over a loader is the next epoch, seeded from (seed, epoch): see data/loader.py.
    start_epoch = saved["epoch"] + 1 if saved is not None else 1
    loader_options = dict(
        workers=workers, seed=recipe.run.seed, device=placement.device, epoch=start_epoch,
        rank=ranks.rank, world=ranks.world, gpu_decode=recipe.run.gpu_decode,
    )  # fmt: skip
    batch_size = recipe.optim.batch_size
    run = Run(
        recipe, run_dir, ranks, placement, list(splits.classes), stats, network, step_model,
        optimizer, schedule,
        # §2 + §4.1: uint8 crops from the workers, the float arithmetic on the device
        make_batches(splits.train, recipe.data, stats, batch_size, train=True, **loader_options),
        make_batches(splits.val, recipe.data, stats, batch_size, train=False, **loader_options),
        records=[],
    )  # fmt: skip
    if saved is not None:
        _restore(run, saved)
    if ranks.is_main:
        metrics = run_dir / "metrics.jsonl"
        write_text_atomically(metrics, "".join(json.dumps(r) + "\n" for r in run.records))
        write_text_atomically(run_dir / "recipe.json", recipe.to_json())
    log.info(
        "training %s AlexNet (%s parameters) on %s%s, %d classes, %d train / %d val images",
        recipe.model.variant,
        f"{sum(p.numel() for p in network.parameters()):,}",
        _where(placement, ranks, recipe.run.model_parallel),
        placement.description,
        len(splits.classes),
        len(splits.train),
        len(splits.val),
    )
    return run


def _where(placement: Placement, ranks: Ranks, model_parallel: str) -> str:
    where = f"{model_parallel} (two towers, §3.2)" if model_parallel else str(placement.device)
    if ranks.world > 1:
        where += f" × {ranks.world} processes (DistributedDataParallel)"
    return where


def _shared_stats(recipe: Recipe, splits: Splits, ranks: Ranks, progress: bool):
    """§2's mean image and RGB PCA: a store's own, or computed (and cached for every run on the
    same data, stats.stats_cache_dir) by rank 0 only."""
    stats = None
    if ranks.is_main:
        stats = compute_stats(
            splits.train,
            recipe.data.image_size,
            cache_dir=stats_cache_dir(),
            workers=recipe.run.workers,
            progress=progress,
        )
    return DataStats.from_state_dict(ranks.share(stats.state_dict() if stats else None))


def _restore(run: Run, saved: dict[str, Any]) -> None:
    """Continue where `saved` stopped: weights are in place; optimizer, schedule, RNG, step."""
    load_optimizer_state(run.network, run.optimizer, saved["optimizer"])
    run.schedule.load_state_dict(saved["schedule"])
    checkpoint.restore_rng_states(saved["rng"])
    run.start_epoch, run.best_error = saved["epoch"] + 1, saved["best_val_top1_error"]
    run.start_step, run.partial = saved.get("step", 0), saved.get("partial")
    run.train_loader.sampler.skip_steps = run.start_step
    run.records = read_metrics(run.run_dir / "metrics.jsonl", saved["epoch"])
    where = f" step {run.start_step}" if run.start_step else ""
    log.info("resuming %s at epoch %d%s", run.run_dir, run.start_epoch, where)


def training_state(
    run: Run, network: AlexNet, epoch: int, step: int, *, val=None, partial=None
) -> dict[str, Any]:
    """A checkpoint: after `epoch` epochs and `step` steps of the next; plain values only."""
    state = {
        "model": network.state_dict(),
        "optimizer": single_layout_optimizer_state(run.network, run.optimizer),
        "schedule": run.schedule.state_dict(),
        "epoch": epoch,
        "step": step,
        "best_val_top1_error": run.best_error,
        "recipe": run.recipe.to_dict(),
        "classes": run.classes,
        "data_stats": run.stats.state_dict(),
        "rng": checkpoint.rng_states(),
    }
    if val is not None:
        state["val"] = {k: val[k] for k in ("loss", "top1_error", "top5_error")}
    if partial is not None:
        state["partial"] = {k: partial[k] for k in PARTIAL_KEYS}
    return state
