"""Training callbacks: KL warm-up, learning-rate schedules, fault handling, epoch wall times, TensorBoard images,
and the standard set for a run."""

import math
import os
import time

import keras
import tensorflow as tf

from keras_vae import checks, plots, runs

LR_SCHEDULES = ("constant", "burda", "burda_equal")


class KLWarmup(keras.callbacks.Callback):
    """Linear KL warm-up: the KL weight grows from 0 to the model's `beta` over `epochs`.

    ```none
    kl_weight(epoch) = beta * min(1, (epoch + 1) / epochs)
    ```

    Set at the start of each epoch (0-based), so with `epochs=3` the weights are beta/3,
    2beta/3, beta, beta, ... The reported `elbo` is always the unweighted ELBO; `loss`
    uses the current weight.
    """

    def __init__(self, epochs):
        epochs = checks.check_positive_int("epochs", epochs)
        super().__init__()
        self.epochs = epochs

    def on_epoch_begin(self, epoch, logs=None):
        self.model.kl_weight.assign(self.model.beta * min(1.0, (epoch + 1) / self.epochs))

    def on_train_end(self, logs=None):
        self.model.kl_weight.assign(self.model.beta)


class KLCyclical(keras.callbacks.Callback):
    """Cyclical KL annealing (Fu et al., 2019): the warm-up of `KLWarmup`, repeated.

    Training is split into cycles of `cycle_epochs`; in each, the KL weight rises
    linearly from near 0 to the model's `beta` over the first `ramp_fraction` of the cycle,
    then holds:

    ```none
    kl_weight(epoch) = beta * min(1, (epoch mod cycle_epochs + 1) / (ramp_fraction * cycle_epochs))
    ```

    Each restart lets the encoder put information back into z that an early, strong
    KL pull would have switched off (posterior collapse).
    """

    def __init__(self, cycle_epochs, ramp_fraction=0.5):
        cycle_epochs = checks.check_positive_int("cycle_epochs", cycle_epochs)
        if not 0 < ramp_fraction <= 1:
            raise ValueError(f"`ramp_fraction` must be in (0, 1]. Received: ramp_fraction={ramp_fraction!r}")
        super().__init__()
        self.cycle_epochs = cycle_epochs
        self.ramp_fraction = float(ramp_fraction)

    def on_epoch_begin(self, epoch, logs=None):
        position = epoch % self.cycle_epochs + 1
        self.model.kl_weight.assign(self.model.beta * min(1.0, position / (self.ramp_fraction * self.cycle_epochs)))

    def on_train_end(self, logs=None):
        self.model.kl_weight.assign(self.model.beta)


def burda_learning_rate(epoch, total_epochs, base=1e-3, equal_stages=False):
    """Burda et al.'s learning rates `base * 10^(-i/7)`, i = 0..7, over `total_epochs`.

    The paper's stage i lasts 3^i epochs (3280 in all); here it lasts the same fraction,
    3^i / 3280, of `total_epochs`. That leaves a short run mostly at the smallest rates,
    so `equal_stages=True` gives each of the 8 rates the same share of the epochs.
    """
    if equal_stages:
        return base * 10 ** (-min(7, 8 * epoch // total_epochs) / 7)
    position = (epoch + 0.5) / total_epochs * 3280  # in paper epochs
    stage = min(7, int(math.log(2 * position + 1, 3)))  # stage i starts at (3^i - 1) / 2
    return base * 10 ** (-stage / 7)


class NonFiniteLossError(ValueError):
    """Training stopped because the loss became NaN or infinite."""


class StopOnNonFiniteLoss(keras.callbacks.Callback):
    """Raise `NonFiniteLossError`, naming the epoch and batch, as soon as the loss is NaN or inf.

    Unlike `keras.callbacks.TerminateOnNaN`, which ends `fit` normally (so the caller would
    go on to save and export the broken model), this raises before the epoch ends: callbacks
    later in the list never see the bad epoch, so the last checkpoint and backup stay the
    last good ones.
    """

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        # Batch hooks run once per execution of many steps, and the loss is the epoch's mean
        # so far: it turned non-finite at this batch or an earlier one of the same call.
        self._check((logs or {}).get("loss"), f"at epoch {self._epoch + 1}, batch {batch + 1} at the latest")

    def on_epoch_end(self, epoch, logs=None):
        self._check((logs or {}).get("val_loss"), f"on validation after epoch {epoch + 1}", name="validation loss")

    @staticmethod
    def _check(value, where, name="loss"):
        if value is not None and not math.isfinite(float(value)):
            raise NonFiniteLossError(f"{name} became {float(value)} {where}")


class EpochSeconds(keras.callbacks.Callback):
    """Add `seconds`, the epoch's wall time, to the logs the callbacks after it see.

    Measured from the epoch's start to its end, validation included, as Keras' progress bar
    does; callbacks' own end-of-epoch work (saving) is not. Placed before `runs.HistoryFile`
    and TensorBoard, it gives `history.csv` a `seconds` column and TensorBoard an
    `epoch_seconds` scalar, so a run's training time is the column's sum, over the epochs it
    kept when resumed.
    """

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["seconds"] = time.perf_counter() - self._start


def training_callbacks(model_dir, epochs, learning_rate, lr_schedule="constant", kl_warmup_epochs=0,
                       kl_cycle_epochs=0, backup=None):
    """Callbacks for a resumable run writing into `model_dir`.

    `model.keras` every epoch, TensorBoard logs in `logs/`, `history.csv` with each epoch's
    wall time in `seconds` (`EpochSeconds`; all written atomically, see `keras_vae.runs`),
    and `backup` (default a `runs.RunBackup` in `backup/`; call its `restore` before `fit`)
    so that the same command resumes a run that was killed or stopped by SIGTERM/SIGINT. A
    NaN or infinite loss raises `NonFiniteLossError` before anything is saved for that epoch.
    """
    checks.check_one_of("lr_schedule", lr_schedule, LR_SCHEDULES)
    checks.raise_if(checks.kl_schedule_problem(kl_warmup_epochs, kl_cycle_epochs))
    callbacks = [EpochSeconds()]
    # Schedules next, so the loggers after them see this epoch's `learning_rate`.
    if lr_schedule != "constant":
        equal = lr_schedule == "burda_equal"
        callbacks.append(keras.callbacks.LearningRateScheduler(
            lambda epoch: burda_learning_rate(epoch, epochs, learning_rate, equal_stages=equal)))
    if kl_warmup_epochs:
        callbacks.append(KLWarmup(kl_warmup_epochs))
    if kl_cycle_epochs:
        callbacks.append(KLCyclical(kl_cycle_epochs))
    callbacks += [
        StopOnNonFiniteLoss(),  # before the savers, so a bad epoch is never saved
        # The epoch's row before its backup: a kill between them reruns the epoch, whose
        # row is then rewritten, never a backup past a missing row.
        runs.HistoryFile(os.path.join(model_dir, "history.csv")),
        backup or runs.RunBackup(os.path.join(model_dir, "backup")),
        runs.ModelFile(os.path.join(model_dir, "model.keras")),
        keras.callbacks.TensorBoard(os.path.join(model_dir, "logs")),
    ]
    return callbacks


class ImageLogger(keras.callbacks.Callback):
    """Write model samples and reconstructions to TensorBoard as images every `every` epochs.

    Two image summaries go to `<log_dir>/images`, at step = the 0-based epoch (the step
    of `keras.callbacks.TensorBoard`'s epoch scalars), after every `every`-th epoch, the
    last epoch of `fit` and, if training stops early, the last epoch that ran:

    - `samples`: one grid of `num` means of p(x|z), z ~ p(z), the same z every time
      (drawn with `seed`), so that successive steps show the same samples sharpening;
    - `reconstructions`: the first `num` examples of `x` (top row) above their
      reconstruction means (bottom row).

    Images are float32 in [0, 1] (clipped); flat examples of D values are shown as
    sqrt(D) x sqrt(D) squares when D is a square (see `plots.as_images`).

    Example:

    ```python
    model.fit(x_train, epochs=30, callbacks=[ImageLogger("runs/a/logs", x_val, every=5)])
    ```
    """

    def __init__(self, log_dir, x, every=5, num=16, seed=0):
        every = checks.check_positive_int("every", every)
        num = checks.check_positive_int("num", num)
        if len(x) < 1:
            raise ValueError(f"`x` must hold at least one example. Received shape {getattr(x, 'shape', len(x))}")
        super().__init__()
        self.log_dir = os.path.join(log_dir, "images")
        self.x = x[:num]
        self.every = every
        self.num = num
        self.seed = seed
        self._writer = None
        self._last_epoch = self._last_logged = None

    def on_train_begin(self, logs=None):
        self._writer = tf.summary.create_file_writer(self.log_dir)
        self._last_epoch = self._last_logged = None

    def on_epoch_end(self, epoch, logs=None):
        self._last_epoch = epoch
        if (epoch + 1) % self.every == 0 or epoch + 1 == self.params.get("epochs"):
            self._log(epoch)

    def on_train_end(self, logs=None):
        if self._last_epoch is not None and self._last_logged != self._last_epoch:
            self._log(self._last_epoch)
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def _log(self, epoch):
        def grid(images, columns):
            tiled = plots.tile_images(images, columns)
            return (tiled[..., None] if tiled.ndim == 2 else tiled)[None].astype("float32")  # [1, H, W, C]

        samples = self.model.sample(self.num, seed=self.seed).numpy()
        x = tf.convert_to_tensor(self.x, tf.float32)
        pairs = tf.concat([x, tf.cast(self.model(x, training=False), tf.float32)], axis=0).numpy()
        with self._writer.as_default():
            tf.summary.image("samples", grid(samples, None), step=epoch)
            tf.summary.image("reconstructions", grid(pairs, len(self.x)), step=epoch)
        self._writer.flush()
        self._last_logged = epoch
