"""The image-captioning app (textbook 7.2, 9.1, chapter 10): a declaration over the encoder-decoder engine (``apps/seq2seq.py``).

Example::

    from apps.captioning import CaptioningApp, CaptioningConfig

    app = CaptioningApp()
    config = CaptioningConfig(limit=200, vocab_size=300, hidden_dim=32, num_heads=2, intermediate_dim=64,
                              num_layers=1, image_backbone="8,16", runs_dir="/tmp/runs")
    model = app.build_model(config)       # tiny random-weight captioner, tokenizer learned from 200 captions
    images, captions = app.load_texts(config, "test")
    app.generate(model, config, images[:2], beam_size=2, max_length=8)
"""

from apps.captioning.app import CaptioningApp, CaptioningConfig

__all__ = ["CaptioningApp", "CaptioningConfig"]
