"""The likelihood p(x|z) as Keras 3 layers that turn a decoder's output into a `tfd` distribution.

A decoder (an ordinary Keras model) outputs a plain tensor of parameters shaped like x;
these layers build p(x|z) from it, always in float32 so mixed precision decoders can feed
them, with `log_prob` giving one value per example (`Independent` over the event shape).
TFP's own Keras layers are Keras 2 layers, which Keras 3 rejects; these are their Keras 3
replacements for the VAE's needs. A likelihood layer of your own needs only a `call`
returning such a distribution, with `log_prob` and `mean()`; `support` and
`named_parameters` are optional (the protocol is in `keras_vae.export`'s docstring).

`LIKELIHOODS` and `make_likelihood` name them: `"bernoulli"`, `"gaussian"`,
`"continuous_bernoulli"` (a density on [0, 1] [1]) and `"discretized_logistic"`
(probabilities of 8-bit values [2]). Each layer has a `support` (the values of x it is
defined for, which `VAE.check_data` enforces) and `named_parameters`, the parameters a
SavedModel's `decode` signature returns.

Each also has `log_likelihood_caveat(x)`: None when its `log_prob` of the data x (numpy,
already in the support) is a normalised log-likelihood, else why not (a Bernoulli of grey
levels, discretized logistic values off the grid). `evaluation.report` uses it to say
whether its NLL is -log p(x); a layer of your own without the method is reported as
unknown.

#### References

[1]: Gabriel Loaiza-Ganem and John P. Cunningham. The continuous Bernoulli: fixing a
     pervasive error in variational autoencoders. NeurIPS 2019.
[2]: Tim Salimans, Andrej Karpathy, Xi Chen and Diederik P. Kingma. PixelCNN++: Improving
     the PixelCNN with Discretized Logistic Mixture Likelihood and Other Modifications.
     ICLR 2017.
"""

import math

import keras
import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

from keras_vae import checks

tfd = tfp.distributions
tfb = tfp.bijectors


class Independent(tfd.Independent):
    """`tfd.Independent` that sums `log_prob` over the event with `event_sum`.

    A per-value distribution with a `summed_log_prob(x, ndims)` method (`Bernoulli`)
    computes the sum itself.
    """

    def _log_prob(self, x):
        ndims = tf.get_static_value(self.reinterpreted_batch_ndims)
        summed = getattr(self.distribution, "summed_log_prob", None)
        if summed is not None and ndims is not None:
            return summed(x, ndims)
        log_prob = self.distribution.log_prob(x)
        if ndims is None:
            return tf.reduce_sum(log_prob, axis=tf.range(-self.reinterpreted_batch_ndims, 0))
        return event_sum(log_prob, ndims)


def event_sum(values, ndims):
    """`values` summed over their last `ndims` axes (the event of a `log_prob`).

    With the event's size static, the values are flattened and summed as a product with a
    vector of ones. XLA on CPUs compiles a sum over the minor axis into several times slower
    code than its dot product, and a sum over three axes (an image's H, W, C) slower still
    (docs/RESULTS.md).
    """
    if not ndims:
        return values
    size = values.shape[-ndims:].num_elements() if values.shape.rank is not None else None
    flat = _flatten_last(values, ndims, -1 if size is None else size)
    return tf.reduce_sum(flat, axis=-1) if size is None else _sum_last(flat)


def _sum_last(values):
    """values [..., n], n static, summed over n as a dot product with ones (see `event_sum`)."""
    return tf.tensordot(values, tf.ones(values.shape[-1:], values.dtype), axes=1)


def _flatten_last(x, ndims, size=-1):
    """x with its last `ndims` axes as one, of `size` values if given (a static last axis)."""
    shape = tf.shape(x)
    return tf.reshape(x, tf.concat([shape[: tf.rank(x) - ndims], [size]], axis=0))


PRODUCT_GROUP = 16  # factors 1 + e^-|l| multiplied before one log: at most 2^16, exact to float32 rounding


def _groups(values, group):
    """values [..., D] as [..., group, D // group]: value j in column j mod (D // group)."""
    return tf.reshape(values, tf.concat([tf.shape(values)[:-1], [group, values.shape[-1] // group]], axis=0))


def _group_size(size):
    if size is None:
        raise ValueError("Summing by groups needs a static last axis")
    return max(g for g in range(1, PRODUCT_GROUP + 1) if size % g == 0)


def column_sums(values):
    """values [..., D] summed into D / g columns, [..., D / g] (g = `PRODUCT_GROUP`, or the
    largest divisor of D below it): column c holds the sum of values c, c + D/g, c + 2 D/g, ...

    The sum runs over a non-minor axis, which XLA vectorises along the minor one (see
    `event_sum`). The few columns left are then summed as usual, with some other work
    between the two sums: XLA merges two sums in a row back into one (docs/RESULTS.md)."""
    return tf.reduce_sum(_groups(values, _group_size(values.shape[-1])), axis=-2)


@tf.custom_gradient
def column_log1p_exp_neg_abs(logits):
    """log(1 + exp(-|l|)) summed into columns as `column_sums` does, with one log per column.

    Each factor 1 + e^-|l| lies in (1, 2], so a product of 16 is at most 2^16 and keeps
    float32's relative precision (a rounding per multiply): the sum's error is at most
    about 2e-7 nats a value, as with one log per value, for a sixteenth of the logs. The
    gradient, -sign(l) sigmoid(-|l|) (0 at l = 0), reuses the forward pass's exponentials.
    """
    group = _group_size(logits.shape[-1])
    e = tf.exp(-tf.abs(logits))
    value = tf.math.log(tf.reduce_prod(_groups(1.0 + e, group), axis=-2))

    def grad(upstream):
        return tf.reshape(_groups(-tf.sign(logits) * (e / (1.0 + e)), group) * upstream[..., None, :],
                          tf.shape(logits))

    return value, grad


class Bernoulli(tfd.Bernoulli):
    """`tfd.Bernoulli` whose `log_prob` from logits l is the cross-entropy with one
    transcendental pair per value:

    ```none
    log p(x) = x l - softplus(l) = -(max(l, 0) - x l + log(1 + exp(-|l|)))
    ```

    TFP computes both log sigmoid(l) and log sigmoid(-l), twice the transcendentals, and
    `tf.nn.sigmoid_cross_entropy_with_logits` needs x broadcast to the logits' shape first
    (k copies of x for k samples of z); this broadcasts as it computes. `log(1 + e)` with
    e = exp(-|l|) in (0, 1] rather than `log1p(e)`: log runs about twice as fast on CPUs,
    and its absolute error, at most about 1.2e-7 per value (1 + e rounded), is below what
    float32 sums of hundreds of such values keep. Summed over an event (`summed_log_prob`,
    which `Independent` uses), the logs are taken of products of 16 factors
    (`column_log1p_exp_neg_abs`). The likelihood is most of a small VAE's elementwise work, in
    training and in the k = 5000 evaluation alike.
    """

    def _log_prob(self, event):
        if self.logits is None:  # built from probs
            return super()._log_prob(event)
        logits = tf.convert_to_tensor(self.logits)
        event = tf.cast(event, logits.dtype)
        return -(tf.nn.relu(logits) - event * logits + tf.math.log(1.0 + tf.exp(-tf.abs(logits))))

    def summed_log_prob(self, event, ndims):
        """`log_prob` summed over the last `ndims` axes of the batch shape, as `Independent` needs."""
        logits = None if self.logits is None else tf.convert_to_tensor(self.logits)
        summed = None if logits is None or logits.shape.rank is None or not ndims else logits.shape[-ndims:]
        if summed is None or not summed.is_fully_defined():  # from probs, or an unknown event size
            return event_sum(self.log_prob(event), ndims)
        flat = _flatten_last(logits, ndims, summed.num_elements())
        event = _flatten_last(tf.cast(event, logits.dtype), ndims)
        # max(l, 0) - x l value by value, where they cancel exactly (l and x l for x = 1), and max(l, 0)
        # as (l + |l|) / 2, also exact, whose slope at l = 0 is 1/2, softplus' own (relu's is 0 there).
        # Both terms go into the same columns, and only then is the event summed (`column_sums`;
        # summed as `event_sum` does, the columns of an image event took four times as long).
        linear = column_sums(0.5 * (flat + tf.abs(flat)) - event * flat)
        return -tf.reduce_sum(linear + column_log1p_exp_neg_abs(flat), axis=-1)


@keras.saving.register_keras_serializable(package="keras_vae")
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

    def log_likelihood_caveat(self, x):
        """None for binary x; for other values (grey levels), why log p(x|z) is no log-likelihood:
        the Bernoulli puts all its mass on {0, 1}, so x l - softplus(l) of an x in between is
        a cross-entropy, not the log of a normalised probability or density."""
        x = np.asarray(x)
        if np.all((x == 0) | (x == 1)):
            return None
        return ("a Bernoulli likelihood of grey levels is not a normalised density: train and evaluate on binarized "
                "data (--binarize=dynamic) for a log-likelihood")

    def marginal_params(self, mean):
        """The logits whose Bernoulli has this per-value `mean` (clipped to [1e-3, 1 - 1e-3]),
        for `keras_vae.init_output_bias`."""
        p = np.clip(np.asarray(mean, np.float64), 1e-3, 1 - 1e-3)
        return np.log(p) - np.log1p(-p)

    def call(self, logits):
        per_dimension = self.family(logits=tf.cast(logits, tf.float32), dtype=tf.float32)
        return Independent(per_dimension, reinterpreted_batch_ndims=len(self.event_shape))

    @staticmethod
    def named_parameters(distribution):
        """The parameters of a distribution this layer made, by the name a SavedModel gives them."""
        return {"x_logits": distribution.distribution.logits}

    def get_config(self):
        return {**super().get_config(), "event_shape": self.event_shape}


def _add_scale_weight(layer, initial):
    """For `layer.scale == "learned"`: the weight `raw_scale` (one per event entry), with
    softplus(raw_scale) + min_scale == `initial` at the start. A fixed scale has none."""
    if layer.scale == "learned":
        layer.raw_scale = layer.add_weight(
            name="raw_scale", shape=layer.event_shape,
            initializer=keras.initializers.Constant(math.log(math.expm1(initial - layer.min_scale))))


def _scale_value(layer):
    """The scale in use: softplus(raw_scale) + min_scale if learned, else the fixed value."""
    if layer.scale == "learned":
        return tf.nn.softplus(tf.cast(layer.raw_scale, tf.float32)) + layer.min_scale
    return tf.constant(layer.scale, tf.float32)


@keras.saving.register_keras_serializable(package="keras_vae")
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
        min_scale: floor on a learned sigma, in [0, 1).
    """

    support = (-math.inf, math.inf)

    def __init__(self, event_shape, scale=1.0, min_scale=1e-3, **kwargs):
        scale = checks.check_scale("scale", scale)
        min_scale = checks.check_in_range("min_scale", min_scale, 0.0, 1.0)
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.event_shape = tuple(int(d) for d in event_shape)
        self.scale = scale
        self.min_scale = min_scale
        _add_scale_weight(self, initial=1.0)  # a learned scale starts at sigma = 1

    def stddev(self):
        return _scale_value(self)

    def log_likelihood_caveat(self, x):
        """None: a density on the whole real line, normalised for any x."""
        return None

    def call(self, loc):
        loc = tf.cast(loc, tf.float32)
        normal = tfd.Normal(loc, tf.broadcast_to(self.stddev(), tf.shape(loc)))
        return Independent(normal, reinterpreted_batch_ndims=len(self.event_shape))

    @staticmethod
    def named_parameters(distribution):
        """The parameters of a distribution this layer made, by the name a SavedModel gives them."""
        return {"x_scale": distribution.distribution.scale}

    def get_config(self):
        config = {"event_shape": self.event_shape, "scale": self.scale, "min_scale": self.min_scale}
        return {**super().get_config(), **config}


@keras.saving.register_keras_serializable(package="keras_vae")
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

    def marginal_params(self, mean):
        """None: the continuous Bernoulli's mean is not sigmoid(logits), so `init_output_bias` leaves it."""
        return None

    def log_likelihood_caveat(self, x):
        """None: a normalised density on [0, 1], for grey levels and binary data alike."""
        return None


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
        num_bins = checks.check_int_at_least("num_bins", num_bins, 2)
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


@keras.saving.register_keras_serializable(package="keras_vae")
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
        min_scale: floor on a learned s, in [0, `INITIAL_SCALE`).

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
        num_bins = checks.check_int_at_least("num_bins", num_bins, 2)
        scale = checks.check_scale("scale", scale)
        min_scale = checks.check_in_range("min_scale", min_scale, 0.0, self.INITIAL_SCALE)
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.event_shape = tuple(int(d) for d in event_shape)
        self.num_bins = num_bins
        self.scale = scale
        self.min_scale = min_scale
        _add_scale_weight(self, initial=self.INITIAL_SCALE)

    def logistic_scale(self):
        """The logistic scale s (its standard deviation is s pi / sqrt(3))."""
        return _scale_value(self)

    GRID_TOLERANCE = 1e-3  # in levels: float32 k / 255 is within 2e-5 levels of k

    def log_likelihood_caveat(self, x):
        """None for x on the grid k / (num_bins - 1); else why log p(x|z) is no log-likelihood of x:
        `log_prob` rounds x to the nearest level, so it is the probability of other data."""
        levels = np.asarray(x, np.float64) * (self.num_bins - 1)
        off = np.abs(levels - np.round(levels)) > self.GRID_TOLERANCE
        if not off.any():
            return None
        return (f"{int(off.sum())} of {off.size} values are off the discretized logistic's {self.num_bins}-level grid "
                f"k/{self.num_bins - 1}: it rounds them to the nearest level, so the NLL is that of the rounded data, "
                "not of x")

    def call(self, loc):
        loc = tf.cast(loc, tf.float32)
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


LIKELIHOODS = {
    "bernoulli": BernoulliLikelihood,
    "gaussian": GaussianLikelihood,
    "continuous_bernoulli": ContinuousBernoulliLikelihood,
    "discretized_logistic": DiscretizedLogisticLikelihood,
}


def make_likelihood(name, event_shape, **kwargs):
    """The likelihood layer called `name` (a key of `LIKELIHOODS`) for examples of shape `event_shape`."""
    if name not in LIKELIHOODS:
        raise ValueError(f"Unknown likelihood {name!r}; expected one of {sorted(LIKELIHOODS)}")
    return LIKELIHOODS[name](event_shape, **kwargs)
