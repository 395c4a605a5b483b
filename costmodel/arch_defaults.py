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
  send/recv (pipeline stages) shares that latency and is priced a few microseconds low.

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

# benchmarks/derive_arch_defaults.py, 2026-11-22 (4 significant digits); hopper comm_* 2026-12-04
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
