"""The speed layer: everything cnnlab does to train and predict faster than plain PyTorch.

Models stay plain ``torch.nn``; the speed layer works from outside them:

- :func:`speed_up` (``rewrite.py``) gives a view of a model with fast modules swapped
  into its forward (``modules.py``): native 2×2 max pooling with the activation beside
  it, a native first convolution for one-channel images (with its pooling), batch
  norm in training as native passes with the ReLU after it fused, small
  linear layers kept in fp32 under CPU autocast, and a cheaper dropout mask. The
  :class:`~cnnlab.train.Trainer` trains through it, and prediction runs it
  (``Trainer(speed_up=False)`` and ``load_run(..., speed_up=False)`` turn it off);
- the native kernels are C (``csrc/``), compiled once per machine and loaded with
  ctypes (``native.py``), wrapped as autograd functions that fall back to torch's
  operators where they do not apply (``conv.py``, ``pooling.py``, ``batchnorm.py``,
  ``dropout.py``).
  ``CNNLAB_NATIVE=0`` turns them off, :func:`status` says whether they are in use;
- :class:`LeanAdam` and :class:`LeanAdamW` (``optim.py``) call torch's fused Adam kernel
  without rebuilding its argument lists every step;
- :func:`tune_cpu_allocator` (``allocator.py``) keeps freed memory in the heap for the
  next step;
- :class:`ThreadPolicy` (``threads.py``) picks the CPU thread count by timing the steps,
  again whenever the load changes (``--threads auto``);
- :func:`defer_dynamo_import` (``startup.py``) keeps torch's optimizers from importing
  ``torch._dynamo`` when nothing compiles.

What each piece buys, measured, is in docs/benchmarks.md.
"""

from cnnlab.speed.allocator import tune_cpu_allocator
from cnnlab.speed.native import native_status as status
from cnnlab.speed.optim import LeanAdam, LeanAdamW
from cnnlab.speed.rewrite import RULES, speed_up
from cnnlab.speed.startup import defer_dynamo_import
from cnnlab.speed.threads import ThreadPolicy, set_threads

__all__ = [
    "RULES",
    "LeanAdam",
    "LeanAdamW",
    "ThreadPolicy",
    "defer_dynamo_import",
    "set_threads",
    "speed_up",
    "status",
    "tune_cpu_allocator",
]
