"""Inference throughput: eager PyTorch (contiguous and channels-last) against onnxruntime.

What is timed is what ``cnnlab export`` ships: uint8 images N×1×28×28 in, logits out,
the run's preprocessing (scale, normalise, fit to the model's input) included. Three
ways to run it:

- ``eager``: the PyTorch module, ``model.eval()``, under ``torch.inference_mode()``;
- ``eager channels_last``: the same with the weights and the preprocessed input in
  ``torch.channels_last`` memory format;
- ``eager channels_last speed-up``: that, through the speed layer's view of the model,
  :func:`cnnlab.speed.speed_up` (what ``cnnlab evaluate``, ``predict`` and ``serve`` run);
- ``onnxruntime``: the ONNX file ``cnnlab export`` writes (``torch.onnx.export``, opset
  18), in an onnxruntime CPU session with all graph optimisations.

For each batch size (default 1 and 1024) and each way: warm-up calls (at least 3 and
0.2 s), then ``--repeats`` repeats, each a loop of calls lasting at least ``--min-time``
seconds; images per second = images / loop time. The median over repeats is reported,
with the median time per call. torch and onnxruntime use the same number of intra-op
threads (``--threads``, default torch's). Before timing, the three are checked to give
the same logits.

    python benchmarks/inference.py --run runs/s0 --out inference.json
    python benchmarks/inference.py --model seed000-cnn --threads 1      # random weights
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import machine
import torch
from torch import nn

from cnnlab.data.loader import Preprocess
from cnnlab.export import ExportedModel, onnx_session, write_onnx
from cnnlab.speed import speed_up


class ChannelsLast(nn.Module):
    """Preprocess, then run the model on a channels-last input (weights converted too),
    optionally through the speed layer's view of the model."""

    def __init__(self, model: nn.Module, preprocess: Preprocess, fast: bool = False) -> None:
        super().__init__()
        model = model.to(memory_format=torch.channels_last)
        self.model = speed_up(model) if fast else model
        self.preprocess = preprocess

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.preprocess(images).contiguous(memory_format=torch.channels_last)
        return self.model(x)


def load(run: Path | None, model_id: str) -> tuple[nn.Module, Preprocess, str]:
    """The model and preprocessing of a run folder, or a registered model with random weights."""
    if run is not None:
        from cnnlab.runs import load_run

        r = load_run(run)
        return r.model, r.preprocess, f"run {run} ({r.config.model})"
    from cnnlab.models import get_model_spec

    spec = get_model_spec(model_id)
    torch.manual_seed(0)
    return spec.create(), Preprocess(spec.input_size, spec.fit), f"{model_id}, random weights"


def measure(call: Callable[[], Any], batch: int, repeats: int, min_time: float) -> dict[str, float]:
    """Warm up, then time ``repeats`` loops of at least ``min_time`` seconds each."""
    calls, start = 0, time.perf_counter()
    while calls < 3 or time.perf_counter() - start < 0.2:
        call()
        calls += 1
    per_call = (time.perf_counter() - start) / calls
    loop = max(1, int(min_time / max(per_call, 1e-9)))
    rates, latencies = [], []
    for _ in range(repeats):
        t = time.perf_counter()
        for _ in range(loop):
            call()
        elapsed = time.perf_counter() - t
        rates.append(batch * loop / elapsed)
        latencies.append(1000 * elapsed / loop)
    return {
        "images_per_second": statistics.median(rates),
        "ms_per_call": statistics.median(latencies),
        "calls_per_repeat": loop,
        "repeats": repeats,
        "all_images_per_second": [round(r, 1) for r in rates],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--run", type=Path, help="run folder (trained weights)")
    source.add_argument(
        "--model", default="seed000-cnn", help="model id with random weights (seed000-cnn)"
    )
    parser.add_argument(
        "--batch-sizes", default="1,1024", help="comma-separated batch sizes (1,1024)"
    )
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats, at least 3 (5)")
    parser.add_argument("--min-time", type=float, default=0.5, help="seconds per repeat (0.5)")
    parser.add_argument("--threads", type=int, help="intra-op threads for torch and onnxruntime")
    parser.add_argument("--skip-onnx", action="store_true", help="eager PyTorch only")
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    args = parser.parse_args(argv)
    try:
        batches = [int(b) for b in args.batch_sizes.split(",") if b.strip()]
    except ValueError:
        parser.error(f"--batch-sizes: expected numbers, got {args.batch_sizes!r}")
    if not batches or min(batches) < 1 or args.repeats < 3 or args.min_time <= 0:
        parser.error("batch sizes must be at least 1, --repeats at least 3, --min-time > 0")
    if args.threads:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()

    model, preprocess, what = load(args.run, args.model)
    model.eval()
    eager = ExportedModel(model, preprocess).eval()
    import copy

    channels_last = ChannelsLast(copy.deepcopy(model), preprocess).eval()
    fast = ChannelsLast(copy.deepcopy(model), preprocess, fast=True).eval()
    ways: dict[str, Callable[[torch.Tensor], Any]] = {
        "eager": eager,
        "eager channels_last": channels_last,
        "eager channels_last speed-up": fast,
    }

    results: dict[str, Any] = {
        **machine.describe("inference.py", argv),
        "model": what,
        "threads": threads,
        "input": "uint8 N×1×28×28, preprocessing inside the timed call",
        "timing": f"median of {args.repeats} repeats of >= {args.min_time:g} s after warm-up",
        "results": {},
    }
    gen = torch.Generator().manual_seed(0)
    check = torch.randint(0, 256, (8, 1, 28, 28), dtype=torch.uint8, generator=gen)
    with tempfile.TemporaryDirectory(prefix="inference-") as tmp:
        if not args.skip_onnx:
            path = Path(tmp) / "model.onnx"
            write_onnx(eager, path)
            session = onnx_session(path, threads)
            results["onnxruntime_version"] = __import__("onnxruntime").__version__
            results["onnx_bytes"] = path.stat().st_size

            def ort_call(x: torch.Tensor, session: Any = session) -> Any:
                return session.run(["logits"], {"images": x.numpy()})[0]

            ways["onnxruntime"] = ort_call
        with torch.inference_mode():
            reference = eager(check)
            diffs = {
                name: float((torch.as_tensor(fn(check)) - reference).abs().max())
                for name, fn in ways.items()
            }
        results["max_abs_diff_vs_eager"] = diffs
        for batch in batches:
            x = torch.randint(0, 256, (batch, 1, 28, 28), dtype=torch.uint8, generator=gen)
            for name, fn in ways.items():
                with torch.inference_mode():
                    m = measure(lambda fn=fn, x=x: fn(x), batch, args.repeats, args.min_time)
                results["results"].setdefault(name, {})[str(batch)] = m
                print(
                    f"{name} batch {batch}: {m['images_per_second']:,.0f} images/s "
                    f"({m['ms_per_call']:.3f} ms per call)",
                    file=sys.stderr,
                )
    results["load_average_end"] = machine.load_average()

    head = ["runtime"] + [f"batch {b}: images/s (ms/call)" for b in batches]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, per_batch in results["results"].items():
        cells = [
            f"{per_batch[str(b)]['images_per_second']:,.0f} ({per_batch[str(b)]['ms_per_call']:.3f})"
            for b in batches
        ]
        lines.append("| " + " | ".join([name, *cells]) + " |")
    results["table"] = "\n".join(lines)
    faster = {
        str(b): (
            "channels_last"
            if results["results"]["eager channels_last"][str(b)]["images_per_second"]
            > results["results"]["eager"][str(b)]["images_per_second"]
            else "contiguous"
        )
        for b in batches
    }
    results["faster_eager_layout"] = faster

    hw = results["hardware"]
    print(f"command: {results['command']}")
    print(f"model:   {what}")
    print(
        f"machine: {hw['cpu']}, {hw['cores']} cores; torch {results['versions']['torch']}"
        + (f", onnxruntime {results['onnxruntime_version']}" if not args.skip_onnx else "")
        + f"; {threads} intra-op thread(s) each"
    )
    print(
        "max |logit difference| against eager: "
        + ", ".join(f"{k} {v:.1e}" for k, v in diffs.items() if k != "eager")
    )
    print(results["timing"] + "\n")
    print(results["table"])
    print(
        "\nfaster eager layout: "
        + ", ".join(f"batch {b}: {layout}" for b, layout in faster.items())
    )
    if args.out:
        from cnnlab import atomic

        atomic.write_json(args.out, results)
        print(f"results: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
