"""The compiled loop for a batch's crops (data/transform/cpu_kernel.py, .c): values against a
float64 formula written out pixel by pixel, the same bits as BatchTransform's torch operations
(at the training recipes' shapes too), which crops it takes, and the torch operations when it
is not built."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_batches import SIZE, random_stats

from alexnet.data.loading.items import CropBatch, channels_last_empty
from alexnet.data.transform import cpu_kernel
from alexnet.data.transform.batch_transform import BatchTransform
from alexnet.placement.kernels import build_kernels
from alexnet.recipe import DataRecipe

CROP = 7


@pytest.fixture
def loop():
    if not build_kernels(required=False):
        pytest.skip("no C compiler here: the torch operations run instead (tested below)")
    return cpu_kernel


def random_batch(images: int, views: int, seed: int = 0, crop: int = CROP, size: int = SIZE):
    """uint8 crops (images, [views,] 3, c, c) in the loader's order, random windows (some
    mirrored) and lighting draws: a CropBatch."""
    generator = torch.Generator().manual_seed(seed)
    shape = (images, 3, crop, crop) if views == 1 else (images, views, 3, crop, crop)
    crops = channels_last_empty(shape, torch.uint8)
    crops.copy_(torch.randint(0, 256, shape, dtype=torch.uint8, generator=generator))
    corner = torch.randint(0, size - crop + 1, (*shape[:-3], 2), generator=generator)
    flipped = torch.arange(corner[..., :1].numel()).view(*shape[:-3], 1) % 2  # half mirrored
    alpha = torch.randn(images, 3, generator=generator) * 0.1
    return CropBatch(crops, torch.cat([corner, flipped], -1), alpha)


def formula(batch: CropBatch, stats, shift, std) -> np.ndarray:
    """float64, crop by crop and pixel by pixel: crop - mean window (read backwards when
    mirrored) + the image's shift, / std."""
    crops = batch.pixels.numpy().astype(np.float64)
    mean = stats.mean_image.double().numpy()  # (3, S, S)
    out = np.empty(crops.shape)
    for index in np.ndindex(*crops.shape[:-3]):
        top, left, flipped = batch.windows[index].tolist()
        for row in range(CROP):
            for column in range(CROP):
                source = left + (CROP - 1 - column if flipped else column)
                value = crops[index][:, row, column] - mean[:, top + row, source]
                if shift is not None:
                    value = value + shift[index[0]].double().numpy()
                if std is not None:
                    value = value / std.double().numpy()
                out[index][:, row, column] = value
    return out


def transform_for(
    standardised: bool, lighting: bool, native: bool = True, crop: int = CROP, size: int = SIZE
) -> BatchTransform:
    scale = "standardised" if standardised else "raw"
    recipe = DataRecipe(image_size=size, crop_size=crop, input_scale=scale)
    stats = random_stats(size)
    return BatchTransform(recipe, stats, "cpu", lighting=lighting, native_kernels=native)


@pytest.mark.parametrize("views", [1, 10])
@pytest.mark.parametrize("standardised, lighting", [(True, True), (False, True), (True, False)])
def test_the_loop_follows_the_formula(loop, views, standardised, lighting):
    batch = random_batch(4, views)
    transform = transform_for(standardised, lighting)
    shift = transform._shift(batch.alpha) if lighting else None
    std = transform.channel_std.view(3) if standardised else None
    images = torch.empty_like(batch.pixels, dtype=torch.float32)  # the crops' memory order
    loop.transform(
        batch.pixels, batch.windows, transform.mean_pixels, transform.mirrored_mean_pixels, shift,
        transform.channel_std, out=images,
    )  # fmt: skip
    expected = formula(batch, random_stats(), shift, std)
    np.testing.assert_allclose(images.double().numpy(), expected, rtol=1e-6, atol=1e-4)


@pytest.mark.parametrize("views", [1, 10])
@pytest.mark.parametrize("standardised, lighting", [(True, True), (False, False)])
def test_the_same_bits_as_the_torch_operations(loop, views, standardised, lighting, monkeypatch):
    batch = random_batch(5, views, seed=1)
    calls = []
    compiled = loop.transform
    monkeypatch.setattr(loop, "transform", lambda *a, **o: calls.append(1) or compiled(*a, **o))
    ours = transform_for(standardised, lighting)(batch)
    theirs = transform_for(standardised, lighting, native=False)(batch)
    assert calls == [1] and torch.equal(ours, theirs)


@pytest.mark.parametrize("crop, size, standardised", [(224, 256, False), (64, 64, True)])
def test_the_same_bits_at_the_training_recipes_shapes(loop, crop, size, standardised):
    """The paper's 224 crops of 256 px images (raw scale, lighting) and the small recipes' 64 px
    (standardised): built with -ffp-contract=off, the loop rounds each step as torch does."""
    batch = random_batch(4, 1, seed=2, crop=crop, size=size)
    ours = transform_for(standardised, True, crop=crop, size=size)(batch)
    theirs = transform_for(standardised, True, native=False, crop=crop, size=size)(batch)
    assert torch.equal(ours, theirs)


def test_it_takes_only_uint8_cpu_crops_in_the_loaders_order(loop, monkeypatch):
    crops = random_batch(2, 1).pixels
    assert loop.takes(crops)
    with pytest.raises(ValueError, match="memory order"):
        loop.transform(crops, torch.zeros(2, 3), *[torch.zeros(9, 9, 3)] * 2, None, None,
                       out=torch.empty(crops.shape))  # fmt: skip
    assert not loop.takes(crops.contiguous())
    assert not loop.takes(crops.float())


def test_without_the_kernels_built_the_torch_operations_run(monkeypatch):
    """A transform asked for the compiled loop in a process where it was never built (a
    library user who skipped build_kernels): the torch operations, the same values, nothing
    compiled on the way."""
    monkeypatch.setattr(cpu_kernel.native, "loaded", lambda kernel: None)
    batch = random_batch(3, 1)
    transform = transform_for(True, True)
    images = transform(batch)
    shift = transform._shift(batch.alpha)
    expected = formula(batch, random_stats(), shift, transform.channel_std.view(3))
    np.testing.assert_allclose(images.double().numpy(), expected, rtol=1e-6, atol=1e-4)
