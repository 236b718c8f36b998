"""``index.html``: a static, self-contained page with the tables, plots and a video gallery.

It must open from ``file://`` with no server and no network: CSS and JS are inline, videos and
plots are referenced by paths relative to the report directory (nothing is copied, so a report
over a large sweep stays small; move the report together with its runs).

Everything on the page that came from a run directory is data, never markup: run directories
are shared, and a record once ran script here. The tables are HTML-escaped value by value; the
gallery's episodes travel as one JSON document in a ``<script type="application/json">`` block
(``<``, ``>``, ``&``, U+2028/9 escaped, so nothing in it can end the block) that the page's own
script parses with ``JSON.parse`` and turns into elements with ``textContent``, never
``innerHTML``. Video links are relative file paths, URL-encoded, so no value can become a
``javascript:`` or remote URL.
"""

from __future__ import annotations

import html
import json
import math
import os
from collections import Counter
from pathlib import Path
from typing import Any
from urllib.parse import quote

from vla_gym.report.load import Episode
from vla_gym.report.sim_real import SimReal, fmt_metric
from vla_gym.report.tables import Row, condition_label

VIDEO_TYPES = {".mp4": "video/mp4", ".webm": "video/webm"}

_CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#222;background:#fafafa}
h1{margin-top:0} table{border-collapse:collapse;margin:.5em 0 1.5em;background:#fff}
th,td{border:1px solid #ddd;padding:3px 8px;text-align:left} th{background:#f0f0f0}
td.num{text-align:right;font-variant-numeric:tabular-nums}
.plots img{max-width:100%;border:1px solid #ddd;background:#fff;margin:0 1em 1em 0;vertical-align:top}
#filters{position:sticky;top:0;background:#fafafa;padding:.6em 0;border-bottom:1px solid #ddd;z-index:1}
#filters label{margin-right:1em} #count{font-weight:600}
#tiles{display:grid;grid-template-columns:repeat(auto-fill,minmax(270px,1fr));gap:12px;margin-top:12px}
.tile{margin:0;background:#fff;border:1px solid #ddd;border-radius:6px;padding:6px}
.tile[hidden]{display:none}
.tile video{width:100%;aspect-ratio:1;background:#000;border-radius:4px}
.novideo{aspect-ratio:1;display:flex;align-items:center;justify-content:center;background:#eee;color:#777}
.badge{display:inline-block;padding:0 6px;border-radius:8px;color:#fff;font-size:12px;font-weight:600}
.badge.success{background:#2e7d32} .badge.failure{background:#c62828} .badge.error{background:#6a1b9a}
.instr{font-style:italic;margin:.3em 0} .small{color:#666;font-size:12px;overflow-wrap:anywhere}
"""

_JS = """
(function(){
  const data = JSON.parse(document.getElementById('gallery-data').textContent);
  const OUTCOMES = ['success', 'failure', 'error'];
  // Only what quote() produces: a relative path, so never a scheme (javascript:) or a host.
  const SAFE_SRC = /^[A-Za-z0-9_.~%-][A-Za-z0-9_.~%\\/-]*$/;
  function el(tag, cls, text){
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = String(text);
    return e;
  }
  function tile(ep){
    const fig = el('figure', 'tile');
    const outcome = OUTCOMES.includes(ep.outcome) ? ep.outcome : 'error';
    Object.assign(fig.dataset, {policy: ep.policy, task: ep.task, perturbation: ep.perturbation,
                                timing: ep.timing, outcome: outcome, video: ep.src ? 'yes' : 'no'});
    if (ep.src && SAFE_SRC.test(ep.src)){
      const v = el('video');
      v.dataset.src = ep.src;
      v.dataset.type = ep.mime;
      v.controls = v.muted = v.defaultMuted = v.loop = v.playsInline = true;
      v.preload = 'metadata';
      fig.append(v);
    } else if (ep.src){
      fig.append(el('div', 'novideo', 'video link refused: ' + ep.video));
    } else if (ep.video !== null){
      const d = el('div', 'novideo');
      d.append('video file missing:', el('br'), ep.video);
      fig.append(d);
    } else {
      fig.append(el('div', 'novideo', 'no video recorded'));
    }
    const cap = el('figcaption');
    const dot = ' \\u00b7 ';
    cap.append(el('span', 'badge ' + outcome, outcome), ' ', el('b', null, ep.policy),
               dot + ep.perturbation, el('div', 'small', ep.task), el('div', 'instr', ep.instruction),
               el('div', 'small', ['steps ' + ep.steps, 'episode ' + ep.episode, 'init ' + ep.init,
                                   'seed ' + ep.seed].join(dot)));
    if (ep.timing !== 'synchronous') cap.append(el('div', 'small', ep.timing));
    if (ep.metrics) cap.append(el('div', 'small', ep.metrics));
    if (ep.error !== null){
      const e = el('div', 'small', 'error: ' + ep.error.slice(0, 120));
      e.title = ep.error;
      cap.append(e);
    }
    fig.append(cap);
    return fig;
  }
  const box = document.getElementById('tiles');
  box.append(...data.episodes.map(tile));
  for (const s of document.querySelectorAll('#filters select[data-filter]')){
    const opts = data.filters[s.dataset.filter] || [];
    const total = opts.reduce((a, o) => a + o[1], 0);
    const all = el('option', null, 'all (' + total + ')');
    all.value = '';
    s.append(all, ...opts.map(([v, n]) => {
      const o = el('option', null, v + ' (' + n + ')');
      o.value = v;
      return o;
    }));
  }
  const tiles = Array.from(box.querySelectorAll('.tile'));
  const selects = Array.from(document.querySelectorAll('#filters select[data-filter]'));
  const count = document.getElementById('count');
  function apply(){
    const want = selects.map(s => [s.dataset.filter, s.value]);
    let shown = 0, ok = 0;
    for (const t of tiles){
      const keep = want.every(([k, v]) => v === '' || t.dataset[k] === v);
      t.hidden = !keep;
      if (keep){ shown++; if (t.dataset.outcome === 'success') ok++; }
      else { const v = t.querySelector('video'); if (v && !v.paused) v.pause(); }
    }
    const rate = shown ? (100 * ok / shown).toFixed(1) + '%' : 'n/a';
    count.textContent =
      shown + ' of ' + tiles.length + ' episodes shown, ' + ok + ' successes (' + rate + ')';
    count.dataset.shown = shown;
  }
  // Videos get their src only when scrolled near, so a sweep with thousands of tiles does not
  // open thousands of media players at once.
  const load = v => { if (!v.getAttribute('src')) v.src = v.dataset.src; };
  if ('IntersectionObserver' in window){
    const io = new IntersectionObserver(es => es.forEach(e => {
      if (e.isIntersecting){ load(e.target); io.unobserve(e.target); } }), {rootMargin: '300px'});
    document.querySelectorAll('#tiles video[data-src]').forEach(v => io.observe(v));
  } else { document.querySelectorAll('#tiles video[data-src]').forEach(load); }
  selects.forEach(s => s.addEventListener('change', apply));
  document.getElementById('reset').addEventListener('click', () => {
    selects.forEach(s => s.value = ''); apply();
  });
  apply();
})();
"""


def _e(text: object) -> str:
    """HTML-escape ``text`` for element content and quoted attributes."""
    return html.escape(str(text), quote=True)


def _num(value: float, spec: str = "") -> str:
    """A number formatted with ``spec`` and escaped: every value on the page passes an escape."""
    return _e(format(value, spec))


_JSON_IN_HTML = str.maketrans(
    {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"}
)


def json_for_script(obj: Any) -> str:
    """``obj`` as JSON that is safe inside ``<script type="application/json">``.

    With ``<`` escaped no ``</script>`` or ``<!--`` can appear, ``>``/``&`` for good measure,
    and U+2028/9 in case the text is ever evaluated as JS. ``JSON.parse`` undoes all of it.
    NaN is refused: ``JSON.parse`` would reject the whole document (records are finite).
    """
    return json.dumps(obj, ensure_ascii=False, allow_nan=False).translate(_JSON_IN_HTML)


def _summary_table(rows: list[Row]) -> str:
    """Suite-level success table as HTML."""
    head = (
        "<tr><th>policy</th><th>suite</th><th>perturbation</th><th>strength</th><th>success</th>"
        "<th>95% CI</th><th>n</th><th>errors</th></tr>"
    )
    body = "".join(
        f"<tr><td>{_e(r.policy)}</td><td>{_e(r.suite)}</td><td>{_e(r.perturbation)}</td>"
        f"<td class=num>{_num(r.strength, 'g')}</td><td class=num>{_num(100 * r.success_rate, '.1f')}%</td>"
        f"<td class=num>[{_num(100 * r.ci_low, '.1f')}, {_num(100 * r.ci_high, '.1f')}]</td>"
        f"<td class=num>{_num(r.episodes)}</td><td class=num>{_num(r.errors)}</td></tr>"
        for r in rows
    )
    return f"<table id=summary-table>{head}{body}</table>"


def _sim_real_html(sr: SimReal) -> str:
    """Sim↔real metric and pair tables as HTML."""
    cond = "unperturbed sim episodes" if sr.condition == "none" else "all sim episodes (variant aggregation)"
    metrics = "".join(
        f"<tr><td>{_e(a.scope)}</td><td class=num>{_num(a.n)}</td>"
        f"<td class=num>{_e(fmt_metric(a.pearson))}</td><td class=num>{_e(fmt_metric(a.mmrv))}</td>"
        f"<td>{_e(a.note)}</td></tr>"
        for a in [sr.pooled, *sr.per_task]
    )
    pairs = "".join(
        f"<tr><td>{_e(p.policy)}</td><td>{_e(p.task)}</td><td class=num>{_num(p.sim, '.3f')}</td>"
        f"<td class=num>{_num(p.real, '.3f')}</td><td class=num>{_num(p.episodes)}</td></tr>"
        for p in sr.pairs
    )
    out = (
        f"<p>Sim rates from {cond}. Pearson r: higher is better; MMRV (mean maximum rank violation): "
        "lower is better, 0 = sim ranks policies as the real robot does.</p>"
        "<table id=sim-real-metrics><tr><th>scope</th><th>n</th><th>Pearson r</th><th>MMRV</th>"
        "<th>note</th></tr>"
        f"{metrics}</table><table id=sim-real-pairs><tr><th>policy</th><th>task</th><th>sim</th><th>real</th>"
        f"<th>sim episodes</th></tr>{pairs}</table>"
    )
    if sr.unmatched_real:
        out += (
            "<p>Real rows without sim episodes (ignored): "
            + _e(", ".join(f"{p} / {t}" for p, t in sr.unmatched_real))
            + "</p>"
        )
    return out


def video_src(ep: Episode, out_dir: Path) -> tuple[str | None, bool]:
    """URL of the episode's video relative to ``out_dir`` and whether the file exists.

    The loader already refused absolute and ``..`` paths; ``quote`` then encodes ``:``, ``?``,
    ``#`` and the like, so the URL is always a relative file path, never a scheme.
    """
    if not ep.record.video:
        return None, False
    path = ep.run_dir / ep.record.video
    rel = Path(os.path.relpath(path, out_dir)).as_posix()
    return quote(rel, safe="/"), path.is_file()


def _tile_data(ep: Episode, out_dir: Path) -> dict[str, Any]:
    """What one gallery tile shows, as plain JSON values (the page renders them as text)."""
    r = ep.record
    src, exists = video_src(ep, out_dir)
    return {
        "policy": ep.policy,
        "task": ep.task_id,
        "perturbation": condition_label(r.perturbation, ep.strength),
        "outcome": ep.outcome,
        "src": src if exists else None,
        "mime": VIDEO_TYPES.get(Path(r.video or "").suffix.lower(), ""),
        "video": r.video,
        "instruction": r.instruction,
        "steps": r.steps,
        "episode": r.episode_index,
        "init": r.init_state_id,
        "seed": r.seed,
        "error": r.error,
        "timing": timing_label(ep),
        "metrics": metrics_line(r.metrics),
    }


TILE_METRICS = (("completion_time_s", "time", "{:.2f} s"), ("jerk_rms", "jerk", "{:.3g} m/s³"),
                ("action_smoothness", "Δa", "{:.3g}"), ("hold_steps", "holds", "{:.0f}"),
                ("stale_skipped", "stale", "{:.0f}"))
"""The trajectory metrics a gallery tile shows (all are in report.md and summary.csv)."""


def timing_label(ep: Episode) -> str:
    """``synchronous`` or ``<timing> <latency> ms``: the gallery's timing filter value."""
    return "synchronous" if ep.timing == "synchronous" else f"{ep.timing} {ep.latency_ms:g} ms"


def metrics_line(metrics: Any) -> str:
    """A few trajectory metrics of one episode as one line of text ("" when the record has none)."""
    if not isinstance(metrics, dict):
        return ""
    parts = []
    for key, name, spec in TILE_METRICS:
        v = metrics.get(key)
        if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
            parts.append(f"{name} {spec.format(v)}")
    return " · ".join(parts)


def _select(name: str, label: str) -> str:
    """An empty filter select; the page fills in its options from the gallery data."""
    return f'<label>{_e(label)} <select data-filter="{_e(name)}"></select></label>'


def render_index(
    *,
    episodes: list[Episode],
    out_dir: Path,
    suite_rows: list[Row],
    plots: list[Path],
    sim_real: SimReal | None,
    notes: list[str],
) -> str:
    """The whole page as a string."""
    eps = sorted(
        episodes,
        key=lambda e: (
            e.policy,
            e.record.suite,
            e.record.task_index,
            e.record.perturbation != "none",
            e.record.perturbation,
            e.strength,
            e.record.episode_index,
        ),
    )
    conds = sorted({(e.record.perturbation != "none", e.record.perturbation, e.strength) for e in eps})
    cond_order = [condition_label(p, s) for _, p, s in conds]
    # Filter options with their episode counts; the page builds the <option>s from these.
    options = {
        "policy": Counter(e.policy for e in eps),
        "task": Counter(e.task_id for e in eps),
        "perturbation": Counter({c: 0 for c in cond_order})
        + Counter(condition_label(e.record.perturbation, e.strength) for e in eps),
        "timing": Counter(timing_label(e) for e in eps),
        "outcome": Counter({k: 0 for k in ("success", "failure", "error")}) + Counter(e.outcome for e in eps),
        "video": Counter({"yes": 0, "no": 0})
        + Counter("yes" if video_src(e, out_dir)[1] else "no" for e in eps),
    }
    labels = {
        "policy": "Policy",
        "task": "Task",
        "perturbation": "Perturbation",
        "timing": "Timing",
        "outcome": "Outcome",
        "video": "Video",
    }
    filters = "".join(_select(name, labels[name]) for name in options)
    data = {
        "episodes": [_tile_data(e, out_dir) for e in eps],
        "filters": {name: list(counts.items()) for name, counts in options.items()},
    }
    imgs = "".join(
        f'<img src="{_e(quote(Path(os.path.relpath(p, out_dir)).as_posix()))}" alt="{_e(p.stem)}">'
        for p in plots
    )
    intro = (
        f"<h1>vla_gym report</h1><p>{len(eps)} episodes. Success rates with Wilson 95% intervals; "
        "crashed episodes count as failures.</p>"
    )
    sections = [intro]
    if notes:
        sections.append("<ul>" + "".join(f"<li>{_e(n)}</li>" for n in notes) + "</ul>")
    sections.append(f"<h2>Success by policy × suite × perturbation</h2>{_summary_table(suite_rows)}")
    if imgs:
        sections.append(f"<h2>Plots</h2><div class=plots>{imgs}</div>")
    if sim_real is not None:
        sections.append(f"<h2>Sim ↔ real</h2>{_sim_real_html(sim_real)}")
    sections.append(
        f"<h2>Episodes</h2><div id=filters>{filters}<button id=reset type=button>reset</button> "
        f'<span id=count aria-live="polite"></span></div>'
        "<noscript><p>The video gallery needs JavaScript.</p></noscript><div id=tiles></div>"
    )
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        "<meta name=viewport content='width=device-width,initial-scale=1'><title>vla_gym report</title>"
        f"<style>{_CSS}</style></head><body>{''.join(sections)}"
        f'<script type="application/json" id=gallery-data>{json_for_script(data)}</script>'
        f"<script>{_JS}</script></body></html>\n"
    )
