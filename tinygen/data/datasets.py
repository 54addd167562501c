"""The image datasets tinygen trains on, all as (N, 1, 28, 28) float32 images and int64 labels.

    fashion-mnist  Zalando's 70,000 garment images (60,000 train, 10,000 test), read from
                   IDX files: /usr/share/datasets/fashion-mnist once the Debian package
                   `dataset-fashion-mnist` is installed, or any folder given as `data_dir`.
    mnist          LeCun's 70,000 handwritten digits, read from IDX files in `data_dir`.
    digits         scikit-learn's 1,797 handwritten digits (8x8, bundled in its wheel, so
                   no download), upsampled to 20x20 and centred in 28x28 as MNIST's are.
    shapes         squares, circles, crosses and triangles drawn from a seed; made in
                   milliseconds, for tests.

`load_dataset(name, split)` is the one entry point. Pixels are in [0, 1] unless
`value_range` asks for another interval, e.g. (-1, 1) to match a generator's tanh output.

Notation: N images, each C=1 channel of H=28 by W=28 pixels.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tinygen.data.idx import read_idx_pair

SPLITS = ("train", "test")
IMAGE_SIZE = 28
FASHION_MNIST_SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")

FASHION_MNIST_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
DIGIT_CLASSES = tuple(str(digit) for digit in range(10))
SHAPE_CLASSES = ("square", "circle", "cross", "triangle")


@dataclass(frozen=True, eq=False)  # arrays do not compare with ==
class Dataset:
    """Images and their labels, held in memory.

    images: (N, 1, 28, 28) float32, in `value_range` ([0, 1] by default)
    labels: (N,) int64, each in range(len(classes))
    """

    name: str
    split: str
    images: np.ndarray
    labels: np.ndarray
    classes: tuple[str, ...]
    value_range: tuple[float, float] = (0.0, 1.0)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int | slice | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self.images[index], self.labels[index]

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """(images, labels), the form `DataLoader` batches."""
        return self.images, self.labels


def load_dataset(
    name: str,
    split: str = "train",
    data_dir: str | os.PathLike | None = None,
    *,
    value_range: tuple[float, float] = (0.0, 1.0),
    limit: int | None = None,
    **options,
) -> Dataset:
    """Load dataset `name` (one of DATASET_NAMES), split 'train' or 'test'.

    name:        'fashion-mnist', 'mnist', 'digits' or 'shapes'.

    data_dir:    a folder holding the IDX files of fashion-mnist or mnist, searched before
                 the system folder (the files may also sit in `data_dir/<name>/`); the
                 embedded datasets, digits and shapes, do not use it.
    value_range: the interval pixels are mapped to, (0, 1) or e.g. (-1, 1) for a GAN.
    limit:       keep only the first `limit` images (for quick runs).
    options:     passed to the dataset's builder; shapes takes `n` (default 2048 for
                 train, 512 for test) and `seed` (default 0).

    Raises FileNotFoundError naming every place searched, and how to install the data,
    when the files of fashion-mnist or mnist are not found.
    """
    if name not in _BUILDERS:
        raise ValueError(f"load_dataset: name must be one of {sorted(_BUILDERS)}, got {name!r}")
    if split not in SPLITS:
        raise ValueError(f"load_dataset: split must be one of {SPLITS}, got {split!r}")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 0):
        raise ValueError(f"load_dataset: limit must be an int >= 0 or None, got {limit!r}")
    low, high = _check_range(value_range, "load_dataset")

    images, labels, classes = _BUILDERS[name](split, data_dir, **options)
    if limit is not None:
        images, labels = images[:limit], labels[:limit]
    return Dataset(
        name=name,
        split=split,
        images=scale_images(images, (low, high)),
        labels=labels,
        classes=classes,
        value_range=(low, high),
    )


def scale_images(images: np.ndarray, value_range: tuple[float, float]) -> np.ndarray:
    """Map pixels from [0, 1] to [low, high]: x' = low + (high - low) * x, as float32.

    `scale_images(x, (-1, 1))` gives 2x - 1, the range of a tanh output layer.
    """
    low, high = _check_range(value_range, "scale_images")
    images = np.asarray(images, dtype=np.float32)
    if (low, high) == (0.0, 1.0):
        return images
    return (np.float32(low) + np.float32(high - low) * images).astype(np.float32)


def unscale_images(images: np.ndarray, value_range: tuple[float, float]) -> np.ndarray:
    """The inverse of `scale_images`: map [low, high] to [0, 1], x = (x' - low) / (high - low)."""
    low, high = _check_range(value_range, "unscale_images")
    images = np.asarray(images, dtype=np.float32)
    return ((images - np.float32(low)) / np.float32(high - low)).astype(np.float32)


# ---------------------------------------------------------------------------
# IDX datasets: fashion-mnist and mnist
# ---------------------------------------------------------------------------

# The stems of the four files, as Zalando and LeCun name them; each may end in .gz.
_IDX_STEMS = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def _load_fashion_mnist(split: str, data_dir: str | os.PathLike | None):
    how_to_install = (
        "Install the Debian package (as root: apt-get install dataset-fashion-mnist), "
        "which puts the files in /usr/share/datasets/fashion-mnist, or download the four "
        "IDX files from https://github.com/zalandoresearch/fashion-mnist into a folder and "
        "pass it as --data-dir (data_dir= in Python)."
    )
    folders = _candidate_folders("fashion-mnist", data_dir) + [FASHION_MNIST_SYSTEM_DIR]
    images, labels = _load_idx_split("fashion-mnist", split, folders, how_to_install)
    return images, labels, FASHION_MNIST_CLASSES


def _load_mnist(split: str, data_dir: str | os.PathLike | None):
    how_to_install = (
        "Download the four IDX files of MNIST (train-images-idx3-ubyte.gz, "
        "train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz) "
        "into a folder and pass it as --data-dir (data_dir= in Python)."
    )
    folders = _candidate_folders("mnist", data_dir)
    images, labels = _load_idx_split("mnist", split, folders, how_to_install)
    return images, labels, DIGIT_CLASSES


def _candidate_folders(name: str, data_dir: str | os.PathLike | None) -> list[Path]:
    if data_dir is None:
        return []
    return [Path(data_dir), Path(data_dir) / name]


def _load_idx_split(
    name: str, split: str, folders: list[Path], how_to_install: str
) -> tuple[np.ndarray, np.ndarray]:
    """Find the split's image and label files in the first folder holding both, and read them."""
    stems = _IDX_STEMS[split]
    searched = []
    for folder in folders:
        found = [_find_file(folder, stem) for stem in stems]
        if all(path is not None for path in found):
            images, labels = read_idx_pair(*found)
            return _check_mnist_like(name, images, labels, found)
        missing = [stem for stem, path in zip(stems, found) if path is None]
        searched.append(f"  {folder}: no {' and no '.join(s + '[.gz]' for s in missing)}")
    if not folders:
        searched.append("  (no folder: data_dir was not given)")
    raise FileNotFoundError(
        f"load_dataset: the {split} split of {name} was not found. Searched:\n"
        + "\n".join(searched)
        + f"\n{how_to_install}"
    )


def _find_file(folder: Path, stem: str) -> Path | None:
    for candidate in (folder / f"{stem}.gz", folder / stem):
        if candidate.is_file():
            return candidate
    return None


def _check_mnist_like(
    name: str, images: np.ndarray, labels: np.ndarray, paths: list[Path]
) -> tuple[np.ndarray, np.ndarray]:
    """Check 28x28 images and labels 0..9, then convert: (N, 28, 28) uint8 -> (N, 1, 28, 28)."""
    if images.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE):
        raise ValueError(
            f"load_dataset: {paths[0]} holds images of {images.shape[1]}x{images.shape[2]} "
            f"pixels; {name} images are {IMAGE_SIZE}x{IMAGE_SIZE}"
        )
    if labels.size and labels.max() > 9:
        raise ValueError(
            f"load_dataset: {paths[1]} holds label {int(labels.max())}; {name} labels are 0 to 9"
        )
    images = images[:, None, :, :].astype(np.float32) / np.float32(255)  # (N, 1, 28, 28)
    return images, labels.astype(np.int64)


# ---------------------------------------------------------------------------
# digits: scikit-learn's 8x8 digits, upsampled
# ---------------------------------------------------------------------------

DIGITS_BOX = 20  # MNIST fits each digit in a 20x20 box centred in 28x28; digits does the same
DIGITS_TEST_EVERY = 5  # every 5th image of each class is a test image: 355 test, 1,442 train


def _load_digits(split: str, data_dir: str | os.PathLike | None):
    from sklearn.datasets import load_digits  # imported here: only this dataset needs it

    bunch = load_digits()
    pixels = bunch.images.astype(np.float32) / np.float32(16)  # (1797, 8, 8), 0..16 -> [0, 1]
    labels = bunch.target.astype(np.int64)  # (1797,)
    # A fixed split, stratified: the k-th image of class c (in file order) is a test
    # image when k % 5 == 4, so both splits hold every class in the same proportions.
    rank_in_class = np.zeros(len(labels), dtype=np.int64)
    for c in range(len(DIGIT_CLASSES)):
        rank_in_class[labels == c] = np.arange(np.count_nonzero(labels == c))
    is_test = rank_in_class % DIGITS_TEST_EVERY == DIGITS_TEST_EVERY - 1
    keep = is_test if split == "test" else ~is_test
    pixels, labels = pixels[keep], labels[keep]

    boxed = resize_bilinear(pixels, DIGITS_BOX, DIGITS_BOX)  # (N, 20, 20)
    margin = (IMAGE_SIZE - DIGITS_BOX) // 2
    images = np.zeros((len(boxed), 1, IMAGE_SIZE, IMAGE_SIZE), dtype=np.float32)
    images[:, 0, margin : margin + DIGITS_BOX, margin : margin + DIGITS_BOX] = boxed
    return images, labels, DIGIT_CLASSES


def resize_bilinear(images: np.ndarray, OH: int, OW: int) -> np.ndarray:
    """Resize (N, H, W) images to (N, OH, OW) by bilinear interpolation.

    Pixel centres are aligned (output pixel o samples the input at
    s = (o + 0.5) * H / OH - 0.5, clamped to [0, H - 1]), so the image is neither
    shifted nor cut. Each output pixel is a convex combination of input pixels,
    so values stay within the input's range. Meant for upsampling (it matches Pillow's
    BILINEAR there); shrinking with it aliases, as it does not average over the
    input pixels an output pixel covers.
    """
    images = np.asarray(images, dtype=np.float32)
    N, H, W = images.shape
    rows = _interpolation_matrix(H, OH)  # (OH, H)
    cols = _interpolation_matrix(W, OW)  # (OW, W)
    # out[n] = rows @ images[n] @ cols.T
    return np.einsum("oh,nhw,pw->nop", rows, images, cols).astype(np.float32)  # (N, OH, OW)


def _interpolation_matrix(size_in: int, size_out: int) -> np.ndarray:
    """(size_out, size_in) weights of linear interpolation with aligned pixel centres."""
    source = (np.arange(size_out) + 0.5) * size_in / size_out - 0.5
    source = np.clip(source, 0, size_in - 1)
    left = np.floor(source).astype(np.int64)
    right = np.minimum(left + 1, size_in - 1)
    frac = (source - left).astype(np.float32)
    matrix = np.zeros((size_out, size_in), dtype=np.float32)
    matrix[np.arange(size_out), left] += 1 - frac
    matrix[np.arange(size_out), right] += frac
    return matrix


# ---------------------------------------------------------------------------
# shapes: synthetic images drawn from a seed
# ---------------------------------------------------------------------------


def _load_shapes(
    split: str, data_dir: str | os.PathLike | None, *, n: int | None = None, seed: int = 0
):
    if n is None:
        n = 2048 if split == "train" else 512
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"load_dataset('shapes'): n must be an int >= 0, got {n!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"load_dataset('shapes'): seed must be an int >= 0, got {seed!r}")
    # The train and test splits come from independent streams of the same seed.
    rng = np.random.default_rng([int(seed), SPLITS.index(split)])
    images, labels = make_shapes(n, rng)
    return images, labels, SHAPE_CLASSES


def make_shapes(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Draw n images of one white shape each on black, with its class label.

    Classes (SHAPE_CLASSES): 0 square outline, 1 circle outline, 2 cross, 3 filled
    triangle. Each has a random half-size r in [5, 10] pixels, a random centre that
    keeps it inside the image, and a random brightness in [0.6, 1].
    Returns images (n, 1, 28, 28) float32 in [0, 1] and labels (n,) int64.
    """
    labels = rng.integers(0, len(SHAPE_CLASSES), size=n).astype(np.int64)
    r = rng.integers(5, 11, size=n).astype(np.float32)
    cy = rng.uniform(r + 1, IMAGE_SIZE - 2 - r).astype(np.float32)
    cx = rng.uniform(r + 1, IMAGE_SIZE - 2 - r).astype(np.float32)
    brightness = rng.uniform(0.6, 1.0, size=n).astype(np.float32)

    grid = np.arange(IMAGE_SIZE, dtype=np.float32)
    dy = grid[None, :, None] - cy[:, None, None]  # (n, 28, 1), offset from the centre
    dx = grid[None, None, :] - cx[:, None, None]  # (n, 1, 28)
    r = r[:, None, None]  # (n, 1, 1)
    thickness = 1.5

    chebyshev = np.maximum(np.abs(dy), np.abs(dx))  # distance to the centre in the max norm
    euclid = np.sqrt(dy**2 + dx**2)
    square = (chebyshev <= r) & (chebyshev > r - thickness)
    circle = (euclid <= r) & (euclid > r - thickness)
    cross = ((np.abs(dy) <= thickness / 2 + 0.5) & (np.abs(dx) <= r)) | (
        (np.abs(dx) <= thickness / 2 + 0.5) & (np.abs(dy) <= r)
    )
    # apex at the top (dy = -r), base at the bottom (dy = r): half-width grows as (dy + r) / 2
    triangle = (np.abs(dy) <= r) & (np.abs(dx) <= (dy + r) / 2)

    masks = np.stack([square, circle, cross, triangle])  # (4, n, 28, 28)
    mask = masks[labels, np.arange(n)]  # (n, 28, 28), each image's own shape
    images = mask.astype(np.float32) * brightness[:, None, None]
    return images[:, None, :, :], labels  # (n, 1, 28, 28)


# ---------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------

_BUILDERS: dict[str, Callable[..., tuple[np.ndarray, np.ndarray, tuple[str, ...]]]] = {
    "fashion-mnist": _load_fashion_mnist,
    "mnist": _load_mnist,
    "digits": _load_digits,
    "shapes": _load_shapes,
}
DATASET_NAMES = tuple(_BUILDERS)


def _check_range(value_range: tuple[float, float], caller: str) -> tuple[float, float]:
    try:
        low, high = (float(v) for v in value_range)
    except (TypeError, ValueError):
        raise ValueError(
            f"{caller}: value_range must be a pair (low, high), got {value_range!r}"
        ) from None
    if not low < high:
        raise ValueError(f"{caller}: value_range must have low < high, got {value_range!r}")
    return low, high
