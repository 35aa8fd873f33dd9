"""Training throughput of keras_vae's model.fit against reference scripts, in one run.

    python benchmarks/fit_throughput.py --mnist_dir=../shared/data/mnist --repeats=3

The model is Burda et al.'s one-stochastic-layer VAE (784-200-200 tanh -> 50 Gaussian
latents -> Bernoulli), trained on MNIST at batch 100 with Adam. Each repeat runs every
configuration once, in turn (A B C A B C ...), each in a fresh process, so the machine's
noise hits all of them alike; the summary gives medians and each configuration's ratio to
the first reference script. Device-agnostic: on a GPU machine the same command measures
the GPU. Prints one JSON line per measurement, then one per configuration.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def keras_vae_fit(epochs, batch, jit_compile, steps_per_execution, num_samples):
    """examples/s of keras_vae's fit after a one-epoch warm-up (runs in a child process)."""
    import keras

    import keras_vae
    from keras_vae import data

    x = data.load("mnist", data_dir=os.environ["MNIST_DIR"]).train  # 50,000 examples
    objective = "iwae" if num_samples > 1 else "elbo"
    model = keras_vae.mlp_vae((28, 28, 1), 50, (200, 200), activation="tanh", num_samples=num_samples,
                              objective=objective, seed=0)
    model.compile(keras.optimizers.Adam(1e-3), jit_compile=jit_compile, steps_per_execution=steps_per_execution)
    ds = data.make_dataset(x, batch, shuffle=True, binarize=True, seed=0, drop_remainder=True)
    model.fit(ds, epochs=1, verbose=0, shuffle=False)
    start = time.perf_counter()
    model.fit(ds, epochs=epochs, verbose=0, shuffle=False)
    return epochs * (len(x) // batch) * batch / (time.perf_counter() - start)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mnist_dir", default=os.path.join(ROOT, "..", "shared", "data", "mnist"))
    parser.add_argument("--reference_dir", default=os.path.join(ROOT, "..", "shared", "bench"),
                        help="folder with keras_tutorial_vae.py and xla_ceiling.py")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--num_samples", type=int, default=1, help="k; >1 benchmarks IWAE training")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    env = {**os.environ, "MNIST_DIR": os.path.abspath(args.mnist_dir), "TF_CPP_MIN_LOG_LEVEL": "3"}
    if args.child:
        os.environ.update(env)
        jit, spe = args.child.split(",")
        print(keras_vae_fit(args.epochs, 100, jit == "true", int(spe), args.num_samples))
        return
    configs = {
        "keras_tutorial (reference)": [sys.executable, os.path.join(args.reference_dir, "keras_tutorial_vae.py"),
                                       f"--epochs={args.epochs}"],
        "keras_vae fit": [sys.executable, __file__, "--child=false,1"],
        "keras_vae fit, XLA, 20 steps/call": [sys.executable, __file__, "--child=true,20"],
        "xla_ceiling (reference)": [sys.executable, os.path.join(args.reference_dir, "xla_ceiling.py"),
                                    "--fused=20", f"--epochs={args.epochs}"],
    }
    if args.num_samples > 1:  # the references train the k=1 VAE only
        configs = {name: cmd for name, cmd in configs.items() if "reference" not in name}
    for name, cmd in configs.items():
        if "--child" in cmd[-1]:
            cmd += [f"--epochs={args.epochs}", f"--num_samples={args.num_samples}", f"--mnist_dir={args.mnist_dir}"]
    rates = {name: [] for name in configs}
    for repeat in range(args.repeats):
        for name, cmd in configs.items():
            out = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, check=True).stdout
            last = out.strip().splitlines()[-1]
            rate = json.loads(last)["examples_per_sec"] if last.startswith("{") else float(last)
            rates[name].append(rate)
            print(json.dumps({"repeat": repeat, "config": name, "examples_per_sec": round(rate, 1)}), flush=True)
    base = statistics.median(next(iter(rates.values())))
    for name, values in rates.items():
        median = statistics.median(values)
        print(json.dumps({"config": name, "median_examples_per_sec": round(median, 1),
                          "ratio_to_first": round(median / base, 3), "num_samples": args.num_samples}))


if __name__ == "__main__":
    main()
