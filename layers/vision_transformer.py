"""Section 7.2, the Vision Transformer (ViT; Dosovitskiy et al., 2021): an image read as a sequence of patches.

An image ``x`` of shape ``(H, W, C)`` is cut into ``N = HW / P^2`` patches
``x_p^i`` of ``P x P x C`` pixels, each flattened and projected by one matrix
``E`` of shape ``(P^2 C, D)``; a learned class token ``x_class`` is prepended
and learned position embeddings ``E_pos`` of shape ``(1 + N, D)`` are added
(the paper's equations 1-4):

    z_0  = [x_class; x_p^1 E; ...; x_p^N E] + E_pos
    z'_l = MSA(LN(z_(l-1))) + z_(l-1)           l = 1..L
    z_l  = MLP(LN(z'_l)) + z'_l
    y    = LN(z_L^0)

The blocks are the pre-LN encoder layers of chapter 5
(``layers.transformer.TransformerEncoderLayer(normalize_first=True)``) with
the exact erf GELU (``"gelu_exact"``) in the MLP and a final layer norm.

- :class:`PatchEmbedding`: the patch split and projection ``x_p^i E + b``, as
  a strided convolution (``method="conv"``, kernel = stride = ``P``) or as the
  explicit reshape to ``(N, P^2 C)`` and a matmul (``method="reshape"``); the
  two share one kernel and give the same output.
- :class:`ViTEmbeddings`: ``z_0``. On images of another size than the one the
  position table was made for, the ``sqrt(N) x sqrt(N)`` grid of patch
  positions is resized (bicubic by default, as in the paper's section 3.2 for
  fine-tuning at a higher resolution); the class-token row is kept as it is.
- :class:`VisionTransformer`: the backbone, ``{"sequence_output": z_L after
  LN, "pooled_output": y}``.
- :class:`ViTClassifier` and :func:`vit_classifier`: a linear head on ``y``
  (logits), sized by default for Fashion-MNIST (28x28x1, 7x7 patches).

The weights map one to one onto ``keras_hub.models.ViTBackbone``
(:func:`load_keras_hub_vit` copies them; ``tests/layers/test_vision_transformer.py``
checks equal hidden states to 1e-5). keras-hub's MLP uses ``keras.layers.Dense(activation="gelu")``,
which is the exact erf GELU, and layer-norm epsilon ``1e-6``; both are our defaults.

Example::

    vit = vit_classifier(input_shape=(28, 28, 1), num_classes=10, patch_size=7)
    logits = vit(np.zeros((2, 28, 28, 1), "float32"))        # (2, 10)
"""

import keras
import numpy as np
from keras import ops

from layers.dropout import Dropout
from layers.normalization import LayerNormalization
from layers.perceptron import Dense
from layers.transformer import TransformerEncoderLayer, head_size
from layers.validation import check_choice, check_int_tuple, check_positive_float, check_positive_int, check_rank

__all__ = ["PatchEmbedding", "ViTEmbeddings", "VisionTransformer", "ViTClassifier", "load_keras_hub_vit",
           "vit_classifier"]

_METHODS = ("conv", "reshape")
_INTERPOLATIONS = ("bilinear", "bicubic")
_ACTIVATIONS = ("gelu", "gelu_exact")
_IMAGE_LAYOUT = "(batch, height, width, channels)"


def _grid(layer_name, height, width, patch_size):
    """``(H / P_h, W / P_w)``; ValueError when a side is unknown or not a multiple of the patch."""
    if height is None or width is None:
        raise ValueError(
            f"{layer_name} needs a known image height and width to cut patches, got height={height}, width={width}"
        )
    if height % patch_size[0] or width % patch_size[1]:
        raise ValueError(
            f"{layer_name}: image size {height}x{width} is not divisible by patch_size {patch_size[0]}x"
            f"{patch_size[1]}; resize or crop the images to multiples of the patch size"
        )
    return height // patch_size[0], width // patch_size[1]


@keras.saving.register_keras_serializable(package="tfsuite")
class PatchEmbedding(keras.layers.Layer):
    """Section 7.2, patch embedding: ``e_i = x_p^i E + b`` for the ``N = HW / P^2`` non-overlapping patches.

    Two equivalent forms, one kernel ``E`` stored as ``(P_h, P_w, C, D)`` (the
    layout of a ``Conv2D`` kernel and of keras-hub's ViT):

    - ``method="conv"``: a convolution with kernel size = stride = ``P``,
      ``"valid"`` padding, then the ``(H/P, W/P)`` map flattened row-major;
    - ``method="reshape"``: the image reshaped to ``(batch, N, P_h P_w C)``
      patches (row-major, pixels in ``(row, column, channel)`` order) times
      ``E`` reshaped to ``(P_h P_w C, D)``, the paper's ``x_p E``.

    Args:
        hidden_dim: int, the embedding width ``D``.
        patch_size: int or ``(P_h, P_w)``, patch height and width.
        method: str, ``"conv"`` (default) or ``"reshape"``.
        use_bias: bool, add ``b``. Default True.
        kernel_initializer: initializer for ``E``. Default ``"glorot_uniform"``.
        bias_initializer: initializer for ``b``. Default ``"zeros"``.

    Input shape: ``(batch, H, W, C)`` with ``H`` and ``W`` multiples of the patch size.
    Output shape: ``(batch, N, D)``, ``N = (H / P_h) (W / P_w)``.

    Example:
    >>> PatchEmbedding(32, patch_size=4)(np.zeros((2, 16, 12, 3), "float32")).shape
    (2, 12, 32)
    """

    def __init__(
        self,
        hidden_dim,
        patch_size,
        method="conv",
        use_bias=True,
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.hidden_dim = check_positive_int("PatchEmbedding hidden_dim", hidden_dim)
        self.patch_size = check_int_tuple("PatchEmbedding patch_size", patch_size, 2)
        self.method = check_choice("PatchEmbedding method", method, _METHODS)
        self.use_bias = bool(use_bias)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)

    def _check_images(self, shape):
        check_rank("PatchEmbedding", shape, 4, _IMAGE_LAYOUT)
        return _grid("PatchEmbedding", shape[1], shape[2], self.patch_size)

    def build(self, input_shape):
        self._check_images(input_shape)
        channels = input_shape[-1]
        if channels is None:
            raise ValueError(f"PatchEmbedding needs a known channel count, got shape {tuple(input_shape)}")
        self.kernel = self.add_weight(
            name="kernel", shape=(*self.patch_size, channels, self.hidden_dim), initializer=self.kernel_initializer
        )
        self.bias = None
        if self.use_bias:
            self.bias = self.add_weight(name="bias", shape=(self.hidden_dim,), initializer=self.bias_initializer)

    def call(self, images):
        rows, cols = self._check_images(images.shape)
        channels = self.kernel.shape[2]
        if images.shape[-1] != channels:
            raise ValueError(
                f"PatchEmbedding was built for {channels} channels, got images of shape {tuple(images.shape)}"
            )
        p_h, p_w = self.patch_size
        if self.method == "conv":
            x = ops.conv(images, self.kernel, strides=self.patch_size, padding="valid", data_format="channels_last")
            x = ops.reshape(x, (-1, rows * cols, self.hidden_dim))
        else:
            x = ops.reshape(images, (-1, rows, p_h, cols, p_w, channels))
            x = ops.transpose(x, (0, 1, 3, 2, 4, 5))
            x = ops.reshape(x, (-1, rows * cols, p_h * p_w * channels))
            x = ops.matmul(x, ops.reshape(self.kernel, (p_h * p_w * channels, self.hidden_dim)))
        return x if self.bias is None else x + self.bias

    def compute_output_shape(self, input_shape):
        rows, cols = self._check_images(input_shape)
        return (input_shape[0], rows * cols, self.hidden_dim)

    def get_config(self):
        return {
            **super().get_config(),
            "hidden_dim": self.hidden_dim,
            "patch_size": self.patch_size,
            "method": self.method,
            "use_bias": self.use_bias,
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
            "bias_initializer": keras.initializers.serialize(self.bias_initializer),
        }


@keras.saving.register_keras_serializable(package="tfsuite")
class ViTEmbeddings(keras.layers.Layer):
    """Section 7.2, ViT input embedding: ``z_0 = [x_class; x_p^1 E; ...; x_p^N E] + E_pos``.

    The position table ``E_pos`` has ``1 + N`` rows for the image size it was
    made for (``image_size``): row 0 for the class token, then the patches in
    row-major order. Called on images whose patch grid differs, the patch rows
    are read as a ``(H/P, W/P, D)`` image and resized to the new grid
    (``keras.ops.image.resize``, half-pixel centres, no antialiasing); row 0
    is kept.

    Args:
        hidden_dim: int, the width ``D``.
        patch_size: int or ``(P_h, P_w)``.
        image_size: ``(H, W)`` that sizes the position table, or None to take
            it from the first input (build) shape. Default None.
        method: ``"conv"`` or ``"reshape"``, see :class:`PatchEmbedding`. Default ``"conv"``.
        interpolation: ``"bicubic"`` (default) or ``"bilinear"``, how the
            position grid is resized for other image sizes.
        dropout: float in [0, 1), dropout on ``z_0`` while training. Default 0.

    Weights: the patch embedding's ``kernel`` ``(P_h, P_w, C, D)`` and
    ``bias`` ``(D,)``, ``class_token`` ``(D,)`` (zeros at first, as the
    paper's code), ``position_embeddings`` ``(1 + N, D)`` (``N(0, 0.02)``).

    Input shape: ``(batch, H', W', C)``. Output shape: ``(batch, 1 + N', D)``.

    Example:
    >>> emb = ViTEmbeddings(16, patch_size=4, image_size=(8, 8))
    >>> emb(np.zeros((2, 8, 8, 3), "float32")).shape, emb(np.zeros((2, 12, 8, 3), "float32")).shape
    ((2, 5, 16), (2, 7, 16))
    """

    def __init__(
        self,
        hidden_dim,
        patch_size,
        image_size=None,
        method="conv",
        interpolation="bicubic",
        dropout=0.0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.hidden_dim = check_positive_int("ViTEmbeddings hidden_dim", hidden_dim)
        self.patch_size = check_int_tuple("ViTEmbeddings patch_size", patch_size, 2)
        self.image_size = None if image_size is None else check_int_tuple("ViTEmbeddings image_size", image_size, 2)
        if self.image_size is not None:
            _grid("ViTEmbeddings image_size", *self.image_size, self.patch_size)
        self.method = check_choice("ViTEmbeddings method", method, _METHODS)
        self.interpolation = check_choice("ViTEmbeddings interpolation", interpolation, _INTERPOLATIONS)
        self.dropout = check_positive_float("ViTEmbeddings dropout", dropout, allow_zero=True)
        self.patch_embedding = PatchEmbedding(
            self.hidden_dim, self.patch_size, method=self.method, dtype=self.dtype_policy, name="patch_embedding"
        )
        self.dropout_layer = Dropout(self.dropout, dtype=self.dtype_policy, name="dropout") if self.dropout else None

    def build(self, input_shape):
        check_rank("ViTEmbeddings", input_shape, 4, _IMAGE_LAYOUT)
        if self.image_size is None:
            self.image_size = (input_shape[1], input_shape[2])
        self.grid_size = _grid("ViTEmbeddings", *self.image_size, self.patch_size)
        self.patch_embedding.build((None, *self.image_size, input_shape[-1]))
        self.class_token = self.add_weight(name="class_token", shape=(self.hidden_dim,), initializer="zeros")
        self.position_embeddings = self.add_weight(
            name="position_embeddings",
            shape=(1 + self.grid_size[0] * self.grid_size[1], self.hidden_dim),
            initializer=keras.initializers.RandomNormal(stddev=0.02),
        )

    def position_table(self, grid_size):
        """``E_pos`` for a ``(rows, cols)`` patch grid: ``(1 + rows * cols, D)``, the grid resized if it differs."""
        rows, cols = (int(n) for n in grid_size)
        if (rows, cols) == tuple(self.grid_size):
            return self.position_embeddings
        table = ops.convert_to_tensor(self.position_embeddings)
        grid = ops.reshape(table[1:], (*self.grid_size, self.hidden_dim))
        grid = ops.image.resize(grid, (rows, cols), interpolation=self.interpolation, data_format="channels_last")
        return ops.concatenate([table[:1], ops.reshape(ops.cast(grid, table.dtype), (rows * cols, self.hidden_dim))], 0)

    def call(self, images, training=None):
        check_rank("ViTEmbeddings", images.shape, 4, _IMAGE_LAYOUT)
        grid = _grid("ViTEmbeddings", images.shape[1], images.shape[2], self.patch_size)
        patches = self.patch_embedding(images)
        class_token = ops.broadcast_to(
            ops.reshape(ops.cast(self.class_token, patches.dtype), (1, 1, self.hidden_dim)),
            (ops.shape(patches)[0], 1, self.hidden_dim),
        )
        x = ops.concatenate([class_token, patches], axis=1) + ops.cast(self.position_table(grid), patches.dtype)
        return x if self.dropout_layer is None else self.dropout_layer(x, training=training)

    def compute_output_shape(self, input_shape):
        rows, cols = _grid("ViTEmbeddings", input_shape[1], input_shape[2], self.patch_size)
        return (input_shape[0], 1 + rows * cols, self.hidden_dim)

    def get_config(self):
        return {
            **super().get_config(),
            "hidden_dim": self.hidden_dim,
            "patch_size": self.patch_size,
            "image_size": self.image_size,
            "method": self.method,
            "interpolation": self.interpolation,
            "dropout": self.dropout,
        }


@keras.saving.register_keras_serializable(package="tfsuite")
class VisionTransformer(keras.Model):
    """Section 7.2, the ViT encoder: ``z_0`` (:class:`ViTEmbeddings`), ``L`` pre-LN blocks, ``y = LN(z_L^0)``.

    Each block is ``layers.transformer.TransformerEncoderLayer`` with
    ``normalize_first=True``: ``z' = z + MSA(LN(z))``, ``z = z' + MLP(LN(z'))``,
    ``MLP(u) = GELU(u W_1 + b_1) W_2 + b_2``. That is keras-hub's
    ``ViTEncoderBlock`` step for step, so no ViT-specific block is needed. One
    ``dropout`` rate serves the embeddings, the attention weights, the MLP's
    hidden activations and both residual branches; keras-hub has a separate
    ``attention_dropout``, which our encoder layer does not split off (it only
    matters in training).

    Args:
        image_shape: ``(H, W, C)`` the model is made for; sizes the position
            table. Other sizes (multiples of the patch) still run, with the
            position grid resized.
        patch_size: int or ``(P_h, P_w)``.
        num_layers: int, ``L``.
        num_heads: int, attention heads; must divide ``hidden_dim``.
        hidden_dim: int, ``D``.
        mlp_dim: int, the MLP's hidden width (``4 D`` in the paper).
        dropout: float in [0, 1). Default 0.
        activation: ``"gelu_exact"`` (erf, as the paper and keras-hub, default)
            or ``"gelu"`` (tanh approximation).
        layer_norm_epsilon: float. Default ``1e-6`` (the paper's code and keras-hub).
        method: patch embedding form, ``"conv"`` or ``"reshape"``. Default ``"conv"``.
        interpolation: position-grid resize, ``"bicubic"`` or ``"bilinear"``. Default ``"bicubic"``.

    Call arguments:
        images: float ``(batch, H', W', C)``, ``H'`` and ``W'`` multiples of the patch size.

    Returns:
        dict ``{"sequence_output": (batch, 1 + N, D), "pooled_output": (batch, D)}``,
        both after the final layer norm; ``pooled_output`` is the class token, row 0.

    Example:
    >>> vit = VisionTransformer((16, 16, 3), 4, num_layers=2, num_heads=2, hidden_dim=32, mlp_dim=64)
    >>> out = vit(np.zeros((2, 16, 16, 3), "float32"))
    >>> out["sequence_output"].shape, out["pooled_output"].shape
    ((2, 17, 32), (2, 32))
    """

    def __init__(
        self,
        image_shape,
        patch_size,
        num_layers,
        num_heads,
        hidden_dim,
        mlp_dim,
        dropout=0.0,
        activation="gelu_exact",
        layer_norm_epsilon=1e-6,
        method="conv",
        interpolation="bicubic",
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.image_shape = check_int_tuple("VisionTransformer image_shape", image_shape, 3)
        self.patch_size = check_int_tuple("VisionTransformer patch_size", patch_size, 2)
        _grid("VisionTransformer image_shape", *self.image_shape[:2], self.patch_size)
        self.num_layers = check_positive_int("VisionTransformer num_layers", num_layers)
        self.num_heads = check_positive_int("VisionTransformer num_heads", num_heads)
        self.hidden_dim = check_positive_int("VisionTransformer hidden_dim", hidden_dim)
        head_size("VisionTransformer", self.hidden_dim, self.num_heads)
        self.mlp_dim = check_positive_int("VisionTransformer mlp_dim", mlp_dim)
        self.dropout = check_positive_float("VisionTransformer dropout", dropout, allow_zero=True)
        self.activation = check_choice("VisionTransformer activation", activation, _ACTIVATIONS)
        self.layer_norm_epsilon = check_positive_float("VisionTransformer layer_norm_epsilon", layer_norm_epsilon)
        self.method = check_choice("VisionTransformer method", method, _METHODS)
        self.interpolation = check_choice("VisionTransformer interpolation", interpolation, _INTERPOLATIONS)
        self.embeddings = ViTEmbeddings(
            self.hidden_dim, self.patch_size, image_size=self.image_shape[:2], method=self.method,
            interpolation=self.interpolation, dropout=self.dropout, name="embeddings",
        )
        self.transformer_layers = [
            TransformerEncoderLayer(
                self.mlp_dim, self.num_heads, dropout=self.dropout, activation=self.activation,
                layer_norm_epsilon=self.layer_norm_epsilon, normalize_first=True, name=f"transformer_layer_{i}",
            )
            for i in range(self.num_layers)
        ]
        self.layer_norm = LayerNormalization(epsilon=self.layer_norm_epsilon, name="layer_norm")

    def build(self, input_shape=None):
        self.embeddings.build((None, *self.image_shape))
        shape = (None, None, self.hidden_dim)
        for layer in self.transformer_layers:
            layer.build(shape)
        self.layer_norm.build(shape)
        self.built = True

    def call(self, images, training=None):
        check_rank("VisionTransformer images", images.shape, 4, _IMAGE_LAYOUT)
        if images.shape[-1] != self.image_shape[-1]:
            raise ValueError(
                f"VisionTransformer was made for {self.image_shape[-1]} channels (image_shape={self.image_shape}), "
                f"got images of shape {tuple(images.shape)}"
            )
        x = self.embeddings(images, training=training)
        for layer in self.transformer_layers:
            x = layer(x, training=training)
        x = self.layer_norm(x)
        return {"sequence_output": x, "pooled_output": x[:, 0, :]}

    def get_config(self):
        return {
            **super().get_config(),
            "image_shape": self.image_shape,
            "patch_size": self.patch_size,
            "num_layers": self.num_layers,
            "num_heads": self.num_heads,
            "hidden_dim": self.hidden_dim,
            "mlp_dim": self.mlp_dim,
            "dropout": self.dropout,
            "activation": self.activation,
            "layer_norm_epsilon": self.layer_norm_epsilon,
            "method": self.method,
            "interpolation": self.interpolation,
        }


@keras.saving.register_keras_serializable(package="tfsuite")
class ViTClassifier(keras.Model):
    """Section 7.2, image classification with ViT: ``logits = dropout(y) W + b`` on the class token ``y``.

    Args:
        backbone: :class:`VisionTransformer`.
        num_classes: int.
        dropout: float in [0, 1), dropout on ``y`` before the head. Default 0.

    Call arguments: ``images`` as :class:`VisionTransformer`.

    Returns: logits ``(batch, num_classes)`` (train with ``from_logits=True``).

    Example::

        model = ViTClassifier(VisionTransformer((28, 28, 1), 7, 4, 4, 64, 128), num_classes=10)
        model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    """

    def __init__(self, backbone, num_classes, dropout=0.0, **kwargs):
        super().__init__(**kwargs)
        if isinstance(backbone, dict):
            backbone = keras.saving.deserialize_keras_object(backbone)
        if not isinstance(backbone, VisionTransformer):
            raise ValueError(f"ViTClassifier needs a VisionTransformer backbone, got {type(backbone).__name__}")
        self.backbone = backbone
        self.num_classes = check_positive_int("ViTClassifier num_classes", num_classes)
        self.dropout = check_positive_float("ViTClassifier dropout", dropout, allow_zero=True)
        self.head_dropout = Dropout(self.dropout, name="head_dropout") if self.dropout else None
        self.head = Dense(self.num_classes, name="head")

    def build(self, input_shape=None):
        if not self.backbone.built:
            self.backbone.build()
        self.head.build((None, self.backbone.hidden_dim))
        self.built = True

    def call(self, images, training=None):
        pooled = self.backbone(images, training=training)["pooled_output"]
        if self.head_dropout is not None:
            pooled = self.head_dropout(pooled, training=training)
        return self.head(pooled)

    def get_config(self):
        return {
            **super().get_config(),
            "backbone": keras.saving.serialize_keras_object(self.backbone),
            "num_classes": self.num_classes,
            "dropout": self.dropout,
        }


def vit_classifier(input_shape=(28, 28, 1), num_classes=10, patch_size=7, num_layers=4, num_heads=4, hidden_dim=64,
                   mlp_dim=128, dropout=0.1, head_dropout=0.0, **kwargs):
    """A small ViT classifier, by default for Fashion-MNIST: 28x28x1 images, 7x7 patches (16 tokens + [class]).

    The signature follows ``layers.cnn_models.build_cnn``'s builders
    (``input_shape``, ``num_classes``, options). ``patch_size=4`` gives 49
    patches: finer, about 3x the attention cost.

    Args:
        input_shape: ``(H, W, C)``. Default ``(28, 28, 1)``.
        num_classes: int. Default 10.
        patch_size, num_layers, num_heads, hidden_dim, mlp_dim, dropout: as
            :class:`VisionTransformer` (defaults 7, 4, 4, 64, 128, 0.1).
        head_dropout: float, dropout before the head. Default 0.
        **kwargs: other :class:`VisionTransformer` arguments (``activation``,
            ``layer_norm_epsilon``, ``method``, ``interpolation``).

    Returns: a built :class:`ViTClassifier` returning logits (built, like the CNN builders'
    functional models, so that an optimizer made before the first batch sees every weight).
    """
    backbone = VisionTransformer(input_shape, patch_size, num_layers, num_heads, hidden_dim, mlp_dim,
                                 dropout=dropout, name="vit", **kwargs)
    model = ViTClassifier(backbone, num_classes, dropout=head_dropout, name="vit_classifier")
    model.build((None, *backbone.image_shape))
    return model


def load_keras_hub_vit(ours, hub_backbone):
    """Copy the weights of a ``keras_hub.models.ViTBackbone`` into our :class:`VisionTransformer`; returns ``ours``.

    The mapping, keras-hub -> ours: ``vit_patching_and_embedding`` ``patch_embedding`` (Conv2D kernel, bias)
    -> ``embeddings.patch_embedding``; its ``class_token`` ``(1, 1, D)`` -> ``embeddings.class_token`` ``(D,)``;
    its ``position_embedding`` ``(1 + N, D)`` -> ``embeddings.position_embeddings``; per block ``ln_1`` ->
    ``self_attention_layer_norm``, ``mha`` -> ``self_attention`` (same kernel layouts), ``ln_2`` ->
    ``feedforward_layer_norm``, ``mlp.dense_1``/``dense_2`` -> ``feedforward.intermediate_dense``/``output_dense``;
    ``vit_encoder.ln`` -> ``layer_norm``.

    Raises:
        ValueError: the two models differ in a setting that changes the function (sizes, patch, epsilon,
        no class token or biases, channels-first data), or a weight shape differs.
    """
    if not isinstance(ours, VisionTransformer):
        raise ValueError(f"load_keras_hub_vit needs our VisionTransformer, got {type(ours).__name__}")
    hub_patch = check_int_tuple("keras-hub patch_size", hub_backbone.patch_size, 2)
    expected = {
        "image_shape": (tuple(hub_backbone.image_shape), ours.image_shape),
        "patch_size": (hub_patch, ours.patch_size),
        "num_layers": (hub_backbone.num_layers, ours.num_layers),
        "num_heads": (hub_backbone.num_heads, ours.num_heads),
        "hidden_dim": (hub_backbone.hidden_dim, ours.hidden_dim),
        "mlp_dim": (hub_backbone.mlp_dim, ours.mlp_dim),
        "layer_norm_epsilon": (float(hub_backbone.layer_norm_epsilon), ours.layer_norm_epsilon),
        "use_class_token": (hub_backbone.use_class_token, True),
        "use_mha_bias": (hub_backbone.use_mha_bias, True),
        "use_mlp_bias": (hub_backbone.use_mlp_bias, True),
        "use_patch_bias": (hub_backbone.use_patch_bias, True),
        "data_format": (hub_backbone.data_format, "channels_last"),
    }
    wrong = {name: pair for name, pair in expected.items() if pair[0] != pair[1]}
    if wrong:
        raise ValueError(
            "load_keras_hub_vit: the models differ in "
            + ", ".join(f"{name} (keras-hub {theirs!r}, ours {mine!r})" for name, (theirs, mine) in wrong.items())
            + "; build our VisionTransformer with keras-hub's settings"
        )
    if ours.activation != "gelu_exact":
        raise ValueError("load_keras_hub_vit: keras-hub's ViT MLP uses the exact GELU; build ours with "
                         f"activation='gelu_exact', got {ours.activation!r}")
    if not ours.built:
        ours.build()

    def assign(variable, value):
        value = np.asarray(keras.ops.convert_to_numpy(value), "float32")
        if tuple(variable.shape) != value.shape:
            raise ValueError(f"{variable.path}: keras-hub shape {value.shape}, ours {tuple(variable.shape)}")
        variable.assign(value)

    def copy_layer(mine, theirs):
        if len(mine.weights) != len(theirs.weights):
            raise ValueError(f"{mine.name}: {len(theirs.weights)} keras-hub weights, {len(mine.weights)} ours")
        for variable, value in zip(mine.weights, theirs.weights):
            assign(variable, value)

    embedding = hub_backbone.get_layer("vit_patching_and_embedding")
    copy_layer(ours.embeddings.patch_embedding, embedding.patch_embedding)
    assign(ours.embeddings.class_token, keras.ops.convert_to_numpy(embedding.class_token).reshape(-1))  # (1, 1, D)
    assign(ours.embeddings.position_embeddings, embedding.position_embedding.embeddings)
    encoder = hub_backbone.get_layer("vit_encoder")
    for mine, block in zip(ours.transformer_layers, encoder.encoder_layers):
        copy_layer(mine.self_attention_layer_norm, block.layer_norm_1)
        copy_layer(mine.self_attention, block.mha)  # query, key, value, output: kernels then biases, same shapes
        copy_layer(mine.feedforward_layer_norm, block.layer_norm_2)
        copy_layer(mine.feedforward.intermediate_dense, block.mlp.dense_1)
        copy_layer(mine.feedforward.output_dense, block.mlp.dense_2)
    copy_layer(ours.layer_norm, encoder.layer_norm)
    return ours
