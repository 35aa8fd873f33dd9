"""Importing keras_vae (every submodule), and drawing its pictures, changes no global state.

A fresh interpreter plays a user who has already chosen a matplotlib backend and rcParams:
it records the process-wide settings of matplotlib, Keras, TensorFlow, NumPy and Python,
imports keras_vae and all its submodules, records them again, draws every picture
(`plots.write_pictures`) and records them a third time. Keras, TensorFlow and TensorFlow
Probability are imported before the first record, so that only keras_vae's own doing is
measured (TFP adds warnings filters when imported).

Keras imports `matplotlib.pyplot` when it can (keras.src.visualization), which would hide a
later import by keras_vae behind the `sys.modules` cache. So in the subprocess every attempt
to import pyplot is recorded with the files on its call stack, and refused (keras carries on
without it) unless keras_vae is on that stack: those attempts are let through, so that the
assertions below, not an ImportError, report them.
"""

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
_MARKER = "IMPORT_TEST_STATES "

_SCRIPT = r'''
import hashlib, importlib, importlib.abc, importlib.util, json, logging, os, pkgutil, random, sys, tempfile, warnings

PACKAGE_DIR = os.path.join(os.path.realpath(importlib.util.find_spec("keras_vae").submodule_search_locations[0]), "")
pyplot_attempts = []  # one list per attempt: the files on the call stack, innermost first


def in_keras_vae(files):
    return any(os.path.realpath(file).startswith(PACKAGE_DIR) for file in files)


class PyplotGuard(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name != "matplotlib.pyplot":
            return None
        frame, files = sys._getframe(1), []
        while frame is not None:
            files.append(frame.f_code.co_filename)
            frame = frame.f_back
        pyplot_attempts.append(files)
        if in_keras_vae(files):
            return None  # let it happen: the assertions will say so
        raise ModuleNotFoundError("matplotlib.pyplot is refused to everything but keras_vae in this test")


sys.meta_path.insert(0, PyplotGuard())

import matplotlib

matplotlib.use("svg")  # the user's choices, neither of them matplotlib's default
matplotlib.rcParams["image.cmap"] = "magma"

import absl.logging
import keras
import numpy as np
import tensorflow as tf
import tensorflow_probability
from keras.src.backend.common import global_state
from keras.src.saving import serialization_lib
from tensorflow.python.data.ops import debug_mode
from tensorflow.python.eager import context
from tensorflow.python.framework import config as tf_framework_config


def digest(value):
    return hashlib.sha256(repr(value).encode()).hexdigest()[:16]


def snapshot():
    return {
        "matplotlib": {
            "backend": matplotlib.get_backend(),
            "rcParams": {key: repr(value) for key, value in matplotlib.rcParams.items()},
        },
        "pyplot_imported": "matplotlib.pyplot" in sys.modules,
        "pyplot_attempts_by_keras_vae": [files for files in pyplot_attempts if in_keras_vae(files)],
        "keras": {
            "backend": keras.config.backend(),
            "dtype_policy": keras.config.dtype_policy().name,
            "floatx": keras.config.floatx(),
            "epsilon": keras.config.epsilon(),
            "image_data_format": keras.config.image_data_format(),
            "interactive_logging": keras.config.is_interactive_logging_enabled(),
            "traceback_filtering": keras.config.is_traceback_filtering_enabled(),
            "flash_attention": keras.config.is_flash_attention_enabled(),
            "max_epochs": keras.config.max_epochs(),
            "max_steps_per_epoch": keras.config.max_steps_per_epoch(),
            "safe_mode": serialization_lib.in_safe_mode(),
            "global_state": sorted(vars(global_state.GLOBAL_STATE_TRACKER)),
        },
        "tensorflow": {
            "op_determinism": tf_framework_config.is_op_determinism_enabled(),
            "soft_device_placement": tf.config.get_soft_device_placement(),
            "jit": tf.config.optimizer.get_jit(),
            "optimizer_options": tf.config.optimizer.get_experimental_options(),
            "functions_run_eagerly": tf.config.functions_run_eagerly(),
            "tensor_float_32": tf.config.experimental.tensor_float_32_execution_enabled(),
            "synchronous_execution": tf.config.experimental.get_synchronous_execution(),
            "device_policy": tf.config.experimental.get_device_policy(),
            "inter_op_threads": tf.config.threading.get_inter_op_parallelism_threads(),
            "intra_op_threads": tf.config.threading.get_intra_op_parallelism_threads(),
            "global_seed": context.context()._seed,
            "data_debug_mode": debug_mode.DEBUG_MODE,
            "logger_level": tf.get_logger().level,
        },
        "python": {
            "environ": dict(os.environ),
            "path": list(sys.path),
            "random_state": digest(random.getstate()),
            "numpy_random_state": digest(np.random.get_state()[1].tolist()),
            "numpy_errors": np.geterr(),
            "numpy_print_options": repr(np.get_printoptions()),
            "warnings_filters": repr(warnings.filters),
            "logging_root": [logging.getLogger().level, len(logging.getLogger().handlers)],
            "absl_verbosity": absl.logging.get_verbosity(),
        },
    }


states = {"before": snapshot()}
names = sorted(m.name for m in pkgutil.iter_modules(importlib.util.find_spec("keras_vae").submodule_search_locations))
import keras_vae

for name in names:
    importlib.import_module(f"keras_vae.{name}")
states["after_import"] = snapshot()

from keras_vae import plots

model = keras_vae.mlp_vae((8, 8, 1), 2, (16,), seed=0)
x = np.random.default_rng(0).random((20, 8, 8, 1)).astype("float32")
history_rows = [{"epoch": "0", "elbo": "-40.0", "kl": "2.0"}, {"epoch": "1", "elbo": "-35.0", "kl": "3.0"}]
folder = tempfile.mkdtemp()
model.predict(x, verbose=0)  # Keras and TensorFlow set themselves up before the record, not while drawing
states["before_pictures"] = snapshot()
written, _ = plots.write_pictures(model, x, folder, labels=np.arange(20) % 3, history_rows=history_rows)
states["after_pictures"] = snapshot()
print("''' + _MARKER + r'''" + json.dumps({"submodules": names, "written": written, **states}))
'''


@pytest.fixture(scope="module")
def states(tmp_path_factory):
    work = tmp_path_factory.mktemp("import_test")
    env = dict(os.environ)
    for name in ("KERAS_BACKEND", "MPLBACKEND"):  # unset, so that a setdefault by the import would show
        env.pop(name, None)
    env["KERAS_HOME"] = str(work / "keras_home")  # Keras' defaults, whatever the user's keras.json says
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    env["PYTHONPATH"] = os.pathsep.join([*filter(None, [env.get("PYTHONPATH")]), str(ROOT)])
    result = subprocess.run([sys.executable, "-c", _SCRIPT], cwd=work, env=env, capture_output=True, text=True,
                            timeout=600)
    lines = [line for line in result.stdout.splitlines() if line.startswith(_MARKER)]
    assert result.returncode == 0 and lines, f"exit {result.returncode}\nstdout:\n{result.stdout[-2000:]}\n" \
                                             f"stderr:\n{result.stderr[-4000:]}"
    return json.loads(lines[-1][len(_MARKER):])


def changes(before, after):
    """{key: (before, after)} for the keys of two flat dicts whose values differ."""
    return {key: (before.get(key), after.get(key)) for key in sorted(before.keys() | after.keys())
            if before.get(key) != after.get(key)}


def test_every_submodule_is_imported(states):
    assert {"plots", "callbacks", "export", "evaluation", "data", "models"} <= set(states["submodules"])


def test_import_leaves_matplotlib_alone(states):
    before, after = states["before"]["matplotlib"], states["after_import"]["matplotlib"]
    assert before["backend"] == "svg" and before["rcParams"]["image.cmap"] == repr("magma")  # the user's choices
    assert after["backend"] == before["backend"]
    assert not changes(before["rcParams"], after["rcParams"])
    assert not states["after_import"]["pyplot_attempts_by_keras_vae"], "importing keras_vae imports matplotlib.pyplot"
    assert not states["after_import"]["pyplot_imported"], "matplotlib.pyplot was imported"


def test_import_leaves_keras_config_alone(states):
    assert not changes(states["before"]["keras"], states["after_import"]["keras"])


def test_import_leaves_tensorflow_config_alone(states):
    assert not states["after_import"]["tensorflow"]["op_determinism"]
    assert not changes(states["before"]["tensorflow"], states["after_import"]["tensorflow"])


def test_import_leaves_environment_and_python_state_alone(states):
    before, after = states["before"]["python"], states["after_import"]["python"]
    assert not changes(before["environ"], after["environ"]), "os.environ changed"
    assert not changes({k: v for k, v in before.items() if k != "environ"},
                       {k: v for k, v in after.items() if k != "environ"})


def test_pictures_leave_global_state_alone(states):
    assert set(states["written"]) >= {"samples.png", "reconstructions.png", "latent_manifold.png",
                                      "latent_traversals.png", "latent_scatter.png", "learning_curves.png"}
    before, after = states["before_pictures"], states["after_pictures"]
    assert not after["pyplot_attempts_by_keras_vae"], "drawing the pictures imports matplotlib.pyplot"
    assert not after["pyplot_imported"], "matplotlib.pyplot was imported"
    assert after["matplotlib"]["backend"] == "svg"
    assert not changes(before["matplotlib"]["rcParams"], after["matplotlib"]["rcParams"])
    for group in ("keras", "tensorflow"):
        assert not changes(before[group], after[group]), group
    assert not changes(before["python"]["environ"], after["python"]["environ"]), "os.environ changed"


_LOAD_SCRIPT = r'''
import sys
import keras
import numpy as np
{import_line}
model = keras.saving.load_model(sys.argv[1])
x = np.load(sys.argv[2])
np.save(sys.argv[3], model.encode(x).mean().numpy())
'''


def _load_in_fresh_process(tmp_path, import_line):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    env["PYTHONPATH"] = os.pathsep.join([*filter(None, [env.get("PYTHONPATH")]), str(ROOT)])
    return subprocess.run([sys.executable, "-c", _LOAD_SCRIPT.format(import_line=import_line),
                           str(tmp_path / "model.keras"), str(tmp_path / "x.npy"), str(tmp_path / "means.npy")],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)


def test_keras_file_loads_with_plain_load_model_once_keras_vae_is_imported(tmp_path):
    """The README's promise: `import keras_vae` is the one import `keras.saving.load_model` needs.

    Keras imports a saved class's module by name only for its own packages (keras,
    keras_hub, ...), so without that import the same call cannot find `VAE`; if a Keras
    release lifts that limit, the second half fails and the README should say so."""
    import keras_vae  # noqa: PLC0415

    model = keras_vae.mlp_vae((8, 8, 1), 3, (16,), seed=0)
    x = np.random.default_rng(0).random((5, 8, 8, 1)).astype("float32")
    model.save(tmp_path / "model.keras")
    np.save(tmp_path / "x.npy", x)

    loaded = _load_in_fresh_process(tmp_path, "import keras_vae")
    assert loaded.returncode == 0, loaded.stderr[-3000:]
    np.testing.assert_allclose(np.load(tmp_path / "means.npy"), model.encode(x).mean().numpy(), rtol=1e-6)

    (tmp_path / "means.npy").unlink()
    bare = _load_in_fresh_process(tmp_path, "")
    assert bare.returncode != 0 and "Could not locate class 'VAE'" in bare.stderr
    assert not (tmp_path / "means.npy").exists()
