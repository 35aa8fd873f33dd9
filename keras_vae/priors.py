"""The prior p(z) as Keras 3 layers, so that a model can swap one prior for another.

Every prior layer follows the contract in `StandardNormalPrior`'s docstring: its
`distribution()` is a float32 `tfd.Distribution` over z, and it may own weights trained
with the model or, given the model, use the model's own encoder. That distribution needs
`log_prob` and `sample` (the protocol for layers of your own is in `keras_vae.export`'s
docstring).

`PRIORS` and `make_prior` name them: `"standard_normal"`, `"mixture"` (a learnable mixture
of Gaussians) and `"vamp"` (the VampPrior [1]).

#### References

[1]: Jakub M. Tomczak and Max Welling. VAE with a VampPrior. AISTATS 2018.
"""

import math
import numbers

import keras
import tensorflow as tf
import tensorflow_probability as tfp

from keras_vae import checks

tfd = tfp.distributions


@keras.saving.register_keras_serializable(package="keras_vae")
class StandardNormalPrior(keras.layers.Layer):
    """The prior p(z) = N(0, I_L) as a layer, so a model can swap in another prior.

    A prior layer implements `distribution()` returning a `tfd.Distribution` with event
    shape `[latent_dim]` and empty batch shape; it may own trainable weights. If its
    `distribution` takes a `model` argument, `VAE` passes itself, for priors defined
    through the model's own encoder (the VampPrior).
    """

    def __init__(self, latent_dim, **kwargs):
        latent_dim = checks.check_positive_int("latent_dim", latent_dim)
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.latent_dim = latent_dim

    def distribution(self, model=None):
        return tfd.MultivariateNormalDiag(
            loc=tf.zeros([self.latent_dim], tf.float32), scale_diag=tf.ones([self.latent_dim], tf.float32)
        )

    def call(self, inputs=None):
        return self.distribution()

    def get_config(self):
        return {**super().get_config(), "latent_dim": self.latent_dim}


@keras.saving.register_keras_serializable(package="keras_vae")
class MixtureOfGaussiansPrior(keras.layers.Layer):
    """A learnable mixture of K diagonal Gaussians as the prior p(z).

    ```none
    p(z) = sum_k pi_k N(z; mu_k, diag(sigma_k)^2),   pi = softmax(mixture_logits),
    sigma_k = softplus(raw_scales_k) + min_scale
    ```

    All of `mixture_logits` (K), `locs` (K x L) and `raw_scales` (K x L) are trained with
    the model. The components start with equal weights, unit scales and locations drawn
    from N(0, I) with a fixed seed, so they are spread out but every run starts the same.
    KL(q(z|x) || p(z)) has no closed form: the ELBO uses the Monte Carlo estimate
    log q(z|x) - log p(z) at its z samples (`bounds.closed_form_kl` returns None).

    Args:
        latent_dim: size L of z.
        num_components: K.
        min_scale: floor added to every component's standard deviation, in [0, 1).

    Example:

    ```python
    model = keras_vae.mlp_vae((8, 8, 1), latent_dim=2, prior=MixtureOfGaussiansPrior(2, num_components=10))
    p = model.prior_distribution()     # tfd.MixtureSameFamily, event [2]
    ```
    """

    SEED = 1337  # seed of the initial locations

    def __init__(self, latent_dim, num_components=10, min_scale=1e-4, **kwargs):
        latent_dim = checks.check_positive_int("latent_dim", latent_dim)
        num_components = checks.check_positive_int("num_components", num_components)
        min_scale = checks.check_in_range("min_scale", min_scale, 0.0, 1.0)
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.latent_dim = latent_dim
        self.num_components = num_components
        self.min_scale = min_scale
        self.mixture_logits = self.add_weight(name="mixture_logits", shape=(num_components,), initializer="zeros")
        self.locs = self.add_weight(
            name="locs", shape=(num_components, latent_dim),
            initializer=keras.initializers.RandomNormal(stddev=1.0, seed=self.SEED),
        )
        # softplus(raw) + min_scale == 1: every component starts with unit scales.
        self.raw_scales = self.add_weight(
            name="raw_scales", shape=(num_components, latent_dim),
            initializer=keras.initializers.Constant(math.log(math.expm1(1.0 - self.min_scale))),
        )

    def distribution(self, model=None):
        scales = tf.nn.softplus(tf.cast(self.raw_scales, tf.float32)) + self.min_scale
        return tfd.MixtureSameFamily(
            mixture_distribution=tfd.Categorical(logits=tf.cast(self.mixture_logits, tf.float32)),
            components_distribution=tfd.MultivariateNormalDiag(tf.cast(self.locs, tf.float32), scales),
        )

    def call(self, inputs=None):
        return self.distribution()

    def get_config(self):
        config = {"latent_dim": self.latent_dim, "num_components": self.num_components, "min_scale": self.min_scale}
        return {**super().get_config(), **config}


@keras.saving.register_keras_serializable(package="keras_vae")
class VampPrior(keras.layers.Layer):
    """The VampPrior (Tomczak & Welling): the mixture of the model's posteriors at K learned pseudo-inputs.

    ```none
    p(z) = (1/K) sum_k q(z | u_k)
    ```

    The pseudo-inputs u_k (`pseudo_inputs`, K x input_shape, initialised uniform in
    [0, 1] with a fixed seed) are weights of this layer, trained with the model; they are
    not constrained to the data's support. The encoder is not: `distribution(model)`
    encodes the pseudo-inputs with `model.encode(u)` (`VAE.prior_distribution` passes the
    model), so the prior moves with the encoder and gradients reach both. Each call costs
    one encoder pass over K inputs. The KL term is a Monte Carlo estimate, as for
    `MixtureOfGaussiansPrior`. Works with any posterior whose batch shape is [K] for K
    inputs (diagonal or full-covariance `GaussianPosterior`), in unconditional models (no
    `num_classes`: pseudo-inputs have no labels).

    Args:
        latent_dim: size L of z, the model's.
        num_pseudo_inputs: K.
        input_shape: shape of one example x, the model's encoder input, e.g. `(28, 28, 1)`.

    Example:

    ```python
    model = keras_vae.mlp_vae((8, 8, 1), latent_dim=2, prior=VampPrior(2, 50, input_shape=(8, 8, 1)))
    p = model.prior_distribution()     # tfd.MixtureSameFamily over 50 posteriors
    ```
    """

    SEED = 1337  # seed of the initial pseudo-inputs

    def __init__(self, latent_dim, num_pseudo_inputs=50, input_shape=None, **kwargs):
        latent_dim = checks.check_positive_int("latent_dim", latent_dim)
        num_pseudo_inputs = checks.check_positive_int("num_pseudo_inputs", num_pseudo_inputs)
        if input_shape is None or not all(isinstance(d, numbers.Integral) and d >= 1 for d in input_shape):
            raise ValueError(
                "`input_shape` must be the shape of one example, e.g. VampPrior(latent_dim, input_shape=(28, 28, 1)). "
                f"Received: input_shape={input_shape!r}"
            )
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.latent_dim = latent_dim
        self.num_pseudo_inputs = num_pseudo_inputs
        self.input_event_shape = tuple(int(d) for d in input_shape)
        self.pseudo_inputs = self.add_weight(
            name="pseudo_inputs", shape=(num_pseudo_inputs, *self.input_event_shape),
            initializer=keras.initializers.RandomUniform(0.0, 1.0, seed=self.SEED),
        )

    def distribution(self, model=None):
        if model is None or not hasattr(model, "encode"):
            raise ValueError(
                "VampPrior.distribution needs the model whose encoder defines it: call "
                f"vamp_prior.distribution(model=vae) or vae.prior_distribution(). Received: model={model!r}"
            )
        expected = tuple(getattr(model, "input_event_shape", self.input_event_shape))
        if expected != self.input_event_shape or getattr(model, "latent_dim", self.latent_dim) != self.latent_dim:
            raise ValueError(
                f"VampPrior(latent_dim={self.latent_dim}, input_shape={self.input_event_shape}) does not fit a model "
                f"with latent_dim={getattr(model, 'latent_dim', None)} and input shape {expected}; build it as "
                f"VampPrior({getattr(model, 'latent_dim', None)}, input_shape={expected})"
            )
        if getattr(model, "num_classes", None):
            raise ValueError(
                "VampPrior needs an unconditional model: its pseudo-inputs have no labels. Received a model with "
                f"num_classes={model.num_classes}; use prior=MixtureOfGaussiansPrior(...) or the standard normal prior"
            )
        posteriors = model.encode(tf.convert_to_tensor(self.pseudo_inputs))  # batch [K], event [L]
        return tfd.MixtureSameFamily(
            mixture_distribution=tfd.Categorical(logits=tf.zeros([self.num_pseudo_inputs], tf.float32)),
            components_distribution=posteriors,
        )

    def call(self, inputs=None):
        return self.distribution()  # raises: the prior needs the model

    def get_config(self):
        config = {"latent_dim": self.latent_dim, "num_pseudo_inputs": self.num_pseudo_inputs,
                  "input_shape": self.input_event_shape}
        return {**super().get_config(), **config}


PRIORS = {"standard_normal": StandardNormalPrior, "mixture": MixtureOfGaussiansPrior, "vamp": VampPrior}


def make_prior(name, latent_dim, input_shape=None, **kwargs):
    """The prior layer called `name` (a key of `PRIORS`).

    `input_shape` (one example's shape) is needed by `"vamp"` only; `kwargs` go to the
    layer, e.g. `num_components=10` for `"mixture"`, `num_pseudo_inputs=50` for `"vamp"`.
    """
    if name not in PRIORS:
        raise ValueError(f"Unknown prior {name!r}; expected one of {sorted(PRIORS)}")
    if name == "vamp":
        return VampPrior(latent_dim, input_shape=input_shape, **kwargs)
    return PRIORS[name](latent_dim, **kwargs)
