"""Training (§5): the epoch loop, the paper's SGD and schedule, checkpoints, the run folder.

`fit(recipe, run_dir)` trains a network from a recipe and writes everything a run keeps into one
folder: `recipe.json`, `metrics.jsonl` (one JSON object per epoch), `last.pt` every epoch,
`best.pt` on the best validation top-1 error, `curves.png`, `conv1.png` (Figure 3) and
`train.log`. `fit(..., resume_from=checkpoint.load(run_dir))` continues a run, also from the
middle of an epoch. The pieces it calls live beside it: distributed.py (torchrun ranks),
parallel.py (§3.2's two devices), preemption.py (SIGTERM, Ctrl-C), run_folder.py, checkpoint.py.
The run ends after its epochs, or at the first plateau after ε was divided `max_drops` times (§5).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import random
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
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
from alexnet.data.loader import derive_seed
from alexnet.data.sources import absolute_source
from alexnet.device import Placement
from alexnet.distributed import Ranks, combine_figures, reduce_figures
from alexnet.evaluate import evaluate
from alexnet.figures import plot_conv1, plot_curves
from alexnet.files import write_text_atomically
from alexnet.model import AlexNet
from alexnet.optim import PaperSGD, plateau_ends_run, plateau_schedule
from alexnet.parallel import (
    input_device,
    load_optimizer_state,
    place_network,
    single_device,
    single_layout_optimizer_state,
)
from alexnet.preemption import StopRequest, stop_on_signals
from alexnet.recipe import Recipe
from alexnet.run_folder import (
    RunError,
    append_metrics,
    attach_log_file,
    check_resumable,
    discard_unfinished,
    read_metrics,
    remove_temporaries,
)

log = logging.getLogger("alexnet")


PARTIAL_KEYS = ("loss", "top1_error", "images", "seconds", "skipped", "steps")  # mid-epoch


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


def _finite_mean_loss(loss_sum: torch.Tensor, images: int, epoch: int, step: int) -> float:
    mean_loss = loss_sum.item() / images
    if not math.isfinite(mean_loss):
        raise TrainingDiverged(
            f"loss became {mean_loss} in epoch {epoch} at step {step}; try a lower optim.lr"
        )
    return mean_loss


def train_one_epoch(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    batches,
    placement: Placement,
    *,
    epoch: int,
    progress: bool,
    first_step: int = 0,
    stop: Callable[[], bool] = lambda: False,
) -> dict[str, float | int]:
    """One pass over the training batches; returns loss, top-1 error, images, images/s, skips.

    first_step: the step the batches start at (a run resumed mid-epoch); `stop()` is asked
    after every step, and true ends the pass there ("stopped", with "steps" done in the epoch).
    """
    model.train()
    loss_sum = torch.zeros((), device=placement.device)
    wrong = torch.zeros((), device=placement.device, dtype=torch.long)
    images, skipped, start = 0, 0, time.perf_counter()
    step, stopped, last_step = first_step - 1, False, first_step + len(batches) - 1
    bar = tqdm(batches, desc=f"epoch {epoch}", unit="batch", disable=not progress, leave=False)
    for step, (batch, labels, batch_skipped) in enumerate(bar, start=first_step):
        skipped += batch_skipped
        if len(labels) == 0:
            continue
        batch, labels = placement.batch(batch, labels)  # (B, 3, H, W), (B,)
        with placement.autocast():
            logits = model(batch)
        loss = F.cross_entropy(logits.float(), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        loss_sum += loss.detach() * len(labels)
        wrong += (logits.detach().argmax(dim=1) != labels).sum()
        images += len(labels)
        if step % 10 == 0 or step == last_step:  # reading the GPU's figures costs a sync
            bar.set_postfix(
                loss=f"{_finite_mean_loss(loss_sum, images, epoch, step):.3f}",
                top1_err=f"{wrong.item() / images:.3f}",
                img_s=f"{images / (time.perf_counter() - start):.0f}",
                lr=f"{optimizer.param_groups[0]['lr']:.0e}",
            )
        if stop():
            stopped = step < last_step
            break
    seconds = time.perf_counter() - start
    if images == 0 and not stopped:
        raise DataError("no readable training images in this epoch")
    return {
        "loss": _finite_mean_loss(loss_sum, images, epoch, step) if images else 0.0,
        "top1_error": wrong.item() / images if images else 0.0,
        "images": images,
        "images_per_s": images / seconds,
        "seconds": seconds,
        "skipped": skipped,
        "steps": step + 1,
        "stopped": stopped,
    }


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
    optimizer, schedule, epoch, step and RNG states, so that stopping and resuming ends with the
    same weights as one run. `download` lets a CIFAR-10 source fetch the data set if it is
    missing. The summary's "stopped" says where a SIGTERM or SIGINT stopped the run, if one did;
    "finished" why the schedule ended it early.
    """
    run_dir = Path(run_dir)
    recipe.validate()
    recipe.data.source = absolute_source(recipe.data.source)  # eval, --resume from elsewhere
    if resume_from is None and (run_dir / "last.pt").exists():
        raise RunError(f"{run_dir} already holds a run; continue it with --resume {run_dir}")
    if resume_from is not None:
        check_resumable(resume_from, recipe, run_dir)
    ranks = Ranks.from_environment()
    ranks.check_batch(recipe.optim.batch_size)
    ranks.join(recipe.run.device)
    device = input_device(recipe.run.model_parallel) or ranks.device(recipe.run.device)
    placement = Placement.for_run(recipe.run, device)
    splits = open_splits(recipe.data, download=download)  # bad data: nothing written yet
    created, handler = not run_dir.exists(), None
    try:
        if ranks.is_main:
            run_dir.mkdir(parents=True, exist_ok=True)
            remove_temporaries(run_dir)
            handler = attach_log_file(run_dir)
        else:
            log.setLevel(logging.WARNING)  # rank 0 tells the story
        with stop_on_signals() as request:
            run = _start(recipe, run_dir, splits, resume_from, placement, ranks, progress)
            return _train(run, request, progress and ranks.is_main)
    except OSError as error:  # disk full, no permission, --out under a file
        _close(handler)
        handler = None
        raise RunError(_unwritable(run_dir, error, created and ranks.is_main)) from None
    finally:
        _close(handler)
        ranks.close()


def _unwritable(run_dir: Path, error: OSError, created: bool) -> str:
    """One line for a run folder that cannot be written; a new one without a checkpoint goes."""
    if created:
        discard_unfinished(run_dir)
    kept = (run_dir / "last.pt").exists()
    return (
        f"cannot write the run folder {run_dir}: {error.strerror or error}"
        + (f" ({error.filename})" if error.filename else "")
        + ("; its last checkpoint is kept" if kept else "; no run was left there")
    )


def _close(handler: logging.Handler | None) -> None:
    if handler is not None:
        log.removeHandler(handler)
        handler.close()


@dataclass
class _Run:
    """What the epoch loop works on; built by `_start`."""

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


def _start(recipe, run_dir, splits: Splits, saved, placement, ranks, progress) -> _Run:
    """Data statistics, network, optimizer, schedule and loaders; a resumed run's state."""
    workers = recipe.run.workers  # -1: one per core, resolved where each loader is made
    log.info("data: %s", splits.description)
    if saved is not None:
        checkpoint.ensure_classes(saved, splits.classes, recipe.data.source)
        stats = DataStats.from_state_dict(saved["data_stats"])
    else:
        stats = _shared_stats(recipe, splits, run_dir, ranks, progress)
    train_set, val_set = datasets(recipe, splits, stats)

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
    step_model = ranks.wrap(network, placement.device)
    step_model = torch.compile(step_model) if recipe.run.compile else step_model
    # Each pass over a loader is the next epoch, seeded from (seed, epoch): see data/loader.py.
    start_epoch = saved["epoch"] + 1 if saved is not None else 1
    loader_options = dict(
        workers=workers, seed=recipe.run.seed, device=placement.device, epoch=start_epoch,
        rank=ranks.rank, world=ranks.world,
    )  # fmt: skip
    run = _Run(
        recipe, run_dir, ranks, placement, list(splits.classes), stats, network, step_model,
        optimizer, schedule,
        make_loader(train_set, recipe.optim.batch_size, train=True, **loader_options),
        make_loader(val_set, recipe.optim.batch_size, train=False, **loader_options),
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
        " (bf16, channels_last)" if placement.bf16 and placement.channels_last else "",
        len(splits.classes),
        len(train_set),
        len(val_set),
    )
    return run


def _where(placement: Placement, ranks: Ranks, model_parallel: str) -> str:
    where = f"{model_parallel} (two towers, §3.2)" if model_parallel else str(placement.device)
    if ranks.world > 1:
        where += f" × {ranks.world} processes (DistributedDataParallel)"
    return where


def _shared_stats(recipe: Recipe, splits: Splits, run_dir: Path, ranks: Ranks, progress: bool):
    """§2's mean image and RGB PCA, computed (and cached in the run folder) by rank 0 only."""
    stats = None
    if ranks.is_main:
        stats = compute_stats(
            splits.train,
            recipe.data.image_size,
            cache_dir=run_dir,
            workers=recipe.run.workers,
            progress=progress,
        )
    return DataStats.from_state_dict(ranks.share(stats.state_dict() if stats else None))


def _restore(run: _Run, saved: dict[str, Any]) -> None:
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


def _train(run: _Run, request: StopRequest, progress: bool) -> dict[str, Any]:
    """The epoch loop (§5): train, validate, schedule, record, checkpoint; stop when asked."""
    recipe, ranks = run.recipe, run.ranks
    stop = (lambda: ranks.any(request.requested)) if ranks.world > 1 else lambda: request.requested
    for epoch in range(run.start_epoch, recipe.schedule.epochs + 1):
        if ranks.world > 1:  # dropout masks: another stream on each rank
            torch.manual_seed(derive_seed(recipe.run.seed, epoch, run.start_step, ranks.rank))
        lr = run.optimizer.param_groups[0]["lr"]
        trained = train_one_epoch(
            run.step_model, run.optimizer, run.train_loader, run.placement,
            epoch=epoch, progress=progress, first_step=run.start_step, stop=stop,
        )  # fmt: skip
        trained = combine_figures(run.partial, reduce_figures(trained, ranks))
        run.start_step, run.partial = 0, None
        if trained["stopped"]:
            _save(run, epoch - 1, step=trained["steps"], partial=trained)
            return _stopped(run, request, epoch, trained["steps"])
        validated = reduce_figures(evaluate(run.network, run.val_loader, run.placement), ranks)
        ends = plateau_ends_run(run.schedule, validated["top1_error"])
        run.schedule.step(validated["top1_error"])
        improved = _record(run, epoch, lr, trained, validated)
        drops = recipe.schedule.max_drops
        finished = ends and f"validation error stopped improving at the lowest ε ({drops} drops)"
        _save(run, epoch, val=validated, improved=improved, finished=finished or None)
        if finished:
            log.info("stopped after epoch %d: %s", epoch, finished)
            return {**run.records[-1], "best_val_top1_error": run.best_error, "finished": finished}
        if stop() and epoch < recipe.schedule.epochs:
            return _stopped(run, request, epoch + 1, 0)
    return {**run.records[-1], "best_val_top1_error": run.best_error}


def _record(run: _Run, epoch: int, lr: float, trained: dict, validated: dict) -> bool:
    """The epoch's metrics line, log line and figures; True when validation error improved."""
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
    improved = validated["top1_error"] < run.best_error
    run.best_error = min(run.best_error, validated["top1_error"])
    run.records.append(record)
    if not run.ranks.is_main:
        return improved
    # The metrics line first: a kill before the checkpoint replays this epoch on resume,
    # and resuming drops the line again (read_metrics), so no epoch is lost or doubled.
    append_metrics(run.run_dir / "metrics.jsonl", record)
    plot_curves(run.records, run.run_dir / "curves.png")
    network = single_device(run.network)
    plot_conv1(
        network.learned_layers()["conv1"].weight, network.conv1_towers(), run.run_dir / "conv1.png"
    )
    log.info(
        "epoch %d/%d  lr %.0e  train loss %.4f top-1 err %.2f%%  val loss %.4f "
        "top-1 err %.2f%% top-5 err %.2f%%  %.0f img/s  %.0f s  skipped %d%s",
        epoch, run.recipe.schedule.epochs, lr, record["train_loss"],
        100 * record["train_top1_error"], record["val_loss"], 100 * record["val_top1_error"],
        100 * record["val_top5_error"], record["images_per_s"], record["seconds"],
        record["skipped"], "  (best)" if improved else "",
    )  # fmt: skip
    return improved


def _save(run: _Run, epoch: int, *, step=0, partial=None, val=None, improved=False, finished=None):
    """last.pt (rank 0, atomically), after `epoch` epochs and `step` steps of the next one;
    best.pt when validation error improved. Non-finite weights are never written."""
    if not run.ranks.is_main:
        return
    network = single_device(run.network)
    if not all(torch.isfinite(p).all() for p in network.parameters()):
        raise TrainingDiverged(
            f"the weights became NaN or infinite in epoch {epoch + (step > 0)} by step "
            f"{step or 'end'}; the last good checkpoint is kept"
        )
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
    if finished:
        state["finished"] = finished
    checkpoint.save_atomically(state, run.run_dir / "last.pt")
    if improved:
        checkpoint.link_atomically(run.run_dir / "last.pt", run.run_dir / "best.pt")


def _stopped(run: _Run, request: StopRequest, epoch: int, step: int) -> dict[str, Any]:
    """The summary of a run stopped by a signal: where, and how to continue."""
    number = int(request.signal_number or signal.SIGTERM)  # another rank may have caught it
    where = f"epoch {epoch} step {step}" if step else f"the start of epoch {epoch}"
    log.info("%s: stopped at %s; resume with --resume %s", signal.Signals(number).name, where,
             run.run_dir)  # fmt: skip
    last = run.records[-1] if run.records else {}
    return {
        **last,
        "best_val_top1_error": run.best_error,
        "stopped": {"epoch": epoch, "step": step, "signal": number},
    }
