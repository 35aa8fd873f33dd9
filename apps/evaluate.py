"""Report a trained VAE's test-set bounds and importance-sampled log-likelihood.

    python -m apps.evaluate --model_dir=runs/burda_vae_k1 --iw_samples=5000 --output_json=results.json

Loads `<model_dir>/model.keras` and evaluates on the test split of the dataset it was
trained on (read from `<model_dir>/flags.cfg`; dataset flags given here take precedence),
prints a table and writes the numbers as JSON.
"""

import json
import os
import sys

from absl import flags

from apps import common  # first: quiets TensorFlow's C++ logging before it loads
import keras_vae  # noqa: F401  (registers the serializable classes)
from keras_vae import evaluation, runs

flags.adopt_module_key_flags(common)

_OUTPUT_JSON = flags.DEFINE_string("output_json", None, "Where to write the results as JSON.")
_IW_SAMPLES = flags.DEFINE_integer("iw_samples", 5000, "Importance samples for log p(x).", lower_bound=1)
_BOUND_SAMPLES = flags.DEFINE_integer("bound_samples", 50, "k of the reported IWAE bound L_k.", lower_bound=1)
_SPLIT = flags.DEFINE_enum("split", "test", ["test", "validation"], "Split to evaluate.")
_NUM_EXAMPLES = flags.DEFINE_integer("num_examples", None, "Evaluate the first N examples only (default all).",
                                     lower_bound=1)
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 100, "Examples per step.", lower_bound=1)
_CHUNK_SIZE = flags.DEFINE_integer("chunk_size", 250, "Importance samples per chunk (bounds memory).", lower_bound=1)

_DATASET_FLAGS = ("dataset", "data_dir", "validation_size", "binarize", "seed")


def main(argv):
    del argv  # common.run rejects positional arguments
    common.quiet_logs()
    with common.one_line_errors("evaluate"):
        model = common.load_model(common.MODEL_DIR.value)
        common.adopt_run_flags(common.MODEL_DIR.value, _DATASET_FLAGS)
        x = getattr(common.load_splits(), _SPLIT.value)[: _NUM_EXAMPLES.value]
        results = evaluation.report(model, x, iw_samples=_IW_SAMPLES.value, bound_samples=_BOUND_SAMPLES.value,
                                    batch_size=_BATCH_SIZE.value, chunk_size=_CHUNK_SIZE.value,
                                    seed=common.SEED.value, verbose=1 if sys.stdout.isatty() else 2)
    # The report names its numbers test_*; they are the split's.
    results = {(f"{_SPLIT.value}_{key[5:]}" if key.startswith("test_") else key): value for key, value in results.items()}
    results = {"model_dir": common.MODEL_DIR.value, "dataset": common.DATASET.value, "split": _SPLIT.value, **results}
    width = max(map(len, results))
    for key, value in results.items():
        print(f"{key:<{width}}  {value:.4f}" if isinstance(value, float) else f"{key:<{width}}  {value}")
    if _OUTPUT_JSON.value:
        os.makedirs(os.path.dirname(os.path.abspath(_OUTPUT_JSON.value)), exist_ok=True)
        runs.write_text(_OUTPUT_JSON.value, json.dumps(results, indent=2))


if __name__ == "__main__":
    flags.mark_flags_as_required(["model_dir"])
    common.run(main, "evaluate")
