"""keras_vae.runs in-process: atomic writes, backups that skip torn generations, the history file."""

import csv
import os
import signal
import subprocess
import sys

import keras
import numpy as np
import pytest

import keras_vae
from keras_vae import runs


def _model():
    model = keras_vae.mlp_vae((8, 8, 1), latent_dim=2, hidden_units=(8,), seed=0)
    model.compile(optimizer="adam")
    return model


def test_atomic_path_keeps_the_old_file_when_the_writer_fails(tmp_path):
    path = tmp_path / "flags.cfg"
    runs.write_text(path, "old\n")
    with pytest.raises(RuntimeError):
        with runs.atomic_path(str(path)) as temporary:
            with open(temporary, "w") as f:
                f.write("half")
            raise RuntimeError("killed")
    assert path.read_text() == "old\n" and os.listdir(tmp_path) == ["flags.cfg"]
    runs.write_text(path, "new\n")
    assert path.read_text() == "new\n" and os.listdir(tmp_path) == ["flags.cfg"]


def test_atomic_path_keeps_the_extension_keras_savers_need(tmp_path):
    model = _model()
    runs.save_model(model, str(tmp_path / "model.keras"))
    assert isinstance(keras.saving.load_model(tmp_path / "model.keras"), keras_vae.VAE)


def test_backup_restores_weights_optimizer_and_epoch(tmp_path):
    x = keras_vae.data.load("digits").train[:128]
    model = _model()
    backup = runs.RunBackup(str(tmp_path / "backup"))
    model.fit(x, batch_size=32, epochs=3, verbose=0, callbacks=[backup])
    assert backup.generations() == [3, 2]  # the two newest kept
    fresh = _model()
    assert runs.RunBackup(str(tmp_path / "backup")).restore(fresh) == 3
    for a, b in zip(fresh.get_weights(), model.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert int(fresh.optimizer.iterations) == int(model.optimizer.iterations) == 12


@pytest.mark.parametrize("damage", ["truncate_weights", "remove_record", "tamper_record"])
def test_backup_skips_a_damaged_generation_for_the_one_before(tmp_path, damage):
    x = keras_vae.data.load("digits").train[:64]
    model = _model()
    folder = tmp_path / "backup"
    model.fit(x, batch_size=32, epochs=2, verbose=0, callbacks=[runs.RunBackup(str(folder))])
    newest = folder / "gen-000002.weights.h5"
    if damage == "truncate_weights":
        newest.write_bytes(newest.read_bytes()[:1000])
    elif damage == "remove_record":
        (folder / "gen-000002.json").unlink()
    else:
        (folder / "gen-000002.json").write_text('{"epoch": 2, "sha256": "0"}')
    notices = []
    assert runs.RunBackup(str(folder), report=notices.append).restore(_model()) == 1
    assert len(notices) == 1 and "generation 2" in notices[0] and "skipped" in notices[0]


def test_backup_with_no_good_generation_starts_from_scratch(tmp_path):
    folder = tmp_path / "backup"
    folder.mkdir()
    (folder / "gen-000001.json").write_text("{")  # torn
    notices = []
    assert runs.RunBackup(str(folder), report=notices.append).restore(_model()) == 0
    assert notices[-1].startswith("no usable backup") and "from scratch" in notices[-1]


def test_history_file_drops_rows_a_resumed_run_redoes(tmp_path):
    path = tmp_path / "history.csv"
    history = runs.HistoryFile(str(path))
    history.on_train_begin()
    for epoch in range(3):
        history.on_epoch_begin(epoch)
        history.on_epoch_end(epoch, {"loss": 10.0 - epoch})
    resumed = runs.HistoryFile(str(path))
    resumed.on_train_begin()
    resumed.on_epoch_begin(1)  # the backup held epoch 1: rows 1 and 2 are redone
    resumed.on_epoch_end(1, {"loss": 5.0})
    with open(path) as f:
        rows = list(csv.DictReader(f))
    assert [(row["epoch"], float(row["loss"])) for row in rows] == [("0", 10.0), ("1", 5.0)]


def test_kill_point_kills_at_the_nth_visit_of_its_name():
    code = ("from keras_vae import runs\n"
            "for i in range(4):\n"
            "    runs.kill_point('elsewhere')\n"
            "    runs.kill_point('somewhere')\n"
            "    print(i, flush=True)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          env={**os.environ, runs.KILL_AT: "somewhere#3", "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert done.returncode == -signal.SIGKILL and done.stdout.split() == ["0", "1"], done.stderr[-2000:]
