"""Helpers shared by the tests (importable because pytest puts tests/ on sys.path)."""

import hashlib
import os


def tree_digest(path):
    """{relative path: sha256} of every file under `path`."""
    digest = {}
    for folder, _, files in os.walk(path):
        for name in files:
            full = os.path.join(folder, name)
            with open(full, "rb") as f:
                digest[os.path.relpath(full, path)] = hashlib.sha256(f.read()).hexdigest()
    return digest


def xla_calls(function, *args):
    """Names of the functions a `tf.function`, traced with `args`, calls that must be XLA-compiled."""
    graph = function.get_concrete_function(*args).graph.as_graph_def()
    return [f.signature.name for f in graph.library.function if f.attr["_XlaMustCompile"].b]
