"""Image input pipeline: decode, resize, normalise, augment, batch.

The front end of the image apps (textbook 2.3 CNNs, 7.2 ViT, 9.1 captioning).
Every step is a TensorFlow op, so the same code runs in a ``tf.data``
pipeline and inside an exported ``serving_default`` graph that takes image
bytes.

* :func:`decode_image`: PNG, JPEG, GIF (first frame), BMP or WebP bytes, or a
  uint8 tensor, to uint8 ``(height, width, channels)`` (grey and RGBA become RGB).
* :func:`resize_image`: to ``size`` by stretching, letterboxing (``"pad"``)
  or a central crop to the target aspect ratio (``"crop"``); float32 in ``[0, 1]``.
* :func:`normalize_image`: ``(x - mean) / std`` per channel on ``[0, 1]``
  values, or the ``[0, 1]`` values unchanged.
* :func:`augment_image`: seeded random left-right flip, translation by up to
  ``max_shift`` pixels (padding by reflection, then a random crop) and a
  brightness shift; stateless, so a parallel ``map`` stays reproducible.
* :func:`make_image_dataset`: decode and resize in a parallel ``map`` ->
  cache -> seeded shuffle -> augment (training only) -> normalise -> batch ->
  ``prefetch(AUTOTUNE)``, with a ``deterministic`` switch for tests.
* :func:`read_upload`: an upload's bytes checked from the header before
  decoding (not an image, truncated, too small, above 40 megapixels: a
  message) and re-encoded as RGB PNG, the form the image releases take;
* :func:`load_image`: the user-facing loader (the UI uses it): a path, bytes
  or an array in, uint8 RGB out, or a ``ValueError`` saying what is wrong.

Example::

    from pipelines import images, tfds_sources

    examples = tfds_sources.load_examples("captioning", split="train")
    ds = images.make_image_dataset(
        examples, images.ImagePreprocessing(size=(128, 128)),
        augmentation=images.ImageAugmentation(flip=False), shuffle=True, batch_size=32,
    )
    batch = next(iter(ds))   # image float32 (32, 128, 128, 3), caption string (32,)
"""

from __future__ import annotations

import dataclasses
import io
import warnings
from pathlib import Path

import numpy as np
import tensorflow as tf

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "ImagePreprocessing",
    "ImageAugmentation",
    "decode_image",
    "resize_image",
    "normalize_image",
    "augment_image",
    "preprocess_image",
    "make_image_dataset",
    "load_image",
    "read_upload",
    "decode_resize_batch",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
RESIZE_MODES = ("stretch", "pad", "crop")
_MAGIC = (
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"\xff\xd8\xff", "JPEG"),
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
    (b"BM", "BMP"),
)
_SUPPORTED = "PNG, JPEG, GIF, BMP or WebP"


@dataclasses.dataclass(frozen=True)
class ImagePreprocessing:
    """Deterministic preprocessing, the same in training, evaluation and the exported graph.

    Args:
        size: tuple of 2 ints, default ``(224, 224)``: output ``(height, width)``.
        resize: str, default ``"stretch"``; ``"pad"`` keeps the aspect ratio
            and pads with zeros; ``"crop"`` keeps it by a central crop.
        mean: tuple of floats or None, default ``None``: per-channel mean on ``[0, 1]`` values.
        std: tuple of floats or None, default ``None``: per-channel std.
            With both None the output stays in ``[0, 1]``.
        channels: int, default ``3``.
    """

    size: tuple = (224, 224)
    resize: str = "stretch"
    mean: tuple | None = None
    std: tuple | None = None
    channels: int = 3

    def __post_init__(self):
        if len(self.size) != 2 or any(int(s) != s or s < 1 for s in self.size):
            raise ValueError(f"ImagePreprocessing size must be (height, width) positive ints, got {self.size!r}")
        if self.resize not in RESIZE_MODES:
            raise ValueError(f"ImagePreprocessing resize must be one of {list(RESIZE_MODES)}, got {self.resize!r}")
        if (self.mean is None) != (self.std is None):
            raise ValueError("ImagePreprocessing mean and std must be given together (or both None for [0, 1])")
        if self.channels not in (1, 3):
            raise ValueError(f"ImagePreprocessing channels must be 1 or 3, got {self.channels}")


@dataclasses.dataclass(frozen=True)
class ImageAugmentation:
    """Training-time augmentation; off at evaluation (``augmentation=None``).

    Args:
        flip: bool, default ``True``: random left-right flip. Turn it off when
            labels name sides (captions saying "to the left of").
        max_shift: int, default ``4``: random translation of up to this many
            pixels per axis (reflect-padded, then cropped back).
        max_brightness: float, default ``0.1``: add ``U(-d, d)`` to the ``[0, 1]``
            values, then clip to ``[0, 1]``.
    """

    flip: bool = True
    max_shift: int = 4
    max_brightness: float = 0.1


def decode_image(image, channels=3):
    """Decode image bytes (or pass through a uint8 tensor) to uint8 ``(height, width, channels)``.

    A graph op; bad bytes raise ``tf.errors.InvalidArgumentError`` there, so
    decode untrusted uploads with :func:`load_image` first.

    Args:
        image: scalar string tensor (PNG/JPEG/GIF/BMP/WebP bytes) or uint8
            ``(height, width, c)`` with ``c`` in 1, 3, 4.
        channels: int, default ``3``.
    """
    image = tf.convert_to_tensor(image)
    if image.dtype == tf.string:
        decoded = tf.io.decode_image(image, channels=channels, expand_animations=False)
        decoded.set_shape([None, None, channels])
        return decoded
    if image.dtype != tf.uint8:
        raise ValueError(f"decode_image expected encoded bytes (string) or uint8 pixels, got dtype {image.dtype.name}")
    if image.shape.rank != 3:
        raise ValueError(f"decode_image expected uint8 pixels of rank 3 (height, width, channels), got shape {tuple(image.shape)}")
    have = image.shape[-1]
    if have == channels:
        return image
    if have == 4:
        image = image[..., :3]
        have = 3
        if channels == 3:
            return image
    if have == 1 and channels == 3:
        return tf.image.grayscale_to_rgb(image)
    if have == 3 and channels == 1:
        return tf.cast(tf.round(tf.image.rgb_to_grayscale(tf.cast(image, tf.float32))), tf.uint8)
    raise ValueError(f"decode_image cannot convert {have} channels to {channels}")


def resize_image(image, size, mode="stretch"):
    """Resize uint8 or ``[0, 1]`` float pixels to ``size``; returns float32 in ``[0, 1]``.

    Bilinear with antialiasing (so downscaling does not alias). ``"stretch"``
    ignores the aspect ratio; ``"pad"`` fits the image inside ``size`` and
    pads with zeros (``tf.image.resize_with_pad``); ``"crop"`` takes the
    largest central crop with the target aspect ratio, then resizes.
    """
    if mode not in RESIZE_MODES:
        raise ValueError(f"resize mode must be one of {list(RESIZE_MODES)}, got {mode!r}")
    image = tf.convert_to_tensor(image)
    if image.dtype == tf.uint8:
        image = tf.cast(image, tf.float32) / 255.0
    height, width = size
    if mode == "crop":
        shape = tf.shape(image)
        h, w = tf.cast(shape[0], tf.float32), tf.cast(shape[1], tf.float32)
        scale = tf.minimum(h / height, w / width)
        crop_h = tf.cast(tf.round(scale * height), tf.int32)
        crop_w = tf.cast(tf.round(scale * width), tf.int32)
        image = tf.image.crop_to_bounding_box(image, (shape[0] - crop_h) // 2, (shape[1] - crop_w) // 2, crop_h, crop_w)
    if mode == "pad":
        image = tf.image.resize_with_pad(image, height, width, antialias=True)
    else:
        image = tf.image.resize(image, (height, width), antialias=True)
    return tf.clip_by_value(image, 0.0, 1.0)


def normalize_image(image, mean=None, std=None):
    """``(image - mean) / std`` per channel on ``[0, 1]`` float pixels; unchanged when both are None."""
    image = tf.convert_to_tensor(image, tf.float32)
    if mean is None and std is None:
        return image
    return (image - tf.constant(mean, tf.float32)) / tf.constant(std, tf.float32)


def augment_image(image, seed, augmentation=ImageAugmentation()):
    """Random flip, translation and brightness of one ``[0, 1]`` float image, from a ``(2,)`` seed.

    Translation pads ``max_shift`` pixels on every side by reflection and
    crops a window of the original size at a random offset, so the content
    moves by ``-max_shift..max_shift`` pixels on each axis. Brightness adds
    one ``U(-max_brightness, max_brightness)`` value to every pixel, then clips to ``[0, 1]``.
    """
    seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), 3)
    if augmentation.flip:
        image = tf.image.stateless_random_flip_left_right(image, seeds[0])
    if augmentation.max_shift:
        shift = augmentation.max_shift
        padded = tf.pad(image, [[shift, shift], [shift, shift], [0, 0]], mode="REFLECT")
        image = tf.image.stateless_random_crop(padded, tf.shape(image), seeds[1])
    if augmentation.max_brightness:
        image = tf.image.stateless_random_brightness(image, augmentation.max_brightness, seeds[2])
        image = tf.clip_by_value(image, 0.0, 1.0)
    return image


def preprocess_image(image, preprocessing=ImagePreprocessing()):
    """Decode, resize and normalise one image (bytes or uint8); the serving graph's image step."""
    pixels = resize_image(decode_image(image, preprocessing.channels), preprocessing.size, preprocessing.resize)
    return normalize_image(pixels, preprocessing.mean, preprocessing.std)


def make_image_dataset(
    examples,
    preprocessing=ImagePreprocessing(),
    *,
    augmentation=None,
    batch_size=32,
    shuffle=False,
    shuffle_buffer=1000,
    seed=0,
    cache=False,
    deterministic=False,
    drop_remainder=False,
    image_key="image",
    keep=None,
):
    """Build a batched image ``tf.data`` pipeline from a dataset of example dicts.

    Stages: parallel ``map`` (decode, resize to ``[0, 1]``) -> ``cache`` ->
    seeded ``shuffle`` (reshuffled each epoch) -> augmentation with a
    per-example seed from ``tf.data.Dataset.random`` (new draws each epoch,
    reproducible from ``seed``) -> normalise -> ``batch`` -> ``prefetch(AUTOTUNE)``.
    Caching happens before the random stages, so augmentation is redrawn
    every epoch.

    Args:
        examples: ``tf.data.Dataset`` of dicts holding ``image_key`` (encoded
            bytes or uint8 pixels), e.g. ``tfds_sources.load_examples("captioning")``.
        preprocessing: :class:`ImagePreprocessing`.
        augmentation: :class:`ImageAugmentation` or None, default ``None`` (evaluation).
        batch_size: int, default ``32``.
        shuffle: bool, default ``False``.
        shuffle_buffer: int, default ``1000``.
        seed: int, default ``0``: seeds the shuffle and the augmentation.
        cache: bool or str, default ``False``: ``True`` caches the resized
            images in memory, a string caches them to files with that prefix.
        deterministic: bool, default ``False``: keep element order under parallel ``map`` (tests).
        drop_remainder: bool, default ``False``.
        image_key: str, default ``"image"``.
        keep: tuple of str or None, default ``None``: the other keys to pass
            through (all of them when None; they must batch, i.e. have fixed shapes).

    Returns:
        Dataset of dicts: ``image_key`` float32 ``(batch, height, width, channels)`` and the kept keys.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size}")
    spec = examples.element_spec
    if not isinstance(spec, dict) or image_key not in spec:
        raise ValueError(f"make_image_dataset expected a dataset of dicts with key {image_key!r}, got element_spec {spec}")
    if augmentation is not None and augmentation.max_shift >= min(preprocessing.size):
        raise ValueError(
            f"ImageAugmentation max_shift ({augmentation.max_shift}) must be smaller than the image size {preprocessing.size}"
        )
    keep = tuple(k for k in spec if k != image_key) if keep is None else tuple(keep)
    missing = [k for k in keep if k not in spec]
    if missing:
        raise ValueError(f"keep keys {missing} are not in the dataset; it has {sorted(spec)}")

    def decode(example):
        image = decode_image(example[image_key], preprocessing.channels)
        out = {image_key: resize_image(image, preprocessing.size, preprocessing.resize)}
        out.update({k: example[k] for k in keep})
        return out

    ds = examples.map(decode, num_parallel_calls=tf.data.AUTOTUNE)
    if cache:
        ds = ds.cache(cache if isinstance(cache, str) else "")
    if shuffle:
        ds = ds.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    if augmentation is not None:
        seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)

        def augment(example, s):
            return {**example, image_key: augment_image(example[image_key], s, augmentation)}

        ds = tf.data.Dataset.zip(ds, seeds).map(augment, num_parallel_calls=tf.data.AUTOTUNE)
    if preprocessing.mean is not None:
        ds = ds.map(
            lambda ex: {**ex, image_key: normalize_image(ex[image_key], preprocessing.mean, preprocessing.std)},
            num_parallel_calls=tf.data.AUTOTUNE,
        )
    ds = ds.batch(batch_size, drop_remainder=drop_remainder).prefetch(tf.data.AUTOTUNE)
    options = tf.data.Options()
    options.deterministic = deterministic
    return ds.with_options(options)


def _sniff(data):
    for magic, name in _MAGIC:
        if data.startswith(magic):
            return name
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WebP"
    return None


def load_image(path_or_bytes, channels=3):
    """Read an image (path, bytes or array) as uint8 ``(height, width, channels)``.

    The user-facing entry point (the UI calls it on uploads): a bad input
    gives a ``ValueError`` that says what it is (empty, not an image, which
    format failed to decode, wrong array shape or dtype) instead of a
    TensorFlow stack trace. Animated GIFs give their first frame; grey and
    RGBA images become RGB.

    Args:
        path_or_bytes: str or Path of an image file, its bytes, or a uint8
            array ``(height, width)`` / ``(height, width, 1|3|4)``.
        channels: int, default ``3`` (or ``1``).

    Returns:
        ``np.ndarray`` uint8 ``(height, width, channels)``.
    """
    if channels not in (1, 3):
        raise ValueError(f"load_image channels must be 1 or 3, got {channels}")
    if isinstance(path_or_bytes, np.ndarray):
        array = path_or_bytes
        if array.dtype != np.uint8:
            raise ValueError(f"load_image expected a uint8 pixel array, got dtype {array.dtype}; scale to 0..255 and cast")
        if array.ndim == 2:
            array = array[..., None]
        if array.ndim != 3 or array.shape[-1] not in (1, 3, 4) or 0 in array.shape:
            raise ValueError(
                f"load_image expected an array of shape (height, width) or (height, width, 1|3|4), got {array.shape}"
            )
        return decode_image(tf.constant(array), channels).numpy()
    if isinstance(path_or_bytes, (bytes, bytearray, memoryview)):
        data, what = bytes(path_or_bytes), "image bytes"
    elif isinstance(path_or_bytes, (str, Path)):
        path = Path(path_or_bytes)
        if not path.is_file():
            raise FileNotFoundError(f"image file {path} not found (or not a file)")
        data, what = path.read_bytes(), f"image file {path}"
    else:
        raise TypeError(f"load_image expected a path, bytes or a uint8 array, got {type(path_or_bytes).__name__}")
    if not data:
        raise ValueError(f"{what} is empty")
    kind = _sniff(data)
    if kind is None:
        raise ValueError(f"{what} is not a {_SUPPORTED} image (first bytes {data[:12]!r})")
    try:
        return decode_image(tf.constant(data), channels).numpy()
    except tf.errors.InvalidArgumentError as error:
        reason = error.message.split("}}")[-1].replace("[Op:DecodeImage]", "").strip()
        raise ValueError(f"{what} looks like {kind} but could not be decoded (truncated or corrupt?): {reason}") from None


MAX_UPLOAD_PIXELS = 40_000_000  # a 10,000 x 10,000 upload is refused before it is decoded
MIN_UPLOAD_SIDE = 8


def read_upload(data):
    """An uploaded image (bytes) -> RGB PNG bytes; ValueError with a message for the user when unusable.

    Checks the header before decoding (a huge image is refused without being
    decoded), converts grey, palette and RGBA images to RGB.
    """
    from PIL import Image, UnidentifiedImageError

    if not data:
        raise ValueError("The image is empty: upload a PNG or JPEG file.")
    try:
        with warnings.catch_warnings():  # the pixel count is checked below, with a message for the user
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError):
        raise ValueError("This is not an image PIL can read: upload a PNG or JPEG file.") from None
    width, height = image.size
    if width * height > MAX_UPLOAD_PIXELS:
        raise ValueError(f"The image is {width} x {height} pixels; shrink it below {MAX_UPLOAD_PIXELS // 1_000_000} megapixels.")
    if min(width, height) < MIN_UPLOAD_SIDE:
        raise ValueError(f"The image is {width} x {height} pixels: too small to caption (at least {MIN_UPLOAD_SIDE} per side).")
    try:
        image.load()
    except (OSError, SyntaxError, ValueError) as error:
        raise ValueError(f"The image file is truncated or corrupt ({error}).") from None
    if image.mode in ("RGBA", "LA") or (image.mode == "P" and "transparency" in image.info):
        image = image.convert("RGBA")
        background = Image.new("RGBA", image.size, (255, 255, 255, 255))  # transparent areas read as white
        image = Image.alpha_composite(background, image)
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="PNG")
    return buffer.getvalue()


def decode_resize_batch(image_bytes, size):
    """Encoded images ``(batch,)`` -> float ``(batch, size, size, 3)`` in ``[0, 1]``: the serving graphs' front end
    (``tf.io.decode_image`` + :func:`resize_image` per row, so images of any size batch together)."""
    return tf.map_fn(
        lambda data: resize_image(tf.io.decode_image(data, 3, expand_animations=False), (size, size)),
        image_bytes, fn_output_signature=tf.TensorSpec((size, size, 3), tf.float32),
    )
