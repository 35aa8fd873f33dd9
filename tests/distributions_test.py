"""Tests for the posterior, the Bernoulli and Gaussian likelihoods and the standard normal prior
(keras_vae.posteriors, likelihoods, priors): every number is checked against numpy/scipy closed forms."""

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from scipy import special, stats

import keras
from keras_vae import bounds, likelihoods, posteriors
from keras_vae.likelihoods import BernoulliLikelihood, GaussianLikelihood, make_likelihood
from keras_vae.posteriors import GaussianPosterior
from keras_vae.priors import StandardNormalPrior

tfd = tfp.distributions


# ---------------------------------------------------------------- numpy references
def np_softplus(x):
    return np.logaddexp(0.0, x)


def np_inv_softplus(y):
    return np.log(np.expm1(y))


def np_kl_diag(m1, s1, m2, s2):
    """KL(N(m1, diag s1^2) || N(m2, diag s2^2)), summed over the last axis."""
    m1, s1, m2, s2 = (np.asarray(a, np.float64) for a in (m1, s1, m2, s2))
    terms = s1**2 / s2**2 + (m2 - m1) ** 2 / s2**2 - 1.0 + 2.0 * np.log(s2 / s1)
    return 0.5 * np.sum(terms, axis=-1)


def np_kl_full_to_std_normal(m, cov):
    m, cov = np.asarray(m, np.float64), np.asarray(cov, np.float64)
    latent = m.shape[-1]
    _, logdet = np.linalg.slogdet(cov)
    return 0.5 * (np.trace(cov, axis1=-2, axis2=-1) + np.sum(m**2, -1) - latent - logdet)


def diag_params(loc, scale, min_scale):
    """Raw [loc, raw_scale] giving stddev `scale` under softplus(raw) + min_scale."""
    return np.concatenate([loc, np_inv_softplus(scale - min_scale)], axis=-1).astype(np.float32)


# ---------------------------------------------------------------- diagonal KL
def test_analytic_kl_diag_to_standard_normal_prior():
    rng = np.random.default_rng(0)
    loc = rng.normal(size=(4, 3))
    scale = rng.uniform(0.2, 2.5, size=(4, 3))
    q = GaussianPosterior(3)(diag_params(loc, scale, 1e-4))
    p = StandardNormalPrior(3).distribution()
    kl = tfd.kl_divergence(q, p).numpy()
    assert kl.shape == (4,)
    np.testing.assert_allclose(kl, np_kl_diag(loc, scale, 0.0, 1.0), rtol=1e-5, atol=1e-5)
    # bounds.kl_divergence without samples is the same closed form.
    np.testing.assert_allclose(bounds.kl_divergence(q, p).numpy(), kl, rtol=1e-6)


def test_analytic_kl_between_two_diagonal_gaussians():
    rng = np.random.default_rng(1)
    m1, m2 = rng.normal(size=(2, 5, 4))
    s1, s2 = rng.uniform(0.3, 3.0, size=(2, 5, 4))
    posterior = GaussianPosterior(4, min_scale=0.0)
    q1, q2 = posterior(diag_params(m1, s1, 0.0)), posterior(diag_params(m2, s2, 0.0))
    np.testing.assert_allclose(
        tfd.kl_divergence(q1, q2).numpy(), np_kl_diag(m1, s1, m2, s2), rtol=1e-5, atol=1e-5
    )
    np.testing.assert_allclose(tfd.kl_divergence(q1, q1).numpy(), np.zeros(5), atol=1e-5)


@pytest.mark.parametrize("other", ["prior", "gaussian"])
def test_monte_carlo_kl_converges_to_closed_form(other):
    rng = np.random.default_rng(2)
    loc, scale = rng.normal(size=(3, 2)), rng.uniform(0.4, 1.6, size=(3, 2))
    q = GaussianPosterior(2)(diag_params(loc, scale, 1e-4))
    if other == "prior":
        p, m2, s2 = StandardNormalPrior(2).distribution(), np.zeros(2), np.ones(2)
    else:
        m2, s2 = rng.normal(size=2), rng.uniform(0.5, 2.0, size=2)
        p = tfd.MultivariateNormalDiag(m2.astype(np.float32), s2.astype(np.float32))
    n = 40_000
    z = q.sample(n, seed=tf.constant([7, 11], tf.int32))
    mc = bounds.kl_divergence(q, p, z).numpy()
    # Per-sample log q - log p, recomputed in scipy, gives the Monte Carlo standard error.
    zn = z.numpy().astype(np.float64)
    per_sample = (stats.norm.logpdf(zn, loc, scale) - stats.norm.logpdf(zn, m2, s2)).sum(-1)
    np.testing.assert_allclose(mc, per_sample.mean(0), rtol=1e-4, atol=1e-4)
    stderr = per_sample.std(0) / np.sqrt(n)
    exact = np_kl_diag(loc, scale, m2, s2)
    assert np.all(np.abs(mc - exact) < 4 * stderr + 1e-4), (mc, exact, stderr)


@pytest.mark.parametrize("covariance", ["diagonal", "full"])
def test_exp_scale_activation_makes_log_scale_the_raw_output(covariance):
    """scale_activation="exp": every standard deviation (the tril's diagonal) is exp(raw) + min_scale,
    the rest as with softplus; log_prob against scipy."""
    latent, min_scale = 3, 1e-3
    rng = np.random.default_rng(12)
    params = rng.normal(size=(4, GaussianPosterior.params_size(latent, covariance))).astype(np.float32)
    q = GaussianPosterior(latent, covariance=covariance, min_scale=min_scale, scale_activation="exp")(params)
    softplus_q = GaussianPosterior(latent, covariance=covariance, min_scale=min_scale)(params)
    tril, softplus_tril = (d.scale.to_dense().numpy().astype(np.float64) for d in (q, softplus_q))
    diag = np.diagonal(tril, axis1=-2, axis2=-1)
    raw_diag = np_inv_softplus(np.diagonal(softplus_tril, axis1=-2, axis2=-1) - min_scale)
    np.testing.assert_allclose(diag, np.exp(raw_diag) + min_scale, rtol=1e-4)
    off = ~np.eye(latent, dtype=bool)
    np.testing.assert_array_equal(tril[:, off], softplus_tril[:, off])
    np.testing.assert_array_equal(q.mean().numpy(), params[:, :latent])
    z = rng.normal(size=(4, latent))
    expected = [stats.multivariate_normal.logpdf(z[b], params[b, :latent], tril[b] @ tril[b].T) for b in range(4)]
    np.testing.assert_allclose(q.log_prob(z.astype(np.float32)).numpy(), expected, rtol=1e-5)


# ---------------------------------------------------------------- full covariance
def test_full_covariance_posterior_is_positive_definite_with_correct_kl():
    latent = 3
    size = GaussianPosterior.params_size(latent, "full")
    assert size == latent + latent * (latent + 1) // 2 == 9
    assert GaussianPosterior.params_size(latent) == 2 * latent
    rng = np.random.default_rng(3)
    params = rng.normal(size=(6, size)).astype(np.float32)
    params[0, latent:] = -30.0  # every raw entry tiny: the diagonal floor keeps S > 0
    min_scale = 1e-3
    q = GaussianPosterior(latent, covariance="full", min_scale=min_scale)(params)
    assert isinstance(q, tfd.MultivariateNormalTriL)
    assert q.batch_shape == [6] and q.event_shape == [latent]

    cov = q.covariance().numpy().astype(np.float64)
    assert np.all(np.linalg.eigvalsh(cov[1:]) > 0)
    np.testing.assert_allclose(q.mean().numpy(), params[:, :latent], rtol=1e-6)

    # The tril holds exactly the raw entries, the diagonal ones mapped by softplus + floor.
    tril = q.scale.to_dense().numpy().astype(np.float64)
    assert np.all(np.triu(tril, 1) == 0)
    diag = np.diagonal(tril, axis1=-2, axis2=-1)
    assert np.all(diag >= min_scale * (1 - 1e-6))
    rows, cols = np.tril_indices(latent, -1)
    for b in range(1, 6):  # row 0 has the -30s, where softplus is not invertible in float32
        raw = params[b, latent:]
        recovered = np.concatenate([np_inv_softplus(diag[b] - min_scale), tril[b, rows, cols]])
        np.testing.assert_allclose(np.sort(recovered), np.sort(raw), rtol=1e-4, atol=1e-4)

    cov64 = tril @ np.swapaxes(tril, -1, -2)
    np.testing.assert_allclose(cov[1:], cov64[1:], rtol=1e-5, atol=1e-5)
    kl = tfd.kl_divergence(q, StandardNormalPrior(latent).distribution()).numpy()
    np.testing.assert_allclose(
        kl[1:], np_kl_full_to_std_normal(params[1:, :latent], cov64[1:]), rtol=1e-4, atol=1e-4
    )
    # Row 0 is too ill-conditioned (diagonal ~1e-3, off-diagonal -30) for slogdet(S):
    # use tr(S) = ||L||_F^2 and log det S = 2 sum log L_ii instead.
    trace0, logdet0 = np.sum(tril[0] ** 2), 2 * np.sum(np.log(diag[0]))
    kl0 = 0.5 * (trace0 + np.sum(params[0, :latent].astype(np.float64) ** 2) - latent - logdet0)
    np.testing.assert_allclose(kl[0], kl0, rtol=1e-4)


def test_softplus_floor_keeps_stddev_at_least_min_scale():
    min_scale = 1e-3
    params = np.concatenate([np.zeros((2, 3)), np.full((2, 3), -1e30)], -1).astype(np.float32)
    q = GaussianPosterior(3, min_scale=min_scale)(params)
    stddev = q.stddev().numpy()
    assert np.all(np.isfinite(stddev)) and np.all(stddev >= min_scale * (1 - 1e-6))
    np.testing.assert_allclose(stddev, min_scale, rtol=1e-5)
    kl = tfd.kl_divergence(q, StandardNormalPrior(3).distribution()).numpy()
    assert np.all(np.isfinite(kl))
    np.testing.assert_allclose(kl, np_kl_diag(np.zeros(3), np.full(3, min_scale), 0.0, 1.0), rtol=1e-4)
    lp = q.log_prob(np.zeros((2, 3), np.float32)).numpy()
    np.testing.assert_allclose(lp, stats.norm.logpdf(0.0, 0.0, min_scale) * 3, rtol=1e-5)

    full_params = np.full((2, GaussianPosterior.params_size(3, "full")), -1e30, np.float32)
    q_full = GaussianPosterior(3, covariance="full", min_scale=min_scale)(full_params)
    tril = q_full.scale.to_dense().numpy()
    assert np.all(np.isfinite(tril))
    assert np.all(np.diagonal(tril, axis1=-2, axis2=-1) >= min_scale * (1 - 1e-6))


def test_posterior_casts_parameters_to_float32():
    params = np.zeros((2, 4), np.float16)
    q = GaussianPosterior(2)(params)
    assert q.dtype == tf.float32


# ---------------------------------------------------------------- likelihoods
def test_bernoulli_log_prob_matches_numpy():
    rng = np.random.default_rng(4)
    logits = rng.normal(scale=3.0, size=(5, 2, 3)).astype(np.float32)
    binary = (rng.uniform(size=(5, 2, 3)) < 0.5).astype(np.float32)
    intensity = rng.uniform(size=(5, 2, 3)).astype(np.float32)
    likelihood = BernoulliLikelihood((2, 3))(logits)
    l64 = logits.astype(np.float64)
    for x in (binary, intensity):
        expected = np.sum(x * special.log_expit(l64) + (1 - x) * special.log_expit(-l64), axis=(1, 2))
        lp = likelihood.log_prob(x).numpy()
        assert lp.shape == (5,)
        np.testing.assert_allclose(lp, expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(likelihood.mean().numpy(), special.expit(l64), rtol=1e-5)


@settings(max_examples=40, deadline=None)
@given(hnp.arrays(np.float32, (3, 4), elements=st.floats(-200, 200, width=32)),
       hnp.arrays(np.float32, (3, 4), elements=st.floats(0, 1, width=32)))
def test_fused_bernoulli_log_prob_equals_tfp_and_float64(logits, x):
    """Our one-softplus cross-entropy: the same numbers as TFP's two softplus terms, broadcast over samples."""
    ours = likelihoods.Bernoulli(logits=tf.constant([logits, logits / 2]), dtype=tf.float32).log_prob(x).numpy()
    tfp_value = tfd.Bernoulli(logits=tf.constant([logits, logits / 2]), dtype=tf.float32).log_prob(x).numpy()
    l64 = np.stack([logits, logits / 2]).astype(np.float64)
    exact = x * special.log_expit(l64) + (1 - x) * special.log_expit(-l64)
    assert ours.shape == (2, 3, 4)
    np.testing.assert_allclose(ours, exact, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(ours, tfp_value, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("compile_", [False, True], ids=["eager", "xla"])
def test_bernoulli_log_prob_error_per_value_is_a_float32_rounding(compile_):
    """log(1 + e) in place of log1p(e) costs at most ~1.2e-7 nats a value (1 + e rounded), at any logit."""
    logits = np.concatenate([-np.logspace(-8, 4, 200), [0.0], np.logspace(-8, 4, 200)]).astype(np.float32)
    x = np.stack([np.zeros_like(logits), np.ones_like(logits)])
    log_prob = lambda x: likelihoods.Bernoulli(logits=logits, dtype=tf.float32).log_prob(x)  # noqa: E731
    ours = (tf.function(log_prob, jit_compile=True) if compile_ else log_prob)(tf.constant(x)).numpy()
    l64 = logits.astype(np.float64)
    exact = x * special.log_expit(l64) + (1 - x) * special.log_expit(-l64)
    np.testing.assert_array_less(np.abs(ours - exact), 2e-7 + 2e-7 * np.abs(exact))


def _bernoulli_sum_case(event_shape, seed):
    """Logits [3, 4, *event] (typical values and a tail out to +-60) and binary and grey x [4, *event]."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(scale=3.0, size=(3, 4, *event_shape))
    logits.flat[::7] = rng.uniform(-60, 60, size=logits.flat[::7].shape)
    logits.flat[3::11] = 0.0  # softplus' slope there is 1/2, where relu's and |l|'s are not defined
    binary = (rng.uniform(size=(4, *event_shape)) < 0.4).astype(np.float32)
    grey = rng.uniform(size=(4, *event_shape)).astype(np.float32)
    return logits.astype(np.float32), (binary, grey)


@pytest.mark.parametrize("compile_", [False, True], ids=["eager", "xla"])
@pytest.mark.parametrize("event_shape", [(28, 28, 1), (8, 8, 1), (3, 5), (17,), (2,)],
                         ids=["784=16x49", "64=16x4", "15", "17 (prime)", "2"])
def test_bernoulli_summed_log_prob_matches_float64(event_shape, compile_):
    """The event sum with one log per product of up to 16 factors: float64's value to float32 rounding
    (2e-7 a value, and the sum's own rounding of the terms' magnitudes), x broadcast over samples."""
    logits, xs = _bernoulli_sum_case(event_shape, seed=len(event_shape) + event_shape[0])
    likelihood = BernoulliLikelihood(event_shape)
    log_prob = lambda l, x: likelihood(l).log_prob(x)  # noqa: E731
    log_prob = tf.function(log_prob, jit_compile=True) if compile_ else log_prob
    l64, axes = logits.astype(np.float64), tuple(range(-len(event_shape), 0))
    for x in xs:
        terms = x * special.log_expit(l64) + (1 - x) * special.log_expit(-l64)
        ours = log_prob(tf.constant(logits), tf.constant(x)).numpy()
        assert ours.shape == (3, 4)
        bound = 2e-7 * np.prod(event_shape) + 1e-6 * np.abs(terms).sum(axes)
        np.testing.assert_array_less(np.abs(ours - terms.sum(axes)), bound)


@pytest.mark.parametrize("compile_", [False, True], ids=["eager", "xla"])
def test_bernoulli_summed_log_prob_gradient_is_x_minus_sigmoid(compile_):
    """d/dl of x l - softplus(l) is x - sigmoid(l), at l = 0 too: the custom gradient of the grouped logs."""
    logits, xs = _bernoulli_sum_case((8, 8, 1), seed=3)
    likelihood = BernoulliLikelihood((8, 8, 1))

    def gradient(l, x):
        with tf.GradientTape() as tape:
            tape.watch(l)
            total = tf.reduce_sum(likelihood(l).log_prob(x) * tf.constant([[1.0], [2.0], [3.0]]))
        return tape.gradient(total, l)

    gradient = tf.function(gradient, jit_compile=True) if compile_ else gradient
    upstream = np.array([1.0, 2.0, 3.0])[:, None, None, None, None]
    for x in xs:
        expected = upstream * (x - special.expit(logits.astype(np.float64)))
        np.testing.assert_allclose(gradient(tf.constant(logits), tf.constant(x)).numpy(), expected, atol=1e-6)


def test_bernoulli_summed_log_prob_with_an_unknown_event_size_sums_per_value():
    logits, (x, _) = _bernoulli_sum_case((6,), seed=4)
    likelihood = BernoulliLikelihood((6,))
    traced = tf.function(lambda l, x: likelihood(l).log_prob(x),
                         input_signature=[tf.TensorSpec([None, None, None]), tf.TensorSpec([None, None])])
    per_value = likelihoods.Bernoulli(logits=logits).log_prob(x).numpy().sum(-1)
    np.testing.assert_allclose(traced(logits, x).numpy(), per_value, rtol=1e-6)
    np.testing.assert_allclose(likelihood(logits).log_prob(x).numpy(), per_value, rtol=1e-6, atol=1e-5)


def test_bernoulli_from_probs_falls_back_to_tfp():
    probs, x = tf.constant([0.1, 0.5, 0.9]), tf.constant([1.0, 0.0, 1.0])
    ours = likelihoods.Bernoulli(probs=probs, dtype=tf.float32)
    assert ours.logits is None
    np.testing.assert_allclose(ours.log_prob(x), np.log([0.1, 0.5, 0.9]), rtol=1e-6)


@pytest.mark.parametrize("event_shape", [(5,), (2, 3), (4, 3, 1)])
def test_flat_independent_sum_equals_tfp(event_shape):
    loc = tf.random.stateless_normal((7, 2, *event_shape), seed=[1, 2])
    x = tf.random.stateless_normal((2, *event_shape), seed=[3, 4])
    n = len(event_shape)
    ours = likelihoods.Independent(tfd.Normal(loc, 1.0), reinterpreted_batch_ndims=n)
    reference = tfd.Independent(tfd.Normal(loc, 1.0), reinterpreted_batch_ndims=n)
    assert ours.event_shape == reference.event_shape and ours.batch_shape == reference.batch_shape == (7, 2)
    np.testing.assert_allclose(ours.log_prob(x), reference.log_prob(x), rtol=1e-5, atol=1e-4)
    compiled = tf.function(lambda x: ours.log_prob(x), jit_compile=True)(x)
    np.testing.assert_allclose(compiled, reference.log_prob(x), rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("mode", ["eager", "xla", "unknown event size"])
def test_independent_event_sum_value_and_gradient(mode):
    """The event sum (a dot product with ones when the event's size is static): the sum of the
    per-value log densities, and its gradient d/dloc = x - loc for N(x; loc, 1)."""
    loc = tf.random.stateless_normal((3, 2, 4, 3, 1), seed=[5, 6])
    x = tf.random.stateless_normal((2, 4, 3, 1), seed=[7, 8])

    def value_and_gradient(loc, x):
        with tf.GradientTape() as tape:
            tape.watch(loc)
            log_prob = likelihoods.Independent(tfd.Normal(loc, 1.0), reinterpreted_batch_ndims=3).log_prob(x)
            total = tf.reduce_sum(log_prob)
        return log_prob, tape.gradient(total, loc)

    if mode == "xla":
        value_and_gradient = tf.function(value_and_gradient, jit_compile=True)
    elif mode == "unknown event size":
        value_and_gradient = tf.function(value_and_gradient, input_signature=[
            tf.TensorSpec([None] * 5), tf.TensorSpec([None] * 4)])
    log_prob, gradient = value_and_gradient(loc, x)
    x64, loc64 = x.numpy().astype(np.float64), loc.numpy().astype(np.float64)
    exact = (-0.5 * (x64 - loc64) ** 2 - 0.5 * np.log(2 * np.pi)).sum(axis=(-3, -2, -1))
    np.testing.assert_allclose(log_prob.numpy(), exact, rtol=1e-6, atol=1e-5)
    np.testing.assert_allclose(gradient.numpy(), x64 - loc64, atol=1e-6)


@pytest.mark.parametrize("covariance", ["diagonal", "full"])
def test_philox_sample_has_the_posterior_law_and_reparameterized_gradients(covariance):
    """posteriors.sample draws from q itself: moments match, and d/dparams flows through z."""
    latent, n = 3, 200_000
    posterior = GaussianPosterior(latent, covariance=covariance)
    params = tf.Variable(tf.random.stateless_normal((2, posterior.params_size(latent, covariance)), seed=[5, 6]))
    q = posterior(params)
    z = posteriors.sample(q, n, seed=tf.constant([7, 8])).numpy()
    assert z.shape == (n, 2, latent)
    covariance_q = q.covariance().numpy()
    for b in range(2):
        np.testing.assert_allclose(z[:, b].mean(0), q.mean()[b], atol=5 * np.sqrt(covariance_q[b].diagonal().max() / n))
        np.testing.assert_allclose(np.cov(z[:, b].T), covariance_q[b], atol=0.02 * np.abs(covariance_q[b]).max())
    # Same seed, same draws (also compiled); another seed, other draws.
    again = posteriors.sample(q, 5, seed=tf.constant([7, 8]))
    np.testing.assert_array_equal(again, z[:5])
    assert not np.allclose(posteriors.sample(q, 5, seed=tf.constant([7, 9])), z[:5])
    with tf.GradientTape() as tape:
        mean_z = tf.reduce_mean(posteriors.sample(posterior(params), 1000, seed=tf.constant([1, 1])), axis=0)
        loss = tf.reduce_sum(mean_z[:, 0])  # d/dloc[:, 0] = 1 exactly for a location family
    gradient = tape.gradient(loss, params).numpy()
    np.testing.assert_allclose(gradient[:, 0], 1.0, rtol=1e-5)
    # Non-Gaussian distributions sample as TFP does.
    bernoulli = tfd.Bernoulli(logits=tf.zeros(4))
    np.testing.assert_array_equal(posteriors.sample(bernoulli, 3, seed=tf.constant([1, 2])),
                                  bernoulli.sample(3, seed=tf.constant([1, 2])))


def test_gaussian_likelihood_fixed_scale_matches_numpy():
    rng = np.random.default_rng(5)
    loc = rng.normal(size=(4, 6)).astype(np.float32)
    x = rng.normal(size=(4, 6)).astype(np.float32)
    likelihood = GaussianLikelihood((6,), scale=0.7)(loc)
    expected = stats.norm.logpdf(x, loc, 0.7).sum(-1)
    lp = likelihood.log_prob(x).numpy()
    assert lp.shape == (4,)
    np.testing.assert_allclose(lp, expected, rtol=1e-5)
    np.testing.assert_allclose(likelihood.stddev().numpy(), np.full((4, 6), 0.7), rtol=1e-6)


def test_gaussian_likelihood_learned_scale_matches_numpy():
    rng = np.random.default_rng(6)
    layer = GaussianLikelihood((2, 3), scale="learned", min_scale=1e-3)
    assert len(layer.trainable_weights) == 1
    assert tuple(layer.raw_scale.shape) == (2, 3)
    # Starts at sigma = softplus(raw) + min_scale = 1.
    np.testing.assert_allclose(layer.stddev().numpy(), np.full((2, 3), 1.0), rtol=1e-5)
    raw = rng.normal(size=(2, 3)).astype(np.float32)
    layer.raw_scale.assign(raw)
    sigma = np_softplus(raw.astype(np.float64)) + 1e-3
    loc = rng.normal(size=(3, 2, 3)).astype(np.float32)
    x = rng.normal(size=(3, 2, 3)).astype(np.float32)
    lp = layer(loc).log_prob(x).numpy()
    assert lp.shape == (3,)
    np.testing.assert_allclose(lp, stats.norm.logpdf(x, loc, sigma).sum(axis=(1, 2)), rtol=1e-5)


def test_make_likelihood():
    assert isinstance(make_likelihood("bernoulli", (3,)), BernoulliLikelihood)
    gaussian = make_likelihood("gaussian", (3,), scale=0.5)
    assert isinstance(gaussian, GaussianLikelihood) and gaussian.scale == 0.5
    with pytest.raises(ValueError, match="Unknown likelihood"):
        make_likelihood("poisson", (3,))


def test_standard_normal_prior():
    p = StandardNormalPrior(4).distribution()
    assert p.batch_shape == [] and p.event_shape == [4]
    z = np.random.default_rng(7).normal(size=(3, 4)).astype(np.float32)
    np.testing.assert_allclose(p.log_prob(z).numpy(), stats.norm.logpdf(z).sum(-1), rtol=1e-5)


# ---------------------------------------------------------------- configs and errors
def _roundtrip_cases():
    rng = np.random.default_rng(8)
    diag_params_ = rng.normal(size=(2, 6)).astype(np.float32)
    full_params = rng.normal(size=(2, 9)).astype(np.float32)
    z = rng.normal(size=(2, 3)).astype(np.float32)
    x_bin = (rng.uniform(size=(2, 4)) < 0.5).astype(np.float32)
    x_real = rng.normal(size=(2, 4)).astype(np.float32)
    logits = rng.normal(size=(2, 4)).astype(np.float32)
    return [
        (GaussianPosterior(3, min_scale=0.01, name="q"), diag_params_, z),
        (GaussianPosterior(3, covariance="full", min_scale=0.02), full_params, z),
        (GaussianPosterior(3, min_scale=0.01, scale_activation="exp"), diag_params_, z),
        (BernoulliLikelihood((4,)), logits, x_bin),
        (GaussianLikelihood((4,), scale=0.3, min_scale=0.01), logits, x_real),
        (GaussianLikelihood((4,), scale="learned"), logits, x_real),
    ]


@pytest.mark.parametrize("index", range(len(_roundtrip_cases())))
def test_get_config_round_trip(index):
    layer, params, value = _roundtrip_cases()[index]
    config = layer.get_config()
    clone = layer.__class__.from_config(config)
    assert clone.get_config() == config
    # Through Keras' own (JSON-able) serialization, too.
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
    assert type(restored) is type(layer) and restored.get_config() == config
    for other in (clone, restored):
        np.testing.assert_allclose(
            other(params).log_prob(value).numpy(), layer(params).log_prob(value).numpy(), rtol=1e-6
        )
        np.testing.assert_allclose(other(params).mean().numpy(), layer(params).mean().numpy(), rtol=1e-6)


def test_prior_get_config_round_trip():
    prior = StandardNormalPrior(5)
    clone = StandardNormalPrior.from_config(prior.get_config())
    assert clone.get_config() == prior.get_config() and clone.latent_dim == 5
    z = np.ones((2, 5), np.float32)
    np.testing.assert_allclose(
        clone.distribution().log_prob(z).numpy(), prior.distribution().log_prob(z).numpy()
    )


@pytest.mark.parametrize("latent_dim", [0, -2, 2.5, "3", None, True])
def test_bad_latent_dim_raises(latent_dim):
    with pytest.raises(ValueError, match="latent_dim"):
        GaussianPosterior(latent_dim)
    with pytest.raises(ValueError, match="latent_dim"):
        StandardNormalPrior(latent_dim)


def test_bad_covariance_min_scale_and_scale_raise():
    with pytest.raises(ValueError, match="covariance"):
        GaussianPosterior(2, covariance="spherical")
    with pytest.raises(ValueError, match="min_scale"):
        GaussianPosterior(2, min_scale=-1e-3)
    with pytest.raises(ValueError, match="scale_activation"):
        GaussianPosterior(2, scale_activation="relu")
    for scale in (0, -1.0, "fixed", None, float("nan")):
        with pytest.raises(ValueError, match="scale"):
            GaussianLikelihood((3,), scale=scale)


@pytest.mark.parametrize("covariance,size", [("diagonal", 5), ("diagonal", 3), ("full", 6), ("full", 4)])
def test_wrong_number_of_posterior_params_raises(covariance, size):
    layer = GaussianPosterior(2, covariance=covariance)
    with pytest.raises(ValueError, match="expects"):
        layer(np.zeros((3, size), np.float32))


# ---------------------------------------------------------------- property test
_vectors = hnp.arrays(np.float64, 3, elements=st.floats(-4.0, 4.0))
_scales = hnp.arrays(np.float64, 3, elements=st.floats(0.05, 4.0))


@settings(max_examples=25, deadline=None)
@given(m1=_vectors, s1=_scales, m2=_vectors, s2=_scales)
def test_property_diag_kl_nonnegative_and_closed_form(m1, s1, m2, s2):
    posterior = GaussianPosterior(3, min_scale=0.0)
    q1 = posterior(diag_params(m1[None], s1[None], 0.0))
    q2 = posterior(diag_params(m2[None], s2[None], 0.0))
    kl = tfd.kl_divergence(q1, q2).numpy()[0]
    kl_prior = tfd.kl_divergence(q1, StandardNormalPrior(3).distribution()).numpy()[0]
    # float32 round-off can give a tiny negative value for nearly equal distributions.
    assert kl >= -1e-4 and kl_prior >= -1e-4
    expected = np_kl_diag(m1, s1, m2, s2)
    np.testing.assert_allclose(kl, expected, rtol=1e-4, atol=1e-3 + 1e-4 * expected)
    np.testing.assert_allclose(kl_prior, np_kl_diag(m1, s1, 0.0, 1.0), rtol=1e-4, atol=1e-3)
