"""Local response normalization (§3.3) as one operation with a closed-form backward.

    s[i] = k + α · Σ_{j=max(0, i-n/2)}^{min(N-1, i+n/2)} x[j]²        (a sliding sum over channels)
    y[i] = x[i] · s[i]^-β
    dx[i] = dy[i] · s[i]^-β − 2αβ · x[i] · Σ_{j : i ∈ window(j)} dy[j] · x[j] · s[j]^-(β+1)

The window is symmetric, so the sum in the backward is the same sliding sum, taken of
dy·x·s^-(β+1). The forward saves x and s (not autograd's chain of pads, slices and powers); the
backward needs nothing else. `α` here is the α that multiplies the sum: the caller resolves the
paper's or cuda-convnet's convention (model.py).

`alexnet::lrn` is a `torch.library` custom op with a fake kernel, so `torch.compile` sees one node
and no graph break. On the CPU, float32 tensors (contiguous or channels_last) go to the
compiled C kernels of `ops/lrn_native.py` when the caller asks (`native`) and they are built,
with the same bits; everything else runs the vectorised torch code below; on CUDA the Triton
kernels of `ops/lrn_triton.py` run when Triton is there.
"""

from __future__ import annotations

import functools

import torch
from torch import Tensor

from alexnet.ops import lrn_native


def memory_format_of(x: Tensor) -> torch.memory_format:
    """channels_last for a channels_last (B, C, H, W) tensor, else the contiguous format."""
    channels_last = x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
    return torch.channels_last if channels_last else torch.contiguous_format


def arithmetic_dtype(dtype: torch.dtype) -> torch.dtype:
    """bf16 and fp16 are normalized in float32 (and s kept in it); wider types as they are."""
    return torch.promote_types(dtype, torch.float32)


def _padded_buffer(like: Tensor, size: int, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """A (B, C + 2·(size//2), H, W) buffer, zero in the extra end channels, and its middle."""
    half = size // 2
    batch, channels, height, width = like.shape
    buffer = torch.empty(
        (batch, channels + 2 * half, height, width),
        dtype=dtype,
        device=like.device,
        memory_format=memory_format_of(like),
    )
    buffer[:, :half].zero_()
    buffer[:, half + channels :].zero_()
    return buffer, buffer[:, half : half + channels]


def _window_sum(padded: Tensor, channels: int, size: int) -> Tensor:
    """Σ of the `size` channels centred on each channel, from the zero-padded buffer.

    By doubling: sums of 1, 2, 4, ... adjacent channels, each from the one before in one add,
    combined by the binary digits of `size` (5 = 4 + 1: three adds of the buffer, not four).
    """
    parts, offset = [], 0  # views whose sum is the window sum
    run, width = padded, 1  # run[:, i] = Σ padded[:, i : i + width]
    while True:
        if size & width:
            parts.append(run[:, offset : offset + channels])
            offset += width
        if 2 * width > size:
            break
        run = run[:, :-width] + run[:, width:]
        width *= 2
    total = parts[0] + parts[1] if len(parts) > 1 else parts[0].clone()
    for part in parts[2:]:
        total += part
    return total


def inverse_power(s: Tensor, beta: float) -> Tensor:
    """s^-β (a new tensor); for the paper's β = 0.75 as s^-½ / s^¼ from two rsqrt, cheaper than
    `pow`. Only rsqrt and division: each is rounded exactly on every CPU (1/sqrt in hardware),
    where torch's `sqrt` may come from a vector library that rounds otherwise, so lrn_cpu.c
    can give these bits."""
    if beta == 0.75:
        root = s.rsqrt()  # s^-½
        return root.div_(root.rsqrt())  # s^-½ / s^¼
    return s.pow(-beta)


def forward_torch(x: Tensor, size: int, alpha: float, beta: float, k: float):
    """The forward in vectorised torch operations, with few passes and few new tensors: (y, s)."""
    x_wide = x.to(arithmetic_dtype(x.dtype))
    padded, squares = _padded_buffer(x, size, x_wide.dtype)
    torch.mul(x_wide, x_wide, out=squares)
    s = _window_sum(padded, x.shape[1], size).mul_(alpha).add_(k)  # two roundings, no FMA
    return inverse_power(s, beta).mul_(x_wide).to(x.dtype), s


def backward_torch(grad_y: Tensor, x: Tensor, s: Tensor, size: int, alpha: float, beta: float):
    """dx in vectorised torch operations, from dy and the saved x and s."""
    grad_y_wide, x_wide = grad_y.to(s.dtype), x.to(s.dtype)
    scale = inverse_power(s, beta)  # s^-β
    padded, through_window = _padded_buffer(x, size, s.dtype)
    torch.mul(grad_y_wide, x_wide, out=through_window).mul_(scale).div_(s)  # dy·x·s^-(β+1)
    window = _window_sum(padded, x.shape[1], size).mul_(x_wide).mul_(-2 * alpha * beta)
    return scale.mul_(grad_y_wide).add_(window).to(x.dtype)  # each step rounded: lrn_cpu.c's


CHUNK_BYTES = 2 << 20  # the CPU kernels' images per pass: each intermediate at most ~2 MB


def images_per_chunk(x: Tensor) -> int:
    """How many images the CPU kernels take at a time, so that the intermediates of their
    passes (squares, window sums, powers: each the size of the chunk) stay in the cache between
    passes instead of going to memory (docs/measurements.md, "LRN on the CPU"). Each image's
    arithmetic is the same."""
    image_bytes = x.shape[1:].numel() * arithmetic_dtype(x.dtype).itemsize
    return max(1, CHUNK_BYTES // max(1, image_bytes))


@torch.library.custom_op("alexnet::lrn", mutates_args=())
def lrn(
    x: Tensor, size: int, alpha: float, beta: float, k: float, native: bool = False
) -> tuple[Tensor, Tensor]:
    """(y, s): the normalized activations and the denominators' base s = k + α·Σx². `native`:
    the compiled CPU kernel where it takes x (the same bits, faster)."""
    if native and lrn_native.layout_of(x, beta=beta):
        return lrn_native.forward(x, size, alpha, k)
    step = images_per_chunk(x)
    if step >= len(x):
        return forward_torch(x, size, alpha, beta, k)
    y, s = torch.empty_like(x), torch.empty_like(x, dtype=arithmetic_dtype(x.dtype))
    for start in range(0, len(x), step):
        y[start : start + step], s[start : start + step] = forward_torch(
            x[start : start + step], size, alpha, beta, k
        )
    return y, s


@torch.library.custom_op("alexnet::lrn_backward", mutates_args=())
def lrn_backward(
    grad_y: Tensor, x: Tensor, s: Tensor, size: int, alpha: float, beta: float, native: bool = False
) -> Tensor:
    """dx from dy and the saved x and s (the closed form in the module's docstring)."""
    takes = native and lrn_native.layout_of(x, s, beta=beta) and grad_y.dtype == x.dtype
    if takes:  # dy in x's order: one copy at most
        grad_y = grad_y.contiguous(memory_format=memory_format_of(x))
        return lrn_native.backward(grad_y, x, s, size, alpha)
    step = images_per_chunk(x)
    if step >= len(x):
        return backward_torch(grad_y, x, s, size, alpha, beta)
    grad_x = torch.empty_like(x)
    for start in range(0, len(x), step):
        part = slice(start, start + step)
        grad_x[part] = backward_torch(grad_y[part], x[part], s[part], size, alpha, beta)
    return grad_x


@lrn.register_kernel("cuda")
def _(
    x: Tensor, size: int, alpha: float, beta: float, k: float, native: bool = False
) -> tuple[Tensor, Tensor]:
    kernels = _triton_kernels()
    if kernels is None:
        return forward_torch(x, size, alpha, beta, k)
    return kernels.lrn_forward(x, size, alpha, beta, k)


@lrn_backward.register_kernel("cuda")
def _(
    grad_y: Tensor, x: Tensor, s: Tensor, size: int, alpha: float, beta: float, native: bool = False
) -> Tensor:
    kernels = _triton_kernels()
    if kernels is None:
        return backward_torch(grad_y, x, s, size, alpha, beta)
    return kernels.lrn_backward(grad_y, x, s, size, alpha, beta)


@functools.cache
def _triton_kernels():
    """`ops/lrn_triton.py`, imported on first use on CUDA; None where Triton is missing."""
    try:
        from alexnet.ops import lrn_triton
    except ImportError:
        return None
    return lrn_triton


@lrn.register_fake
def _(
    x: Tensor, size: int, alpha: float, beta: float, k: float, native: bool = False
) -> tuple[Tensor, Tensor]:
    return torch.empty_like(x), torch.empty_like(x, dtype=arithmetic_dtype(x.dtype))


@lrn_backward.register_fake
def _(
    grad_y: Tensor, x: Tensor, s: Tensor, size: int, alpha: float, beta: float, native: bool = False
) -> Tensor:
    return torch.empty_like(x)


def _save_for_backward(ctx, inputs, output) -> None:  # noqa: ANN001 - torch.library's signature
    x, size, alpha, beta, _, native = inputs
    ctx.save_for_backward(x, output[1])
    ctx.size, ctx.alpha, ctx.beta, ctx.native = size, alpha, beta, native


def _backward(ctx, grad_y: Tensor, _grad_s: Tensor):  # noqa: ANN001, ANN202
    x, s = ctx.saved_tensors
    grad_x = lrn_backward(grad_y, x, s, ctx.size, ctx.alpha, ctx.beta, ctx.native)
    return grad_x, None, None, None, None, None


lrn.register_autograd(_backward, setup_context=_save_for_backward)


def local_response_norm(
    x: Tensor, size: int, alpha: float, beta: float, k: float, native: bool = False
) -> Tensor:
    """y = x / (k + α·Σ_window x²)^β over channels of a (B, C, H, W) tensor (§3.3); `native`:
    the compiled CPU kernel where it is built (ops/lrn_native.py)."""
    return lrn(x, size, alpha, beta, k, native)[0]
