"""The paper's training recipe: Adam then SGD from the best checkpoint, validation every epoch, exact resume.

``train(config, run_dir)`` runs in one process or, launched by ``torchrun``, as one DDP rank of many (gloo
on CPU, nccl on CUDA). Only rank 0 logs, writes ``metrics.jsonl`` / TensorBoard and saves ``best.pt`` /
``last.pt``; every rank takes the same decisions because validation predictions are gathered on all ranks.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import random
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
import yaml
from torch import nn
from torch.utils.data import DataLoader, Subset

from focaltag._io import write_text
from focaltag._progress import progress
from focaltag.errors import CheckpointError, ConfigError, TrainingDivergedError, first_line
from focaltag.metrics import macro_scores  # the same per-tag scores as focaltag evaluate
from focaltag.models.meta import cfg_of
from focaltag.precision import RunPrecision, autocast, runs_bf16_fast
from focaltag.training import distributed as ddp
from focaltag.training.checkpoint import (
    build_checkpoint,
    capture_rng_state,
    load_checkpoint,
    restore_rng_state,
    save_checkpoint,
)
from focaltag.training.config import MixupConfig, RuntimeConfig, TrainConfig, train_config_from_dict
from focaltag.training.data import RunData, check_cache, load_run_tracks, open_cache, prepare_missing
from focaltag.training.mixup import mixup_batch, mixup_loss
from focaltag.training.samplers import ClassAwareSampler, ShuffleSampler
from focaltag.training.schedule import change_phase, make_optimizer, phase_lr, phase_of_epoch

__all__ = ["train", "TrainingDivergedError", "compute_loss", "macro_scores", "phase_of_epoch", "phase_lr",
           "make_optimizer"]

log = logging.getLogger(__name__)

StepHook = Callable[[int, float], None]


@runtime_checkable
class _SetsOutputBias(Protocol):
    """A model whose output layer's bias ``loss.bias_init`` can set (every built-in architecture)."""

    def set_output_bias(self, value: float | Sequence[float] | torch.Tensor) -> None: ...


def compute_loss(model: nn.Module, loss_fn: nn.Module, inputs: torch.Tensor, targets: torch.Tensor, *,
                 mixup: MixupConfig | None = None, rng: np.random.Generator | None = None,
                 autocast: contextlib.AbstractContextManager[Any] | None = None) -> torch.Tensor:
    """Forward one batch (optionally mixed up) and return the scalar training loss (float32)."""
    batch = None
    if mixup is not None and mixup.enabled:
        batch = mixup_batch(inputs, targets, alpha=mixup.alpha, rng=rng)
        inputs = batch.inputs
    with autocast or contextlib.nullcontext():
        logits = model(inputs)
    logits = logits.float()
    return mixup_loss(loss_fn, logits, batch) if batch is not None else loss_fn(logits, targets)


def _amp_precision(device: torch.device, runtime: RuntimeConfig, main: bool) -> RunPrecision:
    """What the training forward runs in: ``runtime.precision`` on this device (the rule of focaltag.precision).

    ``auto``: bf16 on CUDA GPUs that run it natively, float32 on CPUs (bf16 changes the numerics there, so a CPU
    run asks for it with ``bf16``); ``bf16``: wherever the device runs it fast, else float32 with a note.
    """
    if runtime.precision == "fp32" or (runtime.precision == "auto" and device.type != "cuda"):
        return "fp32"
    if runs_bf16_fast(device):
        return "bf16"
    if main and runtime.precision == "bf16":
        log.info("runtime.precision bf16: this %s has no fast bf16 kernels (on CPUs: AMX, or AVX512-BF16 that "
                 "measured faster than float32); training in float32", "GPU" if device.type == "cuda" else "CPU")
    return "fp32"


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


@contextlib.contextmanager
def _deterministic_kernels(on: bool) -> Iterator[None]:
    """``runtime.deterministic``: the same kernels and reduction orders on every run, so that a GPU run and its
    resume are bit-exact (CPU kernels already are). cuBLAS needs a fixed workspace for that, set before its
    first use unless the user chose one. The process's previous settings come back afterwards."""
    if not on:
        yield
        return
    before = (torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic,
              torch.are_deterministic_algorithms_enabled())
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = False, True
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = before[:2]
        torch.use_deterministic_algorithms(before[2])


def _better(select_by: str, value: float, best: float | None) -> bool:
    if not math.isfinite(value):
        return False
    return best is None or (value > best if select_by == "pr_auc" else value < best)


class _Run:
    """What ``last.pt`` stores about progress besides weights, optimizer, sampler and RNG."""

    _KEYS = ("epoch", "batch", "step", "phase", "best", "best_epoch", "history", "loss_sum", "loss_n")

    def __init__(self) -> None:
        self.epoch = 0  # epoch in progress (0-based)
        self.batch = 0  # batches done in that epoch
        self.step = 0  # optimizer steps in total
        self.phase = 0
        self.best: float | None = None
        self.best_epoch: int | None = None
        self.history: list[dict[str, Any]] = []
        self.loss_sum = 0.0  # training loss summed over the epoch's steps so far
        self.loss_n = 0

    def state(self) -> dict[str, Any]:
        return {key: getattr(self, key) for key in self._KEYS}

    def load(self, state: dict[str, Any]) -> None:
        for key in self._KEYS:
            setattr(self, key, state[key])


def train(config: TrainConfig | dict[str, Any], out_dir: str | os.PathLike[str], *, resume: bool = False,
          on_step: StepHook | None = None) -> dict[str, Any]:
    """Train a tagger with ``config`` into ``out_dir`` (``config.yaml``, ``metrics.jsonl``, ``tensorboard/``,
    ``best.pt``, ``last.pt``) and return a summary dict.

    Args:
        config (TrainConfig or mapping): The run's settings (a mapping is validated first).
        out_dir (path): Run directory; must not hold a run unless ``resume``.
        resume (bool, optional): Continue the run in ``out_dir`` exactly where ``last.pt`` left it (model,
            optimizer, schedule phase, epoch, sampler position, RNG states). (Default: ``False``)
        on_step (callable, optional): Called as ``on_step(step, loss)`` after every optimizer step on every
            rank; an exception raised there stops training like a crash would. (Default: ``None``)

    Raises:
        ConfigError / DataError / CheckpointError: bad settings, data or checkpoint (one line).
        TrainingDivergedError: the loss became NaN/inf (``last.pt`` keeps the last good state).
    """
    cfg = config if isinstance(config, TrainConfig) else train_config_from_dict(dict(config))
    info = ddp.env_dist_info()
    device = ddp.resolve_device(cfg.runtime.device, info)
    info = ddp.init_distributed(device, info)
    if not info.is_main:  # only rank 0 reports progress; warnings still come from every rank
        logging.getLogger("focaltag").setLevel(logging.WARNING)
    finished = False
    try:
        with _deterministic_kernels(cfg.runtime.deterministic):
            trainer = _Trainer(cfg, Path(out_dir), info, device, resume=resume, on_step=on_step)
            summary = trainer.run()
        finished = True
        return summary
    finally:
        ddp.cleanup_distributed(wait_for_others=finished)


class _Trainer:
    """One run: set up from the config (and ``last.pt`` when resuming), then epochs until done or stopped."""

    def __init__(self, cfg: TrainConfig, out: Path, info: ddp.DistInfo, device: torch.device, *, resume: bool,
                 on_step: StepHook | None) -> None:
        self.cfg, self.out, self.info, self.device, self.on_step = cfg, out, info, device, on_step
        self.main = info.is_main
        self.last_path, self.best_path = out / "last.pt", out / "best.pt"
        self.saved = self._read_resume_state(resume)
        if cfg.optim.batch_size % info.world_size:
            raise ConfigError(f"optim.batch_size ({cfg.optim.batch_size}) must be divisible by the number of "
                              f"processes ({info.world_size})")
        self.local_bs = cfg.optim.batch_size // info.world_size
        self.run_state = _Run()
        self.init_report: dict[str, Any] | None = None
        self._setup_data()
        self._setup_model()
        self._setup_loaders()
        self.config_dict = cfg.to_dict()
        self.amp = _amp_precision(device, cfg.runtime, self.main)
        self.writer: Any = None

    # ------------------------------------------------------------------------------------------ setup

    def _read_resume_state(self, resume: bool) -> dict[str, Any] | None:
        """Check the run directory; read ``last.pt`` first, so a bad checkpoint fails before any data work."""
        if not resume:
            if self.last_path.exists():
                raise ConfigError(f"{self.out} already holds a training run (last.pt); pass --resume to continue "
                                  "it or choose another --out")
            return None
        if not self.last_path.is_file():
            raise CheckpointError(f"cannot resume: {self.last_path} does not exist; start the run without --resume")
        saved = load_checkpoint(self.last_path)
        if "training" not in saved:
            raise CheckpointError(f"{self.last_path} holds no training state; it cannot be resumed")
        return saved

    def _setup_data(self) -> None:
        self.data: RunData = load_run_tracks(self.cfg.data)
        prepare_missing(self.cfg.data, self.data, shard=(self.info.rank, self.info.world_size))
        ddp.barrier()
        check_cache(self.cfg.data, self.data)
        self.cache = open_cache(self.cfg.data)

    def _setup_model(self) -> None:
        from focaltag.models import create_model
        from focaltag.training.losses import build_loss, output_bias_init

        cfg, data = self.cfg, self.data
        _seed_everything(cfg.seed)  # the same initial weights on every rank
        kwargs: dict[str, Any] = {"n_tags": len(data.vocab), "tag_names": data.vocab.tags,
                                  **cfg.model.model_kwargs()}
        model = create_model(cfg.model.name, **kwargs)
        self.loss_fn = build_loss(cfg.loss.name, class_counts=data.class_counts, **cfg.loss.hyper)
        if self.saved is None:
            if cfg.model.init_from is not None:
                self._init_from(model, cfg.model.init_from)
            # after init_from, as the reference: a pretrained head must not overwrite the loss's prior bias
            bias = self._output_bias(output_bias_init)
            if bias is not None:
                if not isinstance(model, _SetsOutputBias):
                    raise ConfigError(f"model {cfg.model.name!r} has no set_output_bias, so loss.bias_init "
                                      f"{cfg.loss.bias_init!r} cannot be applied; set loss.bias_init: none")
                model.set_output_bias(bias)
        if self.info.enabled:
            _seed_everything(cfg.seed + 1_000_003 * self.info.rank)  # own dropout / mixup streams per rank
        model.to(self.device)
        self.loss_fn.to(self.device)
        if cfg.runtime.channels_last:
            model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # stub lacks this documented form
        self.model = model
        self.best_state: dict[str, torch.Tensor] | None = None
        if self.saved is not None:
            self._check_resume_config(self.saved.get("config"))
            try:
                model.load_state_dict(self.saved["state_dict"])
            except RuntimeError as err:
                raise CheckpointError(f"{self.last_path} does not fit the configured model "
                                      f"({first_line(err, limit=200)}); resume with the run's config.yaml") from None
            self.run_state.load(self.saved["training"]["run"])
            if self.best_path.is_file():
                self.best_state = load_checkpoint(self.best_path)["state_dict"]
        self.optimizer = make_optimizer(model.parameters(), cfg.optim, self.run_state.phase)
        if self.saved is not None:
            self.optimizer.load_state_dict(self.saved["training"]["optimizer"])
        step_model: Any = torch.compile(model) if cfg.runtime.compile else model
        self.step_model = ddp.wrap_ddp(step_model, self.device, sync_batchnorm=cfg.runtime.sync_batchnorm)

    def _output_bias(self, loss_default: Callable[..., float | None]) -> Any:
        """The output-layer bias ``loss.bias_init`` asks for (None: keep PyTorch's initialisation)."""
        cfg, data = self.cfg, self.data
        if cfg.loss.bias_init == "none":
            return None
        if cfg.loss.bias_init == "auto":
            return loss_default(cfg.loss.name, **cfg.loss.hyper)
        n = max(len(data.train), 1)
        prior = np.clip(data.class_counts / n, 0.5 / n, 1.0 - 0.5 / n)
        return torch.as_tensor(np.log(prior / (1.0 - prior)), dtype=torch.float32)

    def _init_from(self, model: nn.Module, path: str) -> None:
        """Load the name- and shape-matching entries of ``path`` and report what was loaded and skipped."""
        from focaltag.models import load_matching_weights

        loaded, skipped = load_matching_weights(model, path)
        if self.main:
            log.info("init from %s: loaded %d tensors, skipped %d%s", path, len(loaded), len(skipped),
                     "".join(f"\n  skipped {k}: {why}" for k, why in skipped[:20]))
        self.init_report = {"path": str(path), "loaded": len(loaded), "skipped": [k for k, _ in skipped]}

    def _check_resume_config(self, saved: dict[str, Any] | None) -> None:
        """Warn about settings that differ from the checkpoint's (runtime changes are expected)."""
        if not saved or not self.main:
            return
        changed = [f"{sec}.{k}" for sec, vals in self.cfg.to_dict().items() if isinstance(vals, dict)
                   and sec != "runtime" for k, v in vals.items() if saved.get(sec, {}).get(k) != v]
        if changed:
            log.warning("resuming with changed settings: %s", ", ".join(changed))

    def _setup_loaders(self) -> None:
        from focaltag.data.torch_dataset import EvalChunkDataset, TrainChunkDataset

        cfg, data, info = self.cfg, self.data, self.info
        chunk = int(cfg_of(self.model).chunk_samples)
        self.train_ds = TrainChunkDataset(self.cache, data.train, data.vocab, chunk, cfg.seed)
        if cfg.sampling.name == "class_aware":
            self.sampler: ShuffleSampler | ClassAwareSampler = ClassAwareSampler(
                data.train_labels, draws_per_tag=cfg.sampling.draws_per_tag,
                epoch_divisor=cfg.sampling.epoch_divisor, seed=cfg.seed, num_replicas=info.world_size,
                rank=info.rank)
        else:
            self.sampler = ShuffleSampler(len(self.train_ds), seed=cfg.seed, num_replicas=info.world_size,
                                          rank=info.rank)
        if self.saved is not None:
            self.sampler.load_state_dict(self.saved["training"]["sampler"])
        self.loader_gen = torch.Generator()  # worker seeds from (seed, epoch), never from the global RNG
        pin = self.device.type == "cuda"
        self.train_loader = DataLoader(self.train_ds, batch_size=self.local_bs, sampler=self.sampler,
                                       drop_last=True, num_workers=cfg.runtime.num_workers, pin_memory=pin,
                                       generator=self.loader_gen)
        full = self.sampler.num_samples // self.local_bs
        if full == 0:
            raise ConfigError(f"an epoch has {self.sampler.num_samples} samples per process, fewer than one batch "
                              f"of {self.local_bs}; lower optim.batch_size")
        self.n_batches = min(full, cfg.runtime.max_steps_per_epoch or full)
        val_ds = EvalChunkDataset(self.cache, data.validation, data.vocab, chunk, cfg.validation.n_chunks)
        self.val_idx = list(range(info.rank, len(val_ds), info.world_size))
        self.val_loader = DataLoader(Subset(val_ds, self.val_idx), batch_size=cfg.validation.tracks_per_batch,
                                     shuffle=False, num_workers=cfg.runtime.num_workers, pin_memory=pin)

    # ------------------------------------------------------------------------------------------ run

    def run(self) -> dict[str, Any]:
        cfg, run = self.cfg, self.run_state
        if self.main:
            self._open_outputs()
        if self.saved is not None:
            rng = self.saved["training"]["rng"]  # one entry per rank
            restore_rng_state(rng[self.info.rank] if len(rng) == self.info.world_size else rng[0])
            if self.main:
                log.info("resumed %s at epoch %d, batch %d (step %d)", self.out, run.epoch + 1, run.batch, run.step)
        stopped = None
        self.last_saved_step = run.step if self.saved is not None else -1
        try:
            while run.epoch < cfg.optim.epochs:
                if self._step_limit_reached() and run.batch < self.n_batches:
                    stopped = "max_steps"
                    break
                t0, steps = time.perf_counter(), self._train_epoch()
                if run.batch < self.n_batches:
                    stopped = "max_steps"
                    break
                self._end_epoch(steps, time.perf_counter() - t0)
            if stopped and run.step != self.last_saved_step:
                self._save_last()
        finally:
            if self.writer is not None:
                self.writer.close()
        summary = {"run_dir": str(self.out), "epochs_completed": run.epoch, "steps": run.step, "stopped": stopped,
                   "best_epoch": run.best_epoch, "select_by": cfg.validation.select_by, "best": run.best,
                   "last": run.history[-1] if run.history else None, "data": self.data.summary()}
        if self.init_report is not None:
            summary["init_from"] = self.init_report
        return summary

    def _open_outputs(self) -> None:
        from torch.utils.tensorboard import SummaryWriter

        cfg = self.cfg
        self.out.mkdir(parents=True, exist_ok=True)
        write_text(self.out / "config.yaml", yaml.safe_dump(self.config_dict, sort_keys=False))
        purge = self.run_state.step if self.saved is not None else None
        self.writer = SummaryWriter(str(self.out / "tensorboard"), purge_step=purge)
        log.info("training %s (%s; %.2f s chunks) on %s: %s; %s sampling, %d batches of %d per epoch, loss %s",
                 cfg.model.name, ", ".join(f"{k} {v}" for k, v in cfg.model.model_kwargs().items()) or "defaults",
                 cfg_of(self.model).chunk_seconds, self.device, self.data.summary(),
                 cfg.sampling.name, self.n_batches, cfg.optim.batch_size, cfg.loss.name)

    def _step_limit_reached(self) -> bool:
        limit = self.cfg.runtime.max_steps
        return limit is not None and self.run_state.step >= limit

    def _train_epoch(self) -> int:
        """Enter the epoch's schedule phase and train its remaining batches; returns the steps taken."""
        cfg, run, device = self.cfg, self.run_state, self.device
        epoch = run.epoch
        phase = phase_of_epoch(cfg.optim, epoch)
        if phase != run.phase:
            self.optimizer = change_phase(self.model, self.optimizer, cfg.optim, run.phase, phase, self.best_state,
                                          verbose=self.main)
            run.phase = phase
        self.train_ds.set_epoch(epoch)
        self.sampler.set_epoch(epoch)  # keeps a resumed mid-epoch position, resets it for a new epoch
        if run.batch == 0:
            run.loss_sum, run.loss_n = 0.0, 0
        if run.batch >= self.n_batches:
            return 0
        self.loader_gen.manual_seed(cfg.seed * 100_003 + epoch)
        bar = progress(total=self.n_batches, initial=run.batch, desc=f"epoch {epoch + 1}/{cfg.optim.epochs}",
                       unit="batch", disable=None if self.main else True)
        steps, t0 = 0, time.perf_counter()
        every = cfg.runtime.checkpoint_every_steps
        for inputs, targets in self.train_loader:
            inputs = inputs.to(device, non_blocking=True)
            targets = targets.to(device, non_blocking=True)
            rng = np.random.default_rng([cfg.seed, self.info.rank, run.step, 0x317])  # mixup, resumable
            loss = compute_loss(self.step_model, self.loss_fn, inputs, targets, mixup=cfg.mixup, rng=rng,
                                autocast=autocast(device, self.amp))
            value = float(ddp.all_reduce_mean(loss.detach()))  # NaN on any rank stops every rank
            if not math.isfinite(value):
                self._diverged(value)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            run.batch, run.step, steps = run.batch + 1, run.step + 1, steps + 1
            run.loss_sum += value
            run.loss_n += 1
            bar.update()
            bar.set_postfix(loss=f"{run.loss_sum / run.loss_n:.4f}",
                            samples_s=f"{steps * cfg.optim.batch_size / max(time.perf_counter() - t0, 1e-9):.1f}")
            if self.writer is not None and run.step % cfg.runtime.log_every_steps == 0:
                self.writer.add_scalar("train/loss", value, run.step)
            if self.on_step is not None:
                self.on_step(run.step, value)
            done = run.batch >= self.n_batches
            if not done and ((every and run.step % every == 0) or self._step_limit_reached()):
                self._save_last()
            if done or self._step_limit_reached():
                break
        bar.close()
        return steps

    def _diverged(self, value: float) -> None:
        run = self.run_state
        kept = (f"{self.last_path} keeps the last good state" if self.last_path.is_file()
                else "no checkpoint had been saved yet")
        raise TrainingDivergedError(
            f"training loss became {value} at epoch {run.epoch + 1}, step {run.step + 1} (lr "
            f"{self.optimizer.param_groups[0]['lr']:g}); stopped, {kept}; lower the learning rate or check the "
            "data, then --resume or start again")

    def _end_epoch(self, steps: int, seconds: float) -> None:
        """Validate, keep the best weights, save ``last.pt`` and the metrics."""
        cfg, run = self.cfg, self.run_state
        ddp.average_buffers(self.model)
        truth, pred, val_loss = self._validate()
        scores = macro_scores(truth, pred)
        row = {"epoch": run.epoch + 1, "step": run.step, "phase": run.phase,
               "lr": self.optimizer.param_groups[0]["lr"],
               "train_loss": run.loss_sum / run.loss_n if run.loss_n else None, "val_loss": val_loss,
               "val_pr_auc": scores["pr_auc"], "val_roc_auc": scores["roc_auc"], "tags_scored": scores["tags_scored"],
               "samples_per_s": round(steps * cfg.optim.batch_size / max(seconds, 1e-9), 2)}
        select = val_loss if cfg.validation.select_by == "loss" else scores["pr_auc"]
        row["best"] = _better(cfg.validation.select_by, select, run.best)
        if row["best"]:
            run.best, run.best_epoch = select, run.epoch + 1
            self.best_state = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
            if self.main:
                save_checkpoint(self.best_path, build_checkpoint(
                    self.model, config=self.config_dict, epoch=run.epoch + 1, step=run.step, best=run.best,
                    metrics=dict(row)))
        run.history.append(row)
        run.epoch, run.batch = run.epoch + 1, 0
        self._save_last()
        if self.main:
            self._write_metrics(row)
            log.info("epoch %d/%d: loss %.4f, val loss %.4f, PR-AUC %.4f, ROC-AUC %.4f%s", row["epoch"],
                     cfg.optim.epochs, row["train_loss"] or float("nan"), val_loss, scores["pr_auc"],
                     scores["roc_auc"], " (best)" if row["best"] else "")

    @torch.no_grad()
    def _validate(self) -> tuple[np.ndarray, np.ndarray, float]:
        """(ground truth, mean-of-chunk sigmoid predictions, mean chunk loss) of the whole validation split,
        gathered from every rank's share."""
        model, device = self.model, self.device
        model.eval()
        preds, truths, loss_sum, rows = [], [], 0.0, 0
        for chunks, targets in self.val_loader:
            b, k, t = chunks.shape
            chunks = chunks.to(device, non_blocking=True).reshape(b * k, t)
            targets = targets.to(device, non_blocking=True)
            with autocast(device, self.amp):
                logits = model(chunks)
            logits = logits.float()
            loss_sum += float(self.loss_fn(logits, targets.repeat_interleave(k, dim=0))) * b * k
            rows += b * k
            preds.append(torch.sigmoid(logits).reshape(b, k, -1).mean(dim=1).cpu().numpy())
            truths.append(targets.cpu().numpy())
        model.train()
        n_tags = len(self.data.vocab)
        empty = np.zeros((0, n_tags), np.float32)
        local = (self.val_idx, np.concatenate(preds) if preds else empty,
                 np.concatenate(truths) if truths else empty, loss_sum, rows)
        gathered = ddp.all_gather_objects(local)
        order = np.argsort(np.concatenate([np.asarray(g[0], dtype=np.int64) for g in gathered]))
        pred = np.concatenate([g[1] for g in gathered])[order]
        truth = np.concatenate([g[2] for g in gathered])[order]
        return truth, pred, sum(g[3] for g in gathered) / max(sum(g[4] for g in gathered), 1)

    def _save_last(self) -> None:
        """``last.pt``: weights, optimizer, progress, sampler position and every rank's RNG states."""
        run = self.run_state
        rng = ddp.all_gather_objects(capture_rng_state())
        if self.main:
            training = {"run": run.state(), "optimizer": self.optimizer.state_dict(),
                        "sampler": self.sampler.state_dict(consumed=run.batch * self.local_bs), "rng": rng}
            save_checkpoint(self.last_path, build_checkpoint(self.model, config=self.config_dict, epoch=run.epoch,
                                                             step=run.step, best=run.best, training=training))
        self.last_saved_step = run.step

    def _write_metrics(self, row: dict[str, Any]) -> None:
        """Rewrite ``metrics.jsonl`` from the history (a resumed run never duplicates rows); log to TensorBoard."""
        write_text(self.out / "metrics.jsonl", "".join(json.dumps(r) + "\n" for r in self.run_state.history))
        for key in ("train_loss", "val_loss", "val_pr_auc", "val_roc_auc", "lr", "samples_per_s"):
            value = row.get(key)
            if value is not None and math.isfinite(value):
                self.writer.add_scalar(f"epoch/{key}", value, row["epoch"])
        self.writer.flush()
