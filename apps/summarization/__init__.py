"""The summarization app (textbook section 10.2): T5 on the text-to-text engine (``apps/seq2seq.py``).

Example::

    from apps.summarization import SummarizationApp, SummarizationConfig

    app = SummarizationApp()
    config = SummarizationConfig(limit=200, vocab_size=400, hidden_dim=32, num_heads=2, intermediate_dim=64,
                                 num_layers=1, runs_dir="/tmp/runs")
    model = app.build_model(config)       # a tiny random-weight T5
    app.generate(model, config, ["This package provides a library for reading PNG images. ..."], beam_size=2)
"""

from apps.summarization.app import SummarizationApp, SummarizationConfig

__all__ = ["SummarizationApp", "SummarizationConfig"]
