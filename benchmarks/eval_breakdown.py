"""Where the k = 5000 evaluation's time goes: the parts of one chunk, each timed alone.

    python -m benchmarks.eval_breakdown                      # chunks of 50 samples x 100 images
    python -m benchmarks.eval_breakdown --chunk_size=250

`evaluation.report` (benchmarks.run's `eval_is_k5000`) spends nearly all its time in the
chunks of `bounds.importance_sampled`: for `--chunk_size` samples of z for each of
`--batch_size` test images, draw the noise, decode, and take log p(x|z), log q(z|x) and
log p(z). Each part below runs alone, on the same inputs, in a `tf.function` as the
evaluation runs it; its time is the best of `--repeats` calls:

  noise            the chunk's posterior draws (`posteriors.sample`, in blocks of 50)
  decoder          the decoder network, z -> Bernoulli logits
  log_prob_graph   p(x|z).log_prob of those logits as graph ops (one TensorFlow kernel each)
  log_prob_xla     the same log_prob compiled by XLA (`jit_log_prob`, as evaluation.report runs it)
  q_and_prior      log q(z|x) + log p(z)
  chunk            the whole chunk, `bounds.importance_sampled` with `jit_log_prob=True`
  chunk_graph      the same with `jit_log_prob=False`

One JSON line per part: milliseconds per chunk and the share of `chunk`; the decoder's and
the chunks' lines add their matmul GFLOP/s and its fraction of `matmul_peak`, measured in
the same process. The model is benchmarks.run's (Burda et al.'s one-layer MNIST VAE, as
built; the weights do not change the work), on binarized MNIST test images.
"""

import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from absl import app, flags  # noqa: E402

from benchmarks.flops import matmul_flops  # noqa: E402
from benchmarks.machine import device_name, matmul_peak, timed  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

_CHUNK_SIZE = flags.DEFINE_integer("chunk_size", 50, "z samples per chunk (evaluation.report's default).",
                                   lower_bound=1)
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 100, "Test images per chunk (evaluation.report's default).",
                                   lower_bound=1, upper_bound=10000)
_REPEATS = flags.DEFINE_integer("repeats", 10, "Calls per part; the best is reported.", lower_bound=1)
_MNIST_DIR = flags.DEFINE_string("mnist_dir", os.environ.get("MNIST_DIR", os.path.join(ROOT, "..", "shared", "data",
                                                                                      "mnist")),
                                 "Folder with MNIST's IDX .gz files (or mnist.npz).")


def parts(model, x, chunk_size):
    """{part: a no-argument function running it once}, on the same z, logits and seed."""
    import tensorflow as tf

    from keras_vae import bounds, posteriors

    x = tf.constant(x, tf.float32)
    q, prior = model.encode(x), model.prior_distribution()
    seed = tf.Variable([1, 2])  # a variable, so that no draw is folded into a constant
    z = posteriors.sample(q, chunk_size, seed=tf.constant([3, 4]))
    logits = model.decoder(tf.reshape(z, [-1, model.latent_dim]))
    logits = tf.reshape(logits, tf.concat([tf.shape(z)[:-1], tf.shape(logits)[1:]], 0))
    block = min(bounds.NOISE_BLOCK, chunk_size)

    def noise(seed):
        draws = [posteriors.sample(q, block, seed=tf.random.experimental.stateless_fold_in(seed, b))
                 for b in range(-(-chunk_size // block))]
        return tf.add_n([tf.reduce_sum(d) for d in draws])

    def chunk(seed, jit):
        return tf.reduce_sum(bounds.importance_sampled(x, q, prior, model.decode, chunk_size, seed=seed,
                                                       jit_log_prob=jit)["iwae_bound"])

    log_prob_xla = tf.function(lambda logits: model.likelihood(logits).log_prob(x), jit_compile=True)
    functions = {
        "noise": (noise, seed),
        "decoder": (lambda z: tf.reduce_sum(model.decoder(tf.reshape(z, [-1, model.latent_dim]))), z),
        "log_prob_graph": (lambda logits: tf.reduce_sum(model.likelihood(logits).log_prob(x)), logits),
        "log_prob_xla": (lambda logits: tf.reduce_sum(log_prob_xla(logits)), logits),
        "q_and_prior": (lambda z: tf.reduce_sum(q.log_prob(z) + prior.log_prob(z)), z),
        "chunk": (lambda seed: chunk(seed, True), seed),
        "chunk_graph": (lambda seed: chunk(seed, False), seed),
    }
    return {name: (lambda f=tf.function(fn), arg=arg: f(arg).numpy()) for name, (fn, arg) in functions.items()}


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    import keras_vae
    from keras_vae import data

    try:
        test = data.load("mnist", data_dir=_MNIST_DIR.value).test
    except FileNotFoundError:  # one line, like a flag error
        sys.exit(f"benchmarks.eval_breakdown: error: --mnist_dir={_MNIST_DIR.value} holds no MNIST "
                 "(its IDX .gz files or mnist.npz)")
    model = keras_vae.mlp_vae((28, 28, 1), 50, (200, 200), activation="tanh", seed=0)  # benchmarks.run's model
    x = data.binarize_array(test[: _BATCH_SIZE.value], seed=0)
    chunk_size = _CHUNK_SIZE.value
    runs = parts(model, x, chunk_size)
    for run in runs.values():
        run()  # traces and compiles
    peak = matmul_peak()["gflops"]
    seconds = {name: min(timed(run) for _ in range(_REPEATS.value)) for name, run in runs.items()}
    decoder_flops = len(x) * (matmul_flops(model, chunk_size) - matmul_flops(model, 0))
    for name, s in seconds.items():
        line = {"part": name, "ms_per_chunk": round(1e3 * s, 2), "share_of_chunk": round(s / seconds["chunk"], 3),
                "chunk_size": chunk_size, "batch_size": len(x), "device": device_name()}
        if name in ("decoder", "chunk", "chunk_graph"):
            line.update(gflops=round(decoder_flops / s / 1e9, 1), matmul_peak_gflops=round(peak, 1),
                        fraction_of_matmul_peak=round(decoder_flops / s / 1e9 / peak, 3))
        print(json.dumps(line), flush=True)


if __name__ == "__main__":
    app.run(main)
