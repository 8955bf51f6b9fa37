"""Figures: the conv1 grid keeps the towers apart (Figure 3); curves are written as PNGs."""

import torch
from PIL import Image

from alexnet import AlexNet
from alexnet.run.epoch_plots import kernel_grid, plot_conv1, plot_curves


def test_kernel_grid_places_each_tower_in_its_own_block():
    weights = torch.zeros(96, 3, 11, 11)
    weights[:48, 0] = 1.0  # tower one: pure red kernels
    weights[48:, 2] = 1.0  # tower two: pure blue kernels
    grid = kernel_grid(weights, [range(0, 48), range(48, 96)], per_row=16)
    # 3 rows of 12-px cells + 1 border per tower, plus a gap of one cell between them
    assert grid.shape == (2 * (3 * 12 + 1) + 12, 16 * 12 + 1, 3)
    first_kernel = grid[1:12, 1:12]
    assert torch.equal(first_kernel[..., 0], torch.ones(11, 11))
    assert torch.equal(first_kernel[..., 2], torch.zeros(11, 11))
    second_block_top = 3 * 12 + 1 + 12 + 1
    tower_two_kernel = grid[second_block_top : second_block_top + 11, 1:12]
    assert torch.equal(tower_two_kernel[..., 2], torch.ones(11, 11))
    assert torch.equal(tower_two_kernel[..., 0], torch.zeros(11, 11))


def test_kernel_grid_scales_each_kernel_to_unit_range():
    weights = torch.randn(4, 3, 5, 5) * torch.tensor([1.0, 10.0, 100.0, 0.01])[:, None, None, None]
    grid = kernel_grid(weights, [range(4)], per_row=4)
    for slot in range(4):
        cell = grid[1:6, 1 + 6 * slot : 6 + 6 * slot]
        assert abs(cell.min().item()) < 1e-6 and abs(cell.max().item() - 1) < 1e-6


def test_for_grey_images_the_grid_shows_each_kernels_channel_sum():
    weights = torch.randn(2, 3, 5, 5)
    grid = kernel_grid(weights, [range(2)], per_row=2, grey=True)
    for slot in range(2):
        cell = grid[1:6, 1 + 6 * slot : 6 + 6 * slot]  # (5, 5, 3)
        total = weights[slot].sum(dim=0)
        expected = (total - total.min()) / (total.max() - total.min())
        for channel in range(3):
            torch.testing.assert_close(cell[..., channel], expected)


def test_grey_is_read_from_the_colour_covariance():
    from alexnet.data import DataStats

    def stats(eigenvalues):
        return DataStats(4, torch.zeros(3, 4, 4), torch.ones(3), torch.tensor(eigenvalues),
                         torch.eye(3))  # fmt: skip

    assert stats([3000.0, 0.0, 0.0]).grey
    assert not stats([3000.0, 40.0, 2.0]).grey


def test_plots_are_written(tmp_path):
    model = AlexNet()
    plot_conv1(model.learned_layers()["conv1"].weight, model.conv1_towers(), tmp_path / "conv1.png")
    records = [
        {
            "epoch": e,
            "lr": lr,
            "train_loss": 2 / e,
            "val_loss": 2.2 / e,
            "train_top1_error": 0.5 / e,
            "val_top1_error": 0.6 / e,
            "val_top5_error": 0.2 / e,
        }
        for e, lr in [(1, 0.01), (2, 0.01), (3, 0.001)]
    ]
    plot_curves(records, tmp_path / "curves.png")
    for name in ("conv1.png", "curves.png"):
        with Image.open(tmp_path / name) as image:
            assert image.size[0] > 300 and image.size[1] > 200
    assert sorted(p.name for p in tmp_path.iterdir()) == ["conv1.png", "curves.png"]


def test_figure_1_and_4_are_written(tmp_path):
    import numpy as np

    from alexnet.analysis.plots import (
        Neighbours,
        Top5,
        plot_neighbours,
        plot_top5,
        plot_training_error,
    )

    image = np.zeros((8, 8, 3), dtype=np.uint8)
    plot_top5([Top5(image, "3", ["3", "8", "5", "1", "0"], [0.6, 0.2, 0.1, 0.05, 0.05])] * 3,
              tmp_path / "top5.png")  # fmt: skip
    plot_neighbours([Neighbours(image, "3", [image] * 6, ["3"] * 6, [1.0] * 6)] * 2,
                    tmp_path / "neighbours.png")  # fmt: skip
    plot_training_error({"relu": [([0, 1], [0.9, 0.2])] * 2, "tanh": [([0, 1], [0.9, 0.5])]},
                        tmp_path / "fig1.png", floor=0.3)  # fmt: skip
    for name in ("top5.png", "neighbours.png", "fig1.png"):
        assert (tmp_path / name).read_bytes()[:4] == b"\x89PNG"


def test_neighbour_images_are_fitted_to_their_cell_keeping_shape_and_pixels():
    import numpy as np

    from alexnet.analysis.plots import _fitted

    checker = np.kron(np.indices((8, 8)).sum(axis=0) % 2, np.ones((1, 1))).astype(np.uint8) * 255
    fitted = _fitted(checker, 128)  # grey 8×8, blown up: every pixel a 16×16 block, RGB
    assert fitted.shape == (128, 128, 3)
    np.testing.assert_array_equal(fitted[:, :, 0], np.kron(checker, np.ones((16, 16))))
    wide = np.zeros((300, 600, 3), dtype=np.uint8)  # larger than the cell: filtered down
    assert _fitted(wide, 128).shape == (64, 128, 3)
