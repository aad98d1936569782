"""An own dataset (DIR/tracks.csv + generated audio) through every command that takes a dataset: stats, audit,
prepare, train with a shipped config (only data.dataset_dir changed), predict, evaluate; bad rows name the line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from focaltag.cli import main

TAGS = {"bright": 2200.0, "low": 180.0, "pulse": 700.0}
SR = 16000


def _tone(tags: tuple[str, ...], seed: int, seconds: float = 5.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    y = 0.05 * rng.standard_normal(t.size)
    for tag in tags:
        y += 0.3 * np.sin(2 * np.pi * TAGS[tag] * t) * (0.6 + 0.4 * np.sin(2 * np.pi * 3 * t))
    return (y / max(1.0, np.abs(y).max() / 0.9)).astype(np.float32)


def make_own_dataset(root: Path, n_per_part: dict[str, int] | None = None) -> list[dict[str, str]]:
    """Write ``root/tracks.csv`` and the audio under ``root/songs`` (every tag in every part)."""
    n_per_part = n_per_part or {"train": 12, "validation": 6, "test": 6}
    names = sorted(TAGS)
    rows = []
    i = 0
    for part, n in n_per_part.items():
        for k in range(n):
            tags = (names[k % 3],) + ((names[(k + 1) % 3],) if k % 4 == 3 else ())
            rel = f"songs/{part}/{i:03d}.wav"
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            sf.write(root / rel, _tone(tags, i), SR)
            rows.append({"path": rel, "tags": ";".join(tags), "split": part, "artist_id": f"{part}-{k // 2}"})
            i += 1
    text = "path,tags,split,artist_id\n" + "".join(f"{r['path']},{r['tags']},{r['split']},{r['artist_id']}\n"
                                                   for r in rows)
    (root / "tracks.csv").write_text(text)
    return rows


@pytest.fixture(scope="module")
def own(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("own")
    make_own_dataset(root)
    return root


def _json(capsys: pytest.CaptureFixture[str], argv: list[str], rc: int = 0) -> dict:
    assert main(argv) == rc
    return json.loads(capsys.readouterr().out)


def test_stats_vocabulary_is_every_tag_of_the_file(own: Path, capsys: pytest.CaptureFixture[str]) -> None:
    s = _json(capsys, ["data", "stats", "--dataset-dir", str(own), "--part", "validation", "--json", "-q"])
    assert s["n_tracks"] == 6 and s["n_tags"] == 3 and sorted(s["tag_counts"]) == sorted(TAGS)
    assert s["dataset"]["kind"] == "own"
    assert main(["data", "stats", "--dataset-dir", str(own), "--split", "1", "-q"]) == 2
    assert "--split does not apply" in capsys.readouterr().err


def test_audit_finds_missing_duplicate_and_shared_artist(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rows = make_own_dataset(tmp_path, {"train": 4, "validation": 2, "test": 2})
    clean = _json(capsys, ["data", "audit", "--dataset-dir", str(tmp_path), "--json", "-q", "--fail-on-issues"])
    assert clean["n_missing_files"] == 0 and clean["duplicate_groups"] == 0
    assert clean["artists_in_several_subsets"] == {} and clean["n_artists"] == 4
    # a copy of a train file listed in test, a missing file, an artist in train and validation
    copy = "songs/copy.wav"
    (tmp_path / copy).write_bytes((tmp_path / rows[0]["path"]).read_bytes())
    extra = (f"{copy},low,test,other\nsongs/gone.wav,low,validation,other2\n"
             f"songs/validation/004.wav,bright,validation,train-0\n")
    lines = (tmp_path / "tracks.csv").read_text().splitlines()
    lines = [ln for ln in lines if not ln.startswith("songs/validation/004.wav")]
    (tmp_path / "tracks.csv").write_text("\n".join(lines) + "\n" + extra)
    r = _json(capsys, ["data", "audit", "--dataset-dir", str(tmp_path), "--json", "-q", "--fail-on-issues"], rc=1)
    assert [m["path"] for m in r["missing_files"]] == ["songs/gone.wav"]
    assert r["cross_split_groups"] == 1
    assert {m["path"] for m in r["cross_split"][0]["tracks"]} == {copy, rows[0]["path"]}
    assert r["artists_in_several_subsets"] == {"train-0": ["train", "validation"]}
    assert main(["data", "audit", "--dataset-dir", str(tmp_path), "-q"]) == 0
    assert "artists in several subsets: 1" in capsys.readouterr().out


@pytest.mark.parametrize("row, message", [
    ("songs/x.wav,low,training", "line 3: split 'training' must be one of train, validation, test"),
    (",low,train", "line 3: empty path"),
    ("songs/x.wav,,train", "line 3: track songs/x.wav has no tags"),
    ("songs/x.wav,low,train,a,b", "line 3: 5 fields but the header has 3"),
])
def test_a_bad_row_names_the_file_and_line(tmp_path: Path, capsys: pytest.CaptureFixture[str], row: str,
                                           message: str) -> None:
    (tmp_path / "tracks.csv").write_text(f"path,tags,split\nsongs/a.wav,low,train\n{row}\n")
    assert main(["data", "stats", "--dataset-dir", str(tmp_path), "-q"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(tmp_path / "tracks.csv") in err and message in err


def test_missing_split_column_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "tracks.csv").write_text("path,tags\nsongs/a.wav,low\n")
    assert main(["data", "stats", "--dataset-dir", str(tmp_path), "-q"]) == 2
    assert "needs a 'split' column" in capsys.readouterr().err


@pytest.mark.slow
def test_train_predict_evaluate_with_a_shipped_config(own: Path, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    tiny = ["--set", "model.width=4", "--set", "optim.epochs=2", "--set", "optim.adam_epochs=1",
            "--set", "optim.batch_size=4", "--set", "validation.n_chunks=2", "--set", "runtime.device=cpu",
            "--set", "runtime.num_workers=0", "--set", "runtime.channels_last=false", "--set",
            "data.prepare_workers=1"]
    assert main(["train", "--config", "paper", "--set", f"data.dataset_dir={own}", *tiny, "--out", str(run)]) == 0
    captured = capsys.readouterr()
    summary = json.loads(captured.out)
    assert summary["epochs_completed"] == 2 and (run / "best.pt").is_file()
    # data.tagset of the shipped config: one info line, then ignored
    assert captured.err.count("apply to the MTG-Jamendo layout only and are ignored") == 1
    assert (own / "cache").is_dir()  # data.cache_dir: null -> <dataset_dir>/cache, built from the audio
    prep = _json(capsys, ["data", "prepare", "--dataset-dir", str(own), "--part", "test", "--workers", "1", "--json",
                          "-q"])  # the test part: training cached train and validation only
    assert prep["tracks"] == 6 and prep["failed"] == 0 and prep["cache_dir"] == str(own / "cache")
    pred = tmp_path / "test.npy"
    assert main(["predict", "--model", str(run / "best.pt"), "--dataset-dir", str(own), "--part", "test",
                 "--chunks", "2", "-o", str(pred), "-q"]) == 0
    capsys.readouterr()
    matrix = np.load(pred)
    assert matrix.shape == (6, 3) and np.isfinite(matrix).all()
    ids = (tmp_path / "test.tracks.txt").read_text().split()
    assert ids == [f"songs/test/{i:03d}.wav" for i in range(18, 24)]
    result = _json(capsys, ["evaluate", "--dataset-dir", str(own), "--part", "test", "--predictions", str(pred),
                            "--json", "-q"])
    text = json.dumps(result)
    assert "PR-AUC-macro" in text and "ROC-AUC-macro" in text


def test_cross_validation_splits_are_refused_for_an_own_dataset(own: Path, tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    """tracks.csv has one split: ``--splits 0,1`` would train the same data twice, so it is one error line."""
    assert main(["experiment", "run", "genre", "--out", str(tmp_path / "cv"), "--splits", "0,1",
                 "--set", f"data.dataset_dir={own}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "tracks.csv" in err[0] and "--splits" in err[0], err
    assert not (tmp_path / "cv" / "runs").exists()
