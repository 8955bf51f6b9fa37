"""Building and loading the compiled CPU kernels (native.py): built ahead of use with the float
order kept, found again in the cache, and only what this tool built is ever loaded (a planted or
damaged library is built again, its code never run; a folder others may write is refused)."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from alexnet import native
from alexnet.model import AlexNet
from alexnet.ops import lrn_native
from alexnet.placement.kernels import KERNELS, build_kernels

needs_compiler = pytest.mark.skipif(
    shutil.which(os.environ.get("CC", "cc")) is None, reason="no C compiler here"
)


@pytest.fixture
def empty_cache(monkeypatch, tmp_path) -> Path:
    """A cache with nothing built in it, and a process that has loaded nothing yet."""
    monkeypatch.setenv("ALEXNET_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(native, "_loaded", {})
    return tmp_path / "cache" / "kernels"


def test_the_flags_keep_the_float_order():
    """GCC contracts a*b + c into one fused multiply-add by default, which rounds once: the bits
    would then depend on the CPU (test_lrn_native.py checks the bits themselves)."""
    assert "-ffp-contract=off" in native.FLAGS
    assert not {"-ffast-math", "-Ofast", "-funsafe-math-optimizations"} & set(native.FLAGS)


def test_no_kernel_puts_a_variable_length_array_on_the_stack():
    for kernel in KERNELS:
        compiled = subprocess.run(
            [os.environ.get("CC", "cc"), "-Werror=vla", "-fsyntax-only", str(kernel.source)],
            capture_output=True, text=True,
        )  # fmt: skip
        if compiled.returncode and "not found" in compiled.stderr:
            pytest.skip("no C compiler here")
        assert compiled.returncode == 0, compiled.stderr


@needs_compiler
def test_built_once_into_a_private_folder_then_found(empty_cache, caplog):
    with caplog.at_level(logging.INFO, logger="alexnet.native"):
        assert build_kernels(required=True)
    assert "built in" in caplog.text
    assert empty_cache.stat().st_mode & 0o777 == 0o700
    libraries = sorted(empty_cache.glob("*.so"))
    assert [p.name.split("-")[0] for p in libraries] == ["cpu_kernel", "lrn_cpu"]
    stamps = [p.stat().st_mtime_ns for p in libraries]
    # A new process finds them: nothing compiled again.
    found = subprocess.run(
        [sys.executable, "-c", "from alexnet.placement.kernels import build_kernels; "
         "assert build_kernels(required=True)"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert found.returncode == 0, found.stderr
    assert [p.stat().st_mtime_ns for p in libraries] == stamps


@needs_compiler
def test_a_forward_pass_never_compiles(empty_cache):
    """A net asked for the compiled LRN in a process where nothing was built runs the torch
    operations; the cache stays empty."""
    import torch

    net = AlexNet(num_classes=3).set_fast_paths(native_kernels=True, split_towers=False)
    with torch.no_grad():
        net.eval()(torch.rand(1, 3, 64, 64))
    assert lrn_native.library() is None
    assert not empty_cache.exists() or not list(empty_cache.iterdir())


@needs_compiler
def test_a_planted_library_is_never_run_but_built_again(empty_cache, tmp_path, caplog):
    """A library under the expected name that is not the one this tool recorded: its code
    (a constructor that would write a file) never runs; ours is built again, with a warning."""
    build_kernels(required=True)
    target = native.library_path(lrn_native.KERNEL)
    marker = tmp_path / "planted-ran"
    source = tmp_path / "planted.c"
    source.write_text(
        "#include <stdio.h>\n__attribute__((constructor)) static void run(void) {\n"
        f'  FILE *f = fopen("{marker}", "w"); if (f) fclose(f); }}\n'
        "int lrn_forward_nchw(void) { return 0; }\n"
    )
    target.unlink()
    subprocess.run(["cc", "-shared", "-fPIC", str(source), "-o", str(target)], check=True)
    native._loaded.clear()
    with caplog.at_level(logging.WARNING, logger="alexnet.native"):
        assert build_kernels(required=True)
    assert not marker.exists()
    assert "rebuilt" in caplog.text and "digest" in caplog.text
    assert native.loaded(lrn_native.KERNEL) is not None


@needs_compiler
def test_a_damaged_or_incomplete_library_is_built_again_once(empty_cache, caplog):
    build_kernels(required=True)
    target = native.library_path(lrn_native.KERNEL)
    target.unlink()  # this process has it mapped: a new file, not new bytes in that one
    target.write_bytes(b"not a shared library")
    native._loaded.clear()
    with caplog.at_level(logging.WARNING, logger="alexnet.native"):
        assert build_kernels(required=True)
    assert target.read_bytes()[:4] == b"\x7fELF"
    assert len([r for r in caplog.records if "rebuilt" in r.message]) == 1


@needs_compiler
def test_a_library_lacking_a_symbol_is_built_again(empty_cache, tmp_path, monkeypatch):
    """A library that matches its recorded digest but lacks a kernel (a source that changed
    without its digest, say) is rebuilt, not an AttributeError later."""
    build_kernels(required=True)
    missing = ("missing", (), None)
    kernel = native.Kernel(lrn_native.KERNEL.source, (*lrn_native.KERNEL.functions, missing))
    native._loaded.clear()
    with pytest.raises(OSError, match="lacks missing"):
        native.load(kernel, build=True)  # rebuilt once, still lacking it: an error, no loop


def test_a_folder_others_may_write_is_refused(empty_cache, caplog):
    empty_cache.mkdir(parents=True)
    empty_cache.chmod(0o777)
    with pytest.raises(native.KernelError, match="may be written by other users"):
        build_kernels(required=True)
    assert not build_kernels(required=False)
    assert not list(empty_cache.iterdir())


def test_the_kernels_command_builds_or_says_why_in_one_line(empty_cache, tmp_path):
    env = os.environ | {"CC": str(tmp_path / "no-such-compiler")}
    ran = subprocess.run(
        [sys.executable, "-m", "alexnet", "kernels"], capture_output=True, text=True, env=env,
        timeout=120,
    )  # fmt: skip
    assert ran.returncode == 2
    assert ran.stderr.count("\n") == 1 and "cannot be built" in ran.stderr
