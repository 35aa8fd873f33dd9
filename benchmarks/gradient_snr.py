"""Signal-to-noise ratio of the IWAE bound's gradients, by estimator and number of samples k.

    python -m benchmarks.gradient_snr                       # the table in docs/RESULTS.md
    python -m benchmarks.gradient_snr --train_epochs=0      # at initialisation

Rainforth et al. (2018) showed that as k grows the reparameterized gradient of L_k gets
a better signal-to-noise ratio for the decoder but a worse one (~1/sqrt(k)) for the
encoder; the doubly reparameterized estimator (Tucker et al., 2019) restores the encoder's.
This measures it for a small VAE on binarized digits (`mlp_vae`, 64 -> `--hidden_units`
tanh -> `--latent_dim` Gaussian latents -> Bernoulli), trained `--train_epochs` epochs on
the ELBO (Adam 1e-3, batch 64; 0: at initialisation). Then, for a fixed batch of
`--batch_size` test digits (`--batch`: the first ones, or those whose importance weights
have the lightest or heaviest tails) and each (k, estimator), it takes `--draws` gradients
of the batch-mean L_k with independent noise.
For each network the SNR is |mean(g)| / std(g) per parameter, averaged over its parameters
(those whose gradient varies). k = 1 is L_1: the ELBO with a sampled KL. Prints one
row per (k, estimator), then a markdown table.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from absl import app, flags  # noqa: E402

ESTIMATORS = ("reparameterized", "stl", "dreg")
FLAGS = flags.FLAGS


def define_flags():
    """The command line's flags; defined only when run as a script, so importing `gradient_snr` defines none
    (the apps define --seed and --batch_size too)."""
    flags.DEFINE_integer("draws", 1000, "Independent gradient draws per (k, estimator).", lower_bound=2)
    flags.DEFINE_list("num_samples", ["1", "5", "50"], "Values of k.")
    flags.DEFINE_integer("train_epochs", 200, "ELBO training epochs before measuring (0: at initialisation).",
                         lower_bound=0)
    flags.DEFINE_integer("batch_size", 64, "Test digits in the fixed batch.", lower_bound=1)
    flags.DEFINE_enum("batch", "first", ["first", "light_tails", "heavy_tails"],
                      "Which test digits: the first --batch_size, or those whose importance weights (5000 samples) "
                      "have the lightest or heaviest tails (smallest or largest Pareto k-hat).")
    flags.DEFINE_integer("latent_dim", 4, "Size of z.", lower_bound=1)
    flags.DEFINE_integer("hidden_units", 64, "Width of the one hidden layer of each network.", lower_bound=1)
    flags.DEFINE_integer("seed", 0, "Seed of the weights, the training and the gradient noise.")


def gradient_snr(model, x, num_samples, gradient_estimator, draws, seed=0):
    """{"encoder": SNR, "decoder": SNR} of the gradient of the batch mean of L_k (`objective="iwae"`).

    Each of the `draws` gradients uses its own noise (the seed [seed, i]); a network's SNR is
    the mean over its parameters of |mean(g)| / std(g), over parameters with std(g) > 0.
    """
    import numpy as np
    import tensorflow as tf

    parts = {"encoder": model.encoder.trainable_variables, "decoder": model.decoder.trainable_variables}
    x = tf.constant(x, tf.float32)

    @tf.function
    def gradient(noise_seed):
        with tf.GradientTape() as tape:
            terms = model.compute_terms(x, num_samples=num_samples, objective="iwae", seed=noise_seed,
                                        gradient_estimator=gradient_estimator)
            objective = tf.reduce_mean(terms["objective"])
        grads = tape.gradient(objective, parts)
        return {name: tf.concat([tf.reshape(g, [-1]) for g in grads[name]], 0) for name in parts}

    samples = [gradient(tf.constant([seed, i], tf.int32)) for i in range(draws)]
    result = {}
    for name in parts:
        g = np.stack([s[name].numpy() for s in samples]).astype(np.float64)  # [draws, parameters]
        std = g.std(axis=0, ddof=1)
        varies = std > 0
        result[name] = float(np.mean(np.abs(g.mean(axis=0))[varies] / std[varies]))
    return result


def main(argv):
    del argv
    import keras
    import numpy as np

    import keras_vae

    num_samples = [int(k) for k in FLAGS.num_samples]
    digits = keras_vae.data.load("digits", binarize="static")
    keras.utils.set_random_seed(FLAGS.seed)
    model = keras_vae.mlp_vae(digits.input_shape, FLAGS.latent_dim, (FLAGS.hidden_units,), activation="tanh",
                              seed=FLAGS.seed)
    if FLAGS.train_epochs:
        model.compile(optimizer=keras.optimizers.Adam(1e-3))
        model.fit(digits.train, epochs=FLAGS.train_epochs, batch_size=64, verbose=0)
    x = digits.test
    if FLAGS.batch != "first":
        k_hat = keras_vae.diagnostics.pareto_k(
            model.importance_sampled(x, 5000, seed=FLAGS.seed, return_log_weights=True)["log_weights"].numpy())
        order = np.argsort(k_hat)
        x = x[np.sort(order[:FLAGS.batch_size] if FLAGS.batch == "light_tails" else order[-FLAGS.batch_size:])]
    x = x[:FLAGS.batch_size]
    # How good q(z|x) is on the fixed batch: the regime the SNR depends on (the weights' tails).
    sampled = model.importance_sampled(x, 5000, seed=FLAGS.seed + 1, return_log_weights=True)
    log_weights = sampled["log_weights"].numpy()
    ess, k_hat = keras_vae.diagnostics.effective_sample_size(log_weights), keras_vae.diagnostics.pareto_k(log_weights)
    print(f"model: {FLAGS.train_epochs} ELBO epochs. Fixed batch of {len(x)} ({FLAGS.batch}): mean ELBO "
          f"{np.mean(sampled['elbo']):.2f}, L_5000 {np.mean(sampled['iwae_bound']):.2f} nats; ESS of 5000 "
          f"samples median {np.median(ess):.0f}, min {ess.min():.0f}; Pareto k-hat median {np.median(k_hat):.2f}, "
          f"max {k_hat.max():.2f}")
    rows = []
    for k in num_samples:
        for estimator in ESTIMATORS:
            snr = gradient_snr(model, x, k, estimator, FLAGS.draws, seed=FLAGS.seed)
            rows.append((k, estimator, snr["encoder"], snr["decoder"]))
            print(f"k={k} {estimator}: encoder SNR {snr['encoder']:.3f}, decoder SNR {snr['decoder']:.3f}", flush=True)
    print("\n| k | estimator | encoder SNR | decoder SNR |\n| --- | --- | --- | --- |")
    for k, estimator, encoder, decoder in rows:
        print(f"| {k} | {estimator} | {encoder:.3f} | {decoder:.3f} |")


if __name__ == "__main__":
    define_flags()
    app.run(main)
