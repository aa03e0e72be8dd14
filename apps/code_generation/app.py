"""The ``code_generation`` app: a GPT pre-trained on Python source writes a function's body from its docstring.

A declaration over the decoder-only engine (``apps/causal_lm.py``), textbook
sections 6.2 and 10.4:

* pre-training text: the standard library and site-packages on this machine
  with every ``tfsuite_code`` validation/test function and its near copies
  removed (:mod:`pipelines.code_pretraining`; licences in the corpus manifest);
* tokenizer: the code BPE of :mod:`pipelines.code_tokenizer` (exact round trip);
* fine-tuning pairs from ``tfsuite_code``: the prompt is the function's
  signature and docstring as written in a source file, the completion its body;
* metrics (greedy decoding on the test split): ``syntax_valid``,
  ``exact_match``, ``bleu`` (sacrebleu on Python tokens), and ``pass_at_1`` /
  ``pass_at_5`` on the test functions whose docstrings carry doctests (run in
  the sandbox of :mod:`code_tools.execution`; pass@1 from the greedy body,
  pass@5 from ``--samples`` sampled bodies, the unbiased estimator);
* the baseline, in the same run: the body of the training function whose
  docstring is nearest by BM25 (:mod:`code_tools.retrieval`), ``baseline_*``.

Example::

    tfsuite data build tfsuite_code
    tfsuite train code_generation --objective pretrain --run-name pretrain
    tfsuite train code_generation --init-from runs/code_generation/pretrain/model.keras --run-name finetune
    tfsuite evaluate code_generation --checkpoint runs/code_generation/finetune/model.keras
"""

from __future__ import annotations

import hashlib
import json
import textwrap
from dataclasses import dataclass
from pathlib import Path

from apps import metrics
from apps.causal_lm import CausalLMApp, CausalLMConfig
from code_tools.execution import has_doctests, run_doctests
from code_tools.retrieval import CodeRetriever
from apps.config import ConfigError, option
from pipelines import tfds_sources
from pipelines.code_tokenizer import CodeTokenizer, train_code_tokenizer
from pipelines.corpora.splits import assign_split
from pipelines.preprocessing import PromptPreprocessor

__all__ = ["CodeGenerationApp", "CodeGenerationConfig", "example_of", "prompt_of"]

EXAMPLE_CHARS = 400  # the longest retrieved example body (characters)


def prompt_of(signature, docstring):
    """The prompt: ``signature`` and ``docstring`` as in a source file; the body follows, indented by 4."""
    doc = textwrap.indent(docstring, "    ").strip()
    return f'{signature}\n    """{doc}\n    """\n'


def example_of(signature, docstring, body, max_chars=EXAMPLE_CHARS):
    """A training function as an in-context example: its signature, the docstring's first line, and the body's
    first lines up to ``max_chars`` characters, then a blank line."""
    first = (docstring.strip().splitlines() or [""])[0]
    lines, size = [], 0
    for line in body.rstrip().splitlines():
        if lines and size + len(line) + 1 > max_chars:
            break
        lines.append(line)
        size += len(line) + 1
    return prompt_of(signature, first) + "\n".join(lines) + "\n\n"


def prompts_of(functions):
    """The plain prompts of a split's functions (dict of lists)."""
    return [prompt_of(s, d) for s, d in zip(functions["signature"], functions["docstring"])]


def function_of(signature, body):
    """A generated (indented) body under its signature: the function the metrics parse and run."""
    return f"{signature}\n{body.rstrip()}\n"


@dataclass
class CodeGenerationConfig(CausalLMConfig):
    """Hyperparameters of the code-generation app."""

    corpus_dir: str = option("data/code_pretraining", "where the pre-training corpus is built (once per held-out set)")
    pretrain_bytes: int = option(30_000_000, "bytes of Python read for pre-training (stdlib first, then site-packages)")
    tokenizer_bytes: int = option(4_000_000, "bytes of pre-training text the tokenizer is learned from")
    chunk_bytes: int = option(1200, "pre-training documents are cut into pieces of whole lines of about this size")
    samples: int = option(5, "sampled bodies per doctest function for pass@5 (0 skips pass@5)")
    temperature: float = option(0.8, "sampling temperature for pass@5")
    few_shot: int = option(0, "training examples put before each prompt at evaluation (0: zero-shot)")
    timeout: float = option(5.0, "seconds each doctest run may take")
    retrieval_bytes: int = option(0, "0: plain prompts; else the BM25-nearest training function (by signature and "
                                     "docstring) is written before each prompt when both fit in this many bytes "
                                     "(training, evaluation and the SavedModel)")

    def __post_init__(self):
        super().__post_init__()
        if self.retrieval_bytes < 0 or self.few_shot < 0:
            raise ConfigError(f"retrieval_bytes and few_shot must be >= 0, got {self.retrieval_bytes}, {self.few_shot}")


class CodeGenerationApp(CausalLMApp):
    """Docstring to function body, scored by syntax, exact match, code BLEU and doctests against BM25 retrieval."""

    name = "code_generation"
    title = "Code generation"
    description = "write a Python function body from its docstring with a GPT pre-trained on Python; pass@k, BLEU"
    Config = CodeGenerationConfig

    # --- data ---------------------------------------------------------------------------------

    def functions(self, config, split):
        """``split`` of ``tfsuite_code`` as dict of lists: qualified_name, docstring, signature, body."""
        key = ("functions", split)
        if key not in self._cache:
            read = lambda fields: tfds_sources.load_columns("code", split=split, limit=config.limit,  # noqa: E731
                                                            fields=fields)
            a, b = read({"prompt": "docstring", "code": "signature"}), read({"prompt": "qualified_name", "code": "body"})
            self._cache[key] = {"docstring": a["prompt"], "signature": a["code"], "qualified_name": b["prompt"],
                                "body": [textwrap.indent(body, "    ") + "\n" for body in b["code"]]}
        return self._cache[key]

    def pairs(self, config, split):
        f = self.functions(config, split)
        prompts = prompts_of(f)
        if config.retrieval_bytes:  # a training function never sees itself as its example
            key = ("composed", split, config.retrieval_bytes, config.limit)
            if key not in self._cache:
                own = range(len(prompts)) if split == "train" else None
                self._cache[key] = self.retrieval(config).compose(prompts, exclude=own)
            prompts = self._cache[key]
        return prompts, f["body"]

    def retrieval(self, config):
        """``code_tools.retrieval.RetrievalPrompts`` over the training functions (examples by :func:`example_of`)."""
        from code_tools.retrieval import RetrievalPrompts

        key = ("retrieval", config.retrieval_bytes, config.limit)
        if key not in self._cache:
            f = self.functions(config, "train")
            keys = prompts_of(f)
            examples = [example_of(*row) for row in zip(f["signature"], f["docstring"], f["body"])]
            self._cache[key] = RetrievalPrompts(keys, examples, config.retrieval_bytes)
        return self._cache[key]

    def pretraining_documents(self, config, split):
        """Chunks of the held-out-free corpus (built once into ``--corpus-dir``, per held-out set and size);
        2% of the files validate (and serve as the pre-training run's test split too)."""
        from pipelines.code_pretraining import build_corpus, held_out_functions
        from pipelines.code_tokenizer import _chunks

        key = ("documents", "train" if split == "train" else "validation")
        if key not in self._cache:
            held_out = held_out_functions()
            digest = hashlib.sha256("\0".join(held_out.codes).encode()).hexdigest()[:12]
            folder = Path(config.corpus_dir) / f"{config.pretrain_bytes}_{digest}"
            if not (folder / "corpus.jsonl").is_file():
                print(f"building the pre-training corpus in {folder} (held-out functions removed)", flush=True)
                build_corpus(held_out, max_bytes=config.pretrain_bytes).save(folder)
            chunks = {"train": [], "validation": []}
            with open(folder / "corpus.jsonl", encoding="utf-8") as f:
                for line in f:
                    doc = json.loads(line)
                    side = "validation" if assign_split(doc["path"], (0.98, 0.02, 0.0)) == "validation" else "train"
                    chunks[side] += _chunks(doc["text"], config.chunk_bytes)
            self._cache.update({("documents", s): v for s, v in chunks.items()})
        return self._cache[key]

    def learn_tokenizer(self, texts, config):
        picked, size = [], 0
        for text in texts[:: max(1, sum(map(len, texts)) // config.tokenizer_bytes)]:
            picked.append(text)
            size += len(text)
            if size >= config.tokenizer_bytes:
                break
        return CodeTokenizer(train_code_tokenizer(picked, vocab_size=config.vocab_size))

    def load_tokenizer(self, directory):
        return CodeTokenizer.load(directory)

    # --- evaluation -----------------------------------------------------------------------------

    def few_shot_prefix(self, config):
        """``few_shot`` training functions (the shortest, so the prompt fits), written out whole."""
        if not config.few_shot:
            return ""
        prompts, bodies = self.pairs(config, "train")
        shortest = sorted(range(len(prompts)), key=lambda i: len(prompts[i]) + len(bodies[i]))[: config.few_shot]
        return "".join(prompts[i] + bodies[i] + "\n\n" for i in shortest)

    def score(self, bodies, config, split="test", prefix=""):
        """syntax_valid, exact_match, bleu and pass_at_1 of ``bodies`` (one per ``split`` function)."""
        f = self.functions(config, split)
        functions = [function_of(s, b) for s, b in zip(f["signature"], bodies)]
        doctested = [i for i, d in enumerate(f["docstring"]) if has_doctests(d)]
        passed = [[self.passes(functions[i], f, i, config)] for i in doctested]
        results = {
            "syntax_valid": metrics.syntax_valid_rate(functions),
            "exact_match": sum(" ".join(metrics.code_tokens(b)) == " ".join(metrics.code_tokens(r))
                               for b, r in zip(bodies, f["body"])) / len(bodies),
            "bleu": metrics.code_bleu(bodies, f["body"]),
        }
        if doctested:
            results["pass_at_1"] = metrics.corpus_pass_at_k(passed, (1,))["pass@1"]
        return {prefix + k: v for k, v in results.items()}

    def passes(self, function, f, i, config):
        result = run_doctests(function, f["docstring"][i], qualified_name=f["qualified_name"][i], timeout=config.timeout)
        return result.passed

    def evaluate(self, model, config):
        """Test-split figures of ``model`` (greedy; pass@5 sampled) and, in the same run, of the BM25 baseline."""
        if config.objective == "pretrain":
            return super().evaluate(model, config)
        prompts, _ = self.pairs(config, "test")
        prefix = self.few_shot_prefix(config)
        bodies = self.complete(model, config, [prefix + p for p in prompts])
        results = self.score(bodies, config)
        f = self.functions(config, "test")
        doctested = [i for i, d in enumerate(f["docstring"]) if has_doctests(d)]
        if config.samples and doctested:
            outcomes = [[] for _ in doctested]
            for s in range(config.samples):
                sampled = self.complete(model, config, [prefix + prompts[i] for i in doctested],
                                        sampler=self.sampler(config), seed=1000 * (s + 1))
                for slot, (i, body) in enumerate(zip(doctested, sampled)):
                    outcomes[slot].append(self.passes(function_of(f["signature"][i], body), f, i, config))
            results["pass_at_5"] = metrics.corpus_pass_at_k(outcomes, (min(5, config.samples),))[
                f"pass@{min(5, config.samples)}"]
        results["doctest_functions"] = len(doctested)
        results["few_shot"] = config.few_shot
        train = self.functions(config, "train")
        retriever = CodeRetriever(train["docstring"], train["body"])
        results.update(self.score(retriever.retrieve(f["docstring"]), config, prefix="baseline_"))
        if config.retrieval_bytes:  # the bodies of the examples the model read (signature + docstring BM25)
            shown = self.retrieval(config).retriever.nearest(prompts_of(f))
            results.update(self.score([train["body"][i] for i in shown[:, 0]], config, prefix="example_"))
        return results

    def prompt_preprocessor(self, config):
        """With ``--retrieval-bytes`` the release graph composes each prompt with its retrieved example first."""
        plain = super().prompt_preprocessor(config)
        return _RetrievalPromptPreprocessor(self.retrieval(config), plain) if config.retrieval_bytes else plain

    def sampler(self, config):
        from layers.samplers import RandomSampler

        return RandomSampler(temperature=config.temperature)

    # --- the demo tab (apps/ui.py streams the release's completion) ------------------------------

    streaming = True
    reads_truncated = False  # a cut prompt loses the end of its docstring: refused in the tab
    max_input_characters = 2000

    def load_release(self, models_dir):
        from apps.releases import GenerationReleases

        return GenerationReleases(models_dir, {self.name: self.release_name(self.Config())}, self.names)

    def ui_inputs(self, releases=None):
        import gradio as gr

        return [gr.Code(language="python", label="Signature and docstring", lines=8,
                        value=prompt_of("def median(data):", "Return the median (middle value) of numeric data.")),
                gr.Slider(1, self.Config().max_new_tokens, value=96, step=1, label="Max length (tokens)")]

    def ui_outputs(self):
        import gradio as gr

        # A Textbox, not gr.Code: gr.Code strips the leading whitespace, the first line's indentation.
        return [gr.Textbox(label="Generated body", lines=12, max_lines=40)]

    def ui_examples(self, cache_dir, releases=None):
        """The shortest test-split prompts when the corpus is built, else one fixed prompt."""
        try:
            prompts = sorted(self.pairs(self.Config(), "test")[0], key=len)[:3]
        except Exception:  # noqa: BLE001 - a demo without the built corpus still shows an example
            prompts = [prompt_of("def median(data):", "Return the median (middle value) of numeric data.")]
        return [[prompt, 96] for prompt in prompts]

    def preprocess(self, prompt, max_length=96):
        """The typed signature and docstring -> a release request; ValueError with a message on bad input."""
        if not prompt or not prompt.strip() or "def " not in prompt:
            raise ValueError("Type a function signature (def ...) and its docstring.")
        if len(prompt) > self.max_input_characters:
            raise ValueError(f"The prompt is {len(prompt)} characters; the model reads at most "
                             f"{self.max_input_characters}.")
        if max_length is None or int(max_length) < 1:
            raise ValueError(f"Max length must be at least 1, got {max_length}.")
        return {"choice": self.name, "input": prompt.rstrip() + "\n", "beam_size": 1, "max_length": int(max_length)}

    def postprocess(self, outputs):
        first = outputs[self.names.output].reshape(-1)[0]
        return first.decode("utf-8") if isinstance(first, bytes) else str(first)


class _RetrievalPromptPreprocessor(PromptPreprocessor):
    """A ``PromptPreprocessor`` that composes each prompt with its retrieved example first (TFLite: ids as given)."""

    def __init__(self, composer, plain):
        super().__init__(plain.source_tokenizer, plain.prompt_length, input_name=plain.input_name)
        self.composer = composer

    def prompt_inputs(self, texts, tflite=False):
        return super().prompt_inputs(texts if tflite else self.composer(texts), tflite=tflite)
