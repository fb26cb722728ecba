"""Two parts of a training step that cnnlab replaced, timed against torch's defaults.

- **Optimizer step**: Adam over a model's parameters (with gradients), the fused
  implementation (what cnnlab uses) against the foreach one.
- **Dropout**: the training-mode forward of cnnlab's :class:`~cnnlab.models.layers.Dropout`
  (a mask from 16-bit slices of random int64 words) against ``torch.nn.functional.dropout``
  on the same activations.

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

from cnnlab.models import create_model
from cnnlab.models.layers import Dropout


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


def adam_step(model_id: str, fused: bool) -> Callable[[], object]:
    """One Adam step over ``model_id``'s parameters, with fixed random gradients."""
    params = list(create_model(model_id).parameters())
    for p in params:
        p.grad = torch.randn_like(p)
    kind = {"fused": True} if fused else {"foreach": True}
    opt = torch.optim.Adam(params, lr=1e-3, **kind)
    return opt.step


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
    ours = Dropout(args.p).train()
    rows = [
        (f"Adam step, {args.model} ({n_params:,} parameters), foreach",
         per_call_ms(adam_step(args.model, fused=False), args.calls, args.repeats)),
        (f"Adam step, {args.model} ({n_params:,} parameters), fused",
         per_call_ms(adam_step(args.model, fused=True), args.calls, args.repeats)),
        (f"dropout p={args.p} on {tuple(x.shape)}, torch F.dropout",
         per_call_ms(lambda: F.dropout(x, args.p, True), args.calls, args.repeats)),
        (f"dropout p={args.p} on {tuple(x.shape)}, cnnlab Dropout",
         per_call_ms(lambda: ours(x), args.calls, args.repeats)),
    ]  # fmt: skip
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; "
          f"median of {args.repeats} loops of {args.calls} calls")  # fmt: skip
    for name, ms in rows:
        print(f"{ms:8.3f} ms  {name}")


if __name__ == "__main__":
    main()
