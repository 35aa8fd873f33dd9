"""Distribution layers: Keras 3 layers that turn network outputs into `tfd` distributions.

Networks (ordinary Keras models) output plain tensors of parameters; these small layers
build the approximate posterior q(z|x), the likelihood p(x|z) and the prior p(z) from
them. Every distribution is built in float32 whatever the layer's input dtype, so mixed
precision networks can feed them, and every `log_prob` gives one value per example
(`tfd.Independent` / multivariate families over the event shape).

TFP's own Keras layers are Keras 2 layers, which Keras 3 rejects; these are their Keras 3
replacements for the VAE's needs.
"""

import math
import numbers

import keras
import tensorflow as tf
import tensorflow_probability as tfp

tfd = tfp.distributions
tfb = tfp.bijectors

_PACKAGE = "keras_vae"


def _float32(x):
    return tf.cast(x, tf.float32)


def _check_positive_int(name, value):
    if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < 1:
        raise ValueError(f"`{name}` must be a positive integer. Received: {name}={value!r}")
    return int(value)


@keras.saving.register_keras_serializable(package=_PACKAGE)
class GaussianPosterior(keras.layers.Layer):
    """Gaussian q(z|x) from a vector of parameters.

    With `covariance="diagonal"` the input holds `[loc, raw_scale]` (size 2L) and

    ```none
    q(z|x) = N(z; loc, diag(scale)^2),   scale = softplus(raw_scale) + min_scale
    ```

    With `covariance="full"` it holds `[loc, raw_tril]` (size L + L(L+1)/2): the lower
    triangle is filled in `tfp.math.fill_triangular`'s order and its diagonal made positive
    the same way, giving `MultivariateNormalTriL`; for a given scale_tril S the raw
    entries are `tfb.FillScaleTriL(diag_shift=min_scale).inverse(S)`. `params_size(latent_dim, covariance)` tells an encoder how
    many outputs to produce.

    Args:
        latent_dim: size L of z.
        covariance: `"diagonal"` or `"full"`.
        min_scale: floor added to every standard deviation, for numerical stability.

    Example:

    ```python
    posterior = GaussianPosterior(latent_dim=2)
    q = posterior(encoder(x))          # tfd.MultivariateNormalDiag, batch [B], event [2]
    z = q.sample()
    ```
    """

    COVARIANCES = ("diagonal", "full")

    def __init__(self, latent_dim, covariance="diagonal", min_scale=1e-4, **kwargs):
        latent_dim = _check_positive_int("latent_dim", latent_dim)
        if covariance not in self.COVARIANCES:
            raise ValueError(
                f"`covariance` must be one of {self.COVARIANCES}. Received: covariance={covariance!r}"
            )
        if not min_scale >= 0:
            raise ValueError(f"`min_scale` must be >= 0. Received: min_scale={min_scale!r}")
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.latent_dim = latent_dim
        self.covariance = covariance
        self.min_scale = float(min_scale)

    @staticmethod
    def params_size(latent_dim, covariance="diagonal"):
        if covariance == "full":
            return latent_dim + latent_dim * (latent_dim + 1) // 2
        return 2 * latent_dim

    def call(self, params):
        params = _float32(params)
        size = self.params_size(self.latent_dim, self.covariance)
        if params.shape[-1] is not None and params.shape[-1] != size:
            raise ValueError(
                f"GaussianPosterior(latent_dim={self.latent_dim}, covariance={self.covariance!r}) "
                f"expects {size} parameters on the last axis. Received shape {tuple(params.shape)}"
            )
        loc, raw = params[..., : self.latent_dim], params[..., self.latent_dim :]
        if self.covariance == "diagonal":
            return tfd.MultivariateNormalDiag(loc, tf.nn.softplus(raw) + self.min_scale)
        scale_tril = tfb.FillScaleTriL(diag_shift=self.min_scale)(raw)
        return tfd.MultivariateNormalTriL(loc, scale_tril)

    def get_config(self):
        config = {"latent_dim": self.latent_dim, "covariance": self.covariance, "min_scale": self.min_scale}
        return {**super().get_config(), **config}


@keras.saving.register_keras_serializable(package=_PACKAGE)
class BernoulliLikelihood(keras.layers.Layer):
    """Independent Bernoulli p(x|z) from logits shaped like x.

    ```none
    log p(x|z) = sum_d x_d log sigmoid(l_d) + (1 - x_d) log sigmoid(-l_d)
    ```

    Defined for x in [0, 1] (binary data, or intensities as the usual cross-entropy
    relaxation). Its mean is `sigmoid(logits)`.

    Args:
        event_shape: shape of one example x, e.g. `(28, 28, 1)`.
    """

    support = (0.0, 1.0)  # values of x it is defined for; `VAE.check_data` enforces them

    def __init__(self, event_shape, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.event_shape = tuple(int(d) for d in event_shape)

    def call(self, logits):
        bernoulli = tfd.Bernoulli(logits=_float32(logits), dtype=tf.float32)
        return tfd.Independent(bernoulli, reinterpreted_batch_ndims=len(self.event_shape))

    @staticmethod
    def named_parameters(distribution):
        """The parameters of a distribution this layer made, by the name a SavedModel gives them."""
        return {"x_logits": distribution.distribution.logits}

    def get_config(self):
        return {**super().get_config(), "event_shape": self.event_shape}


@keras.saving.register_keras_serializable(package=_PACKAGE)
class GaussianLikelihood(keras.layers.Layer):
    """Independent Gaussian p(x|z) with mean from the decoder, shaped like x.

    ```none
    log p(x|z) = sum_d log N(x_d; mu_d(z), sigma_d^2)
    ```

    Args:
        event_shape: shape of one example x.
        scale: a positive float for a fixed sigma, or `"learned"` for one trainable sigma
            per dimension of x (softplus-parameterised with floor `min_scale`, starting
            at 1).
        min_scale: floor on a learned sigma.
    """

    support = (-math.inf, math.inf)

    def __init__(self, event_shape, scale=1.0, min_scale=1e-3, **kwargs):
        if scale != "learned" and not (isinstance(scale, numbers.Real) and not isinstance(scale, bool)
                                       and 0 < scale < math.inf):
            raise ValueError(f'`scale` must be a positive number or "learned". Received: scale={scale!r}')
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.event_shape = tuple(int(d) for d in event_shape)
        self.scale = scale if scale == "learned" else float(scale)
        self.min_scale = float(min_scale)
        if self.scale == "learned":
            # softplus(raw) + min_scale == 1: a learned scale starts at sigma = 1.
            self.raw_scale = self.add_weight(
                name="raw_scale",
                shape=self.event_shape,
                initializer=keras.initializers.Constant(math.log(math.expm1(1.0 - self.min_scale))),
            )

    def stddev(self):
        if self.scale == "learned":
            return tf.nn.softplus(_float32(self.raw_scale)) + self.min_scale
        return tf.constant(self.scale, tf.float32)

    def call(self, loc):
        loc = _float32(loc)
        normal = tfd.Normal(loc, tf.broadcast_to(self.stddev(), tf.shape(loc)))
        return tfd.Independent(normal, reinterpreted_batch_ndims=len(self.event_shape))

    @staticmethod
    def named_parameters(distribution):
        """The parameters of a distribution this layer made, by the name a SavedModel gives them."""
        return {"x_scale": distribution.distribution.scale}

    def get_config(self):
        config = {"event_shape": self.event_shape, "scale": self.scale, "min_scale": self.min_scale}
        return {**super().get_config(), **config}


@keras.saving.register_keras_serializable(package=_PACKAGE)
class StandardNormalPrior(keras.layers.Layer):
    """The prior p(z) = N(0, I_L) as a layer, so a model can swap in another prior.

    A prior layer implements `distribution(model=None)` returning a `tfd.Distribution`
    with event shape `[latent_dim]` and empty batch shape; it may own trainable weights.
    `VAE` passes itself as `model`, for priors defined through the model's own encoder.
    """

    def __init__(self, latent_dim, **kwargs):
        latent_dim = _check_positive_int("latent_dim", latent_dim)
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


LIKELIHOODS = {"bernoulli": BernoulliLikelihood, "gaussian": GaussianLikelihood}


def make_likelihood(name, event_shape, **kwargs):
    """The likelihood layer called `name` (`"bernoulli"` or `"gaussian"`)."""
    if name not in LIKELIHOODS:
        raise ValueError(f"Unknown likelihood {name!r}; expected one of {sorted(LIKELIHOODS)}")
    return LIKELIHOODS[name](event_shape, **kwargs)
