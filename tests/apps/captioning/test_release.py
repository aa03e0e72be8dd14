"""The captioning model released in git (``saved_models/captioning/``): what a fresh clone holds.

Its own figures were measured by ``tfsuite evaluate captioning --record`` (the whole test split through
``serving_default``, the CLIP retrieval baseline beside it, in MANIFEST.json ``release_evaluation``). These
tests check the file budget, the manifest's commands and figures, and re-decode the recorded 200-image
slice (base64 PNGs in ``checks/``) with plain ``tf.saved_model.load`` (as TF Serving would) to re-score it.
"""

import base64

import numpy as np
import pytest
import tensorflow_text  # noqa: F401 - the release's tokenizer ops

from apps import metrics
from apps.captioning import CaptioningApp
from apps.releases import DEFAULT_MODELS_DIR
from tests.apps import release_checks

RELEASE = DEFAULT_MODELS_DIR / "captioning"
if not (RELEASE / "MANIFEST.json").is_file():
    pytest.skip("no captioning release in saved_models/ yet", allow_module_level=True)


@pytest.fixture(scope="module")
def latest():
    return release_checks.latest_version(RELEASE)


def test_release_files_fit_the_budget(latest):
    release_checks.check_sizes(latest[0])


def test_manifest_records_the_commands_and_the_figures_beside_the_retrieval_baseline(latest):
    _, entry = latest
    assert entry["train_command"].startswith("tfsuite train captioning")
    assert entry["export_command"].startswith("tfsuite export captioning")
    evaluation = entry["release_evaluation"]
    assert evaluation["generated_by"].startswith("SavedModel") and evaluation["test_inputs"] > 1000
    scores = evaluation["metrics"]
    assert {"bleu4", "cider", "retrieval_bleu4", "retrieval_cider"} <= set(scores)
    assert scores["bleu4"] > scores["retrieval_bleu4"] and scores["cider"] > scores["retrieval_cider"], scores


def test_release_rescores_its_recorded_200_image_slice(latest):
    version_dir, entry = latest
    check = release_checks.check_slice(RELEASE, entry)
    images = [base64.b64decode(s) for s in check["sources"]]
    outputs, statuses = release_checks.decode(version_dir, "image_bytes", "captions", images)
    assert set(statuses) == {"ok"}
    release_checks.check_rescoring(check, outputs, metrics.caption_scores, tolerance=0.03)


def test_demo_model_of_the_release():
    model = CaptioningApp().load_release(DEFAULT_MODELS_DIR)
    check = release_checks.check_slice(RELEASE, release_checks.latest_version(RELEASE)[1])
    request = {"choice": "captioning", "input": base64.b64decode(check["sources"][0]), "beam_size": 1, "max_length": 20}
    assert np.asarray(model(request)["captions"]).reshape(-1)[0].strip()
