import io
import wave

import numpy as np
import pytest
import scipy.io.wavfile
import scipy.signal
import tensorflow as tf

from pipelines import audio
from pipelines.audio import LogMelFeatures, SpecAugment


def sine(rate, seconds=0.25, freqs=((440.0, 0.5), (1234.0, 0.3))):
    t = np.arange(int(seconds * rate)) / rate
    return sum(a * np.sin(2 * np.pi * f * t) for f, a in freqs).astype(np.float32)


def wav_bytes(samples, rate):
    buffer = io.BytesIO()
    scipy.io.wavfile.write(buffer, rate, samples)
    return buffer.getvalue()


def to_int16(x):
    return np.round(np.clip(x, -1, 1) * 32767).astype(np.int16)


# --------------------------------------------------------------------------- decode / resample


def test_decode_wav_mixes_channels_down_to_mono():
    left, right = to_int16(sine(8000)), to_int16(-0.5 * sine(8000))
    waveform, rate = audio.decode_wav(wav_bytes(np.stack([left, right], axis=1), 8000))
    assert int(rate) == 8000 and waveform.shape == (len(left),) and waveform.dtype == tf.float32
    np.testing.assert_allclose(waveform.numpy(), (left / 32768.0 + right / 32768.0) / 2, atol=1e-7)


@pytest.mark.parametrize("rate_in", [22050, 48000, 8000, 44100])
def test_resample_matches_scipy_resample_poly_on_a_sine(rate_in):
    x = sine(rate_in, seconds=1.5)  # 24,000 outputs: more than one block of the resampler
    reference = scipy.signal.resample_poly(x.astype(np.float64), 16000, rate_in)
    eager = audio.resample(x, rate_in, 16000).numpy()
    # In a graph with the input rate as a tensor, as when it comes from a WAV header.
    graph = tf.function(lambda w, r: audio.resample(w, r, 16000))(x, tf.constant(rate_in)).numpy()
    assert eager.shape == reference.shape == (int(np.ceil(len(x) * 16000 / rate_in)),)
    np.testing.assert_allclose(eager, reference, atol=2e-6)
    np.testing.assert_allclose(graph, reference, atol=2e-6)
    # Away from the zero-padded edges the result is the same sine sampled at 16 kHz.
    expected = sine(16000, seconds=1.5)[: len(eager)]
    np.testing.assert_allclose(eager[400:-400], expected[400:-400], atol=2e-3)


def test_resample_same_rate_is_identity_and_bad_input_is_rejected():
    x = sine(16000)
    np.testing.assert_array_equal(audio.resample(x, 16000, 16000).numpy(), x)
    with pytest.raises(ValueError, match="rates must be positive integers"):
        audio.resample(x, 0, 16000)
    with pytest.raises(ValueError, match=r"resample expected a waveform of rank 1 \(samples,\), got shape \(2, 4000\)"):
        audio.resample(np.zeros((2, 4000), np.float32), 8000, 16000)


# --------------------------------------------------------------------------- log-mel


def hz_to_mel(f):
    return 1127.0 * np.log1p(f / 700.0)


def numpy_mel_matrix(num_mel, num_bins, rate, low, high):
    """Triangular filters equally spaced on the HTK mel scale, evaluated at each FFT bin's frequency (DC left out)."""
    freqs_mel = hz_to_mel(np.linspace(0.0, rate / 2, num_bins))
    edges = np.linspace(hz_to_mel(low), hz_to_mel(high), num_mel + 2)
    matrix = np.zeros((num_bins, num_mel))
    for m in range(num_mel):
        left, center, right = edges[m], edges[m + 1], edges[m + 2]
        rising = (freqs_mel - left) / (center - left)
        falling = (right - freqs_mel) / (right - center)
        matrix[:, m] = np.maximum(0.0, np.minimum(rising, falling))
    matrix[0] = 0.0
    return matrix


def numpy_log_mel(x, f):
    n_fft = 512
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(f.frame_length) / f.frame_length)  # periodic Hann
    frames = 1 + (len(x) - f.frame_length) // f.frame_step
    spectrum = np.stack(
        [np.abs(np.fft.rfft(x[i * f.frame_step : i * f.frame_step + f.frame_length] * window, n=n_fft)) ** 2 for i in range(frames)]
    )
    mel = numpy_mel_matrix(f.num_mel_bins, n_fft // 2 + 1, f.sample_rate, f.lower_edge_hertz, f.sample_rate / 2)
    return np.log(spectrum @ mel + f.log_offset)


def test_log_mel_spectrogram_matches_numpy_formula_and_shapes():
    features = LogMelFeatures(normalize=False)
    x = sine(16000, seconds=0.5, freqs=((1000.0, 0.6), (3000.0, 0.2))) + 0.01 * np.random.default_rng(0).standard_normal(8000).astype(np.float32)
    ours = audio.log_mel_spectrogram(x, features).numpy()
    frames = 1 + (8000 - 400) // 160
    assert ours.shape == (frames, 80) and ours.dtype == np.float32
    np.testing.assert_allclose(ours, numpy_log_mel(x.astype(np.float64), features), atol=2e-3, rtol=1e-4)
    # The loudest band is the one whose centre is nearest 1 kHz.
    edges = np.linspace(hz_to_mel(20.0), hz_to_mel(8000.0), 82)
    assert np.argmax(ours.mean(axis=0)) == np.argmin(np.abs(edges[1:-1] - hz_to_mel(1000.0)))
    # Leading axes are batch axes.
    batched = audio.log_mel_spectrogram(np.stack([x, x[::-1].copy()]), features)
    assert batched.shape == (2, frames, 80)
    np.testing.assert_allclose(batched[0], ours, atol=1e-5)


def test_waveform_to_features_normalizes_each_bin_and_resamples():
    x = sine(8000, seconds=0.5) + 0.05 * np.random.default_rng(1).standard_normal(4000).astype(np.float32)
    feats = audio.waveform_to_features(x, 8000).numpy()
    assert feats.shape == (1 + (8000 - 400) // 160, 80)
    np.testing.assert_allclose(feats.mean(axis=0), 0.0, atol=1e-4)
    raw = audio.log_mel_spectrogram(audio.resample(x, 8000, 16000)).numpy()
    np.testing.assert_allclose(feats, (raw - raw.mean(0)) / np.sqrt(raw.var(0) + 1e-5), atol=1e-3)


# --------------------------------------------------------------------------- SpecAugment


def masked_runs(flags):
    """Lengths of the runs of True in a 1-D boolean array."""
    runs, length = [], 0
    for flag in list(flags) + [False]:
        if flag:
            length += 1
        elif length:
            runs.append(length)
            length = 0
    return runs


@pytest.mark.parametrize("mask_value", ["zero", "mean"])
def test_spec_augment_masks_bands_of_bounded_width_with_the_mask_value(mask_value):
    spectrogram = np.random.default_rng(2).uniform(1.0, 2.0, size=(100, 40)).astype(np.float32)
    policy = SpecAugment(num_time_masks=1, max_time_width=7, max_time_ratio=1.0, num_freq_masks=1, max_freq_width=5, mask_value=mask_value)
    value = 0.0 if mask_value == "zero" else spectrogram.mean()
    augment = tf.function(lambda seed: audio.spec_augment(spectrogram, seed, policy))
    time_widths, freq_widths = set(), set()
    for i in range(60):
        out = augment(tf.constant([i, 7])).numpy()
        masked = np.isclose(out, value, atol=1e-6)
        rows, cols = masked.all(axis=1), masked.all(axis=0)
        # Every masked value lies in a fully masked row or column; the rest is untouched.
        np.testing.assert_array_equal(masked, rows[:, None] | cols[None, :])
        np.testing.assert_array_equal(out[~masked], spectrogram[~masked])
        time_widths.add(sum(masked_runs(rows)))
        freq_widths.add(sum(masked_runs(cols)))
        assert len(masked_runs(rows)) <= 1 and len(masked_runs(cols)) <= 1
    assert time_widths == set(range(8)) and freq_widths == set(range(6))


def test_spec_augment_is_seeded_and_respects_the_time_ratio():
    spectrogram = np.random.default_rng(3).uniform(1.0, 2.0, size=(30, 20)).astype(np.float32)
    policy = SpecAugment(num_time_masks=3, max_time_width=50, max_time_ratio=0.1, num_freq_masks=2, max_freq_width=4, mask_value="zero")
    a = audio.spec_augment(spectrogram, tf.constant([1, 2]), policy).numpy()
    np.testing.assert_array_equal(a, audio.spec_augment(spectrogram, tf.constant([1, 2]), policy).numpy())
    assert not np.array_equal(a, audio.spec_augment(spectrogram, tf.constant([1, 3]), policy).numpy())
    augment = tf.function(lambda seed: audio.spec_augment(spectrogram, seed, policy))
    for i in range(40):
        out = augment(tf.constant([i, 0])).numpy()
        # Three time masks of at most floor(0.1 * 30) = 3 frames each, two frequency masks of at most 4 bins.
        assert (out == 0).all(axis=1).sum() <= 9 and (out == 0).all(axis=0).sum() <= 8


def test_spec_augment_rejects_bad_arguments():
    with pytest.raises(ValueError, match=r"mask_value must be one of \['mean', 'zero'\], got 'noise'"):
        audio.spec_augment(np.ones((4, 4), np.float32), tf.constant([0, 0]), SpecAugment(mask_value="noise"))
    with pytest.raises(ValueError, match=r"rank 2 \(frames, bins\), got shape \(2, 4, 4\)"):
        audio.spec_augment(np.ones((2, 4, 4), np.float32), tf.constant([0, 0]))


# --------------------------------------------------------------------------- pipeline


def utterances():
    rng = np.random.default_rng(4)
    lengths = [4000, 6400, 2400, 8000, 5600]
    return [
        {"audio": (0.3 * rng.standard_normal(n)).astype(np.float32), "transcript": f"utterance {i}".encode()}
        for i, n in enumerate(lengths)
    ]


def as_dataset(items):
    return tf.data.Dataset.from_generator(
        lambda: iter(items),
        output_signature={"audio": tf.TensorSpec([None], tf.float32), "transcript": tf.TensorSpec([], tf.string)},
    )


def test_make_audio_dataset_pads_batches_and_reports_frame_counts():
    items = utterances()
    batches = list(audio.make_audio_dataset(as_dataset(items), batch_size=2, deterministic=True))
    assert [int(b["features"].shape[0]) for b in batches] == [2, 2, 1]
    frames = [1 + (len(it["audio"]) - 400) // 160 for it in items]
    lengths = np.concatenate([b["feature_lengths"].numpy() for b in batches])
    np.testing.assert_array_equal(lengths, frames)
    first = batches[0]
    assert first["features"].shape == (2, max(frames[:2]), 80) and first["features"].dtype == tf.float32
    assert list(first["transcript"].numpy()) == [b"utterance 0", b"utterance 1"]
    np.testing.assert_allclose(first["features"][0, : frames[0]], audio.waveform_to_features(items[0]["audio"]), atol=1e-4)
    np.testing.assert_array_equal(first["features"][0, frames[0] :], 0.0)


def test_make_audio_dataset_decodes_and_resamples_wav_bytes():
    x = sine(8000, seconds=0.5)
    ds = tf.data.Dataset.from_tensor_slices({"audio": [wav_bytes(to_int16(x), 8000)], "transcript": ["a sine"]})
    batch = next(iter(audio.make_audio_dataset(ds, batch_size=1, deterministic=True)))
    expected = audio.waveform_to_features(to_int16(x) / 32768.0, 8000).numpy()
    # Bands above the 4 kHz Nyquist of the source hold only rounding noise: log and CMVN magnify it to ~1e-4.
    np.testing.assert_allclose(batch["features"][0], expected, atol=1e-3)


def test_shuffle_and_spec_augment_are_seeded_and_redrawn_each_epoch():
    def epoch(ds):
        batches = list(ds)
        return [t for b in batches for t in b["transcript"].numpy()], [b["features"].numpy() for b in batches]

    def make(seed):
        return audio.make_audio_dataset(
            as_dataset(utterances()), batch_size=5, shuffle=True, seed=seed, augment=SpecAugment(mask_value="zero"),
            cache=True, deterministic=True,
        )  # fmt: skip

    ds = make(seed=5)
    order1, feats1 = epoch(ds)
    order2, feats2 = epoch(ds)
    order_again, feats_again = epoch(make(seed=5))
    assert order1 == order_again and np.array_equal(feats1[0], feats_again[0])
    assert sorted(order1) == sorted(order2) == [f"utterance {i}".encode() for i in range(5)]
    assert order1 != order2 or not np.array_equal(feats1[0], feats2[0])
    # Same utterance, two epochs: a new mask each time (RoBERTa-style dynamic augmentation).
    index1, index2 = order1.index(b"utterance 3"), order2.index(b"utterance 3")
    assert not np.array_equal(feats1[0][index1], feats2[0][index2])


def test_bucketing_groups_similar_lengths():
    ds = audio.make_audio_dataset(as_dataset(utterances()), batch_size=2, bucket_boundaries=[30], deterministic=True)
    lengths = [sorted(b["feature_lengths"].numpy().tolist()) for b in ds]
    assert sorted(x for group in lengths for x in group) == sorted(1 + (n - 400) // 160 for n in [4000, 6400, 2400, 8000, 5600])
    for group in lengths:
        assert all(x < 30 for x in group) or all(x >= 30 for x in group)


def test_make_audio_dataset_rejects_missing_keys():
    with pytest.raises(ValueError, match="dataset of dicts with key 'audio'"):
        audio.make_audio_dataset(tf.data.Dataset.from_tensor_slices(np.zeros((2, 10), np.float32)))
    with pytest.raises(ValueError, match=r"keep keys \['text'\] are not in the dataset"):
        audio.make_audio_dataset(as_dataset(utterances()), keep=("text",))
    with pytest.raises(ValueError, match="batch_size must be a positive integer, got 0"):
        audio.make_audio_dataset(as_dataset(utterances()), batch_size=0)


def test_exported_graph_takes_wav_bytes(tmp_path):
    class Frontend(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([], tf.string)])
        def features(self, wav):
            waveform, rate = audio.decode_wav(wav)
            return audio.waveform_to_features(waveform, rate)

    tf.saved_model.save(Frontend(), str(tmp_path / "frontend"))
    loaded = tf.saved_model.load(str(tmp_path / "frontend"))
    data = wav_bytes(to_int16(sine(22050, seconds=0.4)), 22050)
    np.testing.assert_allclose(
        loaded.features(tf.constant(data)).numpy(), Frontend().features(tf.constant(data)).numpy(), atol=1e-5
    )


# --------------------------------------------------------------------------- load_audio


def test_load_audio_reads_a_path_or_bytes_and_resamples(tmp_path):
    x = to_int16(sine(22050, seconds=0.3))
    path = tmp_path / "speech.wav"
    path.write_bytes(wav_bytes(x, 22050))
    from_path, from_bytes = audio.load_audio(path), audio.load_audio(path.read_bytes())
    reference = scipy.signal.resample_poly(x / 32768.0, 16000, 22050)
    assert from_path.dtype == np.float32 and from_path.shape == reference.shape
    np.testing.assert_allclose(from_path, reference, atol=2e-6)
    np.testing.assert_array_equal(from_path, from_bytes)
    np.testing.assert_allclose(audio.load_audio(str(path), sample_rate=22050), x / 32768.0, atol=1e-7)


def wav_with(sampwidth=2, rate=16000):
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(sampwidth)
        w.setframerate(rate)
        w.writeframes(b"\x00" * sampwidth * 100)
    return buffer.getvalue()


@pytest.mark.parametrize(
    "data, message",
    [
        (b"", "audio bytes is empty"),
        (b"ID3\x04\x00\x00\x00\x00\x00\x00" + b"\x00" * 50, "audio bytes is MP3, not WAV: only 16-bit PCM WAV is read; convert it with `sox"),
        (b"fLaC" + b"\x00" * 50, "is FLAC, not WAV"),
        (b"OggS" + b"\x00" * 50, r"is Ogg \(Vorbis/Opus\), not WAV"),
        (b"hello world, not audio", r"is not a WAV file \(first bytes b'hello world,'\)"),
        (wav_with(sampwidth=3), "is a 24-bit PCM WAV; only 16-bit PCM WAV is read"),
        (wav_bytes(np.zeros(100, np.float32), 16000), "is a 32-bit float WAV"),
        (b"RIFF\x24\x00\x00\x00WAVEfmt ", "truncated WAV file"),
    ],
    ids=["empty", "mp3", "flac", "ogg", "text", "24bit", "float", "truncated"],
)
def test_load_audio_explains_unreadable_audio(data, message):
    with pytest.raises(ValueError, match=message):
        audio.load_audio(data)


def test_load_audio_reports_a_corrupt_data_chunk_and_bad_arguments(tmp_path):
    good = wav_with()
    corrupt = good[:24] + (0).to_bytes(4, "little") + good[28:]  # sample rate 0 in the fmt chunk
    with pytest.raises(ValueError, match="audio bytes (could not be decoded as WAV|has an invalid sample rate)"):
        audio.load_audio(corrupt)
    with pytest.raises(FileNotFoundError, match="audio file .*missing.wav not found"):
        audio.load_audio(tmp_path / "missing.wav")
    with pytest.raises(TypeError, match="load_audio expected a path .* or bytes, got int"):
        audio.load_audio(3)


def test_reverberation_adds_a_decaying_tail_of_the_drawn_length_and_keeps_length_and_rms():
    impulse = np.zeros(16000, np.float32)
    impulse[1000] = 1.0
    short = audio.reverberate(impulse, tf.constant([1, 2]), rt60=(0.2, 0.2)).numpy()
    long = audio.reverberate(impulse, tf.constant([1, 2]), rt60=(0.6, 0.6)).numpy()
    assert short.shape == long.shape == impulse.shape
    for out in (short, long):
        assert np.sqrt(np.mean(out**2)) == pytest.approx(np.sqrt(np.mean(impulse**2)), rel=1e-4)
        assert np.abs(out[:1000]).max() < 1e-4  # causal: nothing before the impulse
    energy = lambda x, a, b: np.sum(x[1000 + a : 1000 + b] ** 2) / np.sum(x**2)  # noqa: E731
    # 0.3 s after the sound: the 0.2 s room is 90 dB down, the 0.6 s room only 30 dB.
    assert energy(short, 4800, 6400) < 1e-6 < energy(long, 4800, 6400)
    again = audio.reverberate(impulse, tf.constant([1, 2]), rt60=(0.2, 0.2)).numpy()
    np.testing.assert_array_equal(short, again)


def test_level_and_room_in_perturb_waveform_are_seeded_and_the_level_is_clipped():
    t = np.arange(16000) / 16000
    waveform = tf.constant(0.3 * np.sin(2 * np.pi * 300 * t), tf.float32)
    quiet = audio.perturb_waveform(waveform, tf.constant([5, 6]), speeds=(1.0,), snr_db=None, gain_db=(-20.0, -20.0))
    np.testing.assert_allclose(quiet.numpy(), waveform.numpy() * 0.1, rtol=1e-5, atol=1e-7)
    loud = audio.perturb_waveform(waveform, tf.constant([5, 6]), speeds=(1.0,), snr_db=None, gain_db=(20.0, 20.0))
    assert np.abs(loud.numpy()).max() == pytest.approx(1.0)  # clipped, as a recorder would
    roomy = audio.perturb_waveform(waveform, tf.constant([5, 6]), speeds=(1.0,), snr_db=None, rt60=(0.3, 0.5))
    assert roomy.shape == waveform.shape and not np.allclose(roomy.numpy(), waveform.numpy(), atol=1e-3)


def test_frequency_warp_moves_energy_up_for_factors_above_one_and_is_identity_at_one():
    spectrogram = np.zeros((5, 40), np.float32)
    spectrogram[:, 10] = 1.0
    same = audio.frequency_warp(spectrogram, tf.constant([1, 1]), warp=(1.0, 1.0)).numpy()
    np.testing.assert_allclose(same, spectrogram, atol=1e-6)
    up = audio.frequency_warp(spectrogram, tf.constant([1, 1]), warp=(1.2, 1.2)).numpy()
    assert int(np.argmax(up[0])) == 12 and up.shape == spectrogram.shape  # bin 12 reads bin 10 = 12 / 1.2
    down = audio.frequency_warp(spectrogram, tf.constant([1, 1]), warp=(0.8, 0.8)).numpy()
    assert int(np.argmax(down[0])) == 8
    np.testing.assert_allclose(up[:, :11].sum(1), 0.0, atol=1e-6)


def test_the_audio_dataset_warps_before_masking_with_a_new_factor_each_epoch():
    t = np.arange(8000) / 16000
    examples = tf.data.Dataset.from_tensor_slices(
        {"audio": np.stack([np.sin(2 * np.pi * f * t) for f in (300, 600)]).astype(np.float32),
         "transcript": ["a", "b"]})
    ds = audio.make_audio_dataset(examples, batch_size=2, warp=(0.8, 1.2), seed=3, deterministic=True)
    first, second = (next(iter(ds))["features"].numpy() for _ in range(2))
    plain = next(iter(audio.make_audio_dataset(examples, batch_size=2, deterministic=True)))["features"].numpy()
    assert first.shape == plain.shape and not np.allclose(first, plain) and not np.allclose(first, second)
