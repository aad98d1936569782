"""The README's benchmark figures come from results files, through one script, under one protocol.

* Every ``<!-- bench:NAME -->`` block of the README equals what ``bench/render.py`` makes from ``bench/results/``
  (so no figure in a block is typed by hand), and, checked independently of the renderer, every
  ``median [min–max]`` figure in a block is a figure of the results file its caption names.
* No table row outside the blocks carries a speed figure, and no docstring or ``--help`` text of ``bench/``, of
  the CLI or of the modules issue 32 named carries one.
* The protocol itself (``bench/_protocol.py``): interleaved rounds, medians and per-round ratios against numpy,
  the CPU kind from the flags, the results file's name and record, ``--repeats`` below 3 refused.
"""

from __future__ import annotations

import argparse
import ast
import importlib.util
import json
import re
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"
RESULTS = REPO / "bench" / "results"

# a speed figure: a multiplier (2.5x, 1,282x; not "4 x 56", "0.7 x the bands" nor "3x3"), a rate (files/s, GFLOP/s), "x real time"
# after a number, milliseconds, "N % faster"; a target stated with ">=" / "≥" / "at least" is not a measurement
SPEED = re.compile(
    r"(?<![\w.>=≥])(?<!>= )(?<!≥ )(?<!least )\d[\d,]*(?:\.\d+)?x(?![\w\d])"
    r"|\d\s?(?:GFLOP/s|GOP/s|TFLOP/s|MB/s|(?:files|chunks|samples|requests|tracks)/s)\b"
    r"|\d\s?x real[ -]time\b"
    r"|\d\s?ms\b"
    r"|\d\s?%\s+(?:faster|slower)", re.I)
FIGURE = re.compile(r"(-?[\d,]+(?:\.\d+)?)(?:x| s| MB)? \[(-?[\d,]+(?:\.\d+)?)–(-?[\d,]+(?:\.\d+)?)\]")
RESULTS_FILE = re.compile(r"`bench/results/([^`]+\.json)`")
DOC_FILES = [*sorted((REPO / "bench").glob("*.py")),
             REPO / "src/focaltag/inference/tagger.py", REPO / "src/focaltag/inference/int8.py",
             REPO / "src/focaltag/training/schedule.py"]


def _load(name: str) -> ModuleType:
    """A module of ``bench/`` by path (the folder is not put on ``sys.path``: it would shadow ``ray``)."""
    spec = importlib.util.spec_from_file_location(f"focaltag_bench_{name}", REPO / "bench" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


render = _load("render")
protocol = _load("_protocol")


# -- the README against the results files ---------------------------------------------------------------------
def test_readme_blocks_are_rendered_from_the_results_files() -> None:
    text = README.read_text(encoding="utf-8")
    blocks = render.blocks_of(text)
    assert blocks, "the README has no <!-- bench:NAME --> blocks"
    unknown = set(blocks) - set(render.BLOCKS)
    assert not unknown, f"README blocks without a renderer in bench/render.py: {sorted(unknown)}"
    rendered = render.render_readme(text, render.load_all(RESULTS))
    mismatched = [name for name, body in render.blocks_of(rendered).items() if blocks[name] != body]
    assert not mismatched, (f"README blocks {mismatched} differ from bench/results/: run "
                            "`python bench/render.py --readme README.md` (never edit them by hand)")
    assert rendered == text


def _summaries(value: object) -> list[dict]:
    """Every ``{"median", "min", "max"}`` figure anywhere in a results document."""
    if isinstance(value, dict):
        found = [value] if {"median", "min", "max"} <= value.keys() else []
        return found + [s for v in value.values() for s in _summaries(v)]
    if isinstance(value, list):
        return [s for v in value for s in _summaries(v)]
    return []


def _close(shown: str, value: float) -> bool:
    """``shown`` (as printed, with its own decimals) is ``value`` rounded."""
    number = float(shown.replace(",", ""))
    decimals = len(shown.split(".")[1]) if "." in shown else 0
    return abs(number - value) <= 0.5 * 10 ** -decimals + 1e-9 * abs(value)


def test_every_block_figure_is_a_figure_of_the_results_file_its_caption_names() -> None:
    """Independent of the renderer: parse the README, open the cited file, find each figure in it."""
    blocks = render.blocks_of(README.read_text(encoding="utf-8"))
    checked = 0
    for name, body in blocks.items():
        for part in body.split("\n\n*`bench/"):
            cited = RESULTS_FILE.findall(part)
            figures = FIGURE.findall(part)
            if not figures:
                continue
            assert len(set(cited)) == 1, f"bench:{name}: a table of figures must name its one results file"
            path = RESULTS / cited[0]
            assert path.is_file(), f"bench:{name} cites {path}, which does not exist"
            summaries = _summaries(json.loads(path.read_text(encoding="utf-8"))["results"])
            for med, lo, hi in figures:
                assert any(_close(med, s["median"]) and _close(lo, s["min"]) and _close(hi, s["max"])
                           for s in summaries), f"bench:{name}: {med} [{lo}–{hi}] is not a figure of {path.name}"
                checked += 1
    assert checked > 0


def test_results_files_record_the_run() -> None:
    files = sorted(RESULTS.glob("*.json"))
    assert files, "bench/results/ holds no results file"
    for path in files:
        doc = protocol.load_results(path)
        run = doc["run"]
        assert path.name.startswith(f"{run['date']}_{run['name']}_{run['kind']}"), path.name
        for key in ("script", "argv", "mode", "repeats", "started", "finished", "load_before", "load_after",
                    "git", "packages", "emulated"):
            assert key in run, f"{path.name}: run record lacks {key}"
        assert run["repeats"] >= protocol.MIN_REPEATS
        assert run["cpu"]["model"] and run["cpu"]["cores"] >= 1 and set(protocol.CPU_FLAGS) <= set(run["cpu"]["flags"])
        for package in ("torch", "onnxruntime", "av", "numpy"):
            assert package in run["packages"]
        assert run["emulated"] == ("emulating" in run["kind"])
        if run["emulated"]:
            assert "onnxruntime" in run["emulation_note"]
        for s in _summaries(doc["results"]):
            assert s["min"] <= s["median"] <= s["max"] and s["n"] == len(s["values"]) >= protocol.MIN_REPEATS


def _table_rows_outside_blocks(text: str) -> list[str]:
    outside = render.BLOCK.sub("", text)
    return [line for line in outside.splitlines() if line.startswith("|")]


def test_no_speed_figure_in_readme_tables_outside_the_rendered_blocks() -> None:
    hits = [line[:160] for line in _table_rows_outside_blocks(README.read_text(encoding="utf-8"))
            if SPEED.search(line)]
    assert not hits, "speed figures typed into README tables (render them from bench/results/):\n" + "\n".join(hits)


def _texts(path: Path, *, docstrings: bool = True) -> list[tuple[int, str]]:
    """Docstrings and ``help=`` / ``description=`` / ``epilog=`` strings of a module, with line numbers."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    out = []
    for node in ast.walk(tree):
        if docstrings and isinstance(node, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            doc = ast.get_docstring(node, clean=False)
            if doc:
                out.append((node.body[0].lineno, doc))
        if isinstance(node, ast.Call):
            for kw in node.keywords:
                if kw.arg in ("help", "description", "epilog") and isinstance(kw.value, ast.Constant) \
                        and isinstance(kw.value.value, str):
                    out.append((kw.value.lineno, kw.value.value))
    return out


@pytest.mark.parametrize("path", DOC_FILES, ids=lambda p: str(p.relative_to(REPO)))
def test_no_speed_figure_in_docstrings_or_help(path: Path) -> None:
    hits = [f"{path.relative_to(REPO)}:{line + i}: {text_line.strip()[:140]}"
            for line, text in _texts(path) for i, text_line in enumerate(text.splitlines()) if SPEED.search(text_line)]
    assert not hits, "speed figures belong in bench/results/ and the README's tables:\n" + "\n".join(hits)


def test_no_speed_figure_in_the_cli_help() -> None:
    """Every ``help=`` / ``description=`` / ``epilog=`` string of the CLI (what ``--help`` prints)."""
    hits = [f"{p.relative_to(REPO)}:{line}: {text[:140]}" for p in sorted((REPO / "src/focaltag/cli").rglob("*.py"))
            for line, text in _texts(p, docstrings=False) if SPEED.search(text)]
    assert not hits, "speed figures in --help:\n" + "\n".join(hits)


def test_speed_pattern_finds_figures_and_spares_shapes_and_targets() -> None:
    for text in ("ran 2.5x faster", "1,282x real time", "836 GFLOP/s", "5.29 requests/s", "16 instead of 57 ms",
                 "587 files/s", "30 % faster"):
        assert SPEED.search(text), text
    for text in ("a 4 x 56 matrix", "3x3 kernels", "the target is >= 2.5x", "at least 1.7x", "0.7 x the mel bands",
                 "macro F-score 0.193", "29 s chunks"):
        assert not SPEED.search(text), text


# -- the protocol ---------------------------------------------------------------------------------------------
def test_interleave_runs_round_after_round() -> None:
    order: list[str] = []
    out = protocol.interleave({"A": lambda: order.append("A"), "B": lambda: order.append("B")}, 3)
    assert order == ["A", "B", "A", "B", "A", "B"]
    assert [len(v) for v in out.values()] == [3, 3]
    order.clear()
    protocol.interleave({"A": lambda: order.append("A"), "B": lambda: order.append("B")}, 3, alternate=True)
    assert order == ["A", "B", "B", "A", "A", "B"]


def test_summary_and_per_round_ratios_against_numpy() -> None:
    rng = np.random.default_rng(0)
    for n in (3, 4, 7):
        a, b = rng.uniform(0.5, 2.0, n), rng.uniform(0.5, 2.0, n)
        s = protocol.summary(a)
        assert s["median"] == pytest.approx(np.median(a), rel=1e-4)
        assert (s["min"], s["max"], s["n"]) == (pytest.approx(a.min(), rel=1e-4), pytest.approx(a.max(), rel=1e-4), n)
        r = protocol.ratio_summary(a, b)
        assert r["median"] == pytest.approx(np.median(a / b), rel=1e-4)  # per round, not median(a) / median(b)
        assert r["values"] == pytest.approx(list(a / b), rel=1e-4)
    with pytest.raises(ValueError):
        protocol.ratio_summary([1.0, 2.0], [1.0])


def test_cpu_kind_and_int8_level_from_the_flags() -> None:
    info = "model name\t: Some CPU\nflags\t\t: fpu sse avx2 fma avx512f avx512bw avx512_vnni avx512_bf16\n"
    flags = protocol.cpu_flags(info)
    assert protocol.cpu_model(info) == "Some CPU"
    assert protocol.cpu_kind(flags) == "avx512bf16"
    assert protocol.cpu_kind({"avx2", "fma"}) == "avx2"
    assert protocol.cpu_kind({"avx2", "avx512f"}) == "avx512"
    assert protocol.cpu_kind({"avx2", "avx512_bf16", "amx_bf16", "amx_tile"}) == "amx"
    assert protocol.int8_kernel_level(flags)["level"] == "AVX512-VNNI"
    assert protocol.int8_kernel_level({"avx2", "fma"})["level"] == "AVX2"
    assert protocol.int8_kernel_level({"avx2", "avx_vnni"})["offers"] == ["AVX-VNNI", "AVX2"]


def test_run_writes_a_named_results_file_and_never_overwrites(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    args = argparse.Namespace(repeats=3, quick=True, results_dir=tmp_path)
    run = protocol.Run("bench/example.py", args, emulates="avx2", int8=True, argv=["--quick"])
    first = run.finish({"t": protocol.summary([1.0, 2.0, 3.0]), "nan": float("nan"), "n": np.int64(3)})
    second = protocol.Run("bench/example.py", args, emulates="avx2", argv=["--quick"]).finish({}, echo=False)
    kind = protocol.cpu_kind(protocol.cpu_flags())
    assert first.name == f"{run.record['date']}_example_{kind}-emulating-avx2.json"
    assert second.name == f"{run.record['date']}_example_{kind}-emulating-avx2_2.json"
    doc = protocol.load_results(first)
    assert doc["results"]["nan"] is None and doc["results"]["n"] == 3
    rec = doc["run"]
    assert rec["emulated"] is True and rec["mode"] == "quick" and rec["argv"] == ["--quick"]
    assert "onnxruntime" in rec["emulation_note"] and "level" in rec["int8_kernels"]
    assert len(rec["load_before"]) == 3 and len(rec["load_after"]) == 3
    assert json.loads(capsys.readouterr().out)["results"]["t"]["median"] == 2.0


def test_a_run_saved_part_by_part_keeps_one_file_until_it_is_complete(tmp_path: Path) -> None:
    """``Run.save`` after each part rewrites one file (``complete`` false); ``finish`` completes that same file."""
    args = argparse.Namespace(repeats=3, quick=False, results_dir=tmp_path)
    run = protocol.Run("bench/example.py", args, argv=[])
    first = run.save({"a": 1})
    assert protocol.load_results(first)["run"]["complete"] is False
    assert run.save({"a": 1, "b": 2}) == first
    assert protocol.load_results(first)["results"] == {"a": 1, "b": 2}
    assert run.finish({"a": 1, "b": 2, "c": 3}, echo=False) == first
    done = protocol.load_results(first)
    assert done["run"]["complete"] is True and done["results"]["c"] == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == [first.name]  # no second file, no temporary left


def test_repeats_below_three_are_refused(capsys: pytest.CaptureFixture) -> None:
    parser = argparse.ArgumentParser()
    protocol.add_protocol_arguments(parser, quick="nothing")
    assert parser.parse_args([]).repeats == 3
    with pytest.raises(SystemExit) as err:
        parser.parse_args(["--repeats", "2"])
    assert err.value.code == 2 and "at least 3" in capsys.readouterr().err


# -- the renderer on made-up runs -----------------------------------------------------------------------------
def _doc(kind: str, *, emulated: bool = False, mode: str = "full", finished: str = "2026-12-07T10:00:00+00:00",
         ratio: float = 2.0) -> dict:
    figure = {"median": ratio, "min": ratio - 0.5, "max": ratio + 0.5, "n": 3, "values": [ratio - 0.5, ratio, ratio + 0.5]}
    run = {"script": "bench/evaluate.py", "argv": [], "name": "evaluate", "mode": mode, "repeats": 3,
           "date": "2026-12-07", "finished": finished, "kind": kind, "emulated": emulated,
           "cpu": {"model": "Test CPU", "cores": 2, "kind": kind.split("-")[0]}, "load_before": [1.0, 1.0, 1.0],
           "load_after": [2.0, 2.0, 2.0], "git": {"commit": "0" * 40}}
    if emulated:
        run.update(emulates="avx2", emulation_note="onnxruntime not covered")
    return {"schema": 1, "run": run, "results": {"matrix": [10, 2], "resamples": 100, "focaltag_s": figure,
                                                "baseline_s_extrapolated": figure, "speedup": figure,
                                                "focaltag_cpu_s": figure, "baseline_cpu_s_extrapolated": figure,
                                                "speedup_cpu": figure}}


def test_render_labels_each_cpu_kind_and_puts_emulated_runs_last() -> None:
    docs = [(Path("b.json"), _doc("avx512bf16-emulating-avx2", emulated=True, ratio=3.0)),
            (Path("a.json"), _doc("avx512bf16", ratio=2.0)), (Path("c.json"), _doc("avx2", ratio=1.5))]
    text = render.render_block("evaluate", docs)
    captions = [line for line in text.splitlines() if line.startswith("*`bench/")]
    assert len(captions) == 3
    assert "CPU kind `avx2`" in captions[0] and "real CPU" in captions[0]
    assert "CPU kind `avx512bf16`" in captions[1]
    assert "**emulated AVX2**" in captions[2] and "not a real CPU of that kind" in captions[2]
    assert "2.00x [1.50–2.50]" in text and "3.00x [2.50–3.50]" in text


def test_render_prefers_the_latest_full_run_over_a_later_quick_one() -> None:
    docs = [(Path("old.json"), _doc("avx2", finished="2026-12-06T10:00:00+00:00", ratio=1.0)),
            (Path("full.json"), _doc("avx2", finished="2026-12-07T09:00:00+00:00", ratio=2.0)),
            (Path("quick.json"), _doc("avx2", mode="quick", finished="2026-12-07T11:00:00+00:00", ratio=3.0))]
    text = render.render_block("evaluate", docs)
    assert "full.json" in text and "2.00x" in text and "3.00x" not in text and "1.00x" not in text
    assert "No results file" in render.render_block("evaluate", [])
    with pytest.raises(KeyError):
        render.render_block("no-such-block", docs)
