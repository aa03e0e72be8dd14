"""Section 7.3, DETR (Carion et al., 2020): object detection as direct set prediction with a Transformer.

A CNN backbone maps the image ``x`` of shape ``(H, W, 3)`` to a feature map
``f`` of shape ``(H/s, W/s, C)``; a 1x1 convolution projects it to ``d``
channels, it is flattened to ``N = HW/s^2`` tokens and the Transformer
encoder-decoder of chapter 5 reads it. ``Q`` learned **object queries**
``q_1..q_Q`` go through the decoder, each attending to the encoded image, and
two heads turn every decoder output ``h_i`` into one prediction:

    z_0     = flatten(W_p * f)                        (batch, N, d)
    z       = Encoder(z_0; P)                          P: 2-D sine positions
    h       = LN(Decoder(0; q, z, P))                  (batch, Q, d)
    logits  = h W_c + b_c                              (batch, Q, C + 1), class C is "no object"
    boxes   = sigmoid(MLP_3(h))                        (batch, Q, 4), (cx, cy, w, h) in [0, 1]

Positions. As in DETR, the positions are not added once to the input: at
every layer they are added to the attention **queries and keys** and never to
the values. Encoder self-attention: ``q = k = z + P``, ``v = z``. Decoder
self-attention: ``q = k = t + q_obj``, ``v = t``; cross-attention: query
``t + q_obj``, keys ``z + P``, values ``z``. The decoder input ``t`` starts at
zero, so the object queries ``q_obj`` are the only thing that tells the ``Q``
slots apart. Our chapter-5 layers (``layers.transformer``) call their
attention on one sequence, so :class:`DETREncoderLayer` and
:class:`DETRDecoderLayer` subclass them: the same sub-layers and weights
(``build`` is inherited), only ``call`` passes ``[query, value, key]`` to the
same ``MultiHeadAttention``. With no positions they compute exactly what their
parents compute (with ``use_causal_mask=False`` in the decoder: DETR's queries
see each other both ways).

- :class:`SinePositionEncoding2D`: DETR's ``PositionEmbeddingSine``, ``d/2``
  channels of sines/cosines of the row, ``d/2`` of the column.
- :class:`DETRBackbone`: a small ResNet of section 2.3 (``BasicBlock`` stages
  after a strided 3x3 stem); any Keras layer or model that returns a rank-4
  feature map can take its place (e.g. ``layers.cnn_models.resnet50(include_top=False)``).
- :class:`DETR`: the detector, ``{"logits": (batch, Q, C + 1), "boxes": (batch, Q, 4)}``.

The set loss (Hungarian matching, cross-entropy with a down-weighted
"no object" class, L1 and generalized IoU on the matched boxes) is a training
procedure, not a layer: ``apps/detr_loss.py``.

Not implemented: DETR's pixel mask for batches of differently sized images
(images here are resized/padded to one size by the pipeline and the padding
is read as image), the auxiliary losses on every decoder layer, and the frozen
batch norm of the pretrained backbone.

Example::

    model = detr(num_classes=3, backbone_filters=(16, 32), num_queries=10, hidden_dim=32, num_heads=2,
                 num_encoder_layers=1, num_decoder_layers=1, intermediate_dim=64)
    out = model(np.zeros((2, 64, 64, 3), "float32"))
    out["logits"].shape, out["boxes"].shape       # (2, 10, 4), (2, 10, 4)
"""

import math

import keras
import numpy as np
from keras import ops

from layers.cnn_blocks import BasicBlock
from layers.convolution import Conv2D
from layers.normalization import BatchNormalization, LayerNormalization
from layers.perceptron import Dense
from layers.transformer import TransformerDecoderLayer, TransformerEncoderLayer, head_size
from layers.validation import check_positive_float, check_positive_int, check_rank

__all__ = ["DETR", "DETRBackbone", "DETRDecoderLayer", "DETREncoderLayer", "SinePositionEncoding2D", "detr"]

_IMAGE_LAYOUT = "(batch, height, width, channels)"


def _int_tuple(name, value):
    """A non-empty tuple of positive ints (an int gives a 1-tuple)."""
    items = (value,) if isinstance(value, int) else tuple(value)
    if not items:
        raise ValueError(f"{name} needs at least one entry, got {value!r}")
    return tuple(check_positive_int(name, v) for v in items)


@keras.saving.register_keras_serializable(package="tfsuite")
class SinePositionEncoding2D(keras.layers.Layer):
    """Section 7.3, DETR's 2-D sine encoding: ``PE(i, j) = [PE_1D(y_i); PE_1D(x_j)]`` for row ``i``, column ``j``.

    Each axis gets half of the ``d`` channels, the section 5.2 sinusoids of
    its (normalised) coordinate with ``F = d/2`` features::

        y_i = (i + 1) / (H + 1e-6) * scale,   x_j = (j + 1) / (W + 1e-6) * scale     (normalize=True)
        PE_1D(p)[2k] = sin(p / T^(2k/F)),     PE_1D(p)[2k+1] = cos(p / T^(2k/F))

    Channels ``0 .. F-1`` encode the row, ``F .. d-1`` the column, as
    ``PositionEmbeddingSine(num_pos_feats=d/2, normalize=True)`` in DETR's
    code. Normalising makes the encoding depend on the relative position in
    the image, not on its size. No weights.

    Args:
        temperature: float, ``T``. Default ``10000.0``.
        normalize: bool, divide the coordinates by the side length and
            multiply by ``scale``; False uses ``i + 1`` and ``j + 1``. Default True.
        scale: float, the range of the normalised coordinates. Default ``2 pi``.

    Input shape: ``(batch, H, W, d)`` with ``d`` even (only the shape is used).
    Output shape: ``(batch, H, W, d)``, the encoding (add it, or pass it on).

    Example:
    >>> SinePositionEncoding2D()(np.zeros((2, 4, 6, 16), "float32")).shape
    (2, 4, 6, 16)
    """

    def __init__(self, temperature=10000.0, normalize=True, scale=2 * math.pi, **kwargs):
        super().__init__(**kwargs)
        self.temperature = check_positive_float("SinePositionEncoding2D temperature", temperature)
        self.normalize = bool(normalize)
        self.scale = check_positive_float("SinePositionEncoding2D scale", scale)

    def _check(self, shape):
        check_rank("SinePositionEncoding2D", shape, 4, "(batch, height, width, d_model)")
        if shape[-1] is None or shape[-1] % 2:
            raise ValueError(
                f"SinePositionEncoding2D needs a known, even d_model (half the channels per axis), got shape "
                f"{tuple(shape)}"
            )

    def build(self, input_shape):
        self._check(input_shape)

    def _axis(self, length, features):
        """``(length, features)``: the 1-D encoding of coordinates ``1 .. length``."""
        coordinate = ops.cast(ops.arange(1, length + 1), "float32")
        if self.normalize:
            coordinate = coordinate / (ops.cast(length, "float32") + 1e-6) * self.scale
        # Frequencies and the sin/cos choice are static: NumPy constants in the graph.
        inverse_frequency = (1.0 / self.temperature ** (2 * (np.arange(features) // 2) / features)).astype("float32")
        angles = ops.expand_dims(coordinate, 1) * inverse_frequency
        return ops.where(np.arange(features) % 2 == 0, ops.sin(angles), ops.cos(angles))

    def call(self, inputs):
        self._check(inputs.shape)
        shape = ops.shape(inputs)
        height, width, features = shape[1], shape[2], inputs.shape[-1] // 2
        rows = ops.broadcast_to(ops.expand_dims(self._axis(height, features), 1), (height, width, features))
        cols = ops.broadcast_to(ops.expand_dims(self._axis(width, features), 0), (height, width, features))
        encoding = ops.concatenate([rows, cols], axis=-1)
        return ops.broadcast_to(ops.cast(encoding, self.compute_dtype), shape)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "temperature": self.temperature, "normalize": self.normalize,
                "scale": self.scale}


@keras.saving.register_keras_serializable(package="tfsuite")
class DETRBackbone(keras.layers.Layer):
    """Section 2.3 residual stages as DETR's CNN backbone: ``f = Stage_S(...Stage_1(ReLU(BN(W_0 * x))))``.

    A 3x3 stride-2 stem convolution with ``filters[0]`` channels, batch norm
    and ReLU, then one stage per entry of ``filters``: ``blocks_per_stage``
    ResNet ``BasicBlock`` s (``y = ReLU(F(x) + shortcut(x))``), the first of
    each stage with stride 2. The convolutions have no biases (batch norm
    follows each, as in the paper and torchvision). The output stride is ``s = 2^(1 + len(filters))``:
    32 for four stages, DETR's ResNet C5 stride.

    Args:
        filters: int or sequence of ints, channels per stage. Default
            ``(64, 128, 256, 512)`` (ResNet-18's widths).
        blocks_per_stage: int, basic blocks per stage. Default 2.

    Input shape: ``(batch, H, W, channels)``.
    Output shape: ``(batch, ceil(H / s), ceil(W / s), filters[-1])``.

    Example:
    >>> DETRBackbone((8, 16), blocks_per_stage=1)(np.zeros((2, 32, 32, 3), "float32")).shape
    (2, 4, 4, 16)
    """

    def __init__(self, filters=(64, 128, 256, 512), blocks_per_stage=2, **kwargs):
        super().__init__(**kwargs)
        self.filters = _int_tuple("DETRBackbone filters", filters)
        self.blocks_per_stage = check_positive_int("DETRBackbone blocks_per_stage", blocks_per_stage)

    @property
    def stride(self):
        return 2 ** (1 + len(self.filters))

    def build(self, input_shape):
        check_rank("DETRBackbone", input_shape, 4, _IMAGE_LAYOUT)
        if input_shape[-1] is None:
            raise ValueError(f"DETRBackbone needs a known channel count, got shape {tuple(input_shape)}")
        # No conv biases: each convolution feeds a batch norm, whose mean subtraction would cancel them.
        self.stem_conv = Conv2D(self.filters[0], 3, strides=2, padding="same", use_bias=False,
                                kernel_initializer="he_normal", dtype=self.dtype_policy, name="stem_conv")
        self.stem_conv.build(input_shape)
        shape = self.stem_conv.compute_output_shape(input_shape)
        self.stem_bn = BatchNormalization(dtype=self.dtype_policy, name="stem_bn")
        self.stem_bn.build(shape)
        self.blocks = []
        for stage, filters in enumerate(self.filters):
            for i in range(self.blocks_per_stage):
                block = BasicBlock(filters, strides=2 if i == 0 else 1, use_bias=False, dtype=self.dtype_policy,
                                   name=f"stage{stage + 1}_block{i + 1}")
                block.build(shape)
                shape = block.compute_output_shape(shape)
                self.blocks.append(block)

    def call(self, images, training=None):
        check_rank("DETRBackbone", images.shape, 4, _IMAGE_LAYOUT)
        x = ops.relu(self.stem_bn(self.stem_conv(images), training=training))
        for block in self.blocks:
            x = block(x, training=training)
        return x

    def compute_output_shape(self, input_shape):
        side = lambda n: None if n is None else math.ceil(n / self.stride)  # noqa: E731
        return (input_shape[0], side(input_shape[1]), side(input_shape[2]), self.filters[-1])

    def get_config(self):
        return {**super().get_config(), "filters": self.filters, "blocks_per_stage": self.blocks_per_stage}


def _with_position(x, position):
    return x if position is None else x + ops.cast(position, x.dtype)


@keras.saving.register_keras_serializable(package="tfsuite")
class DETREncoderLayer(TransformerEncoderLayer):
    """Section 7.3, DETR encoder layer: ``x = LN(x + MultiHead(q=x+P, k=x+P, v=x))``, ``y = LN(x + FFN(x))``.

    :class:`layers.transformer.TransformerEncoderLayer` (same arguments,
    sub-layers and weights) with the position encoding ``P`` added to the
    queries and keys of the self-attention at this layer, never to the values
    (``normalize_first=True``: added after the layer norm, as DETR's pre-norm
    variant). Without ``position`` it is the parent layer.

    Call arguments:
        inputs: ``(batch, N, d)``.
        position: ``(batch or 1, N, d)`` or None.
        padding_mask: bool ``(batch, N)`` or None, True for real tokens.

    Output shape: ``(batch, N, d)``.

    Example:
    >>> layer = DETREncoderLayer(intermediate_dim=32, num_heads=2)
    >>> layer(np.ones((2, 6, 16), "float32"), position=np.ones((1, 6, 16), "float32")).shape
    (2, 6, 16)
    """

    def call(self, inputs, position=None, padding_mask=None, training=None):
        check_rank("DETREncoderLayer", inputs.shape, 3, "(batch, tokens, d_model)")

        def attend(y):
            query = _with_position(y, position)
            return [self.self_attention([query, y, query], padding_mask=padding_mask, training=training)]

        x, _ = self._residual(inputs, self.self_attention_layer_norm, attend, self.self_attention_dropout, training)
        x, _ = self._residual(
            x, self.feedforward_layer_norm, lambda y: [self.feedforward(y, training=training)],
            self.feedforward_dropout, training,
        )
        return x


@keras.saving.register_keras_serializable(package="tfsuite")
class DETRDecoderLayer(TransformerDecoderLayer):
    """Section 7.3, DETR decoder layer: self-attention among the object slots, cross-attention to the image, FFN.

    ``t = LN(t + MultiHead(q=t+q_obj, k=t+q_obj, v=t))``,
    ``t = LN(t + MultiHead(q=t+q_obj, k=z+P, v=z))``, ``y = LN(t + FFN(t))``:
    :class:`layers.transformer.TransformerDecoderLayer` (same arguments,
    sub-layers and weights, built with cross-attention) without the causal
    mask, the object queries ``q_obj`` added to the queries and keys and the
    image positions ``P`` to the cross-attention keys. Without positions it is
    the parent layer called with ``use_causal_mask=False``.

    Call arguments:
        inputs: ``[target (batch, Q, d), memory (batch, N, d)]``.
        query_position: ``(batch or 1, Q, d)`` or None, the object queries.
        memory_position: ``(batch or 1, N, d)`` or None, the image positions.
        memory_padding_mask: bool ``(batch, N)`` or None, True for real tokens.

    Output shape: ``(batch, Q, d)``.

    Example:
    >>> layer = DETRDecoderLayer(intermediate_dim=32, num_heads=2)
    >>> layer([np.zeros((2, 5, 16), "float32"), np.ones((2, 9, 16), "float32")]).shape
    (2, 5, 16)
    """

    def build(self, input_shape):
        if not (isinstance(input_shape, (list, tuple)) and len(input_shape) == 2
                and isinstance(input_shape[0], (list, tuple))):
            raise ValueError("DETRDecoderLayer expects inputs [target (batch, Q, d), memory (batch, N, d)]")
        super().build(input_shape)

    def call(self, inputs, query_position=None, memory_position=None, memory_padding_mask=None, training=None):
        if not isinstance(inputs, (list, tuple)) or len(inputs) != 2:
            raise ValueError("DETRDecoderLayer expects inputs [target (batch, Q, d), memory (batch, N, d)]")
        target, memory = inputs
        check_rank("DETRDecoderLayer target", target.shape, 3, "(batch, queries, d_model)")
        check_rank("DETRDecoderLayer memory", memory.shape, 3, "(batch, tokens, d_model)")
        keys = _with_position(memory, memory_position)

        def self_attend(y):
            query = _with_position(y, query_position)
            return [self.self_attention([query, y, query], training=training)]

        def cross_attend(y):
            query = _with_position(y, query_position)
            return [self.cross_attention([query, memory, keys], padding_mask=memory_padding_mask, training=training)]

        x, _ = self._residual(target, self.self_attention_layer_norm, self_attend, self.self_attention_dropout,
                              training)
        x, _ = self._residual(x, self.cross_attention_layer_norm, cross_attend, self.cross_attention_dropout,
                              training)
        x, _ = self._residual(
            x, self.feedforward_layer_norm, lambda y: [self.feedforward(y, training=training)],
            self.feedforward_dropout, training,
        )
        return x


@keras.saving.register_keras_serializable(package="tfsuite")
class DETR(keras.Model):
    """Section 7.3, DETR: ``{logits, boxes} = heads(LN(Decoder(0; q_obj, Encoder(W_p * CNN(x); P), P)))``.

    See the module docstring for the full formula and where the positions go.

    Args:
        backbone: a Keras layer or model mapping ``(batch, H, W, channels)``
            images to a ``(batch, h, w, C)`` feature map, e.g.
            :class:`DETRBackbone` or ``layers.cnn_models.resnet50(include_top=False)``.
        num_classes: int, ``C`` object classes; the logits have ``C + 1``
            columns, the last (index ``C``) meaning "no object".
        num_queries: int, ``Q`` object queries, the most objects one image
            can get. Default 100 (DETR's).
        hidden_dim: int, ``d``; even and divisible by ``num_heads``. Default 256.
        num_heads: int. Default 8.
        num_encoder_layers: int. Default 6.
        num_decoder_layers: int. Default 6.
        intermediate_dim: int, FFN width. Default 2048.
        dropout: float in [0, 1), in every Transformer layer. Default 0.1.
        activation: FFN activation (see ``layers.transformer``). Default ``"relu"``.
        normalize_first: bool, pre-LN layers (and a layer norm after the
            encoder, as DETR's ``pre_norm``) instead of DETR's post-LN. Default False.
        layer_norm_epsilon: float. Default ``1e-5``.

    Weights: the backbone's; ``input_projection`` (1x1 ``Conv2D``, ``C -> d``);
    the encoder and decoder layers (and ``encoder_layer_norm`` when pre-LN); ``query_embeddings`` ``(Q, d)``
    (``N(0, 1)``, as ``nn.Embedding``); ``decoder_layer_norm``; ``class_head``
    (``d -> C + 1``); ``box_head_0..2`` (``d -> d -> d -> 4``, ReLU between).

    Call arguments:
        images: float ``(batch, H, W, channels)``, normalised as the backbone expects.

    Returns:
        dict ``{"logits": (batch, Q, C + 1), "boxes": (batch, Q, 4)}``; boxes
        are ``(cx, cy, w, h)`` relative to the image side lengths, in ``[0, 1]``.

    Example:
    >>> model = DETR(DETRBackbone((8, 16), 1), num_classes=3, num_queries=5, hidden_dim=16, num_heads=2,
    ...              num_encoder_layers=1, num_decoder_layers=1, intermediate_dim=32)
    >>> out = model(np.zeros((2, 32, 32, 3), "float32"))
    >>> out["logits"].shape, out["boxes"].shape
    ((2, 5, 4), (2, 5, 4))
    """

    def __init__(
        self,
        backbone,
        num_classes,
        num_queries=100,
        hidden_dim=256,
        num_heads=8,
        num_encoder_layers=6,
        num_decoder_layers=6,
        intermediate_dim=2048,
        dropout=0.1,
        activation="relu",
        normalize_first=False,
        layer_norm_epsilon=1e-5,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if isinstance(backbone, dict):
            backbone = keras.saving.deserialize_keras_object(backbone)
        if not isinstance(backbone, keras.layers.Layer):
            raise ValueError(
                f"DETR needs a Keras layer or model as backbone (images -> feature map), got {type(backbone).__name__}"
            )
        self.backbone = backbone
        self.num_classes = check_positive_int("DETR num_classes", num_classes)
        self.num_queries = check_positive_int("DETR num_queries", num_queries)
        self.hidden_dim = check_positive_int("DETR hidden_dim", hidden_dim)
        head_size("DETR", self.hidden_dim, check_positive_int("DETR num_heads", num_heads))
        if self.hidden_dim % 2:
            raise ValueError(f"DETR hidden_dim must be even (half the position channels per axis), got {hidden_dim}")
        self.num_heads = int(num_heads)
        self.num_encoder_layers = check_positive_int("DETR num_encoder_layers", num_encoder_layers)
        self.num_decoder_layers = check_positive_int("DETR num_decoder_layers", num_decoder_layers)
        self.intermediate_dim = check_positive_int("DETR intermediate_dim", intermediate_dim)
        self.dropout = check_positive_float("DETR dropout", dropout, allow_zero=True)
        self.activation = activation
        self.normalize_first = bool(normalize_first)
        self.layer_norm_epsilon = check_positive_float("DETR layer_norm_epsilon", layer_norm_epsilon)

        layer_args = dict(dropout=self.dropout, activation=activation, layer_norm_epsilon=self.layer_norm_epsilon,
                          normalize_first=self.normalize_first)
        self.input_projection = Conv2D(self.hidden_dim, 1, name="input_projection")
        self.position_encoding = SinePositionEncoding2D(name="position_encoding")
        self.encoder_layers = [
            DETREncoderLayer(self.intermediate_dim, self.num_heads, name=f"encoder_layer_{i}", **layer_args)
            for i in range(self.num_encoder_layers)
        ]
        self.decoder_layers = [
            DETRDecoderLayer(self.intermediate_dim, self.num_heads, name=f"decoder_layer_{i}", **layer_args)
            for i in range(self.num_decoder_layers)
        ]
        # Pre-LN stacks end on an un-normalised residual stream: DETR closes its pre-LN encoder with a layer norm.
        self.encoder_layer_norm = (
            LayerNormalization(epsilon=self.layer_norm_epsilon, name="encoder_layer_norm") if self.normalize_first
            else None
        )
        self.decoder_layer_norm = LayerNormalization(epsilon=self.layer_norm_epsilon, name="decoder_layer_norm")
        self.class_head = Dense(self.num_classes + 1, name="class_head")
        self.box_head = [Dense(self.hidden_dim, activation="relu", name="box_head_0"),
                         Dense(self.hidden_dim, activation="relu", name="box_head_1"),
                         Dense(4, name="box_head_2")]

    def _check_images(self, shape):
        check_rank("DETR images", shape, 4, _IMAGE_LAYOUT)
        if shape[-1] is None:
            raise ValueError(f"DETR needs a known channel count, got images of shape {tuple(shape)}")

    def build(self, input_shape):
        self._check_images(input_shape)
        input_shape = tuple(input_shape)
        if not self.backbone.built:
            self.backbone.build(input_shape)
        feature_shape = tuple(self.backbone.compute_output_shape(input_shape))
        check_rank("DETR backbone output", feature_shape, 4, "(batch, h, w, C): a feature map")
        self.input_projection.build(feature_shape)
        self.position_encoding.build((None, None, None, self.hidden_dim))
        memory_shape, target_shape = (None, None, self.hidden_dim), (None, self.num_queries, self.hidden_dim)
        for layer in self.encoder_layers:
            layer.build(memory_shape)
        if self.encoder_layer_norm is not None:
            self.encoder_layer_norm.build(memory_shape)
        for layer in self.decoder_layers:
            layer.build([target_shape, memory_shape])
        self.decoder_layer_norm.build(target_shape)
        self.query_embeddings = self.add_weight(
            name="query_embeddings", shape=(self.num_queries, self.hidden_dim),
            initializer=keras.initializers.RandomNormal(stddev=1.0),
        )
        self.class_head.build(target_shape)
        for layer in self.box_head:
            layer.build(target_shape)
        self.built = True

    def encode(self, images, training=None):
        """``(memory, positions)``: the encoded image ``(batch, N, d)`` and its positions ``(1, N, d)``."""
        features = self.input_projection(self.backbone(images, training=training))
        position = self.position_encoding(features[:1])
        tokens = ops.shape(features)[1] * ops.shape(features)[2]
        memory = ops.reshape(features, (-1, tokens, self.hidden_dim))
        position = ops.reshape(position, (1, tokens, self.hidden_dim))
        for layer in self.encoder_layers:
            memory = layer(memory, position=position, training=training)
        if self.encoder_layer_norm is not None:
            memory = self.encoder_layer_norm(memory)
        return memory, position

    def decode(self, images, training=None):
        """``h``: the layer-normed decoder output ``(batch, Q, d)`` that the two heads read."""
        self._check_images(images.shape)
        memory, position = self.encode(images, training=training)
        queries = ops.expand_dims(ops.cast(self.query_embeddings, memory.dtype), 0)
        target = ops.zeros((ops.shape(memory)[0], self.num_queries, self.hidden_dim), memory.dtype)
        for layer in self.decoder_layers:
            target = layer([target, memory], query_position=queries, memory_position=position, training=training)
        return self.decoder_layer_norm(target)

    def call(self, images, training=None):
        hidden = self.decode(images, training=training)
        boxes = hidden
        for layer in self.box_head:
            boxes = layer(boxes)
        return {"logits": self.class_head(hidden), "boxes": ops.sigmoid(boxes)}

    def get_config(self):
        return {
            **super().get_config(),
            "backbone": keras.saving.serialize_keras_object(self.backbone),
            "num_classes": self.num_classes,
            "num_queries": self.num_queries,
            "hidden_dim": self.hidden_dim,
            "num_heads": self.num_heads,
            "num_encoder_layers": self.num_encoder_layers,
            "num_decoder_layers": self.num_decoder_layers,
            "intermediate_dim": self.intermediate_dim,
            "dropout": self.dropout,
            "activation": self.activation,
            "normalize_first": self.normalize_first,
            "layer_norm_epsilon": self.layer_norm_epsilon,
        }


def detr(num_classes, backbone_filters=(64, 128, 256, 512), blocks_per_stage=2, **kwargs):
    """A DETR on a :class:`DETRBackbone` (a ResNet-18-like stack by default, output stride 32).

    Args:
        num_classes: int, object classes (without "no object").
        backbone_filters: channels per backbone stage. Default ``(64, 128, 256, 512)``.
        blocks_per_stage: basic blocks per stage. Default 2.
        **kwargs: the other :class:`DETR` arguments (``num_queries``, ``hidden_dim``, ...).

    Returns: an unbuilt :class:`DETR`.
    """
    backbone = DETRBackbone(backbone_filters, blocks_per_stage, name="backbone")
    return DETR(backbone, num_classes, name=kwargs.pop("name", "detr"), **kwargs)
