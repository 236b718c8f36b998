"""Static checks of index.html: gallery data, escaping, relative video paths, no external resources.

The gallery's tiles are built in the browser from the page's JSON block (see
``test_gallery_browser.py`` for the rendered page); here the block itself is checked.
"""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from .conftest import N_EPISODES, T1_INSTRUCTION, Built

DATA_OPEN = '<script type="application/json" id=gallery-data>'


class _Collect(HTMLParser):
    """Collects every start tag and anything that would need the network."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.external: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        self.tags.append((tag, a))
        for key in ("src", "href"):
            if re.match(r"^(https?:)?//", a.get(key) or ""):
                self.external.append(a[key] or "")


def split_page(text: str) -> tuple[str, str]:
    """The page without its JSON block, and the block's raw text."""
    start = text.index(DATA_OPEN) + len(DATA_OPEN)
    end = text.index("</script>", start)
    return text[: start - len(DATA_OPEN)] + text[end + len("</script>") :], text[start:end]


def gallery_data(out: Path) -> dict[str, Any]:
    """The JSON the page's script parses (``json.loads`` reads the ``\\u003c`` escapes as ``<``)."""
    return json.loads(split_page((out / "index.html").read_text())[1])


def _parse(out: Path) -> tuple[str, _Collect]:
    text = (out / "index.html").read_text()
    p = _Collect()
    p.feed(text)
    return text, p


def test_tiles_and_filters(report: Built) -> None:
    text, p = _parse(report.out)
    eps = gallery_data(report.out)["episodes"]
    assert len(eps) == N_EPISODES
    assert sum(e["policy"] == "alpha" for e in eps) == 24
    assert sum(e["outcome"] == "success" for e in eps) == 13
    assert sum(e["outcome"] == "error" for e in eps) == 1
    assert {e["perturbation"] for e in eps} == {"none", "camera@0.5", "camera@1"}
    assert sum(e["src"] is not None for e in eps) == 3
    filters = gallery_data(report.out)["filters"]
    assert dict(filters["outcome"]) == {"success": 13, "failure": 26, "error": 1}
    for name in ("policy", "task", "perturbation", "outcome", "video"):
        assert f'data-filter="{name}"' in text
        assert sum(n for _, n in filters[name]) == N_EPISODES
    assert "<script" in text and "<style>" in text
    assert not p.external  # works offline: no CDN, no remote resource


def test_instruction_is_data_not_markup(report: Built) -> None:
    text, p = _parse(report.out)
    assert "<b>black</b>" not in text and "b" not in {tag for tag, _ in p.tags}
    assert "\\u003cb\\u003eblack\\u003c/b\\u003e bowl \\u0026" in text
    assert {e["instruction"] for e in gallery_data(report.out)["episodes"]} >= {T1_INSTRUCTION}


def test_video_paths_are_relative_and_resolve(report: Built) -> None:
    eps = gallery_data(report.out)["episodes"]
    videos = [e["src"] for e in eps if e["src"]]
    assert len(videos) == 3
    assert any(v.endswith(".webm") for v in videos) and any(v.endswith(".mp4") for v in videos)
    for v in videos:
        assert not v.startswith("/") and (report.out / unquote(v)).resolve().is_file(), v
    missing = [e["video"] for e in eps if e["video"] and not e["src"]]
    assert len(missing) == 1 and missing[0].endswith("ep001_success.mp4")
    assert sum(e["video"] is None for e in eps) == N_EPISODES - 4


def test_sim_real_on_page(report: Built) -> None:
    text, _ = _parse(report.out)
    assert "id=sim-real-metrics" in text and "0.933" in text and "0.067" in text
