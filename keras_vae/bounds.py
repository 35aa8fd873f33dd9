"""Bounds on log p(x): the ELBO, the importance-weighted bound and the IS estimate.

#### Mathematical details

For a latent-variable model p(x, z) = p(x|z) p(z) and an approximate posterior q(z|x),
with z_1..z_k drawn from q(z|x) and log weights

```none
log w_i = log p(x|z_i) + log p(z_i) - log q(z_i|x)
```

the evidence lower bound (ELBO) is

```none
ELBO(x) = E_q[log p(x|z)] - KL(q(z|x) || p(z))  =  log p(x) - KL(q(z|x) || p(z|x))
```

estimated by the mean over samples of log p(x|z_i) (the `reconstruction`) minus the KL
(the `kl`, analytic via `tfd.kl_divergence` where a closed form is registered, else the
sample mean of log q(z_i|x) - log p(z_i)). The importance-weighted bound (Burda et al.)

```none
L_k(x) = log (1/k) sum_i w_i      with  ELBO = L_1 <= L_k <= L_{k+1} <= log p(x)
```

(in expectation) tightens as k grows, and with large k is the importance-sampled
estimate of log p(x) itself. `beta` scales the prior term: `reconstruction - beta * kl`
(beta-VAE), and in L_k it scales log p(z) - log q(z|x) inside each weight.

All functions return one value per example, in nats.

#### References

[1]: Diederik P. Kingma and Max Welling. Auto-Encoding Variational Bayes. ICLR 2014.
[2]: Yuri Burda, Roger Grosse and Ruslan Salakhutdinov. Importance Weighted
     Autoencoders. ICLR 2016.
"""

import math

import tensorflow as tf
import tensorflow_probability as tfp

from keras_vae import posteriors

tfd = tfp.distributions

OBJECTIVES = ("elbo", "iwae")


def log_mean_exp(x, axis=0):
    """log(mean(exp(x))) along `axis`, computed stably."""
    n = tf.cast(tf.shape(x)[axis], x.dtype)
    return tf.reduce_logsumexp(x, axis=axis) - tf.math.log(n)


def closed_form_kl(q, p):
    """`tfd.kl_divergence(q, p)` if a closed form is registered for the pair, else None."""
    try:
        return tfd.kl_divergence(q, p)
    except NotImplementedError:
        return None


def has_analytic_kl(q, p):
    """True if `tfd.kl_divergence(q, p)` has a registered closed form."""
    return closed_form_kl(q, p) is not None


def kl_divergence(q, p, z=None, log_qz=None, log_pz=None):
    """KL(q || p) per example: closed form if `z` is None, else the Monte Carlo mean.

    With samples `z` of shape [k, batch, ...] from q, returns
    `mean_k(log q(z) - log p(z))`; precomputed `log_qz`/`log_pz` are reused if given.
    """
    if z is None:
        return tfd.kl_divergence(q, p)
    log_qz = q.log_prob(z) if log_qz is None else log_qz
    log_pz = p.log_prob(z) if log_pz is None else log_pz
    return tf.reduce_mean(log_qz - log_pz, axis=0)


def bound_terms(x, posterior, prior, decode, *, num_samples=1, seed=None, analytic_kl=True,
                beta=1.0, objective="elbo", free_bits=0.0):
    """ELBO terms, and the training objective, per example.

    Args:
        x: a batch of data, shape [B, ...event].
        posterior: q(z|x), batch shape [B].
        prior: p(z), broadcastable against samples of q.
        decode: a function from z of shape [k, B, L] to p(x|z) with batch shape [k, B].
        num_samples: k, the number of z samples per example.
        seed: a stateless seed (shape [2] int tensor) for the z samples.
        analytic_kl: use the registered closed-form KL; falls back to Monte Carlo (with
            the same z) when no closed form is registered for (posterior, prior).
        beta: weight on the KL term (or on log p(z) - log q(z|x) for `"iwae"`).
        objective: `"elbo"` (mean over the k samples) or `"iwae"` (L_k).
        free_bits: λ >= 0, a floor on each latent dimension's KL in the `"elbo"` objective
            (Kingma et al., 2016): the objective's batch mean is
            mean(reconstruction) - beta * sum_d max(λ, mean_batch KL_d), so dimensions
            below λ nats feel no pull towards the prior. Diagonal Gaussian q and p only.
            The reported `kl` and `elbo` are unchanged.

    Returns:
        A dict of [B] tensors: `reconstruction` (mean log p(x|z)), `kl`, `elbo`
        (reconstruction - kl) and `objective` (the beta-weighted quantity to maximise);
        with `"iwae"` also `iwae_bound` (L_k, unweighted).
    """
    if objective not in OBJECTIVES:
        raise ValueError(f"`objective` must be one of {OBJECTIVES}. Received: objective={objective!r}")
    z = posteriors.sample(posterior, num_samples, seed=seed)
    log_px_z = decode(z).log_prob(x)
    log_qz, log_pz = posterior.log_prob(z), prior.log_prob(z)
    kl = closed_form_kl(posterior, prior) if analytic_kl else None
    if kl is None:
        kl = kl_divergence(posterior, prior, z, log_qz, log_pz)
    reconstruction = tf.reduce_mean(log_px_z, axis=0)
    terms = {"reconstruction": reconstruction, "kl": kl, "elbo": reconstruction - kl}
    if objective == "elbo":
        terms["objective"] = reconstruction - beta * (kl if not free_bits else _free_bits_kl(posterior, prior, free_bits))
    else:
        terms["iwae_bound"] = log_mean_exp(log_px_z + log_pz - log_qz, axis=0)
        terms["objective"] = log_mean_exp(log_px_z + beta * (log_pz - log_qz), axis=0)
    return terms


def _free_bits_kl(posterior, prior, free_bits):
    """Per example, sum_d of KL_d where the batch mean of KL_d reaches `free_bits`, else `free_bits`."""
    if not (isinstance(posterior, tfd.MultivariateNormalDiag) and isinstance(prior, tfd.MultivariateNormalDiag)):
        raise ValueError("free bits need a diagonal Gaussian posterior and prior (per-dimension KL); received "
                         f"{type(posterior).__name__} and {type(prior).__name__}")
    per_dim = tfd.kl_divergence(tfd.Normal(posterior.mean(), posterior.stddev()),
                                tfd.Normal(prior.mean(), prior.stddev()))  # [B, L]
    above = tf.reduce_mean(per_dim, axis=0) >= free_bits
    return tf.reduce_sum(tf.where(above, per_dim, tf.cast(free_bits, per_dim.dtype)), axis=-1)


def importance_sampled(x, posterior, prior, decode, num_samples, seed=None, chunk_size=None,
                       return_log_weights=False):
    """L_k, and the ELBO from the same k samples, per example; samples taken `chunk_size` at a time.

    Memory grows with `chunk_size`, not with k, so k = 5000 (the usual estimate of
    log p(x)) fits anywhere. Sample i is drawn with the seed folded with i, so the
    result is the same for any `chunk_size`; chunks are combined exactly (a running
    logsumexp for L_k, running sums for the means).

    With `return_log_weights`, every log w_i is kept as well, for `keras_vae.diagnostics`
    (effective sample size, Pareto k-hat): k x B float32 more, 2 MB for k = 5000 and
    B = 100, written chunk by chunk into a `tf.TensorArray`.

    Returns:
        A dict of [B] tensors: `iwae_bound` (L_k), `elbo` (mean of the log weights, a
        k-sample estimate of the ELBO with Monte Carlo KL) and `reconstruction` (mean
        log p(x|z)); with `return_log_weights` also `log_weights`, [k, B], sample i in row i.
    """
    chunk_size = num_samples if chunk_size is None else min(chunk_size, num_samples)
    seed = tfp.random.sanitize_seed(seed)

    def chunk(start, size):
        """(logsumexp, sum) of the log weights, the sum of log p(x|z), and the log weights [size, B],
        over samples start..start+size-1."""
        z = tf.map_fn(
            lambda i: posteriors.sample(posterior, seed=tf.random.experimental.stateless_fold_in(seed, i)),
            start + tf.range(size),
            fn_output_signature=posterior.dtype,
        )
        log_px_z = decode(z).log_prob(x)
        log_w = log_px_z + prior.log_prob(z) - posterior.log_prob(z)
        return (tf.reduce_logsumexp(log_w, 0), tf.reduce_sum(log_w, 0), tf.reduce_sum(log_px_z, 0)), log_w

    def add(totals, terms):
        return (tf.reduce_logsumexp(tf.stack([totals[0], terms[0]]), 0), totals[1] + terms[1], totals[2] + terms[2])

    def step(c, totals, kept):
        terms, log_w = chunk(c * chunk_size, chunk_size)
        return c + 1, add(totals, terms), (kept.write(c, log_w) if return_log_weights else kept)

    # Full chunks in a loop (one chunk's memory at a time, also under XLA), then the remainder.
    # The log weights, if kept, go into a TensorArray of the full chunks (a dummy loop variable otherwise).
    full, remainder = divmod(num_samples, chunk_size)
    totals, log_w = chunk(0, chunk_size)
    kept = tf.TensorArray(log_w.dtype, size=full).write(0, log_w) if return_log_weights else tf.constant(0)
    if full > 1:
        _, totals, kept = tf.while_loop(lambda c, *_: c < full, step, (tf.constant(1), totals, kept))
    log_weights = []
    if return_log_weights:
        stacked = kept.stack()  # [full, chunk_size, B]
        log_weights.append(tf.reshape(stacked, tf.concat([[full * chunk_size], tf.shape(stacked)[2:]], 0)))
    if remainder:
        terms, log_w = chunk(full * chunk_size, remainder)
        totals = add(totals, terms)
        log_weights.append(log_w)
    log_sum_w, sum_log_w, sum_log_px_z = totals
    result = {
        "iwae_bound": log_sum_w - math.log(num_samples),
        "elbo": sum_log_w / num_samples,
        "reconstruction": sum_log_px_z / num_samples,
    }
    if return_log_weights:
        result["log_weights"] = tf.concat(log_weights, 0)
    return result


def iwae_bound(x, posterior, prior, decode, num_samples, seed=None, chunk_size=None):
    """L_k per example (see `importance_sampled`); with large k, the IS estimate of log p(x)."""
    return importance_sampled(x, posterior, prior, decode, num_samples, seed, chunk_size)["iwae_bound"]
