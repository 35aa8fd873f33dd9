"""Flags and helpers shared by the apps: the run folder and dataset flags, one-line errors, flagfiles.

The apps import TensorFlow, Keras and keras_vae only when their `main` first uses them
(`LazyModule`), after the flags are parsed: `--help` and a bad flag answer at once, without
TensorFlow's start-up time and log lines. So a flag's choices are spelled out here rather than
read from keras_vae (tests/cli_test.py checks that they agree).
"""

import contextlib
import csv
import importlib
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags, logging  # noqa: E402


class LazyModule:
    """The module `name`, imported at the first access to one of its attributes."""

    def __init__(self, name):
        self._name = name

    def __getattr__(self, attribute):
        return getattr(importlib.import_module(self._name), attribute)


keras = LazyModule("keras")
tf = LazyModule("tensorflow")
data = LazyModule("keras_vae.data")
likelihoods = LazyModule("keras_vae.likelihoods")
runs = LazyModule("keras_vae.runs")

# keras_vae's names for the choices of the data flags: data.DATASETS, data.BINARIZATIONS, data.COLOR_MODES.
DATASETS = ("digits", "mnist", "fashion_mnist", "cifar10")
BINARIZATIONS = ("none", "static", "dynamic")
COLOR_MODES = ("grayscale", "rgb", "rgba")

MODEL_DIR = flags.DEFINE_string(
    "model_dir", None, "Run folder: apps.train writes model.keras, flags.cfg, history.csv, logs and backup/ there; "
    "apps.evaluate and apps.export read it.")
DATASET = flags.DEFINE_string(
    "dataset", "digits", f"A built-in dataset, {', '.join(DATASETS)} (digits needs no download), or the path "
    "of your own data: a folder of images (one sub-folder per class gives labels), a .npy or a .npz file (README, "
    "'Your own data').")
DATA_DIR = flags.DEFINE_string("data_dir", None, "Folder holding a built-in dataset's IDX .gz files, Keras .npz or "
                               "CIFAR-10 batches.")
VALIDATION_SIZE = flags.DEFINE_integer(
    "validation_size", None, "Training examples held out for validation (default: the dataset's own; your own "
    "data: 10%; Burda et al.: 400).", lower_bound=0)
TEST_SIZE = flags.DEFINE_integer("test_size", None, "Your own data without a test split: examples held out for "
                                 "testing (default: 10%, at least 1).", lower_bound=1)
IMAGE_SIZE = flags.DEFINE_list("image_size", None, "An image folder: H,W to resize every image to, e.g. 28,28 "
                               "(default: the images' own size, if they all have one).")
COLOR_MODE = flags.DEFINE_enum("color_mode", None, COLOR_MODES, "An image folder: how to read the images "
                               "(default: grayscale if every image is grey, else rgb).")
# "auto" is resolved by load_splits before loading, and the flag set to the result.
BINARIZE = flags.DEFINE_enum("binarize", "auto", ("auto",) + BINARIZATIONS,
                             "auto: dynamic for a Bernoulli likelihood (log p(x) is then a log-likelihood of "
                             "binary data), else none; none: intensities; static: one fixed draw; dynamic: a fresh "
                             "draw every batch (evaluation splits are drawn once, with a fixed seed).")
SEED = flags.DEFINE_integer("seed", 0, "Seed for initialisation, shuffling, binarization and z samples.")

# The flags that say which data a run used: apps.evaluate and apps.sample adopt them from the
# training run's flags.cfg (those given on their own command line win).
DATASET_FLAGS = ("dataset", "data_dir", "validation_size", "test_size", "image_size", "color_mode", "binarize")


@flags.validator("dataset", f"must be one of {', '.join(DATASETS)}, or the path of an existing image folder, "
                 ".npy or .npz file")
def _dataset(value):
    return value in DATASETS or (bool(value) and os.path.exists(value))


@flags.multi_flags_validator(["dataset", "data_dir"],
                             "--data_dir applies to mnist, fashion_mnist and cifar10, not digits or a path")
def _data_dir(values):
    return values["data_dir"] is None or values["dataset"] in ("mnist", "fashion_mnist", "cifar10")


@flags.multi_flags_validator(["dataset", "test_size", "image_size", "color_mode"],
                             "--test_size, --image_size and --color_mode apply to a --dataset path (your own "
                             "data), not a built-in dataset")
def _own_data_flags(values):
    own = (values["test_size"], values["image_size"], values["color_mode"])
    return values["dataset"] not in DATASETS or all(value is None for value in own)


@flags.validator("image_size", "must be two positive integers, height,width (e.g. 28,28)")
def _image_size(value):
    return value is None or (len(value) == 2 and all(v.isdigit() and int(v) > 0 for v in value))


# The flags of every app that say where a run lives and which data it uses, as `--help` groups them.
RUN_GROUP = ("run", ("model_dir", "seed"))
DATA_GROUP = ("data", DATASET_FLAGS)
_HELP = ("--help", "-h", "-?", "--helpshort")


def run(main, app_name, groups=()):
    """`app.run(main)`, with a bad command line reported as one line, `<app_name>: error: <why>`,
    and exit status 1 (absl's own parser prints two lines and a hint). `--help` prints the app's
    docstring and its flags under `groups`, (title, flag names) pairs, and exits with status 0."""
    def parse(argv):
        if any(arg in _HELP for arg in argv[1:]):
            print(help_text(sys.modules[main.__module__].__doc__, groups))
            sys.exit(0)
        try:
            argv = flags.FLAGS(argv)
        except flags.Error as error:
            sys.exit(f"{app_name}: error: {'; '.join(str(error).splitlines())}")
        if len(argv) > 1:
            sys.exit(f"{app_name}: error: unexpected arguments: {' '.join(argv[1:])} (flags take --name=value)")
        return argv

    app.run(main, flags_parser=parse)


def help_text(doc, groups):
    """`doc`, then each group's flags: name, help and default, wrapped as absl wraps them."""
    lines = [(doc or "").strip()]
    for title, names in groups:
        lines += ["", f"{title}:"]
        for name in names:
            flag = flags.FLAGS[name]
            lines.append(flags.text_wrap(f"--{name}: {flag.help}", indent="    ", firstline_indent="  "))
            if flag.default is not None:
                lines.append(f"    (default: {flag.default_as_str})")
    lines += ["", "--flagfile=FILE reads flags from FILE; --helpfull lists every flag, absl's own too."]
    return "\n".join(lines)


def quiet_logs():
    """Keep TF's INFO logging out of the progress bar, unless --verbosity was given."""
    if not flags.FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)


def is_bernoulli(model):
    """True if `model`'s p(x|z) is Bernoulli, so --binarize=auto means dynamic. The continuous Bernoulli
    (a subclass) is a density on [0, 1], for intensities: not Bernoulli here."""
    return (isinstance(model.likelihood, likelihoods.BernoulliLikelihood)
            and not isinstance(model.likelihood, likelihoods.ContinuousBernoulliLikelihood))


def load_splits(bernoulli=None):
    """The dataset the flags name. `--binarize=auto` is resolved first, and the flag set to the result
    (so flags.cfg records what was used): dynamic if the model's likelihood is Bernoulli (`bernoulli`,
    required then), else none: a Bernoulli likelihood of grey levels is not a density, so its
    numbers would not be log-likelihoods."""
    if BINARIZE.value == "auto":
        if bernoulli is None:
            raise ValueError("--binarize=auto needs the model's likelihood; pass --binarize=none, static or dynamic")
        flags.FLAGS.binarize = "dynamic" if bernoulli else "none"
    if DATASET.value not in DATASETS:  # a path: absolute, so flags.cfg works from any folder
        flags.FLAGS.dataset = os.path.abspath(DATASET.value)
    image_size = None if IMAGE_SIZE.value is None else tuple(int(v) for v in IMAGE_SIZE.value)
    return data.load(DATASET.value, DATA_DIR.value, VALIDATION_SIZE.value, BINARIZE.value, SEED.value,
                     image_size=image_size, color_mode=COLOR_MODE.value, test_size=TEST_SIZE.value)


def missing_labels():
    """Why --dataset has no class labels and how to give it some, for apps.train --conditional's error."""
    name = DATASET.value
    if name in ("mnist", "fashion_mnist"):
        return f"the {name} files found have none (add the *-labels-idx1-ubyte.gz files)"
    if name in DATASETS:
        return f'the {name} files found have none (each CIFAR-10 batch needs its b"labels")'
    if os.path.isdir(name):
        return f"the images in {name} have none (put them in one sub-folder per class)"
    if name.lower().endswith(".npz"):
        return f"{name} has none (add y_train and y_test arrays, or y beside x)"
    return f"{name} has none (a .npy holds images only: use an .npz with y_train and y_test, or x and y)"


@contextlib.contextmanager
def one_line_errors(app_name):
    """Turn expected failures (bad data, missing files) into one line on stderr and exit status 1."""
    try:
        yield
    except (ValueError, OSError) as error:
        sys.exit(f"{app_name}: error: {error}")
    except tf.errors.OpError as error:  # e.g. TensorFlow failing to write a file: its message, one line
        sys.exit(f"{app_name}: error: {error.message.strip().splitlines()[0]}")


def write_flagfile(path, module):
    """Write the flags `module` defines and uses, as a flagfile that reproduces the run."""
    key_flags = flags.FLAGS.get_key_flags_for_module(module)
    lines = sorted(f.serialize() for f in key_flags if f.value is not None)
    runs.write_text(path, "\n".join(lines) + "\n", kill_name="flagfile")


def run_flags(model_dir):
    """The flags a training run in `model_dir` was started with (from its flags.cfg), as strings."""
    path = os.path.join(model_dir, "flags.cfg")
    if not os.path.exists(path):
        return {}
    with open(path) as f:
        return dict(line.strip()[2:].split("=", 1) for line in f if line.startswith("--") and "=" in line)


def adopt_run_flags(model_dir, names):
    """Set the flags `names` to the training run's values, except those given on this command line."""
    trained = run_flags(model_dir)
    for name in names:
        if name in trained and not flags.FLAGS[name].present:
            flags.FLAGS[name].parse(trained[name])


def history_rows(model_dir):
    """The rows of the run's history.csv, one dict of strings per epoch ([] without one)."""
    path = os.path.join(model_dir, "history.csv")
    if not os.path.exists(path):
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def final_metrics(model_dir):
    """The last epoch's row of the run's history.csv, as numbers ({} without one)."""
    rows = history_rows(model_dir)
    return {name: float(value) for name, value in rows[-1].items()} if rows else {}


def load_model(model_dir, flag="model_dir"):
    """`<model_dir>/model.keras`, or a FileNotFoundError saying what --`flag` should hold."""
    path = os.path.join(model_dir, "model.keras")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"No model at {path}: --{flag} must be a folder written by apps.train")
    importlib.import_module("keras_vae")  # registers the package's classes, which the file names, with Keras
    try:
        return keras.saving.load_model(path)
    except Exception as error:  # a damaged zip or config fails in many ways, none of them the user's code
        why = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise ValueError(f"{path} is damaged or not a Keras model written by apps.train ({why[:200]})") from error
