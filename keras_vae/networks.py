"""Built-in encoder and decoder backbones: functional Keras models that output tensors.

Any Keras model with the same contract can replace them: an encoder maps a batch of x to
the posterior's parameters ([B, params_size]); a decoder maps a batch of z ([B, L]) to the
likelihood's parameters, shaped like x ([B, ...event]).
"""

import math

import keras


def _check_units(hidden_units):
    units = tuple(hidden_units)
    if not all(isinstance(u, int) and u > 0 for u in units):
        raise ValueError(f"`hidden_units` must be positive integers. Received: hidden_units={hidden_units!r}")
    return units


def mlp_encoder(input_shape, hidden_units, output_size, activation="relu", name="encoder"):
    """x (any shape, flattened) -> Dense layers -> `output_size` posterior parameters.

    Example:

    ```python
    encoder = mlp_encoder((28, 28, 1), hidden_units=(200, 200), output_size=100)
    ```
    """
    inputs = keras.Input(shape=tuple(input_shape), name="x")
    h = keras.layers.Flatten()(inputs)
    for i, units in enumerate(_check_units(hidden_units)):
        h = keras.layers.Dense(units, activation=activation, name=f"hidden_{i}")(h)
    # Parameters of a distribution stay float32 under mixed precision.
    outputs = keras.layers.Dense(output_size, dtype="float32", name="posterior_params")(h)
    return keras.Model(inputs, outputs, name=name)


def mlp_decoder(latent_dim, hidden_units, output_shape, activation="relu", name="decoder"):
    """z -> Dense layers -> likelihood parameters reshaped to `output_shape` (x's shape)."""
    inputs = keras.Input(shape=(latent_dim,), name="z")
    h = inputs
    for i, units in enumerate(_check_units(hidden_units)):
        h = keras.layers.Dense(units, activation=activation, name=f"hidden_{i}")(h)
    h = keras.layers.Dense(math.prod(output_shape), dtype="float32", name="likelihood_params")(h)
    outputs = keras.layers.Reshape(tuple(output_shape), dtype="float32")(h)
    return keras.Model(inputs, outputs, name=name)
