"""Translation serving speed: TFLite int8 vs the SavedModel, and batch 32 vs batch 1.

The released en-de translator (``saved_models/translation_en_de/<latest>/``,
or ``--saved-model DIR``) translates the first ``--sentences`` English
sentences of the ``tfsuite_translation/en_de`` test split (a fixed list when
the corpus is not built), strings in and strings out, with the export's beam
search:

- ``savedmodel_batch1``: ``serving_default`` of the reloaded SavedModel, one
  sentence per call (what TF Serving runs);
- ``tflite_int8_batch1``: the int8 dynamic-range TFLite model in the LiteRT
  interpreter, one sentence per call (the release's ``tflite/`` file, or
  converted from the SavedModel into a temporary folder);
- ``savedmodel_batch32``: ``serving_default`` with 32 sentences per call.

Every contestant is warmed up with one call, then timed over the same
sentences; rounds alternate between contestants so machine noise hits all of
them, and a contestant's figure is its median sentences per second. Prints::

    ratio tflite_int8_vs_savedmodel: X.XX    # sentences/s, both one sentence per call
    ratio batch32_vs_batch1: X.XX            # SavedModel sentences/s, 32 vs 1 per call

then the raw sentences/s and how many int8 translations equal the SavedModel's.

Usage: ``python benchmarks/translation.py [--sentences 64] [--rounds 1] [--saved-model DIR] [--tiny]``
(``--tiny``: a random-weight model from the app's tiny config, for a smoke run without a release).
"""

import argparse
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
import tensorflow_text  # noqa: E402,F401 - registers the tf_text ops the SavedModel uses

from apps.cli import DEFAULT_MODELS_DIR  # noqa: E402
from apps.translation.export import TFLITE_FILES, TFLiteTranslator, convert_to_tflite, read_settings  # noqa: E402
from apps.translation.ui import FALLBACK_EXAMPLES, release_name  # noqa: E402

BIG_BATCH = 32


def test_sentences(count):
    """The first ``count`` English sentences of the en-de test split (repeated fixed ones without the corpus)."""
    try:
        import tensorflow_datasets as tfds

        import pipelines.corpora.translation  # noqa: F401 - registers the builder
        from pipelines.corpora import sources

        dataset = tfds.load("tfsuite_translation/en_de", split="test", data_dir=str(sources.data_dir()))
        sentences = [ex["en"].decode("utf-8") for ex in dataset.take(count).as_numpy_iterator()]
        source = "tfsuite_translation/en_de test split"
    except Exception as error:  # noqa: BLE001 - any failure to read the corpus means: use the fixed list
        print(f"note: test split unavailable ({type(error).__name__}); using fixed sentences", flush=True)
        sentences, source = [], "fixed sentences"
    while len(sentences) < count:
        sentences.extend(FALLBACK_EXAMPLES)
    return sentences[:count], source


def tiny_release(directory):
    """A random-weight translator from the app's tiny config, exported to ``directory``."""
    from apps.translation import TranslationApp, TranslationConfig
    from apps.translation.export import ExportTranslator, write_saved_model

    config = TranslationConfig(
        limit=200, vocab_size=300, hidden_dim=32, num_heads=2, intermediate_dim=64, num_layers=1,
        runs_dir=str(directory / "runs"), max_new_tokens=16, beam_size=4,
    )
    app = TranslationApp()
    source, target = app.tokenizers(config)
    translator = ExportTranslator(
        app.build_model(config), source, target, source_length=config.max_source_length,
        max_new_tokens=config.max_new_tokens, num_beams=config.beam_size,
    )
    return write_saved_model(translator, directory / "1")


def release_dir(args, scratch):
    if args.saved_model:
        return pathlib.Path(args.saved_model)
    if args.tiny:
        return tiny_release(scratch)
    from apps.ui import latest_version_dir

    return latest_version_dir(DEFAULT_MODELS_DIR, release_name("en_de"))


def int8_model(saved_model, scratch):
    """The release's int8 TFLite file when it was written by ``tfsuite export --format tflite``, else a fresh conversion."""
    shipped = saved_model.parent / "tflite" / TFLITE_FILES["int8"]
    if shipped.is_file() and shipped.stat().st_mtime >= (saved_model / "saved_model.pb").stat().st_mtime:
        return shipped
    path = scratch / TFLITE_FILES["int8"]
    path.write_bytes(convert_to_tflite(saved_model, quantize=True))
    return path


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sentences", type=int, default=64, help="test sentences to translate (default 64)")
    parser.add_argument("--rounds", type=int, default=1, help="timed passes per contestant (default 1)")
    parser.add_argument("--saved-model", default=None, help="a translator SavedModel (default: the en-de release)")
    parser.add_argument("--tiny", action="store_true", help="random-weight tiny model instead of the release")
    args = parser.parse_args(argv)
    if args.sentences < BIG_BATCH or args.sentences % BIG_BATCH:
        parser.error(f"--sentences must be a positive multiple of {BIG_BATCH}, got {args.sentences}")
    if args.rounds < 1:
        parser.error(f"--rounds must be >= 1, got {args.rounds}")

    with tempfile.TemporaryDirectory(prefix="tfsuite_bench_") as scratch:
        scratch = pathlib.Path(scratch)
        saved_model = release_dir(args, scratch)
        settings = read_settings(saved_model)
        sentences, source = test_sentences(args.sentences)
        print(
            f"model {saved_model} (beam {settings['num_beams']}, up to {settings['max_new_tokens']} word pieces); "
            f"{len(sentences)} sentences from the {source}",
            flush=True,
        )
        serve = tf.saved_model.load(str(saved_model)).signatures["serving_default"]
        tflite = TFLiteTranslator(int8_model(saved_model, scratch))

        def savedmodel(batch):
            return [t.decode("utf-8") for t in serve(sentences=tf.constant(batch))["translations"].numpy()]

        contestants = {
            "savedmodel_batch1": (savedmodel, 1),
            "tflite_int8_batch1": (lambda batch: tflite(batch)["translations"], 1),
            "savedmodel_batch32": (savedmodel, BIG_BATCH),
        }
        outputs = {name: fn(sentences[:size]) for name, (fn, size) in contestants.items()}  # warm-up
        speeds = {name: [] for name in contestants}
        for _ in range(args.rounds):
            for name, (fn, size) in contestants.items():
                start = time.perf_counter()
                outputs[name] = [t for i in range(0, len(sentences), size) for t in fn(sentences[i : i + size])]
                speeds[name].append(len(sentences) / (time.perf_counter() - start))
        speed = {name: statistics.median(values) for name, values in speeds.items()}

    same = sum(a == b for a, b in zip(outputs["tflite_int8_batch1"], outputs["savedmodel_batch1"]))
    batch_same = outputs["savedmodel_batch32"] == outputs["savedmodel_batch1"]
    print(f"ratio tflite_int8_vs_savedmodel: {speed['tflite_int8_batch1'] / speed['savedmodel_batch1']:.2f}")
    print(f"ratio batch32_vs_batch1: {speed['savedmodel_batch32'] / speed['savedmodel_batch1']:.2f}")
    for name, value in speed.items():
        print(f"sentences_per_s {name}: {value:.2f}")
    print(f"tflite int8 translations equal to the SavedModel's: {same}/{len(sentences)}")
    print(f"batch 32 translations equal to batch 1: {batch_same}", flush=True)


if __name__ == "__main__":
    main()
