"""Inference precision (bf16 / fp32 choice, autocast, close-call re-check) and parallel decoding workers."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import soundfile as sf
import torch
from torch import nn

from focaltag import precision as rule
from focaltag.errors import ConfigError
from focaltag.inference import precision as prec
from focaltag.inference.members import TorchMember
from focaltag.inference.tagger import TagFailure, Tagger, TagResult
from focaltag.models.facts import RuntimeFacts, runtime_facts

SR = 16000
CHUNK = 1600
TAGS = tuple(f"mood/theme---t{i}" for i in range(6))


class Dense(nn.Module):
    """Mean-pooled frames through a linear layer: bf16 autocast rounds its matmul, float32 does not."""

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        self.proj = nn.Linear(100, len(TAGS))
        with torch.no_grad():
            self.proj.weight.copy_(torch.randn(len(TAGS), 100, generator=gen))
            self.proj.bias.zero_()
        self.pretrained_cfg = SimpleNamespace(tag_names=TAGS, sample_rate=SR, chunk_samples=CHUNK)
        self.batches: list[int] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.batches.append(len(x))
        frames = x.reshape(len(x), 16, 100).mean(1) * 30.0
        return self.proj(frames)


def _files(folder: Path, n: int, seconds: list[float] | None = None) -> list[Path]:
    rng = np.random.default_rng(1)
    out = []
    for i in range(n):
        dur = seconds[i] if seconds else 0.3 + 0.1 * i
        path = folder / f"f{i:02d}.wav"
        sf.write(path, (0.3 * rng.standard_normal(int(dur * 22050))).astype(np.float32), 22050)
        out.append(path)
    return out


# -- choosing the precision ----------------------------------------------------------------------------------
@pytest.mark.parametrize(("flags", "measured_fast", "fast"), [
    ("fpu sse avx512f avx512_bf16 avx512_vnni", True, True),  # AVX512-BF16 that measured faster (AMD Zen 5)
    ("fpu sse avx512f avx512_bf16 avx512_vnni", False, False),  # ... that measured slower (Intel without AMX)
    ("fpu sse amx_bf16 amx_tile", False, True),  # AMX: fast, nothing measured
    ("fpu sse avx2 avx512f avx512bw", True, False),  # plain AVX512: bf16 would be emulated
    (None, True, False),  # no /proc/cpuinfo (macOS, Windows)
])
def test_fast_bf16_is_read_from_cpu_flags_and_measured_where_they_do_not_settle_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, flags: str | None, measured_fast: bool, fast: bool) -> None:
    monkeypatch.delenv(rule.CPU_BF16_ENV, raising=False)
    asked: list[str] = []
    monkeypatch.setattr(rule, "bf16_measured_fast", lambda path: asked.append(path) or measured_fast)
    path = tmp_path / "cpuinfo"
    if flags is not None:
        path.write_text(f"processor\t: 0\nvendor_id\t: GenuineIntel\nflags\t\t: {flags}\n\nprocessor\t: 1\n")
    assert rule.cpu_has_fast_bf16(str(path)) is fast
    assert len(asked) == (1 if flags is not None and "avx512_bf16" in flags else 0)  # only there is it measured
    # the instructions themselves, fast or not (what bench/tag.py shows bf16 rows for)
    assert rule.cpu_has_bf16_instructions(str(path)) is (flags is not None and ("bf16" in flags))


def test_the_bf16_measurement_is_made_once_per_cpu_and_kept_in_the_cache(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FOCALTAG_CACHE_DIR", str(tmp_path / "cache"))
    path = tmp_path / "cpuinfo"
    path.write_text("processor\t: 0\nmodel name\t: Example Xeon\nflags\t\t: avx512f avx512_bf16\n")
    measured: list[int] = []
    monkeypatch.setattr(rule, "measure_bf16_speedup", lambda: measured.append(1) or 0.64)
    rule.bf16_measured_fast.cache_clear()
    assert rule.bf16_measured_fast(str(path)) is False  # 0.64x float32: bf16 would only cost time
    rule.bf16_measured_fast.cache_clear()  # a new process: reads the cache file instead of measuring
    assert rule.bf16_measured_fast(str(path)) is False and measured == [1]
    (entry,) = json.loads((tmp_path / "cache" / "cpu" / "bf16-speedup.json").read_text()).values()
    assert entry == {"cpu": "Example Xeon", "speedup": 0.64}
    other = tmp_path / "cpuinfo-other"
    other.write_text("processor\t: 0\nmodel name\t: Example EPYC\nflags\t\t: avx512f avx512_bf16\n")
    monkeypatch.setattr(rule, "measure_bf16_speedup", lambda: measured.append(2) or 1.6)
    rule.bf16_measured_fast.cache_clear()
    assert rule.bf16_measured_fast(str(other)) is True and measured == [1, 2]  # another CPU: measured anew
    assert len(json.loads((tmp_path / "cache" / "cpu" / "bf16-speedup.json").read_text())) == 2
    rule.bf16_measured_fast.cache_clear()


def test_the_bf16_measurement_runs_a_real_convolution_both_ways() -> None:
    speedup = rule.measure_bf16_speedup(repeats=1)
    assert 0.05 < speedup < 20  # a ratio of two real timings of the same convolution


@pytest.mark.parametrize("flags", ["fpu sse avx512f avx512_bf16", "fpu sse avx2 fma"])
def test_cpu_bf16_variable_overrides_the_flags_and_is_read_on_every_call(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, flags: str) -> None:
    monkeypatch.setattr(rule, "bf16_measured_fast", lambda path: True)
    path = tmp_path / "cpuinfo"
    path.write_text(f"processor\t: 0\nflags\t\t: {flags}\n")
    from_flags = "avx512_bf16" in flags
    monkeypatch.setenv(rule.CPU_BF16_ENV, "1")
    assert rule.cpu_has_fast_bf16(str(path)) is True
    assert rule.resolve_precision("auto", "cpu") == "bf16"
    monkeypatch.setenv(rule.CPU_BF16_ENV, "0")  # flipped within one process: no stale cached answer
    assert rule.cpu_has_fast_bf16(str(path)) is False
    assert rule.resolve_precision("auto", "cpu") == "fp32"
    monkeypatch.setenv(rule.CPU_BF16_ENV, " ")  # empty: the CPU's own flags again
    assert rule.cpu_has_fast_bf16(str(path)) is from_flags
    monkeypatch.delenv(rule.CPU_BF16_ENV)
    assert rule.cpu_has_fast_bf16(str(path)) is from_flags


@pytest.mark.parametrize("bad", ["yes", "2", "true", "-1"])
def test_cpu_bf16_variable_rejects_other_values(monkeypatch: pytest.MonkeyPatch, bad: str) -> None:
    monkeypatch.setenv(rule.CPU_BF16_ENV, bad)
    with pytest.raises(ConfigError, match=rf"FOCALTAG_CPU_BF16 must be 1 .* or 0 .*got '{bad}'"):
        rule.resolve_precision("auto", "cpu")
    assert rule.resolve_precision("fp32", "cpu") == "fp32"  # not asked about the CPU: not read


def test_cpu_bf16_bad_value_is_one_cli_error_line(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    from focaltag.models import create_model, save_model

    ckpt = save_model(create_model("short_chunk_resnet", width=8), tmp_path / "tiny.pt")
    (song,) = _files(tmp_path, 1, [2.0])
    env = {**os.environ, rule.CPU_BF16_ENV: "yes", "FOCALTAG_CACHE_DIR": str(tmp_path / "cache")}
    done = subprocess.run([sys.executable, "-m", "focaltag", "tag", str(song), "-m", str(ckpt), "--precision",
                           "auto"], env=env, capture_output=True, text=True, timeout=300)
    errors = [line for line in done.stderr.splitlines() if line.startswith("focaltag: error: ")]
    assert done.returncode == 2 and "Traceback" not in done.stderr and len(errors) == 1, done.stderr
    assert errors[0].startswith("focaltag: error: FOCALTAG_CPU_BF16 must be 1") and "'yes'" in errors[0]
    assert done.stdout == ""


def test_auto_follows_the_hardware_and_fp32_opts_out(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rule, "cpu_has_fast_bf16", lambda: True)
    assert rule.resolve_precision("auto", "cpu") == "bf16"
    assert rule.resolve_precision("fp32", "cpu") == "fp32"
    monkeypatch.setattr(rule, "cpu_has_fast_bf16", lambda: False)
    assert rule.resolve_precision("auto", "cpu") == "fp32"
    assert rule.resolve_precision("bf16", "cpu") == "bf16"  # asked for: emulated, with a warning
    monkeypatch.setattr(rule, "cuda_has_bf16", lambda: False)
    assert rule.resolve_precision("auto", "cuda:0") == "fp32"
    with pytest.raises(ConfigError, match="does not support bf16"):
        rule.resolve_precision("bf16", "cuda")
    monkeypatch.setattr(rule, "cuda_has_bf16", lambda: True)
    assert rule.resolve_precision("auto", torch.device("cuda", 1)) == "bf16"
    assert rule.resolve_precision("auto", "mps") == "fp32"
    with pytest.raises(ConfigError, match="cpu or cuda"):
        rule.resolve_precision("bf16", "mps")
    with pytest.raises(ConfigError, match="auto, bf16, fp32"):
        rule.resolve_precision("fp16", "cpu")


def test_auto_keeps_musicnn_float32_on_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    from focaltag.models import create_model

    monkeypatch.setattr(rule, "cpu_has_fast_bf16", lambda: True)
    musicnn, fcn = create_model("musicnn"), create_model("fcn")
    assert prec.resolve_model_precision("auto", "cpu", musicnn) == "fp32"  # bf16 measured no faster
    assert prec.resolve_model_precision("bf16", "cpu", musicnn) == "bf16"  # asked for: given
    assert prec.resolve_model_precision("auto", "cpu", fcn) == "bf16"
    assert TorchMember(musicnn, precision="auto").precision == "fp32"


def test_bf16_member_runs_under_autocast_and_fp32_is_exact() -> None:
    model = Dense()
    batch = np.random.default_rng(0).standard_normal((3, CHUNK)).astype(np.float32)
    with torch.no_grad():
        exact = torch.sigmoid(model(torch.from_numpy(batch))).numpy()
    fp32 = TorchMember(model, precision="fp32")
    bf16 = TorchMember(model, precision="bf16")
    assert (fp32.precision, bf16.precision) == ("fp32", "bf16")
    np.testing.assert_array_equal(fp32(batch), exact)
    low = bf16(batch)
    assert low.dtype == np.float32 and 0 < np.abs(low - exact).max() < 0.05
    np.testing.assert_array_equal(bf16(batch, precision="fp32"), exact)  # the per-call override


def test_onnx_runtime_refuses_bf16() -> None:
    with pytest.raises(ConfigError, match="torch runtime"):
        Tagger(Dense(), runtime="onnx", precision="bf16")


# -- the close-call re-check ---------------------------------------------------------------------------------
def test_recheck_makes_bf16_top_k_and_values_those_of_fp32(tmp_path: Path) -> None:
    files = _files(tmp_path, 5)
    fp32 = {r.file: r for r in Tagger(Dense(), n_chunks=3, precision="fp32").tag_many(files)}
    raw = list(Tagger(Dense(), n_chunks=3, precision="bf16", recheck_margin=0).tag_many(files))
    assert all(r.precision == "bf16" for r in raw)
    assert max(np.abs(r.as_array() - fp32[r.file].as_array()).max() for r in raw) > 0
    # a margin wider than any gap: every track is a close call and is recomputed in float32
    tagger = Tagger(Dense(), n_chunks=3, precision="bf16", recheck_margin=0.99)
    checked = list(tagger.tag_many(files))
    assert tagger.n_rechecked == len(files)
    for r in checked:  # float32 again (to the last bits: a track's chunks now share a batch with no other)
        assert r.precision == "fp32" and [t for t, _ in r.top] == [t for t, _ in fp32[r.file].top]
        np.testing.assert_allclose(r.as_array(), fp32[r.file].as_array(), rtol=0, atol=1e-6)


@pytest.mark.parametrize("keep_bytes", [None, 0], ids=["kept", "over-budget"])
def test_recheck_reuses_the_decoded_chunks_within_the_budget(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                              keep_bytes: int | None) -> None:
    import focaltag.inference.tagger as tagger_module

    if keep_bytes is not None:
        monkeypatch.setattr(tagger_module, "RECHECK_KEEP_BYTES", keep_bytes)
    reads: list[str] = []
    real = tagger_module.iter_chunks

    def counting(plan, **kwargs):  # type: ignore[no-untyped-def]
        reads.append(plan.source)
        return real(plan, **kwargs)

    import focaltag.inference.reading as reading_module

    monkeypatch.setattr(tagger_module, "iter_chunks", counting)  # the re-check's read
    monkeypatch.setattr(reading_module, "iter_chunks", counting)  # the decoding threads' read
    files = _files(tmp_path, 4)
    fp32 = {r.file: r.as_array() for r in Tagger(Dense(), n_chunks=3, precision="fp32").tag_many(files)}
    reads.clear()
    tagger = Tagger(Dense(), n_chunks=3, precision="bf16", recheck_margin=0.99)  # every track re-checked
    checked = {r.file: r.as_array() for r in tagger.tag_many(files)}
    assert tagger.n_rechecked == len(files)
    # within the budget each file is decoded once; over it, once more for the re-check
    assert sorted(reads) == sorted([str(f) for f in files] * (1 if keep_bytes is None else 2))
    for name, probs in checked.items():
        np.testing.assert_allclose(probs, fp32[name], rtol=0, atol=1e-6)


def test_close_call_rule() -> None:
    tagger = Tagger(Dense(), precision="bf16", top_k=2, recheck_margin=0.01)
    assert tagger._close_call(np.array([0.5, 0.2, 0.195, 0.1, 0.0, 0.0]))  # rank 2 vs 3 within 0.01
    assert not tagger._close_call(np.array([0.5, 0.2, 0.1, 0.095, 0.0, 0.0]))  # ranks 3-4 do not matter
    tagger.thresholds = np.full(len(TAGS), 0.3)
    assert tagger._close_call(np.array([0.9, 0.6, 0.305, 0.1, 0.0, 0.0]))  # a decision hangs on 0.005
    assert not Tagger(Dense(), precision="fp32", top_k=2)._close_call(np.array([0.5, 0.5, 0.5, 0, 0, 0]))
    with pytest.raises(ConfigError, match="recheck_margin"):
        Tagger(Dense(), recheck_margin=-0.1)


def test_waveform_close_call_is_recomputed_from_the_array() -> None:
    wave = np.random.default_rng(2).standard_normal(3 * CHUNK).astype(np.float32) * 0.3
    exact = Tagger(Dense(), n_chunks=2, precision="fp32").tag(wave, sr=SR)
    result = Tagger(Dense(), n_chunks=2, precision="bf16", recheck_margin=0.99).tag(wave, sr=SR)
    assert result.precision == "fp32"
    np.testing.assert_array_equal(result.chunk_probabilities, exact.chunk_probabilities)


def test_precision_is_in_the_json_result(tmp_path: Path) -> None:
    import io

    from focaltag.outputs.writers import get_writer

    result = Tagger(Dense(), precision="fp32").tag(_files(tmp_path, 1)[0])
    assert isinstance(result, TagResult) and result.precision == "fp32"
    out = io.StringIO()
    with get_writer("json", out, tag_names=TAGS) as writer:
        writer.write(result)
    assert json.loads(out.getvalue())[0]["precision"] == "fp32"


# -- decoding workers ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("workers", [2, 4])
def test_workers_keep_input_order_results_and_failures(tmp_path: Path, workers: int) -> None:
    files = _files(tmp_path, 9, [0.05, 2.0, 0.1, 1.2, 0.3, 0.05, 3.0, 0.2, 0.7])
    bad = tmp_path / "bad.mp3"
    bad.write_bytes(b"not audio" * 40)
    inputs = [files[0], bad, *files[1:5], tmp_path / "missing.wav", *files[5:]]
    serial = list(Tagger(Dense(), n_chunks=4, batch_size=5, precision="fp32", workers=0).tag_many(inputs))
    model = Dense()
    tagger = Tagger(model, n_chunks=4, batch_size=5, precision="fp32", workers=workers)
    parallel = list(tagger.tag_many(iter(inputs)))  # a one-shot iterator, shared by the workers
    assert [r.file for r in parallel] == [str(p) for p in inputs]
    assert [r.ok for r in parallel] == [r.ok for r in serial] == [True, False] + [True] * 4 + [False] + [True] * 4
    for a, b in zip(parallel, serial, strict=True):
        if isinstance(a, TagFailure):
            assert isinstance(b, TagFailure) and a.error == b.error
        else:
            np.testing.assert_allclose(a.chunk_probabilities, b.chunk_probabilities, rtol=0, atol=1e-6)
    assert model.batches[:-1] == [5] * (len(model.batches) - 1)  # batches span files: only the last is short


def test_abandoned_run_stops_the_workers(tmp_path: Path) -> None:
    import threading

    files = _files(tmp_path, 12)
    before = threading.active_count()
    run = Tagger(Dense(), n_chunks=2, batch_size=1, precision="fp32", workers=3).tag_many(files)
    next(run)
    run.close()
    assert threading.active_count() == before


def test_default_batch_size_follows_the_device(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import focaltag.inference.predictor as predictor_module
    from focaltag.inference.tagger import CPU_BATCH_SIZE, GPU_BATCH_SIZE

    model = Dense()
    tagger = Tagger(model, n_chunks=6, precision="fp32", workers=0)
    assert tagger.batch_size == CPU_BATCH_SIZE == 4
    list(tagger.tag_many(_files(tmp_path, 3)))
    assert max(model.batches) == CPU_BATCH_SIZE  # 18 chunks in passes of at most 4
    assert Tagger(Dense(), batch_size=7).batch_size == 7
    for bad in (0, -2, "8", 2.5, True):
        with pytest.raises(ConfigError, match="batch_size"):
            Tagger(Dense(), batch_size=bad)  # type: ignore[arg-type]
    gpu_member = tagger.members[0]
    gpu_member.device = torch.device("cuda")  # what a member on a GPU reports
    monkeypatch.setattr(predictor_module, "load_members", lambda *a, **k: [gpu_member])
    assert Tagger(Dense()).batch_size == GPU_BATCH_SIZE


def test_bad_workers_value() -> None:
    for bad in (-1, 1.5, True):
        with pytest.raises(ConfigError, match="workers"):
            Tagger(Dense(), workers=bad)  # type: ignore[arg-type]


# -- float32 islands under bf16 autocast ---------------------------------------------------------------------
def test_keep_fp32_runs_listed_submodules_exactly_and_is_removable() -> None:
    model = nn.Sequential(nn.Linear(100, 40), nn.ReLU(), nn.Linear(40, 6)).eval()
    x = torch.randn(4, 100, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        exact = model(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = model(x)
        handles = prec.keep_fp32(model, ["0", "2"])
        assert torch.equal(model(x), exact)  # outside autocast the hooks change nothing
        with torch.autocast("cpu", dtype=torch.bfloat16):
            kept = model(x)
            assert torch.is_autocast_enabled("cpu")  # restored after the float32 module
        for handle in handles:
            handle.remove()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            again = model(x)
    assert low.dtype == torch.bfloat16 and float((low.float() - exact).abs().max()) > 0
    assert kept.dtype == torch.float32 and torch.equal(kept, exact)
    assert again.dtype == torch.bfloat16


def test_fp32_modules_follow_the_architecture() -> None:
    from focaltag.models import create_model

    for arch in ("fcn", "crnn", "short_chunk_resnet"):
        model = create_model(arch, **({"width": 8} if arch == "short_chunk_resnet" else {}))
        names = prec.fp32_modules(model)
        assert names == runtime_facts(model).fp32_modules and names  # declared by the architecture class
        for name in names:
            model.get_submodule(name)  # every listed name exists in the architecture
    assert prec.fp32_modules(create_model("musicnn")) == ()  # its error is small without any
    assert prec.fp32_modules(Dense()) == ()  # unknown models: all bf16


def test_bf16_member_computes_its_architectures_fp32_modules_to_float32_grade(
        monkeypatch: pytest.MonkeyPatch) -> None:
    model = Dense()
    batch = np.random.default_rng(0).standard_normal((64, CHUNK)).astype(np.float32)
    with torch.no_grad():
        exact = torch.sigmoid(model(torch.from_numpy(batch))).numpy()
    plain = np.abs(TorchMember(model, precision="bf16")(batch) - exact).max()
    monkeypatch.setattr(Dense, "runtime_facts", RuntimeFacts(fp32_modules=("proj",)), raising=False)
    member = TorchMember(model, precision="bf16")
    assert member.plan.fp32_modules == ("proj",) and member.plan.precision == "bf16"
    precise = np.abs(member(batch) - exact).max()
    # its only matmul to float32 grade: what is left is the bf16 rounding of the logits (< 2^-9 relative)
    assert precise < plain / 4, (precise, plain)
    assert model.proj.weight.dtype == torch.float32  # the member's own model is the float32 reference


# -- the bf16 inference copy ---------------------------------------------------------------------------------
@pytest.mark.parametrize("make_layer", [lambda: nn.Conv2d(1, 16, 3, stride=2, padding=1),
                                        lambda: nn.Conv1d(3, 8, 5, padding=2), lambda: nn.Linear(100, 6)],
                         ids=["conv2d", "conv1d", "linear"])
def test_compensated_bf16_has_float32_grade_products(make_layer: Callable[[], nn.Module]) -> None:
    from focaltag.inference.compensated import CompensatedBf16

    torch.manual_seed(0)  # the weights do not depend on which tests ran before
    layer = make_layer()
    gen = torch.Generator().manual_seed(0)
    # enough outputs (>= 384) that the share of correctly rounded ones is a rate, not a few coin flips
    shape = {nn.Conv2d: (4, 1, 32, 40), nn.Conv1d: (4, 3, 50), nn.Linear: (64, 100)}[type(layer)]
    x = torch.randn(shape, generator=gen) * 30 + 5  # a dB-like input: large values, small differences
    with torch.no_grad():
        ref = layer.double()(x.double())  # an independent float64 evaluation
        layer.float()
        got = CompensatedBf16(layer)(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            plain = layer(x)
    assert got.dtype == torch.bfloat16
    # the bound: output and bias rounded to bf16 (2^-9 relative each) plus the split's residue (~2^-16)
    err = (got.double() - ref).abs()
    bias = 0.0 if layer.bias is None else float(layer.bias.detach().abs().max())
    assert bool((err <= 2.0 ** -8 * (ref.abs() + bias) + 1e-4).all()), float(err.max())
    # nearly always the correctly rounded float64 result; plain bf16 (x and w rounded too) about half the time
    rounded = ref.to(torch.bfloat16)
    assert float((got == rounded).double().mean()) > 0.95
    assert float((plain == rounded).double().mean()) < 0.8


def test_bf16_inference_copy_leaves_the_model_and_keeps_its_outputs() -> None:
    from focaltag.inference.compensated import CompensatedBf16
    from focaltag.models import create_model

    torch.manual_seed(0)
    model = create_model("short_chunk_resnet", width=8).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    fast = prec.bf16_inference_model(model, prec.fp32_modules(model))
    after = model.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    assert all(p.dtype == torch.float32 for p in model.parameters())
    for name in runtime_facts(model).fp32_modules:
        assert isinstance(fast.get_submodule(name), CompensatedBf16)
    conv = fast.blocks[1].conv1
    assert conv.weight.dtype == torch.bfloat16 and conv.weight.is_contiguous(memory_format=torch.channels_last)
    x = torch.randn(3, model.pretrained_cfg.chunk_samples, generator=torch.Generator().manual_seed(1)) * 0.1
    with torch.inference_mode():
        exact = torch.sigmoid(model(x))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = torch.sigmoid(fast(x).float())
    assert 0 < float((low - exact).abs().max()) < 0.02


@pytest.mark.parametrize("workers", [0, 2])
def test_read_events_are_typed_and_in_order_per_input(tmp_path: Path, workers: int) -> None:
    from focaltag.inference.reading import Chunk, End, Failure, ReadSettings, Start, read_events

    files = _files(tmp_path, 3)
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"not audio")
    settings = ReadSettings(SR, 4000, n_chunks=3)
    events = list(read_events([files[0], bad, files[1], files[2]], None, settings, workers=workers, queue_size=4))
    by_input: dict[int, list[object]] = {}
    for event in events:
        by_input.setdefault(event.index, []).append(event)
    assert sorted(by_input) == [0, 1, 2, 3]
    (failure,) = by_input[1]
    assert isinstance(failure, Failure) and failure.source == str(bad) and "bad.wav" in str(failure.error)
    for i in (0, 2, 3):
        start, *chunks, end = by_input[i]
        assert isinstance(start, Start) and isinstance(end, End) and start.wave is None
        assert [c.position for c in chunks if isinstance(c, Chunk)] == [0, 1, 2]
        assert all(c.samples.shape == (4000,) and c.samples.dtype == np.float32 for c in chunks)
