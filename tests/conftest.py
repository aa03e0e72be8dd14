"""Shared pytest setup: one place for seeds and TensorFlow settings."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _seed_everything():
    import keras

    keras.utils.set_random_seed(1234)
    yield


@pytest.fixture(scope="session")
def small_corpora(tmp_path_factory):
    """Build small slices of the offline corpora (20 examples per split) on demand.

    ``small_corpora("tfsuite_qa")`` builds that corpus from the real raw
    sources (the same builders as ``tfsuite data build``, capped with
    ``max_examples``) into a session temp dir and returns the TFDS data dir to
    pass as ``data_dir``. Tests that read the corpora use it, so they run on a
    fresh clone (CI) without the full builds under ``data/tfds``.
    """
    from pipelines.corpora import build

    root = tmp_path_factory.mktemp("tfds")
    built = set()

    def prepare(name):
        if name not in built:
            build.build(name, data_dir=root, max_examples=20, print_fn=lambda line: None)
            built.add(name)
        return root / "max_examples_20"

    return prepare
