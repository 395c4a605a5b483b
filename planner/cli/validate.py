"""`serveplan validate`: run a plan's iterations on this machine and calibrate the cost model.

    serveplan validate --plan plan.json [--device auto|cuda|cpu] [--kernels engine|triton]
        --out runs/x [--max-shapes N] [--plot] [--workload W] [--rate RPS | --concurrency N] [--json]

Writes runs/x/measurements.csv (native measured rows), iterations.csv, calibration.json (use
it with `--calibration` on any later command) and report.json (report.html with --plot).
On a CUDA GPU the profile is keyed by its preset (`h100-sxm`) and fitted to the engine-class
operators timed in CUDA graphs (`--kernels triton`: to ServePlan's Triton kernels alone); on a
machine without one it is keyed "cpu" and calibrates the cost model to this CPU. `validate` (torch, triton) is imported
only inside the command, so planning never loads them.
"""

from __future__ import annotations

from pathlib import Path

import typer

from planner.cli.common import emit_json, user_errors

DEVICES = ("auto", "cuda", "cpu")
KERNELS = ("engine", "triton")


@user_errors
def validate_cmd(
    plan: Path = typer.Option(..., "--plan", help="Plan JSON (its 'deployment'), or a deployment object"),
    device: str = typer.Option("auto", "--device", help="auto | cuda | cpu"),
    kernels: str = typer.Option("engine", "--kernels",
                                help="GPU: fit to the engine-class operators (cuBLAS, SDPA, ...; "
                                     "Triton where none) or to the Triton kernels alone"),
    out: Path = typer.Option(..., "--out", help="folder to write measurements, calibration and report"),
    max_shapes: int = typer.Option(None, "--max-shapes", help="measure at most N iteration shapes"),
    plot: bool = typer.Option(False, "--plot", help="also write report.html (plotly scatter)"),
    workload: str = typer.Option("fixed:1024,256", "--workload",
                                 help="request lengths the plan serves (fixed:ISL,OSL, a trace, ...)"),
    rate: float = typer.Option(None, "--rate", help="simulate at this rate to pick decode batches"),
    concurrency: int = typer.Option(None, "--concurrency", help="or at this concurrency"),
    passes: int = typer.Option(None, "--passes", help="measurements per shape (default: CPU 5, GPU 1)"),
    threads: int = typer.Option(1, "--threads", help="CPU: torch threads while timing"),
    as_json: bool = typer.Option(False, "--json", help="print the report as one JSON document"),
):
    """Run the plan's iteration shapes with ServePlan's kernels, time them, fit the cost model."""
    from costmodel.errors import ServePlanError

    if device not in DEVICES:
        raise ServePlanError(f"--device {device!r}; expected one of {', '.join(DEVICES)}")
    if kernels not in KERNELS:
        raise ServePlanError(f"--kernels {kernels!r}; expected one of {', '.join(KERNELS)}")
    for name, v in (("--max-shapes", max_shapes), ("--passes", passes), ("--threads", threads)):
        if v is not None and v < 1:
            raise ServePlanError(f"{name} {v}; expected an integer >= 1")
    from sim.deployment import read_plan

    doc = read_plan(plan)
    try:
        from validate.report import print_table
        from validate.runner import ValidateOptions, run_validate
    except ImportError as e:
        raise ServePlanError(f"serveplan validate needs torch and triton ({e}); install them with: "
                             "pip install serveplan[validate]") from None
    opts = ValidateOptions(device=device, workload=workload, rate=rate, concurrency=concurrency,
                           max_shapes=max_shapes, passes=passes, threads=threads, kernels=kernels)
    report = run_validate(doc, out, opts, plot=plot)
    if as_json:
        emit_json(report)
    else:
        print_table(report)


def register(app: typer.Typer) -> None:
    app.command("validate")(validate_cmd)
