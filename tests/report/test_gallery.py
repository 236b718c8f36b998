"""Static checks of index.html: tiles, escaping, relative video paths, no external resources."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote

from .conftest import N_EPISODES, Built


class _Collect(HTMLParser):
    """Collects tiles, video sources and anything that would need the network."""

    def __init__(self) -> None:
        super().__init__()
        self.tiles: list[dict[str, str | None]] = []
        self.videos: list[str] = []
        self.external: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "figure" and "tile" in (a.get("class") or ""):
            self.tiles.append(a)
        if tag == "video":
            self.videos.append(a["data-src"] or "")
        for key in ("src", "href"):
            if re.match(r"^(https?:)?//", a.get(key) or ""):
                self.external.append(a[key] or "")


def _parse(out: Path) -> tuple[str, _Collect]:
    text = (out / "index.html").read_text()
    p = _Collect()
    p.feed(text)
    return text, p


def test_tiles_and_filters(report: Built) -> None:
    text, p = _parse(report.out)
    assert len(p.tiles) == N_EPISODES
    assert sum(t["data-policy"] == "alpha" for t in p.tiles) == 24
    assert sum(t["data-outcome"] == "success" for t in p.tiles) == 13
    assert sum(t["data-outcome"] == "error" for t in p.tiles) == 1
    assert {t["data-perturbation"] for t in p.tiles} == {"none", "camera@0.5", "camera@1"}
    assert sum(t["data-video"] == "yes" for t in p.tiles) == 3
    for name in ("policy", "task", "perturbation", "outcome", "video"):
        assert f'data-filter="{name}"' in text
    assert "<script" in text and "<style>" in text
    assert not p.external  # works offline: no CDN, no remote resource


def test_instruction_is_escaped(report: Built) -> None:
    text, _ = _parse(report.out)
    assert "<b>black</b>" not in text
    assert "pick up the &lt;b&gt;black&lt;/b&gt; bowl &amp; &quot;place&quot; it" in text


def test_video_paths_are_relative_and_resolve(report: Built) -> None:
    text, p = _parse(report.out)
    assert len(p.videos) == 3
    assert any(v.endswith(".webm") for v in p.videos) and any(v.endswith(".mp4") for v in p.videos)
    for v in p.videos:
        assert not v.startswith("/") and (report.out / unquote(v)).resolve().is_file(), v
    assert "video file missing" in text and "ep001_success.mp4" in text
    assert "no video recorded" in text


def test_sim_real_on_page(report: Built) -> None:
    text, _ = _parse(report.out)
    assert "id=sim-real-metrics" in text and "0.933" in text and "0.067" in text
