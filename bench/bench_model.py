"""Training throughput of the network's variants, against torchvision's layout in the same run.

Measures images/s of one SGD step (forward, backward, update) at 224×224 for "paper", "paper"
without LRN, "one-tower" and "owt" (the reference: torchvision's layout), so the cost of LRN and
of the two towers (groups=2) shows as a ratio. Steps are interleaved round-robin so that a noisy
machine slows every variant alike.

    python bench/bench_model.py [--batch-size 32] [--steps 5] [--device cpu]
"""

import argparse
import time

import torch
from torch import nn

from alexnet import AlexNet

CONFIGS = {
    "paper": dict(variant="paper"),
    "paper, no LRN": dict(variant="paper", lrn="off"),
    "one-tower": dict(variant="one-tower"),
    "owt (reference)": dict(variant="owt"),
}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=5, help="timed steps per variant")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)
    x = torch.randn(args.batch_size, 3, 224, 224, device=device)
    y = torch.randint(0, 1000, (args.batch_size,), device=device)
    steps = {}
    for name, config in CONFIGS.items():
        model = AlexNet(**config).to(device).train()
        optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        steps[name] = (model, optimizer)

    def step(name: str) -> float:
        model, optimizer = steps[name]
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - start

    for name in steps:  # warm-up
        step(name)
    seconds = {name: [] for name in steps}
    for _ in range(args.steps):
        for name in steps:
            seconds[name].append(step(name))
    rates = {name: args.batch_size / (sum(s) / len(s)) for name, s in seconds.items()}
    reference = rates["owt (reference)"]
    print(
        f"device {device}, torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"batch {args.batch_size}, {args.steps} timed steps each"
    )
    print(f"{'variant':<18}{'images/s':>10}{'vs owt':>9}")
    for name, rate in rates.items():
        print(f"{name:<18}{rate:>10.1f}{rate / reference:>8.2f}x")


if __name__ == "__main__":
    main()
