"""Browser tests: headless Chromium through selenium against a live server.

Every page is loaded with the network blocked (only 127.0.0.1 resolves), so
a page that needs a CDN fails here as it would on an offline machine, and
every test ends by asserting that no page logged a JavaScript error.

Chromium and chromedriver come from Debian (``.ci/install-system-packages``).
Without them the tests are skipped, unless ``CP_REQUIRE_BROWSER=1`` (set by
``.ci/run``), which turns the skip into a failure so CI cannot pass without
running them.

Screenshots: ``page.shot("flag")`` writes ``<CP_SCREENSHOT_DIR>/flag.png``
when that variable is set (``docs/img/`` holds the README's copies).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
WIDTH, HEIGHT = 1400, 1000


def _missing() -> str | None:
    if CHROMIUM is None or CHROMEDRIVER is None:
        return "needs Debian's chromium and chromium-driver"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "needs selenium"
    return None


@pytest.fixture(scope="session")
def driver() -> Iterator[object]:
    reason = _missing()
    if reason:
        if os.environ.get("CP_REQUIRE_BROWSER") == "1":
            pytest.fail(f"browser tests required (CP_REQUIRE_BROWSER=1): {reason}")
        pytest.skip(reason)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-extensions",
        "--no-first-run",
        f"--window-size={WIDTH},{HEIGHT}",
        # The network is blocked: nothing but the live server resolves.
        "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1, EXCLUDE localhost",
    ):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    browser = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    browser.set_page_load_timeout(60)
    try:
        yield browser
    finally:
        browser.quit()


class Page:
    """The browser as a test drives it: paths, login, waits, JS errors."""

    def __init__(self, browser, base_url: str) -> None:
        self.browser = browser
        self.base_url = base_url

    def get(self, path: str) -> None:
        self.browser.get(self.base_url + path)

    def login(self, username: str = "admin", password: str = "admin") -> None:
        from selenium.webdriver.common.by import By

        self.get("/admin/login/")
        self.browser.find_element(By.NAME, "username").send_keys(username)
        self.browser.find_element(By.NAME, "password").send_keys(password)
        self.browser.find_element(By.CSS_SELECTOR, "input[type=submit]").click()
        self.wait_for("#user-tools")

    def css(self, selector: str):
        from selenium.webdriver.common.by import By

        return self.browser.find_element(By.CSS_SELECTOR, selector)

    def all(self, selector: str) -> list:
        from selenium.webdriver.common.by import By

        return self.browser.find_elements(By.CSS_SELECTOR, selector)

    def wait_for(self, selector: str, timeout: float = 20):
        from selenium.webdriver.common.by import By
        from selenium.webdriver.support import expected_conditions
        from selenium.webdriver.support.ui import WebDriverWait

        return WebDriverWait(self.browser, timeout).until(
            expected_conditions.presence_of_element_located((By.CSS_SELECTOR, selector))
        )

    def accept_confirm(self) -> str:
        """Accept the page's confirm() dialog and return its text."""
        from selenium.webdriver.support import expected_conditions
        from selenium.webdriver.support.ui import WebDriverWait

        alert = WebDriverWait(self.browser, 10).until(
            expected_conditions.alert_is_present()
        )
        text = alert.text
        alert.accept()
        return text

    def js_errors(self) -> list[str]:
        """Console entries of level SEVERE since the last call."""
        return [
            entry["message"]
            for entry in self.browser.get_log("browser")
            if entry.get("level") == "SEVERE"
        ]

    def shot(self, name: str) -> Path | None:
        directory = os.environ.get("CP_SCREENSHOT_DIR")
        if not directory:
            return None
        path = Path(directory) / f"{name}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        self.browser.save_screenshot(str(path))
        return path


@pytest.fixture
def page(driver, live_server) -> Iterator[Page]:
    """A fresh session on the live server; fails the test on a JS error."""
    driver.delete_all_cookies()
    current = Page(driver, live_server.url)
    current.js_errors()  # drop what earlier tests left in the log
    yield current
    errors = current.js_errors()
    driver.delete_all_cookies()
    assert not errors, f"JavaScript errors: {errors}"


@pytest.fixture
def admin_user(db):
    from django.contrib.auth import get_user_model

    return get_user_model().objects.create_superuser(
        username="admin", email="admin@example.com", password="admin"
    )
