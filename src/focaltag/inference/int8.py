"""int8 inference through onnxruntime's static QDQ quantization, for CPUs without fast bf16.

Why onnxruntime and not PyTorch's PT2E X86InductorQuantizer: onnxruntime already carries focaltag's ONNX path
(:mod:`focaltag.inference.onnx_model`), needs no compiler at run time (Inductor compiles for about a minute per
model and shape) and its CPU kernels (MLAS) pick int8 instructions by CPUID: AVX2 ``vpmaddubsw``, AVX512-VNNI and
AMX where present. Its arena allocator also keeps large activation buffers in the process, which torch eager on
glibc hands back to the kernel after every layer (``focaltag._resources``). Figures: README speed table and
``bench/tag.py``.

How a model becomes int8 (:func:`int8_member`):

1. the float32 model is exported once to ONNX (the graph of ``--runtime onnx``, log-mel front end included) and
   cached under ``onnx_cache_dir()`` keyed by a hash of its weights and the library versions;
2. it is calibrated on audio focaltag generates (:func:`focaltag.data.synth.render_tracks`, never a user's files)
   and quantized statically: convolution and dense (Gemm) weights int8 per output channel, activations uint8 per tensor,
   the STFT, the mel filterbank (a MatMul: quantizing the power spectrum's 1e-10..1e3 range to 8 bits moved
   FCN's probabilities by 0.55, against 0.013 without it) and recurrent layers float32; the result is written
   atomically next to the float ONNX file (``<key>.<recipe>.int8.onnx``);
3. an :class:`Int8Member` runs it, and runs the float32 ONNX graph of the same model for the tagger's close-call
   re-check (``precision="fp32"`` calls), so a track whose top-k or decisions hang on a gap under
   :data:`INT8_RECHECK_MARGIN` gets float32's answer.

Which architectures have a recipe and which ``auto`` quantizes: :data:`INT8_AUTO`.
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from focaltag.errors import ConfigError, ModelError, first_line
from focaltag.models.meta import ModelMeta, model_meta

__all__ = ["INT8_AUTO", "INT8_RECHECK_MARGIN", "CALIBRATION_TRACKS", "supports_int8", "int8_member",
           "Int8Member", "quantize_onnx"]

logger = logging.getLogger(__name__)

INT8_AUTO: dict[str, bool] = {"short_chunk_resnet": True}
"""Architectures (``model_name``) with an int8 recipe, and whether ``auto`` picks int8 for them (on CPUs without
fast bf16), chosen by measurement on the six shared recordings (README, "int8 accuracy" and speed rows). Won et
al.'s FCN and CRNN were tried and dropped: their first convolution, at full spectrogram resolution with one input
channel, is most of their compute and gains nothing from int8, and their int8 error put nearly every track inside
the re-check margin, so they run float32; so does Musicnn (its wide spectrogram-reading filters are its compute,
as FCN's)."""

INT8_RECHECK_MARGIN: dict[str, float] = {"short_chunk_resnet": 0.025}
"""Per architecture, the probability gap under which an int8 result is recomputed in float32: 2.5 times int8's
largest track-level error on the six shared recordings (paper ResNet, random weights with a spread output bias:
1.0e-2); ``tests/integration/test_int8.py`` asserts the bound and the top-5 equality."""

CALIBRATION_TRACKS = 4
"""Generated tracks (two chunks each) that calibrate the activation ranges."""

_CALIBRATION_SEED = 20240
_QUANT_VERSION = "qdq-minmax-perchannel-u8s8-convgemm-v1"  # part of the cache key: change it when the recipe changes


def supports_int8(model: Any) -> bool:
    """Whether ``model``'s architecture has a measured int8 recipe (:data:`INT8_AUTO`)."""
    return str(getattr(model, "model_name", "")) in INT8_AUTO


def _model_key(model: Any) -> str:
    """A hash of the weights, the architecture config and the library versions: the cache key of its ONNX files."""
    import onnxruntime
    import torch

    from focaltag._version import __version__

    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    cfg = getattr(model, "pretrained_cfg", None)
    digest.update(repr(cfg).encode())
    digest.update(f"torch={torch.__version__};ort={onnxruntime.__version__};focaltag={__version__}".encode())
    return digest.hexdigest()[:32]


def calibration_chunks(meta: ModelMeta, n_tracks: int = CALIBRATION_TRACKS) -> np.ndarray:
    """(2 * n_tracks, chunk_samples) float32 chunks of generated audio at the model's rate."""
    from focaltag.audio.chunks import chunk_starts, pad_to
    from focaltag.data.synth import render_tracks

    seconds = max(30.0, 2.2 * meta.chunk_samples / meta.sample_rate)
    tracks = render_tracks(n_tracks, seed=_CALIBRATION_SEED, sample_rate=meta.sample_rate, duration=seconds)
    return np.stack([pad_to(w[s:s + meta.chunk_samples], meta.chunk_samples)
                     for w in tracks for s in chunk_starts(len(w), meta.chunk_samples, 2)]).astype(np.float32)


def quantize_onnx(float_path: Path, out_path: Path, calibration: np.ndarray) -> Path:
    """Write the static-QDQ int8 version of ``float_path`` to ``out_path`` (atomically), calibrated on the chunks."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    from focaltag.inference.onnx_model import INPUT_NAME

    class _Reader(CalibrationDataReader):  # type: ignore[misc]
        def __init__(self) -> None:
            self.batches = iter([{INPUT_NAME: calibration[i:i + 2]} for i in range(0, len(calibration), 2)])

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.batches, None)

    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_name(f".{out_path.name}.{os.getpid()}.tmp")
    root = logging.getLogger()
    level = root.level
    try:
        root.setLevel(logging.ERROR)  # the quantizer's advice on pre-processing is not for a focaltag user
        quantize_static(str(float_path), str(tmp), _Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        op_types_to_quantize=["Conv", "Gemm"])
        os.replace(tmp, out_path)
    except Exception as err:  # the quantizer fails in many types; one line with the cause
        raise ModelError(f"int8 quantization of {float_path.name} failed "
                         f"({type(err).__name__}: {first_line(err, limit=200, default='')})"
                         ) from None
    finally:
        root.setLevel(level)
        tmp.unlink(missing_ok=True)
    return out_path


def _onnx_files(model: Any, meta: ModelMeta) -> tuple[Path, Path]:
    """The cached float32 and int8 ONNX files of ``model``, made on first use."""
    from focaltag.inference.onnx_model import onnx_cache_dir, write_onnx

    key = _model_key(model)
    folder = onnx_cache_dir()
    float_path = folder / f"{key}.onnx"
    int8_path = folder / f"{key}.{_QUANT_VERSION}.int8.onnx"
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ModelError(f"int8 needs a writable model cache ({folder}: {err.strerror or err}); set "
                         "FOCALTAG_CACHE_DIR to a writable folder or use --precision fp32") from None
    if not float_path.is_file():
        logger.info("exporting the model to ONNX once (cached in %s)", folder)
        write_onnx([model], [1.0], meta, float_path)
    if not int8_path.is_file():
        logger.info("quantizing the model to int8 once, calibrated on generated audio (cached in %s)", folder)
        quantize_onnx(float_path, int8_path, calibration_chunks(meta))
    return float_path, int8_path


class Int8Member:
    """An int8 onnxruntime session behaving like a tagger member, with its float32 graph for re-checks.

    ``member(batch)`` runs int8; ``member(batch, precision="fp32")`` runs the float32 ONNX graph of the same model
    (the close-call re-check; within ~1e-6 of torch float32).
    """

    precision = "int8"

    def __init__(self, model: Any, *, name: str = "model", threads: int | None = None) -> None:
        from focaltag.inference.onnx_model import _session, require_onnx

        require_onnx()
        if not supports_int8(model):
            raise ConfigError(f"precision int8: {getattr(model, 'model_name', type(model).__name__)} has no int8 "
                              f"recipe (int8 runs {', '.join(INT8_AUTO)}); use --precision auto or fp32")
        meta = model_meta(model)
        self.name = name
        self.tag_names, self.sample_rate, self.chunk_samples = meta.tag_names, meta.sample_rate, meta.chunk_samples
        self.device = "cpu"
        self.recheck_margin = INT8_RECHECK_MARGIN[str(getattr(model, "model_name", ""))]
        float_path, int8_path = _onnx_files(model.cpu().eval(), meta)
        self._int8 = _session(str(int8_path), threads)
        self._float_path, self._threads = float_path, threads
        self._float: Any = None  # opened on the first re-check

    def __call__(self, batch: np.ndarray, *, precision: str | None = None) -> np.ndarray:
        from focaltag.inference.onnx_model import INPUT_NAME, OUTPUT_NAME, _session

        batch = np.ascontiguousarray(batch, dtype=np.float32)
        session = self._int8
        if precision == "fp32":
            if self._float is None:
                self._float = _session(str(self._float_path), self._threads)
            session = self._float
        return session.run([OUTPUT_NAME], {INPUT_NAME: batch})[0]


def int8_member(model: Any, *, name: str = "model", threads: int | None = None) -> Int8Member:
    """:class:`Int8Member` of a loaded torch model (exports and quantizes it once, then reads the cache)."""
    return Int8Member(model, name=name, threads=threads)
