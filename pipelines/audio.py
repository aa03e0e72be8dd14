"""Audio input pipeline: WAV decoding, resampling to 16 kHz, log-mel spectrograms, SpecAugment.

The front end of the speech-recognition app (textbook 9.2: Whisper's
log-mel input, Wav2Vec 2.0's 16 kHz waveform). Every step is a TensorFlow op
(``tf.audio``, ``tf.signal``, ``tf.random.stateless_*``), so the same code
runs in a ``tf.data`` pipeline and inside an exported ``serving_default``
graph that takes WAV bytes.

* :func:`decode_wav`: 16-bit PCM WAV bytes -> mono float32 in ``[-1, 1]`` and
  the header's sample rate.
* :func:`resample`: polyphase resampling by ``up / down`` (the rates divided
  by their gcd) with a Kaiser-windowed sinc low-pass filter, the filter of
  ``scipy.signal.resample_poly``; the input rate may be a tensor (a WAV
  header's rate inside a graph).
* :func:`log_mel_spectrogram`: ``log(|STFT|^2 @ M + offset)``, with ``M``
  from ``tf.signal.linear_to_mel_weight_matrix`` (HTK mel scale
  ``mel(f) = 1127 ln(1 + f / 700)``). Defaults: 25 ms Hann window, 10 ms hop,
  80 bins, as in Whisper.
* :func:`spec_augment`: SpecAugment (Park et al., 2019) time and frequency
  masks drawn from a seed; no time warping.
* :func:`make_audio_dataset`: decode, resample, log-mel, optional per-utterance
  normalisation, cache, seeded shuffle, SpecAugment (training only), padded or
  length-bucketed batches with frame counts, ``prefetch(AUTOTUNE)``, parallel
  ``map`` and a ``deterministic`` switch for tests.
* :func:`load_audio`: the user-facing loader (the UI uses it): a path or
  bytes in, float32 at 16 kHz out, or a ``ValueError`` that says what the
  file is and how to convert it.

Example::

    from pipelines import audio, tfds_sources

    examples = tfds_sources.load_examples("speech", split="validation")
    ds = audio.make_audio_dataset(examples, batch_size=16, augment=audio.SpecAugment(), shuffle=True)
    batch = next(iter(ds))  # features (16, frames, 80), feature_lengths (16,), transcript (16,)
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import tensorflow as tf

__all__ = [
    "SAMPLE_RATE",
    "LogMelFeatures",
    "SpecAugment",
    "decode_wav",
    "resample",
    "log_mel_spectrogram",
    "spec_augment",
    "perturb_waveform",
    "reverberate",
    "frequency_warp",
    "waveform_to_features",
    "make_audio_dataset",
    "load_audio",
]

SAMPLE_RATE = 16000
_MASK_VALUES = ("mean", "zero")
# Magic numbers of formats people upload instead of WAV, to name them in the error.
_OTHER_FORMATS = (
    (b"ID3", "MP3"),
    (b"\xff\xfb", "MP3"),
    (b"\xff\xf3", "MP3"),
    (b"\xff\xf2", "MP3"),
    (b"fLaC", "FLAC"),
    (b"OggS", "Ogg (Vorbis/Opus)"),
    (b"\x1aE\xdf\xa3", "WebM/Matroska"),
)
_RESAMPLE_BLOCK = 16384
_WAV_FORMAT_NAMES = {3: "32-bit float", 6: "A-law", 7: "mu-law", 0xFFFE: "extensible"}


@dataclasses.dataclass(frozen=True)
class LogMelFeatures:
    """How waveforms become model features (the speech app stores this with its model).

    Args:
        sample_rate: int, default ``16000``. Waveforms are resampled to it first.
        frame_length: int, default ``400`` (25 ms at 16 kHz). STFT window, samples.
        frame_step: int, default ``160`` (10 ms). Hop between frames, samples.
        fft_length: int or None, default ``None``: the smallest power of two
            ``>= frame_length`` (512).
        num_mel_bins: int, default ``80``.
        lower_edge_hertz: float, default ``20.0``.
        upper_edge_hertz: float or None, default ``None``: the Nyquist frequency.
        log_offset: float, default ``1e-6``. Added before the log so silence stays finite.
        normalize: bool, default ``True``. Per-utterance mean/variance
            normalisation of each mel bin over time (CMVN).
    """

    sample_rate: int = SAMPLE_RATE
    frame_length: int = 400
    frame_step: int = 160
    fft_length: int | None = None
    num_mel_bins: int = 80
    lower_edge_hertz: float = 20.0
    upper_edge_hertz: float | None = None
    log_offset: float = 1e-6
    normalize: bool = True


@dataclasses.dataclass(frozen=True)
class SpecAugment:
    """SpecAugment masking policy (Park et al., 2019, without time warping).

    Args:
        num_time_masks: int, default ``2``.
        max_time_width: int, default ``20`` frames (0.2 s at a 10 ms hop).
        max_time_ratio: float, default ``0.2``. A time mask covers at most
            this share of the utterance's frames (the paper's ``p``).
        num_freq_masks: int, default ``2``.
        max_freq_width: int, default ``10`` mel bins (the paper's ``F``).
        mask_value: str, default ``"mean"``: the utterance's mean; or ``"zero"``.
    """

    num_time_masks: int = 2
    max_time_width: int = 20
    max_time_ratio: float = 0.2
    num_freq_masks: int = 2
    max_freq_width: int = 10
    mask_value: str = "mean"


# --------------------------------------------------------------------------- decoding


def decode_wav(contents):
    """Decode 16-bit PCM WAV bytes into a mono float32 waveform in ``[-1, 1]``.

    Channels are averaged. A graph op (``tf.audio.decode_wav``); for a readable
    error on bad files use :func:`load_audio` at the boundary.

    Args:
        contents: scalar string tensor, the WAV file's bytes.

    Returns:
        ``(waveform float32 (samples,), sample_rate int32 scalar)``.
    """
    waveform, sample_rate = tf.audio.decode_wav(contents)
    return tf.reduce_mean(waveform, axis=-1), sample_rate


def _gcd(a, b):
    a, b = tf.convert_to_tensor(a, tf.int64), tf.convert_to_tensor(b, tf.int64)
    _, result = tf.while_loop(lambda x, y: tf.not_equal(x, 0), lambda x, y: (tf.math.floormod(y, x), x), (b, a))
    return result


def resample(waveform, rate_in, rate_out=SAMPLE_RATE, half_width=10, beta=5.0):
    """Polyphase resampling with a Kaiser-windowed sinc filter (the filter of ``scipy.signal.resample_poly``).

    With ``up, down = rate_out / g, rate_in / g`` (``g`` their gcd), output
    sample ``n`` sits at input time ``n * down / up`` and is::

        y[n] = up * sum_k x[k] h(n * down - k * up),
        h(d) = w(d / L) * f_c * sinc(f_c * d) / S,   |d| <= L,

    where ``f_c = 1 / max(up, down)`` is the cutoff (relative to Nyquist of
    the upsampled signal), ``L = half_width * max(up, down)``, ``w`` the
    Kaiser window with ``beta``, and ``S`` normalises the filter to unit DC
    gain. Outside the signal, samples are zero. The output has
    ``ceil(samples * up / down)`` samples.

    The filter weights depend only on the output's phase ``n mod up``, so they
    are one ``(up, taps)`` table (``taps = 2 L / up + 1``, e.g. 61 for 48 kHz
    -> 16 kHz); outputs are computed in blocks of 16,384 samples, each a
    gather of ``taps`` input samples per output, so memory stays bounded for long files.

    Args:
        waveform: float tensor ``(samples,)``.
        rate_in: int or int scalar tensor (e.g. a WAV header's rate), Hz.
        rate_out: int or int scalar tensor, default ``16000``.
        half_width: int, default ``10``: filter half length in units of ``max(up, down)``.
        beta: float, default ``5.0``: Kaiser window shape.

    Returns:
        float32 ``(ceil(samples * rate_out / rate_in),)``.
    """
    static = [r for r in (rate_in, rate_out) if isinstance(r, (int, np.integer))]
    if any(r < 1 for r in static):
        raise ValueError(f"resample rates must be positive integers, got rate_in={rate_in}, rate_out={rate_out}")
    waveform = tf.convert_to_tensor(waveform, tf.float32)
    if waveform.shape.rank is not None and waveform.shape.rank != 1:
        raise ValueError(f"resample expected a waveform of rank 1 (samples,), got shape {tuple(waveform.shape)}")
    rate_in = tf.cast(rate_in, tf.int64)
    rate_out = tf.cast(rate_out, tf.int64)
    g = _gcd(rate_in, rate_out)
    up, down = rate_out // g, rate_in // g

    def polyphase():
        max_rate = tf.maximum(up, down)
        half_len = half_width * max_rate
        cutoff = 1.0 / tf.cast(max_rate, tf.float64)

        def kernel(d):  # d: int64 distances on the upsampled grid, |d| <= half_len
            d = tf.cast(d, tf.float64)
            ratio = d / tf.cast(half_len, tf.float64)
            window = tf.math.special.bessel_i0(beta * tf.sqrt(tf.maximum(1.0 - ratio * ratio, 0.0)))
            x = cutoff * d
            sinc = tf.where(tf.equal(x, 0.0), tf.ones_like(x), tf.sin(np.pi * x) / (np.pi * tf.where(tf.equal(x, 0.0), tf.ones_like(x), x)))
            return window * cutoff * sinc  # the common 1 / I0(beta) cancels in the normalisation

        gain = tf.reduce_sum(kernel(tf.range(-half_len, half_len + 1)))
        taps = 2 * half_len // up + 1
        # Output n = q * up + j starts at input k = q * down + first[j] and its filter
        # offsets depend only on the phase j, so the weights are one (up, taps) table.
        phase = tf.range(up)[:, None]
        first = -((half_len - phase * down) // up)  # ceil((j * down - half_len) / up)
        d = phase * down - (first + tf.range(taps)[None, :]) * up
        table = tf.cast(tf.where(tf.abs(d) <= half_len, kernel(d) * tf.cast(up, tf.float64) / gain, 0.0), tf.float32)
        first = first[:, 0]
        n_in = tf.shape(waveform, out_type=tf.int64)[0]
        n_out = (n_in * up + down - 1) // down
        # Zero padding stands for the samples outside the signal; blocks of outputs bound the memory.
        pad = half_len // up + 1
        padded = tf.pad(waveform, [[pad, pad + taps]])
        block = tf.constant(_RESAMPLE_BLOCK, tf.int64)

        def outputs(start):
            n = start + tf.range(block)
            q, j = n // up, n % up
            k = tf.clip_by_value(q * down + tf.gather(first, j) + pad, 0, n_in + 2 * pad)
            samples = tf.gather(padded, k[:, None] + tf.range(taps)[None, :])
            return tf.reduce_sum(samples * tf.gather(table, j), axis=1)

        blocks = tf.map_fn(outputs, tf.range(0, n_out, block), fn_output_signature=tf.TensorSpec([None], tf.float32))
        return tf.reshape(blocks, [-1])[:n_out]

    return tf.cond(tf.equal(up, down), lambda: tf.identity(waveform), polyphase)


# --------------------------------------------------------------------------- features


def _fft_length(features):
    return features.fft_length or int(2 ** np.ceil(np.log2(features.frame_length)))


def log_mel_spectrogram(waveform, features=LogMelFeatures()):
    """Log-mel spectrogram: ``log(|STFT(x)|^2 @ M + log_offset)`` (no normalisation).

    The STFT uses a periodic Hann window of ``frame_length`` samples, hop
    ``frame_step``, frames zero-padded to ``fft_length``; no end padding, so a
    waveform of ``N >= frame_length`` samples gives
    ``1 + (N - frame_length) // frame_step`` frames. ``M`` is
    ``tf.signal.linear_to_mel_weight_matrix``: triangles equally spaced on the
    HTK mel scale ``mel(f) = 1127 ln(1 + f / 700)`` between
    ``lower_edge_hertz`` and ``upper_edge_hertz``.

    Args:
        waveform: float32 ``(..., samples)`` at ``features.sample_rate``.
        features: :class:`LogMelFeatures`.

    Returns:
        float32 ``(..., frames, num_mel_bins)``.
    """
    waveform = tf.convert_to_tensor(waveform, tf.float32)
    fft_length = _fft_length(features)
    stft = tf.signal.stft(
        waveform, features.frame_length, features.frame_step, fft_length, window_fn=tf.signal.hann_window
    )
    power = tf.math.real(stft) ** 2 + tf.math.imag(stft) ** 2
    mel_matrix = tf.signal.linear_to_mel_weight_matrix(
        features.num_mel_bins,
        fft_length // 2 + 1,
        features.sample_rate,
        features.lower_edge_hertz,
        features.upper_edge_hertz or features.sample_rate / 2,
    )
    return tf.math.log(tf.tensordot(power, mel_matrix, 1) + features.log_offset)


def _normalize(spectrogram):
    mean, variance = tf.nn.moments(spectrogram, axes=[0], keepdims=True)
    return (spectrogram - mean) * tf.math.rsqrt(variance + 1e-5)


def waveform_to_features(waveform, rate_in=None, features=LogMelFeatures()):
    """Resample ``waveform`` from ``rate_in`` (when given and different), then log-mel (and CMVN if configured).

    Returns float32 ``(frames, num_mel_bins)``. The graph the speech app exports uses this.
    """
    if rate_in is not None:
        waveform = resample(waveform, rate_in, features.sample_rate)
    spectrogram = log_mel_spectrogram(waveform, features)
    return _normalize(spectrogram) if features.normalize else spectrogram


def _interval_mask(length, count, max_width, seed):
    """Union of ``count`` intervals ``[start, start + width)`` over ``range(length)``; ``width ~ U{0..max_width}``."""
    width_seed, start_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    max_width = tf.minimum(tf.cast(max_width, tf.int32), length)
    widths = tf.random.stateless_uniform([count], width_seed, minval=0, maxval=max_width + 1, dtype=tf.int32)
    # start ~ U{0..length - width}, drawn as a float so the range can differ per mask
    u = tf.random.stateless_uniform([count], start_seed)
    starts = tf.cast(tf.floor(u * tf.cast(length - widths + 1, tf.float32)), tf.int32)
    positions = tf.range(length)[None, :]
    inside = (positions >= starts[:, None]) & (positions < (starts + widths)[:, None])
    return tf.reduce_any(inside, axis=0)


def spec_augment(spectrogram, seed, policy=SpecAugment()):
    """SpecAugment time and frequency masking of one utterance (Park et al., 2019, section 2).

    Frequency masks: ``f ~ U{0..F}`` consecutive mel bins ``[f0, f0 + f)``,
    ``f0 ~ U{0..bins - f}``; time masks likewise over frames, with width at
    most ``min(T_max, floor(p * frames))``. Masked values become the
    utterance's mean (``mask_value="mean"``) or zero. Stateless: the same
    ``seed`` gives the same masks, in a graph or eagerly.

    Args:
        spectrogram: float32 ``(frames, bins)``.
        seed: int tensor of shape ``(2,)``.
        policy: :class:`SpecAugment`.

    Returns:
        float32 ``(frames, bins)``.
    """
    if policy.mask_value not in _MASK_VALUES:
        raise ValueError(f"SpecAugment mask_value must be one of {list(_MASK_VALUES)}, got {policy.mask_value!r}")
    spectrogram = tf.convert_to_tensor(spectrogram, tf.float32)
    if spectrogram.shape.rank is not None and spectrogram.shape.rank != 2:
        raise ValueError(f"spec_augment expected a spectrogram of rank 2 (frames, bins), got shape {tuple(spectrogram.shape)}")
    frames, bins = tf.shape(spectrogram)[0], tf.shape(spectrogram)[1]
    time_seed, freq_seed = tf.unstack(tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), 2))
    max_time = tf.minimum(policy.max_time_width, tf.cast(tf.floor(policy.max_time_ratio * tf.cast(frames, tf.float32)), tf.int32))
    time_mask = _interval_mask(frames, policy.num_time_masks, max_time, time_seed)
    freq_mask = _interval_mask(bins, policy.num_freq_masks, policy.max_freq_width, freq_seed)
    masked = time_mask[:, None] | freq_mask[None, :]
    value = tf.reduce_mean(spectrogram) if policy.mask_value == "mean" else tf.constant(0.0)
    return tf.where(masked, value, spectrogram)


def reverberate(waveform, seed, rt60=(0.1, 0.7)):
    """Room reverberation: ``waveform`` convolved with a synthetic impulse response, drawn from ``seed``.

    The response is the direct path plus exponentially decaying Gaussian noise,
    ``h[0] = 1``, ``h[t] = n_t 10^(-3 t / (rt60 fs)) / sqrt(fs / 10)`` for
    ``t >= 1`` (60 dB down after ``rt60`` seconds; Polack's statistical model
    of a diffuse late field), ``rt60 ~ U[rt60]``. The convolution runs as one
    FFT product; the output keeps the input's length and RMS.

    Args:
        waveform: float32 ``(samples,)`` at 16 kHz.
        seed: int tensor of shape ``(2,)``.
        rt60: ``(low, high)`` reverberation time in seconds. Default ``(0.1, 0.7)``.

    Returns:
        float32 ``(samples,)``.
    """
    rt_seed, noise_seed = tf.unstack(tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), 2))
    waveform = tf.convert_to_tensor(waveform, tf.float32)
    taps = int(round(float(rt60[1]) * SAMPLE_RATE))
    time = tf.range(1, taps, dtype=tf.float32)
    rt = tf.random.stateless_uniform([], rt_seed, float(rt60[0]), float(rt60[1]))
    tail = tf.random.stateless_normal([taps - 1], noise_seed) * tf.pow(10.0, -3.0 * time / (rt * SAMPLE_RATE))
    response = tf.concat([[1.0], tail / np.sqrt(SAMPLE_RATE / 10.0)], axis=0)
    n = tf.shape(waveform)[0]
    size = tf.cast(2 ** tf.math.ceil(tf.math.log(tf.cast(n + taps, tf.float32)) / np.log(2.0)), tf.int32)
    wet = tf.signal.irfft(tf.signal.rfft(waveform, [size]) * tf.signal.rfft(response, [size]), [size])[:n]
    rms = lambda x: tf.sqrt(tf.reduce_mean(tf.square(x)) + 1e-12)  # noqa: E731
    return wet * (rms(waveform) / rms(wet))


def frequency_warp(spectrogram, seed, warp=(0.9, 1.1)):
    """Vocal-tract length perturbation on the mel axis (after Jaitly and Hinton, 2013): speaker and pitch variety.

    Mel bin ``i`` of the output reads the input at ``i / alpha`` (linear
    interpolation, clamped to the last bin), ``alpha ~ U[warp]``: ``alpha > 1``
    moves the spectral envelope and the harmonics up, as a shorter vocal tract
    or a higher voice does; the timing is unchanged (unlike speed perturbation).
    The original VTLP warps linear frequency with a boundary frequency; on
    80 mel bins this mel-axis form is its simple equivalent.

    Args:
        spectrogram: float32 ``(frames, bins)``.
        seed: int tensor of shape ``(2,)``.
        warp: ``(low, high)`` factor range. Default ``(0.9, 1.1)``.

    Returns:
        float32 ``(frames, bins)``.
    """
    spectrogram = tf.convert_to_tensor(spectrogram, tf.float32)
    bins = tf.shape(spectrogram)[1]
    alpha = tf.random.stateless_uniform([], tf.cast(seed, tf.int64), float(warp[0]), float(warp[1]))
    last = tf.cast(bins - 1, tf.float32)
    source = tf.minimum(tf.cast(tf.range(bins), tf.float32) / alpha, last)
    low = tf.cast(tf.floor(source), tf.int32)
    high = tf.minimum(low + 1, bins - 1)
    fraction = source - tf.cast(low, tf.float32)
    return tf.gather(spectrogram, low, axis=1) * (1.0 - fraction) + tf.gather(spectrogram, high, axis=1) * fraction


def perturb_waveform(waveform, seed, speeds=(0.9, 1.0, 1.1), snr_db=(10.0, 40.0), gain_db=None, rt60=None):
    """Speed perturbation (Ko et al., 2015) and additive white noise at a random SNR, drawn from ``seed``.

    Speed ``s`` resamples the 16 kHz waveform to about ``16000 / s`` Hz (a
    multiple of 1600 Hz, so ``up / down`` stays 11 / 10 or 9 / 10 and the filter
    short) and plays it back at 16 kHz (``s < 1``: slower and lower). The noise is
    Gaussian with power ``P_x / 10^(snr / 10)``, ``snr ~ U[snr_db]``
    (``snr_db=None`` adds none). Stateless: the same ``seed`` gives the same result.

    Args:
        waveform: float32 ``(samples,)`` at 16 kHz.
        seed: int tensor of shape ``(2,)``.
        speeds: tuple of float, one drawn uniformly per call. Default ``(0.9, 1.0, 1.1)``.
        snr_db: ``(low, high)`` in dB or None. Default ``(10.0, 40.0)``.
        gain_db: ``(low, high)`` level change in dB or None (default): the
            recording's level, ``g ~ U[gain_db]``, then clipped to [-1, 1] as a
            recorder would.
        rt60: ``(low, high)`` seconds or None (default): :func:`reverberate`
            before the noise (the room, then the microphone's noise).

    Returns:
        float32 ``(samples',)``.
    """
    speed_seed, snr_seed, noise_seed, room_seed, gain_seed = tf.unstack(
        tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), 5))
    waveform = tf.convert_to_tensor(waveform, tf.float32)
    rates = tf.constant([int(round(SAMPLE_RATE / s / 1600)) * 1600 for s in speeds], tf.int64)
    pick = tf.random.stateless_uniform([], speed_seed, 0, len(speeds), dtype=tf.int32)
    waveform = resample(waveform, SAMPLE_RATE, rates[pick])
    if rt60 is not None:
        waveform = reverberate(waveform, room_seed, rt60)
    if snr_db is not None:
        snr = tf.random.stateless_uniform([], snr_seed, float(snr_db[0]), float(snr_db[1]))
        power = tf.reduce_mean(tf.square(waveform)) / tf.pow(10.0, snr / 10.0)
        waveform = waveform + tf.sqrt(power) * tf.random.stateless_normal(tf.shape(waveform), noise_seed)
    if gain_db is not None:
        gain = tf.random.stateless_uniform([], gain_seed, float(gain_db[0]), float(gain_db[1]))
        waveform = tf.clip_by_value(waveform * tf.pow(10.0, gain / 20.0), -1.0, 1.0)
    return waveform


# --------------------------------------------------------------------------- pipeline


def _to_waveform(audio, features):
    """String (WAV bytes) -> decode + resample; integer PCM -> scale; float -> as is (already at the target rate)."""
    if audio.dtype == tf.string:
        waveform, rate = decode_wav(audio)
        return resample(waveform, rate, features.sample_rate)
    if audio.dtype.is_integer:
        return tf.cast(audio, tf.float32) / 32768.0
    return tf.cast(audio, tf.float32)


def make_audio_dataset(
    examples,
    *,
    batch_size=16,
    features=LogMelFeatures(),
    augment=None,
    shuffle=False,
    shuffle_buffer=1000,
    seed=0,
    cache=False,
    deterministic=False,
    drop_remainder=False,
    bucket_boundaries=None,
    audio_key="audio",
    keep=("transcript",),
    warp=None,
):
    """Build a batched log-mel ``tf.data`` pipeline from a dataset of example dicts.

    Stages: parallel ``map`` (waveform, resample, log-mel, CMVN) -> ``cache``
    -> seeded ``shuffle`` (reshuffled each epoch) -> SpecAugment with a
    per-example seed from ``tf.data.Dataset.random`` (a new mask each epoch,
    reproducible from ``seed``) -> ``padded_batch`` or
    ``bucket_by_sequence_length`` -> ``prefetch(AUTOTUNE)``.

    Args:
        examples: ``tf.data.Dataset`` of dicts holding ``audio_key`` (WAV bytes
            as a scalar string, int16 PCM, or float32 at ``features.sample_rate``)
            and the ``keep`` keys, e.g. from ``tfds_sources.load_examples("speech")``.
        batch_size: int, default ``16``.
        features: :class:`LogMelFeatures`.
        augment: :class:`SpecAugment` or None, default ``None`` (off: evaluation).
        shuffle: bool, default ``False``.
        shuffle_buffer: int, default ``1000``.
        seed: int, default ``0``: seeds the shuffle and SpecAugment.
        cache: bool or str, default ``False``. ``True`` caches the features in
            memory, a string caches them to files with that prefix.
        deterministic: bool, default ``False``: keep element order under parallel ``map`` (tests).
        drop_remainder: bool, default ``False``.
        bucket_boundaries: list of int or None. Frame-count boundaries for
            ``bucket_by_sequence_length`` (less padding); ``None`` pads each batch to its longest.
        audio_key: str, default ``"audio"``.
        keep: tuple of str, default ``("transcript",)``: scalar keys passed through.
        warp: ``(low, high)`` or None (default): :func:`frequency_warp` of each
            utterance before the SpecAugment masks (a new factor each epoch).

    Returns:
        Dataset of dicts: ``features`` float32 ``(batch, frames, num_mel_bins)``
        (zero-padded), ``feature_lengths`` int32 ``(batch,)``, and the ``keep`` keys.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size}")
    spec = examples.element_spec
    if not isinstance(spec, dict) or audio_key not in spec:
        raise ValueError(f"make_audio_dataset expected a dataset of dicts with key {audio_key!r}, got element_spec {spec}")
    missing = [k for k in keep if k not in spec]
    if missing:
        raise ValueError(f"keep keys {missing} are not in the dataset; it has {sorted(spec)}")

    def featurize(example):
        spectrogram = waveform_to_features(_to_waveform(example[audio_key], features), None, features)
        out = {"features": spectrogram, "feature_lengths": tf.shape(spectrogram)[0]}
        out.update({k: example[k] for k in keep})
        return out

    ds = examples.map(featurize, num_parallel_calls=tf.data.AUTOTUNE)
    if cache:
        ds = ds.cache(cache if isinstance(cache, str) else "")
    if shuffle:
        ds = ds.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    if augment is not None or warp is not None:
        seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)

        def mask(example, s):
            features = example["features"]
            if warp is not None:
                features = frequency_warp(features, tf.stack([s[1], s[0]]), warp)
            if augment is not None:
                features = spec_augment(features, s, augment)
            return {**example, "features": features}

        ds = tf.data.Dataset.zip(ds, seeds).map(mask, num_parallel_calls=tf.data.AUTOTUNE)
    if bucket_boundaries:
        ds = ds.bucket_by_sequence_length(
            lambda example: example["feature_lengths"],
            bucket_boundaries=list(bucket_boundaries),
            bucket_batch_sizes=[batch_size] * (len(bucket_boundaries) + 1),
            drop_remainder=drop_remainder,
        )
    else:
        ds = ds.padded_batch(batch_size, drop_remainder=drop_remainder)
    ds = ds.prefetch(tf.data.AUTOTUNE)
    options = tf.data.Options()
    options.deterministic = deterministic
    return ds.with_options(options)


# --------------------------------------------------------------------------- user-facing loader


def _read(path_or_bytes):
    if isinstance(path_or_bytes, (bytes, bytearray, memoryview)):
        return bytes(path_or_bytes), "audio bytes"
    if isinstance(path_or_bytes, (str, Path)):
        path = Path(path_or_bytes)
        if not path.is_file():
            raise FileNotFoundError(f"audio file {path} not found (or not a file)")
        return path.read_bytes(), f"audio file {path}"
    raise TypeError(f"load_audio expected a path (str or Path) or bytes, got {type(path_or_bytes).__name__}")


def _check_wav(data, what):
    """Raise a ``ValueError`` naming the problem unless ``data`` is a 16-bit PCM RIFF/WAVE file."""
    convert = "convert it with `sox IN -r 16000 -c 1 -b 16 OUT.wav` or `ffmpeg -i IN -ac 1 -ar 16000 -sample_fmt s16 OUT.wav`"
    if not data:
        raise ValueError(f"{what} is empty")
    if not (data[:4] == b"RIFF" and data[8:12] == b"WAVE"):
        for magic, name in _OTHER_FORMATS:
            if data.startswith(magic):
                raise ValueError(f"{what} is {name}, not WAV: only 16-bit PCM WAV is read; {convert}")
        raise ValueError(f"{what} is not a WAV file (first bytes {data[:12]!r}); only 16-bit PCM WAV is read; {convert}")
    position = 12
    while position + 8 <= len(data):
        chunk, size = data[position : position + 4], int.from_bytes(data[position + 4 : position + 8], "little")
        if chunk == b"fmt ":
            if position + 24 > len(data):
                break
            audio_format = int.from_bytes(data[position + 8 : position + 10], "little")
            bits = int.from_bytes(data[position + 22 : position + 24], "little")
            if audio_format != 1 or bits != 16:
                kind = _WAV_FORMAT_NAMES.get(audio_format, f"{bits}-bit PCM" if audio_format == 1 else f"format {audio_format}")
                raise ValueError(f"{what} is a {kind} WAV; only 16-bit PCM WAV is read; {convert}")
            return
        position += 8 + size + (size % 2)
    raise ValueError(f"{what} is a truncated WAV file (no complete 'fmt ' chunk)")


def load_audio(path_or_bytes, sample_rate=SAMPLE_RATE):
    """Read a WAV file (path or bytes) as mono float32 in ``[-1, 1]`` at ``sample_rate``.

    The user-facing entry point (the UI calls it on uploads): instead of a
    TensorFlow stack trace, a bad file gives a ``ValueError`` that says what
    it is (empty, MP3, FLAC, 24-bit or float WAV, truncated) and how to convert it.

    Args:
        path_or_bytes: str or Path of a ``.wav`` file, or its bytes.
        sample_rate: int, default ``16000``.

    Returns:
        ``np.ndarray`` float32 ``(samples,)``.
    """
    data, what = _read(path_or_bytes)
    _check_wav(data, what)
    try:
        waveform, rate = decode_wav(tf.constant(data))
    except tf.errors.InvalidArgumentError as error:
        raise ValueError(f"{what} could not be decoded as WAV: {error.message.strip()}") from None
    if int(rate) < 1:
        raise ValueError(f"{what} has an invalid sample rate {int(rate)}")
    return resample(waveform, int(rate), sample_rate).numpy()
