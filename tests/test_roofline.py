"""bench/roofline.py: a training image's FLOPs against the layers' arithmetic done by hand and
torchvision's own count, grouped convolutions included; the peak table's lookup by name."""

import sys
from pathlib import Path

import pytest
import torch
from torch import nn
from torchvision.models import AlexNet_Weights

from alexnet import AlexNet

sys.path.insert(0, str(Path(__file__).parents[1] / "bench"))
from roofline import bf16_peak_tflops, training_flops  # noqa: E402


def forward_flops_by_hand(model: AlexNet, size: int) -> tuple[int, int]:
    """(forward FLOPs of one image, conv1's share): 2 per multiply-add of every learned layer,
    read off each layer's output shape."""
    counts = []

    def count(layer, inputs, output):
        if isinstance(layer, nn.Conv2d):
            per_output = layer.in_channels // layer.groups * layer.kernel_size[0] ** 2
            counts.append(2 * output.numel() * per_output)
        else:
            counts.append(2 * layer.in_features * layer.out_features)

    hooks = [layer.register_forward_hook(count) for layer in model.learned_layers().values()]
    with torch.no_grad():
        model(torch.zeros(1, 3, size, size))
    for hook in hooks:
        hook.remove()
    return sum(counts), counts[0]


@pytest.mark.parametrize("variant", ["paper", "one-tower", "owt"])
def test_a_training_image_costs_three_forward_passes_less_conv1s_input_gradient(variant):
    # every layer's backward pass is two products of its forward's size (the gradients of its
    # input and of its weights), except conv1's: the images need no gradient. On a CPU the
    # paper's towers are one grouped convolution, whose weight gradient torch miscounts.
    model = AlexNet(variant=variant)
    forward, conv1 = forward_flops_by_hand(model, 224)
    assert training_flops(model, 224, 1000) == 3 * forward - conv1


def test_owts_forward_pass_is_torchvisions_count():
    forward, _ = forward_flops_by_hand(AlexNet(variant="owt"), 224)
    multiply_adds = AlexNet_Weights.IMAGENET1K_V1.meta["_ops"] * 1e9  # GFLOPS as torchvision counts
    assert forward / 2 == pytest.approx(multiply_adds, rel=0.01)


def test_the_peak_is_looked_up_by_the_most_specific_name(monkeypatch):
    names = {"NVIDIA H100 80GB HBM3": 989.0, "NVIDIA H100 PCIe": 756.0, "Some GPU": None}
    for name, peak in names.items():
        monkeypatch.setattr(torch.cuda, "get_device_name", lambda device, name=name: name)
        assert bf16_peak_tflops(torch.device("cuda")) == peak
    assert bf16_peak_tflops(torch.device("cpu")) is None
