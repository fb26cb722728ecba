"""Native CPU kernels for the operations eager PyTorch runs slowly on small networks.

Only one so far: 2×2 max pooling over channels-last tensors with an optional fused ReLU
(:func:`max_pool2`). It is C compiled on first use for the machine it runs on and loaded
with ctypes; where that is impossible (no C compiler, no AVX-512, ``CNNLAB_NATIVE=0``)
every function here falls back to torch's own operators with identical results.
"""

from cnnlab.kernels.native import native_status
from cnnlab.kernels.pooling import max_pool2

__all__ = ["max_pool2", "native_status"]
