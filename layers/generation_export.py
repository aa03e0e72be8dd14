"""Export generation, not just the forward pass: SavedModel signature and TFLite model with the decode loop inside.

Following the TensorFlow Transformer tutorial's ``ExportTranslator``, the
exported function takes token ids and returns token ids: prefill, KV-cache,
``tf.while_loop`` and sampler are all inside one graph
(``layers/generation.py``). Shapes are fixed at export time (batch, prompt
width, ``max_new_tokens``, cache length), which is what TFLite needs.

- ``export_generation(model, path, ...)`` writes a SavedModel whose
  ``generate`` signature (also ``serving_default``) is
  ``{prompt_ids, prompt_lengths} -> {token_ids, lengths}`` for a causal LM and
  ``{encoder_token_ids, encoder_lengths} -> {token_ids, lengths}`` for an
  encoder-decoder model (the decoder starts from ``start_token_id``).
- ``convert_to_tflite(path)`` converts it with TFLite built-in ops only. Models
  that need the Flex delegate (``SELECT_TF_OPS``) no longer run in the Python
  interpreter since TF 2.20 (google-ai-edge/LiteRT issue 6458), so conversion
  fails loudly instead of falling back; ``flex_ops(model)`` lists any custom
  Flex ops in a converted model.
- ``TFLiteGenerator`` runs the converted model with the LiteRT interpreter.

Greedy and beam search export to TFLite; the random samplers export to
SavedModel (their stateless random ops have no TFLite built-in).
"""

import keras
import numpy as np
import tensorflow as tf

from layers.generation import TextGenerator
from layers.samplers import get_sampler
from layers.validation import check_positive_int

__all__ = ["export_generation", "convert_to_tflite", "flex_ops", "TFLiteGenerator"]

SIGNATURE = "generate"


def _generate_fn(generator, model, start_token_id, random):
    """The exported function, with named inputs as the signature's keys."""
    if model.is_encoder_decoder:

        def generate(encoder_token_ids, encoder_lengths, seed=None):
            batch = tf.shape(encoder_token_ids)[0]
            positions = tf.expand_dims(tf.range(tf.shape(encoder_token_ids)[1]), 0)
            mask = tf.less(positions, tf.expand_dims(encoder_lengths, 1))
            prompt = tf.fill([batch, 1], tf.constant(start_token_id, tf.int32))
            return generator.generate_step(
                prompt, tf.ones([batch], tf.int32), 0 if seed is None else seed,
                encoder_inputs={"encoder_inputs": encoder_token_ids, "encoder_padding_mask": mask},
            )

    else:

        def generate(prompt_ids, prompt_lengths, seed=None):
            return generator.generate_step(prompt_ids, prompt_lengths, 0 if seed is None else seed)

    if random:
        return generate
    # Without a seed input the signature has exactly the two token inputs.
    if model.is_encoder_decoder:
        return lambda encoder_token_ids, encoder_lengths: generate(encoder_token_ids, encoder_lengths)
    return lambda prompt_ids, prompt_lengths: generate(prompt_ids, prompt_lengths)


def export_generation(
    model,
    path,
    *,
    max_new_tokens,
    prompt_length=None,
    source_length=None,
    batch_size=1,
    sampler="greedy",
    end_token_id=None,
    pad_token_id=0,
    start_token_id=1,
    cache_length=None,
):
    """Write a SavedModel with a ``generate`` signature running the whole decode loop.

    Args:
        model: a built ``TransformerCausalLM`` or ``Transformer``.
        path: output directory.
        max_new_tokens: int, tokens generated per prompt.
        prompt_length: int, width of ``prompt_ids`` (causal LM only).
        source_length: int, width of ``encoder_token_ids`` (encoder-decoder only).
        batch_size: int or None, fixed batch size (None: any batch, SavedModel
            only; TFLite needs a fixed size). Default 1.
        sampler: sampler name or instance. Default ``"greedy"``. Random
            samplers add a scalar int32 ``seed`` input.
        end_token_id, pad_token_id, cache_length: as ``TextGenerator``.
        start_token_id: int, first decoder token of an encoder-decoder model.
            Default 1.

    Returns:
        ``path``.
    """
    sampler = get_sampler(sampler)
    random = getattr(sampler, "is_random", False)
    generator = TextGenerator(
        model, sampler=sampler, max_new_tokens=max_new_tokens, end_token_id=end_token_id,
        pad_token_id=pad_token_id, cache_length=cache_length, use_cache=True, jit_compile=False,
    )
    if batch_size is not None:
        batch_size = check_positive_int("batch_size", batch_size)
    if model.is_encoder_decoder:
        if source_length is None:
            raise ValueError("export_generation needs source_length for an encoder-decoder model")
        width = check_positive_int("source_length", source_length)
        generator.check_fits(1)
        names = ("encoder_token_ids", "encoder_lengths")
    else:
        if prompt_length is None:
            raise ValueError("export_generation needs prompt_length for a causal LM")
        width = check_positive_int("prompt_length", prompt_length)
        generator.check_fits(width)
        names = ("prompt_ids", "prompt_lengths")
    signature = [
        tf.TensorSpec([batch_size, width], tf.int32, name=names[0]),
        tf.TensorSpec([batch_size], tf.int32, name=names[1]),
    ]
    if random:
        signature.append(tf.TensorSpec([], tf.int32, name="seed"))
    fn = _generate_fn(generator, model, start_token_id, random)

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(SIGNATURE, tf.function(fn, autograph=False), input_signature=signature)
    archive.write_out(path, verbose=False)
    return path


def convert_to_tflite(saved_model_path, signature_key=SIGNATURE):
    """Convert an exported generation SavedModel to a TFLite flatbuffer with built-in ops only.

    Raises:
        ValueError: if the graph needs an op outside the TFLite built-ins
            (which would need the Flex delegate).
    """
    converter = tf.lite.TFLiteConverter.from_saved_model(saved_model_path, signature_keys=[signature_key])
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    try:
        tflite_model = converter.convert()
    except Exception as error:  # the converter raises ConverterError with the op list
        raise ValueError(
            "the generation graph needs ops outside the TFLite built-ins (the Flex delegate does not run "
            f"in the Python interpreter since TF 2.20):\n{error}"
        ) from error
    found = flex_ops(tflite_model)
    if found:
        raise ValueError(f"converted model contains Flex ops {found}")
    return tflite_model


def _operator_codes(tflite_model):
    from tensorflow.lite.python import schema_py_generated as schema

    model = schema.Model.GetRootAsModel(bytearray(tflite_model), 0)
    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    codes = []
    for i in range(model.OperatorCodesLength()):
        code = model.OperatorCodes(i)
        builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
        custom = code.CustomCode()
        codes.append(custom.decode() if custom else names.get(builtin, str(builtin)))
    return codes


def flex_ops(tflite_model):
    """Names of the Flex (TensorFlow-fallback) custom ops in a TFLite model; empty when it is builtins-only."""
    return sorted(code for code in _operator_codes(tflite_model) if code.startswith("Flex"))


def tflite_ops(tflite_model):
    """Sorted names of every operator a TFLite model uses."""
    return sorted(set(_operator_codes(tflite_model)))


class TFLiteGenerator:
    """Run an exported generation model with the LiteRT interpreter.

    Args:
        tflite_model: bytes from ``convert_to_tflite``.
        num_threads: int or None, interpreter threads. Default None (LiteRT's default).

    Call: ``generator(token_ids, lengths[, seed])`` with the exported shapes
    (prompt ids and lengths for a causal LM, encoder ids and lengths for an
    encoder-decoder model) returns ``{"token_ids", "lengths"}`` as NumPy arrays.
    """

    def __init__(self, tflite_model, num_threads=None):
        from ai_edge_litert.interpreter import Interpreter

        self.interpreter = Interpreter(model_content=tflite_model, num_threads=num_threads)
        self.runner = self.interpreter.get_signature_runner(SIGNATURE)
        self.input_names = sorted(self.runner.get_input_details(), key=lambda n: ("lengths" in n, n == "seed"))

    def __call__(self, token_ids, lengths, seed=None):
        values = [np.asarray(token_ids, np.int32), np.asarray(lengths, np.int32)]
        if seed is not None:
            values.append(np.asarray(seed, np.int32))
        out = self.runner(**dict(zip(self.input_names, values)))
        return {k: np.asarray(v) for k, v in out.items()}
