"""The CNN architectures of textbook section 2.3 as functional Keras models.

LeNet-5 (1998), AlexNet (2012), VGG-16/19 (2014) and a small VGG-style
network for 28x28 images, ResNet-18/50/152 (2015) and DenseNet-121 (2017),
built only from tfsuite layers (``layers.convolution``,
``layers.normalization``, ``layers.pooling``, ``layers.perceptron`` and the
blocks in ``layers.cnn_blocks``). Every builder takes ``input_shape`` and
``num_classes`` and returns a ``keras.Model`` whose output is **logits**
(train with ``from_logits=True``; our ``Dense`` has no softmax).

At 224x224x3 with 1000 classes, ``resnet50``, ``resnet152``, ``vgg16``,
``vgg19`` and ``densenet121`` have exactly the ``count_params()`` of the
matching ``keras.applications`` model (checked in
``tests/layers/test_cnn_models.py``). For 28x28 Fashion-MNIST on a CPU, the
ResNets take ``width`` and ``small_input`` and DenseNet takes ``growth_rate``
and ``small_input`` (a 3x3 stride-1 stem without max-pool).

Example::

    from layers.cnn_models import build_cnn

    model = build_cnn("resnet18", (28, 28, 1), 10, width=16, small_input=True)
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
"""

import keras

from layers.activations import ReLU
from layers.cnn_blocks import (
    BasicBlock,
    BottleneckBlock,
    DenseBlock,
    TransitionLayer,
    VGGBlock,
)
from layers.convolution import Conv2D
from layers.normalization import BatchNormalization
from layers.perceptron import Dense
from layers.pooling import AveragePooling2D, GlobalAveragePooling2D, MaxPooling2D
from layers.validation import check_choice, check_positive_int

__all__ = [
    "CNN_BUILDERS",
    "alexnet",
    "build_cnn",
    "densenet121",
    "lenet5",
    "resnet18",
    "resnet50",
    "resnet152",
    "vgg16",
    "vgg19",
    "vgg_small",
]

_BN_EPSILON = 1.001e-5  # keras.applications' value for ResNet and DenseNet


def _image_input(model_name, input_shape, need_static=False):
    """``keras.Input`` for a ``(height, width, channels)`` shape, checked."""
    shape = tuple(input_shape)
    if len(shape) != 3:
        raise ValueError(
            f"{model_name} expects input_shape (height, width, channels), got {input_shape!r}"
        )
    if shape[-1] is None or (need_static and None in shape):
        what = "all of height, width and channels" if need_static else "the channel count"
        raise ValueError(f"{model_name} needs {what} known in input_shape, got {input_shape!r}")
    for size in shape:
        if size is not None and (int(size) != size or size < 1):
            raise ValueError(f"{model_name} input_shape needs positive sizes, got {input_shape!r}")
    return keras.Input(shape=shape, name="image")


def _require_window(x, window, model_name, input_shape, what):
    """Clear error when the feature map has become smaller than a 'valid' window."""
    height, width = x.shape[1], x.shape[2]
    for size in (height, width):
        if size is not None and size < window:
            raise ValueError(
                f"{model_name}: input_shape {tuple(input_shape)} is too small; the feature map "
                f"is {height}x{width} at {what}, which needs at least {window}x{window}. Use a "
                "larger input (or small_input=True where the builder has it)."
            )


def _classifier(x, num_classes, dropout, name="predictions"):
    """Global average pool, optional dropout, linear layer to logits."""
    x = GlobalAveragePooling2D(name="avg_pool")(x)
    if dropout:
        x = keras.layers.Dropout(dropout, name="head_dropout")(x)
    return Dense(num_classes, name=name)(x)


def _check_head_args(model_name, num_classes, dropout):
    check_positive_int(f"{model_name} num_classes", num_classes)
    if not 0.0 <= float(dropout) < 1.0:
        raise ValueError(f"{model_name} dropout must be in [0, 1), got {dropout}")


def lenet5(
    input_shape=(28, 28, 1),
    num_classes=10,
    activation="tanh",
    pooling="average",
    first_conv_padding="same",
    include_top=True,
):
    """Section 2.3, LeNet-5 (LeCun et al., 1998): conv 6@5x5 -> pool -> conv
    16@5x5 -> pool -> dense 120 -> dense 84 -> dense ``num_classes``.

    The first convolution uses "same" padding by default so 28x28 MNIST-style
    images reach the classic 5x5x16 feature map (the paper pads the digits to
    32x32 and uses "valid"; pass ``first_conv_padding="valid"`` with 32x32
    inputs for that). The paper's squashing units and subsampling are
    ``activation="tanh"`` and ``pooling="average"``; ``"relu"``/``"max"``
    is the modern variant.

    Args:
        input_shape: tuple ``(height, width, channels)``. Default (28, 28, 1).
        num_classes: int. Default 10.
        activation: str, hidden activation name. Default ``"tanh"``.
        pooling: ``"average"`` or ``"max"``, the 2x2 stride-2 pooling.
            Default ``"average"``.
        first_conv_padding: ``"same"`` or ``"valid"``. Default ``"same"``.
        include_top: bool, False returns the last pooled feature map.

    Returns:
        ``keras.Model`` from images to logits ``(batch, num_classes)``.
    """
    _check_head_args("lenet5", num_classes, 0.0)
    check_choice("lenet5 pooling", pooling, {"average", "max"})
    check_choice("lenet5 first_conv_padding", first_conv_padding, {"same", "valid"})
    pool = MaxPooling2D if pooling == "max" else AveragePooling2D
    inputs = _image_input("lenet5", input_shape, need_static=include_top)
    x = Conv2D(6, 5, padding=first_conv_padding, activation=activation, name="c1")(inputs)
    _require_window(x, 2, "lenet5", input_shape, "s2")
    x = pool(2, name="s2")(x)
    _require_window(x, 5, "lenet5", input_shape, "c3")
    x = Conv2D(16, 5, activation=activation, name="c3")(x)
    _require_window(x, 2, "lenet5", input_shape, "s4")
    x = pool(2, name="s4")(x)
    if include_top:
        x = keras.layers.Flatten(name="flatten")(x)
        x = Dense(120, activation=activation, name="c5")(x)
        x = Dense(84, activation=activation, name="f6")(x)
        x = Dense(num_classes, name="predictions")(x)
    return keras.Model(inputs, x, name="lenet5")


def alexnet(input_shape=(224, 224, 3), num_classes=1000, dropout=0.5, include_top=True):
    """Section 2.3, AlexNet (Krizhevsky et al., 2012), single-tower form:
    conv 96@11x11/4 -> maxpool 3/2 -> conv 256@5x5 -> maxpool 3/2 ->
    conv 384@3x3 -> conv 384@3x3 -> conv 256@3x3 -> maxpool 3/2 ->
    dense 4096 -> dense 4096 -> dense ``num_classes``, ReLU everywhere and
    dropout before the two hidden dense layers.

    Convolutions use "same" padding so a 224x224 input gives the paper's
    55/27/13/6 feature-map sizes (56 -> 27 -> 13 -> 6 here) and the 6x6x256
    map feeding the first dense layer: 62,378,344 parameters at 1000 classes,
    the usual "62.3M" (the paper's two-GPU grouping and local response
    normalization are left out).

    Args:
        input_shape: tuple ``(height, width, channels)``, at least 57x57.
            Default (224, 224, 3).
        num_classes: int. Default 1000.
        dropout: float, dropout rate in the classifier. Default 0.5.
        include_top: bool, False returns the last pooled feature map.
    """
    _check_head_args("alexnet", num_classes, dropout)
    inputs = _image_input("alexnet", input_shape, need_static=include_top)
    x = Conv2D(96, 11, strides=4, padding="same", activation="relu", name="conv1")(inputs)
    _require_window(x, 3, "alexnet", input_shape, "pool1")
    x = MaxPooling2D(3, strides=2, name="pool1")(x)
    x = Conv2D(256, 5, padding="same", activation="relu", name="conv2")(x)
    _require_window(x, 3, "alexnet", input_shape, "pool2")
    x = MaxPooling2D(3, strides=2, name="pool2")(x)
    x = Conv2D(384, 3, padding="same", activation="relu", name="conv3")(x)
    x = Conv2D(384, 3, padding="same", activation="relu", name="conv4")(x)
    x = Conv2D(256, 3, padding="same", activation="relu", name="conv5")(x)
    _require_window(x, 3, "alexnet", input_shape, "pool5")
    x = MaxPooling2D(3, strides=2, name="pool5")(x)
    if include_top:
        x = keras.layers.Flatten(name="flatten")(x)
        for i in (6, 7):
            if dropout:
                x = keras.layers.Dropout(dropout, name=f"dropout{i}")(x)
            x = Dense(4096, activation="relu", name=f"fc{i}")(x)
        x = Dense(num_classes, name="predictions")(x)
    return keras.Model(inputs, x, name="alexnet")


def _vgg(model_name, convs_per_block, input_shape, num_classes, dropout, include_top):
    _check_head_args(model_name, num_classes, dropout)
    inputs = _image_input(model_name, input_shape, need_static=include_top)
    x = inputs
    for i, (num_convs, filters) in enumerate(zip(convs_per_block, (64, 128, 256, 512, 512))):
        _require_window(x, 2, model_name, input_shape, f"block{i + 1}'s pool")
        x = VGGBlock(filters, num_convs=num_convs, name=f"block{i + 1}")(x)
    if include_top:
        x = keras.layers.Flatten(name="flatten")(x)
        for i in (1, 2):
            x = Dense(4096, activation="relu", name=f"fc{i}")(x)
            if dropout:
                x = keras.layers.Dropout(dropout, name=f"dropout{i}")(x)
        x = Dense(num_classes, name="predictions")(x)
    return keras.Model(inputs, x, name=model_name)


def vgg16(input_shape=(224, 224, 3), num_classes=1000, dropout=0.5, include_top=True):
    """Section 2.3, VGG-16 (Simonyan & Zisserman, 2014): ``VGGBlock`` s of
    (2, 2, 3, 3, 3) 3x3 convolutions with (64, 128, 256, 512, 512) filters,
    then dense 4096 -> 4096 -> ``num_classes``.

    Same layers and parameter count as ``keras.applications.VGG16`` (138,357,544
    at 224x224x3 and 1000 classes); the paper's dropout after each hidden dense
    layer is added (no parameters).

    Args:
        input_shape: tuple ``(height, width, channels)``, at least 32x32.
        num_classes: int. Default 1000.
        dropout: float, dropout after each hidden dense layer. Default 0.5.
        include_top: bool, False returns the block5 feature map.
    """
    return _vgg("vgg16", (2, 2, 3, 3, 3), input_shape, num_classes, dropout, include_top)


def vgg19(input_shape=(224, 224, 3), num_classes=1000, dropout=0.5, include_top=True):
    """Section 2.3, VGG-19: as ``vgg16`` with (2, 2, 4, 4, 4) convolutions per
    block (``keras.applications.VGG19``: 143,667,240 parameters)."""
    return _vgg("vgg19", (2, 2, 4, 4, 4), input_shape, num_classes, dropout, include_top)


def vgg_small(
    input_shape=(28, 28, 1),
    num_classes=10,
    width=16,
    convs_per_stage=(1, 2, 2),
    dropout=0.0,
    include_top=True,
):
    """Section 2.3, VGG's idea at the scale of 28x28 images: stages of stacked
    3x3 convolutions, ``Conv2D -> BatchNormalization -> ReLU`` each, with
    ``width * 2**s`` filters in stage ``s`` and a 2x2 max-pool between
    stages, then global average pooling and a dense classifier.

    With the defaults: 1 conv at 28x28 with ``w`` filters, pool, 2 convs at
    14x14 with ``2w``, pool, 2 convs at 7x7 with ``4w``. Parameters:
    ``sum over convs (9 c_in c_out + 4 c_out) + (c_last + 1) num_classes``
    (convolutions without bias, as batch normalization follows; BN counts
    gamma, beta and the two moving statistics). On a CPU a full-resolution
    channel costs several times one at 14x14, hence the single first conv;
    batch normalization (not in the 2014 paper) lets the stack train in a
    few epochs.

    Args:
        input_shape: tuple ``(height, width, channels)``; each pooling needs
            at least 2x2. Default (28, 28, 1).
        num_classes: int. Default 10.
        width: int, filters of the first stage; each later stage doubles
            them. Default 16.
        convs_per_stage: tuple of ints, 3x3 convolutions per stage (one
            stage per entry). Default (1, 2, 2).
        dropout: float, dropout before the classifier. Default 0.0.
        include_top: bool, False returns the last stage's feature map.

    Returns:
        ``keras.Model`` from images to logits ``(batch, num_classes)``.

    Example::

        model = vgg_small((28, 28, 1), 10, width=24)  # 28 -> 14 -> 7, 24/48/96 filters
    """
    _check_head_args("vgg_small", num_classes, dropout)
    width = check_positive_int("vgg_small width", width)
    convs_per_stage = tuple(convs_per_stage)
    if not convs_per_stage:
        raise ValueError("vgg_small convs_per_stage needs at least one stage, got ()")
    for num_convs in convs_per_stage:
        check_positive_int("vgg_small convs_per_stage entries", num_convs)
    inputs = _image_input("vgg_small", input_shape)
    x = inputs
    for stage, num_convs in enumerate(convs_per_stage):
        if stage:
            _require_window(x, 2, "vgg_small", input_shape, f"pool{stage}")
            x = MaxPooling2D(2, name=f"pool{stage}")(x)
        for i in range(num_convs):
            name = f"block{stage + 1}_conv{i + 1}"
            x = Conv2D(
                width * 2**stage,
                3,
                padding="same",
                use_bias=False,
                kernel_initializer="he_normal",
                name=name,
            )(x)
            x = BatchNormalization(epsilon=_BN_EPSILON, name=f"{name}_bn")(x)
            x = ReLU(name=f"{name}_relu")(x)
    if include_top:
        x = _classifier(x, num_classes, dropout)
    return keras.Model(inputs, x, name="vgg_small")


def _stem(x, filters, small_input, use_bias, prefix, kernel_initializer):
    """ImageNet stem (7x7/2 conv, BN, ReLU, 3x3/2 max-pool) or a 3x3/1 one."""
    if small_input:
        x = Conv2D(
            filters,
            3,
            padding="same",
            use_bias=use_bias,
            kernel_initializer=kernel_initializer,
            name=f"{prefix}_conv",
        )(x)
    else:
        x = keras.layers.ZeroPadding2D(3, name=f"{prefix}_pad")(x)
        x = Conv2D(
            filters,
            7,
            strides=2,
            use_bias=use_bias,
            kernel_initializer=kernel_initializer,
            name=f"{prefix}_conv",
        )(x)
    x = BatchNormalization(epsilon=_BN_EPSILON, name=f"{prefix}_bn")(x)
    x = ReLU(name=f"{prefix}_relu")(x)
    if not small_input:
        x = keras.layers.ZeroPadding2D(1, name="pool1_pad")(x)
        x = MaxPooling2D(3, strides=2, name="pool1_pool")(x)
    return x


def _resnet(
    model_name,
    block,
    blocks_per_stage,
    input_shape,
    num_classes,
    width,
    small_input,
    use_bias,
    dropout,
    include_top,
):
    _check_head_args(model_name, num_classes, dropout)
    width = check_positive_int(f"{model_name} width", width)
    inputs = _image_input(model_name, input_shape)
    x = _stem(inputs, width, small_input, use_bias, "conv1", "he_normal")
    for stage, num_blocks in enumerate(blocks_per_stage):
        for i in range(num_blocks):
            x = block(
                width * 2**stage,
                strides=2 if (i == 0 and stage > 0) else 1,
                use_bias=use_bias,
                name=f"conv{stage + 2}_block{i + 1}",
            )(x)
    if include_top:
        x = _classifier(x, num_classes, dropout)
    return keras.Model(inputs, x, name=model_name)


def resnet18(
    input_shape=(224, 224, 3),
    num_classes=1000,
    width=64,
    small_input=False,
    use_bias=True,
    dropout=0.0,
    include_top=True,
):
    """Section 2.3, ResNet-18 (He et al., 2015): stem, four stages of two
    ``BasicBlock`` s with ``width * (1, 2, 4, 8)`` filters (stride 2 entering
    stages 3-5, 1x1 projection shortcuts there), global average pool, dense.

    Args:
        input_shape: tuple ``(height, width, channels)``. Default (224, 224, 3).
        num_classes: int. Default 1000.
        width: int, stem and first-stage channels; later stages double it.
            Default 64 (the paper's).
        small_input: bool, True replaces the 7x7/2 conv + 3x3/2 max-pool stem
            with a 3x3 stride-1 conv (for 28x28 or 32x32 images). Default False.
        use_bias: bool, conv biases, as in ``keras.applications``' ResNets
            (False gives the paper's/torchvision's 11,689,512 parameters
            without batch-norm moving statistics). Default True.
        dropout: float, dropout before the classifier. Default 0.0.
        include_top: bool, False returns the last stage's feature map.
    """
    return _resnet(
        "resnet18", BasicBlock, (2, 2, 2, 2), input_shape, num_classes,
        width, small_input, use_bias, dropout, include_top,
    )  # fmt: skip


def resnet50(
    input_shape=(224, 224, 3),
    num_classes=1000,
    width=64,
    small_input=False,
    use_bias=True,
    dropout=0.0,
    include_top=True,
):
    """Section 2.3, ResNet-50: stem, stages of (3, 4, 6, 3) ``BottleneckBlock`` s
    with bottleneck widths ``width * (1, 2, 4, 8)`` (outputs 4x that).

    With the defaults it is ``keras.applications.ResNet50`` layer for layer
    (25,636,712 parameters at 224x224x3, 1000 classes). Arguments as in
    ``resnet18``.
    """
    return _resnet(
        "resnet50", BottleneckBlock, (3, 4, 6, 3), input_shape, num_classes,
        width, small_input, use_bias, dropout, include_top,
    )  # fmt: skip


def resnet152(
    input_shape=(224, 224, 3),
    num_classes=1000,
    width=64,
    small_input=False,
    use_bias=True,
    dropout=0.0,
    include_top=True,
):
    """Section 2.3, ResNet-152, the textbook's "152-layer" network: stages of
    (3, 8, 36, 3) ``BottleneckBlock`` s (``keras.applications.ResNet152``:
    60,419,944 parameters). Arguments as in ``resnet18``.
    """
    return _resnet(
        "resnet152", BottleneckBlock, (3, 8, 36, 3), input_shape, num_classes,
        width, small_input, use_bias, dropout, include_top,
    )  # fmt: skip


def densenet121(
    input_shape=(224, 224, 3),
    num_classes=1000,
    growth_rate=32,
    small_input=False,
    reduction=0.5,
    dropout=0.0,
    include_top=True,
):
    """Section 2.3, DenseNet-121 (Huang et al., 2017): stem with
    ``2 * growth_rate`` channels, ``DenseBlock`` s of (6, 12, 24, 16) layers
    separated by ``TransitionLayer`` s, then BN, ReLU, global average pool and
    a dense classifier.

    With the defaults it is ``keras.applications.DenseNet121`` layer for layer
    (8,062,504 parameters at 224x224x3, 1000 classes).

    Args:
        input_shape: tuple ``(height, width, channels)``. At least 32x32
            (8x8 with ``small_input``). Default (224, 224, 3).
        num_classes: int. Default 1000.
        growth_rate: int, ``k``. Default 32.
        small_input: bool, a 3x3 stride-1 stem without max-pool. Default False.
        reduction: float, transition compression ``theta``. Default 0.5.
        dropout: float, dropout before the classifier. Default 0.0.
        include_top: bool, False returns the features after the final BN/ReLU.
    """
    _check_head_args("densenet121", num_classes, dropout)
    growth_rate = check_positive_int("densenet121 growth_rate", growth_rate)
    inputs = _image_input("densenet121", input_shape)
    x = _stem(inputs, 2 * growth_rate, small_input, False, "conv1", "he_normal")
    blocks = (6, 12, 24, 16)
    for i, num_layers in enumerate(blocks):
        x = DenseBlock(num_layers, growth_rate=growth_rate, name=f"conv{i + 2}")(x)
        if i < len(blocks) - 1:
            _require_window(x, 2, "densenet121", input_shape, f"pool{i + 2}")
            x = TransitionLayer(reduction, name=f"pool{i + 2}")(x)
    x = BatchNormalization(epsilon=_BN_EPSILON, name="bn")(x)
    x = ReLU(name="relu")(x)
    if include_top:
        x = _classifier(x, num_classes, dropout)
    return keras.Model(inputs, x, name="densenet121")


CNN_BUILDERS = {
    "lenet5": lenet5,
    "alexnet": alexnet,
    "vgg16": vgg16,
    "vgg19": vgg19,
    "vgg_small": vgg_small,
    "resnet18": resnet18,
    "resnet50": resnet50,
    "resnet152": resnet152,
    "densenet121": densenet121,
}


def build_cnn(name, input_shape, num_classes, **kwargs):
    """Build a section-2.3 architecture by name.

    Args:
        name: one of ``CNN_BUILDERS`` (``lenet5``, ``alexnet``, ``vgg16``,
            ``vgg19``, ``vgg_small``, ``resnet18``, ``resnet50``, ``resnet152``,
            ``densenet121``).
        input_shape: tuple ``(height, width, channels)``.
        num_classes: int.
        **kwargs: builder options (``width``, ``small_input``,
            ``growth_rate``, ``dropout``, ...).
    """
    try:
        builder = CNN_BUILDERS[name]
    except (KeyError, TypeError):
        raise ValueError(
            f"unknown CNN architecture {name!r}; choose one of {', '.join(CNN_BUILDERS)}"
        ) from None
    return builder(input_shape=input_shape, num_classes=num_classes, **kwargs)
