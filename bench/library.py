"""Benchmark: library runs (`focaltag tag DIR -o tags.jsonl`) at 1,000 and 10,000 files: speed and flat memory.

Generates N tiny WAV files (0.25 s noise, 16 kHz, 100 per folder) and runs the real CLI on each library in a
fresh process, with a tiny model (ShortChunkResNet width 8, one chunk per track, fp32). The figures are about
the library machinery (the lazy walk, decoding, batching, the streamed JSONL output, the record of done
paths), so for the size sweep the network's forward pass is replaced by a null one that returns constant
probabilities (``Tagger.predict_chunks``; everything else is the real code): on 2 shared cores the tiny
network alone costs ~20 ms of CPU per file. One extra run with the real network (``--real-files``, default
300) gives the end-to-end files/s.

For each size it reports files/s of the first run (files / seconds inside ``tag_library``: walk, decode,
tag, write; model loading excluded, ``process_s`` has it), the time of a rerun that skips everything (the
output is read back), and the peak RSS (``VmHWM``) of both. The baseline is the smallest size measured in the same run:
``rss_ratio`` (largest / smallest peak RSS) stays near 1.0 when memory does not grow with the library.
Prints one JSON object.

    .venv/bin/python bench/library.py [--sizes 1000 10000] [--real-files 300] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def _vm_hwm_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _child(argv: list[str], null_network: bool) -> None:
    """Run the CLI in this (fresh) process and print its wall time and peak RSS as JSON."""
    from focaltag.cli import main

    if null_network:
        from focaltag.inference.tagger import Tagger

        def predict_chunks(self: Tagger, chunks: np.ndarray, **_: object) -> np.ndarray:
            return np.full((len(chunks), len(self.tag_names)), 0.5)

        Tagger.predict_chunks = predict_chunks  # type: ignore[method-assign]

    import focaltag.library.runs as library

    timed = {"library_s": 0.0}
    real_tag_library = library.tag_library

    def tag_library(*args: object, **kwargs: object) -> object:
        t = time.perf_counter()
        try:
            return real_tag_library(*args, **kwargs)  # type: ignore[arg-type]
        finally:
            timed["library_s"] += time.perf_counter() - t

    library.tag_library = tag_library  # type: ignore[assignment]
    t0 = time.perf_counter()
    rc = main(argv)
    print(json.dumps({"rc": rc, "seconds": time.perf_counter() - t0, "peak_rss_mb": _vm_hwm_mb(), **timed}))


def _generate(root: Path, n: int) -> None:
    import soundfile as sf

    rng = np.random.default_rng(0)
    wave = (0.1 * rng.standard_normal(4000)).astype(np.float32)
    for i in range(n):
        folder = root / f"artist{i // 1000:03d}" / f"album{(i // 100) % 10:02d}"
        if i % 100 == 0:
            folder.mkdir(parents=True, exist_ok=True)
        sf.write(folder / f"track{i:06d}.wav", wave, 16000, subtype="PCM_16")


def _model(path: Path) -> Path:
    import torch

    from focaltag.models import create_model, save_model

    torch.manual_seed(0)
    return save_model(create_model("short_chunk_resnet", n_tags=56, width=8), path)


def _run(argv: list[str], *, null_network: bool) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2")}
    flags = ["--child", *(["--null-network"] if null_network else [])]
    proc = subprocess.run([sys.executable, __file__, *flags, "--", *argv], capture_output=True, text=True,
                          env=env, timeout=3600)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        raise SystemExit(f"bench child failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    return json.loads(lines[-1])


def _measure(work: Path, model: Path, n: int, *, null_network: bool) -> dict:
    """Generate n files, tag them (fresh process), rerun (everything skipped); one result row."""
    lib, out = work / f"lib{n}", work / f"tags{n}.jsonl"
    shutil.rmtree(lib, ignore_errors=True)
    out.unlink(missing_ok=True)
    t0 = time.perf_counter()
    _generate(lib, n)
    gen_s = time.perf_counter() - t0
    argv = ["tag", str(lib), "-m", str(model), "-o", str(out), "--chunks", "1", "--batch-size", "32",
            "--precision", "fp32", "-q"]
    first = _run(argv, null_network=null_network)
    n_lines = out.read_bytes().count(b"\n")
    rerun = _run(argv, null_network=null_network)
    shutil.rmtree(lib, ignore_errors=True)
    return {
        "files": n, "lines": n_lines, "generate_s": round(gen_s, 1),
        "files_per_s": round(n / first["library_s"], 1), "library_s": round(first["library_s"], 1),
        "process_s": round(first["seconds"], 1), "peak_rss_mb": round(first["peak_rss_mb"], 1),
        "rerun_skip_s": round(rerun["library_s"], 2), "rerun_peak_rss_mb": round(rerun["peak_rss_mb"], 1),
        "output_mb": round(out.stat().st_size / 2**20, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--real-files", type=int, default=300, help="files of the run with the real network")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--null-network", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("rest", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(args.rest, args.null_network)
        return
    work = args.workdir or Path(tempfile.mkdtemp(prefix="focaltag-bench-library-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        model = _model(work / "tiny.pt")
        rows = [_measure(work, model, n, null_network=True) for n in sorted(args.sizes)]
        real = _measure(work, model, args.real_files, null_network=False) if args.real_files else None
        base, top = rows[0], rows[-1]
        print(json.dumps({
            "bench": "library", "cpu_count": os.cpu_count(), "load_avg_1min": round(os.getloadavg()[0], 2),
            "network": "null (constant probabilities) in the size sweep; the real tiny model in real_network",
            "runs": rows,
            "real_network": real,
            "baseline_files": base["files"],
            "rss_ratio": round(top["peak_rss_mb"] / base["peak_rss_mb"], 3),
            "rss_growth_mb": round(top["peak_rss_mb"] - base["peak_rss_mb"], 1),
            "rerun_rss_ratio": round(top["rerun_peak_rss_mb"] / base["rerun_peak_rss_mb"], 3),
            "files_per_s_ratio": round(top["files_per_s"] / base["files_per_s"], 3),
        }, indent=1))
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
