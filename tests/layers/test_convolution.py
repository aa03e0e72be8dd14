import keras
import numpy as np
import pytest
import tensorflow as tf
from scipy import signal

from layers.convolution import Conv1D, Conv2D
from tests.layer_harness import copy_weights, run_layer_contract, seeded_array

X1 = seeded_array(2, 11, 3)  # (batch, length, channels)
X2 = seeded_array(2, 9, 8, 3, seed=1)  # (batch, height, width, channels)


def keras_conv_reference(keras_cls, **kwargs):
    """Reference: keras.layers.Conv1D/Conv2D with our layer's weights copied in."""

    def reference(layer, x):
        ref = keras_cls(layer.filters, layer.kernel_size, **kwargs)
        ref.build(x.shape)
        copy_weights(layer, ref)
        return keras.ops.convert_to_numpy(ref(x))

    return reference


def to_np(x):
    return keras.ops.convert_to_numpy(x)


# ---------------------------------------------------------------- parity with Keras


@pytest.mark.parametrize(
    "kernel_size, strides, padding, activation, use_bias",
    [
        (3, 1, "valid", None, True),
        ((3, 2), (2, 1), "valid", "relu", True),
        (3, 2, "same", "tanh", True),
        ((2, 4), (1, 3), "same", None, False),
    ],
    ids=["valid", "valid-strided-relu", "same-strided-tanh", "same-nobias"],
)
def test_conv2d_cross_correlation_contract_matches_keras(kernel_size, strides, padding, activation, use_bias):
    kwargs = dict(strides=strides, padding=padding, activation=activation, use_bias=use_bias)
    make = lambda: Conv2D(4, kernel_size, bias_initializer="random_normal", **kwargs)  # noqa: E731
    expected = keras.layers.Conv2D(4, kernel_size, **kwargs).compute_output_shape(X2.shape)
    run_layer_contract(
        make,
        X2,
        expected_output_shape=expected,
        reference=keras_conv_reference(keras.layers.Conv2D, **kwargs),
        reference_uses_layer=True,
    )


@pytest.mark.parametrize(
    "kernel_size, strides, padding, activation",
    [(3, 1, "valid", None), (4, 2, "same", "relu"), (2, 3, "valid", "sigmoid")],
    ids=["valid", "same-strided-relu", "valid-strided-sigmoid"],
)
def test_conv1d_cross_correlation_contract_matches_keras(kernel_size, strides, padding, activation):
    kwargs = dict(strides=strides, padding=padding, activation=activation)
    expected = keras.layers.Conv1D(5, kernel_size, **kwargs).compute_output_shape(X1.shape)
    run_layer_contract(
        lambda: Conv1D(5, kernel_size, bias_initializer="random_normal", **kwargs),
        X1,
        expected_output_shape=expected,
        reference=keras_conv_reference(keras.layers.Conv1D, **kwargs),
        reference_uses_layer=True,
    )


def test_conv_weights_and_parameter_count_equal_keras():
    ours = keras.Sequential(
        [keras.Input((12, 12, 3)), Conv2D(8, 3, activation="relu"), Conv2D(4, (2, 3), use_bias=False)]
    )
    ref = keras.Sequential(
        [keras.Input((12, 12, 3)), keras.layers.Conv2D(8, 3, activation="relu"), keras.layers.Conv2D(4, (2, 3), use_bias=False)]
    )
    assert ours.count_params() == ref.count_params() == 3 * 3 * 3 * 8 + 8 + 2 * 3 * 8 * 4
    assert [w.shape for w in ours.weights] == [w.shape for w in ref.weights]
    assert [w.name for w in ours.layers[0].weights] == ["kernel", "bias"]
    assert ours.output_shape == ref.output_shape
    conv1d = Conv1D(6, 5)
    conv1d.build(X1.shape)
    assert conv1d.kernel.shape == (5, 3, 6) and conv1d.bias.shape == (6,)


# ---------------------------------------------------------------- textbook formula and scipy


def textbook_conv2d_full(image, kernel):
    """(I * K)[i, j] = sum_m sum_n I[m, n] K[i - m, j - n], every (i, j) where any term exists."""
    (h, w), (kh, kw) = image.shape, kernel.shape
    out = np.zeros((h + kh - 1, w + kw - 1))
    for i in range(out.shape[0]):
        for j in range(out.shape[1]):
            for m in range(h):
                for n in range(w):
                    if 0 <= i - m < kh and 0 <= j - n < kw:
                        out[i, j] += image[m, n] * kernel[i - m, j - n]
    return out


def test_scipy_convolve_is_the_textbook_double_sum():
    # Ties the scipy references below to the textbook's formula.
    image, kernel = seeded_array(5, 4, seed=3), seeded_array(3, 2, seed=4)
    full = textbook_conv2d_full(image, kernel)
    np.testing.assert_allclose(signal.convolve(image, kernel, mode="full"), full, atol=1e-5)
    # "valid" keeps the (i, j) where the kernel lies inside the image.
    np.testing.assert_allclose(signal.convolve(image, kernel, mode="valid"), full[2:5, 1:4], atol=1e-5)


def single_channel_reference(scipy_fn, stride=1):
    """scipy.signal.convolve / correlate ("valid") of each sample with the layer's 1-channel kernel."""

    def reference(layer, x):
        kernel = layer.get_weights()[0][..., 0, 0]
        spatial = (slice(None, None, stride),) * kernel.ndim
        return np.stack([scipy_fn(s[..., 0], kernel, mode="valid")[spatial][..., None] for s in x])

    return reference


@pytest.mark.parametrize(
    "cls, x, kernel_size, mode, scipy_fn",
    [
        (Conv1D, seeded_array(2, 12, 1, seed=5), 4, "convolution", signal.convolve),
        (Conv1D, seeded_array(2, 12, 1, seed=5), 4, "cross_correlation", signal.correlate),
        (Conv2D, seeded_array(2, 7, 6, 1, seed=6), (3, 2), "convolution", signal.convolve),
        (Conv2D, seeded_array(2, 7, 6, 1, seed=6), (3, 2), "cross_correlation", signal.correlate),
    ],
    ids=["1d-convolution", "1d-correlation", "2d-convolution", "2d-correlation"],
)
def test_single_channel_equals_scipy(cls, x, kernel_size, mode, scipy_fn):
    run_layer_contract(
        lambda: cls(1, kernel_size, mode=mode, use_bias=False),
        x,
        reference=single_channel_reference(scipy_fn),
        reference_uses_layer=True,
        check_saved_model=mode == "convolution",
    )


@pytest.mark.parametrize("cls, x, kernel_size", [(Conv1D, seeded_array(2, 13, 1, seed=7), 3), (Conv2D, seeded_array(2, 9, 8, 1, seed=8), 3)])
def test_strided_convolution_is_subsampled_scipy_convolve(cls, x, kernel_size):
    layer = cls(1, kernel_size, strides=2, mode="convolution", use_bias=False)
    out = to_np(layer(x))
    np.testing.assert_allclose(out, single_channel_reference(signal.convolve, 2)(layer, x), atol=1e-5)


def test_same_padding_convolution_equals_scipy_same_for_odd_kernels():
    x = seeded_array(2, 7, 6, 1, seed=9)
    layer = Conv2D(1, (3, 5), padding="same", mode="convolution", use_bias=False)
    out = to_np(layer(x))
    kernel = layer.get_weights()[0][..., 0, 0]
    expected = np.stack([signal.convolve(s[..., 0], kernel, mode="same")[..., None] for s in x])
    np.testing.assert_allclose(out, expected, atol=1e-5)


def test_multichannel_convolution_sums_scipy_convolve_over_input_channels():
    layer = Conv2D(2, 3, mode="convolution", bias_initializer="random_normal")
    out = to_np(layer(X2))
    kernel, bias = layer.get_weights()
    for b in range(X2.shape[0]):
        for o in range(2):
            expected = sum(
                signal.convolve(X2[b, ..., c], kernel[..., c, o], mode="valid") for c in range(3)
            ) + bias[o]
            np.testing.assert_allclose(out[b, ..., o], expected, atol=1e-5)


def test_convolution_mode_is_cross_correlation_with_flipped_kernel():
    conv = Conv2D(4, (3, 2), strides=(1, 2), padding="same", mode="convolution")
    out = to_np(conv(X2))
    corr = Conv2D(4, (3, 2), strides=(1, 2), padding="same")
    corr.build(X2.shape)
    kernel, bias = conv.get_weights()
    corr.set_weights([kernel[::-1, ::-1], bias])
    np.testing.assert_allclose(out, to_np(corr(X2)), atol=1e-5)
    # ... and differs from the unflipped one for a non-symmetric kernel.
    corr.set_weights([kernel, bias])
    assert np.abs(out - to_np(corr(X2))).max() > 1e-2


def test_convolution_mode_learns_the_generating_kernel_unflipped():
    # Targets are true convolutions with an asymmetric kernel; fitting a
    # "convolution" layer recovers that kernel as is, not flipped.
    true_kernel = np.array([[1.0, 0.0, -1.0], [2.0, 0.0, -2.0], [0.5, 0.0, 0.0]], "float32")
    x = seeded_array(16, 8, 8, 1, seed=10)
    y = np.stack([signal.convolve(s[..., 0], true_kernel, mode="valid")[..., None] for s in x])
    model = keras.Sequential([keras.Input((8, 8, 1)), Conv2D(1, 3, mode="convolution", use_bias=False)])
    model.compile(optimizer=keras.optimizers.Adam(0.05), loss="mse")
    model.fit(np.tile(x, (8, 1, 1, 1)), np.tile(y, (8, 1, 1, 1)), batch_size=8, epochs=12, verbose=0)
    learned = model.layers[0].get_weights()[0][..., 0, 0]
    np.testing.assert_allclose(learned, true_kernel, atol=2e-2)


def test_kernel_regularizer_adds_loss_like_keras():
    ours = Conv2D(3, 2, kernel_regularizer=keras.regularizers.L2(0.1))
    ours(X2)
    ref = keras.layers.Conv2D(3, 2, kernel_regularizer=keras.regularizers.L2(0.1))
    ref.build(X2.shape)
    copy_weights(ours, ref)
    ref(X2)
    assert len(ours.losses) == 1
    np.testing.assert_allclose(float(ours.losses[0]), float(ref.losses[0]), rtol=1e-6)
    np.testing.assert_allclose(float(ours.losses[0]), 0.1 * np.sum(ours.get_weights()[0] ** 2), rtol=1e-5)


def test_conv_gradients_match_keras():
    ours = Conv2D(4, 3, strides=2, padding="same", mode="convolution", bias_initializer="random_normal")
    ours.build(X2.shape)
    ref = keras.layers.Conv2D(4, 3, strides=2, padding="same")
    ref.build(X2.shape)
    kernel, bias = ours.get_weights()
    ref.set_weights([kernel[::-1, ::-1], bias])
    x = tf.constant(X2)
    grads = []
    for layer in (ours, ref):
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = tf.reduce_sum(tf.sin(layer(x)))
        grads.append([g.numpy() for g in tape.gradient(loss, [x] + layer.trainable_weights)])
    (gx, gk, gb), (rx, rk, rb) = grads
    np.testing.assert_allclose(gx, rx, atol=1e-5)
    np.testing.assert_allclose(gk, rk[::-1, ::-1], atol=1e-5)  # the flip carries into dK
    np.testing.assert_allclose(gb, rb, atol=1e-5)


# ---------------------------------------------------------------- errors


def test_conv2d_rejects_wrong_rank():
    message = r"Conv2D expected inputs of rank 4 \(batch, height, width, channels\), got shape \(9, 8, 3\)"
    with pytest.raises(ValueError, match=message):
        Conv2D(2, 3)(X2[0])


def test_conv1d_rejects_wrong_rank():
    message = r"Conv1D expected inputs of rank 3 \(batch, length, channels\), got shape \(2, 9, 8, 3\)"
    with pytest.raises(ValueError, match=message):
        Conv1D(2, 3)(X2)


def test_built_conv_rejects_wrong_rank_and_channels():
    layer = Conv2D(2, 3)
    layer(X2)
    with pytest.raises(ValueError, match="Conv2D expected inputs of rank 4"):
        layer(X2[..., 0])
    with pytest.raises(ValueError, match=r"built for 3 input channels, got shape \(2, 9, 8, 2\)"):
        layer(X2[..., :2])


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(mode="convolve"), r"Conv2D mode must be one of \['convolution', 'cross_correlation'\]"),
        (dict(padding="full"), r"Conv2D padding must be one of \['same', 'valid'\]"),
        (dict(kernel_size=(3, 3, 3)), "Conv2D kernel_size must be an int or a tuple of 2 ints"),
        (dict(strides=0), "Conv2D strides must be a positive integer"),
        (dict(filters=0), "Conv2D filters must be a positive integer"),
        (dict(activation=keras.activations.relu), "activation must be a name such as 'relu' or None"),
        (dict(activation="gelu_typo"), "unknown activation 'gelu_typo'"),
    ],
    ids=["mode", "padding", "kernel-size", "strides", "filters", "activation-callable", "activation-name"],
)
def test_conv2d_rejects_bad_arguments(kwargs, message):
    args = {"filters": 2, "kernel_size": 3, **kwargs}
    with pytest.raises(ValueError, match=message):
        Conv2D(**args)


def test_valid_padding_rejects_kernel_larger_than_input():
    with pytest.raises(ValueError, match=r"padding='valid' needs every spatial size >= kernel_size \(5,\)"):
        Conv1D(2, 5)(seeded_array(2, 4, 3))
    assert Conv1D(2, 5, padding="same")(seeded_array(2, 4, 3)).shape == (2, 4, 2)


@pytest.mark.parametrize("mode", ["cross_correlation", "convolution"])
def test_conv_mixed_precision_and_unknown_spatial_size(mode):
    layer = Conv2D(4, 3, strides=2, padding="same", mode=mode, activation="relu", dtype="mixed_float16")
    inputs = keras.Input((None, None, 3))
    model = keras.Model(inputs, layer(inputs))
    assert model.output_shape == (None, None, None, 4)
    out = model(X2)
    assert keras.backend.standardize_dtype(out.dtype) == "float16"
    assert layer.kernel.dtype == "float32"  # weights stay float32, computation in float16
    ref = Conv2D(4, 3, strides=2, padding="same", mode=mode, activation="relu")
    ref.build(X2.shape)
    ref.set_weights(layer.get_weights())
    np.testing.assert_allclose(to_np(out).astype("float32"), to_np(ref(X2)), atol=2e-2)


@pytest.mark.parametrize("padding", ["same", "valid"])
@pytest.mark.parametrize("batch", [15, 16])
def test_strided_1x1_convolution_and_its_gradients_for_odd_and_even_batches(padding, batch):
    """A strided 1x1 convolution (ResNet's projection shortcut) is ``W`` applied to every s-th pixel; computed
    as such, since TF 2.21's oneDNN input gradient of the strided op corrupted the heap ("double free",
    the process dies) for odd batch sizes at these shapes."""
    layer = Conv2D(16, 1, strides=2, padding=padding, use_bias=False)
    x = tf.constant(np.random.default_rng(batch).normal(size=(batch, 16, 16, 8)).astype("float32"))
    layer.build(x.shape)

    @tf.function
    def gradients(x, reference):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = tf.einsum("bhwc,cf->bhwf", x[:, ::2, ::2], layer.kernel[0, 0]) if reference else layer(x)
            loss = tf.reduce_mean(y * y)
        return (y, *tape.gradient(loss, [x, layer.kernel]))

    for _ in range(3):  # the fault showed after a few steps
        ours = gradients(x, False)
    for a, b in zip(ours, gradients(x, True)):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-6)
