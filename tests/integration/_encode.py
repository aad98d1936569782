"""Make a file of every format from a waveform with PyAV's own encoders (FFmpeg in the ``av`` wheel).

Used by the format tests and ``bench/decode.py``: nothing is stored, every file is made inside the run.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class Format:
    """One file kind: ``name`` (test id), file extension, audio encoder, container, and whether it is lossy."""

    name: str
    ext: str
    codec: str
    container: str
    lossy: bool
    rate: int = 48000
    bit_rate: int | None = None
    video: str | None = None  # a video encoder: the file is a video whose audio track is tagged
    options: tuple[tuple[str, str], ...] = ()


FORMATS: tuple[Format, ...] = (
    Format("wav", ".wav", "pcm_s16le", "wav", False),
    Format("aiff", ".aiff", "pcm_s16be", "aiff", False),
    Format("caf", ".caf", "pcm_s16le", "caf", False),
    Format("flac", ".flac", "flac", "flac", False),
    Format("alac-m4a", ".m4a", "alac", "ipod", False),
    Format("wavpack", ".wv", "wavpack", "wv", False),
    Format("mp3", ".mp3", "libmp3lame", "mp3", True, bit_rate=192000),
    Format("aac-m4a", ".m4a", "aac", "ipod", True, bit_rate=192000),
    Format("opus", ".opus", "libopus", "opus", True, bit_rate=128000),
    Format("ogg-opus", ".ogg", "libopus", "ogg", True, bit_rate=128000),
    Format("wma", ".wma", "wmav2", "asf", True, bit_rate=192000),
    Format("mp2", ".mp2", "mp2", "mp2", True, bit_rate=256000),
    Format("ac3", ".ac3", "ac3", "ac3", True, bit_rate=256000),
    Format("mka-opus", ".mka", "libopus", "matroska", True, bit_rate=128000),
    Format("webm-opus", ".webm", "libopus", "webm", True, bit_rate=128000, video="libvpx"),
    Format("mp4-video", ".mp4", "aac", "mp4", True, bit_rate=192000, video="mpeg4"),
    Format("mkv-video", ".mkv", "ac3", "matroska", True, bit_rate=256000, video="mpeg4"),
)
"""Every kind the tests make; ``bench/decode.py`` uses a subset."""


def encode(wave: np.ndarray, sr: int, path: Path, fmt: Format) -> Path:
    """Write ``wave`` (float32 ``(samples, channels)`` at ``sr``) to ``path`` as ``fmt``; returns the path."""
    import av

    layout = "stereo" if wave.shape[1] == 2 else "mono"
    with av.open(str(path), "w", format=fmt.container) as out:
        video = None
        if fmt.video is not None:
            video = out.add_stream(fmt.video, rate=10)
            video.width, video.height, video.pix_fmt = 64, 48, "yuv420p"
        stream = out.add_stream(fmt.codec, rate=fmt.rate, layout=layout)
        if fmt.bit_rate:
            stream.bit_rate = fmt.bit_rate
        if stream.codec_context.format.name.startswith("u8"):  # PyAV's default is the codec's first: 8 bits
            names = [f.name for f in stream.codec_context.codec.audio_formats]
            stream.codec_context.format = "s16p" if "s16p" in names else "s16"
        for key, value in fmt.options:
            stream.codec_context.options[key] = value
        resampler = av.AudioResampler(format=stream.codec_context.format.name, layout=layout, rate=fmt.rate)
        step = 4096
        for i in range(0, len(wave), step):
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(wave[i:i + step].T, dtype=np.float32),
                                               format="fltp", layout=layout)
            frame.sample_rate = sr
            for converted in resampler.resample(frame):
                for packet in stream.encode(converted):
                    out.mux(packet)
        for converted in resampler.resample(None):
            for packet in stream.encode(converted):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
        if video is not None:
            for k in range(int(len(wave) / sr * 10)):
                image = av.VideoFrame.from_ndarray(np.full((48, 64, 3), k % 255, dtype=np.uint8), format="rgb24")
                image.pts = k
                for packet in video.encode(image):
                    out.mux(packet)
            for packet in video.encode(None):
                out.mux(packet)
    return path


def recording(path: Path, seconds: float, offset: float = 0.0) -> tuple[np.ndarray, int]:
    """``seconds`` of a shared recording as float32 ``(samples, 2)`` and its rate (decoded by focaltag)."""
    from focaltag.audio.backends import open_reader

    reader = open_reader(path)
    try:
        reader.seek(int(offset * reader.samplerate))
        wave = reader.read(int(seconds * reader.samplerate))
        return np.ascontiguousarray(wave, dtype=np.float32), reader.samplerate
    finally:
        reader.close()
