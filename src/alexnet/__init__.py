"""AlexNet (Krizhevsky, Sutskever, Hinton, NIPS 2012) as the paper describes it.

`AlexNet` is the network; `load(run_or_checkpoint)` gives a trained one with its own
preprocessing and class names, ready to `predict` and `embed` (inference.py).
"""

from alexnet.inference import load
from alexnet.model import AlexNet

__all__ = ["AlexNet", "load"]
