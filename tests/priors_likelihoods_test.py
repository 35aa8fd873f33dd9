"""Learnable priors (mixture of Gaussians, VampPrior) and the continuous Bernoulli and
discretized logistic likelihoods: numbers against numpy/scipy, training, saving."""

import decimal
import math

import keras
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp
from scipy import special, stats

import keras_vae
from keras_vae import bounds, data, networks
from keras_vae.likelihoods import (
    LIKELIHOODS,
    ContinuousBernoulliLikelihood,
    DiscretizedLogistic,
    DiscretizedLogisticLikelihood,
    make_likelihood,
)
from keras_vae.posteriors import GaussianPosterior
from keras_vae.priors import PRIORS, MixtureOfGaussiansPrior, StandardNormalPrior, VampPrior, make_prior

tfd = tfp.distributions
SEED = tf.constant([7, 11], tf.int32)


@pytest.fixture(scope="module")
def digits():
    return data.load("digits")


def _quadrature(num_points=400):
    """Gauss-Legendre nodes and weights on [0, 1]."""
    nodes, weights = np.polynomial.legendre.leggauss(num_points)
    return (nodes + 1) / 2, weights / 2


# ---------------------------------------------------------------- continuous Bernoulli
LOGITS = [-40.0, -8.0, -1.0, -1e-3, 0.0, 1e-3, 0.3, 3.0, 15.0, 40.0]


def np_continuous_bernoulli_log_prob(x, logits):
    """x log sigmoid(l) + (1 - x) log sigmoid(-l) + log C(l), C(l) = l (e^l + 1) / (e^l - 1), C(0) = 2."""
    x, l = np.asarray(x, np.float64), np.asarray(logits, np.float64)
    safe = np.where(l == 0, 1.0, l)
    log_c = np.where(l == 0, math.log(2.0), np.log(np.abs(safe)) + np.logaddexp(0, safe) - np.log(np.abs(np.expm1(safe))))
    return x * special.log_expit(l) + (1 - x) * special.log_expit(-l) + log_c


def test_continuous_bernoulli_integrates_to_one():
    nodes, weights = _quadrature()
    logits = np.array(LOGITS, np.float32)
    layer = ContinuousBernoulliLikelihood((len(LOGITS),))
    p = layer(np.broadcast_to(logits, (len(nodes), len(LOGITS))))
    # Per-dimension densities at every node: the Independent's base distribution.
    density = np.exp(p.distribution.log_prob(np.repeat(nodes[:, None], len(LOGITS), 1).astype(np.float32)).numpy())
    np.testing.assert_allclose(weights @ density, np.ones(len(LOGITS)), rtol=1e-4)
    # The mean is the continuous Bernoulli's, by quadrature: not sigmoid(logits).
    mean = p.mean().numpy()[0]
    np.testing.assert_allclose(mean, weights @ (nodes[:, None] * density), rtol=1e-4, atol=1e-6)
    assert abs(mean[LOGITS.index(3.0)] - special.expit(3.0)) > 0.1


def test_continuous_bernoulli_log_prob_matches_numpy():
    rng = np.random.default_rng(0)
    logits = rng.choice(LOGITS, size=(4, 5, 3)).astype(np.float32)
    x = rng.uniform(size=(4, 5, 3)).astype(np.float32)
    x[0, 0] = [0.0, 1.0, 0.5]
    layer = ContinuousBernoulliLikelihood((5, 3))
    p = layer(logits)
    assert p.batch_shape == [4] and p.event_shape == [5, 3]
    expected = np_continuous_bernoulli_log_prob(x, logits).sum(axis=(1, 2))
    np.testing.assert_allclose(p.log_prob(x).numpy(), expected, rtol=1e-5, atol=1e-4)
    assert layer.support == (0.0, 1.0)
    np.testing.assert_array_equal(layer.named_parameters(p)["x_logits"].numpy(), logits)
    assert layer(logits.astype(np.float16)).dtype == tf.float32


# ---------------------------------------------------------------- discretized logistic
def np_discretized_logistic_log_prob(x, loc, scale, num_bins=256):
    """log of the logistic CDF difference over x's bin, in float64 (edge bins open)."""
    x, loc, scale = (np.asarray(a, np.float64) for a in (x, loc, scale))
    half = 0.5 / (num_bins - 1)
    upper = np.where(x >= 1 - half, 1.0, special.expit((x + half - loc) / scale))
    lower = np.where(x <= half, 0.0, special.expit((x - half - loc) / scale))
    return np.log(upper - lower)


def decimal_discretized_logistic_log_prob(x, loc, scale, num_bins=256):
    """The same, as the plain CDF difference in 80-digit decimal arithmetic: exact where float64 underflows."""
    with decimal.localcontext() as context:
        context.prec, context.Emax, context.Emin = 80, decimal.MAX_EMAX, decimal.MIN_EMIN
        k = round(float(x) * (num_bins - 1))
        loc, scale = decimal.Decimal(float(loc)), decimal.Decimal(float(scale))
        width = decimal.Decimal(1) / (num_bins - 1)

        def cdf(t):  # F(t), and below, 1 - F(t): each without cancellation on its own side of loc
            return 1 / (1 + ((loc - t) / scale).exp())

        def sf(t):
            return 1 / (1 + ((t - loc) / scale).exp())

        a, b = (k - decimal.Decimal("0.5")) * width, (k + decimal.Decimal("0.5")) * width
        if k == 0:
            return float(cdf(b).ln())
        if k == num_bins - 1:
            return float(sf(a).ln())
        return float((sf(a) - sf(b)).ln() if a > loc else (cdf(b) - cdf(a)).ln())


@pytest.mark.parametrize("loc", [-1e3, -3.0, 0.0, 0.37, 1.0, 4.0, 1e3])
def test_discretized_logistic_probabilities_sum_to_one(loc):
    scales = np.array([1e-6, 1e-4, 1e-3, 0.02, 0.5, 50.0, 1e4], np.float32)
    grid = (np.arange(256) / 255).astype(np.float32)
    log_probs = DiscretizedLogistic(np.full_like(scales, loc), scales).log_prob(grid[:, None]).numpy()
    assert np.all(np.isfinite(log_probs)) and np.all(log_probs <= 0)
    np.testing.assert_allclose(special.logsumexp(log_probs.astype(np.float64), axis=0), 0.0, atol=1e-5)


def test_discretized_logistic_matches_float64_cdf_difference():
    rng = np.random.default_rng(1)
    loc = rng.uniform(0.05, 0.95, size=(6, 1)).astype(np.float32)
    scale = rng.uniform(0.01, 0.3, size=(6, 1)).astype(np.float32)
    grid = (np.arange(256) / 255).astype(np.float32)
    lp = DiscretizedLogistic(loc, scale).log_prob(grid).numpy()
    expected = np_discretized_logistic_log_prob(grid, loc, scale)
    np.testing.assert_allclose(lp, expected, rtol=1e-4, atol=1e-5)
    # A large scale, where F(b) - F(a) cancels badly: the factored form is close to pdf * width.
    wide = DiscretizedLogistic(0.5, 1e4).log_prob(np.float32(0.5)).numpy()
    np.testing.assert_allclose(wide, math.log(stats.logistic.pdf(0.0, scale=1e4) / 255), rtol=1e-6)


def test_discretized_logistic_extremes_are_finite_with_finite_gradients():
    loc = tf.constant([-1e4, -50.0, 0.5, 0.5, 60.0, 1e4], tf.float32)
    scale = tf.constant([1e-5, 1e-3, 1e-5, 1e5, 1e-3, 1e-5], tf.float32)
    x = tf.constant([1.0, 0.6, 0.2, 0.5, 0.0, 0.0], tf.float32)
    with tf.GradientTape() as tape:
        tape.watch([loc, scale])
        lp = DiscretizedLogistic(loc, scale).log_prob(x)
    grads = tape.gradient(lp, [loc, scale])
    assert all(np.all(np.isfinite(g.numpy())) for g in grads), grads
    # Far in the tails float64's CDF difference is 0 or 1 - 1; the factored form stays exact.
    expected = [decimal_discretized_logistic_log_prob(*args) for args in zip(x.numpy(), loc.numpy(), scale.numpy())]
    assert np.all(np.isfinite(expected)) and min(expected) < -1e8
    np.testing.assert_allclose(lp.numpy(), expected, rtol=1e-5, atol=1e-6)


def test_discretized_logistic_samples_follow_probabilities_and_mean_is_clipped_loc():
    d = DiscretizedLogistic([0.4, -0.2, 1.3], [0.05, 0.1, 0.2])
    samples = d.sample(100_000, seed=SEED).numpy()
    np.testing.assert_allclose(samples * 255, np.round(samples * 255), atol=1e-4)  # on the grid
    assert samples.min() >= 0 and samples.max() <= 1
    grid = (np.arange(256) / 255).astype(np.float32)
    probs = np.exp(d.log_prob(grid[:, None]).numpy())
    counts = np.stack([np.bincount(np.round(samples[:, i] * 255).astype(int), minlength=256) for i in range(3)], 1)
    np.testing.assert_allclose(counts / len(samples), probs, atol=0.006)
    np.testing.assert_allclose(d.mean().numpy(), [0.4, 0.0, 1.0])


def test_discretized_logistic_likelihood_basics():
    layer = DiscretizedLogisticLikelihood((2, 3))
    assert [w.name for w in layer.trainable_weights] == ["raw_scale"]
    np.testing.assert_allclose(layer.logistic_scale().numpy(), np.full((2, 3), 0.1), rtol=1e-5)
    rng = np.random.default_rng(2)
    loc = rng.uniform(size=(4, 2, 3)).astype(np.float32)
    x = (rng.integers(0, 256, size=(4, 2, 3)) / 255).astype(np.float32)
    p = layer(loc)
    assert p.batch_shape == [4] and p.event_shape == [2, 3]
    expected = np_discretized_logistic_log_prob(x, loc, 0.1).sum(axis=(1, 2))
    np.testing.assert_allclose(p.log_prob(x).numpy(), expected, rtol=1e-5)
    params = layer.named_parameters(p)
    assert set(params) == {"x_loc", "x_scale"} and params["x_scale"].shape == (4, 2, 3)
    np.testing.assert_allclose(p.mean().numpy(), loc)
    fixed = DiscretizedLogisticLikelihood((2, 3), num_bins=17, scale=0.05)
    assert not fixed.trainable_weights
    x17 = (rng.integers(0, 17, size=(4, 2, 3)) / 16).astype(np.float32)
    np.testing.assert_allclose(fixed(loc).log_prob(x17).numpy(),
                               np_discretized_logistic_log_prob(x17, loc, 0.05, num_bins=17).sum(axis=(1, 2)),
                               rtol=1e-5)
    # Bits per dimension of 8-bit data: a sharp, centred model codes each value in ~0 bits.
    sharp = DiscretizedLogisticLikelihood((2, 3), scale=1e-4)(x)
    bits_per_dim = -sharp.log_prob(x).numpy() / (6 * math.log(2.0))
    np.testing.assert_allclose(bits_per_dim, 0.0, atol=1e-6)


# ---------------------------------------------------------------- mixture prior
def np_mixture_log_prob(z, logits, locs, scales):
    log_weights = logits - special.logsumexp(logits)
    components = stats.norm.logpdf(z[..., None, :], locs, scales).sum(-1)  # [..., K]
    return special.logsumexp(log_weights + components, axis=-1)


def test_mixture_prior_log_prob_matches_numpy():
    prior = MixtureOfGaussiansPrior(3, num_components=4)
    assert {w.name for w in prior.trainable_weights} == {"mixture_logits", "locs", "raw_scales"}
    p = prior.distribution()
    assert p.batch_shape == [] and p.event_shape == [3]
    # It starts with equal weights, unit scales and the same spread-out locations every time.
    np.testing.assert_allclose(p.components_distribution.stddev().numpy(), np.ones((4, 3)), rtol=1e-5)
    np.testing.assert_array_equal(MixtureOfGaussiansPrior(3, num_components=4).locs.numpy(), prior.locs.numpy())
    assert np.min(np.ptp(prior.locs.numpy(), axis=0)) > 0.5
    rng = np.random.default_rng(3)
    logits, locs, raw = rng.normal(size=4), rng.normal(size=(4, 3)), rng.normal(size=(4, 3))
    for weight, value in zip((prior.mixture_logits, prior.locs, prior.raw_scales), (logits, locs, raw)):
        weight.assign(value.astype(np.float32))
    z = rng.normal(scale=2.0, size=(5, 2, 3)).astype(np.float32)
    expected = np_mixture_log_prob(z.astype(np.float64), logits, locs, np.logaddexp(0, raw) + 1e-4)
    np.testing.assert_allclose(prior.distribution().log_prob(z).numpy(), expected, rtol=1e-5)


def test_mixture_prior_monte_carlo_kl():
    layer = MixtureOfGaussiansPrior(2, num_components=5)
    prior = layer.distribution()
    rng = np.random.default_rng(4)
    params = np.concatenate([rng.normal(size=(3, 2)), rng.normal(-1.0, 0.3, size=(3, 2))], -1).astype(np.float32)
    q = GaussianPosterior(2)(params)
    assert bounds.closed_form_kl(q, prior) is None  # so the ELBO uses the Monte Carlo KL
    # log q(z) - log p(z) in scipy, from the raw parameters (softplus + 1e-4 scales) and the mixture's weights.
    loc, scale = params[:, :2].astype(np.float64), np.logaddexp(0, params[:, 2:].astype(np.float64)) + 1e-4
    mixture = (layer.mixture_logits.numpy(), layer.locs.numpy(), np.logaddexp(0, layer.raw_scales.numpy()) + 1e-4)

    def log_ratio(z):
        return stats.norm.logpdf(z, loc, scale).sum(-1) - np_mixture_log_prob(z, *mixture)

    z = q.sample(1000, seed=SEED)
    small = bounds.kl_divergence(q, prior, z).numpy()
    np.testing.assert_allclose(small, log_ratio(z.numpy().astype(np.float64)).mean(0), rtol=1e-4, atol=1e-4)
    # ... an unbiased estimate of the KL: within the Monte Carlo error of 200,000 numpy draws.
    per_sample = log_ratio(loc + scale * np.random.default_rng(5).standard_normal((200_000, 3, 2)))
    large = per_sample.mean(0)
    assert np.all(large > 0.1)
    assert np.all(np.abs(small - large) < 4 * per_sample.std(0) / math.sqrt(1000)), (small, large)


# ---------------------------------------------------------------- VampPrior
def _vamp_model(num_pseudo_inputs=6, **kwargs):
    keras.utils.set_random_seed(0)
    prior = VampPrior(2, num_pseudo_inputs, input_shape=(8, 8, 1))
    return keras_vae.mlp_vae((8, 8, 1), latent_dim=2, hidden_units=(16,), prior=prior, seed=0, **kwargs)


def test_vamp_prior_is_the_mixture_of_posteriors_at_the_pseudo_inputs():
    model = _vamp_model()
    prior = model.prior
    assert [w.name for w in prior.trainable_weights] == ["pseudo_inputs"]
    u = prior.pseudo_inputs.numpy()
    assert u.shape == (6, 8, 8, 1) and 0 <= u.min() and u.max() <= 1
    p = model.prior_distribution()
    assert p.batch_shape == [] and p.event_shape == [2]
    params = model.encoder(u).numpy().astype(np.float64)
    locs, scales = params[:, :2], np.logaddexp(0, params[:, 2:]) + 1e-4
    z = np.random.default_rng(5).normal(size=(7, 2)).astype(np.float32)
    expected = np_mixture_log_prob(z.astype(np.float64), np.zeros(6), locs, scales)
    np.testing.assert_allclose(p.log_prob(z).numpy(), expected, rtol=1e-5)
    # Gradients reach both the pseudo-inputs and the encoder.
    with tf.GradientTape() as tape:
        log_p = tf.reduce_sum(model.prior_distribution().log_prob(z))
    grads = tape.gradient(log_p, [prior.pseudo_inputs, model.encoder.trainable_weights[0]])
    assert all(g is not None and np.any(g.numpy() != 0) for g in grads)


def test_vamp_prior_with_full_covariance_posteriors():
    model = _vamp_model(covariance="full")
    p = model.prior_distribution()
    q = model.encode(model.prior.pseudo_inputs)
    assert isinstance(p.components_distribution, tfd.MultivariateNormalTriL)
    z = np.random.default_rng(6).normal(size=(4, 2)).astype(np.float32)
    # The equal mixture of the 6 posteriors, each density from scipy with that posterior's mean and covariance.
    means, covariances = q.mean().numpy().astype(np.float64), q.covariance().numpy().astype(np.float64)
    components = np.stack([stats.multivariate_normal(m, c).logpdf(z) for m, c in zip(means, covariances)], 1)
    expected = special.logsumexp(components, axis=1) - math.log(6)
    np.testing.assert_allclose(p.log_prob(z).numpy(), expected, rtol=1e-5)


def test_vamp_prior_errors():
    prior = VampPrior(2, 3, input_shape=(8, 8, 1))
    with pytest.raises(ValueError, match="needs the model"):
        prior.distribution()
    with pytest.raises(ValueError, match="needs the model"):
        prior()
    other = keras_vae.mlp_vae((4, 4, 1), latent_dim=2, hidden_units=(8,))
    with pytest.raises(ValueError, match=r"does not fit a model .* VampPrior\(2, input_shape=\(4, 4, 1\)\)"):
        prior.distribution(other)
    conditional = keras_vae.mlp_vae((8, 8, 1), latent_dim=2, hidden_units=(8,), num_classes=3, prior=prior)
    with pytest.raises(ValueError, match="VampPrior needs an unconditional model"):
        conditional.prior_distribution()
    with pytest.raises(ValueError, match="input_shape"):
        VampPrior(2, 3)
    with pytest.raises(ValueError, match="num_pseudo_inputs"):
        VampPrior(2, 0, input_shape=(3,))


@pytest.mark.parametrize("prior_name,covariance", [("mixture", "diagonal"), ("vamp", "diagonal"), ("vamp", "full")])
def test_learnable_priors_give_the_same_bounds_with_compiled_log_probs(digits, prior_name, covariance):
    # The evaluation compiles log p(z) and log q(z|x) with XLA (`jit_log_prob`): a mixture prior, and a
    # VampPrior of diagonal or full-covariance posteriors, must give what graph ops give.
    prior = make_prior(prior_name, 3, (8, 8, 1), **({"num_components": 5} if prior_name == "mixture"
                                                     else {"num_pseudo_inputs": 10}))
    model = keras_vae.mlp_vae((8, 8, 1), latent_dim=3, hidden_units=(16,), prior=prior, covariance=covariance, seed=0)
    x = digits.validation[:20]
    plain, jitted = (model.importance_sampled(x, 60, chunk_size=25, seed=4, return_log_weights=True, jit_log_prob=jit)
                     for jit in (False, True))
    for key in plain:
        np.testing.assert_allclose(jitted[key].numpy(), plain[key].numpy(), rtol=1e-5, atol=1e-4, err_msg=key)


# ---------------------------------------------------------------- training
def _mean_elbo(model, x):
    return float(np.mean(model.compute_terms(x, num_samples=20, seed=0)["elbo"].numpy()))


@pytest.mark.parametrize("prior_name", ["mixture", "vamp"])
def test_fit_with_learnable_prior_improves_elbo_and_moves_the_prior(digits, prior_name):
    keras.utils.set_random_seed(0)
    prior = make_prior(prior_name, 2, (8, 8, 1), **({"num_components": 5} if prior_name == "mixture"
                                                     else {"num_pseudo_inputs": 10}))
    model = keras_vae.mlp_vae((8, 8, 1), latent_dim=2, hidden_units=(64,), prior=prior, seed=0)
    before_weights = [w.numpy().copy() for w in prior.trainable_weights]
    before = _mean_elbo(model, digits.validation)
    model.compile(optimizer=keras.optimizers.Adam(3e-3))
    history = model.fit(digits.train, batch_size=100, epochs=8, verbose=0)
    after = _mean_elbo(model, digits.validation)
    assert np.all(np.isfinite(history.history["elbo"]))
    assert after > before + 5.0, (before, after)
    for old, new in zip(before_weights, prior.trainable_weights):
        assert np.max(np.abs(new.numpy() - old)) > 1e-3, new.name


def test_continuous_bernoulli_model_trains_on_grey_levels(digits):
    keras.utils.set_random_seed(0)
    model = keras_vae.mlp_vae((8, 8, 1), latent_dim=2, hidden_units=(64,), likelihood="continuous_bernoulli", seed=0)
    assert len(np.unique(digits.train)) == 17  # intensities k/16, not binarized
    before = _mean_elbo(model, digits.validation)
    model.compile(optimizer=keras.optimizers.Adam(3e-3))
    history = model.fit(digits.train, batch_size=100, epochs=4, verbose=0)
    after = _mean_elbo(model, digits.validation)
    assert np.all(np.isfinite(history.history["elbo"])) and math.isfinite(after)
    assert after > before + 5.0, (before, after)
    predicted = model.predict(digits.validation[:5], verbose=0)
    # The continuous Bernoulli's mean 1 / (1 - e^-l) - 1 / l (1/2 at l = 0), not sigmoid(l), at z = E[z|x].
    logits = model.decoder(model.encoder(digits.validation[:5]).numpy()[:, :2]).numpy().astype(np.float64)
    small = np.abs(logits) < 1e-3
    safe = np.where(small, 1.0, logits)
    expected = np.where(small, 0.5 + logits / 12, 1 / -np.expm1(-safe) - 1 / safe)
    assert predicted.shape == (5, 8, 8, 1)
    np.testing.assert_allclose(predicted, expected, rtol=1e-4, atol=1e-5)


def test_discretized_logistic_model_trains_on_17_level_digits(digits):
    """Digits are k/16: 17 bins, so log p(x|z) is an honest probability of the data."""
    keras.utils.set_random_seed(0)
    posterior = GaussianPosterior(2)
    model = keras_vae.VAE(
        encoder=networks.mlp_encoder((8, 8, 1), (64,), posterior.params_size(2)),
        decoder=networks.mlp_decoder(2, (64,), (8, 8, 1)),
        posterior=posterior,
        likelihood=DiscretizedLogisticLikelihood((8, 8, 1), num_bins=17),
        seed=0,
    )
    before = _mean_elbo(model, digits.validation)
    model.compile(optimizer=keras.optimizers.Adam(3e-3))
    model.fit(digits.train, batch_size=100, epochs=4, verbose=0)
    terms = model.compute_terms(digits.validation, num_samples=20, seed=0)
    after = float(np.mean(terms["elbo"]))
    assert after > before + 5.0, (before, after)
    assert np.all(terms["reconstruction"].numpy() <= 0)  # a probability, never a density above 1
    bits_per_dim = -after / (64 * math.log(2.0))
    assert 0 < bits_per_dim < math.log2(17)  # better than uniform over the 17 values


# ---------------------------------------------------------------- saving
SAVE_CASES = {
    "mixture": {"prior": MixtureOfGaussiansPrior(2, num_components=3, min_scale=1e-3)},
    "vamp": {"prior": VampPrior(2, 4, input_shape=(8, 8, 1))},
    "continuous_bernoulli": {"likelihood": "continuous_bernoulli"},
    "discretized_logistic": {"likelihood": "discretized_logistic"},
}


@pytest.mark.parametrize("case", sorted(SAVE_CASES))
def test_keras_file_round_trip_preserves_log_prob(tmp_path, digits, case):
    kwargs = dict(SAVE_CASES[case])
    if "prior" in kwargs:  # a fresh layer per run, randomised away from its initial values
        kwargs["prior"] = kwargs["prior"].__class__.from_config(kwargs["prior"].get_config())
    keras.utils.set_random_seed(1)
    model = keras_vae.mlp_vae((8, 8, 1), latent_dim=2, hidden_units=(8,), seed=0, **kwargs)
    rng = np.random.default_rng(6)
    for weight in model.prior.weights + model.likelihood.weights:
        weight.assign(weight.numpy() + rng.normal(scale=0.3, size=weight.shape).astype(np.float32))
    path = str(tmp_path / "model.keras")
    model.save(path)
    restored = keras.saving.load_model(path)
    assert type(restored.prior) is type(model.prior) and type(restored.likelihood) is type(model.likelihood)
    assert restored.prior.get_config() == model.prior.get_config()
    assert restored.likelihood.get_config() == model.likelihood.get_config()
    x = np.round(digits.validation[:16] * 255) / 255
    z = rng.normal(size=(5, 16, 2)).astype(np.float32)
    np.testing.assert_allclose(restored.prior_distribution().log_prob(z).numpy(),
                               model.prior_distribution().log_prob(z).numpy(), rtol=1e-6)
    np.testing.assert_allclose(restored.decode(z).log_prob(x).numpy(), model.decode(z).log_prob(x).numpy(),
                               rtol=1e-6)
    for name in ("elbo", "kl"):
        np.testing.assert_allclose(restored.compute_terms(x, seed=3)[name].numpy(),
                                   model.compute_terms(x, seed=3)[name].numpy(), rtol=1e-5)


@pytest.mark.parametrize("layer", [
    MixtureOfGaussiansPrior(4, num_components=7, min_scale=0.01, name="p"),
    VampPrior(3, 5, input_shape=(6,)),
    ContinuousBernoulliLikelihood((4, 2)),
    DiscretizedLogisticLikelihood((4,), num_bins=17, scale=0.2, min_scale=0.01),
    DiscretizedLogisticLikelihood((4,)),
], ids=lambda layer: type(layer).__name__)
def test_get_config_round_trip(layer):
    config = layer.get_config()
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
    assert type(restored) is type(layer) and restored.get_config() == config
    assert [w.shape for w in restored.weights] == [w.shape for w in layer.weights]
    assert all(w.dtype == "float32" for w in restored.weights)


# ---------------------------------------------------------------- registries and errors
def test_registries_and_factories():
    assert set(LIKELIHOODS) >= {"continuous_bernoulli", "discretized_logistic"}
    assert isinstance(make_likelihood("continuous_bernoulli", (3,)), ContinuousBernoulliLikelihood)
    discretized = make_likelihood("discretized_logistic", (3,), num_bins=17)
    assert isinstance(discretized, DiscretizedLogisticLikelihood) and discretized.num_bins == 17
    assert set(PRIORS) == {"standard_normal", "mixture", "vamp"}
    assert isinstance(make_prior("standard_normal", 3, (8,)), StandardNormalPrior)
    mixture = make_prior("mixture", 3, num_components=4)
    assert isinstance(mixture, MixtureOfGaussiansPrior) and mixture.num_components == 4
    vamp = make_prior("vamp", 3, (8,), num_pseudo_inputs=9)
    assert isinstance(vamp, VampPrior) and tuple(vamp.pseudo_inputs.shape) == (9, 8)
    with pytest.raises(ValueError, match="Unknown prior 'flow'; expected one of"):
        make_prior("flow", 3)
    with pytest.raises(ValueError, match="input_shape"):
        make_prior("vamp", 3)


def test_argument_errors():
    with pytest.raises(ValueError, match="num_components"):
        MixtureOfGaussiansPrior(2, num_components=0)
    with pytest.raises(ValueError, match="latent_dim"):
        MixtureOfGaussiansPrior(0)
    with pytest.raises(ValueError, match="min_scale"):
        MixtureOfGaussiansPrior(2, min_scale=-1.0)
    with pytest.raises(ValueError, match="num_bins"):
        DiscretizedLogisticLikelihood((3,), num_bins=1)
    with pytest.raises(ValueError, match="scale"):
        DiscretizedLogisticLikelihood((3,), scale=0.0)
    with pytest.raises(ValueError, match="min_scale"):
        DiscretizedLogisticLikelihood((3,), min_scale=0.5)


def test_free_bits_still_needs_the_standard_normal_prior():
    with pytest.raises(ValueError, match="Free bits need .* the standard normal prior"):
        keras_vae.mlp_vae((8, 8, 1), latent_dim=2, hidden_units=(8,), free_bits=0.1,
                          prior=MixtureOfGaussiansPrior(2))
