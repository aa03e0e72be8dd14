"""Transformer models (textbook chapter 5): encoder-decoder ``Transformer`` and decoder-only ``TransformerCausalLM``.

Both read top to bottom like nanoGPT's ``model.py``: token embedding plus
position encoding (section 5.2), a stack of ``layers.transformer`` layers, and
a linear map to the vocabulary (tied to the token embedding by default, as in
the original paper and GPT-2).

Generation (``layers/generation.py``) uses the same small interface on both,
in the keras-hub spirit:

- ``build_cache(batch_size, cache_length, ...)``: zero KV-cache tensors (for
  the encoder-decoder model also the encoder output projected once into each
  layer's cross-attention keys and values);
- ``call_with_cache(token_ids, cache, cache_index)``: run ``token_ids``
  ``(batch, T)`` placed at ``cache_index``, return ``(logits, new_cache)``;
- ``generation_logits(token_ids, context)``: logits of the full sequence
  without a cache, for the uncached reference decoder;
- ``reorder_cache(cache, rows)``: re-gather the cache's batch rows after a
  beam-search step.

A cache is a tuple of plain tensors with a fixed ``cache_length``, so the
whole decode loop fits in one ``tf.while_loop`` and exports to TFLite.
"""

import keras
from keras import ops

from layers.attention import _fresh
from layers.detr import DETRBackbone
from layers.dropout import Dropout
from layers.normalization import LayerNormalization
from layers.perceptron import Dense
from layers.position_encoding import LearnedPositionEmbedding, SinusoidalPositionEncoding
from layers.transformer import TransformerDecoderLayer, TransformerEncoderLayer, head_size
from layers.validation import check_choice, check_positive_float, check_positive_int, check_rank

__all__ = ["ENCODER_INPUTS", "TransformerCausalLM", "Transformer", "copy_gpt2_weights", "image_patches",
           "take_rows", "unpack_seq2seq_inputs"]

_POSITION_ENCODINGS = ("learned", "sinusoidal")


def _check_token_ids(model_name, token_ids, what="token_ids"):
    check_rank(f"{model_name} {what}", token_ids.shape, 2, "(batch, time) of int token ids")


def unpack_seq2seq_inputs(model_name, inputs, decoder_padding_mask=None):
    """An encoder-decoder model's call inputs -> ``(encoder_inputs, decoder_token_ids, decoder_padding_mask)``.

    ``inputs`` is ``[encoder_inputs, decoder_token_ids]`` or the pipeline's dict
    (then ``encoder_inputs`` is the dict itself, which ``encode`` reads).
    """
    if isinstance(inputs, dict):
        missing = {"encoder_inputs", "decoder_token_ids"} - set(inputs)
        if missing:
            raise ValueError(
                f"{model_name} expects a dict with 'encoder_inputs' and 'decoder_token_ids' (and optional "
                f"'encoder_padding_mask', 'decoder_padding_mask'), missing {sorted(missing)}"
            )
        return inputs, inputs["decoder_token_ids"], inputs.get("decoder_padding_mask", decoder_padding_mask)
    if isinstance(inputs, (list, tuple)) and len(inputs) == 2:
        return inputs[0], inputs[1], decoder_padding_mask
    raise ValueError(f"{model_name} expects inputs [encoder_inputs, decoder_token_ids] or a dict of them")


def take_rows(cache, rows):
    """``((key, value), ...)`` cache pairs with only the batch rows ``rows`` (beam reorder, finished prompts)."""
    return tuple((ops.take(k, rows, axis=0), ops.take(v, rows, axis=0)) for k, v in cache)


class _TokenModel(keras.Model):
    """Embedding, position encoding and output head shared by both models."""

    def _init_common(
        self, max_length, hidden_dim, num_heads, intermediate_dim, dropout, activation, normalize_first,
        position_encoding, tie_embeddings, layer_norm_epsilon, activation_dropout=None,
        kernel_initializer="glorot_uniform", output_kernel_initializer=None,
        attention="full", attention_options=None, feedforward="dense", feedforward_options=None,
    ):
        name = type(self).__name__
        self.max_length = check_positive_int(f"{name} max_length", max_length)
        self.hidden_dim = check_positive_int(f"{name} hidden_dim", hidden_dim)
        self.num_heads = check_positive_int(f"{name} num_heads", num_heads)
        head_size(name, self.hidden_dim, self.num_heads)
        self.intermediate_dim = check_positive_int(f"{name} intermediate_dim", intermediate_dim or 4 * hidden_dim)
        self.dropout = check_positive_float(f"{name} dropout", dropout, allow_zero=True)
        self.activation = activation
        self.normalize_first = bool(normalize_first)
        self.position_encoding = check_choice(f"{name} position_encoding", position_encoding, _POSITION_ENCODINGS)
        self.tie_embeddings = bool(tie_embeddings)
        self.layer_norm_epsilon = check_positive_float(f"{name} layer_norm_epsilon", layer_norm_epsilon)
        self.activation_dropout = None if activation_dropout is None else check_positive_float(
            f"{name} activation_dropout", activation_dropout, allow_zero=True
        )
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.output_kernel_initializer = (
            None if output_kernel_initializer is None else keras.initializers.get(output_kernel_initializer)
        )
        self._layer_kwargs = dict(
            intermediate_dim=self.intermediate_dim, num_heads=self.num_heads, dropout=self.dropout,
            activation=activation, layer_norm_epsilon=self.layer_norm_epsilon,
            normalize_first=self.normalize_first, activation_dropout=self.activation_dropout,
        )
        # Section 7.1/7.4 by name; the layers check the names and options (their messages list the choices).
        self.attention = attention
        self.attention_options = dict(attention_options or {})
        self.feedforward = feedforward
        self.feedforward_options = dict(feedforward_options or {})
        options = dict(self.attention_options)
        if attention == "linformer":
            options.setdefault("max_length", self.max_length)  # the projections span the longest input
        self._layer_kwargs.update(dict(attention=attention, attention_options=options, feedforward=feedforward,
                                       feedforward_options=self.feedforward_options))

    def _layer_initializers(self):
        """Fresh initializer copies for one layer (a shared unseeded instance would repeat its values)."""
        return dict(
            kernel_initializer=_fresh(self.kernel_initializer),
            output_kernel_initializer=(
                None if self.output_kernel_initializer is None else _fresh(self.output_kernel_initializer)
            ),
        )

    def _dense(self, units, name):
        """A projection (lm_head, encoder_projection) initialised with ``kernel_initializer``."""
        return Dense(units, kernel_initializer=self._layer_initializers()["kernel_initializer"], name=name)

    def _position_layer(self, name):
        if self.position_encoding == "learned":
            return LearnedPositionEmbedding(
                self.max_length, initializer=keras.initializers.RandomNormal(stddev=0.02), name=name
            )
        return SinusoidalPositionEncoding(name=name)

    def _embedding_weight(self, name, vocab_size):
        return self.add_weight(
            name=name, shape=(vocab_size, self.hidden_dim), initializer=keras.initializers.RandomNormal(stddev=0.02)
        )

    def _embed(self, embeddings, position_layer, dropout_layer, token_ids, start_index, training):
        x = ops.take(embeddings, ops.cast(token_ids, "int32"), axis=0)
        x = x + position_layer(x, start_index=start_index)
        return x if dropout_layer is None else dropout_layer(x, training=training)

    def _logits(self, x, embeddings, final_norm, lm_head):
        if final_norm is not None:
            x = final_norm(x)
        if lm_head is not None:
            return lm_head(x)
        # Tied output: logits = x E^T as one 2-D matmul over all positions. A batched
        # (batch, T, d) x (d, V) product would make the weight gradient a batched
        # matmul plus a sum over the batch (measured: 10% of a GPT-2-sized step).
        batch, length = ops.shape(x)[0], ops.shape(x)[1]
        logits = ops.matmul(ops.reshape(x, (-1, self.hidden_dim)), ops.transpose(embeddings))
        return ops.reshape(logits, (batch, length, ops.shape(embeddings)[0]))

    def _common_config(self):
        return {
            "max_length": self.max_length,
            "hidden_dim": self.hidden_dim,
            "num_heads": self.num_heads,
            "intermediate_dim": self.intermediate_dim,
            "dropout": self.dropout,
            "activation": self.activation,
            "normalize_first": self.normalize_first,
            "position_encoding": self.position_encoding,
            "tie_embeddings": self.tie_embeddings,
            "layer_norm_epsilon": self.layer_norm_epsilon,
            "activation_dropout": self.activation_dropout,
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
            "output_kernel_initializer": (
                None if self.output_kernel_initializer is None
                else keras.initializers.serialize(self.output_kernel_initializer)
            ),
            "attention": self.attention,
            "attention_options": dict(self.attention_options),
            "feedforward": self.feedforward,
            "feedforward_options": dict(self.feedforward_options),
        }


@keras.saving.register_keras_serializable(package="tfsuite")
class TransformerCausalLM(_TokenModel):
    """Decoder-only causal language model (chapter 5 decoder stack, GPT of section 6.2).

    ``logits = LN(Decoder^L(Embed(tokens) + PE)) E^T``: ``num_layers``
    ``TransformerDecoderLayer``s without cross-attention, causal self-attention.
    Pre-LN with a final layer norm (GPT-2) by default; ``normalize_first=False``
    gives the post-LN GPT of the original paper.

    Args:
        vocab_size: int, number of token ids.
        max_length: int, longest sequence (positions of the learned embedding,
            and the default KV-cache length).
        num_layers: int, number of decoder layers. Default 2.
        hidden_dim: int, ``d_model``. Default 32.
        num_heads: int, attention heads; must divide ``hidden_dim``. Default 2.
        intermediate_dim: int or None, FFN width; None means ``4 * hidden_dim``.
        dropout: float in [0, 1). Default 0.
        activation: str, FFN activation. Default ``"gelu"`` (GPT-2).
        normalize_first: bool, pre-LN (GPT-2) or post-LN. Default True.
        position_encoding: ``"learned"`` (default, GPT) or ``"sinusoidal"``.
        tie_embeddings: bool, output projection is the transposed token
            embedding. Default True.
        layer_norm_epsilon: float > 0. Default ``1e-5``.
        activation_dropout: float or None, dropout on the FFN hidden
            activations; None uses ``dropout``. GPT-2 has none (0.0). Default None.
        kernel_initializer: initializer of every layer kernel (and an untied
            ``lm_head``). Default ``"glorot_uniform"``; the embeddings are
            always ``N(0, 0.02)``.
        output_kernel_initializer: initializer of the kernels that write onto
            the residual stream (attention ``W_O``, FFN ``W_2``), or None for
            ``kernel_initializer``. Default None. ``layers.gpt.gpt2`` sets
            GPT-2's ``N(0, 0.02 / sqrt(2 * num_layers))``.
        attention, attention_options, feedforward, feedforward_options: the
            self-attention (``"full"`` or a section 7.1 one) and the FFN
            (``"dense"`` or section 7.4's ``"switch"``) of every layer, as
            ``TransformerDecoderLayer`` takes them. An efficient attention
            trains and scores whole sequences; KV-cache decoding needs ``"full"``.

    Call arguments:
        token_ids: int ``(batch, T)``.
        padding_mask: bool ``(batch, T)`` or None, True for real tokens.

    Output: logits ``(batch, T, vocab_size)``.

    Example:
    >>> lm = TransformerCausalLM(vocab_size=100, max_length=32)
    >>> lm(np.ones((2, 8), "int32")).shape
    (2, 8, 100)
    """

    is_encoder_decoder = False

    def __init__(
        self,
        vocab_size,
        max_length,
        num_layers=2,
        hidden_dim=32,
        num_heads=2,
        intermediate_dim=None,
        dropout=0.0,
        activation="gelu",
        normalize_first=True,
        position_encoding="learned",
        tie_embeddings=True,
        layer_norm_epsilon=1e-5,
        activation_dropout=None,
        kernel_initializer="glorot_uniform",
        output_kernel_initializer=None,
        attention="full",
        attention_options=None,
        feedforward="dense",
        feedforward_options=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.vocab_size = check_positive_int("TransformerCausalLM vocab_size", vocab_size)
        self.num_layers = check_positive_int("TransformerCausalLM num_layers", num_layers)
        self._init_common(
            max_length, hidden_dim, num_heads, intermediate_dim, dropout, activation, normalize_first,
            position_encoding, tie_embeddings, layer_norm_epsilon, activation_dropout,
            kernel_initializer, output_kernel_initializer, attention, attention_options, feedforward,
            feedforward_options,
        )
        self.position_embedding = self._position_layer("position_embedding")
        self.embeddings_dropout = Dropout(self.dropout) if self.dropout else None
        self.decoder_layers = [
            TransformerDecoderLayer(**self._layer_kwargs, **self._layer_initializers(), name=f"decoder_layer_{i}")
            for i in range(self.num_layers)
        ]
        self.final_layer_norm = (
            LayerNormalization(epsilon=self.layer_norm_epsilon, name="final_layer_norm")
            if self.normalize_first else None
        )
        self.lm_head = None if self.tie_embeddings else self._dense(self.vocab_size, "lm_head")

    def build(self, input_shape=None):
        self.token_embeddings = self._embedding_weight("token_embeddings", self.vocab_size)
        sequence = (None, None, self.hidden_dim)
        self.position_embedding.build(sequence)
        for layer in self.decoder_layers:
            layer.build(sequence)
        for layer in (self.final_layer_norm, self.lm_head):
            if layer is not None:
                layer.build(sequence)

    def call(self, token_ids, padding_mask=None, training=None):
        _check_token_ids("TransformerCausalLM", token_ids)
        x = self._embed(self.token_embeddings, self.position_embedding, self.embeddings_dropout, token_ids, 0, training)
        for layer in self.decoder_layers:
            x = layer(x, decoder_padding_mask=padding_mask, training=training)
        return self._logits(x, self.token_embeddings, self.final_layer_norm, self.lm_head)

    def build_cache(self, batch_size, cache_length=None, encoder_outputs=None):
        """Zero ``((key, value), ...)`` per layer, each ``(batch, heads, cache_length, head_dim)``."""
        if encoder_outputs is not None:
            raise ValueError("TransformerCausalLM has no encoder: build_cache takes no encoder_outputs")
        cache_length = self.max_length if cache_length is None else cache_length
        return tuple(layer.self_attention.empty_cache(batch_size, cache_length) for layer in self.decoder_layers)

    def call_with_cache(self, token_ids, cache, cache_index):
        """Logits of ``token_ids`` placed at ``cache_index`` and the updated cache."""
        x = self._embed(self.token_embeddings, self.position_embedding, None, token_ids, cache_index, False)
        new_cache = []
        for layer, layer_cache in zip(self.decoder_layers, cache):
            x, layer_cache = layer(x, self_attention_cache=layer_cache, cache_index=cache_index)
            new_cache.append(layer_cache)
        return self._logits(x, self.token_embeddings, self.final_layer_norm, self.lm_head), tuple(new_cache)

    def generation_logits(self, token_ids, context=None):
        """Logits of the whole sequence, recomputed from scratch (no cache)."""
        return self(token_ids)

    def reorder_cache(self, cache, rows):
        """The cache with its batch rows taken from ``rows`` (beam search)."""
        return take_rows(cache, rows)

    def select_rows(self, cache, rows):
        """The cache of the rows ``rows`` only (the generator drops finished prompts)."""
        return take_rows(cache, rows)

    def get_config(self):
        return {
            **super().get_config(),
            "vocab_size": self.vocab_size,
            "num_layers": self.num_layers,
            **self._common_config(),
        }


ENCODER_INPUTS = ("tokens", "features", "image")


def image_patches(images, patch_size):
    """``(batch, H, W, C)`` pixels -> ``(batch, (H/p)(W/p), p*p*C)`` non-overlapping patches, row-major.

    Reshape and transpose only (TFLite built-ins); ``H`` and ``W`` must be
    multiples of ``patch_size``.
    """
    height, width, channels = images.shape[1], images.shape[2], images.shape[3]
    if None in (height, width, channels) or height % patch_size or width % patch_size:
        raise ValueError(
            f"images must have a known (height, width, channels), both sides multiples of patch_size={patch_size}; "
            f"got shape {tuple(images.shape)}"
        )
    rows, cols = height // patch_size, width // patch_size
    x = ops.reshape(images, (-1, rows, patch_size, cols, patch_size, channels))
    x = ops.transpose(x, (0, 1, 3, 2, 4, 5))
    return ops.reshape(x, (-1, rows * cols, patch_size * patch_size * channels))


@keras.saving.register_keras_serializable(package="tfsuite")
class Transformer(_TokenModel):
    """Section 5.1, the encoder-decoder Transformer (Vaswani et al., 2017).

    ``enc = Encoder^N(Embed(src) + PE)``,
    ``logits = Decoder^N(Embed(tgt) + PE, enc) E^T``: post-LN layers, sinusoidal
    position encoding and ReLU FFN by default, as in the paper.

    The encoder reads what ``encoder_input`` says, so one model and one
    generation engine serve text, images and audio features:

    - ``"tokens"``: int ids ``(batch, S)``, embedded (translation, summarization);
    - ``"features"``: float vectors ``(batch, S, encoder_feature_dim)``,
      projected to ``d_model`` (log-mel frames, any precomputed features);
    - ``"image"``: pixels ``(batch, H, W, C)``, cut into ``patch_size`` squares
      that are flattened and projected (the patch embedding of ViT, section 7.2);
      with ``image_backbone`` the "patches" are instead the cells of a CNN
      feature map (ViT's hybrid architecture, section 7.2: the section 2.3
      residual stages of ``layers.detr.DETRBackbone``, output stride
      ``2^(1 + stages)``), which learns from far fewer images than raw patches.

    Args:
        encoder_vocab_size: int, source vocabulary size (None unless ``encoder_input="tokens"``).
        decoder_vocab_size: int, target vocabulary size.
        max_length: int, longest source or target sequence (learned position
            embedding size and the default KV-cache length).
        num_encoder_layers, num_decoder_layers: ints. Default 2 each.
        hidden_dim: int, ``d_model``. Default 32.
        num_heads: int; must divide ``hidden_dim``. Default 2.
        intermediate_dim: int or None, FFN width; None means ``4 * hidden_dim``.
        dropout: float in [0, 1). Default 0.
        activation: str, FFN activation. Default ``"relu"``.
        normalize_first: bool, pre-LN (with final layer norms) instead of
            post-LN. Default False.
        position_encoding: ``"sinusoidal"`` (default) or ``"learned"``.
        tie_embeddings: bool, output projection is the transposed decoder
            embedding. Default True.
        layer_norm_epsilon: float > 0. Default ``1e-5``.
        activation_dropout: float or None, dropout on the FFN hidden
            activations; None uses ``dropout``. Default None.
        kernel_initializer, output_kernel_initializer: as ``TransformerCausalLM``
            (``kernel_initializer`` also for ``encoder_projection``).
        attention, attention_options, feedforward, feedforward_options: as
            ``TransformerCausalLM``, for the encoder and decoder layers alike
            (cross-attention stays full; Linformer is encoder-only, so it is
            refused here, where the decoder would need it causal).
        share_embeddings: bool, one embedding matrix for source and target
            tokens (a joint vocabulary; with ``tie_embeddings`` also the output
            projection: the three-way tying of Press & Wolf 2017). Default False.
        encoder_input: ``"tokens"`` (default), ``"features"`` or ``"image"``.
        encoder_feature_dim: int, feature size for ``"features"``; channels
            for ``"image"`` (default 3).
        patch_size: int, patch side for ``"image"`` (without ``image_backbone``).
        image_backbone: tuple of ints or None, channels per residual stage of
            the CNN that turns ``"image"`` pixels into the encoder sequence
            (one basic block per stage). Default None (linear patch embedding).

    Call arguments:
        inputs: ``[encoder_inputs, decoder_token_ids (batch, T)]``, or the
            pipeline's dict ``{"encoder_inputs", "decoder_token_ids"}`` with
            optional ``"encoder_padding_mask"`` / ``"decoder_padding_mask"``.
        encoder_padding_mask: bool ``(batch, S)`` or None.
        decoder_padding_mask: bool ``(batch, T)`` or None.

    Output: logits ``(batch, T, decoder_vocab_size)``.

    Example:
    >>> model = Transformer(encoder_vocab_size=50, decoder_vocab_size=60, max_length=16)
    >>> model([np.ones((2, 10), "int32"), np.ones((2, 7), "int32")]).shape
    (2, 7, 60)
    >>> captioner = Transformer(None, 60, 32, encoder_input="image", patch_size=4)
    >>> captioner([np.zeros((2, 16, 16, 3), "float32"), np.ones((2, 7), "int32")]).shape
    (2, 7, 60)
    >>> hybrid = Transformer(None, 60, 32, encoder_input="image", image_backbone=(8, 16))
    >>> tuple(hybrid.encode(np.zeros((2, 32, 32, 3), "float32"))[0].shape)   # stride 8: a 4 x 4 grid
    (2, 16, 32)
    """

    is_encoder_decoder = True

    def __init__(
        self,
        encoder_vocab_size,
        decoder_vocab_size,
        max_length,
        num_encoder_layers=2,
        num_decoder_layers=2,
        hidden_dim=32,
        num_heads=2,
        intermediate_dim=None,
        dropout=0.0,
        activation="relu",
        normalize_first=False,
        position_encoding="sinusoidal",
        tie_embeddings=True,
        layer_norm_epsilon=1e-5,
        activation_dropout=None,
        share_embeddings=False,
        encoder_input="tokens",
        encoder_feature_dim=None,
        patch_size=None,
        image_backbone=None,
        kernel_initializer="glorot_uniform",
        output_kernel_initializer=None,
        attention="full",
        attention_options=None,
        feedforward="dense",
        feedforward_options=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.encoder_input = check_choice("Transformer encoder_input", encoder_input, ENCODER_INPUTS)
        tokens = self.encoder_input == "tokens"
        self.encoder_vocab_size = (
            check_positive_int("Transformer encoder_vocab_size", encoder_vocab_size) if tokens else None
        )
        self.decoder_vocab_size = check_positive_int("Transformer decoder_vocab_size", decoder_vocab_size)
        self.vocab_size = self.decoder_vocab_size
        self.num_encoder_layers = check_positive_int("Transformer num_encoder_layers", num_encoder_layers)
        self.num_decoder_layers = check_positive_int("Transformer num_decoder_layers", num_decoder_layers)
        self.share_embeddings = bool(share_embeddings)
        if self.share_embeddings and self.encoder_vocab_size != self.decoder_vocab_size:
            raise ValueError(
                f"Transformer share_embeddings needs one vocabulary for both sides, got encoder_vocab_size="
                f"{encoder_vocab_size} and decoder_vocab_size={decoder_vocab_size}"
            )
        self.patch_size = None
        self.encoder_feature_dim = None
        self.image_backbone = None
        if self.encoder_input == "features":
            if encoder_feature_dim is None:
                raise ValueError("Transformer encoder_input='features' needs encoder_feature_dim")
            self.encoder_feature_dim = check_positive_int("Transformer encoder_feature_dim", encoder_feature_dim)
        elif self.encoder_input == "image":
            if image_backbone is not None:
                self.image_backbone = tuple(
                    check_positive_int("Transformer image_backbone entry", f) for f in image_backbone
                )
                if not self.image_backbone:
                    raise ValueError("Transformer image_backbone needs at least one stage width")
            elif patch_size is None:
                raise ValueError("Transformer encoder_input='image' needs patch_size (or image_backbone)")
            else:
                self.patch_size = check_positive_int("Transformer patch_size", patch_size)
            self.encoder_feature_dim = check_positive_int(
                "Transformer encoder_feature_dim (image channels)", encoder_feature_dim or 3
            )
        self._init_common(
            max_length, hidden_dim, num_heads, intermediate_dim, dropout, activation, normalize_first,
            position_encoding, tie_embeddings, layer_norm_epsilon, activation_dropout,
            kernel_initializer, output_kernel_initializer, attention, attention_options, feedforward,
            feedforward_options,
        )
        self.encoder_position = self._position_layer("encoder_position")
        self.decoder_position = self._position_layer("decoder_position")
        self.encoder_dropout = Dropout(self.dropout) if self.dropout else None
        self.decoder_dropout = Dropout(self.dropout) if self.dropout else None
        self.encoder_projection = None if tokens else self._dense(self.hidden_dim, "encoder_projection")
        self.backbone = None
        if self.image_backbone:
            self.backbone = DETRBackbone(self.image_backbone, blocks_per_stage=1, name="image_backbone")
        self.encoder_layers = [
            TransformerEncoderLayer(**self._layer_kwargs, **self._layer_initializers(), name=f"encoder_layer_{i}")
            for i in range(self.num_encoder_layers)
        ]
        self.decoder_layers = [
            TransformerDecoderLayer(**self._layer_kwargs, **self._layer_initializers(), name=f"decoder_layer_{i}")
            for i in range(self.num_decoder_layers)
        ]
        norm = lambda name: LayerNormalization(epsilon=self.layer_norm_epsilon, name=name)  # noqa: E731
        self.encoder_final_norm = norm("encoder_final_norm") if self.normalize_first else None
        self.decoder_final_norm = norm("decoder_final_norm") if self.normalize_first else None
        self.lm_head = None if self.tie_embeddings else self._dense(self.decoder_vocab_size, "lm_head")

    def build(self, input_shape=None):
        self.decoder_embeddings = self._embedding_weight("decoder_embeddings", self.decoder_vocab_size)
        if self.encoder_input == "tokens":
            self.encoder_embeddings = (
                self.decoder_embeddings if self.share_embeddings
                else self._embedding_weight("encoder_embeddings", self.encoder_vocab_size)
            )
        elif self.backbone is not None:
            self.backbone.build((None, None, None, self.encoder_feature_dim))
            self.encoder_projection.build((None, None, self.image_backbone[-1]))
        else:
            patch = self.patch_size or 1
            self.encoder_projection.build((None, None, patch * patch * self.encoder_feature_dim))
        sequence = (None, None, self.hidden_dim)
        self.encoder_position.build(sequence)
        self.decoder_position.build(sequence)
        for layer in self.encoder_layers:
            layer.build(sequence)
        for layer in self.decoder_layers:
            layer.build([sequence, sequence])
        for layer in (self.encoder_final_norm, self.decoder_final_norm, self.lm_head):
            if layer is not None:
                layer.build(sequence)

    # -- encoder ------------------------------------------------------------------------------

    def encode(self, encoder_inputs, encoder_padding_mask=None, training=None):
        """The encoder: ``encoder_inputs`` -> ``(sequence (batch, S, hidden_dim), padding_mask (batch, S))``.

        ``encoder_inputs`` is what ``encoder_input`` names (token ids, feature
        vectors or pixels), or a dict holding it as ``"encoder_inputs"`` and
        optionally ``"encoder_padding_mask"`` (the training batch's features
        fit). Without a mask every position is real.
        """
        if not self.built:
            self.build()
        if isinstance(encoder_inputs, dict):
            if "encoder_inputs" not in encoder_inputs:
                raise ValueError(
                    f"Transformer.encode expects a dict with 'encoder_inputs', got keys {sorted(encoder_inputs)}"
                )
            encoder_padding_mask = encoder_inputs.get("encoder_padding_mask", encoder_padding_mask)
            encoder_inputs = encoder_inputs["encoder_inputs"]
        if self.encoder_input == "tokens":
            _check_token_ids("Transformer", encoder_inputs, "encoder token ids")
            x = ops.take(self.encoder_embeddings, ops.cast(encoder_inputs, "int32"), axis=0)
        elif self.encoder_input == "features":
            check_rank("Transformer encoder features", encoder_inputs.shape, 3, "(batch, time, features)")
            x = self.encoder_projection(encoder_inputs)
        else:
            check_rank("Transformer encoder images", encoder_inputs.shape, 4, "(batch, height, width, channels)")
            pixels = ops.cast(encoder_inputs, self.compute_dtype)
            if self.backbone is not None:
                grid = self.backbone(pixels, training=training)
                x = self.encoder_projection(ops.reshape(grid, (ops.shape(grid)[0], -1, self.image_backbone[-1])))
            else:
                x = self.encoder_projection(image_patches(pixels, self.patch_size))
        if encoder_padding_mask is None:
            encoder_padding_mask = ops.ones(ops.shape(x)[:2], "bool")
        encoder_padding_mask = ops.cast(encoder_padding_mask, "bool")
        x = x + self.encoder_position(x, start_index=0)
        if self.encoder_dropout is not None:
            x = self.encoder_dropout(x, training=training)
        for layer in self.encoder_layers:
            x = layer(x, padding_mask=encoder_padding_mask, training=training)
        x = x if self.encoder_final_norm is None else self.encoder_final_norm(x)
        return x, encoder_padding_mask

    # -- decoder ------------------------------------------------------------------------------

    def decoder_hidden(self, decoder_token_ids, encoder_outputs, decoder_padding_mask=None, training=None):
        """The decoder stack's output ``(batch, T, hidden_dim)`` before the final norm and the output projection."""
        _check_token_ids(type(self).__name__, decoder_token_ids, "decoder_token_ids")
        encoded, encoder_padding_mask = encoder_outputs
        x = self._embed(
            self.decoder_embeddings, self.decoder_position, self.decoder_dropout, decoder_token_ids, 0, training
        )
        for layer in self.decoder_layers:
            x = layer(
                [x, encoded], decoder_padding_mask=decoder_padding_mask,
                encoder_padding_mask=encoder_padding_mask, training=training,
            )
        return x

    def decode(self, decoder_token_ids, encoder_outputs, decoder_padding_mask=None, training=None):
        """Decoder logits ``(batch, T, vocab)`` of ``decoder_token_ids`` over :meth:`encode`'s ``(sequence, mask)``."""
        x = self.decoder_hidden(decoder_token_ids, encoder_outputs, decoder_padding_mask, training)
        return self._logits(x, self.decoder_embeddings, self.decoder_final_norm, self.lm_head)

    def call(self, inputs, encoder_padding_mask=None, decoder_padding_mask=None, training=None):
        encoder_inputs, decoder_token_ids, decoder_padding_mask = unpack_seq2seq_inputs(
            "Transformer", inputs, decoder_padding_mask
        )
        encoded = self.encode(encoder_inputs, encoder_padding_mask, training=training)
        return self.decode(decoder_token_ids, encoded, decoder_padding_mask, training=training)

    # -- generation (layers/generation.py) ------------------------------------------------------

    def build_cache(self, batch_size, cache_length=None, encoder_outputs=None):
        """``(self_caches, cross_caches, encoder_padding_mask)`` for :meth:`call_with_cache`.

        ``encoder_outputs`` is :meth:`encode`'s ``(sequence, mask)``; its
        sequence is projected once into every decoder layer's cross-attention
        keys and values.
        """
        if encoder_outputs is None:
            raise ValueError("Transformer.build_cache needs encoder_outputs: (sequence, mask) from encode()")
        encoded, encoder_padding_mask = encoder_outputs
        cache_length = self.max_length if cache_length is None else cache_length
        self_caches = tuple(layer.self_attention.empty_cache(batch_size, cache_length) for layer in self.decoder_layers)
        cross_caches = tuple(layer.cross_attention.compute_key_value(encoded) for layer in self.decoder_layers)
        return self_caches, cross_caches, ops.cast(encoder_padding_mask, "bool")

    def call_with_cache(self, token_ids, cache, cache_index):
        """Decoder logits of ``token_ids`` placed at ``cache_index`` and the updated cache."""
        self_caches, cross_caches, encoder_padding_mask = cache
        x = self._embed(self.decoder_embeddings, self.decoder_position, None, token_ids, cache_index, False)
        new_self = []
        for layer, self_cache, cross_cache in zip(self.decoder_layers, self_caches, cross_caches):
            x, self_cache = layer(
                x, encoder_padding_mask=encoder_padding_mask, self_attention_cache=self_cache,
                cache_index=cache_index, cross_attention_cache=cross_cache,
            )
            new_self.append(self_cache)
        logits = self._logits(x, self.decoder_embeddings, self.decoder_final_norm, self.lm_head)
        return logits, (tuple(new_self), cross_caches, encoder_padding_mask)

    def reorder_cache(self, cache, rows):
        """Self-attention caches re-gathered by ``rows`` (beam search).

        The cross-attention part is left alone: beams of one prompt share the
        same encoder output, so gathering it would only copy.
        """
        self_caches, cross_caches, encoder_padding_mask = cache
        return take_rows(self_caches, rows), cross_caches, encoder_padding_mask

    def select_rows(self, cache, rows):
        """The whole cache (cross-attention and encoder mask included) of the rows ``rows`` only."""
        self_caches, cross_caches, encoder_padding_mask = cache
        return take_rows(self_caches, rows), take_rows(cross_caches, rows), ops.take(encoder_padding_mask, rows, axis=0)

    def generation_logits(self, token_ids, context):
        """Decoder logits of the whole sequence without a cache; ``context`` is :meth:`encode`'s output."""
        return self.decode(token_ids, context)

    def get_config(self):
        return {
            **super().get_config(),
            "encoder_vocab_size": self.encoder_vocab_size,
            "decoder_vocab_size": self.decoder_vocab_size,
            "num_encoder_layers": self.num_encoder_layers,
            "num_decoder_layers": self.num_decoder_layers,
            "share_embeddings": self.share_embeddings,
            "encoder_input": self.encoder_input,
            "encoder_feature_dim": self.encoder_feature_dim,
            "patch_size": self.patch_size,
            "image_backbone": list(self.image_backbone) if self.image_backbone else None,
            **self._common_config(),
        }


def copy_gpt2_weights(backbone, lm):
    """Copy a ``keras_hub.models.GPT2Backbone``'s weights into a ``TransformerCausalLM``.

    The two are the same network when ``lm`` has GPT-2's defaults (pre-LN,
    ``"gelu"``, learned positions, tied embeddings) and the same sizes; used
    for parity tests and to benchmark both on identical weights.
    """
    if lm.num_layers != backbone.num_layers or lm.hidden_dim != backbone.hidden_dim:
        raise ValueError(
            f"GPT2Backbone has {backbone.num_layers} layers of width {backbone.hidden_dim}, the LM has "
            f"{lm.num_layers} of width {lm.hidden_dim}"
        )
    gpt2_like = lm.normalize_first and lm.tie_embeddings and lm.position_encoding == "learned"
    if not gpt2_like or lm.activation != "gelu":
        raise ValueError(
            "copy_gpt2_weights needs a GPT-2 style TransformerCausalLM (normalize_first=True, "
            "tie_embeddings=True, position_encoding='learned', activation='gelu')"
        )
    if not lm.built:
        lm.build()
    lm.token_embeddings.assign(backbone.token_embedding.embeddings)
    lm.position_embedding.set_weights(backbone.position_embedding.get_weights())
    for theirs, ours in zip(backbone.transformer_layers, lm.decoder_layers):
        ours.self_attention.set_weights(theirs._self_attention_layer.get_weights())
        ours.self_attention_layer_norm.set_weights(theirs._self_attention_layer_norm.get_weights())
        ours.feedforward.intermediate_dense.set_weights(theirs._feedforward_intermediate_dense.get_weights())
        ours.feedforward.output_dense.set_weights(theirs._feedforward_output_dense.get_weights())
        ours.feedforward_layer_norm.set_weights(theirs._feedforward_layer_norm.get_weights())
    lm.final_layer_norm.set_weights(backbone.layer_norm.get_weights())
