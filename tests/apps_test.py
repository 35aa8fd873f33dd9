"""End-to-end tests of apps.train and apps.evaluate, run as real subprocesses on tiny digits runs; flag
validation (which needs no TensorFlow run) is parsed in this process."""

import csv
import glob
import json
import math
import os
import pathlib
import re
import subprocess
import sys
import types

import keras
import numpy as np
import pytest
import tensorflow as tf
from absl import flags as absl_flags
from absl.testing import flagsaver

import keras_vae
from helpers import tree_digest

ROOT = pathlib.Path(__file__).resolve().parents[1]
# A tiny digits run on the apps' defaults: XLA and the fused loop. `trained` runs it so.
TINY_DEFAULTS = ["--dataset=digits", "--epochs=2", "--latent_dim=2", "--hidden_units=16", "--batch_size=64"]
# The same without XLA, for the many runs where XLA's compile is not under test: crash_test takes 5% less
# time so (docs/RESULTS.md, "The test suite without XLA in tiny app runs").
TINY = TINY_DEFAULTS + ["--jit_compile=false"]
EVAL_KEYS = ("test_elbo", "test_iwae_bound", "iwae_bound_k", "test_nll", "kl", "reconstruction", "bits_per_dim",
             "active_units", "num_examples", "iw_samples")
# TensorFlow's C++ start-up chatter (absl log lines), which TF_CPP_MIN_LOG_LEVEL does not silence.
_NOISE = re.compile(r"^(WARNING: All log messages before absl::InitializeLog\(\)|[IWE]\d{4} \d\d:\d\d:\d\d)")
_ABSL_HINT = "Pass --helpshort or --helpfull to see help on flags."


def run_app(app, *args, env=None):
    env = {**os.environ, **(env or {})}
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    return subprocess.run([sys.executable, "-m", f"apps.{app}", *map(str, args)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=900)


def message_lines(stderr):
    """stderr without TensorFlow's start-up log lines and absl's help hint."""
    return [line for line in stderr.splitlines() if line.strip() and not _NOISE.match(line) and line != _ABSL_HINT]


def assert_ok(result):
    assert result.returncode == 0, f"exit {result.returncode}\nstdout:\n{result.stdout[-2000:]}\n" \
                                   f"stderr:\n{result.stderr[-4000:]}"


def assert_one_line_error(result, *fragments):
    lines = message_lines(result.stderr)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr, result.stderr
    assert len(lines) == 1, result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def read_history(model_dir):
    with open(os.path.join(model_dir, "history.csv")) as f:
        return list(csv.DictReader(f))


def read_flags(model_dir):
    with open(os.path.join(model_dir, "flags.cfg")) as f:
        lines = [line.strip()[2:] for line in f if line.startswith("--")]
    # Boolean flags are written as --name or --noname.
    return dict(line.split("=", 1) if "=" in line else (line, "") for line in lines)


def scalars(event_file):
    """{tag: [(step, value)]} of the scalar summaries in one TensorBoard event file."""
    found = {}
    for event in tf.compat.v1.train.summary_iterator(event_file):
        for value in event.summary.value:
            number = float(tf.make_ndarray(value.tensor)) if value.HasField("tensor") else value.simple_value
            found.setdefault(value.tag, []).append((event.step, number))
    return found


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One tiny training run on the apps' defaults, shared by the tests below."""
    root = tmp_path_factory.mktemp("trained")
    run = types.SimpleNamespace(model_dir=str(root / "model"), export_dir=str(root / "export"))
    run.result = run_app("train", *TINY_DEFAULTS, f"--model_dir={run.model_dir}", f"--export_dir={run.export_dir}")
    assert_ok(run.result)
    run.version_1 = os.path.join(run.export_dir, "vae_digits", "1")
    run.version_1_digest = tree_digest(run.version_1)
    return run


@pytest.fixture(scope="module")
def rerun(trained, tmp_path_factory):
    """A second, smaller run configured by a flagfile, exporting into the first run's export_dir."""
    root = tmp_path_factory.mktemp("rerun")
    flagfile = root / "run.cfg"
    flagfile.write_text("# a tiny digits run\n--dataset=digits\n--epochs=1\n--latent_dim=3\n--hidden_units=8\n"
                        "--batch_size=128\n--seed=7\n--jit_compile=false\n")
    run = types.SimpleNamespace(model_dir=str(root / "model"))
    run.result = run_app("train", f"--flagfile={flagfile}", f"--model_dir={run.model_dir}",
                         f"--export_dir={trained.export_dir}")
    assert_ok(run.result)
    return run


@pytest.fixture(scope="module")
def evaluated(trained, tmp_path_factory):
    output = tmp_path_factory.mktemp("evaluated") / "r.json"
    result = run_app("evaluate", f"--model_dir={trained.model_dir}", "--iw_samples=20", "--bound_samples=5",
                     f"--output_json={output}")
    assert_ok(result)
    with open(output) as f:
        return json.load(f)


@pytest.fixture
def parse_flags(monkeypatch):
    """`parse(*args)` parses a command line in this process as `app.run` does before `main`: apps.train's
    flags (with the apps.common and apps.export ones it adopts), every validator included. A bad one raises
    the `flags.Error` that `common.run` prints as one line, `train: error: <error>`. The flags
    and the working directory (flagfiles name paths relative to the repo) are restored afterwards.

    Only apps.train is imported into the test process: apps.evaluate and apps.sample define --batch_size
    and --num_samples as well, and absl refuses a flag defined twice, so their flags stay subprocess tests.
    """
    from apps import train  # noqa: F401  (defines the flags)

    monkeypatch.chdir(ROOT)
    was_parsed = absl_flags.FLAGS.is_parsed()
    with flagsaver.flagsaver():
        yield lambda *args: absl_flags.FLAGS(["train", *map(str, args)])
        if not was_parsed:
            absl_flags.FLAGS.unparse_flags()


def assert_flags_error(parse, args, fragments):
    """`args` fail to parse, with a message that app.run prints as one line holding every fragment."""
    with pytest.raises(absl_flags.Error) as raised:
        parse(*args)
    assert "\n" not in str(raised.value), str(raised.value)
    line = f"train: error: {raised.value}"
    for fragment in fragments:
        assert fragment in line, line


# ------------------------------------------------------------------ apps.train
def test_train_writes_every_output(trained):
    assert "Exported SavedModel to" in trained.result.stdout
    for name in ("model.keras", "flags.cfg", "history.csv"):
        assert os.path.isfile(os.path.join(trained.model_dir, name)), name
    assert os.path.isfile(os.path.join(trained.version_1, "saved_model.pb"))
    assert os.path.isdir(os.path.join(trained.version_1, "variables"))
    # A finished run leaves no backup to resume from.
    assert not os.path.exists(os.path.join(trained.model_dir, "backup"))


def test_train_flags_cfg_reproduces_the_run(trained):
    flags = read_flags(trained.model_dir)
    assert flags["dataset"] == "digits"
    assert flags["epochs"] == "2"
    assert flags["latent_dim"] == "2"
    assert flags["hidden_units"] == "16"
    assert flags["batch_size"] == "64"
    assert flags["model_dir"] == trained.model_dir
    assert flags["export_dir"] == trained.export_dir


def test_train_history(trained):
    rows = read_history(trained.model_dir)
    assert [int(row["epoch"]) for row in rows] == [0, 1]
    for key in ("elbo", "kl", "loss", "reconstruction", "val_elbo", "val_kl", "val_loss", "val_reconstruction"):
        assert all(math.isfinite(float(row[key])) for row in rows), key
    assert all(float(row["seconds"]) > 0 for row in rows)
    last = rows[-1]
    assert float(last["val_elbo"]) < 0
    # beta = 1: loss is the negative ELBO, and the ELBO is reconstruction - KL.
    assert float(last["loss"]) == pytest.approx(-float(last["elbo"]), rel=1e-5)
    assert float(last["val_elbo"]) == pytest.approx(float(last["val_reconstruction"]) - float(last["val_kl"]),
                                                    abs=1e-3)


def test_train_tensorboard_logs(trained):
    logs = os.path.join(trained.model_dir, "logs")
    history = read_history(trained.model_dir)
    for split, column in (("train", "elbo"), ("validation", "val_elbo")):
        files = glob.glob(os.path.join(logs, split, "events.out.tfevents.*"))
        assert files, f"no event file in {logs}/{split}"
        tags = {}
        for path in files:
            tags.update(scalars(path))
        assert {"epoch_elbo", "epoch_loss", "epoch_kl", "epoch_reconstruction"} <= set(tags), sorted(tags)
        steps = [step for step, _ in tags["epoch_elbo"]]
        values = [value for _, value in tags["epoch_elbo"]]
        assert steps == [0, 1]
        assert all(math.isfinite(v) and v < 0 for v in values)
        assert values[-1] == pytest.approx(float(history[-1][column]), rel=1e-5)
        if split == "train":  # each epoch's wall time, as history.csv has it
            assert [value for _, value in tags["epoch_seconds"]] == pytest.approx(
                [float(row["seconds"]) for row in history], rel=1e-5)


def test_saved_keras_model_evaluates_like_training(trained):
    model = keras.saving.load_model(os.path.join(trained.model_dir, "model.keras"))
    assert isinstance(model, keras_vae.VAE)
    assert model.latent_dim == 2
    validation = keras_vae.data.load("digits").validation
    results = model.evaluate(validation, batch_size=64, return_dict=True, verbose=0)
    last_val_elbo = float(read_history(trained.model_dir)[-1]["val_elbo"])
    assert math.isfinite(results["elbo"])
    assert results["elbo"] == pytest.approx(last_val_elbo, abs=3.0)


def test_flagfile_configures_the_run(rerun):
    flags = read_flags(rerun.model_dir)
    assert flags["latent_dim"] == "3"
    assert flags["hidden_units"] == "8"
    assert flags["epochs"] == "1"
    assert flags["batch_size"] == "128"
    assert flags["seed"] == "7"
    assert [int(row["epoch"]) for row in read_history(rerun.model_dir)] == [0]
    model = keras.saving.load_model(os.path.join(rerun.model_dir, "model.keras"))
    assert model.latent_dim == 3


def test_rerun_exports_a_new_version_and_keeps_the_old(trained, rerun):
    base = os.path.join(trained.export_dir, "vae_digits")
    assert os.path.join(base, "2") in rerun.result.stdout
    assert sorted(os.listdir(base)) == ["1", "2"]  # no hidden staging folders either
    assert os.path.isfile(os.path.join(base, "2", "saved_model.pb"))
    assert tree_digest(trained.version_1) == trained.version_1_digest


@pytest.mark.parametrize("args, fragments", [
    (["--dataset=cifar"], ["train: error:", "--dataset", "digits"]),
    (["--epochs=-1"], ["train: error:", "--epochs"]),
    (["--hidden_units=a,b"], ["train: error:", "--hidden_units", "positive integers"]),
    (["--learning_rate=0"], ["train: error:", "--learning_rate", "must be positive"]),
    (["--objective=iwae", "--num_samples=1"], ["train: error:", "num_samples > 1"]),
    (["--likelihood_scale=-1"], ["train: error:", "--likelihood_scale", "positive number"]),
    (["--strategy=tpu"], ["train: error:", "--strategy", "mirrored"]),
    (["--no_such_flag=1"], ["train: error:", "no_such_flag"]),
    (["--free_bits=0.5", "--objective=iwae", "--num_samples=2"],
     ["train: error:", "free_bits=0.5", "free bits need the ELBO objective"]),
    (["--kl_warmup_epochs=2", "--kl_cycle_epochs=2"], ["train: error:", "one KL schedule"]),
    (["--architecture=conv", "--filters=8,0"], ["train: error:", "--filters"]),
    (["--conditional", "--prior=vamp"], ["train: error:", "--prior=vamp cannot be --conditional"]),
    (["--likelihood=discretized_logistic", "--binarize=static"], ["train: error:", "--binarize=none"]),
    (["--prior=mixture", "--free_bits=0.5"], ["train: error:", "the standard normal prior", "prior='mixture'"]),
    (["--latent_dim=4,0"], ["train: error:", "--latent_dim", "one per stochastic layer"]),
    (["--link_units=8"], ["train: error:", "--link_units needs several stochastic layers"]),
    (["--latent_dim=4,2", "--architecture=conv"], ["train: error:", "several stochastic layers", "--architecture=conv"]),
    (["--latent_dim=4,2", "--prior=vamp", "--covariance=full"],
     ["train: error:", "several stochastic layers", "--prior=vamp, --covariance=full"]),
    (["--latent_dim=4,2", "--free_bits=0.5"], ["train: error:", "--free_bits floors", "take none"]),
], ids=["dataset", "epochs", "hidden_units", "learning_rate", "iwae_samples", "likelihood_scale", "strategy",
        "unknown", "free_bits_iwae", "two_kl_schedules", "filters", "conditional_vamp", "intensity_binarized",
        "free_bits_mixture", "latent_dims", "link_units_one_layer", "stacked_conv", "stacked_prior_covariance",
        "stacked_free_bits"])
def test_train_bad_flags(parse_flags, args, fragments):
    tiny = [flag for flag in TINY if flag.split("=")[0] not in {arg.split("=")[0] for arg in args}]
    assert_flags_error(parse_flags, [*tiny, *args, "--model_dir=runs/unused"], fragments)


def test_train_bad_flag_is_one_line_error_and_writes_nothing(tmp_path):
    """The real app on a bad flag: exactly one stderr line, exit status 1, no run folder and no export."""
    result = run_app("train", *TINY, "--objective=iwae", "--num_samples=1", f"--model_dir={tmp_path / 'model'}",
                     f"--export_dir={tmp_path / 'export'}")
    line = assert_one_line_error(result, "num_samples > 1")
    assert line.startswith("train: error:") and result.returncode == 1
    assert sorted(os.listdir(tmp_path)) == []


def test_train_empty_data_dir(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    result = run_app("train", "--dataset=mnist", f"--data_dir={empty}", "--epochs=1",
                     f"--model_dir={tmp_path / 'model'}", f"--export_dir={tmp_path / 'export'}")
    assert_one_line_error(result, "train: error:", f"--data_dir={empty}", "mnist")
    assert sorted(os.listdir(tmp_path)) == ["empty"]
    assert os.listdir(empty) == []


def test_train_refuses_to_overwrite_a_finished_run(trained):
    before = tree_digest(trained.model_dir)
    result = run_app("train", *TINY, f"--model_dir={trained.model_dir}", "--export_dir=")
    assert_one_line_error(result, "train: error:", "holds a finished run")
    assert tree_digest(trained.model_dir) == before


def test_train_conditional(tmp_path):
    model_dir = tmp_path / "model"
    result = run_app("train", *TINY, "--conditional", f"--model_dir={model_dir}", f"--export_dir={tmp_path / 'e'}")
    assert_ok(result)
    model = keras.saving.load_model(model_dir / "model.keras")
    assert model.num_classes == 10
    assert model.sample(3, seed=0, labels=7).shape == (3, 8, 8, 1)
    # The run exports the trained model, its signatures taking labels y.
    version = tmp_path / "e" / "vae_digits" / "1"
    assert f"Exported SavedModel to {version}" in result.stdout
    x, y = tf.constant(keras_vae.data.load("digits").test[:4]), np.int32([7, 1, 0, 3])
    z_mean = tf.saved_model.load(str(version)).signatures["encode"](x=x, y=tf.constant(y))["z_mean"]
    np.testing.assert_allclose(z_mean.numpy(), model.encode(x, y).mean().numpy(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("flags_", [["--architecture=conv", "--filters=8,16"], ["--prior=mixture"],
                                    ["--likelihood=continuous_bernoulli"], ["--free_bits=0.2", "--kl_cycle_epochs=2"]],
                         ids=["conv", "mixture", "continuous_bernoulli", "free_bits_cyclical"])
def test_train_variants(tmp_path, flags_):
    result = run_app("train", *TINY, *flags_, f"--model_dir={tmp_path / 'model'}", "--export_dir=")
    assert_ok(result)
    rows = read_history(str(tmp_path / "model"))
    assert len(rows) == 2 and all(math.isfinite(float(row["val_elbo"])) for row in rows)
    assert (tmp_path / "model" / "latent_manifold.png").is_file()


def test_train_init_from_starts_at_the_trained_weights(trained, tmp_path):
    """--init_from copies the networks; the objective, beta (the KL weight) and optimizer are the new run's."""
    model_dir = tmp_path / "model"
    result = run_app("train", *TINY, f"--init_from={trained.model_dir}", "--objective=iwae", "--num_samples=5",
                     "--beta=2", "--epochs=1", "--learning_rate=1e-9", f"--model_dir={model_dir}", "--export_dir=")
    assert_ok(result)
    source = keras.saving.load_model(os.path.join(trained.model_dir, "model.keras"))
    model = keras.saving.load_model(model_dir / "model.keras")
    assert (model.objective, model.num_samples, float(model.kl_weight)) == ("iwae", 5, 2.0)
    for new, old in zip(model.trainable_weights, source.trainable_weights, strict=True):
        assert float(keras.ops.max(keras.ops.abs(new - old))) < 1e-5, new.path  # a 1e-9 learning rate barely moves
    assert read_flags(str(model_dir))["init_from"] == trained.model_dir


@pytest.mark.parametrize("flag", ["--init_output_bias", "--noinit_output_bias"])
def test_train_init_output_bias_starts_the_decoder_at_the_data_mean(tmp_path, flag):
    """The saved decoder's output bias is the logit of the training split's mean image (clipped
    as keras_vae.init_output_bias clips it), or zero without the flag; a 1e-9 rate barely moves it."""
    from scipy import special

    model_dir = tmp_path / "model"
    assert_ok(run_app("train", *TINY, flag, "--epochs=1", "--learning_rate=1e-9", f"--model_dir={model_dir}",
                      "--export_dir="))
    model = keras.saving.load_model(model_dir / "model.keras")
    bias = next(w for w in model.decoder.weights if w.path.endswith("likelihood_params/bias")).numpy()
    train = keras_vae.data.load("digits", validation_size=None, binarize="dynamic", seed=0).train
    expected = special.logit(np.clip(train.mean(axis=0), 1e-3, 1 - 1e-3)).ravel()
    np.testing.assert_allclose(bias, expected if flag == "--init_output_bias" else 0 * expected, atol=1e-5)


@pytest.mark.parametrize("args, fragments", [
    (["--init_from={empty}"], ["--init_from must be a folder written by apps.train"]),
    (["--init_from={trained}", "--hidden_units=8"], ["its trainable weight 0 has shape (64, 16)", "(64, 8)"]),
    (["--init_from={trained}", "--latent_dim=3"], ["has shape (16, 4)", "(16, 6)"]),
], ids=["not_a_run", "other_widths", "other_latent_dim"])
def test_train_init_from_bad_source_writes_nothing(trained, tmp_path, args, fragments):
    (tmp_path / "empty").mkdir()
    args = [a.format(empty=tmp_path / "empty", trained=trained.model_dir) for a in args]
    tiny = [flag for flag in TINY if flag.split("=")[0] not in {arg.split("=")[0] for arg in args}]
    result = run_app("train", *tiny, *args, f"--model_dir={tmp_path / 'model'}", f"--export_dir={tmp_path / 'e'}")
    assert_one_line_error(result, "train: error:", *fragments)
    assert sorted(os.listdir(tmp_path)) == ["empty"]


@pytest.mark.parametrize("name", sorted(p.name for p in (ROOT / "apps" / "configs").glob("*.cfg")))
def test_shipped_flagfiles_parse(parse_flags, name):
    """Each recipe in apps/configs passes apps.train's flag validators and sets what it says."""
    flagfile = ROOT / "apps" / "configs" / name
    parse_flags(f"--flagfile={flagfile}")
    parsed = set(absl_flags.FLAGS.flags_into_string().splitlines())
    for line in flagfile.read_text().splitlines():
        if line.startswith("--") and not line.startswith("--flagfile="):
            assert line in parsed, line


# README's results table: one row per row of Burda et al.'s Table 1, each naming its recipe (a flagfile, maybe
# with flags after it) and its run's files.
_RESULTS_ROW = re.compile(r"^\| (?P<row>[^|]+) \| (?P<paper>[\d.]+) \| (?P<here>[\d.]+) \| `(?P<recipe>[\w.]+\.cfg(?: --\S+)*)` "
                          r"\| (?P<epochs>[\d,+ ]+) \| \[files\]\((?P<folder>docs/results/[\w.-]+)/\) \|$", re.M)
_RESULTS_ROWS = [row.groupdict() for row in _RESULTS_ROW.finditer((ROOT / "README.md").read_text())]
# Flags that say where a run's files are and how its steps were executed, not what it computes.
_NOT_THE_RECIPE = {"model_dir", "model_name", "init_from", "export_dir", "jit_compile", "steps_per_execution"}


def test_readme_results_table_has_every_table_1_row():
    assert [row["row"] for row in _RESULTS_ROWS] == [
        f"{depth}, {model}" for depth in ("one layer", "two layers") for model in ("VAE k=1", "IWAE k=5", "IWAE k=50")]


@pytest.mark.parametrize("row", _RESULTS_ROWS, ids=[row["row"] for row in _RESULTS_ROWS])
def test_readme_results_table_matches_its_runs(parse_flags, row):
    """A row's NLL is its run's eval.json (k = 5000, all 10,000 test images), the run has the epochs the row
    lists last, and its flags.cfg sets what the row's recipe sets (flags removed since it ran aside)."""
    folder = ROOT / row["folder"]
    with open(folder / "eval.json") as f:
        result = json.load(f)
    assert (result["split"], result["num_examples"], result["iw_samples"]) == ("test", 10000, 5000)
    assert f"{result['test_nll']:.2f}" == row["here"]
    assert len(read_history(folder)) == int(row["epochs"].split("+")[-1].replace(",", ""))
    flagfile, *flags = row["recipe"].split()
    parse_flags(f"--flagfile=apps/configs/{flagfile}", *flags)
    recipe = set(absl_flags.FLAGS.flags_into_string().splitlines())
    checked = set()
    for line in (folder / "flags.cfg").read_text().splitlines():
        name = line[2:].split("=")[0]
        if name not in absl_flags.FLAGS and name.startswith("no"):
            name = name[2:]  # a false boolean
        if line.startswith("--") and name in absl_flags.FLAGS and name not in _NOT_THE_RECIPE:
            assert line in recipe, line
            checked.add(name)
    assert {"dataset", "binarize", "hidden_units", "latent_dim", "objective", "num_samples", "batch_size",
            "learning_rate", "lr_schedule", "epochs", "seed"} <= checked


# ------------------------------------------------------------------ apps.export
def test_export_app_writes_the_next_version_with_run_metadata(trained, tmp_path):
    export_dir = tmp_path / "served"
    for version in ("1", "2"):
        result = run_app("export", f"--model_dir={trained.model_dir}", f"--export_dir={export_dir}",
                         "--score_samples=7")
        assert_ok(result)
        assert os.path.join(str(export_dir), "vae_digits", version) in result.stdout
    assert sorted(os.listdir(export_dir / "vae_digits")) == ["1", "2"]
    with open(export_dir / "vae_digits" / "2" / keras_vae.export.METADATA_FILE) as f:
        info = json.load(f)
    assert info["version"] == 2 and info["dataset"] == "digits" and info["score_samples"] == 7
    last = read_history(trained.model_dir)[-1]
    assert info["training_metrics"]["val_elbo"] == pytest.approx(float(last["val_elbo"]))
    # The export serves the trained weights: encode matches the saved Keras model.
    model = keras.saving.load_model(os.path.join(trained.model_dir, "model.keras"))
    x = keras_vae.data.load("digits").test[:4]
    loaded = tf.saved_model.load(str(export_dir / "vae_digits" / "2"))
    z_mean = loaded.signatures["encode"](x=tf.constant(x))["z_mean"].numpy()
    assert z_mean == pytest.approx(model.encode(x).mean().numpy(), abs=1e-5)


def test_export_app_never_overwrites_a_version(trained):
    before = tree_digest(trained.version_1)
    result = run_app("export", f"--model_dir={trained.model_dir}", f"--export_dir={trained.export_dir}",
                     "--version=1")
    assert_one_line_error(result, "export: error:", "never overwritten")
    assert tree_digest(trained.version_1) == before


def test_export_app_bad_input_writes_nothing(tmp_path):
    result = run_app("export", f"--model_dir={tmp_path / 'no_such_run'}", f"--export_dir={tmp_path / 'export'}")
    assert_one_line_error(result, "export: error:", "No model at", "--model_dir")
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("args, fragments", [
    (["--version=0"], ["train: error:", "--version"]),
    (["--score_samples=0"], ["train: error:", "--score_samples"]),
], ids=["version", "score_samples"])
def test_export_bad_flags(parse_flags, args, fragments):
    """apps.export's flags (apps.train adopts them, so the same definitions and validators)."""
    assert_flags_error(parse_flags, ["--model_dir=runs/unused", *args], fragments)


# ------------------------------------------------------------------ apps.evaluate
def test_evaluate_report(evaluated, trained):
    assert set(EVAL_KEYS) <= set(evaluated)
    for key in EVAL_KEYS:
        assert isinstance(evaluated[key], (int, float)) and math.isfinite(evaluated[key]), key
    assert evaluated["model_dir"] == trained.model_dir
    assert evaluated["dataset"] == "digits"  # read from the run's flags.cfg
    assert evaluated["split"] == "test"
    assert evaluated["num_examples"] == 300  # the digits test split
    assert evaluated["iw_samples"] == 20
    assert evaluated["iwae_bound_k"] == 5
    # Active units (posterior means varying by > 0.01) and the closed-form KL to N(0, I), recomputed in numpy
    # from the trained encoder's raw outputs: [loc (2), raw scale (2)], scale = softplus(raw) + 1e-4.
    model = keras.saving.load_model(os.path.join(trained.model_dir, "model.keras"))
    params = model.encoder(keras_vae.data.load("digits", binarize=read_flags(trained.model_dir)["binarize"]).test).numpy().astype(np.float64)
    loc, scale = params[:, :2], np.logaddexp(0, params[:, 2:]) + 1e-4
    assert evaluated["active_units"] == int(np.sum(loc.var(axis=0) > 0.01))
    kl = 0.5 * np.sum(scale**2 + loc**2 - 1 - 2 * np.log(scale), axis=1)
    assert evaluated["kl"] == pytest.approx(kl.mean(), rel=1e-4)


def test_evaluate_bounds_are_ordered(evaluated):
    nll, elbo = evaluated["test_nll"], evaluated["test_elbo"]
    assert nll > 0
    assert -nll >= elbo - 1e-3  # L_k >= the ELBO from the same samples
    assert -nll >= evaluated["test_iwae_bound"] - 0.5  # L_20 >= L_5 on average
    assert evaluated["test_iwae_bound"] >= elbo - 0.5
    assert evaluated["reconstruction"] < 0
    assert evaluated["bits_per_dim"] == pytest.approx(nll / (64 * math.log(2)), rel=1e-6)


def test_evaluate_agrees_with_training_scale(evaluated, trained):
    # Test and validation ELBOs of the same small model should be within a few nats.
    last_val_elbo = float(read_history(trained.model_dir)[-1]["val_elbo"])
    assert evaluated["test_elbo"] == pytest.approx(last_val_elbo, abs=5.0)


def test_evaluate_missing_model_dir(tmp_path):
    output = tmp_path / "r.json"
    missing = tmp_path / "no_such_run"
    result = run_app("evaluate", f"--model_dir={missing}", "--iw_samples=2", "--bound_samples=1",
                     f"--output_json={output}")
    assert_one_line_error(result, "evaluate: error:", str(missing))
    assert not output.exists()
    assert sorted(os.listdir(tmp_path)) == []


def test_evaluate_names_its_numbers_by_split(trained, tmp_path):
    output = tmp_path / "v.json"
    assert_ok(run_app("evaluate", f"--model_dir={trained.model_dir}", "--split=validation", "--iw_samples=5",
                      "--bound_samples=2", "--num_examples=50", f"--output_json={output}"))
    with open(output) as f:
        results = json.load(f)
    assert results["split"] == "validation" and not any(key.startswith("test_") for key in results)
    assert {"validation_nll", "validation_elbo", "validation_iwae_bound"} <= set(results)


# ------------------------------------------------------------------ every app: a damaged model.keras
@pytest.mark.parametrize("app, args", [
    ("evaluate", ["--iw_samples=5"]),
    ("export", ["--export_dir={tmp}/export"]),
    ("sample", ["--output_dir={tmp}/out"]),
])
@pytest.mark.parametrize("damage", ["truncated", "not_a_zip"])
def test_apps_name_a_damaged_model_file_in_one_line(trained, tmp_path, app, args, damage):
    model_dir = tmp_path / "run"
    model_dir.mkdir()
    original = (pathlib.Path(trained.model_dir) / "model.keras").read_bytes()
    damaged = original[: len(original) // 2] if damage == "truncated" else b"not a keras file"
    (model_dir / "model.keras").write_bytes(damaged)
    result = run_app(app, f"--model_dir={model_dir}", *(arg.format(tmp=tmp_path) for arg in args))
    assert_one_line_error(result, f"{app}: error:", str(model_dir / "model.keras"), "damaged")
    assert sorted(os.listdir(tmp_path)) == ["run"]


def test_concurrent_exports_take_the_next_versions(trained, tmp_path):
    command = [sys.executable, "-m", "apps.export", f"--model_dir={trained.model_dir}",
               f"--export_dir={tmp_path}", "--score_samples=3"]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    both = [subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for _ in range(2)]
    for process in both:
        _, stderr = process.communicate(timeout=900)
        assert process.returncode == 0, stderr[-2000:]
    assert sorted(os.listdir(tmp_path / "vae_digits")) == ["1", "2"]


def test_train_model_dir_naming_a_file_is_one_line(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("mine")
    result = run_app("train", *TINY, f"--model_dir={blocker}", f"--export_dir={tmp_path / 'export'}")
    assert_one_line_error(result, "train: error:", "is a file")
    assert blocker.read_text() == "mine" and sorted(os.listdir(tmp_path)) == ["a_file"]
