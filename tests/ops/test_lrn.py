"""LRN (§3.3) as one custom op: values and gradients against the float64 formula, both α
conventions, torch's own LRN, what the forward saves, and torch.compile without graph breaks."""

import pytest
import torch
from lrn_reference import (
    formula_and_gradient,
    lrn_formula_float64,
    relu_like,
    window_sum_of_squares_float64,
)
from torch import nn

from alexnet.model import LocalResponseNorm
from alexnet.ops.lrn import lrn

CONVENTIONS = [("paper", 1e-4), ("cuda-convnet", 1e-4 / 5)]


@pytest.mark.parametrize(("convention", "alpha_used"), CONVENTIONS)
def test_lrn_matches_the_formula_in_float64(convention, alpha_used):
    a = relu_like(2, 11, 4, 5)
    expected = lrn_formula_float64(a, alpha=alpha_used)
    assert (expected - a.double() / 2**0.75).abs().max() > 1e-3  # the sum term really matters
    got = LocalResponseNorm(convention=convention)(a).double()
    assert ((got - expected).abs() / expected.abs().clamp_min(1e-6)).max() < 1e-5


def test_lrn_paper_convention_equals_torch_with_n_times_alpha():
    a = relu_like(2, 8, 3, 3, scale=50)
    ours = LocalResponseNorm(convention="paper")(a)
    torch_reference = nn.LocalResponseNorm(5, alpha=5e-4, beta=0.75, k=2.0)(a)
    assert torch.allclose(ours, torch_reference, rtol=1e-6)


@pytest.mark.parametrize(("convention", "alpha_used"), CONVENTIONS)
def test_lrn_gradient_matches_autograd_on_the_formula(convention, alpha_used):
    a = relu_like(2, 9, 3, 3, dtype=torch.float64, scale=40).requires_grad_()
    upstream = torch.randn(2, 9, 3, 3, dtype=torch.float64)
    _, expected = formula_and_gradient(a, upstream, alpha=alpha_used)
    (got,) = torch.autograd.grad((LocalResponseNorm(convention=convention)(a) * upstream).sum(), a)
    assert torch.allclose(got, expected, rtol=1e-8, atol=1e-12)


@pytest.mark.parametrize(("size", "beta", "k"), [(3, 0.75, 2.0), (7, 0.5, 1.0), (5, 1.0, 2.0)])
def test_other_window_sizes_and_exponents_follow_the_formula(size, beta, k):
    """Odd windows other than 5, and β other than 0.75 (the general `pow` path)."""
    a = relu_like(2, 10, 3, 4, dtype=torch.float64, scale=80).requires_grad_()
    upstream = torch.randn(2, 10, 3, 4, dtype=torch.float64)
    options = dict(n=size, alpha=1e-3, beta=beta, k=k)
    expected, expected_gradient = formula_and_gradient(a, upstream, **options)
    got = LocalResponseNorm(size, alpha=1e-3, beta=beta, k=k)(a)
    (gradient,) = torch.autograd.grad((got * upstream).sum(), a)
    assert torch.allclose(got, expected, rtol=1e-10)
    assert torch.allclose(gradient, expected_gradient, rtol=1e-8, atol=1e-12)


@pytest.mark.parametrize("chunk_images", [1, 2])  # 2: a last chunk of one image
def test_taken_a_few_images_at_a_time_values_and_gradients_are_unchanged(monkeypatch, chunk_images):
    """The CPU kernels' chunks (ops.lrn.images_per_chunk): the formula in float64, and the very
    bits of the whole batch in one pass."""
    import alexnet.ops.lrn as ops

    a = relu_like(5, 10, 3, 4, dtype=torch.float64, scale=80).requires_grad_()
    upstream = torch.randn(5, 10, 3, 4, dtype=torch.float64)
    expected, expected_gradient = formula_and_gradient(a, upstream, alpha=1e-4)
    outputs = []
    for images in (len(a), chunk_images):  # the whole batch, then chunks
        monkeypatch.setattr(ops, "CHUNK_BYTES", images * a[0].numel() * 8)  # float64
        assert ops.images_per_chunk(a) == images
        y = LocalResponseNorm()(a)
        (gradient,) = torch.autograd.grad((y * upstream).sum(), a)
        outputs.append((y, gradient))
    assert torch.allclose(outputs[1][0], expected, rtol=1e-10)
    assert torch.allclose(outputs[1][1], expected_gradient, rtol=1e-8, atol=1e-12)
    assert torch.equal(outputs[0][0], outputs[1][0]) and torch.equal(outputs[0][1], outputs[1][1])


def test_channels_last_input_gives_the_same_values_and_gradients():
    """Each memory order against the float64 formula: on the CPU they run different kernels
    (ops/lrn_native.py), which round differently."""
    a = relu_like(2, 12, 5, 5)
    upstream = torch.randn(2, 12, 5, 5)
    expected, expected_gradient = formula_and_gradient(a, upstream, alpha=1e-4)
    for memory_format in (torch.contiguous_format, torch.channels_last):
        x = a.clone(memory_format=memory_format).requires_grad_()
        y = LocalResponseNorm()(x)
        (y * upstream).sum().backward()
        assert y.is_contiguous(memory_format=memory_format)
        assert ((y.double() - expected).abs() / expected.abs()).max() < 1e-5
        gradient_error = (x.grad.double() - expected_gradient).abs().max()
        assert gradient_error < 1e-6 * expected_gradient.abs().max()


def test_forward_saves_only_x_and_s_for_the_backward():
    """The closed form needs x and s; autograd's chain of the formula would keep many more."""
    saved = []
    x = relu_like(2, 6, 3, 3).requires_grad_()
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        LocalResponseNorm()(x)
    assert len(saved) == 2
    assert saved[0] is x
    expected_s = 2 + 1e-4 * window_sum_of_squares_float64(x.detach())
    assert torch.allclose(saved[1].double(), expected_s, rtol=1e-6)


def test_custom_op_registration_passes_torch_opcheck():
    """Schema, fake (meta) kernel and autograd registration, as torch.library checks them."""
    x = relu_like(2, 7, 3, 3).requires_grad_()
    torch.library.opcheck(lrn, (x, 5, 1e-4, 0.75, 2.0))


def test_torch_compile_traces_through_lrn_without_graph_breaks():
    torch.manual_seed(0)
    block = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), LocalResponseNorm(), nn.MaxPool2d(3, 2))
    compiled = torch.compile(block, backend="aot_eager", fullgraph=True)  # raises on a break
    x = torch.randn(2, 3, 12, 12) * 30
    eager_out = block(x)
    eager_out.sum().backward()
    eager_gradient = block[0].weight.grad.clone()
    block.zero_grad()
    compiled_out = compiled(x)
    compiled_out.sum().backward()
    assert torch.allclose(compiled_out, eager_out, rtol=1e-6)
    assert torch.allclose(block[0].weight.grad, eager_gradient, rtol=1e-5, atol=1e-7)
