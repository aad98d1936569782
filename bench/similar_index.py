"""Speed and scale of similar-track search (issue 30): the store's precision, exact search against the HNSW graph,
a whole ``focaltag similar`` process on a large library, and what embeddings add to a library run.

Parts (``--parts``, all by default):

* ``precision``: recall@10 against float32 exact search of the store's float16 vectors and of int8 vectors (one
  scale per vector, no re-rank), on clustered synthetic vectors; bytes per vector of each;
* ``scale``: at each size (``--sizes``, default 10k, 100k and 1M vectors of ``--dim`` values): exact search
  (:func:`focaltag.library.index.exact_top`) and the usearch HNSW graph (:func:`focaltag.library.index._graph`,
  the settings the index uses): build rate, query latency p50 / p99 over ``--queries`` queries per repeat,
  recall@10 of the graph (re-scored as the index does) against exact search, bytes per vector on disk and in
  memory;
* ``process``: a synthetic library of ``--library-size`` tracks (JSONL and store as a run writes them); the
  wall time of ``focaltag similar SEED --library ... --format json`` as a whole process (a library seed: no model
  is loaded), the first call (which builds the index) and warm ones, and the same query through the Python API
  in a fresh interpreter;
* ``libraries`` (not in the default run): usearch against hnswlib and faiss-cpu HNSW on 20,000 vectors, the same
  graph settings, when those are installed (they are not focaltag dependencies);
* ``embeddings``: ``focaltag tag DIR -o tags.jsonl`` with and without ``--embeddings`` on the shared recordings
  (Won et al.'s MTAT Musicnn, imported from ``../shared``), copied ``--embedding-copies`` times, interleaved, on
  one core; the ratio is the cost of embeddings. Whole runs drift by more than the 5 % in question on a shared
  virtual machine, so the same part also times what ``--embeddings`` adds, each piece against its plain twin in
  one process call by call (the forward with the embedding returned, the chunk mean and the store record), and
  gives the whole run's cost those pieces imply.

Synthetic vectors: ``--clusters`` Gaussian clusters (music embeddings are clustered by genre and mood; uniform
random vectors are the worst case of any graph index and unlike any embedding).

Run: ``python bench/similar_index.py [--quick] [--dim 200]``; the figures go to ``bench/results/`` (see
``bench/_protocol.py``) and into the README's "Similar tracks and playlists" section.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import itertools
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from _protocol import REPO, Run, add_protocol_arguments, cpus, interleave, ratio_summary, summary, walls

sys.path.insert(0, str(REPO / "src"))

from focaltag._paths import json_line  # noqa: E402
from focaltag.library.index import EXACT_MAX, HNSW_EXPANSION_SEARCH, VectorSearch, _graph, exact_top  # noqa: E402
from focaltag.library.runs import path_key  # noqa: E402
from focaltag.library.store import StoreHeader, VectorStore, append_record, record_dtype  # noqa: E402

TAGS = [f"mood/theme---tag{i:02d}" for i in range(56)]


def clustered(n: int, dim: int, clusters: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dim)).astype(np.float32)
    out = np.empty((n, dim), dtype=np.float32)
    for start in range(0, n, 100_000):  # in blocks: 1M x 200 float64 temporaries would need 1.6 GB
        m = min(100_000, n - start)
        out[start:start + m] = centres[rng.integers(0, clusters, m)] + 0.7 * rng.standard_normal((m, dim),
                                                                                                   dtype=np.float32)
    return out


def unit_rows(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def queries_near(unit: np.ndarray, count: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    picked = unit[rng.integers(0, len(unit), count)].astype(np.float32)
    return unit_rows(picked + 0.05 * rng.standard_normal(picked.shape).astype(np.float32))


def percentile_ms(seconds: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(seconds) * 1000, q))


# -- precision ----------------------------------------------------------------------------------------------
def part_precision(args: argparse.Namespace) -> dict:
    n = 20_000 if args.quick else 100_000
    x = unit_rows(clustered(n, args.dim, args.clusters, 1))
    qs = queries_near(x, 200, 2)
    f16 = x.astype(np.float16)
    scale = np.abs(x).max(axis=1, keepdims=True) / 127
    i8 = np.round(x / scale).astype(np.int8)
    i8_back = i8.astype(np.float32) * scale
    recall = {"float16": [], "int8": []}
    for q in qs:
        truth = set(exact_top(x, q, 10)[0].tolist())
        recall["float16"].append(len(truth & set(exact_top(f16, q, 10)[0].tolist())) / 10)
        recall["int8"].append(len(truth & set(exact_top(i8_back, q, 10)[0].tolist())) / 10)
    return {"n": n, "dim": args.dim, "queries": len(qs),
            "recall_at_10_vs_float32": {k: float(np.mean(v)) for k, v in recall.items()},
            "bytes_per_vector": {"float32": 4 * args.dim, "float16 (store record)": record_dtype(args.dim).itemsize,
                                 "int8 + float32 scale": args.dim + 4}}


# -- scale --------------------------------------------------------------------------------------------------
def part_scale(args: argparse.Namespace, size: int) -> dict:
    x = unit_rows(clustered(size, args.dim, args.clusters, size)).astype(np.float16)
    qs = queries_near(x, args.queries, 7)
    with_graph = args.graph_max is None or size <= args.graph_max
    builds: list[float] = []
    graph = None
    for _ in range(args.repeats if size <= 20_000 else 1 if with_graph else 0):  # 100k+: minutes, built once
        graph = None
        t0 = time.perf_counter()
        graph = _graph(x)
        builds.append(time.perf_counter() - t0)
    disk = 0
    if graph is not None:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "g.usearch"
            graph.save(str(path))
            disk = path.stat().st_size

    exact_lat: list[list[float]] = []
    graph_lat: list[list[float]] = []
    truth = [set(exact_top(x, q, 10)[0].tolist()) for q in qs]

    def run_exact() -> None:
        times = []
        for q in qs:
            t0 = time.perf_counter()
            exact_top(x, q, 10)
            times.append(time.perf_counter() - t0)
        exact_lat.append(times)

    found: list[list[set[int]]] = []
    search_lat: list[list[float]] = []
    search_found: list[list[set[int]]] = []

    def run_graph() -> None:
        """The graph alone: its 10 nearest, re-scored."""
        times, hits = [], []
        for q in qs:
            t0 = time.perf_counter()
            keys = np.asarray(graph.search(q, 10).keys, dtype=np.int64)
            scores = x[keys].astype(np.float32) @ q
            keys = keys[np.lexsort((keys, -scores))]
            times.append(time.perf_counter() - t0)
            hits.append(set(keys.tolist()))
        graph_lat.append(times)
        found.append(hits)

    def search_pass() -> tuple[list[float], list[set[int]]]:
        """What ``similar`` runs: :class:`VectorSearch` over the graph at its current expansion (its first
        candidates, re-scored), the 10 best of them; each query's seconds and rows."""
        search = VectorSearch(x, graph)
        times, hits = [], []
        for q in qs:
            t0 = time.perf_counter()
            hits.append({row for row, _ in itertools.islice(search.ranked(q), 10)})
            times.append(time.perf_counter() - t0)
        return times, hits

    def run_search() -> None:
        times, hits = search_pass()
        search_lat.append(times)
        search_found.append(hits)

    interleave({"exact": run_exact, "graph": run_graph, "search": run_search} if graph is not None
               else {"exact": run_exact}, args.repeats)
    out = {
        "n": size, "dim": args.dim, "queries_per_repeat": len(qs), "build_runs": len(builds),
        "exact_query_ms_p50": summary([percentile_ms(t, 50) for t in exact_lat]),
        "exact_query_ms_p99": summary([percentile_ms(t, 99) for t in exact_lat]),
        "bytes_per_vector": {"store_disk": record_dtype(args.dim).itemsize,
                             "exact_ram (float16 unit vectors)": 2 * args.dim},
        "searched_exactly_by_the_index": size <= EXACT_MAX,
    }
    if graph is None:
        return out
    # a build that ran once is one value, not a median of repeats
    out["graph_build_s"] = summary(builds) if len(builds) >= 3 else builds[0]
    out["graph_build_vectors_per_s"] = summary([size / b for b in builds]) if len(builds) >= 3 else size / builds[0]
    out["graph_query_ms_p50"] = summary([percentile_ms(t, 50) for t in graph_lat])
    out["graph_query_ms_p99"] = summary([percentile_ms(t, 99) for t in graph_lat])
    out["graph_recall_at_10"] = float(np.mean([len(t & f) / 10 for t, f in zip(truth, found[-1], strict=True)]))
    sweep = {}
    for ef in args.search_expansions:  # the product's search at other graph expansions, after the figures above
        graph.expansion_search = ef
        lat, hits = search_pass()
        sweep[str(ef)] = {"query_ms_p50": percentile_ms(lat, 50), "query_ms_p99": percentile_ms(lat, 99),
                          "recall_at_10": float(np.mean([len(t & f) / 10 for t, f in zip(truth, hits, strict=True)]))}
    graph.expansion_search = HNSW_EXPANSION_SEARCH
    if sweep:
        out["search_by_expansion"] = sweep
    out["search_expansion"] = HNSW_EXPANSION_SEARCH
    out["search_query_ms_p50"] = summary([percentile_ms(t, 50) for t in search_lat])
    out["search_query_ms_p99"] = summary([percentile_ms(t, 99) for t in search_lat])
    out["search_recall_at_10"] = float(np.mean([len(t & f) / 10
                                                for t, f in zip(truth, search_found[-1], strict=True)]))
    out["bytes_per_vector"].update({"graph_disk": disk / size, "graph_ram": graph.memory_usage / size})
    return out


# -- the ANN libraries on PyPI, side by side -----------------------------------------------------------------
def part_libraries(args: argparse.Namespace) -> dict:
    """usearch (what the index uses), hnswlib and faiss-cpu HNSW with the same graph settings (M=16,
    efConstruction=128, ef=128) on the same vectors: build time, query p50, recall@10 against exact search.
    hnswlib and faiss-cpu are not focaltag dependencies: a library that is not installed is reported as such."""
    n = 20_000
    x32 = unit_rows(clustered(n, args.dim, args.clusters, 5))
    qs = queries_near(x32, args.queries, 6)
    truth = [set(exact_top(x32, q, 10)[0].tolist()) for q in qs]
    out: dict = {"n": n, "dim": args.dim}

    def measure(build, query) -> dict:
        t0 = time.perf_counter()
        index = build()
        built = time.perf_counter() - t0
        lat, hits = [], 0
        for q, t in zip(qs, truth, strict=True):
            t1 = time.perf_counter()
            keys = query(index, q)
            lat.append(time.perf_counter() - t1)
            hits += len(t & {int(k) for k in keys})
        return {"build_s": built, "query_ms_p50": percentile_ms(lat, 50), "recall_at_10": hits / (10 * len(qs))}

    out["usearch f16"] = measure(lambda: _graph(x32.astype(np.float16)), lambda g, q: g.search(q, 10).keys)
    try:
        import hnswlib

        def build_hnswlib():
            g = hnswlib.Index(space="cosine", dim=args.dim)
            g.init_index(max_elements=n, M=16, ef_construction=128)
            g.add_items(x32, np.arange(n))
            g.set_ef(128)
            return g
        out["hnswlib f32"] = measure(build_hnswlib, lambda g, q: g.knn_query(q, k=10)[0][0])
    except ImportError:
        out["hnswlib f32"] = "not installed"
    try:
        import faiss

        def build_faiss():
            g = faiss.IndexHNSWFlat(args.dim, 16, faiss.METRIC_INNER_PRODUCT)
            g.hnsw.efConstruction = 128
            g.add(x32)
            g.hnsw.efSearch = 128
            return g
        out["faiss-cpu f32"] = measure(build_faiss, lambda g, q: g.search(q[None, :], 10)[1][0])
    except ImportError:
        out["faiss-cpu f32"] = "not installed"
    return out


# -- a whole process on a large library ---------------------------------------------------------------------
def write_library(folder: Path, n: int, dim: int, clusters: int) -> Path:
    x = clustered(n, dim, clusters, 3)
    rng = np.random.default_rng(4)
    output = folder / "tags.jsonl"
    store = VectorStore(output)
    store.create(StoreHeader("won2020-mtat-musicnn", dim, {"n_chunks": 16, "adaptive": True, "hop_seconds": None}))
    with open(output, "w", encoding="utf-8") as out, store.open_append() as rec:
        for i in range(n):
            file = f"/music/artist{i % 997:03d}/album{i % 31:02d}/track{i:06d}.mp3"
            probs = rng.uniform(0, 1, len(TAGS))
            append_record(rec, path_key(file), x[i], dim)
            top = np.argsort(-probs)[:5]
            out.write(json_line({"file": file, "model": "won2020-mtat-musicnn", "duration": 200.0, "precision": "fp32",
                                 "chunks": 16, "tags": {t: round(float(p), 6) for t, p in zip(TAGS, probs, strict=True)},
                                 "top": [{"tag": TAGS[j], "probability": round(float(probs[j]), 6)} for j in top],
                                 "size": 5_000_000, "mtime": 1.7e9}) + "\n")
    return output


def part_process(args: argparse.Namespace) -> dict:
    n = args.library_size
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        output = write_library(Path(tmp), n, args.dim, args.clusters)
        written = time.perf_counter() - t0
        seed = "/music/artist000/album00/track000000.mp3"
        cli = [sys.executable, "-m", "focaltag", "similar", seed, "--library", str(output), "-n", "25", "--format",
               "json", "-q"]
        env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
        api = [sys.executable, "-c", "import sys; from focaltag.library.api import Library; "
               f"m = Library({str(output)!r}).similar({seed!r}, n=25); print(len(m))"]

        child_cpu: dict[str, list[float]] = {"cli": [], "api": []}

        def run(cmd: list[str], name: str = "") -> None:
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            done = subprocess.run(cmd, env=env, capture_output=True, text=True)
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            if done.returncode != 0:
                raise RuntimeError(f"{cmd[:4]} failed: {done.stderr.strip()[-500:]}")
            if name:  # the process's own CPU time: what its wall time would be on an idle core
                child_cpu[name].append(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)

        t0 = time.perf_counter()
        run(cli)
        first = time.perf_counter() - t0
        bare = [sys.executable, "-c", "import numpy, usearch.index"]
        times = interleave({"cli": lambda: run(cli, "cli"), "api": lambda: run(api, "api"),
                            "import_numpy_usearch": lambda: run(bare)}, args.repeats)
        index_bytes = sum(f.stat().st_size for f in (output.parent / "tags.jsonl.vectors" / "index").iterdir())
        return {"n": n, "dim": args.dim, "jsonl_mb": output.stat().st_size / 2**20, "write_s": written,
                "first_cli_call_s (builds the index)": first, "cli_warm_s": summary(walls(times["cli"])),
                "api_fresh_interpreter_s": summary(walls(times["api"])),
                "api_process_cpu_s": summary(child_cpu["api"]), "cli_process_cpu_s": summary(child_cpu["cli"]),
                "python_importing_numpy_and_usearch_s": summary(walls(times["import_numpy_usearch"])),
                "index_bytes_per_track": index_bytes / n}


# -- the cost of embeddings in a library run ----------------------------------------------------------------
def part_embeddings(args: argparse.Namespace) -> dict:
    from focaltag.cli import main

    shared = Path(os.environ.get("FOCALTAG_SHARED", REPO.parent / "shared"))
    music, model = shared / "data" / "music", shared / "models" / "won2020" / "mtat-musicnn.pth"
    if not model.exists():
        return {"skipped": f"{model} is not available"}
    with tempfile.TemporaryDirectory() as tmp:
        os.environ.setdefault("FOCALTAG_CACHE_DIR", str(Path(tmp) / "cache"))
        quiet = contextlib.redirect_stderr(io.StringIO())
        with quiet:
            main(["models", "import", "won2020-mtat-musicnn", str(model)])
        recordings = [f for f in sorted(music.iterdir()) if f.suffix in (".ogg", ".mp3")]
        # copies under other names, so a run is long enough (about a minute) for a few per cent to show
        files = []
        for copy in range(args.embedding_copies):
            folder = Path(tmp) / "library" / f"copy{copy}"
            folder.mkdir(parents=True)
            for f in recordings:
                shutil.copyfile(f, folder / f.name)
                files.append(str(folder / f.name))
        counter = iter(range(10_000))

        last_plain: list[Path] = [Path()]

        def tag(*extra: str) -> None:
            out = Path(tmp) / f"run{next(counter)}.jsonl"
            if not extra:
                last_plain[0] = out
            with contextlib.redirect_stderr(io.StringIO()):
                code = main(["tag", *files, "-m", "won2020-mtat-musicnn", "-o", str(out), "-q", *extra])
            if code != 0:
                raise RuntimeError(f"tag {' '.join(extra)} failed with {code}")

        # one core, as bench/ray.py's local run: unbound, the scheduler moves the run between the cores, which cost
        # 7-12 % CPU per track on this machine (README, "On a Ray cluster"), more than the 5 % asked about
        core = min(os.sched_getaffinity(0))
        every = os.sched_getaffinity(0)
        os.sched_setaffinity(0, {core})
        tag()  # warm-up: the model file, the decoders, the page cache
        # CPU seconds of this process (all its threads) beside the wall time: on a shared machine the wall time
        # swings by more than the few per cent asked about, the CPU time much less
        try:
            times = interleave({"plain": tag, "embeddings": lambda: tag("--embeddings")}, args.repeats,
                               alternate=True)
            paired = _paired_parts("won2020-mtat-musicnn", args.repeats)  # on the same core
        finally:
            os.sched_setaffinity(0, every)
        # the whole run's cost implied by the paired parts: every chunk's forward grows by the paired ratio, and
        # every track adds its mean and record; the plain run's CPU per track is the base
        plain_track = float(np.median(cpus(times["plain"]))) / len(files)
        chunks = sum(json.loads(line).get("chunks", 16) for line in last_plain[0].read_text(encoding="utf-8").splitlines())
        batches_per_track = chunks / len(files) / paired["batch_chunks"]
        extra = (batches_per_track * (paired["forward_with_embedding_cpu_s"]["median"]
                                      - paired["forward_cpu_s"]["median"])
                 + paired["per_track_store_and_mean_cpu_s"]["median"])
        paired["implied_run_cost"] = {"plain_cpu_s_per_track": plain_track, "chunks_per_track": chunks / len(files),
                                      "extra_cpu_s_per_track": extra, "ratio": (plain_track + extra) / plain_track}
        return {"files": len(files), "recordings": len(recordings), "copies": args.embedding_copies,
                "paired": paired,
                "bound_to_core": core,
                "model": "won2020-mtat-musicnn",
                "plain_s": summary(walls(times["plain"])), "embeddings_s": summary(walls(times["embeddings"])),
                "embeddings_vs_plain": ratio_summary(walls(times["embeddings"]), walls(times["plain"])),
                "plain_cpu_s": summary(cpus(times["plain"])), "embeddings_cpu_s": summary(cpus(times["embeddings"])),
                "embeddings_vs_plain_cpu": ratio_summary(cpus(times["embeddings"]), cpus(times["plain"]))}


def _paired_parts(model: str, repeats: int, pairs: int = 40) -> dict:
    """What ``--embeddings`` adds, each part timed against its plain twin in one process, call by call in
    alternating order (A B, B A, ...), so the machine's drift from minute to minute (10 % and more on this
    virtual machine, more than the 5 % in question) falls on both alike:

    * one batch through the network with the layer before the classifier returned, against the plain forward;
    * per track: the chunk mean of the embeddings and one store record (``append_record``: a write and a flush).
    """
    from focaltag.inference import InferenceOptions, Tagger

    tagger = Tagger(model, InferenceOptions(embeddings=True))
    rng = np.random.default_rng(0)
    batch = (0.1 * rng.standard_normal((tagger.batch_size, tagger.chunk_samples))).astype(np.float32)
    run = tagger.predictor.run
    run(batch), run(batch, embeddings=True)  # warm-up
    plain, with_emb = [], []
    for _ in range(repeats):
        t = {False: 0.0, True: 0.0}
        for i in range(pairs):
            for emb in ((False, True) if i % 2 == 0 else (True, False)):
                c0 = time.process_time()
                run(batch, embeddings=emb)
                t[emb] += time.process_time() - c0
        plain.append(t[False] / pairs)
        with_emb.append(t[True] / pairs)
    chunk_embeddings = rng.standard_normal((16, tagger.embedding_size or 1)).astype(np.float32)
    per_track = []
    with tempfile.TemporaryDirectory() as tmp, open(Path(tmp) / "records.bin", "wb") as out:
        for _ in range(repeats):
            c0 = time.process_time()
            for k in range(1000):
                append_record(out, k, chunk_embeddings.mean(axis=0, dtype=np.float64), chunk_embeddings.shape[1])
            per_track.append((time.process_time() - c0) / 1000)
    return {"batch_chunks": int(batch.shape[0]), "batches_per_repeat": pairs,
            "forward_cpu_s": summary(plain), "forward_with_embedding_cpu_s": summary(with_emb),
            "forward_with_embedding_vs_plain": ratio_summary(with_emb, plain),
            "per_track_store_and_mean_cpu_s": summary(per_track)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_protocol_arguments(parser, quick="sizes 10k and 100k, a 20k-vector precision check, a 20k-track library")
    parser.add_argument("--parts", default="precision,scale,process,embeddings",
                        help="comma-separated: precision, scale, process, embeddings, libraries (usearch against "
                        "hnswlib and faiss-cpu, when they are installed)")
    parser.add_argument("--dim", type=int, default=200, help="vector width (Won et al.'s Musicnn: 200)")
    parser.add_argument("--sizes", default=None, help="comma-separated vector counts (default 10000,100000,1000000)")
    parser.add_argument("--embedding-copies", type=int, default=10,
                        help="the 'embeddings' part tags this many copies of each shared recording per run")
    parser.add_argument("--queries", type=int, default=200, help="queries per repeat at each size")
    parser.add_argument("--graph-max", type=int, default=None, metavar="N",
                        help="above N vectors measure exact search only (the graph's build takes long on a busy "
                        "machine)")
    parser.add_argument("--search-expansions", default="",
                        help="comma-separated HNSW search expansions to sweep with the product's search after the "
                        "main figures (recall@10 and latency at each; one pass of the queries each)")
    parser.add_argument("--clusters", type=int, default=64, help="clusters of the synthetic vectors")
    parser.add_argument("--library-size", type=int, default=None, help="tracks of the 'process' library "
                        "(default 100000; 20000 with --quick)")
    args = parser.parse_args()
    sizes = [int(s) for s in (args.sizes or ("10000,100000" if args.quick else "10000,100000,1000000")).split(",")]
    args.library_size = args.library_size or (20_000 if args.quick else 100_000)
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    args.search_expansions = [int(e) for e in args.search_expansions.split(",") if e.strip()]
    run = Run("bench/similar_index.py", args, name="similar-index")
    results: dict = {"exact_max": EXACT_MAX}
    for part in parts:
        print(f"-- {part}", file=sys.stderr, flush=True)
        if part == "precision":
            results["precision"] = part_precision(args)
        elif part == "scale":
            results["scale"] = [part_scale(args, size) for size in sizes]
        elif part == "process":
            results["process"] = part_process(args)
        elif part == "libraries":
            results["libraries"] = part_libraries(args)
        elif part == "embeddings":
            results["embeddings"] = part_embeddings(args)
        else:
            parser.error(f"unknown part {part!r}")
        print(json.dumps(results[part], indent=1), file=sys.stderr, flush=True)
    run.finish(results)


if __name__ == "__main__":
    main()
