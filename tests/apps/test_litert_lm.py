"""apps/litert_lm.py: prefill_<N> / decode TFLite signatures with the KV cache passed in and out; the host loop
over the LiteRT interpreter gives the same greedy tokens as Keras (TextGenerator)."""

import keras
import numpy as np
import pytest

from apps.litert_lm import LiteRTLMRunner, PrefillDecodeModule, convert_prefill_decode
from layers.generation import TextGenerator
from layers.gpt import gpt2
from layers.transformer_models import Transformer

VOCAB, MAX_LENGTH, NEW = 60, 40, 12


@pytest.fixture(scope="module")
def model():
    keras.utils.set_random_seed(5)
    lm = gpt2(VOCAB, MAX_LENGTH, num_layers=2, hidden_dim=32, num_heads=2, dropout=0.0)
    lm.build()
    for weight in lm.weights:  # peaked distributions: no near ties between float32 paths
        if len(weight.shape) >= 2:
            weight.assign(weight * 20.0)
    return lm


@pytest.fixture(scope="module")
def tflite_path(model, tmp_path_factory):
    return convert_prefill_decode(model, tmp_path_factory.mktemp("litert") / "lm.tflite", prefill_lengths=(4, 16),
                                  cache_length=32)


@pytest.mark.parametrize("prompt", [[2, 7], [2, 11, 5, 9], [2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]])
def test_litert_driver_gives_the_keras_greedy_tokens(model, tflite_path, prompt):
    keras_ids = TextGenerator(model, max_new_tokens=NEW, cache_length=32)(np.array([prompt]))["token_ids"][0]
    runner = LiteRTLMRunner(tflite_path)
    assert runner.prefill_lengths == [4, 16] and runner.cache_length == 32
    assert runner.generate(prompt, max_new_tokens=NEW) == keras_ids[len(prompt):].tolist()


def test_signatures_pass_the_cache_explicitly(tflite_path):
    import tensorflow as tf

    signatures = tf.lite.Interpreter(model_path=str(tflite_path)).get_signature_list()
    assert sorted(signatures) == ["decode", "prefill_16", "prefill_4"]
    assert sorted(signatures["decode"]["inputs"]) == ["k_0", "k_1", "position", "token_id", "v_0", "v_1"]
    assert sorted(signatures["decode"]["outputs"]) == ["k_0", "k_1", "logits", "v_0", "v_1"]
    assert sorted(signatures["prefill_4"]["inputs"]) == ["length", "token_ids"]


def test_end_token_stops_and_bad_prompts_raise_clear_errors(model, tflite_path):
    runner = LiteRTLMRunner(tflite_path)
    first = runner.generate([2, 7], max_new_tokens=NEW)
    assert runner.generate([2, 7], max_new_tokens=NEW, end_token_id=first[2]) == first[: first.index(first[2]) + 1]
    with pytest.raises(ValueError, match="longest prefill reads 16"):
        runner.generate(list(range(2, 20)))
    with pytest.raises(ValueError, match="exceed the cache of 32 positions"):
        runner.generate([2, 7], max_new_tokens=31)
    with pytest.raises(ValueError, match="the prompt is empty"):
        runner.generate([])
    with pytest.raises(ValueError, match="decoder-only"):
        PrefillDecodeModule(Transformer(VOCAB, VOCAB, MAX_LENGTH))
    with pytest.raises(ValueError, match="prefill_lengths must be ints in"):
        PrefillDecodeModule(model, prefill_lengths=(40,), cache_length=32)
