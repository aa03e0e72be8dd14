"""Translation app: config flags, the engine's data pipeline on its corpus, preprocess errors, and a tiny
model that trains a few steps and is evaluated through the CLI (``bleu:`` / ``chrf:`` / ``copy_bleu:`` lines).

The corpus is replaced by a small synthetic English-German phrase set
(``TranslationApp.load_texts`` is monkeypatched), so these tests run on a
fresh clone without the built TFDS data; one test reads the real corpus when
it is built.
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
from apps.seq2seq import Seq2SeqApp, Seq2SeqDecoder
from apps.trainer import load_checkpoint, train
from apps.translation import TranslationApp, TranslationConfig
from layers.generation import TextGenerator
from layers.samplers import BeamSampler
from layers.transformer_models import Transformer
from pipelines.corpora import sources
from pipelines.preprocessing import restore_spacing
from apps.metrics import corpus_bleu

# Before any test replaces them with the synthetic corpus:
REAL_LOAD_TEXTS, REAL_DATA_VERSION = Seq2SeqApp.load_texts, Seq2SeqApp.data_version

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
    steps_per_epoch=None, validation_pairs=None, precision="float32", checkpoint_steps=0, keep_checkpoints=2,
    average_checkpoints=0, shared_vocab=False, share_embeddings=False,
)


def _synthetic_load_texts(self, config, split):
    english, german = synthetic_pairs()
    end = len(english) if config.limit is None else config.limit
    return english[:end], german[:end]


@pytest.fixture
def fake_corpus(monkeypatch):
    monkeypatch.setattr(Seq2SeqApp, "load_texts", _synthetic_load_texts)
    monkeypatch.setattr(Seq2SeqApp, "data_version", lambda self, config: "synthetic:0")
    return synthetic_pairs()


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One tiny training run (3 epochs of 30 steps on the synthetic phrases) shared by the tests below.

    90 updates at learning rate 2e-2: with fewer (12 updates, one pass over the 60
    phrases per epoch) this 16-wide model still emits only the end token, and
    chrF is 0.
    """
    patch = pytest.MonkeyPatch()
    patch.setattr(Seq2SeqApp, "load_texts", _synthetic_load_texts)
    patch.setattr(Seq2SeqApp, "data_version", lambda self, config: "synthetic:0")
    keras.utils.set_random_seed(0)
    app = TranslationApp()
    tiny = {**TINY, "steps_per_epoch": 30, "learning_rate": 2e-2}
    config = TranslationConfig(**tiny, epochs=3, runs_dir=str(tmp_path_factory.mktemp("runs")), run_name="tiny")
    result = train(app, config, command="pytest")
    yield app, config, result, patch
    patch.undo()


# --- config ------------------------------------------------------------------


def test_registered_and_flags_parse():
    app = get_app("translation")
    assert isinstance(app, TranslationApp)
    config = parse_config(TranslationConfig, ["--language-pair", "en_ja", "--beam-size", "2", "--no-normalize-first"])
    assert (config.language_pair, config.beam_size, config.normalize_first) == ("en_ja", 2, False)
    assert app.dataset_name(config) == "tfsuite_translation/en_ja"
    assert app.language(config) == "ja"
    assert app.default_run_name(config) == "en_ja" and app.release_name(config) == "translation_en_ja"
    config = parse_config(TranslationConfig, ["--dataset", "wmt14_translate/de-en"])
    assert app.dataset_name(config) == "wmt14_translate/de-en"
    assert app.language(config) == "de"
    assert app.dataset_name(TranslationConfig()) == "tfsuite_translation/en_de"
    assert app.baseline(["Open the file."], config) == ["Open the file."]  # the copy baseline


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
        ({"shared_vocab": False, "share_embeddings": True}, "needs --shared-vocab"),
        ({"no_repeat_ngram_size": -1}, "no_repeat_ngram_size must be >= 0"),
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
    english, _ = fake_corpus
    batches = list(app.build_datasets(config).train)
    assert len(batches) == app.steps_per_epoch(config)
    seen = 0
    for inputs, targets in batches:
        enc, dec, targets = inputs["encoder_inputs"].numpy(), inputs["decoder_token_ids"].numpy(), targets.numpy()
        assert enc.shape[0] == dec.shape[0] == targets.shape[0] <= config.batch_size
        assert enc.dtype == dec.dtype == np.int32
        np.testing.assert_array_equal(inputs["encoder_padding_mask"].numpy(), enc != 0)
        assert (enc[:, 0] == source_tok.start_id).all() and (dec[:, 0] == target_tok.start_id).all()
        for row in range(len(targets)):
            real = targets[row][targets[row] != 0]
            # Teacher forcing: targets are the decoder inputs shifted left, ending with [END].
            assert real[-1] == target_tok.end_id
            np.testing.assert_array_equal(dec[row][1 : len(real)], real[:-1])
            source_real = enc[row][enc[row] != 0]
            assert source_real[-1] == source_tok.end_id
        seen += len(targets)
    assert seen == len(english)
    # Round trip of one target through the tokenizer (cased: German keeps its umlauts).
    assert target_tok.detokenize(target_tok.tokenize(tf.constant(["Die Datei löschen"]))).numpy()[0].decode() == (
        "Die Datei löschen"
    )


def test_long_pairs_are_left_out_of_training(fake_corpus, tmp_path):
    app = TranslationApp()
    base = TranslationConfig(**TINY, runs_dir=str(tmp_path))
    source_tok, target_tok = app.tokenizers(base)
    english, german = fake_corpus
    source_lengths = source_tok.tokenize(tf.constant(english)).row_lengths().numpy() + 2  # [START] ... [END]
    target_lengths = target_tok.tokenize(tf.constant(german)).row_lengths().numpy() + 1  # [START] ...
    limit = int(np.median(np.maximum(source_lengths, target_lengths)))
    config = TranslationConfig(**{**TINY, "max_source_length": limit, "max_target_length": limit}, runs_dir=str(tmp_path))
    ds = app.build_datasets(config).train
    kept = sum(int(inputs["encoder_inputs"].shape[0]) for inputs, _ in ds)
    fits = (source_lengths <= limit) & (target_lengths <= limit)
    assert 0 < kept == fits.sum() < len(fits)


def test_restore_spacing_brings_the_round_trip_close_to_the_text(fake_corpus, tmp_path):
    app = TranslationApp()
    config = TranslationConfig(**TINY, runs_dir=str(tmp_path))
    target = app.tokenizers(config).target
    _, german = fake_corpus
    detokenized = [t.decode() for t in target.detokenize(target.tokenize(tf.constant(german))).numpy()]
    assert restore_spacing(detokenized) == german
    assert sum(a != b for a, b in zip(detokenized, german)) > len(german) // 3
    # The preprocessor's decode applies the same rules in the graph.
    ids = target.tokenize(tf.constant(german)).to_tensor()
    assert [t.decode() for t in app.preprocessor(config).decode(ids).numpy()] == german


def test_capped_epochs_read_fresh_shuffles_and_validation_subset(fake_corpus, tmp_path):
    app = TranslationApp()
    config = TranslationConfig(**{**TINY, "steps_per_epoch": 2, "validation_pairs": 10}, runs_dir=str(tmp_path))
    datasets = app.build_datasets(config)
    assert app.steps_per_epoch(config) == 2
    # The trainer reads epochs of 2 batches from one stream of reshuffled passes.
    stream = [inputs["encoder_inputs"].numpy().tolist() for inputs, _ in datasets.train.repeat().take(4)]
    assert stream[:2] != stream[2:]  # the second epoch is new data, not the same two batches again
    assert sum(int(targets.shape[0]) for _, targets in datasets.validation) == 10


# --- preprocess ------------------------------------------------------------------


@pytest.mark.parametrize("text", ["", "   \n\t ", None])
def test_preprocess_rejects_empty_text(text):
    with pytest.raises(ValueError, match="Nothing to translate"):
        TranslationApp().preprocess(text)


def test_preprocess_rejects_overlong_text_and_keeps_normal_text():
    app = TranslationApp()
    with pytest.raises(ValueError, match="at most 1000 characters"):
        app.preprocess("word " * 400)
    with pytest.raises(ValueError, match="Unknown language"):
        app.preprocess("Open the file.", "en_fr")
    with pytest.raises(ValueError, match="Beam size must be a whole number"):
        app.preprocess("Open the file.", "en_de", 2.5)
    request = app.preprocess("  Open   the file. ", "en_de", 2, 16)
    assert request == {"choice": "en_de", "input": "Open the file.", "beam_size": 2, "max_length": 16}


# --- tiny training, translation and evaluation --------------------------------------------


def test_tiny_model_trains_and_saves(trained):
    app, config, result, _ = trained
    losses = result.history["loss"]
    assert len(losses) == 3 and losses[-1] < losses[0]
    assert result.model_path.is_file()
    assert (result.run_dir / "tokenizers" / "source" / "vocab.txt").is_file()
    model = load_checkpoint(result.model_path)
    assert isinstance(model, Transformer)
    batch = {"encoder_inputs": np.array([[2, 5, 6, 3]], "int32"), "decoder_token_ids": np.array([[2, 7]], "int32")}
    trained_model = load_checkpoint(result.run_dir / "best.keras")
    np.testing.assert_allclose(model(batch), trained_model(batch), atol=1e-6)


def test_decoder_matches_the_generator_directly(trained):
    app, config, result, _ = trained
    model = load_checkpoint(result.model_path)
    source_tok, target_tok = app.tokenizers(config)
    texts = ["Open the file.", "Could not delete all images", "Save the message."]
    ours = Seq2SeqDecoder(model, app.preprocessor(config), beam_size=2, max_new_tokens=8, length_ratio=0,
                          batch_size=2, jit_compile=False)(texts)  # fmt: skip
    generator = TextGenerator(model, BeamSampler(2), max_new_tokens=8, end_token_id=target_tok.end_id,
                              cache_length=9, jit_compile=False)  # fmt: skip
    for text, translation in zip(texts, ours):
        ids = source_tok.tokenize(tf.constant([text])).numpy()[0]
        source = np.concatenate([[source_tok.start_id], ids, [source_tok.end_id]])[None].astype("int32")
        out = generator(np.array([[target_tok.start_id]]), encoder_inputs=source)
        expected = target_tok.detokenize(tf.constant(out["token_ids"][:, 1:])).numpy()[0].decode()
        assert translation == restore_spacing([expected])[0]
    assert app.generate(model, config, []) == []


def test_evaluate_through_cli_prints_the_metrics_beside_the_copy_baseline(trained, capsys):
    app, config, result, _ = trained
    status = cli.main(["evaluate", "translation", "--checkpoint", str(result.model_path), "--beam-size", "2"])
    assert status == 0
    lines = capsys.readouterr().out.splitlines()
    values = {line.split(":")[0]: float(line.split(":")[1]) for line in lines if ":" in line and line.split(":")[0]
              in ("bleu", "chrf", "copy_bleu", "copy_chrf", "repetition_rate")}  # fmt: skip
    assert set(values) == {"bleu", "chrf", "copy_bleu", "copy_chrf", "repetition_rate"}
    assert 0 <= values["bleu"] <= 100 and 0 < values["chrf"] <= 100
    english, german = synthetic_pairs()
    assert values["copy_bleu"] == pytest.approx(corpus_bleu(english, german, "de"), abs=1e-4)  # copying, scored
    record = json.loads((result.run_dir / "evaluation.json").read_text())
    assert record["metrics"]["bleu"] == pytest.approx(values["bleu"], abs=1e-4)
    assert record["bleu_tokenizer"] == "13a" and record["beam_size"] == 2
    assert record["signatures"]["bleu"].startswith("nrefs:1|case:mixed|eff:no|tok:13a")
    assert len(record["examples"]) == 5 and record["test_inputs"] == len(english)


def test_real_corpus_slice_tokenizes(tmp_path):
    if not (sources.data_dir() / "tfsuite_translation").is_dir():
        pytest.skip("tfsuite_translation is not built: run `tfsuite data build translation`")
    app, config = TranslationApp(), TranslationConfig(limit=50)
    english, german = REAL_LOAD_TEXTS(app, config, "test")
    assert len(english) == len(german) == 50 and all(english) and all(german)
    assert REAL_DATA_VERSION(app, config) == "tfsuite_translation/en_de:1.0.0"


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
    # The release's own figures: the whole (synthetic) test split through serving_default, written into it.
    status = cli.main(["evaluate", "translation", "--models-dir", str(tmp_path), "--run-name", "tiny", "--record",
                       "--beam-size", "2"])
    out = capsys.readouterr().out
    assert status == 0, out[-2000:]
    evaluation = json.loads((tmp_path / "translation_en_de" / "MANIFEST.json").read_text())["versions"]["1"]["release_evaluation"]
    assert evaluation["generated_by"].startswith("SavedModel") and "copy_bleu" in evaluation["metrics"]
    assert f"bleu: {evaluation['metrics']['bleu']:.4f}" in out
    check = json.loads((tmp_path / "translation_en_de" / evaluation["check_slice"]["file"]).read_text())
    inputs = min(200, evaluation["test_inputs"])
    assert len(check["sources"]) == len(check["outputs"]) == inputs and check["metrics"] == evaluation["check_slice"]["metrics"]
    # --record writes a release's figures only: not with a Keras checkpoint.
    assert cli.main(["evaluate", "translation", "--checkpoint", str(result.model_path), "--record"]) == 2
    assert "--record writes a release's own figures" in capsys.readouterr().err
