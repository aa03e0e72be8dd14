"""CLIP app: contrastive training on synthetic scenes, recall@k both ways beside chance, zero-shot naming,
the image-bytes + texts release, the captioning app's CLIP retrieval baseline, and bad input.

The scenes are the captioning tests' coloured squares (``ClipApp.examples`` and ``object_names`` are
monkeypatched), so these tests run on a fresh clone without the built ``tfsuite_captions``.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

from apps import cli
from apps.captioning import CaptioningApp, CaptioningConfig
from apps.clip import ClipApp, ClipConfig, nearest_captions
from apps.trainer import train
from tests.apps.captioning.test_app import TINY as CAPTION_TINY
from tests.apps.captioning.test_app import _png, _synthetic_examples, synthetic_scenes

TINY = dict(
    vocab_size=80, image_size=32, image_backbone="8,16", text_length=12, embed_dim=16, hidden_dim=32, num_layers=1,
    num_heads=2, batch_size=15, learning_rate=5e-3, warmup_steps=2, steps_per_epoch=20, validation_pairs=0,
    eval_batch_size=8, precision="float32", checkpoint_steps=0, keep_checkpoints=2, average_checkpoints=0, verbose=0,
)


def _object_names(self, config, split):
    return [[" ".join(caption.split()[1:3])] for caption in synthetic_scenes()[1]]  # "red square", one per scene


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    patch = pytest.MonkeyPatch()
    patch.setattr(ClipApp, "examples", _synthetic_examples)
    patch.setattr(ClipApp, "object_names", _object_names)
    keras.utils.set_random_seed(0)
    config = ClipConfig(**TINY, epochs=12, runs_dir=str(tmp_path_factory.mktemp("runs")), run_name="tiny")
    result = train(ClipApp(), config, command="pytest")
    yield config, result
    patch.undo()


def test_evaluate_prints_recall_both_ways_above_chance_and_zero_shot_naming(trained, capsys, monkeypatch):
    config, result = trained
    monkeypatch.setattr(ClipApp, "examples", _synthetic_examples)
    monkeypatch.setattr(ClipApp, "object_names", _object_names)
    assert cli.main(["evaluate", "clip", "--checkpoint", str(result.model_path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    values = {line.split(":")[0]: float(line.split(":")[1]) for line in lines if ":" in line}
    for direction in ("image_to_text", "text_to_image"):
        assert values[f"{direction}_recall_at_5"] >= values[f"{direction}_recall_at_1"]
    assert values["chance_recall_at_1"] == pytest.approx(1 / 15, abs=1e-4)
    # Learned: the right caption among 5 of 15 far more often than a third of the time (chance).
    assert values["image_to_text_recall_at_5"] > 0.6 and values["text_to_image_recall_at_5"] > 0.6, values
    assert values["zero_shot_names"] == 3 and values["zero_shot_images"] == 15
    assert 0.0 <= values["zero_shot_accuracy"] <= 1.0


def test_similarity_of_an_image_to_its_own_caption_is_the_diagonal_the_loss_trains(trained):
    config, result = trained
    model = keras.saving.load_model(result.model_path)
    app = ClipApp()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(ClipApp, "examples", _synthetic_examples)
        inputs, _ = next(iter(app.build_datasets(config).test))
    outputs = model(inputs)
    images = app.embed_images(model, inputs["images"].numpy(), 4)
    np.testing.assert_allclose(np.linalg.norm(images, axis=1), 1.0, atol=1e-5)
    scale = float(keras.ops.exp(model.logit_scale))
    texts = model.encode_text(inputs["token_ids"], inputs["padding_mask"])
    np.testing.assert_allclose(outputs["logits_per_image"].numpy(), scale * images @ texts.numpy().T, atol=1e-4)


def test_release_scores_image_bytes_against_texts_and_serves_the_captioning_baseline(trained, tmp_path, monkeypatch):
    config, result = trained
    monkeypatch.setattr(ClipApp, "examples", _synthetic_examples)
    monkeypatch.setattr(CaptioningApp, "examples", _synthetic_examples)
    assert cli.main(["export", "clip", "--checkpoint", str(result.model_path), "--models-dir", str(tmp_path)]) == 0
    served = tf.saved_model.load(str(tmp_path / "clip" / "1")).signatures["serving_default"]
    images, captions = synthetic_scenes()
    out = served(image_bytes=tf.constant([_png(images[0]), _png(images[1])]), texts=tf.constant(captions[:3]))
    assert out["logits_per_image"].shape == (2, 3)
    np.testing.assert_allclose(out["probabilities"].numpy().sum(axis=1), 1.0, atol=1e-5)
    # The captioning app's retrieval baseline through this CLIP: one training caption per image.
    picked = nearest_captions(str(result.model_path), [_png(images[0]), _png(images[5])], captions, config)
    assert len(picked) == 2 and all(p in captions for p in picked)
    caption_config = CaptioningConfig(**CAPTION_TINY, retrieval_model=str(result.model_path))
    assert CaptioningApp().baseline([_png(images[0])], caption_config)[0] in captions


def test_demo_input_checks():
    app = ClipApp()
    with pytest.raises(ValueError, match="No image"):
        app.preprocess(None, "a cat")
    with pytest.raises(ValueError, match="at least one candidate"):
        app.preprocess(__file__, "  \n ")
    with pytest.raises(ValueError, match="not an image"):
        app.preprocess(__file__, "a cat")
    outputs = {"probabilities": np.array([[0.25, 0.75]]), "texts": np.array([b"a cat", b"a dog"], dtype=object)}
    assert app.postprocess(outputs) == {"a cat": 0.25, "a dog": 0.75}
