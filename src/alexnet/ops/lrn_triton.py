"""Triton kernels for LRN (§3.3) on CUDA: forward and closed-form backward (see `ops/lrn.py`).

A (B, C, H, W) tensor is read as (B, C, P) with P = H·W pixels, which holds for both contiguous
(pixel stride 1) and channels_last (channel stride 1) tensors. Each program owns a
(BLOCK_C channels × BLOCK_P pixels) tile of one image and sums the squares of the `size`
channels around each of its channels with `size` shifted loads of the tile: one read of the
activations from memory, the neighbours from cache. Arithmetic is in float32 whatever the
storage (fp32, bf16, fp16); s = k + α·Σx² is kept in float32 for the backward.

Runs on CPU tensors under `TRITON_INTERPRET=1` (set before this module is imported), which is how
the test suite checks it without a GPU. The kernels use Triton's builtins only (`tl.full`, not
`tl.zeros`): the library's own `@jit` helpers stay compiled when Triton was imported before the
variable was set, and cannot run in the interpreter.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from alexnet.ops.lrn import memory_format_of


@triton.jit
def _inverse_power(s, BETA: tl.constexpr):
    """s^-β; rsqrt(s·√s) for the paper's β = 0.75."""
    if BETA == 0.75:
        return tl.rsqrt(s * tl.sqrt(s))
    return tl.exp2(-BETA * tl.log2(s))


@triton.jit
def _tile(C, P, stride_b, stride_c, stride_p, BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr):
    """This program's channel indices, the offsets of its pixels in its image, the pixel mask."""
    channels = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    pixels = tl.program_id(0) * BLOCK_P + tl.arange(0, BLOCK_P)
    image = tl.program_id(2).to(tl.int64) * stride_b
    return channels, image + pixels[None, :] * stride_p, pixels[None, :] < P


@triton.jit
def _shifted(channels, shift, C, stride_c, pixel_offsets, pixel_mask):
    """Offsets and mask of the tile's channels moved by `shift` (masked beyond the ends)."""
    neighbour = channels + shift
    mask = ((neighbour >= 0) & (neighbour < C))[:, None] & pixel_mask
    return neighbour[:, None] * stride_c + pixel_offsets, mask


@triton.jit
def _forward_kernel(
    x_ptr, y_ptr, s_ptr, C, P, stride_b, stride_c, stride_p, alpha, k,
    SIZE: tl.constexpr, BETA: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr,
):  # fmt: skip
    channels, pixels, pixel_mask = _tile(C, P, stride_b, stride_c, stride_p, BLOCK_C, BLOCK_P)
    window = tl.full((BLOCK_C, BLOCK_P), 0.0, tl.float32)
    for j in tl.static_range(SIZE):
        offsets, mask = _shifted(channels, j - SIZE // 2, C, stride_c, pixels, pixel_mask)
        a = tl.load(x_ptr + offsets, mask=mask, other=0.0).to(tl.float32)
        window += a * a
    offsets, mask = _shifted(channels, 0, C, stride_c, pixels, pixel_mask)
    x = tl.load(x_ptr + offsets, mask=mask, other=0.0).to(tl.float32)
    s = k + alpha * window
    tl.store(y_ptr + offsets, (x * _inverse_power(s, BETA)).to(y_ptr.dtype.element_ty), mask=mask)
    tl.store(s_ptr + offsets, s, mask=mask)


@triton.jit
def _backward_kernel(
    dy_ptr, x_ptr, s_ptr, dx_ptr, C, P, stride_b, stride_c, stride_p, alpha,
    SIZE: tl.constexpr, BETA: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr,
):  # fmt: skip
    channels, pixels, pixel_mask = _tile(C, P, stride_b, stride_c, stride_p, BLOCK_C, BLOCK_P)
    window = tl.full((BLOCK_C, BLOCK_P), 0.0, tl.float32)  # Σ_j dy_j·x_j·s_j^-(β+1)
    for j in tl.static_range(SIZE):
        offsets, mask = _shifted(channels, j - SIZE // 2, C, stride_c, pixels, pixel_mask)
        dy = tl.load(dy_ptr + offsets, mask=mask, other=0.0).to(tl.float32)
        x = tl.load(x_ptr + offsets, mask=mask, other=0.0).to(tl.float32)
        s = tl.load(s_ptr + offsets, mask=mask, other=1.0)
        window += dy * x * _inverse_power(s, BETA) / s
    offsets, mask = _shifted(channels, 0, C, stride_c, pixels, pixel_mask)
    dy = tl.load(dy_ptr + offsets, mask=mask, other=0.0).to(tl.float32)
    x = tl.load(x_ptr + offsets, mask=mask, other=0.0).to(tl.float32)
    s = tl.load(s_ptr + offsets, mask=mask, other=1.0)
    dx = dy * _inverse_power(s, BETA) - 2.0 * alpha * BETA * x * window
    tl.store(dx_ptr + offsets, dx.to(dx_ptr.dtype.element_ty), mask=mask)


def _launch_shape(x: Tensor) -> tuple[tuple[int, int, int], dict[str, int], tuple[int, ...]]:
    """Grid, tile sizes and (stride_b, stride_c, stride_p) for a dense (B, C, H, W) tensor.

    Tiles run long along the dimension that is contiguous in memory, so loads coalesce.
    """
    batch, channels, height, width = x.shape
    pixels = height * width
    if x.stride(1) == 1 and channels > 1:  # channels_last: channels are adjacent
        blocks = dict(BLOCK_C=32, BLOCK_P=32)
    else:
        blocks = dict(BLOCK_C=8, BLOCK_P=128)
    grid = (
        triton.cdiv(pixels, blocks["BLOCK_P"]),
        triton.cdiv(channels, blocks["BLOCK_C"]),
        batch,
    )
    return grid, blocks, (x.stride(0), x.stride(1), x.stride(3))


def lrn_forward(x: Tensor, size: int, alpha: float, beta: float, k: float) -> tuple[Tensor, Tensor]:
    """(y, s) for a contiguous or channels_last (B, C, H, W) tensor."""
    x = x.contiguous(memory_format=memory_format_of(x))
    y = torch.empty_like(x)
    s = torch.empty_like(x, dtype=torch.float32)
    grid, blocks, strides = _launch_shape(x)
    _forward_kernel[grid](
        x, y, s, x.shape[1], x.shape[2] * x.shape[3], *strides, alpha, k,
        SIZE=size, BETA=beta, **blocks,
    )  # fmt: skip
    return y, s


def lrn_backward(
    grad_y: Tensor, x: Tensor, s: Tensor, size: int, alpha: float, beta: float
) -> Tensor:
    """dx from dy and the forward's x and s; dy is brought to x's memory format."""
    memory_format = memory_format_of(x)
    x = x.contiguous(memory_format=memory_format)
    grad_y = grad_y.contiguous(memory_format=memory_format)
    s = s.contiguous(memory_format=memory_format)
    grad_x = torch.empty_like(x)
    grid, blocks, strides = _launch_shape(x)
    _backward_kernel[grid](
        grad_y, x, s, grad_x, x.shape[1], x.shape[2] * x.shape[3], *strides, alpha,
        SIZE=size, BETA=beta, **blocks,
    )  # fmt: skip
    return grad_x
