"""Gradient estimators of the bounds (`gradient_estimator`): reparameterized, STL and DReG.

The unbiasedness tests use a linear-Gaussian model whose ELBO has a closed form,

    p(z) = N(0, I_L),  p(x|z) = N(W z + b, sigma^2 I_D),  q(z|x) = N(A x + c, T T^T)

    ELBO(x) = -D/2 log(2 pi sigma^2) - (|x - W m - b|^2 + tr(W T T^T W^T)) / (2 sigma^2)
              - 1/2 (tr(T T^T) + |m|^2 - L - log det(T T^T)),     m = A x + c,

held as R copies of its parameters in tf.Variables of shape [R, ...], so the gradient of the
sum of the copies' objectives gives R independent gradient draws in one pass. Means are
compared with the exact gradient within 4 standard errors.
"""

import json
import os
import zipfile

import keras
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp

import keras_vae
from apps_test import TINY, assert_flags_error, assert_ok, parse_flags, read_flags, run_app  # noqa: F401
from bounds_test import LinearGaussian, build_vae
from keras_vae import bounds

tfd = tfp.distributions

D, L, SIGMA, B = 4, 2, 0.7, 3
ENCODER, DECODER = ("A", "c", "scale"), ("W", "b")


class ReplicatedLinearGaussian:
    """R copies of one linear-Gaussian model and q(z|x) (mismatched from the exact posterior unless `exact`)."""

    def __init__(self, copies, covariance="diagonal", exact=False, seed=0):
        rng = np.random.default_rng(seed)
        W, b = rng.normal(size=(D, L)), rng.normal(size=D)
        S = np.linalg.inv(np.eye(L) + W.T @ W / SIGMA**2)  # exact posterior: N(A x + c, S)
        A = S @ W.T / SIGMA**2
        c = -A @ b
        self.x = (rng.normal(size=(B, L)) @ W.T + b + SIGMA * rng.normal(size=(B, D))).astype(np.float32)
        widen = 1.0 if exact else 1.4
        if not exact:
            A, c = A + 0.2 * rng.normal(size=A.shape), c + 0.3
        scale = np.linalg.cholesky(S) * widen if covariance == "full" else np.sqrt(np.diag(S)) * widen
        self.covariance, self.copies = covariance, copies
        self.prior = tfd.MultivariateNormalDiag(tf.zeros(L), tf.ones(L))
        self.base = {"A": A, "c": c, "scale": scale, "W": W, "b": b}
        self.variables = {name: tf.Variable(np.broadcast_to(value, (copies,) + value.shape).astype(np.float32))
                          for name, value in self.base.items()}

    def posterior(self, stop=False):
        """q(z|x), batch [R, B]; with `stop`, its parameters are constants to the gradient."""
        v = {name: tf.stop_gradient(value) if stop else value for name, value in self.variables.items()}
        loc = tf.einsum("rld,bd->rbl", v["A"], self.x) + v["c"][:, None]
        if self.covariance == "full":
            return tfd.MultivariateNormalTriL(loc, v["scale"][:, None])
        return tfd.MultivariateNormalDiag(loc, tf.broadcast_to(v["scale"][:, None], tf.shape(loc)))

    def decode(self, z):  # [k, R, B, L] -> p(x|z), batch [k, R, B]
        v = self.variables
        return tfd.MultivariateNormalDiag(tf.einsum("rdl,krbl->krbd", v["W"], z) + v["b"][:, None],
                                          tf.fill([D], SIGMA))

    def terms(self, **kwargs):
        return bounds.bound_terms(self.x, self.posterior(), self.prior, self.decode, **kwargs)

    def draws(self, **kwargs):
        """{name: [R, size]}: one gradient of the summed objective over the B examples per copy."""
        with tf.GradientTape() as tape:
            objective = tf.reduce_sum(self.terms(**kwargs)["objective"])
        grads = tape.gradient(objective, self.variables)
        return {name: grads[name].numpy().reshape(self.copies, -1).astype(np.float64) for name in grads}

    def exact_elbo_gradient(self, beta=1.0):
        """The gradient of the summed closed-form (beta-)ELBO, in float64."""
        v = {name: tf.Variable(value) for name, value in self.base.items()}
        x = self.x.astype(np.float64)
        with tf.GradientTape() as tape:
            m = x @ tf.transpose(v["A"]) + v["c"]
            tril = tf.linalg.band_part(v["scale"], -1, 0) if self.covariance == "full" else tf.linalg.diag(v["scale"])
            cov = tril @ tf.transpose(tril)
            residual = x - m @ tf.transpose(v["W"]) - v["b"]
            reconstruction = -0.5 * D * np.log(2 * np.pi * SIGMA**2) - (
                tf.reduce_sum(residual**2, -1) + tf.linalg.trace(v["W"] @ cov @ tf.transpose(v["W"]))) / (2 * SIGMA**2)
            kl = 0.5 * (tf.linalg.trace(cov) + tf.reduce_sum(m**2, -1) - L - tf.linalg.logdet(cov))
            elbo = tf.reduce_sum(reconstruction - beta * kl)
        grads = tape.gradient(elbo, v)
        return {name: grads[name].numpy().ravel() for name in grads}


def independent_dreg_encoder_draws(model, num_samples, seed, beta):
    """DReG's encoder gradient as Tucker et al. write it, without `bounds`: the same z, log q with its
    parameters stopped (a distribution built from stopped tensors), and the surrogate
    sum_i stop((1 - beta) w~_i + beta w~_i^2) log w_i differentiated through z only."""
    with tf.GradientTape() as tape:
        z = keras_vae.posteriors.sample(model.posterior(), num_samples, seed=seed)
        log_q = model.posterior(stop=True).log_prob(z)
        log_w = model.decode(z).log_prob(model.x) + beta * (model.prior.log_prob(z) - log_q)
        normalised = tf.stop_gradient(tf.nn.softmax(log_w, axis=0))
        surrogate = tf.reduce_sum(((1 - beta) * normalised + beta * normalised**2) * log_w)
    grads = tape.gradient(surrogate, {name: model.variables[name] for name in ENCODER})
    return {name: grads[name].numpy().reshape(model.copies, -1).astype(np.float64) for name in grads}


def z_scores(draws, expected=0.0):
    """(mean - expected) / standard error, per parameter, over the draws' first axis."""
    return (draws.mean(0) - expected) / (draws.std(0, ddof=1) / np.sqrt(len(draws)))


def seed(a, b=0):
    return tf.constant([a, b], tf.int32)


@pytest.fixture(scope="module")
def digits():
    return keras_vae.data.load("digits", binarize="static")


# ---------------------------------------------------------------- values do not depend on the estimator
@pytest.mark.parametrize("covariance", ["diagonal", "full"])
@pytest.mark.parametrize("objective, k, analytic_kl", [("elbo", 1, True), ("elbo", 3, False), ("iwae", 5, True)])
def test_reported_values_do_not_depend_on_the_estimator(digits, covariance, objective, k, analytic_kl):
    model = keras_vae.mlp_vae(digits.input_shape, 3, (16,), covariance=covariance, objective=objective,
                              num_samples=k, analytic_kl=analytic_kl, beta=0.7, seed=0)
    x = digits.test[:20]
    reference = {name: t.numpy() for name, t in model.compute_terms(x, seed=seed(4)).items()}
    assert set(reference) >= {"elbo", "kl", "reconstruction", "objective"}
    for estimator in ("stl", "dreg"):
        terms = model.compute_terms(x, seed=seed(4), gradient_estimator=estimator)
        assert set(terms) == set(reference)
        for name, value in terms.items():
            np.testing.assert_array_equal(value.numpy(), reference[name], err_msg=f"{estimator}: {name}")


# ---------------------------------------------------------------- unbiasedness
@pytest.mark.parametrize("covariance", ["diagonal", "full"])
@pytest.mark.parametrize("beta", [1.0, 0.5])
@pytest.mark.parametrize("estimator", bounds.GRADIENT_ESTIMATORS)
def test_elbo_gradient_is_unbiased_against_the_closed_form(covariance, beta, estimator):
    model = ReplicatedLinearGaussian(4000, covariance)
    exact = model.exact_elbo_gradient(beta)
    draws = model.draws(num_samples=1, seed=seed(1, 2), beta=beta, gradient_estimator=estimator)
    for name in ENCODER + DECODER:
        assert np.abs(exact[name]).max() > 0.1, name  # a gradient that is there to be found
        # band_part drops the upper triangle of a full scale: those entries have no gradient at all
        used = np.abs(exact[name]) + draws[name].std(0) > 0
        scores = z_scores(draws[name][:, used], exact[name][used])
        assert np.abs(scores).max() < 4, (name, scores)


@pytest.mark.parametrize("covariance", ["diagonal", "full"])
def test_dreg_on_l1_is_stl_on_the_elbo(covariance):
    # With one sample the IWAE weight is 1: DReG's weights change nothing, and L_1 is the sampled ELBO.
    model = ReplicatedLinearGaussian(50, covariance)
    dreg = model.draws(num_samples=1, seed=seed(3), objective="iwae", gradient_estimator="dreg")
    stl = model.draws(num_samples=1, seed=seed(3), objective="elbo", gradient_estimator="stl")
    for name in dreg:
        np.testing.assert_allclose(dreg[name], stl[name], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("covariance", ["diagonal", "full"])
@pytest.mark.parametrize("beta", [1.0, 0.5, 2.0])
def test_iwae_dreg_and_reparameterized_agree_in_expectation(covariance, beta):
    """Both are unbiased for the gradient of E[L_k]: their paired difference averages to zero. DReG's
    encoder weights (1 - beta) w_i + beta w_i^2 make this hold for any beta (w_i^2 alone fails by 25+ SE
    at beta = 0.5 or 2 here)."""
    model = ReplicatedLinearGaussian(4000, covariance)
    reparameterized = model.draws(num_samples=5, seed=seed(3, 4), objective="iwae", beta=beta)
    dreg = model.draws(num_samples=5, seed=seed(3, 4), objective="iwae", beta=beta, gradient_estimator="dreg")
    for name in ENCODER:
        difference = dreg[name] - reparameterized[name]
        used = difference.std(0) > 0
        assert used.sum() >= 2, name
        scores = z_scores(difference[:, used])
        assert np.abs(scores).max() < 4, (name, scores)


@pytest.mark.parametrize("covariance", ["diagonal", "full"])
@pytest.mark.parametrize("beta", [1.0, 0.5])
def test_dreg_matches_an_independent_computation_draw_by_draw(covariance, beta):
    """Not only the mean: each DReG draw is the two-surrogate form's, so its variance is DReG's too."""
    model = ReplicatedLinearGaussian(200, covariance)
    dreg = model.draws(num_samples=5, seed=seed(8), objective="iwae", beta=beta, gradient_estimator="dreg")
    independent = independent_dreg_encoder_draws(model, 5, seed(8), beta)
    for name in ENCODER:
        scale = np.abs(independent[name]).max()
        np.testing.assert_allclose(dreg[name], independent[name], rtol=1e-3, atol=1e-5 * scale, err_msg=name)


def test_iwae_stl_is_biased():
    """Dropping the score term of L_k (k > 1) removes a term whose mean is not zero (Tucker et al., 2019):
    STL's mean encoder gradient differs from DReG's (unbiased) by many standard errors."""
    model = ReplicatedLinearGaussian(4000, "diagonal")
    stl = model.draws(num_samples=5, seed=seed(3, 4), objective="iwae", gradient_estimator="stl")
    dreg = model.draws(num_samples=5, seed=seed(3, 4), objective="iwae", gradient_estimator="dreg")
    scores = z_scores(np.concatenate([stl[n] - dreg[n] for n in ENCODER], 1))
    assert np.abs(scores).max() > 20, scores


# ---------------------------------------------------------------- zero variance at the exact posterior
@pytest.mark.parametrize("objective, k", [("elbo", 1), ("elbo", 4), ("iwae", 5)])
def test_exact_posterior_gives_stl_and_dreg_a_zero_encoder_gradient(objective, k):
    """With q(z|x) = p(z|x) every log weight is log p(x), whatever z: the path derivative is exactly 0,
    so STL and DReG have no variance. The reparameterized estimator keeps the score term's noise."""
    truth = LinearGaussian()
    model = build_vae(truth, objective=objective, num_samples=k)
    norms = {}
    for estimator in bounds.GRADIENT_ESTIMATORS:
        for s in range(3):
            with tf.GradientTape() as tape:
                loss = -tf.reduce_sum(model.compute_terms(truth.x, seed=seed(s), gradient_estimator=estimator)[
                    "objective"])
            norms.setdefault(estimator, []).append(
                float(tf.linalg.global_norm(tape.gradient(loss, model.encoder.trainable_variables))))
    assert min(norms["reparameterized"]) > 1.0, norms
    assert max(norms["stl"] + norms["dreg"]) < 1e-3, norms


# ---------------------------------------------------------------- gradients change only where they should
@pytest.mark.parametrize("objective, k", [("elbo", 2), ("iwae", 5)])
def test_only_the_encoder_gradient_changes(digits, objective, k):
    """The decoder's, the likelihood's and a learned prior's gradients are the reparameterized ones, from the
    same samples: STL and DReG change only the path into the encoder."""
    model = keras_vae.mlp_vae(digits.input_shape, 3, (16,), objective=objective, num_samples=k, seed=0,
                              prior=keras_vae.MixtureOfGaussiansPrior(3, num_components=4))
    parts = {"encoder": model.encoder, "decoder": model.decoder, "prior": model.prior}
    assert model.prior.trainable_variables

    def gradients(estimator):
        with tf.GradientTape() as tape:
            loss = -tf.reduce_mean(model.compute_terms(digits.test[:32], seed=seed(7),
                                                       gradient_estimator=estimator)["objective"])
        return tape.gradient(loss, {name: part.trainable_variables for name, part in parts.items()})

    reference = gradients("reparameterized")
    for estimator in ("stl", "dreg"):
        found = gradients(estimator)
        for name in ("decoder", "prior"):
            for got, expected in zip(found[name], reference[name], strict=True):
                np.testing.assert_allclose(got.numpy(), expected.numpy(), rtol=1e-4, atol=1e-6)
        encoder_change = [np.abs(g.numpy() - e.numpy()).max() for g, e in zip(found["encoder"], reference["encoder"])]
        assert max(encoder_change) > 1e-3, (estimator, encoder_change)


# ---------------------------------------------------------------- signal-to-noise ratio
def test_snr_direction_with_k():
    """Rainforth et al. (2018): with more samples the reparameterized encoder gradient's SNR falls and the
    decoder's rises; DReG's encoder SNR rises too. A fixed seed; the margins here are several-fold."""
    model = ReplicatedLinearGaussian(1000, "diagonal")

    def snr(draws, names):
        g = np.concatenate([draws[n] for n in names], 1)
        return np.mean(np.abs(g.mean(0)) / g.std(0, ddof=1))

    found = {(estimator, k): model.draws(num_samples=k, seed=seed(5, k), objective="iwae",
                                         gradient_estimator=estimator)
             for estimator in ("reparameterized", "dreg") for k in (1, 64)}
    encoder = {key: snr(d, ENCODER) for key, d in found.items()}
    decoder = {key: snr(d, DECODER) for key, d in found.items()}
    assert encoder["reparameterized", 64] < 0.3 * encoder["reparameterized", 1], encoder
    assert encoder["dreg", 64] > 1.5 * encoder["dreg", 1], encoder
    assert decoder["reparameterized", 64] > 3 * decoder["reparameterized", 1], decoder


def test_gradient_snr_benchmark_function(digits):
    from benchmarks.gradient_snr import gradient_snr

    model = keras_vae.mlp_vae(digits.input_shape, 2, (8,), seed=0)
    snr = gradient_snr(model, digits.test[:16], 3, "dreg", draws=5)
    assert set(snr) == {"encoder", "decoder"}
    assert all(np.isfinite(v) and v > 0 for v in snr.values()), snr


# ---------------------------------------------------------------- Keras: fit, save and load
@pytest.mark.parametrize("estimator", bounds.GRADIENT_ESTIMATORS)
def test_fit_and_save_keep_the_estimator(digits, tmp_path, estimator):
    model = keras_vae.mlp_vae(digits.input_shape, 2, (16,), objective="iwae", num_samples=3, seed=0,
                              gradient_estimator=estimator)
    model.compile(optimizer=keras.optimizers.Adam(3e-3))
    history = model.fit(digits.train, epochs=2, batch_size=64, verbose=0, validation_data=(digits.validation,))
    assert all(np.isfinite(history.history["val_iwae_bound"]))
    assert history.history["loss"][-1] < history.history["loss"][0]
    model.save(tmp_path / "m.keras")
    restored = keras.saving.load_model(tmp_path / "m.keras")
    assert restored.gradient_estimator == estimator
    assert restored.get_config()["gradient_estimator"] == estimator


def test_a_keras_file_without_the_estimator_loads_as_reparameterized(digits, tmp_path):
    """A .keras file written before `gradient_estimator` existed: its config lacks the key."""
    model = keras_vae.mlp_vae(digits.input_shape, 2, (8,), seed=0, gradient_estimator="dreg")
    model.save(tmp_path / "new.keras")
    with zipfile.ZipFile(tmp_path / "new.keras") as source, zipfile.ZipFile(tmp_path / "old.keras", "w") as old:
        for item in source.infolist():
            content = source.read(item.filename)
            if item.filename == "config.json":
                config = json.loads(content)
                del config["config"]["gradient_estimator"]
                content = json.dumps(config).encode()
            old.writestr(item, content)
    restored = keras.saving.load_model(tmp_path / "old.keras")
    assert restored.gradient_estimator == "reparameterized"
    np.testing.assert_allclose(restored.predict(digits.test[:3], verbose=0), model.predict(digits.test[:3], verbose=0))


# ---------------------------------------------------------------- validation
def test_bad_estimator_name_is_one_line():
    with pytest.raises(ValueError, match=r"^`gradient_estimator` must be one of \('reparameterized', 'stl', "
                                         r"'dreg'\)\. Received: gradient_estimator='drg'$"):
        keras_vae.mlp_vae((4,), 2, (8,), gradient_estimator="drg")
    q = tfd.MultivariateNormalDiag(tf.zeros((2, 1)), tf.ones((2, 1)))
    with pytest.raises(ValueError, match="`gradient_estimator` must be one of"):
        bounds.bound_terms(tf.zeros((2, 1)), q, q, lambda z: tfd.Independent(tfd.Normal(z, 1.0), 1),
                           gradient_estimator="STL")


@pytest.mark.parametrize("estimator", ["stl", "dreg"])
def test_free_bits_refuse_stl_and_dreg(estimator):
    with pytest.raises(ValueError, match=rf"^Free bits floor the closed-form KL, whose gradient "
                                         rf"gradient_estimator='{estimator}' replaces"):
        keras_vae.mlp_vae((4,), 2, (8,), free_bits=0.5, gradient_estimator=estimator)


def test_stl_needs_a_reparameterized_posterior():
    mixture = tfd.MixtureSameFamily(tfd.Categorical(logits=tf.zeros((2, 2))),
                                    tfd.MultivariateNormalDiag(tf.zeros((2, 2, 1)), tf.ones((2, 2, 1))))
    prior = tfd.MultivariateNormalDiag(tf.zeros(1), tf.ones(1))
    with pytest.raises(ValueError, match="^gradient_estimator='stl' needs a reparameterized posterior; "
                                         "MixtureSameFamily is not$"):
        bounds.bound_terms(tf.zeros((2, 1)), mixture, prior, lambda z: tfd.Independent(tfd.Normal(z, 1.0), 1),
                           gradient_estimator="stl")


# ---------------------------------------------------------------- apps.train
def test_flag_choices_are_the_library_names():
    from absl import flags

    from apps import train  # noqa: F401  (defines the flags)

    assert tuple(flags.FLAGS["gradient_estimator"].parser.enum_values) == bounds.GRADIENT_ESTIMATORS


@pytest.mark.parametrize("args, fragments", [
    (["--gradient_estimator=drg"], ["--gradient_estimator", "dreg"]),
    (["--gradient_estimator=stl", "--free_bits=0.5"], ["free bits floor the closed-form KL", "'stl'"]),
], ids=["unknown", "free_bits"])
def test_train_bad_estimator_flags(parse_flags, args, fragments):  # noqa: F811  (the fixture)
    assert_flags_error(parse_flags, [*TINY, *args, "--model_dir=runs/unused"], ["train: error:", *fragments])


def test_train_app_with_dreg(tmp_path):
    model_dir = tmp_path / "model"
    result = run_app("train", *[f for f in TINY if not f.startswith("--epochs")], "--epochs=1",
                     "--gradient_estimator=dreg", "--objective=iwae", "--num_samples=5", "--image_every=0",
                     f"--model_dir={model_dir}", "--export_dir=")
    assert_ok(result)
    assert read_flags(str(model_dir))["gradient_estimator"] == "dreg"
    model = keras.saving.load_model(os.path.join(model_dir, "model.keras"))
    assert (model.gradient_estimator, model.objective, model.num_samples) == ("dreg", "iwae", 5)
