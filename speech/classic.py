"""A classic recognizer as the speech app's baseline: CMU pocketsphinx (HMM acoustic model, n-gram LM).

PyPI ``pocketsphinx`` >= 5 bundles its US English acoustic model, dictionary
and language model, so no download is needed. Each utterance gets a fresh
decoder (a reused one adapts its cepstral mean across utterances, and the
scores then depend on the order); the utterances are spread over a process
pool, one decoder per call.

Example::

    from speech.classic import pocketsphinx_available, pocketsphinx_transcripts

    if pocketsphinx_available():
        hypotheses = pocketsphinx_transcripts(wav_bytes_list)  # 16 kHz 16-bit mono WAV bytes
"""

from __future__ import annotations

import importlib.util
import multiprocessing
import os

__all__ = ["pocketsphinx_available", "pocketsphinx_transcript", "pocketsphinx_transcripts"]

SAMPLE_RATE = 16000
_WAV_HEADER = 44  # tf.audio.encode_wav's canonical header


def pocketsphinx_available():
    return importlib.util.find_spec("pocketsphinx") is not None


def pocketsphinx_transcript(wav):
    """One 16 kHz 16-bit mono WAV (``tf.audio.encode_wav``'s 44-byte header) -> lower-case words ("" if none)."""
    import pocketsphinx

    decoder = pocketsphinx.Decoder(samprate=SAMPLE_RATE, logfn=os.devnull)
    decoder.start_utt()
    decoder.process_raw(wav[_WAV_HEADER:], False, True)
    decoder.end_utt()
    return decoder.hyp().hypstr.lower() if decoder.hyp() is not None else ""


def pocketsphinx_transcripts(wavs, processes=None):
    """:func:`pocketsphinx_transcript` of each WAV, in order, over ``processes`` workers (default: the CPU count)."""
    wavs = list(wavs)
    processes = min(processes or os.cpu_count() or 1, max(1, len(wavs)))
    if processes == 1:
        return [pocketsphinx_transcript(wav) for wav in wavs]
    # spawn, not fork: the parent holds TensorFlow's thread pools.
    with multiprocessing.get_context("spawn").Pool(processes) as pool:
        return pool.map(pocketsphinx_transcript, wavs, chunksize=8)
