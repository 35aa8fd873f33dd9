"""Learning-rate schedules and a resumable training run."""

import csv
import json
import os

import keras
import numpy as np
import pytest

import keras_vae
from keras_vae import callbacks


def test_burda_schedule_matches_the_paper_at_full_length():
    # Paper: stage i lasts 3^i epochs at 1e-3 * 10^(-i/7); stages start at epochs 0, 1, 4, 13, 40, ...
    starts = [(3**i - 1) // 2 for i in range(8)]
    for i, start in enumerate(starts):
        for epoch in (start, start + 3**i - 1):
            assert callbacks.burda_learning_rate(epoch, 3280) == pytest.approx(1e-3 * 10 ** (-i / 7))


def test_burda_equal_stages():
    rates = [callbacks.burda_learning_rate(e, 16, equal_stages=True) for e in range(16)]
    expected = np.repeat(1e-3 * 10 ** (-np.arange(8) / 7), 2)
    np.testing.assert_allclose(rates, expected)
    assert rates[-1] == pytest.approx(1e-4)


class _Interrupt(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        if epoch == 1:
            raise KeyboardInterrupt


def test_interrupted_run_resumes_from_backup(tmp_path):
    x = keras_vae.data.load("digits").train[:256]
    model_dir = str(tmp_path)

    def run(extra):
        keras.utils.set_random_seed(0)
        model = keras_vae.mlp_vae((8, 8, 1), 2, (16,), seed=0)
        model.compile(optimizer="adam")
        cbs = callbacks.training_callbacks(model_dir, epochs=4, learning_rate=1e-3, lr_schedule="burda_equal")
        model.fit(x, epochs=4, batch_size=64, verbose=0, callbacks=cbs + extra)
        return model

    with pytest.raises(KeyboardInterrupt):
        run([_Interrupt()])
    assert os.path.isdir(os.path.join(model_dir, "backup"))
    run([])
    with open(os.path.join(model_dir, "history.csv")) as f:
        rows = list(csv.DictReader(f))
    assert [int(r["epoch"]) for r in rows] == [0, 1, 2, 3]  # epochs 2 and 3 ran after the restart
    np.testing.assert_allclose([float(r["learning_rate"]) for r in rows],
                               [callbacks.burda_learning_rate(e, 4, equal_stages=True) for e in range(4)], rtol=1e-6)
    assert not os.path.exists(os.path.join(model_dir, "backup"))  # removed once training completes


def test_unknown_schedule():
    with pytest.raises(ValueError, match="`lr_schedule` must be one of"):
        callbacks.training_callbacks("/nonexistent", 3, 1e-3, lr_schedule="cosine")


class _PoisonWeights(keras.callbacks.Callback):
    """Fault injection: turn the model's weights into NaN when epoch `epoch` (0-based) begins."""

    def __init__(self, epoch):
        super().__init__()
        self.epoch = epoch

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == self.epoch:
            for weight in self.model.trainable_weights:
                weight.assign(np.full(weight.shape, np.nan, np.float32))


def test_nan_in_a_later_epoch_keeps_the_last_good_checkpoint(tmp_path):
    x = keras_vae.data.load("digits").train[:256]
    model = keras_vae.mlp_vae((8, 8, 1), 2, (16,), seed=0)
    model.compile(optimizer="adam")
    model_dir = str(tmp_path)
    with pytest.raises(callbacks.NonFiniteLossError, match=r"loss became nan at epoch 3, batch 1"):
        model.fit(x, batch_size=64, epochs=5, verbose=0,
                  callbacks=[_PoisonWeights(2), *callbacks.training_callbacks(model_dir, 5, 1e-3)])
    # The checkpoint and the backup are those of epoch 2, the last good one; both finite.
    saved = keras.saving.load_model(os.path.join(model_dir, "model.keras"))
    assert all(np.all(np.isfinite(w)) for w in saved.get_weights())
    with open(os.path.join(model_dir, "backup", "training_metadata.json")) as f:
        assert json.load(f)["epoch"] == 2
    with open(os.path.join(model_dir, "history.csv")) as f:
        assert [row.split(",")[0] for row in f.read().split()[1:]] == ["0", "1"]
