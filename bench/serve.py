"""Benchmark: ``focaltag serve`` under load, and its memory next to one ``focaltag tag`` process.

A real server process (127.0.0.1, default settings: one worker, queue 16) gets ``--requests`` uploads (default
100), ``--concurrency`` at a time (default 8), cycling through the six shared recordings. Reported: requests/s,
p50 / p95 latency (upload + queue + tagging), errors (any status but 200; target 0), the server's peak RSS
(``VmHWM`` after the run) and the peak RSS of one ``focaltag tag`` process tagging the same six recordings with
the same model: their ratio shows what serving costs on top of tagging (the upload buffers, the web stack).

The model is a ShortChunkResNet with random weights (speed does not depend on them), ``--width`` 8 by default
so a run takes about a minute on 2 cores; ``--width 128`` is the paper's size. A round is one fresh server under
the load, then one ``tag`` process; ``--repeats`` rounds, interleaved (``bench/_protocol.py``); figures are
median [min-max], the RSS ratio is taken within a round. Writes ``bench/results/<date>_serve_<cpu kind>.json``
and prints it.

    .venv/bin/python bench/serve.py [--requests 100] [--concurrency 8] [--width 8] [--music DIR] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from _protocol import Run, add_protocol_arguments, interleave, ratio_summary, summary

REPO = Path(__file__).resolve().parents[1]
MUSIC = Path(os.environ.get("FOCALTAG_SHARED", REPO.parent / "shared")) / "data" / "music"
sys.path.insert(0, str(REPO / "tests" / "integration"))  # the tests' server starter

TARGET_ERRORS = 0

_TAG_RSS = """
import sys
from pathlib import Path
from focaltag.cli import main
code = main(sys.argv[1:])
hwm = next(l for l in Path('/proc/self/status').read_text().splitlines() if l.startswith('VmHWM:'))
print(int(hwm.split()[1]) / 1024.0, file=sys.stderr)
sys.exit(code)
"""


def _peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024.0
    raise RuntimeError(f"no VmHWM for process {pid}")


def _tag_process(model: Path, files: list[Path]) -> tuple[float, float]:
    """Peak RSS (MiB) and wall seconds of one ``focaltag tag --format json`` run over ``files``."""
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", _TAG_RSS, "tag", *map(str, files), "-m", str(model),
                           "--format", "json", "-q"], capture_output=True, text=True, check=True)
    return float(done.stderr.strip().splitlines()[-1]), time.perf_counter() - start


def _serve_round(model: Path, folder: Path, payloads: list[tuple[str, bytes]], requests: int,
                 concurrency: int) -> dict:
    """One fresh server, one warm-up request, then ``requests`` uploads ``concurrency`` at a time."""
    import httpx
    from _serve_server import running_server

    latencies: list[float] = []
    errors: list[str] = []
    with running_server([model], folder) as server:
        def one(i: int) -> None:
            name, data = payloads[i % len(payloads)]
            start = time.perf_counter()
            try:
                r = httpx.post(server.url + "/api/v1/tag", files={"file": (name, data)}, timeout=600)
                if r.status_code != 200:
                    errors.append(f"{r.status_code}: {r.text[:200]}")
            except httpx.HTTPError as err:
                errors.append(f"{type(err).__name__}: {err}")
            latencies.append(time.perf_counter() - start)

        one(0)  # warm-up (first forward pass, page cache); not counted
        latencies.clear()
        wall = time.perf_counter()
        with ThreadPoolExecutor(concurrency) as pool:
            list(pool.map(one, range(requests)))
        wall = time.perf_counter() - wall
        server_rss = _peak_rss_mb(server.process.pid)
    lat = np.asarray(latencies)
    return {"wall": wall, "p50": float(np.percentile(lat, 50)), "p95": float(np.percentile(lat, 95)),
            "max": float(lat.max()), "errors": errors, "rss": server_rss}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=100)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--width", type=int, default=8, help="ShortChunkResNet width (128: the paper's)")
    parser.add_argument("--music", type=Path, default=MUSIC)
    add_protocol_arguments(parser, quick="24 requests per round")
    args = parser.parse_args()
    if args.quick:
        args.requests = 24
    files = sorted(p for p in args.music.iterdir() if p.suffix in (".ogg", ".mp3")) if args.music.is_dir() else []
    if not files:
        raise SystemExit(f"no recordings in {args.music}; pass --music DIR")
    run = Run("bench/serve.py", args)

    import torch

    import focaltag

    with tempfile.TemporaryDirectory(prefix="focaltag-bench-serve-") as tmp:
        work = Path(tmp)
        torch.manual_seed(0)
        model = focaltag.save_model(focaltag.create_model("short_chunk_resnet", n_tags=56, width=args.width),
                                    work / "model.pt")
        payloads = [(p.name, p.read_bytes()) for p in files]
        count = {"n": 0}

        def serve() -> dict:
            count["n"] += 1
            return _serve_round(model, work / f"server{count['n']}", payloads, args.requests, args.concurrency)

        timings = interleave({"serve": serve, "tag": lambda: _tag_process(model, files)}, args.repeats)
    served = [t.value for t in timings["serve"]]
    tagged = [t.value for t in timings["tag"]]
    errors = [e for s in served for e in s["errors"]]
    run.finish({
        "bench": "serve",
        "requests": args.requests,
        "concurrency": args.concurrency,
        "model_width": args.width,
        "recordings": len(files),
        "requests_per_s": summary([args.requests / s["wall"] for s in served]),
        "wall_s": summary([s["wall"] for s in served]),
        "latency_p50_s": summary([s["p50"] for s in served]),
        "latency_p95_s": summary([s["p95"] for s in served]),
        "latency_max_s": summary([s["max"] for s in served]),
        "errors": len(errors),
        "target_errors": TARGET_ERRORS,
        "first_errors": errors[:3],
        "server_peak_rss_mb": summary([s["rss"] for s in served]),
        "tag_process_peak_rss_mb": summary([rss for rss, _ in tagged]),
        "rss_ratio_server_vs_tag": ratio_summary([s["rss"] for s in served], [rss for rss, _ in tagged]),
        "tag_process_s_for_all_recordings": summary([seconds for _, seconds in tagged]),
    })


if __name__ == "__main__":
    main()
