"""Multi-head latent attention (DeepSeek-V2/V3, Kimi-K2) in torch: one attention module on one
GPU, as vLLM's MLA layer computes it. ServePlan has no Triton MLA kernel: this module is what
`serveplan validate` times for the `mla_prefill` and `mla_decode` rows, on every device, and
the report says so.

For T tokens of `num_heads` heads (after TP), with x [T, hidden]:

    c = x @ W_a                   fused q_a / kv_a: [T, q_lora + kv_lora + rope]
    q_c = rmsnorm(c[:q_lora]);  kv_c = rmsnorm(c[q_lora:q_lora + kv_lora]);  k_pe = c[-rope:]
    q = q_c @ W_q_b               [T, heads, nope + rope]; RoPE on q's rope part and on k_pe
    latent cache <- (kv_c, k_pe)  kv_lora + rope elements per token, shared by every head

- prefill (`prefill`, chunks over 128 tokens, as vLLM does): kv_b up-projects the prompt's
  latents to per-head keys and values, kv = kv_c @ W_kv_b [T, heads, nope + v], keys
  (k_nope, k_pe), and causal attention of 192-wide heads (values padded to the key width, as
  FlashAttention runs MLA prefill), then o @ W_o;
- decode and short chunks (`absorbed`): W_UK folds into the query (q_nope @ W_UK: [heads, T,
  kv_lora]) and W_UV into the output, so attention reads each cached latent once for all heads
  (one KV head, keys kv_lora + rope wide, values kv_lora wide); the folded weights are made
  once, when the module is built.
`naive_decode` computes a decode step without the absorption (the cache up-projected per head),
the identity the absorbed path must keep: the tests check it.

Every call on the timed path is capture-safe: positions index a cos/sin table built once on the
device, and the cache is written through slices of fixed size.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

ABSORB_MAX_CHUNK = 128  # prefill chunks up to this many tokens take the absorbed path (vLLM)
ROPE_THETA = 10000.0


@dataclass(frozen=True)
class MLADims:
    hidden: int
    num_heads: int  # on this GPU
    q_lora_rank: int  # 0: queries straight from x
    kv_lora_rank: int
    qk_nope_dim: int
    qk_rope_dim: int
    v_head_dim: int

    @property
    def qk_dim(self) -> int:
        return self.qk_nope_dim + self.qk_rope_dim

    @property
    def latent(self) -> int:
        """Cache elements per token: the latent and the rope key."""
        return self.kv_lora_rank + self.qk_rope_dim

    def weight_elems(self) -> int:
        h, n, ql, kl = self.hidden, self.num_heads, self.q_lora_rank, self.kv_lora_rank
        q = h * ql + ql * n * self.qk_dim if ql else h * n * self.qk_dim
        return q + h * self.latent + kl * n * (self.qk_nope_dim + self.v_head_dim) + n * self.v_head_dim * h


def mla_counts(r) -> tuple[float, float]:
    """(FLOPs, bytes) of an `mla_prefill` / `mla_decode` native row: the projections of its
    tokens, attention over its (query, key) pairs (absorbed: latent-wide; prefill over 128
    tokens: per-head), the weights and (decode) the latent cache read once, bf16."""
    d = MLADims(int(r["hidden"]), int(r["num_heads"]), int(r["q_lora_rank"]), int(r["kv_lora_rank"]),
                int(r["qk_nope_dim"]), int(r["qk_rope_dim"]), int(r["v_head_dim"]))
    b, q, ctx = int(r["batch_size"]), int(r["prefill_len"]), int(r["context_len"])
    T = b * q
    if r["op"] == "mla_decode":
        pairs, absorbed = b * q * (ctx + q), True
    else:
        pairs, absorbed = b * q * (q + 1) / 2, q <= ABSORB_MAX_CHUNK
    attn = (2.0 * pairs * d.num_heads * (2 * d.kv_lora_rank + d.qk_rope_dim) if absorbed
            else 4.0 * pairs * d.num_heads * d.qk_dim)
    nbytes = 2.0 * (d.weight_elems() + b * (ctx + q) * d.latent + 2 * T * d.hidden)
    return 2.0 * T * d.weight_elems() + attn, nbytes


def mla_dims(model, tp: int) -> MLADims:
    """One GPU's MLA module of `model` (a ModelSpec with kv_lora_rank > 0) under TP `tp`."""
    from costmodel.errors import ServePlanError

    if model.num_heads % tp:
        raise ServePlanError(f"tp={tp} does not divide {model.name}'s {model.num_heads} heads")
    return MLADims(model.hidden_size, model.num_heads // tp, model.q_lora_rank, model.kv_lora_rank,
                   model.qk_nope_head_dim, model.qk_rope_head_dim, model.v_head_dim)


class MLAModule:
    """Random weights of one GPU's MLA module (N(0, 1/fan_in)), and its forward passes."""

    def __init__(self, d: MLADims, *, device="cpu", dtype=torch.bfloat16, seed: int = 0,
                 max_positions: int = 1 << 15):
        self.d, self.device, self.dtype = d, device, dtype
        g = torch.Generator(device=device).manual_seed(seed)

        def w(k, n):
            return (torch.randn(k, n, generator=g, device=device) * k ** -0.5).to(dtype)

        n = d.num_heads
        self.w_a = w(d.hidden, d.q_lora_rank + d.latent)  # q_a and kv_a fused (vLLM fuses them)
        self.w_q = w(d.q_lora_rank or d.hidden, n * d.qk_dim)
        self.q_norm = torch.ones(max(d.q_lora_rank, 1), device=device, dtype=dtype)
        self.kv_norm = torch.ones(d.kv_lora_rank, device=device, dtype=dtype)
        self.w_kv_b = w(d.kv_lora_rank, n * (d.qk_nope_dim + d.v_head_dim))
        self.w_o = w(n * d.v_head_dim, d.hidden)
        kvb = self.w_kv_b.view(d.kv_lora_rank, n, d.qk_nope_dim + d.v_head_dim)
        self.w_uk = kvb[:, :, :d.qk_nope_dim].permute(1, 2, 0).contiguous()  # [n, nope, kv_lora]
        self.w_uv = kvb[:, :, d.qk_nope_dim:].permute(1, 0, 2).contiguous()  # [n, kv_lora, v]
        half = d.qk_rope_dim // 2
        inv = 1.0 / ROPE_THETA ** (torch.arange(half, device=device, dtype=torch.float64) * 2 / d.qk_rope_dim)
        ang = torch.arange(max_positions, device=device, dtype=torch.float64)[:, None] * inv[None, :]
        self.cos, self.sin = ang.cos().float(), ang.sin().float()
        self.scale = d.qk_dim ** -0.5

    # --- pieces ----------------------------------------------------------------------------
    def _rope(self, x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """Rotate-half RoPE of x [T, ..., rope] at positions [T]."""
        cos, sin = self.cos[positions], self.sin[positions]
        while cos.dim() < x.dim():
            cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)
        h = x.shape[-1] // 2
        x1, x2 = x[..., :h].float(), x[..., h:].float()
        return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], -1).to(x.dtype)

    def project(self, x: torch.Tensor, positions: torch.Tensor):
        """(q_nope [T, n, nope], q_pe [T, n, rope], latent [T, kv_lora + rope] with k_pe roped)."""
        d = self.d
        T = x.shape[0]
        c = x @ self.w_a
        ql = d.q_lora_rank
        kv_c = F.rms_norm(c[:, ql:ql + d.kv_lora_rank], (d.kv_lora_rank,), self.kv_norm, 1e-6)
        k_pe = self._rope(c[:, ql + d.kv_lora_rank:], positions)
        q_in = F.rms_norm(c[:, :ql], (ql,), self.q_norm, 1e-6) if ql else x
        q = (q_in @ self.w_q).view(T, d.num_heads, d.qk_dim)
        q_pe = self._rope(q[..., d.qk_nope_dim:], positions)
        return q[..., :d.qk_nope_dim], q_pe, torch.cat([kv_c, k_pe], -1)

    def _out(self, o: torch.Tensor) -> torch.Tensor:
        """o [T, n, v] -> [T, hidden]."""
        return o.reshape(o.shape[0], -1) @ self.w_o

    # --- prefill: up-projected keys and values ------------------------------------------------
    def prefill(self, x: torch.Tensor, n_seqs: int, positions: torch.Tensor) -> torch.Tensor:
        """`n_seqs` prompts of equal length packed in x [n_seqs * L, hidden] (no cached
        prefix) -> [n_seqs * L, hidden]."""
        d = self.d
        T = x.shape[0]
        L = T // n_seqs
        q_nope, q_pe, lat = self.project(x, positions)
        kv = (lat[:, :d.kv_lora_rank] @ self.w_kv_b).view(T, d.num_heads, d.qk_nope_dim + d.v_head_dim)
        k = torch.cat([kv[..., :d.qk_nope_dim],
                       lat[:, None, d.kv_lora_rank:].expand(T, d.num_heads, d.qk_rope_dim)], -1)
        v = F.pad(kv[..., d.qk_nope_dim:], (0, d.qk_dim - d.v_head_dim))  # padded to the key width
        q = torch.cat([q_nope, q_pe], -1)

        def heads(t):  # [T, n, D] -> [n_seqs, n, L, D]
            return t.view(n_seqs, L, d.num_heads, -1).transpose(1, 2)

        o = F.scaled_dot_product_attention(heads(q), heads(k), heads(v), is_causal=True, scale=self.scale)
        o = o.transpose(1, 2).reshape(T, d.num_heads, d.qk_dim)[..., :d.v_head_dim]
        return self._out(o)

    # --- absorbed: attention over the latent cache ---------------------------------------------
    def absorbed(self, x: torch.Tensor, cache: torch.Tensor, q_len: int,
                 positions: torch.Tensor) -> torch.Tensor:
        """x [B * q_len, hidden]: q_len new tokens for each of the B sequences of `cache`
        [B, ctx, kv_lora + rope] (its last q_len slots are theirs, written here) -> [B q_len,
        hidden]. Query t of a sequence sits at ctx - q_len + t and sees keys up to it."""
        d = self.d
        B, ctx = cache.shape[:2]
        T, n = x.shape[0], d.num_heads
        q_nope, q_pe, lat = self.project(x, positions)
        cache[:, ctx - q_len:] = lat.view(B, q_len, d.latent)
        q_lat = torch.bmm(q_nope.transpose(0, 1), self.w_uk)  # [n, T, kv_lora]
        q = torch.cat([q_lat, q_pe.transpose(0, 1)], -1)  # [n, T, latent]
        q = q.view(n, B, q_len, d.latent).permute(1, 2, 0, 3).reshape(B, 1, q_len * n, d.latent)
        mask = None
        if q_len > 1:
            mine = torch.arange(ctx - q_len, ctx, device=x.device).repeat_interleave(n)
            mask = torch.arange(ctx, device=x.device)[None, :] <= mine[:, None]
        o = F.scaled_dot_product_attention(q, cache[:, None], cache[:, None, :, :d.kv_lora_rank],
                                           attn_mask=mask, scale=self.scale)
        o = o.view(B, q_len, n, d.kv_lora_rank).permute(2, 0, 1, 3).reshape(n, T, d.kv_lora_rank)
        return self._out(torch.bmm(o, self.w_uv).transpose(0, 1))

    def naive_decode(self, x: torch.Tensor, cache: torch.Tensor, q_len: int,
                     positions: torch.Tensor) -> torch.Tensor:
        """`absorbed` without the absorption: the cache up-projected to per-head K and V."""
        d = self.d
        B, ctx = cache.shape[:2]
        n = d.num_heads
        q_nope, q_pe, lat = self.project(x, positions)
        cache[:, ctx - q_len:] = lat.view(B, q_len, d.latent)
        kv = (cache[..., :d.kv_lora_rank] @ self.w_kv_b).view(B, ctx, n, -1)
        k = torch.cat([kv[..., :d.qk_nope_dim],
                       cache[:, :, None, d.kv_lora_rank:].expand(B, ctx, n, d.qk_rope_dim)], -1)
        v = kv[..., d.qk_nope_dim:]
        q = torch.cat([q_nope, q_pe], -1).view(B, q_len, n, d.qk_dim)
        mask = torch.arange(ctx, device=x.device)[None, :] <= torch.arange(ctx - q_len, ctx, device=x.device)[:, None]
        o = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                           attn_mask=mask, scale=self.scale)
        return self._out(o.transpose(1, 2).reshape(B * q_len, n, d.v_head_dim))

    # --- cost formulas ---------------------------------------------------------------------------
    def flops(self, tokens: int, attended_pairs: float, absorbed: bool) -> float:
        """Projections of `tokens` (kv_b once per token, or W_UK and W_UV once per token: the
        same count) and attention over `attended_pairs` (query, key) pairs."""
        d = self.d
        proj = 2.0 * tokens * d.weight_elems()
        if absorbed:
            return proj + 2.0 * attended_pairs * d.num_heads * (2 * d.kv_lora_rank + d.qk_rope_dim)
        return proj + 4.0 * attended_pairs * d.num_heads * d.qk_dim
