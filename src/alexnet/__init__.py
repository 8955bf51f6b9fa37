"""AlexNet (Krizhevsky, Sutskever, Hinton, NIPS 2012) as the paper describes it."""

from alexnet.model import AlexNet

__all__ = ["AlexNet"]
