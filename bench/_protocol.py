"""The measurement protocol every script in ``bench/`` follows: interleaved repeats, figures as median [min–max],
and a results file that records the run.

Why: one best-of-N number measured once, on a machine shared with other work, says little, and a figure typed
into the README by hand cannot be traced to the run that made it. Here every contender of a comparison runs once
per round, round after round (A B A B A B, never A A A B B B), so a change of load hits them alike; each figure
is the median of its repeats with their range; a ratio is computed within each round, then summarised (a ratio
of medians would mix rounds measured at different loads). Each run writes one JSON file under
``bench/results/`` (date, script, CPU kind in its name) holding the figures and the run record: the CPU (model
name, the flags that decide which kernels run, core count), the load average before and after, the date, the git
commit, the package versions, the script and its arguments, and whether the CPU was emulated.
``bench/render.py`` turns those files into the README's tables.

Use from a script::

    from _protocol import Run, add_protocol_arguments, interleave, ratio_summary, summary

    add_protocol_arguments(parser, quick="what --quick leaves out")
    args = parser.parse_args()
    run = Run("bench/evaluate.py", args)             # records the load before
    times = interleave({"a": run_a, "b": run_b}, args.repeats)
    results = {"a_s": summary([t.wall for t in times["a"]]),
               "a_vs_b": ratio_summary([t.wall for t in times["b"]], [t.wall for t in times["a"]])}
    run.finish(results)                              # load after, writes the file, prints the JSON
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.metadata
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
RESULTS_DIR = REPO / "bench" / "results"
SCHEMA = 1
MIN_REPEATS = 3
DEFAULT_REPEATS = 3

CPU_FLAGS = ("avx2", "fma", "avx512f", "avx512bw", "avx512_bf16", "avx512_fp16", "avx512_vnni", "avx_vnni",
             "amx_tile", "amx_bf16", "amx_int8")
"""The /proc/cpuinfo flags that decide which kernels torch (oneDNN) and onnxruntime (MLAS) run."""

PACKAGES = ("focaltag", "torch", "onnxruntime", "av", "numpy", "soundfile", "soxr", "scikit-learn", "librosa")

EMULATION_NOTES = {
    "avx2": ("oneDNN limited to AVX2 (ONEDNN_MAX_CPU_ISA) and bf16 treated as not native; onnxruntime picks its "
             "kernels by CPUID, so its figures (int8, --runtime onnx) are this CPU's, not an AVX2 CPU's: the "
             "emulation does not cover onnxruntime"),
}


# -- the CPU --------------------------------------------------------------------------------------------------
def _cpuinfo() -> str:
    try:
        return Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


def cpu_model(cpuinfo: str | None = None) -> str:
    """The CPU's model name (first ``model name`` line of /proc/cpuinfo, else ``platform.processor()``)."""
    for line in (_cpuinfo() if cpuinfo is None else cpuinfo).splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine() or "unknown"


def cpu_flags(cpuinfo: str | None = None) -> set[str]:
    """Every flag of the first ``flags`` line of /proc/cpuinfo (empty off Linux)."""
    for line in (_cpuinfo() if cpuinfo is None else cpuinfo).splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


def cpu_kind(flags: set[str]) -> str:
    """A short name for the class of CPU, by the fastest matmul it runs natively: ``amx``, ``avx512bf16``,
    ``avx512``, ``avx2`` or the machine name. Results files are named by it, so that the figures of one kind
    never stand for another."""
    if "amx_bf16" in flags:
        return "amx"
    if "avx512_bf16" in flags:
        return "avx512bf16"
    if "avx512f" in flags:
        return "avx512"
    if "avx2" in flags:
        return "avx2"
    return re.sub(r"[^a-z0-9]+", "", platform.machine().lower()) or "cpu"


def int8_kernel_level(flags: set[str]) -> dict[str, Any]:
    """Which int8 matmul kernels onnxruntime's MLAS can pick on this CPU.

    onnxruntime exposes no call that names the kernels it chose; MLAS picks them by CPUID, so the level is read
    from the same CPU flags: AMX, then AVX512-VNNI, AVX-VNNI, AVX512 (BW) and AVX2 (``vpmaddubsw``)."""
    offers = [name for flag, name in (("amx_int8", "AMX"), ("avx512_vnni", "AVX512-VNNI"),
                                      ("avx_vnni", "AVX-VNNI"), ("avx512bw", "AVX512"), ("avx2", "AVX2"))
              if flag in flags]
    return {"level": offers[0] if offers else "none (no AVX2)", "offers": offers,
            "source": "CPU flags; onnxruntime's MLAS picks its int8 kernels by CPUID"}


def cpu_record(cpuinfo: str | None = None) -> dict[str, Any]:
    text = _cpuinfo() if cpuinfo is None else cpuinfo
    flags = cpu_flags(text)
    return {"model": cpu_model(text), "kind": cpu_kind(flags), "cores": os.cpu_count(),
            "flags": {flag: flag in flags for flag in CPU_FLAGS}}


# -- the rest of the run record -------------------------------------------------------------------------------
def load_average() -> list[float]:
    """The 1, 5 and 15-minute load averages (what else the machine was running)."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


def git_commit() -> dict[str, Any]:
    """The commit of the checkout and whether tracked files differed from it (a shared working tree)."""
    def git(*argv: str) -> str:
        done = subprocess.run(["git", *argv], cwd=REPO, capture_output=True, text=True, timeout=30, check=False)
        return done.stdout.strip() if done.returncode == 0 else ""

    try:
        commit = git("rev-parse", "HEAD")
        dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}
    return {"commit": commit or None, "dirty": dirty if commit else None}


def package_versions(names: Sequence[str] = PACKAGES) -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for name in names:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


# -- arguments ------------------------------------------------------------------------------------------------
def _repeats(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--repeats takes a whole number, got {text!r}") from None
    if value < MIN_REPEATS:
        raise argparse.ArgumentTypeError(f"--repeats must be at least {MIN_REPEATS} (got {value}): every figure "
                                         "is a median with its range over interleaved repeats")
    return value


def add_protocol_arguments(parser: argparse.ArgumentParser, *, quick: str) -> None:
    """``--repeats``, ``--quick`` (its help says what it leaves out) and ``--results-dir`` on a script's parser."""
    parser.add_argument("--repeats", type=_repeats, default=DEFAULT_REPEATS,
                        help=f"interleaved repeats of every contender, at least {MIN_REPEATS}; each figure is "
                        "their median [min-max]")
    parser.add_argument("--quick", action="store_true", help=f"a run of a minute or two: {quick}")
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR,
                        help="folder of the run's JSON file (named by date, script and CPU kind)")


# -- timing ---------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Timing:
    """One timed call: wall seconds, this process's CPU seconds, and what the call returned."""

    wall: float
    cpu: float
    value: Any = None


def timed(fn: Callable[[], Any]) -> Timing:
    t0, c0 = time.perf_counter(), time.process_time()
    value = fn()
    return Timing(time.perf_counter() - t0, time.process_time() - c0, value)


def interleave(contenders: Mapping[str, Callable[[], Any]], repeats: int, *,
               alternate: bool = False) -> dict[str, list[Timing]]:
    """Time every contender once per round, for ``repeats`` rounds: A B C, A B C, ... (never A A A B B B).

    ``alternate`` reverses the order every other round (A B C, C B A, ...) for comparisons where going first
    matters (a cache warmed by the previous contender). Returns each contender's timings in round order, so that
    round ``i`` of one can be divided by round ``i`` of another (:func:`ratio_summary`)."""
    if repeats < 1:
        raise ValueError(f"repeats must be at least 1, got {repeats}")
    names = list(contenders)
    out: dict[str, list[Timing]] = {name: [] for name in names}
    for r in range(repeats):
        for name in (reversed(names) if alternate and r % 2 else names):
            out[name].append(timed(contenders[name]))
    return out


# -- figures --------------------------------------------------------------------------------------------------
def _round(x: float, digits: int = 5) -> float:
    """``x`` to ``digits`` significant digits (results files stay small and readable)."""
    return float(f"{x:.{digits}g}")


def summary(values: Sequence[float]) -> dict[str, Any]:
    """A figure: the median of its repeats, their min and max, how many, and every value in round order."""
    vals = [float(v) for v in values]
    if not vals:
        raise ValueError("a figure needs at least one value")
    return {"median": _round(statistics.median(vals)), "min": _round(min(vals)), "max": _round(max(vals)),
            "n": len(vals), "values": [_round(v) for v in vals]}


def per_repeat_ratios(numerators: Sequence[float], denominators: Sequence[float]) -> list[float]:
    """``numerators[i] / denominators[i]`` for every round ``i`` (the two lists come from one interleaving)."""
    if len(numerators) != len(denominators):
        raise ValueError(f"{len(numerators)} numerators against {len(denominators)} denominators: a ratio is "
                         "taken within one round")
    return [a / b for a, b in zip(numerators, denominators, strict=True)]


def ratio_summary(numerators: Sequence[float], denominators: Sequence[float]) -> dict[str, Any]:
    """A ratio as a figure: computed within each round, then summarised (median [min–max])."""
    return summary(per_repeat_ratios(numerators, denominators))


def rate_summary(amount: float, seconds: Sequence[float]) -> dict[str, Any]:
    """``amount / seconds`` per round as a figure (x real time, files/s, ...)."""
    return summary([amount / s for s in seconds])


def walls(timings: Sequence[Timing]) -> list[float]:
    return [t.wall for t in timings]


def cpus(timings: Sequence[Timing]) -> list[float]:
    return [t.cpu for t in timings]


# -- the run and its file -------------------------------------------------------------------------------------
def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


class Run:
    """One run of a bench script: the record made at its start, the figures at its end, one results file.

    ``name`` is the script's results name (``tag``; a variant such as ``tag-precisions`` when a script has
    runs that measure different things); ``emulates`` names the CPU kind an emulation imitates (``"avx2"``);
    ``int8`` adds onnxruntime's int8 kernel level; ``device`` describes an accelerator, and ``kind`` then names
    the file instead of the CPU kind."""

    def __init__(self, script: str, args: argparse.Namespace | None = None, *, name: str | None = None,
                 emulates: str | None = None, int8: bool = False, device: dict[str, Any] | None = None,
                 kind: str | None = None, argv: Sequence[str] | None = None) -> None:
        self.name = _slug(name or Path(script).stem)
        self.results_dir = Path(getattr(args, "results_dir", None) or RESULTS_DIR)
        started = dt.datetime.now(dt.timezone.utc)
        cpu = cpu_record()
        flags = {flag for flag, present in cpu["flags"].items() if present}
        record: dict[str, Any] = {
            "script": script, "argv": list(sys.argv[1:] if argv is None else argv), "name": self.name,
            "mode": "quick" if getattr(args, "quick", False) else "full",
            "repeats": getattr(args, "repeats", None),
            "started": started.isoformat(timespec="seconds"), "date": started.date().isoformat(),
            "cpu": cpu, "emulated": emulates is not None,
            "load_before": load_average(), "git": git_commit(), "packages": package_versions(),
            "python": platform.python_version(), "platform": platform.platform(),
        }
        if emulates is not None:
            record["emulates"] = emulates
            record["emulation_note"] = EMULATION_NOTES.get(emulates, f"emulates {emulates}")
        if int8:
            record["int8_kernels"] = int8_kernel_level(flags)
            if emulates is not None:
                record["int8_kernels"]["note"] = "not emulated: " + record["int8_kernels"]["source"]
        if device is not None:
            record["device"] = device
        base = kind or cpu["kind"]
        record["kind"] = f"{base}-emulating-{emulates}" if emulates else base
        self.record = record
        self._path: Path | None = None  # chosen by the first save

    def path(self) -> Path:
        """``<date>_<name>_<kind>.json``; a later run of the same day gets ``_2``, ``_3``... (none is lost)."""
        stem = f"{self.record['date']}_{self.name}_{self.record['kind']}"
        candidate = self.results_dir / f"{stem}.json"
        n = 2
        while candidate.exists():
            candidate = self.results_dir / f"{stem}_{n}.json"
            n += 1
        return candidate

    def save(self, results: Mapping[str, Any], *, complete: bool = False, echo: bool = False) -> Path:
        """Write the results file now (atomically), with the load and time of now; returns the path.

        A script with long parts calls this after each one, so a run stopped half-way keeps what it measured
        (``run.complete`` stays false until :meth:`finish`); every call of one run rewrites the same file."""
        record = dict(self.record)
        record["load_after"] = load_average()
        record["finished"] = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
        record["complete"] = complete
        document = {"schema": SCHEMA, "run": record, "results": _finite(dict(results))}
        self.results_dir.mkdir(parents=True, exist_ok=True)
        if self._path is None:
            self._path = self.path()
        text = json.dumps(document, indent=1, allow_nan=False) + "\n"
        tmp = self._path.with_name(self._path.name + ".tmp")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, self._path)
        if echo:
            print(text, end="")
            print(f"results: {self._path}", file=sys.stderr)
        return self._path

    def finish(self, results: Mapping[str, Any], *, echo: bool = True) -> Path:
        """Record the load after and the end time, write the results file, print the JSON; returns the path."""
        return self.save(results, complete=True, echo=echo)


def _finite(value: Any) -> Any:
    """NaN and infinities as ``null`` (JSON has neither), numpy scalars as Python's, in any nesting."""
    if type(value).__module__ == "numpy" and hasattr(value, "item") and getattr(value, "ndim", 0) == 0:
        value = value.item()
    if isinstance(value, float):
        return value if value == value and abs(value) != float("inf") else None
    if isinstance(value, Mapping):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def load_results(path: Path) -> dict[str, Any]:
    document = json.loads(Path(path).read_text(encoding="utf-8"))
    if document.get("schema") != SCHEMA or "run" not in document or "results" not in document:
        raise ValueError(f"{path}: not a bench results file of schema {SCHEMA}")
    return document
