import keras
import numpy as np
import pytest

from layers.dropout import Dropout
from tests.layer_harness import run_layer_contract, seeded_array

X = seeded_array(4, 6, 10)


def test_dropout_contract_is_the_identity_at_inference():
    run_layer_contract(lambda: Dropout(0.3, seed=1), X, expected_output_shape=X.shape, reference=lambda x: x)


@pytest.mark.parametrize("rate", [0.1, 0.5])
@pytest.mark.parametrize("width", [64, 63])  # even and odd last axes (two uniforms per draw)
def test_training_drops_the_rate_and_rescales_the_rest(rate, width):
    x = np.ones((200, 50, width), "float32")
    y = keras.ops.convert_to_numpy(Dropout(rate, seed=7)(x, training=True))
    assert y.shape == x.shape
    dropped = np.mean(y == 0)
    # 640k Bernoulli draws: the standard error of the mean is below 1e-3.
    assert abs(dropped - rate) < 4e-3, dropped
    np.testing.assert_allclose(np.unique(y[y != 0]), [1.0 / (1.0 - rate)], rtol=1e-6)
    assert abs(y.mean() - 1.0) < 1e-2  # inverted dropout keeps the expectation


def test_masks_are_independent_across_positions_and_calls():
    layer = Dropout(0.5, seed=3)
    x = np.ones((256, 256), "float32")
    first = keras.ops.convert_to_numpy(layer(x, training=True)) == 0
    second = keras.ops.convert_to_numpy(layer(x, training=True)) == 0
    assert 0.45 < np.mean(first != second) < 0.55  # a fresh mask per call
    # The two halves of each random integer feed different elements: no correlation between
    # them (32,768 pairs: the standard error of the correlation is 0.0055; the bound is 4.5 of them).
    correlation = np.corrcoef(first[:, :128].ravel(), first[:, 128:].ravel())[0, 1]
    assert abs(correlation) < 0.025, correlation


def test_same_seed_same_mask_and_bfloat16_inputs():
    x = np.ones((8, 32), "float32")
    a = keras.ops.convert_to_numpy(Dropout(0.2, seed=11)(x, training=True))
    b = keras.ops.convert_to_numpy(Dropout(0.2, seed=11)(x, training=True))
    np.testing.assert_array_equal(a, b)
    y = Dropout(0.2, seed=11, dtype="mixed_bfloat16")(x, training=True)
    assert keras.backend.standardize_dtype(y.dtype) == "bfloat16"
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(keras.ops.cast(y, "float32")) == 0, a == 0)


def test_rate_zero_and_bad_rates():
    x = np.ones((2, 3), "float32")
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(Dropout(0.0)(x, training=True)), x)
    for bad in (1.0, -0.1, 1.5):
        with pytest.raises(ValueError, match="rate"):
            Dropout(bad)
