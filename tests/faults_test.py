"""Fault tolerance of apps.train, tested with real subprocesses and real signals: SIGKILL and
SIGTERM mid-run then resume, NaN losses, unwritable folders, a full disk during export,
determinism, and tf.distribute (MirroredStrategy over 2 logical CPUs, two worker processes)."""

import csv
import json
import os
import signal
import socket
import subprocess
import sys
import time

import keras
import numpy as np
import pytest

from keras_vae import runs
from apps_test import ROOT, TINY, assert_ok, assert_one_line_error, message_lines, read_history, run_app
from helpers import tree_digest

# Small batches, so that an epoch takes long enough to be interrupted in the middle.
# A zero output bias, so a fresh model's first epoch is far from a trained one's (the resume checks below).
RESUMABLE = ["--dataset=digits", "--epochs=8", "--latent_dim=2", "--hidden_units=16", "--batch_size=8",
             "--noinit_output_bias"]


def _env():
    env = dict(os.environ)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    return env


def _start(args):
    return subprocess.Popen([sys.executable, "-m", "apps.train", *args], cwd=ROOT, env=_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for_epochs(model_dir, count, process, timeout=300):
    """Block until history.csv has `count` epochs, then a little longer, so we land mid-epoch."""
    path = os.path.join(model_dir, "history.csv")
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert process.poll() is None, process.communicate()
        if os.path.exists(path) and len(read_history(model_dir)) >= count:
            time.sleep(0.3)
            return
        time.sleep(0.05)
    raise TimeoutError(f"{path} did not reach {count} epochs")


def _first_epoch_line(stdout):
    return next(line for line in stdout.splitlines() if line.startswith("Epoch "))


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    root = tmp_path_factory.mktemp("uninterrupted")
    result = run_app("train", *RESUMABLE, f"--model_dir={root / 'model'}", f"--export_dir={root / 'export'}")
    assert_ok(result)
    return read_history(str(root / "model"))


def test_sigkill_mid_epoch_then_resume(tmp_path, uninterrupted):
    model_dir, export_dir = str(tmp_path / "model"), str(tmp_path / "export")
    args = [*RESUMABLE, f"--model_dir={model_dir}", f"--export_dir={export_dir}"]
    process = _start(args)
    _wait_for_epochs(model_dir, 3, process)
    process.send_signal(signal.SIGKILL)
    process.communicate(timeout=60)
    assert process.returncode == -signal.SIGKILL
    done_before = len(read_history(model_dir))
    assert 3 <= done_before < 8
    assert os.path.isdir(os.path.join(model_dir, "backup"))
    assert not os.path.exists(export_dir)

    resumed = run_app("train", *args)
    assert_ok(resumed)
    # It continued from the backup: the epoch counter did not restart ...
    first = int(_first_epoch_line(resumed.stdout).split()[1].split("/")[0])
    assert done_before <= first <= done_before + 1
    rows = read_history(model_dir)
    assert [int(row["epoch"]) for row in rows] == list(range(8))
    assert all(float(row["seconds"]) > 0 for row in rows)  # the epochs before the kill kept their times
    # ... nor did the weights: its first epoch is as good as the last one before the kill,
    # far from a fresh model's first epoch.
    assert float(rows[first - 1]["elbo"]) > float(rows[0]["elbo"]) + 2
    assert float(rows[first - 1]["elbo"]) == pytest.approx(float(rows[first - 2]["elbo"]), abs=2)
    # And it finished: final model, backup removed, SavedModel exported, as good as a run never killed.
    assert os.path.isfile(os.path.join(model_dir, "model.keras"))
    assert not os.path.exists(os.path.join(model_dir, "backup"))
    assert os.listdir(os.path.join(export_dir, "vae_digits")) == ["1"]
    assert float(rows[-1]["val_elbo"]) == pytest.approx(float(uninterrupted[-1]["val_elbo"]), abs=1.5)


def test_sigterm_saves_then_resumes(tmp_path):
    model_dir, export_dir = str(tmp_path / "model"), str(tmp_path / "export")
    args = [*RESUMABLE, f"--model_dir={model_dir}", f"--export_dir={export_dir}"]
    process = _start(args)
    _wait_for_epochs(model_dir, 2, process)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 128 + signal.SIGTERM
    lines = message_lines(stderr)
    assert len(lines) == 1 and "stopped by SIGTERM" in lines[0] and "resume" in lines[0], stderr
    saved_epoch = runs.RunBackup(os.path.join(model_dir, "backup")).latest_record()["epoch"]
    assert saved_epoch >= 2
    assert not os.path.exists(export_dir)

    resumed = run_app("train", *args)
    assert_ok(resumed)
    assert _first_epoch_line(resumed.stdout).startswith(f"Epoch {saved_epoch + 1}/8")
    assert [int(row["epoch"]) for row in read_history(model_dir)] == list(range(8))
    assert os.listdir(os.path.join(export_dir, "vae_digits")) == ["1"]


def test_nan_loss_stops_with_one_line_and_exports_nothing(tmp_path):
    result = run_app("train", *TINY, "--learning_rate=1e6", f"--model_dir={tmp_path / 'model'}",
                     f"--export_dir={tmp_path / 'export'}")
    line = assert_one_line_error(result, "train: error: loss became nan at epoch 1, batch", "nothing exported")
    assert "learning_rate" in line
    assert not (tmp_path / "export").exists()
    assert not (tmp_path / "model" / "model.keras").exists()


@pytest.mark.parametrize("flag", ["model_dir", "export_dir"])
def test_unwritable_folders_give_one_line(tmp_path, flag):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    folders = {"model_dir": tmp_path / "model", "export_dir": tmp_path / "export"}
    folders[flag] = blocker / "sub"
    result = run_app("train", *TINY, *(f"--{name}={path}" for name, path in folders.items()))
    assert_one_line_error(result, "train: error:", str(blocker))
    assert blocker.read_text() == "not a folder"
    if flag == "model_dir":
        assert sorted(os.listdir(tmp_path)) == ["a_file"]


_FULL_DISK = """
import resource, runpy, signal, sys
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the limit fail with EFBIG, like a full disk
resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, 64 * 1024))
sys.argv = ["apps.export", *sys.argv[1:]]
runpy.run_module("apps.export", run_name="__main__")
"""


def test_full_disk_during_export_leaves_existing_versions_intact(tmp_path):
    model_dir, export_dir = tmp_path / "model", tmp_path / "export"
    assert_ok(run_app("train", *TINY, f"--model_dir={model_dir}", f"--export_dir={export_dir}"))
    version_1 = export_dir / "vae_digits" / "1"
    before = tree_digest(version_1)
    result = subprocess.run([sys.executable, "-c", _FULL_DISK, f"--model_dir={model_dir}",
                             f"--export_dir={export_dir}"], cwd=ROOT, env=_env(), capture_output=True, text=True,
                            timeout=600)
    assert_one_line_error(result, "export: error:")
    assert os.listdir(export_dir / "vae_digits") == ["1"]  # no version 2, no staging folder left behind
    assert tree_digest(version_1) == before


def test_deterministic_runs_are_identical(tmp_path):
    histories = []
    for run in ("a", "b"):
        result = run_app("train", *TINY, "--deterministic", "--seed=3", f"--model_dir={tmp_path / run}",
                         "--export_dir=")
        assert_ok(result)
        histories.append([{k: v for k, v in row.items() if k != "seconds"}  # wall times differ
                          for row in read_history(str(tmp_path / run))])
    assert histories[0] == histories[1]
    weights = [keras.saving.load_model(tmp_path / run / "model.keras").get_weights() for run in ("a", "b")]
    for a, b in zip(*weights):
        np.testing.assert_array_equal(a, b)


# ------------------------------------------------------------------ tf.distribute
_MIRRORED = """
import json
import tensorflow as tf
tf.config.set_logical_device_configuration(
    tf.config.list_physical_devices("CPU")[0], [tf.config.LogicalDeviceConfiguration()] * 2)
import keras, numpy as np, keras_vae

x = keras_vae.data.load("digits").train[:512]

def one_step(strategy):
    keras.utils.set_random_seed(0)
    with strategy.scope():
        model = keras_vae.mlp_vae((8, 8, 1), 2, (16,), num_samples=200, seed=0)
        model.compile(optimizer=keras.optimizers.SGD(0.05))
    before = np.concatenate([w.numpy().ravel() for w in model.trainable_weights])
    logged = model.fit(x, batch_size=512, epochs=1, shuffle=False, verbose=0).history["elbo"][0]
    after = np.concatenate([w.numpy().ravel() for w in model.trainable_weights])
    evaluated = model.evaluate(x, batch_size=256, verbose=0, return_dict=True)["elbo"]
    return {"replicas": strategy.num_replicas_in_sync, "before": before.tolist(),
            "update": (after - before).tolist(), "logged_elbo": logged, "evaluated_elbo": evaluated}

devices = [d.name for d in tf.config.list_logical_devices("CPU")]
print(json.dumps([one_step(tf.distribute.OneDeviceStrategy(devices[0])),
                  one_step(tf.distribute.MirroredStrategy(devices))]))
"""


def test_mirrored_strategy_matches_one_device():
    result = subprocess.run([sys.executable, "-c", _MIRRORED], cwd=ROOT, env=_env(), capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    one, mirrored = json.loads(result.stdout.strip().splitlines()[-1])
    assert (one["replicas"], mirrored["replicas"]) == (1, 2)
    np.testing.assert_array_equal(one["before"], mirrored["before"])
    # The same global batch of 512 gives the same step: each replica's 256 examples count 1/2.
    # (A missing 1/N would double it.) The z samples differ, hence the tolerance.
    update_one, update_mirrored = np.asarray(one["update"]), np.asarray(mirrored["update"])
    assert np.linalg.norm(update_mirrored - update_one) < 0.1 * np.linalg.norm(update_one)
    assert mirrored["logged_elbo"] == pytest.approx(one["logged_elbo"], abs=0.3)
    assert mirrored["evaluated_elbo"] == pytest.approx(one["evaluated_elbo"], abs=0.3)


def _free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def test_multi_worker_training_agrees_across_two_processes(tmp_path):
    cluster = {"worker": [f"127.0.0.1:{port}" for port in _free_ports(2)]}
    model_dir, export_dir = tmp_path / "model", tmp_path / "export"
    args = ["--dataset=digits", "--epochs=2", "--latent_dim=2", "--hidden_units=16", "--batch_size=32",
            "--strategy=multi_worker", f"--model_dir={model_dir}", f"--export_dir={export_dir}"]
    workers = []
    for index in range(2):
        env = _env()
        env["TF_CONFIG"] = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})
        workers.append(subprocess.Popen([sys.executable, "-m", "apps.train", *args], cwd=ROOT, env=env,
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    for worker in workers:
        stdout, stderr = worker.communicate(timeout=600)
        assert worker.returncode == 0, stderr[-3000:]
    # Worker 0 is the chief: it owns --model_dir and the export; worker 1 wrote to a scratch folder.
    chief = keras.saving.load_model(model_dir / "model.keras").get_weights()
    other = keras.saving.load_model(model_dir / "worker_1" / "model.keras").get_weights()
    for a, b in zip(chief, other):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    assert os.listdir(export_dir / "vae_digits") == ["1"]
    with open(model_dir / "history.csv") as f:
        assert len(list(csv.DictReader(f))) == 2
