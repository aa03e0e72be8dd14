"""Transfer learning (textbook section 2.4): feature extraction and fine-tuning.

The textbook's recipe for applying a pretrained model to a new task:

1. **Feature extraction**: freeze the lower (pretrained) layers and train
   only a new head (``feature_extractor``).
2. **Fine-tuning**: then unfreeze the top of the backbone and train on with a
   lower learning rate (``fine_tune``).
3. Choose by the size of the new data set: little data, feature extraction;
   more data, fine-tune more blocks.

Following Keras's transfer-learning guide, the backbone's batch-norm layers
stay in inference mode (moving statistics, no updates) both while frozen and
after ``fine_tune`` unfreezes blocks: updating them on a small new data set
would wreck what the pretrained layers learned. The guide's
``base_model(inputs, training=False)`` is not enough in Keras 3: a functional
model called with ``training=True`` (as ``fit`` does) passes ``True`` on to
every nested layer, overriding the ``False`` recorded in the graph
(keras-team/keras#20285), so unfrozen batch norms would update. The backbone
is therefore wrapped in ``InferenceModeBackbone``, whose ``call`` always
calls it with ``training=False``; gradients still reach the unfrozen
``gamma``/``beta``.

Example::

    from apps.transfer_learning import feature_extractor, fine_tune
    from layers.cnn_models import resnet18

    backbone = resnet18((28, 28, 1), 10, width=16, small_input=True, include_top=False)
    ...  # pretrain backbone (with some head) on the source task
    model = feature_extractor(backbone, num_classes=5)
    model.fit(x_new, y_new, epochs=5)                     # only the head trains
    fine_tune(model, backbone, num_trainable_blocks=2, learning_rate=1e-4)
    model.fit(x_new, y_new, epochs=5)                     # head + top 2 blocks
"""

from __future__ import annotations

import keras

from layers.perceptron import Dense
from layers.pooling import GlobalAveragePooling2D

__all__ = [
    "InferenceModeBackbone",
    "backbone_blocks",
    "classification_head",
    "feature_extractor",
    "fine_tune",
]


@keras.saving.register_keras_serializable(package="tfsuite")
class InferenceModeBackbone(keras.layers.Layer):
    """Section 2.4, a pretrained backbone run in inference mode: ``y = backbone(x)``
    with ``training=False`` whatever the enclosing model's ``training`` is.

    Batch norms inside use their moving statistics and never update them;
    dropout is off. Which weights train is still decided by ``trainable``
    flags (``feature_extractor`` and ``fine_tune`` set them).

    Args:
        backbone: a ``keras.Model`` (or layer) from images to features.

    Input shape: the backbone's. Output shape: the backbone's.

    Example:
    >>> features = InferenceModeBackbone(backbone)(keras.Input((28, 28, 1)))
    """

    def __init__(self, backbone, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(backbone, keras.layers.Layer):
            raise ValueError(
                f"InferenceModeBackbone needs a keras.Model or layer, got {type(backbone).__name__}"
            )
        self.backbone = backbone

    def build(self, input_shape):
        if not self.backbone.built:
            self.backbone.build(input_shape)

    def call(self, inputs, training=None):
        # The caller's `training` is deliberately dropped (see the module docstring).
        return self.backbone(inputs, training=False)

    def compute_output_shape(self, input_shape):
        return self.backbone.compute_output_shape(input_shape)

    def get_config(self):
        return {
            **super().get_config(),
            "backbone": keras.saving.serialize_keras_object(self.backbone),
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["backbone"] = keras.saving.deserialize_keras_object(config["backbone"])
        return cls(**config)


def backbone_blocks(backbone):
    """The backbone's units that hold weights, bottom to top.

    For the ``layers.cnn_models`` backbones these are the stem's conv and
    batch norm followed by the residual blocks (ResNet), VGG blocks, or dense
    blocks and transitions (DenseNet); for any other functional model, its
    top-level layers with weights. ``fine_tune`` counts "blocks" in these units.
    """
    return [layer for layer in backbone.layers if layer.weights]


def classification_head(features, num_classes, dropout=0.0):
    """Default new head: global average pool (for feature maps), dropout, linear logits."""
    x = features
    if len(x.shape) == 4:
        x = GlobalAveragePooling2D(name="head_pool")(x)
    elif len(x.shape) != 2:
        raise ValueError(
            f"classification_head expects backbone features of rank 2 (batch, features) or 4 "
            f"(batch, height, width, channels), got shape {tuple(x.shape)}; pass head_builder"
        )
    if dropout:
        x = keras.layers.Dropout(dropout, name="head_dropout")(x)
    return Dense(num_classes, name="head_logits")(x)


def _contains(model, layer):
    """Whether ``layer`` is one of ``model``'s layers, at any nesting depth."""
    for child in getattr(model, "layers", []):
        inner = child.backbone if isinstance(child, InferenceModeBackbone) else child
        if inner is layer or _contains(inner, layer):
            return True
    return False


def _compile(model, learning_rate, loss=None, metrics=None):
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss=loss or keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=list(metrics) if metrics is not None else ["accuracy"],
    )


def feature_extractor(
    backbone,
    num_classes=None,
    head_builder=None,
    learning_rate=1e-3,
    dropout=0.0,
    loss=None,
    metrics=None,
):
    """Section 2.4 (1), feature extraction: a new model ``head(backbone(x))``
    with the backbone frozen, compiled and ready to ``fit``.

    Args:
        backbone: a built ``keras.Model`` from images to features (e.g. a
            ``layers.cnn_models`` builder with ``include_top=False``); it is
            frozen in place (``backbone.trainable = False``).
        num_classes: int, classes of the new task, for the default head
            (global average pool, optional dropout, ``Dense`` to logits).
        head_builder: callable ``features_tensor -> outputs_tensor`` building
            a custom head instead; give exactly one of ``num_classes`` and
            ``head_builder``.
        learning_rate: float, Adam learning rate for the head. Default 1e-3.
        dropout: float, dropout in the default head. Default 0.0.
        loss: loss for ``compile``. Default sparse categorical cross-entropy
            on logits.
        metrics: list of metrics. Default ``["accuracy"]``.

    Returns:
        The compiled ``keras.Model``; the backbone sits inside it in an
        ``InferenceModeBackbone``, so its batch norms stay in inference mode.
    """
    if not isinstance(backbone, keras.Model):
        raise ValueError(f"feature_extractor needs a keras.Model backbone, got {type(backbone).__name__}")
    if (num_classes is None) == (head_builder is None):
        raise ValueError("feature_extractor needs exactly one of num_classes or head_builder")
    try:
        known_inputs = backbone.built and bool(backbone.inputs)
    except (AttributeError, ValueError):  # e.g. a Sequential model without an Input
        known_inputs = False
    if not known_inputs:
        raise ValueError(
            "feature_extractor needs a built functional backbone with known inputs (for example "
            "resnet18(..., include_top=False))"
        )
    backbone.trainable = False
    inputs = keras.Input(shape=backbone.inputs[0].shape[1:], name="image")
    features = InferenceModeBackbone(backbone, name=f"{backbone.name}_inference")(inputs)
    if head_builder is not None:
        outputs = head_builder(features)
    else:
        outputs = classification_head(features, num_classes, dropout)
    model = keras.Model(inputs, outputs, name=f"{backbone.name}_transfer")
    _compile(model, learning_rate, loss, metrics)
    return model


def fine_tune(model, backbone, num_trainable_blocks, learning_rate=1e-5, loss=None, metrics=None):
    """Section 2.4 (2), fine-tuning: unfreeze the top ``num_trainable_blocks``
    units of ``backbone`` (see ``backbone_blocks``), keep the rest frozen, and
    recompile ``model`` with a lower learning rate.

    Recompiling is what makes the new ``trainable`` flags take effect (and
    resets the optimizer, whose head-only state no longer fits). The
    backbone's batch norms stay in inference mode when ``model`` came from
    ``feature_extractor`` (``InferenceModeBackbone``); a model that calls the
    backbone directly would update them (Keras 3 semantics).

    Args:
        model: the model from ``feature_extractor`` (or any model containing
            ``backbone``).
        backbone: the backbone inside ``model``.
        num_trainable_blocks: int, how many top units to unfreeze; 0 keeps
            feature extraction, ``len(backbone_blocks(backbone))`` unfreezes
            everything (the textbook's "fine-tune the whole").
        learning_rate: float, Adam learning rate, normally 10-100x below the
            feature-extraction one. Default 1e-5.
        loss, metrics: as in ``feature_extractor``; ``loss`` defaults to the
            model's compiled loss.

    Returns:
        ``model``, recompiled.
    """
    blocks = backbone_blocks(backbone)
    if isinstance(num_trainable_blocks, bool) or int(num_trainable_blocks) != num_trainable_blocks:
        raise ValueError(f"num_trainable_blocks must be an integer, got {num_trainable_blocks!r}")
    n = int(num_trainable_blocks)
    if not 0 <= n <= len(blocks):
        names = ", ".join(layer.name for layer in blocks)
        raise ValueError(
            f"num_trainable_blocks must be in [0, {len(blocks)}] for backbone {backbone.name!r} "
            f"(units bottom to top: {names}), got {n}"
        )
    if not _contains(model, backbone):
        raise ValueError(f"fine_tune: backbone {backbone.name!r} is not part of model {model.name!r}")
    backbone.trainable = True
    for i, layer in enumerate(blocks):
        layer.trainable = i >= len(blocks) - n
    _compile(model, learning_rate, loss or model.loss, metrics)
    return model
