import io

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from pipelines import images
from pipelines.images import ImageAugmentation, ImagePreprocessing

RNG = np.random.default_rng(0)
PIXELS = (RNG.random((20, 30, 3)) * 255).astype(np.uint8)


def encode(array, fmt="PNG", mode=None):
    buffer = io.BytesIO()
    Image.fromarray(array, mode=mode).save(buffer, format=fmt)
    return buffer.getvalue()


def pil_decode(data):
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def pil_resize(array01, size):
    """PIL's antialiased bilinear resize on float channels: the reference for ``tf.image.resize(antialias=True)``."""
    channels = [
        np.asarray(Image.fromarray(array01[..., c].astype(np.float32), mode="F").resize((size[1], size[0]), Image.BILINEAR))
        for c in range(array01.shape[-1])
    ]
    return np.stack(channels, axis=-1)


# --------------------------------------------------------------------------- decode / resize / normalise


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "GIF", "BMP", "WEBP"])
def test_decode_image_matches_pillow(fmt):
    data = encode(PIXELS, fmt)
    decoded = images.decode_image(tf.constant(data)).numpy()
    assert decoded.shape == (20, 30, 3) and decoded.dtype == np.uint8
    difference = np.abs(decoded.astype(int) - pil_decode(data).astype(int))
    if fmt in ("PNG", "BMP", "GIF"):
        assert difference.max() == 0
    else:  # lossy formats: TF's and Pillow's decoders (IDCT, chroma upsampling) differ by a few levels here and there
        assert difference.max() <= 6 and difference.mean() < 1.5


def test_decode_image_converts_grey_and_rgba_and_passes_uint8_through():
    grey = PIXELS[..., 0]
    np.testing.assert_array_equal(images.decode_image(encode(grey, "PNG")).numpy(), np.repeat(grey[..., None], 3, axis=-1))
    rgba = np.concatenate([PIXELS, np.full((20, 30, 1), 128, np.uint8)], axis=-1)
    np.testing.assert_array_equal(images.decode_image(encode(rgba, "PNG")).numpy(), PIXELS)
    np.testing.assert_array_equal(images.decode_image(tf.constant(PIXELS)).numpy(), PIXELS)
    np.testing.assert_array_equal(images.decode_image(tf.constant(grey[..., None])).numpy(), np.repeat(grey[..., None], 3, -1))
    np.testing.assert_array_equal(images.decode_image(tf.constant(rgba)).numpy(), PIXELS)
    with pytest.raises(ValueError, match="encoded bytes \\(string\\) or uint8 pixels, got dtype float32"):
        images.decode_image(tf.zeros((4, 4, 3)))
    with pytest.raises(ValueError, match=r"rank 3 \(height, width, channels\), got shape \(4, 4\)"):
        images.decode_image(tf.zeros((4, 4), tf.uint8))
    with pytest.raises(ValueError, match="cannot convert 2 channels to 3"):
        images.decode_image(tf.zeros((4, 4, 2), tf.uint8))


@pytest.mark.parametrize("size", [(10, 15), (8, 20), (40, 45)])
def test_stretch_resize_matches_pillow_bilinear(size):
    ours = images.resize_image(PIXELS, size).numpy()
    assert ours.shape == size + (3,) and ours.dtype == np.float32
    np.testing.assert_allclose(ours, np.clip(pil_resize(PIXELS / 255.0, size), 0, 1), atol=1e-5)


def test_pad_and_crop_resize_keep_the_aspect_ratio():
    # 20x30 into 30x30: scaled to 20x30 (unchanged), centred with 5 rows of zeros above and below.
    padded = images.resize_image(PIXELS, (30, 30), mode="pad").numpy()
    np.testing.assert_array_equal(padded[:5], 0.0)
    np.testing.assert_array_equal(padded[25:], 0.0)
    np.testing.assert_allclose(padded[5:25], PIXELS / 255.0, atol=1e-6)
    # 20x30 to 10x10: the central 20x20 crop, halved.
    cropped = images.resize_image(PIXELS, (10, 10), mode="crop").numpy()
    np.testing.assert_allclose(cropped, pil_resize(PIXELS[:, 5:25] / 255.0, (10, 10)), atol=1e-5)
    with pytest.raises(ValueError, match=r"resize mode must be one of \['stretch', 'pad', 'crop'\], got 'fit'"):
        images.resize_image(PIXELS, (10, 10), mode="fit")


def test_normalize_is_per_channel_mean_and_std():
    x = PIXELS / 255.0
    out = images.normalize_image(x, images.IMAGENET_MEAN, images.IMAGENET_STD).numpy()
    np.testing.assert_allclose(out, (x - np.array(images.IMAGENET_MEAN)) / np.array(images.IMAGENET_STD), atol=1e-6)
    np.testing.assert_allclose(images.normalize_image(x).numpy(), x, atol=1e-7)


def test_preprocessing_config_is_checked():
    with pytest.raises(ValueError, match="size must be \\(height, width\\) positive ints"):
        ImagePreprocessing(size=(0, 10))
    with pytest.raises(ValueError, match="resize must be one of"):
        ImagePreprocessing(resize="zoom")
    with pytest.raises(ValueError, match="mean and std must be given together"):
        ImagePreprocessing(mean=images.IMAGENET_MEAN)
    with pytest.raises(ValueError, match="channels must be 1 or 3"):
        ImagePreprocessing(channels=4)


# --------------------------------------------------------------------------- augmentation


def explain_augmentation(original, augmented, max_shift, max_brightness):
    """All (flip, dy, dx, delta) for which augmented == brightness(shift(flip(original)))."""
    h, w, _ = original.shape
    matches = []
    for flip in (False, True):
        source = original[:, ::-1] if flip else original
        padded = np.pad(source, [(max_shift, max_shift), (max_shift, max_shift), (0, 0)], mode="reflect")
        for top in range(2 * max_shift + 1):
            for left in range(2 * max_shift + 1):
                window = padded[top : top + h, left : left + w]
                delta = float(np.mean(augmented - window))
                if abs(delta) <= max_brightness + 1e-6 and np.allclose(augmented, window + delta, atol=1e-5):
                    matches.append((flip, top - max_shift, left - max_shift, delta))
    return matches


def test_augmentation_is_a_flip_shift_and_brightness_of_the_original():
    # Values in [0.2, 0.8] so a brightness shift of at most 0.1 never clips.
    original = (0.2 + 0.6 * RNG.random((12, 14, 3))).astype(np.float32)
    augmentation = ImageAugmentation(flip=True, max_shift=2, max_brightness=0.1)
    augment = tf.function(lambda seed: images.augment_image(original, seed, augmentation))
    flips, shifts, deltas = set(), set(), []
    for i in range(24):
        out = augment(tf.constant([i, 1])).numpy()
        matches = explain_augmentation(original, out, 2, 0.1)
        assert len(matches) == 1, f"seed {i}: {len(matches)} explanations"
        flip, dy, dx, delta = matches[0]
        flips.add(flip)
        shifts.add((dy, dx))
        deltas.append(delta)
    assert flips == {False, True} and len(shifts) > 8 and np.ptp(deltas) > 0.05
    np.testing.assert_array_equal(augment(tf.constant([3, 1])).numpy(), augment(tf.constant([3, 1])).numpy())


def test_brightness_clips_to_the_unit_range():
    bright = np.full((8, 8, 3), 0.99, np.float32)
    for i in range(8):
        out = images.augment_image(bright, tf.constant([i, 0]), ImageAugmentation(flip=False, max_shift=0, max_brightness=0.5)).numpy()
        assert out.min() >= 0.0 and out.max() <= 1.0


# --------------------------------------------------------------------------- pipeline


def examples(count=5):
    rng = np.random.default_rng(1)
    items = {"image": [], "caption": []}
    for i in range(count):
        h, w = 16 + 4 * i, 24 - 2 * i
        items["image"].append(encode((rng.random((h, w, 3)) * 255).astype(np.uint8)))
        items["caption"].append(f"image {i}")
    return tf.data.Dataset.from_tensor_slices(items), items


def test_make_image_dataset_decodes_resizes_normalizes_and_batches():
    ds, items = examples()
    config = ImagePreprocessing(size=(16, 16), mean=images.IMAGENET_MEAN, std=images.IMAGENET_STD)
    batches = list(images.make_image_dataset(ds, config, batch_size=2, deterministic=True))
    assert [int(b["image"].shape[0]) for b in batches] == [2, 2, 1]
    assert batches[0]["image"].shape == (2, 16, 16, 3) and batches[0]["image"].dtype == tf.float32
    assert [c for b in batches for c in b["caption"].numpy()] == [c.encode() for c in items["caption"]]
    for i, data in enumerate(items["image"]):
        expected = (pil_resize(pil_decode(data) / 255.0, (16, 16)) - np.array(images.IMAGENET_MEAN)) / np.array(images.IMAGENET_STD)
        np.testing.assert_allclose(batches[i // 2]["image"][i % 2], expected, atol=1e-4)
        np.testing.assert_allclose(batches[i // 2]["image"][i % 2], images.preprocess_image(data, config), atol=1e-5)


def test_shuffle_and_augmentation_are_seeded_and_redrawn_each_epoch():
    def make(seed):
        ds, _ = examples()
        return images.make_image_dataset(
            ds, ImagePreprocessing(size=(12, 12)), augmentation=ImageAugmentation(max_shift=2), batch_size=5,
            shuffle=True, seed=seed, cache=True, deterministic=True,
        )  # fmt: skip

    ds = make(7)
    first, second, again = next(iter(ds)), next(iter(ds)), next(iter(make(7)))
    np.testing.assert_array_equal(first["image"], again["image"])
    assert list(first["caption"].numpy()) == list(again["caption"].numpy())
    assert sorted(first["caption"].numpy()) == sorted(second["caption"].numpy())
    by_caption = lambda batch: dict(zip(batch["caption"].numpy(), batch["image"].numpy()))  # noqa: E731
    a, b = by_caption(first), by_caption(second)
    assert any(not np.array_equal(a[k], b[k]) for k in a), "augmentation was not redrawn in the second epoch"
    # Without augmentation the pipeline is the deterministic preprocessing.
    ds, items = examples()
    plain = next(iter(images.make_image_dataset(ds, ImagePreprocessing(size=(12, 12)), batch_size=5, deterministic=True)))
    np.testing.assert_allclose(plain["image"][0], pil_resize(pil_decode(items["image"][0]) / 255.0, (12, 12)), atol=1e-5)


def test_make_image_dataset_rejects_bad_arguments():
    ds, _ = examples()
    with pytest.raises(ValueError, match=r"max_shift \(12\) must be smaller than the image size \(12, 12\)"):
        images.make_image_dataset(ds, ImagePreprocessing(size=(12, 12)), augmentation=ImageAugmentation(max_shift=12))
    with pytest.raises(ValueError, match="dataset of dicts with key 'pixels'"):
        images.make_image_dataset(ds, image_key="pixels")
    with pytest.raises(ValueError, match=r"keep keys \['label'\] are not in the dataset"):
        images.make_image_dataset(ds, keep=("label",))
    with pytest.raises(ValueError, match="batch_size must be a positive integer"):
        images.make_image_dataset(ds, batch_size=0)


def test_exported_graph_takes_image_bytes(tmp_path):
    config = ImagePreprocessing(size=(16, 16), resize="pad")

    class Frontend(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([], tf.string)])
        def pixels(self, data):
            return images.preprocess_image(data, config)

    tf.saved_model.save(Frontend(), str(tmp_path / "frontend"))
    loaded = tf.saved_model.load(str(tmp_path / "frontend"))
    data = encode(PIXELS, "JPEG")
    np.testing.assert_allclose(loaded.pixels(tf.constant(data)).numpy(), images.preprocess_image(data, config).numpy(), atol=1e-6)


# --------------------------------------------------------------------------- load_image


def test_load_image_reads_paths_bytes_and_arrays(tmp_path):
    path = tmp_path / "photo.png"
    path.write_bytes(encode(PIXELS))
    np.testing.assert_array_equal(images.load_image(path), PIXELS)
    np.testing.assert_array_equal(images.load_image(str(path)), PIXELS)
    np.testing.assert_array_equal(images.load_image(path.read_bytes()), PIXELS)
    np.testing.assert_array_equal(images.load_image(PIXELS[..., 0]), np.repeat(PIXELS[..., :1], 3, axis=-1))
    assert images.load_image(path, channels=1).shape == (20, 30, 1)


@pytest.mark.parametrize(
    "data, error, message",
    [
        (b"", ValueError, "image bytes is empty"),
        (b"just some text, no image", ValueError, r"image bytes is not a PNG, JPEG, GIF, BMP or WebP image \(first bytes b'just some te'\)"),
        (encode(PIXELS, "PNG")[:200], ValueError, "image bytes looks like PNG but could not be decoded .*Invalid PNG data"),
        (encode(PIXELS, "JPEG")[:150], ValueError, "image bytes looks like JPEG but could not be decoded"),
        (PIXELS.astype(np.float32), ValueError, "expected a uint8 pixel array, got dtype float32"),
        (np.zeros((2, 4, 4, 3), np.uint8), ValueError, r"shape \(height, width\) or \(height, width, 1\|3\|4\), got \(2, 4, 4, 3\)"),
        (np.zeros((4, 4, 2), np.uint8), ValueError, r"got \(4, 4, 2\)"),
        (42, TypeError, "load_image expected a path, bytes or a uint8 array, got int"),
    ],
    ids=["empty", "text", "truncated-png", "truncated-jpeg", "float-array", "rank-4", "two-channels", "int"],
)
def test_load_image_explains_bad_input(data, error, message):
    with pytest.raises(error, match=message):
        images.load_image(data)


def test_load_image_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="image file .*nothing.png not found"):
        images.load_image(tmp_path / "nothing.png")
    with pytest.raises(ValueError, match="channels must be 1 or 3"):
        images.load_image(PIXELS, channels=4)
