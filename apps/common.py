"""Flags and helpers shared by the apps: the run folder and dataset flags, one-line errors, flagfiles."""

import contextlib
import csv
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402
from absl import app, flags, logging  # noqa: E402

from keras_vae import data, runs  # noqa: E402

MODEL_DIR = flags.DEFINE_string(
    "model_dir", None, "Run folder: apps.train writes model.keras, flags.cfg, history.csv, logs and backup/ there; "
    "apps.evaluate and apps.export read it.")
DATASET = flags.DEFINE_enum("dataset", "digits", data.DATASETS, "Dataset; digits needs no download.")
DATA_DIR = flags.DEFINE_string("data_dir", None, "Folder holding the dataset's IDX .gz files or Keras .npz.")
VALIDATION_SIZE = flags.DEFINE_integer(
    "validation_size", None, "Training examples held out for validation (default: the dataset's own; "
    "Burda et al.: 400).", lower_bound=0)
BINARIZE = flags.DEFINE_enum("binarize", "none", data.BINARIZATIONS,
                             "none: intensities; static: one fixed draw; dynamic: a fresh draw every batch "
                             "(evaluation splits are drawn once, with a fixed seed).")
SEED = flags.DEFINE_integer("seed", 0, "Seed for initialisation, shuffling, binarization and z samples.")


@flags.multi_flags_validator(["dataset", "data_dir"], "--data_dir applies to mnist, fashion_mnist and cifar10, not digits")
def _data_dir(values):
    return values["data_dir"] is None or values["dataset"] != "digits"


def run(main, app_name):
    """`app.run(main)`, with a bad command line reported as one line, `<app_name>: error: <why>`,
    and exit status 1 (absl's own parser prints two lines and a hint)."""
    def parse(argv):
        try:
            argv = flags.FLAGS(argv)
        except flags.Error as error:
            sys.exit(f"{app_name}: error: {'; '.join(str(error).splitlines())}")
        if len(argv) > 1:
            sys.exit(f"{app_name}: error: unexpected arguments: {' '.join(argv[1:])} (flags take --name=value)")
        return argv

    app.run(main, flags_parser=parse)


def quiet_logs():
    """Keep TF's INFO logging out of the progress bar, unless --verbosity was given."""
    if not flags.FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)


def load_splits():
    """The dataset the flags name."""
    return data.load(DATASET.value, DATA_DIR.value, VALIDATION_SIZE.value, BINARIZE.value, SEED.value)


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
    try:
        return keras.saving.load_model(path)
    except Exception as error:  # a damaged zip or config fails in many ways, none of them the user's code
        why = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise ValueError(f"{path} is damaged or not a Keras model written by apps.train ({why[:200]})") from error
