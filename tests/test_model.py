"""The network against the paper's numbers and torchvision's AlexNet (LRN itself: tests/ops)."""

import pytest
import torch
import torchvision
from torch import nn

from alexnet import AlexNet
from alexnet.model import LocalResponseNorm, TowerConv2d

VARIANTS = ["paper", "one-tower", "half-width", "owt"]


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.mark.parametrize(
    ("variant", "expected"),
    [
        ("paper", 60_965_224),
        ("one-tower", 62_378_344),
        ("half-width", 40_702_632),
        ("owt", 61_100_840),
    ],
)
def test_parameter_count_matches_paper_and_torchvision(variant, expected):
    model = AlexNet(num_classes=1000, variant=variant)
    assert sum(p.numel() for p in model.parameters()) == expected


def test_owt_count_equals_torchvision():
    reference = torchvision.models.alexnet(weights=None)
    ours = AlexNet(variant="owt")
    assert sum(p.numel() for p in ours.parameters()) == sum(
        p.numel() for p in reference.parameters()
    )


def test_paper_shapes_through_the_stack_at_224():
    model = AlexNet().eval()
    x = torch.randn(1, 3, 224, 224)
    sizes = []
    for layer in model.features:
        x = layer(x)
        if isinstance(layer, nn.Conv2d | nn.MaxPool2d):
            sizes.append((x.shape[1], x.shape[2]))
    # conv1 55, pool 27, conv2 27, pool 13, conv3-5 13, pool 6 (Figure 2)
    assert sizes == [
        (96, 55),
        (96, 27),
        (256, 27),
        (256, 13),
        (384, 13),
        (384, 13),
        (256, 13),
        (256, 6),
    ]
    with torch.no_grad():
        assert model(torch.randn(2, 3, 224, 224)).shape == (2, 1000)


def test_paper_towers_are_groups_of_two():
    layers = AlexNet().learned_layers()
    assert [layers[f"conv{i}"].groups for i in range(1, 6)] == [1, 2, 1, 2, 2]
    assert layers["conv2"].weight.shape == (256, 48, 5, 5)
    assert layers["conv3"].weight.shape == (384, 256, 3, 3)  # reads both towers
    assert layers["conv4"].weight.shape == (384, 192, 3, 3)


def test_towers_as_two_convolutions_equal_the_grouped_convolution():
    """TowerConv2d's split form (CUDA's) against groups=2 (the CPU's): values and gradients."""
    conv = AlexNet().learned_layers()["conv4"]
    assert isinstance(conv, TowerConv2d) and conv.split is False  # until a Placement decides
    x = torch.randn(2, 384, 13, 13)
    results = []
    for split in (False, True):
        conv.split = split
        conv.zero_grad()
        inputs = x.clone().requires_grad_()
        out = conv(inputs)
        out.square().sum().backward()
        results.append((out, inputs.grad, conv.weight.grad.clone(), conv.bias.grad.clone()))
    for grouped, separate in zip(*results, strict=True):
        assert torch.allclose(grouped, separate, rtol=1e-5, atol=1e-5)


def test_conv1_towers_feed_their_own_half_of_conv2():
    model = AlexNet().eval()
    assert model.conv1_towers() == [range(0, 48), range(48, 96)]
    assert AlexNet(variant="one-tower").conv1_towers() == [range(0, 96)]
    # Perturbing conv1 kernel 0 (tower one) changes only conv2's first 128 maps.
    x = torch.randn(1, 3, 67, 67)
    conv1_to_conv2 = model.features[:5]
    with torch.no_grad():
        before = conv1_to_conv2(x)
        model.learned_layers()["conv1"].weight[0] += 1.0
        after = conv1_to_conv2(x)
    changed = (after - before).abs().amax(dim=(0, 2, 3)) > 0
    assert changed[:128].any() and not changed[128:].any()


@pytest.mark.parametrize("variant", VARIANTS)
def test_smallest_input_is_63_px(variant):
    model = AlexNet(num_classes=10, variant=variant).eval()
    with torch.no_grad():
        assert model(torch.randn(2, 3, 63, 63)).shape == (2, 10)
        with pytest.raises(ValueError, match="at least 63×63 px, got 32×32"):
            model(torch.randn(2, 3, 32, 32))
        with pytest.raises(ValueError, match="at least 63"):
            model(torch.randn(2, 3, 62, 62))


def test_non_overlapping_pool_keeps_the_output_sizes():
    model = AlexNet(overlapping_pool=False).eval()
    pools = [m for m in model.features if isinstance(m, nn.MaxPool2d)]
    assert all(p.kernel_size == 2 and p.stride == 2 for p in pools)
    x = torch.randn(1, 3, 224, 224)
    sizes = []
    with torch.no_grad():
        for layer in model.features:
            x = layer(x)
            if isinstance(layer, nn.MaxPool2d):
                sizes.append(x.shape[-1])
    assert sizes == [27, 13, 6]


def test_owt_loads_torchvision_state_dict_and_gives_same_logits():
    reference = torchvision.models.alexnet(weights=None).eval()
    ours = AlexNet(variant="owt").eval()
    ours.load_state_dict(reference.state_dict(), strict=True)
    x = torch.randn(4, 3, 224, 224)
    with torch.no_grad():
        difference = (ours(x) - reference(x)).abs().max().item()
    assert difference < 1e-5


def test_paper_variant_rejects_torchvision_weights():
    with pytest.raises(RuntimeError):
        AlexNet(variant="paper").load_state_dict(torchvision.models.alexnet().state_dict())


def test_lrn_sits_after_relu_in_conv1_and_conv2_only():
    kinds = ["Conv2d" if isinstance(m, nn.Conv2d) else type(m).__name__ for m in AlexNet().features]
    lrn_at = [i for i, kind in enumerate(kinds) if kind == "LocalResponseNorm"]
    assert len(lrn_at) == 2
    for i in lrn_at:
        assert kinds[i - 2 : i + 2] == ["Conv2d", "ReLU", "LocalResponseNorm", "MaxPool2d"]
    assert "LocalResponseNorm" not in [type(m).__name__ for m in AlexNet(lrn="off").features]
    conventions = {
        m.convention
        for m in AlexNet(lrn="cuda-convnet").features
        if isinstance(m, LocalResponseNorm)
    }
    assert conventions == {"cuda-convnet"}


def test_paper_init_statistics():
    layers = AlexNet().learned_layers()
    for name, layer in layers.items():
        std = layer.weight.std().item()
        assert abs(std - 0.01) / 0.01 < 0.05, (name, std)
        assert abs(layer.weight.mean().item()) < 1e-3, name
        expected_bias = 1.0 if name in {"conv2", "conv4", "conv5", "fc6", "fc7"} else 0.0
        assert torch.equal(layer.bias, torch.full_like(layer.bias, expected_bias)), name


def test_kaiming_init_has_zero_biases_and_he_std():
    layers = AlexNet(init="kaiming").learned_layers()
    conv2 = layers["conv2"]
    fan_in = conv2.weight[0].numel()
    assert abs(conv2.weight.std().item() - (2 / fan_in) ** 0.5) / (2 / fan_in) ** 0.5 < 0.05
    assert all(torch.count_nonzero(layer.bias) == 0 for layer in layers.values())


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("activation", ["relu", "tanh"])
def test_every_parameter_gets_a_gradient_in_one_training_step(variant, activation):
    model = AlexNet(num_classes=5, variant=variant, activation=activation, init="kaiming")
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    x, y = torch.randn(3, 3, 67, 67), torch.tensor([0, 1, 4])
    loss = nn.functional.cross_entropy(model(x), y)
    loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    optimizer.step()
    assert all(not torch.equal(before[n], p) for n, p in model.named_parameters())


def test_tanh_variant_uses_tanh_everywhere():
    model = AlexNet(activation="tanh")
    kinds = {type(m).__name__ for m in model.modules()}
    assert "Tanh" in kinds and "ReLU" not in kinds


@pytest.mark.parametrize("variant", VARIANTS)
def test_dropout_active_in_train_mode_and_off_in_eval(variant):
    model = AlexNet(num_classes=10, variant=variant)
    x = torch.randn(2, 3, 67, 67)
    with torch.no_grad():
        model.train()
        assert not torch.equal(model(x), model(x))
        model.eval()
        assert torch.equal(model(x), model(x))


def test_dropout_sits_on_outputs_of_fc6_and_fc7():
    paper = [type(m).__name__ for m in AlexNet(dropout=0.3).classifier]
    assert paper == ["Linear", "ReLU", "CountedDropout", "Linear", "ReLU", "CountedDropout",
                     "Linear"]  # fmt: skip
    dropouts = [m for m in AlexNet(dropout=0.3).classifier if isinstance(m, nn.Dropout)]
    assert [(m.p, m.layer) for m in dropouts] == [(0.3, 6), (0.3, 7)]


def test_embed_returns_fc7_activations():
    model = AlexNet(num_classes=10).eval()
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        features = model.embed(x)
        assert features.shape == (2, 4096)
        assert (features >= 0).all()  # after fc7's ReLU
        fc8 = model.learned_layers()["fc8"]
        assert torch.allclose(fc8(features), model(x), atol=1e-5)


@pytest.mark.parametrize("variant", ["paper", "one-tower"])
def test_small_inputs_take_fc6_on_summed_weights_with_the_same_values_and_gradients(variant):
    """At 64 px conv5's pooled map is 1×1; fc6 on its weights summed over the 36 cells the pool
    would fill must give the pooled path's logits and every parameter's gradient (dropout on,
    the same masks from the same seed)."""
    model = AlexNet(num_classes=10, variant=variant, init="kaiming").train()
    x = torch.randn(3, 3, 64, 64)
    assert model.features(x).shape[-2:] == (1, 1)
    results = []
    for through_pool in (False, True):
        model.zero_grad()
        torch.manual_seed(1)
        if through_pool:  # the plain path: pool to 6×6, then the classifier as built
            logits = model.classifier(torch.flatten(model.avgpool(model.features(x)), 1))
        else:
            logits = model(x)
        logits.square().sum().backward()
        results.append((logits, [p.grad.clone() for p in model.parameters()]))
    (fast, fast_grads), (plain, plain_grads) = results
    assert torch.allclose(fast, plain, rtol=1e-5, atol=1e-5)
    for got, expected in zip(fast_grads, plain_grads, strict=True):
        assert torch.allclose(got, expected, rtol=1e-4, atol=1e-5 * expected.abs().max())


def test_the_network_never_changes_the_processs_allocator(monkeypatch):
    """Model code leaves glibc's settings alone (a library user's whole process would change):
    fit and the command line make that choice (Placement.prepare, host_memory.py)."""
    import alexnet.host_memory

    applied = []
    monkeypatch.setattr(alexnet.host_memory, "keep_freed_memory", lambda: applied.append(True))
    net = AlexNet(num_classes=10)
    with torch.no_grad():
        net.eval()(torch.zeros(1, 3, 64, 64))
        net.embed(torch.zeros(1, 3, 64, 64))
    assert applied == []


def test_fast_paths_are_set_on_every_layer_and_change_no_value():
    """set_fast_paths reaches every LRN and tower convolution; the compiled LRN (when built)
    and the split towers give the values of the default paths."""
    from alexnet.model import LocalResponseNorm
    from alexnet.placement.kernels import build_kernels

    torch.manual_seed(0)
    net = AlexNet(num_classes=10).eval()
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        default = net(images)
        native = build_kernels(required=False)
        net.set_fast_paths(native_kernels=native, split_towers=True)
        fast = net(images)
    lrns = [m for m in net.modules() if isinstance(m, LocalResponseNorm)]
    towers = [m for m in net.modules() if isinstance(m, TowerConv2d)]
    assert len(lrns) == 2 and all(m.native_kernels == native for m in lrns)
    assert len(towers) == 3 and all(m.split for m in towers)
    torch.testing.assert_close(fast, default, rtol=1e-5, atol=1e-5)
