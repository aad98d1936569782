"""Render the README's benchmark tables from the results files in ``bench/results/``.

Every table of measured figures in the README sits between ``<!-- bench:NAME -->`` and ``<!-- /bench:NAME -->``;
this script rewrites what is between them, and nothing else, from the latest results file of each CPU kind that
holds the block's figures (a full run before a ``--quick`` one). Each table gets a caption with the script, the
date, the CPU (model, kind, real or emulated), the run's mode and arguments, the repeats and the load average
before and after; each figure is the median [min–max] of the run's interleaved repeats (``bench/_protocol.py``).
When several CPU kinds were measured, each gets its own labelled table; an emulated run is labelled "emulated"
and listed after the real ones.

    python bench/render.py [--readme README.md] [--results bench/results] [--check]

``--check`` rewrites nothing and exits 1 when the README differs from what the results files give
(``tests/unit/test_readme_figures.py`` runs the same comparison).
"""

from __future__ import annotations

import argparse
import difflib
import json
import re
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
RESULTS_DIR = REPO / "bench" / "results"
README = REPO / "README.md"
BLOCK = re.compile(r"(<!-- bench:(?P<name>[a-z0-9-]+) -->\n)(?P<body>.*?)(<!-- /bench:(?P=name) -->)", re.S)
Doc = dict[str, Any]


# -- numbers --------------------------------------------------------------------------------------------------
def _number(x: float, style: str) -> str:
    if style == "x":  # x real time, speed-ups
        return f"{x:,.0f}" if abs(x) >= 100 else f"{x:.1f}" if abs(x) >= 10 else f"{x:.2f}"
    if style == "s":  # seconds
        return f"{x:,.0f}" if abs(x) >= 100 else f"{x:.1f}" if abs(x) >= 10 else f"{x:.2f}" if abs(x) >= 1 \
            else f"{x:.3f}"
    if style == "mb":
        return f"{x:,.0f}"
    if style == "rate":
        return f"{x:,.0f}" if abs(x) >= 100 else f"{x:.1f}" if abs(x) >= 10 else f"{x:.2f}"
    if style == "share":
        return f"{x:.3f}"
    raise ValueError(f"unknown number style {style!r}")


UNITS = {"x": "x", "s": " s", "mb": " MB", "rate": "", "share": ""}


def fig(summary: dict[str, Any] | None, style: str) -> str:
    """A figure as ``median [min–max]``, the unit after the median (a speed-up: ``MEDIANx [MIN–MAX]``)."""
    if summary is None:
        return "—"
    med, lo, hi = (_number(summary[k], style) for k in ("median", "min", "max"))
    return f"{med}{UNITS[style]} [{lo}–{hi}]"


def sci(x: float | None) -> str:
    return "—" if x is None else f"{x:.1e}"


def table(header: list[str], rows: Iterable[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header),
            *("| " + " | ".join(row) + " |" for row in rows)]


# -- results files --------------------------------------------------------------------------------------------
def load_all(results_dir: Path) -> list[tuple[Path, Doc]]:
    out = []
    for path in sorted(Path(results_dir).glob("*.json")):
        doc = json.loads(path.read_text(encoding="utf-8"))
        if isinstance(doc, dict) and {"run", "results"} <= doc.keys():
            out.append((path, doc))
    return out


def _has(doc: Doc, keys: tuple[str, ...]) -> bool:
    return all(doc["results"].get(k) not in (None, {}) for k in keys)


def pick(docs: list[tuple[Path, Doc]], names: tuple[str, ...], keys: tuple[str, ...]) -> list[tuple[Path, Doc]]:
    """The latest run of each (results name, CPU kind) that holds ``keys``; a full run wins over a quick one.
    Real CPUs first, emulated after."""
    best: dict[tuple[str, str], tuple[Path, Doc]] = {}
    for path, doc in docs:
        run = doc["run"]
        if run.get("name") not in names or not _has(doc, keys):
            continue
        key = (run["name"], run["kind"])
        rank = (run.get("mode") == "full", run.get("finished", ""), path.name)
        held = best.get(key)
        if held is None or rank > (held[1]["run"].get("mode") == "full", held[1]["run"].get("finished", ""),
                                   held[0].name):
            best[key] = (path, doc)
    return sorted(best.values(), key=lambda pd: (pd[1]["run"].get("emulated", False), names.index(pd[1]["run"]["name"]),
                                                 pd[1]["run"]["kind"]))


def caption(path: Path, doc: Doc) -> str:
    run = doc["run"]
    cpu = run["cpu"]
    kind = run["kind"]
    if run.get("emulated"):
        where = (f"**emulated {run.get('emulates', '').upper()}** on this CPU ({run.get('emulation_note', '')}): "
                 "not a real CPU of that kind")
    else:
        where = "real CPU"
    device = run.get("device") or {}
    machine = f"{device['gpu']} with " if device.get("gpu") else ""
    argv = [a for i, a in enumerate(run.get("argv", []))
            if a != "--results-dir" and (i == 0 or run["argv"][i - 1] != "--results-dir")]
    mode = f"{run.get('mode', 'full')} run" + (f" (`{' '.join(argv)}`)" if argv else "")
    load = run.get("load_before", [None])[0], (run.get("load_after") or [None])[0]
    int8 = run.get("int8_kernels")
    kernels = f"; onnxruntime int8 kernels: {int8['level']} (from the CPU flags)" if int8 else ""
    commit = (run.get("git") or {}).get("commit") or "unknown"
    return (f"*`{run['script']}`, {run['date']}: {machine}{cpu['model']}, {cpu['cores']} cores, CPU kind `{kind}`, "
            f"{where}{kernels}; {mode}, {run.get('repeats')} interleaved repeats, load average {load[0]} → "
            f"{load[1]}; median [min–max]; commit {commit[:10]}; `bench/results/{path.name}`.*")


# -- one renderer per block -----------------------------------------------------------------------------------
def _decode(r: Doc) -> list[str]:
    names = {"libsndfile": "libsndfile", "pyav": "PyAV (FFmpeg)", "focaltag": "focaltag's choice",
             "librosa": "librosa.load"}
    rows = []
    for fmt, row in r["decode"].items():
        cells = ["cannot read" if row.get(m) is None else
                 f"{fig(row[m]['x_realtime'], 'x')}, {fig(row[m]['peak_rss_mb'], 'mb')}" for m in names]
        rows.append([fmt, *cells])
    return table(["file: x real time, peak RSS", *names.values()], rows)


def _decode_seek(r: Doc) -> list[str]:
    rows = [[f"{fmt}, {s['minutes']} min", fig(s["whole_s"], "s"), fig(s["seek16_s"], "s"), fig(s["speedup"], "x"),
             f"{fig(s['whole_rss_mb'], 'mb')} / {fig(s['seek_rss_mb'], 'mb')}"] for fmt, s in r["seek"].items()]
    return table(["file (looped)", "whole decode", "16 chunks by seeking", "speed-up", "peak RSS whole / seek"], rows)


def _library(r: Doc) -> list[str]:
    def row(label: str, x: Doc) -> list[str]:
        return [label, f"{x['files']:,}", fig(x["files_per_s"], "rate"), fig(x["peak_rss_mb"], "mb"),
                fig(x["rerun_skip_s"], "s"), fig(x["rerun_peak_rss_mb"], "mb")]

    rows = [row("null network", x) for x in r["runs"]]
    if r.get("real_network"):
        rows.append(row("real tiny network", r["real_network"]))
    rows.append(["largest / smallest library", "", fig(r["files_per_s_ratio"], "x"), fig(r["rss_ratio"], "x"), "",
                 fig(r["rerun_rss_ratio"], "x")])
    return table(["run", "files", "files/s", "peak RSS", "rerun (all skipped)", "rerun peak RSS"], rows)


def _evaluate(r: Doc) -> list[str]:
    return table(["`evaluate` on a " + " x ".join(f"{n:,}" for n in r["matrix"]) + f" matrix, {r['resamples']:,} "
                  "bootstrap resamples", "focaltag", "sklearn per resample (extrapolated)", "speed-up"],
                 [["wall time", fig(r["focaltag_s"], "s"), fig(r["baseline_s_extrapolated"], "s"),
                   fig(r["speedup"], "x")],
                  ["process CPU time", fig(r["focaltag_cpu_s"], "s"), fig(r["baseline_cpu_s_extrapolated"], "s"),
                   fig(r["speedup_cpu"], "x")]])


def _prepare(r: Doc) -> list[str]:
    files = r["files"]
    ref, prep = r["reference"], r["prepare"]
    return table(["`data prepare`: " + f"{files['n_30s']} x 30 s + {files['n_240s']} x 240 s generated MP3",
                  "figure"], [
        ["reference path (`librosa.load` + float32 `.npy`, 1 process): audio s per s", fig(ref["audio_s_per_s"], "rate")],
        [f"`prepare_cache`, {prep['workers']} workers: audio s per s", fig(prep["audio_s_per_s"], "rate")],
        ["throughput, prepare / reference", fig(r["throughput_ratio"], "x")],
        ["CPU-time projection to idle cores (workers x reference CPU / prepare CPU)",
         fig(r["throughput_ratio_cpu_projection"], "x")],
        ["bytes on disk, prepare / reference", f"{r['bytes_ratio']}x"],
        ["training loader, chunks/s, 0 / 2 workers", f"{fig(r['loader']['chunks_per_s_workers0'], 'rate')} / "
         f"{fig(r['loader']['chunks_per_s_workers2'], 'rate')}"],
        [f"CPU training step of the paper model (batch {r['train_step_cpu']['batch']}), chunks/s",
         fig(r["train_step_cpu"]["chunks_per_s"], "rate")],
        ["loader (faster of the two) / CPU training step", fig(r["loader_vs_cpu_train_ratio"], "x")]])


def _train(r: Doc) -> list[str]:
    rows = [[f"`{name}`", fig(v["samples_per_s"], "rate"), fig(v.get("speedup"), "x") if name != "reference" else "1"]
            for name, v in r["variants"].items()]
    return table([f"training step, {r['model']}, batch {r['batch']}, {r['threads']} thread(s)",
                  f"samples/s ({r['timing']})", "speed-up vs reference (per round)"], rows)


def _serve(r: Doc) -> list[str]:
    return table([f"`focaltag serve`, {r['requests']} requests, {r['concurrency']} at a time, width "
                  f"{r['model_width']}", "figure"], [
        ["requests/s", fig(r["requests_per_s"], "rate")],
        ["latency p50 / p95", f"{fig(r['latency_p50_s'], 's')} / {fig(r['latency_p95_s'], 's')}"],
        ["errors (all rounds)", str(r["errors"])],
        ["server peak RSS", fig(r["server_peak_rss_mb"], "mb")],
        ["one `focaltag tag` process, peak RSS", fig(r["tag_process_peak_rss_mb"], "mb")],
        ["server / tag process RSS", fig(r["rss_ratio_server_vs_tag"], "x")]])


def _coverage(r: Doc) -> list[str]:
    def cw(x: Doc) -> str:
        return f"{fig(x['coverage'], 'share')} / {fig(x['mean_width'], 'share')}"

    rows = [[f"{int(size):,}", cw(s["PR-AUC-macro"]), cw(s["ROC-AUC-macro"]), cw(s["paired difference PR-AUC-macro"]),
             cw(s["paired difference ROC-AUC-macro"]), fig(s["PR-AUC-macro"]["percentile_coverage"], "share")]
            for size, s in r["sizes"].items()]
    return table(["tracks", "macro PR-AUC: coverage / mean width", "macro ROC-AUC", "paired Δ PR-AUC",
                  "paired Δ ROC-AUC", "old percentile interval, PR-AUC"], rows)


def _tag_precisions(r: Doc) -> list[str]:
    lines: list[str] = []
    for s in r["precisions"].values():
        label = "one paper-size ResNet" if s["members"] == 1 else f"{s['members']}-member ensemble of them"
        rows = [["plain float32 loop", "", fig(s["plain_fp32_loop_x_realtime"], "x"), "1", "", "", "", "16", ""]]
        for mode, m in s.items():
            if not isinstance(m, dict) or "x_realtime" not in m:
                continue
            rows.append([f"`{mode}`", m["precision"], fig(m["x_realtime"], "x"), fig(m["vs_plain_loop"], "x"),
                         fig(m["vs_fp32_tagger"], "x"), sci(m["max_abs_diff_vs_fp32"]),
                         f"{m['top5_equal_fp32']} of {m['tracks']}", f"{m['mean_chunks']}", f"{m['rechecked_per_run']}"])
        if lines:
            lines.append("")
        lines += table([f"{label}, {r['tracks']} tracks", "precision", "x real time", "vs plain loop",
                        "vs float32 Tagger", "max \\|Δp\\| vs float32", "top-5 = float32", "mean chunks",
                        "re-checked per run"], rows)
    return lines


def _tag_process(r: Doc) -> list[str]:
    p = r["process"]
    rows = [["plain float32 loop as a process", fig(p["plain_fp32_loop_s"], "s"), "1"]]
    for name, label in (("focaltag_tag_fp32", "`focaltag tag --precision fp32 --chunks 16`"),
                        ("focaltag_tag_auto", "`focaltag tag --precision auto --chunks 16`"),
                        ("focaltag_tag_default", "`focaltag tag` (defaults: auto precision, adaptive chunks)")):
        rows.append([label, fig(p[f"{name}_s"], "s"), fig(p[f"{name}_vs_plain"], "x")])
    return table([f"whole process, {r['tracks']} tracks", "wall time", "vs plain loop process"], rows)


def _tag_adaptive(r: Doc) -> list[str]:
    a = r["adaptive"]
    rows = []
    for key, v in a.items():
        if not isinstance(v, dict):
            continue
        arch, rule = key.split("_", 1)
        rows.append([f"{arch.upper()}, {'decisions at 0.1' if rule == 'decisions' else 'ordered top-5'}",
                     f"{v['top5_equal_share']}", "—" if v["decisions_equal_share"] is None else
                     f"{v['decisions_equal_share']}", f"{v['mean_chunks']}", fig(v["speedup"], "x")])
    return table([f"adaptive vs 16 chunks, {a['tracks_shared']} shared + {a['tracks_generated']} generated tracks",
                  "top-5 equal (share)", "decisions equal (share)", "mean chunks", "speed-up"], rows)


def _tag_modes(r: Doc) -> list[str]:
    modes = r["modes"]
    rows = [["plain float32 loop", "fp32", "0", fig(modes["plain_fp32_loop"]["x_realtime"], "x"), "1", "", "", ""]]
    for name, m in modes.items():
        if name == "plain_fp32_loop":
            continue
        rows.append([f"`{name}`", str(m.get("precision", "")), str(m.get("workers", "")), fig(m["x_realtime"], "x"),
                     fig(m["vs_plain_loop"], "x"), sci(m["max_abs_diff_vs_fp32"]),
                     "yes" if m["top5_equal_fp32"] else "no", f"{m['rechecked_per_run']}"])
    read = r.get("read") or {}
    lines = table([f"paper ResNet, {r['tracks']} tracks, {r['chunks_per_track']} chunks", "precision",
                   "decoding threads", "x real time", "vs plain loop", "max \\|Δp\\| vs float32", "top-5 = float32",
                   "re-checked per run"], rows)
    if read:
        lines += ["", *table(["chunk reader alone", "seconds per track"],
                             [[m.replace("_s_per_track", ""), fig(v, "s")] for m, v in read.items()])]
    return lines


def _tag_architectures(r: Doc) -> list[str]:
    rows = [[name, fig(a["fp32_x_realtime"], "x"), fig(a["bf16_x_realtime"], "x"), fig(a["bf16_vs_fp32"], "x"),
             fig(a["bf16_all_no_recheck_vs_fp32"], "x"), sci(a["bf16_max_abs_diff"]),
             "yes" if a["bf16_top5_equal"] else "no", f"{a['bf16_rechecked_tracks_per_run']}"]
            for name, a in r["architectures"].items()]
    return table([f"architecture, {r['tracks']} tracks", "float32 x real time",
                  "bf16 (float32-grade first layers, re-checked) x real time",
                  "bf16 vs float32", "bf16, every layer, no re-check, vs float32", "bf16 max \\|Δp\\|",
                  "bf16 top-5 = float32", "re-checked per run"], rows)


def _tag_ceiling(r: Doc) -> list[str]:
    c = r["ceiling"]
    rows = [["multiply-accumulates per chunk", f"{c['gmacs_per_chunk']} G"]]
    rows += [[f"{k} matmul, G op/s", fig(v, "rate")] for k, v in c["native_matmul_gops"].items()]
    rows += [[f"decoding {c['chunks']} chunks, CPU s", fig(c["decode_cpu_s"], "s")],
             ["bf16 forward alone, GFLOP/s", fig(c["forward_bf16_gflops"], "rate")],
             ["bf16 forward alone, x real time", fig(c["forward_only_x_realtime"], "x")],
             [f"ceiling ({c['ceiling_precision']} peak + decoding), x real time", fig(c["ceiling_x_realtime"], "x")]]
    if c.get("best_mode_share_of_ceiling") is not None:
        rows.append(["best mode's share of the ceiling (medians)", f"{c['best_mode_share_of_ceiling']}"])
    return table(["what the machine allows", "figure"], rows)


def _tag_rss(r: Doc) -> list[str]:
    s = r["rss"]
    return table(["peak RSS, fresh process", "figure"], [
        [f"tagging a generated {s['rss_60min_duration_s'] / 60:.0f}-minute MP3", fig(s["rss_60min_mp3_mb"], "mb")],
        ["loading the model only", fig(s["rss_model_only_mb"], "mb")]])


def _head_train(r: Doc) -> list[str]:
    rows = [[f"{name.rsplit('-', 1)[0]}: {int(name.rsplit('-', 1)[1]):,}-value embeddings", fig(x["wall_s"], "s"),
             fig(x["cpu_s"], "s")] for name, x in r.items() if isinstance(x, dict) and "wall_s" in x]
    return table([f"`head train` on {r['tracks']:,} stored embeddings, {r['tags']} tags", "wall time",
                  "process CPU time"], rows)


def _core_before_after(r: Doc) -> list[str]:
    labels = {"paper_resnet": "paper-size ResNet (random weights)", "mtat_musicnn": "won2020-mtat-musicnn"}
    rows = [[labels.get(name, name), fig(x["before_s"], "s"), fig(x["after_s"], "s"), fig(x["before_over_after"], "x")]
            for name, x in r.items() if isinstance(x, dict) and "before_s" in x]
    return table([f"`focaltag tag` of {r['files']} shared recordings, defaults, whole process",
                  f"before (`{r['before']}`)", "after", "before / after (per round; above 1: faster now)"], rows)


def _ms(summary: dict[str, Any] | None) -> str:
    """Milliseconds as ``median ms [min–max]`` (query latencies, kept in ms by ``bench/similar_index.py``)."""
    if summary is None:
        return "—"
    med, lo, hi = (summary[k] for k in ("median", "min", "max"))
    digits = 2 if med < 10 else 1 if med < 100 else 0
    return f"{med:.{digits}f} ms [{lo:.{digits}f}–{hi:.{digits}f}]"


def _similar_scale(r: Doc) -> list[str]:
    rows = []
    for x in r["scale"]:
        b = x["bytes_per_vector"]
        build = x.get("graph_build_s")
        built = "—" if build is None else (fig(build, "s") if isinstance(build, dict) else
                                          f"{_number(build, 's')} s (1 build)")
        rows.append([f"{x['n']:,}", "exact" if x.get("searched_exactly_by_the_index") else "HNSW",
                     _ms(x["exact_query_ms_p50"]), _ms(x["exact_query_ms_p99"]),
                     _ms(x.get("graph_query_ms_p50")), _ms(x.get("graph_query_ms_p99")),
                     "—" if "graph_recall_at_10" not in x else f"{x['graph_recall_at_10']:.3f}",
                     "—" if "search_recall_at_10" not in x else f"{x['search_recall_at_10']:.3f}", built,
                     "—" if "graph_disk" not in b else f"{b['graph_disk']:,.0f} / {b['graph_ram']:,.0f}"])
    head = [f"vectors of {r['scale'][0]['dim']} values", "the index searches", "exact p50", "exact p99", "HNSW p50",
            "HNSW p99", "HNSW recall@10", "HNSW + re-scored 64 (`similar`'s search) recall@10", "HNSW build",
            "HNSW bytes/vector, disk / RAM"]
    out = table(head, rows)
    sweeps = [(x["n"], x.get("search_expansion"), x["search_by_expansion"]) for x in r["scale"]
              if x.get("search_by_expansion")]
    for n, default, sweep in sweeps:
        out += ["", *table([f"`similar`'s search over the HNSW graph of {n:,} vectors, by search expansion "
                            f"(one pass; the run's default was {default})", "p50", "p99", "recall@10"],
                           [[e, f"{v['query_ms_p50']:.2f} ms", f"{v['query_ms_p99']:.2f} ms",
                             f"{v['recall_at_10']:.3f}"]
                            for e, v in sweep.items()])]
    return out


def _similar_precision(r: Doc) -> list[str]:
    p = r["precision"]
    rec = p["recall_at_10_vs_float32"]
    return [f"Store precision on {p['n']:,} vectors: recall@10 against float32 of float16 {rec['float16']:.4f}, of "
            f"int8 (one scale per vector, no re-rank) {rec['int8']:.4f}; bytes per vector: "
            + ", ".join(f"{k} {v}" for k, v in p["bytes_per_vector"].items()) + "."]


def _similar_process(r: Doc) -> list[str]:
    x = r["process"]
    return table([f"a {x['n']:,}-track library, seed in the library", "wall time", "process CPU time"], [
        ["first `focaltag similar` (builds the index, once)", f"{_number(x['first_cli_call_s (builds the index)'], 's')} s",
         "—"],
        ["`Library(...).similar(...)` in a fresh Python process", fig(x["api_fresh_interpreter_s"], "s"),
         fig(x.get("api_process_cpu_s"), "s")],
        ["of which: `python -c 'import numpy, usearch.index'`", fig(x.get("python_importing_numpy_and_usearch_s"), "s"),
         "—"],
        ["`focaltag similar` (the command)", fig(x["cli_warm_s"], "s"), fig(x.get("cli_process_cpu_s"), "s")]])


def _similar_embeddings(r: Doc) -> list[str]:
    x = r["embeddings"]
    what = (f"{x['files']} files ({x['copies']} copies of {x['recordings']} recordings)" if "copies" in x
            else f"{x['files']} recordings")
    return table([f"`focaltag tag` of {what}, {x['model']}", "wall time", "process CPU time"], [
        ["without --embeddings", fig(x["plain_s"], "s"), fig(x.get("plain_cpu_s"), "s")],
        ["with --embeddings", fig(x["embeddings_s"], "s"), fig(x.get("embeddings_cpu_s"), "s")],
        ["ratio (per round)", fig(x["embeddings_vs_plain"], "x"), fig(x.get("embeddings_vs_plain_cpu"), "x")]]
    ) + _similar_embedding_parts(x.get("paired"))


def _similar_embedding_parts(x: Doc | None) -> list[str]:
    if x is None:
        return []
    implied = x["implied_run_cost"]
    return ["", *table(["what `--embeddings` adds, timed against its plain twin call by call", "process CPU time"], [
        [f"a batch of {x['batch_chunks']} chunks through the network, plain", fig(x["forward_cpu_s"], "s")],
        ["the same batch, the embedding returned too", fig(x["forward_with_embedding_cpu_s"], "s")],
        ["ratio (per round)", fig(x["forward_with_embedding_vs_plain"], "x")],
        ["per track: the chunk mean and one store record",
         "{} s ({} to {})".format(*(sci(x["per_track_store_and_mean_cpu_s"][k]) for k in ("median", "min", "max")))],
        [f"implied for the run above ({implied['chunks_per_track']:.1f} chunks and "
         f"{implied['plain_cpu_s_per_track']:.3f} CPU s per track)", f"{implied['ratio']:.3f}x"]])]


def _similar_libraries(r: Doc) -> list[str]:
    x = r["libraries"]
    rows = [[name, f"{_number(v['build_s'], 's')} s", f"{v['query_ms_p50']:.2f} ms", f"{v['recall_at_10']:.4f}"]
            for name, v in x.items() if isinstance(v, dict)]
    return table([f"HNSW on {x['n']:,} vectors of {x['dim']} values (one build each)", "build", "query p50",
                  "recall@10"], rows)


_RAY_RUNS = (("local_1cpu", "local run pinned to one CPU (`taskset`)"), ("ray_1_node", "Ray, 1 node of 1 CPU"),
             ("ray_2_nodes", "Ray, 2 nodes of 1 CPU each"))


def _ray_table(x: Doc, what: str, actors: str) -> list[str]:
    def cpu(name: str, role: str) -> str:
        return fig(x["contenders"][name]["cpu_s_by_role"].get(role), "s")

    rows = [[label, fig(x["contenders"][name]["tracks_per_s"], "rate"), fig(x["contenders"][name]["seconds"], "s"),
             cpu(name, "cli_driver"), cpu(name, actors), cpu(name, "ray_daemons")] for name, label in _RAY_RUNS]
    proj = x.get("projection_dedicated_cpus", {})
    rows += [["1 node / local run (per round; goal: at least 0.85x)", fig(x["ray_1_node_vs_local"], "x"), "", "", "",
              ""],
             ["2 nodes / 1 node (per round; goal: at least 1.7x)", fig(x["scaling_1_to_2_nodes"], "x"), "", "", "", ""]]
    if proj:
        rows += [["estimate for dedicated CPUs, from the CPU seconds: 1 node / local", fig(proj["ray_1_node_vs_local"], "x"),
                  "", "", "", ""],
                 ["estimate for dedicated CPUs, from the CPU seconds: 2 nodes / 1 node",
                  fig(proj["scaling_1_to_2_nodes"], "x"), "", "", "", ""]]
    return table([what, "tracks/s", "seconds", "CPU s: driver (the CLI)", "CPU s: actors", "CPU s: Ray's daemons"],
                 rows)


def _ray(r: Doc) -> list[str]:
    x = r["tag"]
    out = _ray_table(x, f"`focaltag tag -o`: {x['files']} files, paper-size ResNet, float32", "model_actors")
    per_track = x.get("actor_cpu_s_per_track", {})
    if per_track:
        out += ["", *table(["model actors after start-up", "CPU s per track"],
                           [[label, fig(per_track[name], "s")] for name, label in _RAY_RUNS if name in per_track])]
    return out


def _ray_prepare(r: Doc) -> list[str]:
    x = r["prepare"]
    return _ray_table(x, f"`focaltag data prepare`: {x['tracks']} generated 60 s MP3s", "prepare_actors")


def _ray_evidence(r: Doc) -> list[str]:
    share, driver = r["session_share"], r["driver"]
    return table(["evidence", "figure"], [
        ["CPU cores one busy process of this session got", fig(share["one_process_cores"], "share")],
        ["CPU cores two busy processes of this session got together", fig(share["two_processes_cores"], "share")],
        ["two / one (per round)", fig(share["two_over_one"], "x")],
        *([["local run pinned to core 0, CPU s per file (paper ResNet, float32), the other core idle",
            fig(r["twin_core"]["alone_cpu_s_per_file"], "s")],
           ["the same while a second local run tags the other half on core 1", fig(r["twin_core"]["with_twin_cpu_s_per_file"], "s")],
           ["with a busy neighbour / alone (per round)", fig(r["twin_core"]["twin_over_alone"], "x")]]
          if "alone_cpu_s_per_file" in r.get("twin_core", {}) else []),
        ["driver CPU per file: one Ray call two deep (submit, wait, unpickle a result record)",
         fig(driver["ray_call_cpu_ms"], "share") + " ms"],
        ["driver CPU per file: its JSONL line (object, write + flush, stat)", fig(driver["line_cpu_ms"], "share") + " ms"],
        ["bytes per result record / per JSONL line", f"{driver['record_bytes']:,} / {driver['line_bytes']:,}"]])


@dataclass(frozen=True)
class Block:
    """A README block: which results names feed it, which result keys it needs, how its table is made."""

    names: tuple[str, ...]
    keys: tuple[str, ...]
    render: Callable[[Doc], list[str]]
    script: str


BLOCKS: dict[str, Block] = {
    "decode": Block(("decode",), ("decode",), _decode, "bench/decode.py"),
    "decode-seek": Block(("decode",), ("seek",), _decode_seek, "bench/decode.py"),
    "library": Block(("library",), ("runs",), _library, "bench/library.py"),
    "evaluate": Block(("evaluate",), ("speedup",), _evaluate, "bench/evaluate.py"),
    "prepare": Block(("prepare",), ("throughput_ratio",), _prepare, "bench/prepare.py"),
    "train": Block(("train",), ("variants",), _train, "bench/train.py"),
    "serve": Block(("serve",), ("requests_per_s",), _serve, "bench/serve.py"),
    "coverage": Block(("coverage",), ("sizes",), _coverage, "bench/coverage.py"),
    "tag-precisions": Block(("tag", "tag-emulate-avx2"), ("precisions",), _tag_precisions, "bench/tag.py"),
    "tag-process": Block(("tag", "tag-emulate-avx2"), ("process",), _tag_process, "bench/tag.py"),
    "tag-adaptive": Block(("tag", "tag-emulate-avx2"), ("adaptive",), _tag_adaptive, "bench/tag.py"),
    "tag-modes": Block(("tag", "tag-emulate-avx2"), ("modes",), _tag_modes, "bench/tag.py"),
    "tag-architectures": Block(("tag", "tag-emulate-avx2"), ("architectures",), _tag_architectures,
                               "bench/tag.py"),
    "tag-ceiling": Block(("tag", "tag-emulate-avx2"), ("ceiling",), _tag_ceiling, "bench/tag.py"),
    "tag-rss": Block(("tag", "tag-emulate-avx2"), ("rss",), _tag_rss, "bench/tag.py"),
    "head-train": Block(("head-train",), ("tracks",), _head_train, "bench/head_train.py"),
    "similar-index-scale": Block(("similar-index",), ("scale",), _similar_scale, "bench/similar_index.py"),
    "similar-index-precision": Block(("similar-index",), ("precision",), _similar_precision,
                                     "bench/similar_index.py"),
    "similar-index-process": Block(("similar-index",), ("process",), _similar_process, "bench/similar_index.py"),
    "similar-index-embeddings": Block(("similar-index",), ("embeddings",), _similar_embeddings,
                                      "bench/similar_index.py"),
    "similar-index-libraries": Block(("similar-index",), ("libraries",), _similar_libraries,
                                     "bench/similar_index.py"),
    "core-before-after": Block(("core-before-after",), ("paper_resnet",), _core_before_after,
                               "bench/core_before_after.py"),
    "ray": Block(("ray",), ("tag",), _ray, "bench/ray.py"),
    "ray-prepare": Block(("ray",), ("prepare",), _ray_prepare, "bench/ray.py"),
    "ray-evidence": Block(("ray",), ("session_share", "driver"), _ray_evidence, "bench/ray.py"),
}


def render_block(name: str, docs: list[tuple[Path, Doc]]) -> str:
    """The text between one block's markers: per CPU kind, a caption and a table; or why there is none."""
    if name not in BLOCKS:
        raise KeyError(f"README block bench:{name} has no renderer in bench/render.py (known: {', '.join(BLOCKS)})")
    block = BLOCKS[name]
    chosen = pick(docs, block.names, block.keys)
    if not chosen:
        return f"*No results file in `bench/results/` has these figures yet: run `python {block.script}`.*\n"
    parts = []
    for path, doc in chosen:
        parts.append("\n".join([caption(path, doc), "", *block.render(doc["results"])]))
    return "\n\n".join(parts) + "\n"


def render_readme(text: str, docs: list[tuple[Path, Doc]]) -> str:
    """``text`` with every ``bench:NAME`` block rewritten from ``docs``."""
    return BLOCK.sub(lambda m: m.group(1) + render_block(m.group("name"), docs) + m.group(4), text)


def blocks_of(text: str) -> dict[str, str]:
    """Every block's body in ``text``, by name."""
    return {m.group("name"): m.group("body") for m in BLOCK.finditer(text)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--readme", type=Path, default=README)
    parser.add_argument("--results", type=Path, default=RESULTS_DIR)
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 when the README differs")
    args = parser.parse_args(argv)
    text = args.readme.read_text(encoding="utf-8")
    docs = load_all(args.results)
    new = render_readme(text, docs)
    if args.check:
        if new != text:
            sys.stdout.writelines(difflib.unified_diff(text.splitlines(True), new.splitlines(True),
                                                       str(args.readme), "rendered"))
            return 1
        return 0
    if new != text:
        args.readme.write_text(new, encoding="utf-8")
    print(f"{args.readme}: {len(blocks_of(new))} blocks from {len(docs)} results files", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
