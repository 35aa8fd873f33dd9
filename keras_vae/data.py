"""Named datasets as float32 arrays in [0, 1], and `tf.data` pipelines over them.

| name            | source                                              | example shape |
| --------------- | --------------------------------------------------- | ------------- |
| `digits`        | scikit-learn's bundled 8x8 digits (no download)      | (8, 8, 1)     |
| `mnist`         | IDX `.gz` files or Keras `mnist.npz`                 | (28, 28, 1)   |
| `fashion_mnist` | IDX `.gz` files (Keras's cache keeps the same files) | (28, 28, 1)   |

MNIST-like data is looked for, in order, in `data_dir` (the folder holding that
dataset's files), in `$KERAS_VAE_DATA_DIR/<mnist|fashion-mnist>/`, in the Keras cache
(`~/.keras/datasets`), and last through a `keras.datasets` download.

Binarization follows the literature: `"static"` draws one Bernoulli sample per pixel for
every split, once, with a fixed seed; `"dynamic"` does that for validation and test only
and leaves training intensities to `make_dataset(..., binarize=True)`, which draws a fresh
sample for every batch.
"""

import dataclasses
import gzip
import os

import numpy as np
import tensorflow as tf

DATASETS = ("digits", "mnist", "fashion_mnist")
BINARIZATIONS = ("none", "static", "dynamic")
ENV_VAR = "KERAS_VAE_DATA_DIR"
# Folder names under $KERAS_VAE_DATA_DIR and ~/.keras/datasets.
_FOLDERS = {"mnist": "mnist", "fashion_mnist": "fashion-mnist"}
_IDX_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
_NPZ = {"mnist": "mnist.npz", "fashion_mnist": "fashion_mnist.npz"}
# Seed of the one-off binarization of evaluation splits, so test sets are comparable.
EVAL_BINARIZATION_SEED = 123


@dataclasses.dataclass(frozen=True)
class Splits:
    """Train, validation and test arrays (float32, [N, H, W, 1], values in [0, 1])."""

    name: str
    train: np.ndarray
    validation: np.ndarray
    test: np.ndarray
    binarize: str = "none"

    @property
    def input_shape(self):
        return self.train.shape[1:]

    @property
    def dynamic(self):
        """True if training batches should be binarized afresh (`make_dataset(binarize=True)`)."""
        return self.binarize == "dynamic"


def load(name, data_dir=None, validation_size=None, binarize="none", seed=0):
    """Load dataset `name` split into train / validation / test.

    Args:
        name: one of `DATASETS`.
        data_dir: folder holding the dataset's files (MNIST-like sets only).
        validation_size: examples held out of the training split for validation; default
            10000 for MNIST-like sets (the classic 50k/10k), 297 for digits. Burda et al.'s
            split is `validation_size=400`.
        binarize: `"none"`, `"static"` or `"dynamic"` (see the module docstring).
        seed: seed of the static binarization of the training split.
    """
    if name not in DATASETS:
        raise ValueError(f"Unknown dataset {name!r}; expected one of {', '.join(DATASETS)}")
    if binarize not in BINARIZATIONS:
        raise ValueError(f"`binarize` must be one of {BINARIZATIONS}. Received: binarize={binarize!r}")
    if name == "digits":
        if data_dir is not None:
            raise ValueError("The digits dataset ships with scikit-learn; it takes no data_dir")
        train, test = _load_digits()
        validation_size = 297 if validation_size is None else validation_size
    else:
        train, test = _load_mnist_like(name, data_dir)
        validation_size = 10000 if validation_size is None else validation_size
    if not 0 <= validation_size < len(train):
        raise ValueError(
            f"`validation_size` must be in [0, {len(train)}) for {name}. Received: validation_size={validation_size}"
        )
    cut = len(train) - validation_size
    train, validation = train[:cut], train[cut:]
    if binarize == "static":
        train = binarize_array(train, seed)
    if binarize != "none":
        validation = binarize_array(validation, EVAL_BINARIZATION_SEED)
        test = binarize_array(test, EVAL_BINARIZATION_SEED + 1)
    return Splits(name, train, validation, test, binarize)


def binarize_array(x, seed):
    """One Bernoulli draw per entry with P(1) = x, as float32."""
    rng = np.random.default_rng(seed)
    return (rng.random(x.shape, dtype=np.float32) < x).astype(np.float32)


def make_dataset(x, batch_size, shuffle=False, binarize=False, seed=None, drop_remainder=False):
    """A `tf.data.Dataset` of batches of x: shuffled, optionally re-binarized each batch, prefetched.

    With `binarize=True` every batch is a fresh Bernoulli draw with P(1) = x (dynamic
    binarization); with a `seed`, shuffling and binarization repeat exactly between runs
    while still changing from epoch to epoch.
    """
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"`batch_size` must be a positive integer. Received: batch_size={batch_size!r}")
    ds = tf.data.Dataset.from_tensor_slices(np.asarray(x, np.float32))
    if shuffle:
        ds = ds.shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size, drop_remainder=drop_remainder)
    if binarize:
        seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)
        ds = tf.data.Dataset.zip(ds, seeds).map(
            lambda batch, s: tf.cast(tf.random.stateless_uniform(tf.shape(batch), seed=s) < batch, tf.float32),
            num_parallel_calls=tf.data.AUTOTUNE,
        )
    return ds.prefetch(tf.data.AUTOTUNE)


def _load_digits():
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = (digits.images / 16.0).astype(np.float32)[..., None]
    order = np.random.default_rng(0).permutation(len(x))  # fixed: the split never changes
    x = x[order]
    return x[:1497], x[1497:]


def _load_mnist_like(name, data_dir):
    folder = _FOLDERS[name]
    tried = []
    if data_dir is not None:
        found = _read_folder(name, data_dir)
        if found is None:
            raise FileNotFoundError(
                f"--data_dir={data_dir} holds no {name} data: expected {_IDX_FILES['train'][0]} and "
                f"{_IDX_FILES['test'][0]}, or {_NPZ[name]}"
            )
        return found
    env_root = os.environ.get(ENV_VAR)
    cache = os.path.join(os.path.expanduser(os.environ.get("KERAS_HOME", "~/.keras")), "datasets")
    for candidate in ([os.path.join(env_root, folder)] if env_root else []) + [cache, os.path.join(cache, folder)]:
        tried.append(candidate)
        found = _read_folder(name, candidate)
        if found is not None:
            return found
    try:
        import keras

        (x_train, _), (x_test, _) = getattr(keras.datasets, name).load_data()
    except Exception as error:  # no network, no write access, ...
        raise FileNotFoundError(
            f"No {name} data found (looked in {', '.join(tried)}) and the keras.datasets download failed "
            f"({type(error).__name__}). Pass --data_dir=<folder with the IDX .gz files or {_NPZ[name]}>, "
            f"or set {ENV_VAR}=<root with {folder}/>"
        ) from None
    return _scale(x_train), _scale(x_test)


def _read_folder(name, folder):
    """(train, test) from IDX .gz files or a Keras .npz in `folder`, or None if absent."""
    if all(os.path.exists(os.path.join(folder, _IDX_FILES[split][0])) for split in ("train", "test")):
        return tuple(_scale(read_idx(os.path.join(folder, _IDX_FILES[s][0]))) for s in ("train", "test"))
    npz = os.path.join(folder, _NPZ[name])
    if os.path.exists(npz):
        with np.load(npz) as f:
            return _scale(f["x_train"]), _scale(f["x_test"])
    return None


def read_idx(path):
    """Read an IDX file (optionally gzipped) into a numpy array."""
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        raw = f.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise ValueError(f"{path} is not an unsigned-byte IDX file (bad magic number)")
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    offset = 4 + 4 * ndim
    if len(raw) - offset != int(np.prod(dims)):
        raise ValueError(f"{path} is truncated: header says {dims}, found {len(raw) - offset} bytes of data")
    return np.frombuffer(raw, np.uint8, offset=offset).reshape(dims)


def _scale(images):
    return (np.asarray(images, np.float32) / 255.0)[..., None]
