"""The GPU path in one prepared run: train-step throughput and FLOP utilisation, the loader, tagging, the recipe.

Written for a short lease on a GPU machine (issue 26: one H200, 16 cores, under 8 minutes), and runnable on a
CPU first (``--quick``) so that the lease is not spent debugging. Sections, each timed and guarded (one that
fails records its error and the rest go on):

* ``matmul``: the bf16 (and float32) GFLOP/s of a large square matmul in this run: the peak the utilisation
  is measured against.
* ``train``: samples/s of the paper-size short-chunk ResNet's training step (synthetic waveform batches, the
  real loss through ``compute_loss`` and the loop's fused Adam) for float32, bf16 autocast, bf16 +
  channels_last and bf16 + channels_last + ``torch.compile``, at batch 32 (the paper's) and larger batches while
  they help. Model FLOP utilisation = forward + backward FLOPs of one sample, counted by
  ``torch.utils.flop_counter.FlopCounterMode``, times samples/s, over the bf16 matmul peak. ``eval`` is the
  inference-mode chunks/s that the per-epoch validation runs at.
* ``loader``: chunks/s of the training ``DataLoader`` (``TrainChunkDataset``, batch 32, pinned memory on CUDA)
  over a real cache that ``focaltag data synth`` + ``focaltag data prepare`` build in the run from generated
  audio, for several worker counts, against the fastest train step.
* ``tag``: ``focaltag tag`` as a whole process on generated tracks plus the shared real recordings (when
  ``../shared`` is there), x real time, and where the time goes: decoding alone (the same decoder, the same
  threads) and the model's forward alone on the decoded chunks.
* ``recipe``: the paper's 200 epochs on MTG-Jamendo split-0 (9,949 training tracks, batch 32; validation of
  3,802 tracks x 16 chunks per epoch) at the measured rates.

Every comparison runs interleaved, ``--repeats`` rounds (``bench/_protocol.py``): the training variants at one
batch size, the loader's worker counts, the tagging process and its parts; each figure is the median [min-max]
of the rounds. Writes ``bench/results/<date>_gpu_<device kind>.json`` (a copy in ``--out``, so that it comes
back from a GPU machine), ``gpu.json`` and ``gpu.log`` into ``--out`` (default: ``$OUT`` when set, else
``./bench-gpu``).

    python bench/gpu.py                       # on the GPU machine
    python bench/gpu.py --quick --device cpu  # the same code paths on a CPU, small sizes (about 2 minutes)
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import platform
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from _protocol import Run, add_protocol_arguments, interleave, summary

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("FOCALTAG_SHARED", REPO.parent / "shared"))
MUSIC = SHARED / "data" / "music"

# MTG-Jamendo split-0 (the paper's): training and validation tracks, chunks per validation track, epochs.
SPLIT0_TRAIN, SPLIT0_VALIDATION, VALIDATION_CHUNKS, PAPER_EPOCHS, PAPER_BATCH = 9949, 3802, 16, 200, 32
# Issue 26's goals, measured in the same run.
GOAL_MFU, GOAL_LOADER_VS_STEP, GOAL_TAG_VS_CPU = 0.35, 1.5, 10.0

log = logging.getLogger("bench.gpu")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@contextlib.contextmanager
def section(report: dict[str, Any], name: str) -> Iterator[dict[str, Any]]:
    """Run one section: its results go into ``report[name]``; an exception is recorded, not raised."""
    out: dict[str, Any] = {}
    report[name] = out
    t0 = time.perf_counter()
    log.info("== %s", name)
    try:
        yield out
    except Exception as err:  # noqa: BLE001 - a broken section must not cost the other sections' figures
        out["error"] = f"{type(err).__name__}: {err}"
        log.error("%s failed: %s\n%s", name, out["error"], traceback.format_exc())
    out["section_seconds"] = round(time.perf_counter() - t0, 1)
    log.info("%s: %s", name, json.dumps(out))


def machine(device: torch.device) -> dict[str, Any]:
    info: dict[str, Any] = {"torch": torch.__version__, "python": platform.python_version(),
                            "cpu_count": os.cpu_count(), "device": str(device)}
    with contextlib.suppress(OSError):
        lines = Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines()
        info["cpu"] = next((ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("model name")), None)
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(gpu=props.name, gpu_memory_gib=round(props.total_memory / 2**30, 1),
                    multiprocessors=props.multi_processor_count, cuda=torch.version.cuda,
                    cudnn=torch.backends.cudnn.version())
    return info


def matmul_gflops(device: torch.device, dtype: torch.dtype, size: int, repeats: int = 10) -> float:
    """GFLOP/s over ``repeats`` square matmuls after three warm-ups (random data)."""
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(repeats):
        a @ b
    _sync(device)
    return 2 * size**3 * repeats / (time.perf_counter() - t0) / 1e9


# -- training -------------------------------------------------------------------------------------------------
def paper_model(width: int) -> torch.nn.Module:
    from focaltag.models import create_model

    torch.manual_seed(0)
    return create_model("short_chunk_resnet", n_tags=56, width=width)


def train_flops_per_sample(width: int, chunk: int) -> float:
    """Forward + backward FLOPs of one training sample (float32 graph; autocast does not change the count)."""
    from torch.utils.flop_counter import FlopCounterMode

    model = paper_model(width).train()
    x = 0.1 * torch.randn(2, chunk)
    with FlopCounterMode(display=False) as counter:
        model(x).sum().backward()
    return counter.get_total_flops() / 2


class TrainStep:
    """The training loop's step: ``compute_loss`` (BCE), backward, the loop's fused Adam, on one device."""

    def __init__(self, width: int, device: torch.device, batch: int, *, bf16: bool, channels_last: bool,
                 compile_model: bool) -> None:
        from focaltag.training.config import OptimConfig
        from focaltag.training.losses import build_loss
        from focaltag.training.schedule import make_optimizer

        self.device, self.bf16 = device, bf16
        model = paper_model(width).to(device).train()
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
        self.optimizer = make_optimizer(model.parameters(), OptimConfig(), phase=0)
        self.loss_fn = build_loss("bce").to(device)
        self.model = torch.compile(model) if compile_model else model
        chunk = int(model.pretrained_cfg.chunk_samples)
        gen = torch.Generator().manual_seed(0)
        self.x = (0.1 * torch.randn(batch, chunk, generator=gen)).to(device)
        self.y = (torch.rand(batch, 56, generator=gen) < 0.05).float().to(device)

    def __call__(self) -> float:
        from focaltag.training.loop import compute_loss

        amp = torch.autocast(self.device.type, dtype=torch.bfloat16) if self.bf16 else contextlib.nullcontext()
        loss = compute_loss(self.model, self.loss_fn, self.x, self.y, autocast=amp)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return float(loss.detach())


def samples_per_second(step: Callable[[], Any], batch: int, device: torch.device, *, warmup: int,
                       steps: int) -> tuple[float, float]:
    """(samples/s over ``steps`` timed steps, seconds of the warm-up steps, compilation included)."""
    t0 = time.perf_counter()
    for _ in range(warmup):
        step()
    _sync(device)
    warm = time.perf_counter() - t0
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(device)
    return batch * steps / (time.perf_counter() - t0), warm


VARIANTS: dict[str, dict[str, bool]] = {
    "fp32": {"bf16": False, "channels_last": False, "compile_model": False},
    "bf16": {"bf16": True, "channels_last": False, "compile_model": False},
    "bf16_channels_last": {"bf16": True, "channels_last": True, "compile_model": False},
    "bf16_channels_last_compile": {"bf16": True, "channels_last": True, "compile_model": True},
}


def bench_train(args: argparse.Namespace, device: torch.device, out: dict[str, Any], peak_gflops: float) -> None:
    """Samples/s of every variant, interleaved at each batch size, larger batches while they help; the compiled
    variant at batch 32 and at the eager variant's best batch (each shape compiles anew)."""
    chunk = int(paper_model(8).pretrained_cfg.chunk_samples)
    flops = train_flops_per_sample(args.width, chunk)
    out["width"], out["chunk_samples"] = args.width, chunk
    out["train_gflop_per_sample"] = round(flops / 1e9, 3)
    rates: dict[str, dict[int, dict[str, Any]]] = {}

    def measure(names: list[str], batch: int) -> dict[str, dict[str, Any]]:
        steps: dict[str, TrainStep] = {}
        for name in names:
            try:
                steps[name] = TrainStep(args.width, device, batch, **VARIANTS[name])
                samples_per_second(steps[name], batch, device, warmup=args.warmup, steps=0)  # compiles here
            except torch.OutOfMemoryError:
                log.info("train %s batch %d: out of memory", name, batch)
                steps.pop(name, None)
        timed = interleave({name: (lambda s=s: samples_per_second(s, batch, device, warmup=0, steps=args.steps)[0])
                            for name, s in steps.items()}, args.repeats)
        if device.type == "cuda":
            torch.cuda.empty_cache()
        got = {name: summary([t.value for t in ts]) for name, ts in timed.items()}
        for name, rate in got.items():
            rates.setdefault(name, {})[batch] = rate
            log.info("train %-28s batch %4d: %8.1f samples/s (median of %d, MFU %.3f)", name, batch, rate["median"],
                     rate["n"], rate["median"] * flops / (peak_gflops * 1e9))
        return got

    eager = [name for name in VARIANTS if not VARIANTS[name]["compile_model"]]
    best = 0.0
    for batch in args.batches:
        got = measure(eager, batch)
        top = max((r["median"] for r in got.values()), default=0.0)
        if not got or (batch != args.batches[0] and top < 1.05 * best):  # a larger batch no longer helps: stop
            break
        best = max(best, top)
    if not args.no_compile:
        cl = rates.get("bf16_channels_last") or {PAPER_BATCH: {"median": 0.0}}
        for batch in sorted({PAPER_BATCH, max(cl, key=lambda b: cl[b]["median"])}):
            measure(["bf16_channels_last_compile"], batch)
    out["samples_per_s"] = {n: {str(b): r for b, r in v.items()} for n, v in rates.items()}
    at_paper = {n: v[PAPER_BATCH] for n, v in rates.items() if PAPER_BATCH in v}
    out["samples_per_s_at_batch_32"] = at_paper
    name, batch, rate = max(((n, b, r) for n, v in rates.items() for b, r in v.items()),
                            key=lambda t: t[2]["median"])
    out["best"] = {"variant": name, "batch": batch, "samples_per_s": rate,
                   "mfu": summary([v * flops / (peak_gflops * 1e9) for v in rate["values"]])}
    out["mfu_at_batch_32"] = {n: summary([v * flops / (peak_gflops * 1e9) for v in r["values"]])
                              for n, r in at_paper.items()}
    out["goal_mfu"], out["meets_goal_mfu"] = GOAL_MFU, out["best"]["mfu"]["median"] >= GOAL_MFU
    out["eval_chunks_per_s_bf16"] = eval_rate(args, device, chunk)


def eval_rate(args: argparse.Namespace, device: torch.device, chunk: int) -> dict[str, Any]:
    """Inference-mode chunks/s at the validation's batch (2 tracks x 16 chunks), bf16 autocast."""
    model = paper_model(args.width).to(device).eval()
    x = 0.1 * torch.randn(2 * VALIDATION_CHUNKS, chunk, device=device)

    def forward() -> None:
        with torch.inference_mode(), torch.autocast(device.type, dtype=torch.bfloat16):
            model(x)

    samples_per_second(forward, len(x), device, warmup=args.warmup, steps=0)
    rates = interleave({"eval": lambda: samples_per_second(forward, len(x), device, warmup=0, steps=args.steps)[0]},
                       args.repeats)
    return summary([t.value for t in rates["eval"]])


# -- data: a real prepared cache, the loader, tagging ---------------------------------------------------------
def focaltag_cli(*argv: str, timeout: float = 600.0) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "focaltag", *argv]
    log.info("$ %s", " ".join(cmd))
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[:3])} exited {done.returncode}: {done.stderr.strip()[-400:]}")
    return done


def synth_dataset(root: Path, tracks: int, max_duration: float) -> Path:
    """``focaltag data synth`` (generated audio in the MTG-Jamendo layout) + ``data prepare``: a real cache."""
    data = root / "synth"
    focaltag_cli("data", "synth", "--out", str(data), "--tracks", str(tracks), "--min-duration", "20",
                 "--max-duration", str(max_duration), "--workers", str(min(8, os.cpu_count() or 1)), "-q")
    focaltag_cli("data", "prepare", "--dataset-dir", str(data), "--part", "train", "-q")
    return data


def bench_loader(args: argparse.Namespace, device: torch.device, data: Path, out: dict[str, Any],
                 best_step: float | None) -> None:
    from torch.utils.data import DataLoader, RandomSampler

    from focaltag.data.torch_dataset import TrainChunkDataset
    from focaltag.training.config import DataConfig
    from focaltag.training.data import load_run_tracks, open_cache

    cfg = DataConfig(dataset_dir=str(data))
    run = load_run_tracks(cfg)
    cache = open_cache(cfg)
    chunk = int(paper_model(8).pretrained_cfg.chunk_samples)

    def one_pass(workers: int) -> float:
        ds = TrainChunkDataset(cache, run.train, run.vocab, chunk, seed=0)
        sampler = RandomSampler(ds, replacement=True, num_samples=args.loader_batches * PAPER_BATCH)
        loader = DataLoader(ds, batch_size=PAPER_BATCH, sampler=sampler, num_workers=workers,
                            pin_memory=device.type == "cuda", persistent_workers=False)
        t0, n = time.perf_counter(), 0
        for i, (x, _) in enumerate(loader):
            if i == 1:  # the first batch pays the workers' start
                t0, n = time.perf_counter(), 0
            x = x.to(device, non_blocking=True)
            n += len(x)
        _sync(device)
        return n / (time.perf_counter() - t0)

    timed = interleave({str(w): (lambda w=w: one_pass(w)) for w in args.loader_workers}, args.repeats)
    rates = {w: summary([t.value for t in ts]) for w, ts in timed.items()}
    for w, r in rates.items():
        log.info("loader %2s workers: %.1f chunks/s (median)", w, r["median"])
    out["train_tracks"], out["chunks_per_s"] = len(run.train), rates
    fastest = max(r["median"] for r in rates.values())
    if best_step:
        out["fastest_train_samples_per_s"] = best_step
        out["loader_vs_fastest_step"] = round(fastest / best_step, 2)
        out["goal"], out["meets_goal"] = GOAL_LOADER_VS_STEP, fastest / best_step >= GOAL_LOADER_VS_STEP


def tag_inputs(data: Path, n: int) -> tuple[list[Path], float]:
    """``n`` generated tracks of the synthetic set plus the shared real recordings; their total seconds."""
    from focaltag.audio.decode import audio_info

    files = sorted((data / "audio").rglob("*.mp3"))[:n]
    if MUSIC.is_dir():
        files += sorted(p for p in MUSIC.iterdir() if p.suffix in {".mp3", ".ogg"})
    return files, sum(audio_info(p).duration for p in files)


def bench_tag(args: argparse.Namespace, device: torch.device, data: Path, root: Path, out: dict[str, Any]) -> None:
    from focaltag.audio.decode import load_audio
    from focaltag.inference.chunking import plan_starts
    from focaltag.models import save_model

    files, seconds = tag_inputs(data, args.tag_tracks)
    model = paper_model(args.width).eval()
    ckpt = save_model(model, root / "paper.pt")
    folder = root / "tag-inputs"
    folder.mkdir()
    for i, f in enumerate(files):
        (folder / f"{i:03d}{f.suffix}").symlink_to(f)
    out["tracks"], out["audio_seconds"] = len(files), round(seconds, 1)
    from concurrent.futures import ThreadPoolExecutor

    chunk = int(model.pretrained_cfg.chunk_samples)
    batch = 16 if device.type == "cuda" else 4
    on_device = model.to(device)
    waves = [load_audio(f) for f in files]
    chunks = torch.from_numpy(np.stack([w[s:s + chunk] for w in waves if len(w) >= chunk
                                        for s in plan_starts(len(w), chunk, n_chunks=16)]))
    del waves

    def whole_process() -> int:
        done = focaltag_cli("tag", str(folder), "-m", str(ckpt), "--device", str(device), "--format", "json",
                            "--thresholds", "none", "-q")
        return len(json.loads(done.stdout))

    def decode_only() -> None:  # as many threads as the tagger's default
        with ThreadPoolExecutor(max_workers=2) as pool:
            list(pool.map(load_audio, files))

    def forward_only() -> None:
        with torch.inference_mode(), torch.autocast(device.type, dtype=torch.bfloat16,
                                                      enabled=device.type == "cuda"):
            for i in range(0, len(chunks), batch):
                on_device(chunks[i:i + batch].to(device))
            _sync(device)

    with torch.inference_mode(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
        on_device(chunks[:batch].to(device))  # warm-up
    timed = interleave({"process": whole_process, "decode": decode_only, "forward": forward_only}, args.repeats)
    walls = {k: [t.wall for t in ts] for k, ts in timed.items()}
    out["whole_process_s"] = summary(walls["process"])
    out["x_real_time"] = summary([seconds / w for w in walls["process"]])
    out["tracks_tagged"] = timed["process"][-1].value
    out["decode_only_s"], out["forward_only_s"] = summary(walls["decode"]), summary(walls["forward"])
    out["chunks"] = len(chunks)
    decode_med, forward_med = out["decode_only_s"]["median"], out["forward_only_s"]["median"]
    out["bottleneck"] = "decoding (CPU)" if decode_med > forward_med else "model"


def recipe_estimate(train: dict[str, Any]) -> dict[str, Any]:
    """Hours for the paper's 200 epochs of split-0 at the measured batch-32 training and validation rates."""
    at_32 = {k: v["median"] for k, v in (train.get("samples_per_s_at_batch_32") or {}).items()}
    if not at_32 or not train.get("eval_chunks_per_s_bf16"):
        return {"error": "no training or validation rate measured"}
    rate = max(at_32.values())
    steps = SPLIT0_TRAIN // PAPER_BATCH
    train_s = steps * PAPER_BATCH / rate
    val_s = SPLIT0_VALIDATION * VALIDATION_CHUNKS / train["eval_chunks_per_s_bf16"]["median"]
    return {"steps_per_epoch": steps, "train_s_per_epoch": round(train_s, 1),
            "validation_s_per_epoch": round(val_s, 1), "epochs": PAPER_EPOCHS,
            "hours_200_epochs": round(PAPER_EPOCHS * (train_s + val_s) / 3600, 2),
            "assumes": "the loader keeps up (see loader) and the best batch-32 variant, at their median rates"}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="auto", help="cuda, cpu or auto (default: auto)")
    p.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "bench-gpu")))
    p.add_argument("--no-compile", action="store_true", help="skip the torch.compile variant")
    p.add_argument("--sections", default="matmul,train,loader,tag,recipe")
    add_protocol_arguments(p, quick="small sizes: the code paths in a couple of minutes")
    args = p.parse_args(argv)
    quick = args.quick
    args.width = 16 if quick else 128
    args.batches = [32, 64] if quick else [32, 64, 128, 256, 512]
    args.warmup, args.steps = (1, 2) if quick else (3, 10)
    args.matmul_size = 512 if quick else 8192
    args.loader_workers = [0, 2] if quick else [1, 4, 8, 15]
    args.loader_batches = 6 if quick else 60
    args.synth_tracks, args.synth_max_s = (30, 25.0) if quick else (120, 120.0)
    args.tag_tracks = 4 if quick else 40
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          "cpu" if args.device == "auto" else args.device)
    args.out.mkdir(parents=True, exist_ok=True)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s",
                        handlers=[logging.StreamHandler(), logging.FileHandler(args.out / "gpu.log", mode="w")])
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True  # what float32 training on Hopper uses
    wanted = set(args.sections.split(","))
    info = machine(device)
    gpu = info.get("gpu")
    run = Run("bench/gpu.py", args, argv=sys.argv[1:] if argv is None else argv,
              device=info if gpu else None,
              kind="cuda-" + "".join(c if c.isalnum() else "-" for c in str(gpu).lower()).strip("-") if gpu else None)
    report: dict[str, Any] = {"date": time.strftime("%Y-%m-%d %H:%M"), "quick": args.quick, "machine": info}
    t_start = time.perf_counter()
    peak = None
    if "matmul" in wanted:
        with section(report, "matmul") as out:
            out["size"] = args.matmul_size
            rates = interleave({
                "bf16": lambda: matmul_gflops(device, torch.bfloat16, args.matmul_size),
                "fp32": lambda: matmul_gflops(device, torch.float32, args.matmul_size // 2)}, args.repeats)
            out["bf16_gflops"] = summary([t.value for t in rates["bf16"]])
            out["fp32_gflops"] = summary([t.value for t in rates["fp32"]])
            peak = out["bf16_gflops"]["median"]
    if "train" in wanted:
        with section(report, "train") as out:
            bench_train(args, device, out, peak or matmul_gflops(device, torch.bfloat16, args.matmul_size))
    with tempfile.TemporaryDirectory(prefix="focaltag-gpu-bench-") as tmp:
        root = Path(tmp)
        data: Path | None = None
        if wanted & {"loader", "tag"}:
            with section(report, "dataset") as out:
                t0 = time.perf_counter()
                data = synth_dataset(root, args.synth_tracks, args.synth_max_s)
                out["synth_and_prepare_s"] = round(time.perf_counter() - t0, 1)
        if "loader" in wanted and data is not None:
            with section(report, "loader") as out:
                best = ((report.get("train") or {}).get("best", {}).get("samples_per_s") or {}).get("median")
                bench_loader(args, device, data, out, best)
        if "tag" in wanted and data is not None:
            with section(report, "tag") as out:
                bench_tag(args, device, data, root, out)
    if "recipe" in wanted and "train" in report:
        report["recipe"] = recipe_estimate(report["train"])
    report["total_seconds"] = round(time.perf_counter() - t_start, 1)
    (args.out / "gpu.json").write_text(json.dumps(report, indent=2) + "\n")
    path = run.finish(report)
    (args.out / path.name).write_text(path.read_text())
    return 0 if not any(isinstance(v, dict) and "error" in v for v in report.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
