"""Tests for keras_vae.export: versioned SavedModel export, checked by loading it in a fresh process."""

import json
import os
import pathlib
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_vae
from helpers import tree_digest
from keras_vae import export

ROOT = pathlib.Path(__file__).resolve().parents[1]

# Runs in a new interpreter that never imports keras_vae: the SavedModel must be self-contained.
_LOAD_SCRIPT = """
import json, os, sys
import numpy as np
import tensorflow as tf

path, data = sys.argv[1], sys.argv[2]
loaded = tf.saved_model.load(path)

def call(signature, **inputs):
    fn = loaded.signatures[signature]
    result = fn(**{k: tf.constant(np.load(os.path.join(data, v + ".npy"))) for k, v in inputs.items()})
    return {k: v.numpy().tolist() for k, v in result.items()}

out = {"signatures": sorted(loaded.signatures.keys())}
for name in ("x3", "x7"):
    for signature in ("serving_default", "serve", "encode", "elbo"):
        out[signature + "/" + name] = call(signature, x=name)
    out["elbo_again/" + name] = call("elbo", x=name)
out["decode/z"] = call("decode", z="z")
out["keras_vae_imported"] = "keras_vae" in sys.modules
print(json.dumps(out))
"""


def _model():
    return keras_vae.mlp_vae((8, 8, 1), 2, (16,), seed=0)


def _hidden_entries(base):
    return [name for name in os.listdir(base) if name.startswith(".")] if os.path.isdir(base) else []


@pytest.fixture(scope="module")
def model():
    return _model()


@pytest.fixture(scope="module")
def inputs():
    test = keras_vae.data.load("digits").test
    z = np.random.default_rng(1).normal(size=(5, 2)).astype(np.float32)
    return {"x3": test[:3], "x7": test[3:10], "z": z}


@pytest.fixture(scope="module")
def served(tmp_path_factory, model, inputs):
    """Export once, then run every signature in a fresh process; returns (path, outputs)."""
    base = tmp_path_factory.mktemp("served")
    path = export.export_saved_model(model, str(base / "export"), "m")
    data = base / "data"
    data.mkdir()
    for name, array in inputs.items():
        np.save(data / f"{name}.npy", array)
    env = dict(os.environ)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    result = subprocess.run([sys.executable, "-c", _LOAD_SCRIPT, path, str(data)], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return path, json.loads(result.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------ versions and names
def test_versions_count_up_and_are_never_overwritten(tmp_path, model):
    base = tmp_path / "export"
    first = export.export_saved_model(model, str(base), "m")
    assert first == os.path.join(str(base), "m", "1")
    assert os.path.isfile(os.path.join(first, "saved_model.pb"))
    second = export.export_saved_model(model, str(base), "m")
    assert second == os.path.join(str(base), "m", "2")
    assert export.versions(str(base / "m")) == [1, 2]

    before = tree_digest(first)
    with pytest.raises(FileExistsError, match="never overwritten"):
        export.export_saved_model(model, str(base), "m", version=1)
    assert tree_digest(first) == before
    assert export.versions(str(base / "m")) == [1, 2]
    assert _hidden_entries(base / "m") == []


def test_existing_version_folder_is_left_untouched(tmp_path, model):
    base = tmp_path / "export"
    occupied = base / "m" / "1"
    occupied.mkdir(parents=True)
    (occupied / "keep.txt").write_text("not a SavedModel")
    with pytest.raises(FileExistsError):
        export.export_saved_model(model, str(base), "m", version=1)
    assert sorted(os.listdir(occupied)) == ["keep.txt"]
    assert (occupied / "keep.txt").read_text() == "not a SavedModel"
    assert sorted(os.listdir(base / "m")) == ["1"]


@pytest.mark.parametrize("name", ["", "a/b", ".hidden", "..", None])
def test_bad_model_name_raises_and_writes_nothing(tmp_path, model, name):
    with pytest.raises(ValueError, match="model_name"):
        export.export_saved_model(model, str(tmp_path / "export"), name)
    assert not (tmp_path / "export").exists()


@pytest.mark.parametrize("version", [0, -1, "2", 1.0])
def test_bad_version_raises_and_writes_nothing(tmp_path, model, version):
    with pytest.raises(ValueError, match="version"):
        export.export_saved_model(model, str(tmp_path / "export"), "m", version=version)
    assert not (tmp_path / "export").exists()


def test_failed_export_leaves_no_version_and_no_staging_folder(tmp_path):
    # A real failure inside the staged write: a plain Keras model has no VAE signatures to build.
    inputs = keras.Input((8, 8, 1))
    not_a_vae = keras.Model(inputs, keras.layers.Flatten()(inputs))
    base = tmp_path / "export"
    with pytest.raises(AttributeError):
        export.export_saved_model(not_a_vae, str(base), "m")
    assert os.listdir(base / "m") == []
    assert export.versions(str(base / "m")) == []


def test_versions_ignores_other_entries(tmp_path):
    assert export.versions(str(tmp_path / "missing")) == []
    for name in ("3", "10", "1", ".4.partial-abc", "notes", "2a"):
        (tmp_path / name).mkdir()
    assert export.versions(str(tmp_path)) == [1, 3, 10]


def test_successful_export_leaves_no_staging_folder(served):
    path, _ = served
    base = os.path.dirname(path)
    assert sorted(os.listdir(base)) == ["1"]
    assert _hidden_entries(base) == []


def test_version_folder_permissions_follow_umask(served):
    path, _ = served
    umask = os.umask(0)
    os.umask(umask)
    assert oct(os.stat(path).st_mode & 0o777) == oct(0o777 & ~umask)


# ------------------------------------------------------------------ signatures, in a fresh process
def test_signatures_present_without_keras_vae(served):
    _, out = served
    assert out["signatures"] == ["decode", "elbo", "encode", "serve", "serving_default"]
    assert out["keras_vae_imported"] is False


@pytest.mark.parametrize("name", ["x3", "x7"])
@pytest.mark.parametrize("signature", ["serving_default", "serve"])
def test_reconstruction_matches_predict(served, model, inputs, name, signature):
    _, out = served
    x = inputs[name]
    got = np.asarray(out[f"{signature}/{name}"]["reconstruction"])
    assert got.shape == x.shape
    np.testing.assert_allclose(got, model.predict(x, verbose=0), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ["x3", "x7"])
def test_encode_matches_posterior(served, model, inputs, name):
    _, out = served
    q = model.encode(inputs[name])
    got = out[f"encode/{name}"]
    assert set(got) == {"z_mean", "z_stddev"}
    np.testing.assert_allclose(np.asarray(got["z_mean"]), q.mean().numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(got["z_stddev"]), q.stddev().numpy(), rtol=1e-5, atol=1e-6)
    assert np.all(np.asarray(got["z_stddev"]) > 0)


def test_decode_matches_likelihood_mean(served, model, inputs):
    _, out = served
    got = out["decode/z"]
    assert set(got) == {"x_mean"}
    expected = model.decode(inputs["z"]).mean().numpy()
    assert np.asarray(got["x_mean"]).shape == (5, 8, 8, 1)
    np.testing.assert_allclose(np.asarray(got["x_mean"]), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ["x3", "x7"])
def test_elbo_signature(served, model, inputs, name):
    _, out = served
    got = {k: np.asarray(v) for k, v in out[f"elbo/{name}"].items()}
    batch = len(inputs[name])
    assert set(got) == {"elbo", "reconstruction", "kl"}
    for value in got.values():
        assert value.shape == (batch,)
        assert np.all(np.isfinite(value))
    assert np.all(got["elbo"] < 0)
    assert np.all(got["kl"] >= 0)
    np.testing.assert_allclose(got["elbo"], got["reconstruction"] - got["kl"], rtol=1e-5, atol=1e-4)
    # Fixed seed: the same x always gets the same score, and the score is the model's own.
    np.testing.assert_array_equal(got["elbo"], np.asarray(out[f"elbo_again/{name}"]["elbo"]))
    terms = model.compute_terms(inputs[name], seed=tf.constant([0, 0], tf.int32), objective="elbo")
    np.testing.assert_allclose(got["elbo"], terms["elbo"].numpy(), rtol=1e-4, atol=1e-3)
