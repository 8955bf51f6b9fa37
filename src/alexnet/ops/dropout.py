"""Dropout (§4.2) whose masks do not depend on who computes them: counted, not drawn.

Each unit's keep-or-drop is a hash of (seed, step, layer, the sample's index in the global
batch, the feature's index in the layer), so one process, N processes taking shares of each
batch, and §3.2's towers each computing half of fc6's and fc7's features all apply the same
masks, and a run resumed mid-epoch applies the masks it would have applied. The hash is integer
tensor arithmetic (values below 2^32 in int64, multipliers below 2^31, so no product overflows):
the same bits on every device, no generator state, and one fused kernel under `torch.compile`.

`CountedDropout` draws from torch's generator, as `nn.Dropout`, until a trainer tells it where it
is (`DropoutCounter.before_step`): a network trained in a loop of one's own keeps plain dropout.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

WORD = 0xFFFFFFFF  # the hash works on 32-bit words
FEATURE_SALT = 0x9E3779B9  # so feature 0 does not hash to 0


def mix32(x):
    """A bijective xorshift-multiply mix of 32-bit words (murmur3's finaliser's shape), on a
    Python int or an int64 tensor of values below 2^32."""
    x = x ^ (x >> 16)
    x = (x * 0x21F0AAAD) & WORD
    x = x ^ (x >> 15)
    x = (x * 0x735A2D97) & WORD
    return x ^ (x >> 15)


def counter_key(*numbers: int) -> int:
    """One 32-bit word from integers of any size (seed, step, layer), each folded in by words."""
    key = 0
    for number in numbers:
        key = mix32(key ^ (number & WORD))
        key = mix32(key ^ ((number >> 32) & WORD))
    return key


def kept(key, first_sample, samples: int, features: int, first_feature: int, p: float, device):
    """(samples, features) bools: which units a layer keeps, for samples first_sample... of the
    global batch and features first_feature... of the layer; each is dropped with probability p
    (to 2^-32)."""
    rows = torch.arange(samples, device=device) + first_sample  # (B,) global sample indices
    rows = mix32(rows ^ key)  # (B,)
    columns = torch.arange(first_feature, first_feature + features, device=device)
    columns = mix32(columns ^ FEATURE_SALT)  # (F,)
    units = mix32(rows[:, None] ^ columns[None, :])  # (B, F), uniform on [0, 2^32)
    return units >= round(p * 2**32)


class CountedDropout(nn.Dropout):
    """Dropout with probability p on a (B, ...) input, each unit's mask counted (module docs).

    `layer` names the mask's stream (the fully connected layer it belongs to). `key` and
    `first_sample` are buffers, not saved with the weights, so a torchvision state_dict still
    loads and a compiled step reads their new values without recompiling.
    """

    def __init__(self, p: float = 0.5, *, layer: int) -> None:
        super().__init__(p)
        self.layer, self.counted = layer, False
        self.register_buffer("key", torch.zeros((), dtype=torch.int64), persistent=False)
        self.register_buffer("first_sample", torch.zeros((), dtype=torch.int64), persistent=False)

    def count(self, seed: int, step: int, first_sample: int) -> None:
        """Use the masks of `step` of a run seeded `seed`, this input's sample 0 being the global
        batch's `first_sample`. Fills on the buffers' device: no wait for it."""
        self.counted = True
        self.key.fill_(counter_key(seed, step, self.layer))
        self.first_sample.fill_(first_sample)

    def forward(self, x: torch.Tensor, first_feature: int = 0) -> torch.Tensor:
        """`first_feature`: the layer's index of this input's feature 0 (a tower's half, §3.2)."""
        if not self.training or self.p == 0:
            return x
        if not self.counted:
            return super().forward(x)
        samples, features = x.shape[0], math.prod(x.shape[1:])
        keep = kept(self.key, self.first_sample, samples, features, first_feature, self.p, x.device)
        scale = 1 / (1 - self.p) if self.p < 1 else 0.0
        return x * (keep.view(x.shape) * scale).to(x.dtype)

    def extra_repr(self) -> str:
        return f"p={self.p}, layer={self.layer}"


@dataclass(frozen=True)
class DropoutCounter:
    """Tells a network's `CountedDropout` layers the step before each training step."""

    layers: tuple[CountedDropout, ...]
    seed: int
    first_sample: int  # this process's share of each global batch starts there

    @classmethod
    def of(cls, network: nn.Module, seed: int, first_sample: int = 0) -> DropoutCounter:
        layers = tuple(m for m in network.modules() if isinstance(m, CountedDropout))
        return cls(layers, seed, first_sample)

    def before_step(self, step: int) -> None:
        """The masks of the run's `step` (counted from 1 over all epochs)."""
        for layer in self.layers:
            layer.count(self.seed, step, self.first_sample)
