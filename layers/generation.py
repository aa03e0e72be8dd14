"""Text generation engine: one decode loop with a fixed-size KV-cache for every model (textbook section 11.2).

``TextGenerator`` drives a decoder-only ``TransformerCausalLM`` or an
encoder-decoder ``Transformer`` (``layers/transformer_models.py``) with any
sampler from ``layers/samplers.py``. It does not care what the encoder reads
(keras-hub's ``generate_step`` idea): ``encoder_inputs`` go to
``model.encode`` once, which returns ``(sequence, padding_mask)`` for token
ids, image pixels or audio features alike.

1. Prompts come right-padded, ``prompt_ids (batch, P)`` with
   ``prompt_lengths (batch,)``; the output buffer is ``P + max_new_tokens``
   wide. (Encoder-decoder models: the decoder prompt, usually ``[START]``.)
2. The whole padded prompt is run through the model once ("prefill"), filling
   the cache. Positions past a row's length hold padding junk, but every
   position is rewritten with its real token before any query can see it (the
   causal mask only lets position ``i`` see keys ``<= i``).
3. A loop then feeds one token per step, starting at the shortest prompt:
   step ``i`` runs the token at ``i - 1`` against the cached keys/values and
   writes the token at ``i``. Rows still inside their prompt keep the prompt
   token; a row stops at ``end_token_id`` or after its own ``max_new_tokens``
   and is padded with ``pad_token_id``; the loop ends as soon as every row
   has stopped.

The loop is exposed in three parts, :meth:`TextGenerator.start`,
:meth:`~TextGenerator.step` (one token for every row) and
:meth:`~TextGenerator.finish`; :meth:`~TextGenerator.generate_step` is
``finish(while_loop(running, step, start(...)))``. A caller that wants tokens
as they are produced (a streaming demo, an exported ``*_step`` signature)
runs the same three functions with the loop in its own hands, so the streamed
result is the generated one by construction.

Beam search takes the beam count as a tensor (``num_beams``), so one traced
graph serves every beam size; one beam is greedy search (the same tokens as
``GreedySampler``). ``no_repeat_ngram_size=n`` forbids any n-gram from
appearing twice in a row's output (Paulus et al. 2017): the cure for the
"Datei Datei Datei" loops of an under-trained model.

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

_IMPOSSIBLE = -1e9  # log-probability of a forbidden continuation (finite: no inf - inf)


def _expand_rows(x, times):
    """``(batch, ...) -> (batch * times, ...)``, each row repeated ``times`` (int or tensor) times in place."""
    x = tf.convert_to_tensor(x)
    multiples = tf.concat([[1], tf.reshape(tf.cast(times, tf.int32), [1]), tf.ones([x.shape.rank - 1], tf.int32)], 0)
    tiled = tf.tile(tf.expand_dims(x, 1), multiples)
    return tf.reshape(tiled, tf.concat([[-1], tf.shape(x)[1:]], axis=0))


def _column(tokens, index):
    """``tokens[:, index]`` as a dynamic slice (no strided-slice indexing, which TFLite may not lower)."""
    return tf.reshape(tf.slice(tokens, [0, index], [-1, 1]), [-1])


def _write_column(tokens, column, index):
    """``tokens[:, index] = column`` as a dynamic-update-slice (in place under XLA, a TFLite builtin)."""
    return ops.slice_update(tokens, [0, index], tf.expand_dims(tf.cast(column, tokens.dtype), 1))


def _repeated_ngram_mask(tokens, index, n, vocab):
    """Bool ``(rows, vocab)``: tokens that would repeat an n-gram of ``tokens[:, :index]`` at ``index``.

    Position ``j`` bans ``tokens[j + n - 1]`` when ``tokens[j : j + n - 1]``
    equals the last ``n - 1`` tokens before ``index``. Shapes are static (a
    scatter of every candidate position), so this exports like the rest.
    """
    rows, width = tf.shape(tokens)[0], tokens.shape[1]
    starts = width - n + 1
    match = tf.ones([rows, starts], tf.bool)
    for k in range(n - 1):
        previous = _column(tokens, tf.maximum(index - (n - 1) + k, 0))
        match = tf.logical_and(match, tf.equal(tf.slice(tokens, [0, k], [-1, starts]), tf.expand_dims(previous, 1)))
    # Only n-grams that end before index, and only once index has n - 1 tokens behind it.
    complete = tf.less(tf.range(starts) + n - 1, index)
    match = tf.logical_and(match, tf.logical_and(tf.expand_dims(complete, 0), index >= n - 1))
    banned = tf.slice(tokens, [0, n - 1], [-1, starts])
    row_ids = tf.tile(tf.expand_dims(tf.range(rows), 1), [1, starts])
    indices = tf.reshape(tf.stack([row_ids, banned], axis=-1), [-1, 2])
    counts = tf.scatter_nd(indices, tf.reshape(tf.cast(match, tf.float32), [-1]), tf.stack([rows, vocab]))
    return counts > 0


class TextGenerator:
    """Compiled autoregressive generation for the tfsuite Transformer models.

    Args:
        model: a ``TransformerCausalLM`` or ``Transformer`` (anything with
            ``build_cache``, ``call_with_cache``, ``generation_logits``,
            ``reorder_cache``, ``is_encoder_decoder`` and, for encoder-decoder
            models, ``encode``).
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
        no_repeat_ngram_size: int >= 0, forbid repeating any n-gram of this
            size in a row (0 disables; prompts count). Default 0.
        compact: bool or None, drop a prompt's rows from the loop once all its
            beams are done, so a batch costs the sum of its outputs' lengths
            rather than its longest times its size (the same tokens). None
            (default): on unless ``jit_compile`` (XLA needs static shapes) or
            the sampler is random.

    Call: ``generator(prompt_ids, prompt_lengths=None, seed=0,
    encoder_inputs=None, num_beams=None)`` with right-padded int
    ``prompt_ids (batch, P)`` returns a dict of NumPy arrays: ``token_ids
    (batch, P + max_new_tokens)`` (prompt then generated tokens, then
    padding), ``lengths (batch,)``, ``prompt_lengths (batch,)`` and, for beam
    search, ``scores`` (length-normalised log-probabilities). ``encoder_inputs`` is what
    ``model.encode`` takes (a tensor or ``{"encoder_inputs",
    "encoder_padding_mask"}``); ``num_beams`` overrides the beam sampler's.

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
        no_repeat_ngram_size=0,
        compact=None,
    ):
        self.model = model
        self.sampler = get_sampler(sampler)
        self.beam = isinstance(self.sampler, BeamSampler)
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
        if isinstance(no_repeat_ngram_size, bool) or int(no_repeat_ngram_size) != no_repeat_ngram_size or (
            no_repeat_ngram_size < 0
        ):
            raise ValueError(f"no_repeat_ngram_size must be an integer >= 0, got {no_repeat_ngram_size!r}")
        self.no_repeat_ngram_size = int(no_repeat_ngram_size)
        self.use_cache = bool(use_cache)
        self.jit_compile = bool(jit_compile)
        # Dropping finished prompts changes shapes inside the loop: not under XLA, and not for
        # random samplers (their draws are per batch position, so the rows must stay put).
        random = getattr(self.sampler, "is_random", False)
        self.compact = (not self.jit_compile and not random) if compact is None else bool(compact)
        if self.compact and (self.jit_compile or random):
            raise ValueError("compact=True needs jit_compile=False and a greedy or beam-search sampler")
        if not model.built:
            model.build()
        # autograph=False: the loop is an explicit tf.while_loop; Python ifs here are trace-time choices.
        self._compiled = tf.function(self.generate_step, jit_compile=self.jit_compile, autograph=False)

    # -- public boundary ---------------------------------------------------------------------

    def __call__(self, prompt_ids, prompt_lengths=None, seed=0, encoder_inputs=None, num_beams=None,
                 max_new_tokens=None):
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
        kwargs = {"encoder_inputs": self._encoder_inputs(batch, encoder_inputs)}
        if num_beams is not None:
            if not self.beam:
                raise ValueError("num_beams is for a beam-search generator (sampler='beam' or a BeamSampler)")
            kwargs["num_beams"] = tf.constant(check_positive_int("num_beams", num_beams), tf.int32)
        if max_new_tokens is not None:
            limits = np.asarray(max_new_tokens)
            if limits.ndim not in (0, 1) or (limits.ndim == 1 and limits.shape != (batch,)) or np.any(limits < 1) or (
                np.any(limits > self.max_new_tokens)
            ):
                raise ValueError(
                    f"max_new_tokens must be an int or ({batch},) ints in [1, {self.max_new_tokens}], got {limits.tolist()}"
                )
            kwargs["max_new_tokens"] = tf.constant(limits, tf.int32)
        outputs = self._compiled(
            tf.constant(prompt_ids, tf.int32), tf.constant(lengths, tf.int32), tf.constant(seed, tf.int32), **kwargs
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

    def _encoder_inputs(self, batch, encoder_inputs):
        if not self.model.is_encoder_decoder:
            if encoder_inputs is not None:
                raise ValueError(f"{type(self.model).__name__} has no encoder: pass no encoder_inputs")
            return None
        if encoder_inputs is None:
            raise ValueError(
                f"an encoder-decoder model needs encoder_inputs (what {type(self.model).__name__}.encode reads)"
            )
        tensors = tf.nest.map_structure(tf.convert_to_tensor, encoder_inputs)
        for tensor in tf.nest.flatten(tensors):
            if tensor.shape.rank == 0 or tensor.shape[0] != batch:
                raise ValueError(
                    f"encoder_inputs must have {batch} rows (one per prompt), got a tensor of shape {tuple(tensor.shape)}"
                )
        return tensors

    # -- graph: the loop in three parts -----------------------------------------------------

    def generate_step(
        self, prompt_ids, prompt_lengths, seed=0, encoder_inputs=None, num_beams=None, max_new_tokens=None
    ):
        """The whole generation as graph code: traceable by ``tf.function``, XLA and the TFLite converter.

        ``prompt_ids`` must have a static width. ``num_beams`` (beam search) and
        ``max_new_tokens`` (at most the constructor's; a scalar or one value
        per prompt) may be tensors, so one graph serves every setting. Returns
        a dict of tensors.
        """
        state = self.start(prompt_ids, prompt_lengths, seed, encoder_inputs, num_beams, max_new_tokens)
        # Rows are batch * beams with a beam count that may be a tensor: only the row axis may vary.
        invariants = tf.nest.map_structure(
            lambda t: tf.TensorShape([None, *t.shape[1:]]) if t.shape.rank else t.shape, state
        )
        (state,) = tf.while_loop(
            lambda s: self.running(s), lambda s: (self.step(s),), (state,), shape_invariants=(invariants,),
            maximum_iterations=prompt_ids.shape[1] + self.max_new_tokens,
        )
        return self.finish(state)

    def start(
        self, prompt_ids, prompt_lengths, seed=0, encoder_inputs=None, num_beams=None, max_new_tokens=None,
        cache_length=None,
    ):
        """The loop state after the prefill: a dict of tensors (and the model's cache structure).

        ``cache_length`` (an int or scalar tensor, at most the constructor's)
        sizes the KV-cache for this call: the longest prompt plus the most
        tokens any row may add is enough, and a shorter cache makes every step
        cheaper (each step reads, writes and, for beam search, reorders it).
        """
        width = prompt_ids.shape[1]
        if width is None:
            raise ValueError("generate_step needs prompt_ids with a static length")
        total = width + self.max_new_tokens
        prompt_ids, lengths = tf.cast(prompt_ids, tf.int32), tf.cast(prompt_lengths, tf.int32)
        batch = tf.shape(prompt_ids)[0]
        beams = tf.constant(1, tf.int32)
        if self.beam:
            beams = tf.cast(self.sampler.num_beams if num_beams is None else num_beams, tf.int32)
        context = None
        if self.model.is_encoder_decoder:
            context = self.model.encode(encoder_inputs)
        # Tokens a row may add: the constructor's maximum, or fewer per call (a scalar or one per prompt).
        limit = tf.minimum(
            tf.cast(self.max_new_tokens if max_new_tokens is None else max_new_tokens, tf.int32), self.max_new_tokens
        )
        if self.beam:
            prompt_ids, lengths = _expand_rows(prompt_ids, beams), _expand_rows(lengths, beams)
            context = None if context is None else tf.nest.map_structure(lambda t: _expand_rows(t, beams), context)
            limit = _expand_rows(limit, beams) if limit.shape.rank == 1 else limit
        in_prompt = tf.less(tf.expand_dims(tf.range(total), 0), tf.expand_dims(lengths, 1))
        tokens = tf.pad(prompt_ids, [[0, 0], [0, self.max_new_tokens]])
        tokens = tf.where(in_prompt, tokens, self.pad_token_id)
        state = {
            "index": tf.reduce_min(lengths),
            "tokens": tokens,
            "lengths": lengths,
            "out_lengths": lengths,
            "done": tf.zeros_like(lengths, tf.bool),
            "seed": tf.cast(seed, tf.int32),
            "limit": limit,
        }
        if self.use_cache:
            length = self.cache_length if cache_length is None else tf.minimum(cache_length, self.cache_length)
            cache = self.model.build_cache(tf.shape(tokens)[0], length, encoder_outputs=context)
            _, state["cache"] = self.model.call_with_cache(tf.slice(tokens, [0, 0], [-1, width]), cache, 0)
        elif context is not None:
            state["context"] = context
        state["beams"] = beams
        if self.beam:
            # Only the first beam of each prompt is live at the start, so the first
            # expansion does not pick the same continuation `beams` times.
            first = tf.where(tf.equal(tf.range(beams), 0), 0.0, _IMPOSSIBLE)
            state["scores"] = tf.reshape(tf.tile(tf.expand_dims(first, 0), [batch, 1]), [-1])
        if self.compact:
            # The rows still in the loop belong to the prompts in "group"; finished
            # prompts' rows are written to the full-size "final" buffers.
            state["group"] = tf.range(batch)
            state["final"] = {key: state[key] for key in self._row_outputs()} | {"lengths": lengths}
        return state

    def _row_outputs(self):
        return ("tokens", "out_lengths", "scores") if self.beam else ("tokens", "out_lengths")

    def _gather_rows(self, state, rows, groups):
        """The loop state of the rows ``rows`` (of the prompts ``groups``) only."""
        new = dict(state)
        for key in ("tokens", "lengths", "out_lengths", "done", "scores"):
            if key in state:
                new[key] = tf.gather(state[key], rows)
        if state["limit"].shape.rank == 1:
            new["limit"] = tf.gather(state["limit"], rows)
        if "cache" in state:
            new["cache"] = self.model.select_rows(state["cache"], rows)
        if "context" in state:
            new["context"] = tf.nest.map_structure(lambda t: tf.gather(t, rows), state["context"])
        new["group"] = tf.gather(state["group"], groups)
        return new

    def _retire(self, state):
        """Write the rows of prompts whose beams are all done to ``final`` and drop them from the loop."""
        beams = state["beams"]
        finished = tf.reduce_all(tf.reshape(state["done"], [-1, beams]), axis=1)

        def rows_of(groups):
            return tf.reshape(tf.expand_dims(groups * beams, 1) + tf.range(beams), [-1])

        def retire():
            done_groups = tf.cast(tf.reshape(tf.where(finished), [-1]), tf.int32)
            kept = tf.cast(tf.reshape(tf.where(tf.logical_not(finished)), [-1]), tf.int32)
            leaving = rows_of(done_groups)
            targets = tf.expand_dims(rows_of(tf.gather(state["group"], done_groups)), 1)
            final = dict(state["final"])
            for key in self._row_outputs():
                final[key] = tf.tensor_scatter_nd_update(final[key], targets, tf.gather(state[key], leaving))
            return {**self._gather_rows(state, rows_of(kept), kept), "final": final}

        return tf.cond(tf.reduce_any(finished), retire, lambda: dict(state))

    def _merged(self, state):
        """The full-size outputs: ``final`` with the rows still in the loop written in."""
        if not self.compact:
            return state
        beams = state["beams"]
        targets = tf.expand_dims(tf.reshape(tf.expand_dims(state["group"] * beams, 1) + tf.range(beams), [-1]), 1)
        merged = dict(state["final"])
        for key in self._row_outputs():
            merged[key] = tf.tensor_scatter_nd_update(merged[key], targets, state[key])
        return {**merged, "beams": beams}

    def running(self, state):
        """Scalar bool: some row still generates and the buffer has room."""
        total = state["tokens"].shape[1]
        return tf.logical_and(state["index"] < total, tf.logical_not(tf.reduce_all(state["done"])))

    def step(self, state):
        """One more token for every row (position ``state["index"]``); returns the next state."""
        state = self._beam_step(state) if self.beam else self._sample_step(state)
        return self._retire(state) if self.compact else state

    def finish(self, state):
        """The outputs: ``token_ids``, ``lengths`` (and ``scores``: beam search keeps each prompt's best beam)."""
        state = self._merged(state)
        if not self.beam:
            return {"token_ids": state["tokens"], "lengths": state["out_lengths"], "prompt_lengths": state["lengths"]}
        beams = state["beams"]
        generated = tf.cast(tf.maximum(state["out_lengths"] - state["lengths"], 1), tf.float32)
        normalized = tf.reshape(state["scores"] / generated ** self.sampler.length_penalty, [-1, beams])
        batch = tf.shape(normalized)[0]
        best = tf.argmax(normalized, axis=-1, output_type=tf.int32) + tf.range(batch) * beams
        return {
            "token_ids": tf.gather(state["tokens"], best),
            "lengths": tf.gather(state["out_lengths"], best),
            "scores": tf.gather(tf.reshape(normalized, [-1]), best),
            "prompt_lengths": tf.gather(state["lengths"], best),
        }

    def best_so_far(self, state):
        """``(token_ids, lengths)`` of each prompt's leading row now: what a streaming caller shows."""
        if not self.beam:
            merged = self._merged(state)
            return merged["tokens"], merged["out_lengths"]
        outputs = self.finish(state)
        return outputs["token_ids"], outputs["lengths"]

    # -- graph: one step ----------------------------------------------------------------------

    def _next_logits(self, state):
        """Float32 logits ``(rows, vocab)`` for position ``index`` from the token at ``index - 1``, and the cache."""
        tokens, position = state["tokens"], state["index"] - 1
        vocab = self.model.vocab_size
        cache = state.get("cache")
        if self.use_cache:
            logits, cache = self.model.call_with_cache(tf.slice(tokens, [0, position], [-1, 1]), cache, position)
        else:
            logits = self.model.generation_logits(tokens, state.get("context"))
            logits = tf.slice(logits, [0, position, 0], [-1, 1, -1])
        logits = tf.cast(tf.reshape(logits, [-1, vocab]), tf.float32)
        if self.no_repeat_ngram_size:
            banned = _repeated_ngram_mask(tokens, state["index"], self.no_repeat_ngram_size, vocab)
            logits = tf.where(banned, _IMPOSSIBLE, logits)
        return logits, cache

    def _advance(self, state, next_token):
        """Force prompt tokens, pad stopped rows, write column ``index`` and update the stop state."""
        tokens, lengths, index, done = state["tokens"], state["lengths"], state["index"], state["done"]
        forced = index < lengths
        next_token = tf.where(forced, _column(tokens, index), tf.where(done, self.pad_token_id, next_token))
        generating = tf.logical_and(tf.logical_not(forced), tf.logical_not(done))
        out_lengths = tf.where(generating, index + 1, state["out_lengths"])
        stop = index + 1 >= lengths + state["limit"]
        if self.end_token_id is not None:
            stop = tf.logical_or(stop, tf.equal(next_token, self.end_token_id))
        new = dict(state)
        new["done"] = tf.logical_or(done, tf.logical_and(generating, stop))
        new["tokens"] = _write_column(tokens, next_token, index)
        new["out_lengths"] = out_lengths
        new["index"] = index + 1
        return new

    def _sample_step(self, state):
        logits, cache = self._next_logits(state)
        next_token = self.sampler.next_token(logits, tf.stack([state["seed"], state["index"]]))
        if self.use_cache:
            state = {**state, "cache": cache}
        return self._advance(state, next_token)

    def _beam_step(self, state):
        beams, vocab = state["beams"], self.model.vocab_size
        logits, cache = self._next_logits(state)
        tokens, index, done = state["tokens"], state["index"], state["done"]
        log_probs = tf.nn.log_softmax(logits, axis=-1)
        # Rows inside their prompt must take the prompt token and stopped rows
        # the pad token, both at no cost: their score does not change.
        forced = index < state["lengths"]
        fixed_token = tf.where(forced, _column(tokens, index), self.pad_token_id)
        fixed = tf.where(tf.one_hot(fixed_token, vocab) > 0.5, 0.0, _IMPOSSIBLE)
        log_probs = tf.where(tf.expand_dims(tf.logical_or(forced, done), 1), fixed, log_probs)
        candidates = tf.reshape(tf.expand_dims(state["scores"], 1) + log_probs, [-1, beams * vocab])
        top_scores, top = tf.math.top_k(candidates, k=beams)
        batch = tf.shape(candidates)[0]
        source = tf.reshape(top // vocab + tf.expand_dims(tf.range(batch) * beams, 1), [-1])
        next_token = tf.reshape(top % vocab, [-1])
        state = {
            **state,
            "tokens": tf.gather(tokens, source),
            "done": tf.gather(done, source),
            "out_lengths": tf.gather(state["out_lengths"], source),
            "scores": tf.reshape(top_scores, [-1]),
        }
        if self.use_cache:
            state["cache"] = self.model.reorder_cache(cache, source)
        return self._advance(state, next_token)


def generate(model, prompt_ids, prompt_lengths=None, *, max_new_tokens=32, sampler="greedy", seed=0, **kwargs):
    """One-shot convenience wrapper: ``TextGenerator(model, sampler, max_new_tokens, **kwargs)(...)``.

    ``encoder_inputs`` and ``num_beams`` are passed to the call; every other
    keyword goes to ``TextGenerator``.
    """
    call_kwargs = {k: kwargs.pop(k) for k in ("encoder_inputs", "num_beams") if k in kwargs}
    generator = TextGenerator(model, sampler=sampler, max_new_tokens=max_new_tokens, **kwargs)
    return generator(prompt_ids, prompt_lengths, seed=seed, **call_kwargs)
