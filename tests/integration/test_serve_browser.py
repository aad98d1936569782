"""The page at ``/`` in headless Chromium (Debian's chromium + chromium-driver, driven by selenium).

The browser drops a real recording on the page (and picks a bad file with the file input), waits for the tag bars,
downloads the results as JSON and saves a screenshot as a test artefact: ``$FOCALTAG_TEST_ARTIFACTS`` if set, else pytest's tmp folder.
Without Chromium the test is skipped, except under CI=true, where a missing browser is a failure
(scripts/ci-system-deps installs it).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from _serve_server import Server, need, running_server, small_model

need("fastapi", "the serve extra is not installed (pip install 'focaltag[serve]')")
httpx = need("httpx", "httpx is needed to talk to the server")

CHROMIUM = ("/usr/bin/chromium", "/usr/bin/chromium-browser")
CHROMEDRIVER = "/usr/bin/chromedriver"
TOKEN = "page-token"


def _browser_or_skip() -> tuple[str, str]:
    binary = next((b for b in CHROMIUM if Path(b).exists()), shutil.which("chromium"))
    driver = CHROMEDRIVER if Path(CHROMEDRIVER).exists() else shutil.which("chromedriver")
    missing = []
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing.append("the selenium package")
    if not binary:
        missing.append("chromium")
    if not driver:
        missing.append("chromedriver")
    if missing:
        reason = f"headless browser test needs {', '.join(missing)} (run scripts/ci-system-deps)"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    return str(binary), str(driver)


@pytest.fixture(scope="module")
def downloads(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("browser-downloads")


@pytest.fixture(scope="module")
def browser(downloads: Path):
    binary, driver_path = _browser_or_skip()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1100,1500", "--no-first-run", "--disable-extensions"):
        options.add_argument(arg)
    options.add_experimental_option("prefs", {"download.default_directory": str(downloads),
                                              "download.prompt_for_download": False})
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    import torch

    torch.manual_seed(3)
    workdir = tmp_path_factory.mktemp("serve-browser")
    model = small_model(workdir / "small.pt")
    with running_server([model], workdir, "--token", TOKEN) as srv:
        yield srv


@pytest.fixture()
def artefacts(tmp_path: Path) -> Path:
    folder = Path(os.environ.get("FOCALTAG_TEST_ARTIFACTS", tmp_path))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


_DROP = """
const [path_input, zone] = arguments;
const data = new DataTransfer();
for (const file of path_input.files) data.items.add(file);
zone.dispatchEvent(new DragEvent("dragenter", {dataTransfer: data, bubbles: true, cancelable: true}));
zone.dispatchEvent(new DragEvent("drop", {dataTransfer: data, bubbles: true, cancelable: true}));
path_input.remove();
"""


def _drop_file(driver, path: Path) -> None:
    """Drop a local file on the drop zone: a DataTransfer built from a scratch file input, as a drag hands it."""
    from selenium.webdriver.common.by import By

    driver.execute_script("const i = document.createElement('input'); i.type = 'file'; i.id = 'scratch-input';"
                          "document.body.appendChild(i);")
    scratch = driver.find_element(By.ID, "scratch-input")
    scratch.send_keys(str(path))
    driver.execute_script(_DROP, scratch, driver.find_element(By.ID, "drop"))


def _wait(driver, seconds: float, condition):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, seconds, poll_frequency=0.2).until(condition)


def test_page_tags_a_dropped_recording_and_shows_errors_next_to_bad_files(
        browser, server: Server, music_dir: Path, tmp_path: Path, artefacts: Path, downloads: Path) -> None:
    from selenium.webdriver.common.by import By

    browser.get(server.url + "/")
    # the server needs a token: the page asks once and keeps it in localStorage
    token_box = _wait(browser, 30, lambda d: d.find_element(By.ID, "token-box"))
    _wait(browser, 30, lambda d: token_box.is_displayed())
    browser.find_element(By.ID, "token-input").send_keys(TOKEN)
    browser.find_element(By.CSS_SELECTOR, "#token-form button").click()
    _wait(browser, 30, lambda d: d.find_element(By.ID, "status").text == "ready")
    assert browser.execute_script("return localStorage.getItem('focaltag.serve.token')") == TOKEN
    assert not token_box.is_displayed()

    bad = tmp_path / "not-audio.mp3"
    bad.write_bytes(b"this is not an mp3 file, just text\n" * 500)
    browser.find_element(By.ID, "file-input").send_keys(str(bad))  # picked
    _drop_file(browser, music_dir / "battle-epic.ogg")  # dropped

    cards = _wait(browser, 240, lambda d: [c for c in d.find_elements(By.CSS_SELECTOR, "article.card")
                                           if c.find_elements(By.CSS_SELECTOR, ".bar")] or None)
    good = cards[0]
    assert good.find_element(By.CSS_SELECTOR, ".name").text == "battle-epic.ogg"
    bars = good.find_elements(By.CSS_SELECTOR, ".bar")
    assert len(bars) == 8
    values = [float(b.find_element(By.CSS_SELECTOR, ".value").text) for b in bars]
    assert values == sorted(values, reverse=True) and all(0 <= v <= 1 for v in values)
    assert "1:14" in good.find_element(By.CSS_SELECTOR, ".meta").text  # 74 s
    assert "small" in good.find_element(By.CSS_SELECTOR, ".meta").text
    _wait(browser, 30, lambda d: good.find_element(By.CSS_SELECTOR, "img.taggram").get_attribute("naturalWidth")
          not in (None, "0"))

    failed = browser.find_element(By.CSS_SELECTOR, "article.card.failed")
    assert failed.find_element(By.CSS_SELECTOR, ".name").text == "not-audio.mp3"
    assert "cannot decode" in failed.find_element(By.CSS_SELECTOR, ".error").text
    assert not browser.find_element(By.ID, "download").get_attribute("disabled")

    browser.find_element(By.ID, "download").click()
    saved = downloads / "focaltag-results.json"
    _wait(browser, 30, lambda d: saved.exists() and saved.stat().st_size > 0)
    results = {r["file"]: r for r in json.loads(saved.read_text())}  # the API's schema, failures included
    assert set(results) == {"battle-epic.ogg", "not-audio.mp3"}
    assert set(results["not-audio.mp3"]) == {"file", "error"}
    result = results["battle-epic.ogg"]
    assert len(result["tags"]) == 56 and result["model"] == "small" and result["duration"] == pytest.approx(74, abs=1)
    assert [round(t["probability"], 3) for t in result["top"]] == values

    shot = artefacts / "serve-page.png"
    browser.save_screenshot(str(shot))
    assert shot.stat().st_size > 10_000

    # the page keeps working after a bad file, and a reload remembers the token
    browser.refresh()
    _wait(browser, 30, lambda d: d.find_element(By.ID, "status").text == "ready")
    assert not browser.find_element(By.ID, "token-box").is_displayed()
    browser.find_element(By.ID, "file-input").send_keys(str(music_dir / "traveling_minstrels.low.mp3"))
    _wait(browser, 240, lambda d: d.find_elements(By.CSS_SELECTOR, "article.card .bar"))


def test_page_uploads_cyrillic_and_cjk_file_names_losslessly(browser, server: Server, tmp_path: Path) -> None:
    """Chromium sends file names as raw UTF-8 (RFC 7578); they come back exactly, on the cards and in the JSON."""
    import numpy as np
    import soundfile as sf
    from selenium.webdriver.common.by import By

    names = ["Мелодия.wav", "日本語の歌.wav"]
    paths = []
    for seed, name in enumerate(names):
        path = tmp_path / name
        sf.write(path, 0.1 * np.random.default_rng(seed).standard_normal(16000 * 2), 16000, subtype="PCM_16")
        paths.append(str(path))
    browser.get(server.url + "/")
    browser.execute_script("localStorage.setItem('focaltag.serve.token', arguments[0])", TOKEN)
    browser.refresh()
    _wait(browser, 30, lambda d: d.find_element(By.ID, "status").text == "ready")
    browser.find_element(By.ID, "file-input").send_keys("\n".join(paths))
    cards = _wait(browser, 240, lambda d: [c for c in d.find_elements(By.CSS_SELECTOR, "article.card")
                                           if c.find_elements(By.CSS_SELECTOR, ".bar")
                                           or c.find_elements(By.CSS_SELECTOR, ".error")]
                  if len(d.find_elements(By.CSS_SELECTOR, "article.card .bar")) >= 2 * 8 else None)
    shown = sorted(c.find_element(By.CSS_SELECTOR, ".name").text for c in cards)
    assert shown == sorted(names)
    assert not browser.find_elements(By.CSS_SELECTOR, "article.card.failed")
    assert "Traceback" not in server.log_text()
