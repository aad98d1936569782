"""Benchmark: whole-track tagging speed per precision, mode and architecture (decoding included), and peak memory.

The six shared real recordings are tagged with 16 chunks per track on 2 CPU threads. Every figure is a ratio to a
**plain float32 decode-and-forward loop** measured in the same run (per track: ``load_audio`` the whole file,
cut the evaluation chunks, one eager float32 forward, mean of sigmoids): on a machine shared with other work the
absolute times move with the load, the ratios much less. Every comparison runs interleaved, ``--repeats`` rounds
(``bench/_protocol.py``: A B C, A B C, ...); each figure is the median [min-max] of the rounds and each ratio is
taken within a round. Writes ``bench/results/<date>_tag_<cpu kind>.json`` (``tag-emulate-avx2`` with
``--emulate-avx2``) with the run record (CPU, flags, onnxruntime's int8 kernel level, load before and after).

Sections (``--sections``, default all):

* ``modes``: the paper's short-chunk ResNet (width 128, random weights with a spread output bias, see
  ``_paper_resnet``: speed does not depend on the weights) through ``Tagger`` in float32 and in bf16 as ``auto``
  runs it where it takes bf16 (spectrogram-reading layers in float32, close calls under
  the architecture's bf16 re-check margin re-checked in float32), with 0, 1 (default) or 2 decoding threads; bf16 with every layer
  in bf16 and no re-check (the precision's raw speed); bf16 with every track re-checked (the re-check's worst
  case). ``--all-modes`` adds channels_last, ``torch.compile`` and onnxruntime (the modes that did not pay off
  and are no longer defaults). Per mode: seconds per track, x real time (audio seconds / wall seconds),
  chunks/s, ``vs_plain_loop``, the largest probability difference to float32, whether every top-5 equals
  float32's and how many bf16 close calls were re-checked in float32. Also the chunk reader alone (seek / stream).
* ``ceiling``: what the machine allows at most: the network's multiply-accumulates per chunk, the matmul rate of
  every precision the CPU runs natively (the fastest sets the ceiling, so a share of it is at most 1), decoding's
  CPU seconds, the bf16 forward alone on decoded chunks, and the x real time of a forward at the matmul peak plus
  decoding spread over the threads (``bench_ceiling``).
* ``process``: whole-process wall time of ``focaltag tag --format json`` (imports, model load, decoding, writing)
  per precision against a process running the plain float32 loop; the target is a ratio of at least
  ``TARGET_VS_PLAIN_PROCESS``.
* ``architectures``: x real time in float32, bf16 as ``auto`` runs it where it takes bf16 and bf16 with every layer in bf16 and no
  re-check, for each catalogue architecture (paper ResNet random init; Won et al.'s FCN, CRNN and Musicnn from
  ``../shared/models/won2020`` when present), with the float32 modules, largest probability differences,
  top-5 agreement and re-checked tracks.
* ``precisions``: fp32, int8, bf16 (only where native) and ``auto`` with and without adaptive chunking, for one
  paper-size ResNet and a four-member ensemble of them (random weights: the usc-sail-2020 weights cannot be fetched
  offline), against the plain float32 loop of the same models (``bench_precisions``).
* ``adaptive``: adaptive chunking against the fixed 16 chunks with Won et al.'s trained FCN and CRNN on the shared
  and generated tracks: agreement of top-5 and decisions, mean chunks, speed-up (``bench_adaptive``).
* ``rss``: a generated 60-minute 44.1 kHz stereo MP3 tagged alone in a fresh process, peak RSS (``VmHWM``)
  next to a process that only loads the model.

``--emulate-avx2``: oneDNN limited to AVX2 and bf16 treated as not native, in this process and the ``process``
children. onnxruntime still picks its kernels by CPUID, so its figures (int8) stay this CPU's: the emulation does
not cover onnxruntime, and the results file says so (``emulated``, ``emulation_note``).

    .venv/bin/python bench/tag.py [--music DIR] [--repeats 3] [--sections ...] [--tracks N] [--all-modes] [--quick]
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from _protocol import Run, Timing, add_protocol_arguments, interleave, rate_summary, ratio_summary, summary

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("FOCALTAG_SHARED", REPO.parent / "shared"))
MUSIC = SHARED / "data" / "music"
WON2020 = SHARED / "models" / "won2020"
TARGET_X_REALTIME = 1000.0  # issue 17: per paper-size model on a 2-core machine, bf16
TARGET_VS_PLAIN_PROCESS = 2.5  # issue 17: whole-process time against the plain float32 loop
TARGET_RSS_MB = 1024.0
SECTIONS = ("modes", "ceiling", "precisions", "adaptive", "process", "architectures", "rss")
ONLY_PRECISIONS = ("precisions", "adaptive", "process")


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
def round_robin(runners: dict[str, Callable[[], dict[str, np.ndarray]]], repeats: int) -> dict[str, list[Timing]]:
    """Every runner once per round, ``repeats`` rounds (``bench/_protocol.py``), so that load changes hit every
    mode alike; each runner's timings in round order (``.value``: its probabilities)."""
    return interleave(runners, repeats)


def _walls(timings: list[Timing]) -> list[float]:
    return [t.wall for t in timings]


def _max_diff(probs: dict[str, np.ndarray], reference: dict[str, np.ndarray]) -> float:
    return float(f"{max(float(np.abs(probs[f] - reference[f]).max()) for f in reference):.2e}")


def _summary(timings: list[Timing], audio_seconds: float, n_chunks_total: int, threads: int,
             plain_walls: list[float], reference: dict[str, np.ndarray]) -> dict:
    walls = _walls(timings)
    probs = timings[-1].value
    return {"s_per_track": summary([w / len(reference) for w in walls]),
            "x_realtime": rate_summary(audio_seconds, walls),
            "chunks_per_s": rate_summary(n_chunks_total, walls),
            "vs_plain_loop": ratio_summary(plain_walls, walls),
            "x_realtime_cpu_bound": summary([audio_seconds / (t.cpu / threads) for t in timings]),
            "max_abs_diff_vs_fp32": _max_diff(probs, reference),
            "top5_equal_fp32": all(_top5(probs[f]) == _top5(reference[f]) for f in reference)}


def _tagger_run(tagger) -> Callable[[], dict[str, np.ndarray]]:
    def run(files: list[Path]) -> dict[str, np.ndarray]:
        return {r.file: r.as_array() for r in tagger.tag_many(files)}
    return run


def _top5(p: np.ndarray) -> list[int]:
    return list(np.argsort(-p, kind="stable")[:5])


def _tagger(model, *, fp32_islands: bool = True, **kwargs):
    """A ``Tagger`` with these options; ``fp32_islands=False`` runs every layer in bf16 (the architecture's
    ``RuntimeFacts.fp32_modules`` emptied while it loads)."""
    import dataclasses

    from focaltag.inference import InferenceOptions
    from focaltag.inference.tagger import Tagger
    from focaltag.models.facts import runtime_facts

    if fp32_islands or not hasattr(model, "state_dict"):
        return Tagger(model, InferenceOptions(**kwargs))
    cls = type(model)
    saved = cls.__dict__.get("runtime_facts")
    cls.runtime_facts = dataclasses.replace(runtime_facts(model), fp32_modules=())
    try:
        return Tagger(model, InferenceOptions(**kwargs))
    finally:
        if saved is None:
            del cls.runtime_facts
        else:
            cls.runtime_facts = saved


def bench_modes(args: argparse.Namespace, model, files: list[Path], audio_seconds: float) -> dict:
    """The paper ResNet through every mode, against the plain loop, interleaved."""
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
    plain = _walls(timings["plain_fp32_loop"])
    reference = timings["fp32"][-1].value
    n_total = len(files) * args.chunks
    out = {"plain_fp32_loop": {"s_per_track": summary([w / len(files) for w in plain]),
                               "x_realtime": rate_summary(audio_seconds, plain),
                               "chunks_per_s": rate_summary(n_total, plain)}}
    for name, tagger in taggers.items():
        out[name] = _summary(timings[name], audio_seconds, n_total, args.threads, plain, reference)
        out[name].update(precision=tagger.precision, workers=tagger.workers, setup_s=setup[name],
                         rechecked_per_run=round(tagger.n_rechecked / args.repeats, 2))
    return out


def bench_read(args: argparse.Namespace, model, files: list[Path]) -> dict:
    """The chunk reader alone: seek (only the chunks) against stream (the whole file), seconds per track."""
    from focaltag.inference.chunking import iter_chunks

    probe = _tagger(model, n_chunks=args.chunks)

    def read(method: str) -> None:
        for path in files:
            for _ in iter_chunks(probe.plan(path), method=method):
                pass

    timings = interleave({m: (lambda m=m: read(m)) for m in ("seek", "stream")}, args.repeats)
    return {f"{m}_s_per_track": summary([w / len(files) for w in _walls(ts)]) for m, ts in timings.items()}


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
    timings = interleave({name: (lambda cmd=cmd: subprocess.run(cmd, capture_output=True, text=True, env=env,
                                                                 check=True))
                          for name, cmd in commands.items()}, args.repeats)
    walls = {name: _walls(ts) for name, ts in timings.items()}
    out: dict = {f"{k}_s": summary(v) for k, v in walls.items()}
    for name in ("focaltag_tag_fp32", "focaltag_tag_auto", "focaltag_tag_default"):
        out[f"{name}_vs_plain"] = ratio_summary(walls["plain_fp32_loop"], walls[name])
    out["target_vs_plain"] = TARGET_VS_PLAIN_PROCESS
    out["meets_target"] = out["focaltag_tag_default_vs_plain"]["median"] >= TARGET_VS_PLAIN_PROCESS
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

    out = {}
    for name, build in _architectures().items():
        model = build()
        fp32 = _tagger(model, n_chunks=args.chunks, batch_size=args.batch_size, precision="fp32")
        bf16 = _tagger(model, n_chunks=args.chunks, batch_size=args.batch_size, precision="bf16")
        raw = _tagger(copy.deepcopy(model), n_chunks=args.chunks, batch_size=args.batch_size, precision="bf16",
                      recheck_margin=0.0, fp32_islands=False)
        timings = round_robin({"fp32": lambda t=fp32: _tagger_run(t)(files),
                               "bf16": lambda t=bf16: _tagger_run(t)(files),
                               "bf16_all_no_recheck": lambda t=raw: _tagger_run(t)(files)}, args.repeats)
        ref = timings["fp32"][-1].value
        low = timings["bf16_all_no_recheck"][-1].value
        checked = timings["bf16"][-1].value
        cfg = model.pretrained_cfg
        wall = {k: _walls(v) for k, v in timings.items()}
        n_chunks = len(files) * args.chunks
        out[name] = {"chunk_seconds": round(cfg.chunk_samples / cfg.sample_rate, 2),
                     "params_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 2),
                     "fp32_x_realtime": rate_summary(audio_seconds, wall["fp32"]),
                     "bf16_x_realtime": rate_summary(audio_seconds, wall["bf16"]),
                     "bf16_all_no_recheck_x_realtime": rate_summary(audio_seconds, wall["bf16_all_no_recheck"]),
                     "bf16_vs_fp32": ratio_summary(wall["fp32"], wall["bf16"]),
                     "bf16_all_no_recheck_vs_fp32": ratio_summary(wall["fp32"], wall["bf16_all_no_recheck"]),
                     "fp32_chunks_per_s": rate_summary(n_chunks, wall["fp32"]),
                     "bf16_all_no_recheck_chunks_per_s": rate_summary(n_chunks, wall["bf16_all_no_recheck"]),
                     "bf16_fp32_modules": list(getattr(bf16.members[0], "fp32_modules", ())),
                     "bf16_max_abs_diff": _max_diff(checked, ref),
                     "bf16_rechecked_tracks_per_run": round(bf16.n_rechecked / args.repeats, 2),
                     "bf16_all_no_recheck_max_abs_diff": _max_diff(low, ref),
                     "bf16_all_no_recheck_top5_equal": all(_top5(low[f]) == _top5(ref[f]) for f in ref),
                     "bf16_top5_equal": all(_top5(checked[f]) == _top5(ref[f]) for f in ref)}
    return out


def _bf16_instructions() -> bool:
    """bf16 rows wherever the CPU has bf16 instructions (AMX / AVX512-BF16), whether or not ``auto`` takes bf16
    there (it does not where bf16 measured slower than float32: these rows show it); none under --emulate-avx2."""
    from focaltag import precision

    if os.environ.get("ONEDNN_MAX_CPU_ISA") == "AVX2":
        return False
    return precision.cpu_has_fast_bf16() or precision.cpu_has_bf16_instructions()


def _run_counting(tagger, files: list[Path], used: list[int]) -> dict[str, np.ndarray]:
    out = {}
    for r in tagger.tag_many(files):
        out[r.file] = r.as_array()
        used.append(r.chunks_used)
    return out


def bench_precisions(args: argparse.Namespace, files: list[Path], audio_seconds: float) -> dict:
    """fp32, int8, bf16 (only where native) and adaptive chunking for one paper-size model and for the default
    ensemble's shape: ``--members`` paper-size ResNets with random weights (the usc-sail-2020 weights cannot be
    fetched offline; speed does not depend on the weights, the int8 error and re-check rate do). Fixed 16 chunks
    unless the mode says ``adaptive``; ``auto_adaptive`` is what ``focaltag tag`` runs by default."""

    out: dict = {}
    shapes = {"one_model": [_paper_resnet()]}
    if args.members > 1:
        shapes[f"ensemble_{args.members}"] = [_paper_resnet(seed) for seed in range(args.members)]
    for label, models in shapes.items():
        modes: dict[str, dict] = {"fp32": dict(precision="fp32"), "int8": dict(precision="int8")}
        if _bf16_instructions():
            modes["bf16"] = dict(precision="bf16")
        modes["auto"] = dict(precision="auto")
        modes["auto_adaptive"] = dict(precision="auto", adaptive=True)
        modes["fp32_adaptive"] = dict(precision="fp32", adaptive=True)
        taggers = {name: _tagger(models if len(models) > 1 else models[0], n_chunks=16, batch_size=args.batch_size,
                                **kw) for name, kw in modes.items()}
        used: dict[str, list[int]] = {name: [] for name in taggers}
        runners = {"plain_fp32_loop": lambda m=models: _plain_mean(m, files)}
        runners.update({name: (lambda t=t, u=used[name]: _run_counting(t, files, u)) for name, t in taggers.items()})
        timings = round_robin(runners, args.repeats)
        ref, plain = timings["fp32"][-1].value, _walls(timings["plain_fp32_loop"])
        fp32_walls = _walls(timings["fp32"])
        section: dict = {"members": len(models), "plain_fp32_loop_x_realtime": rate_summary(audio_seconds, plain)}
        for name, tagger in taggers.items():
            probs, wall = timings[name][-1].value, _walls(timings[name])
            section[name] = {
                "precision": tagger.precision, "x_realtime": rate_summary(audio_seconds, wall),
                "vs_fp32_tagger": ratio_summary(fp32_walls, wall), "vs_plain_loop": ratio_summary(plain, wall),
                "max_abs_diff_vs_fp32": _max_diff(probs, ref),
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
    whose top-5 (and decisions at a 0.1 threshold) equal the 16-chunk result, the mean chunks and the speed-up
    (fixed and adaptive interleaved, the speed-up taken within each round)."""
    import soundfile as sf

    from focaltag.data.synth import render_tracks
    from focaltag.inference.onnx_model import write_onnx
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
        # one fixed run serves both rules (its top-5 does not depend on the thresholds); the adaptive runs differ:
        # with thresholds the stopping rule watches the decisions, without them the top-5
        fixed = _tagger(onnx_file, runtime="onnx", precision="fp32", thresholds=0.1)
        adaptive = {rule: _tagger(onnx_file, runtime="onnx", precision="fp32", adaptive=True,
                                  thresholds=0.1 if rule == "decisions" else None) for rule in ("top5", "decisions")}
        timings = interleave({"fixed": lambda t=fixed: list(t.tag_many(tracks)),
                              **{rule: (lambda t=t: list(t.tag_many(tracks))) for rule, t in adaptive.items()}},
                             args.repeats)
        ref = timings["fixed"][-1].value
        for rule in adaptive:
            got = timings[rule][-1].value
            decides = rule == "decisions"
            same_top = [[t for t, _ in a.top] == [t for t, _ in b.top] for a, b in zip(got, ref, strict=True)]
            same_dec = [a.decisions == b.decisions for a, b in zip(got, ref, strict=True)] if decides else []
            out[f"{arch}_{rule}"] = {
                "top5_equal_share": round(float(np.mean(same_top)), 3),
                "decisions_equal_share": round(float(np.mean(same_dec)), 3) if decides else None,
                "decision_agreement_per_tag": round(float(np.mean([
                    a.decisions[k] == b.decisions[k] for a, b in zip(got, ref, strict=True) for k in a.decisions
                ])), 4) if decides else None,
                "mean_chunks": round(float(np.mean([r.chunks_used for r in got])), 2),
                "speedup": ratio_summary(_walls(timings["fixed"]), _walls(timings[rule]))}
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


def _gemm_gflops(dtype_name: str, size: int = 2048, matmuls: int = 3) -> Callable[[], float]:
    """A measurement of GFLOP/s of a square matmul on this process's threads (mean of ``matmuls`` after a
    warm-up): the machine's practical ceiling. Returns the measuring function, the operands already made."""
    import torch

    dtype = getattr(torch, dtype_name)
    a, b = torch.randn(size, size).to(dtype), torch.randn(size, size).to(dtype)
    a @ b

    def measure() -> float:
        t0 = time.perf_counter()
        for _ in range(matmuls):
            a @ b
        return 2 * size ** 3 * matmuls / (time.perf_counter() - t0) / 1e9

    return measure


def _int8_gops(size: int = 2048, matmuls: int = 3) -> Callable[[], float] | None:
    """The same for a square int8 matmul through onnxruntime (MLAS picks VNNI / AVX2 kernels by CPUID)."""
    try:
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

    def measure() -> float:
        t0 = time.perf_counter()
        for _ in range(matmuls):
            session.run(None, feed)
        return 2 * size ** 3 * matmuls / (time.perf_counter() - t0) / 1e9

    return measure


def native_peak_runners() -> dict[str, Callable[[], float]]:
    """Matmul peak measurements (G op/s) of every precision this CPU runs natively: fp32 always, bf16 only with
    AVX512-BF16 / AMX (elsewhere it is emulated and not a ceiling), int8 where onnxruntime is installed."""
    runners = {"fp32": _gemm_gflops("float32")}
    if _bf16_instructions():
        runners["bf16"] = _gemm_gflops("bfloat16")
    int8 = _int8_gops()
    if int8 is not None:
        runners["int8"] = int8
    return runners


def bench_ceiling(args: argparse.Namespace, model, files: list[Path], audio_seconds: float,
                  modes: dict) -> dict:
    """What this machine allows at most: the forward at the fastest native precision's matmul peak plus decoding.

    ``wall >= 2 * MACs * chunks / peak + decode_cpu / threads``: every multiply-accumulate of the network at the
    speed of a large matmul in the fastest precision this CPU runs natively (:func:`native_peak_runners`; no
    convolution reaches it), and decoding spread over the threads with perfect overlap. So every mode's share of
    it is at most 1. The measured parts, interleaved with the matmul peaks: decoding alone (the tagger's reader,
    CPU seconds) and the bf16 forward alone on already-decoded chunks; the ceiling is computed within each round.
    """
    from focaltag.inference.chunking import iter_chunks

    tagger = _tagger(model, n_chunks=args.chunks, batch_size=args.batch_size, precision="bf16", recheck_margin=0.0)

    def decode() -> list[np.ndarray]:
        return [np.stack([c for _, c in sorted(iter_chunks(tagger.plan(p)), key=lambda pair: pair[0])])
                for p in files]

    every = np.concatenate(decode())
    tagger.predict_chunks(every[: tagger.batch_size])
    peaks = native_peak_runners()
    timings = interleave({"decode": decode, "forward": lambda: tagger.predict_chunks(every),
                          **{f"peak_{k}": v for k, v in peaks.items()}}, args.repeats)
    macs = _macs_per_chunk(model)
    peak_values = {k: [t.value for t in timings[f"peak_{k}"]] for k in peaks}
    fastest = max(peak_values, key=lambda k: float(np.median(peak_values[k])))
    decode_cpu = [t.cpu for t in timings["decode"]]
    forward = _walls(timings["forward"])
    bounds = [2 * macs * len(every) / (peak * 1e9) + cpu / args.threads
              for peak, cpu in zip(peak_values[fastest], decode_cpu, strict=True)]
    best = max(v["x_realtime"]["median"] for k, v in modes.items() if k != "plain_fp32_loop") if modes else None
    ceiling = rate_summary(audio_seconds, bounds)
    return {"gmacs_per_chunk": round(macs / 1e9, 3), "chunks": int(len(every)),
            "native_matmul_gops": {k: summary(v) for k, v in peak_values.items()}, "ceiling_precision": fastest,
            "decode_cpu_s": summary(decode_cpu), "forward_bf16_s": summary(forward),
            "forward_bf16_gflops": summary([2 * macs * len(every) / f / 1e9 for f in forward]),
            "forward_only_x_realtime": rate_summary(audio_seconds, forward),
            "ceiling_wall_s": summary(bounds), "ceiling_x_realtime": ceiling,
            "best_mode_share_of_ceiling": None if best is None else round(best / ceiling["median"], 2)}


def bench_rss(args: argparse.Namespace, ckpt: Path, tmp: Path) -> dict:
    """Peak RSS of a fresh process tagging a generated 60-minute MP3, next to one that only loads the model."""
    t0 = time.perf_counter()
    hour = hour_mp3(tmp / "hour.mp3")
    made = time.perf_counter() - t0
    timings = interleave({"model_only": lambda: _child(str(ckpt)), "tagged": lambda: _child(str(ckpt), str(hour))},
                         args.repeats)
    tagged = [t.value for t in timings["tagged"]]
    floor = [t.value for t in timings["model_only"]]
    return {"hour_mp3_make_s": round(made, 1),
            "rss_60min_mp3_mb": summary([r["maxrss_mb"] for r in tagged]),
            "rss_60min_seconds": summary([r["seconds"] for r in tagged]),
            "rss_60min_duration_s": tagged[-1]["duration_s"],
            "rss_model_only_mb": summary([r["maxrss_mb"] for r in floor]),
            "rss_target_mb": TARGET_RSS_MB,
            "meets_rss_target": max(r["maxrss_mb"] for r in tagged) < TARGET_RSS_MB}


def _files(args: argparse.Namespace, tmp: Path) -> tuple[list[Path], str]:
    """The shared recordings (the ``--tracks`` shortest when given), else generated stand-ins."""
    import soundfile as sf

    files = sorted(p for p in args.music.glob("*") if p.suffix.lower() in (".mp3", ".ogg", ".flac", ".wav"))
    if not files:
        return synth_tracks(tmp), "synthetic (shared music absent)"
    if args.tracks:
        files = sorted(sorted(files, key=lambda p: sf.info(str(p)).duration)[: args.tracks])
        return files, f"{args.music} (the {len(files)} shortest)"
    return files, str(args.music)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--music", type=Path, default=MUSIC, help="folder of real tracks")
    parser.add_argument("--tracks", type=int, default=0, help="only the N shortest tracks (0: all)")
    parser.add_argument("--chunks", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=None,
                        help="chunks per forward pass (default: the Tagger's, 4 on CPU)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--members", type=int, default=4, help="ensemble size in the precisions section (1: none)")
    parser.add_argument("--sections", default=",".join(SECTIONS),
                        help="comma-separated, of " + ", ".join(SECTIONS))
    parser.add_argument("--all-modes", action="store_true",
                        help="also channels_last, torch.compile (a compilation first) and onnxruntime")
    parser.add_argument("--skip-process", action="store_true", help="leave out the process section")
    parser.add_argument("--skip-arch", action="store_true", help="leave out the architectures section")
    parser.add_argument("--skip-rss", action="store_true", help="leave out the rss section")
    parser.add_argument("--emulate-avx2", action="store_true",
                        help="approximate an AVX2-only CPU: oneDNN limited to AVX2 (ONEDNN_MAX_CPU_ISA) and bf16 "
                        "treated as not native; onnxruntime still picks its kernels by CPUID (VNNI where present), "
                        "so its figures are this CPU's, not an AVX2 CPU's (the emulation does not cover it)")
    parser.add_argument("--only-precisions", action="store_true",
                        help="the sections " + ", ".join(ONLY_PRECISIONS) + " only")
    parser.add_argument("--generated", type=int, default=6, help="generated tracks in the adaptive section")
    add_protocol_arguments(parser, quick="the 2 shortest tracks, one model (no ensemble), sections precisions "
                           "and process")
    parser.add_argument("--rss-child", nargs="+", help=argparse.SUPPRESS)
    parser.add_argument("--plain-child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.rss_child:
        rss_child(args.rss_child)
        return
    if args.plain_child:
        plain_child(args.plain_child)
        return
    sections = [s for s in args.sections.split(",") if s]
    if args.only_precisions:
        sections = list(ONLY_PRECISIONS)
    if args.quick:
        args.tracks, args.members, sections = args.tracks or 2, 1, ["precisions", "process"]
    skipped = {"process": args.skip_process, "architectures": args.skip_arch, "rss": args.skip_rss}
    sections = [s for s in sections if not skipped.get(s)]
    unknown = sorted(set(sections) - set(SECTIONS))
    if unknown:
        parser.error(f"unknown section(s) {', '.join(unknown)}; choose from {', '.join(SECTIONS)}")

    run = Run("bench/tag.py", args, name="tag-emulate-avx2" if args.emulate_avx2 else "tag",
              emulates="avx2" if args.emulate_avx2 else None, int8=True)
    if args.emulate_avx2:
        os.environ["ONEDNN_MAX_CPU_ISA"] = "AVX2"  # read when torch loads oneDNN: before the import below
    import soundfile as sf
    import torch

    torch.set_num_threads(args.threads)
    if args.emulate_avx2:
        from focaltag import precision as _precision

        _precision.cpu_has_fast_bf16 = lambda *a: False  # type: ignore[assignment]
    from focaltag.models import save_model
    from focaltag.precision import cpu_has_fast_bf16

    tmp = Path(tempfile.mkdtemp(prefix="focaltag-bench-tag-"))
    try:
        files, source = _files(args, tmp)
        audio_seconds = sum(sf.info(str(p)).duration for p in files)
        model = _paper_resnet()
        ckpt = save_model(model, tmp / "paper.pt")
        report: dict = {"bench": "tag", "model": "short_chunk_resnet paper width=128 (random init)",
                        "params_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 2),
                        "sections": sections, "threads": args.threads, "cpu_fast_bf16": cpu_has_fast_bf16(),
                        "emulated_avx2": args.emulate_avx2, "tracks": len(files), "source": source,
                        "audio_seconds": round(audio_seconds, 1), "chunks_per_track": args.chunks,
                        "batch_size": args.batch_size, "ensemble_members": args.members}
        modes: dict = {}
        if "modes" in sections:
            report["read"] = bench_read(args, model, files)
            modes = bench_modes(args, model, files, audio_seconds)
            report["modes"] = modes
            tagger_modes = {k: v for k, v in modes.items() if k != "plain_fp32_loop"}
            best = max(tagger_modes, key=lambda k: tagger_modes[k]["x_realtime"]["median"])
            report["best_mode"] = best
            report["best_x_realtime"] = modes[best]["x_realtime"]
            report["best_vs_plain_loop"] = modes[best]["vs_plain_loop"]
            report["bf16_vs_fp32_tagger"] = round(modes["bf16"]["x_realtime"]["median"]
                                                  / modes["fp32"]["x_realtime"]["median"], 2)
            report["target_x_realtime"] = TARGET_X_REALTIME
            report["meets_speed_target"] = modes[best]["x_realtime"]["median"] >= TARGET_X_REALTIME
            run.save(report)  # each part kept as it finishes: a stopped run loses only the part it was in
        if "ceiling" in sections:
            report["ceiling"] = bench_ceiling(args, model, files, audio_seconds, modes)
            run.save(report)
        if "process" in sections:
            report["process"] = bench_process(args, ckpt, files)
            run.save(report)
        if "precisions" in sections:
            report["precisions"] = bench_precisions(args, files, audio_seconds)
            run.save(report)
        if "adaptive" in sections:
            report["adaptive"] = bench_adaptive(args, files, tmp)
            run.save(report)
        if "architectures" in sections:
            report["architectures"] = bench_architectures(args, files, audio_seconds)
            run.save(report)
        if "rss" in sections:
            report["rss"] = bench_rss(args, ckpt, tmp)
        run.finish(report)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
