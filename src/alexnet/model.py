"""The network: AlexNet as §3 and Figure 2 of the paper build it, with its named variants.

Variants (all share one layout, `features` -> `avgpool` -> `classifier`, so that the `"owt"`
variant loads a `torchvision.models.alexnet` state_dict unchanged):

- `"paper"`: 96-256-384-384-256 kernels; conv2, conv4 and conv5 split into two towers
  (`groups=2`, §3.2), conv3 and the fully connected layers read both; LRN after the ReLU of
  conv1 and conv2 (§3.3); overlapping max-pool 3/2 (§3.4); dropout 0.5 on the outputs of fc6
  and fc7 (§4.2; in training, masks counted rather than drawn: ops/dropout.py); the paper's
  init (§5). 60,965,224 parameters with 1000 classes.
- `"one-tower"`: the same without groups. 62,378,344 parameters.
- `"half-width"`: one tower with half the kernels of every conv layer (48-128-192-192-128), the
  net §3.2 compares the two towers against ("half as many kernels in each convolutional layer
  trained on one GPU"); the fully connected layers stay 4096 wide, as the paper says nothing
  of halving them. 40,702,632 parameters.
- `"owt"`: torchvision's layout, the 2014 "one weird trick" net (64-192-384-256-256, no LRN,
  no groups, dropout before fc6 and fc7). 61,100,840 parameters.

conv1 uses padding 2 so that the paper's 224×224 input gives 55×55 (the arithmetic of 227 with
no padding). An adaptive average pool to 6×6 before fc6 is the identity at 224 and lets any
input from 63 px up through, so small data sets use the same net.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from alexnet.ops import local_response_norm
from alexnet.ops.dropout import CountedDropout

Variant = Literal["paper", "one-tower", "half-width", "owt"]
LRNConvention = Literal["paper", "cuda-convnet"]

# Kernels of the five conv layers.
_CONV_CHANNELS = {
    "paper": (96, 256, 384, 384, 256),
    "one-tower": (96, 256, 384, 384, 256),
    "half-width": (48, 128, 192, 192, 128),  # §3.2's one-GPU comparison
    "owt": (64, 192, 384, 256, 256),
}
_BIAS_ONE = {"conv2", "conv4", "conv5", "fc6", "fc7"}  # §5: biases initialised to 1


class LocalResponseNorm(nn.Module):
    """Local response normalization across channels (§3.3), with its α convention explicit.

    b[i] = a[i] / (k + α' · Σ_{j=max(0, i-n/2)}^{min(N-1, i+n/2)} a[j]²)^β

    - `convention="paper"` (the default): α' = α, the formula as printed in the paper.
    - `convention="cuda-convnet"`: α' = α / n, what Krizhevsky's cuda-convnet, Caffe and
      `torch.nn.LocalResponseNorm` compute. With the paper's α = 1e-4 this normalizes 5× less.

    The paper's values are n=5, k=2, α=1e-4, β=0.75. The sum runs over n/2 (integer) channels
    each side, clipped at the ends. It runs as one custom op with a closed-form backward
    (`alexnet.ops`): vectorised torch code on a CPU, or its compiled twin (the same bits) where
    `native_kernels` is set (`AlexNet.set_fast_paths`); Triton kernels on CUDA.
    """

    def __init__(
        self,
        size: int = 5,
        alpha: float = 1e-4,
        beta: float = 0.75,
        k: float = 2.0,
        convention: LRNConvention = "paper",
    ) -> None:
        super().__init__()
        if convention not in ("paper", "cuda-convnet"):
            raise ValueError(
                f"unknown LRN convention {convention!r}; use 'paper' or 'cuda-convnet'"
            )
        if size % 2 != 1:
            raise ValueError(f"LRN size must be odd so the window is symmetric, got {size}")
        self.size, self.alpha, self.beta, self.k, self.convention = size, alpha, beta, k, convention
        self.native_kernels = False  # the compiled CPU kernel, once built (ops/lrn_native.py)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        alpha = self.alpha if self.convention == "paper" else self.alpha / self.size
        return local_response_norm(x, self.size, alpha, self.beta, self.k, self.native_kernels)

    def extra_repr(self) -> str:
        return (
            f"size={self.size}, alpha={self.alpha}, beta={self.beta}, k={self.k}, "
            f"convention={self.convention!r}"
        )


class TowerConv2d(nn.Conv2d):
    """A convolution whose two halves read only their own tower's maps (§3.2): `groups=2`.

    With `split` it runs as two separate convolutions (each half of the input with its half of
    the kernels), else as one grouped convolution: `Placement` sets it from the recipe's
    `run.tower_convs`. The parameters are those of `nn.Conv2d(..., groups=2)` either way, so
    the state_dict does not change, nor (up to rounding) the result.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        padding: int,
        device: torch.device | str | None = None,
    ):
        super().__init__(
            in_channels, out_channels, kernel_size, padding=padding, groups=2, device=device
        )
        self.split = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.split:
            return super().forward(x)
        halves = zip(x.chunk(2, dim=1), self.weight.chunk(2), self.bias.chunk(2), strict=True)
        return torch.cat(
            [
                F.conv2d(maps, kernels, bias, self.stride, self.padding)
                for maps, kernels, bias in halves
            ],
            dim=1,
        )


class AlexNet(nn.Module):
    """AlexNet (§3). `forward` gives logits; `embed` gives the fc7 activations (§6.1)."""

    def __init__(
        self,
        num_classes: int = 1000,
        variant: Variant = "paper",
        *,
        activation: Literal["relu", "tanh"] = "relu",
        lrn: LRNConvention | Literal["off"] = "paper",
        overlapping_pool: bool = True,
        dropout: float = 0.5,
        init: Literal["paper", "kaiming"] = "paper",
        device: torch.device | str | None = None,
    ) -> None:
        """`device="meta"` builds the layers without memory or init, for weights about to be
        assigned (checkpoint.build_model)."""
        super().__init__()
        if variant not in _CONV_CHANNELS:
            raise ValueError(f"unknown variant {variant!r}; use one of {', '.join(_CONV_CHANNELS)}")
        if activation not in ("relu", "tanh"):
            raise ValueError(f"unknown activation {activation!r}; use 'relu' or 'tanh'")
        if variant == "owt":
            lrn = "off"  # the OWT net has no LRN
        self.variant = variant
        self.num_classes = num_classes
        towers = 2 if variant == "paper" else 1  # §3.2: conv2, conv4, conv5 read their own tower
        self.towers = towers
        act = {"relu": nn.ReLU, "tanh": nn.Tanh}[activation]
        pool_size = 3 if overlapping_pool else 2  # §3.4: z=3, s=2 overlaps; z=s=2 does not

        def pool() -> nn.MaxPool2d:
            return nn.MaxPool2d(kernel_size=pool_size, stride=2)

        def norm() -> list[nn.Module]:
            return [] if lrn == "off" else [LocalResponseNorm(convention=lrn)]

        def tower_conv(in_channels: int, out_channels: int, size: int) -> nn.Conv2d:
            if towers == 2:
                return TowerConv2d(in_channels, out_channels, size, size // 2, device=device)
            return nn.Conv2d(in_channels, out_channels, size, padding=size // 2, device=device)

        c1, c2, c3, c4, c5 = _CONV_CHANNELS[variant]
        self.features = nn.Sequential(
            nn.Conv2d(3, c1, 11, stride=4, padding=2, device=device), act(), *norm(), pool(),
            tower_conv(c1, c2, 5), act(), *norm(), pool(),  # (B,256,13,13)
            nn.Conv2d(c2, c3, 3, padding=1, device=device), act(),  # (B,384,13,13), both towers
            tower_conv(c3, c4, 3), act(),  # (B,384,13,13)
            tower_conv(c4, c5, 3), act(), pool(),  # (B,256,6,6)
        )  # fmt: skip
        self.avgpool = nn.AdaptiveAvgPool2d((6, 6))  # identity at 224 px input
        fc6, fc7, fc8 = (
            nn.Linear(c5 * 36, 4096, device=device),
            nn.Linear(4096, 4096, device=device),
            nn.Linear(4096, num_classes, device=device),
        )
        if variant == "owt":  # torchvision's order: dropout on the inputs of fc6 and fc7
            head = [CountedDropout(dropout, layer=6), fc6, act(),
                    CountedDropout(dropout, layer=7), fc7, act(), fc8]  # fmt: skip
        else:  # §4.2: dropout on the outputs of fc6 and fc7
            head = [fc6, act(), CountedDropout(dropout, layer=6),
                    fc7, act(), CountedDropout(dropout, layer=7), fc8]  # fmt: skip
        self.classifier = nn.Sequential(*head)
        self._fc7_end = head.index(fc7) + 2  # up to and including fc7's activation
        self.min_input_size = _smallest_input(self)
        if device is None or torch.device(device).type != "meta":
            self.reset_parameters(init)

    def learned_layers(self) -> dict[str, nn.Conv2d | nn.Linear]:
        """The eight learned layers by the paper's names: conv1..conv5, fc6..fc8."""
        convs = [m for m in self.features if isinstance(m, nn.Conv2d)]
        linears = [m for m in self.classifier if isinstance(m, nn.Linear)]
        names = [f"conv{i}" for i in range(1, 6)] + ["fc6", "fc7", "fc8"]
        return dict(zip(names, convs + linears, strict=True))

    def reset_parameters(self, init: Literal["paper", "kaiming"] = "paper") -> None:
        """§5: weights N(0, 0.01); biases 1 in conv2, conv4, conv5, fc6, fc7 and 0 elsewhere.

        `"kaiming"` (Kaiming-normal weights, zero biases) is for small data at a standardised
        scale, where the paper's init stalls (docs/paper.md §5, "Learning").
        """
        if init not in ("paper", "kaiming"):
            raise ValueError(f"unknown init {init!r}; use 'paper' or 'kaiming'")
        for name, layer in self.learned_layers().items():
            if init == "paper":
                nn.init.normal_(layer.weight, mean=0.0, std=0.01)
                nn.init.constant_(layer.bias, 1.0 if name in _BIAS_ONE else 0.0)
            else:
                nn.init.kaiming_normal_(layer.weight, nonlinearity="relu")
                nn.init.zeros_(layer.bias)

    def conv1_towers(self) -> list[range]:
        """Which conv1 kernels feed which tower: [0-47, 48-95] for the paper's net (§3.2).

        conv2 has groups=2, so its first half reads conv1 maps 0-47 (GPU one) and its second
        half maps 48-95 (GPU two). A one-tower net has a single range.
        """
        kernels = self.learned_layers()["conv1"].out_channels
        per_tower = kernels // self.towers
        return [range(t * per_tower, (t + 1) * per_tower) for t in range(self.towers)]

    def _check_input(self, x: torch.Tensor) -> None:
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(
                f"AlexNet expects (batch, 3, height, width) images, got {tuple(x.shape)}"
            )
        if min(x.shape[-2:]) < self.min_input_size:
            raise ValueError(
                f"AlexNet needs images of at least {self.min_input_size}×{self.min_input_size} px, "
                f"got {x.shape[-2]}×{x.shape[-1]}"
            )

    def set_fast_paths(self, *, native_kernels: bool, split_towers: bool) -> AlexNet:
        """How the layers compute, never what: LRN by its compiled CPU kernel (built ahead by
        `alexnet.native.build_kernels`; the same bits as torch's operations), the towers' convs
        as two convolutions or one grouped. `Placement` sets both from the recipe's run section;
        a library user may call it after `alexnet.build_kernels()`. Returns the network."""
        for module in self.modules():
            if isinstance(module, LocalResponseNorm):
                module.native_kernels = native_kernels
            elif isinstance(module, TowerConv2d):
                module.split = split_towers
        return self

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """The fc7 activations (B, 4096): the last hidden layer used for retrieval (§6.1)."""
        self._check_input(x)
        x = self.features(x)  # (B, 256, h, w)
        first = 0
        if x.shape[-2:] == (1, 1) and isinstance(self.classifier[0], nn.Linear):
            x, first = self._fc6_of_one_cell(x), 1  # (B, 4096), before fc6's activation
        else:
            x = torch.flatten(self.avgpool(x), 1)  # (B, 9216)
        for index in range(first, self._fc7_end):
            x = self.classifier[index](x)
        return x  # (B, 4096)

    def _fc6_of_one_cell(self, x: torch.Tensor) -> torch.Tensor:
        """fc6 of a 1×1 map (inputs under ~95 px), which the 6×6 pool copies into all 36 cells.

        fc6 then reads each channel 36 times, so it equals a layer with the sum of its weights
        over the 36 cells: 36× fewer multiply-adds forward and backward, the same function and
        parameters (the gradient reaches every cell's weight alike, as through the pool). Not
        for a net with dropout before fc6 (owt), which would drop the 36 copies independently.
        """
        fc6 = self.classifier[0]
        weight = fc6.weight.view(fc6.out_features, x.shape[1], -1).sum(dim=2)  # (4096, 256)
        return F.linear(torch.flatten(x, 1), weight, fc6.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.embed(x)
        for index in range(self._fc7_end, len(self.classifier)):
            x = self.classifier[index](x)
        return x  # (B, num_classes)


def _smallest_input(model: AlexNet) -> int:
    """The smallest square input whose feature maps stay non-empty through every layer."""

    def output_size(size: int) -> int:
        for layer in model.features:
            if isinstance(layer, (nn.Conv2d, nn.MaxPool2d)):
                kernel, stride, padding = (
                    _as_int(getattr(layer, name)) for name in ("kernel_size", "stride", "padding")
                )
                size = (size + 2 * padding - kernel) // stride + 1
                if size < 1:
                    return 0
        return size

    size = 1
    while output_size(size) < 1:
        size += 1
    return size


def _as_int(value: int | tuple[int, ...]) -> int:
    return value[0] if isinstance(value, tuple) else value
