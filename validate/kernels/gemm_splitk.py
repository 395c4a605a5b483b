"""GEMM for decode shapes (M <= 64): split-K in one launch.

C[M, N] = A[M, K] @ B[K, N] with few rows is a stream of B (the weights) at HBM bandwidth. One
tile of 128 columns per program leaves most SMs idle when N is small (N = 4096 gives 32 tiles
for 132 SMs), so K is cut into `split` ranges and each (column tile, K range) is a program:
tiles x split programs, about two per SM. Every program writes its fp32 partial tile to a
workspace, then counts itself in on the tile's semaphore (an atomic add with release and
acquire semantics after a CTA barrier, so its stores are visible first); the program that
arrives last sums the partials, applies the fp8 scales, writes C in the output dtype and resets
the semaphore to 0 for the next launch. One kernel, no memset and no second reduction launch:
in a CUDA graph the whole GEMM is one node, as cuBLAS's split-K GEMV is.

All rows fit in one BLOCK_M (16, 32 or 64: tl.dot needs 16 at least). Columns are 128 per
program on a GPU; BLOCK_K, warps and pipeline stages are autotuned per (M bucket, N, K, split).
The semaphores are one int32 per column tile, allocated once per device (zeroed on the device,
no host copy): launches on one stream never share them at once.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._device import interpreting
from ._gemm_common import dot_k_range, scale_product
from ._tuning import autotune, elem_bytes, smem_prune
from .gemm_persistent import num_sms

BLOCK_N_GPU = 128
K_QUANTUM = 256  # K ranges are multiples of this (every BLOCK_K divides it)
MIN_K_PER_SPLIT = 512  # shorter ranges add partial traffic and semaphores for little gain
MAX_SPLIT = 16
MAX_TILES = 1 << 16  # semaphores per device: N up to 8M columns
_SEMAPHORES: dict[torch.device, torch.Tensor] = {}


@triton.jit
def _gemm_splitk_kernel(
    a_ptr, b_ptr, c_ptr, ws_ptr, sem_ptr, a_scale_ptr, b_scale_ptr, scale,
    M, N, K, K_PER, M_BUCKET,
    stride_am, stride_ak, stride_bk, stride_bn, stride_cm, stride_cn,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, SPLIT_K: tl.constexpr,
    A_SCALE_PTR: tl.constexpr, B_SCALE_PTR: tl.constexpr,
    PRECISION: tl.constexpr, UPCAST: tl.constexpr,
):
    tile_n = tl.program_id(0)
    split = tl.program_id(1)
    rows = tl.arange(0, BLOCK_M)
    cols = tile_n * BLOCK_N + tl.arange(0, BLOCK_N)
    ks = tl.arange(0, BLOCK_K)
    k_lo = split * K_PER
    k_hi = tl.minimum(K, k_lo + K_PER)
    a_ptrs = a_ptr + rows[:, None] * stride_am + (k_lo + ks)[None, :].to(tl.int64) * stride_ak
    b_ptrs = b_ptr + (k_lo + ks)[:, None].to(tl.int64) * stride_bk + cols[None, :].to(tl.int64) * stride_bn
    acc = dot_k_range(a_ptrs, b_ptrs, rows, cols, ks, M, N, k_lo, k_hi, stride_ak, stride_bk,
                      BLOCK_M, BLOCK_N, BLOCK_K, PRECISION, UPCAST)
    mult = scale_product(scale, a_scale_ptr, b_scale_ptr, A_SCALE_PTR, B_SCALE_PTR)
    c_ok = (rows[:, None] < M) & (cols[None, :] < N)
    c_ptrs = c_ptr + rows[:, None] * stride_cm + cols[None, :].to(tl.int64) * stride_cn
    if SPLIT_K == 1:
        tl.store(c_ptrs, (acc * mult).to(c_ptr.dtype.element_ty), mask=c_ok)
    else:
        # partials laid out [SPLIT_K, M, N], fp32
        part = rows[:, None] * N + cols[None, :]
        tl.store(ws_ptr + split * M * N + part, acc, mask=c_ok)
        tl.debug_barrier()  # every thread's partial is stored before the release below
        arrived = tl.atomic_add(sem_ptr + tile_n, 1)  # acq_rel, GPU scope
        if arrived == SPLIT_K - 1:  # the last of the tile's programs reduces
            total = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
            for s in range(SPLIT_K):
                total += tl.load(ws_ptr + s * M * N + part, mask=c_ok, other=0.0,
                                 cache_modifier=".cg")  # from L2: other SMs wrote it
            tl.store(c_ptrs, (total * mult).to(c_ptr.dtype.element_ty), mask=c_ok)
            tl.atomic_xchg(sem_ptr + tile_n, 0)


def _configs() -> list[triton.Config]:
    """Deep K slices and 3-5 stages keep ~100 KB of B in flight per SM (the GEMM is a stream
    of B at HBM bandwidth); every BLOCK_K divides K_QUANTUM."""
    shapes = [(128, 4, 4), (128, 8, 4), (256, 4, 3), (256, 8, 3), (64, 4, 5), (128, 4, 3)]
    return [triton.Config({"BLOCK_N": BLOCK_N_GPU, "BLOCK_K": k}, num_warps=w, num_stages=s)
            for k, w, s in shapes]


def _smem(c: dict, args: dict) -> float:
    return c["num_stages"] * (args["BLOCK_M"] + c["BLOCK_N"]) * c["BLOCK_K"] * elem_bytes(args["a_ptr"])


_splitk_autotuned = autotune(_configs(), ["M_BUCKET", "N", "K", "SPLIT_K"], smem_prune(_smem))(
    _gemm_splitk_kernel)
_INTERPRETER = {"BLOCK_N": 32, "BLOCK_K": 32}


def pick_split(n: int, k: int, device: torch.device, block_n: int | None = None,
               quantum: int | None = None) -> tuple[int, int]:
    """(split, K per split): enough (column tile, K range) programs for about two per SM, each
    range at least MIN_K_PER_SPLIT long and a multiple of the K quantum."""
    interp = interpreting() or device.type != "cuda"
    block_n = block_n or (_INTERPRETER["BLOCK_N"] if interp else BLOCK_N_GPU)
    quantum = quantum or (_INTERPRETER["BLOCK_K"] if interp else K_QUANTUM)
    min_k = 2 * quantum if interp else MIN_K_PER_SPLIT
    tiles = triton.cdiv(n, block_n)
    sms = num_sms(device)
    split = 1
    if tiles < sms:
        split = max(1, min(MAX_SPLIT, triton.cdiv(2 * sms, tiles), k // min_k))
    k_per = triton.cdiv(triton.cdiv(k, split), quantum) * quantum
    return triton.cdiv(k, k_per), k_per


def _semaphores(device: torch.device) -> torch.Tensor:
    sem = _SEMAPHORES.get(device)
    if sem is None:
        sem = _SEMAPHORES[device] = torch.zeros(MAX_TILES, dtype=torch.int32, device=device)
    return sem


def matmul_splitk(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor, a_scale, b_scale,
                  scale: float, precision: str, split: int | None = None) -> None:
    """Launch the split-K kernel: c = (scale x a_scale x b_scale) a @ b for M <= 64, inputs
    checked by `gemm.matmul`; `split` overrides the K ranges' count (tests)."""
    M, K = a.shape
    N = b.shape[1]
    if M > 64:
        raise ValueError(f"the split-K path takes M <= 64 rows, got M={M}")
    interp = interpreting()
    block_n = _INTERPRETER["BLOCK_N"] if interp else BLOCK_N_GPU
    if triton.cdiv(N, block_n) > MAX_TILES:
        raise ValueError(f"N={N} needs more than {MAX_TILES} column tiles")
    n_split, k_per = pick_split(N, K, a.device)
    if split is not None:
        if split < 1:
            raise ValueError(f"split={split} must be >= 1")
        quantum = _INTERPRETER["BLOCK_K"] if interp else K_QUANTUM
        k_per = triton.cdiv(triton.cdiv(K, split), quantum) * quantum
        n_split = triton.cdiv(K, k_per)
    ws = torch.empty((n_split, M, N), dtype=torch.float32, device=a.device) if n_split > 1 else c
    m_block = max(16, triton.next_power_of_2(M))
    args = (a, b, c, ws, _semaphores(a.device), a_scale if a_scale is not None else c,
            b_scale if b_scale is not None else c, float(scale), M, N, K, k_per, m_block,
            a.stride(0), a.stride(1), b.stride(0), b.stride(1), c.stride(0), c.stride(1))
    flags = {"BLOCK_M": m_block, "SPLIT_K": n_split, "A_SCALE_PTR": a_scale is not None,
             "B_SCALE_PTR": b_scale is not None, "PRECISION": precision,
             "UPCAST": interp and a.dtype == torch.bfloat16}
    grid = (triton.cdiv(N, block_n), n_split)
    if interp:
        _gemm_splitk_kernel[grid](*args, **flags, **_INTERPRETER)
    else:
        _splitk_autotuned[grid](*args, **flags)
