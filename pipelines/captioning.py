"""Image-caption batches for an encoder-decoder captioner (textbook 9.1, chapter 10).

The image side goes through :func:`pipelines.images.decode_image` and
:func:`pipelines.images.resize_image` (``"stretch"``, float32 in ``[0, 1]``:
what ``pipelines.preprocessing.ImagePreprocessor`` does inside the exported
graph), the caption side through the target tokenizer with the same
``[START]`` / ``[END]`` rule as :func:`pipelines.text.make_seq2seq_dataset`,
so the model trains on exactly what it is served.

Stages: parallel ``map`` (decode, resize, tokenize) -> ``cache`` (uint8
pixels, a quarter of float32) -> seeded ``shuffle`` -> optional augmentation
(translation and brightness only: a flip would swap "left" and "right") ->
``padded_batch`` -> ``prefetch``.

Example::

    from pipelines import captioning, tfds_sources

    examples = tfds_sources.load_examples("captioning", split="train")
    ds = captioning.make_caption_dataset(examples, tokenizer, image_size=128, max_target_length=32)
    features, targets = next(iter(ds))
    # features: encoder_inputs float32 (64, 128, 128, 3), decoder_token_ids / decoder_padding_mask (64, T)
    # targets: int32 (64, T), the caption ids shifted left with [END]
"""

from __future__ import annotations

import tensorflow as tf

from pipelines.images import ImageAugmentation, augment_image, decode_image, resize_image
from pipelines.text import add_start_end, truncate

__all__ = ["make_caption_dataset"]

AUTOTUNE = tf.data.AUTOTUNE


def make_caption_dataset(
    examples,
    tokenizer,
    image_size,
    max_target_length,
    *,
    batch_size=64,
    shuffle=False,
    shuffle_buffer=10_000,
    seed=0,
    augmentation=None,
    cache=True,
    deterministic=False,
    drop_remainder=False,
    image_key="image",
    caption_key="caption",
):
    """Batches of ``(features, targets)`` for ``layers.transformer_models.Transformer(encoder_input="image")``.

    Args:
        examples: ``tf.data.Dataset`` of dicts with ``image_key`` (encoded bytes
            or uint8 pixels) and ``caption_key`` (scalar string), e.g.
            ``pipelines.tfds_sources.load_examples("captioning")``.
        tokenizer: the caption tokenizer (``tokenize``, ``start_id``, ``end_id``, ``pad_id``).
        image_size: int, side of the square the image is resized to.
        max_target_length: int >= 2, most decoder positions; longer captions are cut.
        batch_size: int, default 64.
        shuffle: bool, default False; seeded and reshuffled each epoch.
        shuffle_buffer: int, default 10000.
        seed: int, default 0 (shuffle and augmentation).
        augmentation: ``pipelines.images.ImageAugmentation`` with ``flip=False``, or None.
        cache: bool, default True: keep the decoded uint8 images and ids in memory.
        deterministic: bool, default False: keep order in parallel maps (tests).
        drop_remainder: bool, default False.
        image_key, caption_key: str, the example fields.

    Returns:
        ``tf.data.Dataset`` of ``(features, targets)``: ``encoder_inputs`` float32
        ``(batch, image_size, image_size, 3)``, ``decoder_token_ids`` int32 ``(batch, T)``
        (``[START] + y``), ``decoder_padding_mask`` bool ``(batch, T)``; ``targets``
        int32 ``(batch, T)`` (``y + [END]``).
    """
    caller = "make_caption_dataset"
    spec = examples.element_spec
    if not isinstance(spec, dict) or image_key not in spec or caption_key not in spec:
        raise ValueError(f"{caller} expected a dataset of dicts with {image_key!r} and {caption_key!r}, got {spec}")
    if int(image_size) != image_size or image_size < 8:
        raise ValueError(f"{caller}: image_size must be an int >= 8, got {image_size!r}")
    if int(max_target_length) != max_target_length or max_target_length < 2:
        raise ValueError(f"{caller}: max_target_length must be an int >= 2, got {max_target_length!r}")
    if batch_size < 1:
        raise ValueError(f"{caller}: batch_size must be a positive integer, got {batch_size}")
    if augmentation is not None:
        if not isinstance(augmentation, ImageAugmentation) or augmentation.flip:
            raise ValueError(f"{caller}: augmentation must be an ImageAugmentation with flip=False (captions name sides)")
        if augmentation.max_shift >= image_size:
            raise ValueError(f"{caller}: augmentation max_shift must be below image_size {image_size}")
    pad = tokenizer.pad_id
    size = int(image_size)

    def prepare(example):
        image = decode_image(example[image_key], 3)
        pixels = tf.image.convert_image_dtype(resize_image(image, (size, size)), tf.uint8, saturate=True)
        ids = truncate(tf.cast(tokenizer.tokenize(tf.reshape(example[caption_key], [1])), tf.int32), max_target_length - 1)
        return {
            "image": pixels,
            "decoder": add_start_end(ids, start_id=tokenizer.start_id)[0],
            "targets": add_start_end(ids, end_id=tokenizer.end_id)[0],
        }

    prepare = tf.autograph.experimental.do_not_convert(prepare)
    ds = examples.map(prepare, num_parallel_calls=AUTOTUNE, deterministic=deterministic)
    if cache:
        ds = ds.cache()
    if shuffle:
        ds = ds.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)

    def to_float(example):
        return {**example, "image": tf.image.convert_image_dtype(example["image"], tf.float32)}

    ds = ds.map(to_float, num_parallel_calls=AUTOTUNE, deterministic=deterministic)
    if augmentation is not None:
        seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)
        ds = tf.data.Dataset.zip(ds, seeds).map(
            lambda example, s: {**example, "image": augment_image(example["image"], s, augmentation)},
            num_parallel_calls=AUTOTUNE, deterministic=deterministic,
        )
    ds = ds.padded_batch(
        batch_size,
        padded_shapes={"image": [size, size, 3], "decoder": [None], "targets": [None]},
        padding_values={"image": 0.0, "decoder": tf.constant(pad, tf.int32), "targets": tf.constant(pad, tf.int32)},
        drop_remainder=drop_remainder,
    )

    def to_model(batch):
        features = {
            "encoder_inputs": batch["image"],
            "decoder_token_ids": batch["decoder"],
            "decoder_padding_mask": batch["decoder"] != pad,
        }
        return features, batch["targets"]

    ds = ds.map(to_model, num_parallel_calls=AUTOTUNE, deterministic=deterministic)
    options = tf.data.Options()
    options.deterministic = deterministic
    return ds.with_options(options).prefetch(AUTOTUNE)
