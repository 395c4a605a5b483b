"""Mixture-of-experts, MLA and block-FP8 experiments of benchmarks/costmodel_accuracy.py.

Every number is a MAPE on rows the fit never saw. For each AIConfigurator system folder under
`profiles/aiconfigurator/` that holds the tables (today `h100_sxm`; any other GPU's folder
laid out the same way is picked up):

8. moe: the fused-MoE table (`moe_perf`), every row a vLLM fused-MoE layer on one GPU. Fit on
   the seed-0 20% sample, one kernel family at a time (costmodel.moe_kernels.FAMILIES: each
   family's parameters from its own rows), predict the other 80%; MAPE per weight dtype (bf16,
   fp8, fp8_block, int4, mxfp4; target <= 10% each), and the same rows with no fit at all
   (the GPU's architecture defaults: for Hopper, derived from this very 20% sample by
   benchmarks/derive_arch_defaults.py).
9. mla: the MLA context and generation module tables, the same split; per op (target 10%).
10. block_fp8: the `fp8_block` rows of the GEMM table, the same split, only the block-FP8
    parameters fitted (the dense GEMM ones keep the architecture defaults); target 10%.

A GPU folder other than h100_sxm is also predicted zero-shot: the Hopper defaults with that
GPU's datasheet, no row of it fitted (reported as "zero-shot"). Only the parameters of each
family are fitted; every dense parameter keeps its architecture default, so the dense
experiments of costmodel_accuracy.py are untouched.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd

from costmodel.arch_defaults import arch_efficiencies
from costmodel.errors import ServePlanError
from costmodel.fit import fit_params, residual_report
from costmodel.importers import load_measured
from costmodel.measured import PARAMS_BY_FAMILY, predict_rows
from costmodel.moe_kernels import moe_kernel_family

SEED = 0
FIT_SHARE = 0.2
MOE_DTYPES = ("bf16", "fp8", "fp8_block", "int4", "mxfp4")
BLOCK_PARAMS = list(PARAMS_BY_FAMILY["gemm_fp8_block"])
MLA_PARAMS = sorted(set(PARAMS_BY_FAMILY["mla_prefill"]) | set(PARAMS_BY_FAMILY["mla_decode"]))


def systems(prof_dir: Path) -> list[Path]:
    """AIConfigurator system folders holding MoE, MLA or GEMM tables, h100_sxm first."""
    root = prof_dir / "aiconfigurator"
    found = [p for p in sorted(root.iterdir()) if p.is_dir()
             and any((p / t).is_dir() for t in ("moe", "mla", "gemm"))]
    return sorted(found, key=lambda p: p.name != "h100_sxm")


def _split(rows: pd.DataFrame) -> np.ndarray:
    return np.random.default_rng(SEED).random(len(rows)) < FIT_SHARE


def moe_split(system: Path) -> tuple[pd.DataFrame, np.ndarray] | None:
    if not (system / "moe").is_dir():
        return None
    rows = load_measured(system / "moe", "aiconfigurator")
    rows = rows[rows["op"] == "moe"].reset_index(drop=True)
    rows["family"] = [moe_kernel_family(p, k) for p, k in zip(rows["precision"], rows["kernel"], strict=True)]
    return rows, _split(rows)


def mla_split(system: Path) -> tuple[pd.DataFrame, np.ndarray] | None:
    if not (system / "mla").is_dir():
        return None
    rows = load_measured(system / "mla", "aiconfigurator")
    return rows.reset_index(drop=True), _split(rows)


def block_split(system: Path) -> tuple[pd.DataFrame, np.ndarray] | None:
    if not (system / "gemm").is_dir():
        return None
    rows = load_measured(system / "gemm", "aiconfigurator")
    rows = rows[(rows["op"] == "gemm") & (rows["precision"] == "fp8_block")].reset_index(drop=True)
    return (rows, _split(rows)) if len(rows) else None


def fit_moe(fit_rows: pd.DataFrame, start) -> object:
    """One fit per kernel family on its own rows; returns `start` with every family's fitted
    parameters."""
    from dataclasses import replace

    eff = start
    for fam, g in fit_rows.groupby("family"):
        names = list(PARAMS_BY_FAMILY["moe_" + fam])
        res = fit_params(g.drop(columns="family").reset_index(drop=True), start=start, params=names)
        eff = replace(eff, **{n: getattr(res.params, n) for n in names})
    return eff


def fit_mla(fit_rows: pd.DataFrame, start):
    return fit_params(fit_rows, start=start, params=MLA_PARAMS).params


def fit_block(fit_rows: pd.DataFrame, start):
    return fit_params(fit_rows, start=start, params=BLOCK_PARAMS).params


def _report(name, rows, pred, group, target, fit_rows, fitted) -> dict:
    rep = residual_report(rows["measured_s"].to_numpy(), pred, np.asarray(group))
    ape = np.abs(pred / rows["measured_s"].to_numpy() - 1)
    rep.update(name=name, target_mape=target, median_ape=float(np.nanmedian(ape)),
               met=None if target is None else bool(rep["mape"] <= target),
               fit_rows=int(fit_rows), fitted=list(fitted))
    return rep


def _dtype_reports(name, test, pred, fit_rows, fitted, target) -> list[dict]:
    """One report over every test row, then one per dtype (each with the target)."""
    out = [_report(name, test, pred, test["op"], None, fit_rows, fitted)]
    for d in MOE_DTYPES:
        sel = (test["precision"] == d).to_numpy()
        if sel.any():
            out.append(_report(f"    {d}", test[sel], pred[sel], test["kernel"][sel], target,
                               fit_rows, fitted))
    return out


def experiments(prof_dir: Path) -> list[dict]:
    results: list[dict] = []
    hopper = arch_efficiencies("hopper")
    for system in systems(prof_dir):
        home = system.name == "h100_sxm"
        for kind, split, fitter in (("moe", moe_split, fit_moe), ("mla", mla_split, fit_mla),
                                    ("block_fp8", block_split, fit_block)):
            try:
                got = split(system)
            except ServePlanError as e:  # a GPU folder whose tables the model cannot price
                print(f"{kind} {system.name}: skipped ({e})", file=sys.stderr)
                continue
            if got is None or not len(got[0]):
                continue
            rows, fit = got
            test = rows[~fit].reset_index(drop=True)
            gpu = str(rows["gpu"].iloc[0])
            fr = rows[fit].reset_index(drop=True)
            params = fitter(fr, hopper)
            runs = [("fitted on 20%", {gpu: params}, int(fit.sum()))]
            runs.append(("uncalibrated: Hopper defaults" if home else
                         "zero-shot: Hopper defaults, no row of this GPU fitted", {gpu: hopper}, 0))
            for label, p, nfit in runs:
                pred = predict_rows(test.drop(columns="family", errors="ignore"), params=p)
                name = f"{kind} {system.name} ({label}): predict 80%"
                fitted = [kind] if nfit else []
                if kind == "moe":
                    results += _dtype_reports(name, test, pred, nfit, fitted, 0.10)
                else:
                    results.append(_report(name, test, pred, test["op"] + "/" + test["kernel"],
                                           0.10, nfit, fitted))
    return results
