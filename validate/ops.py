"""The operators of one transformer iteration, twice: ServePlan's Triton kernels, and torch
(a third set, the engine-class operators a plan's engine runs, is `validate.reference`, which
also holds `make_ops`, the choice among the three).

`TritonOps` calls `validate.kernels` (compiled on a GPU, interpreted on the CPU, where it is
only fast enough to check correctness). `TorchOps` computes the same operators with torch
(`a @ w`, scaled_dot_product_attention, ...): it is what the CPU times, and the reference the
Triton kernels are checked against inside a run.

Both work on one layout of the inputs, built by `prefill_layout` and `DecodeCache`:
- prefill attention: the varlen layout of `flash_attn_prefill`: new queries packed
  [total_q, Hq, D], keys and values [total_k, Hkv, D] with each sequence's cached prefix
  followed by its new tokens; `new_rows` are the rows the new tokens' K and V fill;
- decode / verify attention: a KV cache holding `context` tokens per sequence, the last
  `q_len` of them the tokens being decoded (written by `write_kv`). Triton reads vLLM's paged
  layout [blocks, 16, Hkv, D] through a shuffled block table; torch a contiguous
  [B, Hkv, context, D] cache. With a KV budget both attend to the same `budget` positions.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

PAGE = 16
FP8_MAX = 448.0  # largest finite float8_e4m3fn


@dataclass
class PrefillLayout:
    """Packed prompt chunks: `chunks` = ((chunk, prefix), ...) in sequence order."""

    chunks: tuple[tuple[int, int], ...]
    cu_q: torch.Tensor  # int32 [n + 1]
    cu_k: torch.Tensor  # int32 [n + 1]
    max_q: int
    new_rows: torch.Tensor  # int64 [total_q]: rows of the K/V buffers the new tokens fill
    positions: torch.Tensor  # int64 [total_q]: absolute position of each new token
    total_k: int


def prefill_layout(chunks: tuple[tuple[int, int], ...], device: str) -> PrefillLayout:
    q_lens = [c for c, _ in chunks]
    k_lens = [c + p for c, p in chunks]
    cu_q = [0]
    cu_k = [0]
    rows, pos = [], []
    for (c, p), kl in zip(chunks, k_lens, strict=True):
        rows.append(torch.arange(cu_k[-1] + p, cu_k[-1] + kl))
        pos.append(torch.arange(p, p + c))
        cu_q.append(cu_q[-1] + c)
        cu_k.append(cu_k[-1] + kl)
    return PrefillLayout(
        chunks=tuple(chunks),
        cu_q=torch.tensor(cu_q, dtype=torch.int32, device=device),
        cu_k=torch.tensor(cu_k, dtype=torch.int32, device=device),
        max_q=max(q_lens), new_rows=torch.cat(rows).to(device), positions=torch.cat(pos).to(device),
        total_k=cu_k[-1])


@dataclass
class DecodeCache:
    """K/V of `batch` sequences of `context` tokens each (the last `q_len` being decoded)."""

    k: torch.Tensor
    v: torch.Tensor
    batch: int
    context: int  # cached tokens per sequence, the new ones included
    q_len: int
    selected: torch.Tensor | None = None  # KV budget: [batch, budget] positions attended
    write_rows: torch.Tensor | None = None  # paged: flat slot of each new token
    block_tables: torch.Tensor | None = None
    context_lens: torch.Tensor | None = None
    k_scale: float = 1.0  # fp8 caches: a key is k * k_scale, a value v * v_scale
    v_scale: float = 1.0


def quantise_kv(x: torch.Tensor) -> tuple[torch.Tensor, float]:
    """An fp8 (e4m3) copy of `x` and its per-tensor scale (vLLM's `--kv-cache-dtype fp8` keeps
    one scale each for K and V), the largest magnitude landing on e4m3's largest value."""
    scale = float(x.abs().amax().float().clamp(min=1e-6)) / FP8_MAX
    return (x.float() / scale).to(torch.float8_e4m3fn), scale


def _store(src: torch.Tensor, dst: torch.Tensor, scale: float) -> torch.Tensor:
    """`src` in the cache's dtype (quantised with the cache's scale when the cache is fp8)."""
    if dst.dtype == torch.float8_e4m3fn:
        return (src.float() / scale).to(torch.float8_e4m3fn)
    return src


def budget_positions(batch: int, context: int, q_len: int, budget: int,
                     gen: torch.Generator) -> torch.Tensor:
    """int32 [batch, budget]: per sequence, its q_len new tokens and a random subset of the
    older ones (what an eviction policy keeps), sorted."""
    keep = max(budget - q_len, 0)
    rows = []
    for _ in range(batch):
        older = torch.randperm(context - q_len, generator=gen)[:keep].sort().values
        rows.append(torch.cat([older, torch.arange(context - q_len, context)]))
    return torch.stack(rows).to(torch.int32)


class TorchOps:
    """The operators in torch: what a CPU run times, and the reference for the kernels."""

    name = "torch"

    def __init__(self, fp8: bool = False, kv_fp8: bool = False):
        self.fp8 = fp8  # torch has no portable fp8 GEMM: weights stay in their dtype
        self.kv_fp8 = kv_fp8  # decode caches in fp8 (e4m3, one scale each for K and V)

    def gemm(self, a: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        if w.dtype == torch.float8_e4m3fn:  # the reference of a W8A8 GEMM: dequantised weights
            return a @ w.to(a.dtype)
        return a @ w

    def rms_norm(self, x: torch.Tensor, w: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
        xf = x.float()
        y = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)
        return (y * w.float()).to(x.dtype)

    def rope(self, q: torch.Tensor, k: torch.Tensor, positions: torch.Tensor,
             theta: float = 10000.0) -> tuple[torch.Tensor, torch.Tensor]:
        half = q.shape[-1] // 2
        inv = 1.0 / theta ** (torch.arange(half, dtype=torch.float64, device=q.device) * 2 / q.shape[-1])
        ang = positions.float()[:, None] * inv.float()[None, :]
        cos, sin = ang.cos()[:, None, :], ang.sin()[:, None, :]

        def rot(x):
            x1, x2 = x[..., :half].float(), x[..., half:].float()
            return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], -1).to(x.dtype)

        return rot(q), rot(k)

    def act(self, x: torch.Tensor, gated: bool = True) -> torch.Tensor:
        if not gated:
            return F.gelu(x, approximate="tanh")
        i = x.shape[-1] // 2
        return F.silu(x[:, :i]) * x[:, i:]

    def prefill_attention(self, q, k, v, lay: PrefillLayout) -> torch.Tensor:
        """Runs of equal (chunk, prefix) go through one batched SDPA call."""
        out = torch.empty_like(q)
        b, qs, ks = 0, 0, 0
        chunks = lay.chunks
        while b < len(chunks):
            e = b
            while e < len(chunks) and chunks[e] == chunks[b]:
                e += 1
            c, p = chunks[b]
            n = e - b
            qq = q[qs:qs + n * c].view(n, c, q.shape[1], q.shape[2]).transpose(1, 2)
            kk = k[ks:ks + n * (c + p)].view(n, c + p, k.shape[1], k.shape[2]).transpose(1, 2)
            vv = v[ks:ks + n * (c + p)].view(n, c + p, v.shape[1], v.shape[2]).transpose(1, 2)
            if p == 0:
                o = F.scaled_dot_product_attention(qq, kk, vv, is_causal=True, enable_gqa=True)
            else:  # query i sits at position p + i: causal aligned at the bottom right
                mask = (torch.arange(c + p, device=q.device)[None, :]
                        <= torch.arange(p, p + c, device=q.device)[:, None])
                o = F.scaled_dot_product_attention(qq, kk, vv, attn_mask=mask, enable_gqa=True)
            out[qs:qs + n * c] = o.transpose(1, 2).reshape(n * c, q.shape[1], q.shape[2])
            qs, ks, b = qs + n * c, ks + n * (c + p), e
        return out

    def decode_cache(self, k: torch.Tensor, v: torch.Tensor, q_len: int,
                     selected: torch.Tensor | None, gen: torch.Generator) -> DecodeCache:
        """k, v: [B, context, Hkv, D] logical caches -> contiguous [B, Hkv, context, D]
        (fp8 with `kv_fp8`)."""
        B, ctx = k.shape[:2]
        kc, vc = k.transpose(1, 2).contiguous(), v.transpose(1, 2).contiguous()
        ks = vs = 1.0
        if self.kv_fp8:
            (kc, ks), (vc, vs) = quantise_kv(kc), quantise_kv(vc)
        return DecodeCache(kc, vc, B, ctx, q_len, selected=None if selected is None else selected.long(),
                           k_scale=ks, v_scale=vs)

    def write_kv(self, cache: DecodeCache, k_new: torch.Tensor, v_new: torch.Tensor) -> None:
        """k_new, v_new: [batch * q_len, Hkv, D] -> the last q_len slots of each sequence."""
        B, L = cache.batch, cache.q_len
        for src, dst, sc in ((k_new, cache.k, cache.k_scale), (v_new, cache.v, cache.v_scale)):
            dst[:, :, cache.context - L:] = _store(src, dst, sc).view(B, L, *src.shape[1:]).transpose(1, 2)

    def decode_attention(self, q: torch.Tensor, cache: DecodeCache) -> torch.Tensor:
        """q: [B, Lq, Hq, D] -> [B, Lq, Hq, D].

        As the paged kernel does, the Lq x (Hq / Hkv) query rows that share a KV head go
        through one attention call, so K and V are read once per KV head (SDPA's own GQA
        path copies K and V per query head, ten times slower on a CPU)."""
        k, v, ctx, L = cache.k, cache.v, cache.context, cache.q_len
        if k.dtype == torch.float8_e4m3fn:  # dequantise the whole cache, as a CPU must
            k, v = k.to(q.dtype) * cache.k_scale, v.to(q.dtype) * cache.v_scale
        B, _, Hq, D = q.shape
        Hkv = k.shape[1]
        G = Hq // Hkv
        pos = torch.arange(ctx, device=q.device)[None, :]
        if cache.selected is not None:  # gather each sequence's kept positions
            sel = cache.selected
            idx = sel[:, None, :, None].expand(-1, Hkv, -1, D)
            k, v, pos = k.gather(2, idx), v.gather(2, idx), sel
        # rows (t, g) of KV head j: query token t, head j * G + g
        qq = q.view(B, L, Hkv, G, D).permute(0, 2, 1, 3, 4).reshape(B, Hkv, L * G, D)
        mask = None
        if L > 1:  # token t of the k + 1 sits at ctx - L + t and sees keys up to it
            mine = torch.arange(ctx - L, ctx, device=q.device).repeat_interleave(G)
            mask = (pos[:, None, :] <= mine[None, :, None])[:, None]  # [B, 1, L G, keys]
        o = F.scaled_dot_product_attention(qq, k, v, attn_mask=mask)
        return o.view(B, Hkv, L, G, D).permute(0, 2, 1, 3, 4).reshape(B, L, Hq, D)


class TritonOps(TorchOps):
    """The same operators through ServePlan's Triton kernels (`validate.kernels`)."""

    name = "triton"

    def __init__(self, fp8: bool = False, kv_fp8: bool = False):
        super().__init__(fp8, kv_fp8)
        from validate import kernels

        self.k = kernels

    def gemm(self, a: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        if self.fp8 and w.dtype == torch.float8_e4m3fn:
            # W8A8: quantise the activations per tensor on the fly, as vLLM's dynamic fp8 does
            s = a.abs().amax().float().clamp(min=1e-6) / FP8_MAX
            aq = (a.float() / s).to(torch.float8_e4m3fn)
            return self.k.matmul(aq, w, a_scale=s, b_scale=1.0, out_dtype=torch.bfloat16)
        return self.k.matmul(a, w)

    def rms_norm(self, x, w, eps: float = 1e-6):
        return self.k.rms_norm(x, w, eps)

    def rope(self, q, k, positions, theta: float = 10000.0):
        return self.k.apply_rope(q, k, positions, theta)

    def act(self, x, gated: bool = True):
        return self.k.silu_and_mul(x) if gated else super().act(x, gated)

    def prefill_attention(self, q, k, v, lay: PrefillLayout):
        return self.k.flash_attn_prefill(q, k, v, lay.cu_q, lay.cu_k, lay.max_q,
                                         check_offsets=False)

    def decode_cache(self, k: torch.Tensor, v: torch.Tensor, q_len: int,
                     selected: torch.Tensor | None, gen: torch.Generator) -> DecodeCache:
        """k, v: [B, context, Hkv, D] -> vLLM's paged layout [blocks, 16, Hkv, D], each
        sequence's blocks scattered over the pool (a fragmented cache)."""
        B, ctx, hkv, d = k.shape
        per_seq = -(-ctx // PAGE)
        n_blocks = B * per_seq
        tables = torch.randperm(n_blocks, generator=gen).to(torch.int32).view(B, per_seq)
        tables = tables.to(k.device)
        flat = tables.view(-1).long()
        caches = []
        for src in (k, v):
            padded = F.pad(src, (0, 0, 0, 0, 0, per_seq * PAGE - ctx)).view(n_blocks, PAGE, hkv, d)
            dst = torch.empty_like(padded)
            dst[flat] = padded
            caches.append(dst)
        new = torch.arange(ctx - q_len, ctx, device=k.device)
        slots = (tables[:, new // PAGE].long() * PAGE + (new % PAGE)[None, :]).reshape(-1)
        lens = torch.full((B,), ctx, dtype=torch.int32, device=k.device)
        scales = [1.0, 1.0]
        if self.kv_fp8:
            for i in range(2):
                caches[i], scales[i] = quantise_kv(caches[i])
        return DecodeCache(caches[0], caches[1], B, ctx, q_len, selected=selected,
                           write_rows=slots, block_tables=tables, context_lens=lens,
                           k_scale=scales[0], v_scale=scales[1])

    def write_kv(self, cache: DecodeCache, k_new, v_new) -> None:
        for src, dst, sc in ((k_new, cache.k, cache.k_scale), (v_new, cache.v, cache.v_scale)):
            val = _store(src, dst, sc)
            if dst.dtype == torch.float8_e4m3fn:  # index_copy_ has no fp8 kernel: copy the bytes
                dst, val = dst.view(torch.uint8), val.view(torch.uint8)
            dst.view(-1, *dst.shape[2:]).index_copy_(0, cache.write_rows, val)

    def decode_attention(self, q, cache: DecodeCache):
        return self.k.paged_attention(q, cache.k, cache.v, cache.block_tables, cache.context_lens,
                                      selected_positions=cache.selected,
                                      k_scale=cache.k_scale, v_scale=cache.v_scale)

