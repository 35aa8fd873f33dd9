"""Learning-rate schedules and a resumable training run."""

import csv
import glob
import os
import time

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_vae
from keras_vae import callbacks, runs


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

    starts = []

    def run(extra):
        keras.utils.set_random_seed(0)
        model = keras_vae.mlp_vae((8, 8, 1), 2, (16,), seed=0)
        model.compile(optimizer="adam")
        backup = runs.RunBackup(os.path.join(model_dir, "backup"))
        starts.append(backup.restore(model))
        cbs = callbacks.training_callbacks(model_dir, epochs=4, learning_rate=1e-3, lr_schedule="burda_equal",
                                           backup=backup)
        model.fit(x, epochs=4, batch_size=64, verbose=0, callbacks=cbs + extra, initial_epoch=starts[-1])
        return model

    with pytest.raises(KeyboardInterrupt):
        run([_Interrupt()])
    assert os.path.isdir(os.path.join(model_dir, "backup"))
    run([])
    assert starts == [0, 2]  # the interruption came after epoch 1's end and its backup
    with open(os.path.join(model_dir, "history.csv")) as f:
        rows = list(csv.DictReader(f))
    assert [int(r["epoch"]) for r in rows] == [0, 1, 2, 3]  # epochs 2 and 3 ran after the restart
    # Burda's 8 rates 1e-3 * 10^(-i/7) in equal stages over 4 epochs: stages 0, 2, 4, 6 start the epochs.
    np.testing.assert_allclose([float(r["learning_rate"]) for r in rows], 1e-3 * 10 ** (-np.array([0, 2, 4, 6]) / 7),
                               rtol=1e-6)
    # The backup now holds the finished state (apps.train deletes it once model.keras is saved).
    assert runs.RunBackup(os.path.join(model_dir, "backup")).latest_record()["epoch"] == 4


class _SleepInEpoch(keras.callbacks.Callback):
    """Sleep `seconds` at the end of epoch `epoch`'s first training call (inside the epoch)."""

    def __init__(self, epoch, seconds):
        super().__init__()
        self.epoch, self.seconds, self._current = epoch, seconds, None

    def on_epoch_begin(self, epoch, logs=None):
        self._current = epoch

    def on_train_batch_end(self, batch, logs=None):
        if self._current == self.epoch:
            self._current = None
            time.sleep(self.seconds)


def test_history_file_has_each_epochs_wall_time(tmp_path):
    x = keras_vae.data.load("digits").train[:256]
    model = keras_vae.mlp_vae((8, 8, 1), 2, (16,), seed=0)
    model.compile(optimizer="adam")
    model_dir = str(tmp_path)
    start = time.perf_counter()
    model.fit(x, batch_size=64, epochs=3, verbose=0, validation_data=(x[:64],),
              callbacks=[*callbacks.training_callbacks(model_dir, 3, 1e-3), _SleepInEpoch(1, 1.5)])
    wall = time.perf_counter() - start
    with open(os.path.join(model_dir, "history.csv")) as f:
        seconds = [float(row["seconds"]) for row in csv.DictReader(f)]
    assert len(seconds) == 3 and min(seconds) > 0
    assert seconds[1] >= 1.5  # the sleep happened inside epoch 1 (0-based), and only there
    assert seconds[2] < seconds[1] - 1.0
    assert sum(seconds) <= wall


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
    with pytest.raises(callbacks.NonFiniteLossError, match=r"loss became nan at epoch 3, batch 4 at the latest"):
        model.fit(x, batch_size=64, epochs=5, verbose=0,
                  callbacks=[_PoisonWeights(2), *callbacks.training_callbacks(model_dir, 5, 1e-3)])
    # The checkpoint and the backup are those of epoch 2, the last good one; both finite.
    saved = keras.saving.load_model(os.path.join(model_dir, "model.keras"))
    assert all(np.all(np.isfinite(w)) for w in saved.get_weights())
    assert runs.RunBackup(os.path.join(model_dir, "backup")).latest_record()["epoch"] == 2
    with open(os.path.join(model_dir, "history.csv")) as f:
        assert [row.split(",")[0] for row in f.read().split()[1:]] == ["0", "1"]


def image_summaries(folder):
    """{tag: {step: decoded image [H, W, C]}} of the image summaries in the event files under `folder`."""
    found = {}
    for event_file in glob.glob(os.path.join(folder, "events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(event_file):
            for value in event.summary.value:
                if value.metadata.plugin_data.plugin_name == "images":
                    width, height, png = tf.make_ndarray(value.tensor)  # as tf.summary.image stores them
                    image = tf.io.decode_png(png).numpy()
                    assert image.shape[:2] == (int(height), int(width))
                    found.setdefault(value.tag, {})[event.step] = image
    return found


class _StopAfter(keras.callbacks.Callback):
    def __init__(self, epoch):
        super().__init__()
        self.epoch = epoch

    def on_epoch_end(self, epoch, logs=None):
        if epoch == self.epoch:
            self.model.stop_training = True


@pytest.mark.parametrize("input_shape, image_shape", [((8, 8, 1), (8, 8, 1)), ((64,), (8, 8, 1)),
                                                      ((8, 8, 3), (8, 8, 3))], ids=["gray", "flat", "rgb"])
def test_image_logger_writes_images_to_tensorboard(tmp_path, input_shape, image_shape):
    x = keras_vae.data.load("digits").train[:128]
    x = np.repeat(x, 3, axis=-1) * [1.0, 0.5, 0.0] if image_shape[-1] == 3 else x.reshape((-1,) + input_shape)
    x = x.astype(np.float32)
    model = keras_vae.mlp_vae(input_shape, 2, (16,), seed=0)
    model.compile(optimizer="adam")
    logger = callbacks.ImageLogger(str(tmp_path), x, every=2, num=4, seed=0)
    model.fit(x, epochs=3, batch_size=64, verbose=0, callbacks=[logger])
    images = image_summaries(tmp_path / "images")
    assert sorted(images) == ["reconstructions", "samples"]
    assert sorted(images["samples"]) == [1, 2]  # after epoch 2 (every 2nd) and epoch 3 (the last); 0-based steps
    assert sorted(images["reconstructions"]) == [1, 2]
    # 4 samples of 8x8 in a 2 x 2 grid; 4 inputs above 4 reconstructions; 1-pixel gaps.
    channels = image_shape[-1]
    assert images["samples"][2].shape == (17, 17, channels)
    reconstructions = images["reconstructions"][2] / 255.0
    assert reconstructions.shape == (17, 35, channels)
    inputs = x[:4].reshape((4,) + image_shape)
    expected = np.clip(model.predict(x[:4], verbose=0).reshape((4,) + image_shape), 0, 1)
    for i in range(4):
        np.testing.assert_allclose(reconstructions[:8, 9 * i : 9 * i + 8], inputs[i], atol=1 / 255)  # top row
        np.testing.assert_allclose(reconstructions[9:, 9 * i : 9 * i + 8], expected[i], atol=1 / 255)
    np.testing.assert_allclose(reconstructions[8], 1.0)  # the gap between the rows


def test_image_logger_logs_the_last_epoch_of_a_stopped_run(tmp_path):
    x = keras_vae.data.load("digits").train[:64]
    model = keras_vae.mlp_vae((8, 8, 1), 2, (16,), seed=0)
    model.compile(optimizer="adam")
    logger = callbacks.ImageLogger(str(tmp_path), x, every=5, num=2)
    model.fit(x, epochs=10, batch_size=64, verbose=0, callbacks=[_StopAfter(1), logger])
    images = image_summaries(tmp_path / "images")
    assert sorted(images["samples"]) == [1] and sorted(images["reconstructions"]) == [1]


@pytest.mark.parametrize("kwargs, fragment", [
    ({"every": 0}, "`every` must be a positive integer"),
    ({"num": 0}, "`num` must be a positive integer"),
    ({"x": np.zeros((0, 8, 8, 1))}, "`x` must hold at least one example"),
])
def test_image_logger_errors(tmp_path, kwargs, fragment):
    with pytest.raises(ValueError, match=fragment):
        callbacks.ImageLogger(str(tmp_path), **{"x": np.zeros((4, 8, 8, 1)), **kwargs})
