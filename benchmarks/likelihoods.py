"""How long each likelihood's `log_prob` takes over many events, summed over each event.

    python -m benchmarks.likelihoods                             # 250 x 100 events
    python -m benchmarks.likelihoods --samples=50 --repeats=20

For each likelihood layer of `keras_vae.likelihoods` and event shape (784 values, and
28 x 28 x 1), builds p(x|z) from `--samples` x `--batch_size` random decoder outputs and
times `log_prob(x)` alone and with its gradient, XLA-compiled and as graph ops; each time
is the best of `--repeats` calls. One JSON line per likelihood, event, part and mode.
This is the measurement behind docs/RESULTS.md's event-sum tables (session 23).
"""

import json
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from absl import app, flags  # noqa: E402

from benchmarks.machine import device_name, timed  # noqa: E402

_SAMPLES = flags.DEFINE_integer("samples", 250, "Samples of z per image.", lower_bound=1)
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 100, "Images.", lower_bound=1)
_REPEATS = flags.DEFINE_integer("repeats", 5, "Calls per measurement; the best is reported.", lower_bound=1)
EVENTS = ((784,), (28, 28, 1))


def measurements(samples, batch_size, repeats):
    """Yield one dict per (likelihood, event shape, part, mode)."""
    import numpy as np
    import tensorflow as tf

    from keras_vae import likelihoods

    rng = np.random.default_rng(0)
    for name in sorted(likelihoods.LIKELIHOODS):
        for event in EVENTS:
            layer = likelihoods.make_likelihood(name, event)
            raw = tf.constant(rng.normal(size=(samples, batch_size, *event)), tf.float32)  # the decoder's output
            x = tf.constant(np.round(rng.uniform(size=(batch_size, *event)) * 255) / 255, tf.float32)
            if name == "bernoulli":
                x = tf.round(x)

            def value(raw, layer=layer, x=x):
                return layer(raw).log_prob(x)

            def value_and_gradient(raw, value=value):
                with tf.GradientTape() as tape:
                    tape.watch(raw)
                    total = tf.reduce_sum(value(raw))
                return total, tape.gradient(total, raw)

            for part, fn in (("value", value), ("value_and_gradient", value_and_gradient)):
                for mode, jit in (("xla", True), ("graph", False)):
                    compiled = tf.function(fn, jit_compile=jit)
                    run = lambda: tf.nest.map_structure(lambda t: t.numpy(), compiled(raw))  # noqa: E731
                    run()
                    best = min(timed(run) for _ in range(repeats))
                    yield {"likelihood": name, "event_shape": list(event), "part": part, "mode": mode,
                           "ms": round(best * 1e3, 2), "samples": samples, "batch_size": batch_size}


def main(argv):
    del argv
    device = device_name()
    for line in measurements(_SAMPLES.value, _BATCH_SIZE.value, _REPEATS.value):
        print(json.dumps({**line, "device": device}), flush=True)


if __name__ == "__main__":
    app.run(main)
