"""The beets plugin against a real beets library in a temporary folder, driven through the `beet` command."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

pytest.importorskip("beets")
mutagen = pytest.importorskip("mutagen")

from _beets import beets_env  # noqa: E402

from focaltag.data.tags import MOODTHEME_TAGS, short_tag  # noqa: E402

BEET = Path(sys.executable).parent / "beet"
# thresholds a random model's ~0.5 probabilities clearly pass (odd tags) or clearly fail (even tags)
THRESHOLDS = {t: (0.3 if i % 2 else 0.99) for i, t in enumerate(MOODTHEME_TAGS)}


@pytest.fixture(scope="module")
def model_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    from focaltag.models import create_model, save_model

    folder = tmp_path_factory.mktemp("model")
    torch.manual_seed(0)
    model = save_model(create_model("short_chunk_resnet", n_tags=56, width=8), folder / "tiny.pt")
    thresholds = folder / "thresholds.tsv"
    thresholds.write_text("".join(f"{t}\t{v}\n" for t, v in THRESHOLDS.items()))
    return model, thresholds


def _library(root: Path, music_dir: Path, model_files: tuple[Path, Path], *, auto: bool,
             id3v23: bool = False) -> dict[str, str]:
    """A beets config + copies of the shared recordings under ``root``; returns the env for `beet`."""
    src = root / "src"
    src.mkdir(parents=True)
    for f in sorted(music_dir.iterdir()):
        if f.suffix in (".ogg", ".mp3"):
            shutil.copyfile(f, src / f.name)
            os.chmod(src / f.name, 0o644)
    model, thresholds = model_files
    return beets_env(root, {"models": [model], "thresholds": thresholds, "chunks": 2, "auto": auto}, id3v23=id3v23)


def _beet(env: dict[str, str], *args: str) -> str:
    proc = subprocess.run([str(BEET), *args], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"beet {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout + proc.stderr


def _items(env: dict[str, str], *query: str) -> dict[str, tuple[list[str], dict[str, float]]]:
    """path -> (mood list, {tag: stored probability}) as `beet ls -f` prints them."""
    fmt = "$path|$mood|" + "|".join(f"$focaltag_{short_tag(t)}" for t in MOODTHEME_TAGS)
    out = {}
    for line in _beet(env, "ls", "-f", fmt, *query).splitlines():
        if "|" not in line:
            continue
        path, mood, *probs = line.split("|")
        out[path] = ([m for m in mood.split("; ") if m],
                     {t: float(p) for t, p in zip(MOODTHEME_TAGS, probs, strict=True)})
    return out


def _expected(probs: dict[str, float]) -> list[str]:
    return [short_tag(t) for t in MOODTHEME_TAGS if probs[t] > THRESHOLDS[t]]


def test_beet_focaltag_sets_probabilities_and_mood_then_beet_write_puts_it_in_the_files(
        tmp_path: Path, music_dir: Path, model_files: tuple[Path, Path]) -> None:
    env = _library(tmp_path, music_dir, model_files, auto=False)
    files = sorted((tmp_path / "src").iterdir())
    audio_before = {f: sf.read(f, dtype="float32")[0] for f in files}
    _beet(env, "import", "-A", "-q", str(tmp_path / "src"))
    assert "tagged 6 item(s)" in _beet(env, "-v", "focaltag")
    items = _items(env)
    assert sorted(items) == sorted(str(f) for f in files)
    for mood, probs in items.values():
        assert all(0.0 < p < 1.0 for p in probs.values())
        assert mood == _expected(probs) and mood

    chosen, not_chosen = short_tag(MOODTHEME_TAGS[1]), short_tag(MOODTHEME_TAGS[0])
    assert sorted(_items(env, f"mood:{chosen}")) == sorted(items)
    assert _items(env, f"mood:{not_chosen}") == {}
    assert "tagged 0 item(s)" in _beet(env, "-v", "focaltag")  # already tagged: skipped without -f

    _beet(env, "write")
    for f in files:
        tags = mutagen.File(f).tags
        written = list(tags["TMOO"].text) if f.suffix == ".mp3" else tags["MOOD"]
        assert written == items[str(f)][0]
        assert np.array_equal(sf.read(f, dtype="float32")[0], audio_before[f]), f"{f.name}: audio changed"


def test_auto_tagging_on_import_and_id3v23_writes_txxx_mood(tmp_path: Path, music_dir: Path,
                                                            model_files: tuple[Path, Path]) -> None:
    env = _library(tmp_path, music_dir, model_files, auto=True, id3v23=True)
    _beet(env, "import", "-A", "-q", str(tmp_path / "src"))
    items = _items(env)  # no `beet focaltag`: the import did it
    assert len(items) == 6
    for mood, probs in items.values():
        assert mood == _expected(probs) and mood
    _beet(env, "write")
    from focaltag.outputs.filetags import read_file_tags

    for path, (mood, _) in items.items():
        if path.endswith(".mp3"):
            tags = mutagen.File(path).tags
            assert tags.version[:2] == (2, 3) and "TMOO" not in tags
        assert read_file_tags(path) == mood  # the same place `focaltag tag --write-tags` reads and writes
