"""The CUDA fast paths (bf16 autocast, channels_last): run only where CUDA is, skipped elsewhere."""

import pytest
import torch
import torch.nn.functional as F

from alexnet import AlexNet
from alexnet.device import Placement
from alexnet.recipe import RunRecipe

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


def test_training_step_in_bf16_channels_last_matches_float32():
    placement = Placement.for_run(RunRecipe())
    assert placement.bf16 and placement.channels_last
    torch.manual_seed(0)
    reference = AlexNet(num_classes=10).cuda().eval()
    fast = placement.model(AlexNet(num_classes=10)).eval()
    fast.load_state_dict(reference.state_dict())
    x = torch.randn(8, 3, 224, 224) * 50
    labels = torch.randint(0, 10, (8,))
    with torch.no_grad():
        expected = reference(x.cuda())
        batch, _ = placement.batch(x, labels)
        with placement.autocast():
            got = fast(batch).float()
    assert (got - expected).abs().max() < 0.05 * expected.abs().max() + 1e-3
    fast.train()
    batch, labels = placement.batch(x, labels)
    with placement.autocast():
        loss = F.cross_entropy(fast(batch).float(), labels)
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in fast.parameters())
