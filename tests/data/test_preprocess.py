"""The paper's preprocessing for single images (§2, §4.1: data/downsample.py, data/batches.py's
`preprocess`, a batch of one of the arithmetic every batch gets) against hand-computed pixels."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from alexnet.data import DataError, DataStats
from alexnet.data.batches import preprocess
from alexnet.data.sources.downsample import Prepare
from alexnet.evaluate import average_ten_crop
from alexnet.recipe import DataRecipe


def eval_transform(recipe, stats, *, ten_crop=False):
    return lambda image: preprocess([image], recipe, stats, ten_crop=ten_crop)[0]


def train_transform(recipe, stats):
    return lambda image: preprocess([image], recipe, stats, train=True)[0]


def zero_stats(size: int) -> DataStats:
    """A zero mean image and unit std: the arithmetic leaves the pixels as they are."""
    return DataStats(size, torch.zeros(3, size, size), torch.ones(3), torch.ones(3), torch.eye(3))


def ramp(height: int, width: int, along: str) -> Image.Image:
    """Gray RGB image whose value is 10 * column (along="x") or 10 * row (along="y")."""
    x, y = np.meshgrid(np.arange(width), np.arange(height))
    values = 10 * (x if along == "x" else y)
    return Image.fromarray(np.repeat(values[:, :, None], 3, axis=2).astype(np.uint8))


@pytest.mark.parametrize("height, width, along", [(6, 12, "x"), (12, 6, "y")])
def test_prepare_rescales_the_short_side_and_keeps_the_centre(height, width, along):
    # Halving a linear ramp with a bilinear (triangle) filter: output pixel j sits at input
    # position 2j + 0.5, value 10 * (2j + 0.5) = 20j + 5, exact away from the borders.
    # 6x12 -> 3x6; the centre 3 columns of 6 start at round(1.5) = 2: values 45, 65, 85.
    prepared = Prepare(3)(ramp(height, width, along))[0].numpy()
    expected = np.array([45, 65, 85])
    assert prepared.shape == (3, 3)
    if along == "x":
        assert (prepared == expected[None, :]).all()
    else:
        assert (prepared == expected[:, None]).all()


def test_prepare_only_crops_when_the_short_side_already_fits():
    pixels = np.random.default_rng(0).integers(0, 256, (5, 9, 3), dtype=np.uint8)
    prepared = Prepare(5)(Image.fromarray(pixels))  # (3, 5, 5) uint8
    np.testing.assert_array_equal(
        prepared.numpy().transpose(1, 2, 0), pixels[:, 2:7]
    )  # (9 - 5) / 2 = 2 columns off


def test_prepare_upsamples_small_images():
    assert Prepare(72)(Image.new("RGB", (8, 8))).shape == (3, 72, 72)


@pytest.mark.parametrize("height, width", [(37, 53), (53, 37), (40, 40), (7, 11), (300, 257)])
@pytest.mark.parametrize("size", [16, 40, 64])
def test_prepare_is_torchvisions_resize_and_centre_crop(height, width, size):
    """Prepare runs torch's kernel itself (no torchvision import); torchvision's v2 resize of
    the shorter side, then its centre crop, is the reference, pixel for pixel."""
    from torchvision.transforms.v2 import InterpolationMode
    from torchvision.transforms.v2 import functional as tv

    pixels = np.random.default_rng(height * width).integers(0, 256, (height, width, 3), np.uint8)
    image = Image.fromarray(pixels)
    resized = tv.resize(tv.pil_to_tensor(image), [size], InterpolationMode.BILINEAR, antialias=True)
    expected = tv.center_crop(resized, [size, size])
    assert torch.equal(Prepare(size)(image), expected)


def test_to_float_keeps_0_255_values():
    pixels = torch.from_numpy(np.random.default_rng(1).integers(0, 256, (5, 5, 3), dtype=np.uint8))
    recipe = DataRecipe(image_size=5, crop_size=5, input_scale="raw")
    tensor = eval_transform(recipe, zero_stats(5))(Image.fromarray(pixels.numpy()))
    assert tensor.dtype == torch.float32 and tensor.shape == (3, 5, 5) and tensor.is_contiguous()
    np.testing.assert_array_equal(tensor.numpy(), pixels.permute(2, 0, 1).numpy())


def test_ten_crop_positions_and_mirrors():
    image = torch.arange(3 * 7 * 7, dtype=torch.uint8).view(3, 7, 7)
    recipe = DataRecipe(image_size=7, crop_size=4, input_scale="raw")
    crops = eval_transform(recipe, zero_stats(7), ten_crop=True)(image)  # (10, 3, 4, 4)
    image = image.float()
    corners_and_centre = [
        image[:, 0:4, 0:4],  # top-left
        image[:, 0:4, 3:7],  # top-right
        image[:, 3:7, 0:4],  # bottom-left
        image[:, 3:7, 3:7],  # bottom-right
        image[:, 2:6, 2:6],  # centre: round((7-4)/2) = 2 rows and columns
    ]
    assert crops.shape == (10, 3, 4, 4)
    for k, crop in enumerate(corners_and_centre):
        assert torch.equal(crops[k], crop)
        assert torch.equal(crops[k + 5], crop[:, :, [3, 2, 1, 0]])  # its mirror


def test_average_ten_crop_averages_softmax_outputs_not_logits():
    logits = torch.tensor([[10.0, 0.0]] + [[0.0, 1.0]] * 9)  # one image, ten crops, two classes
    average = average_ten_crop(logits)
    p_first = np.exp(10) / (np.exp(10) + 1)
    p_rest = 1 / (1 + np.e)
    expected = (p_first + 9 * p_rest) / 10
    assert average.shape == (1, 2)
    assert average[0, 0].item() == pytest.approx(expected, rel=1e-6)
    assert logits.mean(dim=0).argmax() == 0 and average.argmax() == 1  # the two rules disagree
    assert torch.allclose(average_ten_crop(logits.view(1, 10, 2)), average)
    assert torch.allclose(average.sum(dim=1), torch.ones(1))


def test_subtract_mean_and_standardise():
    image = torch.full((3, 2, 2), 100, dtype=torch.uint8)
    mean = torch.stack([torch.full((2, 2), v) for v in (10.0, 20.0, 30.0)])
    stats = DataStats(2, mean, torch.tensor([1.0, 2.0, 10.0]), torch.ones(3), torch.eye(3))
    recipe = DataRecipe(image_size=2, crop_size=2, input_scale="raw")
    centred = eval_transform(recipe, stats)(image)
    assert torch.equal(centred[:, 0, 0], torch.tensor([90.0, 80.0, 70.0]))
    recipe.input_scale = "standardised"
    scaled = eval_transform(recipe, stats)(image)
    assert torch.equal(scaled[:, 1, 1], torch.tensor([90.0, 40.0, 7.0]))
    assert eval_transform(recipe, stats, ten_crop=True)(image).shape == (10, 3, 2, 2)


def stats_for(size: int, mean_value: float = 0.0) -> DataStats:
    return DataStats(
        image_size=size,
        mean_image=torch.full((3, size, size), mean_value),
        channel_std=torch.tensor([2.0, 4.0, 8.0]),
        eigenvalues=torch.tensor([4.0, 1.0, 0.25]),
        eigenvectors=torch.eye(3),
    )


def gradient_image(size: int) -> Image.Image:
    rng = np.random.default_rng(2)
    return Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8))


def test_eval_transform_is_the_centred_centre_crop():
    recipe = DataRecipe(image_size=8, crop_size=6, input_scale="raw")
    image = gradient_image(8)
    out = eval_transform(recipe, stats_for(8, mean_value=100.0))(image)
    expected = np.asarray(image).transpose(2, 0, 1)[:, 1:7, 1:7] - 100.0
    np.testing.assert_array_equal(out.numpy(), expected)


def test_eval_ten_crop_standardised_shape():
    recipe = DataRecipe(image_size=8, crop_size=6, input_scale="standardised")
    out = eval_transform(recipe, stats_for(8), ten_crop=True)(gradient_image(8))
    assert out.shape == (10, 3, 6, 6)
    raw = eval_transform(DataRecipe(image_size=8, crop_size=6), stats_for(8), ten_crop=True)
    expected = raw(gradient_image(8)) / torch.tensor([2.0, 4.0, 8.0]).view(3, 1, 1)
    assert torch.allclose(out, expected)


def test_train_transform_crops_a_window_of_the_centred_image():
    recipe = DataRecipe(image_size=8, crop_size=5, flip=True, pca_lighting=False)
    image = gradient_image(8)
    centred = np.asarray(image).transpose(2, 0, 1).astype(np.float32) - 50.0
    windows = [centred[:, i : i + 5, j : j + 5] for i in range(4) for j in range(4)]
    windows += [window[:, :, ::-1] for window in windows]
    transform = train_transform(recipe, stats_for(8, mean_value=50.0))
    seen = set()
    for seed in range(40):
        torch.manual_seed(seed)
        out = transform(image).numpy()
        assert out.shape == (3, 5, 5)
        matches = [k for k, window in enumerate(windows) if np.array_equal(out, window)]
        assert len(matches) == 1
        seen.add(matches[0])
    assert len(seen) > 10  # positions and flips vary
    assert any(k >= 16 for k in seen) and any(k < 16 for k in seen)


def test_train_transform_without_flip_never_mirrors():
    recipe = DataRecipe(image_size=6, crop_size=6, flip=False, pca_lighting=False)
    image = gradient_image(6)
    expected = np.asarray(image).transpose(2, 0, 1).astype(np.float32)
    for seed in range(10):
        torch.manual_seed(seed)
        np.testing.assert_array_equal(
            train_transform(recipe, stats_for(6))(image).numpy(), expected
        )


def test_train_transform_adds_one_lighting_shift_per_image():
    recipe = DataRecipe(image_size=6, crop_size=6, flip=False, pca_lighting=True)
    image = gradient_image(6)
    torch.manual_seed(0)
    original = torch.from_numpy(np.array(image)).permute(2, 0, 1).float()
    shift = train_transform(recipe, stats_for(6))(image) - original  # (3, 6, 6)
    per_channel = shift.flatten(1)
    assert torch.allclose(per_channel, per_channel[:, :1].expand_as(per_channel), atol=1e-4)
    assert per_channel.abs().max() > 0


def test_mismatched_sizes_are_data_errors():
    with pytest.raises(DataError, match="computed at 8 px"):
        train_transform(DataRecipe(image_size=16, crop_size=8), stats_for(8))(gradient_image(8))
    with pytest.raises(DataError, match="crop size 9"):
        eval_transform(DataRecipe(image_size=8, crop_size=9), stats_for(8))(gradient_image(8))
