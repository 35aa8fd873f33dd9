"""The approximate posterior q(z|x) as a Keras 3 layer, and how to sample it fast.

An encoder (an ordinary Keras model) outputs a plain tensor of parameters;
`GaussianPosterior` turns it into a `tfd` Gaussian over z, diagonal or full-covariance,
always in float32 so mixed precision encoders can feed it. TFP's own Keras layers are
Keras 2 layers, which Keras 3 rejects; this is their replacement for the VAE's needs. A
posterior layer of your own needs `latent_dim` and a `call` returning a distribution over z
with a reparameterized `sample`, `log_prob`, and `mean()` and `stddev()` for export (the
protocol is in `keras_vae.export`'s docstring).

`sample` draws z from such a posterior (or from any distribution) with a stateless seed,
the way the bounds and the model draw their noise.
"""

import keras
import tensorflow as tf
import tensorflow_probability as tfp

from keras_vae import checks

tfd = tfp.distributions
tfb = tfp.bijectors


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


@keras.saving.register_keras_serializable(package="keras_vae")
class GaussianPosterior(keras.layers.Layer):
    """Gaussian q(z|x) from a vector of parameters.

    With `covariance="diagonal"` the input holds `[loc, raw_scale]` (size 2L) and

    ```none
    q(z|x) = N(z; loc, diag(scale)^2),   scale = softplus(raw_scale) + min_scale
    ```

    (`scale_activation="exp"`: scale = exp(raw_scale) + min_scale, so that log scale is
    affine in the network's output, as in Burda et al.'s code.) With `covariance="full"` it
    holds `[loc, raw_tril]` (size L + L(L+1)/2): the lower triangle is filled in
    `tfp.math.fill_triangular`'s order and its diagonal made positive the same way, giving
    `MultivariateNormalTriL`; for a given scale_tril S the raw entries are
    `tfb.FillScaleTriL(diag_bijector, diag_shift=min_scale).inverse(S)`, `diag_bijector`
    being `SCALE_ACTIVATIONS[scale_activation]()`. `params_size(latent_dim, covariance)`
    tells an encoder how many outputs to produce.

    Args:
        latent_dim: size L of z.
        covariance: `"diagonal"` or `"full"`.
        min_scale: floor added to every standard deviation, for numerical stability.
        scale_activation: `"softplus"` or `"exp"`, what makes the raw scales positive.

    Example:

    ```python
    posterior = GaussianPosterior(latent_dim=2)
    q = posterior(encoder(x))          # tfd.MultivariateNormalDiag, batch [B], event [2]
    z = q.sample()
    ```
    """

    COVARIANCES = ("diagonal", "full")
    SCALE_ACTIVATIONS = {"softplus": tfb.Softplus, "exp": tfb.Exp}

    def __init__(self, latent_dim, covariance="diagonal", min_scale=1e-4, scale_activation="softplus", **kwargs):
        latent_dim = checks.check_positive_int("latent_dim", latent_dim)
        checks.check_one_of("covariance", covariance, self.COVARIANCES)
        min_scale = checks.check_non_negative("min_scale", min_scale)
        checks.check_one_of("scale_activation", scale_activation, tuple(self.SCALE_ACTIVATIONS))
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.latent_dim = latent_dim
        self.covariance = covariance
        self.min_scale = min_scale
        self.scale_activation = scale_activation

    @staticmethod
    def params_size(latent_dim, covariance="diagonal"):
        if covariance == "full":
            return latent_dim + latent_dim * (latent_dim + 1) // 2
        return 2 * latent_dim

    def call(self, params):
        params = tf.cast(params, tf.float32)
        size = self.params_size(self.latent_dim, self.covariance)
        if params.shape[-1] is not None and params.shape[-1] != size:
            raise ValueError(
                f"GaussianPosterior(latent_dim={self.latent_dim}, covariance={self.covariance!r}) "
                f"expects {size} parameters on the last axis. Received shape {tuple(params.shape)}"
            )
        loc, raw = params[..., : self.latent_dim], params[..., self.latent_dim :]
        positive = self.SCALE_ACTIVATIONS[self.scale_activation]()
        if self.covariance == "diagonal":
            return tfd.MultivariateNormalDiag(loc, positive.forward(raw) + self.min_scale)
        scale_tril = tfb.FillScaleTriL(diag_bijector=positive, diag_shift=self.min_scale)(raw)
        return tfd.MultivariateNormalTriL(loc, scale_tril)

    def get_config(self):
        config = {"latent_dim": self.latent_dim, "covariance": self.covariance, "min_scale": self.min_scale,
                  "scale_activation": self.scale_activation}
        return {**super().get_config(), **config}
