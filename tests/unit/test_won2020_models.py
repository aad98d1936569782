"""Won et al. (2020)'s FCN / CRNN / Musicnn: the published checkpoints load exactly, build, train and tag.

The reference forward below is written from the facts in ``../shared/models/README.md`` and the checkpoint
tensors alone (numpy STFT and mel, ``torch.nn.functional`` layers, the GRU equations spelled out), in float64,
so it shares no code with ``focaltag.models.won2020``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from focaltag.errors import CheckpointError, ConfigError, ModelError
from focaltag.models import create_model, list_models, load_model, save_model

CHECKPOINTS = {  # file -> (architecture, tag list)
    "mtat-fcn.pth": ("fcn", "tags-mtat.txt"),
    "mtat-crnn.pth": ("crnn", "tags-mtat.txt"),
    "mtat-musicnn.pth": ("musicnn", "tags-mtat.txt"),
    "jamendo-fcn.pth": ("fcn", "tags-jamendo-top50.txt"),
    "jamendo-crnn.pth": ("crnn", "tags-jamendo-top50.txt"),
    "jamendo-musicnn.pth": ("musicnn", "tags-jamendo-top50.txt"),
    "msd-fcn.pth": ("fcn", "tags-msd.txt"),
    "msd-crnn.pth": ("crnn", "tags-msd.txt"),
}
INPUT_SAMPLES = {"fcn": 464_000, "crnn": 464_000, "musicnn": 48_000}


def _tags(folder: Path, name: str) -> list[str]:
    return [ln.strip() for ln in (folder / name).read_text().splitlines() if ln.strip()]


def _test_signal(n_samples: int, seed: int) -> np.ndarray:
    """Two different 16 kHz test signals: a chord with vibrato, clicks and noise (not silence, not clipped)."""
    rng = np.random.default_rng(seed)
    t = np.arange(n_samples) / 16000.0
    x = np.zeros(n_samples)
    for f0 in rng.uniform(80, 2000, size=4):
        x += 0.2 * np.sin(2 * np.pi * f0 * t + 3 * np.sin(2 * np.pi * 0.5 * t))
    x += 0.05 * rng.standard_normal(n_samples)
    x[:: 4000] += 0.8
    return x


# ----- the independent reference forward (float64) -----

def _logmel(wave: np.ndarray, window: np.ndarray, fb: np.ndarray) -> np.ndarray:
    """Centred reflect-padded frames (hop 256) x window -> |rfft|^2 -> mel (fb) -> 10 log10(max(., 1e-10))."""
    n_fft, hop = window.shape[0], 256
    padded = np.pad(wave, (n_fft // 2, n_fft // 2), mode="reflect")
    n_frames = 1 + wave.shape[0] // hop
    index = np.arange(n_fft)[None, :] + hop * np.arange(n_frames)[:, None]
    power = np.abs(np.fft.rfft(padded[index] * window, axis=1)) ** 2  # (frames, n_fft/2+1)
    mel = power @ fb  # (frames, mels)
    return 10.0 * np.log10(np.maximum(mel, 1e-10)).T  # (mels, frames)


def _bn(x: torch.Tensor, sd: dict[str, torch.Tensor], prefix: str) -> torch.Tensor:
    return F.batch_norm(x, sd[f"{prefix}.running_mean"], sd[f"{prefix}.running_var"], sd[f"{prefix}.weight"],
                        sd[f"{prefix}.bias"], training=False, eps=1e-5)


def _conv_pool(x: torch.Tensor, sd: dict[str, torch.Tensor], layer: str, pool: tuple[int, int]) -> torch.Tensor:
    x = F.conv2d(x, sd[f"{layer}.conv.weight"], sd[f"{layer}.conv.bias"], padding=1)
    return F.max_pool2d(F.relu(_bn(x, sd, f"{layer}.bn")), pool)


def _gru_layer(seq: torch.Tensor, sd: dict[str, torch.Tensor], layer: int) -> torch.Tensor:
    """One GRU layer by its equations (gates in PyTorch's r, z, n order), batch-first, zero initial state."""
    w_ih, w_hh = sd[f"layer5.weight_ih_l{layer}"], sd[f"layer5.weight_hh_l{layer}"]
    b_ih, b_hh = sd[f"layer5.bias_ih_l{layer}"], sd[f"layer5.bias_hh_l{layer}"]
    hidden = w_hh.shape[1]
    h = seq.new_zeros(seq.shape[0], hidden)
    outputs = []
    for t in range(seq.shape[1]):
        gi = seq[:, t] @ w_ih.T + b_ih
        gh = h @ w_hh.T + b_hh
        r = torch.sigmoid(gi[:, :hidden] + gh[:, :hidden])
        z = torch.sigmoid(gi[:, hidden:2 * hidden] + gh[:, hidden:2 * hidden])
        n = torch.tanh(gi[:, 2 * hidden:] + r * gh[:, 2 * hidden:])
        h = (1 - z) * n + z * h
        outputs.append(h)
    return torch.stack(outputs, dim=1)


def _reference_logits(arch: str, sd: dict[str, torch.Tensor], waves: np.ndarray) -> torch.Tensor:
    """Logits (before the published sigmoid) of a Won et al. checkpoint, from its tensors only."""
    sd = {k: v.double() for k, v in sd.items()}
    window, fb = sd["spec.spectrogram.window"].numpy(), sd["spec.mel_scale.fb"].numpy()
    spec = torch.from_numpy(np.stack([_logmel(w, window, fb) for w in waves]))[:, None]
    x = _bn(spec, sd, "spec_bn")
    if arch == "fcn":
        for i, pool in enumerate([(2, 4), (2, 4), (2, 4), (3, 5), (4, 4)], start=1):
            x = _conv_pool(x, sd, f"layer{i}", pool)
        assert x.shape[2:] == (1, 1)
        return F.linear(x.reshape(x.shape[0], -1), sd["dense.weight"], sd["dense.bias"])
    if arch == "crnn":
        for i, pool in enumerate([(2, 2), (3, 3), (4, 4), (4, 4)], start=1):
            x = _conv_pool(x, sd, f"layer{i}", pool)
        seq = x[:, :, 0, :].permute(0, 2, 1)
        seq = _gru_layer(_gru_layer(seq, sd, 0), sd, 1)
        return F.linear(seq[:, -1], sd["dense.weight"], sd["dense.bias"])
    assert arch == "musicnn"
    branches = []
    for i in (0, 1):  # vertical: (h, 7) conv, BN, ReLU, max over all bands
        w = sd[f"layers.{i}.conv.weight"]
        y = F.conv2d(x, w, sd[f"layers.{i}.conv.bias"], padding=(0, w.shape[-1] // 2))
        branches.append(F.relu(_bn(y, sd, f"layers.{i}.bn")).max(dim=2).values)
    band_mean = x.mean(dim=2)
    for i in (2, 3, 4):  # horizontal: band mean, 1-D conv, BN, ReLU
        w = sd[f"layers.{i}.conv.weight"]
        y = F.conv1d(band_mean, w, sd[f"layers.{i}.conv.bias"], padding=w.shape[-1] // 2)
        branches.append(F.relu(_bn(y, sd, f"layers.{i}.bn")))
    front = torch.cat(branches, dim=1)

    def block(z: torch.Tensor, i: int) -> torch.Tensor:
        z = F.conv1d(z, sd[f"layer{i}.conv.weight"], sd[f"layer{i}.conv.bias"], padding=3)
        return F.relu(_bn(z, sd, f"layer{i}.bn"))

    res1 = block(front, 1)
    res2 = block(res1, 2) + res1
    res3 = block(res2, 3) + res2
    cat = torch.cat([front, res1, res2, res3], dim=1)
    pooled = torch.cat([cat.max(dim=2).values, cat.mean(dim=2)], dim=1)
    hidden = F.relu(_bn(F.linear(pooled, sd["dense1.weight"], sd["dense1.bias"]), sd, "bn"))
    return F.linear(hidden, sd["dense2.weight"], sd["dense2.bias"])


@pytest.mark.parametrize("file", sorted(CHECKPOINTS))
def test_published_checkpoint_matches_independent_forward(won2020_models_dir: Path, file: str) -> None:
    arch, tag_file = CHECKPOINTS[file]
    path = won2020_models_dir / file
    tags = _tags(won2020_models_dir, tag_file)
    model = load_model(path, tag_names=tags)
    assert model.model_name == arch
    cfg = model.pretrained_cfg
    assert (cfg.sample_rate, cfg.chunk_samples, cfg.n_mels) == (16000, INPUT_SAMPLES[arch], 96)
    assert list(cfg.tag_names) == tags and not model.training

    waves = np.stack([_test_signal(cfg.chunk_samples, seed) for seed in (1, 2)])
    with torch.no_grad():
        got = model(torch.from_numpy(waves).float()).double()
    sd = torch.load(path, map_location="cpu", weights_only=True)
    want = _reference_logits(arch, sd, waves)
    diff = float((got - want).abs().max())
    print(f"{file}: max |focaltag - reference| logit = {diff:.2e}")
    assert got.shape == (2, 50)
    assert diff < 1e-4
    assert float((want[0] - want[1]).abs().max()) > 1e-2  # the two inputs really differ in output


def test_upstream_front_end_matches_focaltag_mel(won2020_models_dir: Path) -> None:
    """The filterbank Won et al. saved is the HTK 96-band, 0-8 kHz one focaltag computes (so models built
    without a checkpoint, e.g. for training, use the same features)."""
    sd = torch.load(won2020_models_dir / "mtat-fcn.pth", map_location="cpu", weights_only=True)
    model = create_model("fcn", n_tags=50)
    assert torch.allclose(model.frontend.fb, sd["spec.mel_scale.fb"], atol=1e-4)
    assert torch.allclose(model.frontend.window, sd["spec.spectrogram.window"], atol=1e-6)


def test_focaltag_checkpoint_round_trip(won2020_models_dir: Path, tmp_path: Path) -> None:
    tags = _tags(won2020_models_dir, "tags-mtat.txt")
    model = load_model(won2020_models_dir / "mtat-musicnn.pth", tag_names=tags)
    out = save_model(model, tmp_path / "musicnn.pt")
    again = load_model(out)  # tag names travel inside the focaltag checkpoint
    assert again.model_name == "musicnn" and list(again.pretrained_cfg.tag_names) == tags
    x = torch.from_numpy(_test_signal(48_000, 3)).float()[None]
    with torch.no_grad():
        assert torch.equal(model(x), again(x))


def test_bare_state_dict_needs_tag_names_and_no_variant(won2020_models_dir: Path) -> None:
    with pytest.raises(CheckpointError, match="tag_names"):
        load_model(won2020_models_dir / "mtat-fcn.pth")
    with pytest.raises(CheckpointError, match="variant applies to short-chunk ResNet"):
        load_model(won2020_models_dir / "mtat-fcn.pth", tag_names=[f"t{i}" for i in range(50)], variant="paper")


@pytest.mark.parametrize("name", ["fcn", "crnn", "musicnn"])
def test_create_model_builds_each_architecture(name: str) -> None:
    assert name in list_models()
    model = create_model(name, tag_names=["a", "b", "c"]).eval()
    cfg = model.pretrained_cfg
    assert cfg.n_tags == 3 and cfg.chunk_samples == INPUT_SAMPLES[name] and cfg.variant is None
    with torch.no_grad():
        out = model(torch.randn(2, cfg.chunk_samples))
    assert out.shape == (2, 3) and torch.isfinite(out).all()
    model.set_output_bias(-2.0)
    assert torch.all(model.classifier.bias == -2.0)
    model.reset_classifier(5)
    assert model.n_tags == 5 and model.pretrained_cfg.n_tags == 5


def test_create_model_refuses_resnet_arguments() -> None:
    with pytest.raises(ModelError, match="unknown argument.*width"):
        create_model("fcn", n_tags=10, width=16)
    with pytest.raises(ModelError, match="unknown argument.*variant"):
        create_model("musicnn", n_tags=10, variant="paper")
    with pytest.raises(ModelError, match="hidden_size"):
        create_model("crnn", n_tags=10, hidden_size=0)


def test_fcn_refuses_wrong_input_length() -> None:
    model = create_model("fcn", n_tags=4).eval()
    with pytest.raises(ModelError, match="464000 samples"):
        model(torch.randn(1, 48_000))


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["model.name=fcn", "model.width=16"], "model.width applies to short_chunk_resnet"),
        (["model.name=musicnn", "model.variant=won2020"], "model.variant applies to short_chunk_resnet"),
        (["model.name=fcn", "model.hidden_size=8"], "model.hidden_size applies to crnn only"),
        (["model.name=nope"], "unknown model 'nope'"),
    ],
)
def test_train_config_refuses_arguments_of_other_architectures(overrides: list[str], message: str) -> None:
    from focaltag.training.config import load_train_config

    with pytest.raises(ConfigError, match=message):
        load_train_config(None, overrides)


def test_train_config_model_kwargs() -> None:
    from focaltag.training.config import load_train_config

    cfg = load_train_config(None, ["model.name=crnn", "model.hidden_size=8", "model.drop_rate=0.1"])
    assert cfg.model.model_kwargs() == {"hidden_size": 8, "drop_rate": 0.1}
    assert load_train_config(None, []).model.model_kwargs() == {"variant": "paper", "width": 128}


def test_switching_architecture_by_override_drops_the_files_resnet_arguments(tmp_path: Path) -> None:
    """``--config paper.yaml --set model.name=fcn``: the file's ResNet-only keys do not apply to FCN."""
    from focaltag.training.config import load_train_config

    conf = tmp_path / "c.yaml"
    conf.write_text("model:\n  name: short_chunk_resnet\n  variant: paper\n  width: 16\n")
    cfg = load_train_config(conf, ["model.name=musicnn"])
    assert cfg.model.name == "musicnn" and cfg.model.model_kwargs() == {}
    with pytest.raises(ConfigError, match="model.width applies to short_chunk_resnet"):
        load_train_config(conf, ["model.name=musicnn", "model.width=8"])


def test_experiment_run_switching_architecture_drops_the_bases_resnet_arguments() -> None:
    from focaltag.experiments.spec import RunSpec, run_config
    from focaltag.training.config import train_config_from_dict

    base = {"model": {"name": "short_chunk_resnet", "variant": "paper", "width": 16}, "seed": 3}
    cfg = run_config(base, {}, RunSpec(set={"model.name": "crnn", "model.hidden_size": 8}), name="crnn")
    assert train_config_from_dict(cfg).model.model_kwargs() == {"hidden_size": 8}
    cfg = run_config(base, {"model.name": "fcn"}, RunSpec(), name="fcn")
    assert cfg["model"] == {"name": "fcn"} and cfg["seed"] == 3


@pytest.mark.slow
def test_cli_tag_listening_test(won2020_models_dir: Path, music_dir: Path, tmp_path: Path,
                                capsys: pytest.CaptureFixture[str]) -> None:
    """The converted MagnaTagATune FCN hears orchestral music as classical and electronic music as techno."""
    from focaltag.cli import main

    model_file = tmp_path / "mtat-fcn.pt"
    rc = main(["import-reference", str(won2020_models_dir / "mtat-fcn.pth"),
               "--tags", str(won2020_models_dir / "tags-mtat.txt"), "-o", str(model_file)])
    assert rc == 0 and model_file.is_file()
    files = {name: music_dir / name for name in
             ("battle-epic.ogg", "traveling_minstrels.ogg", "nebula.ogg", "machine_wars.mp3")}
    capsys.readouterr()
    rc = main(["tag", *map(str, files.values()), "--model", str(model_file), "--format", "json", "-q"])
    assert rc == 0
    out = capsys.readouterr().out
    probs = _probabilities_by_file(out)
    for name in ("battle-epic.ogg", "traveling_minstrels.ogg"):
        assert probs[name]["classical"] > probs[name]["techno"], (name, probs[name])
    for name in ("nebula.ogg", "machine_wars.mp3"):
        assert probs[name]["techno"] > probs[name]["classical"], (name, probs[name])
    print({n: (round(p["classical"], 3), round(p["techno"], 3)) for n, p in probs.items()})


def _probabilities_by_file(text: str) -> dict[str, dict[str, float]]:
    """``{file name: {tag: probability}}`` from ``tag --format json`` output (one document or JSON lines)."""
    text = text.strip()
    try:
        docs = json.loads(text)
    except json.JSONDecodeError:
        docs = [json.loads(line) for line in text.splitlines() if line.strip()]
    if isinstance(docs, dict):
        docs = docs.get("results", docs.get("tracks", [docs]))
    out: dict[str, dict[str, float]] = {}
    for doc in docs:
        tags = doc.get("probabilities") or doc.get("tags")
        if isinstance(tags, list):
            tags = {t["tag"]: t["probability"] for t in tags}
        out[Path(doc.get("path") or doc.get("file")).name] = {str(k): float(v) for k, v in tags.items()}
    return out


@pytest.fixture(scope="module")
def synth_cache(synth_dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The synthetic dataset's 16 kHz cache, built once for the training tests below."""
    from focaltag.training.loop import train

    cache = tmp_path_factory.mktemp("won-cache") / "cache"
    train(_tiny_config(synth_dataset, cache, "musicnn", {"auto_prepare": True, "prepare_workers": 1},
                       runtime={"max_steps": 1}), cache.parent / "warmup")
    return cache


def _tiny_config(data_dir: Path, cache: Path, arch: str, data: dict | None = None, **sections: dict) -> dict:
    """Seconds of training: batches of 4, one step per epoch, an Adam epoch then an SGD one."""
    cfg: dict = {
        "data": {"dataset_dir": str(data_dir), "cache_dir": str(cache), "auto_prepare": False, **(data or {})},
        "model": {"name": arch},
        "optim": {"batch_size": 4, "epochs": 2, "adam_epochs": 1, "adam_lr": 1e-3, "sgd_lr": 1e-2},
        "validation": {"n_chunks": 1, "tracks_per_batch": 4},
        "runtime": {"device": "cpu", "num_workers": 0, "max_steps_per_epoch": 1, "log_every_steps": 1},
        "seed": 0,
    }
    for name, values in sections.items():
        cfg.setdefault(name, {}).update(values)
    return cfg


@pytest.mark.slow
@pytest.mark.parametrize(
    ("model", "loss", "sampling"),
    [("fcn", "focal", "class_aware"), ("crnn", "db_focal", "standard"), ("musicnn", "cb_focal", "class_aware")],
)
def test_tiny_training_run(synth_dataset: Path, synth_cache: Path, tmp_path: Path, model: str, loss: str,
                           sampling: str) -> None:
    """Each architecture trains with the paper's losses, class-aware sampling and mixup, on chunks of its own
    input length, and its best.pt tags like any focaltag checkpoint."""
    from focaltag.training.loop import train

    cfg = _tiny_config(synth_dataset, synth_cache, model, loss={"name": loss}, sampling={"name": sampling},
                       mixup={"enabled": True})
    train(cfg, tmp_path / "run")
    best = load_model(tmp_path / "run")
    assert best.model_name == model and best.pretrained_cfg.chunk_samples == INPUT_SAMPLES[model]
    assert best.pretrained_cfg.n_tags == 56
    saved = torch.load(tmp_path / "run" / "best.pt", map_location="cpu", weights_only=True)
    fresh = create_model(model, n_tags=56)
    assert any(not torch.equal(saved["state_dict"][k], v) for k, v in fresh.state_dict().items()
               if v.is_floating_point() and not k.startswith("frontend."))


@pytest.mark.slow
def test_cli_train_musicnn_with_set_model_name(synth_dataset: Path, synth_cache: Path, tmp_path: Path) -> None:
    """``focaltag train --config <a ResNet config> --set model.name=musicnn``: the file's width and variant
    give way to the architecture chosen on the command line."""
    import yaml

    from focaltag.cli import main

    cfg = _tiny_config(synth_dataset, synth_cache, "short_chunk_resnet", model={"width": 4, "variant": "won2020"},
                       runtime={"max_steps": 1})
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    rc = main(["train", "-q", "--config", str(tmp_path / "cfg.yaml"), "--set", "model.name=musicnn",
               "--out", str(tmp_path / "run")])
    assert rc == 0
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert saved["model"]["name"] == "musicnn" and saved["model"]["width"] is None
    assert load_model(tmp_path / "run").model_name == "musicnn"
    rc = main(["train", "-q", "--config", str(tmp_path / "cfg.yaml"), "--set", "model.name=musicnn",
               "--set", "model.width=8", "--out", str(tmp_path / "bad")])
    assert rc == 2
