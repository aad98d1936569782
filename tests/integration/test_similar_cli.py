"""Similar tracks and playlists through the real CLI, on the shared recordings with Won et al.'s MTAT Musicnn.

The library folder links the six shared recordings (one of them, ``traveling_minstrels.low.mp3``, is an MP3
re-encode of ``traveling_minstrels.ogg``: a real duplicate). Scores are checked against cosines computed with
numpy from ``Library.embeddings()``, and playlists are read back with the ``m3u8`` package.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
from pathlib import Path

import numpy as np
import pytest

from focaltag.cli import main
from focaltag.library.api import Library
from focaltag.library.runs import path_key, read_output
from focaltag.library.store import VectorStore

MODEL = "won2020-mtat-musicnn"
FAST = ["--chunks", "4", "-q"]


@pytest.fixture(scope="module")
def musicnn(won2020_models_dir: Path) -> str:
    """Won et al.'s MagnaTagATune Musicnn imported into the session's private model cache."""
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        assert main(["models", "import", MODEL, str(won2020_models_dir / "mtat-musicnn.pth")]) == 0
    return MODEL


@pytest.fixture()
def library_dir(music_dir: Path, tmp_path: Path) -> Path:
    folder = tmp_path / "Music"
    folder.mkdir()
    for f in sorted(music_dir.iterdir()):
        if f.suffix in (".ogg", ".mp3"):
            os.symlink(f, folder / f.name)
    return folder


def _run(*args: str) -> tuple[int, str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(list(args))
    return code, out.getvalue()


def _cosines(lib: Library, seed: str) -> dict[str, float]:
    files, matrix = lib.embeddings()
    unit = matrix / np.linalg.norm(matrix, axis=1, keepdims=True)
    return dict(zip(files, (unit @ unit[files.index(seed)]).tolist(), strict=True))


def test_embeddings_added_to_a_library_then_similar(musicnn: str, library_dir: Path, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "tags.jsonl"
    assert main(["tag", str(library_dir), "-m", musicnn, "-o", str(out), *FAST]) == 0
    before = out.read_bytes()
    assert not VectorStore(out).exists()
    code, _ = _run("similar", str(library_dir / "nebula.ogg"), "--library", str(out))
    assert code == 2 and "has no embeddings; rerun" in capsys.readouterr().err
    # the rerun with --embeddings computes only the vectors: the JSONL is untouched
    assert main(["tag", str(library_dir), "-m", musicnn, "-o", str(out), "--embeddings", *FAST]) == 0
    assert "6 embedded" in capsys.readouterr().err
    assert out.read_bytes() == before
    assert VectorStore(out).read_state().n_records == 6
    seed = str(library_dir / "traveling_minstrels.ogg")
    code, text = _run("similar", seed, "--library", str(out), "--format", "json")
    assert code == 0
    results = json.loads(text)
    files = [r["file"] for r in results]
    assert seed not in files and str(library_dir / "traveling_minstrels.low.mp3") not in files  # its MP3 copy
    assert len(files) == 4
    cos = _cosines(Library(out), seed)
    assert [r["score"] for r in results] == sorted((r["score"] for r in results), reverse=True)
    for r in results:
        assert r["score"] == pytest.approx(cos[r["file"]], abs=2e-3)


def test_a_killed_run_is_repaired_and_shards_merge(musicnn: str, library_dir: Path, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    shards = [tmp_path / f"s{i}.jsonl" for i in range(2)]
    for i, shard in enumerate(shards):
        assert main(["tag", str(library_dir), "-m", musicnn, "-o", str(shard), "--shard", f"{i}/2",
                     "--embeddings", *FAST]) == 0
    merged = tmp_path / "all.jsonl"
    assert main(["merge-tags", str(merged), *map(str, shards)]) == 0
    assert VectorStore(merged).read_state().n_records == 6
    # a kill: the last JSONL line is lost after its vector was written, and a record is cut mid-write
    lines = merged.read_text(encoding="utf-8").splitlines(keepends=True)
    lost = json.loads(lines[-1])["file"]
    merged.write_text("".join(lines[:-1]), encoding="utf-8")
    with open(VectorStore(merged).records_path, "ab") as f:
        f.write(b"\x00" * 17)
    capsys.readouterr()
    assert main(["tag", str(library_dir), "-m", musicnn, "-o", str(merged), *FAST]) == 0  # embeddings implied
    err = capsys.readouterr().err
    assert "partial last record" in err and "1 tagged" in err
    state, store = read_output(merged, repair=False), VectorStore(merged).read_state()
    assert set(state.lines) == store.recorded() and store.n_records == 6 and path_key(lost) in store.recorded()


def test_seeds_from_outside_the_library_and_bad_input(musicnn: str, library_dir: Path, music_dir: Path,
                                                       tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "tags.jsonl"
    assert main(["tag", str(library_dir), "-m", musicnn, "-o", str(out), "--embeddings", *FAST]) == 0
    outside = tmp_path / "elsewhere" / "copy of nebula.ogg"
    outside.parent.mkdir()
    os.symlink(music_dir / "nebula.ogg", outside)
    code, text = _run("similar", str(outside), "--library", str(out), "--format", "json", "-n", "10")
    files = [r["file"] for r in json.loads(text)]
    assert code == 0 and str(library_dir / "nebula.ogg") not in files  # tagged on the fly: nebula is its copy
    minstrels = {str(library_dir / "traveling_minstrels.ogg"), str(library_dir / "traveling_minstrels.low.mp3")}
    assert len(files) == 4 and len(minstrels & set(files)) == 1  # one recording under two paths: listed once
    capsys.readouterr()
    broken = tmp_path / "broken.mp3"
    broken.write_bytes(b"not audio at all" * 64)
    code, _ = _run("similar", str(broken), "--library", str(out), "-q")
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "broken.mp3" in err[0] and err[0].startswith("focaltag: error:")
    code, _ = _run("similar", str(library_dir / "nebula.ogg"), "--library", str(out), "-m", "won2020-mtat-fcn",
                   "-q")
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err == [f"focaltag: error: {out}'s embeddings come from {MODEL}, not won2020-mtat-fcn; "
                                 f"name -m {MODEL} (or leave -m out)"]
    code, _ = _run("similar", str(library_dir / "nebula.ogg"), "--library", str(out), "--where", "techno,opera",
                   "-q")
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "no track of this library has all of techno, opera" in err[0]


def test_playlists_read_back_with_a_real_parser(musicnn: str, library_dir: Path, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    import m3u8

    out = tmp_path / "tags.jsonl"
    assert main(["tag", str(library_dir), "-m", musicnn, "-o", str(out), "--embeddings", *FAST]) == 0
    lists = tmp_path / "lists"
    radio = lists / "radio.m3u8"
    assert main(["playlist", "--library", str(out), "-o", str(radio), "--like",
                 str(library_dir / "battle-epic.ogg"), "-n", "5"]) == 0
    segments = m3u8.loads(radio.read_text(encoding="utf-8")).segments
    uris = [s.uri for s in segments]
    assert uris[0] == "../Music/battle-epic.ogg" and len(uris) == 5 == len(set(uris))
    assert not {"../Music/traveling_minstrels.ogg", "../Music/traveling_minstrels.low.mp3"} <= set(uris)
    assert segments[0].title == "Doug Kaufman - Battle Epic" and segments[0].duration == 74
    assert all((lists / u).resolve().is_file() for u in uris)
    glide = lists / "glide.m3u8"
    assert main(["playlist", "--library", str(out), "-o", str(glide), "--from", str(library_dir / "nebula.ogg"),
                 "--to", str(library_dir / "music013.ogg"), "-n", "4", "--absolute"]) == 0
    uris = [s.uri for s in m3u8.loads(glide.read_text(encoding="utf-8")).segments]
    assert uris[0] == str((library_dir / "nebula.ogg").absolute()) and uris[-1].endswith("music013.ogg")
    assert len(uris) == 4 == len(set(uris))
    lib = Library(out)
    top = lib.index.tag_names[int(np.argmax(np.asarray(lib.index.probabilities, dtype=np.float32).sum(axis=0)))]
    mood = lists / "mood.m3u8"
    assert main(["playlist", "--library", str(out), "-o", str(mood), "--tag", top]) == 0
    assert m3u8.loads(mood.read_text(encoding="utf-8")).segments
    code, text = _run("similar", str(library_dir / "nebula.ogg"), "--library", str(out), "--format", "m3u",
                      "--absolute", "-n", "2")
    segments = m3u8.loads(text).segments
    assert code == 0 and len(segments) == 2 and all(Path(s.uri).is_absolute() and Path(s.uri).is_file()
                                                     for s in segments)
    code, text = _run("similar", str(library_dir / "nebula.ogg"), "--library", str(out), "-n", "2")
    rows = [line.split("  ", 1) for line in text.splitlines()]
    assert code == 0 and [r[1] for r in rows] == [s.uri for s in segments]
    assert float(rows[0][0]) >= float(rows[1][0])
    capsys.readouterr()
    assert main(["playlist", "--library", str(out), "-o", str(out / "x.m3u8"), "--tag", top]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot write the playlist" in err[0]


def test_serve_answers_similar_for_an_upload_and_a_library_path(musicnn: str, library_dir: Path, music_dir: Path,
                                                                tmp_path: Path) -> None:
    from _serve_server import need, running_server, small_model

    httpx = need("httpx", "the serve tests need httpx (pip install 'focaltag[dev]')")
    out = tmp_path / "tags.jsonl"
    assert main(["tag", str(library_dir), "-m", musicnn, "-o", str(out), "--embeddings", *FAST]) == 0
    seed = str(library_dir / "machine_wars.mp3")
    _, expected = _run("similar", seed, "--library", str(out), "--format", "json", "-n", "3")
    token = "s3cret"
    with running_server([small_model(tmp_path / "tiny.pt")], tmp_path / "srv", "--library", str(out), "--token",
                        token, env={"FOCALTAG_CACHE_DIR": os.environ["FOCALTAG_CACHE_DIR"]}) as server:
        auth = {"Authorization": f"Bearer {token}"}
        url = server.url + "/api/v1/similar"
        assert httpx.post(url, json={"path": seed}, timeout=60).status_code == 401
        by_path = httpx.post(url, json={"path": seed, "n": 3}, headers=auth, timeout=60)
        assert by_path.status_code == 200, by_path.text
        assert by_path.json() == {"seed": seed, "results": json.loads(expected)}
        with open(music_dir / "machine_wars.mp3", "rb") as f:
            upload = httpx.post(url, files={"file": ("my song.mp3", f, "audio/mpeg")}, data={"n": "3"},
                                headers=auth, timeout=120)
        assert upload.status_code == 200, upload.text
        body = upload.json()
        assert body["seed"] == "my song.mp3" and seed not in [r["file"] for r in body["results"]]  # a duplicate
        assert all(r["file"].startswith(str(library_dir)) for r in body["results"])
        outside = httpx.post(url, json={"path": "/etc/passwd"}, headers=auth, timeout=60)
        assert outside.status_code == 404 and "/etc/passwd" in outside.json()["error"]
        assert "root:" not in outside.text
        broken = httpx.post(url, files={"file": ("bad.mp3", b"not audio" * 50, "audio/mpeg")}, headers=auth,
                            timeout=60)
        assert broken.status_code == 400 and "bad.mp3" in broken.json()["error"]
        assert str(server.tmpdir) not in broken.text
