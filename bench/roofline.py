"""What a training step asks of the device and what the device can give: the FLOPs of one
training image (forward, backward and nothing else: convolutions and matrix products, counted by
`torch.utils.flop_counter`) and the device's dense bf16 peak from its maker's data sheet.

torch's counter charges a grouped convolution's weight gradient as if the convolution were not
grouped (torch 2.14: the paper's net then counts 4.96 GFLOP a training image, against 4.14 with
its towers as two convolutions each; pytorch/pytorch#183405), so `training_flops` counts that
part itself.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode, conv_backward_flop

# Dense bf16 tensor-core TFLOP/s (no sparsity), by a part of torch.cuda.get_device_name().
# The most specific name first: "H100 PCIe" before "H100".
BF16_PEAK_TFLOPS = {
    "H100 PCIe": 756.0,
    "H100 NVL": 835.0,
    "H100": 989.0,  # SXM
    "H200": 989.0,
    "GH200": 989.0,
    "B200": 2250.0,
    "A100": 312.0,
    "A10G": 70.0,
    "L40S": 362.0,
    "L4": 121.0,
    "RTX 4090": 165.0,
}


def bf16_peak_tflops(device: torch.device) -> float | None:
    """The device's dense bf16 peak, or None where the table does not know it (any CPU)."""
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((peak for part, peak in BF16_PEAK_TFLOPS.items() if part in name), None)


def _conv_backward_flop(grad_out, x, w, bias, stride, padding, dilation, transposed,
                        output_padding, groups, output_mask, out_shape=None) -> int:  # fmt: skip
    """torch's count of the input gradient (it takes tensors or shapes); the weight gradient's
    as the forward convolution's, 2 FLOPs per output value per weight it reads (AlexNet has no
    transposed convolution, where that would not hold)."""
    args = (grad_out, x, w, bias, stride, padding, dilation, transposed, output_padding, groups)
    inputs = conv_backward_flop(*args, [output_mask[0], False, False], out_val=out_shape)
    weights = 2 * math.prod(grad_out) // grad_out[1] * math.prod(w) if output_mask[1] else 0
    return inputs + weights


def training_flops(model: torch.nn.Module, crop_size: int, classes: int) -> float:
    """FLOPs of one training image through `model` (a CPU copy at batch 1): the forward pass,
    the loss's backward pass; the optimizer's few FLOPs a weight are left out."""
    images = torch.randn(1, 3, crop_size, crop_size)
    labels = torch.randint(0, classes, (1,))
    mapping = {torch.ops.aten.convolution_backward: _conv_backward_flop}
    with FlopCounterMode(display=False, custom_mapping=mapping) as counter:
        F.cross_entropy(model(images), labels).backward()
    return float(counter.get_total_flops())
