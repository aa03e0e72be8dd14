import keras
import numpy as np
import pytest
import tensorflow as tf

from layers.optimizers import Adam
from layers.perceptron import Dense, MultilayerPerceptron, Perceptron
from tests.layer_harness import copy_weights, run_layer_contract, seeded_array

X2 = seeded_array(4, 5)
X3 = seeded_array(2, 3, 5, seed=1)


def keras_dense_reference(activation, use_bias=True):
    """Reference: keras.layers.Dense with our layer's weights copied in."""

    def reference(layer, x):
        ref = keras.layers.Dense(layer.units, activation=activation, use_bias=use_bias)
        ref.build(x.shape)
        copy_weights(layer, ref)
        return keras.ops.convert_to_numpy(ref(x))

    return reference


# ---------------------------------------------------------------- Dense


@pytest.mark.parametrize(
    "activation, use_bias, x",
    [("relu", True, X2), ("tanh", True, X3), (None, False, X3), ("sigmoid", True, X2)],
    ids=["relu-rank2", "tanh-rank3", "linear-nobias-rank3", "sigmoid-rank2"],
)
def test_dense_contract_matches_keras_dense(activation, use_bias, x):
    run_layer_contract(
        lambda: Dense(
            3, activation=activation, use_bias=use_bias, bias_initializer="random_normal"
        ),
        x,
        expected_output_shape=x.shape[:-1] + (3,),
        reference=keras_dense_reference(activation, use_bias),
        reference_uses_layer=True,
    )


def test_dense_numpy_formula_and_weight_layout():
    layer = Dense(4, activation="relu", bias_initializer="random_normal")
    out = keras.ops.convert_to_numpy(layer(X3))
    kernel, bias = layer.get_weights()
    assert kernel.shape == (5, 4) and bias.shape == (4,)
    assert [w.name for w in layer.weights] == ["kernel", "bias"]
    np.testing.assert_allclose(out, np.maximum(X3 @ kernel + bias, 0.0), atol=1e-6)


def test_dense_parameter_count_equals_keras():
    ours = keras.Sequential([keras.Input((7,)), Dense(5, activation="relu"), Dense(3)])
    ref = keras.Sequential(
        [keras.Input((7,)), keras.layers.Dense(5, "relu"), keras.layers.Dense(3)]
    )
    assert ours.count_params() == ref.count_params() == 7 * 5 + 5 + 5 * 3 + 3
    assert [w.shape for w in ours.weights] == [w.shape for w in ref.weights]


def test_dense_kernel_regularizer_matches_keras():
    ours = Dense(3, kernel_regularizer=keras.regularizers.L2(0.1))
    ours(X2)
    ref = keras.layers.Dense(3, kernel_regularizer=keras.regularizers.L2(0.1))
    ref.build(X2.shape)
    copy_weights(ours, ref)
    ref(X2)
    kernel = ours.get_weights()[0]
    assert len(ours.losses) == 1
    np.testing.assert_allclose(float(ours.losses[0]), 0.1 * np.sum(kernel**2), rtol=1e-5)
    np.testing.assert_allclose(float(ours.losses[0]), float(ref.losses[0]), rtol=1e-6)


def test_dense_rejects_rank_one_input():
    message = r"Dense expected inputs of rank >= 2 \(batch, ..., features\), got shape \(5,\)"
    with pytest.raises(ValueError, match=message):
        Dense(3)(np.ones((5,), "float32"))


def test_dense_rejects_wrong_feature_count_after_build():
    layer = Dense(3)
    layer(X2)
    with pytest.raises(ValueError, match="incompatible|expected axis"):
        layer(np.ones((2, 6), "float32"))


def test_dense_rejects_unknown_activation_and_bad_units():
    with pytest.raises(ValueError, match="choose one of"):
        Dense(3, activation="gelu_typo")
    with pytest.raises(ValueError, match="activation must be a name"):
        Dense(3, activation=keras.activations.relu)
    with pytest.raises(ValueError, match="units must be a positive integer"):
        Dense(0)


# ---------------------------------------------------------------- Perceptron


def separable_toy_set(n=40, margin=0.3, seed=0):
    """Points in [-1, 1]^2 labelled by a known line, keeping only those at distance >= margin."""
    rng = np.random.default_rng(seed)
    w_true, b_true = np.array([2.0, -1.0]), 0.25
    points = []
    while len(points) < n:
        p = rng.uniform(-1, 1, size=2)
        if abs(p @ w_true + b_true) / np.linalg.norm(w_true) >= margin:
            points.append(p)
    x = np.array(points, "float32")
    y = (x @ w_true + b_true > 0).astype("float32")
    return x, y, w_true, b_true


def test_perceptron_step_output_formula_and_contract():
    layer = Perceptron(units=2)
    layer(X2)
    rng = np.random.default_rng(3)
    kernel = rng.standard_normal((5, 2)).astype("float32")
    layer.set_weights([kernel, np.array([0.1, -0.2], "float32")])
    kernel, bias = layer.get_weights()
    expected = (X2 @ kernel + bias > 0).astype("float32")
    assert 0 < expected.sum() < expected.size  # both classes occur, so the check can fail
    built = layer

    def make_layer():
        fresh = Perceptron(units=2)
        fresh(X2)
        fresh.set_weights(built.get_weights())
        return fresh

    # The step has zero gradient, so its weights are non-trainable and the
    # harness' gradient check has nothing to visit.
    run_layer_contract(make_layer, X2, expected_output_shape=(4, 2), reference=lambda x: expected)
    assert not layer.trainable_weights


def test_perceptron_rule_converges_within_novikoff_bound():
    x, y, w_true, b_true = separable_toy_set()
    layer = Perceptron()
    history = layer.fit_rule(x, y, learning_rate=0.5, max_epochs=200)
    assert history[-1] == 0, history
    predictions = keras.ops.convert_to_numpy(layer(x))[:, 0]
    np.testing.assert_array_equal(predictions, y)

    # Novikoff: total mistakes <= (R / gamma)^2 on the augmented inputs (x, 1).
    augmented = np.hstack([x, np.ones((len(x), 1))])
    separator = np.append(w_true, b_true)
    separator /= np.linalg.norm(separator)
    gamma = np.min(np.abs(augmented @ separator))
    radius = np.max(np.linalg.norm(augmented, axis=1))
    assert sum(history) <= (radius / gamma) ** 2, (sum(history), (radius / gamma) ** 2)
    assert sum(history) > 0  # it really learned from zero weights


def test_perceptron_rule_updates_follow_formula():
    # One mistake from zero weights: w = lr * (1 - 0) * x, b = lr * (1 - 0).
    layer = Perceptron()
    x = np.array([[0.5, -2.0]], "float32")
    layer.fit_rule(x, np.array([1.0]), learning_rate=0.1, max_epochs=1)
    kernel, bias = layer.get_weights()
    np.testing.assert_allclose(kernel[:, 0], 0.1 * x[0])
    np.testing.assert_allclose(bias, [0.1])


def test_perceptron_rule_learns_and_but_not_xor():
    x = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], "float32")
    and_layer = Perceptron()
    assert and_layer.fit_rule(x, np.array([0, 0, 0, 1]))[-1] == 0
    xor_layer = Perceptron()
    # XOR is not linearly separable: the rule never has a mistake-free epoch.
    assert min(xor_layer.fit_rule(x, np.array([0, 1, 1, 0]), max_epochs=30)) > 0


def test_perceptron_errors():
    message = r"Perceptron expected inputs of rank 2 \(batch, features\), got shape \(2, 3, 5\)"
    with pytest.raises(ValueError, match=message):
        Perceptron()(X3)
    with pytest.raises(ValueError, match="0/1 targets"):
        Perceptron().fit_rule(X2, np.array([0, 1, 2, 1]))
    with pytest.raises(ValueError, match="expected targets of shape"):
        Perceptron(units=2).fit_rule(X2, np.array([0, 1, 0, 1]))


# ---------------------------------------------------------------- MultilayerPerceptron


def numpy_mlp(layer, x):
    """NumPy forward pass of the MLP formula with the model's weights (ReLU hidden, linear out)."""
    weights = layer.get_weights()
    h = x
    for kernel, bias in zip(weights[0:-2:2], weights[1:-2:2]):
        h = np.maximum(h @ kernel + bias, 0.0)
    return h @ weights[-2] + weights[-1]


@pytest.mark.parametrize("dropout", [0.0, 0.25])
def test_mlp_contract_against_numpy(dropout):
    report = run_layer_contract(
        lambda: MultilayerPerceptron(hidden_units=(6, 4), output_units=3, dropout=dropout),
        X3,
        expected_output_shape=(2, 3, 3),
        reference=numpy_mlp,
        reference_uses_layer=True,
    )
    assert len(report.layer.trainable_weights) == 6


def test_mlp_matches_keras_sequential_with_copied_weights():
    ours = MultilayerPerceptron(
        hidden_units=(6,), output_units=2, activation="tanh", output_activation="sigmoid"
    )
    ours(X2)
    ref = keras.Sequential(
        [keras.Input((5,)), keras.layers.Dense(6, "tanh"), keras.layers.Dense(2, "sigmoid")]
    )
    copy_weights(ours, ref)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(ours(X2)), keras.ops.convert_to_numpy(ref(X2)), atol=1e-6
    )


def test_mlp_backprop_matches_central_finite_differences():
    keras.utils.set_random_seed(0)
    mlp = MultilayerPerceptron(
        hidden_units=(4, 3), output_units=2, activation="tanh", dtype="float64"
    )
    x = seeded_array(5, 3, seed=4, dtype="float64")
    target = seeded_array(5, 2, seed=5, dtype="float64")
    mlp(x)
    assert all(w.dtype == "float64" for w in mlp.weights)

    def loss_fn():
        return tf.reduce_mean(tf.square(mlp(x) - target))

    with tf.GradientTape() as tape:
        loss = loss_fn()
    analytic = tape.gradient(loss, mlp.trainable_weights)

    # h ~ cbrt(float64 eps) balances the O(h^2) truncation error of central
    # differences against the O(eps / h) rounding error of the loss.
    h = 1e-5
    worst = 0.0
    for weight, grad in zip(mlp.trainable_weights, analytic):
        original = weight.numpy()
        numeric = np.zeros_like(original)
        for index in np.ndindex(original.shape):
            bumped = original.copy()
            bumped[index] += h
            weight.assign(bumped)
            up = float(loss_fn())
            bumped[index] -= 2 * h
            weight.assign(bumped)
            down = float(loss_fn())
            numeric[index] = (up - down) / (2 * h)
        weight.assign(original)
        grad = grad.numpy()
        rel = np.abs(grad - numeric) / np.maximum(np.abs(grad) + np.abs(numeric), 1e-12)
        assert np.all(rel < 1e-6), f"{weight.path}: max relative error {rel.max():.2e}"
        worst = max(worst, rel.max())
    assert worst < 1e-6


def test_mlp_overfits_xor():
    keras.utils.set_random_seed(0)
    x = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], "float32")
    y = np.array([[0], [1], [1], [0]], "float32")
    mlp = MultilayerPerceptron(
        hidden_units=(8,), output_units=1, activation="tanh", output_activation="sigmoid"
    )
    mlp.compile(optimizer=Adam(learning_rate=0.05), loss="binary_crossentropy")
    # 200 full-batch steps as one epoch of the tiled set: same updates as 200
    # epochs, without 200 rounds of per-epoch overhead.
    mlp.fit(np.tile(x, (200, 1)), np.tile(y, (200, 1)), batch_size=4, shuffle=False, verbose=0)
    probabilities = keras.ops.convert_to_numpy(mlp(x))
    np.testing.assert_array_equal(probabilities > 0.5, y.astype(bool))  # 100% accuracy
    np.testing.assert_allclose(probabilities, y, atol=0.1)


def test_mlp_errors():
    with pytest.raises(ValueError, match="dropout must be in"):
        MultilayerPerceptron(dropout=1.0)
    with pytest.raises(ValueError, match="hidden_units entry must be a positive integer"):
        MultilayerPerceptron(hidden_units=(8, 0))
    with pytest.raises(ValueError, match="choose one of"):
        MultilayerPerceptron(activation="gelu_typo")
    with pytest.raises(ValueError, match="rank >= 2"):
        MultilayerPerceptron()(np.ones((5,), "float32"))
