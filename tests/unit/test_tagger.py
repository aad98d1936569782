"""Tagger internals against hand-computed values: chunk plans, padding, ensemble means, readers, writers."""

from __future__ import annotations

import io
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import soundfile as sf
import torch
from torch import nn

from focaltag.errors import AudioDecodeError, CheckpointError, ConfigError, ModelError
from focaltag.inference.chunking import iter_chunks, plan_file, plan_starts
from focaltag.inference.tagger import TagFailure, Tagger, TagResult
from focaltag.models.ensemble import read_ensemble, save_ensemble
from focaltag.outputs.writers import JSON_KEYS, get_writer

SR = 16000
CHUNK = 1600  # 0.1 s: small probe chunks keep these tests fast
TAGS = ("mood/theme---a", "mood/theme---b", "mood/theme---c")


class Probe(nn.Module):
    """Logits = scale * (chunk mean, chunk max, chunk index marker); records every batch it sees."""

    def __init__(self, scale: float = 1.0, tags: tuple[str, ...] = TAGS, chunk: int = CHUNK) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(float(scale)))
        self.pretrained_cfg = SimpleNamespace(tag_names=tags, sample_rate=SR, chunk_samples=chunk)
        self.seen: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(x.detach().clone())
        feats = torch.stack([x.mean(1), x.amax(1), x[:, 0]], dim=1)
        return self.scale * feats[:, : len(self.pretrained_cfg.tag_names)]


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _expected(wave: np.ndarray, starts: list[int], scale: float) -> np.ndarray:
    """Track probabilities computed independently: per-chunk features -> sigmoid -> mean over chunks."""
    rows = []
    for s in starts:
        c = np.zeros(CHUNK, dtype=np.float64)
        seg = wave[s:s + CHUNK]
        c[: len(seg)] = seg
        rows.append(_sigmoid(scale * np.array([c.mean(), c.max(), c[0]])))
    return np.mean(rows, axis=0)


# -- chunk plans ---------------------------------------------------------------------------------------------
def test_evenly_spaced_starts_match_reference_formula() -> None:
    # hop = (100 - 10) // 4 = 22
    assert plan_starts(100, 10, n_chunks=4) == [0, 22, 44, 66]


def test_sliding_window_covers_every_sample() -> None:
    starts = plan_starts(100, 30, hop_samples=25)
    assert starts == [0, 25, 50, 70]  # the last chunk is flush with the end
    covered = np.zeros(100, dtype=bool)
    for s in starts:
        covered[s:s + 30] = True
    assert covered.all()


@pytest.mark.parametrize("n", [1, 9, 10])
def test_track_not_longer_than_a_chunk_gets_one_chunk(n: int) -> None:
    assert plan_starts(n, 10, n_chunks=16) == [0]
    assert plan_starts(n, 10, hop_samples=3) == [0]


def test_bad_plan_arguments_raise_config_errors() -> None:
    with pytest.raises(ConfigError, match="hop"):
        plan_starts(100, 10, hop_samples=0)
    with pytest.raises(ConfigError, match="n_chunks"):
        Tagger(Probe(), n_chunks=0)


# -- tagging waveforms ---------------------------------------------------------------------------------------
def test_short_track_is_zero_padded_to_one_chunk() -> None:
    probe = Probe()
    wave = np.linspace(0.1, 0.5, 700).astype(np.float32)
    result = Tagger(probe, prefetch=False, precision="fp32").tag(wave, sr=SR)
    seen = torch.cat(probe.seen)
    assert seen.shape == (1, CHUNK)
    np.testing.assert_allclose(seen[0, :700].numpy(), wave, rtol=0, atol=0)
    assert not seen[0, 700:].any()
    np.testing.assert_allclose(result.as_array(), _expected(wave, [0], 1.0), atol=1e-6)
    assert result.duration == pytest.approx(700 / SR)


def test_track_probabilities_are_chunk_means_at_training_positions() -> None:
    rng = np.random.default_rng(0)
    wave = rng.uniform(-1, 1, 10 * CHUNK + 123).astype(np.float32)
    result = Tagger(Probe(2.0), n_chunks=5, batch_size=2).tag(wave, sr=SR)
    hop = (len(wave) - CHUNK) // 5
    starts = [i * hop for i in range(5)]
    np.testing.assert_allclose(result.chunk_times, np.array(starts) / SR)
    np.testing.assert_allclose(result.as_array(), _expected(wave, starts, 2.0), atol=1e-6)
    assert result.chunk_probabilities.shape == (5, 3)
    assert [t for t, _ in result.top] == sorted(TAGS, key=lambda t: -result.probabilities[t])[:5]


def test_stereo_waveform_is_averaged_and_sr_is_required() -> None:
    left = np.full(3 * CHUNK, 0.2, dtype=np.float32)
    right = np.full(3 * CHUNK, 0.6, dtype=np.float32)
    tagger = Tagger(Probe(), n_chunks=2)
    stereo = tagger.tag(np.stack([left, right]), sr=SR).as_array()
    mono = tagger.tag((left + right) / 2, sr=SR).as_array()
    np.testing.assert_allclose(stereo, mono, atol=1e-7)
    with pytest.raises(ConfigError, match="sr is required"):
        tagger.tag(left)


def test_ensemble_is_weighted_mean_of_member_probabilities(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    wave = rng.uniform(-1, 1, 6 * CHUNK).astype(np.float32)
    a, b = Probe(1.0), Probe(-3.0)
    pa = Tagger(a, n_chunks=4).tag(wave, sr=SR).as_array()
    pb = Tagger(b, n_chunks=4).tag(wave, sr=SR).as_array()
    both = Tagger([a, b], n_chunks=4).tag(wave, sr=SR).as_array()
    np.testing.assert_allclose(both, (pa + pb) / 2, atol=1e-6)
    # and the mean over chunks of the per-chunk mean equals this (independent formula)
    starts = plan_starts(len(wave), CHUNK, n_chunks=4)
    np.testing.assert_allclose(both, (_expected(wave, starts, 1.0) + _expected(wave, starts, -3.0)) / 2, atol=1e-6)


def test_ensemble_members_need_identical_tag_lists() -> None:
    with pytest.raises(ModelError, match="identical tag lists"):
        Tagger([Probe(), Probe(tags=("mood/theme---a", "mood/theme---b", "mood/theme---z"))])
    with pytest.raises(ModelError, match="same input"):
        Tagger([Probe(), Probe(chunk=800)])


def test_ensemble_folder_round_trip_with_weights(tmp_path: Path) -> None:
    from focaltag.models import create_model

    torch.manual_seed(0)
    m1, m2 = create_model(n_tags=4, width=4), create_model(n_tags=4, width=4)
    save_ensemble(tmp_path / "ens", [m1, m2], weights=[3.0, 1.0])
    paths, weights, tags = read_ensemble(tmp_path / "ens")
    assert [p.name for p in paths] == ["member-00.pt", "member-01.pt"] and weights == [3.0, 1.0]
    assert tags == list(m1.pretrained_cfg.tag_names)
    wave = np.random.default_rng(2).uniform(-0.5, 0.5, 80000).astype(np.float32)
    p1 = Tagger(m1, n_chunks=2, precision="fp32").tag(wave, sr=SR).as_array()
    p2 = Tagger(m2, n_chunks=2, precision="fp32").tag(wave, sr=SR).as_array()
    pe = Tagger(tmp_path / "ens", n_chunks=2, precision="fp32").tag(wave, sr=SR).as_array()
    np.testing.assert_allclose(pe, 0.75 * p1 + 0.25 * p2, atol=1e-5)


def test_bad_ensemble_manifest_and_missing_model(tmp_path: Path) -> None:
    (tmp_path / "ens").mkdir()
    (tmp_path / "ens" / "ensemble.json").write_text('{"format": "something-else"}')
    with pytest.raises(CheckpointError, match="not a focaltag ensemble"):
        Tagger(tmp_path / "ens")
    with pytest.raises(CheckpointError, match="model not found"):
        Tagger(tmp_path / "nope.pt")


def test_thresholds_give_decisions() -> None:
    wave = np.full(2 * CHUNK, 0.5, dtype=np.float32)
    # features: mean 0.5, max 0.5, first 0.5 -> every probability sigmoid(0.5) = 0.62246
    thresholds = {"a": 0.6, "mood/theme---b": 0.7, "c": 0.6224}
    result = Tagger(Probe(), thresholds=thresholds).tag(wave, sr=SR)
    assert result.decisions == {"mood/theme---a": True, "mood/theme---b": False, "mood/theme---c": True}


# -- readers: seek / stream / whole give the same chunks ------------------------------------------------------
@pytest.fixture(scope="module")
def stereo_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """12.3 s of 44.1 kHz stereo noise + tone as FLAC (exact length in the header, seekable)."""
    rng = np.random.default_rng(3)
    n = int(12.3 * 44100)
    t = np.arange(n) / 44100
    wave = np.stack([0.3 * np.sin(2 * np.pi * 440 * t), 0.2 * rng.standard_normal(n)], axis=1)
    path = tmp_path_factory.mktemp("audio") / "track.flac"
    sf.write(path, wave.astype(np.float32), 44100, subtype="PCM_24")
    return path


@pytest.mark.parametrize(("chunk", "n_chunks", "hop"), [
    (40000, 7, None),  # overlapping chunks
    (8000, 3, None),  # sparse chunks: gaps of ~3.5 s (longer than a stream block) are never kept
    (40000, 16, 8000),  # sliding window, last chunk flush with the end
])
def test_block_and_seek_readers_equal_whole_decode(stereo_file: Path, chunk: int, n_chunks: int,
                                                   hop: int | None, monkeypatch: pytest.MonkeyPatch) -> None:
    from focaltag.audio import chunks
    from focaltag.audio.decode import load_audio

    monkeypatch.setattr(chunks, "STREAM_BLOCK_SECONDS", 1.0)
    plan = plan_file(stereo_file, sample_rate=SR, chunk_samples=chunk, n_chunks=n_chunks, hop_samples=hop)
    whole_wave = load_audio(stereo_file, sr=SR)
    assert plan.n_samples == len(whole_wave)
    whole = dict(iter_chunks(plan, method="whole"))
    for method in ("stream", "seek"):
        got = dict(iter_chunks(plan, method=method))
        assert sorted(got) == list(range(plan.n_chunks))
        for i, s in enumerate(plan.starts):
            np.testing.assert_allclose(got[i], whole[i], atol=2e-5, err_msg=f"{method} chunk {i} at {s}")
            np.testing.assert_allclose(got[i][: len(whole_wave) - s], whole_wave[s:s + chunk], atol=2e-5)


def test_file_shorter_than_a_chunk_is_padded(tmp_path: Path) -> None:
    path = tmp_path / "short.wav"
    sf.write(path, np.full(4410, 0.25, dtype=np.float32), 44100)  # 0.1 s = 1600 samples at 16 kHz
    plan = plan_file(path, sample_rate=SR, chunk_samples=4000, n_chunks=16)
    assert plan.starts == (0,)
    for method in ("seek", "stream", "whole"):
        (_, chunk), = list(iter_chunks(plan, method=method))
        assert chunk.shape == (4000,)
        assert np.abs(chunk[100:1500] - 0.25).max() < 1e-3 and not chunk[1700:].any()


def test_tag_many_batches_across_files_and_reports_failures(stereo_file: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.mp3"
    bad.write_bytes(b"not audio at all" * 50)
    tagger = Tagger(Probe(), n_chunks=4, batch_size=6)
    results = list(tagger.tag_many([stereo_file, bad, tmp_path / "missing.wav", stereo_file]))
    assert [r.ok for r in results] == [True, False, False, True]
    assert isinstance(results[1], TagFailure) and "bad.mp3" in results[1].error
    assert "missing.wav" in results[2].file
    single = Tagger(Probe(), n_chunks=4, batch_size=1, prefetch=False).tag(stereo_file)
    for r in (results[0], results[3]):
        np.testing.assert_allclose(r.as_array(), single.as_array(), atol=1e-6)
    with pytest.raises(AudioDecodeError, match="bad.mp3"):
        tagger.tag(bad)


# -- writers ----------------------------------------------------------------------------------------------------
def _result(decisions: bool) -> TagResult:
    probs = {"mood/theme---a": 0.9, "mood/theme---b": 0.1, "mood/theme---c": 0.5}
    return TagResult(file="x.mp3", duration=61.5, tag_names=TAGS, probabilities=probs,
                     top=[("mood/theme---a", 0.9), ("mood/theme---c", 0.5)],
                     chunk_probabilities=np.zeros((1, 3)), chunk_times=np.zeros(1), chunk_seconds=4.6,
                     decisions={"mood/theme---a": True, "mood/theme---b": False, "mood/theme---c": False}
                     if decisions else None)


@pytest.mark.parametrize("decisions", [False, True])
def test_json_writer_keys(decisions: bool) -> None:
    out = io.StringIO()
    with get_writer("json", out, tag_names=TAGS, top_k=2, decisions=decisions) as writer:
        writer.write(_result(decisions))
        writer.write(TagFailure("broken.ogg", "broken.ogg: cannot decode"))
    data = json.loads(out.getvalue())
    assert isinstance(data, list) and len(data) == 2
    ok, failed = data
    expected = set(JSON_KEYS) if decisions else set(JSON_KEYS) - {"decisions"}
    assert set(ok) == expected
    assert ok["tags"] == {"mood/theme---a": 0.9, "mood/theme---b": 0.1, "mood/theme---c": 0.5}
    assert ok["top"] == [{"tag": "mood/theme---a", "probability": 0.9}, {"tag": "mood/theme---c", "probability": 0.5}]
    assert ok["duration"] == 61.5
    assert failed == {"file": "broken.ogg", "error": "broken.ogg: cannot decode"}
    assert writer.n_failed == 1 and writer.n_written == 2


def test_json_writer_without_results_is_an_empty_array() -> None:
    out = io.StringIO()
    get_writer("json", out, tag_names=TAGS).close()
    assert json.loads(out.getvalue()) == []


def test_csv_and_table_writers() -> None:
    out = io.StringIO()
    with get_writer("csv", out, tag_names=TAGS, decisions=True) as writer:
        writer.write(_result(True))
        writer.write(TagFailure("broken.ogg", "cannot decode"))
    lines = out.getvalue().splitlines()
    assert lines[0] == "file,duration,error,mood/theme---a,mood/theme---b,mood/theme---c,predicted"
    assert lines[1] == "x.mp3,61.500,,0.900000,0.100000,0.500000,mood/theme---a"
    assert lines[2] == "broken.ogg,,cannot decode,,,,"
    out = io.StringIO()
    with get_writer("table", out, tag_names=TAGS, top_k=2) as writer:
        writer.write(_result(True))
    assert out.getvalue() == "x.mp3\t1:02\ta* 0.900, c 0.500\t[predicted: a]\n"
    with pytest.raises(ConfigError, match="unknown output format"):
        get_writer("xml", out, tag_names=TAGS)


def test_missing_onnx_extras_name_the_install_command(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    from focaltag.inference.export import require_onnx

    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # makes ``import onnxruntime`` raise ImportError
    with pytest.raises(ConfigError, match=r"pip install 'focaltag\[onnx\]'"):
        require_onnx()
    with pytest.raises(ConfigError, match="onnxruntime"):
        Tagger(Probe(), runtime="onnx")
