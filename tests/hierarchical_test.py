"""Hierarchical VAEs (keras_vae.hierarchical): a two-stochastic-layer linear-Gaussian model whose
densities, posterior and log p(x) are known in closed form, then training on digits, saving,
and Burda et al.'s architecture.

The linear-Gaussian chain, in numpy (float64):

    p(z2) = N(0, I),   p(z1|z2) = N(A z2 + a, diag(s1^2)),   p(x|z1) = N(B z1 + b, sigma^2 I)

(z2, z1, x) are jointly Gaussian, so p(x) and the exact posterior p(z1, z2|x) follow from
Gaussian conditioning (`_condition`). With A diagonal and B's columns orthogonal, p(z1|x)
and p(z2|z1) are diagonal Gaussians, affine in x and z1, and p(z1, z2|x) = p(z1|x) p(z2|z1)
(z2 is independent of x given z1): the model's q(z1|x) q(z2|z1) can equal it exactly.
"""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf
from scipy import stats

import keras_vae
from helpers import xla_calls
from keras_vae import bounds, data, hierarchical

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
L1, L2, D, SIGMA, MIN_SCALE = 3, 3, 5, 0.4, 1e-4


# ---------------------------------------------------------------- the exact model, in numpy
def _condition(mean, cov, given, value):
    """Mean [..., n - m] and covariance of the Gaussian N(mean, cov) over the coordinates not in
    `given`, conditioned on those in `given` equal to `value` [..., m]."""
    rest = [i for i in range(len(mean)) if i not in given]
    gain = cov[np.ix_(rest, given)] @ np.linalg.inv(cov[np.ix_(given, given)])
    conditional_mean = mean[rest] + (value - mean[given]) @ gain.T
    return conditional_mean, cov[np.ix_(rest, rest)] - gain @ cov[np.ix_(given, rest)]


def _gaussian_kl(mean_q, cov_q, mean_p, cov_p):
    """KL(N(mean_q, cov_q) || N(mean_p, cov_p)), per row of mean_q."""
    prec = np.linalg.inv(cov_p)
    delta = mean_p - mean_q
    return 0.5 * (np.trace(prec @ cov_q) + np.einsum("...i,ij,...j->...", delta, prec, delta) - len(cov_q)
                  + np.linalg.slogdet(cov_p)[1] - np.linalg.slogdet(cov_q)[1])


class LinearChain:
    """The linear-Gaussian chain above, the joint of (z1, z2, x) in that order, and data drawn from it."""

    def __init__(self, seed=0, num_examples=6):
        rng = np.random.default_rng(seed)
        self.A = np.diag(rng.uniform(0.5, 1.5, L1))  # L1 x L2 (L1 = L2)
        self.a = rng.normal(size=L1)
        self.s1 = rng.uniform(0.3, 0.8, L1)
        orthonormal = np.linalg.qr(rng.normal(size=(D, D)))[0][:, :L1]
        self.B = orthonormal * rng.uniform(0.5, 2.0, L1)  # orthogonal columns: B^T B diagonal
        self.b = rng.normal(size=D)
        # Moments of (z1, z2, x), from z2 ~ N(0, I), z1 = A z2 + a + s1 e1, x = B z1 + b + sigma e2.
        c1 = self.A @ self.A.T + np.diag(self.s1**2)
        self.mean = np.concatenate([self.a, np.zeros(L2), self.B @ self.a + self.b])
        self.cov = np.block([
            [c1, self.A, c1 @ self.B.T],
            [self.A.T, np.eye(L2), self.A.T @ self.B.T],
            [self.B @ c1, self.B @ self.A, self.B @ c1 @ self.B.T + SIGMA**2 * np.eye(D)],
        ])
        self.z1, self.z2, self.xs = list(range(L1)), list(range(L1, L1 + L2)), list(range(L1 + L2, L1 + L2 + D))
        self.x = rng.multivariate_normal(self.mean, self.cov, size=num_examples)[:, self.xs].astype(np.float32)

    def log_px(self, x):
        return stats.multivariate_normal(self.mean[self.xs], self.cov[np.ix_(self.xs, self.xs)]).logpdf(
            np.asarray(x, np.float64))

    def log_joint(self, x, z):
        """log p(x, z1, z2) from the three factors, for z [..., L1 + L2]."""
        z1, z2 = z[..., :L1], z[..., L1:]
        return (stats.norm.logpdf(z2).sum(-1) + stats.norm.logpdf(z1, z2 @ self.A.T + self.a, self.s1).sum(-1)
                + stats.norm.logpdf(np.asarray(x, np.float64), z1 @ self.B.T + self.b, SIGMA).sum(-1))

    def posterior(self, x):
        """Mean [B, L1 + L2] and covariance of the exact p(z1, z2|x)."""
        return _condition(self.mean, self.cov, self.xs, np.asarray(x, np.float64))

    def exact_q(self):
        """The exact factors as affine maps: q(z1|x) = N(K x + k, diag(v1)), q(z2|z1) = N(M z1 + m, diag(v2))."""
        joint_z1_x = self.z1 + self.xs
        mean, cov = self.mean[joint_z1_x], self.cov[np.ix_(joint_z1_x, joint_z1_x)]
        k, v1 = _condition(mean, cov, list(range(L1, L1 + D)), np.zeros(D))
        K = np.stack([_condition(mean, cov, list(range(L1, L1 + D)), e)[0] - k for e in np.eye(D)], axis=1)
        joint_z1_z2 = self.z1 + self.z2
        mean, cov = self.mean[joint_z1_z2], self.cov[np.ix_(joint_z1_z2, joint_z1_z2)]
        m, v2 = _condition(mean, cov, list(range(L1)), np.zeros(L1))
        M = np.stack([_condition(mean, cov, list(range(L1)), e)[0] - m for e in np.eye(L1)], axis=1)
        # The choice of A and B makes both conditionals diagonal.
        np.testing.assert_allclose(v1, np.diag(np.diag(v1)), atol=1e-12)
        np.testing.assert_allclose(v2, np.diag(np.diag(v2)), atol=1e-12)
        return {"K": K, "k": k, "v1": np.diag(v1), "M": M, "m": m, "v2": np.diag(v2)}


def _q_moments(q, x):
    """Mean [B, L1 + L2] and covariance [L1 + L2, L1 + L2] of the Gaussian q(z1|x) q(z2|z1) given as affine maps."""
    mean1 = np.asarray(x, np.float64) @ q["K"].T + q["k"]
    mean = np.concatenate([mean1, mean1 @ q["M"].T + q["m"]], axis=-1)
    d1 = np.diag(q["v1"])
    cov = np.block([[d1, d1 @ q["M"].T], [q["M"] @ d1, q["M"] @ d1 @ q["M"].T + np.diag(q["v2"])]])
    return mean, cov


def _raw_scale(stddev, scale_activation="softplus"):
    """The raw parameter a `GaussianPosterior` turns into `stddev` (softplus(raw) + MIN_SCALE, or exp(raw) + ...)."""
    shifted = np.asarray(stddev) - MIN_SCALE
    return np.log(np.expm1(shifted)) if scale_activation == "softplus" else np.log(shifted)


def _linear_vae(chain, q, scale_activation="softplus"):
    """`hierarchical_vae` with no hidden layers (every network one affine map), its weights set to
    the chain's p and to the q given as affine maps (see `LinearChain.exact_q`)."""
    model = keras_vae.hierarchical_vae((D,), latent_dims=(L1, L2), hidden_units=((), ()), likelihood="gaussian",
                                       likelihood_scale=SIGMA, min_scale=MIN_SCALE, scale_activation=scale_activation,
                                       seed=0)
    f32 = lambda *arrays: [np.asarray(a, np.float32) for a in arrays]  # noqa: E731
    zeros, raw = np.zeros, lambda stddev: _raw_scale(stddev, scale_activation)  # noqa: E731
    model.encoder.get_layer("posterior_params").set_weights(f32(
        np.concatenate([q["K"].T, zeros((D, L1))], 1), np.concatenate([q["k"], raw(np.sqrt(q["v1"]))])))
    model.posterior.networks[0].get_layer("params").set_weights(f32(
        np.concatenate([q["M"].T, zeros((L1, L2))], 1), np.concatenate([q["m"], raw(np.sqrt(q["v2"]))])))
    model.prior.networks[0].get_layer("params").set_weights(f32(
        np.concatenate([chain.A.T, zeros((L2, L1))], 1), np.concatenate([chain.a, raw(chain.s1)])))
    model.decoder.get_layer("decoder_z1").get_layer("likelihood_params").set_weights(f32(chain.B.T, chain.b))
    return model


def _perturbed(q):
    """An inexact q of the model's family: shifted means and a covariance 1.3 times the exact
    posterior's (wider, so the importance weights are bounded and L_k converges fast)."""
    return {**q, "k": q["k"] + 0.15, "v1": q["v1"] * 1.3, "m": q["m"] - 0.1, "v2": q["v2"] * 1.3}


@pytest.fixture(scope="module")
def chain():
    return LinearChain()


# ---------------------------------------------------------------- 1. exactness on the linear chain
def test_model_densities_equal_the_chain_in_scipy(chain):
    q = _perturbed(chain.exact_q())
    model = _linear_vae(chain, q)
    z = np.random.default_rng(1).normal(size=(4, len(chain.x), L1 + L2))
    posterior, prior = model.encode(chain.x), model.prior_distribution()
    assert isinstance(posterior, keras_vae.LatentChain) and posterior.batch_shape == [6]
    assert posterior.event_shape == [L1 + L2] and prior.batch_shape == [] and prior.event_shape == [L1 + L2]

    z32 = tf.constant(z, tf.float32)
    log_joint = model.decode(z32).log_prob(chain.x) + prior.log_prob(z32)
    np.testing.assert_allclose(log_joint.numpy(), chain.log_joint(chain.x, z), rtol=1e-5)

    mean1 = chain.x.astype(np.float64) @ q["K"].T + q["k"]
    log_q1 = stats.norm.logpdf(z[..., :L1], mean1, np.sqrt(q["v1"])).sum(-1)
    log_q2 = stats.norm.logpdf(z[..., L1:], z[..., :L1] @ q["M"].T + q["m"], np.sqrt(q["v2"])).sum(-1)
    np.testing.assert_allclose(posterior.log_prob(z32).numpy(), log_q1 + log_q2, rtol=1e-5)
    blocks = posterior.block_log_probs(z32)
    np.testing.assert_allclose(blocks[0].numpy(), log_q1, rtol=1e-5)
    np.testing.assert_allclose(blocks[1].numpy(), log_q2, rtol=1e-5)
    p1, p2 = prior.block_log_probs(z32)  # log p(z1|z2), log p(z2)
    np.testing.assert_allclose(p2.numpy(), stats.norm.logpdf(z[..., L1:]).sum(-1), rtol=1e-5)
    np.testing.assert_allclose(
        p1.numpy(), stats.norm.logpdf(z[..., :L1], z[..., L1:] @ chain.A.T + chain.a, chain.s1).sum(-1), rtol=1e-5)


def test_samples_have_the_chain_moments(chain):
    """The posterior draws (z1, z2) upwards and the prior downwards with the joint moments
    of Gaussian conditioning; the posterior's mean() is E[z|x] here (affine links)."""
    q = _perturbed(chain.exact_q())
    model = _linear_vae(chain, q)
    n = 40_000
    z = model.encode(chain.x[:1]).sample(n, seed=[3, 4]).numpy()[:, 0].astype(np.float64)
    mean, cov = _q_moments(q, chain.x[:1])
    np.testing.assert_allclose(z.mean(0), mean[0], atol=0.03)
    np.testing.assert_allclose(np.cov(z.T), cov, atol=0.04)

    z = model.prior_distribution().sample(n, seed=[5, 6]).numpy().astype(np.float64)
    latents = chain.z1 + chain.z2
    np.testing.assert_allclose(z.mean(0), chain.mean[latents], atol=0.03)
    np.testing.assert_allclose(np.cov(z.T), chain.cov[np.ix_(latents, latents)], atol=0.05)

    exact = _linear_vae(chain, chain.exact_q()).encode(chain.x)
    mean, cov = chain.posterior(chain.x)
    np.testing.assert_allclose(exact.mean().numpy(), mean, atol=1e-4)
    np.testing.assert_allclose(exact.stddev().numpy()[:, :L1],
                               np.broadcast_to(np.sqrt(np.diag(cov)[:L1]), (6, L1)), rtol=1e-4)


def test_kl_has_no_closed_form_and_is_the_monte_carlo_kl(chain):
    q = _perturbed(chain.exact_q())
    model = _linear_vae(chain, q)
    posterior = model.encode(chain.x)
    assert bounds.closed_form_kl(posterior, model.prior_distribution()) is None
    terms = model.compute_terms(chain.x, num_samples=20_000, seed=7)
    mean, cov = _q_moments(q, chain.x)
    latents = chain.z1 + chain.z2
    expected = _gaussian_kl(mean, cov, chain.mean[latents], chain.cov[np.ix_(latents, latents)])
    np.testing.assert_allclose(terms["kl"].numpy(), expected, atol=0.03)


def test_bounds_against_closed_form_log_px(chain):
    """ELBO = log p(x) - KL(q || p(z|x)) < log p(x), and L_5000 is log p(x) within Monte Carlo error."""
    log_px = chain.log_px(chain.x)
    q = _perturbed(chain.exact_q())
    model = _linear_vae(chain, q)
    k = 5000
    result = model.importance_sampled(chain.x, k, chunk_size=1000, seed=11, return_log_weights=True)
    mean_q, cov_q = _q_moments(q, chain.x)
    mean_p, cov_p = chain.posterior(chain.x)
    elbo = log_px - np.array([_gaussian_kl(m, cov_q, mp, cov_p) for m, mp in zip(mean_q, mean_p)])
    assert np.all(elbo < log_px - 0.2)  # the perturbation is large enough to matter
    # Tolerances: 4 standard errors of each Monte Carlo mean (of log w for the ELBO, of w / mean(w)
    # for L_k, by the delta method), measured on the draws themselves.
    log_w = result["log_weights"].numpy().astype(np.float64)
    w = np.exp(log_w - log_w.max(0))
    elbo_error = 4 * log_w.std(0) / np.sqrt(k)
    log_px_error = 4 * (w / w.mean(0)).std(0) / np.sqrt(k)
    assert np.all(log_px_error < 0.06)  # a tolerance tight enough to mean something
    np.testing.assert_array_less(np.abs(result["elbo"].numpy() - elbo), elbo_error)
    np.testing.assert_array_less(np.abs(result["iwae_bound"].numpy() - log_px), log_px_error + 1e-4)
    terms = model.compute_terms(chain.x, num_samples=k, seed=12)
    np.testing.assert_array_less(np.abs(terms["elbo"].numpy() - elbo), elbo_error * 1.5)


@pytest.mark.parametrize("scale_activation", ["softplus", "exp"])
def test_exact_posterior_makes_every_log_weight_log_px(chain, scale_activation):
    log_px = chain.log_px(chain.x)
    model = _linear_vae(chain, chain.exact_q(), scale_activation)
    assert model.posterior.scale_activation == model.prior.scale_activation == scale_activation
    for jit in (False, True):  # the evaluation's compiled log densities too (each block's, under XLA)
        result = model.importance_sampled(chain.x, 200, seed=13, return_log_weights=True, jit_log_prob=jit)
        np.testing.assert_allclose(result["log_weights"].numpy(), np.broadcast_to(log_px, (200, 6)), atol=2e-4)
    traced = tf.function(lambda: model.importance_sampled(chain.x, 200, seed=13, jit_log_prob=True)["iwae_bound"])
    # XLA functions for more than p(x|z): the chains' blocks too (one function per distinct signature).
    assert len(set(xla_calls(traced))) > 1
    terms = model.compute_terms(chain.x, num_samples=1, seed=14)
    np.testing.assert_allclose(terms["elbo"].numpy(), log_px, atol=2e-4)
    iwae = model.compute_terms(chain.x, num_samples=5, objective="iwae", seed=15)
    np.testing.assert_allclose(iwae["iwae_bound"].numpy(), log_px, atol=2e-4)


def test_layer_report_against_closed_forms(chain):
    """Per-layer KL: E_q[log q(z1|x) - log p(z1|z2)] and E_q[log q(z2|z1) - log p(z2)] from the
    Gaussian q's moments; activity: Var_x of the affine posterior means."""
    q = _perturbed(chain.exact_q())
    model = _linear_vae(chain, q)
    report = hierarchical.layer_report(model, chain.x, num_samples=20_000, batch_size=4, seed=3)
    mean, cov = _q_moments(q, chain.x)
    # Layer 2: E_{z1 ~ q} KL(N(M z1 + m, v2) || N(0, I)), with E[(M z1 + m)^2] = mean^2 + diag(M V1 M^T).
    # (Var(z2) under q is diag(M V1 M^T) + v2.)
    second_moment = mean[:, L1:] ** 2 + np.diag(cov)[L1:] - q["v2"]
    kl2 = 0.5 * np.sum(q["v2"] + second_moment - 1 - np.log(q["v2"]), axis=-1)
    # Layer 1: -H(q(z1|x)) - E_q log N(z1; A z2 + a, s1^2), with r = z1 - A z2 - a = R z - a.
    R = np.concatenate([np.eye(L1), -chain.A], axis=1)
    r2 = (mean @ R.T - chain.a) ** 2 + np.diag(R @ cov @ R.T)
    kl1 = (-0.5 * np.sum(np.log(2 * np.pi * np.e * q["v1"]))
           + 0.5 * np.sum(np.log(2 * np.pi * chain.s1**2) + r2 / chain.s1**2, axis=-1))
    np.testing.assert_allclose(report["kl_per_layer"], [kl1.mean(), kl2.mean()], atol=0.03)
    np.testing.assert_allclose(report["kl_total"], kl1.mean() + kl2.mean(), atol=0.05)
    np.testing.assert_allclose(report["activity_per_layer"][0], mean[:, :L1].var(0), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(report["activity_per_layer"][1], mean[:, L1:].var(0), rtol=1e-4, atol=1e-6)
    assert report["active_units_per_layer"] == [int(np.sum(mean[:, :L1].var(0) > 0.01)),
                                                int(np.sum(mean[:, L1:].var(0) > 0.01))]
    assert report["latent_dims"] == [L1, L2] and report["summary"].startswith("z_1: ")


@pytest.mark.parametrize("objective", ["elbo", "iwae"])
def test_stl_and_dreg_gradients_vanish_at_the_exact_posterior(chain, objective):
    """At q = p(z|x) every log weight is log p(x), whatever z: with the score term of log q dropped
    (STL, DReG), the gradient in q's parameters (encoder and the links of q(z2|z1)) is 0 for every
    sample; the reparameterized estimator's is not (its score term is noise of mean zero). This
    holds only if log q(z1, z2) computes q(z2|z1) from the z1 it is given."""
    model = _linear_vae(chain, chain.exact_q())
    variables = model.encoder.trainable_variables + model.posterior.trainable_variables
    largest = {}
    for estimator in ("reparameterized", "stl", "dreg"):
        with tf.GradientTape() as tape:
            terms = model.compute_terms(chain.x, num_samples=4, objective=objective, seed=16,
                                        gradient_estimator=estimator)
            loss = -tf.reduce_mean(terms["objective"])
        largest[estimator] = max(float(tf.reduce_max(tf.abs(g))) for g in tape.gradient(loss, variables))
    assert largest["reparameterized"] > 0.1
    assert largest["stl"] < 1e-5 and largest["dreg"] < 1e-5


# ---------------------------------------------------------------- 2. training on digits
@pytest.fixture(scope="module")
def digits():
    return data.load("digits", binarize="dynamic")


def _binary(x):
    return (x > 0.5).astype(np.float32)


@pytest.mark.parametrize("kwargs", [{}, {"objective": "iwae", "num_samples": 5}])
def test_fit_evaluate_predict_sample_on_digits(digits, kwargs):
    keras.utils.set_random_seed(0)
    model = keras_vae.hierarchical_vae((8, 8, 1), seed=0, **kwargs)  # Burda et al.'s architecture
    # The ELBO run trains as users do (XLA, fused steps); the IWAE run skips XLA's compile
    # (about 20 s of this file on two cores), the hierarchical layers being the same in both.
    model.compile(optimizer="adam", jit_compile=False if kwargs else None)
    train = data.make_dataset(digits.train, 100, shuffle=True, binarize=True, seed=0)
    validation = data.make_dataset(digits.validation, 100, binarize=True, seed=1)
    history = model.fit(train, epochs=2, validation_data=validation, verbose=0).history
    names = {"loss", "elbo", "reconstruction", "kl"} | ({"iwae_bound"} if kwargs else set())
    assert names | {f"val_{n}" for n in names} <= set(history)
    assert all(np.all(np.isfinite(v)) for v in history.values())
    assert history["elbo"][1] > history["elbo"][0]
    if kwargs:  # L_5 >= ELBO on average
        assert history["iwae_bound"][1] > history["elbo"][1]

    x = _binary(digits.validation[:20])
    result = model.evaluate(x, batch_size=20, verbose=0, return_dict=True)
    np.testing.assert_allclose(result["elbo"], result["reconstruction"] - result["kl"], rtol=1e-5)
    assert result["kl"] > 0

    reconstruction = model.predict(x, verbose=0)
    assert reconstruction.shape == x.shape and 0 <= reconstruction.min() and reconstruction.max() <= 1

    samples, z = model.sample(7, seed=1, return_latents=True)
    assert samples.shape == (7, 8, 8, 1) and z.shape == (7, 150)
    np.testing.assert_array_equal(model.sample(7, seed=1), samples)
    draws = model.sample(7, seed=1, mean=False).numpy()
    assert set(np.unique(draws)) <= {0.0, 1.0}

    elbo = model.compute_terms(x, num_samples=200, seed=2)["elbo"].numpy()
    l50 = model.iwae_bound(x, 50, seed=3).numpy()
    # The same samples whatever the chunk size (chunks combine exactly, up to float32 rounding).
    np.testing.assert_allclose(model.iwae_bound(x, 50, chunk_size=7, seed=3).numpy(), l50, rtol=1e-5)
    assert np.mean(l50) > np.mean(elbo)
    sampled = model.importance_sampled(x, 50, seed=3)
    np.testing.assert_array_equal(sampled["iwae_bound"].numpy(), l50)
    assert sampled["elbo"].shape == sampled["reconstruction"].shape == (20,)

    report = hierarchical.layer_report(model, x, num_samples=20)
    assert report["latent_dims"] == [100, 50] and len(report["activity_per_layer"][1]) == 50
    assert all(kl > 0 for kl in report["kl_per_layer"])


_LOAD_SCRIPT = """
import json, sys
import keras, numpy as np
import keras_vae
model = keras.saving.load_model(sys.argv[1])
x = np.load(sys.argv[2])
print(json.dumps({"iwae_bound": model.iwae_bound(x, 30, seed=4).numpy().tolist(),
                  "type": type(model.posterior).__name__,
                  "scale_activations": [model.posterior.scale_activation, model.prior.scale_activation]}))
"""


@pytest.mark.parametrize("scale_activation", ["softplus", "exp"])
def test_keras_file_loads_in_a_fresh_process_with_the_same_bound(digits, tmp_path, scale_activation):
    model = keras_vae.hierarchical_vae((8, 8, 1), latent_dims=(8, 4), hidden_units=((32,), (16,)),
                                       scale_activation=scale_activation, seed=1)
    model.compile(optimizer="adam", jit_compile=False)  # saving is under test, not XLA
    model.fit(_binary(digits.train[:200]), epochs=1, batch_size=50, verbose=0)
    x = _binary(digits.validation[:10])
    path, x_path = str(tmp_path / "model.keras"), str(tmp_path / "x.npy")
    model.save(path)
    np.save(x_path, x)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    result = subprocess.run([sys.executable, "-c", _LOAD_SCRIPT, path, x_path], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    loaded = json.loads(result.stdout.strip().splitlines()[-1])
    assert loaded["type"] == "HierarchicalPosterior"
    assert loaded["scale_activations"] == [scale_activation, scale_activation]
    np.testing.assert_allclose(loaded["iwae_bound"], model.iwae_bound(x, 30, seed=4).numpy(), rtol=1e-5)


def test_conditional_hierarchical_model_trains_and_samples_a_class(digits):
    model = keras_vae.hierarchical_vae((8, 8, 1), latent_dims=(8, 4), hidden_units=((32,), (16,)), num_classes=10,
                                       seed=2)
    model.compile(optimizer="adam", jit_compile=False)
    history = model.fit(_binary(digits.train[:300]), digits.train_labels[:300], epochs=1, batch_size=50,
                        verbose=0).history
    assert np.isfinite(history["elbo"][0])
    assert model.sample(4, seed=0, labels=3).shape == (4, 8, 8, 1)
    assert model.iwae_bound(_binary(digits.validation[:5]), 10, seed=0, y=digits.validation_labels[:5]).shape == (5,)


# ---------------------------------------------------------------- 3. Burda et al.'s architecture
def test_burda_architecture_parameter_count():
    model = keras_vae.hierarchical_vae((28, 28, 1))
    dense = lambda fan_in, fan_out: fan_in * fan_out + fan_out  # noqa: E731  (kernel + bias)
    encoder = dense(784, 100) + dense(100, 100) + dense(100, 2 * 100)  # q(z1|x): loc and scale of 100 latents
    q_z2 = dense(100, 50) + dense(50, 50) + dense(50, 2 * 50)  # q(z2|z1)
    p_z1 = dense(50, 50) + dense(50, 50) + dense(50, 2 * 100)  # p(z1|z2); p(z2) = N(0, I) has none
    decoder = dense(100, 100) + dense(100, 100) + dense(100, 784)  # p(x|z1): Bernoulli logits
    assert (encoder, q_z2, p_z1, decoder) == (108_800, 12_700, 15_300, 99_384)
    assert sum(int(np.prod(w.shape)) for w in model.trainable_weights) == encoder + q_z2 + p_z1 + decoder
    assert model.encoder.count_params() == encoder and model.decoder.count_params() == decoder
    assert model.posterior.count_params() == q_z2 and model.prior.count_params() == p_z1
    assert model.latent_dim == 150


# ---------------------------------------------------------------- errors
def test_errors():
    with pytest.raises(ValueError, match="builds its own prior"):
        keras_vae.hierarchical_vae((8, 8, 1), prior=keras_vae.StandardNormalPrior(150))
    with pytest.raises(ValueError, match="one tuple of widths per stochastic layer"):
        keras_vae.hierarchical_vae((8, 8, 1), latent_dims=(4, 2), hidden_units=((8,),))
    with pytest.raises(ValueError, match=r"network 0 must map \[B, 4\] to \[B, 4\]"):
        keras_vae.HierarchicalPosterior((4, 2), [keras_vae.networks.mlp(4, (), 5)])
    with pytest.raises(ValueError, match="needs one network per link, 1. Received 0"):
        keras_vae.HierarchicalPrior((4, 2), [])
    flat = keras_vae.mlp_vae((8, 8, 1), latent_dim=2, hidden_units=(8,))
    with pytest.raises(ValueError, match="layer_report needs a hierarchical model"):
        hierarchical.layer_report(flat, np.zeros((2, 8, 8, 1), np.float32))
