"""Real-browser smoke test: ``streamlit run`` both pages and load them in headless Chromium.

AppTest runs the scripts in-process; this checks what AppTest cannot: that the app starts as
``make dashboards`` starts it, that the multipage navigation serves both URLs, and that the
pages render in a browser. Chromium and its driver come from Debian (``.ci/run`` installs
``chromium`` and ``chromium-driver``); nothing is downloaded at run time. Without them the test
skips with the reason on a developer machine and fails in CI (``CI`` set), where their absence is
a broken environment, not an optional extra.
"""

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image
from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait

from tests.conftest import ROOT, clean_env, free_port

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PASSWORD = "browser-test-password"
BROWSER_NAMES = ("chromium", "chromium-browser", "google-chrome")
CHROME_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-dev-shm-usage", "--window-size=1400,2000",
)  # fmt: skip
#: Longest wait for a page to render (the first run imports torch on a shared CPU).
PAGE_TIMEOUT_S = 180


def _first_on_path(names: tuple[str, ...]) -> str | None:
    return next((path for name in names if (path := shutil.which(name))), None)


@dataclass
class Browser:
    binary: str
    driver: str


@pytest.fixture(scope="session")
def browser() -> Browser:
    """Debian's Chromium and chromedriver; skip outside CI when missing, fail in CI.

    Session-scoped so that it is resolved before the session's service starts: a skip must
    not cost a training run and a server start.
    """
    binary = os.environ.get("DEEPFAKENET_CHROMIUM") or _first_on_path(BROWSER_NAMES)
    driver = os.environ.get("DEEPFAKENET_CHROMEDRIVER") or _first_on_path(("chromedriver",))
    if binary is None or driver is None:
        missing = ", ".join(n for n, p in (("chromium", binary), ("chromedriver", driver)) if not p)
        if os.environ.get("CI"):
            pytest.fail(
                f"CI must run the browser test but cannot find: {missing} "
                "(.ci/run installs Debian's chromium and chromium-driver)"
            )
        pytest.skip(f"cannot find {missing}: apt-get install chromium chromium-driver")
    return Browser(binary, driver)


@pytest.fixture
def dashboards(service, trained_registry, tmp_path) -> Iterator[str]:
    """``streamlit run dashboards/app.py`` on a free loopback port, wired to the real service."""
    port = free_port()
    env = clean_env(
        DEEPFAKENET_SERVICE_URL=service.url,
        DEEPFAKENET_HOME=str(service.home),
        DEEPFAKENET_MLFLOW_TRACKING_URI=trained_registry.tracking_uri,
        DEEPFAKENET_ADMIN_PASSWORD=PASSWORD,
    )
    log_file = tmp_path / "streamlit.log"
    with log_file.open("wb") as log:
        process = subprocess.Popen(
            [
                str(Path(sys.executable).parent / "streamlit"), "run", "dashboards/app.py",
                "--server.address", "127.0.0.1", "--server.port", str(port),
                "--server.headless", "true", "--browser.gatherUsageStats", "false",
                "--server.fileWatcherType", "none",
            ],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                pytest.fail(f"streamlit exited with {process.returncode}:\n{log_file.read_text()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/_stcore/health", timeout=2).status_code == 200:
                    break
            if time.monotonic() > deadline:
                pytest.fail(f"streamlit did not start in 60 s:\n{log_file.read_text()}")
            time.sleep(0.3)
        yield url
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)


def test_both_pages_render_in_chromium(browser, dashboards, tmp_path):
    options = Options()
    options.binary_location = browser.binary
    for flag in CHROME_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path / 'chromium-profile'}")
    driver = webdriver.Chrome(options=options, service=Service(browser.driver))
    wait = WebDriverWait(driver, PAGE_TIMEOUT_S)
    body = (By.TAG_NAME, "body")
    upload = tmp_path / "upload.png"
    rows, cols = np.mgrid[0:900, 0:1200]  # larger than the page shows it; smooth, so small
    pixels = np.stack([cols * 255 // 1199, rows * 255 // 899, (rows + cols) % 256], axis=-1)
    Image.fromarray(pixels.astype(np.uint8)).save(upload)
    try:
        driver.get(f"{dashboards}/")
        wait.until(ec.text_to_be_present_in_element(body, "Is this image or video a deepfake?"))
        wait.until(ec.text_to_be_present_in_element(body, "model deepfakenet v1"))
        file_input = wait.until(
            ec.presence_of_element_located((By.CSS_SELECTOR, "input[type=file]"))
        )
        file_input.send_keys(str(upload))  # a real browser upload, through Streamlit's server
        wait.until(ec.text_to_be_present_in_element(body, "Is the verdict right?"))
        # The images (and their captions) arrive after the form's text: on a busy 2-core
        # machine the page was read while they were still placeholders.
        wait.until(ec.text_to_be_present_in_element(body, "Original: "))
        detector_text = driver.find_element(*body).text
        driver.save_screenshot(str(tmp_path / "detector.png"))

        driver.get(f"{dashboards}/admin")
        password = wait.until(
            ec.presence_of_element_located((By.CSS_SELECTOR, "input[type=password]"))
        )
        assert "Predictions" not in driver.find_element(*body).text, "nothing before login"
        password.send_keys(PASSWORD)
        driver.find_element(By.XPATH, "//button[normalize-space()='Sign in']").click()
        wait.until(ec.text_to_be_present_in_element(body, "Retraining history"))  # last section
        admin_text = driver.find_element(*body).text
        driver.save_screenshot(str(tmp_path / "admin.png"))
    finally:
        driver.quit()

    assert "Verdict" in detector_text and "Probability of fake" in detector_text
    assert "Original: 1200x900 PNG, shown at" in detector_text, "large images are scaled"
    assert "Model vs people" in admin_text and "Champion" in admin_text
    for text in (detector_text, admin_text):
        assert "Traceback" not in text
    for name in ("detector.png", "admin.png"):
        shot = tmp_path / name
        assert shot.stat().st_size > 10_000, f"{name} looks blank"
