"""Tests for keras_vae.export: the SavedModel's signature contract, its input checks, versions
and TF Serving files, checked on exports loaded with TensorFlow alone in fresh processes."""

import json
import os
import pathlib
import re
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
import tensorflow_probability as tfp

import keras_vae
from helpers import tree_digest
from keras_vae import export

ROOT = pathlib.Path(__file__).resolve().parents[1]
EVENT_SHAPE = (8, 8, 1)
SCORE_SAMPLES = 40
tfd, tfb = tfp.distributions, tfp.bijectors

# Runs in a new interpreter where keras, keras_vae and tensorflow_probability cannot be
# imported at all (stand-in packages on PYTHONPATH raise ImportError): the SavedModel must
# stand on TensorFlow alone. Makes the calls in <folder>/calls.json on saved .npy inputs and
# prints each one's outputs, or the error a client of the signature would get.
_CALL_SCRIPT = """
import json, os, sys
import numpy as np
import tensorflow as tf

path, folder = sys.argv[1], sys.argv[2]
with open(os.path.join(folder, "calls.json")) as f:
    calls = json.load(f)
loaded = tf.saved_model.load(path)
out = {"signatures": sorted(loaded.signatures.keys())}
for key, (signature, files) in calls.items():
    inputs = {name: tf.constant(np.load(os.path.join(folder, file))) for name, file in files.items()}
    try:
        out[key] = {k: v.numpy().tolist() for k, v in loaded.signatures[signature](**inputs).items()}
    except Exception as error:
        out[key] = {"error": type(error).__name__, "message": getattr(error, "message", None) or str(error)}
out["imported"] = sorted(m for m in ("keras", "keras_vae", "tensorflow_probability") if sys.modules.get(m))
print(json.dumps(out))
"""


def _serve(path, calls, folder):
    """Make `calls` ({key: (signature, {input name: array})}) on the SavedModel at `path` in a
    fresh process without keras, keras_vae or TFP. Returns {key: outputs, or {"error": type,
    "message": ...}}, with "signatures" (the loaded ones) and "imported" (of those three)."""
    folder.mkdir(parents=True)
    files = {}
    for i, (key, (signature, inputs)) in enumerate(calls.items()):
        files[key] = (signature, {})
        for name, value in inputs.items():
            np.save(folder / f"{i}_{name}.npy", np.asarray(value))
            files[key][1][name] = f"{i}_{name}.npy"
    (folder / "calls.json").write_text(json.dumps(files))
    result = subprocess.run([sys.executable, "-c", _CALL_SCRIPT, str(path), str(folder)], cwd=folder,
                            env=_env(PYTHONPATH=_blocking_path(folder / "blocked")), capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def _error(result, message):
    """Assert that a call in `_serve` failed with `InvalidArgumentError` whose message holds `message`."""
    assert result.get("error") == "InvalidArgumentError", result
    assert message in result["message"], result["message"]


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
    calls = {}
    for name in ("x3", "x7"):
        for signature in ("serving_default", "reconstruct", "encode", "score"):
            calls[f"{signature}/{name}"] = (signature, {"x": inputs[name]})
        calls[f"score_again/{name}"] = ("score", {"x": inputs[name]})
    calls["decode/z"] = ("decode", {"z": inputs["z"]})
    for seed in (7, 8):
        calls[f"sample/{seed}"] = ("sample", {"num_samples": np.int32(4), "seed": np.int32(seed)})
    calls["sample_again/7"] = ("sample", {"num_samples": np.int32(4), "seed": np.int32(7)})
    # Shapes other than the declared ones, which neither loaded signatures nor TF Serving refuse.
    for case, (signature, bad, message) in _WRONG_SHAPES.items():
        calls[f"wrong_shape/{case}"] = (signature, bad)
    return _serve(exported, calls, tmp_path_factory.mktemp("served") / "call")


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


def _model_functions(exported):
    """The FunctionDefs of an export's saved_model.pb, less TensorFlow's own checkpoint save/restore."""
    from tensorflow.core.protobuf import saved_model_pb2

    proto = saved_model_pb2.SavedModel()
    with open(os.path.join(exported, "saved_model.pb"), "rb") as f:
        proto.ParseFromString(f.read())
    saver = ("__inference__traced_save_", "__inference__traced_restore_")
    functions = [f for f in proto.meta_graphs[0].graph_def.library.function if not f.signature.name.startswith(saver)]
    assert len(functions) > 10
    return functions


def test_no_device_is_pinned(exported):
    # TensorFlow's own checkpoint save/restore functions run on the host by design; the
    # model's functions must leave placement to the server.
    pinned = [f"{f.signature.name}/{node.name}: {node.device}" for f in _model_functions(exported)
              for node in f.node_def if node.device]
    assert pinned == []


def test_no_function_needs_xla(exported):
    # TF Serving's CPU server runs XLA only when asked (--xla_cpu_compilation_enabled): no
    # signature may hold a function that must be compiled (the evaluation's jit_log_prob).
    compiled = [f"{f.signature.name}/{node.name}" for f in _model_functions(exported) for node in f.node_def
                if node.attr["_XlaMustCompile"].b]
    compiled += [f.signature.name for f in _model_functions(exported) if f.attr["_XlaMustCompile"].b]
    assert compiled == []


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


# Shapes other than the declared [None, 8, 8, 1], [None, 2] and []: the ones with the declared
# rank or element count would pass checks that trusted tf.rank or tf.size, which TensorFlow
# folds to the declared values.
_WRONG_SHAPES = {
    "flat": ("encode", {"x": np.zeros((2, 5), np.float32)},
             "`x` must have shape [batch, 8, 8, 1] with batch >= 1; received shape] [2 5]"),
    "extra_axis": ("reconstruct", {"x": np.zeros((2, 8, 8, 1, 1), np.float32)},
                   "`x` must have shape [batch, 8, 8, 1] with batch >= 1; received shape] [2 8 8 1 1]"),
    "missing_axis": ("score", {"x": np.zeros((2, 8, 8), np.float32)}, "received shape] [2 8 8]"),
    "scalar_x": ("serving_default", {"x": np.float32(0.5)}, "`x` must have shape [batch, 8, 8, 1]"),
    "z": ("decode", {"z": np.zeros((3, 2, 1), np.float32)},
          "`z` must have shape [batch, 2] with batch >= 1; received shape] [3 2 1]"),
    "num_samples": ("sample", {"num_samples": np.int32([4]), "seed": np.int32(0)},
                    "`num_samples` must be a scalar; received shape] [1]"),
    "seed": ("sample", {"num_samples": np.int32(4), "seed": np.int32([[1]])},
             "`seed` must be a scalar; received shape] [1 1]"),
}


@pytest.mark.parametrize("case", sorted(_WRONG_SHAPES))
def test_wrong_shape_is_named_in_a_fresh_process(served, case):
    _error(served[f"wrong_shape/{case}"], _WRONG_SHAPES[case][2])


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
    x, z, scalar = ({"shape": shape, "dtype": dtype} for shape, dtype in (
        ([None, *EVENT_SHAPE], "float32"), ([None, 2], "float32"), ([], "int32")))
    assert info["inputs"] == {"encode": {"x": x}, "decode": {"z": z}, "reconstruct": {"x": x},
                              "sample": {"num_samples": scalar, "seed": scalar}, "score": {"x": x}}
    assert info["input_shape"] == [None, *EVENT_SHAPE]
    assert info["latent_dim"] == 2
    assert info["num_classes"] is None
    assert info["input_range"] == [0.0, 1.0]
    assert info["score_samples"] == SCORE_SAMPLES
    assert info["max_samples"] == 10_000  # the cap the `sample` signature enforces (_BAD_INPUTS)
    assert info["max_score_batch"] == 1_000
    assert info["dataset"] == "digits"
    assert info["versions"]["tensorflow"] == tf.__version__
    assert info["versions"]["keras_vae"] == keras_vae.__version__
    restored = keras_vae.VAE.from_config(info["model_config"])
    assert restored.input_event_shape == EVENT_SHAPE and restored.latent_dim == 2


def _replay_warmup_requests(path, loaded, model_name):
    """Call every request of the warm-up file on `loaded`; return the signatures they name."""
    from tensorflow_serving.apis import prediction_log_pb2

    seen = []
    for record in tf.data.TFRecordDataset(os.path.join(path, export.WARMUP_FILE)):
        log = prediction_log_pb2.PredictionLog.FromString(record.numpy())
        request = log.predict_log.request
        assert request.model_spec.name == model_name
        signature = request.model_spec.signature_name
        outputs = loaded.signatures[signature](**{k: tf.make_ndarray(v) for k, v in request.inputs.items()})
        assert all(np.all(np.isfinite(v.numpy())) for v in outputs.values())
        seen.append(signature)
    return seen


def test_warmup_requests_replay_on_every_signature(exported, loaded):
    assert sorted(_replay_warmup_requests(exported, loaded, "m")) == sorted(loaded.signatures)


def _cli(*args):
    cli = os.path.join(os.path.dirname(sys.executable), "saved_model_cli")
    return subprocess.run([cli, *args], env=_env(), capture_output=True, text=True, timeout=300)


def _shown_inputs(stdout):
    """{signature: {input: (dtype, shape)}} as `saved_model_cli show --all` lists them."""
    shown = {}
    for section in stdout.split("signature_def['")[1:]:
        name, inputs = section[:section.index("'")], section.split("following output(s)")[0]
        if not name.startswith("__"):  # not the SavedModel's own init op
            shown[name] = {key: (dtype, shape) for key, dtype, shape in re.findall(
                r"inputs\['(\w+)'\] tensor_info:\s+dtype: (\w+)\s+shape: ([^\n]+)", inputs)}
    return shown


_X_SHOWN = ("DT_FLOAT", "(-1, 8, 8, 1)")
_SCALAR_SHOWN = ("DT_INT32", "()")


def test_saved_model_cli_shows_the_shapes_and_runs_the_signatures(exported, tmp_path):
    shown = _cli("show", "--all", "--dir", exported)
    assert shown.returncode == 0, shown.stderr[-2000:]
    assert _shown_inputs(shown.stdout) == {
        "encode": {"x": _X_SHOWN}, "reconstruct": {"x": _X_SHOWN}, "serving_default": {"x": _X_SHOWN},
        "score": {"x": _X_SHOWN}, "decode": {"z": ("DT_FLOAT", "(-1, 2)")},
        "sample": {"num_samples": _SCALAR_SHOWN, "seed": _SCALAR_SHOWN}}
    np.save(tmp_path / "x.npy", np.zeros((2, *EVENT_SHAPE), np.float32))
    ran = _cli("run", "--dir", exported, "--tag_set", "serve", "--signature_def", "score",
               "--inputs", f"x={tmp_path / 'x.npy'}")
    assert ran.returncode == 0, ran.stderr[-2000:]
    assert "log_likelihood" in ran.stdout and "elbo" in ran.stdout


def test_saved_model_cli_names_the_expected_shape(exported):
    # --input_exprs takes Python literals only in TF 2.21 (np.zeros((2, 5)) is refused before
    # the model is loaded): this is np.zeros((2, 5)) written out.
    ran = _cli("run", "--dir", exported, "--tag_set", "serve", "--signature_def", "encode",
               "--input_exprs", "x=[[0, 0, 0, 0, 0], [0, 0, 0, 0, 0]]")
    assert ran.returncode != 0
    assert "Cannot feed value of shape (2, 5) for Tensor encode_x:0, which has shape (None, 8, 8, 1)" in ran.stderr


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


def test_failed_export_leaves_no_version_and_no_staging_folder(tmp_path, model):
    # A real failure inside the staged write, after the SavedModel itself: metadata that
    # JSON cannot hold.
    base = tmp_path / "export"
    with pytest.raises(ValueError, match="not JSON compliant"):
        export.export_saved_model(model, str(base), "m", metadata={"training_metrics": {"loss": float("nan")}})
    assert os.listdir(base / "m") == []
    assert export.versions(str(base / "m")) == []


def test_a_model_that_is_no_vae_is_refused_before_any_write(tmp_path):
    inputs = keras.Input((8, 8, 1))
    not_a_vae = keras.Model(inputs, keras.layers.Flatten()(inputs))
    with pytest.raises(TypeError, match="export_saved_model exports a keras_vae.VAE. Received: Functional"):
        export.export_saved_model(not_a_vae, str(tmp_path / "export"), "m")
    assert not (tmp_path / "export").exists()


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


# ------------------------------------------------------------------ conditional models
NUM_CLASSES = 10
_X3 = np.zeros((3, *EVENT_SHAPE), np.float32)


@pytest.fixture(scope="module")
def cond_model():
    return keras_vae.mlp_vae(EVENT_SHAPE, 2, (16,), num_classes=NUM_CLASSES, seed=0)


@pytest.fixture(scope="module")
def cond_inputs(inputs):
    # x as a tensor: the conditional model's encode cannot mix a numpy x with its one-hot tensor of y.
    return {**inputs, "x3": tf.constant(inputs["x3"]), "y3": np.int32([3, 0, 9]), "y3_other": np.int32([4, 7, 1]), "y5": np.int32([2, 2, 5, 8, 0])}


@pytest.fixture(scope="module")
def cond_exported(tmp_path_factory, cond_model):
    return export.export_saved_model(cond_model, str(tmp_path_factory.mktemp("conditional") / "export"), "c",
                                     score_samples=SCORE_SAMPLES)


@pytest.fixture(scope="module")
def cond_loaded(cond_exported):
    return tf.saved_model.load(cond_exported)


# Labels a client might get wrong: (signature, inputs, error type, what the message says).
_BAD_LABELS = {
    "out_of_range": ("encode", {"x": _X3, "y": np.int32([0, 10, 2])}, "InvalidArgumentError",
                     "`y` must hold class indices in [0, 10); received values from] [0] [to] [10]"),
    "negative": ("score", {"x": _X3, "y": np.int32([-1, 0, 0])}, "InvalidArgumentError",
                 "`y` must hold class indices in [0, 10)"),
    "too_few": ("reconstruct", {"x": _X3, "y": np.int32([1, 2])}, "InvalidArgumentError",
                "`y` must have shape [batch]: one class index per example of `x`, which has] [3] "
                "[examples; received shape] [2]"),
    "one_hot": ("serving_default", {"x": _X3, "y": np.eye(10, dtype=np.int32)[:3]}, "InvalidArgumentError",
                "`y` must have shape [batch]: one class index per example of `x`, which has] [3] "
                "[examples; received shape] [3 10]"),
    "scalar": ("score", {"x": _X3, "y": np.int32(1)}, "InvalidArgumentError", "received shape] []"),
    "decode_count": ("decode", {"z": np.zeros((5, 2), np.float32), "y": np.int32([1])}, "InvalidArgumentError",
                     "one class index per example of `z`, which has] [5]"),
    "missing": ("encode", {"x": _X3}, "TypeError", "missing a required argument: 'y'"),
    "floats": ("encode", {"x": _X3, "y": np.float32([0, 1, 2])}, "InvalidArgumentError",
               "expected to be a int32 tensor but is a float tensor"),
    "sample_class": ("sample", {"num_samples": np.int32(2), "seed": np.int32(0), "y": np.int32(10)},
                     "InvalidArgumentError", "`y` must be a class index in [0, 9]; received] [10]"),
    "sample_classes": ("sample", {"num_samples": np.int32(2), "seed": np.int32(0), "y": np.int32([1, 2])},
                       "InvalidArgumentError", "`y` must be a scalar; received shape] [2]"),
    "sample_missing": ("sample", {"num_samples": np.int32(2), "seed": np.int32(0)}, "TypeError",
                       "missing a required argument: 'y'"),
}


@pytest.fixture(scope="module")
def cond_served(tmp_path_factory, cond_exported, cond_inputs):
    """The conditional export's signatures, good and bad calls, in a fresh process without keras, keras_vae or TFP."""
    x3, y3 = cond_inputs["x3"], cond_inputs["y3"]
    calls = {name: (name, {"x": x3, "y": y3}) for name in ("serving_default", "reconstruct", "encode", "score")}
    calls["score/other_classes"] = ("score", {"x": x3, "y": cond_inputs["y3_other"]})
    calls["decode"] = ("decode", {"z": cond_inputs["z"], "y": cond_inputs["y5"]})
    for label in (3, 5):
        calls[f"sample/{label}"] = ("sample", {"num_samples": np.int32(4), "seed": np.int32(7), "y": np.int32(label)})
    for case, (signature, bad, _, _) in _BAD_LABELS.items():
        calls[f"bad/{case}"] = (signature, bad)
    return _serve(cond_exported, calls, tmp_path_factory.mktemp("conditional_served") / "call")


def test_conditional_signatures_load_without_keras_vae_keras_or_tfp(cond_served):
    assert cond_served["signatures"] == ["decode", "encode", "reconstruct", "sample", "score", "serving_default"]
    assert cond_served["imported"] == []


@pytest.mark.parametrize("signature", ["serving_default", "reconstruct"])
def test_conditional_reconstruct_matches_the_model(cond_served, cond_model, cond_inputs, signature):
    x, y = cond_inputs["x3"], cond_inputs["y3"]
    got = cond_served[signature]
    assert set(got) == {"x_mean", "z_mean"}
    _close(got["x_mean"], cond_model.predict((x, y), verbose=0))
    _close(got["z_mean"], cond_model.encode(x, y).mean())


def test_conditional_encode_matches_the_posterior(cond_served, cond_model, cond_inputs):
    q = cond_model.encode(cond_inputs["x3"], cond_inputs["y3"])
    got = cond_served["encode"]
    assert set(got) == {"z_mean", "z_stddev"}
    _close(got["z_mean"], q.mean())
    _close(got["z_stddev"], q.stddev())


def test_conditional_decode_matches_the_likelihood(cond_served, cond_model, cond_inputs):
    likelihood = cond_model.decode(cond_inputs["z"], cond_inputs["y5"])
    got = cond_served["decode"]
    assert set(got) == {"x_mean", "x_logits"}
    _close(got["x_mean"], likelihood.mean())
    _close(got["x_logits"], likelihood.distribution.logits)
    # The labels are used: the same z decodes differently for other classes.
    assert not np.allclose(got["x_mean"], cond_model.decode(cond_inputs["z"], (cond_inputs["y5"] + 1) % 10).mean())


def test_conditional_score_matches_importance_sampling_given_the_labels(cond_served, cond_model, cond_inputs):
    x = cond_inputs["x3"]
    for key, y in (("score", cond_inputs["y3"]), ("score/other_classes", cond_inputs["y3_other"])):
        expected = cond_model.importance_sampled(x, SCORE_SAMPLES, export.SCORE_CHUNK_SIZE, seed=export.SCORE_SEED, y=y)
        np.testing.assert_allclose(cond_served[key]["log_likelihood"], expected["iwae_bound"].numpy(), rtol=1e-5,
                                   atol=1e-3)
        np.testing.assert_allclose(cond_served[key]["elbo"], expected["elbo"].numpy(), rtol=1e-5, atol=1e-3)
    assert not np.allclose(cond_served["score"]["log_likelihood"], cond_served["score/other_classes"]["log_likelihood"])


def test_conditional_sample_draws_the_class_asked_for(cond_served, cond_model):
    for label in (3, 5):
        got = cond_served[f"sample/{label}"]
        x_mean, z = cond_model.sample(4, seed=tf.constant([7, 0]), labels=label, return_latents=True)
        assert np.asarray(got["x_mean"]).shape == (4, *EVENT_SHAPE)
        _close(got["z"], z)
        _close(got["x_mean"], x_mean)
    # The same seed draws the same z; the class alone changes the images.
    np.testing.assert_array_equal(cond_served["sample/3"]["z"], cond_served["sample/5"]["z"])
    assert not np.allclose(cond_served["sample/3"]["x_mean"], cond_served["sample/5"]["x_mean"])


@pytest.mark.parametrize("case", sorted(_BAD_LABELS))
def test_bad_labels_get_a_clear_error(cond_served, case):
    _, _, error, message = _BAD_LABELS[case]
    got = cond_served[f"bad/{case}"]
    assert got.get("error") == error, got
    assert message in got["message"], got["message"]


def test_labels_fuzzed(cond_loaded):
    @_FUZZ
    @hypothesis.given(y=st.one_of(hnp.arrays(np.int32, st.integers(0, 4), elements=st.integers(-3, 12)),
                                  _arrays((3,))))
    def check(y):
        _assert_error_or_finite(cond_loaded.signatures["encode"], _X_OUTPUTS["encode"], x=_X3, y=y)

    check()


def test_conditional_metadata_and_warmup(cond_exported, cond_loaded):
    with open(os.path.join(cond_exported, export.METADATA_FILE)) as f:
        info = json.load(f)
    assert info["num_classes"] == NUM_CLASSES
    labels, label = {"shape": [None], "dtype": "int32"}, {"shape": [], "dtype": "int32"}
    for signature in ("encode", "decode", "reconstruct", "score"):
        assert info["inputs"][signature]["y"] == labels
    assert info["inputs"]["sample"]["y"] == label
    assert keras_vae.VAE.from_config(info["model_config"]).num_classes == NUM_CLASSES
    assert sorted(_replay_warmup_requests(cond_exported, cond_loaded, "c")) == sorted(cond_loaded.signatures)


def test_saved_model_cli_shows_and_checks_the_labels(cond_exported, tmp_path):
    shown = _cli("show", "--all", "--dir", cond_exported)
    assert shown.returncode == 0, shown.stderr[-2000:]
    x, y = {"x": _X_SHOWN, "y": ("DT_INT32", "(-1)")}, ("DT_INT32", "(-1)")
    assert _shown_inputs(shown.stdout) == {
        "encode": x, "reconstruct": x, "serving_default": x, "score": x,
        "decode": {"z": ("DT_FLOAT", "(-1, 2)"), "y": y},
        "sample": {"num_samples": _SCALAR_SHOWN, "seed": _SCALAR_SHOWN, "y": _SCALAR_SHOWN}}
    sampled = _cli("run", "--dir", cond_exported, "--tag_set", "serve", "--signature_def", "sample",
                   "--input_exprs", "num_samples=2;seed=0;y=3")
    assert sampled.returncode == 0, sampled.stderr[-2000:]
    assert "x_mean" in sampled.stdout
    np.save(tmp_path / "x.npy", np.zeros((2, *EVENT_SHAPE), np.float32))
    one_label = _cli("run", "--dir", cond_exported, "--tag_set", "serve", "--signature_def", "encode",
                     "--inputs", f"x={tmp_path / 'x.npy'}", "--input_exprs", "y=[3]")
    assert one_label.returncode != 0
    assert "`y` must have shape [batch]: one class index per example of `x`, which has] [2]" in one_label.stderr


def test_export_app_exports_a_conditional_run(tmp_path, cond_model, cond_inputs):
    model_dir = tmp_path / "run"
    model_dir.mkdir()
    cond_model.save(model_dir / "model.keras")
    result = subprocess.run([sys.executable, "-m", "apps.export", f"--model_dir={model_dir}",
                             f"--export_dir={tmp_path / 'export'}", "--model_name=cond", "--score_samples=5"],
                            cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "they take labels y, classes in [0, 10)" in result.stdout
    loaded = tf.saved_model.load(str(tmp_path / "export" / "cond" / "1"))
    x, y = cond_inputs["x3"], cond_inputs["y3"]
    _close(loaded.signatures["encode"](x=x, y=tf.constant(y))["z_mean"], cond_model.encode(x, y).mean())


# ------------------------------------------------------------------ your own layers
@keras.saving.register_keras_serializable(package="export_test")
class LaplaceLikelihood(keras.layers.Layer):
    """A user's own likelihood: independent Laplace p(x|z), its location from the decoder and
    one learned scale. No `named_parameters` and no `support`: both are optional."""

    def __init__(self, event_shape, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.event_shape = tuple(int(d) for d in event_shape)
        self.raw_scale = self.add_weight(name="raw_scale", shape=(), initializer="zeros")

    def call(self, loc):
        loc = tf.cast(loc, tf.float32)
        scale = tf.nn.softplus(tf.cast(self.raw_scale, tf.float32)) + 1e-3
        laplace = tfd.Laplace(loc, tf.broadcast_to(scale, tf.shape(loc)))
        return tfd.Independent(laplace, reinterpreted_batch_ndims=len(self.event_shape))

    def get_config(self):
        return {**super().get_config(), "event_shape": self.event_shape}


@keras.saving.register_keras_serializable(package="export_test")
class NamedLaplaceLikelihood(LaplaceLikelihood):
    """The same, naming its parameters for `decode`."""

    @staticmethod
    def named_parameters(distribution):
        return {"x_loc": distribution.distribution.loc, "x_scale": distribution.distribution.scale}


def _own_vae(likelihood, posterior=None, prior=None):
    posterior = posterior or keras_vae.GaussianPosterior(2)
    return keras_vae.VAE(keras_vae.networks.mlp_encoder(EVENT_SHAPE, (16,), 4, seed=0),
                         keras_vae.networks.mlp_decoder(2, (16,), EVENT_SHAPE, seed=1),
                         posterior, likelihood, prior=prior, seed=0)


def test_own_likelihood_trains_saves_reloads_and_exports(tmp_path, inputs):
    keras.utils.set_random_seed(0)
    model = _own_vae(LaplaceLikelihood(EVENT_SHAPE))
    model.compile(optimizer="adam")
    model.fit(keras_vae.data.load("digits").train[:256], epochs=1, batch_size=64, verbose=0)
    model.save(tmp_path / "laplace.keras")
    reloaded = keras.saving.load_model(tmp_path / "laplace.keras")  # as apps.export loads a run
    path = export.export_saved_model(reloaded, str(tmp_path / "export"), "laplace", score_samples=SCORE_SAMPLES)
    got = _serve(path, {"decode": ("decode", {"z": inputs["z"]}), "score": ("score", {"x": inputs["x3"]}),
                        "reconstruct": ("reconstruct", {"x": inputs["x3"]})}, tmp_path / "call")
    assert got["imported"] == []
    assert set(got["decode"]) == {"x_mean"}  # no named_parameters: no extra outputs
    _close(got["decode"]["x_mean"], model.decode(inputs["z"]).mean())
    _close(got["reconstruct"]["x_mean"], model.predict(inputs["x3"], verbose=0))
    expected = model.importance_sampled(inputs["x3"], SCORE_SAMPLES, export.SCORE_CHUNK_SIZE, seed=export.SCORE_SEED)
    np.testing.assert_allclose(got["score"]["log_likelihood"], expected["iwae_bound"].numpy(), rtol=1e-5, atol=1e-3)
    np.testing.assert_allclose(got["score"]["elbo"], expected["elbo"].numpy(), rtol=1e-5, atol=1e-3)
    # Trained: the learned scale moved from its start, softplus(0) + 1e-3, and the export serves it.
    assert not np.isclose(float(model.likelihood.raw_scale.numpy()), 0.0)


def test_own_likelihood_named_parameters_are_decode_outputs(tmp_path, inputs):
    model = _own_vae(NamedLaplaceLikelihood(EVENT_SHAPE))
    loaded = tf.saved_model.load(export.export_saved_model(model, str(tmp_path), "laplace"))
    got = loaded.signatures["decode"](z=tf.constant(inputs["z"]))
    likelihood = model.decode(inputs["z"])
    assert set(got) == {"x_mean", "x_loc", "x_scale"}
    _close(got["x_loc"], likelihood.distribution.loc)
    _close(got["x_scale"], likelihood.distribution.scale)
    _close(got["x_mean"], likelihood.mean())


class _NoMeanLikelihood(LaplaceLikelihood):
    """A Laplace squashed into (0, 1): TFP has no mean for it."""

    def call(self, loc):
        squashed = tfd.TransformedDistribution(tfd.Laplace(tf.cast(loc, tf.float32), 1.0), tfb.Sigmoid())
        return tfd.Independent(squashed, reinterpreted_batch_ndims=len(self.event_shape))


class _TensorLikelihood(LaplaceLikelihood):
    def call(self, loc):
        return tf.sigmoid(loc)  # a mean, not a distribution


class _BadParametersLikelihood(LaplaceLikelihood):
    @staticmethod
    def named_parameters(distribution):
        return distribution.distribution.loc  # not a dict


class _BadSupportLikelihood(LaplaceLikelihood):
    support = (1.0,)


class _TanhPosterior(keras.layers.Layer):
    """A Gaussian squashed into (-1, 1): TFP has no mean or stddev for it."""
    latent_dim = 2

    def call(self, params):
        normal = tfd.MultivariateNormalDiag(params[..., :2], tf.nn.softplus(params[..., 2:]) + 1e-3)
        return tfd.TransformedDistribution(normal, tfb.Tanh())


class _UnsampledNormal(tfd.Normal):
    def _sample_n(self, n, seed=None):
        raise NotImplementedError("no sampler")


class _LogProbOnlyPrior(keras.layers.Layer):
    def distribution(self):
        return tfd.Independent(_UnsampledNormal(tf.zeros([2]), 1.0), reinterpreted_batch_ndims=1)


class _NoDistributionPrior(keras.layers.Layer):
    pass


_MISSING_PIECES = {
    "no_mean": (lambda: _own_vae(_NoMeanLikelihood(EVENT_SHAPE)),
                "_NoMeanLikelihood (the likelihood) gives a Independent without mean()"),
    "not_a_distribution": (lambda: _own_vae(_TensorLikelihood(EVENT_SHAPE)),
                           "_TensorLikelihood (the likelihood) must give a tfd.Distribution, which decode uses. "
                           "Received: "),
    "named_parameters": (lambda: _own_vae(_BadParametersLikelihood(EVENT_SHAPE)),
                         "_BadParametersLikelihood.named_parameters(distribution) must return a dict"),
    "support": (lambda: _own_vae(_BadSupportLikelihood(EVENT_SHAPE)),
                "_BadSupportLikelihood.support must be (low, high)"),
    "posterior_mean": (lambda: _own_vae(LaplaceLikelihood(EVENT_SHAPE), posterior=_TanhPosterior()),
                       "_TanhPosterior (the posterior) gives a TransformedDistribution without mean()"),
    "prior_sample": (lambda: _own_vae(LaplaceLikelihood(EVENT_SHAPE), prior=_LogProbOnlyPrior()),
                     "_LogProbOnlyPrior (the prior) gives a Independent without sample()"),
    "prior_distribution": (lambda: _own_vae(LaplaceLikelihood(EVENT_SHAPE), prior=_NoDistributionPrior()),
                           "_NoDistributionPrior (the prior) needs a distribution() method"),
}


@pytest.mark.parametrize("case", sorted(_MISSING_PIECES))
def test_a_layer_missing_a_piece_gets_one_error_and_nothing_is_written(tmp_path, case):
    make, message = _MISSING_PIECES[case]
    with pytest.raises(TypeError) as error:
        export.export_saved_model(make(), str(tmp_path / "export"), "m")
    assert message in str(error.value)
    assert not (tmp_path / "export").exists()

