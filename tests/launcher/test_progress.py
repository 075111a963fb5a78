"""The live view, `logs` lines and the loss curve, from events as the training program writes them."""

import re
import xml.etree.ElementTree as ET

from rich.console import Console

from ftplan.launcher.plot import loss_svg
from ftplan.launcher.progress import BLOCKS, RunState, format_event, gate_lines, render, sparkline

GATE = {"type": "eval", "time": 1010.0, "gate": "blocked", "golden": "/data/golden.jsonl",
        "reasons": ["math regresses: 80% -> 60% of 5"],
        "categories": {"math": {"n": 5, "base_pass": 4, "adapter_pass": 3, "base": 0.8, "adapter": 0.6,
                                "change": -0.2},
                       "tone": {"n": 4, "base_pass": 2, "adapter_pass": 4, "base": 0.5, "adapter": 1.0,
                                "change": 0.5}}}


def shown(state: RunState) -> str:
    console = Console(record=True, width=140, color_system=None)
    console.print(render(state))
    return console.export_text()


def steps(losses, t0=1000.0, dt=2.0, tokens_per_step=1000, rate=None):
    return [{"type": "step", "time": t0 + dt * (i + 1), "step": i + 1, "total": len(losses), "loss": loss,
             "tokens_seen": tokens_per_step * (i + 1), "tokens_per_second": rate or tokens_per_step / dt}
            for i, loss in enumerate(losses)]


def test_a_few_per_cent_is_a_ripple_and_a_halving_is_the_full_height():
    ripple = sparkline([2.0, 1.98, 1.96, 1.94])
    assert BLOCKS[-1] not in ripple and len(set(ripple)) <= 3
    drop = sparkline([2.0, 1.5, 1.0])
    assert drop[0] == BLOCKS[-1] and drop[-1] == BLOCKS[0]


def test_loading_then_steps_with_scale_and_mean_rate_then_the_end_screen():
    s = RunState("j1", "demo", usd_per_hour=3.6)
    assert "waiting for the provider" in shown(s)
    s.add({"type": "started", "time": 1000.0, "backend": "peft", "backend_reason": "no unsloth"})
    assert "loading the model and data" in shown(s) and "0/?" not in shown(s)
    # the last interval is slow (a checkpoint write): the mean over the run is what the run did
    for e in steps([2.0, 1.5, 1.2, 1.1]) + [{"type": "step", "time": 1018.0, "step": 5, "total": 5, "loss": 1.05,
                                             "tokens_seen": 5000, "tokens_per_second": 100.0}]:
        s.add(e)
    live = shown(s)
    assert "min 1.0500, max 2.0000" in live and "100 now" in live
    mean = (5000 - 1000) / (1018.0 - 1002.0)
    s.add(GATE)
    s.add({"type": "finished", "time": 1020.0, "status": "blocked", "output": "/runs/j1/adapter"})
    end = shown(s)
    assert f"{mean:,.0f} mean over the run (last interval 100)" in end
    assert re.search(r"eval gate +BLOCKED on golden.jsonl", end)
    assert "math: base 80 % -> adapter 60 % of 5 (-20 pts)" in end and "tone: base 50 % -> adapter 100 % of 4" in end
    assert "why: math regresses" in end and re.search(r"output +/runs/j1/adapter", end)
    assert "projected" not in end


def test_a_failure_is_its_own_block_in_full():
    s = RunState("j2", "demo")
    s.add({"type": "started", "time": 1.0})
    message = "writing to /runs/j2 failed: the disk is full; " + "x" * 300
    s.add({"type": "failed", "time": 2.0, "error": message})
    lines = shown(s).splitlines()
    start = next(i for i, ln in enumerate(lines) if ln.startswith("error: writing to /runs/j2 failed"))
    assert "".join(ln.strip() for ln in lines[start:]).endswith("x" * 20)
    assert all(not ln.startswith("elapsed") for ln in lines[start:])


def test_logs_print_the_gate_per_category_not_a_bare_eval_line():
    text = format_event(GATE)
    assert text.splitlines()[0].endswith("eval gate: BLOCKED on golden.jsonl")
    assert "math: base 80 % -> adapter 60 % of 5 (-20 pts)" in text and "why: math regresses" in text
    plain = format_event({"type": "eval", "time": 0, "eval_loss": 1.25})
    assert "eval_loss=1.25" in plain


def test_gate_lines_from_a_job_record():
    record = {"passed": True, "golden": "g.jsonl", "categories": GATE["categories"], "reasons": []}
    assert gate_lines(record)[0] == "eval gate: passed on g.jsonl"
    assert gate_lines({"skipped": True}) == ["eval gate: skipped (--skip-eval; recorded in the manifest)"]
    assert gate_lines(None) == [] and gate_lines({}) == []


def test_loss_curve_svg_draws_every_step_with_axes_and_marks():
    points = [(i, 2.0 / (1 + 0.1 * i)) for i in range(1, 51)]
    root = ET.fromstring(loss_svg(points, "demo"))
    ns = {"s": "http://www.w3.org/2000/svg"}
    line = root.find(".//s:polyline[@class='loss']", ns)
    assert len(line.get("points").split()) == 50
    labels = [t.text for t in root.findall(".//s:text[@class='label']", ns)]
    assert labels[0].startswith("first: 1.8182 (step 1)") and labels[-1].startswith("last: 0.3333 (step 50)")
    xt = [g.find("s:text", ns).text for g in root.findall(".//s:g[@class='xtick']", ns)]
    yt = [float(g.find("s:text", ns).text) for g in root.findall(".//s:g[@class='ytick']", ns)]
    assert xt[0] == "0" and float(xt[-1]) >= 50 and yt[0] <= 0.3333 and yt[-1] >= 1.8182
