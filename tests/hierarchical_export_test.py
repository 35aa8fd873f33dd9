"""SavedModel export of hierarchical VAEs (keras_vae.export, issue 16): `encode` gives each
stochastic layer's posterior mean and stddev besides the whole z's, `sample` draws from the
top, and the metadata names the layers' sizes. Checked on exports loaded with TensorFlow
alone in a fresh process, against the models in this one."""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp

import keras_vae
from keras_vae import export

tfd = tfp.distributions

EVENT_SHAPE = (8, 8, 1)
LATENT_DIMS = (6, 3)
NUM_CLASSES = 10
SCORE_SAMPLES = 10
LAYER_KEYS = {"z_1_mean", "z_1_stddev", "z_2_mean", "z_2_stddev"}

# Runs in a new interpreter where keras, keras_vae and tensorflow_probability cannot be
# imported (stand-in packages on PYTHONPATH raise ImportError). Loads each SavedModel in
# <folder>/calls.json, makes its calls on saved .npy inputs, and prints their outputs and
# every signature's declared outputs ({name: [dtype, shape]}).
_CALL_SCRIPT = """
import json, os, sys
import numpy as np
import tensorflow as tf

folder = sys.argv[1]
with open(os.path.join(folder, "calls.json")) as f:
    exports = json.load(f)
out = {}
for name, (path, calls) in exports.items():
    loaded = tf.saved_model.load(path)
    out[name] = {"declared": {signature: {key: [spec.dtype.name, spec.shape.as_list()]
                                          for key, spec in function.structured_outputs.items()}
                              for signature, function in loaded.signatures.items()}}
    for key, (signature, files) in calls.items():
        inputs = {k: tf.constant(np.load(os.path.join(folder, file))) for k, file in files.items()}
        out[name][key] = {k: v.numpy().tolist() for k, v in loaded.signatures[signature](**inputs).items()}
out["imported"] = sorted(m for m in ("keras", "keras_vae", "tensorflow_probability") if sys.modules.get(m))
print(json.dumps(out))
"""


def _serve(exports, folder):
    """Make the calls of `exports` ({name: (SavedModel path, {key: (signature, {input: array})})})
    in one fresh process without keras, keras_vae or TFP; returns {name: {key: outputs,
    "declared": ...}} and "imported" (of those three modules)."""
    folder.mkdir(parents=True)
    spec = {}
    for name, (path, calls) in exports.items():
        spec[name] = [str(path), {}]
        for key, (signature, inputs) in calls.items():
            files = {}
            for input_name, value in inputs.items():
                files[input_name] = f"{name}_{len(os.listdir(folder))}_{input_name}.npy"
                np.save(folder / files[input_name], np.asarray(value))
            spec[name][1][key] = [signature, files]
    (folder / "calls.json").write_text(json.dumps(spec))
    blocked = folder / "blocked"
    for module in ("keras", "keras_vae", "tensorflow_probability"):
        (blocked / module).mkdir(parents=True)
        (blocked / module / "__init__.py").write_text(f"raise ImportError('{module} is blocked in this process')\n")
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": str(blocked)}
    result = subprocess.run([sys.executable, "-c", _CALL_SCRIPT, str(folder)], cwd=folder, env=env,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def _close(got, expected):
    np.testing.assert_allclose(np.asarray(got), np.asarray(expected), rtol=1e-5, atol=1e-5)


def _metadata(path):
    with open(os.path.join(path, export.METADATA_FILE)) as f:
        return json.load(f)


def _trained(num_classes=None, seed=0):
    """A small two-layer model, fitted one epoch on binarized digits (the labels too if conditional)."""
    digits = keras_vae.data.load("digits")
    model = keras_vae.hierarchical_vae(EVENT_SHAPE, latent_dims=LATENT_DIMS, hidden_units=((16,), (8,)),
                                       num_classes=num_classes, seed=seed)
    model.compile(optimizer="adam", jit_compile=False)  # the export is under test, not XLA
    labels = (digits.train_labels[:300],) if num_classes else ()
    model.fit((digits.train[:300] > 0.5).astype(np.float32), *labels, epochs=1, batch_size=50, verbose=0)
    return model


@pytest.fixture(scope="module")
def inputs():
    digits = keras_vae.data.load("digits")
    return {"x": digits.test[:7], "y": np.int32([3, 0, 9, 1, 4, 4, 7])}


@pytest.fixture(scope="module")
def model():
    return _trained()


@pytest.fixture(scope="module")
def cond_model():
    return _trained(num_classes=NUM_CLASSES, seed=1)


@pytest.fixture(scope="module")
def flat_model():
    return keras_vae.mlp_vae(EVENT_SHAPE, 2, (16,), seed=0)


@pytest.fixture(scope="module")
def exported(tmp_path_factory, model, cond_model, flat_model):
    base = tmp_path_factory.mktemp("exported")
    return {name: export.export_saved_model(m, str(base), name, score_samples=SCORE_SAMPLES)
            for name, m in (("hierarchical", model), ("conditional", cond_model), ("flat", flat_model))}


@pytest.fixture(scope="module")
def served(tmp_path_factory, exported, inputs):
    """The three exports' signatures, run in one fresh process without keras, keras_vae or TFP."""
    x, y = inputs["x"], inputs["y"]
    sample = {"num_samples": np.int32(4), "seed": np.int32(7)}
    calls = {
        "hierarchical": {"encode": ("encode", {"x": x}), "reconstruct": ("reconstruct", {"x": x}),
                         "sample": ("sample", sample)},
        "conditional": {"encode": ("encode", {"x": x, "y": y}), "encode/other": ("encode", {"x": x, "y": (y + 1) % 10}),
                        "sample": ("sample", {**sample, "y": np.int32(3)})},
        "flat": {"encode": ("encode", {"x": x})},
    }
    return _serve({name: (exported[name], calls[name]) for name in calls}, tmp_path_factory.mktemp("served") / "call")


def test_exports_load_with_tensorflow_alone(served):
    assert served["imported"] == []


def test_encode_gives_each_layers_posterior_moments(served, model, inputs):
    got = served["hierarchical"]["encode"]
    assert set(got) == {"z_mean", "z_stddev"} | LAYER_KEYS
    q = model.encode(inputs["x"])
    means, stddevs = q.block_moments()
    for l in (1, 2):
        _close(got[f"z_{l}_mean"], means[l - 1])
        _close(got[f"z_{l}_stddev"], stddevs[l - 1])
        assert np.asarray(got[f"z_{l}_mean"]).shape == (7, LATENT_DIMS[l - 1])
        assert np.all(np.asarray(got[f"z_{l}_stddev"]) > 0)
    # The whole z's moments are unchanged, and the layers' concatenated.
    np.testing.assert_array_equal(got["z_mean"], np.concatenate([got["z_1_mean"], got["z_2_mean"]], axis=-1))
    np.testing.assert_array_equal(got["z_stddev"], np.concatenate([got["z_1_stddev"], got["z_2_stddev"]], axis=-1))
    _close(got["z_mean"], q.mean())
    _close(got["z_stddev"], q.stddev())


def test_signatures_declare_each_layers_size(served):
    declared = served["hierarchical"]["declared"]
    assert declared["encode"] == {
        "z_mean": ["float32", [None, 9]], "z_stddev": ["float32", [None, 9]],
        "z_1_mean": ["float32", [None, 6]], "z_1_stddev": ["float32", [None, 6]],
        "z_2_mean": ["float32", [None, 3]], "z_2_stddev": ["float32", [None, 3]]}
    # The other signatures are as for any model: over the whole z.
    assert declared["reconstruct"] == declared["serving_default"] == {
        "x_mean": ["float32", [None, *EVENT_SHAPE]], "z_mean": ["float32", [None, 9]]}
    assert declared["sample"] == {"x_mean": ["float32", [None, *EVENT_SHAPE]], "z": ["float32", [None, 9]]}
    assert set(served["conditional"]["declared"]["encode"]) == {"z_mean", "z_stddev"} | LAYER_KEYS


def test_reconstruct_is_unchanged(served, model, inputs):
    got = served["hierarchical"]["reconstruct"]
    assert set(got) == {"x_mean", "z_mean"}
    _close(got["x_mean"], model.predict(inputs["x"], verbose=0))
    _close(got["z_mean"], model.encode(inputs["x"]).mean())


def test_sample_draws_from_the_top_down(served, model):
    got = {k: np.asarray(v) for k, v in served["hierarchical"]["sample"].items()}
    assert got["x_mean"].shape == (4, *EVENT_SHAPE) and got["z"].shape == (4, 9)
    # model.sample draws z from the prior chain, z_2 ~ N(0, I) and then z_1 ~ p(z_1|z_2).
    x_mean, z = model.sample(4, seed=tf.constant([7, 0]), return_latents=True)
    _close(got["z"], z)
    _close(got["x_mean"], x_mean)
    prior = model.prior_distribution()
    assert prior.order == (1, 0)
    z_1, z_2 = prior.split(got["z"])
    # The density of each layer given the one above, N(0, I) for the top.
    log_p1, log_p2 = prior.block_log_probs(got["z"])
    _close(log_p2, tfd.MultivariateNormalDiag(tf.zeros(3), tf.ones(3)).log_prob(z_2))
    assert np.all(np.isfinite(log_p1)) and z_1.shape == (4, 6)


def test_metadata_names_the_layers_sizes(exported):
    info = _metadata(exported["hierarchical"])
    assert info["latent_dims"] == [6, 3]
    assert info["latent_dim"] == 9
    assert info["inputs"]["decode"]["z"]["shape"] == [None, 9]
    assert _metadata(exported["conditional"])["latent_dims"] == [6, 3]
    assert export.export_metadata(keras_vae.hierarchical_vae(EVENT_SHAPE, latent_dims=(5, 4, 2), hidden_units=(
        (8,), (4,), (4,))), "m", 1, SCORE_SAMPLES)["latent_dims"] == [5, 4, 2]


def test_flat_model_has_one_layer_and_no_per_layer_outputs(served, exported, flat_model, inputs):
    assert _metadata(exported["flat"])["latent_dims"] == [2]
    got = served["flat"]["encode"]
    assert set(got) == {"z_mean", "z_stddev"}
    assert set(served["flat"]["declared"]["encode"]) == {"z_mean", "z_stddev"}
    _close(got["z_mean"], flat_model.encode(inputs["x"]).mean())


def test_conditional_encode_gives_each_layers_moments_given_the_labels(served, cond_model, inputs):
    x = tf.constant(inputs["x"])
    for key, y in (("encode", inputs["y"]), ("encode/other", (inputs["y"] + 1) % 10)):
        got = served["conditional"][key]
        assert set(got) == {"z_mean", "z_stddev"} | LAYER_KEYS
        means, stddevs = cond_model.encode(x, y).block_moments()
        for l in (1, 2):
            _close(got[f"z_{l}_mean"], means[l - 1])
            _close(got[f"z_{l}_stddev"], stddevs[l - 1])
        _close(got["z_mean"], cond_model.encode(x, y).mean())
    # The labels are used: q(z_1|x, y) and, through z_1, the layer above change with them.
    for name in ("z_1_mean", "z_2_mean"):
        assert not np.allclose(served["conditional"]["encode"][name], served["conditional"]["encode/other"][name])
    got = served["conditional"]["sample"]
    x_mean, z = cond_model.sample(4, seed=tf.constant([7, 0]), labels=3, return_latents=True)
    _close(got["z"], z)
    _close(got["x_mean"], x_mean)


# ------------------------------------------------------------------ a user's own posterior with blocks
class _BlockNormal(tfd.MultivariateNormalDiag):
    """A diagonal Gaussian over z = [z_1 (1 unit), z_2 (3 units)], reporting the two blocks' moments."""

    def block_moments(self):
        split = lambda t: tf.split(t, [1, 3], axis=-1)  # noqa: E731
        return split(self.mean()), split(self.stddev())


class _BlockPosterior(keras_vae.GaussianPosterior):
    """A user's posterior with block_moments but neither `latent_dims` nor the chain's `sizes`:
    the blocks' sizes come from the moments' last axes."""

    def call(self, params):
        q = super().call(params)
        return _BlockNormal(q.loc, q.stddev())


class _BadBlockNormal(_BlockNormal):
    def block_moments(self):
        return [self.mean()], [self.stddev()[..., :2]]  # the stddev's block is not the mean's


class _BadBlockPosterior(keras_vae.GaussianPosterior):
    def call(self, params):
        q = super().call(params)
        return _BadBlockNormal(q.loc, q.stddev())


def _own_vae(posterior):
    return keras_vae.VAE(keras_vae.networks.mlp_encoder(EVENT_SHAPE, (16,), 8, seed=0),
                         keras_vae.networks.mlp_decoder(4, (16,), EVENT_SHAPE, seed=1), posterior,
                         keras_vae.likelihoods.make_likelihood("bernoulli", EVENT_SHAPE), seed=0)


def test_any_posterior_with_block_moments_gets_per_layer_outputs(tmp_path, inputs):
    own = _own_vae(_BlockPosterior(4, name="block_posterior"))
    assert export.latent_blocks(own) == [1, 3]
    archive = export.build_archive(own, SCORE_SAMPLES)
    archive.write_out(str(tmp_path / "own"), verbose=False)
    encode = tf.saved_model.load(str(tmp_path / "own")).signatures["encode"]
    assert {k: v.shape.as_list() for k, v in encode.structured_outputs.items()} == {
        "z_mean": [None, 4], "z_stddev": [None, 4], "z_1_mean": [None, 1], "z_1_stddev": [None, 1],
        "z_2_mean": [None, 3], "z_2_stddev": [None, 3]}
    got = encode(x=tf.constant(inputs["x"]))
    q = own.encode(inputs["x"])
    _close(got["z_1_mean"], q.mean()[:, :1])
    _close(got["z_2_stddev"], q.stddev()[:, 1:])


def test_posterior_with_bad_block_moments_is_refused_before_any_write(tmp_path):
    own = _own_vae(_BadBlockPosterior(4, name="bad_block_posterior"))
    with pytest.raises(TypeError) as error:
        export.export_saved_model(own, str(tmp_path / "export"), "m")
    assert "_BadBlockPosterior (the posterior) gives a _BadBlockNormal whose block_moments() must return" in str(
        error.value)
    assert not (tmp_path / "export").exists()
