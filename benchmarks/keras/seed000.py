"""Seed 000's tf.keras CNN, as the tutorial writes it, timed epoch by epoch.

The tutorial's code with two changes that do not touch the computation: MNIST comes
from the gzip IDX files cnnlab reads (not ``tf.keras.datasets.mnist.load_data()``, a
download), and a callback times each epoch. Model, compile and
``fit(batch_size=64, epochs=5, validation_split=0.2)`` are the tutorial's; Keras'
progress bar is off unless ``--verbose 1``. Prints one JSON line at the end.

    .tfvenv/bin/python benchmarks/keras/seed000.py            # the tutorial: 5 epochs
    .tfvenv/bin/python benchmarks/keras/seed000.py --epochs 1 --limit 2000   # smoke test
"""

from __future__ import annotations

import math
import time

import common

PARAMS = 206_922  # cnnlab's seed000-cnn


def main() -> None:
    args = common.parse_args(__doc__, epochs=5)
    train_x, train_y, test_x, test_y = common.load_mnist(args.data_dir)
    if args.limit:
        train_x, train_y = train_x[: args.limit], train_y[: args.limit]
    common.setup(args.seed, args.threads)
    import tensorflow as tf

    # 3 preprocessing: N×28×28×1, scaled to 0–1, as float32 tensors
    X_train = train_x.reshape(len(train_x), 28, 28, 1)
    X_test = test_x.reshape(len(test_x), 28, 28, 1)
    X_train, X_test = tf.cast(X_train / 255.0, tf.float32), tf.cast(X_test / 255.0, tf.float32)
    y_train, y_test = tf.cast(train_y, tf.int32), tf.cast(test_y, tf.int32)

    # 4 the model
    model = tf.keras.Sequential(
        [
            tf.keras.Input(shape=(28, 28, 1)),  # the tutorial passes input_shape to Conv2D
            # unit1
            tf.keras.layers.Conv2D(16, kernel_size=(3, 3), padding="same", activation=tf.nn.relu),
            tf.keras.layers.MaxPool2D(pool_size=(2, 2)),
            # unit2
            tf.keras.layers.Conv2D(32, kernel_size=(3, 3), padding="same", activation=tf.nn.relu),
            tf.keras.layers.MaxPool2D(pool_size=(2, 2)),
            # unit3
            tf.keras.layers.Flatten(),
            # unit4
            tf.keras.layers.Dense(128, activation="relu"),
            tf.keras.layers.Dense(10, activation="softmax"),
        ]
    )
    params = common.check_params(model, PARAMS)

    # 5 training configuration
    model.compile(
        optimizer="adam",
        loss="sparse_categorical_crossentropy",
        metrics=["sparse_categorical_accuracy"],
    )

    # 6 training
    timer = common.epoch_timer()
    start = time.perf_counter()
    model.fit(
        X_train,
        y_train,
        batch_size=64,
        epochs=args.epochs,
        validation_split=0.2,
        callbacks=[timer],
        verbose=args.verbose,
    )
    fit_seconds = time.perf_counter() - start

    # 7 evaluation
    test = model.evaluate(X_test, y_test, verbose=0)
    common.report(
        model_id="seed000-cnn",
        params=params,
        batch_size=64,
        timer=timer,
        test=test,
        train_images=math.ceil(len(train_x) * (1 - 0.2)),  # Keras keeps the first 80%
        fit_seconds=fit_seconds,
    )


if __name__ == "__main__":
    main()
