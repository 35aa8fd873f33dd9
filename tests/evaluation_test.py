"""The posterior-collapse report: per-dimension KL against a hand computation, active units, collapsed dims."""

import json

import numpy as np
import pytest

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
