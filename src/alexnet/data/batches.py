"""The one definition of the preprocessing arithmetic (§2, §4.1), for every batch the net sees:
training, evaluation, predict, `load()`; a single image is a batch of one (`preprocess`).

In a loader worker (`CropItems`, crops.py), each item is prepared as in §2 (shorter side
rescaled to image_size, centre square; a prepared store's images are already), its window is
drawn (windows.py: a random crop_size window mirrored with probability 1/2 for training; the
centre, or §4.1's ten, for testing) and cut, still uint8, and its PCA lighting α is drawn
(lighting.py), all from a generator seeded with (seed, epoch, index) (loader.py). The batch
crosses to the device as uint8, channels-last (crops.py): a quarter of float32's shared memory
and host-to-device traffic.
There, `BatchTransform` converts it to float (0-255), subtracts each crop's own window of the
training set's mean image (§2), adds each image's lighting shift (§4.1) and, for input_scale
"standardised", divides by the per-channel std of (pixel - mean image); "raw" keeps the paper's
centred 0-255 values. The recipe's image_size and crop_size scale this to small data.

A prepared store read at its own size is cut by threads of this process into buffers they reuse
(crop_threads.py): the same batches, without a copy through shared memory. On CUDA, a prepared
store of JPEGs can skip the decoding: the loader hands over the stored bytes and the windows,
and the batch is decoded by torchvision's batched GPU decoder and cut there (`gpu_decode`), with
the same windows and α. `make_batches` builds each.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch

from alexnet.data import crops_native
from alexnet.data.crop_threads import make_threaded_loader
from alexnet.data.crops import CropBatch, CropItems, collate_crops
from alexnet.data.dataset import DataError, ImageSource
from alexnet.data.given import GivenImages, ImageLike
from alexnet.data.lighting import lighting_shift
from alexnet.data.loader import make_loader
from alexnet.data.reused_images import ReusedImages
from alexnet.data.stats import DataStats
from alexnet.data.windows import cut_windows
from alexnet.recipe import DataRecipe

log = logging.getLogger("alexnet.data")


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


class BatchTransform:
    """On the device, a CropBatch -> float32 images (B, 3, c, c) or (B, 10, 3, c, c): minus the
    mean image's window of each crop (§2), plus the image's PCA lighting shift (§4.1), divided by
    the channel std when the recipe standardises.

    On CUDA each step is one operation on the whole batch, the mean's windows cut in one gather.
    On a CPU the same steps run crop by crop (per_image), so that each crop stays in cache
    between them, subtracting a view of the mean image (or of its mirror) instead of a copy:
    measured on 2 cores at batch 128 and 224 px, about a fifth of the time of whole-batch steps,
    which are bound by memory bandwidth there. The images keep the crops' memory order. Both
    give the same values. Where crops_native.py's compiled loop is built, the crop-by-crop steps
    are that loop, one call a batch, with the same bits. They run on one thread: each is too
    small for torch to gain from splitting it, and on a CPU busy with loader workers (or other
    jobs) every split step waits for a second thread to be scheduled (measured on 2 busy cores:
    20 ms a batch of 128 on one thread, 40-3000 ms on two). That includes the lighting shifts'
    (B, 3) x (3, 3) product: with 2 threads, while loader threads kept both cores busy, it took
    7.7 ms a batch, a fifth of the loader's time.
    """

    def __init__(
        self,
        recipe: DataRecipe,
        stats: DataStats,
        device: torch.device | str,
        *,
        lighting: bool,
        per_image: bool | None = None,
    ):
        check_sizes(recipe, stats)
        self.device = torch.device(device)
        self.lighting = lighting
        self.per_image = self.device.type == "cpu" if per_image is None else per_image
        self.reused = ReusedImages()  # where the crop-by-crop steps write
        self.crop_size = recipe.crop_size
        self.mean_image = stats.mean_image.to(self.device)[None]  # (1, 3, S, S)
        self.mean_pixels = self.mean_image[0].permute(1, 2, 0).contiguous()  # (S, S, 3)
        self.mirrored_mean_pixels = self.mean_pixels.flip(1)  # (S, S, 3)
        self.eigenvalues = stats.eigenvalues.to(self.device)  # (3,)
        self.eigenvectors = stats.eigenvectors.to(self.device)  # (3, 3)
        standardised = recipe.input_scale == "standardised"
        self.channel_std = stats.channel_std.to(self.device).view(3, 1, 1) if standardised else None

    def __call__(self, batch: CropBatch) -> torch.Tensor:
        windows = batch.windows.to(self.device, non_blocking=True)  # (B, [10,] 3)
        if batch.lengths is not None:  # JPEG bytes: decode the batch here, then cut
            crops = cut_windows(self._decode(batch), windows, self.crop_size)
        else:
            crops = batch.pixels.to(self.device, non_blocking=True)
        alpha = batch.alpha.to(self.device, non_blocking=True) if self.lighting else None
        if self.per_image:
            threads = torch.get_num_threads()
            torch.set_num_threads(1)
            try:
                images = self.reused.like(crops)  # the crops' memory order
                shift = self._shift(alpha)
                if crops_native.takes(crops):  # the same steps, compiled: one call a batch
                    crops_native.transform(
                        crops, windows, self.mean_pixels, self.mirrored_mean_pixels, shift,
                        self.channel_std, out=images,
                    )  # fmt: skip
                else:
                    self._crop_by_crop(crops, windows, shift, out=images)
                return images
            finally:
                torch.set_num_threads(threads)
        shift = self._shift(alpha)
        images = crops.float()
        mean = torch.zeros(windows.shape[:-1], dtype=torch.long, device=self.device)
        images -= cut_windows(self.mean_image, windows, self.crop_size, which=mean)
        if shift is not None:
            images += shift.view(len(shift), *[1] * (images.dim() - 4), 3, 1, 1)
        if self.channel_std is not None:
            images /= self.channel_std
        return images

    def _shift(self, alpha: torch.Tensor | None) -> torch.Tensor | None:
        """Each image's lighting shift (B, 3) for its draws α (B, 3); None without lighting."""
        return None if alpha is None else lighting_shift(alpha, self.eigenvalues, self.eigenvectors)

    def _decode(self, batch: CropBatch) -> torch.Tensor:
        """(B, 3, S, S) uint8 on the device from the batch's JPEG bytes, decoded together."""
        from torchvision.io import ImageReadMode, decode_jpeg  # here: importing torchvision

        # costs 1.5-3 s (it loads torch._dynamo), which every command would otherwise pay
        jpegs = list(torch.split(batch.pixels, batch.lengths.tolist()))
        if self.device.type == "cuda":
            # nvJPEG's hardware engine writes its outputs without waiting for the stream, into
            # blocks the caching allocator may have just freed under queued kernels
            # (pytorch/vision#9606): let the queued work finish first.
            torch.cuda.current_stream(self.device).synchronize()
        try:
            decoded = decode_jpeg(jpegs, mode=ImageReadMode.RGB, device=self.device)
        except RuntimeError as error:
            raise DataError(
                f"cannot decode a batch of the prepared store's JPEGs ({error}); prepare the "
                "store again, or set run.gpu_decode=false"
            ) from None
        return torch.stack(decoded)

    def _crop_by_crop(self, crops, windows, shift, out: torch.Tensor) -> None:
        """The images into `out` (the crops' shape and memory order), each crop as (c, c, 3)
        pixels, the loader's memory order: every step runs along rows of c·3 adjacent values, a
        colour's shift and std tiled along a row."""
        size, crop = self.mean_image.shape[-1], self.crop_size
        crops_per_image = windows[0].numel() // 3  # 1, or 10 for ten crops
        flat_images = out.view(-1, 3, crop, crop).permute(0, 2, 3, 1)  # (N, c, c, 3)
        flat_crops = crops.reshape(-1, 3, crop, crop).permute(0, 2, 3, 1)
        if shift is not None:
            shift = shift[:, None].expand(len(shift), crop, 3).contiguous()  # (B, c, 3)
        std = None if self.channel_std is None else self.channel_std.view(1, 3).expand(crop, 3)
        for k, (top, left, flipped) in enumerate(windows.view(-1, 3).tolist()):
            if flipped:  # the mirror of window (top, left) is window (top, S - left - c) mirrored
                mean = self.mirrored_mean_pixels[top : top + crop, size - left - crop : size - left]
            else:
                mean = self.mean_pixels[top : top + crop, left : left + crop]
            torch.sub(flat_crops[k], mean, out=flat_images[k])
            if shift is not None:
                flat_images[k] += shift[k // crops_per_image]
            if std is not None:
                flat_images[k] /= std


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
        for crops, labels, skipped in self.loader:
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
    activation for the backward pass; at 64 px on 2 CPU cores the net ran forward at 1,111
    img/s at 128 against 823 at 32."""
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
    **loader_options,
) -> DeviceBatches:
    """Batches of `source` as the net consumes them; loader_options go to loader.make_loader
    (workers, seed, epoch, rank, world)."""
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
    return DeviceBatches(loader, BatchTransform(recipe, stats, device, lighting=lighting))


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
