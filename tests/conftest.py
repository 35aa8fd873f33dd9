"""Test configuration: quiet TensorFlow's C++ logging before TF is imported."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
