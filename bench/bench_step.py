"""Training-step throughput of the paper's net against torchvision's layout ("owt"), in the
configuration training uses on the device and in a plain torch loop, and LRN alone against
`F.local_response_norm`.

`training`: `train.training_step` with the paper's SGD and the `paper` recipe's placement: on
CUDA bf16 autocast, channels_last, `torch.compile` and cuDNN's autotuner; on the CPU float32;
dropout masks counted as training counts them (ops/dropout.py; the variant paper-drawn-dropout
draws them from torch's generator instead).
Its images are in the memory order of the loader's batches, channels-last (crops.py).
`plain`: what a library user writes: `AlexNet(...)` on the device with the fast paths the
README shows (`alexnet.build_kernels()`, `set_fast_paths`), `torch.optim.SGD` (momentum 0.9,
weight decay 5e-4), forward, `cross_entropy`, backward, step, nothing else. Both loops run with
the placement's process settings (`Placement.prepare`: on a CPU, host_memory.keep_freed_memory).
Variants run in rounds, each round timing a few steps of every variant in turn, so a noisy
machine slows all alike; `--repeats N` measures N times and prints the median and range of each
variant's ratio to owt. Prints images/s and the ratio to owt (on CUDA also each variant's peak
memory), then LRN's forward + backward at conv1's and conv2's shapes, ours against torch's (on
the CPU also ours without its compiled kernel: ops/lrn_native.py; the step of that is the
variant paper-lrn-torch-ops).

    PYTHONPATH=src python3 bench/bench_step.py [--batch-size N] [--rounds N] [--device cpu|cuda]
        [--variants paper,owt,...] [--loops training,plain] [--repeats N] [--no-compile]

Batch size: 32 on the CPU, the paper's 128 on CUDA (what training uses); try 1024 on a big GPU.
"""

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from alexnet import AlexNet
from alexnet.model import LocalResponseNorm
from alexnet.ops.dropout import DropoutCounter
from alexnet.optim import PaperSGD
from alexnet.placement import Placement
from alexnet.recipe import preset
from alexnet.train import training_step

VARIANTS = {
    "paper": dict(variant="paper"),
    "paper-groups": dict(variant="paper"),  # towers as one grouped convolution (CUDA: split)
    "paper-no-lrn": dict(variant="paper", lrn="off"),
    "paper-lrn-torch-ops": dict(variant="paper"),  # CPU: LRN without its compiled kernel
    "paper-drawn-dropout": dict(variant="paper"),  # training loop: nn.Dropout's draws
    "one-tower": dict(variant="one-tower"),
    "owt": dict(variant="owt"),  # the reference
}
LRN_SHAPES = {"conv1": (96, 55, 55), "conv2": (256, 27, 27)}


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def build(name: str, placement: Placement, loop: str):
    """(model, optimizer, step): `loop` "training" is train.training_step on the placement's
    model; "plain" is a stock torch loop with torch.optim.SGD."""
    if loop == "plain":
        model = AlexNet(**VARIANTS[name]).to(placement.device)
        model.set_fast_paths(**_fast_paths(name, placement))
        optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
        return model, optimizer, plain_step
    model = placement.model(AlexNet(**VARIANTS[name]))
    model.set_fast_paths(**_fast_paths(name, placement))
    if name != "paper-drawn-dropout":
        DropoutCounter.of(model, seed=0).before_step(1)
    optimizer = PaperSGD(model.parameters(), lr=0.01)
    return placement.step_model(model), optimizer, training_step


def _fast_paths(name: str, placement: Placement) -> dict[str, bool]:
    """The placement's fast paths, except where the variant turns one off: paper-groups, the
    towers as one grouped convolution (on CUDA they are split); paper-lrn-torch-ops, LRN in
    torch's operations (on the CPU it is compiled)."""
    return dict(
        native_kernels=placement.native_kernels and name != "paper-lrn-torch-ops",
        split_towers=placement.split_towers and name != "paper-groups",
    )


def plain_step(model, optimizer, images, labels, placement) -> None:
    loss = F.cross_entropy(model(images.to(placement.device)), labels.to(placement.device))
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()


def time_steps(name, steps, placement, images, labels, count) -> tuple[float, float]:
    """Seconds for `count` training steps, and the peak memory they added (MiB, CUDA only)."""
    model, optimizer, step = steps[name]
    device = placement.device
    synchronize(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device) if device.type == "cuda" else 0
    start = time.perf_counter()
    for _ in range(count):
        step(model, optimizer, images, labels, placement)
    synchronize(device)
    seconds = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated(device) - before if device.type == "cuda" else 0
    return seconds, peak / 2**20


def bench_steps(args, placement: Placement, loop: str) -> dict[str, float]:
    """Print images/s and the ratio to owt per variant; return the ratios."""
    torch.manual_seed(0)
    images = torch.randn(args.batch_size, 3, 224, 224) * 50  # the paper's raw-pixel scale
    if loop == "training":  # in the memory order the loader's batches arrive in (crops.py)
        images = images.contiguous(memory_format=torch.channels_last)
    labels = torch.randint(0, 1000, (args.batch_size,))
    steps = {name: build(name, placement, loop) for name in args.variants}
    for name in steps:  # warm-up: compilation, cuDNN's autotuning, first allocations
        time_steps(name, steps, placement, images, labels, 2)
    seconds = dict.fromkeys(steps, 0.0)
    peaks = dict.fromkeys(steps, 0.0)
    for _ in range(args.rounds):
        for name in steps:
            elapsed, peak = time_steps(name, steps, placement, images, labels, args.steps)
            seconds[name] += elapsed
            peaks[name] = max(peaks[name], peak)
    rates = {name: args.rounds * args.steps * args.batch_size / s for name, s in seconds.items()}
    reference = rates.get("owt")
    on_cuda = placement.device.type == "cuda"
    print(f"\n{loop} loop:")
    print(
        f"{'variant':<20}{'images/s':>10}{'vs owt':>9}" + (f"{'peak MiB':>10}" if on_cuda else "")
    )
    for name, rate in rates.items():
        ratio = f"{rate / reference:>8.2f}x" if reference else f"{'-':>9}"
        memory = f"{peaks[name]:>10.0f}" if on_cuda else ""
        print(f"{name:<20}{rate:>10.1f}{ratio}{memory}")
    return {name: rate / reference for name, rate in rates.items()} if reference else {}


def bench_lrn(args, placement: Placement) -> None:
    """LRN forward + backward alone: ours (the custom op) against F.local_response_norm; on the
    CPU also ours without the compiled kernel (ops/lrn_native.py), in its torch operations."""
    dtype = torch.bfloat16 if placement.bf16 else torch.float32
    ours, ours_in_torch_ops = LocalResponseNorm(), LocalResponseNorm()  # torch's α is n × ours
    ours.native_kernels = placement.native_kernels

    def torch_lrn(x):
        return F.local_response_norm(x, 5, alpha=5e-4, beta=0.75, k=2.0)

    on_cpu = placement.device.type == "cpu"
    print(f"\nLRN forward + backward, batch {args.batch_size}, {dtype}, best of {args.rounds}:")
    print(
        f"{'layer':<8}{'ours ms':>9}{'torch ms':>10}{'speed-up':>10}"
        + (f"{'ours in torch ops ms':>22}" if on_cpu else "")
    )
    kernels = [("ours", ours), ("torch", torch_lrn)]
    kernels += [("torch ops", ours_in_torch_ops)] if on_cpu else []
    for layer, shape in LRN_SHAPES.items():
        x = torch.rand(args.batch_size, *shape, dtype=dtype, device=placement.device) * 60
        x = x.contiguous(memory_format=placement.memory_format)
        upstream = torch.randn_like(x)
        milliseconds = {}
        for name, function in kernels:
            for repeat in range(args.rounds + 1):  # the first is a warm-up
                inputs = x.detach().requires_grad_()
                synchronize(placement.device)
                start = time.perf_counter()
                function(inputs).backward(upstream)
                synchronize(placement.device)
                elapsed = 1000 * (time.perf_counter() - start)
                if repeat:
                    milliseconds[name] = min(milliseconds.get(name, elapsed), elapsed)
        speed_up = milliseconds["torch"] / milliseconds["ours"]
        print(
            f"{layer:<8}{milliseconds['ours']:>9.2f}{milliseconds['torch']:>10.2f}{speed_up:>9.2f}x"
            + (f"{milliseconds['torch ops']:>22.2f}" if on_cpu else "")
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch-size", type=int, help="default: 32 on the CPU, 128 on CUDA")
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds (default: 3)")
    parser.add_argument("--steps", type=int, help="steps per variant per round (CPU 2, CUDA 20)")
    parser.add_argument(
        "--variants",
        help=f"comma-separated, from {', '.join(VARIANTS)} (default: paper, paper-no-lrn, owt; "
        "on CUDA also paper-groups)",
    )
    parser.add_argument("--loops", default="training,plain", help="training, plain or both")
    parser.add_argument(
        "--repeats", type=int, choices=range(1, 101), default=1, metavar="N",
        help="whole measurements, 1-100 (default 1)",
    )  # fmt: skip
    parser.add_argument("--no-compile", action="store_true", help="no torch.compile on CUDA")
    args = parser.parse_args()
    run = preset("paper").run
    run.compile = not args.no_compile
    placement = Placement.for_run(run, args.device)
    placement.prepare()
    on_cuda = placement.device.type == "cuda"
    args.batch_size = args.batch_size or (128 if on_cuda else 32)
    args.steps = args.steps or (20 if on_cuda else 2)
    default = ["paper", "paper-no-lrn", "owt"] + (["paper-groups"] if on_cuda else [])
    args.variants = args.variants.split(",") if args.variants else default
    unknown = set(args.variants) - set(VARIANTS)
    if unknown:
        parser.error(f"unknown variants: {', '.join(sorted(unknown))}")
    if not set(args.loops.split(",")) <= {"training", "plain"}:
        parser.error(f"--loops takes training, plain or both, not {args.loops!r}")
    print(
        f"device {placement.device}{placement.description}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, batch {args.batch_size}, 224 px, "
        f"{args.rounds} rounds of {args.steps} steps per variant"
    )
    ratios: dict[tuple[str, str], list[float]] = {}
    for _ in range(args.repeats):
        for loop in args.loops.split(","):
            for name, ratio in bench_steps(args, placement, loop).items():
                ratios.setdefault((loop, name), []).append(ratio)
    if args.repeats > 1:
        print(f"\nratio to owt over {args.repeats} measurements: median [min, max]")
        for (loop, name), values in ratios.items():
            print(f"{loop:<9}{name:<21}{statistics.median(values):.2f}x "
                  f"[{min(values):.2f}, {max(values):.2f}]")  # fmt: skip
    bench_lrn(args, placement)


if __name__ == "__main__":
    main()
