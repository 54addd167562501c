"""Data for tinygen: IDX files, the datasets it trains on, and a DataLoader that batches them.

    from tinygen.data import DataLoader, load_dataset
    train = load_dataset("fashion-mnist", "train", value_range=(-1, 1))
    for images, labels in DataLoader(train, batch_size=64, shuffle=True):
        ...  # images (64, 1, 28, 28) float32, labels (64,) int64

idx.py reads and writes IDX files, datasets.py builds the datasets, loader.py batches them.
"""

from tinygen.data.datasets import (
    DATASET_NAMES,
    FASHION_MNIST_SYSTEM_DIR,
    Dataset,
    load_dataset,
    make_shapes,
    resize_bilinear,
    scale_images,
    unscale_images,
)
from tinygen.data.idx import read_idx, read_idx_pair, write_idx
from tinygen.data.loader import DataLoader

__all__ = [
    "DATASET_NAMES",
    "FASHION_MNIST_SYSTEM_DIR",
    "DataLoader",
    "Dataset",
    "load_dataset",
    "make_shapes",
    "read_idx",
    "read_idx_pair",
    "resize_bilinear",
    "scale_images",
    "unscale_images",
    "write_idx",
]
