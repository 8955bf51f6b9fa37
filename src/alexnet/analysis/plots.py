"""The analysis figures: top-5 panels and nearest neighbours (Figure 4), training error of ReLU
against tanh (Figure 1). The run's own curves and conv1 kernels are drawn during training
(run/epoch_plots.py), whose `save_png` writes these too.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import matplotlib

matplotlib.use("Agg")  # before pyplot: never a window
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from alexnet.run.epoch_plots import save_png  # noqa: E402


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
        bars.barh(positions, panel.probabilities, color=colours, alpha=0.45)
        for position, name in zip(positions, panel.classes, strict=True):  # inside the axes:
            bars.text(0.02, position, name[:30], va="center", fontsize=8)  # long names fit
        bars.set_yticks([])
        bars.invert_yaxis()
        bars.set_xlim(0, 1)
        bars.tick_params(axis="x", labelsize=7)
    figure.suptitle("Top-5 predictions (true class in red)")
    save_png(figure, path)


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
    save_png(figure, path)


def plot_training_error(
    curves: dict[str, tuple[Sequence[float], Sequence[float]]],
    path: Path,
    targets: Sequence[float] = (0.25,),
) -> None:
    """Figure 1: training error rate against epochs, ReLU solid, tanh dashed, a dotted line at
    each target error (the paper's: 25%)."""
    figure, axis = plt.subplots(figsize=(5.5, 4))
    for name, (epochs, errors) in curves.items():
        style = "-" if name == "relu" else "--"
        label = {"relu": "ReLU", "tanh": "tanh"}.get(name, name)
        axis.plot(epochs, errors, style, color="black", linewidth=1.6, label=label)
    for target in targets:
        axis.axhline(target, color="grey", linestyle=":", linewidth=1)
        axis.text(0, target, f" {target:.0%}", color="grey", va="bottom")
    axis.set(xlabel="epochs", ylabel="training error rate", ylim=(0, 0.75), xlim=(0, None))
    axis.legend()
    axis.grid(alpha=0.3)
    save_png(figure, path)
