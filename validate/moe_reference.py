"""Mixture-of-experts operators besides the Triton kernel: the torch reference, vLLM's fused
MoE when `import vllm` works, and the routing a measurement uses.

- `torch_fused_moe(...)`: one MoE layer as a loop over the local experts, each a gather of its
  routed tokens and two torch matmuls (block-fp8 weights dequantised first). It is the
  correctness reference of `validate.kernels.fused_experts` and what a CPU run times; the gather
  sizes depend on the routing, so it reads counts on the host and cannot be captured in a
  CUDA graph (on a GPU the engine-class reference is vLLM's kernel, else the Triton one).
- `vllm_fused_experts()`: vLLM's `fused_experts` (its Triton fused MoE, what the engine runs),
  or None without vLLM; checked against torch on its first call by the caller.
- `python -m validate.moe_reference` on a CUDA GPU: the Triton fused MoE against vLLM's, in
  CUDA graphs (`_bench`).
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


# --- benchmark ----------------------------------------------------------------------------------


def _bench() -> None:
    """Triton fused MoE against vLLM's `fused_experts` (when it imports), in CUDA graphs, on one
    GPU's share of Qwen3-30B-A3B (128 experts, top-8, hidden 2048, FFN 768, bf16) and of
    DeepSeek-V3 at EP 8 (32 of 256 experts, top-8, hidden 7168, FFN 2048, block fp8)."""
    from functools import partial

    from validate.kernels._device import fp8_supported, interpreting

    if not torch.cuda.is_available() or interpreting():
        print("fused_moe: no CUDA GPU (or TRITON_INTERPRET is set); nothing to benchmark")
        return
    from validate.kernels.fused_moe import flops, fused_experts, quantise_block_weights
    from validate.timing import Timer

    dev = "cuda"
    timer = Timer("cuda")
    vllm = vllm_fused_experts()
    print(f"{'layer':>22} {'T':>6} {'triton us':>10} {'vllm us':>10} {'TFLOP/s':>8}")
    for name, e_all, ep, k, h, i, fp8 in (("qwen3-30b-a3b bf16", 128, 1, 8, 2048, 768, False),
                                          ("deepseek-v3 ep8 fp8", 256, 8, 8, 7168, 2048, True)):
        if fp8 and not fp8_supported(torch.device(dev)):
            continue
        e = e_all // ep
        w1 = torch.randn(e, 2 * i, h, device=dev) * h ** -0.5
        w2 = torch.randn(e, h, i, device=dev) * i ** -0.5
        kw: dict = {}
        if fp8:
            (w1, s1), (w2, s2) = quantise_block_weights(w1), quantise_block_weights(w2)
            kw = {"w1_scale": s1, "w2_scale": s2}
        else:
            w1, w2 = w1.to(torch.bfloat16), w2.to(torch.bfloat16)
        for t in (1, 16, 256, 4096):
            x = torch.randn(t, h, device=dev, dtype=torch.bfloat16)
            ids = balanced_topk(t, e_all, k, dev)
            tw = torch.full((t, k), 1.0 / k, device=dev)
            args = (x, w1, w2, tw, ids)
            us = timer.median_s([partial(fused_experts, *args, num_experts=e_all, **kw)]) * 1e6
            ref = float("nan")
            if vllm is not None and ep == 1:
                ref = timer.median_s([partial(vllm, *args, **kw)]) * 1e6
            rows = t * k / ep
            print(f"{name:>22} {t:6d} {us:10.1f} {ref:10.1f} {flops(int(rows), h, i) / us * 1e-6:8.1f}")


if __name__ == "__main__":
    _bench()
