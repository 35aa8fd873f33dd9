"""The README's Python examples run as written."""

import pathlib
import re
import subprocess
import sys

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def test_readme_python_example_runs(tmp_path):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    example = blocks[0]
    assert "model.fit(" in example and "export_saved_model" in example
    result = subprocess.run([sys.executable, "-c", example], cwd=tmp_path, capture_output=True, text=True,
                            timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "digits.keras").is_file()
    assert (tmp_path / "saved_models" / "vae_digits" / "1" / "saved_model.pb").is_file()


def test_readme_variants_example_runs(tmp_path):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    example = next(block for block in blocks if "num_classes=10" in block and "KLCyclical" in block)
    example += "\nassert threes.shape == (8, 8, 8, 1)\n"
    result = subprocess.run([sys.executable, "-c", example], cwd=tmp_path, capture_output=True, text=True,
                            timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]


def test_readme_own_layer_example_runs(tmp_path):
    """"Your own layers": a user's Laplace likelihood trains, saves, reloads and exports as written."""
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    example = next(block for block in blocks if "class LaplaceLikelihood" in block)
    result = subprocess.run([sys.executable, "-c", example], cwd=tmp_path, capture_output=True, text=True,
                            timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "saved_models" / "vae_laplace" / "1" / "saved_model.pb").is_file()
