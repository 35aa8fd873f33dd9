"""Named datasets as float32 arrays in [0, 1], and `tf.data` pipelines over them.

| name            | source                                              | example shape |
| --------------- | --------------------------------------------------- | ------------- |
| `digits`        | scikit-learn's bundled 8x8 digits (no download)      | (8, 8, 1)     |
| `mnist`         | IDX `.gz` files or Keras `mnist.npz`                 | (28, 28, 1)   |
| `fashion_mnist` | IDX `.gz` files (Keras's cache keeps the same files) | (28, 28, 1)   |
| `cifar10`       | the python batches, or `cifar-10-python.tar.gz`      | (32, 32, 3)   |
| a folder path   | your images (PNG, JPEG, BMP, GIF), see below         | (H, W, C)     |
| a `.npy` path   | one array of images (N, H, W) or (N, H, W, C)        | (H, W, C)     |
| a `.npz` path   | `x_train`, `x_test` (+ `y_*`), or one `x` (+ `y`)    | (H, W, C)     |

MNIST-like data is looked for, in order, in `data_dir` (the folder holding that
dataset's files), in `$KERAS_VAE_DATA_DIR/<mnist|fashion-mnist>/`, in the Keras cache
(`~/.keras/datasets`), and last through a `keras.datasets` download. CIFAR-10 the same
way: `data_dir`, `$KERAS_VAE_DATA_DIR/cifar-10/`, the Keras cache, a download; each
folder may hold the batch files (`data_batch_1` ... `data_batch_5`, `test_batch`), the
`cifar-10-batches-py/` folder with them, or the `cifar-10-python.tar.gz` archive (read
in place, never extracted). Batches are pickles; they are read with an unpickler that
only rebuilds numpy arrays, so a tampered file cannot run code.

Files that are there but malformed (cut short, not gzip, a wrong IDX header, a damaged or
unexpected .npz or CIFAR batch, image and label files that disagree, no examples) raise a
one-line ValueError naming the file and what was expected; missing or unreadable files
raise OSError.

Labels come with the images: `Splits.train_labels`, `validation_labels` and `test_labels`
are int64 class indices [N], one per image of the split, in the same order (the validation
labels are cut from the training labels at the same index as the images). A split's labels
are None when its source has none: no `*-labels-idx1-ubyte.gz` beside the IDX images, no
`y_train` / `y_test` in the .npz, CIFAR-10 batches without `b"labels"`. Labels that are not
whole numbers in [0, 10) are a malformed file (ValueError). Binarization leaves them alone.

Your own data: a name that is not one of `DATASETS` is a path (so a folder called `mnist`
is `./mnist`), and a path that does not exist is an OSError.

- A folder of images, read with `keras.utils.load_img` (resized with bilinear interpolation
  to `image_size=(H, W)` if given; without it all images must have one size). Either every
  image lies directly in the folder (no labels), or every image lies in one sub-folder per
  class (any depth below it): classes are the sorted sub-folder names, labels 0 ... C-1,
  kept in `Splits.class_names`. Names starting with "." are skipped, as are files that are
  not images by their extension. `color_mode` is `"grayscale"`, `"rgb"` or `"rgba"`; by
  default grayscale if every pixel of every image is grey (R = G = B), else rgb (alpha is
  kept only with `"rgba"`).
- A `.npy` file: one array of images, (N, H, W) or (N, H, W, C) with C <= 4 (channels last).
- A `.npz` file with the arrays `x_train` and `x_test` (Keras' `mnist.npz` layout), optional
  `y_train`, `y_test`, and optional `x_validation` (+ `y_validation`); or a single `x` (+ `y`)
  to be split. No other arrays.

Integer pixels must be in [0, 255] and are scaled by 1/255; float pixels must already be in
[0, 1]. Labels are whole numbers >= 0. Splits the files do not give are cut after a
permutation with the fixed seed `SPLIT_SEED` (never `seed`: the test set stays the same
from run to run, and class folders, which come sorted by class, spread over every split):
the last `test_size` examples (default 10% of N, at least 1) are the test split, the
`validation_size` before them (default 10% of N) the validation split, the rest the
training split; with `x_train` / `x_test`, the validation split is the last
`validation_size` (default 10%) of the permuted training examples, unless `x_validation` is
given. `test_size` is an error when the file has a test split, `validation_size` when it
has a validation split, `image_size` and `color_mode` for anything but an image folder.
Anything unreadable or unexpected (an empty folder, no images, a damaged image, images of
mixed sizes without `image_size`, missing or unknown .npz arrays, a wrong dtype, range or
rank, labels that do not match the images) raises a one-line ValueError naming the file.

Binarization follows the literature: `"static"` draws one Bernoulli sample per pixel for
every split, once, with a fixed seed; `"dynamic"` does that for validation and test only
and leaves training intensities to `make_dataset(..., binarize=True)`, which draws a fresh
sample for every batch.
"""

import dataclasses
import gzip
import io
import math
import os
import pickle
import tarfile
import zipfile
import zlib

import numpy as np
import tensorflow as tf

from keras_vae import checks

DATASETS = ("digits", "mnist", "fashion_mnist", "cifar10")
BINARIZATIONS = ("none", "static", "dynamic")
ENV_VAR = "KERAS_VAE_DATA_DIR"
# Folder names under $KERAS_VAE_DATA_DIR and ~/.keras/datasets.
_FOLDERS = {"mnist": "mnist", "fashion_mnist": "fashion-mnist", "cifar10": "cifar-10"}
_IDX_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
_NPZ = {"mnist": "mnist.npz", "fashion_mnist": "fashion_mnist.npz"}
# CIFAR-10 python batches: files, the folder the archive holds them in, the archive, and
# the folder Keras 3 extracts its download into (under ~/.keras/datasets).
_CIFAR_TRAIN = tuple(f"data_batch_{i}" for i in range(1, 6))
_CIFAR_TEST = "test_batch"
_CIFAR_BATCHES = "cifar-10-batches-py"
_CIFAR_ARCHIVE = "cifar-10-python.tar.gz"
_CIFAR_KERAS_CACHE = "cifar-10-batches-py-target"
_CIFAR_SHAPE = (3, 32, 32)  # one row of b"data": 1024 red, 1024 green, 1024 blue, each row-major
# IDX magic numbers: 0x00 0x00, 0x08 (unsigned bytes), number of dimensions.
_IMAGES, _LABELS = 0x00000803, 0x00000801
# Classes of each dataset: `Splits.num_classes`, and the range labels are checked against.
NUM_CLASSES = {"digits": 10, "mnist": 10, "fashion_mnist": 10, "cifar10": 10}
# Seed of the one-off binarization of evaluation splits, so test sets are comparable.
EVAL_BINARIZATION_SEED = 123
# Your own data: image files read from a folder (the extensions keras.utils.image_dataset_from_directory
# reads), colour modes of keras.utils.load_img, the arrays an .npz may hold.
IMAGE_FORMATS = (".bmp", ".gif", ".jpeg", ".jpg", ".png")
COLOR_MODES = ("grayscale", "rgb", "rgba")
_NPZ_SPLITS = ("train", "validation", "test")
_OWN_NPZ_KEYS = tuple(f"{xy}_{split}" for split in _NPZ_SPLITS for xy in "xy") + ("x", "y")
# Seed of the permutation before cutting the splits your files do not give: fixed, so the
# test set never changes with --seed.
SPLIT_SEED = 0
# Default share of the examples held out for test and for validation when the files give no such split.
OWN_SPLIT_FRACTION = 0.1


@dataclasses.dataclass(frozen=True)
class Splits:
    """Train, validation and test arrays (float32, [N, H, W, C], values in [0, 1]) and their labels.

    `train_labels`, `validation_labels` and `test_labels` are int64 class indices [N], one
    per example of that split in the same order, or None if the dataset's files have none.
    `class_names` are the names of classes 0 ... C-1 where the source names them (an image
    folder's class sub-folders), else None.
    """

    name: str
    train: np.ndarray
    validation: np.ndarray
    test: np.ndarray
    binarize: str = "none"
    train_labels: np.ndarray | None = None
    validation_labels: np.ndarray | None = None
    test_labels: np.ndarray | None = None
    class_names: tuple | None = None

    def __post_init__(self):
        for split in ("train", "validation", "test"):
            labels, count = getattr(self, f"{split}_labels"), len(getattr(self, split))
            if labels is not None and np.shape(labels) != (count,):
                raise ValueError(f"`{split}_labels` must hold one label per {split} example, shape ({count},). "
                                 f"Received: shape {np.shape(labels)}")

    @property
    def input_shape(self):
        return self.train.shape[1:]

    @property
    def num_classes(self):
        """Number of classes C (labels are in [0, C)), or None if no split has labels.

        `NUM_CLASSES[name]` for the datasets here (10 for each), whichever labels a split
        happens to hold; `len(class_names)` if the classes are named (an image folder's
        sub-folders, some of which may have no example in a split); else 1 + the largest
        label of any split.
        """
        labels = [y for y in (self.train_labels, self.validation_labels, self.test_labels) if y is not None]
        if not labels:
            return None
        if self.class_names is not None:
            return len(self.class_names)
        if self.name in NUM_CLASSES:
            return NUM_CLASSES[self.name]
        return max((int(np.max(y)) + 1 for y in labels if len(y)), default=None)

    @property
    def dynamic(self):
        """True if training batches should be binarized afresh (`make_dataset(binarize=True)`)."""
        return self.binarize == "dynamic"


def load(name, data_dir=None, validation_size=None, binarize="none", seed=0, image_size=None, color_mode=None,
         test_size=None):
    """Load dataset `name`, or your own data at a path, split into train / validation / test, with
    labels where the files have them.

    Args:
        name: one of `DATASETS`, or the path of an image folder, a `.npy` or a `.npz` file (see
            the module docstring).
        data_dir: folder holding a built-in dataset's files (not for digits or a path).
        validation_size: examples held out of the training split for validation; default
            10000 for MNIST-like sets (the classic 50k/10k), 5000 for CIFAR-10 (45k/5k), 297
            for digits, 10% of the examples for your own data. Burda et al.'s MNIST split is
            `validation_size=400`.
        binarize: `"none"`, `"static"` or `"dynamic"` (see the module docstring).
        seed: seed of the static binarization of the training split.
        image_size: (H, W) to resize an image folder's images to (default: their own size,
            which must then be the same for all).
        color_mode: an image folder's `"grayscale"`, `"rgb"` or `"rgba"` (default: grayscale
            if all images are grey, else rgb).
        test_size: your own data without a test split: examples held out for testing
            (default 10%, at least 1).

    Returns:
        `Splits`: images, and labels (None for a split whose source has none) in the same
        order. For the built-in sets the validation split is the last `validation_size`
        training examples; your own data is permuted first (`SPLIT_SEED`).
    """
    checks.check_one_of("binarize", binarize, BINARIZATIONS)
    class_names = None
    if isinstance(name, str) and name in DATASETS:
        for option, value in (("image_size", image_size), ("color_mode", color_mode), ("test_size", test_size)):
            if value is not None:
                raise ValueError(f"`{option}` applies to your own data (an image folder, .npy or .npz path), not "
                                 f"the built-in {name} dataset. Received: {option}={value!r}")
        if name == "digits":
            if data_dir is not None:
                raise ValueError("The digits dataset ships with scikit-learn; it takes no data_dir")
            (train, train_labels), (test, test_labels) = _load_digits()
            validation_size = 297 if validation_size is None else validation_size
        elif name == "cifar10":
            (train, train_labels), (test, test_labels) = _load_cifar10(data_dir)
            validation_size = 5000 if validation_size is None else validation_size
        else:
            (train, train_labels), (test, test_labels) = _load_mnist_like(name, data_dir)
            validation_size = 10000 if validation_size is None else validation_size
        (train, train_labels), (validation, validation_labels) = _hold_out(
            name, train, train_labels, validation_size, "validation_size")
    else:
        if data_dir is not None:
            raise ValueError(f"data_dir applies to the built-in datasets ({', '.join(DATASETS)}), not to the path "
                             f"{name}. Received: data_dir={data_dir!r}")
        name = os.fspath(name)
        (train, train_labels), (validation, validation_labels), (test, test_labels), class_names = _load_own(
            name, validation_size, test_size, image_size, color_mode)
    if binarize == "static":
        train = binarize_array(train, seed)
    if binarize != "none":
        validation = binarize_array(validation, EVAL_BINARIZATION_SEED)
        test = binarize_array(test, EVAL_BINARIZATION_SEED + 1)
    return Splits(name, train, validation, test, binarize, train_labels, validation_labels, test_labels, class_names)


def _hold_out(source, x, labels, size, option, minimum=0):
    """((x, labels) kept, (x, labels) held out): the last `size` examples are held out, at least
    `minimum` of them and at least one kept; labels may be None."""
    if not (checks.is_int(size) and minimum <= size < len(x)):
        raise ValueError(
            f"`{option}` must be in [{minimum}, {len(x)}) for {source}. Received: {option}={size!r}"
        )
    cut = len(x) - size
    if labels is None:
        return (x[:cut], None), (x[cut:], None)
    return (x[:cut], labels[:cut]), (x[cut:], labels[cut:])


def _permuted(x, labels):
    """x (and labels) in the order of a permutation fixed by `SPLIT_SEED`."""
    order = np.random.default_rng(SPLIT_SEED).permutation(len(x))
    return x[order], None if labels is None else labels[order]


def _default_size(count):
    """The default test or validation size for your own data of `count` examples: 10%, rounded down."""
    return int(count * OWN_SPLIT_FRACTION)


def _load_own(path, validation_size, test_size, image_size, color_mode):
    """((train, y), (validation, y), (test, y), class names) of your own data at `path` (see the module docstring)."""
    if not os.path.exists(path):
        if os.sep in path or (os.altsep and os.altsep in path) or path.lower().endswith((".npy", ".npz")):
            raise FileNotFoundError(f"{path} does not exist: expected an image folder, a .npy or a .npz file")
        raise ValueError(f"Unknown dataset {path!r}; expected one of {', '.join(DATASETS)}, or the path of an image "
                         "folder, a .npy or a .npz file")
    is_folder = os.path.isdir(path)
    if not is_folder and (image_size is not None or color_mode is not None):
        option = "image_size" if image_size is not None else "color_mode"
        raise ValueError(f"`{option}` applies to image folders; {path} is a file. "
                         f"Received: {option}={image_size if image_size is not None else color_mode!r}")
    class_names = None
    if is_folder:
        x, y, class_names = _read_image_folder(path, image_size, color_mode)
        given = {"x": (x, y)}
    elif path.lower().endswith(".npy"):
        given = {"x": (_own_images(path, _read_npy(path)), None)}
    elif path.lower().endswith(".npz"):
        given = _read_own_npz(path)
    else:
        raise ValueError(f"{path} is neither a folder nor a .npy or .npz file: expected an image folder, a .npy or a "
                         ".npz file")
    if "x" in given:  # one set of examples: permute, then test and validation off the end
        x, y = _permuted(*given["x"])
        test_size = max(1, _default_size(len(x))) if test_size is None else test_size
        rest, test = _hold_out(path, x, y, test_size, "test_size", minimum=1)
        validation_size = _default_size(len(x)) if validation_size is None else validation_size
        train, validation = _hold_out(path, *rest, validation_size, "validation_size")
        return train, validation, test, class_names
    if test_size is not None:
        raise ValueError(f"{path} has x_test, its own test split: test_size applies only to data without one. "
                         f"Received: test_size={test_size!r}")
    if "validation" in given:
        if validation_size is not None:
            raise ValueError(f"{path} has x_validation, its own validation split: validation_size applies only to "
                             f"data without one. Received: validation_size={validation_size!r}")
        train, validation = given["train"], given["validation"]
    else:
        x, y = _permuted(*given["train"])
        validation_size = _default_size(len(x)) if validation_size is None else validation_size
        train, validation = _hold_out(path, x, y, validation_size, "validation_size")
    return train, validation, given["test"], class_names


def _own_images(source, images, labels=None, labels_source=None):
    """`images` of your own data as float32 [N, H, W, C] in [0, 1]: integer pixels (in [0, 255]) scaled by
    1/255, float pixels (already in [0, 1]) as they are; a one-line ValueError naming `source` otherwise."""
    _check_images(source, images, labels, labels_source, own=True)
    scaled = images.astype(np.float32) if images.dtype.kind == "f" else _scale_rgb(images)
    return scaled if scaled.ndim == 4 else scaled[..., None]


def _read_npy(path):
    """The one array of the .npy file at `path` (never a pickle)."""
    expected = "expected one .npy array of images, (N, H, W) or (N, H, W, C)"
    with open(path, "rb") as f:  # a missing or unreadable file stays an OSError; the rest is the content's fault
        if f.read(6) != b"\x93NUMPY":
            raise ValueError(f"{path} is not a .npy file (no \\x93NUMPY signature): {expected}")
        f.seek(0)
        try:
            return np.lib.format.read_array(f, allow_pickle=False)
        except (ValueError, OSError, EOFError) as error:  # a damaged header, cut short, or object (pickled) data
            raise ValueError(f"{path} is not a readable .npy array ({_one_line(error)}): {expected}") from error


def _read_own_npz(path):
    """{"x": (images, labels)} or {"train": ..., "test": ..., optionally "validation": ...} from your own .npz;
    images scaled as `_own_images`, labels int64 or None."""
    expected = ("expected x_train and x_test (optionally y_train, y_test, x_validation, y_validation), or a single "
                "x (optionally y)")
    arrays, found = _npz_arrays(path, _OWN_NPZ_KEYS, expected)
    unknown = [key for key in found if key not in _OWN_NPZ_KEYS]
    if unknown:
        raise ValueError(f"{path} has unexpected arrays {unknown}: {expected}; found {found}")
    splits = ["x"] if "x" in arrays else [split for split in _NPZ_SPLITS if f"x_{split}" in arrays]
    problem = None
    if "x" in arrays and any(f"x_{split}" in arrays for split in _NPZ_SPLITS):
        problem = "has both x and x_<split> arrays"
    elif not splits:
        problem = "has no x_train and x_test, nor x"
    elif "x" not in arrays and not {"train", "test"} <= set(splits):
        problem = f"has no {'x_test' if 'train' in splits else 'x_train'} array"
    else:
        orphans = [key for key in arrays if key.startswith("y") and "x" + key[1:] not in arrays]
        problem = f"has {orphans[0]} without {'x' + orphans[0][1:]}" if orphans else None
    if problem:
        raise ValueError(f"{path} {problem}: {expected}; found {found}")
    given, shapes = {}, {}
    for split in splits:
        x_key, y_key = ("x", "y") if split == "x" else (f"x_{split}", f"y_{split}")
        labels = arrays.get(y_key)
        if labels is not None and labels.ndim == 2 and labels.shape[1:] == (1,):
            labels = labels[:, 0]  # Keras' CIFAR layout, [N, 1]
        images = _own_images(f"{x_key} in {path}", arrays[x_key], labels, y_key)
        given[split] = (images, _class_labels(f"{y_key} in {path}", labels, None))
        shapes[x_key] = images.shape[1:]
    if len(set(shapes.values())) > 1:
        raise ValueError(f"{path} holds images of different shapes ("
                         f"{', '.join(f'{key} {shape}' for key, shape in shapes.items())}): expected one (H, W, C)")
    return given


def _image_files(folder):
    """The image files (by extension) under `folder`, at any depth, in sorted order; hidden names skipped."""
    found = []
    for root, folders, files in os.walk(folder, followlinks=True):
        folders[:] = sorted(name for name in folders if not name.startswith("."))
        found += [os.path.join(root, name) for name in sorted(files)
                  if not name.startswith(".") and name.lower().endswith(IMAGE_FORMATS)]
    return found


def _read_image_folder(folder, image_size, color_mode):
    """(images float32 [N, H, W, C] in [0, 1], int64 labels or None, class names or None) of an image folder."""
    if image_size is not None:
        image_size = checks.check_positive_ints("image_size", image_size)
        if len(image_size) != 2:
            raise ValueError(f"`image_size` must be (height, width). Received: image_size={image_size!r}")
    if color_mode is not None:
        checks.check_one_of("color_mode", color_mode, COLOR_MODES)
    formats = ", ".join(IMAGE_FORMATS)
    entries = sorted(name for name in os.listdir(folder) if not name.startswith("."))
    if not entries:
        raise ValueError(f"{folder} is empty: expected image files ({formats}), or one sub-folder of them per class")
    classes = [name for name in entries if os.path.isdir(os.path.join(folder, name))]
    loose = [name for name in entries if name.lower().endswith(IMAGE_FORMATS) and name not in classes]
    if classes and loose:
        raise ValueError(f"{folder} holds both images ({loose[0]}) and sub-folders ({classes[0]}/): expected images "
                         "directly in it (no labels) or one sub-folder per class (labels), not both")
    if classes:
        files, labels = [], []
        for index, name in enumerate(classes):
            found = _image_files(os.path.join(folder, name))
            if not found:
                raise ValueError(f"{os.path.join(folder, name)} holds no images ({formats}): expected every "
                                 f"sub-folder of {folder} to hold the images of one class")
            files += found
            labels += [index] * len(found)
        labels = np.asarray(labels, np.int64)
    else:
        files, labels = [os.path.join(folder, name) for name in loose], None
        if not files:
            raise ValueError(f"{folder} holds no images: expected image files ({formats}), or one sub-folder of them "
                             "per class")
    import keras

    images, sizes = [], {}
    for path in files:
        try:
            # Without a colour mode every image is read as rgb, and kept grey below if all are grey.
            image = keras.utils.load_img(path, color_mode=color_mode or "rgb", target_size=image_size,
                                         interpolation="bilinear")
            pixels = keras.utils.img_to_array(image, dtype="float32")
        except Exception as error:  # whatever PIL raises on a damaged or foreign file: OSError, SyntaxError, ...
            raise ValueError(f"{path} is not a readable image ({_one_line(error)}): expected a "
                             f"{'/'.join(f[1:].upper() for f in IMAGE_FORMATS)} file") from error
        if pixels.max(initial=0) > 255:  # 16- and 32-bit greyscale PNGs stay so in load_img
            raise ValueError(f"{path} has pixel values up to {pixels.max():g}: expected an 8-bit image, values in "
                             "[0, 255]")
        sizes.setdefault(pixels.shape[:2], path)
        images.append(pixels.astype(np.uint8))
    if len(sizes) > 1:
        (size_a, path_a), (size_b, path_b) = list(sizes.items())[:2]
        raise ValueError(f"{folder} holds images of different sizes ({path_a} is {size_a[0]}x{size_a[1]}, {path_b} is "
                         f"{size_b[0]}x{size_b[1]}, height x width): pass image_size=(H, W) (apps: --image_size=H,W) "
                         "to resize them all to one")
    images = np.stack(images)
    if color_mode is None and np.array_equal(images[..., 0], images[..., 1]) and np.array_equal(
            images[..., 1], images[..., 2]):
        images = images[..., :1]  # every image grey: what color_mode="grayscale" reads too
    return _own_images(folder, images, labels, "its class sub-folders"), labels, (
        None if labels is None else tuple(classes))


def _one_line(error):
    """`error`'s message on one short line, or its type's name."""
    return " ".join(str(error).split())[:160] or type(error).__name__


def binarize_array(x, seed):
    """One Bernoulli draw per entry with P(1) = x, as float32."""
    rng = np.random.default_rng(seed)
    return (rng.random(x.shape, dtype=np.float32) < x).astype(np.float32)


def make_dataset(x, batch_size, shuffle=False, binarize=False, seed=None, drop_remainder=False, labels=None):
    """A `tf.data.Dataset` of batches of x (or of (x, y) with `labels`): shuffled, optionally
    re-binarized each batch, prefetched.

    With `binarize=True` every batch of x is a fresh Bernoulli draw with P(1) = x (dynamic
    binarization); with a `seed`, shuffling and binarization repeat exactly between runs
    while still changing from epoch to epoch.
    """
    batch_size = checks.check_positive_int("batch_size", batch_size)
    x = np.asarray(x, np.float32)
    ds = tf.data.Dataset.from_tensor_slices(x if labels is None else (x, np.asarray(labels, np.int64)))
    if shuffle:
        ds = ds.shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size, drop_remainder=drop_remainder)
    if binarize:

        def draw(batch, s):
            images, rest = (batch, ()) if labels is None else (batch[0], batch[1:])
            images = tf.cast(tf.random.stateless_uniform(tf.shape(images), seed=s) < images, tf.float32)
            return (images, *rest) if rest else images

        seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)
        ds = tf.data.Dataset.zip(ds, seeds).map(draw, num_parallel_calls=tf.data.AUTOTUNE)
    # tf.data's autotuner held `fit` to about 100 batches/s per core here (TF 2.21, CPU),
    # half of what the train step took; with it off, AUTOTUNE means one call per core and
    # a fixed prefetch buffer, which keeps up (benchmarks/run.py, train_mlp_b100).
    options = tf.data.Options()
    options.autotune.enabled = False
    return ds.prefetch(tf.data.AUTOTUNE).with_options(options)


def _load_digits():
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = (digits.images / 16.0).astype(np.float32)[..., None]
    order = np.random.default_rng(0).permutation(len(x))  # fixed: the split never changes
    x, y = x[order], digits.target[order].astype(np.int64)
    return (x[:1497], y[:1497]), (x[1497:], y[1497:])


def _load_mnist_like(name, data_dir):
    def from_download(train, test):
        source = f"keras.datasets.{name}"
        return tuple((_scale(x), _class_labels(f"y_{split} of {source}", y, NUM_CLASSES[name]))
                     for split, (x, y) in (("train", train), ("test", test)))

    return _locate(name, data_dir, lambda folder: _read_folder(name, folder), ["", _FOLDERS[name]],
                   f"{_IDX_FILES['train'][0]} and {_IDX_FILES['test'][0]}, or {_NPZ[name]}", from_download)


def _locate(name, data_dir, read_folder, cache_subfolders, expected, from_download):
    """Dataset `name` as (train, test): read by `read_folder` from `data_dir` (only there, if
    given), else from `$KERAS_VAE_DATA_DIR/<folder>` or the Keras cache's `cache_subfolders`;
    failing those, downloaded by `keras.datasets` and converted by `from_download`."""
    if data_dir is not None:
        found = read_folder(data_dir)
        if found is None:
            raise FileNotFoundError(f"--data_dir={data_dir} holds no {name} data: expected {expected}")
        return found
    env_root = os.environ.get(ENV_VAR)
    cache = os.path.join(os.path.expanduser(os.environ.get("KERAS_HOME", "~/.keras")), "datasets")
    tried = ([os.path.join(env_root, _FOLDERS[name])] if env_root else []) + [
        os.path.join(cache, sub) if sub else cache for sub in cache_subfolders]
    for candidate in tried:
        found = read_folder(candidate)
        if found is not None:
            return found
    try:
        import keras

        train, test = getattr(keras.datasets, name).load_data()
    except Exception as error:  # no network, no write access, ...
        raise FileNotFoundError(
            f"No {name} data found (looked in {', '.join(tried)}) and the keras.datasets download failed "
            f"({type(error).__name__}). Pass --data_dir=<folder with {expected}>, or set "
            f"{ENV_VAR}=<root with {_FOLDERS[name]}/>"
        ) from None
    return from_download(train, test)


def _read_folder(name, folder):
    """((x_train, y_train), (x_test, y_test)) from IDX .gz files or a Keras .npz in `folder`, or
    None if absent; y_* is None where there are no labels.

    Files that are there but malformed raise a one-line ValueError naming the file.
    """
    idx = {split: [os.path.join(folder, file) for file in _IDX_FILES[split]] for split in ("train", "test")}
    npz = os.path.join(folder, _NPZ[name])
    if all(os.path.exists(idx[split][0]) for split in ("train", "test")):
        (train, train_labels), (test, test_labels) = (
            _read_idx_split(*idx[split], NUM_CLASSES[name]) for split in ("train", "test"))
    elif os.path.exists(npz):
        (train, train_labels), (test, test_labels) = _read_npz(npz, name)
    else:
        return None
    if train.shape[1:] != test.shape[1:]:
        raise ValueError(
            f"The {name} files in {folder} do not match: training images are {train.shape[1:]}, test images "
            f"{test.shape[1:]}; expected both splits of one dataset"
        )
    return (_scale(train), train_labels), (_scale(test), test_labels)


def read_idx(path):
    """Read an unsigned-byte IDX file (gzipped if the name ends in `.gz`) into a uint8 numpy array.

    An IDX file is a magic number `0x000008NN` (`08`: unsigned bytes, `NN`: number of
    dimensions; 2049 for label files, 2051 for image files), NN big-endian 32-bit sizes and
    then exactly prod(sizes) bytes. Raises a one-line ValueError naming `path` if the file is
    not gzip (or is cut short), or if its header disagrees with its data; OSError if it
    cannot be opened.
    """
    return _read_idx(path)


def _read_idx(path, magic=None):
    """`read_idx`, also requiring the magic number `magic` (`_IMAGES` or `_LABELS`) if given."""
    raw = _read_bytes(path)
    found = int.from_bytes(raw[:4], "big") if len(raw) >= 4 else None
    if found is None or (found != magic if magic else found >> 8 != 0x08 or not 1 <= found & 0xFF <= 32):
        expected = (f"{magic} (0x{magic:08x})" if magic
                    else "0x000008NN, NN = 1 to 32 dimensions (2049 for labels, 2051 for images)")
        found = f"a {len(raw)}-byte file" if found is None else f"{found} (0x{found:08x})"
        kind = {_IMAGES: "image", _LABELS: "label"}.get(magic, "unsigned-byte")
        raise ValueError(f"{path} is not an IDX {kind} file: expected magic number {expected}, found {found}")
    ndim = raw[3]
    offset = 4 + 4 * ndim
    if len(raw) < offset:
        raise ValueError(f"{path} is truncated: its {ndim}-D IDX header needs {offset} bytes, found {len(raw)}")
    dims = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected, found = math.prod(dims), len(raw) - offset
    if found != expected:
        problem = "is truncated" if found < expected else "has trailing bytes"
        raise ValueError(f"{path} {problem}: its header says shape {dims}, so {expected} bytes of data; found {found}")
    return np.frombuffer(raw, np.uint8, offset=offset).reshape(dims)


def _read_bytes(path):
    """The contents of `path`, gunzipped if it ends in `.gz`; a broken gzip stream is a ValueError."""
    if not path.endswith(".gz"):
        with open(path, "rb") as f:
            return f.read()
    try:
        with gzip.open(path, "rb") as f:
            return f.read()
    except (EOFError, zlib.error, gzip.BadGzipFile) as error:
        raise ValueError(f"{path} is not a valid, complete gzip file ({error}); download it again") from error


def _read_idx_split(images_path, labels_path, num_classes):
    """(images, labels) of one split from IDX files; labels (int64) are None without a label file."""
    images = _read_idx(images_path, _IMAGES)
    labels = _read_idx(labels_path, _LABELS) if os.path.exists(labels_path) else None
    _check_images(images_path, images, labels, labels_path)
    return images, _class_labels(labels_path, labels, num_classes)


def _read_npz(path, name):
    """((x_train, y_train), (x_test, y_test)) from a `keras.datasets`-style .npz; y_* are None if absent."""
    arrays, found = _npz_arrays(path, ("x_train", "y_train", "x_test", "y_test"),
                                f"expected the keras.datasets.{name} file")
    missing = [key for key in ("x_train", "x_test") if key not in arrays]
    if missing:
        raise ValueError(
            f"{path} has no {' or '.join(missing)} array: expected x_train and x_test (optionally y_train and "
            f"y_test) as in keras.datasets.{name}; found {found}"
        )
    for split in ("train", "test"):
        _check_images(f"x_{split} in {path}", arrays[f"x_{split}"], arrays.get(f"y_{split}"), f"y_{split}")
    return tuple((arrays[f"x_{split}"], _class_labels(f"y_{split} in {path}", arrays.get(f"y_{split}"),
                                                      NUM_CLASSES[name])) for split in ("train", "test"))


def _npz_arrays(path, keys, expected):
    """({key: array} of those `keys` the .npz at `path` holds, all its keys); a one-line ValueError
    naming `path` (ending in `expected`) if it is not a readable .npz archive."""
    with open(path, "rb") as f:  # a missing or unreadable file stays an OSError; the rest is the content's fault
        try:
            if f.read(4) not in (b"PK\x03\x04", b"PK\x05\x06"):  # else np.load would try .npy and pickle
                raise ValueError("no zip signature")
            f.seek(0)
            archive = np.load(f)  # allow_pickle=False: never runs code from the file
            arrays = {key: archive[key] for key in keys if key in archive}
            return arrays, archive.files
        except (zipfile.BadZipFile, zlib.error, EOFError, ValueError, OSError, RuntimeError,
                NotImplementedError) as error:  # what zipfile and np.load raise on damaged archives
            raise ValueError(
                f"{path} is not a readable .npz archive ({str(error) or type(error).__name__}); {expected}"
            ) from error


def _check_images(source, images, labels=None, labels_source=None, own=False):
    """Raise ValueError unless `images` are N >= 1 images of H x W integer pixels in [0, 255],
    with one label each if `labels` are given. `own` (your own data) also allows channels,
    (N, H, W, C) with C <= 4, and float pixels in [0, 1]."""
    ranks = (3, 4) if own else (3,)
    shapes = "(N, H, W) or (N, H, W, C)" if own else "(N, H, W)"
    if images.ndim not in ranks or 0 in images.shape:
        problem = "is empty" if images.ndim in ranks else f"is {images.ndim}-D"
        raise ValueError(f"{source} {problem}: expected images of shape {shapes}, N >= 1; found shape {images.shape}")
    if images.ndim == 4 and images.shape[-1] > 4:  # most likely channels first, (N, C, H, W)
        raise ValueError(f"{source} has shape {images.shape}, {images.shape[-1]} channels: expected (N, H, W, C) "
                         "with the channels last, C <= 4")
    floats = own and images.dtype.kind == "f"
    if not (np.issubdtype(images.dtype, np.integer) or floats):
        allowed = "uint8 pixel values in [0, 255], or floats in [0, 1]" if own else "uint8 pixel values in [0, 255]"
        raise ValueError(f"{source} has dtype {images.dtype}: expected {allowed}")
    low, high = images.min(), images.max()
    if floats and not (0 <= low and high <= 1):  # NaN fails too
        raise ValueError(f"{source} has float pixel values in [{low}, {high}]: expected values in [0, 1] (or uint8 "
                         "values in [0, 255], which are scaled by 1/255)")
    if not floats and (low < 0 or high > 255):
        raise ValueError(f"{source} has pixel values in [{low}, {high}]: expected uint8 values in [0, 255]")
    if labels is not None and labels.shape != images.shape[:1]:
        raise ValueError(
            f"{source} holds {len(images)} images but {labels_source} has labels of shape {labels.shape}: expected "
            f"one label per image, shape ({len(images)},)"
        )


def _class_labels(source, labels, num_classes):
    """`labels` as int64 [N], or None for None; a one-line ValueError naming `source` unless they are
    whole numbers in [0, num_classes) (integers, or floats that hold whole numbers); num_classes
    None: any whole numbers >= 0."""
    if labels is None:
        return None
    if num_classes is None:
        expected, num_classes = "expected class labels, whole numbers >= 0", np.iinfo(np.int64).max
    else:
        expected = f"expected class labels, whole numbers in [0, {num_classes})"
    try:
        labels = np.asarray(labels)
    except (ValueError, TypeError):  # e.g. a ragged list from a pickle
        raise ValueError(f"{source} has labels that do not form an array: {expected}") from None
    if labels.ndim != 1 or labels.dtype.kind not in "iuf":
        raise ValueError(f"{source} has labels of dtype {labels.dtype} and shape {labels.shape}: {expected}")
    with np.errstate(invalid="ignore"):
        bad = np.flatnonzero(~((labels >= 0) & (labels < num_classes) & (labels == np.floor(labels))))
    if len(bad):
        raise ValueError(f"{source} has label {labels[bad[0]]} at index {bad[0]}: {expected}")
    return labels.astype(np.int64)


def _load_cifar10(data_dir):
    def from_download(train, test):
        source, num_classes = "keras.datasets.cifar10", NUM_CLASSES["cifar10"]
        splits = []
        for split, (x, y) in (("train", train), ("test", test)):
            if x.shape[1:] != (32, 32, 3):  # keras.backend.image_data_format() == "channels_first"
                x = x.transpose(0, 2, 3, 1)
            # Keras gives labels as [N, 1].
            splits.append((_scale_rgb(x), _class_labels(f"y_{split} of {source}", np.reshape(y, -1), num_classes)))
        return tuple(splits)

    return _locate("cifar10", data_dir, _read_cifar_folder, [_CIFAR_KERAS_CACHE, ""],
                   f"{', '.join(_CIFAR_TRAIN)} and {_CIFAR_TEST}, a {_CIFAR_BATCHES}/ folder with them, or "
                   f"{_CIFAR_ARCHIVE}", from_download)


def _read_cifar_folder(folder):
    """((x_train, y_train), (x_test, y_test)) from CIFAR-10 python batches in `folder`, or None if
    there are none; a split's labels are None unless each of its batches has them.

    The batch files are looked for in `folder` and in `folder/cifar-10-batches-py`, then the
    archive `folder/cifar-10-python.tar.gz`. A folder with some batch files but not all
    raises FileNotFoundError naming the missing ones.
    """
    names = _CIFAR_TRAIN + (_CIFAR_TEST,)
    for batches in (folder, os.path.join(folder, _CIFAR_BATCHES)):
        paths = [os.path.join(batches, name) for name in names]
        if any(os.path.isfile(path) for path in paths):
            missing = [path for path in paths if not os.path.isfile(path)]
            if missing:
                raise FileNotFoundError(f"Incomplete CIFAR-10 batches in {batches}: missing {', '.join(missing)}")
            parsed = []
            for path in paths:
                with open(path, "rb") as f:
                    parsed.append(_parse_cifar_batch(path, f.read()))
            return _cifar_splits(parsed)
    archive = os.path.join(folder, _CIFAR_ARCHIVE)
    if os.path.exists(archive):
        return _cifar_splits(_read_cifar_archive(archive, names))
    return None


def _cifar_splits(batches):
    """((x_train, y_train), (x_test, y_test)) from the (images, labels) of the five training batches
    and the test batch."""
    def split(parts):
        labels = [y for _, y in parts]
        return (_scale_rgb(np.concatenate([x for x, _ in parts])),
                None if any(y is None for y in labels) else np.concatenate(labels))
    return split(batches[:-1]), split(batches[-1:])


def _read_cifar_archive(path, names):
    """(images, labels) of each batch of `names` in the `cifar-10-python.tar.gz` archive at `path`."""
    with open(path, "rb") as f:  # a missing or unreadable file stays an OSError
        try:
            with tarfile.open(fileobj=f, mode="r:gz") as archive:
                contents = {}
                for name in names:
                    member = f"{_CIFAR_BATCHES}/{name}"
                    try:
                        contents[name] = archive.extractfile(member).read()
                    except (KeyError, AttributeError):  # absent, or not a regular file
                        raise ValueError(
                            f"{path} has no file {member}: expected the {_CIFAR_ARCHIVE} of "
                            "https://www.cs.toronto.edu/~kriz/cifar.html"
                        ) from None
        except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile) as error:
            raise ValueError(
                f"{path} is not a readable .tar.gz archive ({str(error) or type(error).__name__}); download it again"
            ) from error
    return [_parse_cifar_batch(f"{name} in {path}", contents[name]) for name in names]


def read_cifar_batch(path):
    """The images of one CIFAR-10 python batch file, as uint8 [N, 32, 32, 3].

    A batch is a pickled dict whose `b"data"` is a uint8 array [N, 3072], each row an
    image's red, green and blue 32x32 planes in row-major order, and whose optional
    `b"labels"` has N entries, each in [0, 10) (`load` returns them). Raises a one-line
    ValueError naming `path` if the file is anything else; OSError if it cannot be opened.
    """
    with open(path, "rb") as f:
        return _parse_cifar_batch(path, f.read())[0]


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles plain containers and numpy arrays; any other global is refused, so no code runs."""

    _ALLOWED = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("numpy.core.multiarray", "_reconstruct"): np.empty(0).__reduce__()[0],  # numpy < 2 spelling
        ("numpy._core.multiarray", "_reconstruct"): np.empty(0).__reduce__()[0],
    }

    def find_class(self, module, name):
        if (module, name) in self._ALLOWED:
            return self._ALLOWED[module, name]
        raise pickle.UnpicklingError(f"refusing to load the global {module}.{name}")


def _parse_cifar_batch(source, raw):
    expected = 'a pickled dict with b"data" (uint8, N x 3072) and b"labels" (N)'
    try:
        batch = _ArrayUnpickler(io.BytesIO(raw), encoding="bytes").load()
    except Exception as error:  # whatever a damaged pickle raises: UnpicklingError, EOFError, ValueError, ...
        reason = " ".join(str(error).split())[:80]  # one line, short
        raise ValueError(
            f"{source} is not a CIFAR-10 python batch ({type(error).__name__}: {reason}); expected {expected}"
        ) from error
    if not isinstance(batch, dict) or b"data" not in batch:
        found = f"a dict with keys {list(batch)[:6]}" if isinstance(batch, dict) else f"a {type(batch).__name__}"
        raise ValueError(f"{source} is not a CIFAR-10 python batch: found {found}; expected {expected}")
    images, labels = batch[b"data"], batch.get(b"labels")
    row = math.prod(_CIFAR_SHAPE)
    if not isinstance(images, np.ndarray) or images.dtype != np.uint8 or images.ndim != 2 or images.shape[1] != row:
        found = (f"dtype {images.dtype} and shape {images.shape}" if isinstance(images, np.ndarray)
                 else f"a {type(images).__name__}")
        raise ValueError(f'{source} has b"data" of {found}: expected uint8 images of shape (N, {row})')
    if len(images) == 0:
        raise ValueError(f'{source} is empty: expected b"data" of shape (N, {row}), N >= 1')
    if labels is not None and (not hasattr(labels, "__len__") or len(labels) != len(images)):
        count = len(labels) if hasattr(labels, "__len__") else f"a {type(labels).__name__}"
        raise ValueError(f"{source} holds {len(images)} images but {count} labels: expected one label per image")
    labels = _class_labels(source, labels, NUM_CLASSES["cifar10"])
    return images.reshape(-1, *_CIFAR_SHAPE).transpose(0, 2, 3, 1), labels


def _scale_rgb(images):
    return np.asarray(images, np.float32) / 255.0


def _scale(images):
    return (np.asarray(images, np.float32) / 255.0)[..., None]
