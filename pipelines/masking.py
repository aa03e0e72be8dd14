"""Masked-language-model input stages: BERT masking (static) and RoBERTa dynamic masking.

Textbook section 6.1, BERT MLM: "mask 15% of the input, predict the masked
words"; section 6.4, RoBERTa: dynamic masking.

BERT (Devlin et al., 2019, section 3.1): of the tokens that are not special
(``[PAD]``, ``[START]``, ``[END]``, ``[MASK]``), each is selected with
probability 15%; a selected token becomes ``[MASK]`` 80% of the time, a random
vocabulary token 10% and stays unchanged 10%. The model is trained to predict
the original token at the selected positions only.

* :func:`bert_mask`: that rule on a batch of ids, from given uniform noise.
* :func:`static_masking`: the BERT paper's preprocessing: each example's mask
  is fixed. Here the noise is a hash of ``(seed, the example's tokens,
  position)``, so an example keeps its mask across epochs, shuffles, batch
  compositions and padding lengths, without materializing masked copies.
* :func:`dynamic_masking`: RoBERTa (Liu et al., 2019, section 4.1): a new mask
  every time an example is fed. Per-batch seeds come from
  ``tf.data.Dataset.random(seed, rerandomize_each_iteration=True)``: each epoch
  draws different masks, and the same ``seed`` replays the same epochs.
* :func:`make_mlm_dataset`: :func:`pipelines.text.make_token_dataset` + a
  masking stage + ``prefetch(AUTOTUNE)``.

Stage input: a dataset of padded int id batches ``(batch, T)`` (or dicts with
``"token_ids"``). Output elements: ``(features, labels, sample_weight)`` with
``features = {"token_ids": masked ids, "padding_mask": ids != pad}``,
``labels`` the original ids and ``sample_weight`` float32 1.0 at the selected
positions; or, with ``unselected_label=-100``, ``(features, labels)`` where
unselected labels are -100 (for ``SparseCategoricalCrossentropy(ignore_class=-100)``).

Example::

    from pipelines import masking
    ds = masking.make_mlm_dataset(examples, "document", tokenizer, batch_size=32, max_length=128, seed=0)
    (features, labels, weights) = next(iter(ds))
"""

from __future__ import annotations

import dataclasses

import tensorflow as tf

from pipelines import text

__all__ = ["MaskingRates", "bert_mask", "dynamic_masking", "make_mlm_dataset", "static_masking"]

AUTOTUNE = tf.data.AUTOTUNE
IGNORE_LABEL = -100


@dataclasses.dataclass(frozen=True)
class MaskingRates:
    """BERT's masking probabilities.

    Args:
        select: float, default 0.15. Probability that a non-special token is selected.
        mask_token: float, default 0.8. Share of selected tokens replaced by ``[MASK]``.
        random_token: float, default 0.1. Share replaced by a random token; the
            rest (0.1) stay unchanged.
    """

    select: float = 0.15
    mask_token: float = 0.8
    random_token: float = 0.1

    def __post_init__(self):
        if not 0.0 < self.select <= 1.0:
            raise ValueError(f"select rate must be in (0, 1], got {self.select}")
        if self.mask_token < 0 or self.random_token < 0 or self.mask_token + self.random_token > 1.0:
            raise ValueError(
                f"mask_token and random_token rates must be >= 0 with a sum <= 1, got {self.mask_token} and {self.random_token}"
            )


def bert_mask(token_ids, noise, *, mask_id, special_ids, random_ids, rates=MaskingRates()):
    """BERT's 15% / 80-10-10 masking of ``token_ids`` from uniform ``noise``.

    Args:
        token_ids: int tensor, any shape (usually ``(batch, T)``).
        noise: float32 ``(3,) + token_ids.shape`` in ``[0, 1)``: selection,
            action and random-token draws.
        mask_id: int, the ``[MASK]`` id.
        special_ids: sequence of int never selected (``[MASK]`` is added).
        random_ids: ``(low, high)``, random replacements are uniform in ``[low, high)``.
        rates: :class:`MaskingRates`.

    Returns:
        ``(masked_ids, selected)``: same dtype as ``token_ids``, and bool positions selected.
    """
    low, high = random_ids
    selectable = tf.ones_like(token_ids, dtype=tf.bool)
    for token_id in tuple(special_ids) + (mask_id,):
        selectable &= token_ids != tf.cast(token_id, token_ids.dtype)
    selected = selectable & (noise[0] < rates.select)
    to_mask = selected & (noise[1] < rates.mask_token)
    to_random = selected & (noise[1] >= rates.mask_token) & (noise[1] < rates.mask_token + rates.random_token)
    random_tokens = tf.cast(low + tf.cast(noise[2] * (high - low), tf.int64), token_ids.dtype)
    random_tokens = tf.minimum(random_tokens, tf.cast(high - 1, token_ids.dtype))  # noise is < 1, but float rounding
    masked = tf.where(to_mask, tf.cast(mask_id, token_ids.dtype), token_ids)
    masked = tf.where(to_random, random_tokens, masked)
    return masked, selected


# -- noise ------------------------------------------------------------------------------
def _mix32(h):
    """murmur3's 32-bit finalizer: a bijection whose output bits each depend on every input bit."""
    h ^= tf.bitwise.right_shift(h, tf.constant(16, tf.uint32))
    h *= tf.constant(0x85EBCA6B, tf.uint32)
    h ^= tf.bitwise.right_shift(h, tf.constant(13, tf.uint32))
    h *= tf.constant(0xC2B2AE35, tf.uint32)
    h ^= tf.bitwise.right_shift(h, tf.constant(16, tf.uint32))
    return h


def _content_noise(token_ids, pad_id, seed):
    """Uniform ``(3, batch, T)`` noise that depends only on ``seed``, each row's non-pad tokens and the position."""
    ids = tf.cast(tf.bitcast(tf.cast(token_ids, tf.int32), tf.uint32), tf.uint32)
    length = tf.shape(token_ids)[1]
    positions = tf.cast(tf.range(length), tf.uint32)[tf.newaxis, :]
    real = token_ids != tf.cast(pad_id, token_ids.dtype)
    # Order-sensitive row hash over real tokens only, so padding to another length keeps the mask.
    token_hashes = _mix32(ids * tf.constant(0x9E3779B1, tf.uint32) + _mix32(positions + tf.constant(0x632BE5AB, tf.uint32)))
    row_hash = tf.reduce_sum(tf.where(real, token_hashes, tf.zeros_like(token_hashes)), axis=1, keepdims=True)
    row_hash = _mix32(row_hash ^ tf.constant(seed & 0xFFFFFFFF, tf.uint32))
    draws = []
    for stream in range(3):
        h = _mix32(row_hash + _mix32(positions * tf.constant(3, tf.uint32) + tf.constant(stream + 1, tf.uint32)))
        h = _mix32(h ^ tf.constant((seed >> 32) & 0xFFFFFFFF, tf.uint32))
        # 24 high bits -> exactly representable float32 in [0, 1).
        draws.append(tf.cast(tf.bitwise.right_shift(h, tf.constant(8, tf.uint32)), tf.float32) / float(1 << 24))
    return tf.stack(draws)


# -- stages -------------------------------------------------------------------------------
def _masking_args(tokenizer, random_ids):
    for attribute in ("pad_id", "start_id", "end_id", "mask_id", "vocab_size"):
        if not hasattr(tokenizer, attribute):
            raise ValueError(f"masking needs a tokenizer with {attribute}, got {type(tokenizer).__name__}")
    special = (tokenizer.pad_id, tokenizer.start_id, tokenizer.end_id)
    if random_ids is None:
        # Both tfsuite tokenizers put their 5 special tokens at ids 0-4: draw replacements above them.
        random_ids = (max(special + (tokenizer.mask_id, tokenizer.unk_id)) + 1, tokenizer.vocab_size)
    low, high = random_ids
    if not 0 <= low < high <= tokenizer.vocab_size:
        raise ValueError(
            f"random_ids must be (low, high) with 0 <= low < high <= vocab_size {tokenizer.vocab_size}, got {random_ids}"
        )
    return special, (low, high)


def _token_ids(element):
    ids = element["token_ids"] if isinstance(element, dict) else element
    return ids


def _check_input(ds, caller):
    if not isinstance(ds, tf.data.Dataset):
        raise ValueError(f"{caller} expected a tf.data.Dataset, got {type(ds).__name__}")
    spec = ds.element_spec
    spec = spec.get("token_ids") if isinstance(spec, dict) else spec
    if not isinstance(spec, tf.TensorSpec) or not spec.dtype.is_integer or spec.shape.rank != 2:
        raise ValueError(
            f"{caller} expected batches of int token ids of rank 2 (batch, length) "
            f"(for example from pipelines.text.make_token_dataset), got element_spec {ds.element_spec}"
        )


def _outputs(token_ids, masked, selected, pad_id, unselected_label, element=None):
    # Other features of a dict element (BERT's segment_ids, ...) travel along unchanged.
    extra = {k: v for k, v in element.items() if k not in ("token_ids", "padding_mask")} if isinstance(element, dict) else {}
    features = {**extra, "token_ids": masked, "padding_mask": token_ids != tf.cast(pad_id, token_ids.dtype)}
    if unselected_label is None:
        return features, token_ids, tf.cast(selected, tf.float32)
    return features, tf.where(selected, token_ids, tf.cast(unselected_label, token_ids.dtype))


def static_masking(
    ds, tokenizer, seed=0, *, rates=MaskingRates(), random_ids=None, unselected_label=None, deterministic=False
):
    """BERT's static masking: each example's mask is fixed by ``seed`` and its tokens.

    Args:
        ds: dataset of int ``(batch, T)`` padded ids (or dicts with ``"token_ids"``).
        tokenizer: a tfsuite tokenizer (``pad_id``, ``start_id``, ``end_id``, ``mask_id``, ``vocab_size``).
        seed: int, default 0.
        rates: :class:`MaskingRates`, default 15% / 80-10-10.
        random_ids: ``(low, high)`` or None: range of random replacements
            (default: the ids after the special tokens up to ``vocab_size``).
        unselected_label: None (default: return sample weights) or an int
            label for unselected positions (for example -100).
        deterministic: bool, default False. Keep element order in the parallel map.

    Returns:
        Dataset of ``(features, labels, sample_weight)`` or ``(features, labels)`` (see module doc).
    """
    _check_input(ds, "static_masking")
    special, random_ids = _masking_args(tokenizer, random_ids)
    pad_id, mask_id = tokenizer.pad_id, tokenizer.mask_id

    @tf.autograph.experimental.do_not_convert
    def mask(element):
        token_ids = _token_ids(element)
        noise = _content_noise(token_ids, pad_id, int(seed))
        masked, selected = bert_mask(token_ids, noise, mask_id=mask_id, special_ids=special, random_ids=random_ids, rates=rates)
        return _outputs(token_ids, masked, selected, pad_id, unselected_label, element)

    return ds.map(mask, num_parallel_calls=AUTOTUNE, deterministic=deterministic)


def dynamic_masking(
    ds, tokenizer, seed=0, *, rates=MaskingRates(), random_ids=None, unselected_label=None, deterministic=False
):
    """RoBERTa's dynamic masking: a new mask for every batch, every epoch.

    Args: as :func:`static_masking`; ``seed`` (int or None) seeds the per-batch
    seed stream (None: different masks every run).

    Returns:
        Dataset of ``(features, labels, sample_weight)`` or ``(features, labels)`` (see module doc).
    """
    _check_input(ds, "dynamic_masking")
    special, random_ids = _masking_args(tokenizer, random_ids)
    pad_id, mask_id = tokenizer.pad_id, tokenizer.mask_id
    # rerandomize_each_iteration: every pass over the dataset (epoch) draws a new seed stream.
    seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)

    @tf.autograph.experimental.do_not_convert
    def mask(element, batch_seed):
        token_ids = _token_ids(element)
        noise = tf.random.stateless_uniform(tf.concat([[3], tf.shape(token_ids)], axis=0), batch_seed)
        masked, selected = bert_mask(token_ids, noise, mask_id=mask_id, special_ids=special, random_ids=random_ids, rates=rates)
        return _outputs(token_ids, masked, selected, pad_id, unselected_label, element)

    return tf.data.Dataset.zip((ds, seeds)).map(mask, num_parallel_calls=AUTOTUNE, deterministic=deterministic)


MASKINGS = {"static": static_masking, "dynamic": dynamic_masking}


def make_mlm_dataset(
    ds,
    text_key,
    tokenizer,
    batch_size=32,
    max_length=128,
    *,
    masking="dynamic",
    seed=0,
    rates=MaskingRates(),
    unselected_label=None,
    deterministic=False,
    **text_options,
):
    """Masked-LM batches from a dataset of texts: tokenize, pad (:func:`pipelines.text.make_token_dataset`), mask, prefetch.

    Args:
        ds, text_key, tokenizer, batch_size, max_length: as in :func:`pipelines.text.make_token_dataset`.
        masking: ``"dynamic"`` (default, RoBERTa) or ``"static"`` (BERT).
        seed: int, default 0. Shuffle and masking seed.
        rates, unselected_label: as in :func:`static_masking`.
        deterministic: bool, default False.
        **text_options: more :func:`pipelines.text.make_token_dataset` options (``shuffle``, ``buckets``, ``cache``...).
    """
    if masking not in MASKINGS:
        raise ValueError(f"unknown masking {masking!r}; expected one of {sorted(MASKINGS)}")
    tokens = text.make_token_dataset(
        ds, text_key, tokenizer, batch_size, max_length, seed=seed, deterministic=deterministic, **text_options
    )
    masked = MASKINGS[masking](
        tokens, tokenizer, seed, rates=rates, unselected_label=unselected_label, deterministic=deterministic
    )
    return masked.prefetch(AUTOTUNE)
