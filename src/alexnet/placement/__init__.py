"""Where a run computes, resolved once into a `Placement` (placement.py): the device and its
fast paths (device.py), the processes torchrun started (ranks.py) and §3.2's two towers on two
devices (towers.py)."""

from alexnet.placement.placement import Placement

__all__ = ["Placement"]
