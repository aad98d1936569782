"""Benchmark ``focaltag data prepare`` against the reference pre-decoding path, and the training loader.

Run: ``python bench/prepare.py [--short 4] [--long 2] [--workers N] [--repeats 3] [--quick]``. Writes
``bench/results/<date>_prepare_<cpu kind>.json`` and prints it.

Generated 44.1 kHz stereo MP3s of 30 s and 240 s (harmonic tones + noise, not real music) are decoded
(a) by the reference path, one process: ``librosa.load(path, sr=16000)`` + ``np.save`` float32 per track, and
(b) by ``prepare_cache`` with ``--workers`` processes, in the same run on the same warm page cache. Reported:
throughput ratio (b/a), bytes-on-disk ratio, the share of prepare's worker time spent outside
decode + resample, the decode floor of one 240 s file, then random training chunks per second from
``TrainChunkDataset`` (DataLoader, 0 and 2 workers) against the CPU training step of the paper model
(``focaltag.create_model``; batch ``--train-batch``, forward + backward + Adam) and against a GPU step's rate
(``GPU_CHUNKS_PER_S``, an assumption, not measured here). The contenders run interleaved, ``--repeats`` rounds
(``bench/_protocol.py``): each figure is the median [min-max] of the rounds, each ratio is taken within a round.
"""

from __future__ import annotations

import argparse
import importlib
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType

import numpy as np
import soundfile as sf

# Python puts this script's folder first on sys.path, and bench/coverage.py would then shadow the `coverage`
# package that numba (imported by librosa, the baseline here) imports.
HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]


def _protocol() -> ModuleType:
    """``bench/_protocol.py``, imported with this folder on the path only for that import."""
    sys.path.insert(0, str(HERE))
    try:
        return importlib.import_module("_protocol")
    finally:
        sys.path.remove(str(HERE))


P = _protocol()
CHUNK = 73600
GPU_CHUNKS_PER_S = 2000.0  # a GPU training step's chunks/s, assumed (bench/gpu.py measures one)


def _music_like(seconds: float, sr: int, rng: np.random.Generator) -> np.ndarray:
    """Stereo float32: a few decaying harmonic notes per second plus noise (MP3-encodes like music)."""
    n = int(seconds * sr)
    t = np.arange(n) / sr
    out = 0.01 * rng.standard_normal(n)
    for f in rng.uniform(110, 880, size=6):
        env = 0.5 + 0.5 * np.sin(2 * np.pi * rng.uniform(0.2, 2.0) * t)
        for h in range(1, 5):
            out += 0.04 / h * env * np.sin(2 * np.pi * f * h * t + rng.uniform(0, 6.28))
    out /= max(1.0, np.abs(out).max() / 0.9)
    return np.stack([out, 0.8 * out], axis=1).astype(np.float32)


def _make_dataset(root: Path, n_short: int, n_long: int) -> tuple[Path, Path, list[tuple[str, str, float]]]:
    rng = np.random.default_rng(0)
    audio = root / "audio"
    rows = []
    for i, secs in enumerate([30.0] * n_short + [240.0] * n_long):
        rel = f"{i % 10:02d}/b{i}.mp3"
        (audio / rel).parent.mkdir(parents=True, exist_ok=True)
        sf.write(audio / rel, _music_like(secs, 44100, rng), 44100, format="MP3")
        rows.append((f"b{i}", rel, secs))
    tsv = root / "bench.tsv"
    tsv.write_text("TRACK_ID\tARTIST_ID\tALBUM_ID\tPATH\tDURATION\tTAGS\n" + "".join(
        f"{tid}\ta\tb\t{rel}\t{secs}\tmood/theme---{'calm' if i % 2 else 'happy'}\n"
        for i, (tid, rel, secs) in enumerate(rows)))
    for _, rel, _ in rows:  # warm the page cache for both contenders
        (audio / rel).read_bytes()
    return tsv, audio, rows


def _cpu_seconds() -> float:
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def _reference(audio: Path, rows, out: Path) -> dict:
    try:
        import librosa

        def load(p: Path) -> np.ndarray:
            return librosa.load(p, sr=16000)[0]
        how = "librosa.load(sr=16000) + np.save float32, 1 process"
    except ImportError:  # same decoder and resampler librosa would use
        import soxr

        def load(p: Path) -> np.ndarray:
            x, sr = sf.read(p, dtype="float32")
            return soxr.resample(x.mean(axis=1), sr, 16000, quality="HQ")
        how = "librosa absent: soundfile + soxr HQ + np.save float32, 1 process"
    out.mkdir()
    load(audio / rows[0][1])  # warm-up: librosa's lazy imports are not per-track cost
    t0, c0 = time.perf_counter(), _cpu_seconds()
    for tid, rel, _ in rows:
        np.save(out / f"{tid}.npy", load(audio / rel))
    seconds = time.perf_counter() - t0
    return {"path": how, "seconds": round(seconds, 3), "cpu_seconds": round(_cpu_seconds() - c0, 3),
            "bytes": sum(f.stat().st_size for f in out.glob("*.npy"))}


def _decode_floor(path: Path) -> dict:
    from focaltag.audio.decode import load_audio

    t0 = time.perf_counter()
    sf.read(path, dtype="float32")
    t1 = time.perf_counter()
    load_audio(path)
    t2 = time.perf_counter()
    return {"decode_s": round(t1 - t0, 3), "decode_resample_s": round(t2 - t1, 3)}


def _loader_rate(cache_dir: Path, tsv: Path, workers: int, seconds: float) -> float:
    """Chunks/s; the main process uses 1 torch thread as DataLoader workers do (collate's torch.stack with
    several OpenMP threads on a loaded 2-core machine was far slower)."""
    import torch
    from torch.utils.data import DataLoader, RandomSampler

    from focaltag.data.metadata import TagVocabulary, read_tracks
    from focaltag.data.torch_dataset import TrainChunkDataset

    tracks = read_tracks(tsv)
    ds = TrainChunkDataset(cache_dir, tracks, TagVocabulary.from_tracks(tracks), CHUNK, seed=0)
    sampler = RandomSampler(ds, replacement=True, num_samples=10**7, generator=torch.Generator().manual_seed(0))
    loader = DataLoader(ds, batch_size=16, sampler=sampler, num_workers=workers)
    it = iter(loader)
    next(it)  # worker start-up is not loader throughput
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            x, _ = next(it)
            n += x.shape[0]
        rate = n / (time.perf_counter() - t0)
    finally:
        torch.set_num_threads(threads)
    del it
    return rate


def _train_step(batch: int = 8):
    """One CPU training step of the paper model (forward + backward + Adam), warmed up; returns the step."""
    import torch

    from focaltag import create_model

    model = create_model("short_chunk_resnet", n_tags=56)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    x, y = torch.randn(batch, CHUNK), (torch.rand(batch, 56) > 0.9).float()

    def step() -> None:
        opt.zero_grad()
        torch.nn.functional.binary_cross_entropy_with_logits(model(x), y).backward()
        opt.step()

    step()  # the first step warms up allocators / kernels
    return step


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--short", type=int, default=4, help="number of 30 s MP3s")
    parser.add_argument("--long", type=int, default=2, help="number of 240 s MP3s")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--loader-seconds", type=float, default=2.0, help="length of one loader measurement")
    parser.add_argument("--train-batch", type=int, default=8, help="batch of the CPU training step")
    P.add_protocol_arguments(parser, quick="two 30 s and one 240 s MP3, loader windows of 1 s, training batch 2")
    args = parser.parse_args(argv)
    if args.quick:
        args.short, args.long, args.loader_seconds, args.train_batch = 2, 1, 1.0, 2
    run = P.Run("bench/prepare.py", args, argv=sys.argv[1:] if argv is None else argv)
    import torch

    from focaltag.audio.cache import prepare_cache
    from focaltag.data.metadata import read_tracks

    t_start = time.perf_counter()
    root = Path(tempfile.mkdtemp(prefix="focaltag-bench-prepare-"))
    try:
        tsv, audio, rows = _make_dataset(root, args.short, args.long)
        audio_s = sum(r[2] for r in rows)
        floor = _decode_floor(audio / rows[-1][1]) if args.long else None
        rounds = {"n": 0}
        refs: list[dict] = []
        runs: list[tuple] = []

        def reference() -> None:
            refs.append(_reference(audio, rows, root / f"npy{rounds['n']}"))
            shutil.rmtree(root / f"npy{rounds['n']}")

        def prepare() -> None:
            rep = rounds["n"]
            rounds["n"] += 1
            shutil.rmtree(root / "cache", ignore_errors=True)
            c0 = _cpu_seconds()
            summary = prepare_cache(read_tracks(tsv), audio, root / "cache", workers=args.workers, progress=False)
            if summary.failed:
                raise SystemExit(f"prepare failed on {summary.failures}")
            runs.append((summary, _cpu_seconds() - c0, rep))

        P.interleave({"reference": reference, "prepare": prepare}, args.repeats)
        ref_s = [r["seconds"] for r in refs]
        prep_s = [r[0].seconds for r in runs]
        prep_cpu = [r[1] for r in runs]
        last = runs[-1][0]
        result = {
            "files": {"n_30s": args.short, "n_240s": args.long, "format": "MP3 44.1 kHz stereo (generated)",
                      "audio_seconds": audio_s},
            "reference": {"path": refs[0]["path"], "seconds": P.summary(ref_s),
                          "cpu_seconds": P.summary([r["cpu_seconds"] for r in refs]),
                          "audio_s_per_s": P.rate_summary(audio_s, ref_s), "bytes": refs[0]["bytes"]},
            "prepare": {"workers": last.workers, "seconds": P.summary(prep_s), "cpu_seconds": P.summary(prep_cpu),
                        "audio_s_per_s": P.rate_summary(audio_s, prep_s), "bytes": last.bytes,
                        "share_outside_decode_resample_cpu": P.summary(
                            [1 - s.decode_cpu_seconds / cpu for s, cpu, _ in runs]),
                        "share_outside_decode_resample_wall": P.summary(
                            [1 - s.decode_seconds / (s.seconds * s.workers) for s, _, _ in runs])},
            "throughput_ratio": P.ratio_summary(ref_s, prep_s),
            "throughput_ratio_target": 1.7,
            # what the ratio becomes on idle cores: CPU cost per audio second, times the parallel workers
            "throughput_ratio_cpu_projection": P.summary(
                [s.workers * r["cpu_seconds"] / cpu for r, (s, cpu, _) in zip(refs, runs, strict=True)]),
            "bytes_ratio": round(last.bytes / refs[0]["bytes"], 4),
            "bytes_ratio_target": 0.5,
            "decode_floor_one_240s_file": floor,
        }
        step = _train_step(args.train_batch)
        threads = torch.get_num_threads()
        rates = P.interleave({
            "workers0": lambda: _loader_rate(root / "cache", tsv, 0, args.loader_seconds),
            "workers2": lambda: _loader_rate(root / "cache", tsv, 2, args.loader_seconds),
            "train_step": step}, args.repeats)
        loader0 = [t.value for t in rates["workers0"]]
        loader2 = [t.value for t in rates["workers2"]]
        train = [args.train_batch / t.wall for t in rates["train_step"]]
        best = [max(a, b) for a, b in zip(loader0, loader2, strict=True)]
        result["loader"] = {"chunk_samples": CHUNK, "batch": 16, "chunks_per_s_workers0": P.summary(loader0),
                            "chunks_per_s_workers2": P.summary(loader2)}
        result["train_step_cpu"] = {"model": "short_chunk_resnet (paper, focaltag)", "batch": args.train_batch,
                                    "torch_threads": threads, "chunks_per_s": P.summary(train)}
        result["loader_vs_cpu_train_ratio"] = P.ratio_summary(best, train)
        result["loader_vs_cpu_train_ratio_target"] = 20
        result["gpu_chunks_per_s_assumed"] = GPU_CHUNKS_PER_S
        result["loader_vs_gpu_assumed"] = P.summary([b / GPU_CHUNKS_PER_S for b in best])
        result["bench_seconds"] = round(time.perf_counter() - t_start, 1)
        run.finish(result)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
