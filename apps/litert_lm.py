"""LiteRT-LM-style export of a decoder-only model: ``prefill_<N>`` and ``decode`` signatures, the KV cache explicit.

The whole-loop TFLite model (``apps.export``) runs the decode loop inside the
interpreter: simple, but the host cannot stream, stop early on its own rule,
or share a cache between requests. On-device LLM runtimes (LiteRT-LM, and
MediaPipe's LLM inference before it) instead export one graph per step, with
the key/value cache as inputs and outputs (textbook 11.x, KV-cache):

* ``prefill_<N>``: ``token_ids (1, N)`` int32 (a prompt right-padded to
  ``N``) and ``length ()`` int32 (its real length) -> ``logits (1, vocab)`` of
  the last real token and the cache after the prompt. One signature per
  prompt bucket ``N`` (TFLite tensors have static shapes; a few buckets keep
  padding small).
* ``decode``: ``token_id (1, 1)``, ``position ()`` and the cache -> ``logits
  (1, vocab)`` of that token and the cache with its key and value written.

Cache tensors are named ``k_<layer>`` and ``v_<layer>``, each ``(1, heads,
cache_length, head_dim)`` float32. Padded prompt positions write keys past
``length``; a query at position ``p`` only reads keys ``<= p``, and ``decode``
overwrites position ``p`` before reading it, so those never count.

keras-hub closed this as won't-fix (its issues 2705 and 2885); here it is a
``tf.Module`` converted with TFLite builtins only, and :class:`LiteRTLMRunner`
is the host loop (greedy), equal to ``TextGenerator``'s greedy tokens (test).

Example::

    from apps.litert_lm import convert_prefill_decode, LiteRTLMRunner

    path = convert_prefill_decode(model, "/tmp/lm.tflite", prefill_lengths=(16, 64), cache_length=128)
    runner = LiteRTLMRunner(path)
    runner.generate([2, 17, 40, 9], max_new_tokens=20, end_token_id=3)   # list of new token ids
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tensorflow as tf

__all__ = ["LiteRTLMRunner", "PrefillDecodeModule", "convert_prefill_decode"]


class PrefillDecodeModule(tf.Module):
    """The ``prefill_<N>`` and ``decode`` graphs of a ``TransformerCausalLM`` (see the module docstring).

    Args:
        model: a built decoder-only model with ``build_cache`` / ``call_with_cache`` (float32 weights).
        prefill_lengths: ints, the prompt buckets ``N``. Default ``(16, 64)``.
        cache_length: int or None, cache positions (prompt + generated); default ``model.max_length``.
    """

    def __init__(self, model, prefill_lengths=(16, 64), cache_length=None):
        super().__init__(name="prefill_decode")
        if getattr(model, "is_encoder_decoder", False):
            raise ValueError("prefill/decode export is for decoder-only models; got an encoder-decoder")
        self.model = model
        self.cache_length = int(cache_length or model.max_length)
        if self.cache_length > model.max_length:
            raise ValueError(f"cache_length={self.cache_length} exceeds the model's {model.max_length} positions")
        lengths = sorted({int(n) for n in prefill_lengths})
        if not lengths or lengths[0] < 1 or lengths[-1] >= self.cache_length:
            raise ValueError(f"prefill_lengths must be ints in [1, {self.cache_length}), got {list(prefill_lengths)}")
        self.prefill_lengths = lengths
        self._values = [(v, np.asarray(v.numpy())) for v in model.variables]  # read now, in eager mode
        template = model.build_cache(1, self.cache_length)
        self.cache_specs = []
        for layer, (key, value) in enumerate(template):
            self.cache_specs += [tf.TensorSpec(key.shape, tf.float32, name=f"k_{layer}"),
                                 tf.TensorSpec(value.shape, tf.float32, name=f"v_{layer}")]

    def _constant_weights(self):
        """Every model weight read as a constant while tracing: the TFLite graph holds no variables (variables
        shared by several signatures become TFLite resource variables, which read as NaN without an
        initializer signature the runtime must call first)."""
        import keras

        return keras.StatelessScope(state_mapping=[(v, tf.constant(value)) for v, value in self._values])

    def _flat(self, cache):
        return {spec.name: tf.cast(t, tf.float32) for spec, t in zip(self.cache_specs, tf.nest.flatten(cache))}

    def _nested(self, flat):
        return tuple((flat[2 * i], flat[2 * i + 1]) for i in range(len(flat) // 2))

    def prefill(self, n):
        """The ``prefill_<n>`` function."""

        def prefill(token_ids, length):
            with self._constant_weights():
                logits, cache = self.model.call_with_cache(token_ids, self.model.build_cache(1, self.cache_length), 0)
            last = tf.gather(tf.cast(logits[0], tf.float32), length - 1)
            return {"logits": last[tf.newaxis], **self._flat(cache)}

        prefill.__name__ = f"prefill_{n}"  # the TFLite signature key
        return tf.function(prefill, input_signature=[tf.TensorSpec([1, n], tf.int32, name="token_ids"),
                                                     tf.TensorSpec([], tf.int32, name="length")], autograph=False)

    def decode(self):
        """The ``decode`` function."""

        @tf.function(input_signature=[tf.TensorSpec([1, 1], tf.int32, name="token_id"),
                                      tf.TensorSpec([], tf.int32, name="position"), *self.cache_specs],
                     autograph=False)
        def decode(token_id, position, *cache):
            with self._constant_weights():
                logits, cache = self.model.call_with_cache(token_id, self._nested(cache), position)
            return {"logits": tf.cast(logits[:, 0], tf.float32), **self._flat(cache)}

        return decode

    def signatures(self):
        return {**{f"prefill_{n}": self.prefill(n) for n in self.prefill_lengths}, "decode": self.decode()}


def convert_prefill_decode(model, path, prefill_lengths=(16, 64), cache_length=None, quantize=False):
    """Write ``model``'s :class:`PrefillDecodeModule` as one ``.tflite`` file with its signatures; returns ``path``.

    ``quantize`` applies dynamic-range int8 weights (``tf.lite.Optimize.DEFAULT``).
    """
    module = PrefillDecodeModule(model, prefill_lengths, cache_length)
    functions = [function.get_concrete_function() for function in module.signatures().values()]
    # Signature keys are the function names (prefill_<N>, decode).
    converter = tf.lite.TFLiteConverter.from_concrete_functions(functions, module)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if quantize:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    flatbuffer = converter.convert()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(flatbuffer)
    return path


class LiteRTLMRunner:
    """The host loop over a :func:`convert_prefill_decode` file: prefill once, then one ``decode`` per token.

    Args:
        path: the ``.tflite`` file.
    """

    def __init__(self, path):
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found; write it with convert_prefill_decode")
        from ai_edge_litert.interpreter import Interpreter

        self.interpreter = Interpreter(model_path=str(path))
        keys = self.interpreter.get_signature_list()
        self.prefill_lengths = sorted(int(k.split("_")[1]) for k in keys if k.startswith("prefill_"))
        if "decode" not in keys or not self.prefill_lengths:
            raise ValueError(f"{path} has no prefill_<N> / decode signatures (it has {sorted(keys)})")
        self._decode = self.interpreter.get_signature_runner("decode")
        self._prefill = {n: self.interpreter.get_signature_runner(f"prefill_{n}") for n in self.prefill_lengths}
        details = self._decode.get_input_details()
        self.cache_names = sorted((k for k in details if k[:2] in ("k_", "v_")), key=lambda k: (int(k[2:]), k[0]))
        self.cache_length = int(details[self.cache_names[0]]["shape"][2])

    def generate(self, prompt_ids, max_new_tokens=32, end_token_id=None):
        """Greedy continuation of ``prompt_ids`` (list of ints, ``[START]`` included): the new ids (list of int),
        ``end_token_id`` included when generated."""
        prompt = [int(t) for t in prompt_ids]
        if not prompt:
            raise ValueError("the prompt is empty: pass at least the [START] id")
        bucket = next((n for n in self.prefill_lengths if n >= len(prompt)), None)
        if bucket is None:
            raise ValueError(f"the prompt has {len(prompt)} tokens; this model's longest prefill reads "
                             f"{self.prefill_lengths[-1]}: shorten the prompt")
        if len(prompt) + max_new_tokens > self.cache_length:
            raise ValueError(f"{len(prompt)} prompt + {max_new_tokens} new tokens exceed the cache of "
                             f"{self.cache_length} positions")
        ids = np.zeros((1, bucket), np.int32)
        ids[0, : len(prompt)] = prompt
        out = self._prefill[bucket](token_ids=ids, length=np.int32(len(prompt)))
        new, position = [], len(prompt)
        for _ in range(max_new_tokens):
            token = int(np.argmax(out["logits"][0]))
            new.append(token)
            if token == end_token_id or len(new) == max_new_tokens:
                break
            cache = {name: out[name] for name in self.cache_names}
            out = self._decode(token_id=np.array([[token]], np.int32), position=np.int32(position), **cache)
            position += 1
        return new
