"""`focaltag tag / predict / export / import-reference` through the real CLI, on real and synthetic audio."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from focaltag.cli import main
from focaltag.data.tags import MOODTHEME_TAGS
from focaltag.inference.options import InferenceOptions
from focaltag.outputs.writers import JSON_KEYS

MUSIC = ("battle-epic.ogg", "machine_wars.mp3", "music013.ogg", "nebula.ogg", "traveling_minstrels.low.mp3",
         "traveling_minstrels.ogg")


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A randomly initialised narrow paper-variant model (56 mood/theme tags) saved with save_model."""
    from focaltag.models import create_model, save_model

    torch.manual_seed(0)
    model = create_model("short_chunk_resnet", width=8)
    return save_model(model, tmp_path_factory.mktemp("model") / "tiny.pt")


@pytest.fixture(scope="module")
def tagged_json(music_dir: Path, tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    """JSON output of tagging the six real recordings (with thresholds, so decisions are present)."""
    thresholds = tmp_path_factory.mktemp("thr") / "thresholds.tsv"
    thresholds.write_text("".join(f"{t}\t0.5\n" for t in MOODTHEME_TAGS))
    out = tmp_path_factory.mktemp("json") / "out.json"
    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = main(["tag", str(music_dir), "--model", str(tiny_model), "--format", "json", "--top-k", "3",
                   "--thresholds", str(thresholds), "-q"])
    assert rc == 0
    out.write_text(buf.getvalue())
    return json.loads(buf.getvalue())


def test_tag_folder_prints_tags_for_all_six_recordings(music_dir: Path, tiny_model: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["tag", str(music_dir), "--model", str(tiny_model), "--top-k", "4", "--chunks", "4", "-q"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert sorted(Path(line.split("\t")[0]).name for line in lines) == sorted(MUSIC)
    for line in lines:
        file, duration, tags = line.split("\t")
        assert len(tags.split(", ")) == 4 and ":" in duration


def test_tag_json_has_the_documented_keys(tagged_json: list[dict], music_dir: Path) -> None:
    from focaltag.audio.decode import audio_info

    assert sorted(Path(obj["file"]).name for obj in tagged_json) == sorted(MUSIC)
    for obj in tagged_json:
        assert set(obj) == set(JSON_KEYS)
        assert list(obj["tags"]) == list(MOODTHEME_TAGS)
        assert all(0.0 <= p <= 1.0 for p in obj["tags"].values())
        assert len(obj["top"]) == 3 and obj["top"][0]["probability"] == max(obj["tags"].values())
        assert obj["decisions"] == {t: p >= 0.5 for t, p in obj["tags"].items()}
        assert obj["duration"] == pytest.approx(audio_info(obj["file"]).duration, abs=0.01)


@pytest.mark.parametrize("name", ["traveling_minstrels.low.mp3", "battle-epic.ogg", "nebula.ogg"])
def test_seek_reader_matches_whole_decode_on_real_files(music_dir: Path, name: str) -> None:
    """Decoding only the chunks (seek + margin) gives the samples a whole-file decode gives (MP3, OGG, 48 kHz)."""
    from focaltag.inference.chunking import iter_chunks, plan_file

    plan = plan_file(music_dir / name, sample_rate=16000, chunk_samples=73600, n_chunks=16)
    whole = dict(iter_chunks(plan, method="whole"))
    for i, chunk in iter_chunks(plan, method="seek"):
        np.testing.assert_allclose(chunk, whole[i], atol=1e-4, err_msg=f"{name} chunk {i}")


def test_corrupt_file_is_reported_and_the_rest_tagged(music_dir: Path, tiny_model: Path, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "mixed"
    folder.mkdir()
    (folder / "a.ogg").symlink_to(music_dir / "battle-epic.ogg")
    (folder / "b_broken.MP3").write_bytes(b"\x00garbage, not an mp3" * 100)  # upper-case extension is found
    (folder / "sub").mkdir()
    (folder / "sub" / "c.mp3").symlink_to(music_dir / "traveling_minstrels.low.mp3")
    (folder / "notes.txt").write_text("not audio, not picked up from a folder")
    rc = main(["tag", str(folder), "--model", str(tiny_model), "--format", "json", "--chunks", "4", "-q"])
    captured = capsys.readouterr()
    assert rc == 1
    data = json.loads(captured.out)
    assert [Path(o["file"]).name for o in data] == ["a.ogg", "b_broken.MP3", "c.mp3"]
    assert set(data[1]) == {"file", "error"} and "b_broken.MP3" in data[1]["error"]
    assert "tags" in data[0] and "tags" in data[2]
    assert "1 of 3 file(s) could not be tagged" in captured.err


@pytest.mark.parametrize(("argv", "message"), [
    (["--model", "/nonexistent/model.pt"], "model not found"),
    (["--model", "AUDIO"], "is an audio file, not a model"),
    (["--chunks", "0"], "--chunks must be 'auto' or a positive integer"),
    (["--chunks", "many"], "--chunks must be 'auto' or a positive integer"),
])
def test_usage_errors_exit_2(argv: list[str], message: str, music_dir: Path, tiny_model: Path,
                             capsys: pytest.CaptureFixture[str]) -> None:
    args = ["tag", str(music_dir / "battle-epic.ogg"), *[str(music_dir / "nebula.ogg") if a == "AUDIO" else a
                                                        for a in argv]]
    if "--model" not in argv:
        args += ["--model", str(tiny_model)]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]


def test_folder_without_audio_and_taggram_of_many_files_exit_2(tmp_path: Path, tiny_model: Path, music_dir: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.txt").write_text("x")
    assert main(["tag", str(tmp_path / "empty"), "--model", str(tiny_model)]) == 2
    assert "no audio files under" in capsys.readouterr().err
    assert main(["tag", str(music_dir), "--model", str(tiny_model), "--taggram", str(tmp_path / "t.png")]) == 2
    assert "--taggram plots one file" in capsys.readouterr().err


def test_taggram_png_for_one_file(music_dir: Path, tiny_model: Path, tmp_path: Path,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "taggram.png"
    assert main(["tag", str(music_dir / "battle-epic.ogg"), "--model", str(tiny_model), "--taggram", str(out),
                 "-q"]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    from PIL import Image

    width, height = Image.open(out).size
    assert width > 800 and height > 300


def test_onnx_export_and_runtime_agree_with_torch(music_dir: Path, tiny_model: Path, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str],
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("onnxruntime", reason="onnxruntime not installed (pip install 'focaltag[onnx]')")
    pytest.importorskip("onnxscript", reason="onnxscript not installed (pip install 'focaltag[onnx]')")
    monkeypatch.setenv("FOCALTAG_CACHE_DIR", str(tmp_path / "cache"))
    onnx_path = tmp_path / "tiny.onnx"
    assert main(["export", "--model", str(tiny_model), "--onnx", str(onnx_path), "-q"]) == 0
    assert "max |onnx - torch|" in capsys.readouterr().err
    track = str(music_dir / "battle-epic.ogg")
    outputs = {}
    for name, argv in (("torch", ["--model", str(tiny_model), "--precision", "fp32"]),
                       ("onnx file", ["--model", str(onnx_path), "--runtime", "onnx"]),
                       ("onnx from checkpoint", ["--model", str(tiny_model), "--runtime", "onnx"])):
        assert main(["tag", track, *argv, "--format", "json", "--chunks", "8", "-q"]) == 0
        outputs[name] = json.loads(capsys.readouterr().out)[0]["tags"]
    reference = np.array(list(outputs["torch"].values()))
    for name in ("onnx file", "onnx from checkpoint"):
        assert list(outputs[name]) == list(outputs["torch"])
        assert np.abs(np.array(list(outputs[name].values())) - reference).max() <= 1e-4, name
    assert len(list((tmp_path / "cache" / "onnx").glob("*.onnx"))) == 1  # exported once, kept for next time


def _reference_state_dict(keys_file: Path) -> dict[str, torch.Tensor]:
    """Random weights in the reference implementation's layout, built from the published key list."""
    gen = torch.Generator().manual_seed(0)
    sd: dict[str, torch.Tensor] = {}
    for line in keys_file.read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        name, shape_text, dtype = line.split()
        shape = () if shape_text == "scalar" else tuple(int(x) for x in shape_text.split("x"))
        if dtype == "int64":
            sd[name] = torch.zeros(shape, dtype=torch.int64)
        elif name.endswith("running_var"):
            sd[name] = torch.rand(shape, generator=gen) + 0.5
        else:
            sd[name] = 0.05 * torch.randn(shape, generator=gen)
    return sd


def test_import_reference_checkpoint(shared_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from focaltag.inference.tagger import Tagger
    from focaltag.models import load_model

    sd = _reference_state_dict(shared_dir / "reference" / "reference-checkpoint-keys.txt")
    ckpt = tmp_path / "best_model.pth"
    torch.save(sd, ckpt)
    out = tmp_path / "imported.pt"
    assert main(["import-reference", str(ckpt), "-o", str(out), "-q"]) == 0
    assert "56 tags" in capsys.readouterr().err
    model = load_model(out)
    assert model.pretrained_cfg.tag_names == MOODTHEME_TAGS
    assert torch.equal(model.state_dict()["fc.weight"], sd["dense_2.weight"])
    probs = Tagger(model, InferenceOptions(n_chunks=1)).tag(np.zeros(16000, dtype=np.float32), sr=16000).as_array()
    assert probs.shape == (56,) and np.isfinite(probs).all()

    tags = tmp_path / "tags.txt"
    tags.write_text("".join(f"genre---g{i:02d}\n" for i in range(56)))
    assert main(["import-reference", str(ckpt), "-o", str(out), "--tags", str(tags), "-q"]) == 0
    assert load_model(out).pretrained_cfg.tag_names[3] == "genre---g03"
    tags.write_text("a\nb\nc\n")
    assert main(["import-reference", str(ckpt), "-o", str(tmp_path / "x.pt"), "--tags", str(tags), "-q"]) == 2
    assert "56 outputs but 3 tag names" in capsys.readouterr().err


def test_predict_then_evaluate_round_trip(synth_dataset: Path, tiny_model: Path, tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    from focaltag.audio.cache import WaveformCache
    from focaltag.data.metadata import read_tracks
    from focaltag.inference.tagger import Tagger

    test_tsv = synth_dataset / "splits" / "split-0" / "autotagging_moodtheme-test.tsv"
    cache = tmp_path / "cache"
    assert main(["data", "prepare", "--tsv", str(test_tsv), "--audio-dir", str(synth_dataset / "audio"),
                 "--cache", str(cache), "--workers", "1", "-q"]) == 0
    pred = tmp_path / "pred.npy"
    assert main(["predict", "--model", str(tiny_model), "--tsv", str(test_tsv), "--cache", str(cache),
                 "-o", str(pred), "--chunks", "4", "--precision", "fp32", "-q"]) == 0
    capsys.readouterr()
    matrix = np.load(pred)
    ids = (tmp_path / "pred.tracks.txt").read_text().split()
    tracks = read_tracks(test_tsv)
    assert ids == [t.track_id for t in tracks]
    assert matrix.shape == (len(tracks), 56) and matrix.dtype == np.float32
    # row 0 equals tagging the cached waveform directly (same chunk positions, same models)
    wave = WaveformCache(cache).get(ids[0])
    direct = Tagger(tiny_model, InferenceOptions(n_chunks=4, precision="fp32")).tag(np.asarray(wave, dtype=np.float32), sr=16000).as_array()
    np.testing.assert_allclose(matrix[0], direct, atol=1e-5)

    assert main(["evaluate", "--tsv", str(test_tsv), "--predictions", str(pred), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    flat = json.dumps(report)
    assert "ROC-AUC-macro" in flat and "PR-AUC-macro" in flat
    roc = report.get("ROC-AUC-macro", report.get("metrics", {}).get("ROC-AUC-macro"))
    assert roc is None or (0.0 <= roc <= 1.0) or math.isnan(roc)
