"""Native CPU kernels for the operations eager PyTorch runs slowly on small networks.

2×2 max pooling over channels-last tensors with an optional fused ReLU
(:func:`max_pool2`), dropout masks written in the tensor's dtype (:func:`dropout_mask`)
and convolutions of one-channel images, alone or with the pooling after them
(:func:`conv1`, :func:`conv1_pool`). They are C compiled on first use for the machine
it runs on and loaded with ctypes; where that is impossible (no C compiler, no AVX2, ``CNNLAB_NATIVE=0``)
the callers fall back to torch's own operators: identical results for pooling, masks of
the same distribution (but other random draws) for dropout, the same convolution up to
rounding.
"""

from cnnlab.kernels.conv import conv1, conv1_pool
from cnnlab.kernels.dropout import dropout_mask
from cnnlab.kernels.native import native_status
from cnnlab.kernels.pooling import max_pool2

__all__ = ["conv1", "conv1_pool", "dropout_mask", "max_pool2", "native_status"]
