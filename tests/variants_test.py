"""Model variants: convolutional networks, free bits and cyclical KL annealing."""

import keras
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp

import keras_vae
from keras_vae import bounds, callbacks, networks

tfd = tfp.distributions


@pytest.fixture(scope="module")
def digits():
    return keras_vae.data.load("digits")


def _fit(model, x, epochs, **kwargs):
    model.compile(optimizer=keras.optimizers.Adam(3e-3))
    return model.fit(x, epochs=epochs, batch_size=64, verbose=0, **kwargs).history


# ------------------------------------------------------------------ convolutional networks
@pytest.mark.parametrize("shape, filters", [((28, 28, 1), (8, 16)), ((32, 32, 3), (8, 16, 16)), ((8, 8, 1), (8, 16))])
def test_conv_networks_shapes(shape, filters):
    encoder = networks.conv_encoder(shape, filters, output_size=10, hidden_units=(32,))
    decoder = networks.conv_decoder(5, tuple(reversed(filters)), shape, hidden_units=(32,))
    assert encoder(np.zeros((2, *shape), np.float32)).shape == (2, 10)
    assert decoder(np.zeros((2, 5), np.float32)).shape == (2, *shape)


@pytest.mark.parametrize("shape", [(784,), (28, 28), (30, 30, 1)])
def test_conv_vae_rejects_non_image_shapes(shape):
    with pytest.raises(ValueError, match=r"needs images of shape \(H, W, C\) with H and W divisible by 4"):
        keras_vae.conv_vae(shape, 2)


def test_conv_vae_trains(digits, tmp_path):
    model = keras_vae.conv_vae(digits.input_shape, 4, filters=(16, 32), hidden_units=(64,), seed=0)
    history = _fit(model, digits.train, 8, validation_data=(digits.validation,))
    assert history["val_elbo"][-1] > history["val_elbo"][0] + 5
    assert model.predict(digits.test[:3], verbose=0).shape == (3, *digits.input_shape)
    model.save(tmp_path / "conv.keras")
    restored = keras.saving.load_model(tmp_path / "conv.keras")
    np.testing.assert_allclose(restored.predict(digits.test[:3], verbose=0),
                               model.predict(digits.test[:3], verbose=0), rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------ free bits
def _diagonal(batch=6, latent=4, seed=0):
    rng = np.random.default_rng(seed)
    loc = (rng.normal(size=(batch, latent)) * [[0.05, 1.0, 2.0, 0.01]]).astype(np.float32)
    scale = np.exp(rng.normal(size=(batch, latent)) * 0.1).astype(np.float32)
    return tfd.MultivariateNormalDiag(loc, scale), loc, scale


def test_free_bits_objective_matches_its_definition():
    q, loc, scale = _diagonal()
    prior = tfd.MultivariateNormalDiag(tf.zeros(4), tf.ones(4))
    x = tf.zeros((6, 3))

    def decode(z):
        return tfd.Independent(tfd.Normal(tf.zeros(tf.concat([tf.shape(z)[:-1], [3]], 0)), 1.0), 1)

    seed = tf.constant([1, 2], tf.int32)
    plain = bounds.bound_terms(x, q, prior, decode, seed=seed)
    floored = bounds.bound_terms(x, q, prior, decode, seed=seed, free_bits=0.5, beta=2.0)
    # Closed form per dimension: KL(N(m, s^2) || N(0, 1)) = (m^2 + s^2 - 1)/2 - log s.
    per_dim = (loc**2 + scale**2 - 1) / 2 - np.log(scale)
    reconstruction = 3 * np.log(1 / np.sqrt(2 * np.pi))  # log N(x = 0; 0, I_3): this decoder ignores z
    expected = reconstruction - 2.0 * np.sum(np.maximum(0.5, per_dim.mean(axis=0)))
    assert float(tf.reduce_mean(floored["objective"])) == pytest.approx(expected, rel=1e-5)
    # The reported ELBO and KL are the model's own, whatever the floor.
    np.testing.assert_allclose(floored["elbo"], plain["elbo"], rtol=1e-6)
    np.testing.assert_allclose(floored["kl"], per_dim.sum(axis=1), rtol=1e-4)
    # Dimensions under the floor get no gradient from the KL term.
    loc_var = tf.Variable(loc)
    with tf.GradientTape() as tape:
        terms = bounds.bound_terms(x, tfd.MultivariateNormalDiag(loc_var, scale), prior, decode, seed=seed,
                                   free_bits=0.5)
        loss = -tf.reduce_mean(terms["objective"])
    gradient = tape.gradient(loss, loc_var).numpy()
    below = per_dim.mean(axis=0) < 0.5
    assert below.any() and (~below).any()
    np.testing.assert_array_equal(gradient[:, below], 0.0)
    assert np.all(np.abs(gradient[:, ~below]) > 0)


def test_free_bits_rejects_a_full_covariance_posterior():
    q = tfd.MultivariateNormalTriL(tf.zeros((2, 3)), tf.eye(3, batch_shape=[2]))
    prior = tfd.MultivariateNormalDiag(tf.zeros(3), tf.ones(3))
    with pytest.raises(ValueError, match="diagonal Gaussian posterior and prior"):
        bounds.bound_terms(tf.zeros((2, 1)), q, prior, lambda z: tfd.Independent(tfd.Normal(z[..., :1], 1.0), 1),
                           free_bits=0.1)


@pytest.mark.parametrize("kwargs", [{"objective": "iwae", "num_samples": 2}, {"covariance": "full"}, {}])
def test_vae_free_bits_validation(kwargs):
    if not kwargs:
        with pytest.raises(ValueError, match="free_bits"):
            keras_vae.mlp_vae((4,), 2, (8,), free_bits=-1.0)
        return
    with pytest.raises(ValueError, match="free_bits"):
        keras_vae.mlp_vae((4,), 2, (8,), free_bits=0.1, **kwargs)


def test_free_bits_keep_latent_dimensions_in_use(digits, tmp_path):
    # With a strong KL weight, plain training switches most dimensions off; a floor keeps them.
    active = {}
    for free_bits in (0.0, 0.5):
        model = keras_vae.mlp_vae(digits.input_shape, 8, (64,), beta=4.0, free_bits=free_bits, seed=0)
        _fit(model, digits.train, 10)
        active[free_bits] = keras_vae.evaluation.active_units(model, digits.test)
        model.save(tmp_path / "m.keras")
        assert keras.saving.load_model(tmp_path / "m.keras").free_bits == free_bits
    assert active[0.5] > active[0.0]


# ------------------------------------------------------------------ cyclical KL annealing
class _RecordWeight(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.weights = []

    def on_train_batch_begin(self, batch, logs=None):
        if batch == 0:
            self.weights.append(float(self.model.kl_weight.numpy()))


def test_kl_cyclical_schedule(digits):
    model = keras_vae.mlp_vae(digits.input_shape, 2, (16,), beta=2.0, seed=0)
    record = _RecordWeight()
    _fit(model, digits.train[:128], 8, callbacks=[callbacks.KLCyclical(4, ramp_fraction=0.5), record])
    # Cycles of 4 epochs, ramping over the first 2: beta * [1/2, 1, 1, 1] twice.
    np.testing.assert_allclose(record.weights, [1.0, 2.0, 2.0, 2.0] * 2)
    assert float(model.kl_weight.numpy()) == 2.0  # restored to beta at the end


@pytest.mark.parametrize("args", [(0,), (3, 0.0), (3, 1.5)])
def test_kl_cyclical_rejects_bad_arguments(args):
    with pytest.raises(ValueError):
        callbacks.KLCyclical(*args)


def test_one_kl_schedule_at_a_time(tmp_path):
    with pytest.raises(ValueError, match="one KL schedule"):
        callbacks.training_callbacks(str(tmp_path), 5, 1e-3, kl_warmup_epochs=2, kl_cycle_epochs=2)


# ------------------------------------------------------------------ conditional VAE
@pytest.fixture(scope="module")
def labelled_digits():
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = (bunch.images / 16.0).astype(np.float32)[..., None]
    return x[:1500], bunch.target[:1500], x[1500:], bunch.target[1500:]


@pytest.fixture(scope="module")
def conditional(labelled_digits):
    x, y, x_val, y_val = labelled_digits
    model = keras_vae.mlp_vae((8, 8, 1), 2, (128, 128), num_classes=10, seed=0)
    history = _fit(model, x, 40, y=y, validation_data=(x_val, y_val))
    return model, history


def test_conditional_vae_trains_on_x_and_y(conditional):
    _, history = conditional
    # About -26 nats after the first epoch, -21.4 after 40.
    assert history["val_elbo"][-1] > history["val_elbo"][0] + 3


def test_conditional_samples_are_of_the_chosen_class(conditional, labelled_digits):
    from sklearn.linear_model import LogisticRegression

    model, _ = conditional
    x, y, x_val, y_val = labelled_digits
    classifier = LogisticRegression(max_iter=2000).fit(x.reshape(len(x), -1), y)
    assert classifier.score(x_val.reshape(len(x_val), -1), y_val) > 0.9
    hits = []
    for digit in range(10):
        samples = model.sample(20, seed=digit, labels=digit).numpy()
        hits.append(np.mean(classifier.predict(samples.reshape(20, -1)) == digit))
    assert np.mean(hits) > 0.8, hits


def test_conditional_vae_api(conditional, labelled_digits, tmp_path):
    model, _ = conditional
    x, y, x_val, y_val = labelled_digits
    # predict and the bounds take labels; they change the answer.
    assert model.predict((x_val[:4], y_val[:4]), verbose=0).shape == (4, 8, 8, 1)
    right = model.iwae_bound(x_val[:50], 20, y=y_val[:50]).numpy()
    wrong = model.iwae_bound(x_val[:50], 20, y=(y_val[:50] + 1) % 10).numpy()
    assert right.mean() > wrong.mean() + 1
    # Missing or bad labels are clear errors.
    with pytest.raises(ValueError, match=r"pass labels y"):
        model.evaluate(x_val, verbose=0)
    with pytest.raises(ValueError, match=r"integers in \[0, 10\)"):
        model.fit(x[:10], y[:10] + 10, epochs=1, verbose=0)
    with pytest.raises(ValueError, match="needs labels y"):
        model.encode(x_val[:2])
    # .keras round trip.
    model.save(tmp_path / "cvae.keras")
    restored = keras.saving.load_model(tmp_path / "cvae.keras")
    assert restored.num_classes == 10
    np.testing.assert_allclose(restored.predict((x_val[:4], y_val[:4]), verbose=0),
                               model.predict((x_val[:4], y_val[:4]), verbose=0), rtol=1e-5, atol=1e-6)


def test_conditional_networks_must_take_labels():
    with pytest.raises(ValueError, match="conditional VAE needs an encoder taking"):
        keras_vae.VAE(networks.mlp_encoder((4,), (8,), 4), networks.mlp_decoder(2, (8,), (4,)),
                      keras_vae.GaussianPosterior(2), keras_vae.BernoulliLikelihood((4,)), num_classes=3)
