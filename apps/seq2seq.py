"""The shared engine of the text-to-text apps: data, model, training setup, decoding, evaluation, export.

An app (translation, summarization, ...) subclasses :class:`Seq2SeqApp` and
declares only what differs: which corpus (``task`` and the dataset's fields),
the target language (spacing rules and the BLEU tokenizer), the metric
(:meth:`Seq2SeqApp.score`), the trivial baseline it must beat
(:meth:`Seq2SeqApp.baseline`) and the names of its serving API. The data
flows one way through the engine::

    corpus (pipelines.tfds_sources)
      -> preprocessor (pipelines.preprocessing.TextPreprocessor: tokenize, markers, status)
      -> model (layers.transformer_models.Transformer: encode, decode)
      -> generator (layers.generation.TextGenerator: KV-cache, beam search)
      -> postprocessor (detokenize, spacing rules)

and the same preprocessor object builds the training batches
(``pipelines.text.make_seq2seq_dataset``), encodes the inputs of the Python
decoder (:class:`Seq2SeqDecoder`) and sits inside the exported SavedModel
(``apps.export.GenerationExport``).

Tokenizers are learned from the training split on first use and saved in the
run folder (``runs/<app>/<run>/tokenizers/{source,target}/``), so a checkpoint
and its vocabularies travel together; full-corpus vocabularies are also
cached under ``data/tokenizers/`` so later runs skip the learning.

``evaluate`` prints the model's metrics and, in the same run on the same
split, the baseline's (``copy_bleu`` ...), and the share of outputs caught
in a repetition loop; it writes ``evaluation.json`` (read by the release).
"""

from __future__ import annotations

import math

import hashlib
import json
import shutil
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, NamedTuple

import keras
import numpy as np
import tensorflow as tf

from apps import metrics as metrics_lib
from apps.app import App, Datasets
from apps.config import ConfigError, TrainConfig, option
from apps.export import BEAM_SIZES, WEIGHTS_DTYPES, SignatureNames
from apps.losses import MaskedAccuracy, SmoothedSequenceLoss
from layers.generation import TextGenerator
from layers.samplers import BeamSampler
from layers.t5 import T5
from layers.transformer_models import Transformer
from layers.validation import check_positive_float, check_positive_int
from pipelines import text as text_pipeline
from pipelines import tfds_sources
from pipelines.corpora import sources as corpora_sources
from pipelines.preprocessing import BLANK_STATUSES, TextPreprocessor
from pipelines.span_corruption import make_span_corruption_dataset, sentinel_tokens
from pipelines.wordpiece import WordpieceTokenizer, learn_wordpiece_vocab

__all__ = ["Seq2SeqApp", "Seq2SeqConfig", "Seq2SeqDecoder", "Tokenizers", "lr_schedule"]

# Inclusive upper lengths of the training buckets, in tokens; longer pairs form the last bucket.
BUCKETS = (7, 11, 15, 23, 31, 47, 63, 95)
TOKENIZER_FOLDER = "tokenizers"
# The learner binary-searches a count threshold from 10 up to this bound (its
# default bound, 1e7, only adds search rounds: an 8k vocabulary of a corpus this
# size needs a threshold of a few dozen at most; measured 4x faster learning).
LEARN_UPPER_THRESHOLD = 256
ARCHITECTURES = ("transformer", "t5")
OBJECTIVES = ("supervised", "span_corruption")


class Tokenizers(NamedTuple):
    """The source- and target-side tokenizers (``pipelines.wordpiece.WordpieceTokenizer`` each)."""

    source: object
    target: object


@dataclass
class Seq2SeqConfig(TrainConfig):
    """Hyperparameters every text-to-text app shares (an app's Config subclasses it and sets its defaults)."""

    dataset: str = option("", "TFDS dataset name (default: the app's offline corpus)")
    vocab_size: int = option(8000, "WordPiece vocabulary size (per language, or shared)")
    lower_case: bool = option(False, "lower-case and strip accents before WordPiece (hurts cased BLEU)")
    shared_vocab: bool = option(False, "one WordPiece vocabulary learned from both sides (source = target tokenizer)")
    share_embeddings: bool = option(False, "one embedding matrix for source, target and output (needs --shared-vocab)")
    tokenizer_dir: str = option("", "folder with source/ and target/ tokenizers (default: the run folder's)")
    max_source_length: int = option(96, "source tokens incl. [START]/[END]; longer training pairs are left out")
    max_target_length: int = option(96, "target tokens incl. [START]; longer training pairs are left out")
    batch_tokens: int = option(4096, "padded tokens per training batch (batch_size caps the examples)")
    validation_pairs: typing.Optional[int] = option(1000, "validation pairs scored for val_loss each epoch (none: all)")
    architecture: str = option("transformer", "transformer (chapter 5) or t5 (section 6.3: relative position bias, RMS norm)")
    gated_ffn: bool = option(False, "t5: gated-GELU FFN (T5 v1.1) instead of ReLU")
    task_prefix: str = option("", "text-to-text task prefix put before every input (T5: 'summarize: ')")
    sentinels: int = option(0, "sentinel tokens [X0].. reserved in the vocabulary (span corruption needs them)")
    objective: str = option("supervised", "supervised (input -> output pairs) or span_corruption (T5 pre-training)")
    noise_density: float = option(0.15, "span_corruption: share of tokens dropped")
    mean_span_length: float = option(3.0, "span_corruption: mean length of a dropped span")
    init_from: str = option("", "a .keras model of the same architecture whose weights start training (fine-tuning)")
    mix_tasks: str = option(
        "", "text-to-text multi-task: other text apps trained on at once with their task prefix (e.g. translation)"
    )
    mix_eval_inputs: int = option(500, "test inputs of each mixed task decoded and scored at evaluation")
    num_layers: int = option(4, "encoder layers and decoder layers (each)")
    hidden_dim: int = option(256, "d_model")
    num_heads: int = option(4, "attention heads")
    intermediate_dim: int = option(1024, "position-wise FFN width")
    dropout: float = option(0.1, "dropout rate")
    activation_dropout: typing.Optional[float] = option(None, "dropout on the FFN hidden units (none: --dropout)")
    normalize_first: bool = option(True, "pre-LN layers (stable with a high learning rate) instead of post-LN")
    position_encoding: str = option("learned", "learned or sinusoidal")
    model_max_length: int = option(128, "positions the model supports (learned position table)")
    label_smoothing: float = option(0.1, "label smoothing of the token cross-entropy")
    lr_schedule: str = option("cosine", "cosine (warmup, then cosine decay to 0 over all epochs) or inverse_sqrt")
    warmup_steps: int = option(800, "linear warmup steps")
    clipnorm: float = option(1.0, "gradient norm clipping (0 disables)")
    beam_size: int = option(4, "beam search width at evaluation and in serving_default (1 is greedy)")
    length_penalty: float = option(1.0, "beam search length normalisation exponent")
    no_repeat_ngram_size: int = option(0, "forbid repeating any n-gram of this size in an output (0 disables)")
    max_new_tokens: int = option(96, "most target tokens generated per input")
    length_ratio: float = option(
        2.0, "also stop an output at length_ratio * input tokens + 4 (0 disables; outputs about as long as inputs)"
    )
    eval_batch_size: int = option(64, "inputs per decoding call at evaluation")
    export_weights: str = option("float16", "how the SavedModel stores the weights: float16 (half the size) or float32")

    def __post_init__(self):
        super().__post_init__()
        for name, value, choices in (
            ("lr_schedule", self.lr_schedule, ("cosine", "inverse_sqrt")),
            ("position_encoding", self.position_encoding, ("learned", "sinusoidal")),
            ("architecture", self.architecture, ARCHITECTURES),
            ("objective", self.objective, OBJECTIVES),
            ("export_weights", self.export_weights, WEIGHTS_DTYPES),
        ):
            if value not in choices:
                raise ConfigError(f"{name} must be one of {list(choices)}, got {value!r}")
        for name in (
            "vocab_size", "max_source_length", "max_target_length", "batch_tokens", "num_layers", "hidden_dim",
            "num_heads", "intermediate_dim", "model_max_length", "warmup_steps", "beam_size", "max_new_tokens",
            "eval_batch_size",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        if self.validation_pairs is not None and (
            isinstance(self.validation_pairs, bool) or not isinstance(self.validation_pairs, int) or self.validation_pairs < 1
        ):
            raise ConfigError(f"validation_pairs must be a positive integer or none, got {self.validation_pairs!r}")
        if self.hidden_dim % self.num_heads:
            raise ConfigError(f"num_heads={self.num_heads} must divide hidden_dim={self.hidden_dim}")
        if self.max_source_length < 3:
            raise ConfigError(f"max_source_length must be >= 3 ([START] token [END]), got {self.max_source_length}")
        longest = max(self.max_source_length, self.max_target_length, self.max_new_tokens + 1)
        if self.architecture == "transformer" and self.position_encoding == "learned" and longest > self.model_max_length:
            raise ConfigError(
                f"model_max_length={self.model_max_length} is shorter than the longest sequence ({longest} tokens: "
                "max_source_length, max_target_length, max_new_tokens + 1); raise --model-max-length"
            )
        for name in ("dropout", "label_smoothing") + (("activation_dropout",) if self.activation_dropout is not None else ()):
            if not 0 <= getattr(self, name) < 1:
                raise ConfigError(f"{name} must be in [0, 1), got {getattr(self, name)}")
        if self.clipnorm < 0 or self.length_penalty < 0 or self.length_ratio < 0:
            raise ConfigError("clipnorm, length_penalty and length_ratio must be >= 0")
        if self.no_repeat_ngram_size < 0:
            raise ConfigError(f"no_repeat_ngram_size must be >= 0, got {self.no_repeat_ngram_size}")
        if self.share_embeddings and not self.shared_vocab:
            raise ConfigError("--share-embeddings needs --shared-vocab (one vocabulary for both sides)")
        if self.architecture == "t5" and not self.shared_vocab:
            raise ConfigError("--architecture t5 needs --shared-vocab: T5 has one embedding for input and output")
        if self.objective == "span_corruption" and self.sentinels < 1:
            raise ConfigError("--objective span_corruption needs --sentinels N (N >= 1 tokens [X0].. to mark spans)")
        if self.sentinels < 0:
            raise ConfigError(f"sentinels must be >= 0, got {self.sentinels}")
        if not 0 < self.noise_density < 1 or self.mean_span_length < 1:
            raise ConfigError("noise_density must be in (0, 1) and mean_span_length >= 1")
        if self.mix_tasks and not (self.shared_vocab and self.task_prefix):
            raise ConfigError("--mix-tasks needs --shared-vocab and a --task-prefix (each task is named by its prefix)")
        if self.init_from and not self.init_from.endswith(".keras"):
            raise ConfigError(f"--init-from must name a .keras model written by `tfsuite train`, got {self.init_from!r}")


def lr_schedule(config, total_steps):
    """The config's learning-rate schedule: warmup then cosine decay to 0, or Vaswani's inverse square root."""
    if config.lr_schedule == "cosine":
        warmup = max(1, min(int(config.warmup_steps), max(1, total_steps - 1)))
        return keras.optimizers.schedules.CosineDecay(
            0.0, decay_steps=max(1, total_steps - warmup), warmup_target=config.learning_rate, warmup_steps=warmup
        )
    return InverseSqrtSchedule(config.learning_rate, config.warmup_steps)


@keras.saving.register_keras_serializable(package="tfsuite")
class InverseSqrtSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """``lr(s) = peak * min(s / w, sqrt(w / s))`` (section 5.1's warmup then ``1/sqrt(step)`` decay).

    Args:
        peak: float > 0, rate at step ``w``.
        warmup_steps: int >= 1, ``w``.
    """

    def __init__(self, peak, warmup_steps):
        self.peak = check_positive_float("peak", peak)
        self.warmup_steps = check_positive_int("warmup_steps", warmup_steps)

    def __call__(self, step):
        step = keras.ops.maximum(keras.ops.cast(step, "float32") + 1.0, 1.0)
        warmup = float(self.warmup_steps)
        return self.peak * keras.ops.minimum(step / warmup, keras.ops.sqrt(warmup / step))

    def get_config(self):
        return {"peak": self.peak, "warmup_steps": self.warmup_steps}


def _bucket_width(length, widths):
    for width in widths:
        if length <= width:
            return width
    return widths[-1]


def output_limits(input_lengths, max_new_tokens, length_ratio):
    """Per input, the most tokens an output may have: ``min(max_new_tokens, ratio * length + 4)`` (ratio 0: no rule)."""
    input_lengths = np.asarray(input_lengths)
    if not length_ratio:
        return np.full(input_lengths.shape, max_new_tokens, np.int32)
    return np.minimum(max_new_tokens, np.ceil(length_ratio * input_lengths).astype(np.int32) + 4).astype(np.int32)


class Seq2SeqDecoder:
    """Batched decoding of Python strings with a trained encoder-decoder model (the Keras path).

    Inputs go through the preprocessor's graph code (the exported graph's),
    are sorted by length and decoded in batches whose source is cut to a
    bucket width, with an XLA-compiled ``TextGenerator`` per width and beam
    size, so a test split costs a handful of traces.

    Args:
        model: the trained ``layers.transformer_models.Transformer``.
        preprocessor: ``pipelines.preprocessing.TextPreprocessor``.
        beam_size: int >= 1 (1 is greedy search). Default 4.
        max_new_tokens: int, most tokens per output. Default 96.
        length_ratio: float, the per-input output limit of :func:`output_limits`. Default 2.0.
        length_penalty, no_repeat_ngram_size: as ``TextGenerator`` / ``BeamSampler``.
        batch_size: int, inputs per decode call. Default 64.
        jit_compile: bool, compile the decode loops with XLA. Default True.

    Call: ``decoder(texts, beam_size=None, max_length=None)`` -> list of str;
    :meth:`decode` also returns each row's status.
    """

    def __init__(
        self, model, preprocessor, beam_size=4, max_new_tokens=96, length_ratio=2.0, length_penalty=1.0,
        no_repeat_ngram_size=0, batch_size=64, jit_compile=True,
    ):
        self.model = model
        self.preprocessor = preprocessor
        self.beam_size = check_positive_int("beam_size", beam_size)
        self.max_new_tokens = check_positive_int("max_new_tokens", max_new_tokens)
        self.length_ratio = float(length_ratio)
        self.length_penalty = float(length_penalty)
        self.no_repeat_ngram_size = int(no_repeat_ngram_size)
        self.batch_size = check_positive_int("batch_size", batch_size)
        self.jit_compile = bool(jit_compile)
        length = getattr(preprocessor, "source_length", 1)  # an ImagePreprocessor's inputs have no length
        self.widths = sorted({min(2**k, length) for k in range(3, 12)} | {length})
        self._generators = {}

    def generator(self, width, beams):
        """The ``TextGenerator`` for sources of ``width`` tokens and ``beams`` beams."""
        new_tokens = int(output_limits([width], self.max_new_tokens, self.length_ratio)[0])
        key = (new_tokens, beams)
        if key not in self._generators:
            self._generators[key] = TextGenerator(
                self.model,
                sampler=BeamSampler(beams, self.length_penalty),
                max_new_tokens=new_tokens,
                end_token_id=self.preprocessor.end_id,
                pad_token_id=self.preprocessor.pad_id,
                cache_length=new_tokens + 1,
                jit_compile=self.jit_compile,
                no_repeat_ngram_size=self.no_repeat_ngram_size,
            )
        return self._generators[key]

    def decode(self, texts, beam_size=None, max_length=None):
        """``(outputs, statuses)``: the decoded text and the preprocessor's status of each input."""
        if not len(texts):
            return [], []
        beams = check_positive_int("beam_size", beam_size or self.beam_size)
        longest = check_positive_int("max_length", max_length or self.max_new_tokens)
        if getattr(self.preprocessor, "input_kind", "text") != "text":  # image or audio bytes
            return self._decode_images(list(texts), beams, longest)
        texts = [str(t) for t in texts]
        inputs, status = self.preprocessor.encoder_inputs(tf.constant(texts, tf.string))
        ids, mask = inputs["encoder_inputs"].numpy(), inputs["encoder_padding_mask"].numpy()
        statuses = [s.decode() for s in status.numpy()]
        lengths = mask.sum(axis=1)
        limits = np.minimum(output_limits(lengths, self.max_new_tokens, self.length_ratio), longest)
        order = np.argsort(lengths, kind="stable")
        results = [None] * len(texts)
        for begin in range(0, len(texts), self.batch_size):
            chosen = order[begin : begin + self.batch_size]
            width = _bucket_width(int(lengths[chosen].max()), self.widths)
            # A full-size batch always: the last one is padded with copies, so a loop is traced once per width.
            padded = np.resize(chosen, self.batch_size) if len(chosen) < self.batch_size else chosen
            generator = self.generator(width, beams)
            start = np.full((len(padded), 1), self.preprocessor.start_id, np.int32)
            outputs = generator(
                start,
                encoder_inputs={"encoder_inputs": ids[padded, :width], "encoder_padding_mask": mask[padded, :width]},
                max_new_tokens=np.minimum(limits[padded], generator.max_new_tokens),
            )
            decoded = self.preprocessor.decode(tf.constant(outputs["token_ids"][:, 1:])).numpy()
            for index, text in zip(chosen, decoded[: len(chosen)]):
                results[index] = "" if statuses[index] in BLANK_STATUSES else text.decode("utf-8")
        return results, statuses

    def _decode_images(self, images, beams, longest):
        """Encoded images or audio (bytes) in full-size batches (the last padded with copies).

        One trace per beam size (images), or per beam size and padded frame count (audio).
        """
        generator = self.generator(1, beams)
        limit = min(longest, generator.max_new_tokens)
        results, statuses = [], []
        for begin in range(0, len(images), self.batch_size):
            chunk = [bytes(image) for image in images[begin : begin + self.batch_size]]
            padded = chunk + [chunk[-1]] * (self.batch_size - len(chunk))
            pixels, status = self.preprocessor.encoder_inputs(tf.constant(padded, tf.string))
            start = np.full((len(padded), 1), self.preprocessor.start_id, np.int32)
            inputs = pixels if isinstance(pixels, dict) else {"encoder_inputs": pixels}
            outputs = generator(start, encoder_inputs=inputs, max_new_tokens=np.full(len(padded), limit, np.int32))
            decoded = self.preprocessor.decode(tf.constant(outputs["token_ids"][:, 1:])).numpy()
            for text, state in zip(decoded[: len(chunk)], status.numpy()[: len(chunk)]):
                statuses.append(state.decode())
                results.append("" if statuses[-1] in BLANK_STATUSES else text.decode("utf-8"))
        return results, statuses

    def __call__(self, texts, beam_size=None, max_length=None):
        return self.decode(texts, beam_size, max_length)[0]


class Seq2SeqApp(App):
    """Base of the text-to-text apps: the engine; subclasses declare the task (see the module docstring).

    Class attributes to set:
        task: str, the ``pipelines.tfds_sources`` app of the corpus (``"translation"``).
        source_field, target_field: str, the corpus fields of input and output.
        default_dataset: str, the offline corpus.
        names: ``apps.export.SignatureNames`` of the release's API.
        baseline_name: str, the prefix of the baseline's metrics (``"copy"``).
    """

    task: ClassVar[str]
    source_field: ClassVar[str] = "source"
    target_field: ClassVar[str] = "target"
    default_dataset: ClassVar[str]
    names: ClassVar[SignatureNames] = SignatureNames()
    baseline_name: ClassVar[str] = "baseline"
    buckets: ClassVar[tuple] = BUCKETS
    # The input prefix that names this task when another app mixes it in (T5's text-to-text format).
    mix_prefix: ClassVar[str] = ""
    # The demo tab (a text box in, the output text out, beam size and length sliders).
    input_label: ClassVar[str] = "Input"
    output_label: ClassVar[str] = "Output"
    max_input_characters: ClassVar[int] = 1000
    fallback_examples: ClassVar[tuple] = ()
    monitor = "val_loss"
    monitor_mode = "min"
    supports_tflite = True
    streaming = True

    def __init__(self):
        self._tokenizers = {}
        self._texts = {}

    # --- what an app declares -----------------------------------------------------------

    def dataset_name(self, config):
        """The TFDS name the config selects (``--dataset``, else :attr:`default_dataset`)."""
        return config.dataset or self.default_dataset

    def language(self, config):
        """Target language code (spacing rules, BLEU tokenizer), or None."""
        return None

    def score(self, hypotheses, references, config):
        """The app's metrics of ``hypotheses`` against ``references`` (a dict)."""
        raise NotImplementedError

    def metric_settings(self, config):
        """How :meth:`score` scored, for the evaluation record (default: sacrebleu's BLEU and chrF signatures)."""
        language = self.language(config) or "en"
        return {"signatures": metrics_lib.signatures(language), "bleu_tokenizer": metrics_lib.bleu_tokenizer(language)}

    def baseline(self, sources, config):
        """The trivial outputs the model must beat, one per source (copy, lead sentence, ...)."""
        raise NotImplementedError

    def output_statistics(self, hypotheses, sources, references, config):
        """Extra figures of the model's outputs (for example how abstractive they are); default none."""
        return {}

    def record_sources(self, sources):
        """The inputs as the evaluation record and the release check store them (JSON); default as they are."""
        return sources

    # --- data ---------------------------------------------------------------------------

    def source_of(self, config):
        """The ``pipelines.tfds_sources`` source (dataset name and feature mapping)."""
        return tfds_sources.get_source(self.task, self.dataset_name(config))

    def data_version(self, config):
        """``"<tfds name>:<version>"`` of the data a run reads, for the release manifest."""
        source = self.source_of(config)
        builder = tfds_sources._builder(source, None)  # noqa: SLF001 - same builder load_examples reads
        return f"{source.dataset}:{builder.info.version}"

    def examples(self, config, split):
        """``split`` as a ``tf.data.Dataset`` of ``{source_field, target_field}`` strings (first ``limit``)."""
        ds = tfds_sources.load_examples(self.task, self.dataset_name(config), split=split)
        return ds.take(config.limit) if config.limit is not None else ds

    def load_texts(self, config, split):
        """``(sources, targets)`` of ``split`` as lists of str."""
        key = (self.dataset_name(config), split, config.limit)
        if key not in self._texts:
            sources, targets = [], []
            for batch in self.examples(config, split).batch(4096).as_numpy_iterator():
                sources.extend(s.decode("utf-8") for s in batch[self.source_field])
                targets.extend(t.decode("utf-8") for t in batch[self.target_field])
            if not sources:
                raise ValueError(f"split {split!r} of {self.dataset_name(config)} is empty (limit={config.limit})")
            self._texts[key] = (sources, targets)
        return self._texts[key]

    def _texts_dataset(self, config, split, count=None):
        sources, targets = self.load_texts(config, split)
        if count is not None:
            sources, targets = sources[:count], targets[:count]
        return tf.data.Dataset.from_tensor_slices({self.source_field: sources, self.target_field: targets})

    # --- tokenizers and preprocessor --------------------------------------------------------

    def tokenizer_dir(self, config):
        """``--tokenizer-dir``, else the ``--init-from`` model's, else ``runs/<app>/<run>/tokenizers``."""
        from apps.trainer import run_dir

        if config.tokenizer_dir:
            return config.tokenizer_dir
        if config.init_from and (Path(config.init_from).parent / TOKENIZER_FOLDER).is_dir():
            # Fine-tuning reads the vocabulary the starting weights were trained with.
            return str(Path(config.init_from).parent / TOKENIZER_FOLDER)
        return str(run_dir(self, config) / TOKENIZER_FOLDER)

    def _own_tokenizer_dir(self, config):
        from apps.trainer import run_dir

        return str(run_dir(self, config) / TOKENIZER_FOLDER)

    def tokenizers(self, config):
        """The run's :class:`Tokenizers`, learned and saved on first use."""
        directory = self.tokenizer_dir(config)
        if directory not in self._tokenizers:
            given = config.tokenizer_dir or directory != self._own_tokenizer_dir(config)
            self._tokenizers[directory] = load_tokenizers(directory) if given else self._load_or_learn(config, directory)
        return self._tokenizers[directory]

    def _cache_dir(self, config, side):
        settings = {
            "kind": "wordpiece", "dataset": self.dataset_name(config), "side": "shared" if config.shared_vocab else side,
            "vocab_size": config.vocab_size, "lower_case": config.lower_case, "limit": config.limit,
            **({"sentinels": config.sentinels} if config.sentinels else {}),
            **({"mix_tasks": config.mix_tasks} if config.mix_tasks else {}),
        }
        digest = hashlib.sha1(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:10]
        root = corpora_sources.data_dir().parent / TOKENIZER_FOLDER
        return root / self.dataset_name(config).replace("/", "_") / f"{settings['side']}-{digest}"

    def _learn(self, texts, config):
        vocab = learn_wordpiece_vocab(
            texts, vocab_size=config.vocab_size, lower_case=config.lower_case, upper_thresh=LEARN_UPPER_THRESHOLD,
            extra_reserved_tokens=sentinel_tokens(config.sentinels),
        )
        # The learner keeps whitespace pieces such as "\xa0" (no-break space in
        # catalogue strings), which the tokenizer rejects; they carry no text.
        vocab = [token for token in vocab if token and token == token.strip()]
        return WordpieceTokenizer(vocab, lower_case=config.lower_case)

    def _load_or_learn(self, config, directory):
        """Tokenizers under ``directory``; else the ``data/tokenizers/`` cache; else learned from the training split.

        With ``shared_vocab`` one vocabulary is learned from both sides: names,
        numbers and untranslated terms get the same ids, so the model can copy them.
        """
        directory = Path(directory)
        if all((directory / side).is_dir() for side in Tokenizers._fields):
            return load_tokenizers(directory)
        sides = ("shared",) if config.shared_vocab else Tokenizers._fields
        learned = {}
        for side in sides:
            cache = self._cache_dir(config, side)
            if config.limit is None and cache.is_dir():
                learned[side] = WordpieceTokenizer.load(cache)
                continue
            learned[side] = self._learn(self._vocabulary_texts(config, side), config)
            if config.limit is None:
                learned[side].save(cache)
        for side in Tokenizers._fields:
            learned.get(side, learned.get("shared")).save(directory / side)
        return load_tokenizers(directory)

    def preprocessor(self, config, tokenizers=None, prefix=None):
        """The :class:`~pipelines.preprocessing.TextPreprocessor` of the config (pipeline, decoder and export)."""
        source, target = tokenizers or self.tokenizers(config)
        return TextPreprocessor(
            source, target, config.max_source_length, config.max_target_length,
            language=self.language(config), input_name=self.names.input,
            prefix=config.task_prefix if prefix is None else prefix,
        )

    def sentinel_ids(self, config):
        """Ids of the vocabulary's ``[X0] ..`` sentinel tokens (span corruption)."""
        vocab = list(self.tokenizers(config).source.vocab)
        missing = [token for token in sentinel_tokens(config.sentinels) if token not in vocab]
        if missing:
            raise ValueError(
                f"the tokenizers under {self.tokenizer_dir(config)} have no {config.sentinels} sentinel tokens; "
                "learn them with --sentinels N (a new run folder or --tokenizer-dir)"
            )
        return [vocab.index(token) for token in sentinel_tokens(config.sentinels)]

    def pretraining_texts(self, config, split):
        """Texts for span corruption: the split's inputs and outputs (the corpus's own English)."""
        sources, targets = self.load_texts(config, split)
        return sources + targets

    # --- text-to-text multi-task (--mix-tasks) -------------------------------------------------

    def mixed_tasks(self, config):
        """``[(app, its default config)]`` of ``--mix-tasks``: trained beside this app, each named by its prefix."""
        from apps.registry import get_app

        tasks = []
        for name in [n.strip() for n in config.mix_tasks.split(",") if n.strip()]:
            app = get_app(name)
            if not isinstance(app, Seq2SeqApp) or not app.mix_prefix or name == self.name:
                raise ValueError(f"--mix-tasks: {name!r} is not another text-to-text app with a task prefix")
            tasks.append((app, app.Config(limit=config.limit)))
        return tasks

    def _mixed_preprocessor(self, app, app_config, config):
        source, target = self.tokenizers(config)
        return TextPreprocessor(source, target, config.max_source_length, config.max_target_length,
                                language=app.language(app_config), input_name=self.names.input, prefix=app.mix_prefix)

    def _vocabulary_texts(self, config, side):
        sources, targets = self.load_texts(config, "train")
        texts = {"shared": sources + targets, "source": sources, "target": targets}[side]
        for app, app_config in self.mixed_tasks(config):
            texts = texts + [t for pair in zip(*app.load_texts(app_config, "train")) for t in pair]
        return texts

    # --- datasets ---------------------------------------------------------------------------

    def _dataset(self, config, split, training=False):
        count = config.validation_pairs if split == "validation" else None
        if config.objective == "span_corruption":
            texts = self.pretraining_texts(config, split)[:count]
            return make_span_corruption_dataset(
                tf.data.Dataset.from_tensor_slices({"text": texts}), "text", self.preprocessor(config, prefix=""),
                self.sentinel_ids(config), batch_size=config.batch_size, batch_tokens=config.batch_tokens,
                buckets=self.buckets, noise_density=config.noise_density, mean_span_length=config.mean_span_length,
                shuffle=training, seed=config.seed, shuffle_buffer=max(1, len(texts)),
            )
        return text_pipeline.make_seq2seq_dataset(
            self._texts_dataset(config, split, count), self.source_field, self.target_field,
            preprocessor=self.preprocessor(config), long_pairs="drop", batch_size=config.batch_size,
            batch_tokens=config.batch_tokens, buckets=self.buckets, shuffle=training, seed=config.seed,
            deterministic=config.deterministic or not training, cache=True,
            shuffle_buffer=max(1, len(self.load_texts(config, split)[0])),
        )

    def _mixed_train(self, config):
        """The training batches of this task and every ``--mix-tasks`` task, mixed by their sizes.

        Examples-proportional mixing (T5, section 3.5.2) at the level of
        batches: each batch holds one task's pairs, length-bucketed as usual.
        """
        datasets, sizes = [self._dataset(config, "train", training=True)], [len(self.load_texts(config, "train")[0])]
        for app, app_config in self.mixed_tasks(config):
            sources, targets = app.load_texts(app_config, "train")
            pairs = tf.data.Dataset.from_tensor_slices({self.source_field: sources, self.target_field: targets})
            datasets.append(text_pipeline.make_seq2seq_dataset(
                pairs, self.source_field, self.target_field, preprocessor=self._mixed_preprocessor(app, app_config, config),
                long_pairs="drop", batch_size=config.batch_size, batch_tokens=config.batch_tokens, buckets=self.buckets,
                shuffle=True, seed=config.seed, deterministic=config.deterministic, cache=True,
                shuffle_buffer=max(1, len(sources)),
            ))
            sizes.append(len(sources))
        if len(datasets) == 1:
            return datasets[0]
        weights = [size / sum(sizes) for size in sizes]
        return tf.data.Dataset.sample_from_datasets(datasets, weights, seed=config.seed, stop_on_empty_dataset=True)

    def build_datasets(self, config):
        return Datasets(
            train=self._mixed_train(config) if config.mix_tasks and config.objective == "supervised"
            else self._dataset(config, "train", training=True),
            validation=self._dataset(config, "validation"),
            test=self._dataset(config, "test"),
        )

    # --- model --------------------------------------------------------------------------------

    def build_model(self, config):
        """The config's ``Transformer`` (chapter 5) or ``T5`` (section 6.3); ``--init-from`` weights if given."""
        tokenizers = self.tokenizers(config)
        common = dict(
            max_length=config.model_max_length, num_layers=config.num_layers, hidden_dim=config.hidden_dim,
            num_heads=config.num_heads, intermediate_dim=config.intermediate_dim, dropout=config.dropout,
        )
        if config.architecture == "t5":
            model = T5(
                tokenizers.target.vocab_size, **common, activation="gelu" if config.gated_ffn else "relu",
                use_gated_activation=config.gated_ffn, name=f"{self.name}_t5",
            )
        else:
            common["num_encoder_layers"] = common["num_decoder_layers"] = common.pop("num_layers")
            model = Transformer(
                encoder_vocab_size=tokenizers.source.vocab_size, decoder_vocab_size=tokenizers.target.vocab_size,
                **common, activation_dropout=config.activation_dropout, share_embeddings=config.share_embeddings,
                normalize_first=config.normalize_first, position_encoding=config.position_encoding,
                name=f"{self.name}_transformer",
            )
        model.build()
        if config.init_from:
            from apps.trainer import load_checkpoint

            start = load_checkpoint(config.init_from)
            shapes = [tuple(w.shape) for w in start.weights]
            if shapes != [tuple(w.shape) for w in model.weights]:
                raise ValueError(
                    f"--init-from {config.init_from} holds a {type(start).__name__} whose weights do not match this "
                    f"config's {type(model).__name__} (same --architecture, sizes and tokenizers needed)"
                )
            model.set_weights(start.get_weights())
        return model

    def compile_kwargs(self, config):
        total = config.epochs * self.steps_per_epoch(config, None)
        optimizer = keras.optimizers.Adam(
            lr_schedule(config, total), beta_1=0.9, beta_2=0.98, epsilon=1e-9, clipnorm=config.clipnorm or None
        )
        return {"optimizer": optimizer, "loss": SmoothedSequenceLoss(config.label_smoothing), "metrics": [MaskedAccuracy()]}

    def target_texts(self, config, split):
        """The ``target_field`` texts of ``split`` (list of str), read without decoding the inputs (images, audio)."""
        key = ("targets", self.dataset_name(config), split, config.limit)
        if key not in self._texts:
            ds = self.examples(config, split).map(lambda example: example[self.target_field])
            self._texts[key] = [t.decode("utf-8") for batch in ds.batch(4096).as_numpy_iterator() for t in batch]
            if not self._texts[key]:
                raise ValueError(f"split {split!r} of {self.dataset_name(config)} is empty (limit={config.limit})")
        return self._texts[key]

    def batches_per_pass(self, config):
        """Steps of one pass when each batch holds ``batch_size`` examples (the file-input apps)."""
        if config.steps_per_epoch is not None:
            return config.steps_per_epoch
        return max(1, math.ceil(len(self.target_texts(config, "train")) / config.batch_size))

    def steps_per_epoch(self, config, train=None):
        """``steps_per_epoch``, else the batches of one pass (counted once per config)."""
        if config.steps_per_epoch is not None:
            return config.steps_per_epoch
        key = ("steps", self.dataset_name(config), config.limit, config.batch_size, config.batch_tokens,
               config.max_source_length, config.max_target_length, self.tokenizer_dir(config))
        if key not in self._texts:
            self._texts[key] = super().steps_per_epoch(config, train or self._dataset(config, "train"))
        return self._texts[key]

    # --- decoding and evaluation --------------------------------------------------------------

    def decoder(self, model, config):
        """The Python decoder (:class:`Seq2SeqDecoder`) with the config's settings."""
        return Seq2SeqDecoder(
            model, self.preprocessor(config), beam_size=config.beam_size, max_new_tokens=config.max_new_tokens,
            length_ratio=config.length_ratio, length_penalty=config.length_penalty,
            no_repeat_ngram_size=config.no_repeat_ngram_size, batch_size=config.eval_batch_size,
        )

    def generate(self, model, config, texts, beam_size=None, max_length=None):
        """Decode ``texts`` (list of str) with the Keras model; list of str."""
        key = (id(model), self.tokenizer_dir(config), config.beam_size, config.max_new_tokens, config.length_ratio,
               config.length_penalty, config.no_repeat_ngram_size, config.eval_batch_size)
        decoders = self.__dict__.setdefault("_decoders", {})
        if key not in decoders:
            decoders[key] = (model, self.decoder(model, config))  # the model kept alive with its decoder
        return decoders[key][1](texts, beam_size, max_length)

    def _score_all(self, generate_batch, label, config, batch_size=None):
        """Model and baseline on the test split, in one run: metrics, and the evaluation record."""
        sources, references = self.load_texts(config, "test")
        scorer = lambda hypotheses: self.score(hypotheses, references, config)  # noqa: E731
        scores, hypotheses, seconds = metrics_lib.score_generations(
            generate_batch, sources, scorer, label, batch_size or config.eval_batch_size
        )
        baseline = self.score(self.baseline(sources, config), references, config)
        results = {
            **scores,
            **{f"{self.baseline_name}_{name}": value for name, value in baseline.items()},
            "repetition_rate": metrics_lib.repetition_rate(hypotheses),
            "reference_repetition_rate": metrics_lib.repetition_rate(references),
            **self.output_statistics(hypotheses, sources, references, config),
        }
        record = {
            "metrics": results,
            "generated_by": label,
            **self.metric_settings(config),
            "dataset": self.dataset_name(config),
            "data_version": self.data_version(config) if config.limit is None else None,
            "test_inputs": len(sources),
            "beam_size": config.beam_size,
            "max_new_tokens": config.max_new_tokens,
            "decode_seconds": round(seconds, 1),
            "examples": [
                {"source": s, "reference": r, "output": h}
                for s, r, h in list(zip(self.record_sources(sources[:5]), references, hypotheses))[:5]
            ],
        }
        # The fixed slice a release's test re-scores (tests/apps/release_checks.py).
        head = slice(0, self.check_slice)
        check = {
            "split": f"test[:{self.check_slice}]",
            "metrics": self.score(hypotheses[head], references[head], config),
            "sources": self.record_sources(sources[head]), "references": references[head], "outputs": hypotheses[head],
        }
        return results, record, check

    def evaluate(self, model, config):
        """Test-split metrics of the Keras model through :class:`Seq2SeqDecoder`, and the baseline's.

        Also writes ``<run folder>/evaluation.json`` (read by the release).
        """
        from apps.trainer import _with_cardinality, run_dir

        if config.objective == "span_corruption":
            # A pre-training run is judged by how well it fills in the test split's dropped spans.
            test = _with_cardinality(self._dataset(config, "test"))
            loss, accuracy = model.evaluate(test, verbose=0, return_dict=False)
            return {"span_loss": float(loss), "span_accuracy": float(accuracy)}
        label = f"Keras model, beam {config.beam_size}"
        results, record, _ = self._score_all(lambda batch: self.generate(model, config, batch), label, config)
        for app, app_config in self.mixed_tasks(config) if config.objective == "supervised" else ():
            mixed = self._score_mixed(model, config, app, app_config)
            results.update(mixed)
            record["metrics"].update(mixed)
        metrics_lib.write_evaluation(run_dir(self, config), record)
        return results

    def _score_mixed(self, model, config, app, app_config):
        """A mixed-in task's metrics and baseline on its test split (``--mix-eval-inputs`` of them), keys ``<app>_...``."""
        sources, references = app.load_texts(app_config, "test")
        sources, references = sources[:config.mix_eval_inputs], references[:config.mix_eval_inputs]
        decoder = Seq2SeqDecoder(
            model, self._mixed_preprocessor(app, app_config, config), beam_size=config.beam_size,
            max_new_tokens=config.max_new_tokens, length_ratio=app_config.length_ratio,
            length_penalty=config.length_penalty, no_repeat_ngram_size=config.no_repeat_ngram_size,
            batch_size=config.eval_batch_size,
        )
        scores, _, _ = metrics_lib.score_generations(
            decoder, sources, lambda hyps: app.score(hyps, references, app_config), f"{app.name} (mixed task)",
            config.eval_batch_size,
        )
        baseline = app.score(app.baseline(sources, app_config), references, app_config)
        return {
            **{f"{app.name}_{k}": v for k, v in scores.items()},
            **{f"{app.name}_{app.baseline_name}_{k}": v for k, v in baseline.items()},
        }

    def evaluate_saved_model(self, version_dir, config, record=False):
        """Test-split metrics of a released SavedModel's ``serving_default`` (what TF Serving answers).

        With ``record``, the figures go into the release: the evaluation record
        as ``release_evaluation`` in its MANIFEST.json entry, and the first
        ``check_slice`` test inputs with their outputs and metrics as
        ``checks/<version>.json`` (re-scored by the release's test).
        """
        from apps.releases import ReleasedModel, record_release_evaluation, recorded_manifest

        if record:
            recorded_manifest(version_dir)  # before the evaluation, not after it
        released = ReleasedModel(version_dir)

        def generate_batch(batch):
            raw = [t.encode("utf-8") if isinstance(t, str) else bytes(t) for t in batch]  # text, or image bytes
            outputs = released({self.names.input: np.array(raw, dtype=object)})
            return [t.decode("utf-8") for t in outputs[self.names.output]]

        results, evaluation, check = self._score_all(generate_batch, f"SavedModel {version_dir}", config)
        if record:
            for path in record_release_evaluation(version_dir, evaluation, check):
                print(f"recorded {path}", flush=True)
        return results

    def evaluate_tflite(self, release_dir, kind, config):
        """Test-split metrics of the release's TFLite ``kind`` (``"float"`` / ``"int8"``) model."""
        from apps.export import TFLITE_FILES, TFLITE_FOLDER, TFLiteRunner

        if kind not in TFLITE_FILES:
            raise ValueError(f"TFLite model must be one of {sorted(TFLITE_FILES)}, got {kind!r}")
        path = Path(release_dir) / TFLITE_FOLDER / TFLITE_FILES[kind]
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found; convert the release first: `tfsuite export {self.name} --format tflite`")
        runner = TFLiteRunner(path)
        label = f"TFLite {kind} ({path.name}, {path.stat().st_size / 1e6:.1f} MB)"
        return self._score_all(lambda batch: runner(batch)[self.names.output], label, config)[0]

    # --- export --------------------------------------------------------------------------------

    def generation_export(self, model, config, tokenizers=None):
        """The release graph: ``apps.export.GenerationExport`` with the config's decoding settings."""
        from apps.export import GenerationExport

        return GenerationExport(
            model, self.preprocessor(config, tokenizers), names=self.names, max_new_tokens=config.max_new_tokens,
            num_beams=config.beam_size, beam_sizes=tuple(range(1, max(BEAM_SIZES + (config.beam_size,)) + 1)),
            length_penalty=config.length_penalty, no_repeat_ngram_size=config.no_repeat_ngram_size,
            length_ratio=config.length_ratio, weights_dtype=config.export_weights,
        )

    def serving_signature(self, config):
        return {self.names.input: tf.TensorSpec((None,), tf.string)}

    def serving_outputs(self, model, inputs, config):
        return self.generation_export(model, config).serving_default(inputs[self.names.input])

    def serving_example(self, config):
        sources, _ = self.load_texts(config, "test")
        return {self.names.input: np.array(sources[:8], dtype=object)}

    def write_saved_model(self, model, config, directory):
        from apps.export import write_generation_saved_model

        return write_generation_saved_model(self.generation_export(model, config), directory)

    def export_tflite(self, saved_model_dir, output_dir):
        from apps.export import write_tflite

        return write_tflite(saved_model_dir, output_dir)

    # --- UI (apps/ui.py builds the streaming tab) ------------------------------------------------

    def ui_inputs(self, releases=None):
        """The input text, beam size and maximum length (ranges from the release)."""
        import gradio as gr

        settings = self._ui_settings(releases)
        return [
            gr.Textbox(label=self.input_label, lines=6, placeholder=f"Type or paste the {self.input_label.lower()}"),
            gr.Slider(min(settings["beam_sizes"]), max(settings["beam_sizes"]), value=settings["num_beams"], step=1,
                      label="Beam size (1 = greedy search)"),
            gr.Slider(1, settings["max_new_tokens"], value=settings["max_new_tokens"], step=1,
                      label="Max length (word pieces)"),
        ]

    def ui_outputs(self):
        import gradio as gr

        return [gr.Textbox(label=self.output_label, lines=3)]

    def _ui_settings(self, releases):
        if releases and releases.settings:
            return next(iter(releases.settings.values()))
        config = self.Config()
        return {"beam_sizes": list(range(1, max(BEAM_SIZES) + 1)), "num_beams": config.beam_size,
                "max_new_tokens": config.max_new_tokens}

    def file_examples(self, cache_dir, releases, suffix):
        """Demo rows for a file input (images, recordings): the first test inputs written under ``cache_dir``."""
        from pathlib import Path

        settings = self._ui_settings(releases)
        try:
            inputs = self.load_texts(self.Config(limit=3), "test")[0]
        except Exception:  # noqa: BLE001 - a demo without the built corpus shows no examples
            return []
        rows = []
        for i, data in enumerate(inputs):
            path = Path(cache_dir) / f"{self.name}_example_{i}{suffix}"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
            rows.append([str(path), settings["num_beams"], settings["max_new_tokens"]])
        return rows

    def ui_examples(self, cache_dir, releases=None):
        """Short test-split inputs when the corpus is built, else the app's fixed ones."""
        try:
            texts = sorted(self.load_texts(self.Config(), "test")[0][:200], key=len)[:3]
        except Exception:  # noqa: BLE001 - a demo without the built corpus still shows examples
            texts = []
        settings = self._ui_settings(releases)
        return [[text, settings["num_beams"], settings["max_new_tokens"]] for text in texts or self.fallback_examples]

    def check_text(self, text):
        """The UI's text, whitespace-normalised; ValueError with a message for the user when empty or too long."""
        if text is None or not str(text).strip():
            raise ValueError(f"Nothing to work on: type the {self.input_label.lower()}.")
        text = " ".join(str(text).split())
        if len(text) > self.max_input_characters:
            raise ValueError(
                f"The text is {len(text)} characters long; the model reads at most {self.max_input_characters} "
                "characters at a time: split it into parts."
            )
        return text

    def check_options(self, beam_size, max_length):
        for name, value in (("Beam size", beam_size), ("Max length", max_length)):
            if value is None or int(value) != value or int(value) < 1:
                raise ValueError(f"{name} must be a whole number of at least 1, got {value}.")
        return int(beam_size), int(max_length)

    def preprocess(self, text, beam_size=4, max_length=32):
        """UI values -> a ``GenerationReleases`` request; ValueError with a message for the user on bad input."""
        beam_size, max_length = self.check_options(beam_size, max_length)
        return {"choice": self.name, "input": self.check_text(text), "beam_size": beam_size, "max_length": max_length}

    def postprocess(self, outputs):
        """A signature's outputs -> the first output text (``str``)."""
        first = np.asarray(outputs[self.names.output]).reshape(-1)[0]
        return first.decode("utf-8") if isinstance(first, bytes) else str(first)

    def load_release(self, models_dir):
        from apps.releases import GenerationReleases

        return GenerationReleases(models_dir, {self.name: self.release_name(self.Config())}, self.names)


def load_tokenizers(directory):
    """The :class:`Tokenizers` saved under ``directory/source`` and ``directory/target``."""
    directory = Path(directory)
    missing = [side for side in Tokenizers._fields if not (directory / side).is_dir()]
    if missing:
        raise FileNotFoundError(
            f"no {' and '.join(missing)} tokenizer under {directory}/; train the app first "
            f"or pass --tokenizer-dir with source/ and target/ folders"
        )
    return Tokenizers(*(WordpieceTokenizer.load(directory / side) for side in Tokenizers._fields))


def copy_tokenizers(tokenizers, directory):
    """Save ``tokenizers`` under ``directory/{source,target}`` (replacing what is there)."""
    directory = Path(directory)
    for side, tokenizer in zip(Tokenizers._fields, tokenizers):
        shutil.rmtree(directory / side, ignore_errors=True)
        tokenizer.save(directory / side)
    return directory
