"""Batches copied one ahead (data/loading/copy_ahead.py): the next batch is taken before one is
handed over, in order, and the batches are those the loader gives without it (on a CPU with a
copy standing in for the device's; on CUDA under a busy step stream)."""

from __future__ import annotations

import pytest
import torch

from alexnet.data import make_batches
from alexnet.data.loading.copy_ahead import CopiedAhead, one_ahead
from alexnet.data.loading.items import CropItems
from alexnet.data.loading.thread_loader import make_threaded_loader
from tests.data.test_thread_loader import RECIPE, SIZE, assert_same, copied, make_store, reference


@pytest.fixture(params=["jpeg", "raw"])
def store(request, image_tree, tmp_path):
    return make_store(image_tree, tmp_path / "store", request.param)


def test_the_next_is_taken_before_one_is_handed_over():
    events, values = [], iter([1, 2, 3])

    def take():
        value = next(values, None)
        events.append(("take", value))
        return value

    def hand_over(value):
        events.append(("hand over", value))
        return 10 * value

    assert list(one_ahead(take, hand_over)) == [10, 20, 30]
    assert events == [("take", 1), ("take", 2), ("hand over", 1), ("take", 3), ("hand over", 2),
                      ("take", None), ("hand over", 3)]  # fmt: skip
    assert list(one_ahead(lambda: None, hand_over)) == []


@pytest.mark.parametrize("workers", [0, 2])
def test_a_loaders_batches_copied_ahead_are_its_batches_in_order(store, workers):
    # A ring buffer is written again once the next batch is asked for: taken one ahead, each
    # batch must have been copied by then (on CUDA, queued; here a copy on the spot).
    items = CropItems(store, RECIPE, train=True)
    options = dict(train=True, seed=7, epoch=2)
    expected = reference(items, 3, **options)
    batches = iter(make_threaded_loader(items, 3, workers=workers, **options))

    def take():
        batch = next(batches, None)
        return None if batch is None else copied(batch)

    assert_same(expected, list(one_ahead(take, lambda batch: batch)))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_on_cuda_the_copies_ahead_are_the_loaders_batches_under_a_busy_step(store):
    # a JPEG store hands over its bytes (decoded on the device), a raw one crops in pinned rings
    options = dict(train=True, seed=1)
    batches = make_batches(store, RECIPE, store.stored_stats(SIZE), 4, device="cuda", workers=2,
                           **options)  # fmt: skip
    encoded = store.encoded(0) is not None
    expected = reference(CropItems(store, RECIPE, train=True, encoded=encoded), 4, **options)
    got = []
    for crops, labels, skipped in CopiedAhead(batches.loader, torch.device("cuda")):
        torch.cuda._sleep(50_000_000)  # the step on this batch, while the next one is copied
        assert crops.windows.is_cuda and labels.is_cuda and crops.pixels.is_cuda != encoded
        got.append((crops.pixels.cpu(), crops.windows.cpu(), crops.alpha.cpu(), labels.cpu(),
                    skipped))  # fmt: skip
    assert_same(expected, got)
