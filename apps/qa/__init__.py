"""The question-answering app (textbook section 10.3): MiniLM fine-tuned to extract answer spans.

Example::

    from apps.qa import QAApp, QAConfig

    app = QAApp()
    config = QAConfig(limit=100)
    model = app.build_model(config)       # MiniLM-L6 with a fresh span head
"""

from apps.qa.app import QAApp, QAConfig

__all__ = ["QAApp", "QAConfig"]
