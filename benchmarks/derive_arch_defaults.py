"""Derive the per-architecture default efficiencies (costmodel/arch_defaults.py) from the fitting
rows of costmodel_accuracy.py, and only those, so that every row that benchmark reports stays
unseen:

- ampere: Vidur's A100 operator tables of the two fitting models (llama-2-7b, llama-3-70b) plus
  Vidur's A100 decode-attention table (shape-only rows; no experiment reports on them);
- hopper: the seed-0 20% sample of AIConfigurator's H100 GEMM (bf16, fp8) and attention rows,
  the same sample the aic_h100 experiment fits on; and its collective parameters
  (`comm_base_s`, `comm_latency_s`, `comm_bw_eff`) from the seed-0 20% sample of vLLM's custom
  all-reduce captured in CUDA graphs, the sample the aic_allreduce experiment fits on (how a
  vLLM decode iteration all-reduces; prefill's larger messages follow the same curve); and its
  fused-MoE, MLA-module and block-FP8 GEMM parameters from the seed-0 20% samples of the H100
  MoE, MLA and `fp8_block` GEMM tables (benchmarks/moe_accuracy.py's splits: one fit per MoE
  kernel family, each starting from the Hopper dense parameters just derived, which they use).

Each fit starts from the generic defaults (`Efficiencies()`), so the result does not depend on
the values it replaces. Only the parameters those rows inform are kept; the rest of an
architecture's defaults stay generic.

Run: `.venv/bin/python benchmarks/derive_arch_defaults.py` (about a minute on 2 cores). Prints
the `ARCH_DEFAULTS` literal to paste, writes benchmarks/out/arch_defaults.json.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from costmodel_accuracy import COMM, VIDUR_FIT_MODELS, _cap, aic_allreduce_split, aic_split  # noqa: E402
from moe_accuracy import block_split, fit_block, fit_mla, fit_moe, mla_split, moe_split  # noqa: E402

from costmodel.efficiencies import Efficiencies  # noqa: E402
from costmodel.fit import fit_params  # noqa: E402
from costmodel.importers import load_measured  # noqa: E402
from costmodel.paths import profiles_dir  # noqa: E402


def ampere_rows(prof: Path) -> pd.DataFrame:
    v = load_measured(prof / "vidur", "vidur")
    ops = v[v["model"].isin(VIDUR_FIT_MODELS)]
    return pd.concat([ops, v[v["op"] == "attn_decode"]], ignore_index=True)


def hopper_rows(prof: Path) -> pd.DataFrame:
    rows, fit = aic_split(prof)  # costmodel_accuracy.py's own split, not a copy of it
    return rows[fit].reset_index(drop=True)


def derivation_row_ids(prof: Path) -> set[str]:
    """The row ids of every AIConfigurator H100 row the Hopper defaults were derived from (the
    fitting masks `main` uses): a benchmark that scores H100 rows from those defaults leaves
    them out of its score."""
    ids: set[str] = set(hopper_rows(prof)["row_id"])  # read from the H100 folder itself
    # the others read a subfolder, whose row ids are relative to it: made relative to the folder
    comm, fit = aic_allreduce_split(prof)
    ids |= {f"comm/vllm/{i}" for i in comm[fit]["row_id"]}
    h100 = prof / "aiconfigurator" / "h100_sxm"
    for sub, split in (("moe", moe_split), ("mla", mla_split), ("gemm", block_split)):
        got = split(h100)
        if got is not None:
            rows, mask = got
            ids |= {f"{sub}/{i}" for i in rows[mask]["row_id"]}
    return ids


def _sig(x: float) -> float:
    return float(f"{x:.4g}")


def main() -> dict:
    prof = profiles_dir()
    out, t0 = {}, time.time()
    for arch, rows in (("ampere", ampere_rows(prof)), ("hopper", hopper_rows(prof))):
        res = fit_params(_cap(rows), start=Efficiencies())
        generic = Efficiencies()
        moved = [k for k in sorted(res.fitted)  # rows that do not inform a parameter leave it put
                 if abs(getattr(res.params, k) / getattr(generic, k) - 1) > 1e-3]
        out[arch] = {"params": {k: _sig(getattr(res.params, k)) for k in moved},
                     "rows": int(len(rows)), "fit_mape": res.residuals["mape"],
                     "ops": sorted(rows["op"].unique())}
        print(f"{arch}: {len(rows)} fitting rows, fit MAPE {res.residuals['mape']:.4f}, "
              f"{len(res.fitted)} parameters", flush=True)
    comm, fit = aic_allreduce_split(prof)
    res = fit_params(comm[fit].reset_index(drop=True), start=Efficiencies(), params=COMM)
    out["hopper"]["params"].update({k: _sig(getattr(res.params, k)) for k in COMM})
    # MoE, MLA and block-FP8: their own parameters only, on the Hopper dense ones just derived
    from dataclasses import replace

    base = replace(Efficiencies(), **out["hopper"]["params"])
    h100 = prof / "aiconfigurator" / "h100_sxm"
    for kind, split, fitter in (("moe", moe_split, fit_moe), ("mla", mla_split, fit_mla),
                                ("block_fp8", block_split, fit_block)):
        rows, mask = split(h100)
        fitted = fitter(rows[mask].reset_index(drop=True), base)
        moved = {k: _sig(getattr(fitted, k)) for k in Efficiencies.__dataclass_fields__
                 if getattr(fitted, k) != getattr(base, k)}
        out["hopper"]["params"].update(moved)
        out["hopper"][f"{kind}_rows"] = int(mask.sum())
        print(f"hopper {kind}: {int(mask.sum())} fitting rows, {len(moved)} parameters", flush=True)
    out["hopper"]["params"] = dict(sorted(out["hopper"]["params"].items()))
    out["hopper"]["comm_rows"], out["hopper"]["comm_fit_mape"] = int(fit.sum()), res.residuals["mape"]
    print(f"hopper collectives: {int(fit.sum())} fitting rows, fit MAPE {res.residuals['mape']:.4f}")
    print("\nARCH_DEFAULTS = {")
    for arch, d in out.items():
        print(f'    "{arch}": {{')
        for k, v in d["params"].items():
            print(f'        "{k}": {v!r},')
        print("    },")
    print("}")
    dst = REPO / "benchmarks" / "out" / "arch_defaults.json"
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_text(json.dumps(out, indent=1))
    print(f"wall {time.time() - t0:.0f} s; wrote {dst.relative_to(REPO)}")
    return out


if __name__ == "__main__":
    main()
