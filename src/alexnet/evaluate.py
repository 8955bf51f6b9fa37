"""Evaluation (§6): loss, top-1 and top-5 error, on the centre crop or averaged over ten crops.

With ten crops (§4.1) the loader yields (B, 10, 3, H, W); the network sees all ten patches and
the softmax outputs are averaged before the errors are counted.
"""

from __future__ import annotations

from collections.abc import Iterable
from contextlib import nullcontext

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from alexnet.data import average_ten_crop


def top_k_errors(probabilities: torch.Tensor, labels: torch.Tensor, ks=(1, 5)) -> list[int]:
    """How many rows of `labels` are not among the k most probable classes, for each k.

    k is capped at the number of classes (top-5 of a 3-class problem is never wrong).
    """
    ranked = probabilities.topk(min(max(ks), probabilities.shape[1]), dim=1).indices  # (B, k)
    hits = ranked == labels[:, None]
    return [int((~hits[:, :k].any(dim=1)).sum()) for k in ks]


def autocast_for(device: torch.device, bf16: bool):
    """bf16 autocast on CUDA when asked; a no-op context elsewhere."""
    if device.type == "cuda" and bf16:
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return nullcontext()


@torch.no_grad()
def evaluate(
    model: nn.Module,
    batches: Iterable,
    device: torch.device,
    *,
    bf16: bool = False,
    channels_last: bool = False,
    progress: bool = False,
    description: str = "eval",
) -> dict[str, float | int]:
    """Mean loss and top-1/top-5 error (fractions) over `(images, labels, skipped)` batches."""
    model.eval()
    loss_sum, errors, images, skipped = 0.0, [0, 0], 0, 0
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    for batch, labels, batch_skipped in tqdm(batches, desc=description, disable=not progress):
        skipped += batch_skipped
        if len(labels) == 0:
            continue
        ten_crop = batch.dim() == 5
        flat = batch.flatten(0, 1) if ten_crop else batch  # (B·10, 3, H, W) or (B, 3, H, W)
        flat = flat.to(device, non_blocking=True, memory_format=memory_format)
        labels = labels.to(device, non_blocking=True)
        with autocast_for(device, bf16):
            logits = model(flat).float()
        if ten_crop:
            probabilities = average_ten_crop(logits.view(len(labels), 10, -1))  # (B, C)
        else:
            probabilities = logits.softmax(dim=1)
        loss_sum += float(F.nll_loss(probabilities.clamp_min(1e-12).log(), labels, reduction="sum"))
        for i, count in enumerate(top_k_errors(probabilities, labels)):
            errors[i] += count
        images += len(labels)
    if images == 0:
        raise ValueError("no readable images to evaluate")
    return {
        "loss": loss_sum / images,
        "top1_error": errors[0] / images,
        "top5_error": errors[1] / images,
        "images": images,
        "skipped": skipped,
    }
