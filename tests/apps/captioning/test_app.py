"""Captioning app: the caption batches, BLEU-4 / CIDEr beside the retrieval baseline, the image-bytes
release (status per row, TFLite on pixels), the upload checks, and the real TFDS dataset by name.

The corpus is a small synthetic set of coloured squares on a 3 x 3 grid (``CaptioningApp.examples`` is
monkeypatched), so these tests run on a fresh clone without the built ``tfsuite_captions``.
"""

import io
import json
import struct
import zlib

import keras
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
from PIL import Image

from apps import cli, metrics
from apps.captioning import CaptioningApp, CaptioningConfig
from apps.trainer import train
from pipelines.captioning import make_caption_dataset
from pipelines.images import ImageAugmentation, read_upload

REAL_EXAMPLES = CaptioningApp.examples
COLOURS = {"red": (220, 30, 30), "green": (30, 180, 30), "blue": (30, 30, 220)}
PLACES = {(0, 0): "in the top left corner", (2, 0): "in the top right corner", (1, 1): "in the center",
          (0, 2): "in the bottom left corner", (2, 2): "in the bottom right corner"}
SIZE = 32


def synthetic_scenes():
    images, captions = [], []
    for (name, rgb), ((col, row), place) in [(c, p) for c in COLOURS.items() for p in PLACES.items()]:
        image = np.full((SIZE, SIZE, 3), 245, np.uint8)
        image[row * 10 + 2: row * 10 + 10, col * 10 + 2: col * 10 + 10] = rgb
        images.append(image)
        captions.append(f"a {name} square {place}")
    return np.stack(images), captions


def _synthetic_examples(self, config, split):
    images, captions = synthetic_scenes()
    ds = tf.data.Dataset.from_tensor_slices({"image": images, "caption": captions})
    return ds.take(config.limit) if config.limit is not None else ds


TINY = dict(
    vocab_size=80, hidden_dim=32, num_heads=2, intermediate_dim=64, num_layers=1, dropout=0.0, image_size=SIZE,
    image_backbone="8,16", batch_size=15, max_target_length=12, max_new_tokens=10, beam_size=2, eval_batch_size=8,
    warmup_steps=2, learning_rate=5e-3, verbose=0, steps_per_epoch=20, validation_pairs=None, precision="float32",
    checkpoint_steps=0, keep_checkpoints=2, average_checkpoints=0, max_shift=0,
)


def train_tiny(runs_dir):
    """A tiny captioner trained on the synthetic scenes (the app's data patched only while it trains)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(CaptioningApp, "examples", _synthetic_examples)
        patch.setattr(CaptioningApp, "data_version", lambda self, config: "synthetic:0")
        keras.utils.set_random_seed(0)
        config = CaptioningConfig(**TINY, epochs=8, runs_dir=str(runs_dir), run_name="tiny")
        return config, train(CaptioningApp(), config, command="pytest")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    patch = pytest.MonkeyPatch()
    patch.setattr(CaptioningApp, "examples", _synthetic_examples)
    patch.setattr(CaptioningApp, "data_version", lambda self, config: "synthetic:0")
    yield train_tiny(tmp_path_factory.mktemp("runs"))
    patch.undo()


def test_caption_batches_hold_pixels_in_0_1_and_targets_shifted_by_one(trained):
    config, _ = trained
    app = CaptioningApp()
    features, targets = next(iter(app.build_datasets(config).test))
    tokenizer = app.tokenizers(config).target
    assert features["encoder_inputs"].shape == (15, SIZE, SIZE, 3) and features["encoder_inputs"].dtype == tf.float32
    assert 0.0 <= float(tf.reduce_min(features["encoder_inputs"])) and float(tf.reduce_max(features["encoder_inputs"])) <= 1.0
    ids, labels = features["decoder_token_ids"].numpy(), targets.numpy()
    assert (ids[:, 0] == tokenizer.start_id).all()
    np.testing.assert_array_equal(ids[:, 1:][features["decoder_padding_mask"].numpy()[:, 1:]],
                                  labels[:, :-1][features["decoder_padding_mask"].numpy()[:, 1:]])
    first = tokenizer.detokenize(tf.constant(labels[:1, :-1]))
    assert synthetic_scenes()[1][0].split()[1] in first.numpy()[0].decode()


def test_caption_dataset_refuses_a_flip_and_a_dataset_without_captions():
    images, captions = synthetic_scenes()
    ds = tf.data.Dataset.from_tensor_slices({"image": images, "caption": captions})
    tokenizer = type("T", (), {"pad_id": 0, "start_id": 1, "end_id": 2})()
    with pytest.raises(ValueError, match="flip=False"):
        make_caption_dataset(ds, tokenizer, SIZE, 8, augmentation=ImageAugmentation(flip=True))
    with pytest.raises(ValueError, match="'caption'"):
        make_caption_dataset(tf.data.Dataset.from_tensor_slices({"image": images}), tokenizer, SIZE, 8)


def test_training_learns_the_scenes_and_evaluate_prints_bleu4_cider_beside_retrieval(trained, capsys, monkeypatch):
    config, result = trained
    monkeypatch.setattr(CaptioningApp, "examples", _synthetic_examples)
    monkeypatch.setattr(CaptioningApp, "data_version", lambda self, config: "synthetic:0")
    assert cli.main(["evaluate", "captioning", "--checkpoint", str(result.model_path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    names = ("bleu4", "cider", "retrieval_bleu4", "retrieval_cider")
    values = {line.split(":")[0]: float(line.split(":")[1]) for line in lines if line.split(":")[0] in names}
    assert set(values) == set(names)
    # Retrieval on the same split finds each image itself (every test image is also a training image).
    assert values["retrieval_bleu4"] == pytest.approx(1.0, abs=1e-6)
    assert values["bleu4"] > 0.15, values  # untrained: 0.0 (the colour, "square" and place words are learned)
    record = json.loads((result.run_dir / "evaluation.json").read_text())
    assert record["metrics"]["cider"] == pytest.approx(values["cider"], abs=1e-4)
    image = record["examples"][0]["source"]  # base64 PNG: the record stays JSON
    assert Image.open(io.BytesIO(__import__("base64").b64decode(image))).size == (SIZE, SIZE)


def test_release_takes_image_bytes_with_a_status_per_row_and_tflite_takes_pixels(trained, capsys, tmp_path, monkeypatch):
    config, result = trained
    monkeypatch.setattr(CaptioningApp, "examples", _synthetic_examples)
    monkeypatch.setattr(CaptioningApp, "data_version", lambda self, config: "synthetic:0")
    args = ["--checkpoint", str(result.model_path), "--models-dir", str(tmp_path)]
    assert cli.main(["export", "captioning", *args]) == 0
    served = tf.saved_model.load(str(tmp_path / "captioning" / "1")).signatures["serving_default"]
    png = CaptioningApp().load_texts(config, "test")[0][0]
    out = served(image_bytes=tf.constant([png, b"not an image"]))
    assert [s.decode() for s in out["status"].numpy()] == ["ok", "unreadable"]
    assert out["captions"].numpy()[0] and out["captions"].numpy()[1] == b""
    keras_caption = CaptioningApp().generate(keras.saving.load_model(result.model_path), config, [png], beam_size=2)
    assert out["captions"].numpy()[0].decode() == keras_caption[0]
    assert cli.main(["export", "captioning", "--format", "tflite", *args]) == 0
    assert (tmp_path / "captioning" / "tflite" / "model_int8.tflite").is_file()


def _png(image, mode=None):
    buffer = io.BytesIO()
    Image.fromarray(image, mode).save(buffer, format="PNG")
    return buffer.getvalue()


def _huge_png_header(width, height):
    """A PNG whose header says ``width`` x ``height`` (its data is one row): what a huge upload looks like to a reader."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = lambda kind, data: struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))  # noqa: E731
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 4)) + chunk(b"IEND", b"")


@pytest.mark.parametrize(
    "data, message",
    [
        (b"", "empty"),
        (b"plain text, not an image", "not an image"),
        (_png(np.zeros((32, 32, 3), np.uint8))[:60], "truncated or corrupt"),
        (_png(np.zeros((1, 1, 3), np.uint8)), "too small"),
        (_huge_png_header(10_000, 10_000), "shrink it"),
    ],
    ids=["empty", "not-an-image", "truncated-png", "one-pixel", "10000x10000"],
)
def test_uploads_that_cannot_be_captioned_get_a_message(data, message):
    with pytest.raises(ValueError, match=message):
        read_upload(data)


def test_grey_and_rgba_uploads_become_rgb_with_transparency_read_as_white(tmp_path):
    grey = Image.open(io.BytesIO(read_upload(_png(np.full((20, 20), 90, np.uint8), "L"))))
    assert grey.mode == "RGB" and grey.getpixel((0, 0)) == (90, 90, 90)
    rgba = np.zeros((20, 20, 4), np.uint8)
    rgba[:10, :, :] = (200, 0, 0, 255)
    converted = Image.open(io.BytesIO(read_upload(_png(rgba, "RGBA"))))
    assert converted.getpixel((0, 0)) == (200, 0, 0) and converted.getpixel((0, 19)) == (255, 255, 255)
    path = tmp_path / "grey.png"
    path.write_bytes(_png(np.full((20, 20), 90, np.uint8), "L"))
    request = CaptioningApp().preprocess(str(path), 2, 8)
    assert request["choice"] == "captioning" and request["input"].startswith(b"\x89PNG")
    with pytest.raises(ValueError, match="No image"):
        CaptioningApp().preprocess(None, 2, 8)


def test_coco_captions_reads_the_real_tfds_dataset_by_name():
    app, config = CaptioningApp(), CaptioningConfig(**TINY, dataset="coco_captions")
    with tfds.testing.mock_data(num_examples=3):
        examples = list(REAL_EXAMPLES(app, config, "test").as_numpy_iterator())
    assert len(examples) == 3
    assert all(e["image"].ndim == 3 and e["image"].shape[-1] == 3 and isinstance(e["caption"], bytes) for e in examples)


def test_caption_scores_are_pycocoevalcap_on_lower_cased_words_without_punctuation():
    from pycocoevalcap.bleu.bleu import Bleu

    hypotheses, references = ["A red square, in the center!"], [["a red square in the center", "a red box"]]
    expected = Bleu(4).compute_score({0: references[0]}, {0: ["a red square in the center"]}, verbose=0)[0][3]
    assert metrics.caption_scores(hypotheses, references)["bleu4"] == pytest.approx(expected)
    assert metrics.caption_tokens("A T-Rex's hat.") == "a t-rex's hat"
    with pytest.raises(ValueError, match="one hypothesis per reference"):
        metrics.caption_scores(["a"], [])
