import pytest
import torch
from torch import nn

from alexnet.data.batches import preprocess
from alexnet.data.loading.windows import distinct_ten_crops, ten_crop_views
from alexnet.evaluate import (
    average_ten_crop,
    class_probabilities,
    evaluate,
    images_per_batch,
)
from alexnet.placement import Placement
from alexnet.recipe import DataRecipe, RunRecipe
from tests.data.test_preprocess import gradient_image, zero_stats


def ten_crops(image_size: int, crop_size: int, images: int = 3) -> torch.Tensor:
    """(B, 10, 3, crop, crop) ten crops (§4.1) of different gradient images, zero statistics."""
    recipe = DataRecipe(image_size=image_size, crop_size=crop_size, input_scale="raw")
    stats = zero_stats(image_size)
    pictures = [gradient_image(image_size).rotate(90 * k) for k in range(images)]
    return preprocess(pictures, recipe, stats, ten_crop=True)


def pixel_distinct_views(crops: torch.Tensor) -> list[int]:
    """The first of each group of the ten views whose pixels are equal in every image."""
    kept: list[int] = []
    for view in range(crops.shape[1]):
        if not any(torch.equal(crops[:, earlier], crops[:, view]) for earlier in kept):
            kept.append(view)
    return kept


def test_an_image_the_size_of_its_crop_has_two_distinct_views():
    views = ten_crop_views(6, 6)
    assert views.kept == [0, 5] and views.counts == [5, 5]  # centre, and its mirror
    assert views.slots == [0] * 5 + [1] * 5
    views = ten_crop_views(8, 6)
    assert views.kept == list(range(10)) and views.counts == [1] * 10
    assert views.slots == list(range(10))


@pytest.mark.parametrize("image_size", [6, 8])
def test_class_probabilities_of_distinct_views_equal_the_mean_over_all_ten(image_size):
    torch.manual_seed(0)
    crops = ten_crops(image_size, 6)  # (3, 10, 3, 6, 6)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 6 * 6, 4)).eval()
    placement = Placement.for_run(RunRecipe(device="cpu"))
    with torch.no_grad():
        every_view = average_ten_crop(model(crops.flatten(0, 1)))  # all ten forwarded
        probabilities = class_probabilities(model, crops, placement, ten_crop_views(image_size, 6))
    torch.testing.assert_close(probabilities, every_view, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("image_size, distinct", [(6, 2), (7, 8), (8, 10), (64, 2), (256, 10)])
def test_a_ten_crop_batch_holds_as_many_images_as_keep_its_distinct_crops_within_the_batch(
    image_size, distinct
):
    """The views that differ in the pixels of a batch are those `ten_crop_views` finds from the
    sizes (7 px: the centre of a 1 px margin rounds onto the top-left corner)."""
    crop = 6 if image_size < 64 else image_size - 32 * (image_size == 256)
    assert distinct_ten_crops(image_size, crop) == distinct
    if image_size < 64:
        assert pixel_distinct_views(ten_crops(image_size, crop)) == (
            ten_crop_views(image_size, crop).kept
        )
    recipe = DataRecipe(image_size=image_size, crop_size=crop)
    assert images_per_batch(128, True, recipe) == 128 // distinct
    assert images_per_batch(128, False, recipe) == 128


@pytest.mark.parametrize("image_size", [6, 8])
def test_one_ten_crop_pass_gives_the_centre_crops_figures_too(image_size):
    """The centre crop's figures read from its view among the ten equal a centre-crop pass."""
    torch.manual_seed(0)
    recipe = DataRecipe(image_size=image_size, crop_size=6, input_scale="raw")
    pictures = [gradient_image(image_size).rotate(90 * k) for k in range(3)]
    centre = preprocess(pictures, recipe, zero_stats(image_size))  # (3, 3, 6, 6)
    labels = torch.tensor([0, 1, 3])
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 6 * 6, 4)).eval()
    placement = Placement.for_run(RunRecipe(device="cpu"))
    ten = [(ten_crops(image_size, 6), labels, 0)]
    one_pass = evaluate(model, ten, placement, views=ten_crop_views(image_size, 6))
    assert list(one_pass) == ["centre crop", "ten crops"]
    centre_pass = evaluate(model, [(centre, labels, 0)], placement)
    assert list(centre_pass) == ["centre crop"]
    for key, value in centre_pass["centre crop"].items():
        assert one_pass["centre crop"][key] == pytest.approx(value, rel=1e-6), key
