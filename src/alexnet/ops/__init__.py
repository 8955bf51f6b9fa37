"""Device kernels below the model: LRN (§3.3) as a torch custom op, on CPU and CUDA (Triton)."""

from alexnet.ops.lrn import local_response_norm

__all__ = ["local_response_norm"]
