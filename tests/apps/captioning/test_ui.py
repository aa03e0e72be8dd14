"""The captioning tab, live through ``gradio_client``: an uploaded PNG gets its caption streamed and the
detection release's boxes drawn on it; bad uploads get a message. Tiny models trained on the synthetic
scenes of the app tests are exported into a temporary ``saved_models/``."""

import numpy as np
import pytest
from gradio_client import handle_file

from apps import cli
from apps.captioning import CaptioningApp
from apps.detection import DetectionApp
from apps.ui import build_demo
from tests.apps.captioning import test_app as caption_tests
from tests.apps.detection import test_app as detection_tests
from tests.apps.ui_server import live_client


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    models = tmp_path_factory.mktemp("saved_models")
    _, captioner = caption_tests.train_tiny(tmp_path_factory.mktemp("runs"))
    _, detector = detection_tests.train_tiny(tmp_path_factory.mktemp("runs"))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(CaptioningApp, "examples", caption_tests._synthetic_examples)
        patch.setattr(DetectionApp, "scenes", detection_tests._scenes)
        for name, result in (("captioning", captioner), ("detection", detector)):
            assert cli.main(["export", name, "--checkpoint", str(result.model_path), "--models-dir", str(models)]) == 0
    for live in live_client(build_demo(names=["captioning"], models_dir=models,
                                       examples_dir=tmp_path_factory.mktemp("examples"))):
        live.models_dir = models
        yield live


def test_an_uploaded_png_gets_a_caption_and_the_detected_boxes(client, tmp_path):
    path = tmp_path / "scene.png"
    path.write_bytes(caption_tests._png(caption_tests.synthetic_scenes()[0][0]))
    caption, annotated = client.predict(handle_file(str(path)), 2, 8, api_name="/captioning")
    assert isinstance(caption, str) and caption.strip()
    # The boxes are the detection release's queries scoring at least 0.5, as it answers for this image.
    from apps.releases import ReleasedModel, latest_version_dir

    detector = ReleasedModel(latest_version_dir(client.models_dir, "detection"))
    scores = detector({"image_bytes": np.array([path.read_bytes()], dtype=object)})["detection_scores"][0]
    assert annotated["image"] is not None and len(annotated["annotations"]) == int((scores >= 0.5).sum())


@pytest.mark.parametrize("data, message", [(b"not an image at all", "upload an image file"),
                                           (caption_tests._png(np.zeros((1, 1, 3), np.uint8)), "too small")])
def test_bad_uploads_get_a_message(client, tmp_path, data, message):
    path = tmp_path / "upload.png"
    path.write_bytes(data)
    with pytest.raises(Exception, match=message):
        client.predict(handle_file(str(path)), 2, 8, api_name="/captioning")
