"""``index.html``: a static, self-contained page with the tables, plots and a video gallery.

It must open from ``file://`` with no server and no network: CSS and JS are inline, videos and
plots are referenced by paths relative to the report directory (nothing is copied, so a report
over a large sweep stays small; move the report together with its runs). Every string that
came from a file is HTML-escaped, since instructions and task names are data, not markup.
"""

from __future__ import annotations

import html
import os
from collections import Counter
from pathlib import Path
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
  const tiles = Array.from(document.querySelectorAll('#tiles .tile'));
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


def _summary_table(rows: list[Row]) -> str:
    """Suite-level success table as HTML."""
    head = (
        "<tr><th>policy</th><th>suite</th><th>perturbation</th><th>strength</th><th>success</th>"
        "<th>95% CI</th><th>n</th><th>errors</th></tr>"
    )
    body = "".join(
        f"<tr><td>{_e(r.policy)}</td><td>{_e(r.suite)}</td><td>{_e(r.perturbation)}</td>"
        f"<td class=num>{r.strength:g}</td><td class=num>{100 * r.success_rate:.1f}%</td>"
        f"<td class=num>[{100 * r.ci_low:.1f}, {100 * r.ci_high:.1f}]</td><td class=num>{r.episodes}</td>"
        f"<td class=num>{r.errors}</td></tr>"
        for r in rows
    )
    return f"<table id=summary-table>{head}{body}</table>"


def _sim_real_html(sr: SimReal) -> str:
    """Sim↔real metric and pair tables as HTML."""
    cond = "unperturbed sim episodes" if sr.condition == "none" else "all sim episodes (variant aggregation)"
    metrics = "".join(
        f"<tr><td>{_e(a.scope)}</td><td class=num>{a.n}</td><td class=num>{fmt_metric(a.pearson)}</td>"
        f"<td class=num>{fmt_metric(a.mmrv)}</td><td>{_e(a.note)}</td></tr>"
        for a in [sr.pooled, *sr.per_task]
    )
    pairs = "".join(
        f"<tr><td>{_e(p.policy)}</td><td>{_e(p.task)}</td><td class=num>{p.sim:.3f}</td>"
        f"<td class=num>{p.real:.3f}</td><td class=num>{p.episodes}</td></tr>"
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
    """URL of the episode's video relative to ``out_dir`` and whether the file exists."""
    if not ep.record.video:
        return None, False
    path = ep.run_dir / ep.record.video
    rel = Path(os.path.relpath(path, out_dir)).as_posix()
    return quote(rel), path.is_file()


def _tile(ep: Episode, out_dir: Path) -> str:
    """One episode: video (or a placeholder), outcome badge and what was run."""
    r = ep.record
    cond = condition_label(r.perturbation, ep.strength)
    src, exists = video_src(ep, out_dir)
    if src and exists:
        mime = VIDEO_TYPES.get(Path(r.video or "").suffix.lower(), "")
        media = (
            f'<video data-src="{_e(src)}" data-type="{_e(mime)}" controls muted loop playsinline '
            f'preload="metadata"></video>'
        )
    elif src:
        media = f"<div class=novideo>video file missing:<br>{_e(r.video)}</div>"
    else:
        media = "<div class=novideo>no video recorded</div>"
    err = (
        f'<div class=small title="{_e(r.error)}">error: {_e((r.error or "")[:120])}</div>' if r.error else ""
    )
    return (
        f'<figure class=tile data-policy="{_e(ep.policy)}" data-task="{_e(ep.task_id)}" '
        f'data-perturbation="{_e(cond)}" data-outcome="{ep.outcome}" '
        f'data-video="{"yes" if src and exists else "no"}">'
        f"{media}<figcaption>"
        f'<span class="badge {ep.outcome}">{ep.outcome}</span> <b>{_e(ep.policy)}</b> · {_e(cond)}'
        f"<div class=small>{_e(ep.task_id)}</div><div class=instr>{_e(r.instruction)}</div>"
        f"<div class=small>steps {r.steps} · episode {r.episode_index} · init {_e(r.init_state_id)} · "
        f"seed {r.seed}</div>{err}</figcaption></figure>"
    )


def _select(name: str, label: str, values: Counter) -> str:
    """A filter select whose options show how many episodes each value has."""
    opts = "".join(f'<option value="{_e(v)}">{_e(v)} ({n})</option>' for v, n in values.items())
    return (
        f'<label>{_e(label)} <select data-filter="{name}"><option value="">all ({sum(values.values())})'
        f"</option>{opts}</select></label>"
    )


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
    filters = "".join(
        [
            _select("policy", "Policy", Counter(e.policy for e in eps)),
            _select("task", "Task", Counter(e.task_id for e in eps)),
            _select(
                "perturbation",
                "Perturbation",
                Counter({c: 0 for c in cond_order})
                + Counter(condition_label(e.record.perturbation, e.strength) for e in eps),
            ),
            _select(
                "outcome",
                "Outcome",
                Counter({k: 0 for k in ("success", "failure", "error")}) + Counter(e.outcome for e in eps),
            ),
            _select(
                "video",
                "Video",
                Counter({"yes": 0, "no": 0})
                + Counter("yes" if video_src(e, out_dir)[1] else "no" for e in eps),
            ),
        ]
    )
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
    tiles = "".join(_tile(e, out_dir) for e in eps)
    sections.append(
        f"<h2>Episodes</h2><div id=filters>{filters}<button id=reset type=button>reset</button> "
        f'<span id=count aria-live="polite"></span></div><div id=tiles>{tiles}</div>'
    )
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        "<meta name=viewport content='width=device-width,initial-scale=1'><title>vla_gym report</title>"
        f"<style>{_CSS}</style></head><body>{''.join(sections)}<script>{_JS}</script></body></html>\n"
    )
