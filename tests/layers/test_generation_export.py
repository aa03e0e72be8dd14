import keras
import numpy as np
import pytest
import tensorflow as tf

from layers.generation import TextGenerator
from layers.generation_export import (
    TFLiteGenerator,
    convert_to_tflite,
    export_generation,
    flex_ops,
    tflite_ops,
)
from layers.samplers import BeamSampler, TopKSampler
from layers.transformer_models import Transformer, TransformerCausalLM

PROMPTS = np.array([[5, 6, 7, 8], [9, 10, 0, 0]], "int32")
LENGTHS = np.array([4, 2], "int32")
SOURCE = np.array([[4, 5, 6, 7, 8], [9, 10, 11, 0, 0]], "int32")
SOURCE_LENGTHS = np.array([5, 3], "int32")


@pytest.fixture(scope="module")
def lm():
    keras.utils.set_random_seed(3)
    return TransformerCausalLM(40, 16, num_layers=2, hidden_dim=32, num_heads=2)


@pytest.fixture(scope="module")
def seq2seq():
    keras.utils.set_random_seed(4)
    return Transformer(20, 40, 16, hidden_dim=32, num_heads=2, normalize_first=True)


def _keras_tokens(model, sampler="greedy", seed=0, **kwargs):
    generator = TextGenerator(model, sampler=sampler, max_new_tokens=6, end_token_id=3, jit_compile=False)
    if model.is_encoder_decoder:
        mask = np.arange(SOURCE.shape[1])[None] < SOURCE_LENGTHS[:, None]
        return generator(
            np.ones((2, 1), "int32"), encoder_inputs={"encoder_inputs": SOURCE, "encoder_padding_mask": mask}, seed=seed
        )
    return generator(PROMPTS, LENGTHS, seed=seed)


def _assert_same(out, expected):
    np.testing.assert_array_equal(np.asarray(out["token_ids"]), expected["token_ids"])
    np.testing.assert_array_equal(np.asarray(out["lengths"]), expected["lengths"])


@pytest.mark.parametrize("model_name", ["causal_lm", "encoder_decoder"])
def test_greedy_generation_exports_to_saved_model_and_builtins_only_tflite(model_name, lm, seq2seq, tmp_path):
    model = lm if model_name == "causal_lm" else seq2seq
    expected = _keras_tokens(model)
    kwargs = {"source_length": 5} if model.is_encoder_decoder else {"prompt_length": 4}
    path = export_generation(model, str(tmp_path / "sm"), max_new_tokens=6, batch_size=2, end_token_id=3, **kwargs)
    inputs = (SOURCE, SOURCE_LENGTHS) if model.is_encoder_decoder else (PROMPTS, LENGTHS)

    restored = tf.saved_model.load(path)
    assert {"generate", "serving_default"} <= set(restored.signatures)
    names = ("encoder_token_ids", "encoder_lengths") if model.is_encoder_decoder else ("prompt_ids", "prompt_lengths")
    served = restored.signatures["generate"](**{n: tf.constant(v) for n, v in zip(names, inputs)})
    _assert_same({k: v.numpy() for k, v in served.items()}, expected)

    tflite_model = convert_to_tflite(path)
    assert flex_ops(tflite_model) == []
    ops = tflite_ops(tflite_model)
    # The decode loop itself is in the model, with the in-place cache write.
    assert "WHILE" in ops and "DYNAMIC_UPDATE_SLICE" in ops, ops
    _assert_same(TFLiteGenerator(tflite_model)(*inputs), expected)


def test_beam_search_exports_to_tflite(lm, tmp_path):
    expected = _keras_tokens(lm, sampler=BeamSampler(num_beams=3))
    path = export_generation(
        lm, str(tmp_path / "sm"), max_new_tokens=6, prompt_length=4, batch_size=2, end_token_id=3,
        sampler=BeamSampler(num_beams=3),
    )
    tflite_model = convert_to_tflite(path)
    assert flex_ops(tflite_model) == []
    _assert_same(TFLiteGenerator(tflite_model)(PROMPTS, LENGTHS), expected)


def test_seeded_sampling_exports_to_saved_model(lm, tmp_path):
    expected = _keras_tokens(lm, sampler=TopKSampler(k=5), seed=7)
    path = export_generation(
        lm, str(tmp_path / "sm"), max_new_tokens=6, prompt_length=4, batch_size=2, end_token_id=3,
        sampler=TopKSampler(k=5),
    )
    generate = tf.saved_model.load(path).signatures["generate"]
    served = generate(prompt_ids=PROMPTS, prompt_lengths=LENGTHS, seed=tf.constant(7))
    _assert_same({k: v.numpy() for k, v in served.items()}, expected)
    other = generate(prompt_ids=PROMPTS, prompt_lengths=LENGTHS, seed=tf.constant(8))
    assert not np.array_equal(other["token_ids"].numpy(), expected["token_ids"])
    # Stateless random ops have no TFLite built-in: conversion says so instead of pulling in Flex.
    with pytest.raises(ValueError, match="outside the TFLite built-ins"):
        convert_to_tflite(path)


def test_flex_ops_finds_tensorflow_fallback_ops():
    @tf.function(input_signature=[tf.TensorSpec([2], tf.string)])
    def lengths(x):
        return tf.strings.length(x)

    converter = tf.lite.TFLiteConverter.from_concrete_functions([lengths.get_concrete_function()])
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS, tf.lite.OpsSet.SELECT_TF_OPS]
    assert flex_ops(converter.convert()) == ["FlexStringLength"]


def test_export_rejects_bad_arguments(lm, seq2seq, tmp_path):
    with pytest.raises(ValueError, match="needs prompt_length for a causal LM"):
        export_generation(lm, str(tmp_path / "a"), max_new_tokens=4)
    with pytest.raises(ValueError, match="needs source_length for an encoder-decoder model"):
        export_generation(seq2seq, str(tmp_path / "b"), max_new_tokens=4)
    with pytest.raises(ValueError, match="beyond the cache size 16"):
        export_generation(lm, str(tmp_path / "c"), max_new_tokens=14, prompt_length=4)
