"""Section 9.1, CLIP (Radford et al., 2021): an image encoder and a text encoder trained to agree.

Two encoders map an image ``I`` and a caption ``T`` into one ``E``-dimensional
space, where the pairs of a batch are scored by cosine similarity (the paper's
figure 3):

    I_e = normalize(f_image(I) W_i)            W_i: (d_image, E), no bias
    T_e = normalize(f_text(T) W_t)             W_t: (d_text, E), no bias
    logits = exp(t) I_e T_e^T                  (batch, batch), t = logit_scale
    L = (CE(logits, arange(B)) + CE(logits^T, arange(B))) / 2

The ``i``-th image and ``i``-th caption are the positive pair; the other
``B - 1`` captions of the batch are the negatives of image ``i`` and vice
versa (symmetric InfoNCE, :func:`clip_loss`). The temperature is learned as
``t = log(1 / tau)``, started at ``tau = 0.07`` and clipped to
``[0, log 100]`` so the logits are never scaled by more than 100 (CLIP
clamps the parameter after every step; here a weight constraint does that
and the forward pass clips too, so a value loaded or assigned above the cap
also gives at most 100).

- :class:`CLIPTextEncoder`: token + learned position embeddings, pre-LN
  encoder layers of chapter 5 (``TransformerEncoderLayer(normalize_first=True)``)
  with CLIP's causal self-attention, a final layer norm, the hidden state at
  the end-of-text token (the last real token of the padding mask) and ``W_t``.
- :class:`CLIPImageEncoder`: our ViT (:class:`layers.vision_transformer.VisionTransformer`,
  the class token after the final LN) or any Keras image model returning a
  vector, and ``W_i``.
- :class:`CLIP`: both encoders, L2 normalisation and the learned
  ``logit_scale``; ``encode_image`` / ``encode_text`` for retrieval.
- :func:`clip_loss` and :class:`CLIPLoss` (its ``model.compile`` form). The
  loss lives here, next to the model whose logits matrix it reads, because
  ``apps/losses.py`` holds the token losses shared by the generative apps and
  BERT's heads are trained with Keras' built-in cross-entropy.

Differences from OpenAI's CLIP, none of which changes the method: the MLP
uses the exact GELU instead of QuickGELU ``x sigmoid(1.702 x)`` (our
Transformer layers do not offer it), and our ViT has no ``ln_pre`` after the
patch embedding. The text side equals ``keras_hub.models.CLIPTextEncoder`` +
``CLIPTextPooler`` + ``text_projection`` with copied weights
(``tests/layers/test_clip.py``).

Example::

    model = clip_model((16, 16, 3), patch_size=4, vocabulary_size=20, sequence_length=5, embed_dim=16,
                       hidden_dim=16, num_layers=1, num_heads=2)
    model.compile("adam", loss={"logits_per_image": CLIPLoss()})
    model.fit({"images": x, "token_ids": ids, "padding_mask": mask}, {"logits_per_image": np.zeros(len(x))},
              batch_size=64)
"""

import math

import keras
from keras import ops

from layers.dropout import Dropout
from layers.normalization import LayerNormalization
from layers.perceptron import Dense
from layers.position_encoding import LearnedPositionEmbedding
from layers.transformer import TransformerEncoderLayer, head_size
from layers.validation import check_choice, check_positive_float, check_positive_int, check_rank
from layers.vision_transformer import VisionTransformer

__all__ = ["CLIP", "CLIPImageEncoder", "CLIPLoss", "CLIPTextEncoder", "LogitScaleClip", "clip_loss", "clip_model",
           "l2_normalize"]

_ACTIVATIONS = ("gelu", "gelu_exact")
_IMAGE_LAYOUT = "(batch, height, width, channels)"


def _normal(stddev):
    return keras.initializers.RandomNormal(stddev=stddev)


def l2_normalize(x):
    """``x / ||x||_2`` along the last axis (0 stays 0)."""
    return x * ops.rsqrt(ops.maximum(ops.sum(ops.square(x), axis=-1, keepdims=True), 1e-12))


def _projection(embed_dim, width):
    # CLIP initialises both projections with N(0, width^-1/2), so the projected
    # features start with unit-order norms whatever the encoder width.
    return Dense(embed_dim, use_bias=False, kernel_initializer=_normal(width ** -0.5), name="projection")


def _deserialize(value):
    return keras.saving.deserialize_keras_object(value) if isinstance(value, dict) else value


@keras.saving.register_keras_serializable(package="tfsuite")
class CLIPTextEncoder(keras.Model):
    """Section 9.1, CLIP's text encoder: ``f_text(T) W_t``, the end-of-text hidden state projected to ``E``.

    ``h_0 = E_token[x] + E_pos``; ``num_layers`` pre-LN blocks
    ``h' = h + MSA(LN(h))``, ``h = h' + MLP(LN(h'))``; ``LN(h_L)`` read at the
    end-of-text position ``e`` (the last position where ``padding_mask`` is
    True: captions are ``... [EOT]`` then padding), times ``W_t``. As in CLIP
    the self-attention is causal, so position ``e`` has seen the whole caption
    and nothing after it. Why the end token and not the mean of the tokens: it
    is the paper's choice (the "[EOS] token ... treated as the feature
    representation of the text"), and under a causal mask it is the only
    position that sees every token.

    Args:
        vocabulary_size: int, rows of the token table.
        sequence_length: int, rows of the position table (77 in CLIP).
        num_layers: int. num_heads: int, must divide ``hidden_dim``.
        hidden_dim: int, the width ``d``. intermediate_dim: int, the MLP width (``4 d``).
        embed_dim: int, ``E``, the joint embedding width.
        dropout: float in [0, 1). Default 0 (CLIP uses none).
        activation: ``"gelu_exact"`` (default) or ``"gelu"`` (tanh approximation).
        layer_norm_epsilon: float. Default ``1e-5`` (CLIP's).
        use_causal_mask: bool. Default True (CLIP); False for bidirectional attention.

    Call arguments:
        inputs: dict ``{"token_ids": int (batch, T), "padding_mask": (batch, T)}``
            (mask True/1 for real tokens, optional: default all real, the feature
            is then read at ``T - 1``), or the list ``[token_ids, padding_mask]``.

    Returns: ``(batch, embed_dim)``, not normalised.

    Example:
    >>> encoder = CLIPTextEncoder(20, 8, num_layers=1, num_heads=2, hidden_dim=16, intermediate_dim=32, embed_dim=8)
    >>> mask = np.array([[1] * 5, [1, 1, 1, 0, 0]])
    >>> tuple(encoder({"token_ids": np.ones((2, 5), "int32"), "padding_mask": mask}).shape)
    (2, 8)
    """

    def __init__(
        self,
        vocabulary_size,
        sequence_length,
        num_layers,
        num_heads,
        hidden_dim,
        intermediate_dim,
        embed_dim,
        dropout=0.0,
        activation="gelu_exact",
        layer_norm_epsilon=1e-5,
        use_causal_mask=True,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.vocabulary_size = check_positive_int("CLIPTextEncoder vocabulary_size", vocabulary_size)
        self.sequence_length = check_positive_int("CLIPTextEncoder sequence_length", sequence_length)
        self.num_layers = check_positive_int("CLIPTextEncoder num_layers", num_layers)
        self.num_heads = check_positive_int("CLIPTextEncoder num_heads", num_heads)
        self.hidden_dim = check_positive_int("CLIPTextEncoder hidden_dim", hidden_dim)
        head_size("CLIPTextEncoder", self.hidden_dim, self.num_heads)
        self.intermediate_dim = check_positive_int("CLIPTextEncoder intermediate_dim", intermediate_dim)
        self.embed_dim = check_positive_int("CLIPTextEncoder embed_dim", embed_dim)
        self.dropout = check_positive_float("CLIPTextEncoder dropout", dropout, allow_zero=True)
        self.activation = check_choice("CLIPTextEncoder activation", activation, _ACTIVATIONS)
        self.layer_norm_epsilon = check_positive_float("CLIPTextEncoder layer_norm_epsilon", layer_norm_epsilon)
        self.use_causal_mask = bool(use_causal_mask)
        self.position_embedding = LearnedPositionEmbedding(
            self.sequence_length, initializer=_normal(0.01), name="position_embedding"
        )
        self.embeddings_dropout = Dropout(self.dropout, name="embeddings_dropout") if self.dropout else None
        self.transformer_layers = [
            TransformerEncoderLayer(
                self.intermediate_dim, self.num_heads, dropout=self.dropout, activation=self.activation,
                layer_norm_epsilon=self.layer_norm_epsilon, normalize_first=True, name=f"transformer_layer_{i}",
            )
            for i in range(self.num_layers)
        ]
        self.layer_norm = LayerNormalization(epsilon=self.layer_norm_epsilon, name="layer_norm")
        self.projection = _projection(self.embed_dim, self.hidden_dim)

    def build(self, input_shape=None):
        shape = (None, None, self.hidden_dim)
        self.token_embeddings = self.add_weight(
            name="token_embeddings", shape=(self.vocabulary_size, self.hidden_dim), initializer=_normal(0.02)
        )
        self.position_embedding.build((None, self.sequence_length, self.hidden_dim))
        for layer in self.transformer_layers:
            layer.build(shape)
        self.layer_norm.build(shape)
        self.projection.build((None, self.hidden_dim))
        self.built = True

    def _unpack(self, inputs):
        if isinstance(inputs, (list, tuple)) and 1 <= len(inputs) <= 2:
            inputs = dict(zip(("token_ids", "padding_mask"), inputs))
        if not isinstance(inputs, dict) or "token_ids" not in inputs:
            raise ValueError(
                "CLIPTextEncoder expects a dict with 'token_ids' (batch, T) and optionally 'padding_mask' "
                f"(or a list [token_ids, padding_mask]); got {type(inputs).__name__}"
            )
        token_ids, padding_mask = inputs["token_ids"], inputs.get("padding_mask")
        check_rank("CLIPTextEncoder token_ids", token_ids.shape, 2, "(batch, time)")
        if padding_mask is not None and tuple(padding_mask.shape) != tuple(token_ids.shape):
            raise ValueError(
                f"CLIPTextEncoder padding_mask must have the shape of token_ids {tuple(token_ids.shape)}, "
                f"got {tuple(padding_mask.shape)}"
            )
        return ops.cast(token_ids, "int32"), None if padding_mask is None else ops.cast(padding_mask, "bool")

    def call(self, inputs, training=None):
        token_ids, padding_mask = self._unpack(inputs)
        x = ops.take(self.token_embeddings, token_ids, axis=0)
        x = x + self.position_embedding(x)
        if self.embeddings_dropout is not None:
            x = self.embeddings_dropout(x, training=training)
        positions = ops.arange(ops.shape(token_ids)[1], dtype="int32")
        causal = None
        if self.use_causal_mask:
            causal = ops.greater_equal(ops.expand_dims(positions, 1), ops.expand_dims(positions, 0))
        for layer in self.transformer_layers:
            x = layer(x, padding_mask=padding_mask, attention_mask=causal, training=training)
        x = self.layer_norm(x)
        if padding_mask is None:
            pooled = x[:, -1, :]
        else:
            # The last real position: argmax of (position + 1) where real, 0 where padding.
            end = ops.argmax(ops.where(padding_mask, positions + 1, 0), axis=-1)
            index = ops.expand_dims(ops.expand_dims(ops.cast(end, "int32"), -1), -1)
            pooled = ops.squeeze(ops.take_along_axis(x, index, axis=1), 1)
        return self.projection(pooled)

    def get_config(self):
        return {
            **super().get_config(),
            "vocabulary_size": self.vocabulary_size,
            "sequence_length": self.sequence_length,
            "num_layers": self.num_layers,
            "num_heads": self.num_heads,
            "hidden_dim": self.hidden_dim,
            "intermediate_dim": self.intermediate_dim,
            "embed_dim": self.embed_dim,
            "dropout": self.dropout,
            "activation": self.activation,
            "layer_norm_epsilon": self.layer_norm_epsilon,
            "use_causal_mask": self.use_causal_mask,
        }


@keras.saving.register_keras_serializable(package="tfsuite")
class CLIPImageEncoder(keras.Model):
    """Section 9.1, CLIP's image encoder: ``f_image(I) W_i``, a pooled image feature projected to ``E``.

    With a :class:`VisionTransformer` backbone ``f_image(I)`` is its
    ``pooled_output``, the class token after the final layer norm (CLIP's
    ``ln_post(x[:, 0])``). Any other Keras model works if it returns a vector
    ``(batch, d)`` or a dict with ``"pooled_output"`` (a CNN ending in global
    pooling: CLIP's ResNet variants use attention pooling there).

    Args:
        backbone: :class:`VisionTransformer` or a Keras image model with a known input shape.
        embed_dim: int, ``E``.

    Call arguments: ``images`` float ``(batch, H, W, C)``.

    Returns: ``(batch, embed_dim)``, not normalised.

    Example:
    >>> vit = VisionTransformer((16, 16, 3), 4, num_layers=1, num_heads=2, hidden_dim=16, mlp_dim=32)
    >>> tuple(CLIPImageEncoder(vit, embed_dim=8)(np.zeros((2, 16, 16, 3), "float32")).shape)
    (2, 8)
    """

    def __init__(self, backbone, embed_dim, **kwargs):
        super().__init__(**kwargs)
        backbone = _deserialize(backbone)
        if not isinstance(backbone, keras.layers.Layer):
            raise ValueError(
                f"CLIPImageEncoder needs a VisionTransformer or a Keras image model, got {type(backbone).__name__}"
            )
        self.backbone = backbone
        self.embed_dim = check_positive_int("CLIPImageEncoder embed_dim", embed_dim)

    @property
    def image_shape(self):
        """``(H, W, C)`` the backbone takes, or None when it does not say."""
        if isinstance(self.backbone, VisionTransformer):
            return tuple(self.backbone.image_shape)
        try:
            shape = self.backbone.input_shape
        except (AttributeError, ValueError):
            return None
        return tuple(shape[1:]) if isinstance(shape, tuple) and len(shape) == 4 else None

    def _features(self, output):
        if isinstance(output, dict):
            if "pooled_output" not in output:
                raise ValueError(
                    "CLIPImageEncoder: the backbone returned a dict without 'pooled_output' "
                    f"(keys {sorted(output)}); wrap it in a model that returns one vector per image"
                )
            output = output["pooled_output"]
        check_rank("CLIPImageEncoder backbone output", output.shape, 2, "(batch, features)")
        return output

    def build(self, input_shape=None):
        if input_shape is None or not isinstance(input_shape, (list, tuple)) or len(input_shape) != 4:
            if self.image_shape is None:
                raise ValueError(
                    "CLIPImageEncoder cannot tell the backbone's image shape; call it on images, or give a "
                    "backbone with a known input shape (a functional model or a VisionTransformer)"
                )
            input_shape = (None, *self.image_shape)
        check_rank("CLIPImageEncoder images", input_shape, 4, _IMAGE_LAYOUT)
        if isinstance(self.backbone, VisionTransformer):
            if not self.backbone.built:
                self.backbone.build()
            width = self.backbone.hidden_dim
        else:
            spec = self.backbone.compute_output_spec(keras.KerasTensor((None, *input_shape[1:])))
            width = self._features(spec).shape[-1]
        self.projection = _projection(self.embed_dim, width)
        self.projection.build((None, width))
        self.built = True

    def call(self, images, training=None):
        check_rank("CLIPImageEncoder images", images.shape, 4, _IMAGE_LAYOUT)
        return self.projection(self._features(self.backbone(images, training=training)))

    def get_config(self):
        return {
            **super().get_config(),
            "backbone": keras.saving.serialize_keras_object(self.backbone),
            "embed_dim": self.embed_dim,
        }


@keras.saving.register_keras_serializable(package="tfsuite")
class LogitScaleClip(keras.constraints.Constraint):
    """Section 9.1, CLIP's clamp of the learned temperature: ``t <- clip(t, min_value, max_value)`` after each step.

    Args:
        min_value: float. Default 0 (a scale of at least 1).
        max_value: float. Default ``log(100)``.
    """

    def __init__(self, min_value=0.0, max_value=math.log(100.0)):
        self.min_value = float(min_value)
        self.max_value = float(max_value)
        if self.min_value > self.max_value:
            raise ValueError(f"LogitScaleClip min_value {min_value} is above max_value {max_value}")

    def __call__(self, w):
        return ops.clip(w, self.min_value, self.max_value)

    def get_config(self):
        return {"min_value": self.min_value, "max_value": self.max_value}


@keras.saving.register_keras_serializable(package="tfsuite")
class CLIP(keras.Model):
    """Section 9.1, CLIP: ``logits = exp(t) normalize(f_image(I) W_i) normalize(f_text(T) W_t)^T``.

    Args:
        image_encoder: :class:`CLIPImageEncoder`.
        text_encoder: :class:`CLIPTextEncoder` with the same ``embed_dim``.
        temperature: float > 0, the initial ``tau``; ``logit_scale`` starts at
            ``log(1 / tau)``. Default 0.07 (CLIP).
        max_logit_scale: float >= 1, the largest ``exp(t)``. Default 100 (CLIP).

    Weights: both encoders' and the scalar ``logit_scale`` ``t``, trainable,
    kept in ``[0, log(max_logit_scale)]``.

    Call arguments:
        inputs: dict ``{"images": (B_i, H, W, C), "token_ids": int (B_t, T),
            "padding_mask": (B_t, T)}`` (mask optional) or the list
            ``[images, token_ids, padding_mask]``. Training pairs image ``i``
            with caption ``i`` (``B_i = B_t = B``).

    Returns: dict ``{"image_embeddings": (B_i, E), "text_embeddings": (B_t, E)}``
    (unit norm), ``"logits_per_image": (B_i, B_t)`` and ``"logits_per_text"``, its transpose.

    Example::

        model = CLIP(CLIPImageEncoder(vit, 64), CLIPTextEncoder(vocab, 32, 2, 2, 64, 256, 64))
        scores = model.encode_image(images) @ model.encode_text(token_ids, mask).T    # cosine similarities
    """

    def __init__(self, image_encoder, text_encoder, temperature=0.07, max_logit_scale=100.0, **kwargs):
        super().__init__(**kwargs)
        image_encoder, text_encoder = _deserialize(image_encoder), _deserialize(text_encoder)
        if not isinstance(image_encoder, CLIPImageEncoder):
            raise ValueError(f"CLIP needs a CLIPImageEncoder, got {type(image_encoder).__name__}")
        if not isinstance(text_encoder, CLIPTextEncoder):
            raise ValueError(f"CLIP needs a CLIPTextEncoder, got {type(text_encoder).__name__}")
        if image_encoder.embed_dim != text_encoder.embed_dim:
            raise ValueError(
                f"CLIP: the encoders project to different widths (image {image_encoder.embed_dim}, text "
                f"{text_encoder.embed_dim}); give both the same embed_dim"
            )
        self.image_encoder = image_encoder
        self.text_encoder = text_encoder
        self.temperature = check_positive_float("CLIP temperature", temperature)
        self.max_logit_scale = check_positive_float("CLIP max_logit_scale", max_logit_scale)
        if self.max_logit_scale < 1.0:
            raise ValueError(f"CLIP max_logit_scale must be >= 1 (logit_scale >= 0), got {max_logit_scale}")
        self.embed_dim = image_encoder.embed_dim

    def build(self, input_shape=None):
        if not self.image_encoder.built:
            self.image_encoder.build()
        if not self.text_encoder.built:
            self.text_encoder.build()
        self.scale_clip = LogitScaleClip(0.0, math.log(self.max_logit_scale))
        self.logit_scale = self.add_weight(
            name="logit_scale", shape=(), initializer=keras.initializers.Constant(math.log(1.0 / self.temperature)),
            constraint=self.scale_clip,
        )
        self.built = True

    def _unpack(self, inputs):
        if isinstance(inputs, (list, tuple)) and len(inputs) in (2, 3):
            inputs = dict(zip(("images", "token_ids", "padding_mask"), inputs))
        if not isinstance(inputs, dict) or "images" not in inputs or "token_ids" not in inputs:
            raise ValueError(
                "CLIP expects a dict with 'images' (batch, H, W, C), 'token_ids' (batch, T) and optionally "
                f"'padding_mask' (or a list [images, token_ids, padding_mask]); got {type(inputs).__name__}"
            )
        return inputs["images"], inputs["token_ids"], inputs.get("padding_mask")

    def encode_image(self, images, normalize=True, training=None):
        """``normalize(f_image(I) W_i)``: ``(batch, E)``; ``normalize=False`` skips the L2 normalisation."""
        features = self.image_encoder(images, training=training)
        return l2_normalize(features) if normalize else features

    def encode_text(self, token_ids, padding_mask=None, normalize=True, training=None):
        """``normalize(f_text(T) W_t)``: ``(batch, E)``; ``normalize=False`` skips the L2 normalisation."""
        inputs = {"token_ids": token_ids}
        if padding_mask is not None:
            inputs["padding_mask"] = padding_mask
        features = self.text_encoder(inputs, training=training)
        return l2_normalize(features) if normalize else features

    def scale(self):
        """``exp(t)`` with ``t`` clipped to ``[0, log(max_logit_scale)]``: the factor on the cosine similarities."""
        return ops.exp(ops.clip(self.logit_scale, 0.0, math.log(self.max_logit_scale)))

    def call(self, inputs, training=None):
        images, token_ids, padding_mask = self._unpack(inputs)
        image_embeddings = self.encode_image(images, training=training)
        text_embeddings = self.encode_text(token_ids, padding_mask, training=training)
        logits = ops.cast(self.scale(), image_embeddings.dtype) * ops.matmul(
            image_embeddings, ops.transpose(text_embeddings)
        )
        return {
            "image_embeddings": image_embeddings,
            "text_embeddings": text_embeddings,
            "logits_per_image": logits,
            "logits_per_text": ops.transpose(logits),
        }

    def get_config(self):
        return {
            **super().get_config(),
            "image_encoder": keras.saving.serialize_keras_object(self.image_encoder),
            "text_encoder": keras.saving.serialize_keras_object(self.text_encoder),
            "temperature": self.temperature,
            "max_logit_scale": self.max_logit_scale,
        }


def clip_loss(logits_per_image):
    """Section 9.1, CLIP's symmetric contrastive (InfoNCE) loss on a ``(B, B)`` logits matrix.

    ``L = (1/2B) sum_i [-log softmax_row(S)_ii - log softmax_col(S)_ii]``: the
    mean cross-entropy of each image against the ``B`` captions (rows) and of
    each caption against the ``B`` images (columns), the targets being the
    diagonal ``arange(B)``. Computed in float32.

    Args:
        logits_per_image: ``(B, B)``, row ``i`` scores image ``i`` against every caption.

    Returns: scalar float32.
    """
    logits = ops.cast(ops.convert_to_tensor(logits_per_image), "float32")
    check_rank("clip_loss logits_per_image", logits.shape, 2, "(images, texts)")
    rows, cols = logits.shape
    if rows is not None and cols is not None and rows != cols:
        raise ValueError(
            f"clip_loss needs a square (B, B) logits matrix (image i paired with text i), got shape {(rows, cols)}"
        )
    per_image = -ops.diagonal(ops.log_softmax(logits, axis=1))
    per_text = -ops.diagonal(ops.log_softmax(logits, axis=0))
    return (ops.mean(per_image) + ops.mean(per_text)) / 2.0


@keras.saving.register_keras_serializable(package="tfsuite")
class CLIPLoss(keras.losses.Loss):
    """Section 9.1, :func:`clip_loss` as a Keras loss for ``model.compile(loss={"logits_per_image": CLIPLoss()})``.

    ``y_true`` is ignored: the targets are the diagonal of the batch's logits
    (pass zeros of shape ``(B,)`` as the target of ``"logits_per_image"``).
    Batches must be the pairs themselves (``B`` images with their ``B``
    captions), so ``fit`` with ``shuffle=True`` shuffles pairs, never
    breaks them.

    Args:
        name: str. Default ``"clip_loss"``.
    """

    def __init__(self, name="clip_loss", **kwargs):
        super().__init__(name=name, **kwargs)

    def call(self, y_true, y_pred):
        return clip_loss(y_pred)


def clip_model(image_shape, patch_size, vocabulary_size, sequence_length, embed_dim=64, hidden_dim=64, num_layers=2,
               num_heads=2, intermediate_dim=None, dropout=0.0, temperature=0.07, max_logit_scale=100.0,
               name="clip"):
    """A small CLIP: a ViT image encoder and a causal text encoder of the same width and depth.

    Args:
        image_shape: ``(H, W, C)``; patch_size: int or ``(P_h, P_w)``.
        vocabulary_size, sequence_length: the text encoder's token and position tables.
        embed_dim: int, ``E``. Default 64.
        hidden_dim, num_layers, num_heads: both encoders. Defaults 64, 2, 2.
        intermediate_dim: the MLP width of both, or None for ``4 * hidden_dim``.
        dropout, temperature, max_logit_scale: see :class:`CLIPTextEncoder` and :class:`CLIP`.

    Returns: an unbuilt :class:`CLIP`.
    """
    intermediate_dim = 4 * hidden_dim if intermediate_dim is None else intermediate_dim
    vit = VisionTransformer(image_shape, patch_size, num_layers, num_heads, hidden_dim, intermediate_dim,
                            dropout=dropout, name="vit")
    text = CLIPTextEncoder(vocabulary_size, sequence_length, num_layers, num_heads, hidden_dim, intermediate_dim,
                           embed_dim, dropout=dropout, name="text_encoder")
    return CLIP(CLIPImageEncoder(vit, embed_dim, name="image_encoder"), text, temperature=temperature,
                max_logit_scale=max_logit_scale, name=name)
