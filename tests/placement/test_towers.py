"""§3.2 model parallelism on two CPU "devices": the towers give the groups=2 network's logits and
gradients, exchange activations only into conv3, fc6-fc8 (and the LRN border), and checkpoints
keep the single-device layout.

Both towers sit on the CPU here, but every tensor still goes through the split layers and the
explicit exchanges. Logits are compared in eval mode; gradients in train mode, with dropout 0 and
with the paper's 0.5, whose masks each tower counts by the feature's index in the whole layer.
"""

import copy

import pytest
import torch
import torch.nn.functional as F

from alexnet import AlexNet
from alexnet.ops.dropout import DropoutCounter
from alexnet.optim import PaperSGD
from alexnet.placement.towers import (
    TwoTowers,
    load_optimizer_state,
    parse_devices,
    single_layout_optimizer_state,
)
from alexnet.recipe import RecipeError, apply_overrides
from alexnet.run import checkpoint
from alexnet.train import fit
from tests.test_train import tiny_recipe

CPUS = (torch.device("cpu"), torch.device("cpu"))
LOGIT_TOLERANCE = 1e-5  # relative to the largest logit; measured 2.4e-6 / 7.9 = 3e-7
GRADIENT_TOLERANCE = 1e-6  # relative to the layer's largest gradient; measured 4.8e-7 / 7.9
WEIGHT_TOLERANCE = 1e-4  # relative to a layer's largest weight, dropout 0.5; measured 1e-6-3e-6


@pytest.fixture(scope="module")
def pair():
    torch.manual_seed(0)
    model = AlexNet(5, "paper", dropout=0.0, init="kaiming")  # 5 classes: fc8 splits 3 + 2
    return model, TwoTowers(copy.deepcopy(model), CPUS)


@pytest.fixture(scope="module")
def images():
    return torch.randn(4, 3, 67, 67, generator=torch.Generator().manual_seed(1)) * 2


def max_difference(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a - b).abs().max().item()


def largest_relative_difference(a: dict, b: dict) -> float:
    """The largest difference of any weight, relative to the largest weight of its tensor."""
    return max(max_difference(a[k], b[k]) / a[k].abs().max().item() for k in a)


def test_the_towers_hold_figure_2s_halves(pair):
    _, towers = pair
    shapes = {name: (one.shape, two.shape) for name, one, two in towers.pairs()}
    assert shapes["features.0.weight"] == ((48, 3, 11, 11), (48, 3, 11, 11))  # conv1 0-47, 48-95
    assert shapes["features.4.weight"] == ((128, 48, 5, 5),) * 2  # conv2 reads its own tower
    assert shapes["features.8.weight"] == ((192, 256, 3, 3),) * 2  # conv3 reads both
    assert shapes["classifier.0.weight"] == ((2048, 9216),) * 2  # fc6: half the outputs each
    assert shapes["classifier.6.weight"] == ((3, 4096), (2, 4096))
    reads = [what for what, _ in towers.plan if what in ("reads both", "own tower")]
    assert (
        reads
        == ["reads both", "own tower", "reads both", "own tower", "own tower"] + ["reads both"] * 3
    )  # conv1 reads the image; the towers exchange into conv3, fc6, fc7, fc8


def test_logits_match_the_groups_2_network(pair, images):
    model, towers = pair
    model.eval(), towers.eval()
    with torch.no_grad():
        expected, got = model(images), towers(images)
    assert got.shape == expected.shape == (4, 5)
    assert max_difference(got, expected) <= LOGIT_TOLERANCE * expected.abs().max().item()


def test_the_lrn_border_is_an_exchange_the_single_device_network_needs(pair, images):
    """Where the two must part: towers that normalise only their own maps (the paper's GPUs)
    give other logits than the groups=2 network, whose LRN window crosses maps 47/48."""
    model, towers = pair
    model.eval(), towers.eval()
    apart = copy.copy(towers)
    apart._lrn = lambda lrn, one, two: (lrn(one), lrn(two))
    with torch.no_grad():
        expected, got = model(images), apart(images)
    assert max_difference(got, expected) > LOGIT_TOLERANCE * expected.abs().max().item()  # 5x


def gradient_differences(model, towers, images) -> dict[str, float]:
    """Each weight's largest gradient difference, relative to its largest gradient, after one
    training forward and backward of both networks (dropout: the masks of step 1)."""
    labels = torch.tensor([0, 1, 2, 4])
    for network in (model, towers):
        network.train()
        DropoutCounter.of(network, seed=0).before_step(1)
        network.zero_grad()
        F.cross_entropy(network(images), labels).backward()
    gradients = dict(model.named_parameters())
    differences = {}
    for name, one, two in towers.pairs():
        expected = gradients[name].grad
        scale = max(expected.abs().max().item(), 1e-3)
        differences[name] = max_difference(torch.cat([one.grad, two.grad]), expected) / scale
    return differences


def test_gradients_match_the_groups_2_network(pair, images):
    differences = gradient_differences(*pair, images)
    assert max(differences.values()) <= GRADIENT_TOLERANCE, differences


def test_with_dropout_each_tower_drops_the_units_the_single_device_network_drops(images):
    """Dropout 0.5 after fc6 and fc7, which each tower computes half of: the same gradients; and
    where they must part, towers that count their features from 0 each drop other units."""
    torch.manual_seed(0)
    model = AlexNet(5, "paper", dropout=0.5, init="kaiming")
    towers = TwoTowers(copy.deepcopy(model), CPUS)
    assert max(gradient_differences(model, towers, images).values()) <= GRADIENT_TOLERANCE
    apart = copy.copy(towers)
    apart.plan = [("each" if what == "dropout" else what, key) for what, key in towers.plan]
    assert max(gradient_differences(model, apart, images).values()) > 0.1


def test_checkpoints_keep_the_single_device_layout(pair):
    model, towers = pair
    single = towers.single_device()
    assert type(single) is AlexNet
    for name, tensor in model.state_dict().items():
        assert torch.equal(single.state_dict()[name], tensor), name
    optimizer = PaperSGD(towers.parameters(), lr=0.1)
    for parameter in towers.parameters():
        parameter.grad = torch.ones_like(parameter)
    optimizer.step()
    state = single_layout_optimizer_state(towers, optimizer)
    buffer = state["state"][0]["momentum_buffer"]  # PaperSGD's b = −v/ε
    assert buffer.shape == (96, 3, 11, 11)
    fresh = PaperSGD(towers.parameters(), lr=0.1)
    load_optimizer_state(towers, fresh, state)
    assert torch.equal(single_layout_optimizer_state(towers, fresh)["state"][0]["momentum_buffer"],
                       buffer)  # fmt: skip


def test_only_the_two_tower_network_splits():
    with pytest.raises(RecipeError, match="needs the two-tower 'paper' variant"):
        TwoTowers(AlexNet(3, "one-tower"), CPUS)
    with pytest.raises(RecipeError, match="expected two devices"):
        parse_devices("cpu")


def test_training_with_the_split_matches_one_device(colour_tree, tmp_path):
    """One epoch (3 steps) with --set run.model_parallel=cpu,cpu; the checkpoint is the
    single-device layout, close to the one-device run's, and resumes without the split."""
    settings = ["model.dropout=0"]
    fit(apply_overrides(tiny_recipe(colour_tree, 1), settings), tmp_path / "one", progress=False)
    split = apply_overrides(tiny_recipe(colour_tree, 1), [*settings, "run.model_parallel=cpu,cpu"])
    fit(split, tmp_path / "two", progress=False)
    one, two = checkpoint.load(tmp_path / "one"), checkpoint.load(tmp_path / "two")
    assert "cpu,cpu (two towers, §3.2)" in (tmp_path / "two" / "train.log").read_text()
    difference = max(max_difference(one["model"][k], two["model"][k]) for k in one["model"])
    assert difference <= 1e-6, difference
    longer = apply_overrides(tiny_recipe(colour_tree, 2), [*settings, "run.model_parallel="])
    fit(longer, tmp_path / "two", resume_from=two, progress=False)
    assert checkpoint.load(tmp_path / "two")["epoch"] == 2


def test_training_with_the_split_and_dropout_matches_one_device(colour_tree, tmp_path):
    """Two epochs (6 steps) with the paper's dropout 0.5, one device against the split."""
    for folder, split in (("one", ""), ("two", "cpu,cpu")):
        recipe = apply_overrides(tiny_recipe(colour_tree, 2), [f"run.model_parallel={split}"])
        assert recipe.model.dropout == 0.5
        fit(recipe, tmp_path / folder, progress=False)
    one, two = (checkpoint.load(tmp_path / folder)["model"] for folder in ("one", "two"))
    assert largest_relative_difference(one, two) < WEIGHT_TOLERANCE
