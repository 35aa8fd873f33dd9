"""SavedModel export for TF Serving: `<export_dir>/<model_name>/<version>/`.

Signatures take and return plain float32 tensors (a distribution cannot cross a
SavedModel signature), with a free batch dimension:

| signature                  | input          | outputs                                   |
| -------------------------- | -------------- | ----------------------------------------- |
| `serving_default`, `serve` | `x` [B, ...]   | `reconstruction`: mean of p(x | z = E q)  |
| `encode`                   | `x` [B, ...]   | `z_mean`, `z_stddev` of q(z|x)            |
| `decode`                   | `z` [B, L]     | `x_mean`: mean of p(x|z)                  |
| `elbo`                     | `x` [B, ...]   | per-example `elbo`, `reconstruction`, `kl` |

`elbo` draws its z samples with a fixed seed, so the same x always gets the same score
(useful for anomaly scoring). Versions are integers that only go up; a version is written
to a hidden temporary folder and renamed into place, so a failed export leaves nothing
behind and an existing version is never overwritten.
"""

import os
import re
import shutil
import uuid

import keras
import tensorflow as tf

_VERSION = re.compile(r"^\d+$")


def versions(model_base):
    """Integer versions already present under `<export_dir>/<model_name>`."""
    if not os.path.isdir(model_base):
        return []
    return sorted(int(v) for v in os.listdir(model_base) if _VERSION.match(v))


def export_saved_model(model, export_dir, model_name, version=None):
    """Write `model` as a SavedModel under `<export_dir>/<model_name>/<version>/`; return that path.

    Args:
        model: a built `keras_vae.VAE`.
        export_dir: base folder TF Serving watches (e.g. `saved_models`).
        model_name: the model's name in TF Serving.
        version: positive integer; default one more than the highest existing version.
    """
    if not model_name or os.sep in model_name or model_name.startswith("."):
        raise ValueError(f"`model_name` must be a plain folder name. Received: model_name={model_name!r}")
    base = os.path.join(export_dir, model_name)
    existing = versions(base)
    version = (existing[-1] + 1 if existing else 1) if version is None else version
    if not isinstance(version, int) or version < 1:
        raise ValueError(f"`version` must be a positive integer. Received: version={version!r}")
    target = os.path.join(base, str(version))
    if os.path.exists(target):
        raise FileExistsError(f"{target} already exists; SavedModel versions are never overwritten")
    # Not tempfile.mkdtemp: its 0700 folder would keep TF Serving running as another user out.
    staging = os.path.join(base, f".{version}.partial-{uuid.uuid4().hex}")
    os.makedirs(staging)
    try:
        build_archive(model).write_out(staging, verbose=False)
        os.rename(staging, target)  # atomic; fails if another writer has filled `target` meanwhile
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target


def build_archive(model):
    """A `keras.export.ExportArchive` with the signatures in the module docstring."""
    x_spec = tf.TensorSpec((None,) + tuple(model.input_event_shape), tf.float32, name="x")
    z_spec = tf.TensorSpec((None, model.latent_dim), tf.float32, name="z")
    eval_seed = tf.constant([0, 0], tf.int32)

    def serve(x):
        return {"reconstruction": model(x)}

    def encode(x):
        q = model.encode(x)
        return {"z_mean": q.mean(), "z_stddev": q.stddev()}

    def decode(z):
        return {"x_mean": model.decode(z).mean()}

    def elbo(x):
        terms = model.compute_terms(x, seed=eval_seed, objective="elbo")
        return {name: terms[name] for name in ("elbo", "reconstruction", "kl")}

    archive = keras.export.ExportArchive()
    archive.track(model)
    # The first endpoint also becomes `serving_default`.
    for name, fn, spec in (("serve", serve, x_spec), ("encode", encode, x_spec),
                           ("decode", decode, z_spec), ("elbo", elbo, x_spec)):
        archive.add_endpoint(name, fn, input_signature=[spec])
    return archive
