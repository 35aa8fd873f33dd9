"""SavedModel export for TF Serving: `<export_dir>/<model_name>/<version>/`.

The signatures are the export's public API. Inputs and outputs are float32 (int32 for
`num_samples` and `seed`), the batch dimension is free and every output is named:

| signature         | inputs                         | outputs                                                |
| ----------------- | ------------------------------ | ------------------------------------------------------ |
| `encode`          | `x` [B, *event]                | `z_mean`, `z_stddev` [B, L]: q(z|x)                     |
| `decode`          | `z` [B, L]                     | `x_mean` [B, *event]: mean of p(x|z); its parameters:  |
|                   |                                | `x_logits` (Bernoulli, continuous Bernoulli), `x_scale` |
|                   |                                | (Gaussian), `x_loc`, `x_scale` (discretized logistic)  |
| `reconstruct`     | `x` [B, *event]                | `x_mean`: mean of p(x | z = z_mean), `z_mean`          |
| `sample`          | `num_samples`, `seed` (scalars) | `x_mean` [n, *event], `z` [n, L], z ~ p(z)            |
| `score`           | `x` [B, *event]                | `elbo`, `log_likelihood` [B], nats                     |
| `serving_default` | the same as `reconstruct`      |                                                        |

`score` is an anomaly score: `log_likelihood` is the importance-sampled estimate of
log p(x) (the bound L_k, with k = `score_samples` fixed at export) and `elbo` the mean log
weight of the same k samples. Its samples use a fixed seed, so the same x always gets the
same score; `sample` is likewise a function of its `seed`.

Inputs are checked inside the graph, so a TF Serving client gets the message too: wrong
rank or size, NaN or inf, values outside the likelihood's support (e.g. [0, 1] for a
Bernoulli model), `num_samples` outside [1, MAX_SAMPLES], a `score` batch over
MAX_SCORE_BATCH raise `InvalidArgumentError`
saying what was expected. For that the input signatures leave the rank open; the expected
shapes are in `assets.extra/keras_vae.json`, along with the model config, dataset,
training metrics and versions. `assets.extra/tf_serving_warmup_requests` holds one
request per signature, which TF Serving replays when it loads the model, so the first
real request is not the slow one.

Versions are integers that only go up. A version is written to a hidden folder and
renamed into place, so a crash leaves no visible half version (TF Serving ignores names
that are not integers) and an existing version is never overwritten.
"""

import datetime
import json
import math
import os
import platform
import re
import shutil
import uuid

import keras
import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

from keras_vae import checks, runs

DEFAULT_SIGNATURE = "reconstruct"
SIGNATURES = ("encode", "decode", "reconstruct", "sample", "score")
MAX_SAMPLES = 10_000  # cap on `sample`'s num_samples
MAX_SCORE_BATCH = 1_000  # cap on `score`'s batch: each example costs score_samples decoder passes
SCORE_SAMPLES = 100  # default k of `score`
SCORE_CHUNK_SIZE = 250  # importance samples drawn at a time in `score`
SCORE_SEED = 0
METADATA_FILE = os.path.join("assets.extra", "keras_vae.json")
WARMUP_FILE = os.path.join("assets.extra", "tf_serving_warmup_requests")

_VERSION = re.compile(r"^\d+$")


def versions(model_base):
    """Integer versions already present under `<export_dir>/<model_name>`."""
    if not os.path.isdir(model_base):
        return []
    return sorted(int(v) for v in os.listdir(model_base) if _VERSION.match(v))


def export_saved_model(model, export_dir, model_name, version=None, score_samples=SCORE_SAMPLES, metadata=None):
    """Write `model` as a SavedModel under `<export_dir>/<model_name>/<version>/`; return that path.

    Args:
        model: a built `keras_vae.VAE`.
        export_dir: base folder TF Serving watches (e.g. `saved_models`).
        model_name: the model's name in TF Serving.
        version: positive integer; default one more than the highest existing version.
        score_samples: importance samples k behind `score`'s `log_likelihood`.
        metadata: extra JSON-serialisable entries for `assets.extra/keras_vae.json`
            (the apps add `dataset` and `training_metrics`).
    """
    if not model_name or not isinstance(model_name, str) or os.sep in model_name or model_name.startswith("."):
        raise ValueError(f"`model_name` must be a plain folder name. Received: model_name={model_name!r}")
    score_samples = checks.check_positive_int("score_samples", score_samples)
    base = os.path.join(export_dir, model_name)
    if version is not None:
        version = checks.check_positive_int("version", version)
        if os.path.exists(os.path.join(base, str(version))):
            raise FileExistsError(f"{os.path.join(base, str(version))} already exists; SavedModel versions are "
                                  "never overwritten")
    _remove_dead_stagings(base)
    # Not tempfile.mkdtemp: its 0700 folder would keep TF Serving running as another user out.
    staging = os.path.join(base, f".partial-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    os.makedirs(staging)
    try:
        build_archive(model, score_samples).write_out(staging, verbose=False)
        os.makedirs(os.path.join(staging, "assets.extra"), exist_ok=True)
        while True:  # the next free version, unless one was asked for
            existing = versions(base)
            number = version or (existing[-1] + 1 if existing else 1)
            info = export_metadata(model, model_name, number, score_samples, metadata)
            with open(os.path.join(staging, METADATA_FILE), "w") as f:
                json.dump(info, f, indent=2, allow_nan=False)
            write_warmup_requests(os.path.join(staging, WARMUP_FILE), model, model_name)
            runs.kill_point("export")
            target = os.path.join(base, str(number))
            try:
                os.rename(staging, target)  # atomic; fails if another writer has filled `target` meanwhile
                return target
            except OSError:
                if not os.path.isdir(target):
                    raise
                if version is not None:
                    raise FileExistsError(f"{target} already exists; SavedModel versions are never overwritten")
                # Another export took this version a moment ago: take the next one.
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _remove_dead_stagings(base):
    """Delete the staging folders of exports whose process has died (a kill mid-export)."""
    if not os.path.isdir(base):
        return
    for name in os.listdir(base):
        ours = re.match(r"^\.partial-(\d+)-[0-9a-f]{8}$", name)
        older = re.match(r"^\.\d+\.partial-", name)  # staging names before the pid was in them
        if older or (ours and not _alive(int(ours.group(1)))):
            shutil.rmtree(os.path.join(base, name), ignore_errors=True)


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def build_archive(model, score_samples=SCORE_SAMPLES):
    """A `keras.export.ExportArchive` with the signatures in the module docstring."""
    if getattr(model, "num_classes", None):
        raise ValueError("Exporting a conditional VAE is not supported yet: its signatures would need labels y")
    event_shape, latent_dim = tuple(model.input_event_shape), model.latent_dim
    support = _support(model)

    def checked_x(x):
        return _checked(x, "x", event_shape, support)

    def reconstruct(x):
        z_mean = model.encode(checked_x(x)).mean()
        return _float32({"x_mean": model.decode(z_mean).mean(), "z_mean": z_mean})

    def encode(x):
        q = model.encode(checked_x(x))
        return _float32({"z_mean": q.mean(), "z_stddev": q.stddev()})

    def decode(z):
        likelihood = model.decode(_checked(z, "z", (latent_dim,)))
        return _float32({"x_mean": likelihood.mean(), **model.likelihood.named_parameters(likelihood)})

    def sample(num_samples, seed):
        num_samples = _checked_scalar(num_samples, "num_samples", (1, MAX_SAMPLES))
        seed = _checked_scalar(seed, "seed")
        x_mean, z = model.sample(num_samples, seed=tf.stack([seed, 0]), return_latents=True)
        return _float32({"x_mean": x_mean, "z": z})

    def score(x):
        x = _checked(x, "x", event_shape, support, max_batch=MAX_SCORE_BATCH)
        terms = model.importance_sampled(x, score_samples, SCORE_CHUNK_SIZE, seed=SCORE_SEED)
        return _float32({"elbo": terms["elbo"], "log_likelihood": terms["iwae_bound"]})

    x_spec = tf.TensorSpec(None, tf.float32, name="x")
    endpoints = {
        "reconstruct": (reconstruct, [x_spec]),  # the first endpoint also becomes `serving_default`
        "encode": (encode, [x_spec]),
        "decode": (decode, [tf.TensorSpec(None, tf.float32, name="z")]),
        "sample": (sample, [tf.TensorSpec(None, tf.int32, name="num_samples"),
                            tf.TensorSpec(None, tf.int32, name="seed")]),
        "score": (score, [x_spec]),
    }
    archive = keras.export.ExportArchive()
    archive.track(model)
    for name, (fn, signature) in endpoints.items():
        archive.add_endpoint(name, fn, input_signature=signature)
    return archive


def export_metadata(model, model_name, version, score_samples, extra=None):
    """What `assets.extra/keras_vae.json` records about an export."""
    import keras_vae  # noqa: PLC0415  (the package imports this module)

    low, high = _support(model) or (None, None)
    return {
        "model_name": model_name,
        "version": version,
        "exported_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "signatures": list(SIGNATURES),
        "serving_default": DEFAULT_SIGNATURE,
        "input_shape": [None, *model.input_event_shape],
        "latent_dim": model.latent_dim,
        "likelihood": type(model.likelihood).__name__,
        "input_range": [low, high],
        "score_samples": score_samples,
        "max_samples": MAX_SAMPLES,
        **(extra or {}),
        "versions": {
            "keras_vae": keras_vae.__version__,
            "tensorflow": tf.__version__,
            "keras": keras.__version__,
            "tensorflow_probability": tfp.__version__,
            "python": platform.python_version(),
        },
        "model_config": json.loads(json.dumps(model.get_config(), default=str)),
    }


def warmup_inputs(model):
    """One small, valid input per signature (also for `serving_default`), as numpy arrays."""
    x = np.zeros((1, *model.input_event_shape), np.float32)  # zeros lie in every likelihood's support
    z = np.zeros((1, model.latent_dim), np.float32)
    inputs = {"encode": {"x": x}, "decode": {"z": z}, "reconstruct": {"x": x},
              "sample": {"num_samples": np.int32(1), "seed": np.int32(0)}, "score": {"x": x}}
    return {"serving_default": inputs[DEFAULT_SIGNATURE], **inputs}


def write_warmup_requests(path, model, model_name):
    """TF Serving's warm-up file: a TFRecord of `PredictionLog`s, one `PredictRequest` per signature."""
    from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_log_pb2  # noqa: PLC0415

    with tf.io.TFRecordWriter(path) as writer:
        for signature, inputs in warmup_inputs(model).items():
            request = predict_pb2.PredictRequest(
                model_spec=model_pb2.ModelSpec(name=model_name, signature_name=signature))
            for key, value in inputs.items():
                request.inputs[key].CopyFrom(tf.make_tensor_proto(value))
            log = prediction_log_pb2.PredictionLog(predict_log=prediction_log_pb2.PredictLog(request=request))
            writer.write(log.SerializeToString())


# ------------------------------------------------------------------ in-graph input checks
def _support(model):
    """(low, high) of the likelihood's support when it is bounded, else None."""
    low, high = getattr(model.likelihood, "support", (-math.inf, math.inf))
    return (low, high) if math.isfinite(low) or math.isfinite(high) else None


def _checked(tensor, name, event_shape, support=None, max_batch=None):
    """`tensor` as [batch >= 1, *event_shape], checked by assertions that raise `InvalidArgumentError`.

    An op that fails on a malformed tensor could report its own, less helpful error before
    the assertion runs, so the tensor passed on is reshaped in a way that cannot fail
    (padded to whole examples, at least one); for valid input it is unchanged.
    """
    rank, size = len(event_shape) + 1, math.prod(event_shape)
    # The shape, padded or cut to `rank` entries, so the comparison is defined for any rank.
    shape = tf.concat([tf.shape(tensor), tf.zeros([rank], tf.int32)], axis=0)[:rank]
    shape_ok = tf.equal(tf.rank(tensor), rank) & tf.reduce_all(tf.equal(shape[1:], event_shape)) & (shape[0] > 0)
    checks = [tf.debugging.Assert(shape_ok, [
        f"`{name}` must have shape [batch, {', '.join(map(str, event_shape))}] with batch >= 1; received shape",
        tf.shape(tensor)])]
    flat = tf.reshape(tensor, [-1])
    length = tf.size(flat)
    flat = tf.pad(flat, [[0, tf.maximum(size, length + (-length) % size) - length]])
    tensor = tf.reshape(flat, [-1, *event_shape])
    if max_batch is not None:
        checks.append(tf.debugging.Assert(tf.shape(tensor)[0] <= max_batch, [
            f"`{name}` may hold at most {max_batch} examples per request; received", tf.shape(tensor)[0]]))
        tensor = tensor[:max_batch]
    checks.append(tf.debugging.Assert(tf.reduce_all(tf.math.is_finite(tensor)),
                                      [f"`{name}` must be finite; received NaN or inf"]))
    if support is not None:
        low, high = support
        checks.append(tf.debugging.Assert(tf.reduce_all((tensor >= low) & (tensor <= high)), [
            f"`{name}` must lie in [{low}, {high}] for this likelihood; received values from",
            tf.reduce_min(tensor), "to", tf.reduce_max(tensor)]))
    with tf.control_dependencies(checks):
        return tf.identity(tensor)


def _checked_scalar(value, name, bounds=None):
    """`value` as a scalar within `bounds`, checked by assertions that raise `InvalidArgumentError`.

    As in `_checked`, what is passed on cannot make a later op fail: the first entry (or 0)
    of a non-scalar, clipped to `bounds`.
    """
    checks = [tf.debugging.Assert(tf.equal(tf.rank(value), 0),
                                  [f"`{name}` must be a scalar; received shape", tf.shape(value)])]
    first = tf.reshape(tf.pad(tf.reshape(value, [-1]), [[0, 1]])[:1], [])
    if bounds is not None:
        low, high = bounds
        checks.append(tf.debugging.Assert((first >= low) & (first <= high),
                                          [f"`{name}` must be in [{low}, {high}]; received", first]))
        first = tf.clip_by_value(first, low, high)
    with tf.control_dependencies(checks):
        return tf.identity(first)


def _float32(outputs):
    return {name: tf.cast(value, tf.float32) for name, value in outputs.items()}
