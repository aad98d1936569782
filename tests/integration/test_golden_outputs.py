"""The JSON that users see is pinned: ``tag --format json`` (fixed and adaptive chunks), a library run's JSONL and
``--embeddings`` vectors, on the six shared recordings with Won et al.'s trained MagnaTagATune Musicnn in float32.

The pinned files in ``tests/data/golden/`` were written by the code before the inference core was split (issue 29:
resolver, options object, predictor, scheduler), so a refactor that changes what users get fails here. Keys,
order, strings and decisions must match exactly; probabilities within 2e-5 (float32 kernels differ between CPU
kinds in the last bits). ``FOCALTAG_REGEN_GOLDEN=1`` rewrites the files: do that only for an intended change of
the output, and say so in the CHANGELOG.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
from pathlib import Path
from typing import Any

import pytest

from focaltag.cli import main

GOLDEN = Path(__file__).resolve().parents[1] / "data" / "golden"
REGEN = os.environ.get("FOCALTAG_REGEN_GOLDEN", "") == "1"
TOL = 2e-5


@pytest.fixture(scope="module")
def musicnn(won2020_models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> str:
    """Won et al.'s MagnaTagATune Musicnn imported into the session's private model cache, by catalogue name."""
    name = "won2020-mtat-musicnn"
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        assert main(["models", "import", name, str(won2020_models_dir / "mtat-musicnn.pth")]) == 0
    return name


def _run(*args: str) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(list(args)) == 0
    return out.getvalue()


def _relative(obj: Any, root: Path) -> Any:
    """File paths made relative to the recordings folder, so the pinned files do not depend on the checkout."""
    if isinstance(obj, dict):
        return {k: (os.path.relpath(v, root) if k == "file" and isinstance(v, str) else _relative(v, root))
                for k, v in obj.items()}
    if isinstance(obj, list):
        return [_relative(v, root) for v in obj]
    return obj


def _same(got: Any, want: Any, where: str = "$") -> None:
    if isinstance(want, float) and isinstance(got, (int, float)) and not isinstance(got, bool):
        assert math.isclose(got, want, abs_tol=TOL), f"{where}: {got} != {want}"
    elif isinstance(want, dict):
        assert isinstance(got, dict) and list(got) == list(want), f"{where}: keys {list(got)} != {list(want)}"
        for k in want:
            _same(got[k], want[k], f"{where}.{k}")
    elif isinstance(want, list):
        assert isinstance(got, list) and len(got) == len(want), f"{where}: length {len(got)} != {len(want)}"
        for i, (g, w) in enumerate(zip(got, want, strict=True)):
            _same(g, w, f"{where}[{i}]")
    else:
        assert got == want, f"{where}: {got!r} != {want!r}"


def _check(name: str, got: Any) -> None:
    path = GOLDEN / f"{name}.json"
    if REGEN:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(got, indent=1, sort_keys=False) + "\n")
        return
    _same(got, json.loads(path.read_text()))


@pytest.fixture(scope="module")
def common(won2020_models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, ...]:
    """float32 (the same on every CPU kind) and a thresholds file, so decisions are pinned too."""
    tags = list(dict.fromkeys(t for t in (won2020_models_dir / "tags-mtat.txt").read_text().splitlines() if t.strip()))
    path = tmp_path_factory.mktemp("golden") / "thresholds.tsv"
    path.write_text("".join(f"{t}\t{0.1 + 0.005 * i:.3f}\n" for i, t in enumerate(tags)))
    return ("--precision", "fp32", "--thresholds", str(path), "-q")


@pytest.mark.slow
@pytest.mark.parametrize("chunks", ["auto", "16"])
def test_tag_json_is_pinned(musicnn: str, music_dir: Path, common: tuple[str, ...], chunks: str) -> None:
    text = _run("tag", str(music_dir), "--model", musicnn, "--format", "json", "--chunks", chunks, *common)
    _check(f"tag-chunks-{chunks}", _relative(json.loads(text), music_dir))


@pytest.mark.slow
def test_library_jsonl_is_pinned(musicnn: str, music_dir: Path, common: tuple[str, ...], tmp_path: Path) -> None:
    out = tmp_path / "tags.jsonl"
    _run("tag", str(music_dir), "--model", musicnn, "-o", str(out), *common)
    rows = sorted((json.loads(line) for line in out.read_text().splitlines()), key=lambda r: r["file"])
    for row in rows:  # the file's own modification time: a fact of this checkout of ../shared, not pinned
        assert row.pop("mtime") == Path(row["file"]).stat().st_mtime, row["file"]
    _check("library-jsonl", _relative(rows, music_dir))
