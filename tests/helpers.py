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
