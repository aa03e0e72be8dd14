"""The ``translation`` app: English to German (or Japanese) with the chapter 5 Transformer (textbook section 10.1).

A declaration only (STYLE.md convention 7): sentence pairs and WordPiece
tokenizers from ``apps/translation/data.py``, the encoder-decoder model and
beam search from ``apps/translation/model.py``, corpus BLEU and chrF from
``apps/translation/metrics.py``. Training, checkpoints, resume and early
stopping (on ``val_loss``) are the shared trainer's.

Example::

    tfsuite train translation --epochs 8                          # en-de, runs/translation/en_de/
    tfsuite evaluate translation --checkpoint runs/translation/en_de/model.keras
    tfsuite train translation --language-pair en_ja               # same code, Japanese targets
    tfsuite train translation --dataset wmt14_translate/de-en     # a real TFDS dataset, if prepared
"""

from __future__ import annotations

import datetime
import json
import time
import typing
from dataclasses import dataclass

import keras
import numpy as np
import tensorflow as tf

from apps.app import App, Datasets
from apps.config import ConfigError, TrainConfig, option
from apps.translation import data as data_lib
from apps.translation import metrics as metrics_lib
from apps.translation.model import (
    MaskedAccuracy,
    SmoothedSequenceLoss,
    TranslationModel,
    lr_warmup_cosine,
    lr_warmup_inverse_sqrt,
    translate,
)
from apps.translation.ui import MAX_INPUT_CHARACTERS  # the UI rejects longer text outright

__all__ = ["TranslationApp", "TranslationConfig", "MAX_INPUT_CHARACTERS"]


@dataclass
class TranslationConfig(TrainConfig):
    """Hyperparameters of the translation app (defaults: the released en-de model)."""

    epochs: int = option(5, "number of training epochs (of steps_per_epoch batches each)")
    learning_rate: float = option(1.5e-3, "peak learning rate (after warmup) of Adam")
    patience: int = option(0, "early stopping: epochs without val_loss improvement (0 disables: the cosine schedule sets the length)")
    verbose: int = option(2, "Keras fit verbosity: 1 progress bar, 2 one line per epoch, 0 silent")

    language_pair: str = option("en_de", f"our offline corpus: {', '.join(data_lib.LANGUAGE_PAIRS)}")
    dataset: str = option(
        "", "TFDS dataset name, e.g. tfsuite_translation/en_ja or wmt14_translate/de-en (default: --language-pair's)"
    )
    vocab_size: int = option(4000, "WordPiece vocabulary size per language (learned from the training split)")
    lower_case: bool = option(False, "lower-case and strip accents before WordPiece (hurts cased BLEU)")
    tokenizer_dir: str = option("", "folder with source/ and target/ tokenizers (default: the run folder's)")
    max_source_length: int = option(96, "source tokens incl. [START]/[END]; longer training pairs are left out")
    max_target_length: int = option(96, "target tokens incl. [START]; longer training pairs are left out")
    batch_tokens: int = option(2048, "padded tokens per training batch (batch_size caps the examples)")
    steps_per_epoch: typing.Optional[int] = option(
        460, "batches per epoch from the continuous stream of shuffled passes (val_loss and checkpoints this often); "
        "none: one pass"
    )
    shared_vocab: bool = option(False, "one WordPiece vocabulary learned from both languages (source = target tokenizer)")
    share_embeddings: bool = option(
        False, "one embedding matrix for source, target and output (needs --shared-vocab)"
    )
    activation_dropout: typing.Optional[float] = option(None, "dropout on the FFN hidden units (none: --dropout)")
    validation_pairs: typing.Optional[int] = option(
        1000, "validation pairs scored for val_loss each epoch (none: all 3,478)"
    )
    num_layers: int = option(3, "encoder layers and decoder layers (each)")
    hidden_dim: int = option(192, "d_model")
    num_heads: int = option(4, "attention heads")
    intermediate_dim: int = option(768, "position-wise FFN width")
    dropout: float = option(0.1, "dropout rate")
    normalize_first: bool = option(True, "pre-LN layers (stable with a high learning rate) instead of post-LN")
    position_encoding: str = option("learned", "learned or sinusoidal")
    model_max_length: int = option(128, "positions the model supports (learned position table)")
    label_smoothing: float = option(0.1, "label smoothing of the token cross-entropy")
    lr_schedule: str = option("cosine", "cosine (warmup, then cosine decay to 0 over all epochs) or inverse_sqrt")
    warmup_steps: int = option(200, "linear warmup steps")
    clipnorm: float = option(1.0, "gradient norm clipping (0 disables)")
    beam_size: int = option(4, "beam search width at evaluation (1 is greedy)")
    length_penalty: float = option(1.0, "beam search length normalisation exponent")
    max_new_tokens: int = option(96, "most target tokens generated per sentence at evaluation")
    eval_batch_size: int = option(64, "sentences per beam-search call at evaluation")

    def __post_init__(self):
        super().__post_init__()
        if self.language_pair not in data_lib.LANGUAGE_PAIRS:
            raise ConfigError(
                f"language_pair must be one of {list(data_lib.LANGUAGE_PAIRS)}, got {self.language_pair!r}"
            )
        for name, value, choices in (
            ("lr_schedule", self.lr_schedule, ("cosine", "inverse_sqrt")),
            ("position_encoding", self.position_encoding, ("learned", "sinusoidal")),
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
        for name in ("validation_pairs",):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ConfigError(f"{name} must be a positive integer or none, got {value!r}")
        if self.hidden_dim % self.num_heads:
            raise ConfigError(f"num_heads={self.num_heads} must divide hidden_dim={self.hidden_dim}")
        if self.max_source_length < 3:
            raise ConfigError(f"max_source_length must be >= 3 ([START] token [END]), got {self.max_source_length}")
        longest = max(self.max_source_length, self.max_target_length, self.max_new_tokens + 1)
        if self.position_encoding == "learned" and longest > self.model_max_length:
            raise ConfigError(
                f"model_max_length={self.model_max_length} is shorter than the longest sequence ({longest} tokens: "
                "max_source_length, max_target_length, max_new_tokens + 1); raise --model-max-length"
            )
        if not 0 <= self.dropout < 1:
            raise ConfigError(f"dropout must be in [0, 1), got {self.dropout}")
        if not 0 <= self.label_smoothing < 1:
            raise ConfigError(f"label_smoothing must be in [0, 1), got {self.label_smoothing}")
        if self.clipnorm < 0 or self.length_penalty < 0:
            raise ConfigError("clipnorm and length_penalty must be >= 0")
        if self.share_embeddings and not self.shared_vocab:
            raise ConfigError("--share-embeddings needs --shared-vocab (one vocabulary for both languages)")
        if self.dataset:
            try:
                data_lib.source_of(self)
            except ValueError as e:
                raise ConfigError(str(e)) from None


class TranslationApp(App):
    """English to German / Japanese translation, scored by corpus BLEU and chrF (sacrebleu)."""

    name = "translation"
    title = "Translation"
    description = "translate English to German (or Japanese) with a Transformer and beam search; BLEU, chrF"
    Config = TranslationConfig
    monitor = "val_loss"
    monitor_mode = "min"

    def __init__(self):
        self._tokenizers = {}
        self._pairs = {}
        self._releases = None  # set by load_release: the demo tab's models

    def default_run_name(self, config):
        return data_lib.dataset_name(config).split("/")[-1].replace("-", "_")

    def release_name(self, config):
        """Folder under ``saved_models/``: ``translation_en_de``, ``translation_en_ja``, ..."""
        return f"{self.name}_{self.default_run_name(config)}"

    # --- data -------------------------------------------------------------------

    def tokenizer_dir(self, config):
        """``--tokenizer-dir``, else ``runs/translation/<run>/tokenizers``."""
        from apps.trainer import run_dir

        return config.tokenizer_dir or str(run_dir(self, config) / data_lib.TOKENIZER_FOLDER)

    def tokenizers(self, config):
        """The run's :class:`~apps.translation.data.Tokenizers`, learned and saved on first use."""
        directory = self.tokenizer_dir(config)
        if directory not in self._tokenizers:
            if config.tokenizer_dir:
                self._tokenizers[directory] = data_lib.load_tokenizers(directory)
            else:
                self._tokenizers[directory] = data_lib.load_or_learn_tokenizers(config, directory)
        return self._tokenizers[directory]

    def pairs(self, config, split):
        """Tokenized :class:`~apps.translation.data.PairArrays` of ``split`` (cached per config)."""
        key = (data_lib.dataset_name(config), split, config.limit, self.tokenizer_dir(config))
        if key not in self._pairs:
            sources, targets = data_lib.load_texts(config, split)
            self._pairs[key] = data_lib.tokenize_pairs(self.tokenizers(config), sources, targets)
        return self._pairs[key]

    def _dataset(self, config, split, training=False):
        tokenizer = self.tokenizers(config).target
        pairs = self.pairs(config, split)
        if split == "validation" and config.validation_pairs is not None:
            pairs = data_lib.first_pairs(pairs, config.validation_pairs)
        ds = data_lib.make_dataset(
            pairs,
            start_id=tokenizer.start_id,
            end_id=tokenizer.end_id,
            batch_size=config.batch_size,
            batch_tokens=config.batch_tokens,
            max_source_length=config.max_source_length,
            max_target_length=config.max_target_length,
            shuffle=training,
            seed=config.seed,
            deterministic=config.deterministic,
        )
        return ds

    def build_datasets(self, config):
        return Datasets(
            train=self._dataset(config, "train", training=True),
            validation=self._dataset(config, "validation"),
            test=self._dataset(config, "test"),
        )

    def steps_per_epoch(self, config, train=None):
        """Training batches per epoch: ``steps_per_epoch``, else one pass (exact, from the token lengths)."""
        if config.steps_per_epoch is not None:
            return config.steps_per_epoch
        return data_lib.steps_per_epoch(
            self.pairs(config, "train"), config.batch_size, config.batch_tokens,
            config.max_source_length, config.max_target_length,
        )

    # --- model --------------------------------------------------------------------

    def build_model(self, config):
        tokenizers = self.tokenizers(config)
        model = TranslationModel(
            encoder_vocab_size=tokenizers.source.vocab_size,
            decoder_vocab_size=tokenizers.target.vocab_size,
            max_length=config.model_max_length,
            num_encoder_layers=config.num_layers,
            num_decoder_layers=config.num_layers,
            hidden_dim=config.hidden_dim,
            num_heads=config.num_heads,
            intermediate_dim=config.intermediate_dim,
            dropout=config.dropout,
            activation_dropout=config.activation_dropout,
            share_embeddings=config.share_embeddings,
            normalize_first=config.normalize_first,
            position_encoding=config.position_encoding,
            name="translation_transformer",
        )
        model.build()
        return model

    def compile_kwargs(self, config):
        if config.lr_schedule == "cosine":
            total = config.epochs * self.steps_per_epoch(config)
            learning_rate = lr_warmup_cosine(config.learning_rate, total, config.warmup_steps)
        else:
            learning_rate = lr_warmup_inverse_sqrt(config.learning_rate, config.warmup_steps)
        optimizer = keras.optimizers.Adam(
            learning_rate, beta_1=0.9, beta_2=0.98, epsilon=1e-9, clipnorm=config.clipnorm or None
        )
        return {
            "optimizer": optimizer,
            "loss": SmoothedSequenceLoss(config.label_smoothing),
            "metrics": [MaskedAccuracy()],
        }

    # --- evaluation -----------------------------------------------------------------

    def translate(self, model, config, texts, beam_size=None, max_length=None):
        """Python-side beam search with the config's settings; list of str."""
        return translate(
            model,
            self.tokenizers(config),
            texts,
            beam_size=beam_size or config.beam_size,
            max_length=max_length or config.max_new_tokens,
            max_source_length=config.max_source_length,
            batch_size=config.eval_batch_size,
            length_penalty=config.length_penalty,
            language=data_lib.target_language(config),
        )

    def evaluate(self, model, config):
        """Corpus ``bleu`` and ``chrf`` of beam-search translations of the test split (detokenized text).

        Also writes ``<run folder>/evaluation.json``: the scores, sacrebleu
        signatures, data version, decoding settings and time (read by the release).
        """
        from apps.trainer import run_dir

        sources, references = data_lib.load_texts(config, "test")
        start = time.perf_counter()
        hypotheses = self.translate(model, config, sources)
        seconds = time.perf_counter() - start
        language = data_lib.target_language(config)
        print(
            f"beam search (beam {config.beam_size}): {len(sources)} test sentences in {seconds:.1f} s "
            f"({len(sources) / seconds:.1f} sentences/s)",
            flush=True,
        )
        signatures = metrics_lib.signatures(language)
        for name, signature in signatures.items():
            print(f"{name} signature: {signature}", flush=True)
        scores = metrics_lib.corpus_scores(hypotheses, references, language)
        record = {
            "metrics": scores,
            "signatures": signatures,
            "bleu_tokenizer": metrics_lib.bleu_tokenizer(language),
            "dataset": data_lib.dataset_name(config),
            "data_version": data_lib.data_version(config) if config.limit is None else None,
            "test_sentences": len(sources),
            "beam_size": config.beam_size,
            "max_new_tokens": config.max_new_tokens,
            "decode_seconds": round(seconds, 1),
            "examples": [
                {"source": s, "reference": r, "translation": h}
                for s, r, h in list(zip(sources, references, hypotheses))[:5]
            ],
            "finished": datetime.datetime.now().isoformat(timespec="seconds"),
        }
        directory = run_dir(self, config)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "evaluation.json").write_text(json.dumps(record, indent=2, ensure_ascii=False) + "\n")
        return scores

    # --- serving and release: strings in, strings out (apps/translation/export.py) ------------

    supports_tflite = True

    def export_translator(self, model, config):
        """The release graph: :class:`apps.translation.export.ExportTranslator` with the config's decoding settings."""
        from apps.translation.export import ExportTranslator

        source, target = self.tokenizers(config)
        return ExportTranslator(
            model, source, target, source_length=config.max_source_length, max_new_tokens=config.max_new_tokens,
            num_beams=config.beam_size, length_penalty=config.length_penalty,
            language=data_lib.target_language(config),  # the same spacing rules as translate()
        )

    def serving_signature(self, config):
        return {"sentences": tf.TensorSpec((None,), tf.string)}

    def serving_outputs(self, model, inputs, config):
        translator = self.export_translator(model, config)
        return translator.serving_default(inputs["sentences"])

    def serving_example(self, config):
        sources, _ = data_lib.load_texts(config, "test")
        return {"sentences": np.array(sources[:8], dtype=object)}

    def write_saved_model(self, model, config, directory):
        from apps.translation.export import write_saved_model

        return write_saved_model(self.export_translator(model, config), directory)

    def export_tflite(self, saved_model_dir, output_dir):
        from apps.translation.export import write_tflite

        return write_tflite(saved_model_dir, output_dir)

    def evaluate_saved_model(self, version_dir, config):
        from apps.translation.export import evaluate_saved_model

        sources, references = data_lib.load_texts(config, "test")
        return evaluate_saved_model(version_dir, sources, references, data_lib.target_language(config))

    def evaluate_tflite(self, release_dir, kind, config):
        from apps.translation.export import evaluate_tflite

        sources, references = data_lib.load_texts(config, "test")
        return evaluate_tflite(release_dir, kind, sources, references, data_lib.target_language(config))

    # --- UI (apps/translation/ui.py) -----------------------------------------------------

    def load_release(self, models_dir):
        from apps.translation.ui import TranslationReleases

        return TranslationReleases(models_dir)

    def ui_inputs(self):
        from apps.translation import ui

        return ui.ui_inputs()

    def ui_outputs(self):
        from apps.translation import ui

        return ui.ui_outputs()

    def ui_examples(self, cache_dir):
        from apps.translation import ui

        return ui.ui_examples(cache_dir)

    def preprocess(self, text, *options):
        """UI values -> the ``translate`` signature's inputs (``apps.translation.ui.preprocess``).

        Raises:
            ValueError: empty or whitespace-only text, or text longer than
                :data:`MAX_INPUT_CHARACTERS` (rejected, not cut: a silently
                shortened translation would mislead); a sentence with more
                word pieces than the model reads is rejected by the release's
                check (``TranslationReleases.check``).
        """
        from apps.translation import ui

        return ui.preprocess(text, *options)

    def postprocess(self, outputs):
        from apps.translation import ui

        return ui.postprocess(outputs)
