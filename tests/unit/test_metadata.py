"""Metadata parsing (official TSV, authors' list, CSV), vocabularies, merging and bad-input errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from focaltag.data.metadata import (
    TagVocabulary,
    TrackRecord,
    merge_track_lists,
    read_tag_list,
    read_tracks,
    split_files,
    tag_counts,
)
from focaltag.errors import DataError

HEADER = "TRACK_ID\tARTIST_ID\tALBUM_ID\tPATH\tDURATION\tTAGS"
ROWS = [
    "track_0000001\tartist_1\talbum_1\t01/1.mp3\t212.7\tmood/theme---happy\tmood/theme---fun",
    "track_0000002\tartist_1\talbum_2\t02/2.mp3\t30.0\tmood/theme---sad",
    "track_0000003\tartist_2\talbum_3\t03/3.mp3\t95.5\tgenre---rock\tmood/theme---happy\tinstrument---piano",
]


def _write(path: Path, lines: list[str], newline: str = "\n") -> Path:
    path.write_bytes(newline.join(lines).encode() + newline.encode())
    return path


@pytest.mark.parametrize("newline", ["\n", "\r\n"])
def test_official_tsv_lf_and_crlf(tmp_path: Path, newline: str) -> None:
    recs = read_tracks(_write(tmp_path / "m.tsv", [HEADER, *ROWS], newline))
    assert [r.track_id for r in recs] == ["track_0000001", "track_0000002", "track_0000003"]
    assert recs[0] == TrackRecord("track_0000001", "01/1.mp3", ("mood/theme---happy", "mood/theme---fun"),
                                  "artist_1", "album_1", 212.7)
    # no '\r' survives in the last tag of a CRLF file
    assert recs[1].tags == ("mood/theme---sad",)


def test_authors_list_format_with_stray_empty_tags(tmp_path: Path) -> None:
    lines = ["TRACK_ID\tPATH\tTAGS\t\t", "abc\tA/A/abc\tmood/theme---happy\tmood/theme---fun\t",
             "def\tA/A/def\tmood/theme---happy\t\t", "", "ghi\tA/A/ghi\tmood/theme---sad"]
    recs = read_tracks(_write(tmp_path / "l.tsv", lines))
    assert [(r.track_id, r.path, r.tags) for r in recs] == [
        ("abc", "A/A/abc", ("mood/theme---happy", "mood/theme---fun")),
        ("def", "A/A/def", ("mood/theme---happy",)),
        ("ghi", "A/A/ghi", ("mood/theme---sad",)),
    ]
    assert all(r.duration is None and r.artist_id is None for r in recs)


def test_csv_format(tmp_path: Path) -> None:
    text = 'path,tags,duration\nsongs/a.mp3,"mood/theme---happy; mood/theme---fun",12.5\n\nsongs/b.wav,happy,\n'
    (tmp_path / "c.csv").write_text(text)
    recs = read_tracks(tmp_path / "c.csv")
    assert recs[0] == TrackRecord("songs/a.mp3", "songs/a.mp3", ("mood/theme---happy", "mood/theme---fun"),
                                  duration=12.5)
    assert recs[1].tags == ("happy",) and recs[1].duration is None


@pytest.mark.parametrize(
    ("lines", "fragments"),
    [
        (["TRACK_ID\tPATH\tDURATION", "t1\ta.mp3\t3"], ["line 1", "ARTIST_ID"]),
        ([HEADER, ROWS[0], "track_9\tartist\talbum\t09/9.mp3"], ["line 3", "at least 5"]),
        ([HEADER, ROWS[0], "track_9\tartist\talbum\t09/9.mp3\t12.0\t"], ["line 3", "no tags"]),
        ([HEADER, ROWS[0], "track_9\tartist\talbum\t09/9.mp3\tlong\tmood/theme---sad"], ["line 3", "DURATION"]),
        ([HEADER, ROWS[0], "track_9\tartist\talbum\t09/9.mp3\t-4\tmood/theme---sad"], ["line 3", "DURATION"]),
        ([HEADER, ROWS[0], "track_9\tartist\talbum\t\t12.0\tmood/theme---sad"], ["line 3", "empty PATH"]),
        ([HEADER, ROWS[0], ROWS[0]], ["line 3", "line 2", "track_0000001"]),
        (["hello world", "x"], ["line 1", "unknown header"]),
    ],
)
def test_bad_tsv_one_line_error_naming_file_and_line(tmp_path: Path, lines: list[str],
                                                     fragments: list[str]) -> None:
    path = _write(tmp_path / "bad.tsv", lines, "\r\n")
    with pytest.raises(DataError) as info:
        read_tracks(path)
    msg = str(info.value)
    assert "\n" not in msg and str(path) in msg
    for frag in fragments:
        assert frag in msg


def test_bad_csv_errors(tmp_path: Path) -> None:
    (tmp_path / "a.csv").write_text("file,labels\nx.mp3,happy\n")
    with pytest.raises(DataError, match=r"a\.csv line 1: .*'path', 'tags'"):
        read_tracks(tmp_path / "a.csv")
    (tmp_path / "b.csv").write_text("path,tags\nx.mp3,happy\n,sad\n")
    with pytest.raises(DataError, match=r"b\.csv line 3: empty path"):
        read_tracks(tmp_path / "b.csv")
    (tmp_path / "c.csv").write_text("path,tags\nx.mp3,happy\ny.mp3, ; \n")
    with pytest.raises(DataError, match=r"c\.csv line 3: .*no tags"):
        read_tracks(tmp_path / "c.csv")
    assert read_tracks(tmp_path / "c.csv", allow_untagged=True)[1].tags == ()


def test_unknown_tag_with_vocabulary_names_line_and_suggests(tmp_path: Path) -> None:
    path = _write(tmp_path / "m.tsv", [HEADER, ROWS[0], ROWS[1].replace("---sad", "---sadd")])
    vocab = TagVocabulary(["mood/theme---happy", "mood/theme---fun", "mood/theme---sad"])
    with pytest.raises(DataError, match=r"m\.tsv line 3: .*'mood/theme---sadd' \(did you mean 'mood/theme---sad'"):
        read_tracks(path, vocab=vocab)
    assert len(read_tracks(path)) == 2  # without a vocabulary every tag is accepted


def test_missing_audio_path_and_missing_file(tmp_path: Path) -> None:
    path = _write(tmp_path / "m.tsv", [HEADER, *ROWS[:2]])
    audio = tmp_path / "audio"
    (audio / "01").mkdir(parents=True)
    (audio / "01" / "1.mp3").write_bytes(b"x")
    with pytest.raises(DataError, match=r"m\.tsv line 3: audio file .*02/2\.mp3 does not exist"):
        read_tracks(path, audio_dir=audio)
    (audio / "02").mkdir()
    (audio / "02" / "2.low.mp3").write_bytes(b"x")  # the audio-low name counts as present
    assert len(read_tracks(path, audio_dir=audio)) == 2
    with pytest.raises(DataError, match="metadata file not found"):
        read_tracks(tmp_path / "nope.tsv")
    with pytest.raises(DataError, match="is a folder"):
        read_tracks(tmp_path)


def test_vocabulary_order_subset_encode(tmp_path: Path) -> None:
    recs = read_tracks(_write(tmp_path / "m.tsv", [HEADER, *ROWS]))
    vocab = TagVocabulary.from_tracks(recs)
    assert vocab.tags == tuple(sorted(vocab.tags)) and len(vocab) == 5
    mood = vocab.subset("mood/theme")
    assert mood.tags == ("mood/theme---fun", "mood/theme---happy", "mood/theme---sad")
    assert vocab.subset("genre").tags == ("genre---rock",)
    assert vocab.subset(["sad", "instrument---piano"]).tags == ("instrument---piano", "mood/theme---sad")
    with pytest.raises(DataError, match="categories present"):
        vocab.subset("tempo")
    y = mood.encode(recs, unknown="ignore")
    np.testing.assert_array_equal(y, [[1, 1, 0], [0, 0, 1], [0, 1, 0]])
    with pytest.raises(DataError, match="track_0000003 has tag 'genre---rock'"):
        mood.encode(recs)
    np.testing.assert_array_equal(tag_counts(recs, mood), y.sum(axis=0))
    assert mood.index("happy") == 1 and "sad" in mood


def test_merge_detects_id_collisions() -> None:
    a = [TrackRecord("t1", "a", ("x",)), TrackRecord("t2", "b", ("x",))]
    b = [TrackRecord("m1", "c", ("y",))]
    assert [r.track_id for r in merge_track_lists(a, b)] == ["t1", "t2", "m1"]
    with pytest.raises(DataError, match="'t2' is in both train and extra"):
        merge_track_lists(a, [TrackRecord("t2", "z", ("y",))], names=["train", "extra"])


def test_tag_list_and_split_files(tmp_path: Path) -> None:
    (tmp_path / "tags.txt").write_text("# mood tags\nmood/theme---happy\n\nmood/theme---sad\n")
    assert read_tag_list(tmp_path / "tags.txt") == ["mood/theme---happy", "mood/theme---sad"]
    folder = tmp_path / "splits" / "split-2"
    folder.mkdir(parents=True)
    for s in ("train", "validation", "test"):
        (folder / f"autotagging_moodtheme-{s}.tsv").write_text(HEADER + "\n")
    assert split_files(tmp_path, 2)["test"] == folder / "autotagging_moodtheme-test.tsv"
    assert split_files(folder, 2)["train"].parent == folder
    with pytest.raises(DataError, match="no split-0 files"):
        split_files(tmp_path, 0)


def test_official_files_parse(mtg_dir: Path, reference_predictions_dir: Path) -> None:
    full = read_tracks(mtg_dir / "autotagging_moodtheme.tsv")
    assert len(full) == 18486 and all(r.duration and r.duration >= 30 for r in full)
    files = split_files(mtg_dir, 0)
    sizes = {s: len(read_tracks(f)) for s, f in files.items()}
    assert sizes == {"train": 9949, "validation": 3802, "test": 4231}
    lst = read_tracks(reference_predictions_dir / "train-splits" / "jamendo_moodtheme-train.tsv")
    official = read_tracks(files["train"])
    assert [(r.track_id, r.tags) for r in lst] == [(r.track_id, r.tags) for r in official]
