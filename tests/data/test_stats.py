"""Mean image, channel std and RGB PCA of the training set, and their cache (data/stats.py, §2)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from data_helpers import save_image, write_tree

from alexnet.data import ArraySource, DataStats, compute_stats, open_source
from alexnet.data.sources.downsample import Prepare
from alexnet.data.stats import StatsSums
from alexnet.files import cache_dir


def numpy_stats(source, size: int) -> dict[str, np.ndarray]:
    """The same statistics the straightforward way: every prepared image in memory."""
    images = []
    for index in range(len(source)):
        item = source[index]
        if item is not None:
            images.append(Prepare(size)(item[0]).numpy().transpose(1, 2, 0).astype(np.float64))
    stack = np.stack(images)  # (N, S, S, 3)
    mean_image = stack.mean(axis=0)  # (S, S, 3)
    pixels = stack.reshape(-1, 3)
    covariance = np.cov(pixels, rowvar=False, bias=True)
    channel_std = (stack - mean_image).reshape(-1, 3).std(axis=0)
    return {
        "mean_image": mean_image.transpose(2, 0, 1),
        "covariance": covariance,
        "std": channel_std,
    }


def test_stats_match_numpy(image_tree: Path):
    splits = open_source(str(image_tree), val_fraction=0.25)
    stats = compute_stats(splits.train, 5, cache_dir=None, progress=False)
    expected = numpy_stats(splits.train, 5)
    assert stats.image_size == 5 and stats.mean_image.shape == (3, 5, 5)
    np.testing.assert_allclose(stats.mean_image.numpy(), expected["mean_image"], rtol=1e-6)
    np.testing.assert_allclose(stats.channel_std.numpy(), expected["std"], rtol=1e-5)
    values, vectors = np.linalg.eigh(expected["covariance"])
    np.testing.assert_allclose(stats.eigenvalues.numpy(), values[::-1], rtol=1e-4)
    for i in range(3):
        np.testing.assert_allclose(
            np.abs(stats.eigenvectors[:, i].numpy()), np.abs(vectors[:, 2 - i]), atol=1e-4
        )


def test_mean_image_of_a_known_set():
    images = np.zeros((2, 4, 4, 3), np.uint8)
    images[0] = 10
    images[1, :, :, 0] = 30  # red only
    stats = compute_stats(
        ArraySource("two", ["a"], images, [0, 0]), 4, cache_dir=None, progress=False
    )
    assert torch.equal(stats.mean_image[0], torch.full((4, 4), 20.0))
    assert torch.equal(stats.mean_image[1], torch.full((4, 4), 5.0))
    assert stats.channel_std.tolist() == pytest.approx([10.0, 5.0, 5.0])


def test_state_dict_round_trips_through_a_weights_only_load(tmp_path: Path):
    stats = DataStats(4, torch.rand(3, 4, 4), torch.rand(3), torch.rand(3), torch.rand(3, 3))
    torch.save(stats.state_dict(), tmp_path / "s.pt")
    loaded = DataStats.from_state_dict(torch.load(tmp_path / "s.pt", weights_only=True))
    assert loaded.image_size == 4
    for name in ("mean_image", "channel_std", "eigenvalues", "eigenvectors"):
        assert torch.equal(getattr(loaded, name), getattr(stats, name))


def cache_files(folder: Path) -> list[str]:
    return sorted(path.name for path in folder.glob("stats-*.pt"))


def test_cache_is_reused_and_keyed_by_data_and_size(tmp_path: Path):
    root = write_tree(tmp_path / "tree", {"a": 3, "b": 3})
    cache = tmp_path / "cache"
    train = open_source(str(root), val_fraction=0.4).train
    first = compute_stats(train, 4, cache_dir=cache, progress=False)
    assert len(cache_files(cache)) == 1
    assert not list(cache.glob("*.tmp"))

    def fail(*args, **kwargs):
        raise AssertionError("the cached statistics should have been used")

    original_load, train.load = train.load, fail
    again = compute_stats(train, 4, cache_dir=cache, progress=False)
    assert torch.equal(again.mean_image, first.mean_image)
    train.load = original_load

    compute_stats(train, 6, cache_dir=cache, progress=False)  # another size: another key
    assert len(cache_files(cache)) == 2
    changed = Path(train.path(0))
    save_image(changed, np.zeros((9, 9, 3), np.uint8))
    os.utime(changed, ns=(1, 1))
    changed_train = open_source(str(root), val_fraction=0.4).train
    compute_stats(changed_train, 4, cache_dir=cache, progress=False)  # other data: another key
    assert len(cache_files(cache)) == 3


def test_array_sources_are_keyed_by_their_bytes():
    images = np.zeros((2, 4, 4, 3), np.uint8)
    same = ArraySource("x", ["a"], images.copy(), [0, 0]).fingerprint()
    assert ArraySource("y", ["a"], images, [0, 0]).fingerprint() == same
    images[1, 2, 2, 1] = 1
    assert ArraySource("x", ["a"], images, [0, 0]).fingerprint() != same


def test_an_unreadable_cache_file_is_computed_again(tmp_path: Path):
    train = ArraySource("x", ["a"], np.full((2, 4, 4, 3), 9, np.uint8), [0, 0])
    compute_stats(train, 4, cache_dir=tmp_path, progress=False)
    (cache_file,) = tmp_path.glob("stats-*.pt")
    cache_file.write_bytes(b"half a file")
    stats = compute_stats(train, 4, cache_dir=tmp_path, progress=False)
    assert torch.equal(stats.mean_image, torch.full((3, 4, 4), 9.0))
    assert DataStats.from_state_dict(torch.load(cache_file, weights_only=True)).image_size == 4


def test_the_sums_do_not_depend_on_how_the_images_are_batched():
    images = torch.randint(0, 256, (10, 3, 6, 6), dtype=torch.uint8)
    whole, pieces, merged = StatsSums(6), StatsSums(6), StatsSums(6)
    whole.add(images)
    for start, stop in [(7, 10), (0, 1), (1, 7)]:  # other batches, another order
        part = StatsSums(6)
        part.add(images[start:stop])
        merged.merge(part)
        pieces.add(images[start:stop])
    flat = images.permute(1, 0, 2, 3).reshape(3, -1).double()  # every pixel, float64
    assert torch.equal(whole.colour_products, (flat @ flat.T).long())
    for sums in (pieces, merged):
        assert torch.equal(sums.pixel_sum, whole.pixel_sum)
        assert torch.equal(sums.colour_products, whole.colour_products)
        assert sums.count == whole.count == 10
        assert torch.equal(sums.finish().mean_image, whole.finish().mean_image)


def test_the_cache_is_one_folder_for_every_run(monkeypatch, tmp_path: Path):
    monkeypatch.setenv("ALEXNET_CACHE", str(tmp_path / "mine"))
    assert cache_dir("stats") == tmp_path / "mine" / "stats"
    monkeypatch.delenv("ALEXNET_CACHE")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert cache_dir("stats") == tmp_path / ".cache" / "alexnet" / "stats"
    kinds = [cache_dir(kind) for kind in ("stats", "downloads", "kernels")]
    assert len(set(kinds)) == 3  # compiled code apart from data and statistics


def test_a_cache_that_cannot_be_written_costs_a_warning_not_the_run(tmp_path: Path, caplog):
    (tmp_path / "a-file").write_text("not a folder")
    train = ArraySource("x", ["a"], np.full((2, 4, 4, 3), 9, np.uint8), [0, 0])
    stats = compute_stats(train, 4, cache_dir=tmp_path / "a-file" / "cache", progress=False)
    assert torch.equal(stats.mean_image, torch.full((3, 4, 4), 9.0))
    assert "cannot cache them" in caplog.text
