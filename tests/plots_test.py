"""PNG figures are real images with the content laid out as asked."""

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
