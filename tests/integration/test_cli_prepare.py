"""``focaltag data prepare``: synthetic and real data, kill-and-rerun resumability, failures, sharding."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from focaltag.audio.cache import WaveformCache, shard_of
from focaltag.audio.decode import audio_info, load_audio
from focaltag.cli import main
from focaltag.data.metadata import OFFICIAL_COLUMNS, read_tracks

HEADER = "\t".join(OFFICIAL_COLUMNS)


def _split_tsvs(root: Path) -> list[Path]:
    return sorted((root / "splits" / "split-0").glob("autotagging_moodtheme-*.tsv"))


def _prepare_args(tsvs: list[Path], audio: Path, cache: Path, *extra: str) -> list[str]:
    args = ["data", "prepare", "--audio-dir", str(audio), "--cache", str(cache), *extra]
    for tsv in tsvs:
        args += ["--tsv", str(tsv)]
    return args


def _run_json(capsys, args: list[str]) -> tuple[int, dict]:
    rc = main([*args, "--json", "-q"])
    out = capsys.readouterr().out.strip().splitlines()
    return rc, json.loads(out[-1])


def _wav_dataset(root: Path, n: int, *, seed: int = 0) -> tuple[Path, Path]:
    """``n`` short stereo 22.05 kHz WAVs and an official-format TSV listing them."""
    audio = root / "audio"
    rng = np.random.default_rng(seed)
    rows = [HEADER]
    for i in range(n):
        rel = f"{i % 3:02d}/{i}.wav"
        (audio / rel).parent.mkdir(parents=True, exist_ok=True)
        secs = float(rng.uniform(0.5, 2.0))
        sf.write(audio / rel, rng.uniform(-0.3, 0.3, (int(secs * 22050), 2)), 22050)
        rows.append(f"w{i}\tartist_1\talbum_1\t{rel}\t{secs:.1f}\tmood/theme---calm")
    tsv = root / "list.tsv"
    tsv.write_text("\n".join(rows) + "\n")
    return tsv, audio


@pytest.fixture(scope="module")
def clean_synth_cache(synth_dataset, tmp_path_factory) -> Path:
    """The synthetic dataset prepared in one uninterrupted run (the reference for the kill test)."""
    cache = tmp_path_factory.mktemp("clean") / "cache"
    rc = main([*_prepare_args(_split_tsvs(synth_dataset), synth_dataset / "audio", cache), "--workers", "2", "-q"])
    assert rc == 0
    return cache


def test_prepare_synthetic_dataset(synth_dataset, clean_synth_cache, capsys):
    tracks = [r for tsv in _split_tsvs(synth_dataset) for r in read_tracks(tsv)]
    cache = WaveformCache(clean_synth_cache)
    assert set(cache.track_ids) == {r.track_id for r in tracks} and len(cache) == 120
    for rec in tracks:  # TSV durations are rounded to 0.1 s
        assert abs(cache.length(rec.track_id) / 16000 - rec.duration) <= 0.05 + 1e-9
    for rec in tracks[:2]:
        expected = load_audio(synth_dataset / "audio" / rec.path).astype(np.float16).astype(np.float32)
        np.testing.assert_array_equal(cache.get(rec.track_id), expected)
    assert cache.nbytes == 2 * sum(cache.length(t) for t in cache.track_ids)
    assert cache.verify() == []
    rc, summary = _run_json(capsys, _prepare_args(_split_tsvs(synth_dataset), synth_dataset / "audio",
                                                  clean_synth_cache))
    assert rc == 0 and (summary["tracks"], summary["skipped"], summary["prepared"]) == (120, 120, 0)
    assert abs(summary["hours"] - cache.hours) < 1e-3 and summary["bytes"] == cache.nbytes
    assert (clean_synth_cache / "failures.tsv").read_text() == "track_id\tpath\treason\n"


def _check_visible(cache_dir: Path, clean: WaveformCache, seen: set[str]) -> int:
    """Every entry a reader can see is complete and equals the clean run's track."""
    if not (cache_dir / "cache.json").exists():
        return 0
    cache = WaveformCache(cache_dir)
    for tid in set(cache.track_ids) - seen:
        np.testing.assert_array_equal(cache.get(tid), clean.get(tid), err_msg=f"partial entry {tid} visible")
        seen.add(tid)
    return len(cache)


def test_kill_and_rerun_resumes_exactly(synth_dataset, clean_synth_cache, tmp_path, capsys):
    clean = WaveformCache(clean_synth_cache)
    cache_dir = tmp_path / "cache"
    args = _prepare_args(_split_tsvs(synth_dataset), synth_dataset / "audio", cache_dir)
    proc = subprocess.Popen([sys.executable, "-m", "focaltag", *args, "--workers", "2", "-q"],
                            start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    seen: set[str] = set()
    try:
        deadline = time.monotonic() + 60
        while _check_visible(cache_dir, clean, seen) == 0 and time.monotonic() < deadline:
            assert proc.poll() is None, "prepare finished before the test could kill it"
            time.sleep(0.01)
        assert proc.poll() is None, "prepare finished before the test could kill it"
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the run and its worker processes
        proc.wait()
    visible = _check_visible(cache_dir, clean, seen)
    assert 0 < visible < 120, visible
    assert WaveformCache(cache_dir).verify() == []
    rc, summary = _run_json(capsys, [*args, "--workers", "1"])
    assert rc == 0 and summary["skipped"] == visible and summary["prepared"] == 120 - visible
    final = WaveformCache(cache_dir)
    assert final.track_ids == clean.track_ids
    for tid in final.track_ids:
        np.testing.assert_array_equal(final.get(tid), clean.get(tid))
    assert final.verify() == []


def test_prepare_real_recordings(music_dir, tmp_path, capsys):
    files = sorted(p for p in music_dir.iterdir() if p.suffix in (".ogg", ".mp3"))
    rows = [HEADER] + [f"real{i}\ta\tb\t{p.name}\t{audio_info(p).duration:.1f}\tmood/theme---epic"
                       for i, p in enumerate(files)]
    tsv = tmp_path / "real.tsv"
    tsv.write_text("\n".join(rows) + "\n")
    cache_dir = tmp_path / "cache"
    rc = main(_prepare_args([tsv], music_dir, cache_dir) + ["--workers", "2"])
    out = capsys.readouterr().out
    assert rc == 0 and f"{len(files)} tracks, {len(files)} decoded now" in out
    cache = WaveformCache(cache_dir)
    for i, p in enumerate(files):
        info = audio_info(p)
        tol = 1 if info.format == "OGG" else 0.3 * 16000  # MP3 header lengths are estimates
        assert abs(cache.length(f"real{i}") - info.frames * 16000 / info.sample_rate) <= tol
    shortest = min(range(len(files)), key=lambda i: cache.length(f"real{i}"))
    np.testing.assert_array_equal(cache.get(f"real{shortest}"),
                                  load_audio(files[shortest]).astype(np.float16).astype(np.float32))


def test_failures_are_reported_and_the_rest_completes(tmp_path, capsys):
    tsv, audio = _wav_dataset(tmp_path, 5)
    (audio / "00" / "bad.mp3").write_text("not audio at all\n" * 30)
    with tsv.open("a") as fh:
        fh.write("bad\tartist_1\talbum_1\t00/bad.mp3\t3.0\tmood/theme---calm\n")
        fh.write("gone\tartist_1\talbum_1\t00/gone.mp3\t3.0\tmood/theme---calm\n")
    cache_dir = tmp_path / "cache"
    rc = main(_prepare_args([tsv], audio, cache_dir) + ["--workers", "2"])
    out = capsys.readouterr().out
    assert rc == 1 and "5 decoded now" in out and "2 failed" in out and "failures.tsv" in out
    rows = [ln.split("\t") for ln in (cache_dir / "failures.tsv").read_text().splitlines()]
    assert rows[0] == ["track_id", "path", "reason"]
    assert {r[0] for r in rows[1:]} == {"bad", "gone"}
    for _tid, path, reason in rows[1:]:
        assert path.endswith(("bad.mp3", "gone.mp3")) and path in reason
    assert set(WaveformCache(cache_dir).track_ids) == {f"w{i}" for i in range(5)}
    rc, summary = _run_json(capsys, _prepare_args([tsv], audio, cache_dir))
    assert rc == 1 and summary["skipped"] == 5 and summary["failed"] == 2


def test_shards_split_the_work_deterministically(tmp_path, capsys):
    tsv, audio = _wav_dataset(tmp_path, 12, seed=1)
    cache_dir = tmp_path / "cache"
    ids = [f"w{i}" for i in range(12)]
    done: list[set[str]] = []
    for i in range(2):
        rc, summary = _run_json(capsys, _prepare_args([tsv], audio, cache_dir) + ["--shard", f"{i}/2"])
        expected = {t for t in ids if shard_of(t, 2) == i}
        assert rc == 0 and summary["tracks"] == summary["prepared"] == len(expected)
        now = set(WaveformCache(cache_dir).track_ids)
        done.append(now - set().union(*done))
        assert done[-1] == expected
    assert set(WaveformCache(cache_dir).track_ids) == set(ids)
    assert (cache_dir / "failures-0of2.tsv").is_file() and (cache_dir / "failures-1of2.tsv").is_file()
    rc, summary = _run_json(capsys, _prepare_args([tsv], audio, cache_dir) + ["--shard", "0/2"])
    assert summary["skipped"] == summary["tracks"] and summary["prepared"] == 0


@pytest.mark.parametrize(("extra", "needle"), [(["--shard", "2/2"], "shard"), (["--workers", "0"], "--workers")])
def test_bad_options_exit_2(tmp_path, capsys, extra, needle):
    tsv, audio = _wav_dataset(tmp_path, 1)
    with pytest.raises(SystemExit) as exc:  # argparse usage errors exit directly
        main(_prepare_args([tsv], audio, tmp_path / "c") + extra)
    assert exc.value.code == 2
    assert needle in capsys.readouterr().err


def test_missing_inputs_exit_2(tmp_path, capsys):
    tsv, audio = _wav_dataset(tmp_path, 1)
    assert main(_prepare_args([tsv], tmp_path / "nope", tmp_path / "c")) == 2
    assert "--audio-dir" in capsys.readouterr().err
    assert main(_prepare_args([tmp_path / "none.tsv"], audio, tmp_path / "c")) == 2
    assert "none.tsv" in capsys.readouterr().err
