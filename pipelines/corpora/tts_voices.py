"""Text-to-speech voices from Debian, and 16 kHz int16 synthesis with speed, pitch and noise.

Source reader for ``tfsuite_speech``. Engines and the Debian packages that
provide them:

=========  =============================================  ==========================================
engine     voices                                         packages
=========  =============================================  ==========================================
espeak-ng  English accents (``en-us``, ``en-gb-scotland``  ``espeak-ng``
           ...) with variants (``+m3``, ``+f2``, ``+klatt``)
flite      ``kal``, ``kal16``, ``awb``, ``rms``, ``slt``    ``flite``
festival   ``kal_diphone``, ``cmu_us_slt_arctic_hts``       ``festival``, ``festvox-kallpc16k``,
                                                          ``festvox-us-slt-hts``
=========  =============================================  ==========================================

and ``sox`` for the post-processing: peak-normalise to -3 dBFS, change tempo
(speed without pitch, ``tempo -s``) and pitch (``pitch``, cents), resample
to 16 kHz mono 16-bit without dither (``-D``, so output is bit-exact). White noise at a given SNR is added in NumPy from a
seed, so an utterance is reproducible.

A voice is named ``engine/voice`` (``espeak-ng/en-us+m3``, ``flite/slt``,
``festival/kal_diphone``).

Example::

    from pipelines.corpora import tts_voices

    tts_voices.check_voices(["flite/slt"])                       # raises MissingSourceError naming the package
    audio = tts_voices.synthesize("flite/slt", "hello world", speed=1.1, pitch_cents=-100, snr_db=30, seed=0)
    audio.dtype, audio.shape                                       # int16, (about 16000,)
"""

from __future__ import annotations

import math
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from pipelines.corpora.sources import MissingSourceError, require_program, run

__all__ = ["SAMPLE_RATE", "FESTIVAL_VOICES", "FLITE_VOICES", "check_voices", "synthesize", "add_noise"]

SAMPLE_RATE = 16000
FLITE_VOICES = ("kal", "kal16", "awb", "rms", "slt")
# Festival voice -> (folder that holds it, Debian package).
FESTIVAL_VOICES = {
    "kal_diphone": ("/usr/share/festival/voices/english/kal_diphone", "festvox-kallpc16k"),
    "cmu_us_slt_arctic_hts": ("/usr/share/festival/voices/us/cmu_us_slt_arctic_hts", "festvox-us-slt-hts"),
}
_ENGINE_PROGRAMS = {"espeak-ng": ("espeak-ng", "espeak-ng"), "flite": ("flite", "flite"), "festival": ("text2wave", "festival")}


def _split(voice):
    engine, _, name = voice.partition("/")
    if engine not in _ENGINE_PROGRAMS or not name:
        raise ValueError(f"voice must be 'engine/name' with engine in {sorted(_ENGINE_PROGRAMS)}, got {voice!r}")
    return engine, name


def check_voices(voices):
    """Raise :class:`MissingSourceError` naming the Debian package for the first voice that cannot run."""
    require_program("sox", "sox")
    for voice in voices:
        engine, name = _split(voice)
        require_program(*_ENGINE_PROGRAMS[engine])
        if engine == "flite" and name not in FLITE_VOICES:
            raise ValueError(f"unknown flite voice {name!r}; flite voices: {FLITE_VOICES}")
        if engine == "festival":
            if name not in FESTIVAL_VOICES:
                raise ValueError(f"unknown festival voice {name!r}; supported: {sorted(FESTIVAL_VOICES)}")
            folder, package = FESTIVAL_VOICES[name]
            if not Path(folder).is_dir():
                raise MissingSourceError(
                    f"festival voice {name} not found in {folder}: install the Debian package `{package}` "
                    f"(`sudo apt-get install --no-install-recommends {package}`; `make setup` does it when run as root)"
                )


def _engine_command(engine, name, text_file, wav_file):
    if engine == "espeak-ng":
        return ["espeak-ng", "-v", name, "-f", str(text_file), "-w", str(wav_file)]
    if engine == "flite":
        return ["flite", "-voice", name, "-f", str(text_file), "-o", str(wav_file)]
    return ["text2wave", "-eval", f"(voice_{name})", str(text_file), "-o", str(wav_file)]


def add_noise(audio, snr_db, seed):
    """Add white Gaussian noise at ``snr_db`` (signal power over noise power) to int16 ``audio``."""
    if snr_db is None or math.isinf(snr_db):
        return audio
    signal = audio.astype(np.float64)
    power = np.mean(signal**2) if signal.size else 0.0
    if power == 0.0:
        return audio
    noise = np.random.default_rng(seed).normal(0.0, math.sqrt(power / 10 ** (snr_db / 10)), size=signal.shape)
    return np.clip(np.round(signal + noise), -32768, 32767).astype(np.int16)


def synthesize(voice, text, speed=1.0, pitch_cents=0.0, snr_db=math.inf, seed=0):
    """Speak ``text`` with ``voice``; return 16 kHz mono int16 samples.

    Args:
        voice: str, ``engine/name`` (see the module docstring).
        text: str, the sentence.
        speed: float, default 1.0, tempo factor (duration divided by it, pitch kept).
        pitch_cents: float, default 0, pitch shift in cents (100 = one semitone).
        snr_db: float, default ``inf`` (no noise), signal-to-noise ratio of added white noise.
        seed: int, default 0, seeds the noise.
    """
    engine, name = _split(voice)
    with tempfile.TemporaryDirectory(prefix="tfsuite-tts-") as tmp:
        text_file, wav_file = Path(tmp) / "text.txt", Path(tmp) / "speech.wav"
        text_file.write_text(text + "\n", encoding="utf-8")
        run(_engine_command(engine, name, text_file, wav_file), package=_ENGINE_PROGRAMS[engine][1], timeout=120)
        if not wav_file.is_file() or wav_file.stat().st_size <= 44:
            raise RuntimeError(f"{voice} produced no audio for {text!r}")
        effects = ["gain", "-n", "-3"]
        if abs(speed - 1.0) > 1e-6:
            effects += ["tempo", "-s", f"{speed:.4f}"]
        if abs(pitch_cents) > 1e-6:
            effects += ["pitch", f"{pitch_cents:.1f}"]
        effects += ["rate", "-h", str(SAMPLE_RATE)]
        raw = run(
            ["sox", "-D", str(wav_file), "-t", "raw", "-e", "signed-integer", "-b", "16", "-c", "1", "-L", "-", *effects],
            package="sox",
            timeout=120,
        )
    audio = np.frombuffer(raw, dtype="<i2").astype(np.int16)
    return add_noise(audio, snr_db, seed)


def _smoke():  # pragma: no cover - manual check: `python -m pipelines.corpora.tts_voices`
    for voice in ("espeak-ng/en-us+m3", "flite/kal16", "festival/kal_diphone"):
        try:
            audio = synthesize(voice, "the cat is in the kitchen", speed=1.1, snr_db=30)
            print(voice, audio.shape, audio.dtype, f"{len(audio) / SAMPLE_RATE:.2f} s")
        except (MissingSourceError, RuntimeError, subprocess.TimeoutExpired) as error:
            print(voice, "failed:", error)


if __name__ == "__main__":
    _smoke()
