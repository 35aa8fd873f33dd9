"""Tests for keras_vae.bounds on a linear-Gaussian VAE whose log p(x) and posterior are exact.

    p(z) = N(0, I_L),   p(x|z) = N(W z + b, sigma^2 I_D)
    log p(x) = log N(x; b, W W^T + sigma^2 I)
    p(z|x) = N(mu, S),  S = (I + W^T W / sigma^2)^-1,  mu = S W^T (x - b) / sigma^2

The encoder is one Dense layer whose weights produce q(z|x) = N(mu + shift, t^2 S) (exact
for shift = 0, t = 1), so every bound can be compared with numbers from numpy/scipy.
"""

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp
from scipy import special, stats

import keras
from helpers import xla_calls
from keras_vae import VAE, GaussianLikelihood, GaussianPosterior, bounds, posteriors

tfd = tfp.distributions
tfb = tfp.bijectors

D, L, SIGMA, MIN_SCALE = 5, 3, 0.5, 1e-4


# ---------------------------------------------------------------- the exact model, in numpy
class LinearGaussian:
    def __init__(self, seed=0, num_examples=6):
        rng = np.random.default_rng(seed)
        self.W = rng.normal(size=(D, L))
        self.b = rng.normal(size=D)
        self.S = np.linalg.inv(np.eye(L) + self.W.T @ self.W / SIGMA**2)
        self.A = self.S @ self.W.T / SIGMA**2  # mu = A x + c
        self.c = -self.A @ self.b
        z = rng.normal(size=(num_examples, L))
        self.x = (z @ self.W.T + self.b + SIGMA * rng.normal(size=(num_examples, D))).astype(np.float32)

    def log_px(self, x):
        cov = self.W @ self.W.T + SIGMA**2 * np.eye(D)
        return stats.multivariate_normal(self.b, cov).logpdf(np.asarray(x, np.float64))

    def posterior_mean(self, x):
        return np.asarray(x, np.float64) @ self.A.T + self.c

    def q_params(self, x, shift=0.0, tril_scale=1.0):
        """Mean [B, L] and covariance [L, L] of the encoder's q(z|x)."""
        return self.posterior_mean(x) + shift, tril_scale**2 * self.S

    def log_px_given_z(self, x, z):
        mean = z @ self.W.T + self.b
        return stats.norm.logpdf(np.asarray(x, np.float64), mean, SIGMA).sum(-1)

    def sample_q(self, x, num, shift=0.0, tril_scale=1.0, seed=0):
        """z of shape [num, B, L] from q(z|x), drawn in numpy."""
        mean, cov = self.q_params(x, shift, tril_scale)
        eps = np.random.default_rng(seed).normal(size=(num,) + mean.shape)
        return mean + eps @ np.linalg.cholesky(cov).T

    def log_q(self, x, z, shift=0.0, tril_scale=1.0):
        mean, cov = self.q_params(x, shift, tril_scale)
        diff = z - mean
        prec = np.linalg.inv(cov)
        _, logdet = np.linalg.slogdet(cov)
        return -0.5 * (np.einsum("...i,ij,...j->...", diff, prec, diff) + logdet + L * np.log(2 * np.pi))

    def kl_to_exact_posterior(self, x, shift=0.0, tril_scale=1.0):
        mean_q, cov_q = self.q_params(x, shift, tril_scale)
        delta = self.posterior_mean(x) - mean_q
        prec = np.linalg.inv(self.S)
        logdet_ratio = np.linalg.slogdet(self.S)[1] - np.linalg.slogdet(cov_q)[1]
        quad = np.einsum("bi,ij,bj->b", delta, prec, delta)
        return 0.5 * (np.trace(prec @ cov_q) + quad - L + logdet_ratio)

    def kl_to_prior(self, x, shift=0.0, tril_scale=1.0):
        mean_q, cov_q = self.q_params(x, shift, tril_scale)
        return 0.5 * (np.trace(cov_q) + np.sum(mean_q**2, -1) - L - np.linalg.slogdet(cov_q)[1])


def build_vae(truth, shift=0.0, tril_scale=1.0, prior=None, **kwargs):
    """A real keras_vae.VAE with linear encoder/decoder giving q(z|x) = N(mu + shift, t^2 S)."""
    size = GaussianPosterior.params_size(L, "full")
    encoder = keras.Sequential([keras.Input(shape=(D,)), keras.layers.Dense(size)], name="encoder")
    kernel = np.zeros((D, size), np.float32)
    kernel[:, :L] = truth.A.T
    chol = np.linalg.cholesky(truth.S) * tril_scale
    raw_tril = tfb.FillScaleTriL(diag_shift=MIN_SCALE).inverse(tf.constant(chol, tf.float32)).numpy()
    bias = np.concatenate([truth.c + shift, raw_tril]).astype(np.float32)
    encoder.layers[-1].set_weights([kernel, bias])

    decoder = keras.Sequential([keras.Input(shape=(L,)), keras.layers.Dense(D)], name="decoder")
    decoder.layers[-1].set_weights([truth.W.T.astype(np.float32), truth.b.astype(np.float32)])
    return VAE(
        encoder=encoder,
        decoder=decoder,
        posterior=GaussianPosterior(L, covariance="full", min_scale=MIN_SCALE),
        likelihood=GaussianLikelihood((D,), scale=SIGMA),
        prior=prior,
        **kwargs,
    )


def seed(a, b=0):
    return tf.constant([a, b], tf.int32)


@pytest.fixture(scope="module")
def truth():
    return LinearGaussian()


SHIFT, TRIL_SCALE = 0.1, 1.2  # KL(q || p(z|x)) ~ 0.54 nats: weights of moderate variance


# ---------------------------------------------------------------- sanity of the construction
def test_encoder_builds_the_intended_posterior(truth):
    model = build_vae(truth, shift=SHIFT, tril_scale=TRIL_SCALE)
    q = model.encode(truth.x)
    mean, cov = truth.q_params(truth.x, SHIFT, TRIL_SCALE)
    np.testing.assert_allclose(q.mean().numpy(), mean, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(q.covariance().numpy(), np.broadcast_to(cov, (len(truth.x), L, L)), atol=1e-5)
    # and the exact posterior agrees with Bayes' rule on the joint density
    z = truth.sample_q(truth.x, 4)
    log_joint = truth.log_px_given_z(truth.x, z) + stats.norm.logpdf(z).sum(-1)
    np.testing.assert_allclose(log_joint - truth.log_q(truth.x, z), np.broadcast_to(truth.log_px(truth.x), (4, 6)))


# ---------------------------------------------------------------- exact posterior: bounds are tight
def test_exact_posterior_elbo_equals_log_px(truth):
    log_px = truth.log_px(truth.x)
    model = build_vae(truth, analytic_kl=False)
    terms = model.compute_terms(truth.x, num_samples=64, seed=seed(1))
    np.testing.assert_allclose(terms["elbo"].numpy(), log_px, atol=1e-3)
    np.testing.assert_allclose(terms["objective"].numpy(), log_px, atol=1e-3)
    np.testing.assert_allclose(
        terms["reconstruction"].numpy() - terms["kl"].numpy(), terms["elbo"].numpy(), atol=1e-5
    )
    iwae = model.compute_terms(truth.x, num_samples=16, objective="iwae", seed=seed(2))
    np.testing.assert_allclose(iwae["iwae_bound"].numpy(), log_px, atol=1e-3)
    for k in (1, 25):
        np.testing.assert_allclose(model.iwae_bound(truth.x, k, seed=5).numpy(), log_px, atol=1e-3)
    result = model.importance_sampled(truth.x, 10, chunk_size=4, seed=5)
    np.testing.assert_allclose(result["elbo"].numpy(), log_px, atol=1e-3)
    np.testing.assert_allclose(result["iwae_bound"].numpy(), log_px, atol=1e-3)


def test_exact_posterior_elbo_with_analytic_kl(truth):
    # With the closed-form KL only the reconstruction term is random: check within MC error.
    log_px = truth.log_px(truth.x)
    model = build_vae(truth)
    n = 4000
    terms = model.compute_terms(truth.x, num_samples=n, seed=seed(3))
    np.testing.assert_allclose(terms["kl"].numpy(), truth.kl_to_prior(truth.x), rtol=1e-4, atol=1e-4)
    spread = truth.log_px_given_z(truth.x, truth.sample_q(truth.x, 4000)).std(0)
    assert np.all(np.abs(terms["elbo"].numpy() - log_px) < 4 * spread / np.sqrt(n) + 1e-3)


# ---------------------------------------------------------------- perturbed posterior: the gap is KL
def test_elbo_gap_equals_kl_to_exact_posterior(truth):
    log_px = truth.log_px(truth.x)
    gap_exact = truth.kl_to_exact_posterior(truth.x, SHIFT, TRIL_SCALE)
    assert np.all(gap_exact > 0.1)

    # Cross-check the numpy KL against TFP's closed form between two MultivariateNormalTriL.
    mean_q, cov_q = truth.q_params(truth.x, SHIFT, TRIL_SCALE)
    q_tfp = tfd.MultivariateNormalTriL(mean_q, np.linalg.cholesky(cov_q))
    p_tfp = tfd.MultivariateNormalTriL(truth.posterior_mean(truth.x), np.linalg.cholesky(truth.S))
    np.testing.assert_allclose(tfd.kl_divergence(q_tfp, p_tfp).numpy(), gap_exact, rtol=1e-8)

    z = truth.sample_q(truth.x, 20_000, SHIFT, TRIL_SCALE)
    spread_recon = truth.log_px_given_z(truth.x, z).std(0)
    log_w = truth.log_px_given_z(truth.x, z) + stats.norm.logpdf(z).sum(-1) - truth.log_q(truth.x, z, SHIFT, TRIL_SCALE)
    spread_w = log_w.std(0)

    n = 20_000
    for analytic_kl, spread in ((True, spread_recon), (False, spread_w)):
        model = build_vae(truth, shift=SHIFT, tril_scale=TRIL_SCALE, analytic_kl=analytic_kl)
        elbo = model.compute_terms(truth.x, num_samples=n, seed=seed(4))["elbo"].numpy()
        assert np.all(elbo < log_px)
        gap = log_px - elbo
        assert np.all(np.abs(gap - gap_exact) < 4 * spread / np.sqrt(n) + 1e-3), (gap, gap_exact)


def test_l1_equals_elbo_with_the_same_seed(truth):
    model = build_vae(truth, shift=SHIFT, tril_scale=TRIL_SCALE, analytic_kl=False)
    q, p = model.encode(truth.x), model.prior.distribution()
    x = tf.constant(truth.x)
    for s in range(3):
        terms = bounds.bound_terms(x, q, p, model.decode, num_samples=1, seed=seed(s, 9),
                                   analytic_kl=False, objective="iwae")
        np.testing.assert_allclose(terms["iwae_bound"].numpy(), terms["elbo"].numpy(), rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(terms["objective"].numpy(), terms["elbo"].numpy(), rtol=1e-5, atol=1e-5)
        elbo_only = bounds.bound_terms(x, q, p, model.decode, num_samples=1, seed=seed(s, 9),
                                       analytic_kl=False, objective="elbo")
        np.testing.assert_allclose(elbo_only["elbo"].numpy(), terms["iwae_bound"].numpy(), rtol=1e-5, atol=1e-5)
    # with k = 1 the bound is not tight here
    assert np.abs(terms["iwae_bound"].numpy() - truth.log_px(truth.x)).max() > 1e-2


def test_iwae_bound_increases_with_k_and_stays_below_log_px(truth):
    model = build_vae(truth, shift=SHIFT, tril_scale=TRIL_SCALE)
    num_examples, replicates = len(truth.x), 60
    x = np.repeat(truth.x, replicates, axis=0)  # independent samples for every replicate
    log_px = np.repeat(truth.log_px(truth.x), replicates)
    q, p = model.encode(x), model.prior.distribution()
    errors, stderrs = {}, {}
    for i, k in enumerate((1, 10, 100, 1000)):
        terms = bounds.bound_terms(tf.constant(x), q, p, model.decode, num_samples=k, seed=seed(10 + i),
                                   objective="iwae")
        err = terms["iwae_bound"].numpy() - log_px
        errors[k] = err.reshape(num_examples, replicates)
        stderrs[k] = err.std() / np.sqrt(err.size)
        # On average, every L_k is a lower bound on log p(x).
        assert err.mean() <= 4 * stderrs[k] + 1e-4, (k, err.mean(), stderrs[k])
    means = {k: e.mean() for k, e in errors.items()}
    # L_1 <= L_10 <= L_100 <= L_1000 on average (strictly, with these gaps)
    for k_lo, k_hi in ((1, 10), (10, 100), (100, 1000)):
        noise = np.hypot(stderrs[k_lo], stderrs[k_hi])
        assert means[k_hi] > means[k_lo] - 3 * noise, (k_lo, k_hi, means)
    assert means[10] - means[1] > 4 * np.hypot(stderrs[1], stderrs[10])
    # The ELBO gap on average matches the KL to the exact posterior.
    gap = truth.kl_to_exact_posterior(truth.x, SHIFT, TRIL_SCALE).mean()
    assert abs(-means[1] - gap) < 4 * stderrs[1] + 1e-3
    # and the IS estimate approaches log p(x): per example and overall
    assert abs(means[1000]) < abs(means[1]) / 10
    np.testing.assert_array_less(np.abs(errors[1000].mean(1)), np.abs(errors[1].mean(1)))


def test_model_iwae_bound_large_k_estimates_log_px(truth):
    model = build_vae(truth, shift=SHIFT, tril_scale=TRIL_SCALE)
    log_px = truth.log_px(truth.x)
    err_1 = np.stack([model.iwae_bound(truth.x, 1, seed=s).numpy() - log_px for s in range(8)])
    # Called directly or inside a tf.function, iwae_bound gives the same numbers.
    x = tf.constant(truth.x)
    eager = model.iwae_bound(x, 20, chunk_size=8, seed=0).numpy()
    traced = tf.function(lambda x: model.iwae_bound(x, 20, chunk_size=8, seed=0))(x).numpy()
    np.testing.assert_allclose(traced, eager, rtol=1e-5, atol=1e-5)
    large = tf.function(lambda x: model.importance_sampled(x, 1000, chunk_size=250, seed=0, return_log_weights=True))(x)
    err_k = large["iwae_bound"].numpy() - log_px
    assert np.abs(err_k).mean() < np.abs(err_1).mean() / 5
    # Each within 4 standard errors of log p(x): by the delta method, sd(w) / (sqrt(k) mean(w)).
    w = np.exp(large["log_weights"].numpy().astype(np.float64) - large["iwae_bound"].numpy())
    standard_error = w.std(0) / (np.sqrt(len(w)) * w.mean(0))
    assert np.all(np.abs(err_k) < 4 * standard_error), (err_k, standard_error)


def test_chunking_does_not_change_the_estimate(truth):
    model = build_vae(truth, shift=SHIFT, tril_scale=TRIL_SCALE)
    k = 24
    reference = model.iwae_bound(truth.x, k, seed=3).numpy()
    for chunk_size in (1, 5, 7, k, 100):
        np.testing.assert_allclose(
            model.iwae_bound(truth.x, k, chunk_size=chunk_size, seed=3).numpy(), reference, rtol=1e-5, atol=1e-5
        )
    # a different seed gives a different (but close) estimate: two independent L_24 draws
    other = model.iwae_bound(truth.x, k, seed=4).numpy()
    assert not np.allclose(other, reference, rtol=0, atol=1e-6)
    np.testing.assert_allclose(other, reference, atol=1.0)


def drawn_samples(q, k, base):
    """The k samples `bounds.importance_sampled` draws, drawn here block by block as its docstring says:
    sample i is row i mod G of the G = min(50, k) samples drawn with the seed folded with i // G."""
    block = min(50, k)
    blocks = [posteriors.sample(q, block, seed=tf.random.experimental.stateless_fold_in(base, b)).numpy()
              for b in range(-(-k // block))]
    return np.concatenate(blocks)[:k]


def test_bounds_iwae_bound_matches_numpy_weights(truth):
    # Rebuild the k samples the chunked estimator draws, and compute L_k in numpy.
    model = build_vae(truth, shift=SHIFT, tril_scale=TRIL_SCALE)
    q, p = model.encode(truth.x), model.prior.distribution()
    k, base = 12, tfp.random.sanitize_seed(seed(21, 5))
    value = bounds.iwae_bound(tf.constant(truth.x), q, p, model.decode, k, seed=base, chunk_size=5).numpy()
    z = drawn_samples(q, k, base).astype(np.float64)
    log_w = (truth.log_px_given_z(truth.x, z) + stats.norm.logpdf(z).sum(-1)
             - truth.log_q(truth.x, z, SHIFT, TRIL_SCALE))
    np.testing.assert_allclose(value, special.logsumexp(log_w, axis=0) - np.log(k), rtol=1e-5, atol=1e-4)
    # importance_sampled gives the ELBO and reconstruction from the same samples, for any chunking.
    for chunk_size in (None, 5):
        result = bounds.importance_sampled(tf.constant(truth.x), q, p, model.decode, k, seed=base,
                                           chunk_size=chunk_size)
        np.testing.assert_allclose(result["iwae_bound"].numpy(), value, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(result["elbo"].numpy(), log_w.mean(0), rtol=1e-5, atol=1e-4)
        np.testing.assert_allclose(result["reconstruction"].numpy(), truth.log_px_given_z(truth.x, z).mean(0),
                                   rtol=1e-5, atol=1e-4)


def test_importance_sampled_returns_the_log_weights(truth):
    # The kept log weights are the k weights drawn, recomputed in numpy, in sample order, for any chunking;
    # asking for them changes none of the other outputs, and without asking there are none.
    model = build_vae(truth, shift=SHIFT, tril_scale=TRIL_SCALE)
    q, p = model.encode(truth.x), model.prior.distribution()
    # k = 120: blocks of 50 samples, the last one cut; chunks inside one block and across two.
    k, base = 120, tfp.random.sanitize_seed(seed(21, 5))
    z = drawn_samples(q, k, base).astype(np.float64)
    log_w = (truth.log_px_given_z(truth.x, z) + stats.norm.logpdf(z).sum(-1)
             - truth.log_q(truth.x, z, SHIFT, TRIL_SCALE))
    x = tf.constant(truth.x)
    plain = bounds.importance_sampled(x, q, p, model.decode, k, seed=base, chunk_size=5)
    assert sorted(plain) == ["elbo", "iwae_bound", "reconstruction"]
    for chunk_size in (None, 1, 7, 50, 64, 100):
        result = bounds.importance_sampled(x, q, p, model.decode, k, seed=base, chunk_size=chunk_size,
                                           return_log_weights=True)
        assert result["log_weights"].shape == (k, len(truth.x)) and result["log_weights"].dtype == tf.float32
        np.testing.assert_allclose(result["log_weights"].numpy(), log_w, rtol=1e-5, atol=1e-4)
        for key, value in plain.items():
            np.testing.assert_allclose(result[key].numpy(), value.numpy(), rtol=1e-5, atol=1e-5)


def test_model_importance_sampled_log_weights_in_a_tf_function(truth):
    # Traced with an unknown batch size, the model's method gives the weights it gives eagerly, [k, B].
    model = build_vae(truth, shift=SHIFT, tril_scale=TRIL_SCALE)
    eager = model.importance_sampled(truth.x, 23, chunk_size=5, seed=2, return_log_weights=True)
    traced = tf.function(
        lambda x: model.importance_sampled(x, 23, chunk_size=5, seed=2, return_log_weights=True),
        input_signature=[tf.TensorSpec([None, D], tf.float32)])(tf.constant(truth.x))
    assert traced["log_weights"].shape == (23, len(truth.x))
    np.testing.assert_allclose(traced["log_weights"].numpy(), eager["log_weights"].numpy(), rtol=1e-5, atol=1e-5)
    # L_k is the log mean of the kept weights.
    np.testing.assert_allclose(eager["iwae_bound"].numpy(),
                               special.logsumexp(eager["log_weights"].numpy(), axis=0) - np.log(23), rtol=1e-5)


class _PlainLikelihood:
    """A p(x|z) that is no TFP composite tensor: only `log_prob`, as a user's own layer may return."""

    def __init__(self, distribution):
        self.distribution = distribution

    def log_prob(self, x):
        return self.distribution.log_prob(x)


def test_jit_log_prob_compiles_the_log_densities_and_changes_no_value(truth):
    # With jit_log_prob each log density (p(x|z), p(z), q(z|x): here a full-covariance Gaussian) is
    # one XLA function inside the uncompiled graph; a likelihood that is no composite tensor runs as
    # it is. Every output is the same.
    model = build_vae(truth, shift=SHIFT, tril_scale=TRIL_SCALE)
    q, p = model.encode(truth.x), model.prior.distribution()
    x, base = tf.constant(truth.x), tfp.random.sanitize_seed(seed(8, 2))
    decoders = {"tfp": model.decode, "plain": lambda z: _PlainLikelihood(model.decode(z))}
    compiled = {}
    for name, decode in decoders.items():
        def run(jit, decode=decode):
            return bounds.importance_sampled(x, q, p, decode, 60, seed=base, chunk_size=25, return_log_weights=True,
                                             jit_log_prob=jit)
        plain, jitted = run(False), run(True)
        for key in plain:
            np.testing.assert_allclose(jitted[key].numpy(), plain[key].numpy(), rtol=1e-5, atol=1e-5)
        traced = tf.function(run)
        assert xla_calls(traced, False) == []
        compiled[name] = set(xla_calls(traced, True))
    assert 0 < len(compiled["plain"]) < len(compiled["tfp"]), compiled  # q and p(z) alone, then p(x|z) too
    # The model's method passes it on.
    np.testing.assert_allclose(model.importance_sampled(truth.x, 30, seed=1, jit_log_prob=True)["iwae_bound"],
                               model.importance_sampled(truth.x, 30, seed=1)["iwae_bound"], rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------- KL paths
def test_monte_carlo_kl_matches_analytic(truth):
    n = 20_000
    mc = build_vae(truth, shift=SHIFT, tril_scale=TRIL_SCALE, analytic_kl=False)
    exact = build_vae(truth, shift=SHIFT, tril_scale=TRIL_SCALE, analytic_kl=True)
    kl_mc = mc.compute_terms(truth.x, num_samples=n, seed=seed(6))["kl"].numpy()
    kl_analytic = exact.compute_terms(truth.x, num_samples=1, seed=seed(6))["kl"].numpy()
    kl_numpy = truth.kl_to_prior(truth.x, SHIFT, TRIL_SCALE)
    np.testing.assert_allclose(kl_analytic, kl_numpy, rtol=1e-4, atol=1e-4)
    z = truth.sample_q(truth.x, 4000, SHIFT, TRIL_SCALE)
    spread = (truth.log_q(truth.x, z, SHIFT, TRIL_SCALE) - stats.norm.logpdf(z).sum(-1)).std(0)
    assert np.all(np.abs(kl_mc - kl_numpy) < 4 * spread / np.sqrt(n) + 1e-3), (kl_mc, kl_numpy)
    assert not np.allclose(kl_mc, kl_analytic, rtol=0, atol=1e-6)  # really a different estimator


class StudentTPrior(keras.layers.Layer):
    """A heavy-tailed prior with no closed-form KL to a Gaussian registered in TFP."""

    def __init__(self, latent_dim, df=4.0, **kwargs):
        super().__init__(**kwargs)
        self.latent_dim, self.df = latent_dim, df

    def distribution(self):
        zeros = tf.zeros([self.latent_dim], tf.float32)
        return tfd.Independent(tfd.StudentT(self.df, zeros, zeros + 1.0), reinterpreted_batch_ndims=1)


def test_prior_without_analytic_kl_falls_back_to_monte_carlo(truth):
    model = build_vae(truth, shift=SHIFT, tril_scale=TRIL_SCALE, prior=StudentTPrior(L), analytic_kl=True)
    q, p = model.encode(truth.x), model.prior.distribution()
    assert not bounds.has_analytic_kl(q, p)
    assert bounds.has_analytic_kl(q, tfd.MultivariateNormalDiag(tf.zeros(L), tf.ones(L)))

    # Exactly the sample mean of log q(z) - log p(z) over the z the bound drew (same seed).
    k = 500
    terms = bounds.bound_terms(tf.constant(truth.x), q, p, model.decode, num_samples=k, seed=seed(8),
                               analytic_kl=True)
    z = posteriors.sample(q, k, seed=seed(8)).numpy().astype(np.float64)
    log_q = truth.log_q(truth.x, z, SHIFT, TRIL_SCALE)
    log_p = stats.t.logpdf(z, df=4.0).sum(-1)
    np.testing.assert_allclose(terms["kl"].numpy(), (log_q - log_p).mean(0), rtol=1e-4, atol=1e-4)
    recon = truth.log_px_given_z(truth.x, z).mean(0)
    np.testing.assert_allclose(terms["reconstruction"].numpy(), recon, rtol=1e-4, atol=1e-4)

    # And through the model, against an independent numpy Monte Carlo estimate.
    n = 20_000
    kl_model = model.compute_terms(truth.x, num_samples=n, seed=seed(9))["kl"].numpy()
    z = truth.sample_q(truth.x, n, SHIFT, TRIL_SCALE)
    per_sample = truth.log_q(truth.x, z, SHIFT, TRIL_SCALE) - stats.t.logpdf(z, df=4.0).sum(-1)
    stderr = per_sample.std(0) / np.sqrt(n)
    assert np.all(np.abs(kl_model - per_sample.mean(0)) < 4 * np.sqrt(2) * stderr + 1e-3)


# ---------------------------------------------------------------- beta and the objective
@pytest.mark.parametrize("beta", [0.0, 0.3, 1.0, 2.5])
def test_beta_weights_the_kl_in_the_elbo_objective(truth, beta):
    model = build_vae(truth, shift=SHIFT, tril_scale=TRIL_SCALE)
    q, p = model.encode(truth.x), model.prior.distribution()
    terms = bounds.bound_terms(tf.constant(truth.x), q, p, model.decode, num_samples=8, seed=seed(12), beta=beta)
    recon, kl = terms["reconstruction"].numpy(), terms["kl"].numpy()
    np.testing.assert_allclose(terms["objective"].numpy(), recon - beta * kl, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(terms["elbo"].numpy(), recon - kl, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(kl, truth.kl_to_prior(truth.x, SHIFT, TRIL_SCALE), rtol=1e-4, atol=1e-4)
    # The VAE's own beta reaches the objective the same way.
    beta_model = build_vae(truth, shift=SHIFT, tril_scale=TRIL_SCALE, beta=beta)
    model_terms = beta_model.compute_terms(truth.x, num_samples=8, seed=seed(12))
    np.testing.assert_allclose(model_terms["objective"].numpy(), terms["objective"].numpy(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("beta", [0.5, 1.0])
def test_beta_in_iwae_objective_matches_numpy(truth, beta):
    model = build_vae(truth, shift=SHIFT, tril_scale=TRIL_SCALE)
    q, p = model.encode(truth.x), model.prior.distribution()
    k = 16
    terms = bounds.bound_terms(tf.constant(truth.x), q, p, model.decode, num_samples=k, seed=seed(13),
                               beta=beta, objective="iwae")
    z = posteriors.sample(q, k, seed=seed(13)).numpy().astype(np.float64)
    log_lik = truth.log_px_given_z(truth.x, z)
    log_ratio = stats.norm.logpdf(z).sum(-1) - truth.log_q(truth.x, z, SHIFT, TRIL_SCALE)
    lme = lambda a: special.logsumexp(a, axis=0) - np.log(k)  # noqa: E731
    np.testing.assert_allclose(terms["iwae_bound"].numpy(), lme(log_lik + log_ratio), rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(terms["objective"].numpy(), lme(log_lik + beta * log_ratio), rtol=1e-5, atol=1e-4)


# ---------------------------------------------------------------- helpers and argument checks
def test_log_mean_exp_is_stable():
    values = np.array([[1000.0, -1000.0], [1001.0, -1001.0], [999.0, -999.5]], np.float32)
    expected = special.logsumexp(values.astype(np.float64), axis=0) - np.log(3)
    np.testing.assert_allclose(bounds.log_mean_exp(tf.constant(values)).numpy(), expected, rtol=1e-6)
    np.testing.assert_allclose(bounds.log_mean_exp(tf.constant(values), axis=1).numpy(),
                               special.logsumexp(values.astype(np.float64), axis=1) - np.log(2), rtol=1e-6)


def test_bad_objective_and_model_arguments_raise(truth):
    model = build_vae(truth)
    q, p = model.encode(truth.x), model.prior.distribution()
    with pytest.raises(ValueError, match="objective"):
        bounds.bound_terms(tf.constant(truth.x), q, p, model.decode, objective="elbow")
    with pytest.raises(ValueError, match="beta"):
        build_vae(truth, beta=-1.0)
    with pytest.raises(ValueError, match="num_samples"):
        build_vae(truth, num_samples=0)
    with pytest.raises(ValueError, match="objective"):
        build_vae(truth, objective="kl")
    with pytest.raises(ValueError, match="shape"):
        model.compute_terms(truth.x[:, :3])
