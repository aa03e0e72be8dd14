"""pipelines.code_tokenizer: training texts, the exact round trip of any Python text, SavedModel, what TFLite runs."""

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import sentencepiece as spm
import tensorflow as tf
import tensorflow_text as tf_text

from layers.generation_export import flex_ops, tflite_ops
from pipelines.code_tokenizer import CodeTokenizer, code_files, code_training_texts, train_code_tokenizer
from pipelines.sentencepiece import train_sentencepiece

ROUND_TRIP = {
    "spaces": "def f(x):\n    if x:\n        return x\n    return None\n",
    "tabs": "class A:\n\tdef f(self):\n\t\treturn 1\n",
    "mixed_indent": "if a:\n \t  b = 1\n",
    "blank_lines": "\n\n\nx = 1\n\n\n\n",
    "trailing_whitespace": "x = 1   \ny = 2\t\n   \n",
    "crlf": "a = 1\r\nb = 2\r\n\r\n",
    "lone_cr": "a\rb\r",
    "leading_spaces": "   x = 1",
    "leading_newline": "\nx",
    "only_spaces": "    ",
    "one_space": " ",
    "japanese": "名前 = '日本語の文字列'  # コメント\n",
    "emoji": "status = '🎉✅'  # 👍🏽 \U0001F9EC\n",
    "unseen_scripts": "ॐ = 'ᚠᛇᚻ 𓀀 ꙮ'\n",
    "control_chars": "x = '\x00\x07\x1b\x7f'\n",
    "meta_space": "bar = '▁▂▃' + '▁'\n",
    "private_use": "'\ue000\ue001\ue000\u2581\ue000\ue000'",
    "specials_as_text": "s = '[MASK] [PAD] [START] <0x41> <unk>'\n",
    "long_digits": "n = 1234567890123456789\n",
    "empty": "",
}


@pytest.fixture(scope="module")
def texts():
    return code_training_texts(max_bytes=300_000)


@pytest.fixture(scope="module")
def model(texts):
    return train_code_tokenizer(texts, vocab_size=500)


@pytest.fixture
def tok(model):
    # Per test: the autouse seed fixture calls tf.random.set_seed, which deletes the SentencePiece
    # resource of every tokenizer made before it (test_set_seed_breaks_earlier_tokenizers).
    return CodeTokenizer(model)


def decoded(tokenizer, ids):
    return [t.decode("utf-8") for t in tokenizer.detokenize(ids).numpy()]


# -- training texts ------------------------------------------------------------------------------
def test_training_texts_are_capped_chunks_of_train_files(texts):
    total = sum(len(t.encode("utf-8")) for t in texts)
    assert 300_000 <= total < 300_000 + 200_000  # the cap, overshot by at most one file
    assert all(len(t.encode("utf-8")) <= 4096 or "\n" not in t.rstrip("\n") for t in texts)
    assert any("\n    " in t for t in texts) and any(t.startswith(("import ", '"""')) for t in texts)
    assert texts == code_training_texts(max_bytes=300_000)  # deterministic


def test_code_files_splits_are_disjoint_and_sampled_across_the_tree():
    train, validation = code_files("train"), code_files("validation")
    assert train and validation and not set(train) & set(validation)
    assert len(validation) < len(train) / 10
    assert len({p.parent for p in train[:30]}) > 5  # hash order, not alphabetical
    assert all(p.stat().st_size <= 200_000 for p in train)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"split": "dev"}, r"split must be one of \('train', 'validation', 'test'\) or None, got 'dev'"),
        ({"max_bytes": 0}, "max_bytes must be a positive int"),
        ({"chunk_bytes": "4k"}, "chunk_bytes must be a positive int"),
        ({"root": "/nonexistent"}, "is not a folder of Python sources"),
    ],
)
def test_training_texts_reject_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        code_training_texts(**kwargs)


# -- the model ------------------------------------------------------------------------------------
def test_model_settings_and_pieces(tok):
    assert tok.vocab[:6] == ["[PAD]", "[UNK]", "[START]", "[END]", "[MASK]", "<0x00>"]
    assert tok.byte_fallback and tok.get_config()["class"] == "CodeTokenizer"
    assert 400 < tok.vocab_size <= 500
    assert "▁▁▁▁" in tok.vocab  # an indentation level is one piece
    assert not any(any(c.isdigit() for c in p) and len(p) > 1 for p in tok.vocab[261:])  # digits split


def test_training_rejects_fixed_settings_and_bad_vocab(texts):
    with pytest.raises(ValueError, match=r"fixes \['byte_fallback', 'model_type'\]"):
        train_code_tokenizer(texts, model_type="unigram", byte_fallback=False)
    with pytest.raises(ValueError, match="SentencePiece training failed"):
        train_code_tokenizer(texts[:50], vocab_size=100)  # below the 261 reserved pieces plus the alphabet
    with pytest.raises(ValueError, match="got a single string"):
        train_code_tokenizer("x = 1")


def test_tokenizer_rejects_models_that_change_text(tok, texts):
    with pytest.raises(ValueError, match="CodeTokenizer cannot be fast"):
        CodeTokenizer(tok.model, fast=True)
    plain = train_sentencepiece(texts[:200], vocab_size=500, model_type="bpe", normalization="identity",
                                keep_whitespace=True)  # no U+2581 escape, a dummy prefix
    with pytest.raises(ValueError, match="not a code model: SentencePiece changes"):
        CodeTokenizer(plain)
    with pytest.raises(ValueError, match="needs a byte-fallback model"):
        CodeTokenizer(train_sentencepiece(texts[:200], vocab_size=500, byte_fallback=False))


# -- the exact round trip --------------------------------------------------------------------------
def test_every_case_round_trips_exactly_in_graph(tok, model):
    cases = list(ROUND_TRIP.values())
    ids = tok.tokenize(tf.constant(cases))
    assert decoded(tok, ids) == cases
    assert tok.unk_id not in ids.flat_values.numpy()
    # The graph ops give the sentencepiece library's ids.
    assert ids.to_list() == spm.SentencePieceProcessor(model_proto=model).encode(cases)
    assert ids[-1].shape[0] == 0  # "" has no tokens


def test_unseen_characters_become_byte_pieces(tok):
    pieces = tok.id_to_token(tok.tokenize(tf.constant("𓀀"))).numpy().tolist()
    assert pieces == [b"<0xF0>", b"<0x93>", b"<0x80>", b"<0x80>"]


def test_random_unicode_round_trips(tok):
    rng = np.random.default_rng(0)
    pools = [list(" \t\n\r\x00abcXYZ_019():.,'\"#"), [chr(c) for c in range(0x20, 0x2FFF)],
             [chr(c) for c in range(0x1F300, 0x1FAFF)], ["\u2581", "\ue000", "\ue001", "\r\n", "    "]]
    texts = []
    for _ in range(200):
        which = rng.integers(len(pools), size=int(rng.integers(0, 40)))
        texts.append("".join(pools[i][rng.integers(len(pools[i]))] for i in which))
    assert decoded(tok, tok.tokenize(tf.constant(texts))) == texts


def test_held_out_stdlib_files_round_trip(tok):
    files = [p.read_text(encoding="utf-8") for p in code_files("validation")[:40]]
    ids = tok.tokenize(tf.constant(files))
    assert decoded(tok, ids) == files
    assert tok.unk_id not in ids.flat_values.numpy()


def test_detokenize_is_piecewise_so_continuations_decode(tok):
    prompt, continuation = "def add(a, b):\n", "    return a + b  # 合計\n"
    ids = tf.concat([tok.tokenize(tf.constant(prompt)), tok.tokenize(tf.constant(continuation))], axis=0)
    assert tok.detokenize(ids).numpy().decode() == prompt + continuation
    whole = tok.tokenize(tf.constant(prompt + continuation))
    for cut in range(1, int(whole.shape[0])):  # any cut decodes to a prefix and the matching rest
        head, tail = tok.detokenize(whole[:cut]).numpy(), tok.detokenize(whole[cut:]).numpy()
        if b"\xef\xbf\xbd" not in head + tail:  # not inside one character's bytes
            assert (head + tail).decode() == prompt + continuation


# -- graphs and SavedModel ---------------------------------------------------------------------------
class Serving(tf.Module):
    def __init__(self, tokenizer):
        super().__init__()
        self.tokenizer = tokenizer

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
    def round_trip(self, texts):
        ids = self.tokenizer.tokenize(texts)
        return {"ids": ids.to_tensor(), "lengths": tf.cast(ids.row_lengths(), tf.int32),
                "text": self.tokenizer.detokenize(ids)}


def test_tf_function_and_saved_model_round_trip(tok, tmp_path):
    cases = list(ROUND_TRIP.values())
    serving = Serving(tok)  # held: a tf.function method keeps only a weak reference to its module
    out = serving.round_trip(tf.constant(cases))
    assert decoded(tok, out["ids"]) == cases and [t.decode() for t in out["text"].numpy()] == cases

    tf.saved_model.save(serving, str(tmp_path / "served"))
    (tmp_path / "cases.json").write_text(json.dumps(cases))
    script = textwrap.dedent(
        f"""
        import json, sys
        import tensorflow as tf
        import tensorflow_text  # registers the SentencePiece ops
        cases = json.load(open({str(tmp_path / "cases.json")!r}))
        out = tf.saved_model.load({str(tmp_path / "served")!r}).round_trip(tf.constant(cases))
        assert not any(m.split(".")[0] in ("pipelines", "apps", "layers") for m in sys.modules), "imported tfsuite"
        print(json.dumps({{"ids": out["ids"].numpy().tolist(), "text": [t.decode() for t in out["text"].numpy()]}}))
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    got = json.loads(result.stdout.strip().splitlines()[-1])
    assert got["text"] == cases
    assert got["ids"] == tok.tokenize(tf.constant(cases)).to_tensor().numpy().tolist()


def test_save_and_load(tok, model, tmp_path):
    tok.save(tmp_path / "tok")
    assert (tmp_path / "tok" / "sentencepiece.model").read_bytes() == model
    loaded = CodeTokenizer.load(tmp_path / "tok")
    cases = list(ROUND_TRIP.values())
    assert loaded.tokenize(tf.constant(cases)).to_list() == tok.tokenize(tf.constant(cases)).to_list()
    # The saved proto alone serves the same ids (what a host-side tokenizer for TFLite reads).
    processor = spm.SentencePieceProcessor(model_file=str(tmp_path / "tok" / "sentencepiece.model"))
    assert processor.encode(cases) == tok.tokenize(tf.constant(cases)).to_list()


def test_model_file_is_written_and_training_is_deterministic(texts, tmp_path):
    model = train_code_tokenizer(texts[:300], vocab_size=400, model_file=tmp_path / "code.model")
    assert (tmp_path / "code.model").read_bytes() == model
    assert train_code_tokenizer(texts[:300], vocab_size=400) == model
    assert b".tsv" not in model  # no temporary paths in the proto


def test_set_seed_breaks_earlier_tokenizers(model):
    """tensorflow 2.21 / tensorflow-text 2.21.1: tf.random.set_seed (keras.utils.set_random_seed) clears the
    eager kernel cache, which owns the SentencePiece resource: set seeds before making tokenizers."""
    early = CodeTokenizer(model)
    tf.random.set_seed(1)
    with pytest.raises(tf.errors.NotFoundError, match="SentencepieceOp"):
        early.tokenize(tf.constant(["x = 1"]))
    assert CodeTokenizer(model).tokenize(tf.constant(["x = 1"])).shape[0] == 1


# -- TFLite: what converts and what runs ---------------------------------------------------------------
def test_fast_sentencepiece_loses_code_text(tok):
    """Why CodeTokenizer refuses fast=True: tf_text's only TFLite-kernel tokenizer mangles this model."""
    fast = tf_text.FastSentencepieceTokenizer(tok.model)
    cases = [ROUND_TRIP["tabs"], ROUND_TRIP["japanese"]]
    fast_ids = fast.tokenize(tf.constant(cases))
    assert fast_ids.to_list() != tok.tokenize(tf.constant(cases)).to_list()
    back = [t.decode() for t in fast.detokenize(fast_ids).numpy()]
    assert "\t" not in back[0] and "名前" not in back[1]  # tabs dropped, non-ASCII lost
    assert tok.unk_id in fast_ids[1].numpy()


def _convert(module, function, flex):
    converter = tf.lite.TFLiteConverter.from_concrete_functions([function.get_concrete_function()], module)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS] + (
        [tf.lite.OpsSet.SELECT_TF_OPS] if flex else [])
    converter.allow_custom_ops = not flex
    return converter.convert()


def _run(lite, **inputs):
    from ai_edge_litert.interpreter import InterpreterWithCustomOps
    from tensorflow_text.core.pybinds import tflite_registrar

    interpreter = InterpreterWithCustomOps(model_content=lite, custom_op_registerers=tflite_registrar.SELECT_TFTEXT_OPS)
    return interpreter.get_signature_runner()(**inputs)


def test_tflite_converts_the_tokenizer_only_to_ops_litert_cannot_run(tok):
    pytest.importorskip("ai_edge_litert.interpreter")
    from apps.export import TFTEXT_TFLITE_OPS

    class Ops(tf.Module):
        def __init__(self):
            super().__init__()
            self.tokenizer = tok

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
        def tokenize(self, texts):
            ids = self.tokenizer.tokenize(texts)
            return {"ids": ids.flat_values, "lengths": tf.cast(ids.row_lengths(), tf.int32)}

        @tf.function(input_signature=[tf.TensorSpec([None, None], tf.int32)])
        def detokenize(self, ids):
            return {"texts": self.tokenizer.detokenize(ids)}

    module = Ops()
    texts = np.array([ROUND_TRIP["tabs"].encode()], dtype=object)
    ids = tok.tokenize(tf.constant([ROUND_TRIP["tabs"]])).to_tensor().numpy()
    expected = {
        "tokenize": ({"SentencepieceOp", "SentencepieceTokenizeOp"}, {"texts": texts}),
        "detokenize": ({"SentencepieceOp", "SentencepieceDetokenizeOp"}, {"ids": ids}),
    }
    for name, (sentencepiece_ops, inputs) in expected.items():
        # Built-ins plus custom ops: converts, but tf_text registers no kernel for these.
        custom = _convert(module, getattr(module, name), flex=False)
        assert sentencepiece_ops <= set(tflite_ops(custom)) and not flex_ops(custom)
        assert not sentencepiece_ops & TFTEXT_TFLITE_OPS  # apps.export.convert_to_tflite refuses them
        with pytest.raises(RuntimeError, match="unresolved custom op: Sentencepiece"):
            _run(custom, **inputs)
        # Flex: converts to TensorFlow-fallback ops, which the Python interpreter has no delegate for.
        flex = _convert(module, getattr(module, name), flex=True)
        assert {f"Flex{op}" for op in sentencepiece_ops} <= set(flex_ops(flex))
        with pytest.raises(RuntimeError, match="Select TensorFlow op"):
            _run(flex, **inputs)
