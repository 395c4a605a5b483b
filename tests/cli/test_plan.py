"""`serveplan plan --plot FILE.html` writes the candidate-plane report beside the JSON."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from planner.cli import app


def test_plan_plot_writes_a_self_contained_report(tmp_path):
    out = tmp_path / "plan.html"
    res = CliRunner().invoke(app, [
        "plan", "--model", "llama-3.1-8b", "--gpu", "h100:2", "--workload", "fixed:512,128",
        "--rate", "4", "--ttft-slo", "1", "--tpot-slo", "0.05", "--requests", "200",
        "--quiet", "--json", "--plot", str(out)])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    html = out.read_text()
    assert "plotly" in html.lower() and "<script" in html
    # the chosen plan's model and its predicted goodput are in the report
    assert "llama-3.1-8b" in html
    assert len(html) > 1_000_000  # plotly.js inline: opens with no network
    assert doc["deployment"]["model"] == "llama-3.1-8b"
