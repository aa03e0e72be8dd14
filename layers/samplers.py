"""Token samplers for text generation: greedy, temperature, top-k, top-p and beam search.

Small classes in the keras-hub spirit: a sampler turns next-token logits
``(batch, vocab)`` into token ids ``(batch,)``; the decode loop in
``layers/generation.py`` owns the cache and the ``tf.while_loop``.

Random samplers draw with the Gumbel-max trick, ``argmax(logits / T + g)``
with ``g = -log(-log(u))``, ``u`` from ``tf.random.stateless_uniform``: the
draw is a pure function of ``(seed, step)``, so a seeded generation is
reproducible and the loop stays a stateless graph that can be exported. This
is graph code (like the export code), hence ``tf.*`` rather than ``keras.ops``.

``BeamSampler`` is a configuration object only; beam search needs the whole
beam state, so its loop lives in ``layers/generation.py``.
"""

import tensorflow as tf

from layers.validation import check_positive_float, check_positive_int

__all__ = [
    "Sampler",
    "GreedySampler",
    "RandomSampler",
    "TopKSampler",
    "TopPSampler",
    "BeamSampler",
    "get_sampler",
]

# Logit for excluded tokens: finite so that sums and comparisons never make NaN.
_EXCLUDED = -1e9


class Sampler:
    """Base class: ``next_token(logits, seed) -> (batch,) int32``.

    Args:
        temperature: float > 0, logits are divided by it before sampling
            (below 1 sharpens, above 1 flattens the distribution). Default 1.
    """

    is_random = True

    def __init__(self, temperature=1.0):
        self.temperature = check_positive_float(f"{type(self).__name__} temperature", temperature)

    def next_token(self, logits, seed):
        """Pick the next token for each row.

        Args:
            logits: float ``(batch, vocab)``.
            seed: int32 ``(2,)`` tensor, unique per step.
        """
        raise NotImplementedError

    def _gumbel_argmax(self, logits, seed):
        logits = tf.cast(logits, tf.float32) / self.temperature
        u = tf.random.stateless_uniform(tf.shape(logits), seed=seed, minval=1e-20, maxval=1.0)
        return tf.argmax(logits - tf.math.log(-tf.math.log(u)), axis=-1, output_type=tf.int32)

    def get_config(self):
        return {"temperature": self.temperature}

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


class GreedySampler(Sampler):
    """Greedy decoding: ``argmax_w p(w | context)``; no randomness, no temperature."""

    is_random = False

    def __init__(self):
        super().__init__(temperature=1.0)

    def next_token(self, logits, seed=None):
        return tf.argmax(logits, axis=-1, output_type=tf.int32)

    def get_config(self):
        return {}


class RandomSampler(Sampler):
    """Sample from the whole distribution ``softmax(logits / temperature)``."""

    def next_token(self, logits, seed):
        return self._gumbel_argmax(logits, seed)


class TopKSampler(Sampler):
    """Top-k sampling: sample among the ``k`` most likely tokens only.

    Args:
        k: int >= 1, number of candidate tokens. Default 10.
        temperature: float > 0. Default 1.
    """

    def __init__(self, k=10, temperature=1.0):
        super().__init__(temperature)
        self.k = check_positive_int("TopKSampler k", k)

    def next_token(self, logits, seed):
        logits = tf.cast(logits, tf.float32)
        k = min(self.k, logits.shape[-1])
        kth = tf.reduce_min(tf.math.top_k(logits, k=k).values, axis=-1, keepdims=True)
        return self._gumbel_argmax(tf.where(logits >= kth, logits, _EXCLUDED), seed)

    def get_config(self):
        return {**super().get_config(), "k": self.k}


class TopPSampler(Sampler):
    """Top-p (nucleus) sampling: sample from the smallest set of tokens whose probability reaches ``p``.

    Args:
        p: float in (0, 1], probability mass kept. Default 0.9.
        temperature: float > 0, applied before the nucleus is chosen. Default 1.
    """

    def __init__(self, p=0.9, temperature=1.0):
        super().__init__(temperature)
        p = float(p)
        if not 0.0 < p <= 1.0:
            raise ValueError(f"TopPSampler p must be in (0, 1], got {p}")
        self.p = p

    def next_token(self, logits, seed):
        logits = tf.cast(logits, tf.float32) / self.temperature
        sorted_logits, order = tf.math.top_k(logits, k=logits.shape[-1])
        probs = tf.nn.softmax(sorted_logits, axis=-1)
        # Keep a token while the mass before it is still below p: the most
        # likely token is always kept, and the set just reaches p.
        before = tf.math.cumsum(probs, axis=-1, exclusive=True)
        kept = tf.where(before < self.p, sorted_logits, _EXCLUDED)
        u = tf.random.stateless_uniform(tf.shape(kept), seed=seed, minval=1e-20, maxval=1.0)
        choice = tf.argmax(kept - tf.math.log(-tf.math.log(u)), axis=-1, output_type=tf.int32)
        return tf.gather(order, choice, batch_dims=1)

    def get_config(self):
        return {**super().get_config(), "p": self.p}


class BeamSampler:
    """Beam search: keep the ``num_beams`` most likely partial sequences.

    A beam that emits ``end_token_id`` (or reaches ``max_new_tokens``) is
    finished: it keeps its log-probability and competes with the live beams
    for a slot. At the end beams are ranked by
    ``log p(sequence) / generated_length ** length_penalty`` (0 compares raw
    log-probabilities, which favours short sequences; 1 compares the mean
    per-token log-probability).

    Args:
        num_beams: int >= 1 (1 is greedy search). Default 4.
        length_penalty: float >= 0, exponent of the length normalisation.
            Default 1.0.
    """

    is_random = False

    def __init__(self, num_beams=4, length_penalty=1.0):
        self.num_beams = check_positive_int("BeamSampler num_beams", num_beams)
        self.length_penalty = check_positive_float("BeamSampler length_penalty", length_penalty, allow_zero=True)

    def get_config(self):
        return {"num_beams": self.num_beams, "length_penalty": self.length_penalty}

    def __repr__(self):
        return f"BeamSampler(num_beams={self.num_beams}, length_penalty={self.length_penalty})"


_BY_NAME = {
    "greedy": GreedySampler,
    "random": RandomSampler,
    "top_k": TopKSampler,
    "top_p": TopPSampler,
    "beam": BeamSampler,
}


def get_sampler(sampler, **kwargs):
    """A sampler instance from a name (``greedy``, ``random``, ``top_k``, ``top_p``, ``beam``) or an instance."""
    if isinstance(sampler, (Sampler, BeamSampler)):
        return sampler
    try:
        cls = _BY_NAME[sampler]
    except (KeyError, TypeError):
        raise ValueError(f"unknown sampler {sampler!r}; choose one of {sorted(_BY_NAME)}") from None
    return cls(**kwargs)
