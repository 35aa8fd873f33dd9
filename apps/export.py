"""Export a trained VAE as a SavedModel for TF Serving.

    python -m apps.export --model_dir=runs/digits --export_dir=saved_models

Loads `<model_dir>/model.keras` and writes `<export_dir>/<model_name>/<version>/`: the next
integer version unless `--version` is given, never overwriting one. `apps.train` exports
through `export()` below at the end of training. The signatures (`encode`, `decode`,
`reconstruct`, `sample`, `score`, `serving_default`) are described in `keras_vae.export`;
those of a conditional run (`apps.train --conditional`) also take the labels y.
"""

import os
import re

from absl import flags

from apps import common

keras_vae = common.LazyModule("keras_vae")

flags.adopt_module_key_flags(common)

EXPORT_DIR = flags.DEFINE_string("export_dir", "saved_models",
                                 "SavedModel base folder, the one TF Serving watches (apps.train: empty to skip).")
MODEL_NAME = flags.DEFINE_string("model_name", None,
                                 "Model name under --export_dir (default: the training run's, else vae_<dataset>).")
VERSION = flags.DEFINE_integer("version", None, "Version to write (default: one above the highest present).",
                               lower_bound=1)
SCORE_SAMPLES = flags.DEFINE_integer(
    "score_samples", 100,  # keras_vae.export.SCORE_SAMPLES, spelled out (apps.common)
    "Importance samples k behind the score signature's log_likelihood (fixed at export).", lower_bound=1)


def model_name(model_dir):
    """The model's name under --export_dir: --model_name, else the training run's, else vae_<dataset>,
    where a --dataset path gives its file or folder name without extension (`vae_my_images`)."""
    trained = common.run_flags(model_dir)
    dataset = os.path.splitext(os.path.basename(os.path.normpath(trained.get("dataset", common.DATASET.value))))[0]
    return MODEL_NAME.value or trained.get("model_name") or "vae_" + re.sub(r"[^\w.-]", "_", dataset)


def export(model, model_dir, run_id=None):
    """Export `model`, trained in `model_dir`, as the flags say; return the new version's path.
    `run_id` (apps.train's) goes into the metadata, so a rerun finds a version it wrote."""
    dataset = common.run_flags(model_dir).get("dataset", common.DATASET.value)
    metadata = {"dataset": dataset, "training_metrics": common.final_metrics(model_dir)}
    if run_id:
        metadata["run_id"] = run_id
    return keras_vae.export.export_saved_model(model, EXPORT_DIR.value, model_name(model_dir), version=VERSION.value,
                                               score_samples=SCORE_SAMPLES.value, metadata=metadata)


def main(argv):
    del argv  # common.run rejects positional arguments
    common.quiet_logs()
    with common.one_line_errors("export"):
        if not EXPORT_DIR.value:
            raise ValueError("--export_dir must name a folder")
        model = common.load_model(common.MODEL_DIR.value)
        path = export(model, common.MODEL_DIR.value)
    print(f"Exported SavedModel to {path}")
    labels = f"; they take labels y, classes in [0, {model.num_classes})" if model.num_classes else ""
    print(f"Signatures: {', '.join(keras_vae.export.SIGNATURES)}; serving_default = "
          f"{keras_vae.export.DEFAULT_SIGNATURE}{labels}. Inspect with: saved_model_cli show --all --dir "
          f"{os.path.abspath(path)}")


if __name__ == "__main__":
    flags.mark_flags_as_required(["model_dir"])
    common.run(main, "export", groups=[
        common.RUN_GROUP, common.DATA_GROUP, ("output", ("export_dir", "model_name", "version", "score_samples"))])
