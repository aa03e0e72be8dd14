"""pipelines.sentencepiece: training, ids against the sentencepiece library, Japanese and code round trips, serving."""

import json
import subprocess
import sys
import textwrap
import unicodedata

import numpy as np
import pytest
import sentencepiece as spm
import tensorflow as tf

from pipelines.corpora import sources
from pipelines.sentencepiece import SentencepieceTokenizer, train_sentencepiece

JA_SAMPLE = ["サーバーの起動待機がタイムアウトしました", "ファイルを開く", "ファイルを閉じる", "証明書を検査…"] * 10


def corpus_texts(name, field, split):
    tfds = pytest.importorskip("tensorflow_datasets")
    if not (sources.data_dir() / name.split("/")[0]).is_dir():
        pytest.skip(f"{name} is not built under {sources.data_dir()}: run `tfsuite data build {name.split('/')[0]}`")
    ds = tfds.load(name, split=split, data_dir=str(sources.data_dir()))
    return [text.decode("utf-8") for text in ds.map(lambda ex: ex[field]).as_numpy_iterator()]


def nmt_nfkc(text):
    """The documented round trip of an ``nmt_nfkc`` model: NFKC, whitespace runs collapsed, ends stripped."""
    return " ".join(unicodedata.normalize("NFKC", text).split())


@pytest.fixture(scope="module")
def small_model():
    return train_sentencepiece(JA_SAMPLE, vocab_size=300, character_coverage=1.0)


@pytest.fixture(scope="module")
def japanese():
    """A model learned on 400 en_ja targets, and 200 validation targets to test on."""
    train = corpus_texts("tfsuite_translation/en_ja", "ja", "train[:400]")
    return train_sentencepiece(train, vocab_size=2000, character_coverage=0.995), corpus_texts(
        "tfsuite_translation/en_ja", "ja", "validation[:200]"
    )


# -- training -------------------------------------------------------------------
def test_special_pieces_have_fixed_ids(small_model):
    tok = SentencepieceTokenizer(small_model)
    assert tok.vocab[:5] == ["[PAD]", "[UNK]", "[START]", "[END]", "[MASK]"]
    assert (tok.pad_id, tok.unk_id, tok.start_id, tok.end_id, tok.mask_id) == (0, 1, 2, 3, 4)
    assert tok.vocab[5] == "<0x00>" and tok.byte_fallback  # the 256 byte pieces follow
    assert 261 < tok.vocab_size <= 300


def test_dataset_and_list_inputs_train_the_same_model(small_model):
    from_dataset = train_sentencepiece(tf.data.Dataset.from_tensor_slices(JA_SAMPLE), vocab_size=300, character_coverage=1.0)
    assert SentencepieceTokenizer(from_dataset).vocab == SentencepieceTokenizer(small_model).vocab


def test_ids_match_the_sentencepiece_library(japanese):
    model, texts = japanese
    reference = spm.SentencePieceProcessor(model_proto=model)
    ids = SentencepieceTokenizer(model).tokenize(tf.constant(texts[:50]))
    assert isinstance(ids, tf.RaggedTensor) and ids.dtype == tf.int32
    assert ids.to_list() == reference.encode(texts[:50])


def test_mask_text_maps_to_mask_id(small_model):
    tok = SentencepieceTokenizer(small_model)
    ids = tok.tokenize(tf.constant("ファイルを[MASK]")).numpy().tolist()
    assert tok.mask_id in ids
    assert tok.id_to_token(tf.constant(ids)).numpy().tolist()[ids.index(tok.mask_id)] == b"[MASK]"


@pytest.mark.parametrize(
    "texts, kwargs, message",
    [
        (JA_SAMPLE, {"normalization": "nfd"}, "unknown normalization 'nfd'"),
        (JA_SAMPLE, {"model_type": "wordpiece"}, "unknown model_type 'wordpiece'"),
        (JA_SAMPLE, {"vocab_size": 4}, "vocab_size must be an int larger than the 5"),
        ("ファイル", {}, "got a single string"),
        (["", ""], {}, "no \\(non-empty\\) texts"),
        (["a", 3], {}, "got an element of type int"),
        (JA_SAMPLE, {"vocab_size": 20, "character_coverage": 1.0, "byte_fallback": False}, "SentencePiece training failed"),
    ],
)
def test_training_rejects_bad_arguments(texts, kwargs, message):
    with pytest.raises(ValueError, match=message):
        train_sentencepiece(texts, **kwargs)


def test_training_rejects_structured_dataset():
    with pytest.raises(ValueError, match="scalar tf.string elements"):
        train_sentencepiece(tf.data.Dataset.from_tensor_slices({"ja": JA_SAMPLE}))


def test_extra_special_tokens_follow_mask():
    model = train_sentencepiece(JA_SAMPLE, vocab_size=300, character_coverage=1.0, extra_special_tokens=["[SEP]"])
    tok = SentencepieceTokenizer(model)
    assert tok.vocab[:6] == ["[PAD]", "[UNK]", "[START]", "[END]", "[MASK]", "[SEP]"]
    with pytest.raises(ValueError, match="as extra_special_tokens"):
        train_sentencepiece(JA_SAMPLE, user_defined_symbols=["[SEP]"])


def test_model_file_is_written(tmp_path):
    model = train_sentencepiece(JA_SAMPLE, vocab_size=300, character_coverage=1.0, model_file=tmp_path / "ja.model")
    assert (tmp_path / "ja.model").read_bytes() == model


# -- tokenizer --------------------------------------------------------------------
def test_detokenize_drops_pad_start_end_and_accepts_dense(small_model):
    tok = SentencepieceTokenizer(small_model)
    ids = tok.tokenize(tf.constant(["ファイルを開く", "ファイルを閉じる"]))
    wrapped = tf.concat([tf.fill([2, 1], tok.start_id), ids, tf.fill([2, 1], tok.end_id)], axis=1)
    expected = ["ファイルを開く".encode(), "ファイルを閉じる".encode()]
    assert tok.detokenize(wrapped).numpy().tolist() == expected
    assert tok.detokenize(wrapped.to_tensor(default_value=tok.pad_id, shape=[2, 20])).numpy().tolist() == expected
    assert tok.detokenize(wrapped[0].numpy()).numpy() == expected[0]


def test_tokenizer_rejects_bad_inputs(small_model):
    tok = SentencepieceTokenizer(small_model)
    with pytest.raises(ValueError, match=r"rank 1 \(batch,\) or a scalar, got shape \(1, 1\)"):
        tok.tokenize(tf.constant([["a"]]))
    with pytest.raises(ValueError, match=r"rank 2 \(batch, length\) or 1 \(length,\), got shape \(1, 1, 1\)"):
        tok.detokenize(tf.zeros([1, 1, 1], tf.int32))
    with pytest.raises(ValueError, match="integer ids, got dtype float32"):
        tok.detokenize(tf.zeros([1, 2]))


def test_tokenizer_rejects_bad_models(tmp_path):
    with pytest.raises(ValueError, match="model proto bytes; use SentencepieceTokenizer.load"):
        SentencepieceTokenizer(str(tmp_path / "x.model"))
    with pytest.raises(ValueError, match="not a SentencePiece model proto"):
        SentencepieceTokenizer(b"\xff\xfe not a proto")
    plain = tmp_path / "plain"
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(JA_SAMPLE), model_prefix=str(plain), vocab_size=60, minloglevel=2, hard_vocab_limit=False
    )
    with pytest.raises(ValueError, match=r"lacks the special pieces \['\[PAD\]', '\[UNK\]', '\[START\]', '\[END\]', '\[MASK\]'\]"):
        SentencepieceTokenizer((tmp_path / "plain.model").read_bytes())


def test_save_and_load_round_trip(small_model, tmp_path):
    tok = SentencepieceTokenizer(small_model)
    tok.save(tmp_path)
    assert (tmp_path / "sentencepiece.model").read_bytes() == small_model
    assert json.loads((tmp_path / "tokenizer.json").read_text())["fast"] is False
    loaded = SentencepieceTokenizer.load(tmp_path)
    assert loaded.tokenize(JA_SAMPLE).to_list() == tok.tokenize(JA_SAMPLE).to_list()
    with pytest.raises(FileNotFoundError, match="sentencepiece.model not found"):
        SentencepieceTokenizer.load(tmp_path / "missing")
    (tmp_path / "tokenizer.json").write_text(json.dumps({"class": "WordpieceTokenizer"}))
    with pytest.raises(ValueError, match="holds a 'WordpieceTokenizer'"):
        SentencepieceTokenizer.load(tmp_path)


# -- round trips on the corpora -----------------------------------------------------
def test_japanese_round_trip_is_exact_modulo_nfkc(japanese):
    model, texts = japanese
    tok = SentencepieceTokenizer(model)
    decoded = [t.decode("utf-8") for t in tok.detokenize(tok.tokenize(texts)).numpy()]
    assert [d for d, t in zip(decoded, texts) if d != nmt_nfkc(t)] == []
    assert sum(d != t for d, t in zip(decoded, texts)) > 0  # NFKC did change some (full-width brackets)


def test_code_round_trip_is_exact():
    train = corpus_texts("tfsuite_code", "code", "train[:150]")
    texts = corpus_texts("tfsuite_code", "code", "validation[:200]")
    model = train_sentencepiece(train, vocab_size=1000, normalization="identity", keep_whitespace=True, character_coverage=1.0)
    tok = SentencepieceTokenizer(model)
    ids = tok.tokenize(texts)
    decoded = [t.decode("utf-8") for t in tok.detokenize(ids).numpy()]
    assert [t for d, t in zip(decoded, texts) if d != t] == []
    assert any("\n    " in t for t in texts)  # indentation and newlines were really there
    assert tok.unk_id not in ids.flat_values.numpy()


# -- serving ------------------------------------------------------------------------
def test_fast_tokenizer_loads_the_same_model(japanese):
    model, texts = japanese
    no_bytes = train_sentencepiece(corpus_texts("tfsuite_translation/en_ja", "ja", "train[:400]"), vocab_size=2000,
                                   character_coverage=0.995, byte_fallback=False)  # fmt: skip
    reference, fast = SentencepieceTokenizer(no_bytes), SentencepieceTokenizer(no_bytes, fast=True)
    assert fast.tokenize(texts).to_list() == reference.tokenize(texts).to_list()
    fast_text = fast.detokenize(fast.tokenize(texts[:20])).numpy().tolist()
    assert fast_text == reference.detokenize(reference.tokenize(texts[:20])).numpy().tolist()
    with pytest.raises(ValueError, match="fast=True .* mis-tokenizes models with byte_fallback"):
        SentencepieceTokenizer(model, fast=True)


def test_fast_tokenize_runs_in_tflite_with_tf_text_ops_only(small_model):
    interpreter_lib = pytest.importorskip("ai_edge_litert.interpreter")
    from tensorflow_text.core.pybinds import tflite_registrar

    model = train_sentencepiece(JA_SAMPLE, vocab_size=300, character_coverage=1.0, byte_fallback=False)
    tok = SentencepieceTokenizer(model, fast=True)

    class Tokenize(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
        def __call__(self, texts):
            return {"ids": tok.tokenize(texts).to_tensor()}

    module = Tokenize()
    converter = tf.lite.TFLiteConverter.from_concrete_functions([module.__call__.get_concrete_function()], module)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    converter.allow_custom_ops = True
    lite = converter.convert()
    assert b"Flex" not in lite
    interpreter = interpreter_lib.InterpreterWithCustomOps(
        model_content=lite, custom_op_registerers=tflite_registrar.SELECT_TFTEXT_OPS
    )
    out = interpreter.get_signature_runner()(texts=np.array([t.encode() for t in JA_SAMPLE[:4]]))
    np.testing.assert_array_equal(out["ids"], tok.tokenize(JA_SAMPLE[:4]).to_tensor().numpy())


def test_savedmodel_loads_in_a_process_with_only_tensorflow_text(small_model, tmp_path):
    tok = SentencepieceTokenizer(small_model)

    class Serving(tf.Module):
        def __init__(self):
            super().__init__()
            self.tokenizer = tok

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
        def round_trip(self, texts):
            ids = self.tokenizer.tokenize(texts)
            return {"ids": ids.to_tensor(), "text": self.tokenizer.detokenize(ids)}

    tf.saved_model.save(Serving(), str(tmp_path / "served"))
    script = textwrap.dedent(
        f"""
        import json, sys
        import tensorflow as tf
        import tensorflow_text  # registers the SentencePiece ops
        out = tf.saved_model.load({str(tmp_path / "served")!r}).round_trip(tf.constant({JA_SAMPLE[:3]!r}))
        assert not any(m.split(".")[0] in ("pipelines", "apps", "layers") for m in sys.modules), "imported tfsuite"
        print(json.dumps({{"ids": out["ids"].numpy().tolist(), "text": [t.decode() for t in out["text"].numpy()]}}))
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    got = json.loads(result.stdout.strip().splitlines()[-1])
    assert got["ids"] == tok.tokenize(JA_SAMPLE[:3]).to_tensor().numpy().tolist()
    assert got["text"] == [nmt_nfkc(t) for t in JA_SAMPLE[:3]]
