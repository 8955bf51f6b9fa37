"""A source's items as uint8 crops (§2, §4.1), and the batch they travel in to the device.

`CropItems` gives each item prepared as in §2 (a prepared store's images are already), its
window drawn (windows.py: a random crop_size window mirrored with probability 1/2 for training;
the centre, or §4.1's ten, for testing) and cut, still uint8, and its PCA lighting α drawn
(lighting.py); process_loader.py seeds the draws per item from (seed, epoch, index). `collate_crops`
makes a `CropBatch` of them; batches.py does the arithmetic on the device.

Crops keep the memory order of every decoder here, torchvision's and Pillow's: (c, c, 3), a
batch's pixels being (B, 3, c, c) channels-last (`channels_last_empty`): contiguous (3, c, c)
crops would transpose every byte (docs/measurements.md, "CPU memory order").
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch.utils.data import Dataset, default_collate

from alexnet.data.lighting import draw_alpha
from alexnet.data.loading.windows import cut_window, draw_window, eval_windows
from alexnet.data.sources.dataset import ImageSource
from alexnet.recipe import DataRecipe


class CropBatch(NamedTuple):
    """A batch before the device's arithmetic. pixels: uint8 crops (B, 3, c, c), or (B, 10, 3,
    c, c) for ten crops; or, to decode on the device, the B images' JPEG bytes end to end, with
    their lengths (B,). windows: (B, 3) or (B, 10, 3) int64 (top, left, flipped). alpha: (B, 3)
    lighting draws."""

    pixels: torch.Tensor
    windows: torch.Tensor
    alpha: torch.Tensor
    lengths: torch.Tensor | None = None  # JPEG bytes per image; None for cut crops


class CropItems(Dataset):
    """A source's items as (pixels, windows, alpha, label), or None for a skipped file.

    train: a random window (mirrored when `recipe.flip`) and, with PCA lighting, one α; else the
    centre window, or the ten of §4.1 with ten_crop. encoded: hand over the stored JPEG bytes
    instead of cut pixels (a prepared store at the recipe's size; decoded on the device).
    """

    def __init__(
        self,
        source: ImageSource,
        recipe: DataRecipe,
        *,
        train: bool,
        ten_crop: bool = False,
        encoded: bool = False,
    ):
        self.source = source
        self.image_size, self.crop_size = recipe.image_size, recipe.crop_size
        self.train, self.flip = train, recipe.flip
        self.lighting_std = recipe.lighting_std if train and recipe.pca_lighting else None
        self.windows = None if train else eval_windows(self.image_size, self.crop_size, ten_crop)
        self.encoded = encoded

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, index: int):
        if self.encoded:
            pixels = self.source.encoded(index)
        else:
            pixels = self.source.pixels(index, self.image_size)  # (3, S, S) uint8
        if pixels is None:
            return None
        windows, alpha = self.draws()
        if not self.encoded:
            pixels = self.cut(pixels, windows)
        return pixels, windows, alpha, int(self.source.labels[index])

    def draws(self, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """An item's windows (3,) or (10, 3) and α (3,), drawn from `generator` (torch's global
        one when None): the window first, then α, the order every item draws them in."""
        if self.train:
            size, crop = self.image_size, self.crop_size
            windows = torch.tensor(draw_window(size, crop, self.flip, generator))
        else:
            windows = self.windows[0] if len(self.windows) == 1 else self.windows
        if self.lighting_std is None:
            return windows, torch.zeros(3)
        return windows, draw_alpha(self.lighting_std, generator)

    def cut(
        self, pixels: torch.Tensor, windows: torch.Tensor, out: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The crops (3, c, c), or (10, 3, c, c), of an image (3, S, S) at `draws`' windows;
        out: where to write them (windows.cut_window)."""
        if windows.dim() == 1:
            return cut_window(pixels, windows, self.crop_size, out)
        if out is None:
            return torch.stack([cut_window(pixels, window, self.crop_size) for window in windows])
        for window, crop in zip(windows, out, strict=True):
            cut_window(pixels, window, self.crop_size, crop)
        return out


def collate_crops(batch: list) -> tuple[CropBatch, torch.Tensor, int]:
    """(CropBatch, labels, skipped) of the items that loaded; zero rows if none did."""
    kept = [item for item in batch if item is not None]
    skipped = len(batch) - len(kept)
    if not kept:
        return no_crops(skipped)
    pixels, windows, alpha, labels = (list(column) for column in zip(*kept, strict=True))
    # default_collate stacks into shared memory in a worker: the main process maps, not copies;
    # stacked as (c, c, 3) pixels, the decoder's order. JPEG bytes go end to end in one tensor:
    # one shared segment a batch, not one an image.
    lengths = torch.tensor([len(data) for data in pixels]) if pixels[0].dim() == 1 else None
    if lengths is not None:
        stacked = torch.cat(pixels)
    else:
        stacked = default_collate([crop.movedim(-3, -1) for crop in pixels]).movedim(-1, -3)
    crops = CropBatch(stacked, default_collate(windows), default_collate(alpha), lengths)
    return crops, default_collate(labels), skipped


def channels_last_empty(
    shape: tuple[int, ...], dtype: torch.dtype, *, pin: bool = False
) -> torch.Tensor:
    """An uninitialised tensor of `shape` (..., 3, c, c) whose memory is (..., c, c, 3)."""
    *outer, channels, height, width = shape
    memory = torch.empty((*outer, height, width, channels), dtype=dtype, pin_memory=pin)
    return memory.movedim(-1, -3)


def no_crops(skipped: int) -> tuple[CropBatch, torch.Tensor, int]:
    """The batch of `skipped` items none of which loaded: zero rows."""
    nothing = CropBatch(torch.empty(0, dtype=torch.uint8), torch.empty(0, 3), torch.empty(0, 3))
    return nothing, torch.empty(0, dtype=torch.int64), skipped
