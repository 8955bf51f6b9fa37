"""§3.2 model parallelism: the paper's two towers on two devices (`run.model_parallel=A,B`).

The paper put half of every layer's kernels on each of two GPUs (Figure 2): tower one holds conv1
kernels 0-47, the first halves of conv2-conv5 and the first half of each fully connected layer's
outputs; tower two the rest. The GPUs communicate only where a layer reads both towers: into
conv3 and into fc6, fc7 and fc8. `TwoTowers` runs a groups=2 `AlexNet` that way, and gives the
same logits and gradients as the one-device network it was split from.

One more exchange is needed for that: the single-device network's LRN (§3.3) sums over five
adjacent maps of all 96 (then 256), so at the towers' border it reads two maps of the other
tower. The towers swap those two maps before each LRN; without that the function would differ
from the network that checkpoints hold. Checkpoints keep the single-device layout: each
single-device weight (and its momentum) is the two towers' halves stacked along dim 0.
Dropout (§4.2) drops in each tower the units the single-device network drops: its masks are
counted by the feature's index in the whole layer (ops/dropout.py).
"""

from __future__ import annotations

import torch
from torch import nn

from alexnet.model import AlexNet, LocalResponseNorm
from alexnet.ops.dropout import CountedDropout
from alexnet.placement.device import resolve_device
from alexnet.recipe import RecipeError


def parse_devices(spec: str) -> tuple[torch.device, torch.device]:
    """ "DEV_A,DEV_B" as two devices (the same one twice is allowed: a CPU test of the split)."""
    names = [name.strip() for name in spec.split(",")]
    if len(names) != 2 or not all(names):
        raise RecipeError(f"run.model_parallel={spec!r}: expected two devices, e.g. cuda:0,cuda:1")
    return resolve_device(names[0]), resolve_device(names[1])


def _halves(size: int) -> tuple[slice, slice]:
    """Tower one takes the first ceil(size/2) rows, tower two the rest (Figure 2)."""
    middle = (size + 1) // 2
    return slice(0, middle), slice(middle, size)


def _split(layer: nn.Conv2d | nn.Linear, rows: slice, device: torch.device) -> nn.Module:
    """One tower's share of `layer`: its output rows, reading its own maps (groups=2) or all."""
    out = rows.stop - rows.start
    if isinstance(layer, nn.Conv2d):
        part = nn.Conv2d(
            layer.in_channels // layer.groups, out, layer.kernel_size,
            stride=layer.stride, padding=layer.padding,
        )  # fmt: skip
    else:
        part = nn.Linear(layer.in_features, out)
    with torch.no_grad():
        part.weight.copy_(layer.weight[rows])
        part.bias.copy_(layer.bias[rows])
    return part.to(device)


class TwoTowers(nn.Module):
    """A groups=2 AlexNet split over two devices; `forward` gives its logits on the first."""

    def __init__(self, model: AlexNet, devices: tuple[torch.device, torch.device]) -> None:
        super().__init__()
        if model.towers != 2:
            raise RecipeError(
                f"run.model_parallel needs the two-tower 'paper' variant, not {model.variant!r}"
            )
        self.devices = devices
        self._layout = [model.cpu()]  # the single-device network, outside the module tree
        self.tower_one, self.tower_two = nn.ModuleDict(), nn.ModuleDict()
        self.stateless = nn.ModuleList()  # ReLU, LRN, pools, dropout: applied in each tower
        self.plan: list[tuple[str, str]] = []  # (what, module name) in the order of forward
        modules = [*model.features.named_children(), ("avgpool", model.avgpool)]
        modules += [("flatten", nn.Flatten()), *model.classifier.named_children()]
        for _, module in modules:
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                key = _layer_key(model, module)
                for tower, rows, device in zip(
                    (self.tower_one, self.tower_two), _halves(_rows(module)), devices, strict=True
                ):
                    tower[key] = _split(module, rows, device)
                reads_both = isinstance(module, nn.Linear) or module.groups == 1
                self.plan.append(("reads both" if reads_both else "own tower", key))
            else:
                self.stateless.append(module)
                kinds = {LocalResponseNorm: "lrn", CountedDropout: "dropout"}
                what = kinds.get(type(module), "each")
                self.plan.append((what, str(len(self.stateless) - 1)))

    def pairs(self) -> list[tuple[str, nn.Parameter, nn.Parameter]]:
        """(single-device name, tower one's half, tower two's half) in the layout's order."""
        names = dict(_layer_names(self._layout[0]))
        return [
            (f"{names[key]}.{kind}", getattr(self.tower_one[key], kind),
             getattr(self.tower_two[key], kind))
            for key in self.tower_one
            for kind in ("weight", "bias")
        ]  # fmt: skip

    def single_device(self) -> AlexNet:
        """The single-device network (on the CPU) holding the towers' current weights."""
        layout = self._layout[0]
        parameters = dict(layout.named_parameters())
        with torch.no_grad():
            for name, one, two in self.pairs():
                parameters[name].copy_(torch.cat([one.cpu(), two.cpu()]))
        return layout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._layout[0]._check_input(x)
        one, two = x.to(self.devices[0]), x.to(self.devices[1])  # conv1: each reads the image
        whole = True  # each tower holds everything the next layer reads
        for what, key in self.plan:
            if what in ("reads both", "own tower"):
                if what == "reads both" and not whole:
                    one, two = self._exchange(one, two)  # into conv3, fc6, fc7, fc8 (§3.2)
                one, two, whole = self.tower_one[key](one), self.tower_two[key](two), False
            elif what == "lrn":
                one, two = self._lrn(self.stateless[int(key)], one, two)
            elif what == "dropout":  # tower two's features follow tower one's: the same masks
                dropout = self.stateless[int(key)]
                one, two = dropout(one), dropout(two, first_feature=one.shape[1])
            else:
                one, two = self.stateless[int(key)](one), self.stateless[int(key)](two)
        return torch.cat([one, two.to(self.devices[0])], dim=1)  # (B, classes)

    def _exchange(self, one: torch.Tensor, two: torch.Tensor):
        """Each tower gets both towers' maps, tower one's first: (B, C1 + C2, ...) on each."""
        return (
            torch.cat([one, two.to(self.devices[0])], dim=1),
            torch.cat([one.to(self.devices[1]), two], dim=1),
        )

    def _lrn(self, lrn: nn.Module, one: torch.Tensor, two: torch.Tensor):
        """LRN over the maps of both towers, exchanging only the size // 2 maps at the border."""
        half, kept = lrn.size // 2, one.shape[1]
        return (
            lrn(torch.cat([one, two[:, :half].to(self.devices[0])], dim=1))[:, :kept],
            lrn(torch.cat([one[:, -half:].to(self.devices[1]), two], dim=1))[:, half:],
        )


def _rows(layer: nn.Conv2d | nn.Linear) -> int:
    return layer.out_channels if isinstance(layer, nn.Conv2d) else layer.out_features


def _layer_names(model: AlexNet) -> list[tuple[str, str]]:
    """(key, module name) of the learned layers: ("conv1", "features.0"), ..."""
    names = {id(module): name for name, module in model.named_modules()}
    return [(key, names[id(layer)]) for key, layer in model.learned_layers().items()]


def _layer_key(model: AlexNet, layer: nn.Module) -> str:
    return next(key for key, found in model.learned_layers().items() if found is layer)


def single_device(network: nn.Module) -> nn.Module:
    """The network in the layout checkpoints keep."""
    return network.single_device() if isinstance(network, TwoTowers) else network


def single_layout_optimizer_state(network: nn.Module, optimizer: torch.optim.Optimizer) -> dict:
    """`optimizer.state_dict()` as if it had trained the single-device network."""
    state = optimizer.state_dict()
    if not isinstance(network, TwoTowers):
        return state
    position = {id(p): i for i, p in enumerate(optimizer.param_groups[0]["params"])}
    merged = {}
    for index, (_, one, two) in enumerate(network.pairs()):
        halves = [state["state"].get(position[id(p)]) for p in (one, two)]
        if halves[0] is not None:
            merged[index] = {
                key: torch.cat([halves[0][key].cpu(), halves[1][key].cpu()]) for key in halves[0]
            }
    groups = [{**state["param_groups"][0], "params": list(range(len(network.pairs())))}]
    return {"state": merged, "param_groups": groups}


def load_optimizer_state(network: nn.Module, optimizer: torch.optim.Optimizer, saved: dict):
    """Load a single-layout optimizer state (a checkpoint's) into `optimizer`."""
    if not isinstance(network, TwoTowers):
        optimizer.load_state_dict(saved)
        return
    position = {id(p): i for i, p in enumerate(optimizer.param_groups[0]["params"])}
    split = {}
    for index, (_, one, two) in enumerate(network.pairs()):
        if index in saved["state"]:
            for part, rows in zip((one, two), _halves(one.shape[0] + two.shape[0]), strict=True):
                split[position[id(part)]] = {k: v[rows] for k, v in saved["state"][index].items()}
    groups = [{**saved["param_groups"][0], "params": sorted(position.values())}]
    optimizer.load_state_dict({"state": split, "param_groups": groups})
