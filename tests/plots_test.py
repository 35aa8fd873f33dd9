"""PNG figures are real images with the content laid out as asked."""

import json
import os

import matplotlib.axes
import matplotlib.image
import numpy as np
import pytest
import tensorflow as tf
from scipy.stats import norm

import keras_vae
from keras_vae import evaluation, plots

MIN_SCALE = 1e-4  # GaussianPosterior's default floor on the standard deviation


def test_image_grid_writes_png(tmp_path):
    images = np.linspace(0, 1, 6 * 8 * 8).reshape(6, 8, 8, 1)
    path = tmp_path / "grid.png"
    plots.image_grid(images, path, columns=3)
    pixels = matplotlib.image.imread(path)
    assert pixels.ndim == 3 and pixels.shape[1] > pixels.shape[0]  # 3 columns by 2 rows: wider than tall
    assert pixels.std() > 0.05  # not a blank canvas


def test_model_figures(tmp_path):
    model = keras_vae.mlp_vae((8, 8, 1), 2, (16,), seed=0)
    x = keras_vae.data.load("digits").test
    plots.samples(model, tmp_path / "samples.png", num=16)
    plots.reconstructions(model, x, tmp_path / "reconstructions.png", num=4)
    plots.learning_curves({"elbo": [-40.0, -30.0], "val_elbo": [-38.0, -31.0]}, tmp_path / "curves.png")
    for name in ("samples.png", "reconstructions.png", "curves.png"):
        assert matplotlib.image.imread(tmp_path / name).shape[0] > 50


def test_image_grid_rejects_wrong_shape(tmp_path):
    with pytest.raises(ValueError, match=r"Expected images of shape \[N, H, W\]"):
        plots.image_grid(np.zeros((2, 3)), tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def read_png(path):
    """The pixels of a real PNG file ([H, W, channels]), after checking its signature."""
    with open(path, "rb") as f:
        assert f.read(8) == PNG_SIGNATURE, path
    return matplotlib.image.imread(path)


class Calls(list):
    """The z of each recorded call; `labels` holds the y of each (None if none)."""

    def __init__(self):
        super().__init__()
        self.labels = []


def decode_spy(monkeypatch, model):
    """Record every z (and y) that `model.decode` is called with eagerly; the real decode still runs."""
    calls = Calls()
    decode = model.decode

    def spy(z, y=None):
        if tf.executing_eagerly():  # not the symbolic calls of a traced function (`predict`)
            calls.append(np.asarray(z))
            calls.labels.append(None if y is None else np.asarray(y))
        return decode(z) if y is None else decode(z, y)

    monkeypatch.setattr(model, "decode", spy)
    return calls


def axis_label_spy(monkeypatch):
    """Record the text of every `Axes.set_xlabel` and `set_ylabel` call, by axis."""
    texts = {"x": [], "y": []}
    for axis in texts:
        setter = getattr(matplotlib.axes.Axes, f"set_{axis}label")

        def spy(self, text, *args, _setter=setter, _axis=axis, **kwargs):
            texts[_axis].append(text)
            return _setter(self, text, *args, **kwargs)

        monkeypatch.setattr(matplotlib.axes.Axes, f"set_{axis}label", spy)
    return texts


def raw_scale(scale):
    """The raw posterior parameter whose softplus (+ MIN_SCALE) is `scale`."""
    return np.log(np.expm1(scale - MIN_SCALE))


@pytest.fixture(scope="module")
def digits():
    return keras_vae.data.load("digits").test


def test_every_figure_returns_its_path(tmp_path, digits):
    model = keras_vae.mlp_vae((8, 8, 1), 2, (16,), seed=0)
    paths = [
        plots.image_grid(digits[:4], tmp_path / "grid.png"),
        plots.samples(model, tmp_path / "samples.png", num=4),
        plots.reconstructions(model, digits, tmp_path / "reconstructions.png", num=2),
        plots.latent_manifold(model, tmp_path / "manifold.png", num=3),
        plots.latent_scatter(model, digits[:20], np.arange(20) % 3, tmp_path / "scatter.png"),
        plots.latent_traversals(model, digits[:20], tmp_path / "traversals.png", num=3),
        plots.learning_curves({"elbo": [-3.0, -2.0]}, tmp_path / "curves.png"),
    ]
    for path in paths:
        assert read_png(path).std() > 0.01, path


@pytest.mark.parametrize("shape, expected", [
    ((3, 64), (3, 8, 8)),                 # flat, square
    ((3, 4 * 4 * 3), (3, 4, 4, 3)),       # flat, RGB square
    ((3, 8, 8, 1), (3, 8, 8)),
    ((3, 5, 7, 3), (3, 5, 7, 3)),
])
def test_as_images_shapes(shape, expected):
    images = plots.as_images(np.full(shape, 2.0))
    assert images.shape == expected and images.dtype == np.float32
    assert images.max() == 1.0  # clipped to [0, 1]


@pytest.mark.parametrize("shape", [(2, 3), (2, 8, 8, 2), (2,)])
def test_as_images_errors(shape):
    with pytest.raises(ValueError, match=r"Expected images of shape \[N, H, W\]"):
        plots.as_images(np.zeros(shape))


def test_tile_images_correctness():
    images = np.stack([np.full((2, 3), i / 10) for i in range(5)])
    tiled = plots.tile_images(images, columns=3, pad=1, fill=1.0)
    assert tiled.shape == (2 * 3 - 1, 3 * 4 - 1)
    np.testing.assert_allclose(tiled[3:5, 4:7], 0.4)  # image 4: row 1, column 1
    np.testing.assert_allclose(tiled[3:5, 8:11], 1.0)  # the empty last cell
    np.testing.assert_allclose(tiled[2], 1.0)  # padding between the rows


def test_image_grid_flat_and_rgb(tmp_path):
    flat = np.linspace(0, 1, 4 * 64).reshape(4, 64)
    rgb = np.random.default_rng(0).random((4, 6, 6, 3))
    assert read_png(plots.image_grid(flat, tmp_path / "flat.png", columns=4)).shape[1] > 300
    pixels = read_png(plots.image_grid(rgb, tmp_path / "rgb.png"))
    assert np.abs(pixels[..., 0] - pixels[..., 1]).max() > 0.1  # colour survived


def test_manifold_latents_correctness():
    z = plots.manifold_latents(4, num=5).reshape(5, 5, 4)
    quantiles = norm.ppf(np.linspace(0.05, 0.95, 5))
    np.testing.assert_allclose(z[0, :, 0], quantiles, atol=1e-5)  # z[0] grows to the right
    np.testing.assert_allclose(z[:, 0, 1], quantiles[::-1], atol=1e-5)  # z[1] grows upwards
    np.testing.assert_array_equal(z[..., 2:], 0.0)
    assert plots.manifold_latents(1, num=5).shape == (5, 1)

    z = plots.manifold_latents(5, num=3, dims=(3, 1)).reshape(3, 3, 5)
    quantiles = norm.ppf([0.05, 0.5, 0.95])
    np.testing.assert_allclose(z[1, :, 3], quantiles, atol=1e-5)  # z[3] grows to the right
    np.testing.assert_allclose(z[:, 2, 1], quantiles[::-1], atol=1e-5)  # z[1] grows upwards
    np.testing.assert_array_equal(z[..., [0, 2, 4]], 0.0)


@pytest.mark.parametrize("dims, latent_dim", [((0,), 2), ((1, 1), 3), ((0, 3), 3), ((0.0, 1), 2), ((0, 1), 1),
                                               ((True, 0), 2), (3, 4)])
def test_manifold_dims_errors(dims, latent_dim):
    with pytest.raises(ValueError, match=r"`dims` must be [12] different latent dimensions? in \[0, "):
        plots.manifold_latents(latent_dim, 3, dims)


@pytest.mark.parametrize("input_shape, latent_dim, dims", [((8, 8, 1), 2, None), ((64,), 4, (3, 1)),
                                                         ((8, 8, 3), 3, (0, 2))])
def test_latent_manifold_decodes_the_grid(tmp_path, monkeypatch, input_shape, latent_dim, dims):
    model = keras_vae.mlp_vae(input_shape, latent_dim, (16,), seed=0)
    calls = decode_spy(monkeypatch, model)
    texts = axis_label_spy(monkeypatch)
    pixels = read_png(plots.latent_manifold(model, tmp_path / "manifold.png", num=6, dims=dims))
    assert len(calls) == 1
    # 36 images: row r, column c decodes z[a] = q_c, z[b] = q_{5-r}, 0 elsewhere, (a, b) = dims (default (0, 1)),
    # q the N(0, 1) quantiles at 0.05 ... 0.95.
    a, b = dims or (0, 1)
    quantiles = norm.ppf(np.linspace(0.05, 0.95, 6))
    expected = np.zeros((6, 6, latent_dim))
    expected[..., a], expected[..., b] = quantiles[None, :], quantiles[::-1, None]
    np.testing.assert_allclose(calls[0], expected.reshape(36, latent_dim), atol=1e-5)
    assert texts == {"x": [f"z[{a}]"], "y": [f"z[{b}]"]}
    height, width = pixels.shape[:2]
    assert 500 < width < 800 and 0.8 < height / width < 1.3  # 6 x 6 square images, about 100 px each


@pytest.fixture(scope="module")
def late_active_model():
    """latent_dim 4: z[0] and z[1] collapsed (q(z_d|x) = N(0, 1) for every x) and ignored by the decoder;
    z[2] active, z[3] 9 times as active (its posterior mean is 3 times z[2]'s plus a constant)."""
    model = keras_vae.mlp_vae((8, 8, 1), 4, (16,), seed=0)
    layer = model.encoder.get_layer("posterior_params")  # [loc (4), raw_scale (4)]
    kernel, bias = layer.get_weights()
    for d in (0, 1):
        kernel[:, [d, 4 + d]] = 0.0
        bias[[d, 4 + d]] = 0.0, raw_scale(1.0)
    kernel[:, 2] *= 4.0
    kernel[:, 3], bias[3] = 3.0 * kernel[:, 2], 0.5
    layer.set_weights([kernel, bias])
    first = model.decoder.get_layer("hidden_0")  # its kernel's rows 0 ... 3 take z
    kernel, bias = first.get_weights()
    kernel[:2] = 0.0
    first.set_weights([kernel, bias])
    return model


def test_latent_manifold_spans_the_most_active_dims(tmp_path, monkeypatch, digits, late_active_model):
    model = late_active_model
    report = evaluation.posterior_collapse_report(model, digits)
    means = model.encoder(digits).numpy()[:, :4]  # by hand: the posterior means
    np.testing.assert_allclose(means[:, 3], 3 * means[:, 2] + 0.5, rtol=1e-4, atol=1e-4)
    activity = means.var(axis=0)
    assert activity[0] == activity[1] == 0.0 and activity[2] > 0.05
    assert report["collapsed_dims"] == [0, 1]

    calls = decode_spy(monkeypatch, model)
    texts = axis_label_spy(monkeypatch)
    read_png(plots.latent_manifold(model, tmp_path / "manifold.png", num=5, report=report))
    # z[3] (most active) along the columns, z[2] up the rows, z[0] = z[1] = 0.
    quantiles = norm.ppf(np.linspace(0.05, 0.95, 5))
    expected = np.zeros((5, 5, 4))
    expected[..., 3], expected[..., 2] = quantiles[None, :], quantiles[::-1, None]
    np.testing.assert_allclose(calls[0], expected.reshape(25, 4), atol=1e-5)
    assert texts == {"x": ["z[3]"], "y": ["z[2]"]}
    # The decoded grid changes along both axes; over z[0] and z[1] (the old default) it is one image repeated.
    images = model.decode(calls[0]).mean().numpy().reshape(5, 5, 64)
    assert np.abs(np.diff(images, axis=1)).max(axis=-1).min() > 1e-3  # from each column to the next
    assert np.abs(np.diff(images, axis=0)).max(axis=-1).min() > 1e-3  # from each row to the next
    flat = model.decode(plots.manifold_latents(4, 5, dims=(0, 1))).mean().numpy()
    np.testing.assert_allclose(flat, np.broadcast_to(flat[:1], flat.shape), atol=1e-6)

    # `dims` overrides the report.
    plots.latent_manifold(model, tmp_path / "chosen.png", num=5, dims=(1, 2), report=report)
    assert texts == {"x": ["z[3]", "z[1]"], "y": ["z[2]", "z[2]"]}


def test_most_active_dims_from_a_report():
    report = {"activity_per_dim": [0.0, 0.0, 0.5, 0.5, 0.2, 0.5], "kl_per_dim": [0.0, 0.0, 1.0, 2.0, 3.0, 2.0]}
    # Activity first; the tie of z[2], z[3] and z[5] goes to the larger KL, then (z[3], z[5]) to the lower index.
    assert plots.most_active_dims(report) == [3, 5]
    assert plots.most_active_dims(report, 6) == [3, 5, 2, 4, 0, 1]
    with pytest.raises(ValueError, match="Expected a posterior_collapse_report with `activity_per_dim`"):
        plots.most_active_dims({"activity_per_dim": [1.0, 2.0]})


@pytest.mark.parametrize("latent_dim, kwargs, fragment", [
    (2, {"num": 1}, "`num` must be an integer >= 2"),
    (3, {}, "Choose the manifold's dimensions of the 3: pass `dims`"),
    (3, {"dims": (0, 3)}, r"`dims` must be 2 different latent dimensions in \[0, 3\)"),
    (3, {"report": {"activity_per_dim": [1.0, 2.0], "kl_per_dim": [1.0, 1.0]}},
     r"`report` must be a posterior_collapse_report of this model: one activity per latent dimension \(3\)"),
    (2, {"label": 1}, "`label` is for a conditional VAE"),
])
def test_latent_manifold_errors(tmp_path, latent_dim, kwargs, fragment):
    model = keras_vae.mlp_vae((8, 8, 1), latent_dim, (16,), seed=0)
    with pytest.raises(ValueError, match=fragment):
        plots.latent_manifold(model, tmp_path / "m.png", **kwargs)
    assert not (tmp_path / "m.png").exists()


def scatter_spy(monkeypatch):
    """Record the points of every `Axes.scatter` call."""
    points = []
    scatter = matplotlib.axes.Axes.scatter

    def spy(self, x, y, *args, **kwargs):
        points.append(np.stack([x, y], axis=1))
        return scatter(self, x, y, *args, **kwargs)

    monkeypatch.setattr(matplotlib.axes.Axes, "scatter", spy)
    return points


@pytest.mark.parametrize("latent_dim", [2, 5])
def test_latent_scatter_correctness(tmp_path, monkeypatch, digits, latent_dim):
    model = keras_vae.mlp_vae((8, 8, 1), latent_dim, (16,), seed=0)
    x, labels = digits[:60], np.arange(60) % 4
    points = scatter_spy(monkeypatch)
    pixels = read_png(plots.latent_scatter(model, x, labels, tmp_path / "scatter.png", batch_size=25))
    assert pixels.shape[1] > 400
    assert len(points) == 4  # one call (and legend entry) per class
    means = model.encode(x).mean().numpy()
    if latent_dim == 2:
        expected = means
    else:  # first two principal components; each is defined up to its sign
        centred = means - means.mean(axis=0)
        _, _, vt = np.linalg.svd(centred)
        expected = centred @ vt[:2].T
    drawn = np.concatenate([points[c] for c in range(4)])
    expected = np.concatenate([expected[labels == c] for c in range(4)])
    np.testing.assert_allclose(np.abs(drawn), np.abs(expected), atol=1e-4)


def test_latent_scatter_continuous_labels_and_errors(tmp_path, digits):
    model = keras_vae.mlp_vae((8, 8, 1), 3, (16,), seed=0)
    read_png(plots.latent_scatter(model, digits[:30], np.linspace(0, 1, 30), tmp_path / "colourbar.png"))
    with pytest.raises(ValueError, match=r"one label per example, shape \(30,\)"):
        plots.latent_scatter(model, digits[:30], np.zeros(29), tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()


def test_traversal_latents_correctness():
    mean = np.array([0.5, -1.0, 2.0], np.float32)
    z = plots.traversal_latents(mean, [2, 0], num=5, span=2.0).reshape(2, 5, 3)
    np.testing.assert_allclose(z[0, :, 2], 2.0 + np.linspace(-2, 2, 5))
    np.testing.assert_allclose(z[0, :, :2], np.broadcast_to(mean[:2], (5, 2)))
    np.testing.assert_allclose(z[1, :, 0], 0.5 + np.linspace(-2, 2, 5))
    np.testing.assert_allclose(z[1, :, 1:], np.broadcast_to(mean[1:], (5, 2)))


def test_latent_traversals_shape(tmp_path, monkeypatch, digits):
    model = keras_vae.mlp_vae((8, 8, 1), 12, (16,), seed=0)
    x = digits[:50]
    calls = decode_spy(monkeypatch, model)
    pixels = read_png(plots.latent_traversals(model, x, tmp_path / "default.png", num=7, index=3))
    means = model.encode(x).mean().numpy()
    most_active = np.argsort(-means.var(axis=0))[:10]  # default: top 10 of 12 by activity
    # Row i: 7 copies of E[z|x_3], dim most_active[i] moved over -3 ... 3 (the default span) around its value.
    expected = np.tile(means[3], (10, 7, 1))
    for row, dim in enumerate(most_active):
        expected[row, :, dim] += np.linspace(-3.0, 3.0, 7)
    np.testing.assert_allclose(calls[-1], expected.reshape(70, 12), atol=1e-5)
    assert pixels.shape[0] > pixels.shape[1]  # 10 rows of 7

    pixels = read_png(plots.latent_traversals(model, x, tmp_path / "chosen.png", dims=[4, 1], num=9, span=1.0))
    assert calls[-1].shape == (2 * 9, 12)
    np.testing.assert_allclose(calls[-1][[0, 8], 4], means[0, 4] + np.array([-1.0, 1.0]), atol=1e-5)
    assert pixels.shape[1] > 2 * pixels.shape[0]  # 2 rows of 9


@pytest.mark.parametrize("kwargs, fragment", [
    ({"dims": [12]}, r"`dims` must be latent dimensions in \[0, 12\)"),
    ({"dims": []}, "`dims` must be latent dimensions"),
    ({"num": 1}, "`num` must be an integer >= 2"),
    ({"span": 0.0}, "`span` must be positive"),
    ({"index": 50}, r"`index` must be in \[0, 50\)"),
])
def test_latent_traversals_errors(tmp_path, digits, kwargs, fragment):
    model = keras_vae.mlp_vae((8, 8, 1), 12, (16,), seed=0)
    with pytest.raises(ValueError, match=fragment):
        plots.latent_traversals(model, digits[:50], tmp_path / "x.png", **kwargs)
    assert not (tmp_path / "x.png").exists()


def test_learning_curves_from_fit_history_and_csv_rows(tmp_path):
    import csv

    history = {"loss": [30.0, 28.0, 27.0], "elbo": [-30.0, -28.0, -27.0], "kl": [3.0, 4.0, 4.5],
               "reconstruction": [-27.0, -24.0, -22.5], "val_elbo": [-31.0, -29.0, -28.0]}
    from_fit = read_png(plots.learning_curves(history, tmp_path / "fit.png"))
    assert from_fit.shape[1] > 2.5 * from_fit.shape[0]  # three panels side by side

    with open(tmp_path / "history.csv", "w", newline="") as f:  # as CSVLogger writes it, one gap
        writer = csv.DictWriter(f, ["epoch", "elbo", "kl", "val_elbo"])
        writer.writeheader()
        writer.writerows([{"epoch": 0, "elbo": -30.0, "kl": 3.0, "val_elbo": ""},
                          {"epoch": 1, "elbo": -28.0, "kl": 4.0, "val_elbo": -29.0}])
    with open(tmp_path / "history.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    from_csv = read_png(plots.learning_curves(rows, tmp_path / "csv.png"))
    assert 1.5 * from_csv.shape[0] < from_csv.shape[1] < 2.5 * from_csv.shape[0]  # elbo and kl only

    # A run trained on the IWAE bound logs it: its own panel.
    iwae = read_png(plots.learning_curves({**history, "iwae_bound": [-26.0, -25.0, -24.5]}, tmp_path / "iwae.png"))
    assert iwae.shape[1] > 4 * iwae.shape[0]  # four panels (three: 3.5 times as wide as high)

    with pytest.raises(ValueError, match="none of the terms to plot"):
        plots.learning_curves({"loss": [1.0]}, tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()


def test_learning_curves_rejects_non_numbers(tmp_path):
    with pytest.raises(ValueError, match=r"numbers in the history's 'kl' column. Received 'x' in row 1"):
        plots.learning_curves([{"epoch": "0", "kl": "1.5"}, {"epoch": "1", "kl": "x"}], tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()


# ---------------------------------------------------------------- write_pictures


def test_write_pictures_unconditional(tmp_path, monkeypatch, digits, late_active_model):
    model = late_active_model
    calls = decode_spy(monkeypatch, model)
    texts = axis_label_spy(monkeypatch)
    rows = [{"epoch": "0", "elbo": "-40.5", "kl": "2.0"}, {"epoch": "1", "elbo": "-38.0", "kl": "2.5"}]
    names, report = plots.write_pictures(model, digits[:100], tmp_path, labels=np.arange(100) % 10,
                                         history_rows=rows, num_samples=16, seed=2, about={"run": "test"})
    assert names == sorted(os.listdir(tmp_path)) == ["collapse.json", "latent_manifold.png", "latent_scatter.png",
                                                     "latent_traversals.png", "learning_curves.png",
                                                     "reconstructions.png", "samples.png"]
    for name in names[1:]:
        assert read_png(tmp_path / name).std() > 0.01, name
    expected = evaluation.posterior_collapse_report(model, digits[:100])
    assert json.loads((tmp_path / "collapse.json").read_text()) == {"run": "test", **expected} == {"run": "test",
                                                                                                 **report}
    # The manifold (the 15 x 15 grid) spans z[3] and z[2], the two most active dimensions, and the traversals'
    # rows follow the same order of activity: z[3], z[2], then the collapsed z[0], z[1].
    (manifold,) = [z for z in calls if len(z) == 225]
    assert np.ptp(manifold, axis=0).tolist() == pytest.approx([0.0, 0.0, 2 * norm.ppf(0.95), 2 * norm.ppf(0.95)])
    assert texts["x"][:1] == ["z[3]"] and texts["y"][:1] == ["z[2]"]
    (traversal,) = [z for z in calls if len(z) == 4 * 9]
    moved = [int(np.argmax(np.ptp(row, axis=0))) for row in traversal.reshape(4, 9, 4)]
    assert moved == [3, 2, 0, 1]
    assert all(y is None for y in calls.labels)


def test_write_pictures_without_labels_or_history(tmp_path):
    model = keras_vae.mlp_vae((8, 8, 1), 2, (16,), seed=0)
    names, _ = plots.write_pictures(model, keras_vae.data.load("digits").test[:50], tmp_path, num_samples=4)
    assert names == ["collapse.json", "latent_manifold.png", "latent_traversals.png", "reconstructions.png",
                     "samples.png"]


@pytest.mark.parametrize("kwargs, fragment", [
    ({"labels": np.zeros(49, np.int64)}, r"one label per example, shape \(50,\). Received shape \(49,\)"),
    ({"label": 3}, "`label` is for a conditional VAE; this one has no classes"),
])
def test_write_pictures_bad_input_writes_nothing(tmp_path, digits, kwargs, fragment):
    model = keras_vae.mlp_vae((8, 8, 1), 2, (16,), seed=0)
    with pytest.raises(ValueError, match=fragment):
        plots.write_pictures(model, digits[:50], tmp_path, **kwargs)
    assert os.listdir(tmp_path) == []


# ---------------------------------------------------------------- conditional models


@pytest.fixture(scope="module")
def conditional():
    """A conditional VAE (10 classes, latent_dim 3) and digits with their labels."""
    splits = keras_vae.data.load("digits")
    model = keras_vae.mlp_vae((8, 8, 1), 3, (16,), num_classes=10, seed=0)
    return model, splits.test[:60], splits.test_labels[:60]


def conditional_means(model, x, labels):
    """E[z|x, y] by hand, straight from the model's encoder."""
    return model.encode(tf.constant(x), labels).mean().numpy()


def test_conditional_samples_one_row_per_class(tmp_path, monkeypatch, conditional):
    model = conditional[0]
    _, expected_z = model.sample(3, seed=1, return_latents=True, labels=5)  # z ~ p(z) does not depend on the class
    calls = decode_spy(monkeypatch, model)
    pixels = read_png(plots.samples(model, tmp_path / "samples.png", num=25, seed=1))
    # ceil(25 / 10) = 3 per class: row c decodes the same 3 draws of z with class c.
    z = calls[-1].reshape(10, 3, 3)
    for row in z:
        np.testing.assert_allclose(row, expected_z, atol=1e-6)
    np.testing.assert_array_equal(calls.labels[-1], np.repeat(np.arange(10), 3))
    assert pixels.shape[0] > 2 * pixels.shape[1]  # 10 rows of 3: tall

    pixels = read_png(plots.samples(model, tmp_path / "fours.png", num=9, seed=1, label=4))
    assert calls[-1].shape == (9, 3)
    np.testing.assert_array_equal(calls.labels[-1], np.full(9, 4))
    assert 0.7 < pixels.shape[0] / pixels.shape[1] < 1.3  # 3 x 3


def test_conditional_reconstructions_use_each_examples_class(tmp_path, monkeypatch, conditional):
    model, x, labels = conditional
    inputs = []
    predict = model.predict
    monkeypatch.setattr(model, "predict", lambda data, **kwargs: inputs.append(data) or predict(data, **kwargs))
    read_png(plots.reconstructions(model, x, tmp_path / "reconstructions.png", num=5, labels=labels))
    (data,) = inputs
    np.testing.assert_array_equal(data[0], x[:5])
    np.testing.assert_array_equal(data[1], labels[:5])


def test_conditional_manifold_of_one_class(tmp_path, monkeypatch, conditional):
    model = conditional[0]
    calls = decode_spy(monkeypatch, model)
    read_png(plots.latent_manifold(model, tmp_path / "manifold.png", num=4, dims=(2, 0), label=7))
    np.testing.assert_array_equal(calls.labels[0], np.full(16, 7))
    with pytest.raises(ValueError, match=r"draws the latent grid of one class: pass `label`, in \[0, 10\)"):
        plots.latent_manifold(model, tmp_path / "x.png", dims=(0, 1))
    with pytest.raises(ValueError, match=r"`label` must be a class in \[0, 10\). Received: label=10"):
        plots.latent_manifold(model, tmp_path / "x.png", dims=(0, 1), label=10)
    assert not (tmp_path / "x.png").exists()


def test_conditional_traversals_and_scatter_encode_with_labels(tmp_path, monkeypatch, conditional):
    model, x, labels = conditional
    means = conditional_means(model, x, labels)
    calls = decode_spy(monkeypatch, model)
    read_png(plots.latent_traversals(model, x, tmp_path / "traversals.png", dims=[1], num=3, index=4,
                                     labels=labels))
    # E[z|x_4, y_4] with z[1] moved by -3, 0, +3, decoded with class y_4.
    expected = np.tile(means[4], (3, 1))
    expected[:, 1] += [-3.0, 0.0, 3.0]
    np.testing.assert_allclose(calls[-1], expected, atol=1e-5)
    np.testing.assert_array_equal(calls.labels[-1], np.full(3, labels[4]))

    points = scatter_spy(monkeypatch)
    read_png(plots.latent_scatter(model, x, labels, tmp_path / "scatter.png"))
    centred = means - means.mean(axis=0)
    expected = centred @ np.linalg.svd(centred)[2][:2].T  # first two principal components, each up to its sign
    drawn = np.concatenate(points)
    expected = np.concatenate([expected[labels == c] for c in np.unique(labels)])
    np.testing.assert_allclose(np.abs(drawn), np.abs(expected), atol=1e-4)


def test_conditional_write_pictures(tmp_path, monkeypatch, conditional):
    model, x, labels = conditional
    calls = decode_spy(monkeypatch, model)
    names, report = plots.write_pictures(model, x, tmp_path, labels=labels, num_samples=20, seed=0)
    assert names == sorted(os.listdir(tmp_path)) == ["collapse.json", "latent_manifold.png", "latent_scatter.png",
                                                     "latent_traversals.png", "reconstructions.png", "samples.png"]
    for name in names[1:]:
        assert read_png(tmp_path / name).std() > 0.01, name
    # collapse.json: the report of E[z|x, y], by hand from the encoder.
    saved = json.loads((tmp_path / "collapse.json").read_text())
    assert saved == report
    means = conditional_means(model, x, labels)
    np.testing.assert_allclose(saved["activity_per_dim"], means.var(axis=0), rtol=1e-4, atol=1e-7)
    # The manifold is of the class of x[0], the example the traversals move.
    (manifold,) = [i for i, z in enumerate(calls) if len(z) == 225]
    np.testing.assert_array_equal(calls.labels[manifold], np.full(225, labels[0]))
    # With `label`, the samples and the manifold are of that class.
    (tmp_path / "threes").mkdir()
    calls.clear()
    calls.labels.clear()
    plots.write_pictures(model, x, tmp_path / "threes", labels=labels, num_samples=4, label=3)
    decoded = {len(z): y.tolist() for z, y in zip(calls, calls.labels)}
    assert decoded[4] == [3] * 4 and decoded[225] == [3] * 225


@pytest.mark.parametrize("labels, fragment", [
    (None, r"A conditional VAE \(10 classes\) needs `labels`: one class in \[0, 10\) per example of x"),
    (np.full(60, 10), r"Expected labels y of shape \(60,\), integers in \[0, 10\)"),
    (np.zeros(59, np.int64), r"one label per example, shape \(60,\). Received shape \(59,\)"),
])
def test_conditional_write_pictures_bad_labels_write_nothing(tmp_path, conditional, labels, fragment):
    model, x, _ = conditional
    with pytest.raises(ValueError, match=fragment):
        plots.write_pictures(model, x, tmp_path, labels=labels)
    assert os.listdir(tmp_path) == []
