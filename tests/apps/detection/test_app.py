"""Detection app: COCO AP through pycocotools, DETR trained with the set loss through the shared trainer,
the prior baseline, the image-bytes release with boxes, and the demo's drawn boxes.

The scenes are the captioning tests' coloured squares, labelled by colour (``DetectionApp.scenes`` is
monkeypatched), so these tests run on a fresh clone without the built ``tfsuite_captions``.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

from apps import cli
from apps.detection import DetectionApp, DetectionConfig, coco_box_ap
from apps.trainer import train
from tests.apps.captioning.test_app import SIZE, _png, synthetic_scenes

TINY = dict(
    image_size=SIZE, image_backbone="8,16,32", num_queries=4, hidden_dim=32, num_heads=2, num_layers=1,
    intermediate_dim=64, max_objects=3, batch_size=15, learning_rate=2e-3, steps_per_epoch=20, validation_pairs=0,
    precision="float32", checkpoint_steps=0, keep_checkpoints=2, average_checkpoints=0, verbose=0,
)


def _boxes():
    """The squares of synthetic_scenes: pixels rows*10+2 .. rows*10+10, as relative (ymin, xmin, ymax, xmax)."""
    places = [(0, 0), (2, 0), (1, 1), (0, 2), (2, 2)]
    return [[(row * 10 + 2) / SIZE, (col * 10 + 2) / SIZE, (row * 10 + 10) / SIZE, (col * 10 + 10) / SIZE]
            for _ in range(3) for col, row in places]


def _scenes(self, config, split):
    images, _ = synthetic_scenes()
    labels = [[colour] for colour in range(3) for _ in range(5)]
    ds = tf.data.Dataset.from_tensor_slices({"image": images, "labels": np.array(labels, np.int64),
                                             "boxes": np.array(_boxes(), np.float32)[:, None, :]})
    return ds.take(config.limit) if config.limit is not None else ds


def train_tiny(runs_dir):
    """A tiny DETR trained on the synthetic scenes (the app's data patched only while it trains)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(DetectionApp, "scenes", _scenes)
        patch.setattr(DetectionApp, "scene_count", lambda self, config, split: 15)
        keras.utils.set_random_seed(0)
        config = DetectionConfig(**TINY, epochs=10, runs_dir=str(runs_dir), run_name="tiny")
        return config, train(DetectionApp(), config, command="pytest")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    patch = pytest.MonkeyPatch()
    patch.setattr(DetectionApp, "scenes", _scenes)
    yield train_tiny(tmp_path_factory.mktemp("runs"))
    patch.undo()


def test_coco_box_ap_is_one_for_exact_boxes_and_falls_with_the_overlap():
    truth = [[(0, (0.1, 0.1, 0.5, 0.5))], [(1, (0.2, 0.2, 0.6, 0.9))]]
    exact = [[(0, 0.9, (0.1, 0.1, 0.5, 0.5))], [(1, 0.8, (0.2, 0.2, 0.6, 0.9))]]
    assert coco_box_ap(truth, exact, 128) == {"map": pytest.approx(1.0), "ap50": pytest.approx(1.0)}
    shifted = [[(0, 0.9, (0.15, 0.1, 0.55, 0.5))], [(1, 0.8, (0.2, 0.2, 0.6, 0.9))]]  # IoU 0.78 for the first
    scores = coco_box_ap(truth, shifted, 128)
    assert scores["ap50"] == pytest.approx(1.0) and 0.5 < scores["map"] < 1.0
    wrong_class = [[(2, 0.9, (0.1, 0.1, 0.5, 0.5))], [(1, 0.8, (0.2, 0.2, 0.6, 0.9))]]
    assert coco_box_ap(truth, wrong_class, 128)["ap50"] < 1.0
    assert coco_box_ap(truth, [[], []], 128) == {"map": 0.0, "ap50": 0.0}


def test_training_lowers_the_set_loss_and_evaluate_prints_coco_ap_beside_the_prior(trained, capsys, monkeypatch):
    config, result = trained
    assert result.history["loss"][-1] < 0.7 * result.history["loss"][0], result.history["loss"]
    monkeypatch.setattr(DetectionApp, "scenes", _scenes)
    assert cli.main(["evaluate", "detection", "--checkpoint", str(result.model_path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    values = {line.split(":")[0]: float(line.split(":")[1]) for line in lines if ":" in line}
    assert {"map", "ap50", "prior_map", "prior_ap50"} <= set(values)
    assert 0.0 <= values["map"] <= values["ap50"] <= 1.0
    assert values["ap50"] > values["prior_ap50"], values


def test_release_returns_boxes_scores_and_group_names_and_the_demo_draws_them(trained, tmp_path, monkeypatch):
    config, result = trained
    monkeypatch.setattr(DetectionApp, "scenes", _scenes)
    assert cli.main(["export", "detection", "--checkpoint", str(result.model_path), "--models-dir", str(tmp_path)]) == 0
    served = tf.saved_model.load(str(tmp_path / "detection" / "1")).signatures["serving_default"]
    png = _png(synthetic_scenes()[0][0])
    out = {k: v.numpy() for k, v in served(image_bytes=tf.constant([png, png])).items()}
    assert out["detection_boxes"].shape == (2, 4, 4) and out["detection_scores"].shape == (2, 4)
    assert ((0 <= out["detection_boxes"]) & (out["detection_boxes"] <= 1)).all()
    assert set(out["detection_names"].reshape(-1)) <= {g.encode() for g in DetectionApp.class_names}
    app = DetectionApp()
    image, boxes = app.postprocess({**out, "image_bytes": [png], "threshold": 0.0})
    assert image.shape == (SIZE, SIZE, 3) and len(boxes) == 4
    (x0, y0, x1, y1), label = boxes[0]
    assert 0 <= x0 <= x1 <= SIZE and 0 <= y0 <= y1 <= SIZE and label.split()[-1].replace(".", "").isdigit()
    assert app.postprocess({**out, "image_bytes": [png], "threshold": 1.01})[1] == []


def test_demo_input_checks(tmp_path):
    app = DetectionApp()
    with pytest.raises(ValueError, match="No image"):
        app.preprocess(None)
    path = tmp_path / "scene.png"
    path.write_bytes(_png(synthetic_scenes()[0][0]))
    with pytest.raises(ValueError, match="between 0 and 1"):
        app.preprocess(str(path), 2.0)
    path.write_bytes(b"GIF89a broken")
    with pytest.raises(ValueError, match="truncated or corrupt|not an image"):
        app.preprocess(str(path), 0.5)
