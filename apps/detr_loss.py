"""DETR's set prediction loss (textbook section 7.3; Carion et al., 2020): box geometry, Hungarian matching, loss.

A procedure, not a layer (the model is ``layers/detr.py``). DETR predicts a
fixed set of ``Q`` boxes per image and ``M <= Q`` objects are in it, so the
loss first finds the one-to-one assignment ``sigma`` of queries to objects
with the lowest matching cost, then scores each query against its object or
against "no object" (class ``C``)::

    sigma = argmin_sigma sum_m C(y_m, yhat_sigma(m))
    C(y_m, yhat_q) = -w_class p_q(c_m) + w_L1 ||b_m - bhat_q||_1 - w_giou GIoU(b_m, bhat_q)

    L = lambda_class CE + lambda_L1 sum_m ||b_m - bhat_sigma(m)||_1 / n
                        + lambda_giou sum_m (1 - GIoU(b_m, bhat_sigma(m))) / n

``CE`` is the cross-entropy over **all** queries of every image, the targets
being ``c_m`` at matched queries and "no object" elsewhere, each term weighted
by ``eos_coef`` (0.1) when its target is "no object" and by 1 otherwise, and
divided by the sum of the weights (PyTorch's weighted mean, as DETR's code).
``n`` is the number of target boxes in the batch (at least 1), so the box
terms are means over objects, not over images. DETR's defaults:
``w_class = lambda_class = 1``, ``w_L1 = lambda_L1 = 5``, ``w_giou = lambda_giou = 2``.

Targets come padded to ``M`` objects per image: a dict
``{"labels": int (batch, M), "boxes": float (batch, M, 4)}``; a label ``-1``
marks a padding row (its box is ignored, any value); real labels are in
``0 .. C-1``. Boxes, predicted and target, are ``(cx, cy, w, h)`` relative to
the image sides, in ``[0, 1]``.

Matching runs in NumPy: ``scipy.optimize.linear_sum_assignment`` per image on
the ``(Q, M_real)`` cost matrix. The cost matrix is computed with
``keras.ops`` in the graph (under ``stop_gradient``); only the assignment goes
through ``tf.numpy_function``, so the loss runs inside a traced training step
(``tf.function``, ``model.fit``) with the rest of it in the graph. The
assignment is integer indices, piecewise constant in the predictions, so it
has no gradient to lose (DETR's code also matches under ``torch.no_grad``).
The price: the step cannot be XLA-compiled and the matching runs on the host,
one Python call per batch. With other backends the matcher runs eagerly.

Example::

    model = detr(num_classes=3, ...)
    loss = DETRLoss(num_classes=3)
    step = make_train_step(model, loss, keras.optimizers.Adam(1e-4))
    terms = step(images, {"labels": labels, "boxes": boxes})   # {"loss", "class_loss", "l1_loss", "giou_loss"}
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops
from scipy.optimize import linear_sum_assignment

from layers.validation import check_positive_float, check_positive_int, check_rank

__all__ = [
    "DETRLoss", "HungarianMatcher", "box_area", "box_cxcywh_to_xyxy", "box_iou", "box_xyxy_to_cxcywh",
    "generalized_box_iou", "make_train_step", "pairwise",
]

# Floors the union and enclosing areas: exact for real boxes, finite for degenerate (zero-area) ones.
_EPSILON = 1e-7
# Stands in for padding rows before the box losses, so their (masked) terms and gradients stay finite.
_DUMMY_BOX = (0.5, 0.5, 1.0, 1.0)


# --- Box geometry: every function broadcasts over leading axes; boxes are (..., 4) ------------------------------

def box_cxcywh_to_xyxy(boxes):
    """``(cx, cy, w, h)`` -> ``(x0, y0, x1, y1)`` = ``(cx - w/2, cy - h/2, cx + w/2, cy + h/2)``."""
    cx, cy, w, h = (boxes[..., i] for i in range(4))
    return ops.stack([cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h], axis=-1)


def box_xyxy_to_cxcywh(boxes):
    """``(x0, y0, x1, y1)`` -> ``((x0 + x1)/2, (y0 + y1)/2, x1 - x0, y1 - y0)``."""
    x0, y0, x1, y1 = (boxes[..., i] for i in range(4))
    return ops.stack([0.5 * (x0 + x1), 0.5 * (y0 + y1), x1 - x0, y1 - y0], axis=-1)


def box_area(boxes):
    """Area of ``(x0, y0, x1, y1)`` boxes, ``(x1 - x0)(y1 - y0)``: shape ``(...)``."""
    return (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])


def _iou_and_union(a, b):
    top_left = ops.maximum(a[..., :2], b[..., :2])
    bottom_right = ops.minimum(a[..., 2:], b[..., 2:])
    size = ops.maximum(bottom_right - top_left, 0.0)
    intersection = size[..., 0] * size[..., 1]
    union = box_area(a) + box_area(b) - intersection
    return intersection / ops.maximum(union, _EPSILON), union


def box_iou(a, b):
    """Intersection over union of ``(x0, y0, x1, y1)`` boxes, ``|A n B| / |A u B|``, element-wise.

    ``a`` and ``b`` broadcast against each other (``(..., 4)``); for all pairs
    use :func:`pairwise`. Result in ``[0, 1]``, shape ``(...)``.
    """
    return _iou_and_union(a, b)[0]


def generalized_box_iou(a, b):
    """Generalized IoU (Rezatofighi et al., 2019): ``GIoU = IoU - |E \\ (A u B)| / |E|``, element-wise.

    ``E`` is the smallest box enclosing ``A`` and ``B``. In ``[-1, 1]``: 1 for
    equal boxes, and, unlike IoU, still graded (towards -1) when the boxes are
    apart, so it gives a gradient before they overlap. Boxes ``(x0, y0, x1, y1)``
    with ``x1 >= x0``, ``y1 >= y0``; ``a`` and ``b`` broadcast.
    """
    iou, union = _iou_and_union(a, b)
    enclosing_size = ops.maximum(a[..., 2:], b[..., 2:]) - ops.minimum(a[..., :2], b[..., :2])
    enclosing = ops.maximum(enclosing_size[..., 0] * enclosing_size[..., 1], _EPSILON)
    return iou - (enclosing - union) / enclosing


def pairwise(function, a, b):
    """``function`` on every pair: ``a (..., N, 4)`` and ``b (..., M, 4)`` give ``(..., N, M)``."""
    return function(ops.expand_dims(a, -2), ops.expand_dims(b, -3))


# --- Matching -------------------------------------------------------------------------------------------------

def _check_predictions(owner, y_pred):
    if not isinstance(y_pred, dict) or not {"logits", "boxes"} <= set(y_pred):
        raise ValueError(f"{owner} expects predictions {{'logits': (batch, Q, C + 1), 'boxes': (batch, Q, 4)}}, "
                         f"got {type(y_pred).__name__}{sorted(y_pred) if isinstance(y_pred, dict) else ''}")
    check_rank(f"{owner} logits", y_pred["logits"].shape, 3, "(batch, queries, num_classes + 1)")
    check_rank(f"{owner} boxes", y_pred["boxes"].shape, 3, "(batch, queries, 4)")


def _check_targets(owner, y_true):
    if not isinstance(y_true, dict) or not {"labels", "boxes"} <= set(y_true):
        raise ValueError(f"{owner} expects targets {{'labels': int (batch, M) with -1 for padding, "
                         f"'boxes': (batch, M, 4) cxcywh}}, got {type(y_true).__name__}"
                         f"{sorted(y_true) if isinstance(y_true, dict) else ''}")
    labels, boxes = y_true["labels"], y_true["boxes"]
    check_rank(f"{owner} target labels", labels.shape, 2, "(batch, M), -1 for padding")
    check_rank(f"{owner} target boxes", boxes.shape, 3, "(batch, M, 4)")
    if boxes.shape[-1] != 4 or (labels.shape[1] is not None and boxes.shape[1] is not None
                                and labels.shape[1] != boxes.shape[1]):
        raise ValueError(f"{owner}: target boxes must be (batch, M, 4) for labels (batch, M); got labels "
                         f"{tuple(labels.shape)} and boxes {tuple(boxes.shape)}")


def _assign(cost, valid):
    """NumPy: per image, the query matched to each real target (``linear_sum_assignment``); -1 for padding."""
    matched = np.full(valid.shape, -1, np.int32)
    for image, (image_cost, image_valid) in enumerate(zip(cost, valid)):
        real = np.flatnonzero(image_valid)
        if real.size == 0:
            continue
        if real.size > image_cost.shape[0]:
            raise ValueError(f"image {image} has {real.size} target boxes but the model only has "
                             f"{image_cost.shape[0]} queries; raise num_queries")
        queries, targets = linear_sum_assignment(image_cost[:, real])
        matched[image, real[targets]] = queries
    return matched


class HungarianMatcher:
    """Section 7.3, DETR's bipartite matching: ``sigma = argmin sum_m C(y_m, yhat_sigma(m))``, one query per target.

    ``C(y_m, yhat_q) = -class_cost p_q(c_m) + l1_cost ||b_m - bhat_q||_1 - giou_cost GIoU(b_m, bhat_q)``,
    ``p_q = softmax(logits_q)``; boxes ``(cx, cy, w, h)`` (GIoU on their corners).
    Solved exactly per image by ``scipy.optimize.linear_sum_assignment``
    (through ``tf.numpy_function`` under the TensorFlow backend, see the module docstring).

    Args:
        class_cost: float, ``w_class``. Default 1.
        l1_cost: float, ``w_L1``. Default 5.
        giou_cost: float, ``w_giou``. Default 2.

    Call arguments: ``logits (batch, Q, C + 1)``, ``boxes (batch, Q, 4)``,
    ``target_labels`` int ``(batch, M)`` (-1 for padding), ``target_boxes (batch, M, 4)``.

    Returns: int32 ``(batch, M)``, the query index matched to each target, -1 on padding rows.

    Example::

        matched = HungarianMatcher()(out["logits"], out["boxes"], labels, boxes)
    """

    def __init__(self, class_cost=1.0, l1_cost=5.0, giou_cost=2.0):
        self.class_cost = check_positive_float("HungarianMatcher class_cost", class_cost, allow_zero=True)
        self.l1_cost = check_positive_float("HungarianMatcher l1_cost", l1_cost, allow_zero=True)
        self.giou_cost = check_positive_float("HungarianMatcher giou_cost", giou_cost, allow_zero=True)

    def cost_matrix(self, logits, boxes, target_labels, target_boxes):
        """``C`` for every (query, target) pair of each image: ``(batch, Q, M)`` (padding columns hold garbage)."""
        probabilities = ops.softmax(ops.cast(logits, "float32"), axis=-1)
        labels = ops.maximum(ops.cast(target_labels, "int32"), 0)
        queries = ops.shape(probabilities)[1]
        index = ops.broadcast_to(ops.expand_dims(labels, 1), (ops.shape(labels)[0], queries, ops.shape(labels)[1]))
        class_probability = ops.take_along_axis(probabilities, index, axis=-1)  # (batch, Q, M): p_q(c_m)
        boxes, target_boxes = ops.cast(boxes, "float32"), ops.cast(target_boxes, "float32")
        l1 = ops.sum(ops.abs(ops.expand_dims(boxes, 2) - ops.expand_dims(target_boxes, 1)), axis=-1)
        giou = pairwise(generalized_box_iou, box_cxcywh_to_xyxy(boxes), box_cxcywh_to_xyxy(target_boxes))
        return -self.class_cost * class_probability + self.l1_cost * l1 - self.giou_cost * giou

    def __call__(self, logits, boxes, target_labels, target_boxes):
        cost = ops.stop_gradient(self.cost_matrix(logits, boxes, target_labels, target_boxes))
        valid = ops.greater_equal(ops.cast(target_labels, "int32"), 0)
        if keras.backend.backend() == "tensorflow":
            import tensorflow as tf

            matched = tf.numpy_function(_assign, [cost, valid], tf.int32, stateful=False)
            matched.set_shape(valid.shape)
            return matched
        return ops.convert_to_tensor(_assign(ops.convert_to_numpy(cost), ops.convert_to_numpy(valid)))

    def get_config(self):
        return {"class_cost": self.class_cost, "l1_cost": self.l1_cost, "giou_cost": self.giou_cost}


# --- The loss -------------------------------------------------------------------------------------------------

@keras.saving.register_keras_serializable(package="tfsuite")
class DETRLoss(keras.losses.Loss):
    """Section 7.3, DETR's set loss: ``lambda_class CE + lambda_L1 L1 + lambda_giou (1 - GIoU)`` on a Hungarian match.

    See the module docstring for the formula, the weighting of the "no object"
    class and the normalisation by the number of target boxes.

    Args:
        num_classes: int, ``C``; the logits have ``C + 1`` columns.
        eos_coef: float, weight of the "no object" class in the cross-entropy. Default 0.1.
        class_weight, l1_weight, giou_weight: floats, ``lambda_class``, ``lambda_L1``,
            ``lambda_giou``. Defaults 1, 5, 2.
        class_cost, l1_cost, giou_cost: floats, the matching cost weights
            (:class:`HungarianMatcher`). Defaults 1, 5, 2.

    Call arguments: ``y_true`` ``{"labels": int (batch, M), -1 for padding, "boxes": (batch, M, 4)}``,
    ``y_pred`` ``{"logits": (batch, Q, C + 1), "boxes": (batch, Q, 4)}`` (the :class:`layers.detr.DETR` output).

    Returns: the scalar loss; :meth:`terms` also gives its parts and the match.

    Losses are finite with their gradients when an image (or the whole batch)
    has no targets: the box terms are then 0 and only "no object" is taught.

    Example::

        loss = DETRLoss(num_classes=3)
        value = loss({"labels": labels, "boxes": boxes}, model(images))
    """

    def __init__(self, num_classes, eos_coef=0.1, class_weight=1.0, l1_weight=5.0, giou_weight=2.0,
                 class_cost=1.0, l1_cost=5.0, giou_cost=2.0, name="detr_loss", **kwargs):
        super().__init__(name=name, **kwargs)
        self.num_classes = check_positive_int("DETRLoss num_classes", num_classes)
        self.eos_coef = check_positive_float("DETRLoss eos_coef", eos_coef)
        self.class_weight = check_positive_float("DETRLoss class_weight", class_weight, allow_zero=True)
        self.l1_weight = check_positive_float("DETRLoss l1_weight", l1_weight, allow_zero=True)
        self.giou_weight = check_positive_float("DETRLoss giou_weight", giou_weight, allow_zero=True)
        self.matcher = HungarianMatcher(class_cost, l1_cost, giou_cost)

    def terms(self, y_true, y_pred):
        """``{"loss", "class_loss", "l1_loss", "giou_loss", "num_boxes", "matched"}``; ``matched`` as the matcher's."""
        _check_predictions("DETRLoss", y_pred)
        _check_targets("DETRLoss", y_true)
        logits, boxes = ops.cast(y_pred["logits"], "float32"), ops.cast(y_pred["boxes"], "float32")
        if logits.shape[-1] != self.num_classes + 1:
            raise ValueError(f"DETRLoss(num_classes={self.num_classes}) expects logits with {self.num_classes + 1} "
                             f"columns (the last for 'no object'), got shape {tuple(logits.shape)}")
        labels = ops.cast(ops.round(ops.cast(y_true["labels"], "float32")), "int32")
        target_boxes = ops.cast(y_true["boxes"], "float32")
        matched = self.matcher(logits, boxes, labels, target_boxes)
        valid = ops.greater_equal(matched, 0)
        weight = ops.cast(valid, "float32")

        # assignment[b, m, q] = 1 where target m is matched to query q: gathers and scatters as matmuls.
        assignment = ops.one_hot(ops.maximum(matched, 0), ops.shape(logits)[1]) * ops.expand_dims(weight, -1)
        shift = ops.cast(labels - self.num_classes, "float32")
        query_labels = self.num_classes + ops.cast(ops.round(ops.einsum("bmq,bm->bq", assignment, shift)), "int32")
        log_probabilities = ops.log_softmax(logits, axis=-1)
        nll = -ops.squeeze(ops.take_along_axis(log_probabilities, ops.expand_dims(query_labels, -1), axis=-1), -1)
        class_weights = ops.where(ops.equal(query_labels, self.num_classes), self.eos_coef, 1.0)
        class_loss = ops.sum(class_weights * nll) / ops.sum(class_weights)

        dummy = ops.convert_to_tensor(np.array(_DUMMY_BOX, "float32"))
        keep = ops.expand_dims(valid, -1)
        predicted = ops.where(keep, ops.einsum("bmq,bqk->bmk", assignment, boxes), dummy)
        target = ops.where(keep, target_boxes, dummy)
        num_boxes = ops.maximum(ops.sum(weight), 1.0)
        l1_loss = ops.sum(ops.abs(predicted - target) * ops.expand_dims(weight, -1)) / num_boxes
        giou = generalized_box_iou(box_cxcywh_to_xyxy(predicted), box_cxcywh_to_xyxy(target))
        giou_loss = ops.sum((1.0 - giou) * weight) / num_boxes
        loss = self.class_weight * class_loss + self.l1_weight * l1_loss + self.giou_weight * giou_loss
        return {"loss": loss, "class_loss": class_loss, "l1_loss": l1_loss, "giou_loss": giou_loss,
                "num_boxes": num_boxes, "matched": matched}

    def call(self, y_true, y_pred):
        return self.terms(y_true, y_pred)["loss"]

    def get_config(self):
        return {
            **super().get_config(),
            "num_classes": self.num_classes,
            "eos_coef": self.eos_coef,
            "class_weight": self.class_weight,
            "l1_weight": self.l1_weight,
            "giou_weight": self.giou_weight,
            **self.matcher.get_config(),
        }


def make_train_step(model, loss, optimizer, clip_norm=0.1):
    """One DETR update as a ``tf.function``: ``step(images, targets)`` -> the loss and its three terms.

    The step returns ``{"loss", "class_loss", "l1_loss", "giou_loss"}``.

    ``model.compile``/``fit`` would apply a single loss to each output of the
    ``{"logits", "boxes"}`` dict separately, while the set loss needs both at
    once for the matching, hence a step of our own. Gradients are clipped to a
    global norm of ``clip_norm`` (DETR's 0.1; None: no clipping).

    Args:
        model: a :class:`layers.detr.DETR` (built or not).
        loss: :class:`DETRLoss`.
        optimizer: a Keras optimizer (DETR: AdamW, 1e-4, backbone 1e-5).
        clip_norm: float or None. Default 0.1.
    """
    import tensorflow as tf

    if clip_norm is not None:
        clip_norm = check_positive_float("make_train_step clip_norm", clip_norm)

    @tf.function
    def step(images, targets):
        with tf.GradientTape() as tape:
            terms = loss.terms(targets, model(images, training=True))
        gradients = tape.gradient(terms["loss"], model.trainable_variables)
        if clip_norm is not None:
            gradients, _ = tf.clip_by_global_norm(gradients, clip_norm)
        optimizer.apply_gradients(zip(gradients, model.trainable_variables))
        return {key: terms[key] for key in ("loss", "class_loss", "l1_loss", "giou_loss")}

    return step
