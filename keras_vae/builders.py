"""Builders of ready-made VAEs: `mlp_vae` (dense networks) and `conv_vae` (convolutional).

Each wires a built-in encoder and mirrored decoder (`keras_vae.networks`) to a Gaussian
posterior, a likelihood chosen by name (`keras_vae.likelihoods`) and a prior (standard
normal unless `prior=` is given) in a `keras_vae.VAE`. `init_output_bias` starts a built
model's decoder at the data's marginal.
"""

import keras
import numpy as np

from keras_vae import likelihoods, networks, posteriors
from keras_vae.models import VAE


def mlp_vae(input_shape, latent_dim, hidden_units=(200, 200), likelihood="bernoulli", covariance="diagonal",
            activation="relu", likelihood_scale=None, scale_activation="softplus", **kwargs):
    """A `VAE` with MLP encoder and mirrored MLP decoder for data of shape `input_shape`.

    Args:
        input_shape: shape of one example, flat `(784,)` or an image `(28, 28, 1)`.
        latent_dim: size of z.
        hidden_units: encoder widths; the decoder uses them reversed.
        likelihood: a name in `likelihoods.LIKELIHOODS`: `"bernoulli"` (data in [0, 1]),
            `"gaussian"`, ...
        covariance: posterior covariance, `"diagonal"` or `"full"`.
        activation: hidden-layer activation (`"tanh"` as in Burda et al., `"relu"`, ...).
        likelihood_scale: scale of a Gaussian or discretized logistic likelihood: a float or
            `"learned"`; None for the family's default (1.0 and `"learned"`).
        scale_activation: `"softplus"` or `"exp"`, what makes q(z|x)'s raw scales positive
            (`posteriors.GaussianPosterior`).
        **kwargs: passed to `VAE` (`beta`, `num_samples`, `objective`, `gradient_estimator`,
            `prior`, `num_classes` for a conditional VAE, ...). An integer `seed` fixes the
            networks' initial weights as well as the model's z noise.

    Example:

    ```python
    model = keras_vae.mlp_vae((28, 28, 1), latent_dim=50, hidden_units=(200, 200), activation="tanh", seed=0)
    ```
    """
    input_shape, c, seed = tuple(int(d) for d in input_shape), kwargs.get("num_classes") or 0, kwargs.get("seed")
    return _assemble(
        lambda size: networks.mlp_encoder(input_shape, hidden_units, size, activation=activation, condition_size=c,
                                          seed=seed),
        networks.mlp_decoder(latent_dim, tuple(reversed(tuple(hidden_units))), input_shape, activation=activation,
                             condition_size=c, seed=_other(seed)),
        input_shape, latent_dim, likelihood, covariance, likelihood_scale, scale_activation, **kwargs)


def conv_vae(input_shape, latent_dim, filters=(32, 64), hidden_units=(256,), likelihood="bernoulli",
             covariance="diagonal", activation="relu", likelihood_scale=None, scale_activation="softplus", **kwargs):
    """A `VAE` with a convolutional encoder and a mirrored transposed-convolution decoder.

    For images `input_shape = (H, W, C)` with H and W divisible by 2^len(filters), e.g.
    28x28x1 (MNIST) or 32x32x3 (CIFAR-10). `filters` are the encoder's stride-2 3x3
    convolutions, `hidden_units` the Dense layers between them and z; the decoder mirrors
    both. Other arguments as in `mlp_vae`.
    """
    input_shape, c, seed = tuple(int(d) for d in input_shape), kwargs.get("num_classes") or 0, kwargs.get("seed")
    filters, hidden_units = tuple(filters), tuple(hidden_units)
    return _assemble(
        lambda size: networks.conv_encoder(input_shape, filters, size, hidden_units, activation=activation,
                                           condition_size=c, seed=seed),
        networks.conv_decoder(latent_dim, tuple(reversed(filters)), input_shape, tuple(reversed(hidden_units)),
                              activation=activation, condition_size=c, seed=_other(seed)),
        input_shape, latent_dim, likelihood, covariance, likelihood_scale, scale_activation, **kwargs)


def _other(seed):
    """The decoder's seed: not the encoder's, so equal-shaped layers start differently."""
    return None if seed is None else seed + 1


def _assemble(make_encoder, decoder, input_shape, latent_dim, likelihood, covariance, likelihood_scale,
              scale_activation, **kwargs):
    """A `VAE` from an encoder factory (given the posterior's parameter count) and a decoder."""
    posterior = posteriors.GaussianPosterior(latent_dim, covariance=covariance, scale_activation=scale_activation)
    scaled = likelihood in ("gaussian", "discretized_logistic")  # the families with a scale parameter
    likelihood_kwargs = {"scale": likelihood_scale} if scaled and likelihood_scale is not None else {}
    return VAE(
        encoder=make_encoder(posterior.params_size(latent_dim, covariance)),
        decoder=decoder,
        posterior=posterior,
        likelihood=likelihoods.make_likelihood(likelihood, input_shape, **likelihood_kwargs),
        **kwargs,
    )


def init_output_bias(model, x):
    """Start p(x|z) at the data's marginal: set the decoder's output bias from x's per-value mean.

    The bias of the decoder's `likelihood_params` layer (the Dense output of
    `networks.mlp_decoder`, also inside `hierarchical_vae`'s decoder) becomes the
    likelihood's parameters of the mean of x over examples (`marginal_params`; for the
    Bernoulli, the logit of the mean clipped to [1e-3, 1 - 1e-3]). Without it every pixel
    starts at p = 1/2, and tanh networks of Burda et al.'s sizes sit for many epochs on a
    plateau where the decoder learns the marginal and ignores z (docs/RESULTS.md). Call it
    before training, on the training data.

    Returns:
        True if the bias was set; False, leaving the model as it was, when the likelihood has
        no `marginal_params` (or returns None) or the decoder has no Dense `likelihood_params`
        layer with one bias per value of x (convolutional decoders: their bias is per channel).
    """
    x = np.asarray(x, np.float32)
    marginal = getattr(model.likelihood, "marginal_params", None)
    params = marginal(x.mean(axis=0)) if callable(marginal) else None
    layers = [layer for layer in _leaves(model.decoder) if layer.name == "likelihood_params"]
    if params is None or len(layers) != 1 or not isinstance(layers[0], keras.layers.Dense):
        return False
    bias = layers[0].bias
    params = np.asarray(params, np.float32)
    if params.size != bias.shape[0]:
        return False
    bias.assign(params.reshape(bias.shape))
    return True


def _leaves(layer):
    """The layers of a Keras model, nested models opened."""
    if isinstance(layer, keras.Model):
        return [leaf for inner in layer.layers for leaf in _leaves(inner)]
    return [layer]
