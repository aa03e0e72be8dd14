"""T5, the Text-to-Text Transfer Transformer (textbook section 6.3; Raffel et al., 2020).

Every task is text in, text out: the input names the task as a prefix
(``"summarize: ..."``, ``"translate English to German: ..."``) and the answer
is generated. The network is the chapter 5 encoder-decoder with four changes,
each in this file or next to it:

- **relative position bias** instead of position encodings: attention scores
  get ``b[bucket(j - i), head]``, a learned scalar per head and distance bucket
  (exact buckets for small distances, logarithmic ones up to ``max_distance``).
  One table per stack, computed once per forward pass and shared by every
  layer (:class:`RelativePositionBias`);
- **RMS layer norm** (no mean, no bias: ``layers.normalization.RMSNormalization``)
  in the pre-LN arrangement, with a final norm on each stack;
- no bias anywhere and no ``1 / sqrt(d_k)`` in the attention (T5 folds it into
  the initialization); the FFN is ReLU, or **gated GELU** (T5 v1.1:
  ``FFN(x) = (gelu(x W_i) * x W_g) W_o``);
- one embedding for encoder, decoder and the output, with the decoder output
  scaled by ``d_model ** -0.5`` before the tied projection.

Weights map one to one onto ``keras_hub.models.T5Backbone``
(:func:`copy_t5_weights`); ``tests/layers/test_t5.py`` proves encoder and
decoder outputs equal to 1e-5. ``T5`` has the generation interface of
``layers.transformer_models`` (``encode``, ``build_cache``,
``call_with_cache``, ``reorder_cache``, ``select_rows``), so the shared decode
loop, beam search and exporter run it unchanged.
"""

import math

import keras
from keras import ops

from layers.dropout import Dropout
from layers.normalization import RMSNormalization
from layers.transformer_models import take_rows, unpack_seq2seq_inputs
from layers.validation import check_positive_float, check_positive_int, check_rank

__all__ = ["RelativePositionBias", "T5Attention", "T5Block", "T5", "copy_t5_weights", "relative_position_bucket",
           "relative_positions"]

# Stands in for -inf in the additive attention bias (exp underflows to exactly 0 in float32).
_MASK_VALUE = -1e9
_ACTIVATIONS = ("relu", "gelu", "gelu_approximate", "swish")


def relative_positions(query_length, key_length, query_offset=0):
    """``j - i`` for query ``i`` (from ``query_offset``) and key ``j``: int32 ``(1, T, S)``."""
    i = ops.expand_dims(ops.arange(query_length, dtype="int32") + ops.cast(query_offset, "int32"), 1)
    j = ops.expand_dims(ops.arange(key_length, dtype="int32"), 0)
    return ops.expand_dims(j - i, 0)


def relative_position_bucket(relative_position, bidirectional=True, num_buckets=32, max_distance=128):
    """T5's bucket of each relative position ``j - i`` (int32, same shape), as in Mesh TensorFlow.

    Half the buckets (all of them for a causal decoder, which only sees
    ``j <= i``) hold exact distances ``0 .. n/2 - 1``; the rest cover
    ``n/2 .. max_distance`` logarithmically, and farther distances share the
    last bucket. A bidirectional encoder uses a second half for ``j > i``.
    """
    relative_position = ops.cast(relative_position, "int32")
    buckets = ops.zeros_like(relative_position)
    if bidirectional:
        num_buckets //= 2
        buckets = buckets + ops.cast(ops.greater(relative_position, 0), "int32") * num_buckets
        distance = ops.abs(relative_position)
    else:
        distance = -ops.minimum(relative_position, 0)
    max_exact = num_buckets // 2
    # maximum(., 1) keeps log finite on the exact branch, which where() discards anyway.
    scaled = ops.log(ops.cast(ops.maximum(distance, 1), "float32") / max_exact) / math.log(max_distance / max_exact)
    large = max_exact + ops.cast(scaled * (num_buckets - max_exact), "int32")
    large = ops.minimum(large, num_buckets - 1)
    return buckets + ops.where(ops.less(distance, max_exact), distance, large)


@keras.saving.register_keras_serializable(package="tfsuite")
class RelativePositionBias(keras.layers.Layer):
    """Section 6.3, T5's relative position bias: ``bias[h, i, j] = B[bucket(j - i), h]``.

    Args:
        num_heads: int, attention heads (one bias per head).
        bidirectional: bool, separate buckets for keys after the query (the
            encoder); False for a causal decoder. Default True.
        num_buckets: int. Default 32.
        max_distance: int, distances from here on share the last bucket. Default 128.
        initializer: initializer of the ``(num_buckets, num_heads)`` table.

    Input: int relative positions ``j - i`` of shape ``(1, T, S)`` (see
    :func:`relative_positions`). Output: float32 ``(1, num_heads, T, S)``, added
    to the attention scores of every layer of the stack.

    Example:
    >>> bias = RelativePositionBias(num_heads=2)
    >>> bias(relative_positions(5, 7)).shape
    (1, 2, 5, 7)
    """

    def __init__(self, num_heads, bidirectional=True, num_buckets=32, max_distance=128, initializer="zeros", **kwargs):
        super().__init__(**kwargs)
        self.num_heads = check_positive_int("RelativePositionBias num_heads", num_heads)
        self.bidirectional = bool(bidirectional)
        self.num_buckets = check_positive_int("RelativePositionBias num_buckets", num_buckets)
        if self.num_buckets < (4 if self.bidirectional else 2):
            raise ValueError(f"RelativePositionBias needs at least 4 buckets (2 causal), got {num_buckets}")
        self.max_distance = check_positive_int("RelativePositionBias max_distance", max_distance)
        if self.max_distance <= self.num_buckets // (4 if self.bidirectional else 2):
            raise ValueError(
                f"RelativePositionBias max_distance={max_distance} must exceed the exact buckets "
                f"({self.num_buckets // (4 if self.bidirectional else 2)})"
            )
        self.initializer = keras.initializers.get(initializer)

    def build(self, input_shape=None):
        self.embeddings = self.add_weight(
            name="embeddings", shape=(self.num_buckets, self.num_heads), initializer=self.initializer
        )

    def call(self, relative_position):
        check_rank("RelativePositionBias relative positions", relative_position.shape, 3, "(1, query_length, key_length)")
        buckets = relative_position_bucket(relative_position, self.bidirectional, self.num_buckets, self.max_distance)
        values = ops.take(ops.cast(self.embeddings, "float32"), buckets, axis=0)  # (1, T, S, h)
        return ops.transpose(values, (0, 3, 1, 2))

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.num_heads, input_shape[1], input_shape[2])

    def get_config(self):
        return {
            **super().get_config(),
            "num_heads": self.num_heads,
            "bidirectional": self.bidirectional,
            "num_buckets": self.num_buckets,
            "max_distance": self.max_distance,
            "initializer": keras.initializers.serialize(self.initializer),
        }


@keras.saving.register_keras_serializable(package="tfsuite")
class T5Attention(keras.layers.Layer):
    """Section 6.3, T5 attention: ``softmax(Q K^T + bias) V W_O`` (no ``1/sqrt(d_k)``, no biases).

    The additive ``attention_bias`` carries both the relative position bias
    and the mask (``-1e9`` where a key is hidden), folded together once per
    stack by :class:`T5`.

    Args:
        num_heads: int.
        key_value_dim: int, size of each head.
        dropout: float in [0, 1), dropout on the attention weights. Default 0.
        kernel_initializer: initializer of the key, value and output kernels
            (T5 scales each by its fan-in, see :class:`T5Block`). Default ``"glorot_uniform"``.
        query_initializer: initializer of the query kernel; None means
            ``kernel_initializer``. Default None.

    Call arguments:
        inputs: ``x (batch, T, d)`` for self-attention or ``[x, context (batch, S, d_c)]``.
        attention_bias: float, broadcastable to ``(batch, h, T, S)``, or None.
        cache: None or ``(key_cache, value_cache)`` of shape ``(batch, h, L, key_value_dim)``;
            with ``cache_index`` the new keys and values are written there and
            the cache is returned too; without, it is read as it is (cross-attention).
        cache_index: int or scalar tensor.

    Output: ``(batch, T, d)`` (and the updated cache when one is given).

    Example:
    >>> T5Attention(num_heads=2, key_value_dim=4)(np.ones((2, 5, 8), "float32")).shape
    (2, 5, 8)
    """

    def __init__(
        self, num_heads, key_value_dim, dropout=0.0, kernel_initializer="glorot_uniform", query_initializer=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.num_heads = check_positive_int("T5Attention num_heads", num_heads)
        self.key_value_dim = check_positive_int("T5Attention key_value_dim", key_value_dim)
        self.dropout = check_positive_float("T5Attention dropout", dropout, allow_zero=True)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.query_initializer = None if query_initializer is None else keras.initializers.get(query_initializer)
        self.dropout_layer = Dropout(self.dropout) if self.dropout else None

    def build(self, input_shape):
        shapes = input_shape if isinstance(input_shape, (list, tuple)) and isinstance(input_shape[0], (list, tuple)) \
            else [input_shape]
        query_shape = shapes[0]
        context_shape = shapes[1] if len(shapes) > 1 else query_shape
        for what, shape in (("query", query_shape), ("context", context_shape)):
            check_rank(f"T5Attention {what}", shape, 3, "(batch, time, features)")
        inner = self.num_heads * self.key_value_dim
        kernel = lambda name, shape, init=None: self.add_weight(  # noqa: E731
            name=name, shape=shape, initializer=init or self.kernel_initializer
        )
        self.query_kernel = kernel("query_kernel", (query_shape[-1], inner), self.query_initializer)
        self.key_kernel = kernel("key_kernel", (context_shape[-1], inner))
        self.value_kernel = kernel("value_kernel", (context_shape[-1], inner))
        self.output_kernel = kernel("output_kernel", (inner, query_shape[-1]))

    def _heads(self, x, kernel):
        """``(batch, T, d) -> (batch, h, T, key_value_dim)``."""
        y = ops.reshape(ops.matmul(x, kernel), (ops.shape(x)[0], -1, self.num_heads, self.key_value_dim))
        return ops.transpose(y, (0, 2, 1, 3))

    def compute_key_value(self, context):
        """Keys and values of ``context`` in cache layout (cross-attention over an encoder output)."""
        return self._heads(context, self.key_kernel), self._heads(context, self.value_kernel)

    def empty_cache(self, batch_size, cache_length, dtype=None):
        """Zero ``(key_cache, value_cache)`` for ``cache_length`` decoding steps."""
        shape = (batch_size, self.num_heads, cache_length, self.key_value_dim)
        return ops.zeros(shape, dtype or self.compute_dtype), ops.zeros(shape, dtype or self.compute_dtype)

    def call(self, inputs, attention_bias=None, cache=None, cache_index=None, training=None):
        query, context = (inputs[0], inputs[1]) if isinstance(inputs, (list, tuple)) else (inputs, inputs)
        q = self._heads(query, self.query_kernel)
        if cache is None:
            if cache_index is not None:
                raise ValueError("T5Attention cache_index needs a cache")
            k, v = self.compute_key_value(context)
        else:
            k, v = cache
            if cache_index is not None:
                new_k, new_v = self.compute_key_value(context)
                start = [0, 0, cache_index, 0]
                k = ops.slice_update(k, start, ops.cast(new_k, k.dtype))
                v = ops.slice_update(v, start, ops.cast(new_v, v.dtype))
        # Scores, bias and softmax in float32: the -1e9 mask and exp overflow half precision.
        scores = ops.cast(ops.matmul(q, ops.swapaxes(k, -1, -2)), "float32")
        if attention_bias is not None:
            scores = scores + ops.cast(attention_bias, "float32")
        weights = ops.cast(ops.softmax(scores, axis=-1), q.dtype)
        if self.dropout_layer is not None:
            weights = self.dropout_layer(weights, training=training)
        out = ops.transpose(ops.matmul(weights, v), (0, 2, 1, 3))
        out = ops.matmul(ops.reshape(out, (ops.shape(query)[0], -1, self.num_heads * self.key_value_dim)),
                         self.output_kernel)
        return out if cache is None else (out, (k, v))

    def compute_output_shape(self, input_shape):
        shapes = input_shape if isinstance(input_shape[0], (list, tuple)) else [input_shape]
        return tuple(shapes[0])

    def get_config(self):
        return {
            **super().get_config(),
            "num_heads": self.num_heads,
            "key_value_dim": self.key_value_dim,
            "dropout": self.dropout,
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
            "query_initializer": None if self.query_initializer is None
            else keras.initializers.serialize(self.query_initializer),
        }


@keras.saving.register_keras_serializable(package="tfsuite")
class T5Block(keras.layers.Layer):
    """Section 6.3, one T5 encoder or decoder layer (pre-RMS-norm residual blocks).

    ``x = x + SelfAttention(RMSNorm(x))``; in the decoder also
    ``x = x + CrossAttention(RMSNorm(x), encoder)``; then
    ``x = x + FFN(RMSNorm(x))`` with ``FFN(x) = act(x W_i) W_o`` or, gated,
    ``(act(x W_i) * x W_g) W_o``. Dropout after each sub-layer and on the FFN
    hidden units.

    Args:
        intermediate_dim: int, FFN width.
        num_heads: int.
        key_value_dim: int or None, head size; None means ``d_model // num_heads``.
        is_decoder: bool, add cross-attention. Default False.
        dropout: float in [0, 1). Default 0.
        activation: ``"relu"`` (default), ``"gelu"``, ``"gelu_approximate"`` or ``"swish"``.
        use_gated_activation: bool, the gated FFN of T5 v1.1. Default False.
        layer_norm_epsilon: float. Default ``1e-6``.

    Call arguments:
        inputs: ``x (batch, T, d)``; a decoder takes ``[x, encoder_outputs (batch, S, d)]``
            (or ``x`` alone with a ``cross_attention_cache``).
        attention_bias: self-attention bias (position bias + mask), ``(batch | 1, h, T, T | L)``.
        cross_attention_bias: encoder mask as a bias, ``(batch, 1, 1, S)``.
        self_attention_cache, cache_index, cross_attention_cache: cached decoding,
            as in ``layers.transformer.TransformerDecoderLayer``; then the
            output is ``(x, new_self_attention_cache)``.

    Example:
    >>> T5Block(intermediate_dim=32, num_heads=2)(np.ones((2, 5, 8), "float32")).shape
    (2, 5, 8)
    """

    def __init__(
        self, intermediate_dim, num_heads, key_value_dim=None, is_decoder=False, dropout=0.0, activation="relu",
        use_gated_activation=False, layer_norm_epsilon=1e-6, **kwargs,
    ):
        super().__init__(**kwargs)
        self.intermediate_dim = check_positive_int("T5Block intermediate_dim", intermediate_dim)
        self.num_heads = check_positive_int("T5Block num_heads", num_heads)
        self.key_value_dim = None if key_value_dim is None else check_positive_int("T5Block key_value_dim", key_value_dim)
        self.is_decoder = bool(is_decoder)
        self.dropout = check_positive_float("T5Block dropout", dropout, allow_zero=True)
        if activation not in _ACTIVATIONS:
            raise ValueError(f"T5Block activation must be one of {list(_ACTIVATIONS)}, got {activation!r}")
        self.activation = activation
        self.use_gated_activation = bool(use_gated_activation)
        self.layer_norm_epsilon = check_positive_float("T5Block layer_norm_epsilon", layer_norm_epsilon)
        self.dropout_layer = Dropout(self.dropout) if self.dropout else None

    def build(self, input_shape):
        shapes = input_shape if isinstance(input_shape, (list, tuple)) and isinstance(input_shape[0], (list, tuple)) \
            else [input_shape]
        x_shape = tuple(shapes[0])
        check_rank("T5Block inputs", x_shape, 3, "(batch, time, d_model)")
        d = x_shape[-1]
        if d is None:
            raise ValueError("T5Block needs a known d_model (last axis)")
        kv = self.key_value_dim or d // self.num_heads
        # T5's initialization (Mesh TensorFlow): each kernel ~ N(0, fan_in^-1/2), the
        # query's also divided by sqrt(d_k): the attention scale lives in the weights.
        normal = lambda std: keras.initializers.RandomNormal(0.0, std)  # noqa: E731
        inner = self.num_heads * kv
        attention = lambda name: T5Attention(  # noqa: E731
            self.num_heads, kv, self.dropout, normal(inner ** -0.5), normal((inner * kv) ** -0.5), name=name
        )
        self.self_attention = attention("self_attention")
        self.self_attention.build(x_shape)
        self.self_attention_norm = RMSNormalization(self.layer_norm_epsilon, name="self_attention_norm")
        self.self_attention_norm.build(x_shape)
        if self.is_decoder:
            context_shape = tuple(shapes[1]) if len(shapes) > 1 else x_shape
            self.cross_attention = attention("cross_attention")
            self.cross_attention.build([x_shape, context_shape])
            self.cross_attention_norm = RMSNormalization(self.layer_norm_epsilon, name="cross_attention_norm")
            self.cross_attention_norm.build(x_shape)
        self.feedforward_norm = RMSNormalization(self.layer_norm_epsilon, name="feedforward_norm")
        self.feedforward_norm.build(x_shape)
        kernel = lambda name, shape, std: self.add_weight(name=name, shape=shape, initializer=normal(std))  # noqa: E731
        self.input_kernel = kernel("input_kernel", (d, self.intermediate_dim), d ** -0.5)
        self.gate_kernel = kernel("gate_kernel", (d, self.intermediate_dim), d ** -0.5) if self.use_gated_activation \
            else None
        self.output_kernel = kernel("output_kernel", (self.intermediate_dim, d), self.intermediate_dim ** -0.5)

    def _act(self, x):
        if self.activation == "relu":
            return ops.relu(x)
        if self.activation == "swish":
            return ops.silu(x)
        return ops.gelu(x, approximate=self.activation == "gelu_approximate")

    def _drop(self, x, training):
        return x if self.dropout_layer is None else self.dropout_layer(x, training=training)

    def call(
        self, inputs, attention_bias=None, cross_attention_bias=None, self_attention_cache=None, cache_index=None,
        cross_attention_cache=None, training=None,
    ):
        if isinstance(inputs, (list, tuple)):
            x, context = inputs
        else:
            x, context = inputs, None
        if self.is_decoder and context is None and cross_attention_cache is None:
            raise ValueError("a decoder T5Block needs [x, encoder_outputs] or a cross_attention_cache")
        y = self.self_attention(self.self_attention_norm(x), attention_bias=attention_bias,
                                cache=self_attention_cache, cache_index=cache_index, training=training)
        if self_attention_cache is not None:
            y, self_attention_cache = y
        x = x + self._drop(y, training)
        if self.is_decoder:
            normed = self.cross_attention_norm(x)
            if cross_attention_cache is not None:
                y, _ = self.cross_attention(normed, attention_bias=cross_attention_bias, cache=cross_attention_cache,
                                            training=training)
            else:
                y = self.cross_attention([normed, context], attention_bias=cross_attention_bias, training=training)
            x = x + self._drop(y, training)
        h = self.feedforward_norm(x)
        hidden = self._act(ops.matmul(h, self.input_kernel))
        if self.gate_kernel is not None:
            hidden = hidden * ops.matmul(h, self.gate_kernel)
        x = x + self._drop(ops.matmul(self._drop(hidden, training), self.output_kernel), training)
        return x if self_attention_cache is None else (x, self_attention_cache)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[0]) if isinstance(input_shape[0], (list, tuple)) else tuple(input_shape)

    def get_config(self):
        return {
            **super().get_config(),
            "intermediate_dim": self.intermediate_dim,
            "num_heads": self.num_heads,
            "key_value_dim": self.key_value_dim,
            "is_decoder": self.is_decoder,
            "dropout": self.dropout,
            "activation": self.activation,
            "use_gated_activation": self.use_gated_activation,
            "layer_norm_epsilon": self.layer_norm_epsilon,
        }


def _mask_bias(mask):
    """bool mask (True = attend) -> additive float32 bias (0 or -1e9)."""
    return ops.where(ops.cast(mask, "bool"), 0.0, _MASK_VALUE)


def _key_mask(padding_mask):
    """``(batch, S)`` -> ``(batch, 1, 1, S)``; expand_dims, not ``[:, None]``: TFLite has no kernel for new-axis slices."""
    return ops.expand_dims(ops.expand_dims(ops.cast(padding_mask, "bool"), 1), 1)


@keras.saving.register_keras_serializable(package="tfsuite")
class T5(keras.Model):
    """Section 6.3, the T5 encoder-decoder: text in, text out, one shared vocabulary.

    ``enc = RMSNorm(Block^N(E[src]))``, ``dec = RMSNorm(Block^N(E[tgt], enc))``,
    ``logits = (d_model ** -0.5 * dec) E^T`` with tied embeddings (else a
    separate ``lm_head``). Position enters only through the relative
    position bias of each stack's first layer, shared by the rest.

    Args:
        vocab_size: int, the shared vocabulary (sentinels included).
        max_length: int, default KV-cache length for generation (relative
            positions have no hard limit; farther distances share a bucket).
        num_layers: int, encoder layers. Default 2.
        num_decoder_layers: int or None, decoder layers; None means ``num_layers``.
        hidden_dim: int, ``d_model``. Default 32.
        num_heads: int. Default 2.
        intermediate_dim: int or None, FFN width; None means ``4 * hidden_dim``.
        key_value_dim: int or None, head size; None means ``hidden_dim // num_heads``.
        dropout: float in [0, 1). Default 0.
        activation: FFN activation (see :class:`T5Block`). Default ``"relu"`` (T5 v1.0).
        use_gated_activation: bool, gated FFN (with ``"gelu"``: T5 v1.1). Default False.
        layer_norm_epsilon: float. Default ``1e-6``.
        tie_embeddings: bool, output projection = embedding^T (scaled input). Default True.
        relative_attention_buckets: int. Default 32.
        relative_attention_max_distance: int. Default 128.

    Call arguments: as ``layers.transformer_models.Transformer``:
    ``[encoder_token_ids, decoder_token_ids]`` or the pipeline's dict
    ``{"encoder_inputs", "decoder_token_ids", "encoder_padding_mask",
    "decoder_padding_mask"}``. Output: logits ``(batch, T, vocab_size)``.

    Example:
    >>> model = T5(vocab_size=50, max_length=16)
    >>> model([np.ones((2, 10), "int32"), np.ones((2, 7), "int32")]).shape
    (2, 7, 50)
    """

    is_encoder_decoder = True
    encoder_input = "tokens"
    position_encoding = "relative"

    def __init__(
        self, vocab_size, max_length, num_layers=2, num_decoder_layers=None, hidden_dim=32, num_heads=2,
        intermediate_dim=None, key_value_dim=None, dropout=0.0, activation="relu", use_gated_activation=False,
        layer_norm_epsilon=1e-6, tie_embeddings=True, relative_attention_buckets=32,
        relative_attention_max_distance=128, **kwargs,
    ):
        super().__init__(**kwargs)
        self.vocab_size = check_positive_int("T5 vocab_size", vocab_size)
        self.max_length = check_positive_int("T5 max_length", max_length)
        self.num_layers = check_positive_int("T5 num_layers", num_layers)
        self.num_decoder_layers = check_positive_int("T5 num_decoder_layers", num_decoder_layers or num_layers)
        self.hidden_dim = check_positive_int("T5 hidden_dim", hidden_dim)
        self.num_heads = check_positive_int("T5 num_heads", num_heads)
        if key_value_dim is None and self.hidden_dim % self.num_heads:
            raise ValueError(
                f"T5 hidden_dim={hidden_dim} is not divisible by num_heads={num_heads}; pass key_value_dim or "
                f"use a multiple of {num_heads}"
            )
        self.key_value_dim = check_positive_int("T5 key_value_dim", key_value_dim or self.hidden_dim // self.num_heads)
        self.intermediate_dim = check_positive_int("T5 intermediate_dim", intermediate_dim or 4 * self.hidden_dim)
        self.dropout = check_positive_float("T5 dropout", dropout, allow_zero=True)
        self.activation = activation
        self.use_gated_activation = bool(use_gated_activation)
        self.layer_norm_epsilon = check_positive_float("T5 layer_norm_epsilon", layer_norm_epsilon)
        self.tie_embeddings = bool(tie_embeddings)
        self.relative_attention_buckets = check_positive_int("T5 relative_attention_buckets", relative_attention_buckets)
        self.relative_attention_max_distance = check_positive_int(
            "T5 relative_attention_max_distance", relative_attention_max_distance
        )
        block = dict(
            intermediate_dim=self.intermediate_dim, num_heads=self.num_heads, key_value_dim=self.key_value_dim,
            dropout=self.dropout, activation=activation, use_gated_activation=self.use_gated_activation,
            layer_norm_epsilon=self.layer_norm_epsilon,
        )
        self.encoder_layers = [T5Block(**block, name=f"encoder_layer_{i}") for i in range(self.num_layers)]
        self.decoder_layers = [
            T5Block(**block, is_decoder=True, name=f"decoder_layer_{i}") for i in range(self.num_decoder_layers)
        ]
        bias = dict(num_heads=self.num_heads, num_buckets=self.relative_attention_buckets,
                    max_distance=self.relative_attention_max_distance,
                    initializer=keras.initializers.RandomNormal(0.0, (self.num_heads * self.key_value_dim) ** -0.5))
        self.encoder_position_bias = RelativePositionBias(bidirectional=True, **bias, name="encoder_position_bias")
        self.decoder_position_bias = RelativePositionBias(bidirectional=False, **bias, name="decoder_position_bias")
        self.encoder_final_norm = RMSNormalization(self.layer_norm_epsilon, name="encoder_final_norm")
        self.decoder_final_norm = RMSNormalization(self.layer_norm_epsilon, name="decoder_final_norm")
        self.embedding_dropout = Dropout(self.dropout) if self.dropout else None

    def build(self, input_shape=None):
        # T5 initializes the shared embedding with unit variance (Mesh TensorFlow).
        self.embeddings = self.add_weight(
            name="embeddings", shape=(self.vocab_size, self.hidden_dim), initializer=keras.initializers.RandomNormal(0.0, 1.0)
        )
        self.lm_head = None
        if not self.tie_embeddings:
            self.lm_head = self.add_weight(
                name="lm_head", shape=(self.hidden_dim, self.vocab_size),
                initializer=keras.initializers.RandomNormal(0.0, self.hidden_dim ** -0.5),
            )
        sequence = (None, None, self.hidden_dim)
        for layer in self.encoder_layers:
            layer.build(sequence)
        for layer in self.decoder_layers:
            layer.build([sequence, sequence])
        for layer in (self.encoder_position_bias, self.decoder_position_bias):
            layer.build()
        for layer in (self.encoder_final_norm, self.decoder_final_norm):
            layer.build(sequence)

    def _embed(self, token_ids, training):
        check_rank("T5 token ids", token_ids.shape, 2, "(batch, time) of int token ids")
        x = ops.cast(ops.take(self.embeddings, ops.cast(token_ids, "int32"), axis=0), self.compute_dtype)
        return x if self.embedding_dropout is None else self.embedding_dropout(x, training=training)

    def _drop(self, x, training):
        return x if self.embedding_dropout is None else self.embedding_dropout(x, training=training)

    # -- encoder --------------------------------------------------------------------------------

    def encode(self, encoder_inputs, encoder_padding_mask=None, training=None):
        """Encoder: token ids (or the pipeline's dict) -> ``(sequence (batch, S, d), padding_mask (batch, S))``."""
        if not self.built:
            self.build()
        if isinstance(encoder_inputs, dict):
            if "encoder_inputs" not in encoder_inputs:
                raise ValueError(f"T5.encode expects a dict with 'encoder_inputs', got keys {sorted(encoder_inputs)}")
            encoder_padding_mask = encoder_inputs.get("encoder_padding_mask", encoder_padding_mask)
            encoder_inputs = encoder_inputs["encoder_inputs"]
        x = self._embed(encoder_inputs, training)
        if encoder_padding_mask is None:
            encoder_padding_mask = ops.ones(ops.shape(x)[:2], "bool")
        encoder_padding_mask = ops.cast(encoder_padding_mask, "bool")
        length = ops.shape(x)[1]
        # One bias for the whole stack: relative positions plus the padding mask.
        bias = self.encoder_position_bias(relative_positions(length, length))
        bias = bias + _mask_bias(_key_mask(encoder_padding_mask))
        for layer in self.encoder_layers:
            x = layer(x, attention_bias=bias, training=training)
        return self._drop(self.encoder_final_norm(x), training), encoder_padding_mask

    # -- decoder --------------------------------------------------------------------------------

    def _logits(self, x):
        if self.lm_head is not None:
            return ops.matmul(x, ops.cast(self.lm_head, x.dtype))
        x = x * ops.cast(self.hidden_dim ** -0.5, x.dtype)
        batch, length = ops.shape(x)[0], ops.shape(x)[1]
        logits = ops.matmul(ops.reshape(x, (-1, self.hidden_dim)), ops.transpose(ops.cast(self.embeddings, x.dtype)))
        return ops.reshape(logits, (batch, length, self.vocab_size))

    def decode_sequence(self, decoder_token_ids, encoder_outputs, decoder_padding_mask=None, training=None):
        """Decoder hidden states ``(batch, T, d)`` after the final norm (keras-hub's ``decoder_sequence_output``)."""
        encoded, encoder_padding_mask = encoder_outputs
        x = self._embed(decoder_token_ids, training)
        length = ops.shape(x)[1]
        mask = ops.expand_dims(ops.less_equal(relative_positions(length, length), 0), 1)  # causal: j <= i
        if decoder_padding_mask is not None:
            mask = ops.logical_and(mask, _key_mask(decoder_padding_mask))
        bias = self.decoder_position_bias(relative_positions(length, length)) + _mask_bias(mask)
        cross_bias = _mask_bias(_key_mask(encoder_padding_mask))
        for layer in self.decoder_layers:
            x = layer([x, encoded], attention_bias=bias, cross_attention_bias=cross_bias, training=training)
        return self._drop(self.decoder_final_norm(x), training)

    def decode(self, decoder_token_ids, encoder_outputs, decoder_padding_mask=None, training=None):
        """Logits ``(batch, T, vocab)`` of ``decoder_token_ids`` over :meth:`encode`'s ``(sequence, mask)``."""
        return self._logits(self.decode_sequence(decoder_token_ids, encoder_outputs, decoder_padding_mask, training))

    def call(self, inputs, encoder_padding_mask=None, decoder_padding_mask=None, training=None):
        encoder_inputs, decoder_token_ids, decoder_padding_mask = unpack_seq2seq_inputs(
            "T5", inputs, decoder_padding_mask
        )
        encoded = self.encode(encoder_inputs, encoder_padding_mask, training=training)
        return self.decode(decoder_token_ids, encoded, decoder_padding_mask, training=training)

    # -- generation (layers/generation.py) ------------------------------------------------------

    def build_cache(self, batch_size, cache_length=None, encoder_outputs=None):
        """``(self_caches, cross_caches, encoder_padding_mask)``; the encoder is projected once per layer."""
        if encoder_outputs is None:
            raise ValueError("T5.build_cache needs encoder_outputs: (sequence, mask) from encode()")
        encoded, encoder_padding_mask = encoder_outputs
        cache_length = self.max_length if cache_length is None else cache_length
        self_caches = tuple(layer.self_attention.empty_cache(batch_size, cache_length) for layer in self.decoder_layers)
        cross_caches = tuple(layer.cross_attention.compute_key_value(encoded) for layer in self.decoder_layers)
        return self_caches, cross_caches, ops.cast(encoder_padding_mask, "bool")

    def call_with_cache(self, token_ids, cache, cache_index):
        """Logits of ``token_ids`` placed at ``cache_index`` and the updated cache."""
        self_caches, cross_caches, encoder_padding_mask = cache
        x = self._embed(token_ids, False)
        positions = relative_positions(ops.shape(token_ids)[1], ops.shape(self_caches[0][0])[2], cache_index)
        bias = self.decoder_position_bias(positions) + _mask_bias(ops.expand_dims(ops.less_equal(positions, 0), 1))
        cross_bias = _mask_bias(_key_mask(encoder_padding_mask))
        new_self = []
        for layer, self_cache, cross_cache in zip(self.decoder_layers, self_caches, cross_caches):
            x, self_cache = layer(
                x, attention_bias=bias, cross_attention_bias=cross_bias, self_attention_cache=self_cache,
                cache_index=cache_index, cross_attention_cache=cross_cache,
            )
            new_self.append(self_cache)
        logits = self._logits(self.decoder_final_norm(x))
        return logits, (tuple(new_self), cross_caches, encoder_padding_mask)

    def reorder_cache(self, cache, rows):
        """Self-attention caches re-gathered by ``rows`` (beam search); beams share the encoder part."""
        self_caches, cross_caches, encoder_padding_mask = cache
        return take_rows(self_caches, rows), cross_caches, encoder_padding_mask

    def select_rows(self, cache, rows):
        """The whole cache of the rows ``rows`` only."""
        self_caches, cross_caches, encoder_padding_mask = cache
        return take_rows(self_caches, rows), take_rows(cross_caches, rows), ops.take(encoder_padding_mask, rows, axis=0)

    def generation_logits(self, token_ids, context):
        """Decoder logits of the whole sequence without a cache; ``context`` is :meth:`encode`'s output."""
        return self.decode(token_ids, context)

    def get_config(self):
        return {
            **super().get_config(),
            "vocab_size": self.vocab_size,
            "max_length": self.max_length,
            "num_layers": self.num_layers,
            "num_decoder_layers": self.num_decoder_layers,
            "hidden_dim": self.hidden_dim,
            "num_heads": self.num_heads,
            "intermediate_dim": self.intermediate_dim,
            "key_value_dim": self.key_value_dim,
            "dropout": self.dropout,
            "activation": self.activation,
            "use_gated_activation": self.use_gated_activation,
            "layer_norm_epsilon": self.layer_norm_epsilon,
            "tie_embeddings": self.tie_embeddings,
            "relative_attention_buckets": self.relative_attention_buckets,
            "relative_attention_max_distance": self.relative_attention_max_distance,
        }


def copy_t5_weights(backbone, model):
    """Copy a ``keras_hub.models.T5Backbone``'s weights into our :class:`T5` (same shapes; biases none on both).

    keras-hub keeps the relative bias table in layer 0 of each stack; ours
    holds it in the model's ``encoder_position_bias`` / ``decoder_position_bias``.
    """
    if not model.built:
        model.build()
    model.embeddings.assign(backbone.token_embedding.embeddings)
    if model.lm_head is not None:
        model.lm_head.assign(backbone.token_embedding.reverse_embeddings)
    stacks = (
        (backbone.encoder_transformer_layers, model.encoder_layers, model.encoder_position_bias),
        (backbone.decoder_transformer_layers, model.decoder_layers, model.decoder_position_bias),
    )
    for theirs, ours, bias in stacks:
        if len(theirs) != len(ours):
            raise ValueError(f"layer counts differ: keras-hub {len(theirs)}, ours {len(ours)}")
        bias.embeddings.assign(theirs[0].self_attention.relative_attention_bias)
        for their, our in zip(theirs, ours):
            attentions = [("self_attention", "self_attention_layer_norm", "self_attention_norm")]
            if our.is_decoder:
                attentions.append(("cross_attention", "cross_attention_layer_norm", "cross_attention_norm"))
            for name, their_norm, our_norm in attentions:
                src, dst = getattr(their, name), getattr(our, name)
                for part in ("query", "key", "value", "output"):
                    getattr(dst, f"{part}_kernel").assign(getattr(src, f"{part}_projector").kernel)
                getattr(our, our_norm).gamma.assign(getattr(their, their_norm).weight)
            our.input_kernel.assign(their.input_projector.kernel)
            if our.gate_kernel is not None:
                our.gate_kernel.assign(their.gate_projector.kernel)
            our.output_kernel.assign(their.output_projector.kernel)
            our.feedforward_norm.gamma.assign(their.layer_norm.weight)
    model.encoder_final_norm.gamma.assign(backbone.encoder_layer_norm.weight)
    model.decoder_final_norm.gamma.assign(backbone.decoder_layer_norm.weight)
    return model
