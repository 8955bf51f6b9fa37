"""Training (§5): the step, the epoch loop and `fit`.

`fit(recipe, run_dir)` trains a network from a recipe and writes everything a run keeps into one
folder: `recipe.json`, `metrics.jsonl` (one JSON object per epoch), `last.pt` every epoch,
`best.pt` on the best validation top-1 error, `curves.png`, `conv1.png` (Figure 3) and
`train.log` (and `tensorboard/` with `run.tensorboard=true`). It trains and returns: the report
is its caller's (the CLI writes it, analysis/report.py). `fit(...,
resume_from=checkpoint.load(run_dir))` continues a run, also from the middle of an epoch.
A run's state, start and checkpoints are run/state.py's; where it computes, placement/'s.
The run ends after its epochs, or at the first plateau after ε was divided `max_drops` times (§5).
"""

from __future__ import annotations

import logging
import math
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from alexnet.data import DataError, open_splits
from alexnet.data.sources.specs import absolute_source
from alexnet.errors import TrainingDiverged, UserError
from alexnet.evaluate import evaluate
from alexnet.files import refuse_overwriting, remove_temporaries
from alexnet.ops.dropout import DropoutCounter
from alexnet.optim import StepRate, plateau_ends_run
from alexnet.placement import Placement
from alexnet.placement.device import memory_of
from alexnet.placement.lagged_read import LaggedRead
from alexnet.placement.ranks import Ranks, reduce_metrics
from alexnet.placement.towers import single_device
from alexnet.recipe import Recipe, RecipeError
from alexnet.run import folder as run_folder
from alexnet.run.epoch_plots import plot_conv1, plot_curves
from alexnet.run.folder import RunError, append_metrics, check_resumable, discard_unfinished
from alexnet.run.preemption import StopRequest, stop_on_signals
from alexnet.run.state import Run, combine_partial, save_checkpoint, start_run
from alexnet.run.tensorboard import Board, open_board

log = logging.getLogger("alexnet")


DIVERGENCE_CHECK_EVERY = 10  # steps between requests for the running sums (lagged_read.py)


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


def _check_finite(value: float, epoch: int, step: int) -> None:
    """Stop a run whose summed loss became NaN or infinite (a sum stays so once one batch is)."""
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
    first_step: int = 0,
    stop: Callable[[], bool] = lambda: False,
    rate: StepRate | None = None,
    dropout: DropoutCounter | None = None,
    steps_before: int = 0,
) -> dict[str, float | int]:
    """One pass over the training batches; returns loss, top-1 error, images, images/s, skips.

    The running sums stay on the device; every DIVERGENCE_CHECK_EVERY steps their copy to the
    host is queued, and once it has landed (on a CPU at once; on CUDA a step or two later, never
    waited for) they stop a diverged run and update the progress bar when it is shown.
    first_step: the steps of this epoch already taken (a run resumed mid-epoch); `stop()` is
    asked after every step, and true ends the pass there ("stopped", with "steps" done).
    rate: sets ε before each step, the run's step `steps_before` + step (optim.StepRate);
    dropout: the dropout masks of that step (ops/dropout.py).
    """
    model.train()
    loss_sum = torch.zeros((), device=placement.device)
    wrong = torch.zeros((), device=placement.device, dtype=torch.long)
    images, skipped, start = 0, 0, time.perf_counter()
    step, stopped, last_step = first_step, False, first_step + len(batches)
    reads = LaggedRead(placement.device)
    bar = tqdm(batches, desc=f"epoch {epoch}", unit="batch", disable=not progress, leave=False)
    for step, (batch, labels, batch_skipped) in enumerate(bar, start=first_step + 1):
        skipped += batch_skipped
        if len(labels):
            if rate is not None:
                rate.before_step(steps_before + step)
            if dropout is not None:
                dropout.before_step(steps_before + step)
            batch_loss, batch_wrong = training_step(model, optimizer, batch, labels, placement)
            loss_sum += batch_loss
            wrong += batch_wrong
            images += len(labels)
            if step % DIVERGENCE_CHECK_EVERY == 0:
                reads.request((step, images), torch.stack([loss_sum, wrong.to(loss_sum.dtype)]))
        landed = reads.landed()
        if landed is not None:
            (read_step, read_images), (read_loss, read_wrong) = landed
            _check_finite(read_loss, epoch, read_step)
            if progress:
                bar.set_postfix(
                    loss=f"{read_loss / read_images:.3f}",
                    top1_err=f"{read_wrong / read_images:.3f}",
                    img_s=f"{images / (time.perf_counter() - start):.0f}",
                    lr=f"{optimizer.param_groups[0]['lr']:.0e}",
                )
        if stop():
            stopped = step < last_step
            break
    seconds = time.perf_counter() - start
    if images == 0 and not stopped:
        raise DataError("no readable training images in this epoch")
    if images:
        _check_finite(loss_sum.item(), epoch, step)
    return {
        "loss": loss_sum.item() / images if images else 0.0,
        "top1_error": wrong.item() / images if images else 0.0,
        "images": images,
        "images_per_s": images / seconds,
        "seconds": seconds,
        "skipped": skipped,
        "steps": step,
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
    same weights as one run. `download` lets a CIFAR-10, Fashion-MNIST or MNIST source fetch
    the data set if it is missing. The summary's "stopped" says where a SIGTERM or SIGINT
    stopped the run, if one did; "finished" why the schedule ended it early.
    """
    run_dir = Path(run_dir)
    recipe.validate()
    recipe.data.source = absolute_source(recipe.data.source)  # eval, --resume from elsewhere
    refuse_overwriting([run_dir], run_folder.data_inputs(recipe.data.source))
    run_folder.claim(run_dir, resuming=resume_from is not None)  # before a byte is written
    if resume_from is not None:
        check_resumable(resume_from, recipe, run_dir)
    ranks = Ranks.from_environment()
    ranks.check_batch(recipe.optim.batch_size)
    placement = Placement.for_training(recipe.run, ranks)
    recipe.run = placement.resolved(recipe.run)  # recipe.json records the fast paths taken
    _check_memory(recipe, placement.device)
    ranks.join(placement.device)
    board = open_board(run_dir, recipe.run.tensorboard and ranks.is_main)  # before any write
    splits = open_splits(recipe.data, download=download)  # bad data: nothing written yet
    created, handler, folder_lock = not run_dir.exists(), None, None
    try:
        if ranks.is_main:
            folder_lock = run_folder.lock(run_dir)  # made here if new; held until the end
            run_folder.claim(run_dir, resuming=resume_from is not None, quiet=True)  # again
            remove_temporaries(run_dir, run_folder.is_run_file)
            handler = run_folder.attach_log_file(run_dir)
        else:
            log.setLevel(logging.WARNING)  # rank 0 tells the story
        with stop_on_signals() as request:
            run = start_run(recipe, run_dir, splits, resume_from, placement, progress)
            try:
                return _train(run, request, progress and ranks.is_main, board)
            finally:
                run.saves.wait()  # the last checkpoint in place before fit returns
    except OSError as error:  # disk full, no permission, --out under a file
        _close(handler)
        handler = None
        raise RunError(_unwritable(run_dir, error, created and ranks.is_main)) from None
    except UserError:
        _close(handler)
        handler = None
        if created and ranks.is_main:  # a start that failed on the user's input leaves no folder
            discard_unfinished(run_dir)
        raise
    finally:
        board.close()
        _close(handler)
        if folder_lock is not None:
            folder_lock.release()
        ranks.close()


def _check_memory(recipe: Recipe, device: torch.device) -> None:
    """Refuse, before any work, a recipe whose smallest allocations cannot fit: one batch of
    float crops, the mean image and the statistics' sums (the activations come on top)."""
    data, batch = recipe.data, recipe.optim.batch_size
    needed = batch * 3 * data.crop_size**2 * 4 + 3 * data.image_size**2 * (4 + 8)
    if needed > memory_of(device):
        raise RecipeError(
            f"optim.batch_size={batch} at data.crop_size={data.crop_size} (data.image_size="
            f"{data.image_size}) needs at least {needed / 2**30:.1f} GiB, more than the "
            f"{memory_of(device) / 2**30:.1f} GiB of {device}"
        )


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


def _train(run: Run, request: StopRequest, progress: bool, board: Board) -> dict[str, Any]:
    """The epoch loop (§5): train, validate, schedule, record, checkpoint; stop when asked."""
    recipe, ranks = run.recipe, run.ranks
    stop = (lambda: ranks.any(request.requested)) if ranks.world > 1 else lambda: request.requested
    for epoch in range(run.start_epoch, recipe.schedule.epochs + 1):
        run.train_batches.set_epoch(epoch, skip_steps=run.start_step)
        trained = train_one_epoch(
            run.step_model, run.optimizer, run.train_batches, run.placement,
            epoch=epoch, progress=progress, first_step=run.start_step, stop=stop,
            rate=run.rate, dropout=run.dropout, steps_before=(epoch - 1) * run.steps_per_epoch,
        )  # fmt: skip
        lr = run.optimizer.param_groups[0]["lr"]  # ε at the epoch's last step
        trained = combine_partial(run.partial, reduce_metrics(trained, ranks))
        run.start_step, run.partial = 0, None
        if trained["stopped"]:
            save_checkpoint(run, epoch - 1, step=trained["steps"], partial=trained)
            return _stopped(run, request, epoch, trained["steps"])
        run.val_batches.set_epoch(epoch)
        validated = evaluate(run.network, run.val_batches, run.placement)["centre crop"]
        validated = reduce_metrics(validated, ranks)
        ends = False
        if recipe.schedule.shape == "plateau":
            ends = plateau_ends_run(run.schedule, validated["top1_error"])
            run.schedule.step(validated["top1_error"])
        improved = _record(run, epoch, lr, trained, validated, board)
        drops = recipe.schedule.max_drops
        finished = ends and f"validation error stopped improving at the lowest ε ({drops} drops)"
        save_checkpoint(run, epoch, val=validated, improved=improved, finished=finished or None)
        if finished:
            log.info("stopped after epoch %d: %s", epoch, finished)
            return {**run.records[-1], "best_val_top1_error": run.best_error, "finished": finished}
        if stop() and epoch < recipe.schedule.epochs:
            return _stopped(run, request, epoch + 1, 0)
    return {**run.records[-1], "best_val_top1_error": run.best_error}


def _record(run: Run, epoch: int, lr: float, trained: dict, validated: dict, board: Board) -> bool:
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
    conv1 = network.learned_layers()["conv1"].weight
    plot_conv1(conv1, network.conv1_towers(), run.run_dir / "conv1.png", grey=run.stats.grey)
    board.log_epoch(record, network)
    log.info(
        "epoch %d/%d  lr %.0e  train loss %.4f top-1 err %.2f%%  val loss %.4f "
        "top-1 err %.2f%% top-5 err %.2f%%  %.0f img/s  %.0f s  skipped %d%s",
        epoch, run.recipe.schedule.epochs, lr, record["train_loss"],
        100 * record["train_top1_error"], record["val_loss"], 100 * record["val_top1_error"],
        100 * record["val_top5_error"], record["images_per_s"], record["seconds"],
        record["skipped"], "  (best)" if improved else "",
    )  # fmt: skip
    return improved


def _stopped(run: Run, request: StopRequest, epoch: int, step: int) -> dict[str, Any]:
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
