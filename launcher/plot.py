"""Pictures a person reads without the terminal beside them: cost vs time of plans, memory by component.

Cost vs time: both axes logarithmic (plans span seconds to weeks and cents to thousands of dollars)
with decade ticks and units; every point a plan, its provider and GPU x count on the Pareto front
(no plan is both cheaper and faster) and the local box written beside it, all of them in the
point's tooltip. A plan that costs nothing (a managed API on a tiny job, a local box with no
electricity price) sits on the axis floor, labelled "$0.00", never at an invented cent.

Memory (`ftplan estimate --model ... --plot`): one stacked bar of the peak per GPU by component
against the card's capacity as nvidia-smi reports it.

Loss (`loss.svg`, written into a job's folder when it ends): training loss by step on linear axes,
with the first, lowest and last values written on the chart.

HTML and SVG need nothing extra; PNG uses matplotlib (`pip install 'ftplan[plot]'`).
"""

from __future__ import annotations

import html
import math
from pathlib import Path

from ftplan.sizing.errors import FtplanError

PLAN = "#1f77b4"
FRONT = "#d62728"
LOCAL = "#2ca02c"
LEGEND = (("a plan", PLAN), ("Pareto front: no plan is cheaper and faster", FRONT), ("your local box", LOCAL))
GIB = 2**30


def _key(p: dict) -> tuple:
    return p["provider"], p["gpu"], p["count"]


def _name(p: dict) -> str:
    return p["label"] if p.get("gpu") is None else f"{p['provider']} {p['count']} x {p['gpu']}"


def _points(plans: list[dict]) -> list[dict]:
    return [p for p in plans if p.get("hours")]


def _floor(values: list[float]) -> float:
    """The cost axis's lowest decade: below the cheapest paid plan (a free one is drawn on it)."""
    paid = [v for v in values if v >= 0.005]
    return 10 ** math.floor(math.log10(min(paid) if paid else 0.01))


def _decades(lo: float, hi: float) -> list[float]:
    return [10.0 ** k for k in range(math.floor(math.log10(lo)), math.ceil(math.log10(hi)) + 1)]


class _Axis:
    """Logarithmic axis over whole decades, mapped onto [0, size] pixels."""

    def __init__(self, lo: float, hi: float, size: float):
        self.ticks = _decades(lo, hi)
        if len(self.ticks) < 2:
            self.ticks.append(self.ticks[-1] * 10)
        self.lo, self.hi, self.size = math.log10(self.ticks[0]), math.log10(self.ticks[-1]), size

    def __call__(self, v: float) -> float:
        v = max(v, 10 ** self.lo)
        return round((math.log10(v) - self.lo) / (self.hi - self.lo) * self.size, 1)


def money(v: float) -> str:
    """Dollars with cents below $100 (a $1.23 job is not "$1"), whole dollars above; under half a cent is "$0.00"."""
    return f"${v:,.0f}" if v >= 100 else f"${v:,.2f}"


def _hours(v: float) -> str:
    if v < 1:
        return f"{v * 60:,.0f} min" if v * 60 >= 1 else f"{v * 3600:,.0f} s"
    return f"{v:,.0f} h" if v >= 10 else f"{v:,.1f} h"


def terminal_plot(plans: list[dict], front: list[dict], width: int = 60, height: int = 12) -> list[str]:
    """Lines of a text scatter plot: '.' a plan, '*' on the Pareto front, 'L' the local box."""
    pts = _points(plans)
    if len(pts) < 2:
        return []
    xs, ys = [p["hours"] for p in pts], [max(p["usd"], _floor([q["usd"] for q in pts])) for p in pts]
    fx, fy = _Axis(min(xs), max(xs), width - 1), _Axis(min(ys), max(ys), height - 1)
    grid = [[" "] * width for _ in range(height)]
    on_front = {_key(p) for p in front}
    for p, y in sorted(zip(pts, ys, strict=True), key=lambda t: _key(t[0]) in on_front):
        mark = "L" if p["kind"] == "local" else "*" if _key(p) in on_front else "."
        grid[height - 1 - round(fy(y))][round(fx(p["hours"]))] = mark
    top, bottom = 10 ** fy.hi, 10 ** fy.lo
    lines = [f"{money(top):>10} |" + "".join(grid[0])]
    lines += ["           |" + "".join(row) for row in grid[1:-1]]
    lines.append(f"{money(bottom):>10} |" + "".join(grid[-1]))
    lines.append("           +" + "-" * width)
    left, right = _hours(10 ** fx.lo), _hours(10 ** fx.hi) + " (log scales)"
    lines.append("            " + left + " " * max(1, width - len(left) - len(right)) + right)
    return lines


def plans_svg(plans: list[dict], front: list[dict], title: str) -> str:
    pts = _points(plans)
    w, h, left, right, top, bottom = 860, 520, 80, 40, 50, 70
    out = [f"<svg xmlns='http://www.w3.org/2000/svg' width='{w}' height='{h}' font-family='sans-serif' "
           f"font-size='11'>", f"<text x='{left}' y='24' font-size='15'>{html.escape(title)}</text>"]
    if not pts:
        out += [f"<text x='{left}' y='{h / 2}'>no plan with a time to draw</text>", "</svg>"]
        return "\n".join(out)
    floor = _floor([p["usd"] for p in pts])
    fx = _Axis(min(p["hours"] for p in pts), max(p["hours"] for p in pts), w - left - right)
    fy = _Axis(floor, max(max(p["usd"] for p in pts), floor * 10), h - top - bottom)
    x0, y0 = left, h - bottom
    out.append(f"<g class='axes' stroke='#444'><line x1='{x0}' y1='{y0}' x2='{w - right}' y2='{y0}'/>"
               f"<line x1='{x0}' y1='{top}' x2='{x0}' y2='{y0}'/></g>")
    for t in fx.ticks:
        x = x0 + fx(t)
        out.append(f"<g class='xtick'><line x1='{x}' y1='{y0}' x2='{x}' y2='{y0 + 5}' stroke='#444'/>"
                   f"<line x1='{x}' y1='{top}' x2='{x}' y2='{y0}' stroke='#ddd'/>"
                   f"<text x='{x}' y='{y0 + 18}' text-anchor='middle'>{_hours(t)}</text></g>")
    for t in fy.ticks:
        y = y0 - fy(t)
        out.append(f"<g class='ytick'><line x1='{x0 - 5}' y1='{y}' x2='{x0}' y2='{y}' stroke='#444'/>"
                   f"<line x1='{x0}' y1='{y}' x2='{w - right}' y2='{y}' stroke='#ddd'/>"
                   f"<text x='{x0 - 8}' y='{y + 4}' text-anchor='end'>{money(t)}</text></g>")
    out.append(f"<text x='{(x0 + w - right) / 2}' y='{h - 32}' text-anchor='middle'>wall-clock time, start-up "
               "included (hours, log scale)</text>")
    out.append(f"<text transform='translate(16 {(top + y0) / 2}) rotate(-90)' text-anchor='middle'>cost of the job "
               "(USD, log scale)</text>")
    on_front = {_key(p) for p in front}
    front_xy = []
    for p in sorted(pts, key=lambda p: (_key(p) in on_front, p["kind"] == "local")):
        local, on = p["kind"] == "local", _key(p) in on_front
        x, y = x0 + fx(p["hours"]), y0 - fy(max(p["usd"], floor))
        cost = money(p["usd"])
        tip = html.escape(f"{_name(p)} ({p['adapter']}): {cost}, {_hours(p['hours'])}")
        color = LOCAL if local else FRONT if on else PLAN
        ring = f" stroke='{FRONT}' stroke-width='2'" if local and on else ""
        out.append(f"<circle class='{'local' if local else 'front' if on else 'plan'}' cx='{x}' cy='{y}' "
                   f"r='{5 if on or local else 3}' fill='{color}'{ring}><title>{tip}</title></circle>")
        if on or local:
            out.append(f"<text class='label' x='{x + 7}' y='{y - 6}'>{html.escape(f'{_name(p)}, {cost}')}</text>")
        if on:
            front_xy.append((x, y))
    if len(front_xy) > 1:
        path = " ".join(f"{x},{y}" for x, y in sorted(front_xy))
        out.append(f"<polyline points='{path}' fill='none' stroke='{FRONT}' stroke-dasharray='4 3'/>")
    lx, ly = w - right - 290, top + 8
    out.append(f"<g class='legend'><rect x='{lx - 8}' y='{ly - 12}' width='296' height='{len(LEGEND) * 16 + 8}' "
               "fill='white' stroke='#999'/>")
    for i, (text, color) in enumerate(LEGEND):
        out.append(f"<circle cx='{lx}' cy='{ly + i * 16}' r='4' fill='{color}'/>"
                   f"<text x='{lx + 10}' y='{ly + i * 16 + 4}'>{html.escape(text)}</text>")
    out.append("</g></svg>")
    return "\n".join(out)


def memory_svg(est: dict) -> str:
    """One bar: the peak per GPU by component, and the card's capacity (nvidia-smi) as a line."""
    from .render import LABELS

    comps = [(k, v) for k, v in est["memory"]["components"].items() if v > 0]
    cap = est["hardware"]["memory_bytes"]
    total = sum(v for _, v in comps)
    w, h, left, right = 860, 260 + 16 * len(comps), 40, 40
    scale = (w - left - right) / max(cap, total) / 1.05
    colors = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
              "#17becf"]
    title = (f"{est['model']['id']}: peak memory per GPU on {est['hardware']['count']} x {est['hardware']['gpu']} "
             f"({est['verdict']})")
    out = [f"<svg xmlns='http://www.w3.org/2000/svg' width='{w}' height='{h}' font-family='sans-serif' "
           f"font-size='11'>", f"<text x='{left}' y='24' font-size='15'>{html.escape(title)}</text>"]
    x, y = left, 50
    for i, (k, v) in enumerate(comps):
        width = v * scale
        out.append(f"<rect class='component' x='{x:.1f}' y='{y}' width='{width:.1f}' height='40' "
                   f"fill='{colors[i % len(colors)]}'><title>{html.escape(LABELS.get(k, k))}: "
                   f"{v / GIB:,.2f} GiB</title></rect>")
        x += width
    cx = left + cap * scale
    out.append(f"<line class='capacity' x1='{cx:.1f}' y1='40' x2='{cx:.1f}' y2='100' stroke='black' "
               "stroke-width='2' stroke-dasharray='5 3'/>")
    out.append(f"<text x='{cx:.1f}' y='115' text-anchor='middle'>card: {cap / GIB:,.2f} GiB (nvidia-smi)</text>")
    for t in range(0, int(max(cap, total) / GIB) + 1, max(1, int(max(cap, total) / GIB / 10))):
        tx = left + t * GIB * scale
        out.append(f"<g class='xtick'><line x1='{tx:.1f}' y1='92' x2='{tx:.1f}' y2='96' stroke='#444'/>"
                   f"<text x='{tx:.1f}' y='135' text-anchor='middle' fill='#666'>{t}</text></g>")
    out.append(f"<text x='{left}' y='150' fill='#666'>GiB per GPU</text>")
    for i, (k, v) in enumerate(comps):
        ly = 175 + i * 16
        out.append(f"<g class='legend'><rect x='{left}' y='{ly - 9}' width='10' height='10' "
                   f"fill='{colors[i % len(colors)]}'/><text x='{left + 16}' y='{ly}'>"
                   f"{html.escape(LABELS.get(k, k))}: {v / GIB:,.2f} GiB</text></g>")
    out.append(f"<text x='{left}' y='{175 + len(comps) * 16 + 8}' font-weight='bold'>total {total / GIB:,.2f} GiB "
               f"of {cap / GIB:,.2f} GiB, estimate +/-{est['memory']['uncertainty_pct']} %</text></svg>")
    return "\n".join(out)


def _nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    """Round tick values (1, 2 or 5 x 10^k apart) covering [lo, hi]."""
    if hi <= lo:
        hi = lo + (abs(lo) or 1.0)
    raw = (hi - lo) / n
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 5, 10) if m * mag >= raw)
    start = math.floor(lo / step) * step
    return [round(start + i * step, 10) for i in range(int(math.ceil((hi - start) / step)) + 1)]


def loss_svg(points: list[tuple[int, float]], title: str) -> str:
    """Training loss by step; `points` are (step, loss) in order."""
    w, h, left, right, top, bottom = 760, 420, 70, 30, 50, 60
    out = [f"<svg xmlns='http://www.w3.org/2000/svg' width='{w}' height='{h}' font-family='sans-serif' "
           f"font-size='11'>", f"<text x='{left}' y='24' font-size='15'>{html.escape(title)}</text>"]
    steps, losses = [p[0] for p in points], [p[1] for p in points]
    xt, yt = _nice_ticks(min(steps), max(steps)), _nice_ticks(min(losses), max(losses))
    x0, y0, pw, ph = left, h - bottom, w - left - right, h - top - bottom

    def fx(v: float) -> float:
        return round(x0 + (v - xt[0]) / (xt[-1] - xt[0]) * pw, 1)

    def fy(v: float) -> float:
        return round(y0 - (v - yt[0]) / (yt[-1] - yt[0]) * ph, 1)

    out.append(f"<g class='axes' stroke='#444'><line x1='{x0}' y1='{y0}' x2='{x0 + pw}' y2='{y0}'/>"
               f"<line x1='{x0}' y1='{top}' x2='{x0}' y2='{y0}'/></g>")
    for t in xt:
        out.append(f"<g class='xtick'><line x1='{fx(t)}' y1='{y0}' x2='{fx(t)}' y2='{y0 + 5}' stroke='#444'/>"
                   f"<text x='{fx(t)}' y='{y0 + 18}' text-anchor='middle'>{t:g}</text></g>")
    for t in yt:
        out.append(f"<g class='ytick'><line x1='{x0 - 5}' y1='{fy(t)}' x2='{x0 + pw}' y2='{fy(t)}' stroke='#ddd'/>"
                   f"<text x='{x0 - 8}' y='{fy(t) + 4}' text-anchor='end'>{t:g}</text></g>")
    out.append(f"<text x='{x0 + pw / 2}' y='{h - 20}' text-anchor='middle'>optimizer step</text>")
    out.append(f"<text transform='translate(16 {(top + y0) / 2}) rotate(-90)' text-anchor='middle'>training loss"
               "</text>")
    path = " ".join(f"{fx(x)},{fy(y)}" for x, y in points)
    out.append(f"<polyline class='loss' points='{path}' fill='none' stroke='{PLAN}' stroke-width='1.5'/>")
    low = min(points, key=lambda p: p[1])
    for label, (x, y) in (("first", points[0]), ("lowest", low), ("last", points[-1])):
        out.append(f"<circle class='mark' cx='{fx(x)}' cy='{fy(y)}' r='3' fill='{FRONT}'/>"
                   f"<text class='label' x='{fx(x) + 5}' y='{fy(y) - 6}'>{label}: {y:.4f} (step {x})</text>")
    out.append("</svg>")
    return "\n".join(out)


def _page(svg: str, title: str, caption: str) -> str:
    return (f"<!doctype html><meta charset='utf-8'><title>{html.escape(title)}</title><body>{svg}"
            f"<p>{html.escape(caption)}</p></body>")


def check_target(path: str | Path) -> tuple[Path, str]:
    path = Path(path).expanduser()
    suffix = path.suffix.lower()
    if suffix not in (".html", ".htm", ".svg", ".png"):
        raise FtplanError(f"--plot {path}: write .html, .svg or .png.")
    if not path.parent.is_dir():
        raise FtplanError(f"--plot {path}: the folder {path.parent} does not exist; create it or pick another path.")
    return path, suffix


def _write(path: Path, text: str) -> None:
    try:
        path.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise FtplanError(f"--plot {path}: cannot write it ({exc.strerror or exc}).") from None


def _pyplot(path: Path):
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise FtplanError(f"--plot {path}: PNG needs matplotlib: pip install 'ftplan[plot]'; or write .html or .svg, "
                          "which need nothing.") from None
    return plt


def write_plot(path: str | Path, plans: list[dict], front: list[dict], title: str) -> Path:
    """Cost vs time of `plans`, Pareto front marked, to .html, .svg or .png."""
    path, suffix = check_target(path)
    if suffix in (".html", ".htm", ".svg"):
        svg = plans_svg(plans, front, title)
        _write(path, svg if suffix == ".svg" else _page(svg, title, "Each point is a plan: hover for provider, "
                                                        "GPUs, cost and time."))
        return path
    plt = _pyplot(path)
    pts = _points(plans)
    floor = _floor([p["usd"] for p in pts]) if pts else 0.01
    on_front = {_key(p) for p in front}
    fig, ax = plt.subplots(figsize=(9, 5.5))
    for kind, color, label in (("plan", PLAN, LEGEND[0][0]), ("front", FRONT, LEGEND[1][0]),
                               ("local", LOCAL, LEGEND[2][0])):
        sel = [p for p in pts if ("local" if p["kind"] == "local" else "front" if _key(p) in on_front
                                  else "plan") == kind]
        if sel:
            ax.scatter([p["hours"] for p in sel], [max(p["usd"], floor) for p in sel], s=30 if kind != "plan" else 12,
                       color=color, label=label, zorder=3)
        for p in sel if kind != "plan" else ():
            cost = money(p["usd"])
            ax.annotate(f"{_name(p)}, {cost}", (p["hours"], max(p["usd"], floor)), textcoords="offset points",
                        xytext=(6, 4), fontsize=8)
    fr = sorted((p for p in pts if _key(p) in on_front), key=lambda p: p["hours"])
    ax.plot([p["hours"] for p in fr], [max(p["usd"], floor) for p in fr], "--", color=FRONT, zorder=2)
    ax.set(xscale="log", yscale="log", xlabel="wall-clock time, start-up included (hours)",
           ylabel="cost of the job (USD)", title=title)
    ax.set_ylim(bottom=floor / 1.5)
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(loc="upper right")
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return path


def write_memory_plot(path: str | Path, est: dict) -> Path:
    """`ftplan estimate --model ... --plot FILE`: memory by component against the card."""
    path, suffix = check_target(path)
    if suffix in (".html", ".htm", ".svg"):
        svg = memory_svg(est)
        _write(path, svg if suffix == ".svg" else _page(svg, est["model"]["id"], "Peak memory per GPU by component; "
                                                        "the dashed line is the card's capacity."))
        return path
    from .render import LABELS

    plt = _pyplot(path)
    comps = [(k, v / GIB) for k, v in est["memory"]["components"].items() if v > 0]
    fig, ax = plt.subplots(figsize=(9, 2.8))
    left = 0.0
    for k, v in comps:
        ax.barh([0], [v], left=left, label=f"{LABELS.get(k, k)}: {v:,.2f} GiB")
        left += v
    cap = est["hardware"]["memory_bytes"] / GIB
    ax.axvline(cap, color="black", linestyle="--", label=f"card: {cap:,.2f} GiB (nvidia-smi)")
    ax.set(yticks=[], xlabel="GiB per GPU",
           title=f"{est['model']['id']} on {est['hardware']['count']} x {est['hardware']['gpu']} ({est['verdict']})")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.35), ncol=3, fontsize=8)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return path
