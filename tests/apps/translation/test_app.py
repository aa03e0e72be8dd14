"""Translation app: config flags, data pipeline, loss and metric references, preprocess errors, and a tiny
model that trains a few steps and is evaluated through the CLI (``bleu:`` / ``chrf:`` lines).

The corpus is replaced by a small synthetic English-German phrase set
(``load_texts`` is monkeypatched), so these tests run on a fresh clone
without the built TFDS data; one test reads the real corpus when it is built.
"""

import itertools
import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from apps import cli
from apps.config import ConfigError, parse_config
from apps.registry import get_app
from apps.trainer import load_checkpoint, train
from apps.translation import TranslationApp, TranslationConfig
from apps.translation import data as data_lib
from apps.losses import MaskedAccuracy, SmoothedSequenceLoss
from apps.translation.model import TranslationModel, Translator
from layers.generation import TextGenerator
from layers.samplers import BeamSampler
from pipelines.corpora import sources

REAL_LOAD_TEXTS = data_lib.load_texts  # before any test replaces it with the synthetic corpus

VERBS = [("Open", "öffnen"), ("Close", "schließen"), ("Delete", "löschen"), ("Save", "speichern"), ("Print", "drucken")]
OBJECTS = [("the file", "die Datei"), ("the folder", "den Ordner"), ("the window", "das Fenster"),
           ("the message", "die Nachricht"), ("the document", "das Dokument"), ("all images", "alle Bilder")]  # fmt: skip


def synthetic_pairs():
    english, german = [], []
    for (verb, verb_de), (obj, obj_de) in itertools.product(VERBS, OBJECTS):
        english += [f"{verb} {obj}.", f"Could not {verb.lower()} {obj}"]
        german += [f"{obj_de[0].upper()}{obj_de[1:]} {verb_de}.", f"Konnte {obj_de} nicht {verb_de}"]
    return english, german


TINY = dict(
    vocab_size=120, hidden_dim=16, num_heads=2, intermediate_dim=32, num_layers=1, dropout=0.0, batch_size=16,
    batch_tokens=256, max_source_length=16, max_target_length=16, max_new_tokens=8, model_max_length=16,
    beam_size=2, eval_batch_size=8, warmup_steps=2, learning_rate=1e-2, verbose=0, patience=0,
    steps_per_epoch=None, validation_pairs=None,
)


@pytest.fixture
def fake_corpus(monkeypatch):
    english, german = synthetic_pairs()

    def load_texts(config, split):
        end = len(english) if config.limit is None else config.limit
        return english[:end], german[:end]

    monkeypatch.setattr(data_lib, "load_texts", load_texts)
    return english, german


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One tiny training run (3 epochs on the synthetic phrases) shared by the tests below."""
    english, german = synthetic_pairs()
    patch = pytest.MonkeyPatch()
    patch.setattr(data_lib, "load_texts", lambda config, split: (english, german))
    keras.utils.set_random_seed(0)
    app = TranslationApp()
    config = TranslationConfig(**TINY, epochs=3, runs_dir=str(tmp_path_factory.mktemp("runs")), run_name="tiny")
    result = train(app, config, command="pytest")
    yield app, config, result, patch
    patch.undo()


# --- config ------------------------------------------------------------------


def test_registered_and_flags_parse():
    app = get_app("translation")
    assert isinstance(app, TranslationApp)
    config = parse_config(TranslationConfig, ["--language-pair", "en_ja", "--beam-size", "2", "--no-normalize-first"])
    assert (config.language_pair, config.beam_size, config.normalize_first) == ("en_ja", 2, False)
    assert data_lib.dataset_name(config) == "tfsuite_translation/en_ja"
    assert data_lib.target_language(config) == "ja"
    assert app.default_run_name(config) == "en_ja" and app.release_name(config) == "translation_en_ja"
    config = parse_config(TranslationConfig, ["--dataset", "wmt14_translate/de-en"])
    assert data_lib.dataset_name(config) == "wmt14_translate/de-en"
    assert data_lib.target_language(config) == "de"
    assert data_lib.dataset_name(TranslationConfig()) == "tfsuite_translation/en_de"


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"language_pair": "en_fr"}, "language_pair must be one of"),
        ({"lr_schedule": "linear"}, "lr_schedule must be one of"),
        ({"position_encoding": "rotary"}, "position_encoding must be one of"),
        ({"hidden_dim": 30, "num_heads": 4}, "must divide hidden_dim"),
        ({"beam_size": 0}, "beam_size must be a positive integer"),
        ({"max_new_tokens": 200}, "model_max_length=128 is shorter"),
        ({"dropout": 1.0}, "dropout must be in"),
        ({"dataset": "no_such_dataset_xyz"}, "no field mapping for dataset"),
    ],
)
def test_bad_config_raises(overrides, message):
    with pytest.raises(ConfigError, match=message):
        TranslationConfig(**overrides)


# --- data ---------------------------------------------------------------------


def test_pipeline_adds_markers_buckets_and_counts_steps(fake_corpus, tmp_path):
    app = TranslationApp()
    config = TranslationConfig(**TINY, runs_dir=str(tmp_path))
    source_tok, target_tok = app.tokenizers(config)
    assert (tmp_path / "translation" / "en_de" / "tokenizers" / "target" / "vocab.txt").is_file()
    pairs = app.pairs(config, "train")
    ds = app.build_datasets(config).train
    batches = list(ds)
    assert len(batches) == app.steps_per_epoch(config)
    seen = 0
    for inputs, targets in batches:
        enc, dec, targets = inputs["encoder_inputs"].numpy(), inputs["decoder_inputs"].numpy(), targets.numpy()
        assert enc.shape[0] == dec.shape[0] == targets.shape[0] <= config.batch_size
        assert enc.dtype == dec.dtype == np.int32
        assert (enc[:, 0] == source_tok.start_id).all() and (dec[:, 0] == target_tok.start_id).all()
        for row in range(len(targets)):
            real = targets[row][targets[row] != 0]
            # Teacher forcing: targets are the decoder inputs shifted left, ending with [END].
            assert real[-1] == target_tok.end_id
            np.testing.assert_array_equal(dec[row][1 : len(real)], real[:-1])
            source_real = enc[row][enc[row] != 0]
            assert source_real[-1] == source_tok.end_id
        seen += len(targets)
    assert seen == len(pairs.source_texts)
    # Round trip of one target through the tokenizer (cased: German keeps its umlauts).
    assert target_tok.detokenize(target_tok.tokenize(tf.constant(["Die Datei löschen"]))).numpy()[0].decode() == (
        "Die Datei löschen"
    )


def test_long_pairs_are_left_out_of_training(fake_corpus, tmp_path):
    app = TranslationApp()
    base = TranslationConfig(**TINY, runs_dir=str(tmp_path))
    pairs = app.pairs(base, "train")
    source_lengths = pairs.source.row_lengths().numpy() + 2  # [START] ... [END]
    target_lengths = pairs.target.row_lengths().numpy() + 1  # [START] ...
    limit = int(np.median(np.maximum(source_lengths, target_lengths)))
    config = TranslationConfig(**{**TINY, "max_source_length": limit, "max_target_length": limit}, runs_dir=str(tmp_path))
    with pytest.warns(UserWarning, match="left out of training"):
        ds = app.build_datasets(config).train
    kept = sum(int(inputs["encoder_inputs"].shape[0]) for inputs, _ in ds)
    fits = (source_lengths <= limit) & (target_lengths <= limit)
    assert 0 < kept == fits.sum() < len(fits)
    assert kept == sum(1 for _ in ds.unbatch())


@pytest.mark.parametrize(
    "language, detokenized, expected",
    [
        ("de", "Usenet - News - Nachricht .", "Usenet-News-Nachricht."),
        ("de", "Programmier - und Markup - Sprachen ( z . B . C ) : 1 . 5 , fertig !", "Programmier- und Markup-Sprachen (z. B. C): 1.5, fertig!"),
        ("de", "Das Paket » foo « , Version 10 , 000 .", "Das Paket »foo«, Version 10,000."),
        ("ja", "フ ァ イ ル を 開 く 。", "ファイルを開く。"),
    ],
)
def test_restore_spacing_python_and_graph_agree(language, detokenized, expected):
    assert data_lib.restore_spacing([detokenized], language) == [expected]
    graph = data_lib.restore_spacing_graph(tf.constant([detokenized]), language).numpy()[0].decode()
    assert graph == expected


def test_restore_spacing_brings_the_round_trip_close_to_the_text(fake_corpus, tmp_path):
    app = TranslationApp()
    config = TranslationConfig(**TINY, runs_dir=str(tmp_path))
    target = app.tokenizers(config).target
    _, german = fake_corpus
    detokenized = [t.decode() for t in target.detokenize(target.tokenize(tf.constant(german))).numpy()]
    restored = data_lib.restore_spacing(detokenized)
    assert restored == german
    assert sum(a != b for a, b in zip(detokenized, german)) > len(german) // 3


def test_capped_epochs_read_fresh_shuffles_and_validation_subset(fake_corpus, tmp_path):
    app = TranslationApp()
    config = TranslationConfig(**{**TINY, "steps_per_epoch": 2, "validation_pairs": 10}, runs_dir=str(tmp_path))
    datasets = app.build_datasets(config)
    assert app.steps_per_epoch(config) == 2
    # The trainer reads epochs of 2 batches from one stream of reshuffled passes.
    stream = [inputs["encoder_inputs"].numpy().tolist() for inputs, _ in datasets.train.repeat().take(4)]
    assert stream[:2] != stream[2:]  # the second epoch is new data, not the same two batches again
    assert sum(int(targets.shape[0]) for _, targets in datasets.validation) == 10


def test_batch_sizes_follow_the_token_budget():
    assert data_lib.batch_sizes(64, 512) == [64, 42, 32, 21, 16, 10, 8, 5, 2]


# --- loss and metric against NumPy ------------------------------------------------


def test_smoothed_loss_and_accuracy_match_numpy():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(3, 5, 7)).astype("float32")
    y = rng.integers(1, 7, size=(3, 5))
    y[0, 3:] = 0
    y[2, 1:] = 0
    eps = 0.1
    log_p = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    per_token = (1 - eps) * -np.take_along_axis(log_p, y[..., None], -1)[..., 0] - eps * log_p.mean(-1)
    mask = y != 0
    expected = (per_token * mask).sum() / mask.sum()
    loss = SmoothedSequenceLoss(eps)(y, logits)
    np.testing.assert_allclose(float(loss), expected, rtol=1e-5)
    # eps = 0 is the plain masked cross-entropy of Keras (pads dropped with ignore_class).
    keras_ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True, ignore_class=0)
    np.testing.assert_allclose(float(SmoothedSequenceLoss(0.0)(y, logits)), float(keras_ce(y, logits)), rtol=1e-5)
    metric = MaskedAccuracy()
    metric.update_state(y, logits)
    np.testing.assert_allclose(float(metric.result()), ((logits.argmax(-1) == y) & mask).sum() / mask.sum())
    with pytest.raises(ValueError, match="label_smoothing must be in"):
        SmoothedSequenceLoss(1.0)


def test_model_reads_dict_batches_and_masks_padding():
    model = TranslationModel(encoder_vocab_size=20, decoder_vocab_size=30, max_length=16, hidden_dim=8, num_heads=2)
    enc = np.array([[2, 5, 6, 3, 0, 0]], "int32")
    dec = np.array([[2, 7, 8]], "int32")
    out = model({"encoder_inputs": enc, "decoder_inputs": dec})
    assert out.shape == (1, 3, 30)
    # Same as the Transformer with explicit masks; extra source padding changes nothing.
    explicit = model([enc, dec], encoder_padding_mask=enc != 0, decoder_padding_mask=dec != 0)
    np.testing.assert_allclose(out, explicit, atol=1e-6)
    wider = model({"encoder_inputs": np.pad(enc, [[0, 0], [0, 4]]), "decoder_inputs": dec})
    np.testing.assert_allclose(out, wider, atol=1e-5)
    with pytest.raises(ValueError, match="missing \\['decoder_inputs'\\]"):
        model({"encoder_inputs": enc})


# --- preprocess ------------------------------------------------------------------


@pytest.mark.parametrize("text", ["", "   \n\t ", None])
def test_preprocess_rejects_empty_text(text):
    with pytest.raises(ValueError, match="Nothing to translate"):
        TranslationApp().preprocess(text)


def test_preprocess_rejects_overlong_text_and_keeps_normal_text():
    app = TranslationApp()
    with pytest.raises(ValueError, match="at most 1000 characters"):
        app.preprocess("word " * 400)
    inputs = app.preprocess("  Open   the file. ")
    assert inputs["sentences"].tolist() == ["Open the file."]
    assert app.postprocess({"translations": np.array([b"Datei \xc3\xb6ffnen."])}) == "Datei öffnen."


# --- tiny training, translation and evaluation --------------------------------------------


def test_tiny_model_trains_and_saves(trained):
    app, config, result, _ = trained
    losses = result.history["loss"]
    assert len(losses) == 3 and losses[-1] < losses[0]
    assert result.model_path.is_file()
    assert (result.run_dir / "tokenizers" / "source" / "vocab.txt").is_file()
    model = load_checkpoint(result.model_path)
    assert isinstance(model, TranslationModel)
    enc = np.array([[2, 5, 6, 3]], "int32")
    dec = np.array([[2, 7]], "int32")
    reloaded = model({"encoder_inputs": enc, "decoder_inputs": dec})
    trained_model = load_checkpoint(result.run_dir / "best.keras")
    np.testing.assert_allclose(reloaded, trained_model({"encoder_inputs": enc, "decoder_inputs": dec}), atol=1e-6)


def test_translate_matches_the_generator_directly(trained):
    app, config, result, _ = trained
    model = load_checkpoint(result.model_path)
    source_tok, target_tok = app.tokenizers(config)
    texts = ["Open the file.", "Could not delete all images", "Save the message."]
    ours = Translator(model, (source_tok, target_tok), beam_size=2, max_length=8, max_source_length=16,
                      batch_size=2, jit_compile=False)(texts)  # fmt: skip
    generator = TextGenerator(model, BeamSampler(2), max_new_tokens=8, end_token_id=target_tok.end_id,
                              cache_length=9, jit_compile=False)  # fmt: skip
    for text, translation in zip(texts, ours):
        ids = source_tok.tokenize(tf.constant([text])).numpy()[0]
        source = np.concatenate([[source_tok.start_id], ids, [source_tok.end_id]])[None].astype("int32")
        out = generator(np.array([[target_tok.start_id]]), encoder_token_ids=source)
        expected = target_tok.detokenize(tf.constant(out["token_ids"][:, 1:])).numpy()[0].decode()
        assert translation == data_lib.restore_spacing([expected])[0]
    assert app.translate(model, config, []) == []


def test_evaluate_through_cli_prints_bleu_and_chrf(trained, capsys):
    app, config, result, _ = trained
    status = cli.main(["evaluate", "translation", "--checkpoint", str(result.model_path), "--beam-size", "2"])
    assert status == 0
    lines = capsys.readouterr().out.splitlines()
    values = {line.split(":")[0]: float(line.split(":")[1]) for line in lines if line.startswith(("bleu:", "chrf:"))}
    assert set(values) == {"bleu", "chrf"}
    assert 0 <= values["bleu"] <= 100 and 0 < values["chrf"] <= 100
    assert any(line.startswith("bleu signature:") and "tok:13a" in line for line in lines)
    record = json.loads((result.run_dir / "evaluation.json").read_text())
    assert record["metrics"]["bleu"] == pytest.approx(values["bleu"], abs=1e-4)
    assert record["bleu_tokenizer"] == "13a" and record["beam_size"] == 2
    assert len(record["examples"]) == 5 and record["test_sentences"] == len(synthetic_pairs()[0])


def test_real_corpus_slice_tokenizes(tmp_path):
    if not (sources.data_dir() / "tfsuite_translation").is_dir():
        pytest.skip("tfsuite_translation is not built: run `tfsuite data build translation`")
    config = TranslationConfig(limit=50)
    english, german = REAL_LOAD_TEXTS(config, "test")
    assert len(english) == len(german) == 50 and all(english) and all(german)
    assert data_lib.data_version(config) == "tfsuite_translation/en_de:1.0.0"


def test_export_through_cli_checks_with_the_runs_own_tokenizers(trained, capsys, tmp_path):
    # The run is named "tiny": the export check must use its tokenizers, not the default run's.
    app, config, result, _ = trained
    assert cli.main(["evaluate", "translation", "--checkpoint", str(result.model_path), "--beam-size", "2"]) == 0
    capsys.readouterr()
    status = cli.main(["export", "translation", "--checkpoint", str(result.model_path), "--models-dir", str(tmp_path)])
    out = capsys.readouterr().out
    assert status == 0, out[-2000:]
    assert "reloaded serving_default matches the Keras model: max |difference| = 0.00e+00" in out
    manifest = json.loads((tmp_path / "translation_en_de" / "MANIFEST.json").read_text(encoding="utf-8"))
    entry = manifest["versions"]["1"]
    assert entry["config"]["run_name"] == "tiny" and entry["evaluation"]["beam_size"] == 2
