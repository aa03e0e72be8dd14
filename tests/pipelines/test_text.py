"""pipelines.text: ragged id stages and the seq2seq / LM / token datasets (bucketing, padding, shuffling, determinism)."""

import unicodedata

import numpy as np
import pytest
import tensorflow as tf

from pipelines import text
from pipelines.corpora import sources
from pipelines.wordpiece import RESERVED_TOKENS, WordpieceTokenizer

WORDS = ["open", "the", "file", ".", "close", "it", "!", "a", "new", "window"]
PAIRS = {
    "source": ["Open the file.", "Close it!", "the the the the the the the", "Open a new window.", "open", "close the window"],
    "target": ["open it.", "close!", "file", "a new file . . .", "open the file", "close"],
}


@pytest.fixture(scope="module")
def tok():
    return WordpieceTokenizer(list(RESERVED_TOKENS) + WORDS)


def pairs_dataset():
    return tf.data.Dataset.from_tensor_slices(PAIRS)


def rows(tensor):
    """Rows of a padded id batch with trailing pads removed, as tuples."""
    return [tuple(int(v) for v in np.trim_zeros(row, "b")) for row in tensor.numpy()]


def all_batches(ds):
    return [(features, targets) for features, targets in ds]


# -- ragged stages ------------------------------------------------------------------
def test_drop_ids_matches_numpy():
    rng = np.random.default_rng(0)
    dense = rng.integers(0, 6, size=(7, 9)).astype(np.int32)
    expected = [[v for v in row if v not in (0, 2, 3)] for row in dense.tolist()]
    assert text.drop_ids(tf.constant(dense), [0, 2, 3]).to_list() == expected
    ragged = tf.ragged.constant([[2, 5, 0], [], [3, 3], [7]])
    assert text.drop_ids(ragged, [0, 2, 3]).to_list() == [[5], [], [], [7]]


def test_truncate_and_add_start_end():
    ids = tf.ragged.constant([[5, 6, 7], [8]], dtype=tf.int32)
    assert text.truncate(ids, 2).to_list() == [[5, 6], [8]]
    assert text.add_start_end(ids, 2, 3).to_list() == [[2, 5, 6, 7, 3], [2, 8, 3]]
    assert text.add_start_end(ids, start_id=2).to_list() == [[2, 5, 6, 7], [2, 8]]
    assert text.add_start_end(ids, end_id=3).to_list() == [[5, 6, 7, 3], [8, 3]]


def test_ragged_stages_reject_bad_inputs():
    with pytest.raises(ValueError, match=r"drop_ids expected ids of rank 2 \(batch, length\), got shape \(3,\)"):
        text.drop_ids(tf.constant([1, 2, 3]), [0])
    with pytest.raises(ValueError, match="max_length must be a non-negative int, got -1"):
        text.truncate(tf.ragged.constant([[1]]), -1)


# -- seq2seq ----------------------------------------------------------------------------
def test_seq2seq_shift_padding_and_truncation(tok):
    ds = text.make_seq2seq_dataset(pairs_dataset(), "source", "target", tok, tok, batch_size=6,
                                   max_source_length=5, max_target_length=4, shuffle=False)  # fmt: skip
    (features, targets), = all_batches(ds)
    assert set(features) == {"encoder_inputs", "encoder_padding_mask", "decoder_token_ids", "decoder_padding_mask"}
    assert features["encoder_inputs"].dtype == tf.int32 and targets.dtype == tf.int32
    assert features["decoder_padding_mask"].dtype == tf.bool
    source = [tok.tokenize(s).numpy().tolist()[:5] for s in PAIRS["source"]]
    target = [tok.tokenize(t).numpy().tolist()[:3] for t in PAIRS["target"]]
    assert rows(features["encoder_inputs"]) == [tuple(s) for s in source]
    assert rows(features["decoder_token_ids"]) == [tuple([tok.start_id] + t) for t in target]
    assert rows(targets) == [tuple(t + [tok.end_id]) for t in target]
    assert features["encoder_inputs"].shape == (6, 5) and targets.shape == (6, 4)
    np.testing.assert_array_equal(features["encoder_padding_mask"], features["encoder_inputs"].numpy() != 0)
    np.testing.assert_array_equal(features["decoder_padding_mask"], targets.numpy() != 0)


def test_seq2seq_every_pair_once_per_epoch_with_shuffle(tok):
    ds = text.make_seq2seq_dataset(pairs_dataset(), "source", "target", tok, tok, batch_size=4,
                                   max_source_length=8, max_target_length=8, shuffle=True, seed=3)  # fmt: skip
    expected = sorted(tuple(tok.tokenize(t).numpy().tolist() + [tok.end_id]) for t in PAIRS["target"])
    for _ in range(2):
        got = [row for _, targets in ds for row in rows(targets)]
        assert sorted(got) == expected


def test_seq2seq_is_reproducible_and_reshuffles_each_epoch(tok):
    def make(seed):
        return text.make_seq2seq_dataset(pairs_dataset(), "source", "target", tok, tok, batch_size=2,
                                         max_source_length=8, max_target_length=8, seed=seed, deterministic=True)  # fmt: skip

    def epoch(ds):
        return [row for _, targets in ds for row in rows(targets)]

    first = make(5)
    epoch1, epoch2 = epoch(first), epoch(first)
    again = make(5)
    assert epoch(again) == epoch1 and epoch(again) == epoch2  # same seed: same epochs, run after run
    assert epoch1 != epoch2  # a new order each epoch (6! orders: equal by chance with p = 1/720)
    assert first.options().deterministic is True
    assert type(first).__name__ == "_PrefetchDataset"


def test_seq2seq_buckets_group_lengths(tok):
    ds = text.make_seq2seq_dataset(pairs_dataset(), "source", "target", tok, tok, batch_size=6,
                                   max_source_length=8, max_target_length=8, shuffle=False, buckets=(3, 5))  # fmt: skip
    lengths_per_batch = []
    for features, targets in ds:
        src = features["encoder_padding_mask"].numpy().sum(axis=1)
        dec = features["decoder_padding_mask"].numpy().sum(axis=1)
        lengths = np.maximum(src, dec)
        bucket = np.digitize(lengths, [3.5, 5.5])
        assert len(set(bucket)) == 1, f"one batch mixes buckets: lengths {lengths}"
        assert features["encoder_inputs"].shape[1] == src.max()  # padded to its own longest
        lengths_per_batch.append(sorted(lengths.tolist()))
    # Lengths max(len(source), len(target) + 1) are 4, 3, 7, 7, 4, 3 here.
    assert sorted(lengths_per_batch) == [[3, 3], [4, 4], [7, 7]]


def test_seq2seq_cache_to_file(tok, tmp_path):
    ds = text.make_seq2seq_dataset(pairs_dataset(), "source", "target", tok, tok, batch_size=6, max_source_length=8,
                                   max_target_length=8, shuffle=False, cache=str(tmp_path / "pairs"))  # fmt: skip
    first = [rows(t) for _, t in ds]
    assert any(p.name.startswith("pairs") for p in tmp_path.iterdir())
    assert [rows(t) for _, t in ds] == first


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"source_key": "en"}, r"no field 'en'; its fields are \['source', 'target'\]"),
        ({"target_tokenizer": "de"}, "target_tokenizer must be a tokenizer with tokenize, pad_id"),
        ({"batch_size": 0}, "batch_size must be a positive int, got 0"),
        ({"buckets": (8, 4)}, "buckets must be increasing positive int lengths"),
        ({"max_target_length": 1}, "max_target_length must be an int >= 2, got 1"),
    ],
)
def test_seq2seq_rejects_bad_arguments(tok, kwargs, message):
    args = {"source_key": "source", "target_key": "target", "source_tokenizer": tok, "target_tokenizer": tok} | kwargs
    with pytest.raises(ValueError, match=message):
        text.make_seq2seq_dataset(pairs_dataset(), **args)


def test_seq2seq_rejects_non_dict_and_non_string_datasets(tok):
    with pytest.raises(ValueError, match="expected a dataset of dicts"):
        text.make_seq2seq_dataset(tf.data.Dataset.from_tensor_slices(["a"]), "source", "target", tok, tok)
    numbers = tf.data.Dataset.from_tensor_slices({"source": ["a"], "target": [1]})
    with pytest.raises(ValueError, match="field 'target' must hold scalar strings"):
        text.make_seq2seq_dataset(numbers, "source", "target", tok, tok)


# -- language model and token batches ------------------------------------------------
def test_lm_dataset_shifts_by_one(tok):
    ds = text.make_lm_dataset(pairs_dataset(), "source", tok, batch_size=6, max_length=4, shuffle=False)
    (features, targets), = list(ds)
    ids = [tok.tokenize(s).numpy().tolist()[:3] for s in PAIRS["source"]]
    assert rows(features["token_ids"]) == [tuple([tok.start_id] + i) for i in ids]
    assert rows(targets) == [tuple(i + [tok.end_id]) for i in ids]
    np.testing.assert_array_equal(features["padding_mask"], features["token_ids"].numpy() != 0)


def test_prompt_completion_dataset_scores_the_completion_only_and_drops_long_pairs(tok):
    ds = text.make_prompt_completion_dataset(pairs_dataset(), "source", "target", tok, batch_size=6, max_length=8,
                                             shuffle=False, deterministic=True)
    (features, targets), = list(ds)
    kept = [(s, t) for s, t in zip(PAIRS["source"], PAIRS["target"])
            if 1 + len(tok.tokenize(s).numpy()) + len(tok.tokenize(t).numpy()) <= 8]
    assert 0 < len(kept) < len(PAIRS["source"])  # some pairs are too long for 8 tokens: left out, not cut
    for row, target, (source, completion) in zip(rows(features["token_ids"]), targets.numpy(), kept):
        p, c = tok.tokenize(source).numpy().tolist(), tok.tokenize(completion).numpy().tolist()
        assert row == tuple([tok.start_id] + p + c)
        assert target[: len(p) + len(c) + 1].tolist() == [tok.pad_id] * len(p) + c + [tok.end_id]


def test_token_dataset_wraps_and_limits_length(tok):
    ds = text.make_token_dataset(pairs_dataset(), "source", tok, batch_size=6, max_length=5, shuffle=False)
    (batch,) = list(ds)
    assert batch.dtype == tf.int32 and batch.shape[1] <= 5
    ids = [tok.tokenize(s).numpy().tolist()[:3] for s in PAIRS["source"]]
    assert rows(batch) == [tuple([tok.start_id] + i + [tok.end_id]) for i in ids]
    with pytest.raises(ValueError, match="max_length must be an int >= 3, got 2"):
        text.make_token_dataset(pairs_dataset(), "source", tok, max_length=2)


# -- real corpora ------------------------------------------------------------------------
def load(name, split):
    tfds = pytest.importorskip("tensorflow_datasets")
    if not (sources.data_dir() / name.split("/")[0]).is_dir():
        pytest.skip(f"{name} is not built under {sources.data_dir()}: run `tfsuite data build {name.split('/')[0]}`")
    return tfds.load(name, split=split, data_dir=str(sources.data_dir()))


def test_translation_en_ja_batches_decode_back_to_the_pairs():
    from pipelines.sentencepiece import SentencepieceTokenizer, train_sentencepiece

    train = load("tfsuite_translation/en_ja", "train[:300]")
    en = SentencepieceTokenizer(train_sentencepiece(train.map(lambda ex: ex["en"]), vocab_size=1500, character_coverage=1.0))
    ja = SentencepieceTokenizer(train_sentencepiece(train.map(lambda ex: ex["ja"]), vocab_size=2000, character_coverage=0.995))
    pairs = load("tfsuite_translation/en_ja", "validation[:200]")
    ds = text.make_seq2seq_dataset(pairs, "en", "ja", en, ja, batch_size=32, max_source_length=48,
                                   max_target_length=48, seed=0, deterministic=True, buckets=(16, 32))  # fmt: skip
    expected = {}
    for example in pairs.as_numpy_iterator():
        expected[" ".join(unicodedata.normalize("NFKC", example["en"].decode()).split())] = example["ja"].decode()
    seen = checked = 0
    for features, targets in ds:
        sources_text = en.detokenize(features["encoder_inputs"]).numpy()
        decoder_text = ja.detokenize(features["decoder_token_ids"]).numpy()
        target_text = ja.detokenize(targets).numpy()
        lengths = features["decoder_padding_mask"].numpy().sum(axis=1)
        for src, dec, tgt, length in zip(sources_text, decoder_text, target_text, lengths):
            seen += 1
            assert dec == tgt  # [START] + y and y + [END] carry the same text
            if length < 48 and src.decode() in expected:  # not truncated
                assert tgt.decode() == " ".join(unicodedata.normalize("NFKC", expected[src.decode()]).split())
                checked += 1
    assert seen == 200 and checked >= 150
