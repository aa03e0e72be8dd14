"""compression/quantization.py: fake quantization against NumPy, and every TFLite variant against float."""

import keras
import numpy as np
import pytest

from compression.quantization import (
    FakeQuant,
    QuantizeWrapper,
    TFLiteModel,
    builtin_ops_only,
    fake_quant_weights,
    quantize_model,
    to_tflite,
)
from layers.convolution import Conv2D
from layers.perceptron import Dense
from layers.pooling import MaxPooling2D


def _numpy_fake_quant(x, low, high, levels=255, quant_min=0):
    # TensorFlow's nudging: the zero point is rounded to an integer so that 0.0 is exact.
    scale = (high - low) / levels
    zero = np.clip(np.round(quant_min - low / scale), quant_min, quant_min + levels)
    low, high = (quant_min - zero) * scale, (quant_min + levels - zero) * scale
    return np.floor((np.clip(x, low, high) - low) / scale + 0.5) * scale + low


def test_fake_quant_layer_equals_numpy_rounding():
    layer = FakeQuant()
    x = np.random.default_rng(0).normal(size=(4, 50)).astype("float32") * 2
    layer.build(x.shape)
    layer.range_min.assign(-1.3)
    layer.range_max.assign(2.1)
    got = keras.ops.convert_to_numpy(layer(x))
    np.testing.assert_allclose(got, _numpy_fake_quant(x, -1.3, 2.1), atol=1e-5)
    assert len(np.unique(got)) <= 256


def test_fake_quant_ranges_are_moving_averages_of_batches():
    layer = FakeQuant(ema_decay=0.9)
    layer(np.array([[-1.0, 3.0]], "float32"), training=True)  # the first batch sets the range
    assert float(layer.range_min.value) == pytest.approx(-1.0) and float(layer.range_max.value) == pytest.approx(3.0)
    layer(np.array([[0.5, 1.0]], "float32"), training=True)  # min clipped to 0: the range holds zero
    assert float(layer.range_min.value) == pytest.approx(0.9 * -1.0)
    assert float(layer.range_max.value) == pytest.approx(0.9 * 3.0 + 0.1 * 1.0)
    assert FakeQuant.from_config(layer.get_config()).ema_decay == 0.9


def test_weight_fake_quant_is_symmetric_per_channel_rounding_with_straight_through_gradient():
    import tensorflow as tf

    kernel = np.random.default_rng(1).normal(size=(3, 3, 2, 4)).astype("float32")
    scale = np.abs(kernel).max(axis=(0, 1, 2)) / 127
    expected = np.floor(kernel / scale + 0.5) * scale
    np.testing.assert_allclose(keras.ops.convert_to_numpy(fake_quant_weights(kernel)), expected, atol=1e-6)
    tensor_scale = np.abs(kernel).max() / 127
    np.testing.assert_allclose(keras.ops.convert_to_numpy(fake_quant_weights(kernel, per_channel=False)),
                               np.floor(kernel / tensor_scale + 0.5) * tensor_scale, atol=1e-6)
    variable = tf.Variable(kernel)
    with tf.GradientTape() as tape:
        total = tf.reduce_sum(fake_quant_weights(tf.convert_to_tensor(variable)) * 3.0)
    np.testing.assert_allclose(tape.gradient(total, variable).numpy(), np.full_like(kernel, 3.0))


def _tiny_model():
    inputs = keras.Input((8, 8, 1), name="image")
    x = Conv2D(4, 3, padding="same", activation="relu", name="conv")(inputs)
    x = MaxPooling2D(2, name="pool")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    x = Dense(16, activation="relu", name="hidden")(x)
    return keras.Model(inputs, Dense(5, name="logits")(x), name="tiny")


@pytest.fixture(scope="module")
def tiny():
    keras.utils.set_random_seed(7)
    rng = np.random.default_rng(7)
    return _tiny_model(), rng.uniform(size=(64, 8, 8, 1)).astype("float32"), rng.uniform(size=(16, 8, 8, 1)).astype(
        "float32")


@pytest.mark.parametrize("mode, tolerance", [("float32", 1e-5), ("float16", 1e-2), ("dynamic_int8", 0.05),
                                             ("full_int8", 0.08)])
def test_post_training_variants_convert_with_builtins_and_match_float(tiny, mode, tolerance):
    model, calibration, batch = tiny
    flatbuffer = to_tflite(model, mode, representative_data=calibration)
    assert builtin_ops_only(flatbuffer)
    expected = keras.ops.convert_to_numpy(model(batch))
    got = TFLiteModel(flatbuffer)(batch)
    assert got.shape == expected.shape and got.dtype == np.float32
    assert np.max(np.abs(got - expected)) <= tolerance * np.max(np.abs(expected))


def test_full_int8_needs_representative_data(tiny):
    with pytest.raises(ValueError, match="representative_data"):
        to_tflite(tiny[0], "full_int8")


def _tensor_dtypes(flatbuffer):
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=flatbuffer)
    interpreter.allocate_tensors()
    return {t["name"]: t["dtype"] for t in interpreter.get_tensor_details() if len(t["shape"]) > 1}


def test_qat_model_trains_and_converts_to_an_all_int8_graph_matching_its_simulation(tiny):
    model, calibration, batch = tiny
    qat = quantize_model(model, calibration_data=calibration)
    assert [type(layer).__name__ for layer in qat.layers] == ["InputLayer", "FakeQuant", "Functional"]
    np.testing.assert_array_equal(qat.get_layer("tiny").get_layer("quant_conv").layer.kernel.numpy(),
                                  model.get_layer("conv").kernel.numpy())
    qat.compile(keras.optimizers.Adam(1e-3), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    qat.fit(calibration, np.arange(64) % 5, batch_size=16, epochs=1, verbose=0)
    flatbuffer = to_tflite(qat, "qat_int8")
    assert builtin_ops_only(flatbuffer)
    dtypes = _tensor_dtypes(flatbuffer)
    inner = {name: dtype for name, dtype in dtypes.items() if name not in ("image", "images") and "Identity" not in name
             and "StatefulPartitionedCall" not in name}
    assert inner and all(dtype in (np.int8, np.int32) for dtype in inner.values()), inner
    simulated = keras.ops.convert_to_numpy(qat(batch))
    output_step = (np.max(simulated) - min(np.min(simulated), 0)) / 255
    np.testing.assert_allclose(TFLiteModel(flatbuffer)(batch), simulated, atol=3 * output_step)
    int8_io = TFLiteModel(to_tflite(qat, "qat_int8", int8_io=True))
    np.testing.assert_allclose(int8_io(batch), simulated, atol=3 * output_step)


def test_wrapper_config_round_trip_and_refusals():
    wrapped = QuantizeWrapper(Dense(3, activation="relu"), ema_decay=0.95)
    out = wrapped(np.ones((2, 4), "float32"), training=True)
    assert out.shape == (2, 3)
    clone = QuantizeWrapper.from_config(wrapped.get_config())
    assert clone.ema_decay == 0.95 and isinstance(clone.layer, Dense)
    with pytest.raises(ValueError, match="Conv2D or Dense"):
        QuantizeWrapper(keras.layers.Flatten())
    with pytest.raises(ValueError, match="mode"):
        to_tflite(_tiny_model(), "int4")
