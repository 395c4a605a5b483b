"""`serveplan plan`: one JSON document (and the same in --out), one error line for bad input,
--rate and --concurrency not both, and --plot FILE.html beside the JSON."""

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


def test_cli_prints_one_json_document(tmp_path):
    out = tmp_path / "plan.json"
    r = CliRunner().invoke(app, ["plan", "--model", "llama-3.1-8b", "--gpu", "h100:1",
                                 "--workload", "fixed:512,128", "--rate", "5", "--ttft-slo", "0.5",
                                 "--tpot-slo", "0.03", "--kv-dtype", "bf16", "--workers", "1",
                                 "--json", "--out", str(out)])
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["schema"] == "serveplan.plan" and doc == json.loads(out.read_text())
    assert doc["deployment"]["pools"][0]["kv_dtype"] == "bf16"



def test_cli_errors_are_one_line():
    r = CliRunner().invoke(app, ["plan", "--model", "llama-3.1-8b", "--gpu", "h100:1",
                                 "--workload", "fixed:512,128", "--rate", "5", "--ttft-slo", "0",
                                 "--tpot-slo", "0.03"])
    assert r.exit_code == 2
    assert r.stderr.strip().startswith("error: TTFT SLO") and len(r.stderr.strip().splitlines()) == 1



def test_rate_and_concurrency_together_are_refused_and_help_says_what_neither_means():
    r = CliRunner().invoke(app, ["plan", "--model", "llama-3.1-8b", "--gpu", "h100:1", "--workload",
                                 "fixed:512,128", "--rate", "2", "--concurrency", "4", "--ttft-slo",
                                 "1", "--tpot-slo", "0.05"])
    assert r.exit_code == 2 and len(r.stderr.strip().splitlines()) == 1
    assert "not both" in r.stderr
    h = CliRunner().invoke(app, ["plan", "--help"], env={"COLUMNS": "300"}).stdout
    assert "neither: the most the GPUs carry" in h and "--time-limit" in h
