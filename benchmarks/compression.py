"""Section 11.1, model compression of the Fashion-MNIST release: size, latency and accuracy in one table.

The original is the released LeNet-5 (``saved_models/fashion_mnist/1``, test
accuracy 0.9049), rebuilt from its MANIFEST config and SavedModel variables
(``compression.release``) and checked against the release's own outputs.
Every method starts from it:

* distillation: a LeNet-style student at about a quarter of the parameters,
  trained on the teacher's soft targets (``T``, ``alpha``) and, as the control,
  the same student from the same initial weights on the labels alone (the
  same epochs and learning-rate schedule);
* magnitude pruning to 50% and 80% of every kernel (Zhu & Gupta schedule over
  the first 60% of the fine-tuning steps, masks held to the end);
* TFLite float32 (the converted original: the baseline of the TFLite rows),
  dynamic-range int8, full-integer int8 (500 calibration images), float16,
  and QAT int8 (fake-quant fine-tuning, then full-integer conversion).

Columns: parameters (and the non-zero ones), stored bytes (Keras rows: the
``.weights.h5`` file; TFLite rows: the ``.tflite`` flatbuffer) and their
gzip size, latency (median ms per batch of 256 test images over rounds that
visit every variant in a new random order, all measured in this run, Keras rows
in TensorFlow, TFLite rows in the LiteRT interpreter, both with ``--threads``
threads), test accuracy and agreement with the original's predictions.
Then ratio lines (``ratio size int8_vs_float: 0.29``) against a baseline
measured in the same run.

Usage: ``python benchmarks/compression.py [--epochs 4] [--student-epochs 10] [--qat-epochs 2] [--quick]``
(``--quick``: 5,000 training images, one epoch each, a smoke run).
"""

import argparse
import dataclasses
import os
import pathlib
import statistics
import sys
import tempfile
import time

# Run as a script, this file's folder comes first on sys.path and its name
# would shadow packages of the repository: import from the repository root instead.
_HERE = pathlib.Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if pathlib.Path(p or ".").resolve() != _HERE]
sys.path.insert(0, str(_HERE.parent))

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@dataclasses.dataclass
class CompressionBenchConfig:
    """What the benchmark trains and measures (printed at the start of the run)."""

    release: str = "saved_models/fashion_mnist/1"
    epochs: int = 4  # pruning fine-tuning epochs
    student_epochs: int = 10  # the teacher had 10
    qat_epochs: int = 2
    batch_size: int = 128
    # Chosen on the validation split by --select-distillation "1:0.5,2:0.5,4:0.5,2:0.1,4:0.1" (accuracy 0.8878,
    # 0.8850, 0.8714, 0.8824, 0.8696; the hard-label student 0.8868): this 4x smaller student gains little.
    temperature: float = 1.0
    alpha: float = 0.5
    student_learning_rate: float = 2e-3
    finetune_learning_rate: float = 5e-4
    qat_learning_rate: float = 1e-4
    calibration_images: int = 500
    latency_batch: int = 256
    rounds: int = 30
    calls: int = 3  # consecutive calls per timing sample
    threads: int = 1
    limit: int = 0  # training images (0: all 55,000)
    seed: int = 1234
    select_distillation: str = ""  # "T:alpha,..." : score each on the validation split, print the best, stop


def parse_config(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    defaults = CompressionBenchConfig()
    for field in dataclasses.fields(CompressionBenchConfig):
        parser.add_argument("--" + field.name.replace("_", "-"), type=type(getattr(defaults, field.name)),
                            default=getattr(defaults, field.name))
    parser.add_argument("--quick", action="store_true", help="5,000 training images, one epoch each, 5 rounds")
    args = vars(parser.parse_args(argv))
    quick = args.pop("quick")
    config = CompressionBenchConfig(**args)
    if quick:
        config = dataclasses.replace(config, epochs=1, student_epochs=1, qat_epochs=1, limit=5000, rounds=5)
    return config


def main(argv=None):
    config = parse_config(argv)
    import tensorflow as tf

    # Before any op runs: the same thread count for TensorFlow and LiteRT.
    tf.config.threading.set_intra_op_parallelism_threads(config.threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    import keras
    import numpy as np

    from compression.distillation import Distiller
    from compression.pruning import MagnitudePruning, PolynomialSparsity, sparsity_report, stored_size
    from compression.quantization import TFLiteModel, quantize_model, to_tflite
    from compression.release import load_release_network, release_max_abs_diff
    from layers.convolution import Conv2D
    from layers.perceptron import Dense
    from layers.pooling import MaxPooling2D
    from pipelines import fashion_mnist

    started = time.perf_counter()
    print(f"{type(config).__name__}: " + ", ".join(f"{k}={v}" for k, v in dataclasses.asdict(config).items()))
    keras.utils.set_random_seed(config.seed)

    teacher, _, _ = load_release_network(config.release)
    test_images, test_labels = fashion_mnist.load_split("test")
    test_x = (test_images.astype(np.float32) / 255.0)[..., None]
    train_images, _ = fashion_mnist.load_split("train")
    train_x = (train_images.astype(np.float32) / 255.0)[..., None]
    print(f"original: {config.release}, {teacher.count_params():,} parameters, max |softmax - release| on 256 "
          f"test images: {release_max_abs_diff(teacher, config.release, test_x[:256]):.1e}")

    limit = config.limit or None
    steps_per_epoch = -(-min(len(train_x), limit or len(train_x)) // config.batch_size)

    def train_data():
        return fashion_mnist.make_dataset("train", batch_size=config.batch_size, shuffle=True, seed=config.seed,
                                          limit=limit)

    def optimizer(learning_rate, epochs):
        return keras.optimizers.Adam(keras.optimizers.schedules.CosineDecay(learning_rate, epochs * steps_per_epoch))

    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    def copy_of(model):
        clone = keras.models.clone_model(model)
        clone.set_weights(model.get_weights())
        return clone

    # --- distillation ---------------------------------------------------------------------
    def student():
        """LeNet-5 at reduced widths: conv 6@5x5 -> pool -> conv 10@5x5 -> pool -> dense 48 -> 24 -> 10."""
        inputs = keras.Input(fashion_mnist.IMAGE_SHAPE, name="image")
        x = Conv2D(6, 5, padding="same", activation="relu", name="c1")(inputs)
        x = MaxPooling2D(2, name="s2")(x)
        x = Conv2D(10, 5, activation="relu", name="c3")(x)
        x = MaxPooling2D(2, name="s4")(x)
        x = keras.layers.Flatten(name="flatten")(x)
        x = Dense(48, activation="relu", name="c5")(x)
        x = Dense(24, activation="relu", name="f6")(x)
        return keras.Model(inputs, Dense(10, name="predictions")(x), name="lenet5_student")

    if config.select_distillation:
        # The temperature and mix are chosen here, on the validation split (the last 5,000 training images,
        # which neither the release nor the students train on): never on the test split.
        val_images, val_labels = fashion_mnist.load_split("validation")
        val_x = (val_images.astype(np.float32) / 255.0)[..., None]
        control = student()
        start = control.get_weights()
        control.compile(optimizer(config.student_learning_rate, config.student_epochs), loss)
        control.fit(train_data(), epochs=config.student_epochs, verbose=0)
        accuracy = lambda m: float(np.mean(np.argmax(m.predict(val_x, verbose=0), -1) == val_labels))  # noqa: E731
        print(f"validation accuracy, hard labels only: {accuracy(control):.4f}")
        scores = {}
        for pair in config.select_distillation.split(","):
            temperature, alpha = (float(v) for v in pair.split(":"))
            candidate = student()
            candidate.set_weights(start)
            distiller = Distiller(candidate, teacher, temperature=temperature, alpha=alpha)
            distiller.compile(optimizer(config.student_learning_rate, config.student_epochs))
            distiller.fit(train_data(), epochs=config.student_epochs, verbose=0)
            scores[(temperature, alpha)] = accuracy(candidate)
            print(f"validation accuracy, distilled T={temperature:g} alpha={alpha:g}: {scores[(temperature, alpha)]:.4f}")
        best = max(scores, key=scores.get)
        print(f"best on validation: --temperature {best[0]:g} --alpha {best[1]:g}")
        return

    timings = {}
    distilled = student()
    hard = copy_of(distilled)  # the same initial weights: only the loss differs
    print(f"student: {distilled.count_params():,} parameters "
          f"({distilled.count_params() / teacher.count_params():.2f} of the teacher's {teacher.count_params():,})")
    t = time.perf_counter()
    distiller = Distiller(distilled, teacher, temperature=config.temperature, alpha=config.alpha)
    distiller.compile(optimizer(config.student_learning_rate, config.student_epochs))
    distiller.fit(train_data(), epochs=config.student_epochs, verbose=0)
    timings["distill"] = time.perf_counter() - t
    t = time.perf_counter()
    hard.compile(optimizer(config.student_learning_rate, config.student_epochs), loss)
    hard.fit(train_data(), epochs=config.student_epochs, verbose=0)
    timings["hard student"] = time.perf_counter() - t

    # --- pruning ----------------------------------------------------------------------------
    pruned = {}
    total_steps = config.epochs * steps_per_epoch
    for target in (0.5, 0.8):
        t = time.perf_counter()
        model = copy_of(teacher)
        model.compile(optimizer(config.finetune_learning_rate, config.epochs), loss)
        schedule = PolynomialSparsity(target, begin_step=0, end_step=max(1, int(0.6 * total_steps)),
                                      frequency=max(1, total_steps // 20))
        model.fit(train_data(), epochs=config.epochs, verbose=0, callbacks=[MagnitudePruning(schedule)])
        pruned[target] = model
        timings[f"prune {target:.0%}"] = time.perf_counter() - t

    # --- quantization -------------------------------------------------------------------------
    rng = np.random.default_rng(config.seed)
    calibration = train_x[rng.choice(len(train_x) if limit is None else limit, config.calibration_images,
                                     replace=False)]
    t = time.perf_counter()
    flatbuffers = {mode: to_tflite(teacher, mode, representative_data=calibration)
                   for mode in ("float32", "dynamic_int8", "full_int8", "float16")}
    timings["post-training conversions"] = time.perf_counter() - t
    t = time.perf_counter()
    qat = quantize_model(teacher, calibration_data=train_x[:1024])
    qat.compile(optimizer(config.qat_learning_rate, config.qat_epochs), loss)
    qat.fit(train_data(), epochs=config.qat_epochs, verbose=0)
    flatbuffers["qat_int8"] = to_tflite(qat, "qat_int8")
    timings["QAT"] = time.perf_counter() - t

    # --- the table ------------------------------------------------------------------------------
    def keras_runner(model):
        forward = tf.function(lambda x: model(x, training=False), jit_compile=False, autograph=False)
        return lambda x: forward(tf.constant(x)).numpy()

    def tflite_runner(flatbuffer):
        return TFLiteModel(flatbuffer, num_threads=config.threads)

    def weights_file_size(model, folder):
        # An uncompiled copy: a compiled model's .weights.h5 also holds its optimizer's slots (Adam: 3x the bytes).
        path = pathlib.Path(folder) / f"{model.name}_{id(model)}.weights.h5"
        fresh = model.__class__.from_config(model.get_config())  # clone_model would compile it like the original
        fresh.set_weights(model.get_weights())
        fresh.save_weights(path)
        return stored_size(path)

    def nonzero(model):
        return int(sum(np.count_nonzero(keras.ops.convert_to_numpy(w.value)) for w in model.weights))

    parameters = teacher.count_params()
    rows = []  # (name, runtime, parameters, nonzero, (bytes, gzip bytes), runner)
    with tempfile.TemporaryDirectory() as folder:
        for name, model in (("original (release, float32)", teacher), ("distilled student", distilled),
                            ("student, hard labels only", hard), ("pruned 50%", pruned[0.5]),
                            ("pruned 80%", pruned[0.8])):
            rows.append((name, "keras", model.count_params(), nonzero(model), weights_file_size(model, folder),
                         keras_runner(model)))
    tflite_names = {"float32": "TFLite float32", "dynamic_int8": "TFLite dynamic int8",
                    "full_int8": "TFLite full int8", "float16": "TFLite float16", "qat_int8": "QAT int8 (TFLite)"}
    for mode, flatbuffer in flatbuffers.items():
        rows.append((tflite_names[mode], "litert", parameters, None, stored_size(flatbuffer),
                     tflite_runner(flatbuffer)))

    def predict(runner):
        return np.concatenate([np.argmax(runner(test_x[i : i + config.latency_batch]), axis=-1)
                               for i in range(0, len(test_x), config.latency_batch)])

    t = time.perf_counter()
    predictions = [predict(row[-1]) for row in rows]
    timings["test-set predictions"] = time.perf_counter() - t
    reference = predictions[0]

    batch = test_x[: config.latency_batch]
    for row in rows:  # warm-up: traces, interpreter resizes
        row[-1](batch)
    samples = [[] for _ in rows]
    t = time.perf_counter()
    for _ in range(config.rounds):
        for i in rng.permutation(len(rows)):  # a new order each round: no variant always runs first
            start = time.perf_counter()
            for _ in range(config.calls):
                rows[i][-1](batch)
            samples[i].append((time.perf_counter() - start) / config.calls)
    timings["latency rounds"] = time.perf_counter() - t
    latency = [statistics.median(s) * 1e3 for s in samples]

    print(f"\nFashion-MNIST test set ({len(test_x):,} images); latency: median of {config.rounds} rounds, "
          f"batch {config.latency_batch}, {config.threads} thread(s), this CPU")
    header = (f"{'variant':30} {'runtime':7} {'params':>8} {'nonzero':>8} {'stored B':>9} {'gzip B':>8} "
              f"{'ms/batch':>9} {'accuracy':>8} {'agree':>6}")
    print(header)
    print("-" * len(header))
    results = {}
    for (name, runtime, params, nz, (size, gz), _), ms, pred in zip(rows, latency, predictions):
        accuracy = float(np.mean(pred == test_labels))
        agree = float(np.mean(pred == reference))
        results[name] = {"size": size, "gzip": gz, "ms": ms, "accuracy": accuracy, "params": params}
        nz_text = f"{nz:>8,}" if nz is not None else f"{'-':>8}"
        print(f"{name:30} {runtime:7} {params:>8,} {nz_text} {size:>9,} {gz:>8,} {ms:>9.2f} {accuracy:>8.4f} "
              f"{agree:>6.4f}")

    r = results
    original, tfl = r["original (release, float32)"], r["TFLite float32"]
    print()
    print(f"ratio params student_vs_teacher: {r['distilled student']['params'] / original['params']:.2f}")
    print(f"delta accuracy distilled_vs_hard_student: "
          f"{r['distilled student']['accuracy'] - r['student, hard labels only']['accuracy']:+.4f}")
    print(f"ratio latency student_vs_teacher: {r['distilled student']['ms'] / original['ms']:.2f}")
    for key, name in (("50", "pruned 50%"), ("80", "pruned 80%")):
        print(f"ratio size pruned{key}_vs_dense: {r[name]['size'] / original['size']:.2f}")
        print(f"ratio size_gzip pruned{key}_vs_dense: {r[name]['gzip'] / original['gzip']:.2f}")
        print(f"ratio latency pruned{key}_vs_dense: {r[name]['ms'] / original['ms']:.2f}")
    for key, name in (("dynamic_int8", "TFLite dynamic int8"), ("int8", "TFLite full int8"),
                      ("float16", "TFLite float16"), ("qat_int8", "QAT int8 (TFLite)")):
        print(f"ratio size {key}_vs_float: {r[name]['size'] / tfl['size']:.2f}")
        print(f"ratio latency {key}_vs_float: {r[name]['ms'] / tfl['ms']:.2f}")
    print(f"ratio latency tflite_float_vs_keras_float: {tfl['ms'] / original['ms']:.2f}")
    sparsity = {k: sparsity_report(m)["total"] for k, m in pruned.items()}
    print(f"\nkernel sparsity reached: 50% -> {sparsity[0.5]:.3f}, 80% -> {sparsity[0.8]:.3f} (biases kept)")
    print("note: the pruned models are stored dense, as many bytes as the original, and run on dense kernels "
          "(oneDNN), which multiply the zeros like any other weight: unstructured sparsity saves bytes only once "
          "the file is compressed (gzip), and no time; a pruned latency ratio away from 1.00 is noise.")
    int8_ratio = r["TFLite full int8"]["ms"] / tfl["ms"]
    print(f"note: the int8 and float16 'vs_float' ratios are against TFLite float32, all in LiteRT; on this CPU "
          f"full-integer int8 runs {int8_ratio:.2f}x the float32 time"
          + (" (LiteRT's float path, XNNPACK, is faster here than its int8 kernels: int8 buys size, not speed)."
             if int8_ratio > 1.05 else "."))
    print("timings: " + ", ".join(f"{k} {v:.0f} s" for k, v in timings.items()))
    print(f"wall time: {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
