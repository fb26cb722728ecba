"""Where a training step's time goes: torch.profiler over 100 steps of a model.

Trains the model with cnnlab's :class:`~cnnlab.train.Trainer` and its defaults (bf16
autocast where the CPU has it, channels-last, fused Adam) on the first ``100 × batch``
MNIST training images: one warm-up epoch, two timed epochs (milliseconds per step), then
one profiled epoch, printed as torch.profiler's table of operators by self CPU time.

    python benchmarks/profile_step.py seed002-cnn --batch-size 200
    python benchmarks/profile_step.py seed000-cnn --batch-size 64 --rows 30

Needs MNIST (``CNNLAB_DATA`` or ``--data-dir``).
"""

from __future__ import annotations

import argparse
import time

import torch
from torch.profiler import ProfilerActivity, profile

from cnnlab.data import load_dataset
from cnnlab.models import create_model
from cnnlab.train.trainer import Trainer

STEPS = 100


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", help="registered model id, e.g. seed000-cnn")
    parser.add_argument("--batch-size", type=int, default=64, help="batch size (64)")
    parser.add_argument("--precision", default="auto", help="auto, bf16 or fp32 (auto)")
    parser.add_argument("--rows", type=int, default=20, help="operators to list (20)")
    parser.add_argument("--data-dir", help="folder holding mnist/ (default $CNNLAB_DATA)")
    args = parser.parse_args()

    train = load_dataset("mnist", "train", args.data_dir)
    n = STEPS * args.batch_size
    data = (train.images[:n], train.labels[:n])
    torch.manual_seed(0)
    trainer = Trainer(create_model(args.model), progress=False, precision=args.precision)
    trainer.fit(data, epochs=1, batch_size=args.batch_size)  # warm-up
    for _ in range(2):
        start = time.perf_counter()
        trainer.fit(data, epochs=1, batch_size=args.batch_size)
        ms = (time.perf_counter() - start) / STEPS * 1e3
        print(f"{args.model}, batch {args.batch_size}, {trainer.precision}: {ms:.2f} ms/step")
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        trainer.fit(data, epochs=1, batch_size=args.batch_size)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; {STEPS} steps profiled")
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.rows))


if __name__ == "__main__":
    main()
