"""Extractive QA windows (pipelines/qa_windows.py): overlapping windows, span labels, and the span back to bytes."""

import numpy as np
import pytest
import tensorflow as tf

from layers.bert import minilm_files
from pipelines.bert_tokenizer import BertTokenizer
from pipelines.qa_windows import best_span, char_to_byte, window_example

FILLER = " ".join(f"Sentence number {i} says nothing about the answer." for i in range(30))
CONTEXT = f"Café résumé. {FILLER} The frobnicator package contains development files for libfrob. {FILLER}"
QUESTION = "What does the frobnicator package contain?"
ANSWER = "development files for libfrob"


@pytest.fixture(scope="module")
def tokenizer():
    return BertTokenizer.from_vocab_file(minilm_files() / "vocab.txt")


def _answer_bytes(context, answer):
    start = context.index(answer)
    begin = int(char_to_byte(tf.constant(context), start))
    return begin, begin + len(answer.encode("utf-8"))


def test_windows_overlap_cover_the_context_and_label_the_answer_where_it_is_whole(tokenizer):
    begin, end = _answer_bytes(CONTEXT, ANSWER)
    assert begin == CONTEXT.index(ANSWER) + 3  # three "é": two bytes each
    out = {k: v.numpy() for k, v in window_example(
        tokenizer, tf.constant(QUESTION), tf.constant(CONTEXT), begin, end,
        sequence_length=64, doc_stride=24, max_question_length=16).items()}
    windows = out["token_ids"].shape[0]
    pieces = len(tokenizer.tokenize(tf.constant([CONTEXT])).to_list()[0])
    question = len(tokenizer.tokenize(tf.constant([QUESTION])).to_list()[0])
    room = 64 - 3 - question
    assert windows == int(np.ceil(max(pieces - room, 0) / 24)) + 1 and windows > 3
    raw = CONTEXT.encode("utf-8")
    covered = set()
    for w in range(windows):
        row, starts, ends = out["token_ids"][w], out["piece_starts"][w], out["piece_ends"][w]
        assert row[0] == tokenizer.cls_id and list(row).count(tokenizer.sep_id) == 2
        context = starts >= 0
        assert (out["segment_ids"][w][context] == 1).all() and (out["padding_mask"][w][context] == 1).all()
        covered |= set(starts[context].tolist())
        # Each context position's bytes are the piece the tokenizer made there.
        for position in np.flatnonzero(context)[:5]:
            piece = tokenizer.vocab[row[position]].removeprefix("##")
            assert raw[starts[position]:ends[position]].decode("utf-8").lower().startswith(piece[:1]) or piece == "[UNK]"
        s, e = out["start_positions"][w], out["end_positions"][w]
        if s:
            assert raw[starts[s]:ends[e]].decode("utf-8") == ANSWER
    assert len(covered) == pieces  # every piece is in some window
    labelled = np.flatnonzero(out["start_positions"])
    assert 1 <= len(labelled) < windows  # overlapping windows: the answer in one or more, not all


def test_best_span_returns_the_answer_bytes_from_the_right_window(tokenizer):
    begin, end = _answer_bytes(CONTEXT, ANSWER)
    out = window_example(tokenizer, tf.constant(QUESTION), tf.constant(CONTEXT), begin, end,
                         sequence_length=64, doc_stride=24, max_question_length=16)
    w = int(np.flatnonzero(out["start_positions"].numpy())[0])
    start_logits = np.zeros(out["token_ids"].shape, "float32")
    end_logits = np.zeros_like(start_logits)
    start_logits[w, out["start_positions"][w]] = 5.0
    end_logits[w, out["end_positions"][w]] = 5.0
    start_logits[:, 0] = end_logits[:, 0] = 100.0  # [CLS] is never an answer
    byte_start, byte_end, score = best_span(start_logits, end_logits, out["piece_starts"], out["piece_ends"])
    assert CONTEXT.encode("utf-8")[int(byte_start):int(byte_end)].decode("utf-8") == ANSWER and float(score) == 10.0


def test_a_short_context_is_one_window_and_a_missing_answer_labels_cls(tokenizer):
    out = window_example(tokenizer, tf.constant("Who?"), tf.constant("Alice went home."), 100, 104)
    assert out["token_ids"].shape == (1, 192) and out["start_positions"].numpy().tolist() == [0]


def test_bad_window_settings(tokenizer):
    with pytest.raises(ValueError, match="doc_stride"):
        window_example(tokenizer, tf.constant("q"), tf.constant("c"), sequence_length=40, max_question_length=32)
    with pytest.raises(ValueError, match="doc_stride"):
        window_example(tokenizer, tf.constant("q"), tf.constant("c"), sequence_length=64, doc_stride=100)
