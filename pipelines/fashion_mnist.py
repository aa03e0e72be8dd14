"""Fashion-MNIST input pipeline (textbook section 2.3, the CNN benchmark data).

Reads the original idx files shipped by the Debian package
``dataset-fashion-mnist`` (``/usr/share/datasets/fashion-mnist/``), holds out
the last ``validation_size`` training images as a deterministic validation
split, and builds ``tf.data`` pipelines: scale to ``[0, 1]`` float32 with a
channel axis, optional light augmentation, cache, seeded shuffle, batch and
prefetch.

Splits: ``train`` (first 55,000 of the 60,000 training images by default),
``validation`` (the last 5,000), ``test`` (the 10,000 test images).

Example::

    from pipelines import fashion_mnist

    train = fashion_mnist.make_dataset("train", batch_size=128, shuffle=True, augment=True)
    images, labels = next(iter(train))  # (128, 28, 28, 1) float32, (128,) int32
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np
import tensorflow as tf

__all__ = [
    "CLASS_NAMES",
    "DEFAULT_DATA_DIR",
    "ENV_VAR",
    "SPLITS",
    "FashionMNISTNotFoundError",
    "data_dir",
    "load_split",
    "make_dataset",
    "read_idx",
]

DEFAULT_DATA_DIR = "/usr/share/datasets/fashion-mnist"
ENV_VAR = "TFSUITE_FASHION_MNIST_DIR"
DEBIAN_PACKAGE = "dataset-fashion-mnist"
SPLITS = ("train", "validation", "test")
IMAGE_SHAPE = (28, 28, 1)
NUM_CLASSES = 10
NUM_TRAIN_IMAGES = 60000
CLASS_NAMES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
# idx magic numbers: 0x0000 + type code 0x08 (unsigned byte) + number of dims.
_IDX_MAGIC = {3: 0x00000803, 1: 0x00000801}


class FashionMNISTNotFoundError(FileNotFoundError):
    """The Fashion-MNIST idx files are not where we looked."""


def data_dir(directory=None):
    """Return the data directory: the argument, else ``$TFSUITE_FASHION_MNIST_DIR``, else the Debian path."""
    return Path(directory or os.environ.get(ENV_VAR) or DEFAULT_DATA_DIR)


def _require_file(directory, name):
    path = directory / name
    if not path.is_file():
        raise FashionMNISTNotFoundError(
            f"Fashion-MNIST file {path} not found. Install the Debian package "
            f"`{DEBIAN_PACKAGE}` (`sudo apt-get install {DEBIAN_PACKAGE}`; `make setup` "
            f"does it when run as root), or point ${ENV_VAR} / data_dir at a folder "
            f"holding {', '.join(_FILES['train'] + _FILES['test'])}."
        )
    return path


def read_idx(path, expected_ndim):
    """Read a gzipped idx file (the original MNIST format) into a uint8 array.

    The header is a big-endian int32 magic number (``0x0803`` for a 3-D image
    array, ``0x0801`` for 1-D labels) followed by one int32 per dimension.
    """
    with gzip.open(path, "rb") as f:
        data = f.read()
    magic = int.from_bytes(data[0:4], "big")
    if magic != _IDX_MAGIC[expected_ndim]:
        raise ValueError(
            f"{path} is not a {expected_ndim}-D uint8 idx file (magic {magic:#010x}, "
            f"expected {_IDX_MAGIC[expected_ndim]:#010x}); reinstall `{DEBIAN_PACKAGE}`"
        )
    header_end = 4 + 4 * expected_ndim
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(expected_ndim)]
    payload = np.frombuffer(data, dtype=np.uint8, offset=header_end)
    if payload.size != int(np.prod(dims)):
        raise ValueError(
            f"{path} is truncated: header says {dims}, found {payload.size} bytes of data; "
            f"reinstall `{DEBIAN_PACKAGE}`"
        )
    return payload.reshape(dims)


def load_split(split, directory=None, validation_size=5000):
    """Return ``(images, labels)`` as uint8 ``(N, 28, 28)`` and ``(N,)`` NumPy arrays.

    Args:
        split: str, one of ``"train"``, ``"validation"``, ``"test"``.
        directory: str or Path or None, folder of the idx files. Default: see :func:`data_dir`.
        validation_size: int, default ``5000``. The last ``validation_size``
            training images form ``validation``; the rest form ``train``.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {list(SPLITS)}, got {split!r}")
    directory = data_dir(directory)
    source = "test" if split == "test" else "train"
    image_file, label_file = (_require_file(directory, name) for name in _FILES[source])
    images = read_idx(image_file, 3)
    labels = read_idx(label_file, 1)
    if len(images) != len(labels):
        raise ValueError(f"{image_file} holds {len(images)} images but {label_file} {len(labels)} labels")
    if source == "train" and not 0 < validation_size < len(images):
        raise ValueError(
            f"validation_size must be in (0, {len(images)}) for {len(images)} training images, got {validation_size}"
        )
    if split == "train":
        return images[:-validation_size], labels[:-validation_size]
    if split == "validation":
        return images[-validation_size:], labels[-validation_size:]
    return images, labels


def _to_float(image, label):
    image = tf.cast(image, tf.float32) / 255.0
    return image[..., tf.newaxis], tf.cast(label, tf.int32)


def _augment_batch(images, labels, seed, max_shift):
    """Random left-right flip and a random translation of up to ``max_shift`` pixels.

    Vectorised over the batch (one gather per axis instead of a per-image
    crop), with stateless ops seeded from a seeded stream so the augmentation
    is reproducible even under a parallel ``map``.
    """
    batch = tf.shape(images)[0]
    flip_seed, shift_seed = seed[0:2], seed[2:4]
    flip = tf.random.stateless_uniform([batch], flip_seed) < 0.5
    images = tf.where(flip[:, None, None, None], tf.reverse(images, axis=[2]), images)
    if max_shift:
        height, width = IMAGE_SHAPE[0], IMAGE_SHAPE[1]
        shifts = tf.random.stateless_uniform(
            [batch, 2], shift_seed, minval=0, maxval=2 * max_shift + 1, dtype=tf.int32
        )
        # Zero-pad, then pick a (height, width) window starting at the random offset.
        padded = tf.pad(images, [[0, 0], [max_shift, max_shift], [max_shift, max_shift], [0, 0]])
        rows = shifts[:, 0:1] + tf.range(height)[tf.newaxis, :]
        cols = shifts[:, 1:2] + tf.range(width)[tf.newaxis, :]
        images = tf.gather(padded, rows, axis=1, batch_dims=1)
        images = tf.gather(images, cols, axis=2, batch_dims=1)
    return images, labels


def make_dataset(
    split,
    batch_size=128,
    shuffle=False,
    augment=False,
    max_shift=2,
    seed=0,
    limit=None,
    deterministic=False,
    cache=True,
    directory=None,
    validation_size=5000,
):
    """Build the ``tf.data`` pipeline for one split.

    Args:
        split: str, ``"train"``, ``"validation"`` or ``"test"``.
        batch_size: int, default ``128``.
        shuffle: bool, default ``False``. Reshuffled each epoch from ``seed``.
        augment: bool, default ``False``. Random flip and translation (training only).
        max_shift: int, default ``2``. Largest translation in pixels when augmenting.
        seed: int, default ``0``. Seeds the shuffle and the augmentation.
        limit: int or None, default ``None``. Keep only the first ``limit`` examples.
        deterministic: bool, default ``False``. Sets ``tf.data.Options.deterministic``
            so that parallel ``map`` keeps element order (use in tests).
        cache: bool, default ``True``. Cache the decoded examples in memory.
        directory: str or Path or None, folder of the idx files.
        validation_size: int, default ``5000``, see :func:`load_split`.

    Returns:
        A dataset of ``(images, labels)``: float32 ``(batch, 28, 28, 1)`` in
        ``[0, 1]`` and int32 ``(batch,)`` class ids in ``0..9``.
    """
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be a positive integer or None, got {limit}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size}")
    images, labels = load_split(split, directory, validation_size)
    if limit is not None:
        images, labels = images[:limit], labels[:limit]

    ds = tf.data.Dataset.from_tensor_slices((images, labels))
    if cache:
        ds = ds.cache()
    if shuffle:
        ds = ds.shuffle(len(images), seed=seed, reshuffle_each_iteration=True)
    # Scaling and augmentation run on whole batches: one op per batch instead
    # of one per image is what keeps the input pipeline ahead of a 2-core CPU.
    ds = ds.batch(batch_size).map(_to_float, num_parallel_calls=tf.data.AUTOTUNE)
    if augment:
        seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(4)
        ds = tf.data.Dataset.zip(ds, seeds).map(
            lambda batch, s: _augment_batch(*batch, s, max_shift), num_parallel_calls=tf.data.AUTOTUNE
        )
    ds = ds.prefetch(tf.data.AUTOTUNE)
    options = tf.data.Options()
    options.deterministic = deterministic
    return ds.with_options(options)
