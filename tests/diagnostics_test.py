"""keras_vae.diagnostics against weights with known tails and closed-form effective sample sizes.

Weights w ~ GeneralizedPareto(xi): the exceedances of a generalized Pareto over any threshold
are generalized Pareto with the same shape xi, so the fitted k-hat estimates xi; scipy's
maximum-likelihood fit (`scipy.stats.genpareto.fit`) of the same tail is an independent
estimate of it. Log-normal weights have every moment finite (true k = 0).
"""

import math

import numpy as np
import pytest
from scipy import stats

from keras_vae import diagnostics

S = 5000
M = 213  # ceil(min(0.2 * 5000, 3 * sqrt(5000))) = ceil(min(1000, 212.13))
SEEDS = range(10)


def gpd_weights(xi, seed, size=S):
    return stats.genpareto(xi).rvs(size=size, random_state=seed)


def tail_exceedances(weights):
    """The M largest weights minus the (M+1)-th largest, from the weights themselves (not their logs)."""
    top = np.sort(weights)[-(M + 1):]
    return top[1:] - top[0]


# ---------------------------------------------------------------- the rules' constants
def test_tail_length_threshold_and_minimum_samples():
    assert diagnostics.tail_length(S) == M
    assert diagnostics.tail_length(100) == 20  # min(20, 30)
    assert diagnostics.tail_length(20) == 4 and diagnostics.tail_length(21) == 5  # ceil(4.2)
    assert diagnostics.MIN_SAMPLES == 21
    assert diagnostics.pareto_k_threshold(S) == 0.7  # 1 - 1/log10(5000) = 0.73, capped at 0.7
    assert diagnostics.pareto_k_threshold(1000) == pytest.approx(1 - 1 / 3)
    assert diagnostics.pareto_k_threshold(100) == pytest.approx(0.5)
    # The fewest samples for a k-hat, 10^(1 / (1 - k)): the threshold's inverse below 0.7.
    assert diagnostics.pareto_k_min_samples(0.5) == pytest.approx(100)
    assert diagnostics.pareto_k_min_samples(-0.3) == pytest.approx(10)  # k <= 0 counts as 0
    assert diagnostics.pareto_k_min_samples(0.9) == pytest.approx(1e10)
    assert diagnostics.pareto_k_min_samples(1.0) == math.inf
    for k in (0.3, 0.55, 0.65):
        assert diagnostics.pareto_k_threshold(diagnostics.pareto_k_min_samples(k)) == pytest.approx(k)


# ---------------------------------------------------------------- Pareto k-hat: known tails
@pytest.mark.parametrize("xi", [0.2, 0.5, 0.9])
def test_pareto_k_recovers_the_generalized_pareto_shape(xi):
    # Tolerances from the fit's asymptotic standard deviation (1 + xi) / sqrt(M) (maximum likelihood, which
    # Zhang & Stephens' estimator matches): 3 of them per seed; for the mean of 10 seeds 3 / sqrt(10) of them
    # plus the prior's pull towards 0.5, |xi - 0.5| * 10 / (M + 10).
    sd = (1 + xi) / math.sqrt(M)
    k_hat = np.array([diagnostics.pareto_k(np.log(gpd_weights(xi, seed))) for seed in SEEDS])
    assert np.all(np.abs(k_hat - xi) < 3 * sd), k_hat
    assert abs(k_hat.mean() - xi) < 3 * sd / math.sqrt(len(SEEDS)) + abs(xi - 0.5) * 10 / (M + 10), k_hat.mean()


@pytest.mark.parametrize("xi", [0.2, 0.5, 0.9])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fit_agrees_with_scipy_maximum_likelihood(xi, seed):
    # Two consistent estimators of the same tail: on 213 points they differ by far less than their
    # standard deviation (~0.1-0.13).
    exceedances = tail_exceedances(gpd_weights(xi, seed))
    k, sigma = diagnostics.fit_generalized_pareto(exceedances, weakly_informative_prior=False)
    c, loc, scale = stats.genpareto.fit(exceedances, floc=0)
    assert loc == 0
    assert abs(k - c) < 0.05, (k, c)
    assert sigma == pytest.approx(scale, rel=0.1)


@pytest.mark.parametrize("xi", [0.2, 0.9])
def test_pareto_k_fits_the_m_largest_weights_over_the_next_with_the_prior(xi):
    # From the log weights, k-hat is the fit of the tail picked from the weights here, shrunk towards 0.5
    # as by 10 observations at 0.5 (Vehtari et al.'s weakly informative prior).
    weights = gpd_weights(xi, seed=5)
    k0, _ = diagnostics.fit_generalized_pareto(tail_exceedances(weights), weakly_informative_prior=False)
    assert diagnostics.pareto_k(np.log(weights)) == pytest.approx((M * k0 + 10 * 0.5) / (M + 10), abs=1e-9)
    assert diagnostics.fit_generalized_pareto(tail_exceedances(weights))[0] == pytest.approx(
        (M * k0 + 5) / (M + 10), abs=1e-12)


@pytest.mark.parametrize("sigma", [0.1, 0.5])
def test_pareto_k_of_light_tails_is_below_one_half(sigma):
    log_weights = np.random.default_rng(0).normal(0.0, sigma, size=(S, 5))  # 5 examples, samples on axis 0
    k_hat = diagnostics.pareto_k(log_weights)
    assert k_hat.shape == (5,)
    assert np.all(k_hat < 0.5), k_hat


def test_pareto_k_axis_shift_and_size_of_log_weights():
    rng = np.random.default_rng(3)
    log_weights = np.log(stats.genpareto(0.6).rvs(size=(S, 4), random_state=rng))
    k_hat = diagnostics.pareto_k(log_weights)
    np.testing.assert_allclose(diagnostics.pareto_k(log_weights.T, axis=1), k_hat, rtol=1e-12)
    np.testing.assert_allclose(diagnostics.pareto_k(log_weights.T, axis=-1), k_hat, rtol=1e-12)
    for shift in (-1e4, 123.4, 1e4):  # float64 keeps ~1e-12 nats at 1e4: the fit moves by less than 1e-6
        shifted = diagnostics.pareto_k(log_weights + shift)
        assert np.all(np.isfinite(shifted))
        np.testing.assert_allclose(shifted, k_hat, atol=1e-6)
    # float32 log weights (what the bound gives) are accepted and give nearly the same k-hat
    np.testing.assert_allclose(diagnostics.pareto_k(log_weights.astype(np.float32)), k_hat, atol=1e-3)


def test_pareto_k_of_equal_weights_is_minus_infinity():
    assert diagnostics.pareto_k(np.zeros(S)) == -np.inf
    assert diagnostics.pareto_k(np.full((S, 2), -7.5)).tolist() == [-np.inf, -np.inf]
    # Equal up to float rounding: a quarter or more of the tail ties with the cutoff, no tail to fit.
    lattice = -50.0 + 4e-6 * np.random.default_rng(0).integers(-3, 4, S)
    assert diagnostics.pareto_k(lattice) == -np.inf


def test_pareto_k_of_a_weight_that_is_zero():
    # -inf log weights are zero weights: they can fall in the tail (exceedance 0) without NaNs.
    log_weights = np.full(100, -np.inf)
    log_weights[:60] = np.random.default_rng(1).normal(size=60)
    assert np.isfinite(diagnostics.pareto_k(log_weights))


# ---------------------------------------------------------------- effective sample size: closed forms
def test_ess_of_equal_weights_is_the_sample_size():
    assert diagnostics.effective_sample_size(np.full(S, 3.0)) == pytest.approx(S, rel=1e-12)
    np.testing.assert_allclose(diagnostics.effective_sample_size(np.zeros((S, 3))), [S] * 3, rtol=1e-12)


def test_ess_of_one_dominant_weight_is_one():
    log_weights = np.zeros(S)
    log_weights[17] = 50.0
    # (e^50 + S - 1)^2 / (e^100 + S - 1) = 1 + 2 (S - 1) e^-50 + ...
    assert diagnostics.effective_sample_size(log_weights) == pytest.approx(1.0, abs=1e-15)
    assert diagnostics.effective_sample_size(np.array([1e4] + [-1e4] * 99)) == 1.0


@pytest.mark.parametrize("n1, a, n2, b", [(30, math.e**2, 70, 1.0), (1, 10.0, 999, 0.5), (2, 1.0, 3, 1.0)])
def test_ess_of_two_valued_weights(n1, a, n2, b):
    log_weights = np.log(np.array([a] * n1 + [b] * n2))
    expected = (n1 * a + n2 * b) ** 2 / (n1 * a**2 + n2 * b**2)
    assert diagnostics.effective_sample_size(log_weights) == pytest.approx(expected, rel=1e-12)


def test_ess_axis_shift_and_size_of_log_weights():
    log_weights = np.random.default_rng(0).normal(0.0, 2.0, size=(300, 6))
    ess = diagnostics.effective_sample_size(log_weights)
    w = np.exp(log_weights)
    np.testing.assert_allclose(ess, w.sum(0) ** 2 / (w**2).sum(0), rtol=1e-12)  # direct, for small weights
    np.testing.assert_allclose(diagnostics.effective_sample_size(log_weights.T, axis=1), ess, rtol=1e-12)
    for shift in (-1e4, 55.5, 1e4):
        np.testing.assert_allclose(diagnostics.effective_sample_size(log_weights + shift), ess, rtol=1e-9)


# ---------------------------------------------------------------- bad input: one line
@pytest.mark.parametrize("call, fragment", [
    (lambda: diagnostics.pareto_k(np.zeros(20)), "at least 21 samples along axis 0"),
    (lambda: diagnostics.pareto_k(np.zeros((100, 3)), axis=1), "at least 21 samples along axis 1"),
    (lambda: diagnostics.pareto_k(np.zeros((3, 100)), axis=2), "`axis` 2 is out of range"),
    (lambda: diagnostics.pareto_k(np.array([np.nan] + [0.0] * 50)), "1 are NaN or +inf"),
    (lambda: diagnostics.effective_sample_size(np.array([np.inf, 0.0])), "1 are NaN or +inf"),
    (lambda: diagnostics.effective_sample_size(np.full((4, 2), -np.inf)), "at least one positive weight"),
    (lambda: diagnostics.effective_sample_size(np.zeros(0)), "at least 1 samples"),
    (lambda: diagnostics.effective_sample_size(np.array(["a", "b"])), "real log weights"),
    (lambda: diagnostics.effective_sample_size(3.0), "real log weights"),
    (lambda: diagnostics.fit_generalized_pareto([1.0, -1.0, 2.0, 3.0, 4.0]), "finite exceedances >= 0"),
    (lambda: diagnostics.fit_generalized_pareto([1.0, 2.0]), "at least 5"),
])
def test_bad_input_is_one_line(call, fragment):
    with pytest.raises(ValueError) as error:
        call()
    assert fragment in str(error.value) and "\n" not in str(error.value), str(error.value)
