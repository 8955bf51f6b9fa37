"""The paper's image pipeline (§2, §4.1): from a decoded RGB image to the tensor the net sees.

One named step each, in this order:
1. `Prepare` (§2): rescale the shorter side to image_size (bilinear, antialiased), keep the
   central image_size square: (3, S, S) uint8.
2. `to_float`: float32, values 0-255.
3. `SubtractMean` (§2): minus the training set's mean image.
4. training (§4.1): `RandomWindow`, a random crop_size crop mirrored with probability 1/2
   (windows.py), then `PCALighting` (lighting.py);
   testing (§4.1): the centre crop (torchvision's CenterCrop), or `TenCrop`.
5. `Standardise`, only for input_scale "standardised": divide by the per-channel std of
   (pixel - mean image). "raw" keeps the paper's centred 0-255 values.
The recipe's image_size and crop_size scale the same pipeline to small data (digits and
CIFAR-10 upsampled to 72 px, cropped to 64). Random steps draw from torch's global generator,
which the loader seeds per item from (seed, epoch, index).

This is the per-image reference of the pipeline, used where images come one at a time
(inference.py). Training and evaluation run it batched: loader workers cut uint8 crops and the
device does the float arithmetic on whole batches (batches.py), with the same draws and results.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import torch
from PIL import Image
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

from alexnet.data.dataset import DataError
from alexnet.data.downsample import Prepare
from alexnet.data.lighting import PCALighting
from alexnet.data.windows import cut_window, draw_window
from alexnet.recipe import DataRecipe

if TYPE_CHECKING:
    from alexnet.data.stats import DataStats


def to_float(pixels: torch.Tensor) -> torch.Tensor:
    """(3, H, W) uint8 -> contiguous float32, values 0-255."""
    return pixels.to(torch.float32, memory_format=torch.contiguous_format)


class SubtractMean:
    """§2: subtract the mean image (3, S, S) from a (3, S, S) image."""

    def __init__(self, mean_image: torch.Tensor):
        self.mean_image = mean_image

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        return image - self.mean_image

    def __repr__(self) -> str:
        return f"SubtractMean({tuple(self.mean_image.shape)})"


class RandomWindow:
    """§4.1: a random crop_size window of a (3, S, S) image, mirrored with probability 1/2 when
    `flip` (windows.draw_window)."""

    def __init__(self, crop_size: int, flip: bool):
        self.crop_size = crop_size
        self.flip = flip

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        size = image.shape[-1]
        return cut_window(image, draw_window(size, self.crop_size, self.flip), self.crop_size)

    def __repr__(self) -> str:
        return f"RandomWindow({self.crop_size}, flip={self.flip})"


class Standardise:
    """Divide each channel by its std (3,); works on (3, H, W) and (10, 3, H, W)."""

    def __init__(self, channel_std: torch.Tensor):
        self.channel_std = channel_std.view(3, 1, 1)

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        return image / self.channel_std

    def __repr__(self) -> str:
        return f"Standardise({self.channel_std.flatten().tolist()})"


class TenCrop:
    """§4.1: (3, H, W) -> (10, 3, size, size): top-left, top-right, bottom-left, bottom-right and
    centre crops (torchvision's five_crop order), then the mirror of each, in the same order."""

    def __init__(self, size: int):
        self.size = size

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        crops = F.five_crop(image, [self.size, self.size])
        return torch.stack([*crops, *(F.horizontal_flip(crop) for crop in crops)])

    def __repr__(self) -> str:
        return f"TenCrop({self.size})"


class Pipeline:
    """Steps applied in order to one image; image_size lets a source decode at reduced size."""

    def __init__(self, image_size: int, steps: Sequence[Callable]):
        self.image_size = image_size
        self.steps = list(steps)

    def __call__(self, image: Image.Image) -> torch.Tensor:
        for step in self.steps:
            image = step(image)
        return image

    def __repr__(self) -> str:
        names = ", ".join(getattr(step, "__name__", None) or repr(step) for step in self.steps)
        return f"Pipeline([{names}])"


def train_transform(recipe: DataRecipe, stats: DataStats) -> Pipeline:
    """§2 + §4.1 for training: -> (3, crop, crop) float32."""
    steps: list[Callable] = [RandomWindow(recipe.crop_size, recipe.flip)]
    if recipe.pca_lighting:
        steps.append(PCALighting(stats.eigenvalues, stats.eigenvectors, recipe.lighting_std))
    return _pipeline(recipe, stats, steps)


def eval_transform(recipe: DataRecipe, stats: DataStats, *, ten_crop: bool = False) -> Pipeline:
    """§2 + §4.1 for testing: -> (3, crop, crop), or (10, 3, crop, crop) with ten_crop."""
    crop = TenCrop(recipe.crop_size) if ten_crop else v2.CenterCrop(recipe.crop_size)
    return _pipeline(recipe, stats, [crop])


def check_sizes(recipe: DataRecipe, stats: DataStats) -> None:
    """The statistics must be of the recipe's image size, and the crop fit inside it."""
    if stats.image_size != recipe.image_size:
        raise DataError(
            f"data statistics were computed at {stats.image_size} px, the recipe asks for "
            f"{recipe.image_size} px"
        )
    if not 0 < recipe.crop_size <= recipe.image_size:
        raise DataError(
            f"crop size {recipe.crop_size} must be between 1 and the image size {recipe.image_size}"
        )


def _pipeline(recipe: DataRecipe, stats: DataStats, crop_steps: list[Callable]) -> Pipeline:
    check_sizes(recipe, stats)
    steps = [Prepare(recipe.image_size), to_float, SubtractMean(stats.mean_image), *crop_steps]
    if recipe.input_scale == "standardised":
        steps.append(Standardise(stats.channel_std))
    return Pipeline(recipe.image_size, steps)


def average_ten_crop(logits: torch.Tensor) -> torch.Tensor:
    """§4.1: logits (B*10, C) or (B, 10, C) -> (B, C), the mean of the ten softmax outputs."""
    num_classes = logits.shape[-1]
    probabilities = logits.reshape(-1, 10, num_classes).softmax(dim=-1)  # (B, 10, C)
    return probabilities.mean(dim=1)
