"""A plan's error bars from its calibration profile: goodput at one sigma of the step-time
residuals, the 80% TTFT and TPOT intervals of engine runs a fit left out (per GPU of the pools
that set each metric), and how the plan differs from those runs (costmodel.run_domain).
`serveplan simulate` and the service's /v1/simulate report the same intervals around a
simulation's latencies (`simulated_metrics`)."""

from __future__ import annotations

import math

import numpy as np

from costmodel.calibration import gpu_key
from costmodel.run_domain import outside

# the statistics a plan's ranges are given for (a plan predicts up to p90); simulate adds p99
PLAN_STATS = ("mean", "p50", "p90")
SIMULATE_STATS = (*PLAN_STATS, "p99")


def plan_uncertainty(cal, dep, win, m: dict | None = None, req=None) -> dict | None:
    """The calibration's error bars around the plan: goodput at one sigma of its step-time
    residuals, and 80% intervals of the predicted TTFT and TPOT from engine runs the fit left
    out (`latency_intervals`), with how the plan differs from those runs (`unlike_runs`)."""
    if cal is None:
        return None
    out: dict = {}
    u = max(cal.uncertainty_for(p.gpu) for p in dep.pools)
    if u > 0:
        g = win.goodput
        out = {"step_time_rel_1sigma": u,
               "unit_goodput_range": [g / (1 + u), g / (1 - u) if u < 1 else None],
               "note": "goodput scales about inversely with step time; range at one sigma of the "
                       "calibration's step-time residuals"}
    lengths = None
    if req is not None:
        shape = req.workload_shape()
        lengths = (float(np.mean(shape.input_tokens)), float(np.mean(shape.output_tokens)))
    li = interval_block(cal, dep, m, lengths)
    if li:
        out["latency_interval_80"] = li
    return out or None


def interval_block(cal, dep, m: dict | None, lengths=None, stats=PLAN_STATS) -> dict | None:
    """The `latency_interval_80` block of a plan (or of `serveplan simulate`): the 80% TTFT and
    TPOT intervals around the predictions `m` (`latency_intervals`), what is missing, and, given
    the workload's mean prompt and output `lengths`, how the deployment differs from the runs
    behind them (`unlike_runs`). None when the calibration has no interval."""
    if cal is None:
        return None
    latency, missing = latency_intervals(cal, dep, m, stats)
    if not (latency or missing):
        return None
    out = {**latency,
           **({"note": NOTE} if latency else {}),
           **({"missing": missing} if missing else {})}
    unlike = unlike_runs(cal, dep, *lengths) if latency and lengths is not None else []
    if unlike:
        out["unlike_runs"] = unlike
        out["unlike_runs_note"] = (
            "the deployment differs from the runs behind the interval as listed: no held-out run "
            "tested the fit there, and the error can be larger (fitted at TP 2 and 4, one "
            "fit's interval covered 3 of 9 runs at TP 8: costmodel.run_domain)")
    return out


def simulated_metrics(cal, dep, res) -> tuple[dict, dict | None]:
    """`serveplan simulate --json` (and the service's /v1/simulate): the simulation's
    RunMetrics, plus `uncertainty.latency_interval_80` (`interval_block` around its means and
    percentiles, the workload's lengths from its requests) when the profile has run intervals.
    Returns (the document, the block or None)."""
    out = res.metrics.to_dict()
    lengths = None
    if cal is not None and res.input_len is not None and len(res.input_len):
        lengths = (float(np.mean(res.input_len)), float(np.mean(res.output_len)))
    block = interval_block(cal, dep, out, lengths, SIMULATE_STATS)
    if block:
        out["uncertainty"] = {"latency_interval_80": block}
    return out, block


def unlike_runs(cal, dep, isl: float, osl: float) -> list[str]:
    """How the deployment differs from the runs behind each interval it reports, per GPU (the
    interval is honest for deployments like those runs: costmodel.run_domain), for a workload
    of mean prompt `isl` and output `osl` tokens."""
    lines = []
    for gpu in dict.fromkeys(gpu_key(p.gpu) for p in dep.pools):  # `h100` and `h100-sxm` are one
        c = cal.calibration_for(gpu)
        if c is None or not c.latency_domain:
            continue
        pools = [(p.role, p.tp, p.pp, p.spec.enabled, p.precision, p.kv_dtype)
                 for p in dep.pools if gpu_key(p.gpu) == gpu]
        lines += [f"{gpu}: {x}" for x in outside(c.latency_domain, engine=dep.engine, model=dep.model,
                                                 mode=dep.mode, pools=pools, input_tokens=isl,
                                                 output_tokens=osl)]
    return lines


NOTE = ("80% of held-out benchmark runs had their measured value within this range of the "
        "prediction (the calibration's latency_interval, from runs the fit left out), for each "
        "statistic in {metric}_measured_stats; a p50 or p90 not listed there applies the mean's "
        "ratio ({metric}_log_ratio) to the predicted percentile, which no run tested")

# the pools whose GPUs set a metric: prompts run on prefill pools, decodes on decode pools
METRIC_ROLES = {"ttft": ("prefill", "colocated"), "tpot": ("decode", "colocated")}


def latency_intervals(cal, dep, m: dict | None, stats=PLAN_STATS) -> tuple[dict, list[str]]:
    """({metric}_s, {metric}_log_ratio and {metric}_measured_stats of TTFT and TPOT, what is
    missing): each metric's interval spans those of the GPUs of the pools that set it
    (METRIC_ROLES); a metric one of those GPUs has no interval for gets none, and a line saying
    which (an interval fitted on another GPU says nothing of this one's). A percentile's range
    comes from the runs' own held-out errors of it where every such GPU has them (its key in
    `{metric}_measured_stats`), else from the mean's ratio (`{metric}_log_ratio`)."""
    latency, missing = {}, []
    if m is None or not any(c.latency_interval for c in cal.gpus.values()):
        return latency, missing
    for metric, roles in METRIC_ROLES.items():
        pools = [p for p in dep.pools if p.role in roles] or list(dep.pools)
        cals, lacking = [], []
        for p in pools:
            c = cal.calibration_for(p.gpu)
            if c is not None and metric in c.latency_interval:
                cals.append(c.latency_interval)
            else:
                lacking.append(f"{p.gpu} ({p.role})")
        if lacking:
            missing.append(f"no {metric.upper()} interval: the calibration has none for "
                           + ", ".join(dict.fromkeys(lacking)))
            continue
        own = ["mean"] + [st for st in stats[1:] if all(f"{metric}_{st}" in li for li in cals)]
        around = {}
        for stat in stats:
            k = f"{metric}_{stat}_s"
            if k not in m or m[k] is None or not math.isfinite(float(m[k])):
                continue  # no prediction (no request finished, one output token): no range
            key = metric if stat not in own[1:] else f"{metric}_{stat}"
            lo, hi = min(li[key][0] for li in cals), max(li[key][1] for li in cals)
            around[stat] = [float(m[k]) * math.exp(lo), float(m[k]) * math.exp(hi)]
        if around:
            latency[f"{metric}_s"] = around
        latency[f"{metric}_log_ratio"] = [min(li[metric][0] for li in cals), max(li[metric][1] for li in cals)]
        latency[f"{metric}_measured_stats"] = own
    return latency, missing
