"""Ray: `tag --ray`, `data prepare --ray` and `focaltag.ray.tag_dataset` against a real two-node Ray cluster.

The cluster is ``ray.cluster_utils.Cluster`` on this machine: a head node and a worker node with one CPU and a
200 MB object store each, on 127.0.0.1, started as a user would (``node_ip_address="127.0.0.1"``) and joined
without ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER`` in any environment: ``focaltag.ray.connect`` joins a loopback
cluster as given. Every Ray process a test starts is stopped by the fixture or the test (``cluster.shutdown()``,
``ray.shutdown()``). Without Ray the tests of the one-line error still run.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from focaltag._resources import worker_environment
from focaltag.cli import main

FOCALTAG = Path(sys.executable).parent / "focaltag"
STORE = 200 * 2 ** 20  # object store per node: the machine is shared
RAY_NEEDED = "Ray is not installed (pip install 'focaltag[ray]'); the cluster tests need it"
SINGLE_MACHINE = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


def _ray() -> object:
    return pytest.importorskip("ray", reason=RAY_NEEDED)


def _user_env() -> dict[str, str]:
    """This environment as a new user's shell has it: without Ray's single-machine switch."""
    return {k: v for k, v in os.environ.items() if k != SINGLE_MACHINE}


@pytest.fixture(scope="module")
def cluster() -> Iterator[object]:
    """A head and a worker node, 1 CPU each, on 127.0.0.1; shut down when the module's tests are done."""
    _ray()
    c = _nodes(head_cpus=1)
    try:
        yield c
    finally:
        c.shutdown()


def _nodes(*, head_cpus: int, workers: int = 1) -> object:
    """A head with ``head_cpus`` CPUs and ``workers`` worker nodes of 1 CPU, on 127.0.0.1 (the caller shuts it
    down)."""
    from ray.cluster_utils import Cluster

    assert os.environ.get(SINGLE_MACHINE) is None, "the tests join loopback clusters as a user does"
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": head_cpus, "object_store_memory": STORE,
                                                     "node_ip_address": "127.0.0.1", "include_dashboard": False})
    try:
        for _ in range(workers):
            c.add_node(num_cpus=1, object_store_memory=STORE, node_ip_address="127.0.0.1")
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


def _wait_for_lines(proc: subprocess.Popen, out: Path, n: int, timeout: float = 240) -> None:
    """Until the run ``proc`` has written ``n`` lines to ``out`` (it must still be running then)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        if out.exists() and out.read_bytes().count(b"\n") >= n:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before the node could be removed: " + proc.stderr.read()


def _complete_lines(out: Path) -> list[str]:
    """The output's files, asserting that every line is whole JSON and none is there twice."""
    data = out.read_bytes() if out.exists() else b""
    assert not data or data.endswith(b"\n"), "a half-written last line"
    names = [json.loads(line)["file"] for line in data.decode().splitlines()]
    assert len(names) == len(set(names))
    return names


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
def test_cli_embeddings_come_back_from_the_actors_into_the_librarys_store(cluster, tiny_model: Path,
                                                                           tmp_path: Path,
                                                                           capsys: pytest.CaptureFixture[str]
                                                                           ) -> None:
    """``tag -o --embeddings --ray``: the vectors come back with the results and land in the store as a local
    run's do; a rerun without --embeddings keeps the store complete (it adds only the new file's vector)."""
    from focaltag.library.api import Library

    lib = tmp_path / "lib"
    files = _make_library(lib, 5, seed=8)
    local_out, ray_out = tmp_path / "local.jsonl", tmp_path / "ray.jsonl"
    assert main([*_tag_args(tiny_model, local_out, lib), "--embeddings"]) == 0
    assert main([*_tag_args(tiny_model, ray_out, lib), "--embeddings", "--ray", cluster.address]) == 0
    capsys.readouterr()
    local_files, local_vectors = Library(local_out).embeddings()
    ray_files, ray_vectors = Library(ray_out).embeddings()
    assert sorted(ray_files) == sorted(local_files) == sorted(files)
    order = [ray_files.index(f) for f in local_files]
    np.testing.assert_allclose(ray_vectors[order], local_vectors, rtol=1e-3, atol=1e-3)

    added = _make_library(tmp_path / "more", 1, seed=9)
    assert main([*_tag_args(tiny_model, ray_out, lib, *added), "--ray", cluster.address]) == 0
    assert "1 tagged, 5 skipped" in capsys.readouterr().err
    assert sorted(Library(ray_out).embeddings()[0]) == sorted([*files, *added])


@pytest.mark.slow
def test_a_head_tags_on_the_workers_as_locally(cluster, tiny_model: Path, tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    """A head of `focaltag head train` through `--ray`: the actors get the base and the head in one model, give
    the local run's probabilities and the head's own decisions, and write them under FOCALTAG_TAGS."""
    mutagen = pytest.importorskip("mutagen")
    lib = tmp_path / "lib"
    files = []
    for wav in map(Path, _make_library(lib, 12, seed=3)):  # FLAC: tags go into Vorbis comments
        wave, sr = sf.read(wav, dtype="float32")
        sf.write(wav.with_suffix(".flac"), wave, sr)
        wav.unlink()
        files.append(str(wav.with_suffix(".flac")))
    labels = tmp_path / "labels.csv"
    labels.write_text("path,tags\n" + "".join(f"{f},{Path(f).parts[-3]}{';low' if '/album0/' in f else ''}\n"
                                               for f in files))
    head = tmp_path / "crates"
    assert main(["head", "train", "--labels", str(labels), "--out", str(head), "--base", str(tiny_model),
                 "--folds", "2", "--bootstrap", "50", "--steps", "50", "-q"]) == 0
    local_out, ray_out = tmp_path / "local.jsonl", tmp_path / "ray.jsonl"
    assert main(_tag_args(head, local_out, lib)) == 0
    assert main([*_tag_args(head, ray_out, lib), "--ray", cluster.address, "--write-tags"]) == 0
    capsys.readouterr()
    ray_lines, local = _lines(ray_out), {d["file"]: d for d in _lines(local_out)}
    assert sorted(d["file"] for d in ray_lines) == sorted(local) == sorted(files)
    for line in ray_lines:  # (the sizes differ: the Ray run wrote tags into the files)
        ref = local[line["file"]]
        assert max(abs(line["tags"][t] - ref["tags"][t]) for t in ref["tags"]) <= 1e-5
        assert line["decisions"] == ref["decisions"] and ref["decisions"] is not None
        written = mutagen.File(line["file"]).tags
        chosen = [t for t, yes in line["decisions"].items() if yes]
        assert (list(written["FOCALTAG_TAGS"]) if chosen else []) == chosen
        assert "MOOD" not in {k.upper() for k in written.keys()}  # noqa: SIM118


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
def test_losing_the_worker_node_mid_run_loses_and_duplicates_nothing(tiny_model: Path, tmp_path: Path) -> None:
    _ray()
    files = _make_library(tmp_path / "lib", 40, seed=2)
    out = tmp_path / "tags.jsonl"
    c = _nodes(head_cpus=1)
    try:
        worker = next(iter(c.worker_nodes))
        cmd = [str(FOCALTAG), *_tag_args(tiny_model, out, tmp_path / "lib"), "--chunks", "8", "--batch-size", "1",
               "--ray", c.address]
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=_user_env())
        try:
            _wait_for_lines(proc, out, 3)
            c.remove_node(worker, allow_graceful=False)  # an actor is on it, tagging right now
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
        rerun = subprocess.run(cmd, capture_output=True, text=True, timeout=400, env=_user_env())
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
def test_tag_dataset_from_python(cluster, tiny_model: Path, tmp_path: Path) -> None:
    import ray
    from focaltag.inference import InferenceOptions, Tagger
    from focaltag.ray import connect, tag_dataset

    files = _make_library(tmp_path / "lib", 6, seed=4)
    assert connect(cluster.address)
    try:
        by_path = ray.data.from_items([{"path": p} for p in files])
        rows = tag_dataset(by_path, model=tiny_model, n_chunks=4, precision="fp32", thresholds=0.5).take_all()
        # read_binary_files(..., include_paths=True), as for object storage: its read tasks need CPUs too
        as_bytes = ray.data.read_binary_files(str(tmp_path / "lib"), include_paths=True)
        from_bytes = tag_dataset(as_bytes, model=tiny_model, n_chunks=4, precision="fp32").take_all()
        with pytest.raises(Exception, match="needs a 'path' column"):
            tag_dataset(ray.data.from_items([{"file": files[0]}]), model=tiny_model)
    finally:
        ray.shutdown()
    local = Tagger(tiny_model, InferenceOptions(n_chunks=4, precision="fp32", thresholds=0.5))
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


def test_pool_plan_follows_the_nodes_cpus() -> None:
    from focaltag.errors import ConfigError
    from focaltag.ray import plan_decoders, plan_pool

    one_cpu_nodes = plan_pool([{"CPU": 1}, {"CPU": 1}])  # one actor of the whole CPU on each
    assert (one_cpu_nodes.actors, one_cpu_nodes.actor_cpus, one_cpu_nodes.device) == (2, 1, "cpu")
    assert one_cpu_nodes.files_per_call == 1
    big = plan_pool([{"CPU": 16}, {"CPU": 32}])  # actors of 4 CPUs, as many as fit
    assert (big.actors, big.actor_cpus, big.room) == (12, 4, 12)
    mixed = plan_pool([{"CPU": 1}, {"CPU": 16.0}])  # sized to the smallest node: every CPU used
    assert (mixed.actors, mixed.actor_cpus) == (17, 1)
    gpus = plan_pool([{"CPU": 8, "GPU": 4}, {"CPU": 8, "GPU": 4}, {"CPU": 4}])  # 2 CPUs per GPU to read files
    assert (gpus.actors, gpus.actor_cpus, gpus.actor_gpus, gpus.device, gpus.files_per_call) == (8, 2, 1.0, "cuda", 1)
    assert plan_pool([{"CPU": 4}] * 3, actors=2).actors == 2
    assert plan_pool([{"CPU": 2}], actors=1).fits_on([{"CPU": 2}]) and not one_cpu_nodes.fits_on([{"CPU": 0.5}])
    assert (plan_decoders([{"CPU": 1}, {"CPU": 2.0}, {"CPU": 0.5}]).actors, plan_decoders([{"CPU": 1}]).actor_cpus) \
        == (3, 1)
    with pytest.raises(ConfigError, match=r"--actors 3: the Ray cluster has room for 1 model actor\(s\) of 4 CPU"):
        plan_pool([{"CPU": 4}], actors=3)
    with pytest.raises(ConfigError, match="--actors must be"):
        plan_pool([{"CPU": 4}], actors=0)
    with pytest.raises(ConfigError, match="no node with a whole CPU"):
        plan_pool([{"CPU": 0.5}, {"memory": 1e9}])
    with pytest.raises(ConfigError, match="fewer CPUs than GPUs"):
        plan_pool([{"GPU": 1}])
    with pytest.raises(ConfigError, match="no node with a whole CPU"):
        plan_decoders([{"CPU": 0.5}])


def test_ray_addresses_are_parsed_and_loopback_is_recognised() -> None:
    from focaltag.errors import ConfigError
    from focaltag.ray._cluster import is_loopback, parse_address

    assert parse_address("127.0.0.1:6379") == ("127.0.0.1", 6379)
    assert parse_address("[::1]:6380") == ("::1", 6380)
    assert parse_address("ray://head.example:10001") == ("head.example", 10001)
    for bad in ("head", "head:", "head:port", ":6379", "head:70000"):
        with pytest.raises(ConfigError, match="not a Ray address; give HOST:PORT"):
            parse_address(bad)
    assert all(map(is_loopback, ("127.0.0.1", "127.1.2.3", "localhost", "::1")))
    assert not any(map(is_loopback, ("10.0.0.1", "head.example", "::2")))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.slow
@pytest.mark.parametrize("where", ["loopback", "test-net"])
def test_an_address_where_nothing_listens_fails_within_30_s_with_one_line(where: str, tmp_path: Path,
                                                                            tiny_model: Path) -> None:
    _ray()
    lib = tmp_path / "lib"
    _make_library(lib, 2)
    address = f"127.0.0.1:{_free_port()}" if where == "loopback" else "198.51.100.7:6379"  # RFC 5737: unrouted
    out = tmp_path / "tags.jsonl"
    started = time.monotonic()
    done = subprocess.run([str(FOCALTAG), *_tag_args(tiny_model, out, lib), "--ray", address], capture_output=True,
                          text=True, timeout=120, env=_user_env())
    seconds = time.monotonic() - started
    err = done.stderr.strip().splitlines()
    assert done.returncode == 2 and seconds < 30, (done.returncode, seconds, done.stderr)
    assert len(err) == 1 and err[0].startswith(f"focaltag: error: cannot reach the Ray cluster at {address} ("), err
    assert "check that the head node runs" in err[0] and not out.exists()


@pytest.mark.slow
def test_a_loopback_cluster_is_joined_from_another_process_as_given(cluster, tiny_model: Path,
                                                                    tmp_path: Path) -> None:
    files = _make_library(tmp_path / "lib", 4, seed=5)
    out = tmp_path / "tags.jsonl"
    env = _user_env()
    assert SINGLE_MACHINE not in env
    done = subprocess.run([str(FOCALTAG), *_tag_args(tiny_model, out, tmp_path / "lib"), "--ray", cluster.address],
                          capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr
    assert sorted(_complete_lines(out)) == sorted(files)


@pytest.mark.slow
def test_more_actors_than_the_cluster_has_room_for_is_one_line_and_writes_nothing(
        cluster, tiny_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    lib = tmp_path / "lib"
    _make_library(lib, 2)
    out = tmp_path / "tags.jsonl"
    assert main([*_tag_args(tiny_model, out, lib), "--actors", "3", "--ray", cluster.address]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["focaltag: error: --actors 3: the Ray cluster has room for 2 model actor(s) of 1 CPU(s) each; "
                   "add nodes or give --actors 2 or fewer"]
    assert list(tmp_path.glob("tags.jsonl*")) == []


@pytest.mark.slow
def test_ray_tagger_actors_run_within_their_cpu_on_the_model_from_the_object_store(cluster, tmp_path: Path) -> None:
    """Each actor holds its node's one CPU: one torch thread, one inter-op thread, one decoding thread; the model
    is an in-memory network (no file any actor could read), so it reaches them only through the object store."""
    from focaltag.inference import InferenceOptions, Tagger
    from focaltag.models import create_model
    from focaltag.ray import RayTagger, connect

    torch.manual_seed(1)
    net = create_model("short_chunk_resnet", n_tags=56, width=8).eval()
    files = _make_library(tmp_path / "lib", 8, seed=6)
    options = {"n_chunks": 4, "precision": "fp32", "top_k": 3}
    assert connect(cluster.address)
    import ray

    try:
        ray_tagger = RayTagger(net, options)
        results = list(ray_tagger.tag_many(files))
    finally:
        ray.shutdown()
    local = Tagger(net, InferenceOptions(**options, workers=0))
    assert [r.file for r in results] == files  # input order
    for r in results:
        ref = local.tag(r.file)
        assert max(abs(r.probabilities[t] - ref.probabilities[t]) for t in ref.tag_names) <= 1e-5
    stats = ray_tagger.actor_stats
    assert 1 <= len(stats) <= 2 and sum(s["files"] for s in stats) == len(files)
    tunables = bool(worker_environment())  # Linux with glibc and no allocator variables of the user's
    for s in stats:
        assert (s["cpus"], s["torch"], s["interop"], s["decode"]) == (1, 1, 1, 1), s
        assert s["malloc_tunables"] is tunables, s  # the actor process started with them, as a local run does
    if len(stats) == 2:  # SPREAD: one actor per node
        assert stats[0]["node"] != stats[1]["node"]


@pytest.mark.slow
def test_a_cluster_lost_mid_run_stops_with_one_line_and_a_rerun_finishes(tiny_model: Path, tmp_path: Path) -> None:
    """The only node with CPUs goes: the run stops with one line, every line written is whole, and a rerun on
    the cluster once a node is back tags the rest, each file once."""
    _ray()
    # enough files that the run cannot finish between its second line and the node's removal on a busy machine
    # (with 30, a CI run beside other jobs once tagged them all before the node went)
    files = _make_library(tmp_path / "lib", 120, seed=7)
    out = tmp_path / "tags.jsonl"
    c = _nodes(head_cpus=0)
    try:
        cmd = [str(FOCALTAG), *_tag_args(tiny_model, out, tmp_path / "lib"), "--chunks", "8", "--batch-size", "1",
               "--ray", c.address]
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=_user_env())
        try:
            _wait_for_lines(proc, out, 2)
            c.remove_node(next(iter(c.worker_nodes)), allow_graceful=False)
            _, stderr = proc.communicate(timeout=150)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        errors = [line for line in stderr.splitlines() if line.startswith("focaltag: error:")]
        assert proc.returncode == 2 and len(errors) == 1, stderr
        assert "lost every actor of this run and has no node left with 1 CPU(s)" in errors[0]
        partial = _complete_lines(out)
        assert 2 <= len(partial) < len(files)
        assert not (tmp_path / "tags.jsonl.failures.tsv").exists()  # nothing was tried and failed
        c.add_node(num_cpus=1, object_store_memory=STORE, node_ip_address="127.0.0.1")
        c.wait_for_nodes()
        rerun = subprocess.run(cmd, capture_output=True, text=True, timeout=400, env=_user_env())
        assert rerun.returncode == 0, rerun.stderr
        assert f"{len(files) - len(partial)} tagged, {len(partial)} skipped" in rerun.stderr
    finally:
        c.shutdown()
    assert sorted(_complete_lines(out)) == sorted(files)


_START_FIRST = """
import json, sys
from focaltag.ray import connect, start_tag_actors
assert connect(sys.argv[1])
started = start_tag_actors()
torch_before_model = "torch" in sys.modules  # the actors are starting; this process has not imported torch yet
from focaltag.inference import InferenceOptions, Tagger
from focaltag.ray import RayTagger
tagger = Tagger(sys.argv[2], InferenceOptions(n_chunks=4, precision="fp32", workers=0))
ray_tagger = RayTagger(None, {"n_chunks": 4, "precision": "fp32"}, tagger=tagger, started=started)
results = list(ray_tagger.tag_many(sys.argv[3:]))
print(json.dumps({"torch_before_model": torch_before_model, "started_pool": ray_tagger.pool is started.plan,
                  "stats": ray_tagger.actor_stats, "files": [r.file for r in results],
                  "errors": [getattr(r, "error", None) for r in results]}))
"""


@pytest.mark.slow
def test_prepare_decoders_start_before_the_cache_is_planned_and_an_idle_one_leaves_no_files(
        cluster, tmp_path: Path) -> None:
    """``runner.start()`` right after joining: both decoding actors (one per CPU of the two nodes) come up before
    the cache is known; a run of one batch then uses one of them, and only that one claims a writer slot (the
    files of a local prepare with one worker). ``close()`` after the run is a no-op; before it, it stops them."""
    import ray
    from focaltag.audio.cache import WaveformCache, prepare_cache
    from focaltag.data.metadata import read_tracks
    from focaltag.ray import connect, ray_batch_runner

    files = _make_library(tmp_path / "audio", 1, seed=21)
    tsv = tmp_path / "one.tsv"
    tsv.write_text("TRACK_ID\tARTIST_ID\tALBUM_ID\tPATH\tDURATION\tTAGS\n"
                   f"t0\ta\tb\t{Path(files[0]).relative_to(tmp_path / 'audio')}\t2.0\tmood/theme---calm\n")
    assert connect(cluster.address)
    try:
        runner = ray_batch_runner()
        pool = runner.start()
        # both actors are up (their ready() calls return) before the cache is named or any batch is given
        up = ray.get(list(pool.starting), timeout=120)
        assert len(up) == 2 and all(s["batches"] == 0 for s in up), up
        summary = prepare_cache(read_tracks(tsv, allow_untagged=True), tmp_path / "audio", tmp_path / "cache",
                                workers=2, progress=False, runner=runner)
        assert (summary.prepared, summary.failed) == (1, 0)
        runner.close()
        assert sorted(p.name for p in (tmp_path / "cache").glob("data-*.bin")) == ["data-0of1-w00.bin"]
        assert sum(s["batches"] for s in runner.actor_stats) == 1
        assert WaveformCache(tmp_path / "cache").verify() == []

        unused = ray_batch_runner()
        idle = unused.start()
        unused.close()  # the run never came: its actors are stopped
        assert not idle.alive and not idle.starting
    finally:
        ray.shutdown()


@pytest.mark.slow
def test_actors_start_before_the_driver_imports_torch_and_then_load_the_model(cluster, tiny_model: Path,
                                                                              tmp_path: Path) -> None:
    """``start_tag_actors`` right after joining: the driver has not imported torch (the actors' start-up
    overlaps the driver's), and the run then hands those very actors the model (``TagWorker.load``)."""
    files = _make_library(tmp_path / "lib", 4, seed=11)
    proc = subprocess.run([sys.executable, "-c", _START_FIRST, cluster.address, str(tiny_model), *files],
                          capture_output=True, text=True, env=_user_env(), timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["torch_before_model"] is False
    assert out["started_pool"] is True  # the run used the plan (and pool) started before the model was loaded
    assert out["files"] == files and out["errors"] == [None] * len(files)
    assert sum(s["files"] for s in out["stats"]) == len(files)
    assert all(s["load_s"] > 0 and s["init_s"] > 0 for s in out["stats"]), out["stats"]


@pytest.mark.slow
def test_the_cli_starts_its_actors_before_it_loads_the_model(cluster, tiny_model: Path, tmp_path: Path) -> None:
    """``focaltag tag --ray -v``: the pool is planned and started (its log line) before the model is loaded."""
    _make_library(tmp_path / "lib", 3, seed=12)
    out = tmp_path / "tags.jsonl"
    args = [a for a in _tag_args(tiny_model, out, tmp_path / "lib") if a != "-q"]
    proc = subprocess.run([str(FOCALTAG), *args, "-v", "--ray", cluster.address], capture_output=True, text=True,
                          env=_user_env(), timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stderr.splitlines()
    planned = next(i for i, line in enumerate(lines) if "model actor(s)" in line)
    loaded = next(i for i, line in enumerate(lines) if line.startswith("loaded ") or " loaded " in line)
    assert planned < loaded, "\n".join(lines[:20])
    assert len(out.read_text().splitlines()) == 3


@pytest.mark.slow
def test_a_setup_call_that_fails_ends_the_run_with_one_line(cluster) -> None:
    import ray
    from focaltag.errors import ConfigError
    from focaltag.ray import connect
    from focaltag.ray._pool import ActorPool

    class SetupFails:  # defined here, so that Ray ships it by value to the actors
        """An actor whose setup call raises, as a model that cannot be built on the node would."""

        def ready(self) -> dict:
            return {}

        def load(self, what: str) -> dict:
            raise ValueError(f"cannot build {what} here")

        def work(self, items: list) -> list:
            return items

    assert connect(cluster.address)
    try:
        pool = ActorPool(ray.remote(SetupFails).options(num_cpus=1), (), 1, need="1 CPU(s)", has_room=lambda: True)
        pool.setup("load", "the model")
        with pytest.raises(ConfigError, match=r"^the Ray actors could not start: cannot build the "
                                              r"model here$"):
            list(pool.run(range(3), method="work", per_call=1, give_up=lambda items, why: items))
        pool.close()
    finally:
        ray.shutdown()
