"""The code-generation app (textbook sections 6.2 and 10.4): a GPT pre-trained on Python writes function bodies.

Example::

    from apps.code_generation import CodeGenerationApp, CodeGenerationConfig

    app = CodeGenerationApp()
    config = CodeGenerationConfig(limit=40, vocab_size=400, num_layers=1, hidden_dim=32, num_heads=2,
                                  intermediate_dim=64, runs_dir="/tmp/runs")
    prompts, bodies = app.pairs(config, "test")   # signature + docstring -> indented body
"""

from apps.code_generation.app import CodeGenerationApp, CodeGenerationConfig

__all__ = ["CodeGenerationApp", "CodeGenerationConfig"]
