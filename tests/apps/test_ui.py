"""The shared Gradio UI and the released Fashion-MNIST model it serves.

A live server on 127.0.0.1 (free port, in this process's threads) is called
through ``gradio_client`` like a remote user would, with real test images.
"""

import json
import os
import socket

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from gradio_client import Client, handle_file  # noqa: E402
from PIL import Image  # noqa: E402

from apps.releases import DEFAULT_MODELS_DIR, ReleasedModel, latest_version_dir  # noqa: E402
from apps.image_classification import to_model_image  # noqa: E402
from apps.ui import build_demo  # noqa: E402
from pipelines import fashion_mnist  # noqa: E402

RELEASE = DEFAULT_MODELS_DIR / "fashion_mnist"


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def released_model():
    return ReleasedModel(latest_version_dir(DEFAULT_MODELS_DIR, "fashion_mnist"))


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    demo = build_demo(examples_dir=tmp_path_factory.mktemp("examples"))
    port = _free_port()
    demo.queue().launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    try:
        yield Client(f"http://127.0.0.1:{port}/", verbose=False)
    finally:
        demo.close()


def _top_label(result):
    return result["label"], [c["label"] for c in result["confidences"]]


def test_released_model_is_in_git_with_its_manifest_and_measured_accuracy(released_model):
    manifest = json.loads((RELEASE / "MANIFEST.json").read_text())
    entry = manifest["versions"][str(manifest["latest"])]
    assert entry["config"]["model"] == "lenet5"
    assert entry["train_command"].startswith("tfsuite train fashion_mnist")
    assert entry["export_command"].startswith("tfsuite export fashion_mnist")
    # Re-measure the released SavedModel on the full test split: the manifest's figure is real.
    images, labels = fashion_mnist.load_split("test")
    batch = (images[..., None] / 255.0).astype("float32")
    probabilities = np.concatenate(
        [released_model({"images": batch[i : i + 2000]})["probabilities"] for i in range(0, len(batch), 2000)]
    )
    accuracy = float(np.mean(probabilities.argmax(axis=1) == labels))
    assert accuracy == pytest.approx(entry["test_metrics"]["test_accuracy"], abs=1e-3)
    assert accuracy >= 0.89
    release_files = latest_version_dir(DEFAULT_MODELS_DIR, "fashion_mnist").rglob("*")
    size = sum(f.stat().st_size for f in release_files if f.is_file())
    assert size < 2_000_000, f"the released SavedModel should stay small, it is {size} bytes"


def test_to_model_image_matches_the_dataset_for_dataset_images():
    images, _ = fashion_mnist.load_split("test")
    np.testing.assert_array_equal(to_model_image(images[0])[..., 0], images[0] / np.float32(255.0))
    # Dark garment on a white background (a photo) is inverted back to the dataset's look.
    np.testing.assert_allclose(to_model_image(255 - images[0]), to_model_image(images[0]), atol=1e-7)


def test_to_model_image_accepts_any_size_and_colour():
    photo = np.full((90, 60, 3), (250, 245, 240), np.uint8)  # light, off-white background
    photo[20:70, 15:45] = (30, 60, 120)  # a dark blue item
    result = to_model_image(photo)
    assert result.shape == (28, 28, 1) and result.dtype == np.float32
    assert result[0, 0, 0] < 0.1, "light background must become black"
    assert result[14, 14, 0] > 0.6, "the dark item must become bright"
    transparent = np.zeros((40, 40, 4), np.uint8)  # fully transparent counts as white paper
    transparent[10:30, 10:30] = (0, 0, 0, 255)
    result = to_model_image(transparent)
    assert result[0, 0, 0] < 0.05 and result[14, 14, 0] > 0.9


@pytest.mark.parametrize(
    "value, message",
    [
        (None, "No image"),
        (np.zeros((0, 0, 3), np.uint8), "Could not read the image"),
        (np.zeros((5, 5, 7)), "Could not read the image"),
    ],
)
def test_to_model_image_rejects_empty_input(value, message):
    with pytest.raises(ValueError, match=message):
        to_model_image(value)


def test_live_demo_labels_a_real_test_image_like_the_model(client, released_model, tmp_path):
    images, labels = fashion_mnist.load_split("test")
    for index in (0, 1, 2):
        expected = released_model({"images": (images[index : index + 1, ..., None] / 255.0).astype("float32")})
        expected_label = fashion_mnist.CLASS_NAMES[int(expected["probabilities"].argmax())]
        path = tmp_path / f"test_{index}.png"
        Image.fromarray(images[index]).save(path)
        top, top3 = _top_label(client.predict(handle_file(str(path)), api_name="/fashion_mnist"))
        assert top == expected_label
        assert len(top3) == 3 and set(top3) <= set(fashion_mnist.CLASS_NAMES)
        # The same garment as an RGB picture, dark on white, is inverted back and gets the same answer.
        photo = np.stack([255 - images[index]] * 3, axis=-1)
        Image.fromarray(photo).save(tmp_path / f"photo_{index}.png")
        result = client.predict(handle_file(str(tmp_path / f"photo_{index}.png")), api_name="/fashion_mnist")
        top, _ = _top_label(result)
        assert top == expected_label


def test_live_demo_reports_empty_and_unreadable_images(client, tmp_path):
    with pytest.raises(Exception, match="No image: upload or draw an image"):
        client.predict(None, api_name="/fashion_mnist")
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG this is not really a png")
    with pytest.raises(Exception, match=r"Could not read the uploaded file \(UnidentifiedImageError\); upload an image"):
        client.predict(handle_file(str(broken)), api_name="/fashion_mnist")


def test_demo_without_a_release_says_how_to_make_one(tmp_path):
    with pytest.raises(FileNotFoundError, match="tfsuite export fashion_mnist --checkpoint"):
        latest_version_dir(tmp_path, "fashion_mnist")
    demo = build_demo(models_dir=tmp_path, examples_dir=tmp_path)
    assert any("tfsuite export fashion_mnist" in str(getattr(b, "value", "")) for b in demo.blocks.values())
