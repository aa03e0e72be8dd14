"""Section 7.1 attentions selected by name in our encoder and decoder layers.

``TransformerEncoderLayer(attention="longformer"|...)``: the layer contract
(config, ``.keras`` and SavedModel round-trips, gradients); a window covering
the input equals the full-attention layer with the same weights; a decoder's
efficient self-attention is causal; each exports to SavedModel and converts to
TFLite with built-in ops only (no Flex) and gives the Keras outputs there.
Test names carry ``sparse`` or ``linear`` so ``pytest -k "sparse or linear"`` runs them.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf
from keras import ops

from apps.export import convert_to_tflite, custom_ops
from layers.transformer import TransformerDecoderLayer, TransformerEncoderLayer
from tests.layer_harness import run_layer_contract

RNG = np.random.default_rng(7)
OPTIONS = {
    "longformer": {"window": 4, "num_global": 1},
    "bigbird": {"block": 4, "num_global": 1, "num_random": 1},
    "linformer": {"projected_length": 8},
    "performer": {"num_features": 32},
}
KIND = {"longformer": "sparse", "bigbird": "sparse", "linformer": "linear", "performer": "linear"}
CASES = [pytest.param(name, id=f"{KIND[name]}_{name}") for name in OPTIONS]


def _encoder(attention, **kwargs):
    return TransformerEncoderLayer(
        intermediate_dim=32, num_heads=2, attention=attention, attention_options=OPTIONS.get(attention), **kwargs
    )


def _copy_full_attention_weights(full, efficient):
    """MultiHeadAttention kernels ``(d, heads, head)`` into the efficient layer's ``(d, heads*head)`` Dense ones."""
    src = full.self_attention
    for name, dense in (("query", efficient.self_attention.query_dense), ("key", efficient.self_attention.key_dense),
                        ("value", efficient.self_attention.value_dense)):
        kernel = ops.convert_to_numpy(getattr(src, f"{name}_kernel"))
        bias = ops.convert_to_numpy(getattr(src, f"{name}_bias"))
        dense.set_weights([kernel.reshape(kernel.shape[0], -1), bias.reshape(-1)])
    kernel = ops.convert_to_numpy(src.output_kernel)
    efficient.self_attention.output_dense.set_weights(
        [kernel.reshape(-1, kernel.shape[-1]), ops.convert_to_numpy(src.output_bias)]
    )
    for name in ("self_attention_layer_norm", "feedforward", "feedforward_layer_norm"):
        getattr(efficient, name).set_weights(getattr(full, name).get_weights())


@pytest.mark.parametrize("attention", CASES)
def test_sparse_and_linear_attention_in_the_encoder_layer_pass_the_layer_contract(attention):
    x = RNG.normal(size=(2, 16, 16)).astype("float32")

    def reference(layer, x):  # post-LN composition of the layer's own sub-layers
        y = layer.self_attention_layer_norm(x + layer.self_attention(x))
        return layer.feedforward_layer_norm(y + layer.feedforward(y))

    report = run_layer_contract(lambda: _encoder(attention), x, expected_output_shape=(2, 16, 16),
                                reference=reference, reference_uses_layer=True)
    assert report.layer.get_config()["attention"] == attention


@pytest.mark.parametrize("attention", ["longformer", "bigbird"])
def test_sparse_attention_covering_the_input_equals_the_full_encoder_layer(attention):
    x = RNG.normal(size=(2, 10, 16)).astype("float32")
    padding = np.arange(10)[None] < np.array([10, 7])[:, None]
    full = TransformerEncoderLayer(intermediate_dim=32, num_heads=2)
    covering = {"longformer": {"window": 16}, "bigbird": {"block": 16, "num_random": 2}}[attention]
    sparse = TransformerEncoderLayer(intermediate_dim=32, num_heads=2, attention=attention,
                                     attention_options=covering)
    expected = ops.convert_to_numpy(full(x, padding_mask=padding))
    sparse(x)
    _copy_full_attention_weights(full, sparse)
    got = ops.convert_to_numpy(sparse(x, padding_mask=padding))
    np.testing.assert_allclose(got[0], expected[0], atol=1e-5)
    np.testing.assert_allclose(got[1, :7], expected[1, :7], atol=1e-5)


@pytest.mark.parametrize("attention", [pytest.param(a, id=f"{KIND[a]}_{a}") for a in ("longformer", "bigbird", "performer")])
def test_sparse_and_linear_attention_in_the_decoder_layer_are_causal(attention):
    layer = TransformerDecoderLayer(intermediate_dim=32, num_heads=2, attention=attention,
                                    attention_options=OPTIONS[attention])
    x = RNG.normal(size=(1, 16, 16)).astype("float32")
    later = x.copy()
    later[:, 12:] += 5.0
    a, b = (ops.convert_to_numpy(layer(v)) for v in (x, later))
    np.testing.assert_allclose(a[:, :12], b[:, :12], atol=1e-5)
    assert not np.allclose(a[:, 12:], b[:, 12:])


def test_sparse_longformer_decoder_covering_the_input_equals_the_full_causal_decoder():
    x = RNG.normal(size=(2, 9, 16)).astype("float32")
    full = TransformerDecoderLayer(intermediate_dim=32, num_heads=2)
    sparse = TransformerDecoderLayer(intermediate_dim=32, num_heads=2, attention="longformer",
                                     attention_options={"window": 9})
    expected = ops.convert_to_numpy(full(x))
    sparse(x)
    _copy_full_attention_weights(full, sparse)
    np.testing.assert_allclose(ops.convert_to_numpy(sparse(x)), expected, atol=1e-5)


@pytest.mark.parametrize("attention", CASES)
def test_sparse_and_linear_attention_export_to_savedmodel_and_builtin_tflite(attention, tmp_path):
    """An encoder layer with each attention in a SavedModel, converted with TFLITE_BUILTINS only."""
    layer = _encoder(attention)
    x = RNG.normal(size=(2, 16, 16)).astype("float32")
    padding = np.ones((2, 16), bool)
    padding[1, 12:] = False
    expected = ops.convert_to_numpy(layer(x, padding_mask=padding))

    archive = keras.export.ExportArchive()  # as apps/export.py writes every release
    archive.add_endpoint(
        "serving_default", lambda x, mask: {"outputs": layer(x, padding_mask=mask)},
        input_signature=[tf.TensorSpec((None, 16, 16), tf.float32, name="x"), tf.TensorSpec((None, 16), tf.bool, name="mask")],
    )
    archive.write_out(str(tmp_path), verbose=False)
    restored = tf.saved_model.load(str(tmp_path)).signatures["serving_default"]
    np.testing.assert_allclose(restored(x=tf.constant(x), mask=tf.constant(padding))["outputs"].numpy(), expected,
                               atol=1e-5)

    tflite_model = convert_to_tflite(tmp_path, "serving_default")  # raises if any Flex or custom op is needed
    assert custom_ops(tflite_model) == []
    interpreter = tf.lite.Interpreter(model_content=tflite_model)
    runner = interpreter.get_signature_runner("serving_default")
    got = runner(x=x, mask=padding)["outputs"]
    np.testing.assert_allclose(got, expected, atol=1e-4)


def test_sparse_and_linear_attention_choices_refuse_bad_settings():
    with pytest.raises(ValueError, match="full, longformer, bigbird, linformer, performer"):
        TransformerEncoderLayer(32, 2, attention="reformer")
    with pytest.raises(ValueError, match="takes no option block.*window, num_global"):
        TransformerEncoderLayer(32, 2, attention="longformer", attention_options={"block": 4})
    with pytest.raises(ValueError, match="encoder-only"):
        TransformerDecoderLayer(32, 2, attention="linformer")
    with pytest.raises(ValueError, match="feedforward must be one of dense, switch"):
        TransformerEncoderLayer(32, 2, feedforward="moe")
    layer = _encoder("longformer")
    x = np.zeros((1, 8, 16), "float32")
    with pytest.raises(ValueError, match="attention_mask needs attention='full'"):
        layer(x, attention_mask=np.ones((1, 8, 8), bool))
    decoder = TransformerDecoderLayer(32, 2, attention="performer")
    decoder(x)
    cache = (np.zeros((1, 2, 8, 8), "float32"),) * 2
    with pytest.raises(ValueError, match="self_attention_cache.*needs attention='full'"):
        decoder(x[:, :1], self_attention_cache=cache, cache_index=0)
    with pytest.raises(ValueError, match="at most max_length"):
        linformer = _encoder("linformer")
        linformer(np.zeros((1, 8, 16), "float32"))
        linformer(np.zeros((1, 12, 16), "float32"))


def test_switch_moe_feedforward_in_the_models_trains_and_round_trips(tmp_path):
    """``feedforward="switch"`` in a causal LM: auxiliary losses while training, ``.keras`` round trip, KV-cache decoding."""
    import keras

    from layers.transformer_models import TransformerCausalLM

    lm = TransformerCausalLM(vocab_size=40, max_length=16, num_layers=2, hidden_dim=16, num_heads=2,
                             feedforward="switch", feedforward_options={"num_experts": 4, "capacity_factor": 2.0})
    tokens = RNG.integers(0, 40, size=(3, 12)).astype("int32")
    logits = lm(tokens, training=True)
    assert tuple(logits.shape) == (3, 12, 40)
    assert len(lm.losses) == 4  # load balancing and z-loss of each of the two layers
    path = tmp_path / "switch.keras"
    lm.save(path)
    restored = keras.saving.load_model(path)
    np.testing.assert_allclose(ops.convert_to_numpy(restored(tokens)), ops.convert_to_numpy(lm(tokens)), atol=1e-5)
    cache = lm.build_cache(3, 16)
    step, _ = lm.call_with_cache(tokens[:, :5], cache, 0)  # the Switch FFN also decodes with the KV-cache
    np.testing.assert_allclose(ops.convert_to_numpy(step), ops.convert_to_numpy(lm(tokens[:, :5])), atol=1e-4)
    with pytest.raises(ValueError, match="capacity_factor"):
        TransformerCausalLM(40, 16, feedforward="switch", feedforward_options={"num_experts": 2, "capacity_factor": 0})
