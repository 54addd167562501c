"""Tests for tinygen.data: the IDX reader and writer, the datasets and the DataLoader."""

from __future__ import annotations

import gzip
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tinygen.backend import generator, get_rng_state, manual_seed, set_rng_state
from tinygen.data import (
    DataLoader,
    load_dataset,
    read_idx,
    read_idx_pair,
    resize_bilinear,
    scale_images,
    unscale_images,
    write_idx,
)
from tinygen.data import datasets as datasets_module

FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
IDX_NAMES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def write_mnist_like(folder: Path, n_train: int = 12, n_test: int = 5, gz: bool = True) -> dict:
    """Write the four IDX files of a tiny MNIST-like dataset; return the arrays written."""
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    suffix = ".gz" if gz else ""
    written = {}
    for split, n in (("train", n_train), ("test", n_test)):
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, size=n, dtype=np.uint8)
        write_idx(folder / (IDX_NAMES[split][0] + suffix), images)
        write_idx(folder / (IDX_NAMES[split][1] + suffix), labels)
        written[split] = (images, labels)
    return written


# ---------------------------------------------------------------------------
# IDX files
# ---------------------------------------------------------------------------

IDX_DTYPES = [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64]


@settings(derandomize=True, max_examples=40, deadline=None)
@given(
    dtype=st.sampled_from(IDX_DTYPES),
    shape=st.lists(st.integers(0, 5), min_size=1, max_size=4).map(tuple),
    gz=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_write_idx_then_read_idx_round_trips_every_dtype_and_shape(dtype, shape, gz, seed):
    rng = np.random.default_rng(seed)
    if np.dtype(dtype).kind == "f":
        array = rng.standard_normal(shape).astype(dtype)
    else:
        info = np.iinfo(dtype)
        array = rng.integers(info.min, info.max, size=shape, endpoint=True, dtype=dtype)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / ("a.idx.gz" if gz else "a.idx")
        write_idx(path, array)
        back = read_idx(path)
    assert back.dtype == np.dtype(dtype)
    assert back.dtype.isnative
    assert back.shape == shape
    np.testing.assert_array_equal(back, array)


@pytest.mark.parametrize("gz", [True, False])
def test_idx_pair_of_uint8_images_and_labels_round_trips(tmp_path, gz):
    written = write_mnist_like(tmp_path, gz=gz)
    suffix = ".gz" if gz else ""
    images, labels = read_idx_pair(
        tmp_path / (IDX_NAMES["train"][0] + suffix), tmp_path / (IDX_NAMES["train"][1] + suffix)
    )
    np.testing.assert_array_equal(images, written["train"][0])
    np.testing.assert_array_equal(labels, written["train"][1])
    assert images.flags.writeable


def test_write_idx_lays_out_header_and_data_as_the_format_specifies(tmp_path):
    images = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    write_idx(tmp_path / "images", images)
    raw = (tmp_path / "images").read_bytes()
    # magic 0x00000803 = 2051 (uint8, 3 dims), then sizes 2, 3, 4 as big-endian uint32
    assert raw[:4] == bytes([0, 0, 0x08, 3])
    assert int.from_bytes(raw[:4], "big") == 2051
    assert raw[4:16] == b"\x00\x00\x00\x02\x00\x00\x00\x03\x00\x00\x00\x04"
    assert raw[16:] == bytes(range(24))


def test_read_idx_reads_big_endian_values_from_a_file_written_by_hand(tmp_path):
    # int16 (type 0x0B), 1 dimension of size 3: values 1, -2, 258 big-endian
    raw = bytes([0, 0, 0x0B, 1]) + (3).to_bytes(4, "big")
    raw += b"\x00\x01" + b"\xff\xfe" + b"\x01\x02"
    (tmp_path / "values").write_bytes(raw)
    np.testing.assert_array_equal(read_idx(tmp_path / "values"), [1, -2, 258])


def test_write_idx_gz_is_gzip_and_byte_for_byte_reproducible(tmp_path):
    array = np.arange(100, dtype=np.int32)
    write_idx(tmp_path / "a.gz", array)
    write_idx(tmp_path / "b.gz", array)
    first = (tmp_path / "a.gz").read_bytes()
    assert first[:2] == b"\x1f\x8b"
    assert first == (tmp_path / "b.gz").read_bytes()
    assert gzip.decompress(first)[:4] == bytes([0, 0, 0x0C, 1])


def test_write_idx_replaces_the_file_and_leaves_no_temporary_behind(tmp_path):
    path = tmp_path / "labels.gz"
    write_idx(path, np.zeros(4, dtype=np.uint8))
    write_idx(path, np.ones(6, dtype=np.uint8))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["labels.gz"]
    np.testing.assert_array_equal(read_idx(path), np.ones(6, dtype=np.uint8))


def test_write_idx_rejects_a_dtype_idx_cannot_store(tmp_path):
    with pytest.raises(TypeError, match=r"write_idx: array dtype must be one of .* got int64"):
        write_idx(tmp_path / "x", np.zeros(3, dtype=np.int64))
    assert list(tmp_path.iterdir()) == []


def test_read_idx_names_the_file_on_a_wrong_magic_number(tmp_path):
    path = tmp_path / "picture.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(40))
    with pytest.raises(
        ValueError, match=r"picture\.png is not an IDX file: magic number 0x89504E47"
    ):
        read_idx(path)


def test_read_idx_rejects_an_unknown_type_code(tmp_path):
    path = tmp_path / "odd"
    path.write_bytes(bytes([0, 0, 0x0A, 1]) + (2).to_bytes(4, "big") + bytes(2))
    with pytest.raises(ValueError, match=r"odd is not an IDX file: magic number 0x00000A01"):
        read_idx(path)


def test_read_idx_says_expected_and_found_magic_when_labels_are_read_as_images(tmp_path):
    path = tmp_path / "train-labels-idx1-ubyte"
    write_idx(path, np.zeros(5, dtype=np.uint8))
    with pytest.raises(ValueError) as error:
        read_idx(path, expected_ndim=3, expected_dtype=np.uint8)
    message = str(error.value)
    assert str(path) in message
    assert "0x00000801 (2049: uint8, 1 dimension)" in message
    assert "0x00000803 (2051: uint8, 3 dimensions) was expected" in message


@pytest.mark.parametrize("gz", [True, False])
def test_read_idx_names_the_file_and_both_lengths_when_data_is_truncated(tmp_path, gz):
    full = tmp_path / "full"
    write_idx(full, np.zeros((3, 28, 28), dtype=np.uint8))
    raw = full.read_bytes()[:-100]  # 16 header bytes + 2352 - 100 data bytes
    path = tmp_path / ("cut.gz" if gz else "cut")
    path.write_bytes(gzip.compress(raw) if gz else raw)
    with pytest.raises(ValueError) as error:
        read_idx(path)
    message = str(error.value)
    assert f"{path} is truncated" in message
    assert "shape (3, 28, 28)" in message
    assert "2352 bytes of data, but 2252 bytes follow the header" in message


def test_read_idx_rejects_a_file_cut_inside_its_header(tmp_path):
    path = tmp_path / "header"
    path.write_bytes(bytes([0, 0, 0x08, 3]) + (60000).to_bytes(4, "big"))
    with pytest.raises(ValueError, match=r"header is truncated inside its header: 3 dimensions"):
        read_idx(path)


def test_read_idx_rejects_a_file_shorter_than_the_magic_number(tmp_path):
    path = tmp_path / "tiny"
    path.write_bytes(b"\x00\x00")
    with pytest.raises(ValueError, match=r"tiny is truncated: it holds 2 bytes"):
        read_idx(path)


def test_read_idx_rejects_trailing_bytes(tmp_path):
    path = tmp_path / "long"
    write_idx(path, np.zeros(4, dtype=np.uint8))
    path.write_bytes(path.read_bytes() + b"\x00")
    with pytest.raises(ValueError, match=r"long has trailing bytes: .* 4 bytes of data, but 5"):
        read_idx(path)


def test_read_idx_names_the_file_when_its_gzip_stream_is_cut_short(tmp_path):
    path = tmp_path / "cut.gz"
    write_idx(path, np.arange(1000, dtype=np.int32))
    path.write_bytes(path.read_bytes()[:-20])
    with pytest.raises(ValueError, match=r"cut\.gz is not a complete gzip file"):
        read_idx(path)


def test_read_idx_raises_file_not_found_naming_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="absent"):
        read_idx(tmp_path / "absent")


def test_read_idx_pair_names_both_files_when_counts_differ(tmp_path):
    images_path, labels_path = tmp_path / "images.gz", tmp_path / "labels.gz"
    write_idx(images_path, np.zeros((5, 28, 28), dtype=np.uint8))
    write_idx(labels_path, np.zeros(4, dtype=np.uint8))
    with pytest.raises(ValueError) as error:
        read_idx_pair(images_path, labels_path)
    message = str(error.value)
    assert f"{images_path} holds 5 images but {labels_path} holds 4 labels" in message


# ---------------------------------------------------------------------------
# IDX datasets: fashion-mnist and mnist
# ---------------------------------------------------------------------------


@pytest.mark.skipif(
    not FASHION_DIR.is_dir(),
    reason="Fashion-MNIST is not installed (apt-get install dataset-fashion-mnist)",
)
def test_fashion_mnist_from_the_debian_package_has_the_published_sizes():
    for split, n in (("train", 60000), ("test", 10000)):
        data = load_dataset("fashion-mnist", split)
        assert data.images.shape == (n, 1, 28, 28)
        assert data.images.dtype == np.float32
        assert data.labels.dtype == np.int64
        assert data.images.min() == 0.0 and data.images.max() == 1.0
        # Fashion-MNIST is balanced: n / 10 images of each class in each split.
        np.testing.assert_array_equal(np.bincount(data.labels, minlength=10), [n // 10] * 10)
        assert data.classes[9] == "Ankle boot"


@pytest.mark.parametrize("name", ["fashion-mnist", "mnist"])
@pytest.mark.parametrize("subfolder", [False, True])
@pytest.mark.parametrize("gz", [True, False])
def test_idx_dataset_loads_from_data_dir_scaled_to_unit_range(tmp_path, name, subfolder, gz):
    written = write_mnist_like(tmp_path / name if subfolder else tmp_path, gz=gz)
    for split in ("train", "test"):
        data = load_dataset(name, split, data_dir=tmp_path)
        images, labels = written[split]
        assert data.images.shape == (len(labels), 1, 28, 28)
        assert data.images.dtype == np.float32 and data.labels.dtype == np.int64
        np.testing.assert_allclose(data.images[:, 0], images / 255.0, rtol=1e-6)
        np.testing.assert_array_equal(data.labels, labels)


def test_missing_fashion_mnist_names_every_folder_searched_and_how_to_install(
    tmp_path, monkeypatch
):
    system_dir = tmp_path / "system" / "fashion-mnist"
    monkeypatch.setattr(datasets_module, "FASHION_MNIST_SYSTEM_DIR", system_dir)
    data_dir = tmp_path / "mine"
    with pytest.raises(FileNotFoundError) as error:
        load_dataset("fashion-mnist", "train", data_dir=data_dir)
    message = str(error.value)
    for folder in (data_dir, data_dir / "fashion-mnist", system_dir):
        assert f"  {folder}: no train-images-idx3-ubyte[.gz]" in message
    assert "apt-get install dataset-fashion-mnist" in message
    assert "--data-dir" in message


def test_missing_mnist_without_data_dir_says_data_dir_was_not_given():
    with pytest.raises(FileNotFoundError, match=r"(?s)not given.*--data-dir"):
        load_dataset("mnist")


def test_idx_dataset_with_labels_missing_names_the_missing_file(tmp_path, monkeypatch):
    monkeypatch.setattr(datasets_module, "FASHION_MNIST_SYSTEM_DIR", tmp_path / "none")
    write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", np.zeros((2, 28, 28), dtype=np.uint8))
    with pytest.raises(FileNotFoundError) as error:
        load_dataset("fashion-mnist", "test", data_dir=tmp_path)
    assert f"  {tmp_path}: no t10k-labels-idx1-ubyte[.gz]\n" in str(error.value)


def test_idx_dataset_rejects_images_that_are_not_28_by_28(tmp_path):
    write_idx(tmp_path / "train-images-idx3-ubyte", np.zeros((2, 32, 32), dtype=np.uint8))
    write_idx(tmp_path / "train-labels-idx1-ubyte", np.zeros(2, dtype=np.uint8))
    with pytest.raises(ValueError, match=r"images of 32x32 pixels; mnist images are 28x28"):
        load_dataset("mnist", data_dir=tmp_path)


def test_idx_dataset_rejects_a_label_above_nine(tmp_path):
    write_idx(tmp_path / "train-images-idx3-ubyte", np.zeros((2, 28, 28), dtype=np.uint8))
    write_idx(tmp_path / "train-labels-idx1-ubyte", np.array([3, 12], dtype=np.uint8))
    with pytest.raises(ValueError, match=r"holds label 12; mnist labels are 0 to 9"):
        load_dataset("mnist", data_dir=tmp_path)


# ---------------------------------------------------------------------------
# digits
# ---------------------------------------------------------------------------


def test_digits_are_28_by_28_in_unit_range_with_a_fixed_stratified_split():
    from sklearn.datasets import load_digits

    train, test = load_dataset("digits", "train"), load_dataset("digits", "test")
    assert train.images.shape == (1442, 1, 28, 28) and test.images.shape == (355, 1, 28, 28)
    for data in (train, test):
        assert data.images.dtype == np.float32 and data.labels.dtype == np.int64
        assert data.images.min() == 0.0 and data.images.max() == 1.0
        # the digit sits in a 20x20 box with a 4-pixel empty margin, as in MNIST
        inner = np.zeros((28, 28), dtype=bool)
        inner[4:24, 4:24] = True
        assert np.all(data.images[:, 0, ~inner] == 0)
    # together the splits hold every image once, each class split 4 : 1
    all_counts = np.bincount(load_digits().target, minlength=10)
    test_counts = np.bincount(test.labels, minlength=10)
    np.testing.assert_array_equal(
        np.bincount(train.labels, minlength=10) + test_counts, all_counts
    )
    np.testing.assert_array_equal(test_counts, all_counts // 5)
    np.testing.assert_array_equal(load_dataset("digits", "test").images, test.images)


def test_digits_image_is_the_bilinear_upsampling_of_the_sklearn_image():
    from sklearn.datasets import load_digits

    first = load_digits().images[0] / 16.0  # (8, 8), first image of class 0: a training image
    expected = resize_bilinear(first[None], 20, 20)[0]
    np.testing.assert_allclose(load_dataset("digits").images[0, 0, 4:24, 4:24], expected)


@pytest.mark.parametrize("OH, OW", [(20, 20), (28, 28), (16, 24), (13, 9)])
def test_resize_bilinear_upsampling_matches_pillow(OH, OW):
    from PIL import Image

    x = np.random.default_rng(0).random((8, 8)).astype(np.float32)
    reference = np.asarray(Image.fromarray(x, mode="F").resize((OW, OH), Image.BILINEAR))
    np.testing.assert_allclose(resize_bilinear(x[None], OH, OW)[0], reference, atol=1e-6)


def test_resize_bilinear_keeps_a_constant_image_constant():
    out = resize_bilinear(np.full((2, 5, 7), 0.25, dtype=np.float32), 11, 3)
    assert out.shape == (2, 11, 3)
    np.testing.assert_allclose(out, 0.25, rtol=1e-6)


# ---------------------------------------------------------------------------
# shapes
# ---------------------------------------------------------------------------


def test_shapes_is_deterministic_from_its_seed_and_splits_differ():
    a = load_dataset("shapes", "train", n=64, seed=3)
    b = load_dataset("shapes", "train", n=64, seed=3)
    np.testing.assert_array_equal(a.images, b.images)
    np.testing.assert_array_equal(a.labels, b.labels)
    assert not np.array_equal(a.images, load_dataset("shapes", "train", n=64, seed=4).images)
    assert not np.array_equal(a.images, load_dataset("shapes", "test", n=64, seed=3).images)


def test_shapes_does_not_touch_the_global_generator():
    manual_seed(0)
    before = get_rng_state()
    load_dataset("shapes", n=8)
    assert get_rng_state() == before


def test_shapes_images_hold_one_visible_shape_of_every_class():
    data = load_dataset("shapes", "test", n=200, seed=0)
    assert data.images.shape == (200, 1, 28, 28) and data.images.dtype == np.float32
    assert data.labels.dtype == np.int64
    assert set(data.labels.tolist()) == {0, 1, 2, 3}
    assert data.images.min() == 0.0 and data.images.max() <= 1.0
    lit = (data.images[:, 0] > 0).sum(axis=(1, 2))
    assert lit.min() >= 10  # each image shows a shape
    assert data.images[:, 0, 0, :].max() == 0 and data.images[:, 0, -1, :].max() == 0
    # the classes look different: mean image of each class differs from the others
    means = np.stack([data.images[data.labels == c].mean(axis=0) for c in range(4)])
    distances = np.abs(means[:, None] - means[None, :]).sum(axis=(2, 3, 4))
    assert distances[~np.eye(4, dtype=bool)].min() > 1.0


def test_shapes_default_sizes_and_option_errors():
    assert len(load_dataset("shapes", "train")) == 2048
    assert len(load_dataset("shapes", "test")) == 512
    with pytest.raises(ValueError, match=r"n must be an int >= 0, got -1"):
        load_dataset("shapes", n=-1)
    with pytest.raises(TypeError):
        load_dataset("digits", n=5)  # only shapes takes n


# ---------------------------------------------------------------------------
# load_dataset options
# ---------------------------------------------------------------------------


def test_value_range_minus_one_one_maps_pixels_to_two_x_minus_one():
    unit = load_dataset("digits", "test")
    symmetric = load_dataset("digits", "test", value_range=(-1, 1))
    assert symmetric.value_range == (-1.0, 1.0)
    assert symmetric.images.dtype == np.float32
    np.testing.assert_allclose(symmetric.images, 2 * unit.images - 1, atol=1e-6)
    assert symmetric.images.min() == -1.0 and symmetric.images.max() == 1.0
    np.testing.assert_allclose(unscale_images(symmetric.images, (-1, 1)), unit.images, atol=1e-6)


def test_scale_images_rejects_an_empty_interval():
    with pytest.raises(ValueError, match=r"scale_images: value_range must have low < high"):
        scale_images(np.zeros(3), (1, 1))


def test_limit_keeps_the_first_images():
    full = load_dataset("shapes", n=20)
    short = load_dataset("shapes", n=20, limit=7)
    np.testing.assert_array_equal(short.images, full.images[:7])
    assert len(short) == 7


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (
            {"name": "cifar"},
            r"name must be one of \['digits', 'fashion-mnist', 'mnist', 'shapes'\]",
        ),
        ({"name": "digits", "split": "valid"}, r"split must be one of \('train', 'test'\)"),
        ({"name": "digits", "limit": -2}, r"limit must be an int >= 0 or None, got -2"),
        ({"name": "digits", "value_range": (0, 1, 2)}, r"value_range must be a pair"),
    ],
)
def test_load_dataset_rejects_bad_arguments_naming_them(kwargs, message):
    with pytest.raises(ValueError, match=message):
        load_dataset(**kwargs)


# ---------------------------------------------------------------------------
# DataLoader
# ---------------------------------------------------------------------------


@settings(derandomize=True, max_examples=40, deadline=None)
@given(
    n=st.integers(0, 50),
    batch_size=st.integers(1, 20),
    shuffle=st.booleans(),
    drop_last=st.booleans(),
)
def test_dataloader_yields_each_sample_once_per_epoch(n, batch_size, shuffle, drop_last):
    manual_seed(0)
    loader = DataLoader(np.arange(n), batch_size, shuffle=shuffle, drop_last=drop_last)
    for _ in range(2):  # two epochs
        batches = list(loader)
        assert len(batches) == len(loader)
        sizes = [len(b) for b in batches]
        assert all(size == batch_size for size in sizes[:-1])
        seen = np.concatenate(batches) if batches else np.zeros(0, dtype=np.int64)
        assert len(np.unique(seen)) == len(seen)  # no sample twice
        if drop_last:
            assert len(seen) == (n // batch_size) * batch_size
        else:
            np.testing.assert_array_equal(np.sort(seen), np.arange(n))  # every sample once
        if not shuffle:
            np.testing.assert_array_equal(seen, np.arange(len(seen)))


def test_dataloader_length_with_and_without_drop_last():
    assert len(DataLoader(np.zeros(10), batch_size=4)) == 3
    assert len(DataLoader(np.zeros(10), batch_size=4, drop_last=True)) == 2
    assert len(DataLoader(np.zeros(8), batch_size=4, drop_last=True)) == 2
    assert len(DataLoader(np.zeros(0), batch_size=4)) == 0


def test_dataloader_drop_last_drops_only_the_short_batch():
    batches = list(DataLoader(np.arange(10), batch_size=4, drop_last=True))
    assert [b.tolist() for b in batches] == [[0, 1, 2, 3], [4, 5, 6, 7]]
    batches = list(DataLoader(np.arange(10), batch_size=4))
    assert [b.tolist() for b in batches][-1] == [8, 9]


def test_dataloader_warns_when_drop_last_leaves_no_batch():
    with pytest.warns(UserWarning, match=r"drop_last=True with 3 samples and batch_size 4"):
        loader = DataLoader(np.zeros(3), batch_size=4, drop_last=True)
    assert list(loader) == []


def test_dataloader_shuffle_is_reproducible_from_the_seed_and_differs_between_epochs():
    loader = DataLoader(np.arange(100), batch_size=16, shuffle=True)

    def two_epochs():
        return [np.concatenate(list(loader)) for _ in range(2)]

    manual_seed(42)
    first = two_epochs()
    manual_seed(42)
    again = two_epochs()
    manual_seed(43)
    other = two_epochs()
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(first[0], first[1])  # a new order each epoch
    assert not np.array_equal(first[0], np.arange(100))  # actually shuffled
    assert not np.array_equal(first[0], other[0])  # the seed matters


def test_dataloader_draws_its_order_from_tinygens_generator_when_the_epoch_starts():
    manual_seed(5)
    expected = generator().permutation(30)
    manual_seed(5)
    iterator = iter(DataLoader(np.arange(30), batch_size=7, shuffle=True))
    state_after_iter = get_rng_state()
    np.testing.assert_array_equal(np.concatenate(list(iterator)), expected)
    assert get_rng_state() == state_after_iter  # the batches themselves draw nothing


def test_dataloader_epoch_replays_from_a_saved_generator_state():
    loader = DataLoader(np.arange(40), batch_size=8, shuffle=True)
    manual_seed(1)
    list(loader)  # epoch 0
    saved = get_rng_state()
    epoch1 = np.concatenate(list(loader))
    set_rng_state(saved)
    np.testing.assert_array_equal(np.concatenate(list(loader)), epoch1)


def test_dataloader_keeps_images_and_labels_aligned_when_shuffling():
    data = load_dataset("shapes", n=50, seed=1)
    manual_seed(0)
    for images, labels in DataLoader(data, batch_size=16, shuffle=True):
        assert images.shape[1:] == (1, 28, 28) and images.dtype == np.float32
        assert labels.dtype == np.int64 and len(images) == len(labels)
        for image, label in zip(images, labels):
            index = np.flatnonzero((data.images == image).all(axis=(1, 2, 3)))[0]
            assert data.labels[index] == label


def test_dataloader_batches_a_tuple_of_arrays_and_returns_copies():
    x = np.arange(12.0).reshape(6, 2)
    y = np.arange(6)
    (xb, yb), _ = list(DataLoader((x, y), batch_size=3))
    np.testing.assert_array_equal(xb, x[:3])
    np.testing.assert_array_equal(yb, y[:3])
    xb[:] = -1
    assert x.min() == 0  # writing into a batch leaves the dataset alone


@pytest.mark.parametrize(
    "args, error, message",
    [
        (
            ((np.zeros(3), np.zeros(4)),),
            ValueError,
            r"same number of samples .* \[\(3,\), \(4,\)\]",
        ),
        ((np.zeros(3), 0), ValueError, r"batch_size must be >= 1, got 0"),
        ((np.zeros(3), 2.0), TypeError, r"batch_size must be an int, got float"),
        ((np.zeros(3), True), TypeError, r"batch_size must be an int, got bool"),
        (({"x": 1},), TypeError, r"data must be a Dataset, a numpy array, or a non-empty tuple"),
        ((np.float32(1.0),), TypeError, r"data must be"),
        ((np.array(1.0),), ValueError, r"need at least one axis"),
    ],
)
def test_dataloader_rejects_bad_arguments_naming_them(args, error, message):
    with pytest.raises(error, match=r"^DataLoader: .*" + message):
        DataLoader(*args)
