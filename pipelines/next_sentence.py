"""BERT pre-training batches: next-sentence pairs from documents, packed and masked (textbook sections 6.1, 6.4).

Next sentence prediction (Devlin et al., 2019, section 3.1): for a sentence A
of a document, B is the sentence that follows it half of the time (label 0,
"is next") and a sentence of another document otherwise (label 1, "random").
:func:`next_sentence_pairs` draws those pairs from the documents of our
corpora (Debian long descriptions, split into sentences), reproducibly from a
seed. :func:`make_pretraining_dataset` packs each pair as ``[CLS] A [SEP] B
[SEP]`` with :class:`pipelines.bert_tokenizer.BertTokenizer` and masks it
with :mod:`pipelines.masking`: ``"static"`` (BERT: one mask per pair) or
``"dynamic"`` (RoBERTa: a new mask every epoch). RoBERTa also drops NSP
(``nsp=False``): every example is then one segment of consecutive sentences.

Elements: ``(features, labels, sample_weight)`` with ``features`` =
``{"token_ids", "segment_ids", "padding_mask"}`` ``(batch, T)``, ``labels`` =
``{"mlm": original ids (batch, T)}`` (+ ``"nsp": (batch,)``) and
``sample_weight`` = ``{"mlm": 1.0 at the selected positions}`` (+ ``"nsp": 1.0``).

Example::

    pairs = next_sentence_pairs(documents, seed=0)
    ds = make_pretraining_dataset(pairs, tokenizer, sequence_length=64, batch_size=32)
"""

from __future__ import annotations

import re

import numpy as np
import tensorflow as tf

from pipelines.masking import MASKINGS

__all__ = ["make_pretraining_dataset", "next_sentence_pairs", "split_sentences"]

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
IS_NEXT, IS_RANDOM = 0, 1


def split_sentences(text):
    """A document's sentences: split after ``.``, ``!`` or ``?`` followed by white space; blanks dropped."""
    return [s.strip() for s in _SENTENCE_END.split(" ".join(str(text).split())) if s.strip()]


def next_sentence_pairs(documents, seed=0, random_share=0.5):
    """``(first, second, label)`` for every sentence followed by another in its document.

    Args:
        documents: iterable of str (each a document).
        seed: int, default 0: which pairs get a random second sentence, and which.
        random_share: float in (0, 1), default 0.5 (BERT's).

    Returns: ``(firsts, seconds, labels)``: two lists of str and an int32 array;
    label 0 (``IS_NEXT``) when ``second`` follows ``first``, 1 (``IS_RANDOM``)
    when it comes from another document.

    Raises:
        ValueError: fewer than two documents have two sentences or more.
    """
    if not 0.0 < random_share < 1.0:
        raise ValueError(f"random_share must be in (0, 1), got {random_share}")
    documents = [split_sentences(d) for d in documents]
    usable = [i for i, sentences in enumerate(documents) if len(sentences) >= 2]
    if len(usable) < 2:
        raise ValueError(
            f"next sentence pairs need at least two documents of two sentences or more, got {len(usable)}"
        )
    rng = np.random.default_rng(seed)
    firsts, seconds, labels = [], [], []
    for i in usable:
        sentences = documents[i]
        for k in range(len(sentences) - 1):
            firsts.append(sentences[k])
            if rng.random() < random_share:
                other = i
                while other == i:  # a sentence of another document
                    other = int(rng.integers(len(documents)))
                    other = other if documents[other] else i
                seconds.append(documents[other][int(rng.integers(len(documents[other])))])
                labels.append(IS_RANDOM)
            else:
                seconds.append(sentences[k + 1])
                labels.append(IS_NEXT)
    return firsts, seconds, np.asarray(labels, np.int32)


def make_pretraining_dataset(
    pairs, tokenizer, sequence_length=128, batch_size=32, *, masking="static", nsp=True, seed=0, shuffle=True,
    deterministic=False, max_predictions=None,
):
    """Masked, packed pre-training batches from :func:`next_sentence_pairs` output (see the module doc).

    Args:
        pairs: ``(firsts, seconds, labels)``.
        tokenizer: :class:`pipelines.bert_tokenizer.BertTokenizer`.
        sequence_length: int, default 128. Pairs are trimmed round-robin to fit.
        batch_size: int, default 32.
        masking: ``"static"`` (BERT, default) or ``"dynamic"`` (RoBERTa).
        nsp: bool, default True. False (RoBERTa): the two sentences are one
            segment of consecutive text and no ``"nsp"`` label is returned;
            only the ``IS_NEXT`` pairs are used.
        seed: int, default 0: shuffle and masks.
        shuffle: bool, default True.
        deterministic: bool, default False: keep the batch order in the parallel masking map.
        max_predictions: int or None (default): predict at most this many selected positions per example
            (BERT's ``max_predictions_per_seq``): ``features["mask_positions"]`` ``(batch, P)`` are those
            positions (the first selected ones, then padding with weight 0) and the ``"mlm"`` labels and
            weights are ``(batch, P)``; a selected position past ``P`` stays masked in the input but is not scored.
    """
    if max_predictions is not None and (not isinstance(max_predictions, int) or max_predictions < 1):
        raise ValueError(f"max_predictions must be a positive int or None, got {max_predictions!r}")
    if masking not in MASKINGS:
        raise ValueError(f"masking must be one of {sorted(MASKINGS)}, got {masking!r}")
    firsts, seconds, labels = pairs
    if not len(firsts) == len(seconds) == len(labels) or not len(firsts):
        raise ValueError("pairs must be three sequences of the same, non-zero length (next_sentence_pairs output)")
    if not nsp:
        keep = np.flatnonzero(np.asarray(labels) == IS_NEXT)
        firsts = [f"{firsts[i]} {seconds[i]}" for i in keep]
        seconds, labels = None, np.asarray(labels)[keep]
    columns = {"first": list(firsts), "label": np.asarray(labels, np.int32)}
    if seconds is not None:
        columns["second"] = list(seconds)
    ds = tf.data.Dataset.from_tensor_slices(columns)
    if shuffle:
        ds = ds.shuffle(len(firsts), seed=seed, reshuffle_each_iteration=True)

    def pack(batch):
        features = tokenizer.pack(batch["first"], batch.get("second"), sequence_length=sequence_length)
        return {**features, "nsp": batch["label"]}

    ds = ds.batch(batch_size).map(pack, num_parallel_calls=tf.data.AUTOTUNE)
    ds = MASKINGS[masking](ds, tokenizer, seed=seed, deterministic=deterministic)

    def arrange(features, ids, weights):
        label = features.pop("nsp")
        features["padding_mask"] = tf.cast(features["padding_mask"], tf.int32)
        if max_predictions is not None:  # the first P selected positions, in order (selected ones sort first)
            length = tf.shape(weights)[1]
            order = tf.cast(weights <= 0, tf.int32) * length + tf.range(length)[tf.newaxis]
            positions = tf.math.top_k(-order, k=tf.minimum(max_predictions, length)).indices
            positions = tf.pad(positions, [[0, 0], [0, tf.maximum(max_predictions - length, 0)]])
            weights = tf.gather(weights, positions, batch_dims=1) * tf.cast(
                tf.range(max_predictions)[tf.newaxis] < length, tf.float32)
            ids, features["mask_positions"] = tf.gather(ids, positions, batch_dims=1), positions
        if not nsp:
            return features, {"mlm": ids}, {"mlm": weights}
        return features, {"mlm": ids, "nsp": label}, {"mlm": weights, "nsp": tf.ones_like(label, tf.float32)}

    return ds.map(arrange).prefetch(tf.data.AUTOTUNE)
