"""Speculative decoding (textbook section 11.2): a small draft model proposes k tokens, the target verifies them at once.

A decoder-only target model is slow per token mostly because every token is
one full forward pass. Speculative decoding (Leviathan et al. 2023, "Fast
Inference from Transformers via Speculative Decoding"; Chen et al. 2023,
"Accelerating Large Language Model Decoding with Speculative Sampling") lets a
cheap draft model guess ``k`` tokens one by one, then runs the target once over
all of them: the target's KV-cache takes a chunk of ``k + 1`` tokens and its
causal mask gives the target distribution after every prefix in that single
pass. One round, with ``x`` the accepted sequence so far::

    draft:   d_i ~ q_i = q(. | x, d_1 .. d_{i-1})            i = 1 .. k  (k small passes)
    target:  p_i = p(. | x, d_1 .. d_{i-1})                  i = 1 .. k+1 (one pass)
    accept d_i with probability min(1, p_i(d_i) / q_i(d_i)), in order, until one is rejected;
    rejected at i:  emit t ~ normalize(max(0, p_i - q_i))
    all k accepted: emit t ~ p_{k+1}

Each round emits between 1 and ``k + 1`` tokens, and every emitted token is
distributed exactly as if sampled from the target alone: accepting ``d`` has
probability ``min(q(d), p(d))`` and the residual supplies the remaining
``max(0, p - q)`` mass (Leviathan et al., Theorem 1). Greedy decoding is the
limit temperature -> 0, where ``p`` and ``q`` are one-hot: a draft token is
kept while it equals the target's argmax, and the first mismatch is replaced
by the target's argmax, so the output is the target's own greedy output token
for token. Both distributions go through the same temperature and top-p
filter, so sampling recovers the target's filtered distribution (what
``layers.samplers.TopPSampler`` would draw from).

The caches follow ``layers/generation.py``: fixed-size KV tensors and no
rollback. After a rejection the target cache holds keys and values of
discarded draft tokens beyond the current length; the causal mask (query
``i`` sees keys ``<= i``) hides them, and the next round overwrites them
before any query can see them. The only bookkeeping is the draft's: when all
of a round's drafts are accepted it never fed the last one, so it does that
one extra step.

The whole decode (prefill, rounds, inner draft loop) is one ``tf.function``
with nested ``tf.while_loop``s, compiled with XLA by default, like
``TextGenerator``. This is engine code, not a layer, hence ``tf.*``.

Batch size 1 only: with a batch, rows accept different numbers of tokens per
round and the caches would need per-row positions.
"""

import dataclasses

import numpy as np
import tensorflow as tf

from layers.validation import check_positive_int

__all__ = ["SpeculativeDecoder", "SpeculativeStats"]


@dataclasses.dataclass(frozen=True)
class SpeculativeStats:
    """What one speculative generation did.

    Attributes:
        new_tokens: int, tokens generated after the prompt (end token included).
        draft_tokens_proposed: int, draft tokens sent to the target for verification.
        draft_tokens_accepted: int, of those, the ones the target kept.
        target_calls: int, target verification passes (one per round; the
            prompt's prefill pass is not counted).
        draft_calls: int, draft single-token passes (prefill not counted).
    """

    new_tokens: int
    draft_tokens_proposed: int
    draft_tokens_accepted: int
    target_calls: int
    draft_calls: int

    @property
    def acceptance_rate(self):
        """Accepted over proposed draft tokens (0 when nothing was proposed)."""
        return self.draft_tokens_accepted / self.draft_tokens_proposed if self.draft_tokens_proposed else 0.0

    @property
    def tokens_per_target_call(self):
        """New tokens per target pass: 1 for plain decoding, up to ``k + 1`` here."""
        return self.new_tokens / self.target_calls if self.target_calls else 0.0


class SpeculativeDecoder:
    """Speculative decoding of a decoder-only ``target`` with a smaller ``draft`` (section 11.2).

    Args:
        target: the model whose output distribution is produced: a
            ``TransformerCausalLM``, or anything with its generation interface
            (``vocab_size``, ``max_length``, ``build_cache(batch, length)``,
            ``call_with_cache(token_ids (1, T), cache, index) -> (logits (1, T,
            vocab), cache)``).
        draft: the proposer, same interface and same vocabulary; cheaper than
            the target (fewer or narrower layers, or a distilled copy).
        num_draft_tokens: int >= 1, draft tokens ``k`` proposed per round; the
            target verifies ``k + 1`` positions per pass, so ``k + 1`` must not
            exceed the target's ``max_length``. Default 4.
        max_new_tokens: int >= 1, tokens to generate after the prompt. Default 32.
        end_token_id: int or None, stop once this token is generated (it is
            kept in the output). Default None.
        pad_token_id: int, written after the generated tokens. Default 0.
        temperature: float >= 0; 0 (default) is greedy decoding, identical to
            the target's own greedy output; above 0 samples from
            ``softmax(logits / temperature)``.
        top_p: float in (0, 1], nucleus of the sampling distribution (both
            models' distributions are filtered alike). Default 1 (no filter).
        jit_compile: bool or None, compile the decode loop with XLA. Default
            None: XLA for greedy decoding, a plain graph when sampling. (With
            TF 2.21's XLA CPU, the sampling loop is compiled again on every call
            whose random draws differ: about 1 s per call, and each compile
            maps new JIT code that is never freed, so the process dies after
            some 700 calls with "LLVM compilation error: Cannot allocate
            memory". Neither the seed as an argument nor as a variable avoids
            it; the greedy loop compiles once.)

    Call: ``decoder(prompt_ids, seed=0)`` with int ``prompt_ids (1, P)`` (batch
    size 1) returns a dict: ``token_ids (1, P + max_new_tokens)`` NumPy int32
    (prompt, generated tokens, then ``pad_token_id``), ``lengths (1,)`` and
    ``prompt_lengths (1,)``, the same layout as ``TextGenerator``, plus
    ``stats``, a :class:`SpeculativeStats`. A given ``seed`` always gives the
    same output.

    Example:
    >>> target = TransformerCausalLM(vocab_size=100, max_length=64, num_layers=4, hidden_dim=128, num_heads=4)
    >>> draft = TransformerCausalLM(vocab_size=100, max_length=64, num_layers=1, hidden_dim=32)
    >>> decoder = SpeculativeDecoder(target, draft, num_draft_tokens=4, max_new_tokens=20)
    >>> out = decoder(np.array([[5, 6, 7]]))
    >>> out["token_ids"].shape, out["stats"].acceptance_rate  # doctest: +SKIP
    ((1, 23), 0.35)
    """

    def __init__(
        self,
        target,
        draft,
        num_draft_tokens=4,
        max_new_tokens=32,
        end_token_id=None,
        pad_token_id=0,
        temperature=0.0,
        top_p=1.0,
        jit_compile=None,
    ):
        for role, model in (("target", target), ("draft", draft)):
            if getattr(model, "is_encoder_decoder", False):
                raise ValueError(
                    f"SpeculativeDecoder needs decoder-only models; the {role} is an encoder-decoder "
                    f"{type(model).__name__}"
                )
        if target.vocab_size != draft.vocab_size:
            raise ValueError(
                f"target and draft must share one vocabulary, got vocab_size {target.vocab_size} (target) and "
                f"{draft.vocab_size} (draft)"
            )
        self.target, self.draft = target, draft
        self.vocab_size = int(target.vocab_size)
        self.num_draft_tokens = check_positive_int("SpeculativeDecoder num_draft_tokens", num_draft_tokens)
        if self.num_draft_tokens + 1 > target.max_length:
            raise ValueError(
                f"num_draft_tokens={self.num_draft_tokens}: the target verifies num_draft_tokens + 1 positions per "
                f"pass, more than its max_length={target.max_length}; lower num_draft_tokens"
            )
        self.max_new_tokens = check_positive_int("SpeculativeDecoder max_new_tokens", max_new_tokens)
        self.max_prompt_length = min(target.max_length, draft.max_length) - self.max_new_tokens
        if self.max_prompt_length < 1:
            raise ValueError(
                f"max_new_tokens={self.max_new_tokens} leaves no room for a prompt within max_length "
                f"{min(target.max_length, draft.max_length)} (the smaller of target and draft)"
            )
        for name, token in (("end_token_id", end_token_id), ("pad_token_id", pad_token_id)):
            if token is not None and not 0 <= int(token) < self.vocab_size:
                raise ValueError(f"{name} must be in [0, {self.vocab_size}), got {token}")
        self.end_token_id = None if end_token_id is None else int(end_token_id)
        self.pad_token_id = int(pad_token_id)
        temperature = float(temperature)
        if not temperature >= 0.0:
            raise ValueError(f"temperature must be >= 0 (0 is greedy decoding), got {temperature}")
        self.temperature = temperature
        top_p = float(top_p)
        if not 0.0 < top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], got {top_p}")
        self.top_p = top_p
        self.greedy = temperature == 0.0
        for model in (target, draft):
            if hasattr(model, "built") and not model.built:
                model.build()
        # autograph=False: the loops are explicit tf.while_loops; Python ifs are trace-time choices.
        self.jit_compile = self.greedy if jit_compile is None else bool(jit_compile)
        self._compiled = tf.function(self._generate, jit_compile=self.jit_compile, autograph=False)

    # -- public boundary ---------------------------------------------------------------------

    def __call__(self, prompt_ids, seed=0):
        prompt_ids = np.asarray(prompt_ids)
        if prompt_ids.ndim != 2 or not np.issubdtype(prompt_ids.dtype, np.integer):
            raise ValueError(
                f"prompt_ids must be int token ids of shape (1, prompt_length), got shape {prompt_ids.shape} "
                f"and dtype {prompt_ids.dtype}"
            )
        if prompt_ids.shape[0] != 1:
            raise ValueError(
                f"SpeculativeDecoder decodes one prompt at a time (batch size 1), got a batch of "
                f"{prompt_ids.shape[0]}; call it once per prompt"
            )
        length = prompt_ids.shape[1]
        if not 1 <= length <= self.max_prompt_length:
            raise ValueError(
                f"a prompt of {length} tokens plus max_new_tokens={self.max_new_tokens} does not fit max_length "
                f"{self.max_prompt_length + self.max_new_tokens}: prompts must have 1 to {self.max_prompt_length} "
                "tokens; shorten the prompt or lower max_new_tokens"
            )
        if prompt_ids.min() < 0 or prompt_ids.max() >= self.vocab_size:
            raise ValueError(f"prompt_ids must be in [0, {self.vocab_size}), got values {prompt_ids.min()}..{prompt_ids.max()}")
        out = self._compiled(tf.constant(prompt_ids[0], tf.int32), tf.constant(seed, tf.int32))
        out = {key: int(value) if value.shape.rank == 0 else value.numpy() for key, value in out.items()}
        total = length + self.max_new_tokens
        tokens = np.where(np.arange(total) < out["length"], out["tokens"][:total], self.pad_token_id)
        stats = SpeculativeStats(
            new_tokens=out["length"] - length,
            draft_tokens_proposed=out["proposed"],
            draft_tokens_accepted=out["accepted"],
            target_calls=out["rounds"],
            draft_calls=out["draft_calls"],
        )
        return {
            "token_ids": tokens[None].astype(np.int32),
            "lengths": np.array([out["length"]], np.int32),
            "prompt_lengths": np.array([length], np.int32),
            "stats": stats,
        }

    # -- graph --------------------------------------------------------------------------------

    def _probabilities(self, logits):
        """Float32 logits ``(..., vocab)`` -> the sampling distribution (one-hot argmax when greedy)."""
        logits = tf.cast(logits, tf.float32)
        if self.greedy:
            return tf.one_hot(tf.argmax(logits, axis=-1, output_type=tf.int32), self.vocab_size)
        probs = tf.nn.softmax(logits / self.temperature, axis=-1)
        if self.top_p < 1.0:
            # TopPSampler's nucleus: keep a token while the mass before it (in sorted order) is below p.
            flat = tf.reshape(probs, [-1, self.vocab_size])
            sorted_probs, order = tf.math.top_k(flat, k=self.vocab_size)
            before = tf.math.cumsum(sorted_probs, axis=-1, exclusive=True)
            kept = tf.where(before < self.top_p, sorted_probs, 0.0)
            kept = tf.gather(kept, tf.argsort(order, axis=-1), batch_dims=1)
            probs = tf.reshape(kept / tf.reduce_sum(kept, axis=-1, keepdims=True), tf.shape(probs))
        return probs

    def _sample(self, probs, seed):
        """One token from ``probs (vocab,)``: argmax when greedy, else Gumbel-max with a stateless seed."""
        if self.greedy:
            return tf.argmax(probs, output_type=tf.int32)
        u = tf.random.stateless_uniform(tf.shape(probs), seed=seed, minval=1e-20, maxval=1.0)
        return tf.argmax(tf.math.log(probs) - tf.math.log(-tf.math.log(u)), output_type=tf.int32)

    def _generate(self, prompt, seed):
        k, vocab = self.num_draft_tokens, self.vocab_size
        length = prompt.shape[0]
        total = length + self.max_new_tokens
        # The target's cache must hold a whole (k + 1)-token verification chunk; near
        # the end of max_length the chunk starts earlier instead (see below).
        target_length = min(self.target.max_length, total + k)
        tokens = tf.pad(prompt, [[0, total + k - length]])
        prompt_2d = tf.reshape(prompt, [1, length])
        # Prefill: both caches get the prompt. The invariant of the loop is that both
        # caches are right for positions [0, n - 1) and each round feeds token n - 1.
        _, target_cache = self.target.call_with_cache(prompt_2d, self.target.build_cache(1, target_length), 0)
        _, draft_cache = self.draft.call_with_cache(prompt_2d, self.draft.build_cache(1, total), 0)

        def key(n, purpose):
            # Round n (the length when it starts) uses keys n * (k + 2) + 0 .. k + 1: never reused.
            return tf.stack([seed, n * (k + 2) + purpose])

        def draft_step(n, j, tokens, cache, q):
            position = n - 1 + j
            logits, cache = self.draft.call_with_cache(tf.reshape(tokens[position], [1, 1]), cache, position)
            probs = self._probabilities(tf.reshape(logits, [vocab]))
            token = self._sample(probs, key(n, j))
            tokens = tf.tensor_scatter_nd_update(tokens, [[position + 1]], [token])
            return j + 1, tokens, cache, tf.tensor_scatter_nd_update(q, [[j]], [probs])

        def round_(state):
            n = state["n"]
            # Drafts worth proposing: no more than the tokens still to generate.
            m = tf.minimum(k, total - n)
            # q[i]: the draft's distribution for position n + i. Rows >= m stay 0, so when
            # all m drafts are accepted the residual max(0, p - q) below is p itself.
            q = tf.zeros([k + 1, vocab])
            _, tokens, draft_cache, q = tf.while_loop(
                lambda j, *_: j < m, lambda j, *rest: draft_step(n, j, *rest),
                (tf.constant(0), state["tokens"], state["draft_cache"], q),
            )
            # One target pass over k + 1 tokens starting at n - 1. If that would run past
            # the target's positions, start earlier: re-feeding accepted tokens rewrites
            # their keys and values with the same numbers.
            start = tf.minimum(n - 1, target_length - 1 - k)
            logits, target_cache = self.target.call_with_cache(
                tf.reshape(tf.slice(tokens, [start], [k + 1]), [1, k + 1]), state["target_cache"], start
            )
            rows = tf.minimum(n - 1 - start + tf.range(k + 1), k)
            p = self._probabilities(tf.gather(tf.reshape(logits, [k + 1, vocab]), rows))  # p[i]: position n + i
            drafts = tf.slice(tokens, [n], [k])
            p_draft = tf.gather(p[:k], drafts, batch_dims=1)
            q_draft = tf.gather(q[:k], drafts, batch_dims=1)
            # Accept with probability min(1, p/q): u < p/q, as u * q < p (no division by 0;
            # greedy: u = 0, so a draft is kept iff the target's argmax is that token).
            u = 0.0 if self.greedy else tf.random.stateless_uniform([k], seed=key(n, k))
            keep = tf.logical_and(u * q_draft < p_draft, tf.range(k) < m)
            accepted = tf.reduce_sum(tf.math.cumprod(tf.cast(keep, tf.int32)))
            residual = tf.maximum(p[accepted] - q[accepted], 0.0)
            # Only rounding can empty the residual (p == q where it rejected): then p itself.
            residual_mass = tf.reduce_sum(residual)
            residual = tf.where(residual_mass > 0.0, residual / tf.maximum(residual_mass, 1e-30), p[accepted])
            tokens = tf.tensor_scatter_nd_update(
                tokens, [[n + accepted]], [self._sample(residual, key(n, k + 1))]
            )
            # All m drafts kept: the draft never fed the last one; feed it so its cache covers [0, n').
            draft_cache = tf.cond(
                tf.equal(accepted, m),
                lambda: self.draft.call_with_cache(
                    tf.reshape(tokens[n + m - 1], [1, 1]), draft_cache, n + m - 1
                )[1],
                lambda: draft_cache,
            )
            new_n = n + accepted + 1
            done = state["done"]
            if self.end_token_id is not None:
                emitted = tf.logical_and(tf.range(k + 1) <= accepted, tf.equal(tf.slice(tokens, [n], [k + 1]), self.end_token_id))
                ended = tf.reduce_any(emitted)
                new_n = tf.where(ended, n + 1 + tf.argmax(tf.cast(emitted, tf.int32), output_type=tf.int32), new_n)
                done = tf.logical_or(done, ended)
            return {
                "tokens": tokens,
                "n": tf.minimum(new_n, total),
                "done": done,
                "target_cache": target_cache,
                "draft_cache": draft_cache,
                "rounds": state["rounds"] + 1,
                "proposed": state["proposed"] + m,
                "accepted": state["accepted"] + accepted,
                "draft_calls": state["draft_calls"] + m + tf.cast(tf.equal(accepted, m), tf.int32),
            }

        zero = tf.constant(0)
        state = {
            "tokens": tokens, "n": tf.constant(length), "done": tf.constant(False),
            "target_cache": target_cache, "draft_cache": draft_cache,
            "rounds": zero, "proposed": zero, "accepted": zero, "draft_calls": zero,
        }
        (state,) = tf.while_loop(
            lambda s: tf.logical_and(s["n"] < total, tf.logical_not(s["done"])),
            lambda s: (round_(s),), (state,), maximum_iterations=self.max_new_tokens,
        )
        return {
            "tokens": state["tokens"], "length": state["n"], "rounds": state["rounds"],
            "proposed": state["proposed"], "accepted": state["accepted"], "draft_calls": state["draft_calls"],
        }
