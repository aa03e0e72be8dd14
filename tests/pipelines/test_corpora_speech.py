import math
import shutil

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

import pipelines.corpora.speech  # noqa: F401  (registers tfsuite_speech)
from pipelines.corpora import speech, tts_voices
from pipelines.corpora.sources import MissingSourceError
from tests.pipelines.corpora_testdata import load_all, prepare, text, write_apt_lists


def test_normalize_transcript():
    assert speech.normalize_transcript("Where is Mary?") == "where is mary"
    assert speech.normalize_transcript("Command-line tool, for GNOME's  desktop.") == "command line tool for gnome's desktop"


def test_voices_are_held_out_by_speaker_accent_and_variant():
    splits = speech.VOICES
    for a, b in (("train", "validation"), ("train", "test"), ("validation", "test")):
        assert not set(splits[a]) & set(splits[b])
    # flite/festival voices of one recorded speaker stay together.
    for speaker in ("kal", "slt"):
        assert len({split for split, voices in splits.items() for v in voices if speaker in v.split("/")[1]}) == 1

    def espeak_parts(split):
        parts = [v.split("/")[1].split("+") for v in splits[split] if v.startswith("espeak-ng/")]
        return {p[0] for p in parts}, {p[1] for p in parts}

    train_accents, train_variants = espeak_parts("train")
    for split in ("validation", "test"):
        accents, variants = espeak_parts(split)
        assert not accents & train_accents and not variants & train_variants
    assert {v.split("/")[0] for v in splits["train"]} == {"espeak-ng", "flite", "festival"}


def test_speed_and_noise_are_applied():
    slow = tts_voices.synthesize("flite/kal16", "the cat is in the kitchen", speed=0.8)
    fast = tts_voices.synthesize("flite/kal16", "the cat is in the kitchen", speed=1.25)
    assert slow.dtype == np.int16 and slow.ndim == 1
    assert len(slow) / len(fast) == pytest.approx(1.25 / 0.8, rel=0.1)
    clean = tts_voices.synthesize("flite/kal16", "hello world", snr_db=math.inf)
    noisy = tts_voices.synthesize("flite/kal16", "hello world", snr_db=10.0, seed=3)
    noise = noisy.astype(np.float64) - clean
    snr = 10 * np.log10(np.mean(clean.astype(np.float64) ** 2) / np.mean(noise**2))
    assert snr == pytest.approx(10.0, abs=0.5)
    np.testing.assert_array_equal(noisy, tts_voices.synthesize("flite/kal16", "hello world", snr_db=10.0, seed=3))


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("speech")
    records = [
        (f"pkg{i}", f"{i:032d}", synopsis, ["A long description."])
        for i, synopsis in enumerate(
            ["simple music player for the desktop", "Fast image viewer", "GNU C compiler version 12", "tool for sending mail"]
        )
    ]
    write_apt_lists(root / "raw", {"en": records})
    prepare(
        "tfsuite_speech", root / "tfds", raw_dir=root / "raw", fetch=False,
        utterances={"train": 4, "validation": 2, "test": 2}, processes=1,
    )  # fmt: skip
    return load_all("tfsuite_speech", root / "tfds"), root


def test_dataset_audio_voices_and_sentences(data):
    splits, root = data
    info = tfds.builder("tfsuite_speech", data_dir=str(root / "tfds")).info
    assert info.features["audio"].sample_rate == 16000 and info.features["audio"].np_dtype == np.int16
    assert info.features["audio"].get_serialized_info().dtype == tf.string  # 2 bytes a sample on disk
    assert {split: len(exs) for split, exs in splits.items()} == {"train": 4, "validation": 2, "test": 2}
    transcripts = {}
    for split, exs in splits.items():
        for ex in exs:
            audio, voice = ex["audio"], text(ex["voice"])
            assert audio.dtype == np.int16 and audio.ndim == 1
            assert 0.3 < len(audio) / 16000 < 10 and np.abs(audio.astype(np.int32)).max() > 1000
            assert voice in speech.VOICES[split] and text(ex["source_item"]) == voice
            assert text(ex["transcript"]) == speech.normalize_transcript(text(ex["text"]))
            assert 0.85 <= ex["speed"] <= 1.2 and -250 <= ex["pitch_cents"] <= 250
            transcripts.setdefault(text(ex["transcript"]), set()).add(split)
    assert all(len(s) == 1 for s in transcripts.values()), "a sentence is spoken in two splits"
    # Digits and acronyms are not speakable unambiguously: such synopses never become utterances.
    assert "gnu c compiler version" not in " ".join(transcripts)
    assert "fast image viewer" in {t for _, t, _ in speech.collect_sentences(root / "raw", fetch=False)}


def test_missing_engines_name_the_debian_package(tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    monkeypatch.setenv("PATH", str(bin_dir))
    with pytest.raises(MissingSourceError, match=r"`sox`.*apt-get install --no-install-recommends sox"):
        tts_voices.check_voices(["espeak-ng/en-us+m1"])
    (bin_dir / "sox").symlink_to(shutil.which("sox", path="/usr/bin:/bin"))
    with pytest.raises(MissingSourceError, match=r"`espeak-ng`.*apt-get install --no-install-recommends espeak-ng"):
        tts_voices.check_voices(["espeak-ng/en-us+m1"])
    monkeypatch.setitem(tts_voices.FESTIVAL_VOICES, "kal_diphone", (str(tmp_path / "none"), "festvox-kallpc16k"))
    (bin_dir / "text2wave").symlink_to(shutil.which("text2wave", path="/usr/bin:/bin"))
    with pytest.raises(MissingSourceError, match=r"festvox-kallpc16k"):
        tts_voices.check_voices(["festival/kal_diphone"])
    with pytest.raises(ValueError, match="voice must be 'engine/name'"):
        tts_voices.check_voices(["espeak"])
