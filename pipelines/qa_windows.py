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
(:func:`make_qa_dataset`) and runs inside the exported SavedModel;
:func:`best_span` maps the model's start/end scores back to a byte span of
the raw context. The rows are packed with dense ops (equal to tf_text's
``combine_segments`` + ``pad_model_inputs``, which need ragged kernels
TFLite lacks), so the same graph converts to TFLite.

The reader, data flowing one way: :func:`read_one` (windows, one model call,
best span) -> :func:`read_answers` (a batch, ``tf.map_fn``) ->
:func:`answer_rows` (answer strings, character offsets and a status per row,
:data:`QA_STATUSES`); :class:`TFLiteReader` runs the TFLite ``answer_spans``
model and does the string part in Python.

Offsets are UTF-8 byte offsets (what tensorflow-text returns);
:func:`char_to_byte` converts SQuAD's character ``answer_start``.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf
import tensorflow_text as tf_text

from pipelines.preprocessing import _pick  # the per-row status rule the text preprocessors use

__all__ = ["QA_BLANK_STATUSES", "QA_STATUSES", "WINDOW_FEATURES", "answer_rows", "best_span", "read_one",
           "TFLiteReader", "char_to_byte", "make_qa_dataset", "python_status", "question_status", "read_answers", "window_example"]

# The model's inputs among window_example's outputs.
MODEL_INPUTS = ("token_ids", "segment_ids", "padding_mask")
WINDOW_FEATURES = (*MODEL_INPUTS, "piece_starts", "piece_ends")


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
    asked = tf.shape(question_ids)[0]
    # Each window fills the whole row: a shorter question leaves more room for the context.
    room = sequence_length - 3 - asked
    count = tf.maximum(1, (tf.maximum(pieces - room, 0) + doc_stride - 1) // doc_stride + 1)
    first = tf.range(count) * doc_stride
    lengths = tf.minimum(tf.maximum(pieces - first, 0), room)
    # Dense packing, [CLS] question [SEP] window [SEP] [PAD]..., with no ragged op (so TFLite converts it):
    # row position p holds context piece first + p - offset where offset <= p < offset + length.
    offset = asked + 2  # the context's first piece sits after [CLS] question [SEP]
    p = tf.expand_dims(tf.range(sequence_length), 0)  # expand_dims, not [None, :]: TFLite lacks new-axis slices
    in_context = (p >= offset) & (p < offset + tf.expand_dims(lengths, 1))
    piece = tf.clip_by_value(tf.expand_dims(first, 1) + p - offset, 0, tf.maximum(pieces - 1, 0))
    question_part = tf.gather(tf.concat([question_ids, [0]], 0), tf.clip_by_value(p - 1, 0, asked))
    closing = offset + tf.expand_dims(lengths, 1)  # the last [SEP]

    def from_context(values, outside):
        return tf.where(in_context, tf.gather(tf.concat([values, [outside]], 0), piece), outside)

    token_ids = tf.where(p == 0, tokenizer.cls_id, tf.where((p >= 1) & (p <= asked), question_part, tokenizer.pad_id))
    token_ids = tf.where((p == asked + 1) | (p == closing), tokenizer.sep_id, token_ids)
    token_ids = tf.where(in_context, from_context(ids, 0), token_ids)
    padding_mask = p <= closing
    segment_ids = tf.cast((p >= offset) & padding_mask, tf.int32)
    token_ids = tf.broadcast_to(token_ids, [count, sequence_length])

    out = {
        "token_ids": tf.cast(token_ids, tf.int32),
        "segment_ids": segment_ids,
        "padding_mask": tf.cast(padding_mask, tf.int32),
        "piece_starts": from_context(starts, -1),
        "piece_ends": from_context(ends, -1),
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
    i = tf.expand_dims(tf.range(length), 1)
    j = tf.expand_dims(tf.range(length), 0)
    allowed = tf.expand_dims((j >= i) & (j < i + max_answer_length), 0)
    allowed = allowed & tf.expand_dims(in_context, 2) & tf.expand_dims(in_context, 1)
    scores = tf.expand_dims(start_logits, 2) + tf.expand_dims(end_logits, 1)
    scores = tf.where(allowed, scores, tf.float32.min)
    flat = tf.reshape(scores, [-1])
    best = tf.argmax(flat, output_type=tf.int32)
    window, rest = best // (length * length), best % (length * length)
    start, end = rest // length, rest % length
    return piece_starts[window, start], piece_ends[window, end], flat[best]


def read_one(span_logits, tokenizer, question, context, *, sequence_length=192, doc_stride=64,
             max_question_length=32, max_windows=16, max_answer_length=30):
    """One (question, context) pair: its windows (the first ``max_windows``), one model call, the best span.

    Args:
        span_logits: callable, model inputs dict (:data:`MODEL_INPUTS`, ``(windows, T)``)
            -> ``(start_logits, end_logits)`` ``(windows, T)``.
        question, context: scalar string tensors.
        The others: as :func:`window_example` and :func:`best_span`.

    Returns: dict of scalars: ``byte_start`` / ``byte_end`` of the answer in
    the context (``-1`` when the context has no piece), ``score`` and
    ``window_count`` (the windows the whole context needs). The windows are cut
    to their longest real row before the model reads them (a short context costs less).
    """
    windows = window_example(tokenizer, question, context, sequence_length=sequence_length, doc_stride=doc_stride,
                             max_question_length=max_question_length)
    count = tf.shape(windows["token_ids"])[0]
    length = tf.maximum(tf.reduce_max(tf.reduce_sum(windows["padding_mask"], axis=1)), 1)
    windows = {k: v[:max_windows, :length] for k, v in windows.items()}
    start_logits, end_logits = span_logits({k: windows[k] for k in MODEL_INPUTS})
    byte_start, byte_end, score = best_span(start_logits, end_logits, windows["piece_starts"], windows["piece_ends"],
                                            max_answer_length)
    found = byte_start >= 0
    return {"byte_start": tf.where(found, byte_start, -1), "byte_end": tf.where(found, byte_end, -1),
            "score": tf.where(found, score, 0.0), "window_count": count}


def read_answers(span_logits, tokenizer, questions, contexts, **settings):
    """:func:`read_one` for each row of string tensors ``(batch,)``: a dict of ``(batch,)`` tensors
    (``window_count`` becomes ``window_counts``)."""
    out = tf.map_fn(
        lambda pair: read_one(span_logits, tokenizer, pair[0], pair[1], **settings), (questions, contexts),
        fn_output_signature={"byte_start": tf.int32, "byte_end": tf.int32, "score": tf.float32, "window_count": tf.int32},
    )
    return {**out, "window_counts": out.pop("window_count")}


# Per-row status of an answer (the serving output ``status``); the rows marked blank get answer "", offsets -1.
QA_STATUSES = {
    "ok": "answered",
    "empty": "the question or the context is empty",
    "invalid_utf8": "the question or the context is not valid UTF-8",
    "too_long": "the context is longer than the model reads (max_windows windows of doc_stride pieces); split it",
    "other_script": "the question is in another script than the context: the answer is a guess",
    "truncated": "the question is longer than the model reads: it was cut",
}
QA_BLANK_STATUSES = ("empty", "invalid_utf8", "too_long")
_LATIN_END = 0x024F  # the end of Latin Extended-B


def _latin_share(texts):
    """Share of each text's letters that are Latin (letters: code points that are not ASCII punctuation, digits,
    spaces or general punctuation); 1.0 for a text without letters."""
    points = tf.strings.unicode_decode(texts, "UTF-8", errors="replace")
    ascii_letter = ((points >= 65) & (points <= 90)) | ((points >= 97) & (points <= 122))
    letter = ascii_letter | ((points >= 0xC0) & ~((points >= 0x2000) & (points <= 0x206F))
                             & ~((points >= 0x3000) & (points <= 0x303F)) & ~((points >= 0xFF00) & (points <= 0xFF0F)))
    latin = ascii_letter | ((points >= 0xC0) & (points <= _LATIN_END))
    letters = tf.reduce_sum(tf.cast(letter, tf.float32), axis=1)
    return tf.where(letters > 0, tf.reduce_sum(tf.cast(latin & letter, tf.float32), axis=1) / tf.maximum(letters, 1.0), 1.0)


def _valid_utf8(texts):
    return tf.equal(tf.strings.unicode_transcode(texts, "UTF-8", "UTF-8", errors="replace", replacement_char=0xFFFD),
                    texts)


def question_status(tokenizer, questions, contexts, max_question_length, window_counts, max_windows, valid_utf8):
    """The status of each row (:data:`QA_STATUSES`), first match wins: invalid UTF-8, empty, too long,
    other script, truncated question, ok. ``questions`` / ``contexts`` are the rows as read (invalid UTF-8
    ones already replaced by empty strings), ``valid_utf8`` says which rows were valid."""

    def blank(texts):
        return tf.equal(tf.strings.length(tf.strings.strip(texts)), 0)

    question_pieces = tokenizer.tokenize(questions).row_lengths()
    return _pick([
        ("invalid_utf8", ~valid_utf8),
        ("empty", blank(questions) | blank(contexts)),
        ("too_long", window_counts > max_windows),
        ("other_script", (_latin_share(questions) < 0.5) & (_latin_share(contexts) >= 0.5)),
        ("truncated", question_pieces > max_question_length),
    ])


def answer_rows(span_logits, tokenizer, questions, contexts, **settings):
    """:func:`read_answers` plus what a client reads: ``answer`` (str), ``score``, ``start`` / ``end``
    character offsets ``[start, end)`` in the context, ``status`` (:data:`QA_STATUSES`), all ``(batch,)``.

    Rows with a blank status (:data:`QA_BLANK_STATUSES`) get answer ``""``, score 0 and offsets -1; an
    invalid UTF-8 row is read as empty strings, so no kernel sees it.
    """
    ok = _valid_utf8(questions) & _valid_utf8(contexts)  # checked once, here
    clean_questions, clean_contexts = tf.where(ok, questions, ""), tf.where(ok, contexts, "")
    read = read_answers(span_logits, tokenizer, clean_questions, clean_contexts, **settings)
    status = question_status(tokenizer, clean_questions, clean_contexts, settings.get("max_question_length", 32),
                             read["window_counts"], settings.get("max_windows", 16), ok)
    blank = tf.reduce_any(tf.stack([tf.equal(status, name) for name in QA_BLANK_STATUSES]), axis=0)
    blank = blank | (read["byte_start"] < 0)
    byte_start, byte_end = tf.maximum(read["byte_start"], 0), tf.maximum(read["byte_end"], 0)
    answer = tf.strings.substr(clean_contexts, byte_start, tf.maximum(byte_end - byte_start, 0))
    start = tf.strings.length(tf.strings.substr(clean_contexts, tf.zeros_like(byte_start), byte_start), unit="UTF8_CHAR")
    end = start + tf.strings.length(answer, unit="UTF8_CHAR")
    return {
        "answer": tf.where(blank, "", answer),
        "score": tf.where(blank, 0.0, read["score"]),
        "start": tf.where(blank, -1, start),
        "end": tf.where(blank, -1, end),
        "status": status,
    }


def _python_latin_share(text):
    letters = latin = 0
    for ch in text:
        cp = ord(ch)
        ascii_letter = 65 <= cp <= 90 or 97 <= cp <= 122
        letter = ascii_letter or (cp >= 0xC0 and not (0x2000 <= cp <= 0x206F) and not (0x3000 <= cp <= 0x303F)
                                  and not (0xFF00 <= cp <= 0xFF0F))
        letters += letter
        latin += letter and (ascii_letter or 0xC0 <= cp <= _LATIN_END)
    return latin / letters if letters else 1.0


def python_status(question, context, question_pieces, window_count, max_question_length, max_windows):
    """:func:`question_status` in Python, for the TFLite reader (its string checks have no TFLite kernel);
    ``question`` / ``context`` are str, or None where the bytes were not UTF-8."""
    if question is None or context is None:
        return "invalid_utf8"
    if not question.strip() or not context.strip():
        return "empty"
    if window_count > max_windows:
        return "too_long"
    if _python_latin_share(question) < 0.5 <= _python_latin_share(context):
        return "other_script"
    return "truncated" if question_pieces > max_question_length else "ok"


class TFLiteReader:
    """The release's ``answer_spans`` TFLite model run by the LiteRT interpreter, with the rest of
    :func:`answer_rows` (status, answer text, character offsets) in Python.

    Args:
        model: path to the ``.tflite`` file.
        settings: the reader settings of the release (``max_question_length``, ``max_windows``).

    Call: ``reader(questions, contexts)`` (lists of str) -> dict of lists as :func:`answer_rows`.
    """

    def __init__(self, model, max_question_length=32, max_windows=16, num_threads=None, **unused):
        from ai_edge_litert.interpreter import InterpreterWithCustomOps
        from tensorflow_text.core.pybinds import tflite_registrar

        self.max_question_length, self.max_windows = max_question_length, max_windows
        self.interpreter = InterpreterWithCustomOps(
            model_path=str(model), custom_op_registerers=tflite_registrar.SELECT_TFTEXT_OPS, num_threads=num_threads)
        self.runner = self.interpreter.get_signature_runner("answer_spans")

    def __call__(self, questions, contexts):
        out = {"answer": [], "score": [], "start": [], "end": [], "status": []}
        for question, context in zip(questions, contexts):  # one row at a time: the interpreter's tensors resize
            q, c = (t if isinstance(t, str) else _utf8(t) for t in (question, context))
            raw = [b"" if t is None else t.encode("utf-8") for t in (q, c)]
            spans = self.runner(question=np.array([raw[0]], dtype=object), context=np.array([raw[1]], dtype=object))
            status = python_status(q, c, int(spans["question_pieces"][0]), int(spans["window_count"][0]),
                                   self.max_question_length, self.max_windows)
            start, end = int(spans["byte_start"][0]), int(spans["byte_end"][0])
            if status in QA_BLANK_STATUSES or start < 0:
                answer, score, first, last = "", 0.0, -1, -1
            else:
                answer = raw[1][start:end].decode("utf-8", errors="replace")
                first = len(raw[1][:start].decode("utf-8", errors="replace"))
                score, last = float(spans["score"][0]), first + len(answer)
            for key, value in zip(("answer", "score", "start", "end", "status"), (answer, score, first, last, status)):
                out[key].append(value)
        return out


def _utf8(data):
    try:
        return bytes(data).decode("utf-8")
    except UnicodeDecodeError:
        return None


def make_qa_dataset(tokenizer, questions, contexts, answers, answer_starts, *, batch_size=32, training=False, seed=0,
                    sequence_length=192, doc_stride=64, max_question_length=32, buckets=(64, 96, 128, 160)):
    """Training / validation batches of windows: ``({token_ids, segment_ids, padding_mask}, {"start", "end"})``.

    Each SQuAD-format example (``answer_starts``: character offsets; a negative
    one, an unanswerable question, is left out) becomes its windows
    (:func:`window_example`), cut to their real pieces and batched by length:
    a batch is padded to the next of ``buckets`` (or ``sequence_length``)
    only. ``training`` shuffles the windows (seeded, a new order each pass)
    and drops each bucket's last partial batch.
    """
    settings = dict(sequence_length=sequence_length, doc_stride=doc_stride, max_question_length=max_question_length)

    def windows(question, context, answer, start):
        byte_start = char_to_byte(context, start)
        byte_end = char_to_byte(context, start + tf.strings.length(answer, unit="UTF8_CHAR"))
        return tf.data.Dataset.from_tensor_slices(
            window_example(tokenizer, question, context, byte_start, byte_end, **settings))

    def trimmed(w):
        n = tf.reduce_sum(w["padding_mask"])
        return {k: w[k][:n] for k in MODEL_INPUTS}, {"start": w["start_positions"], "end": w["end_positions"]}

    ds = tf.data.Dataset.from_tensor_slices((list(questions), list(contexts), list(answers), list(answer_starts)))
    ds = ds.filter(lambda q, c, a, s: s >= 0).flat_map(windows)
    if training:
        ds = ds.shuffle(20_000, seed=seed, reshuffle_each_iteration=True)
    ds = ds.map(trimmed, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    boundaries = [b + 1 for b in buckets if b < sequence_length] + [sequence_length + 1]
    ds = ds.bucket_by_sequence_length(
        lambda features, labels: tf.shape(features["token_ids"])[0], boundaries, [batch_size] * (len(boundaries) + 1),
        pad_to_bucket_boundary=True, drop_remainder=training,
    )
    return ds.prefetch(tf.data.AUTOTUNE)
