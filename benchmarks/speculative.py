"""Speculative decoding (textbook 11.2) against plain greedy decoding of the same target, batch 1.

The target and the draft are code-generation checkpoints (``tfsuite train
code_generation``: the target the fine-tuned GPT, the draft a smaller one
trained on the same tokenizer). The prompts are the first ``--prompts``
test prompts of ``tfsuite_code``. Contestants, on the same target and prompts:

- ``greedy``: ``TextGenerator`` (KV-cache, one XLA-compiled ``tf.while_loop``);
- ``speculative``: ``apps.speculative.SpeculativeDecoder`` with ``k`` drafts
  per round (XLA too; greedy, so its tokens must equal ``greedy``'s: checked).

After a warm-up call each, timing alternates between the two in rounds; a
contestant's figure is its total new tokens over its total time. Prints::

    ratio speculative_vs_greedy: X.XX
    acceptance_rate: 0.XX
    tokens_per_target_call: X.XX

``--smoke`` runs the machinery on tiny random models (no checkpoints needed;
its ratio says nothing about trained models: random drafts are rarely accepted).

Usage::

    python benchmarks/speculative.py --target runs/code_generation/finetune/model.keras \\
        --draft runs/code_generation/draft/model.keras [--k 4] [--prompts 8] [--rounds 3]
"""

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import keras  # noqa: E402
import numpy as np  # noqa: E402

from apps.speculative import SpeculativeDecoder  # noqa: E402
from layers.generation import TextGenerator  # noqa: E402


def smoke_models():
    from layers.gpt import gpt2

    keras.utils.set_random_seed(0)
    target = gpt2(200, 96, num_layers=2, hidden_dim=64, num_heads=2, dropout=0.0)
    draft = gpt2(200, 96, num_layers=1, hidden_dim=32, num_heads=2, dropout=0.0)
    for model in (target, draft):
        model.build()
    rng = np.random.default_rng(0)
    prompts = [rng.integers(4, 200, size=rng.integers(4, 12)).tolist() for _ in range(4)]
    return target, draft, prompts, None


def checkpoint_models(args):
    from apps.code_generation import CodeGenerationApp
    from apps.trainer import load_checkpoint

    target, draft = load_checkpoint(args.target), load_checkpoint(args.draft)
    app = CodeGenerationApp()
    config = app.Config(tokenizer_dir=str(Path(args.target).parent / "tokenizer"))
    tokenizer = app.tokenizer(config)
    prompts = app.pairs(config, "test")[0][: args.prompts]
    rows = [[tokenizer.start_id, *r] for r in tokenizer.tokenize(prompts).to_list()]
    return target, draft, [r for r in rows if len(r) + args.new_tokens <= target.max_length], tokenizer.end_id


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--target", help="the target .keras checkpoint")
    parser.add_argument("--draft", help="the draft .keras checkpoint (same tokenizer)")
    parser.add_argument("--k", type=int, default=4, help="draft tokens per round")
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--smoke", action="store_true", help="tiny random models: checks the machinery only")
    args = parser.parse_args()
    if args.smoke:
        target, draft, prompts, end = smoke_models()
        args.new_tokens = min(args.new_tokens, 32)
    elif args.target and args.draft:
        target, draft, prompts, end = checkpoint_models(args)
    else:
        parser.error("pass --target and --draft checkpoints (or --smoke for tiny random models)")
    if not prompts:
        sys.exit("no test prompt fits the target's positions with --new-tokens; lower it")
    greedy = TextGenerator(target, max_new_tokens=args.new_tokens, end_token_id=end)
    speculative = SpeculativeDecoder(target, draft, num_draft_tokens=args.k, max_new_tokens=args.new_tokens,
                                     end_token_id=end)
    contestants = {
        "greedy": lambda p: greedy(np.array([p]))["lengths"][0] - len(p),
        "speculative": lambda p: speculative(np.array([p]))["lengths"][0] - len(p),
    }
    for p in prompts:  # warm-up (one trace per prompt length) and the equality check
        a, b = greedy(np.array([p])), speculative(np.array([p]))
        if not np.array_equal(a["token_ids"][0, : a["lengths"][0]], b["token_ids"][0, : b["lengths"][0]]):
            sys.exit("speculative greedy output differs from the target's greedy output")
    totals = {name: [0, 0.0] for name in contestants}
    for _ in range(args.rounds):
        for name, run in contestants.items():
            for p in prompts:
                start = time.perf_counter()
                tokens = run(p)
                totals[name][1] += time.perf_counter() - start
                totals[name][0] += int(tokens)
    rate = {name: tokens / seconds for name, (tokens, seconds) in totals.items()}
    accepted = proposed = rounds = new = 0
    for p in prompts:
        stats = speculative(np.array([p]))["stats"]
        accepted, proposed = accepted + stats.draft_tokens_accepted, proposed + stats.draft_tokens_proposed
        rounds, new = rounds + stats.target_calls, new + stats.new_tokens
    print(f"ratio speculative_vs_greedy: {rate['speculative'] / rate['greedy']:.2f}")
    print(f"acceptance_rate: {accepted / max(proposed, 1):.2f}")
    print(f"tokens_per_target_call: {new / max(rounds, 1):.2f}")
    print(f"tokens_per_s greedy: {rate['greedy']:.1f}  speculative: {rate['speculative']:.1f}  "
          f"(k={args.k}, {len(prompts)} prompts, {args.rounds} rounds{', smoke' if args.smoke else ''})")


if __name__ == "__main__":
    main()
