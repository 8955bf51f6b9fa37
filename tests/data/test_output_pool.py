"""The CPU's float batches reuse their memory only once nothing holds it
(data/transform/output_pool.py)."""

from __future__ import annotations

import torch

from alexnet.data.loading.items import channels_last_empty
from alexnet.data.transform.output_pool import KEPT, ReusedImages


def crops(batch: int = 2) -> torch.Tensor:
    return channels_last_empty((batch, 3, 5, 5), torch.uint8)


def test_memory_nothing_holds_is_handed_out_again():
    pool = ReusedImages()
    first = pool.like(crops())
    address = first.data_ptr()
    assert first.dtype == torch.float32 and first.shape == crops().shape
    assert first.stride() == crops().stride()  # the crops' memory order
    del first
    assert pool.like(crops()).data_ptr() == address


def test_memory_still_held_is_not_handed_out():
    pool = ReusedImages()
    held = pool.like(crops())
    view = pool.like(crops())[1:]  # only a view of the second is held
    weight = torch.ones(3, requires_grad=True)
    graph = (pool.like(crops()).fill_(1) * weight.view(1, 3, 1, 1)).sum()  # autograd saved it
    addresses = {held.data_ptr(), view.data_ptr() - view.stride(0) * 4}
    fresh = pool.like(crops())
    assert fresh.data_ptr() not in addresses
    assert len(pool.buffers) == KEPT  # the oldest let go: it is the caller's now
    graph.backward()


def test_other_shapes_get_their_own_memory():
    pool = ReusedImages()
    first = pool.like(crops(2))
    address = first.data_ptr()
    del first
    other = pool.like(crops(3))
    assert other.shape[0] == 3 and other.data_ptr() != address


def test_a_reused_buffer_keeps_what_the_caller_wrote_only_until_it_is_handed_out():
    """The caller owns what it was handed: writing to a new batch never touches a held one."""
    pool = ReusedImages()
    kept = [pool.like(crops()).fill_(k) for k in range(KEPT + 2)]
    assert [int(batch[0, 0, 0, 0]) for batch in kept] == list(range(KEPT + 2))
