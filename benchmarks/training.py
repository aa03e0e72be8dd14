"""Training-step speed: our Transformers against keras-hub's GPT-2 and against this machine's matmul peak.

Measured in one process, in alternating rounds (machine noise hits every
contestant), on the same batch of 32 x 128 tokens:

- ``ours``: ``layers.transformer_models.TransformerCausalLM`` as GPT-2
  (4 layers, hidden 256, 4 heads, FFN 1024, vocabulary 8,000, pre-LN, GELU,
  learned positions, tied embeddings, dropout 0.1, no FFN-activation dropout:
  GPT-2's network), compiled with our shared loss (``apps.losses``);
- ``keras_hub``: ``keras_hub.models.GPT2CausalLM`` with the same sizes, with and
  without XLA (its faster configuration is the one compared);
- ``seq2seq``: our encoder-decoder ``Transformer`` at the translation release's
  size (``TranslationConfig`` defaults) on 32 pairs of 64 + 64 tokens.

The peak is measured here too: the best of a few square float32 and
bfloat16 matmuls (``tf.linalg.matmul``, 2048^3). Model FLOPs per token are
``6 N + 12 L d T`` (PaLM's count: ``N`` the parameters of the matrix
products, output projection included; the attention's ``Q K^T`` and ``A V``
over ``T`` positions in ``L`` layers of width ``d``), so MFU is model FLOPs
per second over the measured peak of the precision's matmul. Prints::

    peak float32: X GFLOP/s   peak bfloat16: X GFLOP/s
    ratio ours_vs_keras_hub: X.XX           # tokens/s, float32, each at its faster XLA setting
    mfu ours: 0.XX                          # float32, against the float32 peak
    ratio ours_bf16_vs_fp32: X.XX           # tokens/s, mixed_bfloat16 over float32
    mfu ours mixed_bfloat16: 0.XX           # against the bfloat16 peak
    mfu seq2seq: 0.XX / mfu seq2seq mixed_bfloat16: 0.XX

Usage: ``python benchmarks/training.py [--rounds 5] [--steps 5]``
"""

import argparse
import collections
import os
import pathlib
import statistics
import sys
import time

# Run as a script, this file's folder comes first on sys.path and
# benchmarks/layers.py would shadow the ``layers`` package: import from the repository root.
_HERE = pathlib.Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if pathlib.Path(p or ".").resolve() != _HERE]
sys.path.insert(0, str(_HERE.parent))

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from apps.losses import SmoothedSequenceLoss  # noqa: E402
from apps.trainer import precision  # noqa: E402
from layers.transformer_models import Transformer, TransformerCausalLM  # noqa: E402

BATCH, LENGTH, VOCAB = 32, 128, 8000
GPT2 = {"num_layers": 4, "hidden_dim": 256, "num_heads": 4, "intermediate_dim": 1024}


def matmul_peak(dtype, size=2048, repeats=5):
    """Best GFLOP/s of a ``size``^3 matmul in ``dtype`` (the machine's practical peak)."""
    a = tf.random.normal([size, size], dtype=tf.float32)
    a = tf.cast(a, dtype)
    run = tf.function(lambda x: tf.linalg.matmul(x, x))
    run(a).numpy()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        run(a).numpy()
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best / 1e9


def matmul_parameters(model):
    """Parameters that go through matrix products: every rank >= 2 weight (embeddings count as the tied head)."""
    return sum(int(np.prod(w.shape)) for w in model.trainable_weights if len(w.shape) >= 2 and "position" not in w.path)


def flops_per_token(model, layers, width, length):
    return 6 * matmul_parameters(model) + 12 * layers * width * length


def ours(policy, jit):
    with precision(policy):
        model = TransformerCausalLM(VOCAB, LENGTH, dropout=0.1, activation_dropout=0.0, **GPT2)
        model.build()
        model.compile(optimizer=keras.optimizers.Adam(1e-4), loss=SmoothedSequenceLoss(0.0), jit_compile=jit)
    tokens = np.random.default_rng(0).integers(1, VOCAB, (BATCH, LENGTH + 1)).astype("int32")
    return model, (tokens[:, :-1], tokens[:, 1:]), flops_per_token(model, 4, 256, LENGTH), BATCH * LENGTH


def keras_hub_gpt2(policy, jit):
    import keras_hub

    with precision(policy):
        backbone = keras_hub.models.GPT2Backbone(
            vocabulary_size=VOCAB, num_layers=4, num_heads=4, hidden_dim=256, intermediate_dim=1024,
            max_sequence_length=LENGTH, dropout=0.1,
        )
        model = keras_hub.models.GPT2CausalLM(backbone=backbone, preprocessor=None)
        model.compile(
            optimizer=keras.optimizers.Adam(1e-4),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), weighted_metrics=[], jit_compile=jit,
        )
    tokens = np.random.default_rng(0).integers(1, VOCAB, (BATCH, LENGTH + 1)).astype("int32")
    inputs = {"token_ids": tokens[:, :-1], "padding_mask": np.ones((BATCH, LENGTH), bool)}
    return model, (inputs, tokens[:, 1:]), None, BATCH * LENGTH


def seq2seq(policy, jit):
    from apps.translation import TranslationConfig

    config = TranslationConfig()
    with precision(policy):
        model = Transformer(
            config.vocab_size, config.vocab_size, config.model_max_length, num_encoder_layers=config.num_layers,
            num_decoder_layers=config.num_layers, hidden_dim=config.hidden_dim, num_heads=config.num_heads,
            intermediate_dim=config.intermediate_dim, dropout=config.dropout,
            activation_dropout=config.activation_dropout, share_embeddings=True, normalize_first=True,
            position_encoding="learned",
        )
        model.build()
        model.compile(optimizer=keras.optimizers.Adam(1e-4), loss=SmoothedSequenceLoss(0.1), jit_compile=jit)
    rng = np.random.default_rng(1)
    half = LENGTH // 2
    source = rng.integers(1, config.vocab_size, (BATCH, half)).astype("int32")
    target = rng.integers(1, config.vocab_size, (BATCH, half + 1)).astype("int32")
    inputs = {"encoder_inputs": source, "decoder_token_ids": target[:, :-1]}
    # Per target token: the decoder's work plus the encoder's over as many source tokens, and
    # three attentions per layer pair (encoder self, decoder self, cross) over 64 positions.
    layers, width = config.num_layers, config.hidden_dim
    flops = flops_per_token(model, 2 * layers, width, half) + 12 * layers * width * half
    return model, (inputs, target[:, 1:]), flops, BATCH * half


def step_time(model, data, steps):
    start = time.perf_counter()
    for _ in range(steps):
        model.train_on_batch(*data)
    return (time.perf_counter() - start) / steps


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=5)
    args = parser.parse_args()

    peaks = {"float32": matmul_peak(tf.float32), "mixed_bfloat16": matmul_peak(tf.bfloat16)}
    print(f"peak float32: {peaks['float32']:.0f} GFLOP/s   peak bfloat16: {peaks['mixed_bfloat16']:.0f} GFLOP/s", flush=True)
    contestants = {}
    for name, build in (("ours", ours), ("keras_hub", keras_hub_gpt2), ("seq2seq", seq2seq)):
        for policy in ("float32", "mixed_bfloat16"):
            for jit in (False, True):
                if name == "keras_hub" and policy != "float32":
                    continue  # the comparison is in float32; our bf16 is measured against our float32
                model, data, flops, tokens = build(policy, jit)
                model.train_on_batch(*data)  # trace (and compile)
                model.train_on_batch(*data)
                contestants[(name, policy, jit)] = (model, data, flops, tokens)
    seconds = collections.defaultdict(list)
    for _ in range(args.rounds):
        for key, (model, data, _, _) in contestants.items():
            seconds[key].append(step_time(model, data, args.steps))
    speed = {key: contestants[key][3] / statistics.median(values) for key, values in seconds.items()}
    for (name, policy, jit), value in sorted(speed.items()):
        print(f"{name} {policy} xla={jit}: {value:.0f} tokens/s", flush=True)

    def best(name, policy):
        jit = max((False, True), key=lambda j: speed.get((name, policy, j), 0))
        return speed[(name, policy, jit)], jit

    ours_fp32, ours_jit = best("ours", "float32")
    hub_fp32, hub_jit = best("keras_hub", "float32")
    ours_bf16, bf16_jit = best("ours", "mixed_bfloat16")
    flops = contestants[("ours", "float32", False)][2]
    print(f"ratio ours_vs_keras_hub: {ours_fp32 / hub_fp32:.2f}   (ours xla={ours_jit}, keras-hub xla={hub_jit})")
    print(f"mfu ours: {ours_fp32 * flops / 1e9 / peaks['float32']:.2f}   ({flops / 1e6:.1f} MFLOP/token)")
    print(f"ratio ours_bf16_vs_fp32: {ours_bf16 / ours_fp32:.2f}   (bf16 xla={bf16_jit})")
    print(f"mfu ours mixed_bfloat16: {ours_bf16 * flops / 1e9 / peaks['mixed_bfloat16']:.2f}")
    seq_flops = contestants[("seq2seq", "float32", False)][2]
    for policy in ("float32", "mixed_bfloat16"):
        value, jit = best("seq2seq", policy)
        suffix = "" if policy == "float32" else " mixed_bfloat16"
        print(f"mfu seq2seq{suffix}: {value * seq_flops / 1e9 / peaks[policy]:.2f}   ({value:.0f} target tokens/s, xla={jit})")


if __name__ == "__main__":
    main()
