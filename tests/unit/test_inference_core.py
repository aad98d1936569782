"""The inference core (issue 29): a model is resolved once, options are one validated object, the predictor also
returns embeddings, and constructing a tagger changes nothing process-wide."""

from __future__ import annotations

import contextlib
import io
import json
import warnings
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
import torch

import focaltag
from focaltag.errors import ConfigError
from focaltag.inference import InferenceOptions, Predictor, Tagger, configure_runtime
from focaltag.inference.chunking import iter_chunks
from focaltag.models.facts import logits_and_embedding

SR = 16000


def _model(seed: int, width: int = 4) -> Any:
    torch.manual_seed(seed)
    return focaltag.create_model("short_chunk_resnet", n_tags=56, width=width).eval()


@pytest.fixture(scope="module")
def ensemble_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An ensemble folder of four small ResNets (the shape of the default usc-sail-2020)."""
    folder = tmp_path_factory.mktemp("ens")
    members = []
    for i in range(4):
        path = folder / f"m{i}.pt"
        focaltag.save_model(_model(i), path)
        members.append(path)
    focaltag.save_ensemble(folder / "ensemble", members)
    return folder / "ensemble"


@pytest.fixture(scope="module")
def song(tmp_path_factory: pytest.TempPathFactory) -> Path:
    rng = np.random.default_rng(0)
    t = np.arange(20 * SR) / SR
    wave = 0.3 * np.sin(2 * np.pi * 220 * t) * (1 + np.sin(2 * np.pi * 0.5 * t)) + 0.05 * rng.standard_normal(t.size)
    path = tmp_path_factory.mktemp("audio") / "song.wav"
    sf.write(path, wave.astype(np.float32), SR)
    return path


def _count(monkeypatch: pytest.MonkeyPatch, calls: Counter[str], module: Any, name: str) -> None:
    original: Callable[..., Any] = getattr(module, name)

    def counted(*args: Any, **kwargs: Any) -> Any:
        calls[name] += 1
        return original(*args, **kwargs)

    monkeypatch.setattr(module, name, counted)


def test_a_four_member_ensemble_is_resolved_once(ensemble_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import focaltag.inference.tagger as tagger_module
    import focaltag.models._checkpoint as checkpoint
    import focaltag.models.ensemble as ensemble
    import focaltag.models.resolve as resolve

    calls: Counter[str] = Counter()
    for module, name in ((resolve, "catalogue_name_of"), (ensemble, "is_ensemble_dir"), (ensemble, "read_manifest"),
                         (resolve, "resolve_path"), (resolve, "load_model"), (checkpoint, "load_model")):
        _count(monkeypatch, calls, module, name)
    _count(monkeypatch, calls, tagger_module, "resolve_model")
    tagger = Tagger(str(ensemble_dir), InferenceOptions(precision="fp32"))
    assert len(tagger.members) == 4
    assert calls["resolve_model"] == 1  # the one crossing from inference into the resolver
    assert calls["catalogue_name_of"] == 1 and calls["is_ensemble_dir"] == 1 and calls["read_manifest"] == 1
    assert calls["resolve_path"] == 0  # the resolving load_model is never used to read a member
    assert checkpoint.load_model is not None and calls["load_model"] == 4  # each member's checkpoint read once


def test_a_catalogue_name_is_resolved_once(won2020_models_dir: Path, monkeypatch: pytest.MonkeyPatch,
                                           tmp_path: Path) -> None:
    import focaltag.models.catalogue as catalogue
    import focaltag.models.resolve as resolve
    from focaltag.cli import main

    monkeypatch.setenv("FOCALTAG_CACHE_DIR", str(tmp_path))
    with contextlib.redirect_stderr(io.StringIO()):
        assert main(["models", "import", "won2020-mtat-musicnn", str(won2020_models_dir / "mtat-musicnn.pth")]) == 0
    calls: Counter[str] = Counter()
    _count(monkeypatch, calls, resolve, "catalogue_name_of")
    _count(monkeypatch, calls, catalogue, "get_entry")
    tagger = Tagger("won2020-mtat-musicnn", InferenceOptions(precision="fp32"))
    assert tagger.model_name == "won2020-mtat-musicnn"
    assert calls["catalogue_name_of"] == 1
    assert calls["get_entry"] <= 3  # is_pulled, cached_path and the catalogue defaults: no per-member repeats


def test_options_are_validated_once_with_one_clear_error() -> None:
    for bad, match in (({"n_chunks": 0}, "n_chunks"), ({"batch_size": 2.5}, "batch_size"),
                       ({"top_k": -1}, "top_k"), ({"read": "mmap"}, "read"), ({"workers": True}, "workers"),
                       ({"recheck_margin": 1.0}, "recheck_margin"), ({"precision": "fp16"}, "precision"),
                       ({"runtime": "tf"}, "runtime"), ({"adaptive": True, "hop_seconds": 1.0}, "adaptive"),
                       ({"runtime": "onnx", "precision": "bf16"}, "bf16")):
        with pytest.raises(ConfigError, match=match):
            InferenceOptions(**bad)
    options = InferenceOptions(n_chunks=8)
    assert options.replace(top_k=3).top_k == 3 and options.top_k == 5  # frozen: a copy, validated again
    with pytest.raises(ConfigError, match="n_chunks"):
        options.replace(n_chunks=-1)


def test_embeddings_are_the_chunk_mean_of_the_layer_before_the_classifier(song: Path) -> None:
    model = _model(3)
    tagger = Tagger(model, InferenceOptions(n_chunks=5, precision="fp32", embeddings=True, workers=0))
    result = tagger.tag(song)
    assert result.embedding is not None and result.embedding.dtype == np.float32
    assert result.embedding.shape == (tagger.embedding_size,) == (model.get_classifier().in_features,)
    assert result.embedding_model == tagger.model_name
    # an independent computation: the same chunks through the network split at the classifier, by hand
    chunks = np.stack([c for _, c in sorted(dict(iter_chunks(tagger.plan(song))).items())])
    with torch.inference_mode():
        hidden = model.head(model.forward_features(torch.from_numpy(chunks)).amax(dim=(2, 3)))
        logits, embedding = logits_and_embedding(model, torch.from_numpy(chunks))
    np.testing.assert_allclose(result.embedding, hidden.numpy().mean(axis=0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(embedding.numpy(), hidden.numpy(), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(result.as_array(), torch.sigmoid(logits).numpy().mean(axis=0), rtol=1e-5)
    # the probabilities do not depend on whether embeddings were asked for
    plain = Tagger(tagger.predictor, tagger.options.replace(embeddings=False)).tag(song)
    assert plain.embedding is None and plain.embedding_model == ""
    np.testing.assert_array_equal(plain.as_array(), result.as_array())


def test_an_ensemble_embedding_concatenates_its_members_in_order(ensemble_dir: Path, song: Path) -> None:
    options = InferenceOptions(n_chunks=3, precision="fp32", embeddings=True, workers=0)
    whole = Tagger(str(ensemble_dir), options).tag(song)
    parts = [Tagger(ensemble_dir.parent / f"m{i}.pt", options).tag(song).embedding for i in range(4)]
    assert whole.embedding is not None and all(p is not None for p in parts)
    np.testing.assert_allclose(whole.embedding, np.concatenate(parts), rtol=1e-5, atol=1e-6)


def test_without_embeddings_the_classifier_is_not_split(song: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import focaltag.inference.members as members

    calls: Counter[str] = Counter()
    _count(monkeypatch, calls, members, "logits_and_embedding")
    Tagger(_model(1), InferenceOptions(n_chunks=4, precision="fp32", workers=0)).tag(song)
    assert calls["logits_and_embedding"] == 0
    Tagger(_model(1), InferenceOptions(n_chunks=4, precision="fp32", workers=0, embeddings=True)).tag(song)
    assert calls["logits_and_embedding"] >= 1


def test_adaptive_embedding_is_the_mean_of_the_chunks_it_used(song: Path) -> None:
    model = _model(5)
    options = InferenceOptions(n_chunks=16, adaptive=True, precision="fp32", embeddings=True, workers=0,
                               thresholds=None, top_k=1)
    result = Tagger(model, options).tag(song)
    assert 4 <= result.chunks_used <= 16
    fixed = Tagger(model, options.replace(adaptive=False)).tag(song)
    used = np.isin(fixed.chunk_times, result.chunk_times)
    assert used.sum() == result.chunks_used
    # the fixed run's per-chunk embeddings are not kept; recompute the used chunks' mean independently
    tagger = Tagger(model, options.replace(adaptive=False))
    chunks = dict(iter_chunks(tagger.plan(song)))
    rows = [i for i, t in enumerate(fixed.chunk_times) if t in set(result.chunk_times.tolist())]
    with torch.inference_mode():
        _, emb = logits_and_embedding(model, torch.from_numpy(np.stack([chunks[i] for i in rows])))
    np.testing.assert_allclose(result.embedding, emb.numpy().mean(axis=0), rtol=1e-5, atol=1e-6)


def test_old_keywords_still_work_with_a_deprecation_warning(song: Path) -> None:
    model = _model(2)
    with pytest.warns(DeprecationWarning, match="InferenceOptions"):
        old = Tagger(model, n_chunks=4, precision="fp32", prefetch=False)
    new = Tagger(model, InferenceOptions(n_chunks=4, precision="fp32", workers=0))
    assert old.options == new.options
    np.testing.assert_array_equal(old.tag(song).as_array(), new.tag(song).as_array())
    with pytest.raises(TypeError, match="unexpected keyword"):
        Tagger(model, chunks=4)


def test_constructing_a_tagger_changes_no_process_setting() -> None:
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            Tagger(_model(0), InferenceOptions(precision="fp32"))
        assert torch.get_num_threads() == 2
        plan = configure_runtime(cores=1)
        assert plan.torch_threads == torch.get_num_threads() == 1 and plan.decode_threads <= 1
        if plan.denormals_flushed:  # x86: a subnormal result is flushed to zero
            tiny = torch.tensor([1e-39], dtype=torch.float32)
            assert float(tiny * 0.5) == 0.0
        with pytest.raises(ConfigError, match="cores"):
            configure_runtime(cores=0)
    finally:
        torch.set_num_threads(before)
        torch.set_flush_denormal(False)


def test_predictors_share_networks_and_refuse_mixed_loads() -> None:
    from focaltag.models.resolve import resolve_model

    a = Predictor.load(resolve_model(_model(0)), InferenceOptions(precision="fp32"))
    b = Predictor.load(resolve_model(_model(1)), InferenceOptions(precision="fp32"))
    both = Predictor.combine([a, b])
    assert a.embedding_size is not None and both.embedding_size == 2 * a.embedding_size
    assert both.members == (*a.members, *b.members)
    with pytest.raises(ConfigError, match="predictor was loaded"):
        Tagger(a, InferenceOptions(precision="bf16"))


def test_cli_json_embeddings(tmp_path: Path, song: Path) -> None:
    from focaltag.cli import main

    path = tmp_path / "m.pt"
    focaltag.save_model(_model(4), path)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["tag", str(song), "-m", str(path), "--format", "json", "--embeddings", "--precision", "fp32",
                     "-q"]) == 0
    (obj,) = json.loads(out.getvalue())
    assert obj["embedding_model"] == "m.pt" and len(obj["embedding"]) == 8  # the width-4 ResNet's hidden layer
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["tag", str(song), "-m", str(path), "--format", "json", "--precision", "fp32", "-q"]) == 0
    assert "embedding" not in json.loads(out.getvalue())[0]
