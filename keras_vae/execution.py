"""How a `VAE` runs its steps fast without bending Keras' contract.

Four pieces, each used by `keras_vae.VAE` and usable with any Keras model:

- `compile_defaults`: what `jit_compile=None` and `steps_per_execution=None` (the VAE's own
  defaults, never Keras' tokens) resolve to for a model on this machine. The resolution
  happens at each `compile`, so a `.keras` file saved on one machine keeps the user's
  request, not the values chosen for it.
- `MultiStepFunction`: a train or test function that runs up to `steps_per_execution`
  steps per call on batches pulled from Keras' iterator, and records how many it ran.
  With XLA on dense networks it runs a call's steps in one compiled loop
  (`fused_steps`): Keras calls one XLA cluster per step from a graph loop, copying every
  variable in and out each time, which costs a small VAE about a third of its step.
- `StepCallbacks`: a `keras.callbacks.CallbackList` whose batch hooks receive the index of
  the last batch actually run. Keras passes `begin + steps_per_execution - 1` whatever the
  epoch's length, so a 19-batch epoch run 100 steps at a time would show `100/19` and a
  negative ETA.
- `array_dataset`: array data as the batches Keras makes of it, from a `tf.data` pipeline
  without the autotuner. In TensorFlow 2.21 deleting an iterator of an autotuned pipeline
  (Keras makes one per epoch) waits for the autotuner's thread, which sleeps for periods
  that double: each epoch on arrays waited up to about as long as the epoch before it had
  run (docs/RESULTS.md, "Array data without tf.data's autotuner").
"""

import itertools
import math

import keras
import numpy as np
import tensorflow as tf

STEPS_PER_EXECUTION = 100  # the VAE's default; measured in docs/RESULTS.md ("Speed")
MAX_FUSED_BYTES = 64 * 2**20  # batches stacked for one fused call, at most
_CONVOLUTIONS = (keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Conv3D, keras.layers.Conv1DTranspose,
                 keras.layers.Conv2DTranspose, keras.layers.Conv3DTranspose, keras.layers.DepthwiseConv2D,
                 keras.layers.SeparableConv2D)


# ---------------------------------------------------------------------- compile defaults
def compile_defaults(model, jit_compile=None, steps_per_execution=None, run_eagerly=False):
    """(jit_compile, steps_per_execution) to pass to `keras.Model.compile`.

    Values the user gave pass through unchanged, with Keras' meaning. None picks:

    - `jit_compile`: True (XLA) for dense networks; Keras' own `"auto"` for networks with
      convolutions (XLA's convolutions are slower than oneDNN's on a CPU, and Keras' "auto"
      turns XLA on only where there is an accelerator); False when running eagerly, under a
      distribution strategy or with TensorFlow op determinism on (as Keras' "auto" does).
    - `steps_per_execution`: `STEPS_PER_EXECUTION`, or 1 under a distribution strategy
      (Keras' multi-step loop does not run under `tf.distribute` in TF 2.21).
    """
    if jit_compile is None:
        if run_eagerly or is_distributed(model) or op_determinism_enabled():
            jit_compile = False
        else:
            jit_compile = "auto" if has_convolutions(model) else True
    if steps_per_execution is None:
        steps_per_execution = 1 if is_distributed(model) else STEPS_PER_EXECUTION
    return jit_compile, steps_per_execution


def is_distributed(model):
    """True under a `tf.distribute` strategy: in its scope, or for a model built in one."""
    return tf.distribute.has_strategy() or model.distribute_strategy is not tf.distribute.get_strategy()


def op_determinism_enabled():
    """Whether `tf.config.experimental.enable_op_determinism()` is in force.

    TensorFlow has no public getter; Keras reads the same private function for its
    "auto" XLA choice. `tests/execution_test.py` fails if the name moves.
    """
    from tensorflow.python.framework import config  # private: see the docstring

    return config.is_op_determinism_enabled()


def layers_of(model):
    """Every layer of `model`, nested models' layers included (public `Model.layers` only)."""
    for layer in model.layers:
        yield layer
        if isinstance(layer, keras.Model):
            yield from layers_of(layer)


def has_convolutions(model):
    """True if `model` (or a network it holds as `encoder`/`decoder`) has a convolution layer."""
    networks = [getattr(model, name) for name in ("encoder", "decoder") if hasattr(model, name)] or [model]
    return any(isinstance(layer, _CONVOLUTIONS) for network in networks for layer in layers_of(network))


# ---------------------------------------------------------------------- step functions
class MultiStepFunction:
    """A Keras train or test function: `step` on each of up to `steps_per_execution` batches.

    Keras calls it with an iterator (`fit`, `evaluate`) or a one-batch generator
    (`train_on_batch`, `test_on_batch`); it pulls the batches, runs `step` on each in
    order and returns the last step's logs, and raises `StopIteration` when the iterator
    is empty. `last_steps` is the number of batches the last call ran.

    With `fuse=True` (XLA only) runs of equal-shaped batches, `MAX_FUSED_BYTES` at a
    time, go through one compiled `tf.while_loop`; otherwise each step is one compiled
    call. Either way each batch gets exactly one `step`, in order. A run shorter than a
    call holds (an epoch's last, or one cut by `max_steps`) is padded with its last batch
    and the loop told how many steps to run, so each batch shape compiles one loop.
    `max_steps`, when set (by `StepCallbacks`, from the steps left in the epoch), caps the
    next call only, so `fit(steps_per_epoch=N)` runs exactly N steps.
    """

    def __init__(self, step, steps_per_execution, jit_compile=False, run_eagerly=False, fuse=False):
        self.steps_per_execution = int(steps_per_execution)
        self.last_steps = 0
        self.max_steps = None
        self._fused = None
        if run_eagerly:
            self._one = step
        else:
            # Traced as Keras traces a step: without AutoGraph (Keras wraps it in `do_not_convert`), so
            # a step behaves the same here, in the fused loop and in keras.Model, and tracing does not
            # rewrite the source of every function the step calls.
            self._one = tf.function(step, jit_compile=bool(jit_compile), reduce_retracing=True, autograph=False)
            if fuse:
                self._fused = tf.function(_fused_loop(step), jit_compile=True, autograph=False)

    def __call__(self, iterator):
        count = min(self.steps_per_execution, max(1, self.max_steps or self.steps_per_execution))
        self.max_steps = None
        batches = [_as_tensors(batch) for batch in itertools.islice(iterator, count)]
        if not batches:
            raise StopIteration
        self.last_steps = len(batches)
        logs = None
        if self._fused is not None:
            for group in equal_shape_groups(batches, MAX_FUSED_BYTES):
                if len(group) == 1:
                    logs = self._one(group[0])
                else:
                    size = _fused_size(group[0], self.steps_per_execution, MAX_FUSED_BYTES)
                    logs = self._fused(group + group[-1:] * (size - len(group)), tf.constant(len(group)))
        else:
            for batch in batches:
                logs = self._one(batch)
        return logs


def _fused_loop(step):
    def fused_steps(batches, count):
        """`step` on the first `count` (a tensor: not traced per value) of `batches`."""
        stacked = tf.nest.map_structure(lambda *parts: None if parts[0] is None else tf.stack(parts), *batches)

        def body(i, logs):
            return i + 1, step(tf.nest.map_structure(lambda s: None if s is None else s[i], stacked))

        logs = step(batches[0])
        return tf.while_loop(lambda i, logs: i < count, body, (tf.constant(1), logs))[1]

    return fused_steps


def _as_tensors(batch):
    """A batch's arrays as tensors (None parts, e.g. absent labels or weights, stay None)."""
    return tf.nest.map_structure(lambda t: None if t is None else tf.convert_to_tensor(t), batch)


def _leaves(batch):
    return [t for t in tf.nest.flatten(batch) if t is not None]


def _nbytes(batch):
    return sum(t.shape.num_elements() * t.dtype.size for t in _leaves(batch))


def _fused_size(batch, steps_per_execution, max_bytes):
    """How many batches shaped like `batch` one fused call holds: as many as fit in
    `max_bytes`, at least one, at most `steps_per_execution` (`equal_shape_groups`' cap)."""
    return min(steps_per_execution, max(1, max_bytes // max(1, _nbytes(batch))))


def equal_shape_groups(batches, max_bytes):
    """Consecutive runs of `batches` (nests of tensors) with equal shapes, each at most
    `max_bytes` (but at least one batch): the ragged last batch of an epoch gets its own."""
    def shapes(batch):
        return tuple(tuple(t.shape) for t in _leaves(batch))

    group, size = [], 0
    for batch in batches:
        nbytes = _nbytes(batch)
        if group and (shapes(batch) != shapes(group[0]) or size + nbytes > max_bytes):
            yield group
            group, size = [], 0
        group.append(batch)
        size += nbytes
    if group:
        yield group


# ---------------------------------------------------------------------- callbacks
class StepCallbacks(keras.callbacks.CallbackList):
    """`CallbackList` whose batch hooks get the 0-based index of the last batch actually run.

    Keras calls the batch hooks once per execution with `begin + steps_per_execution - 1`.
    Here the index counts the batches run so far in the epoch (or evaluation, or
    prediction): from the function's `last_steps` where it records one, else Keras' index
    capped at the known number of steps. Before each call of a function with `max_steps`
    it sets the steps left, when known, so no call runs past the end of the epoch.
    """

    def __init__(self, callbacks, model, steps, **params):
        self._seen = {"train": 0, "test": 0, "predict": 0}
        self._fitting = False
        super().__init__(callbacks, model=model, steps=steps, **params)

    def _limit(self, mode):
        """Cap the next call of the model's `mode` function at the steps left, when known."""
        steps = self.params.get("steps")
        function = getattr(self.model, f"{mode}_function", None)
        if steps and hasattr(function, "max_steps") and (mode == "train" or not self._fitting):
            function.max_steps = steps - self._seen[mode]

    def _index(self, mode, batch):
        function = getattr(self.model, f"{mode}_function", None)
        ran = getattr(function, "last_steps", None)
        if ran is None:
            steps = self.params.get("steps")
            self._seen[mode] = batch + 1 if not steps else min(batch + 1, steps)
        else:
            self._seen[mode] += ran
        return self._seen[mode] - 1

    def on_train_begin(self, logs=None):
        self._fitting = True  # validation's steps are not `params["steps"]`
        super().on_train_begin(logs)

    def on_train_end(self, logs=None):
        self._fitting = False
        super().on_train_end(logs)

    def on_epoch_begin(self, epoch, logs=None):
        self._seen["train"] = 0
        super().on_epoch_begin(epoch, logs)

    def on_test_begin(self, logs=None):
        self._seen["test"] = 0
        super().on_test_begin(logs)

    def on_predict_begin(self, logs=None):
        self._seen["predict"] = 0
        super().on_predict_begin(logs)

    def on_train_batch_end(self, batch, logs=None):
        super().on_train_batch_end(self._index("train", batch), logs)

    def on_test_batch_end(self, batch, logs=None):
        super().on_test_batch_end(self._index("test", batch), logs)

    def on_predict_batch_end(self, batch, logs=None):
        super().on_predict_batch_end(self._index("predict", batch), logs)

    def on_train_batch_begin(self, batch, logs=None):
        self._limit("train")
        super().on_train_batch_begin(self._seen["train"], logs)

    def on_test_batch_begin(self, batch, logs=None):
        self._limit("test")
        super().on_test_batch_begin(self._seen["test"], logs)

    def on_predict_batch_begin(self, batch, logs=None):
        super().on_predict_batch_begin(self._seen["predict"], logs)


# ---------------------------------------------------------------------- array data
def is_array_data(*parts):
    """True if every part (None parts skipped) is a NumPy array or a dense tensor, or a tuple or
    dict of them. Lists are not: `tf.data` would stack a list where Keras reads a structure."""
    def arrays(part):
        if isinstance(part, (tuple, dict)):
            return bool(part) and all(arrays(p) for p in (part.values() if isinstance(part, dict) else part))
        return isinstance(part, np.ndarray) or (tf.is_tensor(part) and not isinstance(
            part, (tf.SparseTensor, tf.RaggedTensor)))

    present = [part for part in parts if part is not None]
    return bool(present) and all(arrays(part) for part in present)


def training_examples(count, validation_split):
    """How many of `count` examples Keras' `validation_split` keeps for training: floor(n (1 - split))."""
    return int(math.floor(count * (1.0 - validation_split)))


def split_arrays(parts, validation_split):
    """(training parts, validation parts): the first floor(n (1 - split)) examples and the
    rest, as Keras' `validation_split` splits arrays (before any shuffling)."""
    count = len(tf.nest.flatten(parts[0])[0])
    split = training_examples(count, validation_split)
    if split in (0, count):
        raise ValueError(f"`validation_split={validation_split}` of {count} examples leaves none for training "
                         "or none for validation")

    def cut(start, end):
        return tuple(None if part is None else tf.nest.map_structure(lambda array: array[start:end], part)
                     for part in parts)

    return cut(0, split), cut(split, count)


def array_dataset(x, y=None, sample_weight=None, batch_size=None, shuffle=False):
    """The batches Keras' `fit`, `evaluate` or `predict` makes of array data, as a `tf.data.Dataset`
    without the autotuner (see the module's docstring).

    As Keras batches them: `batch_size` (default 32) examples at a time, the last batch
    partial; `shuffle=True` a new order of all examples each epoch (each iterator),
    `"batch"` a new order within each batch; floating arrays cast to `keras.config.floatx()`;
    elements `(x,)`, `(x, y)` or `(x, y, sample_weight)`; sharded by data under a multi-worker
    strategy. `x` and `y` may be nests of arrays; every array has the examples on axis 0, at
    least one (Keras' own batching ran no step on none in `fit`, and failed in `predict`).
    """
    if y is None and sample_weight is not None:
        raise ValueError("Expected `y` with `sample_weight` for array data")
    parts = tuple(part for part in (x, y, sample_weight) if part is not None)

    def tensor(array):
        array = tf.convert_to_tensor(array)
        return tf.cast(array, keras.config.floatx()) if array.dtype.is_floating else array

    tensors = tf.nest.map_structure(tensor, parts)
    first = tf.nest.flatten(tensors)[0]
    count = int(first.shape[0])
    if not count:
        raise ValueError(f"Expected at least one example. Received shape {tuple(first.shape)}")
    order = tf.data.Dataset.range(count)
    if shuffle and shuffle != "batch":
        order = order.shuffle(count, reshuffle_each_iteration=True)
    order = order.batch(batch_size or 32)
    if shuffle == "batch":
        order = order.map(tf.random.shuffle)

    def gather(indices, data):
        return tf.nest.map_structure(lambda t: tf.gather(t, indices), data)

    batches = tf.data.Dataset.zip(order, tf.data.Dataset.from_tensors(tensors).repeat()).map(
        gather, num_parallel_calls=tf.data.AUTOTUNE)
    options = tf.data.Options()
    options.autotune.enabled = False
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return batches.prefetch(tf.data.AUTOTUNE).with_options(options)


def epoch_steps(x, batch_size=None, steps=None, validation_split=0.0):
    """Batches in one pass over `x` as Keras' data adapters count them; None if unknown.

    `steps` (Keras' `steps_per_epoch` or `steps`) wins. A `tf.data.Dataset` gives its
    cardinality, a `keras.utils.PyDataset` its `num_batches`, arrays (NumPy, tensors, or
    nests of them) ceil(n / batch_size) with Keras' default batch size 32, after
    `validation_split` keeps the first floor(n (1 - split)) examples.
    """
    if steps:
        return int(steps)
    if isinstance(x, tf.data.Dataset):
        cardinality = int(x.cardinality())
        return cardinality if cardinality >= 0 else None
    if isinstance(x, keras.utils.PyDataset):
        return x.num_batches
    leaves = tf.nest.flatten(x) if isinstance(x, (tuple, list, dict)) else [x]
    if not leaves or not all(isinstance(leaf, (np.ndarray, tf.Tensor)) or hasattr(leaf, "__array__")
                             for leaf in leaves):
        return None
    count = len(leaves[0])
    if validation_split:
        count = training_examples(count, validation_split)
    return math.ceil(count / (batch_size or 32))
