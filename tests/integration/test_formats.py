"""Every format a music library holds, made inside the run by PyAV's own encoders from a shared recording.

Checks: the folder walk finds every file (any case of extension); chunk reads by seeking give the samples of a
whole decode (so seeking is sample-accurate for each format); a real trained tagger (Won et al.'s MTG-Jamendo
Musicnn) tags each file like the WAV of the same audio (lossy: max |p - p_wav| <= 0.03 and the same top-5;
lossless: equal to 1e-3); no decoder text reaches stderr (``-v`` shows it in the log); ``--write-tags`` on an
M4A leaves its decoded audio identical.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from _encode import FORMATS, Format, encode, recording

from focaltag.cli import main

SECONDS, OFFSET = 30.0, 30.0  # 30 s from 0:30 of nebula.ogg (48 kHz stereo)
LOSSY_MAX_DIFF = 0.03
ENCODER_DELAY = {"wma": (2032, 0.05)}
"""Formats whose container cannot record the encoder's delay: (delay in samples at 48 kHz, bound on |p - p_wav|)."""


def _file(fmt: Format) -> str:
    return f"{fmt.name}{fmt.ext}"


@pytest.fixture(scope="module")
def library(music_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One file per format (and an upper-case extension, and the shared Ogg Vorbis recording)."""
    lib = tmp_path_factory.mktemp("formats")
    wave, sr = recording(music_dir / "nebula.ogg", SECONDS, OFFSET)
    for fmt in FORMATS:
        encode(wave, sr, lib / _file(fmt), fmt)
    shutil.copyfile(lib / "aac-m4a.m4a", lib / "UPPER.M4A")
    shutil.copyfile(music_dir / "battle-epic.ogg", lib / "vorbis.ogg")
    (lib / "notes.txt").write_text("not audio")
    return lib


def _all_audio(lib: Path) -> list[str]:
    return sorted(str(p) for p in lib.iterdir() if p.suffix != ".txt")


def test_walk_finds_every_format(library: Path) -> None:
    from focaltag.library.files import collect_audio
    from focaltag.library.runs import iter_library

    assert len(_all_audio(library)) == len(FORMATS) + 2
    assert sorted(f.path for f in iter_library([library])) == _all_audio(library)
    assert sorted(map(str, collect_audio([library]))) == _all_audio(library)


@pytest.mark.parametrize("fmt", FORMATS, ids=[f.name for f in FORMATS])
def test_seek_reads_equal_the_whole_decode(library: Path, fmt: Format, record_property: object) -> None:
    """16 chunks read by seeking (0.1 s margin) are the whole decode's samples: the seek lands on the right sample."""
    from focaltag.audio.chunks import chunk_starts, probe_file, read_file_chunks

    path = library / _file(fmt)
    facts = probe_file(path, 16000)
    assert facts.seekable
    starts = chunk_starts(facts.n_samples, 48000, 16)
    whole = dict(read_file_chunks(path, starts, 48000, sample_rate=16000, method="whole"))
    seek = dict(read_file_chunks(path, starts, 48000, sample_rate=16000, method="seek", facts=facts))
    diff = max(float(np.abs(whole[i] - seek[i]).max()) for i in whole)
    record_property("seek_vs_whole_max_abs", diff)  # type: ignore[operator]
    # lossy decoders restart without the previous frame's state after a seek; inside the margin, so the chunks
    # match to resampler rounding. A one-sample offset would give differences of the signal's slope (~1e-2).
    assert diff < 1e-4, f"{fmt.name}: seek read differs from the whole decode by {diff:.2e}"


def _won_musicnn(won2020_models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from focaltag.models import load_model, save_model

    tags = [t.strip() for t in (won2020_models_dir / "tags-jamendo-top50.txt").read_text().splitlines() if t.strip()]
    model = load_model(won2020_models_dir / "jamendo-musicnn.pth", tag_names=tags)
    return save_model(model, tmp_path_factory.mktemp("won") / "jamendo-musicnn.pt")


def test_every_format_tags_like_its_wav(library: Path, won2020_models_dir: Path,
                                        tmp_path_factory: pytest.TempPathFactory, capsys: pytest.CaptureFixture[str],
                                        record_property: object) -> None:
    """``focaltag tag DIR`` tags one file of each format, exit 0; each agrees with the WAV of the same audio."""
    model = _won_musicnn(won2020_models_dir, tmp_path_factory)
    capsys.readouterr()
    assert main(["tag", str(library), "-m", str(model), "--format", "json", "--chunks", "16",
                 "--precision", "fp32", "-q"]) == 0
    results = {Path(o["file"]).name: o for o in json.loads(capsys.readouterr().out)}
    assert sorted(results) == sorted(Path(p).name for p in _all_audio(library))
    wav = results["wav.wav"]
    tags = list(wav["tags"])
    ref = np.array([wav["tags"][t] for t in tags])
    figures = {}
    for fmt in FORMATS:
        got = results[_file(fmt)]
        diff = float(np.abs(np.array([got["tags"][t] for t in tags]) - ref).max())
        figures[fmt.name] = round(diff, 4)
        top5, wav_top5 = [t["tag"] for t in got["top"]][:5], [t["tag"] for t in wav["top"]][:5]
        if fmt.name in ENCODER_DELAY:  # the file's audio starts late: the encoder's doing, shown below
            assert diff <= ENCODER_DELAY[fmt.name][1], f"{fmt.name}: max |p - p_wav| = {diff:.4f}"
            assert len(set(top5) & set(wav_top5)) >= 4, fmt.name
            continue
        assert top5 == wav_top5, fmt.name
        assert diff <= (LOSSY_MAX_DIFF if fmt.lossy else 1e-3), f"{fmt.name}: max |p - p_wav| = {diff:.4f}"
    record_property("max_abs_diff_vs_wav", figures)  # type: ignore[operator]
    logging.getLogger(__name__).warning("max |p - p_wav| per format: %s", figures)


@pytest.mark.parametrize("name", sorted(ENCODER_DELAY))
def test_late_audio_is_the_encoders_delay(library: Path, name: str) -> None:
    """FFmpeg's WMA encoder delays the audio by 2,032 samples and ASF has no field to say so, so no decoder can
    undo it: the decoded WMA is the WAV 2,032 samples (42 ms) late, exactly; the decoding itself is right."""
    from focaltag.audio.backends import open_reader

    def native(path: Path) -> np.ndarray:
        reader = open_reader(path)
        try:
            return reader.read(10**8).mean(axis=1)
        finally:
            reader.close()

    wav, other = native(library / "wav.wav"), native(library / _file(next(f for f in FORMATS if f.name == name)))
    window = wav[96000:96000 + 48000]
    errors = [float(np.abs(other[96000 + d:96000 + d + 48000] - window).mean()) for d in range(0, 4097)]
    assert int(np.argmin(errors)) == ENCODER_DELAY[name][0]


def _cli(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[2] / "src"),
                                                        os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-m", "focaltag", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300, check=False)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import torch

    from focaltag.models import create_model, save_model

    torch.manual_seed(0)
    return save_model(create_model("short_chunk_resnet", width=8), tmp_path_factory.mktemp("model") / "tiny.pt")


def _damage(src: Path, dst: Path) -> None:
    data = bytearray(src.read_bytes())
    rng = np.random.default_rng(0)
    for i in rng.integers(len(data) // 10, len(data), 300):
        data[i] ^= 0xFF
    dst.write_bytes(bytes(data))


def test_no_decoder_text_on_stderr(library: Path, music_dir: Path, tiny_model: Path, tmp_path: Path) -> None:
    """Damaged MP3 / M4A / Opus files are tagged; stderr holds only focaltag's own lines; -v shows the warnings."""
    lib = tmp_path / "damaged"
    lib.mkdir()
    _damage(music_dir / "traveling_minstrels.low.mp3", lib / "damaged.mp3")
    _damage(library / "aac-m4a.m4a", lib / "damaged.m4a")
    _damage(library / "opus.opus", lib / "damaged.opus")
    quiet = _cli(["tag", str(lib), "-m", str(tiny_model), "--chunks", "4", "-q"], tmp_path)
    assert quiet.returncode == 0, quiet.stderr
    assert len(quiet.stdout.splitlines()) == 3
    assert quiet.stderr.strip() == "", f"decoder text on stderr: {quiet.stderr[:500]!r}"
    verbose = _cli(["tag", str(lib / "damaged.mp3"), "-m", str(tiny_model), "--chunks", "4", "-v"], tmp_path)
    assert verbose.returncode == 0
    assert "damaged packet" in verbose.stderr or "focaltag.audio.ffmpeg" in verbose.stderr or \
        "libav" in verbose.stderr
    stray = [line for line in verbose.stderr.splitlines() if line.startswith("[src/") or line.startswith("Note:")]
    assert not stray, stray


def test_m4a_write_tags_keeps_the_audio(library: Path, tiny_model: Path, tmp_path: Path) -> None:
    import mutagen

    from focaltag.audio.backends import open_reader

    lib = tmp_path / "lib"
    lib.mkdir()
    files = [lib / "aac.m4a", lib / "alac.m4a"]
    shutil.copyfile(library / "aac-m4a.m4a", files[0])
    shutil.copyfile(library / "alac-m4a.m4a", files[1])

    def decoded(path: Path) -> np.ndarray:
        reader = open_reader(path)
        try:
            return reader.read(10**8)
        finally:
            reader.close()

    before = {f: decoded(f) for f in files}
    out = tmp_path / "tags.jsonl"
    assert main(["tag", str(lib), "-m", str(tiny_model), "--chunks", "2", "-o", str(out), "--write-tags",
                 "--top-k", "3", "-q"]) == 0
    lines = {o["file"]: o for o in map(json.loads, out.read_text().splitlines())}
    for f in files:
        probs = lines[str(f)]["tags"]
        best = [t.split("---")[-1] for t, _ in sorted(probs.items(), key=lambda kv: -kv[1])[:3]]
        values = [v.decode() for v in mutagen.File(f).tags["----:com.apple.iTunes:MOOD"]]
        assert values == best
        after = decoded(f)
        assert after.shape == before[f].shape and np.array_equal(after, before[f]), f"{f.name}: audio changed"
