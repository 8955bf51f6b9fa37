"""PCA lighting (data/lighting.py, §4.1, applied by data/batches.py) against hand-computed
shifts and sample statistics."""

from __future__ import annotations

import math

import pytest
import torch

from alexnet.data import DataStats
from alexnet.data.lighting import draw_alpha, lighting_shift, rgb_pca
from alexnet.data.loading.items import CropBatch
from alexnet.data.transform.batch_transform import BatchTransform
from alexnet.recipe import DataRecipe

# An orthonormal basis (columns), and eigenvalues for it.
S2, S3, S6 = math.sqrt(2), math.sqrt(3), math.sqrt(6)
BASIS = torch.tensor(
    [
        [1 / S3, 1 / S2, 1 / S6],
        [1 / S3, 0.0, -2 / S6],
        [1 / S3, -1 / S2, 1 / S6],
    ]
)
EIGENVALUES = torch.tensor([400.0, 25.0, 4.0])  # standard deviations 20, 5, 2


def test_shift_for_a_fixed_alpha_is_the_hand_computed_one():
    alpha = torch.tensor([0.1, -0.2, 0.05])
    # Σ αᵢ √λᵢ pᵢ = 0.1·20·p1 − 0.2·5·p2 + 0.05·2·p3 = 2·p1 − 1·p2 + 0.1·p3
    expected = [
        2 / S3 - 1 / S2 + 0.1 / S6,
        2 / S3 + 0 - 0.2 / S6,
        2 / S3 + 1 / S2 + 0.1 / S6,
    ]
    shift = lighting_shift(alpha, EIGENVALUES, BASIS)
    assert shift.tolist() == pytest.approx(expected, abs=1e-6)


def test_a_batch_of_draws_gives_each_draws_shift():
    alphas = torch.randn(5, 3)
    batch = lighting_shift(alphas, EIGENVALUES, BASIS)  # (5, 3)
    for alpha, shift in zip(alphas, batch, strict=True):
        torch.testing.assert_close(shift, lighting_shift(alpha, EIGENVALUES, BASIS))


def lit(pixels: torch.Tensor, alphas: torch.Tensor) -> torch.Tensor:
    """uint8 images (B, 3, S, S) with a lighting shift each, by the batched arithmetic (a zero
    mean image, raw scale, no crop)."""
    size = pixels.shape[-1]
    recipe = DataRecipe(image_size=size, crop_size=size, input_scale="raw")
    stats = DataStats(size, torch.zeros(3, size, size), torch.ones(3), EIGENVALUES, BASIS)
    batch = CropBatch(pixels, torch.zeros(len(pixels), 3, dtype=torch.long), alphas)
    return BatchTransform(recipe, stats, "cpu", lighting=True)(batch)


def test_lighting_adds_the_same_shift_to_every_pixel():
    image = torch.randint(0, 256, (1, 3, 5, 5), dtype=torch.uint8)
    torch.manual_seed(7)
    alpha = torch.randn(3) * 0.1  # the draw the workers will make
    torch.manual_seed(7)
    out = lit(image, draw_alpha(0.1)[None])[0]
    expected = lighting_shift(alpha, EIGENVALUES, BASIS).view(3, 1, 1).expand(3, 5, 5)
    assert torch.allclose(out - image[0].float(), expected, atol=1e-4)


def test_over_many_draws_the_shift_is_centred_with_spread_sigma_sqrt_lambda():
    torch.manual_seed(0)
    draws = 20000
    alphas = torch.stack([draw_alpha(0.1) for _ in range(draws)])
    shifts = lit(torch.zeros(draws, 3, 1, 1, dtype=torch.uint8), alphas).view(draws, 3)
    along_axes = shifts @ BASIS  # (draws, 3): the shift's coordinates along p1, p2, p3
    expected_std = 0.1 * EIGENVALUES.sqrt()  # 2.0, 0.5, 0.2
    assert (along_axes.mean(dim=0).abs() < 4 * expected_std / math.sqrt(draws)).all()
    assert torch.allclose(along_axes.std(dim=0), expected_std, rtol=0.03)
    correlation = torch.corrcoef(along_axes.T)
    assert (correlation - torch.eye(3)).abs().max() < 0.05  # independent axes


def test_pca_of_a_known_covariance_recovers_its_eigenpairs():
    covariance = BASIS @ torch.diag(EIGENVALUES) @ BASIS.T
    values, vectors = rgb_pca(covariance)
    assert values.tolist() == pytest.approx(EIGENVALUES.tolist(), rel=1e-5)
    for i in range(3):  # each eigenvector is unique up to sign; ours has its largest entry > 0
        expected = BASIS[:, i] * BASIS[:, i][BASIS[:, i].abs().argmax()].sign()
        assert torch.allclose(vectors[:, i], expected, atol=1e-5)
    assert torch.allclose(vectors @ torch.diag(values) @ vectors.T, covariance, atol=1e-3)
