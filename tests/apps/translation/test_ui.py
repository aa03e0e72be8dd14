"""The translation tab of the Gradio demo, against a live server: streaming, options, errors.

A tiny random-weight en-de release (WordPiece vocabularies learned from a few
UI strings) is written to a temporary ``saved_models/`` through the shared
exporter; the demo serves it on 127.0.0.1 and is called like a user would:
through ``gradio_client`` and in headless Chromium (Debian ``chromium`` +
``chromium-driver``), driven over the W3C WebDriver protocol with ``urllib``
(no extra Python package). The tab streams: every generated token updates the
output box, and the last update must equal the release's own ``translate``
signature (the non-streaming answer).
"""

import json
import os
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402
from gradio_client import Client  # noqa: E402

from apps.export import GenerationExport, write_generation_saved_model  # noqa: E402
from apps.releases import GenerationReleases, ReleasedModel  # noqa: E402
from apps.translation import TranslationApp  # noqa: E402
from apps.translation.app import MAX_INPUT_CHARACTERS  # noqa: E402
from apps.ui import build_demo  # noqa: E402
from layers.transformer_models import Transformer  # noqa: E402
from pipelines.preprocessing import TextPreprocessor  # noqa: E402
from pipelines.wordpiece import WordpieceTokenizer, learn_wordpiece_vocab  # noqa: E402

ENGLISH = ["Open the file.", "Close the window", "Delete all selected messages", "Show hidden files and folders"]
GERMAN = ["Datei öffnen.", "Fenster schließen", "Alle ausgewählten Nachrichten löschen", "Versteckte Dateien anzeigen"]
SOURCE_LENGTH, MAX_NEW_TOKENS, NUM_BEAMS = 24, 6, 2
TOO_MANY_PIECES = " ".join(["Open the file"] * 10)  # more word pieces than SOURCE_LENGTH - 2
TOO_LONG = "The text is too long for the model, which would cut it"


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def tokenizers():
    source = WordpieceTokenizer(learn_wordpiece_vocab(ENGLISH, vocab_size=80))
    target = WordpieceTokenizer(learn_wordpiece_vocab(GERMAN, vocab_size=80, lower_case=False), lower_case=False)
    return source, target


@pytest.fixture(scope="module")
def models_dir(tokenizers, tmp_path_factory):
    source, target = tokenizers
    assert int(source.tokenize(tf.constant([TOO_MANY_PIECES])).row_lengths()[0]) > SOURCE_LENGTH - 2
    keras.utils.set_random_seed(11)
    model = Transformer(source.vocab_size, target.vocab_size, 16, hidden_dim=16, num_heads=2, num_encoder_layers=1,
                        num_decoder_layers=1)
    model.build()
    export = GenerationExport(
        model, TextPreprocessor(source, target, SOURCE_LENGTH, language="de", input_name="sentences"),
        names=TranslationApp.names, max_new_tokens=MAX_NEW_TOKENS, num_beams=NUM_BEAMS, beam_sizes=(1, 2, 3),
    )
    directory = tmp_path_factory.mktemp("saved_models")
    write_generation_saved_model(export, directory / "translation_en_de" / "1")
    return directory


@pytest.fixture(scope="module")
def release(models_dir):
    return ReleasedModel(models_dir / "translation_en_de" / "1")


def _expected(release, text, beam_size=NUM_BEAMS, max_length=MAX_NEW_TOKENS):
    """The release's non-streaming answer (its ``translate`` signature)."""
    outputs = release.call(
        "translate", sentences=np.array([text], object), beam_size=np.int32(beam_size), max_length=np.int32(max_length)
    )
    return outputs["translations"][0].decode("utf-8")


@pytest.fixture(scope="module")
def server(models_dir, tmp_path_factory):
    demo = build_demo(names=["translation"], models_dir=models_dir, examples_dir=tmp_path_factory.mktemp("examples"))
    port = _free_port()
    demo.queue().launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        demo.close()


@pytest.fixture(scope="module")
def client(server):
    return Client(server, verbose=False)


def test_preprocess_validates_the_ui_values():
    preprocess = TranslationApp().preprocess
    request = preprocess("  Open   the file. ", "en_de", 4, 32)
    assert request == {"choice": "en_de", "input": "Open the file.", "beam_size": 4, "max_length": 32}
    for args, message in (
        (("", "en_de", 4, 32), "Nothing to translate: type an English sentence."),
        ((" \n ", "en_de", 4, 32), "Nothing to translate"),
        (("x" * (MAX_INPUT_CHARACTERS + 1), "en_de", 4, 32), f"the model translates at most {MAX_INPUT_CHARACTERS}"),
        (("Open", "en_fr", 4, 32), "Unknown language 'en_fr'"),
        (("Open", "en_de", 2.5, 32), "Beam size must be a whole number of at least 1, got 2.5"),
        (("Open", "en_de", 4, 0), "Max length must be a whole number of at least 1"),
    ):
        with pytest.raises(ValueError, match=message):
            preprocess(*args)


def test_no_release_says_how_to_make_one(tmp_path):
    with pytest.raises(FileNotFoundError, match="tfsuite export <app> --checkpoint"):
        TranslationApp().load_release(tmp_path)
    demo = build_demo(names=["translation"], models_dir=tmp_path, examples_dir=tmp_path)
    assert any("tfsuite export <app>" in str(getattr(b, "value", "")) for b in demo.blocks.values())


def test_releases_stream_ends_with_the_non_streaming_answer(models_dir, release):
    releases = TranslationApp().load_release(models_dir)
    for text in ENGLISH:
        request = {"choice": "en_de", "input": text, "beam_size": NUM_BEAMS, "max_length": MAX_NEW_TOKENS}
        updates = [partial for partial, _ in releases.stream(request)]
        assert updates[-1] == _expected(release, text) == releases(request)["translations"][0].decode("utf-8")
        assert 2 <= len(updates) <= MAX_NEW_TOKENS + 1  # one update per generated token, then the final text
    stopped = list(releases.stream({**request, "max_length": MAX_NEW_TOKENS}, should_stop=lambda: True))
    assert len(stopped) == 2  # Stop: the first token, then the text so far


def test_gradio_client_streams_the_release_translation(client, release):
    for text in ENGLISH[:2]:
        expected = _expected(release, text)
        assert expected, "the tiny model must produce a visible translation for this test to mean something"
        job = client.submit(text, "en_de", NUM_BEAMS, MAX_NEW_TOKENS, api_name="/translation")
        final = job.result()
        updates = job.outputs()
        assert final == expected and updates[-1] == expected
        assert len(updates) >= 2 and all(isinstance(u, str) for u in updates)  # streamed, not one answer
    # The decoding options reach the model: greedy search, and a shorter limit.
    assert client.predict(ENGLISH[0], "en_de", 1, MAX_NEW_TOKENS, api_name="/translation") == _expected(
        release, ENGLISH[0], beam_size=1
    )
    short = client.predict(ENGLISH[0], "en_de", NUM_BEAMS, 2, api_name="/translation")
    assert short == _expected(release, ENGLISH[0], max_length=2)
    assert len(short.split()) <= 2


def test_gradio_client_api_describes_numbers_as_numbers(client):
    parameters = {p["label"]: p for p in client.view_api(print_info=False, return_format="dict")[
        "named_endpoints"]["/translation"]["parameters"]}  # fmt: skip
    for label in ("Beam size (1 = greedy search)", "Max length (word pieces)"):
        assert parameters[label]["python_type"]["type"] in ("float", "int"), parameters[label]


def test_gradio_client_reports_bad_input(client):
    for text, language, beams, message in (
        ("", "en_de", NUM_BEAMS, "Nothing to translate: type an English sentence."),
        ("word " * 300, "en_de", NUM_BEAMS, f"characters long; the model translates at most {MAX_INPUT_CHARACTERS}"),
        (TOO_MANY_PIECES, "en_de", NUM_BEAMS, TOO_LONG),
        ("Open the file.", "en_ja", NUM_BEAMS, "No released model for 'en_ja' yet"),
        ("Open the file.", "en_de", 4, "Value 4 is greater than maximum value 3"),  # the slider's own check
    ):
        with pytest.raises(Exception, match=message):
            client.predict(text, language, beams, MAX_NEW_TOKENS, api_name="/translation")


# --- headless Chromium over WebDriver ---------------------------------------------------------


class _Browser:
    """The few WebDriver commands the test needs, over HTTP to a local ``chromedriver``."""

    ELEMENT = "element-6066-11e4-a52e-4f735466cecf"  # the W3C key of an element reference
    SELECT_ALL_DELETE = "\ue009a\ue000\ue003"  # Ctrl+A, release Ctrl, Backspace

    def __init__(self):
        port = _free_port()
        self.process = subprocess.Popen(
            [shutil.which("chromedriver"), f"--port={port}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        self.base = f"http://127.0.0.1:{port}"
        self.wait_for(lambda: self._request("GET", "/status")["ready"], "chromedriver did not start")
        options = {"args": ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"]}
        if shutil.which("chromium"):
            options["binary"] = shutil.which("chromium")
        capabilities = {"alwaysMatch": {"browserName": "chrome", "goog:chromeOptions": options}}
        self.session = self._request("POST", "/session", {"capabilities": capabilities})["sessionId"]

    def _request(self, method, path, body=None):
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            self.base + path, data=data, method=method, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=120) as response:
            return json.loads(response.read())["value"]

    def _session(self, method, path, body=None):
        return self._request(method, f"/session/{self.session}{path}", body)

    @staticmethod
    def wait_for(predicate, what, tries=600):
        """Poll ``predicate`` until it is true: a fixed number of tries 0.1 s apart, no wall-clock limit."""
        for _ in range(tries):
            try:
                if predicate():
                    return
            except (urllib.error.URLError, ConnectionError, KeyError):
                pass  # not there yet (no such element, driver still starting)
            time.sleep(0.1)
        raise AssertionError(what() if callable(what) else what)

    def open(self, url):
        self._session("POST", "/url", {"url": url})

    def find(self, xpath):
        element = self._session("POST", "/element", {"using": "xpath", "value": xpath})
        return element[self.ELEMENT]

    def replace_text(self, element, text):
        """Select all, delete, type ``text``: key events, as a user's, so the page sees the change."""
        self._session("POST", f"/element/{element}/value", {"text": self.SELECT_ALL_DELETE + text})

    def click(self, element):
        self._session("POST", f"/element/{element}/click", {})

    def value(self, element):
        return self._session("POST", "/execute/sync", {"script": "return arguments[0].value;",
                                                      "args": [{self.ELEMENT: element}]})

    def page_text(self):
        return self._session("POST", "/execute/sync", {"script": "return document.body.innerText;", "args": []})

    def close(self):
        try:
            self._request("DELETE", f"/session/{self.session}")
        finally:
            self.process.terminate()
            self.process.wait()


@pytest.fixture(scope="module")
def browser():
    if shutil.which("chromedriver") is None:
        pytest.fail("the browser test needs Debian chromium and chromium-driver: apt-get install chromium chromium-driver")
    browser = _Browser()
    try:
        yield browser
    finally:
        browser.close()


def _textarea(label):
    return f"//span[normalize-space()='{label}']/ancestor::label//textarea"


def test_browser_shows_the_translation_and_input_errors(server, browser, release):
    browser.open(server)
    browser.wait_for(lambda: browser.find(_textarea("English")), "the translation tab did not render")
    source, output = browser.find(_textarea("English")), browser.find(_textarea("Translation"))
    run = browser.find("//button[normalize-space()='Run']")
    # The tab's defaults are the release's decoding options (beam size, length).
    expected = _expected(release, ENGLISH[1])
    assert expected
    browser.replace_text(source, ENGLISH[1])
    browser.click(run)
    browser.wait_for(lambda: browser.value(output) == expected, lambda: f"no translation: shown {browser.value(output)!r}")
    for text, message in (
        ("", "Nothing to translate: type an English sentence."),
        (TOO_MANY_PIECES, TOO_LONG),
        ("word " * 201, "characters long; the model translates at most"),
    ):
        browser.replace_text(source, text)
        browser.click(run)
        browser.wait_for(
            lambda: message in browser.page_text(), lambda: f"no message {message!r} in the page: {browser.page_text()!r}"
        )
