"""The Triton LRN kernels (CUDA's path), run on CPU tensors by Triton's interpreter: values and
gradients against the float64 formula, for contiguous and channels_last storage in fp32, bf16
and fp16, both α conventions, and windows and exponents other than the paper's."""

import importlib
import sys

import pytest
import torch
from lrn_reference import formula_and_gradient, relu_like, window_sum_of_squares_float64

pytest.importorskip("triton")

MODULE = "alexnet.ops.lrn_triton"
# Error allowed relative to the largest value: float32 arithmetic, then rounding to the storage.
TOLERANCE = {torch.float32: 1e-5, torch.bfloat16: 1e-2, torch.float16: 1e-3}


@pytest.fixture(scope="module")
def kernels():
    """The kernel module imported with TRITON_INTERPRET=1 (Triton reads it when a kernel is
    defined), and dropped afterwards so nothing else in the session gets interpreted kernels."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TRITON_INTERPRET", "1")
        sys.modules.pop(MODULE, None)
        yield importlib.import_module(MODULE)
        sys.modules.pop(MODULE, None)


def _close(got: torch.Tensor, expected: torch.Tensor, tolerance: float) -> bool:
    return (got.double() - expected).abs().max() <= tolerance * expected.abs().max()


@pytest.mark.parametrize("dtype", list(TOLERANCE), ids=str)
@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last], ids=str)
@pytest.mark.parametrize("alpha", [1e-4, 1e-4 / 5], ids=["paper", "cuda-convnet"])
def test_triton_lrn_matches_the_formula_and_its_gradient(kernels, dtype, memory_format, alpha):
    # alpha large enough at this scale that the window term moves the output by several %.
    x = relu_like(2, 11, 5, 6, scale=120).to(dtype).contiguous(memory_format=memory_format)
    upstream = torch.randn(2, 11, 5, 6).to(dtype)
    expected, expected_gradient = formula_and_gradient(x, upstream, alpha=alpha)
    y, s = kernels.lrn_forward(x, 5, alpha, 0.75, 2.0)
    gradient = kernels.lrn_backward(upstream, x, s, 5, alpha, 0.75)
    assert y.dtype == dtype and gradient.dtype == dtype and s.dtype == torch.float32
    assert y.is_contiguous(memory_format=memory_format)
    assert _close(s, 2 + alpha * window_sum_of_squares_float64(x), 1e-6)
    assert _close(y, expected, TOLERANCE[dtype])
    assert _close(gradient, expected_gradient, TOLERANCE[dtype])


@pytest.mark.parametrize(("size", "beta"), [(3, 0.75), (7, 0.5)])
def test_triton_lrn_other_windows_and_exponents(kernels, size, beta):
    x = relu_like(2, 37, 3, 4, scale=80)  # more channels than one tile of BLOCK_C
    upstream = torch.randn(2, 37, 3, 4)
    expected, expected_gradient = formula_and_gradient(x, upstream, n=size, alpha=1e-3, beta=beta)
    y, s = kernels.lrn_forward(x, size, 1e-3, beta, 2.0)
    gradient = kernels.lrn_backward(upstream, x, s, size, 1e-3, beta)
    assert _close(y, expected, 1e-5)
    assert _close(gradient, expected_gradient, 1e-5)


def test_triton_backward_accepts_an_upstream_gradient_in_another_layout(kernels):
    x = relu_like(2, 16, 4, 4).contiguous(memory_format=torch.channels_last)
    upstream = torch.randn(2, 16, 4, 4)  # contiguous, while x is channels_last
    _, expected_gradient = formula_and_gradient(x, upstream)
    _, s = kernels.lrn_forward(x, 5, 1e-4, 0.75, 2.0)
    assert _close(kernels.lrn_backward(upstream, x, s, 5, 1e-4, 0.75), expected_gradient, 1e-5)
