import keras
import numpy as np
import pytest

from layers.cnn_blocks import (
    BasicBlock,
    BottleneckBlock,
    DenseBlock,
    DenseLayer,
    TransitionLayer,
    VGGBlock,
)
from tests.layer_harness import run_layer_contract, seeded_array

EPS = 1.001e-5
TOL = dict(atol=1e-4, rtol=1e-4)


# --- NumPy references of the textbook formulas ---------------------------------------------


def np_conv_same(x, kernel, bias=None, stride=1):
    """Cross-correlation with TensorFlow's 'same' padding (extra pad after), NHWC."""
    batch, height, width, _ = x.shape
    kh, kw, _, cout = kernel.shape
    out_h, out_w = -(-height // stride), -(-width // stride)
    pad_h = max((out_h - 1) * stride + kh - height, 0)
    pad_w = max((out_w - 1) * stride + kw - width, 0)
    xp = np.pad(x, ((0, 0), (pad_h // 2, pad_h - pad_h // 2), (pad_w // 2, pad_w - pad_w // 2), (0, 0)))
    out = np.zeros((batch, out_h, out_w, cout), np.float64)
    for i in range(out_h):
        for j in range(out_w):
            patch = xp[:, i * stride : i * stride + kh, j * stride : j * stride + kw, :]
            out[:, i, j, :] = np.tensordot(patch, kernel, axes=([1, 2, 3], [0, 1, 2]))
    return out if bias is None else out + bias


def np_bn(x, bn, training=False):
    """gamma * (x - mu) / sqrt(var + eps) + beta with moving (or batch) statistics."""
    gamma, beta, moving_mean, moving_var = (w.numpy() for w in bn.weights)
    if training:
        mean, var = x.mean(axis=(0, 1, 2)), x.var(axis=(0, 1, 2))
    else:
        mean, var = moving_mean, moving_var
    return gamma * (x - mean) / np.sqrt(var + EPS) + beta


def np_pool2(x, reduce):
    b, h, w, c = x.shape
    h2, w2 = h // 2, w // 2
    return reduce(x[:, : 2 * h2, : 2 * w2].reshape(b, h2, 2, w2, 2, c), axis=(2, 4))


def relu(x):
    return np.maximum(x, 0.0)


def conv(layer, x, stride=1):
    bias = layer.bias.numpy() if getattr(layer, "bias", None) is not None else None
    return np_conv_same(x, layer.kernel.numpy(), bias, stride)


def np_basic_block(block, x, training=False):
    h = relu(np_bn(conv(block.conv1, x, block.strides), block.bn1, training))
    f = np_bn(conv(block.conv2, h), block.bn2, training)
    return relu(f + np_shortcut(block, x, training))


def np_bottleneck_block(block, x, training=False):
    h = relu(np_bn(conv(block.conv1, x, block.strides), block.bn1, training))
    h = relu(np_bn(conv(block.conv2, h), block.bn2, training))
    f = np_bn(conv(block.conv3, h), block.bn3, training)
    return relu(f + np_shortcut(block, x, training))


def np_shortcut(block, x, training=False):
    if not block.has_projection:
        return x
    return np_bn(conv(block.shortcut_conv, x, block.strides), block.shortcut_bn, training)


def np_dense_layer(layer, x):
    h = conv(layer.conv1, relu(np_bn(x, layer.bn1)))
    return np.concatenate([x, conv(layer.conv2, relu(np_bn(h, layer.bn2)))], axis=-1)


def randomized(layer, input_shape, seed=0):
    """Build ``layer`` and give every weight random values (positive variances and scales),
    so the inference-mode reference exercises gamma, beta and the moving statistics."""
    layer.build(input_shape)
    rng = np.random.default_rng(seed)
    for w in layer.weights:
        if w.name in ("gamma", "moving_variance"):
            w.assign(rng.uniform(0.5, 1.5, w.shape).astype("float32"))
        else:
            w.assign((rng.standard_normal(w.shape) * 0.3).astype("float32"))
    return layer


# --- residual blocks -------------------------------------------------------------------------

X8 = seeded_array(2, 6, 6, 8, seed=1)


@pytest.mark.parametrize(
    "strides, in_channels, filters, projects",
    [(2, 8, 4, True), (1, 4, 4, False), (1, 3, 4, True)],
    ids=["stride2_projection", "identity", "channel_projection"],
)
def test_basic_block_contract_equals_relu_of_residual_plus_shortcut(
    strides, in_channels, filters, projects
):
    x = X8[..., :in_channels]

    def make():
        return randomized(BasicBlock(filters, strides=strides, use_bias=False), x.shape)

    out_size = -(-6 // strides)
    report = run_layer_contract(
        make,
        x,
        expected_output_shape=(2, out_size, out_size, filters),
        reference=np_basic_block,
        reference_uses_layer=True,
        **TOL,
    )
    block = report.layer
    assert block.has_projection is projects
    # conv1, bn1, conv2, bn2 (+ 1x1 projection conv and its bn): kernels only (use_bias=False).
    expected_weights = 2 + 4 + 4 + (1 + 4 if projects else 0)
    assert len(block.weights) == expected_weights


def test_basic_block_training_mode_uses_batch_statistics():
    block = randomized(BasicBlock(4, strides=2, use_bias=False), X8.shape)
    out = keras.ops.convert_to_numpy(block(X8, training=True))
    np.testing.assert_allclose(out, np_basic_block(block, X8, training=True), **TOL)


def test_bottleneck_block_contract_with_projection_and_bias():
    x = X8

    def make():
        return randomized(BottleneckBlock(3, strides=2), x.shape, seed=2)

    report = run_layer_contract(
        make,
        x,
        expected_output_shape=(2, 3, 3, 12),
        reference=np_bottleneck_block,
        reference_uses_layer=True,
        # A conv bias followed by a training-mode batch norm gets an exactly-zero gradient
        # (the batch mean subtracts it), which is why the paper has none; gradients are
        # checked on the bias-free block below.
        check_gradients=False,
        **TOL,
    )
    assert report.layer.has_projection


def test_bottleneck_block_identity_contract_and_gradients():
    x = seeded_array(2, 5, 5, 8, seed=3)

    def make():
        return randomized(BottleneckBlock(2, expansion=4, use_bias=False), x.shape, seed=3)

    report = run_layer_contract(
        make,
        x,
        expected_output_shape=(2, 5, 5, 8),
        reference=np_bottleneck_block,
        reference_uses_layer=True,
        **TOL,
    )
    assert not report.layer.has_projection


def test_residual_block_output_is_relu_of_sublayers_sum():
    # The same identity from the block's own parts: y = ReLU(F(x) + shortcut(x)).
    block = randomized(BasicBlock(4, strides=2), X8.shape, seed=5)
    y = keras.ops.convert_to_numpy(block(X8))
    f = keras.ops.convert_to_numpy(block.residual(X8))
    s = keras.ops.convert_to_numpy(block.shortcut(X8))
    np.testing.assert_allclose(y, np.maximum(f + s, 0.0), atol=1e-6)


def test_use_projection_true_projects_even_when_shapes_match():
    block = BasicBlock(8, use_projection=True)
    block.build(X8.shape)
    assert block.has_projection and block.shortcut_conv is not None


def test_use_projection_false_with_shape_change_raises():
    with pytest.raises(ValueError, match="identity shortcut"):
        BasicBlock(16, strides=2, use_projection=False)(X8)


@pytest.mark.parametrize(
    "make_layer",
    [
        lambda: BasicBlock(4),
        lambda: BottleneckBlock(4),
        lambda: VGGBlock(4),
        lambda: DenseLayer(4),
        lambda: DenseBlock(2, 4),
        lambda: TransitionLayer(),
    ],
    ids=["basic", "bottleneck", "vgg", "dense_layer", "dense_block", "transition"],
)
def test_blocks_reject_inputs_that_are_not_rank_4(make_layer):
    with pytest.raises(ValueError, match=r"rank 4 \(batch, height, width, channels\), got shape \(4, 7\)"):
        make_layer()(np.zeros((4, 7), "float32"))


@pytest.mark.parametrize(
    "make_layer, message",
    [
        (lambda: BasicBlock(0), "filters must be a positive integer"),
        (lambda: BottleneckBlock(4, strides=0), "strides must be a positive integer"),
        (lambda: BasicBlock(4, use_projection="yes"), "use_projection must be None"),
        (lambda: BottleneckBlock(4, expansion=0), "expansion must be a positive integer"),
        (lambda: VGGBlock(8, num_convs=0), "num_convs must be a positive integer"),
        (lambda: DenseBlock(0), "num_layers must be a positive integer"),
        (lambda: DenseLayer(4, bottleneck_factor=0), "bottleneck_factor must be"),
        (lambda: TransitionLayer(0.0), r"reduction must be in \(0, 1\]"),
        (lambda: TransitionLayer(1.5), r"reduction must be in \(0, 1\]"),
    ],
)
def test_blocks_reject_bad_arguments(make_layer, message):
    with pytest.raises(ValueError, match=message):
        make_layer()


def test_transition_reduction_that_leaves_no_channels_raises():
    with pytest.raises(ValueError, match="leaves no channels"):
        TransitionLayer(0.1)(np.zeros((1, 4, 4, 5), "float32"))


# --- VGG block -------------------------------------------------------------------------------


def test_vgg_block_contract_against_numpy():
    x = seeded_array(2, 6, 6, 3, seed=4)

    def reference(block, inputs):
        h = inputs
        for c in block.convs:
            h = relu(conv(c, h))
        return np_pool2(h, np.max)

    run_layer_contract(
        lambda: randomized(VGGBlock(5, num_convs=3), x.shape, seed=4),
        x,
        expected_output_shape=(2, 3, 3, 5),
        reference=reference,
        reference_uses_layer=True,
        **TOL,
    )


def test_vgg_block_without_pool_keeps_size():
    out = VGGBlock(4, num_convs=1, pool=False)(seeded_array(1, 5, 5, 2))
    assert tuple(out.shape) == (1, 5, 5, 4)


# --- DenseNet layers -------------------------------------------------------------------------

XD = seeded_array(2, 4, 4, 6, seed=6)


def test_dense_layer_contract_concatenates_input_and_new_features():
    report = run_layer_contract(
        lambda: randomized(DenseLayer(3, bottleneck_factor=2), XD.shape, seed=6),
        XD,
        expected_output_shape=(2, 4, 4, 9),
        reference=np_dense_layer,
        reference_uses_layer=True,
        **TOL,
    )
    np.testing.assert_array_equal(report.outputs[..., :6], XD)


def test_dense_block_contract_channels_grow_by_num_layers_times_growth():
    num_layers, growth = 3, 2

    def reference(block, x):
        for layer in block.dense_layers:
            x = np_dense_layer(layer, x)
        return x

    report = run_layer_contract(
        lambda: randomized(DenseBlock(num_layers, growth_rate=growth), XD.shape, seed=7),
        XD,
        expected_output_shape=(2, 4, 4, 6 + num_layers * growth),
        reference=reference,
        reference_uses_layer=True,
        **TOL,
    )
    # x_0 passes through every concatenation unchanged (feature reuse).
    np.testing.assert_array_equal(report.outputs[..., :6], XD)
    assert [layer.growth_rate for layer in report.layer.dense_layers] == [growth] * num_layers


def test_transition_layer_contract_against_numpy():
    x = seeded_array(2, 5, 5, 6, seed=8)

    def reference(layer, inputs):
        return np_pool2(conv(layer.conv, relu(np_bn(inputs, layer.bn))), np.mean)

    report = run_layer_contract(
        lambda: randomized(TransitionLayer(0.5), x.shape, seed=8),
        x,
        expected_output_shape=(2, 2, 2, 3),
        reference=reference,
        reference_uses_layer=True,
        **TOL,
    )
    assert report.layer.conv.bias is None


def test_blocks_work_on_unknown_spatial_size():
    # Backbones are often built on (None, None, C) inputs.
    inputs = keras.Input((None, None, 4))
    x = BottleneckBlock(2, strides=2)(inputs)
    x = DenseBlock(2, growth_rate=3)(x)
    x = TransitionLayer()(x)
    model = keras.Model(inputs, x)
    assert tuple(model.output.shape) == (None, None, None, 7)
    assert model(np.zeros((1, 9, 9, 4), "float32")).shape == (1, 2, 2, 7)
