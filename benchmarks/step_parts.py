"""Two parts of a training step that cnnlab replaced, timed against torch's defaults.

- **Optimizer step**: Adam over a model's parameters (with gradients): torch's foreach
  and fused implementations, and cnnlab's ``LeanAdam`` (torch's fused kernel, called with
  lists kept between steps), which ``cnnlab train`` uses.
- **First convolution**: forward and backward of each tutorial network's first layer (one
  input channel) and the ReLU and 2×2 max pooling after it, at the tutorial's batch size
  under bf16 autocast: as the training loop ran it before (torch's convolution, oneDNN,
  then the speed layer's native pooling, ``speed_up(layers, rules={"pooling"})``)
  against the whole speed layer's :func:`cnnlab.speed.conv.conv1_pool`.
- **Batch norm**: forward and backward of a training-mode ``BatchNorm2d`` and the ReLU
  after it on the ``speedrun-cnn`` shapes (batch 128: 24 × 12 × 12 and 32 × 5 × 5,
  channels-last, bf16 and fp32): torch's operators against the speed layer's
  :func:`cnnlab.speed.batchnorm.batch_norm`.
- **Dropout**: the training-mode forward of the speed layer's
  :class:`~cnnlab.speed.modules.FastDropout` (its mask in one native pass, or from 16-bit
  slices of random int64 words without the native kernels) against
  ``torch.nn.functional.dropout`` on the same activations.

Each is the median of ``--repeats`` loops of ``--calls`` calls after a warm-up, in
milliseconds per call. The defaults: Adam over ``seed003-deep-mnist`` (3.27 M parameters),
dropout on the input of ``seed002-cnn``'s first dropout layer, 200 × 36 × 7 × 7.

    python benchmarks/step_parts.py
    python benchmarks/step_parts.py --model seed002-cnn --dropout-shape 50 1024
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from cnnlab.models import create_model
from cnnlab.speed import speed_up
from cnnlab.speed.batchnorm import batch_norm
from cnnlab.speed.modules import FastDropout
from cnnlab.train.optim import make_optimizer


def per_call_ms(fn: Callable[[], object], calls: int, repeats: int) -> float:
    """Median over ``repeats`` loops of the milliseconds one call of ``fn`` takes."""
    for _ in range(max(3, calls // 10)):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        times.append((time.perf_counter() - start) / calls * 1e3)
    return statistics.median(times)


def adam_step(model_id: str, kind: str) -> Callable[[], object]:
    """One Adam step over ``model_id``'s parameters, with fixed random gradients:
    ``kind`` is ``foreach`` or ``fused`` (torch's) or ``lean`` (cnnlab's)."""
    params = list(create_model(model_id).parameters())
    for p in params:
        p.grad = torch.randn_like(p)
    if kind == "lean":
        return make_optimizer("adam", params, 1e-3).step
    opt = torch.optim.Adam(params, lr=1e-3, **{kind: True})
    return opt.step


#: the tutorials' first layers: model -> (batch, output channels, kernel, padding)
FIRST_LAYERS = {
    "seed000-cnn": (64, 16, 3, 1),
    "seed002-cnn": (200, 16, 5, 2),
    "seed003-deep-mnist": (50, 32, 5, 2),
    "seed004-lenet-max": (64, 6, 3, 1),
}


def first_layer(model_id: str, native: bool) -> Callable[[], object]:
    """Forward and backward of ``model_id``'s first convolution with ReLU and pooling:
    as the training loop ran it before the native convolution (torch's convolution,
    then the native pooling), or as it runs it now."""
    batch, channels, k, padding = FIRST_LAYERS[model_id]
    torch.manual_seed(0)
    layers = nn.Sequential(nn.Conv2d(1, channels, k, padding=padding), nn.ReLU(), nn.MaxPool2d(2))
    layers = layers.to(memory_format=torch.channels_last)
    forward = speed_up(layers) if native else speed_up(layers, rules={"pooling"})
    x = torch.rand(batch, 1, 28, 28).contiguous(memory_format=torch.channels_last)
    side = (28 + 2 * padding - k + 1) // 2
    grad = torch.randn(batch, channels, side, side).to(torch.bfloat16)
    grad = grad.contiguous(memory_format=torch.channels_last)

    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y = forward(x)
        y.backward(grad)

    return step


#: speedrun-cnn's batch norms, batch 128: (channels, height, width)
BATCH_NORMS = [(24, 12, 12), (32, 5, 5)]


def bn_relu(shape: tuple[int, ...], dtype: torch.dtype, native: bool) -> Callable[[], object]:
    """Forward and backward of a training batch norm and its ReLU, torch's or native."""
    torch.manual_seed(0)
    bn = nn.BatchNorm2d(shape[1])
    x = torch.randn(shape).to(dtype).contiguous(memory_format=torch.channels_last)
    x.requires_grad_()
    grad = torch.randn(shape).to(dtype).contiguous(memory_format=torch.channels_last)

    def call() -> None:
        y = batch_norm(x, bn, relu=True) if native else F.relu(bn(x))
        y.backward(grad)

    return call


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="seed003-deep-mnist", help="(seed003-deep-mnist)")
    parser.add_argument(
        "--dropout-shape", type=int, nargs="+", default=[200, 36, 7, 7], help="(200 36 7 7)"
    )
    parser.add_argument("--p", type=float, default=0.5, help="dropout probability (0.5)")
    parser.add_argument("--calls", type=int, default=200, help="calls per timed loop (200)")
    parser.add_argument("--repeats", type=int, default=5, help="timed loops (5)")
    args = parser.parse_args()

    n_params = sum(p.numel() for p in create_model(args.model).parameters())
    x = torch.randn(*args.dropout_shape)
    ours = FastDropout(nn.Dropout(args.p)).train()
    rows = [
        *((f"Adam step, {args.model} ({n_params:,} parameters), {kind}",
           per_call_ms(adam_step(args.model, kind), args.calls, args.repeats))
          for kind in ("foreach", "fused", "lean")),
        *((f"first convolution + pooling of {model}, {name}",
           per_call_ms(first_layer(model, native), args.calls, args.repeats))
          for model in FIRST_LAYERS
          for name, native in (("torch + native pooling", False), ("cnnlab conv1_pool", True))),
        *((f"batch norm + ReLU, 128×{c}×{h}×{w} {str(dtype)[6:]}, {name}",
           per_call_ms(bn_relu((128, c, h, w), dtype, native), args.calls, args.repeats))
          for c, h, w in BATCH_NORMS
          for dtype in (torch.bfloat16, torch.float32)
          for name, native in (("torch", False), ("cnnlab batch_norm", True))),
        (f"dropout p={args.p} on {tuple(x.shape)}, torch F.dropout",
         per_call_ms(lambda: F.dropout(x, args.p, True), args.calls, args.repeats)),
        (f"dropout p={args.p} on {tuple(x.shape)}, cnnlab FastDropout",
         per_call_ms(lambda: ours(x), args.calls, args.repeats)),
    ]  # fmt: skip
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; "
          f"median of {args.repeats} loops of {args.calls} calls")  # fmt: skip
    for name, ms in rows:
        print(f"{ms:8.3f} ms  {name}")


if __name__ == "__main__":
    main()
