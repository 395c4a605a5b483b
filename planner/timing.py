"""Iteration times of one candidate replica, as the simulator computes them.

`ReplicaTiming` wraps the cost model of a resolved PoolConfig and answers the few questions the
analytic screen asks: how long a decode-only iteration of B sequences takes, how long one that
also carries a prefill chunk takes, how much KV fits, how many tokens a speculative verify step
yields. Speculative decoding follows `sim.spec` exactly (same draft model, same draft cost, the
same adaptive choice of k per batch size), so the screen and the simulator price a step alike.

With pipeline parallelism the simulator launches a micro-batch every stage time, but all free
decodes ride in one micro-batch, so a sequence advances once per step latency: the screen uses
the step latency (`CostModel.step_time_s`) for PP replicas too.
"""

from __future__ import annotations

import bisect
import math
from functools import lru_cache

import numpy as np

from costmodel.engine_defaults import engine_defaults
from costmodel.memory import memory_plan
from costmodel.model import CostModel
from sim.deployment import PoolConfig
from sim.spec import DEFAULT_K_MAX, build_draft_model, expected_tokens_per_step

SELF_SPEC_LAYER_FRACTION = 0.25  # the simulator's default early-exit depth for method "self"
# decode batch sizes an MoE replica's step is timed at past 32 (then interpolated)
_GRID = sorted({int(round(32 * 1.06 ** i)) for i in range(200)})


class ReplicaTiming:
    """Step times (seconds) and capacities of one replica of a resolved pool."""

    def __init__(self, pool: PoolConfig, cm: CostModel, kv_capacity_tokens: int | None = None):
        self.pool = pool
        self.cm = cm
        self.pp = pool.pp
        d = engine_defaults(cm.gpu)
        self.max_num_seqs = pool.max_num_seqs or d.max_num_seqs
        self.mbt = pool.max_num_batched_tokens or d.max_num_batched_tokens
        self.chunk_tokens = min(pool.chunk_size or self.mbt, self.mbt)
        if kv_capacity_tokens is None:
            mem = memory_plan(cm, pool.gpu_memory_utilization or d.gpu_memory_utilization,
                              self.mbt, self.max_num_seqs, pool.block_size or d.block_size)
            kv_capacity_tokens = mem.kv_capacity_tokens
        self.kv_capacity_tokens = int(kv_capacity_tokens)
        spec = pool.spec
        self.spec_on = spec.enabled and pool.role != "prefill"
        self.a = spec.acceptance if self.spec_on else 0.0
        self.adaptive = self.spec_on and (spec.adaptive or spec.num_speculative_tokens == 0)
        self.k_max = (spec.num_speculative_tokens or DEFAULT_K_MAX) if self.spec_on else 0
        self.draft = build_draft_model(spec, cm, SELF_SPEC_LAYER_FRACTION) if self.spec_on else None
        self.method = spec.method
        self._step = lru_cache(maxsize=8192)(self._step_uncached)
        self._coarse = cm.model.is_moe
        self._k_cache: dict[tuple[int, int], int] = {}
        C = self.chunk_tokens
        self._chunk_pts = np.unique(np.maximum(np.array([16, C / 4, C / 2, C, 2 * C]).round(), 16))

    # --- speculative decoding ----------------------------------------------------------------
    def k_at(self, n_dec: float, ctx: float) -> int:
        """Draft length in use at batch n_dec (adaptive: the tokens/s-maximising k)."""
        if not self.spec_on:
            return 0
        if not self.adaptive:
            return self.k_max
        n = max(1, round(n_dec))
        key = (n, int(n * ctx))
        best = self._k_cache.get(key)
        if best is None:
            best, best_rate = 0, 0.0
            for k in range(self.k_max + 1):
                rate = expected_tokens_per_step(self.a, k) / self._step(0, 0, n, key[1], k)
                if rate > best_rate:
                    best, best_rate = k, rate
            self._k_cache[key] = best
        return best

    def g_at(self, n_dec: float, ctx: float) -> float:
        return expected_tokens_per_step(self.a, self.k_at(n_dec, ctx)) if self.spec_on else 1.0

    # --- iteration times ---------------------------------------------------------------------
    def _step_uncached(self, chunk: int, prefix: int, n_dec: int, ctx_sum: int, k: int) -> float:
        pre = ((chunk, prefix),) if chunk > 0 else ()
        t = self.cm.step_time_s(pre, n_dec, ctx_sum, k + 1)
        d = self.draft
        if d is not None and k > 0 and n_dec > 0:
            if self.method == "draft":
                t += d.step_time_s(pre, n_dec, ctx_sum, 1) + (k - 1) * d.step_time_s((), n_dec, ctx_sum, 1)
            else:
                t += k * d.step_time_s((), n_dec, ctx_sum, 1)
        return t

    def _interp(self, chunk: int, prefix: int, n_dec: float, ctx: float) -> float:
        """Step time at a fractional batch: linear between the neighbouring whole batches (for
        MoE models past 32 sequences, between points 6% apart: their steps cost several times a
        dense model's to time, and are as smooth in the batch)."""
        if self._coarse and n_dec > _GRID[0]:
            i = min(bisect.bisect_right(_GRID, n_dec), len(_GRID) - 1)
            lo, hi = _GRID[i - 1], _GRID[i]
            k = self.k_at(n_dec, ctx)
            t_lo = self._step(chunk, prefix, lo, int(lo * ctx) // 64 * 64, k)
            t_hi = self._step(chunk, prefix, hi, int(hi * ctx) // 64 * 64, k)
            return t_lo + (n_dec - lo) / (hi - lo) * (t_hi - t_lo)
        lo = math.floor(n_dec)
        frac = n_dec - lo
        k = self.k_at(n_dec, ctx)
        # ctx sums are rounded to 64 tokens to keep the cache small; attention is linear in them
        t_lo = self._step(chunk, prefix, lo, int(lo * ctx) // 64 * 64, k) if (lo or chunk) else 0.0
        if frac < 1e-9:
            return t_lo
        hi = lo + 1
        t_hi = self._step(chunk, prefix, hi, int(hi * ctx) // 64 * 64, k)
        return t_lo + frac * (t_hi - t_lo)

    def decode_s(self, n_dec: float, ctx: float) -> float:
        """Decode-only iteration of n_dec sequences of mean context ctx (tokens)."""
        return self._interp(0, 0, max(n_dec, 1.0), ctx)

    def mixed_s(self, n_dec: float, ctx: float, chunk_tokens: float | None = None) -> float:
        """Iteration with a prefill chunk (default: a full one) plus n_dec decodes; the chunk
        gets what the decodes leave of the token budget."""
        want = self.chunk_tokens if chunk_tokens is None else int(round(chunk_tokens))
        chunk = max(16, min(want, self.prefill_room(n_dec, ctx)))
        return self._interp(chunk, 0, max(n_dec, 1.0), ctx)

    def prefill_room(self, n_dec: float, ctx: float) -> int:
        """Prompt tokens an iteration can take beside n_dec decodes (k + 1 tokens each)."""
        q = self.k_at(n_dec, ctx) + 1
        return max(16, self.mbt - int(math.ceil(n_dec * q)))

    def iter_with_chunk_s(self, n_dec: float, ctx: float, chunk, role: str):
        """Iteration time with `chunk` prompt tokens (scalar or array); a prefill pool has no
        decodes. Interpolated over a few chunk sizes: dense costs are piecewise smooth in tokens."""
        pts = self._chunk_pts
        if role == "prefill":
            ys = [self._step(int(x), 0, 0, 0, 0) for x in pts]
        else:
            Be = max(n_dec, 1.0)
            ys = [self.mixed_s(Be, ctx, x) for x in pts]
        return np.interp(chunk, pts, ys)

    def prefill_only_s(self) -> float:
        return self._step(self.chunk_tokens, 0, 0, 0, 0)

    def throughput_bound_rps(self, shape) -> float:
        """An upper bound on the rate one replica can sustain (requests/s)."""
        if self.pool.role == "prefill":
            return self.mbt / self.prefill_only_s() / max(shape.input_mean, 1.0) * 2.0
        B = min(self.max_num_seqs, self.kv_capacity_tokens / max(shape.input_mean + shape.output_mean / 2, 1))
        B = max(B, 1.0)
        tau = self.decode_s(B, shape.input_mean + shape.output_mean / 2)
        steps = max(shape.output_mean - 1.0, 1.0) / self.g_at(B, shape.input_mean)
        return 2.0 * B / (tau * steps)
