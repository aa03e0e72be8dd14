"""The ``detection`` app: find the emoji in a scene and name their group with DETR (textbook section 7.3).

A declaration over the shared trainer and exporter: the corpus
(``tfsuite_captions``' ``objects``: one to three emoji per 128 x 128 scene,
each labelled with its Unicode group, the seven of
``pipelines.corpora.emoji_catalog.GROUPS``), the model
(``layers.detr.DETR`` on section 2.3 residual stages, a few object queries),
the loss (``apps.detr_loss.DETRLoss``: Hungarian matching of queries to
objects, then cross-entropy + L1 + GIoU; :class:`SetLossDETR` lets
``model.fit`` apply it to both outputs at once) and the metric: COCO box AP
(``pycocotools``: ``map`` over IoU 0.50:0.95 and ``ap50``). In the same run
``evaluate`` scores the **prior** baseline, which never looks at the pixels:
a box of the mean training size at each of the nine layout cells, once per
class with the class's training frequency as its score (``prior_map``,
``prior_ap50``).

Example::

    tfsuite data build tfsuite_captions
    tfsuite train detection
    tfsuite evaluate detection --checkpoint runs/detection/tfsuite_captions/model.keras
"""

from __future__ import annotations

import contextlib
import io
import math
from dataclasses import dataclass

import keras
import numpy as np
import tensorflow as tf

from apps.app import App, Datasets
from apps.config import TrainConfig, option
from apps.detr_loss import DETRLoss
from layers.detr import DETR, DETRBackbone
from pipelines import tfds_sources
from pipelines.corpora.emoji_catalog import GROUPS
from pipelines.images import decode_image, decode_resize_batch, resize_image
from pipelines.preprocessing import check_string_batch

__all__ = ["DetectionApp", "DetectionConfig", "SetLossDETR", "coco_box_ap"]

CELL_CENTERS = (22 / 128, 64 / 128, 106 / 128)  # the corpus's 3 x 3 layout grid, relative


@keras.saving.register_keras_serializable(package="tfsuite")
class SetLossDETR(DETR):
    """:class:`layers.detr.DETR` whose compiled loss sees both outputs: ``model.compile(loss=DETRLoss(C))``.

    Keras applies a compiled loss to each output of a dict separately; the
    set loss matches queries to objects with the logits and the boxes
    together, so ``compute_loss`` (Keras' hook for that) hands it the whole
    prediction. The network is DETR's, unchanged.
    """

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        if not isinstance(self.loss, DETRLoss):
            raise ValueError("SetLossDETR must be compiled with loss=apps.detr_loss.DETRLoss(num_classes)")
        loss = self.loss(y, y_pred)
        return loss + keras.ops.sum(keras.ops.stack(self.losses)) if self.losses else loss


def coco_box_ap(truth, detections, image_size):
    """``{"map", "ap50"}`` of ``detections`` against ``truth`` with ``pycocotools.COCOeval`` (``bbox``).

    ``truth``: per image a list of ``(class, (ymin, xmin, ymax, xmax))``, boxes relative;
    ``detections``: per image a list of ``(class, score, (ymin, xmin, ymax, xmax))``.
    """
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    def xywh(box):
        ymin, xmin, ymax, xmax = (float(v) * image_size for v in box)
        return [xmin, ymin, xmax - xmin, ymax - ymin]

    annotations = []
    for i, objects in enumerate(truth):
        for c, b in objects:
            x, y, w, h = xywh(b)
            annotations.append({"id": len(annotations) + 1, "image_id": i, "category_id": int(c) + 1,
                                "bbox": [x, y, w, h], "area": w * h, "iscrowd": 0})
    gt = COCO()
    gt.dataset = {"images": [{"id": i, "width": image_size, "height": image_size} for i in range(len(truth))],
                  "annotations": annotations, "categories": [{"id": c + 1} for c in range(len(GROUPS))]}
    with contextlib.redirect_stdout(io.StringIO()):
        gt.createIndex()
        found = [{"image_id": i, "category_id": int(c) + 1, "bbox": xywh(b), "score": float(s)}
                 for i, image in enumerate(detections) for c, s, b in image]
        if not found:
            return {"map": 0.0, "ap50": 0.0}
        evaluation = COCOeval(gt, gt.loadRes(found), "bbox")
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    return {"map": float(max(evaluation.stats[0], 0.0)), "ap50": float(max(evaluation.stats[1], 0.0))}


@dataclass
class DetectionConfig(TrainConfig):
    """Hyperparameters of the detection app."""

    image_size: int = option(128, "side of the square every image is resized to")
    image_backbone: str = option("32,64,128,256", "channels of the CNN stages (output stride 2^(1+stages))")
    num_queries: int = option(8, "object queries: the most emoji one scene can get")
    hidden_dim: int = option(128, "Transformer width")
    num_heads: int = option(4, "attention heads")
    num_layers: int = option(2, "encoder layers and decoder layers (each)")
    intermediate_dim: int = option(512, "FFN width")
    dropout: float = option(0.0, "dropout in the Transformer layers")
    max_objects: int = option(3, "objects per scene the targets are padded to")
    epochs: int = option(12, "number of training epochs")
    batch_size: int = option(32, "scenes per batch")
    learning_rate: float = option(3e-4, "learning rate of AdamW")
    patience: int = option(0, "early stopping patience in epochs (0 disables)")
    validation_pairs: int = option(500, "validation scenes scored for val_loss each epoch")
    verbose: int = option(2, "Keras fit verbosity: 1 progress bar, 2 one line per epoch, 0 silent")


class DetectionApp(App):
    """DETR finding the emoji of ``tfsuite_captions`` scenes and naming their Unicode group; COCO AP vs the prior."""

    name = "detection"
    title = "Emoji detection"
    description = "find the emoji in a scene and name their Unicode group with DETR (Hungarian matching); COCO AP"
    Config = DetectionConfig
    class_names = GROUPS

    def default_run_name(self, config):
        return "tfsuite_captions"

    def scenes(self, config, split):
        """``split`` as ``{"image": uint8, "labels": int (M,), "boxes": (M, 4) ymin, xmin, ymax, xmax}``."""
        from pipelines.corpora import emoji_catalog

        builder = tfds_sources._builder(tfds_sources.get_source("captioning", "tfsuite_captions"), None)  # noqa: SLF001
        catalog = emoji_catalog.load()
        table = tf.lookup.StaticHashTable(tf.lookup.KeyValueTensorInitializer(
            [e.char for e in catalog], [GROUPS.index(e.group) for e in catalog]), default_value=-1)
        ds = builder.as_dataset(split=split).map(lambda e: {
            "image": e["image"], "labels": table.lookup(e["objects"]["emoji"]), "boxes": e["objects"]["bbox"]})
        return ds.take(config.limit) if config.limit is not None else ds

    def _dataset(self, config, split, training=False):
        ds = self.scenes(config, split)
        if split == "validation" and config.validation_pairs:
            ds = ds.take(config.validation_pairs)
        size, most = config.image_size, config.max_objects

        def to_model(example):
            pixels = resize_image(decode_image(example["image"], 3), (size, size))
            ymin, xmin, ymax, xmax = tf.unstack(tf.reshape(example["boxes"], [-1, 4])[:most], axis=1)
            boxes = tf.stack([(xmin + xmax) / 2, (ymin + ymax) / 2, xmax - xmin, ymax - ymin], axis=1)
            labels = tf.cast(example["labels"][:most], tf.int32)
            pad = most - tf.shape(labels)[0]
            return pixels, {"labels": tf.pad(labels, [[0, pad]], constant_values=-1),
                            "boxes": tf.pad(boxes, [[0, pad], [0, 0]], constant_values=0.5)}

        ds = ds.map(to_model, num_parallel_calls=tf.data.AUTOTUNE).cache()
        if training:
            ds = ds.shuffle(30_000, seed=config.seed, reshuffle_each_iteration=True)
        return ds.batch(config.batch_size, drop_remainder=training).prefetch(tf.data.AUTOTUNE)

    def build_datasets(self, config):
        return Datasets(self._dataset(config, "train", True), self._dataset(config, "validation"),
                        self._dataset(config, "test"))

    def steps_per_epoch(self, config, train=None):
        if config.steps_per_epoch is not None:
            return config.steps_per_epoch
        return max(1, self.scene_count(config, "train") // config.batch_size)

    def scene_count(self, config, split):
        builder = tfds_sources._builder(tfds_sources.get_source("captioning", "tfsuite_captions"), None)  # noqa: SLF001
        count = builder.info.splits[split].num_examples
        return count if config.limit is None else min(count, config.limit)

    def build_model(self, config):
        stages = [int(c) for c in config.image_backbone.split(",")]
        model = SetLossDETR(
            DETRBackbone(stages, blocks_per_stage=1, name="backbone"), len(self.class_names),
            num_queries=config.num_queries, hidden_dim=config.hidden_dim, num_heads=config.num_heads,
            num_encoder_layers=config.num_layers, num_decoder_layers=config.num_layers,
            intermediate_dim=config.intermediate_dim, dropout=config.dropout, normalize_first=True, name="detr",
        )
        model(np.zeros((1, config.image_size, config.image_size, 3), "float32"))
        return model

    def compile_kwargs(self, config):
        return {"optimizer": keras.optimizers.AdamW(config.learning_rate, weight_decay=1e-4, clipnorm=0.1),
                "loss": DETRLoss(len(self.class_names))}

    # --- evaluation -----------------------------------------------------------------------------------

    def detections(self, outputs):
        """Model outputs -> per image ``[(class, score, (ymin, xmin, ymax, xmax))]``, one per query (DETR's eval)."""
        probabilities = tf.nn.softmax(tf.cast(outputs["logits"], tf.float32), axis=-1).numpy()[..., :-1]
        cx, cy, w, h = np.moveaxis(np.asarray(outputs["boxes"], np.float32), -1, 0)
        boxes = np.stack([cy - h / 2, cx - w / 2, cy + h / 2, cx + w / 2], axis=-1).clip(0, 1)
        classes = probabilities.argmax(-1)
        scores = probabilities.max(-1)
        return [list(zip(classes[i], scores[i], boxes[i])) for i in range(len(classes))]

    def truth(self, config, split):
        """Per scene ``[(class, box)]``; the images are dropped before iterating (never decoded here)."""
        objects = self.scenes(config, split).map(lambda e: (e["labels"], e["boxes"]))
        return [[(int(c), b) for c, b in zip(labels, boxes)] for labels, boxes in objects.as_numpy_iterator()]

    def prior(self, config, images):
        """The baseline: at each layout cell a box of the mean training size, once per class, scored by frequency."""
        train = self.truth(config, "train")
        sides = np.array([[b[2] - b[0], b[3] - b[1]] for objects in train for _, b in objects]).mean(axis=0)
        counts = np.bincount([c for objects in train for c, _ in objects], minlength=len(self.class_names))
        frequency = counts / counts.sum()
        boxes = [(cy - sides[0] / 2, cx - sides[1] / 2, cy + sides[0] / 2, cx + sides[1] / 2)
                 for cy in CELL_CENTERS for cx in CELL_CENTERS]
        one = [(c, frequency[c], box) for box in boxes for c in range(len(self.class_names))]
        return [one] * images

    def evaluate(self, model, config):
        detections = []
        for images, _ in self._dataset(config, "test"):
            detections.extend(self.detections(model(images, training=False)))
        return {**coco_box_ap(self.truth(config, "test"), detections, config.image_size), **self.comparisons(config)}

    # --- the release on the test split (``tfsuite evaluate detection`` without --checkpoint) -------------

    def test_examples(self, config):
        images = [tf.io.encode_png(e["image"]).numpy() for e in self.scenes(config, "test").as_numpy_iterator()]
        return {"image_bytes": images}, self.truth(config, "test")

    def score(self, predictions, references, config):
        return coco_box_ap(references, predictions, config.image_size)

    def release_predictions(self, outputs):
        return [list(zip(classes, scores, boxes)) for classes, scores, boxes in
                zip(outputs["detection_classes"], outputs["detection_scores"], outputs["detection_boxes"])]

    def comparisons(self, config):
        truth = self.truth(config, "test")
        return {f"prior_{k}": v for k, v in coco_box_ap(truth, self.prior(config, len(truth)), config.image_size).items()}

    # --- serving: image bytes -> boxes, scores, classes ---------------------------------------------------

    def serving_signature(self, config):
        return {"image_bytes": tf.TensorSpec((None,), tf.string)}

    def serving_outputs(self, model, inputs, config):
        size = config.image_size
        images = decode_resize_batch(check_string_batch(inputs["image_bytes"], "image_bytes"), size)
        outputs = model(images, training=False)
        probabilities = tf.nn.softmax(tf.cast(outputs["logits"], tf.float32), axis=-1)[..., :-1]
        cx, cy, w, h = tf.unstack(tf.cast(outputs["boxes"], tf.float32), axis=-1)
        classes = tf.argmax(probabilities, axis=-1, output_type=tf.int32)
        return {
            "detection_boxes": tf.clip_by_value(tf.stack([cy - h / 2, cx - w / 2, cy + h / 2, cx + w / 2], -1), 0.0, 1.0),
            "detection_scores": tf.reduce_max(probabilities, axis=-1),
            "detection_classes": classes,
            "detection_names": tf.gather(tf.constant(list(self.class_names)), classes),
        }

    def serving_example(self, config):
        images = [tf.io.encode_png(e["image"]).numpy() for e in self.scenes(config, "test").take(4).as_numpy_iterator()]
        return {"image_bytes": np.array(images, dtype=object)}

    # --- demo: an image -> the boxes drawn over it ----------------------------------------------------

    def ui_inputs(self):
        import gradio as gr

        return [gr.Image(label="Scene", type="filepath"), gr.Slider(0.0, 1.0, value=0.5, label="Score threshold")]

    def ui_outputs(self):
        import gradio as gr

        return [gr.AnnotatedImage(label="Detected emoji")]

    echo_inputs = ("image_bytes", "threshold")

    def preprocess(self, image, threshold=0.5):
        from pathlib import Path

        from pipelines.images import read_upload

        if image is None:
            raise ValueError("No image: upload a PNG or JPEG file, or pick an example.")
        if threshold is None or not 0.0 <= float(threshold) <= 1.0:
            raise ValueError(f"The score threshold must be between 0 and 1, got {threshold}.")
        return {"image_bytes": np.array([read_upload(Path(image).read_bytes())], dtype=object),
                "threshold": float(threshold)}

    def postprocess(self, outputs):
        return annotated_image(outputs["image_bytes"][0], outputs, outputs["threshold"])


def annotated_image(png, outputs, threshold=0.5, row=0):
    """``(image array, [((x0, y0, x1, y1) pixels, label)])`` for ``gr.AnnotatedImage`` from one row of detections."""
    from PIL import Image

    image = np.asarray(Image.open(io.BytesIO(bytes(png))).convert("RGB"))
    height, width = image.shape[:2]
    boxes = []
    if outputs is None:  # no detection release: the image alone
        return image, boxes
    for box, score, name in zip(outputs["detection_boxes"][row], outputs["detection_scores"][row],
                                outputs["detection_names"][row]):
        if score >= threshold:
            ymin, xmin, ymax, xmax = (float(v) for v in box)
            label = name.decode() if isinstance(name, bytes) else str(name)
            boxes.append(((int(xmin * width), int(ymin * height), int(math.ceil(xmax * width)),
                           int(math.ceil(ymax * height))), f"{label} {float(score):.2f}"))
    return image, boxes
