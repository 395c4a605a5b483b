"""What `serveplan validate` shows: predicted vs measured per shape, as a table and a scatter.

`print_table(report)` writes a rich table to stderr (shape, measured, predicted with the
default parameters and after calibration, their errors, the host time an eager iteration adds
on a GPU, and how a shape was scaled down), then the Triton-vs-reference table per operator
(`kernel_summary`); `scatter_html(frame, path)` writes a plotly scatter of predicted against
measured iteration times on log axes, before and after calibration, with the y = x line;
`write_json` writes a report with NaN as null.
"""

from __future__ import annotations

from pathlib import Path

from costmodel.jsonio import dump_json


def write_json(obj, path: str | Path) -> None:
    dump_json(obj, Path(path))


def require_plotly() -> None:
    """`--plot` needs plotly (an optional dependency; a GPU machine may lack it)."""
    try:
        import plotly  # noqa: F401
    except ImportError:
        from costmodel.errors import ServePlanError

        raise ServePlanError("--plot needs plotly, which is not installed here (pip install "
                             "plotly); run without --plot") from None


def kernel_summary(kern) -> dict:
    """Per operator over the shapes: the Triton and reference kernels, their median times, and
    the median ratio reference / Triton (1.0: Triton as fast as the engine's operator)."""
    out = {}
    if kern is None or len(kern) == 0:
        return out
    for op, g in kern.groupby("op", sort=False):
        out[op] = {"shapes": int(len(g)), "triton_kernel": str(g["triton_kernel"].iat[0]),
                   "reference_kernel": ", ".join(sorted(set(g["reference_kernel"]))),
                   "triton_s": float(g["triton_s"].median()),
                   "reference_s": float(g["reference_s"].median()),
                   "ratio": float(g["ratio"].median())}
    return out


def scatter_html(df, path: str | Path, title: str = "predicted vs measured") -> None:
    """Plotly scatter of the per-shape frame of `runner.compare` (times in ms, log axes)."""
    import plotly.graph_objects as go

    fig = go.Figure()
    meas = df["measured_s"] * 1e3
    for col, name in (("predicted_default_s", "default parameters"),
                      ("predicted_calibrated_s", "calibrated")):
        if col in df:
            fig.add_trace(go.Scatter(x=meas, y=df[col] * 1e3, mode="markers", name=name,
                                     text=df["shape"], hovertemplate="%{text}<br>measured %{x:.3f} ms"
                                     "<br>predicted %{y:.3f} ms<extra></extra>"))
    lo = float(min(meas.min(), *(df[c].min() * 1e3 for c in ("predicted_default_s",
                                                           "predicted_calibrated_s") if c in df)))
    hi = float(max(meas.max(), *(df[c].max() * 1e3 for c in ("predicted_default_s",
                                                           "predicted_calibrated_s") if c in df)))
    fig.add_trace(go.Scatter(x=[lo, hi], y=[lo, hi], mode="lines", name="y = x",
                             line={"dash": "dot", "color": "grey"}))
    fig.update_layout(title=title, xaxis_title="measured iteration (ms)",
                      yaxis_title="predicted iteration (ms)", xaxis_type="log", yaxis_type="log")
    fig.write_html(str(path), include_plotlyjs="cdn")


def print_table(report: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    c = Console(stderr=True)
    t = Table(title=f"{report['model']}: plan for {', '.join(report['plan_gpus'])}, measured on "
                    f"{report['device']['name']} ({report['device']['kind']})")
    gpu = report["device"]["kind"] == "cuda"
    cols = ["shape", "measured ms", "default ms", "err", "calibrated ms", "err"]
    if gpu:
        cols += ["host ms (eager)"]
    for col in cols:
        t.add_column(col, justify="left" if col == "shape" else "right")
    for s in report["shapes"]:
        cells = [s["shape"], f"{s['measured_s'] * 1e3:.3f}", f"{s['predicted_default_s'] * 1e3:.3f}",
                 f"{s['rel_err_default']:+.0%}", f"{s['predicted_calibrated_s'] * 1e3:.3f}",
                 f"{s['rel_err_calibrated']:+.0%}"]
        t.add_row(*cells, *([f"+{s['host_s'] * 1e3:.3f}"] if gpu else []))
    m = report["iteration_mape"]
    t.add_row("MAPE", "", "", f"{m['default']:.1%}", "", f"{m['calibrated']:.1%}", *([""] if gpu else []),
              style="bold")
    c.print(t)
    by_op = (report.get("kernels") or {}).get("by_op") or {}
    if by_op:
        k = Table(title=f"Triton vs the engine's operators (CUDA graphs, median over shapes); "
                        f"fitted: {report['kernels']['fitted']}")
        for col in ("op", "Triton", "us", "reference", "us", "ref / Triton"):
            k.add_column(col, justify="right" if col in ("us", "ref / Triton") else "left")
        for op, v in by_op.items():
            k.add_row(op, v["triton_kernel"], f"{v['triton_s'] * 1e6:.1f}", v["reference_kernel"],
                      f"{v['reference_s'] * 1e6:.1f}", f"{v['ratio']:.2f}")
        c.print(k)
    for op, v in (report.get("operators") or {}).items():
        c.print(f"{op}: timed {v['timed']}; Triton kernel {v['triton'] or 'none'} ({v['how']})")
    ops = report["op_mape"]
    c.print(f"op rows: MAPE {ops['default']['mape']:.1%} with default parameters, "
            f"{ops['calibrated']['mape']:.1%} calibrated (in-sample)")
    kc = report.get("kernel_check") or {}
    if kc.get("skipped"):
        c.print(f"kernel check: {kc['skipped']}")
    elif kc:
        c.print(f"kernel check ({kc['where']}): max |triton - torch| {kc['max_abs_err']:.2e} of "
                f"{kc['scale']:.2f} -> {'ok' if kc['ok'] else 'FAILED'}")
    roof = report.get("roofline") or {}
    if roof.get("by_kernel"):
        c.print(f"fraction of the {roof['device']} roofline ({roof['timed']}), large shapes: "
                + ", ".join(f"{k} {v['large_shapes']:.0%}" for k, v in roof["by_kernel"].items()))
    for msg in report["messages"]:
        c.print(f"note: {msg}")
    c.print(f"calibration for '{report['calibration_key']}' written to {report['files']['calibration']}"
            + (" (a CPU: it calibrates the cost model to this machine, not to a GPU)"
               if report["device"]["kind"] == "cpu" else ""))
