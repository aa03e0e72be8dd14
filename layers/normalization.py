"""Normalization layers (textbook section 1.3): batch, layer and group norm.

All three compute ``gamma * (x - mu) / sigma + beta`` with
``sigma = sqrt(var + epsilon)``; they differ only in which axes ``mu`` and
``var`` are taken over:

* ``BatchNormalization``: over the batch (and every spatial axis), per channel;
  moving averages of the statistics stand in for them at inference.
* ``LayerNormalization``: over each sample's feature axis (or axes).
* ``GroupNormalization``: over each sample's channels split into groups (and
  every spatial axis).

``RMSNormalization`` (T5's layer norm, section 6.3) drops the mean and
``beta``: ``gamma * x / sqrt(mean(x^2) + epsilon)``.

The normalization is applied in the fused form ``x * inv + (beta - mu * inv)``
with ``inv = gamma / sigma``: one multiply and one add over the full tensor,
the same arithmetic as ``tf.nn.batch_normalization``. Statistics are computed
in at least float32, so mixed-precision inputs do not overflow.

Weights (``gamma`` then ``beta``, and for batch norm ``moving_mean`` then
``moving_variance``) have the same names, shapes and order as the Keras
built-ins, so ``set_weights(keras_layer.get_weights())`` copies them.
"""

import keras
from keras import backend, ops

from layers.validation import check_min_rank, check_positive_float, check_positive_int

__all__ = ["BatchNormalization", "LayerNormalization", "GroupNormalization", "RMSNormalization"]


def _normalize_axis(layer_name, axis, rank, input_shape):
    """``axis`` (int, may be negative) as a positive index into a rank-``rank`` shape."""
    if isinstance(axis, bool) or not isinstance(axis, int):
        raise ValueError(f"{layer_name} axis must be an int, got {axis!r}")
    if not -rank <= axis < rank:
        raise ValueError(
            f"{layer_name} axis={axis} is out of range for inputs of rank {rank}, got shape "
            f"{tuple(input_shape)}"
        )
    return axis % rank


def _known_dim(layer_name, input_shape, axis, what):
    dim = input_shape[axis]
    if dim is None:
        raise ValueError(
            f"{layer_name} needs a known size on axis {axis} ({what}) to size its weights, got "
            f"shape {tuple(input_shape)}"
        )
    return int(dim)


def _stats_dtype(x):
    """float32 for half-precision inputs (statistics overflow in float16), else x's dtype."""
    return backend.result_type(x.dtype, "float32")


def _apply(x, mean, variance, gamma, beta, epsilon):
    """``gamma * (x - mean) / sqrt(variance + epsilon) + beta`` as one multiply-add over x."""
    inv = ops.rsqrt(variance + epsilon)
    if gamma is not None:
        inv = inv * gamma
    shift = -mean * inv
    if beta is not None:
        shift = shift + beta
    return x * inv + shift


def _add_gamma_beta(layer, shape):
    layer.gamma = None
    layer.beta = None
    if layer.scale:
        layer.gamma = layer.add_weight(
            name="gamma",
            shape=shape,
            initializer=layer.gamma_initializer,
            regularizer=layer.gamma_regularizer,
            trainable=True,
            autocast=False,
        )
    if layer.center:
        layer.beta = layer.add_weight(
            name="beta",
            shape=shape,
            initializer=layer.beta_initializer,
            regularizer=layer.beta_regularizer,
            trainable=True,
            autocast=False,
        )


class _Normalization(keras.layers.Layer):
    """Shared arguments (epsilon, center, scale, initializers, regularizers)."""

    def __init__(
        self,
        epsilon=1e-3,
        center=True,
        scale=True,
        beta_initializer="zeros",
        gamma_initializer="ones",
        beta_regularizer=None,
        gamma_regularizer=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        name = type(self).__name__
        self.epsilon = check_positive_float(f"{name} epsilon", epsilon)
        self.center = bool(center)
        self.scale = bool(scale)
        self.beta_initializer = keras.initializers.get(beta_initializer)
        self.gamma_initializer = keras.initializers.get(gamma_initializer)
        self.beta_regularizer = keras.regularizers.get(beta_regularizer)
        self.gamma_regularizer = keras.regularizers.get(gamma_regularizer)
        self.supports_masking = True

    def _gamma_beta(self, dtype, shape=None):
        gamma = None if self.gamma is None else ops.cast(self.gamma, dtype)
        beta = None if self.beta is None else ops.cast(self.beta, dtype)
        if shape is not None:
            gamma = None if gamma is None else ops.reshape(gamma, shape)
            beta = None if beta is None else ops.reshape(beta, shape)
        return gamma, beta

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {
            **super().get_config(),
            "epsilon": self.epsilon,
            "center": self.center,
            "scale": self.scale,
            "beta_initializer": keras.initializers.serialize(self.beta_initializer),
            "gamma_initializer": keras.initializers.serialize(self.gamma_initializer),
            "beta_regularizer": keras.regularizers.serialize(self.beta_regularizer),
            "gamma_regularizer": keras.regularizers.serialize(self.gamma_regularizer),
        }


@keras.saving.register_keras_serializable(package="tfsuite")
class BatchNormalization(_Normalization):
    """Section 1.3, batch normalization: ``BN(x) = gamma * (x - mu) / sigma + beta``.

    ``mu`` and ``sigma = sqrt(var + epsilon)`` are per channel (``axis``),
    taken over the batch and every other axis. With ``training=True`` the
    batch's own statistics are used and the moving statistics are updated,
    ``moving = momentum * moving + (1 - momentum) * batch_stat`` (``var`` is
    the biased batch variance, as in Keras). With ``training=False`` (the
    default outside ``fit``) the moving statistics are used. As in Keras, a
    frozen layer (``trainable=False``, e.g. transfer learning's feature
    extraction) always runs in inference mode and never updates its moving
    statistics. A mask (e.g. from ``Embedding(mask_zero=True)``; True means
    keep) leaves padded positions out of the batch statistics.

    Args:
        axis: int, the channel axis. Default ``-1`` (channels_last).
        momentum: float in ``[0, 1]``, moving-average momentum. Default ``0.99``.
        epsilon: float > 0 added to the variance. Default ``1e-3``.
        center: bool, add ``beta``. Default True.
        scale: bool, multiply by ``gamma``. Default True.
        beta_initializer, gamma_initializer: initializers. Default
            ``"zeros"`` and ``"ones"``.
        moving_mean_initializer, moving_variance_initializer: initializers.
            Default ``"zeros"`` and ``"ones"``.
        beta_regularizer, gamma_regularizer: regularizers or None. Default None.

    Weights: ``gamma``, ``beta`` (trainable, shape ``(channels,)``, each only
    if enabled), ``moving_mean``, ``moving_variance`` (non-trainable), in the
    order of ``keras.layers.BatchNormalization``.

    Call arguments: ``inputs``; ``training`` (bool, batch statistics and
    moving-average update when True); ``mask`` (optional bool tensor of the
    input's shape without the channel axis, channel axis last).

    Input shape: any rank >= 2, e.g. ``(batch, features)`` or
    ``(batch, height, width, channels)``. Output shape: same as input.

    Example:
    >>> bn = BatchNormalization()
    >>> y = bn(np.random.randn(8, 4, 4, 3).astype("float32"), training=True)
    """

    def __init__(
        self,
        axis=-1,
        momentum=0.99,
        epsilon=1e-3,
        center=True,
        scale=True,
        beta_initializer="zeros",
        gamma_initializer="ones",
        moving_mean_initializer="zeros",
        moving_variance_initializer="ones",
        beta_regularizer=None,
        gamma_regularizer=None,
        **kwargs,
    ):
        super().__init__(
            epsilon=epsilon,
            center=center,
            scale=scale,
            beta_initializer=beta_initializer,
            gamma_initializer=gamma_initializer,
            beta_regularizer=beta_regularizer,
            gamma_regularizer=gamma_regularizer,
            **kwargs,
        )
        if isinstance(axis, bool) or not isinstance(axis, int):
            raise ValueError(f"BatchNormalization axis must be an int, got {axis!r}")
        self.axis = axis
        momentum = float(momentum)
        if not 0.0 <= momentum <= 1.0:
            raise ValueError(f"BatchNormalization momentum must be in [0, 1], got {momentum}")
        self.momentum = momentum
        self.moving_mean_initializer = keras.initializers.get(moving_mean_initializer)
        self.moving_variance_initializer = keras.initializers.get(moving_variance_initializer)

    def _check_input(self, input_shape):
        check_min_rank("BatchNormalization", input_shape, 2, "(batch, ..., channels)")
        rank = len(input_shape)
        axis = _normalize_axis("BatchNormalization", self.axis, rank, input_shape)
        if axis == 0:
            raise ValueError(
                "BatchNormalization axis must be a channel axis, not the batch axis 0; got "
                f"axis={self.axis} for shape {tuple(input_shape)}"
            )
        return rank, axis

    def build(self, input_shape):
        rank, axis = self._check_input(input_shape)
        channels = _known_dim("BatchNormalization", input_shape, axis, "channels")
        _add_gamma_beta(self, (channels,))
        self.moving_mean = self.add_weight(
            name="moving_mean",
            shape=(channels,),
            initializer=self.moving_mean_initializer,
            trainable=False,
            autocast=False,
        )
        self.moving_variance = self.add_weight(
            name="moving_variance",
            shape=(channels,),
            initializer=self.moving_variance_initializer,
            trainable=False,
            autocast=False,
        )
        self._channels = channels
        self._reduction_axes = [a for a in range(rank) if a != axis]
        # Per-channel vectors broadcast against x directly when the channel
        # axis is last; otherwise they need a (1, C, 1, ...) shape.
        self._broadcast_shape = None
        if axis != rank - 1:
            self._broadcast_shape = [1] * rank
            self._broadcast_shape[axis] = channels

    def _check_mask(self, mask, input_shape, axis):
        if mask is None:
            return
        if axis != len(input_shape) - 1 or len(mask.shape) != len(input_shape) - 1:
            raise ValueError(
                "BatchNormalization takes a mask of shape (batch, ...) without the channel axis, "
                f"with the channel axis last; got mask shape {tuple(mask.shape)} for inputs of "
                f"shape {tuple(input_shape)} and axis={self.axis}"
            )

    def _masked_moments(self, x, mask):
        """Per-channel mean and (biased) variance over the positions where ``mask`` is True.

        Padded time steps would otherwise pull the statistics towards the
        padding value. Same arithmetic as Keras (``backend.epsilon()`` guards an
        all-masked batch).
        """
        keep = ops.expand_dims(ops.cast(mask, "bool"), -1)
        axes = self._reduction_axes
        count = ops.sum(ops.cast(keep, x.dtype), axes, keepdims=True) + backend.epsilon()
        mean = ops.sum(ops.where(keep, x, 0.0), axes, keepdims=True) / count
        variance = ops.sum(ops.where(keep, ops.square(x - mean), 0.0), axes, keepdims=True) / count
        return ops.reshape(mean, (self._channels,)), ops.reshape(variance, (self._channels,))

    def call(self, inputs, training=None, mask=None):
        rank, axis = self._check_input(inputs.shape)
        if inputs.shape[axis] != self._channels:
            raise ValueError(
                f"BatchNormalization was built for {self._channels} channels on axis {self.axis}, "
                f"got shape {tuple(inputs.shape)}"
            )
        self._check_mask(mask, inputs.shape, axis)
        x = ops.cast(inputs, _stats_dtype(inputs))
        if training and self.trainable:
            if mask is None:
                mean, variance = ops.moments(x, axes=self._reduction_axes)
            else:
                mean, variance = self._masked_moments(x, mask)
            m = self.momentum
            self.moving_mean.assign(
                ops.cast(self.moving_mean, x.dtype) * m + mean * (1.0 - m)
            )
            self.moving_variance.assign(
                ops.cast(self.moving_variance, x.dtype) * m + variance * (1.0 - m)
            )
        else:
            mean = ops.cast(self.moving_mean, x.dtype)
            variance = ops.cast(self.moving_variance, x.dtype)
        gamma, beta = self._gamma_beta(x.dtype)
        if self._broadcast_shape is not None:
            shape = self._broadcast_shape
            mean, variance = ops.reshape(mean, shape), ops.reshape(variance, shape)
            gamma = None if gamma is None else ops.reshape(gamma, shape)
            beta = None if beta is None else ops.reshape(beta, shape)
        outputs = _apply(x, mean, variance, gamma, beta, self.epsilon)
        return ops.cast(outputs, self.compute_dtype)

    def get_config(self):
        return {
            **super().get_config(),
            "axis": self.axis,
            "momentum": self.momentum,
            "moving_mean_initializer": keras.initializers.serialize(self.moving_mean_initializer),
            "moving_variance_initializer": keras.initializers.serialize(
                self.moving_variance_initializer
            ),
        }


@keras.saving.register_keras_serializable(package="tfsuite")
class LayerNormalization(_Normalization):
    """Section 1.3, layer normalization: ``LN(x) = gamma * (x - mu) / sigma + beta``.

    ``mu`` and ``sigma = sqrt(var + epsilon)`` are taken per sample over its
    feature axis (or axes), so the result does not depend on the batch and is
    the same in training and inference.

    Args:
        axis: int or list of ints, the feature axis/axes normalized over (and
            the shape of ``gamma``/``beta``). Default ``-1``.
        epsilon: float > 0 added to the variance. Default ``1e-3``.
        center: bool, add ``beta``. Default True.
        scale: bool, multiply by ``gamma``. Default True.
        beta_initializer, gamma_initializer: initializers. Default
            ``"zeros"`` and ``"ones"``.
        beta_regularizer, gamma_regularizer: regularizers or None. Default None.

    Input shape: any rank >= 2, e.g. ``(batch, time, features)``.
    Output shape: same as input.

    Example:
    >>> LayerNormalization()(np.random.randn(2, 5, 8).astype("float32")).shape
    (2, 5, 8)
    """

    def __init__(
        self,
        axis=-1,
        epsilon=1e-3,
        center=True,
        scale=True,
        beta_initializer="zeros",
        gamma_initializer="ones",
        beta_regularizer=None,
        gamma_regularizer=None,
        **kwargs,
    ):
        super().__init__(
            epsilon=epsilon,
            center=center,
            scale=scale,
            beta_initializer=beta_initializer,
            gamma_initializer=gamma_initializer,
            beta_regularizer=beta_regularizer,
            gamma_regularizer=gamma_regularizer,
            **kwargs,
        )
        if isinstance(axis, (list, tuple)):
            if not axis:
                raise ValueError("LayerNormalization axis must name at least one axis, got []")
            axis = [int(a) for a in axis]
        elif isinstance(axis, bool) or not isinstance(axis, int):
            raise ValueError(f"LayerNormalization axis must be an int or a list of ints, got {axis!r}")
        self.axis = axis

    def _axes(self, input_shape):
        check_min_rank("LayerNormalization", input_shape, 2, "(batch, ..., features)")
        rank = len(input_shape)
        given = self.axis if isinstance(self.axis, list) else [self.axis]
        axes = sorted(_normalize_axis("LayerNormalization", a, rank, input_shape) for a in given)
        if 0 in axes:
            raise ValueError(
                "LayerNormalization normalizes each sample on its own and cannot include the "
                f"batch axis 0; got axis={self.axis} for shape {tuple(input_shape)}"
            )
        if len(set(axes)) != len(axes):
            raise ValueError(f"LayerNormalization axis has duplicates: {self.axis}")
        return rank, axes

    def build(self, input_shape):
        rank, axes = self._axes(input_shape)
        shape = tuple(_known_dim("LayerNormalization", input_shape, a, "features") for a in axes)
        _add_gamma_beta(self, shape)
        self._param_shape = shape
        # gamma/beta broadcast as they are when the axes are the trailing ones.
        self._broadcast_shape = None
        if axes != list(range(rank - len(axes), rank)):
            self._broadcast_shape = [input_shape[a] if a in axes else 1 for a in range(rank)]

    def call(self, inputs):
        rank, axes = self._axes(inputs.shape)
        got = tuple(inputs.shape[a] for a in axes)
        if got != self._param_shape:
            raise ValueError(
                f"LayerNormalization was built for sizes {self._param_shape} on axes {self.axis}, "
                f"got shape {tuple(inputs.shape)}"
            )
        x = ops.cast(inputs, _stats_dtype(inputs))
        mean, variance = ops.moments(x, axes=axes, keepdims=True)
        gamma, beta = self._gamma_beta(x.dtype, self._broadcast_shape)
        outputs = _apply(x, mean, variance, gamma, beta, self.epsilon)
        return ops.cast(outputs, self.compute_dtype)

    def get_config(self):
        return {**super().get_config(), "axis": self.axis}


@keras.saving.register_keras_serializable(package="tfsuite")
class GroupNormalization(_Normalization):
    """Section 1.3, group normalization: ``GN(x) = gamma * (x - mu_g) / sigma_g + beta``.

    The ``C`` channels on ``axis`` are split into ``groups`` consecutive groups
    of ``C / groups`` channels; ``mu_g`` and ``sigma_g = sqrt(var_g + epsilon)``
    are taken per sample and group, over the group's channels and every other
    non-batch axis (Wu & He, 2018). ``gamma``/``beta`` are per channel.
    ``groups=1`` normalizes each sample over all its values; ``groups=C`` is
    instance normalization.

    Args:
        groups: int, number of groups; must divide the channel count. Default 32.
        axis: int, the channel axis. Default ``-1``.
        epsilon: float > 0 added to the variance. Default ``1e-3``.
        center: bool, add ``beta``. Default True.
        scale: bool, multiply by ``gamma``. Default True.
        beta_initializer, gamma_initializer: initializers. Default
            ``"zeros"`` and ``"ones"``.
        beta_regularizer, gamma_regularizer: regularizers or None. Default None.

    Input shape: any rank >= 2, e.g. ``(batch, height, width, channels)``.
    Output shape: same as input.

    Call argument ``mask``: bool ``(batch, steps)`` or None, for a
    ``(batch, steps, channels)`` input: the statistics are taken over the
    True steps only (padded steps of a batch do not change a sequence's
    output); the padded steps are normalized with them too.

    Example:
    >>> GroupNormalization(groups=4)(np.random.randn(2, 8, 8, 16).astype("float32")).shape
    (2, 8, 8, 16)
    """

    def __init__(
        self,
        groups=32,
        axis=-1,
        epsilon=1e-3,
        center=True,
        scale=True,
        beta_initializer="zeros",
        gamma_initializer="ones",
        beta_regularizer=None,
        gamma_regularizer=None,
        **kwargs,
    ):
        super().__init__(
            epsilon=epsilon,
            center=center,
            scale=scale,
            beta_initializer=beta_initializer,
            gamma_initializer=gamma_initializer,
            beta_regularizer=beta_regularizer,
            gamma_regularizer=gamma_regularizer,
            **kwargs,
        )
        self.groups = check_positive_int("GroupNormalization groups", groups)
        if isinstance(axis, bool) or not isinstance(axis, int):
            raise ValueError(f"GroupNormalization axis must be an int, got {axis!r}")
        self.axis = axis

    def _check_input(self, input_shape):
        check_min_rank("GroupNormalization", input_shape, 2, "(batch, ..., channels)")
        rank = len(input_shape)
        axis = _normalize_axis("GroupNormalization", self.axis, rank, input_shape)
        if axis == 0:
            raise ValueError(
                "GroupNormalization axis must be a channel axis, not the batch axis 0; got "
                f"axis={self.axis} for shape {tuple(input_shape)}"
            )
        return rank, axis

    def build(self, input_shape):
        rank, axis = self._check_input(input_shape)
        channels = _known_dim("GroupNormalization", input_shape, axis, "channels")
        if channels % self.groups != 0:
            raise ValueError(
                f"GroupNormalization groups={self.groups} must divide the {channels} channels on "
                f"axis {self.axis} (shape {tuple(input_shape)}); pick a divisor of {channels}"
            )
        _add_gamma_beta(self, (channels,))
        self._channels = channels
        # x is viewed as (..., groups, channels // groups, ...) at the channel
        # axis; statistics reduce over everything but the batch and group axes.
        self._reduction_axes = [a for a in range(1, rank + 1) if a != axis]
        self._param_shape = [1] * (rank + 1)
        self._param_shape[axis] = self.groups
        self._param_shape[axis + 1] = channels // self.groups

    def call(self, inputs, mask=None):
        rank, axis = self._check_input(inputs.shape)
        if inputs.shape[axis] != self._channels:
            raise ValueError(
                f"GroupNormalization was built for {self._channels} channels on axis {self.axis}, "
                f"got shape {tuple(inputs.shape)}"
            )
        x = ops.cast(inputs, _stats_dtype(inputs))
        dynamic = ops.shape(x)
        grouped_shape = [
            dynamic[a] if inputs.shape[a] is None else inputs.shape[a] for a in range(rank)
        ]
        grouped_shape[axis : axis + 1] = [self.groups, self._channels // self.groups]
        grouped = ops.reshape(x, grouped_shape)
        if mask is None:
            mean, variance = ops.moments(grouped, axes=self._reduction_axes, keepdims=True)
        else:
            if rank != 3 or axis != 2 or len(mask.shape) != 2:
                raise ValueError(
                    f"GroupNormalization takes a mask (batch, steps) for inputs (batch, steps, channels) only; "
                    f"got inputs {tuple(inputs.shape)} and mask {tuple(mask.shape)}"
                )
            weight = ops.cast(ops.reshape(mask, (dynamic[0], dynamic[1], 1, 1)), x.dtype)
            count = ops.maximum(ops.sum(weight, axis=self._reduction_axes, keepdims=True)
                                * (self._channels // self.groups), 1.0)
            mean = ops.sum(grouped * weight, axis=self._reduction_axes, keepdims=True) / count
            variance = ops.sum(ops.square(grouped - mean) * weight, axis=self._reduction_axes, keepdims=True) / count
        gamma, beta = self._gamma_beta(x.dtype, self._param_shape)
        outputs = _apply(grouped, mean, variance, gamma, beta, self.epsilon)
        return ops.cast(ops.reshape(outputs, dynamic), self.compute_dtype)

    def get_config(self):
        return {**super().get_config(), "groups": self.groups, "axis": self.axis}


@keras.saving.register_keras_serializable(package="tfsuite")
class RMSNormalization(keras.layers.Layer):
    """Section 6.3, T5's layer norm (root mean square): ``y = gamma * x / sqrt(mean(x^2) + epsilon)``.

    Layer normalization without the mean subtraction and without ``beta``
    (Zhang & Sennrich, 2019), as in T5: the statistic is taken per position over
    the feature axis, in float32 even under mixed precision.

    Args:
        epsilon: float > 0 added to the mean square. Default ``1e-6`` (T5's).
        gamma_initializer: initializer of the scale. Default ``"ones"``.

    Input shape: ``(batch, ..., features)``. Output shape: same as input.

    Example:
    >>> RMSNormalization()(np.random.randn(2, 5, 8).astype("float32")).shape
    (2, 5, 8)
    """

    def __init__(self, epsilon=1e-6, gamma_initializer="ones", **kwargs):
        super().__init__(**kwargs)
        self.epsilon = check_positive_float("RMSNormalization epsilon", epsilon)
        self.gamma_initializer = keras.initializers.get(gamma_initializer)

    def build(self, input_shape):
        check_min_rank("RMSNormalization", input_shape, 2, "(batch, ..., features)")
        features = _known_dim("RMSNormalization", input_shape, len(input_shape) - 1, "features")
        self.gamma = self.add_weight(name="gamma", shape=(features,), initializer=self.gamma_initializer)

    def call(self, inputs):
        if inputs.shape[-1] != self.gamma.shape[0]:
            raise ValueError(
                f"RMSNormalization was built for {self.gamma.shape[0]} features, got shape {tuple(inputs.shape)}"
            )
        x = ops.cast(inputs, _stats_dtype(inputs))
        x = x * ops.rsqrt(ops.mean(ops.square(x), axis=-1, keepdims=True) + self.epsilon)
        return ops.cast(ops.cast(self.gamma, x.dtype) * x, self.compute_dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {
            **super().get_config(),
            "epsilon": self.epsilon,
            "gamma_initializer": keras.initializers.serialize(self.gamma_initializer),
        }
