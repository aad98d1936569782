"""One model policy: a catalogue model with calibrated thresholds gives the same yes/no decisions through all
four doors: ``focaltag tag``, the Python API (``focaltag.Tagger``), ``focaltag serve`` and the beets plugin.

The catalogue entry is the real ``usc-sail-2020-bce`` (it ships thresholds); its weights cannot be fetched here,
so a small model of the entry's architecture is converted into the cache the way ``focaltag models import``
does, and every door then finds the name in the cache, offline. Its final bias is set so that the tags'
probabilities land on both sides of the thresholds, and the test checks they do.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from focaltag.data.tags import short_tag
from focaltag.models import catalogue as cat
from focaltag.models import hub

NAME = "usc-sail-2020-bce"
SONG = "battle-epic.ogg"


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A focaltag cache holding ``usc-sail-2020-bce`` (a small model of its architecture) as a finished pull."""
    from focaltag.models import create_model, save_model

    root = tmp_path_factory.mktemp("cache")
    entry = cat.get_entry(NAME)
    assert entry.thresholds is not None  # the point of the test: a catalogue model with its own thresholds
    torch.manual_seed(3)
    model = create_model("short_chunk_resnet", variant="paper", width=8, n_tags=len(entry.tag_names),
                         tag_names=list(entry.tag_names))
    thr = torch.tensor([entry.thresholds[t] for t in entry.tag_names])
    with torch.no_grad():  # probabilities around each tag's threshold, half above and half below
        shift = torch.where(torch.arange(len(thr)) % 2 == 0, 1.5, -1.5)
        model.fc.bias.copy_(torch.logit(thr.clamp(0.02, 0.98)) + shift)
    raw = save_model(model, root / "raw" / "best_model.pt")
    old = os.environ.get("FOCALTAG_CACHE_DIR")
    os.environ["FOCALTAG_CACHE_DIR"] = str(root)
    try:
        folder = hub.model_dir(NAME)
        folder.mkdir(parents=True)
        hub._install_checkpoint(entry, raw, folder)
        assert hub.is_pulled(NAME)
    finally:
        if old is None:
            os.environ.pop("FOCALTAG_CACHE_DIR")
        else:
            os.environ["FOCALTAG_CACHE_DIR"] = old
    return root


@pytest.fixture
def env(cache: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    monkeypatch.setenv("FOCALTAG_CACHE_DIR", str(cache))
    monkeypatch.delenv(hub.MIRROR_ENV, raising=False)
    return {**os.environ, "FOCALTAG_CACHE_DIR": str(cache)}


def _chosen(decisions: dict[str, bool]) -> list[str]:
    """Short names of the tags decided yes, in tag order (what beets stores as ``mood``)."""
    tags = cat.get_entry(NAME).tag_names
    return [short_tag(t) for t in tags if decisions[t]]


def _cli(song: Path, capsys: pytest.CaptureFixture[str]) -> dict:
    from focaltag.cli import main

    assert main(["tag", str(song), "-m", NAME, "--chunks", "2", "--format", "json", "-q"]) == 0
    (result,) = json.loads(capsys.readouterr().out)
    return result


def _api(song: Path) -> dict[str, bool]:
    import focaltag

    result = focaltag.Tagger(NAME, focaltag.InferenceOptions(n_chunks=2)).tag(song)
    assert result.decisions is not None, "Tagger(catalogue name) made no decisions"
    return result.decisions


def _serve(song: Path, workdir: Path, env: dict[str, str]) -> dict[str, bool]:
    from _serve_server import need, running_server

    need("fastapi", "the serve extra is not installed (pip install 'focaltag[serve]')")
    httpx = need("httpx", "httpx is needed to talk to the server")
    with running_server([NAME], workdir, "--chunks", "2", env=env) as server:  # type: ignore[list-item]
        response = httpx.post(server.url + "/api/v1/tag", timeout=300,
                              files=[("file", (song.name, song.read_bytes(), "application/octet-stream"))])
        assert response.status_code == 200, response.text
    (result,) = response.json()
    assert "decisions" in result, "serve -m <catalogue model> made no decisions"
    return result["decisions"]


def _beets(song: Path, root: Path, env: dict[str, str]) -> list[str]:
    pytest.importorskip("beets")
    from _beets import beets_env

    beet = Path(sys.executable).parent / "beet"
    src = root / "src"
    src.mkdir(parents=True)
    shutil.copyfile(song, src / song.name)
    run_env = {**env, "BEETSDIR": beets_env(root, {"models": [NAME], "chunks": 2})["BEETSDIR"]}
    for args in (["import", "-A", "-q", str(src)], ["focaltag"]):
        proc = subprocess.run([str(beet), *args], env=run_env, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr
    proc = subprocess.run([str(beet), "ls", "-f", "$mood"], env=run_env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    (line,) = [x for x in proc.stdout.splitlines() if x.strip()] or [""]
    return [m for m in line.split("; ") if m]


def test_the_four_entry_points_make_the_same_decisions(env: dict[str, str], music_dir: Path, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    song = music_dir / SONG
    cli = _cli(song, capsys)
    thresholds = cat.get_entry(NAME).thresholds
    assert cli["model"] == NAME and "decisions" in cli, "focaltag tag made no decisions"
    assert cli["decisions"] == {t: cli["tags"][t] > thresholds[t] for t in thresholds}
    yes = sum(cli["decisions"].values())
    assert 0 < yes < len(thresholds), "the test model should put tags on both sides of the thresholds"

    assert _api(song) == cli["decisions"]
    assert _serve(song, tmp_path / "serve", env) == cli["decisions"]
    assert _beets(song, tmp_path / "beets", env) == _chosen(cli["decisions"])  # not the top 3


def test_thresholds_none_turns_them_off_and_a_file_overrides(env: dict[str, str], music_dir: Path,
                                                             tmp_path: Path) -> None:
    import focaltag

    song = music_dir / SONG
    assert focaltag.Tagger(NAME, focaltag.InferenceOptions(n_chunks=2, thresholds=None)).tag(song).decisions is None
    tags = cat.get_entry(NAME).tag_names
    one = focaltag.Tagger(NAME, focaltag.InferenceOptions(n_chunks=2, thresholds={t: 0.0 for t in tags})).tag(song)
    assert one.decisions == dict.fromkeys(tags, True)
    path = tmp_path / "thr.tsv"
    path.write_text("".join(f"{t}\t1.0\n" for t in tags))
    assert not any(focaltag.Tagger(NAME, focaltag.InferenceOptions(n_chunks=2, thresholds=path)).tag(song).decisions.values())
    # several models averaged: their thresholds were calibrated alone, so none by default
    assert focaltag.Tagger([NAME, NAME], n_chunks=2).tag(song).decisions is None
    assert np.isfinite(focaltag.Tagger([NAME, NAME], n_chunks=2).tag(song).as_array()).all()
