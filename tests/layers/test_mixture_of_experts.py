"""Switch Transformer FFN (section 7.4): the layer equals a NumPy loop over tokens that routes each to its
argmax expert, queues it in order within its group (a sequence, or ``group_size`` consecutive tokens) and
drops it past the group's capacity; groups route independently; the auxiliary losses equal their (per-group)
formulas and reach ``layer.losses`` and the training loss; the router learns through the gate; one expert is a
plain FFN; padding is neither routed nor counted; bad arguments are refused; mixed precision keeps the router
float32."""

import math
import tempfile

import keras
import numpy as np
import pytest
import tensorflow as tf
from keras import ops

from layers.mixture_of_experts import SwitchFeedForward
from layers.transformer import PositionwiseFeedForward
from tests.layer_harness import run_layer_contract, seeded_array

WEIGHTS = ("router_kernel", "intermediate_kernel", "intermediate_bias", "output_kernel", "output_bias")


def _weights(layer):
    return {name: ops.convert_to_numpy(getattr(layer, name)).astype("float64") for name in WEIGHTS}


def _softmax(h):
    e = np.exp(h - h.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def numpy_switch(layer, x, padding_mask=None):
    """The textbook layer token by token: route to argmax, queue per expert within the token's group, drop past
    the group's capacity, scale by gate.

    Groups: token ``t`` of the flattened ``(batch, n)`` tokens is in group ``t // G``, with ``G = n`` for
    ``group_size=None`` (one group per sequence) or ``G = group_size`` (the last group may be short: its
    missing tokens are the layer's internal fill, never routed). ``C = ceil(capacity_factor * G / experts)``.
    ``L_b`` is the per-group ``E * sum_e f_ge P_ge`` over each group's real tokens, averaged over groups with
    weights their real-token counts; ``L_z``, ``f_e`` and the dropped fraction are over all real tokens.
    """
    w = _weights(layer)
    tokens = np.asarray(x, "float64").reshape(-1, x.shape[-1])
    keep = np.ones(len(tokens), bool) if padding_mask is None else np.asarray(padding_mask).reshape(-1)
    logits = tokens @ w["router_kernel"]
    probs = _softmax(logits)
    expert = probs.argmax(-1)
    experts = layer.num_experts
    group_tokens = x.shape[1] if layer.group_size is None else layer.group_size
    group = np.arange(len(tokens)) // group_tokens
    capacity = math.ceil(layer.capacity_factor * group_tokens / experts)
    queued = np.zeros((group.max() + 1, experts), int)
    out = np.zeros_like(tokens)
    dispatched = np.zeros(len(tokens), bool)
    for t in np.flatnonzero(keep):
        g, e = group[t], expert[t]
        if queued[g, e] < capacity:
            hidden = np.maximum(tokens[t] @ w["intermediate_kernel"][e] + w["intermediate_bias"][e], 0.0)
            out[t] = probs[t, e] * (hidden @ w["output_kernel"][e] + w["output_bias"][e])
            dispatched[t] = True
        queued[g, e] += 1
    n_real = keep.sum()
    balance = 0.0
    for g in np.unique(group[keep]):
        real = keep & (group == g)
        f_g = np.bincount(expert[real], minlength=experts) / real.sum()
        balance += real.sum() / n_real * experts * np.sum(f_g * probs[real].mean(0))
    lse = np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1)) + logits.max(-1)
    stats = {
        "load_balancing": balance,
        "z_loss": np.mean(lse[keep] ** 2),
        "expert_fraction": np.bincount(expert[keep], minlength=experts) / n_real,
        "dropped_fraction": (n_real - dispatched.sum()) / n_real,
    }
    route = {"probs": probs, "expert": expert, "dispatched": dispatched, "keep": keep, "group": group,
             "capacity": capacity}
    return out.reshape(x.shape), stats, route


def _tagging_router(layer, scale=6.0):
    """Router kernel that reads the expert off the first ``num_experts`` features (tagged by ``_tag``)."""
    experts = layer.num_experts
    kernel = np.zeros(tuple(layer.router_kernel.shape), "float32")
    kernel[:experts] = np.eye(experts)
    layer.router_kernel.assign(kernel)


def _tag(x, tags, scale=6.0):
    """Copy of ``x (batch, n, d)`` whose token ``(b, i)`` is routed to expert ``tags[b, i]`` by ``_tagging_router``."""
    experts = int(np.max(tags)) + 1
    tagged = x.copy()
    tagged[..., :experts] = scale * np.eye(experts)[tags]
    return tagged


@pytest.mark.parametrize("group_size", [None, 6])  # 6: 20 tokens, so the last group is 2 real tokens + 4 fill
def test_switch_moe_layer_contract_against_numpy(group_size):
    x = seeded_array(2, 10, 8, seed=1)

    def make():
        return SwitchFeedForward(16, num_experts=4, capacity_factor=1.0, group_size=group_size, router_jitter=0.01)

    report = run_layer_contract(make, x, expected_output_shape=(2, 10, 8),
                                reference=lambda layer, x: numpy_switch(layer, x)[0], reference_uses_layer=True)
    # The reference run must have exercised dropping, or the capacity path went untested.
    assert numpy_switch(report.layer, x)[1]["dropped_fraction"] > 0


def test_switch_moe_routes_each_token_to_its_argmax_expert():
    x = seeded_array(2, 12, 8, seed=2)
    layer = SwitchFeedForward(16, num_experts=4, capacity_factor=4.0)
    layer(x)
    routed = {k: ops.convert_to_numpy(v) for k, v in layer.route(x).items()}
    probs = _softmax(x.reshape(-1, 8).astype("float64") @ _weights(layer)["router_kernel"])
    np.testing.assert_allclose(routed["router_probs"].reshape(-1, 4), probs, atol=1e-6)
    np.testing.assert_array_equal(routed["expert_index"].reshape(-1), probs.argmax(-1))
    np.testing.assert_allclose(routed["gate"].reshape(-1), probs.max(-1), atol=1e-6)
    assert len(set(routed["expert_index"].reshape(-1))) > 1  # not a collapsed router

    # A router that reads the expert off the input: token t, tagged with expert k, must get gate * FFN_k.
    tags = np.arange(24) % 4
    tagged = x.copy().reshape(-1, 8)
    tagged[:, :4] = 6.0 * np.eye(4)[tags]
    tagged = tagged.reshape(2, 12, 8)
    kernel = np.zeros((8, 4), "float32")
    kernel[:4] = np.eye(4)
    layer.router_kernel.assign(kernel)
    out = ops.convert_to_numpy(layer(tagged))
    w = _weights(layer)
    gate = _softmax(6.0 * np.eye(4))[tags, tags]
    for t, k in enumerate(tags):
        token = tagged.reshape(-1, 8)[t]
        ffn = np.maximum(token @ w["intermediate_kernel"][k] + w["intermediate_bias"][k], 0) @ w["output_kernel"][k]
        np.testing.assert_allclose(out.reshape(-1, 8)[t], gate[t] * (ffn + w["output_bias"][k]), atol=1e-5)


@pytest.mark.parametrize("group_size, capacity", [
    (None, 2),  # one group per row: C = ceil(0.5 * 8 / 2)
    (16, 4),    # the whole call is one group: C = ceil(0.5 * 16 / 2)
    (5, 2),     # groups of 5, the last one a single real token: C = ceil(0.5 * 5 / 2)
])
def test_switch_moe_drops_exactly_the_tokens_past_capacity_in_order(group_size, capacity):
    x = seeded_array(2, 8, 8, seed=3)
    layer = SwitchFeedForward(16, num_experts=2, capacity_factor=0.5, group_size=group_size)
    out = ops.convert_to_numpy(layer(x)).reshape(-1, 8)
    expected, stats, route = numpy_switch(layer, x)
    assert route["capacity"] == capacity
    zero_rows = np.all(out == 0.0, axis=-1)
    assert 0 < zero_rows.sum() < len(zero_rows)
    np.testing.assert_array_equal(zero_rows, ~route["dispatched"])
    for g in np.unique(route["group"]):  # in each group, each expert keeps its first C tokens in (batch, n) order
        for e in range(2):
            queue = np.flatnonzero((route["expert"] == e) & (route["group"] == g))
            np.testing.assert_array_equal(route["dispatched"][queue], np.arange(len(queue)) < capacity)
    np.testing.assert_allclose(out, expected.reshape(-1, 8), atol=1e-5)
    losses = layer.router_losses(x)
    np.testing.assert_allclose(float(losses["dropped_fraction"]), (~route["dispatched"]).sum() / 16, atol=1e-7)
    np.testing.assert_array_equal(ops.convert_to_numpy(layer.route(x)["dispatched"]).reshape(-1), route["dispatched"])


def test_switch_moe_sequences_are_separate_groups_by_default():
    # Two experts, C = ceil(1.0 * 8 / 2) = 4 per row. Row 0 sends all 8 tokens to expert 0 (4 overflow); row 1
    # sends 4 to each expert (none overflows). Pooled over the call (one group of 16, C = 8), expert 0 would get
    # 12 tokens and drop the last 4 of them, all in row 1: per-row capacity drops only in row 0.
    tags = np.array([[0] * 8, [0, 1, 1, 0, 1, 0, 0, 1]])
    x = _tag(seeded_array(2, 8, 8, seed=11), tags)
    layer = SwitchFeedForward(16, num_experts=2, capacity_factor=1.0)
    layer.build(x.shape)
    _tagging_router(layer)
    np.testing.assert_array_equal(ops.convert_to_numpy(layer.route(x)["expert_index"]), tags)

    dispatched = ops.convert_to_numpy(layer.route(x)["dispatched"])
    np.testing.assert_array_equal(dispatched[0], np.arange(8) < 4)
    assert dispatched[1].all()
    out = ops.convert_to_numpy(layer(x))
    assert np.all(out[0, 4:] == 0.0) and np.all(np.any(out[0, :4] != 0.0, axis=-1))
    assert np.all(np.any(out[1] != 0.0, axis=-1))
    # Each row routes as if it were alone in the batch, and equals the reference.
    for b in range(2):
        np.testing.assert_allclose(ops.convert_to_numpy(layer(x[b:b + 1]))[0], out[b], atol=1e-6)
    expected, stats, _ = numpy_switch(layer, x)
    np.testing.assert_allclose(out, expected, atol=1e-5)
    got = {k: ops.convert_to_numpy(v) for k, v in layer.router_losses(x).items()}
    for key, value in stats.items():
        np.testing.assert_allclose(got[key], value, rtol=1e-5, atol=1e-6, err_msg=key)
    np.testing.assert_allclose(got["dropped_fraction"], 4 / 16)
    # L_b is the mean of the per-row losses (T5X), not the loss of the pooled f_e and P_e.
    probs = ops.convert_to_numpy(layer.route(x)["router_probs"]).astype("float64")
    per_row = [2 * np.sum(np.bincount(tags[b], minlength=2) / 8 * probs[b].mean(0)) for b in range(2)]
    pooled = 2 * np.sum(np.bincount(tags.ravel(), minlength=2) / 16 * probs.reshape(-1, 2).mean(0))
    np.testing.assert_allclose(got["load_balancing"], np.mean(per_row), rtol=1e-5)
    assert abs(np.mean(per_row) - pooled) > 1e-2

    # The same tokens in one group of 16 (C = 8): now row 0 is whole and row 1 loses its last 4 expert-0 tokens.
    pooled_layer = SwitchFeedForward(16, num_experts=2, capacity_factor=1.0, group_size=16)
    pooled_layer.build(x.shape)
    pooled_layer.set_weights(layer.get_weights())
    dispatched = ops.convert_to_numpy(pooled_layer.route(x)["dispatched"])
    assert dispatched[0].all()
    np.testing.assert_array_equal(dispatched[1], tags[1] == 1)


def test_switch_moe_group_size_that_does_not_divide_the_tokens():
    # 3 x 5 = 15 tokens in groups of 4: the last group has 3 real tokens and one internal fill token.
    x = seeded_array(3, 5, 8, seed=12)
    mask = np.ones((3, 5), bool)
    mask[1, 3:] = False
    layer = SwitchFeedForward(16, num_experts=2, capacity_factor=0.5, group_size=4)  # C = ceil(0.5 * 4 / 2) = 1
    for padding_mask in (None, mask):
        out = ops.convert_to_numpy(layer(x, padding_mask=padding_mask))
        expected, stats, route = numpy_switch(layer, x, padding_mask)
        assert 0 < (~route["dispatched"] & route["keep"]).sum()  # the capacity path is exercised
        np.testing.assert_allclose(out, expected, atol=1e-5)
        np.testing.assert_array_equal(
            ops.convert_to_numpy(layer.route(x, padding_mask=padding_mask)["dispatched"]).reshape(-1),
            route["dispatched"])
        got = {k: ops.convert_to_numpy(v) for k, v in layer.router_losses(x, padding_mask=padding_mask).items()}
        for key, value in stats.items():
            np.testing.assert_allclose(got[key], value, rtol=1e-5, atol=1e-6, err_msg=key)

    # Dispatch is per group, (groups, group_tokens, experts, C), not (tokens, experts, C).
    _, _, routing = layer._route(ops.convert_to_tensor(x), None)
    assert tuple(routing["dispatch"].shape) == (4, 4, 2, 1)

    # Groups are consecutive tokens in (batch, n) order: the same as a group_size=None twin on a (4, 4) batch
    # whose 16th token is padding.
    twin = SwitchFeedForward(16, num_experts=2, capacity_factor=0.5)
    twin.build((4, 4, 8))
    twin.set_weights(layer.get_weights())
    regrouped = np.concatenate([x.reshape(-1, 8), np.full((1, 8), 9.0, "float32")]).reshape(4, 4, 8)
    twin_mask = np.concatenate([mask.reshape(-1), [False]]).reshape(4, 4)
    twin_out = ops.convert_to_numpy(twin(regrouped, padding_mask=twin_mask)).reshape(-1, 8)[:15]
    np.testing.assert_allclose(twin_out.reshape(3, 5, 8), ops.convert_to_numpy(layer(x, padding_mask=mask)),
                               atol=1e-6)
    twin_losses = twin.router_losses(regrouped, padding_mask=twin_mask)
    for key, value in layer.router_losses(x, padding_mask=mask).items():
        np.testing.assert_allclose(ops.convert_to_numpy(twin_losses[key]), ops.convert_to_numpy(value),
                                   rtol=1e-6, err_msg=key)

    # Dynamic batch: the SavedModel, traced with an unknown batch, regroups each batch size it is served.
    inputs = keras.Input((5, 8))
    model = keras.Model(inputs, layer(inputs))
    with tempfile.TemporaryDirectory() as tmp:
        model.export(tmp, format="tf_saved_model", verbose=False)
        restored = tf.saved_model.load(tmp)
        for batch in (1, 2, 3):  # 5, 10 and 15 tokens: 2, 3 and 4 groups, with 3, 2 and 1 fill tokens
            served = restored.serve(tf.constant(x[:batch])).numpy()
            np.testing.assert_allclose(served, numpy_switch(layer, x[:batch])[0], atol=1e-5)


def test_switch_moe_losses_equal_their_formulas_and_reach_layer_and_model_losses():
    x = seeded_array(2, 10, 8, seed=4)
    layer = SwitchFeedForward(16, num_experts=4, capacity_factor=0.5, router_z_loss_weight=0.3,
                              load_balancing_loss_weight=0.7)
    layer(x)
    assert layer.losses == []  # inference adds no loss
    _, stats, _ = numpy_switch(layer, x)
    assert stats["dropped_fraction"] > 0  # f_e counts the argmax assignment, dropped tokens included
    got = layer.router_losses(x)
    assert set(got) == {"load_balancing", "z_loss", "expert_fraction", "dropped_fraction"}
    for key, value in stats.items():
        np.testing.assert_allclose(ops.convert_to_numpy(got[key]), value, rtol=1e-5, atol=1e-6, err_msg=key)

    layer(x, training=True)
    weighted = [0.7 * stats["load_balancing"], 0.3 * stats["z_loss"]]
    np.testing.assert_allclose([float(v) for v in layer.losses], weighted, rtol=1e-5)

    inputs = keras.Input((10, 8))
    model = keras.Model(inputs, layer(inputs))
    model(x, training=True)
    np.testing.assert_allclose(sorted(float(v) for v in model.losses), sorted(weighted), rtol=1e-5)
    # The training loss Keras reports is the task loss plus both weighted router losses.
    model.compile(optimizer=keras.optimizers.SGD(0.0), loss="mse")
    target = np.zeros_like(x)
    mse = np.mean(ops.convert_to_numpy(model(x)) ** 2)
    np.testing.assert_allclose(model.train_on_batch(x, target), mse + sum(weighted), rtol=1e-4)


def test_switch_moe_router_kernel_learns_through_the_gate():
    x = seeded_array(2, 10, 8, seed=5)
    layer = SwitchFeedForward(16, num_experts=4, capacity_factor=4.0)
    layer(x)
    proj = seeded_array(2, 10, 8, seed=6)
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(layer(tf.constant(x)) * proj)  # no router loss in inference: only the gate path
    grad = tape.gradient(loss, layer.router_kernel)
    assert grad is not None
    grad = grad.numpy()
    assert np.all(np.isfinite(grad)) and np.any(grad != 0)

    # d gate / d logits_j = p_e* (delta_{e* j} - p_j), times the upstream FFN_e*(x) . proj.
    w = _weights(layer)
    tokens = x.reshape(-1, 8).astype("float64")
    probs = _softmax(tokens @ w["router_kernel"])
    expert = probs.argmax(-1)
    ffn = np.stack([
        np.maximum(t @ w["intermediate_kernel"][e] + w["intermediate_bias"][e], 0) @ w["output_kernel"][e]
        + w["output_bias"][e] for t, e in zip(tokens, expert)
    ])
    upstream = np.sum(ffn * proj.reshape(-1, 8), -1)
    gate = probs[np.arange(len(tokens)), expert]
    dlogits = (upstream * gate)[:, None] * (np.eye(4)[expert] - probs)
    np.testing.assert_allclose(grad, tokens.T @ dlogits, rtol=1e-4, atol=1e-5)


def test_switch_moe_with_one_expert_is_a_positionwise_feed_forward():
    x = seeded_array(2, 7, 8, seed=7)
    layer = SwitchFeedForward(16, num_experts=1, capacity_factor=2.0)
    out = ops.convert_to_numpy(layer(x))
    np.testing.assert_array_equal(ops.convert_to_numpy(layer.route(x)["gate"]), 1.0)
    ffn = PositionwiseFeedForward(16)
    ffn.build(x.shape)
    ffn.intermediate_dense.kernel.assign(layer.intermediate_kernel[0])
    ffn.intermediate_dense.bias.assign(layer.intermediate_bias[0])
    ffn.output_dense.kernel.assign(layer.output_kernel[0])
    ffn.output_dense.bias.assign(layer.output_bias[0])
    np.testing.assert_allclose(out, ops.convert_to_numpy(ffn(x)), atol=1e-5)


def test_switch_moe_padding_is_not_routed_and_not_counted():
    x = seeded_array(2, 10, 8, seed=8)
    mask = np.ones((2, 10), bool)
    mask[0, 7:] = False
    mask[1, 5:] = False
    layer = SwitchFeedForward(16, num_experts=4, capacity_factor=1.0)
    out = ops.convert_to_numpy(layer(x, padding_mask=mask))
    expected, stats, _ = numpy_switch(layer, x, mask)
    assert np.all(out[~mask] == 0.0)
    np.testing.assert_allclose(out, expected, atol=1e-5)
    got = {k: ops.convert_to_numpy(v) for k, v in layer.router_losses(x, padding_mask=mask).items()}
    for key, value in stats.items():
        np.testing.assert_allclose(got[key], value, rtol=1e-5, atol=1e-6, err_msg=key)
    # Unmasked, the padding would change the statistics: the mask is what keeps them out.
    assert abs(float(layer.router_losses(x)["z_loss"]) - stats["z_loss"]) > 1e-3

    changed = x.copy()
    changed[~mask] = 50.0 * seeded_array(int((~mask).sum()), 8, seed=9)
    np.testing.assert_allclose(ops.convert_to_numpy(layer(changed, padding_mask=mask)), out, atol=1e-6)
    layer(changed, training=True, padding_mask=mask)
    np.testing.assert_allclose([float(v) for v in layer.losses],
                               [1e-2 * stats["load_balancing"], 1e-3 * stats["z_loss"]], rtol=1e-5)


@pytest.mark.parametrize("kwargs, message", [
    ({"capacity_factor": 0}, "capacity_factor must be > 0, got 0"),
    ({"capacity_factor": -1}, "capacity_factor must be > 0, got -1"),
    ({"num_experts": 0}, "num_experts must be a positive integer, got 0"),
    ({"intermediate_dim": 0}, "intermediate_dim must be a positive integer, got 0"),
    ({"activation": "softplus"}, "activation must be one of"),
    ({"router_jitter": 1.0}, r"router_jitter must be in \[0, 1\)"),
    ({"group_size": 0}, "group_size must be a positive integer, got 0"),
    ({"group_size": 2.5}, "group_size must be a positive integer, got 2.5"),
])
def test_switch_moe_refuses_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SwitchFeedForward(**{"intermediate_dim": 16, "num_experts": 4, **kwargs})


def test_switch_moe_refuses_inputs_that_are_not_rank_3():
    with pytest.raises(ValueError, match=r"expected inputs of rank 3 \(batch, n, d_model\), got shape \(4, 8\)"):
        SwitchFeedForward(16, num_experts=4)(np.zeros((4, 8), "float32"))


def test_switch_moe_mixed_bfloat16_keeps_the_router_in_float32():
    x = seeded_array(2, 10, 8, seed=10)
    layer = SwitchFeedForward(16, num_experts=4, capacity_factor=4.0, dtype="mixed_bfloat16")
    out = layer(x, training=True)
    assert keras.backend.standardize_dtype(out.dtype) == "bfloat16"
    assert layer.router_kernel.dtype == "float32" and layer.intermediate_kernel.dtype == "float32"
    assert all(keras.backend.standardize_dtype(v.dtype) == "float32" for v in layer.losses)
    routed = layer.route(x)
    assert keras.backend.standardize_dtype(routed["router_probs"].dtype) == "float32"
    # The router sees the bfloat16 tokens but computes in float32: probabilities match float64 to 1e-6,
    # which a bfloat16 router (8 mantissa bits) would miss by orders of magnitude.
    x_bf16 = ops.convert_to_numpy(ops.cast(ops.cast(x, "bfloat16"), "float32"))
    probs = _softmax(x_bf16.reshape(-1, 8).astype("float64") @ _weights(layer)["router_kernel"])
    np.testing.assert_allclose(ops.convert_to_numpy(routed["router_probs"]).reshape(-1, 4), probs, atol=1e-6)
    expected, stats, _ = numpy_switch(layer, x_bf16)
    # The losses come from the call itself, inside Keras' autocast scope (where a bfloat16 kernel would be read).
    np.testing.assert_allclose([float(v) for v in layer.losses],
                               [1e-2 * stats["load_balancing"], 1e-3 * stats["z_loss"]], rtol=1e-5)
    np.testing.assert_allclose(ops.convert_to_numpy(ops.cast(layer(x), "float32")), expected, atol=0.05, rtol=0.05)
