"""Default efficiencies per GPU architecture: what a GPU gets before anyone calibrates it.

The cost model's parameters describe kernels (how close a CUTLASS GEMM or a FlashAttention
kernel comes to the datasheet peaks, their fixed times), and the kernels an engine runs are
chosen per architecture: SM80 CUTLASS and FlashAttention-2 on Ampere and Ada, SM90 CUTLASS
(warp-specialised, TMA) and FlashAttention-3 on Hopper. One generic set (`Efficiencies()`) had
left uncalibrated H100 predictions 21% off (attention 29%) where the same model fitted to H100
rows is 8% off, so each architecture with public measurements gets its own fitted defaults:

- ampere: Vidur's A100 tables, the rows of its two fitting models plus its decode-attention
  table;
- hopper: the seed-0 20% sample of AIConfigurator's H100 GEMM and attention tables, and for
  the collectives (`comm_*`) the seed-0 20% sample of vLLM's custom all-reduce captured in CUDA
  graphs (AIConfigurator's `custom_allreduce_perf`, backend `vllm_graph`): how vLLM
  all-reduces inside a decode iteration, ~4 us a call at small messages where the generic
  latency model said 8-24 us. Its eager rows time one isolated call's host launch (~20 us),
  which a busy eager iteration does not wait for; they are not used. Inside a node the
  one-shot kernel reads every peer in parallel over NVSwitch, so its step latency is small;
  send/recv (pipeline stages) shares that latency and is priced a few microseconds low. The
  fused-MoE (per kernel family), MLA-module and block-FP8 GEMM parameters come from the seed-0
  20% samples of the H100 `moe_perf`, `mla_*_module_perf` and `fp8_block` GEMM rows, fitted on
  top of the dense Hopper values (benchmarks/moe_accuracy.py reports on the other 80%).

Both are the fitting rows of benchmarks/costmodel_accuracy.py, never the rows it reports on;
benchmarks/derive_arch_defaults.py reproduces the numbers below (fits started from the generic
set; parameters the rows do not inform are left generic). Parameters outside these fits
(Ampere's collectives, host overhead, everything fp8 on Ampere) keep the generic values.

Ada (L4, L40S) runs Ampere's kernel families and takes Ampere's defaults. Blackwell (B200)
takes Hopper's: it has no public kernel tables here, and its kernels descend from Hopper's
asynchronous, TMA-fed design; calibrate it. AMD (MI300X) and measured devices (a CPU) keep the
generic set.
"""

from __future__ import annotations

from dataclasses import replace

from costmodel.efficiencies import Efficiencies
from costmodel.errors import ServePlanError
from costmodel.hardware import HardwareSpec, load_gpu

# benchmarks/derive_arch_defaults.py, 2026-11-22 (4 significant digits); hopper comm_* 2026-12-04;
# hopper moe_*, mla_*, fp8b_* 2026-12-05 (fitted on top of the dense values below)
ARCH_DEFAULTS = {
    "ampere": {
        "act_mem_eff": 0.4851,
        "add_mem_eff": 0.9068,
        "attn_ctas_per_sm": 0.1214,
        "attn_decode_cta_s": 1.443e-08,
        "attn_mem_eff": 0.7983,
        "attn_overhead_s": 1.03e-05,
        "elem_overhead_s": 1.411e-06,
        "emb_mem_eff": 0.1509,
        "gemm_blend": 1.501,
        "gemm_compute_eff": 0.7363,
        "gemm_ctas_per_sm": 0.09263,
        "gemm_mem_eff": 0.8874,
        "gemm_overlap_k": 23260.0,
        "gemm_wave_exp": 0.2564,
        "kernel_overhead_s": 3.499e-06,
        "l2_bw_ratio": 1.445,
        "norm_mem_eff": 0.3546,
        "norm_row_elem_s": 6.808e-10,
        "rope_mem_eff": 0.4319,
    },
    "hopper": {
        "attn_blend": 1.87,
        "attn_cache_cta_s": 3.624e-06,
        "attn_compute_eff": 0.747,
        "attn_ctas_per_sm": 0.6989,
        "attn_decode_blend": 3.569,
        "attn_decode_cta_s": 2.841e-08,
        "attn_decode_fp8_s": 2.91e-06,
        "attn_fp8_cache_cta_s": 5.272e-06,
        "attn_fp8_compute_eff": 0.6958,
        "attn_fp8_decode_eff": 0.5116,
        "attn_fp8_kv_s": 3.176e-06,
        "attn_fp8_mem_eff": 0.7235,
        "attn_fp8_tile_s": 3.266e-06,
        "attn_mem_eff": 0.946,
        "attn_overhead_s": 1.144e-05,
        "attn_per_seq_s": 7.144e-09,
        "attn_softmax_flops": 298.9,
        "attn_tile_s": 5.128e-06,
        "comm_base_s": 3.766e-06,
        "comm_bw_eff": 0.6892,
        "comm_latency_s": 5.792e-07,
        "fp8_blend": 1.98,
        "fp8_compute_eff": 0.9097,
        "fp8_partial_slow": 0.1238,
        "fp8_power_slow": 0.3779,
        "fp8_power_tau_s": 0.000168,
        "fp8_quant_mem_eff": 0.6406,
        "fp8_quant_row_s": 9.069e-09,
        "gemm_blend": 1.543,
        "gemm_compute_eff": 0.8216,
        "gemm_ctas_per_sm": 0.104,
        "gemm_mem_eff": 0.8469,
        "gemm_overlap_k": 3380.0,
        "gemm_tile_load": 0.8208,
        "gemm_wave_exp": 0.08377,
        "kernel_overhead_s": 3.559e-06,
        "l2_bw_ratio": 1.43,
        # fused MoE, MLA modules and block-FP8 GEMMs, 2026-12-05: the seed-0 20% samples of
        # AIConfigurator's H100 moe, mla and fp8_block gemm tables (benchmarks/moe_accuracy.py)
        "fp8b_compute_eff": 0.962,
        "fp8b_cutlass_host_s": 0.0001802,
        "fp8b_deepgemm_host_s": 9.018e-05,
        "fp8b_flashinfer_host_s": 5.965e-05,
        "fp8b_host_blend": 2.828,
        "mla_attn_compute_eff": 1.0,
        "mla_attn_mem_eff": 0.9008,
        "mla_attn_per_seq_s": 5.669e-08,
        "mla_fp8_attn_compute_eff": 0.8277,
        "mla_fp8_attn_mem_eff": 1.0,
        "mla_fp8_attn_per_seq_s": 7.474e-08,
        "mla_fp8_overhead_s": 2.296e-05,
        "mla_overhead_s": 7.253e-05,
        "mla_prefill_compute_eff": 1.0,
        "mla_token_head_s": 2.164e-09,
        "mla_token_s": 2.629e-08,
        "moe_cutlass_blend": 2.664,
        "moe_cutlass_block_s": 1.326e-08,
        "moe_cutlass_compute_eff": 0.4497,
        "moe_cutlass_ep_s": 7.69e-06,
        "moe_cutlass_expert_s": 5.089e-07,
        "moe_cutlass_fp8_blend": 1.0,
        "moe_cutlass_fp8_block_s": 1.45e-08,
        "moe_cutlass_fp8_compute_eff": 0.1522,
        "moe_cutlass_fp8_ep_s": 7.747e-07,
        "moe_cutlass_fp8_expert_s": 9.797e-07,
        "moe_cutlass_fp8_k0": 337.2,
        "moe_cutlass_fp8_mem_eff": 0.4031,
        "moe_cutlass_fp8_overhead_s": 4.176e-05,
        "moe_cutlass_fp8_row_h": 0.3367,
        "moe_cutlass_fp8_row_i": 0.1331,
        "moe_cutlass_k0": 3023.0,
        "moe_cutlass_mem_eff": 0.8301,
        "moe_cutlass_overhead_s": 2.622e-05,
        "moe_cutlass_row_h": 0.6818,
        "moe_cutlass_row_i": 0.4066,
        "moe_marlin_blend": 1.51,
        "moe_marlin_block_s": 2.831e-07,
        "moe_marlin_compute_eff": 0.382,
        "moe_marlin_ep_s": 1.262e-05,
        "moe_marlin_expert_s": 5.45e-08,
        "moe_marlin_k0": 73.37,
        "moe_marlin_mem_eff": 1.0,
        "moe_marlin_mxfp4_blend": 1.624,
        "moe_marlin_mxfp4_block_s": 1.593e-07,
        "moe_marlin_mxfp4_compute_eff": 0.3264,
        "moe_marlin_mxfp4_ep_s": 7.181e-06,
        "moe_marlin_mxfp4_expert_s": 9.001e-09,
        "moe_marlin_mxfp4_k0": 14.28,
        "moe_marlin_mxfp4_mem_eff": 1.0,
        "moe_marlin_mxfp4_overhead_s": 8.046e-05,
        "moe_marlin_mxfp4_row_h": 6.046,
        "moe_marlin_mxfp4_row_i": 1.736,
        "moe_marlin_overhead_s": 4.784e-05,
        "moe_marlin_row_h": 4.281,
        "moe_marlin_row_i": 0.3077,
        "moe_oai_blend": 1.309,
        "moe_oai_block_s": 2.232e-07,
        "moe_oai_compute_eff": 0.6954,
        "moe_oai_ep_s": 5.962e-05,
        "moe_oai_expert_s": 1.755e-08,
        "moe_oai_k0": 450.7,
        "moe_oai_mem_eff": 0.8682,
        "moe_oai_overhead_s": 4.622e-05,
        "moe_oai_row_h": 0.1447,
        "moe_oai_row_i": 0.1215,
        "moe_triton_blend": 3.759,
        "moe_triton_block_s": 1.171e-07,
        "moe_triton_compute_eff": 0.5744,
        "moe_triton_ep_s": 3.23e-06,
        "moe_triton_expert_s": 3.552e-08,
        "moe_triton_fp8_blend": 7.036,
        "moe_triton_fp8_block_s": 3.071e-08,
        "moe_triton_fp8_compute_eff": 0.437,
        "moe_triton_fp8_ep_s": 5e-06,
        "moe_triton_fp8_expert_s": 6.753e-08,
        "moe_triton_fp8_k0": 32.62,
        "moe_triton_fp8_mem_eff": 0.8847,
        "moe_triton_fp8_overhead_s": 5.805e-05,
        "moe_triton_fp8_row_h": 4.691,
        "moe_triton_fp8_row_i": 16.06,
        "moe_triton_k0": 26.76,
        "moe_triton_mem_eff": 0.8872,
        "moe_triton_overhead_s": 4.074e-05,
        "moe_triton_row_h": 2.8,
        "moe_triton_row_i": 6.354,
    },
}

# architecture -> the family whose defaults it takes (absent: the generic set)
ARCH_FAMILY = {"ampere": "ampere", "ada": "ampere", "hopper": "hopper", "blackwell": "hopper"}

_GENERIC = Efficiencies()
_CACHE: dict[str, Efficiencies] = {}


def arch_efficiencies(arch: str) -> Efficiencies:
    """The defaults of architecture `arch` ('' or one without a family: the generic set)."""
    fam = ARCH_FAMILY.get(arch, "")
    if fam not in _CACHE:
        _CACHE[fam] = replace(_GENERIC, **ARCH_DEFAULTS[fam]) if fam else _GENERIC
    return _CACHE[fam]


def default_efficiencies(gpu: HardwareSpec | str | None) -> Efficiencies:
    """What an uncalibrated GPU gets: its architecture's defaults. A name that is no GPU preset
    or registered device (a calibration profile's own label) gets the generic set."""
    if gpu is None:
        return _GENERIC
    if not isinstance(gpu, HardwareSpec):
        try:
            gpu = load_gpu(gpu)
        except ServePlanError:  # an unknown name here is a label, not user input to reject
            return _GENERIC
    return arch_efficiencies(gpu.arch)


_SOURCE = {
    "ampere": "Ampere defaults, fitted on Vidur's A100 tables",
    "hopper": "Hopper defaults, fitted on AIConfigurator's H100 tables",
}
_BORROWED = {"ada": "Ampere", "blackwell": "Hopper"}


def defaults_note(gpu: HardwareSpec) -> str:
    """One line for a plan: where an uncalibrated GPU's cost-model parameters come from."""
    fam = ARCH_FAMILY.get(gpu.arch, "")
    if not fam:
        what = "generic defaults (no kernel measurements of this architecture here)"
    elif gpu.arch in _BORROWED:
        what = (f"{_BORROWED[gpu.arch]}'s defaults, borrowed: no {gpu.arch.capitalize()} kernel "
                "measurements here, expect larger errors")
    else:
        what = _SOURCE[fam]
    return (f"cost model for {gpu.name}: no calibration, {what}; `serveplan validate` on that "
            "GPU fits its own")


# parameters no kernel measurement can set, and where a profile's values of them come from
_ENGINE_PARAMS = {
    "host_overhead_s": "vLLM's per-iteration scheduler and host time",
    "host_per_seq_s": "vLLM's per-sequence host time per iteration",
    "frontend_s": "the engine API server's time per request",
    "frontend_per_token_s": "the engine API server's time per prompt token",
}
_COMM_PREFIXES = ("comm_", "p2p_", "net_")


def default_source(gpu: HardwareSpec | str, name: str) -> str:
    """Where an uncalibrated parameter's value comes from, as a calibration profile records it."""
    if name in _ENGINE_PARAMS:
        return (f"default: {_ENGINE_PARAMS[name]}, which a kernel run cannot measure (an engine "
                "benchmark run sets it: serveplan calibrate --format vllm-bench)")
    comm = " (a collective: one GPU's kernel run cannot measure it)" if name.startswith(_COMM_PREFIXES) else ""
    if not isinstance(gpu, HardwareSpec):
        try:
            gpu = load_gpu(gpu)
        except ServePlanError:
            return "default: generic (costmodel.roofline.Efficiencies)" + comm
    fam = ARCH_FAMILY.get(gpu.arch, "")
    if fam and name in ARCH_DEFAULTS[fam]:
        borrowed = f" (borrowed for {gpu.arch})" if gpu.arch in _BORROWED else ""
        return f"default: {_SOURCE[fam]}{borrowed}{comm}"
    return "default: generic (costmodel.roofline.Efficiencies)" + comm
