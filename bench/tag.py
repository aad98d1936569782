"""Benchmark: whole-track tagging speed per precision, mode and architecture (decoding included), and peak memory.

The six shared real recordings are tagged with 16 chunks per track on 2 CPU threads. Every figure is a ratio to a
**plain float32 decode-and-forward loop** measured in the same run (per track: ``load_audio`` the whole file,
cut the evaluation chunks, one eager float32 forward, mean of sigmoids): on a machine shared with other work the
absolute times move with the load (``load_avg_1min`` before and after), the ratios much less. Modes are timed
round-robin, ``--repeats`` times each, best time kept.

Sections of the JSON:

* ``modes``: the paper's short-chunk ResNet (width 128, random weights with a spread output bias, see
  ``_paper_resnet``: speed does not depend on the weights) through ``Tagger`` in float32 and in bf16 as ``auto``
  runs it on AMX / AVX512-BF16 CPUs (spectrogram-reading layers in float32, close calls under
  ``BF16_RECHECK_MARGIN`` re-checked in float32), with 0, 1 (default) or 2 decoding threads; bf16 with every layer
  in bf16 and no re-check (the precision's raw speed); bf16 with every track re-checked (the re-check's worst
  case). ``--all-modes`` adds channels_last, ``torch.compile`` and onnxruntime (the modes that did not pay off
  and are no longer defaults). Per mode: seconds per track, x real time (audio seconds / wall seconds),
  chunks/s, ``vs_plain_loop``, the largest probability difference to float32, whether every top-5 equals
  float32's and how many bf16 close calls were re-checked in float32.
* ``ceiling``: what the machine allows at most: the network's multiply-accumulates per chunk, the matmul rate of
  every precision the CPU runs natively (the fastest sets the ceiling, so a share of it is at most 1), decoding's CPU seconds, the bf16 forward alone on decoded chunks, and the x real time of a forward at
  the matmul peak plus decoding spread over the threads (``bench_ceiling``).
* ``process``: whole-process wall time of ``focaltag tag --format json`` (imports, model load, decoding, writing)
  per precision against a process running the plain float32 loop; the target is >= 2.5x.
* ``architectures``: x real time in float32, bf16 as ``auto`` runs it and bf16 with every layer in bf16 and no
  re-check, for each catalogue architecture (paper ResNet random init; Won et al.'s FCN, CRNN and Musicnn from
  ``../shared/models/won2020`` when present), with the float32 modules, largest probability differences,
  top-5 agreement and re-checked tracks.
* ``precisions``: fp32, int8, bf16 (only where native) and ``auto`` with and without adaptive chunking, for one
  paper-size ResNet and a four-member ensemble of them (random weights: the usc-sail-2020 weights cannot be fetched
  offline), against the plain float32 loop of the same models (``bench_precisions``).
* ``adaptive``: adaptive chunking against the fixed 16 chunks with Won et al.'s trained FCN and CRNN on the shared
  and generated tracks: agreement of top-5 and decisions, mean chunks, speed-up (``bench_adaptive``).
* ``--emulate-avx2``: oneDNN limited to AVX2 and bf16 treated as not native, in this process and the ``process``
  children; onnxruntime still picks its kernels by CPUID, so its figures stay this CPU's.
* ``rss_*``: a generated 60-minute 44.1 kHz stereo MP3 tagged alone in a fresh process, peak RSS (``VmHWM``)
  next to a process that only loads the model.

Prints one JSON object.

Last measured (2026-12-02, 2 cores with AVX512-BF16 and no AMX, ``--repeats 2``, load 1.0 -> 2.3; this VM's
speed moves by up to 25 % between runs, read ratios within a run): plain loop 159x real time; fp32 352x (2.21x the
loop; batches of 16: 228x); bf16 563x (3.54x; batches of 8 / 16: 567x / 436x; 0 / 1 decoding threads 576x /
537x); plain-bf16 spectrogram layers 603x; every track re-checked 219x; whole process ``tag`` auto 2.27x the plain
process (fp32 1.78x; 1.99-2.52x over the day's runs). ``ceiling``: 3.41 GMAC per chunk, bf16 matmul 836 GFLOP/s,
decoding 1.0 CPU-s, so at most 1,015x; the bf16 forward alone ran 629 GFLOP/s (1,255x without decoding). Targets:
1,000x not met (the CPU's own ceiling is at the target), 2.5x met in one run of four. Architectures, bf16 vs fp32
(with re-checks from kept chunks): ResNet 1.83x, FCN 1.28x, CRNN 1.30x, Musicnn 0.74x (so ``auto`` keeps Musicnn
float32 on CPUs). Peak RSS tagging a 60-minute MP3: 402 MB (model alone 324 MB).

    .venv/bin/python bench/tag.py [--music DIR] [--repeats 2] [--all-modes] [--skip-arch] [--skip-rss]
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("FOCALTAG_SHARED", REPO.parent / "shared"))
MUSIC = SHARED / "data" / "music"
WON2020 = SHARED / "models" / "won2020"
TARGET_X_REALTIME = 1000.0  # issue 17: per paper-size model on a 2-core machine, bf16
TARGET_VS_PLAIN_PROCESS = 2.5  # issue 17: whole-process time against the plain float32 loop
TARGET_RSS_MB = 1024.0


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def _maxrss_mb() -> float:
    """Peak resident memory of this process in MiB (``VmHWM``; ``ru_maxrss`` survives fork + exec)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def synth_tracks(folder: Path, n: int = 3, seconds: float = 240.0) -> list[Path]:
    """Stand-in tracks (44.1 kHz stereo OGG) when the shared recordings are absent."""
    import soundfile as sf

    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        t = np.arange(int(seconds * 44100)) / 44100
        wave = 0.2 * np.sin(2 * np.pi * (220 + 40 * i) * t)[:, None] + 0.05 * rng.standard_normal((len(t), 2))
        path = folder / f"synth-{i}.ogg"
        sf.write(path, wave.astype(np.float32), 44100)
        out.append(path)
    return out


def hour_mp3(path: Path, minutes: int = 60) -> Path:
    """A ``minutes``-long 44.1 kHz stereo CBR MP3: one encoded minute, its header frame dropped, repeated."""
    import soundfile as sf

    sr = 44100
    rng = np.random.default_rng(0)
    t = np.arange(60 * sr) / sr
    wave = 0.2 * np.sin(2 * np.pi * 220 * t)[:, None] + 0.05 * rng.standard_normal((len(t), 2))
    one = path.with_suffix(".minute.mp3")
    with sf.SoundFile(one, "w", sr, 2, format="MP3", bitrate_mode="CONSTANT", compression_level=0.5) as fh:
        fh.write(wave.astype(np.float32))
    data = one.read_bytes()
    bitrate = (0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320)[data[2] >> 4] * 1000
    first = 144 * bitrate // sr + ((data[2] >> 1) & 1)  # the Xing/Info frame (it states one minute's length)
    path.write_bytes(data[first:] * minutes)
    one.unlink()
    return path


# -- the baseline: a plain float32 decode-and-forward loop ----------------------------------------------------
def plain_loop(model, files: list[Path], n_chunks: int) -> dict[str, np.ndarray]:
    """What a user writes without focaltag's tagger: whole decode, evaluation chunks, one float32 forward each."""
    import torch

    from focaltag.audio.chunks import chunk_starts, pad_to
    from focaltag.audio.decode import load_audio

    cfg = model.pretrained_cfg
    out = {}
    for path in files:
        wave = load_audio(path, sr=cfg.sample_rate)
        starts = chunk_starts(len(wave), cfg.chunk_samples, n_chunks)
        batch = np.stack([pad_to(wave[s:s + cfg.chunk_samples], cfg.chunk_samples) for s in starts])
        with torch.inference_mode():
            out[str(path)] = torch.sigmoid(model(torch.from_numpy(batch))).mean(0).numpy()
    return out


def plain_child(argv: list[str]) -> None:
    """``--plain-child CKPT N_CHUNKS FILE...``: the plain loop as a whole process (imports and model load included)."""
    import torch

    from focaltag.models import load_model

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    model = load_model(argv[0]).eval()
    probs = plain_loop(model, [Path(p) for p in argv[2:]], int(argv[1]))
    print(json.dumps({p: [round(float(x), 6) for x in v] for p, v in probs.items()}))


def rss_child(argv: list[str]) -> None:
    """``--rss-child MODEL [FILE]``: load the model (and tag FILE), print peak RSS as JSON."""
    import torch

    torch.set_num_threads(2)
    from focaltag.inference.tagger import Tagger

    t0 = time.perf_counter()
    tagger = Tagger(argv[0])
    result = None
    if len(argv) > 1:
        result = tagger.tag(argv[1])
    print(json.dumps({"maxrss_mb": round(_maxrss_mb(), 1), "seconds": round(time.perf_counter() - t0, 2),
                      "duration_s": None if result is None else round(result.duration, 1)}))


def _child(*args: str) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "2"}
    out = subprocess.run([sys.executable, __file__, "--rss-child", *args], capture_output=True, text=True,
                         env=env, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


# -- timing ------------------------------------------------------------------------------------------------
def _timed(fn: Callable[[], dict[str, np.ndarray]]) -> tuple[float, float, dict[str, np.ndarray]]:
    t0, c0 = time.perf_counter(), time.process_time()
    probs = fn()
    return time.perf_counter() - t0, time.process_time() - c0, probs


def _tagger_run(tagger) -> Callable[[], dict[str, np.ndarray]]:
    def run(files: list[Path]) -> dict[str, np.ndarray]:
        return {r.file: r.as_array() for r in tagger.tag_many(files)}
    return run


def _top5(p: np.ndarray) -> list[int]:
    return list(np.argsort(-p, kind="stable")[:5])


def round_robin(runners: dict[str, Callable[[], dict[str, np.ndarray]]], repeats: int) -> dict[str, dict]:
    """Best wall / CPU seconds of each runner, interleaved so that load changes hit every mode alike."""
    best: dict[str, dict] = {}
    for _ in range(repeats):
        for name, fn in runners.items():
            wall, cpu, probs = _timed(fn)
            if name not in best or wall < best[name]["wall"]:
                best[name] = {"wall": wall, "cpu": min(cpu, best.get(name, {}).get("cpu", cpu)), "probs": probs}
    return best


def _summary(timing: dict, audio_seconds: float, n_chunks_total: int, threads: int, plain_wall: float,
             reference: dict[str, np.ndarray]) -> dict:
    probs = timing["probs"]
    diff = max(float(np.abs(probs[f] - reference[f]).max()) for f in reference)
    return {"s_per_track": round(timing["wall"] / len(reference), 3),
            "x_realtime": round(audio_seconds / timing["wall"], 1),
            "chunks_per_s": round(n_chunks_total / timing["wall"], 1),
            "vs_plain_loop": round(plain_wall / timing["wall"], 2),
            "x_realtime_cpu_bound": round(audio_seconds / (timing["cpu"] / threads), 1),
            "max_abs_diff_vs_fp32": float(f"{diff:.2e}"),
            "top5_equal_fp32": all(_top5(probs[f]) == _top5(reference[f]) for f in reference)}


def _tagger(model, *, fp32_islands: bool = True, **kwargs):
    """A ``Tagger``; ``fp32_islands=False`` runs every layer in bf16 (no per-architecture float32 modules)."""
    from focaltag.inference import precision
    from focaltag.inference.tagger import Tagger

    if fp32_islands:
        return Tagger(model, **kwargs)
    saved = dict(precision.FP32_MODULES)
    precision.FP32_MODULES.clear()
    try:
        return Tagger(model, **kwargs)
    finally:
        precision.FP32_MODULES.update(saved)


def bench_modes(args: argparse.Namespace, model, files: list[Path], audio_seconds: float) -> dict:
    """The paper ResNet through every mode, against the plain loop, round-robin."""
    import torch

    modes: dict[str, dict] = {
        "fp32": dict(precision="fp32"),
        "bf16": dict(precision="bf16"),  # the default on this CPU (``auto``): 2 decoding threads, re-check margin
        "bf16_workers0": dict(precision="bf16", workers=0),  # decoding in the calling thread, no overlap
        "bf16_workers1": dict(precision="bf16", workers=1),
        "bf16_batch4": dict(precision="bf16", batch_size=4),  # activations of a batch in the 32 MB L3
        "bf16_batch8": dict(precision="bf16", batch_size=8),
        "bf16_batch16": dict(precision="bf16", batch_size=16),
        "fp32_batch4": dict(precision="fp32", batch_size=4),
        "fp32_batch16": dict(precision="fp32", batch_size=16),
        "bf16_all_layers_no_recheck": dict(precision="bf16", recheck_margin=0.0, fp32_islands=False),
        # the re-check's worst case: every track recomputed in fp32 (what random weights with equal biases did)
        "bf16_recheck_every_track": dict(precision="bf16", recheck_margin=0.99),
    }
    if args.all_modes:
        modes["fp32_channels_last"] = dict(precision="fp32", optimize="channels_last")
        modes["bf16_channels_last"] = dict(precision="bf16", optimize="channels_last")
        modes["bf16_compile"] = dict(precision="bf16", optimize="compile")
        modes["onnxruntime_fp32"] = dict(runtime="onnx", precision="fp32")
    taggers, setup = {}, {}
    for name, kwargs in modes.items():
        t0 = time.perf_counter()
        net = copy.deepcopy(model)  # channels_last / compile convert the model in place
        kwargs.setdefault("batch_size", args.batch_size)
        taggers[name] = _tagger(net.eval(), n_chunks=args.chunks, **kwargs)
        taggers[name].predict_chunks(np.zeros((taggers[name].batch_size, taggers[name].chunk_samples), np.float32))
        setup[name] = round(time.perf_counter() - t0, 1)
    plain_model = model
    runners = {"plain_fp32_loop": lambda: plain_loop(plain_model, files, args.chunks)}
    runners.update({name: (lambda t=t: _tagger_run(t)(files)) for name, t in taggers.items()})
    torch.manual_seed(0)
    timings = round_robin(runners, args.repeats)
    plain = timings["plain_fp32_loop"]
    reference = timings["fp32"]["probs"]
    n_total = len(files) * args.chunks
    out = {"plain_fp32_loop": {"s_per_track": round(plain["wall"] / len(files), 3),
                               "x_realtime": round(audio_seconds / plain["wall"], 1),
                               "chunks_per_s": round(n_total / plain["wall"], 1)}}
    for name, tagger in taggers.items():
        out[name] = _summary(timings[name], audio_seconds, n_total, args.threads, plain["wall"], reference)
        out[name].update(precision=tagger.precision, workers=tagger.workers, setup_s=setup[name],
                         rechecked_per_run=round(tagger.n_rechecked / args.repeats, 2))
    return out


def bench_process(args: argparse.Namespace, ckpt: Path, files: list[Path]) -> dict:
    """Whole-process wall time: ``focaltag tag`` per precision against the plain loop as a process."""
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    names = [str(p) for p in files]
    focaltag_cmd = [sys.executable, "-m", "focaltag"]
    if args.emulate_avx2:  # the child sees ONEDNN_MAX_CPU_ISA from the environment; bf16 is made non-native here
        focaltag_cmd = [sys.executable, "-c", "import sys; import focaltag.precision as p; "
                        "p.cpu_has_fast_bf16 = lambda *a: False; from focaltag.cli import main; "
                        "sys.exit(main(sys.argv[1:]))"]
    commands = {
        "plain_fp32_loop": [sys.executable, __file__, "--plain-child", str(ckpt), str(args.chunks), *names],
        "focaltag_tag_fp32": [*focaltag_cmd, "tag", *names, "-m", str(ckpt), "--format", "json",
                              "--precision", "fp32", "--chunks", str(args.chunks)],
        "focaltag_tag_auto": [*focaltag_cmd, "tag", *names, "-m", str(ckpt), "--format", "json",
                              "--precision", "auto", "--chunks", str(args.chunks)],
        # the defaults: precision auto and adaptive chunking (--chunks auto)
        "focaltag_tag_default": [*focaltag_cmd, "tag", *names, "-m", str(ckpt), "--format", "json"],
    }
    best: dict[str, float] = {}
    for _ in range(args.repeats):
        for name, cmd in commands.items():
            t0 = time.perf_counter()
            subprocess.run(cmd, capture_output=True, text=True, env=env, check=True)
            best[name] = min(best.get(name, float("inf")), time.perf_counter() - t0)
    out: dict = {f"{k}_s": round(v, 2) for k, v in best.items()}
    for name in ("focaltag_tag_fp32", "focaltag_tag_auto", "focaltag_tag_default"):
        out[f"{name}_vs_plain"] = round(best["plain_fp32_loop"] / best[name], 2)
    out["target_vs_plain"] = TARGET_VS_PLAIN_PROCESS
    out["meets_target"] = out["focaltag_tag_default_vs_plain"] >= TARGET_VS_PLAIN_PROCESS
    return out


def _paper_resnet(seed: int = 0):
    """The paper's ResNet, random weights, output bias spread (tag i: -0.5 i).

    Speed does not depend on the weights, but the bf16 close-call re-check does: with random weights and equal
    biases every tag's probability is ~0.5 and every track's top-5 a near-tie, which trained models are not
    (their top-5 gaps are mostly 1e-3 to 1e-1). The spread bias gives top-5 gaps of trained size.
    """
    import torch

    from focaltag.models import create_model

    torch.manual_seed(seed)
    model = create_model("short_chunk_resnet").eval()
    model.set_output_bias(-0.5 * torch.arange(model.n_tags, dtype=torch.float32))
    return model


def _architectures() -> dict[str, Callable[[], object]]:
    """Model builders per catalogue architecture (random-init ResNet; trained Won et al. files when present)."""
    from focaltag.models import load_model

    archs: dict[str, Callable[[], object]] = {"short_chunk_resnet (paper, random init)": _paper_resnet}
    tags_file = WON2020 / "tags-jamendo-top50.txt"
    for arch in ("fcn", "crnn", "musicnn"):
        path = WON2020 / f"jamendo-{arch}.pth"
        if path.is_file() and tags_file.is_file():
            tags = [t.strip() for t in tags_file.read_text().splitlines() if t.strip()]
            archs[f"{arch} (won2020 jamendo)"] = lambda p=path, t=tags: load_model(p, tag_names=t).eval()
    return archs


def bench_architectures(args: argparse.Namespace, files: list[Path], audio_seconds: float) -> dict:
    from focaltag.inference.tagger import Tagger

    out = {}
    for name, build in _architectures().items():
        model = build()
        fp32 = Tagger(model, n_chunks=args.chunks, batch_size=args.batch_size, precision="fp32")
        bf16 = Tagger(model, n_chunks=args.chunks, batch_size=args.batch_size, precision="bf16")
        raw = _tagger(copy.deepcopy(model), n_chunks=args.chunks, batch_size=args.batch_size, precision="bf16",
                      recheck_margin=0.0, fp32_islands=False)
        timings = round_robin({"fp32": lambda t=fp32: _tagger_run(t)(files),
                               "bf16": lambda t=bf16: _tagger_run(t)(files),
                               "bf16_all_no_recheck": lambda t=raw: _tagger_run(t)(files)}, args.arch_repeats)
        ref = timings["fp32"]["probs"]
        low = timings["bf16_all_no_recheck"]["probs"]
        checked = timings["bf16"]["probs"]
        cfg = model.pretrained_cfg
        wall = {k: v["wall"] for k, v in timings.items()}
        out[name] = {"chunk_seconds": round(cfg.chunk_samples / cfg.sample_rate, 2),
                     "params_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 2),
                     "fp32_x_realtime": round(audio_seconds / wall["fp32"], 1),
                     "bf16_x_realtime": round(audio_seconds / wall["bf16"], 1),
                     "bf16_all_no_recheck_x_realtime": round(audio_seconds / wall["bf16_all_no_recheck"], 1),
                     "bf16_vs_fp32": round(wall["fp32"] / wall["bf16"], 2),
                     "bf16_all_no_recheck_vs_fp32": round(wall["fp32"] / wall["bf16_all_no_recheck"], 2),
                     "fp32_chunks_per_s": round(len(files) * args.chunks / wall["fp32"], 1),
                     "bf16_all_no_recheck_chunks_per_s": round(len(files) * args.chunks / wall["bf16_all_no_recheck"], 1),
                     "bf16_fp32_modules": list(getattr(bf16.members[0], "fp32_modules", ())),
                     "bf16_max_abs_diff": float(f"{max(np.abs(checked[f] - ref[f]).max() for f in ref):.2e}"),
                     "bf16_rechecked_tracks_per_run": round(bf16.n_rechecked / args.arch_repeats, 2),
                     "bf16_all_no_recheck_max_abs_diff": float(f"{max(np.abs(low[f] - ref[f]).max() for f in ref):.2e}"),
                     "bf16_all_no_recheck_top5_equal": all(_top5(low[f]) == _top5(ref[f]) for f in ref),
                     "bf16_top5_equal": all(_top5(checked[f]) == _top5(ref[f]) for f in ref)}
    return out


def _run_counting(tagger, files: list[Path], used: list[int]) -> dict[str, np.ndarray]:
    out = {}
    for r in tagger.tag_many(files):
        out[r.file] = r.as_array()
        used.append(r.chunks_used)
    return out


def bench_precisions(args: argparse.Namespace, files: list[Path], audio_seconds: float) -> dict:
    """fp32, int8, bf16 (only where native) and adaptive chunking for one paper-size model and for the default
    ensemble's shape: four paper-size ResNets with random weights (the usc-sail-2020 weights cannot be fetched
    offline; speed does not depend on the weights, the int8 error and re-check rate do). Fixed 16 chunks unless
    the mode says ``adaptive``; ``auto_adaptive`` is what ``focaltag tag`` runs by default."""
    from focaltag.inference.tagger import Tagger
    from focaltag.precision import cpu_has_fast_bf16

    out: dict = {}
    shapes = {"one_model": [_paper_resnet()], "ensemble_4": [_paper_resnet(seed) for seed in range(4)]}
    for label, models in shapes.items():
        modes: dict[str, dict] = {"fp32": dict(precision="fp32"), "int8": dict(precision="int8")}
        if cpu_has_fast_bf16():
            modes["bf16"] = dict(precision="bf16")
        modes["auto"] = dict(precision="auto")
        modes["auto_adaptive"] = dict(precision="auto", adaptive=True)
        modes["fp32_adaptive"] = dict(precision="fp32", adaptive=True)
        taggers = {name: Tagger(models if len(models) > 1 else models[0], n_chunks=16, batch_size=args.batch_size,
                                **kw) for name, kw in modes.items()}
        used: dict[str, list[int]] = {name: [] for name in taggers}
        runners = {"plain_fp32_loop": lambda m=models: _plain_mean(m, files)}
        runners.update({name: (lambda t=t, u=used[name]: _run_counting(t, files, u)) for name, t in taggers.items()})
        timings = round_robin(runners, args.repeats)
        ref, plain = timings["fp32"]["probs"], timings["plain_fp32_loop"]["wall"]
        section: dict = {"members": len(models),
                         "plain_fp32_loop_x_realtime": round(audio_seconds / plain, 1)}
        for name, tagger in taggers.items():
            probs, wall = timings[name]["probs"], timings[name]["wall"]
            section[name] = {
                "precision": tagger.precision, "x_realtime": round(audio_seconds / wall, 1),
                "vs_fp32_tagger": round(timings["fp32"]["wall"] / wall, 2), "vs_plain_loop": round(plain / wall, 2),
                "max_abs_diff_vs_fp32": float(f"{max(np.abs(probs[f] - ref[f]).max() for f in ref):.2e}"),
                "top5_equal_fp32": sum(_top5(probs[f]) == _top5(ref[f]) for f in ref),
                "tracks": len(ref), "mean_chunks": round(float(np.mean(used[name])), 2),
                "rechecked_per_run": round(tagger.n_rechecked / args.repeats, 2)}
        out[label] = section
    return out


def _plain_mean(models: list, files: list[Path]) -> dict[str, np.ndarray]:
    runs = [plain_loop(m, files, 16) for m in models]
    return {f: np.mean([r[f] for r in runs], axis=0) for f in runs[0]}


def bench_adaptive(args: argparse.Namespace, files: list[Path], tmp: Path) -> dict:
    """Adaptive chunking against the fixed 16 chunks, with Won et al.'s trained Jamendo FCN and CRNN (onnxruntime
    float32, so only the chunking differs) on the shared recordings plus generated tracks: the share of tracks
    whose top-5 (and decisions at a 0.1 threshold) equal the 16-chunk result, the mean chunks and the speed-up."""
    import soundfile as sf

    from focaltag.data.synth import render_tracks
    from focaltag.inference.onnx_model import write_onnx
    from focaltag.inference.tagger import Tagger
    from focaltag.models import load_model
    from focaltag.models.meta import model_meta

    tags_file = WON2020 / "tags-jamendo-top50.txt"
    if not tags_file.is_file():
        return {"skipped": f"{WON2020} absent"}
    generated = []
    for i, wave in enumerate(render_tracks(args.generated, seed=7, sample_rate=16000, duration=120.0)):
        generated.append(tmp / f"generated-{i}.wav")
        sf.write(generated[-1], wave, 16000)
    tracks = [*files, *generated]
    tags = [t.strip() for t in tags_file.read_text().splitlines() if t.strip()]
    out: dict = {"tracks_shared": len(files), "tracks_generated": len(generated)}
    for arch in ("fcn", "crnn"):
        model = load_model(WON2020 / f"jamendo-{arch}.pth", tag_names=tags).eval()
        onnx_file = tmp / f"{arch}.onnx"
        write_onnx([model], [1.0], model_meta(model), onnx_file)
        for rule in ("top5", "decisions"):
            thr = 0.1 if rule == "decisions" else None
            fixed = Tagger(onnx_file, runtime="onnx", precision="fp32", thresholds=thr)
            adaptive = Tagger(onnx_file, runtime="onnx", precision="fp32", thresholds=thr, adaptive=True)
            t0 = time.perf_counter()
            ref = list(fixed.tag_many(tracks))
            t_fixed = time.perf_counter() - t0
            t0 = time.perf_counter()
            got = list(adaptive.tag_many(tracks))
            t_adaptive = time.perf_counter() - t0
            same_top = [[t for t, _ in a.top] == [t for t, _ in b.top] for a, b in zip(got, ref, strict=True)]
            same_dec = [a.decisions == b.decisions for a, b in zip(got, ref, strict=True)]
            out[f"{arch}_{rule}"] = {
                "top5_equal_share": round(float(np.mean(same_top)), 3),
                "decisions_equal_share": round(float(np.mean(same_dec)), 3) if thr is not None else None,
                "decision_agreement_per_tag": round(float(np.mean([
                    a.decisions[k] == b.decisions[k] for a, b in zip(got, ref, strict=True) for k in a.decisions
                ])), 4) if thr is not None else None,
                "mean_chunks": round(float(np.mean([r.chunks_used for r in got])), 2),
                "speedup": round(t_fixed / t_adaptive, 2)}
    return out


def _macs_per_chunk(model) -> float:
    """Multiply-accumulates of one chunk's forward, counted from the convolution and linear layers' shapes."""
    import torch
    from torch import nn

    total = [0]

    def count(mod, args, out) -> None:
        if isinstance(mod, (nn.Conv1d, nn.Conv2d)):
            kernel = int(np.prod(mod.kernel_size))
            total[0] += out[0].numel() * mod.in_channels // mod.groups * kernel
        elif isinstance(mod, nn.Linear):
            total[0] += mod.in_features * mod.out_features

    handles = [m.register_forward_hook(count) for m in model.modules() if isinstance(m, (nn.Conv1d, nn.Conv2d,
                                                                                              nn.Linear))]
    try:
        with torch.inference_mode():
            model(torch.zeros(1, model.pretrained_cfg.chunk_samples))
    finally:
        for handle in handles:
            handle.remove()
    return float(total[0])


def _gemm_gflops(dtype_name: str, size: int = 2048, repeats: int = 5) -> float:
    """Best-of GFLOP/s of a square matmul on this process's threads: the machine's practical ceiling."""
    import torch

    dtype = getattr(torch, dtype_name)
    a, b = torch.randn(size, size).to(dtype), torch.randn(size, size).to(dtype)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t0)
    return 2 * size ** 3 / best / 1e9


def _int8_gops(size: int = 2048, repeats: int = 5) -> float | None:
    """Best-of GOP/s of a square int8 matmul through onnxruntime (MLAS picks VNNI / AVX2 kernels by CPUID)."""
    try:
        import onnx
        import onnxruntime as ort
        from onnx import TensorProto, helper
    except ImportError:
        return None
    graph = helper.make_graph([helper.make_node("MatMulInteger", ["a", "b"], ["y"])], "mm",
                              [helper.make_tensor_value_info("a", TensorProto.UINT8, [size, size]),
                               helper.make_tensor_value_info("b", TensorProto.INT8, [size, size])],
                              [helper.make_tensor_value_info("y", TensorProto.INT32, [size, size])])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    options = ort.SessionOptions()
    options.intra_op_num_threads = int(os.environ.get("OMP_NUM_THREADS", "2"))
    session = ort.InferenceSession(proto.SerializeToString(), options, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    feed = {"a": rng.integers(0, 255, (size, size), dtype=np.uint8),
            "b": rng.integers(-127, 127, (size, size), dtype=np.int8)}
    session.run(None, feed)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        session.run(None, feed)
        best = min(best, time.perf_counter() - t0)
    del onnx
    return 2 * size ** 3 / best / 1e9


def native_peaks() -> dict[str, float]:
    """Matmul peak (G op/s) of every precision this CPU runs natively: fp32 always, bf16 only with AVX512-BF16 /
    AMX (elsewhere it is emulated and not a ceiling), int8 where onnxruntime is installed."""
    from focaltag.precision import cpu_has_fast_bf16

    peaks = {"fp32": _gemm_gflops("float32")}
    if cpu_has_fast_bf16():
        peaks["bf16"] = _gemm_gflops("bfloat16")
    int8 = _int8_gops()
    if int8 is not None:
        peaks["int8"] = int8
    return peaks


def bench_ceiling(args: argparse.Namespace, model, files: list[Path], audio_seconds: float,
                  modes: dict) -> dict:
    """What this machine allows at most: the forward at the fastest native precision's matmul peak plus decoding.

    ``wall >= 2 * MACs * chunks / peak + decode_cpu / threads``: every multiply-accumulate of the network at the
    speed of a large matmul in the fastest precision this CPU runs natively (:func:`native_peaks`; no convolution
    reaches it), and decoding spread over the threads with perfect overlap. So every mode's share of it is at most
    1. The measured parts: decoding alone (the tagger's reader, CPU seconds) and the bf16 forward alone on
    already-decoded chunks.
    """
    from focaltag.inference.chunking import iter_chunks
    from focaltag.inference.tagger import Tagger

    tagger = Tagger(model, n_chunks=args.chunks, batch_size=args.batch_size, precision="bf16", recheck_margin=0.0)
    c0 = time.process_time()
    chunks = [np.stack([c for _, c in sorted(iter_chunks(tagger.plan(p)), key=lambda pair: pair[0])])
              for p in files]
    decode_cpu = time.process_time() - c0
    every = np.concatenate(chunks)
    tagger.predict_chunks(every[: tagger.batch_size])
    forward = float("inf")
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        tagger.predict_chunks(every)
        forward = min(forward, time.perf_counter() - t0)
    macs = _macs_per_chunk(model)
    peaks = native_peaks()
    fastest = max(peaks, key=lambda k: peaks[k])
    peak = peaks[fastest]
    bound = 2 * macs * len(every) / (peak * 1e9) + decode_cpu / args.threads
    best = max(v["x_realtime"] for k, v in modes.items() if k != "plain_fp32_loop")
    return {"gmacs_per_chunk": round(macs / 1e9, 3), "chunks": int(len(every)),
            "native_matmul_gops": {k: round(v, 1) for k, v in peaks.items()}, "ceiling_precision": fastest,
            "decode_cpu_s": round(decode_cpu, 3), "forward_bf16_s": round(forward, 3),
            "forward_bf16_gflops": round(2 * macs * len(every) / forward / 1e9, 1),
            "forward_only_x_realtime": round(audio_seconds / forward, 1),
            "ceiling_wall_s": round(bound, 3), "ceiling_x_realtime": round(audio_seconds / bound, 1),
            "best_mode_share_of_ceiling": round(best / (audio_seconds / bound), 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--music", type=Path, default=MUSIC, help="folder of real tracks")
    parser.add_argument("--chunks", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=None,
                        help="chunks per forward pass (default: the Tagger's, 4 on CPU)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2, help="round-robin repeats of the mode comparison")
    parser.add_argument("--arch-repeats", type=int, default=1, help="repeats per architecture")
    parser.add_argument("--all-modes", action="store_true",
                        help="also channels_last, torch.compile (~1 min compilation) and onnxruntime")
    parser.add_argument("--skip-process", action="store_true", help="skip the whole-process comparison")
    parser.add_argument("--skip-arch", action="store_true", help="skip the per-architecture section")
    parser.add_argument("--skip-rss", action="store_true")
    parser.add_argument("--emulate-avx2", action="store_true",
                        help="approximate an AVX2-only CPU: oneDNN limited to AVX2 (ONEDNN_MAX_CPU_ISA) and bf16 "
                        "treated as not native; onnxruntime still picks its kernels by CPUID (VNNI where present), "
                        "so its figures are this CPU's, not an AVX2 CPU's")
    parser.add_argument("--only-precisions", action="store_true",
                        help="only the precision / adaptive-chunking sections (and the ceiling)")
    parser.add_argument("--generated", type=int, default=12, help="generated tracks in the adaptive section")
    parser.add_argument("--rss-child", nargs="+", help=argparse.SUPPRESS)
    parser.add_argument("--plain-child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.rss_child:
        rss_child(args.rss_child)
        return
    if args.plain_child:
        plain_child(args.plain_child)
        return

    if args.emulate_avx2:
        os.environ["ONEDNN_MAX_CPU_ISA"] = "AVX2"  # read when torch loads oneDNN: before the import below
    import soundfile as sf
    import torch

    torch.set_num_threads(args.threads)
    if args.emulate_avx2:
        from focaltag import precision as _precision

        _precision.cpu_has_fast_bf16 = lambda *a: False  # type: ignore[assignment]
    from focaltag.inference.chunking import iter_chunks
    from focaltag.inference.tagger import Tagger
    from focaltag.models import save_model
    from focaltag.precision import cpu_has_fast_bf16

    tmp = Path(tempfile.mkdtemp(prefix="focaltag-bench-tag-"))
    files = sorted(p for p in args.music.glob("*") if p.suffix.lower() in (".mp3", ".ogg", ".flac", ".wav"))
    source = str(args.music)
    if not files:
        files, source = synth_tracks(tmp), "synthetic (shared music absent)"
    audio_seconds = sum(sf.info(str(p)).duration for p in files)

    model = _paper_resnet()
    ckpt = save_model(model, tmp / "paper.pt")
    report: dict = {"bench": "tag", "model": "short_chunk_resnet paper width=128 (random init)",
                    "params_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 2),
                    "threads": args.threads, "cpu_count": os.cpu_count(), "cpu_fast_bf16": cpu_has_fast_bf16(),
                    "emulated_avx2": args.emulate_avx2, "cpu": _cpu_name(),
                    "load_avg_1min_before": round(os.getloadavg()[0], 2),
                    "python": platform.python_version(), "torch": torch.__version__, "tracks": len(files),
                    "source": source, "audio_seconds": round(audio_seconds, 1), "chunks_per_track": args.chunks,
                    "batch_size": args.batch_size, "repeats": args.repeats}

    if args.only_precisions:
        if not args.skip_process:
            report["process"] = bench_process(args, ckpt, files)
        report["precisions"] = bench_precisions(args, files, audio_seconds)
        report["adaptive"] = bench_adaptive(args, files, tmp)
        report["load_avg_1min_after"] = round(os.getloadavg()[0], 2)
        shutil.rmtree(tmp, ignore_errors=True)
        print(json.dumps(report))
        return

    probe = Tagger(model, n_chunks=args.chunks)  # the chunk reader alone: seek (only the chunks) vs stream (all)
    for method in ("seek", "stream"):
        t0 = time.perf_counter()
        for path in files:
            for _ in iter_chunks(probe.plan(path), method=method):
                pass
        report[f"read_{method}_s_per_track"] = round((time.perf_counter() - t0) / len(files), 3)

    modes = bench_modes(args, model, files, audio_seconds)
    report["modes"] = modes
    tagger_modes = {k: v for k, v in modes.items() if k != "plain_fp32_loop"}
    best = max(tagger_modes, key=lambda k: tagger_modes[k]["x_realtime"])
    report["best_mode"] = best
    report["best_x_realtime"] = modes[best]["x_realtime"]
    report["best_vs_plain_loop"] = modes[best]["vs_plain_loop"]
    report["bf16_vs_fp32_tagger"] = round(modes["bf16"]["x_realtime"] / modes["fp32"]["x_realtime"], 2)
    report["target_x_realtime"] = TARGET_X_REALTIME
    report["meets_speed_target"] = modes[best]["x_realtime"] >= TARGET_X_REALTIME
    report["best_x_realtime_cpu_bound"] = max(m["x_realtime_cpu_bound"] for m in tagger_modes.values())

    report["ceiling"] = bench_ceiling(args, model, files, audio_seconds, modes)
    report["precisions"] = bench_precisions(args, files, audio_seconds)
    report["adaptive"] = bench_adaptive(args, files, tmp)
    if not args.skip_process:
        report["process"] = bench_process(args, ckpt, files)
    if not args.skip_arch:
        report["architectures"] = bench_architectures(args, files, audio_seconds)
    if not args.skip_rss:
        t0 = time.perf_counter()
        hour = hour_mp3(tmp / "hour.mp3")
        report["hour_mp3_make_s"] = round(time.perf_counter() - t0, 1)
        floor = _child(str(ckpt))
        tagged = _child(str(ckpt), str(hour))
        report["rss_60min_mp3_mb"] = tagged["maxrss_mb"]
        report["rss_60min_seconds"] = tagged["seconds"]
        report["rss_60min_duration_s"] = tagged["duration_s"]
        report["rss_model_only_mb"] = floor["maxrss_mb"]
        report["rss_target_mb"] = TARGET_RSS_MB
        report["meets_rss_target"] = tagged["maxrss_mb"] < TARGET_RSS_MB
    report["load_avg_1min_after"] = round(os.getloadavg()[0], 2)
    shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps(report))


if __name__ == "__main__":
    main()
