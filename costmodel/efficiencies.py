"""The cost model's free parameters, and what every operator formula shares.

- `Efficiencies`: fractions of datasheet peaks, fixed per-kernel times, blend exponents and
  host times; `calibrate` fits them, `costmodel.arch_defaults` gives each GPU architecture its
  defaults. `PARAM_BOUNDS`: the physical range a fit may move each one within.
  `ELEM_EFF_PARAM`: which bandwidth efficiency each elementwise operator uses.
- `clock_scale(gpu)`: fixed per-kernel times are held in seconds at the reference SM clock and
  scale with the GPU's boost clock.
- `_blend`, `_blend_v`, `_blend_pv`: the p-norm of compute and memory time (scalar, array, and
  array with a p per element).
The formulas that use them: costmodel/roofline.py (GEMM, elementwise, collectives) and
costmodel/attention.py.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace

import numpy as np

from costmodel.hardware import HardwareSpec

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
    - `frontend_stream_s`: the API server's time per streamed chunk (one per request that
      produced tokens in a step: detokenise, frame, send), one chunk after another
      (`sim/replica.py` `delivered`). 0 (off) until runs inform it: `sim/runs/fit.py` fits it by
      full replays. It matters where a step's chunks take longer than the step: AIConfigurator's
      SGLang runs of Llama-3.1-8B on H200 stop gaining output tokens/s past ~20k at TP 4 and 8
      while their GPUs idle; the fit puts 60 us per chunk there (benchmarks/RESULTS.md,
      2026-12-05 afternoon).
    - `request_latency_s`: a fixed time between a client sending a request and the scheduler
      seeing it that no queue causes (network and RPC hops, a separate frontend's routing and
      tokenisation, stream set-up), paid by every request at once rather than one at a time,
      so it adds to every TTFT and to a closed-loop client's cycle. 0 until runs fit it: the
      intercept of TTFT against concurrency at a fixed prompt length. AIConfigurator's SGLang
      runs of Qwen3-32B on H100 (served through a separate frontend) put TTFT at about
      0.1-0.3 s plus each client's place in the prefill queue (benchmarks/RESULTS.md,
      2026-12-06 late morning).
    - `mem_reserved_gib`: memory per GPU the engine holds beyond what `costmodel.memory` counts,
      out of the KV cache. 0 until runs inform it: where a run's clients outnumber what the KV
      pool holds, the queue shows the pool's size, and `sim/runs/fit.py` fits it by full
      replays (AIConfigurator's SGLang 0.5.8 runs of Qwen3-32B on one H100 queue as if the pool
      held about 7k tokens where the memory plan leaves 24k: benchmarks/RESULTS.md, 2026-12-05
      evening).
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
    # ... and per streamed chunk on the way out (one per running request per step, the
    # detokenised tokens it sends the client), one at a time: 0 = not modelled
    frontend_stream_s: float = 0.0
    # a fixed latency every request pays outside any queue, before the API server takes it
    # (client-to-engine hops, a frontend's routing, stream set-up): part of every TTFT, not
    # one request at a time; 0 until runs fit it (sim/runs/fit.py)
    request_latency_s: float = 0.0
    # GiB each GPU's engine holds that the memory plan does not count (its graphs, workspaces,
    # allocator slack beyond the runtime reserve), taken from the KV cache: 0 until runs fit it
    mem_reserved_gib: float = 0.0
    # the engine's own kernel speed against this model, one factor each for the GPU time of
    # prefill work and of decode work (1 = as modelled); set by calibrating from engine runs
    # (sim/runs/fit.py), never by operator tables
    prefill_time_scale: float = 1.0
    decode_time_scale: float = 1.0
    # fused MoE (costmodel/moe_kernels.py), per kernel family (MOE_FAMILIES): fraction of the
    # compute dtype's tensor-core peak and of HBM bandwidth; `_k0`: elements of extra K per
    # down-projection row (a short K loop's prologue and epilogue, felt when `inter / tp` is
    # small); `_expert_s`: per active expert on the GPU (a grouped GEMM's problem setup,
    # its weights' first tiles); `_block_s`: per M tile of every expert's rows on every rank
    # (the grid walks them all); `_ep_s`: once per layer under expert parallelism (the expert
    # map's remapping kernels); the three clock-scaled; `_row_h` / `_row_i`: bytes over every routed row, local or
    # not (align, permute, activation, top-k sum, zero blocks), as multiples of hidden x 2 and
    # inter / tp x 2 at HBM bandwidth; `_overhead_s`: per layer (clock-scaled); `_blend`: the
    # p-norm of compute and memory time. Generic values
    # hand-set, Hopper's fitted (costmodel/arch_defaults.py).
    moe_triton_compute_eff: float = 0.5
    moe_triton_mem_eff: float = 0.7
    moe_triton_k0: float = 64.0
    moe_triton_expert_s: float = 1e-6
    moe_triton_row_h: float = 2.0
    moe_triton_row_i: float = 2.0
    moe_triton_overhead_s: float = 25e-6
    moe_triton_blend: float = 2.0
    moe_triton_block_s: float = 0.1e-6
    moe_triton_ep_s: float = 5e-6
    moe_triton_fp8_compute_eff: float = 0.5
    moe_triton_fp8_mem_eff: float = 0.7
    moe_triton_fp8_k0: float = 64.0
    moe_triton_fp8_expert_s: float = 1e-6
    moe_triton_fp8_row_h: float = 2.0
    moe_triton_fp8_row_i: float = 2.0
    moe_triton_fp8_overhead_s: float = 25e-6
    moe_triton_fp8_blend: float = 2.0
    moe_triton_fp8_block_s: float = 0.1e-6
    moe_triton_fp8_ep_s: float = 5e-6
    moe_cutlass_compute_eff: float = 0.5
    moe_cutlass_mem_eff: float = 0.7
    moe_cutlass_k0: float = 64.0
    moe_cutlass_expert_s: float = 1e-6
    moe_cutlass_row_h: float = 2.0
    moe_cutlass_row_i: float = 2.0
    moe_cutlass_overhead_s: float = 25e-6
    moe_cutlass_blend: float = 2.0
    moe_cutlass_block_s: float = 0.1e-6
    moe_cutlass_ep_s: float = 5e-6
    moe_cutlass_fp8_compute_eff: float = 0.5
    moe_cutlass_fp8_mem_eff: float = 0.7
    moe_cutlass_fp8_k0: float = 64.0
    moe_cutlass_fp8_expert_s: float = 1e-6
    moe_cutlass_fp8_row_h: float = 2.0
    moe_cutlass_fp8_row_i: float = 2.0
    moe_cutlass_fp8_overhead_s: float = 25e-6
    moe_cutlass_fp8_blend: float = 2.0
    moe_cutlass_fp8_block_s: float = 0.1e-6
    moe_cutlass_fp8_ep_s: float = 5e-6
    moe_marlin_compute_eff: float = 0.5
    moe_marlin_mem_eff: float = 0.7
    moe_marlin_k0: float = 64.0
    moe_marlin_expert_s: float = 1e-6
    moe_marlin_row_h: float = 2.0
    moe_marlin_row_i: float = 2.0
    moe_marlin_overhead_s: float = 25e-6
    moe_marlin_blend: float = 2.0
    moe_marlin_block_s: float = 0.1e-6
    moe_marlin_ep_s: float = 5e-6
    moe_marlin_mxfp4_compute_eff: float = 0.5
    moe_marlin_mxfp4_mem_eff: float = 0.7
    moe_marlin_mxfp4_k0: float = 64.0
    moe_marlin_mxfp4_expert_s: float = 1e-6
    moe_marlin_mxfp4_row_h: float = 2.0
    moe_marlin_mxfp4_row_i: float = 2.0
    moe_marlin_mxfp4_overhead_s: float = 25e-6
    moe_marlin_mxfp4_blend: float = 2.0
    moe_marlin_mxfp4_block_s: float = 0.1e-6
    moe_marlin_mxfp4_ep_s: float = 5e-6
    moe_oai_compute_eff: float = 0.5
    moe_oai_mem_eff: float = 0.7
    moe_oai_k0: float = 64.0
    moe_oai_expert_s: float = 1e-6
    moe_oai_row_h: float = 2.0
    moe_oai_row_i: float = 2.0
    moe_oai_overhead_s: float = 25e-6
    moe_oai_blend: float = 2.0
    moe_oai_block_s: float = 0.1e-6
    moe_oai_ep_s: float = 5e-6
    # block-scaled fp8 dense GEMMs (costmodel/block_fp8.py): FP8 tensor-core fraction, and the
    # host floor of one eager call per kernel (host seconds, not clock-scaled), blended by p
    fp8b_compute_eff: float = 0.7
    fp8b_flashinfer_host_s: float = 55e-6
    fp8b_deepgemm_host_s: float = 85e-6
    fp8b_cutlass_host_s: float = 170e-6
    fp8b_host_blend: float = 4.0
    # MLA attention modules (costmodel/mla.py): fixed time of one module's ~15 kernels
    # (clock-scaled), the absorbed latent attention's HBM and tensor-core fractions and time per
    # sequence (clock-scaled) over a bf16 cache (FlashAttention's MLA kernel) and an fp8 one
    # (FlashMLA, with its own fixed time), and the prefill attention's tensor-core fraction
    mla_overhead_s: float = 40e-6
    mla_attn_mem_eff: float = 0.8
    mla_attn_compute_eff: float = 0.5
    mla_attn_per_seq_s: float = 0.1e-6
    mla_fp8_attn_mem_eff: float = 0.8
    mla_fp8_attn_compute_eff: float = 0.5
    mla_fp8_attn_per_seq_s: float = 0.1e-6
    mla_fp8_overhead_s: float = 5e-6
    mla_prefill_compute_eff: float = 0.6
    mla_token_head_s: float = 0.1e-9  # absorbed path, per (token x head): the per-head BMMs' copies
    mla_token_s: float = 1e-9  # per token: the module's small per-token kernels

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
    "frontend_stream_s": (0.0, 1e-3),
    "request_latency_s": (0.0, 2.0),
    "mem_reserved_gib": (0.0, 40.0),
    "prefill_time_scale": (0.2, 5.0),
    "decode_time_scale": (0.2, 5.0),
    **{f"moe_{f}_{n}": b for f in ("triton", "triton_fp8", "cutlass", "cutlass_fp8", "marlin", "marlin_mxfp4", "oai")
       for n, b in (("compute_eff", (0.02, 1.0)), ("mem_eff", (0.02, 1.0)), ("k0", (0.0, 8192.0)),
                    ("expert_s", (0.0, 50e-6)), ("row_h", (0.0, 50.0)), ("row_i", (0.0, 50.0)),
                    ("overhead_s", (0.0, 300e-6)), ("blend", (1.0, 12.0)),
                    ("block_s", (0.0, 20e-6)), ("ep_s", (0.0, 200e-6)))},
    "fp8b_compute_eff": (0.05, 1.0),
    # host time of one eager call: a Python op of a few launches, 10 us to 1 ms
    "fp8b_flashinfer_host_s": (0.0, 1e-3),
    "fp8b_deepgemm_host_s": (0.0, 1e-3),
    "fp8b_cutlass_host_s": (0.0, 1e-3),
    "fp8b_host_blend": (1.0, 50.0),
    "mla_overhead_s": (0.0, 300e-6),
    "mla_attn_mem_eff": (0.05, 1.0),
    "mla_attn_compute_eff": (0.02, 1.0),
    "mla_attn_per_seq_s": (0.0, 20e-6),
    "mla_fp8_attn_mem_eff": (0.05, 1.0),
    "mla_fp8_attn_compute_eff": (0.02, 1.0),
    "mla_fp8_attn_per_seq_s": (0.0, 20e-6),
    "mla_fp8_overhead_s": (0.0, 100e-6),
    "mla_token_head_s": (0.0, 20e-9),
    "mla_token_s": (0.0, 1e-6),
    "mla_prefill_compute_eff": (0.02, 1.0),
}
MOE_FAMILIES = ("triton", "triton_fp8", "cutlass", "cutlass_fp8", "marlin", "marlin_mxfp4", "oai")

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


# --- blending compute and memory time -----------------------------------------------------
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
