"""Figures: learning curves, conv1 kernels (Figure 3), top-5 panels and nearest neighbours
(Figure 4), training error of ReLU against tanh (Figure 1).

The only module that imports matplotlib. Each figure is written to a temporary file and renamed,
so a reader never sees half a PNG.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from alexnet.files import write_atomically  # noqa: E402


def _save(figure: plt.Figure, path: Path) -> None:
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
    for epoch in drops:
        error_axis.axvline(epoch, color="grey", linestyle=":", linewidth=1)
    if drops:
        error_axis.text(drops[0], 0, " lr ÷10", color="grey", va="bottom")
    _save(figure, path)


def kernel_grid(weights: torch.Tensor, towers: Sequence[range], per_row: int = 8) -> torch.Tensor:
    """conv1 kernels (K, 3, h, w) as one RGB image (H, W, 3) in [0, 1], one block per tower.

    Each kernel is scaled to [0, 1] on its own, as Figure 3 shows them; the towers are drawn
    one above the other with a gap, so the two halves of the paper's net sit apart.
    """
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


def plot_conv1(weights: torch.Tensor, towers: Sequence[range], path: Path) -> None:
    """Figure 3: the conv1 kernels as a grid, each tower in its own block."""
    image = kernel_grid(weights, towers, per_row=16)
    figure, axis = plt.subplots(figsize=(8, 8 * image.shape[0] / image.shape[1] + 0.4))
    axis.imshow(image.numpy(), interpolation="nearest")
    axis.set_axis_off()
    title = f"conv1: {weights.shape[0]} kernels {weights.shape[2]}×{weights.shape[3]}×3"
    if len(towers) > 1:
        title += "; tower one above, tower two below"
    axis.set_title(title)
    _save(figure, path)


class Top5(NamedTuple):
    """One panel of Figure 4 (left): an image, its true class, its five most probable classes."""

    image: np.ndarray  # (H, W, 3) uint8
    truth: str
    classes: list[str]
    probabilities: list[float]


def plot_top5(panels: Sequence[Top5], path: Path, per_row: int = 4) -> None:
    """Figure 4 (left): each image above a bar chart of its five most probable classes; the
    true class's bar is red (and its name is under the image)."""
    per_row = min(per_row, len(panels))
    rows = -(-len(panels) // per_row)
    figure = plt.figure(figsize=(2.6 * per_row, 4.2 * rows))
    grid = figure.add_gridspec(2 * rows, per_row, height_ratios=[1.4, 1] * rows, hspace=0.35)
    for slot, panel in enumerate(panels):
        row, column = divmod(slot, per_row)
        image_axis = figure.add_subplot(grid[2 * row, column])
        image_axis.imshow(panel.image, interpolation="nearest")
        image_axis.set_axis_off()
        image_axis.set_title(panel.truth, fontsize=10, y=-0.14)
        bars = figure.add_subplot(grid[2 * row + 1, column])
        colours = ["tab:red" if c == panel.truth else "tab:blue" for c in panel.classes]
        positions = range(len(panel.classes))
        bars.barh(positions, panel.probabilities, color=colours)
        bars.set_yticks(list(positions), panel.classes, fontsize=8)
        bars.invert_yaxis()
        bars.set_xlim(0, 1)
        bars.tick_params(axis="x", labelsize=7)
    figure.suptitle("Top-5 predictions (true class in red)")
    _save(figure, path)


class Neighbours(NamedTuple):
    """One row of Figure 4 (right): a query image and its nearest training images."""

    query: np.ndarray  # (H, W, 3) uint8
    query_class: str
    images: list[np.ndarray]
    classes: list[str]
    distances: list[float]


def plot_neighbours(rows: Sequence[Neighbours], path: Path) -> None:
    """Figure 4 (right): one row per query: the query, then the training images whose fc7
    vectors are nearest in Euclidean distance, with their class and distance."""
    columns = 1 + max(len(row.images) for row in rows)
    figure, axes = plt.subplots(
        len(rows), columns, figsize=(1.5 * columns, 1.7 * len(rows)), squeeze=False
    )
    for axis_row, row in zip(axes, rows, strict=True):
        axis_row[0].imshow(row.query, interpolation="nearest")
        axis_row[0].set_title(f"query: {row.query_class}", fontsize=8, color="tab:red")
        for axis, image, name, distance in zip(
            axis_row[1:], row.images, row.classes, row.distances, strict=False
        ):
            axis.imshow(image, interpolation="nearest")
            axis.set_title(f"{name}  d={distance:.3g}", fontsize=7)
        for axis in axis_row:
            axis.set_axis_off()
    figure.suptitle("Query (left) and its nearest training images by fc7 distance", fontsize=10)
    _save(figure, path)


def plot_training_error(
    curves: dict[str, tuple[Sequence[float], Sequence[float]]], path: Path, target: float = 0.25
) -> None:
    """Figure 1: training error rate against epochs, ReLU solid, tanh dashed, the 25% line."""
    figure, axis = plt.subplots(figsize=(5.5, 4))
    for name, (epochs, errors) in curves.items():
        style = "-" if name == "relu" else "--"
        label = {"relu": "ReLU", "tanh": "tanh"}.get(name, name)
        axis.plot(epochs, errors, style, color="black", linewidth=1.6, label=label)
    axis.axhline(target, color="grey", linestyle=":", linewidth=1)
    axis.text(0, target, f" {target:.0%}", color="grey", va="bottom")
    axis.set(xlabel="epochs", ylabel="training error rate", ylim=(0, 0.75), xlim=(0, None))
    axis.legend()
    axis.grid(alpha=0.3)
    _save(figure, path)
