"""The apps' command line: `--help` answers without importing TensorFlow, groups every flag by
purpose, and the choices the flags spell out agree with keras_vae's own names."""

import json
import os
import re
import subprocess
import sys

import pytest

from apps_test import ROOT

APPS = ("train", "evaluate", "sample", "export")

# Runs an app's module as `python -m apps.<app> --help` does, then reports what was imported.
_HELP_SCRIPT = r"""
import json, runpy, sys
sys.argv = ["apps/{app}.py", "--help"]
try:
    runpy.run_module("apps.{app}", run_name="__main__", alter_sys=True)
    code = None
except SystemExit as exit:
    code = exit.code
print("CLI_TEST " + json.dumps({{"code": code, "imported": sorted(m for m in ("tensorflow", "keras", "keras_vae")
                                                                if m in sys.modules)}}))
"""

# The flags an app's module declares as its own (defined there or adopted), by name.
_KEY_FLAGS_SCRIPT = r"""
import importlib, json
from absl import flags
module = importlib.import_module("apps.{app}")
print("CLI_TEST " + json.dumps(sorted(f.name for f in flags.FLAGS.get_key_flags_for_module(module))))
"""


def _run(script):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=300)
    lines = [line for line in result.stdout.splitlines() if line.startswith("CLI_TEST ")]
    assert result.returncode == 0 and lines, result.stderr[-3000:]
    return result.stdout, json.loads(lines[-1][len("CLI_TEST "):])


@pytest.mark.parametrize("app", APPS)
def test_help_answers_without_tensorflow_and_groups_every_flag(app):
    out, report = _run(_HELP_SCRIPT.format(app=app))
    assert report == {"code": 0, "imported": []}  # neither TensorFlow nor Keras nor keras_vae was loaded
    shown = re.findall(r"^  --(\w+):", out, re.M)
    assert len(shown) == len(set(shown)), "a flag is listed twice"
    _, key_flags = _run(_KEY_FLAGS_SCRIPT.format(app=app))
    assert set(shown) == set(key_flags) - {"flagfile", "undefok"}  # absl's own two are named in the last line
    groups = re.findall(r"^(\w[\w ]*):$", out, re.M)
    assert groups[:2] == ["run", "data"] and len(groups) >= 3


def test_train_help_groups_flags_by_purpose():
    out, _ = _run(_HELP_SCRIPT.format(app="train"))
    sections = dict(re.findall(r"^(\w[\w ]*):\n((?:  .*\n|    .*\n)+)", out + "\n", re.M))
    assert {"data", "model", "objective", "training", "output"} <= set(sections)
    assert "--likelihood:" in sections["model"] and "--beta:" in sections["objective"]
    assert "--epochs:" in sections["training"] and "--export_dir:" in sections["output"]


def test_flag_choices_agree_with_the_library():
    from absl import flags

    from apps import common, train  # noqa: F401  (train defines its flags)
    from keras_vae import callbacks, data, execution, export, likelihoods, priors

    assert common.DATASETS == data.DATASETS
    assert common.BINARIZATIONS == data.BINARIZATIONS
    assert common.COLOR_MODES == data.COLOR_MODES
    assert sorted(flags.FLAGS["likelihood"].parser.enum_values) == sorted(likelihoods.LIKELIHOODS)
    assert sorted(flags.FLAGS["prior"].parser.enum_values) == sorted(priors.PRIORS)
    assert tuple(flags.FLAGS["lr_schedule"].parser.enum_values) == callbacks.LR_SCHEDULES
    assert flags.FLAGS["score_samples"].default == export.SCORE_SAMPLES
    assert f"(default {execution.STEPS_PER_EXECUTION}," in flags.FLAGS["steps_per_execution"].help
