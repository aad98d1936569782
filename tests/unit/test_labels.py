"""Labels files of `focaltag head train`: both layouts, relative paths, unions, and every bad input as one line."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from focaltag.data.labels import LabelSet, check_paths_exist, check_positives, load_labels, read_labels
from focaltag.errors import DataError


def touch(folder: Path, *names: str) -> None:
    for name in names:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(b"")


def write(folder: Path, text: str, name: str = "labels.csv") -> Path:
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


def test_tag_lists_are_a_union_over_rows_and_paths_are_relative_to_the_file(tmp_path: Path):
    music = tmp_path / "music"
    touch(music, "a.flac", "b.flac", "c.flac")
    labels = read_labels(write(music, "path,tags\na.flac,warm-up;vocal\nb.flac, peak \na.flac,vocal;closing\n"
                                      "c.flac,peak\n"))
    assert labels.tag_names == ("closing", "peak", "vocal", "warm-up")  # sorted
    assert labels.paths == tuple(str(music / n) for n in ("a.flac", "b.flac", "c.flac"))
    np.testing.assert_array_equal(labels.matrix, [[1, 0, 1, 1], [0, 1, 0, 0], [0, 1, 0, 0]])
    assert labels.counts == {"closing": 1, "peak": 2, "vocal": 1, "warm-up": 1}


def test_one_column_per_tag_keeps_column_order_and_accepts_identical_duplicates(tmp_path: Path):
    path = write(tmp_path, "file,peak,warm-up\nx.mp3,1,0\ny.mp3,0,1\nx.mp3,1,0\nz.mp3,0,0\n")
    labels = read_labels(path)
    assert labels.tag_names == ("peak", "warm-up")
    assert [Path(p).name for p in labels.paths] == ["x.mp3", "y.mp3", "z.mp3"]
    np.testing.assert_array_equal(labels.matrix, [[1, 0], [0, 1], [0, 0]])


def test_tsv_with_byte_order_mark_and_absolute_paths(tmp_path: Path):
    audio = tmp_path / "elsewhere" / "a.wav"
    touch(tmp_path, "elsewhere/a.wav")
    path = tmp_path / "labels.tsv"
    path.write_bytes("\ufeffPath\tTags\n".encode() + f"{audio}\tx;y\n".encode())
    labels = read_labels(path)
    assert labels.paths == (str(audio),) and labels.tag_names == ("x", "y")


@pytest.mark.parametrize(("text", "expected"), [
    ("path,tags,artist\na.mp3,x,Bob\n", "unknown column(s) 'artist'"),
    ("song,tags\na.mp3,x\n", "no path column"),
    ("path,tags\na.mp3,\n", "empty tags for a.mp3"),
    ("path,tags\na.mp3,x;;y\n", "an empty tag in 'x;;y'"),
    ("path,tags\na.mp3,x;\n", "an empty tag"),
    ("path,tags\n,x\n", "line 2: empty path"),
    ("path,x,y\na.mp3,1,0\na.mp3,0,0\n", "lines 2 and 3: a.mp3 is listed twice with different labels (tag(s) x)"),
    ("path,x,artist\na.mp3,1,Bob\n", "column 'artist' is 'Bob', not 0 or 1"),
    ("path,x,y\na.mp3,1,\n", "column 'y' is empty, not 0 or 1"),
    ("path,x,x\na.mp3,1,0\n", "tag column(s) 'x' appear twice"),
    ("path,x\na.mp3,1,1\n", "line 2: 3 field(s), the header has 2"),
    ("path,tags\n", "a header but no tracks"),
    ("\n\n", "empty"),
    ("path\na.mp3\n", "only a path column"),
])
def test_bad_labels_files_are_one_line_errors(tmp_path: Path, text: str, expected: str):
    path = write(tmp_path, text)
    before = sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(DataError) as info:
        read_labels(path)
    message = str(info.value)
    assert expected in message and "\n" not in message
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing written


def test_unreadable_inputs(tmp_path: Path):
    with pytest.raises(DataError, match="labels file not found"):
        read_labels(tmp_path / "nope.csv")
    with pytest.raises(DataError, match="is a folder"):
        read_labels(tmp_path)
    bad = tmp_path / "latin1.csv"
    bad.write_bytes("path,tags\ncaf\xe9.mp3,x\n".encode("latin-1"))
    with pytest.raises(DataError, match="not UTF-8"):
        read_labels(bad)


def test_a_tag_without_positives_or_on_every_track(tmp_path: Path):
    touch(tmp_path, "a.mp3", "b.mp3")
    labels, _ = load_labels(write(tmp_path, "path,x,y\na.mp3,1,0\nb.mp3,0,1\n"))
    assert labels.counts == {"x": 1, "y": 1}
    with pytest.raises(DataError, match=r"tag\(s\) 'y' have no positive track"):
        load_labels(write(tmp_path, "path,x,y\na.mp3,1,0\nb.mp3,0,0\n"))
    with pytest.raises(DataError, match=r"'x' are on every track"):
        load_labels(write(tmp_path, "path,tags\na.mp3,x\nb.mp3,x;y\n"))


def test_fewer_positives_than_folds_names_the_tag_and_the_fixes(tmp_path: Path):
    names = [f"t{i}.mp3" for i in range(10)]
    touch(tmp_path, *names)
    rows = [f"{n},{'rare;common' if i < 3 else 'common' if i < 8 else 'other'}" for i, n in enumerate(names)]
    path = write(tmp_path, "path,tags\n" + "\n".join(rows) + "\n")
    labels, _ = load_labels(path, folds=2)
    assert labels.counts == {"common": 8, "other": 2, "rare": 3}
    with pytest.raises(DataError) as info:
        load_labels(path, folds=5)
    message = str(info.value)
    assert "fewer positive tracks than the 5 folds: 'other' (2), 'rare' (3)" in message
    assert "lower --folds to 2" in message and "tag more tracks" in message


def test_missing_files_are_listed_up_to_ten_and_counted(tmp_path: Path):
    touch(tmp_path, "there.mp3", "also.mp3")
    rows = ["there.mp3,x", "also.mp3,y"] + [f"gone{i:02d}.mp3,x" for i in range(13)]
    path = write(tmp_path, "path,tags\n" + "\n".join(rows) + "\n")
    with pytest.raises(DataError) as info:
        load_labels(path)
    message = str(info.value)
    assert "13 of 15 file(s) do not exist" in message and "and 3 more" in message and "--skip-missing" in message
    assert message.count("gone") == 10
    labels, missing = load_labels(path, skip_missing=True)
    assert [Path(p).name for p in labels.paths] == ["there.mp3", "also.mp3"] and len(missing) == 13


def test_skipping_missing_files_can_leave_a_tag_without_positives(tmp_path: Path):
    touch(tmp_path, "a.mp3", "b.mp3")
    path = write(tmp_path, "path,tags\na.mp3,x\nb.mp3,y\ngone.mp3,z\n")
    with pytest.raises(DataError, match="'z' have no positive track"):
        load_labels(path, skip_missing=True)


def test_no_file_exists(tmp_path: Path):
    path = write(tmp_path, "path,tags\na.mp3,x\n")
    with pytest.raises(DataError, match="none of the 1 files exists"):
        check_paths_exist(read_labels(path), skip_missing=True)


def test_labelset_checks_its_own_shape():
    with pytest.raises(DataError, match="matrix shape"):
        LabelSet(("a",), ("x", "y"), np.zeros((1, 1)))
    with pytest.raises(DataError, match="only 0 and 1"):
        LabelSet(("a",), ("x",), np.array([[2]]))
    labels = LabelSet(("a", "b"), ("x",), np.array([[1], [0]]))
    check_positives(labels, folds=1)
    assert labels.subset([False, True]).paths == ("b",)
