"""GEMM: C[M, N] = A[M, K] @ B[K, N], accumulated in fp32, by one of three kernels.

Inputs are bf16, fp16 or fp32 (fp32 uses exact IEEE products unless `allow_tf32=True`), or
fp8 e4m3 with one fp32 scale per tensor, where C = (a_scale * A) @ (b_scale * B): the scales
multiply the fp32 accumulator once at the end. A scale given as a Python float travels as a
kernel argument, one given as a tensor is read on the device: no host copy either way, so a
call can be captured in a CUDA graph. fp8 needs CUDA compute capability >= 8.9.

Paths (`path=None` picks one; tests force each):
- "splitk" (M <= 64, decode): column tiles x K ranges, reduced in the same launch
  (`gemm_splitk.py`);
- "persistent" (Hopper, 16-bit or fp8 inputs with 16-byte aligned rows): one program per SM
  looping over tiles read by the TMA (`gemm_persistent.py`);
- "tiled": one program per BLOCK_M x BLOCK_N tile of C, walking K in BLOCK_K steps, any strides.
On a GPU block shapes are autotuned per (M bucket, N, K, dtype), M rounded up to a power of two
so that the many batch sizes of a serving run share their tuning; under Triton's interpreter
one small config each keeps tests fast. FLOP and byte counts are at the bottom (`flops`,
`bytes_moved`).

Benchmark on a CUDA GPU: `python -m validate.kernels.gemm`.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._device import (
    check_dim,
    check_dtype,
    check_launchable,
    check_ndim,
    check_out,
    fp8_supported,
    interpreting,
)
from ._gemm_common import dot_k_range, scale_product
from ._tuning import autotune, bucket, elem_bytes, smem_prune
from .gemm_persistent import hopper, matmul_persistent, tma_ok
from .gemm_splitk import matmul_splitk

FP8 = torch.float8_e4m3fn
INPUT_DTYPES = (torch.bfloat16, torch.float16, torch.float32, FP8)
OUTPUT_DTYPES = (torch.bfloat16, torch.float16, torch.float32)
PATHS = ("tiled", "persistent", "splitk")
SPLITK_MAX_M = 64


@triton.jit
def _gemm_kernel(
    a_ptr, b_ptr, c_ptr, a_scale_ptr, b_scale_ptr, scale,
    M, N, K, M_BUCKET,  # M_BUCKET only keys the autotuner
    stride_am, stride_ak, stride_bk, stride_bn, stride_cm, stride_cn,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
    GROUP_M: tl.constexpr,  # tile rows visited together, so their B tiles stay in L2
    A_SCALE_PTR: tl.constexpr, B_SCALE_PTR: tl.constexpr,  # scales read from device memory
    PRECISION: tl.constexpr,  # "ieee" or "tf32"; only matters for fp32 inputs
    UPCAST: tl.constexpr,  # interpreter only: its tl.dot cannot multiply bf16
):
    # Map the flat program id to a tile (tile_m, tile_n). Consecutive programs sweep down a
    # band of GROUP_M tile rows before moving to the next tile column, so a wave of programs
    # shares a few B columns and A rows instead of streaming a whole row of B each.
    pid = tl.program_id(0)
    tiles_m = tl.cdiv(M, BLOCK_M)
    tiles_n = tl.cdiv(N, BLOCK_N)
    band_size = GROUP_M * tiles_n
    band = pid // band_size
    band_first_m = band * GROUP_M
    band_rows = tl.minimum(tiles_m - band_first_m, GROUP_M)
    tile_m = band_first_m + (pid % band_size) % band_rows
    tile_n = (pid % band_size) // band_rows

    rows = tile_m * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = tile_n * BLOCK_N + tl.arange(0, BLOCK_N)
    ks = tl.arange(0, BLOCK_K)
    # int64 offsets: M * K or K * N elements may pass 2^31.
    a_ptrs = a_ptr + rows.to(tl.int64)[:, None] * stride_am + ks[None, :] * stride_ak
    b_ptrs = b_ptr + ks[:, None] * stride_bk + cols.to(tl.int64)[None, :] * stride_bn

    acc = dot_k_range(a_ptrs, b_ptrs, rows, cols, ks, M, N, 0, K, stride_ak, stride_bk,
                      BLOCK_M, BLOCK_N, BLOCK_K, PRECISION, UPCAST)
    mult = scale_product(scale, a_scale_ptr, b_scale_ptr, A_SCALE_PTR, B_SCALE_PTR)
    acc = acc * mult
    c_ptrs = c_ptr + rows.to(tl.int64)[:, None] * stride_cm + cols.to(tl.int64)[None, :] * stride_cn
    tl.store(c_ptrs, acc.to(c_ptr.dtype.element_ty), mask=(rows[:, None] < M) & (cols[None, :] < N))


def _gpu_configs() -> list[triton.Config]:
    """Tile shapes worth timing on Ampere/Hopper-class GPUs; the autotuner drops any that do
    not fit in shared memory (e.g. the large ones for fp32)."""
    shapes = [  # BLOCK_M, BLOCK_N, BLOCK_K, warps, stages
        (128, 256, 64, 8, 3),
        (256, 128, 64, 8, 3),
        (128, 128, 64, 4, 4),
        (128, 128, 128, 8, 3),  # deep K steps pay off for fp8
        (128, 64, 64, 4, 4),
        (64, 128, 64, 4, 4),
        (64, 64, 32, 4, 5),  # small problems: more tiles, more SMs busy
        (32, 64, 32, 2, 5),
    ]
    return [
        triton.Config({"BLOCK_M": m, "BLOCK_N": n, "BLOCK_K": k, "GROUP_M": 8},
                      num_warps=w, num_stages=s)
        for m, n, k, w, s in shapes
    ]


# Built here, run only when called: the autotuner times each config on the first launch
# of a new (M, N, K, dtypes) and reuses the winner afterwards.
def _smem(c: dict, args: dict) -> float:
    """Shared memory of a config: its pipeline stages of A and B tiles."""
    return c["num_stages"] * (c["BLOCK_M"] + c["BLOCK_N"]) * c["BLOCK_K"] * elem_bytes(args["a_ptr"])


_gemm_autotuned = autotune(_gpu_configs(), ["M_BUCKET", "N", "K"], smem_prune(_smem))(_gemm_kernel)

# One config for the interpreter: small enough that tests exercise several tiles and a
# K loop with a tail, large enough that numpy does the work rather than Python.
_INTERPRETER_CONFIG = {"BLOCK_M": 32, "BLOCK_N": 32, "BLOCK_K": 32, "GROUP_M": 2}


def matmul(
    a: torch.Tensor,
    b: torch.Tensor,
    *,
    a_scale: torch.Tensor | float | None = None,
    b_scale: torch.Tensor | float | None = None,
    out_dtype: torch.dtype | None = None,
    allow_tf32: bool = False,
    out: torch.Tensor | None = None,
    path: str | None = None,
    split: int | None = None,
) -> torch.Tensor:
    """C = A @ B with fp32 accumulation.

    a: [M, K], b: [K, N], same dtype: bf16, fp16, fp32 or float8_e4m3fn. Any strides.
    a_scale, b_scale: per-tensor scales, required for fp8 and rejected otherwise (a Python
        float, or a one-element fp32 tensor on the inputs' device; C = (a_scale * A) @
        (b_scale * B)).
    out_dtype: bf16, fp16 or fp32; defaults to the input dtype (bf16 for fp8).
    allow_tf32: let fp32 inputs use TF32 tensor cores (about 1e-3 relative error).
    out: optional [M, N] buffer of out_dtype to write C into (any row stride).
    path: "tiled", "persistent" or "splitk" (see the module doc); None picks one.
    split: with the split-K path, the number of K ranges (None: from the GPU's size).
    Returns C: [M, N] in out_dtype, on the inputs' device.
    """
    check_ndim("a", a, 2, "[M, K]")
    check_ndim("b", b, 2, "[K, N]")
    check_dtype("a", a, INPUT_DTYPES)
    if b.dtype != a.dtype:
        raise ValueError(f"b.dtype={b.dtype} does not match a.dtype={a.dtype}")
    M, K = a.shape
    N = b.shape[1]
    check_dim("b", b, 0, K, "a.shape[1] (K)")
    device = check_launchable({"a": a, "b": b})
    if path is not None and path not in PATHS:
        raise ValueError(f"path={path!r}; expected one of {', '.join(PATHS)} (or None)")

    is_fp8 = a.dtype == FP8
    scales = [None, None]  # device tensors read by the kernel
    scale = 1.0  # the product of the scales given as floats
    if is_fp8:
        if not fp8_supported(device):
            raise ValueError(f"a.dtype={a.dtype} needs a CUDA GPU with compute capability "
                             f">= 8.9 (Ada or Hopper); {device} has none")
        if a_scale is None or b_scale is None:
            raise ValueError("fp8 inputs need a_scale and b_scale (per-tensor, fp32)")
        for i, (name, s) in enumerate((("a_scale", a_scale), ("b_scale", b_scale))):
            if isinstance(s, torch.Tensor):
                scales[i] = _scale_tensor(name, s, device)
            else:
                scale *= float(s)
    elif a_scale is not None or b_scale is not None:
        raise ValueError(f"a_scale/b_scale apply to float8_e4m3fn inputs only, not {a.dtype}")

    if out_dtype is None:
        out_dtype = torch.bfloat16 if is_fp8 else a.dtype
    if out_dtype not in OUTPUT_DTYPES:
        raise ValueError(f"out_dtype={out_dtype} is not one of bfloat16, float16, float32")

    if out is None:
        c = torch.empty((M, N), dtype=out_dtype, device=device)
    else:
        check_out("out", out, (M, N), out_dtype, device)
        c = out
    if M == 0 or N == 0:
        return c
    if K == 0:
        return c.zero_()

    precision = "tf32" if allow_tf32 else "ieee"
    path = path or _pick_path(a, b, c, device)
    if path == "splitk":
        matmul_splitk(a, b, c, scales[0], scales[1], scale, precision, split)
        return c
    m_bucket = bucket(M, 16, 8192)
    if path == "persistent":
        if not (hopper(device) and tma_ok(a, b, c)):
            raise ValueError("path='persistent' needs compute capability 9.0+, unit-stride "
                             "16-byte aligned rows of a, b (or of b.T) and out, and for fp8 a "
                             "K-major (column-major) b")
        matmul_persistent(a, b, c, scales[0], scales[1], scale, m_bucket, precision)
        return c
    args = (a, b, c, scales[0] if scales[0] is not None else c,
            scales[1] if scales[1] is not None else c, scale, M, N, K, m_bucket,
            a.stride(0), a.stride(1), b.stride(0), b.stride(1), c.stride(0), c.stride(1))
    flags = {
        "A_SCALE_PTR": scales[0] is not None,
        "B_SCALE_PTR": scales[1] is not None,
        "PRECISION": precision,
        "UPCAST": interpreting() and a.dtype == torch.bfloat16,
    }

    def grid(meta: dict) -> tuple[int]:
        return (triton.cdiv(M, meta["BLOCK_M"]) * triton.cdiv(N, meta["BLOCK_N"]),)

    if interpreting():
        _gemm_kernel[grid](*args, **flags, **_INTERPRETER_CONFIG)
    else:
        _gemm_autotuned[grid](*args, **flags)
    return c


def _pick_path(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor, device: torch.device) -> str:
    """split-K for decode rows; on Hopper the persistent TMA kernel for 16-bit and fp8 inputs
    whose rows it can read; else the tiled kernel. Under the interpreter the persistent path is
    only taken when asked for (the tests ask)."""
    if a.shape[0] <= SPLITK_MAX_M:
        return "splitk"
    if (device.type == "cuda" and not interpreting() and a.dtype != torch.float32
            and hopper(device) and tma_ok(a, b, c)):
        return "persistent"
    return "tiled"


def _scale_tensor(name: str, scale: torch.Tensor, device: torch.device) -> torch.Tensor:
    if scale.numel() != 1:
        raise ValueError(f"{name} must hold one value (per-tensor scale), got shape "
                         f"{tuple(scale.shape)}")
    if scale.device != device:
        raise ValueError(f"{name} is on {scale.device} but the inputs are on {device}: a "
                         "tensor scale is read on the device (pass a float to have it passed "
                         "as a kernel argument)")
    return scale.reshape(1).to(torch.float32)


# --- cost formulas ---------------------------------------------------------------------------


def flops(m: int, n: int, k: int) -> int:
    """One multiply and one add per (row, column, k) triple."""
    return 2 * m * n * k


def bytes_moved(m: int, n: int, k: int, in_bytes: int = 2, out_bytes: int = 2) -> int:
    """HBM traffic if A and B are each read once and C written once (the ideal that tiling
    and L2 reuse approach): in_bytes per input element, out_bytes per output element."""
    return (m * k + k * n) * in_bytes + m * n * out_bytes


# --- benchmark -------------------------------------------------------------------------------


def _bench() -> None:
    if not torch.cuda.is_available() or interpreting():
        print("gemm: no CUDA GPU (or TRITON_INTERPRET is set); nothing to benchmark")
        return
    device = torch.device("cuda")
    dtypes = [torch.bfloat16, torch.float16] + ([FP8] if fp8_supported(device) else [])
    print(f"{'dtype':>10} {'M':>6} {'N':>6} {'K':>6} {'ms':>8} {'TFLOP/s':>8} {'torch':>8}")
    for dtype in dtypes:
        for m, n, k in [(16, 8192, 8192), (512, 8192, 8192), (4096, 4096, 4096),
                        (8192, 8192, 8192), (4096, 28672, 8192)]:
            a = torch.randn(m, k, device=device).to(dtype)
            b = torch.randn(n, k, device=device).to(dtype).T  # weights stored [N, K]
            kw = {"a_scale": 1.0, "b_scale": 1.0} if dtype == FP8 else {}
            ms = triton.testing.do_bench(lambda a=a, b=b, kw=kw: matmul(a, b, **kw))
            ref_ms = float("nan")
            if dtype != FP8:
                ref_ms = triton.testing.do_bench(lambda a=a, b=b: a @ b)
            tflops = flops(m, n, k) / ms * 1e-9
            ref = flops(m, n, k) / ref_ms * 1e-9
            name = str(dtype).removeprefix("torch.")
            print(f"{name:>10} {m:6d} {n:6d} {k:6d} {ms:8.3f} {tflops:8.1f} {ref:8.1f}")


if __name__ == "__main__":
    _bench()
