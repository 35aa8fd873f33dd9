"""PNG figures: image grids of samples and reconstructions, the latent space, and learning curves.

Every function writes one PNG and returns its path. Figures are drawn with matplotlib's
object API (`matplotlib.figure.Figure`, no pyplot): no display is needed and importing or
calling this module leaves matplotlib's backend and pyplot state alone. Images may be given
as `[N, H, W]`, `[N, H, W, 1]`, `[N, H, W, 3]` or flat `[N, D]` with D a square (gray) or
three times a square (RGB); values are clipped to [0, 1].
"""

import json
import math
import os

import matplotlib
import numpy as np
import tensorflow_probability as tfp
from matplotlib.figure import Figure

from keras_vae import checks, evaluation, runs

MAX_TRAVERSAL_DIMS = 10


def as_images(images):
    """`images` as float32 `[N, H, W]` (gray) or `[N, H, W, 3]` (RGB) in [0, 1].

    Flat `[N, D]` examples become squares: `D = S^2` gives S x S gray images, `D = 3 S^2`
    S x S RGB ones (channels last), for S >= 2.
    """
    images = np.asarray(images, np.float32)
    if images.ndim == 2:
        side = math.isqrt(images.shape[1])
        rgb_side = math.isqrt(images.shape[1] // 3)
        if side * side == images.shape[1] and side > 1:
            images = images.reshape(-1, side, side)
        elif 3 * rgb_side * rgb_side == images.shape[1] and rgb_side > 1:
            images = images.reshape(-1, rgb_side, rgb_side, 3)
    if images.ndim == 4 and images.shape[-1] == 1:
        images = images[..., 0]
    if not (images.ndim == 3 or (images.ndim == 4 and images.shape[-1] == 3)) or 0 in images.shape[1:]:
        raise ValueError(
            "Expected images of shape [N, H, W], [N, H, W, 1], [N, H, W, 3] or flat [N, D] with D a square "
            f"(or 3 x a square). Received shape {images.shape}"
        )
    return np.clip(images, 0.0, 1.0)


def tile_images(images, columns=None, pad=1, fill=1.0):
    """One array holding `images` (see `as_images`) in a grid, row by row, `pad` pixels of `fill` apart.

    Returns `[rows * (H + pad) - pad, columns * (W + pad) - pad]` (gray) or the same with 3
    channels (RGB); empty cells at the end are `fill`.
    """
    images = as_images(images)
    n, height, width = images.shape[:3]
    columns = min(columns or math.ceil(math.sqrt(n)), max(n, 1))
    rows = max(math.ceil(n / columns), 1)
    tiled = np.full((rows * (height + pad) - pad, columns * (width + pad) - pad) + images.shape[3:], fill,
                    np.float32)
    for i, image in enumerate(images):
        top, left = (i // columns) * (height + pad), (i % columns) * (width + pad)
        tiled[top : top + height, left : left + width] = image
    return tiled


def image_grid(images, path, title=None, columns=None):
    """Save images (see `as_images`) as one PNG grid, `columns` wide (default: about square)."""
    images = as_images(images)
    columns = min(columns or math.ceil(math.sqrt(len(images))), max(len(images), 1))
    fig, ax = _tiled_figure(tile_images(images, columns), columns)
    ax.axis("off")
    return _save(fig, path, title)


def reconstructions(model, x, path, num=8):
    """Save `num` examples (top row) above their reconstruction means (bottom row)."""
    x = np.asarray(x[:num])
    pairs = np.concatenate([as_images(x), as_images(model.predict(x, verbose=0))])
    return image_grid(pairs, path, title="data (top) and reconstructions", columns=len(x))


def samples(model, path, num=64, seed=0):
    """Save `num` draws from the model (means of p(x|z), z ~ p(z))."""
    return image_grid(model.sample(num, seed=seed).numpy(), path, title="samples")


def manifold_latents(latent_dim, num=15):
    """The `[num * num, latent_dim]` grid of z that `latent_manifold` decodes, row by row.

    ```none
    q_i   = Phi^-1(p_i),   p_i = 0.05, ..., 0.95 (num values evenly spaced; Phi: the N(0, 1) CDF)
    z_rc  = (q_c, q_{num-1-r}, 0, ..., 0)     row r, column c: z[0] grows to the right, z[1] upwards
    ```

    With `latent_dim=1` there is one row (`[num, 1]`).
    """
    latent_dim = checks.check_positive_int("latent_dim", latent_dim)
    num = checks.check_int_at_least("num", num, 2)
    quantiles = tfp.distributions.Normal(0.0, 1.0).quantile(np.linspace(0.05, 0.95, num, dtype=np.float32)).numpy()
    if latent_dim == 1:
        return quantiles[:, None]
    z = np.zeros((num, num, latent_dim), np.float32)
    z[..., 0] = quantiles[None, :]
    z[..., 1] = quantiles[::-1, None]
    return z.reshape(num * num, latent_dim)


def latent_manifold(model, path, num=15):
    """Save the decoded means of a `num` x `num` grid of z over the prior's quantiles.

    z[0] varies along the columns and z[1] up the rows over the N(0, 1) quantiles of
    0.05 ... 0.95 (Kingma & Welling, 2014, figure 4); see `manifold_latents`. For
    `latent_dim > 2` the other dimensions are held at 0, the prior mean, so the figure is
    one 2-D slice through z-space. The quantiles are those of the standard normal prior.
    """
    z = manifold_latents(model.latent_dim, num)
    images = as_images(model.decode(z).mean().numpy())
    rows = len(z) // num
    fig, ax = _tiled_figure(tile_images(images, num), num)
    height, width = images.shape[1:3]
    quantiles = z[:num, 0] if model.latent_dim > 1 else z[:, 0]
    ax.set_xticks((np.arange(num) * (width + 1) + (width - 1) / 2)[::2], [f"{q:.2g}" for q in quantiles[::2]])
    ax.set_xlabel("z[0]")
    if rows > 1:
        ax.set_yticks((np.arange(num) * (height + 1) + (height - 1) / 2)[::2],
                      [f"{q:.2g}" for q in quantiles[::-1][::2]])
        ax.set_ylabel("z[1]")
    else:
        ax.set_yticks([])
    rest = " (other dimensions at 0)" if model.latent_dim > 2 else ""
    return _save(fig, path, f"decoded latent grid{rest}")


def latent_scatter(model, x, labels, path, batch_size=500):
    """Save the posterior means E[z|x] of x as points coloured by label.

    2-D latents are drawn as they are; larger ones are projected on their first two
    principal components (axes labelled with the share of variance each explains), and a
    1-D latent is drawn against the label. Up to 20 distinct integer labels get a legend,
    other labels a colour bar.
    """
    labels = np.asarray(labels)
    if labels.shape != (len(x),):
        raise ValueError(f"Expected one label per example, shape ({len(x)},). Received shape {labels.shape}")
    means = evaluation.posterior_means(model, x, batch_size)
    if means.shape[1] == 2:
        points, axis_labels = means, ("z[0]", "z[1]")
    elif means.shape[1] == 1:
        points, axis_labels = np.stack([means[:, 0], labels], axis=1), ("z[0]", "label")
    else:
        centred = means - means.mean(axis=0)
        u, s, _ = np.linalg.svd(centred, full_matrices=False)
        points = u[:, :2] * s[:2]
        share = s**2 / max(float(np.sum(s**2)), 1e-12)
        axis_labels = tuple(f"PC{i + 1} of E[z|x] ({100 * share[i]:.0f}% of variance)" for i in range(2))
    fig = Figure(figsize=(6, 5))
    ax = fig.subplots()
    classes = np.unique(labels)
    if np.issubdtype(labels.dtype, np.integer) and len(classes) <= 20:
        colours = matplotlib.colormaps["tab10" if len(classes) <= 10 else "tab20"]
        for i, label in enumerate(classes):
            chosen = labels == label
            ax.scatter(points[chosen, 0], points[chosen, 1], s=6, alpha=0.7, color=colours(i), label=str(label))
        ax.legend(title="label", markerscale=3, fontsize="small", loc="center left", bbox_to_anchor=(1, 0.5))
    else:
        drawn = ax.scatter(points[:, 0], points[:, 1], s=6, alpha=0.7, c=labels, cmap="viridis")
        fig.colorbar(drawn, ax=ax, label="label")
    ax.set_xlabel(axis_labels[0])
    ax.set_ylabel(axis_labels[1])
    ax.grid(alpha=0.3)
    return _save(fig, path, "posterior means by label")


def traversal_latents(z_mean, dims, num=9, span=3.0):
    """`[len(dims) * num, L]` copies of `z_mean` ([L]); in row i, dim `dims[i]` runs over
    `z_mean[dims[i]] + linspace(-span, span, num)`."""
    z_mean = np.asarray(z_mean, np.float32)
    offsets = np.linspace(-span, span, num, dtype=np.float32)
    z = np.tile(z_mean, (len(dims), num, 1))
    for row, dim in enumerate(dims):
        z[row, :, dim] += offsets
    return z.reshape(len(dims) * num, len(z_mean))


def latent_traversals(model, x, path, dims=None, num=9, span=3.0, index=0, batch_size=500):
    """Save latent traversals of one input: one row per latent dimension.

    Row d decodes z = E[z|x_index] with z[d] moved over `-span ... +span` (in units of the
    prior's standard deviation) around its posterior mean; the middle column (odd `num`)
    is the reconstruction. `dims` defaults to the 10 (or all, if fewer) dimensions whose
    E[z_d|x] varies most over x (the activity of `evaluation.active_units`), most active first.
    """
    latent_dim = model.latent_dim
    num = checks.check_int_at_least("num", num, 2)
    if not span > 0:
        raise ValueError(f"`span` must be positive. Received: span={span!r}")
    if not 0 <= index < len(x):
        raise ValueError(f"`index` must be in [0, {len(x)}). Received: index={index!r}")
    means = evaluation.posterior_means(model, x, batch_size)
    if dims is None:
        dims = np.argsort(-np.var(means, axis=0), kind="stable")[:MAX_TRAVERSAL_DIMS].tolist()
    dims = list(dims)
    if not dims or any(not isinstance(d, (int, np.integer)) or not 0 <= d < latent_dim for d in dims):
        raise ValueError(f"`dims` must be latent dimensions in [0, {latent_dim}). Received: dims={dims!r}")
    images = as_images(model.decode(traversal_latents(means[index], dims, num, span)).mean().numpy())
    fig, ax = _tiled_figure(tile_images(images, num), num)
    height, width = images.shape[1:3]
    ax.set_yticks(np.arange(len(dims)) * (height + 1) + (height - 1) / 2, [f"z[{d}]" for d in dims])
    ax.set_xticks([(width - 1) / 2, (num - 1) * (width + 1) + (width - 1) / 2], [f"-{span:g}", f"+{span:g}"])
    ax.set_xlabel("offset from the posterior mean")
    return _save(fig, path, "latent traversals")


def learning_curves(history, path, terms=("elbo", "reconstruction", "kl")):
    """Plot per-epoch `terms` (and their `val_` versions) in one panel each.

    `history` is a Keras `History.history` dict of lists, or the rows of `history.csv`
    (`csv.DictReader` dicts of strings; their `epoch` column, counted from 0, sets the x
    axis). Terms missing from the history are left out; empty cells are gaps.
    """
    if isinstance(history, dict):
        columns = {key: _floats(key, values) for key, values in history.items()}
    else:
        rows = list(history)
        columns = {key: _floats(key, [row.get(key) for row in rows]) for key in (rows[0] if rows else {})}
    terms = [term for term in terms if term in columns or f"val_{term}" in columns]
    if not terms:
        raise ValueError(f"The history has none of the terms to plot. Received keys: {sorted(columns)}")
    length = max(len(values) for values in columns.values())
    epochs = columns["epoch"] + 1 if "epoch" in columns else np.arange(1, length + 1)
    fig = Figure(figsize=(4 * len(terms), 3.5))
    axes = fig.subplots(1, len(terms), squeeze=False)
    for ax, term in zip(axes.flat, terms):
        for key in (term, f"val_{term}"):
            if key in columns:
                ax.plot(epochs[: len(columns[key])], columns[key], marker="." if length < 30 else None, label=key)
        ax.set_title(term)
        ax.set_xlabel("epoch")
        ax.set_ylabel("nats per example")
        ax.legend()
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return _save(fig, path)


def _floats(key, values):
    """A float array of the `values` of column `key`; None and empty strings become NaN."""
    numbers = []
    for i, value in enumerate(values):
        try:
            numbers.append(np.nan if value in (None, "") else float(value))
        except (TypeError, ValueError):
            raise ValueError(f"Expected numbers in the history's {key!r} column. Received {value!r} in row {i}"
                             ) from None
    return np.array(numbers, np.float64)


def _tiled_figure(tiled, columns):
    """A figure showing one tiled image, about an inch wide per grid column."""
    width = max(columns, 2)
    fig = Figure(figsize=(width, width * tiled.shape[0] / tiled.shape[1]))
    ax = fig.subplots()
    ax.imshow(tiled, cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
    return fig, ax


def _save(fig, path, title=None):
    if title:
        fig.axes[0].set_title(title)
    with runs.atomic_path(path) as temporary:  # a reader sees the old picture or the new one
        fig.savefig(temporary, dpi=100, bbox_inches="tight", format="png")  # a pyplot-free Figure: nothing to close
    return path


def write_pictures(model, x, folder, labels=None, history_rows=None, num_samples=64, seed=0, about=None):
    """Every picture of a trained model, and `collapse.json`, written into `folder`.

    `samples.png`, `reconstructions.png` (of x), `latent_manifold.png`,
    `latent_traversals.png`, `latent_scatter.png` (if `labels`), `learning_curves.png`
    (if `history_rows`, the rows of history.csv) and `collapse.json`
    (`evaluation.posterior_collapse_report` on x, after the entries of `about`).
    Returns the names written and the collapse report.
    """
    samples(model, os.path.join(folder, "samples.png"), num=num_samples, seed=seed)
    reconstructions(model, x, os.path.join(folder, "reconstructions.png"))
    latent_manifold(model, os.path.join(folder, "latent_manifold.png"))
    latent_traversals(model, x, os.path.join(folder, "latent_traversals.png"))
    if labels is not None:
        latent_scatter(model, x, labels, os.path.join(folder, "latent_scatter.png"))
    if history_rows:
        try:
            learning_curves(history_rows, os.path.join(folder, "learning_curves.png"))
        except ValueError as error:
            raise ValueError(f"history.csv of the run: {error}") from error
    report = evaluation.posterior_collapse_report(model, x)
    runs.write_text(os.path.join(folder, "collapse.json"), json.dumps({**(about or {}), **report}, indent=2))
    names = ("samples.png", "reconstructions.png", "latent_manifold.png", "latent_traversals.png",
             "latent_scatter.png", "learning_curves.png", "collapse.json")
    return sorted(name for name in names if os.path.exists(os.path.join(folder, name))), report
