"""Benchmark: `focaltag tag -o --ray` and `focaltag data prepare --ray` on 1 and 2 Ray nodes against a local run
pinned to one CPU.

Run: ``python bench/ray.py [--files 60] [--tracks 120] [--repeats 3] [--quick] [--only tag|prepare|evidence]``
(on a shared machine under ``flock /work/bench.lock``, like the other benchmarks). Writes
``bench/results/<date>_ray_<cpu kind>.json`` and prints it.

Every contender is the real CLI in a subprocess, as a user runs it, timed from the command to its exit (Python
start-up, the driver's model load, the actors' start-up and model load included):

* ``local_1cpu``: the single-process run (``focaltag tag DIR -o``; ``data prepare --workers 1``) pinned to one
  CPU with ``taskset`` (the tagger's thread budget then gives torch one thread and decoding one);
* ``ray_1_node``: ``--ray ADDRESS`` against a ``ray.cluster_utils.Cluster`` head of 1 CPU on 127.0.0.1;
* ``ray_2_nodes``: head + one worker node, 1 CPU each.

Node ``i`` and every process it starts are bound to core ``i`` (``--float-nodes`` leaves them unbound): a 1-CPU
node is a machine with one CPU, as the local run is pinned to one. Unbound, two 1-CPU nodes on one 2-core machine
let the scheduler move each actor between the cores, at 7-12 % more CPU per track, which real nodes never pay.

The cluster of a contender is started before its clock and stopped after it (an idle cluster's daemons would
otherwise load the other contenders' runs). Its workers run at niceness 0 like the local run (``--worker-niceness``;
Ray's default, 15, makes the actors yield to every other process of a shared machine, which is then what such a
run measures). The contenders run interleaved, ``--repeats`` rounds
(``bench/_protocol.py``): each figure is the median [min-max] of the rounds, each ratio is taken within a round.
Goals (issue 34): 2 nodes >= 1.7x one node, one node >= 0.85x the local run.

Evidence: the local run's CPU per file alone and beside a twin on the other core (no Ray); the CPU cores this session gets with one and with two busy-looping processes (on one machine, two
1-CPU nodes are two processes of one session, and Linux's autogroup may schedule a session as one group); the
driver's CPU per file (a Ray call returning a result record, and writing its line), the inputs of the README's
estimate for a large cluster. Per run: CPU seconds by process role (the CLI/driver, model actors, Ray's daemons, other Ray workers),
read from /proc over the run's process tree, and each actor's threads as it reports them (``-v``); the worst
probability difference between each Ray output and the local one; the load average at each run's start.

Tag data: the six shared recordings (../shared/data/music, 0.5-5 minutes, OGG / MP3) plus generated 30 s stereo
WAVs at 44.1 kHz, tagged with a paper-size model (the short-chunk ResNet, 56 tags, random weights: speed does not
depend on them), 16 chunks per track, float32. Prepare data: generated 60 s stereo MP3s at 44.1 kHz (tones and
noise, not music), decoded and resampled into the waveform cache.
"""

from __future__ import annotations

import argparse
import ast
import importlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
# this file is bench/ray.py: its folder must not shadow the ray package
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]


def _protocol() -> ModuleType:
    """``bench/_protocol.py``, imported with this folder on the path only for that import."""
    sys.path.insert(0, str(HERE))
    try:
        return importlib.import_module("_protocol")
    finally:
        sys.path.remove(str(HERE))


P = _protocol()
REPO = HERE.parent
SHARED_MUSIC = Path(os.environ.get("FOCALTAG_SHARED", REPO.parent / "shared")) / "data" / "music"
FOCALTAG = Path(sys.executable).parent / "focaltag"
STORE = 200 * 2 ** 20
CLK = os.sysconf("SC_CLK_TCK")
CONTENDERS = ("local_1cpu", "ray_1_node", "ray_2_nodes")
GOALS = {"scaling_1_to_2_nodes": 1.7, "ray_1_node_vs_local": 0.85}


# -- data -------------------------------------------------------------------------------------------------------
def _tone(seconds: float, sr: int, rng: np.random.Generator) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    mono = 0.3 * np.sin(2 * np.pi * rng.uniform(80, 1000) * t)
    return (mono[:, None] + 0.05 * rng.standard_normal((len(t), 2))).astype(np.float32)


def _tag_library(root: Path, n_files: int) -> int:
    """The shared recordings (linked) plus generated 30 s WAVs up to ``n_files``; returns how many are real."""
    import soundfile as sf

    root.mkdir(parents=True, exist_ok=True)
    real = sorted(p for p in SHARED_MUSIC.glob("*") if p.suffix in (".ogg", ".mp3")) if SHARED_MUSIC.is_dir() else []
    real = real[:n_files]
    for p in real:
        if not (root / p.name).is_symlink():  # a --workdir of an earlier run keeps its links
            os.symlink(p, root / p.name)
    rng = np.random.default_rng(0)
    for i in range(n_files - len(real)):
        folder = root / f"gen{i // 20}"
        folder.mkdir(exist_ok=True)
        sf.write(folder / f"track{i:03d}.wav", _tone(30, 44100, rng), 44100, subtype="PCM_16")
    return len(real)


def _prepare_dataset(root: Path, n_tracks: int) -> Path:
    """``n_tracks`` generated 60 s stereo MP3s and their TSV; returns the TSV (a ``--workdir`` of an earlier run
    with the same ``--tracks`` keeps them: they are the same bytes, from the same seed)."""
    import soundfile as sf

    rng = np.random.default_rng(1)
    audio = root / "audio"
    tsv = root / "prepare.tsv"
    if tsv.is_file() and len(tsv.read_text().splitlines()) == n_tracks + 1 \
            and all((audio / f"{i % 10:02d}/p{i}.mp3").is_file() for i in range(n_tracks)):
        return tsv
    rows = ["TRACK_ID\tARTIST_ID\tALBUM_ID\tPATH\tDURATION\tTAGS"]
    for i in range(n_tracks):
        rel = f"{i % 10:02d}/p{i}.mp3"
        (audio / rel).parent.mkdir(parents=True, exist_ok=True)
        sf.write(audio / rel, _tone(60, 44100, rng), 44100, format="MP3")
        rows.append(f"p{i}\ta\tb\t{rel}\t60.0\tmood/theme---{'calm' if i % 2 else 'happy'}")
    tsv.write_text("\n".join(rows) + "\n")
    return tsv


def _model(path: Path) -> Path:
    import torch

    from focaltag.models import create_model, save_model

    torch.manual_seed(0)
    return save_model(create_model("short_chunk_resnet", n_tags=56), path)


# -- CPU seconds by process role --------------------------------------------------------------------------------
def _proc_table() -> dict[int, tuple[int, float, str]]:
    """pid -> (parent pid, CPU seconds so far, command line) for every process we may read."""
    out: dict[int, tuple[int, float, str]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry.name}/stat").read_text()
            cmd = Path(f"/proc/{entry.name}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        out[int(entry.name)] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / CLK, cmd.strip())
    return out


def _niceness(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat[stat.rindex(")") + 2:].split()[16])


def _role(cmd: str, pid: int, driver: int | None) -> str:
    if pid == driver:
        return "cli_driver"
    for key, role in (("ray::TagWorker", "model_actors"), ("ray::_PrepareWorker", "prepare_actors"),
                      ("raylet", "ray_daemons"), ("gcs_server", "ray_daemons"), ("dashboard", "ray_daemons"),
                      ("runtime_env", "ray_daemons"), ("log_monitor", "ray_daemons"), ("ray::", "ray_other")):
        if key in cmd:
            return role
    return "other"


class CpuByRole:
    """Samples /proc every 0.25 s during one run: the CPU seconds each process of this benchmark's process tree
    (its clusters and the CLI it starts) spent, summed by role."""

    def __init__(self, driver: Callable[[], int | None]) -> None:
        import threading

        self.driver, self.me = driver, os.getpid()
        self.first: dict[int, float] = {}
        self.last: dict[int, tuple[float, str]] = {}
        self.nice: dict[str, set[int]] = {}
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)

    def _ours(self, table: dict[int, tuple[int, float, str]], pid: int) -> bool:
        for _ in range(64):
            if pid == self.me:
                return True
            if pid not in table or pid <= 1:
                return False
            pid = table[pid][0]
        return False

    def _sample(self, start: bool = False) -> None:
        table = _proc_table()
        driver = self.driver()
        for pid, (_, cpu, cmd) in table.items():
            if pid == self.me or not self._ours(table, pid):
                continue
            self.first.setdefault(pid, cpu if start else 0.0)
            role = _role(cmd, pid, driver)
            if role in ("other", "ray_other") and pid in self.last:  # a worker's title fades as it exits
                role = self.last[pid][1]
            self.last[pid] = (cpu, role)
            nice = _niceness(pid)
            if nice is not None:
                self.nice.setdefault(role, set()).add(nice)

    def _loop(self) -> None:
        while not self.stop.wait(0.25):
            self._sample()

    def __enter__(self) -> CpuByRole:
        self._sample(start=True)
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()
        self._sample()

    def totals(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for pid, (cpu, role) in self.last.items():
            out[role] = out.get(role, 0.0) + max(0.0, cpu - self.first.get(pid, 0.0))
        return {k: round(v, 2) for k, v in sorted(out.items())}

    def niceness(self) -> dict[str, list[int]]:
        return {role: sorted(v) for role, v in sorted(self.nice.items())}


# -- one run ----------------------------------------------------------------------------------------------------
PIN_NODES = True
"""Each node on a core of its own (``--float-nodes`` turns it off; set in ``main``)."""


def _cluster(nodes: int) -> Any:
    """``nodes`` nodes of 1 CPU on 127.0.0.1; their workers run at ``RAY_worker_niceness`` (see ``--worker-niceness``).

    With :data:`PIN_NODES`, node ``i`` and every process it starts (raylet, workers, the head's GCS) are bound to
    core ``i``, as a 1-CPU machine is and as the local run is (``taskset``): two unbound 1-CPU nodes on one 2-core
    machine let the scheduler move each actor between the cores, and the moves cost the actors 7-12 % more CPU
    per track (README, "On a Ray cluster"), which real 1-CPU nodes never pay."""
    from ray.cluster_utils import Cluster

    every = os.sched_getaffinity(0)
    cores = sorted(every)
    pin = PIN_NODES and len(cores) >= nodes

    def bound(i: int) -> None:
        if pin:
            os.sched_setaffinity(0, {cores[i]})  # the node's processes inherit this process's affinity

    try:
        bound(0)
        c = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "object_store_memory": STORE,
                                                         "node_ip_address": "127.0.0.1", "include_dashboard": False})
        for i in range(1, nodes):
            bound(i)
            c.add_node(num_cpus=1, object_store_memory=STORE, node_ip_address="127.0.0.1")
    finally:
        os.sched_setaffinity(0, every)
    c.wait_for_nodes()
    return c


def _env() -> dict[str, str]:
    """A user's environment: no Ray single-machine switch (``--ray`` joins the loopback cluster as given)."""
    return {k: v for k, v in os.environ.items() if k != "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"}


def _actor_threads(stderr: str) -> list[dict[str, Any]]:
    """What the CLI logs with ``-v`` about each actor: its CPUs and threads when it came up (``Ray actor up:``),
    and for model actors the files it tagged, its busy seconds and its process's CPU seconds at the end."""
    up, done = [], {}
    for line in stderr.splitlines():
        if "Ray actor up: {" in line:
            d = ast.literal_eval(line[line.index("{"):])
            up.append({k: d.get(k) for k in ("pid", "cpus", "torch", "interop", "decode", "init_s", "load_s")}
                      | {"ready_cpu_s": d.get("process_cpu_s")})
        elif m := re.search(r"Ray model actor pid (\d+): (\d+) file\(s\), ([\d.]+) s busy, ([\d.]+) CPU-s", line):
            done[int(m[1])] = {"files": int(m[2]), "busy_s": float(m[3]), "process_cpu_s": float(m[4])}
    return [{**a, **done.get(a["pid"], {})} for a in up]


def _timed_cli(argv: Sequence[str], *, pinned: bool, nodes: int) -> dict[str, Any]:
    """Start the contender's cluster, then time the CLI (``argv`` after ``focaltag``); stop the cluster."""
    cluster = _cluster(nodes) if nodes else None
    try:
        cmd = [str(FOCALTAG), *argv, "-v"] + (["--ray", cluster.address] if cluster is not None else [])
        if pinned:
            cmd = ["taskset", "-c", "0", *cmd]
        proc: list[subprocess.Popen] = []
        load = P.load_average()
        with CpuByRole(lambda: proc[0].pid if proc else None) as cpu:
            t0 = time.perf_counter()
            proc.append(subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env()))
            out, err = proc[0].communicate()
            wall = time.perf_counter() - t0
        if proc[0].returncode != 0:
            raise SystemExit(f"{' '.join(cmd)} failed with exit code {proc[0].returncode}:\n{err[-3000:]}")
        return {"wall": wall, "load_at_start": load, "cpu_s_by_role": cpu.totals(), "niceness": cpu.niceness(),
                "actors": _actor_threads(err), "stdout": out}
    finally:
        if cluster is not None:
            cluster.shutdown()


def _interleaved(runs: dict[str, Callable[[], dict[str, Any]]], repeats: int) -> dict[str, list[dict[str, Any]]]:
    """Each contender once per round, round after round (the protocol's order, clusters outside the clock)."""
    out: dict[str, list[dict[str, Any]]] = {k: [] for k in runs}
    for r in range(repeats):
        for name, fn in runs.items():
            out[name].append(fn())
            print(f"round {r + 1}/{repeats} {name}: {out[name][-1]['wall']:.1f} s (load "
                  f"{out[name][-1]['load_at_start']})", file=sys.stderr)
    return out


def _figures(times: dict[str, list[dict[str, Any]]], amount: int, unit: str) -> dict[str, Any]:
    walls = {k: [r["wall"] for r in v] for k, v in times.items()}
    result: dict[str, Any] = {"contenders": {}}
    for name, runs in times.items():
        roles = sorted({role for r in runs for role in r["cpu_s_by_role"]})
        result["contenders"][name] = {
            "seconds": P.summary(walls[name]), f"{unit}_per_s": P.rate_summary(amount, walls[name]),
            "cpu_s_by_role": {role: P.summary([r["cpu_s_by_role"].get(role, 0.0) for r in runs]) for role in roles},
            "load_at_start": [r["load_at_start"] for r in runs], "niceness_last_round": runs[-1]["niceness"],
            "actors_last_round": runs[-1]["actors"]}
    result["scaling_1_to_2_nodes"] = P.ratio_summary(walls["ray_1_node"], walls["ray_2_nodes"])
    result["ray_1_node_vs_local"] = P.ratio_summary(walls["local_1cpu"], walls["ray_1_node"])
    result["goals"] = {k: {"goal": g, "median": result[k]["median"], "met": result[k]["median"] >= g}
                       for k, g in GOALS.items()}
    crit = {name: [_critical_cpu_s(r, nodes) for r in times[name]]
            for name, nodes in zip(CONTENDERS, (0, 1, 2), strict=True)}
    result["projection_dedicated_cpus"] = {
        "what": "an estimate from the measured CPU seconds, not a measurement: the seconds each run would take "
                "if every node had its own CPU and nothing else ran, taken as the CPU seconds of its busiest "
                "node: the local run's own; for Ray the driver and an even share of the actors' and daemons' "
                "CPU seconds on the head node",
        "critical_cpu_s": {k: P.summary(v) for k, v in crit.items()},
        "scaling_1_to_2_nodes": P.ratio_summary(crit["ray_1_node"], crit["ray_2_nodes"]),
        "ray_1_node_vs_local": P.ratio_summary(crit["local_1cpu"], crit["ray_1_node"])}
    return result


def _critical_cpu_s(run: dict[str, Any], nodes: int) -> float:
    """The CPU seconds of a run's busiest node if each node had a CPU of its own (see ``projection_...``)."""
    roles = run["cpu_s_by_role"]
    if not nodes:
        return float(sum(roles.values()))
    spread = sum(v for k, v in roles.items() if k != "cli_driver")
    return float(roles.get("cli_driver", 0.0) + spread / nodes)


# -- tag and prepare --------------------------------------------------------------------------------------------
def _lines(path: Path) -> dict[str, dict]:
    return {d["file"]: d for d in map(json.loads, path.read_text().splitlines())}


def _max_diff(a: Path, b: Path) -> float:
    la, lb = _lines(a), _lines(b)
    assert la.keys() == lb.keys(), "the runs tagged different files"
    return max(abs(la[f]["tags"][t] - lb[f]["tags"][t]) for f in la for t in la[f]["tags"])


def _actor_cpu_per_file(run: dict[str, Any]) -> float:
    """CPU seconds the model actors spent per file after they came up (start-up excluded), from their -v lines."""
    actors = [a for a in run["actors"] if a.get("files") and a.get("ready_cpu_s") is not None]
    files = sum(a["files"] for a in actors)
    return sum(a["process_cpu_s"] - a["ready_cpu_s"] for a in actors) / files if files else 0.0


def _bench_tag(work: Path, files: int, repeats: int) -> dict[str, Any]:
    n_real = _tag_library(work / "lib", files)
    model = _model(work / "paper.pt")

    def contender(name: str, nodes: int) -> Callable[[], dict[str, Any]]:
        def run() -> dict[str, Any]:
            out = work / f"{name}.jsonl"
            for stale in work.glob(f"{name}.jsonl*"):
                stale.unlink()
            return _timed_cli(["tag", str(work / "lib"), "-m", str(model), "-o", str(out), "--precision", "fp32"],
                              pinned=nodes == 0, nodes=nodes)
        return run

    times = _interleaved({name: contender(name, nodes) for name, nodes in zip(CONTENDERS, (0, 1, 2), strict=True)},
                         repeats)
    result = _figures(times, files, "tracks")
    per_track = {name: [_actor_cpu_per_file(r) for r in times[name]] for name in CONTENDERS[1:]}
    result["actor_cpu_s_per_track"] = {k: P.summary(v) for k, v in per_track.items() if all(x > 0 for x in v)}
    result.update({"files": files, "real_recordings": n_real, "model": "short_chunk_resnet (paper size), 56 tags, "
                   "16 chunks (--chunks auto), fp32",
                   "max_abs_diff_vs_local": max(_max_diff(work / "local_1cpu.jsonl", work / f"{n}.jsonl")
                                                for n in CONTENDERS[1:])})
    return result


def _bench_prepare(work: Path, tracks: int, repeats: int) -> dict[str, Any]:
    tsv = _prepare_dataset(work, tracks)

    def contender(name: str, nodes: int) -> Callable[[], dict[str, Any]]:
        def run() -> dict[str, Any]:
            cache = work / f"cache-{name}"
            shutil.rmtree(cache, ignore_errors=True)
            extra = ["--workers", "1"] if nodes == 0 else []
            run = _timed_cli(["data", "prepare", "--tsv", str(tsv), "--audio-dir", str(work / "audio"), "--cache",
                              str(cache), "--json", *extra], pinned=nodes == 0, nodes=nodes)
            summary = json.loads(run.pop("stdout").strip().splitlines()[-1])
            if summary["prepared"] != tracks:
                raise SystemExit(f"{name}: prepared {summary['prepared']} of {tracks} tracks")
            return run
        return run

    times = _interleaved({name: contender(name, nodes) for name, nodes in zip(CONTENDERS, (0, 1, 2), strict=True)},
                         repeats)
    result = _figures(times, tracks, "tracks")
    same = all((work / f"cache-{n}").is_dir() for n in CONTENDERS)
    result.update({"tracks": tracks, "audio": "generated 60 s stereo MP3, 44.1 kHz -> 16 kHz float16 cache",
                   "caches_written": same})
    return result


# -- evidence: the scheduler's share, the driver's cost per file ------------------------------------------------
def _spin(seconds: float, out: Any) -> None:
    c0, end = time.process_time(), time.perf_counter() + seconds  # the loop's CPU only, not the start-up's
    while time.perf_counter() < end:
        pass
    out.put(time.process_time() - c0)


def _cores(n: int, seconds: float) -> float:
    """CPU cores that ``n`` busy-looping processes of this session got together over ``seconds``."""
    import multiprocessing as mp

    # spawned, not forked: this process has talked to Ray (gRPC threads), and a forked child of it can die before
    # it reports, which left the parent waiting on the queue for ever
    ctx = mp.get_context("spawn")
    out: Any = ctx.Queue()
    procs = [ctx.Process(target=_spin, args=(seconds, out)) for _ in range(n)]
    for proc in procs:
        proc.start()
    got = [out.get(timeout=seconds + 120) for _ in procs]
    for proc in procs:
        proc.join()
    return sum(got) / seconds


def _session_share(repeats: int, seconds: float = 8.0) -> dict[str, Any]:
    """What this session gets from the kernel with one and with two busy processes (two 1-CPU nodes on one
    machine are two processes of one session; Linux's autogroup schedules a session as one group)."""
    one, two, loads = [], [], []
    for _ in range(repeats):
        loads.append(P.load_average())
        one.append(_cores(1, seconds))
        two.append(_cores(2, seconds))
    try:
        autogroup = Path("/proc/sys/kernel/sched_autogroup_enabled").read_text().strip()
    except OSError:
        autogroup = None
    return {"one_process_cores": P.summary(one), "two_processes_cores": P.summary(two),
            "two_over_one": P.ratio_summary(two, one), "sched_autogroup_enabled": autogroup,
            "load_at_start": loads, "seconds_each": seconds}


def _pinned_tag(core: int, files: Sequence[Path], model: Path, out: Path) -> subprocess.Popen:
    for stale in out.parent.glob(f"{out.name}*"):
        stale.unlink()
    cmd = ["taskset", "-c", str(core), str(FOCALTAG), "tag", *map(str, files), "-m", str(model), "-o", str(out),
           "--precision", "fp32", "-q"]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=_env())


def _cpu_s_of(proc: subprocess.Popen) -> float:
    """The process's own CPU seconds (user + system), from ``wait4``: exact, and per child when two run at once."""
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(map(str, proc.args))} failed with exit code {proc.returncode}")
    return usage.ru_utime + usage.ru_stime


def _twin_core(work: Path, files: int, repeats: int) -> dict[str, Any]:
    """The local run's CPU seconds per file on core 0 alone, and while a second local run tags the other half of
    the library on core 1 at the same time, without Ray: what a 1-CPU node pays for a busy neighbour on the same
    host (shared cache and memory bandwidth, or vCPUs that share a physical core on the host), which no setting of
    focaltag's removes. Two 1-CPU nodes on one 2-core machine run so; two real nodes do not."""
    cores = sorted(os.sched_getaffinity(0))[:2]
    if len(cores) < 2:
        return {"skipped": "fewer than two CPUs"}
    _tag_library(work / "lib", files)
    model = work / "paper.pt" if (work / "paper.pt").exists() else _model(work / "paper.pt")
    library = sorted(p for p in (work / "lib").rglob("*") if p.is_file())
    halves = [library[0::2], library[1::2]]  # each half gets every other file, real recordings in both
    alone, twin, loads = [], [], []
    for _ in range(repeats):
        loads.append(P.load_average())
        alone.append(_cpu_s_of(_pinned_tag(cores[0], halves[0], model, work / "alone.jsonl")) / len(halves[0]))
        procs = [_pinned_tag(cores[i], halves[i], model, work / f"twin{i}.jsonl") for i in range(2)]
        twin.append(_cpu_s_of(procs[0]) / len(halves[0]))  # the same half as alone, on the same core
        _cpu_s_of(procs[1])
    return {"alone_cpu_s_per_file": P.summary(alone), "with_twin_cpu_s_per_file": P.summary(twin),
            "twin_over_alone": P.ratio_summary(twin, alone), "cores": cores, "files_each": len(halves[0]),
            "load_at_start": loads, "what": "focaltag tag -o, pinned with taskset, paper-size ResNet, float32; "
            "CPU seconds of the whole process (start-up included) over its files"}


def _sample_result(i: int) -> Any:
    """A TagResult shaped like the paper ResNet's (56 tags, 16 chunks), for the driver-cost measurement."""
    from focaltag.inference import TagResult

    rng = np.random.default_rng(i)
    tags = tuple(f"mood/theme---tag{k:02d}" for k in range(56))
    p = rng.random(56)
    return TagResult(file=f"/music/artist/album/track{i:06d}.mp3", duration=241.5, tag_names=tags,
                     probabilities=dict(zip(tags, map(float, p), strict=True)),
                     top=[(tags[j], float(p[j])) for j in np.argsort(-p)[:5]],
                     chunk_probabilities=rng.random((16, 56)).astype(np.float32),
                     chunk_times=np.linspace(0, 230, 16), chunk_seconds=3.69, precision="fp32", model="paper.pt",
                     chunks_used=16, chunks_planned=16)


class _Echo:
    """An actor that answers every call with one result record, as a model actor does."""

    def __init__(self) -> None:
        from focaltag.ray._worker import Record

        self.record = Record(_sample_result(0))

    def tag(self, items: list[Any]) -> list[Any]:
        return [self.record for _ in items]


def _driver_cost(work: Path, repeats: int, calls: int = 2000) -> dict[str, Any]:
    """The driver's CPU per file: a Ray call two deep on one actor (submit, wait, unpickle a result record), and
    the library run's line (the JSON object, one write and flush, one stat); the sizes of both."""
    import pickle

    import ray
    from focaltag.library.runs import json_line
    from focaltag.outputs.writers import result_to_dict
    from focaltag.ray import connect
    from focaltag.ray._worker import Record

    per_call, per_line = [], []
    cluster = _cluster(1)
    try:
        connect(cluster.address)
        actor: Any = ray.remote(num_cpus=1)(_Echo).remote()
        ray.get(actor.tag.remote([0]))
        result, out = _sample_result(1), work / "lines.jsonl"
        work.mkdir(parents=True, exist_ok=True)
        for _ in range(repeats):
            c0, pending = time.process_time(), []
            for i in range(calls):
                pending.append(actor.tag.remote([i]))
                if len(pending) >= 2:
                    done, pending = ray.wait(pending, num_returns=1)
                    ray.get(done[0])
            ray.get(pending)
            per_call.append((time.process_time() - c0) / calls * 1e3)
            c0 = time.process_time()
            with open(out, "w", encoding="utf-8") as f:
                for _ in range(calls):
                    line = result_to_dict(result, top_k=5)
                    line["file"], line["size"], line["mtime"] = result.file, 7_700_000, 1.7e9
                    f.write(json_line(line) + "\n")
                    f.flush()
                    os.stat(out)
            per_line.append((time.process_time() - c0) / calls * 1e3)
        ray.shutdown()
    finally:
        cluster.shutdown()
    return {"ray_call_cpu_ms": P.summary(per_call), "line_cpu_ms": P.summary(per_line), "calls": calls,
            "record_bytes": len(pickle.dumps(Record(result))), "line_bytes": out.stat().st_size // calls}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=60, help="files to tag (the six shared recordings + WAVs)")
    parser.add_argument("--tracks", type=int, default=120, help="tracks for data prepare (60 s MP3s)")
    parser.add_argument("--only", choices=("tag", "prepare", "evidence"), default=None,
                        help="one part: tagging, data prepare, or the evidence (the session's CPU share with one "
                        "and two busy processes; the driver's CPU per file)")
    parser.add_argument("--workdir", type=Path, default=None, help="keep the data and outputs here")
    parser.add_argument("--worker-niceness", type=int, default=0,
                        help="RAY_worker_niceness of the clusters' nodes: 0 (default) runs the actors at the local "
                        "run's priority; Ray's own default, 15, makes them yield to every other process of a shared "
                        "machine")
    parser.add_argument("--float-nodes", action="store_true",
                        help="leave the nodes unbound: each may run on any core (by default node i is bound to "
                        "core i, as a 1-CPU machine is)")
    P.add_protocol_arguments(parser, quick="24 files to tag, 40 tracks to prepare")
    args = parser.parse_args(argv)
    if args.quick:
        args.files, args.tracks = 24, 40
    if shutil.which("taskset") is None:
        raise SystemExit("bench/ray.py pins the local run with taskset (util-linux); install it")
    global PIN_NODES
    PIN_NODES = not args.float_nodes
    os.environ["RAY_worker_niceness"] = str(args.worker_niceness)  # noqa: SIM112  (Ray config names are case-sensitive)
    run = P.Run("bench/ray.py", args, argv=sys.argv[1:] if argv is None else argv)
    work = args.workdir or Path(tempfile.mkdtemp(prefix="focaltag-bench-ray-"))
    results: dict[str, Any] = {"cpus_per_node": 1, "nodes_on": "one machine (ray.cluster_utils.Cluster on "
                               "127.0.0.1)", "nodes_bound_to_cores": PIN_NODES, "worker_niceness": args.worker_niceness}
    try:
        if args.only in (None, "tag"):
            results["tag"] = _bench_tag(work / "tag", args.files, args.repeats)
        if args.only in (None, "prepare"):
            results["prepare"] = _bench_prepare(work / "prepare", args.tracks, args.repeats)
        if args.only in (None, "evidence"):
            results["session_share"] = _session_share(args.repeats)
            results["twin_core"] = _twin_core(work / "twin", args.files, args.repeats)
            results["driver"] = _driver_cost(work / "driver", args.repeats)
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)
    run.finish(results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
