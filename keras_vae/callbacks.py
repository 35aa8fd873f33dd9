"""Training callbacks: KL warm-up, learning-rate schedules, fault handling, and the standard set for a run."""

import math
import os
import signal
import threading

import keras

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
        if not isinstance(epochs, int) or epochs < 1:
            raise ValueError(f"`epochs` must be a positive integer. Received: epochs={epochs!r}")
        super().__init__()
        self.epochs = epochs

    def on_epoch_begin(self, epoch, logs=None):
        self.model.kl_weight.assign(self.model.beta * min(1.0, (epoch + 1) / self.epochs))

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


class TrainingInterrupted(Exception):
    """Training stopped on SIGTERM or SIGINT after backing up its state; rerun to resume."""

    def __init__(self, signum, message):
        super().__init__(message)
        self.signum = signum


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
        self._check((logs or {}).get("loss"), f"at epoch {self._epoch + 1}, batch {batch + 1}")

    def on_epoch_end(self, epoch, logs=None):
        self._check((logs or {}).get("val_loss"), f"on validation after epoch {epoch + 1}", name="validation loss")

    @staticmethod
    def _check(value, where, name="loss"):
        if value is not None and not math.isfinite(float(value)):
            raise NonFiniteLossError(f"{name} became {float(value)} {where}")


class PreemptibleBackup(keras.callbacks.BackupAndRestore):
    """`BackupAndRestore` that also backs up and stops when SIGTERM or SIGINT arrives.

    Every epoch end writes the state (weights, optimizer, epoch) to `backup_dir`, keeping
    the previous generation too, so a kill during a save falls back to it. After a signal
    the current batch finishes, the state is written, and `fit` raises
    `TrainingInterrupted`. Run again, `fit` resumes: an interrupted epoch restarts from
    the weights saved mid-way. The backup is removed when training completes.
    """

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self, backup_dir):
        super().__init__(backup_dir, double_checkpoint=True)
        self._received = None
        self._handlers = {}

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        self._received = None
        if threading.current_thread() is threading.main_thread():  # signals reach the main thread only
            self._handlers = {s: signal.signal(s, self._receive) for s in self.SIGNALS}

    def _receive(self, signum, frame):
        self._received = signum

    def on_epoch_begin(self, epoch, logs=None):
        # A signal during the last epoch's end or validation stops here, after every
        # callback has recorded that epoch and its backup was written.
        if self._received is not None:
            self._interrupt(f"after epoch {epoch}", save=False)
        self._current_epoch = epoch  # also right after a restore, so a mid-epoch backup names this epoch

    def on_train_batch_end(self, batch, logs=None):
        super().on_train_batch_end(batch, logs)
        if self._received is not None:
            self._interrupt(f"in epoch {self._current_epoch + 1} after batch {batch + 1}", save=True)

    def on_train_end(self, logs=None):
        if self._received is not None:
            self._interrupt("at the end of training", save=False)
        self._restore_handlers()
        super().on_train_end(logs)

    def _interrupt(self, where, save):
        if save:
            self._save_model()
        self._restore_handlers()
        name = signal.Signals(self._received).name
        raise TrainingInterrupted(self._received, f"stopped by {name} {where}; state saved in {self.backup_dir}")

    def _restore_handlers(self):
        for s, handler in self._handlers.items():
            signal.signal(s, handler)
        self._handlers = {}


def training_callbacks(model_dir, epochs, learning_rate, lr_schedule="constant", kl_warmup_epochs=0):
    """Callbacks for a resumable run writing into `model_dir`.

    `model.keras` every epoch, TensorBoard logs in `logs/`, `history.csv`, and a backup
    in `backup/` so that the same command resumes a run that was killed or stopped by
    SIGTERM/SIGINT. A NaN or infinite loss raises `NonFiniteLossError` before anything
    is saved for that epoch.
    """
    if lr_schedule not in LR_SCHEDULES:
        raise ValueError(f"`lr_schedule` must be one of {LR_SCHEDULES}. Received: lr_schedule={lr_schedule!r}")
    callbacks = []
    # Schedules first, so the loggers after them see this epoch's `learning_rate`.
    if lr_schedule != "constant":
        equal = lr_schedule == "burda_equal"
        callbacks.append(keras.callbacks.LearningRateScheduler(
            lambda epoch: burda_learning_rate(epoch, epochs, learning_rate, equal_stages=equal)))
    if kl_warmup_epochs:
        callbacks.append(KLWarmup(kl_warmup_epochs))
    callbacks += [
        StopOnNonFiniteLoss(),  # before the savers, so a bad epoch is never saved
        PreemptibleBackup(os.path.join(model_dir, "backup")),
        keras.callbacks.ModelCheckpoint(os.path.join(model_dir, "model.keras")),
        keras.callbacks.TensorBoard(os.path.join(model_dir, "logs")),
        keras.callbacks.CSVLogger(os.path.join(model_dir, "history.csv"), append=True),
    ]
    return callbacks
