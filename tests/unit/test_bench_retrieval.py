"""The pure parts of the retrieval and heads benchmarks (bench/similar.py, bench/music_data.py, bench/heads.py),
each checked against an independent computation (scikit-learn, explicit loops)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
from sklearn.metrics import average_precision_score
from sklearn.metrics.pairwise import cosine_similarity

BENCH = Path(__file__).resolve().parents[2] / "bench"


def _load(name: str) -> ModuleType:
    # by file, not by putting bench/ on the import path (its coverage.py would hide the package of that name)
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


similar = _load("similar")
music_data = _load("music_data")


def _clustered(n_per: tuple[int, ...], dim: int = 12, spread: float = 1.5, seed: int = 0
               ) -> tuple[np.ndarray, list[str]]:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(len(n_per), dim))
    x = np.concatenate([c + spread * rng.normal(size=(n, dim)) for c, n in zip(centres, n_per, strict=True)])
    labels = [f"album{i}" for i, n in enumerate(n_per) for _ in range(n)]
    return x, labels


def test_average_precision_matches_sklearn_per_query() -> None:
    x, labels = _clustered((7, 5, 9, 3, 6))
    got = similar.leave_one_out_retrieval(x, labels, k=5)
    sim = cosine_similarity(x)
    lab = np.asarray(labels)
    expected = []
    for q in range(len(x)):
        others = np.arange(len(x)) != q
        expected.append(average_precision_score(lab[others] == lab[q], sim[q, others]))
    np.testing.assert_allclose(got.average_precision, expected, rtol=1e-12, atol=1e-12)
    assert got.map == pytest.approx(float(np.mean(expected)), abs=1e-12)


def test_precision_at_k_matches_an_explicit_ranking() -> None:
    x, labels = _clustered((4, 8, 6), seed=3)
    for k in (1, 3, 5):
        got = similar.leave_one_out_retrieval(x, labels, k=k)
        expected = []
        for q in range(len(x)):
            ranked = sorted((j for j in range(len(x)) if j != q),
                            key=lambda j, q=q: -float(np.dot(x[q], x[j]) / np.linalg.norm(x[q]) / np.linalg.norm(x[j])))
            expected.append(sum(labels[j] == labels[q] for j in ranked[:k]) / k)
        np.testing.assert_allclose(got.precision_at_k, expected)


def test_perfect_and_worst_rankings() -> None:
    # two tight, far-apart clusters: every relevant item ranks first
    x = np.array([[1.0, 0.0], [0.99, 0.01], [0.98, 0.02], [0.0, 1.0], [0.01, 0.99], [0.02, 0.98]])
    labels = ["a", "a", "a", "b", "b", "b"]
    perfect = similar.leave_one_out_retrieval(x, labels, k=2)
    assert perfect.map == 1.0 and perfect.mean_precision_at_k == 1.0
    # labels crossed with the geometry. Query (1, 0): the others' cosines are 0 (its album-mate), 0.98, 0.196,
    # so the mate ranks 3rd (AP 1/3); query (1, 0.2): 0.98, 0.196 and 0.385 for its mate, 2nd (AP 1/2)
    crossed_x = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.2], [0.2, 1.0]])
    crossed = similar.leave_one_out_retrieval(crossed_x, ["a", "a", "b", "b"], k=1)
    np.testing.assert_allclose(crossed.average_precision, [1 / 3, 1 / 3, 1 / 2, 1 / 2])
    assert crossed.mean_precision_at_k == 0.0


def test_a_query_without_another_item_of_its_album_is_left_out() -> None:
    x, labels = _clustered((4, 1, 3), seed=5)
    got = similar.leave_one_out_retrieval(x, labels)
    assert len(got.average_precision) == 7
    np.testing.assert_array_equal(got.queries, [0, 1, 2, 3, 5, 6, 7])
    assert set(similar.per_album_map(got, labels)) == {"album0", "album2"}


def test_bootstrap_interval_brackets_the_mean_and_narrows_with_more_queries() -> None:
    rng = np.random.default_rng(1)
    small = rng.random(30)
    large = rng.random(3000)
    lo, hi = similar.bootstrap_interval(small, n_resamples=500, seed=0)
    assert lo < small.mean() < hi
    lo2, hi2 = similar.bootstrap_interval(large, n_resamples=500, seed=0)
    assert hi2 - lo2 < (hi - lo) / 4
    # the interval of the mean of a constant is that constant
    assert similar.bootstrap_interval(np.full(10, 0.25), n_resamples=50) == (0.25, 0.25)


def test_paired_difference_is_the_mean_difference() -> None:
    a = np.array([0.9, 0.8, 0.7, 0.95])
    b = np.array([0.5, 0.6, 0.4, 0.55])
    d = similar.paired_difference(a, b, n_resamples=400, seed=2)
    assert d["diff"] == pytest.approx(float((a - b).mean()))
    assert d["ci"][0] > 0


def test_pooling_mean_and_unit_length_mean() -> None:
    chunks = np.array([[3.0, 4.0], [0.0, 10.0]])
    np.testing.assert_allclose(similar.pool(chunks, "mean"), [1.5, 7.0])
    np.testing.assert_allclose(similar.pool(chunks, "l2mean"), [(0.6 + 0.0) / 2, (0.8 + 1.0) / 2])
    with pytest.raises(ValueError):
        similar.pool(chunks, "max")


def test_zscore_standardises_each_dimension() -> None:
    x = np.random.default_rng(0).normal(loc=5.0, scale=[1.0, 30.0, 0.1], size=(50, 3))
    z = similar.zscore(np.column_stack([x, np.full(50, 2.0)]))
    np.testing.assert_allclose(z[:, :3].mean(axis=0), 0.0, atol=1e-12)
    np.testing.assert_allclose(z[:, :3].std(axis=0), 1.0)
    assert (z[:, 3] == 0).all()


def test_excerpt_window_is_inside_the_track() -> None:
    assert music_data.excerpt_window(100.0, 29.0) == (30.0, 29.0)
    start, length = music_data.excerpt_window(35.0, 29.0)  # 30 % in would run past the end
    assert start + length == pytest.approx(35.0) and start == pytest.approx(6.0)
    assert music_data.excerpt_window(20.0, 29.0) == (0.0, 20.0)


def test_track_tags_from_package_and_file_metadata() -> None:
    pkg = music_data.Package("x-music", "1", "xgame", "GPL-2+", lambda root: iter(()), several_albums=True)
    track = music_data.Track(Path("a.ogg"), "a.ogg", "The Album: Part II", "A", "Jöhn O'Neil",
                             ("Death Metal", "Death Metal"))
    assert music_data.track_tags(pkg, track) == ["game-xgame", "album-the-album-part-ii",
                                                  "composer-j-hn-o-neil", "genre-death-metal"]
    single = music_data.Package("y-music", "1", "ygame", "GPL-2+", lambda root: iter(()))
    assert music_data.track_tags(single, music_data.Track(Path("b.ogg"), "b.ogg", "Y", "B")) == ["game-ygame"]


def test_spread_subset_caps_each_album_and_spans_it() -> None:
    albums = ["a"] * 10 + ["b"] * 3 + ["a"] * 2 + ["c"]
    keep = music_data.spread_subset(albums, 4)
    kept = [albums[i] for i in keep]
    assert kept.count("a") == 4 and kept.count("b") == 3 and kept.count("c") == 1
    a_rows = [i for i, x in enumerate(albums) if x == "a"]
    assert [i for i in keep if albums[i] == "a"] == [a_rows[0], a_rows[4], a_rows[7], a_rows[11]]
    assert keep == sorted(keep)
    assert music_data.spread_subset(albums, None) == list(range(len(albums)))
    with pytest.raises(ValueError):
        music_data.spread_subset(albums, 0)


def test_tag_matrix_keeps_tags_with_enough_positives() -> None:
    heads = _load("heads")
    tags = [("x", "y"), ("x",), ("x", "z", "z"), ("y", "x"), ()]
    y, names, dropped = heads.tag_matrix(tags, min_positives=2)
    assert names == ["x", "y"] and dropped == {"z": 1}
    np.testing.assert_array_equal(y, [[1, 1], [1, 0], [1, 0], [1, 1], [0, 0]])


def test_synthetic_rows_resample_real_label_rows() -> None:
    heads = _load("heads")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(20, 6)).astype(np.float32)
    y = (rng.random((20, 3)) < 0.4).astype(np.int8)
    xs, ys = heads.synthetic_rows(x, y, 200, seed=1)
    assert xs.shape == (200, 6) and ys.shape == (200, 3) and xs.dtype == np.float32
    real_rows = {tuple(r) for r in y}
    assert all(tuple(r) in real_rows for r in ys)
    # each synthetic row stays near a real embedding: the noise is a tenth of each dimension's spread
    nearest = np.min(np.linalg.norm(xs[:, None, :] - x[None, :, :], axis=2), axis=1)
    assert nearest.max() < 0.1 * np.linalg.norm(x.std(axis=0)) * 5
