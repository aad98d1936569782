"""Accuracy guard for bf16 inference: trained catalogue models give float32's top-5 tags on the six recordings.

With the spectrogram-reading layers computed to float32 grade (``precision.FP32_MODULES``) bf16 moves probabilities
by up to ~1.9e-3; the tagger re-checks in float32 only the tracks whose top-5 order hangs on a gap under
the architecture's ``bf16_recheck_margin`` (twice the error bound), so the top-5 tags must equal float32's exactly, and the error must
stay under half the margin for that to hold.
``bench/tag.py`` reports the same figures with the speed.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest

from focaltag.cli import main
from focaltag.inference.tagger import Tagger
from focaltag.models.facts import runtime_facts

# (file in ../shared/models/won2020, tag list, chunks per track: FCN's 29 s chunks make 8 cover most tracks)
WON2020 = [("jamendo-fcn.pth", "tags-jamendo-top50.txt", 8), ("jamendo-crnn.pth", "tags-jamendo-top50.txt", 8),
           ("jamendo-musicnn.pth", "tags-jamendo-top50.txt", 16), ("mtat-musicnn.pth", "tags-mtat.txt", 16)]
PAPER_RESNET = "usc-sail-2020-focal"  # the paper's trained short-chunk ResNet, when pulled from the catalogue


def _tags(path: Path) -> list[str]:
    return [t.strip() for t in path.read_text().splitlines() if t.strip()]


def _top5_guard(model: object, files: list[Path], n_chunks: int, record: object) -> None:
    fp32 = {r.file: r for r in Tagger(model, n_chunks=n_chunks, precision="fp32").tag_many(files)}
    tagger = Tagger(model, n_chunks=n_chunks, precision="bf16")
    bf16 = list(tagger.tag_many(files))
    assert all(r.ok for r in bf16) and len(bf16) == len(files) == len(fp32)
    raw = [r for r in bf16 if r.precision == "bf16"]  # not re-checked: bf16 probabilities
    diff = max((float(np.abs(r.as_array() - fp32[r.file].as_array()).max()) for r in raw), default=0.0)
    record("bf16_max_abs_diff", diff)  # type: ignore[operator]
    record("bf16_rechecked", tagger.n_rechecked)  # type: ignore[operator]
    logging.getLogger(__name__).warning("bf16: max |p - p_fp32| = %.2e, %d of %d tracks re-checked in fp32",
                                        diff, tagger.n_rechecked, len(files))
    assert diff < runtime_facts(model).bf16_recheck_margin / 2, \
        "bf16 error too large for the re-check margin to guarantee top-5"
    for r in bf16:
        assert [t for t, _ in r.top] == [t for t, _ in fp32[r.file].top], r.file


@pytest.mark.slow
@pytest.mark.parametrize(("name", "tags", "n_chunks"), WON2020, ids=[w[0].split(".")[0] for w in WON2020])
def test_bf16_top5_equals_fp32_won2020(won2020_models_dir: Path, music_dir: Path, name: str, tags: str,
                                       n_chunks: int, record_property: object) -> None:
    from focaltag.models import load_model

    model = load_model(won2020_models_dir / name, tag_names=_tags(won2020_models_dir / tags))
    files = sorted(p for p in music_dir.iterdir() if p.suffix in (".ogg", ".mp3"))
    assert len(files) == 6
    _top5_guard(model, files, n_chunks, record_property)


@pytest.mark.slow
def test_bf16_top5_equals_fp32_paper_resnet(music_dir: Path, record_property: object) -> None:
    from focaltag.models import hub as catalogue

    if not catalogue.is_pulled(PAPER_RESNET):
        pytest.skip(f"the paper's trained ResNet weights are not at hand ({catalogue.how_to_get(PAPER_RESNET)})")
    from focaltag.models import load_model

    files = sorted(p for p in music_dir.iterdir() if p.suffix in (".ogg", ".mp3"))
    _top5_guard(load_model(catalogue.cached_path(PAPER_RESNET)), files, 16, record_property)


def test_cli_precision_in_first_info_line_and_json(music_dir: Path, tmp_path: Path, cpu_bf16: bool,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """On both branches of the CPU rule: ``auto`` is bf16 with native bf16, else what the rule gives without it
    (int8 for this ResNet where onnxruntime is installed, or float32); the first info line and the JSON say which."""
    import torch

    from focaltag.inference.precision import resolve_model_precision
    from focaltag.models import create_model, save_model

    torch.manual_seed(0)
    model = create_model("short_chunk_resnet", width=8)
    ckpt = save_model(model, tmp_path / "tiny.pt")
    track = str(music_dir / "battle-epic.ogg")
    auto = resolve_model_precision("auto", "cpu", model)
    assert auto in (("bf16",) if cpu_bf16 else ("int8", "fp32"))
    outputs = {}
    for precision, expected in (("fp32", "fp32"), ("auto", auto)):
        assert main(["tag", track, "-m", str(ckpt), "--format", "json", "--chunks", "2",
                     "--precision", precision]) == 0
        out, err = capsys.readouterr()
        (obj,) = json.loads(out)
        first = next(line for line in err.splitlines() if line.startswith("tagging "))  # after model loading
        assert first == f"tagging 1 file(s) with 1 model(s), 2 chunks per track, precision {expected}"
        assert obj["precision"] in (expected, "fp32")  # a close call is re-checked and reported as fp32
        # without native bf16 the paper ResNet runs through onnxruntime (int8 with VNNI, else float32)
        assert obj["runtime"] == ("onnxruntime" if precision == "auto" and not cpu_bf16 else "torch")
        outputs[precision] = obj
    assert outputs["fp32"]["precision"] == "fp32"
