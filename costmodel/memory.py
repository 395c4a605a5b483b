"""Memory plan of one GPU of a replica: weights, activation workspace, KV cache capacity.

Follows how vLLM sizes its KV cache: `gpu_memory_utilization x HBM` is the budget; weights,
the peak activation of a profiling forward at `max_num_batched_tokens`, CUDA-graph and
communicator buffers come off it; what is left is KV cache, cut into blocks of `block_size`
tokens.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from costmodel.errors import DoesNotFitError, ServePlanError
from costmodel.hardware import GiB
from costmodel.model import CostModel
from costmodel.model_spec import WEIGHT_DTYPE_BYTES

# CUDA context, CUDA-graph pools and NCCL / custom all-reduce buffers, measured on vLLM
# deployments as roughly 1-2 GiB per GPU beyond torch's own allocations.
RUNTIME_RESERVED_BYTES = 1.5 * GiB


@dataclass(frozen=True)
class MemoryPlan:
    hbm_bytes: float
    budget_bytes: float  # gpu_memory_utilization x HBM
    weights_bytes: float
    activation_bytes: float
    reserved_bytes: float
    kv_bytes: float
    kv_bytes_per_token: float
    kv_capacity_tokens: int
    block_size: int
    kv_blocks: int

    @property
    def fits(self) -> bool:
        return self.kv_blocks > 0

    def to_dict(self) -> dict:
        return asdict(self)


def _attn_params_per_gpu(cm: CostModel) -> float:
    m, h = cm.model, cm.model.hidden_size
    if m.is_mla:  # q and KV down-projections replicated, the per-head rest split by tp
        down = (h * m.q_lora_rank + m.q_lora_rank if m.q_lora_rank else 0) + h * (m.kv_lora_rank + m.qk_rope_head_dim)
        return down + (m.attn_params_per_layer - down) / cm.tp
    kv_rep = max(1, cm.tp // m.num_kv_heads)  # K/V projections replicated when tp > kv heads
    return (h * (m.q_dim + 2 * m.kv_dim * kv_rep) + m.q_dim * h) / cm.tp


def weights_bytes_per_gpu(cm: CostModel) -> float:
    """Weights on the most loaded GPU: its stage's layers / tp, plus embeddings / tp; in MoE
    layers the routed experts are spread over all tp x dp GPUs of the replica (E / ep experts,
    each split moe_tp ways), shared experts and the router sit with each rank's attention.
    Each part in its own weight dtype."""
    m, b = cm.model, WEIGHT_DTYPE_BYTES
    attn = _attn_params_per_gpu(cm) * b[cm.part_dtype["attn"]]
    if not m.is_moe:
        per_layer = attn + m.mlp_params_per_layer / cm.tp * b[cm.part_dtype["mlp"]] + 2 * m.hidden_size * 2
    else:
        experts = m.num_experts * m.mlp_params_per_expert / (cm.tp * cm.dp) * b[cm.part_dtype["experts"]]
        shared = (m.mlp_params_per_layer - m.num_experts * m.mlp_params_per_expert - m.router_params) / cm.tp
        moe = experts + shared * b[cm.part_dtype["mlp"]] + m.router_params * 2
        dense = m.dense_mlp_params / cm.tp * b[cm.part_dtype["mlp"]]
        frac = m.num_moe_layers / m.num_layers  # the stage's layers, MoE and dense in the model's mix
        per_layer = attn + frac * moe + (1 - frac) * dense + 2 * m.hidden_size * 2
    # embeddings and LM head stay bf16; with pp > 1 they sit on the first / last stage
    emb = m.vocab_size * m.hidden_size * 2 / cm.tp
    n_emb = 1 if (cm.pp > 1 or m.tie_embeddings) else 2
    return cm.layers_per_stage * per_layer + n_emb * emb


def activation_bytes_per_gpu(cm: CostModel, max_num_batched_tokens: int, max_num_seqs: int) -> float:
    """Peak of a profiling forward at max_num_batched_tokens: the widest live tensors of one layer,
    plus fp32 logits of every sequence."""
    m = cm.model
    T = max_num_batched_tokens
    up = 2 if m.gated_mlp else 1
    if m.is_moe:  # the routed tokens on this GPU: the group's T x dp x k over ep, each expert_ffn / moe_tp
        inter = max(m.intermediate_size // cm.tp if m.num_dense_layers else 0,
                    T * cm.dp * m.experts_per_token / cm.ep * (m.expert_ffn // cm.moe_tp) / T)
    else:
        inter = m.intermediate_size // cm.tp
    widest = T * (2 * m.hidden_size + (up + 1) * inter) * 2
    qkv = T * (cm.q_heads + 2 * cm.kv_heads) * m.head_dim * 2
    logits = max_num_seqs * m.vocab_size / cm.tp * 4 * 2
    return widest + qkv + logits


def memory_plan(cm: CostModel, gpu_memory_utilization: float = 0.9,
                max_num_batched_tokens: int = 8192, max_num_seqs: int = 256,
                block_size: int = 16, static_fraction: bool = False) -> MemoryPlan:
    """Weights, activations and the KV cache of one GPU. `gpu_memory_utilization` is vLLM's
    (weights + activations + runtime + KV), or with `static_fraction` SGLang's
    `mem_fraction_static` (weights + KV alone: its default already left the rest out)."""
    if not 0.05 <= gpu_memory_utilization <= 1.0:
        raise ServePlanError(
            f"gpu_memory_utilization={gpu_memory_utilization}; expected a fraction in [0.05, 1.0]"
        )
    if block_size not in (8, 16, 32, 64, 128):
        raise ServePlanError(f"block_size={block_size}; expected one of 8, 16, 32, 64, 128")
    hbm = cm.gpu.hbm_bytes
    budget = gpu_memory_utilization * hbm
    w = weights_bytes_per_gpu(cm)
    act = activation_bytes_per_gpu(cm, max_num_batched_tokens, max_num_seqs)
    if static_fraction:
        act, reserved = 0.0, 0.0
    else:
        reserved = RUNTIME_RESERVED_BYTES
    # what runs showed the engine to hold beyond this accounting (a calibrated parameter, 0 else)
    reserved += cm.eff.mem_reserved_gib * GiB
    kv = budget - w - act - reserved
    per_tok = cm.kv_bytes_per_token()
    blocks = int(kv // (per_tok * block_size)) if kv > 0 else 0
    return MemoryPlan(
        hbm_bytes=hbm, budget_bytes=budget, weights_bytes=w, activation_bytes=act,
        reserved_bytes=reserved, kv_bytes=max(kv, 0.0), kv_bytes_per_token=per_tok,
        kv_capacity_tokens=blocks * block_size, block_size=block_size, kv_blocks=blocks,
    )


def require_fit(plan: MemoryPlan, cm: CostModel, min_kv_tokens: int = 1) -> MemoryPlan:
    """Raise DoesNotFitError saying how much is needed and how much there is."""
    if plan.kv_capacity_tokens >= min_kv_tokens:
        return plan
    need = plan.weights_bytes + plan.activation_bytes + plan.reserved_bytes + min_kv_tokens * plan.kv_bytes_per_token
    par = f"tp={cm.tp}, pp={cm.pp}" + (f", ep={cm.ep}, dp={cm.dp}" if cm.model.is_moe else "")
    raise DoesNotFitError(
        f"{cm.model.name} ({cm.precision}) on {cm.num_gpus} x {cm.gpu.name} ({par}) "
        f"does not fit: needs {need / GiB:.1f} GiB per GPU (weights {plan.weights_bytes / GiB:.1f}, "
        f"activations {plan.activation_bytes / GiB:.1f}, runtime {plan.reserved_bytes / GiB:.1f}, "
        f"KV for {min_kv_tokens} tokens {min_kv_tokens * plan.kv_bytes_per_token / GiB:.2f}) but has "
        f"{plan.budget_bytes / GiB:.1f} GiB ({plan.budget_bytes / plan.hbm_bytes:.2f} of {plan.hbm_bytes / GiB:.0f} GiB)",
        need, plan.budget_bytes,
    )
