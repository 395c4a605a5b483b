"""Paged decode attention with GQA and an optional per-request KV budget.

KV cache (vLLM's paged layout): k_cache, v_cache: [num_blocks, block_size, Hkv, D]. Sequence
b owns the physical blocks block_tables[b, 0], block_tables[b, 1], ...; its token at logical
position p lives in block block_tables[b, p // block_size], slot p % block_size. The cache
already holds the keys and values of the token(s) being decoded, so context_lens[b] counts
them.

KV budget. Eviction methods (H2O, SnapKV) keep only some cached tokens per request. With
`selected_positions` [B, budget] (int32 logical positions, distinct) and optionally
`num_selected` [B] (how many entries of each row are valid; default all), sequence b attends
only to those positions, so a decode step reads at most `budget` tokens of K and V however
long the context is. Entries outside 0 .. context_lens[b] - 1 are skipped, never read.

Queries. `paged_attention` takes q: [B, Lq, Hq, D], Lq new tokens per sequence, the last Lq
positions of the context: token t sits at position context_lens[b] - Lq + t and sees cached
positions <= that (causal among the new tokens). Decode is Lq = 1 (`paged_decode_attention`);
speculative verify is Lq = k + 1 (`spec_verify.py`).

Algorithm. One program takes one (sequence, KV head, split) and all Lq * (Hq / Hkv) query
rows that read that KV head, so each K/V row is loaded once for the whole GQA group and
q k^T is a real matrix product. It gathers BLOCK_N key positions at a time through the
block table (and the selection list), and runs the online softmax of flash attention. When
a batch has too few (sequence, KV head) pairs to fill the GPU, the keys are split into
`num_splits` ranges (flash-decoding): each split writes its partial output and log-sum-exp,
and a second kernel merges them. A query row with no visible key (an empty selection)
gets zeros. An fp8 cache is converted to q's dtype as it is loaded (exact: every e4m3 value is
a bf16 value); its K scale is folded into the softmax scale and its V scale multiplies the
output once, so the loop does no per-element scaling. On a GPU the keys gathered per step,
warps and pipeline depth are autotuned per (batch, keys, query rows, fp8, split), the sizes
bucketed to powers of two; a split's keys are a multiple of every candidate block.

FLOP and byte counts are at the bottom (`flops`, `bytes_moved`).
Benchmark on a CUDA GPU: `python -m validate.kernels.paged_decode`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import triton
import triton.language as tl

from ._device import (
    check_dim,
    check_dtype,
    check_inner_contiguous,
    check_launchable,
    check_ndim,
    check_out,
    fp8_supported,
    interpreting,
)
from ._tuning import autotune, bucket

DTYPES = (torch.bfloat16, torch.float16, torch.float32)
FP8 = torch.float8_e4m3fn
LOG2E = 1.4426950408889634
MIN_TOKENS_PER_SPLIT = 256  # below this a split's fixed cost outweighs the parallelism
MAX_BLOCK_N = 128  # a split's keys are a multiple of every autotuned BLOCK_N


@triton.jit
def _paged_attention_kernel(
    q_ptr, k_cache_ptr, v_cache_ptr, out_ptr, part_out_ptr, part_lse_ptr,
    block_tables_ptr, context_lens_ptr, selected_ptr, num_selected_ptr,
    qk_scale, tokens_per_split, v_scale, B_BUCKET, KEYS_BUCKET,  # buckets key the autotuner
    stride_qb, stride_qt, stride_qh,
    stride_kblk, stride_kslot, stride_kh,
    stride_vblk, stride_vslot, stride_vh,
    stride_ob, stride_ot, stride_oh,
    stride_table, stride_sel, sel_width,
    n_q_heads, n_splits,
    Q_LEN: tl.constexpr, GROUP: tl.constexpr, PAGE: tl.constexpr, HEAD_DIM: tl.constexpr,
    BLOCK_ROWS: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
    SELECTED: tl.constexpr,  # a selection list is given
    COUNTED: tl.constexpr,  # num_selected is given
    SPLIT: tl.constexpr,  # write partial results for the merge kernel
    PRECISION: tl.constexpr, UPCAST: tl.constexpr,
    KV_FP8: tl.constexpr,  # e4m3 caches: converted on load; k_scale is in qk_scale
):
    seq = tl.program_id(0)
    kv_head = tl.program_id(1)
    split = tl.program_id(2)
    ctx_len = tl.load(context_lens_ptr + seq)
    n_keys = ctx_len
    if SELECTED:
        if COUNTED:
            n_keys = tl.minimum(tl.load(num_selected_ptr + seq), sel_width)
        else:
            n_keys = sel_width
    start = split * tokens_per_split
    stop = tl.minimum(n_keys, start + tokens_per_split)

    # Query rows: row r is new token r // GROUP of query head kv_head * GROUP + r % GROUP.
    rows = tl.arange(0, BLOCK_ROWS)
    row_ok = rows < Q_LEN * GROUP
    tok = rows // GROUP
    head = kv_head * GROUP + rows % GROUP
    q_pos = ctx_len - Q_LEN + tok  # absolute position: the last key this row may see
    d = tl.arange(0, BLOCK_D)
    d_ok = d < HEAD_DIM
    q_ptrs = q_ptr + seq * stride_qb + tok[:, None] * stride_qt + head[:, None] * stride_qh + d[None, :]
    q = tl.load(q_ptrs, mask=row_ok[:, None] & d_ok[None, :], other=0.0)
    if UPCAST:
        q = q.to(tl.float32)

    m_i = tl.full((BLOCK_ROWS,), float("-inf"), dtype=tl.float32)
    l_i = tl.zeros((BLOCK_ROWS,), dtype=tl.float32)
    acc = tl.zeros((BLOCK_ROWS, BLOCK_D), dtype=tl.float32)
    cols = tl.arange(0, BLOCK_N)
    for n0 in range(start, stop, BLOCK_N):
        j = n0 + cols
        ok = j < stop
        if SELECTED:
            pos = tl.load(selected_ptr + seq * stride_sel + j, mask=ok, other=0)
        else:
            pos = j
        ok = ok & (pos >= 0) & (pos < ctx_len)  # a bad index is skipped, never dereferenced
        page = tl.load(block_tables_ptr + seq * stride_table + pos // PAGE, mask=ok, other=0)
        page = page.to(tl.int64)  # a whole-GPU cache holds more than 2^31 elements
        slot = pos % PAGE
        kv_mask = ok[:, None] & d_ok[None, :]
        k = tl.load(k_cache_ptr + page[:, None] * stride_kblk + slot[:, None] * stride_kslot
                    + kv_head * stride_kh + d[None, :], mask=kv_mask, other=0.0)
        v = tl.load(v_cache_ptr + page[:, None] * stride_vblk + slot[:, None] * stride_vslot
                    + kv_head * stride_vh + d[None, :], mask=kv_mask, other=0.0)
        if KV_FP8:  # e4m3 -> q's dtype is exact; the scales apply to q k^T and to o
            k = k.to(q.dtype)
            v = v.to(q.dtype)
        elif UPCAST:
            k = k.to(tl.float32)
            v = v.to(tl.float32)
        s = tl.dot(q, tl.trans(k), input_precision=PRECISION) * qk_scale  # log2 units
        s = tl.where(ok[None, :] & (pos[None, :] <= q_pos[:, None]), s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, axis=1))
        # A row may have seen no key yet (sparse selections): subtract 0 instead of -inf
        # so exp2 gives 0 rather than NaN.
        m_ref = tl.where(m_new == float("-inf"), 0.0, m_new)
        alpha = tl.exp2(m_i - m_ref)
        p = tl.exp2(s - m_ref[:, None])
        l_i = l_i * alpha + tl.sum(p, axis=1)
        acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision=PRECISION)
        m_i = m_new

    seen = l_i > 0
    out = acc * (v_scale / tl.where(seen, l_i, 1.0))[:, None]  # rows that saw nothing stay 0
    if SPLIT:
        # Partial results laid out [B, Q_LEN, Hq, n_splits, D] and [B, Q_LEN, Hq, n_splits].
        part = ((seq * Q_LEN + tok) * n_q_heads + head) * n_splits + split
        tl.store(part_out_ptr + part[:, None] * HEAD_DIM + d[None, :], out,
                 mask=row_ok[:, None] & d_ok[None, :])
        lse = tl.where(seen, m_i + tl.log2(tl.where(seen, l_i, 1.0)), float("-inf"))
        tl.store(part_lse_ptr + part, lse, mask=row_ok)
    else:
        o_ptrs = out_ptr + seq * stride_ob + tok[:, None] * stride_ot + head[:, None] * stride_oh + d[None, :]
        tl.store(o_ptrs, out.to(out_ptr.dtype.element_ty), mask=row_ok[:, None] & d_ok[None, :])


@triton.jit
def _merge_splits_kernel(
    part_out_ptr, part_lse_ptr, out_ptr,
    stride_ob, stride_ot, stride_oh,
    n_q_heads, n_splits,
    Q_LEN: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_S: tl.constexpr, BLOCK_D: tl.constexpr,
):
    """Combine the splits of one (sequence, new token, query head): each split's output is
    weighted by its share of the softmax mass, 2^(lse_s - max lse)."""
    seq_tok = tl.program_id(0)  # seq * Q_LEN + tok
    head = tl.program_id(1)
    s = tl.arange(0, BLOCK_S)
    d = tl.arange(0, BLOCK_D)
    part = (seq_tok * n_q_heads + head) * n_splits + s
    lse = tl.load(part_lse_ptr + part, mask=s < n_splits, other=float("-inf"))
    lse_max = tl.max(lse, axis=0)
    lse_ref = tl.where(lse_max == float("-inf"), 0.0, lse_max)
    w = tl.exp2(lse - lse_ref)  # splits that saw nothing weigh 0
    parts = tl.load(part_out_ptr + part[:, None] * HEAD_DIM + d[None, :],
                    mask=(s < n_splits)[:, None] & (d < HEAD_DIM)[None, :], other=0.0)
    total = tl.sum(w, axis=0)
    out = tl.sum(parts * w[:, None], axis=0) / tl.where(total > 0, total, 1.0)
    seq = seq_tok // Q_LEN
    tok = seq_tok % Q_LEN
    tl.store(out_ptr + seq * stride_ob + tok * stride_ot + head * stride_oh + d,
             out.to(out_ptr.dtype.element_ty), mask=d < HEAD_DIM)


def paged_attention(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    block_tables: torch.Tensor,
    context_lens: torch.Tensor,
    *,
    softmax_scale: float | None = None,
    selected_positions: torch.Tensor | None = None,
    num_selected: torch.Tensor | None = None,
    num_splits: int | None = None,
    out: torch.Tensor | None = None,
    k_scale: float = 1.0,
    v_scale: float = 1.0,
) -> torch.Tensor:
    """Attention of Lq new tokens per sequence over its paged KV cache (see module doc).

    q: [B, Lq, Hq, D]; k_cache, v_cache: [num_blocks, block_size, Hkv, D], q's dtype
        (bf16/fp16/fp32) or float8_e4m3fn (vLLM's `--kv-cache-dtype fp8`: a key is
        k_cache * k_scale, a value v_cache * v_scale; needs fp8 support, compute capability
        8.9+ or the interpreter), Hq a multiple of Hkv.
    block_tables: int32 [B, max_blocks_per_seq]; context_lens: int32 [B], >= Lq, counting
        the new tokens, whose K/V are already in the cache.
    selected_positions: optional int32 [B, budget]; num_selected: optional int32 [B].
    num_splits: key ranges per (sequence, KV head); None picks one from the GPU's size.
    out: optional [B, Lq, Hq, D] buffer of q's dtype to write into.
    Returns [B, Lq, Hq, D] in q's dtype.
    """
    check_ndim("q", q, 4, "[B, Lq, Hq, D]")
    check_ndim("k_cache", k_cache, 4, "[num_blocks, block_size, Hkv, D]")
    check_dtype("q", q, DTYPES)
    if k_cache.dtype not in (q.dtype, FP8):
        raise ValueError(f"k_cache.dtype={k_cache.dtype}; expected q's dtype {q.dtype} or {FP8}")
    if v_cache.dtype != k_cache.dtype:
        raise ValueError(f"v_cache.dtype={v_cache.dtype} does not match k_cache.dtype={k_cache.dtype}")
    kv_fp8 = k_cache.dtype == FP8
    for name, x in (("k_scale", k_scale), ("v_scale", v_scale)):
        if not (isinstance(x, (int, float)) and math.isfinite(x) and x > 0):
            raise ValueError(f"{name}={x!r}; expected a positive finite float")
    if tuple(v_cache.shape) != tuple(k_cache.shape):
        raise ValueError(f"v_cache.shape={tuple(v_cache.shape)} does not match "
                         f"k_cache.shape={tuple(k_cache.shape)}")
    batch, q_len, n_q_heads, head_dim = q.shape
    _, block_size, n_kv_heads, _ = k_cache.shape
    check_dim("k_cache", k_cache, 3, head_dim, "the head dim D of q")
    if n_kv_heads == 0 or n_q_heads % n_kv_heads:
        raise ValueError(f"Hq={n_q_heads} query heads is not a multiple of Hkv={n_kv_heads}")
    if block_size < 1 or block_size & (block_size - 1):
        raise ValueError(f"block_size={block_size} (k_cache.shape[1]) must be a power of 2")
    check_ndim("block_tables", block_tables, 2, "[B, max_blocks_per_seq]")
    check_dtype("block_tables", block_tables, (torch.int32,))
    check_dim("block_tables", block_tables, 0, batch, "the batch size B of q")
    check_inner_contiguous("block_tables", block_tables)
    check_ndim("context_lens", context_lens, 1, "[B]")
    check_dtype("context_lens", context_lens, (torch.int32,))
    check_dim("context_lens", context_lens, 0, batch, "the batch size B of q")
    tensors = {"q": q, "k_cache": k_cache, "v_cache": v_cache, "block_tables": block_tables,
               "context_lens": context_lens}
    if selected_positions is not None:
        check_ndim("selected_positions", selected_positions, 2, "[B, budget]")
        check_dtype("selected_positions", selected_positions, (torch.int32,))
        check_dim("selected_positions", selected_positions, 0, batch, "the batch size B of q")
        check_inner_contiguous("selected_positions", selected_positions)
        tensors["selected_positions"] = selected_positions
    if num_selected is not None:
        if selected_positions is None:
            raise ValueError("num_selected was given without selected_positions")
        check_ndim("num_selected", num_selected, 1, "[B]")
        check_dtype("num_selected", num_selected, (torch.int32,))
        check_dim("num_selected", num_selected, 0, batch, "the batch size B of q")
        tensors["num_selected"] = num_selected
    for name in ("q", "k_cache", "v_cache"):
        check_inner_contiguous(name, tensors[name])
    device = check_launchable(tensors)
    if kv_fp8 and not fp8_supported(device):
        raise ValueError(f"an fp8 KV cache needs compute capability 8.9+ (Ada, Hopper, Blackwell); "
                         f"{device} has none")

    if out is None:
        out = torch.empty(q.shape, dtype=q.dtype, device=device)
    check_out("out", out, q.shape, q.dtype, device)
    if batch == 0 or q_len == 0 or n_q_heads == 0:
        return out
    group = n_q_heads // n_kv_heads
    max_keys = (selected_positions.shape[1] if selected_positions is not None
                else block_tables.shape[1] * block_size)
    block_n = 16 if interpreting() else MAX_BLOCK_N
    if num_splits is None:
        num_splits = _pick_num_splits(batch * n_kv_heads, max_keys, device)
    if num_splits < 1:
        raise ValueError(f"num_splits={num_splits} must be >= 1")
    tokens_per_split = triton.cdiv(triton.cdiv(max(max_keys, 1), num_splits), block_n) * block_n
    split = num_splits > 1
    if split:
        part_out = torch.empty((batch, q_len, n_q_heads, num_splits, head_dim),
                               dtype=torch.float32, device=device)
        part_lse = torch.empty((batch, q_len, n_q_heads, num_splits),
                               dtype=torch.float32, device=device)
    else:
        part_out = part_lse = out  # never touched: SPLIT is False
    selected = selected_positions if selected_positions is not None else block_tables
    counts = num_selected if num_selected is not None else context_lens
    scale = softmax_scale if softmax_scale is not None else 1.0 / math.sqrt(head_dim)
    block_d = max(triton.next_power_of_2(head_dim), 16)

    # an fp8 key is k_cache * k_scale: the scale joins the softmax scale of q k^T, and the value
    # scale multiplies the output once, so the loop only converts e4m3 to q's dtype
    kernel = _paged_attention_kernel if interpreting() else _paged_autotuned
    tuned = {"BLOCK_N": block_n, "num_warps": 4} if interpreting() else {}
    kernel[(batch, n_kv_heads, num_splits)](
        q, k_cache, v_cache, out, part_out, part_lse,
        block_tables, context_lens, selected, counts,
        scale * LOG2E * float(k_scale), tokens_per_split, float(v_scale),
        bucket(batch, 1, 4096), bucket(max_keys, 256, 1 << 20),
        q.stride(0), q.stride(1), q.stride(2),
        k_cache.stride(0), k_cache.stride(1), k_cache.stride(2),
        v_cache.stride(0), v_cache.stride(1), v_cache.stride(2),
        out.stride(0), out.stride(1), out.stride(2),
        block_tables.stride(0), selected.stride(0), selected.shape[1],
        n_q_heads, num_splits,
        Q_LEN=q_len, GROUP=group, PAGE=block_size, HEAD_DIM=head_dim,
        BLOCK_ROWS=max(triton.next_power_of_2(q_len * group), 16),
        BLOCK_D=block_d,
        SELECTED=selected_positions is not None, COUNTED=num_selected is not None,
        SPLIT=split, PRECISION="ieee", UPCAST=interpreting() and q.dtype == torch.bfloat16,
        KV_FP8=kv_fp8, **tuned,
    )
    if split:
        _merge_splits_kernel[(batch * q_len, n_q_heads)](
            part_out, part_lse, out,
            out.stride(0), out.stride(1), out.stride(2),
            n_q_heads, num_splits,
            Q_LEN=q_len, HEAD_DIM=head_dim, BLOCK_S=max(triton.next_power_of_2(num_splits), 2),
            BLOCK_D=block_d, num_warps=4,
        )
    return out


def _decode_configs() -> list[triton.Config]:
    """Key blocks of 32-128 gathered per step, 2-3 loads in flight: decode is a stream of the
    KV cache, and what reaches HBM bandwidth depends on the batch x context shape."""
    shapes = [(64, 4, 2), (64, 4, 3), (128, 4, 2), (128, 8, 2), (32, 4, 3), (64, 8, 3)]
    return [triton.Config({"BLOCK_N": n}, num_warps=w, num_stages=st) for n, w, st in shapes]


_paged_autotuned = autotune(_decode_configs(), ["B_BUCKET", "KEYS_BUCKET", "Q_LEN", "GROUP",
                                                "HEAD_DIM", "KV_FP8", "SPLIT", "SELECTED"])(
    _paged_attention_kernel)


def _pick_num_splits(programs: int, max_keys: int, device: torch.device) -> int:
    """Enough splits for about two programs per SM, each split at least
    MIN_TOKENS_PER_SPLIT keys long. Under the interpreter: 1."""
    if device.type != "cuda" or interpreting():
        return 1
    sms = torch.cuda.get_device_properties(device).multi_processor_count
    wanted = triton.cdiv(2 * sms, max(programs, 1))
    return max(1, min(wanted, max_keys // MIN_TOKENS_PER_SPLIT))


def paged_decode_attention(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    block_tables: torch.Tensor,
    context_lens: torch.Tensor,
    *,
    softmax_scale: float | None = None,
    selected_positions: torch.Tensor | None = None,
    num_selected: torch.Tensor | None = None,
    num_splits: int | None = None,
    out: torch.Tensor | None = None,
    k_scale: float = 1.0,
    v_scale: float = 1.0,
) -> torch.Tensor:
    """One decode step: q [B, Hq, D] (the newest token of each sequence) over its paged
    cache; out, if given, is [B, Hq, D]; every other argument as in `paged_attention`.
    Returns [B, Hq, D]."""
    check_ndim("q", q, 3, "[B, Hq, D]")
    if out is not None:
        check_ndim("out", out, 3, "[B, Hq, D]")
    result = paged_attention(q.unsqueeze(1), k_cache, v_cache, block_tables, context_lens,
                             softmax_scale=softmax_scale, selected_positions=selected_positions,
                             num_selected=num_selected, num_splits=num_splits,
                             out=None if out is None else out.unsqueeze(1),
                             k_scale=k_scale, v_scale=v_scale)
    return result.squeeze(1)


# --- cost formulas ---------------------------------------------------------------------------


def keys_read(context_lens: Sequence[int], kv_budget: int | None = None) -> list[int]:
    """Cached tokens each sequence reads: its context, capped by the KV budget."""
    if kv_budget is None:
        return list(context_lens)
    return [min(c, kv_budget) for c in context_lens]


def flops(context_lens: Sequence[int], q_heads: int, head_dim: int,
          kv_budget: int | None = None) -> int:
    """q k^T and p v: 2 * D FLOPs each per (query head, key read)."""
    return 4 * sum(keys_read(context_lens, kv_budget)) * q_heads * head_dim


def bytes_moved(context_lens: Sequence[int], q_heads: int, kv_heads: int, head_dim: int,
                kv_budget: int | None = None, elem_bytes: int = 2,
                kv_elem_bytes: int | None = None) -> int:
    """K and V of every key read (once per KV head, shared by its GQA group) at `kv_elem_bytes`
    (default `elem_bytes`; 1 for an fp8 cache), q in and o out at `elem_bytes`.
    Block-table and index reads (4 bytes per key at most) are left out: under 2% at D=128."""
    keys = sum(keys_read(context_lens, kv_budget))
    kvb = elem_bytes if kv_elem_bytes is None else kv_elem_bytes
    return (2 * keys * kv_heads * kvb + 2 * len(context_lens) * q_heads * elem_bytes) * head_dim


# --- benchmark -------------------------------------------------------------------------------


def _bench() -> None:
    if not torch.cuda.is_available() or interpreting():
        print("paged_decode: no CUDA GPU (or TRITON_INTERPRET is set); nothing to benchmark")
        return
    device = torch.device("cuda")
    hq, hkv, d, page = 64, 8, 128, 16
    print(f"{'B':>4} {'ctx':>6} {'budget':>7} {'kv':>5} {'us':>8} {'GB/s':>8}")
    fp8 = fp8_supported(device)
    for batch, ctx, budget, kv8 in [(1, 8192, None, False), (32, 2048, None, False),
                                    (128, 1024, None, False), (64, 8192, None, False),
                                    (64, 8192, 1024, False), (64, 8192, None, True)]:
        if kv8 and not fp8:
            continue
        blocks_per_seq = triton.cdiv(ctx, page)
        n_blocks = batch * blocks_per_seq
        k_cache = torch.randn(n_blocks, page, hkv, d, device=device, dtype=torch.bfloat16)
        v_cache = torch.randn_like(k_cache)
        if kv8:
            k_cache, v_cache = k_cache.to(FP8), v_cache.to(FP8)
        tables = torch.randperm(n_blocks, device=device, dtype=torch.int32).view(batch, -1)
        lens = torch.full((batch,), ctx, device=device, dtype=torch.int32)
        q = torch.randn(batch, hq, d, device=device, dtype=torch.bfloat16)
        sel = None
        if budget is not None:
            sel = torch.stack([torch.randperm(ctx, device=device)[:budget].sort().values
                               for _ in range(batch)]).to(torch.int32)
        ms = triton.testing.do_bench(
            lambda q=q, k=k_cache, v=v_cache, t=tables, n=lens, s=sel:
            paged_decode_attention(q, k, v, t, n, selected_positions=s))
        gbs = bytes_moved([ctx] * batch, hq, hkv, d, budget, kv_elem_bytes=1 if kv8 else 2) / ms * 1e-6
        print(f"{batch:4d} {ctx:6d} {budget or '-':>7} {'fp8' if kv8 else 'bf16':>5} "
              f"{ms * 1e3:8.1f} {gbs:8.1f}")


if __name__ == "__main__":
    _bench()
