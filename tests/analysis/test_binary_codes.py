"""§6.1's binary codes: Hamming search against brute force, recall against exact fc7 search."""

import numpy as np
import pytest

from alexnet.analysis.binary_codes import (
    METHODS,
    encode_in_chunks,
    evaluate_codes,
    fit_encoder,
    hamming_neighbours,
    recall,
)
from alexnet.analysis.retrieval import nearest_neighbours


def clustered(count, dim=64, clusters=8, seed=0):
    """ReLU-like features in tight clusters: the exact neighbours are in the query's cluster."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 3, (clusters, dim))
    labels = rng.integers(clusters, size=count)
    return np.maximum(centres[labels] + rng.normal(0, 0.5, (count, dim)), 0).astype(np.float16)


def test_recall_counts_shared_indices():
    assert recall(np.array([[1, 2, 3], [4, 5, 6]]), np.array([[3, 2, 9], [7, 8, 9]])) == 1 / 3


def test_hamming_search_matches_brute_force_distances():
    rng = np.random.default_rng(1)
    database = rng.integers(0, 256, (200, 4), dtype=np.uint8)  # 32-bit codes
    queries = rng.integers(0, 256, (5, 4), dtype=np.uint8)
    found = hamming_neighbours(queries, database, 10)
    bits = np.unpackbits(queries[:, None] ^ database[None], axis=2).sum(axis=2)  # (5, 200)
    found_distances = np.take_along_axis(bits, found, axis=1)
    np.testing.assert_array_equal(found_distances, np.sort(bits, axis=1)[:, :10])


@pytest.mark.parametrize("method", METHODS)
def test_codes_are_bits_of_the_asked_length(method):
    features = clustered(100)
    encode = fit_encoder(method, features, 32)
    codes = encode(features[:3])
    assert codes.shape == (3, 32) and codes.dtype == bool
    assert encode_in_chunks(encode, features, rows=30).shape == (100, 4)


def test_recall_is_measured_against_exact_search_and_beats_chance():
    database, queries = clustered(600), clustered(40, seed=1)
    result = evaluate_codes(database, queries, bits=64, k=10, shortlist=50)
    assert set(result["codes"]) == set(METHODS)
    exact, _ = nearest_neighbours(queries, database, 10)
    for method, figures in result["codes"].items():
        encode = fit_encoder(method, database, 64)
        found = hamming_neighbours(
            encode_in_chunks(encode, queries), encode_in_chunks(encode, database), 50
        )
        assert figures["recall_at_k"] == pytest.approx(recall(found[:, :10], exact)), method
        assert figures["recall_at_k"] > 2 * 10 / 600, method  # chance: k / N
        assert figures["recall_at_k_in_top_50"] >= figures["recall_at_k"]
        assert figures["speedup"] > 0


def test_bits_must_fill_bytes():
    with pytest.raises(ValueError, match="multiple of 8"):
        evaluate_codes(clustered(20), clustered(2), bits=30)
