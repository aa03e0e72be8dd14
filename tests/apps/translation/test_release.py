"""The en-de and en-ja models released in git (``saved_models/translation_<pair>/``): what a fresh clone holds.

The latest version comes from the shared exporter (``apps/export.py``). Its
own figures were measured by ``tfsuite evaluate translation --record``
(``release_evaluation`` in MANIFEST.json: the whole test split through
``serving_default``, the copy baseline beside it). These tests check the
release bar of issue 10 on those figures (en-de: BLEU at least 2x copying
the source, chrF at least 40; en-ja, scored with sacrebleu's ``char`` BLEU
tokenizer unless MeCab is installed: BLEU and chrF at least 2x copying),
the file budget, the manifest's commands, and
re-decode the recorded 200-sentence slice with plain ``tf.saved_model.load``
(as TF Serving would) to re-score it.
"""

import os
import re

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import pytest  # noqa: E402
import tensorflow_text  # noqa: E402,F401 - the release's tokenizer ops

from apps import metrics  # noqa: E402
from apps.releases import DEFAULT_MODELS_DIR  # noqa: E402
from apps.translation import TranslationApp  # noqa: E402
from tests.apps import release_checks  # noqa: E402

PAIRS = ("en_de", "en_ja")
# What each release must show on its whole test split, from its recorded figures.
TEST_INPUTS = {"en_de": 3000, "en_ja": 2000}
BLEU_TOKENIZERS = {"en_de": ("tok:13a",), "en_ja": ("tok:char", "tok:ja-mecab")}
DEMO_SCRIPT = {"en_de": "[A-Za-zÄÖÜäöüß]", "en_ja": "[\u3040-\u30ff\u4e00-\u9fff]"}


def _release(pair):
    return DEFAULT_MODELS_DIR / f"translation_{pair}"


@pytest.fixture(scope="module", params=PAIRS)
def pair(request):
    return request.param


def _require(pair):
    # en-ja has no release yet (issue 10's note: the tried recipe scores below copying the source).
    if not (_release(pair) / "MANIFEST.json").is_file():
        pytest.skip(f"no saved_models/translation_{pair} release in this tree")


@pytest.fixture(scope="module")
def latest(pair):
    _require(pair)
    return release_checks.latest_version(_release(pair))


def test_release_files_fit_the_budget(latest):
    release_checks.check_sizes(latest[0])


def test_manifest_records_config_data_commands_and_the_release_bar(pair, latest):
    version_dir, entry = latest
    assert entry["path"] == version_dir.name
    assert entry["train_command"].startswith("tfsuite train translation") and entry["train_seconds"] > 0
    assert entry["export_command"].startswith("tfsuite export translation")
    assert entry["config"]["language_pair"] == pair and entry["config"]["export_weights"] == "float16"
    evaluation = entry["release_evaluation"]
    assert evaluation["generated_by"].startswith("SavedModel")  # the release itself, not the Keras run
    assert evaluation["data_version"] == f"tfsuite_translation/{pair}:1.0.0"
    assert evaluation["test_inputs"] > TEST_INPUTS[pair]
    assert any(tok in evaluation["signatures"]["bleu"] for tok in BLEU_TOKENIZERS[pair]), evaluation["signatures"]
    scores = evaluation["metrics"]
    assert scores["bleu"] >= 2 * scores["copy_bleu"], scores
    if pair == "en_de":
        assert scores["chrf"] >= 40, scores
    else:
        assert scores["chrf"] >= 2 * scores["copy_chrf"], scores
    assert scores["repetition_rate"] < 0.01


def test_release_rescores_its_recorded_200_sentence_slice(pair, latest):
    version_dir, entry = latest
    check = release_checks.check_slice(_release(pair), entry)
    outputs, statuses = release_checks.decode(version_dir, "sentences", "translations", check["sources"])
    assert set(statuses) <= {"ok", "truncated"}  # a few test sentences are over the token limit
    language = pair.split("_")[1]
    release_checks.check_rescoring(check, outputs, lambda hyps, refs: metrics.corpus_scores(hyps, refs, language))


def test_demo_model_of_the_release(pair):
    # What `make demo` loads on a fresh clone: the default models dir, no training.
    _require(pair)
    model = TranslationApp().load_release(DEFAULT_MODELS_DIR)
    assert pair in model.models
    request = {"choice": pair, "input": "Open the file.", "beam_size": 4, "max_length": 32}
    translation = model(request)["translations"][0]
    translation = translation.decode("utf-8") if isinstance(translation, bytes) else translation
    assert re.search(DEMO_SCRIPT[pair], translation), translation
