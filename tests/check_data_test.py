"""`VAE.check_data`: every finite array of the model's shape in the likelihood's support passes;
anything else is a ValueError saying what was expected and what was received."""

import re

import hypothesis
import hypothesis.extra.numpy as hnp
import hypothesis.strategies as st
import numpy as np
import pytest
import tensorflow as tf

import keras_vae

EVENT_SHAPE = (4, 3, 1)
SHAPE_ERROR = "Expected x of shape (batch, 4, 3, 1). Received shape "
_PROPERTIES = hypothesis.settings(max_examples=50, deadline=None, derandomize=True)
_FLOATS = (np.float16, np.float32, np.float64)


@pytest.fixture(scope="module")
def model():
    return keras_vae.mlp_vae(EVENT_SHAPE, latent_dim=2, hidden_units=(8,))  # Bernoulli: x in [0, 1]


def _batches(dtype, elements, min_batch=0):
    return st.integers(min_batch, 4).flatmap(lambda n: hnp.arrays(dtype, (n,) + EVENT_SHAPE, elements=elements))


def _in_unit_interval():
    """Arrays of the model's shape with values in [0, 1]: floats of every width, or 0/1 integers."""
    floats = st.sampled_from(_FLOATS).flatmap(
        lambda dtype: _batches(dtype, st.floats(0, 1, width=8 * np.dtype(dtype).itemsize)))
    integers = st.sampled_from((np.uint8, np.int32, np.int64)).flatmap(lambda dtype: _batches(dtype, st.integers(0, 1)))
    return st.one_of(floats, integers)


def _maybe_tensor(x, as_tensor):
    return tf.constant(x) if as_tensor else x


@_PROPERTIES
@hypothesis.given(x=_in_unit_interval(), as_tensor=st.booleans())
def test_check_data_basics(model, x, as_tensor):
    assert model.check_data(_maybe_tensor(x, as_tensor)) is None


@_PROPERTIES
@hypothesis.given(shape=hnp.array_shapes(min_dims=0, max_dims=5, min_side=0, max_side=5), as_tensor=st.booleans())
def test_check_data_shape_errors(model, shape, as_tensor):
    hypothesis.assume(len(shape) != len(EVENT_SHAPE) + 1 or shape[1:] != EVENT_SHAPE)
    with pytest.raises(ValueError, match=re.escape(f"{SHAPE_ERROR}{shape}")):
        model.check_data(_maybe_tensor(np.full(shape, 0.5, np.float32), as_tensor))


@_PROPERTIES
@hypothesis.given(x=st.sampled_from(_FLOATS).flatmap(lambda dtype: _batches(dtype, st.floats(0, 1, width=16), 1)),
                  bad=st.lists(st.tuples(st.integers(0, 10**6), st.sampled_from([np.nan, np.inf, -np.inf])),
                               min_size=1, max_size=5))
def test_check_data_non_finite_errors(model, x, bad):
    for position, value in bad:
        x.flat[position % x.size] = value
    count = int(np.sum(~np.isfinite(x)))
    with pytest.raises(ValueError, match=re.escape(f"Expected finite values; data has {count} NaN or inf entries")):
        model.check_data(x)


@_PROPERTIES
@hypothesis.given(x=st.sampled_from(_FLOATS[1:]).flatmap(lambda dtype: _batches(dtype, st.floats(0, 1, width=32), 1)),
                  position=st.integers(0, 10**6),
                  value=st.one_of(st.floats(-1e30, -1e-3), st.floats(1.001, 1e30), st.integers(2, 255)))
def test_check_data_out_of_range_errors(model, x, position, value):
    x.flat[position % x.size] = value
    with pytest.raises(ValueError, match=r"BernoulliLikelihood expects values in \[0\.0, 1\.0\]\. "
                                         r"Received values in \[\S+, \S+\]$"):
        model.check_data(x)


@pytest.mark.parametrize("x", [
    pytest.param(np.ones((2,) + EVENT_SHAPE, bool), id="bool"),
    pytest.param(np.full((2,) + EVENT_SHAPE, "0.5"), id="str"),
    pytest.param(np.full((2,) + EVENT_SHAPE, b"1"), id="bytes"),
    pytest.param(np.full((2,) + EVENT_SHAPE, 0.5, object), id="object"),
    pytest.param(np.zeros((2,) + EVENT_SHAPE, "datetime64[s]"), id="datetime64"),
    pytest.param(np.zeros((2,) + EVENT_SHAPE, [("value", "f4")]), id="structured"),
    pytest.param(tf.fill((2,) + EVENT_SHAPE, "a"), id="string_tensor"),
    pytest.param(tf.ones((2,) + EVENT_SHAPE, tf.bool), id="bool_tensor"),
    pytest.param(np.zeros((2,) + EVENT_SHAPE, "timedelta64[s]"), id="timedelta64"),
    pytest.param(np.full((2,) + EVENT_SHAPE, 0.5 + 0.5j), id="complex"),
    pytest.param(tf.complex(tf.ones((2,) + EVENT_SHAPE), 0.0), id="complex_tensor"),
])
def test_check_data_dtype_errors(model, x):
    with pytest.raises(ValueError, match="Expected numeric data. Received dtype "):
        model.check_data(x)


def test_check_data_accepts_bfloat16(model):
    model.check_data(tf.cast(tf.fill((2,) + EVENT_SHAPE, 0.5), tf.bfloat16))


def test_check_data_checks_python_lists(model):
    model.check_data(np.full((2,) + EVENT_SHAPE, 0.5).tolist())
    with pytest.raises(ValueError, match="Expected x of shape"):
        model.check_data([[0.5, 0.5]])
