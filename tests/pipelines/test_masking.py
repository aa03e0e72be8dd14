"""pipelines.masking: BERT 15% / 80-10-10 masking (static) and RoBERTa dynamic masking as tf.data stages."""

import numpy as np
import pytest
import tensorflow as tf

from pipelines import masking
from pipelines.corpora import sources
from pipelines.wordpiece import RESERVED_TOKENS, WordpieceTokenizer

VOCAB = list(RESERVED_TOKENS) + [f"w{i}" for i in range(995)]  # 1000 ids, 0-4 special
TEXTS = [" ".join(f"w{(7 * i + j) % 995}" for j in range(5 + i % 20)) for i in range(40)]


@pytest.fixture(scope="module")
def tok():
    return WordpieceTokenizer(VOCAB)


def big_batch(seed=0):
    """512 rows: [START], 5-120 random word ids, [END], then padding to 128."""
    rng = np.random.default_rng(seed)
    ids = np.zeros((512, 128), np.int32)
    for row, length in enumerate(rng.integers(5, 121, size=512)):
        ids[row, 0], ids[row, length + 1] = 2, 3
        ids[row, 1 : length + 1] = rng.integers(5, 1000, size=length)
    return ids


def numpy_bert_mask(ids, noise, mask_id=4, special=(0, 2, 3, 4), low=5, high=1000):
    """The textbook rule written out in NumPy, the reference for :func:`masking.bert_mask`."""
    selected = ~np.isin(ids, special) & (noise[0] < 0.15)
    out = ids.copy()
    out[selected & (noise[1] < 0.8)] = mask_id
    random = selected & (noise[1] >= 0.8) & (noise[1] < 0.9)
    out[random] = (low + np.floor(noise[2] * (high - low)).astype(np.int64))[random]
    return out, selected


def test_bert_mask_matches_numpy_rule():
    ids = big_batch()[:64]
    noise = np.random.default_rng(1).random((3,) + ids.shape, dtype=np.float32)
    masked, selected = masking.bert_mask(tf.constant(ids), tf.constant(noise), mask_id=4, special_ids=(0, 2, 3), random_ids=(5, 1000))
    expected, expected_selected = numpy_bert_mask(ids, noise)
    np.testing.assert_array_equal(selected.numpy(), expected_selected)
    np.testing.assert_array_equal(masked.numpy(), expected)


@pytest.mark.parametrize("stage", ["static", "dynamic"])
def test_proportions_15_80_10_10(tok, stage):
    ids = big_batch()
    ds = masking.MASKINGS[stage](tf.data.Dataset.from_tensors(tf.constant(ids)), tok, seed=11)
    features, labels, weights = next(iter(ds))
    masked, selected = features["token_ids"].numpy(), weights.numpy() > 0
    candidates = ~np.isin(ids, (0, 2, 3))
    np.testing.assert_array_equal(labels, ids)
    assert not selected[~candidates].any()  # [PAD], [START], [END] are never selected
    # ~31k candidates: the binomial standard deviation of the selected share is 0.002, of the 80/10/10 shares <= 0.006.
    assert abs(selected.sum() / candidates.sum() - 0.15) < 0.01
    picked, original = masked[selected], ids[selected]
    assert abs(np.mean(picked == 4) - 0.8) < 0.025
    replaced = (picked != 4) & (picked != original)
    assert abs(np.mean(replaced) - 0.1 * (1 - 1 / 995)) < 0.02
    assert abs(np.mean(picked == original) - (0.1 + 0.1 / 995)) < 0.02
    assert picked[replaced].min() >= 5 and picked[replaced].max() < 1000
    assert abs(picked[replaced].mean() - 502) < 40  # uniform over [5, 1000): mean 502, sd of the mean ~11
    np.testing.assert_array_equal(masked[~selected], ids[~selected])
    np.testing.assert_array_equal(features["padding_mask"], ids != 0)


def epoch_masks(ds):
    """{unpadded ids: unpadded masked ids} for one pass over a masked dataset."""
    out = {}
    for features, labels, _ in ds:
        for ids, masked in zip(labels.numpy(), features["token_ids"].numpy()):
            length = int((ids != 0).sum())
            out[tuple(ids[:length])] = tuple(masked[:length])
    return out


def test_dynamic_masking_draws_a_new_mask_each_epoch(tok):
    texts = tf.data.Dataset.from_tensor_slices({"text": TEXTS})

    def make(seed):
        return masking.make_mlm_dataset(
            texts, "text", tok, batch_size=8, max_length=32, masking="dynamic", seed=seed, deterministic=True
        )

    ds = make(0)
    epoch1, epoch2 = epoch_masks(ds), epoch_masks(ds)
    assert epoch1.keys() == epoch2.keys() and len(epoch1) == 40
    changed = sum(epoch1[k] != epoch2[k] for k in epoch1)
    assert changed >= 30, f"only {changed}/40 examples got a new mask in epoch 2"
    replay = make(0)
    assert epoch_masks(replay) == epoch1 and epoch_masks(replay) == epoch2  # deterministic given the seed
    assert epoch_masks(make(1)) != epoch1


def test_static_masking_keeps_each_examples_mask_across_epochs(tok):
    texts = tf.data.Dataset.from_tensor_slices({"text": TEXTS})
    ds = masking.make_mlm_dataset(texts, "text", tok, batch_size=8, max_length=32, masking="static", seed=0, shuffle=True)
    epoch1, epoch2 = epoch_masks(ds), epoch_masks(ds)
    assert len(epoch1) == 40 and epoch1 == epoch2  # reshuffled batches, same masks
    assert sum(a != b for a, b in zip(epoch1, epoch1.values())) >= 30  # and masks were applied
    other_seed = epoch_masks(masking.make_mlm_dataset(texts, "text", tok, batch_size=8, max_length=32, masking="static", seed=1))
    assert other_seed != epoch1


def test_static_mask_ignores_padding_length(tok):
    ids = big_batch()[:16]
    wider = np.pad(ids, ((0, 0), (0, 40)))
    narrow = masking.static_masking(tf.data.Dataset.from_tensors(tf.constant(ids)), tok, seed=3)
    wide = masking.static_masking(tf.data.Dataset.from_tensors(tf.constant(wider)), tok, seed=3)
    (a, _, _), (b, _, _) = next(iter(narrow)), next(iter(wide))
    np.testing.assert_array_equal(a["token_ids"].numpy(), b["token_ids"].numpy()[:, :128])


def test_ignore_label_mode(tok):
    ids = big_batch()[:32]
    ds = masking.dynamic_masking(tf.data.Dataset.from_tensors({"token_ids": tf.constant(ids)}), tok, seed=2, unselected_label=-100)
    features, labels = next(iter(ds))
    selected = labels.numpy() != -100
    assert selected.any()
    np.testing.assert_array_equal(labels.numpy()[selected], ids[selected])
    np.testing.assert_array_equal(features["token_ids"].numpy()[~selected], ids[~selected])


def test_masked_batches_train_a_keras_model(tok):
    import keras

    token_ids = keras.Input((None,), dtype="int32", name="token_ids")
    padding_mask = keras.Input((None,), dtype="bool", name="padding_mask")
    hidden = keras.layers.Embedding(tok.vocab_size, 8)(token_ids)
    logits = keras.layers.Dense(tok.vocab_size)(hidden)
    model = keras.Model({"token_ids": token_ids, "padding_mask": padding_mask}, logits)
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    texts = tf.data.Dataset.from_tensor_slices({"text": TEXTS})
    batches = masking.make_mlm_dataset(texts, "text", tok, batch_size=8, max_length=16)
    history = model.fit(batches, epochs=1, steps_per_epoch=5, shuffle=False, verbose=0)
    assert np.isfinite(history.history["loss"][0])


def _ids(shape):
    return tf.data.Dataset.from_tensors(tf.zeros(shape, tf.int32))


def _texts():
    return tf.data.Dataset.from_tensor_slices({"text": TEXTS})


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda t: masking.MaskingRates(select=0.0), r"select rate must be in \(0, 1\]"),
        (lambda t: masking.MaskingRates(mask_token=0.95), "sum <= 1"),
        (lambda t: masking.make_mlm_dataset(_texts(), "text", t, masking="span"), "unknown masking 'span'"),
        (lambda t: masking.dynamic_masking(_ids([4]), t), r"rank 2 \(batch, length\)"),
        (lambda t: masking.static_masking(_ids([2, 4]), object()), "needs a tokenizer with pad_id"),
        (lambda t: masking.static_masking(_ids([2, 4]), t, random_ids=(5, 5000)), "random_ids must be"),
    ],
)
def test_rejects_bad_arguments(tok, call, message):
    with pytest.raises(ValueError, match=message):
        call(tok)


def test_masking_real_corpus_with_sentencepiece():
    tfds = pytest.importorskip("tensorflow_datasets")
    if not (sources.data_dir() / "tfsuite_qa").is_dir():
        pytest.skip(f"tfsuite_qa is not built under {sources.data_dir()}: run `tfsuite data build tfsuite_qa`")
    from pipelines.sentencepiece import SentencepieceTokenizer, train_sentencepiece

    data_dir = str(sources.data_dir())
    tok = SentencepieceTokenizer(
        train_sentencepiece(
            tfds.load("tfsuite_qa", split="train[:300]", data_dir=data_dir).map(lambda ex: ex["context"]), vocab_size=1500
        )
    )
    contexts = tfds.load("tfsuite_qa", split="validation[:200]", data_dir=data_dir)
    ds = masking.make_mlm_dataset(contexts, "context", tok, batch_size=50, max_length=128, seed=0, deterministic=True)
    selected = candidates = 0
    for features, labels, weights in ds:
        ids = labels.numpy()
        candidates += int((~np.isin(ids, tok.special_ids)).sum())
        selected += int(weights.numpy().sum())
        assert (features["token_ids"].numpy() == tok.mask_id).sum() <= weights.numpy().sum()
    assert abs(selected / candidates - 0.15) < 0.02, (selected, candidates)
