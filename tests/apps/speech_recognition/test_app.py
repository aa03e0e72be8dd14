"""Speech-recognition app: training batches, WER / CER per held-out voice beside the baseline, the WAV-bytes
release (a status per row), the upload checks, the augmentation, and LibriSpeech by name (TFDS mock).

A tiny Whisper trains 2 steps on the first 16 utterances of the built ``tfsuite_speech`` corpus (``--limit``);
the tests that need the corpus skip without it.
"""

import io
import json
import shutil
import subprocess
import wave

import keras
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from apps import cli
from apps.config import ConfigError
from apps.speech_recognition import SpeechRecognitionApp, SpeechRecognitionConfig
from apps.trainer import train
from pipelines import audio
from pipelines.corpora import sources as corpora_sources

TINY = dict(
    limit=16, hidden_dim=32, num_heads=2, intermediate_dim=64, num_layers=1, dropout=0.0, num_mel_bins=40,
    batch_size=8, max_target_length=64, max_new_tokens=12, model_max_length=64, beam_size=1, eval_batch_size=8,
    warmup_steps=2, learning_rate=1e-3, verbose=0, steps_per_epoch=2, epochs=1, validation_pairs=8,
    precision="float32", checkpoint_steps=0, keep_checkpoints=1, average_checkpoints=0, export_weights="float32",
)
needs_corpus = pytest.mark.skipif(
    not (corpora_sources.data_dir() / "tfsuite_speech").is_dir(), reason="tfsuite_speech is not built (tfsuite data build)"
)


def wav_bytes(samples, rate=16000, channels=1, width=2):
    """A PCM WAV file: ``samples`` float in [-1, 1], shape (n,) or (n, channels), 8- or 16-bit."""
    samples = np.asarray(samples, np.float64).reshape(-1, channels)
    if width == 1:
        pcm = np.clip(samples * 127 + 128, 0, 255).astype(np.uint8)
    else:
        pcm = np.clip(samples * 32767, -32768, 32767).astype("<i2")
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as file:
        file.setnchannels(channels)
        file.setsampwidth(width)
        file.setframerate(rate)
        file.writeframes(pcm.tobytes())
    return buffer.getvalue()


def sine(seconds, rate=16000, hz=440.0, channels=1):
    t = np.arange(int(seconds * rate)) / rate
    return np.repeat((0.3 * np.sin(2 * np.pi * hz * t))[:, None], channels, axis=1)


def spoken(text, tmp_path):
    """``text`` spoken by espeak-ng (22.05 kHz 16-bit WAV), else a 1 s sine tone."""
    if shutil.which("espeak-ng"):
        path = tmp_path / "spoken.wav"
        subprocess.run(["espeak-ng", "-w", str(path), text], check=True, capture_output=True)
        return path.read_bytes()
    return wav_bytes(sine(1.0, 22050), 22050)


def train_tiny(runs_dir):
    """The tiny Whisper, 2 training steps on the first 16 utterances."""
    keras.utils.set_random_seed(0)
    config = SpeechRecognitionConfig(**TINY, runs_dir=str(runs_dir), run_name="tiny")
    return config, train(SpeechRecognitionApp(), config, command="pytest")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    return train_tiny(tmp_path_factory.mktemp("runs"))


@needs_corpus
def test_batches_hold_log_mel_frames_with_a_mask_and_targets_shifted_by_one(trained):
    config, _ = trained
    app = SpeechRecognitionApp()
    features, targets = next(iter(app.build_datasets(config).test))
    tokenizer = app.tokenizers(config).target
    assert features["encoder_inputs"].shape[-1] == 40 and features["encoder_padding_mask"].dtype == tf.bool
    ids, mask = features["decoder_token_ids"].numpy(), features["decoder_padding_mask"].numpy()
    assert (ids[:, 0] == tokenizer.start_id).all()
    np.testing.assert_array_equal(ids[:, 1:][mask[:, 1:]], targets.numpy()[:, :-1][mask[:, 1:]])
    first = tokenizer.detokenize(targets[:1]).numpy()[0].decode().replace(" ' ", "'")
    assert first in app.load_texts(config, "test")[1]  # one token per character: transcripts are spelled exactly


def test_character_tokenizer_spells_contractions_back():
    app, config = SpeechRecognitionApp(), SpeechRecognitionConfig(**TINY)
    tokenizer = app._learn(["don't go there"], config)
    assert tokenizer.vocab_size == 5 + 27 + 26  # reserved, letters and apostrophe, word-internal letters
    from apps.seq2seq import Tokenizers

    pre = app.preprocessor(config, tokenizers=Tokenizers(tokenizer, tokenizer))
    ids = tokenizer.tokenize(tf.constant(["don't go there"])).to_tensor()
    assert pre.decode(ids).numpy()[0].decode() == "don't go there"


@needs_corpus
def test_training_runs_and_evaluate_prints_wer_cer_per_voice_beside_the_baseline(trained, capsys):
    _, result = trained
    assert cli.main(["evaluate", "speech_recognition", "--checkpoint", str(result.model_path)]) == 0
    out = capsys.readouterr().out
    values = {line.split(": ")[0]: float(line.split(": ")[1]) for line in out.splitlines()
              if ": " in line and line.split(": ")[0].replace("baseline_", "")[:3] in ("wer", "cer")}
    for name in ("wer", "cer", "baseline_wer", "baseline_cer"):
        assert name in values and values[name] >= 0
    voices = SpeechRecognitionApp().voices(SpeechRecognitionConfig(**TINY), "test")
    assert f"wer[{voices[0]}]" in values and f"baseline_cer[{voices[0]}]" in values
    assert "baseline: most frequent training transcript" in out or "baseline: pocketsphinx" in out
    record = json.loads((result.run_dir / "evaluation.json").read_text())
    assert record["metrics"]["wer"] == pytest.approx(values["wer"], abs=1e-4) and "jiwer" in json.dumps(record)


@needs_corpus
def test_release_takes_wav_bytes_of_any_rate_with_a_status_per_row(trained, tmp_path):
    config, result = trained
    assert cli.main(["export", "speech_recognition", "--checkpoint", str(result.model_path),
                     "--models-dir", str(tmp_path)]) == 0
    served = tf.saved_model.load(str(tmp_path / "speech_recognition" / "1")).signatures["serving_default"]
    corpus_wav = SpeechRecognitionApp().load_texts(config, "test")[0][0]
    rows = [
        corpus_wav,
        spoken("hello world", tmp_path),                              # espeak-ng, 22.05 kHz
        wav_bytes(sine(0.8, 48000, channels=2), 48000, channels=2),   # 48 kHz stereo
        wav_bytes(sine(0.5), width=1),                                # 8-bit: tf.audio.decode_wav reads 16-bit only
        b"not a wav file at all",
        wav_bytes(np.zeros(16000)),                                   # silence
        wav_bytes(sine(31.0, 8000), 8000),                            # longer than 30 s
    ]
    out = served(audio_bytes=tf.constant(rows))
    statuses = [s.decode() for s in out["status"].numpy()]
    assert statuses == ["ok", "ok", "ok", "unreadable", "unreadable", "empty", "too_long"]
    transcripts = [t.decode() for t in out["transcripts"].numpy()]
    assert transcripts[3:] == [""] * 4
    model = keras.saving.load_model(result.model_path)
    assert transcripts[0] == SpeechRecognitionApp().generate(model, config, [corpus_wav], beam_size=1)[0]


@needs_corpus
def test_tflite_models_take_log_mel_frames_and_transcribe_as_the_saved_model(trained, tmp_path):
    from apps.export import TFLiteRunner

    config, result = trained
    args = ["--checkpoint", str(result.model_path), "--models-dir", str(tmp_path)]
    assert cli.main(["export", "speech_recognition", *args]) == 0
    assert cli.main(["export", "speech_recognition", "--format", "tflite", *args]) == 0
    release = tmp_path / "speech_recognition" / "1"
    served = tf.saved_model.load(str(release)).signatures["serving_default"]
    rows = [
        *SpeechRecognitionApp().load_texts(config, "test")[0][:2],
        spoken("hello world", tmp_path),
        wav_bytes(sine(0.8, 48000, channels=2), 48000, channels=2),
        b"not a wav file at all",
        wav_bytes(np.zeros(16000)),
        wav_bytes(sine(31.0, 8000), 8000),
    ]
    expected = served(audio_bytes=tf.constant(rows))
    for kind in ("float", "int8"):
        path = tmp_path / "speech_recognition" / "tflite" / f"model_{kind}.tflite"
        assert path.is_file()
        runner = TFLiteRunner(path)
        assert runner.interpreter.get_signature_list()[runner.names["tokens"]]["inputs"] == ["log_mel"]
        out = runner(rows)
        assert out["status"] == [s.decode() for s in expected["status"].numpy()]
        assert out["status"] == ["ok", "ok", "ok", "ok", "unreadable", "empty", "too_long"]
        assert out["transcripts"][4:] == [""] * 3
        if kind == "float":  # the same greedy transcripts; int8 weights may change a token
            assert out["transcripts"] == [t.decode() for t in expected["transcripts"].numpy()]


@pytest.mark.parametrize(
    "data, message",
    [
        (b"", "empty"),
        (b"ID3\x03\x00 an mp3 file", "MP3, not WAV"),
        (wav_bytes(sine(0.5), width=1), "8-bit PCM WAV"),
        (wav_bytes(np.zeros(0)), "empty"),
        (wav_bytes(sine(31.0, 8000), 8000), "at most 30 s"),
    ],
    ids=["no-bytes", "mp3", "8-bit", "no-samples", "31-seconds"],
)
def test_uploads_that_cannot_be_transcribed_get_a_message(data, message, tmp_path):
    path = tmp_path / "upload.wav"
    path.write_bytes(data)
    with pytest.raises(ValueError, match=message):
        SpeechRecognitionApp().preprocess(str(path), 1, 10)


def test_48_khz_stereo_and_silence_uploads_become_16_khz_mono_requests(tmp_path):
    app = SpeechRecognitionApp()
    for name, data in (("stereo", wav_bytes(sine(0.5, 48000, channels=2), 48000, channels=2)),
                       ("silence", wav_bytes(np.zeros(8000)))):
        path = tmp_path / f"{name}.wav"
        path.write_bytes(data)
        request = app.preprocess(str(path), 1, 10)
        with wave.open(io.BytesIO(request["input"])) as file:
            assert (file.getframerate(), file.getnchannels(), file.getsampwidth()) == (16000, 1, 2)
            assert abs(file.getnframes() - 8000) <= 1
    assert request["choice"] == "speech_recognition"
    with pytest.raises(ValueError, match="No recording"):
        app.preprocess(None, 1, 10)


def test_waveform_augmentation_changes_speed_and_adds_noise_reproducibly():
    waveform = tf.constant(sine(1.0)[:, 0], tf.float32)
    lengths = {int(tf.shape(audio.perturb_waveform(waveform, tf.constant([s, 1]), snr_db=None))[0]) for s in range(12)}
    assert lengths == {14400, 16000, 17600}  # speeds 1.11, 1, 0.91 (rates on a 1600 Hz grid)
    noisy = audio.perturb_waveform(waveform, tf.constant([3, 4]), speeds=(1.0,), snr_db=(20.0, 20.0))
    snr = 10 * np.log10(np.mean(waveform.numpy() ** 2) / np.mean((noisy.numpy() - waveform.numpy()) ** 2))
    assert snr == pytest.approx(20.0, abs=0.5)
    again = audio.perturb_waveform(waveform, tf.constant([3, 4]), speeds=(1.0,), snr_db=(20.0, 20.0))
    np.testing.assert_array_equal(noisy.numpy(), again.numpy())


def test_librispeech_reads_the_real_tfds_dataset_by_name():
    app, config = SpeechRecognitionApp(), SpeechRecognitionConfig(**{**TINY, "limit": None}, dataset="librispeech")
    with tfds.testing.mock_data(num_examples=3):
        examples = list(app.examples(config, "test").as_numpy_iterator())
        voices = app.voices(config, "test")
    assert len(examples) == 3 and len(voices) == 3
    for example in examples:
        assert example["audio"].dtype == np.float32 and example["audio"].ndim == 1
        assert set(example["transcript"].decode()) <= set("abcdefghijklmnopqrstuvwxyz' ")


def test_wav2vec2_ctc_is_a_model_choice_and_unknown_models_are_refused():
    assert SpeechRecognitionConfig(**TINY, model="wav2vec2_ctc", conv_filters=16).model == "wav2vec2_ctc"
    with pytest.raises(ConfigError, match="model must be one of"):
        SpeechRecognitionConfig(**TINY, model="conformer")


@needs_corpus
def test_wav2vec2_ctc_trains_on_waveforms_with_the_ctc_loss_and_evaluates_beside_the_baseline(tmp_path, capsys):
    from speech.ctc import CHARACTERS, CTCRecognizer

    keras.utils.set_random_seed(0)
    config = SpeechRecognitionConfig(**{**TINY, "beam_size": 2}, model="wav2vec2_ctc", conv_filters=16,
                                     runs_dir=str(tmp_path), run_name="ctc")
    app = SpeechRecognitionApp()
    features, labels = next(iter(app.build_datasets(config).test))
    assert features["waveform"].shape == features["padding_mask"].shape and features["padding_mask"].dtype == tf.bool
    first = "".join(CHARACTERS[i - 1] for i in labels.numpy()[0] if i)
    assert first in app.load_texts(config, "test")[1]
    result = train(app, config, command="pytest")
    model = keras.saving.load_model(result.model_path)
    assert isinstance(model, CTCRecognizer) and np.isfinite(result.history["loss"]).all()  # the CTC loss, per epoch
    assert cli.main(["evaluate", "speech_recognition", "--checkpoint", str(result.model_path)]) == 0
    out = capsys.readouterr().out
    for name in ("wer", "cer", "baseline_wer", "baseline_cer"):
        assert any(line.startswith(f"{name}: ") for line in out.splitlines()), name
    assert "baseline: most frequent training transcript" in out or "baseline: pocketsphinx" in out
    # The release: WAV bytes in, the Keras model's transcripts out (best path and beam), a status per row.
    assert cli.main(["export", "speech_recognition", "--checkpoint", str(result.model_path),
                     "--models-dir", str(tmp_path / "models")]) == 0
    release = tmp_path / "models" / "speech_recognition" / "1"
    loaded = tf.saved_model.load(str(release))
    wavs = app.load_texts(config, "test")[0][:2]
    out = loaded.signatures["serving_default"](audio_bytes=tf.constant([*wavs, b"RIFF nonsense", wav_bytes(np.zeros(8000))]))
    assert [s.decode() for s in out["status"].numpy()] == ["ok", "ok", "unreadable", "empty"]
    texts = [t.decode() for t in out["transcripts"].numpy()]
    assert texts[:2] == app.generate(model, config, wavs, beam_size=2) and texts[2:] == ["", ""]
    greedy = loaded.signatures["transcribe"](audio_bytes=tf.constant(wavs), beam_size=tf.constant(1),
                                             max_length=tf.constant(3))
    assert [t.decode() for t in greedy["transcripts"].numpy()] == [t[:3] for t in app.generate(model, config, wavs, beam_size=1)]
    from apps.releases import GenerationReleases

    releases = GenerationReleases(tmp_path / "models", {"speech_recognition": "speech_recognition"}, app.names)
    request = {"choice": "speech_recognition", "input": wavs[0], "beam_size": 2, "max_length": 12}
    # One recording alone gets what it got in the padded batch (the first GroupNorm reads real frames only).
    assert app.generate(model, config, wavs[:1], beam_size=2, max_length=12)[0] == texts[0]
    assert list(releases.stream(request))[-1] == (texts[0], "ok")
    capsys.readouterr()
    assert cli.main(["export", "speech_recognition", "--format", "tflite", "--models-dir", str(tmp_path / "models")]) != 0
    assert "TFLite export is not available" in capsys.readouterr().err


def test_wer_cer_are_jiwer_on_lower_cased_text_without_punctuation_overall_and_per_voice(monkeypatch):
    import jiwer

    app, config = SpeechRecognitionApp(), SpeechRecognitionConfig(**TINY)
    monkeypatch.setattr(SpeechRecognitionApp, "voices", lambda self, config, split: ["a", "b", "a"])
    hypotheses, references = ["Hello, World!", "dont stop", ""], ["hello world", "don't go", "one two"]
    scores = app.score(hypotheses, references, config)
    assert scores["wer"] == pytest.approx(jiwer.wer(["hello world", "dont go", "one two"], ["hello world", "dont stop", ""]))
    assert scores["wer[a]"] == pytest.approx(0.5) and scores["wer[b]"] == pytest.approx(0.5)
    assert scores["cer[a]"] == pytest.approx(jiwer.cer(["hello world", "one two"], ["hello world", ""]))
    with pytest.raises(ValueError, match="must pair up"):
        app.score(["a"], [], config)


def test_the_baseline_is_pocketsphinx_recognizing_espeak_speech():
    import shutil
    import subprocess
    import tempfile

    if not shutil.which("espeak-ng"):
        pytest.skip("espeak-ng is not installed (Debian package espeak-ng)")
    with tempfile.TemporaryDirectory() as folder:
        path = f"{folder}/speech.wav"
        subprocess.run(["espeak-ng", "-w", path, "the quick brown fox jumps over the lazy dog"], check=True)
        wav = tf.audio.encode_wav(audio.load_audio(path)[:, None], audio.SAMPLE_RATE).numpy()
    app = SpeechRecognitionApp()
    assert app.baseline_kind() == "pocketsphinx"
    hypotheses = app.baseline([wav, wav], SpeechRecognitionConfig(**TINY))
    # Some lower-case words heard, the same each time (it is not a good recognizer of synthetic speech).
    assert len(hypotheses) == 2 and hypotheses[0] and hypotheses[0] == hypotheses[1] == hypotheses[0].lower()
