"""`serveplan sweep`: simulate a grid of deployments x rates, locally or on Ray."""

from __future__ import annotations

import itertools
import sys
from pathlib import Path

import typer

from costmodel.errors import ServePlanError
from planner.cli.common import emit_json, load_calibration_opt, user_errors
from sim.slo import DEFAULT_TPOT_SLO_S, DEFAULT_TTFT_SLO_S


def _ints(opt: str, text: str) -> list[int]:
    try:
        vals = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        vals = []
    if not vals or any(v < 1 for v in vals):
        raise ServePlanError(f"{opt} {text!r}; expected a comma-separated list of integers >= 1")
    return vals


def _floats(opt: str, text: str) -> list[float]:
    try:
        vals = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        vals = []
    if not vals or any(not v > 0 for v in vals):
        raise ServePlanError(f"{opt} {text!r}; expected a comma-separated list of numbers > 0")
    return vals


def progress_callback(enabled: bool, description: str):
    """A rich progress bar on stderr, or None when disabled (--json, or stderr not a terminal)."""
    if not enabled or not sys.stderr.isatty():
        return None, None
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    prog = Progress("[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), console=Console(stderr=True), transient=True)
    task = prog.add_task(description, total=None)

    def cb(done: int, total: int) -> None:
        prog.update(task, completed=done, total=total)

    return prog, cb


@user_errors
def sweep_cmd(
    model: str = typer.Option(..., "--model"),
    gpu: str = typer.Option(..., "--gpu"),
    workload: str = typer.Option(..., "--workload"),
    tp: str = typer.Option("1", "--tp", help="comma-separated, e.g. 1,2,4"),
    pp: str = typer.Option("1", "--pp"),
    replicas: str = typer.Option("1", "--replicas"),
    max_num_seqs: str = typer.Option(None, "--max-num-seqs", help="comma-separated; default: engine default"),
    kv_dtype: str = typer.Option("auto", "--kv-dtype", help="comma-separated: auto,fp8"),
    precision: str = typer.Option("bf16", "--precision"),
    rate: str = typer.Option(None, "--rate", help="comma-separated request rates"),
    concurrency: int = typer.Option(None, "--concurrency"),
    requests: int = typer.Option(1000, "--requests"),
    seed: int = typer.Option(0, "--seed"),
    ttft_slo: float = typer.Option(DEFAULT_TTFT_SLO_S, "--ttft-slo"),
    tpot_slo: float = typer.Option(DEFAULT_TPOT_SLO_S, "--tpot-slo"),
    backend: str = typer.Option("local", "--backend", help="local | ray (RAY_ADDRESS picks a cluster)"),
    workers: int = typer.Option(None, "--workers", help="local: processes; ray: CPUs of a local Ray"),
    calibration: Path = typer.Option(None, "--calibration"),
    out: Path = typer.Option(None, "--out", help="write the results table (CSV)"),
    as_json: bool = typer.Option(False, "--json"),
):
    """Simulate every combination of the listed knobs (x every rate) and tabulate the metrics."""
    from sim.deployment import Deployment
    from sim.slo import SLO
    from sim.sweep import sweep
    from sim.workload import parse_workload

    if requests < 1:
        raise ServePlanError(f"--requests {requests}; expected >= 1")
    rates = _floats("--rate", rate) if rate else None
    wl = parse_workload(workload, rate=rates[0] if rates else None, concurrency=concurrency)
    seqs = _ints("--max-num-seqs", max_num_seqs) if max_num_seqs else [None]
    kvs = [k.strip() for k in kv_dtype.split(",") if k.strip()]
    deps = []
    for t, p, r, s, kv in itertools.product(_ints("--tp", tp), _ints("--pp", pp),
                                            _ints("--replicas", replicas), seqs, kvs):
        deps.append(Deployment.colocated(model, gpu, tp=t, pp=p, replicas=r, precision=precision,
                                         max_num_seqs=s, kv_dtype=kv))
    prog, cb = progress_callback(not as_json, f"sweep ({backend})")
    if prog:
        prog.start()
    try:
        df = sweep(deps, wl, num_requests=requests, seed=seed, rates=rates,
                   slo=SLO(ttft_slo, tpot_slo), calibration=load_calibration_opt(calibration),
                   backend=backend, workers=workers, progress=cb)
    finally:
        if prog:
            prog.stop()
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        df.to_csv(out, index=False)
    if as_json:
        emit_json({"runs": df.to_dict(orient="records"), "backend": backend,
                   "failed": int(df["error"].notna().sum())})
        return
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"sweep of {model} on {gpu}: {len(df)} runs on {backend}")
    df = df.assign(pools=df["pools"].str.replace("colocated:", "").str.replace(f"{df['pools'].iloc[0].split(':')[1]}:", ""))
    cols = ["pools", "rate", "ttft_p90_s", "tpot_p90_s", "throughput_tok_s", "goodput_rps", "error"]
    for c in cols:
        t.add_column(c)
    for _, row in df.iterrows():
        t.add_row(*[("" if row.get(c) is None else (f"{row[c]:.4g}" if isinstance(row.get(c), float) else str(row[c])))
                    for c in cols])
    Console().print(t)


def register(app: typer.Typer) -> None:
    app.command("sweep")(sweep_cmd)
