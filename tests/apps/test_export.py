"""The shared exporter (``apps/export.py``): raw inputs in, text out, SavedModel and TFLite, for every app.

Three tiny models go through the same path:

* a text encoder-decoder taught eight ``tfsuite_translation``-style pairs by
  heart (word-level WordPiece vocabularies built from them), with the
  translation API's names;
* an encoder-decoder whose encoder reads image pixels (captions of four
  synthetic pictures);
* a decoder-only language model (prompt in, continuation out).

The references are independent of the exported graph: the German the model
was taught, and Python-side inputs (tokenized and formatted with NumPy, or
pixels read with PIL) fed to ``layers.generation.TextGenerator`` (the Keras
decode loop).
"""

import io
import json
import os
import string
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_text as tf_text
from PIL import Image

from apps.export import (
    TFLITE_FILES,
    GenerationExport,
    SignatureNames,
    TFLiteRunner,
    TFTEXT_TFLITE_OPS,
    custom_ops,
    read_settings,
    write_generation_saved_model,
    write_tflite,
)
from apps.seq2seq import Seq2SeqDecoder
from layers.generation import TextGenerator
from layers.generation_export import flex_ops
from layers.samplers import BeamSampler
from layers.transformer_models import Transformer, TransformerCausalLM
from pipelines.preprocessing import ImagePreprocessor, PromptPreprocessor, TextPreprocessor, restore_spacing
from pipelines.wordpiece import RESERVED_TOKENS, WordpieceTokenizer

ENGLISH = [
    "Open the file.",
    "Close the window without saving?",
    "Delete all selected messages",
    "The printer is not ready.",
    "Show hidden files and folders",
    "Save the document before closing it.",
    "Could not connect to the server",
    "Cut, copy and paste text",
]
GERMAN = [
    "Datei öffnen.",
    "Fenster schließen, ohne zu speichern?",
    "Alle ausgewählten Nachrichten löschen",
    "Der Drucker ist nicht bereit.",
    "Versteckte Dateien und Ordner anzeigen",
    "Dokument vor dem Schließen speichern.",
    "Verbindung zum Server fehlgeschlagen",
    "Text ausschneiden, kopieren und einfügen",
]
# Sentences to translate: four taught ones, known words in a new order,
# unknown characters, a sentence longer than source_length (cut).
TAUGHT = 4
SENTENCES = [*ENGLISH[:TAUGHT], "Delete the hidden folders?", "Größe ändern ☃ now", " ".join(["save the document"] * 8)]
SOURCE_LENGTH = 12
MAX_NEW_TOKENS = 8
NUM_BEAMS = 2
BEAM_SIZES = (1, 2, 3)
ENCODER_ROWS = 32768
NAMES = SignatureNames(input="sentences", output="translations", options="translate", tokens="translate_tokens")


def _vocabulary(texts, lower_case):
    """Reserved tokens, every word of ``texts`` (as the tokenizer normalizes them), and single characters."""
    normalizer = tf_text.FastBertNormalizer(lower_case_nfd_strip_accents=lower_case)
    words = set()
    for text in normalizer.normalize(tf.constant(texts)).numpy():
        text = text.decode("utf-8")
        for mark in string.punctuation:
            text = text.replace(mark, f" {mark} ")
        words.update(text.split())
    chars = sorted({c for word in words for c in word})
    return [*RESERVED_TOKENS, *sorted(words - set(chars)), *chars, *(f"##{c}" for c in chars)]


def _strings(tensor):
    return [s.decode("utf-8") for s in np.asarray(tensor).tolist()]


@pytest.fixture(scope="module")
def tokenizers():
    source = WordpieceTokenizer(_vocabulary(ENGLISH, lower_case=True))
    target = WordpieceTokenizer(_vocabulary(GERMAN, lower_case=False), lower_case=False)
    return source, target


def _source_ids(tokenizer, sentences, length):
    """Reference source formatting in NumPy: [START] ids [END], cut to ``length`` (the [END] kept), padded."""
    rows = []
    for ids in tokenizer.tokenize(tf.constant(sentences)).to_list():
        ids = [tokenizer.start_id, *ids[: length - 2], tokenizer.end_id]
        rows.append(ids + [tokenizer.pad_id] * (length - len(ids)))
    return np.array(rows, "int32")


def _teacher_forcing(target, texts, length):
    decoder, labels = np.zeros((len(texts), length), "int32"), np.zeros((len(texts), length), "int32")
    for row, ids in enumerate(target.tokenize(tf.constant(texts)).to_list()):
        decoder[row, : len(ids) + 1] = [target.start_id, *ids]
        labels[row, : len(ids) + 1] = [*ids, target.end_id]
    return decoder, labels


def _teach(model, features, labels, pad_id, steps=100):
    model.compile(
        keras.optimizers.Adam(3e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True, ignore_class=pad_id),
    )
    tiled = {key: np.tile(value, (steps,) + (1,) * (value.ndim - 1)) for key, value in features.items()}
    model.fit(tiled, np.tile(labels, (steps, 1)), batch_size=len(labels), epochs=1, shuffle=False, verbose=0)
    return model


@pytest.fixture(scope="module")
def model(tokenizers):
    """A tiny Transformer taught the eight pairs by heart: source-dependent output with clear margins.

    Its source embedding table has ENCODER_ROWS rows (the tokenizer uses the
    first hundred): weights that cost nothing to run but, as in a real model,
    outweigh the tokenizers' fixed-size tables (about 1 MB), so the int8 file
    size means something.
    """
    source, target = tokenizers
    keras.utils.set_random_seed(7)
    model = Transformer(
        ENCODER_ROWS, target.vocab_size, 32, num_encoder_layers=1, num_decoder_layers=1, hidden_dim=64,
        num_heads=2, intermediate_dim=256, normalize_first=True,
    )
    encoder = _source_ids(source, ENGLISH, SOURCE_LENGTH)
    decoder, labels = _teacher_forcing(target, GERMAN, MAX_NEW_TOKENS)
    features = {"encoder_inputs": encoder, "encoder_padding_mask": encoder != 0, "decoder_token_ids": decoder}
    return _teach(model, features, labels, target.pad_id)


@pytest.fixture(scope="module")
def preprocessor(tokenizers):
    return TextPreprocessor(*tokenizers, SOURCE_LENGTH, language="de", input_name="sentences")


@pytest.fixture(scope="module")
def export(model, preprocessor):
    return GenerationExport(
        model, preprocessor, names=NAMES, max_new_tokens=MAX_NEW_TOKENS, num_beams=NUM_BEAMS, beam_sizes=BEAM_SIZES
    )


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("saved_models")


@pytest.fixture(scope="module")
def export_dir(export, models_dir):
    return write_generation_saved_model(export, models_dir / "translation_en_de" / "1")


@pytest.fixture(scope="module")
def loaded(export_dir):
    return tf.saved_model.load(str(export_dir))


def _keras_tokens(model, tokenizers, sentences, num_beams, max_new_tokens=MAX_NEW_TOKENS):
    """The Keras decode loop on Python-side ids: generated tokens (batch, MAX_NEW_TOKENS), [START] dropped."""
    source, target = tokenizers
    ids = _source_ids(source, sentences, SOURCE_LENGTH)
    generator = TextGenerator(
        model, sampler=BeamSampler(num_beams), max_new_tokens=max_new_tokens, end_token_id=target.end_id,
        pad_token_id=target.pad_id, cache_length=max_new_tokens + 1, jit_compile=False,
    )
    start = np.full((len(sentences), 1), target.start_id, "int32")
    out = generator(start, encoder_inputs={"encoder_inputs": ids, "encoder_padding_mask": ids != source.pad_id})
    return np.pad(out["token_ids"][:, 1:], [[0, 0], [0, MAX_NEW_TOKENS - max_new_tokens]])


@pytest.fixture(scope="module")
def keras_tokens(model, tokenizers):
    """The Keras decode loop's tokens for SENTENCES, by beam size (1: greedy)."""
    return {beams: _keras_tokens(model, tokenizers, SENTENCES, beams) for beams in BEAM_SIZES}


@pytest.fixture(scope="module")
def tflite_paths(export_dir):
    return write_tflite(export_dir, export_dir.parent / "tflite")


# --- the text model: the graph, the signatures, a fresh process ----------------------------------


def test_preprocessor_formats_the_source_like_the_reference(preprocessor, tokenizers):
    inputs, status = preprocessor.encoder_inputs(tf.constant(SENTENCES))
    expected = _source_ids(tokenizers[0], SENTENCES, SOURCE_LENGTH)
    np.testing.assert_array_equal(inputs["encoder_inputs"].numpy(), expected)
    np.testing.assert_array_equal(inputs["encoder_padding_mask"].numpy(), expected != 0)
    assert _strings(status) == ["ok"] * 5 + ["truncated"] * 2  # 14 and 24 pieces; 10 fit


def test_in_graph_generation_equals_the_keras_beam_search(export, keras_tokens, tokenizers):
    for beams in BEAM_SIZES:
        out = export.options(tf.constant(SENTENCES), beams, MAX_NEW_TOKENS)
        np.testing.assert_array_equal(out["token_ids"].numpy(), keras_tokens[beams], err_msg=f"beam {beams}")
        np.testing.assert_array_equal(out["lengths"].numpy(), (keras_tokens[beams] != 0).sum(axis=1))
    # The taught sentences come out as the German the model learned, with the usual spacing.
    served = _strings(export.serving_default(tf.constant(SENTENCES))["translations"])
    assert served[:TAUGHT] == GERMAN[:TAUGHT]
    raw = _strings(tokenizers[1].detokenize(keras_tokens[NUM_BEAMS]))
    assert served == restore_spacing(raw, "de") and raw[0] == "Datei öffnen ."


def test_python_decoder_serves_the_saved_models_strings(export, model, preprocessor):
    """The Keras path (what ``tfsuite evaluate --checkpoint`` scores: XLA loops, bucketed source) agrees."""
    decoder = Seq2SeqDecoder(model, preprocessor, beam_size=NUM_BEAMS, max_new_tokens=MAX_NEW_TOKENS, length_ratio=0,
                             batch_size=4)  # fmt: skip
    texts, statuses = decoder.decode(SENTENCES + ["", b"\xff\xfe".decode("latin-1")])
    served = export.serving_default(tf.constant(SENTENCES + ["", b"\xff\xfe".decode("latin-1")]))
    assert texts == _strings(served["translations"])
    assert statuses == _strings(served["status"])


def test_saved_model_signatures_are_pinned(export_dir, loaded, tokenizers):
    """The signatures are the API TF Serving clients and the demo call: names, dtypes and shapes."""
    strings, anything = ("string", [None]), ("string", None)
    options = {"sentences": anything, "beam_size": ("int32", None), "max_length": ("int32", None)}
    generated = {"translations": strings, "token_ids": ("int32", [None, MAX_NEW_TOKENS]), "lengths": ("int32", [None])}
    counts = {"input_tokens": ("int32", [None]), "unknown_tokens": ("int32", [None])}
    expected = {
        "serving_default": ({"sentences": anything}, {"translations": strings, "status": strings}),
        "translate": (options, {**generated, "status": strings}),
        "translate_tokens": ({"sentences": strings}, {**generated, **counts}),
    }
    assert set(loaded.signatures) == {*expected, "stream_start", "stream_step", "stream_finish"}
    for name, (inputs, outputs) in expected.items():
        function = loaded.signatures[name]
        got_inputs = {
            k: (v.dtype.name, v.shape.as_list() if v.shape.rank is not None else None)
            for k, v in function.structured_input_signature[1].items()
        }
        got_outputs = {k: (v.dtype.name, v.shape.as_list()) for k, v in function.structured_outputs.items()}
        assert got_inputs == inputs, name
        assert got_outputs == outputs, name
    settings = read_settings(export_dir)
    assert settings["num_beams"] == NUM_BEAMS and settings["max_new_tokens"] == MAX_NEW_TOKENS
    assert settings["source_length"] == SOURCE_LENGTH and settings["beam_sizes"] == list(BEAM_SIZES)
    assert settings["language"] == "de" and settings["names"]["output"] == "translations"
    restored = WordpieceTokenizer.load(export_dir / "assets" / "tokenizers" / "target")
    assert restored.vocab == tokenizers[1].vocab and restored.lower_case is False


def test_saved_model_stores_each_weight_once(export_dir, model):
    stored = sum(f.stat().st_size for f in (export_dir / "variables").glob("variables.data-*"))
    assert 4 * model.count_params() <= stored <= 1.05 * 4 * model.count_params(), (stored, model.count_params())


def test_saved_model_stores_each_signature_graph_once(export_dir):
    """The decode loop is the bulk of saved_model.pb (about 0.8 MB per signature for the en-de release): each
    signature's function is written once, not once for the signature and again for the attribute."""
    from tensorflow.core.protobuf import saved_model_pb2

    saved = saved_model_pb2.SavedModel()
    saved.ParseFromString((export_dir / "saved_model.pb").read_bytes())
    library = saved.meta_graphs[0].graph_def.library.function
    traced = [f for f in library if f.signature.name.startswith("__inference_traced_")]
    assert len(traced) == len(saved.meta_graphs[0].signature_def) - 1, sorted(f.signature.name for f in traced)


def test_float16_weights_halve_the_file_and_serve_the_float16_rounded_model(model, preprocessor, tokenizers, tmp_path):
    """``weights_dtype="float16"``: 2 bytes per weight on disk, and the served tokens are exactly those of the
    Keras model whose weights were rounded to float16 (so the float32 variables are not what it reads)."""
    export16 = GenerationExport(model, preprocessor, names=NAMES, max_new_tokens=MAX_NEW_TOKENS, num_beams=NUM_BEAMS,
                                beam_sizes=BEAM_SIZES, weights_dtype="float16")  # fmt: skip
    directory = write_generation_saved_model(export16, tmp_path / "1")
    stored = sum(f.stat().st_size for f in (directory / "variables").glob("variables.data-*"))
    assert 2 * model.count_params() <= stored <= 1.05 * 2 * model.count_params(), (stored, model.count_params())
    assert read_settings(directory)["weights_dtype"] == "float16"
    rounded = keras.models.clone_model(model)
    rounded.set_weights([w.astype("float16").astype("float32") for w in model.get_weights()])
    reloaded = tf.saved_model.load(str(directory)).signatures["translate"]
    for beams in BEAM_SIZES:
        expected = _keras_tokens(rounded, tokenizers, SENTENCES, beams)
        served = reloaded(sentences=tf.constant(SENTENCES), beam_size=tf.constant(beams),
                          max_length=tf.constant(MAX_NEW_TOKENS))  # fmt: skip
        np.testing.assert_array_equal(served["token_ids"].numpy(), expected, err_msg=f"beam {beams}")
    with pytest.raises(ValueError, match="weights_dtype must be one of"):
        GenerationExport(model, preprocessor, weights_dtype="int4")


def test_every_row_has_a_status_and_blank_rows_get_no_invented_output(loaded):
    inputs = ["Open the file.", "", "   ", b"\xff\xfeinvalid", "☃ ☃ ☃ ☃", SENTENCES[-1]]
    served = loaded.signatures["serving_default"](sentences=tf.constant(inputs))
    assert _strings(served["status"]) == ["ok", "empty", "empty", "invalid_utf8", "out_of_vocabulary", "truncated"]
    translations = [t.decode("utf-8", "replace") for t in served["translations"].numpy()]
    assert translations[0] == "Datei öffnen." and translations[1:4] == ["", "", ""]
    assert translations[4] and translations[5]  # translated, and flagged
    options = loaded.signatures["translate"](sentences=tf.constant(inputs), beam_size=1, max_length=MAX_NEW_TOKENS)
    assert list(options["lengths"].numpy()[1:4]) == [0, 0, 0] and not options["token_ids"].numpy()[1:4].any()


def test_max_length_limits_the_search_and_beam_sizes_share_one_graph(loaded, model, tokenizers):
    translate = loaded.signatures["translate"]
    short = translate(sentences=tf.constant(SENTENCES), beam_size=NUM_BEAMS, max_length=3)
    # max_length is a real limit of the search: the beam search of at most 3 tokens.
    np.testing.assert_array_equal(short["token_ids"].numpy(), _keras_tokens(model, tokenizers, SENTENCES, NUM_BEAMS, 3))
    assert short["lengths"].numpy().max() <= 3


BOUNDARY_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import tensorflow as tf
    import tensorflow_text  # the tf_text ops, as the TF Serving binary links them
    model = tf.saved_model.load(sys.argv[1])
    default, translate = model.signatures["serving_default"], model.signatures["translate"]
    calls = {
        "scalar string": lambda: default(sentences=tf.constant("Open the file.")),
        "2-D batch": lambda: default(sentences=tf.constant([["Open the file.", "Close"]])),
        "int tensor": lambda: default(sentences=tf.constant([1, 2])),
        "beam size 9": lambda: translate(sentences=tf.constant(["Open"]), beam_size=9, max_length=4),
        "max length 0": lambda: translate(sentences=tf.constant(["Open"]), beam_size=1, max_length=0),
        "beam size vector": lambda: translate(sentences=tf.constant(["Open"]), beam_size=[1, 2], max_length=4),
    }
    errors = {}
    for name, call in calls.items():
        try:
            call()
            errors[name] = None
        except Exception as e:  # the process must survive every one of them
            errors[name] = type(e).__name__ + ": " + str(e)[:3000]
    ok = default(sentences=tf.constant(["Open the file."]))["translations"].numpy()[0].decode()
    print(json.dumps({"errors": errors, "after": ok}))
    """
)


def test_bad_requests_get_readable_errors_and_leave_the_process_alive(export_dir):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": ""}
    result = subprocess.run(
        [sys.executable, "-c", BOUNDARY_SCRIPT, str(export_dir)], capture_output=True, text=True, env=env,
        cwd=export_dir, timeout=600, check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]  # no segmentation fault, no abort
    report = json.loads(result.stdout.strip().splitlines()[-1])
    errors = report["errors"]
    shape = "sentences must be a 1-D batch of strings, shape (batch,)"
    assert errors["scalar string"].startswith("InvalidArgumentError") and shape in errors["scalar string"]
    assert errors["2-D batch"].startswith("InvalidArgumentError") and shape in errors["2-D batch"]
    assert errors["int tensor"] is not None and "string" in errors["int tensor"]
    assert "beam_size must be one of [1, 2, 3], got" in errors["beam size 9"]
    assert "max_length must be in [1, 8], got" in errors["max length 0"]
    assert "beam_size must be a scalar int32, shape ()" in errors["beam size vector"]
    assert report["after"] == "Datei öffnen."  # still serving


def test_fresh_process_with_only_tensorflow_and_tensorflow_text_serves_the_same_strings(export_dir, export):
    script = textwrap.dedent(
        """
        import json, sys
        import tensorflow as tf
        import tensorflow_text  # registers the tf_text ops, as the TF Serving binary links them
        model = tf.saved_model.load(sys.argv[1])
        sentences = tf.constant(json.loads(sys.argv[2]))
        out = model.signatures["serving_default"](sentences=sentences)
        ours = sorted(m for m in sys.modules if m.split(".")[0] in ("apps", "layers", "pipelines", "keras_hub"))
        print(json.dumps({"translations": [t.decode("utf-8") for t in out["translations"].numpy()],
                          "status": [s.decode() for s in out["status"].numpy()], "ours": ours}))
        """
    )
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": ""}
    result = subprocess.run(
        [sys.executable, "-c", script, str(export_dir), json.dumps(SENTENCES)],
        capture_output=True, text=True, env=env, cwd=export_dir, timeout=600, check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    served = json.loads(result.stdout.strip().splitlines()[-1])
    assert served["ours"] == [], "the SavedModel must not need tfsuite code"
    assert served["translations"] == _strings(export.serving_default(tf.constant(SENTENCES))["translations"])


def test_stream_signatures_are_the_options_loop_cut_open(loaded, export_dir):
    settings = read_settings(export_dir)
    names = settings["state_names"]
    inputs = {"sentences": tf.constant(SENTENCES[:3]), "beam_size": tf.constant(NUM_BEAMS), "max_length": tf.constant(6)}
    state = loaded.signatures["stream_start"](**inputs)
    partials, steps = [], 0
    while True:
        step = loaded.signatures["stream_step"](**{name: state[name] for name in names})
        state = {name: step[name] for name in names}
        partials.append(_strings(step["partial"]))
        steps += 1
        if not bool(step["running"].numpy()):
            break
    final = loaded.signatures["stream_finish"](**state)
    whole = loaded.signatures["translate"](**inputs)
    for key in ("translations", "token_ids", "lengths", "status"):
        np.testing.assert_array_equal(final[key].numpy(), whole[key].numpy(), err_msg=key)
    assert partials[-1] == _strings(whole["translations"])
    assert steps <= 6 and len(partials[0][0]) <= len(partials[-1][0])  # words arrive one step at a time


# --- TFLite ----------------------------------------------------------------------------------


def test_tflite_float_and_int8_run_the_whole_decode_in_litert(tflite_paths, export, keras_tokens):
    expected = keras_tokens[NUM_BEAMS]
    served = export.serving_default(tf.constant([s.encode() for s in SENTENCES] + [b"", b"\xff"]))
    results = {}
    for kind, path in tflite_paths.items():
        tflite_model = path.read_bytes()
        assert flex_ops(tflite_model) == [], kind
        assert set(custom_ops(tflite_model)) <= TFTEXT_TFLITE_OPS, kind
        results[kind] = TFLiteRunner(path)(SENTENCES + ["", b"\xff"])
    # Float: the same tokens as Keras and the same strings and status as the SavedModel.
    np.testing.assert_array_equal(results["float"]["token_ids"][: len(SENTENCES)], expected)
    assert results["float"]["translations"] == _strings(served["translations"])
    assert results["float"]["status"] == _strings(served["status"])
    # Int8 weights change the logits a little: most sentences decode the same,
    # and every taught one still comes out as its German.
    same = (results["int8"]["token_ids"][: len(SENTENCES)] == expected).all(axis=1)
    assert same.sum() >= len(SENTENCES) - 2, (same, results["int8"]["token_ids"], expected)
    assert results["int8"]["translations"][:TAUGHT] == GERMAN[:TAUGHT]
    # One sentence at a time gives the batch's answer (the batch dimension is dynamic).
    single = TFLiteRunner(tflite_paths["float"])(SENTENCES[:1])
    np.testing.assert_array_equal(single["token_ids"], expected[:1])
    with pytest.raises(ValueError, match="got a single one; wrap it in a list"):
        TFLiteRunner(tflite_paths["float"])("Open the file.")


def test_int8_file_is_at_most_35_percent_of_float(tflite_paths):
    float_size, int8_size = (tflite_paths[k].stat().st_size for k in ("float", "int8"))
    assert int8_size <= 0.35 * float_size, (int8_size, float_size)
    folder = tflite_paths["float"].parent
    assert (folder / "target_vocab.txt").read_text(encoding="utf-8").split("\n")[:4] == [
        "[PAD]", "[UNK]", "[START]", "[END]",
    ]
    readme = (folder / "README.txt").read_text(encoding="utf-8")
    assert "InterpreterWithCustomOps" in readme and "'de' rules" in readme
    assert read_settings(folder.parent / "1") == json.loads((folder / "generation.json").read_text())
    assert sorted(TFLITE_FILES.values()) == sorted(p.name for p in tflite_paths.values())


def test_export_refuses_to_overwrite_and_bad_settings(export, export_dir, model, preprocessor):
    with pytest.raises(FileExistsError, match="already exists"):
        write_generation_saved_model(export, export_dir)
    with pytest.raises(ValueError, match=r"num_beams=3 must be one of beam_sizes \[1, 2\]"):
        GenerationExport(model, preprocessor, num_beams=3, beam_sizes=(1, 2))


# --- any encoder input, and decoder-only models, through the same path ---------------------------

CAPTIONS = ["a red square", "a blue circle", "two green dots", "an empty frame"]
IMAGE_SIZE = 16


def _pictures():
    rng = np.random.default_rng(0)
    pixels = (rng.random((len(CAPTIONS), IMAGE_SIZE, IMAGE_SIZE, 3)) * 255).astype("uint8")
    encoded = []
    for array in pixels:
        buffer = io.BytesIO()
        Image.fromarray(array).save(buffer, "PNG")
        encoded.append(buffer.getvalue())
    return pixels.astype("float32") / 255.0, encoded


@pytest.fixture(scope="module")
def caption_release(tmp_path_factory):
    """A tiny captioner (image-patch encoder) taught four captions, exported through the shared path."""
    target = WordpieceTokenizer(_vocabulary(CAPTIONS, lower_case=True))
    keras.utils.set_random_seed(3)
    model = Transformer(
        None, target.vocab_size, 32, num_encoder_layers=1, num_decoder_layers=1, hidden_dim=32, num_heads=2,
        normalize_first=True, position_encoding="learned", encoder_input="image", patch_size=4,
    )
    pixels, encoded = _pictures()
    decoder, labels = _teacher_forcing(target, CAPTIONS, MAX_NEW_TOKENS)
    _teach(model, {"encoder_inputs": pixels, "decoder_token_ids": decoder}, labels, target.pad_id, steps=150)
    names = SignatureNames(input="image_bytes", output="captions", options="caption", tokens="caption_tokens")
    export = GenerationExport(model, ImagePreprocessor(target, IMAGE_SIZE), names=names,
                              max_new_tokens=MAX_NEW_TOKENS, num_beams=2, beam_sizes=(1, 2))  # fmt: skip
    directory = write_generation_saved_model(export, tmp_path_factory.mktemp("captions") / "1")
    return model, target, directory, pixels, encoded


@pytest.fixture(scope="module")
def completion_release(tmp_path_factory):
    """A tiny decoder-only LM taught four sentences, exported through the shared path."""
    tokenizer = WordpieceTokenizer(_vocabulary(GERMAN[:4], lower_case=False), lower_case=False)
    keras.utils.set_random_seed(5)
    model = TransformerCausalLM(tokenizer.vocab_size, 32, num_layers=1, hidden_dim=32, num_heads=2)
    inputs, labels = _teacher_forcing(tokenizer, GERMAN[:4], 16)
    model.compile(keras.optimizers.Adam(3e-3), loss=keras.losses.SparseCategoricalCrossentropy(
        from_logits=True, ignore_class=tokenizer.pad_id))  # fmt: skip
    model.fit(np.tile(inputs, (150, 1)), np.tile(labels, (150, 1)), batch_size=4, shuffle=False, verbose=0)
    names = SignatureNames(input="prompts", output="completions", options="complete", tokens="complete_tokens")
    export = GenerationExport(model, PromptPreprocessor(tokenizer, 6, language="de"), names=names,
                              max_new_tokens=MAX_NEW_TOKENS, num_beams=2, beam_sizes=(1, 2))  # fmt: skip
    directory = write_generation_saved_model(export, tmp_path_factory.mktemp("completions") / "1")
    return model, tokenizer, directory


def test_image_encoder_decoder_exports_to_saved_model_and_tflite_with_the_keras_tokens(caption_release):
    model, target, directory, pixels, encoded = caption_release
    generator = TextGenerator(model, BeamSampler(2), max_new_tokens=MAX_NEW_TOKENS, end_token_id=target.end_id,
                              cache_length=MAX_NEW_TOKENS + 1, jit_compile=False)  # fmt: skip
    start = np.full((len(CAPTIONS), 1), target.start_id, "int32")
    expected = generator(start, encoder_inputs=pixels)["token_ids"][:, 1:]
    loaded = tf.saved_model.load(str(directory))
    served = loaded.signatures["caption"](image_bytes=tf.constant(encoded + [b"not an image"]), beam_size=2,
                                          max_length=MAX_NEW_TOKENS)  # fmt: skip
    np.testing.assert_array_equal(served["token_ids"].numpy()[:4], expected)
    assert _strings(served["captions"])[:4] == CAPTIONS  # taught by heart, read from PNG bytes
    assert _strings(served["status"]) == ["ok"] * 4 + ["unreadable"] and _strings(served["captions"])[4] == ""
    paths = write_tflite(directory, directory.parent / "tflite")
    for kind, path in paths.items():
        assert flex_ops(path.read_bytes()) == [] and set(custom_ops(path.read_bytes())) <= TFTEXT_TFLITE_OPS
    tflite = TFLiteRunner(paths["float"])(pixels)  # TFLite reads pixels (image decoding has no TFLite kernel)
    np.testing.assert_array_equal(tflite["token_ids"], expected)
    assert tflite["captions"] == CAPTIONS


def test_decoder_only_model_exports_to_saved_model_and_tflite_with_the_keras_tokens(completion_release):
    model, tokenizer, directory = completion_release
    prompts = ["Datei", "Der Drucker", "Fenster schließen ,"]
    rows = []
    for ids in tokenizer.tokenize(tf.constant(prompts)).to_list():
        rows.append([tokenizer.start_id, *ids] + [tokenizer.pad_id] * (6 - 1 - len(ids)))
    prompt_ids = np.array(rows, "int32")
    lengths = (prompt_ids != tokenizer.pad_id).sum(axis=1)
    generator = TextGenerator(model, BeamSampler(2), max_new_tokens=MAX_NEW_TOKENS, end_token_id=tokenizer.end_id,
                              cache_length=6 + MAX_NEW_TOKENS, jit_compile=False)  # fmt: skip
    out = generator(prompt_ids, lengths)
    expected = np.zeros((len(prompts), MAX_NEW_TOKENS), "int32")
    for row, (tokens, start, end) in enumerate(zip(out["token_ids"], lengths, out["lengths"])):
        expected[row, : end - start] = tokens[start:end]
    loaded = tf.saved_model.load(str(directory))
    served = loaded.signatures["complete"](prompts=tf.constant(prompts), beam_size=2, max_length=MAX_NEW_TOKENS)
    np.testing.assert_array_equal(served["token_ids"].numpy(), expected)
    continuations = _strings(served["completions"])
    assert continuations[0] == "öffnen."  # "Datei öffnen." was taught; the prompt is not repeated
    paths = write_tflite(directory, directory.parent / "tflite")
    tflite = TFLiteRunner(paths["float"])(prompts)
    np.testing.assert_array_equal(tflite["token_ids"], expected)
    assert tflite["completions"] == continuations and tflite["status"] == ["ok"] * 3


@pytest.mark.parametrize("weights", ["float32", "float16", "int8"])
def test_the_plain_exporter_stores_each_weight_once_in_the_chosen_dtype(weights, tmp_path):
    from apps.export import export_saved_model
    from apps.image_classification import FashionMNISTApp, FashionMNISTConfig

    app, config = FashionMNISTApp(), FashionMNISTConfig(model="vgg_small")
    config.export_weights = weights  # the exporter reads it when a config has it
    model = app.build_model(config)
    export_saved_model(app, model, config, tmp_path / "release")
    stored = sum(p.stat().st_size for p in (tmp_path / "release" / "variables").iterdir())
    bytes_per_weight = {"float32": 4, "float16": 2, "int8": 1}[weights]
    assert stored < 1.15 * model.count_params() * bytes_per_weight + 20_000, stored  # + float16 biases, scales, index
    images = np.random.default_rng(0).random((3, 28, 28, 1), dtype=np.float32)
    served = tf.saved_model.load(str(tmp_path / "release")).signatures["serving_default"](images=tf.constant(images))
    direct = app.serving_outputs(model, {"images": tf.constant(images)}, config)["probabilities"]
    np.testing.assert_allclose(served["probabilities"].numpy(), direct, atol={"float32": 1e-6, "float16": 1e-2, "int8": 5e-2}[weights])
