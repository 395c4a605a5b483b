"""Report figures: reductions by hand, figures that carry the simulation's own numbers, the
`simulate --plot` file, and a headless-Chromium render of the simulate and plan reports."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from planner.cli import app as cli_app
from planner.cli import plots


@pytest.fixture(scope="module")
def sim_result():
    from sim import SLO, Deployment, PoolConfig, parse_workload, simulate

    dep = Deployment("llama-3.2-1b", (PoolConfig("colocated", "l40s", replicas=2),))
    wl = parse_workload("fixed:512,64", rate=8.0)
    return simulate(dep, wl, num_requests=300, seed=1, slo=SLO(0.2, 0.02), keep_requests=True)


@pytest.fixture(scope="module")
def plan_doc():
    from costmodel.jsonio import dump_json
    from planner.planning import plan

    p = plan(model="llama-3.2-1b", gpus="l40s:2", workload="fixed:256,64", rate=2.0,
             ttft_slo_s=1.0, tpot_slo_s=0.05, num_requests=100)
    return json.loads(dump_json(p.to_dict()))


def test_reductions_by_hand():
    x, q = plots._cdf([3.0, 1.0, float("nan"), 2.0])
    assert x.tolist() == [1.0, 2.0, 3.0] and q.tolist() == [0.0, 0.5, 1.0]
    t, y = plots._bucket_max(np.arange(10.0), [0, 5, 1, 0, 0, 7, 0, 0, 0, 1], buckets=2)
    assert t.tolist() == [0.0, 5.0] and y.tolist() == [5.0, 7.0]
    t, y = plots._bucket_max([0.0, 1.0], [2.0, 3.0], buckets=5)  # short series unchanged
    assert y.tolist() == [2.0, 3.0]


def test_simulate_figures_carry_the_runs_numbers(sim_result):
    cdf, timeline, util = plots.simulate_figures(sim_result)
    frame = sim_result.requests[~sim_result.requests["rejected"]]
    ttft = cdf.data[0]
    assert ttft.y[0] == 0.0 and ttft.y[-1] == 1.0 and np.all(np.diff(ttft.x) >= 0)
    # the median of the plotted CDF is the median TTFT of the completed requests (ms)
    mid = int(np.searchsorted(ttft.y, 0.5))
    assert ttft.x[mid] == pytest.approx(np.quantile(frame["ttft_s"] * 1e3, ttft.y[mid]))
    assert len(timeline.data) == 2 * 2  # KV and queue for each of the two replicas
    assert list(util.data[0].y) == sim_result.timeline["busy_fraction"]
    assert max(max(tr.y) for tr in timeline.data[::2]) <= sim_result.metrics.kv_peak_fraction + 1e-9


def test_plan_figures_mark_the_chosen_plan(plan_doc):
    plane, *rest = plots.plan_figures(plan_doc)
    star = [t for t in plane.data if t.name == "chosen plan"]
    assert len(star) == 2 and star[0].marker.symbol == "star"
    assert star[0].y[0] == plan_doc["capacity"]["goodput_per_gpu"]
    assert star[0].x[0] == pytest.approx(plan_doc["predicted"]["ttft_p90_s"] * 1e3)
    assert star[1].x[0] == pytest.approx(plan_doc["predicted"]["tpot_p90_s"] * 1e3)
    n_alt = sum(len(t.x) for t in plane.data if t.name.startswith("alternative")) // 2
    assert n_alt == len(plan_doc["alternatives"])
    bars = rest[0].data[0]
    assert len(bars.y) == len(plan_doc["search"]["ranking"])


def test_simulate_plot_option_writes_a_self_contained_report(tmp_path):
    out = tmp_path / "sim.html"
    r = CliRunner().invoke(cli_app, ["simulate", "--model", "llama-3.2-1b", "--gpu", "l40s",
                                     "--workload", "fixed:256,32", "--rate", "4", "--requests",
                                     "200", "--tpot-slo", "0.03", "--plot", str(out), "--json"])
    assert r.exit_code == 0, r.output
    json.loads(r.stdout)  # still exactly one JSON document on stdout
    page = out.read_text()
    assert page.count("Plotly.newPlot") == 3
    assert not re.search(r"<script[^>]+src=", page), "plotly.js must be inline (no network)"
    assert "SLO 30 ms" in page


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        if shutil.which(name):
            return shutil.which(name)
    return None


def _render(browser: str, page: Path, png: Path, profile: Path) -> str:
    """Screenshot `page` into `png` and return the DOM after the page's scripts ran (one launch)."""
    cmd = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={profile}", "--virtual-time-budget=5000", "--window-size=1200,2400",
           f"--screenshot={png}", "--dump-dom", page.as_uri()]
    return subprocess.run(cmd, check=True, capture_output=True, timeout=120, text=True).stdout


@pytest.mark.skipif(_chromium() is None, reason="no headless Chromium: apt-get install -y chromium "
                    "(the browser check renders the report HTML and screenshots it)")
def test_reports_render_in_headless_chromium(tmp_path, sim_result, plan_doc):
    """Plotly draws every figure offline: each figure div holds its SVG and its traces.
    Set SERVEPLAN_SCREENSHOTS=DIR to keep the screenshots for a look."""
    browser = _chromium()
    keep = Path(os.environ.get("SERVEPLAN_SCREENSHOTS", tmp_path))
    keep.mkdir(parents=True, exist_ok=True)
    sim_page = plots.write_simulate_report(sim_result, tmp_path / "sim.html", title="browser check")
    plan_page = plots.write_plan_report(plan_doc, tmp_path / "plan.html")
    for page, n_figs, n_points in ((sim_page, 3, 2), (plan_page, 3, 1 + len(plan_doc["alternatives"]))):
        png = keep / f"{page.stem}.png"
        dom = _render(browser, page, png, tmp_path / f"profile-{page.stem}")
        assert dom.count('class="plot-container plotly"') == n_figs, page.name
        # each figure's SVG got drawn (plotly adds these only after its script ran)
        assert dom.count('class="main-svg"') >= 2 * n_figs
        assert dom.count('class="scatterlayer') + dom.count('class="barlayer') >= n_figs
        assert dom.count('class="point"') >= n_points
        assert png.stat().st_size > 30_000  # a blank 1200x2400 page compresses to a few KB
