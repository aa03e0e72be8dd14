"""The translation app (textbook section 10.1): a declaration over the text-to-text engine (``apps/seq2seq.py``).

Example::

    from apps.translation import TranslationApp, TranslationConfig

    app = TranslationApp()
    config = TranslationConfig(limit=200, vocab_size=300, hidden_dim=32, num_heads=2,
                               intermediate_dim=64, num_layers=1, runs_dir="/tmp/runs")
    model = app.build_model(config)       # tiny random-weight Transformer, tokenizers learned from 200 pairs
    app.generate(model, config, ["Open the file."], beam_size=2, max_length=8)
"""

from apps.translation.app import TranslationApp, TranslationConfig

__all__ = ["TranslationApp", "TranslationConfig"]
