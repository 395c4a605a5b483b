"""Attention operator time (prefill and decode), on the roofline of costmodel/roofline.py.

- Prefill attention (FlashAttention varlen): work items are (128-row query tile, head) pairs
  (query heads of one KV head packed into the rows for short chunks); each visits its 128-key
  KV tiles in turn (whole tiles on the causal diagonal and at a sliding window's edge, a short
  chunk's tile only partly filled) at `attn_compute_eff` of the tensor-core peak overlapped
  with the softmax (`attn_softmax_flops` per query-key pair and head; `attn_fp8_compute_eff`
  with an fp8 KV cache; after it, not beside it, where the kernel turns that overlap off:
  fp8 above head dim 192) and pays `attn_tile_s` (`attn_fp8_tile_s` over an fp8 cache, whose
  query and first KV tiles, loaded before the first MMA, are half the bytes); the SMs share
  the items, and no kernel is shorter than its longest item. Q, O and the cache's KV at `attn_mem_eff` of HBM; side
  kernels write the new K and V into the cache (and quantise Q for an fp8 cache). vLLM's cache
  write runs one CTA per token (min(KV heads x head dim, 512) threads, as many resident as an
  SM's 2048 threads and 32 CTAs allow), each resident for `attn_cache_cta_s`: with few KV
  heads it is bound by those CTAs, not by its bytes. Writing an fp8 cache, each CTA first
  reads its K and V scales from global memory, behind the slot check: one more dependent
  round trip, so those CTAs have their own `attn_fp8_cache_cta_s`.
- Decode attention (flash-decoding): one CTA per (sequence, KV head), split along the KV (then a
  merge kernel): in a batch of up to 512 tokens, which vLLM runs in a CUDA graph, as FA3's
  scheduler splits it within vLLM's bound of 32 (`fa3_graph_splits`), else when fewer than
  0.8 x SMs; each CTA paying `attn_decode_cta_s` (at head dim 128; half of it scales with the
  head dim), and each sequence a multiple of it for FA3's tile scheduler, which every CTA
  walks along the whole batch (`SCAN_PER_SEQ_GRAPH` / `_PLAIN`); the KV cache at `attn_mem_eff` of HBM bandwidth
  (`attn_fp8_mem_eff` for an fp8 cache, which the kernel dequantises as it reads),
  reached with `attn_ctas_per_sm` CTAs per SM; a kernel timed in a loop (`l2_warm`) reads a
  KV cache that fits in L2 at `l2_bw_ratio` x HBM bandwidth. Where the kernel does not overlap
  its tile work with the loads (`fa3_overlaps`: fp8 above head dim 192) each KV tile's QK^T and
  PV over the whole 128-row query tile (padding included) follow the tile's load, at
  `attn_fp8_decode_eff` of the FP8 peak (hand-set 0.5; the AIConfigurator H100 fit gives
  ~0.46-0.48). The kernel ends only after one SM has loaded its last KV tile
  (`decode_tile_keys` keys) at its 1/SMs share of that bandwidth: a 64 KiB bf16 tile at head
  dim 128 adds ~3 us on an H100, an fp8 tile at head dim 64 ~1 us, which a constant
  `attn_overhead_s` could not tell apart. `attn_overhead_s` per layer's attention,
  `attn_decode_fp8_s` more with an fp8 KV cache (the query-quantisation kernel); memory and
  compute times blended with `attn_decode_blend`. Prefill has its own fixed times
  (`attn_per_seq_s` per sequence and KV head, `attn_fp8_kv_s`) and blend (`attn_blend`): the
  two paths run differently shaped work, and one shared set left prefill 12.9% / decode 10.2%
  off on AIConfigurator's H100 rows where separate sets give 11.7% / 10.1%.

Defaults of the attention parameters (`Efficiencies` in costmodel/roofline.py, where an
uncalibrated GPU starts): `attn_mem_eff` from the Vidur A100 fit; the rest hand-set, so the
zero-shot A100 -> H100 experiment does not see H100 data. The AIConfigurator H100 fit
(benchmarks/costmodel_accuracy.py aic_h100, 2026-11-22) gives attn_compute_eff 0.84,
attn_fp8_compute_eff 0.78, attn_tile_s 1.3 us, attn_fp8_kv_s 3.2 us, attn_ctas_per_sm 0.97,
l2_bw_ratio 1.5 (fixed times at REF_CLOCK_HZ); with the cache write's CTAs (2026-11-22)
attn_cache_cta_s 3.8 us.
- `attn_cache_cta_s`: 2 us, hand-set: a CTA that reads its slot index, then its K and V rows,
  and writes them waits for two dependent HBM round trips (~0.6-0.8 us each) besides its
  launch; H100 data want ~4 us. (Zero would never bind, and a fit could not move it.)
- `attn_fp8_tile_s`: 0.5 us like `attn_tile_s` (as before they were told apart); the H100 fit
  gives ~3.2 us against ~5.0 us.
- `attn_fp8_cache_cta_s`: 2 us like `attn_cache_cta_s` (an uncalibrated GPU predicts as it
  did before the two were told apart); the H100 fit gives ~4.6-5.1 us against ~3.7-3.8 us.
- `attn_ctas_per_sm`: the GEMM's Little's-law value (0.12) as a start; decode CTAs keep less
  in flight, and the H100 fit wants ~1 (a CTA per SM).
- `l2_bw_ratio`: 2 (L2 read bandwidth ~2x HBM on A100/H100 microbenchmarks), hand-set.

Every formula exists twice, a scalar form (the simulator's hot path) and an array form (`_v`,
for fitting measured rows); a test keeps the two equal. `costmodel.roofline` re-exports every
name here, so callers may import from either.
"""

from __future__ import annotations

import functools
import math

import numpy as np

from costmodel.efficiencies import Efficiencies, _blend, _blend_v, clock_scale
from costmodel.hardware import HardwareSpec

ATTN_TILE_Q = 128
ATTN_TILE_KV = 128

# L2 cache sizes from datasheets (bytes); a kernel benchmarked in a loop finds data that fits
# there still resident (`l2_warm`), a serving step (every layer streams between two reads of
# one layer's KV cache) does not
L2_BYTES = {
    "a100-40g": 40e6, "a100-80g": 40e6, "h100-sxm": 50e6, "h100-pcie": 50e6, "h200-sxm": 50e6,
    "b200": 126e6, "l40s": 96e6, "l4": 48e6, "a10g": 6e6, "mi300x": 256e6,
}


def _l2_hit(bytes_, gpu: HardwareSpec):
    """Fraction of a warm kernel's reads served by L2: all up to 3/4 of it, none once they
    exceed it (a cyclic stream larger than an LRU cache misses every time)."""
    l2 = L2_BYTES.get(gpu.name, 0.0)
    if l2 <= 0:
        return 0.0 * bytes_
    return np.clip(4.0 - 4.0 * bytes_ / l2, 0.0, 1.0)


def fa3_tile(head_dim: int, fp8_kv: bool, local: bool = False) -> tuple[int, int]:
    """(query rows, keys) of one FlashAttention-3 forward tile on Hopper, as its SM90 tile table
    picks them for a paged KV cache read without TMA (vLLM's 16-token blocks): 192-row tiles up
    to head dim 96, else 128; the key width shrinks with the head dim to fit shared memory and
    is wider with an fp8 cache (half the bytes per key). `local`: a sliding window."""
    if head_dim <= 64:
        return 192, 160 if (fp8_kv or local) else 128
    if head_dim <= 96:
        return 192, 128
    if head_dim <= 128:
        return 128, 160 if fp8_kv else 128
    if head_dim <= 192:
        return 128, (128 if local else 160) if fp8_kv else 96
    return 128, 64 if local else (128 if fp8_kv else 80)


# FA3's SM90 tile table turns intra-warpgroup overlap off for an fp8 paged cache above this
# head dim (`fa3_overlaps`)
NO_OVERLAP_FP8_HEAD_DIM = 192


def _overlaps_s(head_dim, fp8_kv: bool) -> bool:
    """Scalar `fa3_overlaps` (the simulator's hot path: no numpy dispatch)."""
    return not (fp8_kv and head_dim > NO_OVERLAP_FP8_HEAD_DIM)


def fa3_overlaps(head_dim, fp8_kv):
    """Whether the FlashAttention-3 kernel overlaps a warpgroup's softmax with its own QK^T and
    PV (IntraWGOverlap): its SM90 tile table turns that off for an fp8 paged cache read without
    TMA at head dims above 192 (the paged loads need the registers), so there the softmax runs
    after the tensor-core work instead of beside it. Scalars or arrays."""
    return ~(np.asarray(fp8_kv, dtype=bool) & (np.asarray(head_dim) > NO_OVERLAP_FP8_HEAD_DIM))


def _fa3_tile_v(head_dim, fp8_kv, local):
    """Array form of `fa3_tile`."""
    hd = np.asarray(head_dim, dtype=float)
    bm = np.where(hd <= 96, 192.0, 128.0)
    bn16 = np.select([hd <= 64, hd <= 96, hd <= 128, hd <= 192],
                     [np.where(local, 160.0, 128.0), 128.0, 128.0, 96.0], np.where(local, 64.0, 80.0))
    bn8 = np.select([hd <= 64, hd <= 96, hd <= 128, hd <= 192],
                    [160.0, 128.0, 160.0, np.where(local, 128.0, 160.0)], np.where(local, 64.0, 128.0))
    return bm, np.where(fp8_kv, bn8, bn16)


@functools.lru_cache(maxsize=64)
def _tiling(head_dim: int, fp8_kv: bool, g: float) -> tuple[int, int, float, float]:
    """(tile rows, tile keys, KV tiles the causal edge advances per query tile, the diagonal's
    mean rounding) of a prefill kernel; as `_kv_tiles` computes them (cached: the hot path)."""
    bm, bn = fa3_tile(head_dim, fp8_kv)
    d = round(g * bn) / math.gcd(bm, round(g * bn))
    return bm, bn, bm / (g * bn), (1.0 - 1.0 / d) / 2.0


def _kv_tiles(chunk, prefix, window, g=1.0, bm=ATTN_TILE_Q, bn=ATTN_TILE_KV):
    """(sum over query tiles, most in one) of the KV tiles a causal flash-attention kernel visits
    for one KV head of a `chunk`-token chunk after `prefix` cached tokens.

    Query tiles hold `bm` rows of the chunk's tokens x its `g` query heads per KV head (PackGQA:
    bm / g tokens each), key tiles `bn` keys, whole tiles on the diagonal: a tile ending at key
    x visits ceil(x / bn) tiles, on average x / bn plus (1 - 1/d) / 2, d the denominator of
    the tiles' stride bm / (g bn). A sliding window of w keys spans (w + bm / g) / bn tiles plus
    the mean rounding out of both ends to whole tiles, 2 x (1 - 1/d) / 2 (FA3's n_block_min /
    n_block_max for packed rows: d positions of a tile's end within a KV tile; 1 only where
    they fall anywhere, d -> infinity)."""
    chunk = np.asarray(chunk, dtype=float)
    n = np.ceil(chunk * g / bm)
    a = prefix / bn
    s = bm / (g * bn)  # KV tiles the causal edge advances per query tile
    gbn = np.rint(np.asarray(g * bn, dtype=float)).astype(np.int64)
    d = gbn / np.gcd(np.rint(np.asarray(bm, dtype=float)).astype(np.int64), gbn)
    delta = (1.0 - 1.0 / d) / 2.0
    cap = np.where(window > 0, (window + bm / g) / bn + 2.0 * delta, np.inf)
    last = np.minimum(np.ceil(a + chunk / bn), cap)
    j = np.clip(np.floor((cap - a - delta) / s), 0.0, n)  # query tiles below the cap
    total = (j * (a + delta) + s * j * (j + 1) / 2.0 - np.where(j >= n, n * s - chunk / bn, 0.0)
             + (n - j) * np.minimum(cap, a + chunk / bn + delta))
    return total, last


def _tile_time(head_dim, gpu: HardwareSpec, eff: Efficiencies, fp8_kv, pairs=ATTN_TILE_Q * ATTN_TILE_KV):
    """Seconds one SM spends on one tile of `pairs` (query, key) pairs of one head: QK^T and PV
    on the tensor cores overlapped with the softmax's exponentials (added to them where the
    kernel does not overlap the two, `fa3_overlaps`)."""
    ce = eff.attn_fp8_compute_eff if fp8_kv else eff.attn_compute_eff
    if _overlaps_s(head_dim, fp8_kv):
        per_pair = _blend(4.0 * head_dim / ce, eff.attn_softmax_flops, eff.attn_blend)
    else:
        per_pair = 4.0 * head_dim / ce + eff.attn_softmax_flops
    return per_pair * pairs * gpu.sm_count / gpu.bf16_flops


def _prefill_bytes(new, ctx, q_heads, kv_heads, head_dim, kv_bytes):
    """(kernel, cache write, query quantisation) HBM bytes of a prefill's attention layer.
    Kernel: Q read and O written (bf16), the KV cache's `ctx` tokens read. Side kernels before
    it: the new tokens' K and V read and written into the cache; an fp8 cache also quantises Q
    (read bf16, write fp8)."""
    q = new * q_heads * head_dim
    kernel = 4.0 * q + ctx * 2 * kv_heads * head_dim * kv_bytes
    cache = new * 2 * kv_heads * head_dim * (2.0 + kv_bytes)
    return kernel, cache, (kv_bytes < 2.0) * 3.0 * q


# vLLM's KV-cache write (reshape_and_cache_flash) runs one CTA per token of min(KV heads x head
# dim, 512) threads; an SM holds at most 2048 threads and 32 CTAs
CACHE_CTA_THREADS = 512
SM_THREADS = 2048
SM_CTAS = 32


def _cache_write_time(new, kv_heads, head_dim, cache_bytes, bw, gpu: HardwareSpec,
                      eff: Efficiencies, cs, fp8_kv: bool = False):
    """Seconds of the KV-cache write of `new` tokens: its bytes at `bw`, or, when longer, its
    per-token CTAs, each resident for `attn_cache_cta_s` (`attn_fp8_cache_cta_s` writing an
    fp8 cache), as many at once as the SMs hold."""
    threads = min(kv_heads * head_dim, CACHE_CTA_THREADS)
    resident = min(SM_CTAS, SM_THREADS // threads) * gpu.sm_count
    cta_s = eff.attn_fp8_cache_cta_s if fp8_kv else eff.attn_cache_cta_s
    return max(cache_bytes / bw, new * cta_s * cs / resident)


def _cache_write_time_v(new, kv_heads, head_dim, cache_bytes, bw, gpu: HardwareSpec,
                        eff: Efficiencies, cs, fp8_kv=False):
    """Array form of `_cache_write_time`."""
    threads = np.minimum(np.asarray(kv_heads * head_dim, dtype=float), CACHE_CTA_THREADS)
    resident = np.minimum(SM_CTAS, np.floor(SM_THREADS / threads)) * gpu.sm_count
    cta_s = np.where(fp8_kv, eff.attn_fp8_cache_cta_s, eff.attn_cache_cta_s)
    return np.maximum(cache_bytes / bw, new * cta_s * cs / resident)


def prefill_attn_batch_time_s(chunks, q_heads: int, kv_heads: int, head_dim: int,
                              gpu: HardwareSpec, eff: Efficiencies, kv_bytes: float = 2.0) -> float:
    """One varlen flash-attention kernel over prefill chunks `[(chunk, prefix), ...]` (one layer).

    Work items are (query tile, KV head) pairs, the query heads of a KV head packed into the
    tile's rows (`fa3_tile` gives the tile); each visits its KV tiles in turn and pays
    `attn_tile_s` to load Q and store O; the SMs share the work, and no kernel is shorter than
    its longest item."""
    if not chunks:
        return 0.0
    fp8_kv = kv_bytes < 2.0
    g = q_heads / kv_heads
    bm, bn, s, delta = _tiling(head_dim, fp8_kv, g)
    items = kv_it = longest = ctx = new = 0.0
    for chunk, prefix in chunks:
        n = -(-(chunk * g) // bm)
        a = prefix / bn
        fill = min(1.0, chunk * g / bm)  # a short chunk fills only part of its tile
        items += n
        kv_it += (n * (a + delta) + s * n * (n + 1) / 2.0 - n * s + chunk / bn) * fill
        last = math.ceil(a + chunk / bn) * fill
        if last > longest:
            longest = last
        ctx += chunk + prefix
        new += chunk
    kern, cache, q_quant = _prefill_bytes(new, ctx, q_heads, kv_heads, head_dim, kv_bytes)
    cs = clock_scale(gpu)
    c_kv = _tile_time(head_dim, gpu, eff, fp8_kv, bm * bn)
    c_item = (eff.attn_fp8_tile_s if fp8_kv else eff.attn_tile_s) * cs
    t_c = max(kv_heads * (kv_it * c_kv + items * c_item) / gpu.sm_count, longest * c_kv + c_item)
    bw = gpu.hbm_bw_bytes_s * eff.attn_mem_eff
    fixed = ((len(chunks) * kv_heads * eff.attn_per_seq_s + eff.attn_overhead_s
              + (eff.attn_fp8_kv_s if fp8_kv else 0.0)) * cs + q_quant / bw
             + _cache_write_time(new, kv_heads, head_dim, cache, bw, gpu, eff, cs, fp8_kv))
    t_m = kern / bw
    return _blend(t_c, t_m, eff.attn_blend) + fixed


def prefill_attn_time_s(chunk: int, prefix: int, q_heads: int, kv_heads: int, head_dim: int,
                        gpu: HardwareSpec, eff: Efficiencies, kv_bytes: float = 2.0) -> float:
    """Causal attention of `chunk` new tokens over `prefix` cached + themselves (one layer)."""
    return prefill_attn_batch_time_s(((chunk, prefix),), q_heads, kv_heads, head_dim, gpu, eff,
                                     kv_bytes)


def prefill_attn_time_s_v(batch, chunk, prefix, q_heads, kv_heads, head_dim, window,
                          gpu: HardwareSpec, eff: Efficiencies, kv_bytes) -> np.ndarray:
    """Array form: `batch` equal prompts per row; `window` > 0 caps each query's keys."""
    chunk = np.asarray(chunk, dtype=float)
    prefix = np.asarray(prefix, dtype=float)
    batch = np.asarray(batch, dtype=float)
    head_dim = np.asarray(head_dim, dtype=float)
    window = np.asarray(window, dtype=float)
    kv_bytes = np.broadcast_to(np.asarray(kv_bytes, dtype=float), chunk.shape)
    fp8_kv = kv_bytes < 2.0
    g = np.asarray(q_heads, dtype=float) / kv_heads
    bm, bn = _fa3_tile_v(head_dim, fp8_kv, window > 0)
    kv_it, longest = _kv_tiles(chunk, prefix, window, g, bm, bn)
    fill = np.minimum(1.0, chunk * g / bm)
    kv_it, longest = kv_it * fill, longest * fill
    items = np.ceil(chunk * g / bm)
    cs = clock_scale(gpu)
    ce = np.where(fp8_kv, eff.attn_fp8_compute_eff, eff.attn_compute_eff)
    tensor = 4.0 * head_dim / ce
    per_pair = np.where(fa3_overlaps(head_dim, fp8_kv),
                        _blend_v(tensor, np.full(chunk.shape, eff.attn_softmax_flops),
                                 eff.attn_blend),
                        tensor + eff.attn_softmax_flops)
    c_kv = per_pair * bm * bn * gpu.sm_count / gpu.bf16_flops
    c_item = np.where(fp8_kv, eff.attn_fp8_tile_s, eff.attn_tile_s) * cs
    t_c = np.maximum(batch * kv_heads * (kv_it * c_kv + items * c_item) / gpu.sm_count,
                     longest * c_kv + c_item)
    kern, cache, q_quant = _prefill_bytes(chunk, chunk + prefix, q_heads, kv_heads, head_dim,
                                          kv_bytes)
    bw = gpu.hbm_bw_bytes_s * eff.attn_mem_eff
    t_m = batch * kern / bw
    fixed = ((batch * kv_heads * eff.attn_per_seq_s + eff.attn_overhead_s
              + np.where(fp8_kv, eff.attn_fp8_kv_s, 0.0)) * cs + batch * q_quant / bw
             + _cache_write_time_v(batch * chunk, kv_heads, head_dim, batch * cache, bw, gpu,
                                   eff, cs, fp8_kv))
    return _blend_v(t_c, t_m, eff.attn_blend) + fixed


def _decode_fp8_tiles_time(ctx_sum, rows, kv_heads, head_dim, ctas, gpu: HardwareSpec,
                           eff: Efficiencies):
    """Seconds of the tensor-core work of an fp8 decode kernel over `ctx_sum` cached tokens x
    `kv_heads`, where it cannot overlap that work with the KV loads (`fa3_overlaps`): each KV
    tile's QK^T and PV run on the whole 128-row query tile (`rows` = queries x query heads per
    KV head, padded to whole tiles), at `attn_fp8_decode_eff` of the FP8 peak, on the SMs that
    have a CTA. Scalars or arrays."""
    bm = float(ATTN_TILE_Q)  # fa3_tile's query rows above head dim 96
    padded = np.ceil(rows / bm) * bm
    peak = gpu.fp8_flops or gpu.bf16_flops
    busy = np.minimum(1.0, ctas / gpu.sm_count)
    return 4.0 * padded * head_dim * ctx_sum * kv_heads / (peak * eff.attn_fp8_decode_eff * busy)


@functools.lru_cache(maxsize=64)
def _tile_keys_s(head_dim: int, fp8_kv: bool) -> float:
    """Scalar `decode_tile_keys` (cached: the simulator's hot path)."""
    return 160.0 if head_dim <= 64 else float(fa3_tile(int(head_dim), bool(fp8_kv))[1])


def decode_tile_keys(head_dim, fp8_kv):
    """Keys per KV tile of the FlashAttention-3 decode kernel (one query token per sequence,
    paged KV cache without TMA): `fa3_tile`'s, except up to head dim 64, where a single query
    token drops the causal mask and the paged tile widens to 160 keys. Scalars or arrays."""
    if np.ndim(head_dim) == 0 and np.ndim(fp8_kv) == 0:
        return _tile_keys_s(int(head_dim), bool(fp8_kv))
    hd = np.asarray(head_dim, dtype=float)
    return np.where(hd <= 64, 160.0, _fa3_tile_v(hd, fp8_kv, False)[1])


def _last_tile_time(keys, head_dim, kv_bytes, bw, sms):
    """Seconds one SM takes to load one KV tile (K and V of `keys` keys, `decode_tile_keys`) at
    its 1/`sms` share of the bandwidth `bw`: a decode kernel ends only once its last CTA has
    loaded and used its last tile, after the rest of the stream. Scalars or arrays."""
    return keys * 2.0 * head_dim * kv_bytes * sms / bw


def _decode_splits(units: float, ctx_mean: float, sms: int) -> float:
    """Flash-decoding's KV splits by FlashAttention-3's heuristic when it is left to choose (a
    decode batch vLLM runs outside a CUDA graph): one unless fewer (sequence, KV head) units
    than ~0.8 x SMs, else enough to fill the SMs, at most one per KV tile."""
    if units >= 0.8 * sms:
        return 1.0
    return float(max(1, min(-(-sms // int(units)), math.ceil(ctx_mean / ATTN_TILE_KV), 128)))


# vLLM captures decode batches of up to 512 tokens in CUDA graphs and then hands
# FlashAttention-3 a fixed bound of 32 KV splits, within which FA3's scheduler picks each
# sequence's splits itself; larger batches are left to FA3's heuristic (`_decode_splits`)
GRAPH_MAX_TOKENS = 512
GRAPH_MAX_SPLITS = 32
# FA3's varlen scheduler hands tiles out from one counter; each CTA finds a tile's sequence by
# walking the batch 31 sequences per dependent load, so every CTA walks the whole batch once:
# a time per sequence, not shared by the SMs. Measured H100 slopes (1-8 KV heads) give ~22 ns
# per sequence with the split scheduler (graph batches, which read per-sequence split counts
# too) and ~10 ns without: charged as these multiples of `attn_decode_cta_s` (~36 ns fitted)
SCAN_PER_SEQ_GRAPH = 1.0
SCAN_PER_SEQ_PLAIN = 0.5
# Ampere and Ada run FlashAttention-2 (FA3 needs SM90): vLLM hands it no split bound inside
# CUDA graphs (that bound is part of FA3's ahead-of-time scheduling), so every decode batch
# takes the split heuristic; and FA2's grid maps CTAs to (sequence, head) directly, with no
# scheduler walk along the batch. On Vidur's A100 decode table (fit 20%, predict 80%) this is
# 10.2% -> 10.0%.
FA2_ARCHS = ("ampere", "ada")


def _graph_splits_s(n_seqs, kv_heads, ctx_mean, tile_keys, sms) -> float:
    """Scalar `fa3_graph_splits` (the simulator's hot path: no numpy dispatch)."""
    nb = math.ceil(ctx_mean / tile_keys)
    per_sm = max(math.ceil(n_seqs * nb * kv_heads * 1.1 / sms), 1)
    return float(min(max(-(-nb // per_sm), 1), GRAPH_MAX_SPLITS))


def fa3_graph_splits(n_seqs, kv_heads, ctx_mean, tile_keys, sms):
    """KV splits per (sequence, KV head) FlashAttention-3's scheduler gives a decode batch that
    vLLM captured in a CUDA graph: each SM is to get the batch's KV tiles x KV heads x 1.1 / SMs
    tiles, so a sequence of n tiles splits into n / that many parts, at most
    `GRAPH_MAX_SPLITS`. Scalars or arrays (arrays take the numpy path)."""
    if np.ndim(n_seqs) == 0 and np.ndim(ctx_mean) == 0 and np.ndim(tile_keys) == 0:
        return _graph_splits_s(n_seqs, kv_heads, ctx_mean, tile_keys, sms)
    nb = np.ceil(np.asarray(ctx_mean, dtype=float) / tile_keys)
    per_sm = np.maximum(np.ceil(n_seqs * nb * kv_heads * 1.1 / sms), 1.0)
    return np.clip(np.ceil(nb / per_sm), 1.0, GRAPH_MAX_SPLITS)


def decode_attn_time_s(n_seqs: int, ctx_sum: float, q_tokens: int, q_heads: int, kv_heads: int,
                       head_dim: int, gpu: HardwareSpec, eff: Efficiencies,
                       kv_bytes: float = 2.0, l2_warm: bool = False) -> float:
    """Attention of `n_seqs` sequences, `q_tokens` queries each, over `ctx_sum` cached tokens.

    One CTA per (sequence, KV head) (the query heads of a KV head packed together), split along
    the KV when too few to fill the SMs, the splits merged by a second kernel."""
    if n_seqs <= 0:
        return 0.0
    sms = gpu.sm_count
    units = n_seqs * kv_heads
    keys = _tile_keys_s(int(head_dim), kv_bytes < 2.0)
    fa3 = gpu.arch not in FA2_ARCHS
    if n_seqs * q_tokens <= GRAPH_MAX_TOKENS and fa3:
        split = _graph_splits_s(n_seqs, kv_heads, ctx_sum / n_seqs, keys, sms)
        scan = SCAN_PER_SEQ_GRAPH
    else:
        split = _decode_splits(units, ctx_sum / n_seqs, sms)
        scan = SCAN_PER_SEQ_PLAIN if fa3 else 0.0
    ctas = units * split
    kv = ctx_sum * 2 * kv_heads * head_dim * kv_bytes
    hit = float(_l2_hit(kv, gpu)) if l2_warm else 0.0
    mem_eff = eff.attn_fp8_mem_eff if kv_bytes < 2.0 else eff.attn_mem_eff
    bw = gpu.hbm_bw_bytes_s * mem_eff * min(1.0, ctas / (eff.attn_ctas_per_sm * sms))
    t_m = (kv * (1.0 - hit + hit / eff.l2_bw_ratio) + n_seqs * q_tokens * q_heads * head_dim * 4) / bw
    t_c = 4.0 * q_heads * head_dim * ctx_sum * q_tokens / (gpu.bf16_flops * eff.attn_compute_eff)
    if not _overlaps_s(head_dim, kv_bytes < 2.0):
        t_m += float(_decode_fp8_tiles_time(ctx_sum, q_tokens * q_heads / kv_heads, kv_heads,
                                            head_dim, ctas, gpu, eff))
    cs = clock_scale(gpu)
    fixed = ((ctas * (0.5 + head_dim / 256.0) + n_seqs * scan) * eff.attn_decode_cta_s
             + eff.attn_overhead_s + (eff.attn_decode_fp8_s if kv_bytes < 2.0 else 0.0))
    if split > 1:
        fixed += eff.elem_overhead_s
    last = _last_tile_time(keys, head_dim, kv_bytes, gpu.hbm_bw_bytes_s * mem_eff, sms)
    return _blend(t_m, t_c, eff.attn_decode_blend) + fixed * cs + last


def decode_attn_time_s_v(n_seqs, ctx_sum, q_tokens, q_heads, kv_heads, head_dim,
                         gpu: HardwareSpec, eff: Efficiencies, kv_bytes,
                         l2_warm: bool = False) -> np.ndarray:
    n_seqs = np.asarray(n_seqs, dtype=float)
    ctx_sum = np.asarray(ctx_sum, dtype=float)
    kv_bytes = np.broadcast_to(np.asarray(kv_bytes, dtype=float), n_seqs.shape)
    sms = gpu.sm_count
    units = n_seqs * kv_heads
    ctx_mean = ctx_sum / np.maximum(n_seqs, 1.0)
    fill = -(-sms // np.maximum(units, 1.0))
    split = np.where(units >= 0.8 * sms, 1.0,
                     np.maximum(1.0, np.minimum(np.minimum(fill, np.ceil(ctx_mean / ATTN_TILE_KV)), 128.0)))
    keys = decode_tile_keys(np.asarray(head_dim, dtype=float), kv_bytes < 2.0)
    fa3 = gpu.arch not in FA2_ARCHS
    graph = (n_seqs * q_tokens <= GRAPH_MAX_TOKENS) & fa3
    split = np.where(graph, fa3_graph_splits(n_seqs, kv_heads, ctx_mean, keys, sms), split)
    scan = np.where(graph, SCAN_PER_SEQ_GRAPH, SCAN_PER_SEQ_PLAIN if fa3 else 0.0)
    ctas = units * split
    kv = ctx_sum * 2 * kv_heads * head_dim * kv_bytes
    hit = _l2_hit(kv, gpu) if l2_warm else 0.0
    mem_eff = np.where(kv_bytes < 2.0, eff.attn_fp8_mem_eff, eff.attn_mem_eff)
    bw = gpu.hbm_bw_bytes_s * mem_eff * np.minimum(1.0, ctas / (eff.attn_ctas_per_sm * sms))
    t_m = (kv * (1.0 - hit + hit / eff.l2_bw_ratio) + n_seqs * q_tokens * q_heads * head_dim * 4) / bw
    t_c = 4.0 * q_heads * head_dim * ctx_sum * q_tokens / (gpu.bf16_flops * eff.attn_compute_eff)
    serial = ~fa3_overlaps(head_dim, kv_bytes < 2.0)
    if serial.any():
        t_m = t_m + np.where(serial, _decode_fp8_tiles_time(
            ctx_sum, q_tokens * np.asarray(q_heads, dtype=float) / kv_heads, kv_heads,
            np.asarray(head_dim, dtype=float), ctas, gpu, eff), 0.0)
    fixed = ((ctas * (0.5 + np.asarray(head_dim, dtype=float) / 256.0) + n_seqs * scan)
             * eff.attn_decode_cta_s + eff.attn_overhead_s + np.where(kv_bytes < 2.0, eff.attn_decode_fp8_s, 0.0)
             + np.where(split > 1, eff.elem_overhead_s, 0.0))
    last = _last_tile_time(keys, np.asarray(head_dim, dtype=float), kv_bytes,
                           gpu.hbm_bw_bytes_s * mem_eff, sms)
    t = _blend_v(t_m, t_c, eff.attn_decode_blend) + fixed * clock_scale(gpu) + last
    return np.where(n_seqs > 0, t, 0.0)
