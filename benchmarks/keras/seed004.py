"""Seed 004's PaddlePaddle LeNet (the class with max pooling) as a Keras model.

Seed 004 writes LeNet as a ``paddle.nn.Layer`` class and trains it with Paddle's
high-level API (``paddle.Model(net).prepare(Adam, CrossEntropyLoss, Accuracy)``,
``fit(batch_size=64, epochs=5)``). This is the same network and recipe in Keras:

- Model: conv 6@3×3 padding 1 → sigmoid → max pool 2 → conv 16@5×5 (no padding) →
  sigmoid → max pool 2 → flatten (400) → linear 120 → linear 84 → linear 10, with no
  activation between the three linear layers (the tutorial's summary shows none):
  61,610 parameters, as in its ``paddle.summary``.
- Initialisation: Paddle's defaults, not Keras': convolution kernels from
  N(0, 2 / (kh·kw·in_channels)) (Paddle's ``Conv2D`` default), linear weights
  Xavier-uniform (= Keras' ``glorot_uniform``), biases zero.
- Training: Adam (learning rate 1e-3, epsilon 1e-8 as Paddle's), cross-entropy on the
  logits with integer labels, batch 64, 5 epochs over all 60,000 training images,
  shuffled each epoch; images normalised to [-1, 1] as the tutorial's
  ``Normalize(mean=127.5, std=127.5)`` transform does. The tutorial evaluated the test set after
  every epoch; here it is evaluated once at the end (``cnnlab train --model
  seed004-lenet-max`` likewise trains without a per-epoch evaluation unless
  ``--validation test`` is given), so ``epoch_seconds`` is training only either way.
- MNIST comes from the gzip IDX files cnnlab reads; one JSON line is printed at the end.

    .tfvenv/bin/python benchmarks/keras/seed004.py             # 5 epochs
    .tfvenv/bin/python benchmarks/keras/seed004.py --epochs 1 --limit 2000   # smoke test
"""

from __future__ import annotations

import time

import common

PARAMS = 61_610  # cnnlab's seed004-lenet-max


def main() -> None:
    args = common.parse_args(__doc__, epochs=5)
    train_x, train_y, test_x, test_y = common.load_mnist(args.data_dir)
    if args.limit:
        train_x, train_y = train_x[: args.limit], train_y[: args.limit]
    keras = common.setup(args.seed, args.threads)
    layers = keras.layers

    def prepare(x):
        # Paddle's Normalize(mean=127.5, std=127.5): pixels in [-1, 1]
        return ((x.reshape(len(x), 28, 28, 1) - 127.5) / 127.5).astype("float32")

    def conv_init():
        # Paddle's Conv2D default: Normal(0, std) with std = sqrt(2 / filter_elem_num)
        return keras.initializers.VarianceScaling(2.0, "fan_in", "untruncated_normal")

    class LeNet(keras.Model):
        """The tutorial's class: layers made in __init__, wired in call (Paddle's forward)."""

        def __init__(self, num_classes: int = 10) -> None:
            super().__init__(name="lenet_max")
            self.conv1 = layers.Conv2D(6, 3, padding="same", kernel_initializer=conv_init())
            self.sigmoid1 = layers.Activation("sigmoid")
            self.max_pool1 = layers.MaxPooling2D(2, 2)
            self.conv2 = layers.Conv2D(16, 5, padding="valid", kernel_initializer=conv_init())
            self.sigmoid2 = layers.Activation("sigmoid")
            self.max_pool2 = layers.MaxPooling2D(2, 2)
            self.flatten = layers.Flatten()
            self.linear1 = layers.Dense(120)
            self.linear2 = layers.Dense(84)
            self.linear3 = layers.Dense(num_classes)

        def call(self, x):
            x = self.max_pool1(self.sigmoid1(self.conv1(x)))
            x = self.max_pool2(self.sigmoid2(self.conv2(x)))
            x = self.flatten(x)
            return self.linear3(self.linear2(self.linear1(x)))

    model = LeNet()
    model(prepare(train_x[:1]))  # a subclassed model makes its weights on the first call
    params = common.check_params(model, PARAMS)
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=1e-3, epsilon=1e-8),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    timer = common.epoch_timer()
    start = time.perf_counter()
    model.fit(
        prepare(train_x),
        train_y,
        batch_size=64,
        epochs=args.epochs,
        shuffle=True,
        callbacks=[timer],
        verbose=args.verbose,
    )
    fit_seconds = time.perf_counter() - start
    test = model.evaluate(prepare(test_x), test_y, batch_size=1000, verbose=0)
    common.report(
        model_id="seed004-lenet-max",
        params=params,
        batch_size=64,
        timer=timer,
        test=test,
        train_images=len(train_x),
        fit_seconds=fit_seconds,
    )


if __name__ == "__main__":
    main()
