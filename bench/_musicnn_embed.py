"""Worker that ``bench/similar.py`` runs inside the separate musicnn virtual environment (never focaltag's).

musicnn 0.1.0 is TensorFlow-1-style code: it needs NumPy < 2 (under NumPy 2 it returns wrong values without an
error), tf-keras and ``TF_USE_LEGACY_KERAS=1``. It is a reference point of the retrieval benchmark only (the
embedding AudioMuse-AI stores: the MSD model's 200-d penultimate layer, averaged over the track), so it runs
here, in its own interpreter, and hands its vectors back as ``.npy`` files.

    TF_USE_LEGACY_KERAS=1 VENV/bin/python bench/_musicnn_embed.py JOBS.json OUT_DIR [--model MSD_musicnn]

``JOBS.json`` is a list of ``{"key": ..., "path": ...}``; each track's vector goes to ``OUT_DIR/KEY.npy``
(float32, 200) and is skipped when that file exists already, so an interrupted run resumes.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("jobs", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--model", default="MSD_musicnn")
    args = parser.parse_args()

    import numpy as np

    if int(np.__version__.split(".")[0]) >= 2:
        raise SystemExit(f"musicnn needs NumPy < 2 (it returns wrong values under NumPy 2), this has {np.__version__}")
    if os.environ.get("TF_USE_LEGACY_KERAS") != "1":
        raise SystemExit("run with TF_USE_LEGACY_KERAS=1 (musicnn's tf.compat.v1.layers need tf-keras)")
    from musicnn.extractor import extractor

    args.out.mkdir(parents=True, exist_ok=True)
    jobs = json.loads(args.jobs.read_text(encoding="utf-8"))
    for i, job in enumerate(jobs):
        target = args.out / f"{job['key']}.npy"
        if target.is_file():
            continue
        _, _, features = extractor(job["path"], model=args.model, input_length=3, input_overlap=False,
                                   extract_features=True)
        frames = np.asarray(features["penultimate"], dtype=np.float32).reshape(-1, 200)
        tmp = target.with_name(target.stem + ".tmp.npy")
        np.save(tmp, frames.mean(axis=0))
        os.replace(tmp, target)
        print(f"{i + 1}/{len(jobs)} {job['key']} ({len(frames)} frames)", file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
