"""The ``captioning`` app: an image to a one-sentence caption (textbook 7.2 and 9.1, chapter 10).

A declaration over the shared encoder-decoder engine (``apps/seq2seq.py``):
the corpus (``tfsuite_captions``: rendered emoji scenes whose captions name
every emoji and how they are placed; ``coco_captions`` for users with the
real TFDS data), the model (``layers.transformer_models.Transformer`` with
``encoder_input="image"``: a ViT-hybrid encoder, residual CNN stages whose
feature-map cells are the encoder's tokens, then our Transformer decoder with
the KV-cache and beam search of the shared generator), the metric (COCO
``bleu4`` and ``cider``, ``pycocoevalcap``) and the baseline every release
must beat: **retrieval**, the training caption of the image nearest to the
test image (``retrieval_bleu4`` ..., in the same run on the same split).
The neighbour is found by a CLIP model's image-text similarity when
``--retrieval-model`` names one (``tfsuite train clip``), else by the
images' small-thumbnail pixels.

The release's ``serving_default`` takes encoded images (``image_bytes``, PNG
or JPEG: TF Serving's REST ``{"b64": ...}``) and decodes and resizes inside
the graph; its TFLite models take pixels (image decoding has no TFLite kernel).

Example::

    tfsuite data build tfsuite_captions
    tfsuite train captioning
    tfsuite evaluate captioning --checkpoint runs/captioning/tfsuite_captions/model.keras
"""

from __future__ import annotations

import base64
import math
from dataclasses import dataclass

import numpy as np
import tensorflow as tf

from apps import metrics
from apps.config import option
from apps.export import SignatureNames
from apps.seq2seq import Seq2SeqApp, Seq2SeqConfig
from layers.transformer_models import Transformer
from pipelines.captioning import make_caption_dataset
from pipelines.images import ImageAugmentation, read_upload
from pipelines.preprocessing import ImagePreprocessor

__all__ = ["CaptioningApp", "CaptioningConfig"]

THUMBNAIL = 16  # side of the pixel-retrieval embedding


@dataclass
class CaptioningConfig(Seq2SeqConfig):
    """Hyperparameters of the captioning app (README "Image captioning" records the release run)."""

    image_size: int = option(128, "side of the square every image is resized to")
    image_backbone: str = option("48,96,192", "channels of the CNN stages before the encoder (output stride 2^(1+stages))")
    retrieval_model: str = option("", "a CLIP .keras model for the retrieval baseline (default: thumbnail pixels)")
    max_shift: int = option(4, "training augmentation: random translation in pixels (0 disables)")
    vocab_size: int = option(4000, "WordPiece vocabulary of the captions")
    lower_case: bool = option(True, "lower-case captions (COCO scores them lower-cased)")
    shared_vocab: bool = option(True, "one tokenizer (the image side has none)")
    max_target_length: int = option(40, "caption tokens incl. [START]; longer captions are cut")
    max_new_tokens: int = option(40, "most caption tokens generated")
    length_ratio: float = option(0.0, "no output limit tied to the input (images have no length)")
    num_layers: int = option(3, "encoder layers and decoder layers (each)")
    epochs: int = option(12, "number of training epochs")
    batch_size: int = option(64, "images per training batch")
    learning_rate: float = option(1e-3, "peak learning rate (after warmup) of Adam")
    warmup_steps: int = option(500, "linear warmup steps")
    patience: int = option(0, "early stopping patience in epochs (0: the cosine schedule sets the length)")
    beam_size: int = option(3, "beam search width at evaluation and in serving_default (1 is greedy)")
    validation_pairs: int = option(1000, "validation images scored for val_loss each epoch")
    checkpoint_steps: int = option(200, "also save a resumable checkpoint every N training steps")
    verbose: int = option(2, "Keras fit verbosity: 1 progress bar, 2 one line per epoch, 0 silent")


class CaptioningApp(Seq2SeqApp):
    """Image captioning with a CNN-stem Transformer encoder-decoder, scored by BLEU-4 / CIDEr against retrieval."""

    name = "captioning"
    title = "Image captioning"
    description = "caption an image with a ViT-hybrid encoder and a Transformer decoder; BLEU-4, CIDEr vs retrieval"
    Config = CaptioningConfig
    task = "captioning"
    source_field, target_field = "image", "caption"
    default_dataset = "tfsuite_captions"
    names = SignatureNames(input="image_bytes", output="captions", options="caption", tokens="caption_tokens")
    baseline_name = "retrieval"
    input_label, output_label = "Image", "Caption"

    def default_run_name(self, config):
        return self.dataset_name(config).replace("/", "_")

    # --- data -------------------------------------------------------------------------------------

    def load_texts(self, config, split):
        """``(PNG bytes per image, captions)`` of ``split``: what the decoder, the release and the baseline read."""
        key = (self.dataset_name(config), split, config.limit)
        if key not in self._texts:
            encoded = self.examples(config, split).map(
                lambda example: (tf.io.encode_png(example["image"]), example["caption"]),
                num_parallel_calls=tf.data.AUTOTUNE,
            )
            images, captions = [], []
            for batch_images, batch_captions in encoded.batch(256).as_numpy_iterator():
                images.extend(bytes(b) for b in batch_images)
                captions.extend(c.decode("utf-8") for c in batch_captions)
            self._texts[key] = (images, captions)
        return self._texts[key]

    def _vocabulary_texts(self, config, side):
        return self.target_texts(config, "train")

    def record_sources(self, sources):
        return [base64.b64encode(image).decode("ascii") for image in sources]

    def preprocessor(self, config, tokenizers=None, prefix=None):
        target = (tokenizers or self.tokenizers(config)).target
        return ImagePreprocessor(target, config.image_size, input_name=self.names.input)

    def _dataset(self, config, split, training=False):
        examples = self.examples(config, split)
        if split == "validation" and config.validation_pairs:
            examples = examples.take(config.validation_pairs)
        return make_caption_dataset(
            examples, self.tokenizers(config).target, config.image_size, config.max_target_length,
            batch_size=config.batch_size, shuffle=training, seed=config.seed, shuffle_buffer=30_000,
            augmentation=ImageAugmentation(flip=False, max_shift=config.max_shift) if training and config.max_shift else None,
            deterministic=config.deterministic or not training,
        )

    def steps_per_epoch(self, config, train=None):
        return self.batches_per_pass(config)

    # --- model --------------------------------------------------------------------------------------

    def build_model(self, config):
        stages = [int(c) for c in config.image_backbone.split(",")]
        cells = math.ceil(config.image_size / 2 ** (1 + len(stages))) ** 2
        if cells > config.model_max_length:
            raise ValueError(
                f"--image-size {config.image_size} with {len(stages)} CNN stages gives {cells} encoder tokens, more than "
                f"--model-max-length {config.model_max_length}: add a stage, shrink the image or raise the length"
            )
        model = Transformer(
            None, self.tokenizers(config).target.vocab_size, config.model_max_length,
            num_encoder_layers=config.num_layers, num_decoder_layers=config.num_layers, hidden_dim=config.hidden_dim,
            num_heads=config.num_heads, intermediate_dim=config.intermediate_dim, dropout=config.dropout,
            normalize_first=config.normalize_first, position_encoding=config.position_encoding,
            encoder_input="image", image_backbone=stages,
            name=f"{self.name}_transformer",
        )
        model.build()
        return model

    # --- metric and baseline ----------------------------------------------------------------------

    def score(self, hypotheses, references, config):
        return metrics.caption_scores(hypotheses, references)

    def metric_settings(self, config):
        from importlib.metadata import version

        return {"signatures": {"captions": f"pycocoevalcap:{version('pycocoevalcap')}|Bleu(4),Cider|lowercase,no-punct"},
                "retrieval": config.retrieval_model or f"pixels {THUMBNAIL}x{THUMBNAIL}"}

    def baseline(self, sources, config):
        """The caption of the nearest training image (CLIP image-text similarity, else thumbnail pixels)."""
        captions = self.target_texts(config, "train")
        if config.retrieval_model:
            from apps.clip import nearest_captions

            return nearest_captions(config.retrieval_model, sources, captions, config)

        def thumbnails(images):
            small = tf.image.resize(tf.image.convert_image_dtype(images, tf.float32), [THUMBNAIL, THUMBNAIL], antialias=True)
            flat = tf.reshape(small, [tf.shape(small)[0], -1])
            flat -= tf.reduce_mean(flat, axis=1, keepdims=True)
            return tf.math.l2_normalize(flat, axis=1)

        train = self.examples(config, "train").map(lambda e: e["image"]).batch(512).map(thumbnails)
        bank = np.concatenate(list(train.as_numpy_iterator()))
        queries = thumbnails(tf.stack([tf.io.decode_image(s, channels=3, expand_animations=False) for s in sources]))
        return [captions[i] for i in np.argmax(queries.numpy() @ bank.T, axis=1)]

    # --- TFLite (pixels in) and the demo tab ------------------------------------------------------------

    def evaluate_tflite(self, release_dir, kind, config):
        from pathlib import Path

        from apps.export import TFLITE_FILES, TFLITE_FOLDER, TFLiteRunner

        path = Path(release_dir) / TFLITE_FOLDER / TFLITE_FILES[kind]
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found; convert the release first: `tfsuite export {self.name} --format tflite`")
        runner, pre = TFLiteRunner(path), self.preprocessor(config)

        def caption(batch):
            return runner(pre.encoder_inputs(tf.constant(batch, tf.string))[0].numpy())[self.names.output]

        return self._score_all(caption, f"TFLite {kind} ({path.name}, {path.stat().st_size / 1e6:.1f} MB)", config)[0]

    def ui_inputs(self, releases=None):
        import gradio as gr

        settings = self._ui_settings(releases)
        return [
            gr.Image(label=self.input_label, type="filepath", image_mode=None),
            gr.Slider(min(settings["beam_sizes"]), max(settings["beam_sizes"]), value=settings["num_beams"], step=1,
                      label="Beam size (1 = greedy search)"),
            gr.Slider(1, settings["max_new_tokens"], value=settings["max_new_tokens"], step=1, label="Max length (word pieces)"),
        ]

    def ui_examples(self, cache_dir, releases=None):
        return self.file_examples(cache_dir, releases, ".png")

    def ui_outputs(self):
        import gradio as gr

        return [gr.Textbox(label=self.output_label, lines=2), gr.AnnotatedImage(label="Emoji found by DETR")]

    def load_release(self, models_dir):
        """The caption releases, and the ``detection`` release (if any) that draws the boxes beside the caption."""
        from apps.releases import ReleasedModel, latest_version_dir

        releases = super().load_release(models_dir)
        try:
            releases.detector = ReleasedModel(latest_version_dir(models_dir, "detection"))
        except FileNotFoundError:
            releases.detector = None
        return releases

    def stream_view(self, text, request, releases):
        """The caption so far, and the image with the detection release's boxes (computed once per request)."""
        if "annotated" not in request:
            from apps.detection.app import annotated_image

            detector = getattr(releases, "detector", None)
            image = request["input"]
            request["annotated"] = (
                annotated_image(image, detector({"image_bytes": np.array([image], dtype=object)}))
                if detector is not None else annotated_image(image, None)
            )
        return text, request["annotated"]

    def preprocess(self, image, beam_size=3, max_length=40):
        """The uploaded file (path or bytes) -> a request; ValueError with a message for the user on bad input."""
        from pathlib import Path

        beam_size, max_length = self.check_options(beam_size, max_length)
        if image is None or (isinstance(image, str) and not image):
            raise ValueError("No image: upload a PNG or JPEG file, or pick an example.")
        data = Path(image).read_bytes() if isinstance(image, (str, Path)) else bytes(image)
        return {"choice": self.name, "input": read_upload(data), "beam_size": beam_size, "max_length": max_length}
