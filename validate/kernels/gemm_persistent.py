"""GEMM for large M on Hopper: a persistent kernel fed by the tensor-memory accelerator (TMA).

C[M, N] = A[M, K] @ B[K, N], used by `gemm.matmul` when M > 64 on a GPU of compute capability
9.0 or newer with 16-byte aligned rows (`tma_ok`), else its tiled kernel runs.

B may be row-major ([K, N], N contiguous) or column-major (the K-major layout cuBLASLt and fp8
wgmma take: read through a descriptor of B^T). fp8 inputs take only the K-major B.

Persistent: the grid is min(SMs, tiles) programs, each walking the output tiles tile, tile +
SMs, ... in the grouped order of the tiled kernel (a band of GROUP_M tile rows at a time, so a
wave shares B columns in L2), so no program launches per tile and the last wave is at most one
tile per SM. Tiles are read through host-built tensor descriptors (`TensorDescriptor`): the
copy engine fetches each [BLOCK_M, BLOCK_K] / [BLOCK_K, BLOCK_N] box into shared memory, out of
range elements read as zero (the K tail and the edges need no masks), and the output tile is
written the same way. The scales of fp8 inputs multiply the fp32 accumulator once per tile.
Block shapes are autotuned per (M bucket, N, K, dtype); a config's `pre_hook` sets the
descriptors' box shapes to its blocks. Under Triton's interpreter one small config runs (the
interpreter reads descriptors too), so the CPU tests cover this path.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._device import interpreting
from ._gemm_common import scale_product
from ._tuning import autotune, elem_bytes, smem_prune


@triton.jit
def _gemm_tma_persistent_kernel(
    a_desc, b_desc, c_desc, a_scale_ptr, b_scale_ptr, scale,
    M, N, K, M_BUCKET, DTYPE_KEY,  # the last two only key the autotuner
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
    GROUP_M: tl.constexpr, NUM_SMS: tl.constexpr,
    A_SCALE_PTR: tl.constexpr, B_SCALE_PTR: tl.constexpr,  # scales read from device memory
    OUT_DTYPE: tl.constexpr, PRECISION: tl.constexpr, UPCAST: tl.constexpr,
    B_KMAJOR: tl.constexpr,  # b_desc reads B^T [N, K] (B column-major): fp8 wgmma's layout
):
    first = tl.program_id(0)
    tiles_m = tl.cdiv(M, BLOCK_M)
    tiles_n = tl.cdiv(N, BLOCK_N)
    k_steps = tl.cdiv(K, BLOCK_K)
    band_size = GROUP_M * tiles_n
    mult = scale_product(scale, a_scale_ptr, b_scale_ptr, A_SCALE_PTR, B_SCALE_PTR)
    for tile in range(first, tiles_m * tiles_n, NUM_SMS):
        band = tile // band_size
        band_first_m = band * GROUP_M
        band_rows = tl.minimum(tiles_m - band_first_m, GROUP_M)
        off_m = (band_first_m + (tile % band_size) % band_rows) * BLOCK_M
        off_n = ((tile % band_size) // band_rows) * BLOCK_N
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        for ks in range(k_steps):
            a = a_desc.load([off_m, ks * BLOCK_K])
            if B_KMAJOR:
                b = b_desc.load([off_n, ks * BLOCK_K]).T
            else:
                b = b_desc.load([ks * BLOCK_K, off_n])
            if UPCAST:
                a = a.to(tl.float32)
                b = b.to(tl.float32)
            acc = tl.dot(a, b, acc, input_precision=PRECISION)
        c_desc.store([off_m, off_n], (acc * mult).to(OUT_DTYPE))


def _set_boxes(nargs: dict) -> None:
    """Autotuner pre-hook: the descriptors' box shapes are the config's blocks."""
    bm, bn, bk = nargs["BLOCK_M"], nargs["BLOCK_N"], nargs["BLOCK_K"]
    nargs["a_desc"].block_shape = [bm, bk]
    nargs["b_desc"].block_shape = [bn, bk] if nargs["B_KMAJOR"] else [bk, bn]
    nargs["c_desc"].block_shape = [bm, bn]


def _configs() -> list[triton.Config]:
    """Hopper tile shapes: 128-row tiles for wgmma's 64-row warpgroup steps, 64-128 deep K
    slices (128 for fp8, whose bytes are half), 3-4 stages of shared memory. The autotuner
    drops configs that do not fit."""
    shapes = [  # BLOCK_M, BLOCK_N, BLOCK_K, warps, stages
        (128, 256, 64, 8, 3),
        (256, 128, 64, 8, 3),
        (128, 128, 64, 8, 4),
        (128, 128, 64, 4, 4),
        (128, 256, 128, 8, 3),
        (128, 128, 128, 8, 4),
        (64, 256, 64, 4, 4),
        (64, 128, 64, 4, 4),
    ]
    return [triton.Config({"BLOCK_M": m, "BLOCK_N": n, "BLOCK_K": k, "GROUP_M": 8},
                          num_warps=w, num_stages=s, pre_hook=_set_boxes)
            for m, n, k, w, s in shapes]


def _smem(c: dict, args: dict) -> float:
    """Shared memory of a config: its stages of A and B boxes, and the output box the TMA
    stores from."""
    e = elem_bytes(args["a_desc"])
    return (c["num_stages"] * (c["BLOCK_M"] + c["BLOCK_N"]) * c["BLOCK_K"] * e
            + c["BLOCK_M"] * c["BLOCK_N"] * elem_bytes(args["c_desc"]))


_persistent_autotuned = autotune(_configs(), ["M_BUCKET", "N", "K", "DTYPE_KEY", "B_KMAJOR"],
                                 smem_prune(_smem))(
    _gemm_tma_persistent_kernel)
_INTERPRETER = {"BLOCK_M": 32, "BLOCK_N": 32, "BLOCK_K": 32, "GROUP_M": 2}
_NUM_SMS: dict[torch.device, int] = {}
_DTYPE_KEY = {torch.bfloat16: 0, torch.float16: 1, torch.float32: 2, torch.float8_e4m3fn: 3}
_TL_DTYPE = {torch.bfloat16: tl.bfloat16, torch.float16: tl.float16, torch.float32: tl.float32}


def num_sms(device: torch.device) -> int:
    """Multiprocessors of a CUDA device (read once); 4 under the interpreter, so that its
    tests walk several tiles per program."""
    if device.type != "cuda" or interpreting():
        return 4
    if device not in _NUM_SMS:
        _NUM_SMS[device] = torch.cuda.get_device_properties(device).multi_processor_count
    return _NUM_SMS[device]


def k_major(b: torch.Tensor) -> bool:
    """B [K, N] stored column-major (B^T row-major): how cuBLASLt and fp8 wgmma take it."""
    return b.stride(0) == 1 and b.shape[1] > 1 and b.stride(1) != 1


def tma_ok(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor) -> bool:
    """Whether the copy engine can read A, B (row-major, or column-major through B^T) and write
    C: unit stride on the last axis, 16-byte aligned base and row stride; fp8 B must be
    K-major (fp8 wgmma reads B along K)."""
    if a.dtype == torch.float8_e4m3fn and not k_major(b):
        return False
    for t in (a, b.t() if k_major(b) else b, c):
        if t.stride(-1) != 1 or t.data_ptr() % 16 or (t.stride(0) * t.element_size()) % 16:
            return False
    return True


def hopper(device: torch.device) -> bool:
    """A CUDA device with the TMA (compute capability 9.0+), or the interpreter."""
    if interpreting():
        return True
    return device.type == "cuda" and torch.cuda.get_device_capability(device) >= (9, 0)


def matmul_persistent(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor, a_scale, b_scale,
                      scale: float, m_bucket: int, precision: str = "ieee") -> None:
    """Launch the persistent TMA kernel: c = (scale x a_scale x b_scale) a @ b, inputs checked
    by `gemm.matmul`; a_scale / b_scale are one-element device tensors or None."""
    from triton.tools.tensor_descriptor import TensorDescriptor

    M, K = a.shape
    N = b.shape[1]
    sms = num_sms(a.device)
    kmaj = k_major(b)
    # boxes are set per config (`_set_boxes`); these are the interpreter's
    bm, bn, bk = _INTERPRETER["BLOCK_M"], _INTERPRETER["BLOCK_N"], _INTERPRETER["BLOCK_K"]
    descs = (TensorDescriptor.from_tensor(a, [bm, bk]),
             TensorDescriptor.from_tensor(b.t(), [bn, bk]) if kmaj else
             TensorDescriptor.from_tensor(b, [bk, bn]),
             TensorDescriptor.from_tensor(c, [bm, bn]))
    args = (*descs, a_scale if a_scale is not None else c, b_scale if b_scale is not None else c,
            float(scale), M, N, K, m_bucket, _DTYPE_KEY[a.dtype] * 4 + _DTYPE_KEY[c.dtype])
    flags = {"NUM_SMS": sms, "A_SCALE_PTR": a_scale is not None, "B_SCALE_PTR": b_scale is not None,
             "OUT_DTYPE": _TL_DTYPE[c.dtype], "PRECISION": precision,
             "UPCAST": interpreting() and a.dtype == torch.bfloat16, "B_KMAJOR": kmaj}

    def grid(meta: dict) -> tuple[int]:
        return (min(sms, triton.cdiv(M, meta["BLOCK_M"]) * triton.cdiv(N, meta["BLOCK_N"])),)

    if interpreting():
        _gemm_tma_persistent_kernel[grid](*args, **flags, **_INTERPRETER)
    else:
        _persistent_autotuned[grid](*args, **flags)
