"""The live view of a run: progress with ETA, a loss sparkline, tokens/s, peak memory, dollars so far.

It only reads events, so local runs, Modal runs and managed-API jobs look the same.
"""

from __future__ import annotations

import time
from pathlib import Path

from rich.console import Group
from rich.table import Table
from rich.text import Text

BLOCKS = "▁▂▃▄▅▆▇█"
GIB = 2**30


# A curve is drawn over at least this share of its largest value: noise of a few per cent is drawn as
# a ripple, not as a cliff from the top of the chart to the bottom.
MIN_RELATIVE_SPAN = 0.10


def sparkline(values: list[float], width: int = 40) -> str:
    vals = [v for v in values if v is not None][-width:]
    if not vals:
        return ""
    lo, hi = min(vals), max(vals)
    span = max(hi - lo, MIN_RELATIVE_SPAN * abs(hi)) or 1.0
    return "".join(BLOCKS[min(len(BLOCKS) - 1, int((v - lo) / span * (len(BLOCKS) - 1)))] for v in vals)


def _pct(v) -> str:
    return f"{100 * v:.0f} %" if isinstance(v, (int, float)) else "?"


def gate_verdict(ev: dict | None) -> str | None:
    """"passed", "blocked" or "skipped" from a job record's gate result or a gate `eval` event; None: no gate."""
    ev = ev or {}
    if ev.get("skipped"):
        return "skipped"
    return ev.get("gate") or ("passed" if ev.get("passed") else "blocked" if "passed" in ev else None)


def gate_lines(ev: dict | None) -> list[str]:
    """The eval gate's verdict and, per category, base vs adapter pass rates: the same lines everywhere.

    `ev` is the gate's result as the job record keeps it (passed, categories, reasons, golden) or an
    `eval` event with a `gate` field.
    """
    verdict = gate_verdict(ev)
    if verdict == "skipped":
        return ["eval gate: skipped (--skip-eval; recorded in the manifest)"]
    if verdict is None:
        return []
    golden = f" on {Path(ev['golden']).name}" if ev.get("golden") else ""
    lines = [f"eval gate: {verdict.upper() if verdict == 'blocked' else verdict}{golden}"]
    for name, c in sorted((ev.get("categories") or {}).items()):
        change = c.get("change")
        arrow = f" ({'+' if change >= 0 else ''}{100 * change:.0f} pts)" if isinstance(change, (int, float)) else ""
        lines.append(f"  {name}: base {_pct(c.get('base'))} -> adapter {_pct(c.get('adapter'))} of {c.get('n', '?')}"
                     f"{arrow}")
    lines += [f"  why: {r}" for r in ev.get("reasons") or []]
    return lines


class RunState:
    """What the view shows, folded from events."""

    def __init__(self, job_id: str, label: str, usd_per_hour: float = 0.0, planned_usd: float | None = None):
        self.job_id, self.label = job_id, label
        self.usd_per_hour, self.planned_usd = usd_per_hour, planned_usd
        self.step = self.total = 0
        self.losses: list[float] = []
        self.tokens_per_second: float | None = None
        self.peak: int | None = None
        self.memory_metric = ""
        self.status = "starting"
        self.started_at: float | None = None
        self.last_time: float | None = None
        self.messages: list[str] = []
        self.usd_reported: float | None = None
        self.eval: dict = {}
        self.gate: dict | None = None  # the eval gate's event: verdict and categories
        self.warning: str | None = None  # the provider could not be asked this time (shown, not fatal)
        self.rates: list[tuple[float, int]] = []  # (time, tokens seen) at each step: the run's mean tokens/s
        self.output: str | None = None
        self.error: str | None = None

    def add(self, e: dict) -> None:
        kind = e.get("type")
        self.last_time = e.get("time", self.last_time)
        if kind == "started":
            self.status = "running"
            self.started_at = e.get("time")
            self.messages.append(f"backend {e.get('backend')}: {e.get('backend_reason', '')}")
        elif kind == "step":
            self.step, self.total = e.get("step", self.step), e.get("total", self.total)
            if e.get("loss") is not None:
                self.losses.append(float(e["loss"]))
            self.tokens_per_second = e.get("tokens_per_second") or self.tokens_per_second
            if isinstance(e.get("tokens_seen"), (int, float)) and e.get("time"):
                self.rates.append((e["time"], int(e["tokens_seen"])))
            self.peak = e.get("peak_memory_bytes", self.peak)
            self.memory_metric = e.get("memory_metric", self.memory_metric)
        elif kind == "eval" and e.get("gate"):
            self.gate = e
        elif kind == "eval":
            self.eval = {k: v for k, v in e.items() if k.startswith("eval_")}
        elif kind == "checkpoint":
            self.messages.append(f"checkpoint at step {e.get('step')}")
        elif kind == "cost":
            self.usd_reported = e.get("usd")
        elif kind == "log" and e.get("level") in ("warning", "error", "info") and e.get("message"):
            self.messages.append(str(e["message"]))
        elif kind == "finished":
            self.status = e.get("status", "completed")
            self.output = e.get("output") or e.get("checkpoint") or self.output
            if e.get("usd") is not None:
                self.usd_reported = e["usd"]
        elif kind == "failed":
            self.status = "failed"
            self.error = str(e.get("error"))

    @property
    def elapsed(self) -> float:
        if self.started_at is None:
            return 0.0
        end = self.last_time if self.ended else time.time()
        return max(0.0, (end or time.time()) - self.started_at)

    @property
    def mean_tokens_per_second(self) -> float | None:
        """Tokens over time between the first and the last step reported: the run's rate, not one interval's."""
        if len(self.rates) < 2:
            return self.tokens_per_second
        (t0, s0), (t1, s1) = self.rates[0], self.rates[-1]
        return (s1 - s0) / (t1 - t0) if t1 > t0 and s1 > s0 else self.tokens_per_second

    @property
    def ended(self) -> bool:
        return self.status in ("completed", "failed", "cancelled", "blocked")

    @property
    def usd(self) -> float:
        return self.usd_reported if self.usd_reported is not None else self.usd_per_hour * self.elapsed / 3600

    @property
    def eta_seconds(self) -> float | None:
        if not self.step or not self.total or self.step >= self.total:
            return None
        return self.elapsed / self.step * (self.total - self.step)

    @property
    def projected_usd(self) -> float | None:
        if not self.step or not self.total:
            return None
        return self.usd * self.total / self.step


def render(state: RunState):
    done = state.step / state.total if state.total else 0.0
    bar_w = 40
    bar = "█" * int(done * bar_w) + "░" * (bar_w - int(done * bar_w))
    eta = state.eta_seconds
    head = Text.assemble((f"{state.label} ", "bold"), (f"[{state.status}] ", "cyan"), f"job {state.job_id}")
    table = Table.grid(padding=(0, 2))
    table.add_column(style="dim")
    table.add_column()
    if state.total or state.ended:
        table.add_row("progress", f"{bar} {state.step}/{state.total or '?'} steps" +
                      (f"  ETA {eta / 60:,.1f} min" if eta else ""))
    elif state.started_at is None:
        table.add_row("progress", "waiting for the provider to start the job")
    else:
        table.add_row("progress", f"loading the model and data ({state.elapsed:,.0f} s); steps follow")
    if state.losses:
        lo, hi = min(state.losses[-40:]), max(state.losses[-40:])
        table.add_row("loss", f"{sparkline(state.losses)}  {state.losses[-1]:.4f}  "
                      f"(last {min(len(state.losses), 40)}: min {lo:.4f}, max {hi:.4f})")
    if state.eval:
        table.add_row("eval", ", ".join(f"{k[5:]} {v:.4g}" for k, v in state.eval.items()
                                        if isinstance(v, (int, float)) and "loss" in k))
    mean = state.mean_tokens_per_second
    if state.tokens_per_second and state.ended and mean:
        table.add_row("tokens/s", f"{mean:,.0f} mean over the run (last interval {state.tokens_per_second:,.0f})")
    elif state.tokens_per_second:
        table.add_row("tokens/s", f"{state.tokens_per_second:,.0f} now" + (f", {mean:,.0f} mean" if mean else ""))
    if state.peak:
        table.add_row("peak memory", f"{state.peak / GIB:,.2f} GiB ({state.memory_metric})")
    spent = f"${state.usd:,.4f} so far" if not state.ended else f"${state.usd:,.4f}"
    if state.projected_usd is not None and not state.ended:
        spent += f", ~${state.projected_usd:,.4f} projected"
    if state.planned_usd is not None:
        spent += f" (plan ${state.planned_usd:,.4f})"
    table.add_row("cost", spent)
    table.add_row("elapsed", f"{state.elapsed:,.0f} s")
    if state.warning:
        table.add_row("warning", Text(state.warning[:160], style="yellow"))
    for msg in state.messages[-3:]:
        table.add_row("", Text(msg[:160], style="dim"))
    if state.gate:
        verdict, *rest = gate_lines(state.gate)
        table.add_row("eval gate", Text(verdict.removeprefix("eval gate: "),
                                        style="green" if state.gate.get("gate") == "passed" else "bold red"))
        for line in rest:
            table.add_row("", line.strip())
    if state.output and state.ended:
        table.add_row("output", state.output)
    parts = [head, table]
    if state.error:  # its own block, in full: the reason a run stopped is not a log line to be cut
        parts.append(Text(f"error: {state.error}", style="bold red"))
    return Group(*parts)


def format_event(e: dict) -> str:
    t = time.strftime("%H:%M:%S", time.localtime(e.get("time", 0)))
    kind = e.get("type")
    if kind == "step":
        parts = [f"{t} step {e.get('step')}/{e.get('total')}"]
        # Remote providers report steps without a loss (Together's events carry none): print what there is.
        for key, fmt in (("loss", "loss {:.4f}"), ("lr", "lr {:.3g}"), ("tokens_per_second", "{:,.0f} tok/s")):
            if isinstance(e.get(key), (int, float)):
                parts.append(fmt.format(e[key]))
        return " ".join(parts)
    if kind == "checkpoint":
        return f"{t} checkpoint step {e.get('step')}: {e.get('path')}"
    if kind == "eval" and e.get("gate"):
        return "\n".join([f"{t} {line}" if i == 0 else f"{' ' * len(t)} {line}"
                          for i, line in enumerate(gate_lines(e))])
    if kind == "eval":
        return f"{t} eval " + ", ".join(f"{k}={v:.4g}" for k, v in e.items()
                                        if k.startswith("eval_") and isinstance(v, (int, float)))
    if kind == "started":
        return f"{t} started {e.get('objective')} ({e.get('adapter')}) on {e.get('device')}, backend " \
               f"{e.get('backend')}: {e.get('backend_reason')}"
    if kind == "finished":
        return f"{t} finished: {e.get('status')}" + (f" -> {e.get('output')}" if e.get("output") else "")
    if kind == "failed":
        return f"{t} FAILED: {e.get('error')}"
    if kind == "cost":
        return f"{t} cost so far ${e.get('usd', 0):,.4f}"
    return f"{t} {kind}: {e.get('message') or e.get('values') or ''}"
