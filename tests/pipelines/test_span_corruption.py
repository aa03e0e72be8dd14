"""T5 span corruption (section 6.3): statistics, round trip, sentinels, dynamic noise, batches."""

import numpy as np
import pytest
import tensorflow as tf

from pipelines.preprocessing import TextPreprocessor
from pipelines.span_corruption import (
    corrupt_spans, make_span_corruption_dataset, random_spans_noise_mask, sentinel_tokens, span_corruption, uncorrupt,
)
from pipelines.wordpiece import WordpieceTokenizer, learn_wordpiece_vocab

SENTINELS = np.arange(1000, 1100, dtype=np.int32)


def _ids_dataset(count, low=20, high=200, seed=0):
    rng = np.random.default_rng(seed)
    rows = [rng.integers(10, 900, rng.integers(low, high)).astype(np.int32) for _ in range(count)]
    return rows, tf.data.Dataset.from_generator(lambda: iter(rows), output_signature=tf.TensorSpec([None], tf.int32))


def _runs(mask):
    """Lengths of the runs of True in a 1-D bool array."""
    runs, current = [], 0
    for value in list(mask) + [False]:
        if value:
            current += 1
        elif current:
            runs.append(current)
            current = 0
    return runs


def test_noise_mask_rate_and_mean_span_length_over_many_examples():
    noise, total, spans = 0, 0, []
    rng = np.random.default_rng(1)
    for i in range(1500):
        length = int(rng.integers(60, 200))
        mask = random_spans_noise_mask(length, tf.constant([i, 7]), 0.15, 3.0).numpy()
        assert mask.shape == (length,) and not mask[0]  # kept text first
        noise += mask.sum()
        total += length
        spans.extend(_runs(mask))
    assert abs(noise / total - 0.15) < 0.005, noise / total
    assert abs(np.mean(spans) - 3.0) < 0.1, np.mean(spans)
    # Span lengths vary (a random segmentation, not fixed blocks of 3).
    assert np.std(spans) > 1.0


def test_noise_mask_is_a_pure_function_of_the_seed_and_short_texts_keep_a_token():
    a = random_spans_noise_mask(80, tf.constant([3, 4])).numpy()
    assert np.array_equal(a, random_spans_noise_mask(80, tf.constant([3, 4])).numpy())
    assert not np.array_equal(a, random_spans_noise_mask(80, tf.constant([3, 5])).numpy())
    for length in (2, 3, 5):
        mask = random_spans_noise_mask(length, tf.constant([0, 1])).numpy()
        assert 1 <= mask.sum() <= length - 1


def test_corruption_inputs_and_targets_rebuild_the_original_with_sentinels_in_order():
    rows, ds = _ids_dataset(300)
    corrupted = list(span_corruption(ds, SENTINELS, seed=0).as_numpy_iterator())
    assert len(corrupted) == len(rows)
    for original, pair in zip(rows, corrupted):
        inputs, targets = pair["inputs"], pair["targets"]
        assert uncorrupt(inputs, targets, SENTINELS) == original.tolist()
        used = [t for t in inputs if t in set(SENTINELS.tolist())]
        assert used == SENTINELS[: len(used)].tolist()  # [X0], [X1], ... left to right
        assert targets[0] == SENTINELS[0]
        assert len(inputs) + len(targets) - 2 * len(used) <= len(original) + 1
        assert len(inputs) < len(original)


def test_the_t5_paper_example():
    words = "Thank you for inviting me to your party last week .".split()
    ids = tf.constant(np.arange(len(words), dtype=np.int32) + 10)
    mask = tf.constant([w in ("for", "inviting", "last") for w in words])
    inputs, targets = corrupt_spans(ids, mask, [100, 101, 102])
    vocab = {i + 10: w for i, w in enumerate(words)} | {100: "<X>", 101: "<Y>", 102: "<Z>"}
    assert " ".join(vocab[i] for i in inputs.numpy()) == "Thank you <X> me to your party <Y> week ."
    assert " ".join(vocab[i] for i in targets.numpy()) == "<X> for inviting <Y> last <Z>"


def test_a_new_mask_each_epoch_and_the_same_seed_replays_the_epochs():
    _, ds = _ids_dataset(50)

    def epochs(seed):
        stage = span_corruption(ds, SENTINELS, seed=seed).repeat(2)
        items = [p["inputs"].tolist() for p in stage.as_numpy_iterator()]
        return items[:50], items[50:]

    first, second = epochs(0)
    assert sum(a != b for a, b in zip(first, second)) > 40
    assert epochs(0) == (first, second)
    assert epochs(1)[0] != first


def test_stage_rejects_bad_settings():
    _, ds = _ids_dataset(3)
    with pytest.raises(ValueError, match="noise_density"):
        span_corruption(ds, SENTINELS, noise_density=1.5)
    with pytest.raises(ValueError, match="mean_span_length"):
        span_corruption(ds, SENTINELS, mean_span_length=0.5)
    with pytest.raises(ValueError, match="sentinel_ids"):
        span_corruption(ds, [])


def test_pre_training_batches_have_the_seq2seq_format():
    texts = [f"the package {w} provides a library for {v} files" for w in "abcdefgh" for v in ("image", "sound", "text")]
    vocab = learn_wordpiece_vocab(texts, vocab_size=120, extra_reserved_tokens=sentinel_tokens(8))
    tokenizer = WordpieceTokenizer(vocab)
    sentinel_ids = [vocab.index(t) for t in sentinel_tokens(8)]
    preprocessor = TextPreprocessor(tokenizer, tokenizer, 24, 16)
    examples = tf.data.Dataset.from_tensor_slices({"document": texts})
    ds = make_span_corruption_dataset(examples, "document", preprocessor, sentinel_ids, batch_size=8, shuffle=False)
    features, targets = next(iter(ds))
    assert set(features) == {"encoder_inputs", "encoder_padding_mask", "decoder_token_ids", "decoder_padding_mask"}
    enc, dec, tgt = features["encoder_inputs"].numpy(), features["decoder_token_ids"].numpy(), targets.numpy()
    assert (enc[:, 0] == tokenizer.start_id).all() and (dec[:, 0] == tokenizer.start_id).all()
    np.testing.assert_array_equal(dec[:, 1:][dec[:, 1:] != 0], tgt[:, :-1][dec[:, 1:] != 0])  # shifted by one
    assert (tgt[:, 0] == sentinel_ids[0]).all()
    for row_enc, row_tgt, text in zip(enc, tgt, texts):
        inner = [t for t in row_enc.tolist() if t not in (0, tokenizer.start_id, tokenizer.end_id)]
        span_target = [t for t in row_tgt.tolist() if t not in (0, tokenizer.end_id)]
        original = tokenizer.tokenize(tf.constant([text])).numpy()[0].tolist()
        assert uncorrupt(inner, span_target, sentinel_ids) == original
