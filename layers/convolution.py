"""Discrete convolution layers (textbook section 2.1): ``Conv1D`` and ``Conv2D``.

The textbook defines the discrete convolution ``(f * g)[n] = sum_m f[m] g[n - m]``
and its 2-D form ``(I * K)[i, j] = sum_m sum_n I[m, n] K[i - m, j - n]``: the
kernel is flipped before it slides over the input. Deep-learning libraries,
Keras included, compute the cross-correlation ``sum_m I[i + m] K[m]`` instead,
with no flip. Both are offered through ``mode``:

* ``mode="cross_correlation"`` (default): what ``keras.layers.Conv1D/Conv2D``
  compute; with copied weights the outputs are equal.
* ``mode="convolution"``: the textbook's true convolution. The kernel is
  flipped in its spatial axes and then cross-correlated, which equals
  ``scipy.signal.convolve(x, k, mode="valid")`` for a single channel.

A learned kernel absorbs the flip, so the two modes have the same capacity;
the difference matters when a kernel is given (an edge detector, a filter
copied from signal processing) or when weights are exchanged with Keras.

Both layers run ``keras.ops.conv``, the same kernels as the Keras built-ins, and
hold ``kernel`` (``kernel_size + (in_channels, filters)``) then ``bias``
(``(filters,)``), the same weights and parameter count as Keras.
"""

import keras
from keras import ops

from layers.activations import get_activation
from layers.validation import check_choice, check_int_tuple, check_positive_int, check_rank

__all__ = ["Conv1D", "Conv2D"]

PADDINGS = ("valid", "same")
MODES = ("cross_correlation", "convolution")


def conv_output_length(length, kernel, stride, padding):
    """Output length of a convolution or pooling window along one axis (None stays None)."""
    if length is None:
        return None
    if padding == "same":
        return -(-length // stride)
    return (length - kernel) // stride + 1


class _Conv(keras.layers.Layer):
    """Shared body of ``Conv1D`` and ``Conv2D``; subclasses set ``rank`` and ``layout``."""

    rank = None
    layout = None

    def __init__(
        self,
        filters,
        kernel_size,
        strides=1,
        padding="valid",
        mode="cross_correlation",
        use_bias=True,
        activation=None,
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        kernel_regularizer=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        name = type(self).__name__
        self.filters = check_positive_int(f"{name} filters", filters)
        self.kernel_size = check_int_tuple(f"{name} kernel_size", kernel_size, self.rank)
        self.strides = check_int_tuple(f"{name} strides", strides, self.rank)
        self.padding = check_choice(f"{name} padding", padding, PADDINGS)
        self.mode = check_choice(f"{name} mode", mode, MODES)
        self.use_bias = bool(use_bias)
        if activation is not None and not isinstance(activation, str):
            raise ValueError(
                f"{name} activation must be a name such as 'relu' or None, got {activation!r}"
            )
        self.activation = activation
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)
        # Same dtype policy as the convolution, so a float64 layer is not cut
        # to float32 by its activation.
        self.activation_layer = (
            None if activation is None else get_activation(activation, dtype=self.dtype_policy)
        )

    def _check_input(self, input_shape):
        name = type(self).__name__
        check_rank(name, input_shape, self.rank + 2, self.layout)
        if self.padding == "valid":
            for axis, k in enumerate(self.kernel_size, start=1):
                n = input_shape[axis]
                if n is not None and n < k:
                    raise ValueError(
                        f"{name} with padding='valid' needs every spatial size >= kernel_size "
                        f"{self.kernel_size}, got shape {tuple(input_shape)}; use padding='same' "
                        "or a smaller kernel"
                    )

    def build(self, input_shape):
        self._check_input(input_shape)
        in_channels = input_shape[-1]
        if in_channels is None:
            raise ValueError(
                f"{type(self).__name__} needs a known channel axis to size its kernel, got shape "
                f"{tuple(input_shape)}"
            )
        self.kernel = self.add_weight(
            name="kernel",
            shape=self.kernel_size + (in_channels, self.filters),
            initializer=self.kernel_initializer,
            regularizer=self.kernel_regularizer,
        )
        self.bias = None
        if self.use_bias:
            self.bias = self.add_weight(
                name="bias", shape=(self.filters,), initializer=self.bias_initializer
            )
        self._in_channels = int(in_channels)

    def call(self, inputs):
        self._check_input(inputs.shape)
        if inputs.shape[-1] != self._in_channels:
            raise ValueError(
                f"{type(self).__name__} was built for {self._in_channels} input channels, got "
                f"shape {tuple(inputs.shape)}"
            )
        kernel = self.kernel
        if self.mode == "convolution":
            # K[i - m, j - n]: the textbook's convolution is a cross-correlation
            # with the kernel reversed in every spatial axis.
            kernel = ops.flip(kernel, axis=tuple(range(self.rank)))
        strides = self.strides
        if all(k == 1 for k in self.kernel_size) and any(s > 1 for s in strides):
            # A strided 1x1 convolution reads every s-th position (no padding in either mode), so take
            # those first: the same result, and it avoids a TF 2.21 oneDNN fault ("double free")
            # in the strided 1x1 input gradient for odd batch sizes (ResNet projection shortcuts).
            inputs = inputs[(slice(None), *(slice(None, None, s) for s in strides))]
            strides = 1
        outputs = ops.conv(inputs, kernel, strides=strides, padding=self.padding)
        if self.bias is not None:
            outputs = ops.add(outputs, self.bias)
        if self.activation_layer is not None:
            outputs = self.activation_layer(outputs)
        return outputs

    def compute_output_shape(self, input_shape):
        spatial = tuple(
            conv_output_length(n, k, s, self.padding)
            for n, k, s in zip(input_shape[1:-1], self.kernel_size, self.strides)
        )
        return (input_shape[0],) + spatial + (self.filters,)

    def get_config(self):
        return {
            **super().get_config(),
            "filters": self.filters,
            "kernel_size": self.kernel_size,
            "strides": self.strides,
            "padding": self.padding,
            "mode": self.mode,
            "use_bias": self.use_bias,
            "activation": self.activation,
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
            "bias_initializer": keras.initializers.serialize(self.bias_initializer),
            "kernel_regularizer": keras.regularizers.serialize(self.kernel_regularizer),
        }


@keras.saving.register_keras_serializable(package="tfsuite")
class Conv1D(_Conv):
    """Section 2.1, 1-D discrete convolution: ``(f * g)[n] = sum_m f[m] g[n - m]``.

    ``mode="convolution"`` computes that formula per output channel,
    ``y[t, o] = sum_m sum_c x[t * s + m, c] K[k - 1 - m, c, o] + b[o]``, i.e. the
    kernel reversed in time; ``mode="cross_correlation"`` (the default, what
    ``keras.layers.Conv1D`` computes) uses ``K[m, c, o]`` unflipped.

    Args:
        filters: int, number of output channels.
        kernel_size: int or tuple of 1 int, window length ``k``.
        strides: int or tuple of 1 int, step ``s`` between windows. Default 1.
        padding: ``"valid"`` (no padding) or ``"same"`` (zero-pad so the output
            length is ``ceil(length / s)``). Default ``"valid"``.
        mode: ``"cross_correlation"`` or ``"convolution"``. Default
            ``"cross_correlation"``.
        use_bias: bool, add ``b``. Default True.
        activation: str or None, a name for ``layers.activations.get_activation``
            (``"relu"``, ``"sigmoid"``, ...). Default None (linear).
        kernel_initializer: initializer for ``K``. Default ``"glorot_uniform"``.
        bias_initializer: initializer for ``b``. Default ``"zeros"``.
        kernel_regularizer: regularizer for ``K`` or None. Default None.

    Input shape: ``(batch, length, channels)``.
    Output shape: ``(batch, new_length, filters)``.

    Example:
    >>> Conv1D(4, 3, mode="convolution")(np.ones((2, 10, 1), "float32")).shape
    (2, 8, 4)
    """

    rank = 1
    layout = "(batch, length, channels)"


@keras.saving.register_keras_serializable(package="tfsuite")
class Conv2D(_Conv):
    """Section 2.1, 2-D discrete convolution: ``(I * K)[i, j] = sum_m sum_n I[m, n] K[i - m, j - n]``.

    ``mode="convolution"`` computes the textbook's formula (the kernel flipped
    in height and width) per output channel, summed over input channels;
    ``mode="cross_correlation"`` (the default, what ``keras.layers.Conv2D``
    computes) slides the kernel unflipped,
    ``y[i, j, o] = sum_{m, n, c} x[i * s_h + m, j * s_w + n, c] K[m, n, c, o] + b[o]``.

    Args:
        filters: int, number of output channels.
        kernel_size: int or tuple of 2 ints, window ``(k_h, k_w)``.
        strides: int or tuple of 2 ints, step ``(s_h, s_w)``. Default 1.
        padding: ``"valid"`` or ``"same"`` (output ``ceil(size / stride)``).
            Default ``"valid"``.
        mode: ``"cross_correlation"`` or ``"convolution"``. Default
            ``"cross_correlation"``.
        use_bias: bool, add ``b``. Default True.
        activation: str or None, a name for ``layers.activations.get_activation``.
            Default None (linear).
        kernel_initializer: initializer for ``K``. Default ``"glorot_uniform"``.
        bias_initializer: initializer for ``b``. Default ``"zeros"``.
        kernel_regularizer: regularizer for ``K`` or None. Default None.

    Input shape: ``(batch, height, width, channels)`` (channels_last).
    Output shape: ``(batch, new_height, new_width, filters)``.

    Example:
    >>> Conv2D(8, 3, padding="same", activation="relu")(np.ones((2, 28, 28, 1), "float32")).shape
    (2, 28, 28, 8)
    """

    rank = 2
    layout = "(batch, height, width, channels)"
