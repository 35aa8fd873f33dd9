"""`VAE`: a Keras 3 model that trains a variational autoencoder with `fit`.

The model wires four parts, each replaceable:

```none
x --encoder--> params --posterior--> q(z|x) --sample--> z --decoder--> params --likelihood--> p(x|z)
                                     prior: p(z)
```

`train_step` maximises the ELBO (or the IWAE bound L_k) computed by `keras_vae.bounds`;
`fit` and `evaluate` report per-example `loss`, `elbo`, `reconstruction` and `kl` in nats.
How the steps run fast (XLA, many steps per call) lives in `keras_vae.execution`; the
builders `mlp_vae` and `conv_vae` in `keras_vae.builders`.
"""

import inspect
import math

import keras
import numpy as np
import tensorflow as tf

from keras_vae import bounds, checks, execution, posteriors, priors

_TERMS = ("elbo", "reconstruction", "kl")
_NOT_FOR_A_VAE = ("loss", "loss_weights", "metrics", "weighted_metrics")


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
        seed: integer seed of the z noise drawn in `train_step`, `test_step` and by the
            methods given `seed=None`. None draws it from Keras' global seed, so
            `keras.utils.set_random_seed` fixes it too.
        num_classes: C for a conditional VAE, q(z|x, y) and p(x|z, y) with labels y in
            [0, C): the encoder takes [x, one_hot(y)], the decoder [z, one_hot(y)]; `fit`
            takes (x, y), and `sample` a class. None: unconditional.
        free_bits: per-dimension KL floor λ in nats (Kingma et al., 2016; 0 = off), against
            posterior collapse: the loss is -(reconstruction - beta * sum_d max(λ, KL_d)),
            KL_d averaged over the batch. `elbo` and `kl` are still reported exactly.
            Needs the ELBO objective, a diagonal posterior and the standard normal prior.
        gradient_estimator: how `train_step` differentiates the objective: `"reparameterized"`
            (default); `"stl"`, sticking the landing (Roeder et al., 2017: drops the score
            term of log q(z|x), unbiased for the ELBO, biased for L_k with k > 1); `"dreg"`,
            doubly reparameterized (Tucker et al., 2019: unbiased for L_k, the same as STL
            for the ELBO). Only the encoder's gradient changes; every reported value is the
            same (`keras_vae.bounds`). STL and DReG take no free bits.

    `fit`, `evaluate`, `predict`, `train_on_batch`, `test_on_batch` and `predict_on_batch`
    work as in Keras. Batches may carry sample weights (`fit(x, sample_weight=w)`, or
    `(x, y, w)` from a dataset): the loss is then -Σ_i w_i objective_i / B (Keras' "sum over
    batch size") and `elbo`, `reconstruction` and `kl` are weighted means.

    Example:

    ```python
    keras.utils.set_random_seed(0)          # weights, shuffling and z noise: a reproducible run
    model = keras_vae.mlp_vae(input_shape=(8, 8, 1), latent_dim=2, hidden_units=(64,))
    model.compile(optimizer="adam")
    model.fit(x_train, epochs=10, validation_data=(x_val,))
    x_hat = model.predict(x_val)            # reconstruction means
    ```
    """

    def __init__(self, encoder, decoder, posterior, likelihood, prior=None, beta=1.0, num_samples=1,
                 objective="elbo", analytic_kl=True, seed=None, free_bits=0.0, num_classes=None,
                 gradient_estimator="reparameterized", **kwargs):
        beta = checks.check_non_negative("beta", beta)
        num_samples = checks.check_positive_int("num_samples", num_samples)
        checks.check_one_of("objective", objective, bounds.OBJECTIVES)
        if num_classes is not None:
            num_classes = checks.check_int_at_least("num_classes", num_classes, 2)
        networks_inputs = (len(encoder.inputs), len(decoder.inputs))
        if networks_inputs != ((2, 2) if num_classes else (1, 1)):
            raise ValueError(
                "A conditional VAE needs an encoder taking [x, y] and a decoder taking [z, y], an unconditional one "
                f"single-input networks; num_classes={num_classes!r} but the encoder and decoder take "
                f"{networks_inputs[0]} and {networks_inputs[1]} inputs")
        free_bits = checks.check_non_negative("free_bits", free_bits)
        checks.check_one_of("gradient_estimator", gradient_estimator, bounds.GRADIENT_ESTIMATORS)
        checks.raise_if(checks.gradient_estimator_problem(gradient_estimator, free_bits))
        prior_name = "standard_normal" if isinstance(prior, (type(None), priors.StandardNormalPrior)) else type(
            prior).__name__
        checks.raise_if(checks.free_bits_problem(free_bits, objective, getattr(posterior, "covariance", None),
                                                 prior_name))
        super().__init__(**kwargs)
        self.encoder = encoder
        self.decoder = decoder
        self.posterior = posterior
        self.likelihood = likelihood
        self.prior = prior if prior is not None else priors.StandardNormalPrior(posterior.latent_dim)
        self.beta = beta
        self.num_samples = num_samples
        self.objective = objective
        self.analytic_kl = bool(analytic_kl)
        self.seed = seed
        self.free_bits = free_bits
        self.num_classes = num_classes
        self.gradient_estimator = gradient_estimator
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
        if self.num_classes:  # a tensor x: Keras refuses numpy beside the tensor of one-hot labels
            return self.posterior(self.encoder([tf.cast(x, tf.float32), self._one_hot(y)]))
        return self.posterior(self.encoder(x))

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
        Returns x, or `(x, z)` with `return_latents`. An integer seed gives the same draws
        every time; None the model's next seed (see `seed` in the class docstring).
        """
        z_seed, x_seed = tf.unstack(tf.random.experimental.stateless_split(self._seed(seed), 2))
        z = posteriors.sample(self.prior_distribution(), num, seed=z_seed)
        if self.num_classes and labels is not None:
            labels = tf.broadcast_to(tf.cast(labels, tf.int32), [num])
        likelihood = self.decode(z, labels)
        x = likelihood.mean() if mean else likelihood.sample(seed=x_seed)
        return (x, z) if return_latents else x

    def compute_terms(self, x, num_samples=None, objective=None, seed=None, y=None, gradient_estimator=None):
        """Per-example `elbo`, `reconstruction`, `kl` and `objective` (see `bounds.bound_terms`);
        `num_samples`, `objective` and `gradient_estimator` default to the model's."""
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
            gradient_estimator=gradient_estimator or self.gradient_estimator,
        )

    def importance_sampled(self, x, num_samples, chunk_size=None, seed=None, y=None, return_log_weights=False,
                           jit_log_prob=False):
        """Per-example L_k, ELBO and reconstruction from k samples (`bounds.importance_sampled`);
        for a conditional model, of log p(x|y) given labels `y`. `seed` as in `sample`.
        `return_log_weights` adds the k log weights, `log_weights` [k, B], for `keras_vae.diagnostics`;
        `jit_log_prob` compiles p(x|z)'s log_prob with XLA (faster; not for exported signatures)."""
        x = tf.cast(self._check_shape(x), tf.float32)
        y = self._one_hot(y) if self.num_classes else None
        return self._importance_sampled(x, y, num_samples, chunk_size, self._seed(seed), bool(return_log_weights),
                                        bool(jit_log_prob))

    @tf.function(reduce_retracing=True, autograph=False)
    def _importance_sampled(self, x, y, num_samples, chunk_size, seed, return_log_weights=False, jit_log_prob=False):
        # Compiled: called eagerly, the per-sample map_fn would run one Python step per sample.
        return bounds.importance_sampled(x, self.encode(x, y), self.prior_distribution(), lambda z: self.decode(z, y),
                                         num_samples, seed=seed, chunk_size=chunk_size,
                                         return_log_weights=return_log_weights, jit_log_prob=jit_log_prob)

    def iwae_bound(self, x, num_samples, chunk_size=None, seed=None, y=None):
        """L_k per example, drawn `chunk_size` samples at a time; large k estimates log p(x).
        `seed` as in `sample`: pass an integer for the same number on every call."""
        return self.importance_sampled(x, num_samples, chunk_size, seed, y)["iwae_bound"]

    # ------------------------------------------------------------------ training
    def compile(self, optimizer="adam", loss=None, loss_weights=None, metrics=None, weighted_metrics=None,
                run_eagerly=False, steps_per_execution=None, jit_compile=None, auto_scale_loss=True):
        """Keras `compile`, with the VAE's own defaults for the two speed settings.

        The VAE trains on its own objective (`objective`, `beta`), so `loss`, `loss_weights`,
        `metrics` and `weighted_metrics` must be None. `jit_compile` and
        `steps_per_execution` keep Keras' meaning when given; None (the default) lets
        `keras_vae.execution.compile_defaults` pick them for this model on this machine:
        XLA for dense networks and `STEPS_PER_EXECUTION` steps per call, measured fastest
        (`python -m benchmarks.run`). The `.keras` file stores what was asked, so a model
        reloaded elsewhere picks again.
        """
        given = {name: value for name, value in zip(_NOT_FOR_A_VAE, (loss, loss_weights, metrics, weighted_metrics))
                 if value is not None}
        if given:
            raise ValueError(f"A VAE trains on its own objective and reports elbo, reconstruction and kl; compile "
                             f"takes no {', '.join(f'`{name}`' for name in given)} (set `beta`, `objective` or "
                             f"`num_samples` on the model instead). Received: {given!r}")
        resolved_jit, resolved_steps = execution.compile_defaults(self, jit_compile, steps_per_execution, run_eagerly)
        super().compile(optimizer, run_eagerly=run_eagerly, steps_per_execution=resolved_steps,
                        jit_compile=resolved_jit, auto_scale_loss=auto_scale_loss)
        self._requested = {"steps_per_execution": steps_per_execution, "jit_compile": jit_compile}

    def get_compile_config(self):
        config = super().get_compile_config()
        if config is not None:  # what the user asked for, not what this machine resolved it to
            config.update(getattr(self, "_requested", {}))
        return config

    def compile_from_config(self, config):
        """Compile as saved in a `.keras` file (Keras skips this for models that override `compile`)."""
        self.compile(**keras.saving.deserialize_keras_object(config))
        self.optimizer.build(self.trainable_variables)

    def make_train_function(self, force=False):
        """Keras' train function, or, with several steps per call on one device,
        `execution.MultiStepFunction` (fused into one XLA loop for dense networks)."""
        return self._step_function("train", self.train_step, force)

    def make_test_function(self, force=False):
        return self._step_function("test", self.test_step, force)

    def _step_function(self, mode, step, force):
        attribute = f"{mode}_function"
        if getattr(self, attribute) is not None and not force:
            return getattr(self, attribute)
        if self.steps_per_execution == 1 or execution.is_distributed(self):
            getattr(super(), f"make_{mode}_function")(force)
        else:
            fuse = self.jit_compile is True and not execution.has_convolutions(self)
            setattr(self, attribute, execution.MultiStepFunction(
                step, self.steps_per_execution, jit_compile=self.jit_compile, run_eagerly=self.run_eagerly,
                fuse=fuse))
        return getattr(self, attribute)

    def train_step(self, data):
        x, y, weight = self._unpack(data)
        with tf.GradientTape() as tape:
            terms = self.compute_terms(x, y=y)
            loss = self._loss(terms, weight)
            # Under tf.distribute each replica sees 1/N of the global batch and `apply` sums
            # the replicas' gradients, so dividing by N gives the gradient of the global mean.
            # A LossScaleOptimizer (mixed_float16) scales here and unscales in `apply`.
            scaled_loss = self.optimizer.scale_loss(loss / tf.distribute.get_strategy().num_replicas_in_sync)
        gradients = tape.gradient(scaled_loss, self.trainable_variables)
        self.optimizer.apply(gradients, self.trainable_variables)
        return self._update_metrics(terms, loss, weight)

    def test_step(self, data):
        x, y, weight = self._unpack(data)
        terms = self.compute_terms(x, y=y)
        return self._update_metrics(terms, self._loss(terms, weight), weight)

    def _loss(self, terms, weight=None):
        """Mean negative (weighted) objective per example, plus any regularization losses of the networks."""
        objective = terms["objective"] if weight is None else terms["objective"] * tf.cast(weight, tf.float32)
        loss = -tf.reduce_mean(objective)
        return loss + tf.add_n(self.losses) if self.losses else loss

    def _update_metrics(self, terms, loss, weight=None):
        batch_size = tf.cast(tf.shape(terms["elbo"])[0], tf.float32)
        weight = None if weight is None else tf.cast(weight, tf.float32)
        self._trackers["loss"].update_state(loss, sample_weight=batch_size)
        for name, tracker in self._trackers.items():
            if name != "loss":
                tracker.update_state(terms[name], sample_weight=weight)
        results = {name: tracker.result() for name, tracker in self._trackers.items()}
        if isinstance(tf.distribute.get_strategy(), tf.distribute.MultiWorkerMirroredStrategy):
            # Keras 3 averages step outputs across workers with reduce(..., axis=0), which
            # fails on scalars (tensorflow/tensorflow#72388); a [1] vector reduces to the scalar.
            results = {name: tf.reshape(value, [1]) for name, value in results.items()}
        return results

    # ------------------------------------------------------------------ Keras entry points
    # Each checks array data first, batches it as Keras would with `execution.array_dataset`
    # (without tf.data's autotuner), and runs its callbacks through `execution.StepCallbacks`
    # so batch hooks and the progress bar count the batches actually run.
    def fit(self, x=None, y=None, batch_size=None, epochs=1, verbose="auto", callbacks=None, validation_split=0.0,
            validation_data=None, shuffle=True, class_weight=None, sample_weight=None, initial_epoch=0,
            steps_per_epoch=None, **kwargs):
        _refuse_class_weight(class_weight)
        self.check_data(x, y, sample_weight)
        if isinstance(validation_data, (tuple, list)):
            self.check_data(*validation_data[:3])
        else:
            self.check_data(validation_data)
        y = self._targets_for_weights(x, y, sample_weight)
        if execution.is_array_data(x, y, sample_weight):
            if validation_split and validation_data is None:
                (x, y, sample_weight), validation_data = execution.split_arrays((x, y, sample_weight),
                                                                                validation_split)
            validation_split = 0.0  # split above, or ignored beside validation_data as Keras ignores it
            x, y, sample_weight = execution.array_dataset(x, y, sample_weight, batch_size, shuffle), None, None
            shuffle = False  # done by the dataset
            if isinstance(validation_data, (tuple, list)) and execution.is_array_data(*validation_data):
                x_val, y_val, weight_val = (*validation_data, None, None)[:3]
                validation_data = execution.array_dataset(
                    x_val, self._targets_for_weights(x_val, y_val, weight_val), weight_val,
                    batch_size=kwargs.pop("validation_batch_size", None) or batch_size)
            batch_size = None
        callbacks = self._callbacks(callbacks, verbose, x, batch_size, steps_per_epoch, validation_split,
                                    add_history=True, epochs=epochs)
        return super().fit(x, y, batch_size=batch_size, epochs=epochs, verbose=verbose, callbacks=callbacks,
                           validation_split=validation_split, validation_data=validation_data, shuffle=shuffle,
                           sample_weight=sample_weight, initial_epoch=initial_epoch, steps_per_epoch=steps_per_epoch,
                           **kwargs)

    def evaluate(self, x=None, y=None, batch_size=None, verbose="auto", sample_weight=None, steps=None,
                 callbacks=None, **kwargs):
        self.check_data(x, y, sample_weight)
        y = self._targets_for_weights(x, y, sample_weight)
        if execution.is_array_data(x, y, sample_weight):
            x, y, sample_weight, batch_size = execution.array_dataset(x, y, sample_weight, batch_size), None, None, None
        callbacks = self._callbacks(callbacks, verbose, x, batch_size, steps, epochs=1)
        return super().evaluate(x, y, batch_size=batch_size, verbose=verbose, sample_weight=sample_weight,
                                steps=steps, callbacks=callbacks, **kwargs)

    def predict(self, x, batch_size=None, verbose="auto", steps=None, callbacks=None):
        self.check_data(*(x if self.num_classes and isinstance(x, (tuple, list)) else (x,)))
        if execution.is_array_data(x):
            x, batch_size = execution.array_dataset(x, batch_size=batch_size), None
        callbacks = self._callbacks(callbacks, verbose, x, batch_size, steps, epochs=1)
        return super().predict(x, batch_size=batch_size, verbose=verbose, steps=steps, callbacks=callbacks)

    def train_on_batch(self, x, y=None, sample_weight=None, class_weight=None, return_dict=False):
        _refuse_class_weight(class_weight)
        self.check_data(x, y, sample_weight)
        return super().train_on_batch(x, y, sample_weight=sample_weight, return_dict=return_dict)

    def test_on_batch(self, x, y=None, sample_weight=None, return_dict=False):
        self.check_data(x, y, sample_weight)
        return super().test_on_batch(x, y, sample_weight=sample_weight, return_dict=return_dict)

    def predict_on_batch(self, x):
        self.check_data(*(x if self.num_classes and isinstance(x, (tuple, list)) else (x,)))
        return super().predict_on_batch(x)

    def _targets_for_weights(self, x, y, sample_weight):
        """Keras drops array sample weights given without targets y; an unconditional VAE
        ignores y, so a placeholder carries the weights into the batches."""
        if sample_weight is not None and y is None and not self.num_classes:
            return np.zeros(len(x), np.int8)
        return y

    def _callbacks(self, callbacks, verbose, x, batch_size, steps, validation_split=0.0, add_history=False,
                   epochs=1):
        """`callbacks` as Keras would wrap them, in a `StepCallbacks` (a given CallbackList stays)."""
        if isinstance(callbacks, keras.callbacks.CallbackList):
            return callbacks
        return execution.StepCallbacks(
            callbacks, model=self, steps=execution.epoch_steps(x, batch_size, steps, validation_split),
            add_history=add_history, add_progbar=verbose != 0, verbose=verbose, epochs=epochs)

    # ------------------------------------------------------------------ input checks
    def check_data(self, x, y=None, sample_weight=None):
        """Raise ValueError unless array data x has the encoder's shape, a real number dtype,
        finite values and values in the likelihood's support, (conditional models) one
        label in [0, num_classes) per example in y, and one finite weight >= 0 per example
        in `sample_weight`. Datasets and generators pass through unchecked."""
        if self.num_classes and isinstance(x, (np.ndarray, tf.Tensor, list)):
            self._check_labels(y, len(x))
        if sample_weight is not None and isinstance(x, (np.ndarray, tf.Tensor, list)):
            weight = np.asarray(sample_weight)
            if weight.shape != (len(x),) or weight.dtype.kind not in "fiu" or not (
                    np.all(np.isfinite(weight)) and np.all(weight >= 0)):
                raise ValueError(f"Expected `sample_weight` of shape ({len(x)},): one finite weight >= 0 per "
                                 f"example. Received shape {weight.shape}, dtype {weight.dtype}")
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
        """(x, y, sample_weight) of a batch; y (labels) only for a conditional model."""
        x, y, weight = keras.utils.unpack_x_y_sample_weight(data)
        return x, (y if self.num_classes else None), weight

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
            "gradient_estimator": self.gradient_estimator,
        }
        return {"name": self.name, "trainable": self.trainable, **config}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        for key in ("encoder", "decoder", "posterior", "likelihood", "prior"):
            config[key] = keras.saving.deserialize_keras_object(config[key])
        return cls(**config)


def _refuse_class_weight(class_weight):
    if class_weight is not None:
        raise ValueError("`class_weight` weighs the classes of a classifier's targets; a VAE's objective has none. "
                         f"Pass per-example `sample_weight` instead. Received: class_weight={class_weight!r}")
