"""The compiled CPU kernels (native.py), built once at the start of a run when the recipe's
`run.native_kernels` allows: LRN's (ops/lrn_native.py) and a batch's arithmetic
(data/transform/cpu_kernel.py). `alexnet kernels` and `alexnet.build_kernels()` build them
ahead of time.
"""

from __future__ import annotations

import torch

from alexnet.data.transform.cpu_kernel import KERNEL as BATCH_ARITHMETIC
from alexnet.native import build_kernels as _build
from alexnet.ops.lrn_native import KERNEL as LRN

KERNELS = [LRN, BATCH_ARITHMETIC]


def build_kernels(*, required: bool = True) -> bool:
    """Every compiled CPU kernel ready in this process (built, or found in the cache); a build
    is reported in one line. Not buildable: native.KernelError if `required`, else a warning
    and False."""
    return _build(KERNELS, required=required)


def resolve_native_kernels(mode: str, device: torch.device) -> bool:
    """Whether a run on `device` uses the compiled kernels: they are CPU code, so never on
    another device; "on" requires them, "auto" takes them where they build, "off" never."""
    if mode == "off" or device.type != "cpu":
        return False
    return build_kernels(required=mode == "on")
