"""The en-de model released in git (``saved_models/translation_en_de/``): what a fresh clone holds.

The latest version comes from the shared exporter (``apps/export.py``). Its
own figures were measured by ``tfsuite evaluate translation --record``
(``release_evaluation`` in MANIFEST.json: the whole test split through
``serving_default``, the copy baseline beside it). These tests check the
release bar of issue 10 on those figures (BLEU at least 2x copying the
source, chrF at least 40), the file budget, the manifest's commands, and
re-decode the recorded 200-sentence slice with plain ``tf.saved_model.load``
(as TF Serving would) to re-score it.
"""

import os

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import pytest  # noqa: E402
import tensorflow_text  # noqa: E402,F401 - the release's tokenizer ops

from apps import metrics  # noqa: E402
from apps.releases import DEFAULT_MODELS_DIR  # noqa: E402
from apps.translation import TranslationApp  # noqa: E402
from tests.apps import release_checks  # noqa: E402

RELEASE = DEFAULT_MODELS_DIR / "translation_en_de"


@pytest.fixture(scope="module")
def latest():
    return release_checks.latest_version(RELEASE)


def test_release_files_fit_the_budget(latest):
    release_checks.check_sizes(latest[0])


def test_manifest_records_config_data_commands_and_the_release_bar(latest):
    version_dir, entry = latest
    assert entry["path"] == version_dir.name
    assert entry["train_command"].startswith("tfsuite train translation") and entry["train_seconds"] > 0
    assert entry["export_command"].startswith("tfsuite export translation")
    assert entry["config"]["language_pair"] == "en_de" and entry["config"]["export_weights"] == "float16"
    evaluation = entry["release_evaluation"]
    assert evaluation["generated_by"].startswith("SavedModel")  # the release itself, not the Keras run
    assert evaluation["data_version"] == "tfsuite_translation/en_de:1.0.0" and evaluation["test_inputs"] > 3000
    assert "tok:13a" in evaluation["signatures"]["bleu"]
    scores = evaluation["metrics"]
    assert scores["bleu"] >= 2 * scores["copy_bleu"] and scores["chrf"] >= 40, scores
    assert scores["repetition_rate"] < 0.01


def test_release_rescores_its_recorded_200_sentence_slice(latest):
    version_dir, entry = latest
    check = release_checks.check_slice(RELEASE, entry)
    outputs, statuses = release_checks.decode(version_dir, "sentences", "translations", check["sources"])
    assert set(statuses) <= {"ok", "truncated"}  # a few test sentences are over the token limit
    release_checks.check_rescoring(check, outputs, lambda hyps, refs: metrics.corpus_scores(hyps, refs, "de"))


def test_demo_model_of_the_release():
    # What `make demo` loads on a fresh clone: the default models dir, no training.
    model = TranslationApp().load_release(DEFAULT_MODELS_DIR)
    request = {"choice": "en_de", "input": "Open the file.", "beam_size": 4, "max_length": 32}
    assert model(request)["translations"][0].strip()
