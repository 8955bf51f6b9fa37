import pytest
import torch
from torch import nn

from alexnet.data.batches import preprocess
from alexnet.data.windows import distinct_ten_crops
from alexnet.evaluate import (
    average_ten_crop,
    class_probabilities,
    distinct_views,
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


def test_an_image_the_size_of_its_crop_has_two_distinct_views():
    views, counts, slots = distinct_views(ten_crops(6, 6))
    assert views.tolist() == [0, 5] and counts.tolist() == [5, 5]  # centre, and its mirror
    assert slots == [0] * 5 + [1] * 5
    views, counts, slots = distinct_views(ten_crops(8, 6))
    assert views.tolist() == list(range(10)) and counts.tolist() == [1] * 10
    assert slots == list(range(10))


@pytest.mark.parametrize("image_size", [6, 8])
def test_class_probabilities_of_distinct_views_equal_the_mean_over_all_ten(image_size):
    torch.manual_seed(0)
    crops = ten_crops(image_size, 6)  # (3, 10, 3, 6, 6)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 6 * 6, 4)).eval()
    placement = Placement.for_run(RunRecipe(device="cpu"))
    with torch.no_grad():
        every_view = average_ten_crop(model(crops.flatten(0, 1)))  # all ten forwarded
        probabilities = class_probabilities(model, crops, placement)
    torch.testing.assert_close(probabilities, every_view, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("image_size, distinct", [(6, 2), (7, 8), (8, 10), (64, 2), (256, 10)])
def test_a_ten_crop_batch_holds_as_many_images_as_keep_its_distinct_crops_within_the_batch(
    image_size, distinct
):
    """The views `distinct_views` finds in a batch are those `distinct_ten_crops` counts from the
    sizes (7 px: the centre of a 1 px margin rounds onto the top-left corner)."""
    crop = 6 if image_size < 64 else image_size - 32 * (image_size == 256)
    assert distinct_ten_crops(image_size, crop) == distinct
    if image_size < 64:
        assert len(distinct_views(ten_crops(image_size, crop))[0]) == distinct
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
    one_pass = evaluate(model, [(ten_crops(image_size, 6), labels, 0)], placement)
    assert list(one_pass) == ["centre crop", "ten crops"]
    centre_pass = evaluate(model, [(centre, labels, 0)], placement)
    assert list(centre_pass) == ["centre crop"]
    for key, value in centre_pass["centre crop"].items():
        assert one_pass["centre crop"][key] == pytest.approx(value, rel=1e-6), key
