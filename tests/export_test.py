"""Tests for keras_vae.export: the SavedModel's signature contract, its input checks, versions
and TF Serving files, checked on exports loaded with TensorFlow alone in fresh processes."""

import json
import os
import pathlib
import signal
import subprocess
import sys

import hypothesis
import hypothesis.extra.numpy as hnp
import hypothesis.strategies as st
import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_vae
from helpers import tree_digest
from keras_vae import export

ROOT = pathlib.Path(__file__).resolve().parents[1]
EVENT_SHAPE = (8, 8, 1)
SCORE_SAMPLES = 40

# Runs in a new interpreter where keras, keras_vae and tensorflow_probability cannot be
# imported at all (stand-in packages on PYTHONPATH raise ImportError): the SavedModel must
# stand on TensorFlow alone. Calls every signature on saved .npy inputs.
_LOAD_SCRIPT = """
import json, os, sys
import numpy as np
import tensorflow as tf

path, data = sys.argv[1], sys.argv[2]
loaded = tf.saved_model.load(path)

def load(name):
    return tf.constant(np.load(os.path.join(data, name + ".npy")))

def call(signature, **inputs):
    result = loaded.signatures[signature](**inputs)
    return {k: v.numpy().tolist() for k, v in result.items()}

out = {"signatures": sorted(loaded.signatures.keys())}
for name in ("x3", "x7"):
    for signature in ("serving_default", "reconstruct", "encode", "score"):
        out[signature + "/" + name] = call(signature, x=load(name))
    out["score_again/" + name] = call("score", x=load(name))
out["decode/z"] = call("decode", z=load("z"))
for seed in (7, 8):
    out[f"sample/{seed}"] = call("sample", num_samples=tf.constant(4), seed=tf.constant(seed))
out["sample_again/7"] = call("sample", num_samples=tf.constant(4), seed=tf.constant(7))
out["imported"] = sorted(m for m in ("keras", "keras_vae", "tensorflow_probability") if sys.modules.get(m))
print(json.dumps(out))
"""


def _model(likelihood="bernoulli"):
    return keras_vae.mlp_vae(EVENT_SHAPE, 2, (16,), likelihood=likelihood, seed=0)


def _hidden_entries(base):
    return [name for name in os.listdir(base) if name.startswith(".")] if os.path.isdir(base) else []


def _blocking_path(root):
    """A PYTHONPATH folder whose keras, keras_vae and tensorflow_probability raise on import."""
    for name in ("keras", "keras_vae", "tensorflow_probability"):
        package = root / name
        package.mkdir(parents=True)
        (package / "__init__.py").write_text(f"raise ImportError('{name} is blocked in this process')\n")
    return str(root)


def _env(**extra):
    env = dict(os.environ)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    env.update(extra)
    return env


@pytest.fixture(scope="module")
def model():
    return _model()


@pytest.fixture(scope="module")
def inputs():
    test = keras_vae.data.load("digits").test
    z = np.random.default_rng(1).normal(size=(5, 2)).astype(np.float32)
    return {"x3": test[:3], "x7": test[3:10], "z": z}


@pytest.fixture(scope="module")
def exported(tmp_path_factory, model):
    path = export.export_saved_model(model, str(tmp_path_factory.mktemp("exported") / "export"), "m",
                                     score_samples=SCORE_SAMPLES, metadata={"dataset": "digits"})
    return path


@pytest.fixture(scope="module")
def loaded(exported):
    return tf.saved_model.load(exported)


@pytest.fixture(scope="module")
def served(tmp_path_factory, exported, inputs):
    """Every signature run in a fresh process without keras, keras_vae or TFP; returns its outputs."""
    base = tmp_path_factory.mktemp("served")
    data = base / "data"
    data.mkdir()
    for name, array in inputs.items():
        np.save(data / f"{name}.npy", array)
    result = subprocess.run([sys.executable, "-c", _LOAD_SCRIPT, exported, str(data)], cwd=base,
                            env=_env(PYTHONPATH=_blocking_path(base / "blocked")),
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def _close(got, expected):
    np.testing.assert_allclose(np.asarray(got), np.asarray(expected), rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------ signatures, in a fresh process
def test_signatures_load_without_keras_vae_keras_or_tfp(served):
    assert served["signatures"] == ["decode", "encode", "reconstruct", "sample", "score", "serving_default"]
    assert served["imported"] == []


@pytest.mark.parametrize("name", ["x3", "x7"])
@pytest.mark.parametrize("signature", ["serving_default", "reconstruct"])
def test_reconstruct_matches_the_model(served, model, inputs, name, signature):
    got = served[f"{signature}/{name}"]
    x = inputs[name]
    assert set(got) == {"x_mean", "z_mean"}
    assert np.asarray(got["x_mean"]).shape == x.shape
    _close(got["x_mean"], model.predict(x, verbose=0))
    _close(got["z_mean"], model.encode(x).mean())


@pytest.mark.parametrize("name", ["x3", "x7"])
def test_encode_matches_the_posterior(served, model, inputs, name):
    q = model.encode(inputs[name])
    got = served[f"encode/{name}"]
    assert set(got) == {"z_mean", "z_stddev"}
    _close(got["z_mean"], q.mean())
    _close(got["z_stddev"], q.stddev())
    assert np.all(np.asarray(got["z_stddev"]) > 0)


def test_decode_matches_the_likelihood(served, model, inputs):
    got = served["decode/z"]
    likelihood = model.decode(inputs["z"])
    assert set(got) == {"x_mean", "x_logits"}
    assert np.asarray(got["x_mean"]).shape == (5, *EVENT_SHAPE)
    _close(got["x_mean"], likelihood.mean())
    _close(got["x_logits"], likelihood.distribution.logits)
    _close(got["x_mean"], tf.sigmoid(np.asarray(got["x_logits"], np.float32)))


def test_sample_is_a_function_of_its_seed(served, model):
    got = {key: {k: np.asarray(v) for k, v in served[key].items()} for key in ("sample/7", "sample/8", "sample_again/7")}
    assert got["sample/7"]["x_mean"].shape == (4, *EVENT_SHAPE)
    assert got["sample/7"]["z"].shape == (4, 2)
    np.testing.assert_array_equal(got["sample/7"]["z"], got["sample_again/7"]["z"])
    np.testing.assert_array_equal(got["sample/7"]["x_mean"], got["sample_again/7"]["x_mean"])
    assert not np.allclose(got["sample/7"]["z"], got["sample/8"]["z"])
    x_mean, z = model.sample(4, seed=tf.constant([7, 0]), return_latents=True)
    _close(got["sample/7"]["z"], z)
    _close(got["sample/7"]["x_mean"], x_mean)


@pytest.mark.parametrize("name", ["x3", "x7"])
def test_score_matches_importance_sampling(served, model, inputs, name):
    got = {k: np.asarray(v) for k, v in served[f"score/{name}"].items()}
    assert set(got) == {"elbo", "log_likelihood"}
    assert got["elbo"].shape == got["log_likelihood"].shape == (len(inputs[name]),)
    assert np.all(got["log_likelihood"] < 0)
    assert np.all(got["log_likelihood"] >= got["elbo"] - 1e-4)  # L_k >= the mean log weight
    # Fixed at export: the same x always gets the same score, the model's own L_k.
    np.testing.assert_array_equal(got["log_likelihood"], np.asarray(served[f"score_again/{name}"]["log_likelihood"]))
    expected = model.importance_sampled(inputs[name], SCORE_SAMPLES, export.SCORE_CHUNK_SIZE, seed=export.SCORE_SEED)
    np.testing.assert_allclose(got["log_likelihood"], expected["iwae_bound"].numpy(), rtol=1e-5, atol=1e-3)
    np.testing.assert_allclose(got["elbo"], expected["elbo"].numpy(), rtol=1e-5, atol=1e-3)


def test_gaussian_model_decodes_its_scale(tmp_path, inputs):
    model = _model("gaussian")
    loaded = tf.saved_model.load(export.export_saved_model(model, str(tmp_path), "g"))
    got = loaded.signatures["decode"](z=tf.constant(inputs["z"]))
    assert set(got) == {"x_mean", "x_scale"}
    np.testing.assert_allclose(got["x_scale"].numpy(), np.ones((5, *EVENT_SHAPE)))
    _close(got["x_mean"], model.decode(inputs["z"]).mean())
    # A Gaussian model has no range check: any finite value is valid input.
    scored = loaded.signatures["score"](x=tf.constant(inputs["x3"] * 5 - 2))
    assert np.all(np.isfinite(scored["log_likelihood"].numpy()))


def test_mixed_precision_export_keeps_float32_at_the_boundary(tmp_path, inputs):
    keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        model = _model()
    finally:
        keras.config.set_dtype_policy("float32")
    loaded = tf.saved_model.load(export.export_saved_model(model, str(tmp_path), "bf16"))
    for name, signature in loaded.signatures.items():
        for spec in signature.structured_outputs.values():
            assert spec.dtype == tf.float32, name
    z_mean = loaded.signatures["encode"](x=tf.constant(inputs["x3"]))["z_mean"].numpy()
    np.testing.assert_allclose(z_mean, model.encode(inputs["x3"]).mean().numpy(), atol=0.05)


def test_no_device_is_pinned(exported):
    from tensorflow.core.protobuf import saved_model_pb2

    proto = saved_model_pb2.SavedModel()
    with open(os.path.join(exported, "saved_model.pb"), "rb") as f:
        proto.ParseFromString(f.read())
    graph = proto.meta_graphs[0].graph_def
    # TensorFlow's own checkpoint save/restore functions run on the host by design; the
    # model's functions must leave placement to the server.
    saver = ("__inference__traced_save_", "__inference__traced_restore_")
    functions = [f for f in graph.library.function if not f.signature.name.startswith(saver)]
    assert len(functions) > 10
    pinned = [f"{f.signature.name}/{node.name}: {node.device}" for f in functions for node in f.node_def if node.device]
    assert pinned == []


# ------------------------------------------------------------------ input checks inside the graph
_BAD_INPUTS = {
    "rank": ("encode", {"x": np.zeros((2, 8, 8), np.float32)}, "`x` must have shape [batch, 8, 8, 1]"),
    "size": ("score", {"x": np.zeros((2, 8, 8, 3), np.float32)}, "`x` must have shape [batch, 8, 8, 1]"),
    "flat": ("reconstruct", {"x": np.zeros((2, 64), np.float32)}, "`x` must have shape [batch, 8, 8, 1]"),
    "scalar": ("encode", {"x": np.float32(0.5)}, "`x` must have shape"),
    "empty_batch": ("score", {"x": np.zeros((0, 8, 8, 1), np.float32)}, "with batch >= 1"),
    "nan": ("score", {"x": np.full((2, 8, 8, 1), np.nan, np.float32)}, "`x` must be finite"),
    "inf": ("encode", {"x": np.full((1, 8, 8, 1), np.inf, np.float32)}, "`x` must be finite"),
    "above_one": ("reconstruct", {"x": np.full((1, 8, 8, 1), 1.5, np.float32)}, "`x` must lie in [0.0, 1.0]"),
    "negative": ("score", {"x": np.full((1, 8, 8, 1), -0.1, np.float32)}, "`x` must lie in [0.0, 1.0]"),
    "z_size": ("decode", {"z": np.zeros((3, 5), np.float32)}, "`z` must have shape [batch, 2]"),
    "z_nan": ("decode", {"z": np.full((3, 2), np.nan, np.float32)}, "`z` must be finite"),
    "zero_samples": ("sample", {"num_samples": np.int32(0), "seed": np.int32(1)}, "`num_samples` must be in [1, 10000]"),
    "too_many_samples": ("sample", {"num_samples": np.int32(10_001), "seed": np.int32(1)}, "must be in [1, 10000]"),
    "vector_samples": ("sample", {"num_samples": np.int32([2, 3]), "seed": np.int32(1)}, "`num_samples` must be a scalar"),
    "vector_seed": ("sample", {"num_samples": np.int32(2), "seed": np.int32([1, 2])}, "`seed` must be a scalar"),
    "dtype": ("encode", {"x": np.zeros((1, 8, 8, 1), np.float64)}, "expected to be a float tensor"),
    "score_batch": ("score", {"x": np.zeros((1001, 8, 8, 1), np.float32)}, "at most 1000 examples per request"),
}


@pytest.mark.parametrize("case", sorted(_BAD_INPUTS))
def test_bad_input_raises_invalid_argument(loaded, case):
    signature, inputs, message = _BAD_INPUTS[case]
    with pytest.raises(tf.errors.InvalidArgumentError, match=None) as error:
        loaded.signatures[signature](**{k: tf.constant(v) for k, v in inputs.items()})
    assert message in error.value.message


_DTYPES = st.sampled_from([np.float32, np.float64, np.float16, np.int32, np.int64, np.uint8, np.bool_])


@st.composite
def _arrays(draw, event_shape):
    """Arrays near and far from the expected shape, of any dtype, with any values."""
    if draw(st.booleans()):
        shape = (draw(st.integers(0, 3)), *event_shape)
    else:
        shape = draw(hnp.array_shapes(min_dims=0, max_dims=5, min_side=0, max_side=9))
    dtype = draw(_DTYPES)
    if np.issubdtype(dtype, np.floating):
        elements = st.one_of(st.floats(0, 1, width=16), st.floats(allow_nan=True, allow_infinity=True, width=16))
    else:
        elements = None
    return draw(hnp.arrays(dtype, shape, elements=elements))


def _assert_error_or_finite(fn, expected_shapes, **inputs):
    try:
        outputs = fn(**{k: tf.constant(v) for k, v in inputs.items()})
    except tf.errors.InvalidArgumentError as error:
        assert "must" in error.message or "expected to be" in error.message, error.message
        return
    for name, value in outputs.items():
        assert value.dtype == tf.float32
        assert value.shape[1:] == expected_shapes[name], name
        assert np.all(np.isfinite(value.numpy())), name


_FUZZ = hypothesis.settings(max_examples=40, deadline=None, derandomize=True,
                            suppress_health_check=[hypothesis.HealthCheck.function_scoped_fixture,
                                                   hypothesis.HealthCheck.too_slow])
_X_OUTPUTS = {"encode": {"z_mean": (2,), "z_stddev": (2,)}, "reconstruct": {"x_mean": EVENT_SHAPE, "z_mean": (2,)},
              "serving_default": {"x_mean": EVENT_SHAPE, "z_mean": (2,)}, "score": {"elbo": (), "log_likelihood": ()}}


@pytest.mark.parametrize("signature", sorted(_X_OUTPUTS))
def test_x_signatures_fuzzed(loaded, signature):
    @_FUZZ
    @hypothesis.given(x=_arrays(EVENT_SHAPE))
    def check(x):
        _assert_error_or_finite(loaded.signatures[signature], _X_OUTPUTS[signature], x=x)

    check()


def test_decode_fuzzed(loaded):
    @_FUZZ
    @hypothesis.given(z=_arrays((2,)))
    def check(z):
        _assert_error_or_finite(loaded.signatures["decode"], {"x_mean": EVENT_SHAPE, "x_logits": EVENT_SHAPE}, z=z)

    check()


def test_sample_fuzzed(loaded):
    scalars = st.one_of(st.integers(-5, 10_050).map(np.int32), _arrays(()))

    @_FUZZ
    @hypothesis.given(num_samples=scalars, seed=st.one_of(st.integers(-2**31, 2**31 - 1).map(np.int32), _arrays(())))
    def check(num_samples, seed):
        _assert_error_or_finite(loaded.signatures["sample"], {"x_mean": EVENT_SHAPE, "z": (2,)},
                                num_samples=num_samples, seed=seed)

    check()


# ------------------------------------------------------------------ TF Serving files and tools
def test_metadata(exported, model):
    with open(os.path.join(exported, export.METADATA_FILE)) as f:
        info = json.load(f)
    assert info["model_name"] == "m" and info["version"] == 1
    assert info["signatures"] == ["encode", "decode", "reconstruct", "sample", "score"]
    assert info["serving_default"] == "reconstruct"
    assert info["input_shape"] == [None, *EVENT_SHAPE]
    assert info["latent_dim"] == 2
    assert info["input_range"] == [0.0, 1.0]
    assert info["score_samples"] == SCORE_SAMPLES
    assert info["max_samples"] == 10_000  # the cap the `sample` signature enforces (_BAD_INPUTS)
    assert info["dataset"] == "digits"
    assert info["versions"]["tensorflow"] == tf.__version__
    assert info["versions"]["keras_vae"] == keras_vae.__version__
    restored = keras_vae.VAE.from_config(info["model_config"])
    assert restored.input_event_shape == EVENT_SHAPE and restored.latent_dim == 2


def test_warmup_requests_replay_on_every_signature(exported, loaded):
    from tensorflow_serving.apis import prediction_log_pb2

    seen = []
    for record in tf.data.TFRecordDataset(os.path.join(exported, export.WARMUP_FILE)):
        log = prediction_log_pb2.PredictionLog.FromString(record.numpy())
        request = log.predict_log.request
        assert request.model_spec.name == "m"
        signature = request.model_spec.signature_name
        outputs = loaded.signatures[signature](**{k: tf.make_ndarray(v) for k, v in request.inputs.items()})
        assert all(np.all(np.isfinite(v.numpy())) for v in outputs.values())
        seen.append(signature)
    assert sorted(seen) == sorted(loaded.signatures)


def test_saved_model_cli_shows_and_runs_the_signatures(exported, tmp_path):
    np.save(tmp_path / "x.npy", np.zeros((2, *EVENT_SHAPE), np.float32))
    cli = os.path.join(os.path.dirname(sys.executable), "saved_model_cli")
    shown = subprocess.run([cli, "show", "--all", "--dir", exported], env=_env(), capture_output=True, text=True,
                           timeout=300)
    assert shown.returncode == 0, shown.stderr[-2000:]
    for name in ("encode", "decode", "reconstruct", "sample", "score", "serving_default"):
        assert f"signature_def['{name}']" in shown.stdout
    ran = subprocess.run([cli, "run", "--dir", exported, "--tag_set", "serve", "--signature_def", "score",
                          "--inputs", f"x={tmp_path / 'x.npy'}"], env=_env(), capture_output=True,
                         text=True, timeout=300)
    assert ran.returncode == 0, ran.stderr[-2000:]
    assert "log_likelihood" in ran.stdout and "elbo" in ran.stdout


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


def test_successful_export_leaves_no_staging_folder(exported):
    path = exported
    base = os.path.dirname(path)
    assert sorted(os.listdir(base)) == ["1"]
    assert _hidden_entries(base) == []


def test_version_folder_permissions_follow_umask(exported):
    path = exported
    umask = os.umask(0)
    os.umask(umask)
    assert oct(os.stat(path).st_mode & 0o777) == oct(0o777 & ~umask)


_KILLED_EXPORT = """
import os, signal, sys
import keras_vae
from keras_vae import export

real_rename = os.rename
def killed_before_rename(src, dst):  # the SavedModel is fully staged: die at the worst moment
    os.kill(os.getpid(), signal.SIGKILL)
os.rename = killed_before_rename
export.export_saved_model(keras_vae.mlp_vae((8, 8, 1), 2, (16,), seed=0), sys.argv[1], "m")
"""


def test_export_killed_midway_leaves_no_visible_version(tmp_path, model):
    base = tmp_path / "export"
    result = subprocess.run([sys.executable, "-c", _KILLED_EXPORT, str(base)], cwd=ROOT, env=_env(),
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == -signal.SIGKILL, result.stderr[-2000:]
    staged = _hidden_entries(base / "m")
    assert len(staged) == 1 and os.path.isfile(base / "m" / staged[0] / "saved_model.pb")
    assert export.versions(str(base / "m")) == []  # TF Serving sees no version
    # The next export is version 1, complete.
    path = export.export_saved_model(model, str(base), "m")
    assert path == str(base / "m" / "1")
    assert export.versions(str(base / "m")) == [1]


def test_a_killed_exports_staging_folder_goes_and_a_live_ones_stays(tmp_path, model):
    base = tmp_path / "export" / "m"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    for name in (f".partial-{dead.stdout.strip()}-0123abcd", ".3.partial-0a1b2c", f".partial-{os.getpid()}-89abcdef"):
        (base / name).mkdir(parents=True)
    export.export_saved_model(model, str(tmp_path / "export"), "m")
    assert sorted(os.listdir(base)) == [f".partial-{os.getpid()}-89abcdef", "1"]
