"""Hostile inputs, gathered so that the next change cannot quietly reopen them (issue 22).

Each test reproduces one attack found by an adversarial pass and checks the bounded answer: a config that
expands to gigabytes, a seed outside the RNG's range, a download mirror that lies about sizes or drips bytes,
and clients of ``focaltag serve`` that stall, lie, send malformed multipart or a foreign Host header. Network
tests stay on 127.0.0.1 and are bounded in requests and time.
"""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest

from focaltag.cli import main

LAUGHS = "".join(
    f"{c}: &{c} [{', '.join([f'*{p}'] * 9) if p else ', '.join(['lol'] * 9)}]\n"
    for p, c in zip(["", *"abcdefgh"], "abcdefghi", strict=True))


def _one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert "Traceback" not in err and len(lines) == 1, err
    assert lines[0].startswith("focaltag: error: "), err
    return lines[0]


# -- configs -----------------------------------------------------------------------------------------------
def test_billion_laughs_is_one_error_line_within_a_second(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                                          ) -> None:
    from focaltag.config import load_yaml
    from focaltag.errors import ConfigError

    config = tmp_path / "laughs.yaml"
    config.write_text(LAUGHS)
    start = time.perf_counter()
    with pytest.raises(ConfigError, match="alias"):
        load_yaml(config)
    assert time.perf_counter() - start < 1.0
    assert main(["train", "--config", str(config), "--out", str(tmp_path / "run")]) == 2
    assert "alias *a is not allowed" in _one_error_line(capsys.readouterr().err)
    assert not (tmp_path / "run").exists()


def test_aliases_in_set_overrides_and_experiments_are_refused(tmp_path: Path) -> None:
    from focaltag.config import parse_override
    from focaltag.errors import ConfigError
    from focaltag.experiments.spec import load_experiment

    assert parse_override("optim={a: &x [1, 2], b: *x}")[1] == "{a: &x [1, 2], b: *x}"  # text, never expanded
    spec = tmp_path / "exp.yaml"
    spec.write_text("base: {seed: &s 1}\nruns:\n  bce: {seed: *s}\n")
    with pytest.raises(ConfigError, match="alias"):
        load_experiment(spec)


@pytest.mark.parametrize("seed", ["-1", "1.0e+23", "4294967296"])
def test_seed_out_of_range_is_refused_at_validation(seed: str, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(f"seed: {seed}\n")
    assert main(["train", "--config", str(config), "--out", str(tmp_path / "run")]) == 2
    assert "seed: expected an integer 0 <= seed < 2**32" in _one_error_line(capsys.readouterr().err)


def test_the_largest_seed_is_accepted() -> None:
    from focaltag.training.config import load_train_config

    assert load_train_config(None, [f"seed={2**32 - 1}"]).seed == 2**32 - 1


# -- focaltag serve under hostile clients --------------------------------------------------------------------
BOUNDARY = b"hostile-test-boundary"
READ_TIMEOUT = 2
REQUEST_TIMEOUT = 3


def _wav(seconds: float = 1.0, seed: int = 0) -> bytes:
    import io

    import numpy as np
    import soundfile as sf

    buffer = io.BytesIO()
    wave = 0.1 * np.random.default_rng(seed).standard_normal(int(16000 * seconds)).astype(np.float32)
    sf.write(buffer, wave, 16000, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


def _part(disposition: bytes, content: bytes) -> bytes:
    return b"--" + BOUNDARY + b"\r\nContent-Disposition: form-data; " + disposition + b"\r\n\r\n" + content + b"\r\n"


def _body(*parts: bytes) -> bytes:
    return b"".join(parts) + b"--" + BOUNDARY + b"--\r\n"


CONTENT_TYPE = {"Content-Type": f"multipart/form-data; boundary={BOUNDARY.decode()}"}


@pytest.fixture(scope="module")
def serve_stack() -> object:
    from _serve_server import need

    need("fastapi", "the serve extra is not installed (pip install 'focaltag[serve]')")
    return need("httpx", "httpx is needed to talk to the server")


@pytest.fixture(scope="module")
def server(serve_stack: object, tmp_path_factory: pytest.TempPathFactory):
    import torch
    from _serve_server import running_server, small_model

    torch.manual_seed(5)
    workdir = tmp_path_factory.mktemp("serve-hostile")
    model = small_model(workdir / "small.pt")
    with running_server([model], workdir, "--queue", "2", "--read-timeout", str(READ_TIMEOUT),
                        "--request-timeout", str(REQUEST_TIMEOUT), "--allowed-host", "music.local") as srv:
        yield srv


def _post(server, body: bytes, headers: dict[str, str] | None = None, timeout: float = 30):
    import httpx

    return httpx.post(server.url + "/api/v1/tag", content=body, headers={**CONTENT_TYPE, **(headers or {})},
                      timeout=timeout)


def test_utf8_upload_names_come_back_lossless(server) -> None:
    audio = _wav()
    body = _body(
        _part('name="file"; filename="Мелодия.wav"'.encode(), audio),  # raw UTF-8, as browsers send it
        _part(b'name="file"; filename="fallback.wav"; filename*=UTF-8\'\'%E6%97%A5%E6%9C%AC%E8%AA%9E.wav', audio),
        _part('name="file"; filename="café.wav"'.encode(), audio),
        _part(b'name="file"; filename="\xff.wav"', audio),  # not UTF-8: read as Latin-1, never a 500
    )
    response = _post(server, body)
    assert response.status_code == 200, response.text
    assert [r["file"] for r in response.json()] == ["Мелодия.wav", "日本語.wav", "café.wav", "ÿ.wav"]
    assert all("tags" in r for r in response.json())


@pytest.mark.parametrize(("name", "content_type", "body"), [
    ("boundary of 300 characters", "multipart/form-data; boundary=" + "b" * 300, b"--" + b"b" * 300 + b"\r\n"),
    ("header without a colon", None, b"--" + BOUNDARY + b"\r\nno colon here\r\n\r\ndata\r\n--" + BOUNDARY + b"--\r\n"),
    ("body cut off", None, _part(b'name="file"; filename="a.wav"', b"RIFF")[:-10]),
    ("no closing boundary", None, _part(b'name="file"; filename="a.wav"', b"RIFF")),
    ("a huge part header", None, b"--" + BOUNDARY + b"\r\nX-Big: " + b"a" * 40000 + b"\r\n\r\n"),
    ("not multipart", "application/json", b'{"file": "x"}'),
    ("no boundary", "multipart/form-data", b"--x\r\n"),
    ("garbage", None, bytes(range(256)) * 8),
])
def test_malformed_multipart_is_a_json_400(server, name: str, content_type: str | None, body: bytes) -> None:
    headers = {"Content-Type": content_type} if content_type else None
    response = _post(server, body, headers)
    assert response.status_code == 400, (name, response.status_code, response.text)
    assert response.headers["content-type"] == "application/json" and response.json()["error"], name
    assert "Traceback" not in server.log_text()


def _stalled_upload(port: int) -> socket.socket:
    """Headers and 1,000 bytes of a 100 kB upload, then nothing."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    head = (f"POST /api/v1/tag HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: multipart/form-data; "
            f"boundary={BOUNDARY.decode()}\r\nContent-Length: 100000\r\n\r\n").encode()
    sock.sendall(head + _part(b'name="file"; filename="slow.wav"', b"\0" * 1000)[:1000])
    return sock


def _read_all(sock: socket.socket) -> bytes:
    """Everything until the server closes the connection (it does after a 408)."""
    answer = b""
    while chunk := sock.recv(65536):
        answer += chunk
    return answer


def test_stalled_uploads_hold_no_slot_and_are_cut_off(server) -> None:
    stalled = [_stalled_upload(server.port) for _ in range(2)]  # as many as --queue 2
    try:
        time.sleep(0.5)
        start = time.monotonic()
        response = _post(server, _body(_part(b'name="file"; filename="ok.wav"', _wav())))
        assert response.status_code == 200, response.text
        assert time.monotonic() - start < READ_TIMEOUT + 1  # answered while both uploads still stall
        for sock in stalled:
            answer = _read_all(sock)
            assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
            assert b"--read-timeout" in answer
    finally:
        for sock in stalled:
            sock.close()


def test_a_request_past_its_deadline_is_a_504_and_frees_the_worker(server) -> None:
    # 32 files (the most a request takes) of 12 s with 256 chunks each: about 0.3 s a file on an idle 2-core
    # machine, 9 s in all, three times the deadline (4 s files are shorter than one chunk and took one chunk each:
    # an idle machine finished them before the deadline)
    body = _body(*[_part(f'name="file"; filename="{i}.wav"'.encode(), _wav(12.0, seed=i)) for i in range(32)],
                 _part(b'name="chunks"', b"256"), _part(b'name="taggram"', b"true"))
    start = time.monotonic()
    response = _post(server, body)
    assert response.status_code == 504, response.text[:300]
    assert "--request-timeout" in response.json()["error"]
    assert time.monotonic() - start < REQUEST_TIMEOUT + 3
    start = time.monotonic()
    again = _post(server, _body(_part(b'name="file"; filename="next.wav"', _wav())))
    assert again.status_code == 200, again.text
    assert time.monotonic() - start < REQUEST_TIMEOUT  # the worker stopped after its current file


def test_a_client_that_disconnects_is_one_log_line(server) -> None:
    sock = _stalled_upload(server.port)
    sock.close()
    for _ in range(50):
        if "disconnected" in server.log_text():
            break
        time.sleep(0.1)
    log = server.log_text()
    assert [line for line in log.splitlines() if "disconnected" in line], log[-2000:]
    assert "Traceback" not in log and "ClientDisconnect" not in log


@pytest.mark.parametrize(("host", "status"), [
    ("evil.example", 400), ("evil.example:{port}", 400), ("127.0.0.1.evil.example", 400), ("", 400),
    ("127.0.0.1:{port}", 200), ("localhost:{port}", 200), ("LOCALHOST.", 200), ("[::1]:{port}", 200),
    ("music.local:{port}", 200),  # --allowed-host
])
def test_only_known_host_names_are_answered(server, host: str, status: int) -> None:
    import httpx

    response = httpx.get(server.url + "/healthz", headers={"Host": host.format(port=server.port)}, timeout=10)
    assert response.status_code == status, response.text
    if status == 400:
        assert "--allowed-host" in response.json()["error"]
    page = httpx.get(server.url + "/", headers={"Host": host.format(port=server.port)}, timeout=10)
    assert page.status_code == status  # the page too: a rebinding page reads nothing


# -- downloads from a hostile mirror -------------------------------------------------------------------------
PULLED = "won2020-mtat-crnn"  # a catalogue model whose pin has a size


class _HostileMirror:
    """A loopback mirror that answers every GET in one ``mode``: ``declares`` (10 GB Content-Length),
    ``endless`` (no length, bytes until the client hangs up) or ``drip`` (the right length, a byte per 50 ms)."""

    def __init__(self) -> None:
        import http.server
        import threading

        mirror = self
        self.mode = "declares"

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802
                self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                if mirror.mode == "declares":
                    self.send_header("Content-Length", str(10 * 10**9))
                elif mirror.mode == "drip":
                    self.send_header("Content-Length", str(mirror.size))
                self.end_headers()
                deadline = time.monotonic() + 30  # the server gives up too: tests stay bounded
                try:
                    while time.monotonic() < deadline:
                        if mirror.mode == "drip":
                            self.wfile.write(b"\0")
                            self.wfile.flush()
                            time.sleep(0.05)
                        else:
                            self.wfile.write(b"\0" * 65536)
                except OSError:  # the client hung up: what a bounded client does
                    pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.size = 0
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture()
def hostile_mirror(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from focaltag.models.catalogue import get_entry

    monkeypatch.setenv("FOCALTAG_CACHE_DIR", str(tmp_path / "cache"))
    mirror = _HostileMirror()
    mirror.size = int(get_entry(PULLED).pin.size)
    try:
        yield mirror
    finally:
        mirror.close()


def _error_line(err: str) -> str:
    """The one error line of a command that also logs its progress (``fetching ...``)."""
    errors = [line for line in err.splitlines() if line.startswith("focaltag: error: ")]
    assert "Traceback" not in err and len(errors) == 1, err
    return errors[0]


def _parts(tmp_path: Path) -> list[Path]:
    return list((tmp_path / "cache").rglob("*.part"))


@pytest.mark.parametrize(("mode", "message"), [
    ("declares", "declares 10,000,000,000 bytes, more than the {size:,} expected"),
    ("endless", "sent more than the {size:,} bytes expected"),
])
def test_a_pull_refuses_a_body_larger_than_the_pin(hostile_mirror: _HostileMirror, mode: str, message: str,
                                                   tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    hostile_mirror.mode = mode
    start = time.monotonic()
    assert main(["models", "pull", PULLED, "--mirror", hostile_mirror.url, "--retries", "0"]) == 2
    assert time.monotonic() - start < 20
    line = _error_line(capsys.readouterr().err)
    assert message.format(size=hostile_mirror.size) in line and "nothing was kept" in line
    assert not _parts(tmp_path)


def test_a_dripping_mirror_passes_the_deadline(hostile_mirror: _HostileMirror, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    hostile_mirror.mode = "drip"
    start = time.monotonic()
    assert main(["models", "pull", PULLED, "--mirror", hostile_mirror.url, "--timeout", "2"]) == 2
    assert time.monotonic() - start < 10  # one attempt, cut at its 2 s deadline (not retried)
    line = _error_line(capsys.readouterr().err)
    assert "past this file's deadline of 2 s" in line and "too slow" in line
    assert [p.stat().st_size for p in _parts(tmp_path)] and _parts(tmp_path)[0].stat().st_size < 100  # resumable


def test_the_default_deadline_scales_with_the_size() -> None:
    from focaltag.data._http import cli_timeouts, default_deadline

    assert default_deadline(1_687_630) == pytest.approx(60 + 1_687_630 / 100_000)
    assert default_deadline(None) is None
    assert cli_timeouts(None) == (60.0, None) and cli_timeouts(5.0) == (5.0, 5.0)


# -- a hostile file name meets a failed tag write (with issue 21's escaping of failures.tsv) -----------------
def test_a_failed_write_of_a_hostile_name_round_trips_through_failures_tsv(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    import errno
    import os

    import numpy as np
    import soundfile as sf
    import torch
    from _serve_server import small_model

    pytest.importorskip("mutagen")
    import focaltag.outputs.filetags as ft
    from focaltag.library.runs import read_failures

    torch.manual_seed(1)
    model = small_model(tmp_path / "small.pt")
    lib = tmp_path / "lib"
    lib.mkdir()
    name = lib / "tab\there\nnewline\u2028sep\r.flac"
    sf.write(name, 0.1 * np.random.default_rng(0).standard_normal(32000), 16000, format="FLAC")
    raw = name.read_bytes()

    def full_disk(*_args: object) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(ft, "_save", full_disk)
    out = tmp_path / "tags.jsonl"
    assert main(["tag", str(lib), "-m", str(model), "--chunks", "1", "-o", str(out), "--write-tags"]) == 1
    assert "No space left on device" in capsys.readouterr().err
    assert [path for path, _reason in read_failures(tmp_path / "tags.jsonl.failures.tsv")] == [str(name)]
    assert name.read_bytes() == raw and sorted(lib.iterdir()) == [name]
