"""Wav2Vec 2.0 (textbook section 9.2; Baevski et al., 2020): raw waveform -> contextual speech representations.

The model reads 16 kHz audio with no front end:

1. **Feature encoder** ``f: X -> Z`` (:class:`Wav2Vec2FeatureEncoder`): seven
   ``Conv1D`` blocks (kernels ``(10, 3, 3, 3, 3, 2, 2)``, strides
   ``(5, 2, 2, 2, 2, 2, 2)``), GELU, group norm after the first: one frame
   ``z_t`` per 320 samples (20 ms), each seeing 400 samples (25 ms).
2. **Context network** ``g: Z -> C`` (:class:`Wav2Vec2Backbone`): layer norm and
   a ``Dense`` projection of ``z_t``, a time span mask that replaces masked
   steps by one learned vector, a convolutional relative position embedding
   (:class:`Wav2Vec2PositionalConvEmbedding`) added to the sequence, then a
   stack of ``layers.transformer.TransformerEncoderLayer``.
3. **Quantization module** (:class:`GumbelVectorQuantizer`): ``G`` codebooks of
   ``V`` entries; the targets ``q_t`` of pre-training are the concatenated
   codewords picked from the *unmasked* ``z_t``, chosen with a Gumbel softmax.

Pre-training (``speech/wav2vec2_pretraining.py``) solves a contrastive task: from
the context vector ``c_t`` at a masked step, tell the true ``q_t`` from ``K``
distractors quantized at other masked steps of the same utterance,
``L_m = -log exp(sim(c_t, q_t) / kappa) / sum_{q~ in Q_t} exp(sim(c_t, q~) / kappa)``,
plus ``alpha`` times the diversity loss ``L_d = (GV - sum_g exp(-sum_v p_gv log p_gv)) / GV``
that keeps the codebook entries in use. Fine-tuning (``speech/ctc.py``) adds a
linear head over characters plus a CTC blank (:class:`Wav2Vec2CTC`).

Layer names and weight shapes follow Hugging Face ``Wav2Vec2Model`` at small,
configurable sizes. Differences: no LayerDrop; the Transformer layers are
tfsuite's (post-LN as in the BASE model, ``normalize_first=True`` for the
pre-LN "stable layer norm" arrangement of LARGE).

Example:
>>> backbone = Wav2Vec2Backbone(hidden_dim=32, num_layers=2, num_heads=2, intermediate_dim=64,
...                             conv_filters=32, pos_conv_kernel=16, pos_conv_groups=4)
>>> out = backbone(np.random.randn(2, 16000).astype("float32"))
>>> out["context"].shape, out["features"].shape
((2, 49, 32), (2, 49, 32))
"""

import math

import keras
import numpy as np
from keras import ops

from layers.convolution import Conv1D
from layers.dropout import Dropout
from layers.normalization import GroupNormalization, LayerNormalization
from layers.perceptron import Dense
from layers.transformer import TransformerEncoderLayer
from layers.validation import check_choice, check_positive_float, check_positive_int, check_rank

__all__ = [
    "BLANK_INDEX",
    "CONV_KERNELS",
    "CONV_STRIDES",
    "Wav2Vec2FeatureEncoder",
    "Wav2Vec2PositionalConvEmbedding",
    "GumbelVectorQuantizer",
    "Wav2Vec2Backbone",
    "Wav2Vec2PreTrainer",
    "Wav2Vec2CTC",
    "compute_span_mask",
    "frame_padding_mask",
]

CONV_KERNELS = (10, 3, 3, 3, 3, 2, 2)
CONV_STRIDES = (5, 2, 2, 2, 2, 2, 2)
BLANK_INDEX = 0  # the CTC blank's class in Wav2Vec2CTC's logits; characters are classes 1..vocab_size
_FEATURE_NORMS = ("group", "layer")


def _int_tuple(name, value, length=None):
    items = (value,) * (length or 1) if isinstance(value, (int, np.integer)) else tuple(value)
    if length is not None and len(items) != length:
        raise ValueError(f"{name} must be an int or a tuple of {length} ints, got {value!r}")
    return tuple(check_positive_int(name, v) for v in items)


def _gelu(x):
    return ops.gelu(x, approximate=False)  # the erf GELU, as the paper's fairseq code and HF use


# --------------------------------------------------------------------------- feature encoder


@keras.saving.register_keras_serializable(package="tfsuite")
class Wav2Vec2FeatureEncoder(keras.layers.Layer):
    """Section 9.2, Wav2Vec 2.0 feature encoder ``f: X -> Z``: ``z = GELU(Norm(Conv1D(x)))`` stacked.

    Block ``i`` is ``Conv1D(filters_i, kernel_i, stride_i, valid)`` then GELU;
    with ``norm="group"`` (BASE) the first block has a group norm with one
    group per channel (each channel normalized over time) before its GELU;
    with ``norm="layer"`` (LARGE) every block has a layer norm over channels.
    The frame count after the stack is ``L_{i+1} = floor((L_i - k_i) / s_i) + 1``
    (:meth:`output_length`): 320x downsampling with the default kernels and strides,
    each frame seeing ``receptive_field = 400`` samples.

    Args:
        filters: int or tuple of ints (one per block), channels. Default 512.
        kernel_sizes: tuple of ints. Default ``(10, 3, 3, 3, 3, 2, 2)``.
        strides: tuple of ints, as many as ``kernel_sizes``. Default ``(5, 2, 2, 2, 2, 2, 2)``.
        norm: ``"group"`` or ``"layer"``. Default ``"group"``.
        use_bias: bool, conv biases (the paper has none). Default False.
        epsilon: float, the norms' epsilon. Default ``1e-5``.

    Input shape: ``(batch, samples)`` float waveform (16 kHz, normalized per utterance).
    Output shape: ``(batch, output_length(samples), filters[-1])``.

    Example:
    >>> enc = Wav2Vec2FeatureEncoder(filters=32)
    >>> enc(np.zeros((2, 16000), "float32")).shape, enc.output_length(16000), enc.receptive_field
    ((2, 49, 32), 49, 400)
    """

    def __init__(self, filters=512, kernel_sizes=CONV_KERNELS, strides=CONV_STRIDES, norm="group", use_bias=False,
                 epsilon=1e-5, **kwargs):
        super().__init__(**kwargs)
        self.kernel_sizes = _int_tuple("Wav2Vec2FeatureEncoder kernel_sizes", kernel_sizes)
        n = len(self.kernel_sizes)
        self.strides = _int_tuple("Wav2Vec2FeatureEncoder strides", strides, n)
        self.filters = _int_tuple("Wav2Vec2FeatureEncoder filters", filters, n)
        self.norm = check_choice("Wav2Vec2FeatureEncoder norm", norm, _FEATURE_NORMS)
        self.use_bias = bool(use_bias)
        self.epsilon = check_positive_float("Wav2Vec2FeatureEncoder epsilon", epsilon)

    def output_length(self, input_length):
        """Frames for ``input_length`` samples (int, None, or an int tensor); 0 when too short."""
        if input_length is None:
            return None
        if isinstance(input_length, (int, np.integer)):
            length = int(input_length)
            for k, s in zip(self.kernel_sizes, self.strides):
                length = max((length - k) // s + 1, 0)
            return length
        length = input_length
        for k, s in zip(self.kernel_sizes, self.strides):
            length = ops.maximum(ops.floor_divide(length - k, s) + 1, 0)
        return length

    @property
    def receptive_field(self):
        """Samples one output frame sees, the shortest waveform the encoder takes (400 by default)."""
        length = 1
        for k, s in zip(reversed(self.kernel_sizes), reversed(self.strides)):
            length = (length - 1) * s + k
        return length

    def _check_input(self, shape):
        check_rank("Wav2Vec2FeatureEncoder", shape, 2, "(batch, samples)")
        samples = shape[1]
        if samples is not None and samples < self.receptive_field:
            raise ValueError(
                f"Wav2Vec2FeatureEncoder needs waveforms of at least {self.receptive_field} samples (its receptive "
                f"field, {self.receptive_field / 16000 * 1000:g} ms at 16 kHz), got shape {tuple(shape)}; pad the "
                "audio with zeros (and a padding_mask) or use smaller conv kernels"
            )

    def build(self, input_shape):
        self._check_input(input_shape)
        self.conv_layers, self.norm_layers = [], []
        channels = 1
        for i, (f, k, s) in enumerate(zip(self.filters, self.kernel_sizes, self.strides)):
            # HF initializes the conv kernels with He (kaiming) normal.
            conv = Conv1D(f, k, strides=s, use_bias=self.use_bias, kernel_initializer="he_normal",
                          dtype=self.dtype_policy, name=f"conv_{i}")
            conv.build((None, None, channels))
            self.conv_layers.append(conv)
            norm = None
            if self.norm == "layer":
                norm = LayerNormalization(epsilon=self.epsilon, dtype=self.dtype_policy, name=f"layer_norm_{i}")
            elif i == 0:
                norm = GroupNormalization(groups=f, epsilon=self.epsilon, dtype=self.dtype_policy, name="group_norm_0")
            if norm is not None:
                norm.build((None, None, f))
            self.norm_layers.append(norm)
            channels = f

    def call(self, inputs, padding_mask=None):
        """``padding_mask`` (bool ``(batch, samples)``, a prefix of real samples per row) restricts the
        first GroupNorm's statistics to the real frames, so a recording's features do not depend on the
        padding of its batch (frames whose windows reach the padding are padding themselves)."""
        self._check_input(inputs.shape)
        x = ops.expand_dims(inputs, -1)
        lengths = None if padding_mask is None else ops.sum(ops.cast(padding_mask, "int32"), axis=-1)
        for conv, norm, k, s in zip(self.conv_layers, self.norm_layers, self.kernel_sizes, self.strides):
            x = conv(x)
            if lengths is not None:
                lengths = ops.maximum(ops.floor_divide(lengths - k, s) + 1, 0)
            if isinstance(norm, GroupNormalization) and lengths is not None:
                x = norm(x, mask=ops.arange(ops.shape(x)[1])[None, :] < lengths[:, None])
            elif norm is not None:
                x = norm(x)
            x = _gelu(x)
        return x

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.output_length(input_shape[1]), self.filters[-1])

    def get_config(self):
        return {**super().get_config(), "filters": self.filters, "kernel_sizes": self.kernel_sizes,
                "strides": self.strides, "norm": self.norm, "use_bias": self.use_bias, "epsilon": self.epsilon}


def frame_padding_mask(feature_encoder, padding_mask, num_frames):
    """Frame-level padding mask (True keeps) from a sample-level one: frame ``t`` is real when ``t < output_length(n)``.

    Args:
        feature_encoder: a :class:`Wav2Vec2FeatureEncoder` (for its length formula).
        padding_mask: bool ``(batch, samples)``, True for real samples (a prefix of each row).
        num_frames: int or scalar tensor, the frame count of the padded batch.

    Returns: bool ``(batch, num_frames)``.
    """
    lengths = ops.sum(ops.cast(padding_mask, "int32"), axis=-1)
    frames = feature_encoder.output_length(lengths)
    return ops.arange(num_frames)[None, :] < frames[:, None]


# --------------------------------------------------------------------------- position embedding


@keras.saving.register_keras_serializable(package="tfsuite")
class Wav2Vec2PositionalConvEmbedding(keras.layers.Layer):
    """Section 9.2, convolutional relative position embedding: ``p = GELU(GroupedConv1D_K(x))``, used as ``x + p``.

    Instead of absolute position vectors, a grouped convolution of width ``K``
    over the projected features gives each step a summary of its neighbourhood
    (relative position). ``K`` even, the input is padded by ``K/2`` on the left
    and ``K/2 - 1`` on the right (Hugging Face's pad-both-and-drop-the-last), so
    the output keeps the length. Returns the embedding only; the backbone adds it.

    Weight norm (``weight_norm=True``, as the paper's code): the kernel is
    ``W = g * v / ||v||`` with one gain ``g_k`` per kernel tap ``k`` and the norm
    taken over that tap's ``(in, out)`` slice (PyTorch ``weight_norm(dim=2)``);
    ``g`` starts at ``||v||`` so ``W = v`` at initialization. ``weight_norm=False``
    learns ``W`` directly.

    Args:
        kernel_size: int ``K``. Default 128.
        groups: int ``G``, must divide the channels. Default 16.
        weight_norm: bool. Default True.
        kernel_initializer: initializer for ``v`` (or ``W``), or None for
            ``Normal(0, 2 / sqrt(K * channels))`` as the paper's code. Default None.

    Input shape: ``(batch, T, channels)``. Output shape: same.

    Example:
    >>> Wav2Vec2PositionalConvEmbedding(kernel_size=16, groups=4)(np.zeros((2, 49, 32), "float32")).shape
    (2, 49, 32)
    """

    def __init__(self, kernel_size=128, groups=16, weight_norm=True, kernel_initializer=None, **kwargs):
        super().__init__(**kwargs)
        self.kernel_size = check_positive_int("Wav2Vec2PositionalConvEmbedding kernel_size", kernel_size)
        self.groups = check_positive_int("Wav2Vec2PositionalConvEmbedding groups", groups)
        self.weight_norm = bool(weight_norm)
        self.kernel_initializer = None if kernel_initializer is None else keras.initializers.get(kernel_initializer)

    def build(self, input_shape):
        check_rank("Wav2Vec2PositionalConvEmbedding", input_shape, 3, "(batch, time, channels)")
        channels = input_shape[-1]
        if channels is None or channels % self.groups:
            raise ValueError(
                f"Wav2Vec2PositionalConvEmbedding groups={self.groups} must divide the channels, got shape "
                f"{tuple(input_shape)}; pick a divisor of the hidden size"
            )
        shape = (self.kernel_size, channels // self.groups, channels)
        init = self.kernel_initializer or keras.initializers.RandomNormal(
            stddev=2.0 / math.sqrt(self.kernel_size * channels))
        self.kernel = self.add_weight(name="kernel_v" if self.weight_norm else "kernel", shape=shape, initializer=init)
        self.kernel_g = None
        if self.weight_norm:
            self.kernel_g = self.add_weight(name="kernel_g", shape=(self.kernel_size, 1, 1), initializer="ones")
            self.kernel_g.assign(ops.sqrt(ops.sum(ops.square(self.kernel), axis=(1, 2), keepdims=True)))
        self.bias = self.add_weight(name="bias", shape=(channels,), initializer="zeros")

    def effective_kernel(self):
        """``W = g * v / ||v||`` (or ``W``): ``(K, channels / G, channels)``."""
        if not self.weight_norm:
            return self.kernel
        norm = ops.sqrt(ops.sum(ops.square(self.kernel), axis=(1, 2), keepdims=True))
        return self.kernel_g * self.kernel / norm

    def call(self, inputs):
        check_rank("Wav2Vec2PositionalConvEmbedding", inputs.shape, 3, "(batch, time, channels)")
        left = self.kernel_size // 2
        x = ops.pad(inputs, [(0, 0), (left, self.kernel_size - 1 - left), (0, 0)])
        # A kernel of in-channels C/G on a C-channel input is a grouped convolution with G groups.
        x = ops.conv(x, ops.cast(self.effective_kernel(), x.dtype), padding="valid")
        return _gelu(x + ops.cast(self.bias, x.dtype))

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        init = None if self.kernel_initializer is None else keras.initializers.serialize(self.kernel_initializer)
        return {**super().get_config(), "kernel_size": self.kernel_size, "groups": self.groups,
                "weight_norm": self.weight_norm, "kernel_initializer": init}


# --------------------------------------------------------------------------- span masking


def compute_span_mask(batch_size, num_frames, mask_prob, mask_length, *, min_masks=2, frame_lengths=None, seed=None):
    """Section 9.2 time masking: spans of ``mask_length`` frames from random starts, drawn without replacement.

    An utterance of ``L`` frames gets ``n = int(mask_prob * L / mask_length + u)`` span starts
    (``u ~ U[0, 1)``, so ``n`` is ``mask_prob * L / mask_length`` in expectation), at least
    ``min_masks`` and at most what fits; spans may overlap. ``mask_prob`` is thus the share
    of frames masked if no spans overlapped: the paper's ``p = 0.065`` starting proportion
    with ``M = 10`` is ``mask_prob=0.65`` (about 49 % of frames masked, overlap counted).
    The same sampler as Hugging Face's ``_compute_mask_indices``, in NumPy (run it on the
    host, per batch).

    Args:
        batch_size: int.
        num_frames: int, frames of the padded batch.
        mask_prob: float in [0, 1].
        mask_length: int ``M``.
        min_masks: int, fewest spans per utterance. Default 2.
        frame_lengths: int array ``(batch,)`` or None (all ``num_frames``): spans stay inside each
            utterance's real frames.
        seed: int, ``np.random.Generator`` or None.

    Returns: bool ``(batch, num_frames)``, True where the frame is masked (replaced by the mask embedding).

    Example:
    >>> compute_span_mask(2, 50, 0.65, 10, seed=0).shape
    (2, 50)
    """
    if not 0 <= mask_prob <= 1:
        raise ValueError(f"compute_span_mask mask_prob must be in [0, 1], got {mask_prob}")
    mask_length = check_positive_int("compute_span_mask mask_length", mask_length)
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    lengths = np.full(batch_size, num_frames) if frame_lengths is None else np.asarray(frame_lengths)
    mask = np.zeros((batch_size, num_frames), bool)
    for b, length in enumerate(lengths):
        length = int(length)
        starts_available = length - mask_length + 1
        if starts_available < 1:
            continue
        num = int(mask_prob * length / mask_length + rng.random())
        num = min(max(num, min_masks), length // mask_length, starts_available)
        for start in rng.choice(starts_available, num, replace=False):
            mask[b, start:start + mask_length] = True
    return mask


# --------------------------------------------------------------------------- quantizer


@keras.saving.register_keras_serializable(package="tfsuite")
class GumbelVectorQuantizer(keras.layers.Layer):
    """Section 9.2, product quantization with a Gumbel softmax: ``q = W_q [e_1,i_1; ...; e_G,i_G] + b_q``.

    ``G`` codebooks (groups) of ``V`` entries ``e_gv`` of size ``codevector_dim / G``.
    A ``Dense`` maps ``z`` to logits ``l in R^{G x V}``; each group picks one entry
    with the Gumbel softmax
    ``p_gv = exp((l_gv + n_v) / tau) / sum_k exp((l_gk + n_k) / tau)``, ``n = -log(-log(u))``,
    ``u ~ U(0, 1)``: in training the forward pass uses the hard one-hot
    ``argmax_v p_gv`` and the backward pass the gradient of the soft ``p``
    (straight-through); at inference the entry is ``argmax_v l_gv``, no noise.
    The picked entries are concatenated and projected to ``output_dim``.

    The temperature ``tau`` is a non-trainable weight (``temperature``) that the
    training procedure anneals (``set_temperature``; paper: 2 -> 0.5, factor 0.999995 per update).

    Args:
        num_groups: int ``G``. Default 2.
        num_vars: int ``V``, entries per codebook. Default 320.
        codevector_dim: int, size of the concatenated codewords, a multiple of ``G``. Default 256.
        output_dim: int, size of ``q`` after the projection. Default 256.
        temperature: float, initial ``tau``. Default 2.0.
        logits_initializer: initializer of the logits ``Dense`` kernel, or None for ``RandomNormal(0, 1)``
            (the paper's code). Default None.
        seed: int or None, the Gumbel noise's seed. Default None.

    Call arguments:
        inputs: ``(batch, T, channels)``, the unmasked features ``z``.
        step_mask: bool ``(batch, T)`` or None: the steps whose probabilities enter ``perplexity``
            (the masked steps in pre-training). None: all.
        training: bool, Gumbel sampling when True.

    Returns: dict with
        ``quantized`` ``(batch, T, output_dim)``: ``q``;
        ``onehot`` ``(batch, T, G, V)``: the selections (exactly one-hot in value);
        ``probs`` ``(batch, T, G, V)``: ``softmax(l)`` without noise (the diversity loss averages them);
        ``perplexity`` ``(G,)``: ``exp(-sum_v pbar_gv log pbar_gv)`` of ``probs`` averaged over the
        ``step_mask`` steps, between 1 (one entry) and ``V`` (all equally).

    Example:
    >>> q = GumbelVectorQuantizer(num_groups=2, num_vars=16, codevector_dim=32, output_dim=16)
    >>> out = q(np.random.randn(2, 49, 32).astype("float32"))
    >>> out["quantized"].shape, out["onehot"].shape, out["perplexity"].shape
    ((2, 49, 16), (2, 49, 2, 16), (2,))
    """

    def __init__(self, num_groups=2, num_vars=320, codevector_dim=256, output_dim=256, temperature=2.0,
                 logits_initializer=None, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.num_groups = check_positive_int("GumbelVectorQuantizer num_groups", num_groups)
        self.num_vars = check_positive_int("GumbelVectorQuantizer num_vars", num_vars)
        self.codevector_dim = check_positive_int("GumbelVectorQuantizer codevector_dim", codevector_dim)
        if self.codevector_dim % self.num_groups:
            raise ValueError(f"GumbelVectorQuantizer codevector_dim={codevector_dim} must be a multiple of "
                             f"num_groups={num_groups} (each group contributes codevector_dim / num_groups)")
        self.output_dim = check_positive_int("GumbelVectorQuantizer output_dim", output_dim)
        self.initial_temperature = check_positive_float("GumbelVectorQuantizer temperature", temperature)
        self.logits_initializer = keras.initializers.get(logits_initializer or keras.initializers.RandomNormal(0, 1))
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def build(self, input_shape):
        check_rank("GumbelVectorQuantizer", input_shape, 3, "(batch, time, channels)")
        gv = self.num_groups * self.num_vars
        self.weight_proj = Dense(gv, kernel_initializer=self.logits_initializer, dtype=self.dtype_policy,
                                 name="weight_proj")
        self.weight_proj.build(input_shape)
        self.codevectors = self.add_weight(
            name="codevectors", shape=(self.num_groups, self.num_vars, self.codevector_dim // self.num_groups),
            initializer=keras.initializers.RandomUniform(0.0, 1.0))
        self.output_projection = Dense(self.output_dim, dtype=self.dtype_policy, name="output_projection")
        self.output_projection.build((None, None, self.codevector_dim))
        self.temperature = self.add_weight(name="temperature", shape=(), trainable=False,
                                           initializer=keras.initializers.Constant(self.initial_temperature))

    def set_temperature(self, value):
        """Set ``tau`` (the procedure's annealing schedule calls this)."""
        self.temperature.assign(value)

    def call(self, inputs, step_mask=None, training=None):
        check_rank("GumbelVectorQuantizer", inputs.shape, 3, "(batch, time, channels)")
        batch, steps = ops.shape(inputs)[0], ops.shape(inputs)[1]
        logits = ops.reshape(self.weight_proj(inputs), (batch, steps, self.num_groups, self.num_vars))
        logits = ops.cast(logits, "float32")
        probs = ops.softmax(logits, axis=-1)
        if training:
            u = keras.random.uniform(ops.shape(logits), minval=1e-7, maxval=1.0 - 1e-7, seed=self.seed_generator)
            soft = ops.softmax((logits - ops.log(-ops.log(u))) / self.temperature, axis=-1)
            hard = ops.one_hot(ops.argmax(soft, axis=-1), self.num_vars, dtype=soft.dtype)
            onehot = hard + soft - ops.stop_gradient(soft)  # value: hard; gradient: the soft sample's
        else:
            onehot = ops.one_hot(ops.argmax(logits, axis=-1), self.num_vars, dtype=logits.dtype)
        codewords = ops.einsum("btgv,gvd->btgd", onehot, ops.cast(self.codevectors, onehot.dtype))
        codewords = ops.reshape(codewords, (batch, steps, self.codevector_dim))
        quantized = self.output_projection(ops.cast(codewords, self.compute_dtype))

        weights = ops.ones((batch, steps), probs.dtype) if step_mask is None else ops.cast(step_mask, probs.dtype)
        mean = ops.sum(probs * weights[:, :, None, None], axis=(0, 1)) / ops.maximum(ops.sum(weights), 1.0)
        perplexity = ops.exp(-ops.sum(mean * ops.log(mean + 1e-7), axis=-1))
        return {"quantized": quantized, "onehot": onehot, "probs": probs, "perplexity": perplexity}

    def compute_output_shape(self, input_shape):
        b, t = input_shape[0], input_shape[1]
        g, v = self.num_groups, self.num_vars
        return {"quantized": (b, t, self.output_dim), "onehot": (b, t, g, v), "probs": (b, t, g, v),
                "perplexity": (g,)}

    def get_config(self):
        return {**super().get_config(), "num_groups": self.num_groups, "num_vars": self.num_vars,
                "codevector_dim": self.codevector_dim, "output_dim": self.output_dim,
                "temperature": self.initial_temperature,
                "logits_initializer": keras.initializers.serialize(self.logits_initializer), "seed": self.seed}


# --------------------------------------------------------------------------- backbone


@keras.saving.register_keras_serializable(package="tfsuite")
class Wav2Vec2Backbone(keras.layers.Layer):
    """Section 9.2, Wav2Vec 2.0 backbone: ``z = f(x)``, ``c = g(mask(W LN(z)))``.

    ``features = LN(f(x))`` (the quantizer's input in pre-training);
    ``h = Dropout(features W + b)``; steps where ``span_mask`` is True are replaced
    by a learned vector ``m`` (``mask_embedding``); ``h = h + PosConv(h)``; then
    post-LN: ``LN``, dropout, the Transformer layers (post-LN); or pre-LN
    (``normalize_first=True``): dropout, the pre-LN layers, a final ``LN``.
    Padded frames (from ``padding_mask``) are zeroed before the Transformer and
    hidden from its attention. The first conv block's group norm spans the whole
    padded waveform, as in the paper's BASE model, so pad batches to similar lengths.

    Args:
        hidden_dim: int, Transformer width. Default 768.
        num_layers: int. Default 12.
        num_heads: int. Default 12.
        intermediate_dim: int, FFN width. Default 3072.
        conv_filters, conv_kernel_sizes, conv_strides, feature_norm, conv_bias:
            the :class:`Wav2Vec2FeatureEncoder` (512, the paper's kernels and strides, ``"group"``, False).
        pos_conv_kernel: int. Default 128.
        pos_conv_groups: int. Default 16.
        pos_conv_weight_norm: bool. Default True.
        dropout: float, on the projected features, the Transformer input and inside its layers. Default 0.1.
        normalize_first: bool, pre-LN Transformer (LARGE's "stable layer norm"). Default False.
        layer_norm_epsilon: float. Default ``1e-5``.

    Call arguments:
        inputs: float ``(batch, samples)`` waveform.
        padding_mask: bool ``(batch, samples)`` or None, True for real samples.
        span_mask: bool ``(batch, frames)`` or None, True for the frames to mask
            (:func:`compute_span_mask`). Note: True means *replace*, not keep.
        training: bool.

    Returns: dict ``{"context": (batch, frames, hidden_dim), "features": (batch, frames, conv_filters[-1])}``.

    Example: see the module docstring.
    """

    def __init__(self, hidden_dim=768, num_layers=12, num_heads=12, intermediate_dim=3072, conv_filters=512,
                 conv_kernel_sizes=CONV_KERNELS, conv_strides=CONV_STRIDES, feature_norm="group", conv_bias=False,
                 pos_conv_kernel=128, pos_conv_groups=16, pos_conv_weight_norm=True, dropout=0.1,
                 normalize_first=False, layer_norm_epsilon=1e-5, **kwargs):
        super().__init__(**kwargs)
        self.hidden_dim = check_positive_int("Wav2Vec2Backbone hidden_dim", hidden_dim)
        self.num_layers = check_positive_int("Wav2Vec2Backbone num_layers", num_layers)
        self.num_heads = check_positive_int("Wav2Vec2Backbone num_heads", num_heads)
        self.intermediate_dim = check_positive_int("Wav2Vec2Backbone intermediate_dim", intermediate_dim)
        self.dropout = check_positive_float("Wav2Vec2Backbone dropout", dropout, allow_zero=True)
        self.normalize_first = bool(normalize_first)
        self.layer_norm_epsilon = check_positive_float("Wav2Vec2Backbone layer_norm_epsilon", layer_norm_epsilon)
        self.feature_encoder = Wav2Vec2FeatureEncoder(
            conv_filters, conv_kernel_sizes, conv_strides, norm=feature_norm, use_bias=conv_bias,
            epsilon=layer_norm_epsilon, dtype=self.dtype_policy, name="feature_encoder")
        self.pos_conv_embed = Wav2Vec2PositionalConvEmbedding(
            pos_conv_kernel, pos_conv_groups, weight_norm=pos_conv_weight_norm, dtype=self.dtype_policy,
            name="pos_conv_embed")
        if self.hidden_dim % self.pos_conv_embed.groups:
            raise ValueError(f"Wav2Vec2Backbone pos_conv_groups={pos_conv_groups} must divide hidden_dim={hidden_dim}")
        if self.hidden_dim % self.num_heads:
            raise ValueError(f"Wav2Vec2Backbone num_heads={num_heads} must divide hidden_dim={hidden_dim}")

    def build(self, input_shape):
        check_rank("Wav2Vec2Backbone", input_shape, 2, "(batch, samples)")
        self.feature_encoder.build(input_shape)
        frames = self.feature_encoder.compute_output_shape(input_shape)
        norm = dict(epsilon=self.layer_norm_epsilon, dtype=self.dtype_policy)
        self.feature_layer_norm = LayerNormalization(name="feature_layer_norm", **norm)
        self.feature_layer_norm.build(frames)
        self.feature_projection = Dense(self.hidden_dim, dtype=self.dtype_policy, name="feature_projection")
        self.feature_projection.build(frames)
        hidden = (frames[0], frames[1], self.hidden_dim)
        self.mask_embedding = self.add_weight(name="mask_embedding", shape=(self.hidden_dim,),
                                              initializer=keras.initializers.RandomUniform(0.0, 1.0))
        self.pos_conv_embed.build(hidden)
        self.encoder_layer_norm = LayerNormalization(name="encoder_layer_norm", **norm)
        self.encoder_layer_norm.build(hidden)
        self.dropout_layer = Dropout(self.dropout, dtype=self.dtype_policy) if self.dropout else None
        self.transformer_layers = []
        for i in range(self.num_layers):
            layer = TransformerEncoderLayer(
                self.intermediate_dim, self.num_heads, dropout=self.dropout, activation="gelu_exact",
                layer_norm_epsilon=self.layer_norm_epsilon, normalize_first=self.normalize_first,
                dtype=self.dtype_policy, name=f"transformer_layer_{i}")
            layer.build(hidden)
            self.transformer_layers.append(layer)

    def _drop(self, x, training):
        return x if self.dropout_layer is None else self.dropout_layer(x, training=training)

    def frame_lengths(self, sample_lengths):
        """Frames per utterance for ``sample_lengths`` (int or int tensor), e.g. CTC's logit lengths."""
        return self.feature_encoder.output_length(sample_lengths)

    def call(self, inputs, padding_mask=None, span_mask=None, training=None):
        check_rank("Wav2Vec2Backbone", inputs.shape, 2, "(batch, samples)")
        conv = self.feature_encoder(inputs, padding_mask=padding_mask)
        features = self.feature_layer_norm(conv)
        hidden = self._drop(self.feature_projection(features), training)
        frame_mask = None
        if padding_mask is not None:
            frame_mask = frame_padding_mask(self.feature_encoder, padding_mask, ops.shape(hidden)[1])
            hidden = hidden * ops.cast(frame_mask, hidden.dtype)[:, :, None]
        if span_mask is not None:
            check_rank("Wav2Vec2Backbone span_mask", span_mask.shape, 2, "(batch, frames)")
            mask = ops.cast(span_mask, "bool")[:, :, None]
            hidden = ops.where(mask, ops.cast(self.mask_embedding, hidden.dtype), hidden)
        hidden = hidden + self.pos_conv_embed(hidden)
        if not self.normalize_first:
            hidden = self.encoder_layer_norm(hidden)
        hidden = self._drop(hidden, training)
        for layer in self.transformer_layers:
            hidden = layer(hidden, padding_mask=frame_mask, training=training)
        if self.normalize_first:
            hidden = self.encoder_layer_norm(hidden)
        return {"context": hidden, "features": features}

    def compute_output_shape(self, input_shape):
        frames = self.feature_encoder.compute_output_shape(input_shape)
        return {"context": (frames[0], frames[1], self.hidden_dim), "features": frames}

    def get_config(self):
        enc, pos = self.feature_encoder, self.pos_conv_embed
        return {
            **super().get_config(), "hidden_dim": self.hidden_dim, "num_layers": self.num_layers,
            "num_heads": self.num_heads, "intermediate_dim": self.intermediate_dim, "conv_filters": enc.filters,
            "conv_kernel_sizes": enc.kernel_sizes, "conv_strides": enc.strides, "feature_norm": enc.norm,
            "conv_bias": enc.use_bias, "pos_conv_kernel": pos.kernel_size, "pos_conv_groups": pos.groups,
            "pos_conv_weight_norm": pos.weight_norm, "dropout": self.dropout, "normalize_first": self.normalize_first,
            "layer_norm_epsilon": self.layer_norm_epsilon,
        }


def _deserialize(value):
    return value if isinstance(value, keras.layers.Layer) else keras.saving.deserialize_keras_object(value)


# --------------------------------------------------------------------------- tasks


@keras.saving.register_keras_serializable(package="tfsuite")
class Wav2Vec2PreTrainer(keras.Model):
    """Section 9.2, Wav2Vec 2.0 pre-training network: context projections ``c_t`` and quantized targets ``q_t``.

    Runs the backbone on the span-masked input and the quantizer on its unmasked
    ``features``; ``context`` is the Transformer output projected to
    ``projection_dim`` (``project_hid``), ``quantized`` the quantizer's output
    (projected to the same size). The losses and the training loop are in
    ``speech/wav2vec2_pretraining.py``.

    Args:
        backbone: :class:`Wav2Vec2Backbone`.
        quantizer: :class:`GumbelVectorQuantizer`, its ``output_dim`` equal to ``projection_dim``.
        projection_dim: int, size of the space the contrastive similarity is taken in. Default 256.
        feature_dropout: float, dropout on the features before quantization. Default 0.

    Call arguments: ``inputs`` waveform ``(batch, samples)``, ``padding_mask``, ``span_mask``
    (as the backbone), ``training``.

    Returns: dict ``context`` ``(batch, frames, projection_dim)``, ``quantized`` (same), and the
    quantizer's ``onehot``, ``probs``, ``perplexity`` (over the ``span_mask`` steps).
    """

    def __init__(self, backbone, quantizer, projection_dim=256, feature_dropout=0.0, **kwargs):
        super().__init__(**kwargs)
        self.backbone = _deserialize(backbone)
        self.quantizer = _deserialize(quantizer)
        self.projection_dim = check_positive_int("Wav2Vec2PreTrainer projection_dim", projection_dim)
        if self.quantizer.output_dim != self.projection_dim:
            raise ValueError(f"Wav2Vec2PreTrainer: the quantizer's output_dim ({self.quantizer.output_dim}) must "
                             f"equal projection_dim ({projection_dim}), the space c_t and q_t are compared in")
        self.feature_dropout = check_positive_float("Wav2Vec2PreTrainer feature_dropout", feature_dropout,
                                                    allow_zero=True)
        self.project_hid = Dense(self.projection_dim, name="project_hid")
        self.feature_dropout_layer = Dropout(self.feature_dropout) if self.feature_dropout else None

    def call(self, inputs, padding_mask=None, span_mask=None, training=None):
        out = self.backbone(inputs, padding_mask=padding_mask, span_mask=span_mask, training=training)
        features = out["features"]
        if self.feature_dropout_layer is not None:
            features = self.feature_dropout_layer(features, training=training)
        step_mask = span_mask
        if padding_mask is not None:
            frames = frame_padding_mask(self.backbone.feature_encoder, padding_mask, ops.shape(features)[1])
            step_mask = frames if span_mask is None else ops.logical_and(frames, ops.cast(span_mask, "bool"))
        quantized = self.quantizer(features, step_mask=step_mask, training=training)
        return {"context": self.project_hid(out["context"]), **quantized}

    def get_config(self):
        return {**super().get_config(), "backbone": keras.saving.serialize_keras_object(self.backbone),
                "quantizer": keras.saving.serialize_keras_object(self.quantizer),
                "projection_dim": self.projection_dim, "feature_dropout": self.feature_dropout}


@keras.saving.register_keras_serializable(package="tfsuite")
class Wav2Vec2CTC(keras.Model):
    """Section 9.2, Wav2Vec 2.0 fine-tuned for recognition: ``y_t = softmax(W c_t + b)`` over characters and a blank.

    A linear head of ``vocab_size + 1`` classes on the backbone's context vectors,
    trained with CTC (``speech/ctc.py``). Class :data:`BLANK_INDEX` (0) is the CTC blank;
    class ``i`` in ``1..vocab_size`` is the ``i``-th character of the vocabulary
    (``speech.ctc.CHARACTERS[i - 1]`` by default). Span masking of the input (a
    SpecAugment of the latent frames) is the caller's choice through ``span_mask``.

    Args:
        backbone: :class:`Wav2Vec2Backbone` (for fine-tuning, a pre-trained one).
        vocab_size: int, characters excluding the blank.
        dropout: float, on the context vectors before the head. Default 0.

    Call arguments: ``inputs`` waveform ``(batch, samples)``, ``padding_mask``, ``span_mask``, ``training``.

    Returns: logits ``(batch, frames, vocab_size + 1)``; frames per utterance are
    ``backbone.frame_lengths(samples)``.

    Example:
    >>> ctc = Wav2Vec2CTC(Wav2Vec2Backbone(32, 2, 2, 64, conv_filters=32, pos_conv_kernel=16, pos_conv_groups=4), 28)
    >>> ctc(np.zeros((1, 16000), "float32")).shape
    (1, 49, 29)
    """

    def __init__(self, backbone, vocab_size, dropout=0.0, **kwargs):
        super().__init__(**kwargs)
        self.backbone = _deserialize(backbone)
        self.vocab_size = check_positive_int("Wav2Vec2CTC vocab_size", vocab_size)
        self.dropout = check_positive_float("Wav2Vec2CTC dropout", dropout, allow_zero=True)
        self.dropout_layer = Dropout(self.dropout) if self.dropout else None
        self.head = Dense(self.vocab_size + 1, name="ctc_head")

    def call(self, inputs, padding_mask=None, span_mask=None, training=None):
        context = self.backbone(inputs, padding_mask=padding_mask, span_mask=span_mask, training=training)["context"]
        if self.dropout_layer is not None:
            context = self.dropout_layer(context, training=training)
        return self.head(context)

    def get_config(self):
        return {**super().get_config(), "backbone": keras.saving.serialize_keras_object(self.backbone),
                "vocab_size": self.vocab_size, "dropout": self.dropout}
