"""Figure 1's training images in memory at 32×32, and the two input scales it is run at (§3.1).

`standardised`: each channel minus its mean, divided by its std (what this project's small-data
recipes feed). `raw`: the paper's scale, the mean image subtracted from 0-255 pixels and nothing
divided, as cuda-convnet's `convdata.py` fed its CIFAR-10 nets (§2 does the same on ImageNet).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from alexnet.data import DataError, ImageSource
from alexnet.experiments.four_layer_net import IMAGE_SIZE

INPUT_SCALES = ("standardised", "raw")


@dataclass
class TrainingSet:
    """A source's readable images at 32×32 in memory, with what centres (and scales) them."""

    images: torch.Tensor  # (N, 3, 32, 32) uint8
    labels: torch.Tensor  # (N,)
    shift: torch.Tensor  # (3, 1, 1) channel means, or (3, 32, 32) the mean image for "raw"
    scale: torch.Tensor  # (3, 1, 1) channel stds, or ones for "raw"

    @classmethod
    def from_source(
        cls,
        source: ImageSource,
        subset: int | None = None,
        seed: int = 0,
        input_scale: str = "standardised",
    ):
        """Every readable image, or a fixed subset of `subset` drawn with `seed`."""
        if input_scale not in INPUT_SCALES:
            raise ValueError(f"input scale {input_scale!r}: expected one of {INPUT_SCALES}")
        indices = range(len(source))
        if subset is not None and subset < len(source):  # the draw of data.train_subset
            indices = np.sort(np.random.default_rng(seed).permutation(len(source))[:subset])
        pictures, labels = [], []
        for index in map(int, indices):
            item = source.load(index, IMAGE_SIZE)
            if item is not None:
                image = item[0].resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.BILINEAR)
                pictures.append(np.asarray(image))
                labels.append(item[1])
        if not pictures:
            raise DataError(f"no readable images in {source.name}")
        images = torch.from_numpy(np.stack(pictures)).permute(0, 3, 1, 2).contiguous()
        as_float = images.float()
        if input_scale == "raw":
            shift, scale = as_float.mean(dim=0), torch.ones(3, 1, 1)
        else:
            shift = as_float.mean(dim=(0, 2, 3))[:, None, None]
            scale = as_float.std(dim=(0, 2, 3)).clamp_min(1.0)[:, None, None]
        return cls(images, torch.tensor(labels), shift, scale)

    def batch(self, indices: torch.Tensor, device: torch.device):
        images = (self.images[indices].float() - self.shift) / self.scale
        return images.to(device), self.labels[indices].to(device)
