"""layers.gpt: GPT-2 equals keras-hub's GPT2CausalLM, GPT is post-LN (NumPy reference), the init, the checks."""

import keras
import keras_hub
import numpy as np
import pytest

from layers.gpt import GPT_SIZES, gpt, gpt2, residual_stddev
from layers.transformer_models import TransformerCausalLM, copy_gpt2_weights
from tests.layer_harness import run_layer_contract

VOCAB, LENGTH = 40, 16
SIZES = dict(num_layers=2, hidden_dim=32, num_heads=2, intermediate_dim=64)
TOKENS = np.random.default_rng(0).integers(1, VOCAB, (2, 7)).astype("int32")


def to_np(x):
    return keras.ops.convert_to_numpy(x)


def built(make, weights=None):
    lm = make()
    lm.build()
    if weights is not None:
        lm.set_weights(weights)
    return lm


# -- GPT-2: keras-hub parity and the layer contract ---------------------------------------------
def test_gpt2_equals_keras_hub_gpt2_causal_lm():
    backbone = keras_hub.models.GPT2Backbone(
        vocabulary_size=VOCAB, num_layers=2, num_heads=2, hidden_dim=32, intermediate_dim=64,
        max_sequence_length=LENGTH,
    )
    theirs = keras_hub.models.GPT2CausalLM(backbone=backbone, preprocessor=None)
    ours = built(lambda: gpt2(VOCAB, LENGTH, **SIZES))
    copy_gpt2_weights(backbone, ours)
    assert ours.normalize_first and ours.final_layer_norm is not None and ours.tie_embeddings

    report = run_layer_contract(
        lambda: built(lambda: gpt2(VOCAB, LENGTH, **SIZES), ours.get_weights()),
        TOKENS,
        expected_output_shape=(2, 7, VOCAB),
        reference=lambda ids: to_np(theirs({"token_ids": ids, "padding_mask": np.ones_like(ids, bool)})),
        atol=1e-5,
    )
    config = report.layer.get_config()
    assert config["output_kernel_initializer"]["config"]["stddev"] == pytest.approx(0.02 / 2)  # 2 layers


# -- GPT: post-LN, checked against NumPy of the paper's block --------------------------------------
def _layer_norm(x, norm):
    gamma, beta = (to_np(w) for w in (norm.gamma, norm.beta))
    mean, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
    return gamma * (x - mean) / np.sqrt(var + norm.epsilon) + beta


def _gelu_tanh(x):
    return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x**3)))


def _attention(x, mha):
    w = {name: to_np(getattr(mha, name)) for name in (
        "query_kernel", "query_bias", "key_kernel", "key_bias", "value_kernel", "value_bias", "output_kernel",
        "output_bias")}
    q, k, v = (np.einsum("btd,dhe->bhte", x, w[f"{n}_kernel"]) + w[f"{n}_bias"][:, None]
               for n in ("query", "key", "value"))
    scores = q @ k.transpose(0, 1, 3, 2) / np.sqrt(q.shape[-1])
    length = x.shape[1]
    scores = np.where(np.tril(np.ones((length, length), bool)), scores, -1e9)
    weights = np.exp(scores - scores.max(-1, keepdims=True))
    weights /= weights.sum(-1, keepdims=True)
    return np.einsum("bhte,hed->btd", weights @ v, w["output_kernel"]) + w["output_bias"]


def numpy_gpt(lm, ids):
    """Radford et al. (2018): h = LN(x + Attn(x)); h = LN(h + FFN(h)); logits = h W_e^T, no final LN."""
    embeddings = to_np(lm.token_embeddings)
    x = embeddings[ids] + to_np(lm.position_embedding.embeddings)[: ids.shape[1]]
    for layer in lm.decoder_layers:
        x = _layer_norm(x + _attention(x, layer.self_attention), layer.self_attention_layer_norm)
        ffn = layer.feedforward
        hidden = _gelu_tanh(x @ to_np(ffn.intermediate_dense.kernel) + to_np(ffn.intermediate_dense.bias))
        x = _layer_norm(x + hidden @ to_np(ffn.output_dense.kernel) + to_np(ffn.output_dense.bias),
                        layer.feedforward_layer_norm)
    return x @ embeddings.T


def test_gpt_is_post_ln_without_final_norm():
    lm = built(lambda: gpt(VOCAB, LENGTH, **SIZES))
    assert not lm.normalize_first and lm.final_layer_norm is None
    run_layer_contract(
        lambda: built(lambda: gpt(VOCAB, LENGTH, **SIZES), lm.get_weights()),
        TOKENS,
        expected_output_shape=(2, 7, VOCAB),
        reference=lambda ids: numpy_gpt(lm, ids),
        atol=1e-5,
        check_saved_model=False,  # the GPT-2 test exports the same class
    )
    # The same weights in the pre-LN arrangement (an identity-initialised final norm) compute something else.
    pre_ln = built(lambda: gpt2(VOCAB, LENGTH, **SIZES), lm.get_weights() + [np.ones(32), np.zeros(32)])
    assert np.abs(to_np(pre_ln(TOKENS)) - to_np(lm(TOKENS))).max() > 0.1


# -- initialisation -------------------------------------------------------------------------------
INIT_SIZES = dict(num_layers=4, hidden_dim=128, num_heads=4, intermediate_dim=512)


def _kernels(lm):
    """``{kind: [weights]}`` of a built causal LM: residual projections, other kernels, embeddings."""
    out = {"residual": [], "kernel": [], "embedding": [lm.token_embeddings, lm.position_embedding.embeddings]}
    for layer in lm.decoder_layers:
        attention, ffn = layer.self_attention, layer.feedforward
        out["residual"] += [attention.output_kernel, ffn.output_dense.kernel]
        out["kernel"] += [attention.query_kernel, attention.key_kernel, attention.value_kernel,
                          ffn.intermediate_dense.kernel]
    return out


def _assert_std(weights, expected, what):
    for w in weights:
        values = to_np(w).ravel()
        std = values.std()
        assert abs(std - expected) < 0.05 * expected, f"{what} {w.path}: std {std:.5f} != {expected:.5f}"
        assert abs(values.mean()) < 4 * expected / np.sqrt(values.size), f"{what} {w.path}: mean {values.mean()}"


@pytest.mark.parametrize("builder, residual", [(gpt2, 0.02 / np.sqrt(8)), (gpt, 0.02)], ids=["gpt2", "gpt"])
def test_initialisation_std(builder, residual):
    lm = built(lambda: builder(512, 64, **INIT_SIZES))
    kernels = _kernels(lm)
    _assert_std(kernels["residual"], residual, "residual projection")
    _assert_std(kernels["kernel"], 0.02, "kernel")
    _assert_std(kernels["embedding"], 0.02, "embedding")
    for w in lm.weights:
        if w.path.endswith("bias") or w.path.endswith("beta"):
            assert not np.any(to_np(w)), f"{w.path} does not start at 0"
        elif w.path.endswith("gamma"):
            assert np.all(to_np(w) == 1), f"{w.path} does not start at 1"
    attention = lm.decoder_layers[0].self_attention
    q, k, v = (to_np(w) for w in (attention.query_kernel, attention.key_kernel, attention.value_kernel))
    assert not (np.array_equal(q, k) or np.array_equal(q, v) or np.array_equal(k, v)), "q, k, v start equal"


def test_scaled_init_survives_from_config_and_keras_file(tmp_path):
    lm = built(lambda: gpt2(512, 64, **INIT_SIZES))
    fresh = built(lambda: TransformerCausalLM.from_config(lm.get_config()))
    _assert_std(_kernels(fresh)["residual"], residual_stddev(4), "from_config residual projection")
    lm.save(tmp_path / "gpt2.keras")
    loaded = keras.models.load_model(tmp_path / "gpt2.keras")
    assert loaded.get_config() == lm.get_config()
    np.testing.assert_array_equal(to_np(loaded(TOKENS)), to_np(lm(TOKENS)))


def test_sizes_are_the_papers():
    assert residual_stddev(12) == pytest.approx(0.02 / np.sqrt(24))
    lm = gpt2(50257, 1024, **GPT_SIZES["gpt2_small"])
    lm.build()
    assert lm.count_params() == 124_439_808  # GPT-2 small (HF "gpt2"; the paper rounds to 117M)
    for name, sizes in GPT_SIZES.items():
        assert sizes["hidden_dim"] % sizes["num_heads"] == 0, name


# -- argument checks ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "builder, args, kwargs, message",
    [
        (gpt2, (0, 16), {}, r"gpt2 vocab_size must be a positive integer, got 0"),
        (gpt, (40, None), {}, r"gpt max_length must be a positive integer, got None"),
        (gpt2, (40, 16), {"num_layers": 2.5}, r"gpt2 num_layers must be a positive integer, got 2.5"),
        (gpt2, (40, 16), {"hidden_dim": 30, "num_heads": 4}, r"hidden_dim=30 is not divisible by num_heads=4"),
        (gpt, (40, 16), {"dropout": 1.0}, r"gpt dropout must be a float in \[0, 1\), got 1.0"),
        (gpt2, (40, 16), {"intermediate_dim": 0}, r"gpt2 intermediate_dim must be a positive integer"),
        (gpt2, (40, 16), {"normalize_first": False}, r"gpt2\(\) fixes \['normalize_first'\] .*TransformerCausalLM"),
        (gpt, (40, 16), {"tie_embeddings": False, "activation": "relu"}, r"fixes \['activation', 'tie_embeddings'\]"),
    ],
)
def test_builders_reject_bad_arguments(builder, args, kwargs, message):
    with pytest.raises(ValueError, match=message):
        builder(*args, **kwargs)


def test_residual_stddev_rejects_bad_depth():
    with pytest.raises(ValueError, match="num_layers must be a positive integer, got 0"):
        residual_stddev(0)
