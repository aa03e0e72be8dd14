"""Fashion-MNIST quality bars (slow: tens of minutes on a 2-core CPU; `make test-slow`).

Each test runs exactly what a user types, ``tfsuite train fashion_mnist ...``,
through ``apps.cli.main`` on the full 55,000 / 5,000 / 10,000 split, and
reads the ``test_accuracy:`` line it prints. The settings are the ones
measured to clear the bar with margin on this project's CPU machines (see the
figures in each test's comment).
"""

import re
import time

import pytest

from apps.cli import main

TEST_ACCURACY = re.compile(r"^test_accuracy: ([01]\.\d{4})$", re.MULTILINE)


def train_and_read_accuracy(capsys, tmp_path, *flags):
    start = time.perf_counter()
    status = main(["train", "fashion_mnist", *flags, "--verbose", "2", "--runs-dir", str(tmp_path)])
    elapsed = time.perf_counter() - start
    out, err = capsys.readouterr()
    with capsys.disabled():
        print(f"\n{' '.join(flags)}")
        print("\n".join(line for line in out.splitlines() if "accuracy" in line or "time" in line))
        print(f"wall time including data loading and evaluation: {elapsed:.0f} s")
    assert status == 0, err[-3000:]
    match = TEST_ACCURACY.search(out)
    assert match, out[-3000:]
    return float(match.group(1))


@pytest.mark.slow
def test_lenet5_reaches_089(capsys, tmp_path):
    # The released model's settings (saved_models/fashion_mnist/MANIFEST.json).
    accuracy = train_and_read_accuracy(
        capsys,
        tmp_path,
        *("--model", "lenet5", "--activation", "relu", "--pooling", "max"),
        *("--epochs", "10", "--learning-rate", "2e-3", "--batch-size", "64"),
    )
    assert accuracy >= 0.89


@pytest.mark.slow
def test_best_cnn_vgg_small_reaches_092(capsys, tmp_path):
    # Our best CNN per CPU-second: vgg_small (section 2.3, stacked 3x3
    # Conv-BN-ReLU, 24/48/96 filters, 28 -> 14 -> 7) at full resolution.
    # Measured 2026-11-29 on this 2-core machine: 8 epochs, training time
    # 1011.7 s (97-147 s per epoch with the host's load), val 0.9318,
    # test_accuracy 0.9228. The narrow ResNet-18 (width 8, augmentation,
    # 8 epochs) reached only 0.9180 in 4009 s under load.
    accuracy = train_and_read_accuracy(
        capsys,
        tmp_path,
        *("--model", "vgg_small", "--width", "24"),
        *("--epochs", "8", "--learning-rate", "2e-3", "--batch-size", "128"),
    )
    assert accuracy >= 0.92
