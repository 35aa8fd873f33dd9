"""Datasets: digits, the real MNIST / Fashion-MNIST files, synthetic CIFAR-10 batches, labels, binarization,
pipelines, errors.

The bad-file tests corrupt copies of the real files in tmp_path (the shared originals are
only read, and checked against their SHA256SUMS afterwards).
"""

import functools
import gzip
import hashlib
import io
import os
import pickle
import re
import tarfile
import tempfile

import hypothesis
import hypothesis.extra.numpy as hnp
import hypothesis.strategies as st
import numpy as np
import pytest

from helpers import tree_digest
from keras_vae import data

SHARED_DATA = os.environ.get(
    data.ENV_VAR, os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data"))


def _shared(folder):
    """Path of a real dataset folder; in CI (CI=true) its absence is a failure, not a skip."""
    path = os.path.join(SHARED_DATA, folder)
    if not os.path.exists(os.path.join(path, "train-images-idx3-ubyte.gz")):
        message = f"real {folder} files not found under {SHARED_DATA} (set {data.ENV_VAR})"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return path


def test_digits_basics():
    splits = data.load("digits")
    assert (len(splits.train), len(splits.validation), len(splits.test)) == (1200, 297, 300)
    assert splits.input_shape == (8, 8, 1) and splits.train.dtype == np.float32
    for x in (splits.train, splits.validation, splits.test):
        assert x.min() == 0.0 and x.max() == 1.0
    # A fixed split: the same examples every time.
    np.testing.assert_array_equal(data.load("digits").test, splits.test)


def test_digits_labels_correctness():
    from sklearn.datasets import load_digits

    digits = load_digits()
    splits = data.load("digits", validation_size=100)
    assert splits.num_classes == 10
    # Every digits image is distinct: find each loaded image in scikit-learn's, and its target.
    index = {image.tobytes(): i for i, image in enumerate((digits.images / 16.0).astype(np.float32))}
    for x, y in ((splits.train, splits.train_labels), (splits.validation, splits.validation_labels),
                 (splits.test, splits.test_labels)):
        assert y.dtype == np.int64 and y.shape == (len(x),)
        np.testing.assert_array_equal(y, digits.target[[index[image[..., 0].tobytes()] for image in x]])
    first = index[splits.test[0, ..., 0].tobytes()]
    assert splits.test_labels[0] == digits.target[first]
    every = np.concatenate([splits.train_labels, splits.validation_labels, splits.test_labels])
    np.testing.assert_array_equal(np.bincount(every), np.bincount(digits.target))  # each example once
    # The validation cut is the same for images and labels; binarization leaves labels alone.
    default = data.load("digits", binarize="static")
    np.testing.assert_array_equal(np.concatenate([default.train_labels, default.validation_labels]),
                                  np.concatenate([splits.train_labels, splits.validation_labels]))
    np.testing.assert_array_equal(default.test_labels, splits.test_labels)


def test_splits_basics_and_errors():
    x = np.zeros((3, 2, 2, 1), np.float32)
    positional = data.Splits("custom", x, x[:1], x[:2], "static")  # the fields before the labels, as before
    assert positional.binarize == "static" and positional.num_classes is None
    assert positional.train_labels is positional.validation_labels is positional.test_labels is None
    labelled = data.Splits("custom", x, x[:1], x[:2], train_labels=np.array([0, 4, 1]), test_labels=np.array([2, 0]))
    assert labelled.num_classes == 5  # not a dataset of NUM_CLASSES: 1 + the largest label
    assert data.Splits("mnist", x, x[:1], x[:2], test_labels=np.array([2, 0])).num_classes == 10
    with pytest.raises(ValueError, match=re.escape("`validation_labels` must hold one label per validation example, "
                                                   "shape (1,). Received: shape (2,)")):
        data.Splits("custom", x, x[:1], x[:2], validation_labels=np.array([0, 1]))


# Class counts of the real files: MNIST's are well known; Fashion-MNIST is balanced.
_MNIST_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
_MNIST_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


@pytest.mark.parametrize("name, folder, mean, train_counts, test_counts", [
    ("mnist", "mnist", 0.13066, _MNIST_TRAIN_COUNTS, _MNIST_TEST_COUNTS),
    ("fashion_mnist", "fashion-mnist", 0.2860, [6000] * 10, [1000] * 10),
])
def test_real_mnist_like_files(name, folder, mean, train_counts, test_counts):
    splits = data.load(name, data_dir=_shared(folder))
    assert splits.train.shape == (50000, 28, 28, 1) and splits.validation.shape == (10000, 28, 28, 1)
    assert splits.test.shape == (10000, 28, 28, 1)
    full_train = np.concatenate([splits.train, splits.validation])
    # Mean pixel intensity of the training set, as recorded in shared/data/*/PROVENANCE.md.
    np.testing.assert_allclose(full_train.mean(), mean, atol=5e-5)
    assert splits.num_classes == 10
    assert splits.train_labels.shape == (50000,) and splits.validation_labels.shape == (10000,)
    assert splits.test_labels.shape == (10000,) and splits.test_labels.dtype == np.int64
    full_train_labels = np.concatenate([splits.train_labels, splits.validation_labels])
    assert np.bincount(full_train_labels).tolist() == train_counts
    assert np.bincount(splits.test_labels).tolist() == test_counts


def test_env_var_root_and_burda_split(monkeypatch):
    _shared("mnist")
    monkeypatch.setenv(data.ENV_VAR, SHARED_DATA)
    splits = data.load("mnist", validation_size=400, binarize="dynamic")
    assert (len(splits.train), len(splits.validation), len(splits.test)) == (59600, 400, 10000)
    assert splits.dynamic
    assert set(np.unique(splits.test)) == {0.0, 1.0}  # evaluation splits binarized once
    assert len(np.unique(splits.train)) > 2  # training intensities, binarized per batch
    # The test set is binarized with a fixed seed: the same for every run.
    np.testing.assert_array_equal(data.load("mnist", validation_size=400, binarize="dynamic").test, splits.test)
    # Labels: the 59,600 training labels then the 400 validation ones are the training label file, in order.
    real = _real_mnist()
    assert (len(splits.train_labels), len(splits.validation_labels)) == (59600, 400)
    np.testing.assert_array_equal(np.concatenate([splits.train_labels, splits.validation_labels]), real["y_train"])
    np.testing.assert_array_equal(splits.test_labels, real["y_test"])
    assert splits.test_labels[:4].tolist() == [7, 2, 1, 0]  # the first test images are a 7, a 2, a 1 and a 0
    # ... and each lines up with its image (labels are untouched by the binarization of the images).
    np.testing.assert_array_equal(data.load("mnist", validation_size=400).validation[..., 0],
                                  real["x_train"][59600:] / np.float32(255))


def test_mnist_images_without_label_files(tmp_path):
    _only(TRAIN_IMAGES, TEST_IMAGES)(tmp_path)
    splits = data.load("mnist", data_dir=str(tmp_path))
    assert splits.train_labels is None and splits.validation_labels is None and splits.test_labels is None
    assert splits.num_classes is None and len(splits.test) == 10000
    # A label file for one split only: that split has labels, the other none.
    (tmp_path / TRAIN_LABELS).write_bytes(_shared_bytes(TRAIN_LABELS))
    splits = data.load("mnist", data_dir=str(tmp_path), validation_size=400)
    np.testing.assert_array_equal(splits.validation_labels, _real_mnist()["y_train"][-400:])
    assert splits.test_labels is None and splits.num_classes == 10


def test_keras_npz_and_plain_idx(tmp_path):
    rng = np.random.default_rng(0)
    x_train = rng.integers(0, 256, (30, 28, 28), dtype=np.uint8)
    x_test = rng.integers(0, 256, (10, 28, 28), dtype=np.uint8)
    y_train, y_test = rng.integers(0, 10, 30, dtype=np.uint8), np.arange(10.0)  # float labels: whole numbers
    np.savez(tmp_path / "mnist.npz", x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    splits = data.load("mnist", data_dir=str(tmp_path), validation_size=5)
    np.testing.assert_allclose(splits.test[..., 0], x_test / 255.0, rtol=1e-6)
    np.testing.assert_allclose(splits.validation[..., 0], x_train[25:] / 255.0, rtol=1e-6)
    np.testing.assert_array_equal(splits.validation_labels, y_train[25:])
    np.testing.assert_array_equal(splits.train_labels, y_train[:25])
    assert splits.test_labels.dtype == np.int64 and splits.test_labels.tolist() == list(range(10))
    np.savez(tmp_path / "mnist.npz", x_train=x_train, x_test=x_test)  # y_train and y_test are optional
    unlabelled = data.load("mnist", data_dir=str(tmp_path), validation_size=5)
    assert unlabelled.train_labels is None and unlabelled.test_labels is None and unlabelled.num_classes is None
    # The IDX reader on a file written here: magic 0x00000803, dims, bytes.
    header = bytes([0, 0, 8, 3]) + b"".join(int(d).to_bytes(4, "big") for d in x_test.shape)
    with gzip.open(tmp_path / "t.idx3-ubyte.gz", "wb") as f:
        f.write(header + x_test.tobytes())
    np.testing.assert_array_equal(data.read_idx(str(tmp_path / "t.idx3-ubyte.gz")), x_test)
    with gzip.open(tmp_path / "short.gz", "wb") as f:
        f.write(header + x_test.tobytes()[:-1])
    with pytest.raises(ValueError, match="truncated"):
        data.read_idx(str(tmp_path / "short.gz"))


def test_binarization():
    x = np.full((2000, 8), 0.3, np.float32)
    b = data.binarize_array(x, seed=1)
    assert set(np.unique(b)) == {0.0, 1.0}
    np.testing.assert_allclose(b.mean(), 0.3, atol=0.01)
    np.testing.assert_array_equal(data.binarize_array(x, seed=1), b)
    static = data.load("digits", binarize="static")
    assert set(np.unique(static.train)) == {0.0, 1.0} and not static.dynamic


def test_dynamic_pipeline_redraws_every_epoch_and_repeats_with_seed():
    x = np.full((64, 4), 0.5, np.float32)
    ds = data.make_dataset(x, 16, shuffle=True, binarize=True, seed=3)
    first = np.concatenate([b.numpy() for b in ds])
    second = np.concatenate([b.numpy() for b in ds])
    assert first.shape == (64, 4) and set(np.unique(first)) == {0.0, 1.0}
    assert not np.array_equal(first, second)  # a fresh draw each epoch
    np.testing.assert_allclose(first.mean(), 0.5, atol=0.08)
    again = data.make_dataset(x, 16, shuffle=True, binarize=True, seed=3)
    np.testing.assert_array_equal(np.concatenate([b.numpy() for b in again]), first)


def test_shuffle_keeps_every_example():
    x = np.arange(100, dtype=np.float32)[:, None] / 100
    batches = [b.numpy() for b in data.make_dataset(x, 32, shuffle=True, seed=0)]
    assert [len(b) for b in batches] == [32, 32, 32, 4]
    np.testing.assert_array_equal(np.sort(np.concatenate(batches)[:, 0]), x[:, 0])


def test_errors(tmp_path):
    with pytest.raises(ValueError, match="Unknown dataset 'cifar'; expected one of digits, mnist, fashion_mnist"):
        data.load("cifar")
    with pytest.raises(FileNotFoundError, match=f"--data_dir={tmp_path} holds no mnist data"):
        data.load("mnist", data_dir=str(tmp_path))
    with pytest.raises(ValueError, match="validation_size"):
        data.load("digits", validation_size=5000)
    with pytest.raises(ValueError, match="`binarize` must be one of"):
        data.load("digits", binarize="sometimes")
    with pytest.raises(ValueError, match="`batch_size` must be a positive integer"):
        data.make_dataset(np.zeros((4, 2)), 0)



# ------------------------------------------------------------------ bad files
MNIST_FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
               "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")
TRAIN_IMAGES, TRAIN_LABELS, TEST_IMAGES, TEST_LABELS = MNIST_FILES


def _idx_bytes(x):
    """x as an unsigned-byte IDX file: magic 0x000008NN, the NN sizes (big-endian), the bytes."""
    return bytes([0, 0, 8, x.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in x.shape) + x.tobytes()


def _write_idx(path, x):
    content = _idx_bytes(np.asarray(x, np.uint8))
    with open(path, "wb") as f:
        f.write(gzip.compress(content, mtime=0) if str(path).endswith(".gz") else content)


def _shared_bytes(file, folder="mnist"):
    with open(os.path.join(_shared(folder), file), "rb") as f:
        return f.read()


@functools.cache
def _real_mnist():
    """The real MNIST arrays, by their keras.datasets names: x_train, y_train, x_test, y_test. Decoded here,
    not by data.read_idx (under test): gunzip, skip the fixed IDX header (16 bytes for images, 8 for labels)."""
    def decode(file, header, shape):
        return np.frombuffer(gzip.decompress(_shared_bytes(file)), np.uint8, offset=header).reshape(shape)

    return {"x_train": decode(TRAIN_IMAGES, 16, (60000, 28, 28)), "y_train": decode(TRAIN_LABELS, 8, (60000,)),
            "x_test": decode(TEST_IMAGES, 16, (10000, 28, 28)), "y_test": decode(TEST_LABELS, 8, (10000,))}


def _assert_shared_untouched(folder):
    """The shared originals still match their SHA256SUMS."""
    with open(os.path.join(SHARED_DATA, folder, "SHA256SUMS")) as f:
        for line in f:
            digest, name = line.split()
            assert hashlib.sha256(_shared_bytes(name, folder)).hexdigest() == digest, name


# Corruptions: each fills an empty folder with (damaged) copies of the real MNIST data.
def _gz(file, edit):
    """Copies of the real IDX .gz files, the bytes of `file` replaced by edit(bytes)."""
    def corrupt(folder):
        for name in MNIST_FILES:
            (folder / name).write_bytes(_shared_bytes(name))
        (folder / file).write_bytes(edit((folder / file).read_bytes()))
    return corrupt


def _idx(file, edit):
    """Copies of the real IDX .gz files, the IDX content of `file` replaced by edit(content), gzipped again."""
    return _gz(file, lambda raw: gzip.compress(edit(gzip.decompress(raw)), compresslevel=1, mtime=0))


def _npz(edit=None, **changes):
    """A keras.datasets-style mnist.npz of the real arrays; `changes` map a name to a function of the
    real arrays giving its new value (None: leave it out); `edit` then damages the file's bytes."""
    def corrupt(folder):
        real = _real_mnist()
        arrays = {**real, **{name: change(real) for name, change in changes.items()}}
        buffer = io.BytesIO()
        np.savez(buffer, **{name: x for name, x in arrays.items() if x is not None})
        (folder / "mnist.npz").write_bytes((edit or (lambda raw: raw))(buffer.getvalue()))
    return corrupt


def _only(*files):
    """Copies of some of the real IDX .gz files."""
    def corrupt(folder):
        for name in files:
            (folder / name).write_bytes(_shared_bytes(name))
    return corrupt


def _flip(raw, count=16):
    """raw with `count` bytes in its middle inverted."""
    middle = len(raw) // 2
    return raw[:middle] + bytes(b ^ 0xFF for b in raw[middle:middle + count]) + raw[middle + count:]


def _directory_named(file):
    """Copies of the real files, `file` replaced by a directory: open() fails whoever runs the tests."""
    def corrupt(folder):
        _gz(file, lambda raw: raw)(folder)
        os.remove(folder / file)
        os.mkdir(folder / file)
    return corrupt


def _downsampled(content):
    images = np.frombuffer(content, np.uint8, offset=16).reshape(-1, 28, 28)
    return _idx_bytes(np.ascontiguousarray(images[:, ::2, ::2]))


def _out_of_range(real):
    x = real["x_train"].astype(np.int16)
    x[7, 14, 14] = 300
    return x


_MAGIC = "expected magic number"
# (id, corruption, error, message fragment, the file the message names)
BAD_FILES = [
    ("truncated_gz", _gz(TRAIN_IMAGES, lambda raw: raw[: len(raw) // 2]), ValueError,
     "is not a valid, complete gzip file (Compressed file ended before the end-of-stream marker", TRAIN_IMAGES),
    ("flipped_gz_bytes", _gz(TEST_IMAGES, _flip), ValueError, "is not a valid, complete gzip file (", TEST_IMAGES),
    ("gunzipped_but_named_gz", _gz(TEST_LABELS, gzip.decompress), ValueError,
     "is not a valid, complete gzip file (Not a gzipped file", TEST_LABELS),
    ("html_error_page", _gz(TRAIN_LABELS, lambda raw: b"<!DOCTYPE html><title>404 Not Found</title>"), ValueError,
     "is not a valid, complete gzip file (Not a gzipped file", TRAIN_LABELS),
    ("labels_as_images", _gz(TRAIN_IMAGES, lambda raw: _shared_bytes(TRAIN_LABELS)), ValueError,
     f"is not an IDX image file: {_MAGIC} 2051 (0x00000803), found 2049 (0x00000801)", TRAIN_IMAGES),
    ("images_as_labels", _gz(TEST_LABELS, lambda raw: _shared_bytes(TEST_IMAGES)), ValueError,
     f"is not an IDX label file: {_MAGIC} 2049 (0x00000801), found 2051 (0x00000803)", TEST_LABELS),
    ("float_dtype_code", _idx(TEST_IMAGES, lambda content: content[:2] + b"\x0d" + content[3:]), ValueError,
     f"is not an IDX image file: {_MAGIC} 2051 (0x00000803), found 3331 (0x00000d03)", TEST_IMAGES),
    ("wrong_ndim", _idx(TEST_IMAGES, lambda content: content[:3] + b"\x04" + content[4:]), ValueError,
     f"is not an IDX image file: {_MAGIC} 2051 (0x00000803), found 2052 (0x00000804)", TEST_IMAGES),
    ("header_cut_short", _idx(TEST_IMAGES, lambda content: content[:10]), ValueError,
     "is truncated: its 3-D IDX header needs 16 bytes, found 10", TEST_IMAGES),
    ("payload_cut_short", _idx(TEST_IMAGES, lambda content: content[:-100]), ValueError,
     "is truncated: its header says shape (10000, 28, 28), so 7840000 bytes of data; found 7839900", TEST_IMAGES),
    ("trailing_bytes", _idx(TEST_IMAGES, lambda content: content + bytes(16)), ValueError,
     "has trailing bytes: its header says shape (10000, 28, 28), so 7840000 bytes of data; found 7840016",
     TEST_IMAGES),
    ("header_count_too_big", _idx(TEST_IMAGES, lambda c: c[:4] + (10001).to_bytes(4, "big") + c[8:]), ValueError,
     "is truncated: its header says shape (10001, 28, 28)", TEST_IMAGES),
    ("label_count_mismatch", _gz(TEST_LABELS, lambda raw: _shared_bytes(TRAIN_LABELS)), ValueError,
     f"{TEST_IMAGES} holds 10000 images but", TEST_LABELS),
    ("zero_examples", _idx(TEST_IMAGES, lambda content: content[:4] + bytes(4) + content[8:16]), ValueError,
     "is empty: expected images of shape (N, H, W), N >= 1; found shape (0, 28, 28)", TEST_IMAGES),
    ("splits_of_different_sizes", _idx(TEST_IMAGES, _downsampled), ValueError,
     "do not match: training images are (28, 28), test images (14, 14)", ""),
    ("unreadable_file", _directory_named(TEST_LABELS), IsADirectoryError, "Is a directory", TEST_LABELS),
    ("npz_truncated", _npz(lambda raw: raw[: len(raw) // 2]), ValueError,
     "is not a readable .npz archive (File is not a zip file)", "mnist.npz"),
    ("npz_flipped_bytes", _npz(_flip), ValueError, "is not a readable .npz archive (Bad CRC-32", "mnist.npz"),
    ("npz_not_a_zip", _npz(lambda raw: b"\x93NUMPY" + raw), ValueError,
     "is not a readable .npz archive (no zip signature)", "mnist.npz"),
    ("npz_missing_key", _npz(x_test=lambda real: None), ValueError,
     "has no x_test array: expected x_train and x_test (optionally y_train and y_test) as in keras.datasets.mnist; "
     "found ['x_train', 'y_train', 'y_test']", "mnist.npz"),
    ("npz_object_array", _npz(x_test=lambda real: np.array([[[0]]], dtype=object)), ValueError,
     "is not a readable .npz archive (Object arrays cannot be loaded when allow_pickle=False)", "mnist.npz"),
    ("npz_flat_images", _npz(x_test=lambda real: real["x_test"].reshape(-1, 784)), ValueError,
     "x_test in {path} is 2-D: expected images of shape (N, H, W), N >= 1; found shape (10000, 784)", "mnist.npz"),
    ("npz_float_pixels", _npz(x_train=lambda real: real["x_train"] / np.float32(255)), ValueError,
     "x_train in {path} has dtype float32: expected uint8 pixel values in [0, 255]", "mnist.npz"),
    ("npz_pixels_out_of_range", _npz(x_train=_out_of_range), ValueError,
     "x_train in {path} has pixel values in [0, 300]: expected uint8 values in [0, 255]", "mnist.npz"),
    ("npz_label_count_mismatch", _npz(y_test=lambda real: real["y_test"][:-1]), ValueError,
     "x_test in {path} holds 10000 images but y_test has labels of shape (9999,)", "mnist.npz"),
    ("npz_zero_examples", _npz(x_test=lambda real: real["x_test"][:0], y_test=lambda real: None), ValueError,
     "x_test in {path} is empty", "mnist.npz"),
    ("npz_splits_of_different_sizes", _npz(x_test=lambda real: np.ascontiguousarray(real["x_test"][:, 2:, 2:])),
     ValueError, "do not match: training images are (28, 28), test images (26, 26)", ""),
    ("label_out_of_range", _idx(TEST_LABELS, lambda content: content[:9] + bytes([10]) + content[10:]), ValueError,
     "has label 10 at index 1: expected class labels, whole numbers in [0, 10)", TEST_LABELS),
    ("npz_fractional_labels", _npz(y_train=lambda real: real["y_train"] + 0.5), ValueError,
     "y_train in {path} has label 5.5 at index 0: expected class labels, whole numbers in [0, 10)", "mnist.npz"),
    ("npz_negative_labels", _npz(y_test=lambda real: real["y_test"].astype(np.int64) - 1), ValueError,
     "y_test in {path} has label -1 at index 3: expected class labels", "mnist.npz"),
    ("npz_text_labels", _npz(y_test=lambda real: real["y_test"].astype(str)), ValueError,
     "y_test in {path} has labels of dtype <U3 and shape (10000,): expected class labels", "mnist.npz"),
    ("none_of_the_expected_files", _only(TRAIN_IMAGES, TRAIN_LABELS), FileNotFoundError,
     "holds no mnist data: expected train-images-idx3-ubyte.gz and t10k-images-idx3-ubyte.gz, or mnist.npz", ""),
]


@pytest.mark.parametrize("corrupt, error, fragment, culprit", [case[1:] for case in BAD_FILES],
                         ids=[case[0] for case in BAD_FILES])
def test_bad_files_errors(tmp_path, monkeypatch, corrupt, error, fragment, culprit):
    folder = tmp_path / "mnist"
    folder.mkdir()
    corrupt(folder)
    keras_home = tmp_path / "keras_home"  # where a download would go
    monkeypatch.setenv("KERAS_HOME", str(keras_home))
    before = tree_digest(folder)
    with pytest.raises(error) as raised:
        data.load("mnist", data_dir=str(folder))
    message = str(raised.value)
    path = str(folder / culprit) if culprit else str(folder)
    assert fragment.format(path=path) in message
    assert path in message and "\n" not in message
    assert tree_digest(folder) == before  # nothing written, nothing changed
    assert not keras_home.exists()  # no fallback to a download
    _assert_shared_untouched("mnist")


def test_bad_fashion_mnist_file(tmp_path):
    for name in MNIST_FILES:
        (tmp_path / name).write_bytes(_shared_bytes(name, "fashion-mnist"))
    with open(tmp_path / TRAIN_IMAGES, "r+b") as f:
        f.truncate(1000)
    with pytest.raises(ValueError, match=re.escape(f"{tmp_path / TRAIN_IMAGES} is not a valid, complete gzip")):
        data.load("fashion_mnist", data_dir=str(tmp_path))
    _assert_shared_untouched("fashion-mnist")


# ------------------------------------------------------------------ properties
_PROPERTIES = hypothesis.settings(max_examples=40, deadline=None, derandomize=True)
_FUZZ = hypothesis.settings(_PROPERTIES, max_examples=100)
_IMAGES = hnp.arrays(np.uint8, hnp.array_shapes(min_dims=3, max_dims=3, min_side=1, max_side=5))


@_PROPERTIES
@hypothesis.given(images=_IMAGES, labels=st.data())
def test_idx_round_trip(images, labels):
    labels = labels.draw(hnp.arrays(np.uint8, len(images), elements=st.integers(0, 9)))
    with tempfile.TemporaryDirectory() as folder:
        for name, x in zip(MNIST_FILES, (images, labels, images[::-1], labels[::-1])):
            _write_idx(os.path.join(folder, name), x)
        _write_idx(os.path.join(folder, "plain.idx"), images)
        np.testing.assert_array_equal(data.read_idx(os.path.join(folder, "plain.idx")), images)
        np.testing.assert_array_equal(data.read_idx(os.path.join(folder, TRAIN_IMAGES)), images)
        np.testing.assert_array_equal(data.read_idx(os.path.join(folder, TRAIN_LABELS)), labels)
        splits = data.load("mnist", data_dir=folder, validation_size=0)
    np.testing.assert_array_equal(splits.train[..., 0], images / np.float32(255))
    np.testing.assert_array_equal(splits.test[..., 0], images[::-1] / np.float32(255))
    np.testing.assert_array_equal(splits.train_labels, labels)
    np.testing.assert_array_equal(splits.test_labels, labels[::-1])


_VALID = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4) * 10
_VALID_IDX = _idx_bytes(_VALID)
_VALID_GZ = gzip.compress(_VALID_IDX, mtime=0)


def _damaged(valid):
    """Truncations, 1-4 byte changes and appended bytes of `valid`."""
    def changed(changes):
        raw = bytearray(valid)
        for position, xor in changes:
            raw[position] ^= xor
        return bytes(raw)
    return st.one_of(
        st.integers(0, len(valid) - 1).map(lambda n: valid[:n]),
        st.lists(st.tuples(st.integers(0, len(valid) - 1), st.integers(1, 255)), min_size=1, max_size=4).map(changed),
        st.binary(min_size=1, max_size=8).map(lambda extra: valid + extra),
    )


def _write(path, content):
    with open(path, "wb") as f:
        f.write(content)
    return path


def _read_or_reject(path, read=data.read_idx):
    """read(path), or None if it raised its ValueError or an OSError (anything else fails the test)."""
    try:
        x = read(path)
    except (ValueError, OSError) as error:
        assert str(path) in str(error) and "\n" not in str(error)
        hypothesis.event(f"rejected: {type(error).__name__}")
        return None
    hypothesis.event("accepted")
    return x


@_FUZZ
@hypothesis.given(content=st.one_of(_damaged(_VALID_IDX), st.binary(max_size=64)))
def test_read_idx_damaged_plain_file(content):
    with tempfile.TemporaryDirectory() as folder:
        x = _read_or_reject(_write(os.path.join(folder, "x.idx"), content))
    if x is not None:  # accepted: the file is exactly the IDX encoding of what was read
        assert x.dtype == np.uint8 and _idx_bytes(x) == content


@_FUZZ
@hypothesis.given(content=_damaged(_VALID_GZ), arbitrary=st.binary(max_size=64))
def test_read_idx_damaged_gz_file(content, arbitrary):
    with tempfile.TemporaryDirectory() as folder:
        x = _read_or_reject(_write(os.path.join(folder, "x.gz"), content))
        _read_or_reject(_write(os.path.join(folder, "y.gz"), arbitrary))
    if x is not None:  # gzip's CRC-32 and length check: damage is caught, or was harmless (mtime, padding)
        np.testing.assert_array_equal(x, _VALID)


_SMALL_NPZ = io.BytesIO()
np.savez(_SMALL_NPZ, x_train=_VALID, y_train=np.arange(2), x_test=_VALID[::-1], y_test=np.arange(2))


@_FUZZ
@hypothesis.given(content=_damaged(_SMALL_NPZ.getvalue()))
def test_damaged_npz(content):
    with tempfile.TemporaryDirectory() as folder:
        _write(os.path.join(folder, "mnist.npz"), content)
        try:
            splits = data.load("mnist", data_dir=folder, validation_size=0)
        except (ValueError, OSError) as error:
            assert "mnist.npz" in str(error) and "\n" not in str(error)
            hypothesis.event(f"rejected: {type(error).__name__}")
            return
    hypothesis.event("accepted")
    # zip's CRC-32 catches damage to the arrays; what got through must be the original.
    np.testing.assert_array_equal(splits.train[..., 0], _VALID / np.float32(255))
    np.testing.assert_array_equal(splits.test[..., 0], _VALID[::-1] / np.float32(255))
    # Labels are optional in the format: damage to a y_* name in the zip directory drops them.
    assert all(labels is None or labels.tolist() == [0, 1] for labels in (splits.train_labels, splits.test_labels))


# ------------------------------------------------------------------ CIFAR-10
# No CIFAR-10 files exist here: these tests write small files in the real format, the
# pickled dict of a python batch (b"data": uint8 [N, 3072], rows of red, green and blue
# 32x32 planes, b"labels": N ints), as folders, `cifar-10-batches-py/` and the .tar.gz.
CIFAR_NAMES = tuple(f"data_batch_{i}" for i in range(1, 6)) + ("test_batch",)


def _cifar_images(seed, count=3):
    return np.random.default_rng(seed).integers(0, 256, (count, 32, 32, 3), dtype=np.uint8)


def _cifar_batch(images, labels=None, legacy=False, **extra):
    """A python batch's bytes; `legacy` spells numpy's module as numpy < 2 did (the real files')."""
    batch = {b"batch_label": b"synthetic batch", b"data": images.transpose(0, 3, 1, 2).reshape(len(images), 3072),
             b"labels": list(range(len(images))) if labels is None else labels,
             b"filenames": [b"image_%d.png" % i for i in range(len(images))], **extra}
    raw = pickle.dumps(batch, protocol=3)  # GLOBAL opcodes name modules as text, as in protocol 2 files
    return raw.replace(b"numpy._core.multiarray", b"numpy.core.multiarray") if legacy else raw


def _cifar_contents(legacy=False):
    """{name: bytes} of five training batches (3 images each) and a test batch (4 images)."""
    return {name: _cifar_batch(_cifar_images(i, 4 if name == "test_batch" else 3), legacy=legacy)
            for i, name in enumerate(CIFAR_NAMES)}


def _write_cifar(folder, contents=None, layout="folder"):
    """Write the batches into `folder`: as files (`"files"`), `cifar-10-batches-py/` or the archive."""
    contents = _cifar_contents() if contents is None else contents
    folder.mkdir(parents=True, exist_ok=True)
    if layout == "archive":
        with tarfile.open(folder / "cifar-10-python.tar.gz", "w:gz") as archive:
            for name, raw in contents.items():
                info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
                info.size = len(raw)
                archive.addfile(info, io.BytesIO(raw))
        return folder
    target = folder / "cifar-10-batches-py" if layout == "folder" else folder
    target.mkdir(exist_ok=True)
    for name, raw in contents.items():
        (target / name).write_bytes(raw)
    return folder


def _expected_cifar():
    train = np.concatenate([_cifar_images(i) for i in range(5)]) / np.float32(255)
    return train, _cifar_images(5, 4) / np.float32(255)


@pytest.fixture
def no_cifar_download(tmp_path, monkeypatch):
    """An empty Keras cache and a download that fails, counted."""
    import keras

    calls = []

    def fail():
        calls.append(1)
        raise OSError("no network")

    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras_home"))
    monkeypatch.delenv(data.ENV_VAR, raising=False)
    monkeypatch.setattr(keras.datasets.cifar10, "load_data", fail)
    return calls


@pytest.mark.parametrize("layout, legacy", [("folder", False), ("files", False), ("archive", False),
                                            ("folder", True), ("archive", True)])
def test_cifar10_basics(tmp_path, no_cifar_download, layout, legacy):
    folder = _write_cifar(tmp_path / "cifar", _cifar_contents(legacy), layout)
    splits = data.load("cifar10", data_dir=str(folder), validation_size=5)
    train, test = _expected_cifar()
    assert splits.input_shape == (32, 32, 3) and splits.train.dtype == np.float32
    assert (len(splits.train), len(splits.validation), len(splits.test)) == (10, 5, 4)
    np.testing.assert_array_equal(splits.train, train[:10])
    np.testing.assert_array_equal(splits.validation, train[10:])
    np.testing.assert_array_equal(splits.test, test)
    # Each batch's b"labels" here are 0, 1, 2 (the test batch's 0 ... 3), in the order of its images.
    assert splits.train_labels.tolist() == [0, 1, 2] * 3 + [0]
    assert splits.validation_labels.tolist() == [1, 2, 0, 1, 2] and splits.test_labels.tolist() == [0, 1, 2, 3]
    assert splits.train_labels.dtype == np.int64 and splits.num_classes == 10
    assert not no_cifar_download


def test_cifar10_labels_optional(tmp_path, no_cifar_download):
    contents = _cifar_contents()
    contents["test_batch"] = pickle.dumps({b"data": _cifar_images(5, 4).transpose(0, 3, 1, 2).reshape(4, 3072)})
    splits = data.load("cifar10", data_dir=str(_write_cifar(tmp_path / "cifar", contents)), validation_size=5)
    assert splits.test_labels is None and splits.validation_labels.tolist() == [1, 2, 0, 1, 2]


def test_cifar10_pixel_layout(tmp_path):
    """Row i of b"data" holds image i's red plane, then green, then blue, each row-major."""
    data_row = np.arange(3072, dtype=np.int64) % 251
    raw = pickle.dumps({b"data": data_row.astype(np.uint8)[None], b"labels": [0]}, protocol=3)
    (tmp_path / "batch").write_bytes(raw)
    image = data.read_cifar_batch(str(tmp_path / "batch"))
    assert image.shape == (1, 32, 32, 3) and image.dtype == np.uint8
    for row, column, channel in ((0, 0, 0), (0, 1, 0), (1, 0, 0), (5, 7, 1), (31, 31, 2)):
        assert image[0, row, column, channel] == data_row[channel * 1024 + row * 32 + column]


def test_cifar10_lookup_order(tmp_path, monkeypatch, no_cifar_download):
    env_root, cache = tmp_path / "env", tmp_path / "keras_home" / "datasets"
    # Keras 3 extracts its download to ~/.keras/datasets/cifar-10-batches-py-target/cifar-10-batches-py/.
    _write_cifar(cache / "cifar-10-batches-py-target", {
        name: _cifar_batch(np.full((3, 32, 32, 3), 255, np.uint8)) for name in CIFAR_NAMES})
    assert data.load("cifar10", validation_size=1).test.min() == 1.0  # the Keras cache
    _write_cifar(env_root / "cifar-10", layout="archive")
    monkeypatch.setenv(data.ENV_VAR, str(env_root))
    np.testing.assert_array_equal(data.load("cifar10", validation_size=1).test, _expected_cifar()[1])  # env first
    data_dir = _write_cifar(tmp_path / "given", {name: _cifar_batch(np.zeros((2, 32, 32, 3), np.uint8))
                                                 for name in CIFAR_NAMES})
    assert data.load("cifar10", data_dir=str(data_dir), validation_size=1).test.max() == 0.0  # data_dir first
    assert not no_cifar_download


def test_cifar10_download_is_the_last_resort(tmp_path, monkeypatch, no_cifar_download):
    import keras

    with pytest.raises(FileNotFoundError, match="No cifar10 data found .* download failed \\(OSError\\)") as raised:
        data.load("cifar10")
    assert str(tmp_path / "keras_home" / "datasets") in str(raised.value) and len(no_cifar_download) == 1
    images, labels = _cifar_images(0, 6), np.array([[3], [1], [4], [1], [5], [9]], np.uint8)  # Keras's [N, 1]
    monkeypatch.setattr(keras.datasets.cifar10, "load_data", lambda: ((images, labels), (images[:2], labels[:2])))
    splits = data.load("cifar10", validation_size=2)
    np.testing.assert_array_equal(splits.test, images[:2] / np.float32(255))
    assert splits.train_labels.tolist() == [3, 1, 4, 1] and splits.validation_labels.tolist() == [5, 9]
    assert splits.test_labels.tolist() == [3, 1]
    with pytest.raises(ValueError, match=r"`validation_size` must be in \[0, 6\) for cifar10"):
        data.load("cifar10")  # the default 5000 needs the real 50000 training images


def _pwned(marker):
    class Gadget:
        def __reduce__(self):
            return os.makedirs, (marker,)
    return Gadget()


def _replace_batch(name, raw):
    def corrupt(folder, marker):
        contents = _cifar_contents()
        contents[name] = raw(marker) if callable(raw) else raw
        _write_cifar(folder, contents, layout="files")
        return folder / name
    return corrupt


def _archive(change):
    def corrupt(folder, marker):
        _write_cifar(folder, layout="archive")
        path = folder / "cifar-10-python.tar.gz"
        path.write_bytes(change(path.read_bytes()))
        return path
    return corrupt


def _archive_without(name):
    def corrupt(folder, marker):
        _write_cifar(folder, {key: raw for key, raw in _cifar_contents().items() if key != name}, layout="archive")
        return folder / "cifar-10-python.tar.gz"
    return corrupt


def _missing(name):
    def corrupt(folder, marker):
        _write_cifar(folder, layout="folder")
        os.remove(folder / "cifar-10-batches-py" / name)
        return folder / "cifar-10-batches-py" / name
    return corrupt


_IMAGES3 = _cifar_images(0)
BAD_CIFAR_FILES = [
    ("html_error_page", _replace_batch("data_batch_2", b"<!DOCTYPE html><title>404 Not Found</title>"), ValueError,
     "is not a CIFAR-10 python batch (UnpicklingError"),
    ("truncated", _replace_batch("test_batch", _cifar_batch(_IMAGES3)[:5000]), ValueError,
     "is not a CIFAR-10 python batch ("),
    ("code_in_the_pickle", _replace_batch("data_batch_1", lambda marker: pickle.dumps({b"data": _pwned(marker)})),
     ValueError, "refusing to load the global os.makedirs"),
    ("a_list", _replace_batch("data_batch_4", pickle.dumps([1, 2, 3])), ValueError,
     "is not a CIFAR-10 python batch: found a list; expected a pickled dict"),
    ("no_data_key", _replace_batch("data_batch_3", pickle.dumps({b"labels": [1]})), ValueError,
     "found a dict with keys [b'labels']"),
    ("float_pixels", _replace_batch("data_batch_5", pickle.dumps({b"data": np.zeros((2, 3072))})), ValueError,
     'has b"data" of dtype float64 and shape (2, 3072): expected uint8 images of shape (N, 3072)'),
    ("grey_images", _replace_batch("test_batch", pickle.dumps({b"data": np.zeros((2, 1024), np.uint8)})),
     ValueError, 'has b"data" of dtype uint8 and shape (2, 1024)'),
    ("empty", _replace_batch("test_batch", pickle.dumps({b"data": np.zeros((0, 3072), np.uint8)})), ValueError,
     "is empty"),
    ("label_count_mismatch", _replace_batch("data_batch_1", _cifar_batch(_IMAGES3, labels=[0, 1])), ValueError,
     "holds 3 images but 2 labels: expected one label per image"),
    ("label_out_of_range", _replace_batch("data_batch_2", _cifar_batch(_IMAGES3, labels=[0, 10, 1])), ValueError,
     "has label 10 at index 1: expected class labels, whole numbers in [0, 10)"),
    ("text_labels", _replace_batch("test_batch", _cifar_batch(_IMAGES3, labels=[b"cat", b"dog", b"cat"])),
     ValueError, "has labels of dtype |S3 and shape (3,): expected class labels"),
    ("ragged_labels", _replace_batch("test_batch", _cifar_batch(_IMAGES3, labels=[0, [1, 2], 3])), ValueError,
     "has labels that do not form an array: expected class labels"),
    ("archive_truncated", _archive(lambda raw: raw[: len(raw) // 2]), ValueError,
     "is not a readable .tar.gz archive ("),
    ("archive_not_gzip", _archive(lambda raw: b"PK\x03\x04" + raw[4:]), ValueError,
     "is not a readable .tar.gz archive ("),
    ("archive_member_missing", _archive_without("data_batch_5"), ValueError,
     "has no file cifar-10-batches-py/data_batch_5: expected the cifar-10-python.tar.gz"),
    ("batch_missing", _missing("data_batch_3"), FileNotFoundError, "Incomplete CIFAR-10 batches in"),
]


@pytest.mark.parametrize("corrupt, error, fragment", [case[1:] for case in BAD_CIFAR_FILES],
                         ids=[case[0] for case in BAD_CIFAR_FILES])
def test_bad_cifar10_files_errors(tmp_path, no_cifar_download, corrupt, error, fragment):
    folder = tmp_path / "cifar"
    marker = str(tmp_path / "pwned")
    culprit = corrupt(folder, marker)
    before = tree_digest(folder)
    with pytest.raises(error) as raised:
        data.load("cifar10", data_dir=str(folder), validation_size=1)
    message = str(raised.value)
    assert fragment in message and str(culprit) in message and "\n" not in message
    assert tree_digest(folder) == before and not os.path.exists(marker)  # nothing written, no code run
    assert not no_cifar_download


_VALID_CIFAR = _cifar_batch(_cifar_images(0, 1), legacy=True)


@_FUZZ
@hypothesis.given(content=st.one_of(_damaged(_VALID_CIFAR), st.binary(max_size=64)))
def test_read_cifar_batch_damaged(content):
    with tempfile.TemporaryDirectory() as folder:
        images = _read_or_reject(_write(os.path.join(folder, "data_batch_1"), content), data.read_cifar_batch)
    if images is None:
        return
    # a pickle has no checksum: damage to pixel bytes goes through
    assert images.dtype == np.uint8 and images.shape[1:] == (32, 32, 3) and len(images) >= 1
