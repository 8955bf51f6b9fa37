"""Short binary codes for fast retrieval (§6.1): fc7 vectors searched by Hamming distance.

§6.1: "computing similarity by using Euclidean distance between two 4096-dimensional, real-valued
vectors is inefficient, but it could be made efficient by training an auto-encoder to compress
these vectors to short binary codes." Three ways to make the codes:

- `autoencoder`: semantic hashing (Salakhutdinov & Hinton; Krizhevsky & Hinton 2011, the
  auto-encoder the paper refers to): a code layer of sigmoid units whose inputs get Gaussian noise
  while training, which pushes them to 0 or 1; a linear decoder reconstructs the standardised
  fc7 vector; a code bit is the unit thresholded at 0.5. Its layers start at the PCA codes'
  projection (trained from a random start on little data it did worse than chance).
- `pca`: the sign of the projection on the leading principal components (a baseline).
- `random`: the sign of a random Gaussian projection (locality-sensitive hashing; a baseline).

The search is faiss's `IndexBinaryFlat`: exact Hamming k-NN over packed codes with hardware
popcount, multi-threaded and heavily used; a hand-written numpy version would need a popcount
table, its own partial sort and would still be slower. `evaluate_codes` measures the recall of
the exact fc7 neighbours and the speed-up against the exact search of `retrieval.py`.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from alexnet.analysis.retrieval import nearest_neighbours

METHODS = ("autoencoder", "pca", "random")
Encoder = Callable[[np.ndarray], np.ndarray]  # (N, D) features -> (N, bits) bool codes


def _standardiser(database: np.ndarray, rows: int = 20_000, seed: int = 0):
    """Mean and std of each feature, from at most `rows` database rows."""
    picked = np.random.default_rng(seed).permutation(len(database))[:rows]
    sample = torch.from_numpy(np.asarray(database[np.sort(picked)], dtype=np.float32))
    return sample, sample.mean(dim=0), sample.std(dim=0).clamp_min(1e-3)


def fit_encoder(
    method: str, database: np.ndarray, bits: int, *, seed: int = 0, passes: int = 10
) -> Encoder:
    """An encoder from fc7 features to `bits`-bit codes, fitted on (a sample of) the database."""
    return CodeFitter(database, bits, seed=seed).encoder(method, passes=passes)


class CodeFitter:
    """Fits each kind of code on one standardised sample of the database, its principal axes
    computed once for the PCA codes and the auto-encoder's start."""

    def __init__(self, database: np.ndarray, bits: int, *, seed: int = 0):
        sample, self.mean, self.std = _standardiser(database, seed=seed)
        self.sample = (sample - self.mean) / self.std  # (S, D)
        self.bits, self.seed = bits, seed

    @functools.cached_property
    def principal_axes(self) -> torch.Tensor:
        return _principal_axes(self.sample, self.bits, self.seed)

    def encoder(self, method: str, *, passes: int = 10) -> Encoder:
        """The encoder of `method`; the auto-encoder sees `passes` times the sample (at most 300
        steps of 256). On the digits demo's fc7 (1,437 × 4,096) recall@10 was 0.640 after 30
        passes, 0.638 after 10, 0.528 after 5: 10 keep it at a third of the time."""
        if method not in METHODS:
            raise ValueError(f"unknown code {method!r}; use one of {', '.join(METHODS)}")
        generator = torch.Generator().manual_seed(self.seed)
        offset = torch.zeros(self.bits)
        if method == "random":
            projection = torch.randn(self.sample.shape[1], self.bits, generator=generator)
        else:
            projection = self.principal_axes  # (D, bits)
        if method == "autoencoder":  # started from the PCA codes, so it begins no worse than them
            steps = min(300, -(-passes * len(self.sample) // 256))
            layer = _train_autoencoder(self.sample, projection, generator, steps)
            projection, offset = layer.weight.detach().T, layer.bias.detach()
        mean, std = self.mean, self.std

        def encode(features: np.ndarray) -> np.ndarray:
            standardised = (torch.from_numpy(np.asarray(features, dtype=np.float32)) - mean) / std
            return ((standardised @ projection + offset) > 0).numpy()  # sigmoid(z) > 0.5 <=> z > 0

        return encode


def _principal_axes(sample: torch.Tensor, bits: int, seed: int) -> torch.Tensor:
    """The leading `bits` principal axes (D, bits) of a centred sample; zero columns when there
    are fewer (constant bits, which change no Hamming distance). Randomised SVD (Halko et al.,
    `torch.svd_lowrank`, 4 power iterations): several times faster than the full SVD, the same
    leading axes to 1e-6 (docs/measurements.md, "Evaluation, prediction and the report")."""
    rank = min(bits + 10, *sample.shape)  # 10 extra columns for the randomised range finder
    with torch.random.fork_rng(devices=[]):  # its random start, seeded: the same codes each time
        torch.manual_seed(seed)
        _, _, components = torch.svd_lowrank(sample, q=rank, niter=4)  # (D, rank)
    projection = torch.zeros(sample.shape[1], bits)
    kept = min(bits, rank)
    projection[:, :kept] = components[:, :kept]
    return projection


def _train_autoencoder(
    sample: torch.Tensor,
    start: torch.Tensor,
    generator: torch.Generator,
    steps: int,
    noise: float = 1.0,
) -> nn.Linear:
    """The code layer of a noisy-sigmoid auto-encoder trained to reconstruct `sample` (S, D),
    its encoder started at the projection `start` (D, bits) and its decoder at the transpose."""
    encoder, decoder = nn.Linear(*start.shape), nn.Linear(start.shape[1], start.shape[0])
    with torch.no_grad():
        encoder.weight.copy_(start.T)
        encoder.bias.zero_()
        decoder.weight.copy_(start)
        decoder.bias.zero_()
    optimizer = torch.optim.Adam([*encoder.parameters(), *decoder.parameters()], lr=1e-3)
    for _ in range(steps):
        batch = sample[torch.randint(len(sample), (min(256, len(sample)),), generator=generator)]
        logits = encoder(batch)
        codes = torch.sigmoid(logits + noise * torch.randn(logits.shape, generator=generator))
        loss = nn.functional.mse_loss(decoder(codes), batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return encoder


def encode_in_chunks(encode: Encoder, features: np.ndarray, rows: int = 65_536) -> np.ndarray:
    """Packed codes (N, bits / 8) uint8 of a possibly memory-mapped feature array."""
    return np.concatenate(
        [np.packbits(encode(features[i : i + rows]), axis=1) for i in range(0, len(features), rows)]
    )


def hamming_neighbours(queries: np.ndarray, database: np.ndarray, k: int) -> np.ndarray:
    """Indices (Q, k) of each packed query code's k nearest database codes by Hamming distance."""
    import faiss  # imported here: only the codes need it

    index = faiss.IndexBinaryFlat(database.shape[1] * 8)
    index.add(np.ascontiguousarray(database))
    _, indices = index.search(np.ascontiguousarray(queries), k)
    return indices


def recall(found: np.ndarray, exact: np.ndarray) -> float:
    """The mean fraction of each row of `exact` found in the same row of `found`."""
    pairs = zip(found.tolist(), exact.tolist(), strict=True)
    hits = [len(set(f) & set(e)) / len(e) for f, e in pairs]
    return float(np.mean(hits))


def best_time(search: Callable, repeats: int = 3):
    """(result, the fastest of `repeats` runs in seconds): leaves out first-call set-up."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = search()
        times.append(time.perf_counter() - start)
    return result, min(times)


def evaluate_codes(
    database: np.ndarray,
    queries: np.ndarray,
    *,
    bits: int = 256,
    k: int = 10,
    shortlist: int = 100,
    methods=METHODS,
    seed: int = 0,
) -> dict:
    """Recall@k of the exact fc7 neighbours and search time, per code; the exact search's time.

    recall@k: the share of each query's k exact neighbours among its k Hamming-nearest;
    `recall@k in top-shortlist`: among its `shortlist` Hamming-nearest (to be re-ranked exactly).
    """
    if bits % 8:
        raise ValueError(f"bits must be a multiple of 8, got {bits}")
    k, shortlist = min(k, len(database)), min(shortlist, len(database))
    (exact, _), exact_seconds = best_time(lambda: nearest_neighbours(queries, database, k))
    results = {}
    fitter = CodeFitter(database, bits, seed=seed)
    for method in methods:
        start = time.perf_counter()
        encode = fitter.encoder(method)
        database_codes = encode_in_chunks(encode, database)
        query_codes = encode_in_chunks(encode, queries)
        fitted = time.perf_counter() - start
        found, seconds = best_time(
            lambda: hamming_neighbours(query_codes, database_codes, shortlist)  # noqa: B023
        )
        results[method] = {
            "recall_at_k": recall(found[:, :k], exact),
            f"recall_at_k_in_top_{shortlist}": recall(found, exact),
            "search_seconds": seconds,
            "speedup": exact_seconds / max(seconds, 1e-9),
            "fit_and_encode_seconds": fitted,
        }
    return {
        "bits": bits,
        "k": k,
        "shortlist": shortlist,
        "queries": len(queries),
        "database": len(database),
        "exact_search_seconds": exact_seconds,
        "codes": results,
    }
