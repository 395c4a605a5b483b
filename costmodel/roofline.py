"""Operator time from a roofline with fitted, physically meaningful efficiencies.

Each operator takes its compute time and its memory time, blended smoothly (a p-norm, so the
knee between the two regimes is round as measured, not sharp), plus a fixed per-kernel time.
The efficiencies are fractions of datasheet peaks, so a set fitted on one GPU carries to
another through the datasheet (that is what makes zero-shot prediction on a new GPU work):

- GEMM (bf16, int4 weight-only; cuBLAS-like): FLOPs at `gemm_compute_eff` of the tensor-core
  peak, lost to wave quantisation (the M x N output is cut into 128 x 128 tiles; the last wave
  runs partly empty, felt to the power `gemm_wave_exp` since the library picks among tile
  shapes) and to padding M up to a multiple of 64 rows (the libraries keep 64-row tiles for
  any M: 129 rows cost 192, not 256); bytes (A, B and C once each) at `gemm_mem_eff` of
  HBM bandwidth, whose reach falls when fewer than `gemm_ctas_per_sm` CTAs per SM run. The two
  times combine as a p-norm whose p = `gemm_blend` x (1 + K per CTA / `gemm_overlap_k`): a
  long main loop hides its loads under the MMAs (max), a short one pays its prologue and
  epilogue (nearer the sum); the W8A8 kernel has its own `fp8_blend`.
  `kernel_overhead_s` per kernel. With too few tiles to fill the SMs the library may split K
  (never below SPLITK_MIN_K per split) and pay a reduction kernel: the faster of the two.
- W8A8 GEMM (fp8; vLLM's CUTLASS kernel): tiles fixed by M (64 x 64 up to 64 rows, 64 x 128
  up to 128, else 128 x 128; N padded to the tile), the grid rounded up to whole clusters
  (1 x 8 tiles up to 64 rows, else 2 x 1), no split-K, the whole last wave paid, at
  `fp8_compute_eff` of the FP8 peak, slowing by up to `1 + fp8_power_slow` as the kernel
  lengthens (1 - exp(-t / `fp8_power_tau_s`)): dense FP8 at full rate draws more than the
  power cap allows for long (AIConfigurator's H100 rows: short kernels at 0.88 of the peak,
  long ones settle at 0.88 / 1.39 = 0.63, ~1.25 PFLOP/s, a time constant of ~0.1 ms; bf16
  GEMMs show no such trend); before it a per-token activation quantisation kernel
  moving 3 bytes per element of A at `fp8_quant_mem_eff` of HBM bandwidth plus
  `fp8_quant_row_s` per row.
- Attention (prefill and decode): costmodel/attention.py, which builds on the efficiencies
  and blends defined here (it imports this module; this module never imports it).
- Elementwise (norms, RoPE, activation, residual add, embedding gather): bytes at a per-kernel
  fraction of HBM bandwidth (`norm_mem_eff`, ...), plus `elem_overhead_s`.
- Collectives, per link type: `comm_base_s` once per group collective (kernel launch and the
  group's synchronisation, whatever its size; a send/recv only pairs two GPUs and pays none), a
  latency per step of the algorithm, and bytes at a fraction of the link's bandwidth (ring
  all-reduce moves 2 (n-1)/n of the message per GPU).
  Inside a node (NVLink, or PCIe where the group spans GPUs without NVLink between them) the
  step latency and efficiency are `comm_latency_s` / `comm_bw_eff` (`p2p_bw_eff` for a
  send/recv, a plain copy that reaches more of the link than a reducing ring); a group that
  spans nodes crosses the NIC, with `net_latency_s` / `net_bw_eff`.

Every formula exists twice: a scalar form on Python floats (the simulator's hot path) and an
array form (suffix `_v`, numpy, used to fit thousands of measured rows at once). A test keeps
the two equal.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace

import numpy as np

from costmodel.hardware import HardwareSpec

GEMM_TILE_M = 128
GEMM_TILE_N = 128
GEMM_MIN_TILE_M = 64  # M is padded to a multiple of 64 rows
SPLITK_MIN_K = 512  # split-K never cuts K below this many elements per split

# Fixed per-kernel times (prologue/epilogue, pipeline fill, serial per-row work) are counted in
# SM clock cycles: `Efficiencies` holds them in seconds at REF_CLOCK_HZ (the A100's boost clock,
# the GPU of the public fits behind the defaults) and a GPU pays them x REF_CLOCK_HZ / its clock.
# Boost SM clocks from NVIDIA / AMD datasheets; a GPU not listed runs at the reference clock.
REF_CLOCK_HZ = 1.41e9
SM_CLOCK_HZ = {
    "a100-40g": 1.41e9, "a100-80g": 1.41e9,
    "h100-sxm": 1.98e9, "h100-pcie": 1.755e9, "h200-sxm": 1.98e9,
    "b200": 1.965e9, "l40s": 2.52e9, "l4": 2.04e9, "a10g": 1.71e9, "mi300x": 2.1e9,
}


def clock_scale(gpu: HardwareSpec) -> float:
    """REF_CLOCK_HZ / the GPU's boost clock: the factor on every fixed per-kernel time."""
    return REF_CLOCK_HZ / SM_CLOCK_HZ.get(gpu.name, REF_CLOCK_HZ)


@dataclass(frozen=True)
class Efficiencies:
    """Free parameters of the cost model; `calibrate` fits them to measurements.

    Efficiencies are fractions of the GPU's datasheet peaks; `_s` fields are seconds, and the
    fixed per-kernel ones (`kernel_overhead_s`, `fp8_quant_row_s`, `attn_overhead_s`,
    `attn_per_seq_s`, `attn_tile_s`, `attn_fp8_kv_s`, `attn_cache_cta_s`, `attn_decode_cta_s`,
    `attn_decode_fp8_s`, `elem_overhead_s`, `norm_row_elem_s`) are seconds at REF_CLOCK_HZ,
    scaled by `clock_scale`; `fp8_power_tau_s` is a duration, not scaled.

    These are the generic defaults. An uncalibrated GPU whose architecture has fitted
    defaults (Ampere and Ada, Hopper and Blackwell) gets those instead, on top of this set:
    costmodel/arch_defaults.py. Where the generic values come from:
    - GEMM (`gemm_compute_eff`, `gemm_mem_eff`, `gemm_blend`, `gemm_overlap_k`,
      `gemm_wave_exp`; `gemm_blend` 1.4 and `gemm_overlap_k` 11,500 refitted 2026-11-22 when the
      overlap began to grow with K; `kernel_overhead_s` stays 4 us, which that refit leaves at 0
      and the H100 fit puts at 3.5 us), elementwise (`*_mem_eff`, `elem_overhead_s`) and
      `attn_mem_eff`: the fit on Vidur's A100 tables (all 8 models; benchmarks/costmodel_accuracy.py stage 1,
      2026-11-23), rounded.
    - `gemm_ctas_per_sm`: Little's law, not a fit (Vidur's GEMMs all run enough CTAs to leave
      it unconstrained): a 128x128 tile with a 4-stage pipeline of 64-deep K slices keeps
      ~128 KB in flight, so over ~0.7 us of HBM latency one CTA draws ~180 GB/s; 0.8 x 2 TB/s
      (A100) needs ~9 CTAs and 0.9 x 3.35 TB/s (H100) ~17, 0.08-0.13 per SM. (H100 GEMMs fitted
      alone give 0.12; the A100 fit never moves it.)
    - fp8 and collectives: hand-set starting values (no A100 FP8 exists; calibrate them per
      GPU; Hopper's collectives come from vLLM's all-reduce tables, costmodel/arch_defaults.py).
      The AIConfigurator H100 fit (benchmarks/costmodel_accuracy.py aic_h100, 2026-11-22) gives
      fp8_compute_eff 0.71, fp8_quant_mem_eff 0.68, fp8_quant_row_s 9 ns; the defaults stay
      hand-set so that the zero-shot A100 -> H100 experiment does not see H100 data.
    - host time per iteration (`host_overhead_s` + `host_per_seq_s` x sequences): the engine's
      scheduler, input preparation, sampling and output processing, which a synchronously
      scheduled engine (vLLM's default through 0.12) runs while the GPU waits. A line through
      the medians of Vidur's measured vLLM CPU overheads (`cpu_overheads.csv`: schedule +
      sampler + prepare inputs + process outputs, batch 8-256): 0.81 ms + 37.5 us per sequence.
      CPU time, so it does not shrink with TP; on vLLM 0.12's Qwen3-32B H100 runs the TPOT
      error no longer grows with concurrency (benchmarks/RESULTS.md, 2026-12-04).
    - attention (`attn_*` but `attn_mem_eff`, `l2_bw_ratio`): costmodel/attention.py.
    - `frontend_s`: an order of magnitude for one request through an engine's API server, not
      a fit. What it changes is that a closed-loop client's next request reaches the scheduler
      after the step it would have joined has started; benchmarks/e2e_accuracy.py gives the
      same TTFT error (within 0.1 points) for any value from 0.5 to 5 ms, and a very different
      one at 0 (benchmarks/RESULTS.md, 2026-12-04).
    """

    gemm_compute_eff: float = 0.74
    gemm_mem_eff: float = 0.81
    gemm_blend: float = 1.4  # p of the p-norm blending compute and memory time (inf = max)
    gemm_overlap_k: float = 11500.0  # K per CTA at which that p has doubled (loads hide under MMAs)
    gemm_ctas_per_sm: float = 0.12  # CTAs per SM needed to reach `gemm_mem_eff` of HBM bandwidth
    gemm_wave_exp: float = 0.2  # 0: the kernel hides the last partial wave, 1: pays all of it
    fp8_compute_eff: float = 0.55  # W8A8 GEMMs: fraction of the FP8 tensor-core peak
    fp8_quant_row_s: float = 5e-9  # W8A8 activation quantisation: fixed time per token row
    fp8_quant_mem_eff: float = 0.5  # W8A8 activation quantisation: fraction of HBM bandwidth
    fp8_blend: float = 2.7  # the W8A8 CUTLASS kernel's p-norm of compute and memory time
    fp8_power_slow: float = 0.05  # sustained fp8 GEMM: x (1 + this) once clocks drop to the power cap
    fp8_power_tau_s: float = 1e-3  # ... approached over this long a kernel (1 - exp(-t / tau))
    fp8_partial_slow: float = 0.02  # W8A8 past 64 rows: compute x (1 + this x empty share of last M tile)
    gemm_tile_load: float = 0.5  # bf16 GEMM: a CTA's tile stream (share of its tile bytes) bounds memory time
    kernel_overhead_s: float = 4e-6
    attn_compute_eff: float = 0.55
    attn_softmax_flops: float = 256.0  # softmax per (query, key, head), in tensor-core FLOPs
    attn_blend: float = 4.0  # p-norm blending prefill attention's compute, softmax and memory
    attn_decode_blend: float = 4.0  # p-norm blending a decode kernel's memory and compute times
    attn_mem_eff: float = 0.78
    attn_fp8_mem_eff: float = 0.78  # decode over an fp8 KV cache: dequantising in the loop
    attn_per_seq_s: float = 25e-9  # prefill: per (sequence x KV head) of a varlen batch
    attn_decode_cta_s: float = 25e-9  # decode: per CTA, one (sequence x KV head x KV split)
    attn_tile_s: float = 0.5e-6  # prefill: per (query tile x head) work item, Q load + O store
    attn_fp8_compute_eff: float = 0.55  # attention with an fp8 KV cache: fraction of BF16 peak
    attn_fp8_kv_s: float = 1.5e-6  # fp8 KV cache: the query-quantisation kernel's fixed time
    attn_cache_cta_s: float = 2e-6  # prefill: a KV-cache-write CTA (one token), s resident
    attn_fp8_cache_cta_s: float = 2e-6  # the same CTA writing an fp8 cache (reads its scales)
    attn_fp8_tile_s: float = 0.5e-6  # prefill over an fp8 cache: per work item (half the bytes)
    attn_decode_fp8_s: float = 1.5e-6  # fp8 KV cache, decode: fixed time of its fp8 path
    attn_fp8_decode_eff: float = 0.5  # fp8 decode above head dim 192: fraction of FP8 peak
    attn_ctas_per_sm: float = 0.12  # decode CTAs per SM needed to reach `attn_mem_eff`
    l2_bw_ratio: float = 2.0  # L2 bandwidth / HBM bandwidth, for data a looped kernel finds in L2
    attn_overhead_s: float = 8e-6
    elem_mem_eff: float = 0.60  # elementwise kernels without their own parameter (sampler)
    norm_mem_eff: float = 0.35
    rope_mem_eff: float = 0.43
    act_mem_eff: float = 0.49
    add_mem_eff: float = 0.93
    emb_mem_eff: float = 0.15
    elem_overhead_s: float = 1.45e-6
    norm_row_elem_s: float = 0.7e-9  # RMSNorm: one CTA reduces a row serially, s per element
    comm_latency_s: float = 8e-6  # per step of a collective inside a node
    comm_bw_eff: float = 0.70  # of the intra-node link (NVLink, else PCIe)
    comm_base_s: float = 0.0  # per group collective (not send/recv): launch and group sync
    p2p_bw_eff: float = 0.70  # send/recv inside a node: a plain copy, no reduction in the loop
    net_latency_s: float = 8e-6  # per step of a collective across nodes
    net_bw_eff: float = 0.70  # of the per-GPU network bandwidth
    host_overhead_s: float = 0.81e-3  # per iteration on the host, the GPU waiting (sync scheduling)
    host_per_seq_s: float = 37.5e-6  # ... and per sequence in the batch
    # the engine's API server, per request before the scheduler sees it (HTTP, chat template,
    # tokenisation, the hop to the engine process), one request at a time: sim/cluster.py
    frontend_s: float = 1e-3
    frontend_per_token_s: float = 0.0  # ... and per prompt token

    def to_dict(self) -> dict[str, float]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, float]) -> Efficiencies:
        names = {f.name for f in fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"unknown efficiency parameters {sorted(unknown)}; known: {sorted(names)}")
        return replace(cls(), **{k: float(v) for k, v in d.items()})


PARAM_BOUNDS: dict[str, tuple[float, float]] = {
    "gemm_compute_eff": (0.05, 1.0),
    "gemm_mem_eff": (0.05, 1.0),
    "gemm_blend": (1.0, 12.0),
    "gemm_overlap_k": (64.0, 1e7),
    "gemm_ctas_per_sm": (0.05, 8.0),
    "gemm_wave_exp": (0.0, 1.0),
    "fp8_compute_eff": (0.05, 1.0),
    "fp8_quant_row_s": (0.0, 100e-9),
    "fp8_quant_mem_eff": (0.02, 1.0),
    "fp8_blend": (1.0, 12.0),
    "fp8_power_slow": (0.0, 3.0),
    "fp8_power_tau_s": (1e-5, 1.0),
    "fp8_partial_slow": (0.0, 3.0),
    "gemm_tile_load": (0.01, 4.0),
    "kernel_overhead_s": (0.0, 50e-6),
    "attn_compute_eff": (0.02, 1.0),
    "attn_softmax_flops": (1.0, 4096.0),
    "attn_blend": (1.0, 12.0),
    "attn_decode_blend": (1.0, 12.0),
    "attn_mem_eff": (0.05, 1.0),
    "attn_fp8_mem_eff": (0.05, 1.0),
    "attn_per_seq_s": (0.0, 20e-6),
    "attn_decode_cta_s": (0.0, 20e-6),
    "attn_tile_s": (0.0, 20e-6),
    "attn_fp8_compute_eff": (0.02, 1.0),
    "attn_fp8_kv_s": (0.0, 50e-6),
    "attn_cache_cta_s": (0.0, 20e-6),
    "attn_fp8_cache_cta_s": (0.0, 20e-6),
    "attn_fp8_tile_s": (0.0, 20e-6),
    "attn_decode_fp8_s": (0.0, 50e-6),
    "attn_fp8_decode_eff": (0.02, 1.0),
    "attn_ctas_per_sm": (0.01, 8.0),
    "l2_bw_ratio": (1.0, 10.0),
    "attn_overhead_s": (0.0, 100e-6),
    "elem_mem_eff": (0.02, 1.0),
    "norm_mem_eff": (0.02, 1.0),
    "rope_mem_eff": (0.02, 1.0),
    "act_mem_eff": (0.02, 1.0),
    "add_mem_eff": (0.02, 1.0),
    "emb_mem_eff": (0.02, 1.0),
    "elem_overhead_s": (0.0, 50e-6),
    "norm_row_elem_s": (0.0, 20e-9),
    "comm_latency_s": (0.0, 200e-6),
    "comm_bw_eff": (0.05, 1.0),
    "comm_base_s": (0.0, 500e-6),
    "p2p_bw_eff": (0.05, 1.0),
    "net_latency_s": (0.0, 500e-6),
    "net_bw_eff": (0.02, 1.0),
    "host_overhead_s": (0.0, 50e-3),
    # per sequence per iteration on the host (scheduling, block tables, sampling); engines of
    # 2023 spent ~0.3 ms here in Python, today's a few microseconds
    "host_per_seq_s": (0.0, 1e-3),
    "frontend_s": (0.0, 50e-3),
    "frontend_per_token_s": (0.0, 50e-6),
}

# elementwise op -> its bandwidth-efficiency parameter
ELEM_EFF_PARAM = {
    "input_layernorm": "norm_mem_eff",
    "post_attention_layernorm": "norm_mem_eff",
    "final_norm": "norm_mem_eff",
    "rope": "rope_mem_eff",
    "mlp_act": "act_mem_eff",
    "residual_add": "add_mem_eff",
    "embedding": "emb_mem_eff",
}


# --- GEMM ----------------------------------------------------------------------------------
def _blend(a: float, b: float, p: float) -> float:
    hi = a if a > b else b
    if hi <= 0.0:
        return 0.0
    if p >= 50:
        return hi
    return hi * ((a / hi) ** p + (b / hi) ** p) ** (1.0 / p)


def _blend_v(a: np.ndarray, b: np.ndarray, p: float) -> np.ndarray:
    hi = np.maximum(np.maximum(a, b), 1e-30)
    if p >= 50:
        return hi
    return hi * ((a / hi) ** p + (b / hi) ** p) ** (1.0 / p)


def _blend_pv(a: np.ndarray, b: np.ndarray, p: np.ndarray) -> np.ndarray:
    """`_blend_v` with a p per element (any p; `_blend` takes the max from p >= 50)."""
    hi = np.maximum(np.maximum(a, b), 1e-30)
    p = np.asarray(p, dtype=float)
    lo = np.minimum(a, b) / hi
    return np.where(p >= 50, hi, hi * (1.0 + lo ** p) ** (1.0 / np.minimum(p, 50.0)))


def _padded_m(m, row_tile: int = 0):
    """Rows the kernel computes: M rounded up to a multiple of 64 (AIConfigurator's H100 bf16
    GEMMs: one row past 128 costs +77% at large N x K, past 256 +31%, past 512 +12%, past 1024
    +3%, closer to 64-row padding than to 128), or to the device's own `row_tile` when it has
    one (HardwareSpec.gemm_row_tile; a CPU: 1)."""
    tile = row_tile or GEMM_MIN_TILE_M
    return -(-m // tile) * tile


def _fp8_tile(m):
    """(tile M, tile N) of the W8A8 CUTLASS kernel, picked by M as vLLM's SM90 dispatch does."""
    if m <= 64:
        return 64, 64
    return (64, 128) if m <= 128 else (128, 128)


def _fp8_ctas(m, n, tm, tn):
    """CTAs the W8A8 kernel launches: its grid is rounded up to whole thread-block clusters,
    1 x 8 (along N) up to 64 rows, else 2 x 1 (along M), as vLLM's SM90 configs set them.
    Scalars or arrays."""
    mt = -(-m // tm)
    nt = -(-n // tn)
    mt = np.where(m > 64, mt + mt % 2, mt)
    nt = np.where(m <= 64, -(-nt // 8) * 8, nt)
    return mt * nt


def _fp8_partial(m, tm):
    """Share of the W8A8 kernel's last M tile left empty (0 for a full tile, 127/128 at
    M = 129), counted only past 64 rows where the 2 x 1 cluster configs run. Scalars or
    arrays."""
    return np.where(m > 64, (-m % tm) / tm, 0.0)


def _cta_tile_bytes(pm, n, k_cta):
    """Bytes one CTA's main loop streams into shared memory: `k_cta` steps of its A rows
    (min(M, 128)) and W columns (min(N, 128)), 2 bytes each. Scalars or arrays."""
    return k_cta * 2.0 * (np.minimum(pm, GEMM_TILE_M) + np.minimum(n, GEMM_TILE_N))


def _gemm_core(pm, n, k, ctas, util, gpu, eff, peak_flops, ce, bytes_, wave_exp, k_cta):
    """Compute and memory time blended by a p-norm whose p grows with each CTA's K loop
    (`k_cta` elements): the longer the main loop, the more of the loads hide under the MMAs,
    and the less its prologue and epilogue weigh."""
    t_c = 2.0 * pm * n * k / (peak_flops * ce * util ** wave_exp)
    reach = min(1.0, ctas / (eff.gemm_ctas_per_sm * gpu.sm_count))
    tb = eff.gemm_tile_load * _cta_tile_bytes(pm, n, k_cta) * eff.gemm_ctas_per_sm * gpu.sm_count
    t_m = max(bytes_ / reach, tb) / (gpu.hbm_bw_bytes_s * eff.gemm_mem_eff)
    return _blend(t_c, t_m, eff.gemm_blend * (1.0 + k_cta / eff.gemm_overlap_k))


def gemm_time_s(m: int, n: int, k: int, gpu: HardwareSpec, eff: Efficiencies,
                peak_flops: float, w_bytes: float, act_bytes: float = 2.0,
                fp8: bool = False) -> float:
    """C[m, n] = A[m, k] @ W[k, n]: A of `act_bytes`, W of `w_bytes` bytes per element (fp8 1,
    int4 ~0.52), C in bf16. `fp8`: a W8A8 GEMM on FP8 tensor cores (`peak_flops` is then the
    FP8 peak) after a dynamic quantisation of A. Seconds on one GPU."""
    if m <= 0:
        return 0.0
    sms = gpu.sm_count
    ko = eff.kernel_overhead_s * clock_scale(gpu)
    bytes_ = m * k * act_bytes + m * n * 2.0 + k * n * w_bytes
    if fp8:
        # fixed tiles by M, no split-K, a persistent kernel that pays its whole last wave
        tm, tn = _fp8_tile(m)
        ctas = int(_fp8_ctas(m, n, tm, tn))
        waves = -(-ctas // sms)
        t_c = 2.0 * waves * sms * tm * tn * k / (peak_flops * eff.fp8_compute_eff)
        t_c *= 1.0 + eff.fp8_partial_slow * float(_fp8_partial(m, tm))
        t_c *= 1.0 + eff.fp8_power_slow * -math.expm1(-t_c / eff.fp8_power_tau_s)
        reach = min(1.0, ctas / (eff.gemm_ctas_per_sm * sms))
        t_m = bytes_ / (gpu.hbm_bw_bytes_s * eff.gemm_mem_eff * reach)
        t_q = m * k * 3.0 / (gpu.hbm_bw_bytes_s * eff.fp8_quant_mem_eff) + m * eff.fp8_quant_row_s * clock_scale(gpu)
        return _blend(t_c, t_m, eff.fp8_blend) + t_q + 2.0 * ko
    pm = _padded_m(m, gpu.gemm_row_tile)
    tiles = -(-m // GEMM_TILE_M) * -(-n // GEMM_TILE_N)
    util1 = tiles / (-(-tiles // sms) * sms)
    t = _gemm_core(pm, n, k, tiles, util1, gpu, eff, peak_flops, eff.gemm_compute_eff, bytes_,
                   eff.gemm_wave_exp, k) + ko
    split = max(1, min(sms // tiles, k // SPLITK_MIN_K)) if tiles < sms else 1
    if split > 1:  # split-K, with its reduction kernel, where the library finds it faster
        ctas = tiles * split
        util = ctas / (-(-ctas // sms) * sms)
        ts = _gemm_core(pm, n, k, ctas, util, gpu, eff, peak_flops, eff.gemm_compute_eff,
                        bytes_, eff.gemm_wave_exp, k / split) + 2.0 * ko
        t = min(t, ts)
    return t


def gemm_time_s_v(m, n, k, gpu: HardwareSpec, eff: Efficiencies, peak_flops, w_bytes,
                  act_bytes=2.0, fp8=False) -> np.ndarray:
    """Array form of `gemm_time_s` (m, n, k int arrays; the rest arrays or scalars)."""
    m, n, k = (np.asarray(x, dtype=np.int64) for x in (m, n, k))
    fp8 = np.broadcast_to(np.asarray(fp8, dtype=bool), m.shape)
    peak = np.broadcast_to(np.asarray(peak_flops, dtype=float), m.shape)
    sms = gpu.sm_count
    ko = eff.kernel_overhead_s * clock_scale(gpu)
    bytes_ = m * k * act_bytes + m * n * 2.0 + k * n * w_bytes
    bw = gpu.hbm_bw_bytes_s * eff.gemm_mem_eff

    def core(pm, ctas, util, ce, wave_exp, k_cta):
        t_c = 2.0 * pm * n * k / (peak * ce * util ** wave_exp)
        reach = np.minimum(1.0, ctas / (eff.gemm_ctas_per_sm * sms))
        tb = eff.gemm_tile_load * _cta_tile_bytes(pm, n, k_cta) * eff.gemm_ctas_per_sm * sms
        return _blend_pv(t_c, np.maximum(bytes_ / reach, tb) / bw, eff.gemm_blend * (1.0 + k_cta / eff.gemm_overlap_k))

    # bf16 / int4 weight-only: cuBLAS-like, 128 x 128 tiles, split-K where it is faster
    pm = -(-m // GEMM_MIN_TILE_M) * GEMM_MIN_TILE_M
    if gpu.gemm_row_tile:
        pm = -(-m // gpu.gemm_row_tile) * gpu.gemm_row_tile
    tiles = -(-m // GEMM_TILE_M) * -(-n // GEMM_TILE_N)
    t = core(pm, tiles, tiles / (-(-tiles // sms) * sms), eff.gemm_compute_eff, eff.gemm_wave_exp, k) + ko
    split = np.where(tiles < sms, np.maximum(1, np.minimum(sms // tiles, k // SPLITK_MIN_K)), 1)
    ctas = tiles * split
    ts = core(pm, ctas, ctas / (-(-ctas // sms) * sms), eff.gemm_compute_eff, eff.gemm_wave_exp,
              k / split) + 2.0 * ko
    t = np.where(split > 1, np.minimum(t, ts), t)
    if fp8.any():
        tm = np.where(m <= 64, 64, np.where(m <= 128, 64, 128))
        tn = np.where(m <= 64, 64, 128)
        c8 = _fp8_ctas(m, n, tm, tn)
        waves = -(-c8 // sms)
        t_c = 2.0 * waves * sms * tm * tn * k / (peak * eff.fp8_compute_eff)
        t_c = t_c * (1.0 + eff.fp8_partial_slow * _fp8_partial(m, tm))
        t_c = t_c * (1.0 + eff.fp8_power_slow * -np.expm1(-t_c / eff.fp8_power_tau_s))
        reach = np.minimum(1.0, c8 / (eff.gemm_ctas_per_sm * sms))
        t8 = _blend_v(t_c, bytes_ / (bw * reach), eff.fp8_blend)
        t8 = t8 + m * k * 3.0 / (gpu.hbm_bw_bytes_s * eff.fp8_quant_mem_eff) + 2.0 * ko
        t8 = t8 + m * eff.fp8_quant_row_s * clock_scale(gpu)
        t = np.where(fp8, t8, t)
    return np.where(m > 0, t, 0.0)


# --- elementwise ---------------------------------------------------------------------------
NORM_OPS = ("input_layernorm", "post_attention_layernorm", "final_norm")
NORM_BLEND = 4.0  # p-norm of a norm's row-latency floor and its bandwidth time


def elementwise_time_s(bytes_: float, gpu: HardwareSpec, eff: Efficiencies, op: str = "",
                       width: int = 0) -> float:
    """A memory-bound kernel moving `bytes_` bytes; `op` picks its efficiency (ELEM_EFF_PARAM).

    Norms cannot go faster than one CTA reducing a row of `width` elements."""
    e = getattr(eff, ELEM_EFF_PARAM.get(op, "elem_mem_eff"))
    t = bytes_ / (gpu.hbm_bw_bytes_s * e)
    cs = clock_scale(gpu)
    if op in NORM_OPS:
        t = _blend(t, width * eff.norm_row_elem_s * cs, NORM_BLEND)
    return t + eff.elem_overhead_s * cs


def elementwise_time_s_v(bytes_, gpu: HardwareSpec, eff: Efficiencies, op: str = "",
                         width=0) -> np.ndarray:
    e = getattr(eff, ELEM_EFF_PARAM.get(op, "elem_mem_eff"))
    t = np.asarray(bytes_, dtype=float) / (gpu.hbm_bw_bytes_s * e)
    cs = clock_scale(gpu)
    if op in NORM_OPS:
        t = _blend_v(t, np.asarray(width, dtype=float) * eff.norm_row_elem_s * cs, NORM_BLEND)
    return t + eff.elem_overhead_s * cs


# --- collectives ---------------------------------------------------------------------------
def link_bw_bytes_s(gpu: HardwareSpec, n_gpus: int) -> float:
    """Slowest link a group of `n_gpus` crosses: NVLink inside a node, the NIC across nodes."""
    if n_gpus <= gpu.gpus_per_node:
        return gpu.intra_node_bw_bytes_s()
    return gpu.network_bw_bytes_s


def _link(eff: Efficiencies, internode: bool) -> tuple[float, float]:
    """(step latency, bandwidth efficiency) of the link type a collective crosses."""
    if internode:
        return eff.net_latency_s, eff.net_bw_eff
    return eff.comm_latency_s, eff.comm_bw_eff


def allreduce_time_s(msg_bytes: float, n_gpus: int, gpu: HardwareSpec, eff: Efficiencies,
                     bw_bytes_s: float | None = None, internode: bool | None = None) -> float:
    """min(one-shot, ring) all-reduce of a `msg_bytes` message over `n_gpus` GPUs."""
    if n_gpus <= 1 or msg_bytes <= 0:
        return 0.0
    if internode is None:
        internode = n_gpus > gpu.gpus_per_node
    lat, bw_eff = _link(eff, internode)
    bw = (bw_bytes_s or link_bw_bytes_s(gpu, n_gpus)) * bw_eff
    # one-shot (vLLM custom all-reduce, NCCL tree/LL): every GPU reads the n-1 other buffers;
    # its synchronisation latency grows with the depth of the group, log2(n) rounds
    one_shot = lat * math.log2(n_gpus) + (n_gpus - 1) * msg_bytes / n_gpus / bw * 2
    # ring: 2 (n-1) steps, each moving msg/n bytes per GPU
    ring = (n_gpus - 1) * lat + 2 * (n_gpus - 1) / n_gpus * msg_bytes / bw
    return eff.comm_base_s + min(one_shot, ring)


def collective_time_s_v(op: str, msg_bytes, n_gpus, bw_bytes_s, eff: Efficiencies,
                        internode=False) -> np.ndarray:
    """Array form for `all_reduce` (as `allreduce_time_s`), `all_gather` / `reduce_scatter`
    (half a ring all-reduce), `alltoall` and `send_recv` (one latency plus the bytes); each
    row on its link type (`internode`: across nodes)."""
    msg = np.asarray(msg_bytes, dtype=float)
    n = np.asarray(n_gpus, dtype=float)
    inter = np.broadcast_to(np.asarray(internode, dtype=bool), msg.shape)
    lat = np.where(inter, eff.net_latency_s, eff.comm_latency_s)
    bw = np.asarray(bw_bytes_s, dtype=float) * np.where(inter, eff.net_bw_eff, eff.comm_bw_eff)
    base = eff.comm_base_s
    if op == "all_reduce":
        one_shot = lat * np.log2(np.maximum(n, 2)) + (n - 1) * msg / n / bw * 2
        ring = (n - 1) * lat + 2 * (n - 1) / n * msg / bw
        return np.where((n > 1) & (msg > 0), base + np.minimum(one_shot, ring), 0.0)
    if op in ("all_gather", "reduce_scatter"):
        return base + (n - 1) / 2 * lat + (n - 1) / n * msg / bw
    if op == "alltoall":
        return base + lat + (n - 1) / n * msg / bw
    # send_recv: a copy between two GPUs, at the point-to-point efficiency inside a node
    bw = np.asarray(bw_bytes_s, dtype=float) * np.where(inter, eff.net_bw_eff, eff.p2p_bw_eff)
    return lat + msg / bw


def p2p_time_s(msg_bytes: float, bw_bytes_s: float, eff: Efficiencies,
               internode: bool = False) -> float:
    if msg_bytes <= 0:
        return 0.0
    lat, bw_eff = _link(eff, internode)
    if not internode:
        bw_eff = eff.p2p_bw_eff
    return lat + msg_bytes / (bw_bytes_s * bw_eff)
