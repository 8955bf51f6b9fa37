"""The run folder's figures, redrawn after every epoch of training: learning curves
(`curves.png`) and the conv1 kernels (`conv1.png`, Figure 3).

With analysis/plots.py, the only modules that import matplotlib. Each figure is written to a
temporary file and renamed (`save_png`), so a reader never sees half a PNG.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from alexnet.files import write_atomically  # noqa: E402


def save_png(figure: plt.Figure, path: Path) -> None:
    write_atomically(
        path, lambda file: figure.savefig(file, format="png", dpi=110, bbox_inches="tight")
    )
    plt.close(figure)


def plot_curves(records: Sequence[dict], path: Path) -> None:
    """Loss and top-1/top-5 error against epoch, from the lines of `metrics.jsonl`."""
    epochs = [r["epoch"] for r in records]
    figure, (loss_axis, error_axis) = plt.subplots(1, 2, figsize=(10, 3.8))
    loss_axis.plot(epochs, [r["train_loss"] for r in records], "o-", label="train")
    loss_axis.plot(epochs, [r["val_loss"] for r in records], "s-", label="validation")
    loss_axis.set(xlabel="epoch", ylabel="cross-entropy loss", title="Loss")
    for key, label, style in [
        ("train_top1_error", "train top-1", "o-"),
        ("val_top1_error", "validation top-1", "s-"),
        ("val_top5_error", "validation top-5", "s--"),
    ]:
        error_axis.plot(epochs, [100 * r[key] for r in records], style, label=label)
    error_axis.set(xlabel="epoch", ylabel="error (%)", title="Error", ylim=(0, None))
    for axis in (loss_axis, error_axis):
        axis.grid(alpha=0.3)
        axis.legend()
        axis.xaxis.get_major_locator().set_params(integer=True)
    drops = [
        r["epoch"] for prev, r in zip(records, records[1:], strict=False) if r["lr"] < prev["lr"]
    ]
    for epoch in drops:  # between the last epoch at the old rate and the first at the new
        error_axis.axvline(epoch - 0.5, color="grey", linestyle=":", linewidth=1)
    if drops:
        error_axis.text(
            drops[0] - 0.5,
            0.98,
            "ε÷10 ",
            color="grey",
            va="top",
            ha="right",
            transform=error_axis.get_xaxis_transform(),
        )  # x: epochs, y: the axis
    save_png(figure, path)


def kernel_grid(
    weights: torch.Tensor, towers: Sequence[range], per_row: int = 8, *, grey: bool = False
) -> torch.Tensor:
    """conv1 kernels (K, 3, h, w) as one RGB image (H, W, 3) in [0, 1], one block per tower.

    Each kernel is scaled to [0, 1] on its own, as Figure 3 shows them; the towers are drawn
    one above the other with a gap, so the two halves of the paper's net sit apart. grey: each
    kernel's sum over its three channels instead, in grey.
    """
    if grey:
        weights = weights.sum(dim=1, keepdim=True).expand(-1, 3, -1, -1)
    _, _, height, width = weights.shape
    cell_h, cell_w = height + 1, width + 1
    blocks = []
    for tower in towers:
        rows = -(-len(tower) // per_row)
        block = torch.ones(rows * cell_h + 1, per_row * cell_w + 1, 3)
        for slot, kernel_index in enumerate(tower):
            kernel = weights[kernel_index].detach().float().cpu()
            low, high = kernel.min(), kernel.max()
            kernel = (kernel - low) / (high - low).clamp_min(1e-12)
            top, left = 1 + (slot // per_row) * cell_h, 1 + (slot % per_row) * cell_w
            block[top : top + height, left : left + width] = kernel.permute(1, 2, 0)
        blocks.append(block)
    gap = torch.ones(cell_h, blocks[0].shape[1], 3)
    pieces = [blocks[0]]
    for block in blocks[1:]:
        pieces += [gap, block]
    return torch.cat(pieces, dim=0)


def plot_conv1(
    weights: torch.Tensor, towers: Sequence[range], path: Path, *, grey: bool = False
) -> None:
    """Figure 3: the conv1 kernels as a grid, each tower in its own block.

    grey: the images are grey (the same value in all three channels), so a kernel acts as the
    sum of its three channels; the parts that differ between channels never get a gradient and
    stay as initialised (noise in colour). The sum is drawn instead, in grey."""
    image = kernel_grid(weights, towers, per_row=16, grey=grey)
    figure, axis = plt.subplots(figsize=(8, 8 * image.shape[0] / image.shape[1] + 0.4))
    axis.imshow(image.numpy(), interpolation="nearest")
    axis.set_axis_off()
    title = f"conv1: {weights.shape[0]} kernels {weights.shape[2]}×{weights.shape[3]}"
    title += ", the 3 channels summed (grey images)" if grey else "×3"
    if len(towers) > 1:
        title += "; tower one above, tower two below"
    axis.set_title(title)
    save_png(figure, path)
