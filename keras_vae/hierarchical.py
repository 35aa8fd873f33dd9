"""Hierarchical VAEs: a stack of stochastic layers z_1, ..., z_n held as one latent vector.

Burda et al.'s two-stochastic-layer model [1], and any depth of the same kind:

```none
q(z|x)  = q(z_1|x) q(z_2|z_1) ... q(z_n|z_{n-1})
p(x, z) = p(x|z_1) p(z_1|z_2) ... p(z_{n-1}|z_n) p(z_n),      p(z_n) = N(0, I)
```

Every conditional is a diagonal Gaussian whose parameters a network computes from the
layer below (q) or above (p). A `VAE` sees one latent vector z = [z_1, ..., z_n] of size
L_1 + ... + L_n: the posterior layer returns one distribution over it, the prior layer
another, and the decoder reads z_1 off it. So the VAE's training, `keras_vae.bounds` (the
ELBO, L_k and the importance-sampled log p(x)) and `.keras` saving work unchanged over the
joint (z_1, ..., z_n), with log w = log p(x|z_1) + log p(z) - log q(z|x). The KL has no
closed form (`bounds.closed_form_kl` returns None): the ELBO's KL is the Monte Carlo
estimate mean(log q(z|x) - log p(z)) at the same samples.

- `LatentChain`: the distribution over [z_1, ..., z_n] whose blocks are drawn one after
  another, each from a distribution conditional on the block drawn just before it:
  upwards for q, downwards for p. One class serves both.
- `HierarchicalPosterior`, `HierarchicalPrior`: Keras 3 layers holding the networks of the
  links and returning `LatentChain`s.
- `LatentBlock`: the decoder's first layer, z -> z_1.
- `hierarchical_vae`: the builder, Burda et al.'s architecture by default.
- `is_hierarchical`: whether a `VAE` is such a model (what `keras_vae.evaluation` and
  `keras_vae.plots` key their per-layer reports and pictures on).
- `layer_report`: KL and active units per stochastic layer.
- `latents_from_top`: z for given top-layer values z_n, the layers below at the prior's
  conditional means, top-down: what `plots.latent_manifold` decodes.

#### References

[1]: Yuri Burda, Roger Grosse and Ruslan Salakhutdinov. Importance Weighted
     Autoencoders. ICLR 2016.
"""

import functools
import itertools

import keras
import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

from keras_vae import checks, likelihoods, networks, posteriors
from keras_vae.models import VAE

tfd = tfp.distributions

ACTIVITY_THRESHOLD = 0.01  # Burda et al.'s threshold on Var_x E[z_u]: a unit above it is active


def _check_latent_dims(latent_dims):
    if isinstance(latent_dims, (int, np.integer)):
        latent_dims = (latent_dims,)
    latent_dims = checks.check_positive_ints("latent_dims", latent_dims)
    if not latent_dims:
        raise ValueError("`latent_dims` must name at least one stochastic layer, e.g. (100, 50). Received: ()")
    return latent_dims


# ---------------------------------------------------------------------- the distribution
class LatentChain(tfd.Distribution):
    """A distribution over the concatenation z = [z_1, ..., z_n] of n blocks, drawn one block at a time.

    The blocks are drawn in `order` (a permutation of 0..n-1): block `order[0]` from
    `root`, then each block `order[i]` from `links[i - 1](z_{order[i - 1]})`, a
    distribution conditional on the block drawn just before it:

    ```none
    r(z) = root(z_{o_0}) prod_{i >= 1} link_i(z_{o_i} | z_{o_{i-1}})
    ```

    `HierarchicalPosterior` draws upwards (order 0, 1, ..., n-1), `HierarchicalPrior`
    downwards (n-1, ..., 0); whatever the order, z holds the blocks in order 1..n. The
    batch shape is `root`'s; a link takes its input block with any leading sample
    dimensions, [..., *batch, L], and returns a distribution with batch shape
    [..., *batch]. `sample` is reparameterized when `root` and the links are (the
    Gaussians of the hierarchical layers are), each block drawn as
    `keras_vae.posteriors.sample` draws (Philox noise for Gaussians).

    `log_prob(z)` is the sum of `block_log_probs(z)`, the log density of each block given
    its parent; `block_distributions(z)` gives those conditionals themselves, and
    `sample_with_blocks(n)` a draw with the conditionals met while drawing it (so that
    `keras_vae.bounds` runs the links' networks once for a draw and its density). No
    closed-form KL is registered: `tfd.kl_divergence` raises NotImplementedError, and the
    bounds fall back to the Monte Carlo KL.

    `mean()` and `stddev()` are exact for the first block drawn (`root`'s moments). For a
    later block they are the moments of its conditional at the previous block's `mean()`
    (a plug-in): the mean is then exact when the link's mean is affine in its input (as in
    a linear-Gaussian chain), and otherwise the statistic Burda et al. measure active units
    of z_2 with (the mean of q(z_2|z_1) at z_1 = E[z_1|x]); the stddev is the conditional
    one, without the spread that the block below adds to the marginal. A `VAE`'s `predict`
    decodes this mean, and so reads z_1 = E[z_1|x] exactly.

    Args:
        root: the distribution of block `order[0]`, event [sizes[order[0]]].
        links: n - 1 callables, `links[i - 1](z_parent)` the distribution of block
            `order[i]` given block `order[i - 1]`.
        sizes: the n block sizes L_1, ..., L_n.
        order: the order the blocks are drawn in; default 0, 1, ..., n-1.
    """

    def __init__(self, root, links, sizes, order=None, validate_args=False, allow_nan_stats=True,
                 name="LatentChain"):
        parameters = dict(locals())
        sizes = checks.check_positive_ints("sizes", sizes)
        order = tuple(range(len(sizes))) if order is None else tuple(int(i) for i in order)
        links = tuple(links)
        if sorted(order) != list(range(len(sizes))) or len(links) != len(sizes) - 1:
            raise ValueError(f"A LatentChain of {len(sizes)} blocks needs `order`, a permutation of "
                             f"0..{len(sizes) - 1}, and {len(sizes) - 1} links. Received order={order!r} and "
                             f"{len(links)} links")
        self._root, self._links, self._sizes, self._order = root, links, sizes, order
        super().__init__(dtype=root.dtype, reparameterization_type=root.reparameterization_type,
                         validate_args=validate_args, allow_nan_stats=allow_nan_stats, parameters=parameters,
                         name=name)

    @property
    def sizes(self):
        return self._sizes

    @property
    def order(self):
        return self._order

    @property
    def root(self):
        return self._root

    def _batch_shape(self):
        return self._root.batch_shape

    def _batch_shape_tensor(self):
        return self._root.batch_shape_tensor()

    def _event_shape(self):
        return tf.TensorShape([sum(self._sizes)])

    def _event_shape_tensor(self):
        return tf.constant([sum(self._sizes)], tf.int32)

    def split(self, z):
        """The blocks [z_1, ..., z_n] of z [..., L], in order 1..n."""
        return tf.split(tf.convert_to_tensor(z, self.dtype), self._sizes, axis=-1)

    def _sample_n(self, n, seed=None):
        return self.sample_with_blocks(n, seed)[0]

    def sample_with_blocks(self, n, seed=None):
        """n draws z [n, *batch, L] (what `sample(n, seed)` draws), and the
        `block_distributions(z)` met while drawing them: each link's network runs once for
        both, where `sample` then `log_prob` run it twice."""
        seeds = tf.unstack(tfp.random.split_seed(seed, n=len(self._sizes)))
        parts = [None] * len(self._sizes)
        distribution, z = self._root, posteriors.sample(self._root, n, seed=seeds[0])
        parts[self._order[0]] = (distribution, z)
        for slot, link, block_seed in zip(self._order[1:], self._links, seeds[1:]):
            distribution = link(z)
            z = posteriors.sample(distribution, seed=block_seed)
            parts[slot] = (distribution, z)
        return tf.concat([value for _, value in parts], axis=-1), parts

    def block_distributions(self, z):
        """[(distribution, value)] per block, in order 1..n: the block's distribution given
        its parent's value in z (`root` for the first drawn), and the block's value in z."""
        blocks = self.split(z)
        parts = [None] * len(self._sizes)
        parts[self._order[0]] = (self._root, blocks[self._order[0]])
        for parent, slot, link in zip(self._order, self._order[1:], self._links):
            parts[slot] = (link(blocks[parent]), blocks[slot])
        return parts

    def block_log_probs(self, z):
        """The log density of each block given its parent, in order 1..n: for a posterior
        [log q(z_1|x), log q(z_2|z_1), ...], for a prior [log p(z_1|z_2), ..., log p(z_n)];
        each of shape [..., *batch] for z of shape [..., *batch, L]."""
        return [distribution.log_prob(value) for distribution, value in self.block_distributions(z)]

    def _log_prob(self, z):
        return functools.reduce(tf.add, self.block_log_probs(z))  # broadcasts, unlike add_n

    def block_moments(self):
        """(means, stddevs): per block, in order 1..n, as described for `mean()` and `stddev()`."""
        means, stddevs = [None] * len(self._sizes), [None] * len(self._sizes)
        distribution = self._root
        for i, slot in enumerate(self._order):
            if i:
                distribution = self._links[i - 1](means[self._order[i - 1]])
            means[slot], stddevs[slot] = distribution.mean(), distribution.stddev()
        return means, stddevs

    def conditional_means(self, first):
        """z [..., L] whose block `order[0]` is `first` [..., L_{order[0]}] and whose later blocks are
        each the mean of its link at the block set just before it (`root` is not used).

        For a `HierarchicalPrior`'s chain, first = z_n and, top-down, z_{n-1} = E[z_{n-1}|z_n],
        ..., z_1 = E[z_1|z_2]: a plug-in path (z_1 is E[z_1|z_n] itself only when the links'
        means are affine, as in a linear-Gaussian chain).
        """
        first = tf.convert_to_tensor(first, self.dtype)
        size = self._sizes[self._order[0]]
        if first.shape.rank is None or first.shape.rank < 1 or first.shape[-1] != size:
            raise ValueError(f"Expected values of block {self._order[0] + 1}, shape [..., {size}]. Received shape "
                             f"{first.shape}")
        blocks = [None] * len(self._sizes)
        z = blocks[self._order[0]] = first
        for slot, link in zip(self._order[1:], self._links):
            z = blocks[slot] = link(z).mean()
        return tf.concat(blocks, axis=-1)

    def _mean(self):
        return tf.concat(self.block_moments()[0], axis=-1)

    def _stddev(self):
        return tf.concat(self.block_moments()[1], axis=-1)

    def _variance(self):
        return tf.square(self._stddev())


def _apply(network, z, output_size):
    """`network` (a [N, L] -> [N, output_size] model) applied to z [..., L]: the leading
    dimensions (samples, batch) are flattened into N and restored."""
    outputs = network(tf.reshape(z, [-1, z.shape[-1]]))
    return tf.reshape(outputs, tf.concat([tf.shape(z)[:-1], [output_size]], axis=0))


def _gaussian_link(network, gaussian):
    """z -> the diagonal Gaussian `gaussian` (a `GaussianPosterior` layer) of `network`(z)'s parameters."""
    size = gaussian.params_size(gaussian.latent_dim)
    return lambda z: gaussian(_apply(network, z, size))


def _check_networks(networks_, shapes, role):
    """The networks as a list, after checking their count and, for models with static
    shapes, that network i maps [B, shapes[i][0]] to [B, shapes[i][1]]."""
    networks_ = list(networks_)
    if len(networks_) != len(shapes):
        raise ValueError(f"{role} of {len(shapes) + 1} stochastic layers needs one network per link, {len(shapes)}. "
                         f"Received {len(networks_)}")
    for i, (network, (inputs, outputs)) in enumerate(zip(networks_, shapes)):
        if getattr(network, "inputs", None) and getattr(network, "outputs", None):
            got = (tuple(network.inputs[0].shape[1:]), tuple(network.outputs[0].shape[1:]))
            if got != ((inputs,), (outputs,)):
                raise ValueError(f"{role}: network {i} must map [B, {inputs}] to [B, {outputs}] (the Gaussian's "
                                 f"loc and raw scale). Received a network from {got[0]} to {got[1]}")
    return networks_


class _ChainLayer(keras.layers.Layer):
    """What the posterior and prior layers share: the block sizes, the link networks, the
    per-block Gaussians and their serialization."""

    ROLE = ""

    def __init__(self, latent_dims, networks=(), min_scale=1e-4, scale_activation="softplus", **kwargs):
        latent_dims = _check_latent_dims(latent_dims)
        min_scale = checks.check_non_negative("min_scale", min_scale)
        networks = _check_networks(networks, self._link_shapes(latent_dims), f"{type(self).__name__}")
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.latent_dims = latent_dims
        self.latent_dim = sum(latent_dims)
        self.min_scale = min_scale
        self.networks = networks
        self._gaussians = [posteriors.GaussianPosterior(size, min_scale=min_scale, scale_activation=scale_activation,
                                                        name=f"z_{i + 1}") for i, size in enumerate(latent_dims)]
        self.scale_activation = scale_activation
        # The networks are functional models, built at construction; so is this layer.
        self.built = True

    def get_config(self):
        config = {"latent_dims": list(self.latent_dims), "min_scale": self.min_scale,
                  "scale_activation": self.scale_activation,
                  "networks": [keras.saving.serialize_keras_object(network) for network in self.networks]}
        return {**super().get_config(), **config}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["networks"] = [keras.saving.deserialize_keras_object(network) for network in config["networks"]]
        return cls(**config)


@keras.saving.register_keras_serializable(package="keras_vae")
class HierarchicalPosterior(_ChainLayer):
    """q(z|x) = q(z_1|x) q(z_2|z_1) ... q(z_n|z_{n-1}) over z = [z_1, ..., z_n], diagonal Gaussians.

    ```none
    q(z_1|x)         = N(loc, diag(scale)^2),  [loc, raw] = encoder(x)
    q(z_{l+1}|z_l)   = N(loc, diag(scale)^2),  [loc, raw] = networks[l - 1](z_l)
    scale = softplus(raw) + min_scale           (as in `GaussianPosterior`, or exp: `scale_activation`)
    ```

    The layer takes the encoder's parameters of q(z_1|x), 2 L_1 of them
    (`params_size(latent_dims)`), and returns a `LatentChain` drawn upwards: batch [B],
    event [L_1 + ... + L_n], with a reparameterized `sample` and `block_log_probs`, the
    log q of each layer given the one below. Its `mean()` gives E[z_1|x] and, for the
    layers above, the mean of q(z_{l+1}|z_l) at the mean of z_l (see `LatentChain`).

    Args:
        latent_dims: L_1, ..., L_n; `latent_dim` is their sum.
        networks: n - 1 Keras models, `networks[l - 1]` mapping z_l [B, L_l] to the 2 L_{l+1}
            parameters of q(z_{l+1}|z_l), e.g. `keras_vae.networks.mlp`.
        min_scale: floor added to every standard deviation.
        scale_activation: `"softplus"` or `"exp"`, as in `GaussianPosterior`.
    """

    @staticmethod
    def _link_shapes(latent_dims):
        return [(latent_dims[l], 2 * latent_dims[l + 1]) for l in range(len(latent_dims) - 1)]

    @staticmethod
    def params_size(latent_dims):
        """How many parameters the encoder outputs: q(z_1|x)'s loc and raw scale, 2 L_1."""
        return posteriors.GaussianPosterior.params_size(_check_latent_dims(latent_dims)[0])

    def call(self, params):
        links = [_gaussian_link(network, gaussian) for network, gaussian in zip(self.networks, self._gaussians[1:])]
        return LatentChain(self._gaussians[0](params), links, self.latent_dims)


@keras.saving.register_keras_serializable(package="keras_vae")
class HierarchicalPrior(_ChainLayer):
    """p(z) = p(z_n) p(z_{n-1}|z_n) ... p(z_1|z_2) over z = [z_1, ..., z_n], diagonal Gaussians.

    ```none
    p(z_n)           = N(0, I)
    p(z_l|z_{l+1})   = N(loc, diag(scale)^2),  [loc, raw] = networks[l - 1](z_{l+1})
    ```

    `distribution()` is a `LatentChain` drawn downwards, with empty batch shape and event
    [L_1 + ... + L_n]: `sample` draws from the top (z_n, then z_{n-1} given z_n, ...), and
    `block_log_probs` gives log p of each layer given the one above.

    Args:
        latent_dims: L_1, ..., L_n.
        networks: n - 1 Keras models, `networks[l - 1]` mapping z_{l+1} [B, L_{l+1}] to the
            2 L_l parameters of p(z_l|z_{l+1}).
        min_scale: floor added to every standard deviation.
        scale_activation: `"softplus"` or `"exp"`, as in `GaussianPosterior`.
    """

    @staticmethod
    def _link_shapes(latent_dims):
        return [(latent_dims[l + 1], 2 * latent_dims[l]) for l in range(len(latent_dims) - 1)]

    def distribution(self):
        top = self.latent_dims[-1]
        root = tfd.MultivariateNormalDiag(tf.zeros([top], tf.float32), tf.ones([top], tf.float32))
        # Downwards: networks[l - 1] gives p(z_l|z_{l+1}), for l = n-1, ..., 1.
        links = [_gaussian_link(self.networks[l], self._gaussians[l]) for l in reversed(range(len(self.networks)))]
        return LatentChain(root, links, self.latent_dims, order=tuple(reversed(range(len(self.latent_dims)))))

    def call(self, inputs=None):
        return self.distribution()


@keras.saving.register_keras_serializable(package="keras_vae")
class LatentBlock(keras.layers.Layer):
    """z = [z_1, ..., z_n] -> z_{index + 1}, one stochastic layer's block: a decoder's first
    layer, so that p(x|z) reads z_1 only (`index=0`).

    Args:
        latent_dims: L_1, ..., L_n.
        index: which block, from 0.
    """

    def __init__(self, latent_dims, index=0, **kwargs):
        latent_dims = _check_latent_dims(latent_dims)
        index = checks.check_int_at_least("index", index, 0)
        if index >= len(latent_dims):
            raise ValueError(f"`index` must be below {len(latent_dims)}, the number of blocks. Received: index={index}")
        super().__init__(**kwargs)
        self.latent_dims, self.index = latent_dims, index
        self.start = sum(latent_dims[:index])

    def call(self, z):
        return z[..., self.start:self.start + self.latent_dims[self.index]]

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.latent_dims[self.index])

    def get_config(self):
        return {**super().get_config(), "latent_dims": list(self.latent_dims), "index": self.index}


# ---------------------------------------------------------------------- the builder
def hierarchical_vae(input_shape, latent_dims=(100, 50), hidden_units=((100, 100), (50, 50)), activation="tanh",
                     likelihood="bernoulli", likelihood_scale=None, min_scale=1e-4, scale_activation="softplus",
                     **kwargs):
    """A `VAE` with n stochastic layers of diagonal Gaussians and MLP networks between them.

    The defaults are Burda et al.'s two-layer architecture: q(z_1|x) from x through two
    100-unit tanh layers to 100 latents, q(z_2|z_1) through two 50-unit tanh layers to 50;
    p(z_2) = N(0, I), p(z_1|z_2) through two 50-unit tanh layers, p(x|z_1) through two
    100-unit tanh layers to the likelihood's parameters.

    Args:
        input_shape: shape of one example, flat `(784,)` or an image `(28, 28, 1)`.
        latent_dims: L_1, ..., L_n, the stochastic layers' sizes from the data up.
        hidden_units: n tuples of widths: `hidden_units[0]` for the encoder x -> q(z_1|x),
            `hidden_units[l]` for q(z_{l+1}|z_l). The generative network between the same
            two layers uses the same widths reversed: p(x|z_1) `hidden_units[0]`, p(z_l|z_{l+1})
            `hidden_units[l]`. An empty tuple is one affine map.
        activation: the hidden layers' activation.
        likelihood: a name in `likelihoods.LIKELIHOODS`.
        likelihood_scale: as in `mlp_vae`.
        min_scale: floor on every latent standard deviation.
        scale_activation: `"softplus"` or `"exp"`, what makes every latent Gaussian's raw
            scales positive (`GaussianPosterior`); Burda et al.'s code used exp.
        **kwargs: passed to `VAE` (`num_samples`, `objective`, `beta`, `seed`, `num_classes`,
            ...), except `prior`: the prior is the hierarchical one. A conditional model
            (`num_classes`) conditions q(z_1|x, y) and p(x|z_1, y) on the labels. An integer
            `seed` fixes the networks' initial weights as well as the z noise.

    Example:

    ```python
    model = keras_vae.hierarchical_vae((28, 28, 1), objective="iwae", num_samples=5, seed=0)  # Burda et al.
    ```
    """
    if "prior" in kwargs:
        raise ValueError("hierarchical_vae builds its own prior, p(z_n) p(z_{n-1}|z_n) ... p(z_1|z_2); it takes no "
                         f"`prior`. Received: prior={kwargs['prior']!r}")
    latent_dims = _check_latent_dims(latent_dims)
    hidden_units = tuple(checks.check_positive_ints("hidden_units", h) for h in hidden_units)
    if len(hidden_units) != len(latent_dims):
        raise ValueError(f"`hidden_units` needs one tuple of widths per stochastic layer ({len(latent_dims)} for "
                         f"latent_dims={latent_dims}). Received: hidden_units={hidden_units!r}")
    input_shape, c, seed = tuple(int(d) for d in input_shape), kwargs.get("num_classes") or 0, kwargs.get("seed")
    # Encoder, decoder, then the links: each network its own seed (seed, seed + 1, ...), as mlp_vae does.
    seeds = itertools.count(seed) if seed is not None else itertools.repeat(None)
    encoder = networks.mlp_encoder(input_shape, hidden_units[0], HierarchicalPosterior.params_size(latent_dims),
                                   activation=activation, condition_size=c, seed=next(seeds))
    decoder = _z1_decoder(latent_dims, networks.mlp_decoder(
        latent_dims[0], tuple(reversed(hidden_units[0])), input_shape, activation=activation, condition_size=c,
        seed=next(seeds), name="decoder_z1"), c)
    links = range(len(latent_dims) - 1)
    posterior = HierarchicalPosterior(latent_dims, [
        networks.mlp(latent_dims[l], hidden_units[l + 1], 2 * latent_dims[l + 1], activation, seed=next(seeds),
                     name=f"q_z{l + 2}") for l in links], min_scale=min_scale, scale_activation=scale_activation)
    prior = HierarchicalPrior(latent_dims, [
        networks.mlp(latent_dims[l + 1], tuple(reversed(hidden_units[l + 1])), 2 * latent_dims[l], activation,
                     seed=next(seeds), name=f"p_z{l + 1}") for l in links], min_scale=min_scale,
        scale_activation=scale_activation)
    scaled = likelihood in ("gaussian", "discretized_logistic")  # the families with a scale parameter (as mlp_vae)
    likelihood_kwargs = {"scale": likelihood_scale} if scaled and likelihood_scale is not None else {}
    return VAE(encoder=encoder, decoder=decoder, posterior=posterior,
               likelihood=likelihoods.make_likelihood(likelihood, input_shape, **likelihood_kwargs), prior=prior,
               **kwargs)


def _z1_decoder(latent_dims, inner, condition_size):
    """The decoder z = [z_1, ..., z_n] (and one-hot y) -> `inner`(z_1 (, y)): p(x|z) reads z_1 only."""
    z = keras.Input(shape=(sum(latent_dims),), name="z")
    z1 = LatentBlock(latent_dims, 0, name="z_1")(z)
    if not condition_size:
        return keras.Model(z, inner(z1), name="decoder")
    y = keras.Input(shape=(condition_size,), name="y")
    return keras.Model([z, y], inner([z1, y]), name="decoder")


# ---------------------------------------------------------------------- reports and pictures
def is_hierarchical(model):
    """Whether `model` is a hierarchical VAE: a `HierarchicalPosterior` and a `HierarchicalPrior`
    (as `hierarchical_vae` builds). Its latent z = [z_1, ..., z_n] is then read per layer:
    `keras_vae.evaluation` reports KL and active units per layer (`layer_report`) instead of
    per dimension against N(0, 1), and `keras_vae.plots` draws the top layer and z_1."""
    return isinstance(getattr(model, "posterior", None), HierarchicalPosterior) and isinstance(
        getattr(model, "prior", None), HierarchicalPrior)


def _check_hierarchical(model, what):
    if not is_hierarchical(model):
        raise ValueError(f"{what} needs a hierarchical model (a HierarchicalPosterior and a HierarchicalPrior, "
                         f"e.g. from hierarchical_vae). Received {type(getattr(model, 'posterior', None)).__name__} "
                         f"and {type(getattr(model, 'prior', None)).__name__}")


def latents_from_top(model, z_top):
    """z = [z_1, ..., z_n] [N, L] for top-layer values z_top [N, L_n] of a hierarchical `model`,
    the layers below at the prior's conditional means, top-down:

    ```none
    z_n = z_top,   z_l = E[z_l | z_{l+1}] = mean of p(z_l|z_{l+1}),   l = n-1, ..., 1
    ```

    (the prior's `LatentChain.conditional_means`). Decoding it (`model.decode`) shows what
    the top layer means to the generative model without the noise of the layers below; the
    decoder reads z_1 only. With one stochastic layer z is z_top.
    """
    _check_hierarchical(model, "latents_from_top")
    return model.prior_distribution().conditional_means(z_top)


def layer_report(model, x, num_samples=10, batch_size=100, seed=0, activity_threshold=ACTIVITY_THRESHOLD,
                 labels=None):
    """KL and active units of each stochastic layer of a hierarchical `model`, over examples x.

    ```none
    KL_l = E_x E_q(z|x)[log q(z_l|z_{l-1}) - log p(z_l|z_{l+1})]      (z_0 = x; for l = n, log p(z_n))
    A_l  = #{u : Var_x(mu_{l,u}(x)) > activity_threshold}
    ```

    KL_l is a Monte Carlo estimate over `num_samples` draws of z per example, with a fixed
    `seed`; the KL_l sum to the model's Monte Carlo KL, E_q[log q(z|x) - log p(z)]. The
    statistic of the active units is Burda et al.'s: mu_1(x) = E[z_1|x], and for the layers
    above, mu_{l+1}(x) the mean of q(z_{l+1}|z_l) at z_l = mu_l(x) (the posterior's
    `mean()`, see `LatentChain`), not E[z_{l+1}|x] itself.

    Args:
        model: a `VAE` with a `HierarchicalPosterior` and a `HierarchicalPrior`.
        x: examples, shaped like the model's input.
        labels: a conditional model's classes of x.

    Returns:
        A dict: `latent_dims`, `num_examples`, `num_samples`, `kl_per_layer` (nats per
        example), `kl_total`, `activity_per_layer` (one list of Var_x per unit per layer),
        `active_units_per_layer`, `active_units` (their sum), `inactive_units_per_layer`
        (per layer, the indices within it of the units at or below the threshold),
        `activity_threshold` and a one-line `summary`. It is the `collapse.json` of a
        hierarchical model (`evaluation.posterior_collapse_report`): below the top, the
        prior of z_l is conditional, p(z_l|z_{l+1}), so no per-dimension KL against N(0, 1)
        is reported.
    """
    _check_hierarchical(model, "layer_report")
    num_samples = checks.check_positive_int("num_samples", num_samples)
    batch_size = checks.check_positive_int("batch_size", batch_size)
    x = np.asarray(x)
    model.check_data(x, labels)
    if len(x) == 0:
        raise ValueError("Expected at least one example. Received x of shape " + str(x.shape))
    latent_dims, prior = model.posterior.latent_dims, model.prior_distribution()
    kl_sums, means = np.zeros(len(latent_dims)), []
    base_seed = tf.constant([seed, 0], tf.int32)
    for i, start in enumerate(range(0, len(x), batch_size)):
        batch_labels = None if labels is None else np.asarray(labels)[start:start + batch_size]
        q = model.encode(x[start:start + batch_size], batch_labels)
        z = q.sample(num_samples, seed=tf.random.experimental.stateless_fold_in(base_seed, i))  # [k, B, L]
        for l, (log_q, log_p) in enumerate(zip(q.block_log_probs(z), prior.block_log_probs(z))):
            kl_sums[l] += float(tf.reduce_sum(tf.reduce_mean(log_q - log_p, axis=0)))
        means.append(q.mean().numpy())
    kl = kl_sums / len(x)
    blocks = np.split(np.concatenate(means), np.cumsum(latent_dims)[:-1], axis=-1)
    activity = [np.var(block, axis=0) for block in blocks]
    active = [int(np.sum(a > activity_threshold)) for a in activity]
    summary = "; ".join(f"z_{l + 1}: {active[l]} of {size} units active, KL {kl[l]:.3g} nats"
                        for l, size in enumerate(latent_dims))
    return {
        "latent_dims": list(latent_dims),
        "num_examples": len(x),
        "num_samples": num_samples,
        "kl_per_layer": [float(v) for v in kl],
        "kl_total": float(kl.sum()),
        "activity_per_layer": [[float(v) for v in a] for a in activity],
        "active_units_per_layer": active,
        "active_units": sum(active),
        "inactive_units_per_layer": [[int(u) for u in np.flatnonzero(a <= activity_threshold)] for a in activity],
        "activity_threshold": activity_threshold,
        "summary": summary,
    }
