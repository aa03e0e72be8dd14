"""Wav2Vec 2.0 self-supervised pre-training (textbook section 9.2): contrastive + diversity loss on unlabeled audio.

A procedure, not a layer: it drives a :class:`layers.wav2vec2.Wav2Vec2PreTrainer`
over batches of raw 16 kHz waveforms (no transcripts). Each step:

1. crop/pad the utterances to one length, normalize each to zero mean and unit variance
   (:func:`waveform_batches`);
2. draw the time span mask (:func:`layers.wav2vec2.compute_span_mask`) and, for
   every masked step, ``K`` distractor steps among the *other masked steps of the
   same utterance* (:func:`sample_negative_indices`); both on the host in NumPy;
3. minimize ``L = L_m + alpha L_d`` with

   ``L_m = -log exp(sim(c_t, q_t) / kappa) / sum_{q~ in Q_t} exp(sim(c_t, q~) / kappa)``
   (:func:`contrastive_loss`; ``sim`` the cosine similarity, ``Q_t = {q_t} + K distractors``,
   averaged over the masked steps), and

   ``L_d = (GV - sum_g exp(-sum_v pbar_gv log pbar_gv)) / GV`` (:func:`diversity_loss`;
   ``pbar_g`` the quantizer's softmax averaged over the batch's masked steps),

   while the Gumbel temperature is annealed ``tau = max(tau_max * decay^step, tau_min)``.

Both losses are averaged over masked steps; Hugging Face sums them instead (the
same gradient direction, scaled by the number of masked steps). Not included: the
paper's L2 penalty on the feature encoder's output.

Example::

    model = Wav2Vec2PreTrainer(backbone, GumbelVectorQuantizer(2, 320, 256, 256), projection_dim=256)
    config = Wav2Vec2PretrainingConfig(steps=1000, batch_size=8)
    history = pretrain_wav2vec2(model, waveform_batches(waveforms, config), config)
    evaluate_pretraining(model, held_out_batches, config)   # contrastive, diversity, codebook_usage
"""

from __future__ import annotations

import dataclasses
import itertools

import keras
import numpy as np
import tensorflow as tf

from layers.wav2vec2 import compute_span_mask

__all__ = [
    "Wav2Vec2PretrainingConfig",
    "normalize_waveform",
    "pad_waveforms",
    "waveform_batches",
    "sample_negative_indices",
    "contrastive_loss",
    "diversity_loss",
    "codebook_usage",
    "gumbel_temperature",
    "pretraining_losses",
    "pretrain_wav2vec2",
    "evaluate_pretraining",
]

_NEG_INF = -1e9  # a logit that softmax turns into 0 without the NaN gradients of -inf


@dataclasses.dataclass
class Wav2Vec2PretrainingConfig:
    """Hyperparameters of Wav2Vec 2.0 pre-training (paper values for BASE where they apply).

    Args:
        steps: int, updates. Default 1000.
        batch_size: int, utterances per batch (:func:`waveform_batches`). Default 8.
        crop_samples: int, utterances longer than this are randomly cropped to it. Default 64000 (4 s).
        learning_rate: float, Adam peak rate. Default 5e-4.
        warmup_steps: int, linear warm-up, then linear decay to 0 at ``steps``. Default 0.
        grad_clip_norm: float or None, global gradient norm clip. Default 1.0.
        mask_prob: float, share of frames masked before overlaps (paper ``p * M``). Default 0.65.
        mask_length: int ``M``. Default 10.
        num_negatives: int ``K``. Default 100.
        contrastive_temperature: float ``kappa``. Default 0.1.
        diversity_weight: float ``alpha``. Default 0.1.
        max_gumbel_temperature, min_gumbel_temperature, gumbel_temperature_decay: the Gumbel
            ``tau`` schedule. Default 2.0, 0.5, 0.999995.
        seed: int, for crops, masks and distractors. Default 0.
    """

    steps: int = 1000
    batch_size: int = 8
    crop_samples: int = 64000
    learning_rate: float = 5e-4
    warmup_steps: int = 0
    grad_clip_norm: float | None = 1.0
    mask_prob: float = 0.65
    mask_length: int = 10
    num_negatives: int = 100
    contrastive_temperature: float = 0.1
    diversity_weight: float = 0.1
    max_gumbel_temperature: float = 2.0
    min_gumbel_temperature: float = 0.5
    gumbel_temperature_decay: float = 0.999995
    seed: int = 0


# --------------------------------------------------------------------------- data


def normalize_waveform(waveform):
    """Zero mean, unit variance (the Wav2Vec 2.0 feature extractor's normalization): float32 ``(samples,)``."""
    waveform = np.asarray(waveform, np.float32)
    return (waveform - waveform.mean()) / np.sqrt(waveform.var() + 1e-7)


def pad_waveforms(waveforms, length=None):
    """Normalize each waveform and zero-pad them to ``length`` (default: the longest).

    Returns: ``{"waveform": float32 (batch, length), "padding_mask": bool (batch, length)}``.
    """
    length = length or max(len(w) for w in waveforms)
    batch = np.zeros((len(waveforms), length), np.float32)
    mask = np.zeros((len(waveforms), length), bool)
    for i, w in enumerate(waveforms):
        w = normalize_waveform(w)[:length]
        batch[i, : len(w)] = w
        mask[i, : len(w)] = True
    return {"waveform": batch, "padding_mask": mask}


def waveform_batches(waveforms, config, seed=None):
    """Endless batches of ``config.batch_size`` utterances drawn at random from ``waveforms``.

    Utterances longer than ``config.crop_samples`` are cropped at a random offset; the batch is
    padded to its longest (at most ``crop_samples``), see :func:`pad_waveforms`.

    Args:
        waveforms: sequence of float arrays ``(samples,)`` at 16 kHz.
        config: :class:`Wav2Vec2PretrainingConfig`.
        seed: int or None (``config.seed``).
    """
    rng = np.random.default_rng(config.seed if seed is None else seed)
    while True:
        chosen = rng.choice(len(waveforms), config.batch_size, replace=len(waveforms) < config.batch_size)
        crops = []
        for i in chosen:
            w = np.asarray(waveforms[i])
            start = rng.integers(0, len(w) - config.crop_samples + 1) if len(w) > config.crop_samples else 0
            crops.append(w[start : start + config.crop_samples])
        yield pad_waveforms(crops, min(config.crop_samples, max(len(c) for c in crops)))


def sample_negative_indices(span_mask, num_negatives, seed=None):
    """Distractors for the contrastive task: for each masked step, ``K`` other masked steps of its utterance.

    Drawn uniformly with replacement among the utterance's masked steps other than ``t``
    itself (as the paper; Hugging Face's ``_sample_negative_indices``). An utterance with a
    single masked step gets that step as its "distractors", which :func:`contrastive_loss`
    then ignores (equal to the positive).

    Args:
        span_mask: bool ``(batch, frames)``, True at masked steps.
        num_negatives: int ``K``.
        seed: int, ``np.random.Generator`` or None.

    Returns: int32 ``(batch, frames, K)``, frame indices into the same utterance (0 at unmasked steps).
    """
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    span_mask = np.asarray(span_mask, bool)
    out = np.zeros(span_mask.shape + (num_negatives,), np.int32)
    for b, row in enumerate(span_mask):
        steps = np.flatnonzero(row)
        n = len(steps)
        if n == 0:
            continue
        if n == 1:
            out[b, steps] = steps[0]
            continue
        draws = rng.integers(0, n - 1, size=(n, num_negatives))
        draws += draws >= np.arange(n)[:, None]  # skip the step itself
        out[b, steps] = steps[draws]
    return out


# --------------------------------------------------------------------------- losses


def contrastive_loss(context, quantized, span_mask, negative_indices, temperature=0.1):
    """``L_m = -log exp(sim(c_t, q_t)/kappa) / sum_{q~ in Q_t} exp(sim(c_t, q~)/kappa)``, mean over masked ``t``.

    ``sim(a, b) = a.b / (|a| |b|)``. A distractor exactly equal to ``q_t`` (the same codewords,
    frequent with small codebooks) is left out of ``Q_t``, as in the paper's code.

    Args:
        context: float ``(batch, frames, dim)``, ``c_t`` (projected).
        quantized: float ``(batch, frames, dim)``, ``q_t``.
        span_mask: bool ``(batch, frames)``, the steps scored.
        negative_indices: int ``(batch, frames, K)`` (:func:`sample_negative_indices`).
        temperature: float ``kappa``. Default 0.1.

    Returns: scalar float32.
    """
    context = tf.cast(context, tf.float32)
    quantized = tf.cast(quantized, tf.float32)
    negatives = tf.gather(quantized, tf.cast(negative_indices, tf.int32), batch_dims=1)  # (B, T, K, D)
    candidates = tf.concat([quantized[:, :, None], negatives], axis=2)  # (B, T, 1 + K, D)
    c = tf.math.l2_normalize(context, axis=-1, epsilon=1e-8)[:, :, None]
    logits = tf.reduce_sum(c * tf.math.l2_normalize(candidates, axis=-1, epsilon=1e-8), axis=-1) / temperature
    same = tf.reduce_all(tf.equal(negatives, quantized[:, :, None]), axis=-1)
    same = tf.concat([tf.zeros_like(same[:, :, :1]), same], axis=-1)
    logits = tf.where(same, tf.cast(_NEG_INF, logits.dtype), logits)
    per_step = -tf.nn.log_softmax(logits, axis=-1)[..., 0]
    weights = tf.cast(span_mask, tf.float32)
    return tf.reduce_sum(per_step * weights) / tf.maximum(tf.reduce_sum(weights), 1.0)


def diversity_loss(probs, step_mask=None):
    """``L_d = (GV - sum_g exp(-sum_v pbar_gv log pbar_gv)) / GV``: 0 when every entry is equally used, near 1 with one.

    Args:
        probs: float ``(..., G, V)``, the quantizer's softmax per step.
        step_mask: bool ``probs.shape[:-2]`` or None: the steps averaged into ``pbar`` (all when None).

    Returns: scalar float32.
    """
    probs = tf.cast(probs, tf.float32)
    g, v = probs.shape[-2], probs.shape[-1]
    flat = tf.reshape(probs, (-1, g, v))
    weights = tf.ones(tf.shape(flat)[:1]) if step_mask is None else tf.reshape(tf.cast(step_mask, tf.float32), (-1,))
    mean = tf.reduce_sum(flat * weights[:, None, None], axis=0) / tf.maximum(tf.reduce_sum(weights), 1.0)
    perplexity = tf.exp(-tf.reduce_sum(mean * tf.math.log(mean + 1e-7), axis=-1))
    return (g * v - tf.reduce_sum(perplexity)) / (g * v)


def codebook_usage(onehot, step_mask=None):
    """Share of the ``G * V`` codebook entries selected at least once (over the ``step_mask`` steps).

    Args:
        onehot: ``(..., G, V)`` selections (the quantizer's ``onehot``).
        step_mask: bool ``onehot.shape[:-2]`` or None.

    Returns: float in ``[0, 1]``.
    """
    onehot = np.asarray(onehot)
    g, v = onehot.shape[-2:]
    flat = onehot.reshape(-1, g, v)
    if step_mask is not None:
        flat = flat[np.asarray(step_mask, bool).reshape(-1)]
    return float((flat.sum(axis=0) > 0).sum() / (g * v))


def gumbel_temperature(step, config):
    """``tau = max(tau_max * decay^step, tau_min)``."""
    return max(config.max_gumbel_temperature * config.gumbel_temperature_decay**step, config.min_gumbel_temperature)


def pretraining_losses(outputs, span_mask, negative_indices, config):
    """``{"loss": L_m + alpha L_d, "contrastive": L_m, "diversity": L_d}`` of a pre-trainer's ``outputs``."""
    contrastive = contrastive_loss(outputs["context"], outputs["quantized"], span_mask, negative_indices,
                                   config.contrastive_temperature)
    diversity = diversity_loss(outputs["probs"], span_mask)
    return {"loss": contrastive + config.diversity_weight * diversity, "contrastive": contrastive,
            "diversity": diversity}


# --------------------------------------------------------------------------- procedure


def _masks(batch, model, config, rng):
    """Span mask and distractors for one batch, inside each utterance's real frames."""
    encoder = model.backbone.feature_encoder
    waveform = np.asarray(batch["waveform"])
    lengths = np.asarray(batch["padding_mask"]).sum(axis=-1) if "padding_mask" in batch else \
        np.full(len(waveform), waveform.shape[1])
    frames = encoder.output_length(waveform.shape[1])
    frame_lengths = [encoder.output_length(int(n)) for n in lengths]
    span_mask = compute_span_mask(len(waveform), frames, config.mask_prob, config.mask_length,
                                  frame_lengths=frame_lengths, seed=rng)
    return span_mask, sample_negative_indices(span_mask, config.num_negatives, rng)


def _learning_rate(step, config):
    if config.warmup_steps and step < config.warmup_steps:
        return config.learning_rate * (step + 1) / config.warmup_steps
    remaining = max(config.steps - config.warmup_steps, 1)
    return config.learning_rate * max(0.0, 1.0 - (step - config.warmup_steps) / remaining)


def pretrain_wav2vec2(model, batches, config, print_fn=None, log_every=50):
    """Pre-train ``model`` for ``config.steps`` updates on unlabeled audio; returns the per-step history.

    Args:
        model: :class:`layers.wav2vec2.Wav2Vec2PreTrainer` (built or not).
        batches: iterator of ``{"waveform": (B, S), "padding_mask": (B, S)}`` (:func:`waveform_batches`).
        config: :class:`Wav2Vec2PretrainingConfig`.
        print_fn: callable or None, gets a progress line every ``log_every`` steps.
        log_every: int. Default 50.

    Returns: dict of lists ``loss``, ``contrastive``, ``diversity``, ``perplexity`` (summed over groups),
    ``temperature``, ``learning_rate``.
    """
    rng = np.random.default_rng(config.seed)
    optimizer = keras.optimizers.Adam(config.learning_rate, global_clipnorm=config.grad_clip_norm)
    batches = iter(batches)
    first = next(batches)
    model(np.asarray(first["waveform"])[:1])  # build the weights before the optimizer slots
    optimizer.build(model.trainable_variables)

    @tf.function(reduce_retracing=True)
    def train_step(waveform, padding_mask, span_mask, negatives):
        with tf.GradientTape() as tape:
            outputs = model(waveform, padding_mask=padding_mask, span_mask=span_mask, training=True)
            losses = pretraining_losses(outputs, span_mask, negatives, config)
        grads = tape.gradient(losses["loss"], model.trainable_variables)
        optimizer.apply(grads, model.trainable_variables)
        return {**losses, "perplexity": tf.reduce_sum(outputs["perplexity"])}

    history = {k: [] for k in ("loss", "contrastive", "diversity", "perplexity", "temperature", "learning_rate")}
    for step, batch in zip(range(config.steps), itertools.chain([first], batches)):
        temperature, lr = gumbel_temperature(step, config), _learning_rate(step, config)
        model.quantizer.set_temperature(temperature)
        optimizer.learning_rate = lr
        span_mask, negatives = _masks(batch, model, config, rng)
        padding_mask = batch.get("padding_mask", np.ones(np.shape(batch["waveform"]), bool))
        result = train_step(tf.constant(batch["waveform"], tf.float32), tf.constant(padding_mask, tf.bool),
                            tf.constant(span_mask), tf.constant(negatives))
        for key, value in result.items():
            history[key].append(float(value))
        history["temperature"].append(temperature)
        history["learning_rate"].append(lr)
        if print_fn is not None and (step % log_every == 0 or step == config.steps - 1):
            print_fn(f"step {step}: loss {history['loss'][-1]:.4f} contrastive {history['contrastive'][-1]:.4f} "
                     f"diversity {history['diversity'][-1]:.4f} perplexity {history['perplexity'][-1]:.1f} "
                     f"tau {temperature:.3f}")
    return history


def evaluate_pretraining(model, batches, config, seed=0):
    """Held-out pre-training scores at inference (argmax codewords, no dropout), same masks for every call.

    Args:
        model: :class:`layers.wav2vec2.Wav2Vec2PreTrainer`.
        batches: a finite iterable of batches (a list, to score the same audio before and after training).
        config: :class:`Wav2Vec2PretrainingConfig` (masking, ``K``, ``kappa``).
        seed: int, for the masks and distractors.

    Returns: ``{"contrastive", "diversity"}`` averaged over batches and ``"codebook_usage"``, the share of
    the ``G * V`` entries picked at some real frame of the batches.
    """
    rng = np.random.default_rng(seed)
    totals, used = {"contrastive": [], "diversity": []}, None
    for batch in batches:
        span_mask, negatives = _masks(batch, model, config, rng)
        padding_mask = np.asarray(batch.get("padding_mask", np.ones(np.shape(batch["waveform"]), bool)))
        outputs = model(np.asarray(batch["waveform"], np.float32), padding_mask=padding_mask, span_mask=span_mask,
                        training=False)
        losses = pretraining_losses(outputs, span_mask, negatives, config)
        for key in totals:
            totals[key].append(float(losses[key]))
        frames = keras.ops.convert_to_numpy(
            model.backbone.frame_lengths(padding_mask.sum(-1).astype("int32")))
        onehot = keras.ops.convert_to_numpy(outputs["onehot"])
        real = np.arange(onehot.shape[1])[None] < frames[:, None]
        picked = onehot[real].sum(axis=0) > 0
        used = picked if used is None else used | picked
    return {**{k: float(np.mean(v)) for k, v in totals.items()}, "codebook_usage": float(used.mean())}
