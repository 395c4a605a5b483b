"""Calibration fit: the cost model's parameters that best explain measured rows.

`fit_params(rows, ...)` runs robust least squares (scipy `least_squares`, Cauchy loss by
default: published tables hold a few kernels outside the model, such as head-dim-512 decode
fallbacks 30x slower than FlashAttention, and soft-L1 still lets them drag every efficiency
down; `loss="soft_l1"` or `"huber"` on request) on the log of predicted / measured time, over the `Efficiencies` fields that the rows inform (a GEMM
table says nothing about host overhead), each kept inside `PARAM_BOUNDS` and moved in log
space so that microseconds and efficiencies are on one footing. Each op's rows weigh the same
in total, so a table with 30k GEMMs does not drown 200 attention rows.

On a GPU the fit is held inside physical bounds (`costmodel.bounds`: no efficiency above 1, no
kernel fixed time of 10 us or more), values are clipped into their bounds (exp(log(hi)) can
land an ulp above hi), and every fitted parameter that ends at a bound becomes a message.

`residual_report(measured, predicted, ops)` gives n, MAPE, p90 |relative error| and the same
per op; `fit_profile(rows, ...)` fits every GPU in the rows and returns a CalibrationProfile
whose `uncertainty_rel` is the RMS of the log residuals (a relative 1-sigma), whose `messages`
hold the bound messages, and whose `sources` say where each parameter came from
(`param_sources`).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import pandas as pd
from scipy.optimize import least_squares

from costmodel.arch_defaults import default_efficiencies
from costmodel.bounds import bound_messages, search_bounds
from costmodel.efficiencies import PARAM_BOUNDS, Efficiencies
from costmodel.errors import ServePlanError
from costmodel.hardware import load_gpu
from costmodel.measured import PreparedRows, informed_params, predict_rows, skipped_mask

PRIOR = 0.002  # log-units of row error that moving one parameter by a factor e is worth


@dataclass(frozen=True)
class FitResult:
    gpu: str
    params: Efficiencies
    fitted: tuple[str, ...]
    residuals: dict
    uncertainty_rel: float
    nfev: int
    message: str
    messages: tuple[str, ...] = ()  # fitted parameters at a bound (costmodel.bounds)


def residual_report(measured: np.ndarray, predicted: np.ndarray, ops) -> dict:
    """MAPE and p90 of |predicted / measured - 1|, overall and per op (NaN rows left out)."""
    measured = np.asarray(measured, float)
    predicted = np.asarray(predicted, float)
    ops = np.asarray(ops)
    ok = np.isfinite(predicted) & np.isfinite(measured) & (measured > 0)
    rel = np.abs(predicted[ok] / measured[ok] - 1.0)
    if rel.size == 0:
        return {"n": 0, "mape": None, "p90_abs_rel_err": None, "by_op": {}}
    by_op = {}
    for op in sorted(set(ops[ok])):
        r = rel[ops[ok] == op]
        by_op[str(op)] = {"n": int(r.size), "mape": float(r.mean()),
                          "p90_abs_rel_err": float(np.quantile(r, 0.9))}
    return {"n": int(rel.size), "mape": float(rel.mean()),
            "p90_abs_rel_err": float(np.quantile(rel, 0.9)), "by_op": by_op}


def _log_bounds(name: str, hw=None) -> tuple[float, float]:
    lo, hi = search_bounds(name, hw)
    return float(np.log(lo)), float(np.log(hi))


_RHO = {  # robust losses of z = (r / f_scale)^2, as scipy's least_squares defines them
    "linear": lambda z: z,
    "soft_l1": lambda z: 2.0 * (np.sqrt(1.0 + z) - 1.0),
    "huber": lambda z: np.where(z <= 1.0, z, 2.0 * np.sqrt(z) - 1.0),
    "cauchy": np.log1p,
}


def _robust(r: np.ndarray, loss: str, f_scale: float) -> np.ndarray:
    """Residuals whose squares sum to the robust loss (so a plain prior can sit beside them)."""
    return np.sign(r) * f_scale * np.sqrt(_RHO[loss]((r / f_scale) ** 2))


def fit_params(rows: pd.DataFrame, start: Efficiencies | None = None,
               params: list[str] | None = None, loss: str = "cauchy", f_scale: float = 0.1,
               max_nfev: int = 300, calibration=None, prior: float = PRIOR,
               staged: bool = False) -> FitResult:
    """Fit the parameters `params` (default: those the rows inform) for the one GPU in `rows`.

    `start` holds the values of the parameters that are not fitted (default: the GPU's
    architecture defaults, costmodel.arch_defaults)
    and the centre of a weak prior on those that are: moving a parameter by a factor e costs as
    much as every row being off by `prior` (log units), so a parameter the rows do not pin
    down (Vidur's A100 GEMMs say nothing about how many CTAs saturate HBM) keeps its
    physically derived default instead of wandering with the optimiser's path.
    `calibration` only supplies measured tables for GEMM rows (rarely wanted while fitting).
    `staged`: fit each group of ops that shares no parameter with the others on its own rows
    (`_stages`: GEMMs, attention, collectives). The objective is a sum over rows plus a prior
    per parameter, so with disjoint parameters its minimum is the joint fit's; each stage's
    residuals and finite differences cost only its own rows and parameters."""
    if loss not in _RHO:
        raise ServePlanError(f"loss {loss!r}; expected one of {', '.join(_RHO)}")
    gpus = rows["gpu"].unique()
    if len(gpus) != 1:
        raise ServePlanError(f"fit_params fits one GPU at a time; rows hold {sorted(gpus)}")
    keep = ~skipped_mask(rows) & np.isfinite(rows["measured_s"].to_numpy()) & (rows["measured_s"].to_numpy() > 0)
    rows = rows[keep].reset_index(drop=True)
    if rows.empty:
        raise ServePlanError("no rows to fit (every row was skipped: unknown model or no time)")
    gpu = str(gpus[0])
    try:
        hw = load_gpu(gpu)
    except ServePlanError:  # an unregistered label: no physical bounds beyond PARAM_BOUNDS
        hw = None
    start = start or default_efficiencies(gpu)
    names = list(params) if params is not None else informed_params(rows)
    unknown = [p for p in names if p not in PARAM_BOUNDS]
    if unknown:
        raise ServePlanError(f"parameters {unknown}; known: {', '.join(PARAM_BOUNDS)}")
    log_meas = np.log(rows["measured_s"].to_numpy(float))
    ops = rows["op"].to_numpy()
    counts = pd.Series(ops).value_counts()
    weight = 1.0 / np.sqrt(pd.Series(ops).map(counts).to_numpy(float))
    weight *= np.sqrt(len(rows) / weight.dot(weight) / 1.0)  # mean weight^2 = 1

    box = {n: search_bounds(n, hw) for n in names}

    def eff_of(x: np.ndarray) -> Efficiencies:
        # clipped: exp(log(hi)) can land an ulp above hi, and a profile holding it fails to load
        return replace(start, **{n: float(np.clip(np.exp(v), *box[n]))
                                 for n, v in zip(names, x, strict=True)})

    prior_w = prior * np.sqrt(len(rows))
    prep = PreparedRows(rows)  # split once: predicted at every step

    def resid(x: np.ndarray) -> np.ndarray:
        pred = predict_rows(prep, calibration, params={gpu: eff_of(x)}, use_tables=calibration is not None)
        r = np.log(np.maximum(pred, 1e-12)) - log_meas
        r = _robust(np.where(np.isfinite(r), r, 10.0) * weight, loss, f_scale)
        return np.concatenate([r, prior_w * (x - x0)])

    if names and staged:
        best, nfev, msgs = start, 0, []
        for sub_idx, sub_names in _stages(rows, names):
            sub = rows.iloc[sub_idx].reset_index(drop=True)
            res = _least_squares(sub, sub_names, best, box, hw, log_meas[sub_idx], weight[sub_idx],
                                 prior_w, loss, f_scale, max_nfev, calibration, gpu)
            best, nfev = res[0], nfev + res[1]
            msgs.append(f"{'+'.join(sorted(set(sub['op'])))}: {res[2]}")
        msg = "; ".join(msgs) or "nothing to fit"
    elif names:
        lb, ub = zip(*(_log_bounds(n, hw) for n in names), strict=True)
        x0 = np.clip([np.log(max(getattr(start, n), 1e-30)) for n in names], lb, ub)
        x0 = np.minimum(np.maximum(x0, np.array(lb) + 1e-9), np.array(ub) - 1e-9)
        sol = least_squares(resid, x0, bounds=(lb, ub), loss="linear",
                            max_nfev=max_nfev, diff_step=1e-4, x_scale=1.0)
        best, nfev, msg = eff_of(sol.x), int(sol.nfev), str(sol.message)
    else:
        best, nfev, msg = start, 0, "nothing to fit"
    pred = predict_rows(prep, calibration, params={gpu: best}, use_tables=calibration is not None)
    report = residual_report(rows["measured_s"].to_numpy(), pred, ops)
    lr = np.log(pred / rows["measured_s"].to_numpy())
    unc = float(np.sqrt(np.nanmean(lr**2)))
    notes = bound_messages(best.to_dict(), names, hw, gpu)
    return FitResult(gpu, best, tuple(names), report, unc, nfev, msg, tuple(notes))


def _stages(rows: pd.DataFrame, names: list[str]) -> list[tuple[np.ndarray, list[str]]]:
    """Groups of rows linked by a shared parameter among `names`: (row positions, parameters).
    The units joined are (op, precision): an op's precisions share their parameters where one
    kernel serves them (GEMMs) and join into one group, and keep apart where each has its own
    kernel (the fused-MoE kernels of bf16, fp8, int4 and mxfp4 experts)."""
    keys = ["op", "precision"] if "precision" in rows.columns else ["op"]
    units = list(rows.groupby(keys, dropna=False, sort=False).indices.values())
    groups: list[tuple[list, set]] = []
    for idx in units:
        g_idx, g_par = [idx], set(informed_params(rows.iloc[idx])) & set(names)
        linked = [g for g in groups if g[1] & g_par]
        groups = [g for g in groups if not g[1] & g_par]
        for o_idx, o_par in linked:
            g_idx += o_idx
            g_par |= o_par
        groups.append((g_idx, g_par))
    return [(np.sort(np.concatenate(g_idx)), [n for n in names if n in g_par])
            for g_idx, g_par in groups if g_par]


def _least_squares(rows, names, start, box, hw, log_meas, weight, prior_w, loss, f_scale, max_nfev,
                   calibration, gpu):
    """One stage of a staged fit: `names` on `rows`, the rest held at `start`."""
    def eff_of(x):
        return replace(start, **{n: float(np.clip(np.exp(v), *box[n])) for n, v in zip(names, x, strict=True)})

    lb, ub = zip(*(_log_bounds(n, hw) for n in names), strict=True)
    x0 = np.clip([np.log(max(getattr(start, n), 1e-30)) for n in names], lb, ub)
    x0 = np.minimum(np.maximum(x0, np.array(lb) + 1e-9), np.array(ub) - 1e-9)

    prep = PreparedRows(rows)  # split once: predicted at every step

    def resid(x):
        pred = predict_rows(prep, calibration, params={gpu: eff_of(x)}, use_tables=calibration is not None)
        r = np.log(np.maximum(pred, 1e-12)) - log_meas
        r = _robust(np.where(np.isfinite(r), r, 10.0) * weight, loss, f_scale)
        return np.concatenate([r, prior_w * (x - x0)])

    sol = least_squares(resid, x0, bounds=(lb, ub), loss="linear", max_nfev=max_nfev, diff_step=1e-4,
                        x_scale=1.0)
    return eff_of(sol.x), int(sol.nfev), str(sol.message)


SAMPLE_KEYS = ("gpu", "op", "precision", "kv_dtype")  # strata of `sample_rows`


def sample_rows(rows: pd.DataFrame, max_per_group: int, seed: int = 0) -> pd.DataFrame:
    """At most `max_per_group` rows of each (GPU, op, precision, KV dtype), drawn at random
    (seed-fixed); smaller groups whole. Each op weighs the same in the fit whatever its row
    count, so a sample changes the fit's noise, not what it balances; a residual evaluation
    costs in proportion to the rows (AIConfigurator's H100 folder: 220k rows, 37 parameters)."""
    if max_per_group <= 0 or len(rows) <= max_per_group:
        return rows
    keys = [k for k in SAMPLE_KEYS if k in rows.columns]
    rng = np.random.default_rng(seed)
    keep = np.zeros(len(rows), bool)
    for idx in rows.groupby(keys, dropna=False, sort=True).indices.values():
        pick = idx if len(idx) <= max_per_group else rng.choice(idx, max_per_group, replace=False)
        keep[pick] = True
    return rows[keep].reset_index(drop=True)


NOT_INPUTS = ("source", "row_id", "measured_s")  # what differs between repeats of one measurement


def holdout_split(rows: pd.DataFrame, fraction: float, seed: int = 0) -> np.ndarray:
    """The rows to fit (True) when a seed-fixed `fraction` is fitted and the rest held out,
    every repeat of one configuration (rows alike in every column but NOT_INPUTS) on the side
    of its first row. Each row draws as in a row split (`default_rng(seed).random(len(rows)) <
    fraction`), so rows without repeats split exactly as that does; a repeat takes its first
    row's draw. Splitwise ran each configuration 5-6 times, within about 1% of each other: a
    row split of it scores near-copies of fitted rows (benchmarks/RESULTS.md, 2026-12-06)."""
    draw = np.random.default_rng(seed).random(len(rows)) < fraction
    inputs = [c for c in rows.columns if c not in NOT_INPUTS]
    if not inputs or not len(rows):
        return draw
    try:
        config = pd.util.hash_pandas_object(rows[inputs], index=False).to_numpy()
    except TypeError:  # a cell no hash takes (a list): compare the columns as text
        config = pd.util.hash_pandas_object(rows[inputs].astype(str), index=False).to_numpy()
    _, first, code = np.unique(config, return_index=True, return_inverse=True)
    return draw[first[code.ravel()]]


def fit_profile(rows: pd.DataFrame, start=None, params: list[str] | None = None,
                source: str = "", **kw):
    """Fit every GPU in `rows`; `start` (a CalibrationProfile) gives starting values."""
    from costmodel.calibration import CalibrationProfile, GpuCalibration

    prof = CalibrationProfile(source=source)
    if start is not None:
        prof.gpus.update(start.gpus)
        prof.tables.update(start.tables)
        prof.hardware.update(start.hardware)  # a measured device's spec (validate, a40.json)
        if start.source:
            prof.source = f"{start.source}; {source}" if source else start.source
    refitted = {str(g) for g in rows["gpu"].unique()}
    if start is not None:  # the start's messages about GPUs fitted again no longer hold
        prof.messages = [m for m in start.messages if m.split(":", 1)[0] not in refitted]
    for gpu, g in rows.groupby("gpu"):
        s = start.efficiencies_for(gpu) if start is not None else None
        res = fit_params(g, start=s, params=params, **kw)
        prev_cal = start.calibration_for(gpu) if start is not None else None
        prev = prev_cal.sources if prev_cal is not None else None
        prof.gpus[gpu] = GpuCalibration(res.params, {**res.residuals, "fitted": list(res.fitted)},
                                        res.uncertainty_rel,
                                        sources=param_sources(g, res.fitted, str(gpu), prev))
        if prev_cal is not None and prev_cal.latency_interval:
            # the runs' held-out errors were measured under the kernel parameters refitted here
            prof.messages.append(f"{gpu}: the engine runs' latency interval was dropped: the kernel "
                                 "parameters it was measured under were fitted again; calibrate the "
                                 "runs on this profile (--calibration) to measure it anew")
        prof.messages += list(res.messages)
    return prof


def _kernels_informing(rows: pd.DataFrame, name: str) -> list[str]:
    """The `kernel` labels (else `source`) of the rows whose operator family `name` describes."""
    from costmodel import roofline as rl
    from costmodel.measured import PARAMS_BY_FAMILY, family

    fams = {f for f, ps in PARAMS_BY_FAMILY.items() if name in ps}
    fams = {"comm" if f.startswith("comm") else "gemm" if f.startswith("gemm")
            else "moe" if f.startswith("moe_") else f for f in fams}
    elem_ops = {op for op, p in rl.ELEM_EFF_PARAM.items() if p == name}
    if name in ("elem_overhead_s", "norm_row_elem_s"):
        elem_ops = set(rl.ELEM_EFF_PARAM)
    informing = [o for o in pd.unique(rows["op"]) if family(o) in fams or o in elem_ops]  # once an op
    sel = rows["op"].isin(informing).to_numpy()
    col = rows["kernel"] if "kernel" in rows and rows["kernel"].astype(str).str.len().gt(0).any() \
        else rows.get("source", pd.Series([""] * len(rows)))
    return sorted({str(k) for k in pd.unique(col[sel].to_numpy(dtype=object)) if str(k)})


def param_sources(rows: pd.DataFrame, fitted, gpu: str, previous: dict | None = None) -> dict:
    """Parameter -> where its value comes from: `fit: rows of <kernels>` for the fitted ones
    (the kernels whose rows inform it), else the start profile's source, else the default it
    keeps (`arch_defaults.default_source`)."""
    from costmodel.arch_defaults import default_source

    out = {}
    for name in PARAM_BOUNDS:
        if name in fitted:
            ks = _kernels_informing(rows, name)
            out[name] = "fit: rows of " + (", ".join(ks) if ks else "the measured rows")
        elif previous and name in previous:
            out[name] = previous[name]
        else:
            out[name] = default_source(gpu, name)
    return out
