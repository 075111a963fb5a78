"""Cost vs time of candidate plans, Pareto front marked: in the terminal, as HTML (SVG) or PNG.

Both axes are logarithmic: plans span seconds to weeks and cents to thousands of dollars.
HTML needs nothing extra; PNG uses matplotlib when it is installed.
"""

from __future__ import annotations

import html
import math
from pathlib import Path

from ftplan.sizing.errors import FtplanError


def _points(plans: list[dict]) -> list[dict]:
    """Timed plans; a cost under a cent is drawn at one cent (log axes have no zero)."""
    return [dict(p, usd=max(p["usd"], 0.01)) for p in plans if p.get("hours")]


def _scale(lo: float, hi: float, size: int):
    lo, hi = math.log10(lo), math.log10(hi)
    span = (hi - lo) or 1.0
    return lambda v: round((math.log10(v) - lo) / span * (size - 1))


def terminal_plot(plans: list[dict], front: list[dict], width: int = 60, height: int = 12) -> list[str]:
    """Lines of a text scatter plot: '.' a plan, '*' on the Pareto front, 'L' the local box."""
    pts = _points(plans)
    if len(pts) < 2:
        return []
    xs, ys = [p["hours"] for p in pts], [p["usd"] for p in pts]
    fx, fy = _scale(min(xs), max(xs), width), _scale(min(ys), max(ys), height)
    grid = [[" "] * width for _ in range(height)]
    key = {(p["label"], p["gpu"], p["count"]) for p in front}
    for p in sorted(pts, key=lambda p: (p["label"], p["gpu"], p["count"]) in key):
        mark = "L" if p["kind"] == "local" else "*" if (p["label"], p["gpu"], p["count"]) in key else "."
        grid[height - 1 - fy(p["usd"])][fx(p["hours"])] = mark
    lines = [f"${max(ys):>9,.2f} |" + "".join(grid[0])]
    lines += ["           |" + "".join(row) for row in grid[1:-1]]
    lines.append(f"${min(ys):>9,.2f} |" + "".join(grid[-1]))
    lines.append("           +" + "-" * width)
    left, right = f"{min(xs):,.2f} h", f"{max(xs):,.2f} h (log scales)"
    lines.append("            " + left + " " * max(1, width - len(left) - len(right)) + right)
    return lines


def _svg(plans: list[dict], front: list[dict], title: str) -> str:
    pts = _points(plans)
    w, h, pad = 720, 440, 60
    if not pts:
        return f"<svg xmlns='http://www.w3.org/2000/svg' width='{w}' height='{h}'><text x='20' y='40'>no timed plans" \
               "</text></svg>"
    xs, ys = [p["hours"] for p in pts], [p["usd"] for p in pts]
    fx, fy = _scale(min(xs), max(xs) * 1.0001, w - 2 * pad), _scale(min(ys), max(ys) * 1.0001, h - 2 * pad)
    key = {(p["label"], p["gpu"], p["count"]) for p in front}
    out = [f"<svg xmlns='http://www.w3.org/2000/svg' width='{w}' height='{h}' font-family='sans-serif' font-size='11'>",
           f"<text x='{pad}' y='24' font-size='14'>{html.escape(title)}</text>",
           f"<line x1='{pad}' y1='{h - pad}' x2='{w - pad}' y2='{h - pad}' stroke='#444'/>",
           f"<line x1='{pad}' y1='{pad}' x2='{pad}' y2='{h - pad}' stroke='#444'/>",
           f"<text x='{w / 2 - 60}' y='{h - 20}'>hours (log) {min(xs):,.2f} .. {max(xs):,.2f}</text>",
           f"<text x='8' y='{pad - 10}'>USD (log) {min(ys):,.2f} .. {max(ys):,.2f}</text>"]
    front_pts = []
    for p in pts:
        x, y = pad + fx(p["hours"]), h - pad - fy(p["usd"])
        on = (p["label"], p["gpu"], p["count"]) in key
        color = "#d62728" if on else "#1f77b4" if p["kind"] != "local" else "#2ca02c"
        tip = html.escape(f"{p['label']} {p['count']} x {p['gpu']} ({p['adapter']}): ${p['usd']:,.2f}, "
                          f"{p['hours']:,.2f} h")
        out.append(f"<circle cx='{x}' cy='{y}' r='{5 if on else 3}' fill='{color}'><title>{tip}</title></circle>")
        if on:
            front_pts.append((x, y))
    if len(front_pts) > 1:
        path = " ".join(f"{x},{y}" for x, y in sorted(front_pts))
        out.append(f"<polyline points='{path}' fill='none' stroke='#d62728' stroke-dasharray='4 3'/>")
    out.append("</svg>")
    return "\n".join(out)


def write_plot(path: str | Path, plans: list[dict], front: list[dict], title: str) -> Path:
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in (".html", ".htm", ".svg"):
        svg = _svg(plans, front, title)
        text = svg if suffix == ".svg" else (f"<!doctype html><meta charset='utf-8'><title>{html.escape(title)}</title>"
                                             f"<body>{svg}<p>Red: the Pareto front (no plan is both cheaper and "
                                             "faster). Green: your local box.</p></body>")
        path.write_text(text, encoding="utf-8")
        return path
    if suffix != ".png":
        raise FtplanError(f"--plot {path}: write .html, .svg or .png.")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise FtplanError(f"--plot {path}: PNG needs matplotlib (pip install matplotlib); or write .html instead.") \
            from None
    pts = _points(plans)
    fig, ax = plt.subplots(figsize=(8, 5))
    ax.scatter([p["hours"] for p in pts], [p["usd"] for p in pts], s=12, label="plans")
    fr = sorted(_points(front), key=lambda p: p["hours"])
    ax.plot([p["hours"] for p in fr], [p["usd"] for p in fr], "r*--", label="Pareto front")
    ax.set(xscale="log", yscale="log", xlabel="hours", ylabel="USD", title=title)
    ax.legend()
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return path
