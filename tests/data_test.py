"""Datasets: digits, the real MNIST / Fashion-MNIST files, binarization, pipelines, errors.

The bad-file tests corrupt copies of the real files in tmp_path (the shared originals are
only read, and checked against their SHA256SUMS afterwards).
"""

import functools
import gzip
import hashlib
import io
import os
import re
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


@pytest.mark.parametrize("name, folder, mean", [("mnist", "mnist", 0.13066), ("fashion_mnist", "fashion-mnist", 0.2860)])
def test_real_mnist_like_files(name, folder, mean):
    splits = data.load(name, data_dir=_shared(folder))
    assert splits.train.shape == (50000, 28, 28, 1) and splits.validation.shape == (10000, 28, 28, 1)
    assert splits.test.shape == (10000, 28, 28, 1)
    full_train = np.concatenate([splits.train, splits.validation])
    # Mean pixel intensity of the training set, as recorded in shared/data/*/PROVENANCE.md.
    np.testing.assert_allclose(full_train.mean(), mean, atol=5e-5)


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


def test_keras_npz_and_plain_idx(tmp_path):
    rng = np.random.default_rng(0)
    x_train = rng.integers(0, 256, (30, 28, 28), dtype=np.uint8)
    x_test = rng.integers(0, 256, (10, 28, 28), dtype=np.uint8)
    np.savez(tmp_path / "mnist.npz", x_train=x_train, y_train=np.zeros(30), x_test=x_test, y_test=np.zeros(10))
    splits = data.load("mnist", data_dir=str(tmp_path), validation_size=5)
    np.testing.assert_allclose(splits.test[..., 0], x_test / 255.0, rtol=1e-6)
    np.testing.assert_allclose(splits.validation[..., 0], x_train[25:] / 255.0, rtol=1e-6)
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
    """The real MNIST arrays, by their keras.datasets names: x_train, y_train, x_test, y_test."""
    names = ("x_train", "y_train", "x_test", "y_test")
    return {name: data.read_idx(os.path.join(_shared("mnist"), file)) for name, file in zip(names, MNIST_FILES)}


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
    labels = labels.draw(hnp.arrays(np.uint8, len(images)))
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


def _read_or_reject(path):
    """data.read_idx(path), or None if it raised its ValueError or an OSError (anything else fails the test)."""
    try:
        x = data.read_idx(path)
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
        path = os.path.join(folder, "x.idx")
        with open(path, "wb") as f:
            f.write(content)
        x = _read_or_reject(path)
    if x is not None:  # accepted: the file is exactly the IDX encoding of what was read
        assert x.dtype == np.uint8 and _idx_bytes(x) == content


@_FUZZ
@hypothesis.given(content=_damaged(_VALID_GZ), arbitrary=st.binary(max_size=64))
def test_read_idx_damaged_gz_file(content, arbitrary):
    with tempfile.TemporaryDirectory() as folder:
        path, other = os.path.join(folder, "x.gz"), os.path.join(folder, "y.gz")
        for name, raw in ((path, content), (other, arbitrary)):
            with open(name, "wb") as f:
                f.write(raw)
        x = _read_or_reject(path)
        _read_or_reject(other)
    if x is not None:  # gzip's CRC-32 and length check: damage is caught, or was harmless (mtime, padding)
        np.testing.assert_array_equal(x, _VALID)


_SMALL_NPZ = io.BytesIO()
np.savez(_SMALL_NPZ, x_train=_VALID, y_train=np.arange(2), x_test=_VALID[::-1], y_test=np.arange(2))


@_FUZZ
@hypothesis.given(content=_damaged(_SMALL_NPZ.getvalue()))
def test_damaged_npz(content):
    with tempfile.TemporaryDirectory() as folder:
        with open(os.path.join(folder, "mnist.npz"), "wb") as f:
            f.write(content)
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
