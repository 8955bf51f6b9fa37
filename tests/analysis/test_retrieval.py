"""fc7 features cached per checkpoint, and exact neighbour search against brute force (§6.1)."""

import numpy as np
import pytest
import torch

from alexnet import load
from alexnet.analysis.retrieval import cached_features, nearest_neighbours
from alexnet.data import open_splits
from alexnet.inference import TrainedNetwork
from alexnet.run import checkpoint
from alexnet.train import fit
from tests.test_train import tiny_recipe


def test_chunked_search_equals_brute_force_and_skips_unusable_rows(tmp_path):
    rng = np.random.default_rng(0)
    database = rng.normal(size=(300, 16)).astype(np.float16)
    path = tmp_path / "features.npy"
    np.save(path, database)
    mapped = np.load(path, mmap_mode="r")  # as the cache is read
    queries = rng.normal(size=(7, 16)).astype(np.float32)
    usable = rng.random(300) > 0.2
    found, distances = nearest_neighbours(
        queries, mapped, 5, usable=usable, chunk_bytes=4 * 40 * 23
    )
    brute = torch.cdist(torch.from_numpy(queries).double(), torch.from_numpy(database).double())
    brute[:, ~torch.from_numpy(usable)] = torch.inf
    expected = brute.topk(5, largest=False)
    np.testing.assert_array_equal(found, expected.indices.numpy())
    np.testing.assert_allclose(distances, expected.values.numpy(), rtol=1e-4)


def test_fewer_rows_than_k_gives_every_row():
    found, _ = nearest_neighbours(np.zeros((2, 3)), np.ones((2, 3), dtype=np.float16), 6)
    assert found.shape == (2, 2)


@pytest.fixture(scope="module")
def run(tmp_path_factory, colour_tree):
    run = tmp_path_factory.mktemp("retrieval") / "run"
    fit(tiny_recipe(colour_tree, epochs=1), run, progress=False)
    return run


def test_features_are_fc7_cached_as_float16(run, monkeypatch):
    net = load(run)
    source = open_splits(net_recipe(net)).train
    features = cached_features(net.path, lambda: net, source, "train")
    assert features.vectors.dtype == np.float16 and features.vectors.shape == (len(source), 4096)
    assert features.readable.all()
    expected = net.embed([source.load(i)[0] for i in range(len(source))])
    torch.testing.assert_close(
        torch.from_numpy(np.asarray(features.vectors, dtype=np.float32)), expected,
        rtol=2e-3, atol=2e-3,
    )  # fmt: skip
    monkeypatch.setattr(TrainedNetwork, "embed_source", None)  # a second call reads the cache
    again = cached_features(net.path, lambda: net, source, "train")
    np.testing.assert_array_equal(again.vectors, features.vectors)
    assert list((run / "cache").glob("*.tmp")) == []


def net_recipe(net):
    return checkpoint.recipe_of(checkpoint.load(net.path)).data
