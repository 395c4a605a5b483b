"""`serveplan calibrate --measured RUNS --format vllm-bench|sglang-bench|aiperf|aic-silicon`: the
engine parameters fitted to measured benchmark runs (`sim.runs.fit`).

Which deployment served the runs: an aic-silicon file names it in each row; a client's file
takes it from `--plan FILE` (a Plan JSON or a bare deployment), from `--model/--gpu/--tp/...`,
or from a run manifest (`--manifest FILE`, which may list many files, each with its own).

Prints, per run, the predicted (before and after calibration) and measured mean TTFT and
TPOT; the parameters with their values before and after and where each came from (a parameter
no run responds to keeps its value, and is named); and the 80% interval of held-out runs.
`--json` prints the same as one JSON document; `--plot FILE.html` writes a plotly report;
`--out calib.json` writes the profile (starting from `--calibration FILE` when given: its
kernel parameters and tables kept, the engine parameters added, each with its source).
"""

from __future__ import annotations

import math
import os
from pathlib import Path

from costmodel.errors import ServePlanError
from planner.cli.common import param_names


def load_measured_runs(measured: Path | None, fmt: str | None, manifest: Path | None,
                       deployment: dict | str | None, engine: str | None,
                       engine_version: str | None, concurrency: int | None,
                       rate: float | None) -> list:
    """The runs a `calibrate` command names: a manifest's, or one results file's."""
    from sim.runs import load_manifest, load_runs

    if manifest is not None:
        given = [n for n, v in (("--measured", measured), ("--format", fmt), ("--plan/--model/--gpu", deployment),
                                ("--engine", engine), ("--engine-version", engine_version),
                                ("--concurrency", concurrency), ("--rate", rate)) if v is not None]
        if given:
            raise ServePlanError(f"--manifest {manifest} names each file's deployment and load; "
                                 f"{', '.join(given)} cannot be given with it")
        return load_manifest(manifest)
    if measured is None:
        raise ServePlanError("give --measured PATH (with --format) or --manifest FILE")
    if fmt == "aic-silicon":
        # its rows carry their deployment and load: load_runs refuses any given beside them
        return load_runs(measured, fmt, deployment=deployment, engine=engine,
                         engine_version=engine_version, concurrency=concurrency, rate_rps=rate)
    if deployment is None:
        raise ServePlanError(f"{measured}: a {fmt} file does not say which deployment served it; "
                             "give --plan FILE, --model and --gpu (with --tp, --precision, ...), "
                             "or --manifest FILE")
    return load_runs(measured, fmt, deployment=deployment, engine=engine,
                     engine_version=engine_version, concurrency=concurrency, rate_rps=rate)


def select_runs(runs: list, model: str | None, gpu: str | None, where) -> list:
    """The runs of a file that names each run's deployment (aic-silicon) on `model` and `gpu`
    (`calibrate --gpu G` as DESIGN gives it; either may be None: any)."""
    from costmodel.hardware import load_gpu
    from costmodel.specs import load_model

    want_m = load_model(model).name if model else None
    want_g = load_gpu(gpu).name if gpu else None
    keep = [r for r in runs
            if (want_m is None or load_model(r.deployment.model).name == want_m)
            and (want_g is None or any(load_gpu(p.gpu).name == want_g for p in r.deployment.pools))]
    if not keep:
        have = sorted({f"{r.deployment.model} on {'+'.join(sorted({p.gpu for p in r.deployment.pools}))}"
                       for r in runs})
        asked = " on ".join(x for x in (want_m, want_g) if x)
        raise ServePlanError(f"{where}: no run of {asked}; the file's runs are of {', '.join(have)}")
    return keep


def deployment_arg(plan: Path | None, model: str | None, gpu: str | None, pool: dict):
    """A deployment for `load_runs` from --plan or the shorthand flags (None: neither given)."""
    flags = {k: v for k, v in pool.items() if v is not None}
    if plan is not None:
        if model or flags:
            raise ServePlanError(f"--plan {plan} holds the deployment; --model, --gpu, --tp, ... "
                                 "cannot be given with it")
        return str(plan)
    if model is None and gpu is None:
        if flags:
            raise ServePlanError(f"{', '.join('--' + k.replace('_', '-') for k in flags)} given "
                                 "without --model and --gpu")
        return None
    if model is None or gpu is None:
        raise ServePlanError("a deployment from flags needs both --model and --gpu")
    return {"model": model, "gpu": gpu, **flags}


def _ms(x) -> str:
    return "-" if x is None else f"{x * 1e3:.0f}" if x >= 0.1 else f"{x * 1e3:.1f}"


def run_table(fits) -> list[dict]:
    """One row per run: its deployment and load, measured and predicted TTFT / TPOT (s)."""
    out = []
    for f in fits:
        for r in f.rows:
            run = r.run
            p = run.deployment.pools
            row = {"gpu": f.gpu, "source": run.source, "run_id": run.run_id, "engine": run.engine,
                   "model": run.deployment.model, "tp": "/".join(str(x.tp) for x in p),
                   "workload": run.workload, "concurrency": run.concurrency, "rate_rps": run.rate_rps}
            for m in ("ttft", "tpot"):
                k = f"{m}_mean_s"
                row[f"{m}_measured_s"] = run.measured.get(k)
                row[f"{m}_before_s"] = r.before.get(k)
                row[f"{m}_after_s"] = r.after.get(k)
                row[f"{m}_held_out_s"] = r.held_out.get(k)
            out.append(row)
    return out


def parameter_table(fits, prof) -> list[dict]:
    out = []
    for f in fits:
        src = prof.gpus[f.gpu].sources
        for n in (*f.fitted, *f.not_informed):
            out.append({"gpu": f.gpu, "param": n, "start": float(getattr(f.start, n)),
                        "value": float(getattr(f.params, n)), "fitted": n in f.fitted,
                        "source": src.get(n, "")})
    return out


def _print(doc: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    c = Console(stderr=True)
    if not c.is_terminal:  # a file or a pipe: wide enough for the table, not folded at 80
        c = Console(stderr=True, width=130)
    t = Table(title="runs: mean TTFT and TPOT (ms), measured and predicted before / after calibration")
    cols = ("run", "tp", "in x out", "conc.", "TTFT meas.", "before", "after", "TPOT meas.",
            "before", "after")
    for col in cols:
        t.add_column(col, justify="left" if col in ("run", "workload") else "right")
    ids = [r["run_id"] for r in doc["runs"]]
    cut = len(os.path.commonprefix(ids)) if len(ids) > 1 else 0
    for r, rid in zip(doc["runs"], ids, strict=True):
        t.add_row(rid[cut:] or rid, r["tp"], r["workload"].split(":")[-1].replace(",", "x"),
                  str(r["concurrency"] if r["concurrency"] is not None else f"{r['rate_rps']:g} rps"),
                  _ms(r["ttft_measured_s"]), _ms(r["ttft_before_s"]), _ms(r["ttft_after_s"]),
                  _ms(r["tpot_measured_s"]), _ms(r["tpot_before_s"]), _ms(r["tpot_after_s"]))
    c.print(t)
    pt = Table(title="engine parameters")
    for col in ("gpu", "parameter", "before", "after", "source"):
        pt.add_column(col, justify="right" if col in ("before", "after") else "left")
    for p in doc["parameters"]:
        pt.add_row(p["gpu"], p["param"], f"{p['start']:.4g}", f"{p['value']:.4g}", p["source"])
    c.print(pt)
    for g in doc["gpus"]:
        b, a, h = g["before"], g["after"], g["held_out"]

        def pc(x):
            return "-" if x is None else f"{x:.1%}"
        c.print(f"{g['gpu']}: {g['runs']} runs; MAPE TTFT {pc(b['ttft'])} -> {pc(a['ttft'])}, "
                f"TPOT {pc(b['tpot'])} -> {pc(a['tpot'])} (full replays of the fitted runs); "
                f"held out (each run predicted by a fit without it): TTFT {pc(h['ttft'])}, "
                f"TPOT {pc(h['tpot'])}; {g['rounds']} rounds, {g['wall_s']:.1f} s", soft_wrap=True)
        for m, (lo, hi) in g["interval_log"].items():
            metric, _, stat = m.partition("_")  # ttft (the mean), ttft_p50, ...
            c.print(f"  80% interval of {(stat + ' ') if stat else ''}{metric.upper()}: measured / predicted in "
                    f"[{_ratio(lo)}, {_ratio(hi)}] (held-out runs)")
        if g["interval_log"]:
            c.print(f"  from {g['runs']} runs' held-out errors: the share of new runs inside such an "
                    f"interval scatters by about {coverage_spread(g['runs']):.0%} around 80%", soft_wrap=True)
        dom = doc.get("latency_domain", {}).get(g["gpu"])
        if dom:
            c.print(f"  measured on {domain_text(dom)}; plans unlike these runs are told how "
                    "(uncertainty.latency_interval_80.unlike_runs)", soft_wrap=True)
        if g.get("rejected"):
            c.print(f"  {g['rejected']}", soft_wrap=True)
        else:
            plain = [n for n in g["not_informed"] if n not in g.get("held", {})]
            if plain:
                c.print(f"  not informed by these runs (kept at their starting values): "
                        f"{', '.join(plain)}", soft_wrap=True)
            for n, why in g.get("held", {}).items():
                c.print(f"  {n} not fitted: {why}; kept at its starting value", soft_wrap=True)
    for msg in doc["messages"]:
        if not any(msg == g.get("rejected") for g in doc["gpus"]):
            c.print(f"note: {msg}", markup=False, soft_wrap=True)
    if doc.get("out"):
        c.print(f"wrote {doc['out']}")
    if doc.get("plot"):
        c.print(f"wrote {doc['plot']}")


def domain_text(dom: dict) -> str:
    """One line of what the runs behind an interval were (costmodel.run_domain)."""
    from costmodel.run_domain import span_text

    def span(k):
        return span_text(*dom[k])
    parts = [", ".join(dom.get("engines", [])), ", ".join(dom.get("models", [])),
             ", ".join(dom.get("modes", [])), "TP " + ", ".join(map(str, dom.get("tp", []))),
             ", ".join(dom.get("precisions", [])), "KV " + ", ".join(dom.get("kv_dtypes", []))]
    if "input_tokens" in dom and "output_tokens" in dom:
        parts.append(f"{span('input_tokens')} prompt and {span('output_tokens')} output tokens (means)")
    return "; ".join(p for p in parts if p and p not in ("TP ", "KV "))


# below SMALL_N runs the interval is a normal prediction interval; one standard deviation of
# its coverage of normal errors, by simulation (40,000 samples per n; benchmarks/RESULTS.md,
# 2026-12-07): wider than the order statistics' from 9 runs up
SMALL_N_SPREAD = {2: 0.287, 3: 0.224, 4: 0.189, 5: 0.164, 6: 0.148, 7: 0.135, 8: 0.124}


def coverage_spread(n: int) -> float:
    """One standard deviation of the coverage of an 80% interval taken from n exchangeable
    held-out errors (the interpolated order statistics of `sim.runs.held_out.held_out_interval`: a
    Beta(0.8 (n + 1), 0.2 (n + 1)) share of the next runs, variance 0.8 x 0.2 / (n + 2); below
    9 runs, the normal prediction interval's, SMALL_N_SPREAD)."""
    return SMALL_N_SPREAD.get(n, math.sqrt(0.8 * 0.2 / (n + 2)))


def _ratio(x: float) -> str:
    return f"{math.exp(x):.3f}"


def write_plot(path: Path, doc: dict) -> Path:
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    from planner.cli.plots import write_report

    fig = make_subplots(rows=1, cols=2, subplot_titles=("mean TTFT (ms)", "mean TPOT (ms)"))
    colors = {"before": "#9a9a9a", "after": "#d62728", "held_out": "#1f77b4"}
    for j, m in enumerate(("ttft", "tpot"), 1):
        rows = [r for r in doc["runs"] if r[f"{m}_measured_s"] is not None]
        meas = [r[f"{m}_measured_s"] * 1e3 for r in rows]
        for which, color in colors.items():
            pts = [(x, r[f"{m}_{which}_s"] * 1e3, r["run_id"]) for x, r in zip(meas, rows, strict=True)
                   if r[f"{m}_{which}_s"] is not None]
            if not pts:
                continue
            fig.add_trace(go.Scatter(x=[p[0] for p in pts], y=[p[1] for p in pts], mode="markers",
                                     name=f"{which.replace('_', '-')}", legendgroup=which,
                                     showlegend=j == 1, text=[p[2] for p in pts],
                                     marker={"color": color, "size": 7}), row=1, col=j)
        if meas:
            lo, hi = min(meas) * 0.8, max(meas) * 1.25
            fig.add_trace(go.Scatter(x=[lo, hi], y=[lo, hi], mode="lines", showlegend=False,
                                     line={"color": "#444", "dash": "dash"}), row=1, col=j)
        fig.update_xaxes(title_text="measured", type="log", row=1, col=j)
        fig.update_yaxes(title_text="predicted", type="log", row=1, col=j)
    fig.update_layout(height=520, title="predicted against measured, per run")
    summary = {f"{g['gpu']} {k}": v for g in doc["gpus"]
               for k, v in (("runs", g["runs"]), ("MAPE before", g["before"]),
                            ("MAPE after", g["after"]), ("held-out MAPE", g["held_out"]))}
    return write_report(path, "serveplan calibrate: benchmark runs", [fig], summary)


def calibrate_runs(runs: list, *, start_path: Path | None, out: Path | None, params: str | None,
                   held_out: bool, as_json: bool, plot: Path | None, source: str,
                   workers: int | None = None) -> dict:
    """Fit, write the profile and the report; returns the JSON document. `workers`: processes
    for the replays (None: up to 2, `sim.sweep.default_workers`)."""
    from costmodel.calibration import CalibrationProfile
    from sim.runs.fit import fit_runs
    from sim.runs.profile import profile_of
    from sim.sweep import check_workers, default_workers

    workers = check_workers(workers) or default_workers()

    start = CalibrationProfile.load(start_path) if start_path is not None else None
    names = param_names(params)
    log = None
    if not as_json:
        from rich.console import Console

        con = Console(stderr=True)

        def log(msg):
            con.print(msg, markup=False, soft_wrap=True)
    fits = fit_runs(runs, calibration=start, params=names, held_out=held_out, log=log, workers=workers)
    prof = profile_of(fits, base=start, source=source)
    if out is not None:
        prof.save(out)
    doc = {"runs": run_table(fits), "parameters": parameter_table(fits, prof),
           "gpus": [f.summary() for f in fits], "messages": list(prof.messages),
           "calibration_in": str(start_path) if start_path else None,
           "out": str(out) if out else None, "plot": None,
           "latency_interval": {g: c.latency_interval for g, c in prof.gpus.items()
                                if c.latency_interval},
           "latency_domain": {g: c.latency_domain for g, c in prof.gpus.items()
                              if c.latency_domain}}
    if plot is not None:
        doc["plot"] = str(write_plot(plot, doc))
    if not as_json:
        _print(doc)
    return doc
