"""Keras' contract under the VAE's fast defaults: every entry point, batch indices, the progress
bar in a real terminal, compile's meaning, sample weights, seeds; and the step machinery itself."""

import os
import pty
import re
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_vae
from keras_vae import execution

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def x():
    return keras_vae.data.load("digits").train  # 1200 examples of 8x8x1


def _model(**kwargs):
    return keras_vae.mlp_vae((8, 8, 1), latent_dim=3, hidden_units=(16,), seed=0, **kwargs)


class _Recorder(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.events = []

    def on_train_batch_begin(self, batch, logs=None):
        self.events.append(("train_begin", batch))

    def on_train_batch_end(self, batch, logs=None):
        self.events.append(("train_end", batch))

    def on_test_batch_end(self, batch, logs=None):
        self.events.append(("test_end", batch))

    def on_predict_batch_end(self, batch, logs=None):
        self.events.append(("predict_end", batch))

    def ends(self, kind):
        return [batch for event, batch in self.events if event == kind]


# ---------------------------------------------------------------------- Keras entry points
@pytest.mark.parametrize("steps_per_execution", [None, 5])
def test_batch_hooks_get_the_batches_actually_run(x, steps_per_execution):
    """1200 examples in batches of 64 are 19 batches (the last of 48): with 100 steps per
    call one call runs them all; with 5, calls of 5, 5, 5 and 4."""
    model = _model()
    model.compile(steps_per_execution=steps_per_execution)
    recorder = _Recorder()
    model.fit(x, batch_size=64, epochs=2, verbose=0, callbacks=[recorder], validation_data=(x[:100],))
    expected = [18] if steps_per_execution is None else [4, 9, 14, 18]
    assert recorder.ends("train_end") == expected * 2
    begins = [0] if steps_per_execution is None else [0, 5, 10, 15]
    assert [b for e, b in recorder.events if e == "train_begin"] == begins * 2
    assert recorder.ends("test_end") == [1, 1]  # 100 examples: 2 batches per validation
    assert int(model.optimizer.iterations) == 38
    recorder.events.clear()
    model.evaluate(x, batch_size=64, verbose=0, callbacks=[recorder])
    model.predict(x, batch_size=64, verbose=0, callbacks=[recorder])
    assert recorder.ends("test_end") == expected and recorder.ends("predict_end")[-1] == 18


def test_fit_steps_per_epoch_initial_epoch_and_validation_freq(x):
    model = _model()
    model.compile()
    recorder = _Recorder()
    dataset = tf.data.Dataset.from_tensor_slices(x).batch(64).repeat()
    history = model.fit(dataset, steps_per_epoch=7, epochs=4, initial_epoch=1, validation_data=(x[:64],),
                        validation_freq=2, verbose=0, callbacks=[recorder])
    assert int(model.optimizer.iterations) == 21  # exactly 7 steps in each of epochs 2, 3 and 4
    assert recorder.ends("train_end") == [6, 6, 6]
    assert len(history.history["loss"]) == 3 and len(history.history["val_loss"]) == 2  # after epochs 2 and 4


def test_class_weight_loss_and_metrics_are_rejected(x):
    model = _model()
    with pytest.raises(ValueError, match="compile takes no `loss`"):
        model.compile(loss="mse")
    with pytest.raises(ValueError, match="`metrics`"):
        model.compile(metrics=["mae"])
    model.compile()
    with pytest.raises(ValueError, match="`class_weight` weighs the classes"):
        model.fit(x, epochs=1, class_weight={0: 1.0}, verbose=0)
    with pytest.raises(ValueError, match="`class_weight`"):
        model.train_on_batch(x[:8], class_weight={0: 1.0})
    with pytest.raises(ValueError, match=r"Expected `sample_weight` of shape \(1200,\)"):
        model.fit(x, sample_weight=-np.ones(len(x)), verbose=0)


def test_on_batch_methods_with_the_defaults(x):
    model = _model()
    model.compile()
    before = int(model.optimizer.iterations)
    logs = model.train_on_batch(x[:64], return_dict=True)
    assert int(model.optimizer.iterations) == before + 1 and set(logs) == {"loss", "elbo", "kl", "reconstruction"}
    assert np.isfinite(model.train_on_batch(x[:64])).all()
    logs = model.test_on_batch(x[:64], return_dict=True)
    assert logs["loss"] == pytest.approx(-logs["elbo"], rel=1e-6)
    np.testing.assert_allclose(model.predict_on_batch(x[:5]), model(x[:5]), rtol=1e-5, atol=1e-6)


def test_keras_callbacks_and_summary(x, tmp_path, capsys):
    model = _model()
    model.compile()
    stopper = keras.callbacks.EarlyStopping(monitor="loss", patience=0, min_delta=1e9)
    checkpoint = keras.callbacks.ModelCheckpoint(str(tmp_path / "best.keras"), monitor="loss", save_best_only=True)
    board = keras.callbacks.TensorBoard(str(tmp_path / "logs"), update_freq=5)
    history = model.fit(x, batch_size=64, epochs=5, verbose=0, callbacks=[stopper, checkpoint, board])
    assert len(history.history["loss"]) == 2  # no epoch improves by 1e9: stop after the patience
    restored = keras.saving.load_model(tmp_path / "best.keras")
    assert isinstance(restored, keras_vae.VAE) and os.listdir(tmp_path / "logs" / "train")
    model.summary()
    assert "encoder" in capsys.readouterr().out


# ---------------------------------------------------------------------- progress bar in a terminal
_PROGRESS = textwrap.dedent("""
    import keras_vae
    x = keras_vae.data.load("digits").train
    model = keras_vae.mlp_vae((8, 8, 1), latent_dim=3, hidden_units=(16,), seed=0)
    model.compile(steps_per_execution={steps})
    model.fit(x, batch_size=64, epochs=2, validation_data=(x[:100],))
    model.evaluate(x, batch_size=64)
    model.predict(x, batch_size=64)
""")


def _run_in_terminal(code):
    """stdout and stderr of `python -c code` run in a pseudo-terminal, as a user's shell would."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", COLUMNS="160")
    pid, fd = pty.fork()
    if pid == 0:  # the child: stdin, stdout and stderr are the terminal
        os.chdir(ROOT)
        os.execve(sys.executable, [sys.executable, "-c", code], env)
    output = b""
    while True:
        try:
            chunk = os.read(fd, 65536)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        output += chunk
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", output.decode(errors="replace"))


@pytest.mark.parametrize("steps", ["None", "5"])
def test_progress_bar_in_a_terminal_counts_to_the_end_and_never_past_it(steps):
    code, screen = _run_in_terminal(_PROGRESS.format(steps=steps))
    assert code == 0, screen[-3000:]
    counts = [(int(done), int(total)) for done, total in re.findall(r"(\d+)/(\d+) ━", screen)]
    assert counts, screen[-3000:]
    assert all(done <= total for done, total in counts), counts
    assert {total for _, total in counts} == {19}  # fit and evaluate: 19 batches; predict too
    assert sum(1 for done, _ in counts if done == 19) >= 4  # two epochs, evaluate and predict end at 19/19
    assert not re.search(r"\s-\d+(\.\d+)?m?s\b", screen), screen[-3000:]  # no negative ETA or time


# ---------------------------------------------------------------------- compile's meaning
def test_compile_defaults_are_the_vaes_and_keras_tokens_keep_keras_meaning():
    dense = _model()
    dense.compile()
    assert dense.jit_compile is True and dense.steps_per_execution == execution.STEPS_PER_EXECUTION
    conv = keras_vae.conv_vae((8, 8, 1), latent_dim=2, filters=(4,), hidden_units=(8,))
    conv.compile()  # Keras' "auto": XLA only where there is an accelerator
    assert conv.jit_compile is bool(tf.config.list_physical_devices("GPU"))
    dense.compile(jit_compile="auto", steps_per_execution=1)  # Keras' own meaning: no XLA on a CPU-only machine
    assert dense.jit_compile is bool(tf.config.list_physical_devices("GPU")) and dense.steps_per_execution == 1
    dense.compile(jit_compile=False, steps_per_execution=3)
    assert dense.jit_compile is False and dense.steps_per_execution == 3


def test_saved_model_keeps_what_was_asked_and_resolves_it_where_loaded(x, tmp_path):
    model = _model()
    model.compile()
    model.fit(x[:128], epochs=1, verbose=0)
    model.save(tmp_path / "m.keras")
    config = model.get_compile_config()
    assert config["jit_compile"] is None and config["steps_per_execution"] is None
    with tf.distribute.MirroredStrategy(["/cpu:0"]).scope():
        reloaded = keras.saving.load_model(tmp_path / "m.keras")
    assert reloaded.steps_per_execution == 1 and reloaded.jit_compile is False
    asked = _model()
    asked.compile(jit_compile=False, steps_per_execution=7)
    asked.save(tmp_path / "asked.keras")
    again = keras.saving.load_model(tmp_path / "asked.keras")
    assert (again.jit_compile, again.steps_per_execution) == (False, 7)


def test_op_determinism_wrapper_reads_tensorflow():
    """The one private TensorFlow name the package reads: this fails loudly if it moves."""
    code = ("import tensorflow as tf; from keras_vae import execution; a = execution.op_determinism_enabled(); "
            "tf.config.experimental.enable_op_determinism(); print(a, execution.op_determinism_enabled())")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["False", "True"]


# ---------------------------------------------------------------------- sample weights
def _numpy_kl(model, x):
    """KL(q(z|x) || N(0, I)) per example, in numpy from the encoder's raw outputs."""
    params = model.encoder(x).numpy()
    loc, scale = params[:, :3], np.log1p(np.exp(params[:, 3:])) + 1e-4
    return 0.5 * np.sum(scale**2 + loc**2 - 1.0 - 2.0 * np.log(scale), axis=1)


def test_sample_weights_weigh_the_metrics_and_the_loss(x):
    model = _model()
    model.compile()
    batch = x[:64]
    weights = np.random.default_rng(0).integers(0, 4, size=64).astype("float32")
    logs = model.evaluate(batch, sample_weight=weights, batch_size=64, verbose=0, return_dict=True)
    np.testing.assert_allclose(logs["kl"], np.average(_numpy_kl(model, batch), weights=weights), rtol=1e-5)
    # The loss is Keras' sum over the batch size: three times the weight, three times the loss
    # (two models with the same seed draw the same noise).
    losses = []
    for scale in (1.0, 3.0):
        same = _model()
        same.compile()
        losses.append(same.test_on_batch(batch, sample_weight=np.full(64, scale, "float32"), return_dict=True))
    np.testing.assert_allclose(losses[1]["loss"], 3 * losses[0]["loss"], rtol=1e-5)
    np.testing.assert_allclose(losses[1]["elbo"], losses[0]["elbo"], rtol=1e-6)


def test_zero_sample_weights_leave_the_weights_unchanged(x):
    model = _model()
    model.compile(optimizer=keras.optimizers.SGD(0.1))
    before = [w.copy() for w in model.get_weights()]
    model.fit(x, sample_weight=np.zeros(len(x), "float32"), batch_size=64, epochs=1, verbose=0)
    for old, new in zip(before, model.get_weights()):
        np.testing.assert_array_equal(old, new)


# ---------------------------------------------------------------------- seeds
def test_builder_seed_fixes_the_initial_weights():
    first, second, other = _model(), _model(), keras_vae.mlp_vae((8, 8, 1), 3, hidden_units=(16,), seed=1)
    for a, b in zip(first.get_weights(), second.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(first.encoder.get_weights()[0], other.encoder.get_weights()[0])


def test_set_random_seed_makes_a_run_reproducible(x):
    runs = []
    for _ in range(2):
        keras.utils.set_random_seed(3)
        model = keras_vae.mlp_vae((8, 8, 1), latent_dim=3, hidden_units=(16,))
        model.compile()
        history = model.fit(x[:256], batch_size=32, epochs=2, verbose=0, shuffle=True).history
        runs.append((history["loss"], model.get_weights(), model.sample(4).numpy()))
    np.testing.assert_array_equal(runs[0][0], runs[1][0])
    for a, b in zip(runs[0][1], runs[1][1]):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(runs[0][2], runs[1][2])


# ---------------------------------------------------------------------- the step machinery
def test_fused_loop_caps_each_call_and_takes_ragged_batches_alone(x, monkeypatch):
    """Calls of 10 steps over 19 batches where only 3 batches fit in the byte cap: groups of
    3, 3, 3, 1 then 3, 3, 2 and the short last batch alone; the result equals one step a call."""
    batch_bytes = 64 * 64 * 4
    monkeypatch.setattr(execution, "MAX_FUSED_BYTES", 3 * batch_bytes)
    groups = [len(g) for g in execution.equal_shape_groups([tf.zeros([64, 64])] * 10, 3 * batch_bytes)]
    assert groups == [3, 3, 3, 1]
    ragged = [tf.zeros([64, 8]), tf.zeros([64, 8]), tf.zeros([16, 8])]
    assert [len(g) for g in execution.equal_shape_groups(ragged, 10**9)] == [2, 1]
    results = []
    for steps in (1, 10):
        model = _model()
        model.compile(optimizer="adam", jit_compile=True, steps_per_execution=steps)
        history = model.fit(x, batch_size=64, epochs=1, verbose=0, shuffle=False).history
        results.append((history["loss"], model.get_weights()))
    np.testing.assert_allclose(results[1][0], results[0][0], rtol=1e-4)
    for fused, reference in zip(results[1][1], results[0][1]):
        np.testing.assert_allclose(fused, reference, rtol=1e-4, atol=1e-5)


def test_fused_loop_is_traced_once_for_runs_of_every_length(x, monkeypatch):
    """A run of 2 batches goes through the loop traced (so compiled) for runs of 3, padded and
    told the count: the second fit adds no trace."""
    monkeypatch.setattr(execution, "MAX_FUSED_BYTES", 3 * 64 * 64 * 4)
    model = _model()
    model.compile(optimizer="adam", jit_compile=True, steps_per_execution=10)
    model.fit(x[:3 * 64], batch_size=64, epochs=1, verbose=0)  # one run of 3
    fused = model.train_function._fused
    traced = fused.experimental_get_tracing_count()
    model.fit(x[:5 * 64], batch_size=64, epochs=1, verbose=0)  # runs of 3 and 2
    assert fused.experimental_get_tracing_count() == traced


class _Branching(keras_vae.VAE):
    """A train_step with a Python `if` on a tensor: Keras traces steps without AutoGraph."""

    def train_step(self, data):
        logs = super().train_step(data)
        if logs["loss"] > 0:
            logs["loss"] = -logs["loss"]
        return logs


class _BranchingKeras(keras.Model):
    def train_step(self, data):
        if tf.reduce_sum(data) > 0:
            return {"loss": 0.0}
        return {"loss": 1.0}


def test_keras_refuses_a_step_branching_on_a_tensor(x):
    """The reference for the next test: keras.Model.fit traces a train_step without AutoGraph."""
    inputs = keras.Input((8, 8, 1))
    plain = _BranchingKeras(inputs, keras.layers.Dense(1)(inputs))
    plain.compile(optimizer="adam")
    with pytest.raises(tf.errors.OperatorNotAllowedInGraphError):
        plain.fit(x[:64], batch_size=64, epochs=1, verbose=0)


@pytest.mark.parametrize("batches", [1, 3])
def test_a_step_is_traced_as_keras_traces_it(x, batches):
    """The VAE's fit with its defaults refuses that step as keras.Model does, for a call of one
    batch (one compiled step) as for a call of several (the fused loop)."""
    parts = _model()
    model = _Branching(parts.encoder, parts.decoder, parts.posterior, parts.likelihood)
    model.compile()
    with pytest.raises(tf.errors.OperatorNotAllowedInGraphError):
        model.fit(x[:batches * 64], batch_size=64, epochs=1, verbose=0)


def test_epoch_steps_counts_like_keras(x):
    assert execution.epoch_steps(x, 64) == 19
    assert execution.epoch_steps(x) == 38  # Keras' default batch of 32
    assert execution.epoch_steps(x, 64, validation_split=0.5) == 10  # 600 examples
    assert execution.epoch_steps(tf.data.Dataset.from_tensor_slices(x).batch(100)) == 12
    assert execution.epoch_steps(tf.data.Dataset.from_tensor_slices(x).repeat()) is None
    assert execution.epoch_steps(iter([x])) is None
    assert execution.epoch_steps(x, 64, steps=5) == 5


# ---------------------------------------------------------------------- array data
def _epoch(dataset):
    return [tuple(part.numpy() for part in batch) for batch in dataset]


def test_array_batches_are_keras_batches_without_the_autotuner():
    x = np.arange(30, dtype=np.float64).reshape(10, 3)
    y, weights = np.arange(10), np.linspace(0.0, 1.0, 10)
    assert execution.is_array_data(x, None, weights) and execution.is_array_data((tf.constant(x), {"y": y}))
    assert not execution.is_array_data([x]) and not execution.is_array_data(tf.data.Dataset.from_tensors(x))
    dataset = execution.array_dataset(x, y, weights, batch_size=4)
    assert not dataset.options().autotune.enabled
    assert int(dataset.cardinality()) == 3
    batches = _epoch(dataset)
    assert [len(batch[0]) for batch in batches] == [4, 4, 2]
    for start, (xb, yb, wb) in zip(range(0, 10, 4), batches):
        assert xb.dtype == np.float32 and yb.dtype == np.int64 and wb.dtype == np.float32  # floats to floatx
        np.testing.assert_array_equal(xb, x[start:start + 4].astype(np.float32))
        np.testing.assert_array_equal(yb, y[start:start + 4])
        np.testing.assert_array_equal(wb, weights[start:start + 4].astype(np.float32))
    # Keras' default batch of 32, a nest of arrays as one input (a conditional model's predict((x, y))).
    (((xb, yb),),) = list(execution.array_dataset((x, y)).as_numpy_iterator())
    np.testing.assert_array_equal(xb, x.astype(np.float32))
    np.testing.assert_array_equal(yb, y)


def test_shuffled_array_batches_take_a_new_order_each_epoch():
    x = np.arange(100, dtype=np.float32)[:, None]
    dataset = execution.array_dataset(x, batch_size=32, shuffle=True)
    first, second = ([batch[0][:, 0] for batch in _epoch(dataset)] for _ in range(2))
    assert [len(b) for b in first] == [len(b) for b in second] == [32, 32, 32, 4]
    for epoch in (first, second):
        np.testing.assert_array_equal(np.sort(np.concatenate(epoch)), x[:, 0])  # every example once
    assert not np.array_equal(np.concatenate(first), np.concatenate(second))
    within = [batch[0][:, 0] for batch in _epoch(execution.array_dataset(x, batch_size=32, shuffle="batch"))]
    for start, batch in zip(range(0, 100, 32), within):
        np.testing.assert_array_equal(np.sort(batch), x[start:start + 32, 0])  # the same batches, reordered
    assert not np.array_equal(np.concatenate(within), x[:, 0])


def test_validation_split_holds_out_the_last_examples():
    x, weights = np.arange(10.0)[:, None], np.arange(10.0)
    (x_train, y_train, w_train), (x_val, y_val, w_val) = execution.split_arrays((x, None, weights), 0.25)
    np.testing.assert_array_equal(x_train, x[:7])
    np.testing.assert_array_equal(w_val, weights[7:])
    assert y_train is None and y_val is None
    with pytest.raises(ValueError, match=r"^`validation_split=0.95` of 10 examples leaves none for training or "
                                         r"none for validation$"):
        execution.split_arrays((x,), 0.95)


def test_array_data_runs_as_through_keras_own_batching(x):
    """The VAE's fit, evaluate and predict on arrays against keras.Model's, which batch through Keras' adapter:
    two models built and seeded alike end with the same weights and report the same values."""
    weights = np.random.default_rng(0).uniform(0.5, 2.0, len(x)).astype("float32")
    results = []
    for run in (keras_vae.VAE, keras.Model):
        model = _model()
        model.compile(optimizer=keras.optimizers.Adam(1e-2))
        history = run.fit(model, x, np.zeros(len(x), np.int8), sample_weight=weights, batch_size=100, epochs=1,
                          shuffle=False, validation_split=0.25, verbose=0).history
        logs = run.evaluate(model, x, batch_size=64, verbose=0, return_dict=True)
        results.append((history, logs, model.get_weights(), run.predict(model, x[:50], batch_size=16, verbose=0)))
    (history, logs, weights_after, predicted), keras_own = results[0], results[1]
    for key in history:
        np.testing.assert_allclose(history[key], keras_own[0][key], rtol=1e-5, err_msg=key)
    for key in logs:
        np.testing.assert_allclose(logs[key], keras_own[1][key], rtol=1e-5, err_msg=key)
    for mine, theirs in zip(weights_after, keras_own[2]):
        np.testing.assert_allclose(mine, theirs, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(predicted, keras_own[3], rtol=1e-5)
