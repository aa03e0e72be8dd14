"""The ``speech_recognition`` app: a WAV recording to its transcript (textbook section 9.2).

A declaration over the shared encoder-decoder engine (``apps/seq2seq.py``): the
corpus (``tfsuite_speech``, synthesized speech whose validation and test voices
no other split hears; ``librispeech`` by name), the model (``--model whisper``:
``layers.whisper.Whisper`` through the shared KV-cache and beam search;
``--model wav2vec2_ctc``: ``layers.wav2vec2`` with a CTC head, ``speech.ctc``, whose
release is ``speech.ctc.CTCExport``),
the metric (``jiwer`` WER and CER after lower-casing and removing punctuation,
overall and per held-out voice) and the baseline in the same run on the same
split (pocketsphinx, ``speech.classic``; else the most frequent training transcript).

Targets are spelled one character at a time (a WordPiece vocabulary of single
letters, ``h ##e ##l ##l ##o``). ``--augment`` (for real recordings, which the
corpus lacks): speed, a synthetic room (reverb), white noise and level on the
waveform; a VTLP-style frequency warp (voice pitch and vocal tract) and
SpecAugment on the log-mel frames (``pipelines/audio.py``).

The release's ``serving_default`` takes WAV bytes (``audio_bytes``, 16-bit PCM,
any rate, mono or stereo), decoded, resampled and turned into log-mel frames in
the graph (``pipelines.preprocessing.AudioPreprocessor``, a status per row). Its
TFLite models take log-mel frames: WAV decoding and the STFT have no TFLite
kernels (``apps.export.TFLiteRunner`` computes the frames).

Example::

    tfsuite data build tfsuite_speech
    tfsuite train speech_recognition
    tfsuite evaluate speech_recognition --checkpoint runs/speech_recognition/tfsuite_speech/model.keras
"""

from __future__ import annotations

import base64
import collections
import string
from dataclasses import dataclass

import numpy as np
import tensorflow as tf

from apps import metrics
from apps.config import ConfigError, option
from apps.export import SignatureNames
from apps.seq2seq import Seq2SeqApp, Seq2SeqConfig
from pipelines import audio
from pipelines.preprocessing import AudioPreprocessor
from pipelines.tokenizer import RESERVED_TOKENS
from pipelines.wordpiece import WordpieceTokenizer
from speech import classic, ctc

__all__ = ["SpeechRecognitionApp", "SpeechRecognitionConfig"]

MODELS = ("whisper", "wav2vec2_ctc")
AUGMENTATIONS = ("speed", "reverb", "noise", "gain", "warp", "specaugment")


@dataclass
class SpeechRecognitionConfig(Seq2SeqConfig):
    """Hyperparameters of the speech-recognition app."""

    model: str = option("whisper", f"the network: one of {list(MODELS)}")
    tokenizer: str = option("characters", "characters (one token per letter) or wordpiece (--vocab-size pieces)")
    num_mel_bins: int = option(80, "log-mel bins per 10 ms frame")
    max_seconds: float = option(30.0, "longest recording read (serving: longer ones get status too_long)")
    augment: str = option(",".join(AUGMENTATIONS), f"training augmentation, a comma list of {list(AUGMENTATIONS)}")
    vocab_size: int = option(1000, "WordPiece vocabulary (--tokenizer wordpiece)")
    lower_case: bool = option(True, "lower-case transcripts (they are normalized lower case)")
    shared_vocab: bool = option(True, "one tokenizer (the audio side has none)")
    max_source_length: int = option(3, "unused: the input is audio, cut at --max-seconds")
    max_target_length: int = option(192, "transcript tokens incl. [START]; longer transcripts are cut")
    max_new_tokens: int = option(192, "most transcript tokens generated")
    model_max_length: int = option(200, "decoder positions")
    length_ratio: float = option(0.0, "no output limit tied to the input length in tokens")
    num_layers: int = option(4, "encoder layers and decoder layers (each)")
    hidden_dim: int = option(192, "d_model")
    num_heads: int = option(4, "attention heads")
    intermediate_dim: int = option(768, "position-wise FFN width")
    epochs: int = option(30, "number of training epochs")
    batch_size: int = option(32, "utterances per training batch")
    learning_rate: float = option(1e-3, "peak learning rate (after warmup) of Adam")
    warmup_steps: int = option(1000, "linear warmup steps")
    beam_size: int = option(2, "beam search width at evaluation and in serving_default (1 is greedy)")
    eval_batch_size: int = option(32, "utterances per decoding call at evaluation")
    validation_pairs: int = option(700, "validation utterances scored for val_loss each epoch")
    conv_filters: int = option(512, "wav2vec2_ctc: channels of the conv feature encoder")

    def __post_init__(self):
        super().__post_init__()
        if self.model not in MODELS:
            raise ConfigError(f"model must be one of {list(MODELS)}, got {self.model!r}")
        if self.tokenizer not in ("characters", "wordpiece"):
            raise ConfigError(f"tokenizer must be characters or wordpiece, got {self.tokenizer!r}")
        unknown = set(self.augmentations()) - set(AUGMENTATIONS)
        if unknown:
            raise ConfigError(f"--augment takes a comma list of {list(AUGMENTATIONS)}, got {sorted(unknown)}")
        if not 0 < self.max_seconds <= 60 or self.num_mel_bins < 8:
            raise ConfigError(f"max_seconds must be in (0, 60] and num_mel_bins >= 8, got {self.max_seconds}, {self.num_mel_bins}")

    def augmentations(self):
        return [name.strip() for name in self.augment.split(",") if name.strip()]


class SpeechRecognitionApp(Seq2SeqApp):
    """Speech to text with a Whisper-style encoder-decoder, scored by WER / CER per voice against a baseline."""

    name = "speech_recognition"
    title = "Speech recognition"
    description = "transcribe English speech (WAV) with a Whisper-style encoder-decoder; WER, CER per held-out voice"
    Config = SpeechRecognitionConfig
    task = "speech"
    source_field, target_field = "audio", "transcript"
    default_dataset = "tfsuite_speech"
    names = SignatureNames(input="audio_bytes", output="transcripts", options="transcribe", tokens="transcript_tokens")
    input_label, output_label = "Recording", "Transcript"
    check_slice = 40  # recordings a release keeps with its outputs (base64 WAVs: about 3 MB)

    def default_run_name(self, config):
        return self.dataset_name(config).replace("/", "_")

    # --- data: corpus -> WAV bytes and transcripts ------------------------------------------

    def load_texts(self, config, split):
        """``(16 kHz 16-bit WAV bytes per utterance, transcripts)``: what the decoder, the release and the baseline read."""
        key = (self.dataset_name(config), split, config.limit)
        if key not in self._texts:
            encoded = self.examples(config, split).map(
                lambda e: (tf.audio.encode_wav(e["audio"][:, None], audio.SAMPLE_RATE), e["transcript"]),
                num_parallel_calls=tf.data.AUTOTUNE,
            )
            pairs = [(bytes(w), t.decode("utf-8")) for ws, ts in encoded.batch(256).as_numpy_iterator() for w, t in zip(ws, ts)]
            if not pairs:
                raise ValueError(f"split {split!r} of {self.dataset_name(config)} is empty (limit={config.limit})")
            self._texts[key] = tuple(map(list, zip(*pairs)))
        return self._texts[key]

    def voices(self, config, split):
        """The voice (``tfsuite_speech``) or speaker (``librispeech``) of each utterance of ``split``, or None."""
        key = ("voices", self.dataset_name(config), split, config.limit)
        if key not in self._texts:
            from pipelines import tfds_sources

            source = self.source_of(config)
            builder = tfds_sources._builder(source, None)  # noqa: SLF001 - the builder load_examples reads
            field = next((f for f in ("voice", "speaker_id") if f in builder.info.features), None)
            voices = None
            if field is not None:
                ds = builder.as_dataset(split=tfds_sources.resolve_split(source, split), shuffle_files=False)
                ds = ds.map(lambda e: e[field]).take(-1 if config.limit is None else config.limit)
                voices = [v.decode() if isinstance(v, bytes) else str(v) for v in ds.as_numpy_iterator()]
            self._texts[key] = voices
        return self._texts[key]

    def record_sources(self, sources):
        return [base64.b64encode(wav).decode("ascii") for wav in sources]

    def _vocabulary_texts(self, config, side):
        return self.target_texts(config, "train")

    def _cache_dir(self, config, side):
        directory = super()._cache_dir(config, side)
        return directory.with_name(f"{directory.name}-{config.tokenizer}")

    def _learn(self, texts, config):
        if config.tokenizer == "wordpiece":
            return super()._learn(texts, config)
        # One piece per character: a word-initial letter and a word-internal "##" letter.
        letters = sorted((set(string.ascii_lowercase + "'") | set("".join(texts))) - set(string.whitespace))
        return WordpieceTokenizer([*RESERVED_TOKENS, *letters, *("##" + c for c in letters if c != "'")])

    def features(self, config):
        return audio.LogMelFeatures(num_mel_bins=config.num_mel_bins)

    def preprocessor(self, config, tokenizers=None, prefix=None):
        target = (tokenizers or self.tokenizers(config)).target
        return AudioPreprocessor(target, self.features(config), config.max_seconds, input_name=self.names.input)

    def _dataset(self, config, split, training=False):
        """Batches of ``({encoder_inputs, encoder_padding_mask, decoder_token_ids, decoder_padding_mask}, targets)``."""
        examples = self.examples(config, split)
        if split == "validation" and config.validation_pairs:
            examples = examples.take(config.validation_pairs)
        chosen = set(config.augmentations()) if training else set()
        wave_augment = bool({"speed", "reverb", "noise", "gain"} & chosen)
        if wave_augment:
            options = dict(speeds=(0.9, 1.0, 1.1) if "speed" in chosen else (1.0,),
                           snr_db=(10.0, 40.0) if "noise" in chosen else None,
                           gain_db=(-20.0, 6.0) if "gain" in chosen else None, rt60=(0.1, 0.7) if "reverb" in chosen else None)
            seeds = tf.data.Dataset.random(seed=config.seed + 1, rerandomize_each_iteration=True).batch(2)
            examples = tf.data.Dataset.zip(examples, seeds).map(
                lambda e, s: {**e, "audio": audio.perturb_waveform(e["audio"], s, **options)},
                num_parallel_calls=tf.data.AUTOTUNE,
            )
        if config.model == "wav2vec2_ctc":  # ({waveform, padding_mask}, character ids)
            return ctc.ctc_dataset(examples, config.batch_size, int(config.max_seconds * audio.SAMPLE_RATE),
                                   shuffle=training, seed=config.seed, cache=not wave_augment)
        ds = audio.make_audio_dataset(
            examples, batch_size=config.batch_size, features=self.features(config),
            augment=audio.SpecAugment() if "specaugment" in chosen else None, warp=(0.9, 1.1) if "warp" in chosen else None,
            shuffle=training, shuffle_buffer=2000, seed=config.seed, cache=not wave_augment,
            deterministic=config.deterministic or not training, bucket_boundaries=[200, 300, 400, 600, 1000],
        )
        tokenizer, frames = self.tokenizers(config).target, self.preprocessor(config).max_frames

        def to_model(batch):
            ids = tf.cast(tokenizer.tokenize(batch["transcript"]), tf.int32)[:, : config.max_target_length - 1]
            column = lambda token: tf.RaggedTensor.from_tensor(tf.fill([ids.nrows(), 1], token))  # noqa: E731
            decoder = tf.concat([column(tokenizer.start_id), ids], axis=1).to_tensor(tokenizer.pad_id)
            targets = tf.concat([ids, column(tokenizer.end_id)], axis=1).to_tensor(tokenizer.pad_id)
            log_mel = batch["features"][:, :frames]
            return {
                "encoder_inputs": log_mel,
                "encoder_padding_mask": tf.sequence_mask(batch["feature_lengths"], tf.shape(log_mel)[1]),
                "decoder_token_ids": decoder,
                "decoder_padding_mask": decoder != tokenizer.pad_id,
            }, targets

        return ds.map(to_model, num_parallel_calls=tf.data.AUTOTUNE)

    def steps_per_epoch(self, config, train=None):
        return self.batches_per_pass(config)

    # --- model --------------------------------------------------------------------------------

    def build_model(self, config):
        return {"whisper": self.build_whisper, "wav2vec2_ctc": self.build_wav2vec2_ctc}[config.model](config)

    def build_whisper(self, config):
        from layers.whisper import Whisper

        model = Whisper(
            self.tokenizers(config).target.vocab_size, num_mels=config.num_mel_bins,
            max_audio_frames=self.preprocessor(config).max_frames, max_length=config.model_max_length,
            num_encoder_layers=config.num_layers, num_decoder_layers=config.num_layers, hidden_dim=config.hidden_dim,
            num_heads=config.num_heads, intermediate_dim=config.intermediate_dim, dropout=config.dropout,
            name=f"{self.name}_whisper",
        )
        model.build()
        return model

    def build_wav2vec2_ctc(self, config):
        return ctc.build_ctc_recognizer(config.hidden_dim, config.num_layers, config.num_heads, config.intermediate_dim,
                                        config.conv_filters, config.dropout, config.init_from,
                                        name=f"{self.name}_wav2vec2_ctc")

    def compile_kwargs(self, config):
        kwargs = super().compile_kwargs(config)
        return {**kwargs, "loss": None, "metrics": None} if config.model == "wav2vec2_ctc" else kwargs  # compute_loss

    def jit_compile(self, config):
        return super().jit_compile(config) and (config.model != "wav2vec2_ctc" or bool(config.jit_compile))

    def generate(self, model, config, texts, beam_size=None, max_length=None):
        """Transcripts of WAV bytes: the engine's decoder (whisper), else CTC best path or prefix beam search."""
        if config.model != "wav2vec2_ctc":
            return super().generate(model, config, texts, beam_size, max_length)
        limit = int(config.max_seconds * audio.SAMPLE_RATE)
        texts = ctc.transcribe(model, [audio.load_audio(wav)[:limit] for wav in texts], beam_size or config.beam_size)
        return [text[: max_length or config.max_new_tokens] for text in texts]  # as the release cuts them

    def generation_export(self, model, config, tokenizers=None):
        """Whisper: the engine's decode-loop graph; wav2vec2_ctc: ``speech.ctc.CTCExport`` (the same signatures)."""
        if config.model != "wav2vec2_ctc":
            return super().generation_export(model, config, tokenizers)
        return ctc.CTCExport(model, self.preprocessor(config, tokenizers), self.names, config.max_new_tokens,
                             config.beam_size, tuple(range(1, max(4, config.beam_size) + 1)), config.export_weights)

    def export_tflite(self, saved_model_dir, output_dir):
        from apps.export import read_settings

        if read_settings(saved_model_dir).get("decoder") == "ctc":
            raise ConfigError("this release is a wav2vec2_ctc model: its TFLite export is not available "
                              "(whisper releases convert, taking log-mel frames)")
        return super().export_tflite(saved_model_dir, output_dir)

    # --- metric and baseline ----------------------------------------------------------------------

    def score(self, hypotheses, references, config):
        """``apps.metrics.error_rates``: WER and CER overall and per voice of the test split."""
        voices = (self.voices(config, "test") or [])[: len(references)]
        return metrics.error_rates(hypotheses, references, voices if len(voices) == len(references) else None)

    def baseline_kind(self):
        return "pocketsphinx" if classic.pocketsphinx_available() else "most frequent training transcript"

    def metric_settings(self, config):
        from importlib.metadata import version

        return {"signatures": {"transcripts": f"jiwer:{version('jiwer')}|wer,cer|lowercase,no-punct"},
                "baseline": self.baseline_kind()}

    def baseline(self, sources, config):
        """pocketsphinx's transcripts when installed, else the most frequent training transcript for every input."""
        kind = self.baseline_kind()
        if kind.startswith("pocketsphinx"):
            print(f"baseline: {kind}", flush=True)
            return classic.pocketsphinx_transcripts(sources)
        common = collections.Counter(self.target_texts(config, "train")).most_common(1)[0][0]
        print(f"baseline: {kind} ({common!r}); install pocketsphinx for a real one", flush=True)
        return [common] * len(sources)

    # --- the demo tab -----------------------------------------------------------------------------

    def ui_inputs(self, releases=None):
        import gradio as gr

        settings = self._ui_settings(releases)
        return [
            gr.Audio(sources=["microphone", "upload"], type="filepath", label=self.input_label),
            gr.Slider(min(settings["beam_sizes"]), max(settings["beam_sizes"]), value=settings["num_beams"], step=1,
                      label="Beam size (1 = greedy search)"),
            gr.Slider(1, settings["max_new_tokens"], value=settings["max_new_tokens"], step=1, label="Max length (characters)"),
        ]

    def ui_examples(self, cache_dir, releases=None):
        return self.file_examples(cache_dir, releases, ".wav")

    def preprocess(self, recording, beam_size=2, max_length=192):
        """The recording (path or bytes) -> a request with 16 kHz mono 16-bit WAV; ValueError for the user on bad input."""
        beam_size, max_length = self.check_options(beam_size, max_length)
        if recording is None or (isinstance(recording, str) and not recording):
            raise ValueError("No recording: record with the microphone or upload a WAV file.")
        waveform = audio.load_audio(recording)  # ValueError naming the problem: not WAV, empty, 8-bit ...
        if waveform.size == 0:
            raise ValueError("The recording is empty (no samples): record or upload some speech.")
        limit = self.Config().max_seconds
        if waveform.size > limit * audio.SAMPLE_RATE:
            raise ValueError(
                f"The recording is {waveform.size / audio.SAMPLE_RATE:.1f} s long; the model reads at most {limit:.0f} s: "
                "cut it into shorter parts."
            )
        wav = tf.audio.encode_wav(np.clip(waveform, -1.0, 1.0)[:, None], audio.SAMPLE_RATE).numpy()
        return {"choice": self.name, "input": wav, "beam_size": beam_size, "max_length": max_length}

