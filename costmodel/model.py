"""CostModel: the time of one engine iteration, per operator, for a model on a GPU under TP/PP.

Iteration time = per-layer operators x layers (projections, attention over each sequence's
context, norms, RoPE, activation, 2 TP all-reduces) + once-per-iteration operators (embedding,
final norm, LM head, logits gather, sampling) + PP stage sends + host overhead.

The dense operators depend only on the number of tokens in the batch (and of sequences that need
logits), so their time is cached per token count: the simulator's hot loop pays a dict lookup
plus a few multiply-adds for attention (`step_time_s`). `step(batch)` gives the same total with a
per-operator breakdown.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from costmodel import attention as at
from costmodel import roofline as rl
from costmodel.arch_defaults import default_efficiencies
from costmodel.batch import Batch
from costmodel.efficiencies import Efficiencies
from costmodel.errors import ServePlanError
from costmodel.hardware import HardwareSpec, load_gpu
from costmodel.model_spec import WEIGHT_DTYPE_BYTES, WEIGHT_PARTS, kv_dtype_of
from costmodel.moe_layer import MoELayers, grid_memo
from costmodel.specs import ModelSpec, load_model

# weight precision of every part, or "auto": each part as the checkpoint publishes it
# (ModelSpec.weight_dtypes: block-fp8 DeepSeek, MXFP4 gpt-oss experts)
PRECISIONS = ("bf16", "fp8", "int4", "fp8_block", "auto")
KV_DTYPES = ("auto", "bf16", "fp8", "int4")
# bytes per weight element; int4 weight-only carries one bf16 scale per group of 128
WEIGHT_BYTES = {k: WEIGHT_DTYPE_BYTES[k] for k in ("bf16", "fp8", "int4", "fp8_block")}
KV_BYTES = {"bf16": 2.0, "fp8": 1.0, "int4": 0.5 + 2.0 / 64}
_LOGIT_OPS = ("lm_head", "logits_gather", "sampler")  # ops whose cost depends on n_logits only
_ONCE_OPS = ("embedding", "final_norm", *_LOGIT_OPS, "pp_send", "host_overhead")
MOE_OPS = ("moe_router", "moe_dispatch", "moe_experts", "moe_combine", "shared_experts")


@dataclass(frozen=True)
class OpCost:
    name: str
    time_s: float  # over all layers of the model (per GPU of one stage group)
    flops: float
    bytes: float
    comm_bytes: float = 0.0
    count: int = 1  # how many times it runs in one iteration


@dataclass(frozen=True)
class StepBreakdown:
    step_time_s: float  # one batch through every stage (its latency)
    stage_time_s: float  # slowest PP stage: the interval between micro-batches
    ops: tuple[OpCost, ...] = field(default_factory=tuple)
    num_tokens: int = 0
    num_seqs: int = 0

    def to_dict(self) -> dict:
        return {
            "step_time_s": self.step_time_s,
            "stage_time_s": self.stage_time_s,
            "num_tokens": self.num_tokens,
            "num_seqs": self.num_seqs,
            "ops": [
                {"name": o.name, "time_s": o.time_s, "count": o.count, "flops": o.flops,
                 "bytes": o.bytes, "comm_bytes": o.comm_bytes}
                for o in self.ops
            ],
        }


def check_parallelism(model: ModelSpec, gpu: HardwareSpec, tp: int, pp: int, ep: int = 1,
                      dp: int = 1) -> None:
    if not isinstance(tp, int) or tp < 1 or tp & (tp - 1):
        raise ServePlanError(f"tp={tp!r}; expected a power of two >= 1")
    for key, v in (("ep", ep), ("dp", dp)):
        if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= 1024:
            raise ServePlanError(f"{key}={v!r}; expected an integer in [1, 1024] (1 = none)")
    if (ep > 1 or dp > 1) and not model.is_moe:
        raise ServePlanError(f"ep={ep}, dp={dp}: expert and attention data parallelism are for "
                             f"mixture-of-experts models; {model.name} is dense (use replicas)")
    if ep > 1 and model.num_experts % ep:
        raise ServePlanError(f"ep={ep} does not divide {model.name}'s {model.num_experts} experts; "
                             f"expected a divisor of {model.num_experts}")
    if (tp * dp) % ep:
        raise ServePlanError(f"ep={ep} does not divide tp x dp = {tp * dp} GPUs; the expert group "
                             "spans whole GPUs of the replica")
    if not isinstance(pp, int) or pp < 1:
        raise ServePlanError(f"pp={pp!r}; expected an integer >= 1")
    if model.num_heads % tp:
        raise ServePlanError(
            f"tp={tp} does not divide {model.name}'s {model.num_heads} attention heads"
        )
    if pp > model.num_layers:
        raise ServePlanError(f"pp={pp} exceeds {model.name}'s {model.num_layers} layers")
    if tp > gpu.gpus_per_node:
        raise ServePlanError(
            f"tp={tp} exceeds the {gpu.gpus_per_node} GPUs of a {gpu.name} node; "
            "tensor parallelism is kept inside a node"
        )


class CostModel(MoELayers):
    """Step time and memory for one replica (tp x pp GPUs of one type; MoE: dp attention ranks
    of tp GPUs each, experts over ep groups of those tp x dp GPUs, costmodel/moe_layer.py)."""

    def __init__(self, model: ModelSpec | str, gpu: HardwareSpec | str, tp: int = 1, pp: int = 1,
                 precision: str = "bf16", kv_dtype: str = "auto", calibration=None,
                 expert_parallel: bool = False, host_overlap: bool = False, ep: int = 1,
                 dp: int = 1):
        self.model = load_model(model)
        self.gpu = load_gpu(gpu)
        # the engine prepares the next iteration while the GPU runs this one (SGLang's overlap
        # scheduler, vLLM's --async-scheduling): an iteration takes the longer of the two
        self.host_overlap = bool(host_overlap)
        if expert_parallel and ep == 1 and self.model.is_moe:  # the older flag: EP over the TP group
            ep = tp * dp
        check_parallelism(self.model, self.gpu, tp, pp, ep, dp)
        if precision not in PRECISIONS:
            raise ServePlanError(f"precision {precision!r}; expected one of {', '.join(PRECISIONS)}")
        if kv_dtype not in KV_DTYPES:
            raise ServePlanError(f"kv_dtype {kv_dtype!r}; expected one of {', '.join(KV_DTYPES)}")
        self.tp, self.pp = tp, pp
        self.precision = precision
        self.kv_dtype = kv_dtype_of(kv_dtype)
        self.ep, self.dp = ep, dp
        self.moe_tp = tp * dp // ep  # each expert's FFN is split this many ways
        self.expert_parallel = ep > 1
        self.part_dtype = {p: (self.model.dtype_of(p) if precision == "auto" else precision)
                           for p in WEIGHT_PARTS}
        self.calibration = calibration
        self.eff: Efficiencies = (
            calibration.efficiencies_for(self.gpu.name) if calibration is not None
            else default_efficiencies(self.gpu)
        )
        self._tables = calibration.tables_for(self.gpu.name) if calibration is not None else None
        m = self.model
        self.q_heads = m.num_heads // tp
        self.kv_heads = max(1, m.num_kv_heads // tp)  # KV heads are replicated when tp > kv heads
        self.w_bytes = WEIGHT_DTYPE_BYTES[self.part_dtype["attn"]]
        self.kv_elem_bytes = KV_BYTES[self.kv_dtype]
        self.peak = self.gpu.peak_flops(precision)
        self.fp8 = precision == "fp8" and self.gpu.has_fp8  # W8A8 on FP8 tensor cores
        self.act_bytes = 1.0 if self.fp8 else 2.0
        self.layers_per_stage = math.ceil(m.num_layers / pp)
        self._dense_cache: dict[tuple[int, int], tuple[float, float]] = {}
        self._layer_cache: dict[int, float] = {}  # T -> all-layer time of per-layer ops
        self._tok_cache: dict[int, float] = {}  # T -> embedding, final norm, PP sends
        self._logit_cache: dict[int, float] = {}  # n_logits -> LM head, gather, sampler
        self._comm_cache: dict[tuple[int, int], float] = {}  # (T, n_logits) -> collectives
        self._mla_proj_cache: dict = {}  # T (and kv_b / absorb keys) -> MLA GEMM times of one layer
        self._mla_dec_cache: dict = {}  # (decodes, context, query tokens) -> MLA decode time
        self._gemm_memo: dict[tuple[int, int, int, str], float] = {}  # _dtype_gemm results
        self._grid_memo = grid_memo(self.gpu, self.eff)  # shared: costmodel/moe_layer.py
        self._moe_cache: dict[tuple[int, int], tuple[float, float]] = {}  # (T rank, T all) -> (MoE ops, their collectives), all layers

    # --- sizes -------------------------------------------------------------------------------
    @property
    def num_gpus(self) -> int:
        return self.tp * self.pp * self.dp

    def kv_bytes_per_token(self) -> float:
        """KV bytes one token occupies on one GPU (its stage's layers, its TP share of heads;
        MLA's latent is whole on every GPU of the TP group; sliding-window layers hold at most
        the window per sequence and are not counted)."""
        m = self.model
        if m.is_mla:
            return math.ceil(m.num_kv_layers / self.pp) * m.kv_elems_per_layer() * self.kv_elem_bytes
        layers = self.layers_per_stage if not m.num_sliding_layers else math.ceil(m.num_kv_layers / self.pp)
        return 2 * layers * self.kv_heads * m.head_dim * self.kv_elem_bytes

    # --- operator timing ---------------------------------------------------------------------
    def _gemm(self, name: str, m: int, n: int, k: int) -> float:
        t = rl.gemm_time_s(m, n, k, self.gpu, self.eff, self.peak, self.w_bytes,
                           self.act_bytes, self.fp8)
        if self._tables is not None:  # measured-table correction (costmodel.tables)
            t *= self._tables.gemm_factor(self.precision, m, n, k)
        return t

    def _allreduce(self, msg_bytes: float) -> float:
        if self._tables is not None:
            t = self._tables.allreduce_time_s(self.tp, msg_bytes)
            if t is not None:
                return t
        return rl.allreduce_time_s(msg_bytes, self.tp, self.gpu, self.eff)

    def _p2p_bw(self) -> float:
        # stages sit on the same node while tp * pp fits one, else they cross the network
        return rl.link_bw_bytes_s(self.gpu, self.tp * self.pp)

    def _dense_ops(self, T: int, n_logits: int) -> list[OpCost]:
        """Operators whose cost depends only on the token count T (per GPU, all layers)."""
        m, e, L = self.model, self.eff, self.model.num_layers
        h, hd, tp = m.hidden_size, m.head_dim, self.tp
        qkv_n = (self.q_heads + 2 * self.kv_heads) * hd
        ops: list[OpCost] = []

        def layer_op(name, t, flops=0.0, bytes_=0.0, comm=0.0, n=L):
            ops.append(OpCost(name, t * n, flops * n, bytes_ * n, comm * n, n))

        norm_bytes = T * h * 2 * 2 + h * 2
        layer_op("input_layernorm", rl.elementwise_time_s(norm_bytes, self.gpu, e, "input_layernorm", h), 0, norm_bytes)
        if not m.is_mla:  # MLA's projections belong to its attention module (_mla_time)
            layer_op("qkv_proj", self._part_gemm("qkv_proj", T, qkv_n, h, "attn"), 2 * T * qkv_n * h,
                     qkv_n * h * self.w_bytes + T * (h + qkv_n) * 2)
            rope_bytes = T * (self.q_heads + self.kv_heads) * hd * 2 * 2
            layer_op("rope", rl.elementwise_time_s(rope_bytes, self.gpu, e, "rope"), 0, rope_bytes)
            o_k = self.q_heads * hd
            layer_op("o_proj", self._part_gemm("o_proj", T, h, o_k, "attn"), 2 * T * h * o_k,
                     o_k * h * self.w_bytes + T * (h + o_k) * 2)
        ar_bytes = T * h * 2
        if tp > 1:
            layer_op("attn_allreduce", self._allreduce(ar_bytes), 0, 0, ar_bytes)
        layer_op("post_attention_layernorm",
                 rl.elementwise_time_s(norm_bytes, self.gpu, e, "post_attention_layernorm", h), 0,
                 norm_bytes)
        up = 2 if m.gated_mlp else 1
        if m.num_dense_layers:
            nd = m.num_dense_layers
            inter = m.intermediate_size // tp
            wb = WEIGHT_DTYPE_BYTES[self.part_dtype["mlp"]]
            layer_op("mlp_up_proj", self._part_gemm("mlp_up", T, up * inter, h, "mlp"), 2 * T * up * inter * h,
                     up * inter * h * wb + T * (h + up * inter) * 2, n=nd)
            act_bytes = T * inter * (up + 1) * 2
            layer_op("mlp_act", rl.elementwise_time_s(act_bytes, self.gpu, e, "mlp_act"), 0, act_bytes, n=nd)
            layer_op("mlp_down_proj", self._part_gemm("mlp_down", T, h, inter, "mlp"), 2 * T * inter * h,
                     inter * h * wb + T * (h + inter) * 2, n=nd)
        if m.is_moe:
            self._moe_layer_ops(T, T * self.dp, lambda *a: layer_op(*a, n=m.num_moe_layers))
        if tp > 1:
            layer_op("mlp_allreduce", self._allreduce(ar_bytes), 0, 0, ar_bytes)
        add_bytes = T * h * 2 * 3
        layer_op("residual_add", rl.elementwise_time_s(add_bytes, self.gpu, e, "residual_add"), 0, add_bytes)

        # once per iteration (first / last stage)
        emb_bytes = T * h * 2 * 2
        ops.append(OpCost("embedding", rl.elementwise_time_s(emb_bytes, self.gpu, e, "embedding"), 0, emb_bytes))
        ops.append(OpCost("final_norm", rl.elementwise_time_s(norm_bytes, self.gpu, e, "final_norm", h), 0, norm_bytes))
        v = m.vocab_size // tp
        # the LM head stays in bf16 under fp8/int4 checkpoints (vLLM keeps it unquantised)
        lm_t = rl.gemm_time_s(n_logits, v, h, self.gpu, e, self.gpu.bf16_flops, 2.0)
        if self._tables is not None:  # measured-table correction, as `predict_rows` applies it
            lm_t *= self._tables.gemm_factor("bf16", n_logits, v, h)
        ops.append(OpCost("lm_head", lm_t, 2 * n_logits * v * h, v * h * 2 + n_logits * (h + v) * 2))
        if tp > 1:
            g_bytes = n_logits * m.vocab_size * 2
            ops.append(OpCost("logits_gather", self._allreduce(g_bytes / 2), 0, 0, g_bytes))
        samp_bytes = n_logits * m.vocab_size * 4 * 2
        ops.append(OpCost("sampler", rl.elementwise_time_s(samp_bytes, self.gpu, e), 0, samp_bytes))
        if self.pp > 1:
            send = rl.p2p_time_s(T * h * 2, self._p2p_bw(), e,
                                 internode=self.tp * self.pp > self.gpu.gpus_per_node)
            ops.append(OpCost("pp_send", send * (self.pp - 1), 0, 0, T * h * 2 * (self.pp - 1), self.pp - 1))
        return ops

    def _dense_time(self, T: int, n_logits: int) -> tuple[float, float]:
        """(sum of per-layer op time over all layers, once-per-iteration time), cached by shape.

        Per-layer and token-count ops depend on T only, the logits ops on n_logits only: each
        part has its own cache, so a new (T, n_logits) pair rarely recomputes anything."""
        key = (T, n_logits)
        hit = self._dense_cache.get(key)
        if hit is not None:
            return hit
        layer, tok, lg = self._layer_cache.get(T), self._tok_cache.get(T), self._logit_cache.get(n_logits)
        if layer is None or lg is None:
            layer = tok = lg = 0.0
            for op in self._dense_ops(T, n_logits):
                if op.count == self.model.num_layers and op.name != "pp_send":
                    layer += op.time_s
                elif op.name in _LOGIT_OPS:
                    lg += op.time_s
                else:
                    tok += op.time_s
            self._layer_cache[T], self._tok_cache[T], self._logit_cache[n_logits] = layer, tok, lg
        if len(self._dense_cache) > 200_000:
            self._dense_cache.clear()
        self._dense_cache[key] = (layer, tok + lg)
        return layer, tok + lg

    def _attention_time(self, prefill: Sequence[tuple[int, int]], n_decode: int,
                        decode_ctx_sum: float, q: int) -> tuple[float, float]:
        """(prefill, decode) attention time for one layer (the mean over the layers' kinds:
        MLA modules, or full and sliding-window attention)."""
        m, e = self.model, self.eff
        if m.is_mla:
            return self._mla_time(prefill, n_decode, decode_ctx_sum, q)
        if m.num_sliding_layers:
            return self._sliding_mix_time(prefill, n_decode, decode_ctx_sum, q)
        # one varlen flash-attention kernel for all prefill chunks of the batch
        t_pre = at.prefill_attn_batch_time_s(prefill, self.q_heads, self.kv_heads, m.head_dim,
                                             self.gpu, e, self.kv_elem_bytes)
        t_dec = at.decode_attn_time_s(n_decode, decode_ctx_sum, q, self.q_heads, self.kv_heads,
                                      m.head_dim, self.gpu, e, self.kv_elem_bytes)
        tb = self._tables
        if tb is not None:  # measured-table corrections (costmodel.tables)
            if prefill:
                n = len(prefill)
                t_pre *= tb.prefill_attn_factor(
                    self.kv_dtype, 0, n, sum(c for c, _ in prefill) / n,
                    sum(p for _, p in prefill) / n, self.q_heads, self.kv_heads, m.head_dim)
            if n_decode:
                t_dec *= tb.decode_attn_factor(self.kv_dtype, 0, n_decode, decode_ctx_sum / n_decode,
                                               self.q_heads, self.kv_heads, m.head_dim)
        return t_pre, t_dec

    def _sliding_mix_time(self, prefill, n_decode: int, ctx_sum: float, q: int) -> tuple[float, float]:
        """Per-layer mean of full-context and sliding-window attention (gpt-oss alternates
        them); a sliding layer's query sees at most `sliding_window` keys. Decode contexts
        are known only as their sum here: a sliding layer reads min(sum, n x window)."""
        m, g, e, kb = self.model, self.gpu, self.eff, self.kv_elem_bytes
        W, ns = m.sliding_window, m.num_sliding_layers
        nf = m.num_layers - ns
        qh, kvh, hd = self.q_heads, self.kv_heads, m.head_dim
        full_p = at.prefill_attn_batch_time_s(prefill, qh, kvh, hd, g, e, kb)
        win_p = at.prefill_attn_batch_time_s(self._windowed(prefill, W), qh, kvh, hd, g, e, kb)
        full_d = at.decode_attn_time_s(n_decode, ctx_sum, q, qh, kvh, hd, g, e, kb)
        win_d = at.decode_attn_time_s(n_decode, min(ctx_sum, n_decode * W), q, qh, kvh, hd, g, e, kb)
        L = m.num_layers
        return (nf * full_p + ns * win_p) / L, (nf * full_d + ns * win_d) / L

    def _comm_time(self, T: int, n_logits: int) -> float:
        """Collectives of one iteration (all layers): the part the kernel-speed scales leave."""
        key = (T, n_logits)
        hit = self._comm_cache.get(key)
        if hit is None:
            hit = sum(o.time_s for o in self._dense_ops(T, n_logits) if o.comm_bytes > 0)
            if len(self._comm_cache) > 200_000:
                self._comm_cache.clear()
            self._comm_cache[key] = hit
        return hit

    def step_parts(self, prefill: Sequence[tuple[int, int]] = (), n_decode: int = 0,
                   decode_ctx_sum: float = 0, decode_query_tokens: int = 1
                   ) -> tuple[float, float, float]:
        """(prefill GPU time, decode GPU time, collectives) of one iteration at kernel-speed
        scales 1, without host time: the dense operators split between prefill and decode by
        their tokens, attention by its kind. Their sum is `step_time_s` less host time."""
        T = sum(c for c, _ in prefill) + n_decode * decode_query_tokens
        if T == 0:
            return 0.0, 0.0, 0.0
        n_logits = len(prefill) + n_decode * decode_query_tokens
        per_layer, once = self._dense_time(T, n_logits)
        comm = self._comm_time(T, n_logits)
        t_pre, t_dec = self._attention_time(prefill, n_decode, decode_ctx_sum, decode_query_tokens)
        L = self.model.num_layers
        dense = per_layer + once - comm
        share = (T - n_decode * decode_query_tokens) / T
        return dense * share + L * t_pre, dense * (1 - share) + L * t_dec, comm

    # --- public ------------------------------------------------------------------------------
    def step_time_s(self, prefill: Sequence[tuple[int, int]] = (), n_decode: int = 0,
                    decode_ctx_sum: float = 0, decode_query_tokens: int = 1) -> float:
        """Latency of one iteration (hot path; equals `step(...).step_time_s`)."""
        T = sum(c for c, _ in prefill) + n_decode * decode_query_tokens
        n_seqs = len(prefill) + n_decode
        if T == 0:
            return 0.0
        e = self.eff
        if e.prefill_time_scale != 1.0 or e.decode_time_scale != 1.0:
            p, d, c = self.step_parts(prefill, n_decode, decode_ctx_sum, decode_query_tokens)
            gpu_s = p * e.prefill_time_scale + d * e.decode_time_scale + c
        else:
            per_layer, once = self._dense_time(T, len(prefill) + n_decode * decode_query_tokens)
            t_pre, t_dec = self._attention_time(prefill, n_decode, decode_ctx_sum, decode_query_tokens)
            gpu_s = per_layer + once + self.model.num_layers * (t_pre + t_dec)
        host = self._host(n_seqs)
        return max(gpu_s, host) if self.host_overlap else gpu_s + host

    def _moe_parts(self, T: int, T_all: int) -> tuple[float, float]:
        """(all, collectives of them) of the MoE-layer operators over all MoE layers for a rank
        of T tokens, T_all over the expert group."""
        key = (T, T_all)
        hit = self._moe_cache.get(key)
        if hit is None:
            parts: list[tuple[float, float]] = []
            self._moe_layer_ops(T, T_all, lambda name, t, fl, by, comm=0, *_: parts.append((t, comm)))
            n = self.model.num_moe_layers
            hit = (sum(t for t, _ in parts) * n, sum(t for t, c in parts if c > 0) * n)
            if len(self._moe_cache) > 200_000:
                self._moe_cache.clear()
            self._moe_cache[key] = hit
        return hit

    def _moe_time(self, T: int, T_all: int) -> float:
        return self._moe_parts(T, T_all)[0]

    def dp_step_time_s(self, ranks: Sequence[tuple[Sequence[tuple[int, int]], int, float, int]]) -> float:
        """Latency of one iteration of a data-parallel replica: `ranks` holds each attention
        rank's (prefill chunks, decodes, their context sum, query tokens each). Every rank runs
        its own attention and dense operators; each MoE layer waits for the slowest rank, then
        runs the experts on every rank's tokens, so the iteration takes the slowest rank's own
        work plus the MoE layers at its token count and the group's total. Ranks with no work
        join with a dummy batch (as vLLM's do) that costs less than the busiest rank's."""
        toks = [(sum(c for c, _ in p) if p else 0) + n * q for p, n, _, q in ranks]
        T_all = sum(toks)
        if T_all == 0:
            return 0.0
        slowest, seqs = 0.0, 0
        L, dp, e = self.model.num_layers, self.dp, self.eff
        ps, ds = e.prefill_time_scale, e.decode_time_scale
        scaled = ps != 1.0 or ds != 1.0
        for (pre, n_dec, ctx, q), T in zip(ranks, toks, strict=True):
            if T == 0:
                continue
            per_layer, once = self._dense_time(T, len(pre) + n_dec * q)
            t_pre, t_dec = self._attention_time(pre, n_dec, ctx, q)
            moe, moe_comm = self._moe_parts(T, T * dp)
            if scaled:  # as step_time_s: kernels by their tokens' kind, collectives as they are
                comm = self._comm_time(T, len(pre) + n_dec * q) - moe_comm
                share = (T - n_dec * q) / T
                own = ((per_layer + once - moe - comm) * (share * ps + (1 - share) * ds) + comm
                       + L * (t_pre * ps + t_dec * ds))
            else:
                own = per_layer + once - moe + L * (t_pre + t_dec)
            if own > slowest:
                slowest = own
            if len(pre) + n_dec > seqs:
                seqs = len(pre) + n_dec
        host = self._host(seqs)  # host time grows with the sequences: the busiest rank's
        moe, moe_comm = self._moe_parts(max(toks), T_all)
        if scaled:  # the experts run every rank's tokens: the group's prefill share
            share = sum(sum(c for c, _ in p) for p, *_ in ranks) / T_all
            moe = (moe - moe_comm) * (share * ps + (1 - share) * ds) + moe_comm
        gpu_s = slowest + moe
        return max(gpu_s, host) if self.host_overlap else gpu_s + host

    def stage_time_s(self, prefill: Sequence[tuple[int, int]] = (), n_decode: int = 0,
                     decode_ctx_sum: float = 0, decode_query_tokens: int = 1) -> float:
        """Time the slowest PP stage is busy with this batch (= step time when pp == 1)."""
        if self.pp == 1:
            return self.step_time_s(prefill, n_decode, decode_ctx_sum, decode_query_tokens)
        return self.step(Batch(tuple(prefill), (), 1), _decode=(n_decode, decode_ctx_sum,
                                                               decode_query_tokens)).stage_time_s

    def _host(self, n_seqs: int) -> float:
        return self.eff.host_overhead_s + self.eff.host_per_seq_s * n_seqs

    def step(self, batch: Batch, _decode: tuple[int, float, int] | None = None) -> StepBreakdown:
        """Per-operator breakdown of one iteration."""
        if _decode is None:
            n_dec, ctx_sum, q = len(batch.decode), float(sum(batch.decode)), batch.decode_query_tokens
        else:
            n_dec, ctx_sum, q = _decode
        T = sum(c for c, _ in batch.prefill) + n_dec * q
        n_seqs = len(batch.prefill) + n_dec
        if T == 0:
            return StepBreakdown(0.0, 0.0)
        n_logits = len(batch.prefill) + n_dec * q
        ops = self._dense_ops(T, n_logits)
        m, L = self.model, self.model.num_layers
        t_pre, t_dec = self._attention_time(batch.prefill, n_dec, ctx_sum, q)
        hd, qh, kvh = m.head_dim, self.q_heads, self.kv_heads
        if m.is_mla:  # the MLA module's latent: 576 of every cached token, for all heads
            hd, kvh = (m.kv_lora_rank + m.qk_rope_head_dim) / 2, 1
        if batch.prefill:
            pairs = sum(c * (p + (c + 1) / 2) for c, p in batch.prefill)
            kv_read = sum(p + c for c, p in batch.prefill) * 2 * kvh * hd * self.kv_elem_bytes
            ops.append(OpCost("attn_prefill", t_pre * L, 4 * qh * hd * pairs * L, kv_read * L, 0, L))
        if n_dec:
            ops.append(OpCost("attn_decode", t_dec * L, 4 * qh * hd * ctx_sum * q * L,
                              ctx_sum * 2 * kvh * hd * self.kv_elem_bytes * L, 0, L))
        e = self.eff
        if e.prefill_time_scale != 1.0 or e.decode_time_scale != 1.0:
            share = (T - n_dec * q) / T
            ops = [o if o.comm_bytes > 0 else replace(o, time_s=o.time_s * (
                e.prefill_time_scale if o.name == "attn_prefill" else e.decode_time_scale
                if o.name == "attn_decode" else share * e.prefill_time_scale
                + (1 - share) * e.decode_time_scale)) for o in ops]
        host = self._host(n_seqs)
        if self.host_overlap:  # only the host time the GPU's work does not cover
            host = max(0.0, host - sum(o.time_s for o in ops))
        ops.append(OpCost("host_overhead", host, 0, 0))
        total = sum(o.time_s for o in ops)
        if self.pp == 1:
            stage = total
        else:
            layer_t = sum(o.time_s for o in ops if o.name not in _ONCE_OPS) / L
            once = sum(o.time_s for o in ops if o.name in _ONCE_OPS and o.name not in ("pp_send", "host_overhead"))
            send = next((o.time_s / o.count for o in ops if o.name == "pp_send"), 0.0)
            stage = self.layers_per_stage * layer_t + once + send + host / self.pp
        return StepBreakdown(total, stage, tuple(ops), T, n_seqs)
