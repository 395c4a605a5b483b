"""End-to-end fidelity: predicted mean TTFT and TPOT against real engine runs, uncalibrated.

Every run in `../shared/data/e2e_runs/` (AIConfigurator's silicon measurements: vLLM 0.12
serving Qwen3-32B on H100; SGLang 0.5.x serving Qwen3-32B on H100 and Llama-3.1-8B on H200) is
simulated as it ran: its model, GPU, TP, precision, fixed input/output lengths and client
concurrency, with `sim.runs.replay` (10 waves of the clients, at least 200 requests, warm-up
and cool-down excluded), on the project's defaults (no calibration). Nothing here is fitted.

Before any error is counted, each run's measured latencies are checked against the hardware
(`sim.runs.physics`): a run whose latencies need more memory traffic or compute than the GPUs'
datasheet peaks allow was not made as its row says, and is reported apart, never scored.

Per (engine, GPU, model, precision) group: runs, TPOT and TTFT MAPE, median ratio
(predicted / measured) and p90 |relative error|. Writes benchmarks/out/e2e_accuracy.json and
a plotly scatter of predicted against measured (benchmarks/out/e2e_accuracy.html).

`--ablation` replays the vLLM runs once per mechanism with that mechanism taken back to what
the model did before 2026-12-04 (one at a time, then all together): the evidence for each.

Run: `.venv/bin/python benchmarks/e2e_accuracy.py [--engine vllm|sglang] [--calibration FILE]
[--runs CSV ...] [--ablation]` (default: every `aic_silicon*.csv` in `../shared/data/e2e_runs`).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from costmodel.arch_defaults import default_efficiencies  # noqa: E402
from costmodel.calibration import CalibrationProfile, GpuCalibration  # noqa: E402
from costmodel.paths import shared_dir  # noqa: E402
from sim.runs import load_runs  # noqa: E402
from sim.runs.physics import work_bounds  # noqa: E402
from sim.runs.replay import replay  # noqa: E402

TARGETS = {"vllm h100-sxm qwen3-32b": {"tpot": 0.10, "ttft": 0.25}}  # the targets


def _group(run) -> str:
    p = run.deployment.pools[0]
    mode = "" if run.deployment.mode == "colocated" else " disagg"
    return f"{run.engine} {p.gpu} {run.deployment.model}{mode}"


def _stats(pred: np.ndarray, meas: np.ndarray) -> dict:
    r = pred / meas
    e = np.abs(r - 1)
    return {"mape": float(e.mean()), "median_ratio": float(np.median(r)),
            "p90_abs_err": float(np.quantile(e, 0.9))}


def run_files(paths: list[str] | None) -> list[Path]:
    if paths:
        out = []
        for p in map(Path, paths):
            out += sorted(p.glob("aic_silicon*.csv")) if p.is_dir() else [p]
        return out
    return sorted((shared_dir() / "data" / "e2e_runs").glob("aic_silicon*.csv"))


def _with_pool(run, **kw):
    pools = tuple(dataclasses.replace(p, **kw) for p in run.deployment.pools)
    return dataclasses.replace(run, deployment=dataclasses.replace(run.deployment, pools=pools))


def _engine_params(**kw):
    """A profile holding the H100's defaults with `kw` changed (what a mechanism was before)."""
    return CalibrationProfile(gpus={"h100-sxm": GpuCalibration(
        dataclasses.replace(default_efficiencies("h100-sxm"), **kw))})


BEFORE = {  # each mechanism as the model had it before 2026-12-04
    "collectives: the generic latency model, not vLLM's graph all-reduce":
        {"comm_base_s": 0.0, "comm_latency_s": 8e-6, "comm_bw_eff": 0.70},
    "host time: 2 ms + 8 us/seq, not Vidur's 0.81 ms + 37.5 us/seq":
        {"host_overhead_s": 2e-3, "host_per_seq_s": 8e-6},
    "no API server: a re-issued request joins the step starting as it arrives": {"frontend_s": 0.0},
}
RUN_CHANGES = {  # how the runs were made, taken back to the defaults
    "vLLM's default token budget (8192), not AIConfigurator's batch + ISL + 1500":
        lambda r: _with_pool(r, max_num_batched_tokens=None),
    "fp8 runs with a bf16 KV cache": lambda r: _with_pool(r, kv_dtype="auto"),
}


def ablation(files: list[Path]) -> list[dict]:
    runs = [r for f in files for r in load_runs(f, "aic-silicon")
            if r.engine == "vllm" and r.deployment.pools[0].gpu == "h100-sxm"]
    variants = [("as shipped", None, None, False)]
    variants += [(k, _engine_params(**v), None, False) for k, v in BEFORE.items()]
    variants += [(k, None, f, False) for k, f in RUN_CHANGES.items()]
    variants.append(("steady state only: first and last 10% of requests left out", None, None, True))
    every = {k: v for d in BEFORE.values() for k, v in d.items()}
    variants.append(("all of the above: the model before", _engine_params(**every), None, True))
    out = []
    for name, cal, change, trim in variants:
        pred_ttft, pred_tpot, meas_ttft, meas_tpot = [], [], [], []
        for run in runs:
            if name.startswith("all of"):
                for f in RUN_CHANGES.values():
                    run = f(run)
            elif change is not None:
                run = change(run)
            if not work_bounds(run).feasible:
                continue
            kw = {"warmup_fraction": 0.1, "cooldown_fraction": 0.1} if trim else {}
            p = replay(run, calibration=cal, **kw).predicted
            pred_ttft.append(p["ttft_mean_s"])
            pred_tpot.append(p["tpot_mean_s"])
            meas_ttft.append(run.measured["ttft_mean_s"])
            meas_tpot.append(run.measured["tpot_mean_s"])
        row = {"variant": name, "runs": len(meas_ttft),
               "tpot": _stats(np.array(pred_tpot), np.array(meas_tpot)),
               "ttft": _stats(np.array(pred_ttft), np.array(meas_ttft))}
        out.append(row)
        print(f"{name:84} {row['runs']:3d}  TPOT {row['tpot']['mape'] * 100:5.1f}% "
              f"(x{row['tpot']['median_ratio']:.2f})  TTFT {row['ttft']['mape'] * 100:5.1f}% "
              f"(x{row['ttft']['median_ratio']:.2f})", flush=True)
    return out


def run_all(files: list[Path], engine: str | None, calibration) -> pd.DataFrame:
    rows = []
    for path in files:
        f = path.name
        for run in load_runs(path, "aic-silicon"):
            if engine and run.engine != engine:
                continue
            b = work_bounds(run)
            t0 = time.perf_counter()
            rep = replay(run, calibration=calibration)
            p = run.deployment.pools[0]
            isl, osl = run.lengths
            rows.append({
                "file": f, "run_id": run.run_id, "group": _group(run), "engine": run.engine,
                "version": run.engine_version, "precision": p.precision, "tp": p.tp,
                "isl": isl, "osl": osl, "concurrency": run.concurrency,
                "ttft_meas_s": run.measured["ttft_mean_s"], "ttft_pred_s": rep.predicted["ttft_mean_s"],
                "tpot_meas_s": run.measured["tpot_mean_s"], "tpot_pred_s": rep.predicted["tpot_mean_s"],
                "feasible": b.feasible, "compute_fraction": b.compute_fraction,
                "memory_fraction": b.memory_fraction, "memory_fraction_fp8_kv": b.memory_fraction_fp8_kv,
                "requests": rep.num_requests, "wall_s": time.perf_counter() - t0,
            })
    return pd.DataFrame(rows)


def summarise(df: pd.DataFrame) -> list[dict]:
    out = []
    for g, d in df.groupby("group", sort=True):
        ok = d[d.feasible]
        row = {"group": g, "runs": int(len(d)), "scored": int(len(ok)),
               "infeasible": int((~d.feasible).sum())}
        for k in ("tpot", "ttft"):
            if len(ok):
                row[k] = _stats(ok[f"{k}_pred_s"].to_numpy(), ok[f"{k}_meas_s"].to_numpy())
        if g in TARGETS:
            row["targets"] = TARGETS[g]
        out.append(row)
    return out


def _scatter(df: pd.DataFrame, path: Path) -> None:
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=1, cols=2, subplot_titles=("TTFT (ms)", "TPOT (ms)"))
    for j, k in enumerate(("ttft", "tpot"), start=1):
        for g, d in df.groupby("group"):
            text = [f"{r.run_id}<br>tp {r.tp} {r.isl}/{r.osl} c{r.concurrency}"
                    f"{'' if r.feasible else '<br>infeasible as described'}" for r in d.itertuples()]
            fig.add_trace(go.Scatter(x=d[f"{k}_meas_s"] * 1e3, y=d[f"{k}_pred_s"] * 1e3, mode="markers",
                                     name=g, legendgroup=g, showlegend=j == 1, text=text,
                                     marker={"symbol": ["circle" if f else "x" for f in d.feasible]}),
                          row=1, col=j)
        lo = float(min(df[f"{k}_meas_s"].min(), df[f"{k}_pred_s"].min()) * 1e3)
        hi = float(max(df[f"{k}_meas_s"].max(), df[f"{k}_pred_s"].max()) * 1e3)
        fig.add_trace(go.Scatter(x=[lo, hi], y=[lo, hi], mode="lines", line={"dash": "dot", "color": "grey"},
                                 showlegend=False), row=1, col=j)
        fig.update_xaxes(type="log", title_text="measured", row=1, col=j)
        fig.update_yaxes(type="log", title_text="predicted", row=1, col=j)
    fig.update_layout(title="ServePlan uncalibrated vs real engine runs (AIConfigurator silicon)")
    fig.write_html(str(path), include_plotlyjs=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--engine", choices=("vllm", "sglang"))
    ap.add_argument("--calibration", help="a calibration profile (default: none, the project's defaults)")
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "out"))
    ap.add_argument("--runs", nargs="+", help="silicon CSVs or folders (default: ../shared/data/e2e_runs)")
    ap.add_argument("--runs-csv", help="also write one row per run to this CSV")
    ap.add_argument("--ablation", action="store_true",
                    help="the vLLM H100 runs once per mechanism taken back to before; nothing else")
    a = ap.parse_args(argv)
    if a.ablation:
        out = Path(a.out)
        out.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        rows = ablation(run_files(a.runs))
        (out / "e2e_ablation.json").write_text(json.dumps({"variants": rows, "wall_s": time.perf_counter() - t0},
                                                          indent=1))
        print(f"wrote {out / 'e2e_ablation.json'}")
        return 0
    cal = None
    if a.calibration:
        from costmodel.calibration import load_calibration

        cal = load_calibration(a.calibration)
    t0 = time.perf_counter()
    df = run_all(run_files(a.runs), a.engine, cal)
    summ = summarise(df)
    wall = time.perf_counter() - t0

    print(f"{'group':40} {'runs':>4} {'scored':>6}  {'TPOT MAPE':>9} {'med r':>6} {'p90':>6}  "
          f"{'TTFT MAPE':>9} {'med r':>6} {'p90':>6}")
    for s in summ:
        line = f"{s['group']:40} {s['runs']:4d} {s['scored']:6d}"
        for k in ("tpot", "ttft"):
            st = s.get(k)
            line += (f"  {st['mape'] * 100:8.1f}% {st['median_ratio']:6.2f} {st['p90_abs_err'] * 100:5.0f}%"
                     if st else "  " + "-" * 24)
        print(line)
    bad = df[~df.feasible]
    for r in bad.itertuples():
        print(f"infeasible as described: {r.run_id}: compute {r.compute_fraction:.2f}, memory "
              f"{r.memory_fraction:.2f} of the GPUs' peaks (fp8 KV: {r.memory_fraction_fp8_kv:.2f})")
    print(f"{len(df)} runs simulated in {wall:.0f} s")

    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    doc = {"groups": summ, "runs": df.to_dict("records"), "wall_s": wall,
           "calibration": a.calibration}
    (out / "e2e_accuracy.json").write_text(json.dumps(doc, indent=1, default=float))
    _scatter(df, out / "e2e_accuracy.html")
    if a.runs_csv:
        df.to_csv(a.runs_csv, index=False)
    print(f"wrote {out / 'e2e_accuracy.json'} and {out / 'e2e_accuracy.html'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
