"""Early exit (textbook 11.2, BranchyNet / DeeBERT) against the full model: accuracy and inference time per threshold.

The model is ``layers.early_exit.early_exit_vit``: a ViT on 28x28 Fashion-MNIST
(4x4 patches, 49 + 1 tokens; 6 pre-LN layers, width 64, 4 heads, MLP 128)
with an exit (layer norm + linear head on the class token) after every layer,
trained jointly on the mean of the exits' cross-entropies (``EarlyExitLoss``)
for a few epochs, or loaded from ``--model-path`` when it exists
(``--retrain`` forces training). Then, on the 10,000 test images in batches
of ``--eval-batch-size``, in the same process:

- ``full``: the baseline, every example through all ``L`` layers and the last
  exit, the whole forward compiled as one ``tf.function`` (no intermediate head);
- ``no exit``: ``EarlyExitPredictor(model)(x, threshold=None)``, the same work
  as ``full`` but run as the early-exit loop runs it, one compiled step per
  layer: its ratio is the price of stepping layer by layer;
- one row per threshold, ``EarlyExitPredictor(model)(x, threshold)``: after
  each exit the examples that left are dropped from the batch, so later
  layers compute on fewer rows (real compute saved, not bookkeeping);
- ``eager T``: ``model.predict_early`` (not compiled) at the picked
  threshold ``T``, for reference (timed after the others, not interleaved).

Timing interleaves the contestants batch by batch (in an order rotated each
round) so that load from other processes hits all of them alike; a
contestant's figure is the median over ``--rounds`` rounds of its seconds per
batch (one round = one pass over the test images). Prints the run's settings, each exit's test accuracy, a
table (threshold, accuracy, mean layers used, ms per batch, time / full time),
then::

    ratio early_exit_vs_full: X.XX     # early-exit time / full time, lower is better
    threshold: T                       # the fastest threshold within 0.01 accuracy of the full model
    accuracy_full: A
    accuracy_early_exit: B
    mean_layers: M                     # encoder layers per example, out of L

How to read it: ``mean_layers / L`` is the ratio the encoder layers alone
would give if time were proportional to rows; the measured ratio is above it
by the exit heads, the per-layer gathers and device syncs (the ``no exit``
row shows that overhead when nobody exits). A
threshold is only worth its speed if its accuracy is close to the full
model's, hence the pick "fastest within one point".

Usage::

    python benchmarks/early_exit.py                     # train once (a few minutes on 2 cores), then time
    python benchmarks/early_exit.py --retrain --epochs 4
    python benchmarks/early_exit.py --thresholds 0.8,0.9,0.99 --rounds 5
"""

import argparse
import dataclasses
import json
import os
import pathlib
import statistics
import sys
import time

# Run as a script, this file's folder comes first on sys.path and
# benchmarks/layers.py would shadow the ``layers`` package: import from the repository root.
_HERE = pathlib.Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if pathlib.Path(p or ".").resolve() != _HERE]
sys.path.insert(0, str(_HERE.parent))

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from layers.early_exit import (  # noqa: E402
    EarlyExitClassifier, EarlyExitLoss, EarlyExitPredictor, check_threshold, early_exit_vit,
)
from pipelines import fashion_mnist  # noqa: E402

ACCURACY_TOLERANCE = 0.01


@dataclasses.dataclass
class EarlyExitBenchmarkConfig:
    """Hyperparameters of the benchmark's model, its training and its timing."""

    model_path: str = "runs/early_exit/fashion_mnist/model.keras"
    retrain: bool = False
    epochs: int = 3
    batch_size: int = 128
    learning_rate: float = 1e-3
    patch_size: int = 4
    num_layers: int = 6
    hidden_dim: int = 64
    num_heads: int = 4
    mlp_dim: int = 128
    seed: int = 1234
    train_limit: int = 0  # 0: all 55,000 training images
    test_limit: int = 0  # 0: all 10,000 test images
    thresholds: str = "0.5,0.6,0.7,0.8,0.9,0.95,0.99"
    eval_batch_size: int = 1000
    rounds: int = 3

    def threshold_list(self):
        return [check_threshold(t) for t in self.thresholds.split(",") if t.strip()]


def parse_config():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    for field in dataclasses.fields(EarlyExitBenchmarkConfig):
        flag = "--" + field.name.replace("_", "-")
        if field.type in (bool, "bool"):
            parser.add_argument(flag, action="store_true", help=f"default {field.default}")
        else:
            kind = {"int": int, "float": float, "str": str}.get(field.type, field.type)
            parser.add_argument(flag, type=kind, default=field.default, help=f"default {field.default}")
    config = EarlyExitBenchmarkConfig(**vars(parser.parse_args()))
    try:
        config.threshold_list()
    except ValueError as error:
        parser.error(str(error))
    return config


def test_arrays(limit):
    images, labels = fashion_mnist.load_split("test")
    if limit:
        images, labels = images[:limit], labels[:limit]
    return (images.astype("float32") / 255.0)[..., None], labels.astype("int64")


def train(config):
    keras.utils.set_random_seed(config.seed)
    model = early_exit_vit(patch_size=config.patch_size, num_layers=config.num_layers, num_heads=config.num_heads,
                           hidden_dim=config.hidden_dim, mlp_dim=config.mlp_dim)
    limit = config.train_limit or None
    train_data = fashion_mnist.make_dataset("train", config.batch_size, shuffle=True, seed=config.seed, limit=limit)
    validation = fashion_mnist.make_dataset("validation", 1000)
    steps = config.epochs * int(train_data.cardinality())
    schedule = keras.optimizers.schedules.CosineDecay(config.learning_rate, decay_steps=max(steps, 1))
    model.compile(keras.optimizers.Adam(schedule), EarlyExitLoss())
    start = time.perf_counter()
    model.fit(train_data, validation_data=validation, epochs=config.epochs, shuffle=False, verbose=2)
    print(f"trained in {time.perf_counter() - start:.0f} s")
    path = pathlib.Path(config.model_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model.save(path)
    (path.parent / "config.json").write_text(json.dumps(dataclasses.asdict(config), indent=2) + "\n")
    return model


def load_or_train(config):
    path = pathlib.Path(config.model_path)
    if path.exists() and not config.retrain:
        print(f"loading {path} (--retrain to train afresh)")
        model = keras.models.load_model(path, compile=False)
        if not isinstance(model, EarlyExitClassifier):
            sys.exit(f"{path} holds a {type(model).__name__}, not an EarlyExitClassifier; pass --retrain")
        return model
    return train(config)


def full_graph(model):
    """The full forward, compiled: embeddings, all encoder layers, the last exit."""

    @tf.function(input_signature=[tf.TensorSpec((None, *model.backbone.image_shape), model.compute_dtype)])
    def run(images):
        x = model.backbone.embeddings(images, training=False)
        for layer in model.backbone.transformer_layers:
            x = layer(x, training=False)
        return tf.argmax(model.exit_logits(len(model.exit_layers) - 1, x), axis=-1)

    return run


def time_contestants(contestants, batches, labels, rounds):
    """Median seconds per batch and ``(accuracy, mean layers used)`` of each contestant over the batches.

    Interleaved batch by batch, in an order rotated each round, so that load from other processes
    falls on every contestant alike.
    """
    names = list(contestants)
    times = {name: [0.0] * rounds for name in names}
    outputs = {name: [] for name in names}
    for round_index in range(rounds):
        order = names[round_index % len(names):] + names[:round_index % len(names)]
        for images in batches:
            for name in order:
                start = time.perf_counter()
                out = contestants[name](images)
                times[name][round_index] += time.perf_counter() - start
                if round_index == 0:
                    outputs[name].append(out)
    per_batch = {name: statistics.median(values) / len(batches) for name, values in times.items()}
    results = {}
    for name in names:
        predictions = np.concatenate([out["predictions"] for out in outputs[name]])
        layers_used = np.concatenate([out["layers_used"] for out in outputs[name]])
        results[name] = (float((predictions == labels).mean()), float(layers_used.mean()))
    return per_batch, results


def main():
    config = parse_config()
    print("config:", json.dumps(dataclasses.asdict(config)))
    model = load_or_train(config)
    images, labels = test_arrays(config.test_limit)
    batches = [images[i:i + config.eval_batch_size] for i in range(0, len(images), config.eval_batch_size)]
    num_layers = model.num_layers

    exit_logits = np.concatenate([keras.ops.convert_to_numpy(model(b)) for b in batches])
    print(f"test accuracy per exit (layers {model.exit_layers}): "
          + " ".join(f"{a:.4f}" for a in (exit_logits.argmax(-1) == labels[:, None]).mean(0)))

    graph, predictor = full_graph(model), EarlyExitPredictor(model)
    contestants = {
        "full": lambda x: {"predictions": graph(x).numpy(), "layers_used": np.full(len(x), num_layers)},
        "no exit": lambda x: predictor(x, None),
    }
    for threshold in config.threshold_list():
        contestants[threshold] = lambda x, t=threshold: predictor(x, t)
    for contestant in contestants.values():  # warm-up: traces, first-call allocations
        contestant(batches[0])

    per_batch, results = time_contestants(contestants, batches, labels, config.rounds)
    accuracy_full = results["full"][0]
    thresholds = [t for t in contestants if not isinstance(t, str)]
    eligible = [t for t in thresholds if results[t][0] >= accuracy_full - ACCURACY_TOLERANCE]
    note = ""
    if not eligible:
        note = (f"no threshold is within {ACCURACY_TOLERANCE} of the full model's accuracy: "
                "the most accurate one is picked")
        eligible = [max(thresholds, key=lambda t: results[t][0])]
    best = min(eligible, key=lambda t: per_batch[t])
    eager_name = f"eager {best:g}"
    eager_times, eager_results = time_contestants(
        {eager_name: lambda x: model.predict_early(x, best)}, batches, labels, config.rounds
    )
    per_batch.update(eager_times)
    results.update(eager_results)

    print(f"\n{len(labels)} test images, batches of {config.eval_batch_size}, median of {config.rounds} rounds, "
          f"{num_layers} layers")
    print(f"{'threshold':>10} {'accuracy':>9} {'layers':>7} {'ms/batch':>9} {'vs full':>8}")
    for name in per_batch:
        accuracy, layers = results[name]
        label = name if isinstance(name, str) else f"{name:g}"
        print(f"{label:>10} {accuracy:9.4f} {layers:7.2f} {per_batch[name] * 1e3:9.1f} "
              f"{per_batch[name] / per_batch['full']:8.2f}")
    if note:
        print(note)
    print(f"\nratio early_exit_vs_full: {per_batch[best] / per_batch['full']:.2f}")
    print(f"threshold: {best:g}")
    print(f"accuracy_full: {accuracy_full:.4f}")
    print(f"accuracy_early_exit: {results[best][0]:.4f}")
    print(f"mean_layers: {results[best][1]:.2f}")


if __name__ == "__main__":
    main()
