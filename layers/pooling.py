"""Pooling layers (textbook section 2.2): max, average and strided pooling.

A window of ``pool_size`` slides over each channel in steps of ``strides`` and
is replaced by its maximum (max pooling) or its mean (average pooling).
``strides`` defaults to ``pool_size`` (non-overlapping windows); any other step
is the textbook's strided pooling (``strides < pool_size`` overlaps windows,
``strides > pool_size`` skips inputs). ``padding="same"`` pads so the output is
``ceil(size / stride)`` long; padded positions never win a max and are not
counted in an average, as in Keras.

The global layers pool over all spatial positions at once, the usual bridge
from a CNN's feature maps to its classifier (ResNet, DenseNet).

All layers are channels_last and weightless; they run ``keras.ops.max_pool`` /
``average_pool``, the same kernels as the Keras built-ins.
"""

import keras
from keras import ops

from layers.convolution import conv_output_length
from layers.validation import check_choice, check_int_tuple, check_rank

__all__ = [
    "MaxPooling1D",
    "MaxPooling2D",
    "AveragePooling1D",
    "AveragePooling2D",
    "GlobalAveragePooling2D",
    "GlobalMaxPooling2D",
]

_ARGS_DOC = """
    Args:
        pool_size: int or tuple of {n} int(s), window size. Default 2.
        strides: int, tuple of {n} int(s) or None, step between windows; None
            means ``pool_size``. Default None.
        padding: ``"valid"`` (windows fully inside the input) or ``"same"``
            (output ``ceil(size / stride)``). Default ``"valid"``.
"""


class _Pooling(keras.layers.Layer):
    """Shared body; subclasses set ``rank``, ``layout`` and ``reduce``."""

    rank = None
    layout = None
    reduce = None  # "max" or "average"

    def __init__(self, pool_size=2, strides=None, padding="valid", **kwargs):
        super().__init__(**kwargs)
        name = type(self).__name__
        self.pool_size = check_int_tuple(f"{name} pool_size", pool_size, self.rank)
        self.strides = (
            self.pool_size
            if strides is None
            else check_int_tuple(f"{name} strides", strides, self.rank)
        )
        self.padding = check_choice(f"{name} padding", padding, ("valid", "same"))

    def _check_input(self, input_shape):
        name = type(self).__name__
        check_rank(name, input_shape, self.rank + 2, self.layout)
        if self.padding == "valid":
            for axis, k in enumerate(self.pool_size, start=1):
                n = input_shape[axis]
                if n is not None and n < k:
                    raise ValueError(
                        f"{name} with padding='valid' needs every spatial size >= pool_size "
                        f"{self.pool_size}, got shape {tuple(input_shape)}; use padding='same' "
                        "or a smaller pool_size"
                    )

    def build(self, input_shape):
        self._check_input(input_shape)

    def call(self, inputs):
        self._check_input(inputs.shape)
        pool = ops.max_pool if self.reduce == "max" else ops.average_pool
        return pool(inputs, self.pool_size, strides=self.strides, padding=self.padding)

    def compute_output_shape(self, input_shape):
        spatial = tuple(
            conv_output_length(n, k, s, self.padding)
            for n, k, s in zip(input_shape[1:-1], self.pool_size, self.strides)
        )
        return (input_shape[0],) + spatial + (input_shape[-1],)

    def get_config(self):
        return {
            **super().get_config(),
            "pool_size": self.pool_size,
            "strides": self.strides,
            "padding": self.padding,
        }


@keras.saving.register_keras_serializable(package="tfsuite")
class MaxPooling1D(_Pooling):
    __doc__ = (
        """Section 2.2, max pooling over time: ``y[t, c] = max_{0 <= m < k} x[t * s + m, c]``.
"""
        + _ARGS_DOC.format(n=1)
        + """
    Input shape: ``(batch, length, channels)``.
    Output shape: ``(batch, new_length, channels)``.

    Example:
    >>> MaxPooling1D(2)(np.arange(8, dtype="float32").reshape(1, 8, 1))[0, :, 0]  # [1, 3, 5, 7]
    """
    )

    rank = 1
    layout = "(batch, length, channels)"
    reduce = "max"


@keras.saving.register_keras_serializable(package="tfsuite")
class AveragePooling1D(_Pooling):
    __doc__ = (
        """Section 2.2, average pooling over time: ``y[t, c] = (1/k) sum_{0 <= m < k} x[t * s + m, c]``.
"""
        + _ARGS_DOC.format(n=1)
        + """
    Input shape: ``(batch, length, channels)``.
    Output shape: ``(batch, new_length, channels)``.

    Example:
    >>> AveragePooling1D(2)(np.arange(8, dtype="float32").reshape(1, 8, 1))[0, :, 0]  # [.5, 2.5, ...]
    """
    )

    rank = 1
    layout = "(batch, length, channels)"
    reduce = "average"


@keras.saving.register_keras_serializable(package="tfsuite")
class MaxPooling2D(_Pooling):
    __doc__ = (
        """Section 2.2, 2-D max pooling: ``y[i, j, c] = max_{m, n} x[i * s_h + m, j * s_w + n, c]``.

    ``m`` runs over ``pool_size[0]`` rows and ``n`` over ``pool_size[1]`` columns.
"""
        + _ARGS_DOC.format(n=2)
        + """
    Input shape: ``(batch, height, width, channels)``.
    Output shape: ``(batch, new_height, new_width, channels)``.

    Example:
    >>> MaxPooling2D(3, strides=2)(np.ones((1, 7, 7, 4), "float32")).shape  # overlapping windows
    (1, 3, 3, 4)
    """
    )

    rank = 2
    layout = "(batch, height, width, channels)"
    reduce = "max"


@keras.saving.register_keras_serializable(package="tfsuite")
class AveragePooling2D(_Pooling):
    __doc__ = (
        """Section 2.2, 2-D average pooling: ``y[i, j, c] = mean_{m, n} x[i * s_h + m, j * s_w + n, c]``.

    The mean is over the window's ``pool_size[0] * pool_size[1]`` positions
    (only those inside the input when ``padding="same"``).
"""
        + _ARGS_DOC.format(n=2)
        + """
    Input shape: ``(batch, height, width, channels)``.
    Output shape: ``(batch, new_height, new_width, channels)``.

    Example:
    >>> AveragePooling2D(2)(np.ones((1, 8, 8, 4), "float32")).shape
    (1, 4, 4, 4)
    """
    )

    rank = 2
    layout = "(batch, height, width, channels)"
    reduce = "average"


class _GlobalPooling2D(keras.layers.Layer):
    """Shared body of the global 2-D pooling layers."""

    reduce = None

    def __init__(self, keepdims=False, **kwargs):
        super().__init__(**kwargs)
        self.keepdims = bool(keepdims)

    def build(self, input_shape):
        check_rank(type(self).__name__, input_shape, 4, "(batch, height, width, channels)")

    def call(self, inputs):
        check_rank(type(self).__name__, inputs.shape, 4, "(batch, height, width, channels)")
        reduce = ops.max if self.reduce == "max" else ops.mean
        return reduce(inputs, axis=(1, 2), keepdims=self.keepdims)

    def compute_output_shape(self, input_shape):
        if self.keepdims:
            return (input_shape[0], 1, 1, input_shape[-1])
        return (input_shape[0], input_shape[-1])

    def get_config(self):
        return {**super().get_config(), "keepdims": self.keepdims}


@keras.saving.register_keras_serializable(package="tfsuite")
class GlobalAveragePooling2D(_GlobalPooling2D):
    """Section 2.2, global average pooling: ``y[c] = mean_{i, j} x[i, j, c]``.

    Args:
        keepdims: bool, keep the spatial axes as size 1. Default False.

    Input shape: ``(batch, height, width, channels)``.
    Output shape: ``(batch, channels)``, or ``(batch, 1, 1, channels)`` with
    ``keepdims=True``.

    Example:
    >>> GlobalAveragePooling2D()(np.ones((2, 7, 7, 64), "float32")).shape
    (2, 64)
    """

    reduce = "average"


@keras.saving.register_keras_serializable(package="tfsuite")
class GlobalMaxPooling2D(_GlobalPooling2D):
    """Section 2.2, global max pooling: ``y[c] = max_{i, j} x[i, j, c]``.

    Args:
        keepdims: bool, keep the spatial axes as size 1. Default False.

    Input shape: ``(batch, height, width, channels)``.
    Output shape: ``(batch, channels)``, or ``(batch, 1, 1, channels)`` with
    ``keepdims=True``.

    Example:
    >>> GlobalMaxPooling2D()(np.ones((2, 7, 7, 64), "float32")).shape
    (2, 64)
    """

    reduce = "max"
