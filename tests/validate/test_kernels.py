"""Each Triton kernel against a float64 torch reference.

Inputs are fresh standard-normal draws (never zeros) from a per-test seed. Every output
buffer is filled with NaN before the launch, so an element the kernel fails to write makes
the test fail. Tolerances per dtype (|out - ref| <= atol + rtol * |ref|):
    fp32        rtol 1e-4, atol 1e-4   (fp32 accumulation; RoPE angles are fp32)
    bf16, fp16  rtol 2e-2, atol 2e-2   (inputs exact in both; error from rounding p and the
                                        output; Triton's interpreter truncates to bf16
                                        instead of rounding, one bf16 ulp = 2^-7 relative)
Shapes are small and deliberately not multiples of the block sizes, so every tail mask is
exercised; under the interpreter the kernels use 16- to 64-wide blocks.
"""

from __future__ import annotations

import math
import sys

import pytest
import torch

import validate.kernels as kernels
from validate.kernels import (
    apply_rope,
    flash_attn_prefill,
    gemm_persistent,
    gemm_splitk,
    matmul,
    paged_decode_attention,
    pick_device,
    rms_norm,
    silu_and_mul,
    spec_verify_attention,
)
from validate.kernels import flash_attn as flash_mod
from validate.kernels import gemm as gemm_mod
from validate.kernels import paged_decode as paged_mod
from validate.kernels import spec_verify as verify_mod
from validate.kernels._device import fp8_supported

DTYPES = [torch.float32, torch.bfloat16, torch.float16]
TOL = {
    torch.float32: {"rtol": 1e-4, "atol": 1e-4},
    torch.bfloat16: {"rtol": 2e-2, "atol": 2e-2},
    torch.float16: {"rtol": 2e-2, "atol": 2e-2},
}
GQA = [(4, 4), (8, 2)]  # (Hq, Hkv): ratios 1 and 4
GQA_IDS = ["gqa1", "gqa4"]


def dtype_id(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")
PAGE = 16


def rand(gen: torch.Generator, shape: tuple[int, ...], dtype: torch.dtype, device: str,
         scale: float = 1.0) -> torch.Tensor:
    return (torch.randn(shape, generator=gen, dtype=torch.float64) * scale).to(dtype).to(device)


def poisoned(shape: tuple[int, ...], dtype: torch.dtype, device: str) -> torch.Tensor:
    return torch.full(shape, float("nan"), dtype=dtype, device=device)


def assert_matches(out: torch.Tensor, ref: torch.Tensor, dtype: torch.dtype) -> None:
    out = out.detach().cpu().double()
    assert not out.isnan().any(), f"{int(out.isnan().sum())} output elements left unwritten"
    torch.testing.assert_close(out, ref.cpu().double(), **TOL[dtype])


# --- float64 references --------------------------------------------------------------------


def ref_rope(x: torch.Tensor, positions: torch.Tensor, theta: float) -> torch.Tensor:
    x = x.cpu().double()
    half = x.shape[-1] // 2
    inv_freq = 1.0 / theta ** (torch.arange(half, dtype=torch.float64) * 2 / x.shape[-1])
    angle = positions.cpu().double()[:, None] * inv_freq[None, :]
    cos, sin = angle.cos()[:, None, :], angle.sin()[:, None, :]
    x1, x2 = x[..., :half], x[..., half:]
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)


def ref_varlen_attention(q, k, v, cu_q: list[int], cu_k: list[int], scale: float):
    """Query i of a chunk after P cached tokens sees keys 0 .. P + i."""
    q, k, v = q.cpu().double(), k.cpu().double(), v.cpu().double()
    group = q.shape[1] // k.shape[1]
    out = torch.empty_like(q)
    for b in range(len(cu_q) - 1):
        qb = q[cu_q[b]:cu_q[b + 1]]
        kb = k[cu_k[b]:cu_k[b + 1]].repeat_interleave(group, dim=1)
        vb = v[cu_k[b]:cu_k[b + 1]].repeat_interleave(group, dim=1)
        prefix = kb.shape[0] - qb.shape[0]
        s = torch.einsum("qhd,khd->hqk", qb, kb) * scale
        hidden = torch.arange(kb.shape[0])[None, :] > prefix + torch.arange(qb.shape[0])[:, None]
        s = s.masked_fill(hidden, float("-inf"))
        out[cu_q[b]:cu_q[b + 1]] = torch.einsum("hqk,khd->qhd", s.softmax(-1), vb)
    return out


def ref_paged_attention(q, k_cache, v_cache, tables, lens, selected=None, n_selected=None):
    """q: [B, Lq, Hq, D]; new token t of sequence b sits at lens[b] - Lq + t. With a selection,
    only those positions (the first n_selected[b], those inside the context) are keys. A row
    with no key gives 0."""
    q, k_cache, v_cache = q.cpu().double(), k_cache.cpu().double(), v_cache.cpu().double()
    tables, lens = tables.cpu().long(), lens.cpu().long()
    batch, q_len, n_q_heads, head_dim = q.shape
    group = n_q_heads // k_cache.shape[2]
    out = torch.zeros_like(q)
    for b in range(batch):
        ctx = int(lens[b])
        pos = torch.arange(ctx)
        if selected is not None:
            n = selected.shape[1] if n_selected is None else int(n_selected[b])
            pos = selected[b, :n].cpu().long()
            pos = pos[(pos >= 0) & (pos < ctx)]
        if pos.numel() == 0:
            continue
        blocks, slots = tables[b, pos // PAGE], pos % PAGE
        keys = k_cache[blocks, slots].repeat_interleave(group, dim=1)  # [n, Hq, D]
        values = v_cache[blocks, slots].repeat_interleave(group, dim=1)
        s = torch.einsum("thd,khd->htk", q[b], keys) / math.sqrt(head_dim)
        q_pos = ctx - q_len + torch.arange(q_len)
        s = s.masked_fill(pos[None, None, :] > q_pos[None, :, None], float("-inf"))
        out[b] = torch.einsum("htk,khd->thd", s.softmax(-1), values)
    return out


def make_paged_cache(gen, device, dtype, lens: list[int], n_kv_heads: int, head_dim: int):
    """A cache with each sequence's blocks scattered by a shuffled block table, plus spare
    blocks that no sequence owns (reading one would show up as a wrong answer)."""
    per_seq = [-(-n // PAGE) for n in lens]
    n_blocks = sum(per_seq) + 3
    order = torch.randperm(n_blocks, generator=gen).to(torch.int32)
    tables = torch.zeros(len(lens), max(per_seq), dtype=torch.int32)
    used = 0
    for b, n in enumerate(per_seq):
        tables[b, :n] = order[used:used + n]
        used += n
    k_cache = rand(gen, (n_blocks, PAGE, n_kv_heads, head_dim), dtype, device)
    v_cache = rand(gen, (n_blocks, PAGE, n_kv_heads, head_dim), dtype, device)
    lens_t = torch.tensor(lens, dtype=torch.int32, device=device)
    return k_cache, v_cache, tables.to(device), lens_t


# --- device helpers ------------------------------------------------------------------------


def test_pick_device_resolves_auto_and_rejects_unknown():
    assert pick_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    assert pick_device("cpu") == "cpu"
    with pytest.raises(ValueError, match="'tpu'"):
        pick_device("tpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA GPU")
def test_pick_device_cuda_without_gpu_is_a_clear_error():
    with pytest.raises(ValueError, match="device='cuda'"):
        pick_device("cuda")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a CUDA GPU")
def test_cpu_tensors_without_interpreter_are_rejected(monkeypatch, gen):
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    x = rand(gen, (4, 8), torch.float32, "cpu")
    with pytest.raises(ValueError, match="TRITON_INTERPRET=1"):
        silu_and_mul(x)


def test_missing_triton_gives_install_hint(monkeypatch):
    monkeypatch.delattr(kernels, "matmul", raising=False)  # drop the cached export
    monkeypatch.setitem(sys.modules, "triton", None)  # makes `import triton` fail
    with pytest.raises(ImportError, match=r"pip install serveplan\[validate\]"):
        kernels.matmul  # noqa: B018


# --- GEMM ----------------------------------------------------------------------------------


# (M, N, K) per path, no multiple of the 32-wide tiles: split-K over several K ranges, and the
# persistent path with more tiles than the interpreter's 4 programs and 16-byte aligned rows
PATH_SHAPES = {"tiled": (37, 45, 70), "splitk": (37, 45, 200), "persistent": (100, 72, 88)}


def skip_unless_path(path: str, device: str) -> None:
    if path == "persistent" and not gemm_persistent.hopper(torch.device(device)):
        pytest.skip("the persistent TMA path needs compute capability 9.0")


@pytest.mark.parametrize("path", list(PATH_SHAPES))
@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
def test_matmul(dtype, path, device, gen):
    skip_unless_path(path, device)
    m, n, k = PATH_SHAPES[path]
    a = rand(gen, (m, k), dtype, device)
    # a row-major weight, and a transposed (column-major, K-major) one as cuBLASLt takes it
    for b in (rand(gen, (k, n), dtype, device), rand(gen, (n, k), dtype, device).T):
        out = poisoned((m, n), dtype, device)
        result = matmul(a, b, out=out, path=path)
        assert result.data_ptr() == out.data_ptr()
        assert_matches(out, a.cpu().double() @ b.cpu().double(), dtype)


def test_matmul_picks_split_k_for_decode_rows(device, gen):
    """M <= 64 takes the split-K path by itself; every split count gives the same C, and the
    tile semaphores are back at 0 after each launch, so a repeated (or graph-replayed) launch
    is right too."""
    a = rand(gen, (6, 300), torch.float32, device)
    b = rand(gen, (300, 40), torch.float32, device)
    ref = a.cpu().double() @ b.cpu().double()
    assert gemm_splitk.pick_split(40, 300, torch.device(device))[0] > 1
    for split in (None, 1, 2, 5, 64):
        for _ in range(2):
            out = poisoned((6, 40), torch.float32, device)
            matmul(a, b, out=out, path=None if split is None else "splitk", split=split)
            assert_matches(out, ref, torch.float32)
        assert int(gemm_splitk._SEMAPHORES[torch.device(device)].abs().sum()) == 0
    with pytest.raises(ValueError, match="M <= 64"):
        matmul(rand(gen, (65, 8), torch.float32, device), b[:8], path="splitk")
    with pytest.raises(ValueError, match="path='fast'"):
        matmul(a, b, path="fast")
    if fp8_supported(torch.device(device)) and gemm_persistent.hopper(torch.device(device)):
        a8 = rand(gen, (80, 64), torch.float8_e4m3fn, device)
        b8 = rand(gen, (64, 48), torch.float8_e4m3fn, device)  # row-major: not for fp8 wgmma
        with pytest.raises(ValueError, match="K-major"):
            matmul(a8, b8, a_scale=1.0, b_scale=1.0, path="persistent")


def test_matmul_fp32_output_from_bf16(device, gen):
    a = rand(gen, (20, 33), torch.bfloat16, device)
    b = rand(gen, (33, 17), torch.bfloat16, device)
    out = poisoned((20, 17), torch.float32, device)
    matmul(a, b, out_dtype=torch.float32, out=out)
    # fp32 output: only accumulation error is left
    assert_matches(out, a.cpu().double() @ b.cpu().double(), torch.float32)


@pytest.mark.parametrize("path", list(PATH_SHAPES))
def test_matmul_fp8_with_per_tensor_scales(path, device, gen):
    if not fp8_supported(torch.device(device)):
        pytest.skip("fp8 needs CUDA compute capability >= 8.9")
    skip_unless_path(path, device)
    fp8 = torch.float8_e4m3fn
    m, n, k = PATH_SHAPES[path][0], 48, 64
    a = rand(gen, (m, k), fp8, device)
    b = rand(gen, (n, k), fp8, device).T  # K-major, as fp8 weights are kept
    out = poisoned((m, n), torch.bfloat16, device)
    # one scale a float (a kernel argument), one a device tensor (read by the kernel)
    matmul(a, b, a_scale=0.5, b_scale=torch.tensor(3.0, device=device), out=out, path=path)
    assert_matches(out, 1.5 * (a.cpu().double() @ b.cpu().double()), torch.bfloat16)


# --- RMSNorm, RoPE, SwiGLU -----------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
@pytest.mark.parametrize("hidden", [48, 200])  # one block / the two-pass loop with a tail
def test_rms_norm(dtype, hidden, device, gen):
    x = rand(gen, (2, 5, hidden), dtype, device)
    w = rand(gen, (hidden,), dtype, device)
    out = poisoned(x.shape, dtype, device)
    rms_norm(x, w, 1e-5, out=out)
    xd = x.cpu().double()
    ref = xd * torch.rsqrt(xd.pow(2).mean(-1, keepdim=True) + 1e-5) * w.cpu().double()
    assert_matches(out, ref, dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
@pytest.mark.parametrize(("n_q_heads", "n_kv_heads"), GQA, ids=GQA_IDS)
def test_apply_rope(dtype, n_q_heads, n_kv_heads, device, gen):
    tokens, head_dim, theta = 7, 48, 500000.0  # D/2 = 24: padded to a 32-wide block
    # q and k as slices of one fused QKV row, as a projection would produce them
    qkv = rand(gen, (tokens, n_q_heads + 2 * n_kv_heads, head_dim), dtype, device)
    q, k = qkv[:, :n_q_heads], qkv[:, n_q_heads:n_q_heads + n_kv_heads]
    positions = torch.randint(0, 500, (tokens,), generator=gen).to(device)
    q_out = poisoned(q.shape, dtype, device)
    k_out = poisoned(k.shape, dtype, device)
    apply_rope(q, k, positions, theta, q_out=q_out, k_out=k_out)
    assert_matches(q_out, ref_rope(q, positions, theta), dtype)
    assert_matches(k_out, ref_rope(k, positions, theta), dtype)


def test_apply_rope_in_place(device, gen):
    q = rand(gen, (5, 4, 16), torch.float32, device)
    k = rand(gen, (5, 1, 16), torch.float32, device)
    positions = torch.arange(100, 105, device=device, dtype=torch.int32)
    ref_q, ref_k = ref_rope(q, positions, 10000.0), ref_rope(k, positions, 10000.0)
    apply_rope(q, k, positions, q_out=q, k_out=k)
    assert_matches(q, ref_q, torch.float32)
    assert_matches(k, ref_k, torch.float32)


@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
def test_silu_and_mul(dtype, device, gen):
    x = rand(gen, (7, 2 * 100), dtype, device, scale=2.0)
    out = poisoned((7, 100), dtype, device)
    silu_and_mul(x, out=out)
    gate, up = x.cpu().double().chunk(2, dim=-1)
    assert_matches(out, torch.nn.functional.silu(gate) * up, dtype)


# --- flash attention (prefill, chunked prefill) ---------------------------------------------


def run_flash(gen, device, dtype, q_lens, prefixes, n_q_heads, n_kv_heads, head_dim):
    cu_q, cu_k = [0], [0]
    for tq, p in zip(q_lens, prefixes, strict=True):
        cu_q.append(cu_q[-1] + tq)
        cu_k.append(cu_k[-1] + p + tq)
    q = rand(gen, (cu_q[-1], n_q_heads, head_dim), dtype, device)
    k = rand(gen, (cu_k[-1], n_kv_heads, head_dim), dtype, device)
    v = rand(gen, (cu_k[-1], n_kv_heads, head_dim), dtype, device)
    out = poisoned(q.shape, dtype, device)
    flash_attn_prefill(q, k, v, torch.tensor(cu_q, dtype=torch.int32, device=device),
                       torch.tensor(cu_k, dtype=torch.int32, device=device), max(q_lens), out=out)
    ref = ref_varlen_attention(q, k, v, cu_q, cu_k, 1.0 / math.sqrt(head_dim))
    assert_matches(out, ref, dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
@pytest.mark.parametrize(("n_q_heads", "n_kv_heads"), GQA, ids=GQA_IDS)
def test_flash_attn_chunked_prefill_varlen(dtype, n_q_heads, n_kv_heads, device, gen):
    # a plain prefill (P = 0), and two chunks after cached prefixes; lengths are not
    # multiples of the 16-wide blocks, and a 5-token chunk is shorter than one block
    run_flash(gen, device, dtype, q_lens=[37, 5, 16], prefixes=[0, 21, 40],
              n_q_heads=n_q_heads, n_kv_heads=n_kv_heads, head_dim=32)


def test_flash_attn_head_dim_not_a_power_of_two(device, gen):
    run_flash(gen, device, torch.float32, q_lens=[19], prefixes=[7], n_q_heads=4,
              n_kv_heads=2, head_dim=24)


@pytest.mark.slow
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=dtype_id)
def test_flash_attn_larger(dtype, device, gen):
    run_flash(gen, device, dtype, q_lens=[129, 200], prefixes=[300, 0], n_q_heads=8,
              n_kv_heads=2, head_dim=64)


# --- paged decode with a KV budget, and spec verify ------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
@pytest.mark.parametrize(("n_q_heads", "n_kv_heads"), GQA, ids=GQA_IDS)
@pytest.mark.parametrize("num_splits", [1, 3], ids=["splits1", "splits3"])
def test_paged_decode(dtype, n_q_heads, n_kv_heads, num_splits, device, gen):
    lens = [37, 5, 50]  # not multiples of the 16-token pages or the 16-key blocks
    k_cache, v_cache, tables, lens_t = make_paged_cache(gen, device, dtype, lens, n_kv_heads, 32)
    q = rand(gen, (len(lens), n_q_heads, 32), dtype, device)
    out = poisoned(q.shape, dtype, device)
    paged_decode_attention(q, k_cache, v_cache, tables, lens_t, num_splits=num_splits, out=out)
    ref = ref_paged_attention(q.unsqueeze(1), k_cache, v_cache, tables, lens_t).squeeze(1)
    assert_matches(out, ref, dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=dtype_id)
@pytest.mark.parametrize(("n_q_heads", "n_kv_heads"), GQA, ids=GQA_IDS)
@pytest.mark.parametrize("num_splits", [1, 3], ids=["splits1", "splits3"])
def test_paged_decode_fp8_kv_cache(dtype, n_q_heads, n_kv_heads, num_splits, device, gen):
    # vLLM's --kv-cache-dtype fp8: e4m3 caches with one scale each for K and V; the kernel
    # dequantises what it reads. The reference attends to the dequantised values in float64.
    if not fp8_supported(torch.device(device)):
        pytest.skip("fp8 needs compute capability 8.9+")
    lens = [37, 5, 50]
    k_hi, v_hi, tables, lens_t = make_paged_cache(gen, device, torch.float32, lens, n_kv_heads, 32)
    k_scale, v_scale = 0.05, 0.02  # values up to ~4 sigma land well inside e4m3's range
    k8 = (k_hi / k_scale).to(torch.float8_e4m3fn)
    v8 = (v_hi / v_scale).to(torch.float8_e4m3fn)
    q = rand(gen, (len(lens), n_q_heads, 32), dtype, device)
    out = poisoned(q.shape, dtype, device)
    paged_decode_attention(q, k8, v8, tables, lens_t, num_splits=num_splits, out=out,
                           k_scale=k_scale, v_scale=v_scale)
    ref = ref_paged_attention(q.unsqueeze(1), k8.double() * k_scale, v8.double() * v_scale,
                              tables, lens_t).squeeze(1)
    assert_matches(out, ref, dtype)
    # the scales are applied: without them the answer is far off
    wrong = ref_paged_attention(q.unsqueeze(1), k8.double(), v8.double(), tables, lens_t).squeeze(1)
    assert (out.cpu().double() - wrong).abs().max() > 0.1


def test_paged_decode_cache_dtype_errors(device, gen):
    k, v, tables, lens_t = make_paged_cache(gen, device, torch.float32, [20], 2, 16)
    q = rand(gen, (1, 4, 16), torch.bfloat16, device)
    with pytest.raises(ValueError, match=r"k_cache.dtype=torch.float32; expected q's dtype "
                                         r"torch.bfloat16 or torch.float8_e4m3fn"):
        paged_decode_attention(q, k, v, tables, lens_t)
    k8, v8 = k.to(torch.float8_e4m3fn), v.to(torch.float8_e4m3fn)
    with pytest.raises(ValueError, match=r"k_scale=0.0; expected a positive finite float"):
        paged_decode_attention(q, k8, v8, tables, lens_t, k_scale=0.0)
    with pytest.raises(ValueError, match=r"v_cache.dtype=torch.float32 does not match k_cache"):
        paged_decode_attention(q, k8, v, tables, lens_t)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=dtype_id)
@pytest.mark.parametrize("num_splits", [1, 2], ids=["splits1", "splits2"])
def test_paged_decode_kv_budget(dtype, num_splits, device, gen):
    lens = [45, 5, 60]
    budget = 20
    k_cache, v_cache, tables, lens_t = make_paged_cache(gen, device, dtype, lens, 2, 32)
    # H2O/SnapKV-style selection: a random subset of each context, in random order; rows
    # with fewer valid entries are padded with junk past num_selected, never to be read
    selected = torch.full((3, budget), 10_000, dtype=torch.int32)
    selected[0] = torch.randperm(45, generator=gen)[:budget]
    selected[1, :5] = torch.randperm(5, generator=gen)
    selected[2, :17] = torch.randperm(60, generator=gen)[:17]
    counts = torch.tensor([budget, 5, 17], dtype=torch.int32)
    q = rand(gen, (3, 8, 32), dtype, device)
    out = poisoned(q.shape, dtype, device)
    paged_decode_attention(q, k_cache, v_cache, tables, lens_t, num_splits=num_splits,
                           selected_positions=selected.to(device),
                           num_selected=counts.to(device), out=out)
    ref = ref_paged_attention(q.unsqueeze(1), k_cache, v_cache, tables, lens_t,
                              selected, counts).squeeze(1)
    assert_matches(out, ref, dtype)


def test_paged_decode_budget_skips_bad_and_empty_selections(device, gen):
    lens = [30, 30]
    k_cache, v_cache, tables, lens_t = make_paged_cache(gen, device, torch.float32, lens, 2, 16)
    selected = torch.tensor([[3, -1, 29, 30, 500, 7], [1, 2, 3, 4, 5, 6]], dtype=torch.int32)
    counts = torch.tensor([6, 0], dtype=torch.int32)  # sequence 1 keeps nothing
    q = rand(gen, (2, 4, 16), torch.float32, device)
    out = poisoned(q.shape, torch.float32, device)
    paged_decode_attention(q, k_cache, v_cache, tables, lens_t, selected_positions=selected.to(device),
                           num_selected=counts.to(device), out=out)
    ref = ref_paged_attention(q.unsqueeze(1), k_cache, v_cache, tables, lens_t,
                              selected, counts).squeeze(1)
    assert_matches(out, ref, torch.float32)  # only positions 3, 29 and 7 of sequence 0 count
    assert out[1].abs().max() == 0


def test_paged_decode_selection_without_counts_uses_every_entry(device, gen):
    k_cache, v_cache, tables, lens_t = make_paged_cache(gen, device, torch.float32, [40], 1, 16)
    selected = torch.randperm(40, generator=gen)[:24].to(torch.int32).view(1, 24)
    q = rand(gen, (1, 2, 16), torch.float32, device)
    out = poisoned(q.shape, torch.float32, device)
    paged_decode_attention(q, k_cache, v_cache, tables, lens_t,
                           selected_positions=selected.to(device), out=out)
    ref = ref_paged_attention(q.unsqueeze(1), k_cache, v_cache, tables, lens_t, selected)
    assert_matches(out, ref.squeeze(1), torch.float32)


@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
@pytest.mark.parametrize(("n_q_heads", "n_kv_heads"), GQA, ids=GQA_IDS)
@pytest.mark.parametrize("num_splits", [1, 2], ids=["splits1", "splits2"])
def test_spec_verify_k3(dtype, n_q_heads, n_kv_heads, num_splits, device, gen):
    k = 3
    lens = [37, 5, 50]  # the k + 1 = 4 new tokens are the last 4 of each context
    k_cache, v_cache, tables, lens_t = make_paged_cache(gen, device, dtype, lens, n_kv_heads, 32)
    q = rand(gen, (len(lens), k + 1, n_q_heads, 32), dtype, device)
    out = poisoned(q.shape, dtype, device)
    spec_verify_attention(q, k_cache, v_cache, tables, lens_t, num_splits=num_splits, out=out)
    assert_matches(out, ref_paged_attention(q, k_cache, v_cache, tables, lens_t), dtype)


def test_spec_verify_k3_with_kv_budget(device, gen):
    k, lens = 3, [50, 33]
    k_cache, v_cache, tables, lens_t = make_paged_cache(gen, device, torch.float32, lens, 2, 16)
    # keep 12 old tokens of each prefix plus the 4 new ones
    rows = [torch.cat([torch.randperm(n - k - 1, generator=gen)[:12], torch.arange(n - k - 1, n)])
            for n in lens]
    selected = torch.stack(rows).to(torch.int32)
    q = rand(gen, (2, k + 1, 8, 16), torch.float32, device)
    out = poisoned(q.shape, torch.float32, device)
    spec_verify_attention(q, k_cache, v_cache, tables, lens_t, selected_positions=selected.to(device),
                          num_splits=2, out=out)
    ref = ref_paged_attention(q, k_cache, v_cache, tables, lens_t, selected)
    assert_matches(out, ref, torch.float32)


def test_paged_decode_long_context(device, gen):
    lens = [1500, 777]
    k_cache, v_cache, tables, lens_t = make_paged_cache(gen, device, torch.bfloat16, lens, 2, 64)
    q = rand(gen, (2, 8, 64), torch.bfloat16, device)
    out = poisoned(q.shape, torch.bfloat16, device)
    paged_decode_attention(q, k_cache, v_cache, tables, lens_t, num_splits=4, out=out)
    ref = ref_paged_attention(q.unsqueeze(1), k_cache, v_cache, tables, lens_t).squeeze(1)
    assert_matches(out, ref, torch.bfloat16)


# --- FLOP and byte formulas -------------------------------------------------------------------


def test_attention_pair_counts_match_the_masks():
    q_lens, prefixes = [37, 5, 16], [0, 21, 40]
    brute = sum(int((torch.arange(p + t)[None, :] <= p + torch.arange(t)[:, None]).sum())
                for t, p in zip(q_lens, prefixes, strict=True))
    assert flash_mod.attended_pairs(q_lens, prefixes) == brute
    assert flash_mod.flops(q_lens, prefixes, 8, 32) == 4 * brute * 8 * 32
    # verify: k + 1 queries at the end of a c-token context; query t sees c - k + t keys
    assert verify_mod.attended_pairs([50, 5], 3) == sum(c - 3 + t for c in (50, 5) for t in range(4))
    assert verify_mod.attended_pairs([50], 0) == 50


def test_budget_caps_decode_reads():
    assert paged_mod.keys_read([100, 10], kv_budget=32) == [32, 10]
    assert paged_mod.flops([100, 10], 8, 128, kv_budget=32) == 4 * 42 * 8 * 128
    full = paged_mod.bytes_moved([100, 10], 8, 2, 128)
    capped = paged_mod.bytes_moved([100, 10], 8, 2, 128, kv_budget=32)
    assert capped < full
    assert gemm_mod.flops(3, 5, 7) == 210
    assert gemm_mod.bytes_moved(3, 5, 7) == (21 + 35 + 15) * 2


# --- bad input: a ValueError that names the value -------------------------------------------


def test_bad_gemm_inputs(device, gen):
    a = rand(gen, (8, 16), torch.float32, device)
    with pytest.raises(ValueError, match=r"b.shape\[0\]=12"):
        matmul(a, rand(gen, (12, 4), torch.float32, device))
    with pytest.raises(ValueError, match="a.dtype=int32"):
        matmul(a.to(torch.int32), a.T.to(torch.int32))
    with pytest.raises(ValueError, match="b.dtype=torch.float16"):
        matmul(a, rand(gen, (16, 4), torch.float16, device))
    with pytest.raises(ValueError, match="a_scale/b_scale"):
        matmul(a, a.T, a_scale=2.0)
    with pytest.raises(ValueError, match=r"out.shape=\(8, 9\)"):
        matmul(a, a.T, out=poisoned((8, 9), torch.float32, device))


def test_bad_elementwise_inputs(device, gen):
    x = rand(gen, (4, 10), torch.float32, device)
    with pytest.raises(ValueError, match=r"weight.shape\[0\]=9"):
        rms_norm(x, rand(gen, (9,), torch.float32, device))
    with pytest.raises(ValueError, match="weight.dtype=torch.bfloat16"):
        rms_norm(x, rand(gen, (10,), torch.bfloat16, device))
    with pytest.raises(ValueError, match="eps=0"):
        rms_norm(x, rand(gen, (10,), torch.float32, device), eps=0)
    with pytest.raises(ValueError, match=r"x.shape\[1\]=9"):
        silu_and_mul(rand(gen, (4, 9), torch.float32, device))
    q = rand(gen, (3, 4, 8), torch.float32, device)
    k = rand(gen, (3, 2, 8), torch.float32, device)
    with pytest.raises(ValueError, match="positions.dtype=float32"):
        apply_rope(q, k, torch.zeros(3, device=device))
    with pytest.raises(ValueError, match=r"positions.shape\[0\]=2"):
        apply_rope(q, k, torch.arange(2, device=device))
    with pytest.raises(ValueError, match="D=7"):
        apply_rope(q[..., :7], k[..., :7], torch.arange(3, device=device))


def test_bad_flash_attn_inputs(device, gen):
    q = rand(gen, (10, 6, 16), torch.float32, device)
    k = rand(gen, (12, 4, 16), torch.float32, device)
    cu_q = torch.tensor([0, 10], dtype=torch.int32, device=device)
    cu_k = torch.tensor([0, 12], dtype=torch.int32, device=device)
    with pytest.raises(ValueError, match="Hq=6"):
        flash_attn_prefill(q, k, k, cu_q, cu_k, 10)
    q = rand(gen, (10, 8, 16), torch.float32, device)
    with pytest.raises(ValueError, match="cu_seqlens_q.dtype=int64"):
        flash_attn_prefill(q, k, k, cu_q.long(), cu_k, 10)
    with pytest.raises(ValueError, match=r"cu_seqlens_k\[-1\]=11"):
        flash_attn_prefill(q, k, k, cu_q, cu_k - torch.tensor([0, 1], dtype=torch.int32,
                                                              device=device), 10)
    with pytest.raises(ValueError, match="len_k=8"):
        flash_attn_prefill(q, k[:8], k[:8], cu_q, torch.tensor([0, 8], dtype=torch.int32,
                                                               device=device), 10)
    with pytest.raises(ValueError, match=r"v.shape=\(12, 4, 8\)"):
        flash_attn_prefill(q, k, k[..., :8], cu_q, cu_k, 10)


def test_bad_paged_inputs(device, gen):
    k_cache, v_cache, tables, lens = make_paged_cache(gen, device, torch.float32, [20, 9], 2, 16)
    q = rand(gen, (2, 4, 16), torch.float32, device)
    with pytest.raises(ValueError, match="block_tables.dtype=int64"):
        paged_decode_attention(q, k_cache, v_cache, tables.long(), lens)
    with pytest.raises(ValueError, match=r"context_lens.shape\[0\]=1"):
        paged_decode_attention(q, k_cache, v_cache, tables, lens[:1])
    with pytest.raises(ValueError, match="v_cache.shape="):
        paged_decode_attention(q, k_cache, v_cache[:, :8], tables, lens)
    with pytest.raises(ValueError, match="block_size=12"):
        paged_decode_attention(q, k_cache[:, :12], v_cache[:, :12], tables, lens)
    with pytest.raises(ValueError, match="k_cache.dtype=torch.float16"):
        paged_decode_attention(q, k_cache.half(), v_cache, tables, lens)
    with pytest.raises(ValueError, match="num_selected was given without"):
        paged_decode_attention(q, k_cache, v_cache, tables, lens, num_selected=lens)
    with pytest.raises(ValueError, match="num_splits=0"):
        paged_decode_attention(q, k_cache, v_cache, tables, lens, num_splits=0)
    with pytest.raises(ValueError, match="q must be 4-D"):
        spec_verify_attention(q, k_cache, v_cache, tables, lens)
