"""The ``clip`` app: contrastive image-text pre-training on the caption corpus (textbook section 9.1).

A declaration over the shared trainer and exporter: the corpus (the
captioning corpus, ``tfsuite_captions`` or ``coco_captions``), the model
(``layers.clip.CLIP``: a residual-CNN image encoder, the section 2.3 stages
of ``layers.detr.DETRBackbone`` with global average pooling, and our causal
Transformer text encoder, both projected to one space; symmetric InfoNCE
with a learned temperature), and the figures ``tfsuite evaluate clip``
prints on the test split:

* ``image_to_text_recall_at_1`` / ``_at_5``: the share of images whose own
  caption is among the 1 / 5 captions (of the whole split) nearest to it;
  ``text_to_image_recall_at_1`` / ``_at_5`` the other way round; beside them
  the chance level, ``k / split size``;
* ``zero_shot_accuracy``: in the single-emoji scenes of ``tfsuite_captions``,
  how often the prompt ``"a photo of a {name}"`` with the right emoji name
  scores highest among the prompts of every emoji name in the corpus.

``nearest_captions`` is the captioning app's retrieval baseline: the
training caption nearest to an image by this model.

Example::

    tfsuite train clip
    tfsuite evaluate clip --checkpoint runs/clip/tfsuite_captions/model.keras
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from apps.app import App, Datasets
from apps.config import TrainConfig, option
from layers.clip import CLIP, CLIPImageEncoder, CLIPLoss, CLIPTextEncoder
from layers.detr import DETRBackbone
from layers.pooling import GlobalAveragePooling2D
from pipelines import tfds_sources
from pipelines.images import decode_image, decode_resize_batch, resize_image
from pipelines.preprocessing import check_string_batch
from pipelines.text import add_start_end, truncate
from pipelines.wordpiece import WordpieceTokenizer, learn_wordpiece_vocab

__all__ = ["ClipApp", "ClipConfig", "nearest_captions"]

TOKENIZER_FOLDER = "tokenizer"


@dataclass
class ClipConfig(TrainConfig):
    """Hyperparameters of the CLIP app."""

    dataset: str = option("", "TFDS dataset name (default: tfsuite_captions)")
    image_size: int = option(96, "side of the square every image is resized to")
    image_backbone: str = option("32,64,128,256", "channels of the CNN stages of the image encoder")
    vocab_size: int = option(4000, "WordPiece vocabulary of the captions")
    text_length: int = option(40, "caption tokens incl. [START]/[END]; longer captions are cut")
    embed_dim: int = option(128, "the joint embedding width E")
    hidden_dim: int = option(128, "text encoder width")
    num_layers: int = option(2, "text encoder layers")
    num_heads: int = option(4, "text encoder attention heads")
    temperature: float = option(0.07, "initial softmax temperature (learned)")
    prompt: str = option("a photo of a {name}", "zero-shot prompt; {name} is the emoji name")
    epochs: int = option(8, "number of training epochs")
    batch_size: int = option(128, "image-caption pairs per batch (the in-batch negatives)")
    learning_rate: float = option(1e-3, "peak learning rate of AdamW")
    warmup_steps: int = option(200, "linear warmup steps, then cosine decay")
    patience: int = option(0, "early stopping patience in epochs (0 disables)")
    validation_pairs: int = option(1000, "validation pairs scored for val_loss each epoch")
    eval_batch_size: int = option(256, "images or captions embedded per call at evaluation")
    verbose: int = option(2, "Keras fit verbosity: 1 progress bar, 2 one line per epoch, 0 silent")


class ClipApp(App):
    """CLIP on the caption corpus: recall@k both ways and zero-shot emoji naming."""

    name = "clip"
    title = "CLIP"
    description = "contrastive image-text pre-training (CLIP) on the captions; retrieval recall@k, zero-shot naming"
    Config = ClipConfig

    def __init__(self):
        self._tokenizers = {}

    def dataset_name(self, config):
        return config.dataset or "tfsuite_captions"

    def default_run_name(self, config):
        return self.dataset_name(config).replace("/", "_")

    def examples(self, config, split):
        ds = tfds_sources.load_examples("captioning", self.dataset_name(config), split=split)
        return ds.take(config.limit) if config.limit is not None else ds

    def captions(self, config, split):
        ds = self.examples(config, split).map(lambda example: example["caption"])
        return [c.decode("utf-8") for batch in ds.batch(4096).as_numpy_iterator() for c in batch]

    def tokenizer(self, config):
        """The run's caption tokenizer, learned from the training captions on first use and saved beside the model."""
        from apps.trainer import run_dir

        directory = run_dir(self, config) / TOKENIZER_FOLDER
        if directory not in self._tokenizers:
            if not directory.is_dir():
                vocab = learn_wordpiece_vocab(self.captions(config, "train"), vocab_size=config.vocab_size)
                WordpieceTokenizer([t for t in vocab if t and t == t.strip()]).save(directory)
            self._tokenizers[directory] = WordpieceTokenizer.load(directory)
        return self._tokenizers[directory]

    # --- data ---------------------------------------------------------------------------------------

    def text_inputs(self, tokenizer, texts, length):
        """Captions ``(batch,)`` -> ``{"token_ids", "padding_mask"}`` ``(batch, length)``: ``[START] x [END]``, cut."""
        ids = truncate(tf.cast(tokenizer.tokenize(texts), tf.int32), length - 2)
        ids = add_start_end(ids, tokenizer.start_id, tokenizer.end_id).to_tensor(tokenizer.pad_id, shape=[None, length])
        return {"token_ids": ids, "padding_mask": ids != tokenizer.pad_id}

    def _dataset(self, config, split, training=False):
        examples = self.examples(config, split)
        if split == "validation" and config.validation_pairs:
            examples = examples.take(config.validation_pairs)
        tokenizer, size = self.tokenizer(config), config.image_size

        def prepare(example):
            pixels = resize_image(decode_image(example["image"], 3), (size, size))
            return tf.image.convert_image_dtype(pixels, tf.uint8, saturate=True), example["caption"]

        def to_model(pixels, captions):
            inputs = {"images": tf.image.convert_image_dtype(pixels, tf.float32),
                      **self.text_inputs(tokenizer, captions, config.text_length)}
            return inputs, {"logits_per_image": tf.zeros(tf.shape(captions)[:1])}

        ds = examples.map(prepare, num_parallel_calls=tf.data.AUTOTUNE).cache()
        if training:
            ds = ds.shuffle(30_000, seed=config.seed, reshuffle_each_iteration=True)
        # Whole batches in training: each pair's negatives are the other B - 1 pairs of its batch.
        ds = ds.batch(config.batch_size, drop_remainder=training).map(to_model, num_parallel_calls=tf.data.AUTOTUNE)
        return ds.prefetch(tf.data.AUTOTUNE)

    def build_datasets(self, config):
        return Datasets(self._dataset(config, "train", True), self._dataset(config, "validation"),
                        self._dataset(config, "test"))

    def steps_per_epoch(self, config, train=None):
        if config.steps_per_epoch is not None:
            return config.steps_per_epoch
        return max(1, len(self.captions(config, "train")) // config.batch_size)

    # --- model --------------------------------------------------------------------------------------

    def build_model(self, config):
        size = config.image_size
        images = keras.Input((size, size, 3), name="images")
        stages = [int(c) for c in config.image_backbone.split(",")]
        pooled = GlobalAveragePooling2D()(DETRBackbone(stages, blocks_per_stage=1, name="cnn")(images))
        backbone = keras.Model(images, pooled, name="image_backbone")
        text = CLIPTextEncoder(self.tokenizer(config).vocab_size, config.text_length, config.num_layers,
                               config.num_heads, config.hidden_dim, 4 * config.hidden_dim, config.embed_dim,
                               name="text_encoder")
        model = CLIP(CLIPImageEncoder(backbone, config.embed_dim, name="image_encoder"), text,
                     temperature=config.temperature, name="clip")
        model.build()
        return model

    def compile_kwargs(self, config):
        total = config.epochs * self.steps_per_epoch(config)
        schedule = keras.optimizers.schedules.CosineDecay(
            0.0, max(1, total - config.warmup_steps), warmup_target=config.learning_rate,
            warmup_steps=config.warmup_steps,
        )
        return {"optimizer": keras.optimizers.AdamW(schedule, weight_decay=0.05, clipnorm=1.0),
                "loss": {"logits_per_image": CLIPLoss()}}

    # --- evaluation ---------------------------------------------------------------------------------

    def embed_images(self, model, pixels, batch_size):
        return np.concatenate([keras.ops.convert_to_numpy(model.encode_image(pixels[i:i + batch_size]))
                               for i in range(0, len(pixels), batch_size)])

    def embed_texts(self, model, tokenizer, texts, config):
        out = []
        for i in range(0, len(texts), config.eval_batch_size):
            inputs = self.text_inputs(tokenizer, tf.constant(texts[i:i + config.eval_batch_size]), config.text_length)
            out.append(keras.ops.convert_to_numpy(model.encode_text(inputs["token_ids"], inputs["padding_mask"])))
        return np.concatenate(out)

    def evaluate(self, model, config):
        """Recall@1/5 both ways on the test split, chance levels, and zero-shot naming of single emoji."""
        pixels, captions = [], []
        for batch, _ in self._dataset(config, "test"):
            pixels.append(batch["images"].numpy())
        captions = self.captions(config, "test")
        images = self.embed_images(model, np.concatenate(pixels), config.eval_batch_size)
        similarity = images @ self.embed_texts(model, self.tokenizer(config), captions, config).T
        results = {}
        for direction, scores in (("image_to_text", similarity), ("text_to_image", similarity.T)):
            rank = (scores > np.diag(scores)[:, None]).sum(axis=1)  # captions scored above the right one
            for k in (1, 5):
                results[f"{direction}_recall_at_{k}"] = float(np.mean(rank < k))
        for k in (1, 5):
            results[f"chance_recall_at_{k}"] = k / len(captions)
        results.update(self.zero_shot(model, config, images))
        return results

    def object_names(self, config, split):
        """The emoji names of every scene of ``split`` (``tfsuite_captions``' ``objects/name``), in file order."""
        builder = tfds_sources._builder(tfds_sources.get_source("captioning", "tfsuite_captions"), None)  # noqa: SLF001
        scenes = builder.as_dataset(split=split).take(config.limit or -1).map(lambda e: e["objects"]["name"])
        return [[n.decode("utf-8") for n in names] for names in scenes.as_numpy_iterator()]

    def zero_shot(self, model, config, image_embeddings):
        """``zero_shot_accuracy`` over the test split's single-emoji scenes (``tfsuite_captions`` only)."""
        if self.dataset_name(config) != "tfsuite_captions":
            return {}
        test = self.object_names(config, "test")
        single = [i for i, names in enumerate(test) if len(names) == 1]
        vocabulary = sorted({n for split in ("train", "test") for names in self.object_names(config, split) for n in names})
        prompts = [config.prompt.format(name=name) for name in vocabulary]
        scores = image_embeddings[single] @ self.embed_texts(model, self.tokenizer(config), prompts, config).T
        right = [vocabulary.index(test[i][0]) for i in single]
        return {"zero_shot_accuracy": float(np.mean(np.argmax(scores, axis=1) == right)),
                "zero_shot_images": len(single), "zero_shot_names": len(vocabulary),
                "zero_shot_chance": 1.0 / len(vocabulary)}

    # --- serving: image bytes and candidate texts -> similarities -------------------------------------

    def serving_signature(self, config):
        return {"image_bytes": tf.TensorSpec((None,), tf.string), "texts": tf.TensorSpec((None,), tf.string)}

    def serving_outputs(self, model, inputs, config):
        size = config.image_size
        images = decode_resize_batch(check_string_batch(inputs["image_bytes"], "image_bytes"), size)
        texts = self.text_inputs(self.tokenizer(config), check_string_batch(inputs["texts"], "texts"), config.text_length)
        logits = model({"images": images, **texts})["logits_per_image"]
        return {"logits_per_image": logits, "probabilities": tf.nn.softmax(logits, axis=-1)}

    def serving_example(self, config):
        from apps.captioning import CaptioningApp, CaptioningConfig

        images, captions = CaptioningApp().load_texts(CaptioningConfig(dataset=config.dataset, limit=4), "test")
        return {"image_bytes": np.array(images, dtype=object), "texts": np.array(captions, dtype=object)}

    def release_model(self, model, config, folder):
        self.tokenizer(config).save(Path(folder))  # its files (vocabulary, settings) go to the release assets/
        return model, config

    # --- demo: an image and candidate names -> their probabilities ----------------------------------------

    def ui_inputs(self):
        import gradio as gr

        return [gr.Image(label="Image", type="filepath"),
                gr.Textbox(label="Candidate captions, one per line", lines=4, value="a cat face\na dog face\na house")]

    def ui_outputs(self):
        import gradio as gr

        return [gr.Label(label="Which caption fits", num_top_classes=5)]

    def preprocess(self, image, candidates):
        from pipelines.images import read_upload

        if image is None:
            raise ValueError("No image: upload a PNG or JPEG file.")
        texts = [line.strip() for line in str(candidates or "").splitlines() if line.strip()]
        if not texts:
            raise ValueError("Type at least one candidate caption, one per line.")
        return {"image_bytes": np.array([read_upload(Path(image).read_bytes())], dtype=object),
                "texts": np.array(texts, dtype=object)}

    echo_inputs = ("texts",)  # the tab labels the probabilities with the candidates it sent

    def postprocess(self, outputs):
        texts = [t.decode("utf-8") if isinstance(t, bytes) else str(t) for t in outputs["texts"]]
        return dict(zip(texts, np.asarray(outputs["probabilities"])[0].tolist()))


def nearest_captions(model_path, images, captions, config):
    """For each encoded image, the caption of ``captions`` the CLIP model at ``model_path`` scores highest."""
    from apps.trainer import load_checkpoint

    model = load_checkpoint(model_path)
    tokenizer = WordpieceTokenizer.load(Path(model_path).parent / TOKENIZER_FOLDER)
    size = model.image_encoder.image_shape[0]
    length = model.text_encoder.sequence_length
    app, clip_config = ClipApp(), ClipConfig(text_length=length, eval_batch_size=256)
    pixels = decode_resize_batch(tf.constant(list(images), tf.string), size).numpy()
    scores = app.embed_images(model, pixels, 256) @ app.embed_texts(model, tokenizer, list(captions), clip_config).T
    return [captions[i] for i in np.argmax(scores, axis=1)]
