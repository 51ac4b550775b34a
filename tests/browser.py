"""Headless Debian chromium for the editor's browser tests: launched once, one page per editor."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"]


def require_chromium(path: str = CHROMIUM, ci: str | None = None) -> None:
    """Skip locally when chromium is absent; under CI (CI=true) fail instead, so browser tests never vanish."""
    if Path(path).exists():
        return
    if (os.environ.get("CI", "") if ci is None else ci).lower() == "true":
        pytest.fail(f"CI=true but {path} is not installed (run `make browser` as root)", pytrace=False)
    pytest.skip(f"{path} is not installed")


@contextmanager
def chromium() -> Iterator:
    """The system chromium through Playwright (never a downloaded browser)."""
    require_chromium()
    os.environ.setdefault("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        try:
            yield browser
        finally:
            browser.close()


@contextmanager
def editor_page(browser, url: str, width: int = 1500, height: int = 950) -> Iterator:
    """The editor at `url`, loaded; on leaving, any JavaScript error the page raised fails the test."""
    context = browser.new_context(viewport={"width": width, "height": height})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda err: errors.append(str(err)))
    page.goto(url + "/")
    page.wait_for_selector("#ng-root[data-ready=true]", timeout=30_000)
    try:
        yield page
    finally:
        context.close()
    assert not errors, errors
