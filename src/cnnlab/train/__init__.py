"""Training loop, callbacks, optimizers and schedules."""

from cnnlab.hardware import pick_device, pick_precision
from cnnlab.train.callbacks import Callback, EarlyStopping, LambdaCallback
from cnnlab.train.optim import OPTIMIZERS, SCHEDULES, make_optimizer
from cnnlab.train.tensorboard import TensorBoardLogger
from cnnlab.train.trainer import History, Trainer, evaluate, fit, predict

__all__ = [
    "OPTIMIZERS",
    "SCHEDULES",
    "Callback",
    "EarlyStopping",
    "History",
    "LambdaCallback",
    "TensorBoardLogger",
    "Trainer",
    "evaluate",
    "fit",
    "make_optimizer",
    "pick_device",
    "pick_precision",
    "predict",
]
