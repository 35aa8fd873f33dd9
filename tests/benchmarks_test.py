"""`python -m benchmarks.run` as users run it: real subprocesses, JSON lines out. No timings asserted."""

import json
import os
import subprocess
import sys

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


def test_bad_flags_are_one_line_errors():
    unknown = _run("--cases=train_mlp_b7")
    assert unknown.returncode != 0 and "--cases must be names from" in unknown.stderr
    missing = _run("--cases=matmul_peak", "--peers", "--peers_python=/nonexistent/python")
    assert missing.returncode != 0 and "--peers needs /nonexistent/python" in missing.stderr
    assert missing.stdout == ""
