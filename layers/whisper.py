"""Whisper (textbook section 9.2): log-mel speech in, text out, as a configuration of our ``Transformer``.

Radford et al. (2022), "Robust Speech Recognition via Large-Scale Weak
Supervision". The encoder reads an 80-bin log-mel spectrogram ``X`` of
``(frames, num_mels)`` (10 ms hop, ``pipelines.audio.log_mel_spectrogram``)::

    h1  = GELU(Conv1D_k3,s1(X))                 frames     x d_model
    h2  = GELU(Conv1D_k3,s2(pad_1(h1)))         frames / 2 x d_model  (one encoder step per 20 ms)
    enc = LN(EncoderLayer^N(h2 + PE_whisper))   pre-LN layers, a final layer norm
    dec = LN(DecoderLayer^N(E[y] + P[pos], enc))
    logits = dec E^T                            output tied to the token embedding

with Whisper's sinusoids (``sin`` and ``cos`` halves concatenated, not
interleaved as in section 5.2)::

    PE_whisper(pos, i)         = sin(pos * 10000^(-i / (d/2 - 1)))    i < d/2
    PE_whisper(pos, d/2 + i)   = cos(pos * 10000^(-i / (d/2 - 1)))

learned decoder positions ``P``, exact (erf) GELU in every FFN, and no bias
on the attention key projection (a key bias adds ``q . b`` to every score of
a query, which the softmax ignores).

Everything after the convolutions is ``layers.transformer_models.Transformer``
with ``encoder_input="features"``, ``normalize_first=True``,
``activation="gelu_exact"``, ``position_encoding="learned"`` and tied
embeddings; :class:`Whisper` only swaps the encoder's linear feature
projection for :class:`WhisperConvFrontend` and its position layer for
:class:`WhisperPositionEncoding`. So ``encode(log_mel)`` then the shared decode
loop of ``layers.generation.TextGenerator`` (KV-cache, greedy, sampling, beam
search, TFLite export) work as they do for translation.

:func:`load_keras_hub_whisper` copies a ``keras_hub.models.WhisperBackbone``'s
weights into a :class:`Whisper` of the same sizes (the parity tests in
``tests/layers/test_whisper.py``, or real checkpoints).
"""

import keras
import numpy as np
from keras import ops

from layers.attention import _fresh
from layers.convolution import Conv1D
from layers.transformer_models import Transformer
from layers.validation import check_positive_float, check_positive_int, check_rank

__all__ = ["WhisperConvFrontend", "WhisperPositionEncoding", "Whisper", "load_keras_hub_whisper", "whisper_sinusoids"]


def whisper_sinusoids(length, channels, max_timescale=10000.0):
    """Whisper's position table ``(length, channels)``: ``[sin(pos * w_i) | cos(pos * w_i)]``, ``w_i = T^(-i/(d/2-1))``.

    The ``sinusoids`` function of openai/whisper ``model.py``; ``channels``
    must be even and at least 4.
    """
    if channels % 2 or channels < 4:
        raise ValueError(f"Whisper sinusoids need an even hidden size of at least 4, got {channels}")
    half = channels // 2
    inverse_timescales = np.exp(-np.log(max_timescale) / (half - 1) * np.arange(half))
    scaled_time = np.arange(length)[:, None] * inverse_timescales[None, :]
    return np.concatenate([np.sin(scaled_time), np.cos(scaled_time)], axis=1).astype("float32")


@keras.saving.register_keras_serializable(package="tfsuite")
class WhisperConvFrontend(keras.layers.Layer):
    """Section 9.2, Whisper's audio stem: ``GELU(Conv_k3,s2(pad_1(GELU(Conv_k3,s1(X)))))``.

    Two width-3 1-D convolutions over time, each followed by the exact GELU
    ``x Phi(x)``; the first keeps the frame rate (``padding="same"``, one zero
    frame on each side), the second pads one zero frame on each side and
    strides by 2 (PyTorch's ``padding=1``; ``"same"`` would pad only the end
    and shift every window by a frame). ``frames`` 10 ms log-mel frames become
    ``ceil(frames / 2)`` vectors of ``hidden_dim``: output step ``t`` sees
    input frames ``2t - 2 .. 2t + 2``.

    Args:
        hidden_dim: int, output width ``d_model`` (both convolutions' filters).
        kernel_initializer: initializer of both kernels. Default ``"glorot_uniform"``.
        bias_initializer: initializer of both biases. Default ``"zeros"``.

    Input shape: ``(batch, frames, num_mels)``.
    Output shape: ``(batch, ceil(frames / 2), hidden_dim)``.

    Example:
    >>> WhisperConvFrontend(16)(np.zeros((2, 9, 8), "float32")).shape
    (2, 5, 16)
    """

    def __init__(self, hidden_dim, kernel_initializer="glorot_uniform", bias_initializer="zeros", **kwargs):
        super().__init__(**kwargs)
        self.hidden_dim = check_positive_int("WhisperConvFrontend hidden_dim", hidden_dim)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)

    def _conv(self, strides, padding, name):
        return Conv1D(
            self.hidden_dim, 3, strides=strides, padding=padding, dtype=self.dtype_policy, name=name,
            kernel_initializer=_fresh(self.kernel_initializer), bias_initializer=_fresh(self.bias_initializer),
        )

    def build(self, input_shape):
        check_rank("WhisperConvFrontend", input_shape, 3, "(batch, frames, num_mels)")
        if input_shape[-1] is None:
            raise ValueError(f"WhisperConvFrontend needs a known num_mels (last axis), got shape {tuple(input_shape)}")
        self.num_mels = int(input_shape[-1])
        self.conv_1 = self._conv(1, "same", "conv_1")
        self.conv_1.build(input_shape)
        self.conv_2 = self._conv(2, "valid", "conv_2")
        self.conv_2.build((input_shape[0], None, self.hidden_dim))

    def call(self, inputs):
        check_rank("WhisperConvFrontend", inputs.shape, 3, "(batch, frames, num_mels)")
        if inputs.shape[-1] != self.num_mels:
            raise ValueError(
                f"WhisperConvFrontend was built for {self.num_mels} mel bins, got shape {tuple(inputs.shape)}"
            )
        x = ops.gelu(self.conv_1(inputs), approximate=False)
        x = ops.pad(x, [[0, 0], [1, 1], [0, 0]])
        return ops.gelu(self.conv_2(x), approximate=False)

    def compute_output_shape(self, input_shape):
        frames = input_shape[1]
        return (input_shape[0], None if frames is None else -(-frames // 2), self.hidden_dim)

    def get_config(self):
        return {
            **super().get_config(),
            "hidden_dim": self.hidden_dim,
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
            "bias_initializer": keras.initializers.serialize(self.bias_initializer),
        }


@keras.saving.register_keras_serializable(package="tfsuite")
class WhisperPositionEncoding(keras.layers.Layer):
    """Section 9.2, Whisper encoder positions: ``PE(pos) = [sin(pos w_i) | cos(pos w_i)]``, ``w_i = 10000^(-i/(d/2-1))``.

    A fixed (non-trainable) table of ``sequence_length`` rows, as Whisper
    registers it (a buffer; keras-hub a frozen ``PositionEmbedding``), so a
    checkpoint's table can be copied in. Returns the encoding only; the model
    adds it.

    Args:
        sequence_length: int, the number of positions (``max_audio_frames / 2``;
            1500 for Whisper's 30 s windows).
        max_timescale: float, the ``10000`` of the formula. Default ``10000.0``.

    Call arguments:
        inputs: ``(batch, T, d_model)`` (only its shape is used); ``d_model``
            even and at least 4.
        start_index: int or scalar int tensor, position of the first step. Default 0.

    Output: ``(batch, T, d_model)``, rows ``start_index .. start_index + T - 1``.

    Example:
    >>> WhisperPositionEncoding(1500)(np.zeros((1, 20, 16), "float32")).shape
    (1, 20, 16)
    """

    def __init__(self, sequence_length, max_timescale=10000.0, **kwargs):
        super().__init__(**kwargs)
        self.sequence_length = check_positive_int("WhisperPositionEncoding sequence_length", sequence_length)
        self.max_timescale = check_positive_float("WhisperPositionEncoding max_timescale", max_timescale)

    def build(self, input_shape):
        check_rank("WhisperPositionEncoding", input_shape, 3, "(batch, time, d_model)")
        table = whisper_sinusoids(self.sequence_length, input_shape[-1] or 0, self.max_timescale)
        self._check_length(input_shape[1])
        self.embeddings = self.add_weight(
            name="embeddings", shape=table.shape, initializer=keras.initializers.Constant(table), trainable=False
        )

    def _check_length(self, length, start_index=0):
        if isinstance(length, int) and isinstance(start_index, int) and start_index + length > self.sequence_length:
            raise ValueError(
                f"WhisperPositionEncoding has {self.sequence_length} positions, got a sequence of {length} steps "
                f"from {start_index}; shorten the audio or raise max_audio_frames"
            )

    def call(self, inputs, start_index=0):
        length = inputs.shape[1] if inputs.shape[1] is not None else ops.shape(inputs)[1]
        self._check_length(length, start_index)
        rows = ops.slice(self.embeddings, (start_index, 0), (length, self.embeddings.shape[-1]))
        return ops.broadcast_to(ops.cast(rows, self.compute_dtype), ops.shape(inputs))

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "sequence_length": self.sequence_length, "max_timescale": self.max_timescale}


@keras.saving.register_keras_serializable(package="tfsuite")
class Whisper(Transformer):
    """Section 9.2, the Whisper encoder-decoder: log-mel features in, token logits out.

    ``enc = LN(Enc^N(GELU(Conv_s2(GELU(Conv(X)))) + PE))``,
    ``logits = LN(Dec^N(E[y] + P, enc)) E^T`` (module docstring). A
    ``Transformer`` with ``encoder_input="features"``, pre-LN layers with final
    norms, exact GELU, learned decoder positions and a tied output; the key
    projections' biases are frozen at zero (Whisper has none). Generation goes
    through ``layers.generation.TextGenerator`` with ``encoder_inputs`` the
    log-mel batch (or ``{"encoder_inputs", "encoder_padding_mask"}``).

    Args:
        vocab_size: int, text vocabulary size.
        num_mels: int, mel bins per frame. Default 80.
        max_audio_frames: int, longest input in frames (3000 = 30 s); the
            encoder has ``ceil(max_audio_frames / 2)`` positions. Default 3000.
        max_length: int, longest decoded sequence (learned positions, default
            KV-cache length). Default 448.
        num_encoder_layers, num_decoder_layers: ints. Default 2 each.
        hidden_dim: int, ``d_model``; even, at least 4. Default 32.
        num_heads: int; must divide ``hidden_dim``. Default 2.
        intermediate_dim: int or None, FFN width; None means ``4 * hidden_dim``.
        dropout: float in [0, 1). Default 0.
        layer_norm_epsilon: float > 0. Default ``1e-5``.
        kernel_initializer: initializer of every kernel (convolutions included).
            Default ``"glorot_uniform"``; keras-hub's Whisper uses
            ``TruncatedNormal(stddev=0.02)``.

    Call arguments:
        inputs: ``[log_mel (batch, frames, num_mels), decoder_token_ids (batch, T)]``
            or the dict ``{"encoder_inputs", "decoder_token_ids"}`` with optional
            ``"encoder_padding_mask"`` (per frame) and ``"decoder_padding_mask"``.
        encoder_padding_mask: bool ``(batch, frames)`` or None, True for real
            frames; padded frames are zeroed and encoder step ``t`` is real
            when frame ``2t`` is. Whisper itself pads every clip to 30 s and
            uses no mask.
        decoder_padding_mask: bool ``(batch, T)`` or None.

    Output: logits ``(batch, T, vocab_size)``.

    Example:
    >>> model = Whisper(vocab_size=60, num_mels=8, max_audio_frames=40, max_length=16, hidden_dim=16)
    >>> model([np.zeros((2, 40, 8), "float32"), np.ones((2, 5), "int32")]).shape
    (2, 5, 60)
    >>> tuple(model.encode(np.zeros((2, 40, 8), "float32"))[0].shape)   # one step per two frames
    (2, 20, 16)
    """

    def __init__(
        self,
        vocab_size,
        num_mels=80,
        max_audio_frames=3000,
        max_length=448,
        num_encoder_layers=2,
        num_decoder_layers=2,
        hidden_dim=32,
        num_heads=2,
        intermediate_dim=None,
        dropout=0.0,
        layer_norm_epsilon=1e-5,
        kernel_initializer="glorot_uniform",
        **kwargs,
    ):
        # Read by _position_layer while Transformer.__init__ builds the layers.
        self.max_audio_frames = check_positive_int("Whisper max_audio_frames", max_audio_frames)
        if hidden_dim % 2 or hidden_dim < 4:
            raise ValueError(f"Whisper hidden_dim must be even and at least 4 (sin | cos halves), got {hidden_dim}")
        super().__init__(
            None, vocab_size, max_length, num_encoder_layers=num_encoder_layers,
            num_decoder_layers=num_decoder_layers, hidden_dim=hidden_dim, num_heads=num_heads,
            intermediate_dim=intermediate_dim, dropout=dropout, activation="gelu_exact", normalize_first=True,
            position_encoding="learned", tie_embeddings=True, layer_norm_epsilon=layer_norm_epsilon,
            encoder_input="features", encoder_feature_dim=num_mels, kernel_initializer=kernel_initializer, **kwargs,
        )
        self.num_mels = self.encoder_feature_dim

    # The two places Whisper differs from Transformer(encoder_input="features"): Transformer asks
    # these factories for its encoder projection and position layer.

    def _dense(self, units, name):
        if name == "encoder_projection":
            return WhisperConvFrontend(
                units, kernel_initializer=self._layer_initializers()["kernel_initializer"], name=name
            )
        return super()._dense(units, name)

    def _position_layer(self, name):
        if name == "encoder_position":
            return WhisperPositionEncoding(-(-self.max_audio_frames // 2), name=name)
        return super()._position_layer(name)

    def build(self, input_shape=None):
        super().build(input_shape)
        # No key bias in Whisper: ours stays at its zero initialisation (its gradient is zero anyway).
        for layer in self.encoder_layers:
            layer.self_attention.key_bias.trainable = False
        for layer in self.decoder_layers:
            layer.self_attention.key_bias.trainable = False
            layer.cross_attention.key_bias.trainable = False

    def _check_features(self, features):
        shape = tuple(features.shape)
        if len(shape) != 3:
            raise ValueError(
                f"Whisper expects log-mel features of rank 3 (batch, frames, num_mels={self.num_mels}), got shape "
                f"{shape}; add a batch axis for one clip"
            )
        if shape[-1] != self.num_mels:
            raise ValueError(
                f"Whisper was built for {self.num_mels} mel bins, got features of shape {shape}; compute "
                f"log-mels with num_mel_bins={self.num_mels} (pipelines.audio.LogMelFeatures)"
            )
        if shape[1] is not None and shape[1] > self.max_audio_frames:
            raise ValueError(
                f"Whisper takes at most max_audio_frames={self.max_audio_frames} frames, got features of shape "
                f"{shape}; cut the audio into shorter windows or raise max_audio_frames"
            )

    def encode(self, encoder_inputs, encoder_padding_mask=None, training=None):
        """Log-mel ``(batch, frames, num_mels)`` -> ``(sequence (batch, ceil(frames/2), hidden_dim), mask)``.

        ``encoder_inputs`` may also be a dict with ``"encoder_inputs"`` and an
        optional per-frame ``"encoder_padding_mask"``: padded frames are set to
        zero before the convolutions (so real steps never depend on the padding
        value), and step ``t``, centred on frame ``2t``, is real when that frame is.
        """
        if isinstance(encoder_inputs, dict):
            if "encoder_inputs" not in encoder_inputs:
                raise ValueError(
                    f"Whisper.encode expects a dict with 'encoder_inputs', got keys {sorted(encoder_inputs)}"
                )
            encoder_padding_mask = encoder_inputs.get("encoder_padding_mask", encoder_padding_mask)
            encoder_inputs = encoder_inputs["encoder_inputs"]
        self._check_features(encoder_inputs)
        if encoder_padding_mask is not None:
            mask_shape, frames = tuple(encoder_padding_mask.shape), encoder_inputs.shape[1]
            if len(mask_shape) != 2 or (None not in (mask_shape[1], frames) and mask_shape[1] != frames):
                raise ValueError(
                    f"Whisper encoder_padding_mask must be (batch, frames) like the features "
                    f"{tuple(encoder_inputs.shape)}, got shape {mask_shape}"
                )
            encoder_padding_mask = ops.cast(encoder_padding_mask, "bool")
            # Zero the padded frames: the last real steps' windows reach two frames past them, and
            # must not depend on what the pipeline padded with.
            features = ops.convert_to_tensor(encoder_inputs, self.compute_dtype)
            encoder_inputs = features * ops.cast(ops.expand_dims(encoder_padding_mask, -1), features.dtype)
            # A gather, not mask[:, ::2]: a strided slice is not a TFLite builtin.
            steps = ops.arange(0, ops.shape(encoder_padding_mask)[1], 2)
            encoder_padding_mask = ops.take(encoder_padding_mask, steps, axis=1)
        return super().encode(encoder_inputs, encoder_padding_mask, training=training)

    def decode_sequence(self, decoder_token_ids, encoder_outputs, decoder_padding_mask=None, training=None):
        """Final-normed decoder hidden states ``(batch, T, hidden_dim)``: keras-hub's ``decoder_sequence_output``."""
        return self.decoder_final_norm(
            self.decoder_hidden(decoder_token_ids, encoder_outputs, decoder_padding_mask, training)
        )

    def decode(self, decoder_token_ids, encoder_outputs, decoder_padding_mask=None, training=None):
        """Logits ``(batch, T, vocab_size)``: :meth:`decode_sequence` times the transposed token embedding."""
        x = self.decode_sequence(decoder_token_ids, encoder_outputs, decoder_padding_mask, training)
        return self._logits(x, self.decoder_embeddings, None, self.lm_head)

    def get_config(self):
        # Skip Transformer's get_config: its settings are fixed here, not constructor arguments.
        return {
            **super(Transformer, self).get_config(),
            "vocab_size": self.decoder_vocab_size,
            "num_mels": self.num_mels,
            "max_audio_frames": self.max_audio_frames,
            "max_length": self.max_length,
            "num_encoder_layers": self.num_encoder_layers,
            "num_decoder_layers": self.num_decoder_layers,
            "hidden_dim": self.hidden_dim,
            "num_heads": self.num_heads,
            "intermediate_dim": self.intermediate_dim,
            "dropout": self.dropout,
            "layer_norm_epsilon": self.layer_norm_epsilon,
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
        }


def load_keras_hub_whisper(model, backbone):
    """Copy a ``keras_hub.models.WhisperBackbone``'s weights into our :class:`Whisper`; returns ``model``.

    The mapping, keras-hub -> ours: ``encoder_conv_layer_1/2`` ->
    ``encoder_projection.conv_1/conv_2``; ``encoder_position_embedding`` ->
    ``encoder_position.embeddings``; per encoder layer ``_self_attention_layer``
    (query, key, value, attention_output EinsumDense) -> ``self_attention``
    with a zero key bias, the two layer norms and the FFN denses by name;
    ``encoder_layer_norm`` -> ``encoder_final_norm``; the decoder's token and
    position embeddings -> ``decoder_embeddings`` and
    ``decoder_position.embeddings``; per decoder layer self- and
    cross-attention likewise; ``decoder_layer_norm`` -> ``decoder_final_norm``.

    Raises:
        ValueError: the two differ in a size (layers, widths, heads, mel bins,
        vocabulary, position counts), or a weight shape differs.
    """
    if not isinstance(model, Whisper):
        raise ValueError(f"load_keras_hub_whisper needs our Whisper model, got {type(model).__name__}")
    expected = {
        "vocabulary_size": (backbone.vocabulary_size, model.decoder_vocab_size),
        "num_encoder_layers": (backbone.num_layers, model.num_encoder_layers),
        "num_decoder_layers": (backbone.num_layers, model.num_decoder_layers),
        "num_heads": (backbone.num_heads, model.num_heads),
        "hidden_dim": (backbone.hidden_dim, model.hidden_dim),
        "intermediate_dim": (backbone.intermediate_dim, model.intermediate_dim),
        "num_mels": (backbone.num_mels, model.num_mels),
        "encoder positions": (backbone.max_encoder_sequence_length // 2, -(-model.max_audio_frames // 2)),
        "max_decoder_sequence_length": (backbone.max_decoder_sequence_length, model.max_length),
    }
    wrong = {name: pair for name, pair in expected.items() if pair[0] != pair[1]}
    if wrong:
        raise ValueError(
            "load_keras_hub_whisper: the models differ in "
            + ", ".join(f"{name} (keras-hub {theirs!r}, ours {mine!r})" for name, (theirs, mine) in wrong.items())
            + "; build our Whisper with the backbone's sizes"
        )
    if not model.built:
        model.build()

    def assign(variable, value):
        value = np.asarray(keras.ops.convert_to_numpy(value), "float32")
        if tuple(variable.shape) != value.shape:
            raise ValueError(f"{variable.path}: keras-hub shape {value.shape}, ours {tuple(variable.shape)}")
        variable.assign(value)

    def copy_dense(ours, theirs):
        assign(ours.kernel, theirs.kernel)
        assign(ours.bias, theirs.bias)

    def copy_norm(ours, theirs):
        assign(ours.gamma, theirs.gamma)
        assign(ours.beta, theirs.beta)

    def copy_attention(ours, theirs):
        for part, dense in (("query", theirs._query_dense), ("key", theirs._key_dense),
                            ("value", theirs._value_dense), ("output", theirs._output_dense)):
            assign(getattr(ours, f"{part}_kernel"), dense.kernel)
            bias = getattr(ours, f"{part}_bias")
            assign(bias, np.zeros(bias.shape, "float32") if dense.bias is None else dense.bias)

    def copy_feedforward(ours, theirs):
        copy_dense(ours.feedforward.intermediate_dense, theirs._feedforward_intermediate_dense)
        copy_dense(ours.feedforward.output_dense, theirs._feedforward_output_dense)
        copy_norm(ours.feedforward_layer_norm, theirs._feedforward_layer_norm)

    copy_dense(model.encoder_projection.conv_1, backbone.encoder_conv_layer_1)
    copy_dense(model.encoder_projection.conv_2, backbone.encoder_conv_layer_2)
    assign(model.encoder_position.embeddings, backbone.encoder_position_embedding.position_embeddings)
    for ours, theirs in zip(model.encoder_layers, backbone.encoder_transformer_layers):
        copy_attention(ours.self_attention, theirs._self_attention_layer)
        copy_norm(ours.self_attention_layer_norm, theirs._self_attention_layer_norm)
        copy_feedforward(ours, theirs)
    copy_norm(model.encoder_final_norm, backbone.encoder_layer_norm)
    embeddings = backbone.decoder_embeddings
    assign(model.decoder_embeddings, embeddings.token_embedding.embeddings)
    assign(model.decoder_position.embeddings, embeddings.position_embedding.position_embeddings)
    for ours, theirs in zip(model.decoder_layers, backbone.decoder_transformer_layers):
        copy_attention(ours.self_attention, theirs._self_attention_layer)
        copy_norm(ours.self_attention_layer_norm, theirs._self_attention_layer_norm)
        copy_attention(ours.cross_attention, theirs._cross_attention_layer)
        copy_norm(ours.cross_attention_layer_norm, theirs._cross_attention_layer_norm)
        copy_feedforward(ours, theirs)
    copy_norm(model.decoder_final_norm, backbone.decoder_layer_norm)
    return model
