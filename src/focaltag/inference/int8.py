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
2. it is calibrated on audio focaltag generates (:mod:`focaltag.inference.calibration`, never a user's files)
   and quantized statically: convolution and dense (Gemm) weights int8 per output channel, activations uint8 per tensor,
   the STFT, the mel filterbank (a MatMul: quantizing the power spectrum's 1e-10..1e3 range to 8 bits moved
   FCN's probabilities by 0.55, against 0.013 without it) and recurrent layers float32; the result is written
   atomically next to the float ONNX file (``<key>.<recipe>.int8.onnx``);
3. an :class:`Int8Member` runs it, and runs the float32 ONNX graph of the same model for the tagger's close-call
   re-check (``precision="fp32"`` calls), so a track whose top-k or decisions hang on a gap under
   the architecture's ``int8_recheck_margin`` gets float32's answer.

Which architectures have a recipe, which ``auto`` quantizes and their re-check margins are facts of each
architecture (:class:`focaltag.models.facts.RuntimeFacts`: ``int8_recipe``, ``int8_auto``, ``int8_recheck_margin``).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from focaltag.errors import ConfigError, ModelError, first_line
from focaltag.models.facts import runtime_facts
from focaltag.models.meta import ModelMeta, model_meta

__all__ = ["supports_int8", "int8_member", "Int8Member", "quantize_onnx"]

logger = logging.getLogger(__name__)

_QUANT_VERSION = "qdq-minmax-perchannel-u8s8-convgemm-v2"  # part of the cache key: change it when the recipe changes


def supports_int8(model: Any) -> bool:
    """Whether ``model``'s architecture has a measured int8 recipe (``RuntimeFacts.int8_recipe``)."""
    return runtime_facts(model).int8_recipe


def quantize_onnx(float_path: Path, out_path: Path, calibration: np.ndarray) -> Path:
    """Write the static-QDQ int8 version of ``float_path`` to ``out_path`` (atomically), calibrated on the chunks."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    from focaltag.inference.onnx_model import INPUT_NAME

    class _Reader(CalibrationDataReader):
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
    from focaltag.inference.calibration import calibration_chunks
    from focaltag.inference.onnx_model import model_onnx

    float_path = model_onnx(model, purpose="int8")
    int8_path = float_path.with_name(f"{float_path.stem}.{_QUANT_VERSION}.int8.onnx")
    if not int8_path.is_file():
        logger.info("quantizing the model to int8 once, calibrated on generated audio (cached in %s)",
                    int8_path.parent)
        quantize_onnx(float_path, int8_path, calibration_chunks(meta))
    return float_path, int8_path


class Int8Member:
    """An int8 onnxruntime session behaving like a tagger member, with its float32 graph for re-checks.

    ``member.run(batch)`` runs int8; ``member.run(batch, precision="fp32")`` runs the float32 ONNX graph of the
    same model (the close-call re-check; within ~1e-6 of torch float32). Both graphs also give the embedding.
    """

    precision = "int8"

    def __init__(self, model: Any, *, name: str = "model", threads: int | None = None) -> None:
        from focaltag.inference.onnx_model import graph_embedding_size, open_session, require_onnx
        from focaltag.inference.precision import PrecisionPlan

        require_onnx()
        if not supports_int8(model):
            raise ConfigError(f"precision int8: {getattr(model, 'model_name', type(model).__name__)} has no int8 "
                              "recipe; use --precision auto or fp32")
        meta = model_meta(model)
        self.name = name
        self.tag_names, self.sample_rate, self.chunk_samples = meta.tag_names, meta.sample_rate, meta.chunk_samples
        self.device = "cpu"
        facts = runtime_facts(model)
        self.plan = PrecisionPlan("int8", "onnxruntime", recheck_margin=facts.int8_recheck_margin)
        self.recheck_margin = self.plan.recheck_margin
        float_path, int8_path = _onnx_files(model.cpu().eval(), meta)
        self._int8 = open_session(str(int8_path), threads)
        self.embedding_size = graph_embedding_size(self._int8)
        self._float_path, self._threads = float_path, threads
        self._float: Any = None  # opened on the first re-check

    def run(self, batch: np.ndarray, *, precision: str | None = None,
            embeddings: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
        from focaltag.inference.onnx_model import open_session, run_graph

        session = self._int8
        if precision == "fp32":
            if self._float is None:
                self._float = open_session(str(self._float_path), self._threads)
            session = self._float
        return run_graph(session, batch, embeddings=embeddings, name=self.name)

    def __call__(self, batch: np.ndarray, *, precision: str | None = None) -> np.ndarray:
        return self.run(batch, precision=precision)[0]


def int8_member(model: Any, *, name: str = "model", threads: int | None = None) -> Int8Member:
    """:class:`Int8Member` of a loaded torch model (exports and quantizes it once, then reads the cache)."""
    return Int8Member(model, name=name, threads=threads)
