"""The gallery in a real headless Chromium: it loads from file://, filters work, videos play.

Needs Debian's ``chromium`` (``apt-get install -y chromium``) and the ``playwright`` Python
package; playwright's own browser download is not used (it cannot be fetched offline).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from .conftest import HOSTILE_VIDEOS, N_EPISODES, N_HOSTILE_VALID, PAYLOADS, T1, Built

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
def browser():
    """A headless Chromium for this module (skips when Chromium or playwright is missing)."""
    if not Path(CHROMIUM).exists() and shutil.which("chromium") is None:
        pytest.skip(f"{CHROMIUM} not found; install it with: apt-get update && apt-get install -y chromium")
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="playwright not installed; install it with: pip install playwright"
    )
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(
            executable_path=CHROMIUM if Path(CHROMIUM).exists() else shutil.which("chromium"), args=ARGS
        )
        yield b
        b.close()


def _open(browser, path: Path):
    """A new page on ``path`` that records page errors and dialogs (dismissing the dialogs)."""
    pg = browser.new_page()
    pg.errors = []  # type: ignore[attr-defined]
    pg.dialogs = []  # type: ignore[attr-defined]
    pg.on("pageerror", lambda e: pg.errors.append(str(e)))  # type: ignore[attr-defined]
    pg.on("dialog", lambda d: (pg.dialogs.append(d.message), d.dismiss()))  # type: ignore[attr-defined]
    pg.goto(path.as_uri())
    return pg


@pytest.fixture(scope="module")
def page(browser, report: Built):
    """A Chromium page with the report's index.html loaded; collects page errors."""
    pg = _open(browser, report.out / "index.html")
    yield pg
    pg.close()


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
    novideo = page.locator(".novideo").all_text_contents()
    assert sum(t.startswith("video file missing:") and t.endswith("ep001_success.mp4") for t in novideo) == 1
    assert novideo.count("no video recorded") == N_EPISODES - 4
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


def _exercise(pg) -> None:
    """Give every payload its chance: show, hover and filter every tile, let media load."""
    for tile in pg.locator("#tiles .tile").all():
        tile.scroll_into_view_if_needed()
        tile.hover()
    for name in ("policy", "task", "perturbation"):
        sel = f'#filters select[data-filter="{name}"]'
        for value in pg.eval_on_selector_all(f"{sel} option", "os => os.map(o => o.value)"):
            pg.select_option(sel, value)
    pg.click("#reset")
    pg.wait_for_timeout(500)  # image error and media events are asynchronous


def test_hostile_payloads_do_not_run(browser, hostile: Built, tmp_path: Path) -> None:
    # Control: the same payloads as raw markup from a file:// page do run and are detected.
    control = tmp_path / "control.html"
    control.write_text("<!doctype html><body>" + "".join(PAYLOADS) + "</body>")
    pg = _open(browser, control)
    pg.wait_for_timeout(500)
    assert pg.evaluate("window.__pwned") == 1 and pg.dialogs, "the detection itself does not work"
    pg.close()

    pg = _open(browser, hostile.out / "index.html")
    _exercise(pg)
    assert pg.evaluate("typeof window.__pwned") == "undefined"
    assert pg.dialogs == [] and pg.errors == []
    # The valid records render, each payload as the literal text it is.
    assert pg.locator("#tiles .tile").count() == N_HOSTILE_VALID
    assert sorted(pg.locator("#tiles .instr").all_text_contents()) == sorted(PAYLOADS)
    assert sorted(pg.locator("#tiles figcaption b").all_text_contents()) == sorted(PAYLOADS)
    injected = "img:not(.plots img), svg, iframe, [onerror], [onload], [onmouseover], [srcdoc]"
    assert pg.locator(injected).count() == 0
    assert pg.locator("script").count() == 2  # the JSON block and the page's own script
    # Videos point at files next to the report, including the one named "javascript:...".
    srcs = pg.eval_on_selector_all("#tiles video", "vs => vs.map(v => v.src)")
    base = hostile.out.as_uri() + "/"
    assert sorted(srcs) == sorted(
        base + p
        for p in (
            "javascript%3Awindow.__pwned%3D1",
            "videos/%3Cimg%20src%3Dx%20onerror%3Dwindow.__pwned%3D1%3E.mp4",
        )
    )
    missing = pg.locator(".novideo").all_text_contents()
    assert any(t == "video file missing:" + HOSTILE_VIDEOS[2] for t in missing), missing
    pg.close()
