"""Every bad invocation ends in one ``focaltag: error: ...`` line and the right exit code, never a traceback.

Exit codes: 2 for bad input (options, paths that cannot be used), 1 for a failure while running (disk full,
out of memory, an unexpected error). Where the failure is in the operating system (a full disk behind stdout, a
read-only folder) the real console script runs in a subprocess.
"""

from __future__ import annotations

import argparse
import errno
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from focaltag.cli import build_parser, main

FOCALTAG = Path(sys.executable).with_name("focaltag")


def _one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert "Traceback" not in err
    assert len(lines) == 1, err
    assert lines[0].startswith("focaltag: error: "), err
    return lines[0]


@pytest.fixture()
def members(tmp_path: Path) -> list[str]:
    rng = np.random.default_rng(0)
    paths = []
    for name in ("a", "b"):
        path = tmp_path / f"{name}.npy"
        np.save(path, rng.random((20, 3)).astype(np.float32))
        paths.append(str(path))
    return paths


# ------------------------------------------------------------------------------------------------ help texts
def _walk(parser: argparse.ArgumentParser, path: list[str]):
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _walk(sub, [*path, name])


def test_help_shows_real_defaults_only() -> None:
    seen = 0
    for path, parser in _walk(build_parser(), []):
        text = parser.format_help()
        seen += 1
        for fake in ("(default: None)", "(default: False)", "(default: True)", "(default: [])",
                     "(default: ==SUPPRESS==)"):
            assert fake not in text, f"'focaltag {' '.join(path)} --help' shows {fake}"
        # Python's None is no value a user can type: help says "default: ..." in words instead
        assert "None" not in text, f"'focaltag {' '.join(path)} --help' mentions None"
        for action in parser._actions:
            if action.required and action.option_strings:
                help_text = parser._get_formatter()._expand_help(action) if action.help else ""
                assert "(default:" not in help_text, f"{path}: required {action.option_strings} shows a default"
    assert seen >= 12  # every command and subcommand was walked


def test_help_shows_a_real_default_and_keeps_example_line_breaks(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["tag", "--help"])
    out = capsys.readouterr().out
    flat = " ".join(out.split())
    assert "(default: usc-sail-2020, the paper's ensemble)" in flat
    assert "auto (the default): the same 16 positions" in flat
    assert "~2x faster" not in out
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    assert "\n  focaltag train --out runs/bce --resume\n" in capsys.readouterr().out


def test_no_unpack_help_says_what_the_flag_does(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["data", "download", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "unpack=" not in out
    assert "--no-unpack only download and verify the tars" in out


def test_tag_optimize_default_is_none() -> None:
    args = build_parser().parse_args(["tag", "x.wav", "-m", "m.pt"])
    assert args.optimize == "none"


def test_predict_batch_size_is_explicit() -> None:
    """predict no longer raises --batch-size silently: unset means one track's chunks, a given N is kept."""
    parser = build_parser()
    base = ["predict", "-m", "m.pt", "--tsv", "s.tsv", "--cache", "c", "-o", "p.npy", "--chunks", "32"]
    assert parser.parse_args(base).batch_size is None
    assert parser.parse_args([*base, "--batch-size", "8"]).batch_size == 8


# -------------------------------------------------------------------------------------------------- devices
@pytest.mark.parametrize("device, expected", [
    ("gpu", "is not a device"),
    ("cuda:x", "is not a device"),
    ("cuda:7", "cuda:7"),
    ("cuda", "cuda"),
])
def test_bad_device_is_one_line(device: str, expected: str, tmp_path: Path,
                                capsys: pytest.CaptureFixture[str]) -> None:
    import torch

    if device.startswith("cuda") and device[4:] in ("", ":7"):
        if device == "cuda" and torch.cuda.is_available():
            pytest.skip("this machine has CUDA")
        if device == "cuda:7" and torch.cuda.device_count() > 7:
            pytest.skip("this machine has 8 GPUs")
    audio = tmp_path / "x.wav"
    audio.write_bytes(b"")
    rc = main(["tag", str(audio), "-m", str(tmp_path / "missing.pt"), "--device", device, "-q"])
    line = _one_error_line(capsys.readouterr().err)
    assert rc == 2
    assert "--device" in line and expected in line


def test_bad_device_in_the_api_is_a_config_error() -> None:
    from focaltag.devices import check_device_name, resolve_device
    from focaltag.errors import ConfigError

    assert check_device_name("CUDA:1") == "cuda:1"
    assert resolve_device("cpu") == "cpu"
    with pytest.raises(ConfigError, match="runtime.device 'tpu' is not a device"):
        resolve_device("tpu", option="runtime.device")


def test_training_device_is_checked_against_this_machine() -> None:
    import torch

    from focaltag.errors import ConfigError
    from focaltag.training.config import RuntimeConfig
    from focaltag.training.distributed import DistInfo, resolve_device

    with pytest.raises(ConfigError, match="runtime.device 'gpu' is not a device"):
        RuntimeConfig(device="gpu")
    assert resolve_device("cpu", DistInfo()) == torch.device("cpu")
    if torch.cuda.device_count() <= 7:
        with pytest.raises(ConfigError, match="runtime.device 'cuda:7'"):
            resolve_device("cuda:7", DistInfo())


# ------------------------------------------------------------------------------------------ optional extras
def test_export_without_onnx_names_the_pip_command(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setitem(sys.modules, "onnx", None)  # ``import onnx`` raises ImportError
    rc = main(["export", "-m", str(tmp_path / "m.pt"), "--onnx", str(tmp_path / "m.onnx")])
    line = _one_error_line(capsys.readouterr().err)
    assert rc == 2
    assert "pip install 'focaltag[onnx]'" in line and "onnx" in line


def test_tag_runtime_onnx_without_onnxruntime_names_the_pip_command(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from focaltag.models import create_model, save_model

    # an earlier main() bound the root log handler to that test's (now closed) captured stderr
    monkeypatch.setattr(logging.getLogger(), "handlers", [])
    model = save_model(create_model("short_chunk_resnet", width=4), tmp_path / "tiny.pt")
    audio = tmp_path / "x.wav"
    audio.write_bytes(b"")
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    rc = main(["tag", str(audio), "-m", str(model), "--runtime", "onnx", "-q"])
    line = _one_error_line(capsys.readouterr().err)
    assert rc == 2
    assert "pip install 'focaltag[onnx]'" in line


# ------------------------------------------------------------------------------- failures while running
@pytest.mark.parametrize("exc, code, expected", [
    (RuntimeError("boom\nsecond line"), 1, "unexpected RuntimeError: boom (run with -v for details)"),
    (MemoryError(), 1, "out of memory; lower --batch-size"),
    (RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB"), 1, "CUDA out of memory; lower --batch-size"),
    (OSError(errno.ENOSPC, "No space left on device", "/data/out.npy"), 1,
     "cannot write /data/out.npy: No space left on device"),
    (PermissionError(errno.EACCES, "Permission denied", "/data/out.npy"), 2, "/data/out.npy: Permission denied"),
    (OSError(errno.EIO, "Input/output error"), 1, "Input/output error (OSError; run with -v for details)"),
    (RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory"), 1,
     "out of memory; lower --batch-size"),
])
def test_unexpected_errors_are_one_line(exc: BaseException, code: int, expected: str, members: list[str],
                                        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    import focaltag.evaluation.ensemble as ensemble

    def fail(*_args: object, **_kwargs: object) -> None:
        raise exc

    monkeypatch.setattr(ensemble, "mean_ensemble", fail)
    rc = main(["ensemble", "-o", str(tmp_path / "e.npy"), *members])
    line = _one_error_line(capsys.readouterr().err)
    assert rc == code
    assert expected in line


def test_torch_cuda_out_of_memory_gets_the_batch_size_hint(members: list[str], tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    import torch

    import focaltag.evaluation.ensemble as ensemble

    def fail(*_args: object, **_kwargs: object) -> None:
        raise torch.cuda.OutOfMemoryError("Tried to allocate 20.00 MiB")

    monkeypatch.setattr(ensemble, "mean_ensemble", fail)
    assert main(["ensemble", "-o", str(tmp_path / "e.npy"), *members]) == 1
    assert "lower --batch-size" in _one_error_line(capsys.readouterr().err)


def test_verbose_adds_the_traceback(members: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    import focaltag.evaluation.ensemble as ensemble

    def fail(*_args: object, **_kwargs: object) -> None:
        raise ZeroDivisionError("division by zero")

    monkeypatch.setattr(ensemble, "mean_ensemble", fail)
    assert main(["ensemble", "-v", "-o", str(tmp_path / "e.npy"), *members]) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and "ZeroDivisionError" in err
    assert err.rstrip().splitlines()[-1].startswith("focaltag: error: unexpected ZeroDivisionError")


def test_output_under_a_file_is_one_line(members: list[str], tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    assert main(["ensemble", "-o", str(blocker / "e.npy"), *members]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert str(blocker) in line and "not a folder" in line


# ------------------------------------------------------------------------- the real OS: /dev/full, read-only
def _run_cli(args: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    if not FOCALTAG.exists():
        pytest.skip(f"console script not installed next to {sys.executable}")
    return subprocess.run([str(FOCALTAG), *args], capture_output="stdout" not in kwargs, text=True,
                          timeout=120, check=False, **kwargs)  # type: ignore[call-overload]


def test_stdout_on_a_full_disk_is_one_line(members: list[str]) -> None:
    if not Path("/dev/full").exists():
        pytest.skip("no /dev/full on this system")
    with open("/dev/full", "w") as full:
        proc = subprocess.run([str(FOCALTAG), "ensemble", "--json", "-o", os.devnull, *members], stdout=full,
                              stderr=subprocess.PIPE, text=True, timeout=120, check=False)
    line = _one_error_line(proc.stderr)
    assert proc.returncode == 1
    assert "No space left on device" in line


@pytest.mark.parametrize("args", [["--help"], ["tag", "--help"], ["--version"]])
def test_help_on_a_full_disk_is_one_line(args: list[str]) -> None:
    """argparse drops write errors of --help / --version; focaltag reports them instead of exiting 0."""
    if not Path("/dev/full").exists():
        pytest.skip("no /dev/full on this system")
    with open("/dev/full", "w") as full:
        proc = subprocess.run([str(FOCALTAG), *args], stdout=full, stderr=subprocess.PIPE, text=True, timeout=120,
                              check=False)
    assert "No space left on device" in _one_error_line(proc.stderr)
    assert proc.returncode == 1


def _read_only_dir(tmp_path: Path) -> tuple[Path, list[str]]:
    """A folder where creating a file really fails, and a command prefix that makes it so.

    chmod is not enough as root (root ignores permission bits), so root gets a read-only tmpfs mounted in a
    private mount namespace (``unshare -m``), which refuses writes to everyone with EROFS and disappears with
    the process. Other users get a 0o555 folder (EACCES).
    """
    target = tmp_path / "ro"
    target.mkdir()
    if os.geteuid() != 0:
        target.chmod(0o555)
        return target, []
    unshare = shutil.which("unshare")
    if unshare is None:
        pytest.skip("running as root without unshare(1): no way to make a folder read-only for root")
    probe = subprocess.run([unshare, "-m", "sh", "-c", f"mount -t tmpfs -o ro tmpfs {target} && touch "
                            f"{target}/x"], capture_output=True, text=True, check=False)
    if "Read-only file system" not in probe.stderr:
        pytest.skip(f"cannot mount a read-only tmpfs here ({probe.stderr.strip()[:120]})")
    return target, [unshare, "-m", "sh", "-c", f'mount -t tmpfs -o ro tmpfs {target} && exec "$@"', "sh"]


def test_read_only_output_folder_is_one_line(members: list[str], tmp_path: Path) -> None:
    folder, prefix = _read_only_dir(tmp_path)
    out = folder / "ensemble.npy"
    if not FOCALTAG.exists():
        pytest.skip(f"console script not installed next to {sys.executable}")
    proc = subprocess.run([*prefix, str(FOCALTAG), "ensemble", "-o", str(out), *members], capture_output=True,
                          text=True, timeout=120, check=False)
    line = _one_error_line(proc.stderr)
    assert proc.returncode == 2
    assert str(out) in line
    assert "Read-only file system" in line or "Permission denied" in line
    assert not out.exists()


def test_missing_input_file_is_one_line(tmp_path: Path) -> None:
    proc = _run_cli(["evaluate", "--ground-truth", str(tmp_path / "gt.npy"), "--predictions",
                     str(tmp_path / "p.npy")])
    _one_error_line(proc.stderr)
    assert proc.returncode == 2


# --------------------------------------------------------------------------------------------- torchrun ranks
@pytest.mark.parametrize("rank, printed", [("0", True), ("1", False)])
def test_only_rank_zero_prints_the_train_summary(rank: str, printed: bool, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    import focaltag.training.config as config
    import focaltag.training.loop as loop

    summary = {"run_dir": str(tmp_path), "epochs_completed": 1, "steps": 3, "best_epoch": 1,
               "select_by": "pr_auc", "best": 0.5, "stopped": False}
    monkeypatch.setattr(config, "load_train_config", lambda path, overrides: object())
    monkeypatch.setattr(loop, "train", lambda cfg, out, resume: summary)
    monkeypatch.setenv("RANK", rank)
    monkeypatch.setenv("WORLD_SIZE", "2")
    cfg = tmp_path / "c.yaml"
    cfg.write_text("{}\n")
    assert main(["train", "--config", str(cfg), "--out", str(tmp_path / "run"), "-q"]) == 0
    out = capsys.readouterr().out
    assert ('"steps": 3' in out) is printed


def test_atomic_write_writes_into_a_device_or_pipe_instead_of_replacing_it(tmp_path: Path) -> None:
    """``-o /dev/stdout`` or a pipe must be written, never renamed over (which would replace a device as root)."""
    import stat
    import threading

    from focaltag._io import atomic_write

    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_bytes()))
    reader.start()
    with atomic_write(fifo, "wb") as fh:
        fh.write(b"matrix bytes")
    reader.join(timeout=30)
    assert got == [b"matrix bytes"]
    assert stat.S_ISFIFO(fifo.stat().st_mode)
    assert [p.name for p in tmp_path.iterdir()] == ["pipe"]  # no temp file left behind
