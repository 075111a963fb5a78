"""Plots read without the terminal: every point labelled, ticks with units, a legend that tells the truth.

The SVG is parsed as XML (the standard library's parser, not string search), so a point, label or
legend entry that is missing or coloured differently from what the legend says fails the test.
"""

import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from click.testing import CliRunner

from ftplan.launcher.cli import cli
from ftplan.launcher.plot import LEGEND, plans_svg

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
NS = {"s": "http://www.w3.org/2000/svg"}


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def _plan(**kw) -> dict:
    base = {"kind": "cloud", "provider": "runpod", "label": "RunPod", "gpu": "H100", "count": 1, "usd": 10.0,
            "hours": 2.0, "adapter": "lora"}
    return base | kw


@pytest.fixture(scope="module")
def planned(tmp_path_factory):
    out = tmp_path_factory.mktemp("plot") / "p.svg"
    res = run("estimate", EXAMPLES / "chat.jsonl", "--model", "llama-3.1-8b", "--local", "RTX-4090", "--plot", out,
              "--json")
    assert res.exit_code == 0, res.output
    return json.loads(res.output), ET.parse(out).getroot()


def _points(root) -> list:
    return [c for c in root.iter("{http://www.w3.org/2000/svg}circle") if c.get("class") in ("plan", "front", "local")]


def test_every_timed_plan_is_one_point_with_its_provider_gpu_cost_and_time_in_the_tooltip(planned):
    result, root = planned
    local = [result["local"]] if result["local"] and result["local"] not in result["plans"] else []
    timed = [p for p in result["plans"] if p["hours"]] + local
    points = _points(root)
    assert len(points) == len({(p["provider"], p["gpu"], p["count"]) for p in timed})
    tips = [c.find("s:title", NS).text for c in points]
    for p in result["plans"]:
        if p["hours"] and p["gpu"]:
            assert any(t.startswith(f"{p['provider']} {p['count']} x {p['gpu']} ") for t in tips), p


def test_front_and_local_points_carry_a_visible_label(planned):
    result, root = planned
    labels = [t.text for t in root.iter("{http://www.w3.org/2000/svg}text") if t.get("class") == "label"]
    for p in result["pareto"]:
        if p["hours"]:
            name = p["label"] if p["gpu"] is None else f"{p['provider']} {p['count']} x {p['gpu']}"
            assert any(lab.startswith(name + ", $") for lab in labels), (name, labels)
    assert any(lab.startswith("local 1 x RTX-4090") for lab in labels)


def test_legend_colours_are_the_colours_drawn(planned):
    _, root = planned
    legend = root.find(".//s:g[@class='legend']", NS)
    entries = dict(zip([t.text for t in legend.findall("s:text", NS)], [c.get("fill") for c in
                                                                       legend.findall("s:circle", NS)], strict=True))
    assert set(entries) == {text for text, _ in LEGEND}
    drawn = {c.get("class"): c.get("fill") for c in _points(root)}
    assert drawn["local"] == entries["your local box"]
    assert drawn["front"] == entries["Pareto front: no plan is cheaper and faster"]
    assert drawn["plan"] == entries["a plan"]


def test_axes_have_ticks_with_units(planned):
    _, root = planned
    xticks = [g.find("s:text", NS).text for g in root.findall(".//s:g[@class='xtick']", NS)]
    yticks = [g.find("s:text", NS).text for g in root.findall(".//s:g[@class='ytick']", NS)]
    assert len(xticks) >= 2 and all(re.fullmatch(r"[\d,.]+ (s|min|h)", t) for t in xticks), xticks
    assert len(yticks) >= 2 and all(re.fullmatch(r"\$[\d,.]+", t) for t in yticks), yticks
    titles = " ".join(t.text or "" for t in root.iter("{http://www.w3.org/2000/svg}text"))
    assert "hours" in titles and "USD" in titles


def test_a_free_plan_sits_on_the_axis_floor_labelled_zero_not_a_made_up_cent():
    plans = [_plan(), _plan(provider="local", kind="local", label="Local", gpu="RTX-4090", usd=0.0, hours=5.0),
             _plan(provider="lambda", usd=30.0, hours=1.0)]
    root = ET.fromstring(plans_svg(plans, plans, "t"))
    local = next(c for c in _points(root) if c.get("class") == "local")
    floor_y = max(float(g.find("s:line", NS).get("y1")) for g in root.findall(".//s:g[@class='ytick']", NS))
    assert float(local.get("cy")) == pytest.approx(floor_y)
    assert "$0.00" in local.find("s:title", NS).text and "$0.01" not in local.find("s:title", NS).text


def test_html_wraps_the_same_svg(tmp_path):
    res = run("estimate", EXAMPLES / "chat.jsonl", "--model", "llama-3.1-8b", "--plot", tmp_path / "p.html")
    assert res.exit_code == 0, res.output
    svg = re.search(r"<svg.*</svg>", (tmp_path / "p.html").read_text(), re.S).group(0)
    assert len(_points(ET.fromstring(svg))) > 10


def test_memory_plot_stacks_components_against_the_card(tmp_path):
    res = run("estimate", "--model", "llama-3.1-8b", "--gpu", "A100-80GB", "--plot", tmp_path / "m.svg", "--json")
    assert res.exit_code == 0, res.output
    est = json.loads(res.output)
    root = ET.parse(tmp_path / "m.svg").getroot()
    bars = root.findall(".//s:rect[@class='component']", NS)
    assert len(bars) == sum(v > 0 for v in est["memory"]["components"].values())
    widths = sum(float(b.get("width")) for b in bars)
    cap_x = float(root.find(".//s:line[@class='capacity']", NS).get("x1")) - 40
    total = sum(est["memory"]["components"].values())
    assert widths / cap_x == pytest.approx(total / est["hardware"]["memory_bytes"], rel=0.01)


def test_png_has_the_labels_too(tmp_path):
    pytest.importorskip("matplotlib")
    res = run("estimate", EXAMPLES / "chat.jsonl", "--model", "llama-3.1-8b", "--plot", tmp_path / "p.png")
    assert res.exit_code == 0, res.output
    assert (tmp_path / "p.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("args,needle", [
    (["--matrix", "--plot", "{tmp}/p.svg"], "matrix"),
    (["--model", "llama-3.1-8b", "--plot", "{tmp}/nowhere/p.svg"], "does not exist"),
    (["--model", "llama-3.1-8b", "--plot", "{tmp}/p.jpg"], ".html, .svg or .png"),
])
def test_plot_errors_where_it_cannot_draw(tmp_path, args, needle):
    res = run("estimate", *[a.format(tmp=tmp_path) for a in args])
    assert res.exit_code == 2 and needle in res.output and "Traceback" not in res.output
