"""The benchmark scripts still import against the library (they run outside the test suite)."""

import importlib.util
from pathlib import Path

import pytest

BENCH = sorted((Path(__file__).parents[1] / "bench").glob("bench_*.py"))


@pytest.mark.parametrize("script", BENCH, ids=[path.stem for path in BENCH])
def test_benchmark_script_imports(script, monkeypatch):
    monkeypatch.syspath_prepend(str(script.parent))  # as when run: scripts import each other
    spec = importlib.util.spec_from_file_location(script.stem, script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # runs the imports and definitions, not main()
    assert callable(module.main)


def test_all_seven_benchmarks_are_there():
    expected = {"bench_data", "bench_pipeline", "bench_predict", "bench_step", "bench_train"}
    expected |= {"bench_fashion_mnist", "bench_device_step"}
    assert {path.stem for path in BENCH} == expected
