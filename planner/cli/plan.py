"""`serveplan plan`: the deployment to launch for a model, a GPU inventory, a workload and SLOs.

Options -> `planner.plan(...)` -> the Plan as one JSON document (`--json`, progress on stderr),
or a readable summary (`--explain` adds the ranking and the reasons).
"""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from costmodel.jsonio import dump_json
from planner.cli.common import emit_json, output_paths, user_errors


def _progress(quiet: bool):
    last = {"screen": ""}

    def report(msg: str) -> None:
        if quiet:
            return
        if msg.startswith("screen "):  # one line per shape is noise: say it once
            if not last["screen"]:
                typer.echo("screening the space ...", err=True)
            last["screen"] = msg
            return
        typer.echo(msg, err=True)

    return report


@user_errors
def plan_cmd(
    model: str = typer.Option(..., "--model", help="preset (llama-3.1-70b, ...) or config.json path"),
    gpu: str = typer.Option(..., "--gpu", help="GPU[:COUNT][@PRICE][,GPU:COUNT...], e.g. h100:16 or h100:8@3.1,a100:16"),
    workload: str = typer.Option(..., "--workload", help="fixed:ISL,OSL | trace:PATH | azure-conv | ..."),
    rate: float = typer.Option(None, "--rate", help="target requests per second (open loop); give "
                               "--rate or --concurrency, not both; neither: the most the GPUs carry"),
    concurrency: int = typer.Option(None, "--concurrency", help="target clients (closed loop); neither "
                                    "this nor --rate: fill the fleet (the most goodput it gives)"),
    ttft_slo: float = typer.Option(..., "--ttft-slo", help="time-to-first-token target, seconds"),
    tpot_slo: float = typer.Option(..., "--tpot-slo", help="time-per-output-token target, seconds"),
    slo_percentile: float = typer.Option(90.0, "--slo-percentile", help="percentile the targets apply to"),
    attainment: float = typer.Option(0.9, "--attainment", help="fraction of requests that must meet both"),
    objective: str = typer.Option("goodput", "--objective", help="goodput (per GPU) | cost ($/h for the rate)"),
    spec_method: str = typer.Option("none", "--spec-method", help="none | draft | self | ngram"),
    draft_model: str = typer.Option(None, "--draft-model", help="draft model preset (--spec-method draft)"),
    spec_acceptance: float = typer.Option(None, "--spec-acceptance", help="per-token acceptance (default: looked up)"),
    kv_dtype: str = typer.Option("auto", "--kv-dtype", help="auto (bf16 or fp8) | bf16 | fp8, or a list bf16,fp8"),
    min_kv_budget: int = typer.Option(None, "--min-kv-budget", help="smallest per-request KV budget allowed, tokens"),
    precision: str = typer.Option(None, "--precision",
                                  help="weights: bf16 | fp8 | fp8_block | int4 | auto (or a list, bf16,fp8); "
                                  "default: the checkpoint's own (bf16; DeepSeek/Kimi block fp8, gpt-oss MXFP4 experts)"),
    max_gpus_per_replica: int = typer.Option(None, "--max-gpus-per-replica", help="default: two nodes"),
    calibration: Path = typer.Option(None, "--calibration", help="calibration profile JSON"),
    backend: str = typer.Option("local", "--backend", help="where simulations run: local | ray"),
    workers: int = typer.Option(None, "--workers", help="simulation processes (default: up to 2)"),
    requests: int = typer.Option(None, "--requests", help="fewest requests per verifying simulation (800)"),
    seed: int = typer.Option(0, "--seed", help="seed of every simulation"),
    burstiness: float = typer.Option(1.0, "--burstiness", help="gamma inter-arrival CV (1 = Poisson or the trace's own, 0 = evenly spaced)"),
    exhaustive: bool = typer.Option(False, "--exhaustive", help="simulate every configuration (slow; judges the shortcuts)"),
    time_limit: float = typer.Option(None, "--time-limit", help="seconds: stop searching then and plan "
                                     "with what was verified (search.stopped_early says so)"),
    explain: bool = typer.Option(False, "--explain", help="print the ranking and the reasons"),
    as_json: bool = typer.Option(False, "--json", help="print one JSON document"),
    out: Path = typer.Option(None, "--out", help="also write the Plan JSON to this file"),
    quiet: bool = typer.Option(False, "--quiet", help="no progress on stderr"),
    plot: Path = typer.Option(None, "--plot", help="write an HTML report: candidates on a goodput-per-GPU vs latency plane"),
):
    """Plan a deployment: parallelism, batching, disaggregation, speculative decoding, KV."""
    output_paths(out=out, plot=plot)
    from planner.planning import plan

    p = plan(model=model, gpus=gpu, workload=workload, rate=rate, concurrency=concurrency,
             ttft_slo_s=ttft_slo, tpot_slo_s=tpot_slo, slo_percentile=slo_percentile,
             attainment=attainment, objective=objective, spec_method=spec_method,
             draft_model=draft_model, spec_acceptance=spec_acceptance, kv_dtype=kv_dtype,
             min_kv_budget=min_kv_budget, precision=precision, calibration=calibration,
             backend=backend, exhaustive=exhaustive, max_gpus_per_replica=max_gpus_per_replica,
             num_requests=requests, seed=seed, burstiness_cv=burstiness, workers=workers,
             progress=_progress(quiet), time_limit_s=time_limit)
    doc = p.to_dict()
    if out is not None:
        dump_json(doc, out)
    if plot is not None:
        from planner.cli.plots import write_plan_report

        write_plan_report(doc, plot)
    if as_json:
        emit_json(doc)
        if explain:
            from rich.console import Console

            from planner.cli.explain import print_plan

            print_plan(p, explain=True, console=Console(file=sys.stderr))
        return
    from planner.cli.explain import print_plan

    print_plan(p, explain=explain)


def register(app: typer.Typer) -> None:
    app.command("plan")(plan_cmd)
