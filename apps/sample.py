"""Draw pictures of a trained VAE and report which latent dimensions it uses.

    python -m apps.sample --model_dir=runs/burda_vae_k1 --output_dir=runs/burda_vae_k1/pictures

Loads `<model_dir>/model.keras` and the test split of the dataset it was trained on (read
from `<model_dir>/flags.cfg`; dataset flags given here take precedence), then writes into
`--output_dir`:

| file                    | what                                                              |
| ----------------------- | ----------------------------------------------------------------- |
| `samples.png`           | `--num_samples` means of p(x|z), z ~ p(z), drawn with `--seed`     |
| `reconstructions.png`   | test examples above their reconstructions                          |
| `latent_manifold.png`   | decoded grid over the prior's quantiles of z[0], z[1] (rest at 0)  |
| `latent_traversals.png` | the first test example, each active dimension moved by -3 ... +3   |
| `latent_scatter.png`    | E[z|x] coloured by label; only if the dataset loader gives labels  |
| `learning_curves.png`   | elbo / reconstruction / kl per epoch, if the run has history.csv   |
| `collapse.json`         | `evaluation.posterior_collapse_report` on the test split            |

Files are written only once all of them are drawn, so a failure leaves `--output_dir` as it was.
"""

import csv
import json
import os
import shutil
import tempfile

from absl import app, flags

from apps import common  # first: quiets TensorFlow's C++ logging before it loads
import keras_vae  # noqa: F401  (registers the serializable classes)
from keras_vae import evaluation, plots

flags.adopt_module_key_flags(common)

_OUTPUT_DIR = flags.DEFINE_string("output_dir", None, "Folder for the PNG files and collapse.json.")
_NUM_SAMPLES = flags.DEFINE_integer("num_samples", 64, "Samples drawn for samples.png.", lower_bound=1)
_NUM_EXAMPLES = flags.DEFINE_integer("num_examples", None, "Use the first N test examples only (default all).",
                                     lower_bound=1)


@flags.validator("output_dir", "must name a folder")
def _output_dir(value):
    return value is None or bool(value.strip())


# The data flags of the training run; --seed is not among them: here it seeds the samples.
_DATASET_FLAGS = ("dataset", "data_dir", "validation_size", "binarize")


def _training_flags(model_dir):
    """Dataset flags of the training run, for those not given on this command line."""
    trained = common.run_flags(model_dir)
    for name in _DATASET_FLAGS:
        if name in trained and not flags.FLAGS[name].present:
            flags.FLAGS[name].parse(trained[name])


def _first_missing(folder):
    """The outermost folder that `os.makedirs(folder)` would create, or None if `folder` exists."""
    folder, missing = os.path.abspath(folder), None
    while not os.path.exists(folder):
        folder, missing = os.path.dirname(folder), folder
    return missing


def _history_rows(model_dir):
    """The rows of `<model_dir>/history.csv` ([] without one)."""
    path = os.path.join(model_dir, "history.csv")
    if not os.path.isfile(path):
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def draw(model, x, labels, history_rows, folder, num_samples=64, seed=0, about=None):
    """Write the pictures and collapse.json (with the entries of `about` first) into `folder`.

    Returns the names written and the collapse report.
    """
    plots.samples(model, os.path.join(folder, "samples.png"), num=num_samples, seed=seed)
    plots.reconstructions(model, x, os.path.join(folder, "reconstructions.png"))
    plots.latent_manifold(model, os.path.join(folder, "latent_manifold.png"))
    plots.latent_traversals(model, x, os.path.join(folder, "latent_traversals.png"))
    if labels is not None:
        plots.latent_scatter(model, x, labels, os.path.join(folder, "latent_scatter.png"))
    if history_rows:
        try:
            plots.learning_curves(history_rows, os.path.join(folder, "learning_curves.png"))
        except ValueError as error:
            raise ValueError(f"history.csv of the run: {error}") from error
    report = evaluation.posterior_collapse_report(model, x)
    with open(os.path.join(folder, "collapse.json"), "w") as f:
        json.dump({**(about or {}), **report}, f, indent=2)
    return sorted(os.listdir(folder)), report


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    common.quiet_logs()
    model_dir, output_dir = common.MODEL_DIR.value, _OUTPUT_DIR.value
    with common.one_line_errors("sample"):
        model = common.load_model(model_dir)
        _training_flags(model_dir)
        splits = common.load_splits()
        x = splits.test[: _NUM_EXAMPLES.value]
        labels = getattr(splits, "test_labels", None)  # data.Splits has no labels yet
        labels = None if labels is None else labels[: _NUM_EXAMPLES.value]
        model.check_data(x)
        created = _first_missing(output_dir)
        os.makedirs(output_dir, exist_ok=True)
        staging = tempfile.mkdtemp(prefix=".sample-", dir=output_dir)
        try:
            about = {"model_dir": model_dir, "dataset": common.DATASET.value, "split": "test"}
            names, report = draw(model, x, labels, _history_rows(model_dir), staging, _NUM_SAMPLES.value,
                                 common.SEED.value, about)
            for name in names:
                os.replace(os.path.join(staging, name), os.path.join(output_dir, name))
        except BaseException:
            if created:
                shutil.rmtree(created, ignore_errors=True)
            raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    for name in names:
        print(f"Wrote {os.path.join(output_dir, name)}")
    if labels is None:
        print("No latent_scatter.png: the dataset loader gives no labels")
    print(report["summary"])


if __name__ == "__main__":
    flags.mark_flags_as_required(["model_dir", "output_dir"])
    app.run(main)
