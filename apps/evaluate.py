"""Report a trained VAE's test-set bounds and importance-sampled log-likelihood.

    python -m apps.evaluate --model_dir=runs/burda_vae_k1 --iw_samples=5000 --output_json=results.json

Loads `<model_dir>/model.keras` and evaluates on the test split of the dataset it was
trained on (read from `<model_dir>/flags.cfg`; dataset flags given here take precedence),
prints a table and writes the numbers as JSON. A conditional model is evaluated on the
split's labels (log p(x|y)). Beside the NLL the table says when it is not -log p(x)
(`nll_caveat`); reasons to distrust the importance-sampled estimate (Pareto k-hat of its
weights, `keras_vae.diagnostics`) go to stderr as `evaluate: warning: ...` lines, and all of
it into the JSON (`nll_is_log_likelihood`, `nll_caveat`, `is_ess_*`, `pareto_k_*`, `warnings`).

A hierarchical model (`apps.train --latent_dim=100,50`: stochastic layers z_1, ..., z_n) is
also reported per layer (`keras_vae.hierarchical.layer_report`): `latent_dims`,
`kl_per_layer` (nats per example, each layer's KL against its conditional prior) and
`active_units_per_layer`, whose sum is `active_units`.
"""

import json
import os
import sys

from absl import flags

from apps import common

evaluation = common.LazyModule("keras_vae.evaluation")
runs = common.LazyModule("keras_vae.runs")

flags.adopt_module_key_flags(common)

_OUTPUT_JSON = flags.DEFINE_string("output_json", None, "Where to write the results as JSON.")
_IW_SAMPLES = flags.DEFINE_integer("iw_samples", 5000, "Importance samples for log p(x).", lower_bound=1)
_BOUND_SAMPLES = flags.DEFINE_integer("bound_samples", 50, "k of the reported IWAE bound L_k.", lower_bound=1)
_SPLIT = flags.DEFINE_enum("split", "test", ["test", "validation"], "Split to evaluate.")
_NUM_EXAMPLES = flags.DEFINE_integer("num_examples", None, "Evaluate the first N examples only (default all).",
                                     lower_bound=1)
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 100, "Examples per step.", lower_bound=1)
_CHUNK_SIZE = flags.DEFINE_integer("chunk_size", 50, "Importance samples per chunk and example (bounds memory; "
                                   "on a GPU, larger chunks may run faster).", lower_bound=1)

# The training run's data flags, and its --seed (which seeds the importance samples here).
_DATASET_FLAGS = (*common.DATASET_FLAGS, "seed")


def main(argv):
    del argv  # common.run rejects positional arguments
    common.quiet_logs()
    with common.one_line_errors("evaluate"):
        model = common.load_model(common.MODEL_DIR.value)
        common.adopt_run_flags(common.MODEL_DIR.value, _DATASET_FLAGS)
        splits = common.load_splits(bernoulli=common.is_bernoulli(model))
        x = getattr(splits, _SPLIT.value)[: _NUM_EXAMPLES.value]
        results = evaluation.report(model, x, iw_samples=_IW_SAMPLES.value, bound_samples=_BOUND_SAMPLES.value,
                                    batch_size=_BATCH_SIZE.value, chunk_size=_CHUNK_SIZE.value,
                                    seed=common.SEED.value, verbose=1 if sys.stdout.isatty() else 2,
                                    labels=_split_labels(model, splits))
    # The report names its numbers test_*; they are the split's.
    results = {(f"{_SPLIT.value}_{key[5:]}" if key.startswith("test_") else key): value for key, value in results.items()}
    results = {"model_dir": common.MODEL_DIR.value, "dataset": common.DATASET.value, "split": _SPLIT.value, **results}
    _print(results)
    if _OUTPUT_JSON.value:
        os.makedirs(os.path.dirname(os.path.abspath(_OUTPUT_JSON.value)), exist_ok=True)
        runs.write_text(_OUTPUT_JSON.value, json.dumps(results, indent=2))


def _split_labels(model, splits):
    """The evaluated examples' labels for a conditional model (its numbers are of log p(x|y)); None otherwise."""
    if not model.num_classes:
        return None
    labels = getattr(splits, f"{_SPLIT.value}_labels")
    if labels is None:
        raise ValueError(f"The model is conditional (num_classes={model.num_classes}) but the {_SPLIT.value} split of "
                         f"{common.DATASET.value} has no labels")
    return labels[: _NUM_EXAMPLES.value]


def _text(value):
    """A number of the table: floats to 4 decimals, lists (per layer) item by item, None as n/a."""
    if isinstance(value, list):
        return "[" + ", ".join(map(_text, value)) + "]"
    return f"{value:.4f}" if isinstance(value, float) else "n/a" if value is None else str(value)


def _print(results):
    """The results as a table on stdout, the NLL's caveat beside it; the warnings on stderr."""
    shown = {key: value for key, value in results.items() if key not in ("nll_caveat", "warnings")}
    width = max(map(len, shown))
    for key, value in shown.items():
        text = _text(value)
        if key == f"{_SPLIT.value}_nll" and results["nll_caveat"]:
            text += f"  (caveat: {results['nll_caveat']})"
        print(f"{key:<{width}}  {text}")
    for warning in results["warnings"]:
        print(f"evaluate: warning: {warning}", file=sys.stderr)


if __name__ == "__main__":
    flags.mark_flags_as_required(["model_dir"])
    common.run(main, "evaluate", groups=[
        common.RUN_GROUP, common.DATA_GROUP,
        ("evaluation", ("split", "num_examples", "iw_samples", "bound_samples", "batch_size", "chunk_size")),
        ("output", ("output_json",)),
    ])
