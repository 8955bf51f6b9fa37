"""LaggedRead: on a CPU the figures are read at once; on CUDA the read never waits for the
device, and the training loop's steps never synchronise with it."""

import pytest
import torch
from torch import nn

from alexnet.optim import PaperSGD
from alexnet.placement import Placement
from alexnet.placement.lagged_read import LaggedRead
from alexnet.train import train_one_epoch

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def test_on_a_cpu_a_request_lands_at_once_and_once():
    reads = LaggedRead(torch.device("cpu"))
    assert reads.landed() is None
    reads.request(10, torch.tensor([1.5, 2.0]))
    reads.request(11, torch.tensor([9.0, 9.0]))  # the first is not collected yet: dropped
    assert reads.landed() == (10, [1.5, 2.0])
    assert reads.landed() is None
    reads.request(20, torch.tensor([3.0, 4.0]))
    assert reads.landed() == (20, [3.0, 4.0])


@pytest.mark.gpu
@needs_cuda
def test_on_cuda_the_read_does_not_wait_for_queued_work():
    reads = LaggedRead(torch.device("cuda"))
    values = torch.tensor([1.5, 2.0], device="cuda")
    reads.request(0, values * 0)  # the pinned buffer allocated before the device is busy
    torch.cuda.synchronize()
    assert reads.landed() == (0, [0.0, 0.0])
    torch.cuda._sleep(2_000_000_000)  # about a second of a busy device ahead of the copy
    reads.request(10, values)
    assert reads.landed() is None  # the copy is queued behind the sleep: not there, not waited
    torch.cuda.synchronize()
    assert reads.landed() == (10, [1.5, 2.0])


class _NoSyncWhileStepping:
    """Batches on the device; while the loop takes them, any host-device sync raises."""

    def __init__(self, batches):
        self.batches = batches

    def __len__(self):
        return len(self.batches)

    def __iter__(self):
        torch.cuda.set_sync_debug_mode("error")
        try:
            yield from self.batches
        finally:
            torch.cuda.set_sync_debug_mode("default")


@pytest.mark.gpu
@needs_cuda
def test_on_cuda_an_epochs_steps_never_wait_for_the_device():
    torch.manual_seed(0)
    images = torch.randn(25, 4, 12, device="cuda")
    labels = torch.randint(0, 3, (25, 4), device="cuda")
    batches = _NoSyncWhileStepping([(images[i], labels[i], 0) for i in range(25)])
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 3)).cuda()
    placement = Placement(torch.device("cuda"))
    result = train_one_epoch(
        model, PaperSGD(model.parameters()), batches, placement, epoch=1, progress=True
    )
    assert result["images"] == 100 and result["loss"] > 0
