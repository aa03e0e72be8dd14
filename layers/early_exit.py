"""Section 11.2, early exit (BranchyNet, Teerapittayanon et al. 2016; DeeBERT, Xin et al. 2020): a ViT that stops early.

An encoder of ``L`` layers gets a classifier ("exit") after some of its
layers ``l``, each reading the class token of ``h_l``, the hidden states
after layer ``l``:

    p_l = softmax(W_l LN_l(h_l^0) + b_l)

Training runs every layer and every exit and minimises the (weighted) mean of
the exits' cross-entropies, ``sum_l w_l CE(y, p_l)`` with ``sum_l w_l = 1``
(:class:`EarlyExitLoss`), so that the early exits learn to classify from
shallow features while the last one stays a full-depth classifier.

Inference runs the layers one at a time and lets each example leave at the
first exit confident enough:

    exit(x) = min { l in exits : max_c p_l(x)_c >= tau },   the last exit if none is

so an easy image pays for a few layers and a hard one for all ``L``.

- :class:`EarlyExitClassifier`: the :class:`layers.vision_transformer.VisionTransformer`
  backbone (its patch embedding and pre-LN encoder layers, unchanged) with one
  exit head per chosen layer; ``call`` returns every exit's logits,
  ``predict_early`` does the thresholded inference, eagerly.
- :class:`EarlyExitPredictor`: the same inference with each layer step compiled
  (``tf.function``), the form to time against a compiled full model. Like the
  export code, it builds TensorFlow graphs, so this module imports ``tf``.
- :class:`EarlyExitLoss`: the joint training loss over the exits.
- :func:`early_exit_vit`: a small, built model for Fashion-MNIST with an exit
  after every layer (``benchmarks/early_exit.py`` trains and times it).

Example::

    model = early_exit_vit(num_layers=6, patch_size=4)
    model.compile("adam", EarlyExitLoss())
    model.fit(images, labels)                             # logits (batch, 6, 10) against labels (batch,)
    out = model.predict_early(test_images, threshold=0.9)
    out["predictions"], out["layers_used"]                # (batch,) class ids, (batch,) layers in 1..6
"""

import functools

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from layers.normalization import LayerNormalization
from layers.perceptron import Dense
from layers.validation import check_positive_int, check_rank
from layers.vision_transformer import VisionTransformer

__all__ = [
    "EarlyExitClassifier", "EarlyExitLoss", "EarlyExitPredictor", "check_exit_layers", "check_threshold",
    "early_exit_loop", "early_exit_vit",
]

_IMAGE_LAYOUT = "(batch, height, width, channels)"


def check_exit_layers(exit_layers, num_layers):
    """The sorted exit layers, 1-based, the last layer ``num_layers`` included (added when missing).

    ``None`` means an exit after every layer. Raises ``ValueError`` for an
    empty list, a repeated index or one outside ``1..num_layers``.
    """
    if exit_layers is None:
        return list(range(1, num_layers + 1))
    if isinstance(exit_layers, (int, np.integer)) or not isinstance(exit_layers, (list, tuple)):
        raise ValueError(f"exit_layers must be a list of layer indices in 1..{num_layers} or None, got {exit_layers!r}")
    if not exit_layers:
        raise ValueError(
            f"exit_layers is empty: pass the layers (1..{num_layers}) to put an exit after, or None for every layer"
        )
    layers = []
    for index in exit_layers:
        if isinstance(index, bool) or not isinstance(index, (int, np.integer)) or not 1 <= index <= num_layers:
            raise ValueError(
                f"exit layer {index!r} is out of range: exits follow encoder layers 1..{num_layers} (1-based, "
                f"layer l reads h_l), got exit_layers={list(exit_layers)}"
            )
        layers.append(int(index))
    if len(set(layers)) != len(layers):
        raise ValueError(f"exit_layers repeats a layer: {list(exit_layers)}; list each layer once")
    return sorted(set(layers) | {num_layers})


def check_threshold(threshold):
    """``float(threshold)``; ValueError unless it lies in ``(0, 1]``, the range of a max softmax probability."""
    try:
        value = float(threshold)
    except (TypeError, ValueError):
        value = None
    if value is None or not 0.0 < value <= 1.0:
        raise ValueError(
            f"threshold must be a probability in (0, 1] (an example exits where max softmax >= threshold), "
            f"got {threshold!r}; use threshold=None to run every layer"
        )
    return value


@keras.saving.register_keras_serializable(package="tfsuite")
class EarlyExitClassifier(keras.Model):
    """Section 11.2, early-exit ViT: exit at the first exit layer ``l`` with ``max_c softmax(W_l h_l)_c >= tau``.

    ``W_l h_l`` is short for exit ``l``'s head on its normed class token, ``W_l LN_l(h_l^0) + b_l``.

    Exit ``l`` is a layer norm and a linear head on the class token of ``h_l``
    (row 0; the norm acts per token, so it is applied to the pooled token
    alone). The last exit uses the backbone's own final layer norm, so exit
    ``L`` is exactly :class:`layers.vision_transformer.ViTClassifier` on the
    same backbone; an intermediate exit has its own norm ``LN_l``, as if the
    backbone were cut after layer ``l``.

    Args:
        backbone: :class:`layers.vision_transformer.VisionTransformer` (or its
            serialized config); its embeddings and encoder layers are used one
            by one, its final layer norm serves the last exit.
        num_classes: int.
        exit_layers: list of int or None, the 1-based encoder layers to put an
            exit after (``l`` reads ``h_l``); the last layer ``L`` is always
            an exit and is added if missing. None (default) puts an exit after
            every layer.

    Call arguments:
        images: float ``(batch, H, W, C)``, as the backbone.
        training: bool, dropout on.

    Returns (``call``): logits of every exit, stacked, ``(batch, num_exits,
    num_classes)``, exits in the order of ``exit_layers``; train with
    :class:`EarlyExitLoss`.

    Inference: :meth:`predict_early` (eager; see there how the saving is made real), or
    :class:`EarlyExitPredictor` (compiled steps).

    Example:
    >>> vit = VisionTransformer((16, 16, 1), 4, num_layers=3, num_heads=2, hidden_dim=16, mlp_dim=32)
    >>> model = EarlyExitClassifier(vit, num_classes=5, exit_layers=[1, 2])
    >>> model(np.zeros((2, 16, 16, 1), "float32")).shape
    TensorShape([2, 3, 5])
    >>> model.predict_early(np.zeros((2, 16, 16, 1), "float32"), threshold=0.9)["layers_used"].shape
    (2,)
    """

    def __init__(self, backbone, num_classes, exit_layers=None, **kwargs):
        super().__init__(**kwargs)
        if isinstance(backbone, dict):
            backbone = keras.saving.deserialize_keras_object(backbone)
        if not isinstance(backbone, VisionTransformer):
            raise ValueError(f"EarlyExitClassifier needs a VisionTransformer backbone, got {type(backbone).__name__}")
        self.backbone = backbone
        self.num_classes = check_positive_int("EarlyExitClassifier num_classes", num_classes)
        self.exit_layers = check_exit_layers(exit_layers, backbone.num_layers)
        self.exit_norms = [
            backbone.layer_norm if layer == backbone.num_layers
            else LayerNormalization(epsilon=backbone.layer_norm_epsilon, name=f"exit_{layer}_layer_norm")
            for layer in self.exit_layers
        ]
        self.exit_heads = [Dense(self.num_classes, name=f"exit_{layer}_head") for layer in self.exit_layers]

    @property
    def num_layers(self):
        return self.backbone.num_layers

    def build(self, input_shape=None):
        if not self.backbone.built:
            self.backbone.build()
        for norm, head in zip(self.exit_norms, self.exit_heads):
            if not norm.built:
                norm.build((None, self.backbone.hidden_dim))
            head.build((None, self.backbone.hidden_dim))
        self.built = True

    def _check_images(self, images):
        check_rank("EarlyExitClassifier images", images.shape, 4, _IMAGE_LAYOUT)
        channels = self.backbone.image_shape[-1]
        if images.shape[-1] != channels:
            raise ValueError(
                f"EarlyExitClassifier was made for {channels} channels (image_shape={self.backbone.image_shape}), "
                f"got images of shape {tuple(images.shape)}"
            )

    def exit_logits(self, exit_index, hidden):
        """Logits of exit number ``exit_index`` (0-based, into ``exit_layers``) on hidden states ``(batch, T, D)``."""
        return self.exit_heads[exit_index](self.exit_norms[exit_index](hidden[:, 0, :]))

    def call(self, images, training=None):
        self._check_images(images)
        x = self.backbone.embeddings(images, training=training)
        exit_of_layer = {layer: i for i, layer in enumerate(self.exit_layers)}
        logits = []
        for layer_number, layer in enumerate(self.backbone.transformer_layers, start=1):
            x = layer(x, training=training)
            if layer_number in exit_of_layer:
                logits.append(self.exit_logits(exit_of_layer[layer_number], x))
        return ops.stack(logits, axis=1)

    def layer_step(self, layer_number, hidden, with_exit):
        """Encoder layer ``layer_number`` (1-based) on ``hidden`` ``(batch, T, D)``, then optionally its exit.

        Returns ``(hidden, probabilities)``: the layer's output and, when
        ``with_exit`` (the layer must be an exit), that exit's softmax
        ``(batch, num_classes)``, else None. One step of :meth:`predict_early`.
        """
        hidden = self.backbone.transformer_layers[layer_number - 1](hidden, training=False)
        if not with_exit:
            return hidden, None
        return hidden, ops.softmax(self.exit_logits(self.exit_layers.index(layer_number), hidden), axis=-1)

    def predict_early(self, images, threshold):
        """Thresholded early-exit inference, per example: exit at the first exit ``l`` with ``max_c p_l(x)_c >= tau``.

        Runs eagerly, one encoder layer at a time (:meth:`layer_step`). After
        each exit, the examples that left are dropped from the batch
        (``ops.take`` of the still-active rows), so layer ``l + 1`` runs only on
        the examples still active: the saving is real compute, a smaller
        batch, not just bookkeeping. The loop stops once no example is left.
        :class:`EarlyExitPredictor` runs the same loop with each step compiled.

        Args:
            images: float ``(batch, H, W, C)`` array or tensor.
            threshold: float in ``(0, 1]``, ``tau``; an example exits where its
                max softmax probability reaches it. ``1.0`` exits early only
                where float32 rounds the probability to 1. None: no early
                exit, every example runs all ``L`` layers and the last exit
                answers (the full model's cost: no intermediate head runs).

        Returns:
            dict of NumPy arrays, each ``(batch,)``: ``"predictions"`` (int32
            class ids), ``"layers_used"`` (int32, the encoder layers that ran
            for the example, ``1..L``), ``"exit_index"`` (int32, 0-based into
            ``exit_layers``), ``"confidence"`` (float32, the max softmax
            probability at the exit that answered).

        Raises:
            ValueError: a threshold outside ``(0, 1]``, or images of the wrong rank or channels.
        """
        return early_exit_loop(
            self, images, threshold, lambda x: self.backbone.embeddings(x, training=False), self.layer_step
        )

    def get_config(self):
        return {
            **super().get_config(),
            "backbone": keras.saving.serialize_keras_object(self.backbone),
            "num_classes": self.num_classes,
            "exit_layers": list(self.exit_layers),
        }


def early_exit_loop(model, images, threshold, embed, step):
    """The per-example exit loop shared by :meth:`EarlyExitClassifier.predict_early` and :class:`EarlyExitPredictor`.

    ``embed(images)`` gives ``h_0``; ``step(layer_number, hidden, with_exit)``
    is :meth:`EarlyExitClassifier.layer_step` (eager or compiled). The rows of
    ``hidden`` are the examples still active, ``active`` maps them back to
    the batch; leavers are written to the outputs and gathered out.
    """
    tau = None if threshold is None else check_threshold(threshold)
    images = ops.convert_to_tensor(images, dtype=model.compute_dtype)
    model._check_images(images)
    if not model.built:
        model.build()
    batch = int(images.shape[0])
    num_layers, last_exit = model.num_layers, len(model.exit_layers) - 1
    out = {
        "predictions": np.zeros(batch, "int32"),
        "layers_used": np.full(batch, num_layers, "int32"),
        "exit_index": np.full(batch, last_exit, "int32"),
        "confidence": np.zeros(batch, "float32"),
    }
    exits = {layer: i for i, layer in enumerate(model.exit_layers)} if tau is not None else {num_layers: last_exit}
    active = np.arange(batch)
    x = embed(images)
    for layer_number in range(1, num_layers + 1):
        exit_index = exits.get(layer_number)
        x, probabilities = step(layer_number, x, exit_index is not None)
        if exit_index is None:
            continue
        probabilities = ops.convert_to_numpy(probabilities)
        confidence = probabilities.max(axis=-1)
        leaving = np.ones(len(active), bool) if layer_number == num_layers else confidence >= tau
        rows = active[leaving]
        out["predictions"][rows] = probabilities[leaving].argmax(axis=-1)
        out["layers_used"][rows] = layer_number
        out["exit_index"][rows] = exit_index
        out["confidence"][rows] = confidence[leaving]
        if leaving.all():
            break
        if leaving.any():
            staying = np.flatnonzero(~leaving)
            active = active[staying]
            x = ops.take(x, staying, axis=0)
    return out


def _embed(model, images):
    return model.backbone.embeddings(images, training=False)


class EarlyExitPredictor:
    """Section 11.2, :meth:`EarlyExitClassifier.predict_early` with every step compiled by ``tf.function``.

    The same loop and the same outputs; the embedding and each
    :meth:`EarlyExitClassifier.layer_step` run as graphs, which removes the
    eager per-op overhead, so its times can be set against a compiled full
    model. One graph per step (and image size), with a free batch axis in its
    input signature, so the shrinking batches never retrace. The gather of the
    active rows and the exit decision stay in Python between steps, as they
    must: which rows go on depends on the probabilities just computed.

    A plain object, not a Keras layer, so that its traced functions never end
    up in the model's saved files; like the export code it builds TensorFlow
    graphs, so it uses ``tf.*``.

    Args:
        model: a built :class:`EarlyExitClassifier`.

    Call arguments and returns: as :meth:`EarlyExitClassifier.predict_early`.

    Example::

        predictor = EarlyExitPredictor(model)
        out = predictor(test_images, threshold=0.9)     # out["predictions"], out["layers_used"]
    """

    def __init__(self, model):
        if not isinstance(model, EarlyExitClassifier):
            raise ValueError(f"EarlyExitPredictor needs an EarlyExitClassifier, got {type(model).__name__}")
        self.model = model
        self._compiled = {}

    def _compile(self, key, function, tensor):
        """One ``tf.function`` per step and input size, traced once for any batch size."""
        key = (*key, tuple(tensor.shape[1:]))
        if key not in self._compiled:
            # A partial, not a lambda: tf.function keys its retracing warnings by the Python code object,
            # which lambdas made in a loop share.
            signature = [tf.TensorSpec((None, *tensor.shape[1:]), tensor.dtype)]
            self._compiled[key] = tf.function(function, input_signature=signature)
        return self._compiled[key](tensor)

    def _embed(self, images):
        return self._compile(("embed",), functools.partial(_embed, self.model), images)

    def _step(self, layer_number, hidden, with_exit):
        step = functools.partial(self.model.layer_step, layer_number, with_exit=with_exit)
        return self._compile((layer_number, with_exit), step, hidden)

    def __call__(self, images, threshold):
        return early_exit_loop(self.model, images, threshold, self._embed, self._step)


@keras.saving.register_keras_serializable(package="tfsuite")
class EarlyExitLoss(keras.losses.Loss):
    """Section 11.2, the joint early-exit loss: ``sum_l w_l CE(y, softmax(z_l))``, ``w`` normalised to sum 1.

    Args:
        exit_weights: list of float or None, one non-negative weight per exit
            (BranchyNet weighs exits by hand); None (default) weighs them
            equally, the mean of the exits' cross-entropies.
        from_logits: bool, the predictions are logits. Default True.
        name, reduction: as ``keras.losses.Loss``.

    Call arguments: ``y_true`` int class ids ``(batch,)``; ``y_pred``
    ``(batch, num_exits, num_classes)``, :class:`EarlyExitClassifier`'s output.

    Example:
    >>> round(float(EarlyExitLoss()(np.array([0]), np.zeros((1, 3, 4), "float32"))), 4)   # log 4 at every exit
    1.3863
    """

    def __init__(self, exit_weights=None, from_logits=True, name="early_exit_loss", reduction="sum_over_batch_size"):
        super().__init__(name=name, reduction=reduction)
        if exit_weights is not None:
            exit_weights = [float(w) for w in exit_weights]
            if not exit_weights or min(exit_weights) < 0 or sum(exit_weights) <= 0:
                raise ValueError(
                    f"exit_weights must be non-negative with a positive sum, one per exit, got {exit_weights}"
                )
        self.exit_weights = exit_weights
        self.from_logits = bool(from_logits)

    def call(self, y_true, y_pred):
        check_rank("EarlyExitLoss predictions", y_pred.shape, 3, "(batch, num_exits, num_classes)")
        num_exits = y_pred.shape[1]
        if self.exit_weights is None:
            weights = np.full(num_exits, 1.0 / num_exits, "float32")
        elif len(self.exit_weights) != num_exits:
            raise ValueError(f"EarlyExitLoss has {len(self.exit_weights)} exit_weights for {num_exits} exits")
        else:
            weights = np.asarray(self.exit_weights, "float32") / sum(self.exit_weights)
        labels = ops.reshape(ops.cast(y_true, "int32"), (-1, 1))
        labels = ops.broadcast_to(labels, ops.shape(y_pred)[:2])
        per_exit = keras.losses.sparse_categorical_crossentropy(labels, y_pred, from_logits=self.from_logits)
        return ops.sum(per_exit * ops.cast(weights, per_exit.dtype), axis=1)

    def get_config(self):
        return {**super().get_config(), "exit_weights": self.exit_weights, "from_logits": self.from_logits}


def early_exit_vit(input_shape=(28, 28, 1), num_classes=10, patch_size=4, num_layers=6, num_heads=4, hidden_dim=64,
                   mlp_dim=128, dropout=0.0, exit_layers=None, **kwargs):
    """A small early-exit ViT, by default for Fashion-MNIST: 28x28x1, 4x4 patches (49 + 1 tokens), 6 layers.

    Args:
        input_shape, num_classes, patch_size, num_layers, num_heads, hidden_dim, mlp_dim, dropout: as
            :func:`layers.vision_transformer.vit_classifier` (defaults (28, 28, 1), 10, 4, 6, 4, 64, 128, 0).
        exit_layers: as :class:`EarlyExitClassifier`; None (default) puts an exit after every layer.
        **kwargs: other :class:`VisionTransformer` arguments.

    Returns: a built :class:`EarlyExitClassifier`.
    """
    backbone = VisionTransformer(input_shape, patch_size, num_layers, num_heads, hidden_dim, mlp_dim,
                                 dropout=dropout, name="vit", **kwargs)
    model = EarlyExitClassifier(backbone, num_classes, exit_layers=exit_layers, name="early_exit_vit")
    model.build((None, *backbone.image_shape))
    return model
