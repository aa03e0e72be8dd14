"""The en-de model released in git (``saved_models/translation_en_de/``): what a fresh clone serves.

Checks what issue 5 asks of the release: every file at most 20 MB, a
``MANIFEST.json`` with the config, data version, metric values and the
commands that produced them, translations equal to the ones recorded at
evaluation time, and ``tfsuite demo`` (the default models dir) answering
through ``gradio_client`` with the release's own translation.
"""

import json
import os
import socket

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402
from gradio_client import Client  # noqa: E402

from apps.cli import DEFAULT_MODELS_DIR  # noqa: E402
from apps.translation.export import SIGNATURES, read_settings  # noqa: E402
from apps.ui import build_demo, latest_version_dir  # noqa: E402

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
    # The export settings beside the SavedModel are the evaluated ones.
    settings = read_settings(version_dir)
    assert settings["num_beams"] == evaluation["beam_size"] == entry["config"]["beam_size"]


def test_signatures_are_the_pinned_api(serving):
    assert set(SIGNATURES) <= set(serving.signatures)


def test_release_reproduces_the_translations_recorded_at_evaluation(manifest_entry, serving):
    examples = manifest_entry["evaluation"]["examples"]
    sources = [e["source"] for e in examples]
    outputs = serving.signatures["serving_default"](sentences=tf.constant(sources))["translations"].numpy()
    assert [t.decode("utf-8") for t in outputs] == [e["translation"] for e in examples]


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_default_demo_translates_with_the_release(serving, tmp_path):
    # What `make demo` serves on a fresh clone: the default models dir, no training.
    demo = build_demo(names=["translation"], examples_dir=tmp_path)
    port = _free_port()
    demo.queue().launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    try:
        client = Client(f"http://127.0.0.1:{port}/", verbose=False)
        text = "Open the file."
        got = client.predict(text, "en_de", 4, 32, api_name="/translation")
    finally:
        demo.close()
    expected = serving.signatures["translate"](
        sentences=tf.constant([text]), beam_size=tf.constant(4, tf.int32), max_length=tf.constant(32, tf.int32)
    )["translations"].numpy()[0].decode("utf-8")
    assert got == expected and got.strip()
