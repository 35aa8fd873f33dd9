"""Built-in encoder and decoder backbones: functional Keras models that output tensors.

`mlp_*` for any data (flattened), `conv_*` for images [H, W, C] such as 28x28x1 or 32x32x3.

Any Keras model with the same contract can replace them: an encoder maps a batch of x to
the posterior's parameters ([B, params_size]); a decoder maps a batch of z ([B, L]) to the
likelihood's parameters, shaped like x ([B, ...event]). With `condition_size=C` (a
conditional VAE) both take a second input, one-hot labels y [B, C], joined to the features
right after flattening x and to z. An integer `seed` fixes the initial weights.
"""

import math

import keras
import numpy as np

from keras_vae import checks


def _kernel_initializers(seed):
    """Glorot-uniform kernel initializers, Keras' default; with an integer `seed`, each seeded
    from it in turn, so the same seed builds the same initial weights."""
    sequence = None if seed is None else np.random.SeedSequence(seed)
    while True:
        if sequence is None:
            yield "glorot_uniform"
        else:
            yield keras.initializers.GlorotUniform(seed=int(sequence.spawn(1)[0].generate_state(1)[0]))


def _conditioned(inputs, h, condition_size):
    """(inputs, h) with a one-hot label input y [B, condition_size] joined to h, if any."""
    if not condition_size:
        return inputs, h
    y = keras.Input(shape=(condition_size,), name="y")
    return [inputs, y], keras.layers.Concatenate()([h, y])


def mlp_encoder(input_shape, hidden_units, output_size, activation="relu", condition_size=0, seed=None,
                name="encoder"):
    """x (any shape, flattened) -> Dense layers -> `output_size` posterior parameters.

    Example:

    ```python
    encoder = mlp_encoder((28, 28, 1), hidden_units=(200, 200), output_size=100)
    ```
    """
    kernels = _kernel_initializers(seed)
    x = keras.Input(shape=tuple(input_shape), name="x")
    inputs, h = _conditioned(x, keras.layers.Flatten()(x), condition_size)
    for i, units in enumerate(checks.check_positive_ints("hidden_units", hidden_units)):
        h = keras.layers.Dense(units, activation=activation, kernel_initializer=next(kernels), name=f"hidden_{i}")(h)
    # Parameters of a distribution stay float32 under mixed precision.
    outputs = keras.layers.Dense(output_size, dtype="float32", kernel_initializer=next(kernels),
                                 name="posterior_params")(h)
    return keras.Model(inputs, outputs, name=name)


def mlp_decoder(latent_dim, hidden_units, output_shape, activation="relu", condition_size=0, seed=None,
                name="decoder"):
    """z -> Dense layers -> likelihood parameters reshaped to `output_shape` (x's shape)."""
    kernels = _kernel_initializers(seed)
    z = keras.Input(shape=(latent_dim,), name="z")
    inputs, h = _conditioned(z, z, condition_size)
    for i, units in enumerate(checks.check_positive_ints("hidden_units", hidden_units)):
        h = keras.layers.Dense(units, activation=activation, kernel_initializer=next(kernels), name=f"hidden_{i}")(h)
    h = keras.layers.Dense(math.prod(output_shape), dtype="float32", kernel_initializer=next(kernels),
                           name="likelihood_params")(h)
    outputs = keras.layers.Reshape(tuple(output_shape), dtype="float32")(h)
    return keras.Model(inputs, outputs, name=name)


def _check_image_shape(shape, num_layers):
    """(H, W, C) with H and W divisible by 2^num_layers, or a ValueError saying so."""
    shape = tuple(shape)
    factor = 2**num_layers
    if len(shape) != 3 or shape[0] % factor or shape[1] % factor:
        raise ValueError(
            f"A convolutional network with {num_layers} stride-2 layers needs images of shape (H, W, C) with H "
            f"and W divisible by {factor}, e.g. (28, 28, 1) or (32, 32, 3). Received shape {shape}"
        )
    return shape


def conv_encoder(input_shape, filters, output_size, hidden_units=(256,), activation="relu", condition_size=0, seed=None,
                 name="encoder"):
    """Image x [H, W, C] -> stride-2 3x3 convolutions -> Dense layers -> `output_size` parameters.

    Each convolution halves H and W, so they must be divisible by 2^len(filters).

    Example:

    ```python
    encoder = conv_encoder((28, 28, 1), filters=(32, 64), output_size=32)   # 28 -> 14 -> 7
    ```
    """
    kernels = _kernel_initializers(seed)
    filters = checks.check_positive_ints("filters", filters)
    x = keras.Input(shape=_check_image_shape(input_shape, len(filters)), name="x")
    h = x
    for i, f in enumerate(filters):
        h = keras.layers.Conv2D(f, 3, strides=2, padding="same", activation=activation,
                                kernel_initializer=next(kernels), name=f"conv_{i}")(h)
    inputs, h = _conditioned(x, keras.layers.Flatten()(h), condition_size)
    for i, units in enumerate(checks.check_positive_ints("hidden_units", hidden_units)):
        h = keras.layers.Dense(units, activation=activation, kernel_initializer=next(kernels), name=f"hidden_{i}")(h)
    outputs = keras.layers.Dense(output_size, dtype="float32", kernel_initializer=next(kernels),
                                 name="posterior_params")(h)
    return keras.Model(inputs, outputs, name=name)


def conv_decoder(latent_dim, filters, output_shape, hidden_units=(256,), activation="relu", condition_size=0, seed=None,
                 name="decoder"):
    """z -> Dense layers -> [H / 2^n, W / 2^n, filters[0]] -> stride-2 transposed convolutions
    -> likelihood parameters of shape `output_shape` [H, W, C] (n = len(filters))."""
    kernels = _kernel_initializers(seed)
    filters = checks.check_positive_ints("filters", filters)
    height, width, channels = _check_image_shape(output_shape, len(filters))
    factor = 2 ** len(filters)
    z = keras.Input(shape=(latent_dim,), name="z")
    inputs, h = _conditioned(z, z, condition_size)
    for i, units in enumerate(checks.check_positive_ints("hidden_units", hidden_units)):
        h = keras.layers.Dense(units, activation=activation, kernel_initializer=next(kernels), name=f"hidden_{i}")(h)
    h = keras.layers.Dense(height // factor * width // factor * filters[0], activation=activation,
                           kernel_initializer=next(kernels), name="project")(h)
    h = keras.layers.Reshape((height // factor, width // factor, filters[0]))(h)
    for i, f in enumerate(filters[1:]):
        h = keras.layers.Conv2DTranspose(f, 3, strides=2, padding="same", activation=activation,
                                         kernel_initializer=next(kernels), name=f"deconv_{i}")(h)
    outputs = keras.layers.Conv2DTranspose(channels, 3, strides=2, padding="same", dtype="float32",
                                           kernel_initializer=next(kernels), name="likelihood_params")(h)
    return keras.Model(inputs, outputs, name=name)


def mlp(input_size, hidden_units, output_size, activation="relu", seed=None, name="mlp"):
    """A vector [B, input_size] -> Dense layers -> [B, output_size] network (float32 outputs).

    The links of a hierarchical model (`keras_vae.hierarchical`): the parameters of
    q(z_{l+1}|z_l) from z_l, or of p(z_l|z_{l+1}) from z_{l+1}. `hidden_units` may be empty
    (one affine map).
    """
    kernels = _kernel_initializers(seed)
    inputs = keras.Input(shape=(checks.check_positive_int("input_size", input_size),), name="inputs")
    h = inputs
    for i, units in enumerate(checks.check_positive_ints("hidden_units", hidden_units)):
        h = keras.layers.Dense(units, activation=activation, kernel_initializer=next(kernels), name=f"hidden_{i}")(h)
    outputs = keras.layers.Dense(checks.check_positive_int("output_size", output_size), dtype="float32",
                                 kernel_initializer=next(kernels), name="params")(h)
    return keras.Model(inputs, outputs, name=name)
