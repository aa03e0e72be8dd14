"""Summarization app: lead baseline, ROUGE lines, the task prefix, T5 span-corruption pre-training then
fine-tuning from it, export (SavedModel and TFLite), and bad input.

The corpus is a small synthetic set of package descriptions (``Seq2SeqApp.load_texts``
is monkeypatched), so these tests run on a fresh clone without the built TFDS data.
"""

import itertools
import json

import keras
import numpy as np
import pytest
import tensorflow_datasets as tfds
from rouge_score import rouge_scorer

from apps import cli, metrics
from apps.config import ConfigError
from apps.seq2seq import Seq2SeqApp
from apps.summarization import SummarizationApp, SummarizationConfig
from apps.summarization.app import lead
from apps.trainer import train
from layers.t5 import T5

REAL_LOAD_TEXTS = Seq2SeqApp.load_texts

ADJECTIVES = ["fast", "small", "portable", "secure", "simple"]
FORMATS = ["image", "audio", "video", "font", "archive", "calendar"]


def synthetic_pairs():
    documents, summaries = [], []
    for i, (adjective, kind) in enumerate(itertools.product(ADJECTIVES, FORMATS)):
        documents.append(
            f"The lib{kind}{i} package provides a {adjective} library for reading {kind} files. It is written in C "
            f"and ships with command line tools. This package contains the shared library."
        )
        summaries.append(f"{adjective} library for reading {kind} files")
    return documents, summaries


TINY = dict(
    vocab_size=160, sentinels=8, hidden_dim=16, num_heads=2, intermediate_dim=32, num_layers=1, dropout=0.0,
    batch_size=16, batch_tokens=1024, max_source_length=48, max_target_length=12, max_new_tokens=8,
    model_max_length=48, beam_size=2, eval_batch_size=8, warmup_steps=2, learning_rate=1e-2, verbose=0,
    steps_per_epoch=4, validation_pairs=None, precision="float32", checkpoint_steps=0, keep_checkpoints=2,
    average_checkpoints=0,
)


def _synthetic_load_texts(self, config, split):
    documents, summaries = synthetic_pairs()
    end = len(documents) if config.limit is None else config.limit
    return documents[:end], summaries[:end]


@pytest.fixture(scope="module")
def pretrained_and_tuned(tmp_path_factory):
    """Span-corruption pre-training, then fine-tuning from it (tiny T5, a few steps each)."""
    patch = pytest.MonkeyPatch()
    patch.setattr(Seq2SeqApp, "load_texts", _synthetic_load_texts)
    patch.setattr(Seq2SeqApp, "data_version", lambda self, config: "synthetic:0")
    keras.utils.set_random_seed(0)
    app, runs = SummarizationApp(), str(tmp_path_factory.mktemp("runs"))
    pre = train(app, SummarizationConfig(**TINY, epochs=2, objective="span_corruption", runs_dir=runs,
                                         run_name="pre"), command="pytest")
    config = SummarizationConfig(**TINY, epochs=3, runs_dir=runs, run_name="tuned", init_from=str(pre.model_path))
    tuned = train(SummarizationApp(), config, command="pytest")
    yield app, config, pre, tuned
    patch.undo()


def test_lead_baseline_is_the_first_sentence_cut_to_the_median_summary_length():
    assert lead("Reads PNG files quickly. Also writes them.", 3) == "Reads PNG files"
    assert lead("One sentence only", 10) == "One sentence only"
    app, config = SummarizationApp(), SummarizationConfig(**TINY)
    documents, _ = synthetic_pairs()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Seq2SeqApp, "load_texts", _synthetic_load_texts)
        baseline = app.baseline(documents[:2], config)
    assert baseline[0] == "The libimage0 package provides a fast"  # 6 words: the median summary


def test_rouge_is_rouge_score_with_stemming_and_novel_words_count_what_the_text_lacks():
    hypotheses, references = ["reading images quickly", "a library"], ["read image files", "a library"]
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)
    expected = {name: 100 * np.mean([scorer.score(r, h)[name].fmeasure for h, r in zip(hypotheses, references)])
                for name in ("rouge1", "rouge2", "rougeL")}
    assert metrics.rouge_scores(hypotheses, references) == pytest.approx(expected)
    assert metrics.rouge_scores(["read image files"], ["reading images file"])["rouge1"] == pytest.approx(100.0)
    assert metrics.novel_word_share(["png reader tool", "tool"], ["a png reader", "x"]) == pytest.approx(0.5)


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"shared_vocab": False}, "t5 needs --shared-vocab"),
        ({"objective": "span_corruption", "sentinels": 0}, "needs --sentinels"),
        ({"objective": "denoise"}, "objective must be one of"),
        ({"architecture": "bert"}, "architecture must be one of"),
        ({"init_from": "runs/x/model.h5"}, "--init-from must name a .keras"),
    ],
)
def test_bad_config_raises(overrides, message):
    with pytest.raises(ConfigError, match=message):
        SummarizationConfig(**{**TINY, **overrides})


def test_task_prefix_starts_every_input_in_training_and_serving(tmp_path, monkeypatch):
    monkeypatch.setattr(Seq2SeqApp, "load_texts", _synthetic_load_texts)
    app, config = SummarizationApp(), SummarizationConfig(**TINY, runs_dir=str(tmp_path))
    preprocessor = app.preprocessor(config)
    assert preprocessor.prefix == "summarize: " and len(preprocessor.prefix_ids) >= 2
    inputs, status = preprocessor.encoder_inputs(np.array([b"a fast library", b""]))
    row = inputs["encoder_inputs"].numpy()[0]
    assert row[0] == preprocessor.start_id and row[1:1 + len(preprocessor.prefix_ids)].tolist() == preprocessor.prefix_ids
    assert [s.decode() for s in status.numpy()] == ["ok", "empty"]
    features, _ = next(iter(app.build_datasets(config).train))
    for row in features["encoder_inputs"].numpy():
        assert row[1:1 + len(preprocessor.prefix_ids)].tolist() == preprocessor.prefix_ids


def test_pretraining_then_fine_tuning_starts_from_the_pretrained_weights(pretrained_and_tuned):
    app, config, pre, tuned = pretrained_and_tuned
    assert set(pre.metrics) == {"span_loss", "span_accuracy"}
    assert "rougeL" in tuned.metrics and "lead_rougeL" in tuned.metrics
    # Same vocabulary: the fine-tuning run read the pre-training run's tokenizers.
    assert app.tokenizer_dir(config) == str(pre.run_dir / "tokenizers")
    started = app.build_model(config)
    reference = keras.saving.load_model(pre.model_path)
    assert isinstance(started, T5)
    for mine, theirs in zip(started.get_weights(), reference.get_weights()):
        np.testing.assert_array_equal(mine, theirs)
    mismatched = SummarizationConfig(**{**TINY, "hidden_dim": 32}, runs_dir=config.runs_dir, run_name="tuned",
                                     init_from=config.init_from)
    with pytest.raises(ValueError, match="do not match"):
        SummarizationApp().build_model(mismatched)


def test_evaluate_through_cli_prints_rouge_beside_the_lead_baseline(pretrained_and_tuned, capsys):
    _, _, _, tuned = pretrained_and_tuned
    assert cli.main(["evaluate", "summarization", "--checkpoint", str(tuned.model_path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    names = ("rouge1", "rouge2", "rougeL", "lead_rouge1", "lead_rouge2", "lead_rougeL", "novel_words",
             "reference_novel_words")
    values = {line.split(":")[0]: float(line.split(":")[1]) for line in lines if line.split(":")[0] in names}
    assert set(values) == set(names)
    documents, summaries = synthetic_pairs()
    words = 6
    expected = metrics.rouge_scores([lead(d, words) for d in documents], summaries)
    assert values["lead_rougeL"] == pytest.approx(expected["rougeL"], abs=1e-3)
    assert values["reference_novel_words"] == pytest.approx(metrics.novel_word_share(summaries, documents), abs=1e-3)
    record = json.loads((tuned.run_dir / "evaluation.json").read_text())
    assert record["metrics"]["rougeL"] == pytest.approx(values["rougeL"], abs=1e-3)
    assert record["signatures"] == {"rouge": metrics.rouge_signature()} and "stem:yes" in metrics.rouge_signature()


def test_export_serves_strings_with_status_and_converts_to_tflite(pretrained_and_tuned, capsys, tmp_path):
    import tensorflow as tf

    _, _, _, tuned = pretrained_and_tuned
    args = ["--checkpoint", str(tuned.model_path), "--models-dir", str(tmp_path)]
    assert cli.main(["export", "summarization", *args]) == 0
    assert "matches the Keras model: max |difference| = 0.00e+00" in capsys.readouterr().out
    served = tf.saved_model.load(str(tmp_path / "summarization" / "1")).signatures["serving_default"]
    texts = ["The libfont3 package provides a fast library for reading font files.", "", "これは日本語の文章です。"]
    out = served(texts=tf.constant(texts))
    assert [s.decode() for s in out["status"].numpy()] == ["ok", "empty", "out_of_vocabulary"]
    assert out["summaries"].numpy()[1] == b""
    assert cli.main(["export", "summarization", "--format", "tflite", *args]) == 0
    assert (tmp_path / "summarization" / "tflite" / "model_int8.tflite").is_file()


@pytest.mark.parametrize("text", ["", "   ", None])
def test_preprocess_rejects_empty_text(text):
    with pytest.raises(ValueError, match="Nothing to work on"):
        SummarizationApp().preprocess(text, 2, 8)


def test_preprocess_rejects_overlong_text_and_bad_options():
    app = SummarizationApp()
    with pytest.raises(ValueError, match="at most 6000 characters"):
        app.preprocess("word " * 2000, 2, 8)
    with pytest.raises(ValueError, match="Beam size must be a whole number"):
        app.preprocess("a text", 0, 8)
    request = app.preprocess("  A  text\n about fonts. ", 2, 8)
    assert request == {"choice": "summarization", "input": "A text about fonts.", "beam_size": 2, "max_length": 8}


def test_cnn_dailymail_reads_the_real_tfds_dataset_by_name():
    app, config = SummarizationApp(), SummarizationConfig(**TINY, dataset="cnn_dailymail")
    with tfds.testing.mock_data(num_examples=3):
        documents, summaries = REAL_LOAD_TEXTS(app, config, "test")
    assert len(documents) == len(summaries) == 3 and all(isinstance(d, str) for d in documents)


def _two_corpora(self, config, split):
    """Summarization pairs for the summarization app, the translation tests' phrases for translation."""
    if self.name == "translation":
        from tests.apps.translation.test_app import synthetic_pairs as phrases

        english, german = phrases()
        return english, german
    return _synthetic_load_texts(self, config, split)


def test_one_t5_learns_two_tasks_named_by_their_prefixes_and_reports_both_metrics(tmp_path, monkeypatch):
    monkeypatch.setattr(Seq2SeqApp, "load_texts", _two_corpora)
    monkeypatch.setattr(Seq2SeqApp, "data_version", lambda self, config: "synthetic:0")
    keras.utils.set_random_seed(0)
    app = SummarizationApp()
    config = SummarizationConfig(**{**TINY, "vocab_size": 260}, epochs=2, mix_tasks="translation",
                                 mix_eval_inputs=20, lower_case=False, runs_dir=str(tmp_path), run_name="mixed")
    vocab = app.tokenizers(config).source.vocab
    assert "Datei" in vocab or "##atei" in vocab  # the shared vocabulary holds both tasks' words
    summarize = app.preprocessor(config).prefix_ids
    translate = app._mixed_preprocessor(*app.mixed_tasks(config)[0], config).prefix_ids
    assert summarize != translate
    prefixes = set()
    for features, _ in app.build_datasets(config).train.take(12):
        for row in features["encoder_inputs"].numpy():
            prefixes.add(tuple(row[1:1 + len(translate)]) == tuple(translate))
    assert prefixes == {True, False}  # batches of both tasks in one stream
    result = train(app, config, command="pytest")
    for name in ("rougeL", "lead_rougeL", "translation_bleu", "translation_chrf", "translation_copy_bleu"):
        assert name in result.metrics
    assert 0 <= result.metrics["translation_bleu"] <= 100
