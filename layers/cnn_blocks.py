"""Reusable CNN building blocks (textbook section 2.3) as Keras layers.

The architectures of section 2.3 are stacks of a few repeated blocks:

* ``VGGBlock``: VGGNet's "3x3 filters stacked" unit, n convolutions then a
  2x2 max-pool.
* ``BasicBlock`` and ``BottleneckBlock``: ResNet's residual connection
  ``y = ReLU(F(x) + shortcut(x))`` with a 1x1 projection shortcut when the
  shape changes (basic: ResNet-18/34, bottleneck: ResNet-50/101/152).
* ``DenseLayer``, ``DenseBlock``, ``TransitionLayer``: DenseNet's
  ``x_l = H_l([x_0, x_1, ..., x_{l-1}])`` (every layer sees every earlier
  feature map) and the 1x1-conv + 2x2-average-pool that compresses between
  dense blocks.

Every block is built from tfsuite's own ``Conv2D``, ``BatchNormalization``
and pooling layers, creates its sublayers in ``build()`` (as keras-hub's
modeling layers do) and passes ``training`` down to its batch norms. The
defaults (conv biases in ResNet, batch-norm ``epsilon=1.001e-5``) follow
``keras.applications`` so that the model builders in ``layers.cnn_models``
have exactly the parameter counts of ``keras.applications.ResNet50`` etc.
"""

import math

import keras
from keras import ops

from layers.convolution import Conv2D
from layers.normalization import BatchNormalization
from layers.pooling import AveragePooling2D, MaxPooling2D
from layers.validation import check_positive_float, check_positive_int, check_rank

__all__ = [
    "VGGBlock",
    "BasicBlock",
    "BottleneckBlock",
    "DenseLayer",
    "DenseBlock",
    "TransitionLayer",
]

_LAYOUT = "(batch, height, width, channels)"
# keras.applications' ResNet and DenseNet value; kept so parameter counts and
# copied ImageNet-style weights behave identically.
_BN_EPSILON = 1.001e-5


def _check_image_input(layer_name, input_shape):
    """Rank-4 channels-last input with a known channel axis; returns the channels."""
    check_rank(layer_name, input_shape, 4, _LAYOUT)
    channels = input_shape[-1]
    if channels is None:
        raise ValueError(
            f"{layer_name} needs a known channel axis to size its kernels, got shape "
            f"{tuple(input_shape)}"
        )
    return int(channels)


def _strided(size, strides):
    """Spatial size after a 'same' conv (or 1x1 'valid' conv) with ``strides``."""
    return None if size is None else math.ceil(size / strides)


def _fresh(initializer):
    """A new instance of ``initializer``, so sublayers never share one object."""
    return keras.initializers.get(keras.initializers.serialize(initializer))


def _halved(size):
    """Spatial size after a 2x2, stride-2, 'valid' pooling."""
    return None if size is None else size // 2


class _ResidualBase(keras.layers.Layer):
    """Shared arguments, shortcut and config of the two residual blocks."""

    block_name = "residual block"

    def __init__(
        self,
        filters,
        strides=1,
        use_projection=None,
        use_bias=True,
        momentum=0.99,
        epsilon=_BN_EPSILON,
        kernel_initializer="he_normal",
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.filters = check_positive_int(f"{type(self).__name__} filters", filters)
        self.strides = check_positive_int(f"{type(self).__name__} strides", strides)
        if use_projection not in (None, True, False):
            raise ValueError(
                f"{type(self).__name__} use_projection must be None (automatic), True or False, "
                f"got {use_projection!r}"
            )
        self.use_projection = use_projection
        self.use_bias = bool(use_bias)
        self.momentum = float(momentum)
        self.epsilon = check_positive_float(f"{type(self).__name__} epsilon", epsilon)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)

    @property
    def output_channels(self):
        raise NotImplementedError

    def _conv(self, filters, kernel_size, strides, name):
        return Conv2D(
            filters,
            kernel_size,
            strides=strides,
            padding="same",
            use_bias=self.use_bias,
            kernel_initializer=_fresh(self.kernel_initializer),
            dtype=self.dtype_policy,
            name=name,
        )

    def _bn(self, name):
        return BatchNormalization(
            momentum=self.momentum, epsilon=self.epsilon, dtype=self.dtype_policy, name=name
        )

    def _build_shortcut(self, input_shape, in_channels):
        """1x1 projection + BN when the shape changes (the paper's option B)."""
        needs_projection = self.strides != 1 or in_channels != self.output_channels
        projection = needs_projection if self.use_projection is None else self.use_projection
        if needs_projection and not projection:
            raise ValueError(
                f"{type(self).__name__} with use_projection=False needs an identity shortcut, "
                f"i.e. strides=1 and input channels == {self.output_channels}; got strides="
                f"{self.strides} and input shape {tuple(input_shape)}. Use use_projection=None."
            )
        self.has_projection = bool(projection)
        self.shortcut_conv = self.shortcut_bn = None
        if self.has_projection:
            self.shortcut_conv = self._conv(self.output_channels, 1, self.strides, "shortcut_conv")
            self.shortcut_conv.build(input_shape)
            out_shape = self.compute_output_shape(input_shape)
            self.shortcut_bn = self._bn("shortcut_bn")
            self.shortcut_bn.build(out_shape)

    def shortcut(self, inputs, training=None):
        """``x`` itself, or ``BN(W_s x)`` when the block projects."""
        if not self.has_projection:
            return inputs
        return self.shortcut_bn(self.shortcut_conv(inputs), training=training)

    def compute_output_shape(self, input_shape):
        batch, height, width, _ = input_shape
        return (
            batch,
            _strided(height, self.strides),
            _strided(width, self.strides),
            self.output_channels,
        )

    def get_config(self):
        return {
            **super().get_config(),
            "filters": self.filters,
            "strides": self.strides,
            "use_projection": self.use_projection,
            "use_bias": self.use_bias,
            "momentum": self.momentum,
            "epsilon": self.epsilon,
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
        }


@keras.saving.register_keras_serializable(package="tfsuite")
class BasicBlock(_ResidualBase):
    """Section 2.3, ResNet residual connection (basic block):
    ``y = ReLU(F(x) + shortcut(x))``, ``F(x) = BN(W_2 * ReLU(BN(W_1 * x)))``.

    ``W_1`` and ``W_2`` are 3x3 convolutions with ``filters`` channels, the
    first with stride ``strides``. The shortcut is the identity when the shape
    is unchanged and a 1x1 convolution with stride ``strides`` plus batch norm
    (He et al., 2015, option B) otherwise. Learning the identity only needs
    ``F = 0``, which is why very deep residual nets still train. ResNet-18/34
    stack these.

    Args:
        filters: int, output channels of both 3x3 convolutions.
        strides: int, stride of the first 3x3 convolution (and the
            projection), 2 to halve the spatial size. Default 1.
        use_projection: bool or None. None (default) projects exactly when
            ``strides != 1`` or input channels ``!= filters``; True always
            projects; False forces the identity (and raises if the shapes
            differ).
        use_bias: bool, conv biases (as in ``keras.applications``' ResNets;
            the paper has none since BN follows). Default True.
        momentum: float, batch-norm moving-average momentum. Default 0.99.
        epsilon: float, batch-norm epsilon. Default 1.001e-5.
        kernel_initializer: initializer for the conv kernels. Default
            ``"he_normal"``.

    Input shape: ``(batch, height, width, channels)``.
    Output shape: ``(batch, ceil(height / strides), ceil(width / strides), filters)``.

    Example:
    >>> BasicBlock(16, strides=2)(np.ones((2, 8, 8, 8), "float32")).shape
    (2, 4, 4, 16)
    """

    @property
    def output_channels(self):
        return self.filters

    def build(self, input_shape):
        in_channels = _check_image_input("BasicBlock", input_shape)
        out_shape = self.compute_output_shape(input_shape)
        self.conv1 = self._conv(self.filters, 3, self.strides, "conv1")
        self.conv1.build(input_shape)
        self.bn1 = self._bn("bn1")
        self.bn1.build(out_shape)
        self.conv2 = self._conv(self.filters, 3, 1, "conv2")
        self.conv2.build(out_shape)
        self.bn2 = self._bn("bn2")
        self.bn2.build(out_shape)
        self._build_shortcut(input_shape, in_channels)

    def residual(self, inputs, training=None):
        """The residual branch ``F(x)``."""
        h = ops.relu(self.bn1(self.conv1(inputs), training=training))
        return self.bn2(self.conv2(h), training=training)

    def call(self, inputs, training=None):
        return ops.relu(self.residual(inputs, training) + self.shortcut(inputs, training))


@keras.saving.register_keras_serializable(package="tfsuite")
class BottleneckBlock(_ResidualBase):
    """Section 2.3, ResNet residual connection (bottleneck block):
    ``y = ReLU(F(x) + shortcut(x))`` with
    ``F(x) = BN(W_3 * ReLU(BN(W_2 * ReLU(BN(W_1 * x)))))``.

    ``W_1`` is a 1x1 convolution down to ``filters`` channels (stride
    ``strides``), ``W_2`` a 3x3 convolution and ``W_3`` a 1x1 convolution up
    to ``expansion * filters`` channels, so the expensive 3x3 runs on the
    narrow width; this is how ResNet-50/101/152 reach 152 layers. The
    shortcut is the identity or, when the shape changes, a 1x1 projection
    with stride ``strides`` plus batch norm. The stride sits on the first 1x1
    convolution, as in the paper and ``keras.applications.ResNet50`` (ResNet
    "v1"); parameter counts do not depend on where it sits.

    Args:
        filters: int, bottleneck width (channels of ``W_1`` and ``W_2``).
        strides: int, stride of ``W_1`` and the projection. Default 1.
        expansion: int, output channels are ``expansion * filters``.
            Default 4.
        use_projection: bool or None. None (default) projects exactly when
            ``strides != 1`` or input channels ``!= expansion * filters``.
        use_bias: bool, conv biases (``keras.applications`` has them).
            Default True.
        momentum: float, batch-norm momentum. Default 0.99.
        epsilon: float, batch-norm epsilon. Default 1.001e-5.
        kernel_initializer: initializer for the conv kernels. Default
            ``"he_normal"``.

    Input shape: ``(batch, height, width, channels)``.
    Output shape: ``(batch, ceil(height / strides), ceil(width / strides),
    expansion * filters)``.

    Example:
    >>> BottleneckBlock(4, strides=2)(np.ones((2, 8, 8, 8), "float32")).shape
    (2, 4, 4, 16)
    """

    def __init__(self, filters, strides=1, expansion=4, **kwargs):
        super().__init__(filters, strides=strides, **kwargs)
        self.expansion = check_positive_int("BottleneckBlock expansion", expansion)

    @property
    def output_channels(self):
        return self.expansion * self.filters

    def build(self, input_shape):
        in_channels = _check_image_input("BottleneckBlock", input_shape)
        out_shape = self.compute_output_shape(input_shape)
        narrow = out_shape[:3] + (self.filters,)
        self.conv1 = self._conv(self.filters, 1, self.strides, "conv1")
        self.conv1.build(input_shape)
        self.bn1 = self._bn("bn1")
        self.bn1.build(narrow)
        self.conv2 = self._conv(self.filters, 3, 1, "conv2")
        self.conv2.build(narrow)
        self.bn2 = self._bn("bn2")
        self.bn2.build(narrow)
        self.conv3 = self._conv(self.output_channels, 1, 1, "conv3")
        self.conv3.build(narrow)
        self.bn3 = self._bn("bn3")
        self.bn3.build(out_shape)
        self._build_shortcut(input_shape, in_channels)

    def residual(self, inputs, training=None):
        """The residual branch ``F(x)``."""
        h = ops.relu(self.bn1(self.conv1(inputs), training=training))
        h = ops.relu(self.bn2(self.conv2(h), training=training))
        return self.bn3(self.conv3(h), training=training)

    def call(self, inputs, training=None):
        return ops.relu(self.residual(inputs, training) + self.shortcut(inputs, training))

    def get_config(self):
        return {**super().get_config(), "expansion": self.expansion}


@keras.saving.register_keras_serializable(package="tfsuite")
class VGGBlock(keras.layers.Layer):
    """Section 2.3, VGGNet block: ``num_convs`` x (3x3 conv + ReLU), then a
    2x2 max-pool with stride 2.

    Two stacked 3x3 convolutions see a 5x5 window and three see 7x7, with
    fewer weights and more non-linearities than one large filter: VGG's
    argument for depth. VGG-16 is blocks of (2, 2, 3, 3, 3) convolutions with
    (64, 128, 256, 512, 512) filters.

    Args:
        filters: int, output channels of every convolution.
        num_convs: int, number of convolutions. Default 2.
        kernel_size: int, square kernel size. Default 3.
        activation: str, activation name for ``get_activation``. Default
            ``"relu"``.
        use_bias: bool, conv biases. Default True.
        pool: bool, end with the 2x2 max-pool. Default True.
        kernel_initializer: initializer for the kernels. Default
            ``"glorot_uniform"`` (as ``keras.applications.VGG16``).

    Input shape: ``(batch, height, width, channels)``.
    Output shape: ``(batch, height // 2, width // 2, filters)`` (no halving
    when ``pool=False``).

    Example:
    >>> VGGBlock(8, num_convs=3)(np.ones((2, 8, 8, 3), "float32")).shape
    (2, 4, 4, 8)
    """

    def __init__(
        self,
        filters,
        num_convs=2,
        kernel_size=3,
        activation="relu",
        use_bias=True,
        pool=True,
        kernel_initializer="glorot_uniform",
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.filters = check_positive_int("VGGBlock filters", filters)
        self.num_convs = check_positive_int("VGGBlock num_convs", num_convs)
        self.kernel_size = check_positive_int("VGGBlock kernel_size", kernel_size)
        self.activation = activation
        self.use_bias = bool(use_bias)
        self.pool = bool(pool)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)

    def build(self, input_shape):
        _check_image_input("VGGBlock", input_shape)
        shape = tuple(input_shape)
        self.convs = []
        for i in range(self.num_convs):
            conv = Conv2D(
                self.filters,
                self.kernel_size,
                padding="same",
                activation=self.activation,
                use_bias=self.use_bias,
                kernel_initializer=_fresh(self.kernel_initializer),
                dtype=self.dtype_policy,
                name=f"conv{i + 1}",
            )
            conv.build(shape)
            shape = shape[:3] + (self.filters,)
            self.convs.append(conv)
        self.pooling = None
        if self.pool:
            self.pooling = MaxPooling2D(2, dtype=self.dtype_policy, name="pool")
            self.pooling.build(shape)

    def call(self, inputs):
        x = inputs
        for conv in self.convs:
            x = conv(x)
        if self.pooling is not None:
            x = self.pooling(x)
        return x

    def compute_output_shape(self, input_shape):
        batch, height, width, _ = input_shape
        if self.pool:
            height, width = _halved(height), _halved(width)
        return (batch, height, width, self.filters)

    def get_config(self):
        return {
            **super().get_config(),
            "filters": self.filters,
            "num_convs": self.num_convs,
            "kernel_size": self.kernel_size,
            "activation": self.activation,
            "use_bias": self.use_bias,
            "pool": self.pool,
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
        }


class _PreActivationMixin:
    """BN -> ReLU -> conv, DenseNet's composite function ``H_l``."""

    def _bn(self, name):
        return BatchNormalization(
            momentum=self.momentum, epsilon=self.epsilon, dtype=self.dtype_policy, name=name
        )

    def _conv(self, filters, kernel_size, name):
        return Conv2D(
            filters,
            kernel_size,
            padding="same",
            use_bias=False,
            kernel_initializer=_fresh(self.kernel_initializer),
            dtype=self.dtype_policy,
            name=name,
        )


@keras.saving.register_keras_serializable(package="tfsuite")
class DenseLayer(_PreActivationMixin, keras.layers.Layer):
    """Section 2.3, DenseNet layer: ``y = [x, H(x)]`` with
    ``H(x) = W_2 * ReLU(BN(W_1 * ReLU(BN(x))))`` (DenseNet-B).

    ``W_1`` is a 1x1 "bottleneck" convolution to ``bottleneck_factor *
    growth_rate`` channels and ``W_2`` a 3x3 convolution to ``growth_rate``
    channels (no biases). The output concatenates the input and the
    ``growth_rate`` new feature maps along the channel axis, so every later
    layer receives every earlier feature map (feature reuse).

    Args:
        growth_rate: int, ``k``, channels each layer adds.
        bottleneck_factor: int, the 1x1 conv has ``bottleneck_factor * k``
            channels. Default 4.
        momentum: float, batch-norm momentum. Default 0.99.
        epsilon: float, batch-norm epsilon. Default 1.001e-5.
        kernel_initializer: initializer for the kernels. Default
            ``"he_normal"``.

    Input shape: ``(batch, height, width, channels)``.
    Output shape: ``(batch, height, width, channels + growth_rate)``; the
    first ``channels`` are the input unchanged.

    Example:
    >>> DenseLayer(4)(np.ones((2, 5, 5, 6), "float32")).shape
    (2, 5, 5, 10)
    """

    def __init__(
        self,
        growth_rate,
        bottleneck_factor=4,
        momentum=0.99,
        epsilon=_BN_EPSILON,
        kernel_initializer="he_normal",
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.growth_rate = check_positive_int("DenseLayer growth_rate", growth_rate)
        self.bottleneck_factor = check_positive_int("DenseLayer bottleneck_factor", bottleneck_factor)
        self.momentum = float(momentum)
        self.epsilon = check_positive_float("DenseLayer epsilon", epsilon)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)

    def build(self, input_shape):
        _check_image_input("DenseLayer", input_shape)
        shape = tuple(input_shape)
        narrow = shape[:3] + (self.bottleneck_factor * self.growth_rate,)
        self.bn1 = self._bn("bn1")
        self.bn1.build(shape)
        self.conv1 = self._conv(narrow[-1], 1, "conv1")
        self.conv1.build(shape)
        self.bn2 = self._bn("bn2")
        self.bn2.build(narrow)
        self.conv2 = self._conv(self.growth_rate, 3, "conv2")
        self.conv2.build(narrow)

    def new_features(self, inputs, training=None):
        """``H(x)``: the ``growth_rate`` feature maps this layer adds."""
        h = self.conv1(ops.relu(self.bn1(inputs, training=training)))
        return self.conv2(ops.relu(self.bn2(h, training=training)))

    def call(self, inputs, training=None):
        return ops.concatenate([inputs, self.new_features(inputs, training)], axis=-1)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:3]) + (input_shape[3] + self.growth_rate,)

    def get_config(self):
        return {
            **super().get_config(),
            "growth_rate": self.growth_rate,
            "bottleneck_factor": self.bottleneck_factor,
            "momentum": self.momentum,
            "epsilon": self.epsilon,
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
        }


@keras.saving.register_keras_serializable(package="tfsuite")
class DenseBlock(keras.layers.Layer):
    """Section 2.3, DenseNet dense block: ``x_l = H_l([x_0, x_1, ..., x_{l-1}])``
    for ``l = 1..num_layers``; the output is ``[x_0, x_1, ..., x_L]``.

    A chain of ``DenseLayer`` s: each appends ``growth_rate`` channels, so the
    output has ``channels + num_layers * growth_rate`` channels and its first
    ``channels`` are the input itself. DenseNet-121 uses blocks of
    (6, 12, 24, 16) layers with ``growth_rate=32``.

    Args:
        num_layers: int, number of dense layers ``L``.
        growth_rate: int, ``k``. Default 32.
        bottleneck_factor: int, width of each 1x1 conv in units of ``k``.
            Default 4.
        momentum: float, batch-norm momentum. Default 0.99.
        epsilon: float, batch-norm epsilon. Default 1.001e-5.
        kernel_initializer: initializer for the kernels. Default
            ``"he_normal"``.

    Input shape: ``(batch, height, width, channels)``.
    Output shape: ``(batch, height, width, channels + num_layers * growth_rate)``.

    Example:
    >>> DenseBlock(3, growth_rate=4)(np.ones((2, 5, 5, 6), "float32")).shape
    (2, 5, 5, 18)
    """

    def __init__(
        self,
        num_layers,
        growth_rate=32,
        bottleneck_factor=4,
        momentum=0.99,
        epsilon=_BN_EPSILON,
        kernel_initializer="he_normal",
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.num_layers = check_positive_int("DenseBlock num_layers", num_layers)
        self.growth_rate = check_positive_int("DenseBlock growth_rate", growth_rate)
        self.bottleneck_factor = check_positive_int("DenseBlock bottleneck_factor", bottleneck_factor)
        self.momentum = float(momentum)
        self.epsilon = check_positive_float("DenseBlock epsilon", epsilon)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)

    def build(self, input_shape):
        _check_image_input("DenseBlock", input_shape)
        shape = tuple(input_shape)
        self.dense_layers = []
        for i in range(self.num_layers):
            layer = DenseLayer(
                self.growth_rate,
                bottleneck_factor=self.bottleneck_factor,
                momentum=self.momentum,
                epsilon=self.epsilon,
                kernel_initializer=_fresh(self.kernel_initializer),
                dtype=self.dtype_policy,
                name=f"layer{i + 1}",
            )
            layer.build(shape)
            shape = layer.compute_output_shape(shape)
            self.dense_layers.append(layer)

    def call(self, inputs, training=None):
        x = inputs
        for layer in self.dense_layers:
            x = layer(x, training=training)
        return x

    def compute_output_shape(self, input_shape):
        channels = input_shape[3] + self.num_layers * self.growth_rate
        return tuple(input_shape[:3]) + (channels,)

    def get_config(self):
        return {
            **super().get_config(),
            "num_layers": self.num_layers,
            "growth_rate": self.growth_rate,
            "bottleneck_factor": self.bottleneck_factor,
            "momentum": self.momentum,
            "epsilon": self.epsilon,
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
        }


@keras.saving.register_keras_serializable(package="tfsuite")
class TransitionLayer(_PreActivationMixin, keras.layers.Layer):
    """Section 2.3, DenseNet transition: ``y = AvgPool_2x2(W * ReLU(BN(x)))``.

    ``W`` is a 1x1 convolution (no bias) to ``floor(reduction * channels)``
    channels (compression, DenseNet-C), followed by a 2x2 average pool with
    stride 2 that halves the spatial size between dense blocks.

    Args:
        reduction: float in ``(0, 1]``, compression factor ``theta``.
            Default 0.5.
        momentum: float, batch-norm momentum. Default 0.99.
        epsilon: float, batch-norm epsilon. Default 1.001e-5.
        kernel_initializer: initializer for the kernel. Default
            ``"he_normal"``.

    Input shape: ``(batch, height, width, channels)``.
    Output shape: ``(batch, height // 2, width // 2, floor(reduction * channels))``.

    Example:
    >>> TransitionLayer(0.5)(np.ones((2, 8, 8, 12), "float32")).shape
    (2, 4, 4, 6)
    """

    def __init__(
        self,
        reduction=0.5,
        momentum=0.99,
        epsilon=_BN_EPSILON,
        kernel_initializer="he_normal",
        **kwargs,
    ):
        super().__init__(**kwargs)
        reduction = float(reduction)
        if not 0.0 < reduction <= 1.0:
            raise ValueError(f"TransitionLayer reduction must be in (0, 1], got {reduction}")
        self.reduction = reduction
        self.momentum = float(momentum)
        self.epsilon = check_positive_float("TransitionLayer epsilon", epsilon)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)

    def _out_channels(self, channels):
        out = int(channels * self.reduction)
        if out < 1:
            raise ValueError(
                f"TransitionLayer reduction={self.reduction} leaves no channels from {channels} "
                "input channels; use a larger reduction"
            )
        return out

    def build(self, input_shape):
        channels = _check_image_input("TransitionLayer", input_shape)
        shape = tuple(input_shape)
        self.bn = self._bn("bn")
        self.bn.build(shape)
        out_channels = self._out_channels(channels)
        self.conv = self._conv(out_channels, 1, "conv")
        self.conv.build(shape)
        self.pool = AveragePooling2D(2, dtype=self.dtype_policy, name="pool")
        self.pool.build(shape[:3] + (out_channels,))

    def call(self, inputs, training=None):
        return self.pool(self.conv(ops.relu(self.bn(inputs, training=training))))

    def compute_output_shape(self, input_shape):
        batch, height, width, channels = input_shape
        return (batch, _halved(height), _halved(width), self._out_channels(channels))

    def get_config(self):
        return {
            **super().get_config(),
            "reduction": self.reduction,
            "momentum": self.momentum,
            "epsilon": self.epsilon,
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
        }
