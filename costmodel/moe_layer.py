"""Mixture-of-experts and MLA operators of one iteration, under TP x EP x attention DP.

A replica spans `dp` attention data-parallel ranks of `tp` GPUs each (x `pp` stages). Attention,
dense MLPs, shared experts and the router run per rank, tensor-parallel over its `tp` GPUs, on
that rank's own tokens. Routed experts are spread over all `tp x dp` GPUs: `ep` expert groups
(E / ep experts each), each expert's FFN split `moe_tp = tp x dp / ep` ways. With dp > 1 the
ranks' tokens differ, so an MoE layer gathers them (dispatch) and sends results back
(combine): an all-to-all over the `ep` GPUs of the expert group (DeepEP / pplx style; fp8
dispatch when the experts are fp8), or with ep = 1 an all-gather and a reduce-scatter over all
`tp x dp` GPUs. With dp = 1 every GPU of the TP group holds every token, experts (EP inside the
TP group, vLLM's `--enable-expert-parallel` without DP) need no dispatch, and the MLP's
all-reduce sums their outputs as for a dense MLP.

Each kind of operator has ONE timing method here; the kernel formulas fitted on vLLM's
measured tables (AIConfigurator's H100 MoE, MLA and GEMM tables) live in their own modules:
- `_moe_experts_time(num_tokens)`: the fused grouped GEMM (gate/up, activation, down) of the
  routed experts on the busiest GPU of the expert group, given the tokens entering the layer
  over the whole group (balanced routing): costmodel/moe_kernels.py `fused_moe_time_s`, the
  kernel family from the experts' dtype (Triton bf16 / fp8, block-fp8, Marlin int4, MXFP4).
- `_router_time(tokens)`: the router GEMM (bf16) and its top-k: `router_time_s`.
- `_a2a_time(msg_bytes, n_gpus)`: one dispatch or combine (NVLink inside a node, the NIC for
  the share of peers on other nodes), a roofline of the link bandwidths.
- `_mla_time(prefill, n_decode, ctx_sum, q)`: DeepSeek's MLA attention module of one layer.
  Decode runs the absorbed module of costmodel/mla.py (`mla_decode_1`, the scalar form of
  `mla_decode_time_s`: projections, W_UK / W_UV folded into query and output, attention over
  the latent cache); prefill chunks, which may sit on a cached prefix, keep the roofline below
  (latent up-projection, then FlashAttention over 192-wide heads).
- `_block_fp8_gemm_time(m, n, k)`: a GEMM with 128 x 128 block-scaled fp8 weights:
  costmodel/block_fp8.py (vLLM's kernel choice on Hopper, per-token-group activation
  quantisation), inside a CUDA graph.
"""

from __future__ import annotations

import numpy as np

from costmodel import attention as at
from costmodel import roofline as rl
from costmodel.block_fp8 import block_fp8_gemm_1
from costmodel.mla import mla_decode_1, mla_kv_elem_bytes
from costmodel.model_spec import WEIGHT_DTYPE_BYTES
from costmodel.moe_kernels import fused_moe_time_s, router_time_s

WEIGHT_ONLY = ("int4", "mxfp4")  # dequantised in the GEMM's main loop, bf16 tensor cores
# The fused-MoE formula is vectorised numpy (the fit prices thousands of rows at once), so one
# scalar call costs about a millisecond, and a simulation asks for thousands of token counts. Counts up to GRID_EXACT (every decode batch in practice) are priced exactly,
# larger ones linearly between points of a geometric grid GRID_STEP apart. The formulas step
# where a tile's padding or a wave changes; across such a step the line is off by up to the
# step (fused MoE, DeepSeek-V3 EP 16, every 37th count from 1025 to 30000: at most 5.7%).
# GEMMs, whose wave steps are larger (up to 20% between two points), and the MLA module are
# priced exactly (block_fp8 and mla have scalar paths). Points are priced CHUNK at a time in one vectorised call, and
# the memo is shared by every cost model of the same GPU and parameters (the planner builds one
# per configuration).
GRID_EXACT = 1024
GRID_STEP = 1.01
CHUNK = 32
GRID = np.unique(np.concatenate([
    np.arange(1, GRID_EXACT + 1),
    np.floor(GRID_EXACT * GRID_STEP ** np.arange(1, 1600)).astype(np.int64)]))
GRID = GRID[GRID <= 1 << 24]
_SHARED: dict = {}


def grid_memo(gpu, eff) -> dict:
    """The grid memo of one (GPU, parameters): kept for the 16 most recent pairs."""
    key = (gpu, eff)
    memo = _SHARED.get(key)
    if memo is None:
        if len(_SHARED) >= 16:
            _SHARED.pop(next(iter(_SHARED)))
        memo = _SHARED[key] = {}
    return memo


class MoELayers:
    """Mixed into CostModel: needs model, gpu, eff, tp, dp, ep, moe_tp, part_dtype, _gemm."""

    # --- GEMMs by weight dtype ---------------------------------------------------------------
    def _part_gemm(self, name: str, m: int, n: int, k: int, part: str) -> float:
        """GEMM of a layer part (attn, mlp, experts) in that part's weight dtype."""
        dt = self.part_dtype[part]
        if dt == self.precision and dt in ("bf16", "fp8", "int4"):  # the dense model's own path
            return self._gemm(name, m, n, k)
        return self._dtype_gemm(m, n, k, dt)

    def _dtype_gemm(self, m: int, n: int, k: int, dt: str) -> float:
        key = (m, n, k, dt)
        memo = self._gemm_memo
        hit = memo.get(key)
        if hit is not None:
            return hit
        g, e = self.gpu, self.eff
        if dt == "fp8_block":
            t = self._block_fp8_gemm_time(m, n, k)
        elif dt == "fp8":
            fp8 = g.has_fp8
            t = rl.gemm_time_s(m, n, k, g, e, g.peak_flops("fp8"), 1.0, 1.0 if fp8 else 2.0, fp8)
        else:
            t = rl.gemm_time_s(m, n, k, g, e, g.bf16_flops, WEIGHT_DTYPE_BYTES[dt], 2.0)
        if len(memo) > 200_000:
            memo.clear()
        memo[key] = t
        return t

    def _on_grid(self, key: tuple, x: int, f) -> float:
        """f(x) for a count 1 <= x <= GRID[-1]: exact on GRID (every count up to GRID_EXACT),
        linear between its points elsewhere; `f` takes an array of counts, `key` names the
        operator and every shape it depends on besides x."""
        j = int(np.searchsorted(GRID, x))
        if j >= len(GRID):
            return float(f(np.asarray([x]))[0])
        if GRID[j] == x:
            return self._grid_value(key, j, f)
        lo, hi = GRID[j - 1], GRID[j]
        w = (x - lo) / (hi - lo)
        return (1.0 - w) * self._grid_value(key, j - 1, f) + w * self._grid_value(key, j, f)

    def _grid_value(self, key: tuple, j: int, f) -> float:
        memo = self._grid_memo
        c = j // CHUNK
        vals = memo.get((key, c))
        if vals is None:
            if len(memo) > 100_000:
                memo.clear()
            vals = memo[(key, c)] = np.asarray(f(GRID[c * CHUNK:(c + 1) * CHUNK]), dtype=float)
        return float(vals[j - c * CHUNK])

    def _block_fp8_gemm_time(self, m: int, n: int, k: int) -> float:
        if m <= 0:
            return 0.0
        return block_fp8_gemm_1(int(m), int(n), int(k), self.gpu, self.eff, True, "")

    # --- MoE ---------------------------------------------------------------------------------
    def _router_time(self, tokens: int) -> float:
        m = self.model
        if tokens <= 0:
            return 0.0
        return router_time_s(num_tokens=tokens, hidden=m.hidden_size, num_experts=m.num_experts,
                             gpu=self.gpu, eff=self.eff)

    def _moe_experts_time(self, num_tokens: int) -> float:
        """Routed experts of one MoE layer on the busiest GPU: `num_tokens` enter the layer over
        the expert group (all DP ranks), each picks top-k of E experts (balanced routing); a GPU
        holds E / ep experts, each `expert_ffn / moe_tp` wide (costmodel/moe_kernels.py)."""
        m = self.model
        if num_tokens <= 0:
            return 0.0
        inter = m.expert_ffn // self.moe_tp * self.moe_tp  # each GPU's slice is whole columns
        key = ("moe", m.hidden_size, inter, m.experts_per_token, m.num_experts, m.gated_mlp,
               self.part_dtype["experts"], self.moe_tp, self.ep)
        return self._on_grid(key, num_tokens, lambda x: fused_moe_time_s(
            num_tokens=x, hidden=m.hidden_size, inter=inter, topk=m.experts_per_token,
            num_experts=m.num_experts, gpu=self.gpu, eff=self.eff,
            precision=self.part_dtype["experts"], tp=self.moe_tp, ep=self.ep, routing="balanced",
            gated=m.gated_mlp))

    def _a2a_time(self, msg_bytes: float, n_gpus: int) -> float:
        """One all-to-all (or all-gather) in which each GPU exchanges `msg_bytes` with the
        other n - 1: NVLink to peers on its node, the NIC to those on other nodes."""
        if n_gpus <= 1 or msg_bytes <= 0:
            return 0.0
        g, e = self.gpu, self.eff
        per_node = min(n_gpus, g.gpus_per_node)
        on = msg_bytes * (per_node - 1) / n_gpus
        off = msg_bytes * (n_gpus - per_node) / n_gpus
        t = on / (g.intra_node_bw_bytes_s() * e.comm_bw_eff)
        lat = e.comm_latency_s
        if off > 0:
            t = max(t, off / (g.network_bw_bytes_s * e.net_bw_eff))
            lat = e.net_latency_s
        return e.comm_base_s + lat + t

    def _moe_layer_ops(self, T: int, T_all: int, layer_op) -> None:
        """The MLP of one MoE layer for a rank of T tokens, T_all over the expert group's ranks;
        `layer_op(name, time, flops, bytes, comm)` records each over the MoE layers."""
        m = self.model
        h, E, k = m.hidden_size, m.num_experts, m.experts_per_token
        layer_op("moe_router", self._router_time(T), 2 * T * E * h, E * h * 2)
        if self.dp > 1:
            n = self.ep if self.ep > 1 else self.tp * self.dp
            if self.ep > 1:  # this GPU's share of the rank's tokens, k copies each
                send = T / self.tp * k * h * (1 if self.part_dtype["experts"] in ("fp8", "fp8_block") else 2)
                back = T / self.tp * k * h * 2
            else:  # all-gather the group's tokens, reduce-scatter the outputs
                send = back = T_all * h * 2
            layer_op("moe_dispatch", self._a2a_time(send, n), 0, 0, send)
        inter = m.expert_ffn // self.moe_tp
        up = 2 if m.gated_mlp else 1
        assign = T_all * k / self.ep
        w = E // self.ep * (up + 1) * inter * h * WEIGHT_DTYPE_BYTES[self.part_dtype["experts"]]
        layer_op("moe_experts", self._moe_experts_time(T_all), 2 * assign * (up + 1) * inter * h, w)
        if self.dp > 1:
            layer_op("moe_combine", self._a2a_time(back, n), 0, 0, back)
        if m.shared_ffn:
            s = m.shared_ffn // self.tp
            t = (self._part_gemm("mlp_up", T, up * s, h, "mlp") + self._part_gemm("mlp_down", T, h, s, "mlp")
                 + rl.elementwise_time_s(T * s * (up + 1) * 2, self.gpu, self.eff, "mlp_act"))
            layer_op("shared_experts", t, 2 * T * (up + 1) * s * h,
                     (up + 1) * s * h * WEIGHT_DTYPE_BYTES[self.part_dtype["mlp"]])

    # --- MLA ---------------------------------------------------------------------------------
    def _mla_proj_time(self, T: int) -> float:
        """MLA projections of T tokens on one GPU: q down/up (heads / tp), the replicated KV
        down-projection with its rope key, their norms, and the output projection."""
        if len(self._mla_proj_cache) > 200_000:
            self._mla_proj_cache.clear()
        hit = self._mla_proj_cache.get(T)
        if hit is not None:
            return hit
        m, h = self.model, self.model.hidden_size
        nh = m.num_heads // self.tp
        qk = m.qk_nope_head_dim + m.qk_rope_head_dim
        g = self._part_gemm
        t = 0.0
        if T > 0:
            if m.q_lora_rank:
                t += g("qkv_proj", T, m.q_lora_rank, h, "attn") + g("qkv_proj", T, nh * qk, m.q_lora_rank, "attn")
            else:
                t += g("qkv_proj", T, nh * qk, h, "attn")
            t += g("qkv_proj", T, m.kv_lora_rank + m.qk_rope_head_dim, h, "attn")
            t += g("o_proj", T, h, nh * m.v_head_dim, "attn")
            norm = T * (m.q_lora_rank + m.kv_lora_rank) * 2 * 2
            t += rl.elementwise_time_s(norm, self.gpu, self.eff, "input_layernorm", m.kv_lora_rank)
            t += rl.elementwise_time_s(T * (nh + 1) * m.qk_rope_head_dim * 4, self.gpu, self.eff, "rope")
        self._mla_proj_cache[T] = t
        return t

    def _mla_time(self, prefill, n_decode: int, ctx_sum: float, q: int) -> tuple[float, float]:
        """(prefill, decode) time of one layer's MLA module on one GPU.

        Prefill: the cached latent of each chunk's whole context is up-projected to per-head
        keys and values (kv_b_proj), then causal attention with 192-wide query/key heads (the
        128-wide values padded to them, as FlashAttention runs MLA prefill). Decode: the
        key up-projection is absorbed into the queries and the value one into the output, so
        attention reads the 576-element latent of each cached token once for all heads (MQA
        with 576-wide keys, 512-wide values)."""
        m, g, e = self.model, self.gpu, self.eff
        nh = m.num_heads // self.tp
        r, rope = m.kv_lora_rank, m.qk_rope_head_dim
        t_pre = t_dec = 0.0
        if prefill:  # the decodes' projections are in their absorbed module's time
            T_pre = sum(c for c, _ in prefill)
            T_dec = n_decode * q
            proj = self._mla_proj_time(T_pre + T_dec)
            share = T_pre / (T_pre + T_dec)
            cache = self._mla_proj_cache
            ctx = sum(c + p for c, p in prefill)
            up = cache.get(("kv_b", ctx))
            if up is None:
                up = cache[("kv_b", ctx)] = self._part_gemm(
                    "kv_b_proj", ctx, nh * (m.qk_nope_head_dim + m.v_head_dim), r, "attn")
            t_pre = proj * share + up
            t_pre += at.prefill_attn_batch_time_s(prefill, nh, nh, m.qk_nope_head_dim + rope, g, e, 2.0)
        if n_decode:
            ctx_len = max(1, round(ctx_sum / n_decode) - q)
            dec = self._mla_dec_cache  # its own: the KV dtype changes it (sim/engine.py shares
            key = (n_decode, ctx_len, q)  # the projection cache across KV dtypes)
            if len(dec) > 200_000:
                dec.clear()
            t_dec = dec.get(key)
            if t_dec is None:
                t_dec = dec[key] = mla_decode_1(
                    n_decode, ctx_len, q, nh, m.hidden_size, m.q_lora_rank, r, m.qk_nope_head_dim,
                    rope, m.v_head_dim, g, e, self.part_dtype["attn"] == "fp8_block",
                    mla_kv_elem_bytes(self.kv_dtype))
        return t_pre, t_dec

    # --- sliding-window attention ------------------------------------------------------------
    @staticmethod
    def _windowed(prefill, window: int):
        """Prefill chunks as a sliding-window layer sees them: each query attends at most
        `window` keys, so a chunk is pieces of at most `window` queries over at most
        `window` earlier keys."""
        out = []
        for c, p in prefill:
            first = min(c, window)
            out.append((first, min(p, window)))
            rest = c - first
            while rest > 0:
                piece = min(rest, window)
                out.append((piece, window))
                rest -= piece
        return out
