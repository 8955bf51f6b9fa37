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
from PIL import Image, ImageOps  # noqa: E402

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


def plot_neighbours(rows: Sequence[Neighbours], path: Path, cell: int = 128) -> None:
    """Figure 4 (right): one row per query: the query, then the training images whose fc7
    vectors are nearest in Euclidean distance, with their class and distance.

    The images are laid out in one picture (each fitted into a `cell`-pixel square) drawn on
    one axis, several times faster to draw than an axis per image (docs/measurements.md,
    "Evaluation, prediction and the report")."""
    band, margin = 22, 4  # pixels above each image for its caption; around each image
    columns = 1 + max(len(row.images) for row in rows)
    pitch_x, pitch_y = cell + 2 * margin, cell + band + margin
    canvas = np.full((len(rows) * pitch_y, columns * pitch_x, 3), 255, dtype=np.uint8)
    captions = []
    for r, row in enumerate(rows):
        cells = [(row.query, f"query: {row.query_class}", "tab:red")]
        cells += [
            (image, f"{name}  d={distance:.3g}", "black")
            for image, name, distance in zip(row.images, row.classes, row.distances, strict=False)
        ]
        for c, (image, caption, colour) in enumerate(cells):
            fitted = _fitted(image, cell)
            top, left = r * pitch_y + band, c * pitch_x + margin
            y, x = top + (cell - fitted.shape[0]) // 2, left + (cell - fitted.shape[1]) // 2
            canvas[y : y + fitted.shape[0], x : x + fitted.shape[1]] = fitted
            captions.append((left + cell / 2, top - 4, caption, colour))
    dpi = 110  # save_png's: one canvas pixel per pixel of the PNG
    figure, axis = plt.subplots(figsize=(canvas.shape[1] / dpi, canvas.shape[0] / dpi))
    axis.imshow(canvas, interpolation="nearest")
    axis.set_axis_off()
    for x, y, caption, colour in captions:
        axis.text(x, y, caption, ha="center", va="bottom", fontsize=7, color=colour)
    axis.set_title("Query (left) and its nearest training images by fc7 distance", fontsize=10)
    save_png(figure, path)


def _fitted(image: np.ndarray, size: int) -> np.ndarray:
    """`image` (H, W[, 3]) scaled to fit a `size` square, as (h, w, 3) uint8: small images
    blown up pixel by pixel (an 8×8 digit stays sharp), large ones filtered down."""
    picture = Image.fromarray(np.asarray(image)).convert("RGB")
    upscale = max(picture.size) <= size
    resample = Image.Resampling.NEAREST if upscale else Image.Resampling.LANCZOS
    return np.asarray(ImageOps.contain(picture, (size, size), resample))


def plot_training_error(
    curves: dict[str, Sequence[tuple[Sequence[float], Sequence[float]]]],
    path: Path,
    targets: Sequence[float] = (0.25,),
    floor: float | None = None,
    title: str | None = None,
) -> None:
    """Figure 1: training error rate against epochs, ReLU solid, tanh dashed: each seed's curve
    thin, their mean thick; a dotted line at each target error (the paper's: 25%) and a red
    line at the linear floor (the lowest error of a linear classifier trained the same way);
    `title` names the condition."""
    figure, axis = plt.subplots(figsize=(5.5, 4.5))
    for name, runs in curves.items():
        style = "-" if name == "relu" else "--"
        label = {"relu": "ReLU", "tanh": "tanh"}.get(name, name)
        for epochs, errors in runs:
            axis.plot(epochs, errors, style, color="black", linewidth=0.6, alpha=0.45)
        checks = min(len(errors) for _, errors in runs)  # a diverged seed stopped early
        mean = np.mean([errors[:checks] for _, errors in runs], axis=0)
        axis.plot(runs[0][0][:checks], mean, style, color="black", linewidth=2.2,
                  label=f"{label} (mean of {len(runs)})" if len(runs) > 1 else label)  # fmt: skip
    for target in targets:
        axis.axhline(target, color="grey", linestyle=":", linewidth=1)
        axis.text(0, target, f" {target:.0%}", color="grey", va="bottom", fontsize=7)
    if floor is not None:
        axis.axhline(floor, color="tab:red", linewidth=1.2, label=f"linear floor {floor:.1%}")
    axis.set(xlabel="epochs", ylabel="training error rate", ylim=(0, 0.75), xlim=(0, None))
    if title:
        axis.set_title(title, fontsize=10)
    axis.legend()
    axis.grid(alpha=0.3)
    save_png(figure, path)
