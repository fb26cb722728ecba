"""Datasets for cnnlab: IDX files, CIFAR-10's binary batches, where to find them, tensors,
and user images.

``load_dataset("mnist")`` gives whole uint8 tensors; ``prepare_digit(path)`` turns
a user's picture into an MNIST-style 28x28 image.
"""

from cnnlab.data.datasets import ImageData, clear_cache, list_datasets, load_dataset
from cnnlab.data.idx import read_idx, write_idx
from cnnlab.data.prepare import prepare_digit, prepare_digits
from cnnlab.data.sources import DATASET_SOURCES, DatasetSource, cache_dir, locate

__all__ = [
    "DATASET_SOURCES",
    "DatasetSource",
    "ImageData",
    "cache_dir",
    "clear_cache",
    "list_datasets",
    "load_dataset",
    "locate",
    "prepare_digit",
    "prepare_digits",
    "read_idx",
    "write_idx",
]
