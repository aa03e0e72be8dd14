"""Model of the translation app: the chapter 5 Transformer on dict batches, its loss, and beam-search translation.

:class:`TranslationModel` is ``layers.transformer_models.Transformer`` that
also takes the pipeline's dict ``{"encoder_inputs", "decoder_inputs"}`` and
derives both padding masks from ``[PAD]`` (id 0). It keeps the generation
interface (``build_cache``, ``call_with_cache``, ``reorder_cache``), so
``layers.generation.TextGenerator`` and the export drive it directly.

Loss (section 5.1 training): token cross-entropy with label smoothing,
``L = (1 - eps) * (-log p(y)) + eps * mean_v(-log p(v))``, averaged over
the real (non-pad) target tokens of the batch.

:func:`translate` is the Python-side decoder: it sorts sentences by length,
pads each batch's source to a bucket width (so the XLA-compiled loop is
traced once per bucket, not once per batch) and runs batched beam search.

Example::

    from apps.translation.model import translate

    translate(model, tokenizers, ["Open the file."], beam_size=4, max_length=64)
    # ["Datei öffnen."]
"""

from __future__ import annotations

import math
import warnings
import weakref

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from apps.losses import PAD_ID, MaskedAccuracy, SmoothedSequenceLoss
from apps.translation.data import restore_spacing
from layers.generation import TextGenerator
from layers.samplers import BeamSampler
from layers.transformer_models import Transformer
from layers.validation import check_positive_float, check_positive_int

__all__ = [
    "MaskedAccuracy",
    "SmoothedSequenceLoss",
    "TranslationModel",
    "Translator",
    "encode_sources",
    "translate",
]



@keras.saving.register_keras_serializable(package="tfsuite")
class TranslationModel(Transformer):
    """Section 5.1 encoder-decoder Transformer reading ``{"encoder_inputs", "decoder_inputs"}`` batches.

    Same arguments as ``layers.transformer_models.Transformer``. Token id 0
    is ``[PAD]``: the encoder and decoder padding masks are ``ids != 0``.

    Call arguments:
        inputs: dict with int ``encoder_inputs (batch, S)`` and
            ``decoder_inputs (batch, T)``, or the Transformer's list
            ``[encoder_token_ids, decoder_token_ids]`` (masks then as keywords).

    Output: logits ``(batch, T, decoder_vocab_size)``.

    Example:
    >>> model = TranslationModel(encoder_vocab_size=50, decoder_vocab_size=60, max_length=16)
    >>> model({"encoder_inputs": np.ones((2, 9), "int32"), "decoder_inputs": np.ones((2, 7), "int32")}).shape
    (2, 7, 60)
    """

    def call(self, inputs, encoder_padding_mask=None, decoder_padding_mask=None, training=None):
        if isinstance(inputs, dict):
            missing = {"encoder_inputs", "decoder_inputs"} - set(inputs)
            if missing:
                raise ValueError(
                    f"TranslationModel expects a dict with 'encoder_inputs' and 'decoder_inputs', "
                    f"missing {sorted(missing)}"
                )
            source, target = inputs["encoder_inputs"], inputs["decoder_inputs"]
            encoder_padding_mask = ops.not_equal(source, PAD_ID)
            decoder_padding_mask = ops.not_equal(target, PAD_ID)
            inputs = [source, target]
        return super().call(
            inputs,
            encoder_padding_mask=encoder_padding_mask,
            decoder_padding_mask=decoder_padding_mask,
            training=training,
        )


def encode_sources(tokenizer, texts, max_source_length, source_markers=True):
    """Source ids as the training pipeline builds them: ``[START] ids [END]``, cut to ``max_source_length``.

    Returns ``(ids, lengths, truncated)``: a list of int32 arrays, their
    lengths and the number of sentences cut (longer than the model takes).
    """
    body = max_source_length - 2 if source_markers else max_source_length
    ragged = tokenizer.tokenize(tf.constant(list(texts), tf.string))
    rows = [row.numpy() for row in ragged]
    truncated = sum(len(row) > body for row in rows)
    if source_markers:
        rows = [np.concatenate([[tokenizer.start_id], row[:body], [tokenizer.end_id]]).astype(np.int32) for row in rows]
    else:
        rows = [row[:body].astype(np.int32) for row in rows]
    return rows, np.array([len(r) for r in rows], np.int32), truncated


def _bucket_width(length, widths):
    for width in widths:
        if length <= width:
            return width
    return widths[-1]


class Translator:
    """Batched beam-search translation of Python strings with a trained :class:`TranslationModel`.

    Args:
        model: the trained ``Transformer`` / :class:`TranslationModel`.
        tokenizers: ``(source, target)`` WordPiece tokenizers.
        beam_size: int >= 1 (1 is greedy search). Default 4.
        max_length: int, most target word pieces per translation ([END]
            included). Default 64.
        max_source_length: int, source tokens kept (``[START]``/``[END]``
            included); longer sentences are cut with a warning. Default 64.
        batch_size: int, sentences per decode call. Default 64.
        length_penalty: float >= 0, beam length normalisation exponent. Default 1.0.
        source_markers: bool, ``[START] ... [END]`` around source ids (as in training). Default True.
        jit_compile: bool, compile the decode loop with XLA. Default True.
        language: str, target language for :func:`apps.translation.data.restore_spacing`
            (``"de"``, ``"ja"``), or None to return ``detokenize``'s text as is. Default ``"de"``.
    """

    def __init__(
        self,
        model,
        tokenizers,
        beam_size=4,
        max_length=64,
        max_source_length=64,
        batch_size=64,
        length_penalty=1.0,
        source_markers=True,
        jit_compile=True,
        language="de",
    ):
        self.model = model
        self.language = language
        self.source_tokenizer, self.target_tokenizer = tokenizers
        self.beam_size = check_positive_int("beam_size", beam_size)
        self.max_length = check_positive_int("max_length", max_length)
        self.max_source_length = check_positive_int("max_source_length", max_source_length)
        self.batch_size = check_positive_int("batch_size", batch_size)
        self.source_markers = bool(source_markers)
        self.sampler = "greedy" if self.beam_size == 1 else BeamSampler(self.beam_size, length_penalty)
        self.jit_compile = bool(jit_compile)
        # Source widths the decode loop is traced for: powers of two up to the maximum.
        self.widths = sorted({min(2**k, self.max_source_length) for k in range(3, 12)} | {self.max_source_length})
        self._generators = {}

    def new_tokens(self, width):
        """Most target tokens for sources of ``width``: ``2 * width + 4``, at most ``max_length``.

        Translations here are about as long as their sources (1.1 target tokens
        per source token on en-de); a tighter bound per width keeps the cache
        and the number of decode steps of short batches small.
        """
        return min(self.max_length, 2 * width + 4)

    def generator(self, width):
        """The :class:`~layers.generation.TextGenerator` for sources of ``width`` tokens."""
        new_tokens = self.new_tokens(width)
        if new_tokens not in self._generators:
            self._generators[new_tokens] = TextGenerator(
                self.model,
                sampler=self.sampler,
                max_new_tokens=new_tokens,
                end_token_id=self.target_tokenizer.end_id,
                pad_token_id=self.target_tokenizer.pad_id,
                cache_length=new_tokens + 1,
                jit_compile=self.jit_compile,
            )
        return self._generators[new_tokens]

    def __call__(self, texts):
        texts = [str(t) for t in texts]
        if not texts:
            return []
        rows, lengths, truncated = encode_sources(
            self.source_tokenizer, texts, self.max_source_length, self.source_markers
        )
        if truncated:
            warnings.warn(
                f"{truncated} of {len(texts)} sentences are longer than {self.max_source_length} source tokens "
                "and were cut to fit the model",
                stacklevel=2,
            )
        order = np.argsort(lengths, kind="stable")
        results = [None] * len(texts)
        for begin in range(0, len(texts), self.batch_size):
            chosen = order[begin : begin + self.batch_size]
            width = _bucket_width(int(lengths[chosen].max()), self.widths)
            # A full-size batch always: the last one is padded with copies, so the loop is traced once per width.
            padded = np.resize(chosen, self.batch_size) if len(chosen) < self.batch_size else chosen
            source = np.zeros((len(padded), width), np.int32)
            for i, index in enumerate(padded):
                source[i, : lengths[index]] = rows[index]
            start = np.full((len(padded), 1), self.target_tokenizer.start_id, np.int32)
            outputs = self.generator(width)(start, encoder_token_ids=source, encoder_padding_mask=source != PAD_ID)
            decoded = self.target_tokenizer.detokenize(tf.constant(outputs["token_ids"][:, 1:])).numpy()
            texts_out = [text.decode("utf-8") for text in decoded[: len(chosen)]]
            if self.language is not None:
                texts_out = restore_spacing(texts_out, self.language)
            for index, text in zip(chosen, texts_out):
                results[index] = text
        return results


_TRANSLATORS = weakref.WeakKeyDictionary()


def translate(model, tokenizers, texts, beam_size=4, max_length=64, **kwargs):
    """Translate ``texts`` (list of str) with beam search; returns a list of str.

    Reuses one :class:`Translator` per model and settings, so repeated calls
    do not retrace the decode loop. ``kwargs`` go to :class:`Translator`
    (``max_source_length``, ``batch_size``, ``length_penalty``, ...).
    """
    key = (id(tokenizers[0]), id(tokenizers[1]), beam_size, max_length, tuple(sorted(kwargs.items())))
    per_model = _TRANSLATORS.setdefault(model, {})
    if key not in per_model:
        per_model[key] = Translator(model, tokenizers, beam_size=beam_size, max_length=max_length, **kwargs)
    return per_model[key](texts)


def lr_warmup_cosine(peak, total_steps, warmup_steps):
    """Linear warmup from 0 to ``peak`` over ``warmup_steps``, cosine decay to 0 over the remaining steps."""
    warmup_steps = max(1, min(int(warmup_steps), max(1, total_steps - 1)))
    return keras.optimizers.schedules.CosineDecay(
        0.0, decay_steps=max(1, total_steps - warmup_steps), warmup_target=peak, warmup_steps=warmup_steps
    )


def lr_warmup_inverse_sqrt(peak, warmup_steps):
    """Vaswani et al.'s schedule scaled to ``peak``: ``peak * min(s / w, sqrt(w / s))``."""
    return InverseSqrtSchedule(peak, warmup_steps)


@keras.saving.register_keras_serializable(package="tfsuite")
class InverseSqrtSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """``lr(s) = peak * min(s / w, sqrt(w / s))`` (section 5.1's warmup then ``1/sqrt(step)`` decay).

    Args:
        peak: float > 0, rate at step ``w``.
        warmup_steps: int >= 1, ``w``.
    """

    def __init__(self, peak, warmup_steps):
        self.peak = check_positive_float("peak", peak)
        self.warmup_steps = check_positive_int("warmup_steps", warmup_steps)

    def __call__(self, step):
        step = ops.maximum(ops.cast(step, "float32") + 1.0, 1.0)
        warmup = float(self.warmup_steps)
        return self.peak * ops.minimum(step / warmup, ops.sqrt(warmup / step))

    def get_config(self):
        return {"peak": self.peak, "warmup_steps": self.warmup_steps}


def parameter_count(model):
    """Trainable parameters of ``model``."""
    return int(sum(math.prod(w.shape) for w in model.trainable_weights))
