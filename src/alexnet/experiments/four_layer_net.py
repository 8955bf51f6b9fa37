"""Figure 1's nets (§3.1): cuda-convnet's four-layer CIFAR-10 layout, and the linear baseline.

The four-layer net is the layout of cuda-convnet's `layers-80sec.cfg` (Krizhevsky's code, with
which the paper's CIFAR-10 experiments were run): three 5×5 convolutions of 32, 32 and 64
kernels, each followed by a 3/2 pool (max, average, average), and a fully connected output: the
one example with exactly four learned layers. It is NOT AlexNet. The linear baseline (softmax
regression on the pixels) tells which training errors need a nonlinearity at all: the paper's
25% on CIFAR-10 lies far below what a linear model reaches there.

Initialisation: `kaiming` (Kaiming-normal weights for both activations) or `cuda-convnet`, the
Gaussians of the layers-80sec file (σ = 1e-4 for conv1, 1e-2 for the other layers, biases 0).
"""

from __future__ import annotations

from torch import nn

IMAGE_SIZE = 32  # CIFAR-10's
INITS = ("kaiming", "cuda-convnet")
ACTIVATIONS = ("relu", "tanh")
CUDA_CONVNET_STD = (1e-4, 1e-2, 1e-2, 1e-2)  # layers-80sec's initW: conv1, conv2, conv3, fc
LAYOUT = (
    "cuda-convnet layers-80sec: conv 5×5×32, max-pool 3/2, conv 5×5×32, avg-pool 3/2, "
    "conv 5×5×64, avg-pool 3/2, fully connected; 32×32 inputs"
)


class FourLayerNet(nn.Module):
    """cuda-convnet's layers-80sec layout: conv-pool ×3, fully connected (§3.1's 4-layer net)."""

    def __init__(self, classes: int, activation: str, init: str = "kaiming"):
        super().__init__()
        act = {"relu": nn.ReLU, "tanh": nn.Tanh}[activation]
        self.layers = nn.Sequential(
            nn.Conv2d(3, 32, 5, padding=2), act(), nn.MaxPool2d(3, 2, padding=1),  # (B,32,16,16)
            nn.Conv2d(32, 32, 5, padding=2), act(), nn.AvgPool2d(3, 2, padding=1),  # (B,32,8,8)
            nn.Conv2d(32, 64, 5, padding=2), act(), nn.AvgPool2d(3, 2, padding=1),  # (B,64,4,4)
            nn.Flatten(), nn.Linear(64 * 4 * 4, classes),  # (B, classes)
        )  # fmt: skip

        learned = [m for m in self.layers if isinstance(m, (nn.Conv2d, nn.Linear))]
        for layer, std in zip(learned, CUDA_CONVNET_STD, strict=True):  # the same for both
            if init == "kaiming":
                nn.init.kaiming_normal_(layer.weight, nonlinearity="relu")
            else:
                nn.init.normal_(layer.weight, std=std)
            nn.init.zeros_(layer.bias)

    def forward(self, x):
        return self.layers(x)


def build_net(kind: str, classes: int, init: str = "kaiming") -> nn.Module:
    """The four-layer net with `kind` ("relu" | "tanh") units, or "linear": softmax regression
    on the 3×32×32 pixels, started at zero (a convex problem: the start decides nothing)."""
    if init not in INITS:
        raise ValueError(f"init {init!r}: expected one of {', '.join(INITS)}")
    if kind != "linear":
        return FourLayerNet(classes, kind, init)
    linear = nn.Sequential(nn.Flatten(), nn.Linear(3 * IMAGE_SIZE * IMAGE_SIZE, classes))
    nn.init.zeros_(linear[1].weight)
    nn.init.zeros_(linear[1].bias)
    return linear
