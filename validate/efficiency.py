"""Achieved fraction of the roofline of each measured operator.

For a measured row, the ideal time is max(FLOPs / peak FLOP/s, bytes / peak bandwidth) with
the FLOP and byte counts of the kernel modules (`validate.kernels.<module>.flops`,
`bytes_moved`), and the fraction is ideal / measured: 1.0 is a kernel at the roofline. The
peaks are the device's HardwareSpec (datasheet for a GPU preset, measured for the CPU). On a
GPU the rows time the Triton kernels; on a CPU they time the torch operators, so a CPU's
fractions say how far torch gets on it, not how good the Triton kernels are.

MoE rows count the rows that land on the GPU's experts under balanced routing (T x top-k / ep)
and each active expert's weights once (`kernels.fused_moe`); MLA rows the module's projections
and its attention (`mla_reference.mla_counts`, the torch module: no Triton kernel). Rows with
no kernel formula behind them (`residual_add`, `embedding`) are left out.
"""

from __future__ import annotations

import pandas as pd

from costmodel.hardware import HardwareSpec

GEMMS = ("qkv_proj", "o_proj", "mlp_up_proj", "mlp_down_proj", "lm_head", "gemm")


def _counts(r) -> tuple[str, float, float] | None:
    """(kernel, FLOPs, bytes) of one native row, from the kernel modules' formulas."""
    from validate.kernels import flash_attn, gemm, paged_decode, rmsnorm, rope, spec_verify, swiglu

    op = r["op"]
    if op == "moe":
        from validate.kernels import fused_moe

        t, e, ep, topk = int(r["num_tokens"]), int(r["num_experts"]), int(r["moe_ep"]), int(r["topk"])
        rows, inter, gated = t * topk / ep, int(r["inter"]) // int(r["moe_tp"]), bool(r["moe_gated"])
        wb = 1.0 if r["precision"] in ("fp8", "fp8_block") else 2.0
        active = min(e // ep, rows)
        return ("fused_moe", fused_moe.flops(rows, int(r["hidden"]), inter, gated),
                fused_moe.bytes_moved(t, rows, active, int(r["hidden"]), inter, gated, w_bytes=wb))
    if op in ("mla_prefill", "mla_decode"):
        from validate.mla_reference import mla_counts

        return ("mla (torch)",) + mla_counts(r)
    if op in GEMMS:
        ib = 1 if r["precision"] in ("fp8", "fp8_block") else 2
        m, n, k = int(r["m"]), int(r["n"]), int(r["k"])
        return "matmul", gemm.flops(m, n, k), gemm.bytes_moved(m, n, k, in_bytes=ib)
    if op in ("input_layernorm", "post_attention_layernorm"):
        return "rms_norm", rmsnorm.flops(int(r["m"]), int(r["k"])), rmsnorm.bytes_moved(int(r["m"]), int(r["k"]))
    if op == "rope":  # k = (Hq + Hkv) x D elements per token: the formulas only need the product
        m, k = int(r["m"]), int(r["k"])
        return "apply_rope", rope.flops(m, k, 0, 1), rope.bytes_moved(m, k, 0, 1)
    if op == "mlp_act" and str(r["kernel"]).endswith("silu_and_mul"):
        return "silu_and_mul", swiglu.flops(int(r["m"]), int(r["n"])), swiglu.bytes_moved(int(r["m"]), int(r["n"]))
    b, hq, hkv, hd = int(r["batch_size"]), int(r["num_heads"]), int(r["num_kv_heads"]), int(r["head_dim"])
    ctx = int(r["context_len"])
    if op == "attn_prefill" and str(r["kernel"]).endswith("spec_verify_attention"):
        k = int(r["prefill_len"]) - 1
        lens = [ctx + k + 1] * b
        return ("spec_verify_attention", spec_verify.flops(lens, k, hq, hd),
                spec_verify.bytes_moved(lens, k, hq, hkv, hd))
    if op == "attn_prefill":
        q, p = [int(r["prefill_len"])] * b, [ctx] * b
        return "flash_attn_prefill", flash_attn.flops(q, p, hq, hd), flash_attn.bytes_moved(q, p, hq, hkv, hd)
    if op == "attn_decode":
        lens = [ctx + 1] * b
        return ("paged_decode_attention", paged_decode.flops(lens, hq, hd),
                paged_decode.bytes_moved(lens, hq, hkv, hd))
    return None


def roofline_fractions(rows: pd.DataFrame, hw: HardwareSpec) -> pd.DataFrame:
    """One row per measured operator: kernel, FLOPs, bytes, measured_s, ideal_s, fraction,
    and which roof binds (`compute` or `memory`)."""
    out = []
    for _, r in rows.iterrows():
        c = _counts(r)
        if c is None:
            continue
        kernel, flops, nbytes = c
        peak = hw.fp8_flops if r["precision"] == "fp8" and hw.has_fp8 else hw.bf16_flops
        t_c, t_m = flops / peak, nbytes / hw.hbm_bw_bytes_s
        ideal = max(t_c, t_m)
        out.append({"row_id": r["row_id"], "op": r["op"], "kernel": kernel, "flops": flops,
                    "bytes": nbytes, "measured_s": r["measured_s"], "ideal_s": ideal,
                    "fraction": ideal / r["measured_s"], "bound": "compute" if t_c >= t_m else "memory"})
    return pd.DataFrame(out)


def summarise(fr: pd.DataFrame, top: int = 3) -> dict:
    """Per kernel: the median fraction over all its rows, and over its `top` largest (by ideal
    time) rows, where launch and tail effects matter least."""
    res = {}
    if fr.empty:
        return res
    for kernel, g in fr.groupby("kernel"):
        big = g.nlargest(top, "ideal_s")
        res[kernel] = {"rows": int(len(g)), "median": float(g["fraction"].median()),
                       "large_shapes": float(big["fraction"].median()),
                       "bound_large": str(big["bound"].mode().iat[0])}
    return res
