"""bench/gpu_checks.sh and its Python parts on a CPU, on tiny shapes, so that the script is
known to work before a GPU is lent: the step sweep's figures, the results file gathered from
the parts' outputs, and (slow) the whole script."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from alexnet.model import TowerConv2d
from alexnet.placement import Placement
from alexnet.recipe import RunRecipe
from tests.data.test_idx import write_idx_set

BENCH = Path(__file__).parents[1] / "bench"
sys.path.insert(0, str(BENCH))
import bench_device_step  # noqa: E402
import gpu_results  # noqa: E402
from roofline import training_flops  # noqa: E402

TINY = ["--device", "cpu", "--image-size", "72", "--crop-size", "64", "--rounds", "1",
        "--steps", "1", "--warmup", "0"]  # fmt: skip


def test_the_step_sweep_gives_every_figure_for_every_variant_and_batch_size(tmp_path, monkeypatch):
    out = ["--json", str(tmp_path / "sweep.json"), "--profile-dir", str(tmp_path / "profiles")]
    arguments = ["--batch-sizes", "2,3", "--variants", "paper,owt", *out]
    monkeypatch.setattr(sys, "argv", ["bench_device_step.py", *TINY, *arguments])
    bench_device_step.main()
    results = json.loads((tmp_path / "sweep.json").read_text())
    points = {(p["variant"], p["batch_size"]): p for p in results["points"]}
    # the host copy is measured once, at the first batch size, beside the variants
    assert set(points) == {(v, b) for v in ("paper", "owt") for b in (2, 3)} | {("host-copy", 2)}
    paper = bench_device_step.AlexNet(1000)
    assert results["flops_per_image"]["paper"] == training_flops(paper, 64, 1000)
    for (variant, _), point in points.items():
        assert point["images_per_s"] > 0
        flops = results["flops_per_image"]["paper" if variant == "host-copy" else variant]
        assert point["tflops"] == pytest.approx(point["images_per_s"] * flops / 1e12)
        assert point["peak_share"] is None and point["step_peak_mib"] is None  # a CPU: no peak
    assert points["owt", 3]["ratio_to_owt"] == 1
    ratio = points["paper", 3]["images_per_s"] / points["owt", 3]["images_per_s"]
    assert points["paper", 3]["ratio_to_owt"] == pytest.approx(ratio)
    for variant in ("paper", "owt"):
        table = (tmp_path / "profiles" / f"{variant}-batch2.txt").read_text()
        assert "Self CPU" in table and len(results["profiles"][variant]) == 10


def test_paper_split_and_paper_grouped_force_the_towers_form():
    placement = Placement.for_run(RunRecipe(), "cpu")  # auto: grouped on a CPU
    for name, split in [("paper-split", True), ("paper-grouped", False), ("paper", False)]:
        model, _ = bench_device_step.build(name, placement)
        assert {layer.split for layer in model.modules() if isinstance(layer, TowerConv2d)} == {
            split
        }


def test_the_results_file_gathers_each_parts_figures(tmp_path):
    (tmp_path / "versions.txt").write_text("torch 2.11.0 torchvision 0.26.0 cuda 12.8\nH100\n")
    (tmp_path / "parts.tsv").write_text("gpu_tests\t1\t100\t130\nstore_jpeg\t124\t75\t75\n")
    (tmp_path / "gpu_tests.xml").write_text(
        '<testsuites><testsuite tests="3" failures="1" errors="0" skipped="0">'
        '<testcase classname="tests.test_gpu" name="test_a"><failure/></testcase>'
        '<testcase classname="tests.test_gpu" name="test_b"/></testsuite></testsuites>'
    )
    (tmp_path / "step_sweep.json").write_text('{"points": []}')
    (tmp_path / "store_jpeg.txt").write_text(
        "loader: 18500 images/s\n  (store)\nalexnet prepare: 2100 images/s (4096 JPEGs)\n"
    )  # timed out before its training line
    results = gpu_results.gather(tmp_path)
    assert results["parts"]["store_jpeg"] == {"exit": 124, "seconds": 75, "limit_s": 75}
    assert results["gpu_tests"] == {"tests": 3, "failures": 1, "errors": 0, "skipped": 0,
                                    "failed": ["tests.test_gpu::test_a"]}  # fmt: skip
    assert results["step_sweep"] == {"points": []} and results["towers"] is None
    assert results["store"]["jpeg"] == {
        "loader_images_per_s": 18500.0, "prepare_images_per_s": 2100.0,
        "train_images_per_s": None,
    }  # fmt: skip
    assert results["store"]["raw"]["loader_images_per_s"] is None
    assert results["ablations"] is None  # no summary: the ablations did not finish


@pytest.mark.slow
def test_the_whole_script_runs_every_part_on_a_cpu(tmp_path):
    write_idx_set(tmp_path / "fashion")  # a few generated images in Fashion-MNIST's files
    (tmp_path / "back").mkdir()  # as the device tool's $OUT: what comes back
    environment = {
        **os.environ, "GPU_CHECKS_DIR": str(tmp_path / "out"), "OUT": str(tmp_path / "back"),
        "PYTHON": sys.executable, "FASHION_MNIST": str(tmp_path / "fashion"),
    }  # fmt: skip
    subprocess.run(
        ["bash", str(BENCH / "gpu_checks.sh"), "--device", "cpu", "--tiny"],
        cwd=BENCH.parent, env=environment, check=True, timeout=600,
    )  # fmt: skip
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert {name: part["exit"] for name, part in results["parts"].items()} == {
        "step_sweep": 0, "towers": 0, "cuda_graphs": 0, "store_jpeg": 0, "store_raw": 0,
        "ablations": 0,
    }  # fmt: skip
    assert results["gpu_tests"] is None  # not on a CPU
    for part in ("step_sweep", "towers", "cuda_graphs"):
        assert results[part]["points"]
    for kind in ("jpeg", "raw"):
        assert results["store"][kind]["loader_images_per_s"] > 0
    assert results["ablations"]["recipe"] == "fashion-mnist"
    assert sorted(path.name for path in (tmp_path / "back").iterdir()) == [
        "gpu-checks.tar.gz", "results.json",
    ]  # fmt: skip
    assert json.loads((tmp_path / "back" / "results.json").read_text()) == results
