"""Cost-model accuracy against published GPU measurements (fit on named rows, report on others).

Experiments (every number is a MAPE on rows the fit never saw):
1. vidur_ops: Vidur A100 per-operator tables; fit on llama-2-7b and llama-3-70b, predict the
   other six models (target <= 10%).
2. aic_h100: AIConfigurator H100 GEMM (bf16, fp8) and attention; fit on a 20% random sample
   (seed 0), predict the other 80% (target <= 8%), roofline alone and with table corrections.
3. splitwise: Splitwise A100 Llama2-70B TP 2/4/8, prefill time and decode iteration time
   (target <= 10%). Stage 1 fits the kernel parameters on Vidur's A100 op and decode-attention
   tables; stage 2 fits the host parameters and the collectives' step latency (STAGE2; the
   NVLink bandwidth efficiency keeps its A100 default) on a random 30% of the Splitwise
   configurations (seed 0; each was run 5-6 times, so every row of a configuration falls on
   one side); reported on the others' rows. The row split reported until 2026-12-06 is printed
   beside it, unscored against the target. Rows whose batch does not fit the KV cache vLLM's
   defaults leave (`costmodel.measured.kv_fit_mask`) are neither fitted nor scored, and are
   scored apart ("every row").
4. zero_shot: the parameters fitted on A100 data only (stage 1 above), with H100 datasheet
   peaks, predict every AIConfigurator H100 GEMM (target <= 20%).
5. vidur_network: Vidur's measured NCCL all-reduce and send/recv on two A100 clusters (DGX,
   NVSwitch; pairwise NVLink, where groups of 4 cross PCIe). Per cluster, fit the collective
   parameters (per-call cost, per-link step latency and bandwidth efficiency) on a random 30%
   of its rows (seed 0) and predict the other 70% (no target in the issue; reported).

6. aic_allreduce: vLLM's custom all-reduce on H100, captured in CUDA graphs (AIConfigurator's
   `custom_allreduce_perf`, backend `vllm_graph`: how a decode iteration runs it); fit the
   collective parameters (per-call cost, step latency, NVLink efficiency) on a seed-0 20%
   sample, predict the other 80% (no target in the issue; reported). Its eager rows time the
   host launch of one isolated call, not what a busy eager iteration pays; they are not used.

7. uncalibrated: no fit at all. Each GPU's architecture defaults (costmodel/arch_defaults.py,
   derived by benchmarks/derive_arch_defaults.py from the fitting rows of experiments 1, 2
   and 6 only) predict the rows experiments 1-3 report; the generic set every GPU had before is shown
   beside the H100 row (no target in the issue; reported).

8-10. moe, mla, block_fp8: fused-MoE layers per weight dtype, MLA attention modules and
   block-FP8 GEMMs on AIConfigurator's tables of every GPU present (benchmarks/moe_accuracy.py:
   fit on a seed-0 20% sample, predict the other 80%, target <= 10% each; other GPUs' folders
   are also predicted zero-shot).

Run: `.venv/bin/python benchmarks/costmodel_accuracy.py` (about 4 minutes on 2 cores; `--moe`
runs experiments 8-10 alone; `--splitwise-cv` prints only the cross-validation that chose
experiment 3's stage-2 parameters, `splitwise_stage2_cv`, and writes costmodel_accuracy_cv.json). Prints a table, writes benchmarks/out/costmodel_accuracy.json
(`costmodel_accuracy_moe.json` with `--moe`).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from moe_accuracy import experiments as moe_experiments  # noqa: E402

from costmodel.calibration import CalibrationProfile, GpuCalibration  # noqa: E402
from costmodel.efficiencies import Efficiencies  # noqa: E402
from costmodel.fit import fit_params, residual_report  # noqa: E402
from costmodel.importers import load_measured  # noqa: E402
from costmodel.measured import kv_fit_mask, predict_rows  # noqa: E402
from costmodel.paths import profiles_dir  # noqa: E402
from costmodel.tables import build_tables  # noqa: E402

SEED = 0
FIT_CAP = 15000  # rows handed to least squares (a fixed-seed subsample of the fitting rows)
VIDUR_FIT_MODELS = ("llama-2-7b", "llama-3-70b")
# Splitwise's stage 2: host time and the collectives' per-step latency. The NVLink bandwidth
# efficiency keeps the A100 default (0.70; Vidur's NCCL tables on A100 fit 0.58 (DGX) and 0.71
# (pairwise NVLink)): fitted on step rows it takes up the long prefills' excess at TP4/8 (down to
# 0.13 on some draws) and predicts held-out configurations worse. Chosen by cross-validation over
# configurations inside the fitted rows (`splitwise_stage2_cv`; benchmarks/RESULTS.md 2026-12-07)
STAGE2 = ["host_overhead_s", "host_per_seq_s", "comm_latency_s"]
STAGE2_CANDIDATES = {"host + latency": STAGE2, "host + latency + bandwidth": [*STAGE2, "comm_bw_eff"],
                     "host": ["host_overhead_s", "host_per_seq_s"]}
COMM = ["comm_base_s", "comm_latency_s", "comm_bw_eff"]


def _cap(rows: pd.DataFrame) -> pd.DataFrame:
    return rows.sample(FIT_CAP, random_state=SEED) if len(rows) > FIT_CAP else rows


def _report(name: str, target: float, rows: pd.DataFrame, pred: np.ndarray, group) -> dict:
    rep = residual_report(rows["measured_s"].to_numpy(), pred, np.asarray(group))
    ape = np.abs(pred / rows["measured_s"].to_numpy() - 1)
    rep.update(name=name, target_mape=target, met=bool(rep["mape"] <= target),
               median_ape=float(np.nanmedian(ape)))
    return rep


def vidur_ops(prof_dir: Path) -> tuple[list[dict], object]:
    rows = load_measured(prof_dir / "vidur" / "compute" / "a100", "vidur")
    fit = rows["model"].isin(VIDUR_FIT_MODELS).to_numpy()
    res = fit_params(_cap(rows[fit]))
    test = rows[~fit]
    pred = predict_rows(test, params={"a100-80g": res.params})
    rep = _report("vidur_ops: A100 per-op, fit llama-2-7b + llama-3-70b, predict 6 others",
                  0.10, test, pred, test["op"])
    rep["fit_rows"], rep["fitted"] = int(fit.sum()), list(res.fitted)
    return [rep], res


def aic_split(prof_dir: Path) -> tuple[pd.DataFrame, np.ndarray]:
    """AIConfigurator's H100 GEMM (bf16, fp8) and attention rows, and the seed-0 20% fitting
    mask: the one split aic_h100, uncalibrated and derive_arch_defaults.py all use."""
    rows = load_measured(prof_dir / "aiconfigurator" / "h100_sxm", "aiconfigurator")
    rows = rows[rows["op"].isin(["gemm", "attn_prefill", "attn_decode"])
                & rows["precision"].isin(["bf16", "fp8"])].reset_index(drop=True)
    return rows, np.random.default_rng(SEED).random(len(rows)) < 0.2


def aic_allreduce_split(prof_dir: Path) -> tuple[pd.DataFrame, np.ndarray]:
    """vLLM's custom all-reduce on H100 inside CUDA graphs, and the seed-0 20% fitting mask
    (aic_allreduce and derive_arch_defaults.py use this one split)."""
    rows = load_measured(prof_dir / "aiconfigurator" / "h100_sxm" / "comm" / "vllm", "aiconfigurator")
    rows = rows[(rows["op"] == "all_reduce") & (rows["kernel"] == "vllm_graph")].reset_index(drop=True)
    return rows, np.random.default_rng(SEED).random(len(rows)) < 0.2


def aic_allreduce(prof_dir: Path) -> list[dict]:
    rows, fit = aic_allreduce_split(prof_dir)
    res = fit_params(rows[fit], params=COMM)
    test = rows[~fit].reset_index(drop=True)
    group = "all_reduce/n" + test["num_gpus"].astype(str)
    out = []
    for label, params in (("fitted", {"h100-sxm": res.params}), ("Hopper defaults", None),
                          ("generic set", {"h100-sxm": Efficiencies()})):
        rep = _report(f"aic_allreduce ({label}): vLLM custom all-reduce in CUDA graphs, fit 20%, "
                      "predict 80%", float("nan"), test, predict_rows(test, params=params), group)
        rep["met"], rep["target_mape"] = None, None
        rep["fit_rows"], rep["fitted"] = (int(fit.sum()), COMM) if label == "fitted" else (0, [])
        out.append(rep)
    out[0]["params"] = {k: getattr(res.params, k) for k in COMM}
    return out


def aic_h100(prof_dir: Path) -> list[dict]:
    rows, fit = aic_split(prof_dir)
    fr, test = rows[fit].reset_index(drop=True), rows[~fit].reset_index(drop=True)
    res = fit_params(_cap(fr))
    g = "h100-sxm"
    group = np.where(test["op"] == "gemm", "gemm/" + test["precision"], test["op"])
    roof = predict_rows(test, params={g: res.params})
    prof = CalibrationProfile(gpus={g: GpuCalibration(res.params)})
    prof.tables[g] = build_tables(fr, predict_rows(fr, params={g: res.params}))
    tab = predict_rows(test, prof)
    out = []
    for label, pred in (("roofline", roof), ("roofline x measured-table correction", tab)):
        rep = _report(f"aic_h100 ({label}): GEMM bf16/fp8 + attention, fit 20%, predict 80%",
                      0.08, test, pred, group)
        rep["fit_rows"], rep["fitted"] = int(fit.sum()), list(res.fitted)
        out.append(rep)
    return out


# what a Splitwise row's run was: its prefill and decode steps are two rows of one run, and
# every configuration was run 5-6 times
SPLITWISE_CONFIG = ["tp", "batch_size", "prefill_len", "gen_len"]


def config_split(sw: pd.DataFrame, fraction: float, seed: int = SEED) -> np.ndarray:
    """A seed-fixed `fraction` of Splitwise's configurations (SPLITWISE_CONFIG) to fit, every
    row of each: a scored row never repeats a fitted configuration (the repeats agree within
    about 1%, so a row split scores near-copies of fitted rows)."""
    config = sw[SPLITWISE_CONFIG].astype(str).agg("/".join, axis=1)
    names = np.array(sorted(config.unique()))
    pick = names[np.random.default_rng(seed).random(len(names)) < fraction]
    return config.isin(pick).to_numpy()


def _splitwise_rows(prof_dir: Path) -> pd.DataFrame:
    return load_measured(prof_dir / "splitwise" / "perf_model_a100.csv", "splitwise", model="llama-2-70b")


def _stage1(prof_dir: Path):
    v = load_measured(prof_dir / "vidur", "vidur")
    # stage 1: kernels (GEMM, elementwise, decode attention) from Vidur's A100 tables; Vidur's
    # legacy prefill-attention file does not scale with its cached prefix as attention must,
    # and its NCCL tables are not the interconnect Splitwise ran on: both left out
    v = v[~v["op"].isin(["attn_prefill", "all_reduce", "send_recv"])]
    return fit_params(_cap(v))


def _mape_kv_fitting(rows: pd.DataFrame, params) -> tuple[float, int]:
    rows = rows.reset_index(drop=True)
    pred = predict_rows(rows, params={"a100-80g": params})
    fits = kv_fit_mask(rows)
    return float(np.mean(np.abs(pred[fits] / rows["measured_s"].to_numpy()[fits] - 1))), int(fits.sum())


def splitwise_stage2_cv(prof_dir: Path, fraction: float = 0.2, seeds=range(5), folds: int = 5,
                        stage1=None, candidates: dict | None = None) -> dict:
    """Which stage-2 parameters to fit, judged inside the fitted rows only: for each seed's
    `fraction` of configurations, `folds`-fold cross-validation over those configurations (a
    fold's configurations are fitted on the others and scored; rows of one configuration stay
    together) for each candidate parameter set. Returns {candidate: {seed: CV MAPE}} and the
    held-out MAPE of each candidate's fit on all the fitted rows (reported, not used to choose)."""
    s1 = stage1 if stage1 is not None else _stage1(prof_dir)
    sw = _splitwise_rows(prof_dir)
    config = sw[SPLITWISE_CONFIG].astype(str).agg("/".join, axis=1).to_numpy()
    out: dict = {"cv_mape": {}, "held_out_mape": {}, "fraction": fraction, "folds": folds}
    for name, params in (candidates or STAGE2_CANDIDATES).items():
        cv, held = {}, {}
        for seed in seeds:
            fit = config_split(sw, fraction, seed)
            rows, cfg = sw[fit].reset_index(drop=True), config[fit]
            names = np.array(sorted(set(cfg)))
            fold_of = dict(zip(names, np.random.default_rng(100 + seed).permutation(len(names)) % folds,
                               strict=True))
            fold = np.array([fold_of[c] for c in cfg])
            err, n = 0.0, 0
            for k in range(folds):
                s2 = fit_params(rows[fold != k], start=s1.params, params=params).params
                m, c = _mape_kv_fitting(rows[fold == k], s2)
                err, n = err + m * c, n + c
            cv[seed] = err / n
            held[seed] = _mape_kv_fitting(sw[~fit], fit_params(rows, start=s1.params, params=params).params)[0]
        out["cv_mape"][name], out["held_out_mape"][name] = cv, held
    return out


def splitwise(prof_dir: Path, fraction: float = 0.3, by: str = "config",
              seed: int = SEED, stage1=None) -> tuple[list[dict], object]:
    """Stage 1: Vidur's A100 kernels (or `stage1`, a fit_params result to reuse); stage 2: the
    host and interconnect parameters on a `fraction` of Splitwise's rows, drawn `by`
    configuration (no scored row repeats a fitted one: the honest score) or by row (what the
    project reported until 2026-12-06: 304 of its 499 scored rows at 20% repeat a fitted
    configuration)."""
    if by not in ("config", "row"):
        raise ValueError(f"by={by!r}; expected config or row")
    s1 = stage1 if stage1 is not None else _stage1(prof_dir)
    sw = _splitwise_rows(prof_dir)
    fit = (config_split(sw, fraction, seed) if by == "config"
           else np.random.default_rng(seed).random(len(sw)) < fraction)
    s2 = fit_params(sw[fit], start=s1.params, params=STAGE2)
    test = sw[~fit].reset_index(drop=True)
    pred = predict_rows(test, params={"a100-80g": s2.params})
    group = test["op"] + "/tp" + test["tp"].astype(str)
    # rows whose batch does not fit the KV cache vLLM's defaults leave (costmodel.measured
    # kv_fit_mask: TP2 batch 64 x (512 + 128) tokens) cannot have run as the batch they name;
    # they are kept out of the fit (fit_params skips them) and of the score, and scored apart
    fits = kv_fit_mask(test)
    rep = _report(f"splitwise: A100 Llama2-70B TP2/4/8 prefill + decode step, fit {fraction:.0%} of "
                  f"{'configurations' if by == 'config' else 'rows'}, predict the rest",
                  0.10, test[fits], pred[fits], group[fits])
    rep["excluded_kv_overflow_rows"] = int((~fits).sum())
    rep["by_phase"] = residual_report(test["measured_s"].to_numpy()[fits], pred[fits],
                                      test["op"].to_numpy()[fits])["by_op"]
    rep2 = _report("splitwise, every row incl. batches that overflow the KV cache (as measured)",
                   0.10, test, pred, group)
    for r in (rep, rep2):
        r["fit_rows"], r["fitted"] = int(fit.sum()), ["stage1: Vidur A100 ops", *STAGE2]
        r["split"], r["seed"] = by, seed
        r["stage2_params"] = {k: getattr(s2.params, k) for k in STAGE2}
    return [rep, rep2], s1


def zero_shot(prof_dir: Path, a100_fit) -> list[dict]:
    rows = load_measured(prof_dir / "aiconfigurator" / "h100_sxm" / "gemm", "aiconfigurator")
    rows = rows[rows["precision"].isin(["bf16", "fp8"])].reset_index(drop=True)
    pred = predict_rows(rows, params={"h100-sxm": a100_fit.params})
    rep = _report("zero_shot: A100-fitted parameters -> every H100 GEMM (bf16, fp8)", 0.20,
                  rows, pred, "gemm/" + rows["precision"])
    rep["fit_rows"], rep["fitted"] = 0, ["(A100 stage-1 fit; fp8 parameters at defaults)"]
    return [rep]


def vidur_network(prof_dir: Path) -> list[dict]:
    rows = load_measured(prof_dir / "vidur" / "network", "vidur")
    cluster = rows["source"].str.split("/").str[-2]
    out = []
    for name in sorted(cluster.unique()):
        r = rows[cluster == name].reset_index(drop=True)
        fit = np.random.default_rng(SEED).random(len(r)) < 0.3
        res = fit_params(r[fit])
        test = r[~fit].reset_index(drop=True)
        pred = predict_rows(test, params={"a100-80g": res.params})
        group = test["op"] + "/" + test["kernel"] + "/n" + test["num_gpus"].astype(str)
        rep = _report(f"vidur_network {name}: NCCL all-reduce + send/recv, fit 30%, predict 70%",
                      float("nan"), test, pred, group)
        rep["met"], rep["target_mape"] = None, None
        rep["fit_rows"], rep["fitted"] = int(fit.sum()), list(res.fitted)
        rep["params"] = {k: getattr(res.params, k) for k in res.fitted}
        out.append(rep)
    return out


def uncalibrated(prof_dir: Path) -> list[dict]:
    """No fit at all: each GPU's architecture defaults (costmodel.arch_defaults, derived from
    the fitting rows of experiments 1 and 2 only) on the rows those experiments report."""
    out = []
    rows, fit = aic_split(prof_dir)
    test = rows[~fit].reset_index(drop=True)
    group = np.where(test["op"] == "gemm", "gemm/" + test["precision"], test["op"])
    for label, params in (("Hopper defaults", None), ("generic set, what every GPU had before",
                                                      {"h100-sxm": Efficiencies()})):
        rep = _report(f"uncalibrated H100 ({label}): the 80% aic_h100 reports", float("nan"),
                      test, predict_rows(test, params=params), group)
        out.append(rep)
    v = load_measured(prof_dir / "vidur" / "compute" / "a100", "vidur")
    v = v[~v["model"].isin(VIDUR_FIT_MODELS)].reset_index(drop=True)
    out.append(_report("uncalibrated A100 (Ampere defaults): the 6 models vidur_ops reports",
                       float("nan"), v, predict_rows(v), v["op"]))
    sw = load_measured(prof_dir / "splitwise" / "perf_model_a100.csv", "splitwise",
                       model="llama-2-70b")
    sw = sw[kv_fit_mask(sw)].reset_index(drop=True)
    out.append(_report("uncalibrated A100 Splitwise (Ampere defaults; host and collectives "
                       "generic): every KV-fitting row", float("nan"), sw, predict_rows(sw),
                       sw["op"] + "/tp" + sw["tp"].astype(str)))
    for r in out:
        r["met"], r["target_mape"], r["fit_rows"], r["fitted"] = None, None, 0, []
    return out


def main() -> None:
    t0 = time.perf_counter()
    prof_dir = profiles_dir()
    results: list[dict] = []
    moe_only = "--moe" in sys.argv[1:]
    if "--splitwise-cv" in sys.argv[1:]:
        cv = splitwise_stage2_cv(prof_dir)
        seeds = list(next(iter(cv["cv_mape"].values())))
        print(f"Splitwise stage 2, {cv['folds']}-fold CV over configurations inside each seed's "
              f"{cv['fraction']:.0%} (held out beside it, not used to choose)")
        print(f"{'parameters':<28} " + " ".join(f"{'seed ' + str(s):>8}" for s in seeds) + f" {'mean':>8} {'held out':>9}")
        for name, per in cv["cv_mape"].items():
            held = np.mean(list(cv["held_out_mape"][name].values()))
            print(f"{name:<28} " + " ".join(f"{v:>8.2%}" for v in per.values())
                  + f" {np.mean(list(per.values())):>8.2%} {held:>9.2%}")
        print("held out per seed: " + "; ".join(
            f"{n} " + " / ".join(f"{v:.2%}" for v in h.values()) for n, h in cv["held_out_mape"].items()))
        cv["wall_s"] = time.perf_counter() - t0
        print(f"wall {cv['wall_s']:.0f} s")
        out = REPO / "benchmarks" / "out" / "costmodel_accuracy_cv.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(cv, indent=1, default=str) + "\n")
        return
    if not moe_only:
        reps, _ = vidur_ops(prof_dir)
        results += reps
        results += aic_h100(prof_dir)
        reps, a100 = splitwise(prof_dir)
        results += reps
        row, _ = splitwise(prof_dir, by="row", stage1=a100)  # the old split, for comparison
        row[0]["name"] += " (row split: scored rows repeat fitted configurations)"
        row[0]["met"], row[0]["target_mape"] = None, None
        results.append(row[0])
        results += zero_shot(prof_dir, a100)
        results += vidur_network(prof_dir)
        results += aic_allreduce(prof_dir)
        results += uncalibrated(prof_dir)
    results += moe_experiments(prof_dir)
    wall = time.perf_counter() - t0
    print(f"{'experiment':<92} {'rows':>7} {'MAPE':>7} {'target':>7} {'met':>4}  {'median':>7}")
    for r in results:
        target = "-" if r["target_mape"] is None else f"{r['target_mape']:.0%}"
        met = "-" if r["met"] is None else ("yes" if r["met"] else "NO")
        print(f"{r['name']:<92} {r['n']:>7} {r['mape']:>7.1%} {target:>7} {met:>4}  "
              f"{r['median_ape']:>7.1%}")
        for op, v in {**r.get("by_phase", {}), **r["by_op"]}.items():
            print(f"    {op:<88} {v['n']:>7} {v['mape']:>7.1%}")
    print(f"wall {wall:.0f} s")
    out = REPO / "benchmarks" / "out" / ("costmodel_accuracy_moe.json" if moe_only else "costmodel_accuracy.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"results": results, "wall_s": wall, "seed": SEED}, indent=2) + "\n")


if __name__ == "__main__":
    main()
