"""Latency of a keras_vae SavedModel's signatures, the functions TF Serving runs.

    python -m benchmarks.serving                                   # an untrained Burda-sized model
    python -m benchmarks.serving --export_path=saved_models/vae_digits --batch_sizes=1,64

Loads the SavedModel with `tf.saved_model.load` alone and calls `loaded.signatures[name]`,
the concrete functions TF Serving runs, with valid inputs: random binary x, standard normal
z, and `num_samples` = batch size for `sample`. Without --export_path it first exports an
untrained Burda et al. MNIST VAE (784-200-200 tanh -> 50 latents -> Bernoulli) to a
temporary folder. Each (signature, batch size) case is warmed up, then timed --repeats
times, fewer when that would take more than --max_seconds; a call's time includes copying
its outputs to host memory, as a server does to answer. It measures the model and the
TensorFlow runtime, not TF Serving's request handling or the network.

Prints one JSON line per case: `serve_<signature>_b<batch>` with p50 and p99 latency in ms,
examples/s with one call in flight (batch size x calls / total time), the calls timed, the
device (a GPU when TensorFlow sees one) and the `score` signature's k. `run()` returns the
same records.
"""

import json
import os
import statistics
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from absl import app, flags, logging  # noqa: E402

from benchmarks.machine import device_name  # noqa: E402
from keras_vae import export  # noqa: E402

CHOICES = (*export.SIGNATURES, "serving_default")

_EXPORT_PATH = flags.DEFINE_string(
    "export_path", None,
    "SavedModel to time: a version folder, or a model folder (its highest version is used). "
    "Default: export an untrained Burda-sized MNIST VAE to a temporary folder.")
_REPEATS = flags.DEFINE_integer("repeats", 200, "Timed calls per case (at most).", lower_bound=1)
_MAX_SECONDS = flags.DEFINE_float("max_seconds", 5.0, "Time budget per case; lowers the number of calls.",
                                  lower_bound=0.0)
_BATCH_SIZES = flags.DEFINE_list("batch_sizes", ["1", "256"], "Batch sizes to time (num_samples for `sample`).")
_SIGNATURES = flags.DEFINE_list("signatures", list(export.SIGNATURES), f"Signatures to time, from {CHOICES}.")

MIN_REPEATS = 10  # the time budget never cuts a case below this many calls
WARMUP_CALLS = 3


@flags.validator("batch_sizes", f"--batch_sizes must be integers in [1, {export.MAX_SAMPLES}] (sample's cap).")
def _check_batch_sizes(values):
    return bool(values) and all(v.isdigit() and 1 <= int(v) <= export.MAX_SAMPLES for v in values)


@flags.validator("signatures", f"--signatures must be names from {', '.join(CHOICES)}.")
def _check_signatures(values):
    return bool(values) and all(v in CHOICES for v in values)


def resolve(export_path):
    """A version folder: `export_path` itself, or the highest version under it."""
    if os.path.isfile(os.path.join(export_path, "saved_model.pb")):
        return export_path
    found = export.versions(export_path)
    if not found:
        raise FileNotFoundError(f"No SavedModel in {export_path}: expected saved_model.pb or integer version folders")
    return os.path.join(export_path, str(found[-1]))


def inputs(signature, batch_size, metadata, rng):
    """Valid inputs for one call: binary x, standard normal z, or num_samples = batch size; and, for a
    conditional export, labels y (class 0 for `sample`, random classes otherwise)."""
    classes = metadata.get("num_classes")
    if signature == "sample":
        feed = {"num_samples": tf.constant(batch_size, tf.int32), "seed": tf.constant(0, tf.int32)}
        return {**feed, "y": tf.constant(0, tf.int32)} if classes else feed
    if signature == "decode":
        feed = {"z": tf.constant(rng.standard_normal((batch_size, metadata["latent_dim"]), np.float32))}
    else:
        event_shape = metadata["input_shape"][1:]
        feed = {"x": tf.constant(rng.integers(0, 2, (batch_size, *event_shape)).astype(np.float32))}
    return {**feed, "y": tf.constant(rng.integers(0, classes, batch_size), tf.int32)} if classes else feed


def time_case(fn, feed, repeats, max_seconds):
    """Per-call seconds of `fn(**feed)`, outputs copied to host, after a warm-up."""

    def call():
        start = time.perf_counter()
        for value in fn(**feed).values():
            value.numpy()
        return time.perf_counter() - start

    warmup = [call() for _ in range(WARMUP_CALLS)]
    calls = min(repeats, max(MIN_REPEATS, int(max_seconds / max(min(warmup), 1e-9))))
    return [call() for _ in range(calls)]


def _burda_export(export_dir):
    import keras_vae  # noqa: PLC0415  (only needed to build the default model)

    model = keras_vae.mlp_vae((784,), 50, (200, 200), activation="tanh", seed=0)
    return export.export_saved_model(model, export_dir, "vae_burda_untrained")


def run(export_path=None, batch_sizes=(1, 256), signatures=export.SIGNATURES, repeats=200, max_seconds=5.0,
        on_result=None):
    """Time each (signature, batch size) of the SavedModel at `export_path`; return one dict per case.

    `on_result`, if given, is called with each dict as soon as it is measured.
    """
    with tempfile.TemporaryDirectory() as tmp:
        path = resolve(export_path) if export_path else _burda_export(tmp)
        if not os.path.isfile(os.path.join(path, export.METADATA_FILE)):
            raise FileNotFoundError(f"{path} has no {export.METADATA_FILE}, which gives the input shape; "
                                    "export it again with keras_vae.export.export_saved_model or apps.export")
        with open(os.path.join(path, export.METADATA_FILE)) as f:
            metadata = json.load(f)
        loaded = tf.saved_model.load(path)
        device, rng, results = device_name(), np.random.default_rng(0), []
        for signature in signatures:
            fn = loaded.signatures[signature]
            for batch_size in batch_sizes:
                times = time_case(fn, inputs(signature, batch_size, metadata, rng), repeats, max_seconds)
                result = {
                    "case": f"serve_{signature}_b{batch_size}",
                    "signature": signature,
                    "batch_size": batch_size,
                    "p50_ms": round(1e3 * statistics.median(times), 3),
                    "p99_ms": round(1e3 * float(np.percentile(times, 99)), 3),
                    "examples_per_sec": round(batch_size * len(times) / sum(times), 1),
                    "calls": len(times),
                    "device": device,
                    "score_samples": metadata["score_samples"],
                }
                results.append(result)
                if on_result:
                    on_result(result)
    return results


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    if not flags.FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)  # keep the export's INFO lines out of the output
    run(_EXPORT_PATH.value, [int(b) for b in _BATCH_SIZES.value], _SIGNATURES.value, _REPEATS.value,
        _MAX_SECONDS.value, on_result=lambda result: print(json.dumps(result), flush=True))


if __name__ == "__main__":
    app.run(main)
