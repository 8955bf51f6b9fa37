"""The training step alone, its batch already on the device in the form training receives it:
uint8 crops with their windows and lighting draws (§4.1), turned into float images there by the
data's `BatchTransform` (§2: minus the mean image; PCA lighting) and trained on by
`train.training_step` with the paper's SGD (§5) and the `paper` recipe's placement (on CUDA
bf16 autocast, channels_last, torch.compile in the mode `--compile-mode` names).

For each batch size (default 128, the paper's, then 256, 512 and 1,024) and variant (paper,
paper-no-lrn, one-tower, owt; paper-split and paper-grouped force the towers' form, §3.2) it
prints images/s, the ratio to owt measured in the same rounds, the achieved TFLOP/s (each
variant's FLOPs per training image counted by roofline.py) and their share of the device's
dense bf16 peak, and the memory a step adds (CUDA). Variants run in rounds, each round timing a
few steps of every variant in turn, so a noisy machine slows all alike. At the first batch size
one more line, "host-copy", is the paper net trained from a float32 batch in pageable host
memory, copied every step: what bench_step.py times on CUDA. A torch.profiler table of the ten
costliest kernels (by time on the device; on a CPU by CPU time) per variant at the first batch
size goes to --profile-dir, and everything to one JSON file with --json.

    PYTHONPATH=src python3 bench/bench_device_step.py [--batch-sizes 128,256,512,1024]
        [--variants paper,owt,...] [--compile-mode default|reduce-overhead|max-autotune|none]
        [--peak-tflops N] [--json FILE] [--profile-dir DIR] [--budget-s S] [--device cpu]
        [--image-size 256 --crop-size 224] [--steps N] [--rounds N]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import numpy as np
import torch
from roofline import bf16_peak_tflops, training_flops

from alexnet import AlexNet
from alexnet.data import ArraySource, DataStats, make_batches
from alexnet.optim import PaperSGD
from alexnet.placement import Placement
from alexnet.recipe import preset
from alexnet.train import training_step

VARIANTS = {
    "paper": (dict(variant="paper"), None),  # towers as run.tower_convs resolves them
    "paper-no-lrn": (dict(variant="paper", lrn="off"), None),
    "one-tower": (dict(variant="one-tower"), None),
    "owt": (dict(variant="owt"), None),  # the reference
    "paper-split": (dict(variant="paper"), "split"),  # each tower its own convolution
    "paper-grouped": (dict(variant="paper"), "grouped"),  # one convolution with groups=2
}
HOST_COPY = "host-copy"
CLASSES = 1000


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def resident_batch(args, placement: Placement, batch_size: int):
    """(transform, crops, labels): one training batch as the loader delivers it (uint8 crops,
    windows, lighting draws), moved to the device once, and the transform training applies."""
    recipe = preset("paper").data
    recipe.image_size, recipe.crop_size = args.image_size, args.crop_size
    generator = np.random.default_rng(0)
    pixels = generator.integers(0, 256, (batch_size, args.image_size, args.image_size, 3))
    labels = generator.integers(0, CLASSES, batch_size)
    names = [str(label) for label in range(CLASSES)]
    source = ArraySource("random", names, pixels.astype(np.uint8), labels)
    size = args.image_size
    stats = DataStats(size, torch.full((3, size, size), 120.0), torch.full((3,), 60.0),
                      torch.tensor([3000.0, 300.0, 30.0]), torch.eye(3))  # fmt: skip
    batches = make_batches(source, recipe, stats, batch_size, train=True,
                           device=placement.device, workers=0)  # fmt: skip
    crops, labels, _ = next(iter(batches.loader))
    on_device = type(crops)(*(t.to(placement.device) if t is not None else None for t in crops))
    return batches.transform, on_device, labels.to(placement.device)


def build(name: str, placement: Placement):
    """(step model, optimizer) of a variant, as training builds them (run.tower_convs forced
    for paper-split and paper-grouped)."""
    options, towers = VARIANTS[name]
    if towers is not None:
        placement = dataclasses.replace(placement, split_towers=towers == "split")
    model = placement.model(AlexNet(CLASSES, **options))
    return placement.step_model(model), PaperSGD(model.parameters(), lr=0.01)


def time_steps(step, count: int, device: torch.device) -> tuple[float, float | None]:
    """Seconds for `count` steps, and the memory they added at their peak (MiB, CUDA only)."""
    synchronize(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
    start = time.perf_counter()
    for _ in range(count):
        step()
    synchronize(device)
    seconds = time.perf_counter() - start
    if device.type != "cuda":
        return seconds, None
    return seconds, (torch.cuda.max_memory_allocated(device) - before) / 2**20


def profile_kernels(step, device: torch.device, steps: int, path: Path) -> list[dict]:
    """The ten costliest kernels of `steps` steps: a torch.profiler table written to `path`,
    and [{name, ms per step}]."""
    activities = [torch.profiler.ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    key = "self_device_time_total" if device.type == "cuda" else "self_cpu_time_total"
    synchronize(device)
    with torch.profiler.profile(activities=activities) as profiler:
        for _ in range(steps):
            step()
        synchronize(device)
    averages = profiler.key_averages()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(averages.table(sort_by=key, row_limit=10) + "\n")
    costliest = sorted(averages, key=lambda event: getattr(event, key), reverse=True)[:10]
    return [{"name": e.key, "ms_per_step": getattr(e, key) / 1000 / steps} for e in costliest]


def measure_batch_size(args, placement: Placement, batch_size: int, results: dict) -> None:
    """Every variant (and, at the first batch size, the host copy) at one batch size."""
    device = placement.device
    transform, crops, labels = resident_batch(args, placement, batch_size)
    built = {name: build(name, placement) for name in args.variants}

    def step_of(name: str, host_images=None, host_labels=None):
        model, optimizer = built[name]
        if host_images is not None:  # copied to the device by the step, as bench_step.py's
            return lambda: training_step(model, optimizer, host_images, host_labels, placement)
        return lambda: training_step(model, optimizer, transform(crops), labels, placement)

    steps = {name: step_of(name) for name in args.variants}
    first = batch_size == args.batch_sizes[0]
    if first and "paper" in built:  # the batch as float32 in pageable host memory
        steps[HOST_COPY] = step_of("paper", transform(crops).cpu().clone(), labels.cpu())
    for step in steps.values():  # warm-up: compilation, CUDA graphs, cuDNN's autotuning
        time_steps(step, args.warmup, device)
    seconds, peaks = dict.fromkeys(steps, 0.0), dict.fromkeys(steps)
    for _ in range(args.rounds):
        for name, step in steps.items():
            elapsed, peak = time_steps(step, args.steps, device)
            seconds[name] += elapsed
            peaks[name] = peak if peaks[name] is None else max(peaks[name], peak)
    rates = {name: args.rounds * args.steps * batch_size / s for name, s in seconds.items()}
    for name, rate in rates.items():
        flops = results["flops_per_image"][name if name != HOST_COPY else "paper"]
        tflops = rate * flops / 1e12
        results["points"].append({
            "variant": name, "batch_size": batch_size, "images_per_s": rate,
            "ratio_to_owt": rate / rates["owt"] if "owt" in rates else None,
            "tflops": tflops, "peak_share": tflops / args.peak_tflops if args.peak_tflops else None,
            "step_peak_mib": peaks[name],
        })  # fmt: skip
    print_points(results["points"], batch_size)
    if first:
        for name in args.variants:
            path = Path(args.profile_dir) / f"{name}-batch{batch_size}.txt"
            results["profiles"][name] = profile_kernels(steps[name], device, args.steps, path)
        print(f"profiles of the ten costliest kernels: {args.profile_dir}/")


def print_points(points: list[dict], batch_size: int) -> None:
    print(f"\nbatch {batch_size}:")
    print(f"{'variant':<15}{'images/s':>11}{'vs owt':>8}{'TFLOP/s':>9}{'of peak':>9}"
          f"{'step MiB':>10}")  # fmt: skip
    for point in points:
        if point["batch_size"] == batch_size:
            ratio, share, peak = point["ratio_to_owt"], point["peak_share"], point["step_peak_mib"]
            print(
                f"{point['variant']:<15}{point['images_per_s']:>11.1f}"
                + (f"{ratio:>7.2f}x" if ratio is not None else f"{'-':>8}")
                + f"{point['tflops']:>9.2f}"
                + (f"{share:>8.1%} " if share is not None else f"{'-':>9}")
                + (f"{peak:>10.0f}" if peak is not None else f"{'-':>10}")
            )


def parse_arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch-sizes", default="128,256,512,1024", help="comma-separated")
    parser.add_argument("--variants", default="paper,paper-no-lrn,one-tower,owt",
                        help=f"comma-separated, from {', '.join(VARIANTS)}")  # fmt: skip
    parser.add_argument(
        "--compile-mode", default="default",
        choices=["default", "reduce-overhead", "max-autotune", "none"],
        help="torch.compile's mode on CUDA (run.compile_mode); none: eager",
    )  # fmt: skip
    parser.add_argument("--peak-tflops", type=float, help="the device's dense bf16 peak "
                        "(default: from roofline.py's table by device name)")  # fmt: skip
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--crop-size", type=int, default=224)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, help="steps per variant per round (CUDA 20, CPU 2)")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps per variant")
    parser.add_argument("--budget-s", type=float, help="start no batch size after this long")
    parser.add_argument("--profile-dir", default="step-profiles")
    parser.add_argument("--json", help="write every figure to this file")
    args = parser.parse_args()
    args.batch_sizes = [int(size) for size in args.batch_sizes.split(",")]
    args.variants = args.variants.split(",")
    unknown = set(args.variants) - set(VARIANTS)
    if unknown:
        parser.error(f"unknown variants: {', '.join(sorted(unknown))}")
    return args


def main() -> None:
    args = parse_arguments()
    run = preset("paper").run
    run.compile = args.compile_mode != "none"
    run.compile_mode = "default" if args.compile_mode == "none" else args.compile_mode
    placement = Placement.for_run(run, args.device)
    placement.prepare()
    device = placement.device
    args.steps = args.steps or (20 if device.type == "cuda" else 2)
    args.peak_tflops = args.peak_tflops or bf16_peak_tflops(device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    flops = {  # the towers' two forms cost the same (roofline.py)
        variant: training_flops(AlexNet(CLASSES, **options), args.crop_size, CLASSES)
        for variant, (options, _) in VARIANTS.items() if variant in args.variants + ["paper"]
    }  # fmt: skip
    results = {
        "device": name, "torch": torch.__version__, "placement": placement.description,
        "compile_mode": args.compile_mode, "peak_tflops": args.peak_tflops,
        "crop_size": args.crop_size, "flops_per_image": flops, "points": [], "profiles": {},
        "skipped_batch_sizes": [],
    }  # fmt: skip
    print(
        f"device {device} ({name}){placement.description}, compile mode {args.compile_mode}, "
        f"torch {torch.__version__}, {args.crop_size} px, {args.rounds} rounds of {args.steps} "
        f"steps per variant; dense bf16 peak {args.peak_tflops or '-'} TFLOP/s"
    )
    for variant, count in flops.items():
        print(f"  {variant}: {count / 1e9:.2f} GFLOP per training image")
    start = time.perf_counter()
    for batch_size in args.batch_sizes:
        if args.budget_s is not None and time.perf_counter() - start > args.budget_s:
            results["skipped_batch_sizes"].append(batch_size)
            print(f"\nbatch {batch_size}: skipped, past --budget-s {args.budget_s:.0f}")
            continue
        measure_batch_size(args, placement, batch_size, results)
        if run.compile:
            torch._dynamo.reset()  # each batch size compiles afresh, within the recompile limit
        if args.json:  # after each batch size: a timeout keeps what was measured
            Path(args.json).write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
