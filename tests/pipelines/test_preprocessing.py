"""pipelines/preprocessing.py: spacing rules (Python and graph), the status of each row, the boundary check."""

import numpy as np
import pytest
import tensorflow as tf

from pipelines.preprocessing import (
    PromptPreprocessor,
    TextPreprocessor,
    check_string_batch,
    restore_spacing,
    restore_spacing_graph,
    status_of,
)
from pipelines.wordpiece import WordpieceTokenizer, learn_wordpiece_vocab

TEXTS = ["Open the file.", "Close the window", "Delete all selected messages", "Show hidden files and folders"]


@pytest.fixture(scope="module")
def tokenizer():
    return WordpieceTokenizer(learn_wordpiece_vocab(TEXTS, vocab_size=80))


@pytest.mark.parametrize(
    "language, detokenized, expected",
    [
        ("de", "Usenet - News - Nachricht .", "Usenet-News-Nachricht."),
        ("de", "Programmier - und Markup - Sprachen ( z . B . C ) : 1 . 5 , fertig !", "Programmier- und Markup-Sprachen (z. B. C): 1.5, fertig!"),
        ("de", "Das Paket » foo « , Version 10 , 000 .", "Das Paket »foo«, Version 10,000."),
        ("ja", "フ ァ イ ル を 開 く 。", "ファイルを開く。"),
    ],
)
def test_restore_spacing_python_and_graph_agree(language, detokenized, expected):
    assert restore_spacing([detokenized], language) == [expected]
    graph = restore_spacing_graph(tf.constant([detokenized]), language).numpy()[0].decode()
    assert graph == expected


def test_status_in_the_graph_equals_the_python_rule_of_the_tflite_runner(tokenizer):
    pre = TextPreprocessor(tokenizer, tokenizer, source_length=16)  # room for 14 pieces ("open the file": 11)
    texts = ["open the file", "", "  \t", "☃ ☃ ☃ ☃ ☃ file", "open the file " * 3, "delete ☃"]
    _, status = pre.encoder_inputs(tf.constant(texts))
    _, counts = pre.tflite_encoder_inputs(tf.constant(texts))
    python = [status_of(t, int(n), int(u), pre.room) for t, n, u in
              zip(texts, counts["input_tokens"].numpy(), counts["unknown_tokens"].numpy())]  # fmt: skip
    assert [s.decode() for s in status.numpy()] == python == [
        "ok", "empty", "empty", "out_of_vocabulary", "truncated", "ok",
    ]
    _, invalid = pre.encoder_inputs(tf.constant([b"\xc3\x28 broken", "fine".encode()]))
    assert [s.decode() for s in invalid.numpy()] == ["invalid_utf8", "ok"]


def test_boundary_check_names_the_expected_shape():
    check = tf.function(lambda x: check_string_batch(x, "sentences"), input_signature=[tf.TensorSpec(None, tf.string)])
    np.testing.assert_array_equal(check(tf.constant(["a", "b"])).numpy(), [b"a", b"b"])
    for bad in (tf.constant("a"), tf.constant([["a"]])):
        with pytest.raises(tf.errors.InvalidArgumentError, match=r"sentences must be a 1-D batch of strings, shape \(batch,\)"):
            check(bad)
    with pytest.raises(TypeError, match="sentences must be strings, got dtype int32"):
        check_string_batch(tf.constant([1]), "sentences")


def test_prompt_preprocessor_right_pads_start_plus_prompt(tokenizer):
    pre = PromptPreprocessor(tokenizer, prompt_length=12)
    prompt, lengths, status = pre.prompt_inputs(tf.constant(["open the file", "close the window and more words"]))
    ids = tokenizer.tokenize(tf.constant(["open the file"])).to_list()[0]
    assert prompt.shape == (2, 12) and list(lengths.numpy()) == [len(ids) + 1, 12]
    assert list(prompt.numpy()[0, : len(ids) + 1]) == [tokenizer.start_id, *ids]
    assert [s.decode() for s in status.numpy()] == ["ok", "truncated"]
