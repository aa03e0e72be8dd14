"""Greedy generation speed: KV-cache vs recomputation, ours vs keras_hub GPT-2, TFLite vs SavedModel.

One decoder-only model (4 layers, hidden 256, 4 heads, FFN 1024, vocabulary
8000, 256 positions), batch 1, a 16-token prompt and 240 new tokens. Our
``TransformerCausalLM`` gets the weights of a ``keras_hub`` ``GPT2Backbone`` of
the same size, so every contestant runs the same network (the script checks
that they produce the same tokens). Contestants:

- ``cached``: ``TextGenerator`` (KV-cache, one XLA-compiled ``tf.while_loop``);
- ``uncached``: the same loop recomputing the full sequence every step (XLA too);
- ``keras_hub``: ``GPT2CausalLM(...).generate`` with the greedy sampler as
  compiled by default (``keras_hub_xla``: the same with ``jit_compile=True``,
  printed for reference);
- ``saved_model``: our exported ``generate`` signature, reloaded with
  ``tf.saved_model.load``;
- ``tflite``: the same model converted to TFLite built-ins, run by the LiteRT
  interpreter.

After one warm-up call each, timing alternates between contestants in rounds
so that machine noise hits all of them; a contestant's figure is its median
time per call. Prints::

    ratio cached_vs_uncached: X.XX
    ratio ours_vs_keras_hub: X.XX
    ratio tflite_vs_savedmodel: X.XX
    tokens_per_s ours: N

then the raw tokens/s of every contestant. ``--profile`` adds a per-token
breakdown of the cached loop (decoder layers, vocabulary projection, rest).

Usage: ``python benchmarks/generation.py [--rounds 3] [--profile]``
"""

import argparse
import os
import statistics
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# Run as a script, this folder comes first on sys.path and benchmarks/layers.py
# would shadow the tfsuite `layers` package: put the repository root first.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import keras  # noqa: E402
import keras_hub  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from layers.generation import TextGenerator  # noqa: E402
from layers.generation_export import TFLiteGenerator, convert_to_tflite, export_generation  # noqa: E402
from layers.transformer_models import TransformerCausalLM, copy_gpt2_weights  # noqa: E402

LAYERS, HIDDEN, HEADS, FFN, VOCAB = 4, 256, 4, 1024, 8000
PROMPT, NEW = 16, 240
MAX_LENGTH = PROMPT + NEW


def build_models():
    keras.utils.set_random_seed(0)
    backbone = keras_hub.models.GPT2Backbone(
        vocabulary_size=VOCAB, num_layers=LAYERS, num_heads=HEADS, hidden_dim=HIDDEN, intermediate_dim=FFN,
        max_sequence_length=MAX_LENGTH,
    )
    ours = TransformerCausalLM(
        VOCAB, MAX_LENGTH, num_layers=LAYERS, hidden_dim=HIDDEN, num_heads=HEADS, intermediate_dim=FFN
    )
    copy_gpt2_weights(backbone, ours)
    return ours, backbone


def keras_hub_contestant(backbone, prompt, jit_compile):
    lm = keras_hub.models.GPT2CausalLM(backbone=backbone, preprocessor=None)
    lm.compile(sampler="greedy", **({"jit_compile": True} if jit_compile else {}))
    token_ids = np.zeros((1, MAX_LENGTH), "int32")
    token_ids[0, :PROMPT] = prompt
    padding_mask = token_ids > 0
    padding_mask[0, :PROMPT] = True
    inputs = {"token_ids": token_ids, "padding_mask": padding_mask}
    return lambda: np.asarray(lm.generate(inputs, stop_token_ids=None)["token_ids"])[0]


def contestants(ours, backbone, prompt, workdir):
    lengths = np.array([PROMPT], "int32")
    cached = TextGenerator(ours, max_new_tokens=NEW, jit_compile=True)
    uncached = TextGenerator(ours, max_new_tokens=NEW, use_cache=False, jit_compile=True)
    path = export_generation(ours, os.path.join(workdir, "saved_model"), max_new_tokens=NEW, prompt_length=PROMPT)
    saved = tf.saved_model.load(path).signatures["generate"]
    tflite = TFLiteGenerator(convert_to_tflite(path), num_threads=os.cpu_count())
    prompt_tensor, lengths_tensor = tf.constant(prompt), tf.constant(lengths)
    return {
        "cached": lambda: cached(prompt, lengths)["token_ids"][0],
        "uncached": lambda: uncached(prompt, lengths)["token_ids"][0],
        "keras_hub": keras_hub_contestant(backbone, prompt[0], jit_compile=False),
        "keras_hub_xla": keras_hub_contestant(backbone, prompt[0], jit_compile=True),
        "saved_model": lambda: saved(prompt_ids=prompt_tensor, prompt_lengths=lengths_tensor)["token_ids"].numpy()[0],
        "tflite": lambda: tflite(prompt, lengths)["token_ids"][0],
    }


def profile(ours, tokens_per_s, steps=PROMPT + NEW - 1):
    """Where a cached step's time goes; each part runs ``steps`` times in its own XLA-compiled loop.

    Parts: one model step (``call_with_cache``: embedding, decoder layers with
    cache writes, final norm, vocabulary projection, argmax), the decoder
    layers alone and the vocabulary projection alone; "rest of the loop" is
    the measured time per token minus the model step (sampler bookkeeping,
    token writes, loop control).
    """

    def model_step(cache, x, index):
        token = tf.reshape(index % VOCAB, [1, 1])
        logits, cache = ours.call_with_cache(token, cache, index)
        return tf.cast(tf.argmax(tf.reshape(logits, [-1])), tf.float32), cache

    def layers(cache, x, index):
        new_cache = []
        for layer, layer_cache in zip(ours.decoder_layers, cache):
            x, layer_cache = layer(x, self_attention_cache=layer_cache, cache_index=index)
            new_cache.append(layer_cache)
        return tf.reduce_sum(x), tuple(new_cache)

    def projection(cache, x, index):
        logits = ours._logits(x + tf.cast(index, x.dtype), ours.token_embeddings, ours.final_layer_norm, None)
        return tf.cast(tf.argmax(tf.reshape(logits, [-1])), tf.float32), cache

    def timed(part):
        @tf.function(jit_compile=True)
        def run(cache, x):
            def body(i, cache, total):  # the sum keeps XLA from dropping the work as dead code
                out, cache = part(cache, x, i)
                return i + 1, cache, total + out

            return tf.while_loop(lambda i, *_: i < steps, body, (tf.constant(0), cache, tf.constant(0.0)))[2]

        cache = ours.build_cache(1, MAX_LENGTH)
        x = tf.random.normal((1, 1, HIDDEN))
        run(cache, x)
        start = time.perf_counter()
        run(cache, x)
        return (time.perf_counter() - start) / steps * 1e3

    per_token = 1e3 / tokens_per_s
    step = timed(model_step)
    parts = {
        "model step (call_with_cache + argmax)": step,
        "  of which decoder layers": timed(layers),
        "  of which vocabulary projection + argmax": timed(projection),
        "rest of the loop": per_token - step,
    }
    weights = sum(int(np.prod(w.shape)) for w in ours.weights) * 4 / 2**20
    print(f"profile: {per_token:.2f} ms per token; {weights:.1f} MiB of float32 weights read per step")
    for name, ms in parts.items():
        print(f"profile: {name}: {ms:.2f} ms ({100 * ms / per_token:.0f}%)")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()

    ours, backbone = build_models()
    prompt = np.random.default_rng(0).integers(1, VOCAB, (1, PROMPT)).astype("int32")
    with tempfile.TemporaryDirectory() as workdir:
        runs = contestants(ours, backbone, prompt, workdir)
        outputs = {name: run() for name, run in runs.items()}  # warm-up: trace, compile, allocate
        reference = outputs["cached"]
        differ = [name for name, tokens in outputs.items() if not np.array_equal(tokens[:MAX_LENGTH], reference)]
        print("tokens: " + (f"{differ} differ from the cached loop" if differ else "all contestants agree"))
        times = {name: [] for name in runs}
        for _ in range(args.rounds):
            for name, run in runs.items():
                start = time.perf_counter()
                run()
                times[name].append(time.perf_counter() - start)
    tokens_per_s = {name: NEW / statistics.median(t) for name, t in times.items()}

    print(f"ratio cached_vs_uncached: {tokens_per_s['cached'] / tokens_per_s['uncached']:.2f}")
    print(f"ratio ours_vs_keras_hub: {tokens_per_s['cached'] / tokens_per_s['keras_hub']:.2f}")
    print(f"ratio tflite_vs_savedmodel: {tokens_per_s['tflite'] / tokens_per_s['saved_model']:.2f}")
    print(f"tokens_per_s ours: {tokens_per_s['cached']:.0f}")
    for name, value in tokens_per_s.items():
        print(f"tokens_per_s {name}: {value:.1f}")
    print(f"ratio ours_vs_keras_hub_xla: {tokens_per_s['cached'] / tokens_per_s['keras_hub_xla']:.2f}")
    if args.profile:
        profile(ours, tokens_per_s["cached"])


if __name__ == "__main__":
    main()
