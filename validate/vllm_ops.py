"""vLLM's own operators, where `import vllm` works on the measuring machine.

The engine a plan launches runs vLLM's CUDA ops for RMSNorm, rotary embedding and the SwiGLU
activation; when vLLM is installed `serveplan validate` times those as the references of the
`input_layernorm`, `rope` and `mlp_act` rows (`validate.reference.EngineOps`). `load()` returns
None without vLLM, and each op is checked against torch on its first call: an op that raises
or disagrees (an API that changed between vLLM releases) is dropped with a message, and the
Triton kernel is timed in its place.

The calls follow `vllm._custom_ops`: `rms_norm(out, input, weight, epsilon)`,
`rotary_embedding(positions, query, key, head_size, cos_sin_cache, is_neox)` (in place, cache
[max_position, head_size] = cos | sin halves), and `silu_and_mul(out, input)` (from
`vllm._custom_ops` where it is there, else `torch.ops._C.silu_and_mul`).
"""

from __future__ import annotations

import importlib

import torch

CHECK_TOL = 5e-2  # bf16 outputs: relative to the largest magnitude


class VllmOps:
    def __init__(self, ops, silu_and_mul=None):
        self._ops = ops
        self._silu = silu_and_mul or getattr(ops, "silu_and_mul", None)
        self._cos_sin: dict[tuple, torch.Tensor] = {}
        self.messages: list[str] = []
        self.available = {"rms_norm": hasattr(ops, "rms_norm"),
                          "rope": hasattr(ops, "rotary_embedding"),
                          "act": self._silu is not None}
        self._checked: set[str] = set()

    def has(self, op: str) -> bool:
        return self.available.get(op, False)

    def _check(self, op: str, got, want) -> bool:
        """First call of `op`: compare with torch; drop the op when it fails."""
        if op in self._checked:
            return True
        self._checked.add(op)
        got, want = [g.float() for g in got], [w.float() for w in want]
        err = max(float((g - w).abs().max()) for g, w in zip(got, want, strict=True))
        scale = max(float(w.abs().max()) for w in want)
        if err > CHECK_TOL * max(scale, 1e-6):
            self.drop(op, f"differs from torch by {err:.3g} (of {scale:.3g})")
            return False
        return True

    def drop(self, op: str, why: str) -> None:
        self.available[op] = False
        self.messages.append(f"vLLM's {op} op {why}: the Triton kernel is timed instead")

    def rms_norm(self, x: torch.Tensor, w: torch.Tensor, eps: float, ref) -> torch.Tensor:
        out = torch.empty_like(x)
        self._ops.rms_norm(out, x.contiguous(), w, eps)
        if "rms_norm" not in self._checked and not self._check("rms_norm", [out], [ref(x, w, eps)]):
            return ref(x, w, eps)
        return out

    def act(self, x: torch.Tensor, ref) -> torch.Tensor:
        out = torch.empty((x.shape[0], x.shape[1] // 2), dtype=x.dtype, device=x.device)
        self._silu(out, x)
        if "act" not in self._checked and not self._check("act", [out], [ref(x)]):
            return ref(x)
        return out

    def _cache(self, head_dim: int, theta: float, max_pos: int, like: torch.Tensor) -> torch.Tensor:
        """[max_pos, D] cos | sin, built once on the device (vLLM's cos_sin_cache)."""
        max_pos = 1 << max(12, (max_pos - 1).bit_length())
        key = (head_dim, float(theta), max_pos, like.device, like.dtype)
        c = self._cos_sin.get(key)
        if c is None:
            j = torch.arange(0, head_dim // 2, dtype=torch.float64, device=like.device)
            inv = 1.0 / theta ** (j * 2.0 / head_dim)
            ang = torch.arange(max_pos, dtype=torch.float64, device=like.device)[:, None] * inv[None, :]
            c = self._cos_sin[key] = torch.cat([ang.cos(), ang.sin()], -1).to(like.dtype)
        return c

    def rope(self, q, k, positions, theta: float, max_pos: int, ref):
        """In place on q and k (vLLM's op rotates its inputs); returns them."""
        cache = self._cache(q.shape[-1], theta, max_pos, q)
        want = ref(q, k, positions, theta) if "rope" not in self._checked else None
        self._ops.rotary_embedding(positions, q, k, q.shape[-1], cache, True)
        if want is not None and not self._check("rope", [q, k], list(want)):
            return want
        return q, k


def load() -> VllmOps | None:
    """vLLM's ops, or None when vLLM does not import here."""
    try:
        ops = importlib.import_module("vllm._custom_ops")
    except Exception:  # noqa: BLE001 - not installed, or built for another torch / CUDA
        return None
    silu = getattr(ops, "silu_and_mul", None)
    if silu is None:
        try:
            silu = torch.ops._C.silu_and_mul
        except (AttributeError, RuntimeError):
            silu = None
    return VllmOps(ops, silu)
