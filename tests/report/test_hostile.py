"""A run directory is untrusted input: bad records are warnings, payloads stay data.

The hostile run (see ``conftest.build_hostile_run``) has script payloads in every string field
of its valid records and, as strings, in numeric fields of records that must be skipped.
"""

from __future__ import annotations

import html
import re
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote

import pytest

from vla_gym.report.load import RECORD_SCHEMA, read_episodes
from vla_gym.results import EpisodeRecord

from .conftest import (
    HOSTILE_BAD_FIELDS,
    HOSTILE_RAW_LINES,
    HOSTILE_VIDEOS,
    N_HOSTILE_VALID,
    PAYLOADS,
    STRING_FIELDS,
    Built,
    build_hostile_run,
)
from .test_gallery import gallery_data, split_page

# Every tag and attribute the page itself writes; anything else came from data.
PAGE_TAGS = {
    "html", "head", "meta", "title", "style", "body", "h1", "h2", "p", "ul", "li", "table", "tr",
    "th", "td", "div", "label", "select", "button", "span", "img", "script", "noscript",
}  # fmt: skip
PAGE_ATTRS = {"lang", "charset", "name", "content", "id", "class", "src", "alt", "data-filter", "type",
              "aria-live"}  # fmt: skip


def test_schema_covers_every_record_field() -> None:
    assert set(RECORD_SCHEMA) == set(EpisodeRecord.__dataclass_fields__)


def test_bad_records_are_reported_with_file_and_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = build_hostile_run(tmp_path / "run") / "episodes.jsonl"
    records = read_episodes(path)
    err = capsys.readouterr().err
    assert len(records) == N_HOSTILE_VALID
    k = STRING_FIELDS.index("instruction")
    expected = [PAYLOADS[(i + k) % len(PAYLOADS)] for i in range(N_HOSTILE_VALID)]
    assert [r.instruction for r in records] == expected
    for k, (name, _) in enumerate(HOSTILE_BAD_FIELDS):
        where = f"{re.escape(str(path))}:{N_HOSTILE_VALID + 1 + k}"
        assert re.search(rf"^warning: {where}: record skipped: field '{name}'", err, re.M), (name, err)
    first_raw = N_HOSTILE_VALID + len(HOSTILE_BAD_FIELDS) + 1
    assert f"{path}:{first_raw}: record skipped: not JSON" in err
    assert f"{path}:{first_raw + 1}: record skipped: expected a JSON object, got array" in err
    assert "field 'success' must be boolean, got string 'false'" in err
    assert "field 'steps' must be integer, got string 'forty'" in err
    assert "field 'steps' must be integer, got boolean True" in err
    assert "\x1b" not in err  # a terminal escape in a value is shown escaped, not sent to the terminal
    assert len(err.splitlines()) == len(HOSTILE_BAD_FIELDS) + len(HOSTILE_RAW_LINES)


def test_types_limits_and_torn_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    import json
    from dataclasses import asdict

    base = asdict(
        EpisodeRecord(suite="s", task="t", task_index=0, init_state_id=None, episode_index=0, seed=0,
                      instruction="i", success=True, steps=1, sum_reward=1, wall_s=0.5)
    )  # fmt: skip
    lines = [
        {**base, "sum_reward": 1},  # an int where a float is expected is fine (and becomes a float)
        {**base, "error": "E" * 100_000},  # kept: a crash counts; its message is truncated
        {**base, "future_field": 1},  # a newer writer's field: ignored
        {**base, "instruction": "x" * 5000},
        {**base, "seed": 2**70},
        {k: v for k, v in base.items() if k != "steps"},
    ]
    path = tmp_path / "episodes.jsonl"
    path.write_text("".join(json.dumps(x) + "\n" for x in lines) + '{"suite": "s", "ta')
    recs = read_episodes(path)
    err = capsys.readouterr().err
    assert len(recs) == 3 and isinstance(recs[0].sum_reward, float)
    assert recs[1].error is not None and len(recs[1].error) < 9000 and recs[1].error.endswith("(truncated)")
    assert f"{path}:4: record skipped: field 'instruction' is longer than 4096" in err
    assert f"{path}:5: record skipped: field 'seed' is out of range" in err
    assert f"{path}:6: record skipped: missing field(s): steps" in err
    assert f"{path}:7: incomplete last line ignored" in err
    assert "ignored unknown field(s) 'future_field'" in err


def test_cli_and_merge_warn_instead_of_traceback(hostile: Built) -> None:
    assert "Traceback" not in hostile.stderr
    where = f"{hostile.root / 'episodes.jsonl'}:{N_HOSTILE_VALID + 1}"
    assert f"{where}: record skipped: field 'seed'" in hostile.stderr
    proc = subprocess.run(
        [sys.executable, "-m", "vla_gym.merge", str(hostile.root)],
        check=False,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "record skipped: field 'success' must be boolean" in proc.stderr  # the same loader as the report


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))


def test_no_payload_markup_outside_the_json_block(hostile: Built) -> None:
    text = (hostile.out / "index.html").read_text()
    page, block = split_page(text)
    assert "<" not in block and ">" not in block and "\u2028" not in block  # nothing can end the block
    p = _Tags()
    p.feed(page)
    assert {tag for tag, _ in p.tags} <= PAGE_TAGS
    assert {a for _, attrs in p.tags for a in attrs} <= PAGE_ATTRS  # no on* handler, no srcdoc
    scripts = [attrs for tag, attrs in p.tags if tag == "script"]
    assert scripts == [{}]  # the page's own script; the JSON block was cut out above
    for tag, attrs in p.tags:
        if tag == "img":  # only the report's own plots
            assert re.fullmatch(r"plots/[A-Za-z0-9_.%-]+\.png", attrs["src"] or ""), attrs
    for needle in ("<img src=x", "<svg", "<iframe", "<script>window", "<!--", "<b onmouseover"):
        assert needle not in text
    assert html.escape(PAYLOADS[0], quote=True) in page  # the tables show the names, escaped


def test_payloads_survive_as_text(hostile: Built) -> None:
    eps = gallery_data(hostile.out)["episodes"]
    assert len(eps) == N_HOSTILE_VALID
    assert {e["instruction"] for e in eps} == set(PAYLOADS)
    assert {e["policy"] for e in eps} == set(PAYLOADS)
    assert {e["error"] for e in eps} == set(PAYLOADS)
    assert all(isinstance(e["seed"], int) and isinstance(e["steps"], int) for e in eps)
    assert len(STRING_FIELDS) <= len(PAYLOADS)


def test_video_links_are_relative_file_paths(hostile: Built) -> None:
    srcs = {e["video"]: e["src"] for e in gallery_data(hostile.out)["episodes"] if e["video"]}
    assert srcs == {
        HOSTILE_VIDEOS[0]: "videos/%3Cimg%20src%3Dx%20onerror%3Dwindow.__pwned%3D1%3E.mp4",
        HOSTILE_VIDEOS[1]: "javascript%3Awindow.__pwned%3D1",  # a file name here, not a URL scheme
        HOSTILE_VIDEOS[2]: None,  # missing file
    }
    for src in filter(None, srcs.values()):
        assert (hostile.out / unquote(src)).is_file()
