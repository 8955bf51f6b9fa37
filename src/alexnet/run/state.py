"""A run's life (§5): what the epoch loop works on, how a run starts, what a checkpoint keeps.

`start_run` builds a `Run` for a new run, or from a checkpoint, also one written in the middle of
an epoch (preemption.py). `save_checkpoint` writes `last.pt` (and `best.pt`). What a checkpoint
holds is written by `checkpoint_state` and read back by `restore`, side by side below, in the
single-device layout whether or not the towers were split over two devices (placement/towers.py).
A new piece of state (an EMA of the weights, a grad scaler) is a field of `Run`, a line in each
of those two functions, and wherever the step updates it.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from alexnet.data import DataStats, Splits, compute_stats, make_batches
from alexnet.data.batches import DeviceBatches, forward_batch_size
from alexnet.errors import TrainingDiverged
from alexnet.files import FlushedInBackground, cache_dir, write_text_atomically
from alexnet.model import AlexNet
from alexnet.ops.dropout import DropoutCounter
from alexnet.optim import PaperSGD, StepRate, plateau_schedule
from alexnet.placement import Placement
from alexnet.placement.ranks import Ranks
from alexnet.placement.towers import (
    load_optimizer_state,
    single_device,
    single_layout_optimizer_state,
)
from alexnet.recipe import Recipe
from alexnet.run import checkpoint
from alexnet.run.folder import read_metrics
from alexnet.run.state_checks import PARTIAL_KEYS, generator_states

log = logging.getLogger("alexnet")


@dataclass(kw_only=True)
class Run:
    """What the epoch loop works on; built by `start_run`."""

    recipe: Recipe
    run_dir: Path
    placement: Placement  # the device, the ranks, the towers: resolved once
    classes: list[str]
    stats: DataStats
    network: nn.Module  # an AlexNet, or placement.towers.TwoTowers holding one's weights (§3.2)
    step_model: nn.Module  # the network as trained: DistributedDataParallel, compiled
    optimizer: PaperSGD
    schedule: torch.optim.lr_scheduler.ReduceLROnPlateau
    train_batches: DeviceBatches
    val_batches: DeviceBatches
    dropout: DropoutCounter  # each step's masks from (seed, step, global sample): ops/dropout.py
    rate: StepRate | None = None  # ε set before each step: the warm-up, the linear shape
    steps_per_epoch: int = 0
    records: list[dict[str, Any]] = field(default_factory=list)  # metrics.jsonl's lines
    start_epoch: int = 1
    start_step: int = 0  # steps of start_epoch already taken (a run resumed mid-epoch)
    best_error: float = math.inf
    partial: dict[str, Any] | None = None  # the metrics of an epoch stopped midway
    saves: FlushedInBackground = field(default_factory=FlushedInBackground)  # checkpoint writes

    @property
    def ranks(self) -> Ranks:
        return self.placement.ranks


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def start_run(
    recipe: Recipe,
    run_dir: Path,
    splits: Splits,
    saved: dict[str, Any] | None,
    placement: Placement,
    progress: bool,
) -> Run:
    """Data statistics, network, optimizer, schedule and batches; a resumed run's state."""
    log.info("data: %s", splits.description)
    if saved is not None:
        checkpoint.ensure_classes(saved, splits.classes, recipe.data.source)
        stats = DataStats.from_state_dict(saved["data_stats"])
    else:
        stats = _shared_stats(recipe, splits, placement.ranks, progress)

    seed_everything(recipe.run.seed)  # here, so the init does not depend on the stats cache
    if saved is not None:
        network = checkpoint.build_model(saved, recipe)
    else:
        network = AlexNet(len(splits.classes), **dataclasses.asdict(recipe.model))
    network = placement.place(network)
    optimizer = PaperSGD(
        network.parameters(),
        lr=recipe.optim.lr,
        momentum=recipe.optim.momentum,
        weight_decay=recipe.optim.weight_decay,
    )
    placement.prepare()
    # §2 + §4.1: uint8 crops from the workers, the float arithmetic on the device. The epoch
    # loop sets each pass's epoch (data/loading/process_loader.py); workers: -1 is one per core.
    loader_options = dict(
        workers=recipe.run.workers, seed=recipe.run.seed, device=placement.device,
        rank=placement.ranks.rank, world=placement.ranks.world, gpu_decode=recipe.run.gpu_decode,
        native_kernels=placement.native_kernels,
    )  # fmt: skip
    batch_size = recipe.optim.batch_size
    run = Run(
        recipe=recipe,
        run_dir=run_dir,
        placement=placement,
        classes=list(splits.classes),
        stats=stats,
        network=network,
        step_model=placement.step_model(network),
        optimizer=optimizer,
        schedule=plateau_schedule(
            optimizer,
            drop=recipe.schedule.lr_drop,
            patience=recipe.schedule.patience,
            max_drops=recipe.schedule.max_drops,
        ),
        train_batches=make_batches(
            splits.train, recipe.data, stats, batch_size, train=True, **loader_options
        ),
        val_batches=make_batches(
            splits.val,
            recipe.data,
            stats,
            forward_batch_size(batch_size),
            train=False,
            **loader_options,
        ),
        dropout=DropoutCounter.of(
            network, recipe.run.seed, placement.ranks.first_sample(batch_size)
        ),
    )
    run.steps_per_epoch = len(run.train_batches)
    schedule = recipe.schedule
    warmup = (
        max(1, round(schedule.warmup_epochs * run.steps_per_epoch)) if schedule.warmup_epochs else 0
    )
    linear = schedule.shape == "linear"
    if warmup or linear:
        total = schedule.epochs * run.steps_per_epoch if linear else None
        run.rate = StepRate(optimizer, recipe.optim.lr, warmup, total)
    if saved is not None:
        restore(run, saved)
    if placement.ranks.is_main:
        metrics = run_dir / "metrics.jsonl"
        write_text_atomically(metrics, "".join(json.dumps(r) + "\n" for r in run.records))
        write_text_atomically(run_dir / "recipe.json", recipe.to_json())
    log.info(
        "training %s AlexNet (%s parameters) on %s, %d classes, %d train / %d val images",
        recipe.model.variant,
        f"{sum(p.numel() for p in network.parameters()):,}",
        placement.where,
        len(splits.classes),
        len(splits.train),
        len(splits.val),
    )
    return run


def _shared_stats(recipe: Recipe, splits: Splits, ranks: Ranks, progress: bool):
    """§2's mean image and RGB PCA: a store's own, or computed (and cached for every run on the
    same data, files.cache_dir("stats")) by rank 0 only."""
    stats = None
    if ranks.is_main:
        stats = compute_stats(
            splits.train,
            recipe.data.image_size,
            cache_dir=cache_dir("stats"),
            workers=recipe.run.workers,
            progress=progress,
        )
    return DataStats.from_state_dict(ranks.share(stats.state_dict() if stats else None))


def finite(network: torch.nn.Module) -> bool:
    """Whether every weight is finite: each tensor's sum is NaN or infinite when one of its
    values is (or when the sum passes 3.4e38, only reached by weights that have diverged too);
    far cheaper than torch.isfinite (docs/measurements.md, "Training step on the CPU")."""
    sums = torch.stack([weight.sum() for weight in network.parameters()])
    return bool(sums.isfinite().all())


def save_checkpoint(run: Run, epoch: int, *, step=0, partial=None, val=None, improved=False,
                    finished=None) -> None:  # fmt: skip
    """last.pt (rank 0, atomically), after `epoch` epochs and `step` steps of the next one;
    best.pt when validation error improved. Non-finite weights are never written. The files
    are in place once `run.saves.wait()` returns (the next save and fit() call it)."""
    if not run.ranks.is_main:
        return
    network = single_device(run.network)
    if not finite(network):
        raise TrainingDiverged(
            f"the weights became NaN or infinite in epoch {epoch + (step > 0)} by step "
            f"{step or 'end'}; the last good checkpoint is kept"
        )
    state = checkpoint_state(run, network, epoch, step, val=val, partial=partial)
    if finished:
        state["finished"] = finished
    last, best = run.run_dir / "last.pt", run.run_dir / "best.pt"
    run.saves.write(  # flushed to disk while the next epoch trains; fit() waits at the end
        last, lambda file: checkpoint.save(state, file),
        then=(lambda: checkpoint.link_atomically(last, best)) if improved else None,
    )  # fmt: skip


def checkpoint_state(
    run: Run, network: AlexNet, epoch: int, step: int, *, val=None, partial=None
) -> dict[str, Any]:
    """A checkpoint: after `epoch` epochs and `step` steps of the next; plain values only, so
    that it loads with torch.load(weights_only=True). `restore` reads it back."""
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
        "rng": rng_states(),
    }
    if val is not None:
        state["val"] = {k: val[k] for k in ("loss", "top1_error", "top5_error")}
    if partial is not None:
        state["partial"] = {k: partial[k] for k in PARTIAL_KEYS}
    return state


def restore(run: Run, saved: dict[str, Any]) -> None:
    """Continue where `saved` stopped. Read by `start_run` already: model (build_model),
    recipe, classes, data_stats; here: optimizer, schedule, RNG, epoch, step, metrics."""
    load_optimizer_state(run.network, run.optimizer, saved["optimizer"])
    run.schedule.load_state_dict(saved["schedule"])
    restore_rng_states(saved["rng"])
    run.start_epoch, run.best_error = saved["epoch"] + 1, saved["best_val_top1_error"]
    run.start_step, run.partial = saved.get("step", 0), saved.get("partial")
    run.records = read_metrics(run.run_dir / "metrics.jsonl", saved["epoch"])
    where = f" step {run.start_step}" if run.start_step else ""
    log.info("resuming %s at epoch %d%s", run.run_dir, run.start_epoch, where)


def combine_partial(first: dict[str, Any] | None, second: dict[str, Any]) -> dict[str, Any]:
    """One epoch's training metrics from its part before a stop (`partial`) and after it."""
    if not first:
        return second
    images = first["images"] + second["images"]
    seconds = first["seconds"] + second["seconds"]
    return {
        **second,
        **{
            key: (first[key] * first["images"] + second[key] * second["images"]) / images
            for key in ("loss", "top1_error")
        },
        "images": images,
        "seconds": seconds,
        "images_per_s": images / seconds,
        "skipped": first["skipped"] + second["skipped"],
    }


def rng_states() -> dict[str, Any]:
    """Every random generator a training step draws from, as tensors and plain values."""
    kind, keys, position, has_gauss, cached_gaussian = np.random.get_state()
    states = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "kind": kind,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "position": int(position),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached_gaussian),
        },
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def restore_rng_states(states: dict[str, Any]) -> None:
    """Set every generator from `rng_states`' output; one that does not fit changes none."""
    torch_state, numpy_state, python_state = generator_states(states)
    torch.set_rng_state(torch_state)
    np.random.set_state(numpy_state)
    random.setstate(python_state)
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])
