"""Accuracy guard for int8 inference: int8 keeps float32's top-5 tags, and architectures without a recipe stay float32.

The paper ResNet (the one architecture with an int8 recipe) runs on the six shared recordings in float32 and in
int8 (onnxruntime static QDQ, calibrated on generated audio, close calls re-checked in float32): the paper's trained
weights when pulled from the catalogue, else the paper-size network with random weights and a spread output bias
(``bench/tag.py``'s stand-in; the trained weights cannot be fetched offline). The top-5 tags must be float32's
exactly, and int8's own error (tracks not re-checked) must stay under half the re-check margin. Won et al.'s
trained FCN and CRNN (``../shared/models/won2020``), for which int8 was dropped, must give float32's results
exactly under ``precision="int8"``.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnxruntime", reason="int8 needs onnxruntime (pip install 'focaltag[onnx]')")

from focaltag.inference.options import InferenceOptions  # noqa: E402
from focaltag.inference.tagger import Tagger  # noqa: E402
from focaltag.models.facts import runtime_facts  # noqa: E402

WON2020 = [("jamendo-fcn.pth", "tags-jamendo-top50.txt"), ("jamendo-crnn.pth", "tags-jamendo-top50.txt"),
           ("mtat-fcn.pth", "tags-mtat.txt"), ("mtat-crnn.pth", "tags-mtat.txt"),
           ("msd-fcn.pth", "tags-msd.txt"), ("msd-crnn.pth", "tags-msd.txt"),
           ("jamendo-musicnn.pth", "tags-jamendo-top50.txt"), ("mtat-musicnn.pth", "tags-mtat.txt")]
PAPER_RESNET = "usc-sail-2020-focal"


def _tags(path: Path) -> list[str]:
    return [t.strip() for t in path.read_text().splitlines() if t.strip()]


def _int8_guard(model: object, files: list[Path], n_chunks: int, record: object) -> None:
    arch = str(getattr(model, "model_name", ""))
    margin = runtime_facts(model).int8_recheck_margin
    assert runtime_facts(model).int8_recipe
    fp32 = {r.file: r for r in Tagger(model, InferenceOptions(n_chunks=n_chunks, precision="fp32", workers=0)).tag_many(files)}
    tagger = Tagger(model, InferenceOptions(n_chunks=n_chunks, precision="int8", workers=0))
    assert tagger.precision == "int8" and tagger.recheck_margin == margin
    int8 = list(tagger.tag_many(files))
    assert all(r.ok for r in int8) and len(int8) == len(files)
    raw = [r for r in int8 if r.precision == "int8"]
    diff = max((float(np.abs(r.as_array() - fp32[r.file].as_array()).max()) for r in raw), default=0.0)
    record("int8_max_abs_diff", diff)  # type: ignore[operator]
    record("int8_rechecked", tagger.n_rechecked)  # type: ignore[operator]
    logging.getLogger(__name__).warning("int8 %s: max |p - p_fp32| = %.2e, %d of %d tracks re-checked in fp32",
                                        arch, diff, tagger.n_rechecked, len(files))
    assert diff < margin / 2 + 1e-9, "int8 error too large for the re-check margin"
    for r in int8:
        assert [t for t, _ in r.top] == [t for t, _ in fp32[r.file].top], r.file


@pytest.mark.slow
@pytest.mark.parametrize(("name", "tags"), WON2020, ids=[w[0].split(".")[0] for w in WON2020])
def test_int8_keeps_architectures_without_a_recipe_float32(won2020_models_dir: Path, music_dir: Path, name: str,
                                                           tags: str) -> None:
    from focaltag.models import load_model

    model = load_model(won2020_models_dir / name, tag_names=_tags(won2020_models_dir / tags))
    assert not runtime_facts(model).int8_recipe
    files = sorted(p for p in music_dir.iterdir() if p.suffix in (".ogg", ".mp3"))[:2]
    tagger = Tagger(model, InferenceOptions(n_chunks=2, precision="int8", workers=0))
    assert tagger.precision == "fp32"
    got = list(tagger.tag_many(files))
    want = list(Tagger(model, InferenceOptions(n_chunks=2, precision="fp32", workers=0)).tag_many(files))
    for a, b in zip(got, want, strict=True):
        np.testing.assert_array_equal(a.as_array(), b.as_array())


@pytest.mark.slow
def test_int8_top5_equals_fp32_paper_resnet(music_dir: Path, record_property: object) -> None:
    from focaltag.models import create_model, load_model
    from focaltag.models import hub as catalogue

    if catalogue.is_pulled(PAPER_RESNET):
        model = load_model(catalogue.cached_path(PAPER_RESNET))
    else:  # the paper-size network, random weights; output bias spread as trained models' top-5 gaps
        import torch

        torch.manual_seed(0)
        model = create_model("short_chunk_resnet").eval()
        model.set_output_bias(-0.5 * torch.arange(model.n_tags, dtype=torch.float32))
    files = sorted(p for p in music_dir.iterdir() if p.suffix in (".ogg", ".mp3"))
    assert len(files) == 6
    _int8_guard(model, files, 16, record_property)


def test_int8_cache_and_auto_rule(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A small ResNet: int8 is made once (atomically, next to the float ONNX file) and ``auto`` picks it only on
    CPUs without fast bf16 (both branches forced, whatever this CPU is; a cache of its own, whatever ran before)."""
    import torch

    from focaltag.inference import precision as prec
    from focaltag.inference.onnx_model import onnx_cache_dir
    from focaltag.models import create_model

    monkeypatch.setenv("FOCALTAG_CACHE_DIR", str(tmp_path / "cache"))
    torch.manual_seed(0)
    model = create_model("short_chunk_resnet", width=8).eval()
    monkeypatch.setenv("FOCALTAG_CPU_BF16", "1")
    assert prec.resolve_model_precision("auto", "cpu", model) == "bf16"
    monkeypatch.setenv("FOCALTAG_CPU_BF16", "0")
    monkeypatch.setenv("FOCALTAG_CPU_VNNI", "1")  # the branch where auto picks int8
    assert prec.resolve_model_precision("auto", "cpu", model) == "int8"
    assert prec.resolve_model_precision("fp32", "cpu", model) == "fp32"
    assert onnx_cache_dir() == tmp_path / "cache" / "onnx"
    before = set(onnx_cache_dir().glob("*.onnx"))
    assert before == set()
    tagger = Tagger(model, InferenceOptions(precision="auto", workers=0))
    assert tagger.precision == "int8"
    files = sorted(set(onnx_cache_dir().glob("*.onnx")) - before)  # this model's float32 and int8 graphs
    assert len(files) == 2 and sum(f.name.endswith(".int8.onnx") for f in files) == 1
    assert not list(onnx_cache_dir().glob(".*tmp"))
    assert not list((tmp_path / "cache").glob(".export-*"))  # the exporter's scratch folder was removed
    stamp = {f: f.stat().st_mtime_ns for f in files}
    wave = np.random.default_rng(0).uniform(-0.5, 0.5, 16000 * 10).astype(np.float32)
    a = tagger.tag(wave, sr=16000)
    b = Tagger(model, InferenceOptions(precision="int8", workers=0)).tag(wave, sr=16000)  # from the cache: same files, same answer
    assert {f: f.stat().st_mtime_ns for f in files} == stamp
    assert set(onnx_cache_dir().glob("*.onnx")) - before == set(files)
    np.testing.assert_allclose(a.as_array(), b.as_array(), atol=1e-6)
    ref = Tagger(model, InferenceOptions(precision="fp32", workers=0)).tag(wave, sr=16000)
    assert float(np.abs(a.as_array() - ref.as_array()).max()) < 0.1
