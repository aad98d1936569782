"""Library options of ``focaltag tag`` (-o, --refresh, --shard, --workers, --write-tags ...) and ``merge-tags``.

``cli/tag.py`` declares the options through :func:`add_library_options` and hands over to :func:`run_library`
when ``-o`` is given; the logic lives in ``focaltag.library.runs`` and ``focaltag.outputs.filetags``.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from focaltag.cli._common import add_command, parse_shard

__all__ = ["RaySession", "add_library_options", "check_library_args", "file_tag_writer", "register", "run_library",
           "start_ray"]


def add_library_options(p: argparse.ArgumentParser) -> None:
    """The options of a library run and of writing tags into files."""
    lib = p.add_argument_group("library runs (resumable, shardable)")
    lib.add_argument("-o", "--output", type=Path, default=None, metavar="TAGS.jsonl",
                     help="append one JSON line per track (the --format json object + size, mtime) as each is "
                     "done; a rerun skips tracks already there, so a killed run continues; failures go to "
                     "TAGS.jsonl.failures.tsv and are retried next run")
    lib.add_argument("--refresh", action="store_true",
                     help="with -o: also re-tag tracks whose size or mtime changed (one line per file is kept)")
    lib.add_argument("--shard", type=parse_shard, default=None, metavar="I/N",
                     help="with -o: tag only shard I of N (0-based), chosen by the path relative to the folder "
                     "argument; join the outputs with 'focaltag merge-tags'")
    lib.add_argument("--files-from", type=Path, default=None, metavar="LIST",
                     help="also tag the paths listed in this text file, one per line (blank lines and # comments "
                     "are skipped): for catalogues whose file list comes from a database")
    lib.add_argument("--ray", nargs="?", const="", default=None, metavar="ADDRESS",
                     help="with -o: tag in a pool of Ray actors, each reading and tagging its files within its "
                     "node's CPUs; joins the cluster at ADDRESS (HOST:PORT), else the one RAY_ADDRESS names, else "
                     "starts Ray on this machine (requires pip install 'focaltag[ray]')")
    lib.add_argument("--actors", type=int, default=None, metavar="N",
                     help="with --ray: model actors (default: as many as the cluster has room for: one per GPU; "
                     "without GPUs each takes up to 4 CPUs of one node)")
    lib.add_argument("--workers", type=int, default=None, metavar="N",
                     help="decode N files in parallel while the model runs (default 2; 0 decodes in line)")
    tags = p.add_argument_group("writing tags into the files")
    tags.add_argument("--write-tags", action="store_true",
                      help="write the chosen tags into each file: MOOD (ID3 TMOO / TXXX:MOOD in ID3v2.3, Vorbis "
                      "comment, iTunes freeform) for mood/theme models, FOCALTAG_TAGS for other vocabularies; the "
                      "values are the yes/no decisions with --thresholds, else the --top-k best tags")
    tags.add_argument("--tag-field", default=None, metavar="FIELD",
                      help="write the tags under this field instead: GROUPING (ID3 TIT1, MP4 \u00a9grp), COMMENT "
                      "(ID3 COMM, MP4 \u00a9cmt), MOOD, or any name (ID3 TXXX, Vorbis comment, iTunes freeform); "
                      "default: MOOD for mood/theme models, FOCALTAG_TAGS for other vocabularies and for heads of "
                      "'focaltag head train'")
    tags.add_argument("--replace", action="store_true", help="replace existing MOOD values instead of adding ours")
    tags.add_argument("--write-probabilities", action="store_true",
                      help="also write every tag's probability (JSON) under FOCALTAG_PROBABILITIES")
    tags.add_argument("--keep-mtime", action="store_true", help="give tagged files back their modification time")
    tags.add_argument("--dry-run", action="store_true", help="with --write-tags: show what would change, write nothing")


def check_library_args(args: argparse.Namespace) -> None:
    """Refuse option combinations that cannot work, before a model is loaded."""
    from focaltag.errors import ConfigError

    output = getattr(args, "output", None)
    if getattr(args, "ray", None) is not None:
        from focaltag.ray import require_ray

        if output is None:
            raise ConfigError("--ray writes a library run's output: add -o tags.jsonl")
        require_ray()
    elif getattr(args, "actors", None) is not None:
        raise ConfigError("--actors sizes the Ray model pool; add --ray (or drop --actors)")
    if getattr(args, "actors", None) is not None and args.actors < 1:
        raise ConfigError(f"--actors must be >= 1, got {args.actors}")
    files_from = getattr(args, "files_from", None)
    if files_from is not None and not files_from.is_file():
        raise ConfigError(f"--files-from {files_from}: no such file; give a text file with one path per line")
    if not getattr(args, "paths", None) and files_from is None:
        raise ConfigError("give audio files or folders to tag, or --files-from LIST")
    if output is not None and not getattr(args, "embeddings", False):
        from focaltag.library.store import VectorStore

        if VectorStore(output).exists():  # a library with embeddings keeps them complete
            args.embeddings = True
    if output is None:
        for flag in ("refresh", "shard"):
            if getattr(args, flag, None):
                raise ConfigError(f"--{flag} needs an output file: add -o tags.jsonl")
    elif getattr(args, "taggram", None) is not None:
        raise ConfigError("--taggram plots one file; it cannot be combined with -o (a library run)")
    elif getattr(args, "format", "table") != "table":
        raise ConfigError("-o writes JSON lines; drop --format (it applies to stdout output only)")
    if getattr(args, "workers", None) is not None and args.workers < 1:
        raise ConfigError(f"--workers must be >= 1, got {args.workers}")
    if not getattr(args, "write_tags", False):
        for flag in ("replace", "write_probabilities", "keep_mtime", "dry_run", "tag_field"):
            if getattr(args, flag, False):
                raise ConfigError(f"--{flag.replace('_', '-')} only applies with --write-tags")


def _writer_kwargs(args: argparse.Namespace, tagger: Any) -> dict[str, Any]:
    return {"top_k": args.top_k, "replace": args.replace, "probabilities": args.write_probabilities,
            "keep_mtime": args.keep_mtime, "dry_run": args.dry_run, "key": _tag_field(args, tagger)}


def _tag_field(args: argparse.Namespace, tagger: Any) -> str:
    """``--tag-field``, else the tagger's default key (:func:`~focaltag.outputs.filetags.default_tag_key`)."""
    from focaltag.outputs.filetags import default_tag_key, tag_field

    if getattr(args, "tag_field", None) is not None:
        return tag_field(args.tag_field)
    return default_tag_key(tagger.tag_names, tagger.resolved.members)


def file_tag_writer(args: argparse.Namespace, tagger: Any) -> Any:
    """A :class:`~focaltag.outputs.filetags.FileTagWriter` for ``--write-tags``, else None."""
    if not getattr(args, "write_tags", False):
        return None
    try:
        import mutagen  # noqa: F401
    except ImportError:
        from focaltag.errors import ConfigError

        raise ConfigError("--write-tags needs mutagen: pip install mutagen") from None
    import logging

    from focaltag.outputs.filetags import FileTagWriter, recover_leftovers

    for line in recover_leftovers(args.paths, dry_run=args.dry_run):  # what a killed --write-tags run left
        logging.getLogger(__name__).warning("%s", line)
    return FileTagWriter(tagger.tag_names, thresholds=tagger.thresholds, **_writer_kwargs(args, tagger))


@dataclass
class RaySession:
    """``--ray``: the joined cluster and the model actors started on it before the model was loaded here."""

    actors: Any  # focaltag.ray.TagActors
    owns_ray: bool  # this process started or joined Ray, and shuts it down

    def close(self) -> None:
        try:
            self.actors.close()
        finally:
            if self.owns_ray:
                import ray

                ray.shutdown()


def start_ray(args: argparse.Namespace) -> RaySession | None:
    """``--ray``: join the cluster and start the model actors (:func:`~focaltag.ray.start_tag_actors`), before
    the model is loaded on this machine; None without ``--ray``. A cluster without room for the actors is one
    line, before the output is opened."""
    if getattr(args, "ray", None) is None:
        return None
    from focaltag.ray import connect, start_tag_actors

    owns = connect(args.ray or None)
    try:
        return RaySession(start_tag_actors(args.actors), owns)
    except BaseException:
        if owns:
            import ray

            ray.shutdown()
        raise


def _ray_tagger(args: argparse.Namespace, tagger: Any, session: RaySession) -> Any:
    """``--ray``: the same run with the model in Ray actors: the tagger's resolved model and options travel."""
    import dataclasses

    from focaltag.ray import RayTagger

    options = {f.name: getattr(tagger.options, f.name) for f in dataclasses.fields(tagger.options)
               if f.name not in ("device", "workers")}
    return RayTagger(tagger.resolved, options, tagger=tagger, actors=args.actors,
                     write_tags=_writer_kwargs(args, tagger) if args.write_tags else None, started=session.actors)


def run_library(args: argparse.Namespace, tagger: Any, ray_session: RaySession | None = None) -> int:
    """``focaltag tag ... -o TAGS.jsonl``: the resumable library run; prints its summary.

    With ``--ray`` (``ray_session``: :func:`start_ray`, which the caller closes) the same :func:`~focaltag.library.runs.tag_library` drives a
    :class:`~focaltag.ray.RayTagger` (its actors load the tagger's resolved model with its options); tags are then
    written by the actors, on the workers.
    """
    from focaltag._progress import progress
    from focaltag.library.runs import append_failures, failures_path, tag_library

    writer = file_tag_writer(args, tagger)
    runner, on_result = tagger, writer.failure_of if writer is not None else None
    if ray_session is not None:
        runner = _ray_tagger(args, tagger, ray_session)
        on_result = runner.write_problem if writer is not None else None  # the worker wrote; its outcome
    with progress(desc="tag", unit="file") as bar:
        summary = tag_library(runner, args.paths, args.output, refresh=args.refresh, shard=args.shard,
                              top_k=args.top_k, on_result=on_result,
                              on_recorded=writer.recorded if writer is not None else None, progress=bar.update,
                              files_from=getattr(args, "files_from", None),
                              embeddings=bool(getattr(args, "embeddings", False)))
    if writer is not None and runner is not tagger:
        for status, n in runner.tag_writes.items():
            writer.counts[status] += n
    if summary.done + summary.skipped + summary.failed == 0 and args.shard is None:
        from focaltag.errors import ConfigError
        from focaltag.library.files import extensions_hint

        if args.output.exists() and args.output.stat().st_size == 0:
            args.output.unlink()
        raise ConfigError(f"no audio files under {', '.join(map(str, args.paths))} (searched recursively for "
                          f"{extensions_hint()})")
    print(f"focaltag: {args.output}: {summary.line()}", file=sys.stderr)
    if writer is not None:
        print(f"focaltag: {writer.summary()}", file=sys.stderr)
        if writer.recorded_failures:  # files tagged before whose tag write failed now: listed, retried
            append_failures(args.output, writer.recorded_failures)
    if summary.failed or (writer is not None and writer.recorded_failures):
        print(f"focaltag: the failed files and why are in {failures_path(args.output)}; a rerun retries them",
              file=sys.stderr)
        return 1
    return 1 if writer is not None and writer.counts["failed"] else 0


def register(subparsers: Any) -> None:
    p = add_command(subparsers, "merge-tags", func=run_merge,
                    help="join the JSONL outputs of sharded 'tag -o' runs into one",
                    description="Join the outputs of 'focaltag tag DIR -o OUT --shard I/N' runs into one JSONL "
                    "file with one line per track. A track found in several inputs must have the same results "
                    "(everything but mtime); otherwise nothing is written and the exit code is 2.")
    p.add_argument("output", type=Path, metavar="OUT.jsonl", help="merged file to write (atomically)")
    p.add_argument("inputs", nargs="+", type=Path, metavar="IN.jsonl", help="shard outputs")


def run_merge(args: argparse.Namespace) -> int:
    from focaltag.library.runs import merge_outputs

    files, dropped = merge_outputs(args.output, args.inputs)
    extra = f" ({dropped} duplicate line(s) dropped)" if dropped else ""
    print(f"focaltag: wrote {args.output}: {files} track(s) from {len(args.inputs)} file(s){extra}",
          file=sys.stderr)
    return 0
