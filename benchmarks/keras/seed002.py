"""Seed 002's Keras CNN, as the tutorial writes it, timed epoch by epoch.

The tutorial's code with two changes that do not touch the computation: MNIST comes
from the gzip IDX files cnnlab reads (not ``keras.datasets.mnist.load_data()``, a
download), and a callback times each epoch. ``np_utils.to_categorical`` is
``keras.utils.to_categorical`` in Keras 3. Model (Dropout 0.25 after the second pooling,
0.5 after the 128-unit layer, ``kernel_initializer='normal'`` on both dense layers),
``compile(loss='categorical_crossentropy', optimizer='adam')`` and
``fit(validation_split=0.2, epochs=10, batch_size=200)`` are the tutorial's; it used
``verbose=2``, here the default is 0 (``--verbose 2`` for its per-epoch lines). Prints one
JSON line at the end.

    .tfvenv/bin/python benchmarks/keras/seed002.py            # the tutorial: 10 epochs
    .tfvenv/bin/python benchmarks/keras/seed002.py --epochs 1 --limit 2000   # smoke test
"""

from __future__ import annotations

import math
import time

import common

PARAMS = 242_062  # cnnlab's seed002-cnn


def main() -> None:
    args = common.parse_args(__doc__, epochs=10)
    train_image, train_label, test_image, test_label = common.load_mnist(args.data_dir)
    if args.limit:
        train_image, train_label = train_image[: args.limit], train_label[: args.limit]
    keras = common.setup(args.seed, args.threads)
    from keras.layers import Conv2D, Dense, Dropout, Flatten, MaxPooling2D
    from keras.models import Sequential

    # data preprocessing
    train_image_4D = train_image.reshape(len(train_image), 28, 28, 1).astype(float)
    test_image_4D = test_image.reshape(len(test_image), 28, 28, 1).astype(float)
    train_image_4D_normalize = train_image_4D / 255
    test_image_4D_normalize = test_image_4D / 255
    train_label_onehotencoding = keras.utils.to_categorical(train_label, 10)
    test_label_onehotencoding = keras.utils.to_categorical(test_label, 10)

    # the model
    model = Sequential()
    model.add(keras.Input(shape=(28, 28, 1)))  # the tutorial passes input_shape to Conv2D
    model.add(Conv2D(filters=16, kernel_size=(5, 5), padding="same", activation="relu"))
    model.add(MaxPooling2D(pool_size=(2, 2)))
    model.add(Conv2D(filters=36, kernel_size=(5, 5), padding="same", activation="relu"))
    model.add(MaxPooling2D(pool_size=(2, 2)))
    model.add(Dropout(0.25))
    model.add(Flatten())
    model.add(Dense(units=128, kernel_initializer="normal", activation="relu"))
    model.add(Dropout(0.5))
    model.add(Dense(units=10, kernel_initializer="normal", activation="softmax"))
    params = common.check_params(model, PARAMS)

    # training
    model.compile(loss="categorical_crossentropy", optimizer="adam", metrics=["accuracy"])
    timer = common.epoch_timer()
    start = time.perf_counter()
    model.fit(
        train_image_4D_normalize,
        train_label_onehotencoding,
        validation_split=0.2,
        epochs=args.epochs,
        batch_size=200,
        callbacks=[timer],
        verbose=args.verbose,
    )
    fit_seconds = time.perf_counter() - start

    scores = model.evaluate(test_image_4D_normalize, test_label_onehotencoding, verbose=0)
    common.report(
        model_id="seed002-cnn",
        params=params,
        batch_size=200,
        timer=timer,
        test=scores,
        train_images=math.ceil(len(train_image) * (1 - 0.2)),  # Keras keeps the first 80%
        fit_seconds=fit_seconds,
    )


if __name__ == "__main__":
    main()
