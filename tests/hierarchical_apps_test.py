"""Hierarchical VAEs in the reports, pictures and apps: `evaluation.report` and `collapse.json`
per stochastic layer, the manifold over the top layer decoded down the prior's conditional
means, the traversals of z_1 (the layer the decoder reads); then apps.train, apps.evaluate and
apps.sample as real subprocesses on a tiny two-layer digits run."""

import json
import os
import types
import zipfile

import keras
import numpy as np
import pytest
from scipy.stats import norm

import keras_vae
from apps_test import assert_ok, read_flags, run_app
from keras_vae import data, evaluation, hierarchical, plots
from plots_test import axis_label_spy, decode_spy, read_png

LATENT_DIMS = (6, 3)
PER_LAYER_KEYS = {"latent_dims", "num_examples", "num_samples", "kl_per_layer", "kl_total", "activity_per_layer",
                  "active_units_per_layer", "active_units", "inactive_units_per_layer", "activity_threshold",
                  "summary"}
FLAT_KEYS = {"latent_dim", "num_examples", "kl_per_dim", "kl_total", "activity_per_dim", "active_units",
             "collapsed_dims", "num_collapsed", "kl_threshold", "activity_threshold", "summary"}
PICTURES = ("latent_manifold.png", "latent_scatter.png", "latent_traversals.png", "learning_curves.png",
            "reconstructions.png", "samples.png")


@pytest.fixture(scope="module")
def digits():
    return data.load("digits")


@pytest.fixture(scope="module")
def model(digits):
    """Two stochastic layers (6 and 3 units), a few epochs on binarized digits."""
    keras.utils.set_random_seed(0)
    model = keras_vae.hierarchical_vae((8, 8, 1), latent_dims=LATENT_DIMS, hidden_units=((32,), (16,)), seed=0)
    model.compile(optimizer=keras.optimizers.Adam(3e-3), jit_compile=False)  # XLA's compile is not under test
    model.fit(_binary(digits.train), epochs=5, batch_size=50, verbose=0)
    return model


def _binary(x):
    return (x > 0.5).astype(np.float32)


@pytest.fixture(scope="module")
def x(digits):
    return _binary(digits.test)


def _prior_mean_of_z1(model, z2):
    """E[z_1|z_2] by hand: the loc half of p(z_1|z_2)'s parameters (as GaussianPosterior splits them)."""
    return model.prior.networks[0](z2).numpy()[:, :LATENT_DIMS[0]]


# ---------------------------------------------------------------- in-process
def test_report_adds_the_layer_report(model, x):
    report = evaluation.report(model, x, iw_samples=50, bound_samples=5, verbose=0)
    layers = hierarchical.layer_report(model, x)  # the report's seed (0) and batch size (100)
    assert report["latent_dims"] == [6, 3] == layers["latent_dims"]
    np.testing.assert_allclose(report["kl_per_layer"], layers["kl_per_layer"], rtol=1e-6)
    assert report["active_units_per_layer"] == layers["active_units_per_layer"]
    assert report["active_units"] == sum(report["active_units_per_layer"]) == layers["active_units"]
    assert report["active_units"] == evaluation.active_units(model, x)  # the flat models' count agrees
    assert all(kl > 0 for kl in report["kl_per_layer"])
    # Two Monte Carlo estimates of the same KL (10 samples per example against the IS run's 50).
    np.testing.assert_allclose(sum(report["kl_per_layer"]), report["kl"], rtol=0.1)
    assert "kl_per_dim" not in report and "activity_per_dim" not in report
    # The keys sit beside active_units, for apps.evaluate's table.
    keys = list(report)
    assert keys[keys.index("active_units"):][:4] == ["active_units", "latent_dims", "kl_per_layer",
                                                     "active_units_per_layer"]


def test_collapse_report_is_per_layer(model, x):
    report = evaluation.posterior_collapse_report(model, x)
    assert set(report) == PER_LAYER_KEYS
    assert report == hierarchical.layer_report(model, x, batch_size=500)
    for activity, inactive, active in zip(report["activity_per_layer"], report["inactive_units_per_layer"],
                                          report["active_units_per_layer"]):
        assert inactive == [u for u, a in enumerate(activity) if a <= report["activity_threshold"]]
        assert active == len(activity) - len(inactive)
    assert report["summary"].startswith("z_1: ") and "; z_2: " in report["summary"]


def test_manifold_is_over_the_top_layer_down_the_prior_means(tmp_path, monkeypatch, model, x):
    report = evaluation.posterior_collapse_report(model, x)
    top = np.asarray(report["activity_per_layer"][1])
    a, b = np.argsort(-top, kind="stable")[:2]  # the top layer's two most active units
    calls = decode_spy(monkeypatch, model)
    texts = axis_label_spy(monkeypatch)
    read_png(plots.latent_manifold(model, tmp_path / "manifold.png", num=5, report=report))
    assert texts == {"x": [f"z_2[{a}]"], "y": [f"z_2[{b}]"]}
    (z,) = calls
    assert z.shape == (25, 9)
    quantiles = norm.ppf(np.linspace(0.05, 0.95, 5))
    expected = np.zeros((5, 5, 3))
    expected[..., a], expected[..., b] = quantiles[None, :], quantiles[::-1, None]
    np.testing.assert_allclose(z[:, 6:], expected.reshape(25, 3), atol=1e-5)  # z_2: the grid, the third unit at 0
    np.testing.assert_allclose(z[:, :6], _prior_mean_of_z1(model, z[:, 6:]), rtol=1e-5, atol=1e-6)  # z_1
    # The decoded images change from each grid point to the next, along both axes.
    images = model.decode(z).mean().numpy().reshape(5, 5, 64)
    assert np.abs(np.diff(images, axis=1)).max(axis=-1).min() > 1e-3
    assert np.abs(np.diff(images, axis=0)).max(axis=-1).min() > 1e-3
    # The same grid set in z_2 with z_1 left at 0 is one image repeated: the decoder reads z_1 only.
    ignored = model.decode(np.concatenate([np.zeros((25, 6), np.float32), z[:, 6:]], axis=1)).mean().numpy()
    np.testing.assert_allclose(ignored, np.broadcast_to(ignored[:1], ignored.shape), atol=1e-6)


def test_write_pictures(tmp_path, monkeypatch, model, x, digits):
    calls = decode_spy(monkeypatch, model)
    texts = axis_label_spy(monkeypatch)
    rows = [{"epoch": "0", "elbo": "-40.5", "kl": "2.0"}, {"epoch": "1", "elbo": "-38.0", "kl": "2.5"}]
    names, report = plots.write_pictures(model, x, tmp_path, labels=digits.test_labels, history_rows=rows,
                                         num_samples=16, about={"run": "test"})
    assert names == sorted(os.listdir(tmp_path)) == sorted(PICTURES + ("collapse.json",))
    for name in PICTURES:
        assert read_png(tmp_path / name).std() > 0.01, name
    written = json.loads((tmp_path / "collapse.json").read_text())
    assert written == {"run": "test", **report} == {"run": "test", **evaluation.posterior_collapse_report(model, x)}
    assert set(report) == PER_LAYER_KEYS
    # The manifold (15 x 15) moves the top layer's two most active units, z_1 following down the prior's means.
    first, top = (np.argsort(-np.asarray(a), kind="stable") for a in report["activity_per_layer"])
    (manifold,) = [z for z in calls if len(z) == 225]
    assert [d for d in range(9) if np.ptp(manifold[:, d]) > 0] == [*range(6), 6 + min(top[:2]), 6 + max(top[:2])]
    np.testing.assert_allclose(manifold[:, :6], _prior_mean_of_z1(model, manifold[:, 6:]), rtol=1e-5, atol=1e-6)
    # The traversals move x[0]'s z_1, every unit (6 < 10), most active first; z_2 stays at its posterior mean.
    (traversal,) = [z for z in calls if len(z) == 6 * 9]
    moved = [int(np.argmax(np.ptp(row, axis=0))) for row in traversal.reshape(6, 9, 9)]
    assert moved == first.tolist()
    np.testing.assert_allclose(traversal[:, 6:], np.broadcast_to(model.encode(x[:1]).mean().numpy()[:, 6:], (54, 3)),
                               rtol=1e-5, atol=1e-6)
    # Axes: the manifold's and the scatter's are the top layer's two most active units.
    manifold_axes = [f"z_2[{top[0]}]", f"z_2[{top[1]}]"]
    assert texts["x"][0] == manifold_axes[0] and texts["y"][0] == manifold_axes[1]
    assert manifold_axes[0] in texts["x"][1:] and manifold_axes[1] in texts["y"][1:]  # the scatter


def test_flat_model_collapse_json_unchanged(tmp_path, x):
    flat = keras_vae.mlp_vae((8, 8, 1), 3, (16,), seed=0)
    names, report = plots.write_pictures(flat, x[:50], tmp_path, num_samples=4)
    assert set(json.loads((tmp_path / "collapse.json").read_text())) == set(report) == FLAT_KEYS
    assert "latent_scatter.png" not in names
    results = evaluation.report(flat, x[:20], iw_samples=10, bound_samples=2, verbose=0)
    assert not {"latent_dims", "kl_per_layer", "active_units_per_layer"} & set(results)


def test_three_layers_and_a_conditional_model(tmp_path, monkeypatch, digits):
    """One mechanism at any depth: z_3's grid down p(z_2|z_3), then p(z_1|z_2); and a conditional model's
    pictures (the prior is unconditional, the decoder takes the class)."""
    deep = keras_vae.hierarchical_vae((8, 8, 1), latent_dims=(4, 3, 2), hidden_units=((8,), (8,), (8,)), seed=1)
    z3 = np.random.default_rng(0).normal(size=(5, 2)).astype(np.float32)
    z2 = deep.prior.networks[1](z3).numpy()[:, :3]
    z1 = deep.prior.networks[0](z2).numpy()[:, :4]
    np.testing.assert_allclose(hierarchical.latents_from_top(deep, z3).numpy(), np.concatenate([z1, z2, z3], 1),
                               rtol=1e-5, atol=1e-6)
    texts = axis_label_spy(monkeypatch)
    plots.latent_manifold(deep, tmp_path / "deep.png", num=3)  # z_3 has 2 units: no report needed
    assert texts == {"x": ["z_3[0]"], "y": ["z_3[1]"]}

    conditional = keras_vae.hierarchical_vae((8, 8, 1), latent_dims=(4, 2), hidden_units=((8,), (8,)), num_classes=10,
                                             seed=2)
    x, labels = _binary(digits.test[:40]), digits.test_labels[:40]
    calls = decode_spy(monkeypatch, conditional)
    (tmp_path / "conditional").mkdir()
    names, report = plots.write_pictures(conditional, x, tmp_path / "conditional", labels=labels, num_samples=10)
    assert "latent_manifold.png" in names and set(report) == PER_LAYER_KEYS
    (manifold_labels,) = [y for z, y in zip(calls, calls.labels) if len(z) == 225]
    assert set(manifold_labels.tolist()) == {int(labels[0])}  # the class of x[0], as for flat models


def test_errors(model, x):
    report = evaluation.posterior_collapse_report(model, x)
    with pytest.raises(ValueError, match="Pass `layer`"):
        plots.most_active_dims(report)
    assert plots.most_active_dims(report, 3, layer=-1) == np.argsort(
        -np.asarray(report["activity_per_layer"][1]), kind="stable").tolist()
    with pytest.raises(ValueError, match="`layer` is for the per-layer report"):
        plots.most_active_dims({"activity_per_dim": [1.0, 2.0], "kl_per_dim": [0.0, 0.0]}, layer=0)
    flat_report = {"activity_per_dim": [1.0] * 9, "kl_per_dim": [0.0] * 9}
    with pytest.raises(ValueError, match=r"must be a hierarchical.layer_report of this model \(latent_dims \[6, 3\]\)"):
        plots.latent_manifold(model, "unused.png", report=flat_report)
    with pytest.raises(ValueError, match=r"`dims` must be units of z_1, the layer the decoder reads, in \[0, 6\)"):
        plots.latent_traversals(model, x[:10], "unused.png", dims=[6])
    with pytest.raises(ValueError, match=r"Expected values of block 2, shape \[\.\.\., 3\]"):
        hierarchical.latents_from_top(model, np.zeros((2, 6), np.float32))
    flat = keras_vae.mlp_vae((8, 8, 1), 2, (8,), seed=0)
    with pytest.raises(ValueError, match="latents_from_top needs a hierarchical model"):
        hierarchical.latents_from_top(flat, np.zeros((2, 2), np.float32))
    assert hierarchical.is_hierarchical(model) and not hierarchical.is_hierarchical(flat)


# ---------------------------------------------------------------- the apps, as subprocesses
@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """apps.train of a two-layer model (6 and 3 units), then apps.evaluate and apps.sample on it.
    --scale_activation=softplus is the default, asked for explicitly: the run is the softplus case
    of test_train_builds_the_scale_activation_asked_for too."""
    root = tmp_path_factory.mktemp("hierarchical_run")
    run = types.SimpleNamespace(model_dir=str(root / "model"), eval_json=str(root / "eval.json"),
                                pictures=str(root / "pics"))
    run.train = run_app("train", "--dataset=digits", "--latent_dim=6,3", "--hidden_units=32", "--link_units=16",
                        "--scale_activation=softplus", "--epochs=2", f"--model_dir={run.model_dir}",
                        f"--export_dir={root / 'export'}")
    assert_ok(run.train)
    run.evaluate = run_app("evaluate", f"--model_dir={run.model_dir}", "--iw_samples=50",
                           f"--output_json={run.eval_json}")
    assert_ok(run.evaluate)
    run.sample = run_app("sample", f"--model_dir={run.model_dir}", f"--output_dir={run.pictures}")
    assert_ok(run.sample)
    return run


def _assert_scale_activation(model_dir, scale_activation):
    assert read_flags(model_dir)["scale_activation"] == scale_activation
    with zipfile.ZipFile(os.path.join(model_dir, "model.keras")) as archive:
        config = json.loads(archive.read("config.json"))["config"]
    assert [config[name]["config"]["scale_activation"] for name in ("posterior", "prior")] == [scale_activation] * 2


def test_train_builds_the_scale_activation_asked_for_exp(tmp_path):
    model_dir = str(tmp_path / "model")
    assert_ok(run_app("train", "--dataset=digits", "--latent_dim=6,3", "--hidden_units=32", "--link_units=16",
                      "--scale_activation=exp", "--epochs=1", "--jit_compile=false", f"--model_dir={model_dir}",
                      "--export_dir="))
    _assert_scale_activation(model_dir, "exp")


def test_train_builds_the_scale_activation_asked_for_softplus(run):
    _assert_scale_activation(run.model_dir, "softplus")  # the module's run asks for it


def test_train_writes_per_layer_collapse_json(run):
    with open(os.path.join(run.model_dir, "collapse.json")) as f:
        report = json.load(f)
    assert set(report) == PER_LAYER_KEYS and report["latent_dims"] == [6, 3]
    assert report["summary"] in run.train.stdout
    for name in PICTURES:
        assert os.path.isfile(os.path.join(run.model_dir, name)), name


def test_evaluate_reports_per_layer(run):
    with open(run.eval_json) as f:
        results = json.load(f)
    assert results["latent_dims"] == [6, 3]
    assert len(results["kl_per_layer"]) == len(results["active_units_per_layer"]) == 2
    assert results["active_units"] == sum(results["active_units_per_layer"])
    assert all(0 <= a <= size for a, size in zip(results["active_units_per_layer"], [6, 3]))
    np.testing.assert_allclose(sum(results["kl_per_layer"]), results["kl"], rtol=0.15)
    assert "kl_per_dim" not in results
    lines = {line.split()[0]: line.split(None, 1)[1] for line in run.evaluate.stdout.splitlines() if line.strip()}
    assert lines["latent_dims"] == "[6, 3]"
    assert lines["active_units_per_layer"] == str(results["active_units_per_layer"])
    assert lines["kl_per_layer"] == "[" + ", ".join(f"{v:.4f}" for v in results["kl_per_layer"]) + "]"


def test_sample_writes_per_layer_pictures(run):
    assert sorted(os.listdir(run.pictures)) == sorted(PICTURES + ("collapse.json",))
    for name in PICTURES:
        assert read_png(os.path.join(run.pictures, name)).std() > 0.01, name
    with open(os.path.join(run.pictures, "collapse.json")) as f:
        report = json.load(f)
    assert report["model_dir"] == run.model_dir and report["split"] == "test"
    assert set(report) - {"model_dir", "dataset", "split"} == PER_LAYER_KEYS
    assert report["summary"] in run.sample.stdout
    # The same numbers as the library's report of the saved model on the app's test split.
    model = keras.saving.load_model(os.path.join(run.model_dir, "model.keras"))
    test = data.load("digits", binarize=read_flags(run.model_dir)["binarize"]).test
    expected = evaluation.posterior_collapse_report(model, test)
    np.testing.assert_allclose(report["kl_per_layer"], expected["kl_per_layer"], rtol=1e-5)
    assert report["active_units_per_layer"] == expected["active_units_per_layer"]
    assert report["inactive_units_per_layer"] == expected["inactive_units_per_layer"]
