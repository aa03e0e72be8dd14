"""pipelines.wordpiece: vocabulary learning, ids, round trips on every corpus, SavedModel and TFLite serving."""

import json
import subprocess
import sys
import textwrap
import unicodedata

import numpy as np
import pytest
import tensorflow as tf

from pipelines.corpora import sources
from pipelines.wordpiece import RESERVED_TOKENS, WordpieceTokenizer, learn_wordpiece_vocab

SAMPLE = [
    "Open the file.",
    "Close the FILE, then open it again!",
    "Café au lait, s'il vous plaît.",
    "The quick brown fox jumps over the lazy dog.",
    "Files are opened and closed by the operating system.",
] * 8


@pytest.fixture(scope="module")
def tokenizer():
    return WordpieceTokenizer(learn_wordpiece_vocab(SAMPLE, vocab_size=200))


def bert_normalize(text, lower_case=True):
    """NumPy-free reference of the documented round trip: BERT's basic tokenizer, joined by spaces."""
    cleaned = []
    for ch in text:
        if ch in "\t\n\r" or unicodedata.category(ch) == "Zs":
            cleaned.append(" ")
        elif ord(ch) == 0 or ord(ch) == 0xFFFD or unicodedata.category(ch) in ("Cc", "Cf"):
            continue
        else:
            cleaned.append(ch)
    text = "".join(cleaned)
    if lower_case:
        # FastBertNormalizer folds case with compatibility normalization: "ß" -> "ss", "…" -> "...".
        text = unicodedata.normalize("NFD", unicodedata.normalize("NFKC", text).casefold())
        text = "".join(ch for ch in text if unicodedata.category(ch) != "Mn")
    words = []
    for word in text.split():
        current = ""
        for ch in word:
            cp = ord(ch)
            if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126 or unicodedata.category(ch).startswith("P"):
                words += [current, ch] if current else [ch]
                current = ""
            else:
                current += ch
        if current:
            words.append(current)
    return " ".join(words)


# -- vocabulary ---------------------------------------------------------------
def test_learned_vocab_starts_with_reserved_tokens_and_respects_size():
    vocab = learn_wordpiece_vocab(SAMPLE, vocab_size=80)
    assert vocab[:5] == ["[PAD]", "[UNK]", "[START]", "[END]", "[MASK]"]
    assert all(isinstance(token, str) for token in vocab)
    assert len(vocab) <= 80 and len(set(vocab)) == len(vocab)
    # A smaller target drops whole-word pieces (every character stays, so it can overshoot a tiny target).
    assert len(learn_wordpiece_vocab(SAMPLE, vocab_size=60)) < len(vocab)
    assert "the" in vocab and "File" not in vocab  # lower-cased before learning


def test_dataset_and_list_inputs_learn_the_same_vocab():
    from_list = learn_wordpiece_vocab(SAMPLE, vocab_size=80)
    from_dataset = learn_wordpiece_vocab(tf.data.Dataset.from_tensor_slices(SAMPLE), vocab_size=80)
    assert from_list == from_dataset


def test_cased_vocab_keeps_case():
    vocab = learn_wordpiece_vocab(SAMPLE, vocab_size=200, lower_case=False)
    tok = WordpieceTokenizer(vocab, lower_case=False)
    assert tok.detokenize(tok.tokenize(["Close the FILE"])).numpy()[0] == b"Close the FILE"


@pytest.mark.parametrize(
    "texts, kwargs, message",
    [
        (SAMPLE, {"vocab_size": 5}, "vocab_size must be an int larger than the 5 reserved"),
        ("Open the file.", {}, "got a single string"),
        ([], {}, "no texts"),
        (["a", 3], {}, "expected strings, got an element of type int"),
        (SAMPLE, {"extra_reserved_tokens": ["[PAD]"]}, "reserved tokens must be distinct"),
    ],
)
def test_learner_rejects_bad_arguments(texts, kwargs, message):
    with pytest.raises(ValueError, match=message):
        learn_wordpiece_vocab(texts, **kwargs)


def test_learner_rejects_structured_dataset():
    ds = tf.data.Dataset.from_tensor_slices({"en": SAMPLE})
    with pytest.raises(ValueError, match="scalar tf.string elements"):
        learn_wordpiece_vocab(ds)


def test_extra_reserved_tokens_follow_the_fixed_ones():
    vocab = learn_wordpiece_vocab(SAMPLE, vocab_size=100, extra_reserved_tokens=["[SEP]"])
    assert vocab[:6] == list(RESERVED_TOKENS) + ["[SEP]"]


# -- ids ----------------------------------------------------------------------
def test_tokenize_ids_against_hand_built_vocab():
    vocab = list(RESERVED_TOKENS) + ["open", "the", "file", "##s", ".", "caf", "##e"]
    tok = WordpieceTokenizer(vocab)
    ids = tok.tokenize(tf.constant(["Open the FILES.", "Café zebra"]))
    assert isinstance(ids, tf.RaggedTensor) and ids.dtype == tf.int32 and ids.shape.rank == 2
    assert ids.to_list() == [[5, 6, 7, 8, 9], [10, 11, 1]]
    assert tok.tokenize(tf.constant("the file")).numpy().tolist() == [6, 7]
    assert tok.id_to_token(ids).to_list()[1] == [b"caf", b"##e", b"[UNK]"]


def test_special_ids_and_sizes(tokenizer):
    assert (tokenizer.pad_id, tokenizer.unk_id, tokenizer.start_id, tokenizer.end_id, tokenizer.mask_id) == (0, 1, 2, 3, 4)
    assert all(isinstance(v, int) for v in (tokenizer.vocab_size, tokenizer.pad_id, tokenizer.mask_id))
    assert tokenizer.vocab_size == len(tokenizer.vocab)


def test_detokenize_ignores_pad_start_end_and_accepts_dense(tokenizer):
    ids = tokenizer.tokenize(tf.constant(["Open the file.", "Close it!"]))
    wrapped = tf.concat([tf.fill([2, 1], 2), ids, tf.fill([2, 1], 3)], axis=1)
    expected = [b"open the file .", b"close it !"]
    assert tokenizer.detokenize(ids).numpy().tolist() == expected
    assert tokenizer.detokenize(wrapped).numpy().tolist() == expected
    assert tokenizer.detokenize(wrapped.to_tensor(default_value=0, shape=[2, 12])).numpy().tolist() == expected
    assert tokenizer.detokenize(tf.constant([2, 7, 3, 0, 0], tf.int64)).numpy() == tokenizer.detokenize([[7]]).numpy()[0]


def test_tokenize_works_inside_a_dataset_map(tokenizer):
    ds = tf.data.Dataset.from_tensor_slices(SAMPLE[:4]).batch(2).map(tokenizer.tokenize)
    batches = [b.to_list() for b in ds]
    assert batches[0] == tokenizer.tokenize(SAMPLE[:2]).to_list()


def test_tokenizer_rejects_bad_inputs(tokenizer):
    with pytest.raises(ValueError, match=r"rank 1 \(batch,\) or a scalar, got shape \(1, 2\)"):
        tokenizer.tokenize(tf.constant([["a", "b"]]))
    with pytest.raises(ValueError, match=r"rank 2 \(batch, length\) or 1 \(length,\), got shape \(1, 1, 1\)"):
        tokenizer.detokenize(tf.zeros([1, 1, 1], tf.int32))
    with pytest.raises(ValueError, match="integer ids, got dtype float32"):
        tokenizer.detokenize(tf.zeros([1, 2]))


@pytest.mark.parametrize(
    "vocab, message",
    [
        (["the", "[PAD]", "[UNK]", "[START]", "[END]", "[MASK]"], "start with"),
        (list(RESERVED_TOKENS) + ["a", "a"], "duplicate"),
        (list(RESERVED_TOKENS) + ["a b\n"], "without whitespace"),
    ],
)
def test_tokenizer_rejects_bad_vocab(vocab, message):
    with pytest.raises(ValueError, match=message):
        WordpieceTokenizer(vocab)


# -- files ----------------------------------------------------------------------
def test_save_and_load_round_trip(tokenizer, tmp_path):
    tokenizer.save(tmp_path / "tok")
    assert (tmp_path / "tok" / "vocab.txt").read_text(encoding="utf-8").splitlines() == tokenizer.vocab
    settings = json.loads((tmp_path / "tok" / "tokenizer.json").read_text())
    assert settings["lower_case"] is True and settings["class"] == "WordpieceTokenizer"
    loaded = WordpieceTokenizer.load(tmp_path / "tok")
    assert loaded.tokenize(SAMPLE).to_list() == tokenizer.tokenize(SAMPLE).to_list()


def test_load_reports_missing_and_foreign_files(tokenizer, tmp_path):
    with pytest.raises(FileNotFoundError, match="vocab.txt not found"):
        WordpieceTokenizer.load(tmp_path)
    tokenizer.save(tmp_path)
    settings = json.loads((tmp_path / "tokenizer.json").read_text())
    (tmp_path / "tokenizer.json").write_text(json.dumps({**settings, "class": "SentencepieceTokenizer"}))
    with pytest.raises(ValueError, match="holds a 'SentencepieceTokenizer'"):
        WordpieceTokenizer.load(tmp_path)


class _Serving(tf.Module):
    """The export pattern apps use: a module whose tf.functions hold the tokenizer."""

    def __init__(self, tokenizer):
        super().__init__()
        self.tokenizer = tokenizer

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
    def tokenize(self, texts):
        return self.tokenizer.tokenize(texts).to_tensor()

    @tf.function(input_signature=[tf.TensorSpec([None, None], tf.int32)])
    def detokenize(self, ids):
        return self.tokenizer.detokenize(ids)


def test_savedmodel_loads_in_a_process_with_only_tensorflow_text(tokenizer, tmp_path):
    export = tmp_path / "served"
    tf.saved_model.save(_Serving(tokenizer), str(export))
    script = textwrap.dedent(
        f"""
        import json, sys
        import tensorflow as tf
        import tensorflow_text  # registers the tf_text ops
        loaded = tf.saved_model.load({str(export)!r})
        ids = loaded.tokenize(tf.constant({SAMPLE[:3]!r}))
        text = loaded.detokenize(ids)
        assert not any(m.split(".")[0] in ("pipelines", "apps", "layers") for m in sys.modules), "imported tfsuite"
        print(json.dumps({{"ids": ids.numpy().tolist(), "text": [t.decode() for t in text.numpy()]}}))
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    got = json.loads(result.stdout.strip().splitlines()[-1])
    expected_ids = tokenizer.tokenize(SAMPLE[:3]).to_tensor()
    assert got["ids"] == expected_ids.numpy().tolist()
    assert got["text"] == [t.decode() for t in tokenizer.detokenize(expected_ids).numpy()]


def test_tflite_with_tf_text_custom_ops_only(tokenizer):
    interpreter_lib = pytest.importorskip("ai_edge_litert.interpreter")
    from tensorflow_text.core.pybinds import tflite_registrar

    class RoundTrip(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
        def __call__(self, texts):
            ids = tokenizer.tokenize(texts)
            return {"ids": ids.to_tensor(), "text": tokenizer.detokenize(ids)}

    module = RoundTrip()
    converter = tf.lite.TFLiteConverter.from_concrete_functions([module.__call__.get_concrete_function()], module)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]  # no SELECT_TF_OPS: no Flex delegate
    converter.allow_custom_ops = True
    model = converter.convert()
    assert b"Flex" not in model
    interpreter = interpreter_lib.InterpreterWithCustomOps(
        model_content=model, custom_op_registerers=tflite_registrar.SELECT_TFTEXT_OPS
    )
    runner = interpreter.get_signature_runner()
    texts = np.array([s.encode() for s in SAMPLE[:4]])
    out = runner(texts=texts)
    np.testing.assert_array_equal(out["ids"], tokenizer.tokenize(SAMPLE[:4]).to_tensor().numpy())
    assert out["text"].tolist() == tokenizer.detokenize(tokenizer.tokenize(SAMPLE[:4])).numpy().tolist()


# -- real corpora ---------------------------------------------------------------
CORPUS_FIELDS = [
    ("tfsuite_translation/en_de", ("en", "de")),
    ("tfsuite_translation/en_ja", ("en",)),
    ("tfsuite_summarization", ("summary", "document")),
    ("tfsuite_qa", ("question", "context")),
    ("tfsuite_code", ("docstring",)),
    ("tfsuite_captions", ("caption",)),
]


def corpus_texts(name, fields, split):
    tfds = pytest.importorskip("tensorflow_datasets")
    if not (sources.data_dir() / name.split("/")[0]).is_dir():
        pytest.skip(f"{name} is not built under {sources.data_dir()}: run `tfsuite data build {name.split('/')[0]}`")
    ds = tfds.load(name, split=split, data_dir=str(sources.data_dir()))
    texts = []
    for example in ds.map(lambda ex: {f: ex[f] for f in fields}).as_numpy_iterator():
        texts += [example[f].decode("utf-8") for f in fields]
    return texts


@pytest.fixture(scope="module")
def corpus_tokenizer():
    """One vocabulary learned on a small sample of every corpus (the learner is pure Python: keep it small)."""
    sample = [text for name, fields in CORPUS_FIELDS for text in corpus_texts(name, fields, "train[:40]")]
    return WordpieceTokenizer(learn_wordpiece_vocab(sample, vocab_size=1000, max_token_length=24))


@pytest.mark.parametrize("name, fields", CORPUS_FIELDS, ids=[n for n, _ in CORPUS_FIELDS])
def test_round_trip_normalizes_back_on_each_corpus(corpus_tokenizer, name, fields):
    tok = corpus_tokenizer
    texts = corpus_texts(name, fields, "validation[:200]")
    ids = tok.tokenize(texts)
    decoded = [t.decode("utf-8") for t in tok.detokenize(ids).numpy()]
    has_unk = [tok.unk_id in row for row in ids.to_list()]
    checked = [(text, out) for text, out, unk in zip(texts, decoded, has_unk) if not unk]
    # Characters unseen in the learning sample make whole words [UNK]; everything else must round-trip.
    assert len(checked) >= 0.8 * len(texts), f"only {len(checked)}/{len(texts)} texts free of [UNK]"
    mismatches = [(text, out) for text, out in checked if out != bert_normalize(text)]
    assert not mismatches, mismatches[:3]
