"""AlexNet (Krizhevsky, Sutskever, Hinton, NIPS 2012) as the paper describes it.

`AlexNet` is the network; `load(run_or_checkpoint)` gives a trained one with its own
preprocessing and class names, ready to `predict` and `embed` (inference.py); `build_kernels()`
compiles the CPU's C kernels for a plain torch loop (then `model.set_fast_paths(...)`). Each is
imported on first use, so that a command that needs no torch (`alexnet --help`, the report of an
unchanged run) starts without it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from alexnet.inference import load
    from alexnet.model import AlexNet
    from alexnet.placement.kernels import build_kernels

_HOMES = {
    "AlexNet": "alexnet.model",
    "load": "alexnet.inference",
    "build_kernels": "alexnet.placement.kernels",
}
__all__ = ["AlexNet", "build_kernels", "load"]


def __getattr__(name: str) -> object:
    if name in _HOMES:
        return getattr(importlib.import_module(_HOMES[name]), name)
    raise AttributeError(f"module 'alexnet' has no attribute {name!r}")
