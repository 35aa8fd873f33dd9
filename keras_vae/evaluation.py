"""Test-set report of a trained VAE: bounds, importance-sampled log p(x), active units.

```none
test_nll       = -mean_x L_K(x), K large (5000): the importance-sampled estimate of -log p(x)
bits_per_dim   = test_nll / (D ln 2)
active_units   = #{j : Var_x(E_q(z|x)[z_j]) > 0.01}          (Burda et al., section 5.2)
collapsed dims = {j : mean_x KL(q(z_j|x) || N(0, 1)) < 0.01 nats and j inactive}   (`posterior_collapse_report`)
```
"""

import math

import keras
import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

from keras_vae import bounds, checks

tfd = tfp.distributions

ACTIVITY_THRESHOLD = 0.01
COLLAPSE_KL_THRESHOLD = 0.01  # nats


def posterior_means(model, x, batch_size=500):
    """E[z|x] for every example of x, `[N, latent_dim]`, encoded `batch_size` at a time."""
    return _posterior_moments(model, x, batch_size)[0]


def active_units(model, x, batch_size=500, threshold=ACTIVITY_THRESHOLD):
    """Number of latent dimensions whose posterior mean varies across x by more than `threshold`."""
    return int(np.sum(np.var(posterior_means(model, x, batch_size), axis=0) > threshold))


def posterior_collapse_report(model, x, batch_size=500, kl_threshold=COLLAPSE_KL_THRESHOLD,
                              activity_threshold=ACTIVITY_THRESHOLD):
    """Which latent dimensions carry information about x, and which have collapsed to the prior.

    ```none
    kl_per_dim[d] = mean_x KL(q(z_d|x) || N(0, 1))
                  = mean_x [ -log s_d(x) + (s_d(x)^2 + m_d(x)^2 - 1) / 2 ]    q(z_d|x) = N(m_d(x), s_d(x)^2)
    activity[d]   = Var_x(m_d(x))                                            (as in `active_units`)
    collapsed     = {d : kl_per_dim[d] < kl_threshold and activity[d] <= activity_threshold}
    ```

    q(z_d|x) is the marginal of the posterior, so with a full covariance the per-dimension
    KLs need not add up to the model's KL. The reference is N(0, 1), the standard prior,
    whatever prior the model uses.

    Returns a dict (JSON-ready): `latent_dim`, `num_examples`, `kl_per_dim`, `kl_total`
    (their sum), `activity_per_dim`, `active_units`, `collapsed_dims`, `num_collapsed`,
    the two thresholds and a one-line `summary`.
    """
    model.check_data(x)
    if len(x) == 0:
        raise ValueError("Expected at least one example. Received x of shape " + str(tuple(np.shape(x))))
    means, stddevs = _posterior_moments(model, x, batch_size)
    kl = tfd.kl_divergence(tfd.Normal(means, stddevs), tfd.Normal(0.0, 1.0)).numpy().mean(axis=0)
    activity = np.var(means, axis=0)
    active = activity > activity_threshold
    collapsed = [d for d in range(len(kl)) if kl[d] < kl_threshold and not active[d]]
    listed = ", ".join(f"z[{d}]" for d in collapsed) or "none"
    summary = (f"{int(active.sum())} of {len(kl)} latent dimensions active; KL {kl.sum():.3g} nats per example; "
               f"collapsed (KL < {kl_threshold:g} nats and inactive): {listed}")
    return {
        "latent_dim": len(kl),
        "num_examples": len(x),
        "kl_per_dim": [float(v) for v in kl],
        "kl_total": float(kl.sum()),
        "activity_per_dim": [float(v) for v in activity],
        "active_units": int(active.sum()),
        "collapsed_dims": collapsed,
        "num_collapsed": len(collapsed),
        "kl_threshold": kl_threshold,
        "activity_threshold": activity_threshold,
        "summary": summary,
    }


def _posterior_moments(model, x, batch_size):
    """(means, standard deviations) of the posterior's marginals q(z_d|x), each `[N, latent_dim]`."""
    batch_size = checks.check_positive_int("batch_size", batch_size)
    means, stddevs = [], []
    for i in range(0, len(x), batch_size):
        q = model.encode(x[i : i + batch_size])
        means.append(q.mean().numpy())
        stddevs.append(q.stddev().numpy())
    if not means:
        return np.zeros((0, model.latent_dim), np.float32), np.zeros((0, model.latent_dim), np.float32)
    return np.concatenate(means), np.concatenate(stddevs)


def report(model, x, iw_samples=5000, bound_samples=50, batch_size=100, chunk_size=250, seed=0, verbose=1):
    """Means over x of the ELBO, L_k (k = `bound_samples`) and the IS estimate of log p(x) (k = `iw_samples`).

    Not XLA-compiled: on CPUs TensorFlow's oneDNN matmuls, which dominate here, ran 1.5x
    faster than XLA's (benchmarks/run.py, eval_is_k5000).

    Returns a dict of floats (nats per example unless named otherwise): `test_elbo`,
    `reconstruction`, `kl` (closed form where TFP has one, else from the same samples), `test_iwae_bound` with
    `iwae_bound_k`, `test_nll` (positive), `bits_per_dim`, `active_units`,
    `num_examples`, `iw_samples`.
    """
    iw_samples = checks.check_positive_int("iw_samples", iw_samples)
    bound_samples = checks.check_positive_int("bound_samples", bound_samples)
    batch_size = checks.check_positive_int("batch_size", batch_size)
    chunk_size = checks.check_positive_int("chunk_size", chunk_size)
    model.check_data(x)

    @tf.function
    def step(batch, offset):
        seed_ = tf.stack([tf.constant(seed, tf.int32), offset])
        large = model.importance_sampled(batch, iw_samples, chunk_size, seed_)
        small = model.importance_sampled(batch, bound_samples, chunk_size, seed_ + [0, 1])
        kl = bounds.closed_form_kl(model.encode(batch), model.prior_distribution())
        if kl is None:  # no closed form: the Monte Carlo KL of the same k samples
            kl = large["reconstruction"] - large["elbo"]
        return {"nll": -large["iwae_bound"], "bound": small["iwae_bound"],
                "elbo": large["elbo"], "reconstruction": large["reconstruction"], "kl": kl}

    sums = {}
    progress = keras.utils.Progbar(len(x), unit_name="example", verbose=verbose, stateful_metrics=["nll"])
    for start in range(0, len(x), batch_size):
        out = step(tf.constant(x[start : start + batch_size], tf.float32), tf.constant(start, tf.int32))
        for key, value in out.items():
            sums[key] = sums.get(key, 0.0) + float(tf.reduce_sum(value))
        progress.update(min(start + batch_size, len(x)), [("nll", sums["nll"] / min(start + batch_size, len(x)))])
    n = len(x)
    mean = {key: value / n for key, value in sums.items()}
    return {
        "test_nll": mean["nll"],
        "test_elbo": mean["elbo"],
        "test_iwae_bound": mean["bound"],
        "iwae_bound_k": bound_samples,
        "reconstruction": mean["reconstruction"],
        "kl": mean["kl"],
        "bits_per_dim": mean["nll"] / (math.prod(x.shape[1:]) * math.log(2)),
        "active_units": active_units(model, x),
        "num_examples": n,
        "iw_samples": iw_samples,
    }
