"""`serveplan cost eval` and `serveplan calibrate`: the cost model against published measurements.

- `cost eval --measured PATH --format F --gpu G [--model M] [--calibration FILE] --out CSV`
  writes every measured row (native schema) with `predicted_s` and `rel_err`, prints the MAPE
  overall and per op (a table on stderr; one JSON summary on stdout with --json).
- `calibrate --measured PATH --format F --gpu G --out calib.json` fits the parameters the rows
  inform (robust least squares, `costmodel.fit`) and writes a CalibrationProfile;
  `--fit-fraction 0.2 --seed 0` fits on a random 20% and reports on the other rows (repeats
  of one configuration all on one side: `costmodel.fit.holdout_split`);
  `--tables` adds measured-table corrections (`costmodel.tables`) built from the fitted rows.
  The fit itself runs on a seed-fixed sample of at most `--max-rows-per-group` (4000) rows of
  each GPU, op, precision and KV dtype (`costmodel.fit.sample_rows`; 0: every row).
- `calibrate --measured RUNS --format vllm-bench|sglang-bench|aiperf|aic-silicon` (or
  `--manifest FILE`): the engine parameters fitted to benchmark runs, with the deployment from
  the file, `--plan`, or `--model/--gpu/--tp/...` (planner/cli/calibrate_runs.py).
"""

from __future__ import annotations

from pathlib import Path

import typer

from planner.cli.common import (
    emit_json,
    load_calibration_opt,
    output_paths,
    param_names,
    user_errors,
)

FORMAT_HELP = "vidur | aiconfigurator | splitwise | native"
SAMPLE_PER_GROUP = 4000  # rows per (GPU, op, precision, KV dtype) the table fit samples by default
CALIBRATE_FORMAT_HELP = ("operator tables: vidur | aiconfigurator | splitwise | native; benchmark runs: "
                         "vllm-bench | sglang-bench | aiperf | aic-silicon")


def _summary(rows, predicted, fits=None) -> dict:
    """MAPE over the rows a prediction is compared with: not step rows of models without a
    preset (NaN predictions), nor batches that overflow the KV cache (`fits`, default
    `measured.kv_fit_mask(rows)`)."""
    import numpy as np

    from costmodel.fit import residual_report
    from costmodel.measured import kv_fit_mask

    fits = kv_fit_mask(rows) if fits is None else fits
    scored = np.where(fits, predicted, np.nan)
    rep = residual_report(rows["measured_s"].to_numpy(), scored, rows["op"].to_numpy())
    return {"rows": int(len(rows)), "skipped": int(len(rows) - rep["n"]),
            "skipped_kv_overflow": int((~fits).sum()), **rep}


def _print_summary(title: str, s: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title=title)
    for col in ("op", "rows", "MAPE", "p90 |rel err|"):
        t.add_column(col, justify="left" if col == "op" else "right")
    for op, v in s["by_op"].items():
        t.add_row(op, str(v["n"]), f"{v['mape']:.1%}", f"{v['p90_abs_rel_err']:.1%}")
    if s["mape"] is not None:
        t.add_row("all", str(s["n"]), f"{s['mape']:.1%}", f"{s['p90_abs_rel_err']:.1%}", style="bold")
    c = Console(stderr=True)
    c.print(t)
    for note in s.get("notes", []):
        c.print(note)
    if s["skipped"]:
        c.print(f"{s['skipped']} rows not scored: {s['skipped_kv_overflow']} whose batch does not fit "
                "the KV cache at vLLM's defaults (cannot have run as the batch named; "
                "`fits_kv` = False in the CSV), the rest a model without a preset or no measured time")


@user_errors
def eval_cmd(
    measured: Path = typer.Option(..., "--measured", help="file or folder of measurements"),
    fmt: str = typer.Option(..., "--format", help=FORMAT_HELP),
    gpu: str = typer.Option(None, "--gpu", help="GPU of rows whose data does not name one"),
    model: str = typer.Option(None, "--model", help="keep only this model's rows"),
    calibration: Path = typer.Option(None, "--calibration", help="calibration profile JSON"),
    out: Path = typer.Option(..., "--out", help="predictions CSV to write"),
    as_json: bool = typer.Option(False, "--json", help="print one JSON summary"),
):
    """Predict every measured row and print the mean absolute percentage error."""
    from costmodel.importers import load_measured
    from costmodel.importers.native import write_native
    from costmodel.measured import kv_fit_mask, predict_rows

    cal = load_calibration_opt(calibration)
    rows = load_measured(measured, fmt, gpu=gpu, model=model)
    pred = predict_rows(rows, cal)
    fits = kv_fit_mask(rows)
    write_native(rows.assign(predicted_s=pred, rel_err=pred / rows["measured_s"] - 1.0,
                             fits_kv=fits), out)
    s = {"measured": str(measured), "format": fmt, "out": str(out),
         "calibrated": cal is not None, **_summary(rows, pred, fits),
         "notes": list(rows.attrs.get("notes", []))}
    if as_json:
        emit_json(s)
    else:
        _print_summary(f"{fmt} {measured}: cost model vs measured", s)


@user_errors
def calibrate_cmd(
    measured: Path = typer.Option(None, "--measured", help="file or folder of measurements, or a "
                                  "benchmark run file"),
    fmt: str = typer.Option(None, "--format", help=CALIBRATE_FORMAT_HELP),
    gpu: str = typer.Option(None, "--gpu", help="tables: GPU of rows whose data does not name one; "
                            "runs: the deployment's GPU"),
    model: str = typer.Option(None, "--model", help="tables: keep only this model's rows; runs: the "
                              "deployment's model"),
    out: Path = typer.Option(None, "--out", help="calibration profile JSON to write"),
    calibration: Path = typer.Option(None, "--calibration", help="profile to start from (runs: its "
                                     "kernel parameters kept, the engine parameters added)"),
    fit_fraction: float = typer.Option(1.0, "--fit-fraction", help="fit on this random share of rows (repeats of a configuration stay together)"),
    seed: int = typer.Option(0, "--seed", help="seed of the --fit-fraction draw"),
    params: str = typer.Option(None, "--params", help="comma-separated parameters to fit"),
    tables: bool = typer.Option(False, "--tables/--no-tables", help="add measured-table corrections"),
    max_rows: int = typer.Option(SAMPLE_PER_GROUP, "--max-rows-per-group", help="tables: fit on at most "
                                 "this many rows of each GPU, op, precision and KV dtype (a seed-fixed "
                                 "sample; 0: every row)"),
    manifest: Path = typer.Option(None, "--manifest", help="runs: a YAML/JSON manifest of run files, "
                                  "each with its deployment"),
    plan: Path = typer.Option(None, "--plan", help="runs: Plan JSON or deployment JSON that served them"),
    tp: int = typer.Option(None, "--tp", help="runs: tensor-parallel degree"),
    pp: int = typer.Option(None, "--pp", help="runs: pipeline-parallel degree"),
    replicas: int = typer.Option(None, "--replicas", help="runs: replicas behind the client"),
    precision: str = typer.Option(None, "--precision", help="runs: weights bf16 | fp8 | int4"),
    kv_dtype: str = typer.Option(None, "--kv-dtype", help="runs: auto | bf16 | fp8 | int4"),
    max_num_seqs: int = typer.Option(None, "--max-num-seqs", help="runs: as the engine ran"),
    max_num_batched_tokens: int = typer.Option(None, "--max-num-batched-tokens",
                                               help="runs: as the engine ran"),
    engine: str = typer.Option(None, "--engine", help="runs: vllm | sglang (when the file does not say)"),
    engine_version: str = typer.Option(None, "--engine-version", help="runs: the engine's version"),
    concurrency: int = typer.Option(None, "--concurrency", help="runs: clients, when the file does not say"),
    rate: float = typer.Option(None, "--rate", help="runs: requests/s, when the file does not say"),
    held_out: bool = typer.Option(True, "--held-out/--no-held-out", help="runs: error bars from fits "
                                  "that leave runs out (leave-one-out, 10-fold past 40 runs)"),
    plot: Path = typer.Option(None, "--plot", help="runs: write an HTML report (plotly)"),
    workers: int = typer.Option(None, "--workers", help="runs: processes for the replays (default: up "
                                "to 2; the same profile in any number)"),
    as_json: bool = typer.Option(False, "--json", help="print one JSON summary"),
):
    """Fit the cost model to measured operator rows, or its engine parameters to benchmark runs
    (--format vllm-bench, sglang-bench, aiperf, aic-silicon, or --manifest), and write a profile."""
    output_paths(out=out, plot=plot)
    import numpy as np

    from costmodel.calibration import CalibrationProfile
    from costmodel.errors import ServePlanError
    from costmodel.fit import fit_profile, holdout_split, sample_rows
    from costmodel.importers import FORMATS, load_measured
    from costmodel.measured import predict_rows
    from costmodel.tables import build_tables
    from sim.runs import RUN_FORMATS

    if manifest is not None or fmt in RUN_FORMATS:
        _calibrate_from_runs(locals())
        return
    if fmt is not None and fmt not in FORMATS:
        raise ServePlanError(f"--format {fmt!r}; expected one of {CALIBRATE_FORMAT_HELP}")
    if workers is not None:
        raise ServePlanError("--workers: an option of calibration from benchmark runs (it replays "
                             "them), not of operator tables")
    if measured is None or fmt is None or out is None:
        missing = [n for n, v in (("--measured PATH", measured), ("--format F", fmt),
                                  ("--out FILE", out)) if v is None]
        raise ServePlanError(f"give {', '.join(missing)} (--format: {CALIBRATE_FORMAT_HELP})")
    if not 0.0 < fit_fraction <= 1.0:
        raise ServePlanError(f"--fit-fraction {fit_fraction}; expected a fraction in (0, 1]")
    start = load_calibration_opt(calibration)
    rows = load_measured(measured, fmt, gpu=gpu, model=model)
    if not as_json:
        from rich.console import Console

        for note in rows.attrs.get("notes", []):
            Console(stderr=True).print(note)
    # repeats of one configuration fall on one side: a held-out repeat of a fitted row is no test
    fit_mask = holdout_split(rows, fit_fraction, seed) if fit_fraction < 1.0 else np.ones(len(rows), bool)
    fit_rows = rows[fit_mask].reset_index(drop=True)
    if fit_rows.empty:
        raise ServePlanError(f"--fit-fraction {fit_fraction:g} leaves none of the {len(rows):,} rows "
                             "to fit; give a larger share")
    if max_rows < 0:
        raise ServePlanError(f"--max-rows-per-group {max_rows}; expected a whole number >= 0 (0: every row)")
    sample = sample_rows(fit_rows, max_rows, seed)
    names = param_names(params)
    prof: CalibrationProfile = fit_profile(sample, start=start, params=names, staged=True,
                                           source=f"serveplan calibrate --format {fmt} {measured}")
    if tables:
        for g, sub in fit_rows.groupby("gpu"):
            base = predict_rows(sub, prof, use_tables=False)
            prof.tables[g] = build_tables(sub, base)
    prof.save(out)
    summary = {"out": str(out), "fit_rows": int(fit_mask.sum()), "fit_sample_rows": int(len(sample)),
               "rows": int(len(rows)),
               "gpus": {g: {"params": {k: v for k, v in c.params.to_dict().items()
                                       if k in c.residuals.get("fitted", [])},
                            "fit": {k: c.residuals.get(k) for k in ("n", "mape", "p90_abs_rel_err")},
                            "uncertainty_rel": c.uncertainty_rel}
                        for g, c in prof.gpus.items() if g in set(fit_rows["gpu"])},
               "messages": list(prof.messages)}
    if fit_fraction < 1.0 and (~fit_mask).any():
        held = rows[~fit_mask].reset_index(drop=True)
        summary["held_out"] = _summary(held, predict_rows(held, prof))
    if as_json:
        emit_json(summary)
        return
    from rich.console import Console

    c = Console(stderr=True)
    if summary["fit_sample_rows"] < summary["fit_rows"]:
        c.print(f"fitted on a seed-{seed} sample of {summary['fit_sample_rows']} of the {summary['fit_rows']} "
                f"fitting rows (at most {max_rows} per GPU, op, precision and KV dtype)")
    for g, v in summary["gpus"].items():
        c.print(f"{g}: fitted {', '.join(f'{k}={x:.4g}' for k, x in v['params'].items())}; "
                f"fit MAPE {v['fit']['mape']:.1%} on {v['fit']['n']} rows")
    for msg in summary["messages"]:  # fitted parameters at a bound (costmodel.bounds)
        c.print(f"warning: {msg}", markup=False, soft_wrap=True)
    if "held_out" in summary:
        _print_summary("held-out rows", summary["held_out"])
    c.print(f"wrote {out}")


def _calibrate_from_runs(a: dict) -> None:
    """`calibrate` on benchmark runs (planner.cli.calibrate_runs)."""
    from costmodel.errors import ServePlanError
    from planner.cli.calibrate_runs import (
        calibrate_runs,
        deployment_arg,
        load_measured_runs,
        select_runs,
    )

    table_only = [f"--{k.replace('_', '-')}" for k in ("fit_fraction", "tables")
                  if a[k] != {"fit_fraction": 1.0, "tables": False}[k]]
    if a["max_rows"] != SAMPLE_PER_GROUP:
        table_only.append("--max-rows-per-group")
    if table_only:
        raise ServePlanError(f"{', '.join(table_only)}: options of operator-table calibration, not of benchmark runs")
    pool = {k: a[k] for k in ("tp", "pp", "replicas", "precision", "kv_dtype", "max_num_seqs",
                              "max_num_batched_tokens")}
    if a["fmt"] == "aic-silicon" and a["manifest"] is None:
        # its rows name their deployments: --model and --gpu select rows, nothing else is given
        extra = [f"--{k.replace('_', '-')}" for k, v in pool.items() if v is not None]
        if extra or a["plan"]:
            raise ServePlanError(f"{a['measured']}: an aic-silicon file names each run's deployment "
                                 f"in its rows; {', '.join(extra + ['--plan'] * bool(a['plan']))} "
                                 "cannot be given (--model and --gpu select its runs)")
        runs = select_runs(load_measured_runs(a["measured"], a["fmt"], None, None, a["engine"],
                                              a["engine_version"], a["concurrency"], a["rate"]),
                           a["model"], a["gpu"], a["measured"])
    else:
        dep = deployment_arg(a["plan"], a["model"], a["gpu"], pool)
        runs = load_measured_runs(a["measured"], a["fmt"], a["manifest"], dep, a["engine"],
                                  a["engine_version"], a["concurrency"], a["rate"])
    what = f"--manifest {a['manifest']}" if a["manifest"] else f"--format {a['fmt']} {a['measured']}"
    doc = calibrate_runs(runs, start_path=a["calibration"], out=a["out"], params=a["params"],
                         held_out=a["held_out"], as_json=a["as_json"], plot=a["plot"],
                         source=f"serveplan calibrate {what}", workers=a["workers"])
    if a["as_json"]:
        emit_json(doc)


def register(app: typer.Typer) -> None:
    from planner.cli.cost import cost_app

    cost_app.command("eval")(eval_cmd)
    app.command("calibrate")(calibrate_cmd)
