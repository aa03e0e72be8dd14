"""The code-generation app on a tiny GPT: pairs, pre-training text without held-out functions, one training
step of each objective, greedy and sampled completions, and evaluate's model and baseline figures.

The corpus is the 20-example slice of ``tfsuite_code`` (``small_corpora``), so these run on a fresh clone.
"""

import numpy as np
import pytest

from apps.code_generation import CodeGenerationApp, CodeGenerationConfig
from code_tools.execution import has_doctests
from apps.code_generation.app import function_of, prompt_of
from apps.config import ConfigError
from apps.trainer import train
from pipelines.corpora import sources

TINY = dict(limit=20, vocab_size=400, num_layers=1, hidden_dim=32, num_heads=2, intermediate_dim=64,
            model_max_length=160, prompt_length=96, max_new_tokens=24, batch_size=4, batch_tokens=640,
            steps_per_epoch=2, epochs=1, warmup_steps=1, pretrain_bytes=400_000, tokenizer_bytes=200_000,
            samples=2, eval_batch_size=8, checkpoint_steps=0, verbose=0, precision="float32")


@pytest.fixture
def corpus(small_corpora, monkeypatch, tmp_path):
    monkeypatch.setenv(sources.DATA_DIR_ENV, str(small_corpora("tfsuite_code")))
    return tmp_path


def config_for(tmp_path, **overrides):
    return CodeGenerationConfig(**{**TINY, "runs_dir": str(tmp_path / "runs"),
                                   "corpus_dir": str(tmp_path / "corpus"), **overrides})


def test_prompt_and_body_form_the_function_of_the_corpus():
    prompt = prompt_of("def double(x):", "Twice x.\n\n>>> double(2)\n4")
    assert prompt == 'def double(x):\n    """Twice x.\n\n    >>> double(2)\n    4\n    """\n'
    code = function_of("def double(x):", "    return 2 * x\n")
    scope = {}
    exec(code, scope)
    assert scope["double"](3) == 6


def test_pairs_and_pretraining_text_leave_out_held_out_functions(corpus):
    app, config = CodeGenerationApp(), config_for(corpus)
    prompts, bodies = app.pairs(config, "test")
    assert len(prompts) == len(bodies) == 20 and all(b.startswith("    ") for b in bodies)
    documents = app.pretraining_documents(config, "train") + app.pretraining_documents(config, "validation")
    assert app.pretraining_documents(config, "validation") and len(" ".join(documents)) >= 300_000
    text = "\n".join(documents)
    held = app.functions(CodeGenerationConfig(limit=None), "test")
    for signature, body in zip(held["signature"], held["body"]):
        if len(body) > 200:  # long enough to be distinctive: not in the text under its own signature
            assert signature + "\n" + body.split("\n")[0] not in text


def test_both_objectives_train_and_evaluate_prints_model_and_baseline(corpus):
    app = CodeGenerationApp()
    pretrain = config_for(corpus, objective="pretrain", run_name="pretrain")
    result = train(app, pretrain)
    assert np.isfinite(result.metrics["test_loss"]) and 0.0 <= result.metrics["test_accuracy"] <= 1.0
    checkpoint = corpus / "runs" / "code_generation" / "pretrain" / "model.keras"
    assert checkpoint.is_file()
    finetune = config_for(corpus, init_from=str(checkpoint), run_name="finetune")
    model = app.build_model(finetune)  # the pre-trained weights and the copied tokenizer
    assert (corpus / "runs" / "code_generation" / "finetune" / "tokenizer").is_dir()
    results = app.evaluate(model, finetune)
    doctested = sum(map(has_doctests, app.functions(finetune, "test")["docstring"]))
    assert doctested > 0 and results["doctest_functions"] == doctested  # the 20-function slice has some
    for key in ("syntax_valid", "exact_match", "bleu", "pass_at_1", "pass_at_5",
                "baseline_syntax_valid", "baseline_bleu", "baseline_exact_match", "baseline_pass_at_1"):
        assert 0.0 <= results[key] <= (100.0 if "bleu" in key else 1.0), key
    # the baseline returns real training bodies: they parse
    assert results["baseline_syntax_valid"] > 0.9


def test_completions_are_decoded_text_and_sampling_is_seeded(corpus):
    app, config = CodeGenerationApp(), config_for(corpus)
    model = app.build_model(config)
    prompts = app.pairs(config, "test")[0][:3]
    greedy = app.complete(model, config, prompts)
    assert len(greedy) == 3 and all(isinstance(t, str) for t in greedy)
    assert greedy == app.complete(model, config, prompts)
    sampler = app.sampler(config)
    assert app.complete(model, config, prompts, sampler, seed=1) == app.complete(model, config, prompts, sampler, seed=1)


def test_bad_configs_raise_clear_errors(corpus):
    with pytest.raises(ConfigError, match="objective must be one of"):
        config_for(corpus, objective="rlhf")
    with pytest.raises(ConfigError, match="must fit model_max_length"):
        config_for(corpus, prompt_length=150, max_new_tokens=24)
    with pytest.raises(ConfigError, match="retrieval_bytes and few_shot must be >= 0"):
        config_for(corpus, retrieval_bytes=-1)
    app = CodeGenerationApp()
    with pytest.raises(FileNotFoundError, match="no tokenizer/ beside it"):
        app.tokenizer(config_for(corpus, init_from=str(corpus / "elsewhere" / "model.keras"), run_name="x"))


def test_saved_model_completes_like_keras_with_a_status_per_row(corpus):
    import tensorflow as tf

    app = CodeGenerationApp()
    config = config_for(corpus, export_weights="float32", prompt_length=300, model_max_length=330)
    model = app.build_model(config)
    prompts = sorted(app.pairs(config, "test")[0], key=len)[:2]
    folder = app.write_saved_model(model, config, corpus / "release" / "1")
    served = tf.saved_model.load(str(folder)).signatures["serving_default"]
    long_prompt = prompts[0] + "    " + "x = 1\n    " * 200
    out = served(prompts=tf.constant(prompts + ["", long_prompt]))
    texts = [t.decode("utf-8") for t in out["completions"].numpy()]
    assert texts[:2] == app.complete(model, config, prompts)
    assert [s.decode() for s in out["status"].numpy()] == ["ok", "ok", "empty", "truncated"]
    assert texts[2] == ""


def test_retrieval_augmented_prompts_are_the_same_in_training_evaluation_and_the_saved_model(corpus):
    import tensorflow as tf

    app = CodeGenerationApp()
    config = config_for(corpus, export_weights="float32", prompt_length=300, model_max_length=330, retrieval_bytes=700)
    plain = config_for(corpus)
    train_prompts, test_prompts = app.pairs(config, "train")[0], app.pairs(config, "test")[0]
    plain_train, plain_test = app.pairs(plain, "train")[0], app.pairs(plain, "test")[0]
    composed = [i for i, (p, q) in enumerate(zip(test_prompts, plain_test)) if p != q]
    assert composed and all(test_prompts[i].endswith(plain_test[i]) for i in range(len(plain_test)))
    assert all(len(test_prompts[i].encode()) <= 700 for i in composed)
    for prompt, own in zip(train_prompts, plain_train):  # never its own function as the example
        assert prompt.endswith(own) and not prompt[: -len(own)].startswith(own)
    model = app.build_model(config)
    folder = app.write_saved_model(model, config, corpus / "release" / "1")
    served = tf.saved_model.load(str(folder)).signatures["serving_default"]
    chosen = sorted(composed, key=lambda i: len(test_prompts[i]))[:2]
    out = served(prompts=tf.constant([plain_test[i] for i in chosen] + [" "]))  # the graph composes
    texts = [t.decode("utf-8") for t in out["completions"].numpy()]
    assert texts[:2] == app.complete(model, config, [test_prompts[i] for i in chosen])
    assert [s.decode() for s in out["status"].numpy()] == ["ok", "ok", "empty"]


def test_the_tab_refuses_empty_and_overlong_prompts():
    app = CodeGenerationApp()
    with pytest.raises(ValueError, match="Type a function signature"):
        app.preprocess("   ", 10)
    with pytest.raises(ValueError, match="the model reads at most 2000"):
        app.preprocess("def f():\n" + "    x = 1\n" * 400, 10)
    request = app.preprocess('def f():\n    """Nothing."""', 10)
    assert request["input"].endswith("\n") and request["max_length"] == 10
