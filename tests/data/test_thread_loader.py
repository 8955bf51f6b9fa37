"""A prepared store's loader (data/loading/thread_loader.py, batch_buffers.py) against the
reference, torch's
DataLoader over the same CropItems (make_loader, 0 workers): the same crops pixel for pixel, the
same windows, α and labels, whatever the number of threads; skipped files, skip_steps and ranks
as there; a yielded batch untouched until the next is asked for."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import torch

from alexnet.data import make_batches, make_loader, open_source
from alexnet.data.loading.items import CropItems, collate_crops
from alexnet.data.loading.thread_loader import ThreadedCrops, make_threaded_loader
from alexnet.data.store.prepare import Settings, prepare_store
from alexnet.recipe import DataRecipe

SIZE, CROP = 12, 9
RECIPE = DataRecipe(image_size=SIZE, crop_size=CROP, flip=True, pca_lighting=True)


def make_store(tree: Path, destination: Path, encoding: str):
    """The training split of a store of `tree` made by `alexnet prepare`'s code."""
    settings = Settings(str(tree), SIZE, encoding)
    prepare_store(open_source(str(tree)), destination, settings, workers=0, progress=False)
    return open_source(str(destination)).train


@pytest.fixture(params=["jpeg", "raw"])
def store(request, image_tree, tmp_path):
    return make_store(image_tree, tmp_path / "store", request.param)


def reference(items, batch_size, **options):
    """The DataLoader path in this process: (pixels, windows, alpha, labels, skipped) copies."""
    loader = make_loader(items, batch_size, workers=0, collate=collate_crops, **options)
    return [copied(batch) for batch in loader]


def copied(batch):
    crops, labels, skipped = batch
    return crops.pixels.clone(), crops.windows, crops.alpha, labels, skipped


def assert_same(expected, got) -> None:
    assert len(got) == len(expected)
    for a, b in zip(expected, got, strict=True):
        assert a[0].shape == b[0].shape and torch.equal(a[0], b[0])  # pixel for pixel
        for column in range(1, 4):  # windows, alpha, labels
            assert a[column].dtype == b[column].dtype and torch.equal(a[column], b[column])
        assert a[4] == b[4]  # skipped


@pytest.mark.parametrize("workers", [0, 2])
@pytest.mark.parametrize("train, ten_crop", [(True, False), (False, False), (False, True)])
def test_batches_equal_the_dataloaders(store, workers, train, ten_crop):
    items = CropItems(store, RECIPE, train=train, ten_crop=ten_crop)
    options = dict(train=train, seed=7, epoch=3)
    expected = reference(items, 5, **options)
    loader = make_threaded_loader(items, 5, workers=workers, **options)
    assert len(loader) == len(expected)
    for _ in range(2):  # a second pass (persistent threads for training) gives the same
        assert_same(expected, [copied(batch) for batch in loader])
    crops, _, _ = next(iter(loader))  # cut in the decoder's (c, c, 3) pixel order (crops.py)
    assert crops.pixels.movedim(-3, -1).is_contiguous()


def test_float_batches_equal_the_dataloader_paths(store):
    stats = store.stored_stats(SIZE)
    batches = make_batches(store, RECIPE, stats, 6, train=True, workers=2, seed=1, epoch=1)
    assert isinstance(batches.loader, ThreadedCrops)
    old = make_loader(CropItems(store, RECIPE, train=True), 6, train=True, workers=0, seed=1,
                      epoch=1, collate=collate_crops)  # fmt: skip
    for (images, labels, _), (crops, expected_labels, _) in zip(batches, old, strict=True):
        assert torch.equal(images, batches.transform(crops)) and torch.equal(
            labels, expected_labels
        )


def test_unreadable_stored_images_are_skipped_and_counted(image_tree, tmp_path):
    store = make_store(image_tree, tmp_path / "store", "jpeg")
    data = np.memmap(store.bin_file, dtype=np.uint8, mode="r+")
    for index in (1, 2, 9):  # their JPEG bytes overwritten: they no longer decode
        data[store.offsets[index] : store.offsets[index] + store.lengths[index]] = 7
    data.flush()
    store = open_source(str(tmp_path / "store")).train
    items = CropItems(store, RECIPE, train=False)
    expected = reference(items, 4, train=False)
    assert sum(batch[4] for batch in expected) == 3
    for workers in (0, 2):
        assert_same(expected, [copied(batch) for batch in make_threaded_loader(
            items, 4, train=False, workers=workers)])  # fmt: skip
    lone = [copied(batch) for batch in make_threaded_loader(items, 1, train=False, workers=2)]
    assert lone[1][0].shape[0] == 0 and lone[1][3].shape == (0,) and lone[1][4] == 1


@pytest.mark.parametrize("world", [1, 3])
def test_skip_steps_and_ranks_as_the_dataloader(store, world):
    items = CropItems(store, RECIPE, train=True)
    for rank in range(world):
        options = dict(train=True, seed=2, epoch=0, rank=rank, world=world)
        old = make_loader(items, 6, workers=0, collate=collate_crops, **options)
        new = make_threaded_loader(items, 6, workers=2, **options)
        for loader in (old, new):
            loader.sampler.set_epoch(4, skip_steps=2)
        assert_same([copied(batch) for batch in old], [copied(batch) for batch in new])


def test_a_yielded_batch_is_not_written_until_the_next_is_asked_for(store):
    """The contract: each batch is a view of a ring buffer, reused once the consumer has moved
    on, never while it holds the batch (the threads meanwhile fill every other buffer)."""
    items = CropItems(store, RECIPE, train=True)
    expected = reference(items, 2, train=True)
    loader = make_threaded_loader(items, 2, train=True, workers=2)
    addresses = []
    for step, (crops, _, _) in enumerate(loader):
        time.sleep(0.05)  # the threads run ahead into the other buffers
        assert torch.equal(crops.pixels, expected[step][0])
        addresses.append(crops.pixels.data_ptr())
    ring = 2 * loader.num_workers + 1  # thread_loader.PREFETCH batches a thread, and one held
    assert len(set(addresses)) == ring < len(addresses)  # buffers reused, no new ones


def test_a_pass_left_halfway_gives_its_buffers_back(store):
    items = CropItems(store, RECIPE, train=True)
    expected = reference(items, 3, train=True)
    loader = make_threaded_loader(items, 3, train=True, workers=2)
    next(iter(loader))  # a debug step; the pass is dropped
    assert_same(expected, [copied(batch) for batch in loader])


def test_threads_persist_for_training_only(store):
    training = make_threaded_loader(CropItems(store, RECIPE, train=True), 4, train=True, workers=2)
    validation = make_threaded_loader(
        CropItems(store, RECIPE, train=False), 4, train=False, workers=2
    )
    list(training)
    list(validation)
    assert training.persistent_workers and not validation.persistent_workers
    assert sum(thread.is_alive() for thread in training._threads._threads) == 2  # kept
    assert validation._threads is None and validation._ring is None  # ended, buffers freed


def test_threads_run_torch_on_one_thread_each(store, monkeypatch):
    """Each crop's copy would otherwise start an OpenMP team in every loader thread, teams that
    spin against each other on a small machine (thread_loader.py); the caller keeps its count."""
    counts = []
    pixels = store.pixels

    def recording(index, image_size):
        counts.append(torch.get_num_threads())
        return pixels(index, image_size)

    monkeypatch.setattr(store, "pixels", recording)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)  # as on a 2-core machine, whatever this one has
    try:
        list(make_threaded_loader(CropItems(store, RECIPE, train=True), 4, train=True, workers=2))
        assert counts and set(counts) == {1}
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(threads)


def test_pinned_buffers_for_cuda_and_stores_only(store, image_tree):
    items = CropItems(store, RECIPE, train=True)
    assert make_threaded_loader(items, 4, train=True, workers=0, device="cuda").pin_memory
    assert not make_threaded_loader(items, 4, train=True, workers=0).pin_memory
    stats = store.stored_stats(SIZE)
    folder = make_batches(
        open_source(str(image_tree)).train, RECIPE, stats, 4, train=True, workers=0
    )
    assert not isinstance(folder.loader, ThreadedCrops)  # an image folder: torch's DataLoader


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_pinned_ring_on_cuda_equals_the_cpu(store):
    stats = store.stored_stats(SIZE)
    options = dict(train=True, workers=2, seed=1, gpu_decode=False)
    cpu = list(make_batches(store, RECIPE, stats, 4, **options))
    cuda = make_batches(store, RECIPE, stats, 4, device="cuda", **options)
    for (expected, labels, _), (images, cuda_labels, _) in zip(cpu, cuda, strict=True):
        torch.testing.assert_close(images.cpu(), expected, rtol=0, atol=1e-4)
        assert torch.equal(labels, cuda_labels.cpu())
    assert all(buffer.is_pinned() for buffer in cuda.loader._ring.buffers)
