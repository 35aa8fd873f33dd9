"""keras_vae.evaluation: the posterior-collapse report (per-dimension KL against a hand computation, active
units, collapsed dims) and `report` on a linear-Gaussian VAE whose log p(x) and posterior are exact: its NLL,
the importance-weight diagnostics and warnings, labels, and whether the NLL is a log-likelihood."""

import inspect
import json
import re
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow_probability as tfp
from scipy import stats

import keras_vae
from keras_vae import evaluation

MIN_SCALE = 1e-4  # GaussianPosterior's default floor on the standard deviation


def softplus(x):
    return np.logaddexp(0.0, x)


def hand_kl(m, s):
    """KL(N(m, s^2) || N(0, 1)), elementwise."""
    return -np.log(s) + (s**2 + m**2 - 1.0) / 2.0


@pytest.fixture(scope="module")
def digits():
    return keras_vae.data.load("digits").test


@pytest.fixture(scope="module")
def pinned_model():
    """latent_dim 3: z[0] as initialised, z[1] exactly the prior, z[2] = N(0.5, 0.5^2) for every x."""
    model = keras_vae.mlp_vae((8, 8, 1), 3, (16,), seed=0)
    layer = model.encoder.get_layer("posterior_params")  # [loc (3), raw_scale (3)]
    kernel, bias = layer.get_weights()
    raw = lambda scale: np.log(np.expm1(scale - MIN_SCALE))  # noqa: E731  (softplus(raw) + MIN_SCALE = scale)
    for column, value in ((1, 0.0), (4, raw(1.0)), (2, 0.5), (5, raw(0.5))):
        kernel[:, column] = 0.0
        bias[column] = value
    layer.set_weights([kernel, bias])
    return model


def test_posterior_collapse_report_correctness(pinned_model, digits):
    report = evaluation.posterior_collapse_report(pinned_model, digits, batch_size=64)
    params = pinned_model.encoder(digits).numpy()
    m, s = params[:, :3], softplus(params[:, 3:]) + MIN_SCALE
    expected = hand_kl(m, s).mean(axis=0)
    np.testing.assert_allclose(report["kl_per_dim"], expected, rtol=1e-5, atol=1e-6)
    assert report["kl_per_dim"][1] == pytest.approx(0.0, abs=1e-6)
    assert report["kl_per_dim"][2] == pytest.approx(np.log(2.0) - 0.25, rel=1e-5)  # -log 0.5 + (0.25 + 0.25 - 1) / 2
    assert report["kl_total"] == pytest.approx(expected.sum(), rel=1e-5)
    np.testing.assert_allclose(report["activity_per_dim"], m.var(axis=0), rtol=1e-4, atol=1e-7)
    # z[1] and z[2] have fixed means (variance 0): only z[0] can be active, if its means vary by > 0.01.
    assert report["active_units"] == int(m[:, 0].var() > 0.01)
    # z[2] is inactive (its mean is fixed) but costs 0.44 nats: not collapsed.
    assert report["collapsed_dims"] == [1] and report["num_collapsed"] == 1
    assert report["latent_dim"] == 3 and report["num_examples"] == len(digits)
    assert "collapsed (KL < 0.01 nats and inactive): z[1]" in report["summary"]
    assert json.loads(json.dumps(report)) == report


def test_posterior_collapse_report_batch_size_does_not_matter(pinned_model, digits):
    whole = evaluation.posterior_collapse_report(pinned_model, digits[:100], batch_size=500)
    pieces = evaluation.posterior_collapse_report(pinned_model, digits[:100], batch_size=7)
    np.testing.assert_allclose(pieces["kl_per_dim"], whole["kl_per_dim"], rtol=1e-6)
    np.testing.assert_allclose(pieces["activity_per_dim"], whole["activity_per_dim"], rtol=1e-5)


def test_posterior_collapse_report_full_covariance_uses_marginals(digits):
    model = keras_vae.mlp_vae((8, 8, 1), 3, (16,), covariance="full", seed=0)
    x = digits[:40]
    report = evaluation.posterior_collapse_report(model, x)
    q = model.encode(x)
    s = np.sqrt(np.diagonal(q.covariance().numpy(), axis1=-2, axis2=-1))
    np.testing.assert_allclose(report["kl_per_dim"], hand_kl(q.mean().numpy(), s).mean(axis=0), rtol=1e-4)


def test_posterior_collapse_report_thresholds(pinned_model, digits):
    report = evaluation.posterior_collapse_report(pinned_model, digits, kl_threshold=1.0, activity_threshold=1e9)
    # Nothing is active, so the collapsed dims are those under 1 nat: z[1] (0) and z[2] (0.44), and z[0] if its
    # KL, computed by hand, is under 1 nat too.
    params = pinned_model.encoder(digits).numpy()
    kl = hand_kl(params[:, :3], softplus(params[:, 3:]) + MIN_SCALE).mean(axis=0)
    assert report["collapsed_dims"] == ([0] if kl[0] < 1.0 else []) + [1, 2]
    assert report["active_units"] == 0


@pytest.mark.parametrize("x, kwargs, fragment", [
    (np.zeros((0, 8, 8, 1), np.float32), {}, "at least one example"),
    (np.zeros((4, 64), np.float32), {}, r"Expected x of shape \(batch, 8, 8, 1\)"),
    (np.zeros((4, 8, 8, 1), np.float32), {"batch_size": 0}, "`batch_size` must be a positive integer"),
])
def test_posterior_collapse_report_errors(pinned_model, x, kwargs, fragment):
    with pytest.raises(ValueError, match=fragment):
        evaluation.posterior_collapse_report(pinned_model, x, **kwargs)


# ---------------------------------------------------------------- report: a linear-Gaussian VAE with exact log p(x)
# p(z) = N(0, I_L), p(x|z, y) = N(W z + b + B[y], SIGMA^2 I_D) (B = 0 unconditional), so
# log p(x|y) = log N(x; b + B[y], W W^T + SIGMA^2 I) and p(z|x, y) = N(A (x - b - B[y]), diag(s^2)):
# W has orthogonal columns, so the exact posterior is diagonal and a keras_vae.VAE with a diagonal
# GaussianPosterior holds it exactly. The encoder's stddev is set to r * s: r = 1 exact, r < 1 too narrow.
# With r < 1 for both of the L = 2 dimensions, log w = log p(x) - log r^2 + (1 - r^2) E, E = chi^2_2 / 2 ~ Exp(1):
# the weights are exactly Pareto-tailed with shape k = 1 - r^2 (P(w > t) ~ t^(-1 / (1 - r^2))).
D, L, SIGMA, C = 4, 2, 0.5, 3


class LinearGaussian:
    def __init__(self, seed=0, num_examples=40, num_classes=None):
        rng = np.random.default_rng(seed)
        basis, _ = np.linalg.qr(rng.normal(size=(D, L)))
        self.W = basis * np.array([1.5, 0.8])  # orthogonal columns
        self.b = rng.normal(size=D)
        self.B = rng.normal(size=(num_classes or 1, D)) * (2.0 if num_classes else 0.0)
        self.s = 1.0 / np.sqrt(1.0 + np.sum(self.W**2, axis=0) / SIGMA**2)  # exact posterior stddevs
        self.A = (self.W / SIGMA**2 * self.s**2).T  # posterior mean = A (x - b - B[y])
        self.y = rng.integers(0, num_classes or 1, num_examples)
        z = rng.normal(size=(num_examples, L))
        noise = SIGMA * rng.normal(size=(num_examples, D))
        self.x = (z @ self.W.T + self.b + self.B[self.y] + noise).astype(np.float32)
        self.num_classes = num_classes

    def log_px(self, y=None):
        """log p(x|y) of every example, float64."""
        cov = self.W @ self.W.T + SIGMA**2 * np.eye(D)
        mean = self.b + self.B[self.y if y is None else y]
        return np.array([stats.multivariate_normal(m, cov).logpdf(x) for m, x in zip(mean, self.x.astype(np.float64))])

    def posterior_mean(self, y):
        return (self.x.astype(np.float64) - self.b - self.B[y]) @ self.A.T

    def model(self, ratio=1.0, likelihood=None):
        """A keras_vae.VAE whose q(z|x[, y]) = N(A (x - b - B[y]), diag((ratio s)^2))."""
        raw_scale = np.log(np.expm1(ratio * self.s - MIN_SCALE))
        c = self.num_classes
        x_in, z_in = keras.Input((D,)), keras.Input((L,))
        if c:
            y_enc, y_dec = keras.Input((c,)), keras.Input((c,))
            encoder = keras.Model([x_in, y_enc], keras.layers.Dense(2 * L)(keras.layers.Concatenate()([x_in, y_enc])))
            decoder = keras.Model([z_in, y_dec], keras.layers.Dense(D)(keras.layers.Concatenate()([z_in, y_dec])))
        else:
            encoder = keras.Model(x_in, keras.layers.Dense(2 * L)(x_in))
            decoder = keras.Model(z_in, keras.layers.Dense(D)(z_in))
        kernel = np.zeros((D + (c or 0), 2 * L))
        kernel[:D, :L] = self.A.T
        if c:
            kernel[D:, :L] = -self.B @ self.A.T  # one row per class: -A B[y]
        encoder.layers[-1].set_weights([kernel.astype(np.float32),
                                        np.concatenate([-self.A @ self.b, raw_scale]).astype(np.float32)])
        decoder_kernel = np.concatenate([self.W.T, self.B]) if c else self.W.T
        decoder.layers[-1].set_weights([decoder_kernel.astype(np.float32), self.b.astype(np.float32)])
        likelihood = likelihood or keras_vae.GaussianLikelihood((D,), scale=SIGMA)
        return keras_vae.VAE(encoder, decoder, keras_vae.GaussianPosterior(L, min_scale=MIN_SCALE), likelihood,
                             num_classes=c)


@pytest.fixture(scope="module")
def linear():
    return LinearGaussian()


@pytest.fixture(scope="module")
def conditional():
    return LinearGaussian(seed=1, num_examples=30, num_classes=C)


def test_report_of_the_exact_posterior_is_trusted(linear):
    report = evaluation.report(linear.model(), linear.x, iw_samples=5000, bound_samples=10, verbose=0)
    nll = -linear.log_px().mean()
    # Every weight is p(x): the estimate, the bound and the ELBO are all the closed-form log p(x).
    assert report["test_nll"] == pytest.approx(nll, abs=1e-4)
    assert report["test_elbo"] == pytest.approx(-nll, abs=1e-4)
    assert report["bits_per_dim"] == pytest.approx(nll / (D * np.log(2)), abs=1e-4)
    assert report["is_ess_min"] == pytest.approx(5000, rel=1e-6)
    assert report["is_ess_median"] == pytest.approx(5000, rel=1e-6)
    # Equal up to float32 rounding: no tail (-inf, reported as None), or a bounded one.
    for key in ("pareto_k_median", "pareto_k_max"):
        assert report[key] is None or report[key] < 0.5, report[key]
    assert report["pareto_k_threshold"] == 0.7
    assert report["pareto_k_fraction_unreliable"] == 0.0
    assert report["warnings"] == []
    assert report["nll_is_log_likelihood"] is True and report["nll_caveat"] is None
    assert json.loads(json.dumps(report, allow_nan=False)) == report


def test_report_of_a_too_narrow_posterior_warns(linear):
    ratio = 0.3  # weights Pareto-tailed with k = 1 - 0.09 = 0.91
    report = evaluation.report(linear.model(ratio), linear.x, iw_samples=5000, bound_samples=10, verbose=0)
    # k-hat per example has standard deviation ~(1 + k) / sqrt(213) = 0.13; the median of 40 is within 0.1.
    assert report["pareto_k_median"] == pytest.approx(1 - ratio**2, abs=0.1)
    assert report["pareto_k_max"] > 0.7
    assert report["pareto_k_fraction_unreliable"] > 0.5
    assert report["is_ess_median"] < 500 and report["is_ess_min"] >= 1.0
    # The IS estimate is biased low: the NLL is above the closed-form -log p(x), by more than float error.
    assert report["test_nll"] > -linear.log_px().mean() + 0.1
    (warning,) = report["warnings"]
    fraction = report["pareto_k_fraction_unreliable"]
    assert f"Pareto k-hat > 0.70 for {fraction:.1%} of examples ({round(fraction * 40)} of 40" in warning
    assert "biased low, so the NLL most likely overstates -log p(x)" in warning
    heavy = re.search(r" (\d+) have k-hat > 0\.7: their weights are so heavy-tailed that more samples help little",
                      warning)
    assert heavy and int(heavy.group(1)) == round(fraction * 40)  # the threshold is 0.7 itself at 5000 samples
    assert "\n" not in warning
    assert json.loads(json.dumps(report, allow_nan=False)) == report


def test_report_asks_for_more_samples_below_0_7(linear):
    # k = 1 - 0.7^2 = 0.51 at 100 samples, whose threshold is 1 - 1/log10(100) = 0.5: some examples are over
    # it, and none far enough for 0.7; each k-hat k asks for 10^(1 / (1 - k)) samples.
    report = evaluation.report(linear.model(0.7), linear.x, iw_samples=100, bound_samples=5, verbose=0)
    assert report["pareto_k_threshold"] == pytest.approx(0.5)
    (warning,) = report["warnings"]
    match = re.search(r" (\d+) have k-hat <= 0\.7: more samples would do \(k-hat (0\.\d\d) needs about (\d+) "
                      r"importance samples\)\.$", warning)
    assert match, warning
    k, samples = float(match.group(2)), int(match.group(3))
    assert int(match.group(1)) >= 1 and 0.5 <= k <= 0.7
    assert 10 ** (1 / (1.005 - k)) <= samples <= 10 ** (1 / (0.995 - k)) + 1  # k is printed rounded to 0.01


def test_report_with_too_few_samples_for_pareto_k(linear):
    report = evaluation.report(linear.model(), linear.x[:5], iw_samples=20, bound_samples=2, verbose=0)
    assert report["is_ess_min"] == pytest.approx(20, rel=1e-6)
    assert [report[key] for key in ("pareto_k_median", "pareto_k_max", "pareto_k_threshold",
                                    "pareto_k_fraction_unreliable")] == [None] * 4
    (warning,) = report["warnings"]
    assert "iw_samples=20 is too few for the Pareto k-hat diagnostic (it needs at least 21)" in warning


# ---------------------------------------------------------------- labels: log p(x|y)
def test_report_of_a_conditional_model_is_log_p_x_given_y(conditional):
    model = conditional.model()
    report = evaluation.report(model, conditional.x, labels=conditional.y, iw_samples=100, bound_samples=5,
                               verbose=0)
    assert report["test_nll"] == pytest.approx(-conditional.log_px().mean(), abs=1e-4)
    assert report["warnings"] == [] and report["is_ess_min"] == pytest.approx(100, rel=1e-6)
    # Other labels: the exact posterior given those labels, so again the closed form, of log p(x | other y).
    other = (conditional.y + 1) % C
    wrong = evaluation.report(model, conditional.x, labels=other, iw_samples=100, bound_samples=5, verbose=0)
    assert wrong["test_nll"] == pytest.approx(-conditional.log_px(other).mean(), abs=1e-4)
    assert wrong["test_nll"] > report["test_nll"] + 1.0


def test_posterior_summaries_of_a_conditional_model_take_labels(conditional):
    model, x, y = conditional.model(), conditional.x, conditional.y
    means = evaluation.posterior_means(model, x, batch_size=7, labels=y)
    np.testing.assert_allclose(means, conditional.posterior_mean(y), rtol=1e-4, atol=1e-5)
    expected_active = int(np.sum(conditional.posterior_mean(y).var(axis=0) > 0.01))
    assert evaluation.active_units(model, x, labels=y) == expected_active
    collapse = evaluation.posterior_collapse_report(model, x, labels=y)
    np.testing.assert_allclose(collapse["kl_per_dim"], hand_kl(conditional.posterior_mean(y), conditional.s).mean(0),
                               rtol=1e-4)


@pytest.mark.parametrize("function", [evaluation.report, evaluation.posterior_means, evaluation.active_units,
                                      evaluation.posterior_collapse_report])
def test_labels_are_required_exactly_for_conditional_models(conditional, linear, function):
    with pytest.raises(ValueError, match=r"^This conditional VAE \(num_classes=3\) models q\(z\|x, y\) and "
                                         r"p\(x\|y\): pass `labels`, integers in \[0, 3\), one per example$"):
        function(conditional.model(), conditional.x)
    with pytest.raises(ValueError, match="this model is unconditional and models p\\(x\\): pass labels=None$"):
        function(linear.model(), linear.x, labels=np.zeros(len(linear.x), np.int64))
    with pytest.raises(ValueError, match=r"Expected labels y of shape \(30,\), integers in \[0, 3\)"):
        function(conditional.model(), conditional.x, labels=np.full(30, 3))


# ---------------------------------------------------------------- is the NLL a log-likelihood?
BERNOULLI_CAVEAT = ("a Bernoulli likelihood of grey levels is not a normalised density: train and evaluate on "
                    "binarized data (--binarize=dynamic) for a log-likelihood")


def test_bernoulli_caveat_is_about_non_binary_data():
    layer = keras_vae.BernoulliLikelihood((4,))
    assert layer.log_likelihood_caveat(np.array([[0, 1, 1, 0]], np.float32)) is None
    assert layer.log_likelihood_caveat(np.array([[0, 1, 0.5, 0]], np.float32)) == BERNOULLI_CAVEAT
    assert layer.log_likelihood_caveat(np.array([[0, 1, 1e-7, 0]], np.float32)) == BERNOULLI_CAVEAT


def test_densities_have_no_caveat():
    grey = np.random.default_rng(0).random((5, 4)).astype(np.float32)
    assert keras_vae.ContinuousBernoulliLikelihood((4,)).log_likelihood_caveat(grey) is None
    assert keras_vae.GaussianLikelihood((4,)).log_likelihood_caveat(grey * 100 - 50) is None


@pytest.mark.parametrize("num_bins", [256, 16])
def test_discretized_logistic_caveat_is_about_values_off_its_grid(num_bins):
    layer = keras_vae.DiscretizedLogisticLikelihood((num_bins,), num_bins=num_bins)
    grid = (np.arange(num_bins) / (num_bins - 1)).astype(np.float32)[None]  # as float32, like the data
    assert layer.log_likelihood_caveat(grid) is None
    off = grid.copy()
    off[0, [1, 3, 5]] += 0.3 / (num_bins - 1)  # 0.3 of a level
    caveat = layer.log_likelihood_caveat(off)
    assert caveat.startswith(f"3 of {num_bins} values are off the discretized logistic's {num_bins}-level grid "
                             f"k/{num_bins - 1}: it rounds them to the nearest level")


class PlainGaussian(keras.layers.Layer):
    """A user's likelihood layer that does not say whether its log_prob is a log-likelihood."""

    def call(self, loc):
        return tfp.distributions.Independent(tfp.distributions.Normal(loc, SIGMA), 1)


def test_report_says_whether_the_nll_is_a_log_likelihood(digits, linear):
    model = keras_vae.mlp_vae((8, 8, 1), 2, (16,), seed=0)  # Bernoulli
    x = digits[:8]
    grey = evaluation.report(model, x, iw_samples=21, bound_samples=2, verbose=0)
    assert grey["nll_is_log_likelihood"] is False and grey["nll_caveat"] == BERNOULLI_CAVEAT
    binary = evaluation.report(model, keras_vae.data.binarize_array(x, 0), iw_samples=21, bound_samples=2, verbose=0)
    assert binary["nll_is_log_likelihood"] is True and binary["nll_caveat"] is None
    # A likelihood layer without the rule: unknown, and said so; the numbers are those of the Gaussian it equals.
    plain = evaluation.report(linear.model(likelihood=PlainGaussian()), linear.x[:5], iw_samples=21, bound_samples=2,
                              verbose=0)
    assert plain["nll_is_log_likelihood"] is None
    assert plain["nll_caveat"] == ("PlainGaussian does not declare whether its log_prob is a normalised "
                                   "log-likelihood of this data (it has no `log_likelihood_caveat(x)` method): "
                                   "the NLL is -log p(x) only if it is")
    assert plain["test_nll"] == pytest.approx(-linear.log_px()[:5].mean(), abs=1e-4)


# ---------------------------------------------------------------- apps.evaluate, as a subprocess
@pytest.mark.parametrize("module, names", [
    ("apps.evaluate", ("iw_samples", "bound_samples", "batch_size", "chunk_size")),
    ("benchmarks.eval_breakdown", ("batch_size", "chunk_size")),
])
def test_app_and_benchmark_defaults_are_the_reports(module, names):
    """apps.evaluate's sampling flags default to `evaluation.report`'s own arguments: the app and the
    library evaluate alike by default (the chunk size sets the speed, not the numbers); and
    benchmarks.eval_breakdown times the chunks the report draws, as its flags' help says."""
    from apps_test import ROOT

    code = (f"import json; from absl import flags; import {module}; "
            f"print(json.dumps({{n: flags.FLAGS[n].default for n in {names}}}))")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    parameters = inspect.signature(evaluation.report).parameters
    assert json.loads(done.stdout.splitlines()[-1]) == {name: parameters[name].default for name in names}


def test_evaluate_app_reports_diagnostics_labels_and_caveat(tmp_path, digits):
    """A conditional model saved in a run folder (no flags.cfg: the digits defaults), evaluated on grey levels."""
    from apps_test import assert_ok, message_lines, run_app

    model = keras_vae.mlp_vae((8, 8, 1), 2, (16,), seed=0, num_classes=10)  # Bernoulli
    (tmp_path / "run").mkdir()
    model.save(tmp_path / "run" / "model.keras")
    output = tmp_path / "r.json"
    result = run_app("evaluate", f"--model_dir={tmp_path / 'run'}", "--binarize=none", "--iw_samples=30",
                     "--bound_samples=3", "--num_examples=40", "--seed=3", f"--output_json={output}")
    assert_ok(result)
    with open(output) as f:
        results = json.load(f)
    # The same numbers in this process, given the test split's labels: the app passed them.
    expected = evaluation.report(model, digits[:40], labels=keras_vae.data.load("digits").test_labels[:40],
                                 iw_samples=30, bound_samples=3, seed=3, verbose=0)
    assert set(results) == {"model_dir", "dataset", "split", *expected}
    for key, value in expected.items():
        assert results[key] == (pytest.approx(value, rel=1e-5) if isinstance(value, float) else value), key
    assert results["nll_is_log_likelihood"] is False and results["nll_caveat"] == BERNOULLI_CAVEAT
    assert isinstance(results["pareto_k_max"], float) and results["pareto_k_threshold"] == pytest.approx(
        1 - 1 / np.log10(30))
    # stdout: the caveat beside the NLL, None as n/a, no raw list; stderr: one line per warning.
    nll_line = next(line for line in result.stdout.splitlines() if line.startswith("test_nll "))
    assert nll_line.endswith(f"  (caveat: {BERNOULLI_CAVEAT})")
    assert "warnings" not in result.stdout and "None" not in result.stdout
    assert [line for line in message_lines(result.stderr) if line.startswith("evaluate: ")] == [
        f"evaluate: warning: {warning}" for warning in results["warnings"]]
