"""What ``--precision auto`` runs, per architecture and CPU kind (issue 33): every branch on any machine.

The CPU kind is forced with ``FOCALTAG_CPU_BF16`` and ``FOCALTAG_CPU_VNNI``, so this machine's own flags never
decide which branch a test sees.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import focaltag
from focaltag.errors import ConfigError
from focaltag.inference.precision import resolve_engine, resolve_model_precision

ARCHS = {"short_chunk_resnet": {"n_tags": 56, "width": 8}, "fcn": {"n_tags": 50}, "crnn": {"n_tags": 50},
         "musicnn": {"n_tags": 50}}

# (native bf16, VNNI) -> architecture -> (precision, engine); the measurements behind each are in the README
EXPECTED = {
    (True, True): {"short_chunk_resnet": ("bf16", "torch"), "fcn": ("bf16", "torch"), "crnn": ("bf16", "torch"),
                   "musicnn": ("fp32", "torch")},
    (False, True): {"short_chunk_resnet": ("int8", "onnxruntime"), "fcn": ("fp32", "onnxruntime"),
                    "crnn": ("fp32", "onnxruntime"), "musicnn": ("fp32", "torch")},
    (False, False): {"short_chunk_resnet": ("fp32", "onnxruntime"), "fcn": ("fp32", "onnxruntime"),
                     "crnn": ("fp32", "onnxruntime"), "musicnn": ("fp32", "torch")},
}


@pytest.mark.parametrize(("bf16", "vnni"), list(EXPECTED))
def test_auto_picks_the_measured_engine_for_each_architecture(monkeypatch: pytest.MonkeyPatch, bf16: bool,
                                                              vnni: bool) -> None:
    monkeypatch.setenv("FOCALTAG_CPU_BF16", "1" if bf16 else "0")
    monkeypatch.setenv("FOCALTAG_CPU_VNNI", "1" if vnni else "0")
    for arch, kwargs in ARCHS.items():
        model = focaltag.create_model(arch, **kwargs)
        precision = resolve_model_precision("auto", "cpu", model)
        assert (precision, resolve_engine("auto", precision, "cpu", model)) == EXPECTED[(bf16, vnni)][arch], arch
        # asked for explicitly, float32 stays eager torch: bit-identical to a plain run
        assert resolve_engine("fp32", resolve_model_precision("fp32", "cpu", model), "cpu", model) == "torch"


def test_a_bad_vnni_override_is_one_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    from focaltag.precision import cpu_has_int8_dot

    monkeypatch.setenv("FOCALTAG_CPU_VNNI", "maybe")
    with pytest.raises(ConfigError, match="FOCALTAG_CPU_VNNI must be 1"):
        cpu_has_int8_dot()


@pytest.mark.slow
def test_onnxruntime_float32_gives_torch_float32_answers(monkeypatch: pytest.MonkeyPatch, music_dir: object,
                                                         tmp_path: object) -> None:
    """On an AVX2-only CPU (forced) FCN runs through onnxruntime; results equal eager float32's, and say so."""
    from pathlib import Path

    from focaltag import InferenceOptions, Tagger
    from focaltag.outputs.writers import result_to_dict

    monkeypatch.setenv("FOCALTAG_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("FOCALTAG_CPU_BF16", "0")
    monkeypatch.setenv("FOCALTAG_CPU_VNNI", "0")
    torch.manual_seed(0)
    model = focaltag.create_model("fcn", n_tags=50).eval()
    song = Path(str(music_dir)) / "battle-epic.ogg"
    fast = Tagger(model, InferenceOptions(n_chunks=4, embeddings=True))
    exact = Tagger(model, InferenceOptions(n_chunks=4, embeddings=True, precision="fp32"))
    a, b = fast.tag(song), exact.tag(song)
    assert (a.runtime, b.runtime) == ("onnxruntime", "torch") and a.precision == b.precision == "fp32"
    np.testing.assert_allclose(a.as_array(), b.as_array(), atol=1e-5)
    assert a.embedding is not None and b.embedding is not None
    np.testing.assert_allclose(a.embedding, b.embedding, rtol=1e-4, atol=1e-5)
    assert result_to_dict(a)["runtime"] == "onnxruntime"
