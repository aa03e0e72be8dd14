"""Section 7.1, sparse attention: Longformer's sliding window and BigBird's block pattern, computed blockwise.

Full self-attention scores every pair of ``n`` tokens: ``O(n^2)`` time and
memory. Longformer (Beltagy et al., 2020) lets token ``i`` attend only to the
tokens within ``w`` positions of it, plus a few **global** tokens (here the
first ``g`` positions, as a [CLS] token or a question) that attend to every
token and are attended by every token::

    allowed(i, j) = |i - j| <= w  or  i < g  or  j < g
    out_i = sum_j softmax_j(q_i k_j / sqrt(d), allowed(i, j)) v_j

Computed **blockwise**, never as an ``n x n`` matrix: the sequence is cut into
blocks of ``w`` tokens; the queries of block ``b`` are scored against the keys
of blocks ``b - 1``, ``b`` and ``b + 1`` (the only ones within ``w``), a
``(w, 3w)`` tile, and against the ``g`` global keys; the softmax runs over the
``3w + g`` scores of each query. Global keys are masked out of the tiles so
none is counted twice, and the ``g`` global queries get full attention rows
``(g, n)``. Memory grows as ``n (3w + g)``: linearly in ``n``.

- :func:`longformer_mask`: the dense ``(n, n)`` pattern (for tests and small inputs).
- :func:`sliding_window_attention`: the blockwise computation on ``(batch, heads, n, d)`` tensors.
- :class:`LongformerSelfAttention`: the layer, with query/key/value/output projections.
- BigBird (Zaheer et al., 2020): the same tiles at block level (a query block sees its own and the two
  neighbouring key blocks), plus ``r`` random key blocks per query block drawn once
  (:func:`bigbird_random_blocks`) and the global tokens: :func:`block_sparse_attention`,
  :func:`bigbird_mask`, :class:`BigBirdSelfAttention`. Memory ``n ((3 + r) b + g)``.

Example:
>>> layer = LongformerSelfAttention(num_heads=2, key_dim=8, window=4, num_global=1)
>>> tuple(layer(np.zeros((2, 19, 16), "float32")).shape)
(2, 19, 16)
"""

from __future__ import annotations

import math

import keras
import numpy as np
from keras import ops

from layers.attention import ProjectedHeadsAttention
from layers.validation import check_positive_int

__all__ = [
    "BigBirdSelfAttention", "LongformerSelfAttention", "bigbird_mask", "bigbird_random_blocks", "block_sparse_attention", "longformer_mask",
    "sliding_window_attention",
]

_MASK_VALUE = -1e9


def longformer_mask(length, window, num_global=0, causal=False):
    """The dense ``(length, length)`` bool pattern of :func:`sliding_window_attention` (True: may attend)."""
    i = np.arange(length)[:, None]
    j = np.arange(length)[None, :]
    allowed = (np.abs(i - j) <= window) | (i < num_global) | (j < num_global)
    return allowed & (j <= i) if causal else allowed


def sliding_window_attention(query, key, value, window, num_global=0, padding_mask=None, causal=False):
    """Blockwise Longformer attention (module docstring) on ``(batch, heads, n, d)`` query, key and value.

    Args:
        query, key, value: float ``(batch, heads, n, d)``.
        window: int >= 1, ``w``: each token sees the tokens within ``w`` positions.
        num_global: int >= 0, ``g``: the first ``g`` positions are global.
        padding_mask: bool ``(batch, n)`` or None; False marks padding (never attended).
        causal: bool, the decoder's form: token ``i`` also never sees ``j > i`` (global ones included).

    Returns: ``(batch, heads, n, d)``.
    """
    return _blockwise_attention(query, key, value, window, num_global, padding_mask, token_window=True,
                                causal=causal)


def bigbird_random_blocks(length, block, num_random, num_global=0, seed=0):
    """BigBird's random key blocks: for each query block, ``num_random`` distinct blocks outside its window.

    Drawn once (NumPy, ``seed``) and fixed, so training and serving see one pattern; blocks holding only
    global tokens are left out (those keys are always attended). Returns int ``(blocks, num_random)``.
    """
    blocks = -(-length // block)
    first = num_global // block  # blocks made only of global tokens
    rng = np.random.default_rng(seed)
    rows = []
    for b in range(blocks):
        choices = [c for c in range(first, blocks) if abs(c - b) > 1]
        if len(choices) < num_random:
            raise ValueError(
                f"BigBird: {blocks} blocks of {block} leave block {b} only {len(choices)} blocks outside its window "
                f"for num_random={num_random}; use a longer input, smaller blocks or fewer random blocks"
            )
        rows.append(sorted(rng.choice(choices, size=num_random, replace=False)) if num_random else [])
    return np.array(rows, dtype="int32").reshape(blocks, num_random)


def bigbird_mask(length, block, num_global=0, random_blocks=None, causal=False):
    """The dense ``(length, length)`` bool pattern of :func:`block_sparse_attention`."""
    query_block = np.arange(length)[:, None] // block
    key_block = np.arange(length)[None, :] // block
    allowed = np.abs(query_block - key_block) <= 1
    if random_blocks is not None and random_blocks.size:
        allowed = allowed | (random_blocks[query_block[:, 0]][:, :, None] == key_block[:, None, :]).any(axis=1)
    i, j = np.arange(length)[:, None], np.arange(length)[None, :]
    allowed = allowed | (i < num_global) | (j < num_global)
    return allowed & (j <= i) if causal else allowed


def block_sparse_attention(query, key, value, block, num_global=0, random_blocks=None, padding_mask=None,
                           causal=False):
    """BigBird attention (Zaheer et al., 2020), blockwise: each query block sees its own and the two
    neighbouring key blocks, ``random_blocks[b]`` further blocks, and the global tokens.

    Args:
        query, key, value: float ``(batch, heads, n, d)``.
        block: int >= 1, the block size.
        num_global: int >= 0, the first positions that attend and are attended everywhere.
        random_blocks: int ``(blocks, r)`` from :func:`bigbird_random_blocks`, or None (no random blocks).
        padding_mask: bool ``(batch, n)`` or None.
        causal: bool, never attend to a later position (random blocks after the query block go unused).

    Returns: ``(batch, heads, n, d)``.
    """
    return _blockwise_attention(query, key, value, block, num_global, padding_mask, token_window=False,
                                random_blocks=random_blocks, causal=causal)


def _blockwise_attention(query, key, value, window, num_global, padding_mask, token_window, random_blocks=None,
                         causal=False):
    batch, heads, n, depth = (ops.shape(query)[0], ops.shape(query)[1], query.shape[2], query.shape[3])
    if n is None:
        raise ValueError("sliding_window_attention needs a known sequence length (the block layout depends on it)")
    # A window (or block) longer than the input covers every pair: full attention, as one tile of n.
    w, g = min(int(window), n), int(num_global)
    blocks = -(-n // w)
    padded = blocks * w
    scale = ops.cast(1.0 / math.sqrt(depth), query.dtype)
    query = query * scale
    valid = ops.ones((batch, n), "bool") if padding_mask is None else ops.cast(padding_mask, "bool")

    def pad_sequence(x, before, after):
        return ops.pad(x, [(0, 0), (0, 0), (before, after), (0, 0)])

    # Query blocks (b, h, B, w, d); key/value tiles of blocks b-1, b, b+1: (b, h, B, 3w, d).
    q = ops.reshape(pad_sequence(query, 0, padded - n), (batch, heads, blocks, w, depth))

    def tiles(x):
        x = pad_sequence(x, w, padded - n + w)  # one empty block before, one after
        x = ops.reshape(x, (batch, heads, blocks + 2, w, depth))
        return ops.concatenate([x[:, :, :-2], x[:, :, 1:-1], x[:, :, 2:]], axis=3)

    k_tiles, v_tiles = tiles(key), tiles(value)
    # Which keys each query may score in its tile: window, real, not padding, not global (counted apart).
    positions = np.arange(blocks)[:, None, None] * w + np.arange(w)[None, :, None]  # query i
    keys = np.arange(blocks)[:, None, None] * w - w + np.arange(3 * w)[None, None, :]  # key j
    near = (np.abs(positions - keys) <= w) if token_window else np.ones_like(positions - keys, bool)
    static = near & (keys >= max(g, 0)) & (keys < n)
    if causal:
        static = static & (keys <= positions)
    key_valid = ops.pad(valid, [(0, 0), (w, padded - n + w)])
    key_valid = ops.reshape(key_valid, (batch, blocks + 2, w))
    key_valid = ops.concatenate([key_valid[:, :-2], key_valid[:, 1:-1], key_valid[:, 2:]], axis=2)  # (b, B, 3w)
    if random_blocks is not None and np.size(random_blocks):
        # BigBird's random blocks: whole key blocks gathered per query block, appended to its tile.
        random_blocks = np.asarray(random_blocks, "int32")
        extra = random_blocks.shape[1] * w

        def gathered(x):
            x = ops.reshape(pad_sequence(x, 0, padded - n), (batch, heads, blocks, w, depth))
            x = ops.take(x, ops.convert_to_tensor(random_blocks.reshape(-1)), axis=2)
            return ops.reshape(x, (batch, heads, blocks, extra, depth))

        k_tiles = ops.concatenate([k_tiles, gathered(key)], axis=3)
        v_tiles = ops.concatenate([v_tiles, gathered(value)], axis=3)
        random_keys = (random_blocks[:, :, None] * w + np.arange(w)).reshape(blocks, 1, extra)
        random_allowed = (random_keys >= g) & (random_keys < n) & ((random_keys <= positions) if causal else True)
        static = np.concatenate([static, np.broadcast_to(random_allowed, (blocks, w, extra))], 2)
        block_valid = ops.reshape(ops.pad(valid, [(0, 0), (0, padded - n)]), (batch, blocks, w))
        random_valid = ops.reshape(ops.take(block_valid, ops.convert_to_tensor(random_blocks.reshape(-1)), axis=1),
                                   (batch, blocks, extra))
        key_valid = ops.concatenate([key_valid, random_valid], axis=2)
    tile_mask = ops.logical_and(ops.convert_to_tensor(static)[None], key_valid[:, :, None, :])  # (b, B, w, keys)
    local = static.shape[-1]

    scores = ops.einsum("bhnqd,bhnkd->bhnqk", q, k_tiles)
    scores = ops.where(tile_mask[:, None], scores, ops.cast(_MASK_VALUE, scores.dtype))
    if g:
        global_keys, global_values = key[:, :, :g], value[:, :, :g]
        global_scores = ops.einsum("bhnqd,bhkd->bhnqk", q, global_keys)
        global_valid = valid[:, None, None, None, :g]
        if causal:  # (B, w, g): global key j only for queries i >= j
            global_valid = ops.logical_and(global_valid, ops.convert_to_tensor(np.arange(g) <= positions)[None, None])
        global_scores = ops.where(global_valid, global_scores, ops.cast(_MASK_VALUE, scores.dtype))
        scores = ops.concatenate([scores, global_scores], axis=-1)
    weights = ops.cast(ops.softmax(ops.cast(scores, "float32"), axis=-1), query.dtype)
    out = ops.einsum("bhnqk,bhnkd->bhnqd", weights[..., :local], v_tiles)
    if g:
        out = out + ops.einsum("bhnqk,bhkd->bhnqd", weights[..., local:], global_values)
    out = ops.reshape(out, (batch, heads, padded, depth))[:, :, :n]
    if g:
        # Global queries attend to every real token: g full rows.
        rows = ops.einsum("bhqd,bhkd->bhqk", query[:, :, :g], key)
        row_valid = valid[:, None, None, :]
        if causal:
            row_valid = ops.logical_and(row_valid, ops.convert_to_tensor(np.arange(n)[None, :] <= np.arange(g)[:, None]))
        rows = ops.where(row_valid, rows, ops.cast(_MASK_VALUE, rows.dtype))
        rows = ops.cast(ops.softmax(ops.cast(rows, "float32"), axis=-1), query.dtype)
        out = ops.concatenate([ops.einsum("bhqk,bhkd->bhqd", rows, value), out[:, :, g:]], axis=2)
    return out


@keras.saving.register_keras_serializable(package="tfsuite")
class LongformerSelfAttention(ProjectedHeadsAttention):
    """Section 7.1, Longformer self-attention: multi-head attention over :func:`sliding_window_attention`.

    ``Q, K, V = x W_q, x W_k, x W_v`` split into ``num_heads`` heads of ``key_dim``;
    each head attends over the sliding window of ``window`` tokens each side
    and the ``num_global`` first tokens; heads concatenated, then ``W_o``.

    Args:
        num_heads: int.
        key_dim: int, the size of each head.
        window: int >= 1, one-sided window ``w``.
        num_global: int >= 0, global tokens at the start. Default 0.
        causal: bool, the decoder's form (no position sees a later one). Default False.

    A window at least as long as the input covers every pair: the result is then full attention
    (computed as one tile), so short inputs need no special case.

    Call arguments: ``x`` ``(batch, n, d_model)`` with ``n`` known; ``padding_mask`` bool ``(batch, n)`` or None.

    Output: ``(batch, n, d_model)``.
    """

    def __init__(self, num_heads, key_dim, window, num_global=0, causal=False, **kwargs):
        super().__init__(num_heads, key_dim, **kwargs)
        self.causal = bool(causal)
        self.window = check_positive_int("LongformerSelfAttention window", window)
        if int(num_global) != num_global or num_global < 0:
            raise ValueError(f"LongformerSelfAttention num_global must be an int >= 0, got {num_global!r}")
        self.num_global = int(num_global)

    def attend(self, q, k, v, padding_mask):
        return sliding_window_attention(q, k, v, self.window, self.num_global, padding_mask, self.causal)

    def get_config(self):
        return {**super().get_config(), "window": self.window, "num_global": self.num_global, "causal": self.causal}


@keras.saving.register_keras_serializable(package="tfsuite")
class BigBirdSelfAttention(LongformerSelfAttention):
    """Section 7.1, BigBird self-attention: :class:`LongformerSelfAttention` with block-level windows and
    ``num_random`` random key blocks per query block (:func:`block_sparse_attention`).

    Args:
        num_heads, key_dim, num_global, causal: as :class:`LongformerSelfAttention`.
        block: int >= 1, the block size (the window is the block and its two neighbours).
        num_random: int >= 0, random key blocks per query block. Default 1.
        seed: int, the random blocks' seed (fixed per input length). Default 0.
    """

    def __init__(self, num_heads, key_dim, block, num_global=0, num_random=1, seed=0, causal=False, **kwargs):
        super().__init__(num_heads, key_dim, window=block, num_global=num_global, causal=causal, **kwargs)
        if int(num_random) != num_random or num_random < 0:
            raise ValueError(f"BigBirdSelfAttention num_random must be an int >= 0, got {num_random!r}")
        self.num_random = int(num_random)
        self.seed = int(seed)

    def attend(self, q, k, v, padding_mask):
        if self.window >= q.shape[2]:  # one block holds the whole input: full attention, no random blocks
            return block_sparse_attention(q, k, v, self.window, self.num_global, None, padding_mask, self.causal)
        random_blocks = bigbird_random_blocks(q.shape[2], self.window, self.num_random, self.num_global, self.seed)
        return block_sparse_attention(q, k, v, self.window, self.num_global, random_blocks, padding_mask, self.causal)

    def get_config(self):
        config = super().get_config()
        config["block"] = config.pop("window")
        return {**config, "num_random": self.num_random, "seed": self.seed}
