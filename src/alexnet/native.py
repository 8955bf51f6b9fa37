"""C code for the CPU's fast paths, compiled on first use and called through ctypes (which
releases the GIL for each call): LRN's kernels (ops/lrn_cpu.c) and a batch's crops
(data/crops_cpu.c). Each caller keeps torch operations for where its C code cannot run.

A source is compiled with the system's C compiler (CC, default cc) and -march=native into
`$ALEXNET_CACHE/native` (files.cache_root), named by its stem and a digest of the source, the
compiler, the flags and this machine's CPU, and written atomically, so a cache shared between
machines never hands one of them code for another's CPU; a file there that does not load is
built again, once. Where there is no compiler, or the build fails, `load` returns None after a
warning, and the caller runs its torch operations.
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import platform
import subprocess
import tempfile
from pathlib import Path

from alexnet.files import cache_root, write_atomically

log = logging.getLogger("alexnet.native")

FLAGS = ("-O3", "-march=native", "-fno-math-errno", "-shared", "-fPIC")


def _cpu_identity() -> bytes:
    """What -march=native compiles for: the machine and the CPU's model and feature flags."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        lines = []
    wanted = ("model name", "flags", "Features", "CPU part")  # x86 and Arm spellings
    described = {line for line in lines if line.split(":")[0].strip() in wanted}
    return (platform.machine() + platform.processor() + "".join(sorted(described))).encode()


def _compiler() -> str:
    return os.environ.get("CC", "cc")


def _build(source: Path, target: Path) -> None:
    """Compile `source` to `target` (atomically); raises OSError or SubprocessError."""
    with tempfile.TemporaryDirectory() as folder:
        built = Path(folder) / target.name
        command = [_compiler(), *FLAGS, str(source), "-o", str(built), "-lm"]
        subprocess.run(command, check=True, capture_output=True, timeout=120)
        write_atomically(target, lambda file: file.write(built.read_bytes()))


def load(source: Path, what: str, otherwise: str) -> ctypes.CDLL | None:
    """`source` compiled for this machine (built on its first call here, then found in the
    cache), or None with a warning that `what` is unavailable and `otherwise` happens instead."""
    try:
        described = source.read_bytes() + " ".join((_compiler(), *FLAGS)).encode()
        digest = hashlib.sha256(described + _cpu_identity()).hexdigest()[:16]
        target = cache_root() / "native" / f"{source.stem}-{digest}.so"
        if not target.is_file():
            _build(source, target)
        try:
            return ctypes.CDLL(str(target))
        except OSError:  # a damaged file in the cache: built again, once
            _build(source, target)
            return ctypes.CDLL(str(target))
    except (OSError, RuntimeError, subprocess.SubprocessError) as error:  # Runtime: no home
        detail = getattr(error, "stderr", b"") or b""
        log.warning(
            "%s is unavailable (%s%s); %s",
            what, error, f": {detail.decode(errors='replace').strip()[:300]}" if detail else "",
            otherwise,
        )  # fmt: skip
        return None
