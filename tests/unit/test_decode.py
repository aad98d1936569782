"""Decoding real recordings and generated files to 16 kHz mono float32, streaming, and typed errors."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from focaltag.audio.decode import audio_info, iter_audio_blocks, load_audio
from focaltag.errors import AudioDecodeError

# one file per (rate, container) combination of the shared recordings
REAL = [("machine_wars.mp3", 22050, "MP3"), ("battle-epic.ogg", 44100, "OGG"), ("nebula.ogg", 48000, "OGG"),
        ("traveling_minstrels.low.mp3", 44100, "MP3")]


@pytest.mark.parametrize(("name", "rate", "container"), REAL)
def test_real_recordings_decode_to_true_length(music_dir, name, rate, container):
    info = audio_info(music_dir / name)
    assert (info.sample_rate, info.format) == (rate, container)
    y = load_audio(music_dir / name)
    assert y.dtype == np.float32 and y.ndim == 1
    assert np.isfinite(y).all() and 0.05 < np.abs(y).max() < 2.0
    if container == "OGG":  # Vorbis headers give the exact frame count
        assert abs(y.size - info.frames * 16000 / rate) <= 1
    else:  # MP3 frame counts in the header are an estimate (VBR / padding): within 0.3 s
        assert abs(y.size / 16000 - info.duration) < 0.3


def _tone(sr: int, seconds: float, freq: float = 440.0) -> np.ndarray:
    t = np.arange(int(round(seconds * sr))) / sr
    return 0.3 * np.sin(2 * np.pi * freq * t)


@pytest.mark.parametrize(("sr", "fmt", "subtype", "ext"), [
    (44100, "WAV", "PCM_16", "wav"), (22050, "FLAC", "PCM_16", "flac"), (48000, "OGG", "VORBIS", "ogg"),
    (48000, "OGG", "OPUS", "opus"), (16000, "WAV", "FLOAT", "wav"), (44100, "MP3", "MPEG_LAYER_III", "mp3")])
def test_generated_file_keeps_its_duration(tmp_path, sr, fmt, subtype, ext):
    x = _tone(sr, 1.5)
    path = tmp_path / f"tone.{ext}"
    sf.write(path, np.stack([x, 0.5 * x], axis=1), sr, format=fmt, subtype=subtype)
    y = load_audio(path)
    assert y.shape == (24000,)
    # the 440 Hz tone survives decoding, downmix ((1 + 0.5) / 2 = 0.75 of 0.3) and resampling
    segment = y[4000:20000]  # 16,000 samples at 16 kHz: rfft bins are 1 Hz apart
    assert abs(int(np.argmax(np.abs(np.fft.rfft(segment)))) - 440) <= 1
    if fmt in ("WAV", "FLAC"):
        assert abs(np.abs(y[2000:22000]).max() - 0.225) < 2e-3


def test_stereo_downmix_is_channel_mean(tmp_path):
    rng = np.random.default_rng(0)
    left, right = rng.uniform(-0.5, 0.5, 16000), rng.uniform(-0.5, 0.5, 16000)
    sf.write(tmp_path / "st.wav", np.stack([left, right], axis=1), 16000, subtype="FLOAT")
    y = load_audio(tmp_path / "st.wav")
    np.testing.assert_allclose(y, ((left + right) / 2).astype(np.float32), atol=1e-7)


def test_resampling_preserves_amplitude_and_pitch(tmp_path):
    sf.write(tmp_path / "k.wav", _tone(44100, 2.0, freq=1000.0), 44100, subtype="FLOAT")
    y = load_audio(tmp_path / "k.wav")
    ref = _tone(16000, 2.0, freq=1000.0)
    np.testing.assert_allclose(y[1000:-1000], ref[1000:-1000], atol=1e-3)


def test_streaming_blocks_equal_whole_decode(tmp_path):
    rng = np.random.default_rng(1)
    x = rng.uniform(-0.5, 0.5, (44100 * 5, 2))
    sf.write(tmp_path / "n.flac", x, 44100)
    whole = load_audio(tmp_path / "n.flac")
    blocks = list(iter_audio_blocks(tmp_path / "n.flac", block_seconds=0.7))
    assert len(blocks) >= 7 and all(b.dtype == np.float32 for b in blocks)
    np.testing.assert_allclose(np.concatenate(blocks), whole, atol=1e-6)


def test_streaming_real_file_equals_whole(music_dir):
    path = music_dir / "battle-epic.ogg"
    streamed = np.concatenate(list(iter_audio_blocks(path, block_seconds=7.3)))
    np.testing.assert_allclose(streamed, load_audio(path), atol=1e-6)


def _bad_files(tmp_path):
    (tmp_path / "empty.flac").write_bytes(b"")
    (tmp_path / "text.wav").write_text("this is not audio\n" * 50)
    (tmp_path / "random.mp3").write_bytes(np.random.default_rng(0).bytes(20000))
    x = _tone(44100, 2.0)
    sf.write(tmp_path / "ok.ogg", x, 44100)
    (tmp_path / "header-only.ogg").write_bytes((tmp_path / "ok.ogg").read_bytes()[:200])
    return {"empty": tmp_path / "empty.flac", "non-audio": tmp_path / "text.wav",
            "random": tmp_path / "random.mp3", "truncated header": tmp_path / "header-only.ogg",
            "missing": tmp_path / "missing.mp3", "folder": tmp_path}


@pytest.mark.parametrize("kind", ["empty", "non-audio", "random", "truncated header", "missing", "folder"])
def test_bad_files_raise_one_typed_error_naming_the_file(tmp_path, kind):
    path = _bad_files(tmp_path)[kind]
    with pytest.raises(AudioDecodeError) as err:
        load_audio(path)
    msg = str(err.value)
    assert str(path) in msg and "\n" not in msg
    with pytest.raises(AudioDecodeError):
        list(iter_audio_blocks(path))


def test_zero_frame_file(tmp_path):
    sf.write(tmp_path / "zero.wav", np.zeros((0, 1)), 16000)
    with pytest.raises(AudioDecodeError, match="no audio samples"):
        load_audio(tmp_path / "zero.wav")


def test_bad_arguments(tmp_path):
    sf.write(tmp_path / "a.wav", _tone(16000, 0.5), 16000)
    with pytest.raises(AudioDecodeError, match="sr"):
        load_audio(tmp_path / "a.wav", sr=0)
    with pytest.raises(AudioDecodeError, match="block_seconds"):
        list(iter_audio_blocks(tmp_path / "a.wav", block_seconds=0))


def test_other_output_rate(tmp_path):
    sf.write(tmp_path / "a.wav", _tone(44100, 1.5), 44100)
    assert load_audio(tmp_path / "a.wav", sr=22050).shape == (33075,)
