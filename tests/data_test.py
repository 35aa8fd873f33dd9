"""Datasets: digits, the real MNIST / Fashion-MNIST files, binarization, pipelines, errors."""

import gzip
import os

import numpy as np
import pytest

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
