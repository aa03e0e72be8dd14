"""Text generation engine: one compiled decode loop with a fixed-size KV-cache (textbook section 11.2).

``TextGenerator`` drives a ``TransformerCausalLM`` or an encoder-decoder
``Transformer`` (``layers/transformer_models.py``) with any sampler from
``layers/samplers.py``:

1. Prompts come right-padded, ``prompt_ids (batch, P)`` with
   ``prompt_lengths (batch,)``; the output buffer is ``P + max_new_tokens``
   wide.
2. The whole padded prompt is run through the model once ("prefill"), filling
   the cache. Positions past a row's length hold padding junk, but every
   position is rewritten with its real token before any query can see it (the
   causal mask only lets position ``i`` see keys ``<= i``).
3. A ``tf.while_loop`` then feeds one token per step, starting at the
   shortest prompt: step ``i`` runs the token at ``i - 1`` against the cached
   keys/values and writes the token at ``i``. Rows still inside their prompt
   keep the prompt token; a row stops at ``end_token_id`` or after its own
   ``max_new_tokens`` and is padded with ``pad_token_id``; the loop ends when
   every row has stopped.

All tensors have static shapes (the cache is ``(batch, heads, cache_length,
head_dim)`` per layer, updated in place with ``DYNAMIC_UPDATE_SLICE``), so the
loop compiles with XLA and converts to TFLite built-in ops
(``layers/generation_export.py``). ``use_cache=False`` recomputes the full
sequence every step instead: the reference the cached loop must match token
for token, and the baseline of ``benchmarks/generation.py``.

Like the export code, this module builds TensorFlow graphs directly
(``tf.while_loop``, ``tf.function``), so it uses ``tf.*``.
"""

import numpy as np
import tensorflow as tf
from keras import ops

from layers.samplers import BeamSampler, get_sampler
from layers.validation import check_positive_int

__all__ = ["TextGenerator", "generate"]

_IMPOSSIBLE = -1e9  # log-probability of a forbidden beam continuation (finite: no inf - inf)


def _expand_rows(x, times):
    """``(batch, ...) -> (batch * times, ...)``, each row repeated ``times`` times in place."""
    x = tf.convert_to_tensor(x)
    tiled = tf.tile(tf.expand_dims(x, 1), [1, times] + [1] * (x.shape.rank - 1))
    return tf.reshape(tiled, tf.concat([[-1], tf.shape(x)[1:]], axis=0))


def _column(tokens, index):
    """``tokens[:, index]`` as a dynamic slice (no strided-slice indexing, which TFLite may not lower)."""
    return tf.reshape(tf.slice(tokens, [0, index], [-1, 1]), [-1])


def _write_column(tokens, column, index):
    """``tokens[:, index] = column`` as a dynamic-update-slice (in place under XLA, a TFLite builtin)."""
    return ops.slice_update(tokens, [0, index], tf.expand_dims(tf.cast(column, tokens.dtype), 1))


class TextGenerator:
    """Compiled autoregressive generation for the tfsuite Transformer models.

    Args:
        model: a ``TransformerCausalLM`` or ``Transformer`` (anything with
            ``build_cache``, ``call_with_cache``, ``generation_logits``,
            ``reorder_cache`` and ``is_encoder_decoder``).
        sampler: a name (``"greedy"``, ``"random"``, ``"top_k"``, ``"top_p"``,
            ``"beam"``) or an instance from ``layers.samplers``. Default greedy.
        max_new_tokens: int, tokens to generate after each prompt. Default 32.
        end_token_id: int or None, stop a row once it generates this token.
        pad_token_id: int, written after a row stops. Default 0.
        cache_length: int or None, KV-cache length; None means
            ``model.max_length``. Must hold ``prompt length + max_new_tokens``.
        use_cache: bool, decode with the KV-cache (True) or recompute the full
            sequence each step (False). Default True.
        jit_compile: bool, compile the loop with XLA. Default True.

    Call: ``generator(prompt_ids, prompt_lengths=None, seed=0,
    encoder_token_ids=None, encoder_padding_mask=None)`` with right-padded
    int ``prompt_ids (batch, P)`` (for the encoder-decoder model the decoder
    prompt, usually the start token) returns a dict of NumPy arrays:
    ``token_ids (batch, P + max_new_tokens)`` (prompt then generated tokens,
    then padding), ``lengths (batch,)`` and, for beam search, ``scores``
    (length-normalised log-probabilities).

    Example:
    >>> lm = TransformerCausalLM(vocab_size=100, max_length=64)
    >>> gen = TextGenerator(lm, sampler=TopPSampler(0.9), max_new_tokens=20, end_token_id=2)
    >>> gen(np.array([[5, 6, 7], [8, 0, 0]]), prompt_lengths=[3, 1], seed=42)["token_ids"].shape
    (2, 23)
    """

    def __init__(
        self,
        model,
        sampler="greedy",
        max_new_tokens=32,
        end_token_id=None,
        pad_token_id=0,
        cache_length=None,
        use_cache=True,
        jit_compile=True,
    ):
        self.model = model
        self.sampler = get_sampler(sampler)
        self.max_new_tokens = check_positive_int("max_new_tokens", max_new_tokens)
        self.end_token_id = None if end_token_id is None else int(end_token_id)
        self.pad_token_id = int(pad_token_id)
        self.cache_length = check_positive_int("cache_length", cache_length or model.max_length)
        if model.position_encoding == "learned" and self.cache_length > model.max_length:
            raise ValueError(
                f"cache_length={self.cache_length} is longer than the model's {model.max_length} learned "
                "positions; use cache_length <= model.max_length"
            )
        if self.max_new_tokens >= self.cache_length:
            raise ValueError(
                f"max_new_tokens={self.max_new_tokens} is beyond the cache size {self.cache_length}: "
                "prompt and new tokens must fit in cache_length"
            )
        self.use_cache = bool(use_cache)
        self.jit_compile = bool(jit_compile)
        if not model.built:
            model.build()
        # autograph=False: the loop is an explicit tf.while_loop; Python ifs here are trace-time choices.
        self._compiled = tf.function(self.generate_step, jit_compile=self.jit_compile, autograph=False)

    # -- public boundary ---------------------------------------------------------------------

    def __call__(self, prompt_ids, prompt_lengths=None, seed=0, encoder_token_ids=None, encoder_padding_mask=None):
        prompt_ids = np.asarray(prompt_ids)
        if prompt_ids.ndim != 2 or not np.issubdtype(prompt_ids.dtype, np.integer):
            raise ValueError(
                f"prompt_ids must be int token ids of rank 2 (batch, prompt_length), got shape "
                f"{prompt_ids.shape} and dtype {prompt_ids.dtype}"
            )
        batch, width = prompt_ids.shape
        lengths = np.full((batch,), width) if prompt_lengths is None else np.asarray(prompt_lengths)
        if lengths.shape != (batch,) or np.any(lengths < 1) or np.any(lengths > width):
            raise ValueError(
                f"prompt_lengths must have shape ({batch},) with values in [1, {width}], got {lengths.tolist()}"
            )
        self.check_fits(width)
        context = self._context(batch, encoder_token_ids, encoder_padding_mask)
        outputs = self._compiled(
            tf.constant(prompt_ids, tf.int32), tf.constant(lengths, tf.int32),
            tf.constant(seed, tf.int32), **context,
        )
        return {k: v.numpy() for k, v in outputs.items()}

    def check_fits(self, prompt_width):
        """ValueError unless ``prompt_width + max_new_tokens`` fits in the cache (and positions)."""
        total = prompt_width + self.max_new_tokens
        limit = self.cache_length if self.use_cache else self.model.max_length
        if self.use_cache or self.model.position_encoding == "learned":
            if total > limit:
                raise ValueError(
                    f"max_new_tokens={self.max_new_tokens} after a prompt of {prompt_width} tokens needs "
                    f"{total} positions, beyond the cache size {limit}; lower max_new_tokens or raise "
                    "cache_length"
                )

    def _context(self, batch, encoder_token_ids, encoder_padding_mask):
        if not self.model.is_encoder_decoder:
            if encoder_token_ids is not None:
                raise ValueError("encoder_token_ids is only for encoder-decoder models")
            return {}
        if encoder_token_ids is None:
            raise ValueError("an encoder-decoder model needs encoder_token_ids")
        encoder_token_ids = np.asarray(encoder_token_ids)
        if encoder_token_ids.ndim != 2 or encoder_token_ids.shape[0] != batch:
            raise ValueError(
                f"encoder_token_ids must have shape ({batch}, source_length), got {encoder_token_ids.shape}"
            )
        if encoder_padding_mask is None:
            encoder_padding_mask = np.ones(encoder_token_ids.shape, bool)
        encoder_padding_mask = np.asarray(encoder_padding_mask, bool)
        if encoder_padding_mask.shape != encoder_token_ids.shape:
            raise ValueError(
                f"encoder_padding_mask must have shape {encoder_token_ids.shape}, got {encoder_padding_mask.shape}"
            )
        return {
            "encoder_token_ids": tf.constant(encoder_token_ids, tf.int32),
            "encoder_padding_mask": tf.constant(encoder_padding_mask),
        }

    # -- graph -------------------------------------------------------------------------------

    def generate_step(self, prompt_ids, prompt_lengths, seed=0, encoder_token_ids=None, encoder_padding_mask=None):
        """The whole generation as graph code: traceable by ``tf.function``, XLA and the TFLite converter.

        ``prompt_ids`` must have a static width. Returns a dict of tensors.
        """
        context = {}
        if self.model.is_encoder_decoder:
            context = {"encoder_token_ids": encoder_token_ids, "encoder_padding_mask": encoder_padding_mask}
        if isinstance(self.sampler, BeamSampler):
            return self._beam_search(prompt_ids, prompt_lengths, context)
        return self._sample(prompt_ids, prompt_lengths, seed, context)

    def _start(self, prompt_ids, prompt_lengths, context):
        """Token buffer, lengths, cache after prefill, first index."""
        width = prompt_ids.shape[1]
        if width is None:
            raise ValueError("generate_step needs prompt_ids with a static length")
        total = width + self.max_new_tokens
        lengths = tf.cast(prompt_lengths, tf.int32)
        in_prompt = tf.less(tf.expand_dims(tf.range(total), 0), tf.expand_dims(lengths, 1))
        tokens = tf.pad(tf.cast(prompt_ids, tf.int32), [[0, 0], [0, self.max_new_tokens]])
        tokens = tf.where(in_prompt, tokens, self.pad_token_id)
        cache = ()
        if self.use_cache:
            cache = self.model.build_cache(tf.shape(tokens)[0], self.cache_length, **context)
            _, cache = self.model.call_with_cache(tf.slice(tokens, [0, 0], [-1, width]), cache, 0)
        return tokens, lengths, cache, tf.reduce_min(lengths), total

    def _next_logits(self, tokens, cache, index, context):
        """Float32 logits ``(batch, vocab)`` for position ``index`` from the token at ``index - 1``."""
        position = index - 1
        vocab = self.model.vocab_size
        if self.use_cache:
            logits, cache = self.model.call_with_cache(tf.slice(tokens, [0, position], [-1, 1]), cache, position)
        else:
            logits = tf.slice(self.model.generation_logits(tokens, context), [0, position, 0], [-1, 1, -1])
        return tf.cast(tf.reshape(logits, [-1, vocab]), tf.float32), cache

    def _advance(self, next_token, tokens, lengths, index, done, out_lengths):
        """Force prompt tokens, pad stopped rows, write column ``index`` and update the stop state."""
        forced = index < lengths
        next_token = tf.where(forced, _column(tokens, index), tf.where(done, self.pad_token_id, next_token))
        generating = tf.logical_and(tf.logical_not(forced), tf.logical_not(done))
        out_lengths = tf.where(generating, index + 1, out_lengths)
        stop = index + 1 >= lengths + self.max_new_tokens
        if self.end_token_id is not None:
            stop = tf.logical_or(stop, tf.equal(next_token, self.end_token_id))
        done = tf.logical_or(done, tf.logical_and(generating, stop))
        tokens = _write_column(tokens, next_token, index)
        return tokens, done, out_lengths

    def _sample(self, prompt_ids, prompt_lengths, seed, context):
        tokens, lengths, cache, start, total = self._start(prompt_ids, prompt_lengths, context)
        seed = tf.cast(seed, tf.int32)

        def cond(index, tokens, cache, done, out_lengths):
            return tf.logical_and(index < total, tf.logical_not(tf.reduce_all(done)))

        def body(index, tokens, cache, done, out_lengths):
            logits, cache = self._next_logits(tokens, cache, index, context)
            next_token = self.sampler.next_token(logits, tf.stack([seed, index]))
            tokens, done, out_lengths = self._advance(next_token, tokens, lengths, index, done, out_lengths)
            return index + 1, tokens, cache, done, out_lengths

        done = tf.zeros_like(lengths, tf.bool)
        _, tokens, _, _, out_lengths = tf.while_loop(
            cond, body, (start, tokens, cache, done, lengths), maximum_iterations=total
        )
        return {"token_ids": tokens, "lengths": out_lengths}

    def _beam_search(self, prompt_ids, prompt_lengths, context):
        beams = self.sampler.num_beams
        vocab = self.model.vocab_size
        batch = tf.shape(prompt_ids)[0]
        prompt_ids = _expand_rows(prompt_ids, beams)
        prompt_lengths = _expand_rows(prompt_lengths, beams)
        context = {k: _expand_rows(v, beams) for k, v in context.items()}
        tokens, lengths, cache, start, total = self._start(prompt_ids, prompt_lengths, context)
        # Only the first beam of each prompt is live at the start, so the first
        # expansion does not pick the same continuation `beams` times.
        first = tf.constant([0.0] + [_IMPOSSIBLE] * (beams - 1), tf.float32)
        scores = tf.reshape(tf.tile(tf.expand_dims(first, 0), [batch, 1]), [-1])
        row_offsets = tf.expand_dims(tf.range(batch) * beams, 1)

        def cond(index, tokens, cache, scores, done, out_lengths):
            return tf.logical_and(index < total, tf.logical_not(tf.reduce_all(done)))

        def body(index, tokens, cache, scores, done, out_lengths):
            logits, cache = self._next_logits(tokens, cache, index, context)
            log_probs = tf.nn.log_softmax(logits, axis=-1)
            # Rows inside their prompt must take the prompt token and stopped rows
            # the pad token, both at no cost: their score does not change.
            forced = index < lengths
            fixed_token = tf.where(forced, _column(tokens, index), self.pad_token_id)
            fixed = tf.where(tf.one_hot(fixed_token, vocab) > 0.5, 0.0, _IMPOSSIBLE)
            log_probs = tf.where(tf.expand_dims(tf.logical_or(forced, done), 1), fixed, log_probs)
            candidates = tf.reshape(tf.expand_dims(scores, 1) + log_probs, [batch, beams * vocab])
            top_scores, top = tf.math.top_k(candidates, k=beams)
            source = tf.reshape(top // vocab + row_offsets, [-1])
            next_token = tf.reshape(top % vocab, [-1])
            tokens = tf.gather(tokens, source)
            cache = self.model.reorder_cache(cache, source) if self.use_cache else cache
            done = tf.gather(done, source)
            out_lengths = tf.gather(out_lengths, source)
            tokens, done, out_lengths = self._advance(next_token, tokens, lengths, index, done, out_lengths)
            return index + 1, tokens, cache, tf.reshape(top_scores, [-1]), done, out_lengths

        done = tf.zeros_like(lengths, tf.bool)
        _, tokens, _, scores, _, out_lengths = tf.while_loop(
            cond, body, (start, tokens, cache, scores, done, lengths), maximum_iterations=total
        )
        generated = tf.cast(tf.maximum(out_lengths - lengths, 1), tf.float32)
        normalized = tf.reshape(scores / generated ** self.sampler.length_penalty, [batch, beams])
        best = tf.argmax(normalized, axis=-1, output_type=tf.int32) + tf.range(batch) * beams
        return {
            "token_ids": tf.gather(tokens, best),
            "lengths": tf.gather(out_lengths, best),
            "scores": tf.gather(tf.reshape(normalized, [-1]), best),
        }


def generate(model, prompt_ids, prompt_lengths=None, *, max_new_tokens=32, sampler="greedy", seed=0, **kwargs):
    """One-shot convenience wrapper: ``TextGenerator(model, sampler, max_new_tokens, **kwargs)(...)``.

    Encoder inputs (``encoder_token_ids``, ``encoder_padding_mask``) are
    passed through to the call; every other keyword goes to ``TextGenerator``.
    """
    call_keys = ("encoder_token_ids", "encoder_padding_mask")
    call_kwargs = {k: kwargs.pop(k) for k in call_keys if k in kwargs}
    generator = TextGenerator(model, sampler=sampler, max_new_tokens=max_new_tokens, **kwargs)
    return generator(prompt_ids, prompt_lengths, seed=seed, **call_kwargs)
