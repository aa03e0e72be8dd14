"""Translation export: the SavedModel for TF Serving and the TFLite float / int8 models.

A tiny ``TranslationModel`` taught eight ``tfsuite_translation``-style pairs
by heart (word-level WordPiece vocabularies built from them) goes through the
export once per module; every test reads those files. The references are
independent of the exported graph: the German the model was taught, and
Python-side tokenization with NumPy source formatting fed to
``layers.generation.TextGenerator`` (the Keras decode loop).
"""

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
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, text_format

from apps import cli
from apps.cli import DEFAULT_MODELS_DIR
from apps.ui import latest_version_dir
from apps.translation.export import (
    TFLITE_FILES,
    ExportTranslator,
    TFLiteTranslator,
    TFTEXT_TFLITE_OPS,
    custom_ops,
    evaluate_saved_model,
    evaluate_tflite,
    read_settings,
    write_saved_model,
    write_tflite,
)
from layers.generation import TextGenerator
from layers.generation_export import flex_ops
from layers.samplers import BeamSampler
from apps.translation import TranslationConfig
from apps.translation.data import load_texts, restore_spacing, target_language
from apps.translation.metrics import corpus_bleu
from apps.translation.model import TranslationModel, translate
from layers.transformer_models import TransformerCausalLM
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
# unknown characters, a sentence longer than source_length (cut), and the
# empty string (only [START] [END]).
TAUGHT = 4
SENTENCES = [
    *ENGLISH[:TAUGHT],
    "Delete the hidden folders?",
    "Größe ändern ☃ now",
    " ".join(["save the document"] * 8),
    "",
]
SOURCE_LENGTH = 12
MAX_NEW_TOKENS = 8
NUM_BEAMS = 2
ENCODER_ROWS = 32768


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


@pytest.fixture(scope="module")
def tokenizers():
    source = WordpieceTokenizer(_vocabulary(ENGLISH, lower_case=True))
    target = WordpieceTokenizer(_vocabulary(GERMAN, lower_case=False), lower_case=False)
    return source, target


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
    model = TranslationModel(
        ENCODER_ROWS, target.vocab_size, 32, num_encoder_layers=1, num_decoder_layers=1, hidden_dim=64,
        num_heads=2, intermediate_dim=256, normalize_first=True,
    )
    encoder_inputs = _source_ids(source, ENGLISH, SOURCE_LENGTH)
    decoder_inputs = np.zeros((len(GERMAN), MAX_NEW_TOKENS), "int32")
    labels = np.zeros_like(decoder_inputs)
    for row, ids in enumerate(target.tokenize(tf.constant(GERMAN)).to_list()):
        decoder_inputs[row, : len(ids) + 1] = [target.start_id, *ids]
        labels[row, : len(ids) + 1] = [*ids, target.end_id]
    model.compile(
        keras.optimizers.Adam(3e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True, ignore_class=target.pad_id),
    )
    steps = 100
    model.fit(
        {"encoder_inputs": np.tile(encoder_inputs, (steps, 1)), "decoder_inputs": np.tile(decoder_inputs, (steps, 1))},
        np.tile(labels, (steps, 1)), batch_size=len(ENGLISH), epochs=1, shuffle=False, verbose=0,
    )
    return model


@pytest.fixture(scope="module")
def translator(model, tokenizers):
    source, target = tokenizers
    return ExportTranslator(
        model, source, target, source_length=SOURCE_LENGTH, max_new_tokens=MAX_NEW_TOKENS,
        num_beams=NUM_BEAMS, beam_sizes=(1, NUM_BEAMS), language="de",
    )


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("saved_models")


@pytest.fixture(scope="module")
def export_dir(translator, models_dir):
    return write_saved_model(translator, models_dir / "translation_en_de" / "1")


@pytest.fixture(scope="module")
def loaded(export_dir):
    return tf.saved_model.load(str(export_dir))


@pytest.fixture(scope="module")
def keras_tokens(model, tokenizers):
    """The Keras decode loop's tokens for SENTENCES, by beam size (1: greedy)."""
    return {beams: _keras_tokens(model, tokenizers, SENTENCES, beams) for beams in (1, NUM_BEAMS)}


@pytest.fixture(scope="module")
def tflite_paths(export_dir, models_dir):
    """``tfsuite export translation --format tflite``: both models beside the release's versions."""
    assert cli.main(["export", "translation", "--format", "tflite", "--models-dir", str(models_dir)]) == 0
    return {kind: export_dir.parent / "tflite" / name for kind, name in TFLITE_FILES.items()}


def _source_ids(tokenizer, sentences, length):
    """Reference source formatting in NumPy: [START] ids [END], cut to ``length`` (the [END] kept), padded."""
    rows = []
    for ids in tokenizer.tokenize(tf.constant(sentences)).to_list():
        ids = [tokenizer.start_id, *ids[: length - 2], tokenizer.end_id]
        rows.append(ids + [tokenizer.pad_id] * (length - len(ids)))
    return np.array(rows, "int32")


def _keras_tokens(model, tokenizers, sentences, num_beams):
    """The Keras decode loop on Python-side ids: generated tokens (batch, MAX_NEW_TOKENS), [START] dropped."""
    source, target = tokenizers
    ids = _source_ids(source, sentences, SOURCE_LENGTH)
    sampler = "greedy" if num_beams == 1 else BeamSampler(num_beams)
    generator = TextGenerator(
        model, sampler=sampler, max_new_tokens=MAX_NEW_TOKENS, end_token_id=target.end_id,
        pad_token_id=target.pad_id, cache_length=MAX_NEW_TOKENS + 1, jit_compile=False,
    )
    start = np.full((len(sentences), 1), target.start_id, "int32")
    out = generator(start, encoder_token_ids=ids, encoder_padding_mask=ids != source.pad_id)
    return out["token_ids"][:, 1:]


def _strings(tensor):
    return [s.decode("utf-8") for s in np.asarray(tensor).tolist()]


def test_source_formatting_matches_the_reference(translator, tokenizers):
    ids, lengths = translator.encode_source(tf.constant(SENTENCES))
    expected = _source_ids(tokenizers[0], SENTENCES, SOURCE_LENGTH)
    np.testing.assert_array_equal(ids.numpy(), expected)
    np.testing.assert_array_equal(lengths.numpy(), (expected != 0).sum(axis=1))
    assert lengths.numpy()[-2] == SOURCE_LENGTH and lengths.numpy()[-1] == 2  # cut; empty is [START] [END]


def test_in_graph_translation_equals_the_keras_beam_search(translator, keras_tokens, tokenizers):
    out = translator.translate_tokens(tf.constant(SENTENCES))
    expected = keras_tokens[NUM_BEAMS]
    np.testing.assert_array_equal(out["token_ids"].numpy(), expected)
    np.testing.assert_array_equal(out["lengths"].numpy(), (expected != 0).sum(axis=1))
    assert _strings(out["translations"]) == _strings(tokenizers[1].detokenize(expected))
    # The taught sentences come out as the German the model learned (normalized by the round trip).
    taught = _strings(tokenizers[1].detokenize(tokenizers[1].tokenize(tf.constant(GERMAN[:TAUGHT]))))
    assert _strings(out["translations"])[:TAUGHT] == taught
    assert taught[0] == "Datei öffnen ."
    # serving_default: the same translations with the usual spacing around punctuation.
    served = _strings(translator.serving_default(tf.constant(SENTENCES))["translations"])
    assert served == restore_spacing(_strings(out["translations"]), "de")
    assert served[:TAUGHT] == GERMAN[:TAUGHT]


def test_saved_model_signatures_are_pinned(export_dir, loaded, tokenizers):
    """The signatures are the API TF Serving clients and the demo call: names, dtypes and shapes."""
    strings = ("string", [None])
    generated = {"translations": strings, "token_ids": ("int32", [None, MAX_NEW_TOKENS]), "lengths": ("int32", [None])}
    expected = {
        "serving_default": ({"sentences": strings}, {"translations": strings}),
        "translate": ({"sentences": strings, "beam_size": ("int32", []), "max_length": ("int32", [])}, generated),
        "translate_tokens": ({"sentences": strings}, generated),
    }
    assert set(loaded.signatures) == set(expected)
    for name, (inputs, outputs) in expected.items():
        function = loaded.signatures[name]
        got_inputs = {k: (v.dtype.name, v.shape.as_list()) for k, v in function.structured_input_signature[1].items()}
        got_outputs = {k: (v.dtype.name, v.shape.as_list()) for k, v in function.structured_outputs.items()}
        assert got_inputs == inputs, name
        assert got_outputs == outputs, name
    settings = read_settings(export_dir)
    assert settings["num_beams"] == NUM_BEAMS and settings["max_new_tokens"] == MAX_NEW_TOKENS
    assert settings["source_length"] == SOURCE_LENGTH and settings["beam_sizes"] == [1, NUM_BEAMS]
    assert settings["language"] == "de"
    restored = WordpieceTokenizer.load(export_dir / "assets" / "tokenizers" / "target")
    assert restored.vocab == tokenizers[1].vocab and restored.lower_case is False


def test_saved_model_stores_each_weight_once(export_dir, model):
    stored = sum(f.stat().st_size for f in (export_dir / "variables").glob("variables.data-*"))
    assert 4 * model.count_params() <= stored <= 1.05 * 4 * model.count_params(), (stored, model.count_params())


def test_fresh_process_with_only_tensorflow_and_tensorflow_text_serves_the_same_strings(
    export_dir, translator, model, tokenizers
):
    script = textwrap.dedent(
        """
        import json, sys
        import tensorflow as tf
        import tensorflow_text  # registers the tf_text ops, as the TF Serving binary links them
        model = tf.saved_model.load(sys.argv[1])
        sentences = tf.constant(json.loads(sys.argv[2]))
        out = model.signatures["serving_default"](sentences=sentences)["translations"]
        ours = sorted(m for m in sys.modules if m.split(".")[0] in ("apps", "layers", "pipelines", "keras_hub"))
        print(json.dumps({"translations": [t.decode("utf-8") for t in out.numpy()], "ours": ours}))
        """
    )
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": ""}
    result = subprocess.run(
        [sys.executable, "-c", script, str(export_dir), json.dumps(SENTENCES)],
        capture_output=True, text=True, env=env, cwd=export_dir, timeout=None, check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    served = json.loads(result.stdout.strip().splitlines()[-1])
    assert served["ours"] == [], "the SavedModel must not need tfsuite code"
    assert served["translations"] == _strings(translator.serving_default(tf.constant(SENTENCES))["translations"])
    # tfsuite's own Python path (what `tfsuite evaluate` scores): XLA decode loop, source padded per bucket.
    cut = int(np.sum(tokenizers[0].tokenize(tf.constant(SENTENCES)).row_lengths().numpy() > SOURCE_LENGTH - 2))
    with pytest.warns(UserWarning, match=f"{cut} of {len(SENTENCES)} sentences are longer than {SOURCE_LENGTH}"):
        python_path = translate(
            model, tokenizers, SENTENCES, beam_size=NUM_BEAMS, max_length=MAX_NEW_TOKENS,
            max_source_length=SOURCE_LENGTH, batch_size=len(SENTENCES), language="de",
        )
    assert served["translations"] == python_path


def test_translate_signature_decoding_options(loaded, keras_tokens, tokenizers):
    translate = loaded.signatures["translate"]
    sentences = tf.constant(SENTENCES)
    greedy = translate(sentences=sentences, beam_size=tf.constant(1), max_length=tf.constant(MAX_NEW_TOKENS))
    np.testing.assert_array_equal(greedy["token_ids"].numpy(), keras_tokens[1])
    beam = keras_tokens[NUM_BEAMS]
    short = translate(sentences=sentences, beam_size=tf.constant(NUM_BEAMS), max_length=tf.constant(3))
    np.testing.assert_array_equal(short["token_ids"].numpy()[:, :3], beam[:, :3])
    assert not short["token_ids"].numpy()[:, 3:].any()
    np.testing.assert_array_equal(short["lengths"].numpy(), np.minimum((beam != 0).sum(axis=1), 3))
    assert _strings(short["translations"]) == restore_spacing(_strings(tokenizers[1].detokenize(beam[:, :3])), "de")
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"beam_size must be one of \[1, 2\]"):
        translate(sentences=sentences, beam_size=tf.constant(3), max_length=tf.constant(4))
    with pytest.raises(tf.errors.InvalidArgumentError, match=f"max_length must be at most {MAX_NEW_TOKENS}"):
        translate(sentences=sentences, beam_size=tf.constant(1), max_length=tf.constant(MAX_NEW_TOKENS + 1))


def test_tflite_float_and_int8_run_the_whole_decode_in_litert(tflite_paths, translator, keras_tokens):
    keras_tokens = keras_tokens[NUM_BEAMS]
    served = _strings(translator.serving_default(tf.constant(SENTENCES))["translations"])
    results = {}
    for kind, path in tflite_paths.items():
        tflite_model = path.read_bytes()
        assert flex_ops(tflite_model) == [], kind
        assert set(custom_ops(tflite_model)) <= TFTEXT_TFLITE_OPS, kind
        results[kind] = TFLiteTranslator(path)(SENTENCES)
    # Float: the same tokens and strings as Keras.
    np.testing.assert_array_equal(results["float"]["token_ids"], keras_tokens)
    assert results["float"]["translations"] == served  # spacing restored by TFLiteTranslator (translator.json)
    # Int8 weights change the logits a little: most sentences decode the same,
    # and every taught one still comes out as its German.
    same = (results["int8"]["token_ids"] == keras_tokens).all(axis=1)
    assert same.sum() >= len(SENTENCES) - 2, (same, results["int8"]["token_ids"], keras_tokens)
    assert results["int8"]["translations"][:TAUGHT] == GERMAN[:TAUGHT]
    # One sentence at a time gives the batch's answer (the batch dimension is dynamic).
    single = TFLiteTranslator(tflite_paths["float"])(SENTENCES[:1])
    np.testing.assert_array_equal(single["token_ids"], keras_tokens[:1])


def test_int8_file_is_at_most_35_percent_of_float(tflite_paths):
    float_size, int8_size = (tflite_paths[k].stat().st_size for k in ("float", "int8"))
    assert int8_size <= 0.35 * float_size, (int8_size, float_size)
    folder = tflite_paths["float"].parent
    assert (folder / "vocab_target.txt").read_text(encoding="utf-8").split("\n")[:4] == [
        "[PAD]", "[UNK]", "[START]", "[END]",
    ]
    readme = (folder / "README.txt").read_text(encoding="utf-8")
    assert "InterpreterWithCustomOps" in readme and "'de' rules" in readme
    assert read_settings(folder.parent / "1") == json.loads((folder / "translator.json").read_text())


def test_evaluate_tflite_scores_the_models_translations(tflite_paths, export_dir, capsys):
    float_translations = TFLiteTranslator(tflite_paths["float"])(SENTENCES)["translations"]
    scores = evaluate_tflite(export_dir.parent, "float", SENTENCES, float_translations, "de", batch_size=4)
    assert scores == {"bleu": pytest.approx(100.0), "chrf": pytest.approx(100.0)}
    assert f"TFLite float (translation_float.tflite" in capsys.readouterr().out
    int8 = evaluate_tflite(export_dir.parent, "int8", SENTENCES, float_translations, "de")
    assert int8["bleu"] > 50 and int8["chrf"] > 50  # mostly the same translations
    with pytest.raises(FileNotFoundError, match="tfsuite export translation --format tflite"):
        evaluate_tflite(export_dir, "int8", SENTENCES, float_translations, "de")
    with pytest.raises(ValueError, match="TFLite model must be one of"):
        evaluate_tflite(export_dir.parent, "int4", SENTENCES, float_translations, "de")


def test_evaluate_saved_model_scores_serving_default(export_dir, loaded, capsys):
    served = _strings(loaded.signatures["serving_default"](sentences=tf.constant(SENTENCES))["translations"])
    scores = evaluate_saved_model(export_dir, SENTENCES, served, "de", batch_size=3)
    assert scores == {"bleu": pytest.approx(100.0), "chrf": pytest.approx(100.0)}
    assert f"SavedModel {export_dir} (beam {NUM_BEAMS}): {len(SENTENCES)} test sentences in" in capsys.readouterr().out
    with pytest.raises(FileNotFoundError, match="saved_model.pb is missing"):
        evaluate_saved_model(export_dir.parent, SENTENCES, served, "de")


def test_cli_evaluate_without_checkpoint_uses_the_release(tmp_path, capsys):
    # No release in an empty models dir: the error says how to make one.
    assert cli.main(["evaluate", "translation", "--models-dir", str(tmp_path)]) == 1
    assert "no released model under" in capsys.readouterr().err
    assert cli.main(["evaluate", "translation", "--format", "keras"]) == 2
    assert "--format keras` needs --checkpoint" in capsys.readouterr().err
    assert cli.main(["evaluate", "fashion_mnist", "--format", "saved_model"]) == 2
    assert "cannot evaluate a released SavedModel; pass --checkpoint" in capsys.readouterr().err


def test_cli_tflite_export_without_a_release_says_what_to_do(tmp_path, capsys):
    assert cli.main(["export", "translation", "--format", "tflite", "--models-dir", str(tmp_path)]) == 1
    assert "export one first: `tfsuite export translation --checkpoint" in capsys.readouterr().err
    assert cli.main(["export", "fashion_mnist", "--format", "tflite"]) == 2
    assert "app fashion_mnist has no TFLite export" in capsys.readouterr().err


def test_bad_arguments_raise_clear_errors(model, tokenizers, translator, export_dir, tflite_paths):
    source, target = tokenizers
    lm = TransformerCausalLM(10, 8, hidden_dim=8, num_heads=2)
    with pytest.raises(ValueError, match="needs an encoder-decoder Transformer, got TransformerCausalLM"):
        ExportTranslator(lm, source, target)
    assert ExportTranslator(model, source, target, num_beams=3).beam_sizes == (1, 2, 3, 4)
    with pytest.raises(ValueError, match=r"num_beams must be one of \[1, 2\], got 3"):
        ExportTranslator(model, source, target, num_beams=3, beam_sizes=(1, 2))
    with pytest.raises(FileExistsError, match="already exists"):
        write_saved_model(translator, export_dir)
    with pytest.raises(ValueError, match="got a single string; wrap it in a list"):
        TFLiteTranslator(tflite_paths["float"])("Open the file.")
    with pytest.raises(ValueError, match="non-empty list of sentences"):
        TFLiteTranslator(tflite_paths["float"])([])


def _model_server_config_class():
    """``tensorflow.serving.ModelServerConfig``'s fields we use, to parse models.config strictly.

    TF Serving's protos are not a pip dependency; this mirrors
    ``tensorflow_serving/config/model_server_config.proto`` (field numbers
    included), so an unknown or misspelled field fails to parse as it would in
    ``tensorflow_model_server``.
    """
    proto = descriptor_pb2.FileDescriptorProto(name="tfsuite_model_server_config.proto", package="tfsuite.serving")
    config = proto.message_type.add(name="ModelConfig")
    string, optional, repeated = (
        descriptor_pb2.FieldDescriptorProto.TYPE_STRING,
        descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL,
        descriptor_pb2.FieldDescriptorProto.LABEL_REPEATED,
    )
    for number, name in ((1, "name"), (2, "base_path"), (4, "model_platform")):
        config.field.add(name=name, number=number, type=string, label=optional)
    config_list = proto.message_type.add(name="ModelConfigList")
    config_list.field.add(
        name="config", number=1, label=repeated, type=descriptor_pb2.FieldDescriptorProto.TYPE_MESSAGE,
        type_name=".tfsuite.serving.ModelConfig",
    )
    server = proto.message_type.add(name="ModelServerConfig")
    server.field.add(
        name="model_config_list", number=1, label=optional, type=descriptor_pb2.FieldDescriptorProto.TYPE_MESSAGE,
        type_name=".tfsuite.serving.ModelConfigList",
    )
    pool = descriptor_pool.DescriptorPool()
    pool.Add(proto)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("tfsuite.serving.ModelServerConfig"))


def test_models_config_serves_translation_and_fashion_mnist_from_the_models_mount():
    text = (DEFAULT_MODELS_DIR / "models.config").read_text()
    config = text_format.Parse(text, _model_server_config_class()())
    models = {c.name: c for c in config.model_config_list.config}
    assert set(models) == {"translation_en_de", "fashion_mnist"}
    for name, entry in models.items():
        assert entry.base_path == f"/models/{name}" and entry.model_platform == "tensorflow"
    # The fashion_mnist release is in git: the path the container sees exists here.
    assert any(p.name.isdigit() for p in (DEFAULT_MODELS_DIR / "fashion_mnist").iterdir())
    with pytest.raises(text_format.ParseError):
        text_format.Parse(text.replace("base_path", "base_dir"), _model_server_config_class()())


@pytest.mark.slow
def test_released_model_tflite_int8_keeps_bleu_within_1_of_float_at_a_third_of_the_size(tmp_path, capsys):
    """The released en-de model, converted afresh: int8 <= 35% of the float file, test BLEU within 1.0."""
    config = TranslationConfig()
    version_dir = latest_version_dir(DEFAULT_MODELS_DIR, "translation_en_de")
    paths = write_tflite(version_dir, tmp_path / "tflite")
    sizes = {kind: path.stat().st_size for kind, path in paths.items()}
    sources, references = load_texts(config, "test")
    scores = {
        kind: evaluate_tflite(tmp_path, kind, sources, references, target_language(config), config.eval_batch_size)
        for kind in paths
    }
    with capsys.disabled():
        print(f"\nreleased {version_dir}: sizes {sizes}, int8/float {sizes['int8'] / sizes['float']:.3f}, scores {scores}")
    assert sizes["int8"] <= 0.35 * sizes["float"], sizes
    assert abs(scores["int8"]["bleu"] - scores["float"]["bleu"]) <= 1.0, scores
    # The float TFLite model is the SavedModel's graph: the same BLEU as the release's serving_default.
    serve = tf.saved_model.load(str(version_dir)).signatures["serving_default"]
    served = [
        t.decode("utf-8")
        for begin in range(0, len(sources), config.eval_batch_size)
        for t in serve(sentences=tf.constant(sources[begin : begin + config.eval_batch_size]))["translations"].numpy()
    ]
    # (XNNPACK and TensorFlow round differently: a rare beam can flip.)
    assert corpus_bleu(served, references, target_language(config)) == pytest.approx(scores["float"]["bleu"], abs=0.5)
