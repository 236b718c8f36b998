"""The gallery in a real headless Chromium: it loads from file://, filters work, videos play.

Needs Debian's ``chromium`` (``apt-get install -y chromium``) and the ``playwright`` Python
package; playwright's own browser download is not used (it cannot be fetched offline).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from .conftest import N_EPISODES, T1, Built

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--autoplay-policy=no-user-gesture-required",
]

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def page(report: Built):
    """A Chromium page with the report's index.html loaded; collects page errors."""
    if not Path(CHROMIUM).exists() and shutil.which("chromium") is None:
        pytest.skip(f"{CHROMIUM} not found; install it with: apt-get update && apt-get install -y chromium")
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="playwright not installed; install it with: pip install playwright"
    )
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM if Path(CHROMIUM).exists() else shutil.which("chromium"), args=ARGS
        )
        pg = browser.new_page()
        pg.errors = []  # type: ignore[attr-defined]
        pg.on("pageerror", lambda e: pg.errors.append(str(e)))  # type: ignore[attr-defined]
        pg.goto((report.out / "index.html").as_uri())
        yield pg
        browser.close()


def _shown(page) -> int:
    return page.locator("#tiles .tile:not([hidden])").count()


def _select(page, name: str, value: str) -> None:
    page.select_option(f'#filters select[data-filter="{name}"]', value)


def test_page_loads(page) -> None:
    assert page.title() == "vla_gym report"
    assert page.locator("#tiles .tile").count() == N_EPISODES
    assert _shown(page) == N_EPISODES
    assert page.locator("#count").text_content().startswith(f"{N_EPISODES} of {N_EPISODES} episodes shown")
    # Escaped instruction shows as text, not as a bold element.
    assert page.locator(".instr b").count() == 0
    assert page.get_by_text('pick up the <b>black</b> bowl & "place" it').count() > 0
    # Plots load from relative paths.
    assert page.evaluate("Array.from(document.images).every(i => i.complete && i.naturalWidth > 0)")
    assert page.errors == []


def test_filters_change_visible_count(page) -> None:
    _select(page, "policy", "alpha")
    assert _shown(page) == 24
    _select(page, "perturbation", "none")
    assert _shown(page) == 8
    _select(page, "outcome", "success")
    assert _shown(page) == 4
    assert page.locator("#count").text_content().startswith("4 of 40 episodes shown, 4 successes")
    _select(page, "task", f"libero_spatial/{T1}")
    assert _shown(page) == 3
    page.click("#reset")
    assert _shown(page) == N_EPISODES
    _select(page, "outcome", "error")
    assert _shown(page) == 1
    _select(page, "policy", "beta")
    assert _shown(page) == 0
    assert page.locator("#count").text_content().startswith("0 of 40")
    page.click("#reset")
    _select(page, "video", "yes")
    assert _shown(page) == 3
    page.click("#reset")


@pytest.mark.parametrize("ext", [".mp4", ".webm"])
def test_video_plays(page, ext: str) -> None:
    page.evaluate("window.scrollTo(0, 0)")
    page.reload()  # at the top again (reload restores the scroll position), no video loaded yet
    result = page.evaluate(
        """async (ext) => {
            const vids = Array.from(document.querySelectorAll('#tiles video'));
            const v = vids.find(v => v.dataset.src.endsWith(ext));
            if (!v) return {missing: true};
            const lazy = !v.getAttribute('src');  // far below the fold: not loaded yet
            v.scrollIntoView();
            const t1 = performance.now();
            const sleep = ms => new Promise(r => setTimeout(r, ms));
            while (!v.getAttribute('src') && performance.now() - t1 < 5000) await sleep(20);
            await v.play();
            const t0 = performance.now();
            while (v.currentTime < 0.25 && performance.now() - t0 < 5000) await sleep(50);
            v.pause();
            const error = v.error && v.error.code;
            return {lazy, time: v.currentTime, ready: v.readyState, error, width: v.videoWidth};
        }""",
        ext,
    )
    assert not result.get("missing"), f"no {ext} video tile"
    assert result["error"] is None, result
    assert result["ready"] >= 2 and result["width"] == 64, result
    assert result["time"] >= 0.25, result
    if ext == ".mp4":  # the first video tile sits below the tables and plots
        assert result["lazy"], "videos should get their src only when scrolled near"
