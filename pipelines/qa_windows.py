"""Extractive question answering inputs: a question and a long context as overlapping windows, in graph ops.

BERT reads at most ``sequence_length`` pieces, so a context longer than that is
cut into windows of context pieces that overlap (Devlin et al., 2019, section
4.2; the "document stride" of the SQuAD scripts): window ``w`` holds the
context pieces ``[w * doc_stride, w * doc_stride + width)``, packed as
``[CLS] question [SEP] window [SEP]``, with ``width = sequence_length -
len(question) - 3``. An answer is a span of context pieces; in a window that
holds the whole span its labels are the span's positions in the packed row,
in the others both labels are 0 (``[CLS]``: "not in this window").

Everything here is TensorFlow and tensorflow-text ops on one example (scalar
strings), so the same function builds training windows
(``dataset.map(...).unbatch()``) and runs inside the exported SavedModel;
:func:`best_span` maps the model's start/end scores back to a byte span of
the raw context.

Offsets are UTF-8 byte offsets (what tensorflow-text returns);
:func:`char_to_byte` converts SQuAD's character ``answer_start``.
"""

from __future__ import annotations

import tensorflow as tf
import tensorflow_text as tf_text

__all__ = ["best_span", "char_to_byte", "window_example"]


def char_to_byte(text, char_offset):
    """The byte offset of character ``char_offset`` of the UTF-8 string ``text`` (scalar tensors)."""
    return tf.strings.length(tf.strings.substr(text, 0, char_offset, unit="UTF8_CHAR"))


def window_example(tokenizer, question, context, answer_start=None, answer_end=None, *, sequence_length=192,
                   doc_stride=64, max_question_length=32):
    """One (question, context) pair as packed windows.

    Args:
        tokenizer: :class:`pipelines.bert_tokenizer.BertTokenizer`.
        question, context: scalar string tensors.
        answer_start, answer_end: scalar int byte offsets ``[start, end)`` of
            the answer in ``context``, or None (serving: no labels).
        sequence_length: int, pieces per window. Default 192.
        doc_stride: int, context pieces between window starts. Default 64.
        max_question_length: int, the question is cut to this many pieces. Default 32.

    Returns: dict of ``(windows, sequence_length)`` int32 tensors ``token_ids``,
    ``segment_ids``, ``padding_mask``, ``piece_starts`` / ``piece_ends``
    (each position's byte span in the context; -1 outside the context), and,
    with an answer, ``start_positions`` / ``end_positions`` ``(windows,)``.
    """
    width = sequence_length - max_question_length - 3
    if width < 1 or doc_stride < 1 or doc_stride > width:
        raise ValueError(
            f"sequence_length={sequence_length} leaves {width} context pieces per window after a "
            f"{max_question_length}-piece question; doc_stride={doc_stride} must be between 1 and that"
        )
    question_ids = tokenizer.tokenize(tf.reshape(question, [1]))[0][:max_question_length]
    ids, starts, ends = tokenizer.tokenize_with_offsets(tf.reshape(context, [1]))
    ids, starts, ends = ids[0], tf.cast(starts[0], tf.int32), tf.cast(ends[0], tf.int32)
    pieces = tf.shape(ids)[0]
    # Each window fills the whole row: a shorter question leaves more room for the context.
    room = sequence_length - 3 - tf.shape(question_ids)[0]
    count = tf.maximum(1, (tf.maximum(pieces - room, 0) + doc_stride - 1) // doc_stride + 1)
    first = tf.range(count) * doc_stride
    index = first[:, None] + tf.range(room)[None, :]
    valid = index < pieces
    lengths = tf.reduce_sum(tf.cast(valid, tf.int32), axis=1)
    clipped = tf.minimum(index, tf.maximum(pieces - 1, 0))

    def windowed(values):
        return tf.RaggedTensor.from_tensor(tf.gather(values, clipped), lengths=lengths)

    context_rows = windowed(ids)
    questions = tf.RaggedTensor.from_tensor(tf.tile(question_ids[None, :], [count, 1]))
    packed, segments = tf_text.combine_segments([questions, context_rows], tokenizer.cls_id, tokenizer.sep_id)
    token_ids, padding_mask = tf_text.pad_model_inputs(packed, sequence_length, pad_value=tokenizer.pad_id)
    segment_ids, _ = tf_text.pad_model_inputs(tf.cast(segments, tf.int32), sequence_length, pad_value=0)
    # The context's first piece sits after [CLS] question [SEP].
    offset = tf.shape(question_ids)[0] + 2

    def positions(values):
        rows = windowed(values)
        before = tf.fill([count, offset], -1)
        after = tf.fill([count, sequence_length], -1)
        row = tf.concat([before, rows.to_tensor(default_value=-1, shape=[None, room]), after], axis=1)
        return row[:, :sequence_length]

    out = {
        "token_ids": tf.cast(token_ids, tf.int32),
        "segment_ids": segment_ids,
        "padding_mask": tf.cast(padding_mask, tf.int32),
        "piece_starts": positions(starts),
        "piece_ends": positions(ends),
    }
    if answer_start is not None:
        answer_start, answer_end = tf.cast(answer_start, tf.int32), tf.cast(answer_end, tf.int32)
        # The answer's pieces: every piece that overlaps [answer_start, answer_end).
        inside = (ends > answer_start) & (starts < answer_end)
        found = tf.reduce_any(inside)
        span = tf.cast(tf.where(inside)[:, 0], tf.int32)
        first_piece = tf.reduce_min(tf.concat([span, [pieces]], 0))
        last_piece = tf.reduce_max(tf.concat([span, [-1]], 0))
        holds = found & (first <= first_piece) & (last_piece < first + lengths)
        out["start_positions"] = tf.where(holds, first_piece - first + offset, 0)
        out["end_positions"] = tf.where(holds, last_piece - first + offset, 0)
    return out


def best_span(start_logits, end_logits, piece_starts, piece_ends, max_answer_length=30):
    """The highest-scoring context span over all windows: ``(byte_start, byte_end, score)`` scalars.

    ``score = start_logits[i] + end_logits[j]`` over context positions
    ``i <= j < i + max_answer_length`` of the same window (the SQuAD
    recipe); positions outside the context (question, specials, padding)
    never start or end an answer.

    Args: ``(windows, T)`` float logits and the ``piece_starts`` / ``piece_ends``
    of :func:`window_example`.
    """
    start_logits = tf.cast(start_logits, tf.float32)
    end_logits = tf.cast(end_logits, tf.float32)
    in_context = piece_starts >= 0
    length = tf.shape(start_logits)[1]
    i = tf.range(length)[:, None]
    j = tf.range(length)[None, :]
    allowed = (j >= i) & (j < i + max_answer_length)
    allowed = allowed[None] & in_context[:, :, None] & in_context[:, None, :]
    scores = start_logits[:, :, None] + end_logits[:, None, :]
    scores = tf.where(allowed, scores, tf.float32.min)
    flat = tf.reshape(scores, [-1])
    best = tf.argmax(flat, output_type=tf.int32)
    window, rest = best // (length * length), best % (length * length)
    start, end = rest // length, rest % length
    return piece_starts[window, start], piece_ends[window, end], flat[best]
