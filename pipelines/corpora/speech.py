"""``tfsuite_speech``: synthesized English utterances, voices held out for validation and test.

TFDS dataset builder for the speech-recognition app (textbook 9.2 Wav2Vec 2.0
/ Whisper and chapter 10). Utterances are spoken by the Debian TTS engines
of :mod:`pipelines.corpora.tts_voices` (espeak-ng, flite, festival) and
varied with ``sox``: tempo 0.85-1.2, pitch -250 to +250 cents, and white
noise at 10-40 dB SNR on 70 % of them. Audio: 16 kHz mono int16.

Sentences: Debian package synopses that read aloud unambiguously (3 to 10
plain words: no digits, acronyms or symbols; :mod:`pipelines.corpora.debian_descriptions`)
and bAbI-style story sentences and questions (:mod:`pipelines.corpora.babi_stories`).
The transcript is the sentence lower-cased, hyphens as spaces, letters,
apostrophes and spaces only.

Held out, so the metric measures generalisation to unseen speakers *and*
unseen sentences:

* **voices**: each split has its own voices (:data:`VOICES`); the flite and
  festival voices of one recorded speaker (kal, slt) stay in one split, and
  the espeak-ng accents and variants of validation and test are not in train;
* **sentences**: each sentence belongs to one split by hash of its transcript.

Features::

    audio        Audio(sample_rate=16000, dtype=int16)   decoded samples (stored as raw bytes)
    text         Text      the sentence as written
    transcript   Text      normalised target
    voice        Text      "engine/voice", e.g. "espeak-ng/en-us+m3", "flite/slt"
    speed        float32   tempo factor
    pitch_cents  float32
    snr_db       float32   inf when no noise was added
    source_item  Text      the split key (= voice)

Example::

    import tensorflow_datasets as tfds
    import pipelines.corpora.speech  # registers the builder

    ds = tfds.load("tfsuite_speech", split="test", data_dir="data/tfds")
    ex = next(iter(ds))   # ex["audio"]: int16 (samples,), ex["transcript"]: b"where is mary"
"""

from __future__ import annotations

import dataclasses
import logging
import math
import multiprocessing
import os
import random
import re

import numpy as np
import tensorflow_datasets as tfds

from pipelines.corpora import babi_stories, debian_descriptions, tts_voices
from pipelines.corpora.splits import SPLITS, assign_split

__all__ = ["TfsuiteSpeech", "PackedAudio", "VOICES", "UTTERANCES", "Utterance", "normalize_transcript", "collect_sentences", "plan_utterances"]

log = logging.getLogger(__name__)

_ESPEAK = "espeak-ng/{}+{}"
VOICES = {
    "train": tuple(
        [_ESPEAK.format(a, v) for a in ("en-us", "en-gb", "en-gb-x-rp", "en-029", "en-gb-x-gbclan") for v in ("m1", "m2", "m3", "m4", "f1", "f2", "klatt", "klatt2")]
        + ["flite/kal16", "flite/kal", "flite/rms", "festival/kal_diphone"]
    ),
    "validation": tuple([_ESPEAK.format("en-gb-scotland", v) for v in ("m5", "f3", "klatt3")] + ["flite/awb"]),
    "test": tuple(
        [_ESPEAK.format(a, v) for a in ("en-us-nyc", "en-gb-x-gbcwmd") for v in ("m7", "f4", "klatt4")]
        + ["flite/slt", "festival/cmu_us_slt_arctic_hts"]
    ),
}
UTTERANCES = {"train": 11_000, "validation": 700, "test": 700}
# Share of utterances per engine within a split (renormalised over the engines a split has).
_ENGINE_WEIGHTS = {"espeak-ng": 0.6, "flite": 0.3, "festival": 0.1}
_PLAIN_WORD = re.compile(r"^[a-z]+(?:'[a-z]+)?(?:-[a-z]+)?,?$")
_NOT_TRANSCRIBED = re.compile(r"[^a-z' ]+")


def normalize_transcript(text):
    """``"Where is Mary?"`` -> ``"where is mary"``; hyphens become spaces, only ``a-z``, ``'`` and space remain."""
    text = _NOT_TRANSCRIBED.sub(" ", text.lower().replace("-", " "))
    return " ".join(text.split())


def _speakable(sentence, min_words=3, max_words=10):
    words = sentence.split()
    if not min_words <= len(words) <= max_words:
        return False
    words[0] = words[0][:1].lower() + words[0][1:]
    return all(_PLAIN_WORD.match(word) for word in words)


def collect_sentences(directory=None, fetch=True, babi_stories_per_task=400):
    """Unique sentences (by transcript) from Debian synopses and bAbI stories, each with its split."""
    english = debian_descriptions.load("en", directory, fetch)
    candidates = sorted({d.synopsis.strip() for d in english.values() if _speakable(d.synopsis.strip())})
    rng = random.Random(0)
    babi = set()
    for task in babi_stories.TASKS:
        for _ in range(babi_stories_per_task):
            story = babi_stories.generate(task, rng)
            babi.update(story.facts)
            babi.add(story.question)
    candidates += sorted(babi)
    sentences, seen = [], set()
    for sentence in candidates:
        transcript = normalize_transcript(sentence)
        if transcript and transcript not in seen:
            seen.add(transcript)
            sentences.append((sentence, transcript, assign_split(transcript, salt="tfsuite-speech")))
    return sentences


@dataclasses.dataclass(frozen=True)
class Utterance:
    """One planned utterance: sentence, voice and the variation to apply."""

    key: str
    text: str
    transcript: str
    voice: str
    speed: float
    pitch_cents: float
    snr_db: float
    seed: int


def plan_utterances(sentences, split, count, seed=0):
    """``count`` utterances of ``split``'s sentences by ``split``'s voices, variations drawn from ``seed``.

    Sentences are cycled in a seeded order, so each is spoken about
    ``count / len(sentences)`` times, by different voices.
    """
    pool = [s for s in sentences if s[2] == split]
    if not pool:
        raise ValueError(f"no sentences fall in split {split!r}")
    rng = random.Random(f"{seed}-{split}")
    rng.shuffle(pool)
    engines = sorted({v.split("/")[0] for v in VOICES[split]})
    weights = [_ENGINE_WEIGHTS[e] for e in engines]
    plan = []
    for index in range(count):
        text, transcript, _ = pool[index % len(pool)]
        engine = rng.choices(engines, weights)[0]
        voice = rng.choice([v for v in VOICES[split] if v.startswith(engine + "/")])
        snr = rng.uniform(10.0, 40.0) if rng.random() < 0.7 else math.inf
        plan.append(
            Utterance(
                key=f"{split}-{index:05d}",
                text=text,
                transcript=transcript,
                voice=voice,
                speed=round(rng.uniform(0.85, 1.2), 3),
                pitch_cents=round(rng.uniform(-250.0, 250.0), 1),
                snr_db=round(snr, 1) if snr != math.inf else snr,
                seed=rng.randrange(2**31),
            )
        )
    return plan


class PackedAudio(tfds.features.Audio):
    """``tfds.features.Audio`` whose NumPy samples honour ``encoding="bytes"``.

    The stock ``Audio.encode_example`` returns arrays untouched, so with the
    default encoding int16 samples are written as an ``int64_list`` (a
    negative sample costs 10 bytes) and ``encoding="bytes"`` fails. Here
    arrays go through ``Tensor.encode_example``: 2 bytes a sample, decoded
    back to int16 by ``tf.io.decode_raw``.
    """

    def encode_example(self, audio_or_path_or_fobj):
        if isinstance(audio_or_path_or_fobj, (np.ndarray, list)):
            return tfds.features.Tensor.encode_example(self, np.asarray(audio_or_path_or_fobj, dtype=self.np_dtype))
        return super().encode_example(audio_or_path_or_fobj)


def _synthesize(utterance):
    audio = tts_voices.synthesize(
        utterance.voice, utterance.text, utterance.speed, utterance.pitch_cents, utterance.snr_db, utterance.seed
    )
    return utterance, audio


def _lower_priority():
    os.nice(19)  # two shared cores: synthesis yields to interactive work


class TfsuiteSpeech(tfds.core.GeneratorBasedBuilder):
    """Synthesized speech with voices held out for validation and test."""

    VERSION = tfds.core.Version("1.1.0")
    RELEASE_NOTES = {
        "1.0.0": "espeak-ng, flite and festival voices (Debian bookworm); 11,000/700/700 utterances.",
        "1.1.0": "Audio stored as raw int16 bytes (about a third of 1.0.0's size); same utterances.",
    }

    def __init__(self, *, raw_dir=None, fetch=True, utterances=None, processes=2, **kwargs):
        """``raw_dir``, ``fetch``: Debian sources; ``utterances``: per-split counts
        (default :data:`UTTERANCES`); ``processes``: synthesis workers (at most 2
        on the shared build machine); the rest goes to TFDS."""
        self._raw_dir, self._fetch = raw_dir, fetch
        self._utterances = dict(utterances or UTTERANCES)
        self._processes = processes
        super().__init__(**kwargs)

    def _info(self):
        return tfds.core.DatasetInfo(
            builder=self,
            description=__doc__.split("Features::")[0].strip(),
            features=tfds.features.FeaturesDict(
                {
                    "audio": PackedAudio(sample_rate=tts_voices.SAMPLE_RATE, dtype=np.int16, encoding="bytes"),
                    "text": tfds.features.Text(),
                    "transcript": tfds.features.Text(),
                    "voice": tfds.features.Text(),
                    "speed": tfds.features.Scalar(dtype=np.float32),
                    "pitch_cents": tfds.features.Scalar(dtype=np.float32),
                    "snr_db": tfds.features.Scalar(dtype=np.float32),
                    "source_item": tfds.features.Text(),
                }
            ),
            supervised_keys=("audio", "transcript"),
            homepage="https://github.com/espeak-ng/espeak-ng",
            license="synthesized audio; engines: GPL-3 (espeak-ng), BSD-like (flite, festival, voices)",
        )

    def _split_generators(self, dl_manager):
        tts_voices.check_voices([v for split in SPLITS for v in VOICES[split]])
        sentences = collect_sentences(self._raw_dir, self._fetch)
        log.info("speech: %d sentences", len(sentences))
        return {
            split: self._generate_examples(plan_utterances(sentences, split, self._utterances[split]))
            for split in SPLITS
        }

    def _generate_examples(self, plan):
        # imap keeps the plan's order; TFDS' max_examples_per_split stops the
        # generator early, and the pool is then closed by the context manager.
        if self._processes > 1:
            with multiprocessing.get_context("fork").Pool(self._processes, initializer=_lower_priority) as pool:
                yield from self._examples(pool.imap(_synthesize, plan, chunksize=8))
        else:
            yield from self._examples(map(_synthesize, plan))

    def _examples(self, results):
        for utterance, audio in results:
            yield utterance.key, {
                "audio": audio,
                "text": utterance.text,
                "transcript": utterance.transcript,
                "voice": utterance.voice,
                "speed": utterance.speed,
                "pitch_cents": utterance.pitch_cents,
                "snr_db": utterance.snr_db,
                "source_item": utterance.voice,
            }
