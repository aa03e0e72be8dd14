"""T5 span corruption (textbook section 6.3; Raffel et al., 2020, section 3.1.4) as a tf.data stage.

T5's pre-training objective: of each text, ``noise_density`` (15%) of the
tokens are dropped in spans of mean length ``mean_span_length`` (3); each span
is replaced in the input by one sentinel token (``[X0]``, ``[X1]``, ... in
order), and the target lists every sentinel followed by the span it hides::

    original: Thank you for inviting me to your party last week .
    input:    Thank you [X0] me to your party [X1] week .
    target:   [X0] for inviting [X1] last

Span placement follows ``random_spans_noise_mask`` of the T5 code
(``t5.data.preprocessors``): the noise and non-noise token counts are each cut
into ``round(noise / mean_span_length)`` random non-empty segments, which then
alternate, the text starting with non-noise. Input and target together
rebuild the original exactly (:func:`uncorrupt`, tested).

* :func:`random_spans_noise_mask`: the boolean noise mask of one length, from a stateless seed.
* :func:`corrupt_spans`: ids + mask -> ``(inputs, targets)``.
* :func:`span_corruption`: the stage on a dataset of 1-D id tensors; a new
  mask each time an example is fed (RoBERTa-style dynamic noise: more distinct
  training pairs from a small corpus), the same ``seed`` replaying the same epochs.
* :func:`make_span_corruption_dataset`: texts -> padded encoder-decoder batches
  in the format of ``pipelines.text.make_seq2seq_dataset``, so the trainer and
  the T5 model consume pre-training and fine-tuning batches alike.

Example::

    from pipelines.span_corruption import make_span_corruption_dataset
    ds = make_span_corruption_dataset(texts, "document", preprocessor, sentinel_ids, batch_size=64)
    features, targets = next(iter(ds))
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from pipelines import text

__all__ = ["SENTINEL_FORMAT", "corrupt_spans", "make_span_corruption_dataset", "random_spans_noise_mask",
           "sentinel_tokens", "span_corruption", "uncorrupt"]

AUTOTUNE = tf.data.AUTOTUNE
# Sentinel tokens are whole WordPiece tokens ("[X0]" ...), reserved like [MASK].
SENTINEL_FORMAT = "[X{}]"


def sentinel_tokens(count):
    """The sentinel token strings ``[X0] .. [X{count-1}]`` (to reserve in a vocabulary)."""
    return [SENTINEL_FORMAT.format(i) for i in range(int(count))]


def _random_segmentation(num_items, num_segments, seed):
    """Lengths of ``num_segments`` random non-empty segments summing to ``num_items`` (int32 ``(num_segments,)``)."""
    # Choose num_segments - 1 of the num_items - 1 gaps as segment starts, uniformly.
    gaps = tf.range(num_items - 1)
    order = tf.argsort(tf.random.stateless_uniform(tf.shape(gaps), seed))
    chosen = tf.cast(tf.gather(tf.cast(gaps < num_segments - 1, tf.int32), order), tf.int32)
    first_in_segment = tf.concat([[0], chosen], axis=0)
    segment_id = tf.cumsum(first_in_segment)
    return tf.math.unsorted_segment_sum(tf.ones_like(segment_id), segment_id, num_segments)


def random_spans_noise_mask(length, seed, noise_density=0.15, mean_span_length=3.0, max_spans=None):
    """Section 6.3: which of ``length`` tokens T5 drops, as a bool ``(length,)`` tensor.

    Args:
        length: int or scalar int tensor >= 2.
        seed: int32 ``(2,)`` stateless seed.
        noise_density: float in (0, 1), share of tokens in noise spans. Default 0.15.
        mean_span_length: float >= 1. Default 3.
        max_spans: int or None, most spans (the sentinels available).

    Returns:
        bool ``(length,)``, True for noise; at least one noise and one kept token.
    """
    length = tf.cast(length, tf.int32)
    num_noise = tf.cast(tf.round(tf.cast(length, tf.float32) * noise_density), tf.int32)
    num_noise = tf.clip_by_value(num_noise, 1, length - 1)
    num_spans = tf.cast(tf.round(tf.cast(num_noise, tf.float32) / mean_span_length), tf.int32)
    num_spans = tf.maximum(num_spans, 1)
    if max_spans is not None:
        num_spans = tf.minimum(num_spans, int(max_spans))
    num_spans = tf.minimum(num_spans, length - num_noise)  # every span is followed/preceded by kept tokens
    seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int32), 2)
    noise_lengths = _random_segmentation(num_noise, num_spans, seeds[0])
    kept_lengths = _random_segmentation(length - num_noise, num_spans, seeds[1])
    interleaved = tf.reshape(tf.stack([kept_lengths, noise_lengths], axis=1), [-1])
    span_starts = tf.cumsum(interleaved)[:-1]
    indicator = tf.math.unsorted_segment_sum(tf.ones_like(span_starts), span_starts, length)
    return tf.equal(tf.math.floormod(tf.cumsum(indicator), 2), 1)


def _replace_spans(ids, mask, sentinel_ids):
    """Each run of ``mask`` -> its sentinel (k-th run, k-th sentinel); other masked ids dropped."""
    previous = tf.concat([[False], mask[:-1]], axis=0)
    first = tf.logical_and(mask, tf.logical_not(previous))
    span_index = tf.cumsum(tf.cast(first, tf.int32)) - 1
    sentinels = tf.gather(sentinel_ids, tf.maximum(span_index, 0))
    replaced = tf.where(first, sentinels, ids)
    keep = tf.logical_or(tf.logical_not(mask), first)
    return tf.boolean_mask(replaced, keep)


def corrupt_spans(ids, noise_mask, sentinel_ids):
    """``(inputs, targets)`` of one 1-D id tensor: noise spans -> sentinels; targets = sentinel + span, in order.

    The k-th noise span becomes ``sentinel_ids[k]`` in the input; in the target
    each run of kept text becomes a sentinel instead (T5's
    ``nonnoise_span_to_unique_sentinel``), so sentinel k precedes span k there.
    """
    ids = tf.convert_to_tensor(ids)
    sentinel_ids = tf.cast(tf.convert_to_tensor(sentinel_ids), ids.dtype)
    inputs = _replace_spans(ids, noise_mask, sentinel_ids)
    targets = _replace_spans(ids, tf.logical_not(noise_mask), sentinel_ids)
    # The text starts with kept tokens, so the target's first run (kept text) becomes
    # sentinel 0 and noise span 0 follows it: [X0] span0 [X1] span1 ... (and a final
    # sentinel when kept text ends the original, as in T5).
    return inputs, targets


def uncorrupt(inputs, targets, sentinel_ids):
    """The original ids from :func:`corrupt_spans`'s ``(inputs, targets)`` (NumPy; the round-trip check)."""
    sentinel_index = {int(s): k for k, s in enumerate(np.asarray(sentinel_ids).tolist())}
    spans, current = {}, None
    for token in np.asarray(targets).tolist():
        if token in sentinel_index:
            current = sentinel_index[token]
            spans[current] = []
        elif current is not None:
            spans[current].append(token)
    original = []
    for token in np.asarray(inputs).tolist():
        original.extend(spans.get(sentinel_index[token], []) if token in sentinel_index else [token])
    return original


def span_corruption(
    ds, sentinel_ids, noise_density=0.15, mean_span_length=3.0, seed=0, key="token_ids", rerandomize=True,
):
    """The stage: elements ``{key: 1-D ids}`` (or bare id tensors) -> ``{"inputs", "targets"}``, a new mask per feed.

    ``rerandomize=False`` gives the same masks on every pass (a fixed validation set).

    Texts shorter than 2 tokens cannot hold a span and a kept token: they are left out.
    Per-example seeds come from ``tf.data.Dataset.random(seed, rerandomize_each_iteration=True)``.
    """
    if not 0 < noise_density < 1:
        raise ValueError(f"span_corruption: noise_density must be in (0, 1), got {noise_density}")
    if mean_span_length < 1:
        raise ValueError(f"span_corruption: mean_span_length must be >= 1, got {mean_span_length}")
    sentinel_ids = tf.constant(np.asarray(sentinel_ids, np.int32))
    if sentinel_ids.shape.rank != 1 or sentinel_ids.shape[0] < 1:
        raise ValueError("span_corruption: sentinel_ids must be a non-empty list of token ids")
    keyed = isinstance(ds.element_spec, dict)

    def ids_of(element):
        return element[key] if keyed else element

    def long_enough(element):
        return tf.size(ids_of(element)) >= 2

    ds = ds.filter(tf.autograph.experimental.do_not_convert(long_enough))
    seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=bool(rerandomize)).batch(2)

    def corrupt(element, pair):
        ids = tf.cast(ids_of(element), tf.int32)
        mask = random_spans_noise_mask(tf.size(ids), tf.cast(pair % (2 ** 31 - 1), tf.int32), noise_density,
                                       mean_span_length, max_spans=int(sentinel_ids.shape[0]))
        inputs, targets = corrupt_spans(ids, mask, sentinel_ids)
        return {"inputs": inputs, "targets": targets}

    return tf.data.Dataset.zip((ds, seeds)).map(tf.autograph.experimental.do_not_convert(corrupt),
                                                num_parallel_calls=AUTOTUNE, deterministic=True)


def make_span_corruption_dataset(
    examples, text_key, preprocessor, sentinel_ids, *, batch_size=64, batch_tokens=None, buckets=None,
    noise_density=0.15, mean_span_length=3.0, shuffle=True, seed=0, shuffle_buffer=10_000, cache=True,
):
    """Pre-training batches from texts, in ``make_seq2seq_dataset``'s format ``(features, targets)``.

    Each text is tokenized by the preprocessor's source tokenizer and cut to
    its ``source_length`` (less ``[START]``/``[END]`` and ``prefix_ids``),
    cached once, then corrupted anew on every pass (``shuffle=False``, for
    validation: the same noise every pass). The encoder reads
    ``[START]? prefix inputs [END]?`` (the preprocessor's markers and task
    prefix); the decoder ``[START] targets`` and learns ``targets [END]``.
    """
    tokenizer, target_tokenizer = preprocessor.source_tokenizer, preprocessor.target_tokenizer
    markers = 2 if preprocessor.source_markers else 0
    prefix = tf.constant(np.asarray(getattr(preprocessor, "prefix_ids", None) or [], np.int32), tf.int32)
    room = preprocessor.source_length - markers - int(prefix.shape[0])
    if room < 2:
        raise ValueError(f"make_span_corruption_dataset: source_length {preprocessor.source_length} leaves no room")
    buckets = text._check_batching(batch_size, buckets, shuffle_buffer, "make_span_corruption_dataset")  # noqa: SLF001

    def tokenize(batch):
        return text.truncate(tf.cast(tokenizer.tokenize(batch[text_key]), tf.int32), room)

    ds = examples.batch(256).map(tf.autograph.experimental.do_not_convert(tokenize), num_parallel_calls=AUTOTUNE)
    ds = ds.unbatch().map(lambda ids: ids.flat_values if isinstance(ids, tf.RaggedTensor) else ids)
    if cache:
        ds = ds.cache()
    if shuffle:
        ds = ds.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    ds = span_corruption(ds, sentinel_ids, noise_density, mean_span_length, seed=seed, rerandomize=shuffle)
    start, end, pad = tokenizer.start_id, tokenizer.end_id, tokenizer.pad_id

    def pack(element):
        source = tf.concat([prefix, element["inputs"]], axis=0)
        if markers:
            source = tf.concat([[start], source, [end]], axis=0)
        targets = element["targets"]
        return {
            "source": source,
            "decoder": tf.concat([[target_tokenizer.start_id], targets], axis=0),
            "targets": tf.concat([targets, [target_tokenizer.end_id]], axis=0),
        }

    ds = ds.map(pack, num_parallel_calls=AUTOTUNE, deterministic=True)
    padded_shapes = {k: [None] for k in ("source", "decoder", "targets")}
    values = {k: tf.constant(pad, tf.int32) for k in padded_shapes}
    if buckets:
        ds = ds.bucket_by_sequence_length(
            lambda e: tf.maximum(tf.size(e["source"]), tf.size(e["decoder"])), [b + 1 for b in buckets],
            text.bucket_batch_sizes(buckets, batch_size, batch_tokens), padded_shapes=padded_shapes,
            padding_values=values,
        )
    else:
        ds = ds.padded_batch(batch_size, padded_shapes=padded_shapes, padding_values=values)

    def to_model(batch):
        return {
            "encoder_inputs": batch["source"], "encoder_padding_mask": batch["source"] != pad,
            "decoder_token_ids": batch["decoder"], "decoder_padding_mask": batch["decoder"] != pad,
        }, batch["targets"]

    return ds.map(to_model, num_parallel_calls=AUTOTUNE).prefetch(AUTOTUNE)
