"""Datasets, offline: bundled MNIST, scikit-learn digits, and a peer's own files.

MNIST is by Yann LeCun, Corinna Cortes and Christopher J. C. Burges, distributed under
CC BY-SA 3.0; ringfl ships an unmodified gzipped copy and never downloads anything.
"""

from __future__ import annotations

from ringfl.data.builtin import BUNDLED_MNIST, MNIST_SHA256, load_digits, load_mnist
from ringfl.data.dataset import Dataset
from ringfl.data.errors import DataError
from ringfl.data.files import load_data_file
from ringfl.data.idx import parse_idx, read_idx

__all__ = [
    "BUNDLED_MNIST",
    "MNIST_SHA256",
    "DataError",
    "Dataset",
    "load_data_file",
    "load_digits",
    "load_mnist",
    "parse_idx",
    "read_idx",
]
