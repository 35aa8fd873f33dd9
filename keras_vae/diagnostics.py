"""Diagnostics of importance weights: effective sample size and the Pareto k-hat of their tail.

The importance-sampled estimate of log p(x) (`bounds.importance_sampled`) averages S weights
w_s = p(x, z_s) / q(z_s|x), z_s ~ q(z|x). Its mean is right, but its reliability depends on
how heavy the weights' right tail is, which two numbers summarise per example:

```none
ESS   = (sum_s w_s)^2 / sum_s w_s^2           in [1, S]: S for equal weights, 1 when one weight dominates
k_hat = shape of a generalized Pareto fitted to the M largest weights' exceedances over the (M+1)-th,
        M = ceil(min(0.2 S, 3 sqrt(S)))
```

k_hat estimates the tail shape of the weight distribution: the weights have finite moments
of order < 1/k, so k < 1/2 means finite variance (the usual sqrt(S) convergence), and
1/2 <= k < 1 a finite mean but infinite variance (convergence, slow). The guidance of
Vehtari et al. [1], used here:

- k_hat < 0.5: reliable;
- 0.5 <= k_hat <= 0.7: usable, with slower convergence and larger error;
- k_hat > `pareto_k_threshold(S)` = min(1 - 1/log10(S), 0.7): unreliable; more samples help
  little. This is the paper's sample-size-dependent threshold (section 3.2.4, equation 13,
  of the JMLR version), 0.7 for S >= 2154 (so for the usual S = 5000), lower for fewer samples:
  below 0.7, a k_hat over the threshold asks for more samples, `pareto_k_min_samples(k_hat)`.

The paper states these thresholds for Pareto-smoothed IS; the estimate here is plain IS,
whose error in the 0.5-0.7 band is larger still, so the band is "usable" at best. A heavy
tail means q(z|x) misses posterior mass that p(z|x) has: the large weights that would
correct the estimate are rarely drawn. Since E[log mean w] <= log p(x) (Jensen), the
estimate is then most likely too low, and the NLL, -estimate, too high.

The shape is fitted with Zhang & Stephens' estimator [2] (a posterior mean of the shape
over a grid of the profile likelihood), then shrunk towards 0.5 by the weakly informative
prior of [1] (as if 10 more observations at k = 0.5): k <- (M k + 5) / (M + 10). The fit
is scale-free, so neither adding a constant to the log weights nor their size matters;
everything is computed in float64 from log weights.

#### References

[1]: Aki Vehtari, Daniel Simpson, Andrew Gelman, Yuling Yao and Jonah Gabry. Pareto
     smoothed importance sampling. JMLR 25(72), 2024 (arXiv:1507.02646).
[2]: Jin Zhang and Michael A. Stephens. A new and efficient estimation method for the
     generalized Pareto distribution. Technometrics 51(3), 2009.
"""

import math

import numpy as np
from scipy import special

MIN_TAIL = 5  # fewer tail points than this give no fit (as in the paper's reference code, loo)
PRIOR_SHAPE, PRIOR_STRENGTH = 0.5, 10  # the weakly informative prior on k: 10 observations at 0.5
RELIABLE_K = 0.5  # below: finite variance of the weights
MAX_THRESHOLD_K = 0.7


def tail_length(num_samples):
    """M = ceil(min(0.2 S, 3 sqrt(S))): how many of the S largest weights the Pareto fit uses."""
    return math.ceil(min(0.2 * num_samples, 3.0 * math.sqrt(num_samples)))


# The fewest samples whose tail has MIN_TAIL points (21).
MIN_SAMPLES = next(s for s in range(1, 100) if tail_length(s) >= MIN_TAIL)


def pareto_k_threshold(num_samples):
    """min(1 - 1/log10(S), 0.7): k_hat above it means the estimate from S samples is unreliable."""
    return min(1.0 - 1.0 / math.log10(num_samples), MAX_THRESHOLD_K)


def pareto_k_min_samples(k):
    """10^(1 / (1 - max(k, 0))): the fewest samples for a reliable estimate with tail shape k (inf for k >= 1).

    The inverse of the 1 - 1/log10(S) threshold (Vehtari et al., section 3.2.3): 100 for
    k = 0.5, 2154 for k = 0.7, 10^10 for k = 0.9.
    """
    return 10.0 ** (1.0 / (1.0 - max(float(k), 0.0))) if k < 1 else math.inf


def effective_sample_size(log_weights, axis=0):
    """ESS = (sum w)^2 / sum w^2 of the weights exp(log_weights) along `axis`, one per example.

    Computed from the weights scaled by the largest, exp(log w - max log w) in (0, 1], so it
    is finite for any finite log weights (1e4 or -1e4 alike) and unchanged by adding a
    constant to them: both sums are >= 1, and the weights that underflow to 0 are below
    1e-308 of the largest. Zero weights (log weight -inf) count as absent; an example needs
    at least one positive weight.
    """
    log_weights = _checked(log_weights, axis, minimum=1)
    scaled = np.exp(log_weights - np.max(log_weights, axis=axis, keepdims=True))
    return np.sum(scaled, axis=axis) ** 2 / np.sum(scaled**2, axis=axis)


def pareto_k(log_weights, axis=0):
    """k_hat of the weights exp(log_weights) along `axis` (S samples), one per example.

    The M = `tail_length(S)` largest weights' exceedances over the (M+1)-th largest are
    fitted by `fit_generalized_pareto` with the weakly informative prior (see the module
    docstring for the thresholds). Needs S >= `MIN_SAMPLES` (21).

    A tail with no spread gives -inf, the limit of ever more bounded tails: when the M
    largest weights equal the (M+1)-th, or a quarter or more of them do (the weights are
    equal up to float rounding, as with q(z|x) = p(z|x)), there is no tail to fit.
    """
    log_weights = _checked(log_weights, axis, minimum=MIN_SAMPLES)
    log_weights = np.moveaxis(log_weights, axis, -1)
    m = tail_length(log_weights.shape[-1])
    top = np.sort(np.partition(log_weights, -(m + 1), axis=-1)[..., -(m + 1):], axis=-1)  # [..., M + 1] ascending
    cutoff, tail = top[..., :1], top[..., 1:]
    # w - w_cutoff, scaled by the largest weight: exp(t - max) (1 - exp(c - t)), exact when t is close to c.
    with np.errstate(invalid="ignore"):  # t = c = -inf: a zero weight exceeds a zero cutoff by 0
        exceedances = np.exp(tail - tail[..., -1:]) * -np.expm1(cutoff - tail)
    return fit_generalized_pareto(np.nan_to_num(exceedances, nan=0.0))[0]


def fit_generalized_pareto(exceedances, weakly_informative_prior=True):
    """(shape k, scale sigma) of a generalized Pareto fitted to `exceedances` >= 0 along the last axis.

    Zhang & Stephens' estimator (their section 4): with x sorted, n points, m = 30 + floor(sqrt(n))
    grid points, x* the first quartile,

    ```none
    theta_j  = 1/x_(n) + (1 - sqrt(m / (j - 1/2))) / (3 x*),     j = 1..m
    k(theta) = mean_i log(1 - theta x_i)
    l(theta) = n (log(-theta / k(theta)) - k(theta) - 1)          (profile log-likelihood)
    theta^   = sum_j theta_j exp(l(theta_j)) / sum_j exp(l(theta_j)),   k = k(theta^),   sigma = -k / theta^
    ```

    in the usual sign convention (k > 0 a heavy tail; `scipy.stats.genpareto`'s c). With
    `weakly_informative_prior`, k is then shrunk as in PSIS: (n k + 10 * 0.5) / (n + 10).
    Where x_(n) or x* is 0 (no spread) both are returned as -inf and 0.
    """
    x = np.sort(np.asarray(exceedances, np.float64), axis=-1)
    n = x.shape[-1]
    if n < MIN_TAIL or np.any(~(x >= 0)) or np.any(np.isinf(x)):
        raise ValueError(f"Expected at least {MIN_TAIL} finite exceedances >= 0 along the last axis. Received shape "
                         f"{x.shape}" + (f", values in [{np.nanmin(x):.4g}, {np.nanmax(x):.4g}]" if x.size else ""))
    largest, quartile = x[..., -1], x[..., int(n / 4 + 0.5) - 1]
    flat = ~(quartile > 0)
    largest, quartile = np.where(flat, 1.0, largest), np.where(flat, 1.0, quartile)  # any valid grid; masked below
    m = 30 + int(math.sqrt(n))
    j = np.arange(1, m + 1)
    theta = 1.0 / largest[..., None] + (1.0 - np.sqrt(m / (j - 0.5))) / (3.0 * quartile[..., None])  # [..., m]
    # k(theta_j) one grid point at a time: memory [..., n], not [..., m, n].
    k_grid = np.stack([np.mean(np.log1p(-theta[..., i, None] * x), axis=-1) for i in range(m)], axis=-1)
    # theta_j = 0 exactly is 0/0 (weight 0); flat rows (masked below) may give NaN throughout.
    with np.errstate(divide="ignore", invalid="ignore"):
        log_lik = n * (np.log(-theta / k_grid) - k_grid - 1.0)
        log_lik = np.where(np.isnan(log_lik), -np.inf, log_lik)
        weights = np.exp(log_lik - special.logsumexp(log_lik, axis=-1, keepdims=True))
        theta_hat = np.sum(theta * weights, axis=-1)
        k = np.mean(np.log1p(-theta_hat[..., None] * x), axis=-1)
        sigma = -k / theta_hat
    if weakly_informative_prior:
        k = (n * k + PRIOR_STRENGTH * PRIOR_SHAPE) / (n + PRIOR_STRENGTH)
    return np.where(flat, -np.inf, k), np.where(flat, 0.0, sigma)


def _checked(log_weights, axis, minimum):
    """`log_weights` as float64, or a one-line ValueError: real, >= `minimum` samples along
    `axis`, no NaN or +inf, and at least one weight > 0 (log weight > -inf) per example."""
    array = np.asarray(log_weights)
    if array.dtype.kind not in "fiu" or array.ndim == 0:
        raise ValueError(f"Expected an array of real log weights. Received dtype {array.dtype}, shape {array.shape}")
    array = array.astype(np.float64)
    if not -array.ndim <= axis < array.ndim:
        raise ValueError(f"`axis` {axis} is out of range for log weights of shape {array.shape}")
    if array.shape[axis] < minimum:
        raise ValueError(f"Expected at least {minimum} samples along axis {axis}. Received log weights of shape "
                         f"{array.shape}")
    bad = np.isnan(array) | np.isposinf(array)
    if bad.any():
        raise ValueError(f"Expected log weights < inf; {int(bad.sum())} are NaN or +inf")
    if not np.all(np.any(array > -np.inf, axis=axis)):
        raise ValueError("Expected at least one positive weight per example; some have every log weight -inf")
    return array
