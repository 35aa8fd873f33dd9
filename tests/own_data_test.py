"""Your own data (issue 15): `data.load` and `--dataset` on an image folder, a .npy or a .npz file.

Every expected value comes from the arrays written here (with PIL or numpy), never from the loader.
"""

import json
import os
import re
import shlex
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

import keras_vae
from apps_test import ROOT, assert_flags_error, assert_ok, assert_one_line_error, parse_flags, read_flags, run_app  # noqa: F401
from keras_vae import data

README = ROOT / "README.md"
CLASSES = ("cat", "dog", "eel")
# Tiny networks and one epoch for the apps.train runs below; XLA's compile is not under test here.
TINY = ["--epochs=1", "--latent_dim=2", "--hidden_units=16", "--batch_size=16", "--image_every=0",
        "--jit_compile=false"]


def _pixels(rng, shape):
    return rng.integers(0, 256, shape, dtype=np.uint8)


def write_class_folder(root, per_class=20, size=(6, 5), seed=0, fmt="png"):
    """`per_class` grey images of `size` in one sub-folder per class of CLASSES; returns {bytes: (image, label)}."""
    rng, written = np.random.default_rng(seed), {}
    for label, name in enumerate(CLASSES):
        os.makedirs(root / name)
        for i in range(per_class):
            image = _pixels(rng, size)
            Image.fromarray(image).save(root / name / f"{i:03d}.{fmt}")
            written[image.tobytes()] = (image, label)
    return written


def write_flat_folder(root, count=12, size=(4, 7), seed=1):
    rng, images = np.random.default_rng(seed), []
    os.makedirs(root)
    for i in range(count):
        images.append(_pixels(rng, size))
        Image.fromarray(images[-1]).save(root / f"img{i:02d}.png")
    return images


def all_examples(splits):
    """(images, labels) of train + validation + test, in that order."""
    x = np.concatenate([splits.train, splits.validation, splits.test])
    y = [splits.train_labels, splits.validation_labels, splits.test_labels]
    return x, None if y[0] is None else np.concatenate(y)


def as_bytes(image):
    """A loaded image [H, W, 1] back to the uint8 bytes it was written from."""
    return np.round(image[..., 0] * 255).astype(np.uint8).tobytes()


# ------------------------------------------------------------------ image folders
def test_folder_with_class_subfolders(tmp_path):
    written = write_class_folder(tmp_path / "pets")
    splits = data.load(str(tmp_path / "pets"))
    assert splits.class_names == CLASSES and splits.num_classes == 3
    assert splits.input_shape == (6, 5, 1) and splits.train.dtype == np.float32
    assert (len(splits.train), len(splits.validation), len(splits.test)) == (48, 6, 6)  # 10% test, 10% validation
    x, y = all_examples(splits)
    # Every image written comes back once, with the pixels written (k/255 exactly) and its folder's label.
    assert sorted(as_bytes(image) for image in x) == sorted(written)
    np.testing.assert_array_equal(x * 255, np.round(x * 255))
    for image, label in zip(x, y):
        assert written[as_bytes(image)][1] == label
    # The fixed-seed permutation: every class in the test split (a tail cut would hold only "eel").
    assert set(splits.test_labels) == {0, 1, 2}
    again = data.load(str(tmp_path / "pets"), seed=5)  # --seed does not move the split
    np.testing.assert_array_equal(again.test, splits.test)


def test_folder_without_subfolders_has_no_labels(tmp_path):
    images = write_flat_folder(tmp_path / "flat")
    splits = data.load(str(tmp_path / "flat"), validation_size=2, test_size=3)
    assert splits.class_names is None and splits.num_classes is None
    assert splits.train_labels is splits.validation_labels is splits.test_labels is None
    assert (len(splits.train), len(splits.validation), len(splits.test)) == (7, 2, 3)
    assert sorted(as_bytes(image) for image in all_examples(splits)[0]) == sorted(i.tobytes() for i in images)


def test_class_folders_any_depth_and_hidden_names_skipped(tmp_path):
    root = tmp_path / "nested"
    for name, count in (("a", 3), ("b", 4)):
        os.makedirs(root / name / "deeper")
        for i in range(count):
            Image.fromarray(np.full((3, 3), 10 * i, np.uint8)).save(root / name / "deeper" / f"{i}.png")
    os.makedirs(root / ".cache")  # hidden: not a class
    (root / "a" / "deeper" / "notes.txt").write_text("not an image")
    splits = data.load(str(root), validation_size=0, test_size=1)
    assert splits.class_names == ("a", "b")
    assert np.bincount(all_examples(splits)[1]).tolist() == [3, 4]


def test_jpeg_within_tolerance(tmp_path):
    root = tmp_path / "jpeg"
    os.makedirs(root)
    ramp = np.add.outer(np.arange(16) * 8, np.arange(16) * 4).astype(np.uint8)  # smooth: JPEG keeps it closely
    images = [np.clip(ramp.astype(int) + 10 * i, 0, 255).astype(np.uint8) for i in range(10)]
    for i, image in enumerate(images):
        Image.fromarray(image).save(root / f"{i}.jpg", quality=95)
    splits = data.load(str(root), validation_size=0, test_size=1)
    loaded = np.concatenate([splits.train, splits.test])[..., 0] * 255
    assert splits.input_shape == (16, 16, 1)  # grey JPEGs read as grey
    for image in images:  # each written image has a loaded one within JPEG's error
        assert min(np.abs(loaded - image).max(axis=(1, 2))) <= 6


def test_color_modes(tmp_path):
    rng = np.random.default_rng(3)
    root = tmp_path / "colour"
    os.makedirs(root)
    rgba = _pixels(rng, (8, 4, 5, 4))
    for i, image in enumerate(rgba):
        Image.fromarray(image, "RGBA").save(root / f"{i}.png")
    order = {image[..., :3].tobytes(): i for i, image in enumerate(rgba)}

    def sorted_examples(splits, channels):
        x = np.round(all_examples(splits)[0] * 255).astype(np.int64)
        assert x.shape == (8, 4, 5, channels)
        return x

    default = sorted_examples(data.load(str(root), validation_size=0, test_size=1), 3)  # colour: rgb, alpha dropped
    index = [order[image.astype(np.uint8).tobytes()] for image in default]
    assert sorted(index) == list(range(8))
    with_alpha = sorted_examples(data.load(str(root), validation_size=0, test_size=1, color_mode="rgba"), 4)
    np.testing.assert_array_equal(with_alpha, rgba[index])
    grey = sorted_examples(data.load(str(root), validation_size=0, test_size=1, color_mode="grayscale"), 1)
    luma = rgba[index][..., :3].astype(np.float64) @ [0.299, 0.587, 0.114]  # ITU-R 601-2, PIL's "L"
    assert np.abs(grey[..., 0] - luma).max() <= 1

    # Grey content saved as RGB files is read as grey by default, with the values written.
    grey_rgb = tmp_path / "grey_rgb"
    os.makedirs(grey_rgb)
    values = _pixels(rng, (6, 4, 5))
    for i, image in enumerate(values):
        Image.fromarray(np.repeat(image[..., None], 3, -1), "RGB").save(grey_rgb / f"{i}.png")
    splits = data.load(str(grey_rgb), validation_size=0, test_size=1)
    assert splits.input_shape == (4, 5, 1)
    assert sorted(as_bytes(image) for image in all_examples(splits)[0]) == sorted(v.tobytes() for v in values)


def test_image_size_resizes(tmp_path):
    root = tmp_path / "sizes"
    os.makedirs(root)
    Image.fromarray(np.full((10, 12), 200, np.uint8)).save(root / "a_big.png")
    Image.fromarray(np.full((6, 6), 50, np.uint8)).save(root / "b_small.png")
    ramp = np.tile(np.arange(0, 240, 20, dtype=np.uint8), (8, 1))  # 8 x 12
    Image.fromarray(ramp).save(root / "c_ramp.png")
    with pytest.raises(ValueError) as raised:
        data.load(str(root), validation_size=0, test_size=1)
    message = str(raised.value)
    assert "\n" not in message and str(root) in message and "different sizes" in message and "image_size" in message
    splits = data.load(str(root), image_size=(4, 6), validation_size=0, test_size=1)
    x = np.round(all_examples(splits)[0][..., 0] * 255)
    assert x.shape == (3, 4, 6)
    expected_ramp = np.asarray(Image.fromarray(ramp).resize((6, 4), Image.BILINEAR), np.float64)
    found = {int(image[0, 0]) if image.std() == 0 else -1: image for image in x}
    assert set(found) == {200, 50, -1}  # constant images stay constant at any size
    np.testing.assert_array_equal(found[-1], expected_ramp)


# ------------------------------------------------------------------ .npy and .npz
def test_npy_uint8_and_float(tmp_path):
    rng = np.random.default_rng(4)
    images = _pixels(rng, (40, 5, 6))
    np.save(tmp_path / "grey.npy", images)
    splits = data.load(str(tmp_path / "grey.npy"))
    assert splits.input_shape == (5, 6, 1) and (len(splits.train), len(splits.validation), len(splits.test)) == (32, 4, 4)
    x = all_examples(splits)[0]
    assert sorted(as_bytes(image) for image in x) == sorted(image.tobytes() for image in images)
    # A permutation, not a tail cut: the test split is not the last four images.
    assert sorted(as_bytes(image) for image in splits.test) != sorted(image.tobytes() for image in images[-4:])

    colour = rng.random((10, 3, 3, 3)).astype(np.float64)  # floats in [0, 1] are kept as they are
    np.save(tmp_path / "colour.npy", colour)
    splits = data.load(str(tmp_path / "colour.npy"), validation_size=1, test_size=2)
    assert splits.input_shape == (3, 3, 3) and splits.train.dtype == np.float32
    x = all_examples(splits)[0]
    assert sorted(map(tuple, x.reshape(10, -1).round(6))) == sorted(map(tuple, colour.astype(np.float32).reshape(10, -1).round(6)))


def test_npz_with_train_and_test(tmp_path):
    rng = np.random.default_rng(5)
    x_train, x_test = _pixels(rng, (30, 4, 4)), _pixels(rng, (7, 4, 4))
    y_train, y_test = np.arange(30) % 4, np.arange(7) % 4
    path = str(tmp_path / "mine.npz")
    np.savez(path, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    splits = data.load(path)
    # The test split is the file's, in its order; the validation split is 10% of the permuted training set.
    np.testing.assert_array_equal(np.round(splits.test[..., 0] * 255), x_test)
    np.testing.assert_array_equal(splits.test_labels, y_test)
    assert (len(splits.train), len(splits.validation)) == (27, 3) and splits.num_classes == 4
    train = np.concatenate([splits.train, splits.validation])
    labels = np.concatenate([splits.train_labels, splits.validation_labels])
    by_bytes = {image.tobytes(): label for image, label in zip(x_train, y_train)}
    assert sorted(as_bytes(image) for image in train) == sorted(by_bytes)
    assert all(by_bytes[as_bytes(image)] == label for image, label in zip(train, labels))
    with pytest.raises(ValueError, match=re.escape(f"{path} has x_test, its own test split")):
        data.load(path, test_size=3)

    x_validation = _pixels(rng, (2, 4, 4))
    np.savez(path, x_train=x_train, x_test=x_test, x_validation=x_validation)
    splits = data.load(path)
    np.testing.assert_array_equal(np.round(splits.validation[..., 0] * 255), x_validation)
    assert len(splits.train) == 30 and splits.num_classes is None
    with pytest.raises(ValueError, match=re.escape(f"{path} has x_validation, its own validation split")):
        data.load(path, validation_size=3)


def test_npz_with_a_single_x(tmp_path):
    rng = np.random.default_rng(6)
    x = _pixels(rng, (90, 3, 3, 1))
    y = np.repeat([0, 1, 2], 30)  # sorted by class, as class folders would be
    path = str(tmp_path / "single.npz")
    np.savez(path, x=x, y=y)
    splits = data.load(path, validation_size=10, test_size=15)
    assert (len(splits.train), len(splits.validation), len(splits.test)) == (65, 10, 15)
    assert set(splits.test_labels) == set(splits.validation_labels) == {0, 1, 2}
    by_bytes = {image.tobytes(): label for image, label in zip(x[..., 0], y)}
    images, labels = all_examples(splits)
    assert sorted(as_bytes(image) for image in images) == sorted(by_bytes)
    assert all(by_bytes[as_bytes(image)] == label for image, label in zip(images, labels))


def test_binarize_modes(tmp_path):
    rng = np.random.default_rng(7)
    x = rng.uniform(0.2, 0.8, (2000, 4, 4)).astype(np.float32)
    path = str(tmp_path / "grey.npy")
    np.save(path, x)
    none = data.load(path)
    static, dynamic = data.load(path, binarize="static"), data.load(path, binarize="dynamic")
    assert none.binarize == "none" and static.binarize == "static" and dynamic.dynamic
    assert len(np.unique(none.train)) > 2
    np.testing.assert_array_equal(dynamic.train, none.train)  # dynamic: drawn per batch by make_dataset
    for split in ("validation", "test"):
        assert set(np.unique(getattr(static, split))) == {0.0, 1.0}
        np.testing.assert_array_equal(getattr(static, split), getattr(dynamic, split))  # one fixed draw
    assert set(np.unique(static.train)) == {0.0, 1.0}
    # Each draw has P(1) = intensity: the binary means follow the intensities'.
    assert abs(static.train.mean() - none.train.mean()) < 0.02
    assert abs(static.test.mean() - none.test.mean()) < 0.03


# ------------------------------------------------------------------ bad input
def _damaged_png(folder):
    write_flat_folder(folder)
    raw = (folder / "img00.png").read_bytes()
    (folder / "img03.png").write_bytes(raw[: len(raw) // 2])
    return folder / "img03.png", "is not a readable image"


def _foreign_png(folder):
    write_flat_folder(folder)
    (folder / "img05.png").write_text("this is not a picture")
    return folder / "img05.png", "is not a readable image"


def _sixteen_bit(folder):
    os.makedirs(folder)
    for i in range(3):
        Image.fromarray(np.full((4, 4), 1000 * (i + 1), np.uint16)).save(folder / f"{i}.png")
    return folder / "0.png", "expected an 8-bit image"


def _mixed_sizes(folder):
    write_flat_folder(folder)
    Image.fromarray(np.zeros((9, 9), np.uint8)).save(folder / "odd.png")
    return folder, "different sizes"


def _empty(folder):
    os.makedirs(folder)
    return folder, "is empty"


def _no_images(folder):
    os.makedirs(folder)
    (folder / "readme.txt").write_text("no pictures here")
    return folder, "holds no images"


def _images_and_folders(folder):
    write_class_folder(folder, per_class=2)
    Image.fromarray(np.zeros((6, 5), np.uint8)).save(folder / "stray.png")
    return folder, "holds both images (stray.png) and sub-folders"


def _empty_class(folder):
    write_class_folder(folder, per_class=2)
    os.makedirs(folder / "zebra")
    return folder / "zebra", "holds no images"


def _npz(**arrays):
    def write(folder):
        os.makedirs(folder)
        np.savez(folder / "d.npz", **arrays)
        return folder / "d.npz", None
    return write


def _npy(array):
    def write(folder):
        os.makedirs(folder)
        np.save(folder / "d.npy", array)
        return folder / "d.npy", None
    return write


def _raw(name, content):
    def write(folder):
        os.makedirs(folder)
        (folder / name).write_bytes(content)
        return folder / name, None
    return write


_U8 = np.zeros((5, 3, 3), np.uint8)
_CASES = {
    "damaged_png": (_damaged_png, None, {}),
    "foreign_png": (_foreign_png, None, {}),
    "sixteen_bit": (_sixteen_bit, None, {"color_mode": "grayscale"}),
    "mixed_sizes": (_mixed_sizes, None, {}),
    "empty_folder": (_empty, None, {}),
    "no_images": (_no_images, None, {}),
    "images_and_folders": (_images_and_folders, None, {}),
    "empty_class_folder": (_empty_class, None, {}),
    "npz_no_test": (_npz(x_train=_U8), "has no x_test array", {}),
    "npz_no_x": (_npz(images=_U8), "has unexpected arrays ['images']", {}),
    "npz_x_and_x_train": (_npz(x=_U8, x_train=_U8, x_test=_U8), "has both x and x_<split>", {}),
    "npz_y_without_x": (_npz(x_train=_U8, x_test=_U8, y_validation=np.zeros(5)), "has y_validation without", {}),
    "npz_label_count": (_npz(x=_U8, y=np.zeros(4)), "holds 5 images but y has labels of shape (4,)", {}),
    "npz_negative_label": (_npz(x=_U8, y=np.array([0, 1, -1, 0, 1])), "has label -1 at index 2", {}),
    "npz_fractional_label": (_npz(x=_U8, y=np.array([0, 1.5, 1, 0, 1])), "has label 1.5 at index 1", {}),
    "npz_shapes_differ": (_npz(x_train=_U8, x_test=np.zeros((2, 4, 4), np.uint8)), "different shapes", {}),
    "npz_not_zip": (_raw("d.npz", b"not a zip archive at all"), "is not a readable .npz archive", {}),
    "npy_bool": (_npy(np.zeros((5, 3, 3), bool)), "has dtype bool", {}),
    "npy_int_range": (_npy(np.full((5, 3, 3), 256, np.int64)), "pixel values in [256, 256]", {}),
    "npy_float_range": (_npy(np.full((5, 3, 3), 2.0)), "float pixel values in [2.0, 2.0]", {}),
    "npy_nan": (_npy(np.full((5, 3, 3), np.nan)), "float pixel values", {}),
    "npy_rank_2": (_npy(np.zeros((5, 3), np.uint8)), "is 2-D", {}),
    "npy_rank_5": (_npy(np.zeros((5, 3, 3, 1, 1), np.uint8)), "is 5-D", {}),
    "npy_channels_first": (_npy(np.zeros((5, 3, 8, 8), np.uint8)), "with the channels last", {}),
    "npy_empty": (_npy(np.zeros((0, 3, 3), np.uint8)), "is empty", {}),
    "npy_not_npy": (_raw("d.npy", b"PK\x03\x04 a zip, not a .npy"), "is not a .npy file", {}),
    "unknown_file_type": (_raw("d.csv", b"1,2,3"), "is neither a folder nor a .npy or .npz file", {}),
    "test_size_too_big": (_npy(_U8), "`test_size` must be in [1, 5)", {"test_size": 5}),
    "validation_leaves_nothing": (_npy(_U8), "`validation_size` must be in [0, 4)", {"test_size": 1,
                                                                                   "validation_size": 4}),
    "image_size_on_file": (_npy(_U8), "`image_size` applies to image folders", {"image_size": (2, 2)}),
}


@pytest.mark.parametrize("case", list(_CASES))
def test_bad_input_is_one_line_naming_the_file(tmp_path, case):
    write, fragment, options = _CASES[case]
    culprit, default_fragment = write(tmp_path / "data")
    fragment = fragment or default_fragment
    # A folder's problem (one of its images, a sub-folder) comes from loading the folder; a file's, the file.
    dataset = str(culprit) if culprit.suffix in (".npy", ".npz", ".csv") else str(tmp_path / "data")
    with pytest.raises((ValueError, OSError)) as raised:
        data.load(dataset, **options)
    message = str(raised.value)
    assert "\n" not in message, message
    assert str(culprit) in message, message
    if fragment:
        assert fragment in message, message


def test_truncated_npy(tmp_path):
    path = tmp_path / "cut.npy"
    np.save(path, np.zeros((50, 8, 8), np.uint8))
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) - 100])
    with pytest.raises(ValueError, match=re.escape(f"{path} is not a readable .npy array")):
        data.load(str(path))


def test_missing_path_and_option_errors(tmp_path):
    missing = str(tmp_path / "nowhere" / "images")
    with pytest.raises(FileNotFoundError, match=re.escape(f"{missing} does not exist: expected an image folder")):
        data.load(missing)
    with pytest.raises(ValueError, match="Unknown dataset 'cifar'; expected one of digits, mnist, fashion_mnist, "
                                         "cifar10, or the path"):
        data.load("cifar")
    with pytest.raises(ValueError, match="`test_size` applies to your own data"):
        data.load("digits", test_size=10)
    with pytest.raises(ValueError, match="`image_size` applies to your own data"):
        data.load("mnist", image_size=(28, 28))
    write_flat_folder(tmp_path / "flat")
    with pytest.raises(ValueError, match="data_dir applies to the built-in datasets"):
        data.load(str(tmp_path / "flat"), data_dir=str(tmp_path))
    with pytest.raises(ValueError, match="`color_mode` must be one of"):
        data.load(str(tmp_path / "flat"), color_mode="cmyk")
    with pytest.raises(ValueError, match=re.escape("`image_size` must be (height, width)")):
        data.load(str(tmp_path / "flat"), image_size=(4, 4, 4))


# ------------------------------------------------------------------ apps
@pytest.mark.parametrize("args, fragments", [
    (["--dataset={tmp}/nope"], ["--dataset", "digits, mnist, fashion_mnist, cifar10", "existing image folder"]),
    (["--dataset=digits", "--test_size=5"], ["--test_size, --image_size and --color_mode apply to a --dataset path"]),
    (["--dataset=mnist", "--image_size=28,28"], ["apply to a --dataset path"]),
    (["--dataset={tmp}/flat", "--image_size=28"], ["--image_size", "two positive integers"]),
    (["--dataset={tmp}/flat", "--image_size=28,0"], ["--image_size", "two positive integers"]),
    (["--dataset={tmp}/flat", "--data_dir={tmp}"], ["--data_dir applies to mnist, fashion_mnist and cifar10"]),
    (["--dataset={tmp}/flat", "--color_mode=cmyk"], ["--color_mode", "grayscale"]),
    (["--likelihood=continuous_bernoulli", "--binarize=dynamic"], ["--binarize=none"]),
], ids=["missing_path", "test_size_builtin", "image_size_builtin", "image_size_one", "image_size_zero", "data_dir_path",
        "color_mode", "intensity_binarized"])
def test_dataset_flag_errors(parse_flags, tmp_path, args, fragments):
    write_flat_folder(tmp_path / "flat")
    args = [arg.format(tmp=tmp_path) for arg in args]
    assert_flags_error(parse_flags, ["--model_dir=runs/unused", *args], fragments)


def test_dataset_flags_accepted(parse_flags, tmp_path):
    from absl import flags

    write_flat_folder(tmp_path / "flat")
    # A path with the own-data flags, and an intensity likelihood with the default --binarize=auto.
    parse_flags("--model_dir=runs/unused", f"--dataset={tmp_path / 'flat'}", "--image_size=3,4", "--color_mode=rgb",
                "--test_size=2", "--likelihood=continuous_bernoulli")
    assert flags.FLAGS.image_size == ["3", "4"] and flags.FLAGS.binarize == "auto"


def test_binarize_auto_resolves_from_the_likelihood(parse_flags, tmp_path):
    from absl import flags

    from apps import common

    np.save(tmp_path / "x.npy", np.full((20, 2, 2), 128, np.uint8))
    parse_flags("--model_dir=runs/unused", f"--dataset={tmp_path / 'x.npy'}", "--test_size=2", "--validation_size=2")
    assert flags.FLAGS.binarize == "auto"
    with pytest.raises(ValueError, match="--binarize=auto needs the model's likelihood"):
        common.load_splits()
    assert common.load_splits(bernoulli=False).binarize == "none" and flags.FLAGS.binarize == "none"
    flags.FLAGS.binarize = "auto"
    splits = common.load_splits(bernoulli=True)
    assert splits.binarize == "dynamic" and flags.FLAGS.binarize == "dynamic"  # what flags.cfg will record
    assert set(np.unique(splits.test)) <= {0.0, 1.0} and len(splits.test) == 2
    # Which models count as Bernoulli: not the continuous Bernoulli (a subclass), a density for intensities.
    models = {name: keras_vae.mlp_vae((2, 2, 1), 1, hidden_units=(2,), likelihood=name)
              for name in ("bernoulli", "continuous_bernoulli", "gaussian")}
    assert {name: common.is_bernoulli(model) for name, model in models.items()} == {
        "bernoulli": True, "continuous_bernoulli": False, "gaussian": False}


def test_train_on_a_missing_path_is_one_line_and_writes_nothing(tmp_path):
    result = run_app("train", f"--dataset={tmp_path / 'no_such_folder'}", *TINY,
                     f"--model_dir={tmp_path / 'run'}", f"--export_dir={tmp_path / 'export'}")
    line = assert_one_line_error(result, "train: error:", str(tmp_path / "no_such_folder"))
    assert line.startswith("train: error:") and result.returncode == 1
    assert os.listdir(tmp_path) == []


def test_train_on_a_bad_folder_is_one_line_and_writes_nothing(tmp_path):
    culprit, _ = _damaged_png(tmp_path / "images")
    result = run_app("train", f"--dataset={tmp_path / 'images'}", *TINY,
                     f"--model_dir={tmp_path / 'run'}", f"--export_dir={tmp_path / 'export'}")
    assert_one_line_error(result, "train: error:", f"{culprit} is not a readable image")
    assert result.returncode == 1
    assert os.listdir(tmp_path) == ["images"]


def test_train_conditional_on_class_folders(tmp_path):
    write_class_folder(tmp_path / "pets", per_class=20, size=(6, 6))
    model_dir = tmp_path / "run"
    result = run_app("train", f"--dataset={tmp_path / 'pets'}", "--conditional", *TINY,
                     f"--model_dir={model_dir}", f"--export_dir={tmp_path / 'export'}")
    assert_ok(result)
    trained = read_flags(model_dir)
    assert trained["dataset"] == str(tmp_path / "pets")
    assert trained["binarize"] == "dynamic"  # auto, resolved for the Bernoulli likelihood
    assert os.path.isfile(model_dir / "model.keras")
    import keras

    loaded = keras.saving.load_model(model_dir / "model.keras")  # keras_vae is imported: the VAE class is known
    assert loaded.num_classes == 3  # one per class sub-folder


def test_train_conditional_without_labels_says_how_to_add_them(tmp_path):
    write_flat_folder(tmp_path / "flat")
    result = run_app("train", f"--dataset={tmp_path / 'flat'}", "--conditional", *TINY,
                     f"--model_dir={tmp_path / 'run'}", f"--export_dir={tmp_path / 'export'}")
    assert_one_line_error(result, "train: error: --conditional needs class labels",
                          f"the images in {tmp_path / 'flat'} have none (put them in one sub-folder per class)")
    assert sorted(os.listdir(tmp_path)) == ["flat"]


# ------------------------------------------------------------------ README
def _readme_section(title):
    text = README.read_text()
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start:end if end >= 0 else None]


def test_readme_own_data_section_runs_as_written(tmp_path):
    section = _readme_section("Your own data")
    shell = re.findall(r"```sh\n(.*?)```", section, re.S)[0].replace("\\\n", " ")
    commands = [shlex.split(line) for line in shell.splitlines() if line.strip()]
    python = re.findall(r"```python\n(.*?)```", section, re.S)[0]
    assert [command[:3] for command in commands] == [["python", "-m", "apps.train"]] * 2

    # The data the section names: a folder of PNGs in class sub-folders, and an .npz with labels.
    write_class_folder(tmp_path / "path" / "to" / "folder", per_class=20, size=(14, 14))
    rng = np.random.default_rng(8)
    np.savez(tmp_path / "path" / "to" / "images.npz", x_train=_pixels(rng, (50, 8, 8)), y_train=np.arange(50) % 3,
             x_test=_pixels(rng, (10, 8, 8)), y_test=np.arange(10) % 3)

    # The Python block, in the folder that holds path/to/.
    result = subprocess.run([sys.executable, "-c", python], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.splitlines() == ["(8, 8, 1) 45 5 10 3", str(CLASSES)]

    # The commands, with the paths made absolute (the apps run from the repo) and a tiny, short run.
    def absolute(arg):
        return re.sub(r"=((path/to|runs)/)", lambda m: f"={tmp_path}/{m.group(1)}", arg)

    export_dir = tmp_path / "saved_models"
    for command in commands:
        result = run_app("train", *map(absolute, command[3:]), *TINY, f"--export_dir={export_dir}")
        assert_ok(result)
    assert read_flags(tmp_path / "runs" / "my_images")["image_size"] == "28,28"
    assert os.path.isfile(export_dir / "my_images" / "1" / "saved_model.pb")
    assert os.path.isfile(tmp_path / "runs" / "my_npz" / "model.keras")

    # apps.evaluate takes the data flags (the folder, --image_size, the resolved --binarize) from flags.cfg.
    output = tmp_path / "eval.json"
    result = run_app("evaluate", f"--model_dir={tmp_path / 'runs' / 'my_images'}", "--iw_samples=4",
                     "--bound_samples=2", f"--output_json={output}")
    assert_ok(result)
    report = json.loads(output.read_text())
    assert report["dataset"] == str(tmp_path / "path" / "to" / "folder") and report["num_examples"] == 6


def test_readme_first_python_example_binarizes():
    """The Python API example reports log-likelihoods: it loads with binarize="dynamic" and trains on fresh draws."""
    example = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)[0]
    assert 'data.load("digits", binarize="dynamic")' in example
    assert "binarize=True" in example and "model.fit(train" in example


def test_a_relative_dataset_path_is_recorded_absolute(parse_flags, tmp_path, monkeypatch):
    """flags.cfg names the data by its absolute path, so apps.evaluate and apps.sample find it from any folder."""
    from absl import flags

    from apps import common

    np.save(tmp_path / "x.npy", np.full((20, 2, 2), 128, np.uint8))
    parse_flags("--model_dir=runs/unused", f"--dataset={tmp_path / 'x.npy'}", "--binarize=none")
    monkeypatch.chdir(tmp_path)
    flags.FLAGS.dataset = "x.npy"
    assert len(common.load_splits().test) == 2
    assert flags.FLAGS.dataset == str(tmp_path / "x.npy")
