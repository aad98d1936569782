"""The ONNX graph of focaltag models and the onnxruntime path of the tagger (``--runtime onnx``).

The graph is the whole model, log-mel front end included: input ``waveform`` float32 (batch, chunk_samples) at
the model's sample rate, outputs ``probabilities`` float32 (batch, n_tags) after the sigmoid and ``embedding``
float32 (batch, D), the layer before the classifier (:mod:`focaltag.models.facts`); an ensemble exports as one
graph computing the weighted mean of its members' probabilities and the concatenation of their embeddings.
Files exported before focaltag 0.3 have no ``embedding`` output: they still tag, without embeddings. torch.onnx's dynamo exporter
(needs onnxscript) writes the STFT at opset 18. The model's tag names, sample rate and chunk length are stored
in the ONNX metadata (``focaltag.tag_names`` as JSON, ``focaltag.sample_rate``, ``focaltag.chunk_samples``),
so an ``.onnx`` file alone is enough to tag with ``--runtime onnx``.

This module works on torch models that are already loaded; resolving model specs (run folders, ensemble
folders) is :mod:`focaltag.models.resolve`'s job, the mean is :class:`focaltag.models.ensemble.MeanEnsemble`,
and ``focaltag.inference.export`` combines them. So the member loader can open ONNX members without importing
the exporter, and the exporter imports the loader: the dependency points one way.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, TypedDict

import numpy as np

from focaltag._extras import install_hint, require_extra
from focaltag.errors import CheckpointError, ConfigError, ModelError, first_line
from focaltag.models.meta import ModelMeta, model_meta

__all__ = ["OnnxMember", "require_onnx", "write_onnx", "cached_onnx", "onnx_cache_dir", "open_session", "ONNX_OPSET",
           "GRAPH_FORMAT", "INSTALL_HINT", "INPUT_NAME", "OUTPUT_NAME", "EMBEDDING_NAME"]

logger = logging.getLogger(__name__)

ONNX_OPSET = 18  # the first opset with an STFT the exporter can emit
INPUT_NAME, OUTPUT_NAME, EMBEDDING_NAME = "waveform", "probabilities", "embedding"
GRAPH_FORMAT = "probabilities+embedding-v1"
"""Part of every cache key of exported graphs: change it when the graph's outputs change."""
INSTALL_HINT = install_hint("onnx")


def require_onnx(*, export: bool = False) -> Any:
    """Import onnxruntime (and onnx/onnxscript for export) or raise one line saying how to install them.

    onnxruntime's telemetry is switched off before its first import (``ORT_DISABLE_TELEMETRY=1``, unless the user
    set that variable): otherwise importing it writes a session file ``.ses`` into ``$TMPDIR`` (``focaltag
    serve``'s upload folder, left behind) and a device identifier under the home folder, and focaltag runs offline.
    """
    os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
    names = ("onnxruntime", "onnx", "onnxscript") if export else ("onnxruntime",)
    require_extra("onnx", names, what=f"the ONNX {'export' if export else 'runtime'}")
    import onnxruntime

    return onnxruntime


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """The exporter logs torchvision notes and deprecation warnings that say nothing to a focaltag user."""
    loggers = [logging.getLogger(n) for n in ("torch.onnx", "torch.onnx._internal.exporter._registration",
                                               "onnxscript")]
    levels = [lg.level for lg in loggers]
    try:
        for lg in loggers:
            lg.setLevel(logging.ERROR)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


@contextlib.contextmanager
def _private_exporter_scratch() -> Iterator[None]:
    """The exporter's scratch folder in a private temporary folder under the model cache, removed afterwards.

    The exporter's decompositions create torch's inductor cache folder (``$TMPDIR/torchinductor_<user>``) unless
    ``TORCHINDUCTOR_CACHE_DIR`` names one; in ``focaltag serve`` that is the upload folder, so it would be left
    there. A ``TORCHINDUCTOR_CACHE_DIR`` the user set is kept.
    """
    import tempfile

    if "TORCHINDUCTOR_CACHE_DIR" in os.environ:
        yield
        return
    from focaltag._cache import cache_root

    parent: Path | None = cache_root()
    try:
        cache_root().mkdir(parents=True, exist_ok=True)
    except OSError:
        parent = None  # an unwritable cache: the system's temporary folder, still removed
    with tempfile.TemporaryDirectory(prefix=".export-", dir=parent) as scratch:
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = scratch
        try:
            yield
        finally:
            os.environ.pop("TORCHINDUCTOR_CACHE_DIR", None)


def _to_proto(models: Sequence[Any], weights: Sequence[float], meta: ModelMeta) -> Any:
    """Export ``models`` (already in eval mode, on CPU) as one ONNX ModelProto with focaltag metadata."""
    require_onnx(export=True)
    import onnx
    import torch

    from focaltag.models.ensemble import MeanEnsemble, ProbabilitiesAndEmbedding

    module = ProbabilitiesAndEmbedding(MeanEnsemble(models, weights, output="probabilities")).eval()
    example = torch.zeros(2, meta.chunk_samples)
    batch = torch.export.Dim("batch", min=1, max=65536)
    try:
        with _quiet_exporter(), _private_exporter_scratch(), torch.no_grad():
            program = torch.onnx.export(module, (example,), dynamo=True, dynamic_shapes=({0: batch},),
                                        input_names=[INPUT_NAME], output_names=[OUTPUT_NAME, EMBEDDING_NAME],
                                        opset_version=ONNX_OPSET, verbose=False)
    except Exception as err:  # exporter failures come as many types; one line with the cause
        raise ModelError(f"ONNX export failed ({type(err).__name__}: {first_line(err, limit=200)})") from None
    if program is None:  # torch.onnx.export gives a program with dynamo=True; None would be a torch change
        raise ModelError("ONNX export gave no program; this torch version's exporter is not supported")
    proto = program.model_proto
    onnx.helper.set_model_props(proto, {
        "focaltag.tag_names": json.dumps(list(meta.tag_names)),
        "focaltag.sample_rate": str(meta.sample_rate),
        "focaltag.chunk_samples": str(meta.chunk_samples),
        "focaltag.output": "sigmoid probabilities, weighted mean over members; embedding, members concatenated",
    })
    return proto


def open_session(model: bytes | str, threads: int | None = None) -> Any:
    """An onnxruntime CPU session of a graph (bytes or a file path) with focaltag's session settings."""
    ort = require_onnx()
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    # idle threads sleep instead of spinning: the decoding thread (and other processes) get the cores
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if threads:
        options.intra_op_num_threads = threads
    return ort.InferenceSession(model, sess_options=options, providers=["CPUExecutionProvider"])


class OnnxMember:
    """An onnxruntime session behaving like a tagger member (chunks -> probabilities and embeddings), in float32."""

    precision = "fp32"

    def __init__(self, session: Any, meta: ModelMeta, *, name: str = "onnx") -> None:
        from focaltag.inference.precision import PrecisionPlan

        self.session, self.name = session, name
        self.tag_names, self.sample_rate, self.chunk_samples = meta.tag_names, meta.sample_rate, meta.chunk_samples
        self.plan = PrecisionPlan("fp32", "onnxruntime")
        self.embedding_size = graph_embedding_size(session)
        self.device = "cpu"

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> OnnxMember:
        """Open an ``.onnx`` file written by :func:`export_onnx`."""
        path = Path(path)
        if not path.is_file():
            raise CheckpointError(f"ONNX model not found: {path}")
        try:
            session = open_session(str(path))
        except ConfigError:
            raise
        except Exception as err:
            raise CheckpointError(f"{path}: not a loadable ONNX model ({first_line(err, limit=160)})") from None
        props = session.get_modelmeta().custom_metadata_map
        try:
            meta = ModelMeta(tuple(json.loads(props["focaltag.tag_names"])), int(props["focaltag.sample_rate"]),
                             int(props["focaltag.chunk_samples"]))
        except (KeyError, ValueError):
            raise CheckpointError(f"{path}: no focaltag metadata (tag names, sample rate); export it with "
                                  "'focaltag export --model M --onnx OUT.onnx'") from None
        return cls(session, meta, name=str(path))

    @classmethod
    def from_torch(cls, model: Any, *, name: str = "model") -> OnnxMember:
        """Export a torch model in memory and open it in onnxruntime (takes a few seconds)."""
        meta = model_meta(model)
        proto = _to_proto([model.eval().cpu()], [1.0], meta)
        return cls(open_session(proto.SerializeToString()), meta, name=name)

    @classmethod
    def from_model(cls, model: Any, *, name: str = "model", threads: int | None = None) -> OnnxMember:
        """A loaded torch model run by onnxruntime in float32, exported once into the ONNX cache."""
        return cls(open_session(str(model_onnx(model)), threads), model_meta(model), name=name)

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike[str]) -> OnnxMember:
        """Open a torch checkpoint (file or run dir) in onnxruntime, exporting it once into the ONNX cache."""
        cached = cached_onnx(path)
        if cached is not None:
            return cls.from_file(cached)
        from focaltag.models import load_checkpoint

        return cls.from_torch(load_checkpoint(path), name=str(path))

    def run(self, batch: np.ndarray, *, precision: str | None = None,
            embeddings: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
        """Probabilities (and embeddings) of a batch; ``precision`` is accepted for the member protocol."""
        return run_graph(self.session, batch, embeddings=embeddings, name=self.name)

    def __call__(self, batch: np.ndarray, *, precision: str | None = None) -> np.ndarray:
        """Probabilities of a batch."""
        return self.run(batch)[0]


def graph_embedding_size(session: Any) -> int | None:
    """The embedding length of an exported graph, or None for a graph exported without that output."""
    for output in session.get_outputs():
        if output.name == EMBEDDING_NAME:
            size = output.shape[-1]
            return int(size) if isinstance(size, int) else None
    return None


def run_graph(session: Any, batch: np.ndarray, *, embeddings: bool = False,
              name: str = "model") -> tuple[np.ndarray, np.ndarray | None]:
    """Run an exported graph: probabilities, and the embedding output only when asked for."""
    batch = np.ascontiguousarray(batch, dtype=np.float32)
    if not embeddings:
        return session.run([OUTPUT_NAME], {INPUT_NAME: batch})[0], None
    if graph_embedding_size(session) is None:
        raise ModelError(f"{name} was exported without an embedding output (before focaltag 0.3); export it "
                         "again with 'focaltag export', or tag without embeddings")
    probabilities, embedding = session.run([OUTPUT_NAME, EMBEDDING_NAME], {INPUT_NAME: batch})
    return probabilities, embedding


def onnx_cache_dir() -> Path:
    """Where exported checkpoints are kept: ``$FOCALTAG_CACHE_DIR/onnx``, else ``$XDG_CACHE_HOME/focaltag/onnx``
    (``~/.cache/focaltag/onnx``)."""
    from focaltag._cache import cache_root

    return cache_root() / "onnx"


def _model_key(model: Any) -> str:
    """A hash of the weights, the architecture config and the library versions: the cache key of its ONNX files."""
    import hashlib

    import onnxruntime
    import torch

    from focaltag._version import __version__

    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    digest.update(repr(getattr(model, "pretrained_cfg", None)).encode())
    digest.update(f"torch={torch.__version__};ort={onnxruntime.__version__};focaltag={__version__};"
                  f"{GRAPH_FORMAT}".encode())
    return digest.hexdigest()[:32]


def model_onnx(model: Any, *, purpose: str = "onnxruntime float32") -> Path:
    """The float32 ONNX graph of a loaded torch model, exported once and cached by a hash of its weights."""
    require_onnx(export=True)
    folder = onnx_cache_dir()
    path = folder / f"{_model_key(model)}.onnx"
    if path.is_file():
        return path
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ModelError(f"{purpose} needs a writable model cache ({folder}: {err.strerror or err}); set "
                         "FOCALTAG_CACHE_DIR to a writable folder or use --precision fp32") from None
    logger.info("exporting the model to ONNX once for %s (cached in %s)", purpose, folder)
    model = model.cpu().eval()
    write_onnx([model], [1.0], model_meta(model), path)
    return path


def cached_onnx(path: str | os.PathLike[str]) -> Path | None:
    """The ONNX export of checkpoint ``path``, made on first use and keyed by the checkpoint's sha256 (and the
    torch / focaltag versions); ``None`` when the cache folder cannot be written (export in memory instead)."""
    import hashlib

    import torch

    from focaltag._version import __version__
    from focaltag.models import resolve_checkpoint_path

    file = resolve_checkpoint_path(path)
    digest = hashlib.sha256()
    with file.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    digest.update(f"torch={torch.__version__};focaltag={__version__};opset={ONNX_OPSET};{GRAPH_FORMAT}".encode())
    target = onnx_cache_dir() / f"{digest.hexdigest()[:32]}.onnx"
    if target.is_file():
        logger.debug("using cached ONNX export %s", target)
        return target
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        logger.warning("cannot create the ONNX cache %s (%s); exporting in memory", target.parent, err)
        return None
    logger.info("exporting %s to ONNX once (cached in %s)", file, target.parent)
    from focaltag.models import load_checkpoint

    model = load_checkpoint(file)
    write_onnx([model], [1.0], model_meta(model), target)
    return target


class ExportInfo(TypedDict):
    """What an export wrote: the file, its tags, members, opset and the largest difference from torch."""

    path: str
    n_tags: int
    members: int
    opset: int
    max_abs_diff: float | None


def write_onnx(models: Sequence[Any], weights: Sequence[float], meta: ModelMeta, path: str | os.PathLike[str], *,
               check: bool = True, atol: float = 1e-4, seed: int = 0) -> ExportInfo:
    """Export loaded torch ``models`` (weighted mean of their probabilities) to ``path``.

    With ``check`` the ONNX output on a random batch of 3 chunks is compared to torch and a difference above
    ``atol`` raises ModelError (the file is not kept). Returns ``{"path", "n_tags", "members", "opset",
    "max_abs_diff"}``.
    """
    require_onnx(export=True)  # before ``import onnx``: a missing extra is one line naming the pip command
    import onnx
    import torch

    from focaltag._io import atomic_write

    models = [m.cpu().eval() for m in models]
    proto = _to_proto(models, [float(w) for w in weights], meta)
    data = proto.SerializeToString()
    result: ExportInfo = {"path": str(path), "n_tags": len(meta.tag_names), "members": len(models),
                          "opset": ONNX_OPSET, "max_abs_diff": None}
    if check:
        rng = np.random.default_rng(seed)
        batch = (0.1 * rng.standard_normal((3, meta.chunk_samples))).astype(np.float32)
        got = open_session(data).run([OUTPUT_NAME], {INPUT_NAME: batch})[0]
        with torch.inference_mode():
            from focaltag.models.ensemble import MeanEnsemble

            want = MeanEnsemble(models, weights, output="probabilities").eval()(torch.from_numpy(batch)).numpy()
        diff = float(np.abs(got - want).max())
        result["max_abs_diff"] = diff
        if not diff <= atol:
            raise ModelError(f"ONNX output differs from torch by {diff:.2e} (> atol={atol:g}); not writing {path}")
    with atomic_write(path, "wb") as fh:
        fh.write(data)
    onnx.checker.check_model(str(path))
    logger.info("exported %s (%d tags, %d member(s), opset %d)", path, len(meta.tag_names), len(models), ONNX_OPSET)
    return result
