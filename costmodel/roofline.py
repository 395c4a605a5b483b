"""Operator time from a roofline with fitted, physically meaningful efficiencies.

Each operator takes its compute time and its memory time, blended smoothly (a p-norm, so the
knee between the two regimes is round as measured, not sharp), plus a fixed per-kernel time.
The efficiencies are fractions of datasheet peaks, so a set fitted on one GPU carries to
another through the datasheet (that is what makes zero-shot prediction on a new GPU work):

- GEMM (bf16, int4 weight-only; cuBLAS-like): FLOPs at `gemm_compute_eff` of the tensor-core
  peak, lost to wave quantisation (the M x N output is cut into 128 x 128 tiles; the last wave
  runs partly empty, felt to the power `gemm_wave_exp` since the library picks among tile
  shapes) and to padding M up to the tile; bytes (A, B and C once each) at `gemm_mem_eff` of
  HBM bandwidth, whose reach falls when fewer than `gemm_ctas_per_sm` CTAs per SM run.
  `kernel_overhead_s` per kernel. With too few tiles to fill the SMs the library may split K
  (never below SPLITK_MIN_K per split) and pay a reduction kernel: the faster of the two.
- W8A8 GEMM (fp8; vLLM's CUTLASS kernel): tiles fixed by M (64 x 64 up to 64 rows, 64 x 128
  up to 128, else 128 x 128; N padded to the tile), no split-K, the whole last wave paid, at
  `fp8_compute_eff` of the FP8 peak; before it a per-token activation quantisation kernel
  moving 3 bytes per element of A at `fp8_quant_mem_eff` of HBM bandwidth plus
  `fp8_quant_row_s` per row.
- Prefill attention (FlashAttention varlen): work items are (128-row query tile, head) pairs
  (query heads of one KV head packed into the rows for short chunks); each visits its 128-key
  KV tiles in turn (whole tiles on the causal diagonal and at a sliding window's edge, a short
  chunk's tile only partly filled) at `attn_compute_eff` of the tensor-core peak overlapped
  with the softmax (`attn_softmax_flops` per query-key pair and head; `attn_fp8_compute_eff`
  with an fp8 KV cache) and pays `attn_tile_s`; the SMs share the items, and no kernel is
  shorter than its longest item. Q, O and the cache's KV at `attn_mem_eff` of HBM; side
  kernels write the new K and V into the cache (and quantise Q for an fp8 cache).
- Decode attention (flash-decoding): one CTA per (sequence, KV head), split along the KV when
  fewer than 0.8 x SMs (then a merge kernel), each CTA paying `attn_per_seq_s` (at head dim
  128; half of it scales with the head dim); the KV cache at `attn_mem_eff` of HBM bandwidth,
  reached with `attn_ctas_per_sm` CTAs per SM; a kernel timed in a loop (`l2_warm`) reads a
  KV cache that fits in L2 at `l2_bw_ratio` x HBM bandwidth. `attn_overhead_s` per layer's
  attention, `attn_fp8_kv_s` more with an fp8 KV cache (the query-quantisation kernel).
- Elementwise (norms, RoPE, activation, residual add, embedding gather): bytes at a per-kernel
  fraction of HBM bandwidth (`norm_mem_eff`, ...), plus `elem_overhead_s`.
- Collectives: `comm_latency_s` per step of the algorithm plus bytes at `comm_bw_eff` of link
  bandwidth (ring all-reduce moves 2 (n-1)/n of the message per GPU).

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
GEMM_MIN_TILE_M = 64  # M is padded to a multiple of 64 (or of 128 above 64 rows)
SPLITK_MIN_K = 512  # split-K never cuts K below this many elements per split
ATTN_TILE_Q = 128
ATTN_TILE_KV = 128

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
    `attn_per_seq_s`, `attn_tile_s`, `attn_fp8_kv_s`, `elem_overhead_s`, `norm_row_elem_s`) are
    seconds at REF_CLOCK_HZ, scaled by `clock_scale`.

    Where the defaults (what an uncalibrated GPU gets) come from:
    - GEMM (`gemm_compute_eff`, `gemm_mem_eff`, `gemm_blend`, `gemm_wave_exp`,
      `kernel_overhead_s`), elementwise (`*_mem_eff`, `elem_overhead_s`) and `attn_mem_eff`:
      the fit on Vidur's A100 tables (all 8 models; benchmarks/costmodel_accuracy.py stage 1,
      2026-11-23), rounded.
    - `gemm_ctas_per_sm`: Little's law, not a fit (Vidur's GEMMs all run enough CTAs to leave
      it unconstrained): a 128x128 tile with a 4-stage pipeline of 64-deep K slices keeps
      ~128 KB in flight, so over ~0.7 us of HBM latency one CTA draws ~180 GB/s; 0.8 x 2 TB/s
      (A100) needs ~9 CTAs and 0.9 x 3.35 TB/s (H100) ~17, 0.08-0.13 per SM. (H100 GEMMs fitted
      alone give 0.12; the A100 fit never moves it.)
    - fp8, prefill attention, collectives and host overhead: hand-set starting values (no A100
      FP8 exists; calibrate them per GPU). The AIConfigurator H100 fit (benchmarks/
      costmodel_accuracy.py aic_h100, 2026-11-22) gives fp8_compute_eff 0.71,
      fp8_quant_mem_eff 0.68, fp8_quant_row_s 9 ns, attn_compute_eff 0.84,
      attn_fp8_compute_eff 0.78, attn_tile_s 1.3 us, attn_fp8_kv_s 3.2 us,
      attn_ctas_per_sm 0.97, l2_bw_ratio 1.5 (all at REF_CLOCK_HZ); the defaults stay
      hand-set so that the zero-shot A100 -> H100 experiment does not see H100 data.
    - `attn_ctas_per_sm`: the GEMM's Little's-law value (0.12) as a start; decode CTAs keep
      less in flight, and the H100 fit wants ~1 (a CTA per SM).
    - `l2_bw_ratio`: 2 (L2 read bandwidth ~2x HBM on A100/H100 microbenchmarks), hand-set.
        """

    gemm_compute_eff: float = 0.74
    gemm_mem_eff: float = 0.81
    gemm_blend: float = 2.7  # p of the p-norm blending compute and memory time (inf = max)
    gemm_ctas_per_sm: float = 0.12  # CTAs per SM needed to reach `gemm_mem_eff` of HBM bandwidth
    gemm_wave_exp: float = 0.2  # 0: the kernel hides the last partial wave, 1: pays all of it
    fp8_compute_eff: float = 0.55  # W8A8 GEMMs: fraction of the FP8 tensor-core peak
    fp8_quant_row_s: float = 5e-9  # W8A8 activation quantisation: fixed time per token row
    fp8_quant_mem_eff: float = 0.5  # W8A8 activation quantisation: fraction of HBM bandwidth
    kernel_overhead_s: float = 4e-6
    attn_compute_eff: float = 0.55
    attn_softmax_flops: float = 256.0  # softmax per (query, key, head), in tensor-core FLOPs
    attn_blend: float = 4.0  # p-norm blending attention's compute, softmax and memory times
    attn_mem_eff: float = 0.78
    attn_per_seq_s: float = 25e-9  # decode: per (sequence x KV head) work unit
    attn_tile_s: float = 0.5e-6  # prefill: per (query tile x head) work item, Q load + O store
    attn_fp8_compute_eff: float = 0.55  # attention with an fp8 KV cache: fraction of BF16 peak
    attn_fp8_kv_s: float = 1.5e-6  # fp8 KV cache: the query-quantisation kernel's fixed time
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
    comm_latency_s: float = 8e-6
    comm_bw_eff: float = 0.70
    host_overhead_s: float = 2.0e-3
    host_per_seq_s: float = 8e-6

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
    "gemm_ctas_per_sm": (0.05, 8.0),
    "gemm_wave_exp": (0.0, 1.0),
    "fp8_compute_eff": (0.05, 1.0),
    "fp8_quant_row_s": (0.0, 100e-9),
    "fp8_quant_mem_eff": (0.02, 1.0),
    "kernel_overhead_s": (0.0, 50e-6),
    "attn_compute_eff": (0.02, 1.0),
    "attn_softmax_flops": (1.0, 4096.0),
    "attn_blend": (1.0, 12.0),
    "attn_mem_eff": (0.05, 1.0),
    "attn_per_seq_s": (0.0, 20e-6),
    "attn_tile_s": (0.0, 20e-6),
    "attn_fp8_compute_eff": (0.02, 1.0),
    "attn_fp8_kv_s": (0.0, 50e-6),
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
    "host_overhead_s": (0.0, 50e-3),
    "host_per_seq_s": (0.0, 200e-6),
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


def _padded_m(m, row_tile: int = 0):
    """Rows the kernel computes: M rounded up to 64 (small M) or to the 128-row tile, or to
    the device's own `row_tile` when it has one (HardwareSpec.gemm_row_tile; a CPU: 1)."""
    tile = row_tile or (GEMM_MIN_TILE_M if m <= GEMM_MIN_TILE_M else GEMM_TILE_M)
    return -(-m // tile) * tile


def wave_efficiency(m: int, n: int, sm_count: int, k: int = 0) -> float:
    """Fraction of SM-slots doing useful work when an m x n output is tiled over the SMs.

    With fewer tiles than SMs the kernel splits K (never below SPLITK_MIN_K per split)."""
    tiles = -(-m // GEMM_TILE_M) * -(-n // GEMM_TILE_N)
    split = max(1, min(sm_count // tiles, k // SPLITK_MIN_K)) if tiles < sm_count else 1
    ctas = tiles * split
    waves = -(-ctas // sm_count)
    return ctas / (waves * sm_count)


def _wave_efficiency_v(m, n, k, sm_count: int):
    tiles = -(-m // GEMM_TILE_M) * -(-n // GEMM_TILE_N)
    split = np.where(tiles < sm_count,
                     np.maximum(1, np.minimum(sm_count // tiles, k // SPLITK_MIN_K)), 1)
    ctas = tiles * split
    waves = -(-ctas // sm_count)
    return ctas / (waves * sm_count), ctas, split


def _fp8_tile(m):
    """(tile M, tile N) of the W8A8 CUTLASS kernel, picked by M as vLLM's SM90 dispatch does."""
    if m <= 64:
        return 64, 64
    return (64, 128) if m <= 128 else (128, 128)


def _gemm_core(pm, n, k, ctas, util, gpu, eff, peak_flops, ce, bytes_, wave_exp):
    t_c = 2.0 * pm * n * k / (peak_flops * ce * util ** wave_exp)
    reach = min(1.0, ctas / (eff.gemm_ctas_per_sm * gpu.sm_count))
    t_m = bytes_ / (gpu.hbm_bw_bytes_s * eff.gemm_mem_eff * reach)
    return _blend(t_c, t_m, eff.gemm_blend)


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
        ctas = -(-m // tm) * -(-n // tn)
        waves = -(-ctas // sms)
        t_c = 2.0 * waves * sms * tm * tn * k / (peak_flops * eff.fp8_compute_eff)
        reach = min(1.0, ctas / (eff.gemm_ctas_per_sm * sms))
        t_m = bytes_ / (gpu.hbm_bw_bytes_s * eff.gemm_mem_eff * reach)
        t_q = m * k * 3.0 / (gpu.hbm_bw_bytes_s * eff.fp8_quant_mem_eff) + m * eff.fp8_quant_row_s * clock_scale(gpu)
        return _blend(t_c, t_m, eff.gemm_blend) + t_q + 2.0 * ko
    pm = _padded_m(m, gpu.gemm_row_tile)
    tiles = -(-m // GEMM_TILE_M) * -(-n // GEMM_TILE_N)
    util1 = tiles / (-(-tiles // sms) * sms)
    t = _gemm_core(pm, n, k, tiles, util1, gpu, eff, peak_flops, eff.gemm_compute_eff, bytes_,
                   eff.gemm_wave_exp) + ko
    split = max(1, min(sms // tiles, k // SPLITK_MIN_K)) if tiles < sms else 1
    if split > 1:  # split-K, with its reduction kernel, where the library finds it faster
        ctas = tiles * split
        util = ctas / (-(-ctas // sms) * sms)
        ts = _gemm_core(pm, n, k, ctas, util, gpu, eff, peak_flops, eff.gemm_compute_eff,
                        bytes_, eff.gemm_wave_exp) + 2.0 * ko
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

    def core(pm, ctas, util, ce, wave_exp):
        t_c = 2.0 * pm * n * k / (peak * ce * util ** wave_exp)
        reach = np.minimum(1.0, ctas / (eff.gemm_ctas_per_sm * sms))
        return _blend_v(t_c, bytes_ / (bw * reach), eff.gemm_blend)

    # bf16 / int4 weight-only: cuBLAS-like, 128 x 128 tiles, split-K where it is faster
    pm = np.where(m <= GEMM_MIN_TILE_M, -(-m // GEMM_MIN_TILE_M) * GEMM_MIN_TILE_M,
                  -(-m // GEMM_TILE_M) * GEMM_TILE_M)
    if gpu.gemm_row_tile:
        pm = -(-m // gpu.gemm_row_tile) * gpu.gemm_row_tile
    tiles = -(-m // GEMM_TILE_M) * -(-n // GEMM_TILE_N)
    t = core(pm, tiles, tiles / (-(-tiles // sms) * sms), eff.gemm_compute_eff, eff.gemm_wave_exp) + ko
    split = np.where(tiles < sms, np.maximum(1, np.minimum(sms // tiles, k // SPLITK_MIN_K)), 1)
    ctas = tiles * split
    ts = core(pm, ctas, ctas / (-(-ctas // sms) * sms), eff.gemm_compute_eff, eff.gemm_wave_exp) + 2.0 * ko
    t = np.where(split > 1, np.minimum(t, ts), t)
    if fp8.any():
        tm = np.where(m <= 64, 64, np.where(m <= 128, 64, 128))
        tn = np.where(m <= 64, 64, 128)
        c8 = -(-m // tm) * -(-n // tn)
        waves = -(-c8 // sms)
        t_c = 2.0 * waves * sms * tm * tn * k / (peak * eff.fp8_compute_eff)
        reach = np.minimum(1.0, c8 / (eff.gemm_ctas_per_sm * sms))
        t8 = _blend_v(t_c, bytes_ / (bw * reach), eff.gemm_blend)
        t8 = t8 + m * k * 3.0 / (gpu.hbm_bw_bytes_s * eff.fp8_quant_mem_eff) + 2.0 * ko
        t8 = t8 + m * eff.fp8_quant_row_s * clock_scale(gpu)
        t = np.where(fp8, t8, t)
    return np.where(m > 0, t, 0.0)


# --- attention -----------------------------------------------------------------------------
# L2 cache sizes from datasheets (bytes); a kernel benchmarked in a loop finds data that fits
# there still resident (`l2_warm`), a serving step (every layer streams between two reads of
# one layer's KV cache) does not
L2_BYTES = {
    "a100-40g": 40e6, "a100-80g": 40e6, "h100-sxm": 50e6, "h100-pcie": 50e6, "h200-sxm": 50e6,
    "b200": 126e6, "l40s": 96e6, "l4": 48e6, "a10g": 6e6, "mi300x": 256e6,
}


def _l2_hit(bytes_, gpu: HardwareSpec):
    """Fraction of a warm kernel's reads served by L2: all up to 3/4 of it, none once they
    exceed it (a cyclic stream larger than an LRU cache misses every time)."""
    l2 = L2_BYTES.get(gpu.name, 0.0)
    if l2 <= 0:
        return 0.0 * bytes_
    return np.clip(4.0 - 4.0 * bytes_ / l2, 0.0, 1.0)


def _kv_tiles(chunk, prefix, window):
    """(sum over query tiles, last tile) of the KV tiles a causal flash-attention kernel visits
    for one head of a `chunk`-token chunk after `prefix` cached tokens; 128 x 128 tiles, whole
    tiles on the diagonal, a sliding window of w keys spanning (w + 128) / 128 + 1 tiles."""
    n = np.ceil(chunk / ATTN_TILE_Q)
    a = prefix / ATTN_TILE_KV
    cap = np.where(window > 0, (window + ATTN_TILE_Q) / ATTN_TILE_KV + 1.0, np.inf)
    j = np.clip(np.floor(cap - a), 0.0, n)  # query tiles below the cap
    total = j * a + j * (j + 1) / 2.0 + (n - j) * np.minimum(cap, a + n)
    return total, np.minimum(a + n, cap)


def _tile_time(head_dim, gpu: HardwareSpec, eff: Efficiencies, fp8_kv):
    """Seconds one SM spends on one 128 x 128 (query, key) tile of one head: QK^T and PV on the
    tensor cores overlapped with the softmax's exponentials."""
    ce = eff.attn_fp8_compute_eff if fp8_kv else eff.attn_compute_eff
    per_pair = _blend(4.0 * head_dim / ce, eff.attn_softmax_flops, eff.attn_blend)
    return per_pair * ATTN_TILE_Q * ATTN_TILE_KV * gpu.sm_count / gpu.bf16_flops


def _prefill_bytes(new, ctx, q_heads, kv_heads, head_dim, kv_bytes):
    """(kernel, side) HBM bytes of a prefill's attention layer. Kernel: Q read and O written
    (bf16), the KV cache's `ctx` tokens read. Side kernels before it: the new tokens' K and V
    read and written into the cache; an fp8 cache also quantises Q (read bf16, write fp8)."""
    q = new * q_heads * head_dim
    kernel = 4.0 * q + ctx * 2 * kv_heads * head_dim * kv_bytes
    side = new * 2 * kv_heads * head_dim * (2.0 + kv_bytes) + (kv_bytes < 2.0) * 3.0 * q
    return kernel, side


def prefill_attn_batch_time_s(chunks, q_heads: int, kv_heads: int, head_dim: int,
                              gpu: HardwareSpec, eff: Efficiencies, kv_bytes: float = 2.0) -> float:
    """One varlen flash-attention kernel over prefill chunks `[(chunk, prefix), ...]` (one layer).

    Work items are (query tile, head) pairs; each visits its KV tiles in turn and pays
    `attn_tile_s` to load Q and store O; the SMs share the work, and no kernel is shorter than
    its longest item."""
    if not chunks:
        return 0.0
    items = kv_it = longest = bytes_ = 0.0
    g = q_heads / kv_heads
    for chunk, prefix in chunks:
        n = -(-chunk // ATTN_TILE_Q)
        a = prefix / ATTN_TILE_KV
        rows = min(1.0, chunk / ATTN_TILE_Q)  # a short chunk fills only part of its tile
        items += -(-(chunk * g) // ATTN_TILE_Q)
        kv_it += (n * a + n * (n + 1) / 2.0) * rows
        if (a + n) * rows > longest:
            longest = (a + n) * rows
        bytes_ += chunk + prefix
    fp8_kv = kv_bytes < 2.0
    new = sum(c for c, _ in chunks)
    kern, side = _prefill_bytes(new, bytes_, q_heads, kv_heads, head_dim, kv_bytes)
    cs = clock_scale(gpu)
    c_kv = _tile_time(head_dim, gpu, eff, fp8_kv)
    t_c = max((q_heads * kv_it * c_kv + kv_heads * items * eff.attn_tile_s * cs) / gpu.sm_count,
              longest * c_kv + eff.attn_tile_s * cs)
    bw = gpu.hbm_bw_bytes_s * eff.attn_mem_eff
    fixed = (len(chunks) * kv_heads * eff.attn_per_seq_s + eff.attn_overhead_s
             + (eff.attn_fp8_kv_s if fp8_kv else 0.0)) * cs + side / bw
    t_m = kern / bw
    return _blend(t_c, t_m, eff.attn_blend) + fixed


def prefill_attn_time_s(chunk: int, prefix: int, q_heads: int, kv_heads: int, head_dim: int,
                        gpu: HardwareSpec, eff: Efficiencies, kv_bytes: float = 2.0) -> float:
    """Causal attention of `chunk` new tokens over `prefix` cached + themselves (one layer)."""
    return prefill_attn_batch_time_s(((chunk, prefix),), q_heads, kv_heads, head_dim, gpu, eff,
                                     kv_bytes)


def prefill_attn_time_s_v(batch, chunk, prefix, q_heads, kv_heads, head_dim, window,
                          gpu: HardwareSpec, eff: Efficiencies, kv_bytes) -> np.ndarray:
    """Array form: `batch` equal prompts per row; `window` > 0 caps each query's keys."""
    chunk = np.asarray(chunk, dtype=float)
    prefix = np.asarray(prefix, dtype=float)
    batch = np.asarray(batch, dtype=float)
    head_dim = np.asarray(head_dim, dtype=float)
    kv_bytes = np.broadcast_to(np.asarray(kv_bytes, dtype=float), chunk.shape)
    fp8_kv = kv_bytes < 2.0
    kv_it, longest = _kv_tiles(chunk, prefix, np.asarray(window, dtype=float))
    rows = np.minimum(1.0, chunk / ATTN_TILE_Q)
    kv_it, longest = kv_it * rows, longest * rows
    items = np.ceil(chunk * (np.asarray(q_heads, dtype=float) / kv_heads) / ATTN_TILE_Q)
    cs = clock_scale(gpu)
    ce = np.where(fp8_kv, eff.attn_fp8_compute_eff, eff.attn_compute_eff)
    per_pair = _blend_v(4.0 * head_dim / ce, np.full(chunk.shape, eff.attn_softmax_flops),
                        eff.attn_blend)
    c_kv = per_pair * ATTN_TILE_Q * ATTN_TILE_KV * gpu.sm_count / gpu.bf16_flops
    c_item = eff.attn_tile_s * cs
    t_c = np.maximum(batch * (q_heads * kv_it * c_kv + kv_heads * items * c_item) / gpu.sm_count,
                     longest * c_kv + c_item)
    kern, side = _prefill_bytes(chunk, chunk + prefix, q_heads, kv_heads, head_dim, kv_bytes)
    bw = gpu.hbm_bw_bytes_s * eff.attn_mem_eff
    t_m = batch * kern / bw
    fixed = (batch * kv_heads * eff.attn_per_seq_s + eff.attn_overhead_s
             + np.where(fp8_kv, eff.attn_fp8_kv_s, 0.0)) * cs + batch * side / bw
    return _blend_v(t_c, t_m, eff.attn_blend) + fixed


def _decode_splits(units: float, ctx_mean: float, sms: int) -> float:
    """Flash-decoding's KV splits: one unless fewer (sequence, KV head) units than ~0.8 x SMs,
    else enough to fill the SMs, at most one per KV tile."""
    if units >= 0.8 * sms:
        return 1.0
    return float(max(1, min(-(-sms // int(units)), math.ceil(ctx_mean / ATTN_TILE_KV), 128)))


def decode_attn_time_s(n_seqs: int, ctx_sum: float, q_tokens: int, q_heads: int, kv_heads: int,
                       head_dim: int, gpu: HardwareSpec, eff: Efficiencies,
                       kv_bytes: float = 2.0, l2_warm: bool = False) -> float:
    """Attention of `n_seqs` sequences, `q_tokens` queries each, over `ctx_sum` cached tokens.

    One CTA per (sequence, KV head) (the query heads of a KV head packed together), split along
    the KV when too few to fill the SMs, the splits merged by a second kernel."""
    if n_seqs <= 0:
        return 0.0
    sms = gpu.sm_count
    units = n_seqs * kv_heads
    split = _decode_splits(units, ctx_sum / n_seqs, sms)
    ctas = units * split
    kv = ctx_sum * 2 * kv_heads * head_dim * kv_bytes
    hit = float(_l2_hit(kv, gpu)) if l2_warm else 0.0
    bw = gpu.hbm_bw_bytes_s * eff.attn_mem_eff * min(1.0, ctas / (eff.attn_ctas_per_sm * sms))
    t_m = (kv * (1.0 - hit + hit / eff.l2_bw_ratio) + n_seqs * q_tokens * q_heads * head_dim * 4) / bw
    t_c = 4.0 * q_heads * head_dim * ctx_sum * q_tokens / (gpu.bf16_flops * eff.attn_compute_eff)
    cs = clock_scale(gpu)
    fixed = (ctas * eff.attn_per_seq_s * (0.5 + head_dim / 256.0) + eff.attn_overhead_s
             + (eff.attn_fp8_kv_s if kv_bytes < 2.0 else 0.0))
    if split > 1:
        fixed += eff.elem_overhead_s
    return _blend(t_m, t_c, eff.attn_blend) + fixed * cs


def decode_attn_time_s_v(n_seqs, ctx_sum, q_tokens, q_heads, kv_heads, head_dim,
                         gpu: HardwareSpec, eff: Efficiencies, kv_bytes,
                         l2_warm: bool = False) -> np.ndarray:
    n_seqs = np.asarray(n_seqs, dtype=float)
    ctx_sum = np.asarray(ctx_sum, dtype=float)
    kv_bytes = np.broadcast_to(np.asarray(kv_bytes, dtype=float), n_seqs.shape)
    sms = gpu.sm_count
    units = n_seqs * kv_heads
    ctx_mean = ctx_sum / np.maximum(n_seqs, 1.0)
    fill = -(-sms // np.maximum(units, 1.0))
    split = np.where(units >= 0.8 * sms, 1.0,
                     np.maximum(1.0, np.minimum(np.minimum(fill, np.ceil(ctx_mean / ATTN_TILE_KV)), 128.0)))
    ctas = units * split
    kv = ctx_sum * 2 * kv_heads * head_dim * kv_bytes
    hit = _l2_hit(kv, gpu) if l2_warm else 0.0
    bw = gpu.hbm_bw_bytes_s * eff.attn_mem_eff * np.minimum(1.0, ctas / (eff.attn_ctas_per_sm * sms))
    t_m = (kv * (1.0 - hit + hit / eff.l2_bw_ratio) + n_seqs * q_tokens * q_heads * head_dim * 4) / bw
    t_c = 4.0 * q_heads * head_dim * ctx_sum * q_tokens / (gpu.bf16_flops * eff.attn_compute_eff)
    fixed = (ctas * eff.attn_per_seq_s * (0.5 + np.asarray(head_dim, dtype=float) / 256.0)
             + eff.attn_overhead_s + np.where(kv_bytes < 2.0, eff.attn_fp8_kv_s, 0.0)
             + np.where(split > 1, eff.elem_overhead_s, 0.0))
    t = _blend_v(t_m, t_c, eff.attn_blend) + fixed * clock_scale(gpu)
    return np.where(n_seqs > 0, t, 0.0)


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


def allreduce_time_s(msg_bytes: float, n_gpus: int, gpu: HardwareSpec, eff: Efficiencies,
                     bw_bytes_s: float | None = None) -> float:
    """min(one-shot, ring) all-reduce of a `msg_bytes` message over `n_gpus` GPUs."""
    if n_gpus <= 1 or msg_bytes <= 0:
        return 0.0
    bw = (bw_bytes_s or link_bw_bytes_s(gpu, n_gpus)) * eff.comm_bw_eff
    # one-shot (vLLM custom all-reduce, NCCL tree/LL): every GPU reads the n-1 other buffers;
    # its synchronisation latency grows with the depth of the group, log2(n) rounds
    one_shot = eff.comm_latency_s * math.log2(n_gpus) + (n_gpus - 1) * msg_bytes / n_gpus / bw * 2
    # ring: 2 (n-1) steps, each moving msg/n bytes per GPU
    ring = (n_gpus - 1) * eff.comm_latency_s + 2 * (n_gpus - 1) / n_gpus * msg_bytes / bw
    return min(one_shot, ring)


def collective_time_s_v(op: str, msg_bytes, n_gpus, bw_bytes_s, eff: Efficiencies) -> np.ndarray:
    """Array form for `all_reduce` (as `allreduce_time_s`), `all_gather` / `reduce_scatter`
    (half a ring all-reduce), `alltoall` and `send_recv` (one latency plus the bytes)."""
    msg = np.asarray(msg_bytes, dtype=float)
    n = np.asarray(n_gpus, dtype=float)
    bw = np.asarray(bw_bytes_s, dtype=float) * eff.comm_bw_eff
    lat = eff.comm_latency_s
    if op == "all_reduce":
        one_shot = lat * np.log2(np.maximum(n, 2)) + (n - 1) * msg / n / bw * 2
        ring = (n - 1) * lat + 2 * (n - 1) / n * msg / bw
        return np.where((n > 1) & (msg > 0), np.minimum(one_shot, ring), 0.0)
    if op in ("all_gather", "reduce_scatter"):
        return (n - 1) / 2 * lat + (n - 1) / n * msg / bw
    if op == "alltoall":
        return lat + (n - 1) / n * msg / bw
    return lat + msg / bw  # send_recv


def p2p_time_s(msg_bytes: float, bw_bytes_s: float, eff: Efficiencies) -> float:
    if msg_bytes <= 0:
        return 0.0
    return eff.comm_latency_s + msg_bytes / (bw_bytes_s * eff.comm_bw_eff)

