"""keras_vae's performance in one command: training, evaluation and serving, and the peers.

    python -m benchmarks.run                                  # every case
    python -m benchmarks.run --cases=train_mlp_b100,eval_is_k5000
    python -m benchmarks.run --peers --rounds=3               # also the reference scripts, with ratios

The model is Burda et al.'s one-stochastic-layer VAE (784-200-200 tanh -> 50 Gaussian
latents -> Bernoulli) on MNIST, trained with the package's defaults: `model.compile(Adam)`
and `data.make_dataset` (shuffled, re-binarized every batch). Each case runs in a fresh
process, after a warm-up that includes compilation; with --rounds > 1 the cases take turns
(A B C A B C ...), so the machine's noise hits them alike. Prints one JSON line per
measurement, `{"case": ..., "examples_per_sec": ..., "device": ...}`, then one summary line
per case with the median; with --peers the summary of `train_mlp_b100` and of each peer
gives its ratio to every peer measured in the same run. Runs unchanged on a GPU machine,
where TensorFlow picks the GPU; every line names the device.

Cases:
  train_mlp_b100, train_mlp_b1000   `fit` on the 50,000 training images, batch 100 / 1000
  train_conv_b128                   `fit` of `conv_vae` (28x28x1), batch 128, on --conv_examples images
  train_iwae_k50_b100               `fit` of the same model on the IWAE bound L_50, batch 100
  train_hvae_b100                   `fit` of Burda et al.'s two-stochastic-layer model (`hierarchical_vae`), ELBO
  train_hvae_iwae_k50_b100          the same on L_50
  eval_is_k5000                     `evaluation.report`: log p(x) with k=5000 (and L_50) on --eval_examples
                                    test images
  eval_hvae_is_k5000                the same for the two-stochastic-layer model
  (the train and eval cases report their matmul FLOP rate and its fraction of `matmul_peak`)
  matmul_peak                       GFLOP/s of a large float32 matmul: this machine's ceiling
  serve_<signature>_b<1|256>        SavedModel signature latency (see `benchmarks.serving`),
                                    e.g. serve_encode_b1, serve_score_b256
Peers (--peers; reference scripts in --reference_dir, the PyTorch ones run by --peers_python):
  keras_tutorial, torch_handwritten, pythae, xla_ceiling (bare XLA, 20 fused steps per call)
"""

import json
import os
import statistics
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from absl import app, flags  # noqa: E402

from benchmarks.flops import matmul_flops  # noqa: E402
from benchmarks.machine import device_name, matmul_peak, timed  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.path.join(ROOT, "..", "shared")
SERVE_CASES = tuple(f"serve_{s}_b{b}" for s in ("encode", "decode", "reconstruct", "sample", "score") for b in (1, 256))
CASES = ("train_mlp_b100", "train_mlp_b100_arrays", "train_mlp_b1000", "train_conv_b128", "train_iwae_k50_b100",
         "train_hvae_b100", "train_hvae_iwae_k50_b100", "eval_is_k5000", "eval_hvae_is_k5000",
         "matmul_peak") + SERVE_CASES
PEERS = ("keras_tutorial", "torch_handwritten", "pythae", "xla_ceiling")

_CASES = flags.DEFINE_list("cases", list(CASES), "Cases to run (default: all).")
_PEERS = flags.DEFINE_bool("peers", False, "Also run the reference scripts and print ratios to them.")
_ROUNDS = flags.DEFINE_integer("rounds", 1, "Rounds over all cases (and peers); summaries give medians.", lower_bound=1)
_EPOCHS = flags.DEFINE_integer("epochs", 2, "Timed epochs per training case (and per peer).", lower_bound=1)
_EVAL_EXAMPLES = flags.DEFINE_integer("eval_examples", 1000, "Test images for the eval cases (10,000: all).",
                                      lower_bound=1, upper_bound=10000)
_CONV_EXAMPLES = flags.DEFINE_integer("conv_examples", 10000, "Training images per epoch for train_conv_b128.",
                                      lower_bound=128, upper_bound=50000)
_MNIST_DIR = flags.DEFINE_string("mnist_dir", os.environ.get("MNIST_DIR", os.path.join(SHARED, "data", "mnist")),
                                 "Folder with MNIST's IDX .gz files (or mnist.npz).")
_REFERENCE_DIR = flags.DEFINE_string("reference_dir", os.path.join(SHARED, "bench"),
                                     "Folder with the reference scripts (keras_tutorial_vae.py, ...).")
_PEERS_PYTHON = flags.DEFINE_string("peers_python", os.path.join(ROOT, "..", "peers-venv", "bin", "python"),
                                    "Python with torch and pythae, for the PyTorch peers.")
_JIT_COMPILE = flags.DEFINE_enum("jit_compile", None, ["auto", "true", "false"],
                                 "`compile`'s jit_compile for the train cases, with Keras' meaning (default: the "
                                 "package's choice).")
_STEPS_PER_EXECUTION = flags.DEFINE_integer("steps_per_execution", None,
                                            "`compile`'s steps_per_execution for the train cases "
                                            "(default: the package's).", lower_bound=1)
_CHILD = flags.DEFINE_string("child", None, "Internal: run one case in this process.")


@flags.validator("cases", f"--cases must be names from {', '.join(CASES)}.")
def _check_cases(values):
    return bool(values) and all(v in CASES for v in values)


# ---------------------------------------------------------------------------- cases (child process)
def _mnist(split):
    from keras_vae import data

    splits = data.load("mnist", data_dir=_MNIST_DIR.value)
    return splits.train if split == "train" else splits.test


def _train(model, x, batch_size, arrays=False):
    """examples/s of `model.fit` (package defaults unless --jit_compile/--steps_per_execution), after a
    one-epoch warm-up; from `data.make_dataset`, or with `arrays` from a NumPy array as `fit(x)` takes it."""
    import keras

    from keras_vae import data

    jit_compile = {"true": True, "false": False}.get(_JIT_COMPILE.value, _JIT_COMPILE.value)
    model.compile(keras.optimizers.Adam(1e-3), jit_compile=jit_compile, steps_per_execution=_STEPS_PER_EXECUTION.value)
    if arrays:
        x = data.binarize_array(x[: len(x) // batch_size * batch_size], seed=0)
        inputs = {"x": x, "batch_size": batch_size, "shuffle": True}
    else:
        inputs = {"x": data.make_dataset(x, batch_size, shuffle=True, binarize=True, seed=0, drop_remainder=True)}
    model.fit(**inputs, epochs=1, verbose=0)  # compiles (each fused group size once)
    start = time.perf_counter()
    model.fit(**inputs, epochs=_EPOCHS.value, verbose=0)
    seconds = time.perf_counter() - start
    examples = _EPOCHS.value * (len(x) // batch_size) * batch_size
    # A train step's matmuls: forward, and backward twice that (the gradients of inputs and weights).
    # None (no rate reported) for a model with layers other than Dense, as conv_vae.
    forward = matmul_flops(model, model.num_samples)
    return {"examples_per_sec": examples / seconds, "batch_size": batch_size, "jit_compile": bool(model.jit_compile),
            "steps_per_execution": model.steps_per_execution,
            **_flop_rate(None if forward is None else 3 * forward * examples, seconds)}


def _flop_rate(flops, seconds):
    """GFLOP/s of `flops` in `seconds`, and its fraction of this machine's `matmul_peak`, measured now."""
    if flops is None:
        return {}
    peak = matmul_peak()["gflops"]
    gflops = flops / seconds / 1e9
    return {"gflops": gflops, "matmul_peak_gflops": peak, "fraction_of_matmul_peak": gflops / peak}


def _burda_vae(**kwargs):
    import keras_vae

    return keras_vae.mlp_vae((28, 28, 1), 50, (200, 200), activation="tanh", seed=0, **kwargs)


def _burda_hvae(**kwargs):
    import keras_vae

    return keras_vae.hierarchical_vae((28, 28, 1), seed=0, **kwargs)  # its defaults are Burda's two layers


def train_mlp(batch_size):
    return _train(_burda_vae(), _mnist("train"), batch_size)


def train_conv_b128():
    import keras_vae

    model = keras_vae.conv_vae((28, 28, 1), 50, seed=0)
    return _train(model, _mnist("train")[: _CONV_EXAMPLES.value], 128)


def eval_is_k5000(build, iw_samples=5000, bound_samples=50):
    """examples/s of `evaluation.report` (the body of apps.evaluate) for the model `build()` makes,
    and its matmul FLOP rate."""
    from keras_vae import data, evaluation

    model = build()  # the weights do not change the work done
    x = data.binarize_array(_mnist("test")[: _EVAL_EXAMPLES.value], seed=0)
    evaluation.report(model, x[:100], iw_samples, bound_samples, verbose=0)  # compiles
    seconds = timed(lambda: evaluation.report(model, x, iw_samples, bound_samples, verbose=0))
    # The encoder runs once per example and bound (and once more for the closed-form KL).
    flops = len(x) * matmul_flops(model, iw_samples + bound_samples, encodings=3)
    return {"examples_per_sec": len(x) / seconds, "iw_samples": iw_samples, "num_examples": len(x),
            "full_test_set_seconds": 10000 * seconds / len(x), **_flop_rate(flops, seconds)}


def serve(cases):
    from benchmarks import serving

    wanted = [c for c in cases if c.startswith("serve_")]
    signatures = sorted({c.split("_")[1] for c in wanted})
    results = serving.run(batch_sizes=sorted({int(c.rsplit("_b", 1)[1]) for c in wanted}), signatures=signatures)
    return [r for r in results if r["case"] in wanted]


def run_child(name):
    """Run one case (or all the listed serve cases) here; print its JSON lines."""
    if name == "serve":
        results = serve(_CASES.value)
    else:
        function = {"train_mlp_b100": lambda: train_mlp(100), "train_mlp_b1000": lambda: train_mlp(1000),
                    "train_mlp_b100_arrays": lambda: _train(_burda_vae(), _mnist("train"), 100, arrays=True),
                    "train_conv_b128": train_conv_b128, "eval_is_k5000": lambda: eval_is_k5000(_burda_vae),
                    "eval_hvae_is_k5000": lambda: eval_is_k5000(_burda_hvae),
                    "train_iwae_k50_b100": lambda: _train(_burda_vae(objective="iwae", num_samples=50),
                                                          _mnist("train"), 100),
                    "train_hvae_b100": lambda: _train(_burda_hvae(), _mnist("train"), 100),
                    "train_hvae_iwae_k50_b100": lambda: _train(_burda_hvae(objective="iwae", num_samples=50),
                                                               _mnist("train"), 100),
                    "matmul_peak": matmul_peak}[name]
        results = [{"case": name, **function(), "device": device_name()}]
    for result in results:
        print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in result.items()}), flush=True)


# ---------------------------------------------------------------------------- driver
def _commands():
    """{name: command} for every process to run: the cases (serve cases share one) and the peers."""
    me = [sys.executable, "-m", "benchmarks.run"] + [
        flags.FLAGS[f].serialize() for f in ("cases", "epochs", "eval_examples", "conv_examples", "mnist_dir",
                                             "jit_compile", "steps_per_execution") if flags.FLAGS[f].value is not None]
    commands = {}
    for case in _CASES.value:
        name = "serve" if case.startswith("serve_") else case
        commands.setdefault(name, me + [f"--child={name}"])
    if _PEERS.value:
        ref = _REFERENCE_DIR.value
        script = {"keras_tutorial": (sys.executable, "keras_tutorial_vae.py"),
                  "torch_handwritten": (_PEERS_PYTHON.value, "torch_vae.py"),
                  "pythae": (_PEERS_PYTHON.value, "pythae_vae.py"),
                  "xla_ceiling": (sys.executable, "xla_ceiling.py", "--fused=20")}
        for peer, (python, path, *extra) in script.items():
            commands[peer] = [python, os.path.join(ref, path), f"--epochs={_EPOCHS.value}", *extra]
    return commands


def _run(name, command):
    """The JSON lines a process printed, each given its case name (peers print `peer`)."""
    env = {**os.environ, "MNIST_DIR": os.path.abspath(_MNIST_DIR.value), "TF_CPP_MIN_LOG_LEVEL": "3"}
    cwd = ROOT if name in CASES or name == "serve" else _REFERENCE_DIR.value
    done = subprocess.run(command, env=env, cwd=cwd, capture_output=True, text=True)
    if done.returncode:
        last = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
        return [{"case": name, "error": f"exit {done.returncode}: {last}"}]
    results = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    for result in results:
        result.setdefault("case", name)
        result.pop("peer", None)
    return results


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    if _CHILD.value:
        return run_child(_CHILD.value)
    if _PEERS.value:  # checked here, not in a validator: validators don't touch the file system
        missing = [p for p in (_REFERENCE_DIR.value, _PEERS_PYTHON.value) if not os.path.exists(p)]
        if missing:  # one line, like a flag error (app.UsageError would print the whole --help first)
            sys.exit(f"benchmarks.run: error: --peers needs {' and '.join(missing)} "
                     "(see --reference_dir, --peers_python)")
    commands = _commands()
    rates = {}
    for round_ in range(_ROUNDS.value):
        for name, command in commands.items():
            for result in _run(name, command):
                print(json.dumps({**result, "round": round_}), flush=True)
                if result.get("examples_per_sec") is not None:
                    rates.setdefault(result["case"], []).append(result["examples_per_sec"])
    medians = {case: statistics.median(values) for case, values in rates.items()}
    for case, median in medians.items():
        summary = {"case": case, "median_examples_per_sec": round(median, 1), "runs": len(rates[case])}
        if case in ("train_mlp_b100", *PEERS):
            summary.update({f"ratio_to_{peer}": round(median / medians[peer], 3)
                            for peer in PEERS if peer in medians and peer != case})
        print(json.dumps(summary), flush=True)


if __name__ == "__main__":
    app.run(main)
