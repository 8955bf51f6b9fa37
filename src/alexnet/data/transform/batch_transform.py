"""`BatchTransform`: the one definition of a batch's float arithmetic (§2, §4.1), on the device
the batch is used on. It receives uint8 crops (loading/) and gives float images: minus each
crop's window of the training set's mean image (§2), plus each image's PCA lighting shift
(§4.1, lighting.py), divided by the channel std when the recipe standardises.
"""

from __future__ import annotations

import torch

from alexnet.data.lighting import lighting_shift
from alexnet.data.loading.items import CropBatch
from alexnet.data.loading.windows import cut_windows
from alexnet.data.sources.dataset import DataError
from alexnet.data.stats import DataStats
from alexnet.data.transform import cpu_kernel
from alexnet.data.transform.output_pool import ReusedImages
from alexnet.recipe import DataRecipe


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
    give the same values. Where cpu_kernel.py's compiled loop is built, the crop-by-crop steps
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
                if cpu_kernel.takes(crops):  # the same steps, compiled: one call a batch
                    cpu_kernel.transform(
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
