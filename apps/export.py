"""Export: one SavedModel exporter for every app, one TFLite converter, one LiteRT runner.

Two kinds of release come out of here:

* :func:`export_saved_model`: ``serving_default`` from an app's
  ``serving_signature`` / ``serving_outputs`` (the Fashion-MNIST classifier, QA)
  of the network ``release_model`` makes (QA: its vocabulary pruned), with
  ``assets/config.json`` and ``assets/model.json`` (:func:`read_model_assets`
  rebuilds the network from them), or the app's own ``write_saved_model``;
* :class:`GenerationExport` + :func:`write_generation_saved_model`: raw input
  in, text out, for every generative app (translation, summarization, code,
  captions, speech). Following the TensorFlow Transformer tutorial's
  ``ExportTranslator``, everything is in the graph: the app's preprocessor
  (``pipelines/preprocessing.py``: tokenizer or image decoder and the status of each
  row), ``model.encode`` (token ids, pixels or features alike), the decode loop
  with the KV-cache (``layers.generation.TextGenerator``, one graph for every
  beam size), and detokenization. Core TensorFlow and tensorflow-text ops
  only, which the TF Serving binary links: no ``py_function``.

Signatures of a generation export (``names`` picks the app's words; the
translation release calls them ``translate`` / ``translate_tokens`` and its
output ``translations``):

=================== ============================================= =============================================
signature           inputs                                        outputs
=================== ============================================= =============================================
``serving_default`` ``<input>`` (batch,)                          ``<output>`` (batch,), ``status`` (batch,)
``<options>``       ``<input>``, ``beam_size``, ``max_length``    ``<output>``, ``token_ids``, ``lengths``, ``status``
``<tokens>``        ``<input>`` (TFLite's: strings, pixels, or    ``<output>`` (no spacing rules), ``token_ids``,
                    ``log_mel`` frames)                           ``lengths``, ``input_tokens``, ``unknown_tokens``
``stream_start``    as ``<options>``                              the decode loop's state, flattened; ``status``
``stream_step``     the state                                     the next state, ``partial`` (batch,), ``running``
``stream_finish``   the state                                     as ``<options>``
=================== ============================================= =============================================

The stream signatures are the loop of ``<options>`` cut open (its
``start``/``step``/``finish``): a client that calls ``stream_step`` until
``running`` is false gets the ``<options>`` output exactly, and sees
``partial`` (the leading beam so far) after every token.

The boundary holds (issue 9): every input is checked in the graph (rank,
dtype, option ranges) and fails with an ``InvalidArgumentError`` that names
the expected shape or range, before any kernel that could crash on it runs.

TFLite (:func:`convert_to_tflite`, :class:`TFLiteRunner`): the ``<tokens>``
signature with TFLite built-ins plus tf_text's TFLite kernels
(:data:`TFTEXT_TFLITE_OPS`), no Flex op; the runner registers the tf_text
kernels, applies the spacing rules in Python and computes the status rows.
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from apps.config import config_from_dict, config_to_dict
from pipelines.preprocessing import BLANK_STATUSES, status_of
from layers.generation import TextGenerator
from layers.generation_export import flex_ops, tflite_ops
from layers.samplers import BeamSampler
from layers.validation import check_positive_float, check_positive_int

__all__ = [
    "BEAM_SIZES",
    "GenerationExport",
    "SETTINGS_FILE",
    "SignatureNames",
    "TFLITE_FILES",
    "TFLiteRunner",
    "TFTEXT_TFLITE_OPS",
    "WEIGHTS_DTYPES",
    "check_export",
    "convert_to_tflite",
    "MODEL_ASSETS",
    "load_stored_weights",
    "read_model_assets",
    "signature_function",
    "weight_mapping",
    "write_model_assets",
    "write_release_tflite",
    "write_signatures",
    "custom_ops",
    "export_saved_model",
    "read_settings",
    "write_generation_saved_model",
    "write_tflite",
]

BEAM_SIZES = (1, 2, 4)
WEIGHTS_DTYPES = ("float32", "float16", "int8")  # how an export stores the model's weights (_stored_weights)
INT8_MIN_SIZE = 4096  # int8 storage: weights with fewer values (biases, norms) stay float16
STORED_PREFIX, SCALE_PREFIX = "stored/", "stored_scale/"  # names of the stored copies: prefix + model variable path
SETTINGS_FILE = "generation.json"  # beside the SavedModel under assets/: export settings
TOKENIZERS_FOLDER = "tokenizers"
TFLITE_FOLDER = "tflite"
TFLITE_FILES = {"float": "model_float.tflite", "int8": "model_int8.tflite"}
MODEL_ASSETS = ("config.json", "model.json")  # under assets/: what a plain release was exported with (write_model_assets)
# tf_text ops with TFLite kernels (registered by ``SELECT_TFTEXT_OPS``) that were
# measured to run in the ai_edge_litert interpreter; anything else custom would
# not. (``TFText>FastSentencepieceDetokenize`` converts but crashes LiteRT, see
# pipelines/sentencepiece.py, so it is not here.)
TFTEXT_TFLITE_OPS = frozenset(
    {
        "FastBertNormalize",
        "FastWordpieceTokenizeWithOffsets",
        "TFText>FastWordpieceDetokenize",
        "TFText>FastSentencepieceTokenize",
        "RaggedTensorToTensor",
    }
)


# --- the plain serving_default export (non-generative apps) ----------------------------------


def export_saved_model(app, model, config, directory):
    """Write ``model`` as a SavedModel whose ``serving_default`` is the app's serving signature.

    ``config.export_weights`` (when the config has it: ``"float32"``,
    ``"float16"`` or ``"int8"``, :func:`_stored_weights`) sets how the weights
    are stored; the signature dequantizes them and computes in float32.

    The signature takes the inputs ``app.serving_signature(config)`` declares
    and returns the dict ``app.serving_outputs`` builds, so TF Serving, the
    Gradio demo and any other client call the same function. Apps with more
    signatures (every generative app) write their own through
    ``app.write_saved_model``.
    """
    directory = Path(directory)
    if directory.exists():
        raise FileExistsError(f"{directory} already exists; choose another --version or remove it")
    if app.write_saved_model(model, config, directory) is not None:
        return directory
    with tempfile.TemporaryDirectory() as folder:
        released, released_config = app.release_model(model, config, Path(folder))
        write_signatures(app, released, released_config, directory)
        write_model_assets(directory, released, config, folder)
    return directory


def write_model_assets(directory, model, config, files_dir=None):
    """Make a release describe itself: under ``<directory>/assets/``, the files of ``files_dir`` (the app's, as
    a pruned vocabulary), ``config.json`` (the config it was exported with) and ``model.json`` (the network's
    Keras config, what :func:`read_model_assets` rebuilds it from)."""
    assets = Path(directory) / "assets"
    assets.mkdir(parents=True, exist_ok=True)
    for path in sorted(Path(files_dir).iterdir()) if files_dir else ():
        shutil.copyfile(path, assets / path.name)
    (assets / MODEL_ASSETS[0]).write_text(json.dumps(config_to_dict(config), indent=1) + "\n", encoding="utf-8")
    (assets / MODEL_ASSETS[1]).write_text(json.dumps(keras.saving.serialize_keras_object(model)) + "\n", encoding="utf-8")


def read_model_assets(saved_model_dir, config_class):
    """``(config, network, assets folder)`` of a release written by :func:`export_saved_model`; the network is
    rebuilt from its Keras config (weights not loaded: :func:`load_stored_weights` reads them)."""
    assets = Path(saved_model_dir) / "assets"
    missing = [name for name in MODEL_ASSETS if not (assets / name).is_file()]
    if missing:
        raise FileNotFoundError(f"{saved_model_dir} has no assets/{missing[0]}: export it again with this version")
    config = config_from_dict(config_class, json.loads((assets / MODEL_ASSETS[0]).read_text(encoding="utf-8")))
    return config, keras.saving.deserialize_keras_object(json.loads((assets / MODEL_ASSETS[1]).read_text())), assets


def write_signatures(app, model, config, directory):
    """The SavedModel of :func:`export_saved_model`: ``serving_default`` and ``app.more_signatures`` of ``model``
    as it is (no :meth:`~apps.app.App.release_model` step, no assets)."""
    directory = Path(directory)
    specs = app.serving_signature(config)
    weights_dtype = getattr(config, "export_weights", "float32")
    if weights_dtype not in WEIGHTS_DTYPES:
        raise ValueError(f"export_weights must be one of {list(WEIGHTS_DTYPES)}, got {weights_dtype!r}")
    stored = _stored_weights(model, weights_dtype)

    def endpoint(body, specs):
        names = list(specs)

        def function(*tensors):
            if not stored:
                return body(model, dict(zip(names, tensors)), config)
            with keras.StatelessScope(state_mapping=weight_mapping(stored)):  # the float32 variables are never read
                return body(model, dict(zip(names, tensors)), config)

        return function, [tf.TensorSpec(spec.shape, spec.dtype, name=name) for name, spec in specs.items()]

    # No archive.track(model): the endpoints track the variables they read, once (tracking the model too
    # saved every weight twice: measured 2x the parameter bytes for the Fashion-MNIST and QA exports).
    archive = keras.export.ExportArchive()
    signatures = {"serving_default": (specs, app.serving_outputs), **app.more_signatures(config)}
    for name, (input_specs, body) in signatures.items():
        function, input_signature = endpoint(body, input_specs)
        archive.add_endpoint(name=name, fn=function, input_signature=input_signature)
    _write_archive(archive, directory)
    return directory


def _write_archive(archive, directory):
    try:
        archive.write_out(str(directory), verbose=False)
    except BaseException:
        shutil.rmtree(directory, ignore_errors=True)
        raise


def check_export(app, model, config, directory, inputs):
    """Reload the SavedModel and return the largest difference to the Keras model on ``inputs``.

    Numeric outputs: the largest absolute difference. String outputs: the
    fraction of strings that differ.
    """
    reloaded = tf.saved_model.load(str(directory)).signatures["serving_default"]
    served = reloaded(**{name: tf.constant(value) for name, value in inputs.items()})
    direct = app.serving_outputs(model, {name: tf.constant(value) for name, value in inputs.items()}, config)

    def difference(a, b):
        a, b = np.asarray(a), np.asarray(b)
        if a.dtype == object or b.dtype == object:
            return float(np.mean(a != b))
        return float(np.max(np.abs(a - b)))

    return max(difference(served[key].numpy(), direct[key]) for key in direct)


# --- generation: raw input in, text out ---------------------------------------------------------


@dataclass(frozen=True)
class SignatureNames:
    """What a generation export calls its signatures, input and output (the app's words)."""

    input: str = "inputs"
    output: str = "texts"
    options: str = "generate"
    tokens: str = "generate_tokens"


def _check_scalar(value, name, low, high, allowed=None):
    """An int32 scalar option in ``[low, high]`` (or one of ``allowed``), else InvalidArgumentError saying so."""
    value = tf.convert_to_tensor(value)
    rank = tf.debugging.assert_rank(value, 0, message=f"{name} must be a scalar int32, shape ()")
    with tf.control_dependencies([rank]):
        # The first element of whatever came, so the graph below sees a scalar even when
        # it runs before the rank assertion has failed the request.
        value = tf.cast(tf.reshape(value, [-1])[0], tf.int32)
    if allowed is not None:
        ok = tf.reduce_any(tf.equal(tf.constant(allowed, tf.int32), value))
        text = f"{name} must be one of {list(allowed)}, got"
    else:
        ok = tf.logical_and(value >= low, value <= high)
        text = f"{name} must be in [{low}, {high}], got"
    check = tf.debugging.Assert(ok, [text, value])
    with tf.control_dependencies([rank, check]):
        return tf.identity(value)


class GenerationExport(tf.Module):
    """Raw inputs in, generated text out, as one graph per signature (see the module docstring).

    Args:
        model: an encoder-decoder ``Transformer`` (any ``encoder_input``) or a
            decoder-only ``TransformerCausalLM``.
        preprocessor: ``apps.preprocessing.TextPreprocessor`` /
            ``ImagePreprocessor`` (encoder-decoder) or ``PromptPreprocessor``
            (decoder-only).
        names: :class:`SignatureNames`. Default the generic names.
        max_new_tokens: int, most generated tokens per row (``[END]`` included).
        num_beams: int, ``serving_default``'s beam size (1 is greedy search). Default 4.
        beam_sizes: tuple of int or None, the beam sizes ``<options>`` accepts
            (default :data:`BEAM_SIZES` and ``num_beams``). One graph serves them all.
        length_penalty: float >= 0, beam-search length normalisation. Default 1.0.
        no_repeat_ngram_size: int >= 0, n-gram repetition block (0 disables). Default 0.
        length_ratio: float >= 0, also stop each output at ``ceil(length_ratio *
            input tokens) + 4`` tokens (text inputs; 0 disables), as the Python
            decoder does (``apps.seq2seq.output_limits``). Default 0.
        weights_dtype: ``"float32"``, ``"float16"`` or ``"int8"`` (:func:`_stored_weights`),
            how the SavedModel stores the model's floating-point weights. ``"float16"`` halves the
            release (a 9.5M-parameter model: 19 MB instead of 38 MB); every
            signature casts them back and computes in the model's own dtypes
            (Keras' ``StatelessScope`` maps each weight to its cast copy while
            the signatures are traced, so the float32 variables are never read
            and never saved). Default ``"float32"``.
    """

    def __init__(
        self,
        model,
        preprocessor,
        *,
        names=SignatureNames(),
        max_new_tokens=64,
        num_beams=4,
        beam_sizes=None,
        length_penalty=1.0,
        no_repeat_ngram_size=0,
        length_ratio=0.0,
        weights_dtype="float32",
    ):
        super().__init__(name="generation_export")
        if weights_dtype not in WEIGHTS_DTYPES:
            raise ValueError(f"weights_dtype must be one of {list(WEIGHTS_DTYPES)}, got {weights_dtype!r}")
        self.weights_dtype = weights_dtype
        self._stored = _stored_weights(model, weights_dtype)
        self.length_ratio = check_positive_float("length_ratio", length_ratio, allow_zero=True)
        self.model = model
        self.preprocessor = preprocessor
        self.names = names
        self.encoder_decoder = bool(getattr(model, "is_encoder_decoder", False))
        self.max_new_tokens = check_positive_int("max_new_tokens", max_new_tokens)
        num_beams = check_positive_int("num_beams", num_beams)
        beam_sizes = (*BEAM_SIZES, num_beams) if beam_sizes is None else beam_sizes
        self.beam_sizes = tuple(sorted({check_positive_int("beam_sizes entry", b) for b in beam_sizes}))
        if num_beams not in self.beam_sizes:
            raise ValueError(f"num_beams={num_beams} must be one of beam_sizes {list(self.beam_sizes)}")
        self.num_beams = num_beams
        self.length_penalty = check_positive_float("length_penalty", length_penalty, allow_zero=True)
        self.no_repeat_ngram_size = int(no_repeat_ngram_size)
        prompt_width = 1 if self.encoder_decoder else preprocessor.prompt_length
        self.generator = TextGenerator(
            model,
            sampler=BeamSampler(max(self.beam_sizes), self.length_penalty),
            max_new_tokens=self.max_new_tokens,
            end_token_id=preprocessor.end_id,
            pad_token_id=preprocessor.pad_id,
            cache_length=prompt_width + self.max_new_tokens,
            jit_compile=False,
            no_repeat_ngram_size=self.no_repeat_ngram_size,
        )
        raw = tf.TensorSpec(None, tf.string, name=names.input)
        option_specs = [tf.TensorSpec(None, tf.int32, name="beam_size"), tf.TensorSpec(None, tf.int32, name="max_length")]
        function = self._function
        self.serving_default = function(self._serving_default, [raw])
        self.options = function(self._options, [raw, *option_specs])
        self.tokens = function(self._tokens, [self._tflite_input_spec()])
        # The state's structure (a dict holding the model's nested cache) is fixed by one trace of start;
        # the stream signatures pass it flattened, as state_000, state_001, ...
        template = function(self._start_state, [raw, *option_specs])
        template = template.get_concrete_function().structured_outputs
        self._state_template = template
        self._state_names = [f"state_{i:03d}" for i in range(len(tf.nest.flatten(template)))]
        state_specs = [
            tf.TensorSpec(t.shape, t.dtype, name=name) for t, name in zip(tf.nest.flatten(template), self._state_names)
        ]
        self.stream_start = function(self._stream_start, [raw, *option_specs])
        self.stream_step = function(self._stream_step, state_specs)
        self.stream_finish = function(self._stream_finish, state_specs)

    def _function(self, body, input_signature):
        return signature_function(body, input_signature, self._stored)

    def get_config(self):
        """The export settings, recorded beside the exported files (``assets/generation.json``)."""
        return {
            **self.preprocessor.get_config(),
            "names": asdict(self.names),
            "encoder_decoder": self.encoder_decoder,
            "max_new_tokens": self.max_new_tokens,
            "num_beams": self.num_beams,
            "beam_sizes": list(self.beam_sizes),
            "length_penalty": self.length_penalty,
            "no_repeat_ngram_size": self.no_repeat_ngram_size,
            "length_ratio": self.length_ratio,
            "weights_dtype": self.weights_dtype,
            "state_names": self._state_names,
        }

    def signatures(self):
        """``{signature name: tf.function}`` of everything :func:`write_generation_saved_model` writes."""
        return {
            "serving_default": self.serving_default,
            self.names.options: self.options,
            self.names.tokens: self.tokens,
            "stream_start": self.stream_start,
            "stream_step": self.stream_step,
            "stream_finish": self.stream_finish,
        }

    # -- graph ------------------------------------------------------------------------------

    def _tflite_input_spec(self):
        """Strings for text models; what the preprocessor's ``tflite_input_spec`` says for the others (pixels, log-mel)."""
        if hasattr(self.preprocessor, "tflite_input_spec"):
            return self.preprocessor.tflite_input_spec(self.names.input)
        return tf.TensorSpec([None], tf.string, name=self.names.input)

    def _begin(self, raw, beam_size, max_length, tflite=False):
        """Preprocess ``raw`` and start the decode loop: ``(state, status, extras)``.

        The TFLite graph has no status (its checks need kernels TFLite lacks);
        it returns token counts in ``extras`` from which the runner derives it.
        """
        pre = self.preprocessor
        status, extras = None, {}
        if self.encoder_decoder:
            if tflite:
                inputs, extras = pre.tflite_encoder_inputs(raw)
            else:
                inputs, status = pre.encoder_inputs(raw)
            rows = tf.shape(tf.nest.flatten(inputs)[0])[0]
            prompt = tf.fill([rows, 1], tf.constant(pre.start_id, tf.int32))
            prompt_lengths = tf.ones([rows], tf.int32)
            if pre.input_kind == "text":
                inputs, max_length = self._fit_text_inputs(inputs, max_length)
        else:
            inputs = None
            prompt, prompt_lengths, report = pre.prompt_inputs(raw, tflite=tflite)
            status, extras = (None, report) if tflite else (report, {})
        # The cache holds the prompt and the most tokens any row of this batch may add, not max_new_tokens.
        longest = tf.reduce_max(tf.cast(max_length, tf.int32) + tf.zeros_like(prompt_lengths))
        state = self.generator.start(
            prompt, prompt_lengths, encoder_inputs=inputs, num_beams=beam_size, max_new_tokens=max_length,
            cache_length=prompt.shape[1] + longest,
        )
        return state, status, extras

    def _fit_text_inputs(self, inputs, max_length):
        """Cut the padding columns every row has (the encoder and cross-attention need not read them) and
        give each row its own output limit (``length_ratio``)."""
        lengths = tf.reduce_sum(tf.cast(inputs["encoder_padding_mask"], tf.int32), axis=1)
        width = tf.maximum(tf.reduce_max(lengths), 1)
        inputs = {key: tf.slice(value, [0, 0], [-1, width]) for key, value in inputs.items()}
        if self.length_ratio:
            rule = tf.cast(tf.math.ceil(self.length_ratio * tf.cast(lengths, tf.float32)), tf.int32) + 4
            max_length = tf.minimum(tf.cast(max_length, tf.int32), rule)
        return inputs, max_length

    def _end(self, state, status=None, spacing=True):
        """The loop's outputs -> generated ``token_ids (batch, max_new_tokens)``, ``lengths`` and text."""
        outputs = self.generator.finish(state)
        tokens, lengths = outputs["token_ids"], outputs["lengths"]
        if self.encoder_decoder:
            # Drop the [START] column; after [END] the generator wrote [PAD].
            generated = tf.slice(tokens, [0, 1], [-1, self.max_new_tokens])
            new = lengths - 1
        else:
            prompt_lengths = outputs["prompt_lengths"]
            positions = tf.minimum(
                tf.expand_dims(prompt_lengths, 1) + tf.range(self.max_new_tokens), tokens.shape[1] - 1
            )
            new = lengths - prompt_lengths
            generated = tf.gather(tokens, positions, batch_dims=1)
            generated = tf.where(tf.sequence_mask(new, self.max_new_tokens), generated, self.preprocessor.pad_id)
        texts = self.preprocessor.decode(generated, spacing=spacing)
        if status is not None:
            blank = tf.reduce_any(tf.stack([tf.equal(status, name) for name in BLANK_STATUSES]), axis=0)
            texts = tf.where(blank, tf.constant(""), texts)
            new = tf.where(blank, 0, new)
            generated = tf.where(tf.expand_dims(blank, 1), self.preprocessor.pad_id, generated)
        return {self.names.output: texts, "token_ids": generated, "lengths": new}

    def _loop(self, state):
        """``generator.step`` until no row runs (``generate_step``'s loop, on a state from :meth:`_begin`)."""
        invariants = tf.nest.map_structure(
            lambda t: tf.TensorShape([None, *t.shape[1:]]) if t.shape.rank else t.shape, state
        )
        (state,) = tf.while_loop(
            lambda s: self.generator.running(s), lambda s: (self.generator.step(s),), (state,),
            shape_invariants=(invariants,), maximum_iterations=state["tokens"].shape[1],
        )
        return state

    def _run(self, raw, beam_size, max_length):
        state, status, _ = self._begin(raw, beam_size, max_length)
        return {**self._end(self._loop(state), status), "status": status}

    def _options_checked(self, beam_size, max_length):
        beam_size = _check_scalar(beam_size, "beam_size", None, None, allowed=self.beam_sizes)
        max_length = _check_scalar(max_length, "max_length", 1, self.max_new_tokens)
        return beam_size, max_length

    def _serving_default(self, raw):
        outputs = self._run(raw, self.num_beams, self.max_new_tokens)
        return {self.names.output: outputs[self.names.output], "status": outputs["status"]}

    def _options(self, raw, beam_size, max_length):
        return self._run(raw, *self._options_checked(beam_size, max_length))

    def _tokens(self, raw):
        state, _, extras = self._begin(raw, self.num_beams, self.max_new_tokens, tflite=True)
        return {**self._end(self._loop(state), spacing=False), **extras}

    def _start_state(self, raw, beam_size, max_length):
        state, status, _ = self._begin(raw, *self._options_checked(beam_size, max_length))
        return {"loop": state, "status": status}

    def _stream_start(self, raw, beam_size, max_length):
        packed = self._start_state(raw, beam_size, max_length)
        return {**self._flat(packed), "status": packed["status"]}

    def _pack(self, flat):
        return tf.nest.pack_sequence_as(self._state_template, list(flat))

    def _flat(self, packed):
        return dict(zip(self._state_names, tf.nest.flatten(packed)))

    def _stream_step(self, *flat):
        packed = self._pack(flat)
        state = self.generator.step(packed["loop"])
        out = self._flat({"loop": state, "status": packed["status"]})
        out["partial"] = self._end(state, packed["status"])[self.names.output]
        out["running"] = self.generator.running(state)
        return out

    def _stream_finish(self, *flat):
        packed = self._pack(flat)
        return {**self._end(packed["loop"], packed["status"]), "status": packed["status"]}


def signature_function(body, input_signature, stored):
    """``body`` as a signature's ``tf.function``; with ``stored`` weights (:func:`_stored_weights`), traced with
    every model weight read from its stored copy."""

    def traced(*args):
        if not stored:
            return body(*args)
        with keras.StatelessScope(state_mapping=weight_mapping(stored)):
            return body(*args)

    # autograph=False: every loop is an explicit tf.while_loop (TextGenerator).
    return tf.function(traced, input_signature=input_signature, autograph=False)


def _stored_weights(model, weights_dtype):
    """How a SavedModel stores ``model``'s weights: ``[(model variable, stored tf.Variable, scale or None)]``.

    ``"float32"``: ``[]`` (the model's own variables are saved). ``"float16"``:
    floating weights as float16 copies. ``"int8"``: floating weights of at
    least 2 dimensions and :data:`INT8_MIN_SIZE` values as symmetric int8 with
    one float32 scale per row (``w ~ q * s``, ``s = max |w_row| / 127``;
    per row keeps each token of an embedding table at its own scale), the
    small ones (biases, norms) as float16. Integer variables stay as they are.
    """
    if weights_dtype == "float32":
        return []
    stored = []
    for variable in model.variables:
        value = np.asarray(keras.ops.convert_to_numpy(variable.value))
        floating = np.issubdtype(value.dtype, np.floating) or value.dtype.name == "bfloat16"
        scale = None
        if floating and weights_dtype == "int8" and value.ndim >= 2 and value.size >= INT8_MIN_SIZE:
            value = value.astype(np.float32)
            row_max = np.max(np.abs(value), axis=tuple(range(1, value.ndim)), keepdims=True)
            row_scale = np.where(row_max > 0, row_max / 127.0, 1.0).astype(np.float32)
            value = np.clip(np.round(value / row_scale), -127, 127).astype(np.int8)
            scale = tf.Variable(row_scale, trainable=False, name=f"{SCALE_PREFIX}{_key(model, variable)}")
        elif floating:
            value = value.astype(np.float16)
        # Named for the model variable, so that load_stored_weights can find it in a rebuilt network.
        stored.append((variable, tf.Variable(value, trainable=False, name=f"{STORED_PREFIX}{_key(model, variable)}"),
                       scale))
    return stored


def _key(model, variable):
    """The variable's path inside ``model``: a loaded model's paths lack the model's own name, a built one's hold it."""
    path = variable.path
    return path[len(model.name) + 1:] if path.startswith(f"{model.name}/") else path


def load_stored_weights(model, saved_model_dir):
    """Assign ``model`` (the exported network, rebuilt) the weights a SavedModel stored with :func:`_stored_weights`:
    int8 ones dequantized (``q * s``), float16 ones cast back. The inverse of the export, for tools that need a
    Keras model of a release (a float TFLite conversion).

    Raises:
        ValueError: the release holds no stored copy for one of ``model``'s variables (another network).
    """
    loaded = tf.saved_model.load(str(saved_model_dir))
    found = {v.name.split(":")[0]: v for v in loaded.signatures["serving_default"].variables}
    for variable in model.variables:
        if not variable.dtype.startswith(("float", "bfloat")):  # seed generator states: not weights
            continue
        copy = found.get(f"{STORED_PREFIX}{_key(model, variable)}")
        if copy is None or tuple(copy.shape) != tuple(variable.shape):
            raise ValueError(f"{saved_model_dir} stores no {variable.path} of shape {tuple(variable.shape)}: "
                             "it was not exported from this network with stored weights")
        value = tf.cast(copy, tf.float32)
        if f"{SCALE_PREFIX}{_key(model, variable)}" in found:
            value = value * found[f"{SCALE_PREFIX}{_key(model, variable)}"]
        variable.assign(tf.cast(value, variable.dtype))
    return model


def write_release_tflite(app, model, config, saved_model_dir, output_dir, signature):
    """Float and int8 TFLite models (:data:`TFLITE_FILES`) of one signature of a release.

    A release with stored weights (int8 or float16, :func:`_stored_weights`)
    is first loaded into ``model`` (the exported network, rebuilt:
    :func:`load_stored_weights`) and exported once more with float32 weights
    (``config``) into a temporary folder, and converted from there: the float
    model computes with those weights as float32 constants, the int8 one
    with TFLite's dynamic-range int8 weights. (Converted straight from an int8
    release, both files would hold the same int8 weights and their
    dequantization.) A float32 release is converted as it is.

    Returns: ``{"float": path, "int8": path}``.
    """
    import tempfile

    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    loaded = tf.saved_model.load(str(saved_model_dir))
    stored = any(v.name.startswith(STORED_PREFIX) for v in loaded.signatures["serving_default"].variables)
    paths = {}
    with tempfile.TemporaryDirectory() as folder:
        source = Path(saved_model_dir)
        if stored:
            source = Path(folder) / "float32"
            write_signatures(app, load_stored_weights(model, saved_model_dir), config, source)
        for kind, quantize in (("float", False), ("int8", True)):
            paths[kind] = output_dir / TFLITE_FILES[kind]
            paths[kind].write_bytes(convert_to_tflite(source, signature, quantize=quantize))
    return paths


def weight_mapping(stored):
    """``[(model variable, its value read from the stored copy)]`` for ``keras.StatelessScope(state_mapping=...)``."""
    mapping = []
    for variable, copy, scale in stored:
        value = tf.cast(copy, tf.float32) * scale if scale is not None else copy
        mapping.append((variable, tf.cast(value, variable.dtype)))
    return mapping


def write_generation_saved_model(export, directory, assets=None):
    """Write ``export`` (:class:`GenerationExport`) as a SavedModel under ``directory``.

    ``assets/generation.json`` records the export settings and
    ``assets/tokenizers/`` the preprocessor's tokenizers, so the release alone
    is enough for the demo and for TFLite. ``assets`` maps more file names to
    text to write there.

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
    tokenizers = _tokenizers(export.preprocessor)
    for side, tokenizer in tokenizers.items():
        setattr(archive, f"{side}_tokenizer", tokenizer)  # tf.Modules: their assets travel with the archive
    # Resources the archive must track itself: tensorflow-text's SentencePiece model, the hash tables of a
    # preprocessor's own lookups (a retrieval index).
    is_resource = lambda x: isinstance(x, tf.saved_model.experimental.TrackableResource)  # noqa: E731
    resources = {id(r): r for module in (*tokenizers.values(), export.preprocessor) for r in module._flatten(predicate=is_resource)}
    for resource in resources.values():
        archive.track(resource)
    for name, function in export.signatures().items():
        # The Python body and its input signature, not the tf.function: the archive then traces each
        # endpoint once, inside tf.saved_model.save, for both the signature and the attribute. Handed a
        # tf.function it lists its concrete functions before saving, and the save traces it again
        # (the save context is part of the trace key): every decode graph stored twice, +6 MB for en-de.
        archive.add_endpoint(name, function.python_function, input_signature=function.input_signature)
    _write_archive(archive, directory)
    folder = directory / "assets"
    folder.mkdir(exist_ok=True)
    (folder / SETTINGS_FILE).write_text(json.dumps(export.get_config(), indent=2) + "\n")
    for side, tokenizer in tokenizers.items():
        tokenizer.save(folder / TOKENIZERS_FOLDER / side)
    for name, text in (assets or {}).items():
        (folder / name).write_text(text, encoding="utf-8")
    return directory


def _tokenizers(preprocessor):
    found = {}
    for side in ("source", "target"):
        tokenizer = getattr(preprocessor, f"{side}_tokenizer", None)
        if tokenizer is not None:
            found[side] = tokenizer
    return found


def read_settings(saved_model_dir):
    """The export settings (:meth:`GenerationExport.get_config`) recorded beside a SavedModel."""
    path = Path(saved_model_dir) / "assets" / SETTINGS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: {saved_model_dir} was not written by write_generation_saved_model")
    return json.loads(path.read_text())


# --- TFLite ----------------------------------------------------------------------------------


def custom_ops(tflite_model):
    """Names of the non-builtin operators of a TFLite model (Flex and tf_text ops)."""
    from tensorflow.lite.python import schema_py_generated as schema

    builtins = {name for name in vars(schema.BuiltinOperator) if not name.startswith("_")}
    return sorted(set(tflite_ops(tflite_model)) - builtins)


def convert_to_tflite(saved_model_dir, signature_key, quantize=False, per_channel=False):
    """Convert one signature of a SavedModel to TFLite bytes: built-ins plus the tf_text kernels.

    Args:
        saved_model_dir: a SavedModel (a generation export's ``<tokens>`` signature, usually).
        signature_key: str, the signature to convert.
        quantize: bool, int8 dynamic-range quantization of the weights
            (``optimizations=[tf.lite.Optimize.DEFAULT]``, no representative
            dataset). Default False (float32).
        per_channel: bool, one int8 scale per output channel instead of one
            per weight tensor. Default False: measured on the translation
            release of session 2 (9.6M parameters), per channel the int8 file
            holds the tied decoder embedding (read in the prefill graph and in
            the decode loop's) twice: 35.5% of the float file; per tensor 28.8%.

    Raises:
        ValueError: if the model would need Flex ops or custom ops outside
            :data:`TFTEXT_TFLITE_OPS`.
    """
    converter = tf.lite.TFLiteConverter.from_saved_model(str(saved_model_dir), signature_keys=[signature_key])
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    converter.allow_custom_ops = True  # for the tf_text ops only; checked below
    if quantize:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter._experimental_disable_per_channel = not per_channel  # noqa: SLF001 - the converter's only switch for it
    try:
        tflite_model = converter.convert()
    except Exception as error:  # ConverterError lists the ops it could not lower
        raise ValueError(
            "the graph needs ops outside the TFLite built-ins and the tf_text TFLite kernels "
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
    """Write the float and int8 TFLite models (:data:`TFLITE_FILES`) of a generation export under ``output_dir``.

    Beside them: the export settings (``generation.json``, which
    :class:`TFLiteRunner` reads: signature and output names, spacing
    language), the tokenizers' vocabularies and a ``README.txt``.

    Returns:
        dict ``{"float": path, "int8": path}``.
    """
    saved_model_dir, output_dir = Path(saved_model_dir), Path(output_dir)
    settings = read_settings(saved_model_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    paths = {}
    for kind, quantize in (("float", False), ("int8", True)):
        paths[kind] = output_dir / TFLITE_FILES[kind]
        paths[kind].write_bytes(convert_to_tflite(saved_model_dir, settings["names"]["tokens"], quantize=quantize))
    assets = saved_model_dir / "assets"
    for vocab in sorted((assets / TOKENIZERS_FOLDER).glob("*/*")):
        if vocab.name != "tokenizer.json":
            shutil.copyfile(vocab, output_dir / f"{vocab.parent.name}_{vocab.name}")
    shutil.copyfile(assets / SETTINGS_FILE, output_dir / SETTINGS_FILE)
    (output_dir / "README.txt").write_text(_tflite_readme(paths, settings), encoding="utf-8")
    return paths


def _tflite_readme(paths, settings):
    sizes = ", ".join(f"{p.name} {p.stat().st_size / 1e6:.1f} MB" for p in paths.values())
    names = settings["names"]
    return (
        "tfsuite generation model for TFLite.\n\n"
        f"Files: {sizes}.\n"
        + (
            "Input 'log_mel': float32 (1, frames, num_mel_bins), the log-mel frames of pipelines/audio.py\n"
            "(waveform_to_features of 16 kHz audio; WAV decoding and the STFT have no TFLite kernels), as\n"
            "apps.export.TFLiteRunner computes them.\n" if "features" in settings else ""
        )
        + f"Signature {names['tokens']!r}: {names['input']} (batch,) -> {names['output']} (batch,), token_ids int32\n"
        "(batch, max_new_tokens), lengths int32 (batch,), input_tokens and unknown_tokens int32 (batch,).\n"
        + (
            f"The texts keep the tokenizer's spacing; apply the {settings['language']!r} rules of\n"
            "pipelines/preprocessing.py (restore_spacing), as apps.export.TFLiteRunner does.\n"
            if settings.get("language") else ""
        )
        + "The model uses TFLite built-in ops and tf_text's TFLite kernels; register those:\n\n"
        "    from ai_edge_litert.interpreter import InterpreterWithCustomOps\n"
        "    from tensorflow_text.core.pybinds import tflite_registrar\n"
        f"    interpreter = InterpreterWithCustomOps(model_path='{TFLITE_FILES['int8']}',\n"
        "        custom_op_registerers=tflite_registrar.SELECT_TFTEXT_OPS)\n"
        f"    interpreter.get_signature_runner({names['tokens']!r})({names['input']}=np.array([b'...']))\n"
    )


class TFLiteRunner:
    """Run a generation model from :func:`write_tflite` with the LiteRT interpreter.

    Args:
        model: path to a ``.tflite`` file (``generation.json`` beside it), or its bytes.
        settings: dict, the export settings; default: the ``generation.json`` beside ``model``.
        num_threads: int or None, interpreter threads. Default None (LiteRT's default).

    Call: ``runner(inputs)`` with a list of ``str`` (text models) or a float
    pixel array (image models) returns ``{<output>: list of str, "status":
    list of str, "token_ids", "lengths"}``; the texts equal the SavedModel's
    ``serving_default`` ones (same spacing rules, same blank rows).
    """

    def __init__(self, model, settings=None, num_threads=None):
        from ai_edge_litert.interpreter import InterpreterWithCustomOps
        from tensorflow_text.core.pybinds import tflite_registrar

        in_memory = isinstance(model, (bytes, bytearray))
        if settings is None:
            if in_memory:
                raise ValueError("TFLiteRunner needs settings= for a model given as bytes")
            settings = json.loads((Path(model).parent / SETTINGS_FILE).read_text())
        self.settings = settings
        self.names = settings["names"]
        source = {"model_content": model} if in_memory else {"model_path": str(model)}
        self.interpreter = InterpreterWithCustomOps(
            custom_op_registerers=tflite_registrar.SELECT_TFTEXT_OPS, num_threads=num_threads, **source
        )
        self.runner = self.interpreter.get_signature_runner(self.names["tokens"])

    def __call__(self, inputs):
        if isinstance(inputs, (str, bytes)):
            raise ValueError("TFLiteRunner expects a list of inputs, got a single one; wrap it in a list")
        if "image_size" in self.settings:
            batch = np.asarray(inputs, np.float32)
            outputs = self.runner(**{self.names["input"]: batch})
            status = ["ok"] * len(batch)
            texts = [t.decode("utf-8") for t in outputs[self.names["output"]]]
        elif "features" in self.settings:
            return self._transcribe(inputs)
        else:
            raw = [s.encode("utf-8") if isinstance(s, str) else bytes(s) for s in inputs]
            if not raw:
                raise ValueError("TFLiteRunner expects a non-empty list of inputs")
            valid = []
            for data in raw:
                try:
                    valid.append(data.decode("utf-8"))
                except UnicodeDecodeError:
                    valid.append(None)
            batch = np.array([b"" if v is None or not v.strip() else d for v, d in zip(valid, raw)], dtype=object)
            outputs = self.runner(**{self.names["input"]: batch})
            room = self.settings["source_length"] - (2 if self.settings.get("source_markers", True) else 0) - (
                self.settings.get("prefix_tokens", 0))
            status = [
                "invalid_utf8" if text is None else status_of(text, int(n), int(u), room)
                for text, n, u in zip(valid, outputs["input_tokens"], outputs["unknown_tokens"])
            ]
            texts = [t.decode("utf-8") for t in outputs[self.names["output"]]]
            if self.settings.get("language"):
                from pipelines.preprocessing import restore_spacing

                texts = restore_spacing(texts, self.settings["language"])
        lengths = np.asarray(outputs["lengths"]).copy()
        token_ids = np.asarray(outputs["token_ids"]).copy()
        for i, s in enumerate(status):
            if s in BLANK_STATUSES:
                texts[i], lengths[i], token_ids[i] = "", 0, self.settings["pad_id"]
        return {self.names["output"]: texts, "status": status, "token_ids": token_ids, "lengths": lengths}

    def _transcribe(self, recordings):
        """Speech models: each WAV (bytes or path) -> log-mel frames in Python -> one TFLite call.

        The frames and the status (``unreadable``, ``too_long``, ``empty``, ``ok``)
        follow the SavedModel's graph (``pipelines.preprocessing.AudioPreprocessor``),
        with the same ``pipelines.audio`` functions; blank rows are not run.
        """
        from pipelines import audio
        from pipelines.preprocessing import SILENCE_PEAK

        features = audio.LogMelFeatures(**self.settings["features"])
        width = max(1, self.settings["max_new_tokens"])
        out = {self.names["output"]: [], "status": [], "token_ids": [], "lengths": []}
        for recording in recordings:
            try:
                waveform = audio.load_audio(recording, features.sample_rate)
            except (ValueError, OSError):
                waveform, status = None, "unreadable"
            if waveform is not None:
                too_long = waveform.size > (self.settings["max_seconds"] + 0.05) * features.sample_rate
                silent = waveform.size < features.frame_length or np.max(np.abs(waveform)) < SILENCE_PEAK
                status = "too_long" if too_long else "empty" if silent else "ok"
            if status != "ok":
                text, ids, length = "", np.full(width, self.settings["pad_id"], np.int32), 0
            else:
                frames = audio.waveform_to_features(tf.constant(waveform, tf.float32), None, features).numpy()
                result = self.runner(**{"log_mel": frames[None]})
                text = re.sub(r"(\w) ' (\w)", r"\1'\2", result[self.names["output"]][0].decode("utf-8"))
                ids, length = np.asarray(result["token_ids"][0]), int(result["lengths"][0])
            for key, value in zip(out, (text, status, ids, length)):
                out[key].append(value)
        out["token_ids"] = np.stack(out["token_ids"]) if recordings else np.zeros((0, width), np.int32)
        out["lengths"] = np.asarray(out["lengths"], np.int32)
        return out
