"""A head of `focaltag head train` is a model like any other: `predict` + `evaluate`, `serve` and the beets
plugin take it, each with the head's own words and thresholds, and none of them writes its tags into MOOD.

The head is the one `test_head_cli.py` trains (a small random base, five recording/game tags); its fixtures are
imported from there, so the two files share one training per session only when run together.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from _beets import beets_env
from test_head_cli import TAGS, expected_labels, one_torch_thread, trained, workspace  # noqa: F401

from focaltag.cli import main

BEET = Path(sys.executable).parent / "beet"


def _card_decisions(head: Path, probabilities: dict[str, float]) -> dict[str, bool]:
    thresholds = json.loads((head / "card.json").read_text())["thresholds"]
    return {t: probabilities[t] > thresholds[t] for t in TAGS}


def _tag_json(head: Path, paths: list[str], capsys: pytest.CaptureFixture[str]) -> dict[str, dict]:
    assert main(["tag", *paths, "--model", str(head), "--format", "json", "--chunks", "4", "--precision",
                 "fp32", "-q"]) == 0
    return {r["file"]: r for r in json.loads(capsys.readouterr().out)}


def test_predict_and_evaluate_a_dataset_in_the_heads_words(trained: dict[str, Path], tmp_path: Path,  # noqa: F811
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    """A dataset folder whose tracks.csv uses the head's tags: its rows are the head's output for each track, in
    the canonical (sorted) tag order, and `evaluate` scores them."""
    paths, y = expected_labels(trained["test"])
    dataset = tmp_path / "ds"
    (dataset / "songs").mkdir(parents=True)
    rows = ["path,tags,split"]
    for i, (path, labels) in enumerate(zip(paths, y, strict=True)):
        rel = f"songs/{Path(path).name}"
        shutil.copy(path, dataset / rel)
        part = "test" if i % 2 == 0 else ("train" if i % 4 == 1 else "validation")
        rows.append(f"{rel},{';'.join(t for t, v in zip(TAGS, labels, strict=True) if v)},{part}")
    (dataset / "tracks.csv").write_text("\n".join(rows) + "\n")
    assert main(["data", "prepare", "--dataset-dir", str(dataset), "--part", "test", "--workers", "1", "-q"]) == 0
    pred = tmp_path / "test.npy"
    assert main(["predict", "--model", str(trained["out"]), "--dataset-dir", str(dataset), "--part", "test",
                 "--chunks", "4", "--precision", "fp32", "-o", str(pred), "-q"]) == 0
    capsys.readouterr()
    matrix = np.load(pred)
    test_files = [str(dataset / r.split(",")[0]) for r in rows[1:] if r.endswith(",test")]
    assert matrix.shape == (len(test_files), len(TAGS))
    assert list(TAGS) == sorted(TAGS)  # the head's order is the canonical one
    # each row is the head tagging the cached waveform (same chunk positions), in the head's tag order
    from focaltag.audio.cache import WaveformCache
    from focaltag.inference import InferenceOptions, Tagger

    ids = (tmp_path / "test.tracks.txt").read_text().split()
    tagger = Tagger(trained["out"], InferenceOptions(n_chunks=4, precision="fp32"))
    assert list(tagger.tag_names) == list(TAGS)
    for row, track in zip(matrix, ids, strict=True):
        wave = np.asarray(WaveformCache(dataset / "cache").get(track), dtype=np.float32)
        np.testing.assert_allclose(row, tagger.tag(wave, sr=16000).as_array(), atol=1e-5)
    # and it is what `tag` gives for the file, up to the cache's storage precision
    tagged = _tag_json(trained["out"], test_files, capsys)
    expected = np.array([[tagged[f]["tags"][t] for t in TAGS] for f in test_files])
    np.testing.assert_allclose(matrix, expected, atol=0.02)
    assert main(["evaluate", "--dataset-dir", str(dataset), "--part", "test", "--predictions", str(pred), "--json",
                 "-q"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert 0.0 <= result["ROC-AUC-macro"] <= 1.0 and 0.0 < result["PR-AUC-macro"] <= 1.0


def test_serve_answers_with_the_heads_words_and_thresholds(trained: dict[str, Path], tmp_path: Path,  # noqa: F811
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    httpx = pytest.importorskip("httpx", reason="the serve extra is not installed (pip install 'focaltag[serve]')")
    pytest.importorskip("fastapi", reason="the serve extra is not installed (pip install 'focaltag[serve]')")
    from _serve_server import running_server

    paths, _ = expected_labels(trained["test"])
    song = Path(paths[0])
    with running_server([trained["out"]], tmp_path / "serve", "--chunks", "4", "--precision", "fp32") as server:
        models = httpx.get(server.url + "/api/v1/models", timeout=30).json()
        response = httpx.post(server.url + "/api/v1/tag", timeout=120,
                              files=[("file", (song.name, song.read_bytes(), "audio/flac"))])
    assert response.status_code == 200, response.text
    body = response.json()
    result = body[0]
    assert sorted(result["tags"]) == list(TAGS)
    assert result["decisions"] == _card_decisions(trained["out"], result["tags"])
    local = _tag_json(trained["out"], [str(song)], capsys)[str(song)]
    np.testing.assert_allclose([result["tags"][t] for t in TAGS], [local["tags"][t] for t in TAGS], atol=1e-5)
    assert "my-tags" in json.dumps(models)


def test_beets_fills_focaltag_tags_never_mood(trained: dict[str, Path], tmp_path: Path) -> None:  # noqa: F811
    pytest.importorskip("beets", reason="the beets extra is not installed (pip install 'focaltag[beets]')")
    mutagen = pytest.importorskip("mutagen")
    paths, _ = expected_labels(trained["test"])
    src = tmp_path / "src"
    src.mkdir()
    files = [Path(shutil.copy(p, src)) for p in paths[:4]]
    env = beets_env(tmp_path, {"models": [trained["out"]], "chunks": 4})

    def beet(*args: str) -> str:
        proc = subprocess.run([str(BEET), *args], env=env, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, f"beet {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}"
        return proc.stdout + proc.stderr

    beet("import", "-A", "-q", str(src))
    assert "tagged 4 item(s)" in beet("-v", "focaltag")
    listed = [line.split("|") for line in beet("ls", "-f", "$path|$mood|$focaltag_tags").splitlines() if "|" in line]
    assert sorted(row[0] for row in listed) == sorted(map(str, files))
    # the plugin's choice is the head's own decisions (its thresholds), as the library API makes them
    from focaltag.inference import InferenceOptions, Tagger

    tagger = Tagger(trained["out"], InferenceOptions(n_chunks=4))
    chosen = {}
    for path, mood, ours in listed:
        decisions = tagger.tag(path).decisions
        assert decisions is not None
        assert mood == ""  # a user's own words never go into mood
        chosen[path] = [t for t in TAGS if decisions[t]]
        assert [t for t in ours.split("; ") if t] == chosen[path]
    beet("write")
    for f in files:
        tags = mutagen.File(f).tags
        keys = {k.upper() for k in tags.keys()}  # noqa: SIM118 (Vorbis comments iterate as pairs)
        assert "MOOD" not in keys
        assert (tags["FOCALTAG_TAGS"] if chosen[str(f)] else []) == chosen[str(f)]
