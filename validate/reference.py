"""The engine-class operators: what the plan's engine runs for each operator, where this machine
has it, and the Triton kernel where it has nothing better.

A calibration must predict the engine the plan launches, not ServePlan's own kernels, so
`serveplan validate` times each operator twice (`measure.py`): with the Triton kernels
(`TritonOps`) and with `EngineOps`:

    operator                      reference (engine class)                       else
    GEMMs (bf16)                  torch.matmul: cuBLAS / cuBLASLt
    GEMMs (W8A8 fp8)              torch._scaled_mm (cuBLASLt fp8)                Triton
    prefill attention, no prefix  torch SDPA (FlashAttention, GQA native)        Triton
    RMSNorm                       vLLM's rms_norm, else torch rms_norm
    RoPE, SwiGLU                  vLLM's ops when `import vllm` works            Triton
    chunked prefill over a prefix,
    paged decode (KV budget,
    fp8 KV), spec verify                                                         Triton

Residual add and the embedding gather are torch in both sets. Without vLLM, torch's
`rms_norm` stands in for vLLM's fused kernel; it may be slower than that (4.4 us against the
fused Triton kernel's 1.8 us in CUDA graphs on an H200 at 6 tokens, the first H200 run's
micro.txt), about 2 x 2.6 us per layer of pessimism in a decode step: the report shows both. `kernel_of(op)` names what runs
for a measured row, e.g. `torch:matmul` or `triton:paged_decode_attention`; a reference that
fails on this machine (an fp8 GEMM cuBLASLt refuses, a vLLM op that disagrees with torch) is
dropped with a message and its Triton kernel timed instead. EngineOps reads the Triton paged
KV layout, so one ModelRunner serves both sets.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from validate.ops import FP8_MAX, PrefillLayout, TorchOps, TritonOps

FP8 = torch.float8_e4m3fn
MAX_POSITIONS = 1 << 17  # RoPE cache rows for vLLM's op (positions of a validate run stay below)

# measured row -> the EngineOps method that runs it
ROW_OPS = {"qkv_proj": "gemm", "o_proj": "gemm", "mlp_up_proj": "gemm", "mlp_down_proj": "gemm",
           "lm_head": "gemm", "input_layernorm": "rms_norm", "rope": "rope", "mlp_act": "act",
           "attn_prefill": "prefill_attention", "attn_decode": "decode_attention"}


class EngineOps(TritonOps):
    """The operators as the engine runs them (module doc); Triton where there is no reference."""

    name = "engine"

    def __init__(self, fp8: bool = False, kv_fp8: bool = False, vllm="auto"):
        super().__init__(fp8, kv_fp8)
        if vllm == "auto":
            from validate import vllm_ops

            vllm = vllm_ops.load()
        self.vllm = vllm
        self.messages: list[str] = []
        self._scaled_mm_ok = hasattr(torch, "_scaled_mm")
        self._col_major: dict[int, torch.Tensor] = {}
        self._ones: dict[torch.device, torch.Tensor] = {}
        self._prefix_chunks = False  # set per prefill call: a chunk over a cached prefix

    # --- what runs ---------------------------------------------------------------------------
    def kernel_of(self, op: str, *, prefix: bool = False, verify: bool = False) -> str:
        """`impl:kernel` of a measured row's operator (`op` a native row name)."""
        method = ROW_OPS.get(op)
        if method == "gemm":
            if self.fp8 and op != "lm_head":  # W8A8 projections; the LM head stays bf16
                return "torch:scaled_mm" if self._scaled_mm_ok else "triton:matmul"
            return "torch:matmul"
        if method == "rms_norm":
            return "vllm:rms_norm" if self._vllm("rms_norm") else "torch:rms_norm"
        if method == "rope":
            return "vllm:rotary_embedding" if self._vllm("rope") else "triton:apply_rope"
        if method == "act":
            return "vllm:silu_and_mul" if self._vllm("act") else "triton:silu_and_mul"
        if method == "prefill_attention" and not prefix and not verify:
            return "torch:sdpa"
        if verify:
            return "triton:spec_verify_attention"
        if method == "prefill_attention":
            return "triton:flash_attn_prefill"
        if method == "decode_attention":
            return "triton:paged_decode_attention"
        return f"torch:{op}"

    def has_reference(self, op: str, **kw) -> bool:
        return not self.kernel_of(op, **kw).startswith("triton:")

    def _vllm(self, op: str) -> bool:
        return self.vllm is not None and self.vllm.has(op)

    def all_messages(self) -> list[str]:
        return self.messages + (self.vllm.messages if self.vllm is not None else [])

    # --- operators ---------------------------------------------------------------------------
    def gemm(self, a: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        if w.dtype != FP8:
            return a @ w  # cuBLAS (cuBLASLt picks the kernel, split-K included)
        if not self._scaled_mm_ok:
            return super().gemm(a, w)
        s = (a.abs().amax().float().clamp(min=1e-6) / FP8_MAX).reshape(())
        aq = (a.float() / s).to(FP8)
        try:
            return torch._scaled_mm(aq, self._cm(w), scale_a=s, scale_b=self._one(a.device),
                                    out_dtype=torch.bfloat16)
        except (RuntimeError, TypeError) as e:  # shapes or a build cuBLASLt refuses
            self._scaled_mm_ok = False
            self.messages.append(f"torch._scaled_mm refused a {tuple(a.shape)} x {tuple(w.shape)} "
                                 f"fp8 GEMM ({str(e).splitlines()[0][:120]}): fp8 GEMMs are timed "
                                 "with the Triton kernel")
            return super().gemm(a, w)

    def _cm(self, w: torch.Tensor) -> torch.Tensor:
        """w [K, N] laid out column-major, as cuBLASLt's fp8 GEMM takes its second operand (the
        runner keeps fp8 weights so); otherwise a copy made once per weight, on the first,
        untimed call."""
        if w.stride(0) == 1:
            return w
        t = self._col_major.get(w.data_ptr())
        if t is None:
            t = self._col_major[w.data_ptr()] = w.t().contiguous().t()
        return t

    def _one(self, device: torch.device) -> torch.Tensor:
        t = self._ones.get(device)
        if t is None:
            t = self._ones[device] = torch.ones((), dtype=torch.float32, device=device)
        return t

    def rms_norm(self, x, w, eps: float = 1e-6):
        if self._vllm("rms_norm"):
            return self.vllm.rms_norm(x, w, eps, TorchOps.rms_norm.__get__(self))
        return F.rms_norm(x, (x.shape[-1],), w, eps)

    def rope(self, q, k, positions, theta: float = 10000.0):
        if self._vllm("rope"):
            return self.vllm.rope(q, k, positions, theta, MAX_POSITIONS, TorchOps.rope.__get__(self))
        return super().rope(q, k, positions, theta)

    def act(self, x, gated: bool = True):
        if gated and self._vllm("act"):
            return self.vllm.act(x, lambda t: TorchOps.act(self, t, True))
        return super().act(x, gated)

    def prefill_attention(self, q, k, v, lay: PrefillLayout):
        """torch SDPA for prompts with no cached prefix (FlashAttention, causal, GQA); a chunk
        over a prefix takes the Triton varlen kernel (SDPA has no bottom-right causal flash
        path for it)."""
        if all(p == 0 for _, p in lay.chunks):
            return TorchOps.prefill_attention(self, q, k, v, lay)
        return super().prefill_attention(q, k, v, lay)


BACKENDS = ("torch", "triton", "engine")


def make_ops(backend: str, fp8: bool = False, kv_fp8: bool = False) -> TorchOps:
    """torch (the CPU's timed operators and the check's reference), triton (ServePlan's
    kernels) or engine (`EngineOps`: the engine-class operators)."""
    if backend == "torch":
        return TorchOps(fp8, kv_fp8)
    if backend == "triton":
        return TritonOps(fp8, kv_fp8)
    if backend == "engine":
        return EngineOps(fp8, kv_fp8)
    raise ValueError(f"backend {backend!r}; expected one of {', '.join(BACKENDS)}")
