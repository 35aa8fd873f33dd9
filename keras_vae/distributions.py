"""Distribution layers: Keras 3 layers that turn network outputs into `tfd` distributions.

Networks (ordinary Keras models) output plain tensors of parameters; these small layers
build the approximate posterior q(z|x), the likelihood p(x|z) and the prior p(z) from
them. Every distribution is built in float32 whatever the layer's input dtype, so mixed
precision networks can feed them, and every `log_prob` gives one value per example
(`tfd.Independent` / multivariate families over the event shape).

- posterior: `GaussianPosterior` (diagonal or full covariance).
- likelihoods (`LIKELIHOODS`, `make_likelihood`): `"bernoulli"`, `"gaussian"`,
  `"continuous_bernoulli"` (a density on [0, 1] [1]) and `"discretized_logistic"`
  (probabilities of 8-bit values [2]).
- priors (`PRIORS`, `make_prior`): `"standard_normal"`, `"mixture"` (a learnable mixture
  of Gaussians) and `"vamp"` (the VampPrior [3]).

TFP's own Keras layers are Keras 2 layers, which Keras 3 rejects; these are their Keras 3
replacements for the VAE's needs.

#### References

[1]: Gabriel Loaiza-Ganem and John P. Cunningham. The continuous Bernoulli: fixing a
     pervasive error in variational autoencoders. NeurIPS 2019.
[2]: Tim Salimans, Andrej Karpathy, Xi Chen and Diederik P. Kingma. PixelCNN++: Improving
     the PixelCNN with Discretized Logistic Mixture Likelihood and Other Modifications.
     ICLR 2017.
[3]: Jakub M. Tomczak and Max Welling. VAE with a VampPrior. AISTATS 2018.
"""

import math
import numbers

import keras
import numpy as np
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


def sample(distribution, sample_shape=(), seed=None):
    """`distribution.sample(sample_shape, seed)`, drawing Gaussians' noise with Philox.

    For a `MultivariateNormalLinearOperator` (diagonal, full-covariance, ...) with a
    stateless seed, z = loc + scale @ eps with eps ~ N(0, I) from the Philox generator:
    under XLA on CPUs the default stateless generator runs about ten times slower than
    Philox and dominated a small VAE's train step. Other distributions sample as usual.
    """
    if not isinstance(distribution, tfd.MultivariateNormalLinearOperator) or seed is None:
        return distribution.sample(sample_shape, seed=seed)
    shape = tf.concat([tf.cast(tf.reshape(sample_shape, [-1]), tf.int32), distribution.batch_shape_tensor(),
                       distribution.event_shape_tensor()], axis=0)
    noise = tf.random.stateless_normal(shape, tfp.random.sanitize_seed(seed), dtype=distribution.dtype, alg="philox")
    return distribution.bijector.forward(noise)


def _check_scale(scale):
    if scale != "learned" and not (isinstance(scale, numbers.Real) and not isinstance(scale, bool)
                                   and 0 < scale < math.inf):
        raise ValueError(f'`scale` must be a positive number or "learned". Received: scale={scale!r}')


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


class Independent(tfd.Independent):
    """`tfd.Independent` that sums `log_prob` over the event as one flat axis.

    For image events (H, W, C), XLA compiles a reduction over three axes into markedly
    slower code than the same sum over one (7% of a small VAE's train step).
    """

    def _log_prob(self, x):
        log_prob = self.distribution.log_prob(x)
        ndims = tf.get_static_value(self.reinterpreted_batch_ndims)
        if ndims is None or ndims < 2:
            return tf.reduce_sum(log_prob, axis=tf.range(-self.reinterpreted_batch_ndims, 0))
        shape = tf.shape(log_prob)
        return tf.reduce_sum(tf.reshape(log_prob, tf.concat([shape[:-ndims], [-1]], axis=0)), axis=-1)


class Bernoulli(tfd.Bernoulli):
    """`tfd.Bernoulli` whose `log_prob` from logits l is TF's cross-entropy, -xent(x, l):

    ```none
    log p(x) = x l - softplus(l) = -(max(l, 0) - x l + log(1 + exp(-|l|)))
    ```

    (TFP computes both log sigmoid(l) and log sigmoid(-l), twice the transcendentals: the
    likelihood is most of a small VAE's elementwise work).
    """

    def _log_prob(self, event):
        if self._logits is None:
            return super()._log_prob(event)
        logits = tf.convert_to_tensor(self._logits)
        event = tf.cast(event, logits.dtype)
        shape = tf.broadcast_dynamic_shape(tf.shape(event), tf.shape(logits))
        return -tf.nn.sigmoid_cross_entropy_with_logits(labels=tf.broadcast_to(event, shape),
                                                        logits=tf.broadcast_to(logits, shape))


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

    family = Bernoulli  # the per-dimension distribution, from logits

    def call(self, logits):
        per_dimension = self.family(logits=_float32(logits), dtype=tf.float32)
        return Independent(per_dimension, reinterpreted_batch_ndims=len(self.event_shape))

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
        _check_scale(scale)
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
        return Independent(normal, reinterpreted_batch_ndims=len(self.event_shape))

    @staticmethod
    def named_parameters(distribution):
        """The parameters of a distribution this layer made, by the name a SavedModel gives them."""
        return {"x_scale": distribution.distribution.scale}

    def get_config(self):
        config = {"event_shape": self.event_shape, "scale": self.scale, "min_scale": self.min_scale}
        return {**super().get_config(), **config}


@keras.saving.register_keras_serializable(package=_PACKAGE)
class ContinuousBernoulliLikelihood(BernoulliLikelihood):
    """Independent continuous Bernoulli p(x|z) from logits shaped like x (Loaiza-Ganem & Cunningham).

    The Bernoulli "cross-entropy" of intensities in [0, 1] is not a density: it lacks the
    normalising constant C(l), which depends on the decoder's output. The continuous
    Bernoulli adds it:

    ```none
    log p(x|z) = sum_d x_d log sigmoid(l_d) + (1 - x_d) log sigmoid(-l_d) + log C(l_d)
    C(l) = l (e^l + 1) / (e^l - 1)           (C(0) = 2)
    E[x_d] = 1 / (1 - e^{-l_d}) - 1 / l_d     (E = 1/2 at l_d = 0)
    ```

    a proper density on [0, 1] for data that is not binary (grey levels). Its mean is the
    continuous Bernoulli mean above, not `sigmoid(logits)`. Built on
    `tfd.ContinuousBernoulli`, which uses series expansions near l = 0.

    Args:
        event_shape: shape of one example x, e.g. `(28, 28, 1)`.

    Example:

    ```python
    likelihood = ContinuousBernoulliLikelihood((8, 8, 1))
    p = likelihood(decoder(z))         # batch [B], event [8, 8, 1]
    log_px = p.log_prob(x)             # [B], nats (a density: can be > 0)
    ```
    """

    family = tfd.ContinuousBernoulli


class DiscretizedLogistic(tfd.Distribution):
    """A logistic distribution discretized onto the grid {0, 1/(n-1), ..., 1} (scalar events).

    With bin width w = 1/(n - 1), grid point x = k w holds the logistic probability of
    [x - w/2, x + w/2], the two edge bins extending to -inf and +inf:

    ```none
    P(x) = F(x + w/2) - F(x - w/2)     0 < k < n - 1
    P(0) = F(w/2)                      P(1) = 1 - F(1 - w/2)
    F(t) = sigmoid((t - loc) / scale)
    ```

    Computed in log space without cancellation, through the identity
    sigmoid(b) - sigmoid(a) = sigmoid(b) sigmoid(-a) (1 - e^{a - b}):

    ```none
    log P(x) = log_sigmoid(b) + log_sigmoid(-a) + log(1 - e^{-w/scale}),
    a = (x - w/2 - loc) / scale,  b = (x + w/2 - loc) / scale
    ```

    Every factor is exact in float32 for any loc and scale: far in either tail, where the
    plain CDF difference underflows to 0 or cancels to 1 - 1, and in mid-bin with a large
    scale, where the last term tends to log(w/scale) (the pdf-times-width approximation)
    without any switch. The edge bins are log_sigmoid(b) and log_sigmoid(-a) alone.

    `log_prob` rounds x to the nearest grid point (values outside [0, 1] fall in the edge
    bins). `mean()` is `loc` clipped to [0, 1]: the exact mean of the discretized
    distribution moves towards 1/2 when the scale is large or loc is near an edge, and
    costs n sigmoids per value. `sample()` draws a logistic value and rounds it to the
    grid, which samples P exactly (not reparameterized).

    Args:
        loc: location in data units, any float tensor.
        scale: positive scale, broadcastable against `loc`.
        num_bins: n, the number of grid points (256 for 8-bit data scaled as k / 255).
    """

    def __init__(self, loc, scale, num_bins=256, validate_args=False, allow_nan_stats=True,
                 name="DiscretizedLogistic"):
        parameters = dict(locals())
        num_bins = _check_positive_int("num_bins", num_bins)
        if num_bins < 2:
            raise ValueError(f"`num_bins` must be at least 2. Received: num_bins={num_bins}")
        with tf.name_scope(name) as name:
            self._loc = tf.convert_to_tensor(loc, tf.float32, name="loc")
            self._scale = tf.convert_to_tensor(scale, tf.float32, name="scale")
            self._num_bins = num_bins
        super().__init__(dtype=tf.float32, reparameterization_type=tfd.NOT_REPARAMETERIZED,
                         validate_args=validate_args, allow_nan_stats=allow_nan_stats,
                         parameters=parameters, name=name)

    @classmethod
    def _parameter_properties(cls, dtype, num_classes=None):
        return dict(loc=tfp.util.ParameterProperties(),
                    scale=tfp.util.ParameterProperties(default_constraining_bijector_fn=tfb.Softplus))

    @property
    def loc(self):
        return self._loc

    @property
    def scale(self):
        return self._scale

    @property
    def num_bins(self):
        return self._num_bins

    def _event_shape(self):
        return tf.TensorShape([])

    def _event_shape_tensor(self):
        return tf.constant([], tf.int32)

    def _log_prob(self, x):
        last = float(self._num_bins - 1)
        k = tf.clip_by_value(tf.round(tf.cast(x, tf.float32) * last), 0.0, last)
        width = 1.0 / last
        centered = (k * width - self._loc) / self._scale
        half = 0.5 * width / self._scale
        log_cdf_upper = tf.math.log_sigmoid(centered + half)  # log F(x + w/2)
        log_sf_lower = tf.math.log_sigmoid(half - centered)  # log (1 - F(x - w/2))
        interior = log_cdf_upper + log_sf_lower + tfp.math.log1mexp(width / self._scale)
        return tf.where(k <= 0.0, log_cdf_upper, tf.where(k >= last, log_sf_lower, interior))

    def _mean(self):
        return tf.broadcast_to(tf.clip_by_value(self._loc, 0.0, 1.0), self._batch_shape_tensor())

    def _sample_n(self, n, seed=None):
        shape = tf.concat([[n], self._batch_shape_tensor()], axis=0)
        u = tf.random.stateless_uniform(shape, tfp.random.sanitize_seed(seed), minval=np.finfo(np.float32).tiny)
        logistic = self._loc + self._scale * (tf.math.log(u) - tf.math.log1p(-u))
        last = float(self._num_bins - 1)
        return tf.clip_by_value(tf.round(logistic * last), 0.0, last) / last


@keras.saving.register_keras_serializable(package=_PACKAGE)
class DiscretizedLogisticLikelihood(keras.layers.Layer):
    """Discretized logistic p(x|z) for 8-bit data scaled to [0, 1] (PixelCNN++'s, one component).

    The decoder gives the location mu(z), shaped like x; the layer owns the scale. Each
    x_d = k/255 gets the logistic mass of its bin (`DiscretizedLogistic`):

    ```none
    log p(x|z) = sum_d log [F_d(x_d + 1/510) - F_d(x_d - 1/510)],   F_d(t) = sigmoid((t - mu_d) / s_d)
    ```

    with the edge bins (x_d = 0 and 1) extending to -inf and +inf, so the probabilities of
    the 256 values sum to 1. It is a probability, not a density: log p(x|z) <= 0, and
    -log p(x|z) / (D ln 2) is the bits per dimension of the 8-bit data (D = prod(event_shape)),
    directly comparable with other discrete models. The mean is mu clipped to [0, 1]
    (see `DiscretizedLogistic`).

    Args:
        event_shape: shape of one example x, e.g. `(32, 32, 3)`.
        num_bins: number of values per dimension; data must be k / (num_bins - 1).
        scale: a positive float for a fixed s, or `"learned"` for one trainable s per
            dimension of x (softplus-parameterised with floor `min_scale`, starting at
            `INITIAL_SCALE` = 0.1, about the spread of an untrained reconstruction).
        min_scale: floor on a learned s.

    Example:

    ```python
    likelihood = DiscretizedLogisticLikelihood((32, 32, 3))
    p = likelihood(decoder(z))                         # batch [B], event [32, 32, 3]
    bits_per_dim = -p.log_prob(x) / (3072 * math.log(2.0))
    ```
    """

    support = (0.0, 1.0)
    INITIAL_SCALE = 0.1

    def __init__(self, event_shape, num_bins=256, scale="learned", min_scale=1e-3, **kwargs):
        num_bins = _check_positive_int("num_bins", num_bins)
        if num_bins < 2:
            raise ValueError(f"`num_bins` must be at least 2. Received: num_bins={num_bins}")
        _check_scale(scale)
        if not 0 <= min_scale < self.INITIAL_SCALE:
            raise ValueError(f"`min_scale` must be in [0, {self.INITIAL_SCALE}). Received: min_scale={min_scale!r}")
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.event_shape = tuple(int(d) for d in event_shape)
        self.num_bins = num_bins
        self.scale = scale if scale == "learned" else float(scale)
        self.min_scale = float(min_scale)
        if self.scale == "learned":
            self.raw_scale = self.add_weight(
                name="raw_scale",
                shape=self.event_shape,
                initializer=keras.initializers.Constant(math.log(math.expm1(self.INITIAL_SCALE - self.min_scale))),
            )

    def logistic_scale(self):
        """The logistic scale s (its standard deviation is s pi / sqrt(3))."""
        if self.scale == "learned":
            return tf.nn.softplus(_float32(self.raw_scale)) + self.min_scale
        return tf.constant(self.scale, tf.float32)

    def call(self, loc):
        loc = _float32(loc)
        logistic = DiscretizedLogistic(loc, tf.broadcast_to(self.logistic_scale(), tf.shape(loc)), self.num_bins)
        return Independent(logistic, reinterpreted_batch_ndims=len(self.event_shape))

    @staticmethod
    def named_parameters(distribution):
        """The parameters of a distribution this layer made, by the name a SavedModel gives them."""
        return {"x_loc": distribution.distribution.loc, "x_scale": distribution.distribution.scale}

    def get_config(self):
        config = {"event_shape": self.event_shape, "num_bins": self.num_bins, "scale": self.scale,
                  "min_scale": self.min_scale}
        return {**super().get_config(), **config}


@keras.saving.register_keras_serializable(package=_PACKAGE)
class StandardNormalPrior(keras.layers.Layer):
    """The prior p(z) = N(0, I_L) as a layer, so a model can swap in another prior.

    A prior layer implements `distribution()` returning a `tfd.Distribution` with event
    shape `[latent_dim]` and empty batch shape; it may own trainable weights. If its
    `distribution` takes a `model` argument, `VAE` passes itself, for priors defined
    through the model's own encoder (the VampPrior).
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


@keras.saving.register_keras_serializable(package=_PACKAGE)
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
        min_scale: floor added to every component's standard deviation.

    Example:

    ```python
    model = keras_vae.mlp_vae((8, 8, 1), latent_dim=2, prior=MixtureOfGaussiansPrior(2, num_components=10))
    p = model.prior_distribution()     # tfd.MixtureSameFamily, event [2]
    ```
    """

    SEED = 1337  # seed of the initial locations

    def __init__(self, latent_dim, num_components=10, min_scale=1e-4, **kwargs):
        latent_dim = _check_positive_int("latent_dim", latent_dim)
        num_components = _check_positive_int("num_components", num_components)
        if not 0 <= min_scale < 1:
            raise ValueError(f"`min_scale` must be in [0, 1). Received: min_scale={min_scale!r}")
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.latent_dim = latent_dim
        self.num_components = num_components
        self.min_scale = float(min_scale)
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
        scales = tf.nn.softplus(_float32(self.raw_scales)) + self.min_scale
        return tfd.MixtureSameFamily(
            mixture_distribution=tfd.Categorical(logits=_float32(self.mixture_logits)),
            components_distribution=tfd.MultivariateNormalDiag(_float32(self.locs), scales),
        )

    def call(self, inputs=None):
        return self.distribution()

    def get_config(self):
        config = {"latent_dim": self.latent_dim, "num_components": self.num_components, "min_scale": self.min_scale}
        return {**super().get_config(), **config}


@keras.saving.register_keras_serializable(package=_PACKAGE)
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
        latent_dim = _check_positive_int("latent_dim", latent_dim)
        num_pseudo_inputs = _check_positive_int("num_pseudo_inputs", num_pseudo_inputs)
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


LIKELIHOODS = {
    "bernoulli": BernoulliLikelihood,
    "gaussian": GaussianLikelihood,
    "continuous_bernoulli": ContinuousBernoulliLikelihood,
    "discretized_logistic": DiscretizedLogisticLikelihood,
}
PRIORS = {"standard_normal": StandardNormalPrior, "mixture": MixtureOfGaussiansPrior, "vamp": VampPrior}


def make_likelihood(name, event_shape, **kwargs):
    """The likelihood layer called `name` (a key of `LIKELIHOODS`) for examples of shape `event_shape`."""
    if name not in LIKELIHOODS:
        raise ValueError(f"Unknown likelihood {name!r}; expected one of {sorted(LIKELIHOODS)}")
    return LIKELIHOODS[name](event_shape, **kwargs)


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
