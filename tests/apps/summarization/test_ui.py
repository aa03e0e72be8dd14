"""The summarization tab of the Gradio demo against a live server: it streams the release's summary,
summarizes a long text from its beginning (status ``truncated``), and reports bad input."""

import os

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from apps.export import GenerationExport, write_generation_saved_model  # noqa: E402
from apps.releases import ReleasedModel  # noqa: E402
from apps.summarization import SummarizationApp  # noqa: E402
from apps.ui import build_demo  # noqa: E402
from tests.apps.ui_server import live_client  # noqa: E402
from layers.t5 import T5  # noqa: E402
from pipelines.preprocessing import TextPreprocessor  # noqa: E402
from pipelines.wordpiece import RESERVED_TOKENS, WordpieceTokenizer, learn_wordpiece_vocab  # noqa: E402

TEXTS = ["The package provides a fast library for reading image files.", "A small tool to convert audio files."]
SOURCE_LENGTH, MAX_NEW_TOKENS, NUM_BEAMS = 64, 6, 2
LONG = " ".join(["the package provides a library"] * 30)  # more word pieces than the model reads


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory):
    tokenizer = WordpieceTokenizer(learn_wordpiece_vocab(TEXTS + ["summarize:"], vocab_size=200))
    keras.utils.set_random_seed(5)
    model = T5(tokenizer.vocab_size, 16, num_layers=1, hidden_dim=16, num_heads=2, intermediate_dim=32)
    model.build()
    # Zero rows for the special tokens ([END], [START], ...): their logits are 0 while some of the
    # random ones are positive, so the random model writes a visible summary.
    weights = model.embeddings.numpy()
    weights[: len(RESERVED_TOKENS)] = 0.0
    model.embeddings.assign(weights)
    export = GenerationExport(
        model, TextPreprocessor(tokenizer, tokenizer, SOURCE_LENGTH, 12, input_name="texts", prefix="summarize: "),
        names=SummarizationApp.names, max_new_tokens=MAX_NEW_TOKENS, num_beams=NUM_BEAMS, beam_sizes=(1, 2),
    )
    directory = tmp_path_factory.mktemp("saved_models")
    write_generation_saved_model(export, directory / "summarization" / "1")
    return directory


@pytest.fixture(scope="module")
def client(models_dir, tmp_path_factory):
    yield from live_client(build_demo(names=["summarization"], models_dir=models_dir,
                                      examples_dir=tmp_path_factory.mktemp("ex")))


def _expected(models_dir, text, beam_size=NUM_BEAMS):
    release = ReleasedModel(models_dir / "summarization" / "1")
    outputs = release.call("summarize", texts=np.array([text], object), beam_size=np.int32(beam_size),
                           max_length=np.int32(MAX_NEW_TOKENS))
    return outputs["summaries"][0].decode("utf-8"), outputs["status"][0].decode()


def test_the_tab_streams_the_release_summary(client, models_dir):
    for text in TEXTS:
        expected, status = _expected(models_dir, text)
        assert status == "ok" and expected
        job = client.submit(text, NUM_BEAMS, MAX_NEW_TOKENS, api_name="/summarization")
        assert job.result() == expected and job.outputs()[-1] == expected and len(job.outputs()) >= 2


def test_a_long_text_is_summarized_from_its_beginning(client, models_dir):
    expected, status = _expected(models_dir, LONG)
    assert status == "truncated"
    assert client.predict(LONG, NUM_BEAMS, MAX_NEW_TOKENS, api_name="/summarization") == expected


def test_bad_input_gets_a_message(client):
    for text, beams, message in (
        ("", NUM_BEAMS, "Nothing to work on: type the text."),
        ("word " * 1300, NUM_BEAMS, "the model reads at most 6000 characters"),
    ):
        with pytest.raises(Exception, match=message):
            client.predict(text, beams, MAX_NEW_TOKENS, api_name="/summarization")
