"""The one rule that picks a decoder per file (libsndfile or FFmpeg through PyAV), as a table."""

from __future__ import annotations

import pytest

from focaltag.audio.backends import BACKEND_BY_EXTENSION, FFMPEG_EXTENSIONS, choose_backend
from focaltag.library.files import AUDIO_EXTENSIONS

# file name -> decoder tried first: libsndfile where it is exact (PCM) and as fast (bench/decode.py), and for Ogg
# Vorbis, whose sample-exact seek FFmpeg lacks; FFmpeg for the rest (MP3: it decodes past damage, quietly)
TABLE = [
    ("a.wav", "sndfile"), ("a.WAV", "sndfile"), ("a.flac", "sndfile"), ("a.FLAC", "sndfile"), ("a.aiff", "sndfile"),
    ("a.aif", "sndfile"), ("a.mp3", "pyav"), ("a.MP3", "pyav"), ("a.ogg", "sndfile"), ("a.oga", "sndfile"),
    ("a.opus", "pyav"), ("a.m4a", "pyav"), ("a.M4A", "pyav"), ("a.mp4", "pyav"), ("a.aac", "pyav"),
    ("a.wma", "pyav"), ("a.webm", "pyav"), ("a.mka", "pyav"), ("a.mkv", "pyav"), ("a.wv", "pyav"),
    ("a.ape", "pyav"), ("a.ac3", "pyav"), ("a.mp2", "pyav"), ("a.caf", "pyav"), ("noext", "pyav"),
]


@pytest.mark.parametrize(("name", "backend"), TABLE)
def test_backend_table(name: str, backend: str) -> None:
    assert choose_backend(name) == backend
    assert choose_backend(b"dir/\xff".decode("utf-8", "surrogateescape") + name) == backend


def test_every_first_choice_extension_is_walked() -> None:
    assert set(BACKEND_BY_EXTENSION) <= FFMPEG_EXTENSIONS == AUDIO_EXTENSIONS
    assert all(ext == ext.lower() and ext.startswith(".") for ext in AUDIO_EXTENSIONS)
    for ext in (".m4a", ".opus", ".wma", ".webm", ".mka", ".wv", ".ape", ".ac3", ".mp2", ".mp4", ".mkv"):
        assert ext in AUDIO_EXTENSIONS
