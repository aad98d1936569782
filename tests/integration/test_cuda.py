"""The CUDA paths, on a real GPU: training steps in float32 and bf16 (learning, bit-exact resume), torchrun with
NCCL, tagging against the CPU's float32, ``predict``.

Marked ``cuda`` and skipped on machines without a GPU (CI has none): run them on a GPU machine with
``pytest -m cuda``. ``bench/gpu.py`` measures the same paths' speed.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (run on a GPU machine: pytest -m cuda)"),
]


def gpu_config(data_dir: Path, cache: Path, *, bf16: bool, **runtime: Any) -> dict[str, Any]:
    """Seconds on a GPU: a width-16 paper-variant network, 3 Adam epochs of 6 steps of 16, last.pt every step."""
    return {
        "data": {"dataset_dir": str(data_dir), "cache_dir": str(cache), "auto_prepare": True,
                 "prepare_workers": 2},
        "model": {"width": 16},
        "optim": {"batch_size": 16, "epochs": 3, "adam_epochs": 3, "adam_lr": 1e-3},
        "validation": {"n_chunks": 2, "tracks_per_batch": 8},
        "runtime": {"device": "cuda", "num_workers": 2, "precision": "bf16" if bf16 else "fp32", "deterministic": True,
                    "max_steps_per_epoch": 6, "checkpoint_every_steps": 1, "log_every_steps": 1, **runtime},
        "seed": 0,
    }


def metrics(run: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def state(run: Path) -> dict[str, Any]:
    return torch.load(run / "last.pt", map_location="cpu", weights_only=True)


@pytest.mark.parametrize("bf16", [False, True], ids=["fp32", "bf16"])
def test_training_on_cuda_learns_and_resumes_bit_exact(bf16, synth_dataset, tmp_path):
    from focaltag.training.loop import train

    cache = tmp_path / "cache"
    whole = train(gpu_config(synth_dataset, cache, bf16=bf16), tmp_path / "whole")
    rows = metrics(tmp_path / "whole")
    assert whole["steps"] == 18 and len(rows) == 3
    assert rows[-1]["train_loss"] < rows[0]["train_loss"], [r["train_loss"] for r in rows]
    cut = train(gpu_config(synth_dataset, cache, bf16=bf16, max_steps=8), tmp_path / "cut")
    assert cut["stopped"] == "max_steps"
    train(gpu_config(synth_dataset, cache, bf16=bf16), tmp_path / "cut", resume=True)
    a, b = state(tmp_path / "whole"), state(tmp_path / "cut")
    assert a["step"] == b["step"] == 18
    for key, value in a["state_dict"].items():
        assert torch.equal(value, b["state_dict"][key]), key


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_torchrun_one_process_trains_over_nccl(synth_dataset, tmp_path):
    cfg = gpu_config(synth_dataset, tmp_path / "cache", bf16=True)
    cfg["optim"]["epochs"] = 1
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    env = {k: v for k, v in os.environ.items() if k not in {"RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_PORT"}}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes=1", "--nproc-per-node=1",
           "--master-addr=127.0.0.1", f"--master-port={_free_port()}", "-m", "focaltag", "train",
           "--config", "cfg.yaml", "--out", "run"]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "1 processes, backend nccl" in proc.stderr  # torchrun's one process joined an NCCL group
    assert len(metrics(tmp_path / "run")) == 1


@pytest.fixture(scope="module")
def recordings(music_dir: Path) -> list[Path]:
    return sorted(p for p in music_dir.iterdir() if p.suffix in {".mp3", ".ogg"})


@pytest.fixture(scope="module")
def trained_fcn(won2020_models_dir: Path) -> Any:
    from focaltag.models import load_model

    tags = [t for t in (won2020_models_dir / "tags-jamendo-top50.txt").read_text().split("\n") if t.strip()]
    return load_model(won2020_models_dir / "jamendo-fcn.pth", tag_names=tags).eval()


def _top5(p: np.ndarray) -> list[int]:
    return sorted(np.argsort(-p)[:5].tolist())


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_tagger_on_cuda_matches_cpu_float32(precision, trained_fcn, recordings):
    from focaltag.inference.tagger import Tagger

    cpu = Tagger(trained_fcn, device="cpu", precision="fp32")
    gpu = Tagger(trained_fcn, device="cuda", precision=precision)
    tolerance = 2e-3 if precision == "bf16" else 1e-4
    for path in recordings:
        want = np.array(list(cpu.tag(path).probabilities.values()))
        got = np.array(list(gpu.tag(path).probabilities.values()))
        assert float(np.abs(got - want).max()) <= tolerance, path.name
        assert _top5(got) == _top5(want), path.name


def test_predict_on_cuda_equals_cpu(synth_dataset, tmp_path):
    from focaltag.cli import main
    from focaltag.models import create_model, save_model

    model = create_model("short_chunk_resnet", n_tags=56, width=16).eval()
    ckpt = save_model(model, tmp_path / "m.pt")
    tsv = next((synth_dataset / "splits" / "split-0").glob("*validation.tsv"))
    assert main(["data", "prepare", "--dataset-dir", str(synth_dataset), "--part", "validation",
                 "--cache", str(tmp_path / "cache"), "-q"]) == 0
    outs = {}
    for device in ("cpu", "cuda"):
        out = tmp_path / f"{device}.npy"
        assert main(["predict", "--model", str(ckpt), "--tsv", str(tsv), "--cache", str(tmp_path / "cache"),
                     "-o", str(out), "--device", device, "--precision", "fp32", "-q"]) == 0
        outs[device] = np.load(out)
    assert outs["cuda"].shape == outs["cpu"].shape
    assert float(np.abs(outs["cuda"] - outs["cpu"]).max()) < 1e-4
