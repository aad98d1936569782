"""Ray: `tag --ray`, `data prepare --ray` and `focaltag.ray.tag_dataset` against a real two-node Ray cluster.

The cluster is ``ray.cluster_utils.Cluster`` on this machine: a head node and a worker node with one CPU and a
200 MB object store each, on 127.0.0.1. Every Ray process a test starts is stopped by the fixture or the test
(``cluster.shutdown()``, ``ray.shutdown()``). Without Ray the tests of the one-line error still run.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from focaltag.cli import main

FOCALTAG = Path(sys.executable).parent / "focaltag"
STORE = 200 * 2 ** 20  # object store per node: the machine is shared
RAY_NEEDED = "Ray is not installed (pip install 'focaltag[ray]'); the cluster tests need it"


def _ray() -> object:
    return pytest.importorskip("ray", reason=RAY_NEEDED)


@pytest.fixture(scope="module")
def cluster() -> Iterator[object]:
    """A head and a worker node, 1 CPU each, on 127.0.0.1; shut down when the module's tests are done."""
    _ray()
    with pytest.MonkeyPatch.context() as env:
        _loopback(env)
        c = _two_nodes()
        try:
            yield c
        finally:
            c.shutdown()


def _loopback(env: pytest.MonkeyPatch) -> None:
    """Ray's single-machine mode: every node and driver on 127.0.0.1 (this process and the ones it starts)."""
    import ray._private.ray_constants as constants

    env.setenv("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    env.setattr(constants, "ENABLE_RAY_CLUSTER", False)


def _two_nodes() -> object:
    """Head + worker, 1 CPU and a small object store each (the caller sets LOOPBACK and shuts it down)."""
    from ray.cluster_utils import Cluster

    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "object_store_memory": STORE})
    try:
        c.add_node(num_cpus=1, object_store_memory=STORE)
        c.wait_for_nodes()
    except BaseException:
        c.shutdown()
        raise
    assert c.address.startswith("127.0.0.1:"), c.address
    return c


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A randomly initialised narrow paper-variant model (56 mood/theme tags)."""
    from focaltag.models import create_model, save_model

    torch.manual_seed(0)
    return save_model(create_model("short_chunk_resnet", n_tags=56, width=8),
                      tmp_path_factory.mktemp("model") / "tiny.pt")


def _make_library(root: Path, n: int, *, seed: int = 0) -> list[str]:
    """``n`` noise/tone WAV files of 0.5-5 s at 16 or 22.05 kHz in nested folders."""
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        folder = root / f"artist{i % 3}" / f"album{i % 2}"
        folder.mkdir(parents=True, exist_ok=True)
        sr = (16000, 22050)[i % 2]
        t = np.arange(int(sr * rng.uniform(0.5, 5.0))) / sr
        wave = 0.3 * np.sin(2 * np.pi * rng.uniform(100, 2000) * t) + 0.05 * rng.standard_normal(len(t))
        path = folder / f"track{i:03d}.wav"
        sf.write(path, wave.astype(np.float32), sr)
        paths.append(str(path))
    return paths


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _tag_args(model: Path, out: Path, *paths: object) -> list[str]:
    # float32 on both sides (bf16 exists on this CPU); top-k 0: a random model's near-ties are beside the point
    return ["tag", *map(str, paths), "-m", str(model), "-o", str(out), "--chunks", "4", "--precision", "fp32",
            "--top-k", "0", "-q"]


def _assert_same_probabilities(ray_lines: list[dict], local_lines: list[dict]) -> None:
    local = {d["file"]: d for d in local_lines}
    assert sorted(d["file"] for d in ray_lines) == sorted(local)
    worst = 0.0
    for d in ray_lines:
        ref = local[d["file"]]
        assert d.keys() == ref.keys() and d["size"] == ref["size"] and d["duration"] == ref["duration"]
        worst = max(worst, max(abs(d["tags"][t] - ref["tags"][t]) for t in ref["tags"]))
    assert worst <= 1e-5, f"Ray and local probabilities differ by {worst:.2e}"


@pytest.mark.slow
def test_cli_tag_on_two_nodes_equals_local_and_has_every_file_once(cluster, tiny_model: Path, tmp_path: Path,
                                                                    music_dir: Path,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    lib = tmp_path / "lib"
    files = _make_library(lib, 30)
    broken = lib / "broken.wav"
    broken.write_bytes(b"not audio")
    real = sorted(str(p) for p in music_dir.iterdir() if p.suffix in (".ogg", ".mp3"))
    local_out, ray_out = tmp_path / "local.jsonl", tmp_path / "ray.jsonl"
    assert main(_tag_args(tiny_model, local_out, lib, *real)) == 1  # the broken file
    capsys.readouterr()
    assert main([*_tag_args(tiny_model, ray_out, lib, *real), "--ray", cluster.address]) == 1
    err = capsys.readouterr().err
    assert f"{len(files) + len(real)} tagged, 0 skipped (already in the output), 1 failed" in err
    lines = _lines(ray_out)
    names = [d["file"] for d in lines]
    assert len(names) == len(set(names)) == len(files) + len(real)
    _assert_same_probabilities(lines, _lines(local_out))
    failed = (tmp_path / "ray.jsonl.failures.tsv").read_text().splitlines()
    assert [row.split("\t")[0] for row in failed] == [str(broken)]
    assert failed[0].split("\t")[1] == (tmp_path / "local.jsonl.failures.tsv").read_text().split("\t")[1].strip()

    # a rerun skips what is done and retries the failure; --files-from adds listed paths
    sf.write(broken, np.zeros(8000, dtype=np.float32), 16000)
    extra = tmp_path / "extra"
    listed = _make_library(extra, 2, seed=1)
    listing = tmp_path / "list.txt"
    listing.write_text("# from the catalogue database\n\n" + "\n".join(listed) + "\n")
    assert main([*_tag_args(tiny_model, ray_out, lib, *real), "--files-from", str(listing),
                 "--ray", cluster.address]) == 0
    err = capsys.readouterr().err
    assert f"3 tagged, {len(files) + len(real)} skipped" in err
    names = [d["file"] for d in _lines(ray_out)]
    assert sorted(names) == sorted([*files, *real, str(broken), *listed])


@pytest.mark.slow
def test_write_tags_runs_on_the_workers(cluster, tiny_model: Path, tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    from focaltag.outputs.filetags import read_file_tags

    lib = tmp_path / "lib"
    lib.mkdir()
    for i in range(3):
        sf.write(lib / f"t{i}.flac", np.sin(np.arange(16000) * 0.05 * (i + 1)).astype(np.float32), 16000)
    out = tmp_path / "tags.jsonl"
    argv = ["tag", str(lib), "-m", str(tiny_model), "-o", str(out), "--chunks", "2", "--precision", "fp32",
            "--top-k", "2", "--write-tags", "--ray", cluster.address, "-q"]
    assert main(argv) == 0
    assert "tags: written to 3 file(s)" in capsys.readouterr().err
    for d in _lines(out):
        assert read_file_tags(d["file"]) == [t["tag"].split("---")[-1] for t in d["top"]] or \
            len(read_file_tags(d["file"])) == 2
        st = os.stat(d["file"])
        assert d["size"] == st.st_size and d["mtime"] == st.st_mtime  # recorded after the worker's write


@pytest.mark.slow
def test_losing_the_worker_node_mid_run_loses_and_duplicates_nothing(tiny_model: Path, tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    _ray()
    _loopback(monkeypatch)
    files = _make_library(tmp_path / "lib", 40, seed=2)
    out = tmp_path / "tags.jsonl"
    c = _two_nodes()
    try:
        worker = next(iter(c.worker_nodes))
        cmd = [str(FOCALTAG), *_tag_args(tiny_model, out, tmp_path / "lib"), "--chunks", "8", "--batch-size", "1",
               "--ray", c.address]
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            deadline = time.monotonic() + 240
            while time.monotonic() < deadline and proc.poll() is None:
                if out.exists() and out.read_bytes().count(b"\n") >= 3:
                    break
                time.sleep(0.05)
            assert proc.poll() is None, "the run ended before the node could be removed: " + proc.stderr.read()
            c.remove_node(worker, allow_graceful=False)  # tasks and an actor are on it right now
            try:
                first_rc = proc.wait(timeout=90)
            except subprocess.TimeoutExpired:
                proc.send_signal(signal.SIGINT)  # the run we started; the rerun below must finish the job
                first_rc = proc.wait(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        partial = [d["file"] for d in _lines(out)] if out.exists() else []
        assert len(partial) == len(set(partial))
        rerun = subprocess.run(cmd, capture_output=True, text=True, timeout=400)
        assert rerun.returncode == 0, rerun.stderr
        if first_rc == 0:
            assert f"0 tagged, {len(files)} skipped" in rerun.stderr
    finally:
        c.shutdown()
    names = [d["file"] for d in _lines(out)]
    assert sorted(names) == sorted(files) and len(names) == len(set(names))


@pytest.mark.slow
def test_data_prepare_on_ray_writes_the_local_cache_track_for_track(cluster, tmp_path: Path, music_dir: Path,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    from focaltag.audio.cache import WaveformCache
    from focaltag.audio.decode import audio_info
    from focaltag.data.metadata import OFFICIAL_COLUMNS

    audio = tmp_path / "audio"
    audio.mkdir()
    rows = ["\t".join(OFFICIAL_COLUMNS)]
    for i, p in enumerate(sorted(p for p in music_dir.iterdir() if p.suffix in (".ogg", ".mp3"))):
        shutil.copy(p, audio / p.name)
        rows.append(f"real{i}\ta\tb\t{p.name}\t{audio_info(p).duration:.1f}\tmood/theme---epic")
    for i, path in enumerate(_make_library(audio / "gen", 12, seed=3)):
        rows.append(f"gen{i}\ta\tb\t{Path(path).relative_to(audio)}\t2.0\tmood/theme---calm")
    tsv = tmp_path / "list.tsv"
    tsv.write_text("\n".join(rows) + "\n")
    n = len(rows) - 1

    def prepare(cache: Path, *extra: str) -> dict:
        rc = main(["data", "prepare", "--tsv", str(tsv), "--audio-dir", str(audio), "--cache", str(cache),
                   "--json", "-q", *extra])
        assert rc == 0
        return json.loads(capsys.readouterr().out.strip().splitlines()[-1])

    prepare(tmp_path / "local", "--workers", "1")
    summary = prepare(tmp_path / "ray", "--ray", cluster.address)
    assert (summary["tracks"], summary["prepared"], summary["failed"]) == (n, n, 0)
    local, remote = WaveformCache(tmp_path / "local"), WaveformCache(tmp_path / "ray")
    assert local.track_ids == remote.track_ids and len(remote) == n
    for tid in local.track_ids:  # the stored float16 bytes, track for track
        assert local.raw(tid).tobytes() == remote.raw(tid).tobytes(), tid
    assert remote.verify() == []
    assert (tmp_path / "local" / "cache.json").read_bytes() == (tmp_path / "ray" / "cache.json").read_bytes()

    # resumable: a track whose journal line is gone (a kill before its commit) is all a rerun decodes
    journals = sorted((tmp_path / "ray").glob("index-*.jsonl"))
    lines = journals[0].read_text().splitlines(keepends=True)
    journals[0].write_text("".join(lines[:-1]))
    again = prepare(tmp_path / "ray", "--ray", cluster.address)
    assert (again["prepared"], again["skipped"]) == (1, n - 1)
    remote = WaveformCache(tmp_path / "ray")
    assert all(local.raw(t).tobytes() == remote.raw(t).tobytes() for t in local.track_ids)


@pytest.mark.slow
def test_tag_dataset_from_python(cluster, tiny_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import ray
    from focaltag.inference.tagger import Tagger
    from focaltag.ray import tag_dataset

    files = _make_library(tmp_path / "lib", 6, seed=4)
    _loopback(monkeypatch)
    ray.init(address=cluster.address, logging_level="WARNING", log_to_driver=False)
    try:
        by_path = ray.data.from_items([{"path": p} for p in files])
        rows = tag_dataset(by_path, model=tiny_model, n_chunks=4, precision="fp32", thresholds=0.5).take_all()
        # the columns of read_binary_files(..., include_paths=True), as object storage gives them
        as_bytes = ray.data.from_items([{"path": p, "bytes": Path(p).read_bytes()} for p in files])
        from_bytes = tag_dataset(as_bytes, model=tiny_model, n_chunks=4, precision="fp32").take_all()
        with pytest.raises(Exception, match="needs a 'path' column"):
            tag_dataset(ray.data.from_items([{"file": files[0]}]), model=tiny_model)
    finally:
        ray.shutdown()
    local = Tagger(tiny_model, n_chunks=4, precision="fp32", thresholds=0.5)
    assert sorted(r["path"] for r in rows) == sorted(files)
    for row in rows:
        ref = local.tag(row["path"])
        assert row["error"] is None and row["model"] == "tiny.pt" and row["precision"] == "fp32"
        assert max(abs(row["probabilities"][t] - ref.probabilities[t]) for t in ref.tag_names) <= 1e-5
        assert [t["tag"] for t in row["top"]] == [t for t, _ in ref.top]
        assert row["decisions"] == ref.decisions
    assert len(from_bytes) == len(files)
    for row in from_bytes:
        ref = local.tag(row["path"])
        assert row["error"] is None and row["decisions"] is None
        assert max(abs(row["probabilities"][t] - ref.probabilities[t]) for t in ref.tag_names) <= 1e-5


@pytest.mark.parametrize("argv", [
    ["tag", "LIB", "-o", "OUT", "--ray"],
    ["tag", "LIB", "-o", "OUT", "--ray", "127.0.0.1:6379"],
    ["data", "prepare", "--tsv", "TSV", "--audio-dir", "LIB", "--cache", "OUT", "--ray"],
])
def test_without_ray_every_ray_option_is_one_line(argv: list[str], monkeypatch: pytest.MonkeyPatch,
                                                  tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # what an environment without the extra looks like
    (tmp_path / "lib").mkdir()
    (tmp_path / "list.tsv").write_text("\t".join(["TRACK_ID", "ARTIST_ID", "ALBUM_ID", "PATH", "DURATION", "TAGS"])
                                       + "\n")
    subst = {"LIB": str(tmp_path / "lib"), "OUT": str(tmp_path / "out"), "TSV": str(tmp_path / "list.tsv")}
    assert main([subst.get(a, a) for a in argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("focaltag: error:")
    assert "pip install 'focaltag[ray]'" in err[0] and "Traceback" not in err[0]

    from focaltag.errors import ConfigError
    from focaltag.ray import tag_dataset

    with pytest.raises(ConfigError, match=r"pip install 'focaltag\[ray\]'"):
        tag_dataset(object(), model="x.pt")


def test_pool_plan_sizes_actors_from_the_cluster() -> None:
    from focaltag.errors import ConfigError
    from focaltag.ray import plan_pool

    two_small = plan_pool([{"CPU": 1}, {"CPU": 1}])
    assert (two_small.actors, two_small.actor_cpus, two_small.decode_cpus, two_small.device) == (2, 0.5, 0.5, "cpu")
    big = plan_pool([{"CPU": 16}, {"CPU": 32}])
    assert (big.actors, big.actor_cpus, big.threads, big.decode_cpus) == (2, 8.0, 8, 1.0)
    gpus = plan_pool([{"CPU": 8, "GPU": 4}, {"CPU": 8, "GPU": 4}, {"CPU": 4}])
    assert (gpus.actors, gpus.actor_gpus, gpus.device) == (8, 1.0, "cuda")
    assert plan_pool([{"CPU": 4}], actors=3).actors == 3
    with pytest.raises(ConfigError, match="--actors must be"):
        plan_pool([{"CPU": 4}], actors=0)
    with pytest.raises(ConfigError, match="no node with a CPU"):
        plan_pool([{"GPU": 1}])
