"""Predict measured rows: the cost model's time for each row of the native schema.

`predict_rows(rows, calibration=None, params=None)` returns one predicted time (seconds) per
row, computed from the same roofline functions `CostModel` uses, vectorised over rows:
- GEMM rows -> `roofline.gemm_time_s_v` at the row's (m, n, k) and precision;
- elementwise rows -> `roofline.elementwise_time_s_v` of m (k + n) x 2 bytes;
- GEMM rows of `fp8_block` precision -> `block_fp8.block_fp8_gemm_time_s` (timed eagerly);
- attention rows -> prefill / decode attention of the row's batch, heads and lengths;
- `moe` rows -> `moe_kernels.fused_moe_time_s` (the row's kernel family);
- `mla_prefill` / `mla_decode` rows -> `mla.mla_prefill_time_s` / `mla_decode_time_s` (the
  path from the row's kernel: FLASH_ATTN prefills, the MLA kernels run the absorbed path);
- collective rows -> all-reduce / all-gather / ... over NVLink (or the NIC across nodes);
- `prefill_step` / `decode_step` rows -> `CostModel.step_time_s` for the model, GPU and TP.
Rows whose model has no preset predict NaN; `skipped_mask` tells which rows no prediction is
compared with (those, and step rows whose batch cannot fit the KV cache, `kv_fit_mask`). Parameters per GPU
come from `params[gpu]`, else the calibration profile, else the defaults; with a profile that
carries measured GEMM tables, GEMM rows use them (`use_tables=False` gives the pure roofline).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from costmodel import attention as at
from costmodel import roofline as rl
from costmodel.arch_defaults import default_efficiencies
from costmodel.efficiencies import ELEM_EFF_PARAM, MOE_FAMILIES, PARAM_BOUNDS, Efficiencies
from costmodel.errors import ServePlanError
from costmodel.hardware import load_gpu
from costmodel.importers import (
    ATTENTION_OPS,
    COMM_OPS,
    ELEMENTWISE_OPS,
    GEMM_OPS,
    MLA_OPS,
    MOE_OPS,
    STEP_OPS,
)

_W_BYTES = {"bf16": 2.0, "fp8": 1.0, "fp8_block": 1.0, "int4": 0.5 + 2.0 / 128}
_KV_BYTES = {"bf16": 2.0, "fp8": 1.0, "int4": 0.5 + 2.0 / 64}

# which parameters each kind of row informs (what `fit` may move when fitting such rows)
PARAMS_BY_FAMILY = {
    "gemm": ("gemm_compute_eff", "gemm_mem_eff", "gemm_blend", "gemm_overlap_k",
             "gemm_ctas_per_sm", "gemm_wave_exp", "kernel_overhead_s", "gemm_tile_load"),
    "gemm_fp8": ("fp8_compute_eff", "fp8_quant_row_s", "fp8_quant_mem_eff", "fp8_blend",
                 "fp8_power_slow", "fp8_power_tau_s", "fp8_partial_slow"),
    "attn_prefill": ("attn_compute_eff", "attn_softmax_flops", "attn_blend", "attn_per_seq_s",
                     "attn_overhead_s", "attn_tile_s", "attn_fp8_compute_eff", "attn_fp8_kv_s",
                     "attn_cache_cta_s", "attn_fp8_cache_cta_s", "attn_fp8_tile_s"),
    "attn_decode": ("attn_mem_eff", "attn_fp8_mem_eff", "attn_decode_blend", "attn_decode_cta_s",
                    "attn_overhead_s", "attn_decode_fp8_s", "attn_ctas_per_sm", "l2_bw_ratio",
                    "attn_fp8_decode_eff"),
    "comm": ("comm_latency_s", "comm_bw_eff", "comm_base_s"),
    "comm_p2p": ("comm_latency_s", "p2p_bw_eff"),
    "comm_net": ("net_latency_s", "net_bw_eff", "comm_base_s"),
    "comm_net_p2p": ("net_latency_s", "net_bw_eff"),
    "step": ("host_overhead_s", "host_per_seq_s"),
    "gemm_fp8_block": ("fp8b_compute_eff", "fp8b_flashinfer_host_s", "fp8b_deepgemm_host_s",
                       "fp8b_cutlass_host_s", "fp8b_host_blend"),
    "mla_prefill": ("mla_overhead_s", "mla_attn_mem_eff", "mla_attn_compute_eff",
                    "mla_attn_per_seq_s", "mla_fp8_attn_mem_eff", "mla_fp8_attn_compute_eff",
                    "mla_fp8_attn_per_seq_s", "mla_fp8_overhead_s", "mla_prefill_compute_eff",
                    "mla_token_head_s", "mla_token_s"),
    "mla_decode": ("mla_overhead_s", "mla_attn_mem_eff", "mla_attn_compute_eff",
                   "mla_attn_per_seq_s", "mla_fp8_attn_mem_eff", "mla_fp8_attn_compute_eff",
                   "mla_fp8_attn_per_seq_s", "mla_fp8_overhead_s", "mla_token_head_s",
                   "mla_token_s"),
    **{f"moe_{f}": tuple(f"moe_{f}_{n}" for n in (
        "compute_eff", "mem_eff", "k0", "expert_s", "block_s", "ep_s", "row_h", "row_i",
        "overhead_s", "blend"))
       for f in MOE_FAMILIES},
}


def family(op: str) -> str:
    if op in GEMM_OPS:
        return "gemm"
    if op in ELEMENTWISE_OPS:
        return "elementwise"
    if op in ATTENTION_OPS:
        return op
    if op in COMM_OPS:
        return "comm"
    if op in STEP_OPS:
        return "step"
    if op in MOE_OPS + MLA_OPS:
        return op
    raise ServePlanError(f"op {op!r}; expected one of {', '.join(GEMM_OPS + ELEMENTWISE_OPS + ATTENTION_OPS + COMM_OPS + STEP_OPS + MOE_OPS + MLA_OPS)}")


def informed_params(rows: pd.DataFrame) -> list[str]:
    """Parameters that the rows' ops depend on, in Efficiencies field order."""
    names: set[str] = set()
    gemm = rows["op"].isin(GEMM_OPS)
    if "precision" in rows and rows["precision"].isin(("fp8", "fp8_block")).any() and gemm.any():
        names |= set(PARAMS_BY_FAMILY["gemm_fp8"])
    if "precision" in rows and (gemm & (rows["precision"] == "fp8_block")).any():
        names |= set(PARAMS_BY_FAMILY["gemm_fp8_block"])
    for op in rows["op"].unique():
        fam = family(op)
        if fam == "moe":
            from costmodel.moe_kernels import moe_kernel_family

            sel = rows[rows["op"] == op]
            for prec, kern in sel[["precision", "kernel"]].drop_duplicates().itertuples(index=False):
                names |= set(PARAMS_BY_FAMILY["moe_" + moe_kernel_family(prec, kern)])
        elif fam == "comm":
            sel = rows[rows["op"] == op]
            net = _internode(sel, _gpus_per_node(sel))
            if (~net).any():
                names |= set(PARAMS_BY_FAMILY["comm_p2p" if op == "send_recv" else "comm"])
            if net.any():
                names |= set(PARAMS_BY_FAMILY["comm_net_p2p" if op == "send_recv" else "comm_net"])
        elif fam == "elementwise":
            names |= {ELEM_EFF_PARAM.get(op, "elem_mem_eff"), "elem_overhead_s"}
            if op in rl.NORM_OPS:
                names.add("norm_row_elem_s")
        else:
            names |= set(PARAMS_BY_FAMILY[fam])
    return [p for p in PARAM_BOUNDS if p in names]


def _gpus_per_node(rows: pd.DataFrame) -> np.ndarray:
    from costmodel.hardware import load_gpu

    out = np.full(len(rows), 8.0)
    if "gpu" in rows:
        for g in rows["gpu"].unique():
            try:
                out[(rows["gpu"] == g).to_numpy()] = load_gpu(g).gpus_per_node
            except ServePlanError:
                pass  # an unknown GPU fails later, where its rows are priced
    return out


class _Fixed:
    """Duck-typed calibration handing CostModel fixed parameters (and optional tables)."""

    def __init__(self, eff: Efficiencies, tables=None):
        self.eff, self.tables = eff, tables

    def efficiencies_for(self, gpu_name: str) -> Efficiencies:
        return self.eff

    def tables_for(self, gpu_name: str):
        return self.tables


def _eff_for(gpu: str, calibration, params) -> Efficiencies:
    if params is not None and gpu in params:
        return params[gpu]
    if calibration is not None:
        return calibration.efficiencies_for(gpu)
    return default_efficiencies(gpu)


def skipped_mask(rows: pd.DataFrame) -> np.ndarray:
    """Rows no prediction is compared with: whole-step rows of a model with no preset, and
    whole-step rows whose batch cannot have run as one batch (`kv_fit_mask`)."""
    from costmodel.specs import MODEL_PRESETS

    unknown = (rows["op"].isin(STEP_OPS) & ~rows["model"].isin(list(MODEL_PRESETS))).to_numpy()
    return unknown | ~kv_fit_mask(rows)


def kv_tokens_needed(rows: pd.DataFrame) -> np.ndarray:
    """KV-cache tokens a step row's batch holds at its longest: `batch_size` sequences of
    `prefill_len + gen_len` tokens (prefill rows without `gen_len`: the prompts alone; decode
    rows without it: `context_len + 1`). 0 for rows that are not whole steps."""
    b = rows["batch_size"].to_numpy(float)
    pl = rows["prefill_len"].to_numpy(float)
    gen = rows["gen_len"].to_numpy(float) if "gen_len" in rows else np.zeros(len(rows))
    ctx = rows["context_len"].to_numpy(float)
    op = rows["op"].to_numpy()
    per_seq = np.where(gen > 0, pl + gen, np.where(op == "prefill_step", pl + ctx, ctx + 1))
    return np.where(np.isin(op, STEP_OPS), b * per_seq, 0.0)


def kv_fit_mask(rows: pd.DataFrame) -> np.ndarray:
    """False for whole-step rows whose batch does not fit the KV cache that vLLM's defaults
    leave on that GPU (`memory.memory_plan` at the GPU's `engine_defaults`).

    Such a row cannot have been measured as the batch it names: the engine admits part of it
    or preempts, so its time is of a smaller batch (Splitwise's Llama2-70B TP2 batch of 64 x
    (512 + 128) tokens needs 40,960 tokens of a 39,200-token cache, and is measured 8x faster
    than batch 32). Predicting it as named and scoring the difference would score the data, not
    the model. True for every other row (and for models without a preset)."""
    from costmodel.engine_defaults import engine_defaults
    from costmodel.memory import memory_plan
    from costmodel.model import CostModel
    from costmodel.specs import MODEL_PRESETS

    ok = np.ones(len(rows), dtype=bool)
    if rows.empty:
        return ok
    need = kv_tokens_needed(rows)
    step = (need > 0) & rows["model"].isin(list(MODEL_PRESETS)).to_numpy()
    if not step.any():
        return ok
    sub = rows[step]
    keys = ["gpu", "model", "tp", "pp", "precision", "kv_dtype"]
    cap: dict[tuple, int] = {}
    for key in sub[keys].drop_duplicates().itertuples(index=False, name=None):
        gpu_name, model, tp, pp, prec, kv = key
        gpu = load_gpu(gpu_name)
        d = engine_defaults(gpu)
        cm = CostModel(model, gpu, tp=int(tp), pp=int(pp), precision=prec, kv_dtype=kv)
        cap[key] = memory_plan(cm, d.gpu_memory_utilization, d.max_num_batched_tokens,
                               d.max_num_seqs, d.block_size).kv_capacity_tokens
    caps = np.array([cap[k] for k in sub[keys].itertuples(index=False, name=None)], dtype=float)
    ok[np.flatnonzero(step)] = need[step] <= caps
    return ok


class PreparedRows:
    """Rows split once by GPU and operator family, for a caller that predicts the same rows
    many times (a fit: every least-squares step). Each part is the rows' own sub-frame with its
    text columns as Python strings, so a prediction neither re-slices the frame nor converts
    Arrow strings again; `predict_rows` gives the same numbers for these as for the frame."""

    __slots__ = ("n", "parts")

    def __init__(self, rows: pd.DataFrame):
        self.n = len(rows)
        self.parts: list[tuple[str, str, np.ndarray, pd.DataFrame]] = []
        if rows.empty:
            return
        fam = rows["op"].map({op: family(op) for op in rows["op"].unique()}).to_numpy()
        for gpu_name, idx in rows.groupby("gpu").indices.items():
            sub, f = rows.iloc[idx], fam[idx]
            for kind in pd.unique(f):  # hashing, not sorting
                sel = f == kind
                part = sub[sel]
                text = [c for c in part.columns if pd.api.types.is_string_dtype(part[c].dtype)
                        and part[c].dtype != object]
                self.parts.append((str(gpu_name), str(kind), idx[sel],
                                   part.astype(dict.fromkeys(text, object)) if text else part))


def predict_rows(rows: pd.DataFrame | PreparedRows, calibration=None,
                 params: dict[str, Efficiencies] | None = None, use_tables: bool = True) -> np.ndarray:
    """Predicted seconds for each row (NaN where `skipped_mask`); `rows` a frame or the same
    frame's `PreparedRows`."""
    prep = rows if isinstance(rows, PreparedRows) else PreparedRows(rows)
    out = np.full(prep.n, np.nan)
    by_gpu: dict[str, tuple] = {}
    for gpu_name, kind, idx, part in prep.parts:
        if gpu_name not in by_gpu:
            gpu = load_gpu(gpu_name)
            tables = calibration.tables_for(gpu.name) if (calibration is not None and use_tables) else None
            by_gpu[gpu_name] = (gpu, _eff_for(gpu.name, calibration, params), tables)
        gpu, eff, tables = by_gpu[gpu_name]
        out[idx] = _predict_family(kind, part, gpu, eff, tables)
    return out


def _predict_family(kind: str, r: pd.DataFrame, gpu, eff: Efficiencies, tables) -> np.ndarray:
    t = _roofline_family(kind, r, gpu, eff, tables)
    table = tables.tables.get(kind) if tables is not None and kind != "step" else None
    if table is not None:
        from costmodel.tables import row_keys

        cats, feats = row_keys(kind, r)
        t = t * table.factor_v(cats, feats)
    return t


def _roofline_family(kind: str, r: pd.DataFrame, gpu, eff: Efficiencies, tables) -> np.ndarray:
    if kind == "gemm":
        return _gemm(r, gpu, eff)
    if kind == "elementwise":
        t = np.empty(len(r))
        ops = r["op"].to_numpy()
        nbytes = r["m"].to_numpy(float) * (r["k"].to_numpy(float) + r["n"].to_numpy(float)) * 2.0
        for op in np.unique(ops):
            s = ops == op
            t[s] = rl.elementwise_time_s_v(nbytes[s], gpu, eff, op, r["n"].to_numpy(float)[s])
        return t
    if kind == "attn_prefill":
        kvb = r["kv_dtype"].map(_KV_BYTES).fillna(2.0).to_numpy()
        return at.prefill_attn_time_s_v(
            r["batch_size"].to_numpy(float), r["prefill_len"].to_numpy(float),
            r["context_len"].to_numpy(float), r["num_heads"].to_numpy(float),
            r["num_kv_heads"].to_numpy(float), r["head_dim"].to_numpy(float),
            r["window"].to_numpy(float), gpu, eff, kvb)
    if kind == "attn_decode":
        kvb = r["kv_dtype"].map(_KV_BYTES).fillna(2.0).to_numpy()
        b = r["batch_size"].to_numpy(float)
        ctx = r["context_len"].to_numpy(float)
        w = r["window"].to_numpy(float)
        # a sliding window past the first `w` keys rarely starts on a KV-tile boundary: the
        # kernel loads (and masks) the tile it starts in, one tile more than the window
        ctx = np.where(w > 0, np.minimum(ctx, w + at.ATTN_TILE_KV), ctx)
        return at.decode_attn_time_s_v(b, b * ctx, 1, r["num_heads"].to_numpy(float),
                                       r["num_kv_heads"].to_numpy(float),
                                       r["head_dim"].to_numpy(float), gpu, eff, kvb,
                                       l2_warm=True)  # a kernel timed in a loop
    if kind == "comm":
        return _comm(r, gpu, eff)
    if kind == "moe":
        from costmodel.moe_kernels import fused_moe_time_s

        return fused_moe_time_s(
            num_tokens=r["num_tokens"].to_numpy(), hidden=r["hidden"].to_numpy(),
            inter=r["inter"].to_numpy(), topk=r["topk"].to_numpy(),
            num_experts=r["num_experts"].to_numpy(), gpu=gpu, eff=eff,
            precision=r["precision"].to_numpy(), tp=r["moe_tp"].to_numpy(),
            ep=r["moe_ep"].to_numpy(), gated=r["moe_gated"].to_numpy() != 0, routing=r["routing"].replace("", "balanced").to_numpy(),
            kernel=r["kernel"].to_numpy())
    if kind in MLA_OPS:
        return _mla(kind, r, gpu, eff)
    return _steps(r, gpu, eff, tables)


def _mla(kind: str, r: pd.DataFrame, gpu, eff: Efficiencies) -> np.ndarray:
    from costmodel import mla

    dims = {c: r[c].to_numpy() for c in ("hidden", "q_lora_rank", "kv_lora_rank", "qk_nope_dim",
                                         "qk_rope_dim", "v_head_dim")}
    common = dict(num_heads=r["num_heads"].to_numpy(), gpu=gpu, eff=eff,
                  precision=r["precision"].to_numpy(), kv_dtype=r["kv_dtype"].to_numpy(), **dims)
    if kind == "mla_decode":
        return mla.mla_decode_time_s(batch=r["batch_size"].to_numpy(),
                                     context_len=r["context_len"].to_numpy(),
                                     q_tokens=np.maximum(r["prefill_len"].to_numpy(), 1), **common)
    # the kernel the table names says which path ran (FLASH_ATTN: prefill; the MLA kernels: absorbed)
    kern = r["kernel"].to_numpy()
    absorbed = np.where(kern == "", r["prefill_len"].to_numpy() <= mla.ABSORB_MAX_CHUNK,
                        kern != "FLASH_ATTN")
    return mla.mla_prefill_time_s(batch=r["batch_size"].to_numpy(),
                                  prompt_len=r["prefill_len"].to_numpy(), absorbed=absorbed, **common)


def _gemm(r: pd.DataFrame, gpu, eff: Efficiencies) -> np.ndarray:
    prec = r["precision"].to_numpy()
    fp8 = np.isin(prec, ("fp8", "fp8_block")) & gpu.has_fp8
    peak = np.where(fp8, gpu.fp8_flops, gpu.bf16_flops)
    w = r["precision"].map(_W_BYTES).fillna(2.0).to_numpy()
    act = np.where(fp8, 1.0, 2.0)
    m, n, k = (r[c].to_numpy(np.int64) for c in ("m", "n", "k"))
    t = rl.gemm_time_s_v(m, n, k, gpu, eff, peak, w, act, fp8)
    block = prec == "fp8_block"
    if block.any():  # block-scaled fp8, timed eagerly as the tables are (costmodel/block_fp8.py)
        from costmodel.block_fp8 import block_fp8_gemm_time_s, block_fp8_kernel

        kern = r["kernel"].str.lower().to_numpy()
        kern = np.select([np.char.find(kern.astype(str), x) >= 0 for x in ("flashinfer", "deepgemm", "cutlass")],
                         ["flashinfer", "deepgemm", "cutlass"], "")
        kern = np.where(kern == "", block_fp8_kernel(m, n, k), kern)
        t = np.where(block, block_fp8_gemm_time_s(m=m, n=n, k=k, gpu=gpu, eff=eff, graph=False,
                                                  kernel=kern), t)
    return t


def _internode(r: pd.DataFrame, gpus_per_node) -> np.ndarray:
    """Collective rows whose group spans nodes (the importer says so, or it outnumbers a node);
    `gpus_per_node` a number or one per row."""
    return (r["kernel"].to_numpy() == "nccl-internode") \
        | (r["num_gpus"].to_numpy(float) > gpus_per_node)


def _comm(r: pd.DataFrame, gpu, eff: Efficiencies) -> np.ndarray:
    n = r["num_gpus"].to_numpy(float)
    internode = _internode(r, gpu.gpus_per_node)
    # "nccl-pcie": a group inside a node that spans GPUs without NVLink between them (Vidur's
    # pairwise-NVLink machines, 4 GPUs): the ring runs over PCIe
    pcie = r["kernel"].to_numpy() == "nccl-pcie"
    bw = np.where(internode, gpu.network_bw_bytes_s,
                  np.where(pcie, gpu.pcie_bw_bytes_s, gpu.intra_node_bw_bytes_s()))
    t = np.empty(len(r))
    ops = r["op"].to_numpy()
    for op in np.unique(ops):
        s = ops == op
        t[s] = rl.collective_time_s_v(op, r["msg_bytes"].to_numpy(float)[s], n[s], bw[s], eff,
                                      internode[s])
    return t


def _steps(r: pd.DataFrame, gpu, eff: Efficiencies, tables) -> np.ndarray:
    from costmodel.model import CostModel
    from costmodel.specs import MODEL_PRESETS

    t = np.full(len(r), np.nan)
    keys = ["model", "tp", "pp", "precision", "kv_dtype"]
    pos = {ix: i for i, ix in enumerate(r.index)}
    cal = _Fixed(eff, tables)
    for (model, tp, pp, prec, kv), g in r.groupby(keys):
        if model not in MODEL_PRESETS:
            continue
        cm = CostModel(model, gpu, tp=int(tp), pp=int(pp), precision=prec, kv_dtype=kv,
                       calibration=cal)
        for ix, op, b, pl, ctx in zip(g.index, g["op"], g["batch_size"], g["prefill_len"],
                                      g["context_len"], strict=True):
            if op == "prefill_step":
                t[pos[ix]] = cm.step_time_s(prefill=[(int(pl), int(ctx))] * int(b))
            else:
                t[pos[ix]] = cm.step_time_s(n_decode=int(b), decode_ctx_sum=float(b * ctx))
    return t
