"""Section 11.1, quantization: 8-bit integers (or 16-bit floats) in place of 32-bit floats.

Affine quantization maps a real ``r`` to an integer ``q`` with a scale ``s`` and
a zero point ``z``: ``q = clip(round(r / s) + z, q_min, q_max)`` and back
``r' = s (q - z)``. Weights are symmetric (``z = 0``, ``q`` in ``[-127, 127]``,
one ``s = max|W_c| / 127`` per output channel ``c``); activations are
asymmetric over ``[-128, 127]`` with ``s = (max - min) / 255`` from observed
ranges. Four ways to get there, all ending in a TFLite flatbuffer run by the
LiteRT interpreter with built-in ops only:

* ``dynamic_int8`` (post-training, dynamic range): weights stored int8,
  activations quantized on the fly per batch; no data needed.
* ``full_int8`` (post-training, full integer): weights and activations int8,
  activation ranges calibrated on a representative dataset.
* ``float16``: weights stored float16 (half the bytes), computed in float32.
* ``qat_int8``: quantization-aware training (Jacob et al., 2018): the float
  model is fine-tuned with fake quantization ``r' = s (round(r / s) ...)``
  in its forward pass and the straight-through estimator
  ``d r' / d r = 1`` inside the range in its backward pass
  (:class:`FakeQuant` for activations with exponential-moving-average
  ranges, :class:`QuantizeWrapper` for per-channel weights); the converter
  reads the learned ranges from the fake-quant ops.

Libraries, checked on this stack (TF 2.21, Keras 3.15):

* ``tensorflow-model-optimization`` 0.8.1 (QAT, pruning) imports only with
  the legacy ``tf_keras`` installed and then refuses Keras 3 models
  (``quantize_model``: "`to_quantize` can only either be a keras Sequential
  or Functional model", for a ``keras.Sequential``): it wraps ``tf_keras``
  layers, and every tfsuite layer is a Keras 3 layer. Not usable.
* ``keras.Model.quantize("int8")`` quantizes the built-in ``keras.layers.Dense``
  / ``EinsumDense`` / ``Embedding`` for Keras-side inference; it skips
  tfsuite's ``Dense``/``Conv2D`` and has no quantization-aware training, so
  it does not apply. ``keras.quantizers.fake_quant_with_min_max_vars`` does:
  under the TensorFlow backend it is ``tf.quantization.fake_quant_*``, the op
  the TFLite converter reads ranges from, so our QAT wrappers are built on it.
* ``ai-edge-quantizer`` 0.10 quantizes an already converted ``.tflite``
  (works here, with two more packages); ``tf.lite.TFLiteConverter``, part of
  TensorFlow, already gives the three post-training modes, so no new
  dependency is taken.

Example::

    from compression.quantization import TFLiteModel, quantize_model, to_tflite

    int8 = to_tflite(model, "full_int8", representative_data=train_images[:500])
    TFLiteModel(int8)(test_images)                     # float32 logits
    qat = quantize_model(model, calibration_data=train_images[:512])
    qat.compile(...); qat.fit(...)                     # fake-quant fine-tuning
    qat_int8 = to_tflite(qat, "qat_int8")
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from layers.convolution import Conv2D
from layers.generation_export import flex_ops, tflite_ops
from layers.perceptron import Dense

__all__ = [
    "MODES",
    "FakeQuant",
    "QuantizeWrapper",
    "TFLiteModel",
    "builtin_ops_only",
    "quantize_model",
    "to_tflite",
]

MODES = ("float32", "dynamic_int8", "full_int8", "float16", "qat_int8")


# --- post-training: the TFLite converter ---------------------------------------------------


def _concrete_function(model):
    spec = tf.TensorSpec((None, *model.input_shape[1:]), tf.float32, name="images")
    return tf.function(lambda images: model(images, training=False), input_signature=[spec],
                       autograph=False).get_concrete_function()


def to_tflite(model, mode="float32", representative_data=None, int8_io=False):
    """Convert a Keras model (one float32 input, training=False) to TFLite bytes with built-in ops only.

    Args:
        model: ``keras.Model`` with one input.
        mode: one of :data:`MODES`. ``"qat_int8"`` expects a model from
            :func:`quantize_model` (its fake-quant ops carry the ranges).
        representative_data: array ``(n, *input_shape)``, the calibration
            inputs of ``"full_int8"`` (a few hundred training examples).
        int8_io: bool, int8 input and output tensors for the integer modes
            (an all-integer graph for microcontrollers). Default False:
            float32 in and out, with a quantize and a dequantize op at the ends.

    Raises:
        ValueError: an unknown mode, ``full_int8`` without data, or a model
            that needs ops outside the TFLite built-ins.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {list(MODES)}, got {mode!r}")
    # A frozen concrete function: the converter folds the variables into constants. (Given the model as
    # trackable_obj, or a SavedModel, it keeps them as resource variables, and on the SavedModel path it does not
    # see the fake-quant ops of a QAT model when it validates the int8 settings.)
    converter = tf.lite.TFLiteConverter.from_concrete_functions([_concrete_function(model)])
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if mode != "float32":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if mode == "float16":
        converter.target_spec.supported_types = [tf.float16]
    if mode == "full_int8":
        if representative_data is None or len(representative_data) == 0:
            raise ValueError("full_int8 needs representative_data: a few hundred inputs to calibrate ranges on")
        data = np.asarray(representative_data, np.float32)
        converter.representative_dataset = lambda: ([data[i : i + 1]] for i in range(len(data)))
        # Integer kernels only: an op without one fails the conversion instead of staying float.
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    # qat_int8 keeps TFLITE_BUILTINS: with TFLITE_BUILTINS_INT8 TF 2.21 asks for a representative dataset even
    # for a fake-quantized graph. The fake-quant ranges make every tensor int8 all the same (checked in
    # tests/compression/test_quantization.py).
    if mode in ("full_int8", "qat_int8") and int8_io:
        converter.inference_input_type = converter.inference_output_type = tf.int8
    try:
        tflite_model = converter.convert()
    except Exception as error:  # ConverterError lists the ops it could not lower
        raise ValueError(f"{model.name} does not convert to {mode} TFLite with built-in ops only:\n{error}") from error
    if not builtin_ops_only(tflite_model):
        raise ValueError(f"{mode} TFLite model of {model.name} uses non-builtin ops {tflite_ops(tflite_model)}")
    return tflite_model


def builtin_ops_only(tflite_model):
    """True when every operator of the flatbuffer is a TFLite built-in (no Flex, no custom op)."""
    from tensorflow.lite.python import schema_py_generated as schema

    builtins = {name for name in vars(schema.BuiltinOperator) if not name.startswith("_")}
    return not flex_ops(tflite_model) and set(tflite_ops(tflite_model)) <= builtins


class TFLiteModel:
    """A converted classifier run with the LiteRT interpreter on NumPy batches.

    Args:
        tflite_model: bytes from :func:`to_tflite`.
        num_threads: int or None, interpreter threads. Default None (LiteRT's default).

    Call: ``model(inputs)`` with a float32 batch returns the float32 output
    (int8 inputs and outputs are quantized and dequantized with the tensors'
    own scale and zero point). The interpreter is resized when the batch size changes.
    """

    def __init__(self, tflite_model, num_threads=None):
        from ai_edge_litert.interpreter import Interpreter

        self.interpreter = Interpreter(model_content=tflite_model, num_threads=num_threads)
        self._input = self.interpreter.get_input_details()[0]
        self._output = self.interpreter.get_output_details()[0]
        self._batch = None
        self.ops = tflite_ops(tflite_model)

    def __call__(self, inputs):
        inputs = np.asarray(inputs, np.float32)
        if len(inputs) != self._batch:
            self.interpreter.resize_tensor_input(self._input["index"], inputs.shape)
            self.interpreter.allocate_tensors()
            self._input = self.interpreter.get_input_details()[0]
            self._output = self.interpreter.get_output_details()[0]
            self._batch = len(inputs)
        if self._input["dtype"] != np.float32:
            scale, zero = self._input["quantization"]
            info = np.iinfo(self._input["dtype"])
            inputs = np.clip(np.round(inputs / scale + zero), info.min, info.max).astype(self._input["dtype"])
        self.interpreter.set_tensor(self._input["index"], inputs)
        self.interpreter.invoke()
        outputs = self.interpreter.get_tensor(self._output["index"])
        if self._output["dtype"] != np.float32:
            scale, zero = self._output["quantization"]
            outputs = (outputs.astype(np.float32) - zero) * scale
        return outputs


# --- quantization-aware training -------------------------------------------------------------


@keras.saving.register_keras_serializable(package="tfsuite")
class FakeQuant(keras.layers.Layer):
    """Section 11.1, activation fake quantization: ``r' = s (round(clip(r, a, b) / s - z') + z')``,
    ``s = (b - a) / (2^bits - 1)``, with ``[a, b]`` an exponential moving average of the batch ranges.

    In training each batch's ``min``/``max`` update ``a, b <- d a + (1 - d) min``
    (the first batch sets them) and the batch is quantized with the updated
    range; at inference the stored range is used. The gradient is the
    straight-through estimator (1 inside ``[a, b]``, 0 outside), from
    ``keras.quantizers.fake_quant_with_min_max_vars`` (``tf.quantization.fake_quant_with_min_max_vars``
    under TensorFlow, which the TFLite converter turns into int8 tensors).
    The range always holds 0 (the int8 zero point must be exact).

    Args:
        num_bits: int, default 8.
        ema_decay: float in ``[0, 1)``, ``d``. Default 0.99 (a short fine-tuning).

    Input shape: any. Output shape: same as input.

    Example:
    >>> quant = FakeQuant()
    >>> y = quant(np.linspace(-1, 1, 9, dtype="float32")[None], training=True)
    """

    def __init__(self, num_bits=8, ema_decay=0.99, **kwargs):
        super().__init__(**kwargs)
        if not 0.0 <= float(ema_decay) < 1.0:
            raise ValueError(f"FakeQuant ema_decay must be in [0, 1), got {ema_decay}")
        if int(num_bits) < 2 or int(num_bits) > 16:
            raise ValueError(f"FakeQuant num_bits must be in [2, 16], got {num_bits}")
        self.num_bits = int(num_bits)
        self.ema_decay = float(ema_decay)

    def build(self, input_shape):
        self.range_min = self.add_weight(name="range_min", shape=(), initializer="zeros", trainable=False)
        self.range_max = self.add_weight(name="range_max", shape=(), initializer="zeros", trainable=False)
        self.observed = self.add_weight(name="observed", shape=(), initializer="zeros", trainable=False)

    def call(self, inputs, training=False):
        if training:
            batch_min = ops.minimum(ops.min(ops.stop_gradient(inputs)), 0.0)
            batch_max = ops.maximum(ops.max(ops.stop_gradient(inputs)), 0.0)
            first = ops.equal(self.observed, 0.0)
            d = self.ema_decay
            self.range_min.assign(ops.where(first, batch_min, d * self.range_min + (1.0 - d) * batch_min))
            self.range_max.assign(ops.where(first, batch_max, d * self.range_max + (1.0 - d) * batch_max))
            self.observed.assign(self.observed + 1.0)
        return keras.quantizers.fake_quant_with_min_max_vars(
            inputs, self.range_min, self.range_max, num_bits=self.num_bits, narrow_range=False
        )

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "num_bits": self.num_bits, "ema_decay": self.ema_decay}


def fake_quant_weights(kernel, num_bits=8, per_channel=True):
    """Symmetric fake quantization of a kernel: ``W' = s round(W / s)``, ``s = max|W| / (2^(bits-1) - 1)``,
    one ``s`` per output channel (the last axis) or one for the tensor; straight-through gradient.

    The scale is a function of the weights but held fixed in the backward pass
    (``stop_gradient``): only the straight-through estimator reaches ``W``.
    """
    reduce_axes = tuple(range(len(kernel.shape) - 1)) if per_channel else None
    bound = ops.stop_gradient(ops.maximum(ops.max(ops.abs(kernel), axis=reduce_axes), 1e-8))
    return keras.quantizers.fake_quant_with_min_max_vars(
        kernel, -bound, bound, num_bits=num_bits, narrow_range=True, axis=-1 if per_channel else None
    )


@keras.saving.register_keras_serializable(package="tfsuite")
class QuantizeWrapper(keras.layers.Wrapper):
    """Section 11.1, quantization-aware training of one tfsuite ``Conv2D`` or ``Dense``:
    ``y = FakeQuant(activation(x * W' + b))`` with ``W'`` the int8 fake-quantized kernel (one scale per
    output channel for ``Conv2D``, per tensor for ``Dense``, as TFLite's int8 kernels take them).

    The wrapped layer keeps its own ``kernel`` and ``bias`` (trained in float);
    the wrapper computes the layer's operation with ``W'`` and fake-quantizes
    the output after the activation, where TFLite fuses the activation into
    the int8 convolution or fully connected op. The bias stays float in
    training; the converter stores it int32 with scale ``s_x s_W``.

    Args:
        layer: a ``layers.convolution.Conv2D`` or ``layers.perceptron.Dense``.
        num_bits: int, default 8.
        ema_decay: float, the output range's moving-average decay. Default 0.99.

    Input and output shapes: those of ``layer``.

    Example:
    >>> wrapped = QuantizeWrapper(Dense(4, activation="relu"))
    >>> wrapped(np.ones((2, 3), "float32"), training=True).shape
    (2, 4)
    """

    def __init__(self, layer, num_bits=8, ema_decay=0.99, **kwargs):
        if not isinstance(layer, (Conv2D, Dense)):
            raise ValueError(
                f"QuantizeWrapper wraps a tfsuite Conv2D or Dense, got {type(layer).__name__}; "
                "leave other layers unwrapped (pooling and reshapes keep their input's range)"
            )
        super().__init__(layer, **kwargs)
        self.num_bits = int(num_bits)
        self.ema_decay = float(ema_decay)
        self.output_quant = FakeQuant(num_bits, ema_decay, name="output_quant")

    def build(self, input_shape):
        if not self.layer.built:
            self.layer.build(input_shape)
        self.output_quant.build(self.layer.compute_output_shape(input_shape))
        self.built = True

    def call(self, inputs, training=False):
        layer = self.layer
        kernel = layer.kernel
        if isinstance(layer, Conv2D):
            if layer.mode == "convolution":
                kernel = ops.flip(kernel, axis=(0, 1))
            outputs = ops.conv(inputs, fake_quant_weights(kernel, self.num_bits, per_channel=True),
                               strides=layer.strides, padding=layer.padding)
        else:
            # One scale per tensor: the converter transposes a fully connected kernel to (out, in) and
            # rejects a per-channel axis through that transpose ("mismatched quantized axes").
            outputs = ops.matmul(inputs, fake_quant_weights(kernel, self.num_bits, per_channel=False))
        if layer.bias is not None:
            outputs = ops.add(outputs, layer.bias)
        if layer.activation_layer is not None:
            outputs = layer.activation_layer(outputs)
        return self.output_quant(outputs, training=training)

    def compute_output_shape(self, input_shape):
        return self.layer.compute_output_shape(input_shape)

    def get_config(self):
        return {**super().get_config(), "num_bits": self.num_bits, "ema_decay": self.ema_decay}


def quantize_model(model, num_bits=8, ema_decay=0.99, calibration_data=None, batch_size=256):
    """A quantization-aware copy of a functional ``model``: input fake-quantized, every tfsuite
    ``Conv2D``/``Dense`` in a :class:`QuantizeWrapper`, the float weights copied (``model`` is untouched).

    Args:
        model: a functional ``keras.Model`` of one input.
        num_bits, ema_decay: see :class:`FakeQuant`.
        calibration_data: array or None. When given, the activation ranges
            are initialised by running it through the copy in training mode
            (no weight changes) before any fine-tuning.
        batch_size: int, the calibration batch size. Default 256.

    Returns:
        The QAT ``keras.Model``; fine-tune it, then ``to_tflite(qat, "qat_int8")``.
    """
    if not isinstance(model, keras.Model) or len(model.inputs) != 1:
        raise ValueError(f"quantize_model needs a functional keras.Model with one input, got {model!r}")

    def clone(layer):
        copy = layer.__class__.from_config(layer.get_config())
        if isinstance(layer, (Conv2D, Dense)):
            return QuantizeWrapper(copy, num_bits, ema_decay, name=f"quant_{layer.name}")
        return copy

    body = keras.models.clone_model(model, clone_function=clone)
    for original in model.layers:
        if not original.weights:
            continue
        cloned = body.get_layer(f"quant_{original.name}" if isinstance(original, (Conv2D, Dense)) else original.name)
        target = cloned.layer if isinstance(cloned, QuantizeWrapper) else cloned
        target.set_weights(original.get_weights())
    inputs = keras.Input(model.input_shape[1:], name=model.inputs[0].name.split(":")[0])
    outputs = body(FakeQuant(num_bits, ema_decay, name="input_quant")(inputs))
    qat = keras.Model(inputs, outputs, name=f"{model.name}_qat")
    if calibration_data is not None:
        data = np.asarray(calibration_data, np.float32)
        for start in range(0, len(data), batch_size):
            qat(data[start : start + batch_size], training=True)
    return qat
