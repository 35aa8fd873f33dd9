"""Training callbacks: KL warm-up, learning-rate schedules, and the standard set for a run."""

import math
import os

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


def training_callbacks(model_dir, epochs, learning_rate, lr_schedule="constant", kl_warmup_epochs=0):
    """Callbacks for a resumable run writing into `model_dir`.

    `model.keras` every epoch, TensorBoard logs in `logs/`, `history.csv`, and
    `BackupAndRestore` in `backup/` so that the same command resumes an interrupted run.
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
        keras.callbacks.BackupAndRestore(os.path.join(model_dir, "backup")),
        keras.callbacks.ModelCheckpoint(os.path.join(model_dir, "model.keras")),
        keras.callbacks.TensorBoard(os.path.join(model_dir, "logs")),
        keras.callbacks.CSVLogger(os.path.join(model_dir, "history.csv"), append=True),
        keras.callbacks.TerminateOnNaN(),
    ]
    return callbacks
