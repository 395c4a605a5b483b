"""Multi-head latent attention (DeepSeek-V2/V3, Kimi-K2): one attention module on one GPU.

    mla_prefill_time_s(*, batch, prompt_len, num_heads, gpu, eff, hidden=7168, q_lora_rank=1536,
                       kv_lora_rank=512, qk_nope_dim=128, qk_rope_dim=64, v_head_dim=128,
                       precision="bf16", kv_dtype="bf16", absorbed=None) -> seconds
    mla_decode_time_s(*, batch, context_len, num_heads, gpu, eff, hidden=7168, ...,
                      precision="bf16", kv_dtype="bf16", q_tokens=1) -> seconds
    mla_decode_proj_time_s(*, tokens, num_heads, gpu, eff, ...) -> seconds   (its token-only part)
    mla_decode_attn_time_s(*, batch, context_len, q_tokens, num_heads, gpu, eff, ...) -> seconds
    mla_kv_bytes_per_token(*, kv_lora_rank=512, qk_rope_dim=64, kv_dtype="bf16") -> bytes per layer

`num_heads` are the GPU's heads (after TP); `precision` the projections' GEMMs (`bf16`,
`fp8_block`: costmodel/block_fp8.py, inside a CUDA graph), `kv_dtype` the latent cache. Shapes
may be numpy arrays (the fit prices thousands of rows at once). The module, as vLLM's
`DeepseekV2MLAAttention` runs it for T tokens:

- fused q_a / kv_a projection (hidden -> q_lora + kv_lora + rope), the q_a and kv_a RMSNorms,
  q_b (q_lora -> heads x (nope + rope)), RoPE, the latent cache write (kv_lora + rope per
  token, one "KV head" shared by every query head), the output projection
  (heads x v -> hidden);
- prefill (`absorbed=False`): kv_b decompresses the prompt's latents to per-head keys and values
  (kv_lora -> heads x (nope + v)), then FlashAttention over heads x head dim 192 (values 128),
  costmodel/attention.py's prefill formula at `mla_prefill_compute_eff` of the BF16 peak (at
  the mean of the two products' head dims), and the copy that assembles K from its parts;
- decode and short prefills (`absorbed=True`, vLLM's choice up to 128-token chunks, and the
  kernels AIConfigurator reports: FlashMLA, FLASH_ATTN_MLA): W_UK and W_UV are folded into the
  query and output (two batched GEMMs per head: nope x kv_lora, kv_lora x v) and attention runs
  over the latent cache itself: keys of kv_lora + rope, values of kv_lora, the query rows of a
  sequence (tokens x heads) in 64-row tiles; cache bytes at `mla_attn_mem_eff` of HBM
  bandwidth, FLOPs at `mla_attn_compute_eff` of the BF16 peak, blended like decode attention,
  `mla_attn_per_seq_s` per sequence (FlashAttention's MLA kernel, bf16 cache); an fp8 cache runs
  FlashMLA, with its own `mla_fp8_*` fractions, time per sequence and fixed time.
- `mla_overhead_s` once per module (its ~15 small kernels' fixed time beyond the GEMMs' and
  norms' own) and `mla_token_head_s` per token and head (the per-head reshapes, copies and
  batched GEMMs the GEMM formulas price as one); clock-scaled.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from costmodel import attention as at
from costmodel import roofline as rl
from costmodel.block_fp8 import block_fp8_gemm_time_s
from costmodel.efficiencies import Efficiencies, _blend_v, clock_scale
from costmodel.errors import ServePlanError
from costmodel.hardware import HardwareSpec

KV_BYTES = {"bf16": 2.0, "fp8": 1.0}
ABSORB_MAX_CHUNK = 128  # prefill chunks up to this many tokens run the absorbed (decode) path
Q_TILE = 64  # query rows per FlashMLA tile


def mla_kv_bytes_per_token(*, kv_lora_rank: int = 512, qk_rope_dim: int = 64,
                           kv_dtype: str = "bf16") -> float:
    """Bytes one token's latent cache takes in one layer (not per head)."""
    return (kv_lora_rank + qk_rope_dim) * _kv_bytes(kv_dtype)


def _kv_bytes(kv_dtype):
    try:
        return np.vectorize(KV_BYTES.__getitem__, otypes=[float])(kv_dtype) if np.ndim(kv_dtype) \
            else KV_BYTES[kv_dtype]
    except KeyError:
        raise ServePlanError(f"MLA KV-cache dtype {kv_dtype!r}; expected one of {', '.join(KV_BYTES)}") from None


def _gemm(m, n, k, gpu, eff, block):
    """bf16 GEMM, or block-fp8 where `block` (per row), inside a CUDA graph."""
    t = rl.gemm_time_s_v(m, n, k, gpu, eff, gpu.bf16_flops, 2.0)
    if np.any(block):
        tb = block_fp8_gemm_time_s(m=m, n=n, k=k, gpu=gpu, eff=eff, graph=True)
        t = np.where(block, tb, t)
    return t


def _norm(m, width, gpu, eff):
    return rl.elementwise_time_s_v(m * width * 4.0, gpu, eff, "input_layernorm", width)


def _common(t, h, hidden, ql, kl, nope, rope, v, gpu, eff, block, kvb):
    """Projections, norms, RoPE and cache write of `t` tokens (seconds per row)."""
    out = _gemm(t, ql + kl + rope, hidden, gpu, eff, block)
    out = out + _norm(t, ql, gpu, eff) + _norm(t, kl, gpu, eff)
    out = out + _gemm(t, h * (nope + rope), ql, gpu, eff, block)
    out = out + rl.elementwise_time_s_v(t * (h + 1) * rope * 4.0, gpu, eff, "rope")
    out = out + rl.elementwise_time_s_v(t * (kl + rope) * (2.0 + kvb), gpu, eff)
    out = out + _gemm(t, hidden, h * v, gpu, eff, block)
    return out + (eff.mla_overhead_s + t * h * eff.mla_token_head_s) * clock_scale(gpu)


def _latent_attn(b, q_tokens, ctx, h, kl, rope, gpu, eff, kvb):
    """Absorbed attention over the latent cache: `b` sequences, `q_tokens` queries each over
    `ctx` cached keys."""
    rows = -(-(q_tokens * h) // Q_TILE) * Q_TILE
    flops = 2.0 * b * rows * ctx * (2 * kl + rope)
    nbytes = b * ctx * (kl + rope) * kvb + b * q_tokens * h * (2 * kl + rope) * 2.0
    fp8 = kvb < 2.0  # FlashMLA over an fp8 cache; FlashAttention's MLA kernel over bf16
    t_m = nbytes / (gpu.hbm_bw_bytes_s * np.where(fp8, eff.mla_fp8_attn_mem_eff, eff.mla_attn_mem_eff))
    t_c = flops / (gpu.bf16_flops * np.where(fp8, eff.mla_fp8_attn_compute_eff, eff.mla_attn_compute_eff))
    fixed = eff.attn_overhead_s + b * np.where(fp8, eff.mla_fp8_attn_per_seq_s, eff.mla_attn_per_seq_s) \
        + np.where(fp8, eff.mla_fp8_overhead_s, 0.0)
    return _blend_v(t_m, t_c, eff.attn_decode_blend) + fixed * clock_scale(gpu)


def _absorbed(b, q_tokens, ctx, h, hidden, ql, kl, nope, rope, v, gpu, eff, block, kvb):
    t = b * q_tokens
    out = _common(t, h, hidden, ql, kl, nope, rope, v, gpu, eff, block, kvb)
    out = out + rl.gemm_time_s_v(t, h * kl, nope, gpu, eff, gpu.bf16_flops, 2.0)  # q_nope W_UK
    out = out + rl.gemm_time_s_v(t, h * v, kl, gpu, eff, gpu.bf16_flops, 2.0)  # W_UV
    return out + _latent_attn(b, q_tokens, ctx, h, kl, rope, gpu, eff, kvb)


def _arrays(*xs):
    return np.broadcast_arrays(*(np.atleast_1d(np.asarray(x, dtype=np.int64)) for x in xs))


def _block(precision, shape):
    p = np.broadcast_to(np.atleast_1d(np.asarray(precision, dtype=object)), shape)
    bad = sorted(set(p) - {"bf16", "fp8_block"})
    if bad:
        raise ServePlanError(f"MLA projection precision {bad}; expected bf16 or fp8_block")
    return p == "fp8_block"


def mla_prefill_time_s(*, batch, prompt_len, num_heads, gpu: HardwareSpec, eff: Efficiencies,
                       hidden=7168, q_lora_rank=1536, kv_lora_rank=512, qk_nope_dim=128,
                       qk_rope_dim=64, v_head_dim=128, precision="bf16", kv_dtype="bf16",
                       absorbed=None):
    """Seconds of one MLA module over `batch` prompts of `prompt_len` new tokens (no cached
    prefix). `absorbed`: None picks as vLLM does (chunks up to ABSORB_MAX_CHUNK tokens)."""
    scalar = np.ndim(batch) == 0 and np.ndim(prompt_len) == 0
    b, s, h, hid, ql, kl, nope, rope, v = _arrays(batch, prompt_len, num_heads, hidden, q_lora_rank,
                                                  kv_lora_rank, qk_nope_dim, qk_rope_dim, v_head_dim)
    block = _block(precision, b.shape)
    kvb = np.broadcast_to(_kv_bytes(kv_dtype), b.shape)
    absorb = s <= ABSORB_MAX_CHUNK if absorbed is None else np.broadcast_to(np.asarray(absorbed), b.shape)
    t = b * s
    out = _common(t, h, hid, ql, kl, nope, rope, v, gpu, eff, block, kvb)
    out = out + _gemm(t, h * (nope + v), kl, gpu, eff, block)  # kv_b: latents -> K, V
    e2 = replace(eff, attn_compute_eff=eff.mla_prefill_compute_eff)
    # QK^T over nope + rope (192), PV over v (128): the formula's one head dim, at their mean
    out = out + at.prefill_attn_time_s_v(b, s, 0, h, h, (nope + rope + v) // 2, 0, gpu, e2, 2.0)
    # K assembled from its nope and rope parts: written once, read once
    out = out + rl.elementwise_time_s_v(t * h * (nope + rope) * 4.0, gpu, eff)
    if np.any(absorb):
        out = np.where(absorb, _absorbed(b, s, s, h, hid, ql, kl, nope, rope, v, gpu, eff, block, kvb), out)
    out = np.where(t > 0, out, 0.0)
    return float(out[0]) if scalar else out


def mla_decode_time_s(*, batch, context_len, num_heads, gpu: HardwareSpec, eff: Efficiencies,
                      hidden=7168, q_lora_rank=1536, kv_lora_rank=512, qk_nope_dim=128,
                      qk_rope_dim=64, v_head_dim=128, precision="bf16", kv_dtype="bf16",
                      q_tokens=1):
    """Seconds of one MLA module for `batch` sequences of `context_len` cached tokens, each
    adding `q_tokens` (1; more for a speculative verify): `mla_decode_proj_time_s` of the
    batch's tokens plus `mla_decode_attn_time_s`."""
    scalar = np.ndim(batch) == 0 and np.ndim(context_len) == 0
    b, c, q = _arrays(batch, context_len, q_tokens)
    dims = dict(num_heads=num_heads, gpu=gpu, eff=eff, kv_lora_rank=kv_lora_rank,
                qk_rope_dim=qk_rope_dim, kv_dtype=kv_dtype)
    out = mla_decode_proj_time_s(tokens=b * q, hidden=hidden, q_lora_rank=q_lora_rank,
                                 qk_nope_dim=qk_nope_dim, v_head_dim=v_head_dim,
                                 precision=precision, **dims)
    out = out + mla_decode_attn_time_s(batch=b, context_len=c, q_tokens=q, **dims)
    out = np.where(b > 0, out, 0.0)
    return float(out[0]) if scalar else out


def mla_decode_proj_time_s(*, tokens, num_heads, gpu: HardwareSpec, eff: Efficiencies, hidden=7168,
                           q_lora_rank=1536, kv_lora_rank=512, qk_nope_dim=128, qk_rope_dim=64,
                           v_head_dim=128, precision="bf16", kv_dtype="bf16"):
    """The absorbed module's work that depends only on its `tokens` (batch x q_tokens): the
    projections, norms, RoPE, cache write and the W_UK / W_UV batched GEMMs, with the module's
    fixed time. Arrays of `tokens` give an array."""
    t, h, hid, ql, kl, nope, rope, v = _arrays(tokens, num_heads, hidden, q_lora_rank, kv_lora_rank,
                                               qk_nope_dim, qk_rope_dim, v_head_dim)
    block = _block(precision, t.shape)
    kvb = np.broadcast_to(_kv_bytes(kv_dtype), t.shape)
    out = _common(t, h, hid, ql, kl, nope, rope, v, gpu, eff, block, kvb)
    out = out + rl.gemm_time_s_v(t, h * kl, nope, gpu, eff, gpu.bf16_flops, 2.0)  # q_nope W_UK
    out = out + rl.gemm_time_s_v(t, h * v, kl, gpu, eff, gpu.bf16_flops, 2.0)  # W_UV
    return np.where(t > 0, out, 0.0)


def mla_decode_attn_time_s(*, batch, context_len, q_tokens, num_heads, gpu: HardwareSpec,
                           eff: Efficiencies, kv_lora_rank=512, qk_rope_dim=64, kv_dtype="bf16"):
    """Attention over the latent cache: `batch` sequences, `q_tokens` queries each over
    `context_len` cached tokens plus their own. Scalars give a float (the simulator's path:
    no arrays), arrays an array."""
    if all(np.ndim(x) == 0 for x in (batch, context_len, q_tokens)):
        return float(_latent_attn(batch, q_tokens, context_len + q_tokens, num_heads, kv_lora_rank,
                                  qk_rope_dim, gpu, eff, _kv_bytes(kv_dtype)))
    b, c, q, h, kl, rope = _arrays(batch, context_len, q_tokens, num_heads, kv_lora_rank, qk_rope_dim)
    kvb = np.broadcast_to(_kv_bytes(kv_dtype), b.shape)
    return _latent_attn(b, q, c + q, h, kl, rope, gpu, eff, kvb)
