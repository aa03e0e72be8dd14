"""App registry: app name -> App class, imported only when asked for.

Apps pull in TensorFlow, their data pipelines and model code, so the registry
stores ``"module:ClassName"`` strings and imports an app on first use.

Example::

    from apps.registry import get_app, app_names

    app = get_app("fashion_mnist")   # an App instance
    app_names()                      # ["fashion_mnist"]
"""

from __future__ import annotations

import importlib

__all__ = ["UnknownAppError", "app_description", "app_names", "get_app", "get_app_class"]

# name -> ("module:ClassName", one-line description). The descriptions are here, not
# read from the classes, so `tfsuite --help` lists the apps without importing them
# (an app imports TensorFlow: seconds). tests/apps/test_cli.py checks they match.
_APPS = {
    "detection": (
        "apps.detection:DetectionApp",
        "find the emoji in a scene and name their Unicode group with DETR (Hungarian matching); COCO AP",
    ),
    "fashion_mnist": (
        "apps.image_classification:FashionMNISTApp",
        "classify 28x28 clothing images (10 classes) with LeNet-5 ... DenseNet-121",
    ),
    "translation": (
        "apps.translation:TranslationApp",
        "translate English to German (or Japanese) with a Transformer and beam search; BLEU, chrF",
    ),
    "qa": (
        "apps.qa:QAApp",
        "answer a question with a span of a given text (MiniLM fine-tuned); exact match and F1 (SQuAD)",
    ),
    "clip": (
        "apps.clip:ClipApp",
        "contrastive image-text pre-training (CLIP) on the captions; retrieval recall@k, zero-shot naming",
    ),
    "code_generation": (
        "apps.code_generation:CodeGenerationApp",
        "write a Python function body from its docstring with a GPT pre-trained on Python; pass@k, BLEU",
    ),
    "captioning": (
        "apps.captioning:CaptioningApp",
        "caption an image with a ViT-hybrid encoder and a Transformer decoder; BLEU-4, CIDEr vs retrieval",
    ),
    "speech_recognition": (
        "apps.speech_recognition:SpeechRecognitionApp",
        "transcribe English speech (WAV) with a Whisper-style encoder-decoder; WER, CER per held-out voice",
    ),
    "summarization": (
        "apps.summarization:SummarizationApp",
        "summarize a text in one line with T5 (span-corruption pre-training); ROUGE against the lead baseline",
    ),
}


class UnknownAppError(ValueError):
    """An app name that is not registered."""


def app_names():
    """The registered app names, sorted."""
    return sorted(_APPS)


def app_description(name):
    """The app's one-line description, without importing the app."""
    _check(name)
    return _APPS[name][1]


def _check(name):
    if name not in _APPS:
        raise UnknownAppError(f"unknown app {name!r}; available apps: {', '.join(app_names())}")


def get_app_class(name):
    """Import and return the App class registered under ``name``."""
    _check(name)
    module_name, class_name = _APPS[name][0].split(":")
    return getattr(importlib.import_module(module_name), class_name)


def get_app(name):
    """Return an instance of the App registered under ``name``."""
    return get_app_class(name)()
