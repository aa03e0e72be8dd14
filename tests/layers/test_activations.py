import keras
import numpy as np
import pytest

from layers.activations import LeakyReLU, ReLU, Sigmoid, Swish, Tanh, get_activation
from tests.layer_harness import run_layer_contract, seeded_array

X = seeded_array(4, 6, scale=3.0)


def np_sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


@pytest.mark.parametrize(
    "make_layer, numpy_formula, keras_builtin",
    [
        (Sigmoid, np_sigmoid, keras.activations.sigmoid),
        (Tanh, lambda x: (np.exp(x) - np.exp(-x)) / (np.exp(x) + np.exp(-x)), keras.activations.tanh),
        (ReLU, lambda x: np.maximum(0.0, x), keras.activations.relu),
        (
            lambda: LeakyReLU(alpha=0.2),
            lambda x: np.maximum(0.2 * x, x),
            lambda x: keras.activations.leaky_relu(x, negative_slope=0.2),
        ),
        (lambda: Swish(beta=1.0), lambda x: x * np_sigmoid(x), keras.activations.silu),
    ],
    ids=["sigmoid", "tanh", "relu", "leaky_relu", "swish"],
)
def test_activation_contract_against_formula_and_keras(make_layer, numpy_formula, keras_builtin):
    report = run_layer_contract(
        make_layer, X, expected_output_shape=X.shape, reference=numpy_formula, check_gradients=False
    )
    np.testing.assert_allclose(report.outputs, keras.ops.convert_to_numpy(keras_builtin(X)), atol=1e-6)


def test_swish_learnable_beta_contract_and_gradient():
    run_layer_contract(
        lambda: Swish(beta=1.5, trainable_beta=True),
        X,
        expected_output_shape=X.shape,
        reference=lambda x: x * np_sigmoid(1.5 * x),
    )


def test_swish_learnable_beta_trains_toward_target():
    # Target generated with beta=3: fitting a learnable beta from 1 must move it there.
    x = seeded_array(256, 1, seed=3, scale=2.0)
    y = x * np_sigmoid(3.0 * x)
    model = keras.Sequential([keras.Input((1,)), Swish(beta=1.0, trainable_beta=True)])
    model.compile(optimizer=keras.optimizers.Adam(0.1), loss="mse")
    model.fit(x, y, epochs=200, batch_size=256, verbose=0)
    beta = float(model.layers[0].beta.numpy())
    assert abs(beta - 3.0) < 0.1, beta


def test_tanh_is_stable_for_large_inputs():
    out = keras.ops.convert_to_numpy(Tanh()(np.array([[-200.0, 200.0]], "float32")))
    np.testing.assert_allclose(out, [[-1.0, 1.0]])


def test_leaky_relu_rejects_alpha_at_or_above_one():
    with pytest.raises(ValueError, match="alpha < 1"):
        LeakyReLU(alpha=1.5)


def test_get_activation_unknown_name_lists_choices():
    with pytest.raises(ValueError, match="choose one of"):
        get_activation("gelu_typo")
    assert isinstance(get_activation("swish", beta=2.0), Swish)
