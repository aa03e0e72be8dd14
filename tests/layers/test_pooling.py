import itertools

import keras
import numpy as np
import pytest
import tensorflow as tf

from layers.pooling import (
    AveragePooling1D,
    AveragePooling2D,
    GlobalAveragePooling2D,
    GlobalMaxPooling2D,
    MaxPooling1D,
    MaxPooling2D,
)
from tests.layer_harness import run_layer_contract, seeded_array

X1 = seeded_array(2, 11, 3)  # (batch, length, channels)
X2 = seeded_array(2, 9, 8, 3, seed=1)  # (batch, height, width, channels)

OURS_TO_KERAS = {
    MaxPooling1D: keras.layers.MaxPooling1D,
    AveragePooling1D: keras.layers.AveragePooling1D,
    MaxPooling2D: keras.layers.MaxPooling2D,
    AveragePooling2D: keras.layers.AveragePooling2D,
}


def to_np(x):
    return keras.ops.convert_to_numpy(x)


def np_pool(x, reduce, pool_size, strides, padding):
    """Each window's max or mean, from the definition (channels_last, any spatial rank).

    For ``padding="same"`` the output has ``ceil(n / s)`` positions per axis and
    the input is padded by ``max((out - 1) * s + k - n, 0)`` positions, the
    smaller half before; padded positions are left out of the window.
    """
    spatial = x.shape[1:-1]
    if padding == "valid":
        out = [(n - k) // s + 1 for n, k, s in zip(spatial, pool_size, strides)]
        before = [0] * len(spatial)
    else:
        out = [-(-n // s) for n, s in zip(spatial, strides)]
        before = [max((o - 1) * s + k - n, 0) // 2 for o, n, k, s in zip(out, spatial, pool_size, strides)]
    result = np.empty((x.shape[0], *out, x.shape[-1]), x.dtype)
    for index in itertools.product(*[range(o) for o in out]):
        window = tuple(
            slice(max(i * s - b, 0), min(i * s - b + k, n))
            for i, s, b, k, n in zip(index, strides, before, pool_size, spatial)
        )
        values = x[(slice(None), *window, slice(None))]
        axes = tuple(range(1, 1 + len(spatial)))
        result[(slice(None), *index, slice(None))] = (
            values.max(axis=axes) if reduce == "max" else values.mean(axis=axes)
        )
    return result


CASES_2D = [
    (dict(pool_size=2), "valid"),
    (dict(pool_size=3, strides=2), "valid"),  # overlapping: strided pooling
    (dict(pool_size=(2, 3), strides=(3, 1)), "valid"),
    (dict(pool_size=3, strides=2), "same"),
    (dict(pool_size=(3, 2), strides=(1, 3)), "same"),
]
IDS_2D = ["2x2", "3x3-stride2", "2x3-stride3x1", "same-3x3-stride2", "same-3x2-stride1x3"]


@pytest.mark.parametrize("cls", [MaxPooling2D, AveragePooling2D], ids=["max", "average"])
@pytest.mark.parametrize("kwargs, padding", CASES_2D, ids=IDS_2D)
def test_pooling_2d_contract_matches_keras_and_numpy_windows(cls, kwargs, padding):
    keras_layer = OURS_TO_KERAS[cls](padding=padding, **kwargs)
    report = run_layer_contract(
        lambda: cls(padding=padding, **kwargs),
        X2,
        expected_output_shape=keras_layer.compute_output_shape(X2.shape),
        reference=lambda x: to_np(keras_layer(x)),
        # Export once per layer class; the other cases check the same graph.
        check_saved_model=kwargs == dict(pool_size=3, strides=2) and padding == "same",
    )
    layer = report.layer
    reduce = "max" if cls is MaxPooling2D else "average"
    np.testing.assert_allclose(
        report.outputs, np_pool(X2, reduce, layer.pool_size, layer.strides, padding), atol=1e-6
    )


@pytest.mark.parametrize("cls", [MaxPooling1D, AveragePooling1D], ids=["max", "average"])
@pytest.mark.parametrize(
    "kwargs, padding",
    [(dict(pool_size=2), "valid"), (dict(pool_size=4, strides=3), "valid"), (dict(pool_size=3, strides=2), "same")],
    ids=["2", "4-stride3", "same-3-stride2"],
)
def test_pooling_1d_contract_matches_keras_and_numpy_windows(cls, kwargs, padding):
    keras_layer = OURS_TO_KERAS[cls](padding=padding, **kwargs)
    report = run_layer_contract(
        lambda: cls(padding=padding, **kwargs),
        X1,
        expected_output_shape=keras_layer.compute_output_shape(X1.shape),
        reference=lambda x: to_np(keras_layer(x)),
        check_saved_model=padding == "same",
    )
    layer = report.layer
    reduce = "max" if cls is MaxPooling1D else "average"
    np.testing.assert_allclose(
        report.outputs, np_pool(X1, reduce, layer.pool_size, layer.strides, padding), atol=1e-6
    )


def test_pooling_worked_example():
    x = np.arange(16, dtype="float32").reshape(1, 4, 4, 1)
    np.testing.assert_array_equal(to_np(MaxPooling2D(2)(x))[0, ..., 0], [[5, 7], [13, 15]])
    np.testing.assert_array_equal(to_np(AveragePooling2D(2)(x))[0, ..., 0], [[2.5, 4.5], [10.5, 12.5]])
    # Strided pooling: 2x2 windows every step of 1 overlap.
    np.testing.assert_array_equal(
        to_np(MaxPooling2D(2, strides=1)(x))[0, ..., 0], [[5, 6, 7], [9, 10, 11], [13, 14, 15]]
    )


def test_strides_default_to_pool_size_and_config_round_trips():
    layer = MaxPooling2D((2, 3))
    assert layer.strides == (2, 3)
    assert layer(X2).shape == (2, 4, 2, 3)
    config = layer.get_config()
    assert (config["pool_size"], config["strides"], config["padding"]) == ((2, 3), (2, 3), "valid")
    assert MaxPooling2D.from_config(config).get_config() == config


def test_max_pooling_gradient_goes_to_each_window_maximum_like_keras():
    x = tf.constant(X2)
    grads = []
    for layer in (MaxPooling2D(3, strides=2), keras.layers.MaxPooling2D(3, strides=2)):
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = tf.reduce_sum(layer(x) * tf.constant(seeded_array(2, 4, 3, 3, seed=4)))
        grads.append(tape.gradient(loss, x).numpy())
    np.testing.assert_allclose(grads[0], grads[1], atol=1e-6)
    assert np.count_nonzero(grads[0]) <= 2 * 4 * 3 * 3  # at most one input per output


# ---------------------------------------------------------------- global pooling


@pytest.mark.parametrize(
    "cls, keras_cls, np_reduce",
    [
        (GlobalAveragePooling2D, keras.layers.GlobalAveragePooling2D, np.mean),
        (GlobalMaxPooling2D, keras.layers.GlobalMaxPooling2D, np.max),
    ],
    ids=["average", "max"],
)
@pytest.mark.parametrize("keepdims", [False, True], ids=["flat", "keepdims"])
def test_global_pooling_contract_matches_keras_and_numpy(cls, keras_cls, np_reduce, keepdims):
    report = run_layer_contract(
        lambda: cls(keepdims=keepdims),
        X2,
        expected_output_shape=(2, 1, 1, 3) if keepdims else (2, 3),
        reference=lambda x: to_np(keras_cls(keepdims=keepdims)(x)),
        check_saved_model=not keepdims,
    )
    np.testing.assert_allclose(report.outputs, np_reduce(X2, axis=(1, 2), keepdims=keepdims), atol=1e-6)


def test_global_pooling_accepts_unknown_spatial_size():
    inputs = keras.Input((None, None, 3))
    model = keras.Model(inputs, GlobalAveragePooling2D()(inputs))
    assert model.output_shape == (None, 3)
    np.testing.assert_allclose(to_np(model(X2)), X2.mean(axis=(1, 2)), atol=1e-6)


# ---------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "layer, x, message",
    [
        (MaxPooling2D(), X1, r"MaxPooling2D expected inputs of rank 4 \(batch, height, width, channels\), got shape \(2, 11, 3\)"),
        (AveragePooling1D(), X2, r"AveragePooling1D expected inputs of rank 3 \(batch, length, channels\), got shape \(2, 9, 8, 3\)"),
        (GlobalMaxPooling2D(), X1, r"GlobalMaxPooling2D expected inputs of rank 4"),
        (MaxPooling2D(10), X2, r"padding='valid' needs every spatial size >= pool_size \(10, 10\)"),
    ],
    ids=["max2d-rank3", "avg1d-rank4", "global-rank3", "window-too-large"],
)
def test_pooling_rejects_bad_inputs(layer, x, message):
    with pytest.raises(ValueError, match=message):
        layer(x)


def test_built_pooling_rejects_wrong_rank():
    layer = AveragePooling2D()
    layer(X2)
    with pytest.raises(ValueError, match="AveragePooling2D expected inputs of rank 4"):
        layer(X1)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(padding="causal"), r"MaxPooling2D padding must be one of \['same', 'valid'\]"),
        (dict(pool_size=(2, 2, 2)), "MaxPooling2D pool_size must be an int or a tuple of 2 ints"),
        (dict(strides=0), "MaxPooling2D strides must be a positive integer"),
    ],
    ids=["padding", "pool-size", "strides"],
)
def test_pooling_rejects_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        MaxPooling2D(**kwargs)
