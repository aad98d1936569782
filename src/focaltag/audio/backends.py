"""The two decoders behind :mod:`focaltag.audio.decode` and the one rule that picks between them.

* **libsndfile** (``soundfile``) for WAV, FLAC, AIFF and Ogg (``.ogg``/``.oga``): PCM decodes exactly in both
  and libsndfile was as fast or faster on it (``bench/decode.py``); for Ogg Vorbis, libvorbisfile seeks to the
  exact sample, where FFmpeg's Ogg seek placed a chunk up to a Vorbis block off.
* **FFmpeg through PyAV** (``av``) for everything else: MP3, MP4/M4A (AAC, ALAC), Opus (``.opus``), WMA,
  WebM/Matroska, WavPack, APE, AC-3, MP2, the audio track of videos; and as the fallback whenever libsndfile
  refuses a file (an Ogg Opus or Ogg FLAC libsndfile calls malformed), and for Ogg Opus (:data:`FFMPEG_SUBTYPES`).
  MP3 moved here from libsndfile's mpg123, which stops silently at the first badly damaged frame
  (a damaged file came back much shorter) and prints its complaints straight onto the terminal; FFmpeg skips the
  damaged packet, says so in the log, and decodes the rest.

:func:`choose_backend` is the one decision; :func:`open_reader` returns a reader with the small interface both
share (``samplerate``, ``channels``, ``frames``, ``seekable``, ``read(n)`` as ``(n, channels)`` float32,
``seek(frame)``, ``close()``). File names are passed to both libraries as the OS's bytes (or an open file
object), so a name that is not valid UTF-8 decodes like any other.

Decoder messages never reach the terminal: FFmpeg's log is routed to the ``focaltag.audio.ffmpeg`` logger at
debug level, and a damaged packet is skipped and logged at debug level (both shown with ``-v``).

Seeking (PyAV) lands :data:`PREROLL_SECONDS` before the target, decodes on and places each frame by its
timestamp counted from the stream's start time (an MP3's encoder delay, Opus pre-skip), so a seek read starts
on the same sample as a front-to-back decode (``tests/integration/test_formats.py`` checks every format; codecs
with variable block sizes, such as Vorbis, can land up to one block off, hence Ogg goes to libsndfile).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np

from focaltag.errors import AudioDecodeError, first_line

__all__ = ["Backend", "BACKEND_BY_EXTENSION", "choose_backend", "open_reader", "AudioReader", "FFMPEG_EXTENSIONS",
           "FORMATS_HINT"]

logger = logging.getLogger(__name__)

Backend = Literal["sndfile", "pyav"]

BACKEND_BY_EXTENSION: dict[str, Backend] = {".wav": "sndfile", ".wave": "sndfile", ".flac": "sndfile",
                                            ".aif": "sndfile", ".aiff": "sndfile", ".aifc": "sndfile",
                                            ".ogg": "sndfile", ".oga": "sndfile"}
"""Extensions (lower case) that libsndfile decodes first; every other file goes to FFmpeg (PyAV)."""

FFMPEG_SUBTYPES = frozenset({"OPUS"})
"""libsndfile subtypes still decoded by FFmpeg: libsndfile's Ogg Opus seek ignores the pre-skip (a chunk read by
seeking came one pre-skip off its whole-file decode), FFmpeg's is exact."""

FFMPEG_EXTENSIONS = frozenset({
    ".mp3", ".mp2", ".mpa", ".m4a", ".m4b", ".mp4", ".m4v", ".aac", ".alac", ".ogg", ".oga", ".opus", ".spx",
    ".flac", ".wav", ".wave", ".aif", ".aiff", ".aifc", ".caf", ".wma", ".asf", ".wmv", ".webm", ".mka", ".mkv",
    ".wv", ".ape", ".ac3", ".eac3", ".dts", ".mpc", ".tta", ".au", ".snd", ".amr", ".3gp", ".mov", ".avi",
    ".w64", ".rf64", ".voc", ".tak", ".dff", ".dsf",
})
"""Audio (and video) extensions picked up by folder walks: containers whose audio FFmpeg decodes."""

FORMATS_HINT = "the file may be corrupt, truncated or not audio"


class AudioReader(Protocol):
    """What chunk reads and streaming need from a decoder."""

    samplerate: int
    channels: int
    frames: int
    seekable: bool
    format: str
    subtype: str

    def read(self, frames: int) -> np.ndarray: ...

    def seek(self, frame: int) -> None: ...

    def close(self) -> None: ...


def choose_backend(path: str | os.PathLike[str]) -> Backend:
    """The decoder tried first for ``path``: libsndfile for the extensions of :data:`BACKEND_BY_EXTENSION`
    (case ignored), FFmpeg for everything else. :func:`open_reader` then hands the file to FFmpeg when libsndfile
    refuses it or finds a subtype of :data:`FFMPEG_SUBTYPES` inside."""
    return BACKEND_BY_EXTENSION.get(os.path.splitext(os.fspath(path))[1].lower(), "pyav")


def open_reader(path: Path, backend: Backend | None = None) -> AudioReader:
    """Open ``path`` with the backend :func:`choose_backend` names (libsndfile falling back to FFmpeg).

    ``backend`` forces one (``bench/decode.py`` compares them; a forced ``"sndfile"`` does not fall back).
    Raises AudioDecodeError naming the file, with the reason ("permission denied" when it cannot be read).
    """
    _check_file(path)
    if backend == "sndfile":
        try:
            return _SoundfileReader(path)
        except _Refused as err:
            raise AudioDecodeError(f"{path}: libsndfile cannot decode it ({err})") from None
    if backend == "pyav":
        return _PyAVReader(path)
    if choose_backend(path) == "sndfile":
        try:
            reader = _SoundfileReader(path)
        except _Refused as err:
            logger.debug("%s: libsndfile refused it (%s); decoding with FFmpeg", path, err)
        else:
            if reader.subtype not in FFMPEG_SUBTYPES:
                return reader
            reader.close()
    return _PyAVReader(path)


def _check_file(path: Path) -> None:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise AudioDecodeError(f"audio file not found: {path}") from None
    except PermissionError:
        raise AudioDecodeError(f"{path}: permission denied; make it readable (chmod/chown) or skip it") from None
    except OSError as err:
        raise AudioDecodeError(f"{path}: cannot read ({err.strerror or err})") from None
    if os.path.isdir(path):
        raise AudioDecodeError(f"{path} is a folder; pass an audio file")
    if st.st_size == 0:
        raise AudioDecodeError(f"{path}: empty file (0 bytes); re-download or remove it")
    if not os.access(path, os.R_OK):
        raise AudioDecodeError(f"{path}: permission denied; make it readable (chmod/chown) or skip it")


class _Refused(Exception):
    """libsndfile cannot open the file (FFmpeg is tried next)."""


# --------------------------------------------------------------------------------------------- libsndfile
class _SoundfileReader:
    def __init__(self, path: Path) -> None:
        import soundfile as sf

        self._path = path
        try:
            self._fh = sf.SoundFile(os.fsencode(path))
        except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as err:
            raise _Refused(str(err).strip().splitlines()[-1] if str(err).strip() else type(err).__name__) from None
        if self._fh.samplerate <= 0 or self._fh.channels <= 0:
            self._fh.close()
            raise _Refused(f"invalid header (sample rate {self._fh.samplerate}, {self._fh.channels} channels)")
        self.samplerate = int(self._fh.samplerate)
        self.channels = int(self._fh.channels)
        self.frames = int(self._fh.frames)
        self.seekable = bool(self._fh.seekable()) and self.frames < 2**62
        self.format, self.subtype = str(self._fh.format), str(self._fh.subtype)

    def read(self, frames: int) -> np.ndarray:
        import soundfile as sf

        try:
            return self._fh.read(frames, dtype="float32", always_2d=True)
        except (sf.LibsndfileError, RuntimeError, ValueError) as err:
            raise AudioDecodeError(f"{self._path}: decoding failed mid-file ({_last_line(err)}); "
                                   f"{FORMATS_HINT}") from None

    def seek(self, frame: int) -> None:
        self._fh.seek(min(max(frame, 0), max(self.frames - 1, 0)))

    def close(self) -> None:
        self._fh.close()


def _last_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[-1].rstrip(".") if text else type(err).__name__


# --------------------------------------------------------------------------------------------- FFmpeg (PyAV)
_FFMPEG_LOG = logging.getLogger("focaltag.audio.ffmpeg")


def _route_ffmpeg_log() -> None:
    """FFmpeg's own log stays off the terminal: off (PyAV's default, re-asserted here) unless focaltag's log is at
    debug level (``-v``), when FFmpeg's warnings go to the ``libav.*`` loggers at debug level."""
    import av.logging

    if logging.getLogger("focaltag").getEffectiveLevel() > logging.DEBUG:
        av.logging.set_level(None)
        return
    av.logging.set_level(av.logging.WARNING)
    root = logging.getLogger("libav")
    if not any(isinstance(h, _ToDebug) for h in root.handlers):
        root.propagate = False
        root.addHandler(_ToDebug())


class _ToDebug(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        _FFMPEG_LOG.debug("%s: %s", record.name, record.getMessage().strip())


PREROLL_SECONDS = 0.2
"""A PyAV seek lands this much before the target and decodes on (Opus needs 80 ms, AAC/AC-3 one frame)."""

_INT_SCALE = {"u8": 128.0, "s16": 32768.0, "s32": 2147483648.0, "s64": 9223372036854775808.0}


@dataclass
class _Pending:
    data: np.ndarray  # (n, channels) float32
    start: int  # frame index of data[0]


class _PyAVReader:
    def __init__(self, path: Path) -> None:
        import av

        _route_ffmpeg_log()
        self._path = path
        self._file: Any = None
        try:
            try:
                source: Any = os.fspath(path).encode("utf-8").decode("utf-8")
            except UnicodeEncodeError:  # not valid UTF-8 (surrogate-escaped bytes): FFmpeg reads through Python
                self._file = source = open(os.fsencode(path), "rb")  # noqa: SIM115 (closed in close())
            self._c = av.open(source, mode="r", metadata_errors="ignore")
        except PermissionError:
            self._close_file()
            raise AudioDecodeError(f"{path}: permission denied; make it readable (chmod/chown) or skip it") from None
        except (av.FFmpegError, OSError, ValueError) as err:
            self._close_file()
            raise AudioDecodeError(f"{path}: cannot decode ({_av_reason(err)}); {FORMATS_HINT}") from None
        streams = self._c.streams.audio
        if not streams:
            self.close()
            raise AudioDecodeError(f"{path}: no audio stream (a {self._c.format.name} file without sound); "
                                   "pass an audio file")
        self._s = streams[0]
        cc = self._s.codec_context
        self.samplerate = int(cc.sample_rate or 0)
        self.channels = int(cc.channels or 0)
        if self.samplerate <= 0 or self.channels <= 0:
            self.close()
            raise AudioDecodeError(f"{path}: invalid header (sample rate {self.samplerate}, {self.channels} "
                                   f"channels); {FORMATS_HINT}")
        self.format = self._c.format.name.split(",")[0].upper()
        self.subtype = cc.name.upper()
        self.frames = self._estimate_frames()
        self._t0 = self._s.start_time if self._s.start_time is not None else 0
        self.seekable = self.frames > 0 and (self._file is None or self._file.seekable())
        self.damaged_packets = 0
        self._frames_it: Any = None
        self._pending: _Pending | None = None
        self._pos = 0  # frame index of the next sample read() returns
        self._decoded_end = 0  # frame index just after the last decoded frame

    def _estimate_frames(self) -> int:
        s = self._s
        if s.duration is not None and s.time_base is not None and s.duration > 0:
            return int(round(float(s.duration * s.time_base) * self.samplerate))
        if self._c.duration is not None and self._c.duration > 0:
            return int(round(self._c.duration / 1_000_000 * self.samplerate))
        return 0

    # -- decoding
    def _decoded(self) -> Any:
        import av

        packets = self._c.demux(self._s)
        while True:
            try:
                packet = next(packets)
            except StopIteration:
                return
            except av.FFmpegError as err:  # the container itself is damaged here: what was decoded is kept
                logger.debug("%s: stopped at damaged data (%s)", self._path, _av_reason(err))
                return
            try:
                frames = packet.decode()
            except (av.FFmpegError, ValueError) as err:
                self.damaged_packets += 1
                logger.debug("%s: skipped a damaged packet (%s)", self._path, _av_reason(err))
                continue
            yield from frames

    def _to_array(self, frame: Any) -> np.ndarray:
        arr = frame.to_ndarray()
        fmt = frame.format
        if fmt.is_planar:
            arr = arr.T
        else:
            arr = arr.reshape(-1, len(frame.layout.channels))
        name = fmt.name.rstrip("p")
        if name in _INT_SCALE:
            out = arr.astype(np.float32)
            if name == "u8":
                out -= 128.0
            out /= np.float32(_INT_SCALE[name])
        else:
            out = arr.astype(np.float32, copy=False)
        if out.shape[1] != self.channels:  # a layout change mid-stream: keep the channel count, mean the rest
            out = np.repeat(out.mean(axis=1, keepdims=True, dtype=np.float32), self.channels, axis=1)
        return out

    def _next(self) -> _Pending | None:
        if self._frames_it is None:
            self._frames_it = self._decoded()
        for frame in self._frames_it:
            data = self._to_array(frame)
            if data.shape[0] == 0:
                continue
            start = self._decoded_end
            if frame.pts is not None and frame.time_base is not None and self._place_by_pts:
                # the first frame (of the file or after a seek) is placed by its timestamp, counted from the
                # stream's start time (an MP3's encoder delay, Opus pre-skip); a negative one (Vorbis's first
                # packet) is lead-in that read() drops. Later frames follow on, whatever their rounded timestamps.
                start = int(round(float((frame.pts - self._t0) * frame.time_base) * self.samplerate))
                if self._decoded_end == 0 and start < 0:  # lead-in is at most that first frame (a broken
                    start = max(start, -data.shape[0])  # encoder's far negative timestamps drop no audio)
            self._place_by_pts = False
            self._decoded_end = start + data.shape[0]
            return _Pending(data, start)
        return None

    _place_by_pts = True

    def read(self, frames: int) -> np.ndarray:
        """Up to ``frames`` frames from the current position, ``(n, channels)`` float32; fewer at the end."""
        import av

        parts: list[np.ndarray] = []
        need = frames
        try:
            while need > 0:
                if self._pending is None:
                    self._pending = self._next()
                    if self._pending is None:
                        break
                p = self._pending
                if p.start < self._pos:  # decoded from before the target (after a seek): drop the lead
                    drop = min(self._pos - p.start, len(p.data))
                    p.data, p.start = p.data[drop:], p.start + drop
                elif p.start > self._pos:  # a gap (the seek landed past the target): silence fills it
                    gap = min(p.start - self._pos, need)
                    parts.append(np.zeros((gap, self.channels), dtype=np.float32))
                    self._pos += gap
                    need -= gap
                    continue
                take = p.data[:need]
                if len(take):
                    parts.append(take)
                    self._pos += len(take)
                    need -= len(take)
                rest = p.data[len(take):]
                self._pending = _Pending(rest, p.start + len(take)) if len(rest) else None
        except av.FFmpegError as err:
            raise AudioDecodeError(f"{self._path}: decoding failed mid-file ({_av_reason(err)}); "
                                   f"{FORMATS_HINT}") from None
        if not parts:
            return np.zeros((0, self.channels), dtype=np.float32)
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def seek(self, frame: int) -> None:
        """Position at ``frame``: FFmpeg seeks to the nearest earlier keyframe; the lead is decoded and dropped."""
        import av

        frame = max(int(frame), 0)
        if frame == self._pos:
            return
        if self._frames_it is not None and self._pos < frame < self._pos + 2 * self.samplerate:
            self._pos_skip(frame)  # near ahead: decoding on is cheaper than a seek
            return
        try:  # land PREROLL_SECONDS early: transform codecs (AAC, Opus, AC-3) need the previous frames' overlap
            back = max(frame / self.samplerate - PREROLL_SECONDS, 0.0)
            ts = int(back / float(self._s.time_base)) + self._t0 if self._s.time_base else 0
            self._c.seek(max(ts, 0), stream=self._s, backward=True, any_frame=False)
        except av.FFmpegError as err:
            raise AudioDecodeError(f"{self._path}: cannot seek to {frame / self.samplerate:.1f} s "
                                   f"({_av_reason(err)})") from None
        self._s.codec_context.flush_buffers()
        self._frames_it = None
        self._pending = None
        self._place_by_pts = True
        self._pos = frame

    def _pos_skip(self, frame: int) -> None:
        while self._pos < frame:
            if len(self.read(min(frame - self._pos, 1 << 16))) == 0:
                break

    def _close_file(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def close(self) -> None:
        c = getattr(self, "_c", None)
        if c is not None:
            c.close()
        self._close_file()


def _av_reason(err: BaseException) -> str:
    text = getattr(err, "strerror", None) or str(err)
    return first_line(str(text), default=type(err).__name__).rstrip(".")
