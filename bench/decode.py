"""Benchmark decoding: libsndfile vs FFmpeg (PyAV) vs ``librosa.load``, seeking, and peak memory, per format.

Run: ``python bench/decode.py [--seconds 240] [--hour-minutes 60]``. Prints ONE JSON object (and a Markdown
table on stderr for the README).

From a shared recording (``../shared/data/music/nebula.ogg``, 48 kHz stereo) ``--seconds`` of audio are encoded
inside the run with PyAV's encoders (the tests' ``tests/integration/_encode.py``) to MP3, M4A (AAC), Opus, FLAC
and WAV; Ogg is the recording itself (Vorbis, cut to the same length by nothing: its own length is used).
Each file is then decoded to 16 kHz mono float32 (decode + downmix + soxr HQ resampling), in a fresh process per
measurement so that peak RSS (``VmHWM``) is that decoder's (Python, numpy and the decoder's imports included), by:

* ``libsndfile`` and ``pyav``: focaltag's two backends forced (where the backend opens the file);
* ``focaltag``: the backend :func:`focaltag.audio.backends.choose_backend` picks (what ``tag`` and ``data
  prepare`` use);
* ``librosa``: ``librosa.load(path, sr=16000)``, the ecosystem's reference.

Speed is x real time (audio seconds per wall second, best of ``--repeat``). Seeking: 16 chunks of 4.6 s read
through ``read_file_chunks(method="seek")`` from a ``--hour-minutes`` file (the recording looped) against the
whole-file decode of the same file, for MP3, M4A, Opus and FLAC.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

# the script's folder would shadow packages (bench/coverage.py vs numba's `coverage`): drop it, keep the tests'
HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]
sys.path.insert(0, str(HERE.parent / "tests" / "integration"))

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
    """One measurement in this fresh process: best-of-N wall time and this process's peak RSS."""
    path = Path(args.one)
    times = []
    for _ in range(args.repeat):
        t0 = time.perf_counter()
        n = _seek(path) if args.method == "seek" else _decode(path, args.method)
        times.append(time.perf_counter() - t0)
    print(json.dumps({"seconds": min(times), "samples": n, "peak_rss_mb": _peak_rss_mb()}))


def _peak_rss_mb() -> float:
    """This process's peak RSS: VmHWM (ru_maxrss would carry the parent's peak across fork + exec on Linux)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _measure(path: Path, method: str, repeat: int) -> dict | None:
    out = subprocess.run([sys.executable, __file__, "--one", str(path), "--method", method, "--repeat", str(repeat)],
                         capture_output=True, text=True, check=False)
    if out.returncode != 0:
        return None  # this decoder cannot open the file
    return json.loads(out.stdout.strip().splitlines()[-1])


def _make(folder: Path, music: Path, seconds: float, loops: int = 1) -> dict[str, Path]:
    from _encode import FORMATS as KINDS
    from _encode import encode, recording

    wave, sr = recording(music / "nebula.ogg", seconds, 0.0)
    if loops > 1:
        wave = np.concatenate([wave] * loops)
    files: dict[str, Path] = {}
    for kind in KINDS:
        if kind.name in FORMATS and not (loops > 1 and kind.name == "wav"):
            files[kind.name] = encode(wave, sr, folder / f"{kind.name}-{loops}{kind.ext}", kind)
    return files


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=240.0)
    p.add_argument("--hour-minutes", type=float, default=60.0)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--music", type=Path, default=HERE.parent.parent / "shared" / "data" / "music")
    p.add_argument("--one", help=argparse.SUPPRESS)
    p.add_argument("--method", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.one:
        _child(args)
        return
    result: dict = {"cpu": _cpu(), "load_before": os.getloadavg(), "seconds": args.seconds, "decode": {}, "seek": {}}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        files = _make(folder, args.music, args.seconds)
        import soundfile as sf

        ogg = args.music / "nebula.ogg"
        files["ogg"] = ogg
        for name in FORMATS:
            path = files[name]
            audio_seconds = sf.info(path).duration if name in ("ogg", "wav", "flac") else args.seconds
            row = {}
            for method in METHODS:
                m = _measure(path, method, args.repeat)
                row[method] = None if m is None else {"x_realtime": round(audio_seconds / m["seconds"], 1),
                                                      "peak_rss_mb": round(m["peak_rss_mb"])}
            result["decode"][name] = row
        loops = max(1, int(round(args.hour_minutes * 60 / args.seconds)))
        long_files = _make(folder, args.music, args.seconds, loops=loops)
        for name in ("mp3", "aac-m4a", "opus", "flac"):
            whole = _measure(long_files[name], "focaltag", 1)
            seek = _measure(long_files[name], "seek", 1)
            assert whole is not None and seek is not None
            result["seek"][name] = {"minutes": round(args.seconds * loops / 60), "whole_s": round(whole["seconds"], 2),
                                    "seek16_s": round(seek["seconds"], 3),
                                    "speedup": round(whole["seconds"] / seek["seconds"], 1),
                                    "whole_rss_mb": round(whole["peak_rss_mb"]),
                                    "seek_rss_mb": round(seek["peak_rss_mb"])}
    result["load_after"] = os.getloadavg()
    print(json.dumps(result, indent=1))
    print(_table(result), file=sys.stderr)


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f"{line.split(':', 1)[1].strip()}, {os.cpu_count()} cores"
    except OSError:
        pass
    return f"{os.cpu_count()} cores"


def _table(result: dict) -> str:
    def cell(m: dict | None) -> str:
        return "cannot read" if m is None else f"{m['x_realtime']}x ({m['peak_rss_mb']} MB)"

    rows = ["| file | libsndfile | PyAV (FFmpeg) | focaltag's choice | librosa.load |", "|---|---|---|---|---|"]
    for name, row in result["decode"].items():
        rows.append(f"| {name} | " + " | ".join(cell(row[m]) for m in METHODS) + " |")
    rows += ["", "| file (looped) | whole decode | 16 chunks by seeking | speed-up | peak RSS whole / seek |",
             "|---|---|---|---|---|"]
    for name, s in result["seek"].items():
        rows.append(f"| {name}, {s['minutes']} min | {s['whole_s']} s | {s['seek16_s']} s | {s['speedup']}x | "
                    f"{s['whole_rss_mb']} / {s['seek_rss_mb']} MB |")
    return "\n".join(rows)


if __name__ == "__main__":
    main()
