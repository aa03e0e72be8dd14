"""Attention (textbook chapter 4): score functions, scaled dot-product and multi-head attention.

Section 4.2 attends a decoder state ``h_t`` over encoder states ``h̄_s``::

    e(t, s) = score(h_t, h̄_s)        dot: h_t^T h̄_s
                                      general: h_t^T W_a h̄_s
                                      additive: v_a^T tanh(W_a [h_t; h̄_s])
    α(t, s) = softmax_s e(t, s)
    c(t)    = Σ_s α(t, s) h̄_s

Sections 4.3-4.4 generalise it to queries, keys and values::

    Attention(Q, K, V) = softmax(Q K^T / sqrt(d_k)) V
    MultiHead(Q, K, V) = Concat(head_1, ..., head_h) W_O,
    head_i = Attention(Q W_i^Q, K W_i^K, V W_i^V)

Mask convention (STYLE.md): boolean, True means "may attend". Padding masks
``(batch, source)``, explicit attention masks ``(batch, target, source)`` and
the causal mask of section 5.3 are merged in one helper,
``compute_attention_mask``. The textbook adds ``-inf`` where the mask is False;
we put a large finite negative number there instead so that a row with nothing
to attend to (a padding query) gives uniform weights instead of NaN, exactly
like ``keras.layers.MultiHeadAttention``.

``MultiHeadAttention`` also decodes with a key/value cache (section 11.2): the
cache is a pair of explicit fixed-size tensors ``(batch, heads, cache_length,
head_dim)`` updated with ``ops.slice_update`` (TFLite ``DYNAMIC_UPDATE_SLICE``).
"""

import math

import keras
from keras import ops

from layers.dropout import Dropout
from layers.perceptron import Dense
from layers.validation import check_choice, check_positive_float, check_positive_int, check_rank

__all__ = [
    "causal_mask",
    "compute_attention_mask",
    "scaled_dot_product_attention",
    "Attention",
    "ScaledDotProductAttention",
    "SelfAttention",
    "MultiHeadAttention",
    "ProjectedHeadsAttention",
]

# Stands in for the textbook's -inf: exp(-1e9 - max) is exactly 0 in float32, and
# a fully masked row stays finite (uniform weights), as in Keras.
_MASK_VALUE = -1e9


def causal_mask(query_length, key_length, query_offset=0):
    """Section 5.3 causal mask: query ``i`` may see key ``j`` only if ``j <= i + offset``.

    Args:
        query_length: int or scalar tensor, number of queries ``T``.
        key_length: int or scalar tensor, number of keys ``S``.
        query_offset: int or scalar int tensor, position of the first query
            (the cache index when decoding one token at a time). Default 0.

    Returns:
        Boolean tensor ``(T, S)``, True where attention is allowed.
    """
    # expand_dims, not x[:, None]: new-axis indexing becomes a StridedSlice that
    # TFLite can only run through the Flex delegate.
    i = ops.expand_dims(ops.arange(query_length, dtype="int32") + ops.cast(query_offset, "int32"), 1)
    j = ops.expand_dims(ops.arange(key_length, dtype="int32"), 0)
    return ops.greater_equal(i, j)


def _check_mask_shape(what, mask, expected, layout):
    """Raise ValueError if a mask's static shape cannot match ``expected``."""
    shape = tuple(mask.shape)
    ok = len(shape) == len(expected) and all(
        s is None or e is None or s == e or (s == 1 and i == 0)
        for i, (s, e) in enumerate(zip(shape, expected))
    )
    if not ok:
        raise ValueError(f"{what} must have shape {layout} = {tuple(expected)}, got shape {shape}")


def compute_attention_mask(
    batch_size,
    query_length,
    key_length,
    padding_mask=None,
    attention_mask=None,
    use_causal_mask=False,
    query_offset=0,
):
    """Merge padding, explicit and causal masks into one boolean mask.

    This is the one place where tfsuite combines masks (STYLE.md convention 4).

    Args:
        batch_size, query_length, key_length: ints (or None/tensors when not
            statically known), used to check the masks' shapes.
        padding_mask: bool ``(batch, key_length)`` or None; True marks real
            (non-padding) keys.
        attention_mask: bool ``(batch, query_length, key_length)`` or
            ``(query_length, key_length)`` or None; True where attention is
            allowed.
        use_causal_mask: bool, add the section 5.3 causal mask.
        query_offset: int or scalar tensor, absolute position of the first
            query for the causal mask (the cache index when decoding).

    Returns:
        None (attend everywhere) or a bool tensor broadcastable to
        ``(batch, query_length, key_length)``.

    Raises:
        ValueError: if a mask has the wrong rank or a wrong known dimension.
    """
    static = lambda n: n if isinstance(n, int) else None  # noqa: E731
    b, t, s = static(batch_size), static(query_length), static(key_length)
    mask = None
    if padding_mask is not None:
        padding_mask = ops.convert_to_tensor(padding_mask)
        _check_mask_shape("padding_mask", padding_mask, (b, s), "(batch, key_length)")
        mask = ops.expand_dims(ops.cast(padding_mask, "bool"), 1)
    if attention_mask is not None:
        attention_mask = ops.cast(ops.convert_to_tensor(attention_mask), "bool")
        if len(attention_mask.shape) == 2:
            _check_mask_shape("attention_mask", attention_mask, (t, s), "(query_length, key_length)")
            attention_mask = ops.expand_dims(attention_mask, 0)
        else:
            _check_mask_shape(
                "attention_mask", attention_mask, (b, t, s), "(batch, query_length, key_length)"
            )
        mask = attention_mask if mask is None else ops.logical_and(mask, attention_mask)
    if use_causal_mask:
        causal = ops.expand_dims(causal_mask(query_length, key_length, query_offset), 0)
        mask = causal if mask is None else ops.logical_and(mask, causal)
    return mask


def scaled_dot_product_attention(query, key, value, mask=None, dropout_layer=None, training=None):
    """Section 4.3: ``softmax(Q K^T / sqrt(d_k)) V`` over the last two axes.

    Args:
        query: ``(..., T, d_k)``.
        key: ``(..., S, d_k)``.
        value: ``(..., S, d_v)``.
        mask: bool, broadcastable to ``(..., T, S)``; True where allowed.
        dropout_layer: optional ``layers.dropout.Dropout`` applied to the weights.
        training: passed to the dropout layer.

    Returns:
        ``(output (..., T, d_v), weights (..., T, S))``.
    """
    d_k = query.shape[-1]
    # Scale the (smaller) query rather than the scores, as Keras does.
    query = ops.multiply(query, ops.cast(1.0 / math.sqrt(d_k), query.dtype))
    scores = ops.matmul(query, ops.swapaxes(key, -1, -2))
    if mask is not None:
        scores = ops.where(mask, scores, ops.cast(_MASK_VALUE, scores.dtype))
    # Softmax in float32 even under mixed precision: exp overflows float16.
    weights = ops.cast(ops.softmax(ops.cast(scores, "float32"), axis=-1), query.dtype)
    attended = weights if dropout_layer is None else dropout_layer(weights, training=training)
    return ops.matmul(attended, value), weights


def _length(x, axis):
    """Static size of ``axis`` when known, else the dynamic one."""
    return x.shape[axis] if x.shape[axis] is not None else ops.shape(x)[axis]


def _unpack(layer_name, inputs, allow_key=True):
    """``x`` -> (x, x, x); ``[q, v]`` -> (q, v, v); ``[q, v, k]`` -> (q, v, k)."""
    if isinstance(inputs, (list, tuple)):
        if len(inputs) == 2:
            return inputs[0], inputs[1], inputs[1]
        if len(inputs) == 3 and allow_key:
            return inputs[0], inputs[1], inputs[2]
        want = "[query, value] or [query, value, key]" if allow_key else "[query, value]"
        raise ValueError(f"{layer_name} expects a tensor or a list {want}, got {len(inputs)} inputs")
    return inputs, inputs, inputs


def _fresh(initializer):
    """A new instance of ``initializer`` for each weight.

    An unseeded Keras initializer fixes its seed when it is made, so one
    instance called for several same-shaped kernels gives them equal values
    (query, key and value would start identical).
    """
    return keras.initializers.get(keras.initializers.serialize(initializer))


def _shapes(input_shape):
    """Split a build shape into a list of shapes (one per input)."""
    if isinstance(input_shape, (list, tuple)) and input_shape and isinstance(
        input_shape[0], (list, tuple)
    ):
        return [tuple(s) for s in input_shape]
    return [tuple(input_shape)]


@keras.saving.register_keras_serializable(package="tfsuite")
class Attention(keras.layers.Layer):
    """Section 4.2, attention: ``α(t,s) = softmax_s score(h_t, h̄_s)``, ``c(t) = Σ_s α(t,s) h̄_s``.

    Scores:

    - ``"dot"``: ``h_t^T h̄_s`` (needs the same size for ``h_t`` and ``h̄_s``);
    - ``"general"``: ``h_t^T W_a h̄_s`` with ``W_a`` of shape ``(d_t, d_s)``;
    - ``"additive"``: ``v_a^T tanh(W_a [h_t; h̄_s])`` with ``W_a`` of shape
      ``(d_t + d_s, units)`` and ``v_a`` of shape ``(units,)``.

    Args:
        score: str, one of ``"dot"``, ``"general"``, ``"additive"``. Default ``"dot"``.
        units: int or None, hidden size of the additive score; None means
            ``d_s``. Ignored by the other scores. Default None.
        kernel_initializer: initializer for ``W_a`` and ``v_a``. Default
            ``"glorot_uniform"``.

    Call arguments:
        inputs: ``[h_t, h̄_s]``: decoder states ``(batch, T, d_t)`` and encoder
            states ``(batch, S, d_s)``.
        padding_mask: bool ``(batch, S)`` or None, True for real encoder steps.
        use_causal_mask: bool, only let ``t`` see ``s <= t``. Default False.

    Output: ``[context (batch, T, d_s), weights (batch, T, S)]``.

    Example:
    >>> h_t, h_s = np.ones((2, 3, 8), "float32"), np.ones((2, 5, 8), "float32")
    >>> context, weights = Attention(score="general")([h_t, h_s])
    >>> context.shape, weights.shape
    ((2, 3, 8), (2, 3, 5))
    """

    SCORES = ("dot", "general", "additive")

    def __init__(self, score="dot", units=None, kernel_initializer="glorot_uniform", **kwargs):
        super().__init__(**kwargs)
        self.score = check_choice("Attention score", score, self.SCORES)
        self.units = None if units is None else check_positive_int("Attention units", units)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)

    def build(self, input_shape):
        shapes = _shapes(input_shape)
        if len(shapes) != 2:
            raise ValueError(f"Attention expects inputs [h_t, h_s], got {len(shapes)} input shapes")
        for what, shape in zip(("h_t", "h_s"), shapes):
            check_rank(f"Attention {what}", shape, 3, "(batch, time, features)")
        d_t, d_s = shapes[0][-1], shapes[1][-1]
        if self.score == "dot" and d_t != d_s:
            raise ValueError(
                f"Attention score 'dot' needs h_t and h_s of the same size, got {d_t} and {d_s}; "
                "use score='general' or 'additive' for different sizes"
            )
        if self.score == "general":
            self.w_a = self.add_weight(
                name="w_a", shape=(d_t, d_s), initializer=self.kernel_initializer
            )
        elif self.score == "additive":
            units = self.units or d_s
            self.w_a = self.add_weight(
                name="w_a", shape=(d_t + d_s, units), initializer=self.kernel_initializer
            )
            self.v_a = self.add_weight(name="v_a", shape=(units,), initializer=self.kernel_initializer)
        self._d_t = d_t

    def _scores(self, h_t, h_s):
        if self.score == "dot":
            return ops.matmul(h_t, ops.swapaxes(h_s, 1, 2))
        if self.score == "general":
            return ops.matmul(ops.matmul(h_t, self.w_a), ops.swapaxes(h_s, 1, 2))
        # W_a [h_t; h̄_s] = h_t W_a[:d_t] + h̄_s W_a[d_t:], so the (T x S) pairs
        # are formed by broadcasting instead of concatenating every pair.
        query = ops.expand_dims(ops.matmul(h_t, self.w_a[: self._d_t]), 2)
        keys = ops.expand_dims(ops.matmul(h_s, self.w_a[self._d_t :]), 1)
        return ops.sum(ops.tanh(query + keys) * self.v_a, axis=-1)

    def call(self, inputs, padding_mask=None, use_causal_mask=False):
        if not isinstance(inputs, (list, tuple)) or len(inputs) != 2:
            raise ValueError("Attention expects inputs [h_t, h_s] (decoder and encoder states)")
        h_t, h_s = inputs
        scores = self._scores(h_t, h_s)
        mask = compute_attention_mask(
            h_t.shape[0], _length(h_t, 1), _length(h_s, 1), padding_mask=padding_mask,
            use_causal_mask=use_causal_mask,
        )
        if mask is not None:
            scores = ops.where(mask, scores, ops.cast(_MASK_VALUE, scores.dtype))
        weights = ops.cast(ops.softmax(ops.cast(scores, "float32"), axis=-1), h_s.dtype)
        return [ops.matmul(weights, h_s), weights]

    def compute_output_shape(self, input_shape):
        (b, t, _), (_, s, d_s) = _shapes(input_shape)
        return [(b, t, d_s), (b, t, s)]

    def get_config(self):
        return {
            **super().get_config(),
            "score": self.score,
            "units": self.units,
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
        }


@keras.saving.register_keras_serializable(package="tfsuite")
class ScaledDotProductAttention(keras.layers.Layer):
    """Section 4.3, scaled dot-product attention: ``softmax(Q K^T / sqrt(d_k)) V``.

    No weights: Q, K and V come in already projected.

    Args:
        dropout: float in [0, 1), dropout on the attention weights when
            training. Default 0.

    Call arguments:
        inputs: ``[Q (batch, T, d_k), K (batch, S, d_k), V (batch, S, d_v)]``.
        padding_mask: bool ``(batch, S)`` or None, True for real keys.
        attention_mask: bool ``(batch, T, S)`` or ``(T, S)`` or None.
        use_causal_mask: bool, section 5.3 causal mask. Default False.
        return_attention_scores: bool, also return the weights. Default False.

    Output: ``(batch, T, d_v)`` (and weights ``(batch, T, S)``).

    Example:
    >>> q = k = v = np.ones((2, 4, 8), "float32")
    >>> ScaledDotProductAttention()([q, k, v], use_causal_mask=True).shape
    (2, 4, 8)
    """

    def __init__(self, dropout=0.0, **kwargs):
        super().__init__(**kwargs)
        self.dropout = check_positive_float("ScaledDotProductAttention dropout", dropout, allow_zero=True)
        self.dropout_layer = Dropout(self.dropout) if self.dropout else None

    def build(self, input_shape):
        shapes = _shapes(input_shape)
        if len(shapes) != 3:
            raise ValueError(f"ScaledDotProductAttention expects inputs [Q, K, V], got {len(shapes)}")
        for what, shape in zip("QKV", shapes):
            check_rank(f"ScaledDotProductAttention {what}", shape, 3, "(batch, time, features)")
        if shapes[0][-1] != shapes[1][-1]:
            raise ValueError(
                f"ScaledDotProductAttention needs Q and K of the same size d_k, got {shapes[0][-1]} "
                f"and {shapes[1][-1]}"
            )

    def call(
        self, inputs, padding_mask=None, attention_mask=None, use_causal_mask=False,
        return_attention_scores=False, training=None,
    ):
        q, k, v = inputs
        mask = compute_attention_mask(
            q.shape[0], _length(q, 1), _length(k, 1), padding_mask, attention_mask, use_causal_mask
        )
        out, weights = scaled_dot_product_attention(q, k, v, mask, self.dropout_layer, training)
        return (out, weights) if return_attention_scores else out

    def get_config(self):
        return {**super().get_config(), "dropout": self.dropout}


@keras.saving.register_keras_serializable(package="tfsuite")
class SelfAttention(keras.layers.Layer):
    """Section 4.3, self-attention: ``Attention(X W_Q, X W_K, X W_V)``.

    One head, queries, keys and values all projected from the same ``X``.

    Args:
        key_dim: int, ``d_k``, size of queries and keys.
        value_dim: int or None, ``d_v``; None means ``key_dim``. Default None.
        kernel_initializer: initializer for ``W_Q, W_K, W_V``. Default
            ``"glorot_uniform"``.

    Call arguments:
        inputs: ``X (batch, T, d_model)``.
        padding_mask: bool ``(batch, T)`` or None.
        use_causal_mask: bool. Default False.

    Output: ``(batch, T, d_v)``.

    Example:
    >>> SelfAttention(key_dim=4)(np.ones((2, 5, 8), "float32")).shape
    (2, 5, 4)
    """

    def __init__(self, key_dim, value_dim=None, kernel_initializer="glorot_uniform", **kwargs):
        super().__init__(**kwargs)
        self.key_dim = check_positive_int("SelfAttention key_dim", key_dim)
        self.value_dim = check_positive_int("SelfAttention value_dim", value_dim or key_dim)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)

    def build(self, input_shape):
        check_rank("SelfAttention", input_shape, 3, "(batch, time, features)")
        d = input_shape[-1]
        init = self.kernel_initializer
        self.w_q = self.add_weight(name="w_q", shape=(d, self.key_dim), initializer=init)
        self.w_k = self.add_weight(name="w_k", shape=(d, self.key_dim), initializer=init)
        self.w_v = self.add_weight(name="w_v", shape=(d, self.value_dim), initializer=init)

    def call(self, inputs, padding_mask=None, use_causal_mask=False):
        check_rank("SelfAttention", inputs.shape, 3, "(batch, time, features)")
        q, k, v = (ops.matmul(inputs, w) for w in (self.w_q, self.w_k, self.w_v))
        t = _length(inputs, 1)
        mask = compute_attention_mask(
            inputs.shape[0], t, t, padding_mask, use_causal_mask=use_causal_mask
        )
        return scaled_dot_product_attention(q, k, v, mask)[0]

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.value_dim)

    def get_config(self):
        return {
            **super().get_config(),
            "key_dim": self.key_dim,
            "value_dim": self.value_dim,
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
        }


@keras.saving.register_keras_serializable(package="tfsuite")
class MultiHeadAttention(keras.layers.Layer):
    """Section 4.4, multi-head attention: ``Concat(head_1..head_h) W_O``, ``head_i = Attention(Q W_i^Q, K W_i^K, V W_i^V)``.

    Weights have the layout of ``keras.layers.MultiHeadAttention`` so they can
    be copied across: ``query_kernel (d_q, h, key_dim)``, ``query_bias (h,
    key_dim)``, the same for key and value, ``output_kernel (h, value_dim,
    d_out)``, ``output_bias (d_out,)``.

    Args:
        num_heads: int, number of heads ``h``.
        key_dim: int, size of each head's queries and keys ``d_k``.
        value_dim: int or None, size of each head's values; None means
            ``key_dim``. Default None.
        output_dim: int or None, size of the output; None means the query size.
            Default None.
        use_bias: bool, add biases to the four projections. Default True.
        dropout: float in [0, 1), dropout on the attention weights. Default 0.
        kernel_initializer: initializer for the kernels. Default
            ``"glorot_uniform"``. Each kernel draws from its own copy, so the
            query, key and value kernels differ even when unseeded.
        bias_initializer: initializer for the biases. Default ``"zeros"``.
        output_kernel_initializer: initializer for ``W_O`` alone, or None for
            ``kernel_initializer``. GPT-2 scales it down (``layers/gpt.py``).
            Default None.

    Call arguments:
        inputs: ``x`` (self-attention), ``[query, value]`` or ``[query, value,
            key]``; query ``(batch, T, d_q)``, value/key ``(batch, S, d_v/d_k)``.
        padding_mask: bool ``(batch, S)`` or None, True for real keys.
        attention_mask: bool ``(batch, T, S)`` or ``(T, S)`` or None.
        use_causal_mask: bool, section 5.3 causal mask. Default False.
        return_attention_scores: bool, also return weights ``(batch, h, T, S)``.
        cache: None, or a ``(key_cache, value_cache)`` pair of tensors
            ``(batch, h, cache_length, head_dim)`` (from ``empty_cache`` or
            ``compute_key_value``). With ``cache_index`` the new keys/values
            are written at that position and the updated pair is returned as
            the second output; with ``cache_index=None`` the cache is used as
            it is (cross-attention over a precomputed encoder).
        cache_index: int or scalar int tensor, position of the first query in
            the cache (also the causal-mask offset).

    Output: ``(batch, T, d_out)``; plus weights and/or the updated cache.

    Example:
    >>> mha = MultiHeadAttention(num_heads=2, key_dim=4)
    >>> mha(np.ones((2, 5, 8), "float32"), use_causal_mask=True).shape
    (2, 5, 8)
    """

    def __init__(
        self,
        num_heads,
        key_dim,
        value_dim=None,
        output_dim=None,
        use_bias=True,
        dropout=0.0,
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        output_kernel_initializer=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.num_heads = check_positive_int("MultiHeadAttention num_heads", num_heads)
        self.key_dim = check_positive_int("MultiHeadAttention key_dim", key_dim)
        self.value_dim = check_positive_int("MultiHeadAttention value_dim", value_dim or key_dim)
        self.output_dim = None if output_dim is None else check_positive_int(
            "MultiHeadAttention output_dim", output_dim
        )
        self.use_bias = bool(use_bias)
        self.dropout = check_positive_float("MultiHeadAttention dropout", dropout, allow_zero=True)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.output_kernel_initializer = (
            None if output_kernel_initializer is None else keras.initializers.get(output_kernel_initializer)
        )
        self.dropout_layer = Dropout(self.dropout) if self.dropout else None

    def _projection(self, name, in_dim, heads_dim):
        kernel = self.add_weight(
            name=f"{name}_kernel", shape=(in_dim, self.num_heads, heads_dim),
            initializer=_fresh(self.kernel_initializer),
        )
        bias = None
        if self.use_bias:
            bias = self.add_weight(
                name=f"{name}_bias", shape=(self.num_heads, heads_dim), initializer=self.bias_initializer
            )
        return kernel, bias

    def build(self, input_shape):
        shapes = _shapes(input_shape)
        query_shape = shapes[0]
        value_shape = shapes[1] if len(shapes) > 1 else query_shape
        key_shape = shapes[2] if len(shapes) > 2 else value_shape
        for what, shape in (("query", query_shape), ("value", value_shape), ("key", key_shape)):
            check_rank(f"MultiHeadAttention {what}", shape, 3, "(batch, time, features)")
        self._query_dim = query_shape[-1]
        self._key_in_dim = key_shape[-1]
        self._value_in_dim = value_shape[-1]
        self.query_kernel, self.query_bias = self._projection("query", query_shape[-1], self.key_dim)
        self.key_kernel, self.key_bias = self._projection("key", key_shape[-1], self.key_dim)
        self.value_kernel, self.value_bias = self._projection("value", value_shape[-1], self.value_dim)
        out_dim = self.output_dim or query_shape[-1]
        self.output_kernel = self.add_weight(
            name="output_kernel", shape=(self.num_heads, self.value_dim, out_dim),
            initializer=_fresh(
                self.kernel_initializer if self.output_kernel_initializer is None else self.output_kernel_initializer
            ),
        )
        self.output_bias = None
        if self.use_bias:
            self.output_bias = self.add_weight(
                name="output_bias", shape=(out_dim,), initializer=self.bias_initializer
            )

    def _project(self, x, kernel, bias, head_dim):
        """``(batch, T, d) -> (batch, h, T, head_dim)`` with one matmul for all heads."""
        d = kernel.shape[0]
        y = ops.matmul(x, ops.reshape(kernel, (d, self.num_heads * head_dim)))
        if bias is not None:
            y = y + ops.reshape(bias, (self.num_heads * head_dim,))
        y = ops.reshape(y, (ops.shape(x)[0], -1, self.num_heads, head_dim))
        return ops.transpose(y, (0, 2, 1, 3))

    def compute_key_value(self, value, key=None):
        """Project keys and values once, in cache layout ``(batch, h, S, head_dim)``.

        Used to precompute the cross-attention cache over an encoder output.
        """
        key = value if key is None else key
        return (
            self._project(key, self.key_kernel, self.key_bias, self.key_dim),
            self._project(value, self.value_kernel, self.value_bias, self.value_dim),
        )

    def empty_cache(self, batch_size, cache_length, dtype=None):
        """Zero ``(key_cache, value_cache)`` tensors for decoding ``cache_length`` steps."""
        dtype = dtype or self.compute_dtype
        return (
            ops.zeros((batch_size, self.num_heads, cache_length, self.key_dim), dtype),
            ops.zeros((batch_size, self.num_heads, cache_length, self.value_dim), dtype),
        )

    def _check_cache(self, cache):
        if not isinstance(cache, (list, tuple)) or len(cache) != 2:
            raise ValueError("MultiHeadAttention cache must be a (key_cache, value_cache) pair")
        for what, tensor, head_dim in (("key", cache[0], self.key_dim), ("value", cache[1], self.value_dim)):
            shape = tuple(tensor.shape)
            if len(shape) != 4 or shape[1] != self.num_heads or shape[3] != head_dim:
                raise ValueError(
                    f"MultiHeadAttention {what} cache must have shape (batch, num_heads={self.num_heads}, "
                    f"cache_length, head_dim={head_dim}), got shape {shape}: mismatched head sizes"
                )

    def call(
        self,
        inputs,
        padding_mask=None,
        attention_mask=None,
        use_causal_mask=False,
        return_attention_scores=False,
        cache=None,
        cache_index=None,
        training=None,
    ):
        query, value, key = _unpack("MultiHeadAttention", inputs)
        check_rank("MultiHeadAttention query", query.shape, 3, "(batch, time, features)")
        if query.shape[-1] != self._query_dim:
            raise ValueError(
                f"MultiHeadAttention was built for queries of size {self._query_dim}, got shape "
                f"{tuple(query.shape)}"
            )
        q = self._project(query, self.query_kernel, self.query_bias, self.key_dim)
        if cache is None:
            if cache_index is not None:
                raise ValueError("MultiHeadAttention cache_index needs a cache")
            k, v = self.compute_key_value(value, key)
        else:
            self._check_cache(cache)
            k, v = cache
            if cache_index is not None:
                new_k, new_v = self.compute_key_value(value, key)
                start = [0, 0, cache_index, 0]
                k = ops.slice_update(k, start, ops.cast(new_k, k.dtype))
                v = ops.slice_update(v, start, ops.cast(new_v, v.dtype))
        mask = compute_attention_mask(
            query.shape[0], _length(query, 1), _length(k, 2), padding_mask, attention_mask, use_causal_mask,
            query_offset=0 if cache_index is None else cache_index,
        )
        if mask is not None:
            mask = ops.expand_dims(mask, 1)  # broadcast over heads
        out, weights = scaled_dot_product_attention(q, k, v, mask, self.dropout_layer, training)
        # (batch, h, T, d_v) -> (batch, T, h * d_v), then one matmul for W_O.
        out = ops.reshape(
            ops.transpose(out, (0, 2, 1, 3)), (ops.shape(query)[0], -1, self.num_heads * self.value_dim)
        )
        out_kernel = self.output_kernel
        out = ops.matmul(out, ops.reshape(out_kernel, (self.num_heads * self.value_dim, out_kernel.shape[-1])))
        if self.output_bias is not None:
            out = out + self.output_bias
        result = [out]
        if return_attention_scores:
            result.append(weights)
        if cache is not None:
            result.append((k, v))
        return result[0] if len(result) == 1 else tuple(result)

    def get_config(self):
        return {
            **super().get_config(),
            "num_heads": self.num_heads,
            "key_dim": self.key_dim,
            "value_dim": self.value_dim,
            "output_dim": self.output_dim,
            "use_bias": self.use_bias,
            "dropout": self.dropout,
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
            "bias_initializer": keras.initializers.serialize(self.bias_initializer),
            "output_kernel_initializer": (
                None if self.output_kernel_initializer is None
                else keras.initializers.serialize(self.output_kernel_initializer)
            ),
        }


class ProjectedHeadsAttention(keras.layers.Layer):
    """Query/key/value/output projections around ``attend(q, k, v, padding_mask)`` on ``(batch, heads, n, d)``.

    The shared shell of the section 7.1 layers (``layers.sparse_attention``, ``layers.linear_attention``):
    a subclass defines ``attend``; call takes ``x`` ``(batch, n, d_model)`` and ``padding_mask`` ``(batch, n)``.
    """

    def __init__(self, num_heads, key_dim, **kwargs):
        super().__init__(**kwargs)
        name = type(self).__name__
        self.num_heads = check_positive_int(f"{name} num_heads", num_heads)
        self.key_dim = check_positive_int(f"{name} key_dim", key_dim)

    def build(self, input_shape):
        check_rank(type(self).__name__, input_shape, 3, "(batch, n, d_model)")
        width = self.num_heads * self.key_dim
        self.query_dense, self.key_dense, self.value_dense = (
            Dense(width, dtype=self.dtype_policy, name=name) for name in ("query", "key", "value")
        )
        self.output_dense = Dense(input_shape[-1], dtype=self.dtype_policy, name="attention_output")
        for layer in (self.query_dense, self.key_dense, self.value_dense):
            layer.build(input_shape)
        self.output_dense.build((*input_shape[:-1], width))

    def _heads(self, x):
        length = x.shape[1] if x.shape[1] is not None else -1  # keep a known length static (Linformer needs it)
        x = ops.reshape(x, (ops.shape(x)[0], length, self.num_heads, self.key_dim))
        return ops.transpose(x, (0, 2, 1, 3))

    def call(self, x, padding_mask=None):
        check_rank(type(self).__name__, x.shape, 3, "(batch, n, d_model)")
        q, k, v = (self._heads(layer(x)) for layer in (self.query_dense, self.key_dense, self.value_dense))
        out = self.attend(q, k, v, padding_mask)
        out = ops.reshape(ops.transpose(out, (0, 2, 1, 3)), (ops.shape(x)[0], -1, self.num_heads * self.key_dim))
        return self.output_dense(out)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        return {**super().get_config(), "num_heads": self.num_heads, "key_dim": self.key_dim}
