"""apps.train on a damaged dataset file: one error line naming the file, and no run folder or export."""

import os

from apps_test import assert_one_line_error, run_app
from data_test import MNIST_FILES, TRAIN_IMAGES, _assert_shared_untouched, _shared_bytes


def test_train_on_truncated_mnist_file(tmp_path):
    data_dir = tmp_path / "mnist"
    data_dir.mkdir()
    for name in MNIST_FILES:
        (data_dir / name).write_bytes(_shared_bytes(name))
    with open(data_dir / TRAIN_IMAGES, "r+b") as f:
        f.truncate(os.path.getsize(data_dir / TRAIN_IMAGES) // 2)  # an interrupted download
    model_dir, export_dir = tmp_path / "run", tmp_path / "saved_models"

    result = run_app("train", "--dataset=mnist", f"--data_dir={data_dir}", "--epochs=1",
                     f"--model_dir={model_dir}", f"--export_dir={export_dir}")

    line = assert_one_line_error(result, "train: error: ", f"{data_dir / TRAIN_IMAGES} is not a valid, complete gzip")
    assert line.endswith("download it again"), line
    assert result.returncode == 1
    assert not model_dir.exists() and not export_dir.exists()
    _assert_shared_untouched("mnist")
