"""Shared fixtures: the ../shared reference data (skipped cleanly when absent) and a small synthetic dataset.

With ``FOCALTAG_REQUIRE_SHARED=1`` (set by ``.ci/run``) a test that needs ``../shared`` fails instead of
skipping, so CI cannot pass without the reference data that the proofs rest on.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("FOCALTAG_SHARED", REPO.parent / "shared")).resolve()
REQUIRE_SHARED = "FOCALTAG_REQUIRE_SHARED"


def shared_required() -> bool:
    """True when ``FOCALTAG_REQUIRE_SHARED`` is set to anything but empty / ``0``."""
    return os.environ.get(REQUIRE_SHARED, "").strip() not in ("", "0")


@pytest.fixture(autouse=True, scope="session")
def _private_cache_dir(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Keep exported ONNX files and other caches of the tests out of the user's ~/.cache."""
    os.environ.setdefault("FOCALTAG_CACHE_DIR", str(tmp_path_factory.mktemp("focaltag-cache")))


CPU_KINDS: dict[str, tuple[str, str]] = {"cpu-bf16": ("1", "1"), "cpu-vnni": ("0", "1"), "cpu-avx2": ("0", "0")}
"""The branches of ``precision="auto"``'s CPU rule, as values of ``(FOCALTAG_CPU_BF16, FOCALTAG_CPU_VNNI)``:
native bf16 (``auto`` runs bf16), VNNI without bf16 (int8 through onnxruntime where the architecture has a
recipe) and AVX2 only (onnxruntime float32 where the architecture's facts say so, else torch float32)."""

SERVER_CPU_KINDS = ("cpu-bf16", "cpu-avx2")
"""The branches a module-scoped server runs on (each one costs a server start)."""


def _force_cpu(patch: pytest.MonkeyPatch, kind: str) -> bool:
    bf16, vnni = CPU_KINDS[kind]
    patch.setenv("FOCALTAG_CPU_BF16", bf16)
    patch.setenv("FOCALTAG_CPU_VNNI", vnni)
    return bf16 == "1"


@pytest.fixture(params=list(CPU_KINDS))
def cpu_bf16(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> bool:
    """Runs the test once on each branch of the CPU rule, whatever this CPU is (the variables hold in this
    process and in the processes it starts); the value is whether the forced CPU runs bf16 natively."""
    return _force_cpu(monkeypatch, request.param)


@pytest.fixture(scope="module", params=list(SERVER_CPU_KINDS))
def cpu_bf16_module(request: pytest.FixtureRequest) -> Iterator[bool]:
    """:func:`cpu_bf16` for module-scoped fixtures (a server started once per branch)."""
    with pytest.MonkeyPatch.context() as patch:
        yield _force_cpu(patch, request.param)


def _need(path: Path) -> Path:
    if not path.exists():
        reason = f"reference data not available: {path} (the ../shared folder beside the checkout is absent)"
        if shared_required():
            pytest.fail(f"{reason}; {REQUIRE_SHARED}=1 requires it (set FOCALTAG_SHARED to its location)",
                        pytrace=False)
        pytest.skip(reason)
    return path


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """``../shared`` beside the checkout (override with FOCALTAG_SHARED); skips the test when absent."""
    return _need(SHARED)


@pytest.fixture(scope="session")
def mtg_dir(shared_dir: Path) -> Path:
    """The official MTG-Jamendo metadata folder (splits/, download/, tags/)."""
    return _need(shared_dir / "data" / "mtg-jamendo")


@pytest.fixture(scope="session")
def reference_predictions_dir(shared_dir: Path) -> Path:
    """The paper authors' published validation prediction matrices."""
    return _need(shared_dir / "data" / "reference-predictions")


@pytest.fixture(scope="session")
def mediaeval_baseline_dir(shared_dir: Path) -> Path:
    """The official MediaEval VGG-ish baseline files (ground truth, predictions, thresholds, decisions, results)."""
    return _need(shared_dir / "data" / "mediaeval-baseline")


@pytest.fixture(scope="session")
def won2020_models_dir(shared_dir: Path) -> Path:
    """Won et al. (2020)'s eight published FCN / CRNN / Musicnn state_dicts and their tag lists."""
    return _need(shared_dir / "models" / "won2020")


@pytest.fixture(scope="session")
def music_dir(shared_dir: Path) -> Path:
    """Six real music recordings (OGG / MP3, 22.05-48 kHz) for decode and tagging tests."""
    return _need(shared_dir / "data" / "music")


@pytest.fixture(scope="session")
def synth_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small synthetic MTG-layout dataset (120 tracks of 6-10 s), built once per test session."""
    from focaltag.data.synth import synthesize_dataset

    out = tmp_path_factory.mktemp("synth")
    synthesize_dataset(out, n_tracks=120, seed=0, min_duration=6.0, max_duration=10.0)
    return out
