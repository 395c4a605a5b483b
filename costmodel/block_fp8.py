"""Block-scaled FP8 dense GEMMs (128 x 128 weight blocks, 1 x 128 activation groups), as vLLM's
`W8A8BlockFp8LinearOp` runs them on Hopper.

    block_fp8_gemm_time_s(*, m, n, k, gpu, eff, graph=True, kernel="") -> seconds (scalars or arrays)
    block_fp8_kernel(m, n, k) -> "flashinfer" | "deepgemm" | "cutlass"

GPU time: a per-token-group quantisation of A (bf16 in; fp8 and one fp32 scale per 128
elements out) and the W8A8 GEMM on FP8 tensor cores with the scales applied per 128-deep K
slice, priced as costmodel/roofline.py's W8A8 GEMM at `fp8b_compute_eff` of the FP8 peak.

Why AIConfigurator's block-FP8 rows take 55-90 us where a per-tensor FP8 GEMM of the same shape
takes 10-15 us (the "5-7x too fast at M <= 512" of issue 15): the op is several launches through
Python (the quantisation kernel, the scale tensor laid out column-major and TMA-aligned, a JIT
kernel lookup, the GEMM), and the table times it eagerly, one call after another. The host path
of one call is then the floor: ~57 us through FlashInfer's kernel (M < 32), ~85 us through
DeepGEMM, ~170 us through CUTLASS (N < 64 or K < 128, shapes DeepGEMM cannot take), flat in M
until the GPU time passes it (M ~ 2-4k at N = K = 4096), after which the two overlap (launches
are asynchronous). `fp8b_flashinfer_host_s`, `fp8b_deepgemm_host_s`, `fp8b_cutlass_host_s`
are those floors (host seconds, not clock-scaled), blended with the GPU time by a p-norm of
`fp8b_host_blend`. Inside a CUDA graph (`graph=True`: vLLM's decode batches, the MLA modules
AIConfigurator times) there is no host path, and only the GPU time remains.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from costmodel import roofline as rl
from costmodel.efficiencies import Efficiencies, _blend, _blend_v
from costmodel.hardware import HardwareSpec

KERNELS = ("flashinfer", "deepgemm", "cutlass")
GROUP = 128  # activation quantisation group (elements of K) and weight block


def block_fp8_kernel(m, n, k):
    """Which kernel vLLM 0.24 picks on Hopper (AIConfigurator's H100 rows): CUTLASS where N < 64
    or K < 128, FlashInfer below 32 rows, DeepGEMM otherwise. Scalars or arrays."""
    m, n, k = (np.asarray(x) for x in (m, n, k))
    out = np.where((n < 64) | (k < 128), "cutlass", np.where(m < 32, "flashinfer", "deepgemm"))
    return str(out) if out.ndim == 0 else out


_E8: dict[int, tuple[Efficiencies, Efficiencies]] = {}


def _e8(eff: Efficiencies) -> Efficiencies:
    """The W8A8 parameters as the block-scaled GEMM uses them: its own FP8 fraction, and a group
    quantisation with no per-token path (cached per parameter set: `replace` is slow)."""
    hit = _E8.get(id(eff))
    if hit is None or hit[0] is not eff:
        if len(_E8) > 64:
            _E8.clear()
        hit = _E8[id(eff)] = (eff, replace(eff, fp8_compute_eff=eff.fp8b_compute_eff, fp8_quant_row_s=0.0))
    return hit[1]


def block_fp8_gemm_1(m: int, n: int, k: int, gpu: HardwareSpec, eff: Efficiencies, graph: bool,
                      kernel: str) -> float:
    """`block_fp8_gemm_time_s` on Python scalars (the simulator's path; a test keeps it equal)."""
    if m <= 0:
        return 0.0
    fp8 = gpu.has_fp8
    g = rl.gemm_time_s(m, n, k, gpu, _e8(eff), gpu.fp8_flops if fp8 else gpu.bf16_flops,
                       1.0 + 4.0 / (GROUP * GROUP), 1.0 if fp8 else 2.0, fp8)
    g += m * k * 4.0 / GROUP / (gpu.hbm_bw_bytes_s * eff.fp8_quant_mem_eff)
    if graph:
        return g
    kern = kernel or block_fp8_kernel(m, n, k)
    host = {"flashinfer": eff.fp8b_flashinfer_host_s, "cutlass": eff.fp8b_cutlass_host_s}.get(
        kern, eff.fp8b_deepgemm_host_s)
    return _blend(g, host, eff.fp8b_host_blend)


def block_fp8_gemm_time_s(*, m, n, k, gpu: HardwareSpec, eff: Efficiencies, graph: bool = True,
                          kernel=""):
    """Seconds of C[m, n] = A[m, k] @ W[k, n] with 128 x 128 block-scaled fp8 W (module
    docstring). `graph=False`: timed eagerly, the host launch path of the chosen kernel (or
    `kernel`, one of KERNELS) is the floor. Scalars or arrays."""
    if np.ndim(m) == 0 and np.ndim(n) == 0 and np.ndim(k) == 0 and isinstance(kernel, str):
        return block_fp8_gemm_1(int(m), int(n), int(k), gpu, eff, graph, kernel)
    scalar = np.ndim(m) == 0
    m, n, k = (np.atleast_1d(np.asarray(x, dtype=np.int64)) for x in (m, n, k))
    m, n, k = np.broadcast_arrays(m, n, k)
    fp8 = gpu.has_fp8
    # the group quantisation is its own kernel, without the per-token W8A8 path's per-row time
    e8 = _e8(eff)
    peak = gpu.fp8_flops if fp8 else gpu.bf16_flops
    w = 1.0 + 4.0 / (GROUP * GROUP)
    g = rl.gemm_time_s_v(m, n, k, gpu, e8, peak, w, 1.0 if fp8 else 2.0, fp8)
    # the group quantisation writes 1 + 4 / 128 bytes per element beside the 2 it reads; the
    # W8A8 formula's own quantisation pass counts 3: add the scales
    g = g + m * k * 4.0 / GROUP / (gpu.hbm_bw_bytes_s * eff.fp8_quant_mem_eff)
    if not graph:
        pick = block_fp8_kernel(m, n, k)
        kern = np.broadcast_to(np.asarray(kernel if not isinstance(kernel, str) else (kernel or pick)), m.shape)
        kern = np.where(kern == "", pick, kern)
        host = np.select([kern == "flashinfer", kern == "cutlass"],
                         [eff.fp8b_flashinfer_host_s, eff.fp8b_cutlass_host_s], eff.fp8b_deepgemm_host_s)
        g = _blend_v(g, host, eff.fp8b_host_blend)
    g = np.where(m > 0, g, 0.0)
    return float(g[0]) if scalar else g
