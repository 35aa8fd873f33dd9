"""PNG figures are real images with the content laid out as asked."""

import matplotlib.axes
import matplotlib.image
import numpy as np
import pytest

import keras_vae
from keras_vae import plots


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


def decode_spy(monkeypatch, model):
    """Record every z that `model.decode` is called with."""
    calls = []
    decode = model.decode

    def spy(z):
        calls.append(np.asarray(z))
        return decode(z)

    monkeypatch.setattr(model, "decode", spy)
    return calls


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
    from scipy.stats import norm

    z = plots.manifold_latents(4, num=5).reshape(5, 5, 4)
    quantiles = norm.ppf(np.linspace(0.05, 0.95, 5))
    np.testing.assert_allclose(z[0, :, 0], quantiles, atol=1e-5)  # z[0] grows to the right
    np.testing.assert_allclose(z[:, 0, 1], quantiles[::-1], atol=1e-5)  # z[1] grows upwards
    np.testing.assert_array_equal(z[..., 2:], 0.0)
    assert plots.manifold_latents(1, num=5).shape == (5, 1)


@pytest.mark.parametrize("input_shape, latent_dim", [((8, 8, 1), 2), ((64,), 4), ((8, 8, 3), 3)])
def test_latent_manifold_decodes_the_grid(tmp_path, monkeypatch, input_shape, latent_dim):
    model = keras_vae.mlp_vae(input_shape, latent_dim, (16,), seed=0)
    calls = decode_spy(monkeypatch, model)
    pixels = read_png(plots.latent_manifold(model, tmp_path / "manifold.png", num=6))
    assert len(calls) == 1
    # 36 images: row r, column c decodes z = (q_c, q_{5-r}, 0, ...), q the N(0, 1) quantiles at 0.05 ... 0.95.
    from scipy.stats import norm

    quantiles = norm.ppf(np.linspace(0.05, 0.95, 6))
    expected = np.zeros((6, 6, latent_dim))
    expected[..., 0], expected[..., 1] = quantiles[None, :], quantiles[::-1, None]
    np.testing.assert_allclose(calls[0], expected.reshape(36, latent_dim), atol=1e-5)
    height, width = pixels.shape[:2]
    assert 500 < width < 800 and 0.8 < height / width < 1.3  # 6 x 6 square images, about 100 px each


def test_latent_manifold_errors(tmp_path):
    model = keras_vae.mlp_vae((8, 8, 1), 2, (16,), seed=0)
    with pytest.raises(ValueError, match="`num` must be an integer >= 2"):
        plots.latent_manifold(model, tmp_path / "m.png", num=1)
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

    with pytest.raises(ValueError, match="none of the terms to plot"):
        plots.learning_curves({"loss": [1.0]}, tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()


def test_learning_curves_rejects_non_numbers(tmp_path):
    with pytest.raises(ValueError, match=r"numbers in the history's 'kl' column. Received 'x' in row 1"):
        plots.learning_curves([{"epoch": "0", "kl": "1.5"}, {"epoch": "1", "kl": "x"}], tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()
