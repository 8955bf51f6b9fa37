"""Counted dropout (§4.2, ops/dropout.py): the hash against a uint32 reference, the masks'
statistics, and masks that depend on (seed, step, layer, global sample, feature) and on nothing
else: not on how a batch is cut into shares, nor a layer into towers."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from alexnet import AlexNet
from alexnet.ops.dropout import CountedDropout, DropoutCounter, counter_key, kept, mix32


def reference_mix32(words: np.ndarray) -> np.ndarray:
    """The mix in uint32 arithmetic, where products wrap by themselves."""
    x = words.astype(np.uint32)
    with np.errstate(over="ignore"):
        x ^= x >> np.uint32(16)
        x *= np.uint32(0x21F0AAAD)
        x ^= x >> np.uint32(15)
        x *= np.uint32(0x735A2D97)
        x ^= x >> np.uint32(15)
    return x


def test_the_mix_matches_uint32_arithmetic_on_tensors_and_python_ints():
    words = np.random.default_rng(0).integers(0, 2**32, size=10_000, dtype=np.uint64)
    words[:3] = [0, 1, 2**32 - 1]
    expected = reference_mix32(words).astype(np.int64)
    got = mix32(torch.from_numpy(words.astype(np.int64)))
    assert torch.equal(got, torch.from_numpy(expected))
    assert [mix32(int(w)) for w in words[:100]] == expected[:100].tolist()


def masks(p=0.5, samples=256, features=4096, seed=0, step=1, layer=6, first_sample=0,
          first_feature=0) -> torch.Tensor:  # fmt: skip
    key = torch.tensor(counter_key(seed, step, layer))
    return kept(key, torch.tensor(first_sample), samples, features, first_feature, p, "cpu")


@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_each_unit_is_dropped_with_probability_p(p):
    keep = masks(p).double()
    n = keep.numel()  # 1M units: the binomial's σ is at most 5e-4
    assert abs(keep.mean().item() - (1 - p)) < 5 * (p * (1 - p) / n) ** 0.5


def correlation(a: torch.Tensor, b: torch.Tensor) -> float:
    return torch.corrcoef(torch.stack([a.flatten().double(), b.flatten().double()]))[0, 1].item()


def test_masks_of_neighbours_steps_layers_and_seeds_are_uncorrelated():
    keep = masks()
    limit = 5 / keep.numel() ** 0.5  # 5σ of the correlation of independent coin flips
    pairs = {
        "next sample": (keep[:-1], keep[1:]),
        "next feature": (keep[:, :-1], keep[:, 1:]),
        "next step": (keep, masks(step=2)),
        "other layer": (keep, masks(layer=7)),
        "other seed": (keep, masks(seed=1)),
        "seed + 2^32": (keep, masks(seed=2**32)),
    }
    for name, (a, b) in pairs.items():
        assert abs(correlation(a, b)) < limit, name


def test_a_batch_cut_into_shares_or_halves_gets_the_masks_of_the_whole():
    whole = masks(samples=8, features=10)
    shares = [masks(samples=4, features=10, first_sample=s) for s in (0, 4)]
    assert torch.equal(torch.cat(shares), whole)  # two ranks, each half of the batch
    halves = [masks(samples=8, features=5, first_feature=f) for f in (0, 5)]
    assert torch.equal(torch.cat(halves, dim=1), whole)  # two towers, each half of the layer


def counted(p=0.5, layer=6, *, seed=0, step=1, first_sample=0) -> CountedDropout:
    dropout = CountedDropout(p, layer=layer)
    dropout.count(seed, step, first_sample)
    return dropout


def test_counted_dropout_scales_the_kept_units_and_zeroes_the_others():
    x = torch.rand(8, 3, 5) + 1  # no zeros of its own
    y = counted(0.25)(x)
    keep = masks(0.25, samples=8, features=15).view(8, 3, 5)
    assert torch.equal(y != 0, keep)
    torch.testing.assert_close(y[keep], x[keep] / 0.75)  # float32's rounding of 1/(1 - p)


def test_the_gradient_goes_through_the_kept_units_only():
    x = torch.rand(6, 20, requires_grad=True)
    counted(0.5)(x).sum().backward()
    keep = masks(samples=6, features=20)
    assert torch.equal(x.grad, keep.float() * 2)


def test_eval_mode_and_p_0_are_the_identity():
    x = torch.rand(4, 9)
    assert counted(0.5).eval()(x) is x
    assert counted(0.0)(x) is x


def test_until_counted_it_draws_as_nn_dropout():
    x = torch.rand(16, 32)
    torch.manual_seed(3)
    expected = F.dropout(x, 0.5, training=True)
    torch.manual_seed(3)
    assert torch.equal(CountedDropout(0.5, layer=6)(x), expected)


def test_the_counter_sets_every_layer_of_a_network_and_the_weights_ignore_it():
    model = AlexNet(4, "paper", dropout=0.5)
    counter = DropoutCounter.of(model, seed=7, first_sample=16)
    assert [layer.layer for layer in counter.layers] == [6, 7]
    counter.before_step(12)
    for layer in counter.layers:
        assert layer.counted
        assert layer.key.item() == counter_key(7, 12, layer.layer)
        assert layer.first_sample.item() == 16
    assert not any("key" in name or "first_sample" in name for name in model.state_dict())
    owt = AlexNet(1000, "owt")  # torchvision's keys, nothing more (its dropout: layers 6, 7)
    assert all(isinstance(m, CountedDropout) for m in owt.classifier if isinstance(m, nn.Dropout))


def test_the_same_step_repeats_its_masks_and_the_next_step_does_not():
    model = AlexNet(3, "paper", dropout=0.5).train()
    counter = DropoutCounter.of(model, seed=0)
    x = torch.randn(2, 3, 67, 67)
    outputs = []
    with torch.no_grad():
        for step in (1, 1, 2):
            counter.before_step(step)
            outputs.append(model(x))
    assert torch.equal(outputs[0], outputs[1])
    assert not torch.equal(outputs[1], outputs[2])
