"""``focaltag tag``, ``predict``, ``export`` and ``import-reference``: thin layer over ``focaltag.inference``."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from focaltag._defaults import DEFAULT_MODEL
from focaltag.cli import library as _library
from focaltag.cli._common import add_command
from focaltag.inference.precision import TAG_PRECISIONS

if TYPE_CHECKING:
    from focaltag.inference import InferenceOptions

logger = logging.getLogger(__name__)

_MODEL_HELP = ("checkpoint (.pt), run folder (its best.pt), ensemble folder (with ensemble.json), .onnx file "
               "(--runtime onnx) or catalogue name ('focaltag models list'; pulled on first use); repeat to "
               "average several models")


def register(subparsers: Any) -> None:
    _register_tag(subparsers)
    _register_predict(subparsers)
    _register_export(subparsers)
    _register_import(subparsers)


def _add_models(p: argparse.ArgumentParser, *, required: bool = True) -> None:
    p.add_argument("-m", "--model", dest="models", action="append", required=required, metavar="M",
                   help=_MODEL_HELP + ("" if required else f" (default: {DEFAULT_MODEL}, the paper's ensemble)"))


def _add_runtime(p: argparse.ArgumentParser, *, batch_size: int | None = None,
                 batch_help: str = "chunks per forward pass (default: 4 on CPU, which keeps a batch's activations in "
                 "cache; 16 on GPU)") -> None:
    p.add_argument("--runtime", choices=("torch", "onnx"), default="torch",
                   help="torch, or onnxruntime; a "
                   "checkpoint is exported once and cached in ~/.cache/focaltag/onnx (requires pip install "
                   "'focaltag[onnx]')")
    p.add_argument("--batch-size", type=int, default=batch_size, metavar="N", help=batch_help)
    p.add_argument("--device", default="cpu", help="torch device: cpu, cuda, cuda:N, mps or auto (torch runtime "
                   "only)")
    p.add_argument("--precision", choices=TAG_PRECISIONS, default="auto",
                   help="auto: bf16 on bf16 GPUs, on CPUs with AMX, and on CPUs with AVX512-BF16 where it measured "
                   "faster than float32 (timed once, cached); on other CPUs int8 through "
                   "onnxruntime for the paper ResNet (with the onnx extra installed; quantized once on generated "
                   "audio and cached; close calls re-checked in float32), float32 elsewhere; int8 forces it "
                   "(architectures without an int8 recipe stay float32; Musicnn stays float32 on CPUs, where bf16 "
                   "did not pay off); the bf16 spectrogram-reading "
                   "layers are computed to float32 grade and tracks whose top-5 or a decision is within 0.005 are "
                   "recomputed in float32, so the top tags are float32's; fp32 opts out, exactly (torch runtime "
                   "only)")


def _register_tag(subparsers: Any) -> None:
    p = add_command(subparsers, "tag", func=run_tag, help="tag audio files with mood/theme probabilities",
                    description="Tag audio files and folders (searched recursively): each track is covered by "
                    "evenly spaced chunks (or a sliding window), and the sigmoid probabilities of the chunks and "
                    "models are averaged. A file that cannot be decoded is reported and the rest go on; the exit "
                    "code is 1 if any file failed.")
    p.add_argument("paths", nargs="*", type=Path, metavar="PATH",
                   help="audio files and/or folders (or none, with --files-from)")
    _add_models(p, required=False)
    cover = p.add_mutually_exclusive_group()
    cover.add_argument("--chunks", default=argparse.SUPPRESS, metavar="N|auto",
                       help="evenly spaced chunks per track, the positions evaluation uses; auto (the default): "
                       "the same 16 positions in a low-discrepancy order, stopping once more chunks cannot change "
                       "the decisions (or the top-k) under a bound from the chunks' spread: at least 4, at most 16 "
                       "(the JSON 'chunks' says how many); a number N always uses N")
    cover.add_argument("--hop", type=float, default=argparse.SUPPRESS, metavar="SECONDS",
                       help="sliding window with this hop instead of evenly spaced chunks")
    p.add_argument("--format", choices=("table", "json", "csv"), default="table",
                   help="table: top-k tags per file; json: a JSON array (file, duration, tags, top, decisions); "
                   "csv: every tag's probability")
    p.add_argument("--top-k", type=int, default=5, metavar="K", help="tags listed per file (table, json 'top')")
    p.add_argument("--embeddings", action="store_true",
                   help="also compute each track's embedding (the chunk-mean of the layer before the classifier; "
                   "an ensemble's members concatenated): 'embedding' and 'embedding_model' in --format json")
    p.add_argument("--thresholds", default=None, metavar="FILE",
                   help="per-tag thresholds from 'focaltag evaluate --save-thresholds'; adds yes/no decisions "
                   "(probability > threshold). Default: the catalogue model's own, where it has them "
                   "(usc-sail-2020 and its members); 'none' turns decisions off")
    p.add_argument("--taggram", type=Path, default=None, metavar="OUT.png",
                   help="plot tag probabilities over time (needs exactly one input file; uses a sliding window "
                   "with a hop of half a chunk unless --chunks/--hop is given)")
    p.add_argument("--optimize", choices=("none", "channels_last", "compile"), default="none",
                   help="opt-in torch memory layout / compilation, off by default because channels_last was "
                   "not faster than eager on CPU in bench/tag.py; measure on your machine first (compile pays a "
                   "one-off compilation)")
    _add_runtime(p)
    _library.add_library_options(p)


def _positive(parser_name: str, **values: float | None) -> None:
    from focaltag.errors import ConfigError

    for name, value in values.items():
        if value is not None and not value > 0:
            raise ConfigError(f"{parser_name}: --{name.replace('_', '-')} must be > 0, got {value}")


def _tag_options(args: argparse.Namespace, chunks: int | None, hop: float | None) -> InferenceOptions:
    """The one place ``focaltag tag`` turns its arguments into :class:`~focaltag.inference.InferenceOptions`."""
    from focaltag.inference import InferenceOptions
    from focaltag.inference.options import thresholds_option

    adaptive = chunks is None and hop is None and args.taggram is None  # --chunks auto, the default
    return InferenceOptions(
        n_chunks=chunks or 16, hop_seconds=hop, batch_size=args.batch_size, adaptive=adaptive, top_k=args.top_k,
        thresholds=thresholds_option(args.thresholds), precision=args.precision, runtime=args.runtime,
        device=args.device, optimize=args.optimize, workers=getattr(args, "workers", None),
        embeddings=bool(getattr(args, "embeddings", False)))


def run_tag(args: argparse.Namespace) -> int:
    from focaltag.errors import ConfigError
    from focaltag.inference.adaptive import parse_chunks
    from focaltag.library.files import collect_audio

    chunks_arg, hop = getattr(args, "chunks", None), getattr(args, "hop", None)
    chunks = None if chunks_arg is None else parse_chunks(chunks_arg)
    _positive("tag", hop=hop, batch_size=args.batch_size)
    if args.top_k < 0:
        raise ConfigError(f"tag: --top-k must be >= 0, got {args.top_k}")
    _library.check_library_args(args)
    files: list[str | Path] = [*collect_audio(args.paths)] if args.output is None and args.paths else []
    if args.output is None and args.files_from is not None:
        from focaltag.library.runs import read_file_list

        files += list(read_file_list(args.files_from))
    if args.taggram is not None and len(files) != 1:
        raise ConfigError(f"--taggram plots one file, but {len(files)} were given; tag a single file with it")
    options = _tag_options(args, chunks, hop)
    # --ray: join the cluster and start its model actors now, before torch is imported here, so that their
    # start-up overlaps the loading of the model
    ray_session = _library.start_ray(args)
    try:
        return _tag_with(args, options, files, chunks_arg, hop, ray_session)
    finally:
        if ray_session is not None:
            ray_session.close()


def _tag_with(args: argparse.Namespace, options: InferenceOptions, files: list[str | Path], chunks_arg: str | None,
              hop: float | None, ray_session: _library.RaySession | None) -> int:
    from focaltag.inference import Tagger, configure_runtime
    from focaltag.inference.members import check_runtime
    from focaltag.inference.tagger import TagResult
    from focaltag.models.resolve import resolve_model
    from focaltag.outputs.writers import get_writer

    if not args.models:
        logger.info("no --model given: tagging with %s, the paper's ensemble", DEFAULT_MODEL)
    check_runtime(options.runtime, options.device, options.precision)  # a bad --device before any model is read
    resolved = resolve_model(args.models or DEFAULT_MODEL)
    configure_runtime(decode_threads=options.workers)
    tagger = Tagger(resolved, options)
    if args.taggram is not None and hop is None and chunks_arg is None:  # a finer time axis for the plot
        tagger = tagger.with_options(hop_seconds=tagger.chunk_samples / tagger.sample_rate / 2)
    if resolved.thresholds is not None and args.thresholds is None:
        logger.info("yes/no decisions use %s's thresholds (probability > threshold); --thresholds none "
                    "turns them off", tagger.model_name)
    if args.output is not None:
        return _library.run_library(args, tagger, ray_session)
    file_tags = _library.file_tag_writer(args, tagger)
    logger.info("tagging %d file(s) with %d model(s), %s, precision %s", len(files), len(tagger.members),
                f"hop {tagger.hop_seconds:.2f} s" if tagger.hop_seconds else
                f"up to {tagger.n_chunks} chunks per track (adaptive)" if tagger.adaptive else
                f"{tagger.n_chunks} chunks per track",
                tagger.precision)
    from focaltag._progress import progress

    writer = get_writer(args.format, sys.stdout, tag_names=tagger.tag_names, top_k=args.top_k,
                        decisions=tagger.thresholds is not None)
    last: Any = None
    with writer, progress(total=len(files), desc="tag", unit="file") as bar:
        for result in tagger.tag_many(files):
            if file_tags is not None and isinstance(result, TagResult):
                file_tags(result)
            with bar.external_write_mode(file=sys.stdout):  # rows never land inside the progress line
                writer.write(result)
            last = result
            bar.update(1)
    if args.taggram is not None and isinstance(last, TagResult):
        from focaltag.outputs.taggram import plot_taggram

        plot_taggram(last, args.taggram)
        logger.info("taggram stored in %s", args.taggram)
    if file_tags is not None:
        print(f"focaltag: {file_tags.summary()}", file=sys.stderr)
    if writer.n_failed:
        print(f"focaltag: {writer.n_failed} of {writer.n_written} file(s) could not be tagged (see above)",
              file=sys.stderr)
        return 1
    return 1 if file_tags is not None and file_tags.counts["failed"] else 0


def _register_predict(subparsers: Any) -> None:
    p = add_command(subparsers, "predict", func=run_predict,
                    help="prediction matrix of a split (tracks x tags) for 'focaltag evaluate'",
                    description="Score every track of a split TSV from the waveform cache ('focaltag data "
                    "prepare'): rows in TSV order, columns in the canonical (sorted) tag order. Writes PRED.npy "
                    "and PRED.tracks.txt (the track ids); score it with 'focaltag evaluate --tsv SPLIT.tsv "
                    "--predictions PRED.npy'.")
    _add_models(p)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--tsv", type=Path, metavar="SPLIT.tsv", help="split metadata (official TSV)")
    from focaltag.cli.data_options import add_dataset_part_options

    add_dataset_part_options(p, src)
    p.add_argument("--cache", type=Path, default=None, metavar="DIR",
                   help="waveform cache folder (default with --dataset-dir: DIR/cache)")
    p.add_argument("-o", "--out", type=Path, required=True, metavar="PRED.npy", help="matrix to write")
    p.add_argument("--chunks", type=int, default=32, metavar="N", help="evenly spaced chunks per track")
    _add_runtime(p, batch_size=None,
                 batch_help="chunks per forward pass (default: --chunks, one track per pass); tracks are packed "
                 "whole into batches of at least N chunks")


def run_predict(args: argparse.Namespace) -> int:
    from focaltag.inference.predict import predict_split, save_predictions

    _positive("predict", chunks=args.chunks, batch_size=args.batch_size)
    batch_size = args.batch_size if args.batch_size is not None else args.chunks
    tsv, cache = args.tsv, args.cache
    if args.dataset_dir is not None:  # the part's track list (official split file, or derived from tracks.csv)
        from focaltag.cli.data_options import open_dataset_from_args

        tsv = open_dataset_from_args(args).part_file(args.part)
        cache = cache or args.dataset_dir / "cache"
    if cache is None:
        from focaltag.errors import ConfigError

        raise ConfigError("predict --tsv needs --cache DIR (the waveform cache of `focaltag data prepare`)")
    from focaltag.inference import configure_runtime

    configure_runtime()
    matrix, ids = predict_split(args.models, tsv, cache, n_chunks=args.chunks,
                                batch_size=batch_size, runtime=args.runtime, device=args.device,
                                precision=args.precision)
    npy, txt = save_predictions(args.out, matrix, ids)
    print(f"wrote {npy} ({matrix.shape[0]} tracks x {matrix.shape[1]} tags) and {txt}", file=sys.stderr)
    return 0


def _register_export(subparsers: Any) -> None:
    p = add_command(subparsers, "export", func=run_export, help="export a model or ensemble to ONNX",
                    description="Export waveform chunks (batch, chunk_samples) -> probabilities (batch, n_tags) "
                    "with a dynamic batch (torch.onnx dynamo exporter, opset 18); several --model are exported "
                    "as one averaged graph. The output is checked against torch (max difference 1e-4). Requires "
                    "pip install 'focaltag[onnx]'.")
    _add_models(p)
    p.add_argument("--onnx", type=Path, required=True, metavar="OUT.onnx", help="ONNX file to write")


def run_export(args: argparse.Namespace) -> int:
    from focaltag.inference.export import export_onnx

    info = export_onnx(args.models, args.onnx)
    print(f"wrote {info['path']} ({info['n_tags']} tags, {info['members']} model(s), opset {info['opset']}; "
          f"max |onnx - torch| = {info['max_abs_diff']:.1e})", file=sys.stderr)
    return 0


def _register_import(subparsers: Any) -> None:
    p = add_command(subparsers, "import-reference", func=run_import,
                    help="convert a published checkpoint (paper code, Won et al.) into a focaltag model",
                    description="Convert a state_dict saved by the paper's reference implementation "
                    "(ShortChunkCNN_Res) or one of Won et al. (2020)'s FCN / CRNN / Musicnn (the architecture is "
                    "read from the keys) into a focaltag checkpoint usable by tag/predict/export. Its outputs are "
                    "the 56 mood/theme tags in sorted order unless --tags says otherwise (Won et al.'s 50 tags "
                    "need --tags).")
    p.add_argument("checkpoint", type=Path, metavar="CKPT.pth", help="reference checkpoint (a state_dict)")
    p.add_argument("-o", "--out", type=Path, required=True, metavar="MODEL.pt", help="focaltag checkpoint to write")
    p.add_argument("--tags", type=Path, default=None, metavar="FILE",
                   help="output tag names in the checkpoint's order, one per line")
    p.add_argument("--variant", choices=("paper", "won2020"), default=None,
                   help="short-chunk ResNet receptive field, if the layer names do not tell it")


def run_import(args: argparse.Namespace) -> int:
    from focaltag.data.metadata import read_tag_list
    from focaltag.models import load_model, save_model

    tags = read_tag_list(args.tags) if args.tags is not None else None
    model = load_model(args.checkpoint, tag_names=tags, variant=args.variant)
    save_model(model, args.out)
    from focaltag.models.meta import cfg_of

    cfg = cfg_of(model)
    arch = (f"variant {cfg.variant}, width {cfg.width}" if cfg.variant is not None
            else getattr(model, "model_name", type(model).__name__))
    print(f"wrote {args.out} ({cfg.n_tags} tags, {arch}, "
          f"{cfg.chunk_samples} samples at {cfg.sample_rate} Hz)", file=sys.stderr)
    return 0
