"""BERT / RoBERTa pre-training batches (pipelines/next_sentence.py): NSP pairs, packing, static and dynamic masks."""

import numpy as np
import pytest

from layers.bert import minilm_files
from pipelines.bert_tokenizer import BertTokenizer
from pipelines.next_sentence import IS_NEXT, IS_RANDOM, make_pretraining_dataset, next_sentence_pairs, split_sentences

TOPICS = ["audio", "image", "network", "database", "font", "printer", "calendar", "email"]
DOCUMENTS = [
    f"Package {name}{i} is a tool for {topic}. It reads {topic} files of kind {i} quickly. "
    f"It also writes {topic} reports for {name}{i}. The {name}{i} manual explains every option."
    for i in range(5) for name, topic in zip(["alpha", "beta", "gamma", "delta", "eps", "zeta", "eta", "theta"], TOPICS)
] + ["One sentence only.", ""]


@pytest.fixture(scope="module")
def tokenizer():
    return BertTokenizer.from_vocab_file(minilm_files() / "vocab.txt")


def test_split_sentences():
    assert split_sentences("It works.  Really?\nYes! done") == ["It works.", "Really?", "Yes!", "done"]
    assert split_sentences("   ") == []


def test_pairs_are_half_true_next_sentences_and_half_from_other_documents():
    firsts, seconds, labels = next_sentence_pairs(DOCUMENTS, seed=3)
    sentences = [split_sentences(d) for d in DOCUMENTS]
    follows = {(s[k], s[k + 1]) for s in sentences for k in range(len(s) - 1)}
    home = {sentence: i for i, s in enumerate(sentences) for sentence in s}
    assert len(home) == sum(len(s) for s in sentences)  # every sentence names its document
    assert len(firsts) == 40 * 3 and abs(np.mean(labels == IS_RANDOM) - 0.5) < 0.15
    for first, second, label in zip(firsts, seconds, labels):
        if label == IS_NEXT:
            assert (first, second) in follows
        else:
            assert home[first] != home[second], (first, second)
    again = next_sentence_pairs(DOCUMENTS, seed=3)
    assert again[1] == seconds and next_sentence_pairs(DOCUMENTS, seed=4)[1] != seconds
    with pytest.raises(ValueError, match="at least two documents"):
        next_sentence_pairs(["One. Two.", "Just one."])


def _masked_ids(ds):
    return [features["token_ids"].numpy() for features, _, _ in ds]


def test_batches_pack_the_pair_with_segments_and_mask_only_real_tokens(tokenizer):
    pairs = next_sentence_pairs(DOCUMENTS, seed=0)
    ds = make_pretraining_dataset(pairs, tokenizer, sequence_length=24, batch_size=8, shuffle=False, deterministic=True)
    features, labels, weights = next(iter(ds))
    assert set(features) == {"token_ids", "segment_ids", "padding_mask"} and set(labels) == {"mlm", "nsp"}
    original, mask = labels["mlm"].numpy(), features["padding_mask"].numpy()
    assert (original[:, 0] == tokenizer.cls_id).all() and (np.sum(original == tokenizer.sep_id, axis=1) == 2).all()
    segments = features["segment_ids"].numpy()
    assert segments[0, 0] == 0 and segments[0].max() == 1 and (segments[mask == 0] == 0).all()
    selected = weights["mlm"].numpy() > 0
    assert selected.any() and not selected[np.isin(original, [tokenizer.pad_id, tokenizer.cls_id, tokenizer.sep_id])].any()
    changed = features["token_ids"].numpy() != original
    assert not changed[~selected].any()  # only selected positions are altered
    np.testing.assert_array_equal(labels["nsp"].numpy(), pairs[2][:8])


def test_static_masks_repeat_across_epochs_dynamic_masks_do_not(tokenizer):
    pairs = next_sentence_pairs(DOCUMENTS, seed=0)
    static = make_pretraining_dataset(pairs, tokenizer, sequence_length=24, batch_size=8, shuffle=False, deterministic=True)
    first, second = _masked_ids(static), _masked_ids(static)
    assert all((a == b).all() for a, b in zip(first, second))
    dynamic = make_pretraining_dataset(pairs, tokenizer, sequence_length=24, batch_size=8, shuffle=False,
                                       masking="dynamic", nsp=False, deterministic=True)
    first, second = _masked_ids(dynamic), _masked_ids(dynamic)
    assert any((a != b).any() for a, b in zip(first, second))
    features, labels, weights = next(iter(dynamic))
    assert set(labels) == {"mlm"} and features["segment_ids"].numpy().max() == 0  # one segment, no NSP


def test_max_predictions_gathers_the_selected_positions_in_order(tokenizer):
    pairs = next_sentence_pairs(DOCUMENTS, seed=0)
    kwargs = dict(sequence_length=24, batch_size=8, shuffle=False, deterministic=True)
    (full, labels, weights), = make_pretraining_dataset(pairs, tokenizer, **kwargs).take(1)
    for cap in (2, 5, 40):  # fewer, about as many and more slots than selected positions
        (features, got, got_weights), = make_pretraining_dataset(pairs, tokenizer, max_predictions=cap, **kwargs).take(1)
        np.testing.assert_array_equal(features["token_ids"], full["token_ids"])  # the same masked input
        positions = features["mask_positions"].numpy()
        assert positions.shape == (8, cap) and got["mlm"].shape == (8, cap) and got_weights["mlm"].shape == (8, cap)
        for row in range(8):
            selected = np.flatnonzero(weights["mlm"].numpy()[row] > 0)
            kept = min(len(selected), cap)
            np.testing.assert_array_equal(positions[row, :kept], selected[:kept])
            np.testing.assert_array_equal(got["mlm"].numpy()[row, :kept], labels["mlm"].numpy()[row, selected[:kept]])
            assert (got_weights["mlm"].numpy()[row] > 0).sum() == kept
    with pytest.raises(ValueError, match="max_predictions"):
        make_pretraining_dataset(pairs, tokenizer, max_predictions=0)


def test_bad_arguments(tokenizer):
    pairs = next_sentence_pairs(DOCUMENTS, seed=0)
    with pytest.raises(ValueError, match="masking must be one of"):
        make_pretraining_dataset(pairs, tokenizer, masking="random")
    with pytest.raises(ValueError, match="same, non-zero length"):
        make_pretraining_dataset(([], [], []), tokenizer)
    with pytest.raises(ValueError, match="random_share"):
        next_sentence_pairs(DOCUMENTS, random_share=1.0)
