"""Translation export: strings in, strings out, for TF Serving and TFLite (textbook section 10.1).

Following the TensorFlow Transformer tutorial's ``ExportTranslator``,
:class:`ExportTranslator` is a ``tf.Module`` whose functions take a batch of
raw English sentences and return translations, with everything in between in
one graph: WordPiece tokenization (``pipelines.wordpiece``, tf_text
``FastBertNormalizer`` + ``FastWordpieceTokenizer``), the encoder, beam search
with the KV-cache (``layers.generation.TextGenerator``) and detokenization.
The graph uses core TensorFlow ops plus tf_text ops only, which the TF Serving
2.20 binary links; there is no Python tokenizer and no ``py_function``.

SavedModel signatures (:data:`SIGNATURES`, pinned by the tests: they are the API):

- ``serving_default``: ``sentences`` string ``(None,)`` -> ``translations``
  string ``(None,)``, with the export's beam size and length. With a target
  ``language``, the detokenized text gets the usual spacing around
  punctuation back (``apps.translation.data.restore_spacing_graph``,
  ``tf.strings.regex_replace``): ``"Datei öffnen ."`` becomes ``"Datei öffnen."``.
- ``translate``: ``sentences``, ``beam_size`` int32 scalar (one of the
  export's ``beam_sizes``, default :data:`BEAM_SIZES`) and ``max_length`` int32 scalar (1 to
  ``max_new_tokens``) -> ``translations``, ``token_ids`` int32
  ``(None, max_new_tokens)`` and ``lengths`` int32 ``(None,)``. The demo's
  decoding options. ``max_length`` keeps the first word pieces of the
  beam-search result (the search itself always runs to ``max_new_tokens``).
  Spacing restored as in ``serving_default``.
- ``translate_tokens``: ``sentences`` -> ``translations``, ``token_ids``,
  ``lengths`` with the export's beam size: the function converted to TFLite.
  Its ``translations`` keep WordPiece spacing (``"Datei öffnen ."``): the
  regular expressions have no TFLite kernel, so :class:`TFLiteTranslator`
  applies the same rules in Python (``apps.translation.data.restore_spacing``).

TFLite (:func:`convert_to_tflite`, :class:`TFLiteTranslator`): the float model
and the int8 dynamic-range model (``optimizations=[tf.lite.Optimize.DEFAULT]``,
weights int8, activations float, no representative data) both run the whole
decode with TFLite built-ins plus the tf_text ops that have TFLite kernels
(:data:`TFTEXT_TFLITE_OPS`); there is no Flex op. Strings go in and come out:
the tf_text kernels run in the ``ai_edge_litert`` interpreter when registered
with ``tensorflow_text``'s ``SELECT_TFTEXT_OPS`` through
``InterpreterWithCustomOps`` (measured with tensorflow-text 2.21.1 and
ai-edge-litert 2.3.0; see ``pipelines/wordpiece.py``). The one step outside
the TFLite model is the punctuation spacing above (``translator.json``
beside the files names the language).

Example::

    translator = ExportTranslator(model, source_tokenizer, target_tokenizer, num_beams=4)
    translator.serving_default(tf.constant(["Open the file."]))["translations"]
    write_saved_model(translator, "saved_models/translation_en_de/1")
    paths = write_tflite("saved_models/translation_en_de/1", "saved_models/translation_en_de/tflite")
    TFLiteTranslator(paths["int8"])(["Open the file."])["translations"]
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from layers.generation import TextGenerator
from layers.generation_export import flex_ops, tflite_ops
from layers.samplers import BeamSampler
from layers.validation import check_choice, check_positive_float, check_positive_int

__all__ = [
    "BEAM_SIZES",
    "ExportTranslator",
    "SIGNATURES",
    "TFLITE_FILES",
    "TFLITE_SIGNATURE",
    "TFLiteTranslator",
    "TFTEXT_TFLITE_OPS",
    "convert_to_tflite",
    "custom_ops",
    "evaluate_saved_model",
    "evaluate_tflite",
    "read_settings",
    "write_saved_model",
    "write_tflite",
]

BEAM_SIZES = (1, 2, 4)
TFLITE_SIGNATURE = "translate_tokens"
TFLITE_FILES = {"float": "translation_float.tflite", "int8": "translation_int8.tflite"}
TFLITE_FOLDER = "tflite"  # beside the version folders of a release: saved_models/translation_en_de/tflite/
TFLITE_README = "README.txt"
# Beside the SavedModel, under assets/: the export settings and both tokenizers
# (pipelines.wordpiece format, the layout apps.translation.data.load_tokenizers reads).
SETTINGS_FILE = "translator.json"
TOKENIZERS_FOLDER = "tokenizers"
# tf_text ops with TFLite kernels (registered by ``SELECT_TFTEXT_OPS``) that
# were measured to run in the ai_edge_litert interpreter; anything else custom
# would not. (``TFText>FastSentencepieceDetokenize`` converts but crashes
# LiteRT, see pipelines/sentencepiece.py, so it is not here.)
TFTEXT_TFLITE_OPS = frozenset(
    {
        "FastBertNormalize",
        "FastWordpieceTokenizeWithOffsets",
        "TFText>FastWordpieceDetokenize",
        "TFText>FastSentencepieceTokenize",
        "RaggedTensorToTensor",
    }
)
# Pinned API: name -> ({input: (dtype, shape)}, {output: (dtype, shape)}).
SIGNATURES = {
    "serving_default": ({"sentences": ("string", (None,))}, {"translations": ("string", (None,))}),
    "translate": (
        {"sentences": ("string", (None,)), "beam_size": ("int32", ()), "max_length": ("int32", ())},
        {"translations": ("string", (None,)), "token_ids": ("int32", (None, None)), "lengths": ("int32", (None,))},
    ),
    TFLITE_SIGNATURE: (
        {"sentences": ("string", (None,))},
        {"translations": ("string", (None,)), "token_ids": ("int32", (None, None)), "lengths": ("int32", (None,))},
    ),
}


def _string_batch(name="sentences"):
    return tf.TensorSpec([None], tf.string, name=name)


class ExportTranslator(tf.Module):
    """Section 10.1, machine translation as one graph: ``y = detok(beam_search(Decoder, Encoder(tok(x))))``.

    Args:
        model: a built encoder-decoder ``layers.transformer_models.Transformer``.
        source_tokenizer: ``pipelines.wordpiece.WordpieceTokenizer`` of the source language.
        target_tokenizer: ``WordpieceTokenizer`` of the target language (its
            ``start_id`` starts the decoder, ``end_id`` stops it).
        source_length: int, encoder tokens kept per sentence (longer sentences
            are cut). Default 64.
        max_new_tokens: int, most target word pieces per translation
            (``[END]`` included). Default 64.
        num_beams: int, the export's beam size (1 is greedy search). Default 4.
        beam_sizes: tuple of int or None, the beam sizes the ``translate``
            signature offers; ``num_beams`` must be one of them. Each is one
            more decode graph to trace and store. Default None:
            :data:`BEAM_SIZES` and ``num_beams``.
        length_penalty: float >= 0, beam-search length normalisation exponent. Default 1.0.
        source_markers: bool, wrap the source ids in ``[START] ... [END]``, as
            the training pipeline does. Default True.
        language: str or None, target language code whose spacing rules
            (``apps.translation.data.restore_spacing``) rewrite the
            detokenized text; None keeps WordPiece spacing. Default None.

    Functions (``tf.function``; see :data:`SIGNATURES`):
        ``serving_default(sentences)``, ``translate(sentences, beam_size,
        max_length)``, ``translate_tokens(sentences)``: strings ``(batch,)`` in,
        dicts of tensors out.

    Example::

        translator = ExportTranslator(model, en_tokenizer, de_tokenizer)
        translator.serving_default(tf.constant(["Open the file."]))
        # {"translations": <tf.Tensor: shape=(1,), dtype=string, ...>}
    """

    def __init__(
        self,
        model,
        source_tokenizer,
        target_tokenizer,
        *,
        source_length=64,
        max_new_tokens=64,
        num_beams=4,
        length_penalty=1.0,
        source_markers=True,
        beam_sizes=None,
        language=None,
    ):
        super().__init__(name="export_translator")
        if not getattr(model, "is_encoder_decoder", False):
            raise ValueError(
                f"ExportTranslator needs an encoder-decoder Transformer, got {type(model).__name__}; "
                "build it with layers.transformer_models.Transformer"
            )
        self.model = model
        self.source_tokenizer = source_tokenizer
        self.target_tokenizer = target_tokenizer
        self.source_length = check_positive_int("source_length", source_length)
        if model.position_encoding == "learned" and self.source_length > model.max_length:
            raise ValueError(
                f"source_length={self.source_length} is longer than the model's {model.max_length} learned positions"
            )
        self.max_new_tokens = check_positive_int("max_new_tokens", max_new_tokens)
        num_beams = check_positive_int("num_beams", num_beams)
        beam_sizes = (*BEAM_SIZES, num_beams) if beam_sizes is None else beam_sizes
        self.beam_sizes = tuple(sorted({check_positive_int("beam_sizes entry", b) for b in beam_sizes}))
        self.num_beams = check_choice("num_beams", num_beams, self.beam_sizes)
        self.language = language
        self.length_penalty = check_positive_float("length_penalty", length_penalty, allow_zero=True)
        self.source_markers = bool(source_markers)
        # One decoder per beam size; cache for [START] + max_new_tokens positions.
        self._generators = {
            beams: TextGenerator(
                model,
                sampler="greedy" if beams == 1 else BeamSampler(beams, self.length_penalty),
                max_new_tokens=self.max_new_tokens,
                end_token_id=target_tokenizer.end_id,
                pad_token_id=target_tokenizer.pad_id,
                cache_length=self.max_new_tokens + 1,
                jit_compile=False,
            )
            for beams in self.beam_sizes
        }
        # autograph=False: every loop is an explicit tf.while_loop (TextGenerator).
        self._decode = {
            beams: tf.function(lambda sentences, beams=beams: self._translate(sentences, beams), autograph=False)
            for beams in self.beam_sizes
        }
        self.serving_default = tf.function(
            self._serving_default, input_signature=[_string_batch()], autograph=False
        )
        self.translate = tf.function(
            self._translate_with_options,
            input_signature=[
                _string_batch(),
                tf.TensorSpec([], tf.int32, name="beam_size"),
                tf.TensorSpec([], tf.int32, name="max_length"),
            ],
            autograph=False,
        )
        self.translate_tokens = tf.function(
            self._translate_tokens, input_signature=[_string_batch()], autograph=False
        )

    def get_config(self):
        """The export settings, recorded beside the exported files."""
        return {
            "source_length": self.source_length,
            "max_new_tokens": self.max_new_tokens,
            "num_beams": self.num_beams,
            "length_penalty": self.length_penalty,
            "source_markers": self.source_markers,
            "beam_sizes": list(self.beam_sizes),
            "language": self.language,
            "start_id": self.target_tokenizer.start_id,
            "end_id": self.target_tokenizer.end_id,
            "pad_id": self.target_tokenizer.pad_id,
        }

    # -- graph ------------------------------------------------------------------------------

    def encode_source(self, sentences):
        """Strings ``(batch,)`` -> source ids ``(batch, source_length)`` int32 and lengths ``(batch,)``.

        Mirrors the training pipeline: WordPiece ids, ``[START]``/``[END]``
        around them when ``source_markers``, cut to ``source_length`` (the
        ``[END]`` is kept), padded with ``[PAD]``.
        """
        tokenizer = self.source_tokenizer
        ids = tokenizer.tokenize(sentences)
        body = self.source_length - 2 if self.source_markers else self.source_length
        lengths = tf.minimum(tf.cast(ids.row_lengths(), tf.int32), body)
        # to_tensor with a static width cuts long rows (tf_text's RaggedTensorToTensor has a TFLite kernel).
        dense = ids.to_tensor(tokenizer.pad_id, shape=[None, body])
        if self.source_markers:
            batch = tf.shape(dense)[0]
            start = tf.fill([batch, 1], tf.constant(tokenizer.start_id, tf.int32))
            padding = tf.fill([batch, 1], tf.constant(tokenizer.pad_id, tf.int32))
            dense = tf.concat([start, dense, padding], axis=1)
            end_at = tf.one_hot(lengths + 1, self.source_length, dtype=tf.int32) > 0
            dense = tf.where(end_at, tf.constant(tokenizer.end_id, tf.int32), dense)
            lengths = lengths + 2
        return dense, lengths

    def _translate(self, sentences, beams):
        """``{translations, token_ids, lengths}`` with ``beams`` beams (1: greedy)."""
        source, source_lengths = self.encode_source(sentences)
        batch = tf.shape(source)[0]
        start = tf.fill([batch, 1], tf.constant(self.target_tokenizer.start_id, tf.int32))
        outputs = self._generators[beams].generate_step(
            start,
            tf.ones([batch], tf.int32),
            encoder_token_ids=source,
            encoder_padding_mask=tf.sequence_mask(source_lengths, self.source_length),
        )
        # Drop the [START] column; after [END] the generator wrote [PAD].
        token_ids = tf.slice(outputs["token_ids"], [0, 1], [-1, self.max_new_tokens])
        lengths = outputs["lengths"] - 1
        return {
            "translations": self.target_tokenizer.detokenize(token_ids),
            "token_ids": token_ids,
            "lengths": lengths,
        }

    def _restore_spacing(self, texts):
        if self.language is None:
            return texts
        from apps.translation.data import restore_spacing_graph

        return restore_spacing_graph(texts, self.language)

    def _serving_default(self, sentences):
        return {"translations": self._restore_spacing(self._decode[self.num_beams](sentences)["translations"])}

    def _translate_tokens(self, sentences):
        return self._decode[self.num_beams](sentences)

    def _translate_with_options(self, sentences, beam_size, max_length):
        known = tf.constant(self.beam_sizes, tf.int32)
        check = tf.debugging.assert_equal(
            tf.reduce_any(tf.equal(known, beam_size)),
            True,
            message=f"beam_size must be one of {list(self.beam_sizes)}",
        )
        check_length = tf.debugging.assert_less_equal(
            max_length, self.max_new_tokens, message=f"max_length must be at most {self.max_new_tokens}"
        )
        with tf.control_dependencies([check, check_length, tf.debugging.assert_positive(max_length)]):
            branch = tf.argmax(tf.cast(tf.equal(known, beam_size), tf.int32), output_type=tf.int32)
        outputs = tf.switch_case(branch, [lambda beams=beams: self._decode[beams](sentences) for beams in self.beam_sizes])
        lengths = tf.minimum(outputs["lengths"], max_length)
        token_ids = tf.where(
            tf.sequence_mask(lengths, self.max_new_tokens),
            outputs["token_ids"],
            tf.constant(self.target_tokenizer.pad_id, tf.int32),
        )
        return {
            "translations": self._restore_spacing(self.target_tokenizer.detokenize(token_ids)),
            "token_ids": token_ids,
            "lengths": lengths,
        }


def write_saved_model(translator, directory):
    """Write ``translator`` as a SavedModel with the :data:`SIGNATURES` under ``directory``.

    ``assets/translator.json`` records the export settings and
    ``assets/tokenizers/{source,target}/`` the tokenizers (vocabulary and
    settings), so the release alone is enough for the demo and for TFLite.

    The Keras ExportArchive freezes the model's variables into the functions
    the TFLite converter reads (a plain ``tf.saved_model.save`` of a module
    holding a Keras 3 model leaves ``READ_VARIABLE`` ops inside the decode
    loop, which the interpreter cannot resolve). Raises ``FileExistsError`` if
    ``directory`` exists.
    """
    directory = Path(directory)
    if directory.exists():
        raise FileExistsError(f"{directory} already exists; choose another version or remove it")
    archive = keras.export.ExportArchive()
    # No archive.track(model): the endpoints track the variables they read, once.
    # Tracking the model too saves every weight twice (Keras variables and
    # their tf.Variables under separate checkpoint keys: twice the file size).
    archive.source_tokenizer = translator.source_tokenizer  # tf.Modules: their assets travel with the archive
    archive.target_tokenizer = translator.target_tokenizer
    archive.add_endpoint("serving_default", translator.serving_default)
    archive.add_endpoint("translate", translator.translate)
    archive.add_endpoint(TFLITE_SIGNATURE, translator.translate_tokens)
    try:
        archive.write_out(str(directory), verbose=False)
    except BaseException:
        shutil.rmtree(directory, ignore_errors=True)
        raise
    assets = directory / "assets"
    assets.mkdir(exist_ok=True)
    (assets / SETTINGS_FILE).write_text(json.dumps(translator.get_config(), indent=2) + "\n")
    for side in ("source", "target"):
        getattr(translator, f"{side}_tokenizer").save(assets / TOKENIZERS_FOLDER / side)
    return directory


def read_settings(saved_model_dir):
    """The export settings (:meth:`ExportTranslator.get_config`) recorded beside a SavedModel."""
    path = Path(saved_model_dir) / "assets" / SETTINGS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: {saved_model_dir} was not written by write_saved_model")
    return json.loads(path.read_text())


def custom_ops(tflite_model):
    """Names of the non-builtin operators of a TFLite model (Flex and tf_text ops)."""
    from tensorflow.lite.python import schema_py_generated as schema

    builtins = {name for name in vars(schema.BuiltinOperator) if not name.startswith("_")}
    return sorted(set(tflite_ops(tflite_model)) - builtins)


def convert_to_tflite(saved_model_dir, quantize=False, per_channel=False):
    """Convert the ``translate_tokens`` signature of an exported translator to TFLite bytes.

    Args:
        saved_model_dir: a SavedModel written by :func:`write_saved_model`.
        quantize: bool, int8 dynamic-range quantization of the weights
            (``optimizations=[tf.lite.Optimize.DEFAULT]``, no representative
            dataset). Default False (float32).
        per_channel: bool, one int8 scale per output channel instead of one
            per weight tensor. Default False: measured on the release
            configuration of session 2 (9.6M parameters), the per-channel int8 file holds
            the tied decoder embedding (the largest matrix, read in the
            prefill graph and in the decode loop's) twice and is 35.5% of
            the float file; per tensor it holds it once: 28.8%.

    Raises:
        ValueError: if the model would need Flex ops or custom ops outside
            :data:`TFTEXT_TFLITE_OPS`.
    """
    converter = tf.lite.TFLiteConverter.from_saved_model(str(saved_model_dir), signature_keys=[TFLITE_SIGNATURE])
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    converter.allow_custom_ops = True  # for the tf_text ops only; checked below
    if quantize:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter._experimental_disable_per_channel = not per_channel  # noqa: SLF001 - the converter's only switch for it
    try:
        tflite_model = converter.convert()
    except Exception as error:  # ConverterError lists the ops it could not lower
        raise ValueError(
            "the translation graph needs ops outside the TFLite built-ins and the tf_text TFLite kernels "
            f"(the Flex delegate does not run in the Python interpreter since TF 2.20):\n{error}"
        ) from error
    unknown = sorted(set(custom_ops(tflite_model)) - TFTEXT_TFLITE_OPS)
    if flex_ops(tflite_model) or unknown:
        raise ValueError(
            f"converted model needs custom ops {unknown} without a TFLite kernel from tf_text "
            f"(allowed: {sorted(TFTEXT_TFLITE_OPS)})"
        )
    return tflite_model


def write_tflite(saved_model_dir, output_dir):
    """Write the float and the int8 TFLite translators (:data:`TFLITE_FILES`) under ``output_dir``.

    Beside them: both vocabularies (``vocab_<side>.txt``, for reading the
    ``token_ids`` output), the export settings (``translator.json``: the
    language whose spacing rules :class:`TFLiteTranslator` applies) and
    ``README.txt`` on how to run them.

    Returns:
        dict ``{"float": path, "int8": path}``.
    """
    saved_model_dir, output_dir = Path(saved_model_dir), Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    paths = {}
    for kind, quantize in (("float", False), ("int8", True)):
        paths[kind] = output_dir / TFLITE_FILES[kind]
        paths[kind].write_bytes(convert_to_tflite(saved_model_dir, quantize=quantize))
    assets = saved_model_dir / "assets"
    for side in ("source", "target"):
        shutil.copyfile(assets / TOKENIZERS_FOLDER / side / "vocab.txt", output_dir / f"vocab_{side}.txt")
    shutil.copyfile(assets / SETTINGS_FILE, output_dir / SETTINGS_FILE)
    (output_dir / TFLITE_README).write_text(_tflite_readme(paths, read_settings(saved_model_dir)), encoding="utf-8")
    return paths


def _tflite_readme(paths, settings):
    sizes = ", ".join(f"{p.name} {p.stat().st_size / 1e6:.1f} MB" for p in paths.values())
    spacing = (
        f"The translations keep WordPiece spacing ('Datei öffnen .'); apply the {settings['language']!r} rules of\n"
        "apps/translation/data.py (restore_spacing) to get 'Datei öffnen.', as TFLiteTranslator does.\n"
        if settings.get("language")
        else ""
    )
    return (
        "tfsuite translation for TFLite: strings in, strings out.\n\n"
        f"Files: {sizes}.\n"
        f"Signature {TFLITE_SIGNATURE!r}: sentences string (batch,) -> translations string (batch,),\n"
        "token_ids int32 (batch, max_new_tokens) (ids in vocab_target.txt), lengths int32 (batch,).\n"
        f"{spacing}"
        "The model uses TFLite built-in ops and tf_text's TFLite kernels; register those:\n\n"
        "    from ai_edge_litert.interpreter import InterpreterWithCustomOps\n"
        "    from tensorflow_text.core.pybinds import tflite_registrar\n"
        "    interpreter = InterpreterWithCustomOps(model_path='translation_int8.tflite',\n"
        "        custom_op_registerers=tflite_registrar.SELECT_TFTEXT_OPS)\n"
        f"    interpreter.get_signature_runner({TFLITE_SIGNATURE!r})(sentences=np.array([b'Open the file.']))\n"
    )


class TFLiteTranslator:
    """Run a TFLite translator from :func:`write_tflite` with the LiteRT interpreter.

    Args:
        model: path to a ``.tflite`` file, or its bytes.
        num_threads: int or None, interpreter threads. Default None (LiteRT's default).
        language: str or None, whose spacing rules to apply to the
            translations (``apps.translation.data.restore_spacing``). Default:
            the ``language`` of the ``translator.json`` beside a model file.

    Call: ``translator(sentences)`` with a list of ``str`` returns
    ``{"translations": list of str, "token_ids": int32 array, "lengths": int32 array}``;
    the translations equal the SavedModel's ``serving_default`` ones.
    """

    _BESIDE = object()

    def __init__(self, model, num_threads=None, language=_BESIDE):
        from ai_edge_litert.interpreter import InterpreterWithCustomOps
        from tensorflow_text.core.pybinds import tflite_registrar

        in_memory = isinstance(model, (bytes, bytearray))
        if language is self._BESIDE:
            settings = None if in_memory else Path(model).parent / SETTINGS_FILE
            language = json.loads(settings.read_text()).get("language") if settings and settings.is_file() else None
        self.language = language
        source = {"model_content": model} if in_memory else {"model_path": str(model)}
        self.interpreter = InterpreterWithCustomOps(
            custom_op_registerers=tflite_registrar.SELECT_TFTEXT_OPS, num_threads=num_threads, **source
        )
        self.runner = self.interpreter.get_signature_runner(TFLITE_SIGNATURE)

    def __call__(self, sentences):
        if isinstance(sentences, str):
            raise ValueError("TFLiteTranslator expects a list of sentences, got a single string; wrap it in a list")
        batch = np.array([s.encode("utf-8") if isinstance(s, str) else bytes(s) for s in sentences], dtype=object)
        if batch.ndim != 1 or batch.size == 0:
            raise ValueError(f"TFLiteTranslator expects a non-empty list of sentences, got shape {batch.shape}")
        outputs = self.runner(sentences=batch)
        translations = [t.decode("utf-8") for t in outputs["translations"]]
        if self.language is not None:
            from apps.translation.data import restore_spacing

            translations = restore_spacing(translations, self.language)
        return {
            "translations": translations,
            "token_ids": np.asarray(outputs["token_ids"]),
            "lengths": np.asarray(outputs["lengths"]),
        }


def _score(translate_batch, label, sources, references, language, batch_size):
    """Translate ``sources`` in batches with ``translate_batch`` (list of str -> list of str), print the
    speed after ``label``, and return ``apps.translation.metrics.corpus_scores`` against ``references``."""
    import time

    from apps.translation import metrics

    start = time.perf_counter()
    hypotheses = []
    for begin in range(0, len(sources), batch_size):
        hypotheses.extend(translate_batch(sources[begin : begin + batch_size]))
    seconds = time.perf_counter() - start
    print(
        f"{label}: {len(sources)} test sentences in {seconds:.1f} s ({len(sources) / seconds:.1f} sentences/s)",
        flush=True,
    )
    return metrics.corpus_scores(hypotheses, references, language)


def evaluate_tflite(release_dir, kind, sources, references, language, batch_size=64):
    """Corpus BLEU and chrF of ``release_dir/tflite``'s ``kind`` (``"float"``/``"int8"``) model on the given pairs.

    Prints the number of sentences and the speed; returns
    ``{"bleu": ..., "chrf": ...}`` (``apps.translation.metrics.corpus_scores``).
    """
    check_choice("TFLite model", kind, tuple(TFLITE_FILES))
    path = Path(release_dir) / TFLITE_FOLDER / TFLITE_FILES[kind]
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found; convert the release first: `tfsuite export translation --format tflite`"
        )
    translator = TFLiteTranslator(path)
    label = f"TFLite {kind} ({path.name}, {path.stat().st_size / 1e6:.1f} MB)"
    return _score(lambda batch: translator(batch)["translations"], label, sources, references, language, batch_size)


def evaluate_saved_model(saved_model_dir, sources, references, language, batch_size=64):
    """Corpus BLEU and chrF of a released SavedModel's ``serving_default`` on the given pairs.

    What TF Serving would answer: raw sentences in, translations out of the
    graph (the export's beam size and length). Prints the number of sentences
    and the speed; returns ``{"bleu": ..., "chrf": ...}``.
    """
    saved_model_dir = Path(saved_model_dir)
    if not (saved_model_dir / "saved_model.pb").is_file():
        raise FileNotFoundError(f"no SavedModel in {saved_model_dir}/ (saved_model.pb is missing)")
    settings = read_settings(saved_model_dir)
    serving = tf.saved_model.load(str(saved_model_dir)).signatures["serving_default"]

    def translate_batch(batch):
        outputs = serving(sentences=tf.constant(batch, tf.string))["translations"].numpy()
        return [t.decode("utf-8") for t in outputs]

    label = f"SavedModel {saved_model_dir} (beam {settings.get('num_beams')})"
    return _score(translate_batch, label, sources, references, language, batch_size)
