"""Mixture-of-experts operators besides the Triton kernel: the torch reference, vLLM's fused
MoE when `import vllm` works, and the routing a measurement uses.

- `torch_fused_moe(...)`: one MoE layer as a loop over the local experts, each a gather of its
  routed tokens and two torch matmuls (block-fp8 weights dequantised first). It is the
  correctness reference of `validate.kernels.fused_experts` and what a CPU run times; the gather
  sizes depend on the routing, so it reads counts on the host and cannot be captured in a
  CUDA graph (on a GPU the engine-class reference is vLLM's kernel, else the Triton one).
- `vllm_fused_experts()`: vLLM's `fused_experts` (its Triton fused MoE, what the engine runs),
  or None without vLLM; checked against torch on its first call by the caller.
- `balanced_topk(T, E, k)`: AIConfigurator's balanced routing (token i picks experts
  i + j * ceil(E / k)), the pattern of the measured MoE tables and of the cost model's
  `moe_routing_stats(routing="balanced")`, so a validate row and the tables mean one thing.
"""

from __future__ import annotations

import importlib

import torch
import torch.nn.functional as F

from validate.kernels.fused_moe import FP8, GROUP, per_token_group_quant


def dequantise_blocks(w: torch.Tensor, scale: torch.Tensor, dtype: torch.dtype,
                      group: int = GROUP) -> torch.Tensor:
    """fp8 [E, N, K] with fp32 [E, cdiv(N, g), cdiv(K, g)] block scales -> dtype [E, N, K]."""
    E, N, K = w.shape
    s = scale.repeat_interleave(group, 1).repeat_interleave(group, 2)[:, :N, :K]
    return (w.float() * s).to(dtype)


def _fp8_round_trip(x: torch.Tensor) -> torch.Tensor:
    """x as the block-fp8 kernel reads it: quantised per token and group of 128, dequantised."""
    q, s = per_token_group_quant(x)
    K = x.shape[1]
    return (q.float() * s.repeat_interleave(GROUP, 1)[:, :K]).to(x.dtype)


def torch_fused_moe(x: torch.Tensor, w1: torch.Tensor, w2: torch.Tensor, topk_weights: torch.Tensor,
                    topk_ids: torch.Tensor, *, w1_scale: torch.Tensor | None = None,
                    w2_scale: torch.Tensor | None = None, gated: bool = True,
                    expert_offset: int = 0, num_experts: int | None = None) -> torch.Tensor:
    """The arguments and result of `validate.kernels.fused_experts`, computed expert by expert
    (fp32 accumulation, the intermediate rounded to x's dtype as the kernel stores it)."""
    del num_experts  # accepted for the same call as the kernel
    fp8 = w1.dtype == FP8
    if fp8:  # W8A8 with block scales: the activations are quantised per group of 128 too
        w1 = dequantise_blocks(w1, w1_scale, x.dtype)
        w2 = dequantise_blocks(w2, w2_scale, x.dtype)
        x = _fp8_round_trip(x)
    T, k = topk_ids.shape
    E = w1.shape[0]
    out = torch.zeros(T, x.shape[1], dtype=torch.float32, device=x.device)
    local = topk_ids.long() - expert_offset
    counts = torch.bincount(local[(local >= 0) & (local < E)].reshape(-1), minlength=E).tolist()
    for e, n in enumerate(counts):
        if n == 0:
            continue
        tok, slot = (local == e).nonzero(as_tuple=True)
        h = (x[tok].float() @ w1[e].float().t()).to(x.dtype)
        if gated:
            i = h.shape[1] // 2
            h = (F.silu(h[:, :i].float()) * h[:, i:].float()).to(x.dtype)
        else:
            h = torch.relu(h).square()
        if fp8:
            h = _fp8_round_trip(h)
        y = h.float() @ w2[e].float().t()
        out.index_add_(0, tok, y * topk_weights[tok, slot].float()[:, None])
    return out.to(x.dtype)


def balanced_topk(tokens: int, num_experts: int, topk: int, device="cpu") -> torch.Tensor:
    """int32 [tokens, topk]: token i picks experts (base_i + j * ceil(E / k)) mod E, base_i = i
    (or i spread over the first stride when there are fewer tokens than the stride), a pick
    that repeats an expert of the token moving on to the next expert it does not hold."""
    stride = -(-num_experts // topk)
    ids = []
    for i in range(tokens):
        base = i if tokens >= stride else (i * stride) // tokens
        mine: list[int] = []
        for j in range(topk):
            e = (base + j * stride) % num_experts
            while e in mine:
                e = (e + 1) % num_experts
            mine.append(e)
        ids.append(mine)
    return torch.tensor(ids, dtype=torch.int32).reshape(tokens, topk).to(device)


def routing_weights(tokens: int, topk: int, gen: torch.Generator, device="cpu") -> torch.Tensor:
    """fp32 [tokens, topk]: softmax-normalised weights of the picked experts (as top-k of a
    softmax router, renormalised)."""
    return torch.softmax(torch.randn(tokens, topk, generator=gen), -1).to(device)


class VllmMoE:
    """vLLM's `fused_experts(hidden, w1, w2, topk_weights, topk_ids, ...)`: bf16 experts, and
    block-fp8 ones through `use_fp8_w8a8=True, block_shape=[128, 128]` with the scales as
    `w1_scale` / `w2_scale` (the keywords of vLLM's releases since 0.6; a release that refuses
    them is dropped by the caller with a message)."""

    def __init__(self, fn):
        self.fn = fn

    def __call__(self, x, w1, w2, topk_weights, topk_ids, *, w1_scale=None, w2_scale=None,
                 gated=True, expert_offset=0, num_experts=None):
        if not gated or expert_offset or (num_experts not in (None, w1.shape[0])):
            raise NotImplementedError("vLLM's fused_experts is called here for gated experts "
                                      "without expert parallelism only")
        kw = {}
        if w1.dtype == FP8:
            kw = {"use_fp8_w8a8": True, "w1_scale": w1_scale, "w2_scale": w2_scale,
                  "block_shape": [GROUP, GROUP]}
        return self.fn(x, w1, w2, topk_weights, topk_ids, **kw)


def vllm_fused_experts() -> VllmMoE | None:
    """vLLM's fused MoE, or None where vLLM does not import."""
    for mod in ("vllm.model_executor.layers.fused_moe.fused_moe",
                "vllm.model_executor.layers.fused_moe"):
        try:
            fn = getattr(importlib.import_module(mod), "fused_experts", None)
        except Exception:  # noqa: BLE001 - not installed, or built for another torch / CUDA
            return None
        if fn is not None:
            return VllmMoE(fn)
    return None
