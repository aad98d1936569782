"""Benchmark: library runs (`focaltag tag DIR -o tags.jsonl`) at 1,000 and 10,000 files: speed and flat memory.

Generates N tiny WAV files (0.25 s noise, 16 kHz, 100 per folder) and runs the real CLI on each library in a
fresh process, with a tiny model (ShortChunkResNet width 8, one chunk per track, fp32). The figures are about
the library machinery (the lazy walk, decoding, batching, the streamed JSONL output, the record of done
paths), so for the size sweep the network's forward pass is replaced by a null one that returns constant
probabilities (``Tagger.predict_chunks``; everything else is the real code): even the tiny network would
dominate the machinery's cost per file. One extra run with the real network (``--real-files``, default 300)
gives the end-to-end files/s.

For each size it reports files/s of the first run (files / seconds inside ``tag_library``: walk, decode,
tag, write; model loading excluded, ``process_s`` has it), the time of a rerun that skips everything (the
output is read back), and the peak RSS (``VmHWM``) of both. The baseline is the smallest size measured in the
same run: ``rss_ratio`` (largest / smallest peak RSS) stays near 1.0 when memory does not grow with the library.
Each library is generated once; then, ``--repeats`` rounds, every size is tagged and re-run in turn (fresh
processes, ``bench/_protocol.py``); figures are median [min-max], ratios are taken within a round. Writes
``bench/results/<date>_library_<cpu kind>.json`` and prints it.

    .venv/bin/python bench/library.py [--sizes 1000 10000] [--real-files 300] [--workdir DIR] [--repeats 3]
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

from _protocol import Run, add_protocol_arguments, interleave, ratio_summary, summary

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
        if hasattr(Tagger, "_predict"):  # the inference core's batch path: (probabilities, embeddings)
            Tagger._predict = lambda self, chunks, **_: (predict_chunks(self, chunks), None)  # type: ignore

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


def _library(work: Path, n: int) -> tuple[Path, float]:
    """Generate the library of ``n`` files once; returns its folder and the seconds it took."""
    lib = work / f"lib{n}"
    shutil.rmtree(lib, ignore_errors=True)
    t0 = time.perf_counter()
    _generate(lib, n)
    return lib, time.perf_counter() - t0


def _tag_twice(lib: Path, out: Path, model: Path, *, null_network: bool) -> dict:
    """Tag the library into a fresh output (fresh process), then rerun it (everything skipped)."""
    out.unlink(missing_ok=True)
    argv = ["tag", str(lib), "-m", str(model), "-o", str(out), "--chunks", "1", "--batch-size", "32",
            "--precision", "fp32", "-q"]
    first = _run(argv, null_network=null_network)
    lines = out.read_bytes().count(b"\n")
    rerun = _run(argv, null_network=null_network)
    return {"first": first, "rerun": rerun, "lines": lines, "output_mb": out.stat().st_size / 2**20}


def _row(n: int, generate_s: float, rounds: list[dict]) -> dict:
    return {
        "files": n, "lines": rounds[-1]["lines"], "generate_s": round(generate_s, 1),
        "files_per_s": summary([n / r["first"]["library_s"] for r in rounds]),
        "library_s": summary([r["first"]["library_s"] for r in rounds]),
        "process_s": summary([r["first"]["seconds"] for r in rounds]),
        "peak_rss_mb": summary([r["first"]["peak_rss_mb"] for r in rounds]),
        "rerun_skip_s": summary([r["rerun"]["library_s"] for r in rounds]),
        "rerun_peak_rss_mb": summary([r["rerun"]["peak_rss_mb"] for r in rounds]),
        "output_mb": round(rounds[-1]["output_mb"], 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--real-files", type=int, default=300, help="files of the run with the real network")
    add_protocol_arguments(parser, quick="libraries of 200 and 2,000 files, 50 with the real network")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--null-network", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("rest", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(args.rest, args.null_network)
        return
    if args.quick:
        args.sizes, args.real_files = [200, 2000], 50
    run = Run("bench/library.py", args)
    work = args.workdir or Path(tempfile.mkdtemp(prefix="focaltag-bench-library-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        model = _model(work / "tiny.pt")
        sizes = sorted(args.sizes)
        libs = {n: _library(work, n) for n in sizes}
        contenders = {str(n): (lambda n=n: _tag_twice(libs[n][0], work / f"tags{n}.jsonl", model,
                                                      null_network=True)) for n in sizes}
        if args.real_files:
            real_lib = _library(work, args.real_files)
            real_dir = work / "real"
            shutil.rmtree(real_dir, ignore_errors=True)
            real_lib[0].rename(real_dir)
            real_lib = (real_dir, real_lib[1])
            contenders["real"] = lambda: _tag_twice(real_lib[0], work / "tags-real.jsonl", model, null_network=False)
        timings = interleave(contenders, args.repeats)
        rows = [_row(n, libs[n][1], [t.value for t in timings[str(n)]]) for n in sizes]
        real = _row(args.real_files, real_lib[1], [t.value for t in timings["real"]]) if args.real_files else None
        base, top = [t.value for t in timings[str(sizes[0])]], [t.value for t in timings[str(sizes[-1])]]
        run.finish({
            "bench": "library",
            "network": "null (constant probabilities) in the size sweep; the real tiny model in real_network",
            "runs": rows,
            "real_network": real,
            "baseline_files": sizes[0],
            "rss_ratio": ratio_summary([r["first"]["peak_rss_mb"] for r in top],
                                       [r["first"]["peak_rss_mb"] for r in base]),
            "rss_growth_mb": summary([a["first"]["peak_rss_mb"] - b["first"]["peak_rss_mb"]
                                      for a, b in zip(top, base, strict=True)]),
            "rerun_rss_ratio": ratio_summary([r["rerun"]["peak_rss_mb"] for r in top],
                                             [r["rerun"]["peak_rss_mb"] for r in base]),
            "files_per_s_ratio": ratio_summary([sizes[-1] / r["first"]["library_s"] for r in top],
                                               [sizes[0] / r["first"]["library_s"] for r in base]),
        })
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
