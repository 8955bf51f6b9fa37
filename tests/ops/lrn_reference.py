"""§3.3 as printed, written out channel by channel in float64: the reference for every LRN path."""

import torch


def window_sum_of_squares_float64(a: torch.Tensor, n=5) -> torch.Tensor:
    """Σ_{j=max(0, i-n/2)}^{min(N-1, i+n/2)} a[j]² for every channel i."""
    a = a.double()
    channels = a.shape[1]
    total = torch.empty_like(a)
    for i in range(channels):
        low, high = max(0, i - n // 2), min(channels - 1, i + n // 2)
        total[:, i] = (a[:, low : high + 1] ** 2).sum(dim=1)
    return total


def lrn_formula_float64(a: torch.Tensor, n=5, alpha=1e-4, beta=0.75, k=2.0) -> torch.Tensor:
    return a.double() / (k + alpha * window_sum_of_squares_float64(a, n)) ** beta


def formula_and_gradient(a: torch.Tensor, upstream: torch.Tensor, **options):
    """The formula's output and autograd's gradient of Σ(out · upstream), both in float64."""
    a64 = a.detach().double().requires_grad_()
    out = lrn_formula_float64(a64, **options)
    (gradient,) = torch.autograd.grad((out * upstream.double()).sum(), a64)
    return out.detach(), gradient


def relu_like(*shape, dtype=torch.float32, scale=60.0, seed=0) -> torch.Tensor:
    """Non-negative values of ReLU-output magnitude (tens), where the sum term really matters."""
    generator = torch.Generator().manual_seed(seed)
    return (torch.rand(*shape, generator=generator, dtype=torch.float64) * scale).to(dtype)
