"""ServePlan's Triton kernels: the operators of one transformer iteration, each with a launch
wrapper and FLOP/byte formulas, used by `serveplan validate` to time a plan's shapes.

    module        wrapper
    gemm          matmul                  C = A @ B (bf16/fp16/fp32; fp8 e4m3, per-tensor scales)
    rmsnorm       rms_norm                RMSNorm with weight and eps
    rope          apply_rope              rotate-half rotary embedding of q and k
    swiglu        silu_and_mul            silu(gate) * up (SwiGLU)
    flash_attn    flash_attn_prefill      causal varlen flash attention, chunked prefill, GQA
    paged_decode  paged_decode_attention  decode over a paged KV cache, GQA, optional KV budget
    paged_decode  paged_attention         the same for Lq new tokens per sequence
    spec_verify   spec_verify_attention   k + 1 verify tokens per sequence over a paged cache
    fused_moe     fused_moe               top-k routed experts, a grouped GEMM (bf16; block fp8)

The wrappers are named apart from their modules on purpose: `validate.kernels.gemm` is always
the module (importing a submodule binds its name on the package), `validate.kernels.matmul`
the function. Each module also has `flops(...)` and `bytes_moved(...)`, e.g.
`from validate.kernels.gemm import flops`.

The kernels need torch and triton (`pip install serveplan[validate]`). They are imported on
first use, so `import validate.kernels` itself is cheap and works without them; touching a
kernel without them raises an ImportError that says what to install. `pick_device` and
`interpreting` work without triton.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ._device import interpreting, pick_device

if TYPE_CHECKING:
    from .flash_attn import flash_attn_prefill
    from .fused_moe import fused_moe
    from .gemm import matmul
    from .paged_decode import paged_attention, paged_decode_attention
    from .rmsnorm import rms_norm
    from .rope import apply_rope
    from .spec_verify import spec_verify_attention
    from .swiglu import silu_and_mul

_KERNELS = {  # public name -> module that defines it
    "matmul": "gemm",
    "rms_norm": "rmsnorm",
    "apply_rope": "rope",
    "silu_and_mul": "swiglu",
    "flash_attn_prefill": "flash_attn",
    "paged_attention": "paged_decode",
    "paged_decode_attention": "paged_decode",
    "spec_verify_attention": "spec_verify",
    "fused_moe": "fused_moe",
}

__all__ = [
    "apply_rope",
    "flash_attn_prefill",
    "fused_moe",
    "interpreting",
    "matmul",
    "paged_attention",
    "paged_decode_attention",
    "pick_device",
    "rms_norm",
    "silu_and_mul",
    "spec_verify_attention",
]


def __getattr__(name: str) -> Any:
    if name not in _KERNELS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    try:
        import torch  # noqa: F401
        import triton  # noqa: F401
    except ImportError as exc:
        raise ImportError(
            f"validate.kernels.{name} needs torch and triton ({exc}); "
            "install them with: pip install serveplan[validate]"
        ) from exc
    value = getattr(importlib.import_module(f".{_KERNELS[name]}", __name__), name)
    globals()[name] = value  # later look-ups skip __getattr__
    return value
