"""Plotly figures for the simulate and plan reports, and the self-contained report HTML.

- `simulate_figures(result, slo)`: from `sim.simulate(..., keep_requests=True)`: TTFT and TPOT
  CDFs (with the SLO targets), KV occupancy and queue length of each replica over time, and
  each replica's utilisation (busy fraction).
- `plan_figures(plan)`: from a Plan JSON: the winner and the alternatives on a goodput-per-GPU
  vs latency plane (p90 TTFT and p90 TPOT at the target load, SLO targets dashed), the
  planner's ranking of verified candidates, and the winner's verifying probes (attainment
  against load, the goodput marked).
- `write_report(path, title, figures, summary)`: one HTML file with plotly.js inlined (it
  opens with no network) and a table of key numbers.

Long series are reduced before plotting (CDFs to 500 quantiles, timelines to 1500 buckets
keeping each bucket's maximum, so short spikes stay visible): a report of a million requests
stays a few MB.
"""

from __future__ import annotations

import html
from pathlib import Path

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

CDF_POINTS = 500
TIMELINE_BUCKETS = 1500
WINNER, ALT, OTHER = "#d62728", "#1f77b4", "#9a9a9a"
ALT_COLORS = ("#1f77b4", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf")


def _cdf(values) -> tuple[np.ndarray, np.ndarray]:
    """Quantile points of the finite values: (value, fraction at or below)."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return np.array([]), np.array([])
    q = np.linspace(0.0, 1.0, min(CDF_POINTS, v.size))
    return np.quantile(v, q), q


def _bucket_max(t, y, buckets: int = TIMELINE_BUCKETS) -> tuple[np.ndarray, np.ndarray]:
    """At most `buckets` points: the first time and the largest value of each bucket."""
    t, y = np.asarray(t, float), np.asarray(y, float)
    if t.size <= buckets:
        return t, y
    edges = np.linspace(0, t.size, buckets + 1).astype(int)
    return t[edges[:-1]], np.maximum.reduceat(y, edges[:-1])


def simulate_figures(result, slo=None, title: str = "") -> list[go.Figure]:
    """Figures of one simulation. result: a SimResult with `.requests` and `.timeline`
    (simulate(..., keep_requests=True)); slo: a sim.metrics.SLO for the target lines."""
    if result.requests is None or result.timeline is None:
        raise ValueError("simulate_figures needs simulate(..., keep_requests=True)")
    df = result.requests
    done = df[~df["rejected"]]
    cdf = make_subplots(1, 2, subplot_titles=("TTFT", "TPOT"), horizontal_spacing=0.08)
    for col, (name, target) in enumerate((("ttft_s", slo.ttft_s if slo else None),
                                          ("tpot_s", slo.tpot_s if slo else None)), start=1):
        x, q = _cdf(done[name] * 1e3)
        cdf.add_trace(go.Scatter(x=x, y=q, mode="lines", name=name.split("_")[0].upper(),
                                 line={"width": 2}), 1, col)
        if target is not None:
            cdf.add_vline(x=target * 1e3, line={"dash": "dash", "color": WINNER}, row=1, col=col,
                          annotation_text=f"SLO {target * 1e3:g} ms")
        cdf.update_xaxes(title_text=f"{name.split('_')[0].upper()} (ms)", row=1, col=col)
    cdf.update_yaxes(title_text="fraction of requests", range=[0, 1.02], row=1, col=1)
    cdf.update_layout(title=f"latency CDFs ({len(done)} completed requests)",
                      showlegend=False, height=380)

    tl = make_subplots(2, 1, shared_xaxes=True, vertical_spacing=0.08,
                       subplot_titles=("KV cache in use (fraction of blocks)", "requests waiting"))
    palette = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
               "#7f7f7f", "#bcbd22", "#17becf")
    for i, rep in enumerate(result.timeline["replicas"]):
        label = f"replica {rep['replica']} ({rep['role']})"
        style = {"legendgroup": f"r{rep['replica']}", "mode": "lines", "name": label,
                 "line": {"color": palette[i % len(palette)], "width": 1.5}}
        t, kv = _bucket_max(rep["time_s"], rep["kv_fraction"])
        _, wait = _bucket_max(rep["time_s"], rep["waiting"])
        tl.add_trace(go.Scatter(x=t, y=kv, **style), 1, 1)
        tl.add_trace(go.Scatter(x=t, y=wait, showlegend=False, **style), 2, 1)
    tl.update_yaxes(range=[0, 1.02], row=1, col=1)
    tl.update_yaxes(rangemode="tozero", row=2, col=1)
    tl.update_xaxes(title_text="simulated time (s)", row=2, col=1)
    tl.update_layout(title="KV occupancy and queue length over time", height=520)

    reps = result.timeline["replicas"]
    busy = result.timeline["busy_fraction"]
    util = go.Figure(go.Bar(x=[f"{r['replica']} ({r['role']})" for r in reps], y=busy,
                            text=[f"{b:.0%}" for b in busy], textposition="outside"))
    util.update_layout(title="per-replica utilisation (busy fraction of the run)", height=340,
                       yaxis={"range": [0, 1.1], "title": "busy fraction", "tickformat": ".0%"},
                       xaxis={"title": "replica"})
    return [cdf, tl, util]


def _candidates(plan: dict) -> list[dict]:
    """Winner, alternatives and (when they carry latencies) the ranked candidates, as points."""
    pts = []
    cap, pred = plan.get("capacity") or {}, plan.get("predicted") or {}
    pts.append({"kind": "chosen plan", "label": cap.get("unit", "chosen plan"),
                "per_gpu": cap.get("goodput_per_gpu"), "ttft": pred.get("ttft_p90_s"),
                "tpot": pred.get("tpot_p90_s")})
    for a in plan.get("alternatives") or []:
        c, p = a.get("capacity") or {}, a.get("predicted") or {}
        pts.append({"kind": f"alternative ({a.get('mode')})", "label": c.get("unit", a.get("why", "")),
                    "per_gpu": c.get("goodput_per_gpu"), "ttft": p.get("ttft_p90_s"),
                    "tpot": p.get("tpot_p90_s")})
    shown = {p["label"] for p in pts}
    for r in (plan.get("search") or {}).get("ranking") or []:
        if r.get("unit") not in shown and r.get("ttft_p90_s") is not None:
            pts.append({"kind": "other verified", "label": r["unit"], "per_gpu": r.get("goodput_per_gpu"),
                        "ttft": r.get("ttft_p90_s"), "tpot": r.get("tpot_p90_s")})
    return [p for p in pts if p["per_gpu"] is not None]


def plan_figures(plan: dict) -> list[go.Figure]:
    """Figures of a Plan JSON (`Plan.to_dict()` or `serveplan plan --json` output)."""
    slo = (plan.get("simulation") or {}).get("slo") or (plan.get("inputs") or {}).get("slo") or {}
    unit = (plan.get("capacity") or {}).get("load_unit", "requests/s")
    pts = _candidates(plan)
    plane = make_subplots(1, 2, shared_yaxes=True, horizontal_spacing=0.05,
                          subplot_titles=("p90 TTFT at the target load", "p90 TPOT at the target load"))
    styles = {"chosen plan": (WINNER, "star", 18), "other verified": (OTHER, "circle", 9)}
    for i, kind in enumerate(dict.fromkeys(p["kind"] for p in pts)):
        group = [p for p in pts if p["kind"] == kind]
        color, symbol, size = styles.get(kind, (ALT_COLORS[i % len(ALT_COLORS)], "circle", 12))
        for col, key in ((1, "ttft"), (2, "tpot")):
            xs = [p[key] * 1e3 if p[key] is not None else None for p in group]
            plane.add_trace(go.Scatter(
                x=xs, y=[p["per_gpu"] for p in group], mode="markers", name=kind, legendgroup=kind,
                showlegend=col == 1, text=[p["label"] for p in group],
                hovertemplate="%{text}<br>%{x:.1f} ms, %{y:.3g} " + unit + " per GPU<extra></extra>",
                marker={"color": color, "symbol": symbol, "size": size,
                        "line": {"width": 1, "color": "black"}}), 1, col)
    for col, key in ((1, "ttft_s"), (2, "tpot_s")):
        if slo.get(key):
            plane.add_vline(x=slo[key] * 1e3, line={"dash": "dash", "color": WINNER}, row=1, col=col,
                            annotation_text=f"SLO {slo[key] * 1e3:g} ms")
        plane.update_xaxes(title_text="milliseconds", rangemode="tozero", row=1, col=col)
    plane.update_yaxes(title_text=f"goodput per GPU ({unit})", rangemode="tozero", row=1, col=1)
    plane.update_layout(title="candidates: goodput per GPU vs latency (the chosen plan starred)",
                        height=430)
    figs = [plane]

    ranking = (plan.get("search") or {}).get("ranking") or []
    if ranking:
        win = (plan.get("capacity") or {}).get("unit")
        labels = [f"{i + 1}. {r['unit']}" for i, r in enumerate(ranking)]
        bar = go.Figure(go.Bar(
            y=labels[::-1], x=[r["goodput_per_gpu"] for r in ranking][::-1], orientation="h",
            marker={"color": [WINNER if r["unit"] == win else ALT for r in ranking][::-1]},
            hovertemplate="%{y}<br>%{x:.3g} " + unit + " per GPU<extra></extra>"))
        bar.update_layout(title="planner ranking of verified candidates (goodput per GPU)",
                          xaxis={"title": f"{unit} per GPU"}, height=120 + 34 * len(ranking),
                          yaxis={"automargin": True})
        figs.append(bar)

    probes = (plan.get("capacity") or {}).get("verify_probes") or []
    if probes:
        met = [p for p in probes if p.get("slo_met")]
        miss = [p for p in probes if not p.get("slo_met")]
        pr = go.Figure()
        for group, name, color in ((met, "SLO met", ALT), (miss, "SLO missed", OTHER)):
            pr.add_trace(go.Scatter(x=[p["load"] for p in group], y=[p["attainment"] for p in group],
                                    mode="markers", name=name, marker={"color": color, "size": 10}))
        target = slo.get("attainment")
        if target:
            pr.add_hline(y=target, line={"dash": "dash", "color": WINNER},
                         annotation_text=f"attainment target {target:g}")
        gp = (plan.get("capacity") or {}).get("unit_goodput")
        if gp:
            pr.add_vline(x=gp, line={"dash": "dot"}, annotation_text=f"goodput {gp:.3g}")
        pr.update_layout(title="the chosen unit's verifying simulations (bisection on load)",
                         xaxis={"title": f"load ({unit}) on one unit"},
                         yaxis={"title": "SLO attainment", "range": [0, 1.05]}, height=380)
        figs.append(pr)
    return figs


def _summary_table(summary: dict) -> str:
    rows = "".join(f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(str(v))}</td></tr>"
                   for k, v in summary.items())
    return f"<table class='summary'>{rows}</table>"


def write_report(path: str | Path, title: str, figures: list[go.Figure],
                 summary: dict | None = None) -> Path:
    """One self-contained HTML page: title, a key/value table, the figures (plotly.js inlined
    once, so the page renders offline). Returns the path written."""
    parts = [fig.to_html(full_html=False, include_plotlyjs=(i == 0), default_width="100%",
                         config={"displaylogo": False})
             for i, fig in enumerate(figures)]
    page = (
        "<!DOCTYPE html><html><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title><style>"
        "body{font-family:sans-serif;margin:16px 24px;color:#222}"
        "table.summary{border-collapse:collapse;margin:8px 0 16px}"
        "table.summary th,table.summary td{border:1px solid #ccc;padding:3px 8px;text-align:left;"
        "font-size:13px}table.summary th{background:#f4f4f4;font-weight:600}"
        f"</style></head><body><h2>{html.escape(title)}</h2>"
        + (_summary_table(summary) if summary else "")
        + "".join(f"<div class='figure'>{p}</div>" for p in parts)
        + "</body></html>"
    )
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(page, encoding="utf-8")
    return out


def write_plan_report(plan: dict, path: str | Path) -> Path:
    """The `serveplan plan --plot FILE.html` report of a Plan JSON."""
    pred, dep = plan.get("predicted") or {}, plan.get("deployment") or {}
    pools = "; ".join(f"{p['role']}: {p.get('replicas', 1)} x {p['gpu']} tp={p.get('tp', 1)} "
                      f"pp={p.get('pp', 1)}" for p in dep.get("pools", []))
    summary = {"model": dep.get("model"), "deployment": pools, "feasible": plan.get("feasible"),
               "p90 TTFT (ms)": _ms(pred.get("ttft_p90_s")), "p90 TPOT (ms)": _ms(pred.get("tpot_p90_s")),
               "goodput (req/s)": _num(pred.get("goodput_rps")), "GPUs": pred.get("gpus"),
               "$ per hour": _num(pred.get("cost_per_hour_usd")),
               "$ per million tokens": _num(pred.get("cost_per_mtok_usd")),
               "why": ((plan.get("why") or {}).get("winner") or {}).get("summary", "")}
    return write_report(path, f"ServePlan plan: {dep.get('model', '')}", plan_figures(plan), summary)


def write_simulate_report(result, path: str | Path, *, slo=None, title: str = "") -> Path:
    """The `serveplan simulate --plot FILE.html` report of one SimResult."""
    m = result.metrics
    summary = {"p50 / p90 / p99 TTFT (ms)": " / ".join(_ms(getattr(m, f"ttft_{q}_s")) for q in ("p50", "p90", "p99")),
               "p50 / p90 / p99 TPOT (ms)": " / ".join(_ms(getattr(m, f"tpot_{q}_s")) for q in ("p50", "p90", "p99")),
               "throughput (tok/s)": _num(m.throughput_tok_s), "goodput (req/s)": _num(m.goodput_rps),
               "SLO attainment": f"{m.slo_attainment:.1%}", "preemptions": m.preemptions,
               "KV peak": f"{m.kv_peak_fraction:.0%}",
               "completed / rejected": f"{m.num_completed} / {m.num_rejected}"}
    return write_report(path, title or "ServePlan simulation", simulate_figures(result, slo, title), summary)


def _ms(v) -> str:
    return "n/a" if v is None or not np.isfinite(v) else f"{v * 1e3:.1f}"


def _num(v) -> str:
    return "n/a" if v is None or not np.isfinite(v) else f"{v:,.4g}"
