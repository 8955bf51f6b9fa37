"""The compiled loop for a batch's crops (data/transform/cpu_kernel.py, .c): values against a
float64 formula written out pixel by pixel, the same bits as BatchTransform's torch operations,
which crops it takes, and the torch operations when it cannot be built."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from test_batches import SIZE, random_stats

from alexnet.data.loading.items import CropBatch, channels_last_empty
from alexnet.data.transform import cpu_kernel
from alexnet.data.transform.batch_transform import BatchTransform
from alexnet.recipe import DataRecipe

CROP = 7


@pytest.fixture
def loop():
    if cpu_kernel.library() is None:
        pytest.skip("no C compiler here: the torch operations run instead (tested below)")
    return cpu_kernel


def random_batch(images: int, views: int, seed: int = 0) -> CropBatch:
    """uint8 crops (images, [views,] 3, c, c) in the loader's order, random windows (some
    mirrored) and lighting draws."""
    generator = torch.Generator().manual_seed(seed)
    shape = (images, 3, CROP, CROP) if views == 1 else (images, views, 3, CROP, CROP)
    crops = channels_last_empty(shape, torch.uint8)
    crops.copy_(torch.randint(0, 256, shape, dtype=torch.uint8, generator=generator))
    corner = torch.randint(0, SIZE - CROP + 1, (*shape[:-3], 2), generator=generator)
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


def transform_for(standardised: bool, lighting: bool) -> BatchTransform:
    scale = "standardised" if standardised else "raw"
    recipe = DataRecipe(image_size=SIZE, crop_size=CROP, input_scale=scale)
    return BatchTransform(recipe, random_stats(), "cpu", lighting=lighting)


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
    transform = transform_for(standardised, lighting)
    calls = []
    compiled = loop.transform
    monkeypatch.setattr(loop, "transform", lambda *a, **o: calls.append(1) or compiled(*a, **o))
    ours = transform(batch)
    monkeypatch.setattr(loop, "ENABLED", False)
    theirs = transform(batch)
    assert calls == [1] and torch.equal(ours, theirs)


def test_it_takes_only_uint8_cpu_crops_in_the_loaders_order(loop, monkeypatch):
    crops = random_batch(2, 1).pixels
    assert loop.takes(crops)
    with pytest.raises(ValueError, match="memory order"):
        loop.transform(crops, torch.zeros(2, 3), *[torch.zeros(9, 9, 3)] * 2, None, None,
                       out=torch.empty(crops.shape))  # fmt: skip
    assert not loop.takes(crops.contiguous())
    assert not loop.takes(crops.float())
    monkeypatch.setattr(loop, "ENABLED", False)
    assert not loop.takes(crops)


def test_without_a_compiler_the_torch_operations_run_with_one_warning(
    monkeypatch, tmp_path, caplog
):
    monkeypatch.setenv("ALEXNET_CACHE", str(tmp_path))
    monkeypatch.setenv("CC", str(tmp_path / "no-such-compiler"))
    cpu_kernel.library.cache_clear()
    try:
        batch = random_batch(3, 1)
        transform = transform_for(True, True)
        with caplog.at_level(logging.WARNING, logger="alexnet.native"):
            images = [transform(batch) for _ in range(2)]
    finally:
        cpu_kernel.library.cache_clear()  # the next test finds the real one
    warnings = [r for r in caplog.records if "loop for a batch's crops is unavailable" in r.message]
    assert len(warnings) == 1
    shift = transform._shift(batch.alpha)
    expected = formula(batch, random_stats(), shift, transform.channel_std.view(3))
    np.testing.assert_allclose(images[1].double().numpy(), expected, rtol=1e-6, atol=1e-4)
