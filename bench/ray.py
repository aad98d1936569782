"""Benchmark: `focaltag tag -o --ray` against the single-process library run, on 1 and 2 Ray nodes.

The same 60 files for every run: the six shared real recordings (../shared/data/music, 0.5-5 minutes, OGG /
MP3) plus generated 30 s stereo WAVs (tones and noise, 44.1 kHz), tagged with a paper-size model (the paper's
short-chunk ResNet, 56 tags, random weights: speed does not depend on them), 16 chunks per track, float32.

* ``local``: the single-process library run (``focaltag tag DIR -o``) with one torch thread and one decoding
  thread, i.e. one CPU's worth of work, the budget of one Ray node below;
* ``ray_1_node``: a ``ray.cluster_utils.Cluster`` head with 1 CPU (``plan_pool``: one model actor and one
  decoding task at a time, half a CPU each);
* ``ray_2_nodes``: head + one worker node, 1 CPU each (two actors).

Every run is the real CLI (``focaltag.cli.main``) in this process, timed from the command to its summary
(cluster start-up excluded, actor start-up and model loading included). It reports tracks/s, Ray's overhead
against the local run (``local / ray_1_node - 1``), the 1 -> 2 node scaling, the worst probability difference
between the Ray outputs and the local one, and the load average before and after. Goals (issue 25): scaling
>= 1.7x, overhead <= 15 %. Prints one JSON object.

    flock /work/bench.lock .venv/bin/python bench/ray.py [--files 60] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
# this file is bench/ray.py: its folder must not shadow the ray package
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
SHARED_MUSIC = Path(os.environ.get("FOCALTAG_SHARED", REPO.parent / "shared")) / "data" / "music"
STORE = 200 * 2 ** 20


def _library(root: Path, n_files: int) -> int:
    """The shared recordings (linked) plus generated 30 s WAVs up to ``n_files``; returns how many are real."""
    import soundfile as sf

    root.mkdir(parents=True, exist_ok=True)
    real = sorted(p for p in SHARED_MUSIC.glob("*") if p.suffix in (".ogg", ".mp3")) if SHARED_MUSIC.is_dir() else []
    for p in real:
        os.symlink(p, root / p.name)
    rng = np.random.default_rng(0)
    sr = 44100
    t = np.arange(30 * sr) / sr
    for i in range(n_files - len(real)):
        tone = 0.3 * np.sin(2 * np.pi * rng.uniform(80, 1000) * t)[:, None] + 0.05 * rng.standard_normal((len(t), 2))
        folder = root / f"gen{i // 20}"
        folder.mkdir(exist_ok=True)
        sf.write(folder / f"track{i:03d}.wav", tone.astype(np.float32), sr, subtype="PCM_16")
    return len(real)


def _model(path: Path) -> Path:
    import torch

    from focaltag.models import create_model, save_model

    torch.manual_seed(0)
    return save_model(create_model("short_chunk_resnet", n_tags=56), path)


def _tag(lib: Path, model: Path, out: Path, *extra: str) -> float:
    from focaltag.cli import main

    out.unlink(missing_ok=True)
    t0 = time.perf_counter()
    rc = main(["tag", str(lib), "-m", str(model), "-o", str(out), "--precision", "fp32", "-q", *extra])
    seconds = time.perf_counter() - t0
    if rc != 0:
        raise SystemExit(f"focaltag tag {' '.join(extra)} failed with exit code {rc}")
    return seconds


def _on_cluster(n_nodes: int, lib: Path, model: Path, out: Path) -> float:
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "object_store_memory": STORE,
                                                           "node_ip_address": "127.0.0.1"})
    try:
        for _ in range(n_nodes - 1):
            cluster.add_node(num_cpus=1, object_store_memory=STORE, node_ip_address="127.0.0.1")
        cluster.wait_for_nodes()
        return _tag(lib, model, out, "--ray", cluster.address)
    finally:
        cluster.shutdown()


def _lines(path: Path) -> dict[str, dict]:
    return {d["file"]: d for d in map(json.loads, path.read_text().splitlines())}


def _max_diff(a: Path, b: Path) -> float:
    la, lb = _lines(a), _lines(b)
    assert la.keys() == lb.keys(), "the runs tagged different files"
    return max(abs(la[f]["tags"][t] - lb[f]["tags"][t]) for f in la for t in la[f]["tags"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=60)
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # before Ray is imported: every node on 127.0.0.1
    import torch

    load_before = os.getloadavg()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="focaltag-bench-ray-"))
    try:
        n_real = _library(work / "lib", args.files)
        model = _model(work / "paper.pt")
        torch.set_num_threads(1)  # the local run: one CPU's worth, as one Ray node
        runs = {"local": _tag(work / "lib", model, work / "local.jsonl", "--workers", "1")}
        runs["ray_1_node"] = _on_cluster(1, work / "lib", model, work / "ray1.jsonl")
        runs["ray_2_nodes"] = _on_cluster(2, work / "lib", model, work / "ray2.jsonl")
        tps = {k: round(args.files / s, 3) for k, s in runs.items()}
        print(json.dumps({
            "bench": "ray", "files": args.files, "real_recordings": n_real, "cpu_count": os.cpu_count(),
            "model": "short_chunk_resnet (paper size), 16 chunks, fp32",
            "seconds": {k: round(s, 2) for k, s in runs.items()}, "tracks_per_s": tps,
            "ray_overhead_vs_local": round(tps["local"] / tps["ray_1_node"] - 1, 3),
            "scaling_1_to_2_nodes": round(tps["ray_2_nodes"] / tps["ray_1_node"], 3),
            "max_abs_diff_vs_local": max(_max_diff(work / "local.jsonl", work / f) for f in ("ray1.jsonl",
                                                                                             "ray2.jsonl")),
            "load_avg_before": [round(x, 2) for x in load_before],
            "load_avg_after": [round(x, 2) for x in os.getloadavg()],
        }, indent=1))
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
