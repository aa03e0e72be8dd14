"""The speech tab, live through ``gradio_client``: an uploaded WAV gets a transcript, silence an empty one, and
bad uploads a message. The tiny Whisper of the app tests is exported into a temporary ``saved_models/``."""

import numpy as np
import pytest
from gradio_client import handle_file

from apps import cli
from apps.ui import build_demo
from tests.apps.speech_recognition import test_app as speech_tests
from tests.apps.ui_server import live_client

pytestmark = speech_tests.needs_corpus


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    models = tmp_path_factory.mktemp("saved_models")
    _, result = speech_tests.train_tiny(tmp_path_factory.mktemp("runs"))
    assert cli.main(["export", "speech_recognition", "--checkpoint", str(result.model_path), "--models-dir", str(models)]) == 0
    yield from live_client(build_demo(names=["speech_recognition"], models_dir=models,
                                      examples_dir=tmp_path_factory.mktemp("examples")))


def test_a_recording_gets_a_transcript_and_silence_an_empty_one(client, tmp_path):
    path = tmp_path / "speech.wav"
    path.write_bytes(speech_tests.spoken("hello world", tmp_path))
    assert isinstance(client.predict(handle_file(str(path)), 1, 8, api_name="/speech_recognition"), str)
    path.write_bytes(speech_tests.wav_bytes(np.zeros(16000), 44100))
    assert client.predict(handle_file(str(path)), 1, 8, api_name="/speech_recognition") == ""


@pytest.mark.parametrize("data, message", [(b"fLaC not a wav", "FLAC, not WAV"),
                                           (speech_tests.wav_bytes(speech_tests.sine(0.2), width=1), "8-bit")])
def test_bad_uploads_get_a_message(client, tmp_path, data, message):
    path = tmp_path / "upload.wav"
    path.write_bytes(data)
    with pytest.raises(Exception, match=message):
        client.predict(handle_file(str(path)), 1, 8, api_name="/speech_recognition")
