"""PCA colour augmentation, the paper's "altering the intensities of the RGB channels" (§4.1).

PCA of the training set's RGB pixel values gives the eigenvalues λᵢ and eigenvectors pᵢ of their
3×3 covariance (stats.py computes the covariance over every pixel of every prepared training
image). Each time an image is used for training, αᵢ ~ N(0, σ), σ = 0.1, is drawn once, and one
RGB shift is added to all its pixels.

The size of the shift. The paper prints [p1 p2 p3][α1λ1 α2λ2 α3λ3]ᵀ. With λ the covariance's
eigenvalues that is not in pixel units (λ is a squared pixel value): on ImageNet's 0-255 pixels
it would shift colours by σλ₁, hundreds of grey levels, several times the pixels' own spread.
Krizhevsky's own data provider (cuda-convnet2, `ColorNoiseMakerThread`) multiplies α by
`pca_stdevs`, the standard deviation along each principal axis. So does this module:

    shift = Σ αᵢ √λᵢ pᵢ,   i.e. along axis pᵢ the shift's standard deviation is σ√λᵢ,

which is independent of the pixel scale. `DataStats.eigenvalues` holds the λᵢ themselves.
"""

from __future__ import annotations

import torch


def rgb_pca(covariance: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Eigenvalues (3,), descending, and eigenvectors (3, 3), column i for eigenvalue i.

    Each eigenvector's largest-magnitude component is made positive, so the result is unique.
    """
    values, vectors = torch.linalg.eigh(covariance.double())  # ascending
    order = values.argsort(descending=True)
    values, vectors = values[order], vectors[:, order]
    largest = vectors.gather(0, vectors.abs().argmax(dim=0, keepdim=True))  # (1, 3)
    return values.clamp_min(0).float(), (vectors * largest.sign()).float()


def draw_alpha(std: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """One draw of α (3,), αᵢ ~ N(0, std), from `generator` (torch's global one when None)."""
    return torch.randn(3, generator=generator).mul_(std)


def lighting_shift(
    alpha: torch.Tensor, eigenvalues: torch.Tensor, eigenvectors: torch.Tensor
) -> torch.Tensor:
    """The RGB shift Σ αᵢ √λᵢ pᵢ: (3,) for one draw of α (3,), (B, 3) for a batch (B, 3)."""
    return (alpha * eigenvalues.sqrt()) @ eigenvectors.T
