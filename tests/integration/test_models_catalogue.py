"""The model catalogue: pins and provenance, pull / verify / resume / import through the real CLI against a
loopback mirror of the real Won et al. files, offline use from the cache, name resolution everywhere, and the
shipped decision thresholds of usc-sail-2020 recomputed from the authors' published validation predictions."""

from __future__ import annotations

import contextlib
import hashlib
import io
import itertools
import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from _mirror_server import Mirror, free_port_url, serve_mirror, tree_files

import focaltag
from focaltag.cli import main
from focaltag.models import catalogue as cat
from focaltag.models import hub

WON_REPO, WON_COMMIT = "minzwon/sota-music-tagging-models", "4e1d652d4a7b12437a624965e85890b70b4a111d"
USC_REPO, USC_COMMIT = "usc-sail/media-eval-2020", "aa35c013d75e4c6f90a282f2d42f70b6b36412b3"
# the issue's values, typed here independently of the catalogue file
USC_BLOBS = {
    "usc-sail-2020-bce": ("bce", "1dde7b9a68de54f8c52fdde5889f2534399a71b7"),
    "usc-sail-2020-focal": ("focal_loss", "1a81327fc82b173e70339568bcf17482e95bc14a"),
    "usc-sail-2020-cb-focal": ("cb_focal_loss", "49971afe96625104fc02126e228707effa0bb4c7"),
    "usc-sail-2020-db-focal": ("db_focal_loss", "b4182e9b34f3a0a651c41c1362b53110b644836c"),
}
WON_SHORT_RES = {"won2020-msd-short-res": ("msd", "2566ed85f37150ac6f3dba4f5a39985b5acbf156"),
                 "won2020-jamendo-top50-short-res": ("jamendo", "56478ab59e0891a0ef4188e997db536d35d3407a")}
WON_SHARED = {  # catalogue name -> (file in ../shared/models/won2020, upstream folder, tag list file)
    f"won2020-{ds}-{arch}": (f"{up}-{arch}.pth", f"models/{up}/{arch}/best_model.pth", tags)
    for ds, up, tags, archs in [("mtat", "mtat", "tags-mtat.txt", ("fcn", "crnn", "musicnn")),
                                ("jamendo-top50", "jamendo", "tags-jamendo-top50.txt", ("fcn", "crnn", "musicnn")),
                                ("msd", "msd", "tags-msd.txt", ("fcn", "crnn"))]
    for arch in archs
}
ISSUE_NAMES = {"usc-sail-2020", *USC_BLOBS, *WON_SHORT_RES, *WON_SHARED}


def blob_of(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\x00" % len(data) + data).hexdigest()


def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    rc = main(argv)
    out = capsys.readouterr()
    return rc, out.out, out.err


def error_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("focaltag: error:")]


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "cache"
    monkeypatch.setenv("FOCALTAG_CACHE_DIR", str(root))
    monkeypatch.delenv(hub.MIRROR_ENV, raising=False)
    return root


@pytest.fixture(scope="module")
def won_mirror(shared_dir: Path) -> Iterator[Mirror]:
    """The eight real Won et al. files at ``<mirror>/minzwon/sota-music-tagging-models/<commit>/models/...``."""
    with serve_mirror() as mirror:
        for file, upstream, _ in WON_SHARED.values():
            mirror.add(WON_REPO, WON_COMMIT, upstream, (shared_dir / "models" / "won2020" / file).read_bytes())
        yield mirror


@pytest.fixture
def mirror(won_mirror: Mirror) -> Iterator[Mirror]:
    won_mirror.faults.clear()
    won_mirror.requests.clear()
    yield won_mirror
    won_mirror.faults.clear()


def key(name: str) -> str:
    return f"/{WON_REPO}/{WON_COMMIT}/{WON_SHARED[name][1]}"


# --------------------------------------------------------------------------------------------- pins, provenance


def test_catalogue_has_exactly_the_issue_names_and_every_field() -> None:
    entries = cat.read_catalogue(cat.CATALOGUE_FILE)
    assert set(entries) == ISSUE_NAMES
    for e in entries.values():
        d = e.to_dict()
        for field in ("repo", "commit", "licence", "citation", "training_data", "tag_names", "front_end", "input",
                      "metrics"):
            assert d[field], (e.name, field)
        assert d["input"]["seconds"] == pytest.approx(d["input"]["samples"] / d["front_end"]["sample_rate"], abs=1e-4)
        if e.kind == "checkpoint":
            assert d["architecture"]["name"] and d["path"] and len(d["blob"]) == 40
    pyproject = (Path(cat.__file__).parents[3] / "pyproject.toml").read_text()
    assert "models/catalogue.json" in pyproject  # shipped as package data


def test_usc_sail_pins_and_provenance_match_the_issue() -> None:
    entries = cat.catalogue()
    for name, (loss, blob) in USC_BLOBS.items():
        e = entries[name]
        assert (e.repo, e.commit, e.path, e.blob) == (USC_REPO, USC_COMMIT,
                                                    f"pretrained_model/{loss}_all_data/best_model.pth", blob)
        assert e.architecture["name"] == "short_chunk_resnet" and e.architecture["args"]["variant"] == "paper"
        assert e.input["samples"] == 73600 and e.front_end["n_mels"] == 128
        assert e.licence.startswith("none") and "Knox" in e.citation
    from focaltag.data.tags import MOODTHEME_TAGS

    ens = entries["usc-sail-2020"]
    assert ens.kind == "ensemble" and list(ens.members) == list(USC_BLOBS)
    assert ens.tag_names == tuple(sorted(MOODTHEME_TAGS)) and len(ens.tag_names) == 56
    assert (ens.metrics["PR-AUC"], ens.metrics["ROC-AUC"]) == (0.161, 0.781)
    for name, (ds, blob) in WON_SHORT_RES.items():
        e = entries[name]
        assert (e.repo, e.commit, e.path, e.blob) == (WON_REPO, WON_COMMIT, f"models/{ds}/short_res/best_model.pth",
                                                    blob)
        assert e.architecture["args"]["variant"] == "won2020" and e.input["samples"] == 59049


def test_won_pins_match_the_real_files(shared_dir: Path) -> None:
    won = shared_dir / "models" / "won2020"
    assert "MIT" in (won / "LICENSE").read_text()
    for name, (file, upstream, tags) in WON_SHARED.items():
        e = cat.get_entry(name)
        data = (won / file).read_bytes()
        assert (e.repo, e.commit, e.path) == (WON_REPO, WON_COMMIT, upstream)
        assert (e.blob, e.size) == (blob_of(data), len(data))
        assert list(e.tag_names) == (won / tags).read_text().split("\n")[:-1]
        assert e.licence.startswith("MIT")
        assert e.input["samples"] == (48000 if name.endswith("musicnn") else 464000)
        assert e.front_end["n_mels"] == 96


def test_thresholds_are_the_official_rule_on_the_validation_predictions(reference_predictions_dir: Path) -> None:
    from sklearn.metrics import f1_score

    from focaltag.evaluation.thresholds import decide, mediaeval_thresholds

    root = reference_predictions_dir
    gt = np.load(root / "validation_ground_truth.npy")
    folder = root / "all_training_data" / "standard_sampling" / "validation"
    preds = {name: np.load(folder / f"{loss}_predictions.npy") for name, (loss, _) in USC_BLOBS.items()}
    preds["usc-sail-2020"] = np.mean([p.astype(np.float64) for p in preds.values()], axis=0)
    for name, p in preds.items():
        e = cat.get_entry(name)
        stored = np.array([e.thresholds[t] for t in e.tag_names])
        assert list(e.thresholds) == list(e.tag_names)
        np.testing.assert_array_equal(stored, mediaeval_thresholds(gt, p))
        macro = f1_score(gt, p > stored, average="macro", zero_division=0)  # strict '>', the official rule
        assert e.thresholds_info["validation_f_macro"] == pytest.approx(macro, abs=1e-4)
        assert e.thresholds_info["rule"] == "gt"
        np.testing.assert_array_equal(decide(p, stored), p > stored)
    assert round(f1_score(gt, preds["usc-sail-2020"] > np.array(list(cat.get_entry("usc-sail-2020").thresholds
                                                                         .values())), average="macro"), 3) == 0.193
    assert cat.get_entry("usc-sail-2020").thresholds_info["test_f_macro"] == 0.186


def test_models_list_and_info(capsys: pytest.CaptureFixture[str], cache: Path) -> None:
    rc, out, _ = run_cli(["models", "list"], capsys)
    assert rc == 0 and all(name in out for name in ISSUE_NAMES)
    rc, out, _ = run_cli(["models", "list", "--json"], capsys)
    rows = json.loads(out)
    assert rc == 0 and [r["name"] for r in rows] == list(cat.catalogue())
    assert all(r["pulled"] is False for r in rows)
    rc, out, _ = run_cli(["models", "info", "usc-sail-2020"], capsys)
    assert rc == 0
    assert "usc-sail/media-eval-2020 states no licence" in out
    assert "macro 0.193" in out and "0.186" in out and "probability > threshold" in out
    rc, out, _ = run_cli(["models", "info", "usc-sail-2020-focal", "--json"], capsys)
    card = json.loads(out)
    assert rc == 0 and len(card["thresholds"]) == 56 and "mood/theme---happy" in card["thresholds"]
    assert card["blob"] == USC_BLOBS["usc-sail-2020-focal"][1] and card["cache"]["pulled"] is False
    rc, out, _ = run_cli(["models", "info", "won2020-mtat-fcn"], capsys)
    assert rc == 0 and "MIT" in out and "464,000 samples" in out and "970d99eb564935d36e2f4b71712a250a081229e0" in out
    rc, _, err = run_cli(["models", "info", "won2020-mtat-fnc"], capsys)
    assert rc == 2 and len(error_lines(err)) == 1 and "did you mean won2020-mtat-fcn" in err


# --------------------------------------------------------------------------------------------- pull / verify


def test_pull_verifies_converts_caches_and_is_idempotent(mirror: Mirror, cache: Path, shared_dir: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    name = "won2020-mtat-fcn"
    rc, out, _ = run_cli(["models", "pull", name, "--mirror", mirror.url, "-q"], capsys)
    folder = cache / "models" / name
    assert rc == 0 and out.strip() == str(folder)
    assert tree_files(folder) == [".lock", "best.pt", "source.json"]
    assert json.loads((folder / "source.json").read_text())["blob"] == cat.get_entry(name).blob
    assert len(mirror.gets(key(name))) == 1
    rc, out, _ = run_cli(["models", "pull", name, "--mirror", mirror.url, "-q"], capsys)
    assert rc == 0 and len(mirror.gets(key(name))) == 1  # pulling again fetches nothing
    rc, out, _ = run_cli(["models", "path", name], capsys)
    assert rc == 0 and out.strip() == str(folder)

    # the cached checkpoint is the published network: same logits as the raw file converted in memory
    tags = (shared_dir / "models" / "won2020" / "tags-mtat.txt").read_text().splitlines()
    raw = focaltag.models._checkpoint.load_model(shared_dir / "models" / "won2020" / "mtat-fcn.pth", tag_names=tags)
    model = focaltag.load_model(name)
    assert model.pretrained_cfg.tag_names == tuple(tags) and model.pretrained_cfg.chunk_samples == 464000
    wave = torch.randn(2, 464000, generator=torch.Generator().manual_seed(0)) * 0.1
    with torch.no_grad():
        torch.testing.assert_close(model(wave), raw(wave), rtol=0, atol=0)
    # the folder itself loads like a run folder
    assert focaltag.load_model(folder).pretrained_cfg.tag_names == tuple(tags)


def test_pull_resumes_after_a_dropped_connection(mirror: Mirror, cache: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    name = "won2020-mtat-musicnn"
    mirror.faults[key(name)] = "drop:1000000"
    rc, _, err = run_cli(["models", "pull", name, "--mirror", mirror.url], capsys)
    assert rc == 0, err
    ranges = mirror.gets(key(name))
    assert ranges[0] is None and ranges[1] is not None and 0 < int(ranges[1][6:-1]) <= 1000000
    assert hub.is_pulled(name)


@pytest.mark.parametrize(("fault", "fragment"), [
    ("flip", "wrong bytes"),
    ("truncate:100000", "truncated: 100,000 bytes"),
    ("html", "HTML page"),
    ("404", "HTTP 404"),
])
def test_bad_bytes_are_refused_and_nothing_is_cached(mirror: Mirror, cache: Path, fault: str, fragment: str,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    name = "won2020-msd-crnn"
    mirror.faults[key(name)] = fault
    rc, out, err = run_cli(["models", "pull", name, "--mirror", mirror.url], capsys)
    assert rc != 0 and out == ""
    lines = error_lines(err)
    assert len(lines) == 1 and fragment in lines[0] and name in lines[0]
    folder = cache / "models" / name
    assert not hub.is_pulled(name)
    assert [f for f in tree_files(folder) if not f.endswith((".lock", ".part"))] == []


def test_no_network_says_how_to_get_the_model(cache: Path, music_dir: Path, monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv(hub.MIRROR_ENV, free_port_url())
    rc, out, err = run_cli(["tag", str(music_dir / "nebula.ogg"), "--model", "won2020-msd-fcn"], capsys)
    lines = error_lines(err)
    assert rc != 0 and len(lines) == 1
    assert "cannot be reached" in lines[0]
    assert "focaltag models pull won2020-msd-fcn" in lines[0] and "focaltag models import" in lines[0]
    assert "--mirror" in lines[0]
    assert not hub.is_pulled("won2020-msd-fcn")


def test_import_checks_the_pin_and_then_works_offline(cache: Path, shared_dir: Path, monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    won = shared_dir / "models" / "won2020"
    rc, _, err = run_cli(["models", "import", "won2020-jamendo-top50-crnn", str(won / "jamendo-fcn.pth")], capsys)
    assert rc == 2 and len(error_lines(err)) == 1 and f"is not {WON_REPO}@" in err
    assert not hub.is_pulled("won2020-jamendo-top50-crnn")
    rc, _, err = run_cli(["models", "import", "won2020-jamendo-top50-crnn", str(won / "jamendo-crnn.pth"),
                          str(won / "jamendo-fcn.pth")], capsys)
    assert rc == 2 and "expected 1 file(s)" in err
    rc, out, _ = run_cli(["models", "import", "won2020-jamendo-top50-crnn", str(won / "jamendo-crnn.pth")], capsys)
    assert rc == 0 and hub.is_pulled("won2020-jamendo-top50-crnn")
    monkeypatch.setenv(hub.MIRROR_ENV, free_port_url())  # no network from here on
    model = focaltag.load_model("won2020-jamendo-top50-crnn")
    assert model.pretrained_cfg.tag_names[0] == "genre---alternative" and model.model_name == "crnn"


# --------------------------------------------------------------------------------------------- tagging real music


def test_tag_with_won2020_mtat_fcn_via_the_mirror_env(mirror: Mirror, cache: Path, music_dir: Path,
                                                      monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv(hub.MIRROR_ENV, mirror.url)
    files = ["battle-epic.ogg", "traveling_minstrels.ogg", "nebula.ogg", "machine_wars.mp3"]
    rc, out, err = run_cli(["tag", *(str(music_dir / f) for f in files), "--model", "won2020-mtat-fcn",
                            "--format", "json", "--chunks", "4", "-q"], capsys)
    assert rc == 0, err
    results = {Path(r["file"]).name: r for r in json.loads(out)}
    for name in files:
        r = results[name]
        assert r["model"] == "won2020-mtat-fcn" and "decisions" not in r  # Won et al. ship no thresholds
        orchestral = name in ("battle-epic.ogg", "traveling_minstrels.ogg")
        assert (r["tags"]["classical"] > r["tags"]["techno"]) == orchestral, (name, r["top"])


# --------------------------------------------------------------------------------------------- usc-sail side


def _reference_keys(shared_dir: Path) -> list[tuple[str, tuple[int, ...], str]]:
    rows = []
    for line in (shared_dir / "reference" / "reference-checkpoint-keys.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, shape, dtype = line.split()
            rows.append((name, () if shape == "scalar" else tuple(int(d) for d in shape.split("x")), dtype))
    return rows


def reference_file(shared_dir: Path, path: Path, *, seed: int, divisor: int = 16, won2020: bool = False,
                   n_tags: int = 56) -> Path:
    """A reference-layout state_dict (the authors' ShortChunkCNN_Res key names), channels divided by ``divisor``."""
    gen = torch.Generator().manual_seed(seed)
    sd: dict[str, torch.Tensor] = {}
    for name, shape, dtype in _reference_keys(shared_dir):
        if won2020:
            name = name.replace("_2_3.", ".")
        dims = list(shape)
        if not name.startswith("spec"):
            for i in range(1 if name.startswith("dense_2") else 0, len(dims)):
                if dims[i] >= 128 and dims[i] % 128 == 0:
                    dims[i] //= divisor
        if name.startswith("dense_2"):
            dims[0] = n_tags
        if dtype == "int64":
            sd[name] = torch.tensor(7)
        elif name.endswith("running_var"):
            sd[name] = torch.rand(dims, generator=gen) + 0.5
        elif name.endswith((".fb", ".window")):
            sd[name] = torch.rand(dims, generator=gen)
        else:
            sd[name] = torch.randn(dims, generator=gen) * 0.3
    sd["spec_bn.running_mean"], sd["spec_bn.running_var"] = torch.tensor([-20.0]), torch.tensor([400.0])
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(sd, path)
    return path


@pytest.fixture
def patched_pins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[dict[str, Path]], None]]:
    """Point catalogue entries at generated files (their real weights cannot be fetched here)."""

    def apply(files: dict[str, Path]) -> None:
        data = json.loads(cat.CATALOGUE_FILE.read_text())
        for entry in data["models"]:
            if entry["name"] in files:
                raw = files[entry["name"]].read_bytes()
                entry["blob"], entry["size"] = blob_of(raw), len(raw)
        path = tmp_path / "catalogue.json"
        path.write_text(json.dumps(data))
        monkeypatch.setattr(cat, "CATALOGUE_FILE", path)
        cat.catalogue.cache_clear()

    yield apply
    cat.catalogue.cache_clear()


@pytest.fixture
def usc_files(shared_dir: Path, tmp_path: Path) -> dict[str, Path]:
    return {name: reference_file(shared_dir, tmp_path / "usc" / loss / "best_model.pth", seed=i)
            for i, (name, (loss, _)) in enumerate(USC_BLOBS.items())}


def test_usc_sail_ensemble_import_pull_load_and_tag(usc_files: dict[str, Path], patched_pins: Any, cache: Path,
                                                    music_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from focaltag.inference import Tagger
    from focaltag.models._checkpoint import load_model as load_raw
    from focaltag.models.ensemble import read_ensemble

    patched_pins(usc_files)
    files = [str(p) for p in usc_files.values()]
    rc, _, err = run_cli(["models", "import", "usc-sail-2020", *reversed(files)], capsys)
    assert rc == 2 and len(error_lines(err)) == 1 and f"is not {USC_REPO}@" in err  # member order matters
    rc, out, err = run_cli(["models", "import", "usc-sail-2020", *files, "-q"], capsys)
    folder = cache / "models" / "usc-sail-2020"
    assert rc == 0 and out.strip() == str(folder), err
    paths, weights, tags = read_ensemble(folder)
    assert [p.name for p in paths] == [f"member-0{i}.pt" for i in range(4)] and weights == [1.0] * 4
    assert tags == list(cat.get_entry("usc-sail-2020").tag_names)
    assert (folder / "thresholds.tsv").read_text().count("\n") == 56
    for member in USC_BLOBS:
        assert hub.is_pulled(member)

    # focaltag.load_model(ensemble name): logits of the mean of the members' probabilities
    ensemble = focaltag.load_model("usc-sail-2020")
    raws = [load_raw(p) for p in files]
    wave = torch.randn(3, 73600, generator=torch.Generator().manual_seed(1)) * 0.1
    with torch.no_grad():
        expected = torch.stack([torch.sigmoid(m(wave)) for m in raws]).mean(0)
        torch.testing.assert_close(torch.sigmoid(ensemble(wave)), expected, rtol=0, atol=1e-6)
    assert ensemble.pretrained_cfg.chunk_samples == 73600

    # Tagger(name) == Tagger(the four published files); the default 'tag' uses the ensemble and its thresholds
    song = music_dir / "nebula.ogg"
    by_name = Tagger("usc-sail-2020", n_chunks=2, precision="fp32").tag(song)
    by_files = Tagger(files, n_chunks=2, precision="fp32").tag(song)
    np.testing.assert_allclose(by_name.as_array(), by_files.as_array(), atol=1e-6)
    assert by_name.model == "usc-sail-2020"
    rc, out, err = run_cli(["tag", str(song), "--chunks", "2", "--format", "json", "--precision", "fp32", "-q"],
                           capsys)
    assert rc == 0, err
    (result,) = json.loads(out)
    thresholds = cat.get_entry("usc-sail-2020").thresholds
    assert result["model"] == "usc-sail-2020"
    assert result["decisions"] == {t: result["tags"][t] > thresholds[t] for t in thresholds}
    np.testing.assert_allclose(list(result["tags"].values()), by_name.as_array(), atol=1e-5)
    rc, out, _ = run_cli(["tag", str(song), "--chunks", "2", "--format", "json", "--thresholds", "none", "-q"],
                         capsys)
    assert rc == 0 and "decisions" not in json.loads(out)[0]


def test_usc_sail_pull_from_a_mirror(usc_files: dict[str, Path], patched_pins: Any, cache: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    patched_pins(usc_files)
    with serve_mirror() as mirror:
        for name, (loss, _) in USC_BLOBS.items():
            mirror.add(USC_REPO, USC_COMMIT, f"pretrained_model/{loss}_all_data/best_model.pth",
                       usc_files[name].read_bytes())
        rc, out, err = run_cli(["models", "pull", "usc-sail-2020", "--mirror", mirror.url, "-q"], capsys)
        assert rc == 0, err
        assert len(mirror.requests) == 4
        rc, _, _ = run_cli(["models", "pull", "usc-sail-2020", "usc-sail-2020-bce", "--mirror", mirror.url], capsys)
        assert rc == 0 and len(mirror.requests) == 4
    assert hub.is_pulled("usc-sail-2020")
    assert out.strip() == str(cache / "models" / "usc-sail-2020")


def test_a_wrong_architecture_is_refused_at_conversion(shared_dir: Path, tmp_path: Path, patched_pins: Any,
                                                       cache: Path, capsys: pytest.CaptureFixture[str]) -> None:
    won_variant = reference_file(shared_dir, tmp_path / "won.pth", seed=5, won2020=True)  # 3.69 s, not 4.6 s
    patched_pins({"usc-sail-2020-bce": won_variant})
    rc, _, err = run_cli(["models", "import", "usc-sail-2020-bce", str(won_variant)], capsys)
    assert rc == 2 and len(error_lines(err)) == 1 and "does not match catalogue entry" in err
    assert not hub.is_pulled("usc-sail-2020-bce")


def test_init_from_a_catalogue_name(shared_dir: Path, tmp_path: Path, patched_pins: Any, cache: Path) -> None:
    from focaltag.models import create_model, load_matching_weights
    from focaltag.training.config import train_config_from_dict

    msd = reference_file(shared_dir, tmp_path / "msd.pth", seed=9, divisor=32, won2020=True, n_tags=50)
    patched_pins({"won2020-msd-short-res": msd})
    with serve_mirror() as mirror, pytest.MonkeyPatch.context() as mp:
        mirror.add(WON_REPO, WON_COMMIT, "models/msd/short_res/best_model.pth", msd.read_bytes())
        mp.setenv(hub.MIRROR_ENV, mirror.url)
        cfg = train_config_from_dict({"model": {"init_from": "won2020-msd-short-res", "width": 4,
                                                "variant": "won2020"}})
        model = create_model("short_chunk_resnet", n_tags=56, width=4, variant="won2020")
        loaded, skipped = load_matching_weights(model, cfg.model.init_from)  # what training does
    assert hub.is_pulled("won2020-msd-short-res")
    assert "blocks.0.conv1.weight" in loaded and {k for k, _ in skipped} == {"fc.weight", "fc.bias"}
    sd = torch.load(msd, weights_only=True)
    torch.testing.assert_close(model.state_dict()["blocks.6.conv2.weight"], sd["layer7.conv_2.weight"])


def test_offline_use_needs_no_network_once_cached(mirror: Mirror, cache: Path, music_dir: Path,
                                                  monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models", "pull", "won2020-mtat-musicnn", "--mirror", mirror.url, "-q"]) == 0
    n = len(mirror.requests)
    monkeypatch.setenv(hub.MIRROR_ENV, free_port_url())
    with contextlib.redirect_stdout(io.StringIO()):
        rc = main(["tag", str(music_dir / "nebula.ogg"), "-m", "won2020-mtat-musicnn", "--chunks", "2", "-q"])
    assert rc == 0 and len(mirror.requests) == n
    capsys.readouterr()


def test_readme_table_matches_the_catalogue() -> None:
    readme = (Path(cat.__file__).parents[3] / "README.md").read_text()
    rows = {}
    lines = readme.splitlines()
    name_cell = re.compile(r"\| `(usc-sail-2020|won2020-)[a-z0-9-]*` \|")
    first = next(i for i, line in enumerate(lines) if name_cell.match(line))
    # the catalogue table is the first one that names the models; later tables (retrieval figures) are not it
    for line in itertools.takewhile(lambda s: s.startswith("|"), lines[first:]):
        if name_cell.match(line):
            cells = [c.strip() for c in line.strip("|").split("|")]
            rows[cells[0].strip("`")] = cells
    assert set(rows) == set(cat.catalogue())
    for name, cells in rows.items():
        e = cat.get_entry(name)
        assert cells[3] == ("none stated" if e.licence.startswith("none") else "MIT")
        roc, pr = (float(x) for x in cells[4].split(" / "))
        assert (roc, pr) == (e.metrics["ROC-AUC"], e.metrics["PR-AUC"])
        assert f"{e.input['seconds']:.3g} s" in cells[1]


@pytest.mark.slow
def test_train_init_from_a_catalogue_name(shared_dir: Path, synth_dataset: Path, tmp_path: Path, patched_pins: Any,
                                          cache: Path, monkeypatch: pytest.MonkeyPatch,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    import yaml

    msd = reference_file(shared_dir, tmp_path / "msd.pth", seed=9, divisor=32, won2020=True, n_tags=50)
    patched_pins({"won2020-msd-short-res": msd})
    cfg = {"data": {"dataset_dir": str(synth_dataset), "cache_dir": str(tmp_path / "wcache"), "auto_prepare": True,
                    "prepare_workers": 1},
           "model": {"width": 4, "variant": "won2020"},
           "optim": {"batch_size": 8, "epochs": 1, "adam_epochs": 1},
           "validation": {"n_chunks": 1},
           "runtime": {"device": "cpu", "num_workers": 0, "max_steps": 1}, "seed": 0}
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    with serve_mirror() as mirror:
        mirror.add(WON_REPO, WON_COMMIT, "models/msd/short_res/best_model.pth", msd.read_bytes())
        monkeypatch.setenv(hub.MIRROR_ENV, mirror.url)
        code = main(["train", "-q", "--config", str(tmp_path / "cfg.yaml"), "--init-from", "won2020-msd-short-res",
                     "--out", str(tmp_path / "run")])
    out = capsys.readouterr().out.strip().splitlines()
    assert code == 0
    report = json.loads(out[-1])
    assert report["init_from"]["path"] == "won2020-msd-short-res"
    assert report["init_from"]["loaded"] > 0 and report["init_from"]["skipped"] == 2  # fc.weight, fc.bias (50 tags)
