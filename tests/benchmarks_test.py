"""`python -m benchmarks.run` as users run it: real subprocesses, JSON lines out. No timings asserted."""

import json
import os
import subprocess
import sys

from apps_test import message_lines
from data_test import _shared
from keras_vae import likelihoods

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(*flags):
    return subprocess.run([sys.executable, "-m", "benchmarks.run", *flags], cwd=ROOT, capture_output=True,
                          text=True, timeout=600)


def test_cases_print_one_json_line_each_and_a_summary():
    done = _run("--cases=matmul_peak,serve_encode_b1,serve_score_b256", "--rounds=1")
    assert done.returncode == 0, done.stderr[-2000:]
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    measured = {line["case"]: line for line in lines if "round" in line}
    assert set(measured) == {"matmul_peak", "serve_encode_b1", "serve_score_b256"}
    assert all(line["device"].startswith(("CPU:0", "GPU:0")) for line in measured.values())
    assert measured["matmul_peak"]["gflops"] > 0
    assert measured["serve_encode_b1"]["p50_ms"] > 0 and measured["serve_score_b256"]["examples_per_sec"] > 0
    summaries = [line for line in lines if "median_examples_per_sec" in line]
    assert {line["case"] for line in summaries} == {"serve_encode_b1", "serve_score_b256"}


def test_a_training_case_without_a_flop_count_reports_its_speed():
    """train_conv_b128: conv_vae has no Dense-only FLOP count, so its line has examples/s and no rate."""
    mnist = _shared("mnist")
    done = _run("--cases=train_conv_b128", "--conv_examples=256", "--epochs=1", f"--mnist_dir={mnist}")
    assert done.returncode == 0, done.stderr[-2000:]
    line = json.loads(done.stdout.splitlines()[0])
    assert line["case"] == "train_conv_b128" and "error" not in line, line
    assert line["examples_per_sec"] > 0 and "fraction_of_matmul_peak" not in line


def test_the_two_layer_evaluation_case_reports_its_flop_rate():
    """eval_hvae_is_k5000 (the code of eval_is_k5000, with a hierarchical model) on one test image."""
    mnist = _shared("mnist")
    done = _run("--cases=eval_hvae_is_k5000", "--eval_examples=1", f"--mnist_dir={mnist}")
    assert done.returncode == 0, done.stderr[-2000:]
    line = json.loads(done.stdout.splitlines()[0])
    assert line["case"] == "eval_hvae_is_k5000" and "error" not in line, line
    assert line["num_examples"] == 1 and line["iw_samples"] == 5000, line
    assert line["examples_per_sec"] > 0 and line["fraction_of_matmul_peak"] > 0, line


def _one_line_error(done):
    """The single line a failed run printed (TensorFlow's start-up log lines and absl's help hint aside)."""
    lines = message_lines(done.stderr)
    assert done.returncode != 0 and done.stdout == ""
    assert len(lines) == 1, done.stderr
    return lines[0]


def test_bad_flags_are_one_line_errors(tmp_path):
    assert "--cases must be names from" in _one_line_error(_run("--cases=train_mlp_b7"))
    # --reference_dir is given: its default, ../shared/bench, exists only in the usual layout.
    missing_python = _run("--cases=matmul_peak", "--peers", f"--reference_dir={tmp_path}",
                          "--peers_python=/nonexistent/python")
    assert _one_line_error(missing_python) == ("benchmarks.run: error: --peers needs /nonexistent/python "
                                               "(see --reference_dir, --peers_python)")
    missing_both = _run("--cases=matmul_peak", "--peers", "--reference_dir=/nonexistent/bench",
                        "--peers_python=/nonexistent/python")
    assert "--peers needs /nonexistent/bench and /nonexistent/python" in _one_line_error(missing_both)


def test_matmul_flops_count_every_dense_kernel_once_per_encoding_or_sample():
    """The FLOP rates' numerator, against an independent count: in these MLP models every 2-D weight is a
    Dense kernel, the encoder's run per encoding and every other per z sample."""
    import keras_vae
    from benchmarks.flops import matmul_flops

    for model in (keras_vae.mlp_vae((28, 28, 1), 50, (200, 200), seed=0),
                  keras_vae.hierarchical_vae((28, 28, 1), seed=0)):
        kernels = lambda weights: sum(2 * w.shape[0] * w.shape[1] for w in weights if len(w.shape) == 2)  # noqa: E731
        encoder = kernels(model.encoder.weights)
        per_sample = kernels(model.trainable_weights) - encoder
        assert per_sample > 0
        assert matmul_flops(model, 50, encodings=3) == 3 * encoder + 50 * per_sample
    assert matmul_flops(keras_vae.conv_vae((28, 28, 1), 8, seed=0), 1) is None


def test_eval_breakdown_prints_each_part_of_a_chunk(tmp_path):
    mnist = _shared("mnist")
    done = subprocess.run([sys.executable, "-m", "benchmarks.eval_breakdown", "--chunk_size=60", "--batch_size=10",
                           "--repeats=1", f"--mnist_dir={mnist}"], cwd=ROOT, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = {line["part"]: line for line in map(json.loads, done.stdout.splitlines())}
    assert list(lines) == ["noise", "decoder", "log_prob_graph", "log_prob_xla", "q_and_prior", "chunk", "chunk_graph"]
    assert all(line["ms_per_chunk"] > 0 and line["chunk_size"] == 60 and line["batch_size"] == 10
               for line in lines.values())
    assert lines["chunk"]["share_of_chunk"] == 1.0
    assert {"gflops", "fraction_of_matmul_peak"} <= set(lines["decoder"]) and "gflops" not in lines["noise"]
    for bad, fragment in (("--chunk_size=0", "--chunk_size"), (f"--mnist_dir={tmp_path}", "holds no MNIST")):
        assert fragment in _one_line_error(subprocess.run(
            [sys.executable, "-m", "benchmarks.eval_breakdown", bad], cwd=ROOT, capture_output=True, text=True,
            timeout=600))


def test_likelihood_timings_cover_every_likelihood_event_part_and_mode():
    done = subprocess.run([sys.executable, "-m", "benchmarks.likelihoods", "--samples=2", "--batch_size=3",
                           "--repeats=1"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    expected = {(name, tuple(event), part, mode) for name in likelihoods.LIKELIHOODS
                for event in ((784,), (28, 28, 1)) for part in ("value", "value_and_gradient")
                for mode in ("xla", "graph")}
    measured = {(line["likelihood"], tuple(line["event_shape"]), line["part"], line["mode"]) for line in lines}
    assert measured == expected and len(lines) == len(expected) and all(line["ms"] > 0 for line in lines)


def test_cpu_description_names_the_model_and_its_vector_extensions(tmp_path):
    from benchmarks.machine import cpu_description

    x86 = tmp_path / "x86"
    x86.write_text("processor\t: 0\nmodel name\t: AMD EPYC 9R14\nflags\t\t: fpu sse2 avx avx2 fma avx512f\n\n"
                   "processor\t: 1\nmodel name\t: AMD EPYC 9R14\nflags\t\t: fpu\n")
    assert cpu_description(str(x86)) == "AMD EPYC 9R14; avx512f avx2 fma"
    arm = tmp_path / "arm"
    arm.write_text("processor\t: 0\nFeatures\t: fp asimd sve\nCPU part\t: 0xd40\n")
    assert cpu_description(str(arm)).endswith("; sve asimd")
    assert ";" not in cpu_description(str(tmp_path / "missing"))
