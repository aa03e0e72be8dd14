import keras
import numpy as np
import pytest
import tensorflow as tf

from layers.normalization import BatchNormalization, GroupNormalization, LayerNormalization
from tests.layer_harness import copy_weights, run_layer_contract, seeded_array

X2 = seeded_array(6, 5, scale=2.0) + 1.0
X3 = seeded_array(3, 4, 8, seed=1, scale=1.5)
X4 = seeded_array(4, 3, 3, 6, seed=2, scale=2.0) - 0.5

# Non-default weights, so that a wrong axis, a swapped gamma/beta or the
# moving statistics being ignored all show up in the comparison.
RANDOM_BN = dict(
    beta_initializer="random_normal",
    gamma_initializer=keras.initializers.RandomUniform(0.5, 1.5),
    moving_mean_initializer="random_normal",
    moving_variance_initializer=keras.initializers.RandomUniform(0.5, 2.0),
)
RANDOM_AFFINE = dict(
    beta_initializer="random_normal",
    gamma_initializer=keras.initializers.RandomUniform(0.5, 1.5),
)


def keras_reference(make_keras_layer, call_kwargs=None):
    """Reference: the Keras built-in with our layer's weights copied in."""

    def reference(layer, x):
        ref = make_keras_layer()
        ref.build(x.shape)
        copy_weights(layer, ref)
        return keras.ops.convert_to_numpy(ref(x, **(call_kwargs or {})))

    return reference


def np_normalize(x, mean, var, gamma, beta, eps):
    """The textbook formula: gamma * (x - mu) / sigma + beta, sigma = sqrt(var + eps)."""
    return gamma * (x - mean) / np.sqrt(var + eps) + beta


def to_np(x):
    return keras.ops.convert_to_numpy(x)


# ---------------------------------------------------------------- BatchNormalization


@pytest.mark.parametrize(
    "x, kwargs",
    [
        (X2, dict(momentum=0.9, epsilon=1e-3)),
        (X4, dict(momentum=0.8, epsilon=1e-2)),
        (X4, dict(axis=1, epsilon=1e-3)),
        (X4, dict(center=False, epsilon=1e-3)),
        (X2, dict(scale=False, epsilon=1e-3)),
    ],
    ids=["rank2", "rank4", "rank4-axis1", "no-center", "no-scale"],
)
def test_batch_norm_inference_contract_matches_keras(x, kwargs):
    def make():
        return BatchNormalization(**kwargs, **RANDOM_BN)

    run_layer_contract(
        make,
        x,
        expected_output_shape=x.shape,
        reference=keras_reference(lambda: keras.layers.BatchNormalization(**kwargs)),
        reference_uses_layer=True,
    )


def test_batch_norm_weight_names_order_and_count_equal_keras():
    ours, ref = BatchNormalization(), keras.layers.BatchNormalization()
    ours.build(X4.shape)
    ref.build(X4.shape)
    assert [w.name for w in ours.weights] == [w.name for w in ref.weights] == [
        "gamma",
        "beta",
        "moving_mean",
        "moving_variance",
    ]
    assert [w.trainable for w in ours.weights] == [w.trainable for w in ref.weights]
    assert [w.shape for w in ours.weights] == [w.shape for w in ref.weights] == [(6,)] * 4
    # keras -> ours copies by position.
    ref.set_weights([seeded_array(6, seed=i) for i in range(4)])
    ours.set_weights(ref.get_weights())
    for a, b in zip(ours.get_weights(), ref.get_weights()):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("x, axis", [(X2, -1), (X4, -1), (X4, 1)], ids=["rank2", "rank4", "axis1"])
def test_batch_norm_training_matches_keras_and_formula(x, axis):
    ours = BatchNormalization(axis=axis, momentum=0.7, **RANDOM_BN)
    ref = keras.layers.BatchNormalization(axis=axis, momentum=0.7)
    ours.build(x.shape)
    ref.build(x.shape)
    copy_weights(ours, ref)
    gamma, beta, moving_mean, moving_var = ours.get_weights()

    out = to_np(ours(x, training=True))
    np.testing.assert_allclose(out, to_np(ref(x, training=True)), atol=1e-5, rtol=1e-5)

    # Textbook formula with the batch's own (biased) statistics per channel.
    reduce = tuple(a for a in range(x.ndim) if a != axis % x.ndim)
    bshape = [1] * x.ndim
    bshape[axis] = x.shape[axis]
    mu, var = x.mean(axis=reduce), x.var(axis=reduce)
    expected = np_normalize(
        x, mu.reshape(bshape), var.reshape(bshape), gamma.reshape(bshape), beta.reshape(bshape), 1e-3
    )
    np.testing.assert_allclose(out, expected, atol=1e-5, rtol=1e-5)

    # Moving statistics: moving = momentum * moving + (1 - momentum) * batch_stat.
    np.testing.assert_allclose(ours.moving_mean.numpy(), 0.7 * moving_mean + 0.3 * mu, atol=1e-5)
    np.testing.assert_allclose(ours.moving_variance.numpy(), 0.7 * moving_var + 0.3 * var, atol=1e-5)

    # A second training call on other data, then inference: still equal to Keras.
    x_next = x * 0.5 + 2.0
    np.testing.assert_allclose(
        to_np(ours(x_next, training=True)), to_np(ref(x_next, training=True)), atol=1e-5, rtol=1e-5
    )
    for a, b in zip(ours.get_weights(), ref.get_weights()):
        np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(
        to_np(ours(x, training=False)), to_np(ref(x, training=False)), atol=1e-5, rtol=1e-5
    )


def test_batch_norm_inference_uses_moving_statistics_formula():
    layer = BatchNormalization(epsilon=1e-2, **RANDOM_BN)
    out = to_np(layer(X4))  # training defaults to inference mode
    gamma, beta, mean, var = layer.get_weights()
    np.testing.assert_allclose(out, np_normalize(X4, mean, var, gamma, beta, 1e-2), atol=1e-5, rtol=1e-5)
    # Inference does not touch the moving statistics.
    np.testing.assert_array_equal(layer.moving_mean.numpy(), mean)


def test_batch_norm_gradients_match_keras_in_training_mode():
    ours = BatchNormalization(**RANDOM_BN)
    ref = keras.layers.BatchNormalization()
    ours.build(X4.shape)
    ref.build(X4.shape)
    copy_weights(ours, ref)
    x = tf.constant(X4)
    proj = tf.constant(seeded_array(*X4.shape, seed=9))
    grads = []
    for layer in (ours, ref):
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = tf.reduce_sum(layer(x, training=True) * proj)
        grads.append(tape.gradient(loss, [x] + layer.trainable_weights))
    for g_ours, g_ref in zip(*grads):
        np.testing.assert_allclose(g_ours.numpy(), g_ref.numpy(), atol=1e-4, rtol=1e-4)


def test_batch_norm_fit_updates_moving_statistics_like_keras():
    x = seeded_array(32, 4, 4, 3, seed=5, scale=3.0) + 2.0
    y = seeded_array(32, 4, 4, 3, seed=6)

    def fitted(bn):
        model = keras.Sequential([keras.Input((4, 4, 3)), bn])
        model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
        model.fit(x, y, batch_size=8, epochs=2, shuffle=False, verbose=0)
        return bn

    ours = fitted(BatchNormalization(momentum=0.9))
    ref = fitted(keras.layers.BatchNormalization(momentum=0.9))
    # The moving statistics moved from their (0, 1) start towards the data's.
    assert np.all(ours.moving_mean.numpy() > 0.5)
    for a, b in zip(ours.get_weights(), ref.get_weights()):
        np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-5)


def test_frozen_batch_norm_runs_in_inference_mode_like_keras():
    ours = BatchNormalization(**RANDOM_BN)
    ours.build(X4.shape)
    ref = keras.layers.BatchNormalization()
    ref.build(X4.shape)
    copy_weights(ours, ref)
    ours.trainable = ref.trainable = False
    before = ours.get_weights()
    out = to_np(ours(X4, training=True))
    np.testing.assert_allclose(out, to_np(ref(X4, training=True)), atol=1e-5)
    np.testing.assert_allclose(out, to_np(ours(X4, training=False)), atol=1e-6)
    for a, b in zip(before, ours.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_batch_norm_mixed_precision_matches_keras():
    ours = BatchNormalization(dtype="mixed_float16", **RANDOM_BN)
    ref = keras.layers.BatchNormalization(dtype="mixed_float16")
    x = X4.astype("float16")
    ours.build(x.shape)
    ref.build(x.shape)
    copy_weights(ours, ref)
    for training in (True, False):
        out = ours(x, training=training)
        assert keras.backend.standardize_dtype(out.dtype) == "float16"
        np.testing.assert_allclose(
            to_np(out).astype("float32"), to_np(ref(x, training=training)).astype("float32"), atol=1e-2
        )
    assert ours.moving_mean.dtype == "float32"


def test_batch_norm_errors():
    with pytest.raises(ValueError, match=r"BatchNormalization expected inputs of rank >= 2 .*got shape \(5,\)"):
        BatchNormalization()(np.ones((5,), "float32"))
    with pytest.raises(ValueError, match="not the batch axis 0"):
        BatchNormalization(axis=0)(X2)
    with pytest.raises(ValueError, match=r"axis=3 is out of range for inputs of rank 2"):
        BatchNormalization(axis=3)(X2)
    with pytest.raises(ValueError, match=r"momentum must be in \[0, 1\]"):
        BatchNormalization(momentum=1.5)
    with pytest.raises(ValueError, match="epsilon must be > 0"):
        BatchNormalization(epsilon=0.0)
    layer = BatchNormalization()
    layer(X2)
    with pytest.raises(ValueError, match=r"built for 5 channels on axis -1, got shape \(6, 4\)"):
        layer(X2[:, :4])


# ---------------------------------------------------------------- LayerNormalization


@pytest.mark.parametrize(
    "x, axis",
    [(X2, -1), (X3, -1), (X4, [2, 3]), (X4, [1, 3])],
    ids=["rank2", "rank3", "rank4-last-two", "rank4-non-contiguous"],
)
def test_layer_norm_contract_matches_keras(x, axis):
    run_layer_contract(
        lambda: LayerNormalization(axis=axis, epsilon=1e-3, **RANDOM_AFFINE),
        x,
        expected_output_shape=x.shape,
        reference=keras_reference(lambda: keras.layers.LayerNormalization(axis=axis, epsilon=1e-3)),
        reference_uses_layer=True,
    )


def test_layer_norm_numpy_formula_per_sample():
    layer = LayerNormalization(epsilon=1e-5, **RANDOM_AFFINE)
    out = to_np(layer(X3))
    gamma, beta = layer.get_weights()
    mean, var = X3.mean(axis=-1, keepdims=True), X3.var(axis=-1, keepdims=True)
    np.testing.assert_allclose(out, np_normalize(X3, mean, var, gamma, beta, 1e-5), atol=1e-5, rtol=1e-5)
    # Each sample is normalized on its own: the batch does not change it.
    np.testing.assert_allclose(to_np(layer(X3[:1])), out[:1], atol=1e-6)


def test_layer_norm_without_center_and_scale_has_no_weights():
    layer = LayerNormalization(center=False, scale=False)
    out = to_np(layer(X3))
    assert layer.weights == []
    ref = keras.layers.LayerNormalization(center=False, scale=False)
    np.testing.assert_allclose(out, to_np(ref(X3)), atol=1e-5)


def test_layer_norm_errors():
    with pytest.raises(ValueError, match=r"LayerNormalization expected inputs of rank >= 2"):
        LayerNormalization()(np.ones((5,), "float32"))
    with pytest.raises(ValueError, match="cannot include the batch axis 0"):
        LayerNormalization(axis=[0, 1])(X2)
    with pytest.raises(ValueError, match="axis must be an int or a list of ints"):
        LayerNormalization(axis="last")
    layer = LayerNormalization()
    layer(X3)
    with pytest.raises(ValueError, match=r"built for sizes \(8,\)"):
        layer(X3[..., :4])


# ---------------------------------------------------------------- GroupNormalization


@pytest.mark.parametrize(
    "x, groups, axis",
    [(X4, 3, -1), (X4, 1, -1), (X4, 6, -1), (X3, 2, -1), (X4, 3, 1)],
    ids=["rank4-g3", "g1", "instance", "rank3-g2", "channels-first"],
)
def test_group_norm_contract_matches_keras(x, groups, axis):
    run_layer_contract(
        lambda: GroupNormalization(groups=groups, axis=axis, **RANDOM_AFFINE),
        x,
        expected_output_shape=x.shape,
        reference=keras_reference(lambda: keras.layers.GroupNormalization(groups=groups, axis=axis)),
        reference_uses_layer=True,
    )


def test_group_norm_numpy_formula_per_sample_and_group():
    layer = GroupNormalization(groups=2, epsilon=1e-4, **RANDOM_AFFINE)
    out = to_np(layer(X4))
    gamma, beta = layer.get_weights()
    expected = np.empty_like(X4)
    for b in range(X4.shape[0]):
        for g in range(2):
            channels = slice(3 * g, 3 * g + 3)  # 6 channels in 2 groups of 3 consecutive
            block = X4[b, :, :, channels]
            expected[b, :, :, channels] = np_normalize(
                block, block.mean(), block.var(), gamma[channels], beta[channels], 1e-4
            )
    np.testing.assert_allclose(out, expected, atol=1e-5, rtol=1e-5)


def test_group_norm_with_unknown_spatial_size_in_a_model():
    layer = GroupNormalization(groups=3, **RANDOM_AFFINE)
    inputs = keras.Input((None, None, 6))
    model = keras.Model(inputs, layer(inputs))
    ref = keras.layers.GroupNormalization(groups=3)
    ref.build(X4.shape)
    copy_weights(layer, ref)
    np.testing.assert_allclose(to_np(model(X4)), to_np(ref(X4)), atol=1e-5)


def test_group_norm_errors():
    with pytest.raises(ValueError, match="groups=4 must divide the 6 channels"):
        GroupNormalization(groups=4)(X4)
    with pytest.raises(ValueError, match="groups must be a positive integer"):
        GroupNormalization(groups=0)
    with pytest.raises(ValueError, match=r"GroupNormalization expected inputs of rank >= 2"):
        GroupNormalization(groups=1)(np.ones((5,), "float32"))
    with pytest.raises(ValueError, match="not the batch axis 0"):
        GroupNormalization(groups=1, axis=0)(X2)


def test_batch_norm_mask_leaves_padding_out_of_statistics_like_keras():
    tokens = np.array([[1, 2, 0, 0], [3, 4, 5, 0], [6, 0, 0, 0]])
    inputs = keras.Input((4,), dtype="int32")
    embedded = keras.layers.Embedding(7, 3, mask_zero=True, embeddings_initializer="random_normal")(inputs)
    ours, ref = BatchNormalization(momentum=0.5), keras.layers.BatchNormalization(momentum=0.5)
    model = keras.Model(inputs, [ours(embedded), ref(embedded)])
    out, expected = (to_np(o) for o in model(tokens, training=True))
    np.testing.assert_allclose(out, expected, atol=1e-5)
    for a, b in zip(ours.get_weights(), ref.get_weights()):
        np.testing.assert_allclose(a, b, atol=1e-5)
    # The statistics are those of the 6 real tokens only.
    vectors = to_np(model.layers[1](tokens))[tokens != 0]
    np.testing.assert_allclose(ours.moving_mean.numpy(), 0.5 * vectors.mean(axis=0), atol=1e-5)
    np.testing.assert_allclose(
        ours.moving_variance.numpy(), 0.5 + 0.5 * vectors.var(axis=0), atol=1e-5
    )
    with pytest.raises(ValueError, match="takes a mask of shape"):
        BatchNormalization(axis=1)(X3, mask=np.ones((3, 4), bool))


def test_group_norm_with_a_step_mask_equals_the_unpadded_sequence_and_refuses_other_ranks():
    layer = GroupNormalization(groups=2, epsilon=1e-4, **RANDOM_AFFINE)
    x = np.random.default_rng(0).normal(size=(2, 7, 6)).astype("float32")
    lengths = [7, 4]
    mask = np.arange(7)[None, :] < np.array(lengths)[:, None]
    padded = x.copy()
    padded[1, 4:] = 100.0  # whatever the padding holds
    out = to_np(layer(padded, mask=mask))
    for row, n in enumerate(lengths):
        np.testing.assert_allclose(out[row, :n], to_np(layer(x[row : row + 1, :n]))[0], atol=1e-5)
    with pytest.raises(ValueError, match=r"mask \(batch, steps\) for inputs \(batch, steps, channels\) only"):
        layer(X4, mask=np.ones(X4.shape[:2], bool))
