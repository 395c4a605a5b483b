"""ModelSpec: what the cost model needs of a decoder-only transformer, dense or mixture of experts.

Dense: layers, hidden size, attention heads (query and KV, for GQA), head dim, FFN width (gated
or not), vocabulary, tied embeddings.
Mixture of experts (DeepSeek-V3, Kimi-K2, Qwen3-MoE, gpt-oss, Mixtral): routed experts, top-k,
the width of one expert's FFN, shared experts (always run, beside the routed ones), leading
dense layers (DeepSeek's `first_k_dense_replace`), and the router's scoring.
Multi-head latent attention (MLA, DeepSeek-V2/V3): queries through a low-rank `q_lora_rank`
bottleneck, keys and values through one `kv_lora_rank` latent shared by every head, whose
cache is that latent plus the rope part of the key: `kv_lora_rank + qk_rope_head_dim`
elements per token per layer, not two per head.
Per-layer attention kind: `layer_types` ("sliding" or "full" per layer; empty = all full) with
`sliding_window` tokens, and attention sinks (gpt-oss).
Weight precision per part (`weight_dtypes`, the checkpoint as published): "attn" (attention
projections), "mlp" (dense MLPs and shared experts), "experts" (routed experts), each one of
WEIGHT_DTYPES; embeddings, LM head and router stay bf16. A part not named is bf16.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from costmodel.errors import ServePlanError

_SIZE_LIMITS = {"num_layers": 1024, "hidden_size": 1 << 20, "num_heads": 4096, "num_kv_heads": 4096,
                "head_dim": 4096, "intermediate_size": 1 << 22, "vocab_size": 1 << 24,
                "max_position": 1 << 26}
# bytes per weight element: fp8 per-tensor 1; fp8_block one fp32 scale per 128 x 128 block;
# int4 weight-only one bf16 scale per group of 128; MXFP4 one 8-bit scale per 32 elements
WEIGHT_DTYPE_BYTES = {"bf16": 2.0, "fp8": 1.0, "fp8_block": 1.0 + 4.0 / (128 * 128),
                      "int4": 0.5 + 2.0 / 128, "mxfp4": 0.5 + 1.0 / 32}
WEIGHT_DTYPES = tuple(WEIGHT_DTYPE_BYTES)
WEIGHT_PARTS = ("attn", "mlp", "experts")
ROUTERS = ("softmax", "sigmoid")
LAYER_KINDS = ("full", "sliding")


def kv_dtype_of(kv: str) -> str:
    """The KV-cache dtype a pool's setting runs as (`auto`: bf16, the checkpoints' dtype)."""
    return "bf16" if kv == "auto" else kv


def _int_in(name: str, key: str, v, lo: int, hi: int) -> None:
    if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
        raise ServePlanError(f"model {name!r}: {key}={v!r}; expected an integer in [{lo}, {hi}]")


@dataclass(frozen=True)
class ModelSpec:
    name: str
    num_layers: int
    hidden_size: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate_size: int  # FFN width of the dense MLP (of one expert when moe_intermediate_size is 0)
    vocab_size: int
    tie_embeddings: bool = False
    gated_mlp: bool = True  # SwiGLU: gate+up (2 x I) then down; else up then down
    num_experts: int = 0  # routed experts; 0 = dense
    experts_per_token: int = 0  # top-k
    max_position: int = 8192
    hf_id: str = ""  # the name to pass to vLLM / SGLang
    # --- mixture of experts ---
    moe_intermediate_size: int = 0  # FFN width of one routed expert; 0 = intermediate_size
    num_shared_experts: int = 0  # always-on experts of width shared_intermediate_size
    shared_intermediate_size: int = 0  # width of each shared expert; 0 = the expert width
    first_dense_layers: int = 0  # leading layers with a dense MLP of intermediate_size
    router: str = "softmax"  # expert scoring: softmax (Mixtral, Qwen3, gpt-oss) | sigmoid (DeepSeek-V3)
    # --- multi-head latent attention (kv_lora_rank > 0) ---
    q_lora_rank: int = 0  # 0 = queries projected directly from the hidden state
    kv_lora_rank: int = 0
    qk_rope_head_dim: int = 0
    qk_nope_head_dim: int = 0
    v_head_dim: int = 0
    # --- per-layer attention kind ---
    layer_types: tuple[str, ...] = ()  # "full" | "sliding" per layer; () = all full
    sliding_window: int = 0
    attention_sinks: bool = False
    attn_bias: bool = False  # q/k/v/o projections carry biases (gpt-oss)
    # --- checkpoint precision per part: (("experts", "mxfp4"), ...) ---
    weight_dtypes: tuple[tuple[str, str], ...] = ()

    def __post_init__(self):
        # sizes far past any published model are typos; zero or negative ones divide by zero
        for key, hi in _SIZE_LIMITS.items():
            _int_in(self.name, key, getattr(self, key), 1, hi)
        e, k = self.num_experts, self.experts_per_token
        if (isinstance(e, bool) or not isinstance(e, int) or not 0 <= e <= 4096
                or isinstance(k, bool) or not isinstance(k, int) or not (0 if e == 0 else 1) <= k <= e):
            raise ServePlanError(f"model {self.name!r}: num_experts={e!r}, experts_per_token={k!r}; "
                                 "expected 0 and 0 (dense) or 1 <= experts_per_token <= num_experts <= 4096")
        for key in ("moe_intermediate_size", "shared_intermediate_size", "q_lora_rank",
                    "kv_lora_rank", "qk_rope_head_dim", "qk_nope_head_dim", "v_head_dim",
                    "sliding_window"):
            _int_in(self.name, key, getattr(self, key), 0, 1 << 22)
        _int_in(self.name, "num_shared_experts", self.num_shared_experts, 0, 64)
        _int_in(self.name, "first_dense_layers", self.first_dense_layers, 0,
                self.num_layers if e else 0)
        if self.router not in ROUTERS:
            raise ServePlanError(f"model {self.name!r}: router {self.router!r}; expected one of {', '.join(ROUTERS)}")
        if self.kv_lora_rank and not (self.qk_rope_head_dim and self.qk_nope_head_dim and self.v_head_dim):
            raise ServePlanError(f"model {self.name!r}: MLA (kv_lora_rank={self.kv_lora_rank}) needs "
                                 "qk_rope_head_dim, qk_nope_head_dim and v_head_dim > 0")
        lt = self.layer_types
        if lt and (len(lt) != self.num_layers or set(lt) - set(LAYER_KINDS)):
            raise ServePlanError(f"model {self.name!r}: layer_types must list one of "
                                 f"{', '.join(LAYER_KINDS)} per layer ({self.num_layers}), got {len(lt)}")
        if "sliding" in lt and not self.sliding_window:
            raise ServePlanError(f"model {self.name!r}: sliding layers need sliding_window > 0")
        for part, dt in self.weight_dtypes:
            if part not in WEIGHT_PARTS or dt not in WEIGHT_DTYPES:
                raise ServePlanError(f"model {self.name!r}: weight dtype {part}={dt!r}; parts are "
                                     f"{', '.join(WEIGHT_PARTS)}, dtypes {', '.join(WEIGHT_DTYPES)}")

    # --- kinds ---------------------------------------------------------------------------
    @property
    def is_moe(self) -> bool:
        return self.num_experts > 0

    @property
    def is_mla(self) -> bool:
        return self.kv_lora_rank > 0

    @property
    def expert_ffn(self) -> int:
        """FFN width of one routed expert."""
        return self.moe_intermediate_size or self.intermediate_size

    @property
    def shared_ffn(self) -> int:
        """Total FFN width of the shared experts (0 when none)."""
        return self.num_shared_experts * (self.shared_intermediate_size or self.expert_ffn)

    @property
    def num_moe_layers(self) -> int:
        return self.num_layers - self.first_dense_layers if self.is_moe else 0

    @property
    def num_dense_layers(self) -> int:
        return self.num_layers - self.num_moe_layers

    @property
    def num_sliding_layers(self) -> int:
        return sum(1 for t in self.layer_types if t == "sliding")

    def dtype_of(self, part: str) -> str:
        """The checkpoint's weight dtype of `part` (attn, mlp, experts)."""
        return dict(self.weight_dtypes).get(part, "bf16")

    # --- derived sizes (parameter counts, not bytes) -------------------------------------
    @property
    def q_dim(self) -> int:
        if self.is_mla:
            return self.num_heads * (self.qk_nope_head_dim + self.qk_rope_head_dim)
        return self.num_heads * self.head_dim

    @property
    def kv_dim(self) -> int:
        return self.num_kv_heads * self.head_dim

    @property
    def attn_params_per_layer(self) -> int:
        h = self.hidden_size
        if self.is_mla:
            nh, r = self.num_heads, self.kv_lora_rank
            q = (h * self.q_lora_rank + self.q_lora_rank + self.q_lora_rank * self.q_dim
                 if self.q_lora_rank else h * self.q_dim)
            kv = h * (r + self.qk_rope_head_dim) + r + r * nh * (self.qk_nope_head_dim + self.v_head_dim)
            return q + kv + nh * self.v_head_dim * h
        # q, k, v projections and the output projection (+ their biases, + one sink per head)
        p = h * (self.q_dim + 2 * self.kv_dim) + self.q_dim * h
        if self.attn_bias:
            p += self.q_dim + 2 * self.kv_dim + h
        return p + (self.num_heads if self.attention_sinks else 0)

    def _ffn_params(self, width: int) -> int:
        up = (2 if self.gated_mlp else 1) * width
        return self.hidden_size * up + width * self.hidden_size

    @property
    def mlp_params_per_expert(self) -> int:
        return self._ffn_params(self.expert_ffn)

    @property
    def dense_mlp_params(self) -> int:
        return self._ffn_params(self.intermediate_size)

    @property
    def router_params(self) -> int:
        return self.hidden_size * self.num_experts

    @property
    def mlp_params_per_layer(self) -> int:
        """MLP parameters of one MoE layer (of one dense layer for a dense model)."""
        if not self.is_moe:
            return self.dense_mlp_params
        shared = self._ffn_params(self.shared_ffn) if self.shared_ffn else 0
        return self.num_experts * self.mlp_params_per_expert + shared + self.router_params

    @property
    def embedding_params(self) -> int:
        return self.vocab_size * self.hidden_size * (1 if self.tie_embeddings else 2)

    @property
    def num_params(self) -> int:
        norms = self.num_layers * 2 * self.hidden_size + self.hidden_size
        attn = self.num_layers * self.attn_params_per_layer
        mlp = self.num_dense_layers * self.dense_mlp_params + self.num_moe_layers * (
            self.mlp_params_per_layer if self.is_moe else 0)
        return attn + mlp + self.embedding_params + norms

    @property
    def active_params(self) -> int:
        """Parameters touched per token: MoE layers count only the top-k routed experts
        (embeddings included, as Mistral, Qwen and DeepSeek count; OpenAI's gpt-oss counts
        leave the input embedding out)."""
        inactive = (self.num_experts - self.experts_per_token) * self.mlp_params_per_expert
        return self.num_params - self.num_moe_layers * inactive

    def weight_bytes(self) -> float:
        """Bytes of the checkpoint as published (its per-part dtypes)."""
        L, b = self.num_layers, WEIGHT_DTYPE_BYTES
        experts = self.num_moe_layers * self.num_experts * self.mlp_params_per_expert
        shared = self.num_moe_layers * (self._ffn_params(self.shared_ffn) if self.shared_ffn else 0)
        dense = self.num_dense_layers * self.dense_mlp_params
        rest = self.num_params - L * self.attn_params_per_layer - experts - shared - dense
        return (L * self.attn_params_per_layer * b[self.dtype_of("attn")]
                + experts * b[self.dtype_of("experts")]
                + (shared + dense) * b[self.dtype_of("mlp")] + rest * 2.0)

    # --- KV cache ------------------------------------------------------------------------
    def kv_elems_per_layer(self) -> int:
        """Cache elements one token adds in one layer: K and V per KV head, or MLA's latent."""
        if self.is_mla:
            return self.kv_lora_rank + self.qk_rope_head_dim
        return 2 * self.kv_dim

    @property
    def num_kv_layers(self) -> int:
        """Layers whose cache grows with the context: full-attention ones (a sliding layer keeps
        at most `sliding_window` tokens per sequence, vLLM's hybrid KV cache manager)."""
        return self.num_layers - self.num_sliding_layers

    def kv_elems_per_token(self) -> int:
        """Cache elements one token adds, over all layers whose cache grows with the context."""
        return self.num_kv_layers * self.kv_elems_per_layer()

    def with_layers(self, num_layers: int) -> ModelSpec:
        lt = self.layer_types[:num_layers] if self.layer_types else ()
        return replace(self, num_layers=num_layers, name=f"{self.name}[{num_layers}L]",
                       layer_types=lt, first_dense_layers=min(self.first_dense_layers, num_layers))
