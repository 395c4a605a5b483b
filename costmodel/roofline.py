"""Operator time from a roofline with fitted, physically meaningful efficiencies.

Each operator takes max(compute time, memory time), blended smoothly, plus a fixed per-kernel
overhead. The efficiencies are fractions of datasheet peaks, so a set fitted on one GPU carries
to another through the datasheet (that is what makes zero-shot prediction on a new GPU work):

- GEMM: FLOPs at `gemm_compute_eff` of the tensor-core peak, lost further to wave quantisation
  (the M x N output is cut into tiles; the last wave of tiles over the SMs runs partly empty);
  bytes (A, B and C once each) at `gemm_mem_eff` of HBM bandwidth.
- Attention: prefill is compute-bound at `attn_compute_eff`; decode reads each sequence's KV
  cache at `attn_mem_eff` of HBM bandwidth, plus `attn_per_seq_s` of per-sequence work.
- Elementwise (norms, RoPE, activation, residual add): bytes at `elem_mem_eff`.
- Collectives: `comm_latency_s` per step of the algorithm plus bytes at `comm_bw_eff` of link
  bandwidth (ring all-reduce moves 2 (n-1)/n of the message per GPU).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace

from costmodel.hardware import HardwareSpec

GEMM_TILE_M = 128
GEMM_TILE_N = 128
ATTN_TILE_Q = 128


@dataclass(frozen=True)
class Efficiencies:
    """Free parameters of the cost model; `calibrate` fits them to measurements."""

    gemm_compute_eff: float = 0.78
    gemm_mem_eff: float = 0.80
    gemm_blend: float = 3.0  # p of the p-norm blending compute and memory time (inf = max)
    kernel_overhead_s: float = 4e-6
    attn_compute_eff: float = 0.55
    attn_mem_eff: float = 0.70
    attn_per_seq_s: float = 0.3e-6
    elem_mem_eff: float = 0.60
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
    "kernel_overhead_s": (0.0, 50e-6),
    "attn_compute_eff": (0.02, 1.0),
    "attn_mem_eff": (0.05, 1.0),
    "attn_per_seq_s": (0.0, 20e-6),
    "elem_mem_eff": (0.05, 1.0),
    "comm_latency_s": (0.0, 200e-6),
    "comm_bw_eff": (0.05, 1.0),
    "host_overhead_s": (0.0, 50e-3),
    "host_per_seq_s": (0.0, 200e-6),
}


def _blend(a: float, b: float, p: float) -> float:
    hi = max(a, b)
    if hi <= 0.0:
        return 0.0
    if p >= 50:
        return hi
    return hi * ((a / hi) ** p + (b / hi) ** p) ** (1.0 / p)


def wave_efficiency(m: int, n: int, sm_count: int) -> float:
    """Fraction of SM-slots doing useful work when an m x n output is tiled over the SMs."""
    tiles = math.ceil(m / GEMM_TILE_M) * math.ceil(n / GEMM_TILE_N)
    waves = math.ceil(tiles / sm_count)
    # Partial tiles along M also waste rows (decode GEMMs with m=8 fill 8 of 128 rows), but
    # that waste is a memory-bound regime where the compute term does not bind.
    return tiles / (waves * sm_count)


def gemm_time_s(m: int, n: int, k: int, gpu: HardwareSpec, eff: Efficiencies,
                peak_flops: float, w_bytes: float, act_bytes: float = 2.0) -> float:
    """C[m, n] = A[m, k] @ W[k, n]; W elements of `w_bytes` bytes (fp8 1, int4 ~0.52)."""
    if m <= 0:
        return 0.0
    flops = 2.0 * m * n * k
    bytes_ = (m * k + m * n) * act_bytes + k * n * w_bytes
    t_c = flops / (peak_flops * eff.gemm_compute_eff * wave_efficiency(m, n, gpu.sm_count))
    t_m = bytes_ / (gpu.hbm_bw_bytes_s * eff.gemm_mem_eff)
    return _blend(t_c, t_m, eff.gemm_blend) + eff.kernel_overhead_s


def prefill_attn_time_s(chunk: int, prefix: int, q_heads: int, kv_heads: int, head_dim: int,
                        gpu: HardwareSpec, eff: Efficiencies, kv_bytes: float = 2.0) -> float:
    """Causal attention of `chunk` new tokens over `prefix` cached + themselves (one layer)."""
    pairs = chunk * (prefix + (chunk + 1) / 2.0)  # query-key pairs under the causal mask
    flops = 4.0 * q_heads * head_dim * pairs
    # wave quantisation over (query tiles x heads)
    tiles = math.ceil(chunk / ATTN_TILE_Q) * q_heads
    waves = math.ceil(tiles / gpu.sm_count)
    util = tiles / (waves * gpu.sm_count)
    t_c = flops / (gpu.bf16_flops * eff.attn_compute_eff * util)
    bytes_ = chunk * q_heads * head_dim * 2 * 2 + (prefix + chunk) * 2 * kv_heads * head_dim * kv_bytes
    t_m = bytes_ / (gpu.hbm_bw_bytes_s * eff.attn_mem_eff)
    return max(t_c, t_m) + eff.kernel_overhead_s


def decode_attn_time_s(n_seqs: int, ctx_sum: float, q_tokens: int, q_heads: int, kv_heads: int,
                       head_dim: int, gpu: HardwareSpec, eff: Efficiencies,
                       kv_bytes: float = 2.0) -> float:
    """Attention of `n_seqs` sequences, `q_tokens` queries each, over `ctx_sum` cached tokens."""
    if n_seqs <= 0:
        return 0.0
    bytes_ = ctx_sum * 2 * kv_heads * head_dim * kv_bytes + n_seqs * q_tokens * q_heads * head_dim * 4
    flops = 4.0 * q_heads * head_dim * ctx_sum * q_tokens
    t_m = bytes_ / (gpu.hbm_bw_bytes_s * eff.attn_mem_eff)
    t_c = flops / (gpu.bf16_flops * eff.attn_compute_eff)
    return max(t_m, t_c) + n_seqs * eff.attn_per_seq_s + eff.kernel_overhead_s


def elementwise_time_s(bytes_: float, gpu: HardwareSpec, eff: Efficiencies) -> float:
    return bytes_ / (gpu.hbm_bw_bytes_s * eff.elem_mem_eff) + eff.kernel_overhead_s


def link_bw_bytes_s(gpu: HardwareSpec, n_gpus: int) -> float:
    """Slowest link a group of `n_gpus` crosses: NVLink inside a node, the NIC across nodes."""
    if n_gpus <= gpu.gpus_per_node:
        return gpu.intra_node_bw_bytes_s()
    return gpu.network_bw_bytes_s


def allreduce_time_s(msg_bytes: float, n_gpus: int, gpu: HardwareSpec, eff: Efficiencies) -> float:
    """Ring all-reduce: 2 (n-1) steps, each moving msg/n bytes per GPU."""
    if n_gpus <= 1 or msg_bytes <= 0:
        return 0.0
    bw = link_bw_bytes_s(gpu, n_gpus) * eff.comm_bw_eff
    steps = 2 * (n_gpus - 1)
    # Small messages use one-shot all-reduce (vLLM custom all-reduce): a single latency.
    one_shot = eff.comm_latency_s + (n_gpus - 1) * msg_bytes / n_gpus / bw * 2
    ring = steps * eff.comm_latency_s / 2 + 2 * (n_gpus - 1) / n_gpus * msg_bytes / bw
    return min(one_shot, ring)


def p2p_time_s(msg_bytes: float, bw_bytes_s: float, eff: Efficiencies) -> float:
    if msg_bytes <= 0:
        return 0.0
    return eff.comm_latency_s + msg_bytes / (bw_bytes_s * eff.comm_bw_eff)
