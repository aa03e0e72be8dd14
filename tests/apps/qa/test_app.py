"""The question-answering app on tiny random models: training windows label the answer, the in-graph reader
answers with character offsets and a status per row, the int8 / pruned-vocabulary release answers as the Keras
model does, the TFLite reader as the release does, and the real SQuAD dataset (mocked) feeds the same pipeline.

The corpus is the 20-example slice of ``tfsuite_qa`` (``small_corpora``), so these run on a fresh clone.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from apps import export
from apps.config import ConfigError
from apps.qa import QAApp, QAConfig
from apps.qa.app import overlap_answer
from layers.bert import BertBackbone, BertSpanExtractor
from pipelines import qa_windows
from pipelines.corpora import sources

CAFE = "Le café « Zoë » ouvre à 8 h. The owner, Zoë Müller, bakes naïve croissants every morning."


@pytest.fixture
def corpus(small_corpora, monkeypatch):
    monkeypatch.setenv(sources.DATA_DIR_ENV, str(small_corpora("tfsuite_qa")))


def tiny_model(seed=3):
    keras.utils.set_random_seed(seed)
    model = BertSpanExtractor(BertBackbone(30522, 1, 2, 32, 64, dropout=0.0, name="minilm"), name="span_extractor")
    model.build()
    return model


def test_training_windows_label_the_answer_pieces(corpus):
    app, config = QAApp(), QAConfig(limit=20, batch_size=4)
    tokenizer = app.tokenizer(config)
    _, _, answers, _ = app.load_examples(config, "train")
    wanted = {tokenizer.detokenize(tokenizer.tokenize([a]))[0].numpy() for a in answers}
    labelled = 0
    for features, labels in app.build_datasets(config).train:
        assert features["token_ids"].shape[1] in (64, 96, 128, 160, 192)  # padded to its bucket only
        for row, start, end in zip(features["token_ids"].numpy(), labels["start"].numpy(), labels["end"].numpy()):
            if start:
                labelled += 1
                assert tokenizer.detokenize(row[None, start:end + 1])[0].numpy() in wanted
    assert labelled >= 8  # of 20 questions; the training buckets drop their last, partial batch


def test_the_reader_answers_with_character_offsets_and_a_status_per_row(corpus):
    app, config = QAApp(), QAConfig(limit=20, max_windows=2)
    answer = app.answer_function(tiny_model(), config)
    questions = ["Who bakes croissants?", "", "Who?", "Who bakes?", "誰がクロワッサンを焼きますか?", "x " * 40,
                 "Who bakes?"]
    contexts = [CAFE, CAFE, "  ", "word " * 600, CAFE, CAFE, CAFE]
    out = {k: v.numpy() for k, v in answer(tf.constant(questions), tf.constant(contexts)).items()}
    status = [s.decode() for s in out["status"]]
    assert status == ["ok", "empty", "empty", "too_long", "other_script", "truncated", "ok"]
    for i, s in enumerate(status):
        text = out["answer"][i].decode("utf-8")
        if s in qa_windows.QA_BLANK_STATUSES:
            assert text == "" and out["start"][i] == out["end"][i] == -1 and out["score"][i] == 0
        else:
            assert text and contexts[i][out["start"][i]:out["end"][i]] == text  # character offsets, not bytes
    invalid = answer(tf.constant([b"Who?"]), tf.constant([b"caf\xe9 \xff"]))
    assert invalid["status"].numpy()[0] == b"invalid_utf8" and invalid["answer"].numpy()[0] == b""


def test_the_overlap_baseline_takes_the_sentence_sharing_most_question_words():
    context = "John went to the garden. The milk is in the kitchen. Mary is asleep."
    assert overlap_answer("Where is the milk?", context) == "The milk is in the kitchen."
    assert overlap_answer("Who is asleep?", context) == "Mary is asleep."


def test_config_is_checked():
    with pytest.raises(ConfigError, match="init must be"):
        QAConfig(init="bert-large")
    with pytest.raises(ConfigError, match="doc_stride"):
        QAConfig(sequence_length=64, doc_stride=40)
    with pytest.raises(ConfigError, match="export_weights"):
        QAConfig(export_weights="int4")


@pytest.fixture(scope="module")
def release(tmp_path_factory, small_corpora):
    """The tiny model exported twice: float32 and int8, both with the vocabulary pruned to the corpus's tokens."""
    import os

    os.environ[sources.DATA_DIR_ENV] = str(small_corpora("tfsuite_qa"))
    try:
        app, model, folder = QAApp(), tiny_model(), tmp_path_factory.mktemp("qa_release")
        for weights in ("float32", "int8"):
            export.export_saved_model(app, model, QAConfig(limit=20, export_weights=weights), folder / weights)
        # Training texts: every piece of theirs is in the pruned vocabulary (test texts may hold others).
        questions, contexts, _, _ = app.load_examples(QAConfig(limit=20), "train")
        yield app, model, folder, questions + ["", "Who bakes?"], contexts + [CAFE, CAFE]
    finally:
        del os.environ[sources.DATA_DIR_ENV]


def test_the_pruned_release_answers_as_the_keras_model(release):
    app, model, folder, questions, contexts = release
    vocab = (folder / "float32" / "assets" / "vocab.txt").read_text(encoding="utf-8").splitlines()
    assert 1000 < len(vocab) < 30522 and "[CLS]" in vocab  # characters and specials kept, most words dropped
    keras_out = app.answer_function(model, QAConfig())(tf.constant(questions), tf.constant(contexts))
    for weights in ("float32", "int8"):
        served = tf.saved_model.load(str(folder / weights)).signatures["serving_default"]
        out = served(question=tf.constant(questions), context=tf.constant(contexts))
        corpus_rows = slice(0, -2)  # the last two rows are not corpus text (CAFE's words may be pruned)
        same = np.mean(out["answer"].numpy()[corpus_rows] == keras_out["answer"].numpy()[corpus_rows])
        score = np.abs(out["score"].numpy() - keras_out["score"].numpy())[corpus_rows].max()
        np.testing.assert_array_equal(out["status"].numpy(), keras_out["status"].numpy())
        if weights == "float32":  # pruning alone changes nothing on text of the corpus it was pruned to
            assert same == 1.0 and score < 1e-4
        else:
            assert same >= 0.8 and score < 0.05, (same, score)
    stored = tf.train.load_checkpoint(str(folder / "int8" / "variables" / "variables")).get_variable_to_dtype_map()
    assert tf.int8 in set(stored.values())
    sizes = {w: sum(f.stat().st_size for f in (folder / w / "variables").iterdir()) for w in ("float32", "int8")}
    assert sizes["int8"] < 0.35 * sizes["float32"]


def test_the_tflite_reader_answers_as_the_release(release, tmp_path):
    app, _, folder, questions, contexts = release
    paths = app.export_tflite(folder / "int8", tmp_path)  # rebuilt from model.json with the stored weights
    served = tf.saved_model.load(str(folder / "int8")).signatures["serving_default"]
    want = served(question=tf.constant(questions), context=tf.constant(contexts))
    got = qa_windows.TFLiteReader(paths["float"])(questions, contexts)  # the release's weights, as float32
    assert got["answer"] == [a.decode("utf-8") for a in want["answer"].numpy()]
    assert got["status"] == [s.decode() for s in want["status"].numpy()]
    assert got["start"] == want["start"].numpy().tolist() and got["end"] == want["end"].numpy().tolist()
    assert (tmp_path / "vocab.txt").is_file()
    quantized = qa_windows.TFLiteReader(paths["int8"])(questions, contexts)
    assert quantized["status"] == got["status"]
    assert np.mean(np.array(quantized["answer"]) == np.array(got["answer"])) >= 0.8
    assert paths["int8"].stat().st_size < paths["float"].stat().st_size  # here mostly the tokenizer's tables


def test_the_release_is_scored_and_recorded_by_the_shared_evaluation(release, tmp_path, corpus):
    import json
    import shutil

    from apps import releases

    app, model, folder, _, _ = release
    shutil.copytree(folder / "int8", tmp_path / "qa" / "1")
    config = QAConfig(limit=20, eval_batch_size=8, scratch_checkpoint=str(tmp_path / "none.keras"))
    with pytest.raises(FileNotFoundError, match="no entry for version 1"):  # nothing evaluated, nothing written
        app.evaluate_saved_model(tmp_path / "qa" / "1", config, record=True)
    assert not (tmp_path / "qa" / "checks").exists()
    releases.write_manifest(tmp_path / "qa", 1, {"config": {}})
    results = app.evaluate_saved_model(tmp_path / "qa" / "1", config, record=True)
    assert set(results) == {"exact_match", "f1", "overlap_exact_match", "overlap_f1"}
    keras_scores = app.evaluate(model, config)  # the Keras model through the same scoring, same split
    assert abs(keras_scores["f1"] - results["f1"]) <= 0.1 and keras_scores["overlap_f1"] == results["overlap_f1"]
    check = json.loads((tmp_path / "qa" / "checks" / "1.json").read_text(encoding="utf-8"))
    questions, contexts, answers, _ = app.load_examples(config, "test")
    assert check["inputs"] == {"question": questions, "context": contexts} and check["references"] == answers
    assert check["metrics"] == app.score(check["outputs"], answers, config)
    entry = json.loads((tmp_path / "qa" / "MANIFEST.json").read_text())["versions"]["1"]["release_evaluation"]
    assert entry["metrics"] == results and entry["dataset"] == "tfsuite_qa" and entry["test_inputs"] == len(answers)


def test_squad_by_name_feeds_the_same_pipeline():
    app, config = QAApp(), QAConfig(dataset="squad", batch_size=2)
    with tfds.testing.mock_data(num_examples=6):
        questions, contexts, answers, starts = app.load_examples(config, "train")
        features, labels = next(iter(app.build_datasets(config).train))
    assert len(questions) == len(contexts) == len(answers) == 6
    assert features["token_ids"].shape[0] == 2 and set(labels) == {"start", "end"}
