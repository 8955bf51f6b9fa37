"""gpu_checks.sh's outputs as one JSON file: each part's exit status and seconds, the gpu tests'
counts, the step figures (bench_device_step.py's JSON files), the end-to-end rates
(bench_data.py's lines) and the ablations' summary, written to OUT/results.json.

    python3 bench/gpu_results.py OUT
"""

from __future__ import annotations

import json
import re
import sys
import xml.etree.ElementTree as ElementTree
from pathlib import Path

STORE_LINES = {  # bench_data.py's figures, by the line that gives each
    "loader_images_per_s": r"^loader: (\d+) images/s",
    "prepare_images_per_s": r"^alexnet prepare: (\d+) images/s",
    "train_images_per_s": r"^train: (\d+) images/s end to end",
}


def parts(out: Path) -> dict[str, dict]:
    """{part: {exit, seconds, limit_s}} from parts.tsv; exit 124 is a timeout."""
    found = {}
    for line in (out / "parts.tsv").read_text().splitlines():
        name, status, seconds, limit = line.split("\t")
        found[name] = {"exit": int(status), "seconds": int(seconds), "limit_s": int(limit)}
    return found


def gpu_tests(path: Path) -> dict | None:
    """The junit file's counts and the names of the tests that failed."""
    if not path.exists():
        return None
    suite = ElementTree.parse(path).getroot()
    suite = suite.find("testsuite") if suite.tag == "testsuites" else suite
    counts = {key: int(suite.get(key, 0)) for key in ("tests", "failures", "errors", "skipped")}
    failed = [
        f"{case.get('classname')}::{case.get('name')}"
        for case in suite.iter("testcase")
        if case.find("failure") is not None or case.find("error") is not None
    ]
    return {**counts, "failed": failed}


def store_figures(path: Path) -> dict[str, float | None]:
    """bench_data.py's rates from its output; None for a line it did not print."""
    text = path.read_text() if path.exists() else ""
    figures = {}
    for key, pattern in STORE_LINES.items():
        match = re.search(pattern, text, flags=re.MULTILINE)
        figures[key] = float(match.group(1)) if match else None
    return figures


def gather(out: Path) -> dict:
    results = {
        "versions": (out / "versions.txt").read_text().strip().splitlines(),
        "parts": parts(out),
        "gpu_tests": gpu_tests(out / "gpu_tests.xml"),
    }
    for name in ("step_sweep", "towers", "cuda_graphs"):
        path = out / f"{name}.json"
        results[name] = json.loads(path.read_text()) if path.exists() else None
    results["store"] = {kind: store_figures(out / f"store_{kind}.txt") for kind in ("jpeg", "raw")}
    ablations = out / "ablations" / "ablations.json"  # when every run finished
    results["ablations"] = json.loads(ablations.read_text()) if ablations.exists() else None
    return results


def main() -> None:
    out = Path(sys.argv[1])
    results = gather(out)
    (out / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    summary = {name: part["exit"] for name, part in results["parts"].items()}
    print(f"results: {out / 'results.json'}; exit status per part: {summary}")


if __name__ == "__main__":
    main()
