"""Does the input pipeline keep up with training? Pipeline throughput over training-step throughput.

For each app, two rates are measured in the same run, on the same CPU:

* **pipeline**: examples per second the ``tf.data`` pipeline delivers on its
  own (a warmed-up iterator, batches pulled and dropped, nothing else running);
* **step**: examples per second one training step of the default model
  consumes (forward, loss, backward, Adam update; batches taken from the same
  pipeline beforehand, so the shapes are real).

Measurements alternate in rounds so that load from other processes hits both;
each rate is the median over rounds. It prints::

    ratio pipeline_vs_step translation: 41.20   # pipeline examples/s / step examples/s; >= 5: the input never starves training

Apps and models (neither app has its model in ``apps/`` yet, so these stand
in for the "default model", built from our layers):

* **translation**: ``tfsuite_translation/en_de`` through
  :func:`pipelines.tfds_sources.load_examples`, WordPiece tokenization
  (:mod:`pipelines.wordpiece`, vocabularies learned once on the first
  ``--vocab-sentences`` training pairs and kept under ``<data_dir>/benchmark_small``) and :func:`pipelines.text.make_seq2seq_dataset`.
  Model: :class:`layers.transformer_models.Transformer`, d_model 256, 3 encoder
  + 3 decoder layers, 4 heads, FFN 1024, masked token cross-entropy.
* **speech** (no speech app yet: a stand-in model of similar size built from
  our layers): ``tfsuite_speech`` (when the full corpus is not built, a small
  build of ``--speech-utterances`` real synthesized utterances under
  ``<data_dir>/benchmark_small``, made once) through
  :func:`pipelines.audio.make_audio_dataset`: log-mel (80 bins), SpecAugment,
  seeded shuffle, padded batches, transcripts to character ids. The
  examples are repeated *before* feature extraction, so every batch is
  computed, not cached. Model: two stride-2 3x3 ``Conv2D`` (time / 4) +
  ``Dense`` to d_model 256 + sinusoidal positions + 6
  ``TransformerEncoderLayer`` (4 heads, FFN 1024) + character logits, CTC loss
  (``tf.nn.ctc_loss``).

No GPU needed; a few minutes on two CPU cores.

Usage: ``python benchmarks/pipelines.py [--apps translation,speech] [--rounds 3]``
"""

import argparse
import os
import pathlib
import statistics
import sys
import time

# Run as a script, this file's folder comes first on sys.path and its name
# would shadow the ``pipelines`` package: import from the repository root instead.
_HERE = pathlib.Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if pathlib.Path(p or ".").resolve() != _HERE]
sys.path.insert(0, str(_HERE.parent))

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from layers.convolution import Conv2D  # noqa: E402
from layers.perceptron import Dense  # noqa: E402
from layers.position_encoding import SinusoidalPositionEncoding  # noqa: E402
from layers.transformer import TransformerEncoderLayer  # noqa: E402
from pipelines import audio, tfds_sources  # noqa: E402
from pipelines.corpora import sources as corpora_sources  # noqa: E402

D_MODEL, HEADS, FFN = 256, 4, 1024
# CTC character set: index 0 is the blank; then space, apostrophe, a-z (the tfsuite_speech transcript alphabet).
CHARACTERS = " 'abcdefghijklmnopqrstuvwxyz"


def bench_dir():
    """Where this benchmark keeps what it builds once: the small speech corpus and the WordPiece vocabularies."""
    return corpora_sources.data_dir() / "benchmark_small"


# --------------------------------------------------------------------------- measurement


def pipeline_rate(iterator, batches):
    """Examples per second over the next ``batches`` batches of a warmed-up iterator."""
    start, examples = time.perf_counter(), 0
    for _ in range(batches):
        batch = next(iterator)
        examples += int(tf.shape(tf.nest.flatten(batch)[0])[0])
    return examples / (time.perf_counter() - start)


def step_rate(step, batches, steps, losses):
    """Examples per second over ``steps`` training steps cycling through ``batches``; appends the losses."""
    start, examples = time.perf_counter(), 0
    for i in range(steps):
        batch = batches[i % len(batches)]
        losses.append(step(batch))
        examples += int(tf.shape(tf.nest.flatten(batch)[0])[0])
    float(losses[-1])  # wait for the last step
    return examples / (time.perf_counter() - start)


def compare(app, dataset, step, rounds, pipeline_batches, steps, warmup_batches=3, step_batches=4):
    iterator = iter(dataset)
    for _ in range(warmup_batches):  # graph tracing, shuffle buffer filling
        next(iterator)
    batches = [next(iterator) for _ in range(step_batches)]
    pipeline, training, losses = [], [], []
    for _ in range(rounds):
        pipeline.append(pipeline_rate(iterator, pipeline_batches))
        training.append(step_rate(step, batches, steps, losses))
    p, s = statistics.median(pipeline), statistics.median(training)
    print(
        f"{app}: pipeline {p:,.0f} examples/s, training step {s:,.1f} examples/s (medians of {rounds} rounds; "
        f"loss {float(losses[0]):.2f} -> {float(losses[-1]):.2f} over {len(losses)} steps on {len(batches)} batches)"
    )
    print(f"ratio pipeline_vs_step {app}: {p / s:.2f}", flush=True)
    return p / s


def make_step(model, loss_fn, element_spec, optimizer):
    """One compiled training step; the signature is the pipeline's element spec, so batch and length vary without retracing."""

    @tf.function(input_signature=[element_spec])
    def step(batch):
        with tf.GradientTape() as tape:
            loss = loss_fn(model, batch)
        gradients = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(gradients, model.trainable_variables))
        return loss

    return step


def count_params(model):
    return sum(int(np.prod(v.shape)) for v in model.trainable_variables)


# --------------------------------------------------------------------------- translation


def wordpiece_tokenizers(examples, args, WordpieceTokenizer, learn_wordpiece_vocab):
    """Source and target tokenizers learned on the first ``--vocab-sentences`` pairs, saved under ``<data_dir>/benchmark_small`` and reused."""
    folder = bench_dir() / f"wordpiece_en_de_{args.vocab_sentences}_{args.vocab_size}"
    try:
        tokenizers = WordpieceTokenizer.load(folder / "source"), WordpieceTokenizer.load(folder / "target")
        how = f"loaded from {folder}"
    except FileNotFoundError:
        start = time.perf_counter()
        sample = examples.take(args.vocab_sentences)
        tokenizers = tuple(
            WordpieceTokenizer(learn_wordpiece_vocab(sample.map(lambda ex, k=key: ex[k]), vocab_size=args.vocab_size))
            for key in ("source", "target")
        )
        tokenizers[0].save(folder / "source")
        tokenizers[1].save(folder / "target")
        how = f"learned on {args.vocab_sentences:,} pairs in {time.perf_counter() - start:.0f} s, saved to {folder}"
    print(f"translation: WordPiece vocabularies {tokenizers[0].vocab_size:,} / {tokenizers[1].vocab_size:,} ({how})")
    return tokenizers


def translation(args):
    from apps.translation.app import TranslationConfig
    from layers.transformer_models import Transformer
    from pipelines import text
    from pipelines.wordpiece import WordpieceTokenizer, learn_wordpiece_vocab

    config = TranslationConfig()  # the app's defaults: the released en-de model
    examples = tfds_sources.load_examples("translation", split="train")
    source_tok, target_tok = wordpiece_tokenizers(examples, args, WordpieceTokenizer, learn_wordpiece_vocab)
    batch_size = args.translation_batch or config.batch_size
    dataset = text.make_seq2seq_dataset(
        examples.repeat(), source_tokenizer=source_tok, target_tokenizer=target_tok, batch_size=batch_size,
        max_source_length=config.max_source_length, max_target_length=config.max_target_length, shuffle=True, seed=0,
        shuffle_buffer=2000, buckets=(16, 32, 48),
    )  # fmt: skip
    model = Transformer(  # the app's network (apps/seq2seq.py build_model) at its default size
        encoder_vocab_size=source_tok.vocab_size, decoder_vocab_size=target_tok.vocab_size,
        max_length=config.model_max_length, num_encoder_layers=config.num_layers, num_decoder_layers=config.num_layers,
        hidden_dim=config.hidden_dim, num_heads=config.num_heads, intermediate_dim=config.intermediate_dim,
        dropout=config.dropout, activation_dropout=config.activation_dropout,
        normalize_first=config.normalize_first, position_encoding=config.position_encoding,
    )  # fmt: skip
    loss_layer = keras.losses.CategoricalCrossentropy(
        from_logits=True, label_smoothing=config.label_smoothing, reduction=None
    )

    def loss_fn(model, batch):
        inputs, labels = batch  # labels: y + [END], padded with the pad id (0, which the model masks)
        logits = model(inputs, training=True)
        mask = tf.cast(inputs["decoder_padding_mask"], tf.float32)
        losses = loss_layer(tf.one_hot(labels, target_tok.vocab_size), logits)
        return tf.reduce_sum(losses * mask) / tf.maximum(tf.reduce_sum(mask), 1.0)

    optimizer = keras.optimizers.Adam(
        config.learning_rate, beta_1=0.9, beta_2=0.98, epsilon=1e-9, clipnorm=config.clipnorm or None
    )
    step = make_step(model, loss_fn, dataset.element_spec, optimizer)
    step(next(iter(dataset)))  # builds the model and traces the step once
    print(
        f"translation: the app's default Transformer ({config.num_layers}+{config.num_layers} layers, "
        f"d_model {config.hidden_dim}, {config.num_heads} heads, FFN {config.intermediate_dim}, "
        f"{'pre' if config.normalize_first else 'post'}-LN), {count_params(model):,} parameters; "
        f"batch {batch_size}, up to {config.max_source_length} tokens"
    )
    return compare("translation", dataset, step, args.rounds, args.pipeline_batches, args.steps)


# --------------------------------------------------------------------------- speech


def speech_examples(args):
    """``tfsuite_speech`` train if built, else a small real build made once under ``<data_dir>/benchmark_small``."""
    try:
        return tfds_sources.load_examples("speech", split="train"), "tfsuite_speech (full corpus)"
    except tfds_sources.DatasetNotPreparedError:
        pass
    import tensorflow_datasets as tfds

    import pipelines.corpora.speech  # noqa: F401  (registers the builder)

    data_dir = bench_dir()
    builder = tfds.builder(
        "tfsuite_speech", data_dir=str(data_dir), fetch=False, processes=2,
        utterances={"train": args.speech_utterances, "validation": 1, "test": 1},
    )  # fmt: skip
    if not builder.is_prepared():
        print(f"speech: tfsuite_speech is not built; synthesizing {args.speech_utterances} utterances into {data_dir} (once)")
        builder.download_and_prepare(download_config=tfds.download.DownloadConfig(try_download_gcs=False))
    count = builder.info.splits["train"].num_examples
    return tfds_sources.load_examples("speech", split="train", data_dir=data_dir), f"{count} utterances of a small tfsuite_speech build"


def character_ids(transcripts):
    """Batch of transcripts -> dense int32 ids (0 = blank/padding) and lengths."""
    table = tf.constant(np.array([CHARACTERS.find(chr(b)) + 1 for b in range(256)], np.int32))  # -1 + 1 = 0 for others
    codes = tf.strings.unicode_decode(transcripts, "UTF-8")
    ids = tf.ragged.map_flat_values(lambda c: tf.gather(table, tf.clip_by_value(c, 0, 255)), codes)
    return ids.to_tensor(), tf.cast(ids.row_lengths(), tf.int32)


class SpeechCTC(keras.Model):
    """Conv subsampling (time / 4) + Transformer encoder + character logits, for a CTC loss."""

    def __init__(self, vocab_size, num_layers=6, **kwargs):
        super().__init__(**kwargs)
        self.conv1 = Conv2D(32, 3, strides=2, padding="same", activation="relu")
        self.conv2 = Conv2D(32, 3, strides=2, padding="same", activation="relu")
        self.project = Dense(D_MODEL)
        self.position = SinusoidalPositionEncoding()
        self.encoder = [TransformerEncoderLayer(intermediate_dim=FFN, num_heads=HEADS) for _ in range(num_layers)]
        self.logits = Dense(vocab_size)

    def call(self, features, padding_mask, training=None):
        x = self.conv2(self.conv1(features[..., None]))
        shape = tf.shape(x)
        x = self.project(tf.reshape(x, [shape[0], shape[1], x.shape[2] * x.shape[3]]))
        x = x + self.position(x)
        for layer in self.encoder:
            x = layer(x, padding_mask=padding_mask, training=training)
        return self.logits(x)


def speech(args):
    examples, described = speech_examples(args)
    print(f"speech: {described}")
    dataset = audio.make_audio_dataset(
        examples.repeat(), batch_size=args.speech_batch, augment=audio.SpecAugment(), shuffle=True,
        shuffle_buffer=256, seed=0,
    )  # fmt: skip

    def with_labels(batch):
        labels, label_lengths = character_ids(batch["transcript"])
        return {**batch, "labels": labels, "label_lengths": label_lengths}

    dataset = dataset.map(with_labels, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)
    model = SpeechCTC(vocab_size=len(CHARACTERS) + 1)

    def loss_fn(model, batch):
        lengths = batch["feature_lengths"]
        out_lengths = (((lengths + 1) // 2) + 1) // 2  # two stride-2 "same" convolutions
        features = batch["features"]
        time_steps = (((tf.shape(features)[1] + 1) // 2) + 1) // 2
        mask = tf.sequence_mask(out_lengths, time_steps)
        logits = model(features, padding_mask=mask, training=True)
        loss = tf.nn.ctc_loss(
            batch["labels"], logits, batch["label_lengths"], out_lengths, logits_time_major=False, blank_index=0
        )
        return tf.reduce_mean(loss)

    step = make_step(model, loss_fn, dataset.element_spec, keras.optimizers.Adam(1e-4))
    step(next(iter(dataset)))  # builds the model and traces the step once
    print(
        f"speech: conv subsampling + 6-layer Transformer encoder + CTC, d_model {D_MODEL}, "
        f"{count_params(model):,} parameters; batch {args.speech_batch}"
    )
    return compare("speech", dataset, step, args.rounds, args.pipeline_batches, args.steps)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--apps", default="translation,speech")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--pipeline-batches", type=int, default=20, help="batches per pipeline measurement")
    parser.add_argument("--steps", type=int, default=4, help="training steps per step measurement")
    parser.add_argument("--translation-batch", type=int, default=None, help="default: the app's batch_size")
    parser.add_argument("--vocab-sentences", type=int, default=3000)
    parser.add_argument("--vocab-size", type=int, default=8000)
    parser.add_argument("--speech-batch", type=int, default=16)
    parser.add_argument("--speech-utterances", type=int, default=64)
    args = parser.parse_args(argv)
    keras.utils.set_random_seed(0)
    runs = {"translation": translation, "speech": speech}
    for app in args.apps.split(","):
        if app not in runs:
            parser.error(f"unknown app {app!r}; choose from {sorted(runs)}")
        runs[app](args)


if __name__ == "__main__":
    main()
