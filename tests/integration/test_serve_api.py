"""`focaltag serve` as a real server process on 127.0.0.1: real recordings, bad files, limits, token, load."""

from __future__ import annotations

import base64
import contextlib
import io
import json
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from _serve_server import Server, need, running_server, small_model

need("fastapi", "the serve extra is not installed (pip install 'focaltag[serve]')")
httpx = need("httpx", "httpx is needed to talk to the server")

from focaltag.cli import main  # noqa: E402
from focaltag.data.tags import MOODTHEME_TAGS  # noqa: E402

SHORT = "battle-epic.ogg"  # 74 s, OGG Vorbis
MP3 = "traveling_minstrels.low.mp3"


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import torch

    torch.manual_seed(7)
    return small_model(tmp_path_factory.mktemp("serve-model") / "small.pt")


@pytest.fixture(scope="module")
def thresholds(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("serve-thr") / "thresholds.tsv"
    path.write_text("".join(f"{t}\t0.5\n" for t in MOODTHEME_TAGS))
    return path


@pytest.fixture(scope="module")
def server(model: Path, thresholds: Path, cpu_bf16_module: bool, tmp_path_factory: pytest.TempPathFactory):
    """A server on each branch of the CPU rule (``auto`` in bf16, or int8 through onnxruntime), with a model
    cache of its own: without bf16 it exports and quantizes the model itself, whatever ran before."""
    work = tmp_path_factory.mktemp("serve-a")
    with running_server([model], work, "--thresholds", str(thresholds),
                        env={"FOCALTAG_CACHE_DIR": str(work / "cache")}) as srv:
        yield srv


@pytest.fixture(scope="module")
def guarded(model: Path, cpu_bf16_module: bool, tmp_path_factory: pytest.TempPathFactory):
    """A server with a token, a 2 MB upload limit and a queue of one request (on each branch of the CPU rule)."""
    work = tmp_path_factory.mktemp("serve-b")
    with running_server([model], work, "--max-upload-mb", "2", "--queue", "1",
                        env={"FOCALTAG_SERVE_TOKEN": "s3cret-token", "FOCALTAG_CACHE_DIR": str(work / "cache")}
                        ) as srv:
        yield srv


def _post(server: Server, *paths: Path, headers: dict[str, str] | None = None, timeout: float = 120,
          **fields: str) -> httpx.Response:
    files = [("file", (p.name, p.read_bytes(), "application/octet-stream")) for p in paths]
    return httpx.post(server.url + "/api/v1/tag", files=files, data=fields, headers=headers, timeout=timeout)


def _cli_json(*args: str) -> list[dict]:
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert main(["tag", *args, "--format", "json", "-q"]) == 0
    return json.loads(buf.getvalue())


def test_healthz_and_models_without_paths(server: Server, model: Path) -> None:
    health = httpx.get(server.url + "/healthz").json()
    assert health["status"] == "ok" and health["models"] == ["small"] and health["token_required"] is False
    response = httpx.get(server.url + "/api/v1/models")
    assert response.status_code == 200
    info = response.json()
    assert info["default"] == "small"
    (entry,) = info["models"]
    assert entry["tags"] == list(MOODTHEME_TAGS) and entry["n_tags"] == 56
    assert entry["has_thresholds"] is True
    assert entry["input_samples"] == 73600 and entry["sample_rate"] == 16000
    assert str(model.parent) not in response.text and "/tmp" not in response.text


def test_same_probabilities_as_focaltag_tag_json(server: Server, music_dir: Path, model: Path,
                                                 thresholds: Path) -> None:
    paths = [music_dir / SHORT, music_dir / MP3]
    response = _post(server, *paths, top_k="3")
    assert response.status_code == 200, response.text
    served = response.json()
    expected = _cli_json(*map(str, paths), "-m", str(model), "--thresholds", str(thresholds), "--top-k", "3")
    assert [obj["file"] for obj in served] == [SHORT, MP3]  # the uploaded names, never a server path
    for got, want in zip(served, expected, strict=True):
        assert got["model"] == "small"
        common = set(want) - {"file"}
        assert common <= set(got), f"API result lacks {common - set(got)}"
        assert got["duration"] == want["duration"]
        assert list(got["tags"]) == list(want["tags"]) == list(MOODTHEME_TAGS)
        worst = max(abs(got["tags"][t] - want["tags"][t]) for t in want["tags"])
        assert worst <= 2e-6, f"{got['file']}: probabilities differ from focaltag tag by {worst}"
        assert [d["tag"] for d in got["top"]][:1] == [d["tag"] for d in want["top"]][:1]
        assert len(got["top"]) == 3
        assert got["decisions"] == want["decisions"]
        for key in common - {"duration", "tags", "top", "decisions", "model"}:  # e.g. precision
            assert got[key] == want[key], key
    assert served[0]["tags"] != served[1]["tags"]  # two recordings, two answers


def test_model_chunks_and_taggram_fields(server: Server, music_dir: Path, model: Path) -> None:
    response = _post(server, music_dir / SHORT, model="ensemble", chunks="4", taggram="true", top_k="2")
    assert response.status_code == 200, response.text
    (obj,) = response.json()
    want = _cli_json(str(music_dir / SHORT), "-m", str(model), "--chunks", "4")[0]
    assert max(abs(obj["tags"][t] - want["tags"][t]) for t in want["tags"]) <= 2e-6
    png = base64.b64decode(obj["taggram_png"])
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 5000
    bad = _post(server, music_dir / SHORT, model="nope")
    assert bad.status_code == 400 and "unknown model 'nope'" in bad.json()["error"]
    assert _post(server, music_dir / SHORT, top_k="many").status_code == 400
    assert _post(server, music_dir / SHORT, colour="red").status_code == 400


def test_corrupt_file_is_a_json_400_and_the_server_stays_up(server: Server, music_dir: Path,
                                                           tmp_path: Path) -> None:
    corrupt = tmp_path / "broken.mp3"
    corrupt.write_bytes((music_dir / MP3).read_bytes()[:100].replace(b"ID3", b"XXX") + bytes(range(256)) * 40)
    response = _post(server, corrupt)
    assert response.status_code == 400
    body = response.json()
    assert "broken.mp3" in body["error"] and "focaltag-serve" not in body["error"]
    assert httpx.get(server.url + "/healthz").status_code == 200
    mixed = _post(server, corrupt, music_dir / SHORT)  # one bad file among good ones: 200, per-file error
    assert mixed.status_code == 200
    first, second = mixed.json()
    assert set(first) == {"file", "error"} and first["file"] == "broken.mp3"
    assert second["file"] == SHORT and len(second["tags"]) == 56
    empty = httpx.post(server.url + "/api/v1/tag", data={"top_k": "3"}, timeout=30)
    assert empty.status_code == 400 and "file" in empty.json()["error"]


def test_24_requests_6_at_a_time_without_errors(server: Server, music_dir: Path) -> None:
    names = [SHORT, MP3, "music013.ogg"]
    payloads = {n: (music_dir / n).read_bytes() for n in names}

    def one(i: int) -> tuple[int, dict]:
        name = names[i % len(names)]
        r = httpx.post(server.url + "/api/v1/tag", files={"file": (name, payloads[name])}, timeout=300)
        return r.status_code, (r.json()[0] if r.status_code == 200 else r.json())

    with ThreadPoolExecutor(6) as pool:
        answers = list(pool.map(one, range(24)))
    assert [status for status, _ in answers] == [200] * 24, [a for a in answers if a[0] != 200][:2]
    by_file: dict[str, dict] = {}
    for _, obj in answers:
        assert by_file.setdefault(obj["file"], obj["tags"]) == obj["tags"]  # same file, same answer
    assert sorted(by_file) == sorted(names)
    assert httpx.get(server.url + "/healthz").status_code == 200
    assert list(server.tmpdir.iterdir()) == []  # every upload folder was removed


def test_listens_only_on_127_0_0_1_by_default(server: Server) -> None:
    tables = [Path("/proc/net/tcp"), Path("/proc/net/tcp6")]
    if not tables[0].exists():
        pytest.skip("needs Linux /proc/net/tcp to list listening sockets")
    listening = []
    for table in tables:
        if not table.exists():
            continue
        for line in table.read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, port = local.split(":")
            if state == "0A" and int(port, 16) == server.port:  # 0A = LISTEN
                listening.append(address)
    assert listening == ["0100007F"], listening  # 127.0.0.1 only, no IPv6 / wildcard socket


def test_openapi_is_served_and_cdn_docs_are_not(server: Server) -> None:
    schema = httpx.get(server.url + "/api/v1/openapi.json").json()
    assert "/api/v1/tag" in schema["paths"] and "/api/v1/models" in schema["paths"]
    body = schema["paths"]["/api/v1/tag"]["post"]["requestBody"]["content"]["multipart/form-data"]
    assert "file" in body["schema"]["properties"]
    for url in ("/docs", "/redoc"):
        assert httpx.get(server.url + url).status_code == 404
    page = httpx.get(server.url + "/")
    assert page.status_code == 200 and "/static/app.js" in page.text
    for asset in ("/", "/static/app.js", "/static/style.css"):
        text = httpx.get(server.url + asset).text
        assert "http://" not in text and "https://" not in text and "//cdn" not in text  # works offline


def test_token_is_required_under_api_but_not_for_healthz(guarded: Server, music_dir: Path) -> None:
    assert httpx.get(guarded.url + "/healthz").json()["token_required"] is True
    assert httpx.get(guarded.url + "/").status_code == 200
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic s3cret-token"}):
        response = httpx.get(guarded.url + "/api/v1/models", headers=headers)
        assert response.status_code == 401 and "token" in response.json()["error"]
        assert _post(guarded, music_dir / SHORT, headers=headers).status_code == 401
    assert httpx.get(guarded.url + "/api/v1/openapi.json").status_code == 401
    ok = _post(guarded, music_dir / SHORT, headers={"Authorization": "Bearer s3cret-token"})
    assert ok.status_code == 200 and ok.json()[0]["file"] == SHORT


def test_upload_over_the_limit_is_413(guarded: Server, music_dir: Path) -> None:
    auth = {"Authorization": "Bearer s3cret-token"}
    big = music_dir / "nebula.ogg"  # 4.6 MB > 2 MB
    response = _post(guarded, big, headers=auth)
    assert response.status_code == 413 and "2 MB" in response.json()["error"]

    def chunks():  # no Content-Length: the limit is enforced while the body streams in
        boundary = b"x-focaltag-test"
        yield b"--" + boundary + b'\r\nContent-Disposition: form-data; name="file"; filename="a.ogg"\r\n\r\n'
        data = big.read_bytes()
        for i in range(0, len(data), 256 * 1024):
            yield data[i:i + 256 * 1024]
        yield b"\r\n--" + boundary + b"--\r\n"

    streamed = httpx.post(guarded.url + "/api/v1/tag", content=chunks(), timeout=60,
                          headers={**auth, "Content-Type": "multipart/form-data; boundary=x-focaltag-test"})
    assert streamed.status_code == 413
    assert httpx.get(guarded.url + "/healthz").status_code == 200
    assert list(guarded.tmpdir.iterdir()) == []


def test_full_queue_answers_503(guarded: Server, music_dir: Path) -> None:
    auth = {"Authorization": "Bearer s3cret-token"}
    with ThreadPoolExecutor(6) as pool:
        statuses = list(pool.map(lambda _: _post(guarded, music_dir / SHORT, headers=auth).status_code, range(6)))
    assert set(statuses) <= {200, 503} and 200 in statuses and 503 in statuses, statuses
    busy = [s for s in statuses if s == 503]
    assert busy  # with --queue 1, concurrent requests beyond the first are turned away at once


def test_ctrl_c_stops_the_server_cleanly(model: Path, tmp_path: Path) -> None:
    with running_server([model], tmp_path) as srv:
        srv.process.send_signal(signal.SIGINT)
        start = time.monotonic()
        code = srv.process.wait(timeout=30)
        assert code == 0, srv.log_text()
        assert time.monotonic() - start < 15
        assert "Traceback" not in srv.log_text()
        with pytest.raises(httpx.ConnectError):
            httpx.get(srv.url + "/healthz", timeout=2)
