"""Training callbacks."""

import keras


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
