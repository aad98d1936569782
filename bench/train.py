"""Training throughput: focaltag's loop step vs a plain reference-style step on the same network.

The reference-style step is what the paper's code does: eager, float32, NCHW, ``sigmoid`` + ``BCELoss``.
focaltag's step is the training loop's own (``compute_loss`` + the loop's fused Adam) with the loop's
defaults: channels_last, and bf16 autocast on CUDA. Optional extras: ``--compile`` (torch.compile) and,
on CPUs with AMX / AVX512-BF16, bf16 autocast (``runtime.precision: bf16``). Variants are timed interleaved,
step by step, for ``--repeats`` rounds (the order reversed every other round; ``bench/_protocol.py``); each
figure is the median [min-max] of the rounds and a speed-up is taken within each round. On CPU the default is ONE
thread and the figures use process CPU time: on a shared machine, wall time mostly measures the other
processes. Writes ``bench/results/<date>_train_<cpu kind>.json`` and prints it.

    .venv/bin/python bench/train.py [--width 128] [--batch 32] [--repeats 3] [--threads 1] [--compile] [--quick]
"""

from __future__ import annotations

import argparse
import contextlib
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from _protocol import Run, add_protocol_arguments, ratio_summary, summary
from focaltag.models import create_model
from focaltag.training.config import OptimConfig
from focaltag.training.loop import compute_loss
from focaltag.training.losses import build_loss
from focaltag.training.schedule import make_optimizer

Step = Callable[[], None]


def cpu_bf16_supported() -> bool:
    """Whether this CPU has bf16 instructions (AMX / AVX512-BF16), so a bf16 training step is worth timing beside
    float32's (``runtime.precision: auto`` takes bf16 only where it also measured faster)."""
    from focaltag.precision import cpu_has_bf16_instructions, cpu_has_fast_bf16

    return cpu_has_fast_bf16() or cpu_has_bf16_instructions()


def make_model(args: argparse.Namespace, device: torch.device) -> nn.Module:
    torch.manual_seed(0)
    return create_model("short_chunk_resnet", n_tags=56, width=args.width, variant=args.variant).to(device)


def reference_step(args: argparse.Namespace, device: torch.device, x: torch.Tensor, y: torch.Tensor) -> Step:
    """The paper code's loop body: eager float32 NCHW, sigmoid outputs, BCELoss, Adam."""
    model = make_model(args, device).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4, weight_decay=1e-4)
    criterion = nn.BCELoss()

    def step() -> None:
        out = torch.sigmoid(model(x))
        loss = criterion(out, y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    return step


def focaltag_step(args: argparse.Namespace, device: torch.device, x: torch.Tensor, y: torch.Tensor, *,
                  bf16: bool, compile_model: bool) -> Step:
    """focaltag's loop body (compute_loss + Adam) with channels_last and optional bf16 / torch.compile."""
    model = make_model(args, device).train().to(memory_format=torch.channels_last)
    optimizer = make_optimizer(model.parameters(), OptimConfig(adam_lr=1e-4), phase=0)  # the loop's Adam
    loss_fn = build_loss("bce").to(device)
    net = torch.compile(model) if compile_model else model

    def step() -> None:
        autocast = torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
        loss = compute_loss(net, loss_fn, x, y, autocast=autocast)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def timed(step: Step, device: torch.device) -> tuple[float, float]:
    """(wall seconds, process CPU seconds) of one step."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t0, c0 = time.perf_counter(), time.process_time()
    step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - t0, time.process_time() - c0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=int, default=128, help="network width (128 = the paper's)")
    parser.add_argument("--variant", default="paper", choices=("paper", "won2020"))
    parser.add_argument("--batch", type=int, default=32, help="batch size (32: the paper's)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads (1: steady timings on a shared CPU)")
    parser.add_argument("--compile", action="store_true", help="also time torch.compile (slow to compile on CPU)")
    add_protocol_arguments(parser, quick="width 32, batch 8")
    args = parser.parse_args()
    if args.quick:
        args.width, args.batch = 32, 8
    device_name = torch.cuda.get_device_name(torch.device(args.device)) if args.device.startswith("cuda") else None
    run = Run("bench/train.py", args, device=None if device_name is None else {"gpu": device_name},
              kind=None if device_name is None else "cuda-" + device_name.lower().replace(" ", "-"))
    device = torch.device(args.device)
    if device.type == "cpu":
        torch.set_num_threads(args.threads)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    gen = torch.Generator().manual_seed(0)
    chunk = create_model("short_chunk_resnet", n_tags=56, width=8, variant=args.variant).pretrained_cfg.chunk_samples
    x = (0.1 * torch.randn(args.batch, chunk, generator=gen)).to(device)
    y = (torch.rand(args.batch, 56, generator=gen) < 0.05).float().to(device)

    on_cuda = device.type == "cuda"
    variants: dict[str, Step] = {
        "reference": reference_step(args, device, x, y),
        # the loop's defaults: channels_last, bf16 autocast on CUDA only
        "focaltag": focaltag_step(args, device, x, y, bf16=on_cuda, compile_model=False),
    }
    if not on_cuda and cpu_bf16_supported():
        variants["focaltag_cpu_bf16"] = focaltag_step(args, device, x, y, bf16=True, compile_model=False)
    compile_seconds = None
    if args.compile:
        variants["focaltag_compile"] = focaltag_step(args, device, x, y, bf16=on_cuda, compile_model=True)
    t_start = time.perf_counter()
    for name, step in variants.items():  # warm-up (and compilation)
        t0 = time.perf_counter()
        step()
        if name == "focaltag_compile":
            compile_seconds = round(time.perf_counter() - t0, 1)
            step()
    walls: dict[str, list[float]] = {name: [] for name in variants}
    cpus: dict[str, list[float]] = {name: [] for name in variants}
    for r in range(args.repeats):  # one step per variant per round: A B C, C B A, ... (who goes first alternates)
        order = list(variants) if r % 2 == 0 else list(reversed(variants))
        for name in order:
            wall, cpu = timed(variants[name], device)
            walls[name].append(wall)
            cpus[name].append(cpu)
    # CPU time is the steady measure on a shared CPU with one thread; on CUDA (or many threads) it is wall
    use_cpu_time = device.type == "cpu" and args.threads == 1
    times = cpus if use_cpu_time else walls
    ref = times["reference"]
    result: dict[str, Any] = {
        "benchmark": "train_step",
        "device": device_name or "cpu",
        "threads": torch.get_num_threads(),
        "model": f"short_chunk_resnet/{args.variant} width {args.width}",
        "batch": args.batch,
        "timing": "process CPU time" if use_cpu_time else "wall time",
        "variants": {},
    }
    for name, ts in times.items():
        row: dict[str, Any] = {"samples_per_s": summary([args.batch / t for t in ts]),
                               "samples_per_s_wall": summary([args.batch / t for t in walls[name]]),
                               "step_s": summary(ts)}
        if name != "reference":
            row["speedup"] = ratio_summary(ref, ts)
        result["variants"][name] = row
    if compile_seconds is not None:
        result["variants"]["focaltag_compile"]["compile_s"] = compile_seconds
    result["target_speedup"] = 1.3
    result["meets_target"] = result["variants"]["focaltag"]["speedup"]["median"] >= 1.3
    result["seconds"] = round(time.perf_counter() - t_start, 1)
    run.finish(result)


if __name__ == "__main__":
    main()
