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
    """On the device, a CropBatch -> float32 images (B, 3, c, c) or (B, 10, 3, c, c) in the
    crops' memory order: minus the mean image's window of each crop (§2), plus the image's PCA
    lighting shift (§4.1), divided by the channel std when the recipe standardises.

    Two paths, one arithmetic: each step as one torch operation on the whole batch (the mean's
    windows cut in one gather), or, with `native_kernels` on a CPU, all steps in one compiled
    loop over each crop (cpu_kernel.py), with the same bits: on a CPU the whole-batch steps are
    bound by memory bandwidth, and the loop reads each crop once. The loop and the lighting
    product run on one thread: on a CPU shared with loader threads every split step would wait
    for a second thread to be scheduled.
    """

    def __init__(
        self,
        recipe: DataRecipe,
        stats: DataStats,
        device: torch.device | str,
        *,
        lighting: bool,
        native_kernels: bool = False,
    ):
        check_sizes(recipe, stats)
        self.device = torch.device(device)
        self.lighting = lighting
        self.native_kernels = native_kernels
        self.reused = ReusedImages()  # where the compiled loop writes
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
        if self.native_kernels and cpu_kernel.takes(crops):
            threads = torch.get_num_threads()
            torch.set_num_threads(1)
            try:
                images = self.reused.like(crops)  # the crops' memory order
                cpu_kernel.transform(
                    crops, windows, self.mean_pixels, self.mirrored_mean_pixels,
                    self._shift(alpha), self.channel_std, out=images,
                )  # fmt: skip
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

        # loads torch._dynamo, a slow import every command would otherwise pay
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
