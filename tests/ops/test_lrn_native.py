"""LRN's compiled CPU kernel (ops/lrn_native.py, lrn_cpu.c): values and gradients against the
float64 formula, the same bits as the torch operations at the shapes training uses, the op's
choice of kernel, and the same bits however the images are shared among threads. Building and
loading: tests/test_native.py."""

import pytest
import torch
from lrn_reference import formula_and_gradient, relu_like

from alexnet.model import LocalResponseNorm
from alexnet.ops import lrn_native
from alexnet.ops.lrn import backward_torch, forward_torch
from alexnet.placement.kernels import build_kernels


@pytest.fixture
def kernels():
    if not build_kernels(required=False):
        pytest.skip("no C compiler here: the torch operations run instead")
    return lrn_native


def native_lrn() -> LocalResponseNorm:
    layer = LocalResponseNorm()
    layer.native_kernels = True
    return layer


@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last])
@pytest.mark.parametrize(
    ("size", "k", "channels"), [(5, 2.0, 12), (3, 1.0, 10), (7, 2.0, 9), (5, 2.0, 3)]  # 3 < size
)
def test_compiled_kernels_follow_the_formula(kernels, size, k, channels, memory_format):
    beta = 0.75  # the kernels' only β (the paper's); others run as torch operations
    a = relu_like(3, channels, 5, 6, scale=80).contiguous(memory_format=memory_format)
    upstream = torch.randn(3, channels, 5, 6).contiguous(memory_format=memory_format)
    expected, expected_gradient = formula_and_gradient(
        a, upstream, n=size, alpha=1e-3, beta=beta, k=k
    )
    layout = {torch.contiguous_format: "nchw", torch.channels_last: "nhwc"}[memory_format]
    assert kernels.layout_of(a) == layout
    y, s = kernels.forward(a, size, 1e-3, k)
    gradient = kernels.backward(upstream, a, s, size, 1e-3)
    assert y.is_contiguous(memory_format=memory_format)
    assert gradient.is_contiguous(memory_format=memory_format)
    assert ((y.double() - expected).abs() / expected.abs().clamp_min(1e-6)).max() < 1e-5
    scale = expected_gradient.abs().max()
    assert (gradient.double() - expected_gradient).abs().max() < 1e-5 * scale


SHAPES = {  # (channels, height, width) of the LRNs training runs: the paper's at 224 px, 64 px
    "conv1 224": (96, 55, 55), "conv2 224": (256, 27, 27),
    "conv1 64": (96, 15, 15), "conv2 64": (256, 7, 7),
}  # fmt: skip


@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last])
@pytest.mark.parametrize("shape", SHAPES.values(), ids=SHAPES.keys())
def test_the_same_bits_as_the_torch_operations(kernels, shape, memory_format):
    """Built with -ffp-contract=off and summing in lrn.py's order, the kernels give the torch
    operations' bits, forward and backward, not merely close values: where the compiler fuses
    a*b + c (GCC's default) or sums the window in another order, this fails."""
    a = relu_like(2, *shape, scale=40).contiguous(memory_format=memory_format)
    upstream = (torch.randn(2, *shape) * 1e-3).contiguous(memory_format=memory_format)
    y, s = kernels.forward(a, 5, 1e-4, 2.0)
    expected_y, expected_s = forward_torch(a, 5, 1e-4, 0.75, 2.0)
    assert torch.equal(s, expected_s) and torch.equal(y, expected_y)
    gradient = kernels.backward(upstream, a, s, 5, 1e-4)
    assert torch.equal(gradient, backward_torch(upstream, a, s, 5, 1e-4, 0.75))


def test_the_op_runs_the_compiled_kernels_when_asked_for_float32_cpu_tensors(
    kernels, monkeypatch
):
    calls = []
    forward = kernels.forward
    monkeypatch.setattr(kernels, "forward", lambda *args: calls.append(args) or forward(*args))
    a = relu_like(2, 8, 4, 4)
    native = native_lrn()(a)
    native_lrn()(a.contiguous(memory_format=torch.channels_last))
    assert len(calls) == 2
    native_lrn()(a.double())
    native_lrn()(a[:, :, :, :3])  # neither order: a view
    layer = native_lrn()
    layer.beta = 0.5  # a power with no exact torch twin in C
    layer(a)
    assert len(calls) == 2  # the torch operations take the others
    assert torch.equal(LocalResponseNorm()(a), native)  # not asked: torch's, the same bits
    assert len(calls) == 2


@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last])
@pytest.mark.parametrize("threads", [1, 2, 3])
def test_the_same_bits_however_the_images_are_shared_among_threads(
    kernels, threads, memory_format, monkeypatch
):
    monkeypatch.setattr(kernels, "MIN_PART_BYTES", 1)  # parts of one image, however small
    handed_out = []
    pool = kernels._threads
    monkeypatch.setattr(kernels, "_threads", lambda count: handed_out.append(count) or pool(count))
    a = relu_like(7, 10, 3, 4, scale=80).contiguous(memory_format=memory_format)  # 7: unequal parts
    upstream = torch.randn(7, 10, 3, 4).contiguous(memory_format=memory_format)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        y, s = kernels.forward(a, 5, 1e-4, 2.0)
        gradient = kernels.backward(upstream, a, s, 5, 1e-4)
        torch.set_num_threads(threads)
        y_shared, s_shared = kernels.forward(a, 5, 1e-4, 2.0)
        gradient_shared = kernels.backward(upstream, a, s_shared, 5, 1e-4)
    finally:
        torch.set_num_threads(before)
    assert set(handed_out) == ({threads} if threads > 1 else set())
    assert torch.equal(y, y_shared) and torch.equal(s, s_shared)
    assert torch.equal(gradient, gradient_shared)


def test_a_gradient_in_the_other_memory_order_still_takes_the_kernel(kernels, monkeypatch):
    calls = []
    backward = kernels.backward
    monkeypatch.setattr(kernels, "backward", lambda *args: calls.append(args) or backward(*args))
    a = relu_like(2, 8, 4, 4, scale=80).contiguous(memory_format=torch.channels_last)
    upstream = torch.randn(2, 8, 4, 4)  # contiguous, as a loss's gradient may come
    _, expected_gradient = formula_and_gradient(a, upstream, alpha=1e-4)
    x = a.clone().requires_grad_()
    (native_lrn()(x) * upstream).sum().backward()
    assert len(calls) == 1
    assert (x.grad.double() - expected_gradient).abs().max() < 1e-6 * expected_gradient.abs().max()
