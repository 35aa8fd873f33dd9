"""Test-set report of a trained VAE: bounds, importance-sampled log p(x), active units.

```none
test_nll       = -mean_x L_K(x), K large (5000): the importance-sampled estimate of -log p(x)
bits_per_dim   = test_nll / (D ln 2)
active_units   = #{j : Var_x(E_q(z|x)[z_j]) > 0.01}          (Burda et al., section 5.2)
```
"""

import math

import keras
import numpy as np
import tensorflow as tf

from keras_vae import bounds

ACTIVITY_THRESHOLD = 0.01


def active_units(model, x, batch_size=500, threshold=ACTIVITY_THRESHOLD):
    """Number of latent dimensions whose posterior mean varies across x by more than `threshold`."""
    means = np.concatenate([model.encode(x[i : i + batch_size]).mean().numpy() for i in range(0, len(x), batch_size)])
    return int(np.sum(np.var(means, axis=0) > threshold))


def report(model, x, iw_samples=5000, bound_samples=50, batch_size=100, chunk_size=250, seed=0, verbose=1):
    """Means over x of the ELBO, L_k (k = `bound_samples`) and the IS estimate of log p(x) (k = `iw_samples`).

    Returns a dict of floats (nats per example unless named otherwise): `test_elbo`,
    `reconstruction`, `kl` (closed form where TFP has one, else from the same samples), `test_iwae_bound` with
    `iwae_bound_k`, `test_nll` (positive), `bits_per_dim`, `active_units`,
    `num_examples`, `iw_samples`.
    """
    for name, value in (("iw_samples", iw_samples), ("bound_samples", bound_samples), ("batch_size", batch_size),
                        ("chunk_size", chunk_size)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"`{name}` must be a positive integer. Received: {name}={value!r}")
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
