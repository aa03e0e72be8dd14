import gzip

import numpy as np
import pytest

from pipelines import fashion_mnist
from pipelines.fashion_mnist import FashionMNISTNotFoundError, load_split, make_dataset, read_idx


def test_split_sizes_and_labels():
    sizes = {}
    for split in fashion_mnist.SPLITS:
        images, labels = load_split(split)
        assert images.dtype == np.uint8 and images.shape[1:] == (28, 28)
        assert labels.shape == (len(images),)
        assert set(np.unique(labels)) == set(range(10))
        sizes[split] = len(images)
    assert sizes == {"train": 55000, "validation": 5000, "test": 10000}
    # Validation is the deterministic tail of the 60,000 training images.
    full = read_idx(fashion_mnist.data_dir() / "train-images-idx3-ubyte.gz", 3)
    assert len(full) == 60000
    np.testing.assert_array_equal(load_split("validation")[0], full[-5000:])
    np.testing.assert_array_equal(load_split("train", validation_size=1000)[0], full[:-1000])
    # Every test class has exactly 1,000 images (the published balance).
    np.testing.assert_array_equal(np.bincount(load_split("test")[1]), [1000] * 10)


def test_dataset_scales_to_unit_range_with_channel_axis():
    images, labels = load_split("test")
    ds = make_dataset("test", batch_size=32, limit=70, deterministic=True)
    batches = list(ds)
    assert [int(x.shape[0]) for x, _ in batches] == [32, 32, 6]
    x, y = batches[0]
    assert x.shape == (32, 28, 28, 1) and x.dtype.name == "float32"
    assert y.dtype.name == "int32"
    np.testing.assert_allclose(x.numpy()[..., 0], images[:32] / 255.0, atol=1e-7)
    np.testing.assert_array_equal(y.numpy(), labels[:32])
    assert 0.0 <= float(np.min(x)) and float(np.max(x)) <= 1.0


def test_shuffle_is_seeded_and_reshuffles_each_epoch():
    def epoch_labels(ds):
        return np.concatenate([y.numpy() for _, y in ds])

    ds = make_dataset("train", batch_size=50, limit=200, shuffle=True, seed=7, deterministic=True)
    first, second = epoch_labels(ds), epoch_labels(ds)
    again = epoch_labels(make_dataset("train", batch_size=50, limit=200, shuffle=True, seed=7, deterministic=True))
    unshuffled = load_split("train")[1][:200]
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, second)
    assert not np.array_equal(first, unshuffled)
    np.testing.assert_array_equal(np.sort(first), np.sort(unshuffled))


def test_augmentation_is_a_flip_and_small_translation_of_the_original():
    max_shift = 2
    images = load_split("test")[0][:16] / 255.0
    ds = make_dataset("test", batch_size=16, limit=16, augment=True, max_shift=max_shift, seed=3, deterministic=True)
    augmented = next(iter(ds))[0].numpy()[..., 0]
    changed = 0
    for original, result in zip(images, augmented):
        candidates = []
        for flipped in (original, original[:, ::-1]):
            padded = np.pad(flipped, max_shift)
            for dy in range(2 * max_shift + 1):
                for dx in range(2 * max_shift + 1):
                    candidates.append(padded[dy : dy + 28, dx : dx + 28])
        errors = [np.abs(c - result).max() for c in candidates]
        assert min(errors) < 1e-6, "augmented image is not a flipped/shifted copy of its source"
        changed += not np.allclose(result, original, atol=1e-6)
    assert changed >= 8, "augmentation left almost every image unchanged"
    # Same seed, same augmentation; another epoch draws new transforms.
    again = next(iter(make_dataset("test", batch_size=16, limit=16, augment=True, seed=3, deterministic=True)))[0]
    np.testing.assert_array_equal(augmented, again.numpy()[..., 0])
    epochs = [next(iter(ds))[0].numpy() for _ in range(2)]
    assert not np.array_equal(epochs[0], epochs[1])


def test_missing_files_name_the_debian_package(tmp_path, monkeypatch):
    with pytest.raises(FashionMNISTNotFoundError, match=r"apt-get install dataset-fashion-mnist.*make setup"):
        load_split("train", directory=tmp_path)
    monkeypatch.setenv(fashion_mnist.ENV_VAR, str(tmp_path))
    with pytest.raises(FashionMNISTNotFoundError, match=str(tmp_path)):
        make_dataset("test")


def test_env_var_overrides_the_directory(tmp_path, monkeypatch):
    images = np.arange(3 * 28 * 28, dtype=np.uint8).reshape(3, 28, 28)
    labels = np.array([4, 0, 9], np.uint8)
    for prefix in ("train", "t10k"):
        with gzip.open(tmp_path / f"{prefix}-images-idx3-ubyte.gz", "wb") as f:
            header = (0x803).to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in images.shape)
            f.write(header + images.tobytes())
        with gzip.open(tmp_path / f"{prefix}-labels-idx1-ubyte.gz", "wb") as f:
            f.write((0x801).to_bytes(4, "big") + (3).to_bytes(4, "big") + labels.tobytes())
    monkeypatch.setenv(fashion_mnist.ENV_VAR, str(tmp_path))
    test_images, test_labels = load_split("test")
    np.testing.assert_array_equal(test_images, images)
    np.testing.assert_array_equal(test_labels, labels)
    assert len(load_split("validation", validation_size=1)[0]) == 1


def test_bad_arguments_raise_clear_errors(tmp_path):
    with pytest.raises(ValueError, match=r"split must be one of \['train', 'validation', 'test'\]"):
        load_split("valid")
    with pytest.raises(ValueError, match="limit must be a positive integer"):
        make_dataset("test", limit=0)
    with pytest.raises(ValueError, match="batch_size must be a positive integer"):
        make_dataset("test", batch_size=0)
    bad = tmp_path / "bad.gz"
    with gzip.open(bad, "wb") as f:
        f.write((0x801).to_bytes(4, "big") + (5).to_bytes(4, "big") + b"\x00\x01")
    with pytest.raises(ValueError, match="truncated"):
        read_idx(bad, 1)
    with pytest.raises(ValueError, match="not a 3-D uint8 idx file"):
        read_idx(bad, 3)
    with pytest.raises(ValueError, match=r"validation_size must be in \(0, 60000\)"):
        load_split("train", validation_size=60000)
