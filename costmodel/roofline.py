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
- Attention (prefill and decode): costmodel/attention.py.
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

The parameters themselves (`Efficiencies`, their bounds, the SM-clock scaling of fixed times)
and the p-norm blend live in costmodel/efficiencies.py, which this module and attention.py
both import. Every formula exists twice: a scalar form on Python floats (the simulator's hot path) and an
array form (suffix `_v`, numpy, used to fit thousands of measured rows at once). A test keeps
the two equal.
"""

from __future__ import annotations

import math

import numpy as np

from costmodel.efficiencies import (
    ELEM_EFF_PARAM,
    Efficiencies,
    _blend,
    _blend_pv,
    _blend_v,
    clock_scale,
)
from costmodel.hardware import HardwareSpec

GEMM_TILE_M = 128
GEMM_TILE_N = 128
GEMM_MIN_TILE_M = 64  # M is padded to a multiple of 64 rows
SPLITK_MIN_K = 512  # split-K never cuts K below this many elements per split

# --- GEMM ----------------------------------------------------------------------------------
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
        # _fp8_ctas / _fp8_partial on Python ints (the numpy forms cost more than the rest)
        mt, nt = -(-m // tm), -(-n // tn)
        ctas = (mt + mt % 2) * nt if m > 64 else mt * (-(-nt // 8) * 8)
        waves = -(-ctas // sms)
        t_c = 2.0 * waves * sms * tm * tn * k / (peak_flops * eff.fp8_compute_eff)
        t_c *= 1.0 + eff.fp8_partial_slow * ((-m % tm) / tm if m > 64 else 0.0)
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
