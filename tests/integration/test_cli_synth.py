"""`focaltag data synth`: official layout, determinism, real tag names and imbalance, learnable tags."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from focaltag.cli import main
from focaltag.data.metadata import OFFICIAL_COLUMNS, SUBSETS, TagVocabulary, read_tracks
from focaltag.data.tags import MOODTHEME_TAGS


def _synth(out: Path, *extra: str) -> int:
    return main(["data", "synth", "--out", str(out), "--tracks", "200", "--seed", "1",
                 "--min-duration", "1", "--max-duration", "2", "-q", *extra])


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    a, b = tmp_path_factory.mktemp("a"), tmp_path_factory.mktemp("b")
    assert _synth(a) == 0
    assert _synth(b, "--workers", "1") == 0
    return a, b


def test_same_seed_gives_byte_identical_tsvs(two_runs: tuple[Path, Path]) -> None:
    a, b = two_runs
    for s in SUBSETS:
        name = f"splits/split-0/autotagging_moodtheme-{s}.tsv"
        assert (a / name).read_bytes() == (b / name).read_bytes()
    assert (a / "splits/split-0/autotagging_moodtheme-train.tsv").read_bytes() != b""


def test_layout_columns_and_tags_follow_mtg_jamendo(two_runs: tuple[Path, Path]) -> None:
    root = two_runs[0]
    tracks = {}
    for s in SUBSETS:
        path = root / f"splits/split-0/autotagging_moodtheme-{s}.tsv"
        raw = path.read_bytes()
        assert raw.startswith("\t".join(OFFICIAL_COLUMNS).encode() + b"\r\n")  # official header, CRLF
        tracks[s] = read_tracks(path, fmt="official")
    train_tags = Counter(t for r in tracks["train"] for t in r.tags)
    assert sorted(train_tags) == list(MOODTHEME_TAGS)  # all 56 real tags occur in train
    for recs in tracks.values():
        for r in recs:
            assert 1 <= len(r.tags) <= 4
            assert r.path == f"{int(r.track_id.split('_')[1]) % 100:02d}/{int(r.track_id.split('_')[1])}.mp3"
    artists = {s: {r.artist_id for r in recs} for s, recs in tracks.items()}
    assert not artists["train"] & artists["validation"]
    assert not artists["train"] & artists["test"]
    assert not artists["validation"] & artists["test"]
    counts = np.array(sorted(train_tags.values()))
    assert counts[-1] / counts[0] >= 4  # long tail even at 200 tracks (~15 at the real scale)
    assert "SYNTHETIC" in (root / "SYNTHETIC_DATASET.txt").read_text()


def test_every_mp3_decodes_as_44k_stereo(two_runs: tuple[Path, Path]) -> None:
    root = two_runs[0]
    files = sorted((root / "audio").rglob("*.mp3"))
    assert len(files) == 200
    for f in files:
        info = sf.info(f)
        assert (info.samplerate, info.channels, info.format) == (44100, 2, "MP3")
        assert 0.9 <= info.duration <= 2.2


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["data", "synth", "--tracks", "0", "--out", "{tmp}/x"], "--tracks must be at least 30"),
        (["data", "synth", "--out", "/proc/focaltag-cannot-write"], "cannot write to --out"),
        (["no-such-command"], "invalid choice: 'no-such-command'"),
    ],
)
def test_bad_input_is_one_clear_line(tmp_path: Path, argv: list[str], needle: str) -> None:
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    proc = subprocess.run([sys.executable, "-m", "focaltag", *argv], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    lines = [ln for ln in proc.stderr.splitlines() if "error" in ln]
    assert len(lines) == 1 and needle in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr


def test_tags_are_learnable_by_a_linear_model(tmp_path: Path) -> None:
    """Logistic regression on mean/std log-mel beats chance clearly on the synthetic validation split."""
    torch = pytest.importorskip("torch")
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score

    from focaltag.audio.decode import load_audio
    from focaltag.audio.features import LogMelSpectrogram
    from focaltag.data.synth import synthesize_dataset

    synthesize_dataset(tmp_path, n_tracks=200, seed=3, min_duration=3, max_duration=5)
    mel, vocab = LogMelSpectrogram(), TagVocabulary(MOODTHEME_TAGS)

    def features(subset: str) -> tuple[np.ndarray, np.ndarray]:
        recs = read_tracks(tmp_path / f"splits/split-0/autotagging_moodtheme-{subset}.tsv")
        rows = []
        for r in recs:
            m = mel(torch.from_numpy(load_audio(tmp_path / "audio" / r.path))[None])[0]
            rows.append(torch.cat([m.mean(1), m.std(1)]).numpy())
        return np.array(rows), vocab.encode(recs)

    x_tr, y_tr = features("train")
    x_va, y_va = features("validation")
    mu, sd = x_tr.mean(0), x_tr.std(0) + 1e-6
    prob = np.zeros(y_va.shape)
    for j in range(y_tr.shape[1]):
        clf = LogisticRegression(C=0.1, max_iter=500).fit((x_tr - mu) / sd, y_tr[:, j])
        prob[:, j] = clf.predict_proba((x_va - mu) / sd)[:, 1]
    scored = y_va.sum(0) > 0
    assert scored.sum() >= 40
    assert roc_auc_score(y_va[:, scored], prob[:, scored], average="macro") > 0.75
