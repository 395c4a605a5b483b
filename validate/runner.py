"""`serveplan validate`: a plan's iterations on this device -> measurements -> calibration.

    plan JSON ("deployment" key, or a bare deployment)
      -> shapes.derive_shapes          what each pool will run (prefill, decode, verify, mixed)
      -> budget.fit_to_device          fewer layers / smaller batches when the device is small
      -> check.check_kernels           Triton kernels == torch operators on a probe iteration
      -> measure.measure_shape         per-operator rows (native format) + iteration times
      -> costmodel.fit.fit_profile     the cost model's parameters for this device
      -> compare                       predicted vs measured per shape, before and after

On a CUDA GPU every operator is timed inside CUDA graphs twice: with the Triton kernels and
with the engine-class operators (cuBLAS, torch SDPA, torch / vLLM RMSNorm, vLLM's ops when
installed: `validate.reference`); `--kernels engine` (the default) fits the profile to the
latter, Triton standing in where no reference exists (paged decode with a KV budget, fp8-KV
decode, spec verify, chunked prefill over a prefix), `--kernels triton` to the Triton kernels
alone. The report shows both per operator, and the host time an eager iteration adds. On a
CPU the torch versions of the operators are timed (the kernels only run, interpreted, in the
check). The profile is keyed by the measuring device: a GPU preset (`h100-sxm`), or "cpu",
whose measured HardwareSpec travels inside the profile, so a CPU run calibrates the cost
model to this CPU and says so.

The iteration comparison is of compute: the cost model's step minus its collectives, PP
sends, host overhead and sampler, none of which one device running per-GPU shapes executes.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd

from costmodel.errors import ServePlanError
from costmodel.hardware import GPU_PRESETS, HardwareSpec
from costmodel.specs import load_model
from validate.devices import ran_kv_dtype
from validate.measure import ShapeMeasurement
from validate.shapes import IterationShape

NOT_RUN = ("attn_allreduce", "mlp_allreduce", "logits_gather", "pp_send", "host_overhead", "sampler")
KERNEL_SETS = ("engine", "triton")


@dataclass(frozen=True)
class ValidateOptions:
    device: str = "auto"  # auto | cuda | cpu
    workload: str = "fixed:1024,256"  # lengths of the requests the plan serves
    rate: float | None = None  # with a rate or a concurrency, the simulator picks decode batches
    concurrency: int | None = None
    max_shapes: int | None = None
    threads: int = 1  # CPU: torch threads while timing
    layer_time_s: float = 0.25  # CPU: time budget of one layer of one shape
    seed: int = 0
    passes: int | None = None  # measurements of each shape at different times; None: CPU 5, CUDA 1
    tables: bool = True  # add measured-table corrections (costmodel.tables) to the profile
    check: bool = True  # run the kernel check
    timer: object | None = None  # a validate.timing.Timer to use instead of the default
    kernels: str = "engine"  # GPU: fit to the engine-class operators, or to the Triton kernels


@dataclass
class Measurements:
    device: str  # cuda | cpu
    hardware: HardwareSpec
    hardware_how: str
    model: str  # its name
    model_ref: str  # as the plan names it (a preset or a config.json path)
    plan_gpus: list[str]
    results: list[ShapeMeasurement]
    messages: list[str] = field(default_factory=list)
    kernel_check: dict | None = None
    precision: dict[str, str] = field(default_factory=dict)  # plan precision -> what ran
    kv_dtype: dict[str, str] = field(default_factory=dict)  # plan KV dtype -> what ran
    kernels: str = "torch"  # what the rows and iterations time: engine | triton | torch (CPU)
    operators: dict[str, dict] = field(default_factory=dict)  # MoE plans: what ran per operator

    def compare_rows(self) -> pd.DataFrame:
        """Per operator and shape: Triton and engine-class reference times (GPU runs)."""
        return pd.DataFrame([c for res in self.results for c in res.compare])

    def rows(self) -> pd.DataFrame:
        from costmodel.importers import tidy

        return tidy(pd.DataFrame([r for res in self.results for r in res.rows]))


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _ran_precision(precision: str, device: str, messages: list[str]) -> str:
    if precision == "bf16":
        return "bf16"
    if precision == "fp8" and device == "cuda":
        import torch

        from validate.kernels._device import fp8_supported

        if fp8_supported(torch.device("cuda")):
            return "fp8"
    messages.append(f"precision {precision}: no {precision} kernel on this device; GEMMs run in bf16")
    return "bf16"


def measure_plan(plan: dict, opts: ValidateOptions = ValidateOptions(),
                 log: Callable[[str], None] = _stderr) -> Measurements:
    """Derive the plan's shapes, fit them to the device, check the kernels, time everything."""
    from sim.deployment import plan_deployment
    from sim.workload import parse_workload
    from validate.check import prepare_interpreter
    from validate.kernels import pick_device
    from validate.shapes import derive_shapes, operating_point

    if opts.kernels not in KERNEL_SETS:
        raise ServePlanError(f"--kernels {opts.kernels!r}; expected one of {', '.join(KERNEL_SETS)}")
    dep = plan_deployment(plan)
    model = load_model(dep.model)
    try:
        device = pick_device(opts.device)
    except ValueError as e:
        raise ServePlanError(f"--device {opts.device}: {e}") from None
    skip_check = prepare_interpreter(device) if opts.check else "kernel check not asked for"
    from validate.devices import device_spec
    from validate.timing import Timer, cpu_threads

    msgs: list[str] = []
    with cpu_threads(opts.threads):
        hw, how = device_spec(device, opts.threads)
        log(f"device: {how}")
        rng = np.random.default_rng(opts.seed)
        lengths = parse_workload(opts.workload, concurrency=1)
        running = None
        if opts.rate is not None or opts.concurrency is not None:
            load = parse_workload(opts.workload, rate=opts.rate, concurrency=opts.concurrency)
            running = operating_point(dep.resolved(), load, seed=opts.seed)
            msgs.append(f"decode batches from a simulation of {opts.workload} at "
                        + (f"{opts.rate} req/s" if opts.rate is not None else f"concurrency {opts.concurrency}")
                        + ": running sequences (p50, p90) " + ", ".join(f"{k} {v}" for k, v in running.items()))
        shapes = derive_shapes(dep, lengths, rng=rng, running=running, max_shapes=opts.max_shapes)
        if device != "cuda":
            msgs.append("timed: the torch operators on this CPU (no CUDA graphs, no engine-class "
                        f"references; --kernels {opts.kernels} changes nothing here)")
        meas = Measurements(device, hw, how, model.name, dep.model,
                            sorted({p.gpu for p in dep.resolved().pools}), [], msgs,
                            kernels=opts.kernels if device == "cuda" else "torch")
        timer = opts.timer or Timer(device)
        _run_groups(meas, shapes, opts, timer, skip_check, log)
    return meas


def _run_groups(meas: Measurements, shapes: list[IterationShape], opts: ValidateOptions, timer,
                skip_check: str | None, log) -> None:
    from validate.budget import device_budget, fit_to_device
    from validate.check import check_kernels
    from validate.measure import combine_passes, measure_shape
    from validate.model_runner import ModelRunner
    from validate.reference import make_ops
    from validate.shapes import per_gpu_dims

    model = load_model(meas.model_ref)
    if model.is_moe:  # MoE layers, shared experts, MLA modules: validate.moe_measure
        from validate.moe_measure import run_moe_groups

        return run_moe_groups(meas, shapes, opts, timer, skip_check, log)
    budget = device_budget(meas.device, opts.layer_time_s)
    backend = "triton" if meas.device == "cuda" else "torch"
    groups: dict[tuple[int, str, str], list[IterationShape]] = {}
    for s in shapes:
        groups.setdefault((s.tp, s.precision, s.kv_dtype), []).append(s)
    for (tp, precision, kv_dtype), group in groups.items():
        dims = per_gpu_dims(model, tp)
        ran = _ran_precision(precision, meas.device, meas.messages)
        meas.precision[precision] = ran
        if kv_dtype not in meas.kv_dtype:
            meas.kv_dtype[kv_dtype] = ran_kv_dtype(kv_dtype, meas.device, meas.messages)
        kv_ran = meas.kv_dtype[kv_dtype]
        layers, scaled, notes = fit_to_device(dims, group, model.num_layers, meas.hardware, budget)
        meas.messages += notes
        for n in notes:
            log(n)
        if meas.kernel_check is None and skip_check is None:
            probe = max(group, key=lambda s: (s.query_tokens, s.kv_budget is not None, s.decode_batch))
            t0 = time.perf_counter()
            meas.kernel_check = check_kernels(dims, probe, meas.device, opts.seed,
                                              kv_fp8=kv_ran == "fp8")
            log(f"kernel check ({meas.kernel_check['where']}, {time.perf_counter() - t0:.1f} s): "
                f"max |triton - torch| = {meas.kernel_check['max_abs_err']:.2e} "
                f"({'ok' if meas.kernel_check['ok'] else 'FAILED'})")
        elif skip_check is not None and meas.kernel_check is None:
            meas.kernel_check = {"ok": None, "skipped": skip_check}
        runner = ModelRunner(dims, layers, ops=make_ops(backend, fp8=ran == "fp8", kv_fp8=kv_ran == "fp8"),
                             device=meas.device, seed=opts.seed, fp8=ran == "fp8")
        reference = (make_ops("engine", fp8=ran == "fp8", kv_fp8=kv_ran == "fp8")
                     if meas.device == "cuda" else None)
        passes = opts.passes or (1 if meas.device == "cuda" else 5)
        by_shape: list[list[ShapeMeasurement]] = [[] for _ in scaled]
        for k in range(passes):  # interleaved: a burst of other load hits one pass of a shape
            for i, s in enumerate(scaled):
                t0 = time.perf_counter()
                res = measure_shape(runner, s, timer, device_name=meas.hardware.name,
                                    model_name=model.name, full_layers=model.num_layers,
                                    precision=ran, kv_dtype=kv_ran, reference=reference,
                                    fit=meas.kernels)
                by_shape[i].append(res)
                more = "" if reference is None else (
                    f"; the other set {res.other_iteration_s * 1e3:.2f} ms, host launch time "
                    f"eagerly +{res.host_s * 1e3:.2f} ms")
                log(f"  pass {k + 1}/{passes} {s.name}: iteration {res.iteration_s * 1e3:.2f} ms "
                    f"({meas.kernels}{more}; {len(res.rows)} op rows, {time.perf_counter() - t0:.1f} s)")
        meas.results += [combine_passes(r) for r in by_shape]
        if reference is not None:
            meas.messages += [m for m in reference.all_messages() if m not in meas.messages]
        if passes > 1:
            meas.messages.append(f"each shape measured in {passes} passes at different times; "
                                 "every time is the least disturbed pass's median")
        del runner


# --- calibration and comparison ---------------------------------------------------------------
def calibrate(meas: Measurements, fit: Sequence[bool] | None = None, tables: bool = True):
    """A CalibrationProfile fitted to the op rows of the shapes where `fit` is true (all by
    default): `calibrate_rows`. A measured device's HardwareSpec goes into the profile."""
    fit = [True] * len(meas.results) if fit is None else list(fit)
    if len(fit) != len(meas.results) or not any(fit):
        raise ServePlanError(f"fit mask of {len(fit)} entries for {len(meas.results)} shapes; "
                             "expected one per shape, at least one true")
    rows = pd.concat([pd.DataFrame(r.rows) for r, f in zip(meas.results, fit, strict=True) if f],
                     ignore_index=True)
    prof = calibrate_rows(rows, tables, source=f"serveplan validate on {meas.hardware_how}; "
                                               f"{meas.model} shapes of a plan for {', '.join(meas.plan_gpus)}")
    if meas.hardware.name not in GPU_PRESETS:
        prof.hardware[meas.hardware.name] = meas.hardware
    return prof


def calibrate_rows(rows: pd.DataFrame, tables: bool = True, source: str = ""):
    """The profile of native rows as `serveplan calibrate` fits them (`costmodel.fit.fit_profile`)
    and, with `tables`, the measured-table corrections of `--tables` (`costmodel.tables`: near
    the measured GEMM and attention shapes the roofline is scaled by the measured residual; far
    from them it stands alone)."""
    from costmodel.fit import fit_profile
    from costmodel.importers import tidy
    from costmodel.measured import predict_rows
    from costmodel.tables import build_tables

    fitted = tidy(rows)
    prof = fit_profile(fitted, source=source)
    if tables:
        for gpu, sub in fitted.groupby("gpu"):
            prof.tables[gpu] = build_tables(sub, predict_rows(sub, prof, use_tables=False))
    return prof


def predicted_compute_s(shape: IterationShape, hw: HardwareSpec, calibration=None,
                        precision: str = "bf16", kv_dtype: str = "bf16") -> float:
    """The cost model's time of what the runner executes: the step without communication,
    host overhead and sampling, over all layers."""
    from costmodel.model import CostModel

    cm = CostModel(shape.model, hw, tp=shape.tp, pp=1, precision=precision, kv_dtype=kv_dtype,
                   calibration=calibration, ep=shape.ep, dp=shape.dp)
    return sum(o.time_s for o in cm.step(shape.batch()).ops if o.name not in NOT_RUN)


def compare(meas: Measurements, profile=None) -> pd.DataFrame:
    """One row per shape: measured iteration, predicted with default parameters and with
    `profile`, relative errors (predicted / measured - 1)."""
    recs = []
    for r in meas.results:
        s = r.shape
        prec = meas.precision.get(s.precision, "bf16")
        kv = meas.kv_dtype.get(s.kv_dtype, "bf16")
        rec = {"shape": s.name, "kind": s.kind, "role": s.role, "tp": s.tp, "tokens": s.num_tokens,
               "seqs": s.num_seqs, "layers_run": r.layers_run, "layer_s": r.layer_s,
               "head_s": r.head_s, "measured_s": r.iteration_s, "kernels": r.kernels,
               "other_measured_s": r.other_iteration_s, "host_s": r.host_s, "note": s.note}
        if r.layers_run == 0:  # an MoE plan: no iteration ran; the sum of the shape's op rows
            from validate.moe_measure import op_sums

            rec.update(op_sums(r, profile))
            recs.append(rec)
            continue
        rec["predicted_default_s"] = predicted_compute_s(s, meas.hardware, None, prec, kv)
        if profile is not None:
            rec["predicted_calibrated_s"] = predicted_compute_s(s, meas.hardware, profile, prec, kv)
        recs.append(rec)
    df = pd.DataFrame(recs)
    df["rel_err_default"] = df["predicted_default_s"] / df["measured_s"] - 1
    if profile is not None:
        df["rel_err_calibrated"] = df["predicted_calibrated_s"] / df["measured_s"] - 1
    return df


def mape(rel_err) -> float:
    a = np.abs(np.asarray(rel_err, float))
    a = a[np.isfinite(a)]
    return float(a.mean()) if a.size else math.nan


def op_summary(rows: pd.DataFrame, profile=None) -> dict:
    """MAPE of the op rows with default parameters and with `profile`, overall and per op."""
    from costmodel.fit import residual_report
    from costmodel.measured import predict_rows

    out = {}
    for key, cal in (("default", None), ("calibrated", profile)):
        if key == "calibrated" and profile is None:
            continue
        rep = residual_report(rows["measured_s"].to_numpy(), predict_rows(rows, cal), rows["op"].to_numpy())
        out[key] = {"mape": rep["mape"], "by_op": {k: v["mape"] for k, v in rep["by_op"].items()}}
    return out


def roofline_summary(meas: Measurements, rows: pd.DataFrame) -> dict:
    """Each kernel's achieved fraction of the device's roofline (`validate.efficiency`)."""
    from validate.efficiency import roofline_fractions, summarise

    timed = {"engine": "engine-class operators (Triton where none), in CUDA graphs",
             "triton": "Triton kernels, in CUDA graphs"}.get(
        meas.kernels, "torch operators (no GPU: the Triton kernels only ran in the interpreter, "
                      "for correctness)")
    return {"device": meas.hardware.name, "timed": timed,
            "by_kernel": summarise(roofline_fractions(rows, meas.hardware))}


def load_shapes(path) -> list[IterationShape]:
    """The shapes a validate run measured, from its shapes.json (in iterations.csv's order)."""
    import json
    from pathlib import Path

    recs = json.loads(Path(path).read_text())
    return [IterationShape(**{**r, "prefill": tuple(tuple(c) for c in r["prefill"])}) for r in recs]


def iteration_uncertainty(df: pd.DataFrame) -> float:
    """RMS of log(predicted / measured) of the calibrated iteration times: a relative 1-sigma."""
    lr = np.log(df["predicted_calibrated_s"] / df["measured_s"])
    return float(np.sqrt(np.mean(lr**2)))


# --- the whole loop ---------------------------------------------------------------------------
def run_validate(plan: dict, out_dir, opts: ValidateOptions = ValidateOptions(), *,
                 plot: bool = False, log: Callable[[str], None] = _stderr) -> dict:
    """Measure, calibrate, compare; write into `out_dir`:
    measurements.csv (native rows), iterations.csv (per shape), shapes.json (the shapes as
    measured, `load_shapes` reads them back), kernels.csv (GPU: Triton and reference time per
    operator and shape), calibration.json (the profile, its uncertainty the RMS log error of the
    calibrated iteration times), report.json, and report.html (plotly scatter) with `plot`.
    Returns the report."""
    from pathlib import Path

    from costmodel.importers.native import write_native
    from validate.report import kernel_summary, require_plotly, scatter_html, write_json

    if plot:
        require_plotly()
    t0 = time.perf_counter()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    meas = measure_plan(plan, opts, log)
    rows = meas.rows()
    write_native(rows, out / "measurements.csv")
    prof = calibrate(meas, tables=opts.tables)
    df = compare(meas, prof)
    cal = prof.gpus[meas.hardware.name]
    cal.uncertainty_rel = iteration_uncertainty(df)
    prof.save(out / "calibration.json")
    df.to_csv(out / "iterations.csv", index=False)
    write_json([asdict(r.shape) for r in meas.results], out / "shapes.json")
    files = {"measurements": str(out / "measurements.csv"), "iterations": str(out / "iterations.csv"),
             "shapes": str(out / "shapes.json"),
             "calibration": str(out / "calibration.json"), "report": str(out / "report.json")}
    if plot:
        scatter_html(df, out / "report.html", title=f"{meas.model}: predicted vs measured on {meas.hardware.name}")
        files["plot"] = str(out / "report.html")
    kern = meas.compare_rows()
    if not kern.empty:
        kern.to_csv(out / "kernels.csv", index=False)
        files["kernels"] = str(out / "kernels.csv")

    report = {
        "schema": "serveplan.validate", "version": 1,
        "model": meas.model, "plan_gpus": meas.plan_gpus,
        "device": {"kind": meas.device, "name": meas.hardware.name, "how": meas.hardware_how},
        "hardware": asdict(meas.hardware),
        "calibration_key": meas.hardware.name,
        "messages": meas.messages + [m for m in prof.messages if m not in meas.messages],
        "kernel_check": meas.kernel_check,
        "operators": meas.operators,
        "kernels": {"fitted": meas.kernels, "by_op": kernel_summary(kern)},
        "iteration_mape": {"default": mape(df["rel_err_default"]),
                           "calibrated": mape(df["rel_err_calibrated"])},
        "op_mape": op_summary(rows, prof),
        "fitted_params": {k: v for k, v in cal.params.to_dict().items()
                          if k in cal.residuals.get("fitted", [])},
        "uncertainty_rel": cal.uncertainty_rel,
        "param_sources": dict(cal.sources),
        "roofline": roofline_summary(meas, rows),
        "shapes": df.to_dict(orient="records"),
        "plan_predicted": plan.get("predicted") if isinstance(plan, dict) else None,
        "files": files,
        "wall_s": time.perf_counter() - t0,
    }
    write_json(report, out / "report.json")
    return report
