"""Mixture of experts (textbook section 7.4): the Switch Transformer feed-forward layer.

A drop-in replacement of ``layers.transformer.PositionwiseFeedForward`` that
holds ``num_experts`` feed-forward networks and sends each token to exactly one
of them (top-1 routing, Fedus, Zoph and Shazeer, 2021). The parameter count
grows with the number of experts; the compute per token stays that of one FFN.
"""

import math

import keras
from keras import ops

from layers.activations import get_activation
from layers.attention import _fresh
from layers.dropout import Dropout
from layers.transformer import _ACTIVATIONS, _GELUS
from layers.validation import check_positive_float, check_positive_int, check_rank

__all__ = ["SwitchFeedForward"]


@keras.saving.register_keras_serializable(package="tfsuite")
class SwitchFeedForward(keras.layers.Layer):
    """Section 7.4, Switch Transformer FFN: ``y = p_{e*}(x) * FFN_{e*}(x)``, ``e* = argmax_e p_e(x)``.

    Routing: router logits ``h = x W_r`` (no bias), ``p = softmax(h)``, both in
    float32 even under mixed precision, because the softmax and the argmax
    over experts are sensitive to bfloat16 rounding (Switch Transformer,
    section 2.4). Each token goes to its top expert ``e*``; multiplying the
    expert output by ``p_{e*}`` is what lets the router kernel learn through
    the main loss. ``FFN_e(x) = act(x W_1[e] + b_1[e]) W_2[e] + b_2[e]``.

    Groups: routing is done per group of tokens, as in Mesh TensorFlow and
    T5X. With ``group_size=None`` each sequence (batch row of ``n`` tokens)
    is one group; with an int, the ``batch * n`` tokens of the call,
    flattened in ``(batch, n)`` order, are cut into consecutive groups of
    ``group_size`` tokens, the last one filled up internally with non-routed
    padding tokens when ``batch * n`` is not a multiple of ``group_size``.
    Groups never interact: a token's expert buffer slot, and so whether it is
    dropped, depends only on the tokens of its own group.

    Capacity: in every group, every expert takes at most
    ``C = ceil(capacity_factor * group_tokens / num_experts)`` tokens, where
    ``group_tokens`` is ``n`` (``group_size=None``) or ``group_size``, padding
    included (as in T5X, so that ``C`` depends on shapes only, and is a
    Python int whenever ``n`` is static, whatever the batch size). Tokens
    are queued per expert in order within their group, found with a
    cumulative sum of the one-hot assignment; a token past its expert's
    capacity is dropped: its output is zero, so the surrounding residual
    connection passes it through unchanged.

    Auxiliary losses, over the non-padding tokens:

    - load balancing, per group as in T5X (which averages the per-group loss
      over the groups rather than pooling ``f_e`` and ``P_e`` over the call):
      ``L_b = sum_g (r_g / R) * num_experts * sum_e f_ge * P_ge``, with
      ``f_ge`` the fraction of group ``g``'s real tokens whose argmax is ``e``
      (before capacity dropping), ``P_ge`` their mean router probability of
      ``e``, ``r_g`` the group's real-token count and ``R = sum_g r_g``.
      Without padding all ``r_g`` are equal and this is T5X's plain mean over
      groups; weighting by ``r_g`` keeps every real token's weight equal when
      padding (or the filled-up last group) leaves groups unequal, and
      groups without real tokens out. Equals 1 for a uniform router and
      grows as routing collapses onto few experts (within the groups);
    - router z-loss ``L_z = mean_tokens (logsumexp_e h_e)^2`` (ST-MoE, Zoph et
      al. 2022), which keeps the logits small and the float32 softmax stable.

    ``load_balancing_loss_weight * L_b`` and ``router_z_loss_weight * L_z`` are
    added with ``add_loss`` only when ``training`` is true, as keras-hub's
    Mixtral and Qwen-MoE decoders do (T5X computes them on every step but
    only its training loss reads them), so inference and export carry no
    loss. ``router_losses`` and ``route`` recompute the routing of given
    inputs in inference mode, through the same code, for inspection.

    Dispatch is dense, as in Mesh TensorFlow and T5X: a 0/1 dispatch tensor
    ``(groups, group_tokens, experts, C)`` gathers the tokens into per-expert
    buffers ``(groups, experts, C, d_model)`` with one einsum
    (``"gtec,gtd->gecd"``), the stacked expert kernels act on all buffers of
    all groups in one einsum each, and the combine tensor (dispatch times
    gate) scatters the results back (``"gtec,gecd->gtd"``); no Python loop
    over experts or groups. The dispatch and combine tensors take
    ``O(tokens * group_tokens * capacity_factor)`` memory, and their einsums
    cost ``~capacity_factor * group_tokens * d_model`` multiply-adds per
    token each: linear in the group size, not in the tokens of the call.
    Against the experts' ``~2 * capacity_factor * d_model * intermediate_dim``
    per token that is a ratio of ``group_tokens / intermediate_dim``, so the
    compute per token stays close to one FFN's for groups small against
    ``intermediate_dim``.

    Args:
        intermediate_dim: int, hidden width of each expert FFN (``d_ff``).
        num_experts: int >= 1, number of experts.
        capacity_factor: float > 0, slack of each expert's buffer over an even
            split of a group's tokens. Default 1.25 (the paper's training value).
        group_size: None or int >= 1, routing group. ``None`` (default): each
            sequence is a group. An int: consecutive groups of ``group_size``
            of the flattened ``batch * n`` tokens.
        activation: str, as ``PositionwiseFeedForward``: ``"relu"`` (default),
            ``"gelu"``, ``"gelu_exact"``, ``"sigmoid"``, ``"tanh"``,
            ``"leaky_relu"``, ``"swish"``.
        dropout: float in [0, 1), dropout after the activation inside each
            expert. Default 0.
        router_z_loss_weight: float >= 0, weight of ``L_z``. Default 1e-3.
        load_balancing_loss_weight: float >= 0, weight of ``L_b`` (the paper's
            ``alpha``). Default 1e-2.
        router_jitter: float in [0, 1), ``eps`` of the multiplicative noise
            ``U(1 - eps, 1 + eps)`` on the router input while training (the
            expert input is left clean). Default 0 (off).
        kernel_initializer: initializer for ``W_r, W_1, W_2``. Default
            ``"glorot_uniform"``.
        bias_initializer: initializer for ``b_1, b_2``. Default ``"zeros"``.

    Call arguments:
        inputs: ``(batch, n, d_model)`` tensor.
        training: bool; turns on dropout, router jitter and the losses.
        padding_mask: optional bool ``(batch, n)``, True means keep. Padding
            tokens are not routed (zero output, no capacity used) and count
            in neither loss.

    Input shape: ``(batch, n, d_model)``. Output shape: same.

    Example:
    >>> layer = SwitchFeedForward(intermediate_dim=32, num_experts=4)
    >>> layer(np.ones((2, 5, 16), "float32"), training=True).shape
    (2, 5, 16)
    >>> len(layer.losses)  # load balancing and z-loss, already weighted
    2
    """

    def __init__(
        self,
        intermediate_dim,
        num_experts,
        capacity_factor=1.25,
        group_size=None,
        activation="relu",
        dropout=0.0,
        router_z_loss_weight=1e-3,
        load_balancing_loss_weight=1e-2,
        router_jitter=0.0,
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        **kwargs,
    ):
        super().__init__(**kwargs)
        name = "SwitchFeedForward"
        self.intermediate_dim = check_positive_int(f"{name} intermediate_dim", intermediate_dim)
        self.num_experts = check_positive_int(f"{name} num_experts", num_experts)
        self.capacity_factor = check_positive_float(f"{name} capacity_factor", capacity_factor)
        self.group_size = None if group_size is None else check_positive_int(f"{name} group_size", group_size)
        if activation not in _ACTIVATIONS:
            raise ValueError(f"{name} activation must be one of {sorted(_ACTIVATIONS)}, got {activation!r}")
        self.activation = activation
        self.dropout = check_positive_float(f"{name} dropout", dropout, allow_zero=True)
        if self.dropout >= 1:
            raise ValueError(f"{name} dropout must be in [0, 1), got {dropout}")
        self.router_z_loss_weight = check_positive_float(
            f"{name} router_z_loss_weight", router_z_loss_weight, allow_zero=True
        )
        self.load_balancing_loss_weight = check_positive_float(
            f"{name} load_balancing_loss_weight", load_balancing_loss_weight, allow_zero=True
        )
        self.router_jitter = check_positive_float(f"{name} router_jitter", router_jitter, allow_zero=True)
        if self.router_jitter >= 1:
            raise ValueError(f"{name} router_jitter must be in [0, 1), got {router_jitter}")
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self._activation_layer = (
            None if activation in _GELUS else get_activation(activation, dtype=self.dtype_policy)
        )
        self.dropout_layer = Dropout(self.dropout) if self.dropout else None
        self.seed_generator = keras.random.SeedGenerator() if self.router_jitter else None

    def build(self, input_shape):
        check_rank("SwitchFeedForward", input_shape, 3, "(batch, n, d_model)")
        d_model = input_shape[-1]
        if d_model is None:
            raise ValueError("SwitchFeedForward needs a known d_model (last axis of the inputs)")
        experts, hidden = self.num_experts, self.intermediate_dim
        # The router stays float32 under mixed precision: no autocast to bfloat16 on read.
        self.router_kernel = self.add_weight(
            name="router_kernel", shape=(d_model, experts),
            initializer=_fresh(self.kernel_initializer), dtype="float32", autocast=False,
        )
        self.intermediate_kernel = self.add_weight(
            name="intermediate_kernel", shape=(experts, d_model, hidden),
            initializer=_fresh(self.kernel_initializer),
        )
        self.intermediate_bias = self.add_weight(
            name="intermediate_bias", shape=(experts, hidden), initializer=_fresh(self.bias_initializer)
        )
        self.output_kernel = self.add_weight(
            name="output_kernel", shape=(experts, hidden, d_model),
            initializer=_fresh(self.kernel_initializer),
        )
        self.output_bias = self.add_weight(
            name="output_bias", shape=(experts, d_model), initializer=_fresh(self.bias_initializer)
        )

    def call(self, inputs, training=None, padding_mask=None):
        check_rank("SwitchFeedForward", inputs.shape, 3, "(batch, n, d_model)")
        tokens, ungroup, routing = self._route(inputs, padding_mask, training=training)
        if training:
            self.add_loss(self.load_balancing_loss_weight * routing["load_balancing"])
            self.add_loss(self.router_z_loss_weight * routing["z_loss"])
        dispatch = ops.cast(routing["dispatch"], self.compute_dtype)
        combine = dispatch * ops.cast(routing["gate"], self.compute_dtype)[:, :, None, None]
        buffers = ops.einsum("gtec,gtd->gecd", dispatch, tokens)
        expert_outputs = self._experts(buffers, training)
        return ungroup(ops.einsum("gtec,gecd->gtd", combine, expert_outputs))

    def _experts(self, buffers, training):
        """All expert FFNs on their ``(groups, experts, C, d_model)`` buffers, one einsum per matrix."""
        x = ops.einsum("gecd,edf->gecf", buffers, self.intermediate_kernel)
        x = x + self.intermediate_bias[None, :, None, :]
        if self._activation_layer is None:
            x = ops.gelu(x, approximate=_GELUS[self.activation])
        else:
            x = self._activation_layer(x)
        if self.dropout_layer is not None:
            x = self.dropout_layer(x, training=training)
        return ops.einsum("gecf,efd->gecd", x, self.output_kernel) + self.output_bias[None, :, None, :]

    def _capacity(self, group_tokens):
        """``ceil(capacity_factor * group_tokens / num_experts)``, a Python int when the shape is static.

        The dynamic branch (``group_size=None`` with an unknown sequence
        length) repeats the same float64 arithmetic, so a model traced with
        an unknown length computes the same capacity.
        """
        if isinstance(group_tokens, int):
            return max(1, math.ceil(self.capacity_factor * group_tokens / self.num_experts))
        exact = ops.cast(group_tokens, "float64") * self.capacity_factor / self.num_experts
        return ops.maximum(ops.cast(ops.ceil(exact), "int32"), 1)

    def _group(self, inputs, padding_mask):
        """Cut ``(batch, n, d)`` inputs into ``(groups, group_tokens, d)``, with keep mask and the way back.

        Returns the grouped tokens, the float32 ``(groups, group_tokens)``
        keep mask (0 for padding and for the internal fill of the last
        group), ``group_tokens`` and ``ungroup``, which maps a grouped
        ``(groups, group_tokens, ...)`` tensor back to ``(batch, n, ...)``.
        """
        batch, n, d_model = ops.shape(inputs)
        keep = (
            ops.ones((batch, n), "float32") if padding_mask is None
            else ops.cast(ops.reshape(padding_mask, (batch, n)), "float32")
        )
        if self.group_size is None:
            return inputs, keep, n, lambda x: x
        group = self.group_size
        num_tokens = batch * n  # a tensor when the batch (or n) is dynamic
        fill = (-num_tokens) % group
        tokens = ops.reshape(inputs, (num_tokens, d_model))
        keep = ops.reshape(keep, (num_tokens,))
        if not (isinstance(fill, int) and fill == 0):
            tokens = ops.concatenate([tokens, ops.zeros((fill, d_model), tokens.dtype)], axis=0)
            keep = ops.concatenate([keep, ops.zeros((fill,), "float32")], axis=0)

        def ungroup(x):
            rest = tuple(x.shape[2:])
            return ops.reshape(ops.reshape(x, (-1, *rest))[:num_tokens], (batch, n, *rest))

        return (ops.reshape(tokens, (-1, group, d_model)), ops.reshape(keep, (-1, group)), group, ungroup)

    def _route(self, inputs, padding_mask, training=False):
        """Router, capacity and losses for ``inputs (batch, n, d_model)``, per group, all in float32.

        Returns the grouped tokens ``(groups, group_tokens, d_model)``, the
        ``ungroup`` function of ``_group`` and a dict of routing tensors:
        grouped ``dispatch (groups, group_tokens, experts, C)``, ``gate``,
        ``probs``, ``expert_index``, ``dispatched``, and the call-level
        statistics.
        """
        tokens, keep, group_tokens, ungroup = self._group(inputs, padding_mask)
        router_inputs = ops.cast(tokens, "float32")
        if training and self.router_jitter:
            router_inputs = router_inputs * keras.random.uniform(
                ops.shape(router_inputs), 1.0 - self.router_jitter, 1.0 + self.router_jitter,
                seed=self.seed_generator,
            )
        logits = ops.einsum("gtd,de->gte", router_inputs, self.router_kernel)
        z = ops.logsumexp(logits, axis=-1)
        probs = ops.exp(logits - z[..., None])  # softmax, sharing logsumexp with the z-loss
        expert_index = ops.argmax(probs, axis=-1)
        gate = ops.max(probs, axis=-1)
        # (G, T, E) one-hot assignment; padding rows are all zero so they use no capacity.
        assigned = ops.one_hot(expert_index, self.num_experts, dtype="float32") * keep[..., None]
        capacity = self._capacity(group_tokens)
        # Queue position of each token at its expert, in token order within its group.
        position = ops.cast(ops.cumsum(assigned, axis=1) * assigned, "int32") - 1
        within = assigned * ops.cast(ops.less(position, capacity), "float32")
        slot = ops.cast(ops.equal(position[..., None], ops.arange(capacity)), "float32")
        dispatch = within[..., None] * slot

        # Per-group f_ge and P_ge over the group's real tokens; groups weighted by their real tokens.
        group_count = ops.sum(keep, axis=1)  # (G,)
        count = ops.maximum(ops.sum(group_count), 1.0)
        group_fraction = ops.sum(assigned, axis=1) / ops.maximum(group_count, 1.0)[:, None]
        group_probs = ops.sum(probs * keep[..., None], axis=1) / ops.maximum(group_count, 1.0)[:, None]
        group_balance = self.num_experts * ops.sum(group_fraction * group_probs, axis=-1)
        assigned_total = ops.sum(assigned, axis=(0, 1))
        return tokens, ungroup, {
            "dispatch": dispatch,
            "gate": gate,
            "probs": probs,
            "expert_index": ops.cast(expert_index, "int32"),
            "dispatched": ops.sum(within, axis=-1),
            "load_balancing": ops.sum(group_count * group_balance) / count,
            "z_loss": ops.sum(keep * z * z) / count,
            "expert_fraction": assigned_total / count,
            "dropped_fraction": (ops.sum(assigned_total) - ops.sum(within)) / count,
        }

    def _route_inputs(self, inputs, padding_mask):
        # As in __call__, the router sees the inputs in the compute dtype (bfloat16 under mixed precision).
        inputs = ops.cast(ops.convert_to_tensor(inputs), self.compute_dtype)
        check_rank("SwitchFeedForward", inputs.shape, 3, "(batch, n, d_model)")
        if not self.built:
            self.build(inputs.shape)
        _, ungroup, routing = self._route(inputs, padding_mask)
        return ungroup, routing

    def router_losses(self, inputs, padding_mask=None):
        """Unweighted router statistics of ``inputs`` (inference mode, no jitter).

        Returns a dict of float32 tensors: ``"load_balancing"`` (``L_b``, per
        group as in the class docstring), ``"z_loss"`` (``L_z``),
        ``"expert_fraction"`` (``f_e`` over all non-padding tokens of the
        call, shape ``(num_experts,)``) and ``"dropped_fraction"`` (share of
        non-padding tokens past their expert's capacity in their group).
        """
        _, routing = self._route_inputs(inputs, padding_mask)
        return {key: routing[key] for key in ("load_balancing", "z_loss", "expert_fraction", "dropped_fraction")}

    def route(self, inputs, padding_mask=None):
        """Per-token routing of ``inputs`` (inference mode, no jitter).

        Returns a dict: ``"router_probs"`` float32 ``(batch, n, experts)``,
        ``"expert_index"`` int32 ``(batch, n)`` (the argmax, also for tokens
        later dropped), ``"gate"`` float32 ``(batch, n)`` (``p_{e*}``) and
        ``"dispatched"`` bool ``(batch, n)`` (routed within its group's
        capacity).
        """
        ungroup, routing = self._route_inputs(inputs, padding_mask)
        return {
            "router_probs": ungroup(routing["probs"]),
            "expert_index": ungroup(routing["expert_index"]),
            "gate": ungroup(routing["gate"]),
            "dispatched": ungroup(ops.greater(routing["dispatched"], 0.0)),
        }

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {
            **super().get_config(),
            "intermediate_dim": self.intermediate_dim,
            "num_experts": self.num_experts,
            "capacity_factor": self.capacity_factor,
            "group_size": self.group_size,
            "activation": self.activation,
            "dropout": self.dropout,
            "router_z_loss_weight": self.router_z_loss_weight,
            "load_balancing_loss_weight": self.load_balancing_loss_weight,
            "router_jitter": self.router_jitter,
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
            "bias_initializer": keras.initializers.serialize(self.bias_initializer),
        }
