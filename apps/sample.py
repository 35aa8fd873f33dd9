"""Draw pictures of a trained VAE and report which latent dimensions it uses.

    python -m apps.sample --model_dir=runs/burda_vae_k1 --output_dir=runs/burda_vae_k1/pictures

Loads `<model_dir>/model.keras` and the test split of the dataset it was trained on (read
from `<model_dir>/flags.cfg`; dataset flags given here take precedence), then writes into
`--output_dir`:

| file                    | what                                                                     |
| ----------------------- | ------------------------------------------------------------------------ |
| `samples.png`           | `--num_samples` means of p(x|z), z ~ p(z), drawn with `--seed`           |
| `reconstructions.png`   | the first 8 test examples above their reconstructions                    |
| `latent_manifold.png`   | decoded grid over the prior's quantiles of the two most active latent    |
|                         | dimensions (named on the axes; the others at 0)                          |
| `latent_traversals.png` | the first test example, the 10 most active dimensions moved by -3 ... +3 |
| `latent_scatter.png`    | E[z|x] coloured by label; only if the dataset loader gives labels        |
| `learning_curves.png`   | [iwae_bound /] elbo / reconstruction / kl per epoch, if history.csv      |
| `collapse.json`         | `evaluation.posterior_collapse_report` on the test split                 |

For a hierarchical model (`apps.train --latent_dim=6,3`: stochastic layers z_1, ..., z_n,
the decoder reading z_1 only; dimensions named by layer, "z_2[7]"):

| file                    | what                                                                     |
| ----------------------- | ------------------------------------------------------------------------ |
| `samples.png`           | means of p(x|z_1), z drawn top-down: z_n ~ N(0, I), then p(z_l|z_{l+1})  |
| `reconstructions.png`   | as above: decoded from z_1 = E[z_1|x]                                    |
| `latent_manifold.png`   | grid over the N(0, 1) quantiles of the two most active units of the top  |
|                         | layer z_n (others at 0), the layers below at the prior's conditional     |
|                         | means top-down (z_l = E[z_l|z_{l+1}]), decoded from that z_1             |
| `latent_traversals.png` | the first test example, the 10 most active units of z_1 (the layer the   |
|                         | decoder reads) moved by -3 ... +3 around E[z_1|x]                        |
| `latent_scatter.png`    | the top layer's posterior means, its two most active units, by label     |
| `learning_curves.png`   | as above                                                                 |
| `collapse.json`         | per layer (`keras_vae.hierarchical.layer_report`): `kl_per_layer`        |
|                         | (against the conditional prior p(z_l|z_{l+1}); no per-dimension KL       |
|                         | against N(0, 1)), `activity_per_layer`, `active_units_per_layer`,        |
|                         | `inactive_units_per_layer` and a one-line `summary`                      |

A conditional run (`apps.train --conditional`) uses the test labels: each test example is
encoded and reconstructed with its own class, `samples.png` has one row per class (the
same z down each column), and `latent_manifold.png` is of the first test example's class.
`--label=<class>` draws `samples.png` and `latent_manifold.png` for that class only.

Files are written only once all of them are drawn, so a failure leaves `--output_dir` as it was.
"""

import os
import shutil
import tempfile

from absl import flags

from apps import common

plots = common.LazyModule("keras_vae.plots")

flags.adopt_module_key_flags(common)

_OUTPUT_DIR = flags.DEFINE_string("output_dir", None, "Folder for the PNG files and collapse.json.")
_NUM_SAMPLES = flags.DEFINE_integer("num_samples", 64, "Samples drawn for samples.png.", lower_bound=1)
_NUM_EXAMPLES = flags.DEFINE_integer("num_examples", None, "Use the first N test examples only (default all).",
                                     lower_bound=1)
_LABEL = flags.DEFINE_integer("label", None, "Conditional runs: draw samples.png and latent_manifold.png for this "
                              "class only (default: one row of samples per class, the manifold of the first test "
                              "example's class).", lower_bound=0)


@flags.validator("output_dir", "must name a folder")
def _output_dir(value):
    return value is None or bool(value.strip())


def _first_missing(folder):
    """The outermost folder that `os.makedirs(folder)` would create, or None if `folder` exists."""
    folder, missing = os.path.abspath(folder), None
    while not os.path.exists(folder):
        folder, missing = os.path.dirname(folder), folder
    return missing


def main(argv):
    del argv  # common.run rejects positional arguments
    common.quiet_logs()
    model_dir, output_dir = common.MODEL_DIR.value, _OUTPUT_DIR.value
    with common.one_line_errors("sample"):
        model = common.load_model(model_dir)
        # The training run's data flags; not its --seed: here --seed seeds the samples.
        common.adopt_run_flags(model_dir, common.DATASET_FLAGS)
        splits = common.load_splits(bernoulli=common.is_bernoulli(model))
        x = splits.test[: _NUM_EXAMPLES.value]
        labels = splits.test_labels
        labels = None if labels is None else labels[: _NUM_EXAMPLES.value]
        _check_conditioning(model, model_dir, labels)
        model.check_data(x, labels if model.num_classes else None)
        created = _first_missing(output_dir)
        os.makedirs(output_dir, exist_ok=True)
        staging = tempfile.mkdtemp(prefix=".sample-", dir=output_dir)
        try:
            about = {"model_dir": model_dir, "dataset": common.DATASET.value, "split": "test"}
            names, report = plots.write_pictures(model, x, staging, labels=labels,
                                                 history_rows=common.history_rows(model_dir),
                                                 num_samples=_NUM_SAMPLES.value, seed=common.SEED.value, about=about,
                                                 label=_LABEL.value)
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
    if model.num_classes:  # the same choice as plots.write_pictures
        shown = (f"class {_LABEL.value} (--label)" if _LABEL.value is not None
                 else f"class {labels[0]}, the first test example's")
        print(f"Conditional model: latent_manifold.png shows {shown}")
    print(report["summary"])


def _check_conditioning(model, model_dir, labels):
    """A conditional model needs the test labels; --label needs a conditional model and one of its classes."""
    if model.num_classes and labels is None:
        raise ValueError(f"{model_dir} holds a conditional VAE, which needs the test labels, and "
                         f"{common.missing_labels()}")
    if _LABEL.value is None:
        return
    if not model.num_classes:
        raise ValueError(f"--label={_LABEL.value} is for conditional runs; {model_dir} holds an unconditional VAE")
    if _LABEL.value >= model.num_classes:
        raise ValueError(f"--label={_LABEL.value} is not a class of the model: its classes are 0 ... "
                         f"{model.num_classes - 1}")


if __name__ == "__main__":
    flags.mark_flags_as_required(["model_dir", "output_dir"])
    common.run(main, "sample", groups=[
        common.RUN_GROUP, common.DATA_GROUP, ("pictures", ("num_samples", "num_examples", "label")),
        ("output", ("output_dir",)),
    ])
