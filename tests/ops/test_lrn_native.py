"""LRN's compiled CPU kernel (ops/lrn_native.py, lrn_cpu.c): values and gradients against the
float64 formula, the op's choice of kernel, the same bits however the images are shared among
threads, and the torch operations when no kernel can be built."""

import logging
import subprocess
import sys

import pytest
import torch
from lrn_reference import formula_and_gradient, relu_like

from alexnet.model import LocalResponseNorm
from alexnet.ops import lrn_native


@pytest.fixture
def kernels():
    if lrn_native.library() is None:
        pytest.skip("no C compiler here: the torch operations run instead (tested below)")
    return lrn_native


@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last])
@pytest.mark.parametrize(
    ("size", "beta", "k", "channels"),
    [(5, 0.75, 2.0, 12), (3, 0.5, 1.0, 10), (7, 1.0, 2.0, 9), (5, 0.75, 2.0, 3)],  # 3 < size
)
def test_compiled_kernels_follow_the_formula(kernels, size, beta, k, channels, memory_format):
    a = relu_like(3, channels, 5, 6, scale=80).contiguous(memory_format=memory_format)
    upstream = torch.randn(3, channels, 5, 6).contiguous(memory_format=memory_format)
    expected, expected_gradient = formula_and_gradient(
        a, upstream, n=size, alpha=1e-3, beta=beta, k=k
    )
    layout = {torch.contiguous_format: "nchw", torch.channels_last: "nhwc"}[memory_format]
    assert kernels.layout_of(a) == layout
    y, s = kernels.forward(a, size, 1e-3, beta, k)
    gradient = kernels.backward(upstream, a, s, size, 1e-3, beta)
    assert y.is_contiguous(memory_format=memory_format)
    assert gradient.is_contiguous(memory_format=memory_format)
    assert ((y.double() - expected).abs() / expected.abs().clamp_min(1e-6)).max() < 1e-5
    scale = expected_gradient.abs().max()
    assert (gradient.double() - expected_gradient).abs().max() < 1e-5 * scale


def test_the_op_runs_the_compiled_kernels_for_float32_cpu_tensors(kernels, monkeypatch):
    calls = []
    forward = kernels.forward
    monkeypatch.setattr(kernels, "forward", lambda *args: calls.append(args) or forward(*args))
    a = relu_like(2, 8, 4, 4)
    native = LocalResponseNorm()(a)
    LocalResponseNorm()(a.contiguous(memory_format=torch.channels_last))
    assert len(calls) == 2
    LocalResponseNorm()(a.double())
    LocalResponseNorm()(a[:, :, :, :3])  # neither order: a view
    assert len(calls) == 2  # the torch operations take the others
    monkeypatch.setattr(kernels, "ENABLED", False)
    assert torch.allclose(LocalResponseNorm()(a), native, rtol=1e-6)
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
        y, s = kernels.forward(a, 5, 1e-4, 0.75, 2.0)
        gradient = kernels.backward(upstream, a, s, 5, 1e-4, 0.75)
        torch.set_num_threads(threads)
        y_shared, s_shared = kernels.forward(a, 5, 1e-4, 0.75, 2.0)
        gradient_shared = kernels.backward(upstream, a, s_shared, 5, 1e-4, 0.75)
    finally:
        torch.set_num_threads(before)
    assert set(handed_out) == ({threads} if threads > 1 else set())
    assert torch.equal(y, y_shared) and torch.equal(s, s_shared)
    assert torch.equal(gradient, gradient_shared)


@pytest.fixture
def empty_cache(monkeypatch, tmp_path):
    """A cache folder with nothing built in it; `library()` forgotten before and after (the
    next test builds, or finds, the real one)."""
    monkeypatch.setenv("ALEXNET_CACHE", str(tmp_path))
    lrn_native.library.cache_clear()
    yield tmp_path
    lrn_native.library.cache_clear()


def test_without_a_compiler_the_torch_operations_run_with_one_warning(
    empty_cache, monkeypatch, caplog
):
    monkeypatch.setenv("CC", str(empty_cache / "no-such-compiler"))
    with caplog.at_level(logging.WARNING, logger="alexnet.native"):
        assert lrn_native.library() is None
        a = relu_like(2, 8, 4, 4).requires_grad_()
        y = LocalResponseNorm()(a)
        y.sum().backward()
    warnings = [r for r in caplog.records if "compiled CPU kernel is unavailable" in r.message]
    assert len(warnings) == 1
    expected, _ = formula_and_gradient(a, torch.ones_like(a), alpha=1e-4)
    assert torch.allclose(y.double(), expected, rtol=1e-5)
    assert not (empty_cache / "native").exists() or not any((empty_cache / "native").iterdir())


def test_the_library_is_built_once_per_machine_into_the_cache(empty_cache):
    if lrn_native.library() is None:
        pytest.skip("no C compiler here")
    (built,) = (empty_cache / "native").iterdir()
    assert built.suffix == ".so"
    stamp = built.stat().st_mtime_ns
    lrn_native.library.cache_clear()
    assert lrn_native.library() is not None  # as in a new process: found, not built again
    assert built.stat().st_mtime_ns == stamp


def test_a_damaged_library_in_the_cache_is_built_again(empty_cache):
    if lrn_native.library() is None:
        pytest.skip("no C compiler here")
    (built,) = (empty_cache / "native").iterdir()
    built.unlink()  # this process has it mapped: a new file, not new bytes in that one
    built.write_bytes(b"not a shared library")  # a damaged file in a shared cache
    # A new process (this one would be handed the library it already has by that name):
    loads = "from alexnet.ops import lrn_native; assert lrn_native.library() is not None"
    subprocess.run([sys.executable, "-c", loads], check=True, timeout=120)
    assert built.read_bytes()[:4] == b"\x7fELF"  # built again


def test_a_gradient_in_the_other_memory_order_still_takes_the_kernel(kernels, monkeypatch):
    calls = []
    backward = kernels.backward
    monkeypatch.setattr(kernels, "backward", lambda *args: calls.append(args) or backward(*args))
    a = relu_like(2, 8, 4, 4, scale=80).contiguous(memory_format=torch.channels_last)
    upstream = torch.randn(2, 8, 4, 4)  # contiguous, as a loss's gradient may come
    _, expected_gradient = formula_and_gradient(a, upstream, alpha=1e-4)
    x = a.clone().requires_grad_()
    (LocalResponseNorm()(x) * upstream).sum().backward()
    assert len(calls) == 1
    assert (x.grad.double() - expected_gradient).abs().max() < 1e-6 * expected_gradient.abs().max()
