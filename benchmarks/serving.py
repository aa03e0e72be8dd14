"""Serving speed of a generation release: the SavedModel against the Python decoder, batching, TFLite.

One model, four ways to run it on the same test sentences with the same beam:

- ``python_decoder``: ``apps.seq2seq.Seq2SeqDecoder`` on the Keras model (XLA
  decode loops per source-width bucket), what ``tfsuite evaluate --checkpoint`` runs;
- ``savedmodel_batch32``: the exported SavedModel's ``serving_default``, 32
  sentences per call (what TF Serving runs; no XLA);
- ``savedmodel_batch1``: the same, one sentence per call;
- ``tflite_int8_batch1``: the int8 TFLite model in LiteRT, one sentence per call.

Each is warmed up once, then timed over the same sentences; rounds alternate
between contestants so machine noise hits all of them, and a contestant's
figure is its median sentences per second. Prints::

    ratio savedmodel_vs_python_decoder: X.XX   # sentences/s, 32 per call for both
    ratio batch32_vs_batch1: X.XX              # SavedModel sentences/s, 32 vs 1 per call
    ratio tflite_int8_vs_savedmodel: X.XX      # sentences/s, both one sentence per call

then the raw figures, how many outputs agree, and with ``--profile`` the
share of one decode step's time per operation type (TensorFlow profiler).

The model: ``--run runs/translation/<run>`` (its config and newest step
checkpoint, exported to a temporary folder), else the latest translation
release with its training run when it is on this machine, else ``--tiny``
(random weights, a smoke run).

Usage: ``python benchmarks/serving.py [--run DIR] [--sentences 64] [--rounds 1] [--tiny] [--profile]``
"""

import argparse
import collections
import glob
import os
import pathlib
import statistics
import sys
import tempfile
import time

# Run as a script, this file's folder comes first on sys.path and
# benchmarks/layers.py would shadow the ``layers`` package: import from the repository root.
_HERE = pathlib.Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if pathlib.Path(p or ".").resolve() != _HERE]
sys.path.insert(0, str(_HERE.parent))

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from apps.checkpoints import CheckpointStore  # noqa: E402
from apps.config import load_config  # noqa: E402
from apps.export import TFLiteRunner, write_generation_saved_model, write_tflite  # noqa: E402
from apps.translation import TranslationApp, TranslationConfig  # noqa: E402
from apps.translation.app import FALLBACK_EXAMPLES  # noqa: E402

BIG_BATCH = 32


def load_run(run):
    """The config and the model of a training run: its newest step checkpoint (or model.keras)."""
    run = pathlib.Path(run)
    config = load_config(TranslationConfig, run / "config.json")
    app = TranslationApp()
    model = app.build_model(config)
    store = CheckpointStore(run / "checkpoints")
    if store.steps():
        step = store.steps()[0]
        model.load_weights(str(store.directory / f"step-{step:08d}.weights.h5"))
        where = f"{run} step {step}"
    else:
        model.load_weights(run / "model.keras")
        where = f"{run}/model.keras"
    return app, config, model, where


def tiny_run():
    config = TranslationConfig(
        limit=200, vocab_size=300, hidden_dim=32, num_heads=2, intermediate_dim=64, num_layers=1,
        runs_dir=tempfile.mkdtemp(prefix="tfsuite_bench_runs_"), steps_per_epoch=None,
    )
    app = TranslationApp()
    return app, config, app.build_model(config), "random weights (--tiny)"


def test_sentences(app, config, count):
    try:
        sentences = app.load_texts(config.__class__(**{**config.__dict__, "limit": None}), "test")[0][:count]
    except Exception as error:  # noqa: BLE001 - the corpus may not be built: fixed sentences then
        print(f"note: test split unavailable ({type(error).__name__}); using fixed sentences", flush=True)
        sentences = []
    while len(sentences) < count:
        sentences.extend(FALLBACK_EXAMPLES)
    return sentences[:count]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", default=None, help="training run folder (config.json + checkpoints/)")
    parser.add_argument("--sentences", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--tiny", action="store_true", help="random-weight tiny model (smoke run)")
    parser.add_argument("--profile", action="store_true", help="profile one SavedModel batch-32 call")
    args = parser.parse_args()

    if args.tiny:
        app, config, model, where = tiny_run()
    else:
        run = args.run or sorted(glob.glob("runs/translation/en_de*"), key=os.path.getmtime)[-1]
        app, config, model, where = load_run(run)
    sentences = test_sentences(app, config, args.sentences)
    print(f"model: {where}; {len(sentences)} sentences, beam {config.beam_size}", flush=True)
    folder = pathlib.Path(tempfile.mkdtemp(prefix="tfsuite_bench_serving_"))
    start = time.perf_counter()
    version = write_generation_saved_model(app.generation_export(model, config), folder / "1")
    print(f"exported in {time.perf_counter() - start:.1f} s", flush=True)
    serving = tf.saved_model.load(str(version)).signatures["serving_default"]
    tflite = TFLiteRunner(write_tflite(version, folder / "tflite")["int8"])
    decoder = app.decoder(model, config)
    decoder.batch_size = BIG_BATCH

    def saved_model(batch_size):
        def run(texts):
            out = []
            for begin in range(0, len(texts), batch_size):
                served = serving(sentences=tf.constant(texts[begin : begin + batch_size]))["translations"]
                out.extend(t.decode("utf-8") for t in served.numpy())
            return out

        return run

    contestants = {
        "python_decoder": decoder,
        "savedmodel_batch32": saved_model(BIG_BATCH),
        "savedmodel_batch1": saved_model(1),
        "tflite_int8_batch1": lambda texts: [tflite([t])["translations"][0] for t in texts],
    }
    outputs, speeds = {}, collections.defaultdict(list)
    for name, run in contestants.items():
        run(sentences[:BIG_BATCH])  # warm-up: traces and compiles every bucket this batch needs
    for _ in range(args.rounds):
        for name, run in contestants.items():
            begin = time.perf_counter()
            outputs[name] = run(sentences)
            speeds[name].append(len(sentences) / (time.perf_counter() - begin))
    speed = {name: statistics.median(values) for name, values in speeds.items()}
    print(f"ratio savedmodel_vs_python_decoder: {speed['savedmodel_batch32'] / speed['python_decoder']:.2f}")
    print(f"ratio batch32_vs_batch1: {speed['savedmodel_batch32'] / speed['savedmodel_batch1']:.2f}")
    print(f"ratio tflite_int8_vs_savedmodel: {speed['tflite_int8_batch1'] / speed['savedmodel_batch1']:.2f}")
    for name, value in speed.items():
        print(f"{name}: {value:.2f} sentences/s")
    reference = outputs["savedmodel_batch32"]
    for name in ("python_decoder", "savedmodel_batch1", "tflite_int8_batch1"):
        same = sum(a == b for a, b in zip(outputs[name], reference))
        print(f"{name}: {same}/{len(reference)} outputs equal the SavedModel batch-32 ones")
    if args.profile:
        profile(serving, sentences[:BIG_BATCH], folder / "profile")


def profile(serving, batch, logdir):
    """Per operation type, the share of one batch-32 SavedModel call's time (TensorFlow profiler)."""
    from xprof.convert import raw_to_tool_data  # pip install tensorboard-plugin-profile

    tf.profiler.experimental.start(str(logdir))
    serving(sentences=tf.constant(batch))
    tf.profiler.experimental.stop()
    import json

    files = glob.glob(f"{logdir}/**/*.xplane.pb", recursive=True)
    data, _ = raw_to_tool_data.xspace_to_tool_data(files, "framework_op_stats", {})
    table = json.loads(data)[0]
    columns = [c["id"] for c in table["cols"]]
    rows = [dict(zip(columns, [c.get("v") if c else None for c in r["c"]])) for r in table["rows"]]
    by_type = collections.Counter()
    for row in rows:
        if row["type"] != "IDLE":
            by_type[row["type"]] += row["total_self_time"]
    total = sum(by_type.values())
    print(f"profile of one call ({total / 1000:.0f} ms of thread time, IDLE excluded):")
    for kind, value in by_type.most_common(15):
        print(f"  {kind:<32} {100 * value / total:5.1f}%")


if __name__ == "__main__":
    main()
