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

__all__ = ["UnknownAppError", "app_names", "get_app", "get_app_class"]

_APPS = {
    "fashion_mnist": "apps.image_classification:FashionMNISTApp",
    "translation": "apps.translation:TranslationApp",
}


class UnknownAppError(ValueError):
    """An app name that is not registered."""


def app_names():
    """The registered app names, sorted."""
    return sorted(_APPS)


def get_app_class(name):
    """Import and return the App class registered under ``name``."""
    if name not in _APPS:
        raise UnknownAppError(f"unknown app {name!r}; available apps: {', '.join(app_names())}")
    module_name, class_name = _APPS[name].split(":")
    return getattr(importlib.import_module(module_name), class_name)


def get_app(name):
    """Return an instance of the App registered under ``name``."""
    return get_app_class(name)()
