"""Section 7.1, linear attention: Performer's FAVOR+ random features and Linformer's length projections.

Both replace the ``n x n`` softmax matrix by something linear in ``n``.

**Performer** (Choromanski et al., 2021): the softmax kernel
``exp(q . k)`` is an expectation over positive random features,
``exp(q . k) = E_w[phi(q) . phi(k)]`` with
``phi(x) = exp(W x - |x|^2 / 2) / sqrt(m)`` for ``m`` rows ``w ~ N(0, I_d)``
(drawn as orthogonal blocks, their norms resampled from the chi distribution:
the "orthogonal random features" that lower the variance). Then::

    Att(Q, K, V) ~ D^-1 (phi(Q) (phi(K)^T V)),   D = diag(phi(Q) (phi(K)^T 1))

computed right to left: ``O(n m d)`` instead of ``O(n^2 d)``. ``Q`` and ``K``
are first scaled by ``d^-1/4`` (the ``1/sqrt(d)`` of softmax attention). The
causal (decoder) form replaces the two sums by prefix sums,
``S_i = sum_{j<=i} phi(k_j) v_j^T`` and ``z_i = sum_{j<=i} phi(k_j)``, with
``out_i = phi(q_i) S_i / (phi(q_i) . z_i)``: the recurrence an RNN-like
decoder runs one token at a time (:func:`causal_performer_recurrence`).
Exponents are shifted for stability by constants that cancel in the ratio:
per query row by its maximum; for keys, in the bidirectional form by one
maximum over all keys, and in the causal form by a constant known before any
key is seen, ``min(max_w |w|^2 / 2, 60)`` (``w . x - |x|^2 / 2 <= |w|^2 / 2``),
so that no output depends on a later token, not even through the shift or
the ``1e-6`` floor against empty denominators (scaled with the same constant).

**Linformer** (Wang et al., 2020): keys and values are projected along the
sequence by learned ``E, F`` of shape ``(k, n_max)``: ``softmax(Q (E K)^T /
sqrt(d)) (F V)``, an ``n x k`` score matrix.

Example:
>>> layer = PerformerAttention(num_heads=2, key_dim=8, num_features=16)
>>> tuple(layer(np.zeros((2, 10, 16), "float32")).shape)
(2, 10, 16)
"""

from __future__ import annotations

import math

import keras
import numpy as np
from keras import ops

from layers.attention import ProjectedHeadsAttention
from layers.validation import check_positive_int

__all__ = [
    "LinformerAttention", "PerformerAttention", "causal_performer_recurrence", "favor_attention",
    "orthogonal_random_features",
]


def orthogonal_random_features(num_features, depth, seed=0):
    """``(num_features, depth)`` rows: orthogonal blocks of ``depth`` rows, each row's norm drawn as a Gaussian's."""
    rng = np.random.default_rng(seed)
    blocks = []
    for _ in range(-(-num_features // depth)):
        q, _ = np.linalg.qr(rng.normal(size=(depth, depth)))
        blocks.append(q.T)
    rows = np.concatenate(blocks)[:num_features]
    norms = np.linalg.norm(rng.normal(size=(num_features, depth)), axis=1)
    return (rows * norms[:, None]).astype("float32")


_CAUSAL_KEY_SHIFT_CAP = 60.0  # exp(-60) ~ 1e-26: far from float32/bfloat16 underflow


def _features(x, projection, is_query, causal=False):
    """``phi(x)`` of ``(..., n, d)`` inputs already scaled by ``d^-1/4``: ``(..., n, m)``, positive."""
    projected = ops.einsum("...nd,md->...nm", x, projection)
    half_norm = ops.sum(ops.square(x), axis=-1, keepdims=True) / 2.0
    exponent = projected - half_norm
    floor = 1e-6
    if is_query:
        shift = ops.max(exponent, axis=-1, keepdims=True)  # per query row: cancels in its ratio
    elif causal:  # a constant fixed by the features alone, so key j's features never depend on keys after it
        bound = float(np.max(np.sum(np.square(ops.convert_to_numpy(projection).astype("float64")), axis=-1)) / 2.0)
        shift = ops.cast(min(bound, _CAUSAL_KEY_SHIFT_CAP), exponent.dtype)
        floor = floor * math.exp(-min(bound, _CAUSAL_KEY_SHIFT_CAP))
    else:
        shift = ops.max(exponent, axis=(-2, -1), keepdims=True)  # one constant for all keys
    return ops.exp(exponent - ops.stop_gradient(shift)) / math.sqrt(projection.shape[0]) + floor


def favor_attention(query, key, value, projection, causal=False, padding_mask=None):
    """FAVOR+ attention (module docstring) of ``(batch, heads, n, d)`` tensors with the ``(m, d)`` ``projection``.

    ``padding_mask``: bool ``(batch, n)`` or None; padded keys contribute nothing.
    Returns ``(batch, heads, n, d_v)``.
    """
    depth = query.shape[-1]
    scale = depth ** -0.25
    projection = ops.cast(ops.convert_to_tensor(projection), query.dtype)
    q = _features(query * scale, projection, True)
    k = _features(key * scale, projection, False, causal)
    if padding_mask is not None:
        k = k * ops.cast(padding_mask, k.dtype)[:, None, :, None]
    if causal:
        states = ops.cumsum(ops.einsum("bhnm,bhnd->bhnmd", k, value), axis=2)  # S_i, (b, h, n, m, d)
        normalizer = ops.cumsum(k, axis=2)  # z_i
        numerator = ops.einsum("bhnm,bhnmd->bhnd", q, states)
        denominator = ops.sum(q * normalizer, axis=-1, keepdims=True)
    else:
        numerator = ops.einsum("bhnm,bhmd->bhnd", q, ops.einsum("bhnm,bhnd->bhmd", k, value))
        denominator = ops.einsum("bhnm,bhm->bhn", q, ops.sum(k, axis=2))[..., None]
    return numerator / denominator


def causal_performer_recurrence(query, key, value, projection):
    """The causal FAVOR+ output computed one position at a time (NumPy): ``S += phi(k_i) v_i^T``, ``z += phi(k_i)``.

    The decoder's step-by-step form; :func:`favor_attention` with ``causal=True`` must equal it. Uses the
    same feature shifts as the causal parallel form (the keys' one fixed by the features alone).
    """
    depth = query.shape[-1]
    scale = depth ** -0.25
    q = ops.convert_to_numpy(_features(query * scale, projection, True))
    k = ops.convert_to_numpy(_features(key * scale, projection, False, causal=True))
    value = np.asarray(value)
    out = np.zeros_like(value)
    state = np.zeros(q.shape[:2] + (q.shape[-1], value.shape[-1]), np.float64)
    norm = np.zeros(q.shape[:2] + (q.shape[-1],), np.float64)
    for i in range(q.shape[2]):
        state += k[:, :, i, :, None] * value[:, :, i, None, :]
        norm += k[:, :, i]
        out[:, :, i] = np.einsum("bhm,bhmd->bhd", q[:, :, i], state) / np.einsum("bhm,bhm->bh", q[:, :, i], norm)[..., None]
    return out


@keras.saving.register_keras_serializable(package="tfsuite")
class PerformerAttention(ProjectedHeadsAttention):
    """Section 7.1, Performer self-attention (FAVOR+, :func:`favor_attention`), bidirectional or causal.

    Args:
        num_heads, key_dim: ints.
        num_features: int, ``m`` random features. Default 64.
        causal: bool, the decoder's prefix-sum form. Default False.
        seed: int, seed of the fixed orthogonal random features. Default 0.
    """

    def __init__(self, num_heads, key_dim, num_features=64, causal=False, seed=0, **kwargs):
        super().__init__(num_heads, key_dim, **kwargs)
        self.num_features = check_positive_int("PerformerAttention num_features", num_features)
        self.causal = bool(causal)
        self.seed = int(seed)
        self.projection = orthogonal_random_features(self.num_features, self.key_dim, self.seed)

    def attend(self, q, k, v, padding_mask):
        return favor_attention(q, k, v, self.projection, self.causal, padding_mask)

    def get_config(self):
        return {**super().get_config(), "num_features": self.num_features, "causal": self.causal, "seed": self.seed}


@keras.saving.register_keras_serializable(package="tfsuite")
class LinformerAttention(ProjectedHeadsAttention):
    """Section 7.1, Linformer self-attention: keys and values projected along the sequence to ``projected_length``.

    Args:
        num_heads, key_dim: ints.
        max_length: int, ``n_max``: the longest input (the projections' width).
        projected_length: int, ``k``. Default 64.

    Inputs shorter than ``max_length`` use the projections' first columns; padded keys are zeroed first.
    """

    def __init__(self, num_heads, key_dim, max_length, projected_length=64, **kwargs):
        super().__init__(num_heads, key_dim, **kwargs)
        self.max_length = check_positive_int("LinformerAttention max_length", max_length)
        self.projected_length = check_positive_int("LinformerAttention projected_length", projected_length)

    def build(self, input_shape):
        super().build(input_shape)
        shape = (self.projected_length, self.max_length)
        initializer = keras.initializers.RandomNormal(stddev=1.0 / math.sqrt(self.projected_length))
        self.key_projection = self.add_weight(name="key_projection", shape=shape, initializer=initializer)
        self.value_projection = self.add_weight(name="value_projection", shape=shape, initializer=initializer)

    def attend(self, q, k, v, padding_mask):
        n = k.shape[2]
        if n is None or n > self.max_length:
            raise ValueError(f"LinformerAttention takes at most max_length={self.max_length} positions, got {n}")
        if padding_mask is not None:
            keep = ops.cast(padding_mask, k.dtype)[:, None, :, None]
            k, v = k * keep, v * keep
        # matmul broadcasting (k, n) over (batch, heads): the einsum form lowers to a reshape TFLite refuses
        k = ops.matmul(ops.cast(self.key_projection[:, :n], k.dtype), k)
        v = ops.matmul(ops.cast(self.value_projection[:, :n], v.dtype), v)
        scores = ops.einsum("bhqd,bhkd->bhqk", q, k) / math.sqrt(self.key_dim)
        return ops.einsum("bhqk,bhkd->bhqd", ops.softmax(scores, axis=-1), v)

    def get_config(self):
        return {**super().get_config(), "max_length": self.max_length, "projected_length": self.projected_length}
