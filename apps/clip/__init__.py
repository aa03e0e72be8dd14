"""The CLIP app (textbook section 9.1): contrastive image-text training on the caption corpus.

Example::

    from apps.clip import ClipApp, ClipConfig

    app = ClipApp()
    config = ClipConfig(limit=200, vocab_size=300, image_size=32, image_backbone="8,16", hidden_dim=32,
                        embed_dim=16, num_layers=1, num_heads=2, runs_dir="/tmp/runs")
    model = app.build_model(config)       # tiny random-weight CLIP, tokenizer learned from 200 captions
"""

from apps.clip.app import ClipApp, ClipConfig, nearest_captions

__all__ = ["ClipApp", "ClipConfig", "nearest_captions"]
