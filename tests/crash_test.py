"""A `kill -9` at any write point of apps.train leaves a run that the same command finishes.

Each case starts a real apps.train subprocess with `KERAS_VAE_KILL_AT=<point>`, so the
package SIGKILLs itself exactly there (`keras_vae.runs.kill_point`), then reruns the same
command without it and checks: exit 0, what the rerun said it did, a final model as good
as an uninterrupted run's, exactly one SavedModel version and it is that model, no
temporary file or staging folder left behind, and run.json marking the run finished.
"""

import os
import signal

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_vae
from apps_test import TINY, assert_ok, read_history, run_app
from keras_vae import runs

ARGS = [arg for arg in TINY if not arg.startswith("--epochs")] + ["--epochs=3", "--image_every=0"]

# point -> a fragment of what the rerun prints (stdout and stderr together)
POINTS = {
    "flagfile": "Epoch 1/3",                                      # nothing trained yet: a fresh start
    "backup_weights": "Epoch 1/3",                                # killed in the first backup
    "backup_weights_rename#3": "at epoch 3/3 from its backup",    # in a later backup: the one before counts
    "backup_record#2": "generation 2 in",                         # record torn: generation 2 skipped, 1 used
    "checkpoint#2": "at epoch 3/3 from its backup",               # the per-epoch model.keras
    "history#2": "at epoch 2/3 from its backup",                # the row comes before the backup: epoch 2 redone
    "backup_prune": "all 3 epochs had finished",                  # cleaning old generations after the last
    "final_save": "all 3 epochs had finished",
    "state_trained": "all 3 epochs had finished",
    "backup_cleanup": "completing the run's missing steps",       # between the final save and the export
    "export": "completing the run's missing steps",               # mid-export: its staging folder is dropped
    "state_exported": "completing the run's missing steps",       # exported, not yet noted: adopted, not redone
}


def _test_elbo(model_dir):
    model = keras.saving.load_model(os.path.join(model_dir, "model.keras"))
    x = keras_vae.data.load("digits").test
    return float(np.mean(model.compute_terms(x, num_samples=20, seed=0)["elbo"])), model, x


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    root = tmp_path_factory.mktemp("uninterrupted")
    assert_ok(run_app("train", *ARGS, f"--model_dir={root / 'model'}", f"--export_dir={root / 'export'}"))
    return _test_elbo(str(root / "model"))[0]


def _leftovers(*folders):
    found = []
    for folder in folders:
        for path, dirs, files in os.walk(folder):
            found += [os.path.join(path, n) for n in dirs + files if ".tmp-" in n or "partial-" in n]
    return found


@pytest.mark.parametrize("point", list(POINTS))
def test_kill_at_a_write_point_then_the_same_command_finishes(tmp_path, uninterrupted, point):
    model_dir, export_dir = tmp_path / "model", tmp_path / "export"
    args = [*ARGS, f"--model_dir={model_dir}", f"--export_dir={export_dir}"]
    killed = run_app("train", *args, env={runs.KILL_AT: point})
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]

    rerun = run_app("train", *args)
    assert_ok(rerun)
    assert POINTS[point] in rerun.stdout + rerun.stderr, rerun.stdout[-2000:] + rerun.stderr[-2000:]
    assert [int(row["epoch"]) for row in read_history(str(model_dir))] == [0, 1, 2]
    elbo, model, x = _test_elbo(str(model_dir))
    assert elbo == pytest.approx(uninterrupted, abs=1.5)
    assert os.listdir(export_dir / "vae_digits") == ["1"]
    served = tf.saved_model.load(str(export_dir / "vae_digits" / "1")).signatures["encode"](x=tf.constant(x[:16]))
    np.testing.assert_allclose(served["z_mean"], model.encode(x[:16]).mean(), rtol=1e-4, atol=1e-5)
    assert not (model_dir / "backup").exists()
    assert _leftovers(model_dir, export_dir) == []
    # Finished and complete: run.json records every step, and the final model's SHA-256, so the
    # same command run a third time would refuse to overwrite it (apps_test runs that refusal).
    state = runs.RunState(str(model_dir))
    assert state.get("trained") and state.get("pictures"), state.values
    assert os.path.samefile(state.get("exported"), export_dir / "vae_digits" / "1"), state.values
    assert state.get("model_sha256") == runs.sha256(str(model_dir / "model.keras"))
