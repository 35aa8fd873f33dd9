"""SavedModel export for TF Serving: `<export_dir>/<model_name>/<version>/`.

The signatures are the export's public API. Inputs and outputs are float32, except the
integer inputs (`num_samples`, `seed` and the labels `y`), which are int32; the batch
dimension B is free and every output is named:

| signature         | inputs                                  | outputs                                                |
| ----------------- | --------------------------------------- | ------------------------------------------------------ |
| `encode`          | `x` [B, *event] (, `y` [B])             | `z_mean`, `z_stddev` [B, L]: q(z|x); hierarchical      |
|                   |                                         | models also `z_1_mean`, `z_1_stddev`, ..., `z_n_mean`, |
|                   |                                         | `z_n_stddev` [B, L_l], one pair per stochastic layer   |
| `decode`          | `z` [B, L] (, `y` [B])                  | `x_mean` [B, *event]: mean of p(x|z); its parameters:  |
|                   |                                         | `x_logits` (Bernoulli, continuous Bernoulli), `x_scale` |
|                   |                                         | (Gaussian), `x_loc`, `x_scale` (discretized logistic)  |
| `reconstruct`     | `x` [B, *event] (, `y` [B])             | `x_mean`: mean of p(x | z = z_mean), `z_mean`          |
| `sample`          | `num_samples`, `seed` (, `y`): scalars  | `x_mean` [n, *event], `z` [n, L], z ~ p(z)            |
| `score`           | `x` [B, *event] (, `y` [B])             | `elbo`, `log_likelihood` [B], nats                     |
| `serving_default` | the same as `reconstruct`               |                                                        |

For a hierarchical model (`keras_vae.hierarchical_vae`), z = [z_1, ..., z_n] is the
concatenation of its n stochastic layers, of sizes L_1, ..., L_n (the metadata's
`latent_dims`; `[L]` for a model with one layer), and `z_mean`, `z_stddev`, `decode`'s
`z` and `sample`'s `z` are all over that concatenation. `encode`'s per-layer outputs
split it: `z_1_mean` and `z_1_stddev` are E[z_1|x] and its stddev, exact; for a layer
above, `z_{l+1}_mean` and `z_{l+1}_stddev` are the moments of q(z_{l+1}|z_l) at
z_l = `z_l_mean`, a plug-in (Burda et al.'s statistic for active units): not E[z_{l+1}|x]
unless q's link is affine, and without the spread the layers below add to the marginal
(see `keras_vae.hierarchical.LatentChain`). `z_mean` is their concatenation, the z that
`reconstruct` decodes (p(x|z) reads z_1 only). `sample` draws from the top: z_n from
N(0, I), then each layer below from p(z_l|z_{l+1}), down to z_1, which it decodes.

The inputs in parentheses belong to conditional models (`num_classes` = C) only, and are
then required: `y` holds one class index in [0, C) per example, and `sample` takes one
class, a scalar, for all its draws (call it once per class for several). Every signature
of a conditional model computes with those classes: q(z|x, y), p(x|z, y), log p(x|y).

`score` is an anomaly score: `log_likelihood` is the importance-sampled estimate of
log p(x) (the bound L_k, with k = `score_samples` fixed at export) and `elbo` the mean log
weight of the same k samples. Its samples use a fixed seed, so the same x always gets the
same score; `sample` is likewise a function of its `seed`.

The signatures declare their input shapes ([None, *event] for x, [None, L] for z, [None]
for y, [] for the scalars), so `saved_model_cli show --all` and TF Serving's model
metadata give them. TF Serving and loaded signatures do not enforce declared shapes,
though, so inputs are also checked inside the graph, and a client gets the message:
wrong rank or size, an empty batch, NaN or inf, values outside the likelihood's support
(e.g. [0, 1] for a Bernoulli model), labels outside [0, C) or not one per example,
`num_samples` outside [1, MAX_SAMPLES], a `score` batch over MAX_SCORE_BATCH raise
`InvalidArgumentError` saying what was expected. `assets.extra/keras_vae.json` records
the same input shapes and dtypes and the latent's layer sizes (`latent_dims`), along with
the model config, dataset, training metrics and versions.
`assets.extra/tf_serving_warmup_requests` holds one request per signature, which TF
Serving replays when it loads the model, so the first real request is not the
slow one.

Versions are integers that only go up. A version is written to a hidden folder and
renamed into place, so a crash leaves no visible half version (TF Serving ignores names
that are not integers) and an existing version is never overwritten.

Your own layers
---------------

A `VAE` takes any posterior, likelihood and prior layers that provide the following
(the built-in ones in `keras_vae.posteriors`, `likelihoods` and `priors` are examples):

- **Posterior** q(z|x): a `latent_dim` attribute, and `call(params)` returning a
  `tfd.Distribution` over z with batch shape [B] and event shape [L] whose `sample` is
  reparameterized and which has `log_prob` (training). Export: its `mean()` and
  `stddev()`, `encode`'s outputs. Optional: `block_moments()` on the distribution,
  returning `(means, stddevs)`, two lists of n Tensors [B, L_l] whose sizes sum to L (as
  `keras_vae.hierarchical.LatentChain` does): `encode` then also returns them as
  `z_1_mean`, `z_1_stddev`, ..., `z_n_mean`, `z_n_stddev`. The sizes L_l are the layer's
  `latent_dims` attribute, else the distribution's `sizes`, else the blocks' last axes.
- **Likelihood** p(x|z): `call(params)` returning a `tfd.Distribution` over x with batch
  shape [B] and x's event shape (wrap a per-dimension distribution in `tfd.Independent`),
  with `log_prob` (training). Export: its `mean()`, the `x_mean` of `decode`,
  `reconstruct` and `sample`. Optional: `named_parameters(distribution)`, a dict of
  output name -> Tensor [B, ...], `decode`'s outputs besides `x_mean` (none without it:
  `x_mean` is the one output every client needs, so a layer that names no parameters
  still exports a complete `decode` rather than failing on something it never promised);
  `support = (low, high)`, the values of x it is defined for, which `VAE.check_data` and
  the signatures enforce (without it, any finite value).
- **Prior** p(z): `distribution()`, or `distribution(model)` to be given the model,
  returning a `tfd.Distribution` over z with event shape [L] and empty batch shape, with
  `log_prob` (training, `score`) and `sample` (the `sample` signature).
- **Saving** (`model.save`, `keras.saving.load_model`): each class registered with
  `@keras.saving.register_keras_serializable(package=...)`, with a `get_config()` that
  returns its constructor arguments; the class must be imported before loading.

`export_saved_model` checks these up front, on a batch of one, before it writes anything:
a missing piece raises one `TypeError` naming the layer's class and what it lacks.
"""

import datetime
import json
import math
import numbers
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
from keras_vae.models import VAE

tfd = tfp.distributions

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
        model: a built `keras_vae.VAE`, its layers following the protocol in the module
            docstring ("Your own layers").
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
    # Built (the protocol checked, the signatures traced) before any folder is made, so a
    # model that cannot be exported leaves nothing behind.
    archive = build_archive(model, score_samples)
    _remove_dead_stagings(base)
    # Not tempfile.mkdtemp: its 0700 folder would keep TF Serving running as another user out.
    staging = os.path.join(base, f".partial-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    os.makedirs(staging)
    try:
        archive.write_out(staging, verbose=False)
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


def input_signatures(model):
    """Each signature's inputs as named `tf.TensorSpec`s, with the shapes the SavedModel declares."""
    x = tf.TensorSpec([None, *model.input_event_shape], tf.float32, name="x")
    z = tf.TensorSpec([None, model.latent_dim], tf.float32, name="z")
    labels = [tf.TensorSpec([None], tf.int32, name="y")] if model.num_classes else []
    scalars = [tf.TensorSpec([], tf.int32, name=name) for name in ("num_samples", "seed")]
    sample_class = [tf.TensorSpec([], tf.int32, name="y")] if model.num_classes else []
    return {"encode": [x, *labels], "decode": [z, *labels], "reconstruct": [x, *labels],
            "sample": [*scalars, *sample_class], "score": [x, *labels]}


def build_archive(model, score_samples=SCORE_SAMPLES):
    """A `keras.export.ExportArchive` with the signatures in the module docstring.

    Raises `TypeError` first if `model` is not a `VAE` whose layers follow the protocol
    ("Your own layers" in the module docstring)."""
    check_exportable(model)
    event_shape, latent_dim, num_classes = tuple(model.input_event_shape), model.latent_dim, model.num_classes
    support = _support(model)
    blocks = latent_blocks(model)  # None: the posterior gives no per-layer moments

    # `y` is the labels of a conditional model, absent for an unconditional one.
    def checked(x, y, max_batch=None):
        x = _checked(x, "x", event_shape, support, max_batch)
        return x, (_checked_labels(y[0], num_classes, tf.shape(x)[0], "x") if y else None)

    def reconstruct(x, *y):
        x, y = checked(x, y)
        z_mean = model.encode(x, y).mean()
        return _float32({"x_mean": model.decode(z_mean, y).mean(), "z_mean": z_mean})

    def encode(x, *y):
        q = model.encode(*checked(x, y))
        outputs = {"z_mean": q.mean(), "z_stddev": q.stddev()}
        if blocks is not None:  # each layer's moments, declared [None, L_l]
            means, stddevs = q.block_moments()
            for l, (size, mean, stddev) in enumerate(zip(blocks, means, stddevs), start=1):
                outputs[f"z_{l}_mean"] = tf.ensure_shape(mean, [None, size])
                outputs[f"z_{l}_stddev"] = tf.ensure_shape(stddev, [None, size])
        return _float32(outputs)

    def decode(z, *y):
        z = _checked(z, "z", (latent_dim,))
        y = _checked_labels(y[0], num_classes, tf.shape(z)[0], "z") if y else None
        likelihood = model.decode(z, y)
        return _float32({"x_mean": likelihood.mean(), **_named_parameters(model.likelihood, likelihood)})

    def sample(num_samples, seed, *y):
        num_samples = _checked_scalar(num_samples, "num_samples", (1, MAX_SAMPLES))
        seed = _checked_scalar(seed, "seed")
        label = _checked_scalar(y[0], "y", (0, num_classes - 1), "a class index ") if y else None
        x_mean, z = model.sample(num_samples, seed=tf.stack([seed, 0]), return_latents=True, labels=label)
        return _float32({"x_mean": x_mean, "z": z})

    def score(x, *y):
        x, y = checked(x, y, max_batch=MAX_SCORE_BATCH)
        terms = model.importance_sampled(x, score_samples, SCORE_CHUNK_SIZE, seed=SCORE_SEED, y=y)
        return _float32({"elbo": terms["elbo"], "log_likelihood": terms["iwae_bound"]})

    functions = {"reconstruct": reconstruct, "encode": encode, "decode": decode, "sample": sample, "score": score}
    specs = input_signatures(model)
    archive = keras.export.ExportArchive()
    archive.track(model)
    # The first endpoint also becomes `serving_default`.
    for name in (DEFAULT_SIGNATURE, *(s for s in SIGNATURES if s != DEFAULT_SIGNATURE)):
        archive.add_endpoint(name, functions[name], input_signature=specs[name])
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
        # Each signature's inputs as the SavedModel declares them (None: any size).
        "inputs": {name: {spec.name: {"shape": spec.shape.as_list(), "dtype": spec.dtype.name} for spec in specs}
                   for name, specs in input_signatures(model).items()},
        "input_shape": [None, *model.input_event_shape],
        "latent_dim": model.latent_dim,
        # The stochastic layers' sizes L_1, ..., L_n (z their concatenation), encode's z_l_mean
        # and z_l_stddev; [latent_dim] for a model with one layer.
        "latent_dims": latent_blocks(model) or [model.latent_dim],
        "num_classes": model.num_classes,  # None: unconditional, the signatures take no labels y
        "likelihood": type(model.likelihood).__name__,
        "input_range": [low, high],
        "score_samples": score_samples,
        "max_samples": MAX_SAMPLES,
        "max_score_batch": MAX_SCORE_BATCH,
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
    y = {"y": np.zeros(1, np.int32)} if model.num_classes else {}  # class 0
    sample_class = {"y": np.int32(0)} if model.num_classes else {}
    inputs = {"encode": {"x": x, **y}, "decode": {"z": z, **y}, "reconstruct": {"x": x, **y},
              "sample": {"num_samples": np.int32(1), "seed": np.int32(0), **sample_class}, "score": {"x": x, **y}}
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


# ------------------------------------------------------------------ the layer protocol
def check_exportable(model):
    """Raise `TypeError` unless `model` is a `VAE` whose layers provide what the signatures
    call (the protocol in the module docstring), tried eagerly on a batch of one."""
    if not isinstance(model, VAE):
        raise TypeError(f"export_saved_model exports a keras_vae.VAE. Received: {type(model).__name__}")
    x = tf.zeros((1, *model.input_event_shape), tf.float32)
    y = tf.zeros([1], tf.int32) if model.num_classes else None
    q = _distribution(model.posterior, "posterior", model.encode(x, y), "encode")
    z_mean = _method(model.posterior, "posterior", q, "mean", "encode's z_mean")
    _method(model.posterior, "posterior", q, "stddev", "encode's z_stddev")
    _blocks(model, q)
    p = _distribution(model.likelihood, "likelihood", model.decode(z_mean, y), "decode")
    _method(model.likelihood, "likelihood", p, "mean", "x_mean, the reconstructions and samples")
    parameters = _named_parameters(model.likelihood, p)
    if not isinstance(parameters, dict) or not all(
            isinstance(k, str) and k != "x_mean" and tf.is_tensor(v) for k, v in parameters.items()):
        raise TypeError(f"{type(model.likelihood).__name__}.named_parameters(distribution) must return a dict of "
                        f"output name (a str other than 'x_mean') -> Tensor, decode's extra outputs. Received: "
                        f"{parameters!r}")
    support = getattr(model.likelihood, "support", (-math.inf, math.inf))
    if not (isinstance(support, (tuple, list)) and len(support) == 2
            and all(isinstance(v, numbers.Real) for v in support) and support[0] < support[1]):
        raise TypeError(f"{type(model.likelihood).__name__}.support must be (low, high), two numbers with low < high: "
                        f"the values of x it is defined for. Received: {support!r}")
    if not callable(getattr(model.prior, "distribution", None)):
        raise TypeError(f"{type(model.prior).__name__} (the prior) needs a distribution() method returning a "
                        "tfd.Distribution over z")
    prior = _distribution(model.prior, "prior", model.prior_distribution(), "sample and score")
    z = _method(model.prior, "prior", prior, "sample", "the sample signature", 1, seed=tf.constant([0, 0]))
    _method(model.prior, "prior", prior, "log_prob", "score", z)


def latent_blocks(model):
    """The sizes [L_1, ..., L_n] of the stochastic layers whose moments `encode` returns one by
    one (`z_l_mean`, `z_l_stddev`), when the posterior's distribution has `block_moments()`
    (a hierarchical model); None when it has not."""
    x = tf.zeros((1, *model.input_event_shape), tf.float32)
    return _blocks(model, model.encode(x, tf.zeros([1], tf.int32) if model.num_classes else None))


def _blocks(model, q):
    """`latent_blocks` of `model` from its posterior distribution `q` of a batch of one; a
    `TypeError` naming the posterior if `block_moments()` does not give what `encode` needs."""
    if not callable(getattr(q, "block_moments", None)):
        return None
    layer = model.posterior
    moments = _method(layer, "posterior", q, "block_moments", "encode's per-layer outputs")
    sizes = getattr(layer, "latent_dims", None) or getattr(q, "sizes", None)
    try:
        means, stddevs = (list(part) for part in moments)
        if sizes is None:
            sizes = [tensor.shape[-1] for tensor in means]
        sizes = [int(size) for size in sizes]
        ok = (len(means) == len(stddevs) == len(sizes) and all(size > 0 for size in sizes)
              and sum(sizes) == model.latent_dim
              and all(tf.is_tensor(tensor) and tensor.shape.as_list() == [1, size]
                      for part in (means, stddevs) for tensor, size in zip(part, sizes)))
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise TypeError(f"{type(layer).__name__} (the posterior) gives a {type(q).__name__} whose block_moments() "
                        "must return (means, stddevs), two lists of one Tensor [B, L_l] per stochastic layer, "
                        f"with the sizes L_l (the layer's latent_dims, else the distribution's sizes: {sizes!r}) "
                        f"summing to latent_dim = {model.latent_dim}: encode's per-layer outputs. Received: "
                        f"{tf.nest.map_structure(lambda v: v.shape if tf.is_tensor(v) else v, moments)!r}")
    return sizes


def _distribution(layer, role, made, signature):
    """`made`, what `layer` gave, if it is a `tfd.Distribution`; else a `TypeError` naming the layer."""
    if not isinstance(made, tfd.Distribution):
        raise TypeError(f"{type(layer).__name__} (the {role}) must give a tfd.Distribution, which {signature} uses. "
                        f"Received: {type(made).__name__}")
    return made


def _method(layer, role, distribution, method, used_for, *args, **kwargs):
    """`distribution.<method>(*args, **kwargs)`, or a `TypeError` naming `layer` if it is not implemented."""
    try:
        return getattr(distribution, method)(*args, **kwargs)
    except NotImplementedError as error:
        raise TypeError(f"{type(layer).__name__} (the {role}) gives a {type(distribution).__name__} without "
                        f"{method}(), which the export needs for {used_for}: {error}") from error


def _named_parameters(likelihood, distribution):
    """The likelihood's `named_parameters(distribution)`, or none if it defines no such method."""
    named = getattr(likelihood, "named_parameters", None)
    return named(distribution) if named is not None else {}


# ------------------------------------------------------------------ in-graph input checks
def _support(model):
    """(low, high) of the likelihood's support when it is bounded, else None."""
    low, high = getattr(model.likelihood, "support", (-math.inf, math.inf))
    return (low, high) if math.isfinite(low) or math.isfinite(high) else None


# Neither TF Serving nor a loaded signature enforces the declared input shapes, and
# TensorFlow's graph optimizer folds tf.rank, tf.size and fully known tf.shape results to
# the declared values. So the checks read the shape an input really has from tf.shape of a
# tensor with a free dimension (the batch; for scalars, a parsed copy), and every other op
# on an input runs only after its shape check has passed, on the shape it was traced for.
_SUMMARIZE = 16  # entries of a tensor an assertion's message shows: a whole shape


def _checked_shape(tensor, name, event_shape):
    """`tensor` once an assertion has found its shape [batch >= 1, *event_shape]."""
    rank = len(event_shape) + 1
    shape = tf.shape(tensor)
    # The shape cut or padded with -1 ("no such axis") to rank + 1 entries: equal to
    # [batch, *event_shape, -1] exactly when the tensor has `rank` axes of those sizes.
    padded = tf.concat([shape, tf.fill([rank + 1], -1)], axis=0)[:rank + 1]
    ok = tf.reduce_all(tf.equal(padded[1:], [*event_shape, -1])) & (padded[0] > 0)
    expected = f"[batch, {', '.join(map(str, event_shape))}]"
    check = tf.debugging.Assert(ok, [f"`{name}` must have shape {expected} with batch >= 1; received shape", shape],
                                summarize=_SUMMARIZE)
    with tf.control_dependencies([check]):
        return tf.identity(tensor)


def _checked(tensor, name, event_shape, support=None, max_batch=None):
    """`tensor` once assertions that raise `InvalidArgumentError` have found it of shape
    [batch >= 1, *event_shape] (batch <= `max_batch`), finite and within `support`."""
    tensor = _checked_shape(tensor, name, event_shape)
    checks = []
    if max_batch is not None:
        checks.append(tf.debugging.Assert(tf.shape(tensor)[0] <= max_batch, [
            f"`{name}` may hold at most {max_batch} examples per request; received", tf.shape(tensor)[0]]))
    checks.append(tf.debugging.Assert(tf.reduce_all(tf.math.is_finite(tensor)),
                                      [f"`{name}` must be finite; received NaN or inf"]))
    if support is not None:
        low, high = support
        checks.append(tf.debugging.Assert(tf.reduce_all((tensor >= low) & (tensor <= high)), [
            f"`{name}` must lie in [{low}, {high}] for this likelihood; received values from",
            tf.reduce_min(tensor), "to", tf.reduce_max(tensor)]))
    with tf.control_dependencies(checks):
        return tf.identity(tensor)


def _checked_labels(labels, num_classes, batch, of):
    """`labels` once assertions have found them one class index in [0, num_classes) per example
    of the input `of`, which has `batch` examples."""
    shape = tf.shape(labels)
    padded = tf.concat([shape, [-1, -1]], axis=0)[:2]  # [count, -1] exactly for a vector
    check = tf.debugging.Assert((padded[0] == batch) & (padded[1] == -1), [
        f"`y` must have shape [batch]: one class index per example of `{of}`, which has", batch,
        "examples; received shape", shape], summarize=_SUMMARIZE)
    with tf.control_dependencies([check]):
        labels = tf.identity(labels)
    check = tf.debugging.Assert(tf.reduce_all((labels >= 0) & (labels < num_classes)), [
        f"`y` must hold class indices in [0, {num_classes}); received values from", tf.reduce_min(labels), "to",
        tf.reduce_max(labels)])
    with tf.control_dependencies([check]):
        return tf.identity(labels)


def _checked_scalar(value, name, bounds=None, what=""):
    """`value` once assertions have found it a scalar within `bounds` (inclusive)."""
    # tf.shape of a declared scalar is folded to []: the shape of a serialized and parsed
    # copy, whose static shape is unknown, is the one received.
    shape = tf.shape(tf.io.parse_tensor(tf.io.serialize_tensor(value), value.dtype))
    check = tf.debugging.Assert(tf.equal(tf.size(shape), 0),
                                [f"`{name}` must be a scalar; received shape", shape], summarize=_SUMMARIZE)
    with tf.control_dependencies([check]):
        value = tf.identity(value)
    if bounds is None:
        return value
    low, high = bounds
    check = tf.debugging.Assert((value >= low) & (value <= high),
                                [f"`{name}` must be {what}in [{low}, {high}]; received", value])
    with tf.control_dependencies([check]):
        return tf.identity(value)


def _float32(outputs):
    return {name: tf.cast(value, tf.float32) for name, value in outputs.items()}
