"""VAE model: reported metrics against an independent recomputation, training, saving, bad input."""

import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_vae
from keras_vae import data


@pytest.fixture(scope="module")
def digits():
    return data.load("digits")


def _model(seed=0, **kwargs):
    keras.utils.set_random_seed(seed)
    return keras_vae.mlp_vae((8, 8, 1), latent_dim=3, hidden_units=(32,), seed=seed, **kwargs)


def _independent_terms(model, x, num_samples, seed):
    """ELBO terms recomputed in numpy from the networks' raw outputs, not through the model."""
    params = model.encoder(x).numpy()
    loc, scale = params[:, :3], np.log1p(np.exp(params[:, 3:])) + 1e-4
    kl = 0.5 * np.sum(scale**2 + loc**2 - 1.0 - 2.0 * np.log(scale), axis=1)
    eps = np.random.default_rng(seed).standard_normal((num_samples,) + loc.shape).astype(np.float32)
    z = (loc + scale * eps).reshape(-1, 3)
    logits = model.decoder(z).numpy().reshape((num_samples,) + x.shape)
    log_px_z = x * -np.logaddexp(0, -logits) + (1 - x) * -np.logaddexp(0, logits)
    reconstruction = log_px_z.reshape(num_samples, len(x), -1).sum(-1).mean(0)
    return {"kl": kl, "reconstruction": reconstruction, "elbo": reconstruction - kl}


def test_reported_metrics_equal_independent_recomputation(digits):
    x = digits.validation[:128]
    model = _model(num_samples=1)
    # Evaluate with many samples so the Monte Carlo error of the reconstruction term is small.
    model.num_samples = 2000
    model.compile(optimizer="adam")
    reported = model.evaluate(x, batch_size=128, verbose=0, return_dict=True)
    expected = _independent_terms(model, x, num_samples=2000, seed=0)
    np.testing.assert_allclose(reported["kl"], expected["kl"].mean(), rtol=1e-5)
    # Standard error of the mean reconstruction over 2000 x 128 draws is far below 0.05 nats.
    np.testing.assert_allclose(reported["reconstruction"], expected["reconstruction"].mean(), atol=0.05)
    np.testing.assert_allclose(reported["elbo"], expected["elbo"].mean(), atol=0.05)
    np.testing.assert_allclose(reported["loss"], -reported["elbo"], rtol=1e-6)
    assert reported["loss"] > 10.0  # not Keras's empty loss tracker (which reports 0)


def test_fit_reports_the_training_loss_not_zero(digits):
    """With a zero learning rate, what fit logs must be the ELBO of the unchanged weights."""
    x = digits.validation[:128]
    model = _model()
    model.num_samples = 2000
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=0.0))
    history = model.fit(x, batch_size=128, epochs=1, verbose=0, shuffle=False)
    expected = _independent_terms(model, x, num_samples=2000, seed=1)
    np.testing.assert_allclose(history.history["kl"][0], expected["kl"].mean(), rtol=1e-5)
    np.testing.assert_allclose(history.history["elbo"][0], expected["elbo"].mean(), atol=0.05)
    np.testing.assert_allclose(history.history["loss"][0], -expected["elbo"].mean(), atol=0.05)


def test_beta_weights_the_kl_in_the_loss_only(digits):
    x = digits.validation[:64]
    model = _model(beta=4.0)
    model.compile(optimizer="adam")
    result = model.evaluate(x, batch_size=64, verbose=0, return_dict=True)
    np.testing.assert_allclose(result["elbo"], result["reconstruction"] - result["kl"], rtol=1e-5)
    np.testing.assert_allclose(result["loss"], -(result["reconstruction"] - 4.0 * result["kl"]), rtol=1e-5)


def test_kl_warmup_ramps_the_kl_weight(digits):
    model = _model(beta=2.0)
    model.compile(optimizer="adam")
    seen = []
    record = keras.callbacks.LambdaCallback(on_epoch_end=lambda e, logs: seen.append(float(model.kl_weight)))
    model.fit(digits.train[:128], epochs=5, batch_size=64, verbose=0,
              callbacks=[keras_vae.KLWarmup(4), record])
    np.testing.assert_allclose(seen, [0.5, 1.0, 1.5, 2.0, 2.0])
    assert float(model.kl_weight) == 2.0


def _train(digits, seed, epochs):
    model = _model(seed)
    model.compile(optimizer=keras.optimizers.Adam(3e-3))
    train = data.make_dataset(digits.train, 64, shuffle=True, seed=seed)
    validation = data.make_dataset(digits.validation, 128)
    return model.fit(train, validation_data=validation, epochs=epochs, verbose=0, shuffle=False).history


def test_training_on_digits_raises_validation_elbo_reproducibly(digits):
    first = _train(digits, seed=7, epochs=6)
    assert first["val_elbo"][-1] > first["val_elbo"][0] + 5.0
    second = _train(digits, seed=7, epochs=6)
    np.testing.assert_allclose(second["val_elbo"], first["val_elbo"], rtol=1e-5)
    other = _train(digits, seed=8, epochs=1)
    assert other["val_elbo"][0] != first["val_elbo"][0]


@pytest.mark.parametrize("kwargs", [
    {},
    {"covariance": "full", "likelihood": "gaussian", "likelihood_scale": "learned", "objective": "iwae",
     "num_samples": 3},
])
def test_keras_save_and_load_round_trip(digits, tmp_path, kwargs):
    x = digits.validation[:16]
    model = _model(**kwargs)
    model.compile(optimizer="adam")
    model.fit(x, epochs=1, batch_size=8, verbose=0)
    path = os.path.join(tmp_path, "model.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded, keras_vae.VAE)
    same = lambda config: json.loads(json.dumps(config))  # noqa: E731  (tuples and lists alike)
    assert same(loaded.get_config()) == same(model.get_config())
    np.testing.assert_allclose(loaded.encode(x).mean(), model.encode(x).mean(), rtol=1e-6)
    np.testing.assert_allclose(loaded.encode(x).stddev(), model.encode(x).stddev(), rtol=1e-6)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-6)
    # Training continues from the restored optimizer state.
    loaded.fit(x, epochs=1, batch_size=8, verbose=0)


def test_predict_encode_decode_sample_shapes_and_ranges(digits):
    model = _model()
    x = digits.validation[:5]
    reconstruction = model.predict(x, verbose=0)
    # predict: the Bernoulli mean sigmoid(logits) at z = E[z|x], from the networks' raw outputs.
    logits = model.decoder(model.encoder(x).numpy()[:, :3]).numpy().astype(np.float64)
    assert reconstruction.shape == x.shape
    np.testing.assert_allclose(reconstruction, 1 / (1 + np.exp(-logits)), rtol=1e-5, atol=1e-6)
    q = model.encode(x)
    assert q.batch_shape == [5] and q.event_shape == [3]
    assert model.decode(tf.zeros([4, 2, 3])).batch_shape == [4, 2]
    np.testing.assert_array_equal(model.sample(6, seed=1), model.sample(6, seed=1))  # a function of its seed ...
    assert not np.allclose(model.sample(6, seed=1), model.sample(6, seed=2))  # ... not a constant
    draws = model.sample(6, seed=1, mean=False).numpy()
    assert draws.shape == (6, 8, 8, 1) and set(np.unique(draws)) <= {0.0, 1.0}


def test_fused_train_loop_trains_exactly_like_keras_own_loop(digits):
    """Many XLA steps per call (calls of 5, 5 and 4 batches, the last batch short) give the
    weights and logs of Keras' loop, which runs one XLA step per call."""
    x = digits.train  # 1200 examples: 13 batches of 90 and one of 30
    runs = []
    for steps_per_execution in (1, 5):
        model = _model()
        model.compile(optimizer="adam", jit_compile=True, steps_per_execution=steps_per_execution)
        history = model.fit(x, batch_size=90, epochs=2, verbose=0, shuffle=False).history
        runs.append((history, model.get_weights(), int(model.optimizer.iterations)))
    (keras_history, keras_weights, keras_steps), (fused_history, fused_weights, fused_steps) = runs
    assert len(x) == 1200 and keras_steps == fused_steps == 28
    for name in ("loss", "elbo", "kl", "reconstruction"):
        np.testing.assert_allclose(fused_history[name], keras_history[name], rtol=1e-4)
    for fused, reference in zip(fused_weights, keras_weights):
        np.testing.assert_allclose(fused, reference, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("policy", ["mixed_bfloat16", "mixed_float16"])
def test_mixed_precision_trains_with_float32_distributions(digits, policy):
    keras.config.set_dtype_policy(policy)
    try:
        model = _model()
        assert model.encoder.get_layer("hidden_0").compute_dtype == policy.removeprefix("mixed_")
        model.compile(optimizer="adam")
        history = model.fit(digits.train[:256], epochs=3, batch_size=64, verbose=0).history
        assert model.encode(digits.validation[:4]).dtype == tf.float32
        assert np.all(np.isfinite(history["elbo"])) and history["elbo"][-1] > history["elbo"][0]
    finally:
        keras.config.set_dtype_policy("float32")


@pytest.mark.parametrize("x, message", [
    (np.zeros((4, 9, 9, 1), np.float32), r"Expected x of shape \(batch, 8, 8, 1\). Received shape \(4, 9, 9, 1\)"),
    (np.full((4, 8, 8, 1), np.nan, np.float32), "Expected finite values; data has 256 NaN"),
    (np.full((4, 8, 8, 1), 2.0, np.float32), r"BernoulliLikelihood expects values in \[0.0, 1.0\]"),
    (np.zeros((0, 8, 8, 1), np.float32), r"^Expected at least one example. Received shape \(0, 8, 8, 1\)$"),
])
def test_bad_input_errors(x, message):
    model = _model()
    model.compile(optimizer="adam")
    weights = [w.copy() for w in model.get_weights()]
    for call in (lambda: model.fit(x, verbose=0), lambda: model.evaluate(x, verbose=0),
                 lambda: model.predict(x, verbose=0)):
        with pytest.raises(ValueError, match=message):
            call()
    for before, after in zip(weights, model.get_weights()):
        np.testing.assert_array_equal(before, after)


def test_constructor_errors():
    with pytest.raises(ValueError, match="`beta` must be a number >= 0"):
        _model(beta=-1.0)
    with pytest.raises(ValueError, match="`num_samples` must be a positive integer"):
        _model(num_samples=0)
    with pytest.raises(ValueError, match="`objective` must be one of"):
        _model(objective="wake-sleep")
    with pytest.raises(ValueError, match="Unknown likelihood 'poisson'"):
        _model(likelihood="poisson")


# ---------------------------------------------------------------- init_output_bias
def _output_layer(model):
    leaves = lambda layer: ([leaf for inner in layer.layers for leaf in leaves(inner)]  # noqa: E731
                            if isinstance(layer, keras.Model) else [layer])
    return next(layer for layer in leaves(model.decoder) if layer.name == "likelihood_params")


@pytest.mark.parametrize("build", [
    lambda shape: keras_vae.mlp_vae(shape, 4, (16,), seed=0),
    lambda shape: keras_vae.hierarchical_vae(shape, (4, 2), ((16,), (8,)), seed=0),
], ids=["mlp", "hierarchical"])
def test_init_output_bias_decodes_every_z_to_the_data_marginal(digits, build):
    from scipy import special

    x = digits.train
    model = build(x.shape[1:])
    layer = _output_layer(model)
    assert not np.any(layer.bias.numpy())  # zeros before: p = 1/2 everywhere
    assert keras_vae.init_output_bias(model, x) is True
    mean = np.clip(x.mean(axis=0), 1e-3, 1 - 1e-3)
    np.testing.assert_allclose(layer.bias.numpy(), special.logit(mean).ravel(), rtol=1e-5, atol=1e-5)
    # With the output kernel at zero, every z decodes to the data's mean image.
    layer.kernel.assign(np.zeros(layer.kernel.shape))
    z = np.random.default_rng(0).normal(size=(3, model.latent_dim)).astype(np.float32)
    np.testing.assert_allclose(model.decode(z).mean().numpy(), np.broadcast_to(mean, (3, *mean.shape)), rtol=1e-5)


def test_init_output_bias_leaves_what_it_cannot_set(digits):
    for model, x in ((keras_vae.conv_vae((8, 8, 1), 4, filters=(8,), seed=0), digits.train),  # per-channel bias
                     (keras_vae.mlp_vae((8, 8, 1), 4, (16,), likelihood="continuous_bernoulli", seed=0), digits.train),
                     (keras_vae.mlp_vae((8, 8, 1), 4, (16,), likelihood="gaussian", seed=0), digits.train)):
        before = [w.numpy().copy() for w in model.weights]
        assert keras_vae.init_output_bias(model, x) is False
        for old, new in zip(before, model.weights):
            np.testing.assert_array_equal(old, new.numpy())
