"""The en-de model released in git (``saved_models/translation_en_de/``): what a fresh clone holds.

Version 1 was exported before the shared exporter (``apps/export.py``): its
signatures are ``serving_default(sentences)`` and ``translate(sentences,
beam_size, max_length)`` with settings in ``assets/translator.json``, and no
``assets/generation.json``. These tests check what still holds for it: every
file at most 20 MB, a ``MANIFEST.json`` with the config, data version, metric
values and the commands that produced them, translations equal to the ones
recorded at evaluation time (loaded with plain ``tf.saved_model.load``, as TF
Serving would), and a demo that says the release must be re-exported instead
of failing.
"""

import json
import os

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402
import tensorflow_text  # noqa: E402,F401 - the release's tokenizer ops

from apps.releases import DEFAULT_MODELS_DIR, latest_version_dir  # noqa: E402
from apps.translation import TranslationApp  # noqa: E402

RELEASE = DEFAULT_MODELS_DIR / "translation_en_de"
MAX_FILE_BYTES = 20 * 1024 * 1024


@pytest.fixture(scope="module")
def manifest_entry():
    manifest = json.loads((RELEASE / "MANIFEST.json").read_text(encoding="utf-8"))
    return manifest["versions"][str(manifest["latest"])]


@pytest.fixture(scope="module")
def version_dir():
    return latest_version_dir(DEFAULT_MODELS_DIR, "translation_en_de")


@pytest.fixture(scope="module")
def serving(version_dir):
    return tf.saved_model.load(str(version_dir))


def test_every_release_file_fits_in_git():
    sizes = {str(p.relative_to(RELEASE)): p.stat().st_size for p in RELEASE.rglob("*") if p.is_file()}
    assert sizes, f"no files under {RELEASE}"
    too_big = {name: size for name, size in sizes.items() if size > MAX_FILE_BYTES}
    assert not too_big, too_big


def test_manifest_records_config_data_metrics_and_commands(manifest_entry, version_dir):
    entry = manifest_entry
    assert entry["path"] == version_dir.name
    assert entry["train_command"].startswith("tfsuite train translation")
    assert entry["export_command"].startswith("tfsuite export translation")
    assert entry["config"]["language_pair"] == "en_de" and entry["config"]["vocab_size"] > 0
    evaluation = entry["evaluation"]
    assert evaluation["data_version"] == "tfsuite_translation/en_de:1.0.0"
    assert evaluation["test_sentences"] > 3000 and "tok:13a" in evaluation["signatures"]["bleu"]
    assert 0 < evaluation["metrics"]["bleu"] < 100 and 0 < evaluation["metrics"]["chrf"] < 100
    assert entry["train_seconds"] > 0
    settings = json.loads((version_dir / "assets" / "translator.json").read_text())  # version 1's settings file
    assert settings["num_beams"] == evaluation["beam_size"] == entry["config"]["beam_size"]


def test_signatures_are_version_1s_api(serving):
    assert {"serving_default", "translate"} <= set(serving.signatures)


def test_release_reproduces_the_translations_recorded_at_evaluation(manifest_entry, serving):
    examples = manifest_entry["evaluation"]["examples"]
    assert examples
    sources = [e["source"] for e in examples]
    outputs = serving.signatures["serving_default"](sentences=tf.constant(sources))
    assert [t.decode("utf-8") for t in outputs["translations"].numpy()] == [e["translation"] for e in examples]


def test_demo_model_of_the_release(version_dir):
    # What `make demo` loads on a fresh clone: the default models dir, no training.
    if (version_dir / "assets" / "generation.json").is_file():
        model = TranslationApp().load_release(DEFAULT_MODELS_DIR)
        request = {"choice": "en_de", "input": "Open the file.", "beam_size": 4, "max_length": 32}
        assert model(request)["translations"][0].strip()
    else:  # an old-format release: the tab explains instead of crashing
        with pytest.raises(FileNotFoundError, match="predates the current export format"):
            TranslationApp().load_release(DEFAULT_MODELS_DIR)
