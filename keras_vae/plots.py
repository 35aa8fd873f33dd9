"""PNG figures: image grids of samples and reconstructions, the latent space, and learning curves.

Every function writes one PNG and returns its path. Figures are drawn with matplotlib's
object API (`matplotlib.figure.Figure`, no pyplot): no display is needed and importing or
calling this module leaves matplotlib's backend and pyplot state alone. Images may be given
as `[N, H, W]`, `[N, H, W, 1]`, `[N, H, W, 3]` or flat `[N, D]` with D a square (gray) or
three times a square (RGB); values are clipped to [0, 1].

A conditional model (`model.num_classes` set) is given the classes of x as `labels`, one per
example, and encodes and decodes each example with its own; a picture of one class takes
it as `label`.

A hierarchical model (`keras_vae.hierarchical.is_hierarchical`: z = [z_1, ..., z_n], the
decoder reading z_1 only, p(z_n) = N(0, I) and p(z_l|z_{l+1}) below) is drawn per layer,
its dimensions named by layer ("z_2[7]"): the manifold and the scatter are of the top
layer z_n, the layer the prior starts from and whose posterior summarises x most
coarsely; the traversals move z_1, the layer the decoder reads (see each function).
"""

import json
import math
import os

import matplotlib
import numpy as np
import tensorflow_probability as tfp
from matplotlib.figure import Figure

from keras_vae import checks, evaluation, hierarchical, runs

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


def reconstructions(model, x, path, num=8, labels=None):
    """Save `num` examples (top row) above their reconstruction means (bottom row).

    A conditional model (`model.num_classes` set) encodes and decodes each example with its
    own class from `labels` (one per example of x).
    """
    labels = _condition(model, x, labels)
    x = np.asarray(x[:num])
    inputs = x if labels is None else (x, labels[:num])
    pairs = np.concatenate([as_images(x), as_images(model.predict(inputs, verbose=0))])
    return image_grid(pairs, path, title="data (top) and reconstructions", columns=len(x))


def samples(model, path, num=64, seed=0, label=None):
    """Save `num` draws from the model (means of p(x|z), z ~ p(z)).

    A conditional model draws one row per class, ceil(num / num_classes) samples each, all
    decoding the same ceil(num / num_classes) draws of z: a column shows one z (what the class
    leaves open: slant, thickness, ...) across the classes. With `label` it draws `num`
    samples of that class only.
    """
    label = _check_label(model, label)
    if not _is_conditional(model) or label is not None:
        title = "samples" if label is None else f"samples of class {label}"
        return image_grid(model.sample(num, seed=seed, labels=label).numpy(), path, title=title)
    num = checks.check_positive_int("num", num)
    classes, per_class = model.num_classes, math.ceil(num / model.num_classes)
    _, z = model.sample(per_class, seed=seed, labels=0, return_latents=True)  # z ~ p(z), whatever the class
    z = np.tile(np.asarray(z), (classes, 1))  # row c: the same z, decoded with class c
    images = as_images(model.decode(z, np.repeat(np.arange(classes), per_class)).mean().numpy())
    fig, ax = _tiled_figure(tile_images(images, per_class), per_class)
    height = images.shape[1]
    ax.set_xticks([])
    ax.set_xlabel("one z per column")  # short: the figure is about an inch per column
    ax.set_yticks(np.arange(classes) * (height + 1) + (height - 1) / 2, [str(c) for c in range(classes)])
    ax.set_ylabel("class")
    return _save(fig, path, "samples by class")


def most_active_dims(report, count=2, layer=None):
    """The `count` latent dimensions that an `evaluation.posterior_collapse_report` finds most
    active, most active first.

    Activity is `report["activity_per_dim"]`, Var_x(E[z_d|x]) (Burda et al.'s measure, as in
    `evaluation.active_units`): how far the encoder moves z_d with the input, so the
    dimensions along which decoded images change with the data. Ties (e.g. several
    dimensions at 0) go to the larger `kl_per_dim`, then to the lower index.

    The report of a hierarchical model (`hierarchical.layer_report`, with
    `activity_per_layer`) ranks the units of one stochastic layer, `layer` (from 0, z_1; -1
    for the top), by `activity_per_layer[layer]`, ties to the lower index, and returns their
    indices within that layer.
    """
    if "activity_per_layer" in report:
        return _most_active_units(report, layer, count)
    if layer is not None:
        raise ValueError(f"`layer` is for the per-layer report of a hierarchical model; this report has one activity "
                         f"per latent dimension. Received: layer={layer!r}")
    activity, kl = (np.asarray(report.get(key, ()), np.float64) for key in ("activity_per_dim", "kl_per_dim"))
    if activity.ndim != 1 or kl.shape != activity.shape or not len(activity):
        raise ValueError("Expected a posterior_collapse_report with `activity_per_dim` and `kl_per_dim`, one "
                         f"number per latent dimension each. Received keys {sorted(report)}")
    order = np.lexsort((np.arange(len(activity)), -kl, -activity))  # the last key sorts first
    return [int(d) for d in order[:count]]


def _most_active_units(report, layer, count):
    """The `count` most active units of stochastic layer `layer` of a per-layer report, by index within it."""
    layers = report["activity_per_layer"]
    if isinstance(layer, bool) or not isinstance(layer, (int, np.integer)) or not -len(layers) <= layer < len(layers):
        raise ValueError(f"Pass `layer`, a stochastic layer of the report's {len(layers)} (0 for z_1, -1 for the top). "
                         f"Received: layer={layer!r}")
    activity = np.asarray(layers[layer], np.float64)
    order = np.lexsort((np.arange(len(activity)), -activity))  # the most active first, ties to the lower index
    return [int(d) for d in order[:count]]


def _layer_names(model):
    """For a hierarchical model, `("z_1", ..., "z_n")`; None for any other."""
    if not hierarchical.is_hierarchical(model):
        return None
    return tuple(f"z_{l + 1}" for l in range(len(model.posterior.latent_dims)))


def manifold_latents(latent_dim, num=15, dims=None):
    """The `[num * num, latent_dim]` grid of z that `latent_manifold` decodes, row by row.

    ```none
    q_i   = Phi^-1(p_i),   p_i = 0.05, ..., 0.95 (num values evenly spaced; Phi: the N(0, 1) CDF)
    z_rc  = q_c in z[dims[0]], q_{num-1-r} in z[dims[1]], 0 elsewhere
            row r, column c: z[dims[0]] grows to the right, z[dims[1]] upwards
    ```

    `dims` defaults to (0, 1). With `latent_dim=1` there is one row (`[num, 1]`) over z[0].
    """
    latent_dim = checks.check_positive_int("latent_dim", latent_dim)
    num = checks.check_int_at_least("num", num, 2)
    dims = _check_manifold_dims(range(min(latent_dim, 2)) if dims is None else dims, latent_dim)
    quantiles = tfp.distributions.Normal(0.0, 1.0).quantile(np.linspace(0.05, 0.95, num, dtype=np.float32)).numpy()
    if latent_dim == 1:
        return quantiles[:, None]
    z = np.zeros((num, num, latent_dim), np.float32)
    z[..., dims[0]] = quantiles[None, :]
    z[..., dims[1]] = quantiles[::-1, None]
    return z.reshape(num * num, latent_dim)


def latent_manifold(model, path, num=15, dims=None, report=None, label=None):
    """Save the decoded means of a `num` x `num` grid of z over the prior's quantiles.

    Two latent dimensions vary over the N(0, 1) quantiles of 0.05 ... 0.95 (Kingma &
    Welling, 2014, figure 4), `dims[0]` along the columns and `dims[1]` up the rows, and
    each axis is labelled with its dimension ("z[7]"); see `manifold_latents`. `dims`
    defaults to the two most active dimensions of `report` (an
    `evaluation.posterior_collapse_report`, see `most_active_dims`): z[0] and z[1] may be
    unused by a trained model (collapsed to the prior), and a grid over them shows one image
    repeated. Without `report`, a model with more than two latent dimensions needs `dims`.

    The other dimensions are held at 0, the mean of the N(0, 1) prior, rather than at the
    data's mean of E[z|x]: the figure is then a slice of the generative model p(x|z) through
    the centre of the prior that the grid's quantiles (and `samples`) come from, and the
    same whatever data is at hand. The two differ little after training: the KL term
    penalises m^2 / 2 for each posterior mean m, pulling mean_x E[z|x] towards 0, and a
    collapsed dimension has E[z_d|x] = 0 for every x. (Priors other than N(0, 1) use the
    same reference, as `evaluation.posterior_collapse_report` does.)

    A conditional model decodes every z with class `label`.

    A hierarchical model's grid is over its top layer z_n (the N(0, I) quantiles are those
    of p(z_n), and every z the model generates starts there): `dims` are units of z_n, by
    default the two most active by `report`, a `hierarchical.layer_report` (the per-layer
    `evaluation.posterior_collapse_report` of such a model), the other units at 0, the
    prior's mean. Each point then takes the layers below at the prior's conditional means,
    top-down (`hierarchical.latents_from_top`: z_{n-1} = E[z_{n-1}|z_n], ..., z_1 =
    E[z_1|z_2]), and is decoded from that z_1, so the picture is the generative model's own
    mean path from z_n to x. (Dimensions of z_2 ... z_n set directly in z would change
    nothing: the decoder reads z_1 only; and z_1 held at 0 is not what the prior generates.)
    Axes are named by layer, "z_2[7]".
    """
    names = _layer_names(model)
    latent_dim = model.latent_dim if names is None else model.posterior.latent_dims[-1]  # the grid's
    label = _check_label(model, label)
    if _is_conditional(model) and label is None:
        raise ValueError(f"A conditional VAE ({model.num_classes} classes) draws the latent grid of one class: "
                         f"pass `label`, in [0, {model.num_classes})")
    chosen = dims is None and report is not None
    if chosen and names is not None:
        if list(report.get("latent_dims", ())) != list(model.posterior.latent_dims):
            raise ValueError(f"`report` must be a hierarchical.layer_report of this model (latent_dims "
                             f"{list(model.posterior.latent_dims)}). Received one with latent_dims "
                             f"{report.get('latent_dims')}")
        dims = most_active_dims(report, 2, layer=-1)
    elif chosen:
        if len(report.get("activity_per_dim", ())) != latent_dim:
            raise ValueError(f"`report` must be a posterior_collapse_report of this model: one activity per latent "
                             f"dimension ({latent_dim}). Received {len(report.get('activity_per_dim', ()))}")
        dims = most_active_dims(report, 2)
    elif dims is None:
        if latent_dim > 2:
            where = "latent dimensions" if names is None else f"units of the top layer {names[-1]}"
            raise ValueError(f"Choose the manifold's dimensions of the {latent_dim}: pass `dims` (two {where}) or "
                             "`report` (a posterior_collapse_report, for the two most active)")
        dims = tuple(range(latent_dim))
    dims = _check_manifold_dims(dims, latent_dim)
    z = manifold_latents(latent_dim, num, dims)  # the top layer's, for a hierarchical model
    decoded = z if names is None else hierarchical.latents_from_top(model, z)
    images = as_images(_decode(model, decoded, label).mean().numpy())
    rows = len(z) // num
    fig, ax = _tiled_figure(tile_images(images, num), num)
    height, width = images.shape[1:3]
    quantiles = z[:num, dims[0]]
    ax.set_xticks((np.arange(num) * (width + 1) + (width - 1) / 2)[::2], [f"{q:.2g}" for q in quantiles[::2]])
    name = "z" if names is None else names[-1]
    ax.set_xlabel(f"{name}[{dims[0]}]")
    if rows > 1:
        ax.set_yticks((np.arange(num) * (height + 1) + (height - 1) / 2)[::2],
                      [f"{q:.2g}" for q in quantiles[::-1][::2]])
        ax.set_ylabel(f"{name}[{dims[1]}]")
    else:
        ax.set_yticks([])
    layer = "" if names is None else f" of {name}"
    notes = [f"the 2 most active dimensions{layer}"] if chosen and latent_dim > 2 else []
    notes += ["others at 0"] if latent_dim > 2 else []
    notes += [f"{', '.join(names[:-1])} at the prior's means given {name}"] if names and len(names) > 1 else []
    notes += [f"class {label}"] if label is not None else []
    return _save(fig, path, "decoded latent grid" + (f" ({', '.join(notes)})" if notes else ""))


def _check_manifold_dims(dims, latent_dim):
    """`dims` as a tuple: 2 different dimensions in [0, latent_dim) (just (0,) for latent_dim 1)."""
    count = min(latent_dim, 2)
    try:
        dims = tuple(dims)
    except TypeError:
        dims = None
    if (dims is None or len(dims) != count
            or any(not isinstance(d, (int, np.integer)) or isinstance(d, bool) or not 0 <= d < latent_dim
                   for d in dims)
            or len(set(dims)) != count):
        raise ValueError(f"`dims` must be {count} different latent dimension{'s' * (count > 1)} in "
                         f"[0, {latent_dim}). Received: dims={dims!r}")
    return tuple(int(d) for d in dims)


def latent_scatter(model, x, labels, path, batch_size=500):
    """Save the posterior means E[z|x] of x as points coloured by label.

    2-D latents are drawn as they are; larger ones are projected on their first two
    principal components (axes labelled with the share of variance each explains), and a
    1-D latent is drawn against the label. Up to 20 distinct integer labels get a legend,
    other labels a colour bar. A conditional model encodes x with `labels`, its classes:
    E[z|x, y] then holds what the class does not say (ideally, classes overlap).

    A hierarchical model is drawn in its top layer z_n, the two units whose posterior mean
    (the posterior's `mean()`, Burda et al.'s statistic) varies most over x, ties to the
    lower index, as they are ("z_2[7]", the more active one horizontally): the axes of
    `latent_manifold` with a report of the same x, so the scatter says where each class lies
    on that grid (the scatter's means are the plug-in ones of `LatentChain.mean()`).
    A top layer of one unit is drawn against the label.
    """
    labels = np.asarray(labels)
    if labels.shape != (len(x),):
        raise ValueError(f"Expected one label per example, shape ({len(x)},). Received shape {labels.shape}")
    means = _posterior_means(model, x, _condition(model, x, labels), batch_size)
    names, title = _layer_names(model), "posterior means by label"
    if names is not None:
        top = means[:, sum(model.posterior.latent_dims[:-1]):]
        dims = _most_active_units({"activity_per_layer": [np.var(top, axis=0)]}, 0, 2)
        means, title = top[:, dims], f"{title} (top layer {names[-1]})"
    if names is not None and len(dims) == 2:
        points, axis_labels = means, tuple(f"{names[-1]}[{d}]" for d in dims)
    elif names is not None:
        points, axis_labels = np.stack([means[:, 0], labels], axis=1), (f"{names[-1]}[{dims[0]}]", "label")
    elif means.shape[1] == 2:
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
    return _save(fig, path, title)


def traversal_latents(z_mean, dims, num=9, span=3.0):
    """`[len(dims) * num, L]` copies of `z_mean` ([L]); in row i, dim `dims[i]` runs over
    `z_mean[dims[i]] + linspace(-span, span, num)`."""
    z_mean = np.asarray(z_mean, np.float32)
    offsets = np.linspace(-span, span, num, dtype=np.float32)
    z = np.tile(z_mean, (len(dims), num, 1))
    for row, dim in enumerate(dims):
        z[row, :, dim] += offsets
    return z.reshape(len(dims) * num, len(z_mean))


def latent_traversals(model, x, path, dims=None, num=9, span=3.0, index=0, batch_size=500, labels=None):
    """Save latent traversals of one input: one row per latent dimension.

    Row d decodes z = E[z|x_index] with z[d] moved over `-span ... +span` (in units of the
    prior's standard deviation) around its posterior mean; the middle column (odd `num`)
    is the reconstruction. `dims` defaults to the 10 (or all, if fewer) dimensions whose
    E[z_d|x] varies most over x (the activity of `evaluation.active_units`), most active first.
    A conditional model encodes x with `labels` (one class per example) and decodes with
    the class of x_index.

    A hierarchical model's traversals move units of z_1, the layer the decoder reads (its
    units are the first L_1 of z, so `dims` are indices in [0, L_1) of z and of z_1 alike;
    rows named "z_1[d]"), and the default is z_1's most active units. Moving a unit of a
    higher layer in z would change no image, and moving it through the prior's path
    (`latent_manifold`'s) would replace x's z_1 by the prior's mean, so that no column is
    the reconstruction; the top layer is `latent_manifold`'s. The offsets are in units of
    z_1, whose prior p(z_1|z_2) need not have unit standard deviation.
    """
    names = _layer_names(model)
    latent_dim = model.latent_dim if names is None else model.posterior.latent_dims[0]  # the dims movable
    labels = _condition(model, x, labels)
    num = checks.check_int_at_least("num", num, 2)
    if not span > 0:
        raise ValueError(f"`span` must be positive. Received: span={span!r}")
    if not 0 <= index < len(x):
        raise ValueError(f"`index` must be in [0, {len(x)}). Received: index={index!r}")
    means = _posterior_means(model, x, labels, batch_size)
    if dims is None:
        dims = np.argsort(-np.var(means[:, :latent_dim], axis=0), kind="stable")[:MAX_TRAVERSAL_DIMS].tolist()
    dims = list(dims)
    if not dims or any(not isinstance(d, (int, np.integer)) or not 0 <= d < latent_dim for d in dims):
        where = "latent dimensions" if names is None else f"units of {names[0]}, the layer the decoder reads,"
        raise ValueError(f"`dims` must be {where} in [0, {latent_dim}). Received: dims={dims!r}")
    label = None if labels is None else int(labels[index])
    images = as_images(_decode(model, traversal_latents(means[index], dims, num, span), label).mean().numpy())
    fig, ax = _tiled_figure(tile_images(images, num), num)
    height, width = images.shape[1:3]
    name = "z" if names is None else names[0]
    ax.set_yticks(np.arange(len(dims)) * (height + 1) + (height - 1) / 2, [f"{name}[{d}]" for d in dims])
    ax.set_xticks([(width - 1) / 2, (num - 1) * (width + 1) + (width - 1) / 2], [f"-{span:g}", f"+{span:g}"])
    ax.set_xlabel("offset from the posterior mean")
    notes = ([] if names is None else [f"{name}, the layer the decoder reads"]) + (
        [] if label is None else [f"class {label}"])
    return _save(fig, path, "latent traversals" + (f" ({', '.join(notes)})" if notes else ""))


def learning_curves(history, path, terms=("iwae_bound", "elbo", "reconstruction", "kl")):
    """Plot per-epoch `terms` (and their `val_` versions) in one panel each.

    By default the IWAE bound L_k (logged by a model trained with `objective="iwae"`, whose
    objective it is), the ELBO, the reconstruction and the KL.

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


def _is_conditional(model):
    return bool(getattr(model, "num_classes", None))


def _condition(model, x, labels):
    """The labels a conditional model encodes and decodes x with (int64 [N]), checked; None for
    an unconditional model, which takes no labels (`latent_scatter` only colours by them)."""
    if not _is_conditional(model):
        return None
    if labels is None:
        raise ValueError(f"A conditional VAE ({model.num_classes} classes) needs `labels`: one class in "
                         f"[0, {model.num_classes}) per example of x")
    labels = np.asarray(labels)
    model.check_data(np.asarray(x), labels)  # shape, range and dtype, in one line if wrong
    return labels.astype(np.int64)


def _check_label(model, label):
    """`label` as an int: None, or (conditional models only) a class in [0, num_classes)."""
    if label is None:
        return None
    if not _is_conditional(model):
        raise ValueError(f"`label` is for a conditional VAE; this one has no classes. Received: label={label!r}")
    if isinstance(label, bool) or not isinstance(label, (int, np.integer)) or not 0 <= label < model.num_classes:
        raise ValueError(f"`label` must be a class in [0, {model.num_classes}). Received: label={label!r}")
    return int(label)


def _decode(model, z, label):
    """p(x|z), or p(x|z, y = label) for every z of a conditional model."""
    return model.decode(z) if label is None else model.decode(z, np.full(len(z), label, np.int64))


# A conditional model's encoder takes (x, y): the evaluation functions get the labels then.
def _posterior_means(model, x, labels, batch_size):
    if labels is None:
        return evaluation.posterior_means(model, x, batch_size)
    return evaluation.posterior_means(model, x, batch_size, labels=labels)


def _collapse_report(model, x, labels):
    if labels is None:
        return evaluation.posterior_collapse_report(model, x)
    return evaluation.posterior_collapse_report(model, x, labels=labels)


def write_pictures(model, x, folder, labels=None, history_rows=None, num_samples=64, seed=0, about=None,
                   label=None):
    """Every picture of a trained model, and `collapse.json`, written into `folder`.

    `samples.png`, `reconstructions.png` (of x), `latent_manifold.png` (over the two most
    active latent dimensions of the collapse report), `latent_traversals.png` (of x[0], the
    10 most active dimensions), `latent_scatter.png` (if `labels`), `learning_curves.png`
    (if `history_rows`, the rows of history.csv) and `collapse.json`
    (`evaluation.posterior_collapse_report` on x, after the entries of `about`).

    A hierarchical model's `collapse.json` is per layer (`hierarchical.layer_report`: KL,
    activity, active and inactive units of each stochastic layer); its manifold is over the
    two most active units of the top layer z_n, the layers below at the prior's conditional
    means; its traversals move the 10 most active units of z_1, the layer the decoder reads;
    its scatter shows the top layer's two most active units (see each function).

    A conditional model (`model.num_classes` set) needs `labels`, the classes of x: every
    encoding and reconstruction uses each example's own class, and `samples.png` has one
    row per class. `label` (a class) draws `samples.png` and `latent_manifold.png` for that
    class only; by default the manifold is of the class of x[0], the example the
    traversals move. Unconditional models take no `label`.
    Returns the names written and the collapse report.
    """
    if labels is not None and np.shape(labels) != (len(x),):
        raise ValueError(f"Expected one label per example, shape ({len(x)},). Received shape {np.shape(labels)}")
    condition = _condition(model, x, labels)
    label = _check_label(model, label)
    # First, as it checks x: bad data fails before any picture is written.
    report = _collapse_report(model, x, condition)
    # One class's manifold: `label`, else that of x[0], the example the traversals move (one grid per class
    # would make a picture num_classes times as large).
    manifold_label = int(condition[0]) if condition is not None and label is None else label
    samples(model, os.path.join(folder, "samples.png"), num=num_samples, seed=seed, label=label)
    reconstructions(model, x, os.path.join(folder, "reconstructions.png"), labels=condition)
    latent_manifold(model, os.path.join(folder, "latent_manifold.png"), report=report, label=manifold_label)
    # The report's order, so the manifold's two dimensions are the traversals' first two rows (a hierarchical
    # model's manifold is of the top layer, its traversals of z_1: its report's order of z_1's units).
    layer = 0 if "activity_per_layer" in report else None
    latent_traversals(model, x, os.path.join(folder, "latent_traversals.png"),
                      dims=most_active_dims(report, MAX_TRAVERSAL_DIMS, layer=layer), labels=condition)
    if labels is not None:
        latent_scatter(model, x, labels, os.path.join(folder, "latent_scatter.png"))
    if history_rows:
        try:
            learning_curves(history_rows, os.path.join(folder, "learning_curves.png"))
        except ValueError as error:
            raise ValueError(f"history.csv of the run: {error}") from error
    runs.write_text(os.path.join(folder, "collapse.json"), json.dumps({**(about or {}), **report}, indent=2))
    names = ("samples.png", "reconstructions.png", "latent_manifold.png", "latent_traversals.png",
             "latent_scatter.png", "learning_curves.png", "collapse.json")
    return sorted(name for name in names if os.path.exists(os.path.join(folder, name))), report
