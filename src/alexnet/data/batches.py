"""The batches every consumer of images receives (§2, §4.1, §5): training, evaluation,
predict and `load()`; a single image is a batch of one (`preprocess`).

`make_batches` joins the two halves: a loader of uint8 crops (loading/: worker processes for
any source, threads of this process for a store read at its own size) and the `BatchTransform`
that turns them into float images on the device (transform/). On CUDA a store of JPEGs can be
decoded there instead (`gpu_decode`), with the same windows and lighting draws, and each batch
is copied there one batch ahead, on a stream of its own (loading/copy_ahead.py).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch

from alexnet.data.loading.copy_ahead import CopiedAhead
from alexnet.data.loading.items import CropItems, collate_crops
from alexnet.data.loading.process_loader import make_loader
from alexnet.data.loading.thread_loader import make_threaded_loader
from alexnet.data.sources.dataset import ImageSource
from alexnet.data.sources.given import GivenImages, ImageLike
from alexnet.data.stats import DataStats
from alexnet.data.transform.batch_transform import BatchTransform, check_sizes
from alexnet.recipe import DataRecipe

log = logging.getLogger("alexnet.data")


class DeviceBatches:
    """A crop loader whose batches arrive as (float images, labels, skipped) on the device; its
    length is the loader's, and `set_epoch` its sampler's (loader.EpochSampler)."""

    def __init__(self, loader, transform: BatchTransform):
        self.loader = loader
        self.transform = transform

    def set_epoch(self, epoch: int, *, skip_steps: int = 0) -> None:
        """The epoch the next passes yield, without its first `skip_steps` global batches."""
        self.loader.sampler.set_epoch(epoch, skip_steps=skip_steps)

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        device = self.transform.device
        # on CUDA batch n+1's copy overlaps the step on batch n (loading/copy_ahead.py)
        batches = CopiedAhead(self.loader, device) if device.type == "cuda" else self.loader
        for crops, labels, skipped in batches:
            if len(labels) == 0:
                yield torch.empty(0, device=device), labels.to(device), skipped
                continue
            yield self.transform(crops), labels.to(device, non_blocking=True), skipped


def decodes_on_device(
    source: ImageSource, recipe: DataRecipe, device: torch.device, gpu_decode: bool
) -> bool:
    """Whether `make_batches` decodes on the device: CUDA, gpu_decode on, and a store of JPEGs
    at the recipe's image size."""
    return (
        gpu_decode
        and device.type == "cuda"
        and source.prepared_size == recipe.image_size
        and source.encoded(0) is not None
    )


def forward_batch_size(training_batch: int) -> int:
    """Images per forward pass where no gradient is kept (validation, eval, predict, fc7
    features): 4× the training batch. It fits where training did, which also held every
    activation for the backward pass, and larger batches run faster (docs/measurements.md,
    "Evaluation, prediction and the report")."""
    return 4 * training_batch


def make_batches(
    source: ImageSource,
    recipe: DataRecipe,
    stats: DataStats,
    batch_size: int,
    *,
    train: bool,
    ten_crop: bool = False,
    device: torch.device | str = "cpu",
    gpu_decode: bool = True,
    native_kernels: bool = False,
    **loader_options,
) -> DeviceBatches:
    """Batches of `source` as the net consumes them; `native_kernels`: the arithmetic by its
    compiled CPU loop, once built (the same bits); loader_options go to the loader (workers,
    seed, epoch, rank, world)."""
    device = torch.device(device)
    if source.prepared_size not in (None, recipe.image_size):
        log.warning(
            "%s holds %d px images; the recipe asks for %d px, so each image is resized as it is "
            "read (slower): prepare a store at that size for speed",
            source.name, source.prepared_size, recipe.image_size,
        )  # fmt: skip
    encoded = decodes_on_device(source, recipe, device, gpu_decode)
    items = CropItems(source, recipe, train=train, ten_crop=ten_crop, encoded=encoded)
    # Pinned memory speeds up the crops' copy; JPEG bytes are read by the decoder, not copied.
    pin_for = "cpu" if encoded else device
    if not encoded and source.prepared_size == recipe.image_size:  # a store: decoding is cheap
        loader = make_threaded_loader(
            items, batch_size, train=train, device=device, **loader_options
        )
    else:
        loader = make_loader(
            items, batch_size, train=train, device=pin_for, collate=collate_crops, **loader_options
        )
    lighting = train and recipe.pca_lighting
    transform = BatchTransform(
        recipe, stats, device, lighting=lighting, native_kernels=native_kernels
    )
    return DeviceBatches(loader, transform)


def preprocess(
    images: ImageLike | Sequence[ImageLike],
    recipe: DataRecipe,
    stats: DataStats,
    *,
    train: bool = False,
    ten_crop: bool = False,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """A few images as the net sees them, in this process: (B, 3, c, c), or (B, 10, 3, c, c)
    with ten_crop, in torch's usual (contiguous) memory order. The same items and arithmetic
    as `make_batches` (a single image is a batch of one); train draws each window and α from
    torch's global generator, as a loader worker draws them from its seeded one."""
    check_sizes(recipe, stats)
    items = CropItems(GivenImages(images), recipe, train=train, ten_crop=ten_crop)
    crops, _, _ = collate_crops([items[index] for index in range(len(items))])
    lighting = train and recipe.pca_lighting
    return BatchTransform(recipe, stats, device, lighting=lighting)(crops).contiguous()
