"""Section 6.2, GPT and GPT-2: decoder-only Transformers pre-trained as causal language models.

Both maximise ``sum_t log P(u_t | u_<t)`` with ``P = softmax(h_L W_e^T)``,
``h_0 = U W_e + W_p`` and ``h_l = block(h_(l-1))``. They are named settings of
:class:`layers.transformer_models.TransformerCausalLM`, not new classes, so
generation, export and ``.keras`` files work unchanged:

================  =============================  ==========================================
                  :func:`gpt` (Radford 2018)     :func:`gpt2` (Radford 2019)
================  =============================  ==========================================
block             post-LN ``LN(x + f(x))``       pre-LN ``x + f(LN(x))``
final layer norm  none                           ``LN`` before the output projection
kernels           ``N(0, 0.02)``                 ``N(0, 0.02)``; the residual projections
                                                 (attention ``W_O``, FFN ``W_2``)
                                                 ``N(0, 0.02 / sqrt(2 * num_layers))``
both              learned positions, output tied to the token embedding, GELU (tanh),
                  biases 0, dropout 0.1 on embeddings, attention weights and residuals
================  =============================  ==========================================

Why GPT-2 scales the residual projections: every block adds its two outputs
to the residual stream, so at initialisation its variance grows with the
``2 * num_layers`` additions; dividing their weights by ``sqrt(2 * num_layers)``
keeps the stream's scale independent of depth.

The scaled initialisation is an initializer argument threaded through the
layers (``output_kernel_initializer`` of ``MultiHeadAttention``,
``PositionwiseFeedForward``, the Transformer layers and ``TransformerCausalLM``),
not a re-initialisation after build as in nanoGPT: it is then part of the
model's config, so ``TransformerCausalLM.from_config(model.get_config())``
makes a freshly initialised GPT-2, and no weight is created twice.

Sizes: :data:`GPT_SIZES` holds the papers' configurations (GPT 117M; GPT-2
small/medium/large/xl of its Table 2) and ``"tiny"`` for tests and CPU runs.
The builders default to the papers' 12-layer, 768-wide model.

Example::

    lm = gpt2(vocab_size=8000, max_length=256, **GPT_SIZES["tiny"])
    logits = lm(np.ones((2, 16), "int32"))            # (2, 16, 8000)
    original = gpt(vocab_size=40478, max_length=512)  # GPT of 2018, 117M parameters
"""

from __future__ import annotations

import math
import numbers

import keras

from layers.transformer_models import TransformerCausalLM

__all__ = ["GPT_SIZES", "gpt", "gpt2", "residual_stddev"]

GPT_SIZES = {
    "tiny": {"num_layers": 2, "hidden_dim": 64, "num_heads": 2},
    "gpt": {"num_layers": 12, "hidden_dim": 768, "num_heads": 12},
    "gpt2_small": {"num_layers": 12, "hidden_dim": 768, "num_heads": 12},
    "gpt2_medium": {"num_layers": 24, "hidden_dim": 1024, "num_heads": 16},
    "gpt2_large": {"num_layers": 36, "hidden_dim": 1280, "num_heads": 20},
    "gpt2_xl": {"num_layers": 48, "hidden_dim": 1600, "num_heads": 25},
}

INIT_STDDEV = 0.02
_PAPER_NAMES = {"gpt": "GPT", "gpt2": "GPT-2"}

# What makes a model GPT or GPT-2; a builder that let callers change these would build something else.
_FIXED = ("normalize_first", "position_encoding", "tie_embeddings", "activation", "activation_dropout",
          "kernel_initializer", "output_kernel_initializer")


def residual_stddev(num_layers, stddev=INIT_STDDEV):
    """GPT-2's standard deviation of the residual projections: ``stddev / sqrt(2 * num_layers)``."""
    return stddev / math.sqrt(2 * _positive_int("residual_stddev", "num_layers", num_layers))


def _positive_int(builder, name, value):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{builder} {name} must be a positive integer, got {value!r}")
    return int(value)


def _check(builder, vocab_size, max_length, num_layers, hidden_dim, num_heads, intermediate_dim, dropout, kwargs):
    fixed = sorted(set(kwargs) & set(_FIXED))
    if fixed:
        raise ValueError(
            f"{builder}() fixes {fixed} (that is what makes it {_PAPER_NAMES[builder]}); build a "
            f"layers.transformer_models.TransformerCausalLM directly to change them"
        )
    for name, value in (("vocab_size", vocab_size), ("max_length", max_length), ("num_layers", num_layers),
                        ("hidden_dim", hidden_dim), ("num_heads", num_heads)):
        _positive_int(builder, name, value)
    if intermediate_dim is not None:
        _positive_int(builder, "intermediate_dim", intermediate_dim)
    if hidden_dim % num_heads:
        raise ValueError(
            f"{builder} hidden_dim={hidden_dim} is not divisible by num_heads={num_heads}; pick a hidden_dim "
            f"that is a multiple of num_heads (GPT_SIZES lists the papers' pairs)"
        )
    if not isinstance(dropout, numbers.Real) or not 0 <= dropout < 1:
        raise ValueError(f"{builder} dropout must be a float in [0, 1), got {dropout!r}")


def _normal(stddev):
    return keras.initializers.RandomNormal(mean=0.0, stddev=stddev)


def gpt(vocab_size, max_length, num_layers=12, hidden_dim=768, num_heads=12, intermediate_dim=None, dropout=0.1,
        layer_norm_epsilon=1e-5, name="gpt", **kwargs):
    """Section 6.2, GPT (Radford et al., 2018): post-LN ``h = LN(x + f(x))`` blocks, no final layer norm.

    Args:
        vocab_size: int, number of token ids (40478 in the paper: BPE plus specials).
        max_length: int, context length and learned positions (512 in the paper).
        num_layers: int. Default 12.
        hidden_dim: int, ``d_model``. Default 768.
        num_heads: int, must divide ``hidden_dim``. Default 12.
        intermediate_dim: int or None, FFN width; None means ``4 * hidden_dim`` (3072).
        dropout: float in [0, 1), on embeddings, attention weights and
            residual branches (not inside the FFN). Default 0.1.
        layer_norm_epsilon: float > 0. Default ``1e-5``.
        name: str, model name. Default ``"gpt"``.
        **kwargs: other ``keras.Model`` arguments (``dtype``); the settings
            that define GPT (``normalize_first``, ``position_encoding``,
            ``tie_embeddings``, ``activation``, the initializers) are refused.

    Returns:
        An unbuilt :class:`TransformerCausalLM`: token ids ``(batch, T)`` ->
        logits ``(batch, T, vocab_size)``. Every kernel ``N(0, 0.02)``.
    """
    _check("gpt", vocab_size, max_length, num_layers, hidden_dim, num_heads, intermediate_dim, dropout, kwargs)
    return TransformerCausalLM(
        vocab_size, max_length, num_layers=num_layers, hidden_dim=hidden_dim, num_heads=num_heads,
        intermediate_dim=intermediate_dim, dropout=dropout, activation="gelu", normalize_first=False,
        position_encoding="learned", tie_embeddings=True, layer_norm_epsilon=layer_norm_epsilon,
        activation_dropout=0.0, kernel_initializer=_normal(INIT_STDDEV), name=name, **kwargs,
    )


def gpt2(vocab_size, max_length, num_layers=12, hidden_dim=768, num_heads=12, intermediate_dim=None, dropout=0.1,
         layer_norm_epsilon=1e-5, name="gpt2", **kwargs):
    """Section 6.2, GPT-2 (Radford et al., 2019): pre-LN ``h = x + f(LN(x))`` blocks and a final layer norm.

    The residual projections start at ``N(0, 0.02 / sqrt(2 * num_layers))``
    (:func:`residual_stddev`), every other kernel at ``N(0, 0.02)``. The
    network equals ``keras_hub.models.GPT2CausalLM`` of the same sizes
    (:func:`layers.transformer_models.copy_gpt2_weights` copies its weights).

    Args:
        vocab_size: int, number of token ids (50257 for GPT-2's byte-level BPE).
        max_length: int, context length and learned positions (1024 in the paper).
        num_layers, hidden_dim, num_heads, intermediate_dim, dropout,
            layer_norm_epsilon, **kwargs: as :func:`gpt` (defaults: GPT-2 small).
        name: str, model name. Default ``"gpt2"``.

    Returns:
        An unbuilt :class:`TransformerCausalLM`: token ids ``(batch, T)`` ->
        logits ``(batch, T, vocab_size)``.
    """
    _check("gpt2", vocab_size, max_length, num_layers, hidden_dim, num_heads, intermediate_dim, dropout, kwargs)
    return TransformerCausalLM(
        vocab_size, max_length, num_layers=num_layers, hidden_dim=hidden_dim, num_heads=num_heads,
        intermediate_dim=intermediate_dim, dropout=dropout, activation="gelu", normalize_first=True,
        position_encoding="learned", tie_embeddings=True, layer_norm_epsilon=layer_norm_epsilon,
        activation_dropout=0.0, kernel_initializer=_normal(INIT_STDDEV),
        output_kernel_initializer=_normal(residual_stddev(num_layers)), name=name, **kwargs,
    )
