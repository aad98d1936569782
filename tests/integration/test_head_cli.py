"""`focaltag head train | eval` through the real CLI, on excerpts cut from the shared recordings.

The labelled set: 6 s excerpts of five recordings, tagged by recording ("space", "machine", "colobot") and by
game ("wesnoth", on two recordings, one of which is also "epic"). The base is a small randomly initialised
short-chunk ResNet (its embeddings still tell recordings apart; a trained base would only make it easier); the
slow test at the end trains on Won et al.'s trained Musicnn.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score

from focaltag.cli import main

RECORDINGS = {"battle-epic.ogg": "wesnoth;epic", "traveling_minstrels.ogg": "wesnoth", "nebula.ogg": "space",
              "machine_wars.mp3": "machine", "music013.ogg": "colobot"}
TRAIN, TEST = 6, 2  # excerpts per recording
TAGS = ("colobot", "epic", "machine", "space", "wesnoth")


def cut_excerpts(music_dir: Path, folder: Path, seconds: float = 6.0) -> tuple[Path, Path]:
    """Write the excerpts (FLAC at the recording's rate) and labels.csv / test.csv with relative paths."""
    audio = folder / "music"
    audio.mkdir(parents=True)
    train, test = ["path,tags"], ["path,tags"]
    for name, tags in RECORDINGS.items():
        info = sf.info(music_dir / name)
        n = TRAIN + TEST
        for k in range(n):
            start = int((k + 0.5) * (info.duration - seconds - 1) / n * info.samplerate)
            wave, sr = sf.read(music_dir / name, start=start, frames=int(seconds * info.samplerate))
            path = audio / f"{Path(name).stem}-{k:02d}.flac"
            sf.write(path, wave, sr)
            (train if k < TRAIN else test).append(f"music/{path.name},{tags}")
    (folder / "labels.csv").write_text("\n".join(train) + "\n")
    (folder / "test.csv").write_text("\n".join(test) + "\n")
    return folder / "labels.csv", folder / "test.csv"


def expected_labels(csv: Path) -> tuple[list[str], np.ndarray]:
    """Paths and the 0/1 matrix in TAGS order, read here without focaltag."""
    rows = [line.split(",") for line in csv.read_text().splitlines()[1:]]
    paths = [str(csv.parent / p) for p, _ in rows]
    y = np.array([[int(t in tags.split(";")) for t in TAGS] for _, tags in rows], dtype=np.int8)
    return paths, y


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """These networks are tiny: one torch thread is as fast on an idle machine and many times faster on a busy
    one, where threads wait for each other (the CLI only ever lowers the thread count, so it stays)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def workspace(music_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from focaltag.models import create_model, save_model

    root = tmp_path_factory.mktemp("head")
    labels, test = cut_excerpts(music_dir, root)
    torch.manual_seed(0)
    base = save_model(create_model("short_chunk_resnet", width=8, n_tags=10), root / "base.pt")
    return {"root": root, "labels": labels, "test": test, "base": base, "out": root / "my-tags"}


def run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(args)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture(scope="module")
def trained(workspace: dict[str, Path]) -> dict[str, Path]:
    args = ["head", "train", "--labels", str(workspace["labels"]), "--out", str(workspace["out"]), "--base",
            str(workspace["base"]), "--folds", "3", "--bootstrap", "200", "--steps", "200", "--hidden-size", "32"]
    assert main(args) == 0
    return workspace


def test_train_writes_a_model_folder_with_its_card(trained: dict[str, Path]):
    out = trained["out"]
    assert sorted(p.name for p in out.iterdir()) == ["best.pt", "card.json", "thresholds.tsv", "work"]
    card = json.loads((out / "card.json").read_text())
    _, y = expected_labels(trained["labels"])
    assert card["format"] == "focaltag-head" and card["tags"] == list(TAGS)
    assert card["counts"] == {t: int(c) for t, c in zip(TAGS, y.sum(axis=0), strict=True)}
    assert card["labels"]["tracks"] == len(y) == len(RECORDINGS) * TRAIN
    assert card["base"]["model"] == "base.pt" and card["base"]["embedding_size"] == 16
    cv = card["cross_validation"]
    assert (cv["loss"], cv["sampling"], cv["folds"]) == ("focal", "standard", 3)
    assert cv["head"]["kind"] in ("linear", "hidden 32") and set(cv["head"]["candidates"]) == {"linear", "hidden 32"}
    for metrics in (cv["metrics"], cv["bce"]["metrics"]):
        for name in ("PR-AUC-macro", "ROC-AUC-macro"):
            lo, hi = metrics["ci"]["intervals"][name]
            assert lo <= metrics[name] <= hi
        for tag in TAGS:
            row = metrics["per_tag"][tag]
            assert row["positives"] == card["counts"][tag]
            assert row["PR-AUC-ci"][0] <= row["PR-AUC"] <= row["PR-AUC-ci"][1]
    assert set(cv["comparison_with_bce"]) == {"PR-AUC-macro", "ROC-AUC-macro"}
    assert cv["metrics"]["PR-AUC-macro"] > 2 * float(y.mean())  # the head learnt the tags (chance = prevalence)
    tsv = dict(line.split("\t") for line in (out / "thresholds.tsv").read_text().splitlines())
    assert {t: float(v) for t, v in tsv.items()} == card["thresholds"]


def test_cross_validated_numbers_are_reproducible_from_the_cached_embeddings(trained: dict[str, Path]):
    """The card's scores, recomputed from the embeddings cache with the library API, checked with sklearn."""
    from focaltag.library.heads import cross_validate_head
    from focaltag.training.head import HeadOptions

    card = json.loads((trained["out"] / "card.json").read_text())
    paths, y = expected_labels(trained["labels"])
    cache = next((trained["out"] / "work").glob("embeddings-*.npz"))
    with np.load(cache) as data:
        row = {str(p): v for p, v in zip(data["paths"], data["vectors"], strict=True)}
    x = np.stack([row[p] for p in paths])
    report = cross_validate_head(x, y, TAGS, HeadOptions(folds=3, steps=200, hidden_sizes=(0, 32)), bootstrap=200)
    cv = card["cross_validation"]
    assert report.to_dict()["metrics"]["PR-AUC-macro"] == pytest.approx(cv["metrics"]["PR-AUC-macro"], abs=1e-12)
    ap = [average_precision_score(y[:, j], report.oof[:, j]) for j in range(len(TAGS))]
    auc = [roc_auc_score(y[:, j], report.oof[:, j]) for j in range(len(TAGS))]
    assert cv["metrics"]["PR-AUC-macro"] == pytest.approx(np.mean(ap), abs=1e-12)
    assert cv["metrics"]["ROC-AUC-macro"] == pytest.approx(np.mean(auc), abs=1e-12)
    for j, tag in enumerate(TAGS):  # the official choice: the threshold at the best F-score of sklearn's curve
        precision, recall, thr = precision_recall_curve(y[:, j], report.oof[:, j])
        with np.errstate(divide="ignore", invalid="ignore"):
            f = np.nan_to_num(2 * precision * recall / (precision + recall))
        assert card["thresholds"][tag] == pytest.approx(float(thr[int(np.argmax(f[:-1]))]), abs=0)


def test_tag_with_the_head_prints_its_tags_and_decisions(trained: dict[str, Path], capsys):
    from focaltag.inference.chunking import iter_chunks, plan_file
    from focaltag.models import load_model

    paths, y = expected_labels(trained["test"])
    code, out, err = run(["tag", *paths[::2], "--model", str(trained["out"]), "--format", "json", "--chunks", "16",
                          "--precision", "fp32"], capsys)
    assert code == 0, err
    assert "yes/no decisions use my-tags's thresholds" in err
    results = json.loads(out)
    card = json.loads((trained["out"] / "card.json").read_text())
    model = load_model(trained["out"])
    base = load_model(trained["base"])
    for result in results:
        assert result["model"] == "my-tags" and sorted(result["tags"]) == list(TAGS)
        assert result["decisions"] == {t: result["tags"][t] > card["thresholds"][t] for t in TAGS}
        # one forward of the base, then the head: the base's own layer before its classifier, chunk by chunk
        plan = plan_file(result["file"], sample_rate=16000, chunk_samples=model.pretrained_cfg.chunk_samples)
        chunks = torch.from_numpy(np.stack([c for _, c in iter_chunks(plan)]))
        with torch.no_grad():
            emb = base.forward_head(base.forward_features(chunks), pre_logits=True)
            probs = torch.sigmoid(model.forward_head(emb)).mean(dim=0).numpy()
        np.testing.assert_allclose([result["tags"][t] for t in TAGS], probs, atol=2e-6)
    code, out, err = run(["tag", paths[0], "--model", str(trained["out"]), "--chunks", "4"], capsys)
    assert code == 0 and Path(paths[0]).name in out


def vorbis_keys(tags) -> set[str]:
    """The field names of a Vorbis comment block (iterating it gives (key, value) pairs, hence .keys())."""
    return {k.upper() for k in tags.keys()}  # noqa: SIM118


def test_write_tags_goes_to_the_named_field_only(trained: dict[str, Path], tmp_path: Path, capsys):
    mutagen = pytest.importorskip("mutagen")
    paths, _ = expected_labels(trained["test"])
    lib = tmp_path / "lib"
    lib.mkdir()
    files = [Path(shutil.copy(p, lib)) for p in paths[:4]]
    out = tmp_path / "tags.jsonl"
    code, _, err = run(["tag", str(lib), "--model", str(trained["out"]), "-o", str(out), "--chunks", "16",
                        "--precision", "fp32", "--write-tags", "--tag-field", "GROUPING"], capsys)
    assert code == 0, err
    lines = {json.loads(line)["file"]: json.loads(line) for line in out.read_text().splitlines()}
    for f in files:
        tags = mutagen.File(f).tags
        assert vorbis_keys(tags) == {"GROUPING"}  # nothing but the named field
        assert tags["GROUPING"] == [t for t in TAGS if lines[str(f)]["decisions"][t]]
    # without --tag-field a head writes FOCALTAG_TAGS, never MOOD
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    copy = Path(shutil.copy(paths[4], fresh))
    code, _, err = run(["tag", str(copy), "--model", str(trained["out"]), "--write-tags", "--top-k", "1",
                        "--thresholds", "none"], capsys)
    assert code == 0, err
    assert vorbis_keys(mutagen.File(copy).tags) == {"FOCALTAG_TAGS"}
    code, _, err = run(["tag", str(copy), "--model", str(trained["out"]), "--tag-field", "GROUPING"], capsys)
    assert code == 2 and "--tag-field only applies with --write-tags" in err


def test_head_eval_scores_a_held_out_set_as_sklearn_does(trained: dict[str, Path], capsys):
    paths, y = expected_labels(trained["test"])
    code, out, err = run(["head", "eval", "--labels", str(trained["test"]), "--model", str(trained["out"]),
                          "--json", "--bootstrap", "200"], capsys)
    assert code == 0, err
    scores = json.loads(out)
    code, tagged, err = run(["tag", *paths, "--model", str(trained["out"]), "--format", "json", "--chunks", "16",
                             "--precision", "fp32"], capsys)
    by_file = {r["file"]: r for r in json.loads(tagged)}
    p = np.array([[by_file[f]["tags"][t] for t in TAGS] for f in paths])
    assert scores["tracks"] == len(paths) and scores["thresholds"] == "the model's own"
    assert scores["PR-AUC-macro"] == pytest.approx(
        np.mean([average_precision_score(y[:, j], p[:, j]) for j in range(len(TAGS))]), abs=1e-6)
    assert scores["ROC-AUC-macro"] == pytest.approx(
        np.mean([roc_auc_score(y[:, j], p[:, j]) for j in range(len(TAGS))]), abs=1e-6)
    lo, hi = scores["ci"]["intervals"]["PR-AUC-macro"]
    assert lo <= scores["PR-AUC-macro"] <= hi and "F-score-macro" in scores
    code, text, _ = run(["head", "eval", "--labels", str(trained["test"]), "--model", str(trained["out"]),
                         "--bootstrap", "50"], capsys)
    assert code == 0 and "macro PR-AUC" in text and "wesnoth" in text


def test_models_info_import_and_a_second_training_from_the_cache(trained: dict[str, Path], tmp_path: Path,
                                                                 capsys, monkeypatch: pytest.MonkeyPatch):
    code, out, _ = run(["models", "info", str(trained["out"])], capsys)
    assert code == 0 and "your tags on base.pt" in out and "focal - bce PR-AUC-macro" in out
    monkeypatch.setenv("FOCALTAG_CACHE_DIR", str(tmp_path / "cache"))
    code, out, _ = run(["models", "import", "crates", str(trained["out"])], capsys)
    assert code == 0 and out.strip() == str(tmp_path / "cache" / "heads" / "crates")
    paths, _ = expected_labels(trained["test"])
    code, out, err = run(["tag", paths[0], "--model", "crates", "--format", "json", "--chunks", "4"], capsys)
    assert code == 0, err
    assert json.loads(out)[0]["model"] == "crates" and json.loads(out)[0]["decisions"] is not None
    code, out, _ = run(["models", "info", "crates", "--json"], capsys)
    assert json.loads(out)["format"] == "focaltag-head"
    # the same folder again: refused without --overwrite; with it, every embedding comes from the cache
    args = ["head", "train", "--labels", str(trained["labels"]), "--out", str(trained["out"]), "--base",
            str(trained["base"]), "--folds", "3", "--bootstrap", "50", "--steps", "50", "--loss", "bce"]
    code, _, err = run(args, capsys)
    assert code == 2 and "already holds a trained head; pass --overwrite" in err
    code, _, err = run([*args, "--overwrite"], capsys)
    assert code == 0 and "extracting" not in err
    assert json.loads((trained["out"] / "card.json").read_text())["cross_validation"]["loss"] == "bce"


def test_export_onnx_of_a_head(trained: dict[str, Path], tmp_path: Path, capsys):
    pytest.importorskip("onnxruntime")
    code, _, err = run(["export", "--model", str(trained["out"]), "--onnx", str(tmp_path / "head.onnx")], capsys)
    assert code == 0, err
    assert "5 tags" in err and (tmp_path / "head.onnx").is_file()


@pytest.mark.parametrize(("labels", "extra", "expected"), [
    ("path,tags,artist\nmusic/nebula-00.flac,space,X\n", [], "unknown column(s) 'artist'"),
    ("path,tags\nmusic/nebula-00.flac,\n", [], "empty tags for music/nebula-00.flac"),
    ("path,space,machine\nmusic/nebula-00.flac,1,0\nmusic/nebula-01.flac,1,0\n", [],
     "tag(s) 'machine' have no positive track"),
    ("path,tags\n" + "".join(f"music/nebula-{k:02d}.flac,space\n" for k in range(5)) + "music/machine_wars-00.flac,"
     "machine\nmusic/machine_wars-01.flac,machine\n", ["--folds", "3"],
     "tag(s) with fewer positive tracks than the 3 folds: 'machine' (2); tag more tracks with them, drop them, or "
     "lower --folds to 2"),
    ("path,tags\nmusic/nebula-00.flac,space\nmusic/gone.flac,space\n", [], "1 of 2 file(s) do not exist"),
    ("path,a,b\nmusic/nebula-00.flac,1,0\nmusic/nebula-00.flac,0,1\n", [],
     "listed twice with different labels"),
])
def test_bad_labels_are_one_line_and_nothing_is_written(workspace: dict[str, Path], tmp_path: Path, capsys,
                                                        labels: str, extra: list[str], expected: str):
    csv = workspace["root"] / f"bad-{abs(hash(labels))}.csv"
    csv.write_text(labels)
    out = tmp_path / "never"
    code, stdout, err = run(["head", "train", "--labels", str(csv), "--out", str(out), "--base",
                             str(workspace["base"]), *extra], capsys)
    assert code == 2 and stdout == ""
    assert err.startswith("focaltag: error: ") and err.count("\n") == 1 and expected in err, err
    assert not out.exists()


def test_library_embeddings_are_reused_and_a_different_base_is_refused(trained: dict[str, Path], tmp_path: Path,
                                                                       capsys):
    library = tmp_path / "tags.jsonl"
    code, _, err = run(["tag", str(trained["root"] / "music"), "--model", str(trained["base"]), "-o", str(library),
                        "--embeddings", "--chunks", "16", "--precision", "fp32"], capsys)
    assert code == 0, err
    out = tmp_path / "from-library"
    code, _, err = run(["head", "train", "--labels", str(trained["labels"]), "--out", str(out), "--library",
                        str(library), "--base", str(trained["base"]), "--folds", "3", "--bootstrap", "50",
                        "--steps", "50"], capsys)
    assert code == 0, err
    assert f"30 of 30 track(s) found in {library}" in err and "extracting" not in err
    assert not list((out / "work").glob("embeddings-*.npz"))  # nothing was decoded
    other = tmp_path / "other.pt"
    from focaltag.models import create_model, save_model

    save_model(create_model("short_chunk_resnet", width=4, n_tags=3), other)
    capsys.readouterr()
    code, _, err = run(["head", "train", "--labels", str(trained["labels"]), "--out", str(tmp_path / "x"),
                        "--library", str(library), "--base", str(other)], capsys)
    assert code == 2 and "--base" in err and "embeddings come from base.pt" in err and err.count("\n") == 1
    assert not (tmp_path / "x").exists()


@pytest.mark.slow
def test_a_trained_base_learns_the_recordings(music_dir: Path, won2020_models_dir: Path, tmp_path: Path, capsys,
                                              monkeypatch: pytest.MonkeyPatch):
    """Won et al.'s MagnaTagATune Musicnn as the base: the head separates the recordings out of fold."""
    monkeypatch.setenv("FOCALTAG_CACHE_DIR", str(tmp_path / "cache"))
    assert main(["models", "import", "won2020-mtat-musicnn", str(won2020_models_dir / "mtat-musicnn.pth")]) == 0
    labels, test = cut_excerpts(music_dir, tmp_path, seconds=4.0)
    code, _, err = run(["head", "train", "--labels", str(labels), "--out", str(tmp_path / "m"), "--base",
                        "won2020-mtat-musicnn", "--folds", "3", "--bootstrap", "200"], capsys)
    assert code == 0, err
    card = json.loads((tmp_path / "m" / "card.json").read_text())
    assert card["cross_validation"]["metrics"]["PR-AUC-macro"] > 0.9
    code, out, err = run(["head", "eval", "--labels", str(test), "--model", str(tmp_path / "m"), "--json"], capsys)
    assert code == 0, err
    assert json.loads(out)["ROC-AUC-macro"] > 0.9
