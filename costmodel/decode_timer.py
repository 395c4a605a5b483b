"""A decode-only iteration's time as a function of its cached context alone, for a fixed batch.

The simulator runs long stretches of iterations in which the same sequences just decode
(`sim.replica.Replica._fast_window`): the batch size stays, the context grows by one token a
sequence. `decode_step_timer(cm, n)` returns `ctx_sum -> CostModel.step_time_s((), n, ctx_sum, 1)`
with everything that depends on `n` alone (dense operators, collectives, host time, the
attention kernel's per-batch terms) computed once. It evaluates the same expressions in the same
order, so it returns the same float to the bit (tests/costmodel/test_decode_timer.py); where
the general path does something more (MLA or sliding-window attention, measured-table
corrections, an fp8 cache whose tiles the kernel cannot overlap, L2-warm reads) it returns None
and the caller times each iteration in full.
"""

from __future__ import annotations

from collections.abc import Callable

from costmodel import attention as at
from costmodel.efficiencies import _blend, clock_scale


def decode_step_timer(cm, n: int) -> Callable[[int], float] | None:
    """`ctx_sum -> cm.step_time_s((), n, ctx_sum, 1)` for `n` >= 1 decoding sequences, or None
    where only the general path is exact (module doc)."""
    m, e, gpu = cm.model, cm.eff, cm.gpu
    kvb, qh, kvh, hd = cm.kv_elem_bytes, cm.q_heads, cm.kv_heads, m.head_dim
    if n < 1 or m.is_mla or m.num_sliding_layers or cm._tables is not None or not at._overlaps_s(hd, kvb < 2.0):
        return None
    # the iteration around the attention: CostModel.step_time_s (step_parts when scaled) with
    # its prefill terms, exact zeros here, left out
    per_layer, once = cm._dense_time(n, n)
    L = m.num_layers
    scaled = e.prefill_time_scale != 1.0 or e.decode_time_scale != 1.0
    comm = cm._comm_time(n, n) if scaled else 0.0
    base = per_layer + once - comm if scaled else per_layer + once
    sd, host, overlap = e.decode_time_scale, cm._host(n), cm.host_overlap
    # attention.decode_attn_time_s at one query token a sequence, no L2 reuse
    sms = gpu.sm_count
    units = n * kvh
    keys = at._tile_keys_s(int(hd), kvb < 2.0)
    fa3 = gpu.arch not in at.FA2_ARCHS
    graph = n * 1 <= at.GRAPH_MAX_TOKENS and fa3
    scan = at.SCAN_PER_SEQ_GRAPH if graph else (at.SCAN_PER_SEQ_PLAIN if fa3 else 0.0)
    mem_eff = e.attn_fp8_mem_eff if kvb < 2.0 else e.attn_mem_eff
    hbm_eff = gpu.hbm_bw_bytes_s * mem_eff
    cta_den = e.attn_ctas_per_sm * sms
    q_bytes = n * 1 * qh * hd * 4
    tc_den = gpu.bf16_flops * e.attn_compute_eff
    cta_w, seq_scan = 0.5 + hd / 256.0, n * scan
    ovh, fp8_add = e.attn_overhead_s, (e.attn_decode_fp8_s if kvb < 2.0 else 0.0)
    cs, blend, cta_s, elem = clock_scale(gpu), e.attn_decode_blend, e.attn_decode_cta_s, e.elem_overhead_s
    last = at._last_tile_time(keys, hd, kvb, gpu.hbm_bw_bytes_s * mem_eff, sms)
    graph_splits, plain_splits = at._graph_splits_s, at._decode_splits

    def step(ctx_sum: int) -> float:
        ctx_mean = ctx_sum / n
        split = graph_splits(n, kvh, ctx_mean, keys, sms) if graph else plain_splits(units, ctx_mean, sms)
        ctas = units * split
        kv = ctx_sum * 2 * kvh * hd * kvb
        bw = hbm_eff * min(1.0, ctas / cta_den)
        t_m = (kv * 1.0 + q_bytes) / bw  # kv * (1 - hit + hit / l2_bw_ratio) at hit = 0
        t_c = 4.0 * qh * hd * ctx_sum * 1 / tc_den
        fixed = (ctas * cta_w + seq_scan) * cta_s + ovh + fp8_add
        if split > 1:
            fixed += elem
        t_dec = _blend(t_m, t_c, blend) + fixed * cs + last
        gpu_s = (base + L * t_dec) * sd + comm if scaled else base + L * t_dec
        return max(gpu_s, host) if overlap else gpu_s + host

    return step


def cached_step_timer(cm, n: int) -> Callable[[int], float]:
    """`decode_step_timer(cm, n)`, kept on `cm` per batch size (dropped when `cm.eff` is
    replaced), else the general `step_time_s` for that batch."""
    cache = cm.__dict__.get("_decode_timers")
    if cache is None or cache[0] is not cm.eff:
        cache = cm._decode_timers = (cm.eff, {})
    timer = cache[1].get(n)
    if timer is None:
        timer = cache[1][n] = decode_step_timer(cm, n) or (lambda ctx, f=cm.step_time_s: f((), n, ctx, 1))
    return timer
