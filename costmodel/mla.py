"""Multi-head latent attention (DeepSeek-V2/V3, Kimi-K2): one attention module on one GPU.

    mla_prefill_time_s(*, batch, prompt_len, num_heads, gpu, eff, hidden=7168, q_lora_rank=1536,
                       kv_lora_rank=512, qk_nope_dim=128, qk_rope_dim=64, v_head_dim=128,
                       precision="bf16", kv_dtype="bf16", absorbed=None) -> seconds
    mla_decode_time_s(*, batch, context_len, num_heads, gpu, eff, hidden=7168, ...,
                      precision="bf16", kv_dtype="bf16", q_tokens=1) -> seconds
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
  norms' own), `mla_token_s` per token, and on the absorbed path `mla_token_head_s` per token
  and head (the per-head reshapes and copies around the batched GEMMs the GEMM formulas price
  as one); clock-scaled.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from costmodel import attention as at
from costmodel import roofline as rl
from costmodel.block_fp8 import block_fp8_gemm_time_s
from costmodel.efficiencies import Efficiencies, _blend, _blend_v, clock_scale
from costmodel.errors import ServePlanError
from costmodel.hardware import HardwareSpec

KV_BYTES = {"bf16": 2.0, "fp8": 1.0}
ABSORB_MAX_CHUNK = 128  # prefill chunks up to this many tokens run the absorbed (decode) path
Q_TILE = 64  # query rows per FlashMLA tile


def mla_kv_bytes_per_token(*, kv_lora_rank: int = 512, qk_rope_dim: int = 64,
                           kv_dtype: str = "bf16") -> float:
    """Bytes one token's latent cache takes in one layer (not per head)."""
    return (kv_lora_rank + qk_rope_dim) * _kv_bytes(kv_dtype)


def mla_kv_elem_bytes(kv_dtype: str) -> float:
    """Bytes per element of an MLA cache of `kv_dtype` (bf16 or fp8)."""
    b = KV_BYTES.get(kv_dtype)
    if b is None:
        raise ServePlanError(f"MLA KV-cache dtype {kv_dtype!r}; expected one of {', '.join(KV_BYTES)}")
    return b


def _kv_bytes(kv_dtype):
    if not np.ndim(kv_dtype):
        return mla_kv_elem_bytes(kv_dtype)
    return np.vectorize(mla_kv_elem_bytes, otypes=[float])(kv_dtype)


# Each helper takes Python scalars (the simulator's path: the scalar formulas of roofline.py and
# attention.py) or numpy arrays of rows (the fit's path: their `_v` forms); a test keeps the two
# equal.
def _sel(cond, a, b):
    return (a if cond else b) if np.ndim(cond) == 0 else np.where(cond, a, b)


def _bf16_gemm(m, n, k, gpu, eff):
    if np.ndim(m) == 0:
        return rl.gemm_time_s(int(m), int(n), int(k), gpu, eff, gpu.bf16_flops, 2.0)
    return rl.gemm_time_s_v(m, n, k, gpu, eff, gpu.bf16_flops, 2.0)


def _gemm(m, n, k, gpu, eff, block):
    """bf16 GEMM, or block-fp8 where `block` (per row), inside a CUDA graph."""
    if np.ndim(m) == 0:
        if block:
            return block_fp8_gemm_time_s(m=int(m), n=int(n), k=int(k), gpu=gpu, eff=eff, graph=True)
        return _bf16_gemm(m, n, k, gpu, eff)
    t = _bf16_gemm(m, n, k, gpu, eff)
    if np.any(block):
        tb = block_fp8_gemm_time_s(m=m, n=n, k=k, gpu=gpu, eff=eff, graph=True)
        t = np.where(block, tb, t)
    return t


def _elem(nbytes, gpu, eff, op="", width=0):
    if np.ndim(nbytes) == 0:
        return rl.elementwise_time_s(float(nbytes), gpu, eff, op, int(width))
    return rl.elementwise_time_s_v(nbytes, gpu, eff, op, width)


def _norm(m, width, gpu, eff):
    return _elem(m * width * 4.0, gpu, eff, "input_layernorm", width)


def _common(t, h, hidden, ql, kl, nope, rope, v, gpu, eff, block, kvb):
    """Projections, norms, RoPE and cache write of `t` tokens (seconds per row)."""
    out = _gemm(t, ql + kl + rope, hidden, gpu, eff, block)
    out = out + _norm(t, ql, gpu, eff) + _norm(t, kl, gpu, eff)
    out = out + _gemm(t, h * (nope + rope), ql, gpu, eff, block)
    out = out + _elem(t * (h + 1) * rope * 4.0, gpu, eff, "rope")
    out = out + _elem(t * (kl + rope) * (2.0 + kvb), gpu, eff)
    out = out + _gemm(t, hidden, h * v, gpu, eff, block)
    return out + (eff.mla_overhead_s + t * eff.mla_token_s) * clock_scale(gpu)


def _latent_attn(b, q_tokens, ctx, h, kl, rope, gpu, eff, kvb):
    """Absorbed attention over the latent cache: `b` sequences, `q_tokens` queries each over
    `ctx` cached keys."""
    rows = -(-(q_tokens * h) // Q_TILE) * Q_TILE
    flops = 2.0 * b * rows * ctx * (2 * kl + rope)
    nbytes = b * ctx * (kl + rope) * kvb + b * q_tokens * h * (2 * kl + rope) * 2.0
    fp8 = kvb < 2.0  # FlashMLA over an fp8 cache; FlashAttention's MLA kernel over bf16
    t_m = nbytes / (gpu.hbm_bw_bytes_s * _sel(fp8, eff.mla_fp8_attn_mem_eff, eff.mla_attn_mem_eff))
    t_c = flops / (gpu.bf16_flops * _sel(fp8, eff.mla_fp8_attn_compute_eff, eff.mla_attn_compute_eff))
    fixed = eff.attn_overhead_s + b * _sel(fp8, eff.mla_fp8_attn_per_seq_s, eff.mla_attn_per_seq_s) \
        + _sel(fp8, eff.mla_fp8_overhead_s, 0.0)
    blend = _blend(t_m, t_c, eff.attn_decode_blend) if np.ndim(t_m) == 0 \
        else _blend_v(t_m, t_c, eff.attn_decode_blend)
    return blend + fixed * clock_scale(gpu)


def _absorbed_tokens(t, h, hidden, ql, kl, nope, rope, v, gpu, eff, block, kvb):
    """The part of an absorbed MLA module that depends on its `t` query tokens alone."""
    out = _common(t, h, hidden, ql, kl, nope, rope, v, gpu, eff, block, kvb)
    out = out + _bf16_gemm(t, h * kl, nope, gpu, eff)  # q_nope W_UK
    out = out + _bf16_gemm(t, h * v, kl, gpu, eff)  # W_UV
    return out + t * h * eff.mla_token_head_s * clock_scale(gpu)  # the per-head BMMs' copies


# scalar `_absorbed_tokens` results: the simulator prices a decode step per iteration, and its
# batch sizes repeat; keyed by the parameter objects' identity (checked on a hit)
_TOKENS_MEMO: dict[tuple, tuple] = {}


def _absorbed_tokens_memo(t, h, hidden, ql, kl, nope, rope, v, gpu, eff, block, kvb) -> float:
    key = (id(gpu), id(eff), t, h, hidden, ql, kl, nope, rope, v, bool(block), kvb)
    hit = _TOKENS_MEMO.get(key)
    if hit is not None and hit[0] is gpu and hit[1] is eff:
        return hit[2]
    if len(_TOKENS_MEMO) > 100_000:
        _TOKENS_MEMO.clear()
    val = float(_absorbed_tokens(t, h, hidden, ql, kl, nope, rope, v, gpu, eff, block, kvb))
    _TOKENS_MEMO[key] = (gpu, eff, val)
    return val


def _latent_attn_1(b: int, q_tokens: int, ctx: int, h: int, kl: int, rope: int, gpu, eff,
                   kvb: float) -> float:
    """`_latent_attn` of Python scalars, without numpy: the simulator prices one per decode
    step (a test keeps the two equal)."""
    rows = -(-(q_tokens * h) // Q_TILE) * Q_TILE
    flops = 2.0 * b * rows * ctx * (2 * kl + rope)
    nbytes = b * ctx * (kl + rope) * kvb + b * q_tokens * h * (2 * kl + rope) * 2.0
    if kvb < 2.0:
        mem, comp = eff.mla_fp8_attn_mem_eff, eff.mla_fp8_attn_compute_eff
        fixed = eff.attn_overhead_s + b * eff.mla_fp8_attn_per_seq_s + eff.mla_fp8_overhead_s
    else:
        mem, comp = eff.mla_attn_mem_eff, eff.mla_attn_compute_eff
        fixed = eff.attn_overhead_s + b * eff.mla_attn_per_seq_s
    t_m = nbytes / (gpu.hbm_bw_bytes_s * mem)
    t_c = flops / (gpu.bf16_flops * comp)
    return _blend(t_m, t_c, eff.attn_decode_blend) + fixed * clock_scale(gpu)


def _absorbed_1(b: int, q: int, ctx: int, h: int, hidden: int, ql: int, kl: int, nope: int,
                rope: int, v: int, gpu, eff, block: bool, kvb: float) -> float:
    """`_absorbed` of Python scalars."""
    return _absorbed_tokens_memo(b * q, h, hidden, ql, kl, nope, rope, v, gpu, eff, block, kvb) \
        + _latent_attn_1(b, q, ctx, h, kl, rope, gpu, eff, kvb)


def mla_decode_1(b: int, c: int, q: int, h: int, hidden: int, ql: int, kl: int, nope: int,
                 rope: int, v: int, gpu, eff, block: bool, kvb: float) -> float:
    """`mla_decode_time_s` of checked Python scalars (`block`: fp8_block projections, `kvb`:
    cache bytes per element): the simulator's per-step path."""
    if b <= 0:
        return 0.0
    return _absorbed_1(b, q, c + q, h, hidden, ql, kl, nope, rope, v, gpu, eff, block, kvb)


def _absorbed(b, q_tokens, ctx, h, hidden, ql, kl, nope, rope, v, gpu, eff, block, kvb):
    if np.ndim(b * q_tokens) == 0:
        return _absorbed_1(int(b), int(q_tokens), int(ctx), int(h), hidden, ql, int(kl), nope,
                           int(rope), v, gpu, eff, block, float(kvb))
    out = _absorbed_tokens(b * q_tokens, h, hidden, ql, kl, nope, rope, v, gpu, eff, block, kvb)
    return out + _latent_attn(b, q_tokens, ctx, h, kl, rope, gpu, eff, kvb)


_E2: dict[int, tuple[Efficiencies, Efficiencies]] = {}


def _prefill_eff(eff: Efficiencies) -> Efficiencies:
    """The attention parameters with MLA prefill's own tensor-core fraction (cached: `replace`
    is slow on the simulator's path)."""
    hit = _E2.get(id(eff))
    if hit is None or hit[0] is not eff:
        if len(_E2) > 64:
            _E2.clear()
        hit = _E2[id(eff)] = (eff, replace(eff, attn_compute_eff=eff.mla_prefill_compute_eff))
    return hit[1]


def _prefill(b, s, h, hid, ql, kl, nope, rope, v, gpu, eff, block, kvb, absorb):
    t = b * s
    out = _common(t, h, hid, ql, kl, nope, rope, v, gpu, eff, block, kvb)
    out = out + _gemm(t, h * (nope + v), kl, gpu, eff, block)  # kv_b: latents -> K, V
    e2 = _prefill_eff(eff)
    # QK^T over nope + rope (192), PV over v (128): the formula's one head dim, at their mean
    hd = (nope + rope + v) // 2
    if np.ndim(t) == 0:
        out = out + at.prefill_attn_batch_time_s(((int(s), 0),) * int(b), int(h), int(h), int(hd),
                                                 gpu, e2, 2.0)
    else:
        out = out + at.prefill_attn_time_s_v(b, s, 0, h, h, hd, 0, gpu, e2, 2.0)
    # K assembled from its nope and rope parts: written once, read once
    out = out + _elem(t * h * (nope + rope) * 4.0, gpu, eff)
    if np.any(absorb):
        out = _sel(absorb, _absorbed(b, s, s, h, hid, ql, kl, nope, rope, v, gpu, eff, block, kvb), out)
    return _sel(t > 0, out, 0.0)


def _arrays(*xs):
    return np.broadcast_arrays(*(np.atleast_1d(np.asarray(x, dtype=np.int64)) for x in xs))


_SCALAR_TYPES = (int, float, str, bool, np.integer, np.floating)


def _scalars(*xs) -> bool:
    return all(isinstance(x, _SCALAR_TYPES) or np.ndim(x) == 0 for x in xs)


def _block1(precision) -> bool:
    if precision not in ("bf16", "fp8_block"):
        raise ServePlanError(f"MLA projection precision {precision!r}; expected bf16 or fp8_block")
    return precision == "fp8_block"


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
    dims = (num_heads, hidden, q_lora_rank, kv_lora_rank, qk_nope_dim, qk_rope_dim, v_head_dim)
    if _scalars(batch, prompt_len, *dims, precision, kv_dtype, absorbed):
        b, s = int(batch), int(prompt_len)
        absorb = s <= ABSORB_MAX_CHUNK if absorbed is None else bool(absorbed)
        return float(_prefill(b, s, *map(int, dims), gpu, eff, _block1(precision),
                              _kv_bytes(kv_dtype), absorb))
    b, s, h, hid, ql, kl, nope, rope, v = _arrays(batch, prompt_len, *dims)
    block = _block(precision, b.shape)
    kvb = np.broadcast_to(_kv_bytes(kv_dtype), b.shape)
    absorb = s <= ABSORB_MAX_CHUNK if absorbed is None else np.broadcast_to(np.asarray(absorbed), b.shape)
    return _prefill(b, s, h, hid, ql, kl, nope, rope, v, gpu, eff, block, kvb, absorb)


def mla_decode_time_s(*, batch, context_len, num_heads, gpu: HardwareSpec, eff: Efficiencies,
                      hidden=7168, q_lora_rank=1536, kv_lora_rank=512, qk_nope_dim=128,
                      qk_rope_dim=64, v_head_dim=128, precision="bf16", kv_dtype="bf16",
                      q_tokens=1):
    """Seconds of one MLA module for `batch` sequences of `context_len` cached tokens, each
    adding `q_tokens` (1; more for a speculative verify)."""
    dims = (num_heads, hidden, q_lora_rank, kv_lora_rank, qk_nope_dim, qk_rope_dim, v_head_dim)
    if _scalars(batch, context_len, q_tokens, *dims, precision, kv_dtype):
        return mla_decode_1(int(batch), int(context_len), int(q_tokens), *map(int, dims), gpu, eff,
                            _block1(precision), mla_kv_elem_bytes(kv_dtype))
    b, c, q, h, hid, ql, kl, nope, rope, v = _arrays(batch, context_len, q_tokens, *dims)
    block = _block(precision, b.shape)
    kvb = np.broadcast_to(_kv_bytes(kv_dtype), b.shape)
    out = _absorbed(b, q, c + q, h, hid, ql, kl, nope, rope, v, gpu, eff, block, kvb)
    return np.where(b > 0, out, 0.0)
