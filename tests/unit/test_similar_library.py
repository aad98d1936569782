"""The vector store, the search index, similar tracks, playlists and M3U8, on synthetic libraries.

A synthetic library is a JSONL in the library-run schema plus its vector store, written through the store's own
record writer; results are checked against independent numpy computations (brute-force cosine ranking, the
mean-probability ranking) and the playlist against the ``m3u8`` package's parser.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from focaltag._paths import json_line
from focaltag.errors import ConfigError, DataError
from focaltag.library.api import Library
from focaltag.library.index import LibraryIndex, VectorSearch, exact_top, index_dir
from focaltag.library.m3u import write_m3u
from focaltag.library.playlist import Entry, mood_playlist, path_playlist, radio_playlist
from focaltag.library.runs import merge_outputs, path_key
from focaltag.library.search import FileInfo, Seed, similar_tracks, unit_vector
from focaltag.library.store import StoreHeader, VectorStore, append_record

TAGS = ["mood/theme---calm", "mood/theme---dark", "mood/theme---happy", "mood/theme---relaxing"]


def _line(file: str, probs: np.ndarray, duration: float, *, decisions: bool = True) -> dict:
    obj = {"file": file, "model": "synthetic-model", "duration": duration,
           "tags": {t: round(float(p), 6) for t, p in zip(TAGS, probs, strict=True)},
           "top": [{"tag": TAGS[i], "probability": float(probs[i])} for i in np.argsort(-probs)[:2]]}
    if decisions:
        obj["decisions"] = {t: bool(p > 0.5) for t, p in zip(TAGS, probs, strict=True)}
    return obj


def write_library(folder: Path, vectors: np.ndarray, *, durations: np.ndarray | None = None,
                  probs: np.ndarray | None = None, with_vectors: np.ndarray | None = None,
                  decisions: bool = True, name: str = "tags.jsonl", model: str = "synthetic-model") -> Path:
    """A library of len(vectors) tracks named t00000.mp3 ...; ``with_vectors`` masks which get a vector."""
    rng = np.random.default_rng(7)
    n = len(vectors)
    durations = rng.uniform(120, 300, n) if durations is None else durations
    probs = rng.uniform(0, 1, (n, len(TAGS))) if probs is None else probs
    output = folder / name
    store = VectorStore(output)
    store.create(StoreHeader(model, vectors.shape[1]))
    with open(output, "w", encoding="utf-8") as out, store.open_append() as rec:
        for i in range(n):
            file = str(folder / f"t{i:05d}.mp3")
            if with_vectors is None or with_vectors[i]:
                append_record(rec, path_key(file), vectors[i], vectors.shape[1])
            out.write(json_line(_line(file, probs[i], float(durations[i]), decisions=decisions)) + "\n")
    return output


def clustered(n: int, dim: int, *, clusters: int = 20, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dim))
    return (centres[rng.integers(0, clusters, n)] + 0.6 * rng.standard_normal((n, dim))).astype(np.float32)


def brute_force(matrix: np.ndarray, query: np.ndarray) -> np.ndarray:
    """Row order by cosine, computed independently in float64 (ties by row)."""
    m = matrix.astype(np.float64)
    m /= np.linalg.norm(m, axis=1, keepdims=True)
    q = query.astype(np.float64) / np.linalg.norm(query)
    return np.lexsort((np.arange(len(m)), -(m @ q)))


# -- the store -----------------------------------------------------------------------------------------------
def test_store_round_trip_keeps_vectors_to_float16_precision(tmp_path: Path) -> None:
    vectors = clustered(50, 24) * 7.5
    output = write_library(tmp_path, vectors)
    files, matrix = Library(output).embeddings()
    assert files == [str(tmp_path / f"t{i:05d}.mp3") for i in range(50)]
    rel = np.linalg.norm(matrix - vectors, axis=1) / np.linalg.norm(vectors, axis=1)
    assert rel.max() < 1e-3  # float16 keeps 11 significant bits: ~5e-4 relative per value


def test_partial_record_is_cut_and_orphans_and_superseded_records_are_dropped(tmp_path: Path) -> None:
    output = write_library(tmp_path, clustered(10, 8))
    store = VectorStore(output)
    with store.open_append() as rec:
        append_record(rec, path_key(str(tmp_path / "t00003.mp3")), np.ones(8), 8)  # a refresh: supersedes
        append_record(rec, path_key(str(tmp_path / "not-in-jsonl.mp3")), np.ones(8), 8)  # killed before its line
        rec.write(b"\x01\x02\x03")  # killed mid-record
    state = store.read_state(repair=True)
    assert state.repaired_bytes == 3 and state.n_records == 12 and state.duplicates == 1
    keep = {path_key(str(tmp_path / f"t{i:05d}.mp3")) for i in range(10)}
    assert store.compact(keep) == 2
    state = store.read_state()
    assert state.n_records == 10 and state.recorded() == keep
    _, matrix = store.read_matrix([path_key(str(tmp_path / "t00003.mp3"))])
    np.testing.assert_allclose(matrix[0], np.ones(8), rtol=1e-3)  # the last record of a key wins


def test_store_of_another_model_is_refused(tmp_path: Path) -> None:
    output = write_library(tmp_path, clustered(4, 8))
    with pytest.raises(ConfigError, match="come from synthetic-model, not other-model"):
        VectorStore(output).check_model("other-model")


def test_merge_outputs_joins_the_shards_stores(tmp_path: Path) -> None:
    vectors = clustered(20, 8)
    a = write_library(tmp_path / "a", vectors[:12]) if (tmp_path / "a").mkdir() is None else None
    b_dir = tmp_path / "b"
    b_dir.mkdir()
    # shard b holds other files: renamed so they do not collide with shard a's
    b = write_library(b_dir, vectors[12:])
    assert a is not None
    files, dropped = merge_outputs(tmp_path / "all.jsonl", [a, b])
    assert (files, dropped) == (20, 0)
    merged_files, matrix = Library(tmp_path / "all.jsonl").embeddings()
    assert len(merged_files) == 20
    np.testing.assert_allclose(matrix, vectors, rtol=2e-3, atol=2e-3)


def test_merge_refuses_stores_of_different_models(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a = write_library(tmp_path / "a", clustered(3, 8))
    b = write_library(tmp_path / "b", clustered(3, 8), model="another")
    with pytest.raises(DataError, match="merge runs of one model"):
        merge_outputs(tmp_path / "all.jsonl", [a, b])


# -- the index -----------------------------------------------------------------------------------------------
def test_exact_search_matches_brute_force(tmp_path: Path) -> None:
    matrix = clustered(3000, 16)
    unit = (matrix / np.linalg.norm(matrix, axis=1, keepdims=True)).astype(np.float16)
    query = np.random.default_rng(3).standard_normal(16).astype(np.float32)
    rows, scores = exact_top(unit, unit_vector(query), 25)
    expected = brute_force(unit.astype(np.float32), query)[:25]
    assert list(rows) == list(expected)
    assert np.all(np.diff(scores) <= 0)
    subset = np.arange(0, 3000, 7)
    rows, _ = exact_top(unit, unit_vector(query), 10, rows=subset)
    assert list(rows) == [int(subset[i]) for i in brute_force(unit[subset].astype(np.float32), query)[:10]]


def test_hnsw_recall_at_10_against_exact(tmp_path: Path) -> None:
    from focaltag.library.index import _graph

    matrix = clustered(4000, 32, clusters=40)
    unit = (matrix / np.linalg.norm(matrix, axis=1, keepdims=True)).astype(np.float16)
    search = VectorSearch(unit, _graph(unit))
    rng = np.random.default_rng(11)
    hits = 0
    for q in rng.integers(0, len(unit), 50):
        query = unit_vector(unit[q].astype(np.float32) + 0.1 * rng.standard_normal(32).astype(np.float32))
        approx = [hit[0] for hit, _ in zip(search.ranked(query, first=10), range(10), strict=False)]
        exact, _ = exact_top(unit, query, 10)
        hits += len(set(approx) & set(exact.tolist()))
    assert hits / 500 >= 0.95


def test_index_is_kept_and_rebuilt_when_the_library_changes(tmp_path: Path) -> None:
    output = write_library(tmp_path, clustered(30, 8))
    first = LibraryIndex.load(output)
    assert (index_dir(output) / "meta.json").is_file()
    again = LibraryIndex.load(output)
    assert isinstance(again.unit, np.memmap) and list(again.files) == list(first.files)  # read back, not rebuilt
    store = VectorStore(output)
    new_file = str(tmp_path / "new.mp3")
    with store.open_append() as rec:
        append_record(rec, path_key(new_file), np.ones(8), 8)
    with open(output, "a", encoding="utf-8") as out:
        out.write(json_line(_line(new_file, np.full(4, 0.9), 200.0)) + "\n")
    rebuilt = LibraryIndex.load(output)
    assert rebuilt.files[-1] == new_file and len(rebuilt.unit) == 31


# -- similar -------------------------------------------------------------------------------------------------
def _seed(index: LibraryIndex, row: int) -> Seed:
    return Seed(index.files[row], unit_vector(np.asarray(index.unit[index.vector_row[row]], dtype=np.float32)),
                float(index.durations[row]), row)


def test_similar_is_the_cosine_ranking_without_seeds_and_their_duplicates(tmp_path: Path) -> None:
    vectors = clustered(200, 16)
    durations = np.random.default_rng(1).uniform(100, 300, 200)
    vectors[50] = vectors[10] * 1.01  # track 50: the same audio as track 10 (another path, same length)
    durations[50] = durations[10] + 0.05
    vectors[60] = vectors[10] * 0.99  # track 60: near-identical vector but 40 s longer: another recording
    durations[60] = durations[10] + 40
    output = write_library(tmp_path, vectors, durations=durations)
    lib = Library(output)
    matches = lib.similar(str(tmp_path / "t00010.mp3"), n=15)
    order = [int(r) for r in brute_force(vectors, vectors[10]) if r not in (10, 50)][:15]
    assert [m.row for m in matches] == order
    assert matches[0].row == 60
    np.testing.assert_allclose([m.score for m in matches],
                               [unit_vector(vectors[r]) @ unit_vector(vectors[10]) for r in order], atol=2e-3)


def test_several_seeds_search_by_their_mean(tmp_path: Path) -> None:
    vectors = clustered(100, 12)
    output = write_library(tmp_path, vectors)
    lib = Library(output)
    seeds = [str(tmp_path / "t00001.mp3"), str(tmp_path / "t00002.mp3")]
    mean = unit_vector(vectors[1]) + unit_vector(vectors[2])
    expected = [int(r) for r in brute_force(vectors, mean) if r not in (1, 2)][:5]
    assert [m.row for m in lib.similar(*seeds, n=5)] == expected


def test_where_keeps_tracks_with_the_tags_and_says_when_none_is_left(tmp_path: Path) -> None:
    vectors = clustered(120, 8)
    probs = np.random.default_rng(5).uniform(0, 1, (120, 4))
    output = write_library(tmp_path, vectors, probs=probs)
    lib = Library(output)
    matches = lib.similar(str(tmp_path / "t00000.mp3"), n=10, where=["calm", "relaxing"])
    allowed = (probs[:, 0] > 0.5) & (probs[:, 3] > 0.5)
    order = [int(r) for r in brute_force(vectors, vectors[0]) if allowed[r] and r != 0][:10]
    assert [m.row for m in matches] == order
    none = np.random.default_rng(5).uniform(0, 0.4, (120, 4))
    (tmp_path / "empty").mkdir()
    lib2 = Library(write_library(tmp_path / "empty", vectors, probs=none))
    with pytest.raises(DataError, match="no track of this library has all of calm"):
        lib2.similar(str(tmp_path / "empty" / "t00000.mp3"), where=["calm"])
    with pytest.raises(ConfigError, match="unknown tag 'clam' for this library; did you mean calm"):
        lib2.similar(str(tmp_path / "empty" / "t00000.mp3"), where=["clam"])


def test_where_uses_top_tags_for_a_model_without_thresholds(tmp_path: Path) -> None:
    probs = np.tile([0.9, 0.1, 0.8, 0.2], (40, 1))
    probs[::2] = [0.1, 0.9, 0.2, 0.8]  # even tracks' top-2: dark, relaxing
    output = write_library(tmp_path, clustered(40, 8), probs=probs, decisions=False)
    matches = Library(output).similar(str(tmp_path / "t00001.mp3"), n=40, where=["dark"])
    assert matches and all(m.row % 2 == 0 for m in matches)


def test_spread_limits_tracks_per_artist(tmp_path: Path) -> None:
    vectors = clustered(60, 8, clusters=2)
    output = write_library(tmp_path, vectors)
    index = LibraryIndex.load(output)

    def info(path: str) -> FileInfo:  # three artists by track number
        return FileInfo(f"artist {int(Path(path).stem[1:]) % 3}", None, None, None)

    matches = similar_tracks(index, [_seed(index, 0)], 20, spread=2, info=info)
    artists = [info(m.file).artist for m in matches]
    assert len(matches) == 6 and all(artists.count(a) == 2 for a in set(artists))


def test_tracks_without_vectors_are_left_out_with_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture
                                                            ) -> None:
    mask = np.ones(30, dtype=bool)
    mask[[4, 9]] = False
    output = write_library(tmp_path, clustered(30, 8), with_vectors=mask)
    lib = Library(output)
    rows = [m.row for m in lib.similar(str(tmp_path / "t00000.mp3"), n=100)]
    assert len(rows) == 27 and 4 not in rows and 9 not in rows
    assert "2 track(s) have no embedding" in caplog.text
    with pytest.raises(DataError, match="without an embedding; rerun"):
        lib.similar(str(tmp_path / "t00004.mp3"))


def test_a_library_without_embeddings_says_to_rerun_with_embeddings(tmp_path: Path) -> None:
    output = tmp_path / "plain.jsonl"
    output.write_text(json_line(_line("a.mp3", np.full(4, 0.7), 100.0)) + "\n", encoding="utf-8")
    with pytest.raises(DataError, match="has no embeddings; rerun .* --embeddings"):
        Library(output).similar("a.mp3")
    assert [e.file for e in Library(output).playlist(tags=["calm"])] == ["a.mp3"]  # mood needs no vectors


# -- playlists -----------------------------------------------------------------------------------------------
def test_mood_playlist_ranks_yes_tracks_by_mean_probability(tmp_path: Path) -> None:
    probs = np.random.default_rng(2).uniform(0, 1, (80, 4))
    output = write_library(tmp_path, clustered(80, 8, clusters=80), probs=probs)
    entries = mood_playlist(LibraryIndex.load(output), ["calm", "happy"], 10)
    yes = np.flatnonzero((probs[:, 0] > 0.5) & (probs[:, 2] > 0.5))
    rounded = np.round(probs, 6)
    expected = sorted(yes, key=lambda r: (-(rounded[r, 0] + rounded[r, 2]) / 2, r))[:10]
    assert [e.file for e in entries] == [str(tmp_path / f"t{r:05d}.mp3") for r in expected]


def test_radio_starts_with_the_seed_and_holds_no_copies(tmp_path: Path) -> None:
    vectors = clustered(300, 16, clusters=6)
    durations = np.random.default_rng(4).uniform(100, 300, 300)
    for copy in range(101, 110):  # nine copies of track 100 (re-encodes): same length, ~same vector
        vectors[copy] = vectors[100] * (1 + 0.001 * copy)
        durations[copy] = durations[100]
    index = LibraryIndex.load(write_library(tmp_path, vectors, durations=durations))
    seed = _seed(index, 5)
    entries = radio_playlist(index, seed, 25)
    files = [e.file for e in entries]
    assert files[0] == seed.file and len(files) == 25 == len(set(files))
    rows = [index.files.index(f) for f in files]
    assert sum(r in range(100, 110) for r in rows) <= 1
    plain = [m.row for m in similar_tracks(index, [seed], 24)]
    # variety: the radio is not just the 24 nearest tracks
    assert set(rows[1:]) != set(plain)


def test_path_glides_from_a_to_b_without_repeats(tmp_path: Path) -> None:
    rng = np.random.default_rng(9)
    a, b = rng.standard_normal(16), rng.standard_normal(16)
    t = rng.uniform(0, 1, 200)
    vectors = ((1 - t)[:, None] * a + t[:, None] * b + 0.05 * rng.standard_normal((200, 16))).astype(np.float32)
    vectors[0], vectors[1] = a, b
    index = LibraryIndex.load(write_library(tmp_path, vectors))
    entries = path_playlist(index, _seed(index, 0), _seed(index, 1), 12)
    rows = [index.files.index(e.file) for e in entries]
    assert rows[0] == 0 and rows[-1] == 1 and len(rows) == 12 == len(set(rows))
    ua, ub = unit_vector(a), unit_vector(b)
    progress = [float(unit_vector(vectors[r]) @ ub - unit_vector(vectors[r]) @ ua) for r in rows]
    assert progress == sorted(progress)  # each step is nearer B than the one before


def test_playlist_needs_exactly_one_mode(tmp_path: Path) -> None:
    lib = Library(write_library(tmp_path, clustered(5, 8)))
    with pytest.raises(ConfigError, match="exactly one of --tag"):
        lib.playlist()
    with pytest.raises(ConfigError, match="got tags and like"):
        lib.playlist(tags=["calm"], like="x.mp3")


# -- M3U8 ----------------------------------------------------------------------------------------------------
def test_m3u8_reads_back_with_the_m3u8_parser(tmp_path: Path) -> None:
    import m3u8

    music = tmp_path / "Music" / "Ünïcode band"
    music.mkdir(parents=True)
    files = [music / "one.mp3", music / "two — 2.flac"]
    for f in files:
        f.write_bytes(b"")
    infos = {str(files[0]): FileInfo("Björk", "Album", "Jóga", 305.4), str(files[1]): FileInfo(None, None, None, None)}
    out = tmp_path / "lists" / "mix.m3u8"
    write_m3u([Entry(str(files[0]), 305.0, 0.9), Entry(str(files[1]), 61.6, 0.8)], out, info=infos.__getitem__)
    raw = out.read_bytes()
    assert raw.startswith(b"#EXTM3U\n") and raw.decode("utf-8")
    playlist = m3u8.loads(raw.decode("utf-8"), uri=str(out))
    segments = list(playlist.segments)
    assert [s.uri for s in segments] == ["../Music/Ünïcode band/one.mp3", "../Music/Ünïcode band/two — 2.flac"]
    assert [s.duration for s in segments] == [305, 62]
    assert [s.title for s in segments] == ["Björk - Jóga", "two — 2"]
    assert all(os.path.exists(os.path.join(out.parent, s.uri)) for s in segments)
    write_m3u([Entry(str(files[0]), 305.0, 0.9)], out, absolute=True, info=infos.__getitem__)
    assert m3u8.loads(out.read_text(encoding="utf-8")).segments[0].uri == str(files[0])


def test_m3u8_to_a_folder_or_an_unwritable_place_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="is a folder"):
        write_m3u([], tmp_path)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(ConfigError, match="cannot write the playlist"):
        write_m3u([], blocker / "mix.m3u8")


def test_json_round_trip_of_surrogate_paths_in_the_index(tmp_path: Path) -> None:
    output = write_library(tmp_path, clustered(3, 8))
    odd = str(tmp_path / "caf\udce9.mp3")  # a name that is not UTF-8, as the OS gives it
    with VectorStore(output).open_append() as rec:
        append_record(rec, path_key(odd), np.ones(8), 8)
    with open(output, "a", encoding="utf-8") as out:
        out.write(json_line(_line(odd, np.full(4, 0.2), 90.0)) + "\n")
    LibraryIndex.load(output)
    saved = LibraryIndex.load(output).files  # read back from the saved index, name by name
    assert saved[-1] == odd and saved.index(odd) == 3 and list(saved)[-1] == odd
    assert saved.index(str(tmp_path / "t00001.mp3")) == 1
    with pytest.raises(ValueError):
        saved.index(str(tmp_path / "absent.mp3"))
    assert json.loads((index_dir(output) / "files.txt").read_text().splitlines()[-1]) == odd


def test_a_saved_graph_searches_with_the_index_expansion(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """usearch restores a saved graph with its own default search expansion (64), not the one it was built with:
    the index sets its own again, on a graph read back and on one grown from the saved copy."""
    import focaltag.library.index as index_module

    monkeypatch.setattr(index_module, "EXACT_MAX", 50)
    vectors = clustered(120, 16, clusters=10)
    output = write_library(tmp_path, vectors)
    built = LibraryIndex.load(output)
    assert built.graph is not None and built.graph.expansion_search == index_module.HNSW_EXPANSION_SEARCH
    read_back = LibraryIndex.load(output)
    assert read_back.graph is not built.graph
    assert read_back.graph.expansion_search == index_module.HNSW_EXPANSION_SEARCH
    grown = index_module._grown_graph(index_dir(output), read_back.unit)
    assert (grown.expansion_search, grown.expansion_add) == (index_module.HNSW_EXPANSION_SEARCH,
                                                            index_module.HNSW_EXPANSION_ADD)


def test_a_graph_saved_under_a_lower_exact_max_is_left_unused(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """An index saved with a graph by a release whose exact search stopped lower: its library is now searched
    exactly, and the answer is exact search's."""
    import focaltag.library.index as index_module

    monkeypatch.setattr(index_module, "EXACT_MAX", 50)
    vectors = clustered(200, 16, clusters=10)
    output = write_library(tmp_path, vectors)
    assert LibraryIndex.load(output).graph is not None
    monkeypatch.setattr(index_module, "EXACT_MAX", 500)
    reloaded = LibraryIndex.load(output)
    assert reloaded.graph is None
    query = unit_vector(vectors[7])
    hits = [hit for hit, _ in zip(reloaded.search().ranked(query, first=10), range(10), strict=False)]
    assert [row for row, _ in hits] == exact_top(reloaded.unit, query, 10)[0].tolist()


def test_a_grown_library_adds_to_its_graph_instead_of_rebuilding(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    import focaltag.library.index as index_module

    monkeypatch.setattr(index_module, "EXACT_MAX", 50)  # a graph from 51 tracks on
    vectors = clustered(300, 16, clusters=10)
    output = write_library(tmp_path, vectors[:200])
    first = LibraryIndex.load(output)
    assert first.graph is not None and len(first.graph) == 200
    store = VectorStore(output)
    with store.open_append() as rec, open(output, "a", encoding="utf-8") as out:
        for i in range(200, 300):  # a continued run appends 100 tracks
            file = str(tmp_path / f"more{i}.mp3")
            append_record(rec, path_key(file), vectors[i], 16)
            out.write(json_line(_line(file, np.full(4, 0.3), 150.0)) + "\n")
    built: list[int] = []
    original = index_module._graph
    monkeypatch.setattr(index_module, "_graph", lambda unit: built.append(len(unit)) or original(unit))
    grown = LibraryIndex.load(output)
    assert built == [] and grown.graph is not None and len(grown.graph) == 300
    query = unit_vector(vectors[250])
    approx = [hit[0] for hit, _ in zip(grown.search().ranked(query, first=5), range(5), strict=False)]
    assert approx[0] == 250
