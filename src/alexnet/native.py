"""C code for the CPU's fast paths, compiled ahead of use and called through ctypes (which
releases the GIL for each call): LRN's kernels (ops/lrn_cpu.c) and a batch's arithmetic
(data/transform/cpu_kernel.c). Each gives the same bits as the torch operations it replaces,
so whether it runs changes the speed, never the result.

`build_kernels` compiles them with the system's C compiler (CC, default cc) into
`$ALEXNET_CACHE/kernels` (files.cache_dir): at the start of `fit`, `evaluate` and `load` when
the recipe's `run.native_kernels` allows, or ahead of time with `alexnet kernels`. Loading
never compiles, so a model's forward pass never does. The flags keep the float order of the
source: -ffp-contract=off forbids fused multiply-adds, whose single rounding would make the
bits depend on the CPU the code was built for (GCC fuses `a*b + c` by default).

Only what this tool built is loaded: the folder must be the user's own (created 0700, owned by
this user, writable by no one else), each library's SHA-256 is recorded when it is built and
checked before it is loaded, and a library that fails the check or lacks a symbol is built
again, once, with one warning. A file name holds a digest of the source, the compiler, the
flags and the CPU, so a cache shared between machines never hands one another's code.
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import platform
import stat
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from alexnet.errors import UserError
from alexnet.files import cache_dir, write_atomically

log = logging.getLogger("alexnet.native")

FLAGS = ("-O3", "-march=native", "-ffp-contract=off", "-fno-math-errno", "-shared", "-fPIC")


class KernelError(UserError):
    """`run.native_kernels=on` and the kernels cannot be built or loaded here."""


@dataclass(frozen=True)
class Kernel:
    """One C source and the functions its library must export, each with its C signature:
    (name, argument types, return type), declared on the library once when it is loaded."""

    source: Path
    functions: tuple[tuple[str, tuple[type, ...], type], ...]

    @property
    def name(self) -> str:
        return self.source.stem

    @property
    def symbols(self) -> tuple[str, ...]:
        return tuple(name for name, _, _ in self.functions)


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


def library_path(kernel: Kernel) -> Path:
    """Where `kernel`'s library for this machine, compiler and flags lives in the cache."""
    described = kernel.source.read_bytes() + " ".join((_compiler(), *FLAGS)).encode()
    digest = hashlib.sha256(described + _cpu_identity()).hexdigest()[:16]
    return cache_dir("kernels") / f"{kernel.name}-{digest}.so"


def _digest_path(library: Path) -> Path:
    return library.with_suffix(".sha256")


def _own_folder() -> Path:
    """The kernels' folder, made 0700 if new; OSError unless this user alone may write it."""
    folder = cache_dir("kernels")
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    info = folder.lstat()
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
        raise OSError(f"{folder} is not a folder of this user's own")
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise OSError(f"{folder} may be written by other users (mode {info.st_mode & 0o777:o})")
    return folder


def _build(kernel: Kernel, target: Path) -> None:
    """Compile `kernel` to `target`, then record its SHA-256 (both atomically)."""
    with tempfile.TemporaryDirectory() as folder:
        built = Path(folder) / target.name
        command = [_compiler(), *FLAGS, str(kernel.source), "-o", str(built), "-lm"]
        subprocess.run(command, check=True, capture_output=True, timeout=120)
        content = built.read_bytes()
    write_atomically(target, lambda file: file.write(content))
    digest = hashlib.sha256(content).hexdigest().encode()
    write_atomically(_digest_path(target), lambda file: file.write(digest))


def _verified(kernel: Kernel, target: Path) -> ctypes.CDLL:
    """The library at `target`, loaded only if its content matches the recorded SHA-256 and it
    exports every symbol; OSError otherwise."""
    content, recorded = target.read_bytes(), _digest_path(target).read_bytes().strip()
    if hashlib.sha256(content).hexdigest().encode() != recorded:
        raise OSError(f"{target} does not match the digest recorded when it was built")
    info = target.lstat()
    if not stat.S_ISREG(info.st_mode) or info.st_uid != os.getuid():
        raise OSError(f"{target} is not a file of this user's own")
    library = ctypes.CDLL(str(target))
    missing = [name for name in kernel.symbols if not hasattr(library, name)]
    if missing:
        raise OSError(f"{target} lacks {', '.join(missing)}")
    for name, arguments, result in kernel.functions:
        function = getattr(library, name)
        function.argtypes, function.restype = list(arguments), result
    return library


_loaded: dict[Kernel, ctypes.CDLL] = {}  # libraries checked and loaded here, not a switch


def load(kernel: Kernel, *, build: bool) -> ctypes.CDLL:
    """`kernel`'s library: from the cache when it passes the checks, else (with `build`)
    compiled, or compiled again once after one warning. Raises OSError or SubprocessError."""
    if kernel in _loaded:
        return _loaded[kernel]
    _own_folder()
    target = library_path(kernel)
    try:
        library = _verified(kernel, target)
    except OSError as error:
        if not build:
            raise
        if target.exists() or _digest_path(target).exists():
            log.warning("compiled kernel %s is rebuilt: %s", kernel.name, error)
        _build(kernel, target)
        library = _verified(kernel, target)
    _loaded[kernel] = library
    return library


def loaded(kernel: Kernel) -> ctypes.CDLL | None:
    """`kernel`'s library if `build_kernels` (or `load`) made it ready in this process, else
    None: what a forward pass asks (a dictionary lookup), so that it never compiles."""
    return _loaded.get(kernel)


def build_kernels(kernels: list[Kernel], *, required: bool) -> bool:
    """Every kernel compiled (or found in the cache) and loaded; a build is reported in one
    line. Where that fails: KernelError if `required`, else one warning and False (torch
    operations run)."""
    start = time.perf_counter()
    try:
        built = any(k not in _loaded and not library_path(k).exists() for k in kernels)
        for kernel in kernels:
            load(kernel, build=True)
    except (OSError, RuntimeError, subprocess.SubprocessError) as error:  # Runtime: no home
        detail = (getattr(error, "stderr", b"") or b"").decode(errors="replace").strip()[:300]
        reason = f"{error}{': ' + detail if detail else ''}"
        if required:
            raise KernelError(
                f"run.native_kernels=on, but the compiled CPU kernels cannot be built: {reason}"
            ) from None
        log.warning("compiled CPU kernels unavailable (%s); using torch operations", reason)
        return False
    # A build (once a machine) is reported; finding them again is not news on every command.
    seconds = time.perf_counter() - start
    level, how = (logging.INFO, f"built in {seconds:.1f} s") if built else (logging.DEBUG, "found")
    names = ", ".join(kernel.name for kernel in kernels)
    log.log(level, "compiled CPU kernels: %s %s in %s", names, how, cache_dir("kernels"))
    return True
