"""The code-generation tab through ``gradio_client``, on a tiny exported release: it streams the release's
completion, and reports an empty or overlong prompt as a message."""

import os

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import dataclasses  # noqa: E402

import pytest  # noqa: E402

from apps.code_generation import CodeGenerationApp  # noqa: E402
from apps.ui import build_demo  # noqa: E402
from pipelines.corpora import sources  # noqa: E402
from tests.apps.code_generation.test_app import config_for  # noqa: E402
from tests.apps.ui_server import live_client  # noqa: E402

NEW = 8


@pytest.fixture(scope="module")
def release(small_corpora, tmp_path_factory):
    folder = tmp_path_factory.mktemp("code_ui")
    old = os.environ.get(sources.DATA_DIR_ENV)
    os.environ[sources.DATA_DIR_ENV] = str(small_corpora("tfsuite_code"))
    try:
        app = CodeGenerationApp()
        config = config_for(folder, export_weights="float32", prompt_length=300, model_max_length=330)
        model = app.build_model(config)
        for weight in model.weights:  # large random weights: varied tokens, not one repeated newline
            if len(weight.shape) >= 2:
                weight.assign(weight * 8.0)
        app.write_saved_model(model, config, folder / "models" / "code_generation" / "1")
        prompt = sorted(app.pairs(config, "test")[0], key=len)[0]
        expected = app.complete(model, dataclasses.replace(config, max_new_tokens=NEW), [prompt])[0]
        yield folder, prompt, expected
    finally:
        if old is None:
            os.environ.pop(sources.DATA_DIR_ENV, None)
        else:
            os.environ[sources.DATA_DIR_ENV] = old


@pytest.fixture(scope="module")
def client(release):
    folder = release[0]
    yield from live_client(build_demo(names=["code_generation"], models_dir=folder / "models",
                                      examples_dir=folder / "examples"))


def test_gradio_client_streams_the_release_completion(client, release):
    _, prompt, expected = release
    assert expected.strip(), "the tiny model must produce visible code for this test to mean something"
    job = client.submit(prompt, NEW, api_name="/code_generation")
    assert job.result() == expected
    assert job.outputs()[-1] == expected and len(job.outputs()) >= 2  # streamed, token by token


def test_gradio_client_reports_bad_prompts(client):
    with pytest.raises(Exception, match="Type a function signature"):
        client.predict("", NEW, api_name="/code_generation")
    with pytest.raises(Exception, match="the model reads at most 2000"):
        client.predict("def f():\n" + "    x = 1\n" * 400, NEW, api_name="/code_generation")
