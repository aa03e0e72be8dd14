"""Switch Transformer (section 7.4) against its dense twin at equal FLOPs per token.

Two byte-level GPTs (``layers.transformer_models.TransformerCausalLM``) on
Python source (this interpreter's standard library, split by file into train
and validation), identical except for the feed-forward layers:

* ``dense``: ``PositionwiseFeedForward`` of width ``d_ff`` in every layer;
* ``switch``: ``SwitchFeedForward`` with ``--experts`` experts of the same
  width ``d_ff`` (top-1 routing: each token passes through one expert, so the
  FFN FLOPs per token are the dense twin's, plus the router's ``d x E``), i.e.
  ``E`` times the FFN parameters at the same compute per token.

Both are trained the same number of steps on the same batches (same seed,
same order, their steps alternating so that machine noise hits both) with AdamW; the Switch loss adds the load-balancing and router
z-losses (their default weights 1e-2 and 1e-3). Printed, from one run:

* per model: parameters, FFN FLOPs per token, median step time, validation
  cross-entropy in bits per byte (lower is better), the experts' token shares
  and the fraction of tokens dropped past capacity;
* ``ratio step_time switch_vs_dense: X.XX`` (the dispatch and combine einsums
  are the Switch model's overhead on one device; lower is better) and
  ``ratio bits_per_byte switch_vs_dense: X.XX`` (below 1: the experts' extra
  parameters bought quality at equal FLOPs per token).

Usage: ``python benchmarks/moe.py [--steps 800] [--experts 4] [--batch 16] [--length 128]``
"""

import argparse
import os
import pathlib
import statistics
import sys
import sysconfig
import time
import zlib

# Run as a script, this file's folder comes first on sys.path and its name
# would shadow the ``layers`` package: import from the repository root instead.
_HERE = pathlib.Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if pathlib.Path(p or ".").resolve() != _HERE]
sys.path.insert(0, str(_HERE.parent))

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from layers.transformer_models import TransformerCausalLM  # noqa: E402


def python_source_bytes(limit_bytes):
    """(train, validation) uint8 arrays of stdlib ``.py`` files, ~5% of files (by name hash) held out."""
    root = pathlib.Path(sysconfig.get_paths()["stdlib"])
    train, validation, total = [], [], 0
    for path in sorted(root.rglob("*.py")):
        if "test" in path.parts or "site-packages" in path.parts:
            continue
        try:
            data = path.read_bytes()
        except OSError:
            continue
        (validation if zlib.crc32(str(path.relative_to(root)).encode()) % 20 == 0 else train).append(data)
        total += len(data)
        if total >= limit_bytes:
            break
    as_array = lambda parts: np.frombuffer(b"\n".join(parts), dtype=np.uint8)  # noqa: E731
    return as_array(train), as_array(validation)


def windows(data, length, count, rng):
    starts = rng.integers(0, len(data) - length - 1, size=count)
    batch = np.stack([data[s: s + length + 1] for s in starts]).astype("int32")
    return batch[:, :-1], batch[:, 1:]


def build(kind, args):
    feedforward = {} if kind == "dense" else dict(
        feedforward="switch", feedforward_options={"num_experts": args.experts, "capacity_factor": args.capacity_factor},
    )
    keras.utils.set_random_seed(args.seed)
    model = TransformerCausalLM(
        vocab_size=256, max_length=args.length, num_layers=args.layers, hidden_dim=args.hidden,
        num_heads=args.heads, intermediate_dim=4 * args.hidden, **feedforward,
    )
    model.compile(
        optimizer=keras.optimizers.AdamW(args.learning_rate, weight_decay=0.01),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    model(np.zeros((1, args.length), "int32"))
    return model


def expert_statistics(model, x):
    """Token share of each expert and the dropped fraction, averaged over the Switch layers."""
    shares, dropped = [], []
    hidden = model._embed(model.token_embeddings, model.position_embedding, None, x, 0, False)
    for layer in model.decoder_layers:  # pre-LN (the model's default): the FFN reads LN(x + Att(LN(x)))
        attended = hidden + layer.self_attention(layer.self_attention_layer_norm(hidden), use_causal_mask=True)
        stats = layer.feedforward.router_losses(layer.feedforward_layer_norm(attended))
        shares.append(keras.ops.convert_to_numpy(stats["expert_fraction"]))
        dropped.append(float(keras.ops.convert_to_numpy(stats["dropped_fraction"])))
        hidden = layer(hidden)
    return np.mean(shares, axis=0), float(np.mean(dropped))


def run(args, train, validation):
    """Train both models on the same batches, alternating steps so machine noise hits both alike."""
    models = {kind: build(kind, args) for kind in ("dense", "switch")}
    rng = np.random.default_rng(args.seed)
    step_times = {kind: [] for kind in models}
    for step in range(args.steps):
        x, y = windows(train, args.length, args.batch, rng)
        for kind, model in models.items():
            start = time.perf_counter()
            model.train_on_batch(x, y)
            step_times[kind].append(time.perf_counter() - start)
    x, y = windows(validation, args.length, args.eval_windows, np.random.default_rng(12345))
    d, f = args.hidden, 4 * args.hidden
    rows = {}
    for kind, model in models.items():
        loss = model.evaluate(x, y, batch_size=64, verbose=0)
        loss = loss[0] if isinstance(loss, list) else loss
        rows[kind] = {
            "parameters": model.count_params(),
            "ffn_flops_per_token": 2 * 2 * d * f * args.layers + (2 * d * args.experts * args.layers if kind == "switch" else 0),
            "step_ms": 1000 * statistics.median(step_times[kind][len(step_times[kind]) // 10:]),
            "bits_per_byte": loss / np.log(2),
        }
    rows["switch"]["expert_share"], rows["switch"]["dropped"] = expert_statistics(models["switch"], x[:16])
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=800)
    parser.add_argument("--experts", type=int, default=4)
    parser.add_argument("--capacity-factor", type=float, default=1.25)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--length", type=int, default=128)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--eval-windows", type=int, default=512)
    parser.add_argument("--corpus-bytes", type=int, default=8_000_000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.experts < 1 or args.steps < 1:
        parser.error("--experts and --steps must be >= 1")
    train, validation = python_source_bytes(args.corpus_bytes)
    print(f"python source: {len(train):,} train bytes, {len(validation):,} validation bytes; "
          f"{args.layers} layers, d_model {args.hidden}, d_ff {4 * args.hidden}, batch {args.batch} x {args.length}, "
          f"{args.steps} steps, {args.experts} experts, capacity factor {args.capacity_factor}")
    rows = run(args, train, validation)
    print(f"{'model':8} {'parameters':>11} {'ffn_flops/token':>16} {'step_ms':>8} {'bits/byte':>10}")
    for kind, row in rows.items():
        print(f"{kind:8} {row['parameters']:>11,} {row['ffn_flops_per_token']:>16,} {row['step_ms']:>8.1f} "
              f"{row['bits_per_byte']:>10.4f}")
    switch = rows["switch"]
    print("expert_share switch: " + " ".join(f"{s:.3f}" for s in switch["expert_share"]))
    print(f"dropped_fraction switch: {switch['dropped']:.4f}")
    print(f"ratio parameters switch_vs_dense: {switch['parameters'] / rows['dense']['parameters']:.2f}")
    print(f"ratio step_time switch_vs_dense: {switch['step_ms'] / rows['dense']['step_ms']:.2f}")
    print(f"ratio bits_per_byte switch_vs_dense: {switch['bits_per_byte'] / rows['dense']['bits_per_byte']:.3f}")


if __name__ == "__main__":
    main()
