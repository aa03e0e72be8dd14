"""Forward + backward time and peak memory of full, sparse and linear self-attention as the length grows.

Every method is the same ``ProjectedHeadsAttention`` shell (query, key, value
and output projections, d_model 256 = 4 heads x 64) around a different
attention core, so only the core differs:

- ``full``: exact ``softmax(Q K^T / sqrt(d)) V`` over the whole ``(n, n)``
  score matrix (``layers.attention.scaled_dot_product_attention``);
- ``longformer``: ``LongformerSelfAttention``, window 256, 1 global token;
- ``bigbird``: ``BigBirdSelfAttention``, block 64, 1 random block, 1 global
  token (2 random blocks do not fit at length 256: 4 blocks leave block 1
  only one block outside its window);
- ``linformer``: ``LinformerAttention``, projected length 256 (``max_length``
  the longest length measured, so one layer serves every length);
- ``performer``: ``PerformerAttention``, 256 random features.

For each method and length (batch 1), one ``tf.function`` step (graph mode;
XLA only with ``--jit``) computes ``loss = mean(output^2)`` and its gradients
with respect to the input and every layer weight: forward + backward. It is
traced and run once, then timed ``--repeats`` times; the figure is the median.

Memory: TensorFlow keeps no allocator statistics on CPU, so each method runs
in its own child process (``--child METHOD``) that goes through the lengths in
ascending order and, after each length, reports its peak resident set size
(``ru_maxrss``) minus the RSS measured right after building and warming up the
smallest length. This is the **process peak RSS growth**: a high-water mark,
monotone in the length because lengths ascend, and it includes whatever else
the step allocates (projections, gradients, the graph traced for that length:
a few MiB), not only the attention scores.
Before each length the child estimates the peak as 4 live score-sized float32
tensors (``4 x heads x score elements x 4 bytes``; full attention at 16,384 is
about 16 GiB; it matches full attention's measured growth within 5% and is
about half the blockwise methods', whose masks and gathered tiles add more)
and skips that length and the longer ones if the estimate exceeds
``--memory-budget-gib`` (default 60% of MemAvailable). A skipped
length prints ``skipped``; a child that crashes (for example killed for
memory) leaves ``failed`` in its remaining cells; the other methods still run.

Prints two tables (method x length: ms per forward + backward step, and peak
MiB), then::

    exponent full: X.XX                     # slope of log(time) vs log(length), lengths >= 1024
    memory_exponent full: X.XX              # the same for peak MiB
    overtakes_full longformer: N            # smallest length where its step is faster than full's
    ratio longformer_vs_full_at_4096: X.XX  # its step time / full's at 4096 (lower is better)

How to read them: the exponent is the ``p`` in ``time ~ n^p`` once fixed
overheads no longer dominate (from 1,024 on): towards 2 for full attention
(the projections, linear in ``n``, pull it lower over short ranges), about 1
for the sparse and linear ones (``n/a`` with fewer than two measured
lengths >= 1024). ``overtakes_full`` compares step times at the lengths where
both ran (``never`` if the method is never faster there, ``not measured`` if
full did not run at any shared length). A ratio below 1 means the method is
faster than full attention at 4,096 tokens.

Usage: ``python benchmarks/attention.py [--lengths 256,...,16384] [--methods full,longformer]
[--repeats 3] [--memory-budget-gib 12] [--jit]``
"""

import argparse
import json
import math
import os
import pathlib
import resource
import statistics
import subprocess
import sys
import time

# Run as a script, this file's folder comes first on sys.path and its name
# would shadow the ``layers`` package: import from the repository root instead.
_HERE = pathlib.Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if pathlib.Path(p or ".").resolve() != _HERE]
sys.path.insert(0, str(_HERE.parent))

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

HEADS, HEAD_SIZE, BATCH = 4, 64, 1
D_MODEL = HEADS * HEAD_SIZE
WINDOW, BLOCK, NUM_RANDOM, NUM_GLOBAL, PROJECTED, FEATURES = 256, 64, 1, 1, 256, 256
METHODS = ("full", "longformer", "bigbird", "linformer", "performer")
DEFAULT_LENGTHS = (256, 512, 1024, 2048, 4096, 8192, 16384)
FIT_FROM = 1024  # below this, fixed per-step overheads hide the growth
RATIO_AT = 4096
# Forward keeps the scores' softmax; backward holds its gradient and the
# softmax-gradient temporaries: about four score-sized tensors at the peak.
LIVE_SCORE_TENSORS = 4


def score_elements(method, n):
    """Elements of one head's score matrix (or its stand-in) at length ``n``: what grows with ``n``."""
    if method == "full":
        return n * n
    if method in ("longformer", "bigbird"):
        w = WINDOW if method == "longformer" else BLOCK
        keys = 3 * w + (NUM_RANDOM * w if method == "bigbird" else 0) + NUM_GLOBAL
        return -(-n // w) * w * keys + NUM_GLOBAL * n  # padded tiles + the global rows
    return n * (PROJECTED if method == "linformer" else FEATURES)


def estimated_peak_gib(method, n):
    return LIVE_SCORE_TENSORS * BATCH * HEADS * score_elements(method, n) * 4 / 2**30


def default_budget_gib():
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return 0.6 * int(line.split()[1]) / 2**20
    except OSError:
        pass
    return 8.0


def _current_rss_kib():
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


# ---------------------------------------------------------------- child: one method, lengths ascending


def _make_layer(method, max_length):
    # TensorFlow is imported here, not at the top: the parent only starts
    # children and must not hold memory of its own while they measure.
    from keras import ops

    from layers.attention import ProjectedHeadsAttention, scaled_dot_product_attention
    from layers.linear_attention import LinformerAttention, PerformerAttention
    from layers.sparse_attention import BigBirdSelfAttention, LongformerSelfAttention

    class FullSelfAttention(ProjectedHeadsAttention):
        """The baseline: exact softmax attention over all ``n x n`` pairs, in the same projection shell."""

        def attend(self, q, k, v, padding_mask):
            mask = None if padding_mask is None else ops.cast(padding_mask, "bool")[:, None, None, :]
            return scaled_dot_product_attention(q, k, v, mask)[0]

    if method == "full":
        return FullSelfAttention(HEADS, HEAD_SIZE)
    if method == "longformer":
        return LongformerSelfAttention(HEADS, HEAD_SIZE, window=WINDOW, num_global=NUM_GLOBAL)
    if method == "bigbird":
        return BigBirdSelfAttention(HEADS, HEAD_SIZE, block=BLOCK, num_global=NUM_GLOBAL, num_random=NUM_RANDOM)
    if method == "linformer":
        return LinformerAttention(HEADS, HEAD_SIZE, max_length=max_length, projected_length=PROJECTED)
    return PerformerAttention(HEADS, HEAD_SIZE, num_features=FEATURES)


def run_child(method, lengths, repeats, budget_gib, jit):
    """Print one JSON line per length: ``{"length", "ms", "peak_mib"}`` or ``{"length", "skipped"}``."""
    import keras
    import numpy as np
    import tensorflow as tf

    keras.utils.set_random_seed(0)
    layer = _make_layer(method, max(lengths))
    layer.build((BATCH, None, D_MODEL))
    rng = np.random.default_rng(0)
    baseline_kib = None

    def emit(**row):
        print(json.dumps({"method": method, **row}), flush=True)

    for i, n in enumerate(lengths):
        estimate = estimated_peak_gib(method, n)
        if estimate > budget_gib:
            reason = f"estimated peak {estimate:.2f} GiB > budget {budget_gib:.2f} GiB"
            for m in lengths[i:]:
                emit(length=m, skipped=reason)
            return

        # A new function per length: each length is its own graph anyway, and
        # one function retraced per length would warn about retracing.
        @tf.function(jit_compile=jit)
        def step(x):
            with tf.GradientTape() as tape:
                tape.watch(x)
                loss = tf.reduce_mean(tf.square(layer(x)))
            return loss, tape.gradient(loss, [x, *layer.trainable_variables])

        x = tf.constant(rng.standard_normal((BATCH, n, D_MODEL)).astype("float32"))
        step(x)[0].numpy()  # trace and warm up
        if baseline_kib is None:
            baseline_kib = _current_rss_kib()
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            step(x)[0].numpy()
            times.append(time.perf_counter() - start)
        # VmRSS and ru_maxrss are sampled apart: clamp their jitter at the smallest length to 0.
        growth_kib = max(0, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - baseline_kib)
        emit(length=n, ms=statistics.median(times) * 1e3, peak_mib=growth_kib / 1024)


# ---------------------------------------------------------------- parent: one child per method, then the figures


def run_method(method, args):
    """Run ``method`` in a child process; return ``{length: row}`` with a row for every length."""
    command = [
        sys.executable, str(pathlib.Path(__file__).resolve()), "--child", method,
        "--lengths", ",".join(map(str, args.lengths)), "--repeats", str(args.repeats),
        "--memory-budget-gib", str(args.memory_budget_gib),
    ] + (["--jit"] if args.jit else [])
    rows = {}
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as child:
        for line in child.stdout:
            try:
                row = json.loads(line)
            except ValueError:
                continue  # stray library output
            rows[row["length"]] = row
            if "skipped" in row:
                print(f"# {method} {row['length']}: skipped ({row['skipped']})", file=sys.stderr, flush=True)
            else:
                print(f"# {method} {row['length']}: {row['ms']:.1f} ms, {row['peak_mib']:.0f} MiB",
                      file=sys.stderr, flush=True)
        stderr = child.stderr.read()
    if child.returncode != 0:
        tail = "\n".join(stderr.strip().splitlines()[-5:])
        print(f"# {method}: child exited with code {child.returncode}\n{tail}", file=sys.stderr, flush=True)
    for n in args.lengths:
        rows.setdefault(n, {"length": n, "failed": f"child exited with code {child.returncode}"})
    return rows


def fit_exponent(rows, key):
    """Least-squares slope of log(value) against log(length) over lengths >= FIT_FROM, or None."""
    points = [(math.log(n), math.log(r[key])) for n, r in rows.items() if n >= FIT_FROM and r.get(key, 0) > 0]
    if len(points) < 2:
        return None
    mx = sum(p[0] for p in points) / len(points)
    my = sum(p[1] for p in points) / len(points)
    sxx = sum((x - mx) ** 2 for x, _ in points)
    return sum((x - mx) * (y - my) for x, y in points) / sxx


def overtakes(rows, full_rows, lengths):
    shared = [n for n in lengths if "ms" in rows[n] and "ms" in full_rows.get(n, {})]
    if not shared:
        return "not measured"
    faster = [n for n in shared if rows[n]["ms"] < full_rows[n]["ms"]]
    return str(faster[0]) if faster else "never"


def print_table(title, results, lengths, key, fmt):
    print(title)
    width = max(10, *(len(str(n)) + 2 for n in lengths))
    print(f"{'method':<12}" + "".join(f"{n:>{width}}" for n in lengths))
    for method, rows in results.items():
        cells = []
        for n in lengths:
            row = rows[n]
            cells.append(fmt.format(row[key]) if key in row else ("skipped" if "skipped" in row else "failed"))
        print(f"{method:<12}" + "".join(f"{c:>{width}}" for c in cells))


def _ints(text):
    return sorted({int(v) for v in text.split(",") if v.strip()})


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", type=_ints, default=list(DEFAULT_LENGTHS),
                        help="comma-separated sequence lengths (run in ascending order)")
    parser.add_argument("--methods", default=",".join(METHODS), help="comma-separated subset of " + ",".join(METHODS))
    parser.add_argument("--repeats", type=int, default=3, help="timed steps per length; the median is reported")
    parser.add_argument("--memory-budget-gib", type=float, default=None,
                        help="skip lengths whose estimated peak exceeds this (default: 60%% of MemAvailable)")
    parser.add_argument("--jit", action="store_true", help="compile the step with XLA")
    parser.add_argument("--child", choices=METHODS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if not args.lengths or min(args.lengths) < 1:
        parser.error(f"--lengths must be positive integers, got {args.lengths}")
    if args.repeats < 1:
        parser.error(f"--repeats must be >= 1, got {args.repeats}")
    if args.memory_budget_gib is None:
        args.memory_budget_gib = default_budget_gib()

    if args.child:
        run_child(args.child, args.lengths, args.repeats, args.memory_budget_gib, args.jit)
        return

    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = sorted(set(methods) - set(METHODS))
    if unknown:
        parser.error(f"unknown method(s) {unknown}; choose from {list(METHODS)}")
    print(f"batch {BATCH}, heads {HEADS} x {HEAD_SIZE}, lengths {args.lengths}, repeats {args.repeats}, "
          f"jit {args.jit}, memory budget {args.memory_budget_gib:.1f} GiB")
    print(f"longformer window {WINDOW} global {NUM_GLOBAL}; bigbird block {BLOCK} random {NUM_RANDOM} "
          f"global {NUM_GLOBAL}; linformer k {PROJECTED}; performer features {FEATURES}", flush=True)

    results = {m: run_method(m, args) for m in methods}

    print_table(f"step_ms (forward + backward, median of {args.repeats})", results, args.lengths, "ms", "{:.1f}")
    print_table("peak_mib (process peak RSS growth)", results, args.lengths, "peak_mib", "{:.0f}")
    for method, rows in results.items():
        for label, key in (("exponent", "ms"), ("memory_exponent", "peak_mib")):
            p = fit_exponent(rows, key)
            print(f"{label} {method}: {'n/a' if p is None else f'{p:.2f}'}")
    full_rows = results.get("full", {})
    for method, rows in results.items():
        if method != "full":
            print(f"overtakes_full {method}: {overtakes(rows, full_rows, args.lengths)}")
    for method, rows in results.items():
        if method == "full":
            continue
        ours, full = rows.get(RATIO_AT, {}).get("ms"), full_rows.get(RATIO_AT, {}).get("ms")
        ratio = "n/a" if ours is None or full is None else f"{ours / full:.2f}"
        print(f"ratio {method}_vs_full_at_{RATIO_AT}: {ratio}")


if __name__ == "__main__":
    main()
