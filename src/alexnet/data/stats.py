"""What preprocessing needs from the training set (§2, §4.1), computed once per data set.

One streaming pass over the training images, each prepared as in §2 (shorter side rescaled to
image_size, centre square), sums exactly, in integers, whatever the batches or their order
(`StatsSums`, shared with `alexnet prepare`, whose store therefore holds the same figures):
- the per-pixel sum: the mean image (3, S, S), subtracted from every image (§2);
- Σ x xᵀ over every RGB pixel x of every image: the 3×3 RGB covariance, whose eigenvalues and
  eigenvectors drive PCA lighting (§4.1). Every pixel is used, no sample: the sum costs less
  than the decoding, so sampling would save nothing;
- from the same sums, the per-channel std of (pixel - mean image), for standardised inputs.
Skipped (unreadable) files are left out. A prepared store (store.py) carries its statistics:
no pass is made over it. Any other source's result is cached as `stats-<key>.pt` in one cache
folder (`$ALEXNET_CACHE`, default `~/.cache/alexnet`), where the key hashes the data's identity
(file paths, sizes and mtimes, or the array bytes) and the image size, so a change to either
computes afresh and every run on the same data reads it.
"""

from __future__ import annotations

import hashlib
import logging
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from alexnet.data.lighting import rgb_pca
from alexnet.data.loading.process_loader import default_workers
from alexnet.data.sources.dataset import DataError, ImageSource
from alexnet.files import write_atomically
from alexnet.recipe import MAX_IMAGE_SIZE

log = logging.getLogger("alexnet.data")
STATS_VERSION = 2  # part of the cache key: change it when the computation changes
BATCH_SIZE = 32
UNREADABLE_CACHE = (OSError, RuntimeError, EOFError, KeyError, pickle.UnpicklingError, DataError)
MIN_CHANNEL_STD = 1.0  # grey levels: a constant channel must not divide by zero


@dataclass
class DataStats:
    """Everything preprocessing needs from the training set; saved inside checkpoints."""

    image_size: int
    mean_image: torch.Tensor  # (3, S, S) float32, 0-255 scale
    channel_std: torch.Tensor  # (3,) float32, std of (pixel - mean image), 0-255 scale
    eigenvalues: torch.Tensor  # (3,) float32, descending, of the RGB covariance (0-255 scale)
    eigenvectors: torch.Tensor  # (3, 3) float32, column i = eigenvector i

    @property
    def grey(self) -> bool:
        """The images have one colour axis: their RGB covariance has one eigenvalue that is not
        zero (grey images replicated to three channels: digits, Fashion-MNIST, MNIST)."""
        return bool(self.eigenvalues[1] <= 1e-6 * self.eigenvalues[0])

    def state_dict(self) -> dict[str, torch.Tensor | int]:
        """Tensors and ints only, safe for torch.load(weights_only=True)."""
        return {
            "image_size": self.image_size,
            "mean_image": self.mean_image,
            "channel_std": self.channel_std,
            "eigenvalues": self.eigenvalues,
            "eigenvectors": self.eigenvectors,
        }

    @classmethod
    def from_state_dict(cls, state: Any, where: str = "data statistics") -> DataStats:
        """The statistics in `state`, checked before use: every tensor present, of the shape
        the image size gives, finite, the std positive and the eigenvalues not negative;
        anything else is one DataError line naming `where` (the file) and the field."""
        if not isinstance(state, dict):
            raise DataError(f"{where}: data_stats is not a dictionary of tensors")
        size = state.get("image_size")
        if isinstance(size, torch.Tensor) and size.numel() == 1:
            size = int(size)
        if not isinstance(size, int) or isinstance(size, bool) or not 1 <= size <= MAX_IMAGE_SIZE:
            raise DataError(
                f"{where}: data_stats.image_size={size!r} is not a size in 1..{MAX_IMAGE_SIZE}"
            )
        shapes = {"mean_image": (3, size, size), "channel_std": (3,), "eigenvalues": (3,),
                  "eigenvectors": (3, 3)}  # fmt: skip
        for name, shape in shapes.items():
            tensor = state.get(name)
            if not isinstance(tensor, torch.Tensor):
                raise DataError(f"{where}: data_stats.{name} is missing")
            if tuple(tensor.shape) != shape:
                raise DataError(
                    f"{where}: data_stats.{name} is {tuple(tensor.shape)}, expected {shape} for "
                    f"{size} px images"
                )
            if not tensor.is_floating_point() or not torch.isfinite(tensor).all():
                raise DataError(f"{where}: data_stats.{name} holds values that are not finite")
        if not (state["channel_std"] > 0).all() or (state["eigenvalues"] < 0).any():
            raise DataError(f"{where}: data_stats.channel_std must be > 0 and eigenvalues >= 0")
        return cls(size, *(state[name].float() for name in shapes))


class StatsSums:
    """Exact running sums over prepared uint8 images (3, S, S): int64 throughout, so that any
    split of the images into batches, in any order, gives the same DataStats."""

    def __init__(self, image_size: int):
        self.image_size = image_size
        self.pixel_sum = torch.zeros(3, image_size, image_size, dtype=torch.int64)  # (3, S, S)
        self.colour_products = torch.zeros(3, 3, dtype=torch.int64)  # Σ x xᵀ over all pixels
        self.count = 0

    def add(self, images: torch.Tensor) -> None:
        """Add a batch (B, 3, S, S) uint8, one image at a time: each stays in cache, where
        whole-batch sums are bound by memory bandwidth (docs/measurements.md, "The CPU's batch
        arithmetic")."""
        for image in images:
            image = image.contiguous()  # one copy: a channels-last image would be copied twice
            self.pixel_sum += image
            flat = image.view(3, -1).double()  # (3, S*S)
            # Exact in float64: one image's sums stay below 2^53 up to S = 35,000.
            self.colour_products += (flat @ flat.T).round().long()  # (3, 3)
            self.count += 1

    def merge(self, other: StatsSums) -> None:
        self.pixel_sum += other.pixel_sum
        self.colour_products += other.colour_products
        self.count += other.count

    def state_dict(self) -> dict[str, torch.Tensor | int]:
        return {
            "image_size": self.image_size,
            "pixel_sum": self.pixel_sum,
            "colour_products": self.colour_products,
            "count": self.count,
        }

    @classmethod
    def from_state_dict(cls, state: dict[str, torch.Tensor | int]) -> StatsSums:
        sums = cls(int(state["image_size"]))
        sums.pixel_sum = torch.as_tensor(state["pixel_sum"]).clone()
        sums.colour_products = torch.as_tensor(state["colour_products"]).clone()
        sums.count = int(state["count"])
        return sums

    def finish(self) -> DataStats:
        """The DataStats these sums describe (§2 mean image, §4.1 RGB PCA, channel std)."""
        count, size = self.count, self.image_size
        mean_image = self.pixel_sum.double() / count  # (3, S, S)
        second_moment = self.colour_products.double() / (count * size * size)  # (3, 3) E[x xᵀ]
        colour_mean = mean_image.mean(dim=(1, 2))  # (3,)
        covariance = second_moment - torch.outer(colour_mean, colour_mean)
        channel_variance = second_moment.diagonal() - mean_image.square().mean(dim=(1, 2))
        eigenvalues, eigenvectors = rgb_pca(covariance)
        return DataStats(
            image_size=size,
            mean_image=mean_image.float(),
            channel_std=channel_variance.clamp_min(0).sqrt().clamp_min(MIN_CHANNEL_STD).float(),
            eigenvalues=eigenvalues,
            eigenvectors=eigenvectors,
        )


def stats_cache_key(train: ImageSource, image_size: int) -> str:
    text = f"stats v{STATS_VERSION}|{train.fingerprint()}|{image_size}"
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def compute_stats(
    train: ImageSource,
    image_size: int,
    *,
    cache_dir: Path | None,
    workers: int = 0,
    progress: bool = True,
) -> DataStats:
    """The DataStats of `train` at `image_size`: a prepared store's own, else from the cache in
    cache_dir when present, else from a pass over the images (then cached there).

    workers: loader processes for the pass (0 = this process, -1 = one per CPU core); progress:
    a tqdm bar.
    """
    stored = train.stored_stats(image_size)
    if stored is not None:
        log.info("data statistics: from the prepared store")
        return stored
    cache_file = None
    if cache_dir is not None:
        cache_file = Path(cache_dir) / f"stats-{stats_cache_key(train, image_size)}.pt"
        if cache_file.is_file():
            try:
                state = torch.load(cache_file, weights_only=True)
                log.info("data statistics: read from %s", cache_file)
                return DataStats.from_state_dict(state, str(cache_file))
            except UNREADABLE_CACHE as error:
                log.warning(
                    "data statistics: cannot read %s (%s); computing again", cache_file, error
                )
    loader = DataLoader(
        _PreparedPixels(train, image_size),
        batch_size=BATCH_SIZE,
        num_workers=default_workers() if workers < 0 else workers,
        collate_fn=_collate,
    )
    sums = StatsSums(image_size)
    with tqdm(total=len(train), desc="data statistics", unit="img", disable=not progress) as bar:
        for images, skipped in loader:  # images: (B, 3, S, S) uint8
            for index in skipped:  # already warned where it was read
                train.mark_unreadable(index, "cannot decode", warn=False)
            sums.add(images)
            bar.update(len(images) + len(skipped))
    if sums.count == 0:
        raise DataError(f"{train.name}: no readable training images")
    stats = sums.finish()
    log.info(
        "data statistics: %d images at %d px, %d skipped",
        sums.count, image_size, len(train.unreadable),
    )  # fmt: skip
    if cache_file is not None:
        _save_atomically(stats, cache_file)
    return stats


def _save_atomically(stats: DataStats, path: Path) -> None:
    """Cache the statistics; a cache that cannot be written costs a warning, not the run."""
    try:
        write_atomically(path, lambda file: torch.save(stats.state_dict(), file))
    except OSError as error:
        log.warning("data statistics: cannot cache them at %s (%s)", path, error.strerror or error)
        return
    log.info("data statistics: cached at %s", path)


class _PreparedPixels(Dataset):
    """(index, the image prepared as in §2 (3, S, S) uint8, or None for a skipped file): the
    source's own `pixels`, as training reads them; the index reports a skip back."""

    def __init__(self, source: ImageSource, image_size: int):
        self.source, self.image_size = source, image_size

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, index: int):
        return index, self.source.pixels(index, self.image_size)


def _collate(batch: list) -> tuple[torch.Tensor, list[int]]:
    """(images (B, 3, S, S) uint8 of the items that loaded, indices of the skipped ones)."""
    images = [pixels for _, pixels in batch if pixels is not None]
    skipped = [index for index, pixels in batch if pixels is None]
    return (torch.stack(images) if images else torch.empty(0)), skipped
