"""BERT's WordPiece in the graph (pipelines/bert_tokenizer.py) against the reference tokenization of MiniLM's vocabulary.

The reference is the package's own ``tokenizer.json`` (Hugging Face
``BertTokenizer`` settings) read by the ``tokenizers`` library. One known
difference, pinned here: tensorflow-text's ``FastBertNormalizer`` applies
Unicode compatibility normalization (NFKC) before lower-casing, Hugging Face's
BERT normalizer does not, so characters such as "…" become "..." (three
ids) here and stay one id there. On every text, ours equals the reference
tokenization of the NFKC-normalized text; on the corpora's texts, almost
all are equal as they are.
"""

import unicodedata

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from layers.bert import minilm_files
from pipelines.bert_tokenizer import BertTokenizer

SENTENCES = [
    "Open the file.",
    "Could not connect to the server!",
    "GNU Wget is a free software package for retrieving files using HTTP, HTTPS and FTP.",
    "Café naïve résumé: x86_64, C++ and e-mail (UTF-8)",
    "Examine Certificate…",
]


@pytest.fixture(scope="module")
def tokenizers():
    from tokenizers import Tokenizer

    folder = minilm_files()
    reference = Tokenizer.from_file(str(folder / "tokenizer.json"))
    reference.no_padding()
    reference.no_truncation()
    return BertTokenizer.from_vocab_file(folder / "vocab.txt"), reference


@pytest.fixture(scope="module")
def corpus_texts(small_corpora):
    texts = []
    for name, field in (("tfsuite_summarization", "document"), ("tfsuite_translation/en_de", "en")):
        data_dir = small_corpora(name.split("/")[0])
        for split in ("train", "validation", "test"):
            texts += [ex[field].decode("utf-8") for ex in tfds.as_numpy(tfds.load(name, split=split, data_dir=data_dir))]
    assert len(texts) >= 100
    return texts


def _reference_ids(reference, text):
    return reference.encode(text, add_special_tokens=False).ids


def test_wordpiece_ids_equal_the_reference_on_corpus_texts(tokenizers, corpus_texts):
    ours, reference = tokenizers
    texts = SENTENCES + corpus_texts
    ids = ours.tokenize(tf.constant(texts)).to_list()
    same = [got == _reference_ids(reference, text) for got, text in zip(ids, texts)]
    assert np.mean(same) >= 0.97, [t for t, s in zip(texts, same) if not s][:5]
    for got, text in zip(ids, texts):  # every difference is the compatibility normalization
        assert got == _reference_ids(reference, unicodedata.normalize("NFKC", text)), text
    assert not same[SENTENCES.index("Examine Certificate…")]  # the pinned difference


def test_pack_builds_cls_a_sep_b_sep_with_segments_and_padding(tokenizers):
    ours, reference = tokenizers
    packed = ours.pack(["Open the file."], ["Could not connect to the server!"], sequence_length=20)
    expected = reference.encode("Open the file.", "Could not connect to the server!")
    n = len(expected.ids)
    assert packed["token_ids"].numpy()[0, :n].tolist() == expected.ids
    assert packed["segment_ids"].numpy()[0, :n].tolist() == expected.type_ids
    assert packed["padding_mask"].numpy()[0].tolist() == [1] * n + [0] * (20 - n)
    assert packed["token_ids"].numpy()[0, n:].tolist() == [ours.pad_id] * (20 - n)


def test_pack_trims_long_pairs_round_robin_to_the_length(tokenizers):
    ours, _ = tokenizers
    packed = ours.pack([" ".join(["word"] * 50)], ["short question"], sequence_length=16)
    row = packed["token_ids"].numpy()[0].tolist()
    assert len(row) == 16 and row[0] == ours.cls_id and row.count(ours.sep_id) == 2 and row[-1] == ours.sep_id
    assert sum(packed["segment_ids"].numpy()[0]) == 3  # "short question [SEP]" kept whole


def test_offsets_point_at_each_piece_in_the_raw_text(tokenizers):
    ours, reference = tokenizers
    texts = ["Café naïve: Open the FILE now", "What does the x86_64 package contain?"]
    ids, starts, ends = ours.tokenize_with_offsets(tf.constant(texts))
    assert ids.to_list() == ours.tokenize(tf.constant(texts)).to_list()
    for text, row_starts, row_ends in zip(texts, starts.to_list(), ends.to_list()):
        raw = text.encode("utf-8")
        expected = [text[a:b] for a, b in reference.encode(text, add_special_tokens=False).offsets]  # characters
        assert [raw[a:b].decode("utf-8") for a, b in zip(row_starts, row_ends)] == expected


def test_bad_inputs_get_clear_errors(tokenizers):
    ours, _ = tokenizers
    with pytest.raises(ValueError, match="must be strings"):
        ours.tokenize(tf.constant([1, 2]))
    with pytest.raises(ValueError, match="batch of strings"):
        ours.tokenize(tf.constant([["a"]]))
    with pytest.raises(ValueError, match="at least 3"):
        ours.pack(["a"], sequence_length=2)
    with pytest.raises(ValueError, match="lacks"):
        BertTokenizer(["a", "b"])


def test_a_vocabulary_of_the_used_tokens_tokenizes_those_texts_alike(tokenizers, corpus_texts):
    from pipelines.bert_tokenizer import used_token_ids

    full = tokenizers[0]
    keep = used_token_ids(full, corpus_texts[:60])
    small = BertTokenizer([full.vocab[i] for i in keep])
    assert len(keep) < full.vocab_size // 2
    for text in corpus_texts[:60]:  # the same pieces, under their new ids
        assert [keep[i] for i in small.tokenize([text])[0].numpy()] == full.tokenize([text])[0].numpy().tolist()
    outside = "Photosynthesis converts sunlight"  # words of no kept text still tokenize, in shorter pieces
    pieces = small.tokenize([outside])[0].numpy()
    assert small.unk_id not in pieces and small.detokenize(pieces[None])[0].numpy().decode() == outside.lower()
