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

#### Gradient estimators

With z = z(eps, phi) reparameterized, the gradient of log w_i in the encoder's parameters
phi has a path term, through z, and a score term, -beta d/dphi log q(z|x) at fixed z. The
three estimators (`gradient_estimator`) change only the gradient of the `objective`; every
reported value is the same:

- `"reparameterized"`: both terms (Kingma & Welling; Burda et al.).
- `"stl"`, sticking the landing [3]: the score term is dropped (`path_log_prob`). For
  the ELBO its expectation is zero, so the estimator stays unbiased for any beta, and its
  encoder gradient is exactly 0 when q(z|x) is the true posterior and beta = 1. The ELBO's
  gradient then comes from the sampled log p(x|z) + beta (log p(z) - log q(z|x)), also with
  `analytic_kl` (whose reported `kl` stays the closed form). For L_k with k > 1 the dropped
  term does not average to zero: STL is biased for the IWAE objective [4].
- `"dreg"`, doubly reparameterized [4]: for L_k, the score term is rewritten as its
  expectation's path form, so the encoder's path gradient through z_i is weighted by
  (1 - beta) w~_i + beta w~_i^2, w~_i = w_i / sum_j w_j the objective's normalised
  (beta-weighted) weights, instead of w~_i (`scaled_gradient`): unbiased for
  d/dphi E[L_k], for any beta; w~_i^2 at beta = 1. The decoder's and the prior's
  gradients are the reparameterized ones. For the ELBO (the weights are 1/k, constants)
  DReG is STL, and so is it for L_1.

The KL floor of `free_bits` works on the closed-form KL, whose gradient STL and DReG
replace: they are refused together.

All functions return one value per example, in nats.

#### References

[1]: Diederik P. Kingma and Max Welling. Auto-Encoding Variational Bayes. ICLR 2014.
[2]: Yuri Burda, Roger Grosse and Ruslan Salakhutdinov. Importance Weighted
     Autoencoders. ICLR 2016.
[3]: Geoffrey Roeder, Yuhuai Wu and David Duvenaud. Sticking the Landing: Simple,
     Lower-Variance Gradient Estimators for Variational Inference. NeurIPS 2017.
[4]: George Tucker, Dieterich Lawson, Shixiang Gu and Chris J. Maddison. Doubly
     Reparameterized Gradient Estimators for Monte Carlo Objectives. ICLR 2019.
"""

import functools
import math

import tensorflow as tf
import tensorflow_probability as tfp

from keras_vae import checks, posteriors

tfd = tfp.distributions

OBJECTIVES = ("elbo", "iwae")
GRADIENT_ESTIMATORS = ("reparameterized", "stl", "dreg")


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


def path_log_prob(distribution, sample):
    """`distribution.log_prob(sample)`, its gradient kept only along the path through `sample`.

    d/dphi log q(z(phi); phi) = path term (through z) + score term (through q's parameters
    at fixed z). The score term is the gradient of log q(stop_gradient(z)); subtracting
    that, less its own value, removes it and leaves the value exact (x - stop_gradient(x)
    is 0). `sample` may be a structure matching `distribution` (a joint distribution of
    several stochastic layers): `distribution.log_prob` must then compute each layer's
    conditional from the samples it is given, so that stopping a sample keeps the path
    through the layers conditioned on it and drops only the direct dependence on phi.
    """
    held = distribution.log_prob(tf.nest.map_structure(tf.stop_gradient, sample))
    return distribution.log_prob(sample) - (held - tf.stop_gradient(held))


def scaled_gradient(sample):
    """`(sample, set_scale)`: an identity on `sample` (a tensor or structure of [k, B, ...] tensors)
    whose backward pass multiplies the gradient reaching each sample by `scale`, a [k, B] tensor
    given to `set_scale(scale)` before the gradient is taken and held constant.

    The scale is set after the forward pass because DReG's weights depend on the log weights,
    which are computed from this very sample: so the decoder runs once.
    """
    scale = []

    @tf.custom_gradient
    def identity(z):
        def grad(upstream):
            if not scale:
                raise ValueError("scaled_gradient: set_scale was not called before the gradient was taken")
            factor = tf.cast(tf.stop_gradient(scale[0]), upstream.dtype)
            return upstream * tf.reshape(factor, tf.concat(
                [tf.shape(factor), tf.ones([upstream.shape.rank - factor.shape.rank], tf.int32)], 0))
        return tf.identity(z), grad

    return tf.nest.map_structure(identity, sample), scale.append


def _value_with_gradient_of(value, surrogate):
    """`value`, with the gradient of `surrogate`: exactly `value`, as surrogate - stop_gradient(surrogate) is 0."""
    return tf.stop_gradient(value) + (surrogate - tf.stop_gradient(surrogate))


def _check_reparameterized(posterior, gradient_estimator):
    kinds = tf.nest.flatten(posterior.reparameterization_type)
    if any(kind != tfd.FULLY_REPARAMETERIZED for kind in kinds):
        raise ValueError(f"gradient_estimator={gradient_estimator!r} needs a reparameterized posterior; "
                         f"{type(posterior).__name__} is not")


def bound_terms(x, posterior, prior, decode, *, num_samples=1, seed=None, analytic_kl=True,
                beta=1.0, objective="elbo", free_bits=0.0, gradient_estimator="reparameterized"):
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
        gradient_estimator: the gradient of `objective`, one of `GRADIENT_ESTIMATORS`:
            `"reparameterized"`, `"stl"` or `"dreg"` (see the module docstring). The values
            returned do not depend on it. STL and DReG need a reparameterized posterior
            and no free bits.

    Returns:
        A dict of [B] tensors: `reconstruction` (mean log p(x|z)), `kl`, `elbo`
        (reconstruction - kl) and `objective` (the beta-weighted quantity to maximise);
        with `"iwae"` also `iwae_bound` (L_k, unweighted).
    """
    if objective not in OBJECTIVES:
        raise ValueError(f"`objective` must be one of {OBJECTIVES}. Received: objective={objective!r}")
    checks.check_one_of("gradient_estimator", gradient_estimator, GRADIENT_ESTIMATORS)
    checks.raise_if(checks.gradient_estimator_problem(gradient_estimator, free_bits))
    reparameterized = gradient_estimator == "reparameterized"
    if not reparameterized:
        _check_reparameterized(posterior, gradient_estimator)
    z = posteriors.sample(posterior, num_samples, seed=seed)
    # DReG on L_k: the decoder, the prior and the surrogate log q see z through an identity whose
    # gradient is rescaled below, once the weights are known. For the ELBO, DReG is STL.
    z_in, set_scale = scaled_gradient(z) if gradient_estimator == "dreg" and objective == "iwae" else (z, None)
    log_px_z = decode(z_in).log_prob(x)
    log_pz = prior.log_prob(z_in)
    # The reported values take log q at z itself, as the reparameterized estimator does (a Gaussian's
    # log_prob of its own sample reuses the noise; at a copy of z it solves for it, equal to rounding).
    log_qz = posterior.log_prob(z)
    kl = closed_form_kl(posterior, prior) if analytic_kl else None
    if kl is None:
        kl = kl_divergence(posterior, prior, z, log_qz, log_pz)
    reconstruction = tf.reduce_mean(log_px_z, axis=0)
    terms = {"reconstruction": reconstruction, "kl": kl, "elbo": reconstruction - kl}
    if objective == "elbo":
        terms["objective"] = reconstruction - beta * (kl if not free_bits else _free_bits_kl(posterior, prior, free_bits))
    else:
        terms["iwae_bound"] = log_mean_exp(log_px_z + log_pz - log_qz, axis=0)
        log_w = log_px_z + beta * (log_pz - log_qz)
        terms["objective"] = log_mean_exp(log_w, axis=0)
    if reparameterized:
        return terms
    # STL and DReG: the objective's value, differentiated as the same bound of the sampled log
    # weights with log q's score term removed.
    log_w_path = log_px_z + beta * (log_pz - path_log_prob(posterior, z_in))
    surrogate = tf.reduce_mean(log_w_path, axis=0) if objective == "elbo" else log_mean_exp(log_w_path, axis=0)
    terms["objective"] = _value_with_gradient_of(terms["objective"], surrogate)
    if set_scale is not None:
        # The objective weights sample i's gradient by w~_i already; DReG's path weight is
        # (1 - beta) w~_i + beta w~_i^2, so the gradient reaching z_i is scaled by (1 - beta) + beta w~_i.
        set_scale((1.0 - beta) + beta * tf.nn.softmax(log_w, axis=0))
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


NOISE_BLOCK = 50  # importance samples drawn per seed (see `importance_sampled`)


def importance_sampled(x, posterior, prior, decode, num_samples, seed=None, chunk_size=None,
                       return_log_weights=False, jit_log_prob=False):
    """L_k, and the ELBO from the same k samples, per example; samples taken `chunk_size` at a time.

    Memory grows with `chunk_size`, not with k, so k = 5000 (the usual estimate of
    log p(x)) fits anywhere. The samples are drawn in blocks of G = min(NOISE_BLOCK, k):
    sample i is row i mod G of the G samples drawn with the seed folded with i // G, so
    the result is the same for any `chunk_size` (a chunk draws the blocks it overlaps);
    chunks are combined exactly (a running logsumexp for L_k, running sums for the means).
    One draw per block rather than per sample: a draw per sample cost k small ops, a tenth
    of the k = 5000 evaluation's time.

    With `return_log_weights`, every log w_i is kept as well, for `keras_vae.diagnostics`
    (effective sample size, Pareto k-hat): k x B float32 more, 2 MB for k = 5000 and
    B = 100, written chunk by chunk into a `tf.TensorArray`.

    With `jit_log_prob`, the log densities of p(x|z), p(z) and q(z|x) each run as one XLA
    computation (where `_jit_log_prob` can compile them: the package's likelihoods,
    posteriors, priors and hierarchical layers) inside a graph that is
    otherwise not compiled: their elementwise work over the chunk's `chunk_size` x B x D
    values (and x L for the latents) fuses into one pass, where graph ops each read and
    write the whole tensor (half the likelihood's time on CPUs, and more of a two-layer
    model's latents; `docs/RESULTS.md`). Off by default: a SavedModel signature holding it
    needs XLA where it is served, which TF Serving's CPU server does not enable by default.

    Returns:
        A dict of [B] tensors: `iwae_bound` (L_k), `elbo` (mean of the log weights, a
        k-sample estimate of the ELBO with Monte Carlo KL) and `reconstruction` (mean
        log p(x|z)); with `return_log_weights` also `log_weights`, [k, B], sample i in row i.
    """
    chunk_size = num_samples if chunk_size is None else min(chunk_size, num_samples)
    block = min(NOISE_BLOCK, num_samples)
    seed = tfp.random.sanitize_seed(seed)
    log_prob = _jit_log_prob if jit_log_prob else (lambda distribution, value: distribution.log_prob(value))

    def chunk(start, size):
        """(logsumexp, sum) of the log weights, the sum of log p(x|z), and the log weights [size, B],
        over samples start..start+size-1."""
        first = start // block

        def rows(blocks):  # [n, G, ...] -> the chunk's [size, ...]
            flat = tf.reshape(blocks, tf.concat([[-1], tf.shape(blocks)[2:]], axis=0))
            flat = tf.slice(flat, tf.concat([[start - first * block], tf.zeros([tf.rank(flat) - 1], tf.int32)], 0),
                            tf.concat([[size], tf.fill([tf.rank(flat) - 1], -1)], 0))
            return tf.ensure_shape(flat, [size, *blocks.shape[2:]])

        z_blocks, log_qz_blocks = tf.map_fn(  # [n, G, *batch, L], [n, G, *batch]: the blocks overlapping the chunk
            lambda b: _sample_and_log_prob(posterior, block, tf.random.experimental.stateless_fold_in(seed, b),
                                           log_prob),
            tf.range(first, (start + size - 1) // block + 1),
            fn_output_signature=(posterior.dtype, posterior.dtype),
        )
        z, log_qz = rows(z_blocks), rows(log_qz_blocks)
        log_px_z = log_prob(decode(z), x)
        log_w = log_px_z + log_prob(prior, z) - log_qz
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


def _sample_and_log_prob(distribution, n, seed, log_prob):
    """n draws z of `distribution` (`posteriors.sample`'s) and `log_prob(distribution, z)`. A
    distribution made of blocks (`hierarchical.LatentChain`) gives each block's distribution
    from the draw itself (`sample_with_blocks`), so that its networks run once."""
    sample_with_blocks = getattr(distribution, "sample_with_blocks", None)
    if sample_with_blocks is None:
        z = posteriors.sample(distribution, n, seed=seed)
        return z, log_prob(distribution, z)
    z, blocks = sample_with_blocks(n, seed=seed)
    return z, functools.reduce(tf.add, [log_prob(d, value) for d, value in blocks])  # broadcasts


def _jit_log_prob(distribution, value):
    """`distribution.log_prob(value)`, as one XLA computation where it can be.

    Compiled: TFP composite tensors (the package's likelihoods, mixture and VampPrior
    priors), and Gaussians over a linear
    operator (`GaussianPosterior`'s, the standard-normal prior), which
    `tfp.experimental.as_composite` makes one. A distribution made of blocks
    (`hierarchical.LatentChain`: `block_distributions(value)` gives each block's
    distribution, its parent's network run as usual, and the block's value) is compiled
    block by block. Anything else runs as graph ops, as XLA may not support its ops.
    """
    blocks = getattr(distribution, "block_distributions", None)
    if blocks is not None:
        return functools.reduce(tf.add, [_jit_log_prob(d, v) for d, v in blocks(value)])  # broadcasts
    if isinstance(distribution, tfd.MultivariateNormalLinearOperator):
        return _xla_log_prob(tfp.experimental.as_composite(distribution), value)
    if isinstance(distribution, tfp.experimental.AutoCompositeTensor):
        return _xla_log_prob(distribution, value)
    return distribution.log_prob(value)


@tf.function(jit_compile=True, autograph=False)
def _xla_log_prob(distribution, value):
    return distribution.log_prob(value)


def iwae_bound(x, posterior, prior, decode, num_samples, seed=None, chunk_size=None):
    """L_k per example (see `importance_sampled`); with large k, the IS estimate of log p(x)."""
    return importance_sampled(x, posterior, prior, decode, num_samples, seed, chunk_size)["iwae_bound"]
