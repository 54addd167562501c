"""DataLoader: cut a dataset into NumPy batches, shuffled from tinygen's seeded generator.

    loader = DataLoader(load_dataset("digits"), batch_size=64, shuffle=True)
    for images, labels in loader:  # (B, 1, 28, 28) float32, (B,) int64
        ...

Each pass over the loader is one epoch. With `shuffle=True` the order of an epoch
is a permutation drawn from `tinygen.backend.generator()` when the pass starts
(when `iter(loader)` is called), so `manual_seed(n)` fixes the order of every epoch,
and a checkpoint that saves the generator's state before an epoch replays it exactly.
Every sample appears exactly once per epoch; the last batch is smaller when the
batch size does not divide the number of samples, unless `drop_last=True` drops it.
Batches are fresh copies, never views into the dataset. The trainer wraps them in
Tensors (and moves them to the GPU when asked).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from tinygen.backend import generator
from tinygen.data.datasets import Dataset


class DataLoader:
    """Batches over a Dataset, a tuple of arrays with a common first axis N, or one array.

    Yields what it was given, batched along the first axis: a Dataset or a tuple
    gives a tuple of arrays (e.g. images (B, 1, 28, 28) and labels (B,)); a single
    array gives a single array (B, ...). `len(loader)` is the number of batches
    per epoch: ceil(N / B), or floor(N / B) with drop_last.
    """

    def __init__(
        self,
        data: Dataset | Sequence[np.ndarray] | np.ndarray,
        batch_size: int = 64,
        shuffle: bool = False,
        drop_last: bool = False,
    ) -> None:
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)):
            raise TypeError(
                f"DataLoader: batch_size must be an int, got {type(batch_size).__name__}"
            )
        if batch_size < 1:
            raise ValueError(f"DataLoader: batch_size must be >= 1, got {batch_size}")
        self.arrays, self._single = _as_arrays(data)
        self.batch_size = int(batch_size)
        self.shuffle = bool(shuffle)
        self.drop_last = bool(drop_last)
        if self.drop_last and 0 < self.num_samples < self.batch_size:
            warnings.warn(
                f"DataLoader: drop_last=True with {self.num_samples} samples and batch_size "
                f"{self.batch_size}: every epoch is empty",
                stacklevel=2,
            )

    @property
    def num_samples(self) -> int:
        return len(self.arrays[0])

    def __len__(self) -> int:
        if self.drop_last:
            return self.num_samples // self.batch_size
        return math.ceil(self.num_samples / self.batch_size)

    def __iter__(self) -> Iterator[Any]:
        # The permutation is drawn here, at the start of the epoch, not at the first batch.
        if self.shuffle:
            order = generator().permutation(self.num_samples)
        else:
            order = np.arange(self.num_samples)
        return self._batches(order)

    def _batches(self, order: np.ndarray) -> Iterator[Any]:
        B = self.batch_size
        for start in range(0, len(self) * B, B):
            indices = order[start : start + B]  # (B,) or fewer in the last batch
            batch = tuple(array[indices] for array in self.arrays)  # fancy indexing copies
            yield batch[0] if self._single else batch


def _as_arrays(data: Any) -> tuple[tuple[np.ndarray, ...], bool]:
    """The arrays to batch, and whether the caller gave a single array."""
    if isinstance(data, Dataset):
        return data.arrays(), False
    if isinstance(data, np.ndarray):
        arrays, single = (data,), True
    elif isinstance(data, (tuple, list)) and len(data) > 0:
        arrays, single = tuple(np.asarray(a) for a in data), False
    else:
        raise TypeError(
            "DataLoader: data must be a Dataset, a numpy array, or a non-empty tuple of "
            f"arrays, got {type(data).__name__}"
        )
    if any(a.ndim == 0 for a in arrays):
        raise ValueError("DataLoader: data arrays need at least one axis (the sample axis N)")
    lengths = [len(a) for a in arrays]
    if len(set(lengths)) > 1:
        raise ValueError(
            f"DataLoader: all arrays must have the same number of samples along axis 0, "
            f"got shapes {[a.shape for a in arrays]}"
        )
    return arrays, single
