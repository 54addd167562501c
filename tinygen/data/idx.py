"""Read and write IDX files, the format MNIST and Fashion-MNIST are shipped in.

An IDX file is a header followed by the raw array, big-endian:

    bytes 0-1   two zero bytes
    byte  2     the element type (0x08 uint8, 0x09 int8, 0x0B int16, 0x0C int32,
                0x0D float32, 0x0E float64)
    byte  3     the number of dimensions D
    4 * D bytes the size of each dimension, as big-endian uint32
    the rest    prod(sizes) elements, row-major (C order)

The first four bytes read as one big-endian integer are the "magic number":
2051 (0x00000803) for MNIST's image files, 2049 (0x00000801) for its label files.

`read_idx` checks every part of this layout before it trusts the data, so a
truncated download or a file of another kind stops with a ValueError that names
the file, what was expected and what was found. Files ending in `.gz`, or starting
with the gzip signature, are decompressed first. `write_idx` writes the same layout,
through a temporary file that is renamed into place, so a reader never sees half a file.
"""

from __future__ import annotations

import gzip
import os
import tempfile
import zlib
from pathlib import Path

import numpy as np

# type code -> element dtype, big-endian as stored in the file
IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_CODES_BY_KIND = {(dtype.kind, dtype.itemsize): code for code, dtype in IDX_DTYPES.items()}
_GZIP_SIGNATURE = b"\x1f\x8b"


def read_idx(
    path: str | os.PathLike,
    *,
    expected_ndim: int | None = None,
    expected_dtype: np.dtype | type | str | None = None,
) -> np.ndarray:
    """Read an IDX file (gzipped or not) into a native-endian NumPy array.

    `expected_ndim` and `expected_dtype`, when given, are checked against the
    header, e.g. `expected_ndim=3, expected_dtype=np.uint8` for an image file
    (N, H, W) and `expected_ndim=1` for a label file (N,).

    Raises FileNotFoundError when the file is missing and ValueError, naming the
    file, when the magic number, type code, dimensions or length are wrong.
    """
    path = Path(path)
    payload = _read_bytes(path)

    # The magic number: 0x00, 0x00, type code, D.
    if len(payload) < 4:
        raise ValueError(
            f"read_idx: {path} is truncated: it holds {len(payload)} bytes, "
            "but an IDX header needs at least 4"
        )
    magic = int.from_bytes(payload[:4], "big")
    zeros, code, ndim = payload[0:2], payload[2], payload[3]
    if zeros != b"\x00\x00" or code not in IDX_DTYPES or ndim == 0:
        raise ValueError(
            f"read_idx: {path} is not an IDX file: magic number 0x{magic:08X} should be two "
            f"zero bytes, a type code among {_known_codes()} and a number of dimensions >= 1"
        )
    dtype = IDX_DTYPES[code]
    if expected_ndim is not None or expected_dtype is not None:
        want_dtype = dtype if expected_dtype is None else np.dtype(expected_dtype)
        want_ndim = ndim if expected_ndim is None else expected_ndim
        if want_dtype.newbyteorder(">") != dtype or want_ndim != ndim:
            want_code = _CODES_BY_KIND.get((want_dtype.kind, want_dtype.itemsize), 0)
            want_magic = (want_code << 8) | want_ndim
            raise ValueError(
                f"read_idx: {path} has magic number 0x{magic:08X} ({magic}: "
                f"{_describe(dtype, ndim)}) but 0x{want_magic:08X} ({want_magic}: "
                f"{_describe(want_dtype, want_ndim)}) was expected"
            )

    # The dimensions: D big-endian uint32 after the magic number.
    header_size = 4 + 4 * ndim
    if len(payload) < header_size:
        raise ValueError(
            f"read_idx: {path} is truncated inside its header: {ndim} dimensions need "
            f"{header_size} header bytes, but the file holds {len(payload)}"
        )
    shape = tuple(int.from_bytes(payload[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))

    # The data: prod(shape) elements, nothing missing and nothing left over.
    count = int(np.prod(shape, dtype=np.int64))
    expected_bytes = count * dtype.itemsize
    found_bytes = len(payload) - header_size
    if found_bytes != expected_bytes:
        problem = "is truncated" if found_bytes < expected_bytes else "has trailing bytes"
        raise ValueError(
            f"read_idx: {path} {problem}: its header declares shape {shape} of "
            f"{dtype.newbyteorder('=').name}, {expected_bytes} bytes of data, "
            f"but {found_bytes} bytes follow the header"
        )
    data = np.frombuffer(payload, dtype=dtype, count=count, offset=header_size)
    return data.reshape(shape).astype(dtype.newbyteorder("="))  # a writable native copy


def read_idx_pair(
    images_path: str | os.PathLike, labels_path: str | os.PathLike
) -> tuple[np.ndarray, np.ndarray]:
    """Read an image file (N, H, W) and its label file (N,), both uint8.

    Raises ValueError, naming both files, when their counts N differ.
    """
    images = read_idx(images_path, expected_ndim=3, expected_dtype=np.uint8)
    labels = read_idx(labels_path, expected_ndim=1, expected_dtype=np.uint8)
    if images.shape[0] != labels.shape[0]:
        raise ValueError(
            f"read_idx_pair: {images_path} holds {images.shape[0]} images but "
            f"{labels_path} holds {labels.shape[0]} labels; expected one label per image "
            "(are the two files from the same split and the same download?)"
        )
    return images, labels


def write_idx(path: str | os.PathLike, array: np.ndarray) -> None:
    """Write `array` as an IDX file, gzipped when `path` ends in `.gz`.

    The dtype must be one IDX can store (uint8, int8, int16, int32, float32,
    float64) and every dimension below 2**32. The bytes go to a temporary file in
    the same folder, renamed over `path` once complete. The gzip header carries no
    timestamp, so the same array always gives the same bytes.
    """
    path = Path(path)
    array = np.asarray(array)
    code = _CODES_BY_KIND.get((array.dtype.kind, array.dtype.itemsize))
    if code is None:
        raise TypeError(
            f"write_idx: array dtype must be one of "
            f"{[d.newbyteorder('=').name for d in IDX_DTYPES.values()]}, got {array.dtype}"
        )
    if not 1 <= array.ndim <= 255 or any(size >= 2**32 for size in array.shape):
        raise ValueError(
            f"write_idx: array must have 1 to 255 dimensions, each below 2**32; "
            f"got shape {array.shape}"
        )

    header = bytes([0, 0, code, array.ndim])
    header += b"".join(size.to_bytes(4, "big") for size in array.shape)
    payload = header + array.astype(IDX_DTYPES[code], copy=False).tobytes(order="C")
    if path.name.endswith(".gz"):
        payload = gzip.compress(payload, mtime=0)

    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(payload)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


# ---------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------


def _read_bytes(path: Path) -> bytes:
    """The file's bytes, decompressed when it is gzipped."""
    with open(path, "rb") as file:  # FileNotFoundError names the path itself
        raw = file.read()
    if not (path.name.endswith(".gz") or raw.startswith(_GZIP_SIGNATURE)):
        return raw
    try:
        return gzip.decompress(raw)
    except (EOFError, OSError, zlib.error) as error:
        raise ValueError(
            f"read_idx: {path} is not a complete gzip file ({type(error).__name__}: {error}); "
            "the download may have been cut short"
        ) from error


def _describe(dtype: np.dtype, ndim: int) -> str:
    plural = "dimension" if ndim == 1 else "dimensions"
    return f"{dtype.newbyteorder('=').name}, {ndim} {plural}"


def _known_codes() -> str:
    return ", ".join(f"0x{code:02X}" for code in IDX_DTYPES)
