"""Training throughput of each speed option: memory format, bf16 autocast, torch.compile.

For each model (with its tutorial's batch size) and each variant, the script builds a
:class:`cnnlab.train.Trainer` exactly as ``cnnlab train`` would and times its real
training step (augmentation off, batches sliced from a device-resident uint8 tensor of
MNIST-shaped images): ``--steps`` steps after ``--warmup`` untimed steps (which also
absorb ``torch.compile``'s compilation). Variants run interleaved, repeat by repeat, so
machine noise hits all of them; the median images per second over ``--repeats`` is
reported with the ratio to the fp32 contiguous baseline (or, without it, to the first
variant asked for).

Variants: ``fp32`` (contiguous NCHW), ``fp32 channels-last``, ``bf16 channels-last``
(autocast; weights stay fp32), the last two again with ``pooling`` (only the speed
layer's pooling rule: activation and 2×2 max pooling in one native pass,
``speed_up(model, rules={"pooling"})``) and ``speed-up`` (the whole speed layer,
:func:`cnnlab.speed.speed_up`, the default: native first convolution with its pooling,
small linear layers in fp32, the cheaper dropout mask as well), ``fp32 compile`` and
``bf16 channels-last compile``. All but ``pooling``, ``speed-up`` and the compiled ones
train the model as it is.

    python benchmarks/train_options.py --out train_options.json
    python benchmarks/train_options.py --models seed000-cnn vgg-bn --repeats 3
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import machine
import torch

import cnnlab
from cnnlab.data.loader import Preprocess, TensorBatches
from cnnlab.models import get_model_spec
from cnnlab.runs import build_model
from cnnlab.speed import speed_up
from cnnlab.train import Trainer

#: model -> batch size (the tutorial's, or the recipe's for cnnlab's own models)
MODELS = {
    "seed000-cnn": 64,
    "seed002-cnn": 200,
    "seed003-deep-mnist": 50,
    "seed004-lenet-max": 64,
    "speedrun-cnn": 128,
    "vgg-bn": 128,
}
VARIANTS = {
    "fp32": {"precision": "fp32", "channels_last": False, "speed_up": False},
    "fp32 channels-last": {"precision": "fp32", "channels_last": True, "speed_up": False},
    "bf16 channels-last": {"precision": "bf16", "channels_last": True, "speed_up": False},
    "fp32 channels-last pooling": {
        "precision": "fp32",
        "channels_last": True,
        "speed_up": "pooling",
    },
    "bf16 channels-last pooling": {
        "precision": "bf16",
        "channels_last": True,
        "speed_up": "pooling",
    },
    "fp32 channels-last speed-up": {"precision": "fp32", "channels_last": True, "speed_up": True},
    "bf16 channels-last speed-up": {"precision": "bf16", "channels_last": True, "speed_up": True},
    "fp32 compile": {"precision": "fp32", "channels_last": False, "compile": True},
    "bf16 channels-last compile": {"precision": "bf16", "channels_last": True, "compile": True},
}


def make_trainer(model_id: str, options: dict[str, Any]) -> Trainer:
    spec = get_model_spec(model_id)
    torch.manual_seed(0)
    model = build_model(spec, 10, {})
    pooling_only = options.get("speed_up") == "pooling"
    trainer = Trainer(
        model,
        preprocess=Preprocess(spec.input_size, spec.fit),
        optimizer=spec.recipe.get("optimizer", "adam"),
        lr=spec.recipe.get("lr"),
        device="cpu",
        progress=False,
        **{**options, "speed_up": options.get("speed_up") is True},
    )
    if pooling_only:
        trainer.forward = speed_up(trainer.model, rules={"pooling"})
    return trainer


def images_per_second(trainer: Trainer, batch: int, steps: int, warmup: int) -> float:
    """Take ``warmup`` + ``steps`` of the trainer's own steps; time the last ``steps``."""
    n = batch * (steps + warmup)
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, 1, 28, 28), dtype=torch.uint8, generator=gen)
    labels = torch.randint(0, 10, (n,), generator=gen)
    batches = TensorBatches(
        images, labels, batch, trainer.preprocess, channels_last=trainer.channels_last
    )
    it = iter(batches)
    trainer.model.train()
    for _ in range(warmup):
        trainer.train_step(*next(it))
    start = time.perf_counter()
    for _ in range(steps):
        trainer.train_step(*next(it))
    return steps * batch / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--steps", type=int, default=60, help="timed steps (default 60)")
    parser.add_argument("--warmup", type=int, default=10, help="untimed steps (default 10)")
    parser.add_argument("--repeats", type=int, default=3, help="repeats (default 3)")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    parser.add_argument("--out", type=Path, help="write JSON results here")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    report: dict[str, Any] = {**machine.describe("train_options.py"), "results": {}}
    print(f"cnnlab {cnnlab.__version__}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, {machine.cpu_model()}")  # fmt: skip
    for model_id in args.models:
        batch = MODELS[model_id]
        rates: dict[str, list[float]] = {v: [] for v in args.variants}
        for _ in range(args.repeats):
            for variant in args.variants:
                trainer = make_trainer(model_id, VARIANTS[variant])
                rates[variant].append(images_per_second(trainer, batch, args.steps, args.warmup))
        medians = {v: machine.median(r) for v, r in rates.items()}
        base_name = "fp32" if "fp32" in medians else next(iter(medians))
        base = medians[base_name]
        report["results"][model_id] = {"batch": batch, "images_per_second": rates}
        print(f"\n{model_id} (batch {batch}): median images/s over {args.repeats} repeats")
        print(f"| variant | images/s | vs {base_name} |")
        print("| --- | ---: | ---: |")
        for v, m in medians.items():
            print(f"| {v} | {m:,.0f} | {m / base:.2f}× |")
    report["load_average_end"] = machine.load_average()
    if args.out:
        args.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
