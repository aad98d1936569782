"""``focaltag data download`` against a real HTTP server on 127.0.0.1 (Range support, injected faults)."""

from __future__ import annotations

import hashlib
import io
import json
import socket
import tarfile
import threading
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from focaltag.cli import main

DATASET, TYPE = "autotagging_moodtheme", "audio-low"


def _tar(members: dict[str, bytes], folders: tuple[str, ...] = ()) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for d in folders:
            info = tarfile.TarInfo(d)
            info.type = tarfile.DIRTYPE
            info.mode = 0o755
            tar.addfile(info)
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass
class Mirror:
    """Archives served under /<dataset>/<type>/<name>; ``faults[name]`` is consumed one entry per GET."""

    files: dict[str, bytes]
    faults: dict[str, list[str]] = field(default_factory=dict)
    log: list[tuple[str, str, str | None]] = field(default_factory=list)
    url: str = ""

    def gets(self, name: str) -> list[str | None]:
        return [rng for method, n, rng in self.log if method == "GET" and n == name]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: ThreadingHTTPServer

    def log_message(self, *args: object) -> None:  # keep pytest output clean
        pass

    def do_HEAD(self) -> None:
        self._serve(head=True)

    def do_GET(self) -> None:
        self._serve(head=False)

    def _reply(self, code: int, body: bytes, ctype: str, extra: dict[str, str] | None = None,
               head: bool = False) -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def _serve(self, head: bool) -> None:
        mirror: Mirror = self.server.mirror  # type: ignore[attr-defined]
        name = urllib.parse.unquote(self.path).rsplit("/", 1)[-1]
        prefix = f"/{DATASET}/{TYPE}/"
        mirror.log.append((self.command, name, self.headers.get("Range")))
        queue = mirror.faults.get(name, [])
        fault = queue[0] if queue else ""
        if queue and not head and fault != "always-500":
            queue.pop(0)
        if not urllib.parse.unquote(self.path).startswith(prefix) or name not in mirror.files or fault == "404":
            return self._reply(404, b"not found", "text/plain", head=head)
        if fault == "html":
            return self._reply(200, b"<!DOCTYPE html><html><body>Please log in</body></html>", "text/html",
                               head=head)
        if fault in ("500", "always-500"):
            return self._reply(500, b"oops", "text/plain", head=head)
        data = mirror.files[name]
        if fault == "corrupt":
            data = data[:600] + bytes([data[600] ^ 0xFF]) + data[601:]
        start = 0
        rng = self.headers.get("Range")
        if rng and rng.startswith("bytes=") and rng.endswith("-"):
            start = int(rng[6:-1])
            if start >= len(data):
                return self._reply(416, b"", "text/plain", {"Content-Range": f"bytes */{len(data)}"}, head)
        body = data[start:]
        extra = {"Content-Range": f"bytes {start}-{len(data) - 1}/{len(data)}"} if start else {}
        if fault == "drop" and not head:
            self.send_response(206 if start else 200)
            self.send_header("Content-Type", "application/x-tar")
            self.send_header("Content-Length", str(len(body)))
            for k, v in extra.items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return None
        return self._reply(206 if start else 200, body, "application/x-tar", extra, head)


@pytest.fixture()
def mirror(tmp_path: Path) -> Iterator[Mirror]:
    """Three small archives (~0.2 MB each) like the official ones, their manifests, and a loopback server."""
    rng = np.random.default_rng(0)
    files: dict[str, bytes] = {}
    tracks: dict[str, str] = {}
    for k in range(3):
        folder = f"{k:02d}"
        members = {f"{folder}/{1000 * k + i}{folder}.low.mp3": rng.bytes(int(rng.integers(40_000, 90_000)))
                   for i in range(3)}
        tracks.update({n: _sha(d) for n, d in members.items()})
        files[f"{DATASET}_{TYPE}-{folder}.tar"] = _tar(members, folders=(folder,))
    mdir = tmp_path / "manifests"
    mdir.mkdir()
    _write_manifests(mdir, files, tracks)
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    srv.daemon_threads = True
    m = Mirror(files=files)
    srv.mirror = m  # type: ignore[attr-defined]
    m.url = f"http://127.0.0.1:{srv.server_address[1]}"
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    m.tracks = tracks  # type: ignore[attr-defined]
    m.manifest_dir = mdir  # type: ignore[attr-defined]
    yield m
    srv.shutdown()
    srv.server_close()


def _write_manifests(mdir: Path, files: dict[str, bytes], tracks: dict[str, str] | None) -> None:
    (mdir / f"{DATASET}_{TYPE}_sha256_tars.txt").write_text("".join(f"{_sha(d)} {n}\n" for n, d in files.items()))
    if tracks is not None:
        (mdir / f"{DATASET}_{TYPE}_sha256_tracks.txt").write_text("".join(f"{h} {n}\n" for n, h in tracks.items()))


def _run(mirror: Mirror, out: Path, capsys: pytest.CaptureFixture[str], *extra: str,
         rc: int = 0) -> tuple[dict, str]:
    # ``out`` is the audio folder: --out is the dataset root, and the audio goes to <root>/audio
    argv = ["data", "download", "--out", str(out.parent), "--manifest-dir", str(mirror.manifest_dir),  # type: ignore
            "--base-url", mirror.url, "--backoff", "0", "--timeout", "10", "--json", "-q", "--audio-only", *extra]
    assert main(argv) == rc
    captured = capsys.readouterr()
    return (json.loads(captured.out) if captured.out.strip() else {}), captured.err


def _assert_tracks(out: Path, tracks: dict[str, str]) -> None:
    for name, digest in tracks.items():
        assert _sha((out / name).read_bytes()) == digest
    leftovers = [p.name for p in out.rglob("*") if p.suffix in (".part", ".tmp") or p.name.startswith("staging-")]
    assert leftovers == []


def test_faults_recovered_verified_and_idempotent(mirror: Mirror, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    a0, a1, a2 = mirror.files
    mirror.faults = {a0: ["corrupt"], a1: ["drop"], a2: ["500"]}
    out = tmp_path / "audio"
    rep, _ = _run(mirror, out, capsys)
    assert sorted(rep["fetched"]) == sorted(mirror.files) == sorted(rep["unpacked"])
    assert rep["failed"] == {} and rep["tracks_verified"] == len(mirror.tracks) == 9  # type: ignore[attr-defined]
    assert rep["tracks_missing"] == 0
    _assert_tracks(out, mirror.tracks)  # type: ignore[attr-defined]
    assert not list(out.glob("*.tar"))  # deleted after a verified extraction
    # corrupt: fetched again from scratch; dropped: resumed with a Range request from where it stopped
    assert mirror.gets(a0) == [None, None]
    first, second = mirror.gets(a1)
    assert first is None and second is not None and 0 < int(second[6:-1]) < len(mirror.files[a1])
    assert mirror.gets(a2) == [None, None]
    n_requests = len(mirror.log)
    rep2, _ = _run(mirror, out, capsys)
    assert len(mirror.log) == n_requests, "a second run must not contact the server"
    assert rep2["fetched"] == [] and sorted(rep2["skipped"]) == sorted(mirror.files)


def test_resume_of_a_part_left_by_an_interrupted_run(mirror: Mirror, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "audio"
    out.mkdir()
    name = next(iter(mirror.files))
    (out / f"{name}.part").write_bytes(mirror.files[name][:5000])
    rep, _ = _run(mirror, out, capsys, "--only", "00")
    assert rep["fetched"] == [name] and mirror.gets(name) == ["bytes=5000-"]
    assert rep["bytes_downloaded"] == len(mirror.files[name]) - 5000
    assert rep["tracks_missing"] is None  # not judged while other archives are outstanding


def test_dry_run_reports_sizes_and_changes_nothing(mirror: Mirror, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "audio"
    rep, _ = _run(mirror, out, capsys, "--dry-run")
    assert rep["dry_run"] and [p["action"] for p in rep["plan"]] == ["fetch"] * 3
    assert rep["total_bytes"] == sum(len(d) for d in mirror.files.values())
    assert all(p["url"] == f"{mirror.url}/{DATASET}/{TYPE}/{p['archive']}" for p in rep["plan"])
    assert {m for m, _, _ in mirror.log} == {"HEAD"} and not out.exists()
    assert main(["data", "download", "--out", str(out.parent), "--manifest-dir", str(mirror.manifest_dir),  # type: ignore
                 "--base-url", mirror.url, "--dry-run", "-q", "--audio-only"]) == 0
    assert "3 of 3 archives to process" in capsys.readouterr().out


def test_no_unpack_then_unpack_with_keep_tars(mirror: Mirror, tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "audio"
    rep, _ = _run(mirror, out, capsys, "--no-unpack")
    assert sorted(rep["fetched"]) == sorted(mirror.files) and rep["unpacked"] == []
    for name, data in mirror.files.items():
        assert (out / name).read_bytes() == data
    assert not (out / "00").exists()
    n = len(mirror.log)
    rep, _ = _run(mirror, out, capsys, "--no-unpack")
    assert rep["fetched"] == [] and len(mirror.log) == n
    tracks_file = mirror.manifest_dir / f"{DATASET}_{TYPE}_sha256_tracks.txt"  # type: ignore[attr-defined]
    with tracks_file.open("a") as fh:
        fh.write(f"{'1' * 64} 09/999.low.mp3\n")  # listed but in no archive
    rep, _ = _run(mirror, out, capsys, "--keep-tars")
    assert rep["fetched"] == [] and sorted(rep["unpacked"]) == sorted(mirror.files) and len(mirror.log) == n
    assert rep["tracks_missing"] == 1
    _assert_tracks(out, mirror.tracks)  # type: ignore[attr-defined]
    assert all((out / name).is_file() for name in mirror.files)
    rep, _ = _run(mirror, out, capsys, "--keep-tars")
    assert sorted(rep["skipped"]) == sorted(mirror.files) and len(mirror.log) == n


@pytest.mark.parametrize(("fault", "fragment"), [("404", "HTTP 404"), ("html", "HTML page instead of a tar")])
def test_404_and_html_give_one_clear_error(mirror: Mirror, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                           fault: str, fragment: str) -> None:
    name = list(mirror.files)[1]
    mirror.faults = {name: [fault] * 10}
    out = tmp_path / "audio"
    _, err = _run(mirror, out, capsys, rc=2)
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("focaltag: error:") and fragment in lines[0]
    assert f"/{DATASET}/{TYPE}/{name}" in lines[0]
    assert not (out / name).exists() and len(mirror.gets(name)) == 1  # not retried: the settings are wrong


def test_persistent_failures_reported_rest_continues(mirror: Mirror, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    a0, a1, a2 = mirror.files
    mirror.faults = {a0: ["always-500"], a1: ["corrupt"] * 3}
    out = tmp_path / "audio"
    rep, err = _run(mirror, out, capsys, "--retries", "2", rc=1)
    assert set(rep["failed"]) == {a0, a1} and rep["unpacked"] == [a2]
    assert "HTTP 500" in rep["failed"][a0] and "SHA-256 mismatch" in rep["failed"][a1]
    assert len(mirror.gets(a0)) == len(mirror.gets(a1)) == 3
    assert not (out / a0).exists() and not (out / a1).exists() and not list(out.glob("*.part"))
    mirror.faults = {}
    rep, _ = _run(mirror, out, capsys)  # rerun fetches only what failed
    assert sorted(rep["fetched"]) == sorted([a0, a1]) and rep["skipped"] == [a2]


def test_escaping_tar_refused_and_bad_track_checksum(mirror: Mirror, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    evil = f"{DATASET}_{TYPE}-00.tar"
    mirror.files[evil] = _tar({"00/ok.low.mp3": b"fine", "../../escaped.txt": b"gotcha"})
    tracks = dict(mirror.tracks)  # type: ignore[attr-defined]
    wrong = next(n for n in tracks if n.startswith("01/"))
    tracks[wrong] = "0" * 64
    _write_manifests(mirror.manifest_dir, mirror.files, tracks)  # type: ignore[attr-defined]
    out = tmp_path / "deep" / "audio"
    rep, _ = _run(mirror, out, capsys, rc=1)
    assert "outside the output folder" in rep["failed"][evil]
    assert "does not match its SHA-256" in rep["failed"][f"{DATASET}_{TYPE}-01.tar"]
    assert not list(tmp_path.rglob("escaped.txt")) and not (out / "00" / "ok.low.mp3").exists()
    assert not (out / wrong).exists()
    assert rep["unpacked"] == [f"{DATASET}_{TYPE}-02.tar"]


def test_bad_settings(mirror: Mirror, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "audio"
    assert main(["data", "download", "--out", str(out.parent), "--manifest-dir", str(tmp_path / "none"), "-q",
                 "--audio-only"]) == 2
    err = capsys.readouterr().err
    assert "git clone https://github.com/MTG/mtg-jamendo-dataset" in err and err.count("\n") == 1
    _, err = _run(mirror, out, capsys, "--only", "07", rc=2)
    assert "--only names archives not in" in err and f"{DATASET}_{TYPE}-07.tar" in err
    _, err = _run(mirror, out, capsys, "--base-url", "ftp://example.org", rc=2)
    assert "--base-url must be an http(s)://" in err
    with socket.socket() as sock:  # a port with nobody listening
        sock.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{sock.getsockname()[1]}"
    _, err = _run(mirror, out, capsys, "--base-url", closed, "--retries", "1", rc=2)
    assert "the server cannot be reached" in err and err.count("focaltag: error:") == 1
    (mirror.manifest_dir / f"{DATASET}_{TYPE}_sha256_tars.txt").write_text("nothex name.tar\n")  # type: ignore
    _, err = _run(mirror, out, capsys, rc=2)
    assert "_sha256_tars.txt line 1: expected 'SHA256 NAME'" in err
    assert mirror.log == []


def test_archive_already_present_is_verified_not_fetched(mirror: Mirror, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "audio"
    out.mkdir()
    a0, a1, _ = mirror.files
    (out / a0).write_bytes(mirror.files[a0])  # e.g. copied from another machine
    (out / a1).write_bytes(b"not the archive")  # a wrong file under the final name is replaced
    rep, _ = _run(mirror, out, capsys, "--only", "00", "01")
    assert rep["fetched"] == [a1] and sorted(rep["unpacked"]) == [a0, a1]
    assert mirror.gets(a0) == [] and len(mirror.gets(a1)) == 1
