"""Seed 003 (TensorFlow 1's "Deep MNIST for Experts") as the equivalent Keras model.

The tutorial's TensorFlow 1 graph (``tf.placeholder``, ``tf.Session``,
``mnist.train.next_batch``) no longer runs on TensorFlow 2, so this is the same
computation written with Keras, and exactly this:

- Data: the training file's first 5,000 images are held out for validation and the
  other 55,000 are trained on, as ``input_data.read_data_sets`` splits them (a smaller
  training file keeps the same 1/12 for validation); images
  scaled to 0–1 (float32, N×28×28×1), labels one-hot. ``--limit N`` keeps the first N of
  those 55,000.
- Model: conv 32@5×5 SAME + ReLU → max pool 2×2 → conv 64@5×5 SAME + ReLU → max pool
  2×2 → flatten 7·7·64 → dense 1024 + ReLU → dropout (keep_prob 0.5 = rate 0.5 in
  training, none in evaluation) → dense 10 (logits). Every weight comes from the
  tutorial's ``weight_variable`` (``tf.random.truncated_normal(shape, stddev=0.1)``, a
  normal cut at 2σ) and every bias from ``bias_variable`` (constant 0.1), as custom
  Keras initialisers: 3,274,634 parameters.
- Loss and optimizer: mean softmax cross-entropy on the logits with one-hot labels,
  Adam with learning rate 1e-4 and TensorFlow 1's epsilon 1e-8 (Keras' default is 1e-7).
- Schedule: 20,000 steps of batch 50 (``--steps``). Keras draws the batches from a
  fresh shuffle of the 55,000 images each epoch, so an epoch is exactly 1,100 steps,
  as with ``next_batch(50)``; training runs ``ceil(steps / 1100)`` epochs and a callback
  stops it after the last step (20,000 steps = 18 epochs and 200 steps).
  ``--epochs E`` trains E whole epochs instead (used for timing).
- After each epoch the 5,000 held-out images are evaluated (cnnlab's run does the
  same); the tutorial instead printed one batch's training accuracy every 100 steps,
  which is left out. Per-epoch ``epoch_seconds`` stop where validation begins.
- At the end, test loss and accuracy on the 10,000 test images. One JSON line is
  printed.

    .tfvenv/bin/python benchmarks/keras/seed003.py                 # 20,000 steps
    .tfvenv/bin/python benchmarks/keras/seed003.py --steps 40 --limit 2000  # smoke test
"""

from __future__ import annotations

import math
import time

import common

PARAMS = 3_274_634  # cnnlab's seed003-deep-mnist
BATCH = 50
VALIDATION = 5000


def main() -> None:
    args = common.parse_args(__doc__, epochs=0, steps=20_000)
    images, labels, test_images, test_labels = common.load_mnist(args.data_dir)
    keras = common.setup(args.seed, args.threads)
    import tensorflow as tf

    def prepare(x, y):
        x = (x.reshape(len(x), 28, 28, 1) / 255.0).astype("float32")
        return x, keras.utils.to_categorical(y, 10).astype("float32")

    held = round(len(images) * VALIDATION / 60000)  # 5,000 of MNIST's 60,000
    x_val, y_val = prepare(images[:held], labels[:held])
    x_train, y_train = prepare(images[held:], labels[held:])
    if args.limit:
        x_train, y_train = x_train[: args.limit], y_train[: args.limit]
    x_test, y_test = prepare(test_images, test_labels)

    class weight_variable(keras.initializers.Initializer):  # the tutorial's name
        """``tf.truncated_normal(shape, stddev=0.1)``."""

        def __call__(self, shape, dtype=None):
            return tf.random.truncated_normal(shape, stddev=0.1, dtype=dtype or "float32")

    class bias_variable(keras.initializers.Initializer):  # the tutorial's name
        """``tf.constant(0.1, shape=shape)``."""

        def __call__(self, shape, dtype=None):
            return tf.constant(0.1, shape=shape, dtype=dtype or "float32")

    def layer_init():
        return {"kernel_initializer": weight_variable(), "bias_initializer": bias_variable()}

    layers = keras.layers
    model = keras.Sequential(
        [
            keras.Input(shape=(28, 28, 1)),
            layers.Conv2D(32, 5, padding="same", activation="relu", **layer_init()),  # conv1
            layers.MaxPooling2D(2, 2, padding="same"),  # pool1
            layers.Conv2D(64, 5, padding="same", activation="relu", **layer_init()),  # conv2
            layers.MaxPooling2D(2, 2, padding="same"),  # pool2
            layers.Flatten(),
            layers.Dense(1024, activation="relu", **layer_init()),  # fc1
            layers.Dropout(0.5),  # keep_prob 0.5
            layers.Dense(10, **layer_init()),  # fc2: logits
        ],
        name="deepnn",
    )
    params = common.check_params(model, PARAMS)
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=1e-4, epsilon=1e-8),
        loss=keras.losses.CategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )

    steps_per_epoch = math.ceil(len(x_train) / BATCH)
    timer = common.epoch_timer()
    callbacks = [timer]
    if args.epochs:
        epochs, steps = args.epochs, args.epochs * steps_per_epoch
    else:
        epochs, steps = math.ceil(args.steps / steps_per_epoch), args.steps

        class StopAtStep(keras.callbacks.Callback):
            def __init__(self) -> None:
                super().__init__()
                self.done = 0

            def on_train_batch_end(self, batch, logs=None):
                self.done += 1
                if self.done >= steps:
                    self.model.stop_training = True

        callbacks.append(StopAtStep())

    start = time.perf_counter()
    model.fit(
        x_train,
        y_train,
        batch_size=BATCH,
        epochs=epochs,
        shuffle=True,
        validation_data=(x_val, y_val),
        callbacks=callbacks,
        verbose=args.verbose,
    )
    fit_seconds = time.perf_counter() - start
    test = model.evaluate(x_test, y_test, batch_size=1000, verbose=0)
    common.report(
        model_id="seed003-deep-mnist",
        params=params,
        batch_size=BATCH,
        timer=timer,
        test=test,
        train_images=len(x_train),
        fit_seconds=fit_seconds,
        extra={"steps": steps, "steps_per_epoch": steps_per_epoch},
    )


if __name__ == "__main__":
    main()
