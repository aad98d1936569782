"""Benchmark decoding: libsndfile vs FFmpeg (PyAV) vs ``librosa.load``, seeking, and peak memory, per format.

Run: ``python bench/decode.py [--seconds 240] [--hour-minutes 60] [--repeats 3] [--quick]``. Writes
``bench/results/<date>_decode_<cpu kind>.json`` and prints it; ``bench/render.py`` makes the README's tables.

From a shared recording (``../shared/data/music/nebula.ogg``, 48 kHz stereo) ``--seconds`` of audio are encoded
inside the run with PyAV's encoders (the tests' ``tests/integration/_encode.py``) to MP3, M4A (AAC), Opus, FLAC
and WAV; Ogg is the recording itself (Vorbis, cut to the same length by nothing: its own length is used).
Each file is then decoded to 16 kHz mono float32 (decode + downmix + soxr HQ resampling), in a fresh process per
measurement so that peak RSS (``VmHWM``) is that decoder's (Python, numpy and the decoder's imports included), by:

* ``libsndfile`` and ``pyav``: focaltag's two backends forced (where the backend opens the file);
* ``focaltag``: the backend :func:`focaltag.audio.backends.choose_backend` picks (what ``tag`` and ``data
  prepare`` use);
* ``librosa``: ``librosa.load(path, sr=16000)``, the ecosystem's reference.

Speed is x real time (audio seconds per wall second) of one decode after one untimed warm-up decode in the same
process. Seeking: 16 chunks of 4.6 s read through ``read_file_chunks(method="seek")`` from a ``--hour-minutes``
file (the recording looped) against the whole-file decode of the same file (no warm-up: what one ``tag`` call
pays), for MP3, M4A, Opus and FLAC. Every measurement is a fresh process, interleaved ``--repeats`` rounds
(round after round over every file and decoder, ``bench/_protocol.py``); figures are median [min-max], the
seek speed-up is taken within each round.
"""

from __future__ import annotations

import argparse
import importlib
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType

import numpy as np

# the script's folder would shadow packages (bench/coverage.py vs numba's `coverage`): drop it, keep the tests'
HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]
sys.path.insert(0, str(HERE.parent / "tests" / "integration"))


def _protocol() -> ModuleType:
    """``bench/_protocol.py``, imported with this folder on the path only for that import."""
    sys.path.insert(0, str(HERE))
    try:
        return importlib.import_module("_protocol")
    finally:
        sys.path.remove(str(HERE))


P = _protocol()

FORMATS = ("mp3", "aac-m4a", "opus", "flac", "ogg", "wav")
METHODS = ("libsndfile", "pyav", "focaltag", "librosa")


def _decode(path: Path, method: str) -> int:
    """Decode ``path`` to 16 kHz mono float32 with ``method``; returns the number of samples."""
    if method == "librosa":
        import librosa

        return int(len(librosa.load(path, sr=16000)[0]))
    from focaltag.audio.decode import iter_audio_blocks

    backend = {"libsndfile": "sndfile", "pyav": "pyav", "focaltag": None}[method]
    return sum(len(b) for b in iter_audio_blocks(path, 16000, backend=backend))


def _seek(path: Path) -> int:
    from focaltag.audio.chunks import chunk_starts, probe_file, read_file_chunks

    facts = probe_file(path, 16000)
    starts = chunk_starts(facts.n_samples, 73600, 16)
    return sum(len(c) for _, c in read_file_chunks(path, starts, 73600, sample_rate=16000, method="seek",
                                                   facts=facts))


def _child(args: argparse.Namespace) -> None:
    """One measurement in this fresh process (after ``--warmup`` untimed runs): wall time and peak RSS."""
    path = Path(args.one)

    def once() -> int:
        return _seek(path) if args.method == "seek" else _decode(path, args.method)

    for _ in range(args.warmup):
        once()
    t0 = time.perf_counter()
    n = once()
    print(json.dumps({"seconds": time.perf_counter() - t0, "samples": n, "peak_rss_mb": _peak_rss_mb()}))


def _peak_rss_mb() -> float:
    """This process's peak RSS: VmHWM (ru_maxrss would carry the parent's peak across fork + exec on Linux)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _measure(path: Path, method: str, warmup: int) -> dict | None:
    out = subprocess.run([sys.executable, __file__, "--one", str(path), "--method", method, "--warmup", str(warmup)],
                         capture_output=True, text=True, check=False)
    if out.returncode != 0:
        return None  # this decoder cannot open the file
    return json.loads(out.stdout.strip().splitlines()[-1])


def _make(folder: Path, music: Path, seconds: float, formats: list[str], loops: int = 1) -> dict[str, Path]:
    from _encode import FORMATS as KINDS
    from _encode import encode, recording

    wave, sr = recording(music / "nebula.ogg", seconds, 0.0)
    if loops > 1:
        wave = np.concatenate([wave] * loops)
    files: dict[str, Path] = {}
    for kind in KINDS:
        if kind.name in formats and not (loops > 1 and kind.name == "wav"):
            files[kind.name] = encode(wave, sr, folder / f"{kind.name}-{loops}{kind.ext}", kind)
    return files


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=240.0)
    p.add_argument("--hour-minutes", type=float, default=60.0)
    p.add_argument("--formats", default=",".join(FORMATS), help="comma-separated, of " + ", ".join(FORMATS))
    p.add_argument("--music", type=Path, default=HERE.parent.parent / "shared" / "data" / "music")
    P.add_protocol_arguments(p, quick="30 s files, 5-minute seek files, MP3 and FLAC only")
    p.add_argument("--one", help=argparse.SUPPRESS)
    p.add_argument("--method", help=argparse.SUPPRESS)
    p.add_argument("--warmup", type=int, default=1, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.one:
        _child(args)
        return
    if args.quick:
        args.seconds, args.hour_minutes, args.formats = 30.0, 5.0, "mp3,flac"
    formats = [f for f in args.formats.split(",") if f]
    unknown = sorted(set(formats) - set(FORMATS))
    if unknown:
        p.error(f"unknown format(s) {', '.join(unknown)}; choose from {', '.join(FORMATS)}")
    run = P.Run("bench/decode.py", args)
    import soundfile as sf

    result: dict = {"seconds": args.seconds, "formats": formats, "methods": list(METHODS), "decode": {},
                    "seek": {}}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        files = _make(folder, args.music, args.seconds, formats)
        files["ogg"] = args.music / "nebula.ogg"
        lengths = {name: sf.info(files[name]).duration if name in ("ogg", "wav", "flac") else args.seconds
                   for name in formats}
        decoded = P.interleave({f"{name}|{method}": (lambda f=files[name], m=method: _measure(f, m, 1))
                                for name in formats for method in METHODS}, args.repeats)
        for name in formats:
            row: dict = {}
            for method in METHODS:
                got = [t.value for t in decoded[f"{name}|{method}"]]
                row[method] = None if any(g is None for g in got) else {
                    "x_realtime": P.summary([lengths[name] / g["seconds"] for g in got]),
                    "peak_rss_mb": P.summary([g["peak_rss_mb"] for g in got])}
            result["decode"][name] = row
        loops = max(1, int(round(args.hour_minutes * 60 / args.seconds)))
        seek_formats = [name for name in ("mp3", "aac-m4a", "opus", "flac") if name in formats]
        long_files = _make(folder, args.music, args.seconds, seek_formats, loops=loops)
        contenders = {}
        for name in seek_formats:
            contenders[f"{name}|whole"] = lambda f=long_files[name]: _measure(f, "focaltag", 0)
            contenders[f"{name}|seek"] = lambda f=long_files[name]: _measure(f, "seek", 0)
        sought = P.interleave(contenders, args.repeats)
        for name in seek_formats:
            whole = [t.value for t in sought[f"{name}|whole"]]
            seek = [t.value for t in sought[f"{name}|seek"]]
            if any(m is None for m in whole + seek):
                raise SystemExit(f"decode: the {name} seek file could not be read")
            result["seek"][name] = {
                "minutes": round(args.seconds * loops / 60), "whole_s": P.summary([m["seconds"] for m in whole]),
                "seek16_s": P.summary([m["seconds"] for m in seek]),
                "speedup": P.ratio_summary([m["seconds"] for m in whole], [m["seconds"] for m in seek]),
                "whole_rss_mb": P.summary([m["peak_rss_mb"] for m in whole]),
                "seek_rss_mb": P.summary([m["peak_rss_mb"] for m in seek])}
    run.finish(result)


if __name__ == "__main__":
    main()
