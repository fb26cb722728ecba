"""The networks the five tutorials build, layer for layer and parameter for parameter.

Each factory reproduces one model of docs/tutorials.md (a row of its "The models at a
glance" table, described in its tutorial's section), including the weight
initialisation the original framework used where it matters for the reported accuracy
(Keras' Glorot-uniform kernels and zero biases, the "normal" initialiser of seed002's
dense layers, the truncated normal σ=0.1 / bias 0.1 of TensorFlow's Deep MNIST,
PaddlePaddle's He-normal convolutions). ``recipe`` holds each tutorial's own training
settings; ``cnnlab train`` uses them as defaults for that model.
"""

from __future__ import annotations

import torch
from torch import nn

from cnnlab.models.registry import register_model


def _keras_init(model: nn.Module, dense_std: float | None = None) -> nn.Module:
    """Keras defaults: Glorot-uniform kernels, zero biases; ``dense_std`` gives the
    dense layers Keras' ``'normal'`` initialiser (N(0, dense_std²)) instead."""
    for m in model.modules():
        if isinstance(m, nn.Linear) and dense_std is not None:
            nn.init.normal_(m.weight, 0.0, dense_std)
            nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    return model


def _paddle_init(model: nn.Module) -> nn.Module:
    """PaddlePaddle 2 defaults: convolution kernels from N(0, 2/fan_in), linear weights
    Xavier-uniform, biases zero (torch's defaults are smaller, which slows sigmoid nets)."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.xavier_uniform_(m.weight)
            nn.init.zeros_(m.bias)
    return model


def _truncated_normal_init(model: nn.Module, std: float = 0.1, bias: float = 0.1) -> nn.Module:
    """TensorFlow 1 Deep MNIST: weights from a normal truncated at 2σ, biases constant."""
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.trunc_normal_(m.weight, 0.0, std, -2 * std, 2 * std)
            nn.init.constant_(m.bias, bias)
    return model


def _conv_relu_pool(cin: int, cout: int, kernel: int) -> list[nn.Module]:
    """The tutorials' block: a "same"-padded convolution, ReLU, 2×2 max pooling."""
    return [nn.Conv2d(cin, cout, kernel, padding=kernel // 2), nn.ReLU(), nn.MaxPool2d(2)]


#: seed002's training, shared by its CNN and the perceptron it compares it with.
SEED002_RECIPE = {
    "optimizer": "adam",
    "lr": 1e-3,
    "batch_size": 200,
    "epochs": 10,
    "validation_split": 0.2,
    "labels": "onehot",
}

#: seed004's training: 5 epochs of batch 64 (its 938 steps an epoch), as the tutorial
#: shows; Adam at 1e-3 and pixels normalised to [-1, 1] (Normalize(mean=127.5, std=127.5))
#: are PaddlePaddle's usual choices, which its text does not show.
PADDLE_RECIPE = {
    "optimizer": "adam",
    "lr": 1e-3,
    "batch_size": 64,
    "epochs": 5,
    "validation_split": 0.0,
    "mean": 0.5,
    "std": 0.5,
}


@register_model(
    source="seed 000 (tf.keras)",
    recipe={"optimizer": "adam", "lr": 1e-3, "batch_size": 64, "epochs": 5,
            "validation_split": 0.2},
)  # fmt: skip
def seed000_cnn(num_classes: int = 10, in_channels: int = 1) -> nn.Module:
    """Two 3×3 conv blocks (16, 32 filters) and a 128-unit dense layer: 206,922 parameters.

    The tutorial's tf.keras model; it reports 98.86% test accuracy after 5 epochs.
    """
    model = nn.Sequential(
        *_conv_relu_pool(in_channels, 16, 3),
        *_conv_relu_pool(16, 32, 3),
        nn.Flatten(),
        nn.Linear(32 * 7 * 7, 128),
        nn.ReLU(),
        nn.Linear(128, num_classes),
    )
    return _keras_init(model)


@register_model(
    input_size=(1, 32, 32),
    fit="pad",
    source="seed 001 (keras)",
    recipe={"optimizer": "adam", "lr": 1e-3, "batch_size": 32, "epochs": 5,
            "validation_split": 0.1},
)  # fmt: skip
def seed001_lenet5(num_classes: int = 10, in_channels: int = 1) -> nn.Module:
    """LeNet-5 on 32×32 input: conv 6@5×5, pool, conv 16@5×5, pool, conv 120@5×5, 84, 10.

    61,706 parameters. MNIST digits are zero-padded from 28×28 to 32×32, as LeCun did.
    The tutorial gives the layers but not their activations or pooling; this uses tanh
    after each convolution and the hidden dense layer and average pooling, as LeCun's
    LeNet-5 did (the sigmoid LeNet is seed004's).
    """
    model = nn.Sequential(
        nn.Conv2d(in_channels, 6, 5),
        nn.Tanh(),
        nn.AvgPool2d(2),
        nn.Conv2d(6, 16, 5),
        nn.Tanh(),
        nn.AvgPool2d(2),
        nn.Conv2d(16, 120, 5),
        nn.Tanh(),
        nn.Flatten(),
        nn.Linear(120, 84),
        nn.Tanh(),
        nn.Linear(84, num_classes),
    )
    return _keras_init(model)


@register_model(
    input_size=(3, 227, 227),
    fit="resize",
    source="seed 001 (keras)",
    recipe={"optimizer": "adam", "lr": 1e-4, "batch_size": 64, "epochs": 1,
            "validation_split": 0.1},
)  # fmt: skip
def seed001_alexnet(num_classes: int = 10, in_channels: int = 3, dropout: float = 0.5) -> nn.Module:
    """AlexNet on 227×227×3: five convolutions (96@11×11/4 … 256@3×3) and 4096-4096 dense.

    62,378,344 parameters with 1000 classes, 58,322,314 with 10. Digits are resized to
    227×227 and repeated to three channels by the pipeline: a lesson in scale, far too
    big a network for MNIST on a CPU.
    """
    model = nn.Sequential(
        nn.Conv2d(in_channels, 96, 11, stride=4),
        nn.ReLU(),
        nn.MaxPool2d(3, 2),
        nn.Conv2d(96, 256, 5, padding=2),
        nn.ReLU(),
        nn.MaxPool2d(3, 2),
        nn.Conv2d(256, 384, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(384, 384, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(384, 256, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(3, 2),
        nn.Flatten(),
        nn.Linear(256 * 6 * 6, 4096),
        nn.ReLU(),
        nn.Dropout(dropout),
        nn.Linear(4096, 4096),
        nn.ReLU(),
        nn.Dropout(dropout),
        nn.Linear(4096, num_classes),
    )
    return _keras_init(model)


@register_model(source="seed 002 (keras)", recipe=SEED002_RECIPE)
def seed002_cnn(num_classes: int = 10, in_channels: int = 1) -> nn.Module:
    """Conv 16@5×5 and 36@5×5 with max pooling, dropout 0.25 and 0.5, dense 128: 242,062.

    The tutorial reports 99.15% test accuracy after 10 epochs of batch 200.
    """
    model = nn.Sequential(
        *_conv_relu_pool(in_channels, 16, 5),
        *_conv_relu_pool(16, 36, 5),
        nn.Dropout(0.25),
        nn.Flatten(),
        nn.Linear(36 * 7 * 7, 128),
        nn.ReLU(),
        nn.Dropout(0.5),
        nn.Linear(128, num_classes),
    )
    _keras_init(model)
    for m in model.modules():  # kernel_initializer='normal' on the dense layers only
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0.0, 0.05)
            nn.init.zeros_(m.bias)
    return model


@register_model(source="seed 002 (keras)", recipe=SEED002_RECIPE)
def seed002_mlp(
    num_classes: int = 10, in_channels: int = 1, hidden: int = 1000, dropout: float = 0.5
) -> nn.Module:
    """A multilayer perceptron to compare seed002's CNN with: 784 → 1000 ReLU → 10.

    The tutorial makes the comparison without listing the perceptron's layers; this one
    has 795,010 parameters, more than three times the CNN, yet is less accurate and more
    prone to overfitting: the point of the comparison.
    """
    model = nn.Sequential(
        nn.Flatten(),
        nn.Linear(in_channels * 28 * 28, hidden),
        nn.ReLU(),
        nn.Dropout(dropout),
        nn.Linear(hidden, num_classes),
    )
    return _keras_init(model, dense_std=0.05)


@register_model(
    source="seed 003 (TensorFlow 1)",
    recipe={"optimizer": "adam", "lr": 1e-4, "batch_size": 50, "steps": 20000,
            "validation_split": 5000 / 60000},
)  # fmt: skip
def seed003_deep_mnist(
    num_classes: int = 10, in_channels: int = 1, keep_prob: float = 0.5
) -> nn.Module:
    """TensorFlow's "Deep MNIST for Experts": conv 32@5×5, conv 64@5×5, dense 1024: 3,274,634.

    Trained with Adam at 1e-4 for 20,000 steps of 50 images; about 99.2% test accuracy.
    """
    model = nn.Sequential(
        *_conv_relu_pool(in_channels, 32, 5),
        *_conv_relu_pool(32, 64, 5),
        nn.Flatten(),
        nn.Linear(64 * 7 * 7, 1024),
        nn.ReLU(),
        nn.Dropout(1.0 - keep_prob),
        nn.Linear(1024, num_classes),
    )
    return _truncated_normal_init(model)


@register_model(source="seed 004 (PaddlePaddle)", recipe=PADDLE_RECIPE)
def seed004_lenet(num_classes: int = 10, in_channels: int = 1) -> nn.Module:
    """Classic LeNet with sigmoid and average pooling on 28×28 (conv1 padded by 2): 61,706."""
    model = nn.Sequential(
        nn.Conv2d(in_channels, 6, 5, padding=2),
        nn.Sigmoid(),
        nn.AvgPool2d(2),
        nn.Conv2d(6, 16, 5),
        nn.Sigmoid(),
        nn.AvgPool2d(2),
        nn.Flatten(),
        nn.Linear(16 * 5 * 5, 120),
        nn.Sigmoid(),
        nn.Linear(120, 84),
        nn.Sigmoid(),
        nn.Linear(84, num_classes),
    )
    return _paddle_init(model)


class LeNetMax(nn.Module):
    """LeNet written as a class, as seed004 does: 3×3 first convolution and max pooling.

    The forward flattens with a function, so the model summary shows no Flatten layer,
    as the tutorial's does.
    """

    def __init__(self, num_classes: int = 10, in_channels: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 6, 3, padding=1)
        self.act1 = nn.Sigmoid()
        self.pool1 = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(6, 16, 5)
        self.act2 = nn.Sigmoid()
        self.pool2 = nn.MaxPool2d(2)
        self.fc1 = nn.Linear(16 * 5 * 5, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool1(self.act1(self.conv1(x)))
        x = self.pool2(self.act2(self.conv2(x)))
        x = torch.flatten(x, 1)
        return self.fc3(self.fc2(self.fc1(x)))


@register_model(source="seed 004 (PaddlePaddle)", recipe=PADDLE_RECIPE)
def seed004_lenet_max(num_classes: int = 10, in_channels: int = 1) -> nn.Module:
    """seed004's class-based LeNet: conv 6@3×3 pad 1, sigmoid, max pooling: 61,610.

    The tutorial's summary shows no activation between its three linear layers; this
    keeps that. It reports 98.26% after 5 epochs and 98.40% after 2 more.
    """
    return _paddle_init(LeNetMax(num_classes, in_channels))
