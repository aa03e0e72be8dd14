"""Transformer layers (textbook chapter 5): position-wise FFN, encoder layer, decoder layer.

Each sub-block (self-attention, cross-attention, FFN) is wrapped in a residual
connection and layer normalization. ``normalize_first=False`` is the original
post-LN Transformer (Vaswani et al., 2017): ``x = LN(x + Sublayer(x))``;
``normalize_first=True`` is the pre-LN arrangement of GPT-2:
``x = x + Sublayer(LN(x))``. Sub-layer names and weight shapes follow
``keras_hub.layers.TransformerEncoder`` / ``TransformerDecoder`` so weights can
be copied between them (``tests/layers/test_transformer.py``).

The decoder layer decodes with explicit KV-cache tensors (section 11.2): pass
``self_attention_cache=(key_cache, value_cache)`` and ``cache_index`` and it
returns ``(outputs, new_self_attention_cache)``; cross-attention reads a
precomputed ``cross_attention_cache`` (``cross_attention.compute_key_value``
of the encoder output) so the encoder is projected once per generation.

Section 7.1/7.4 by configuration: ``attention="full|longformer|bigbird|linformer|performer"``
picks the self-attention (``layers.sparse_attention``, ``layers.linear_attention``;
its settings in ``attention_options``), ``feedforward="dense|switch"`` the FFN
(``layers.mixture_of_experts``; settings in ``feedforward_options``). Cross-attention
stays full (the encoder output is short next to what efficient attention is for).
The efficient self-attentions compute a whole sequence at once: a decoder layer with
one of them trains and scores but does not decode step by step with a KV-cache, and
Linformer (whose length projection mixes every position) is encoder-only.
"""

import keras
from keras import ops

from layers.activations import get_activation
from layers.attention import MultiHeadAttention, _fresh, _shapes
from layers.dropout import Dropout
from layers.normalization import LayerNormalization
from layers.perceptron import Dense
from layers.validation import check_positive_float, check_positive_int, check_rank

__all__ = [
    "ATTENTIONS", "FEEDFORWARDS", "PositionwiseFeedForward", "TransformerEncoderLayer", "TransformerDecoderLayer",
    "head_size", "self_attention_layer",
]

ATTENTIONS = ("full", "longformer", "bigbird", "linformer", "performer")
FEEDFORWARDS = ("dense", "switch")
# Each efficient attention's settings (attention_options keys) and their defaults.
_ATTENTION_OPTIONS = {
    "full": {},
    "longformer": {"window": 128, "num_global": 0},
    "bigbird": {"block": 64, "num_global": 0, "num_random": 1, "seed": 0},
    "linformer": {"projected_length": 64, "max_length": None},
    "performer": {"num_features": 64, "seed": 0},
}

_ACTIVATIONS = ("relu", "gelu", "gelu_exact", "sigmoid", "tanh", "leaky_relu", "swish")
_GELUS = {"gelu": True, "gelu_exact": False}  # name -> approximate (tanh) or erf


def _optional_initializer(initializer):
    return None if initializer is None else keras.initializers.get(initializer)


def _serialize_optional(initializer):
    return None if initializer is None else keras.initializers.serialize(initializer)


def _check_attention(owner, attention, options):
    """Validate ``attention`` and its ``options`` at construction; returns the options with defaults filled."""
    if attention not in ATTENTIONS:
        raise ValueError(f"{owner} attention must be one of {', '.join(ATTENTIONS)}; got {attention!r}")
    options = dict(options or {})
    unknown = sorted(set(options) - set(_ATTENTION_OPTIONS[attention]))
    if unknown:
        allowed = ", ".join(_ATTENTION_OPTIONS[attention]) or "none"
        raise ValueError(f"{owner} attention={attention!r} takes no option {', '.join(unknown)} (its options: {allowed})")
    return {**_ATTENTION_OPTIONS[attention], **options}


def self_attention_layer(attention, options, num_heads, key_dim, causal, length, **kwargs):
    """The section 7.1 self-attention layer named ``attention`` (not ``"full"``), built for ``(…, length, …)``.

    ``length`` is the static sequence length; Linformer's projections need it (or ``max_length`` in ``options``).
    """
    options = _check_attention("self_attention_layer", attention, options)
    if attention in ("longformer", "bigbird"):
        from layers.sparse_attention import BigBirdSelfAttention, LongformerSelfAttention

        kind = LongformerSelfAttention if attention == "longformer" else BigBirdSelfAttention
        return kind(num_heads, key_dim, causal=causal, **options, **kwargs)
    from layers.linear_attention import LinformerAttention, PerformerAttention

    if attention == "performer":
        return PerformerAttention(num_heads, key_dim, causal=causal, **options, **kwargs)
    if attention == "linformer":
        if causal:
            raise ValueError(
                "linformer is encoder-only: its length projection mixes every position, so it cannot be causal; "
                "a decoder takes full, longformer, bigbird or performer"
            )
        max_length = options.pop("max_length") or length
        if max_length is None:
            raise ValueError("linformer needs a fixed sequence length: give the input a static length or set "
                             "attention_options={'max_length': N}")
        return LinformerAttention(num_heads, key_dim, max_length=max_length, **options, **kwargs)
    raise ValueError(f"self_attention_layer builds the efficient attentions only, not {attention!r}")


def head_size(layer_name, hidden_dim, num_heads):
    """``hidden_dim // num_heads``; ValueError unless the heads split the width evenly."""
    if hidden_dim is None:
        raise ValueError(f"{layer_name} needs a known hidden size (last axis)")
    if hidden_dim % num_heads:
        raise ValueError(
            f"{layer_name}: hidden size {hidden_dim} is not divisible by num_heads={num_heads}, so the "
            f"heads would have mismatched head sizes; use a hidden size that is a multiple of {num_heads}"
        )
    return hidden_dim // num_heads


@keras.saving.register_keras_serializable(package="tfsuite")
class PositionwiseFeedForward(keras.layers.Layer):
    """Section 5.4, position-wise feed-forward network: ``FFN(x) = max(0, x W_1 + b_1) W_2 + b_2``.

    The same two-layer network is applied to every position. ``max(0, .)`` is
    the default ReLU; ``activation`` swaps it (GPT-2 uses ``"gelu"``).

    Args:
        intermediate_dim: int, width of the hidden layer (``d_ff``, 2048 in the paper).
        activation: str, ``"relu"`` (default), ``"gelu_exact"`` (``x * Phi(x)``
            with the erf, as the original BERT), ``"gelu"`` (tanh approximation,
            as GPT-2), or a section 1.2 activation name (``"sigmoid"``,
            ``"tanh"``, ``"leaky_relu"``, ``"swish"``).
        dropout: float in [0, 1), dropout after the activation. Default 0.
        kernel_initializer: initializer for ``W_1, W_2``. Default ``"glorot_uniform"``.
        bias_initializer: initializer for ``b_1, b_2``. Default ``"zeros"``.
        output_kernel_initializer: initializer for ``W_2`` alone (the
            projection back onto the residual stream), or None for
            ``kernel_initializer``. Default None.

    Input shape: ``(batch, T, d_model)``. Output shape: same.

    Example:
    >>> PositionwiseFeedForward(intermediate_dim=64)(np.ones((2, 5, 16), "float32")).shape
    (2, 5, 16)
    """

    def __init__(
        self,
        intermediate_dim,
        activation="relu",
        dropout=0.0,
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        output_kernel_initializer=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.intermediate_dim = check_positive_int("PositionwiseFeedForward intermediate_dim", intermediate_dim)
        if activation not in _ACTIVATIONS:
            raise ValueError(
                f"PositionwiseFeedForward activation must be one of {sorted(_ACTIVATIONS)}, got {activation!r}"
            )
        self.activation = activation
        self.dropout = check_positive_float("PositionwiseFeedForward dropout", dropout, allow_zero=True)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.output_kernel_initializer = _optional_initializer(output_kernel_initializer)
        self._activation_layer = None if activation in _GELUS else get_activation(activation)
        self.dropout_layer = Dropout(self.dropout) if self.dropout else None

    def build(self, input_shape):
        check_rank("PositionwiseFeedForward", input_shape, 3, "(batch, time, d_model)")
        init = dict(
            kernel_initializer=_fresh(self.kernel_initializer),
            bias_initializer=_fresh(self.bias_initializer),
            dtype=self.dtype_policy,
        )
        self.intermediate_dense = Dense(self.intermediate_dim, name="intermediate_dense", **init)
        self.intermediate_dense.build(input_shape)
        output = self.kernel_initializer if self.output_kernel_initializer is None else self.output_kernel_initializer
        init.update(kernel_initializer=_fresh(output), bias_initializer=_fresh(self.bias_initializer))
        self.output_dense = Dense(input_shape[-1], name="output_dense", **init)
        self.output_dense.build((*input_shape[:-1], self.intermediate_dim))

    def call(self, inputs, training=None):
        x = self.intermediate_dense(inputs)
        if self._activation_layer is None:
            x = ops.gelu(x, approximate=_GELUS[self.activation])
        else:
            x = self._activation_layer(x)
        if self.dropout_layer is not None:
            x = self.dropout_layer(x, training=training)
        return self.output_dense(x)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {
            **super().get_config(),
            "intermediate_dim": self.intermediate_dim,
            "activation": self.activation,
            "dropout": self.dropout,
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
            "bias_initializer": keras.initializers.serialize(self.bias_initializer),
            "output_kernel_initializer": _serialize_optional(self.output_kernel_initializer),
        }


class _TransformerBlock(keras.layers.Layer):
    """Shared arguments, sub-layer factories and the residual/LN wrapper."""

    def __init__(
        self,
        intermediate_dim,
        num_heads,
        dropout=0.0,
        activation="relu",
        layer_norm_epsilon=1e-5,
        normalize_first=False,
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        activation_dropout=None,
        output_kernel_initializer=None,
        attention="full",
        attention_options=None,
        feedforward="dense",
        feedforward_options=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        name = type(self).__name__
        self.attention = attention
        self.attention_options = _check_attention(name, attention, attention_options)
        if feedforward not in FEEDFORWARDS:
            raise ValueError(f"{name} feedforward must be one of {', '.join(FEEDFORWARDS)}; got {feedforward!r}")
        if feedforward == "dense" and feedforward_options:
            raise ValueError(f"{name} feedforward='dense' takes no feedforward_options (got {feedforward_options!r})")
        self.feedforward_kind = feedforward
        self.feedforward_options = dict(feedforward_options or {})
        if feedforward == "switch":
            from layers.mixture_of_experts import SwitchFeedForward

            try:  # its own checks, now rather than at build (not kept: build makes the real one)
                SwitchFeedForward(intermediate_dim, **self.feedforward_options)
            except TypeError as error:
                raise ValueError(f"{name} feedforward_options {self.feedforward_options!r}: {error}") from None
        self.activation_dropout = None if activation_dropout is None else check_positive_float(
            f"{name} activation_dropout", activation_dropout, allow_zero=True
        )
        self.intermediate_dim = check_positive_int(f"{name} intermediate_dim", intermediate_dim)
        self.num_heads = check_positive_int(f"{name} num_heads", num_heads)
        self.dropout = check_positive_float(f"{name} dropout", dropout, allow_zero=True)
        self.activation = activation
        self.layer_norm_epsilon = check_positive_float(f"{name} layer_norm_epsilon", layer_norm_epsilon)
        self.normalize_first = bool(normalize_first)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.output_kernel_initializer = _optional_initializer(output_kernel_initializer)
        if activation not in _ACTIVATIONS:
            raise ValueError(f"{name} activation must be one of {sorted(_ACTIVATIONS)}, got {activation!r}")

    def _initializers(self):
        # A fresh initializer per sub-layer, so two kernels never share a seed.
        return dict(
            kernel_initializer=_fresh(self.kernel_initializer),
            bias_initializer=_fresh(self.bias_initializer),
            output_kernel_initializer=(
                None if self.output_kernel_initializer is None else _fresh(self.output_kernel_initializer)
            ),
        )

    def _attention(self, name, query_shape, value_shape, causal=False):
        head_dim = head_size(type(self).__name__, query_shape[-1], self.num_heads)
        if name == "self_attention" and self.attention != "full":
            layer = self_attention_layer(
                self.attention, self.attention_options, self.num_heads, head_dim, causal, query_shape[1],
                dtype=self.dtype_policy, name=name,
            )
            layer.build(query_shape)
            return layer
        layer = MultiHeadAttention(
            self.num_heads, head_dim, dropout=self.dropout, dtype=self.dtype_policy, name=name,
            **self._initializers(),
        )
        layer.build([query_shape, value_shape])
        return layer

    def _norm(self, name, shape):
        layer = LayerNormalization(epsilon=self.layer_norm_epsilon, dtype=self.dtype_policy, name=name)
        layer.build(shape)
        return layer

    def _dropout(self, name):
        return Dropout(self.dropout, dtype=self.dtype_policy, name=name) if self.dropout else None

    def _feedforward(self, shape):
        inner = self.dropout if self.activation_dropout is None else self.activation_dropout
        if self.feedforward_kind == "switch":
            from layers.mixture_of_experts import SwitchFeedForward

            initializers = self._initializers()
            initializers.pop("output_kernel_initializer")
            layer = SwitchFeedForward(
                self.intermediate_dim, activation=self.activation, dropout=inner, dtype=self.dtype_policy,
                name="feedforward", **initializers, **self.feedforward_options,
            )
        else:
            layer = PositionwiseFeedForward(
                self.intermediate_dim, activation=self.activation, dropout=inner,
                dtype=self.dtype_policy, name="feedforward", **self._initializers(),
            )
        layer.build(shape)
        return layer

    def _feed(self, y, padding_mask, training):
        if self.feedforward_kind == "switch":
            return [self.feedforward(y, padding_mask=padding_mask, training=training)]
        return [self.feedforward(y, training=training)]

    def _residual(self, x, norm, sublayer, dropout, training):
        """Post-LN ``LN(x + f(x))`` or pre-LN ``x + f(LN(x))``; returns (output, sublayer extras)."""
        y = norm(x) if self.normalize_first else x
        y, *extras = sublayer(y)
        if dropout is not None:
            y = dropout(y, training=training)
        y = x + y
        return (y if self.normalize_first else norm(y)), extras

    def compute_output_shape(self, input_shape):
        return _shapes(input_shape)[0]

    def get_config(self):
        return {
            **super().get_config(),
            "intermediate_dim": self.intermediate_dim,
            "num_heads": self.num_heads,
            "dropout": self.dropout,
            "activation": self.activation,
            "layer_norm_epsilon": self.layer_norm_epsilon,
            "normalize_first": self.normalize_first,
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
            "bias_initializer": keras.initializers.serialize(self.bias_initializer),
            "activation_dropout": self.activation_dropout,
            "output_kernel_initializer": _serialize_optional(self.output_kernel_initializer),
            "attention": self.attention,
            "attention_options": dict(self.attention_options),
            "feedforward": self.feedforward_kind,
            "feedforward_options": dict(self.feedforward_options),
        }


@keras.saving.register_keras_serializable(package="tfsuite")
class TransformerEncoderLayer(_TransformerBlock):
    """Section 5.1, Transformer encoder layer: ``x = LN(x + MultiHead(x, x, x))``, ``y = LN(x + FFN(x))``.

    Follows Vaswani et al. (2017) (post-LN); ``normalize_first=True`` gives
    the pre-LN form ``x = x + MultiHead(LN(x))``, ``y = x + FFN(LN(x))``.
    The attention uses ``num_heads`` heads of size ``d_model / num_heads``.

    Args:
        intermediate_dim: int, FFN hidden width ``d_ff``.
        num_heads: int, number of heads; must divide ``d_model``.
        dropout: float in [0, 1), dropout on attention weights and after each
            sub-block. Default 0.
        activation: str, FFN activation (see ``PositionwiseFeedForward``). Default ``"relu"``.
        layer_norm_epsilon: float > 0. Default ``1e-5``.
        normalize_first: bool, pre-LN (GPT-2) instead of post-LN. Default False.
        kernel_initializer: initializer for all kernels. Default ``"glorot_uniform"``.
        bias_initializer: initializer for all biases. Default ``"zeros"``.
        activation_dropout: float or None, dropout on the FFN hidden
            activations (tensor2tensor's "relu dropout"); None uses
            ``dropout``. keras-hub's layers and GPT-2 have none (0.0). Default None.
        output_kernel_initializer: initializer for the kernels that write
            back onto the residual stream (attention ``W_O`` and the FFN's
            ``W_2``), or None for ``kernel_initializer``. GPT-2 scales them by
            ``1/sqrt(2 * num_layers)`` (``layers/gpt.py``). Default None.
        attention: str, the self-attention: ``"full"`` (section 5.1), ``"longformer"``,
            ``"bigbird"``, ``"linformer"`` or ``"performer"`` (section 7.1). Default ``"full"``.
        attention_options: dict or None, that attention's settings: longformer ``window`` (128),
            ``num_global`` (0); bigbird ``block`` (64), ``num_global``, ``num_random`` (1), ``seed``;
            linformer ``projected_length`` (64), ``max_length`` (the input's static length);
            performer ``num_features`` (64), ``seed``. A window or block longer than the input is
            full attention; a length not a multiple of the block is padded internally.
        feedforward: str, ``"dense"`` (``PositionwiseFeedForward``) or ``"switch"`` (section 7.4,
            ``layers.mixture_of_experts.SwitchFeedForward``). Default ``"dense"``.
        feedforward_options: dict or None, the Switch FFN's settings (``num_experts``,
            ``capacity_factor``, the loss weights, ...).

    Call arguments:
        inputs: ``(batch, T, d_model)``.
        padding_mask: bool ``(batch, T)`` or None, True for real tokens.
        attention_mask: bool ``(batch, T, T)`` or None (full attention only: the efficient ones
            carry their own pattern).

    Output shape: ``(batch, T, d_model)``.

    Example:
    >>> layer = TransformerEncoderLayer(intermediate_dim=64, num_heads=4)
    >>> layer(np.ones((2, 10, 32), "float32"), padding_mask=np.ones((2, 10), bool)).shape
    (2, 10, 32)
    """

    def build(self, input_shape):
        check_rank("TransformerEncoderLayer", input_shape, 3, "(batch, time, d_model)")
        self.self_attention = self._attention("self_attention", input_shape, input_shape)
        self.self_attention_layer_norm = self._norm("self_attention_layer_norm", input_shape)
        self.self_attention_dropout = self._dropout("self_attention_dropout")
        self.feedforward = self._feedforward(input_shape)
        self.feedforward_layer_norm = self._norm("feedforward_layer_norm", input_shape)
        self.feedforward_dropout = self._dropout("feedforward_dropout")

    def call(self, inputs, padding_mask=None, attention_mask=None, training=None):
        check_rank("TransformerEncoderLayer", inputs.shape, 3, "(batch, time, d_model)")
        if self.attention != "full" and attention_mask is not None:
            raise ValueError(
                f"TransformerEncoderLayer with attention={self.attention!r} takes a padding_mask only; "
                "an attention_mask needs attention='full'"
            )

        def self_attend(y):
            if self.attention != "full":
                return [self.self_attention(y, padding_mask=padding_mask)]
            return [self.self_attention(y, padding_mask=padding_mask, attention_mask=attention_mask, training=training)]

        x, _ = self._residual(
            inputs, self.self_attention_layer_norm, self_attend, self.self_attention_dropout, training
        )
        x, _ = self._residual(
            x, self.feedforward_layer_norm, lambda y: self._feed(y, padding_mask, training),
            self.feedforward_dropout, training,
        )
        return x


@keras.saving.register_keras_serializable(package="tfsuite")
class TransformerDecoderLayer(_TransformerBlock):
    """Section 5.1/5.3, Transformer decoder layer: masked self-attention, cross-attention, FFN.

    ``x = LN(x + MaskedMultiHead(x))``, ``x = LN(x + MultiHead(x, enc, enc))``,
    ``y = LN(x + FFN(x))`` (post-LN; ``normalize_first=True`` for pre-LN).
    The self-attention is causal (section 5.3: future positions get ``-inf``).
    Called with ``[decoder_sequence, encoder_sequence]`` the layer has
    cross-attention (encoder-decoder Transformer); called with the decoder
    sequence alone it has none (decoder-only GPT). The first call fixes which.

    Args: as ``TransformerEncoderLayer``.

    Call arguments:
        inputs: ``decoder_sequence (batch, T, d_model)`` or
            ``[decoder_sequence, encoder_sequence (batch, S, d_enc)]``.
        decoder_padding_mask: bool ``(batch, T)`` or None (not used with a cache,
            whose unwritten tail is hidden by the causal mask).
        encoder_padding_mask: bool ``(batch, S)`` or None.
        use_causal_mask: bool. Default True.
        self_attention_cache: None or ``(key_cache, value_cache)``, each
            ``(batch, num_heads, cache_length, head_dim)``.
        cache_index: int or scalar int tensor, where the inputs start in the
            cache; required with ``self_attention_cache``.
        cross_attention_cache: None or the precomputed encoder
            ``(keys, values)``; replaces ``encoder_sequence``.

    Output: ``(batch, T, d_model)``, or ``(outputs, new_self_attention_cache)``
    when a cache is given.

    Example:
    >>> layer = TransformerDecoderLayer(intermediate_dim=64, num_heads=4)
    >>> dec, enc = np.ones((2, 6, 32), "float32"), np.ones((2, 9, 32), "float32")
    >>> layer([dec, enc], encoder_padding_mask=np.ones((2, 9), bool)).shape
    (2, 6, 32)
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.attention == "linformer":
            raise ValueError(
                "TransformerDecoderLayer: linformer is encoder-only (its length projection mixes every position, "
                "so it cannot be causal); a decoder takes full, longformer, bigbird or performer"
            )

    def build(self, input_shape):
        shapes = _shapes(input_shape)
        decoder_shape = shapes[0]
        check_rank("TransformerDecoderLayer decoder_sequence", decoder_shape, 3, "(batch, time, d_model)")
        self.has_cross_attention = len(shapes) == 2
        self.self_attention = self._attention("self_attention", decoder_shape, decoder_shape, causal=True)
        self.self_attention_layer_norm = self._norm("self_attention_layer_norm", decoder_shape)
        self.self_attention_dropout = self._dropout("self_attention_dropout")
        if self.has_cross_attention:
            check_rank("TransformerDecoderLayer encoder_sequence", shapes[1], 3, "(batch, time, d_model)")
            self.cross_attention = self._attention("cross_attention", decoder_shape, shapes[1])
            self.cross_attention_layer_norm = self._norm("cross_attention_layer_norm", decoder_shape)
            self.cross_attention_dropout = self._dropout("cross_attention_dropout")
        self.feedforward = self._feedforward(decoder_shape)
        self.feedforward_layer_norm = self._norm("feedforward_layer_norm", decoder_shape)
        self.feedforward_dropout = self._dropout("feedforward_dropout")

    def call(
        self,
        inputs,
        decoder_padding_mask=None,
        encoder_padding_mask=None,
        use_causal_mask=True,
        self_attention_cache=None,
        cache_index=None,
        cross_attention_cache=None,
        training=None,
    ):
        if isinstance(inputs, (list, tuple)):
            decoder_sequence, encoder_sequence = inputs
        else:
            decoder_sequence, encoder_sequence = inputs, None
        check_rank("TransformerDecoderLayer decoder_sequence", decoder_sequence.shape, 3, "(batch, time, d_model)")
        has_encoder = encoder_sequence is not None or cross_attention_cache is not None
        if has_encoder != self.has_cross_attention:
            raise ValueError(
                "TransformerDecoderLayer was built "
                + ("with" if self.has_cross_attention else "without")
                + " cross-attention; call it with "
                + ("[decoder_sequence, encoder_sequence] or a cross_attention_cache" if self.has_cross_attention
                   else "the decoder sequence only")
            )
        if (self_attention_cache is None) != (cache_index is None):
            raise ValueError("TransformerDecoderLayer needs both self_attention_cache and cache_index, or neither")

        if self.attention != "full" and (self_attention_cache is not None or not use_causal_mask):
            raise ValueError(
                f"TransformerDecoderLayer with attention={self.attention!r} runs causal over the whole sequence: "
                "step-by-step decoding with a self_attention_cache, or use_causal_mask=False, needs attention='full'"
            )

        def self_attend(y):
            if self.attention != "full":
                return [self.self_attention(y, padding_mask=decoder_padding_mask)]
            if self_attention_cache is None:
                return [self.self_attention(
                    y, padding_mask=decoder_padding_mask, use_causal_mask=use_causal_mask, training=training
                )]
            return self.self_attention(
                y, use_causal_mask=use_causal_mask, cache=self_attention_cache, cache_index=cache_index,
                training=training,
            )

        x, extras = self._residual(
            decoder_sequence, self.self_attention_layer_norm, self_attend, self.self_attention_dropout, training
        )
        new_cache = extras[0] if extras else None
        if self.has_cross_attention:

            def cross_attend(y):
                if cross_attention_cache is None:
                    return [self.cross_attention(
                        [y, encoder_sequence], padding_mask=encoder_padding_mask, training=training
                    )]
                out, _ = self.cross_attention(
                    y, padding_mask=encoder_padding_mask, cache=cross_attention_cache, training=training
                )
                return [out]

            x, _ = self._residual(
                x, self.cross_attention_layer_norm, cross_attend, self.cross_attention_dropout, training
            )
        x, _ = self._residual(
            x, self.feedforward_layer_norm,
            lambda y: self._feed(y, None if self_attention_cache is not None else decoder_padding_mask, training),
            self.feedforward_dropout, training,
        )
        return x if new_cache is None else (x, new_cache)
