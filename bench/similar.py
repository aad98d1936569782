"""Benchmark of ``focaltag similar``: which embedding finds tracks of the same album (the default's evidence).

Quality (issue 30, "measured, not assumed"): on the real-music set of ``bench/music_data.py`` (one 29 s excerpt
per track, labelled by album), every track in turn is the query and all the others are ranked by cosine
similarity (leave-one-out); a track of the same album is a hit. Figures: mean average precision (mAP) and
precision at 5 (P@5) over the queries, with 95 % percentile bootstrap intervals over queries, and paired
bootstrap differences against the two references (same resampled queries for both sides). The contenders, in
one run:

- ``mfcc``: 20 MFCCs (librosa, 22,050 Hz), mean and standard deviation over time (40 values); also z-scored
  per dimension over the collection (``mfcc-z``), since raw MFCC cosine is dominated by the first coefficient;
- ``musicnn-msd``: musicnn 0.1.0's MSD model, its 200-d penultimate layer averaged over 3 s frames (what
  AudioMuse-AI stores), run in a separate virtual environment (``--musicnn-venv``; ``--setup-musicnn`` builds
  it with NumPy < 2, tensorflow-cpu and tf-keras) through ``bench/_musicnn_embed.py``: never a focaltag
  dependency;
- every catalogue model whose weights are available offline (Won et al.'s 8: import them into
  ``FOCALTAG_CACHE_DIR`` with ``focaltag models import``), the layer before the classifier averaged over 16
  evenly spaced chunks, as the tagger computes it: with ``forward_features`` and ``forward_head(pre_logits=True)``
  on the chunks the tagger plans and reads (``--embedding-path direct``; the chosen default is checked against
  ``Tagger(name, InferenceOptions(embeddings=True))`` on a few tracks where the inference API has embeddings),
  or all through the Tagger (``--embedding-path tagger``); chunk vectors are also L2-normalised before
  averaging (``l2mean``), to measure whether that is better;
- concatenations of models: each part L2-normalised, so every part weighs the same (``concat:``), and as the
  Tagger gives them for an ensemble of those members, the vectors side by side as they are (``ensemble:``).

The default is picked among single catalogue models by mAP with the pooling the product uses (plain mean),
and again with the ensembles included (``decision.with_ensembles``); it must beat the better MFCC variant
clearly (the paired interval of the mAP difference above 0) and at least match musicnn (its paired interval reaching 0 or above). Embeddings are
cached under ``--work`` so reruns only score. Writes ``bench/results/<date>_similar-quality_<cpu kind>.json``.

    .venv/bin/python bench/similar.py quality [--music DIR] [--work DIR] [--models NAME ...] [--threads 2]
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

BENCH = Path(__file__).resolve().parent
if sys.path and Path(sys.path[0] or ".").resolve() == BENCH:
    # bench/ holds a coverage.py that would stand in for the "coverage" package numba (under librosa) tries to
    # import: run as a script, bench/ leaves the import path and the sibling modules are loaded by file
    sys.path.pop(0)


def sibling(name: str) -> ModuleType:
    """``bench/NAME.py`` as module ``NAME`` (once), without putting bench/ on the import path."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


DEFAULT_WORK = Path.home() / ".cache" / "focaltag-bench" / "similar"
DEFAULT_MUSICNN_VENV = Path.home() / ".cache" / "focaltag-bench" / "musicnn-venv"
WON2020_MODELS = ("won2020-mtat-fcn", "won2020-mtat-crnn", "won2020-mtat-musicnn", "won2020-jamendo-top50-fcn",
                  "won2020-jamendo-top50-crnn", "won2020-jamendo-top50-musicnn", "won2020-msd-fcn",
                  "won2020-msd-crnn")
UNAVAILABLE_OFFLINE = {
    "usc-sail-2020": "its weights are not available offline (no internet here; only PyPI, npm and Debian)",
    "won2020-msd-short-res": "its weights are not available offline",
    "won2020-jamendo-top50-short-res": "its weights are not available offline",
}
N_CHUNKS = 16
K = 5
MFCC_RATE = 22050
MUSICNN_PINS = ("numpy==1.26.4", "tensorflow-cpu==2.18.1", "tf-keras==2.18.0", "librosa==0.11.0")
"""The musicnn environment: NumPy < 2 (musicnn returns wrong values under NumPy 2), TensorFlow with the legacy
Keras that its ``tf.compat.v1.layers`` need; musicnn itself goes in with ``--no-deps`` (its setup asks for the
GPU-capable ``tensorflow`` package)."""


# -- retrieval metrics (pure) ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class RetrievalScores:
    """Per-query leave-one-out figures: average precision and precision at ``k``, in query order."""

    average_precision: np.ndarray
    precision_at_k: np.ndarray
    k: int
    queries: np.ndarray  # the index of each scored query (queries whose label no other item shares are left out)

    @property
    def map(self) -> float:
        return float(self.average_precision.mean())

    @property
    def mean_precision_at_k(self) -> float:
        return float(self.precision_at_k.mean())


def cosine_matrix(vectors: np.ndarray) -> np.ndarray:
    """Cosine similarity of every pair of rows (float64); a zero row has similarity 0 with everything."""
    x = np.asarray(vectors, dtype=np.float64)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    unit = np.divide(x, norms, out=np.zeros_like(x), where=norms > 0)
    return unit @ unit.T


def leave_one_out_retrieval(vectors: np.ndarray, labels: Sequence[str], k: int = K) -> RetrievalScores:
    """Rank all other items by cosine similarity for every query; relevant = same label.

    Average precision of a query is the mean, over its relevant items, of the precision at each one's rank
    (the ranking is a stable sort of descending similarity, so ties keep collection order). Queries whose label
    no other item shares are left out (they cannot be scored); P@k divides by ``k``.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    labels_arr = np.asarray(labels)
    if len(labels_arr) != len(vectors):
        raise ValueError(f"{len(vectors)} vectors but {len(labels_arr)} labels")
    sim = cosine_matrix(vectors)
    aps: list[float] = []
    pks: list[float] = []
    scored: list[int] = []
    for q in range(len(labels_arr)):
        others = np.delete(np.arange(len(labels_arr)), q)
        order = others[np.argsort(-sim[q, others], kind="stable")]
        hits = labels_arr[order] == labels_arr[q]
        n_rel = int(hits.sum())
        if n_rel == 0:
            continue
        ranks = np.flatnonzero(hits) + 1
        aps.append(float(np.mean(np.arange(1, n_rel + 1) / ranks)))
        pks.append(float(hits[:k].sum()) / k)
        scored.append(q)
    return RetrievalScores(np.asarray(aps), np.asarray(pks), k, np.asarray(scored, dtype=np.int64))


def bootstrap_interval(values: np.ndarray, *, n_resamples: int = 2000, seed: int = 0,
                       level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``values`` (resampling queries with replacement)."""
    v = np.asarray(values, dtype=np.float64)
    rng = np.random.default_rng(seed)
    means = v[rng.integers(0, len(v), size=(n_resamples, len(v)))].mean(axis=1)
    lo, hi = np.quantile(means, [(1 - level) / 2, 1 - (1 - level) / 2])
    return float(lo), float(hi)


def paired_difference(a: np.ndarray, b: np.ndarray, *, n_resamples: int = 2000, seed: int = 0,
                      level: float = 0.95) -> dict[str, float]:
    """Mean of ``a - b`` over the same queries, with its percentile bootstrap interval."""
    d = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    lo, hi = bootstrap_interval(d, n_resamples=n_resamples, seed=seed, level=level)
    return {"diff": float(d.mean()), "ci": [lo, hi]}


def pool(chunks: np.ndarray, how: str) -> np.ndarray:
    """A track's vector from its chunk vectors ``(n_chunks, D)``: ``mean``, or ``l2mean`` (each chunk vector
    scaled to unit length first, so a loud chunk does not outweigh the others)."""
    c = np.asarray(chunks, dtype=np.float64)
    if how == "mean":
        return c.mean(axis=0)
    if how == "l2mean":
        norms = np.linalg.norm(c, axis=1, keepdims=True)
        return np.divide(c, norms, out=np.zeros_like(c), where=norms > 0).mean(axis=0)
    raise ValueError(f"pooling must be mean or l2mean, got {how!r}")


def zscore(x: np.ndarray) -> np.ndarray:
    """Each dimension standardised over the collection (constant dimensions become 0)."""
    x = np.asarray(x, dtype=np.float64)
    sd = x.std(axis=0)
    return np.divide(x - x.mean(axis=0), sd, out=np.zeros_like(x), where=sd > 0)


def unit_rows(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    n = np.linalg.norm(x, axis=1, keepdims=True)
    return np.divide(x, n, out=np.zeros_like(x), where=n > 0)


# -- embeddings (cached) ----------------------------------------------------------------------------------------
def track_keys(manifest: Mapping[str, Any]) -> list[str]:
    """A cache key per track: its excerpt's file and how it was cut (a rebuilt set with other cuts misses)."""
    keys = []
    for t in manifest["tracks"]:
        ident = f"{t['path']}|{t['source_sha256']}|{t['excerpt_start_s']}|{t['excerpt_s']}|{manifest['excerpt_rate']}"
        keys.append(hashlib.sha256(ident.encode()).hexdigest()[:20])
    return keys


def _cached(folder: Path, keys: Sequence[str], compute: Callable[[int], np.ndarray],
            label: str) -> tuple[list[np.ndarray], float]:
    """Each key's array from ``folder/KEY.npy``, computing (and saving) the missing ones; the seconds spent."""
    folder.mkdir(parents=True, exist_ok=True)
    out: list[np.ndarray] = []
    spent = 0.0
    for i, key in enumerate(keys):
        path = folder / f"{key}.npy"
        if path.is_file():
            out.append(np.load(path))
            continue
        t0 = time.perf_counter()
        value = np.asarray(compute(i), dtype=np.float32)
        spent += time.perf_counter() - t0
        tmp = folder / f"{key}.tmp.npy"
        np.save(tmp, value)
        os.replace(tmp, path)
        out.append(value)
        print(f"{label}: {i + 1}/{len(keys)}", file=sys.stderr, flush=True)
    return out, spent


def cached_count(folder: Path, keys: Sequence[str]) -> int:
    """How many of ``keys`` have their array in ``folder`` already."""
    return sum((folder / f"{k}.npy").is_file() for k in keys)


def mfcc_vectors(paths: Sequence[Path], keys: Sequence[str], work: Path) -> tuple[np.ndarray, float]:
    """20 MFCCs' mean and standard deviation over time (librosa defaults at 22,050 Hz)."""
    import librosa

    def compute(i: int) -> np.ndarray:
        y, _ = librosa.load(paths[i], sr=MFCC_RATE, mono=True)
        m = librosa.feature.mfcc(y=y, sr=MFCC_RATE, n_mfcc=20)
        return np.concatenate([m.mean(axis=1), m.std(axis=1)])

    vecs, spent = _cached(work / "mfcc", keys, compute, "mfcc")
    return np.stack(vecs), spent


def direct_chunk_embeddings(name: str, paths: Sequence[Path], keys: Sequence[str], work: Path,
                            threads: int) -> tuple[list[np.ndarray], float]:
    """Per-chunk vectors ``(n_chunks, D)`` of the layer before the classifier, on the chunks the tagger plans
    (16 evenly spaced, at the model's rate), computed with ``forward_features`` + ``forward_head(pre_logits)``."""
    import torch

    import focaltag
    from focaltag.inference.chunking import iter_chunks, plan_file

    torch.set_num_threads(threads)
    # subnormal floats: some of Won et al.'s networks (MSD FCN and CRNN, Jamendo CRNN and Musicnn) run far
    # slower on this CPU without flush-to-zero, with the same outputs (checked on a real excerpt)
    torch.set_flush_denormal(True)
    model: Any = None

    def compute(i: int) -> np.ndarray:
        nonlocal model
        if model is None:
            model = focaltag.load_model(name).eval()
        cfg = model.pretrained_cfg
        plan = plan_file(paths[i], sample_rate=cfg.sample_rate, chunk_samples=cfg.chunk_samples, n_chunks=N_CHUNKS)
        batch = torch.from_numpy(np.stack([c for _, c in iter_chunks(plan)]).astype(np.float32))
        with torch.no_grad():
            return model.forward_head(model.forward_features(batch), pre_logits=True).float().numpy()

    return _cached(work / "direct" / name, keys, compute, name)


def tagger_available() -> bool:
    try:
        from focaltag.inference import InferenceOptions  # noqa: F401
    except ImportError:
        return False
    return True


def tagger_embeddings(name: str, paths: Sequence[Path], keys: Sequence[str], work: Path,
                      threads: int) -> tuple[np.ndarray, float]:
    """The product path: ``Tagger(name, InferenceOptions(embeddings=True, precision="fp32"))``'s embeddings
    (float32, so that they compare with the direct path's; the product's ``auto`` precision may run bf16)."""
    import torch

    from focaltag.inference import InferenceOptions, Tagger

    torch.set_num_threads(threads)
    tagger: Any = None

    def compute(i: int) -> np.ndarray:
        nonlocal tagger
        if tagger is None:
            tagger = Tagger(name, InferenceOptions(embeddings=True, n_chunks=N_CHUNKS, precision="fp32"))
        result = tagger.tag(str(paths[i]))
        if result.embedding is None:
            raise RuntimeError(f"{name} gave no embedding for {paths[i]}")
        return result.embedding

    vecs, spent = _cached(work / "tagger" / name, keys, compute, f"{name} (Tagger)")
    return np.stack(vecs), spent


def musicnn_vectors(paths: Sequence[Path], keys: Sequence[str], work: Path, venv: Path) -> tuple[np.ndarray, float]:
    """musicnn's MSD penultimate layer (200-d, mean over 3 s frames), from its own interpreter."""
    folder = work / "musicnn-msd"
    missing = [{"key": k, "path": str(p)} for k, p in zip(keys, paths, strict=True)
               if not (folder / f"{k}.npy").is_file()]
    spent = 0.0
    if missing:
        python = venv / "bin" / "python"
        if not python.is_file():
            raise FileNotFoundError(f"no musicnn environment at {venv}: build it with --setup-musicnn")
        folder.mkdir(parents=True, exist_ok=True)
        jobs = folder / "jobs.json"
        jobs.write_text(json.dumps(missing), encoding="utf-8")
        env = {**os.environ, "TF_USE_LEGACY_KERAS": "1", "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": ""}
        t0 = time.perf_counter()
        # -P: bench/ must not shadow the environment's packages (bench/coverage.py would hide numba's "coverage")
        subprocess.run([str(python), "-P", str(BENCH / "_musicnn_embed.py"), str(jobs), str(folder)], env=env,
                       check=True)
        spent = time.perf_counter() - t0
    return np.stack([np.load(folder / f"{k}.npy") for k in keys]), spent


def setup_musicnn(venv: Path) -> None:
    """Create the musicnn environment (pinned; see :data:`MUSICNN_PINS`)."""
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q"]
    subprocess.run([*pip, *MUSICNN_PINS], check=True)
    subprocess.run([*pip, "--no-deps", "musicnn==0.1.0"], check=True)


def musicnn_versions(venv: Path) -> dict[str, str]:
    code = ("import importlib.metadata as m, json; print(json.dumps({n: m.version(n) for n in "
            "('musicnn', 'numpy', 'tensorflow-cpu', 'tf-keras', 'librosa')}))")
    done = subprocess.run([str(venv / "bin" / "python"), "-P", "-c", code], capture_output=True, text=True,
                          check=False)
    return json.loads(done.stdout) if done.returncode == 0 else {"error": done.stderr.strip()[-300:]}


# -- scoring ------------------------------------------------------------------------------------------------
def score(vectors: np.ndarray, labels: Sequence[str], *, n_resamples: int, seed: int) -> tuple[dict[str, Any],
                                                                                                RetrievalScores]:
    r = leave_one_out_retrieval(vectors, labels)
    return ({"dim": int(vectors.shape[1]), "mAP": r.map,
             "mAP_ci": bootstrap_interval(r.average_precision, n_resamples=n_resamples, seed=seed),
             f"P@{r.k}": r.mean_precision_at_k,
             f"P@{r.k}_ci": bootstrap_interval(r.precision_at_k, n_resamples=n_resamples, seed=seed)}, r)


def per_album_map(r: RetrievalScores, labels: Sequence[str]) -> dict[str, float]:
    query_labels = np.asarray(labels)[r.queries]
    return {str(a): float(r.average_precision[query_labels == a].mean()) for a in dict.fromkeys(query_labels)}


def choose_default(figures: Mapping[str, dict[str, Any]], runs: Mapping[str, RetrievalScores],
                   candidates: Iterable[str], mfcc: str, musicnn: str | None, *, n_resamples: int,
                   seed: int) -> dict[str, Any]:
    """The candidate with the best mAP, and whether it beats ``mfcc`` clearly and matches ``musicnn``."""
    names = [c for c in candidates if c in figures]
    best = max(names, key=lambda n: figures[n]["mAP"])
    vs_mfcc = paired_difference(runs[best].average_precision, runs[mfcc].average_precision,
                                n_resamples=n_resamples, seed=seed)
    decision: dict[str, Any] = {"default": best, "vs_mfcc": {"reference": mfcc, **vs_mfcc},
                                "beats_mfcc_clearly": vs_mfcc["ci"][0] > 0}
    if musicnn is not None and musicnn in runs:
        vs_musicnn = paired_difference(runs[best].average_precision, runs[musicnn].average_precision,
                                       n_resamples=n_resamples, seed=seed)
        decision["vs_musicnn"] = {"reference": musicnn, **vs_musicnn}
        decision["matches_musicnn"] = vs_musicnn["ci"][1] >= 0
    else:
        decision["matches_musicnn"] = None
    decision["ranking"] = sorted(names, key=lambda n: -figures[n]["mAP"])
    return decision


def collect(args: argparse.Namespace, music: Any, keys: Sequence[str], notes: dict[str, Any],
            seconds: dict[str, float]) -> tuple[dict[str, np.ndarray], list[str]]:
    """Every contender's track vectors (MFCC, musicnn, each model with mean and l2mean pooling) and the names
    of the models measured."""
    work: Path = args.work
    vectors: dict[str, np.ndarray] = {}
    mf, seconds["mfcc"] = mfcc_vectors(music.paths, keys, work)
    vectors["mfcc"], vectors["mfcc-z"] = mf, zscore(mf)

    done = cached_count(work / "musicnn-msd", keys)
    if args.skip_musicnn:
        notes["musicnn-msd"] = "skipped (--skip-musicnn)"
    elif args.cached_only and done < len(keys):
        notes["musicnn-msd"] = f"not measured: {done} of {len(keys)} embeddings computed (--cached-only)"
    else:
        try:
            vectors["musicnn-msd"], seconds["musicnn-msd"] = musicnn_vectors(music.paths, keys, work,
                                                                              args.musicnn_venv)
            notes["musicnn_versions"] = musicnn_versions(args.musicnn_venv)
        except (OSError, subprocess.CalledProcessError) as err:
            notes["musicnn-msd"] = f"not measured: {err}"

    use_tagger = args.embedding_path == "tagger"
    notes["embedding_path"] = "Tagger(name, InferenceOptions(embeddings=True, precision='fp32'))" if use_tagger \
        else "forward_features + forward_head(pre_logits=True) on the chunks the tagger plans (float32)"
    singles: list[str] = []
    for name in args.models:
        done = cached_count(work / "direct" / name, keys)
        if args.cached_only and done < len(keys):
            notes[name] = f"not measured: {done} of {len(keys)} embeddings computed (--cached-only)"
            continue
        try:
            chunks, seconds[name] = direct_chunk_embeddings(name, music.paths, keys, work, args.threads)
        except Exception as err:  # a model that cannot load is reported, not fatal to the other contenders
            notes[name] = f"not measured: {type(err).__name__}: {err}"
            continue
        vectors[name] = np.stack([pool(c, "mean") for c in chunks])
        vectors[f"{name}/l2mean"] = np.stack([pool(c, "l2mean") for c in chunks])
        singles.append(name)
        if use_tagger:
            try:
                vectors[name], _ = tagger_embeddings(name, music.paths, keys, work, args.threads)
            except Exception as err:
                notes[f"{name} (Tagger)"] = f"failed, the direct path is used: {type(err).__name__}: {err}"
    return vectors, singles


def score_all(vectors: Mapping[str, np.ndarray], singles: Sequence[str], labels: Sequence[str], *,
              n_resamples: int, seed: int) -> tuple[dict[str, dict[str, Any]], dict[str, RetrievalScores]]:
    """Figures of every contender, of each one centred on the collection's mean, and of concatenations of the
    best 2 and 3 models and of all of them (``concat:`` unit parts, ``ensemble:`` the parts as they are)."""
    figures: dict[str, dict[str, Any]] = {}
    runs: dict[str, RetrievalScores] = {}
    for name, vecs in vectors.items():
        figures[name], runs[name] = score(vecs, labels, n_resamples=n_resamples, seed=seed)
        if "/" not in name and not name.startswith("mfcc-"):
            figures[f"{name}/centred"], runs[f"{name}/centred"] = score(
                vecs - vecs.mean(axis=0), labels, n_resamples=n_resamples, seed=seed)
    ranked = sorted(singles, key=lambda n: -figures[n]["mAP"])
    combos = {"+".join(ranked[:n]): ranked[:n] for n in (2, 3) if len(ranked) >= n}
    if len(ranked) > 3:
        combos[f"all-{len(ranked)}"] = ranked
    for label, parts in combos.items():
        cat = np.concatenate([unit_rows(vectors[p]) for p in parts], axis=1)
        figures[f"concat:{label}"], runs[f"concat:{label}"] = score(cat, labels, n_resamples=n_resamples, seed=seed)
        # what the Tagger gives for an ensemble of these members: their vectors side by side as they are
        raw = np.concatenate([vectors[p] for p in parts], axis=1)
        figures[f"ensemble:{label}"], runs[f"ensemble:{label}"] = score(raw, labels, n_resamples=n_resamples,
                                                                       seed=seed)
    return figures, runs


def tagger_check(args: argparse.Namespace, model: str, music: Any, keys: Sequence[str],
                 direct: np.ndarray) -> dict[str, Any] | str:
    """The default's vectors through the product path on the first ``--tagger-check`` tracks, against ours."""
    n = min(args.tagger_check, len(keys))
    try:
        product, _ = tagger_embeddings(model, music.paths[:n], keys[:n], args.work, args.threads)
    except Exception as err:
        return f"failed: {type(err).__name__}: {err}"
    return {"model": model, "tracks": n, "max_abs_diff": float(np.abs(product - direct[:n]).max()),
            "max_abs_value": float(np.abs(direct[:n]).max()),
            "min_cosine": float(np.min(np.sum(unit_rows(product) * unit_rows(direct[:n]), axis=1)))}


def quality(args: argparse.Namespace) -> None:
    music_data = sibling("music_data")
    run = sibling("_protocol").Run("bench/similar.py", args, name="similar-quality")
    music = music_data.load_set(args.music, max_per_album=args.max_per_album)
    keys = track_keys(music.manifest)
    labels = list(music.albums)
    notes: dict[str, Any] = {"unavailable": dict(UNAVAILABLE_OFFLINE)}
    seconds: dict[str, float] = {}
    vectors, singles = collect(args, music, keys, notes, seconds)
    if not singles:
        raise SystemExit("no catalogue model was measured: import them (focaltag models import NAME FILE) or "
                         "compute their embeddings before --cached-only")
    figures, runs = score_all(vectors, singles, labels, n_resamples=args.resamples, seed=args.seed)

    mfcc_ref = max(("mfcc", "mfcc-z"), key=lambda n: figures[n]["mAP"])
    musicnn_ref = "musicnn-msd" if "musicnn-msd" in runs else None
    decision = choose_default(figures, runs, singles, mfcc_ref, musicnn_ref, n_resamples=args.resamples,
                              seed=args.seed)
    ensembles = [n for n in figures if n.startswith("ensemble:")]
    if ensembles:  # an ensemble is a model the product accepts too (its embedding: the members' concatenated)
        decision["with_ensembles"] = choose_default(figures, runs, [*singles, *ensembles], mfcc_ref, musicnn_ref,
                                                    n_resamples=args.resamples, seed=args.seed)
    best = decision["default"]
    if args.tagger_check and tagger_available() and args.embedding_path != "tagger":
        notes["tagger_check"] = tagger_check(args, best, music, keys, vectors[best])
    for other in ("l2mean", "centred"):
        key = f"{best}/{other}"
        if key in runs:
            decision[f"{other}_vs_mean"] = paired_difference(runs[key].average_precision,
                                                             runs[best].average_precision,
                                                             n_resamples=args.resamples, seed=args.seed)
    results = {
        "data": {**music_data.describe(music.manifest), "excerpt_s": music.manifest["excerpt_s"],
                 "max_per_album": args.max_per_album, "labels": "album (see bench/music_data.py)"},
        "protocol": {"queries": "leave-one-out, every track", "similarity": "cosine", "k": K,
                     "chunks": N_CHUNKS, "bootstrap": {"resamples": args.resamples, "seed": args.seed,
                                                       "interval": "95 % percentile, over queries"}},
        "figures": figures,
        "per_album_mAP": {n: per_album_map(runs[n], labels) for n in
                          dict.fromkeys([best, mfcc_ref, *([musicnn_ref] if musicnn_ref else [])])},
        "decision": decision,
        "extraction_seconds_this_run": seconds,
        "notes": notes,
    }
    run.finish(results)


def main(argv: list[str] | None = None) -> None:
    add_protocol_arguments = sibling("_protocol").add_protocol_arguments
    DEFAULT_CACHE = sibling("music_data").DEFAULT_CACHE  # noqa: N806

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="part", required=True)
    q = sub.add_parser("quality", help="same-album retrieval: mAP and P@5 of every embedding")
    q.add_argument("--music", type=Path, default=DEFAULT_CACHE, help="the set built by bench/music_data.py")
    q.add_argument("--work", type=Path, default=DEFAULT_WORK, help="embedding cache (reruns only score)")
    q.add_argument("--max-per-album", type=int, default=None,
                   help="at most this many tracks per album, evenly spread over each album (default: all)")
    q.add_argument("--models", nargs="+", default=list(WON2020_MODELS))
    q.add_argument("--embedding-path", choices=("direct", "tagger"), default="direct",
                   help="tagger: every embedding through the inference API (the product path); direct: the "
                   "model's layers on the chunks the tagger plans; the chosen default is checked against the "
                   "Tagger on the first --tagger-check tracks where the API has embeddings")
    q.add_argument("--tagger-check", type=int, default=3)
    q.add_argument("--cached-only", action="store_true",
                   help="score only the embeddings whose cache is complete; name the others as not measured")
    q.add_argument("--musicnn-venv", type=Path, default=DEFAULT_MUSICNN_VENV)
    q.add_argument("--setup-musicnn", action="store_true", help="build the musicnn environment first")
    q.add_argument("--skip-musicnn", action="store_true")
    q.add_argument("--threads", type=int, default=2)
    q.add_argument("--resamples", type=int, default=2000)
    q.add_argument("--seed", type=int, default=0)
    add_protocol_arguments(q, quick="nothing: quality has no repeats (its figures do not depend on load)")
    args = parser.parse_args(argv)
    if args.part == "quality":
        if args.setup_musicnn:
            setup_musicnn(args.musicnn_venv)
        quality(args)


if __name__ == "__main__":
    main()
