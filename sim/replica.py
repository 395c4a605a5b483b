"""One engine replica: vLLM-V1-style continuous batching over a paged KV cache.

Each engine iteration is one simpy timeout. The scheduler fills a token budget
(`max_num_batched_tokens`) shared by decodes and prefill chunks:
- `decode_first` (vLLM V1): running requests first, in admission order (decodes, then
  partially prefilled prompts), then waiting requests while the budget, `max_num_seqs` and the
  KV blocks (less a watermark) allow; no new request is admitted in a step that preempted.
- `prefill_first`: prompts first (running chunks, then new admissions), decodes take what is
  left of the budget.
A prompt advances by at most `chunk_size` tokens per iteration (Sarathi-Serve / SplitFuse).
When a running request needs a KV block and none is free, the most recently admitted running
request is preempted by recompute: its blocks are freed (its full prefix blocks stay in the
prefix cache) and it goes back to the head of the queue; on readmission its prompt and the
tokens it already generated are prefilled again, and that prefill samples its next token.

Iteration time comes from the cost model for the exact batch (`step_time_s`; with pipeline
parallelism a new micro-batch starts every `stage_time_s` while up to `pp` are in flight, and a
request sits in at most one). Decoding sequences live in one int64 array (a row each), so
bookkeeping per iteration is a handful of vectorised operations, not a loop over sequences.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

from costmodel.errors import ServePlanError
from sim.kvcache import BlockPool, PrefixCache

# fields of the decoding-sequence array D[field, row] (one column per sequence, so each field
# is contiguous): request id, tokens computed (in the KV cache, before any budget cap), output
# tokens still to generate, KV tokens allocated (blocks x block_size, prefix-cache blocks
# included), prefix-cache blocks it shares, admission order, in a micro-batch in flight
RID, COMP, REM, ALLOC, HITB, ORDER, BUSY = range(7)
NFIELD = 7
POLICIES = ("decode_first", "prefill_first")


# a run that preempts this many times per request (plus 1000) is livelocked, not busy: healthy
# runs under tight KV preempt a few times per request
PREEMPTIONS_PER_REQUEST = 200


@dataclass(frozen=True)
class ReplicaConfig:
    role: str  # colocated | prefill | decode
    max_num_seqs: int
    max_num_batched_tokens: int
    chunk_size: int
    enable_chunked_prefill: bool
    block_size: int
    kv_blocks: int
    watermark_blocks: int
    kv_budget_tokens: int | None  # per-request KV cap (tokens); None = unlimited
    policy: str = "decode_first"
    pp: int = 1
    prefix_caching: bool = False
    hash_block_tokens: int = 512
    host_cache_entries: int = 0
    host_load_s_per_entry: float = 0.0  # PCIe time to bring one prefix entry back


class Prefill:
    """A running request whose prompt (plus, after a preemption, its generated tokens) is
    still being prefilled."""

    __slots__ = ("rid", "target", "computed", "gen", "out", "held", "hitb", "keys", "pinned",
                 "order", "recompute", "busy", "host_s")

    def __init__(self, rid, target, computed, gen, out, hitb, keys, pinned, order, recompute, host_s):
        self.rid, self.target, self.computed, self.gen, self.out = rid, target, computed, gen, out
        self.held, self.hitb, self.keys, self.pinned = 0, hitb, keys, pinned
        self.order, self.recompute, self.busy, self.host_s = order, recompute, False, host_s


class Plan:
    __slots__ = ("dec", "n_dec", "q", "k", "ctx_sum", "prefills", "chunks", "extra_s")

    def __init__(self):
        self.dec = None  # positions (pp == 1: None = rows [:n_dec]) or request ids (pp > 1)
        self.n_dec, self.q, self.k, self.ctx_sum = 0, 1, 0, 0.0
        self.prefills: list[Prefill] = []
        self.chunks: list[int] = []
        self.extra_s = 0.0  # host-tier loads


class Replica:
    def __init__(self, idx: int, cfg: ReplicaConfig, cm, cluster, spec=None):
        self.idx, self.cfg, self.cm, self.cl, self.spec = idx, cfg, cm, cluster, spec
        self.env = cluster.env
        cache = PrefixCache(cfg.hash_block_tokens // cfg.block_size, cfg.host_cache_entries) \
            if cfg.prefix_caching else None
        self.cache = cache
        self.pool = BlockPool(cfg.kv_blocks, cache)
        self.cap = cfg.kv_budget_tokens
        self.D = np.zeros((NFIELD, cfg.max_num_seqs), np.int64)
        self.n = 0
        self.comp_sum = 0  # sum of D[COMP, :n]
        self.prefilling: list[Prefill] = []
        self.waiting: deque[int] = deque()
        self.resume: dict[int, int] = {}  # preempted request -> tokens generated so far
        self.keys: dict[int, tuple[list, int]] = {}  # decoding request -> (pinned keys, all keys)
        self.incoming = 0  # decode role: KV transfers under way into this replica
        self.pending: deque = deque()  # decode role: prefilled requests waiting for KV blocks
        self.order = 0
        self.outstanding = 0  # router's load: prompt + output tokens not yet processed
        self.frontend_free_at = 0.0  # when the API server is done with the requests it holds
        self.busy_s = 0.0
        self.iterations = 0
        self.preemptions = 0
        self.peak_blocks = 0
        self._idle = None
        self.timeline = [] if cluster.timeline_dt else None
        self._next_sample = 0.0

    # --- intake ------------------------------------------------------------------------------
    def frontend_s(self, prompt: int) -> float:
        """API-server time of one request of `prompt` tokens before the engine sees it."""
        e = self.cm.eff
        return e.frontend_s + e.frontend_per_token_s * prompt

    def submit(self, rid: int) -> None:
        self.waiting.append(rid)
        self.wake()

    def wake(self) -> None:
        ev = self._idle
        if ev is not None and not ev.triggered:
            ev.succeed()

    def num_running(self) -> int:
        return self.n + len(self.prefilling) + self.incoming

    # --- main loop ---------------------------------------------------------------------------
    def run(self):
        env, pp = self.env, self.cfg.pp
        if pp > 1:
            yield from self._run_pipelined()
            return
        timeout, fast_ok = env.timeout, self.spec is None and self.cap is None
        step_time_s = self.cm.step_time_s
        while True:
            if fast_ok and self.n and not (self.waiting or self.prefilling or self.pending) \
                    and self.timeline is None:
                # pure decode iteration (the common case under load): inlined
                dt = self._fast_decode()
                if dt is not None:
                    self.busy_s += dt
                    self.iterations += 1
                    yield timeout(dt)
                    self._fast_complete()
                    continue
            plan = self._schedule()
            if plan is None:
                self._idle = env.event()
                yield self._idle
                self._idle = None
                continue
            dt = self._step_time(plan) if plan.prefills or plan.k or self.timeline is not None else \
                step_time_s((), plan.n_dec, plan.ctx_sum, 1)
            self.busy_s += dt
            self.iterations += 1
            yield timeout(dt)
            self._complete(plan)

    def _fast_decode(self) -> float | None:
        """Every running sequence decodes one token; None when the step needs the full
        scheduler (token budget or KV blocks short)."""
        n, D = self.n, self.D
        if n > self.cfg.max_num_batched_tokens:
            return None
        comp, alloc = D[COMP, :n], D[ALLOC, :n]
        mask = comp >= alloc
        total = int(np.count_nonzero(mask))
        if total:
            if not self.pool.allocate(total):
                return None
            np.add(alloc, self.cfg.block_size, out=alloc, where=mask)
            used = self.pool.in_use()
            if used > self.peak_blocks:
                self.peak_blocks = used
        self._fast_n = n
        return self.cm.step_time_s((), n, self.comp_sum, 1)

    def _fast_complete(self) -> None:
        n, D, cl = self._fast_n, self.D, self.cl
        cl.spec_seq_steps += n
        cl.spec_tokens += n
        cl.tokens_out += n
        self.comp_sum += n
        self.outstanding -= n
        D[COMP, :n] += 1
        rem = D[REM, :n]
        rem -= 1
        if rem.min() > 0:
            return
        rows = np.flatnonzero(rem <= 0)
        now = self.env.now
        for r in rows.tolist():
            rid = int(D[RID, r])
            pinned, keys = self.keys.pop(rid, ((), None))
            self._release(self._held(r), pinned, keys, rid, int(D[COMP, r]))
            cl.on_finish(rid, now, self)
        self._remove_rows(rows)

    def _run_pipelined(self):
        """Up to pp micro-batches in flight; a new one starts each stage time."""
        env = self.env
        inflight: deque = deque()
        next_launch = 0.0
        while True:
            now = env.now
            while inflight and inflight[0][0] <= now:
                self._complete(inflight.popleft()[1])
            if len(inflight) < self.cfg.pp and now >= next_launch:
                plan = self._schedule()
                if plan is not None:
                    step, stage = self._step_time(plan, stages=True)
                    self.busy_s += stage
                    self.iterations += 1
                    self._mark_busy(plan, True)
                    inflight.append((now + step, plan))
                    next_launch = now + stage
            waits = []
            if inflight:
                waits.append(inflight[0][0])
            if len(inflight) < self.cfg.pp and next_launch > now:
                waits.append(next_launch)
            self._idle = env.event()
            if waits:
                yield env.any_of([self._idle, env.timeout(min(waits) - now)])
            else:
                yield self._idle
            self._idle = None

    def _mark_busy(self, plan: Plan, busy: bool) -> None:
        for p in plan.prefills:
            p.busy = busy
        if plan.n_dec:
            rows = np.flatnonzero(np.isin(self.D[RID, :self.n], plan.dec))
            self.D[BUSY, rows] = 1 if busy else 0

    # --- timing ------------------------------------------------------------------------------
    def _step_time(self, plan: Plan, stages: bool = False):
        pre = [(c, min(p.computed, self.cap) if self.cap else p.computed)
               for p, c in zip(plan.prefills, plan.chunks, strict=True)]
        cm = self.cm
        if stages:
            from costmodel.batch import Batch

            br = cm.step(Batch(tuple(pre), (), 1), _decode=(plan.n_dec, plan.ctx_sum, plan.q))
            t, stage = br.step_time_s, br.stage_time_s
        else:
            t = cm.step_time_s(pre, plan.n_dec, plan.ctx_sum, plan.q)
        extra = plan.extra_s
        if self.spec is not None and plan.k:
            extra += self.spec.draft_time_s(pre, plan.n_dec, plan.ctx_sum, plan.k)
        if self.timeline is not None and self.env.now >= self._next_sample:
            self._sample()
        return (t + extra, stage + extra) if stages else t + extra

    def _sample(self) -> None:
        self._next_sample = self.env.now + self.cl.timeline_dt
        self.timeline.append((self.env.now, self.pool.in_use() / max(self.pool.total, 1),
                              len(self.waiting), self.num_running()))

    # --- scheduling --------------------------------------------------------------------------
    def _schedule(self) -> Plan | None:
        plan = Plan()
        budget = self.cfg.max_num_batched_tokens
        if self.pending:
            self.cl.admit_transfers(self)
        preempted = False
        if self.cfg.policy == "decode_first":
            budget, preempted = self._schedule_decodes(plan, budget)
            budget, p2 = self._schedule_running_prefills(plan, budget)
            if not (preempted or p2):
                self._admit(plan, budget)
        else:
            budget, preempted = self._schedule_running_prefills(plan, budget)
            if not preempted:
                budget = self._admit(plan, budget)
            budget, _ = self._schedule_decodes(plan, budget)
        if not plan.prefills and not plan.n_dec:
            return None
        used = self.pool.in_use()
        if used > self.peak_blocks:
            self.peak_blocks = used
        return plan

    def _decode_rows(self):
        """Rows of decoding sequences free to run (pp > 1: not in a micro-batch in flight)."""
        if self.cfg.pp == 1:
            return None
        return np.flatnonzero(self.D[BUSY, :self.n] == 0)

    def _schedule_decodes(self, plan: Plan, budget: int) -> tuple[int, bool]:
        preempted = False
        if self.n == 0 or budget <= 0:
            return budget, preempted
        D, bs, cap = self.D, self.cfg.block_size, self.cap
        while self.n:
            n = self.n
            rows = self._decode_rows()
            cnt = n if rows is None else rows.size
            if cnt == 0:
                return budget, preempted
            k = 0
            if self.spec is not None:
                ctx = self.comp_sum if cap is None and rows is None else self._ctx_sum(rows)
                k = self.spec.choose_k(cnt, float(ctx))
            q = k + 1
            if cnt * q > budget:  # the earliest admitted fit in the budget (vLLM's running order)
                keep = budget // q
                if keep == 0:
                    return budget, preempted
                base = np.arange(n) if rows is None else rows
                rows = base[np.argsort(D[ORDER, base], kind="stable")[:keep]]
                cnt = keep
            comp = D[COMP, :n] if rows is None else D[COMP, rows]
            alloc = D[ALLOC, :n] if rows is None else D[ALLOC, rows]
            if q == 1 and cap is None:
                # plain decode: a sequence needs one more block exactly when its blocks are full
                mask = comp >= alloc
                total = int(np.count_nonzero(mask))
                need = None
            else:
                kvt = comp + q if cap is None else np.minimum(comp + q, cap)
                need = (kvt - alloc + (bs - 1)) // bs
                np.maximum(need, 0, out=need)
                total = int(need.sum())
            if self.pool.allocate(total):
                if total:
                    if rows is None:
                        if need is None:
                            np.add(D[ALLOC, :n], bs, out=D[ALLOC, :n], where=mask)
                        else:
                            D[ALLOC, :n] += need * bs
                    else:
                        D[ALLOC, rows] += (mask * bs) if need is None else need * bs
                plan.dec = None if rows is None else D[RID, rows].copy()
                plan.n_dec, plan.q, plan.k = cnt, q, k
                plan.ctx_sum = float(self.comp_sum if cap is None and rows is None
                                     else self._ctx_sum(rows))
                return budget - cnt * q, preempted
            victim = self._victim()
            if self._stall_for(victim):  # only younger requests in flight hold the blocks
                return budget, True
            self._preempt(victim)
            preempted = True
        return budget, preempted

    def _ctx_sum(self, rows) -> int:
        """KV tokens the decode attention reads (each sequence's context, capped by the budget)."""
        comp = self.D[COMP, :self.n] if rows is None else self.D[COMP, rows]
        return int(comp.sum() if self.cap is None else np.minimum(comp, self.cap).sum())

    def _schedule_running_prefills(self, plan: Plan, budget: int) -> tuple[int, bool]:
        preempted = False
        bs, cap, chunk_max = self.cfg.block_size, self.cap, self.cfg.chunk_size
        i = 0
        while i < len(self.prefilling) and budget > 0:
            p = self.prefilling[i]
            if p.busy:
                i += 1
                continue
            chunk = min(p.target - p.computed, chunk_max, budget)
            kvt = p.computed + chunk if cap is None else min(p.computed + chunk, cap)
            need = max(0, -(-kvt // bs) - p.hitb - p.held)
            stalled = False
            while not self.pool.allocate(need):
                victim = self._victim(prefills_only=True)
                preempted = True
                if self._stall_for(victim):
                    stalled = True
                    break
                self._preempt(victim)
                if victim is p:
                    break
            else:
                p.held += need
                p.busy = True
                plan.prefills.append(p)
                plan.chunks.append(chunk)
                budget -= chunk
                i += 1
                continue
            if stalled:  # p waits for the micro-batches in flight; it keeps its place
                i += 1
            # else p itself was preempted: the list shrank at p's position or later
        return budget, preempted

    def _admit(self, plan: Plan, budget: int) -> int:
        if not self.waiting:
            return budget
        cfg, cl = self.cfg, self.cl
        bs, cap = cfg.block_size, self.cap
        while self.waiting and budget > 0 and self.num_running() < cfg.max_num_seqs:
            rid = self.waiting[0]
            gen = self.resume.get(rid, 0)
            prompt = cl.input_len[rid]
            target = prompt + gen
            keys, g, h = None, 0, 0
            if self.cache is not None:
                keys = cl.hash_keys(rid)
                if keys:
                    g, h = self.cache.match(keys)
                    lim = (target - 1) // cfg.hash_block_tokens
                    g = min(g, lim)
                    h = min(h, lim - g)
            hit = (g + h) * cfg.hash_block_tokens
            left = target - hit
            chunk = min(left, cfg.chunk_size, budget)
            if chunk < left and not cfg.enable_chunked_prefill and budget < cfg.max_num_batched_tokens:
                break
            hitb = g * self.cache.bpe if g else 0
            kvt = hit + chunk if cap is None else min(hit + chunk, cap)
            need = max(0, -(-kvt // bs) - hitb)
            pinned = keys[:g] if g else ()
            if g:
                self.cache.pin(pinned)
            if self.pool.available() - need < cfg.watermark_blocks or not self.pool.allocate(need):
                if g:
                    self.cache.unpin(pinned)
                break
            self.waiting.popleft()
            recompute = rid in self.resume
            if recompute:
                del self.resume[rid]
            host_s = 0.0
            if h:
                self.cache.take_from_host(keys[g:g + h])
                host_s = h * cfg.host_load_s_per_entry
                self.cache.host_hit_tokens += h * cfg.hash_block_tokens
            if self.cache is not None and not recompute:
                self.cache.lookup_tokens += prompt
                self.cache.hit_tokens += hit
            p = Prefill(rid, target, hit, gen, cl.output_len[rid], hitb, keys, pinned, self.order,
                        recompute, host_s)
            self.order += 1
            p.held = need
            if not recompute:
                self.outstanding -= hit
            cl.on_scheduled(rid, self.env.now, hit)
            p.busy = True
            self.prefilling.append(p)
            plan.prefills.append(p)
            plan.chunks.append(chunk)
            plan.extra_s += host_s
            budget -= chunk
        return budget

    def _stall_for(self, victim) -> bool:
        """With pipeline micro-batches in flight, a request is never preempted to make room
        for a younger one: when the only request that could go is older than one in flight, the
        scheduler waits for the in-flight micro-batch instead (it frees or keeps the blocks; the
        younger request, once back, preempts itself first). Without this rule two requests on
        a KV cache that holds about one of them preempt each other forever."""
        if self.cfg.pp == 1:
            return False
        young = max((p.order for p in self.prefilling if p.busy), default=-1)
        if self.n:
            busy = self.D[BUSY, :self.n] != 0
            if busy.any():
                young = max(young, int(self.D[ORDER, :self.n][busy].max()))
        if victim is None:
            return young >= 0
        order = victim.order if isinstance(victim, Prefill) else int(self.D[ORDER, victim])
        return young > order

    def _victim(self, prefills_only: bool = False):
        """The most recently admitted running request that is neither in this step's plan nor
        in flight (None if there is none)."""
        best_o, best = -1, None
        if self.n and not prefills_only:
            rows = self._decode_rows()
            if rows is None:
                r = int(np.argmax(self.D[ORDER, :self.n]))
                best_o, best = int(self.D[ORDER, r]), r
            elif rows.size:
                r = int(rows[np.argmax(self.D[ORDER, rows])])
                best_o, best = int(self.D[ORDER, r]), r
        for p in self.prefilling:
            if not p.busy and p.order > best_o:
                best_o, best = p.order, p
        return best

    def _preempt(self, best) -> None:
        if best is None:
            raise RuntimeError("KV blocks exhausted with nothing left to preempt")
        self.preemptions += 1
        if self.preemptions > PREEMPTIONS_PER_REQUEST * len(self.cl.output_len) + 1000:
            self._livelock()
        if isinstance(best, Prefill):
            self.prefilling.remove(best)
            rid, gen = best.rid, best.gen
            self._release(best.held, best.pinned, best.keys, rid, best.computed)
        else:
            rid, comp = int(self.D[RID, best]), int(self.D[COMP, best])
            gen = self.cl.output_len[rid] - int(self.D[REM, best])
            pinned, keys = self.keys.pop(rid, ((), None))
            self._release(self._held(best), pinned, keys, rid, comp)
            self._remove_rows(np.array([best]))
        self.resume[rid] = gen
        self.waiting.appendleft(rid)
        self.cl.on_preempted(rid)

    def _livelock(self) -> None:
        """Requests that keep preempting each other and never finish (seen with pipeline
        micro-batches in flight on a KV cache that holds barely one request): stop with the
        cause rather than simulate forever."""
        c = self.cfg
        raise ServePlanError(
            f"simulation stopped: replica {self.idx} preempted {self.preemptions} times for "
            f"{len(self.cl.output_len)} requests without finishing them; its KV cache "
            f"({c.kv_blocks} blocks of {c.block_size} tokens) cannot hold the requests its "
            f"{self.cm.pp} pipeline stage(s) keep in flight; expected more KV memory "
            "(gpu_memory_utilization, kv_blocks), a smaller kv_budget_tokens, or fewer stages")

    # --- completion --------------------------------------------------------------------------
    def _complete(self, plan: Plan) -> None:
        now, cl = self.env.now, self.cl
        if self.cfg.pp > 1:
            self._mark_busy(plan, False)
        for p in plan.prefills:
            p.busy = False
        if plan.n_dec:
            self._complete_decodes(plan, now)
        for p, c in zip(plan.prefills, plan.chunks, strict=True):
            p.computed += c
            if not p.recompute:
                self.outstanding -= c
            if p.computed < p.target:
                continue
            self.prefilling.remove(p)
            p.gen += 1
            self.outstanding -= 1
            cl.on_first_token(p.rid, now)
            if p.keys is not None and self.cache is not None:
                self._publish(p)
            if p.gen >= p.out:
                self._release(p.held, p.pinned, p.keys, p.rid, p.computed)
                cl.on_finish(p.rid, now, self)
            elif self.cfg.role == "prefill":
                cl.handoff(self, p)
            else:
                self.add_decoder(p.rid, p.computed, p.gen, p.out, p.held, p.hitb)
                if p.keys is not None and self.cache is not None:
                    self.keys[p.rid] = (p.pinned, p.keys)

    def add_decoder(self, rid, computed, gen, out, held, hitb) -> None:
        r = self.n
        self.D[:, r] = (rid, computed, out - gen, (held + hitb) * self.cfg.block_size, hitb, self.order, 0)
        self.order += 1
        self.n = r + 1
        self.comp_sum += computed

    def _held(self, r: int) -> int:
        """Private KV blocks of decoding row r."""
        return int(self.D[ALLOC, r]) // self.cfg.block_size - int(self.D[HITB, r])

    def _complete_decodes(self, plan: Plan, now: float) -> None:
        D, cl = self.D, self.cl
        if plan.dec is None:
            sel = slice(0, plan.n_dec)
        else:
            sel = np.flatnonzero(np.isin(D[RID, :self.n], plan.dec))
        if self.spec is not None and plan.k:
            tok = self.spec.sample_tokens(plan.n_dec, plan.k)
            np.minimum(tok, D[REM, sel], out=tok)
            emitted = int(tok.sum())
        else:
            tok = 1
            emitted = plan.n_dec
        cl.spec_seq_steps += plan.n_dec
        cl.spec_tokens += emitted
        D[COMP, sel] += tok
        rem = D[REM, sel]
        rem -= tok
        if plan.dec is not None:
            D[REM, sel] = rem
        self.comp_sum += emitted
        self.outstanding -= emitted
        cl.tokens_out += emitted
        if rem.min() > 0:
            return
        done = np.flatnonzero(rem <= 0)
        rows = done if plan.dec is None else sel[done]
        for r in rows.tolist():
            rid = int(D[RID, r])
            pinned, keys = self.keys.pop(rid, ((), None))
            self._release(self._held(r), pinned, keys, rid, int(D[COMP, r]))
            cl.on_finish(rid, now, self)
        self._remove_rows(rows)

    def _remove_rows(self, rows: np.ndarray) -> None:
        self.comp_sum -= int(self.D[COMP, rows].sum())
        keep = np.ones(self.n, bool)
        keep[rows] = False
        m = int(keep.sum())
        self.D[:, :m] = self.D[:, :self.n][:, keep]
        self.n = m

    def _publish(self, p: Prefill) -> None:
        """A finished prompt's full blocks join the prefix cache at once (pinned by p), as vLLM
        caches each block when it fills: concurrent requests with the same prefix share them."""
        full = self.cl.input_len[p.rid] // self.cfg.hash_block_tokens
        fresh = [k for k in p.keys[len(p.pinned):full] if k not in self.cache.entries]
        if not fresh:
            return
        self.cache.insert(fresh)
        self.cache.pin(fresh)
        moved = len(fresh) * self.cache.bpe
        self.pool.release(moved)
        p.held -= moved
        p.hitb += moved
        p.pinned = list(p.pinned) + fresh

    def _release(self, held: int, pinned, keys, rid: int, computed: int) -> None:
        """Free a request's private blocks; its full prompt blocks stay cached (vLLM keeps them)."""
        self.pool.release(held)
        c = self.cache
        if c is None or keys is None:
            return
        full = min(computed, self.cl.input_len[rid]) // self.cfg.hash_block_tokens
        if full:
            c.insert(keys[:full])
            assert self.pool.free >= 0, "prefix cache grew past the KV pool"
        if pinned:
            c.unpin(pinned)
