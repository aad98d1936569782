"""The inference core before and after a change, in one run: ``focaltag tag`` as whole processes, interleaved.

Issue 29 split the tagger into a resolver, an options object, a predictor and a scheduler, and must not make
tagging slower. This script checks out an older commit into a temporary worktree and runs the same command with
that commit's source (``PYTHONPATH``) and with this checkout's, round after round (old, new, old, new...), on the
six shared recordings with a paper-size short-chunk ResNet (random weights: speed does not depend on them) and
with Won et al.'s trained MagnaTagATune Musicnn, both at the defaults (``--precision auto``, adaptive chunks).
The figures are seconds per whole process and the per-round ratio old / new (above 1: the new core is faster).

    python bench/core_before_after.py --before 5bcee5b [--repeats 3] [--quick]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from _protocol import REPO, Run, add_protocol_arguments, interleave, ratio_summary, summary, walls

SHARED = Path(os.environ.get("FOCALTAG_SHARED", REPO.parent / "shared"))


def _worktree(commit: str, where: Path) -> Path:
    subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(where), commit], check=True,
                   capture_output=True)
    return where


def _models(folder: Path, env: dict[str, str]) -> dict[str, list[str]]:
    """Model arguments for ``tag``: a saved paper-size ResNet, and the imported Musicnn (catalogue name)."""
    import focaltag

    resnet = folder / "paper-resnet.pt"
    import torch

    torch.manual_seed(0)
    focaltag.save_model(focaltag.create_model("short_chunk_resnet", n_tags=56), resnet)
    subprocess.run([sys.executable, "-m", "focaltag", "models", "import", "won2020-mtat-musicnn",
                    str(SHARED / "models" / "won2020" / "mtat-musicnn.pth")], env=env, check=True,
                   capture_output=True)
    return {"paper_resnet": ["-m", str(resnet)], "mtat_musicnn": ["-m", "won2020-mtat-musicnn"]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before", default="5bcee5b", help="the commit to compare with (default: before issue 29)")
    add_protocol_arguments(parser, quick="two recordings instead of six")
    args = parser.parse_args()
    music = sorted(p for p in (SHARED / "data" / "music").iterdir() if p.suffix in (".ogg", ".mp3"))
    files = [str(p) for p in (music[:2] if args.quick else music)]
    run = Run("bench/core_before_after.py", args)
    with tempfile.TemporaryDirectory(prefix="focaltag-core-") as tmp:
        tmp_path = Path(tmp)
        old_src = _worktree(args.before, tmp_path / "before") / "src"
        env = {**os.environ, "FOCALTAG_CACHE_DIR": str(tmp_path / "cache")}
        models = _models(tmp_path, env)
        try:
            results: dict[str, object] = {"before": args.before, "files": len(files)}
            for name, model_args in models.items():
                def tag(src: Path, model_args: list[str] = model_args) -> None:
                    out = subprocess.run([sys.executable, "-m", "focaltag", "tag", *files, *model_args,
                                          "--format", "json", "-q"], env={**env, "PYTHONPATH": str(src)},
                                         capture_output=True, text=True)
                    if out.returncode != 0:
                        raise SystemExit(f"tag failed with {src}: {out.stderr.strip()[-500:]}")

                tag(old_src)  # warm both: file cache, exported graphs
                tag(REPO / "src")
                times = interleave({"before": lambda t=tag: t(old_src), "after": lambda t=tag: t(REPO / "src")},
                                   args.repeats, alternate=True)
                results[name] = {"before_s": summary(walls(times["before"])),
                                 "after_s": summary(walls(times["after"])),
                                 "before_over_after": ratio_summary(walls(times["before"]), walls(times["after"]))}
        finally:
            subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(tmp_path / "before")],
                           capture_output=True)
    run.finish(results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
