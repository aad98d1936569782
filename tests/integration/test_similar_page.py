"""The page of ``focaltag serve --library`` in headless Chromium: a dropped file shows the library's similar tracks.

Uses the browser set-up of ``test_serve_browser`` (skipped without Chromium, a failure under CI=true) and Won et
al.'s MTAT Musicnn over the shared recordings.
"""

from __future__ import annotations

import contextlib
import io
import os
from pathlib import Path

import pytest
from _serve_server import running_server, small_model
from test_serve_browser import _drop_file, _wait, browser, downloads  # noqa: F401  (fixtures)

from focaltag.cli import main

TOKEN = "library-token"


def test_a_dropped_file_lists_similar_library_tracks(browser, music_dir: Path,  # noqa: F811
                                                      won2020_models_dir: Path, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By

    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        assert main(["models", "import", "won2020-mtat-musicnn", str(won2020_models_dir / "mtat-musicnn.pth")]) == 0
    library = tmp_path / "Music"
    library.mkdir()
    for f in sorted(music_dir.iterdir()):
        if f.suffix in (".ogg", ".mp3"):
            os.symlink(f, library / f.name)
    out = tmp_path / "tags.jsonl"
    assert main(["tag", str(library), "-m", "won2020-mtat-musicnn", "-o", str(out), "--embeddings", "--chunks", "4",
                 "-q"]) == 0
    with running_server([small_model(tmp_path / "small.pt")], tmp_path / "srv", "--library", str(out), "--token",
                        TOKEN, env={"FOCALTAG_CACHE_DIR": os.environ["FOCALTAG_CACHE_DIR"]}) as server:
        browser.get(server.url + "/")
        browser.execute_script("localStorage.setItem('focaltag.serve.token', arguments[0])", TOKEN)
        browser.refresh()
        _wait(browser, 30, lambda d: d.find_element(By.ID, "status").text == "ready")
        _drop_file(browser, music_dir / "nebula.ogg")
        items = _wait(browser, 240, lambda d: d.find_elements(By.CSS_SELECTOR, "article.card .similar li") or None)
        names = [i.text.split(" · ")[0] for i in items]
        scores = [float(i.text.split(" · ")[1]) for i in items]
        assert "nebula.ogg" not in names  # the dropped file is the library's nebula.ogg: a duplicate of the seed
        assert len(names) == 4 and set(names) <= {p.name for p in library.iterdir()}
        assert scores == sorted(scores, reverse=True)
        assert all(i.get_attribute("title").startswith(str(library)) for i in items)


@pytest.fixture(autouse=True)
def _serve_extra() -> None:
    from _serve_server import need

    need("fastapi", "the serve extra is not installed (pip install 'focaltag[serve]')")
