"""A transformer block and a small model runner built from the operators of `validate.ops`.

`ModelRunner(dims, num_layers, ops=...)` holds random weights shaped like one GPU of a TP group
(`shapes.GpuDims`: real per-layer shapes; only the layer count is reduced to fit the device).
`state(shape)` builds the inputs of one iteration (token ids, positions, each layer's KV
cache: packed prompt prefixes for prefill chunks, a decode cache at the shape's context), and
`forward(state)` runs it: embedding -> layers -> final norm -> LM head on the rows that need
logits. One layer (Llama/Qwen style, pre-norm):

    h = rmsnorm(x); q, k, v = split(h @ W_qkv); q, k = rope(q, k)
    write k, v to the cache; o = attention(q, cache)          # prefill chunks, then decodes
    x = x + o @ W_o; h = rmsnorm(x); x = x + down(act(h @ W_up))

The embedding table has EMBED_ROWS rows whatever the vocabulary: a lookup of T tokens reads T
rows, so its cost does not depend on the table's size, and a 128k x 16k table need not fit.
Weights are N(0, 1/fan_in), so activations stay near unit scale through the layers.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from validate.ops import DecodeCache, PrefillLayout, TorchOps, budget_positions, prefill_layout
from validate.shapes import EMBED_ROWS, GpuDims, IterationShape

ROPE_THETA = 10000.0


@dataclass
class LayerWeights:
    ln1: torch.Tensor  # [h]
    qkv: torch.Tensor  # [h, (Hq + 2 Hkv) D]
    o: torch.Tensor  # [Hq D, h]
    ln2: torch.Tensor  # [h]
    up: torch.Tensor  # [h, 2 I] gated (gate then up), [h, I] otherwise
    down: torch.Tensor  # [I, h]


@dataclass
class IterState:
    """The inputs of one iteration, per layer where the layer owns them (its KV cache)."""

    shape: IterationShape
    ids: torch.Tensor  # int64 [T]
    positions: torch.Tensor  # int64 [T]: prefill tokens first, then decode tokens
    logit_rows: torch.Tensor  # int64 [n_logits]
    n_prefill_tokens: int
    layout: PrefillLayout | None = None
    prefill_kv: list[tuple[torch.Tensor, torch.Tensor]] = field(default_factory=list)
    decode_kv: list[DecodeCache] = field(default_factory=list)


class ModelRunner:
    def __init__(self, dims: GpuDims, num_layers: int, *, ops: TorchOps, device: str = "cpu",
                 dtype: torch.dtype = torch.bfloat16, seed: int = 0, fp8: bool = False):
        self.dims, self.num_layers, self.ops = dims, num_layers, ops
        self.device, self.dtype, self.seed = device, dtype, seed
        self.fp8 = fp8
        self.gen = torch.Generator(device=device).manual_seed(seed)
        h, d = dims.hidden, dims
        self.layers = [
            LayerWeights(self._norm_w(h), self._w(h, d.qkv_out), self._w(d.q_dim, h),
                         self._norm_w(h), self._w(h, d.up_out), self._w(d.inter, h))
            for _ in range(num_layers)
        ]
        self.embed = self._randn(EMBED_ROWS, h)
        self.final_norm = self._norm_w(h)
        self.lm_head = self._w(h, d.vocab, quantise=False)  # vLLM keeps the LM head in bf16

    # --- weights ---------------------------------------------------------------------------
    def _randn(self, *shape: int, scale: float = 1.0) -> torch.Tensor:
        x = torch.randn(*shape, generator=self.gen, device=self.device, dtype=torch.float32)
        return (x * scale).to(self.dtype)

    def _w(self, k: int, n: int, quantise: bool = True) -> torch.Tensor:
        w = self._randn(k, n, scale=k ** -0.5)
        if self.fp8 and quantise:
            # per-tensor scale 1: N(0, 1/k) weights sit well inside e4m3's range; kept
            # column-major (K-major), the layout fp8 tensor cores and cuBLASLt read
            w = w.t().contiguous().t().to(torch.float8_e4m3fn)
        return w

    def _norm_w(self, h: int) -> torch.Tensor:
        return (1.0 + 0.1 * self._randn(h).float()).to(self.dtype)

    def weight_bytes(self) -> int:
        ts = [t for lw in self.layers for t in vars(lw).values()] + [self.embed, self.final_norm,
                                                                      self.lm_head]
        return sum(t.numel() * t.element_size() for t in ts)

    # --- inputs ----------------------------------------------------------------------------
    def state(self, shape: IterationShape) -> IterState:
        d, dev = self.dims, self.device
        # separate streams: the paged layout's block shuffle must not shift the KV selection
        select_gen = torch.Generator().manual_seed(self.seed + 1)
        tables_gen = torch.Generator().manual_seed(self.seed + 2)
        pos = []
        rows = []
        layout = None
        n_pre = sum(c for c, _ in shape.prefill)
        if shape.prefill:
            layout = prefill_layout(shape.prefill, dev)
            pos.append(layout.positions)
            rows.append(layout.cu_q[1:].long() - 1)  # the last token of each chunk
        B, L = shape.decode_batch, shape.query_tokens
        ctx = shape.decode_context + L  # the cache holds the new tokens too
        if B:
            pos.append(torch.arange(ctx - L, ctx, device=dev).repeat(B))
            rows.append(torch.arange(n_pre, n_pre + B * L, device=dev))  # every query token
        T = shape.num_tokens
        st = IterState(shape, torch.randint(0, EMBED_ROWS, (T,), generator=self.gen, device=dev),
                       torch.cat(pos), torch.cat(rows), n_pre, layout)
        for _ in range(self.num_layers):
            if layout is not None:
                st.prefill_kv.append((self._randn(layout.total_k, d.kv_heads, d.head_dim),
                                      self._randn(layout.total_k, d.kv_heads, d.head_dim)))
            if B:
                k = self._randn(B, ctx, d.kv_heads, d.head_dim)
                v = self._randn(B, ctx, d.kv_heads, d.head_dim)
                sel = None
                if shape.kv_budget is not None and shape.kv_budget < ctx:
                    sel = budget_positions(B, ctx, L, shape.kv_budget, select_gen).to(dev)
                st.decode_kv.append(self.ops.decode_cache(k, v, L, sel, tables_gen))
                del k, v
        return st

    def hidden_input(self, st: IterState) -> torch.Tensor:
        return self._randn(st.ids.numel(), self.dims.hidden)

    # --- forward ---------------------------------------------------------------------------
    def attention(self, q, k, v, i: int, st: IterState) -> torch.Tensor:
        """q [T, Hq, D], k, v [T, Hkv, D] of this iteration's tokens -> o [T, Hq, D]."""
        ops, P = self.ops, st.n_prefill_tokens
        parts = []
        if st.layout is not None:
            kb, vb = st.prefill_kv[i]
            kb.index_copy_(0, st.layout.new_rows, k[:P])
            vb.index_copy_(0, st.layout.new_rows, v[:P])
            parts.append(ops.prefill_attention(q[:P].contiguous(), kb, vb, st.layout))
        if st.decode_kv:
            cache = st.decode_kv[i]
            ops.write_kv(cache, k[P:].contiguous(), v[P:].contiguous())
            qd = q[P:].reshape(cache.batch, cache.q_len, q.shape[1], q.shape[2])
            parts.append(ops.decode_attention(qd.contiguous(), cache).reshape(-1, q.shape[1], q.shape[2]))
        return parts[0] if len(parts) == 1 else torch.cat(parts)

    def layer(self, x: torch.Tensor, i: int, st: IterState) -> torch.Tensor:
        d, ops, w = self.dims, self.ops, self.layers[i]
        T = x.shape[0]
        qkv = ops.gemm(ops.rms_norm(x, w.ln1), w.qkv)
        q = qkv[:, :d.q_dim].view(T, d.q_heads, d.head_dim)
        k = qkv[:, d.q_dim:d.q_dim + d.kv_heads * d.head_dim].view(T, d.kv_heads, d.head_dim)
        v = qkv[:, d.q_dim + d.kv_heads * d.head_dim:].view(T, d.kv_heads, d.head_dim)
        q, k = ops.rope(q, k, st.positions, ROPE_THETA)
        o = self.attention(q, k, v, i, st)
        x = x + ops.gemm(o.reshape(T, d.q_dim), w.o)
        h = ops.act(ops.gemm(ops.rms_norm(x, w.ln2), w.up), d.gated)
        return x + ops.gemm(h, w.down)

    def layers_forward(self, x: torch.Tensor, st: IterState) -> torch.Tensor:
        for i in range(self.num_layers):
            x = self.layer(x, i, st)
        return x

    def embed_tokens(self, st: IterState) -> torch.Tensor:
        return torch.nn.functional.embedding(st.ids, self.embed)

    def logits(self, x: torch.Tensor, st: IterState) -> torch.Tensor:
        rows = x.index_select(0, st.logit_rows)
        return self.ops.gemm(self.ops.rms_norm(rows, self.final_norm), self.lm_head)

    def forward(self, st: IterState) -> torch.Tensor:
        """Logits [n_logits, vocab / tp] of one iteration."""
        return self.logits(self.layers_forward(self.embed_tokens(st), st), st)
