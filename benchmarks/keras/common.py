"""What the four tutorial scripts share: options, MNIST from IDX files, epoch timing, report.

Runs under TensorFlow's own interpreter (e.g. ``.tfvenv/bin/python``), never under
cnnlab's: it imports nothing from cnnlab. The scripts read the same gzip IDX files as
``cnnlab train`` (``--data-dir``, else each folder of ``$CNNLAB_DATA``, as ``DIR/mnist/``
or ``DIR/``, ``.gz`` or not) and never download anything.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import struct
import sys
import time
from pathlib import Path

import numpy as np

START = time.perf_counter()  # before TensorFlow is imported: total_seconds counts its import

FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (gzip or not) as a NumPy array; checks the magic number and size."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as fh:
        data = fh.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _DTYPES:
        raise SystemExit(f"{path}: not an IDX file")
    ndim = data[3]
    dims = struct.unpack(f">{ndim}I", data[4 : 4 + 4 * ndim])
    dtype = np.dtype(_DTYPES[data[2]])
    body = np.frombuffer(data, dtype=dtype, offset=4 + 4 * ndim)
    if body.size != int(np.prod(dims)):
        raise SystemExit(f"{path}: expected {int(np.prod(dims))} values, found {body.size}")
    return body.reshape(dims)


def find_file(stem: str, data_dir: str | None) -> Path:
    """``stem`` (.gz or not) in ``data_dir`` or a ``$CNNLAB_DATA`` folder, or a clear exit."""
    roots = [data_dir] if data_dir else os.environ.get("CNNLAB_DATA", "").split(os.pathsep)
    tried = []
    for root in filter(None, roots):
        for folder in (Path(root) / "mnist", Path(root)):
            for name in (stem + ".gz", stem):
                tried.append(str(folder))
                if (folder / name).is_file():
                    return folder / name
    where = ", ".join(dict.fromkeys(tried)) or "nowhere (give --data-dir or set CNNLAB_DATA)"
    raise SystemExit(f"MNIST file {stem}(.gz) not found; looked in {where}")


def load_mnist(
    data_dir: str | None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(train images N×28×28 uint8, train labels, test images, test labels)."""
    out = []
    for split in ("train", "test"):
        images, labels = (read_idx(find_file(stem, data_dir)) for stem in FILES[split])
        if len(images) != len(labels):
            raise SystemExit(f"MNIST {split}: {len(images)} images but {len(labels)} labels")
        out += [images, labels.astype(np.int64)]
    return out[0], out[1], out[2], out[3]


def parse_args(doc: str, epochs: int, steps: int | None = None) -> argparse.Namespace:
    """The options every script takes; ``steps`` adds ``--steps`` (seed003)."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument(
        "--epochs",
        type=int,
        default=None if steps else epochs,
        help=f"epochs (default {epochs})" if not steps else "whole epochs instead of --steps",
    )
    if steps:
        parser.add_argument(
            "--steps", type=int, default=steps, help=f"optimizer steps (default {steps:,})"
        )
    parser.add_argument(
        "--limit", type=int, help="use only the first N training images (smoke tests)"
    )
    parser.add_argument("--data-dir", help="folder holding mnist/*.gz (default $CNNLAB_DATA)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--verbose", type=int, default=0, help="Keras fit verbosity (default 0)")
    parser.add_argument(
        "--threads", type=int, help="TensorFlow intra-op threads (default: TensorFlow's choice)"
    )
    args = parser.parse_args()
    for name in ("epochs", "steps", "limit", "threads"):
        value = getattr(args, name, None)
        if value is not None and value < 1:
            parser.error(f"--{name} must be at least 1, got {value}")
    return args


def setup(seed: int, threads: int | None = None):
    """Import Keras, set TensorFlow's threads, seed every generator; returns ``keras``."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's C++ info lines off
    import keras
    import tensorflow as tf

    if threads:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
    keras.utils.set_random_seed(seed)
    return keras


def epoch_timer():
    """A callback that times each epoch's training with ``time.perf_counter``.

    ``seconds`` ends when validation begins (``on_test_begin``) or, without
    validation, at the end of the epoch, so it counts what cnnlab's ``history.json``
    ``seconds`` counts: the training steps only. ``seconds_with_validation`` is the
    whole epoch.
    """
    import keras

    class EpochTimer(keras.callbacks.Callback):
        def __init__(self) -> None:
            super().__init__()
            self.seconds: list[float] = []
            self.seconds_with_validation: list[float] = []
            self._start = 0.0
            self._train_done: float | None = None

        def on_epoch_begin(self, epoch, logs=None):
            self._train_done = None
            self._start = time.perf_counter()

        def on_test_begin(self, logs=None):
            if self._train_done is None:
                self._train_done = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            end = time.perf_counter()
            self.seconds.append((self._train_done or end) - self._start)
            self.seconds_with_validation.append(end - self._start)

    return EpochTimer()


def check_params(model, expected: int) -> int:
    """The model's parameter count; exits if it is not the tutorial's."""
    count = int(model.count_params())
    if count != expected:
        raise SystemExit(f"{model.name}: {count:,} parameters, expected {expected:,}")
    return count


def report(
    *,
    model_id: str,
    params: int,
    batch_size: int,
    timer,
    test: list[float] | float,
    train_images: int,
    fit_seconds: float,
    extra: dict | None = None,
) -> dict:
    """Print the one JSON line the benchmark scripts parse, and return it."""
    import keras
    import tensorflow as tf

    loss, accuracy = test if isinstance(test, (list, tuple)) else (test, float("nan"))
    result = {
        "framework": "keras",
        "tf_version": tf.__version__,
        "keras_version": keras.__version__,
        "python": platform.python_version(),
        "model": model_id,
        "params": params,
        "batch_size": batch_size,
        "epochs": len(timer.seconds),
        "train_images": train_images,
        "epoch_seconds": [round(s, 4) for s in timer.seconds],
        "epoch_seconds_with_validation": [round(s, 4) for s in timer.seconds_with_validation],
        "fit_seconds": round(fit_seconds, 3),
        "test_accuracy": float(accuracy),
        "test_loss": float(loss),
        "total_seconds": round(time.perf_counter() - START, 3),
        "intra_op_threads": tf.config.threading.get_intra_op_parallelism_threads(),
        "inter_op_threads": tf.config.threading.get_inter_op_parallelism_threads(),
        "cpu_count": os.cpu_count(),
        "command": [Path(sys.argv[0]).name, *sys.argv[1:]],
        **(extra or {}),
    }
    print(json.dumps(result), flush=True)
    return result
