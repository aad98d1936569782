"""The head model: forward = base embedding -> head, ensemble bases, checkpoint round trip, head folders."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from focaltag.errors import CheckpointError, ModelError
from focaltag.models import create_model, load_model, save_model
from focaltag.models.head import (
    CARD_FILE,
    HEAD_FORMAT,
    EmbeddingHead,
    TagHead,
    base_spec,
    embedding_size,
    head_folder_of,
    head_thresholds,
    import_head,
    imported_head,
    is_head_folder,
    read_card,
)

TAGS = ["warm-up", "peak time", "closing"]


def tiny_resnet(seed: int, n_tags: int = 5) -> torch.nn.Module:
    torch.manual_seed(seed)
    return create_model("short_chunk_resnet", width=4, n_tags=n_tags).eval()


def head_on(*bases: torch.nn.Module, hidden_dim: int = 0, seed: int = 0) -> TagHead:
    model = TagHead(tag_names=TAGS, base=[base_spec(b, f"base{i}") for i, b in enumerate(bases)],
                    hidden_dim=hidden_dim).eval()
    for member, base in zip(model.members, bases, strict=True):
        member.load_state_dict(base.state_dict())
    torch.manual_seed(seed)
    with torch.no_grad():
        for p in model.head.parameters():
            p.normal_(0, 0.3)
        model.head.set_standardization(torch.randn(model.num_features), torch.rand(model.num_features) + 0.5)
    return model


def waveform(model: torch.nn.Module, batch: int = 3) -> torch.Tensor:
    torch.manual_seed(7)
    return torch.randn(batch, model.pretrained_cfg.chunk_samples) * 0.1


@torch.no_grad()
def test_forward_is_the_base_embedding_then_the_head():
    base = tiny_resnet(0)
    model = head_on(base, hidden_dim=6)
    x = waveform(model)
    emb = base.forward_head(base.forward_features(x), pre_logits=True)  # the base's own layer before fc
    assert emb.shape == (3, embedding_size(base))
    z = (emb - model.head.mean) / model.head.scale
    expected = model.head.fc(torch.relu(model.head.hidden(z)))
    torch.testing.assert_close(model(x), expected)
    assert model(x).shape == (3, len(TAGS))
    assert model.pretrained_cfg.tag_names == tuple(TAGS) and model.pretrained_cfg.n_tags == 3
    assert model.pretrained_cfg.chunk_samples == base.pretrained_cfg.chunk_samples


@torch.no_grad()
def test_an_ensemble_base_concatenates_member_embeddings_in_member_order():
    a, b = tiny_resnet(0), tiny_resnet(1, n_tags=7)
    model = head_on(a, b)
    x = waveform(model)
    ea = a.forward_head(a.forward_features(x), pre_logits=True)
    eb = b.forward_head(b.forward_features(x), pre_logits=True)
    torch.testing.assert_close(model.forward_features(x), torch.cat([ea, eb], dim=1))
    assert model.num_features == ea.shape[1] + eb.shape[1]
    assert model.base_labels == ["base0", "base1"]


def test_members_with_other_input_lengths_are_refused():
    resnet = tiny_resnet(0)
    musicnn = create_model("musicnn", n_tags=4)
    with pytest.raises(ModelError, match="one input length"):
        TagHead(tag_names=TAGS, base=[base_spec(resnet), base_spec(musicnn)])
    with pytest.raises(ModelError, match="needs base"):
        TagHead(tag_names=TAGS, base=[])
    with pytest.raises(ModelError, match="is itself a head model"):
        base_spec(head_on(resnet))


def test_a_head_runs_in_reduced_precision_as_its_base_does():
    from focaltag.models.facts import runtime_facts

    resnet, musicnn = tiny_resnet(0), create_model("musicnn", n_tags=4)
    facts = head_on(resnet, tiny_resnet(1)).runtime_facts
    base = runtime_facts(resnet)
    assert facts.fp32_modules == tuple(f"members.{i}.{n}" for i in (0, 1) for n in base.fp32_modules)
    assert facts.bf16_on_cpu and facts.onnx_fp32_without_bf16 and not facts.int8_recipe
    model = TagHead(tag_names=TAGS, base=[base_spec(musicnn)])
    assert not model.runtime_facts.bf16_on_cpu  # Musicnn stays float32 under auto on a CPU, so does its head
    for name in facts.fp32_modules:
        head_on(resnet, tiny_resnet(1)).get_submodule(name)  # the names point into the head's base members


def test_training_mode_leaves_the_base_in_eval_mode():
    model = head_on(tiny_resnet(0), hidden_dim=4).train()
    assert model.head.training and all(not m.training for m in model.members.modules())


@torch.no_grad()
def test_checkpoint_round_trip(tmp_path: Path):
    model = head_on(tiny_resnet(0), tiny_resnet(2), hidden_dim=5)
    path = save_model(model, tmp_path / "best.pt")
    loaded = load_model(path)
    assert type(loaded) is TagHead and loaded.model_name == "tag_head"
    assert loaded.pretrained_cfg == model.pretrained_cfg and loaded.model_args == model.model_args
    for key, value in model.state_dict().items():
        assert torch.equal(value, loaded.state_dict()[key]), key
    x = waveform(model)
    torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=0)


def test_embedding_head_checks_its_arguments():
    head = EmbeddingHead(4, 2)
    with pytest.raises(ModelError, match="standardisation needs 4 values"):
        head.set_standardization(torch.zeros(3), torch.ones(3))
    head.set_standardization(torch.zeros(4), torch.tensor([0.0, 1.0, 2.0, 3.0]))
    assert head.scale.tolist() == [1.0, 1.0, 2.0, 3.0]  # a constant feature is not divided by 0
    with pytest.raises(ModelError, match="hidden_dim must be an integer >= 0"):
        EmbeddingHead(4, 2, hidden_dim=-1)
    with pytest.raises(ModelError, match="expected a scalar or 2 values"):
        head.set_output_bias(torch.zeros(3))


def write_head_folder(folder: Path, thresholds: dict[str, float] | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    save_model(head_on(tiny_resnet(0)), folder / "best.pt")
    card = {"format": HEAD_FORMAT, "version": 1, "tags": TAGS}
    if thresholds is not None:
        card["thresholds"] = thresholds
    (folder / CARD_FILE).write_text(json.dumps(card))
    return folder


def test_head_folders_and_their_thresholds(tmp_path: Path):
    folder = write_head_folder(tmp_path / "my-tags", {"warm-up": 0.25, "peak time": 0.5, "closing": 0.75})
    assert is_head_folder(folder) and head_folder_of(folder / "best.pt") == folder
    assert head_thresholds(folder) == {"warm-up": 0.25, "peak time": 0.5, "closing": 0.75}
    assert head_thresholds(folder / "best.pt") == head_thresholds(folder)
    assert read_card(folder)["tags"] == TAGS
    assert type(load_model(folder)) is TagHead  # loads like a run folder
    other = tmp_path / "run"
    other.mkdir()
    save_model(tiny_resnet(0), other / "best.pt")
    assert not is_head_folder(other) and head_thresholds(other) is None
    with pytest.raises(CheckpointError, match="not a head folder"):
        read_card(other)
    (folder / CARD_FILE).write_text(json.dumps({"format": "something-else"}))
    assert not is_head_folder(folder)


def test_importing_a_head_into_the_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("FOCALTAG_CACHE_DIR", str(tmp_path / "cache"))
    folder = write_head_folder(tmp_path / "trained", {"warm-up": 0.1, "peak time": 0.2, "closing": 0.3})
    (folder / "work").mkdir()
    (folder / "work" / "embeddings.npz").write_bytes(b"x" * 10)
    assert imported_head("crates") is None
    target = import_head("crates", folder)
    assert imported_head("crates") == target and is_head_folder(target)
    assert not (target / "work").exists()  # the training cache is not part of the model
    assert head_thresholds(target) == head_thresholds(folder)
    import_head("crates", folder)  # again: replaced, still one folder
    assert sorted(p.name for p in target.parent.iterdir()) == ["crates"]
    with pytest.raises(ModelError, match="is a catalogue model"):
        import_head("won2020-mtat-musicnn", folder)
    with pytest.raises(ModelError, match="not a head folder"):
        import_head("other", tmp_path)
    with pytest.raises(ModelError, match="not a usable name"):
        import_head("../evil", folder)


def test_a_heads_tags_go_under_focaltag_tags_even_when_they_are_mood_words():
    """The file key when the user names none: MOOD only for a published mood/theme model; a head of the same
    words (or any other vocabulary) writes FOCALTAG_TAGS (`tag --write-tags` and the beets plugin share it)."""
    from focaltag.models.resolve import MemberSource
    from focaltag.outputs.filetags import MOOD_KEY, OTHER_KEY, default_tag_key

    words = ["mood/theme---calm", "mood/theme---happy"]
    base = tiny_resnet(0)
    head = TagHead(tag_names=words, base=[base_spec(base, "base0")]).eval()
    assert head.model_name == "tag_head"
    plain = MemberSource(name="plain", weight=1.0, model=base)
    assert default_tag_key(words, [plain]) == MOOD_KEY
    assert default_tag_key(words, [MemberSource(name="mine", weight=1.0, model=head)]) == OTHER_KEY
    assert default_tag_key(TAGS, [plain]) == OTHER_KEY
