"""focaltag.data.dataset: one entry to both layouts (MTG-Jamendo tag sets and own tracks.csv), and the training
data layer on top of it (data.tagset, data.tag_category, data.dataset_dir)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from focaltag.data.dataset import open_dataset
from focaltag.errors import ConfigError, DataError
from focaltag.training.config import DataConfig
from focaltag.training.data import audio_dir_of, load_run_tracks, part_files

HEADER = "TRACK_ID\tARTIST_ID\tALBUM_ID\tPATH\tDURATION\tTAGS\n"


def _mtg(root: Path, tagset: str, rows: dict[str, list[str]]) -> Path:
    folder = root / "splits" / "split-0"
    folder.mkdir(parents=True, exist_ok=True)
    for part, tags in rows.items():
        body = "".join(f"t{part}{i}\ta{part}{i}\tal\t00/{part}{i}.mp3\t30.0\t{t}\n" for i, t in enumerate(tags))
        (folder / f"autotagging_{tagset}-{part}.tsv").write_text(HEADER + body)
    return root


def test_mtg_tagsets_side_by_side_and_tag_category(tmp_path: Path) -> None:
    _mtg(tmp_path, "top50tags", {"train": ["genre---rock\tmood/theme---happy", "instrument---piano"],
                                 "validation": ["genre---rock"], "test": ["instrument---piano"]})
    _mtg(tmp_path, "genre", {"train": ["genre---rock", "genre---pop"], "validation": ["genre---pop"],
                             "test": ["genre---rock"]})
    top = open_dataset(tmp_path, tagset="top50tags")
    assert top.vocabulary().tags == ("genre---rock", "instrument---piano", "mood/theme---happy")
    assert open_dataset(tmp_path, tagset="top50tags", tag_category="genre").vocabulary().tags == ("genre---rock",)
    assert open_dataset(tmp_path, tagset="genre", tag_category="genre").vocabulary().tags == (
        "genre---pop", "genre---rock")  # both set consistently: fine
    with pytest.raises(ConfigError, match="does not fit tag set 'genre'"):
        open_dataset(tmp_path, tagset="genre", tag_category="mood/theme").vocabulary()
    with pytest.raises(DataError, match="--tagset instrument --metadata-only"):
        open_dataset(tmp_path, tagset="instrument")
    cfg = DataConfig(dataset_dir=tmp_path, tagset="genre", cache_dir=tmp_path / "c")
    data = load_run_tracks(cfg)
    assert data.vocab.tags == ("genre---pop", "genre---rock") and data.class_counts.tolist() == [1, 1]
    assert part_files(cfg)["test"] == tmp_path / "splits/split-0/autotagging_genre-test.tsv"
    assert audio_dir_of(cfg) == tmp_path / "audio"


def test_own_dataset_ignores_tagset_with_one_info_line(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / "tracks.csv").write_text("path,tags,split,track_id\na.wav,x;y,train,A\nb.wav,y,validation,B\n"
                                         "c.wav,z,test,C\n")
    caplog.set_level(logging.INFO, logger="focaltag.data.dataset")
    cfg = DataConfig(dataset_dir=tmp_path, tagset="genre", tag_category="genre", split=3)
    data = load_run_tracks(cfg)
    load_run_tracks(cfg)
    assert len([r for r in caplog.records if "are ignored" in r.getMessage()]) == 1
    assert data.vocab.tags == ("x", "y", "z")  # every tag of the file, even one only in test
    assert [r.track_id for r in data.train] == ["A"] and [r.track_id for r in data.validation] == ["B"]
    assert audio_dir_of(cfg) == tmp_path
    test_file = part_files(cfg)["test"]
    assert test_file.read_text() == "TRACK_ID\tPATH\tTAGS\nC\tc.wav\tz\n"
    mtime = test_file.stat().st_mtime_ns
    assert part_files(cfg)["test"].stat().st_mtime_ns == mtime  # rewritten only when it changes


def test_missing_folder_says_how_to_get_it(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="focaltag data download --tagset top50tags --out"):
        open_dataset(tmp_path / "nope", tagset="top50tags")
    with pytest.raises(ConfigError, match="data.tagset"):
        from focaltag.config import from_dict

        from_dict(DataConfig, {"tagset": "moods"}, where="data")
