"""cnnlab's cifar-net in Keras, trained on a folder of photos as TensorFlow's tutorial
loads one, timed epoch by epoch.

The input pipeline is the one TensorFlow's "Load and preprocess images" tutorial
writes: ``tf.keras.utils.image_dataset_from_directory`` with ``image_size=(32, 32)``
and the batch size, then ``.cache().prefetch(tf.data.AUTOTUNE)``, and a ``Rescaling``
layer at the front of the model. So the first epoch decodes every JPEG (and fills the
cache); later epochs read the cached tensors.

The network is cnnlab's ``cifar-net`` (``src/cnnlab/models/photos.py``, cifar10-airbench's)
layer for layer, with the same parameter counts:

- the input scaled to 0–1 and normalised per channel (``Rescaling`` with per-channel
  scale and offset, no weights), as cnnlab normalises photos;
- a 2×2 ``'valid'`` whitening convolution with bias and 2·C·4 filters whose kernel is
  not trained: before training it is set, with NumPy, to the eigenvectors of the 2×2
  patch covariance of a seeded sample of 5,000 training images, divided by
  sqrt(eigenvalue + 5e-4), and the same filters negated (cnnlab's
  ``whiten_first_layer``); GELU;
- three blocks of a 3×3 convolution without bias, 2×2 max pooling, batch norm, GELU, a
  3×3 convolution, batch norm, GELU; the first min(in, out) filters of every 3×3
  convolution start as the identity (Dirac), the others with Keras' own initialiser;
- batch norm as cifar-net's: momentum 0.6 (torch's 0.4), epsilon 1e-12 (Keras 3 passes
  it to ``tf.nn.batch_normalization`` unclamped), ``scale=False`` (cnnlab's fixed unit
  scales);
- global max pooling, a dense layer without bias, logits × 1/9 (a second ``Rescaling``);
- GELU exact (``approximate=False``), as torch's ``nn.GELU()``.

It trains with cifar-net's recipe (``CIFAR_TRAINING``): SGD with Nesterov momentum 0.85
at a peak rate of 1.5, batch 1024, the ``triangle`` schedule (the formula of cnnlab's
``lr_factor``: 0.2 → 1 linearly over the first 23% of steps, then linearly down to
0.07), weight decay 1.33e-3 as torch's SGD applies it (an L2 term of half the decay, so
the gradient gains ``decay × weight``), label smoothing 0.2.

Left out, because Keras' stock optimizer cannot do them simply, and they cost little
time per step:

- the batch-norm shifts' own rate: cnnlab trains them at 64× the learning rate with
  1/64 of the weight decay; here they train at the common rate, keeping the 1/64 decay
  (one elementwise update of a few hundred numbers per step either way);
- lookahead: cnnlab pulls the weights towards a slow copy of them every 5 steps (one
  average of the weights, per 5 steps);
- augmentation (crop 2, flip): the tutorial's pipeline has none, and the benchmark runs
  cnnlab with ``--augment none`` to match.

The normalisation's mean and std come from the same 5,000-image sample (cnnlab takes them
from every training image; reading them all here would decode the folder before the
first epoch, which the tutorial's pipeline does within it). The sample is decoded and
resized as ``image_dataset_from_directory`` does (bilinear), before ``fit``, so it counts
in the process time but in no epoch.

``--data`` is a folder with ``train/`` and ``test/`` (or ``val/``) sub-folders of class
folders, or a folder of class folders (then 20% is held out as the test split, as
cnnlab does, though not the same 20%). Runs under TensorFlow's interpreter and imports
nothing from cnnlab. Prints one JSON line at the end (see ``common.report``): ``params``
is the trainable count, ``params_total`` counts as torch does (the fixed whitening
kernel and the fixed unit batch-norm scales, which Keras does not store, but not the
running averages, which torch keeps as buffers).

    .tfvenv/bin/python benchmarks/keras/folder.py --data DATA/cifar10-jpeg --epochs 2
    .tfvenv/bin/python benchmarks/keras/folder.py --data FOLDER --epochs 2 --widths 32,64,64
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import common  # first: its clock starts before TensorFlow is imported
import numpy as np

#: cifar-net's CIFAR_TRAINING (src/cnnlab/models/photos.py).
LR, MOMENTUM, WEIGHT_DECAY, LABEL_SMOOTHING, BATCH = 1.5, 0.85, 1.33e-3, 0.2, 1024
#: cnnlab trains the batch-norm shifts at 64× the rate and 1/64 of the decay.
SHIFT_SCALE = 64.0
WIDTHS, SIZE = (64, 256, 256), 32
#: cifar-net's whitening: the sample it is computed from and the eigenvalue floor.
WHITEN_SAMPLE, WHITEN_EPS = 5000, 5e-4
#: cifar-net's batch norm: torch's momentum 0.4 (Keras keeps 0.6), epsilon 1e-12.
BN_MOMENTUM, BN_EPSILON = 0.6, 1e-12


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
    parser.add_argument("--image-size", type=int, default=SIZE, help=f"image side ({SIZE})")
    parser.add_argument("--lr", type=float, default=LR, help=f"peak learning rate ({LR})")
    parser.add_argument(
        "--schedule",
        choices=("triangle", "constant"),
        default="triangle",
        help="learning-rate schedule (default triangle, cifar-net's)",
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--verbose", type=int, default=0, help="Keras fit verbosity (default 0)")
    parser.add_argument(
        "--threads", type=int, help="TensorFlow intra-op threads (default: TensorFlow's choice)"
    )
    args = parser.parse_args()
    for name in ("epochs", "batch_size", "image_size", "threads"):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1, got {value}")
    if args.image_size < 9:
        parser.error(
            f"--image-size must be at least 9 (cifar-net's smallest), got {args.image_size}"
        )
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
    """(train, test, class names, train file paths): the datasets as the tutorial builds
    them, decoded while they are first iterated, then cached; labels one-hot for label
    smoothing."""
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
    autotune = tf.data.AUTOTUNE
    return (
        train.cache().prefetch(buffer_size=autotune),
        test.cache().prefetch(buffer_size=autotune),
        train.class_names,
        list(train.file_paths),
    )


def read_sample(files: list[str], args: argparse.Namespace) -> np.ndarray:
    """A seeded sample of at most 5,000 training images, N×H×W×3 floats 0–255, decoded and
    resized as ``image_dataset_from_directory`` does."""
    import tensorflow as tf

    rng = np.random.default_rng(args.seed)
    chosen = np.sort(rng.permutation(len(files))[:WHITEN_SAMPLE])
    size = (args.image_size, args.image_size)
    images = []
    for i in chosen:
        image = tf.io.decode_image(tf.io.read_file(files[i]), channels=3, expand_animations=False)
        images.append(tf.image.resize(image, size, method="bilinear").numpy())
    return np.stack(images).astype(np.float64)


def channel_statistics(sample: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and std of 0–255 images, scaled to 0–1 (std at least 1e-3), as
    cnnlab's ``channel_statistics``."""
    mean = sample.mean(axis=(0, 1, 2)) / 255.0
    std = np.maximum(sample.std(axis=(0, 1, 2)) / 255.0, 1e-3)
    return mean, std


def whitening_kernel(images: np.ndarray, size: int = 2, eps: float = WHITEN_EPS) -> np.ndarray:
    """cnnlab's ``whiten_first_layer`` in NumPy for normalised N×H×W×C images: the
    eigenvectors of the covariance of every size×size patch (flattened channel, row,
    column, as torch's filters), strongest first, divided by sqrt(eigenvalue + eps), then
    the same negated; as a Keras kernel (size, size, C, 2·C·size²)."""
    n, _, _, channels = images.shape
    dim = channels * size * size
    covariance = np.zeros((dim, dim))
    count = 0
    for start in range(0, n, 500):  # 500 images' patches at a time: a few dozen MB
        x = np.transpose(images[start : start + 500], (0, 3, 1, 2))  # N, C, H, W
        windows = np.lib.stride_tricks.sliding_window_view(x, (size, size), axis=(2, 3))
        patches = np.transpose(windows, (0, 2, 3, 1, 4, 5)).reshape(-1, dim)
        covariance += patches.T @ patches
        count += len(patches)
    values, vectors = np.linalg.eigh(covariance / count)  # ascending
    values, vectors = values[::-1], vectors[:, ::-1]  # the strongest direction first
    filters = vectors.T / np.sqrt(np.maximum(values, 0) + eps)[:, None]
    filters = np.concatenate([filters, -filters]).reshape(-1, channels, size, size)
    return np.transpose(filters, (2, 3, 1, 0)).astype(np.float32)  # kh, kw, cin, cout


def dirac(layer) -> None:
    """Make the first min(in, out) filters of a 3×3 convolution pass their input channel
    through, as torch's ``nn.init.dirac_`` on them."""
    kernel = layer.kernel.numpy()
    kh, kw, cin, cout = kernel.shape
    n = min(cin, cout)
    kernel[..., :n] = 0.0
    kernel[kh // 2, kw // 2, np.arange(n), np.arange(n)] = 1.0
    layer.kernel.assign(kernel)


def build_model(args: argparse.Namespace, num_classes: int, sample: np.ndarray):
    """cifar-net in Keras layers, its input normalisation and whitening set from
    ``sample`` (0–255 images), cnnlab's weight decay as L2 terms."""
    import tensorflow as tf

    layers = tf.keras.layers
    l2 = tf.keras.regularizers.L2(WEIGHT_DECAY / 2)  # gradient + decay × weight, as torch
    shift_l2 = tf.keras.regularizers.L2(WEIGHT_DECAY / SHIFT_SCALE / 2)
    mean, std = channel_statistics(sample)

    def gelu() -> layers.Layer:
        return layers.Activation(lambda x: tf.keras.activations.gelu(x, approximate=False))

    def conv(width: int) -> layers.Layer:
        return layers.Conv2D(width, 3, padding="same", use_bias=False, kernel_regularizer=l2)

    def norm() -> layers.Layer:
        return layers.BatchNormalization(
            momentum=BN_MOMENTUM, epsilon=BN_EPSILON, scale=False, beta_regularizer=shift_l2
        )

    channels = 3
    whiten = layers.Conv2D(2 * channels * 4, 2, padding="valid", bias_regularizer=l2)
    stack = [
        tf.keras.Input(shape=(args.image_size, args.image_size, channels)),
        # x / 255 normalised per channel: (x / 255 - mean) / std
        layers.Rescaling(scale=(1 / (255 * std)).tolist(), offset=(-mean / std).tolist()),
        whiten,
        gelu(),
    ]
    convs = []
    for width in args.widths:
        convs += [conv(width), conv(width)]
        stack += [convs[-2], layers.MaxPool2D(2), norm(), gelu()]
        stack += [convs[-1], norm(), gelu()]
    stack += [
        layers.GlobalMaxPooling2D(),
        layers.Dense(num_classes, use_bias=False, kernel_regularizer=l2),
        layers.Rescaling(1 / 9),  # cifar-net's logit scale
    ]
    model = tf.keras.Sequential(stack, name="cifar-net")
    whiten.kernel.assign(whitening_kernel((sample / 255.0 - mean) / std))
    whiten.kernel.trainable = False  # set from the data, not learned; its bias learns
    for layer in convs:
        dirac(layer)
    return model


def parameter_counts(model) -> tuple[int, int]:
    """(trainable, total) as torch counts cifar-net's: the total adds the fixed
    whitening kernel and the fixed unit batch-norm scales (Keras' ``scale=False`` stores
    none), but not the running averages (buffers in torch)."""
    import tensorflow as tf

    trainable = sum(int(tf.size(w)) for w in model.trainable_weights)
    norms = [
        layer for layer in model.layers if isinstance(layer, tf.keras.layers.BatchNormalization)
    ]
    averages = {id(v) for layer in norms for v in (layer.moving_mean, layer.moving_variance)}
    fixed = sum(int(tf.size(w)) for w in model.non_trainable_weights if id(w) not in averages)
    scales = sum(int(layer.moving_mean.shape[0]) for layer in norms)
    return trainable, trainable + fixed + scales


def learning_rate(args: argparse.Namespace, total_steps: int):
    """The peak rate, or cnnlab's triangle: from 0.2 of the peak up to it linearly over
    the first 23% of steps, then linearly down to 0.07 of it at the end."""
    import tensorflow as tf

    if args.schedule == "constant":
        return args.lr

    class Triangle(tf.keras.optimizers.schedules.LearningRateSchedule):
        def __init__(self, peak_lr: float, total: int) -> None:
            self.peak_lr, self.total = peak_lr, max(1, total)
            self.peak = max(1, int(0.23 * self.total))

        def __call__(self, step):
            step = tf.cast(step, tf.float32)
            up = 0.2 + 0.8 * step / self.peak
            t = tf.minimum(1.0, (step - self.peak) / max(1, self.total - self.peak))
            return self.peak_lr * tf.where(step < self.peak, up, 1.0 - 0.93 * t)

        def get_config(self) -> dict:
            return {"peak_lr": self.peak_lr, "total": self.total}

    return Triangle(args.lr, total_steps)


def main() -> None:
    args = parse_args()
    common.setup(args.seed, args.threads)
    import tensorflow as tf

    train, test, classes, files = load_folder(args)
    model = build_model(args, len(classes), read_sample(files, args))
    if args.verbose:
        model.summary()
    params, params_total = parameter_counts(model)
    steps = args.epochs * math.ceil(len(files) / args.batch_size)
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
        train_images=len(files),
        fit_seconds=fit_seconds,
        extra={
            "params_total": params_total,
            "keras_params": model.count_params(),
            "widths": args.widths,
            "image_size": args.image_size,
            "classes": len(classes),
            "schedule": args.schedule,
            "data": str(Path(args.data).resolve()),
        },
    )


if __name__ == "__main__":
    main()
