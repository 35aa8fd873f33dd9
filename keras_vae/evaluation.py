"""Test-set report of a trained VAE: bounds, importance-sampled log p(x), active units.

```none
test_nll       = -mean_x L_K(x), K large (5000): the importance-sampled estimate of -log p(x)
bits_per_dim   = test_nll / (D ln 2)
active_units   = #{j : Var_x(E_q(z|x)[z_j]) > 0.01}          (Burda et al., section 5.2)
collapsed dims = {j : mean_x KL(q(z_j|x) || N(0, 1)) < 0.01 nats and j inactive}   (`posterior_collapse_report`)
```

A hierarchical model (`keras_vae.hierarchical.is_hierarchical`: z = [z_1, ..., z_n], the
prior of z_l conditional on z_{l+1} below the top) is reported per stochastic layer:
`report` adds KL and active units per layer, and `posterior_collapse_report` is
`hierarchical.layer_report`, with no per-dimension KL against N(0, 1).

`report` also says how far to trust test_nll: the importance weights' effective sample
size and Pareto k-hat per example (`keras_vae.diagnostics`), with warnings where k-hat says
the estimate is unreliable, and whether the likelihood's log_prob of this data is a
normalised log-likelihood at all (`nll_is_log_likelihood`, `nll_caveat`).

A conditional model (`num_classes` set) needs `labels`, one per example: its numbers are
those of q(z|x, y) and log p(x|y).
"""

import math

import keras
import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

from keras_vae import bounds, checks, diagnostics, hierarchical

tfd = tfp.distributions

ACTIVITY_THRESHOLD = 0.01
COLLAPSE_KL_THRESHOLD = 0.01  # nats


def posterior_means(model, x, batch_size=500, labels=None):
    """E[z|x] (E[z|x, y] with `labels`) for every example of x, `[N, latent_dim]`, encoded `batch_size` at a time."""
    return _posterior_moments(model, x, batch_size, labels)[0]


def active_units(model, x, batch_size=500, threshold=ACTIVITY_THRESHOLD, labels=None):
    """Number of latent dimensions whose posterior mean varies across x by more than `threshold`."""
    return int(np.sum(np.var(posterior_means(model, x, batch_size, labels), axis=0) > threshold))


def posterior_collapse_report(model, x, batch_size=500, kl_threshold=COLLAPSE_KL_THRESHOLD,
                              activity_threshold=ACTIVITY_THRESHOLD, labels=None):
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

    A hierarchical model (`hierarchical.is_hierarchical`) gets `hierarchical.layer_report`
    instead (`batch_size`, `activity_threshold` and `labels` passed on; `kl_threshold`
    unused): per layer z_l its Monte Carlo KL against its conditional prior p(z_l|z_{l+1}),
    `activity_per_layer`, `active_units_per_layer` and `inactive_units_per_layer`, since
    N(0, 1) is the prior of the top layer only.
    """
    labels = _check_labels(model, x, labels)
    if len(x) == 0:
        raise ValueError("Expected at least one example. Received x of shape " + str(tuple(np.shape(x))))
    if hierarchical.is_hierarchical(model):
        return hierarchical.layer_report(model, x, batch_size=batch_size, activity_threshold=activity_threshold,
                                         labels=labels)
    means, stddevs = _posterior_moments(model, x, batch_size, labels)
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


def _posterior_moments(model, x, batch_size, labels=None):
    """(means, standard deviations) of the posterior's marginals q(z_d|x), each `[N, latent_dim]`."""
    batch_size = checks.check_positive_int("batch_size", batch_size)
    labels = _check_labels(model, x, labels)
    means, stddevs = [], []
    for i in range(0, len(x), batch_size):
        q = model.encode(x[i : i + batch_size], None if labels is None else labels[i : i + batch_size])
        means.append(q.mean().numpy())
        stddevs.append(q.stddev().numpy())
    if not means:
        return np.zeros((0, model.latent_dim), np.float32), np.zeros((0, model.latent_dim), np.float32)
    return np.concatenate(means), np.concatenate(stddevs)


def _check_labels(model, x, labels):
    """`labels` as an array for a conditional model, None for an unconditional one, after
    `model.check_data`; a one-line ValueError if a conditional model has none, or an
    unconditional one is given some."""
    if model.num_classes is None:
        if labels is not None:
            raise ValueError("`labels` are for a conditional VAE (num_classes set); this model is unconditional and "
                             "models p(x): pass labels=None")
        model.check_data(x)
        return None
    if labels is None:
        raise ValueError(f"This conditional VAE (num_classes={model.num_classes}) models q(z|x, y) and p(x|y): pass "
                         f"`labels`, integers in [0, {model.num_classes}), one per example")
    model.check_data(x, labels)
    return np.asarray(labels)


def log_likelihood_caveat(likelihood, x):
    """(is_log_likelihood, caveat): whether `likelihood`'s log_prob of data x is a normalised log-likelihood.

    Asks the layer's `log_likelihood_caveat(x)` (the built-in likelihoods have one): (True,
    None) if it has no caveat, (False, its reason) if it has. A layer without the method
    gives (None, a caveat saying so): the NLL is -log p(x) only if the layer's log_prob is
    a normalised probability or density of x, which only its author knows.
    """
    rule = getattr(likelihood, "log_likelihood_caveat", None)
    if rule is None:
        return None, (f"{type(likelihood).__name__} does not declare whether its log_prob is a normalised "
                      "log-likelihood of this data (it has no `log_likelihood_caveat(x)` method): the NLL is "
                      "-log p(x) only if it is")
    caveat = rule(np.asarray(x))
    return caveat is None, caveat


def report(model, x, iw_samples=5000, bound_samples=50, batch_size=100, chunk_size=bounds.NOISE_BLOCK, seed=0,
           verbose=1, labels=None):
    """Means over x of the ELBO, L_k (k = `bound_samples`) and the IS estimate of log p(x) (k = `iw_samples`),
    with diagnostics of that estimate.

    Not XLA-compiled as a whole: on CPUs it ran no faster compiled (TensorFlow's oneDNN
    matmuls, which dominate here, against XLA's); the likelihood's log_prob alone is
    (`jit_log_prob`), which fuses its elementwise work (benchmarks/run.py, eval_is_k5000,
    docs/RESULTS.md). Importance samples are drawn `chunk_size` per example at a time: by
    default one noise block (`bounds.NOISE_BLOCK`, 50 samples), as a CPU's matmuls write
    its decoder output, 50 x `batch_size` x D values (15.7 MB for MNIST at batch 100),
    faster per value than five times as many (docs/RESULTS.md); on a GPU, larger chunks
    may run faster.

    A conditional model needs `labels` (integers in [0, num_classes), one per example):
    every number is then conditional on them, the NLL -log p(x|y).

    Returns a dict (JSON-ready; nats per example unless named otherwise): `test_elbo`,
    `reconstruction`, `kl` (closed form where TFP has one, else from the same samples),
    `test_iwae_bound` with `iwae_bound_k`, `test_nll` (positive), `bits_per_dim`,
    `active_units`, `num_examples`, `iw_samples`, and

    - `nll_is_log_likelihood`, `nll_caveat`: True and None when the likelihood's log_prob
      of x is a normalised log-likelihood; False and why not (a Bernoulli of grey levels,
      say: test_nll is then no -log p(x) and not comparable with published NLLs); None and
      a caveat when the likelihood layer does not say (`log_likelihood_caveat`).
    - `is_ess_median`, `is_ess_min`: the effective sample size of the `iw_samples` weights
      over examples (`iw_samples` when all weights are equal, 1 when one dominates).
    - `pareto_k_median`, `pareto_k_max`: the weights' Pareto k-hat over examples (None
      below `diagnostics.MIN_SAMPLES` samples, or where every k-hat is -inf, equal weights);
      `pareto_k_threshold` = min(1 - 1/log10(iw_samples), 0.7), and
      `pareto_k_fraction_unreliable`, the fraction of examples whose k-hat exceeds it.
    - `warnings`: sentences saying why test_nll should not be trusted, empty if none.

    A hierarchical model (`hierarchical.is_hierarchical`) adds, from `hierarchical.layer_report`
    on the same x and labels (with this `seed` and `batch_size`, its default 10 samples per
    example): `latent_dims` (L_1, ..., L_n), `kl_per_layer` (E[log q(z_l|z_{l-1}) -
    log p(z_l|z_{l+1})] per layer, a Monte Carlo estimate from samples of its own: their sum
    estimates `kl` anew) and `active_units_per_layer`. `active_units` is then their sum, the
    same statistic as for other models (Var_x of the posterior's `mean()` above 0.01).
    """
    iw_samples = checks.check_positive_int("iw_samples", iw_samples)
    bound_samples = checks.check_positive_int("bound_samples", bound_samples)
    batch_size = checks.check_positive_int("batch_size", batch_size)
    chunk_size = checks.check_positive_int("chunk_size", chunk_size)
    labels = _check_labels(model, x, labels)
    if len(x) == 0:
        raise ValueError("Expected at least one example. Received x of shape " + str(tuple(np.shape(x))))

    sums, ess, pareto_k = {}, [], []
    progress = keras.utils.Progbar(len(x), unit_name="example", verbose=verbose, stateful_metrics=["nll"])
    for start in range(0, len(x), batch_size):
        y = None if labels is None else tf.constant(labels[start : start + batch_size], tf.int32)
        out, log_weights = _batch_terms(model, tf.constant(x[start : start + batch_size], tf.float32),
                                        tf.constant([seed, start], tf.int32), y, iw_samples, bound_samples, chunk_size)
        for key, value in out.items():
            sums[key] = sums.get(key, 0.0) + float(tf.reduce_sum(value))
        # Diagnosed batch by batch, so only one batch's k x B log weights are held.
        ess.append(diagnostics.effective_sample_size(log_weights.numpy()))
        if iw_samples >= diagnostics.MIN_SAMPLES:
            pareto_k.append(diagnostics.pareto_k(log_weights.numpy()))
        progress.update(min(start + batch_size, len(x)), [("nll", sums["nll"] / min(start + batch_size, len(x)))])
    n = len(x)
    mean = {key: value / n for key, value in sums.items()}
    if hierarchical.is_hierarchical(model):
        layers = hierarchical.layer_report(model, x, batch_size=batch_size, seed=seed, labels=labels)
        # The total from the same posterior means as the layers' counts: their sum by construction.
        count = layers["active_units"]
        per_layer = {key: layers[key] for key in ("latent_dims", "kl_per_layer", "active_units_per_layer")}
    else:
        count, per_layer = active_units(model, x, labels=labels), {}
    is_log_likelihood, caveat = log_likelihood_caveat(model.likelihood, x)
    results = {
        "test_nll": mean["nll"],
        "test_elbo": mean["elbo"],
        "test_iwae_bound": mean["bound"],
        "iwae_bound_k": bound_samples,
        "reconstruction": mean["reconstruction"],
        "kl": mean["kl"],
        "bits_per_dim": mean["nll"] / (math.prod(x.shape[1:]) * math.log(2)),
        "active_units": count,
        **per_layer,
        "num_examples": n,
        "iw_samples": iw_samples,
        "nll_is_log_likelihood": is_log_likelihood,
        "nll_caveat": caveat,
    }
    results.update(_weight_diagnostics(np.concatenate(ess), np.concatenate(pareto_k) if pareto_k else None,
                                       iw_samples))
    return results


def _batch_terms(model, batch, seed, y, iw_samples, bound_samples, chunk_size):
    """`report`'s per-example terms of one batch, and its log weights. Through the model's own compiled
    `importance_sampled`, traced once per model and batch shape rather than once per `report` call."""
    large = model.importance_sampled(batch, iw_samples, chunk_size, seed, y=y, return_log_weights=True,
                                     jit_log_prob=True)
    small = model.importance_sampled(batch, bound_samples, chunk_size, seed + [0, 1], y=y, jit_log_prob=True)
    kl = bounds.closed_form_kl(model.encode(batch, y), model.prior_distribution())
    if kl is None:  # no closed form: the Monte Carlo KL of the same k samples
        kl = large["reconstruction"] - large["elbo"]
    terms = {"nll": -large["iwae_bound"], "bound": small["iwae_bound"],
             "elbo": large["elbo"], "reconstruction": large["reconstruction"], "kl": kl}
    return terms, large["log_weights"]


def _weight_diagnostics(ess, pareto_k, iw_samples):
    """The report's summary of per-example ESS and Pareto k-hat (None: too few samples), and its warnings."""
    summary = {"is_ess_median": float(np.median(ess)), "is_ess_min": float(np.min(ess))}
    if pareto_k is None:
        summary.update(pareto_k_median=None, pareto_k_max=None, pareto_k_threshold=None,
                       pareto_k_fraction_unreliable=None)
        summary["warnings"] = [
            f"iw_samples={iw_samples} is too few for the Pareto k-hat diagnostic (it needs at least "
            f"{diagnostics.MIN_SAMPLES}): whether the NLL estimate is reliable is unchecked"]
        return summary
    threshold = diagnostics.pareto_k_threshold(iw_samples)
    unreliable = pareto_k > threshold
    finite = lambda value: float(value) if np.isfinite(value) else None  # noqa: E731  (-inf, equal weights: None)
    summary.update(pareto_k_median=finite(np.median(pareto_k)), pareto_k_max=finite(np.max(pareto_k)),
                   pareto_k_threshold=threshold, pareto_k_fraction_unreliable=float(np.mean(unreliable)))
    summary["warnings"] = []
    if unreliable.any():
        heavy = pareto_k > diagnostics.MAX_THRESHOLD_K
        warning = (f"Pareto k-hat > {threshold:.2f} for {np.mean(unreliable):.1%} of examples ({int(unreliable.sum())} "
                   f"of {len(pareto_k)}, max {np.max(pareto_k):.2f}): the {iw_samples}-sample estimate of log p(x) is "
                   "unreliable for them. It is biased low, so the NLL most likely overstates -log p(x).")
        if heavy.any():
            warning += (f" {int(heavy.sum())} have k-hat > 0.7: their weights are so heavy-tailed that more samples "
                        "help little; q(z|x) misses part of p(z|x) for them.")
        if (unreliable & ~heavy).any():
            k = np.max(pareto_k[unreliable & ~heavy])
            warning += (f" {int((unreliable & ~heavy).sum())} have k-hat <= 0.7: more samples would do (k-hat {k:.2f} "
                        f"needs about {math.ceil(diagnostics.pareto_k_min_samples(k))} importance samples).")
        summary["warnings"].append(warning)
    return summary
