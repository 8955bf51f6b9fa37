"""Evaluation (§6): loss, top-1 and top-5 error, on the centre crop or averaged over ten crops.

With ten crops (§4.1) the loader yields (B, 10, 3, H, W); the network sees all ten patches and
the softmax outputs are averaged before the errors are counted; the centre crop is one of the
ten, so one pass gives both views' figures. `evaluate_checkpoint` rebuilds
a checkpoint's validation set (opening only that split), transforms and placement, so it
reproduces the figures recorded during training. `class_probabilities` is the one forward pass
that training, evaluation and prediction (inference.py) share.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from alexnet.data import DataError, DataStats, make_batches, open_splits
from alexnet.data.batches import forward_batch_size
from alexnet.data.loading.windows import (
    CENTRE_VIEW,
    TenCropViews,
    distinct_ten_crops,
    ten_crop_views,
)
from alexnet.placement import Placement
from alexnet.recipe import DataRecipe
from alexnet.run import checkpoint


def top_k_errors(probabilities: torch.Tensor, labels: torch.Tensor, ks=(1, 5)) -> torch.Tensor:
    """How many rows of `labels` are not among the k most probable classes, for each k: a
    (len(ks),) tensor on their device, so that counting needs no host-device sync.

    k is capped at the number of classes (top-5 of a 3-class problem is never wrong).
    """
    ranked = probabilities.topk(min(max(ks), probabilities.shape[1]), dim=1).indices  # (B, k)
    hits = ranked == labels[:, None]
    return torch.stack([(~hits[:, :k].any(dim=1)).sum() for k in ks])


def average_ten_crop(logits: torch.Tensor, counts: torch.Tensor | None = None) -> torch.Tensor:
    """§4.1: logits (B*10, C) or (B, 10, C) -> (B, C), the mean of the ten softmax outputs.

    counts (V,): the logits are of V distinct views, view v standing for counts[v] of the ten
    (windows.ten_crop_views); the mean is then weighted by them."""
    counts = torch.ones(10) if counts is None else counts
    probabilities = logits.reshape(-1, len(counts), logits.shape[-1]).softmax(dim=-1)  # (B, V, C)
    weights = counts.to(probabilities.device, probabilities.dtype)[None, :, None] / 10
    return (probabilities * weights).sum(dim=1)


def images_per_batch(batch_size: int, ten_crop: bool, recipe: DataRecipe) -> int:
    """Ten crops make up to ten network inputs per image (§4.1): as many images per batch as
    keep its distinct crops (`class_probabilities` forwards those only) within batch_size."""
    if not ten_crop:
        return batch_size
    return max(1, batch_size // distinct_ten_crops(recipe.image_size, recipe.crop_size))


def class_probabilities(
    model: nn.Module,
    images: torch.Tensor,
    placement: Placement,
    views: TenCropViews | None = None,
) -> torch.Tensor:
    """Softmax outputs (B, C) of (B, 3, H, W) images, or of (B, 10, 3, H, W) ten crops averaged
    (§4.1), whose distinct `views` the caller knows from the sizes (windows.ten_crop_views); the
    images go to the placement's device, the result stays there."""
    if images.dim() == 4:
        with placement.autocast():
            return model(placement.images(images)).float().softmax(dim=1)
    return ten_crop_probabilities(model, images, placement, views)[0]


def ten_crop_probabilities(
    model: nn.Module, crops: torch.Tensor, placement: Placement, views: TenCropViews | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, C) softmax outputs of (B, 10, 3, H, W) ten crops: averaged over the ten (§4.1), and
    of the centre crop alone (view CENTRE_VIEW), from one forward pass of the distinct views."""
    if views is None:
        raise ValueError("ten crops need their views: windows.ten_crop_views(image, crop size)")
    flat = crops[:, views.kept].flatten(0, 1)  # (B·V, 3, H, W)
    with placement.autocast():
        logits = model(placement.images(flat)).float()
    per_image = logits.view(len(crops), len(views.kept), -1)
    centre = per_image[:, views.slots[CENTRE_VIEW]].softmax(dim=1)
    return average_ten_crop(logits, torch.tensor(views.counts)), centre


class _Sums:
    """Loss and top-1/top-5 errors summed on the device, read once at the end: no host-device
    sync per batch."""

    def __init__(self, device: torch.device):
        self.loss = torch.zeros((), device=device)
        self.errors = torch.zeros(2, dtype=torch.long, device=device)  # top-1, top-5

    def add(self, probabilities: torch.Tensor, labels: torch.Tensor) -> None:
        log_probabilities = probabilities.clamp_min(1e-12).log()
        self.loss += F.nll_loss(log_probabilities, labels, reduction="sum")
        self.errors += top_k_errors(probabilities, labels)

    def figures(self, images: int, skipped: int) -> dict[str, float | int]:
        top1_errors, top5_errors = self.errors.tolist()
        return {
            "loss": self.loss.item() / images,
            "top1_error": top1_errors / images,
            "top5_error": top5_errors / images,
            "images": images,
            "skipped": skipped,
        }


@torch.no_grad()
def evaluate(
    model: nn.Module,
    batches: Iterable,
    placement: Placement,
    *,
    progress: bool = False,
    description: str = "eval",
    views: TenCropViews | None = None,
    wrong: list[torch.Tensor] | None = None,
) -> dict[str, dict[str, float | int]]:
    """Mean loss and top-1/top-5 error (fractions) over `(images, labels, skipped)` batches,
    per view: "centre crop"; for ten-crop batches (whose distinct `views` are needed) also "ten
    crops", the centre crop's figures then coming from its view among the ten (§4.1), with no
    forward pass of its own. `wrong`, if given, receives each batch's per-image top-1 misses of
    the first view (ten crops when there are ten), for tests paired by image."""
    model.eval()
    sums: dict[str, _Sums] = {}
    images, skipped = 0, 0
    for batch, labels, batch_skipped in tqdm(batches, desc=description, disable=not progress):
        skipped += batch_skipped
        if len(labels) == 0:
            continue
        labels = labels.to(placement.device, non_blocking=True)
        if batch.dim() == 5:
            mean, centre = ten_crop_probabilities(model, batch, placement, views)
            figures = [("ten crops", mean), ("centre crop", centre)]
        else:
            figures = [("centre crop", class_probabilities(model, batch, placement))]
        for name, probabilities in figures:
            sums.setdefault(name, _Sums(placement.device)).add(probabilities, labels)
        if wrong is not None:
            wrong.append((figures[0][1].argmax(dim=1) != labels).cpu())
        images += len(labels)
    if images == 0:
        raise DataError(f"no readable images to evaluate ({skipped} skipped)")
    order = ("centre crop", "ten crops")
    return {name: sums[name].figures(images, skipped) for name in order if name in sums}


def evaluate_checkpoint(
    state: dict[str, Any],
    *,
    data: str | None = None,
    ten_crop: bool = False,
    batch_size: int | None = None,
    workers: int | None = None,
    device: str = "auto",
    progress: bool = False,
    wrong: list[torch.Tensor] | None = None,
) -> tuple[str, dict[str, dict[str, float | int]]]:
    """A checkpoint on its validation set (or `data`): the set's description and, per view
    ("centre crop", and "ten crops" if asked), the figures `evaluate` returns (and `wrong`)."""
    recipe = checkpoint.recipe_of(state)
    if data:
        recipe.data.source = data
    splits = open_splits(recipe.data, val_only=True)
    checkpoint.ensure_classes(state, splits.classes, recipe.data.source)
    placement = Placement.for_run(recipe.run, device)
    model = placement.model(checkpoint.build_model(state))
    stats = DataStats.from_state_dict(state["data_stats"])
    batch_size = batch_size or forward_batch_size(recipe.optim.batch_size)
    loader = make_batches(
        splits.val,
        recipe.data,
        stats,
        images_per_batch(batch_size, ten_crop, recipe.data),
        train=False,
        ten_crop=ten_crop,
        device=placement.device,
        gpu_decode=recipe.run.gpu_decode,
        native_kernels=placement.native_kernels,
        workers=recipe.run.workers if workers is None else workers,
        seed=recipe.run.seed,
    )
    description = "ten crops" if ten_crop else "centre crop"
    views = ten_crop_views(recipe.data.image_size, recipe.data.crop_size)
    return splits.description, evaluate(
        model, loader, placement, progress=progress, description=description, views=views,
        wrong=wrong,
    )  # fmt: skip
