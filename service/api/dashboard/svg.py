"""Server-side SVG for the dashboard: lineage graph, training curve, heatmap, sparkline.

Drawn in Python so the page needs no chart library (nothing fetched from a CDN, no build step).
Every function returns markup that Jinja marks safe; text goes through `escape`.
"""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

from markupsafe import Markup


def _color(value: float, lo: float, hi: float) -> str:
    """Light yellow (low) to deep blue (high)."""
    t = 0.0 if hi <= lo else max(0.0, min(1.0, (value - lo) / (hi - lo)))
    a, b = (255, 247, 188), (37, 52, 148)
    r, g, bl = (round(a[i] + (b[i] - a[i]) * t) for i in range(3))
    return f"rgb({r},{g},{bl})"


def lineage(models: Sequence[dict]) -> Markup:
    """models: [{"name", "dim", "parent"}] oldest first -> a left-to-right tree of versions."""
    depth: dict[str, int] = {}
    for m in models:
        depth[m["name"]] = depth.get(m["parent"], -1) + 1 if m["parent"] else 0
    rows: dict[int, int] = {}
    pos: dict[str, tuple[int, int]] = {}
    for m in models:
        d = depth[m["name"]]
        pos[m["name"]] = (d, rows.get(d, 0))
        rows[d] = rows.get(d, 0) + 1
    w, h, gx, gy = 150, 44, 60, 18
    width = (max(depth.values(), default=0) + 1) * (w + gx)
    height = max(rows.values(), default=1) * (h + gy)
    parts = [f'<svg class="lineage" width="{width}" height="{height}" role="img" aria-label="model lineage">',
             '<defs><marker id="arrow" markerWidth="8" markerHeight="8" refX="7" refY="4" orient="auto">'
             '<path d="M0,0 L8,4 L0,8 z" fill="#555"/></marker></defs>']
    for m in models:
        if m["parent"] and m["parent"] in pos:
            (pc, pr), (c, r) = pos[m["parent"]], pos[m["name"]]
            x1, y1 = pc * (w + gx) + w, pr * (h + gy) + h / 2
            x2, y2 = c * (w + gx), r * (h + gy) + h / 2
            parts.append(f'<line x1="{x1}" y1="{y1}" x2="{x2 - 2}" y2="{y2}" stroke="#555" marker-end="url(#arrow)"/>')
    for m in models:
        c, r = pos[m["name"]]
        x, y = c * (w + gx), r * (h + gy)
        parts.append(f'<g class="node"><rect x="{x}" y="{y}" width="{w}" height="{h}" rx="6" fill="#eef3fb" '
                     f'stroke="#34508f"/><text x="{x + 8}" y="{y + 18}" font-weight="bold">{escape(m["name"])}</text>'
                     f'<text x="{x + 8}" y="{y + 35}" font-size="11">{m["dim"]}-d</text></g>')
    parts.append("</svg>")
    return Markup("".join(parts))


def curve(points: Sequence[dict], width: int = 560, height: int = 220) -> Markup:
    """Training curve: validation objective (and train loss when present) against step."""
    pts = [p for p in points if p.get("val_loss") is not None]
    if len(pts) < 2:
        return Markup('<p class="muted">no training curve (closed-form method)</p>')
    pad = 40
    steps = [p["step"] for p in pts]
    series = {"validation": [p["val_loss"] for p in pts]}
    if all(p.get("train_loss") is not None for p in pts):
        series["train loss"] = [p["train_loss"] for p in pts]
    lo = min(min(v) for v in series.values())
    hi = max(max(v) for v in series.values())
    hi = hi if hi > lo else lo + 1e-6

    def xy(step: float, v: float) -> str:
        x = pad + (step - steps[0]) / max(steps[-1] - steps[0], 1) * (width - 2 * pad)
        y = height - pad - (v - lo) / (hi - lo) * (height - 2 * pad)
        return f"{x:.1f},{y:.1f}"

    colors = {"validation": "#c0392b", "train loss": "#34508f"}
    parts = [f'<svg class="curve" width="{width}" height="{height}" role="img" aria-label="training curve">',
             f'<line x1="{pad}" y1="{height - pad}" x2="{width - pad}" y2="{height - pad}" stroke="#999"/>',
             f'<line x1="{pad}" y1="{pad}" x2="{pad}" y2="{height - pad}" stroke="#999"/>',
             f'<text x="{width / 2}" y="{height - 8}" font-size="11" text-anchor="middle">step '
             f'{steps[0]}–{steps[-1]}</text>',
             f'<text x="4" y="{pad - 8}" font-size="11">{hi:.4g}</text>',
             f'<text x="4" y="{height - pad}" font-size="11">{lo:.4g}</text>']
    for i, (name, values) in enumerate(series.items()):
        path = " ".join(xy(s, v) for s, v in zip(steps, values, strict=True))
        parts.append(f'<polyline fill="none" stroke="{colors[name]}" stroke-width="2" points="{path}"/>')
        parts.append(f'<text x="{width - pad - 110}" y="{pad + 14 * i}" font-size="11" fill="{colors[name]}">'
                     f'{escape(name)}</text>')
    parts.append("</svg>")
    return Markup("".join(parts))


def migration(curves: dict, markers: Sequence[tuple[str, float]], metric: str = "mAP@R", width: int = 560,
              height: int = 240) -> Markup:
    """Quality (`metric`: "top1" or "mAP@R") of new- and old-model queries against the share of the
    gallery re-embedded, replayed on held-out pairs (adapters/migration.py); a marker per collection
    at its share now. Two charts, because the backfill order moves top-1 more than mAP@R."""
    series = {name: curves.get(name) or [] for name in ("random", "suggested")}
    if not any(len(v) >= 2 for v in series.values()):
        return Markup('<p class="muted">no migration curve (transformation trained before it was recorded)</p>')
    base = next(v for v in series.values() if len(v) >= 2)
    lines = {
        "new-model queries, random order": ([p[f"new_{metric}"] for p in series["random"]], "#34508f",
                                            series["random"]),
        "new-model queries, suggested order": ([p[f"new_{metric}"] for p in series["suggested"]], "#27ae60",
                                               series["suggested"]),
        "old-model queries (kept old vectors)": ([p[f"old_{metric}"] for p in base], "#c0392b", base),
    }
    values = [v for vals, _, _ in lines.values() for v in vals]
    lo, hi = min(values), max(values)
    lo, hi = lo - 0.05 * (hi - lo + 1e-6), hi + 0.05 * (hi - lo + 1e-6)
    pad = 44

    def x(share: float) -> float:
        return pad + share * (width - 2 * pad)

    def y(v: float) -> float:
        return height - pad - (v - lo) / (hi - lo) * (height - 2 * pad)

    label = "top-1" if metric == "top1" else metric
    parts = [f'<svg class="migration" data-metric="{escape(metric)}" width="{width}" height="{height}" role="img" '
             f'aria-label="migration curve, {escape(label)}">',
             f'<line x1="{pad}" y1="{height - pad}" x2="{width - pad}" y2="{height - pad}" stroke="#999"/>',
             f'<line x1="{pad}" y1="{pad}" x2="{pad}" y2="{height - pad}" stroke="#999"/>',
             f'<text x="{width / 2}" y="{height - 8}" font-size="11" text-anchor="middle">share of the gallery '
             're-embedded (0 – 100 %)</text>',
             f'<text x="4" y="{pad - 8}" font-size="11">{escape(label)} {hi:.3f}</text>',
             f'<text x="4" y="{height - pad + 14}" font-size="11">{lo:.3f}</text>']
    for i, (name, (vals, color, pts)) in enumerate(lines.items()):
        if len(vals) < 2:
            continue
        path = " ".join(f"{x(p['share']):.1f},{y(v):.1f}" for p, v in zip(pts, vals, strict=True))
        parts.append(f'<polyline class="series" data-series="{escape(name)}" fill="none" stroke="{color}" '
                     f'stroke-width="2" points="{path}"/>')
        parts.append(f'<text x="{pad + 8}" y="{pad + 14 * i}" font-size="11" fill="{color}">{escape(name)}</text>')
    for name, share in markers:
        parts.append(f'<g class="now" data-collection="{escape(name)}"><line x1="{x(share):.1f}" y1="{pad}" '
                     f'x2="{x(share):.1f}" y2="{height - pad}" stroke="#888" stroke-dasharray="4 3"/>'
                     f'<text x="{x(share) + 3:.1f}" y="{height - pad - 4}" font-size="10">{escape(name)} '
                     f'{share:.0%}</text></g>')
    parts.append("</svg>")
    return Markup("".join(parts))


def heatmap(names: Sequence[str], matrix: Sequence[Sequence[float | None]]) -> Markup:
    """Query model (rows) x gallery model (columns), value in each cell."""
    cell, left, top = 84, 130, 70
    values = [v for row in matrix for v in row if v is not None]
    lo, hi = (min(values), max(values)) if values else (0.0, 1.0)
    n = len(names)
    parts = [f'<svg class="heatmap" width="{left + n * cell + 10}" height="{top + n * cell + 10}" role="img" '
             f'aria-label="compatibility matrix">',
             f'<text x="{left + n * cell / 2}" y="14" text-anchor="middle" font-size="12">gallery model</text>',
             f'<text x="12" y="{top + n * cell / 2}" font-size="12" transform="rotate(-90 12 {top + n * cell / 2})" '
             f'text-anchor="middle">query model</text>']
    for j, name in enumerate(names):
        parts.append(f'<text x="{left + j * cell + cell / 2}" y="{top - 10}" text-anchor="middle" font-size="11">'
                     f'{escape(name)}</text>')
    for i, name in enumerate(names):
        parts.append(f'<text x="{left - 8}" y="{top + i * cell + cell / 2 + 4}" text-anchor="end" font-size="11">'
                     f'{escape(name)}</text>')
        for j, v in enumerate(matrix[i]):
            x, y = left + j * cell, top + i * cell
            fill = "#ddd" if v is None else _color(v, lo, hi)
            ink = "#000" if v is None or (v - lo) / max(hi - lo, 1e-9) < 0.55 else "#fff"
            label = "—" if v is None else f"{v:.3f}"
            parts.append(f'<g class="cell" data-q="{escape(name)}" data-g="{escape(names[j])}">'
                         f'<rect x="{x}" y="{y}" width="{cell - 2}" height="{cell - 2}" fill="{fill}"/>'
                         f'<text x="{x + cell / 2 - 1}" y="{y + cell / 2 + 4}" text-anchor="middle" fill="{ink}" '
                         f'font-size="13">{label}</text></g>')
    parts.append("</svg>")
    return Markup("".join(parts))


def sparkline(series: Sequence[dict], key: str, width: int = 560, height: int = 120, color: str = "#34508f",
              label: str = "") -> Markup:
    """One line of a per-bucket series (e.g. p99 latency), gaps where a bucket had no requests."""
    vals = [s[key] for s in series]
    known = [v for v in vals if v is not None]
    if not known:
        return Markup('<p class="muted">no requests in this window</p>')
    hi = max(known) or 1.0
    pad = 24
    step = (width - 2 * pad) / max(len(vals) - 1, 1)
    segments, current = [], []
    for i, v in enumerate(vals):
        if v is None:
            if current:
                segments.append(current)
            current = []
            continue
        current.append(f"{pad + i * step:.1f},{height - pad - v / hi * (height - 2 * pad):.1f}")
    if current:
        segments.append(current)
    lines = "".join(f'<polyline fill="none" stroke="{color}" stroke-width="2" points="{" ".join(s)}"/>'
                    for s in segments)
    dots = "".join(f'<circle cx="{p.split(",")[0]}" cy="{p.split(",")[1]}" r="3" fill="{color}"/>'
                   for s in segments for p in s)  # single-bucket segments are visible too
    return Markup(f'<svg class="spark" width="{width}" height="{height}" role="img" aria-label="{escape(key)}">'
                  f'<line x1="{pad}" y1="{height - pad}" x2="{width - pad}" y2="{height - pad}" stroke="#bbb"/>'
                  f'<text x="2" y="{pad - 6}" font-size="11">{escape(label)} max {hi:.2f} ms</text>'
                  f'<text x="{pad}" y="{height - 6}" font-size="10">older</text>'
                  f'<text x="{width - pad}" y="{height - 6}" font-size="10" text-anchor="end">now</text>'
                  f'{lines}{dots}</svg>')
