"""Shared fixtures: the ../shared reference data (skipped cleanly when absent) and a small synthetic dataset."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("FOCALTAG_SHARED", REPO.parent / "shared")).resolve()


@pytest.fixture(autouse=True, scope="session")
def _private_cache_dir(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Keep exported ONNX files and other caches of the tests out of the user's ~/.cache."""
    os.environ.setdefault("FOCALTAG_CACHE_DIR", str(tmp_path_factory.mktemp("focaltag-cache")))


def _need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"reference data not available: {path} (the ../shared folder beside the checkout is absent)")
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
