"""cnnlab's cifar-net in Keras, trained on a folder of photos as TensorFlow's tutorial
loads one, timed epoch by epoch.

The input pipeline is the one TensorFlow's "Load and preprocess images" tutorial
writes: ``tf.keras.utils.image_dataset_from_directory`` with ``image_size=(32, 32)``
and the batch size, then ``.cache().prefetch(tf.data.AUTOTUNE)``, and a
``Rescaling(1/255)`` layer at the front of the model. So the first epoch decodes every
JPEG (and fills the cache); later epochs read the cached tensors.

The network is cnnlab's ``cifar-net`` (``src/cnnlab/models/photos.py``) layer for layer:
a 3×3 stem convolution, batch norm and ReLU, then three blocks of a 3×3 convolution
without bias, 2×2 max pooling, batch norm, ReLU, a 3×3 convolution, batch norm and ReLU,
global max pooling and a dense layer without bias (batch norm with PyTorch's momentum
and epsilon). It trains as cifar-net's own recipe does: SGD with Nesterov momentum, a
one-cycle learning rate (the same formula as cnnlab's ``onecycle``), weight decay as
PyTorch's SGD applies it (an L2 term of half the decay on every weight, so the gradient
gains ``decay × weight``), label smoothing 0.2. Keras' initial weights are its own.
No augmentation: the tutorial's pipeline has none.

``--data`` is a folder with ``train/`` and ``test/`` (or ``val/``) sub-folders of class
folders, or a folder of class folders (then 20% is held out as the test split, as
cnnlab does, though not the same 20%). Runs under TensorFlow's interpreter and imports
nothing from cnnlab. Prints one JSON line at the end (see ``common.report``).

    .tfvenv/bin/python benchmarks/keras/folder.py --data DATA/cifar10-jpeg --epochs 2
    .tfvenv/bin/python benchmarks/keras/folder.py --data FOLDER --epochs 2 --widths 32,64,64
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import common  # first: its clock starts before TensorFlow is imported

#: cifar-net's CIFAR_TRAINING (src/cnnlab/models/photos.py).
LR, MOMENTUM, WEIGHT_DECAY, LABEL_SMOOTHING, BATCH = 0.2, 0.9, 5e-4, 0.2, 512
WIDTHS, STEM, SIZE = (64, 256, 256), 32, 32


def parse_args() -> argparse.Namespace:
    """This script's options; exits with a one-line message on a bad value."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="the folder of photos")
    parser.add_argument("--epochs", type=int, default=2, help="epochs (default 2)")
    parser.add_argument(
        "--batch-size", type=int, default=BATCH, help=f"batch size (default {BATCH})"
    )
    parser.add_argument(
        "--widths",
        default=",".join(map(str, WIDTHS)),
        help="the three blocks' channels, as cifar-net's widths "
        f"(default {','.join(map(str, WIDTHS))})",
    )
    parser.add_argument("--stem", type=int, default=STEM, help=f"stem channels ({STEM})")
    parser.add_argument("--image-size", type=int, default=SIZE, help=f"image side ({SIZE})")
    parser.add_argument("--lr", type=float, default=LR, help=f"peak learning rate ({LR})")
    parser.add_argument(
        "--schedule",
        choices=("onecycle", "constant"),
        default="onecycle",
        help="learning-rate schedule (default onecycle, cifar-net's)",
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--verbose", type=int, default=0, help="Keras fit verbosity (default 0)")
    parser.add_argument(
        "--threads", type=int, help="TensorFlow intra-op threads (default: TensorFlow's choice)"
    )
    args = parser.parse_args()
    for name in ("epochs", "batch_size", "stem", "image_size", "threads"):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1, got {value}")
    try:
        args.widths = [int(w) for w in args.widths.split(",")]
    except ValueError:
        parser.error(f"--widths must be three whole numbers, got {args.widths!r}")
    if len(args.widths) != 3 or min(args.widths) < 1:
        parser.error(f"--widths must be three whole numbers, got {args.widths}")
    if not Path(args.data).is_dir():
        parser.error(f"--data {args.data}: not a folder")
    return args


def load_folder(args: argparse.Namespace):
    """(train, test) datasets as the tutorial builds them: decoded while they are first
    iterated, then cached; labels one-hot for label smoothing."""
    import tensorflow as tf

    root = Path(args.data)
    options = {
        "image_size": (args.image_size, args.image_size),
        "batch_size": args.batch_size,
        "label_mode": "categorical",  # CategoricalCrossentropy has label smoothing
        "seed": args.seed,
    }
    test_dir = next((root / d for d in ("test", "val") if (root / d).is_dir()), None)
    if (root / "train").is_dir() and test_dir is None:
        raise SystemExit(f"{root}: has train/ but no test/ or val/ beside it")
    if (root / "train").is_dir():
        train = tf.keras.utils.image_dataset_from_directory(root / "train", **options)
        test = tf.keras.utils.image_dataset_from_directory(
            test_dir, shuffle=False, class_names=train.class_names, **options
        )
    else:
        train, test = tf.keras.utils.image_dataset_from_directory(
            root, validation_split=0.2, subset="both", **options
        )
    classes = train.class_names
    train_files = len(train.file_paths)
    autotune = tf.data.AUTOTUNE
    return (
        train.cache().prefetch(buffer_size=autotune),
        test.cache().prefetch(buffer_size=autotune),
        classes,
        train_files,
    )


def build_model(args: argparse.Namespace, num_classes: int):
    """cifar-net in Keras layers, with cnnlab's weight decay as L2 terms."""
    import tensorflow as tf

    layers = tf.keras.layers
    l2 = tf.keras.regularizers.L2(WEIGHT_DECAY / 2)  # gradient + decay × weight, as torch

    def conv(width: int) -> layers.Layer:
        return layers.Conv2D(width, 3, padding="same", use_bias=False, kernel_regularizer=l2)

    def norm() -> layers.Layer:
        # PyTorch's BatchNorm2d: running averages keep 0.9 of the old value, eps 1e-5
        return layers.BatchNormalization(
            momentum=0.9, epsilon=1e-5, gamma_regularizer=l2, beta_regularizer=l2
        )

    stack = [
        tf.keras.Input(shape=(args.image_size, args.image_size, 3)),
        layers.Rescaling(1.0 / 255),
        conv(args.stem),
        norm(),
        layers.ReLU(),
    ]
    for width in args.widths:
        stack += [conv(width), layers.MaxPool2D(2), norm(), layers.ReLU()]
        stack += [conv(width), norm(), layers.ReLU()]
    stack += [
        layers.GlobalMaxPooling2D(),
        layers.Dense(num_classes, use_bias=False, kernel_regularizer=l2),
    ]
    return tf.keras.Sequential(stack, name="cifar-net")


def learning_rate(args: argparse.Namespace, total_steps: int):
    """The peak rate, or cnnlab's one-cycle: a linear warm-up over the first 25% from
    1/25 of the peak, then a cosine down to 1/10,000 of it."""
    import tensorflow as tf

    if args.schedule == "constant":
        return args.lr

    class OneCycle(tf.keras.optimizers.schedules.LearningRateSchedule):
        def __init__(self, peak: float, total: int) -> None:
            self.peak, self.total = peak, max(1, total)
            self.warm = max(1, int(0.25 * self.total))

        def __call__(self, step):
            step = tf.cast(step, tf.float32)
            warm = 1 / 25 + (1 - 1 / 25) * step / self.warm
            t = tf.minimum(1.0, (step - self.warm) / max(1, self.total - self.warm))
            down = 1e-4 + (1 - 1e-4) * 0.5 * (1 + tf.cos(math.pi * t))
            return self.peak * tf.where(step < self.warm, warm, down)

        def get_config(self) -> dict:
            return {"peak": self.peak, "total": self.total}

    return OneCycle(args.lr, total_steps)


def main() -> None:
    args = parse_args()
    common.setup(args.seed, args.threads)
    import tensorflow as tf

    train, test, classes, train_files = load_folder(args)
    model = build_model(args, len(classes))
    params = sum(int(tf.size(w)) for w in model.trainable_weights)  # as torch counts them
    steps = args.epochs * math.ceil(train_files / args.batch_size)
    model.compile(
        optimizer=tf.keras.optimizers.SGD(
            learning_rate=learning_rate(args, steps), momentum=MOMENTUM, nesterov=True
        ),
        loss=tf.keras.losses.CategoricalCrossentropy(
            from_logits=True, label_smoothing=LABEL_SMOOTHING
        ),
        metrics=["accuracy"],
    )
    timer = common.epoch_timer()
    start = time.perf_counter()
    model.fit(train, epochs=args.epochs, callbacks=[timer], verbose=args.verbose)
    fit_seconds = time.perf_counter() - start
    test_result = model.evaluate(test, verbose=0)
    common.report(
        model_id="cifar-net",
        params=params,
        batch_size=args.batch_size,
        timer=timer,
        test=test_result,
        train_images=train_files,
        fit_seconds=fit_seconds,
        extra={
            "widths": args.widths,
            "stem": args.stem,
            "image_size": args.image_size,
            "classes": len(classes),
            "schedule": args.schedule,
            "data": str(Path(args.data).resolve()),
        },
    )


if __name__ == "__main__":
    main()
