"""PNG figures: image grids of samples and reconstructions, and learning curves."""

import math

import matplotlib

matplotlib.use("Agg")  # files only, no display needed
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def image_grid(images, path, title=None, columns=None):
    """Save images ([N, H, W] or [N, H, W, 1], values in [0, 1]) as one PNG grid."""
    images = np.asarray(images)
    images = images[..., 0] if images.ndim == 4 and images.shape[-1] == 1 else images
    if images.ndim != 3:
        raise ValueError(f"Expected images of shape [N, H, W] or [N, H, W, 1]. Received shape {images.shape}")
    columns = columns or math.ceil(math.sqrt(len(images)))
    rows = math.ceil(len(images) / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(columns, rows), squeeze=False)
    for ax, image in zip(axes.flat, images):
        ax.imshow(image, cmap="gray", vmin=0.0, vmax=1.0)
    for ax in axes.flat:
        ax.axis("off")
    if title:
        fig.suptitle(title)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)


def reconstructions(model, x, path, num=8):
    """Save `num` examples (top row) above their reconstruction means (bottom row)."""
    x = np.asarray(x[:num])
    pairs = np.concatenate([x, model.predict(x, verbose=0)])
    image_grid(pairs, path, title="data (top) and reconstructions", columns=len(x))


def samples(model, path, num=64, seed=0):
    """Save `num` draws from the model (means of p(x|z), z ~ p(z))."""
    image_grid(model.sample(num, seed=seed).numpy(), path, title="samples")


def learning_curves(history, path, keys=("elbo", "val_elbo")):
    """Plot per-epoch metrics from a Keras `History.history` dict (or a history.csv as a dict)."""
    fig, ax = plt.subplots(figsize=(6, 4))
    for key in keys:
        if key in history:
            ax.plot(np.arange(1, len(history[key]) + 1), history[key], label=key)
    ax.set_xlabel("epoch")
    ax.set_ylabel("nats per example")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
