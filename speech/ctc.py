"""CTC training and decoding over characters (textbook section 9.2, Wav2Vec 2.0 fine-tuning).

Connectionist temporal classification (Graves et al., 2006) scores a transcript
``y`` against per-frame distributions over characters plus a blank:
``p(y | x) = sum_{pi in B^-1(y)} prod_t p(pi_t | x)``, where ``B`` collapses repeats
and then drops blanks (``"hh_e_ll_llo" -> "hello"``). The loss is ``-log p(y | x)``
(``tf.nn.ctc_loss``).

Class layout, shared with :class:`layers.wav2vec2.Wav2Vec2CTC`: class
``BLANK_INDEX = 0`` is the blank, class ``i >= 1`` is ``characters[i - 1]``.
:data:`CHARACTERS` is the ``tfsuite_speech`` transcript alphabet (space,
apostrophe, ``a``-``z``).

* :func:`ctc_loss`: per-utterance ``-log p(y | x)``.
* :func:`ctc_greedy_decode`: best path, ``B(argmax_t)``.
* :func:`ctc_beam_search_decode`: prefix beam search (``tf.nn.ctc_beam_search_decoder``
  via ``keras.ops.ctc_decode``), which sums the probability of every path of a prefix,
  so it can beat the best path (two frames of ``p(a) = 0.4``: greedy ``""``, beam ``"a"``).
* :func:`build_ctc_recognizer`: a new recognizer, optionally from a pre-trained backbone.
* :func:`finetune_ctc`: fine-tune a ``Wav2Vec2CTC`` on transcribed audio (feature encoder frozen by default).
* The speech app's ``--model wav2vec2_ctc`` (``model.fit`` through the shared trainer):
  :class:`CTCRecognizer` (its ``compute_loss`` is the mean CTC loss), :func:`ctc_dataset`
  (padded 16 kHz waveforms with a padding mask, 0-padded character labels) and :func:`transcribe`.

Example::

    model = Wav2Vec2CTC(pretrainer.backbone, vocab_size=len(CHARACTERS))
    batch = make_ctc_batch(waveforms, transcripts)
    history = finetune_ctc(model, itertools.repeat(batch), CTCFinetuneConfig(steps=200))
    logits = model(batch["waveform"], padding_mask=batch["padding_mask"])
    ctc_greedy_decode(logits, model.backbone.frame_lengths(batch["padding_mask"].sum(-1)), characters=CHARACTERS)
"""

from __future__ import annotations

import dataclasses
import itertools
import math

import keras
import numpy as np
import tensorflow as tf

from speech.wav2vec2_pretraining import pad_waveforms
from layers.wav2vec2 import BLANK_INDEX, Wav2Vec2CTC, compute_span_mask

__all__ = [
    "BLANK_INDEX",
    "CHARACTERS",
    "CTCFinetuneConfig",
    "encode_text",
    "decode_ids",
    "make_ctc_batch",
    "ctc_loss",
    "ctc_greedy_decode",
    "ctc_beam_search_decode",
    "finetune_ctc",
    "CTCRecognizer",
    "ctc_dataset",
    "transcribe",
]

CHARACTERS = " 'abcdefghijklmnopqrstuvwxyz"


def encode_text(text, characters=CHARACTERS):
    """Class ids (``1 + position in characters``) of ``text``; ValueError naming any character not in the vocabulary."""
    index = {c: i + 1 for i, c in enumerate(characters)}
    unknown = sorted(set(text) - set(index))
    if unknown:
        raise ValueError(f"encode_text: characters {unknown} of {text!r} are not in the vocabulary {characters!r}; "
                         "normalize the transcript first (pipelines.corpora.speech.normalize_transcript)")
    return np.array([index[c] for c in text], np.int32)


def decode_ids(ids, characters=CHARACTERS):
    """The text of class ids (blanks, ``-1`` padding and out-of-range ids skipped)."""
    return "".join(characters[i - 1] for i in ids if 1 <= i <= len(characters))


def make_ctc_batch(waveforms, transcripts, characters=CHARACTERS):
    """A padded CTC batch: ``waveform``, ``padding_mask`` (:func:`speech.wav2vec2_pretraining.pad_waveforms`),
    ``labels`` int32 ``(batch, max_label)`` (0-padded) and ``label_lengths`` int32 ``(batch,)``."""
    encoded = [encode_text(t, characters) for t in transcripts]
    labels = np.zeros((len(encoded), max(len(e) for e in encoded)), np.int32)
    for i, e in enumerate(encoded):
        labels[i, : len(e)] = e
    return {**pad_waveforms(waveforms), "labels": labels,
            "label_lengths": np.array([len(e) for e in encoded], np.int32)}


def ctc_loss(labels, logits, label_lengths, logit_lengths, blank_index=BLANK_INDEX):
    """``-log p(y | x)`` per utterance, ``tf.nn.ctc_loss`` on batch-major logits.

    Args:
        labels: int ``(batch, max_label)``, class ids (padding past ``label_lengths`` ignored).
        logits: float ``(batch, frames, classes)``, unnormalized.
        label_lengths: int ``(batch,)``.
        logit_lengths: int ``(batch,)``, real frames per utterance.
        blank_index: int. Default :data:`BLANK_INDEX` (0).

    Returns: float32 ``(batch,)``; ``inf`` where a transcript cannot fit its frames
    (it needs ``len(y)`` plus one per repeated pair of frames).
    """
    return tf.nn.ctc_loss(
        labels=tf.cast(labels, tf.int32), logits=tf.cast(logits, tf.float32),
        label_length=tf.cast(label_lengths, tf.int32), logit_length=tf.cast(logit_lengths, tf.int32),
        logits_time_major=False, blank_index=blank_index)


def _lengths(logits, logit_lengths):
    if logit_lengths is None:
        return np.full(np.shape(logits)[0], np.shape(logits)[1], np.int32)
    return np.asarray(keras.ops.convert_to_numpy(logit_lengths), np.int32)


def _paths(decoded, characters):
    paths = [[int(i) for i in row if i >= 0] for row in np.asarray(decoded)]
    return paths if characters is None else [decode_ids(p, characters) for p in paths]


def ctc_greedy_decode(logits, logit_lengths=None, blank_index=BLANK_INDEX, characters=None):
    """Best-path decoding: ``argmax`` per frame, collapse repeats, drop blanks.

    Args:
        logits: float ``(batch, frames, classes)``.
        logit_lengths: int ``(batch,)`` or None (all frames).
        blank_index: int. Default 0.
        characters: str or None; given, return strings (class ``i`` is ``characters[i - 1]``, blank 0).

    Returns: list (per utterance) of lists of class ids, or of strings.
    """
    decoded, _ = keras.ops.ctc_decode(logits, _lengths(logits, logit_lengths), strategy="greedy",
                                      mask_index=blank_index)
    return _paths(keras.ops.convert_to_numpy(decoded)[0], characters)


def ctc_beam_search_decode(logits, logit_lengths=None, beam_width=16, top_paths=1, blank_index=BLANK_INDEX,
                           characters=None):
    """CTC prefix beam search (``keras.ops.ctc_decode(strategy="beam_search")``, TF's decoder).

    Args:
        logits: float ``(batch, frames, classes)``.
        logit_lengths: int ``(batch,)`` or None.
        beam_width: int. Default 16.
        top_paths: int, hypotheses returned per utterance. Default 1.
        blank_index: int. Default 0.
        characters: str or None, as :func:`ctc_greedy_decode`.

    Returns: ``(hypotheses, scores)``: ``hypotheses[b]`` a list of ``top_paths`` id lists (or strings),
    best first; ``scores`` float ``(batch, top_paths)``, their log probabilities.
    """
    decoded, scores = keras.ops.ctc_decode(logits, _lengths(logits, logit_lengths), strategy="beam_search",
                                           beam_width=beam_width, top_paths=top_paths, mask_index=blank_index)
    decoded = keras.ops.convert_to_numpy(decoded)  # (top_paths, batch, frames)
    per_path = [_paths(decoded[p], characters) for p in range(top_paths)]
    hypotheses = [[per_path[p][b] for p in range(top_paths)] for b in range(decoded.shape[1])]
    return hypotheses, keras.ops.convert_to_numpy(scores)


@dataclasses.dataclass
class CTCFinetuneConfig:
    """Hyperparameters of CTC fine-tuning.

    Args:
        steps: int. Default 1000.
        learning_rate: float, Adam. Default 1e-4.
        grad_clip_norm: float or None. Default 1.0.
        freeze_feature_encoder: bool, keep the conv feature encoder fixed (as the paper). Default True.
        mask_prob, mask_length: span masking of the latent frames while fine-tuning (0 disables). Default 0.0, 10.
        seed: int. Default 0.
    """

    steps: int = 1000
    learning_rate: float = 1e-4
    grad_clip_norm: float | None = 1.0
    freeze_feature_encoder: bool = True
    mask_prob: float = 0.0
    mask_length: int = 10
    seed: int = 0


def finetune_ctc(model, batches, config, print_fn=None, log_every=50):
    """Train a :class:`layers.wav2vec2.Wav2Vec2CTC` with the mean CTC loss; returns ``{"loss": [...]}`` per step.

    Args:
        model: ``Wav2Vec2CTC``.
        batches: iterator of :func:`make_ctc_batch` dicts.
        config: :class:`CTCFinetuneConfig`.
        print_fn: callable or None, a progress line every ``log_every`` steps.
    """
    rng = np.random.default_rng(config.seed)
    batches = iter(batches)
    first = next(batches)
    model(np.asarray(first["waveform"])[:1])
    encoder = model.backbone.feature_encoder
    frozen = {id(v) for v in encoder.trainable_variables} if config.freeze_feature_encoder else set()
    variables = [v for v in model.trainable_variables if id(v) not in frozen]
    optimizer = keras.optimizers.Adam(config.learning_rate, global_clipnorm=config.grad_clip_norm)
    optimizer.build(variables)

    @tf.function(reduce_retracing=True)
    def train_step(waveform, padding_mask, span_mask, labels, label_lengths):
        with tf.GradientTape() as tape:
            logits = model(waveform, padding_mask=padding_mask, span_mask=span_mask, training=True)
            logit_lengths = encoder.output_length(tf.reduce_sum(tf.cast(padding_mask, tf.int32), axis=-1))
            loss = tf.reduce_mean(ctc_loss(labels, logits, label_lengths, logit_lengths))
        optimizer.apply(tape.gradient(loss, variables), variables)
        return loss

    history = {"loss": []}
    for step, batch in zip(range(config.steps), itertools.chain([first], batches)):
        waveform = np.asarray(batch["waveform"], np.float32)
        frames = encoder.output_length(waveform.shape[1])
        frame_lengths = [encoder.output_length(int(n)) for n in np.asarray(batch["padding_mask"]).sum(-1)]
        span_mask = compute_span_mask(len(waveform), frames, config.mask_prob, config.mask_length, min_masks=0,
                                      frame_lengths=frame_lengths, seed=rng)
        loss = train_step(tf.constant(waveform), tf.constant(batch["padding_mask"], tf.bool), tf.constant(span_mask),
                          tf.constant(batch["labels"], tf.int32), tf.constant(batch["label_lengths"], tf.int32))
        history["loss"].append(float(loss))
        if print_fn is not None and (step % log_every == 0 or step == config.steps - 1):
            print_fn(f"step {step}: ctc loss {history['loss'][-1]:.4f}")
    return history


# --------------------------------------------------------------------------- Keras fit (the speech app)


@keras.saving.register_keras_serializable(package="tfsuite")
class CTCRecognizer(Wav2Vec2CTC):
    """:class:`layers.wav2vec2.Wav2Vec2CTC` for ``model.fit``: inputs ``{"waveform", "padding_mask"}``, targets
    class ids ``(batch, max_label)`` 0-padded (:func:`ctc_dataset`); ``compute_loss`` is the batch's mean
    :func:`ctc_loss` (logit lengths from the padding mask) plus any layer losses, so compile it with no loss."""

    def call(self, inputs, padding_mask=None, span_mask=None, training=None):
        if isinstance(inputs, dict):
            inputs, padding_mask = inputs["waveform"], inputs.get("padding_mask", padding_mask)
        return super().call(inputs, padding_mask=padding_mask, span_mask=span_mask, training=training)

    def logit_lengths(self, padding_mask):
        return self.backbone.frame_lengths(tf.reduce_sum(tf.cast(padding_mask, tf.int32), axis=-1))

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        labels = tf.cast(y, tf.int32)
        label_lengths = tf.reduce_sum(tf.cast(labels > 0, tf.int32), axis=-1)
        loss = tf.reduce_mean(ctc_loss(labels, y_pred, label_lengths, self.logit_lengths(x["padding_mask"])))
        return loss + tf.add_n(self.losses) if self.losses else loss


def ctc_dataset(examples, batch_size, max_samples, characters=CHARACTERS, shuffle=False, seed=0, cache=True,
                bucket_seconds=(2, 3, 4, 6, 10), sample_rate=16000):
    """``({"waveform", "padding_mask"}, labels)`` batches for :class:`CTCRecognizer` from ``{"audio", "transcript"}``
    examples: each waveform cut to ``max_samples`` and normalized (zero mean, unit variance, as
    :func:`speech.wav2vec2_pretraining.normalize_waveform`), batched with utterances of similar length
    (``bucket_seconds``) and zero-padded; labels the class ids of the lower-cased transcript's characters
    (others dropped), 0-padded."""
    table = np.zeros(256, np.int32)  # code point -> class id (0: not in the vocabulary, dropped)
    table[[ord(c) for c in characters]] = np.arange(1, len(characters) + 1)

    def prepare(example):
        wave = example["audio"][:max_samples]
        wave = (wave - tf.reduce_mean(wave)) / tf.sqrt(tf.math.reduce_variance(wave) + 1e-7)
        codes = tf.strings.unicode_decode(tf.strings.lower(example["transcript"]), "UTF-8")
        ids = tf.gather(tf.constant(table), tf.clip_by_value(codes, 0, 255))
        return wave, tf.shape(wave)[0], tf.boolean_mask(ids, ids > 0)

    ds = examples.map(prepare, num_parallel_calls=tf.data.AUTOTUNE)
    ds = ds.cache() if cache else ds
    ds = ds.shuffle(2000, seed=seed) if shuffle else ds
    boundaries = [int(s * sample_rate) for s in bucket_seconds]
    sizes = [batch_size] * (len(boundaries) + 1)
    ds = ds.bucket_by_sequence_length(lambda wave, length, ids: length, boundaries, sizes)
    to_model = lambda wave, length, ids: (  # noqa: E731
        {"waveform": wave, "padding_mask": tf.sequence_mask(length, tf.shape(wave)[1])}, ids)
    return ds.map(to_model, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)


def build_ctc_recognizer(hidden_dim, num_layers, num_heads, intermediate_dim, conv_filters=512, dropout=0.1,
                         init_from=None, characters=CHARACTERS, name="wav2vec2_ctc"):
    """A built :class:`CTCRecognizer` over a new ``Wav2Vec2Backbone``; ``init_from``: a saved ``.keras`` model
    (a ``Wav2Vec2Pretrainer`` or recognizer) of the same sizes whose backbone weights it starts from."""
    from layers.wav2vec2 import Wav2Vec2Backbone

    backbone = Wav2Vec2Backbone(hidden_dim, num_layers, num_heads, intermediate_dim, conv_filters=conv_filters,
                                pos_conv_groups=math.gcd(16, hidden_dim), dropout=dropout, name="backbone")
    model = CTCRecognizer(backbone, len(characters), name=name)
    second = np.ones((1, 16000), bool)
    model({"waveform": second.astype("float32"), "padding_mask": second})  # builds it
    if init_from:
        from apps.trainer import load_checkpoint

        start = getattr(load_checkpoint(init_from), "backbone", None)
        if start is None or [w.shape for w in start.weights] != [w.shape for w in backbone.weights]:
            raise ValueError(f"--init-from {init_from} holds no Wav2Vec2 backbone of these sizes")
        backbone.set_weights(start.get_weights())
    return model


def transcribe(model, waveforms, beam_size=1, characters=CHARACTERS):
    """The transcripts (list of str) of float waveforms with a :class:`CTCRecognizer`: best path
    (:func:`ctc_greedy_decode`) for ``beam_size`` 1, else :func:`ctc_beam_search_decode` with that width."""
    batch = pad_waveforms(waveforms)
    logits = model({"waveform": batch["waveform"], "padding_mask": batch["padding_mask"]}, training=False)
    lengths = model.logit_lengths(batch["padding_mask"])
    if beam_size > 1:
        return [paths[0] for paths in ctc_beam_search_decode(logits, lengths, beam_size, characters=characters)[0]]
    return ctc_greedy_decode(logits, lengths, characters=characters)


class CTCExport(tf.Module):
    """A :class:`CTCRecognizer`'s release graph: WAV bytes in, transcripts out, with the signatures of
    ``apps.export.GenerationExport`` so the release tools and the demo serve it the same way.

    ``serving_default`` (``<input>`` -> ``<output>``, ``status``); ``<options>``
    (with ``beam_size`` and ``max_length``: best path for 1, else prefix beam
    search of that width; at most ``max_length`` characters) -> ``<output>``,
    ``token_ids``, ``lengths``, ``status``; and ``stream_start`` /
    ``stream_step`` / ``stream_finish``: a CTC model emits the whole
    transcript in one pass, so the state is the finished result and
    ``stream_step`` reports ``running`` false at once. No ``<tokens>``
    signature: the release has no TFLite model.

    Args:
        model: a built :class:`CTCRecognizer`.
        preprocessor: ``pipelines.preprocessing.AudioPreprocessor`` (its :meth:`waveform_inputs`).
        names: ``apps.export.SignatureNames``.
        max_new_tokens: int, the longest transcript in characters.
        num_beams: int, ``serving_default``'s beam width (one of ``beam_sizes``).
        beam_sizes: tuple of int, the widths ``<options>`` accepts.
        weights_dtype: ``"float32"``, ``"float16"`` or ``"int8"`` (``apps.export``'s stored weights).
        characters: str, class ``i >= 1`` is ``characters[i - 1]``.
    """

    def __init__(self, model, preprocessor, names, max_new_tokens=192, num_beams=1, beam_sizes=(1, 2, 4),
                 weights_dtype="float32", characters=CHARACTERS):
        from apps.export import _stored_weights

        super().__init__(name="ctc_export")
        self.model, self.preprocessor, self.names = model, preprocessor, names
        self.max_new_tokens, self.num_beams = int(max_new_tokens), int(num_beams)
        self.beam_sizes = tuple(sorted({int(b) for b in beam_sizes}))
        if self.num_beams not in self.beam_sizes:
            raise ValueError(f"num_beams={num_beams} must be one of beam_sizes {list(self.beam_sizes)}")
        self.weights_dtype, self._stored = weights_dtype, _stored_weights(model, weights_dtype)
        self.characters = tf.constant(["", *characters])  # the blank (and padding) spells nothing
        self._state_names = ["state_000", "state_001", "state_002", "state_003"]
        raw = tf.TensorSpec(None, tf.string, name=names.input)
        options = [tf.TensorSpec(None, tf.int32, name="beam_size"), tf.TensorSpec(None, tf.int32, name="max_length")]
        state = [tf.TensorSpec([None], tf.string, name=self._state_names[0]),
                 tf.TensorSpec([None, self.max_new_tokens], tf.int32, name=self._state_names[1]),
                 tf.TensorSpec([None], tf.int32, name=self._state_names[2]),
                 tf.TensorSpec([None], tf.string, name=self._state_names[3])]
        self.serving_default = self._function(self._serving_default, [raw])
        self.options = self._function(self._options, [raw, *options])
        self.stream_start = self._function(self._stream_start, [raw, *options])
        self.stream_step = self._function(self._stream_step, state)
        self.stream_finish = self._function(self._stream_finish, state)

    def _function(self, body, input_signature):
        from apps.export import signature_function

        return signature_function(body, input_signature, self._stored)

    def get_config(self):
        return {**self.preprocessor.get_config(), "names": dataclasses.asdict(self.names), "decoder": "ctc",
                "max_new_tokens": self.max_new_tokens, "num_beams": self.num_beams,
                "beam_sizes": list(self.beam_sizes), "weights_dtype": self.weights_dtype,
                "state_names": self._state_names}

    def signatures(self):
        return {"serving_default": self.serving_default, self.names.options: self.options,
                "stream_start": self.stream_start, "stream_step": self.stream_step, "stream_finish": self.stream_finish}

    def _decode(self, logits, lengths, beam_size):
        """Class ids ``(batch, max_new_tokens)`` (0-padded) of the best path or the best beam."""
        if len(self.beam_sizes) == 1:
            index = tf.constant(0)
        else:
            index = tf.argmax(tf.cast(tf.equal(tf.constant(self.beam_sizes), beam_size), tf.int32), output_type=tf.int32)

        def search(width):
            if width == 1:  # best path: the frame argmax, repeats merged, blanks dropped
                ids = tf.argmax(logits, axis=-1, output_type=tf.int32)
                previous = tf.pad(ids[:, :-1], [[0, 0], [1, 0]], constant_values=-1)
                keep = (ids != BLANK_INDEX) & (ids != previous) & tf.sequence_mask(lengths, tf.shape(ids)[1])
                return lambda: tf.ragged.boolean_mask(ids, keep).to_tensor(0, shape=[None, self.max_new_tokens])
            return lambda: tf.cast(keras.ops.ctc_decode(
                logits, lengths, strategy="beam_search", beam_width=width, top_paths=1, mask_index=BLANK_INDEX,
            )[0][0], tf.int32)

        ids = tf.switch_case(index, [search(width) for width in self.beam_sizes])
        ids = tf.where(ids > 0, ids, 0)  # beam search pads with -1
        width = tf.shape(ids)[1]
        ids = tf.pad(ids, [[0, 0], [0, tf.maximum(self.max_new_tokens - width, 0)]])[:, : self.max_new_tokens]
        return tf.ensure_shape(ids, [None, self.max_new_tokens])

    def _run(self, raw, beam_size, max_length):
        from apps.export import _check_scalar
        from pipelines.preprocessing import BLANK_STATUSES

        beam_size = _check_scalar(beam_size, "beam_size", None, None, allowed=self.beam_sizes)
        max_length = _check_scalar(max_length, "max_length", 1, self.max_new_tokens)
        inputs, status = self.preprocessor.waveform_inputs(raw)
        # Each row to zero mean and unit variance over its samples (wav2vec2_pretraining.normalize_waveform).
        mask = tf.cast(inputs["padding_mask"], tf.float32)
        count = tf.maximum(tf.reduce_sum(mask, axis=1, keepdims=True), 1.0)
        mean = tf.reduce_sum(inputs["waveform"] * mask, axis=1, keepdims=True) / count
        variance = tf.reduce_sum(tf.square(inputs["waveform"] - mean) * mask, axis=1, keepdims=True) / count
        inputs = {**inputs, "waveform": (inputs["waveform"] - mean) * tf.math.rsqrt(variance + 1e-7) * mask}
        logits = self.model(inputs, training=False)
        ids = self._decode(tf.cast(logits, tf.float32), self.model.logit_lengths(inputs["padding_mask"]), beam_size)
        blank = tf.reduce_any(tf.stack([tf.equal(status, name) for name in BLANK_STATUSES]), axis=0)
        ids = tf.where(blank[:, None] | (tf.range(self.max_new_tokens)[None] >= max_length), 0, ids)
        texts = tf.strings.reduce_join(tf.gather(self.characters, ids), axis=1)
        return {self.names.output: texts, "token_ids": ids, "lengths": tf.reduce_sum(tf.cast(ids > 0, tf.int32), 1),
                "status": status}

    def _serving_default(self, raw):
        out = self._run(raw, self.num_beams, self.max_new_tokens)
        return {self.names.output: out[self.names.output], "status": out["status"]}

    def _options(self, raw, beam_size, max_length):
        return self._run(raw, beam_size, max_length)

    def _stream_start(self, raw, beam_size, max_length):
        out = self._run(raw, beam_size, max_length)
        state = [out[self.names.output], out["token_ids"], out["lengths"], out["status"]]
        return {**dict(zip(self._state_names, state)), "status": out["status"]}

    def _stream_step(self, texts, ids, lengths, status):
        state = dict(zip(self._state_names, (texts, ids, lengths, status)))
        return {**state, "partial": texts, "running": tf.constant(False)}

    def _stream_finish(self, texts, ids, lengths, status):
        return {self.names.output: texts, "token_ids": ids, "lengths": lengths, "status": status}
