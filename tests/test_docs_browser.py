"""The built documentation site in a real headless Chromium: the home page and an API page render
with their titles and the site navigation, and their screenshots are not blank.

Needs Debian's ``chromium`` (``make browser``), ``playwright`` and the docs extra; the site is built
with ``mkdocs build --strict`` and served from loopback (as ``make docs-serve`` would).
"""

from __future__ import annotations

import functools
import http.server
import io
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from tests.report.test_gallery_browser import ARGS, CHROMIUM

ROOT = Path(__file__).resolve().parents[1]
SECTIONS = ["Home", "Getting started", "How-to guides", "Reference", "Explanation", "Benchmarks"]

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> str:
    """The site built with --strict and served over HTTP on an ephemeral loopback port; yields its URL."""
    pytest.importorskip("mkdocs", reason="the docs extra: pip install 'vla_gym[docs]'")
    out = tmp_path_factory.mktemp("site") / "site"
    r = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(out)], cwd=ROOT,
                       capture_output=True, text=True, timeout=300, env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert r.returncode == 0, r.stderr[-3000:]
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(out))
    handler.log_message = lambda *a, **k: None  # type: ignore[method-assign]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    thread.join(timeout=5)


@pytest.fixture(scope="module")
def browser():
    """A headless Chromium for this module (skips when Chromium or playwright is missing)."""
    path = CHROMIUM if Path(CHROMIUM).exists() else shutil.which("chromium")
    if path is None:
        pytest.skip(f"{CHROMIUM} not found; install it with: make browser")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright not installed")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=path, args=ARGS)
        yield b
        b.close()


def _open(browser, url: str):
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.errors = []  # type: ignore[attr-defined]
    page.on("pageerror", lambda e: page.errors.append(str(e)))  # type: ignore[attr-defined]
    response = page.goto(url)
    assert response is not None and response.ok, url
    page.wait_for_load_state("load")
    return page


def _screenshot_is_not_blank(page, path: Path) -> None:
    from PIL import Image

    png = page.screenshot(path=str(path), full_page=False)
    img = np.asarray(Image.open(io.BytesIO(png)).convert("L"), dtype=np.float32)
    assert img.shape == (1000, 1400)
    assert img.std() > 10 and (img < 128).mean() > 0.01  # text and a header, not an empty page


def _h1(page) -> str:
    return page.locator("article h1").first.inner_text().replace("¶", "").strip()  # minus the permalink


def _primary_nav(page) -> list[str]:
    labels = page.locator("nav.md-nav--primary > ul > li > :is(a, label, div)").all_inner_texts()
    # the current page's item has both a table-of-contents toggle and its link: one entry each
    return list(dict.fromkeys(" ".join(t.split()) for t in labels if t.strip()))


def test_home_page_renders_title_and_navigation(browser, site: str, tmp_path: Path) -> None:
    page = _open(browser, f"{site}/")
    assert page.title() == "vla_gym"
    assert _h1(page) == "vla_gym"
    assert _primary_nav(page)[:len(SECTIONS)] == SECTIONS
    assert page.locator("article table").count() >= 1  # the feature comparison
    _screenshot_is_not_blank(page, tmp_path / "home.png")
    page.get_by_role("link", name="First checkpoint").first.click()  # navigation works
    page.wait_for_load_state("load")
    assert page.url.endswith("/getting-started/first-checkpoint/")
    assert _h1(page) == "First checkpoint"
    assert page.errors == []  # type: ignore[attr-defined]
    page.close()


def test_api_page_renders_docstrings(browser, site: str, tmp_path: Path) -> None:
    page = _open(browser, f"{site}/reference/api/policy/")
    assert page.title().startswith("vla_gym.policy")
    assert _h1(page) == "vla_gym.policy"
    heading = page.locator('[id="vla_gym.policy.Policy"]')
    assert heading.count() == 1 and heading.is_visible()
    body = page.locator("article").inner_text()
    from vla_gym.policy import Policy

    first_line = Policy.act.__doc__.strip().splitlines()[0]
    assert first_line.split("``")[0].strip()[:30] in body  # the docstring, rendered
    assert ":func:" not in body and ":class:" not in body  # reST roles shown as code (docs/hooks.py)
    assert _primary_nav(page)[:len(SECTIONS)] == SECTIONS
    active = page.locator("nav.md-nav--primary .md-nav__link--active").all_inner_texts()
    assert any("vla_gym.policy" in t for t in active)
    _screenshot_is_not_blank(page, tmp_path / "api.png")
    assert page.errors == []  # type: ignore[attr-defined]
    page.close()
