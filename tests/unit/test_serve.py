"""focaltag.serve pieces without a server process: settings, names, streamed uploads, missing extra, CLI."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from focaltag.cli import main
from focaltag.errors import ConfigError
from focaltag.serve.config import ServeConfig, is_loopback
from focaltag.serve.server import host_warning


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "::1", "127.0.0.2"])
def test_loopback_hosts_serve_quietly(host: str) -> None:
    assert is_loopback(host) and host_warning(ServeConfig(host=host)) is None


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.10", "example.org"])
def test_other_hosts_warn(host: str) -> None:
    assert not is_loopback(host)
    message = host_warning(ServeConfig(host=host))
    assert message and host in message and "--token" in message
    assert "--token" not in (host_warning(ServeConfig(host=host, token="t")) or "")


@pytest.mark.parametrize(("options", "flag"), [
    ({"max_upload_mb": 0}, "--max-upload-mb"), ({"queue": 0}, "--queue"), ({"workers": 0}, "--workers"),
    ({"port": 70000}, "--port"), ({"token": "has space"}, "token"), ({"read_timeout": 0}, "--read-timeout"),
    ({"request_timeout": -1}, "--request-timeout"), ({"allowed_hosts": ("a b",)}, "--allowed-host"),
])
def test_bad_settings_are_one_line_config_errors(options: dict, flag: str) -> None:
    base = {"host": "127.0.0.1", "port": 8000, "token": None, "max_upload_mb": 1.0, "queue": 1, "workers": 1}
    with pytest.raises(ConfigError, match=flag):
        ServeConfig.from_options(**{**base, **options})


def test_token_falls_back_to_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FOCALTAG_SERVE_TOKEN", "from-env")
    args = {"host": "127.0.0.1", "port": 1, "max_upload_mb": 1.5, "queue": 2, "workers": 1}
    config = ServeConfig.from_options(token=None, **args)
    assert config.token == "from-env" and config.max_upload_bytes == int(1.5 * 2**20)
    assert ServeConfig.from_options(token="flag", **args).token == "flag"


@pytest.mark.parametrize(("header", "name"), [
    ("127.0.0.1:8000", "127.0.0.1"), ("LocalHost.", "localhost"), ("[::1]:8000", "[::1]"),
    ("[0:0:0:0:0:0:0:1]", "[::1]"), ("music.local:80", "music.local"), ("", None), ("a b", None),
    ("evil.example:99999", None), ("user@host", None), ("[::1", None),
])
def test_host_header_names(header: str, name: str | None) -> None:
    from focaltag.serve.guard import host_name

    assert host_name(header) == name


def test_allowed_hosts_are_loopback_the_listen_host_and_the_extra_names() -> None:
    from focaltag.serve.guard import allowed_host_names

    assert allowed_host_names("127.0.0.1") == {"127.0.0.1", "localhost", "[::1]"}
    assert allowed_host_names("::1", ["Music.Local"]) == {"127.0.0.1", "localhost", "[::1]", "music.local"}
    assert allowed_host_names("0.0.0.0") == {"127.0.0.1", "localhost", "[::1]"}  # an address, not a name
    assert "192.168.1.10" in allowed_host_names("192.168.1.10")
    assert "--allowed-host" in (host_warning(ServeConfig(host="0.0.0.0")) or "")


@pytest.mark.parametrize(("disposition", "name"), [
    ('form-data; name="file"; filename="Мелодия.ogg"'.encode(), "Мелодия.ogg"),
    (b"form-data; name=\"file\"; filename=\"a.mp3\"; filename*=UTF-8''%E6%97%A5%E6%9C%AC.mp3", "日本.mp3"),
    (b"form-data; name=\"file\"; filename*=iso-8859-1'en'caf%E9.mp3", "café.mp3"),
    (b'form-data; name="file"; filename="caf\xe9.mp3"', "café.mp3"),  # not UTF-8: Latin-1, byte for byte
    (b'form-data; name="file"', None),
])
def test_upload_file_names_are_read_losslessly(disposition: bytes, name: str | None) -> None:
    from focaltag.serve.uploads import filename_of

    assert filename_of(disposition) == name


def test_upload_names_lose_folders_and_control_characters() -> None:
    from focaltag.serve.uploads import _stored_name, display_name

    assert display_name("C:\\music\\song.mp3", 0) == "song.mp3"
    assert display_name("../../etc/passwd", 0) == "passwd"
    assert display_name("a\x00b\nc.ogg", 0) == "abc.ogg"
    assert display_name("", 2) == "upload-3" and display_name(None, 0) == "upload-1"
    assert _stored_name("x.MP3", 4) == "004.mp3" and _stored_name("x.tar;rm -rf", 1) == "001"


def _body(parts: list[tuple[str, str | None, bytes]], boundary: str = "BOUNDARY") -> bytes:
    out = b""
    for name, filename, data in parts:
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        out += f"--{boundary}\r\nContent-Disposition: {disposition}\r\n\r\n".encode() + data + b"\r\n"
    return out + f"--{boundary}--\r\n".encode()


async def _chunks(data: bytes, size: int, seen: list[int]) -> AsyncIterator[bytes]:
    for i in range(0, len(data), size):
        seen.append(i)
        yield data[i:i + size]


def test_uploads_stream_to_the_folder_and_fields_are_strings(tmp_path: Path) -> None:
    from focaltag.serve.uploads import receive_upload

    audio = bytes(range(256)) * 1000
    body = _body([("file", "one.ogg", audio), ("top_k", None, b" 3 "), ("file", "dir/two.mp3", b"xyz")])
    upload = asyncio.run(receive_upload(_chunks(body, 1000, []), "multipart/form-data; boundary=BOUNDARY",
                                        tmp_path, max_bytes=10**6))
    assert [f.name for f in upload.files] == ["one.ogg", "two.mp3"]
    assert upload.files[0].path.read_bytes() == audio and upload.files[0].path.parent == tmp_path
    assert upload.files[1].size == 3 and upload.fields == {"top_k": "3"}


def test_the_size_limit_cuts_the_stream_off_early(tmp_path: Path) -> None:
    from focaltag.serve.uploads import UploadTooLarge, receive_upload

    body = _body([("file", "big.ogg", b"\0" * 500_000)])
    seen: list[int] = []
    with pytest.raises(UploadTooLarge, match="--max-upload-mb"):
        asyncio.run(receive_upload(_chunks(body, 10_000, seen), "multipart/form-data; boundary=BOUNDARY",
                                   tmp_path, max_bytes=100_000))
    assert len(seen) <= 11  # stopped right after the limit, not after reading all 50 chunks
    with pytest.raises(UploadTooLarge):  # a Content-Length over the limit is refused before reading
        asyncio.run(receive_upload(_chunks(body, 10_000, seen := []), "multipart/form-data; boundary=BOUNDARY",
                                   tmp_path, max_bytes=100_000, content_length=str(len(body))))
    assert seen == []


@pytest.mark.parametrize(("content_type", "body", "message"), [
    ("application/json", b"{}", "multipart/form-data"),
    ("multipart/form-data; boundary=BOUNDARY", _body([("top_k", None, b"3")]), "no audio"),
    ("multipart/form-data; boundary=BOUNDARY", _body([("x", None, b"y" * 5000)]), "longer than"),
])
def test_malformed_uploads_are_upload_errors(tmp_path: Path, content_type: str, body: bytes, message: str) -> None:
    from focaltag.serve.uploads import UploadError, receive_upload

    with pytest.raises(UploadError, match=message):
        asyncio.run(receive_upload(_chunks(body, 4096, []), content_type, tmp_path, max_bytes=10**6))


def test_missing_extra_is_one_line_naming_the_install(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setitem(sys.modules, "uvicorn", None)  # import uvicorn now raises ImportError
    assert main(["serve", "-m", str(tmp_path / "m.pt")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "pip install 'focaltag[serve]'" in err and "uvicorn" in err


def test_missing_model_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("fastapi")
    assert main(["serve", "-m", str(tmp_path / "absent.pt"), "--port", "0"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "absent.pt" in err


def test_bad_cli_values_are_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("fastapi")
    assert main(["serve", "-m", "x.pt", "--max-upload-mb", "-1"]) == 2
    assert "--max-upload-mb" in capsys.readouterr().err


@pytest.fixture(scope="module")
def two_models(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """Two small random models (a/model.pt, b/model.pt) and a 10 s noise WAV."""
    import numpy as np
    import soundfile as sf
    import torch

    import focaltag

    root = tmp_path_factory.mktemp("serve-models")
    paths = []
    for seed, name in ((1, "a"), (2, "b")):
        torch.manual_seed(seed)
        (root / name).mkdir()
        paths.append(focaltag.save_model(focaltag.create_model("short_chunk_resnet", n_tags=56, width=8),
                                         root / name / "model.pt"))
    wav = root / "noise.wav"
    sf.write(wav, np.random.default_rng(0).normal(0, 0.1, 160_000).astype("float32"), 16000)
    return paths[0], paths[1], wav


def test_registry_serves_each_model_and_their_mean(two_models: tuple[Path, Path, Path]) -> None:
    pytest.importorskip("fastapi")
    from focaltag.serve.registry import ModelRegistry
    from focaltag.serve.service import TagService, parse_options
    from focaltag.serve.uploads import UploadedFile

    a, b, wav = two_models
    from focaltag.inference import InferenceOptions

    registry = ModelRegistry([a, b], InferenceOptions(n_chunks=4))
    assert registry.names == ["a-model", "b-model", "ensemble"] and registry.default == "ensemble"
    described = registry.describe()
    assert [m["members"] for m in described] == [1, 1, 2]
    assert str(a.parent) not in repr(described)
    service = TagService(registry, ServeConfig())
    try:
        upload = [UploadedFile("song.wav", wav, wav.stat().st_size)]
        tags = {}
        for name in registry.names:
            (obj,) = service.tag_files(upload, parse_options({"model": name, "top_k": "2"}, registry))
            assert obj["file"] == "song.wav" and obj["model"] == name and len(obj["top"]) == 2
            tags[name] = obj["tags"]
        assert tags["a-model"] != tags["b-model"]
        for tag, p in tags["ensemble"].items():
            assert p == pytest.approx((tags["a-model"][tag] + tags["b-model"][tag]) / 2, abs=2e-6)
        (default,) = service.tag_files(upload, parse_options({}, registry))
        assert default["tags"] == tags["ensemble"] and default["model"] == "ensemble"
    finally:
        service.close()
    base, variant = registry.tagger("a-model"), registry.tagger("a-model", 8)
    assert (base.n_chunks, variant.n_chunks) == (4, 8) and registry.tagger("a-model", 8) is variant
    assert variant.predictor is base.predictor  # a variant shares the loaded networks
    ensemble = registry.tagger("ensemble").predictor
    assert [m for m in ensemble.members] == [*base.predictor.members, *registry.tagger("b-model").predictor.members]
    with pytest.raises(ConfigError, match="unknown model 'c'"):
        registry.resolve("c")
    with pytest.raises(ConfigError, match="top_k"):
        parse_options({"top_k": "57"}, registry)


def test_one_model_answers_to_ensemble_and_same_stems_get_numbered(two_models: tuple[Path, Path, Path],
                                                                  tmp_path: Path) -> None:
    from focaltag.serve.registry import ModelRegistry

    a, _, _ = two_models
    single = ModelRegistry([a])
    assert single.names == ["a-model"] and single.resolve("ensemble") == "a-model"
    copy = tmp_path / "a" / "model.pt"
    copy.parent.mkdir()
    copy.write_bytes(a.read_bytes())
    assert ModelRegistry([a, copy]).names == ["a-model", "a-model-2", "ensemble"]
