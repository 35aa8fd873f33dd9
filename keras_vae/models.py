"""`VAE`: a Keras 3 model that trains a variational autoencoder with `fit`.

The model wires four parts, each replaceable:

```none
x --encoder--> params --posterior--> q(z|x) --sample--> z --decoder--> params --likelihood--> p(x|z)
                                     prior: p(z)
```

`train_step` maximises the ELBO (or the IWAE bound L_k) computed by `keras_vae.bounds`;
`fit` and `evaluate` report per-example `loss`, `elbo`, `reconstruction` and `kl` in nats.
"""

import inspect
import itertools
import math

import keras
import numpy as np
import tensorflow as tf

from keras_vae import bounds, distributions, networks

_TERMS = ("elbo", "reconstruction", "kl")
STEPS_PER_EXECUTION = 100  # `compile`'s default: fit ran 0.52x as fast at 1, 0.90x at 20
# (python -m benchmarks.run --cases=train_mlp_b100 --steps_per_execution=N, 2 CPU cores)
MAX_FUSED_BYTES = 64 * 2**20  # batches stacked for one fused train call, at most
_CONVOLUTIONS = (keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Conv3D, keras.layers.Conv1DTranspose,
                 keras.layers.Conv2DTranspose, keras.layers.Conv3DTranspose, keras.layers.DepthwiseConv2D,
                 keras.layers.SeparableConv2D)


@keras.saving.register_keras_serializable(package="keras_vae")
class VAE(keras.Model):
    """Variational autoencoder trained on the ELBO or the importance-weighted bound.

    ```none
    ELBO(x) = E_q(z|x)[log p(x|z)] - KL(q(z|x) || p(z))     loss = -(reconstruction - beta * kl)
    ```

    Args:
        encoder: Keras model, x -> posterior parameters.
        decoder: Keras model, z [B, L] -> likelihood parameters shaped like x.
        posterior: a layer mapping encoder outputs to q(z|x), e.g. `GaussianPosterior`.
        likelihood: a layer mapping decoder outputs to p(x|z), e.g. `BernoulliLikelihood`.
        prior: a layer with `distribution()` giving p(z); default `StandardNormalPrior`.
        beta: weight on the KL term (beta-VAE); 1 is the true ELBO.
        num_samples: z samples per example in each training and evaluation step.
        objective: `"elbo"` (average over samples) or `"iwae"` (Burda et al.'s L_k).
        analytic_kl: closed-form KL where TFP registers one, else a Monte Carlo estimate.
        seed: integer seed for the z samples drawn in `train_step` and `test_step`.
        num_classes: C for a conditional VAE, q(z|x, y) and p(x|z, y) with labels y in
            [0, C): the encoder takes [x, one_hot(y)], the decoder [z, one_hot(y)]; `fit`
            takes (x, y), and `sample` a class. None: unconditional.
        free_bits: per-dimension KL floor λ in nats (Kingma et al., 2016; 0 = off), against
            posterior collapse: the loss is -(reconstruction - beta * sum_d max(λ, KL_d)),
            KL_d averaged over the batch. `elbo` and `kl` are still reported exactly.
            Needs the ELBO objective, a diagonal posterior and the standard normal prior.

    Example:

    ```python
    model = keras_vae.mlp_vae(input_shape=(8, 8, 1), latent_dim=2, hidden_units=(64,))
    model.compile(optimizer="adam")
    model.fit(x_train, epochs=10, validation_data=(x_val,))
    x_hat = model.predict(x_val)            # reconstruction means
    ```
    """

    def __init__(self, encoder, decoder, posterior, likelihood, prior=None, beta=1.0, num_samples=1,
                 objective="elbo", analytic_kl=True, seed=None, free_bits=0.0, num_classes=None, **kwargs):
        if not beta >= 0:
            raise ValueError(f"`beta` must be >= 0. Received: beta={beta!r}")
        if not isinstance(num_samples, int) or num_samples < 1:
            raise ValueError(f"`num_samples` must be a positive integer. Received: num_samples={num_samples!r}")
        if objective not in bounds.OBJECTIVES:
            raise ValueError(f"`objective` must be one of {bounds.OBJECTIVES}. Received: objective={objective!r}")
        if num_classes is not None and (not isinstance(num_classes, int) or num_classes < 2):
            raise ValueError(f"`num_classes` must be an integer >= 2 or None. Received: num_classes={num_classes!r}")
        networks_inputs = (len(encoder.inputs), len(decoder.inputs))
        if networks_inputs != ((2, 2) if num_classes else (1, 1)):
            raise ValueError(
                "A conditional VAE needs an encoder taking [x, y] and a decoder taking [z, y], an unconditional one "
                f"single-input networks; num_classes={num_classes!r} but the encoder and decoder take "
                f"{networks_inputs[0]} and {networks_inputs[1]} inputs")
        if not free_bits >= 0:
            raise ValueError(f"`free_bits` must be >= 0. Received: free_bits={free_bits!r}")
        if free_bits and (objective != "elbo" or getattr(posterior, "covariance", None) != "diagonal"
                          or not isinstance(prior, (type(None), distributions.StandardNormalPrior))):
            raise ValueError("`free_bits` needs objective='elbo', a diagonal GaussianPosterior and the standard "
                             f"normal prior. Received: objective={objective!r}, posterior={posterior!r}, prior={prior!r}")
        super().__init__(**kwargs)
        self.encoder = encoder
        self.decoder = decoder
        self.posterior = posterior
        self.likelihood = likelihood
        self.prior = prior if prior is not None else distributions.StandardNormalPrior(posterior.latent_dim)
        self.beta = float(beta)
        self.num_samples = num_samples
        self.objective = objective
        self.analytic_kl = bool(analytic_kl)
        self.seed = seed
        self.free_bits = float(free_bits)
        self.num_classes = num_classes
        self._seed_generator = keras.random.SeedGenerator(seed)
        # The KL weight in use: beta, or less during a KL warm-up (see `KLWarmup`).
        self.kl_weight = self.add_weight(
            name="kl_weight", shape=(), initializer=keras.initializers.Constant(self.beta),
            trainable=False, dtype="float32",
        )
        names = ("loss",) + _TERMS + (("iwae_bound",) if objective == "iwae" else ())
        self._trackers = {name: keras.metrics.Mean(name=name) for name in names}
        # Every part is built at construction (networks are functional models), so the
        # model is usable, saveable and restorable before it has seen data.
        self.built = True

    @property
    def metrics(self):
        return list(self._trackers.values())

    @property
    def input_event_shape(self):
        """Shape of one example x, as the encoder expects it."""
        return tuple(self.encoder.inputs[0].shape[1:])

    @property
    def latent_dim(self):
        return self.posterior.latent_dim

    # ------------------------------------------------------------------ the model
    def encode(self, x, y=None):
        """q(z|x) (q(z|x, y) if conditional) for a batch of x: a `tfd.Distribution` with batch shape [B]."""
        x = self._check_shape(x)
        return self.posterior(self.encoder([x, self._one_hot(y)] if self.num_classes else x))

    def decode(self, z, y=None):
        """p(x|z) (p(x|z, y) if conditional) for z of shape [..., B, L]: batch shape z.shape[:-1]."""
        z = tf.convert_to_tensor(z, tf.float32)
        sample_shape = tf.shape(z)[:-1]
        inputs = tf.reshape(z, [-1, self.latent_dim])
        if self.num_classes:  # y [B] goes with every sample of z [..., B, L]
            y = tf.broadcast_to(self._one_hot(y), tf.concat([sample_shape, [self.num_classes]], axis=0))
            inputs = [inputs, tf.reshape(y, [-1, self.num_classes])]
        params = self.decoder(inputs)
        params = tf.reshape(params, tf.concat([sample_shape, tf.shape(params)[1:]], axis=0))
        return self.likelihood(params)

    def _one_hot(self, y):
        """Labels as one-hot float32 [B, C]: from integers [B] or one-hot rows [B, C]."""
        if y is None:
            raise ValueError(f"This conditional VAE needs labels y: integers in [0, {self.num_classes}) or "
                             f"one-hot rows of length {self.num_classes}")
        y = tf.convert_to_tensor(y)
        if y.shape.rank == 2:
            return tf.cast(y, tf.float32)
        return tf.one_hot(tf.cast(y, tf.int32), self.num_classes, dtype=tf.float32)

    def prior_distribution(self):
        """p(z): the prior layer's `distribution()`, given this model as `model` if it takes one
        (a prior built from the model, such as the VampPrior)."""
        if "model" in inspect.signature(self.prior.distribution).parameters:
            return self.prior.distribution(model=self)
        return self.prior.distribution()

    def call(self, x, training=False):
        """Reconstruction mean E[x | z = mean of q(z|x)]: what `predict` returns.

        A conditional model takes `x = (x, y)`, e.g. `model.predict((x, y))`.
        """
        x, y = x if self.num_classes else (x, None)
        return self.decode(self.encode(x, y).mean(), y).mean()

    def sample(self, num, seed=None, mean=True, return_latents=False, labels=None):
        """`num` draws from the model: z ~ p(z), then the mean of p(x|z) (or a draw if not `mean`).

        A conditional model draws from p(x|z, y) for `labels`: one class for all, or one per draw.
        Returns x, or `(x, z)` with `return_latents`. The same seed gives the same draws.
        """
        z_seed, x_seed = tf.unstack(tf.random.experimental.stateless_split(self._seed(seed), 2))
        z = distributions.sample(self.prior_distribution(), num, seed=z_seed)
        if self.num_classes and labels is not None:
            labels = tf.broadcast_to(tf.cast(labels, tf.int32), [num])
        likelihood = self.decode(z, labels)
        x = likelihood.mean() if mean else likelihood.sample(seed=x_seed)
        return (x, z) if return_latents else x

    def compute_terms(self, x, num_samples=None, objective=None, seed=None, y=None):
        """Per-example `elbo`, `reconstruction`, `kl` and `objective` (see `bounds.bound_terms`)."""
        return bounds.bound_terms(
            tf.cast(self._check_shape(x), tf.float32),
            self.encode(x, y),
            self.prior_distribution(),
            lambda z: self.decode(z, y),
            num_samples=num_samples or self.num_samples,
            seed=self._seed(seed),
            analytic_kl=self.analytic_kl,
            beta=self.kl_weight,
            objective=objective or self.objective,
            free_bits=self.free_bits if (objective or self.objective) == "elbo" else 0.0,
        )

    def importance_sampled(self, x, num_samples, chunk_size=None, seed=0, y=None):
        """Per-example L_k, ELBO and reconstruction from k samples (`bounds.importance_sampled`);
        for a conditional model, of log p(x|y) given labels `y`."""
        x = tf.cast(self._check_shape(x), tf.float32)
        y = self._one_hot(y) if self.num_classes else None
        return self._importance_sampled(x, y, num_samples, chunk_size, self._seed(seed))

    @tf.function(reduce_retracing=True)
    def _importance_sampled(self, x, y, num_samples, chunk_size, seed):
        # Compiled: called eagerly, the per-sample map_fn would run one Python step per sample.
        return bounds.importance_sampled(x, self.encode(x, y), self.prior_distribution(), lambda z: self.decode(z, y),
                                         num_samples, seed=seed, chunk_size=chunk_size)

    def iwae_bound(self, x, num_samples, chunk_size=None, seed=0, y=None):
        """L_k per example, drawn `chunk_size` samples at a time; large k estimates log p(x)."""
        return self.importance_sampled(x, num_samples, chunk_size, seed, y)["iwae_bound"]

    # ------------------------------------------------------------------ training
    def compile(self, optimizer="adam", *args, jit_compile="auto", steps_per_execution="auto", **kwargs):
        """Keras `compile`, with defaults measured fastest for VAEs (`python -m benchmarks.run`).

        `jit_compile="auto"`: XLA, except for networks with convolutions on a CPU (oneDNN's
        convolutions beat XLA's there), under a distribution strategy or with op
        determinism on. `steps_per_execution="auto"`: `STEPS_PER_EXECUTION` train steps per
        call (1 under a distribution strategy), so Python runs once per hundred batches;
        callbacks' batch hooks run then too.
        """
        if jit_compile == "auto":
            jit_compile = self._auto_jit_compile()
        if steps_per_execution == "auto":  # Keras' multi-step loop fails under tf.distribute (TF 2.21)
            steps_per_execution = 1 if self._distributed() else STEPS_PER_EXECUTION
        super().compile(optimizer, *args, jit_compile=jit_compile, steps_per_execution=steps_per_execution, **kwargs)

    def _distributed(self):
        """True under a tf.distribute strategy (in its scope, or built in one)."""
        return tf.distribute.has_strategy() or getattr(self, "_distribute_strategy", None) is not None

    def compile_from_config(self, config):
        """Compile as saved in a `.keras` file (Keras skips this for models that override `compile`)."""
        self.compile(**keras.saving.deserialize_keras_object(config))
        self.optimizer.build(self.trainable_variables)

    def _auto_jit_compile(self):
        from tensorflow.python.framework.config import is_op_determinism_enabled  # as Keras checks it

        if self._distributed() or is_op_determinism_enabled():
            return False
        return not self._convolutional() or bool(tf.config.list_logical_devices("GPU"))

    def _convolutional(self):
        """True if the encoder or decoder has a convolution layer."""
        layers = [layer for network in (self.encoder, self.decoder) for layer in network._flatten_layers()]
        return any(isinstance(layer, _CONVOLUTIONS) for layer in layers)

    def make_train_function(self, force=False):
        """Keras' train function; under XLA with one device and dense networks, one that runs
        each call's `steps_per_execution` train steps in a single compiled loop.

        Keras calls an XLA cluster per step from a graph loop, and each call copies every
        variable in and out (about 1 ms a step for the MLP VAE on a CPU, a third of the step).
        Here the call's batches are read first, then trained on in a loop inside one XLA
        computation, `MAX_FUSED_BYTES` of batches at a time; the steps and their results are
        the same (`train_step` on each batch, in order). Convolutional networks keep Keras'
        loop: inside an XLA loop their step ran 8x slower on a CPU (`python -m benchmarks.run
        --cases=train_conv_b128 --jit_compile=true --steps_per_execution=20`), and no GPU was
        at hand to show otherwise.
        """
        if self.train_function is not None and not force:
            return self.train_function
        if (not self.jit_compile or self.run_eagerly or self.steps_per_execution == 1 or self._distributed()
                or self._convolutional()):
            return super().make_train_function(force)

        def fused_steps(batches):
            stacked = tf.nest.map_structure(lambda *parts: tf.stack(parts), *batches)

            def body(i, logs):
                return i + 1, self.train_step(tf.nest.map_structure(lambda s: s[i], stacked))

            logs = self.train_step(batches[0])
            return tf.while_loop(lambda i, logs: i < len(batches), body, (tf.constant(1), logs))[1]

        fused_steps = tf.function(fused_steps, jit_compile=True, autograph=False)

        def train_function(iterator):
            batches = list(itertools.islice(iterator, self.steps_per_execution))
            if not batches:
                raise StopIteration
            logs = None
            for group in _equal_shape_groups(batches, MAX_FUSED_BYTES):
                logs = fused_steps(group)
            return logs

        self.train_function = train_function
        return train_function

    def train_step(self, data):
        x, y = self._unpack(data)
        with tf.GradientTape() as tape:
            terms = self.compute_terms(x, y=y)
            loss = self._loss(terms)
            # Under tf.distribute each replica sees 1/N of the global batch and `apply` sums
            # the replicas' gradients, so dividing by N gives the gradient of the global mean.
            # A LossScaleOptimizer (mixed_float16) scales here and unscales in `apply`.
            scaled_loss = self.optimizer.scale_loss(loss / tf.distribute.get_strategy().num_replicas_in_sync)
        gradients = tape.gradient(scaled_loss, self.trainable_variables)
        self.optimizer.apply(gradients, self.trainable_variables)
        return self._update_metrics(terms, loss)

    def test_step(self, data):
        x, y = self._unpack(data)
        terms = self.compute_terms(x, y=y)
        return self._update_metrics(terms, self._loss(terms))

    def _loss(self, terms):
        """Mean negative objective per example, plus any regularization losses of the networks."""
        loss = -tf.reduce_mean(terms["objective"])
        return loss + tf.add_n(self.losses) if self.losses else loss

    def _update_metrics(self, terms, loss):
        batch_size = tf.cast(tf.shape(terms["elbo"])[0], tf.float32)
        self._trackers["loss"].update_state(loss, sample_weight=batch_size)
        for name, tracker in self._trackers.items():
            if name != "loss":
                tracker.update_state(terms[name])
        results = {name: tracker.result() for name, tracker in self._trackers.items()}
        if isinstance(tf.distribute.get_strategy(), tf.distribute.MultiWorkerMirroredStrategy):
            # Keras 3 averages step outputs across workers with reduce(..., axis=0), which
            # fails on scalars (tensorflow/tensorflow#72388); a [1] vector reduces to the scalar.
            results = {name: tf.reshape(value, [1]) for name, value in results.items()}
        return results

    def fit(self, x=None, y=None, *args, **kwargs):
        self.check_data(x, y)
        validation_data = kwargs.get("validation_data")
        if isinstance(validation_data, (tuple, list)):
            self.check_data(*validation_data[:2])
        else:
            self.check_data(validation_data)
        return super().fit(x, y, *args, **kwargs)

    def evaluate(self, x=None, y=None, *args, **kwargs):
        self.check_data(x, y)
        return super().evaluate(x, y, *args, **kwargs)

    def predict(self, x, *args, **kwargs):
        self.check_data(*(x if self.num_classes and isinstance(x, (tuple, list)) else (x,)))
        return super().predict(x, *args, **kwargs)

    # ------------------------------------------------------------------ input checks
    def check_data(self, x, y=None):
        """Raise ValueError unless array data x has the encoder's shape, a real number dtype,
        finite values and values in the likelihood's support, and (conditional models) one
        label in [0, num_classes) per example in y. Datasets and generators pass through
        unchecked."""
        if self.num_classes and isinstance(x, (np.ndarray, tf.Tensor, list)):
            self._check_labels(y, len(x))
        if isinstance(x, (tf.Tensor, tf.Variable)):
            dtype = x.dtype
            if not (dtype.is_floating or dtype.is_integer) or dtype.is_complex:
                raise ValueError(f"Expected numeric data. Received dtype {dtype.name}")
            x = tf.cast(x, tf.float32).numpy() if dtype.is_floating else x.numpy()
        elif isinstance(x, (np.ndarray, list)):
            x = np.asarray(x)
            if x.dtype.kind not in "fiu":  # real floats and integers (not bool, complex, timedelta, ...)
                raise ValueError(f"Expected numeric data. Received dtype {x.dtype}")
        else:
            return
        self._check_shape(x)
        if not np.all(np.isfinite(x)):
            raise ValueError(f"Expected finite values; data has {int(np.sum(~np.isfinite(x)))} NaN or inf entries")
        low, high = getattr(self.likelihood, "support", (-math.inf, math.inf))
        if x.size and (x.min() < low or x.max() > high):
            raise ValueError(
                f"{type(self.likelihood).__name__} expects values in [{low}, {high}]. "
                f"Received values in [{x.min():.4g}, {x.max():.4g}]"
            )

    def _check_labels(self, y, count):
        if y is None:
            raise ValueError(f"This conditional VAE trains and evaluates on (x, y): pass labels y, integers in "
                             f"[0, {self.num_classes}), one per example")
        y = np.asarray(y)
        if y.shape != (count,) or y.dtype.kind not in "iu" or (y.size and (y.min() < 0 or y.max() >= self.num_classes)):
            raise ValueError(f"Expected labels y of shape ({count},), integers in [0, {self.num_classes}). Received "
                             f"shape {y.shape}, dtype {y.dtype}" + (f", values in [{y.min()}, {y.max()}]" if y.size else ""))

    def _check_shape(self, x):
        expected = self.input_event_shape
        shape = tuple(x.shape)
        if len(shape) != len(expected) + 1 or any(
            e is not None and s is not None and s != e for s, e in zip(shape[1:], expected)
        ):
            raise ValueError(
                f"Expected x of shape (batch, {', '.join(map(str, expected))}). Received shape {shape}"
            )
        return x

    def _unpack(self, data):
        """(x, y) of a batch; y (labels) only for a conditional model."""
        x, y, _ = keras.utils.unpack_x_y_sample_weight(data)
        return x, (y if self.num_classes else None)

    def _seed(self, seed=None):
        """A stateless seed: the model's next one for None, [seed, 0] for an int, else as given."""
        if seed is None:
            seed = tf.cast(self._seed_generator.next(), tf.int32)
            replica = tf.distribute.get_replica_context()
            if replica is not None and replica.num_replicas_in_sync > 1:  # independent noise per replica
                seed = tf.random.experimental.stateless_fold_in(seed, replica.replica_id_in_sync_group)
            return seed
        if isinstance(seed, int):
            return tf.constant([seed, 0], tf.int32)
        return seed

    # ------------------------------------------------------------------ serialization
    def get_config(self):
        serialize = keras.saving.serialize_keras_object
        config = {
            "encoder": serialize(self.encoder),
            "decoder": serialize(self.decoder),
            "posterior": serialize(self.posterior),
            "likelihood": serialize(self.likelihood),
            "prior": serialize(self.prior),
            "beta": self.beta,
            "num_samples": self.num_samples,
            "objective": self.objective,
            "analytic_kl": self.analytic_kl,
            "seed": self.seed,
            "free_bits": self.free_bits,
            "num_classes": self.num_classes,
        }
        return {"name": self.name, "trainable": self.trainable, **config}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        for key in ("encoder", "decoder", "posterior", "likelihood", "prior"):
            config[key] = keras.saving.deserialize_keras_object(config[key])
        return cls(**config)


def _equal_shape_groups(batches, max_bytes):
    """Consecutive runs of `batches` with equal shapes, each at most `max_bytes` (but >= 1 batch)."""
    def shapes(batch):
        return tuple(tuple(t.shape) for t in tf.nest.flatten(batch))

    group, size = [], 0
    for batch in batches:
        nbytes = sum(t.shape.num_elements() * t.dtype.size for t in tf.nest.flatten(batch))
        if group and (shapes(batch) != shapes(group[0]) or size + nbytes > max_bytes):
            yield group
            group, size = [], 0
        group.append(batch)
        size += nbytes
    if group:
        yield group


def mlp_vae(input_shape, latent_dim, hidden_units=(200, 200), likelihood="bernoulli", covariance="diagonal",
            activation="relu", likelihood_scale=None, **kwargs):
    """A `VAE` with MLP encoder and mirrored MLP decoder for data of shape `input_shape`.

    Args:
        input_shape: shape of one example, flat `(784,)` or an image `(28, 28, 1)`.
        latent_dim: size of z.
        hidden_units: encoder widths; the decoder uses them reversed.
        likelihood: a name in `distributions.LIKELIHOODS`: `"bernoulli"` (data in [0, 1]),
            `"gaussian"`, ...
        covariance: posterior covariance, `"diagonal"` or `"full"`.
        activation: hidden-layer activation (`"tanh"` as in Burda et al., `"relu"`, ...).
        likelihood_scale: scale of a Gaussian or discretized logistic likelihood: a float or
            `"learned"`; None for the family's default (1.0 and `"learned"`).
        **kwargs: passed to `VAE` (`beta`, `num_samples`, `objective`, `prior`, `seed`,
            `num_classes` for a conditional VAE, ...).
    """
    input_shape, c = tuple(int(d) for d in input_shape), kwargs.get("num_classes") or 0
    return _assemble(
        lambda size: networks.mlp_encoder(input_shape, hidden_units, size, activation=activation, condition_size=c),
        networks.mlp_decoder(latent_dim, tuple(reversed(tuple(hidden_units))), input_shape, activation=activation,
                             condition_size=c),
        input_shape, latent_dim, likelihood, covariance, likelihood_scale, **kwargs)


def conv_vae(input_shape, latent_dim, filters=(32, 64), hidden_units=(256,), likelihood="bernoulli",
             covariance="diagonal", activation="relu", likelihood_scale=None, **kwargs):
    """A `VAE` with a convolutional encoder and a mirrored transposed-convolution decoder.

    For images `input_shape = (H, W, C)` with H and W divisible by 2^len(filters), e.g.
    28x28x1 (MNIST) or 32x32x3 (CIFAR-10). `filters` are the encoder's stride-2 3x3
    convolutions, `hidden_units` the Dense layers between them and z; the decoder mirrors
    both. Other arguments as in `mlp_vae`.
    """
    input_shape, c = tuple(int(d) for d in input_shape), kwargs.get("num_classes") or 0
    filters, hidden_units = tuple(filters), tuple(hidden_units)
    return _assemble(
        lambda size: networks.conv_encoder(input_shape, filters, size, hidden_units, activation=activation,
                                           condition_size=c),
        networks.conv_decoder(latent_dim, tuple(reversed(filters)), input_shape, tuple(reversed(hidden_units)),
                              activation=activation, condition_size=c),
        input_shape, latent_dim, likelihood, covariance, likelihood_scale, **kwargs)


def _assemble(make_encoder, decoder, input_shape, latent_dim, likelihood, covariance, likelihood_scale, **kwargs):
    """A `VAE` from an encoder factory (given the posterior's parameter count) and a decoder."""
    posterior = distributions.GaussianPosterior(latent_dim, covariance=covariance)
    scaled = likelihood in ("gaussian", "discretized_logistic")  # the families with a scale parameter
    likelihood_kwargs = {"scale": likelihood_scale} if scaled and likelihood_scale is not None else {}
    return VAE(
        encoder=make_encoder(posterior.params_size(latent_dim, covariance)),
        decoder=decoder,
        posterior=posterior,
        likelihood=distributions.make_likelihood(likelihood, input_shape, **likelihood_kwargs),
        **kwargs,
    )
