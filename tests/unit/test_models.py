"""Short-chunk ResNet, registry, checkpoints and the reference-layout conversion (against an independent forward)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from focaltag.data.tags import MOODTHEME_TAGS
from focaltag.errors import CheckpointError, ModelError
from focaltag.models import (
    convert_reference_state_dict,
    create_model,
    list_models,
    load_matching_weights,
    load_model,
    model_checkpoint,
    save_model,
)

SMALL = 8  # block width for tests that do not need the full model


# ---------------------------------------------------------------- reference layout built from the shared key list


def _reference_spec(shared_dir: Path) -> list[tuple[str, tuple[int, ...], str]]:
    """(name, shape, dtype) of every entry of the reference checkpoint key list."""
    rows = []
    for line in (shared_dir / "reference" / "reference-checkpoint-keys.txt").read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        name, shape, dtype = line.split()
        dims = () if shape == "scalar" else tuple(int(d) for d in shape.split("x"))
        rows.append((name, dims, dtype))
    return rows


def _scaled(name: str, shape: tuple[int, ...], divisor: int) -> tuple[int, ...]:
    """Shrink channel dimensions (multiples of 128) of the network layers; keep mel/FFT sizes and tag count."""
    if divisor == 1 or name.startswith("spec"):
        return shape
    dims = list(shape)
    start = 1 if name.startswith("dense_2") else 0  # dense_2 is (n_tags, hidden)
    for i in range(start, len(dims)):
        if dims[i] >= 128 and dims[i] % 128 == 0:
            dims[i] //= divisor
    return tuple(dims)


def _reference_state_dict(shared_dir: Path, *, divisor: int = 1, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random tensors of the listed shapes (BN statistics kept in a sane range)."""
    gen = torch.Generator().manual_seed(seed)
    sd = {}
    for name, shape, dtype in _reference_spec(shared_dir):
        shape = _scaled(name, shape, divisor)
        if dtype == "int64":
            sd[name] = torch.tensor(100, dtype=torch.int64)
        elif name.endswith("running_var"):
            sd[name] = torch.rand(shape, generator=gen) + 0.5
        elif name.endswith("running_mean"):
            sd[name] = torch.randn(shape, generator=gen) * 0.1
        elif name.endswith((".fb", ".window")):
            sd[name] = torch.rand(shape, generator=gen)  # not the usual values: proves they are loaded
        elif name.endswith("weight") and len(shape) > 1:
            fan_in = int(torch.tensor(shape[1:]).prod())
            sd[name] = torch.randn(shape, generator=gen) * (2.0 / fan_in) ** 0.5
        else:  # biases, and BatchNorm scales around 1
            sd[name] = torch.randn(shape, generator=gen) * 0.1 + (1.0 if name.endswith(".weight") else 0.0)
    sd["spec_bn.running_mean"] = torch.tensor([-20.0])
    sd["spec_bn.running_var"] = torch.tensor([400.0])
    return sd


def _independent_reference_forward(sd: dict[str, torch.Tensor], wave: torch.Tensor) -> torch.Tensor:
    """The reference ShortChunkCNN_Res (eval mode) written with torch.nn.functional from its key names alone."""

    def bn(x, prefix):
        return F.batch_norm(x, sd[f"{prefix}.running_mean"], sd[f"{prefix}.running_var"], sd[f"{prefix}.weight"],
                            sd[f"{prefix}.bias"], training=False, momentum=0.1, eps=1e-5)

    def conv(x, prefix, stride):
        return F.conv2d(x, sd[f"{prefix}.weight"], sd[f"{prefix}.bias"], stride=stride, padding=1)

    spec = torch.stft(wave, n_fft=512, hop_length=256, win_length=512, window=sd["spec.spectrogram.window"],
                      center=True, pad_mode="reflect", return_complex=True).abs() ** 2
    mel = torch.matmul(spec.transpose(1, 2), sd["spec.mel_scale.fb"]).transpose(1, 2)
    x = 10.0 * torch.log10(torch.clamp(mel, min=1e-10))
    x = bn(x.unsqueeze(1), "spec_bn")
    layers = sorted({k.split(".")[0] for k in sd if k.startswith("layer")}, key=lambda n: int(re.match(r"layer(\d+)", n)[1]))
    for layer in layers:
        stride = (2, 3) if layer.endswith("_2_3") else 2
        out = F.relu(bn(conv(x, f"{layer}.conv_1", stride), f"{layer}.bn_1"))
        out = bn(conv(out, f"{layer}.conv_2", 1), f"{layer}.bn_2")
        x = F.relu(out + bn(conv(x, f"{layer}.conv_3", stride), f"{layer}.bn_3"))
    x = x.squeeze(2)
    if x.size(-1) != 1:
        x = F.max_pool1d(x, x.size(-1))
    x = x.squeeze(2)
    x = F.linear(x, sd["dense_1.weight"], sd["dense_1.bias"])
    x = F.relu(F.batch_norm(x, sd["bn_1.running_mean"], sd["bn_1.running_var"], sd["bn_1.weight"], sd["bn_1.bias"],
                            training=False, eps=1e-5))
    return F.linear(x, sd["dense_2.weight"], sd["dense_2.bias"])


def _wave(n: int, batch: int = 2, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(batch, n, generator=gen) * 0.1


def test_reference_key_list_matches_model_parameter_count(shared_dir):
    spec = _reference_spec(shared_dir)
    header = (shared_dir / "reference" / "reference-checkpoint-keys.txt").read_text().splitlines()[0]
    listed = int(re.search(r"(\d+) parameters", header)[1])
    model = create_model()
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert trainable == listed == 11_961_146
    ref_params = sum(int(torch.tensor(s).prod()) for n, s, _ in spec
                     if not n.startswith("spec.") and "running" not in n and "num_batches" not in n)
    assert ref_params == trainable
    assert len(model.state_dict()) == len(spec) == 163


def test_reference_checkpoint_loads_and_matches_independent_forward(shared_dir, tmp_path):
    sd = _reference_state_dict(shared_dir)
    path = tmp_path / "reference.pth"
    torch.save(sd, path)
    model = load_model(path)
    assert not model.training
    cfg = model.pretrained_cfg
    assert (cfg.variant, cfg.n_tags, cfg.chunk_samples, cfg.width) == ("paper", 56, 73600, 128)
    assert cfg.tag_names == MOODTHEME_TAGS
    wave = _wave(cfg.chunk_samples)
    with torch.no_grad():
        got = model(wave)
        expected = _independent_reference_forward(sd, wave)
    assert got.shape == (2, 56)
    assert torch.allclose(got, expected, rtol=1e-4, atol=1e-4 * expected.abs().max().item())


def test_reference_layout_small_width_and_longer_input(shared_dir, tmp_path):
    sd = _reference_state_dict(shared_dir, divisor=16, seed=1)
    torch.save(sd, tmp_path / "small.pth")
    model = load_model(tmp_path / "small.pth")
    assert model.pretrained_cfg.width == 8
    wave = _wave(3 * 73600, seed=2)  # time axis longer than the receptive field: max-pool over time
    with torch.no_grad():
        assert torch.allclose(model(wave), _independent_reference_forward(sd, wave), rtol=1e-4, atol=1e-5)


def test_won2020_reference_layout_is_detected(shared_dir, tmp_path):
    sd = {k.replace("_2_3", ""): v for k, v in _reference_state_dict(shared_dir, divisor=16).items()}
    torch.save(sd, tmp_path / "won.pth")
    model = load_model(tmp_path / "won.pth")
    assert model.pretrained_cfg.variant == "won2020"
    assert model.pretrained_cfg.chunk_samples == 59049
    wave = _wave(59049)
    with torch.no_grad():
        assert torch.allclose(model(wave), _independent_reference_forward(sd, wave), rtol=1e-4, atol=1e-5)
    assert load_model(tmp_path / "won.pth", variant="paper").pretrained_cfg.variant == "paper"


def test_reference_layout_without_mel_buffers_uses_computed_ones(shared_dir, tmp_path):
    sd = {k: v for k, v in _reference_state_dict(shared_dir, divisor=16).items() if not k.startswith("spec.")}
    torch.save(sd, tmp_path / "nomel.pth")
    model = load_model(tmp_path / "nomel.pth")
    assert torch.equal(model.frontend.fb, create_model(width=4).frontend.fb)


def test_convert_reference_state_dict_info(shared_dir):
    sd = _reference_state_dict(shared_dir, divisor=16)
    sd["extra.thing"] = torch.zeros(1)
    converted, info = convert_reference_state_dict(sd)
    assert info["variant"] == "paper"
    assert (info["n_tags"], info["width"], info["hidden_dim"], info["n_mels"], info["n_fft"]) == (56, 8, 16, 128, 512)
    assert info["unconverted"] == ["extra.thing"]
    assert torch.equal(converted["blocks.6.downsample.1.running_var"], sd["layer7_2_3.bn_3.running_var"])
    assert torch.equal(converted["frontend.fb"], sd["spec.mel_scale.fb"])
    assert len(converted) == len(sd)


def test_reference_layout_other_tag_count_needs_tag_names(shared_dir, tmp_path):
    sd = _reference_state_dict(shared_dir, divisor=16)
    sd["dense_2.weight"], sd["dense_2.bias"] = sd["dense_2.weight"][:5], sd["dense_2.bias"][:5]
    torch.save(sd, tmp_path / "five.pth")
    with pytest.raises(CheckpointError, match="5 outputs; pass tag_names="):
        load_model(tmp_path / "five.pth")
    with pytest.raises(CheckpointError, match="5 outputs but 4 tag names"):
        load_model(tmp_path / "five.pth", tag_names=list("abcd"))
    model = load_model(tmp_path / "five.pth", tag_names=list("abcde"))
    assert model.pretrained_cfg.tag_names == tuple("abcde")


# ---------------------------------------------------------------- model


@pytest.mark.parametrize(("variant", "chunk", "time_out"), [("paper", 73600, 1), ("won2020", 59049, 2)])
def test_output_shapes_for_both_variants(variant, chunk, time_out):
    model = create_model(variant=variant, width=SMALL, n_tags=7).eval()
    assert model.pretrained_cfg.chunk_samples == chunk
    wave = _wave(chunk)
    with torch.no_grad():
        feats = model.forward_features(wave)
        assert feats.shape == (2, 4 * SMALL, 1, time_out)
        assert model.forward_head(feats, pre_logits=True).shape == (2, 2 * SMALL)
        assert model(wave).shape == (2, 7)


def test_paper_variant_strides_time_by_three_in_last_blocks():
    paper = create_model(width=4)
    won = create_model(variant="won2020", width=4)
    assert [b.conv1.stride for b in paper.blocks][-3:] == [(2, 2), (2, 3), (2, 3)]
    assert all(b.conv1.stride == (2, 2) for b in won.blocks)
    assert all(b.downsample is not None for b in paper.blocks)  # every block has the projection (conv_3/bn_3)
    assert [b.conv2.out_channels for b in paper.blocks] == [4, 4, 8, 8, 8, 8, 16]


def test_channels_last_gives_the_same_output():
    model = create_model(width=SMALL).eval()
    wave = _wave(73600)
    with torch.no_grad():
        expected = model(wave)
        model = model.to(memory_format=torch.channels_last)
        feats = model.blocks[:3](model.spec_bn(model.frontend(wave).unsqueeze(1)))
        got = model(wave)
    assert feats.is_contiguous(memory_format=torch.channels_last)
    assert torch.allclose(got, expected, rtol=1e-4, atol=1e-5)


def test_train_step_backward_and_batchnorm_updates():
    model = create_model(width=4, n_tags=3).train()
    before = model.blocks[0].bn1.running_mean.clone()
    loss = model(_wave(73600, batch=3)).sum()
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    assert not torch.equal(before, model.blocks[0].bn1.running_mean)


def test_set_output_bias_and_tag_names():
    model = create_model(width=4, tag_names=["x", "y", "z"])
    assert model.n_tags == 3 and model.pretrained_cfg.tag_names == ("x", "y", "z")
    model.set_output_bias(-4.6)
    assert torch.allclose(model.fc.bias, torch.full((3,), -4.6))
    model.set_output_bias([1.0, 2.0, 3.0])
    assert model.fc.bias.tolist() == [1.0, 2.0, 3.0]
    with pytest.raises(ModelError, match="scalar or 3 values"):
        model.set_output_bias([1.0, 2.0])
    assert create_model(width=4, n_tags=12).pretrained_cfg.tag_names[:2] == ("tag_000", "tag_001")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"n_tags": 3, "tag_names": ["a", "b"]}, "does not match the 2 tag_names"),
        ({"tag_names": ["a", "a"]}, "duplicates"),
        ({"variant": "long"}, "variant must be one of paper, won2020"),
        ({"width": 0}, "width must be a positive integer"),
        ({"n_tags": 0}, "n_tags must be a positive integer"),
        ({"depth": 3}, r"unknown argument\(s\) depth; accepted: n_tags"),
    ],
)
def test_bad_model_arguments(kwargs, match):
    with pytest.raises(ModelError, match=match):
        create_model(**kwargs)


# ---------------------------------------------------------------- registry contract


def test_list_models_wildcards_and_unknown_names():
    names = list_models()
    assert "short_chunk_resnet" in names and names == sorted(names)
    assert list_models("*won*") == ["short_chunk_resnet_won2020"]
    assert list_models("nothing*") == []
    with pytest.raises(ModelError, match="did you mean 'short_chunk_resnet'"):
        create_model("short_chunk_resnt")


@pytest.mark.parametrize("name", list_models())
def test_registry_contract(name, tmp_path):
    resnet = name.startswith("short_chunk_resnet")
    model = create_model(name, n_tags=5, width=4 if resnet else None).eval()
    cfg = model.pretrained_cfg
    assert cfg.sample_rate == 16000 and cfg.n_mels == (128 if resnet else 96)
    assert len(cfg.tag_names) == cfg.n_tags == 5
    wave = _wave(cfg.chunk_samples)
    with torch.no_grad():
        assert model(wave).shape == (2, 5)
        assert model.forward_head(model.forward_features(wave)).shape == (2, 5)
    model.reset_classifier(3, tag_names=["a", "b", "c"])
    assert model.pretrained_cfg.tag_names == ("a", "b", "c")
    save_model(model, tmp_path / "m.pt")
    loaded = load_model(tmp_path / "m.pt")
    assert loaded.pretrained_cfg == model.pretrained_cfg
    with torch.no_grad():
        assert torch.equal(loaded(wave), model(wave))


# ---------------------------------------------------------------- focaltag checkpoints


def test_save_load_roundtrip_and_run_directory(tmp_path):
    model = create_model(variant="won2020", width=4, tag_names=["a", "b"]).eval()
    run = tmp_path / "run"
    save_model(model, run / "last.pt", epoch=3)
    ckpt = torch.load(run / "last.pt", weights_only=True)
    assert ckpt["focaltag_checkpoint"] == 1 and ckpt["epoch"] == 3 and ckpt["tag_names"] == ["a", "b"]
    assert load_model(run).pretrained_cfg.variant == "won2020"  # falls back to last.pt
    torch.save({**model_checkpoint(model), "optimizer": {"lr": 0.1}}, run / "best.pt")
    loaded = load_model(run)
    wave = _wave(59049)
    with torch.no_grad():
        assert torch.equal(loaded(wave), model(wave))


def test_wrapped_state_dict_prefixes_are_stripped(tmp_path):
    model = create_model(width=4, n_tags=56).eval()
    sd = {f"module._orig_mod.{k}": v for k, v in model.state_dict().items()}
    torch.save(sd, tmp_path / "plain.pt")
    loaded = load_model(tmp_path / "plain.pt")
    wave = _wave(73600)
    with torch.no_grad():
        assert torch.equal(loaded(wave), model(wave))


class _NotAllowed:
    pass


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda p: None, "checkpoint not found"),
        (lambda p: p.mkdir(), "has no best.pt or last.pt"),
        (lambda p: p.write_bytes(b"not a checkpoint"), "not a readable PyTorch checkpoint"),
        (lambda p: torch.save({"x": _NotAllowed()}, p), "not a readable PyTorch checkpoint"),
        (lambda p: torch.save([1, 2], p), "not a focaltag checkpoint or a state_dict"),
        (lambda p: torch.save({"foo.weight": torch.zeros(2)}, p), "unknown state_dict layout"),
        (lambda p: torch.save({**model_checkpoint(create_model(width=4, n_tags=3)), "tag_names": ["a"]}, p),
         "3 outputs but 1 tag names"),
        (lambda p: torch.save({**model_checkpoint(create_model(width=4)), "focaltag_checkpoint": 99}, p),
         "newer than this focaltag"),
        (lambda p: torch.save({**model_checkpoint(create_model(width=4)), "model_name": "nope"}, p),
         "cannot build model 'nope'"),
    ],
)
def test_checkpoint_errors_are_one_line(tmp_path, make, match):
    path = tmp_path / "ckpt.pt"
    make(path)
    with pytest.raises(CheckpointError, match=match) as err:
        load_model(path)
    assert "\n" not in str(err.value)


def test_state_dict_that_does_not_fit_is_reported(tmp_path):
    ckpt = model_checkpoint(create_model(width=4))
    del ckpt["state_dict"]["fc.bias"]
    torch.save(ckpt, tmp_path / "broken.pt")
    with pytest.raises(CheckpointError, match="missing: fc.bias"):
        load_model(tmp_path / "broken.pt")


# ---------------------------------------------------------------- --init-from


def test_load_matching_weights_from_reference_layout(shared_dir, tmp_path):
    sd = _reference_state_dict(shared_dir, divisor=16)
    sd["something.else"] = torch.zeros(3)
    torch.save(sd, tmp_path / "msd.pth")
    model = create_model(width=SMALL, n_tags=10)
    loaded, skipped = load_matching_weights(model, tmp_path / "msd.pth")
    reasons = dict(skipped)
    assert set(reasons) == {"fc.weight", "fc.bias", "something.else"}  # reported under focaltag names
    assert reasons["fc.weight"] == "shape (56, 16) != model (10, 16)"
    assert reasons["something.else"] == "not in model"
    assert "blocks.6.downsample.0.weight" in loaded and "fc.weight" not in loaded
    assert len(loaded) == len(model.state_dict()) - 2
    assert torch.equal(model.blocks[2].conv1.weight, sd["layer3.conv_1.weight"])


def test_load_matching_weights_from_other_width_focaltag_checkpoint(tmp_path):
    save_model(create_model(width=4, n_tags=3), tmp_path / "w4.pt")
    model = create_model(width=8, n_tags=3)
    loaded, skipped = load_matching_weights(model, tmp_path / "w4.pt")
    # only width-independent entries fit: mel buffers, input BN, BN counters
    assert set(loaded) >= {"frontend.fb", "frontend.window", "spec_bn.weight"}
    assert "blocks.0.conv1.weight" in dict(skipped)
    assert all(reason.startswith("shape") for _, reason in skipped)


@pytest.mark.slow
def test_torch_compile_matches_eager():
    model = create_model(width=4).eval()
    wave = _wave(73600)
    with torch.no_grad():
        expected = model(wave)
        got = torch.compile(model)(wave)
    assert torch.allclose(got, expected, rtol=1e-4, atol=1e-5)
