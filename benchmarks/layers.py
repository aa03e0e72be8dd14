"""Training-step time of tfsuite layers against the Keras built-ins.

For each layer, two one-layer models with the same shapes are compiled the
same way (SGD, MSE, graph mode) and stepped with ``train_on_batch`` on the same
batch. Timing alternates between ours and Keras's in rounds so that machine
noise hits both; the figure is the median step time over rounds.

Prints one line per layer::

    ratio lstm: 0.87        # our step time / Keras step time (lower is better)

Usage: ``python benchmarks/layers.py [--rounds 7] [--steps 10] [--only lstm,gru]``
"""

import argparse
import os
import pathlib
import statistics
import sys
import time

# Run as a script, this file's folder comes first on sys.path and its name
# would shadow the ``layers`` package: import from the repository root instead.
_HERE = pathlib.Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if pathlib.Path(p or ".").resolve() != _HERE]
sys.path.insert(0, str(_HERE.parent))

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from layers.convolution import Conv2D  # noqa: E402
from layers.normalization import BatchNormalization  # noqa: E402
from layers.recurrent import GRU, LSTM  # noqa: E402

# name -> (ours, keras built-in, input shape without batch, batch size)
CASES = {
    "lstm": (
        lambda: LSTM(128, return_sequences=True),
        lambda: keras.layers.LSTM(128, return_sequences=True),
        (50, 64),
        64,
    ),
    "gru": (
        lambda: GRU(128, return_sequences=True),
        # reset_after=False is the textbook GRU (reset gate before the matmul).
        lambda: keras.layers.GRU(128, return_sequences=True, reset_after=False),
        (50, 64),
        64,
    ),
    "conv2d": (
        lambda: Conv2D(64, 3, padding="same"),
        lambda: keras.layers.Conv2D(64, 3, padding="same"),
        (32, 32, 32),
        32,
    ),
    "batch_norm": (
        lambda: BatchNormalization(),
        lambda: keras.layers.BatchNormalization(),
        (32, 32, 64),
        64,
    ),
}


def _compiled_model(make_layer, input_shape):
    model = keras.Sequential([keras.Input(input_shape), make_layer()])
    model.compile(optimizer=keras.optimizers.SGD(1e-3), loss="mse", jit_compile=False)
    return model


def _time_steps(model, x, y, steps):
    start = time.perf_counter()
    for _ in range(steps):
        model.train_on_batch(x, y)
    return (time.perf_counter() - start) / steps


def measure(name, rounds, steps):
    make_ours, make_keras, input_shape, batch = CASES[name]
    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch, *input_shape)).astype("float32")
    ours = _compiled_model(make_ours, input_shape)
    theirs = _compiled_model(make_keras, input_shape)
    y = np.zeros(ours.output_shape[1:], "float32")[None].repeat(batch, axis=0)
    assert ours.output_shape == theirs.output_shape, (ours.output_shape, theirs.output_shape)
    for model in (ours, theirs):  # trace and warm up
        _time_steps(model, x, y, 3)
    ours_t, keras_t = [], []
    for _ in range(rounds):
        ours_t.append(_time_steps(ours, x, y, steps))
        keras_t.append(_time_steps(theirs, x, y, steps))
    return statistics.median(ours_t), statistics.median(keras_t)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--only", default=",".join(CASES), help="comma-separated subset of " + ",".join(CASES))
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.only.split(",") if n.strip()]
    unknown = sorted(set(names) - set(CASES))
    if unknown:
        parser.error(f"unknown layer(s) {unknown}; choose from {sorted(CASES)}")
    keras.utils.set_random_seed(0)
    for name in names:
        ours, theirs = measure(name, args.rounds, args.steps)
        print(f"step_ms {name}: ours {ours * 1e3:.2f} keras {theirs * 1e3:.2f}")
        print(f"ratio {name}: {ours / theirs:.2f}", flush=True)


if __name__ == "__main__":
    main()
