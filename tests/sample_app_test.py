"""End-to-end tests of apps.sample, run as a real subprocess on a tiny digits run."""

import json
import os
import shutil
import types

import keras
import matplotlib.image
import numpy as np
import pytest
import tensorflow as tf

import keras_vae
from apps_test import TINY, assert_ok, assert_one_line_error, read_flags, run_app
from helpers import tree_digest

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PICTURES = ("latent_manifold.png", "latent_scatter.png", "latent_traversals.png", "learning_curves.png",
            "reconstructions.png", "samples.png")


def app_splits(model_dir):
    """The digits the app draws from: the test split with the binarization the run's flags.cfg records."""
    return keras_vae.data.load("digits", binarize=read_flags(model_dir)["binarize"])


@pytest.fixture(scope="module")
def sampled(tmp_path_factory):
    """A tiny training run, and apps.sample's output for it."""
    root = tmp_path_factory.mktemp("sampled")
    run = types.SimpleNamespace(model_dir=str(root / "model"), output_dir=str(root / "pictures" / "new"))
    assert_ok(run_app("train", *TINY, f"--model_dir={run.model_dir}", "--export_dir="))
    run.result = run_app("sample", f"--model_dir={run.model_dir}", f"--output_dir={run.output_dir}",
                         "--num_samples=9", "--seed=3")
    assert_ok(run.result)
    return run


def test_sample_writes_every_output(sampled):
    assert sorted(os.listdir(sampled.output_dir)) == sorted(PICTURES + ("collapse.json",))  # no staging left
    for name in PICTURES:
        path = os.path.join(sampled.output_dir, name)
        with open(path, "rb") as f:
            assert f.read(8) == PNG_SIGNATURE, name
        assert matplotlib.image.imread(path).std() > 0.01, name
    height, width = matplotlib.image.imread(os.path.join(sampled.output_dir, "samples.png")).shape[:2]
    assert 0.8 < height / width < 1.3  # --num_samples=9: a 3 x 3 grid
    for name in sorted(PICTURES + ("collapse.json",)):
        assert f"Wrote {os.path.join(sampled.output_dir, name)}" in sampled.result.stdout
    # The digits loader gives labels, so the posterior means are drawn coloured by digit.
    assert os.path.isfile(os.path.join(sampled.output_dir, "latent_scatter.png"))
    assert "No latent_scatter.png" not in sampled.result.stdout


def test_sample_collapse_report(sampled):
    with open(os.path.join(sampled.output_dir, "collapse.json")) as f:
        report = json.load(f)
    assert report["model_dir"] == sampled.model_dir
    assert report["dataset"] == "digits" and report["split"] == "test"
    assert report["latent_dim"] == 2 and report["num_examples"] == 300
    assert report["summary"] in sampled.result.stdout
    # The same numbers as the library function on the saved model.
    model = keras.saving.load_model(os.path.join(sampled.model_dir, "model.keras"))
    expected = keras_vae.evaluation.posterior_collapse_report(model, app_splits(sampled.model_dir).test)
    np.testing.assert_allclose(report["kl_per_dim"], expected["kl_per_dim"], rtol=1e-5)
    assert report["collapsed_dims"] == expected["collapsed_dims"]
    assert report["active_units"] == expected["active_units"]


def test_sample_missing_model_dir(tmp_path):
    missing = tmp_path / "no_such_run"
    result = run_app("sample", f"--model_dir={missing}", f"--output_dir={tmp_path / 'out'}")
    assert_one_line_error(result, "sample: error:", str(missing))
    assert sorted(os.listdir(tmp_path)) == []


def test_sample_unwritable_output_dir(sampled, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder\n")
    before = tree_digest(sampled.model_dir)
    result = run_app("sample", f"--model_dir={sampled.model_dir}", f"--output_dir={blocker / 'pictures'}")
    assert_one_line_error(result, "sample: error:", str(blocker))
    assert sorted(os.listdir(tmp_path)) == ["a_file"]
    assert blocker.read_text() == "not a folder\n"
    assert tree_digest(sampled.model_dir) == before


@pytest.mark.parametrize("args, fragments", [
    (["--output_dir={tmp}/out", "--num_samples=0"], ["sample: error:", "--num_samples"]),
    (["--output_dir= "], ["sample: error:", "--output_dir", "must name a folder"]),
    ([], ["sample: error:", "--output_dir"]),
], ids=["num_samples", "empty_output_dir", "no_output_dir"])
def test_sample_bad_flags(tmp_path, args, fragments):
    result = run_app("sample", f"--model_dir={tmp_path / 'run'}", *(arg.format(tmp=tmp_path) for arg in args))
    line = assert_one_line_error(result, *fragments)
    assert line.startswith("sample: error:")
    assert sorted(os.listdir(tmp_path)) == []


@pytest.mark.parametrize("existing", [False, True])
def test_sample_bad_history_writes_nothing(sampled, tmp_path, existing):
    # The pictures before learning_curves.png are drawn, then the damaged history.csv stops the run.
    run = tmp_path / "run"
    run.mkdir()
    for name in ("model.keras", "flags.cfg"):
        shutil.copy(os.path.join(sampled.model_dir, name), run / name)
    (run / "history.csv").write_text("epoch,elbo\n0,-30.5\n1,oops\n")
    output_dir = tmp_path / "out" / "pictures"
    if existing:
        output_dir.mkdir(parents=True)
        (output_dir / "samples.png").write_bytes(b"older")
    before = tree_digest(tmp_path)
    result = run_app("sample", f"--model_dir={run}", f"--output_dir={output_dir}")
    assert_one_line_error(result, "sample: error: history.csv of the run:", "'elbo' column", "oops")
    assert tree_digest(tmp_path) == before
    assert sorted(os.listdir(tmp_path)) == (["out", "run"] if existing else ["run"])
    if existing:
        assert os.listdir(output_dir) == ["samples.png"]  # no staging folder left


def test_sample_label_needs_a_conditional_run(sampled, tmp_path):
    result = run_app("sample", f"--model_dir={sampled.model_dir}", f"--output_dir={tmp_path / 'out'}", "--label=2")
    assert_one_line_error(result, "sample: error: --label=2 is for conditional runs;",
                          f"{sampled.model_dir} holds an unconditional VAE")
    assert sorted(os.listdir(tmp_path)) == []


# ---------------------------------------------------------------- conditional runs


@pytest.fixture(scope="module")
def conditional_sampled(tmp_path_factory):
    """A tiny conditional training run, and apps.sample's output for it: every class, then class 3 only."""
    root = tmp_path_factory.mktemp("conditional")
    run = types.SimpleNamespace(model_dir=str(root / "model"), output_dir=str(root / "pictures"),
                                threes_dir=str(root / "threes"))
    assert_ok(run_app("train", *TINY, "--conditional", f"--model_dir={run.model_dir}", "--export_dir="))
    run.result = run_app("sample", f"--model_dir={run.model_dir}", f"--output_dir={run.output_dir}",
                         "--num_samples=20", "--seed=3")
    assert_ok(run.result)
    run.threes = run_app("sample", f"--model_dir={run.model_dir}", f"--output_dir={run.threes_dir}",
                         "--num_samples=9", "--label=3")
    assert_ok(run.threes)
    return run


def test_conditional_sample_writes_every_output(conditional_sampled):
    run = conditional_sampled
    for folder in (run.output_dir, run.threes_dir):
        assert sorted(os.listdir(folder)) == sorted(PICTURES + ("collapse.json",))
        for name in PICTURES:
            path = os.path.join(folder, name)
            with open(path, "rb") as f:
                assert f.read(8) == PNG_SIGNATURE, name
            assert matplotlib.image.imread(path).std() > 0.01, name
    # --num_samples=20 over the 10 digits: 10 rows of 2, tall; with --label=3, 9 threes in a 3 x 3 grid.
    height, width = matplotlib.image.imread(os.path.join(run.output_dir, "samples.png")).shape[:2]
    assert height > 2.5 * width
    height, width = matplotlib.image.imread(os.path.join(run.threes_dir, "samples.png")).shape[:2]
    assert 0.8 < height / width < 1.3
    first = app_splits(run.model_dir).test_labels[0]
    assert f"Conditional model: latent_manifold.png shows class {first}, the first test example's" in run.result.stdout
    assert "Conditional model: latent_manifold.png shows class 3 (--label)" in run.threes.stdout
    assert "No latent_scatter.png" not in run.result.stdout


def test_conditional_sample_collapse_report_uses_the_labels(conditional_sampled):
    with open(os.path.join(conditional_sampled.output_dir, "collapse.json")) as f:
        report = json.load(f)
    assert report["dataset"] == "digits" and report["num_examples"] == 300
    model = keras.saving.load_model(os.path.join(conditional_sampled.model_dir, "model.keras"))
    assert model.num_classes == 10
    # E[z|x, y] and the KLs of q(z|x, y), by hand from the saved model's encoder.
    splits = app_splits(conditional_sampled.model_dir)
    q = model.encode(tf.constant(splits.test), splits.test_labels)
    means, stddevs = q.mean().numpy(), q.stddev().numpy()
    kl = (-np.log(stddevs) + (stddevs**2 + means**2 - 1) / 2).mean(axis=0)
    np.testing.assert_allclose(report["kl_per_dim"], kl, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(report["activity_per_dim"], means.var(axis=0), rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("args, fragments", [
    (["--label=10"], ["sample: error: --label=10 is not a class of the model: its classes are 0 ... 9"]),
], ids=["label_out_of_range"])
def test_conditional_sample_bad_label(conditional_sampled, tmp_path, args, fragments):
    before = tree_digest(conditional_sampled.model_dir)
    result = run_app("sample", f"--model_dir={conditional_sampled.model_dir}", f"--output_dir={tmp_path / 'out'}",
                     *args)
    assert_one_line_error(result, *fragments)
    assert sorted(os.listdir(tmp_path)) == []
    assert tree_digest(conditional_sampled.model_dir) == before
