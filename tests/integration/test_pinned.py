"""data/pinned.py against a loopback mirror: blob ids, resume, retries, and refusal of wrong bytes."""

from __future__ import annotations

import hashlib
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from _mirror_server import Mirror, free_port_url, serve_mirror, tree_files

from focaltag.data.pinned import Pin, fetch_pinned, git_blob_sha1, pinned_url, verify_pinned
from focaltag.errors import DownloadError

REPO = "someone/some-repo"
COMMIT = "4e1d652d4a7b12437a624965e85890b70b4a111d"
PATH = "models/x/best_model.pth"
DATA = bytes(range(256)) * 4096 + b"tail"  # ~1 MiB, not a multiple of the block size


def _blob(data: bytes) -> str:
    """Independent of the code under test: the definition of a git blob id."""
    return hashlib.sha1(f"blob {len(data)}".encode() + b"\x00" + data).hexdigest()


@pytest.fixture
def mirror() -> Iterator[Mirror]:
    with serve_mirror() as m:
        m.add(REPO, COMMIT, PATH, DATA)
        yield m


@pytest.fixture
def pin() -> Pin:
    return Pin(REPO, COMMIT, PATH, _blob(DATA), len(DATA))


def test_git_blob_sha1_matches_git(tmp_path: Path) -> None:
    f = tmp_path / "f.bin"
    f.write_bytes(DATA)
    assert git_blob_sha1(f) == git_blob_sha1(DATA) == _blob(DATA)
    assert git_blob_sha1(b"") == "e69de29bb2d1d6434b8b29ae775ad8c2e48c5391"  # git's well-known empty blob
    try:
        out = subprocess.run(["git", "hash-object", str(f)], capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("git not available")
    assert git_blob_sha1(f) == out.stdout.strip()


def test_pin_parse_and_url() -> None:
    pin = Pin.parse(f"{REPO}@{COMMIT}:{PATH}", _blob(DATA), len(DATA))
    assert (pin.repo, pin.commit, pin.path) == (REPO, COMMIT, PATH)
    assert pinned_url(pin) == f"https://raw.githubusercontent.com/{REPO}/{COMMIT}/{PATH}"
    assert pinned_url(pin, "http://h:1/m/") == f"http://h:1/m/{REPO}/{COMMIT}/{PATH}"
    for bad in ("no-at-sign", f"{REPO}@{COMMIT}", f"{REPO}@abc:{PATH}", f"x@{COMMIT}:{PATH}",
                f"{REPO}@{COMMIT}:../etc/passwd"):
        with pytest.raises(DownloadError):
            Pin.parse(bad, _blob(DATA))
    with pytest.raises(DownloadError, match="mirror must be"):
        pinned_url(pin, "ftp://x")


def test_fetch_verifies_and_is_idempotent(mirror: Mirror, pin: Pin, tmp_path: Path) -> None:
    dest = tmp_path / "out" / "model.pth"
    assert fetch_pinned(pin, dest, base=mirror.url) == dest
    assert dest.read_bytes() == DATA
    assert tree_files(tmp_path) == ["out/model.pth"]
    key = f"/{REPO}/{COMMIT}/{PATH}"
    assert mirror.gets(key) == [None]
    fetch_pinned(pin, dest, base=mirror.url)  # verified copy: no request at all
    assert mirror.gets(key) == [None]
    verify_pinned(dest, pin)


def test_fetch_resumes_after_a_dropped_connection(mirror: Mirror, pin: Pin, tmp_path: Path) -> None:
    key = f"/{REPO}/{COMMIT}/{PATH}"
    mirror.faults[key] = "drop:300000"
    dest = tmp_path / "model.pth"
    fetch_pinned(pin, dest, base=mirror.url, backoff=0)
    assert dest.read_bytes() == DATA
    ranges = mirror.gets(key)
    assert ranges[0] is None and ranges[1] is not None
    resumed_at = int(ranges[1][len("bytes="):-1])
    assert 0 < resumed_at <= 300000
    assert not (tmp_path / "model.pth.part").exists()


def test_fetch_resumes_a_part_left_by_an_earlier_run(mirror: Mirror, pin: Pin, tmp_path: Path) -> None:
    dest = tmp_path / "model.pth"
    (tmp_path / "model.pth.part").write_bytes(DATA[:1000])
    fetch_pinned(pin, dest, base=mirror.url)
    assert dest.read_bytes() == DATA
    assert mirror.gets(f"/{REPO}/{COMMIT}/{PATH}") == ["bytes=1000-"]


def test_a_wrong_resumed_part_is_fetched_again(mirror: Mirror, pin: Pin, tmp_path: Path) -> None:
    dest = tmp_path / "model.pth"
    (tmp_path / "model.pth.part").write_bytes(b"x" * 1000)  # garbage from some other file
    fetch_pinned(pin, dest, base=mirror.url, backoff=0)
    assert dest.read_bytes() == DATA
    assert mirror.gets(f"/{REPO}/{COMMIT}/{PATH}") == ["bytes=1000-", None]


@pytest.mark.parametrize(("fault", "fragment"), [
    ("flip", "git blob"),
    ("truncate:5000", "truncated: 5,000 bytes"),
    ("html", "HTML page instead of best_model.pth"),
    ("404", "HTTP 404"),
])
def test_bad_answers_give_one_line_and_cache_nothing(mirror: Mirror, pin: Pin, tmp_path: Path, fault: str,
                                                     fragment: str) -> None:
    mirror.faults[f"/{REPO}/{COMMIT}/{PATH}"] = fault
    dest = tmp_path / "out" / "model.pth"
    with pytest.raises(DownloadError) as info:
        fetch_pinned(pin, dest, base=mirror.url, backoff=0)
    message = str(info.value)
    assert fragment in message and "\n" not in message
    assert not dest.exists()
    assert [f for f in tree_files(tmp_path) if not f.endswith(".part")] == []
    assert len(mirror.gets(f"/{REPO}/{COMMIT}/{PATH}")) == 1  # wrong bytes on a fresh transfer: no retry storm


def test_a_tampered_file_at_the_final_name_is_replaced(mirror: Mirror, pin: Pin, tmp_path: Path) -> None:
    dest = tmp_path / "model.pth"
    dest.write_bytes(DATA[:-1] + b"X")
    with pytest.raises(DownloadError, match="git blob"):
        verify_pinned(dest, pin)
    fetch_pinned(pin, dest, base=mirror.url)
    assert dest.read_bytes() == DATA


def test_no_network_is_one_line(pin: Pin, tmp_path: Path) -> None:
    with pytest.raises(DownloadError) as info:
        fetch_pinned(pin, tmp_path / "m.pth", base=free_port_url(), backoff=0, hint="run focaltag models import")
    message = str(info.value)
    assert "cannot be reached" in message and "focaltag models import" in message and "\n" not in message
    assert tree_files(tmp_path) == []


def test_server_errors_are_retried(mirror: Mirror, pin: Pin, tmp_path: Path) -> None:
    key = f"/{REPO}/{COMMIT}/{PATH}"
    mirror.faults[key] = "500"
    with pytest.raises(DownloadError, match=r"giving up after 3 attempts: HTTP 500"):
        fetch_pinned(pin, tmp_path / "m.pth", base=mirror.url, retries=2, backoff=0)
    assert len(mirror.gets(key)) == 3
