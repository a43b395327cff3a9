"""The web page in a real browser (headless Chromium) against the deployed stack, over HTTPS."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from stack import LOG_DIR, ROOT, Stack

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
CERTUTIL = "/usr/bin/certutil"


def trusting_home(home: Path, ca_file: Path) -> None:
    """A home whose NSS database (where Chromium on Linux reads the certificates its user
    trusts) holds the config's CA as a trusted issuer of server certificates."""
    nssdb = home / ".pki" / "nssdb"
    nssdb.mkdir(parents=True)
    for args in (
        ["-N", "--empty-password"],
        ["-A", "-t", "C,,", "-n", "e2e local CA", "-i", str(ca_file)],
    ):
        subprocess.run([CERTUTIL, "-d", f"sql:{nssdb}", *args], check=True, capture_output=True)


@pytest.fixture(scope="module")
def browser(stack: Stack) -> Iterator[webdriver.Chrome]:
    """Chromium that trusts the local CA the way a user's browser does (never by ignoring
    certificate errors). The session's first deploy has made the CA (`deployed` comes first)."""
    if not (shutil.which(CHROMIUM) and shutil.which(CHROMEDRIVER)):
        pytest.fail("the browser test needs Debian's chromium and chromium-driver (.ci/run)")
    if not shutil.which(CERTUTIL):
        pytest.fail("the browser test needs certutil, Debian's libnss3-tools (tools/host-packages)")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    # As root, offline: no sandbox, and none of Chromium's own network chatter.
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1000,800",
    ):
        options.add_argument(flag)
    with tempfile.TemporaryDirectory() as home:
        trusting_home(Path(home), stack.ca_file)
        options.add_argument(f"--user-data-dir={home}/profile")
        # An explicit driver path: selenium's manager would try to download one. Chromium
        # finds the NSS database through HOME, which the driver passes on.
        service = Service(CHROMEDRIVER, env={**os.environ, "HOME": home})
        driver = webdriver.Chrome(service=service, options=options)
        try:
            yield driver
        finally:
            driver.quit()


def _oracle_answer(stack: Stack, captcha_id: str) -> str:
    secret = (ROOT / "configs/local/.secrets/localvm/oracle_secret").read_text().strip()
    response = stack.request(
        "GET", f"/api/captchas/{captcha_id}/oracle", headers={"X-Captcha-Oracle": secret}
    )
    assert response.status == 200, response.text
    return response.json()["answer"]


def _shown_captcha(browser: webdriver.Chrome, not_id: str = "") -> str:
    def loaded(driver: webdriver.Chrome) -> str | bool:
        shown = driver.find_element(By.ID, "captcha-image").get_attribute("data-captcha-id")
        return shown if shown and shown != not_id else False

    return WebDriverWait(browser, 15).until(loaded)


def _verify(browser: webdriver.Chrome, answer: str) -> tuple[str, str]:
    field = browser.find_element(By.ID, "answer")
    field.clear()
    field.send_keys(answer)
    result = browser.find_element(By.ID, "result")
    # Forget the previous outcome, so that the wait below sees this verification's.
    browser.execute_script("arguments[0].removeAttribute('data-state')", result)
    browser.find_element(By.ID, "verify").click()
    WebDriverWait(browser, 15).until(lambda _: result.get_attribute("data-state"))
    return result.get_attribute("data-state"), result.text


def test_wrong_answer_shows_the_error_and_a_right_one_succeeds(deployed: Stack, browser):
    browser.get(f"{deployed.base_url}/")
    # The app's page, not Chromium's certificate error page (its title: "Privacy error").
    assert "Captcha service" in browser.page_source, browser.title
    assert browser.current_url == f"{deployed.base_url}/", browser.current_url
    first = _shown_captcha(browser)
    image = browser.find_element(By.ID, "captcha-image")
    assert browser.execute_script("return arguments[0].naturalWidth", image) > 0

    answer = _oracle_answer(deployed, first)
    wrong = "".join("Z" if c != "Z" else "Y" for c in answer)
    state, text = _verify(browser, wrong)
    assert state == "error", text
    assert text

    # The used captcha is replaced; the right answer (any case) to the new one succeeds.
    second = _shown_captcha(browser, not_id=first)
    state, text = _verify(browser, _oracle_answer(deployed, second).lower())
    browser.save_screenshot(str(LOG_DIR / f"page-{deployed.server}.png"))
    assert state == "success", text


def test_refresh_shows_a_new_captcha(deployed: Stack, browser):
    browser.get(f"{deployed.base_url}/")
    first = _shown_captcha(browser)
    browser.find_element(By.ID, "refresh").click()
    assert _shown_captcha(browser, not_id=first) != first
