"""Text input pipeline: tokenize, truncate, add [START]/[END], bucket by length, pad.

The front end of the text apps (translation, summarization, QA, code, and the
language models). Tokenizers are :class:`pipelines.wordpiece.WordpieceTokenizer`
or :class:`pipelines.sentencepiece.SentencepieceTokenizer` (any object with
``tokenize``, ``pad_id``, ``start_id`` and ``end_id`` works).

Stage order, and why:

1. select the text fields; ``batch`` them and tokenize in a parallel ``map``
   (``num_parallel_calls=AUTOTUNE``; tokenizer ops are vectorized over a
   batch), truncate, add ``[START]``/``[END]``, ``unbatch``;
2. ``cache`` (optional, memory or a file): tokenization is deterministic, so
   it is done once;
3. seeded ``shuffle`` (a new order each epoch, the same orders every run);
4. ``bucket_by_sequence_length`` (optional ``buckets``) or ``padded_batch``,
   padding with the tokenizer's ``pad_id`` (0);
5. build the model's features, ``prefetch(AUTOTUNE)``.

``deterministic=True`` makes the parallel maps keep their order and sets
``tf.data.Options.deterministic``, so with a fixed ``seed`` every run gives the
same batches (tests); ``False`` lets a slow element be overtaken (training).

Functions:

* :func:`make_seq2seq_dataset`: ``({"encoder_inputs", "encoder_padding_mask",
  "decoder_token_ids", "decoder_padding_mask"}, targets)`` with
  ``decoder_token_ids = [START] + y`` and ``targets = y + [END]``.
* :func:`make_lm_dataset`: ``({"token_ids", "padding_mask"}, targets)``, the
  same shift for a causal language model.
* :func:`make_prompt_completion_dataset`: the same for a prompt and its
  completion in one sequence, the loss on the completion only (the prompt's
  targets are ``pad``), as in fine-tuning a GPT on instructions;
* :func:`make_token_dataset`: padded ``[START] + x + [END]`` id batches, the
  input of the masking stages in :mod:`pipelines.masking`.
* :func:`drop_ids`, :func:`truncate`, :func:`add_start_end`: the ragged-id
  stages, usable inside serving graphs (``drop_ids`` uses TFLite builtins only).

Padding masks follow the project convention: True marks a real token.

Example::

    from pipelines import text, tfds_sources
    from pipelines.wordpiece import WordpieceTokenizer, learn_wordpiece_vocab

    pairs = tfds_sources.load_examples("translation", split="train")
    en = WordpieceTokenizer(learn_wordpiece_vocab(pairs.take(5000).map(lambda ex: ex["source"])))
    de = WordpieceTokenizer(learn_wordpiece_vocab(pairs.take(5000).map(lambda ex: ex["target"])))
    ds = text.make_seq2seq_dataset(pairs, "source", "target", en, de, batch_size=64,
                                   max_source_length=64, max_target_length=64, buckets=(16, 32))
    features, targets = next(iter(ds))  # int32 (64, <=64) each
"""

from __future__ import annotations

import tensorflow as tf

__all__ = [
    "add_start_end",
    "bucket_batch_sizes",
    "drop_ids",
    "make_lm_dataset",
    "make_prompt_completion_dataset",
    "make_seq2seq_dataset",
    "make_token_dataset",
    "truncate",
]

AUTOTUNE = tf.data.AUTOTUNE


# -- ragged id stages ------------------------------------------------------------
def _as_ragged(ids, what):
    if not isinstance(ids, tf.RaggedTensor):
        ids = tf.convert_to_tensor(ids)
        if ids.shape.rank != 2:
            raise ValueError(f"{what} expected ids of rank 2 (batch, length), got shape {ids.shape}")
        ids = tf.RaggedTensor.from_tensor(ids, row_splits_dtype=tf.int64)
    elif ids.shape.rank != 2:
        raise ValueError(f"{what} expected ids of rank 2 (batch, length), got shape {ids.shape}")
    return ids.with_row_splits_dtype(tf.int64)


def drop_ids(ids, ids_to_drop):
    """Remove every id in ``ids_to_drop`` from each row of ``ids``.

    Same result as ``tf.ragged.boolean_mask``, but built from cumsum/gather, so
    it converts to TFLite builtins (``boolean_mask`` on ragged rows emits an
    int64 ``UnsortedSegmentSum`` that TFLite lacks).

    Args:
        ids: int ``(batch, length)``, ``tf.RaggedTensor`` or dense.
        ids_to_drop: sequence of int.

    Returns:
        ``tf.RaggedTensor`` ``(batch, None)`` with int64 row splits, same dtype as ``ids``.
    """
    ids = _as_ragged(ids, "drop_ids")
    values = ids.flat_values
    keep = tf.ones_like(values, dtype=tf.bool)
    for token_id in ids_to_drop:
        keep &= values != tf.cast(token_id, values.dtype)
    kept_before = tf.concat([tf.zeros([1], tf.int32), tf.cumsum(tf.cast(keep, tf.int32))], axis=0)
    splits = tf.gather(kept_before, tf.cast(ids.row_splits, tf.int32))
    return tf.RaggedTensor.from_row_splits(tf.boolean_mask(values, keep), tf.cast(splits, tf.int64), validate=False)


def truncate(ids, max_length):
    """Keep the first ``max_length`` ids of each row of a ragged ``(batch, None)`` tensor."""
    if not isinstance(max_length, int) or max_length < 0:
        raise ValueError(f"max_length must be a non-negative int, got {max_length!r}")
    return _as_ragged(ids, "truncate")[:, :max_length]


def add_start_end(ids, start_id=None, end_id=None):
    """Prepend ``start_id`` and/or append ``end_id`` (None: leave out) to each row of ragged ``ids``."""
    ids = _as_ragged(ids, "add_start_end")
    batch = ids.nrows()
    parts = []
    if start_id is not None:
        parts.append(tf.fill([batch, 1], tf.cast(start_id, ids.dtype)))
    parts.append(ids)
    if end_id is not None:
        parts.append(tf.fill([batch, 1], tf.cast(end_id, ids.dtype)))
    return tf.concat(parts, axis=1) if len(parts) > 1 else ids


# -- dataset assembly ------------------------------------------------------------
def _check_string_fields(ds, keys, caller):
    if not isinstance(ds, tf.data.Dataset):
        raise ValueError(f"{caller} expected a tf.data.Dataset, got {type(ds).__name__}")
    spec = ds.element_spec
    if not isinstance(spec, dict):
        raise ValueError(f"{caller} expected a dataset of dicts (for example from tfds.load), got element_spec {spec}")
    for key in keys:
        if not isinstance(key, str):
            raise ValueError(f"{caller} expected field names as str, got {key!r}")
        if key not in spec:
            raise ValueError(f"{caller}: the dataset has no field {key!r}; its fields are {sorted(spec)}")
        if spec[key].dtype != tf.string or spec[key].shape.rank != 0:
            raise ValueError(f"{caller}: field {key!r} must hold scalar strings, got {spec[key]}")


def _check_tokenizer(tokenizer, what, caller):
    missing = [a for a in ("tokenize", "pad_id", "start_id", "end_id") if not hasattr(tokenizer, a)]
    if missing:
        raise ValueError(f"{caller}: {what} must be a tokenizer with {', '.join(missing)}, got {type(tokenizer).__name__}")


def _check_batching(batch_size, buckets, shuffle_buffer, caller):
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"{caller}: batch_size must be a positive int, got {batch_size!r}")
    if buckets is not None:
        buckets = list(buckets)
        if not buckets or any(not isinstance(b, int) or b < 1 for b in buckets) or buckets != sorted(set(buckets)):
            raise ValueError(f"{caller}: buckets must be increasing positive int lengths, for example (16, 32, 64), got {buckets}")
    if not isinstance(shuffle_buffer, int) or shuffle_buffer < 1:
        raise ValueError(f"{caller}: shuffle_buffer must be a positive int, got {shuffle_buffer!r}")
    return buckets


def _check_length(value, minimum, name, caller):
    if not isinstance(value, int) or value < minimum:
        raise ValueError(f"{caller}: {name} must be an int >= {minimum}, got {value!r}")


@tf.autograph.experimental.do_not_convert
def _plain_tensors(example):
    return {key: value.flat_values if isinstance(value, tf.RaggedTensor) else value for key, value in example.items()}


def bucket_batch_sizes(buckets, batch_size, batch_tokens=None):
    """Examples per batch for each bucket of ``bucket_by_sequence_length`` (one more than ``buckets``).

    With ``batch_tokens`` a bucket holds ``min(batch_size, batch_tokens // L)``
    examples (at least 1), ``L`` its longest length (twice the last boundary
    for the open-ended last bucket): batches of about the same number of
    padded tokens, so short-sentence batches are not tiny and long ones do not
    blow up memory. Without it every bucket holds ``batch_size``.
    """
    if batch_tokens is None:
        return [batch_size] * (len(buckets) + 1)
    lengths = [*buckets, 2 * buckets[-1]]
    return [max(1, min(batch_size, batch_tokens // length)) for length in lengths]


def _assemble(
    examples,
    tokenize_fn,
    length_fn,
    padding_values,
    *,
    batch_size,
    shuffle,
    seed,
    deterministic,
    buckets,
    cache,
    shuffle_buffer,
    tokenize_batch_size,
    drop_remainder,
    filter_fn=None,
    batch_tokens=None,
):
    """Shared stages 1-4: tokenize in batches, (filter), cache, shuffle, bucket or pad. Elements: dicts of padded ids."""
    # The map functions only chain tensor ops: skipping autograph saves seconds of tracing per pipeline.
    tokenize_fn = tf.autograph.experimental.do_not_convert(tokenize_fn)
    ds = examples.batch(tokenize_batch_size).map(tokenize_fn, num_parallel_calls=AUTOTUNE, deterministic=deterministic)
    # unbatch() leaves ragged specs of ragged_rank 0; the identity map turns them into the plain
    # TensorSpecs that padded_batch and bucket_by_sequence_length require.
    ds = ds.unbatch().map(_plain_tensors)
    if filter_fn is not None:
        ds = ds.filter(tf.autograph.experimental.do_not_convert(filter_fn))
    if cache:
        ds = ds.cache(cache if isinstance(cache, str) else "")
    if shuffle:
        ds = ds.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    padded_shapes = {key: [None] for key in padding_values}
    values = {key: tf.constant(value, tf.int32) for key, value in padding_values.items()}
    if buckets:
        ds = ds.bucket_by_sequence_length(
            element_length_func=tf.autograph.experimental.do_not_convert(length_fn),
            bucket_boundaries=[b + 1 for b in buckets],  # boundaries are exclusive upper bounds
            bucket_batch_sizes=bucket_batch_sizes(buckets, batch_size, batch_tokens),
            padded_shapes=padded_shapes,
            padding_values=values,
            drop_remainder=drop_remainder,
        )
    else:
        ds = ds.padded_batch(batch_size, padded_shapes=padded_shapes, padding_values=values, drop_remainder=drop_remainder)
    return ds


def _finish(ds, to_model_fn, deterministic):
    ds = ds.map(tf.autograph.experimental.do_not_convert(to_model_fn), num_parallel_calls=AUTOTUNE, deterministic=deterministic)
    options = tf.data.Options()
    options.deterministic = deterministic
    return ds.with_options(options).prefetch(AUTOTUNE)


def make_seq2seq_dataset(
    ds,
    source_key="source",
    target_key="target",
    source_tokenizer=None,
    target_tokenizer=None,
    batch_size=64,
    max_source_length=128,
    max_target_length=128,
    *,
    preprocessor=None,
    source_markers=False,
    long_pairs="truncate",
    batch_tokens=None,
    shuffle=True,
    seed=0,
    deterministic=False,
    buckets=None,
    cache=False,
    shuffle_buffer=10_000,
    tokenize_batch_size=256,
    drop_remainder=False,
):
    """Batches of an encoder-decoder model's inputs and targets from a dataset of text pairs.

    The one seq2seq builder of the suite: the apps pass their
    ``pipelines.preprocessing.TextPreprocessor`` (its tokenizers, lengths and
    ``[START]``/``[END]`` rule), so training sees exactly what the exported
    graph and the Python decoder feed the model.

    Args:
        ds: ``tf.data.Dataset`` of dicts with scalar string fields
            ``source_key`` and ``target_key`` (for example ``tfds.load(...)`` or
            ``pipelines.tfds_sources.load_examples``).
        source_key, target_key: str, defaults ``"source"``, ``"target"``.
        source_tokenizer, target_tokenizer: tokenizers (unless ``preprocessor``).
        batch_size: int, default 64. Examples per batch (at most, with ``batch_tokens``).
        max_source_length: int, default 128. Length of ``encoder_inputs``
            (``[START]``/``[END]`` included when ``source_markers``).
        max_target_length: int >= 2, default 128. Length of ``decoder_token_ids``
            and ``targets``: ``y`` is cut to ``max_target_length - 1`` ids first.
        preprocessor: a ``TextPreprocessor``: tokenizers, ``source_length``,
            ``target_length``, ``source_markers`` and the task prefix come from it. Default None.
        source_markers: bool, default False. ``[START] x [END]`` as the encoder input.
        long_pairs: ``"truncate"`` (default) cuts a side to its length;
            ``"drop"`` leaves the pair out (a cut pair teaches a misaligned output).
        batch_tokens: int or None. Padded-token budget per batch (see
            :func:`bucket_batch_sizes`); needs ``buckets``.
        shuffle: bool, default True. Seeded shuffle, reshuffled each epoch.
        seed: int or None, default 0.
        deterministic: bool, default False. Keep element order in parallel maps.
        buckets: increasing ints or None. Length boundaries (inclusive) of
            ``bucket_by_sequence_length`` on ``max(len(encoder_inputs), len(decoder_token_ids))``:
            ``(16, 32)`` batches lengths 1-16, 17-32 and longer separately,
            each padded to its own longest. None: one ``padded_batch``.
        cache: bool or str, default False. Cache the tokenized pairs in memory (True) or a file.
        shuffle_buffer: int, default 10000.
        tokenize_batch_size: int, default 256. Texts per tokenizer call.
        drop_remainder: bool, default False.

    Returns:
        ``tf.data.Dataset`` of ``(features, targets)``: ``features`` has
        ``encoder_inputs`` int32 ``(batch, S)``, ``encoder_padding_mask``
        bool ``(batch, S)``, ``decoder_token_ids`` int32 ``(batch, T)`` (``[START] + y``),
        ``decoder_padding_mask`` bool ``(batch, T)``; ``targets`` int32
        ``(batch, T)`` (``y + [END]``). Padding is the tokenizers' ``pad_id``.
    """
    caller = "make_seq2seq_dataset"
    if preprocessor is not None:
        source_tokenizer, target_tokenizer = preprocessor.source_tokenizer, preprocessor.target_tokenizer
        max_source_length, max_target_length = preprocessor.source_length, preprocessor.target_length
        source_markers = preprocessor.source_markers
    prefix_ids = list(getattr(preprocessor, "prefix_ids", None) or [])
    _check_string_fields(ds, (source_key, target_key), caller)
    _check_tokenizer(source_tokenizer, "source_tokenizer", caller)
    _check_tokenizer(target_tokenizer, "target_tokenizer", caller)
    _check_length(max_source_length, 3 if source_markers else 1, "max_source_length", caller)
    _check_length(max_target_length, 2, "max_target_length", caller)
    if long_pairs not in ("truncate", "drop"):
        raise ValueError(f"{caller}: long_pairs must be 'truncate' or 'drop', got {long_pairs!r}")
    buckets = _check_batching(batch_size, buckets, shuffle_buffer, caller)
    if batch_tokens is not None and not buckets:
        raise ValueError(f"{caller}: batch_tokens needs buckets (the token budget is per length bucket)")
    src_pad, tgt_pad = source_tokenizer.pad_id, target_tokenizer.pad_id
    source_room = (max_source_length - 2 if source_markers else max_source_length) - len(prefix_ids)
    cut = long_pairs == "truncate"

    def tokenize(examples):
        source = tf.cast(source_tokenizer.tokenize(examples[source_key]), tf.int32)
        target = tf.cast(target_tokenizer.tokenize(examples[target_key]), tf.int32)
        if cut:
            source, target = truncate(source, source_room), truncate(target, max_target_length - 1)
        if prefix_ids:  # the text-to-text task prefix, as the preprocessor puts it
            rows = source.nrows(out_type=tf.int32)
            prefix = tf.RaggedTensor.from_tensor(tf.tile(tf.constant([prefix_ids], tf.int32), [rows, 1]))
            source = tf.concat([prefix, source], axis=1)
        if source_markers:
            source = add_start_end(source, source_tokenizer.start_id, source_tokenizer.end_id)
        return {
            "source": source,
            "decoder": add_start_end(target, start_id=target_tokenizer.start_id),
            "targets": add_start_end(target, end_id=target_tokenizer.end_id),
        }

    def fits(example):
        markers = 2 if source_markers else 0
        return tf.logical_and(
            tf.logical_and(tf.size(example["source"]) > markers + len(prefix_ids),
                           tf.size(example["source"]) <= max_source_length),
            tf.size(example["decoder"]) <= max_target_length,
        )

    def length(example):
        return tf.maximum(tf.size(example["source"]), tf.size(example["decoder"]))

    def to_model(batch):
        features = {
            "encoder_inputs": batch["source"],
            "encoder_padding_mask": batch["source"] != src_pad,
            "decoder_token_ids": batch["decoder"],
            "decoder_padding_mask": batch["decoder"] != tgt_pad,
        }
        return features, batch["targets"]

    ds = _assemble(
        ds, tokenize, length, {"source": src_pad, "decoder": tgt_pad, "targets": tgt_pad},
        batch_size=batch_size, shuffle=shuffle, seed=seed, deterministic=deterministic, buckets=buckets,
        cache=cache, shuffle_buffer=shuffle_buffer, tokenize_batch_size=tokenize_batch_size,
        drop_remainder=drop_remainder, filter_fn=None if cut else fits, batch_tokens=batch_tokens,
    )  # fmt: skip
    return _finish(ds, to_model, deterministic)


def make_lm_dataset(
    ds,
    text_key,
    tokenizer,
    batch_size=64,
    max_length=128,
    *,
    shuffle=True,
    seed=0,
    deterministic=False,
    buckets=None,
    cache=False,
    shuffle_buffer=10_000,
    tokenize_batch_size=256,
    drop_remainder=False,
):
    """Batches of a causal language model's inputs ``[START] + x`` and targets ``x + [END]``.

    Args: as :func:`make_seq2seq_dataset`, with one ``text_key`` and
    ``tokenizer``; ``max_length`` (int >= 2, default 128) is the length of
    inputs and targets.

    Returns:
        ``tf.data.Dataset`` of ``({"token_ids": int32 (batch, T), "padding_mask": bool (batch, T)},
        targets int32 (batch, T))``.
    """
    caller = "make_lm_dataset"
    _check_string_fields(ds, (text_key,), caller)
    _check_tokenizer(tokenizer, "tokenizer", caller)
    _check_length(max_length, 2, "max_length", caller)
    buckets = _check_batching(batch_size, buckets, shuffle_buffer, caller)
    pad = tokenizer.pad_id

    def tokenize(examples):
        ids = truncate(tokenizer.tokenize(examples[text_key]), max_length - 1)
        return {
            "inputs": tf.cast(add_start_end(ids, start_id=tokenizer.start_id), tf.int32),
            "targets": tf.cast(add_start_end(ids, end_id=tokenizer.end_id), tf.int32),
        }

    def length(example):
        return tf.size(example["inputs"])

    def to_model(batch):
        return {"token_ids": batch["inputs"], "padding_mask": batch["inputs"] != pad}, batch["targets"]

    ds = _assemble(
        ds, tokenize, length, {"inputs": pad, "targets": pad},
        batch_size=batch_size, shuffle=shuffle, seed=seed, deterministic=deterministic, buckets=buckets,
        cache=cache, shuffle_buffer=shuffle_buffer, tokenize_batch_size=tokenize_batch_size,
        drop_remainder=drop_remainder,
    )  # fmt: skip
    return _finish(ds, to_model, deterministic)


def make_prompt_completion_dataset(
    ds,
    prompt_key,
    completion_key,
    tokenizer,
    batch_size=32,
    max_length=256,
    *,
    shuffle=True,
    seed=0,
    deterministic=False,
    buckets=None,
    batch_tokens=None,
    cache=False,
    shuffle_buffer=10_000,
    tokenize_batch_size=256,
    drop_remainder=False,
):
    """Batches of a causal LM's ``[START] + prompt + completion`` and targets ``prompt + completion + [END]``,
    every prompt target replaced by ``pad`` so the loss reads the completion only.

    Pairs longer than ``max_length`` tokens (with ``[START]``) are left out,
    not cut: a cut would teach the model to stop mid-completion.

    Args: as :func:`make_lm_dataset`, with the two text fields; ``batch_tokens``
    caps the padded tokens per bucket batch (with ``buckets``).

    Returns:
        ``tf.data.Dataset`` of ``({"token_ids": int32 (batch, T), "padding_mask": bool (batch, T)},
        targets int32 (batch, T))``.
    """
    caller = "make_prompt_completion_dataset"
    _check_string_fields(ds, (prompt_key, completion_key), caller)
    _check_tokenizer(tokenizer, "tokenizer", caller)
    _check_length(max_length, 2, "max_length", caller)
    buckets = _check_batching(batch_size, buckets, shuffle_buffer, caller)
    pad = tokenizer.pad_id

    def tokenize(examples):
        prompt = tf.cast(tokenizer.tokenize(examples[prompt_key]), tf.int32)
        completion = tf.cast(tokenizer.tokenize(examples[completion_key]), tf.int32)
        both = tf.concat([prompt, completion], axis=1)
        hidden = tf.concat([tf.ragged.map_flat_values(tf.zeros_like, prompt) + pad, completion], axis=1)
        return {
            "inputs": add_start_end(both, start_id=tokenizer.start_id),
            "targets": add_start_end(hidden, end_id=tokenizer.end_id),
        }

    def length(example):
        return tf.size(example["inputs"])

    def short_enough(example):
        return tf.size(example["inputs"]) <= max_length

    def to_model(batch):
        return {"token_ids": batch["inputs"], "padding_mask": batch["inputs"] != pad}, batch["targets"]

    ds = _assemble(
        ds, tokenize, length, {"inputs": pad, "targets": pad},
        batch_size=batch_size, shuffle=shuffle, seed=seed, deterministic=deterministic, buckets=buckets,
        cache=cache, shuffle_buffer=shuffle_buffer, tokenize_batch_size=tokenize_batch_size,
        drop_remainder=drop_remainder, filter_fn=short_enough, batch_tokens=batch_tokens,
    )  # fmt: skip
    return _finish(ds, to_model, deterministic)


def make_token_dataset(
    ds,
    text_key,
    tokenizer,
    batch_size=64,
    max_length=128,
    *,
    shuffle=True,
    seed=0,
    deterministic=False,
    buckets=None,
    cache=False,
    shuffle_buffer=10_000,
    tokenize_batch_size=256,
    drop_remainder=False,
):
    """Padded batches of ``[START] + x + [END]`` ids (at most ``max_length``, >= 3), for the masking stages.

    Args: as :func:`make_lm_dataset`.

    Returns:
        ``tf.data.Dataset`` of int32 ``(batch, T)`` id tensors padded with ``tokenizer.pad_id``.
        No ``prefetch`` yet: add the masking stage, then prefetch.
    """
    caller = "make_token_dataset"
    _check_string_fields(ds, (text_key,), caller)
    _check_tokenizer(tokenizer, "tokenizer", caller)
    _check_length(max_length, 3, "max_length", caller)
    buckets = _check_batching(batch_size, buckets, shuffle_buffer, caller)

    def tokenize(examples):
        ids = truncate(tokenizer.tokenize(examples[text_key]), max_length - 2)
        return {"token_ids": tf.cast(add_start_end(ids, tokenizer.start_id, tokenizer.end_id), tf.int32)}

    def length(example):
        return tf.size(example["token_ids"])

    ds = _assemble(
        ds, tokenize, length, {"token_ids": tokenizer.pad_id},
        batch_size=batch_size, shuffle=shuffle, seed=seed, deterministic=deterministic, buckets=buckets,
        cache=cache, shuffle_buffer=shuffle_buffer, tokenize_batch_size=tokenize_batch_size,
        drop_remainder=drop_remainder,
    )  # fmt: skip
    ds = ds.map(lambda batch: batch["token_ids"], num_parallel_calls=AUTOTUNE, deterministic=deterministic)
    options = tf.data.Options()
    options.deterministic = deterministic
    return ds.with_options(options)
