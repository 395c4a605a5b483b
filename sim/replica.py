"""One engine replica: vLLM-V1-style continuous batching over a paged KV cache.

Each engine iteration is one simpy timeout. What an iteration runs (decodes and prompt chunks
under the token budget, admissions, preemptions) is the batching policy of sim/scheduler.py,
the base class of `Replica`; this module is the replica's mechanics: its state, its intake,
the loop that runs iterations (one at a time, or up to `pp` pipeline micro-batches in flight),
their timing, and applying a finished iteration (tokens emitted, prompts done, requests
finished, KV blocks freed and published to the prefix cache).

Iteration time comes from the cost model for the exact batch (`step_time_s`; with pipeline
parallelism a new micro-batch starts every `stage_time_s` while up to `pp` are in flight, and a
request sits in at most one). Decoding sequences live in one int64 array (a row each), so
bookkeeping per iteration is a handful of vectorised operations, not a loop over sequences;
an iteration in which every running sequence just decodes takes an inlined fast path, and the
run of such iterations that ends before the next event anywhere in the simulation (an arrival,
a finished request, another replica's step) is applied at once, as one timeout (`_fast_window`:
the same times, blocks and stream to the bit; tests/sim/test_fast_window.py).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

from costmodel.decode_timer import cached_step_timer
from sim.kvcache import BlockPool, PrefixCache
from sim.scheduler import (
    ALLOC,
    BUSY,
    COMP,
    HITB,
    NFIELD,
    RATIO_INIT,
    REM,
    RID,
    Prefill,
    Scheduler,
    StepBatch,
)


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
    # SGLang: max_num_batched_tokens is a soft budget (--max-prefill-tokens) that the last
    # prompt admitted may overrun, and this a hard cap on a batch's prompt tokens
    # (--chunked-prefill-size); 0 = the budget is hard (vLLM)
    batch_tokens_hard: int = 0
    # SGLang: admit a prompt only when the pool holds its outputs too (Scheduler._reserve_ok)
    reserve_outputs: bool = False
    overlap_lag: bool = False  # SGLang's overlap scheduler: Scheduler's module doc


class Replica(Scheduler):
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
        self.stream_free_at = 0.0  # when the API server has sent every chunk handed to it
        self.busy_s = 0.0
        self.iterations = 0
        self.preemptions = 0
        self.peak_blocks = 0
        self._idle = None
        self.timeline = [] if cluster.timeline_dt else None
        # every iteration (start, duration, prompt chunks ((tokens, cached), ...), decodes,
        # their context, query tokens each) when the cluster records steps (sim.runs.fit)
        self.step_log = [] if cluster.record_steps else None
        self._next_sample = 0.0
        # SGLang's admission (sim/scheduler.py `_reserve_ok`): its estimate of the outputs still
        # to come, whether a retract set it this iteration, and its batch_is_full latch
        self.new_token_ratio = RATIO_INIT
        self.retracted = self.batch_full = False
        # overlap_lag: when each waiting request reached the engine; the latest such time that
        # the batch being decided sees (the start of the one before it; any, after an idle loop)
        self.seen: dict[int, float] = {}
        self.cut = np.inf

    # --- intake ------------------------------------------------------------------------------
    def frontend_s(self, prompt: int) -> float:
        """API-server time of one request of `prompt` tokens before the engine sees it."""
        e = self.cm.eff
        return e.frontend_s + e.frontend_per_token_s * prompt

    def delivered(self, now: float, chunks: int) -> float:
        """When the client sees a step's output: the API server sends one chunk per request
        that produced tokens, one after another, after the chunks it already holds."""
        s = self.cm.eff.frontend_stream_s
        if s <= 0.0 or chunks <= 0:
            return now
        t = max(now, self.stream_free_at) + chunks * s
        self.stream_free_at = t
        return t

    def submit(self, rid: int) -> None:
        self.waiting.append(rid)
        if self.cfg.overlap_lag:
            self.seen[rid] = self.env.now
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
        while True:
            if fast_ok and self.n and not (self.waiting or self.prefilling or self.pending) \
                    and self.timeline is None:
                # pure decode iterations (the common case under load): those before the next
                # event anywhere in the simulation at once, else this one inlined
                delay, dt = self._fast_window()
                if delay is not None:
                    yield timeout(delay)
                    continue
                dt = self._fast_decode(dt)
                if dt is not None:
                    if self.step_log is not None:
                        self.step_log.append((env.now, dt, (), self.n, self.comp_sum, 1))
                    self.busy_s += dt
                    self.iterations += 1
                    self.cut = env.now
                    yield timeout(dt)
                    self._fast_complete()
                    continue
            batch = self._schedule()
            if batch is None and self._see_all():
                continue
            if batch is None:
                self._idled()
                self._idle = env.event()
                yield self._idle
                self._idle = None
                continue
            dt = self._step_time(batch) if batch.prefills or batch.k or self.timeline is not None else \
                cached_step_timer(self.cm, batch.n_dec)(batch.ctx_sum)
            if self.step_log is not None:
                self.step_log.append((env.now, dt, tuple((c, p.computed) for p, c in
                                                         zip(batch.prefills, batch.chunks, strict=True)),
                                      batch.n_dec, batch.ctx_sum, batch.q))
            self.busy_s += dt
            self.iterations += 1
            self.cut = env.now
            yield timeout(dt)
            self._complete(batch)

    def _fast_decode(self, dt: float | None = None) -> float | None:
        """Every running sequence decodes one token (taking `dt`, this iteration's time, when
        already known); None when the step needs the full scheduler (token budget or KV blocks
        short)."""
        if not self._fast_alloc():
            return None
        return cached_step_timer(self.cm, self.n)(self.comp_sum) if dt is None else dt

    def _fast_window(self) -> tuple[float | None, float | None]:
        """Run the pure decode iterations that end before the next event of the simulation and
        before any sequence finishes, all at once: nothing else can happen in between, so
        applying them together (each iteration's time, KV blocks, API-server stream, SGLang's
        estimate and the step log, in order) is what one-at-a-time gives, to the bit. Returns
        (the delay to their end, None), or (None, the next iteration's time when it was timed)
        when fewer than two qualify: the caller runs that one alone."""
        n, D, cfg, env = self.n, self.D, self.cfg, self.env
        if n > cfg.max_num_batched_tokens:
            return None, None
        now, horizon, step_time, cs = env.now, env.peek(), cached_step_timer(self.cm, n), self.comp_sum
        dt0 = dt = step_time(cs)
        t = now + dt
        if t >= horizon:  # another event comes first (or ties and was queued first)
            return None, dt0
        rem = D[REM, :n]
        k_max = int(rem.min()) - 1  # iterations before one finishes a sequence
        if k_max < 2:
            return None, dt0
        dts = [dt]
        cs += n
        while len(dts) < k_max:
            dt = step_time(cs)
            if t + dt >= horizon:
                break
            t += dt
            dts.append(dt)
            cs += n
        k = len(dts)
        if k < 2:
            return None, dt0
        # KV blocks: a sequence with `first` = alloc - comp takes a block at iteration `first`
        # (0-based) and every block_size after; the window stops where the free blocks end (an
        # allocation that must evict cached entries runs one at a time)
        comp, alloc, bs = D[COMP, :n], D[ALLOC, :n], cfg.block_size
        first = alloc - comp
        if int(first.min()) < 0:
            return None, dt0
        free = self.pool.free

        def blocks(j: int) -> np.ndarray:
            return np.where(first <= j - 1, (j - 1 - first) // bs + 1, 0)

        while k >= 2 and int(blocks(k).sum()) > free:
            k -= 1
        if k < 2:
            return None, dt0
        t = now
        for dt in dts[:k]:
            t += dt
        if now + (t - now) != t:  # a timeout of that delay would not land on t
            return None, dt0
        m = blocks(k)
        total = int(m.sum())
        if total:
            self.pool.allocate(total)
            alloc += bs * m
            self.peak_blocks = max(self.peak_blocks, self.pool.in_use())
        log, s = self.step_log, self.cm.eff.frontend_stream_s
        t, cs, busy, sfa = now, self.comp_sum, self.busy_s, self.stream_free_at
        for dt in dts[:k]:
            if log is not None:
                log.append((t, dt, (), n, cs, 1))
            busy += dt
            t += dt
            cs += n
            if s > 0.0:
                sfa = max(t, sfa) + n * s
            self._decoded()
        self.busy_s, self.stream_free_at = busy, sfa
        self.iterations += k
        cl = self.cl
        cl.spec_seq_steps += n * k
        cl.spec_tokens += n * k
        cl.tokens_out += n * k
        self.comp_sum += n * k
        self.outstanding -= n * k
        comp += k
        rem -= k
        return t - now, None

    def _fast_alloc(self) -> bool:
        """The KV blocks for every running sequence's next token (False when the step needs the
        full scheduler: token budget or KV blocks short)."""
        n, D = self.n, self.D
        if n > self.cfg.max_num_batched_tokens:
            return False
        comp, alloc = D[COMP, :n], D[ALLOC, :n]
        mask = comp >= alloc
        total = int(np.count_nonzero(mask))
        if total:
            if not self.pool.allocate(total):
                return False
            np.add(alloc, self.cfg.block_size, out=alloc, where=mask)
            self.peak_blocks = max(self.peak_blocks, self.pool.in_use())
        self._fast_n = n
        return True

    def _fast_complete(self) -> None:
        n, D, cl = self._fast_n, self.D, self.cl
        self._decoded()
        seen = self.delivered(self.env.now, n)
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
        for r in rows.tolist():
            rid = int(D[RID, r])
            pinned, keys = self.keys.pop(rid, ((), None))
            self._release(self._held(r), pinned, keys, rid, int(D[COMP, r]))
            cl.on_finish(rid, seen, self)
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
                batch = self._schedule()
                if batch is not None:
                    step, stage = self._step_time(batch, stages=True)
                    self.busy_s += stage
                    self.iterations += 1
                    self._mark_busy(batch, True)
                    inflight.append((now + step, batch))
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
                self._idled()
                yield self._idle
            self._idle = None

    def _mark_busy(self, batch: StepBatch, busy: bool) -> None:
        for p in batch.prefills:
            p.busy = busy
        if batch.n_dec:
            rows = np.flatnonzero(np.isin(self.D[RID, :self.n], batch.dec))
            self.D[BUSY, rows] = 1 if busy else 0

    # --- timing ------------------------------------------------------------------------------
    def _step_time(self, batch: StepBatch, stages: bool = False):
        pre = [(c, min(p.computed, self.cap) if self.cap else p.computed)
               for p, c in zip(batch.prefills, batch.chunks, strict=True)]
        cm = self.cm
        if stages:
            from costmodel.batch import Batch

            br = cm.step(Batch(tuple(pre), (), 1), _decode=(batch.n_dec, batch.ctx_sum, batch.q))
            t, stage = br.step_time_s, br.stage_time_s
        else:
            t = cm.step_time_s(pre, batch.n_dec, batch.ctx_sum, batch.q)
        extra = batch.extra_s
        if self.spec is not None and batch.k:
            extra += self.spec.draft_time_s(pre, batch.n_dec, batch.ctx_sum, batch.k)
        if self.timeline is not None and self.env.now >= self._next_sample:
            self._sample()
        return (t + extra, stage + extra) if stages else t + extra

    def _sample(self) -> None:
        self._next_sample = self.env.now + self.cl.timeline_dt
        self.timeline.append((self.env.now, self.pool.in_use() / max(self.pool.total, 1),
                              len(self.waiting), self.num_running()))

    # --- completion --------------------------------------------------------------------------
    def _complete(self, batch: StepBatch) -> None:
        now, cl = self.env.now, self.cl
        if self.cfg.pp > 1:
            self._mark_busy(batch, False)
        for p in batch.prefills:
            p.busy = False
        firsts = sum(1 for p, c in zip(batch.prefills, batch.chunks, strict=True) if p.computed + c >= p.target)
        seen = self.delivered(now, batch.n_dec + firsts)
        if batch.n_dec and not batch.prefills:
            self._decoded()
        else:
            self.retracted = False
        if batch.n_dec:
            self._complete_decodes(batch, seen)
        for p, c in zip(batch.prefills, batch.chunks, strict=True):
            p.computed += c
            if not p.recompute:
                self.outstanding -= c
            if p.computed < p.target:
                continue
            self.prefilling.remove(p)
            p.gen += 1
            self.outstanding -= 1
            cl.on_first_token(p.rid, seen)
            if p.keys is not None and self.cache is not None:
                self._publish(p)
            if p.gen >= p.out:
                self._release(p.held, p.pinned, p.keys, p.rid, p.computed)
                cl.on_finish(p.rid, seen, self)
            elif self.cfg.role == "prefill":
                cl.handoff(self, p)
            else:
                self.add_decoder(p.rid, p.computed, p.gen, p.out, p.held, p.hitb)
                if p.keys is not None and self.cache is not None:
                    self.keys[p.rid] = (p.pinned, p.keys)

    def add_decoder(self, rid, computed, gen, out, held, hitb) -> None:
        r = self.n
        if not r:  # SGLang starts a new running batch, whose batch_is_full is clear
            self.batch_full = False
        self.D[:, r] = (rid, computed, out - gen, (held + hitb) * self.cfg.block_size, hitb, self.order, 0)
        self.order += 1
        self.n = r + 1
        self.comp_sum += computed

    def _held(self, r: int) -> int:
        """Private KV blocks of decoding row r."""
        return int(self.D[ALLOC, r]) // self.cfg.block_size - int(self.D[HITB, r])

    def _complete_decodes(self, batch: StepBatch, now: float) -> None:
        D, cl = self.D, self.cl
        if batch.dec is None:
            sel = slice(0, batch.n_dec)
        else:
            sel = np.flatnonzero(np.isin(D[RID, :self.n], batch.dec))
        if self.spec is not None and batch.k:
            tok = self.spec.sample_tokens(batch.n_dec, batch.k)
            np.minimum(tok, D[REM, sel], out=tok)
            emitted = int(tok.sum())
        else:
            tok = 1
            emitted = batch.n_dec
        cl.spec_seq_steps += batch.n_dec
        cl.spec_tokens += emitted
        D[COMP, sel] += tok
        rem = D[REM, sel]
        rem -= tok
        if batch.dec is not None:
            D[REM, sel] = rem
        self.comp_sum += emitted
        self.outstanding -= emitted
        cl.tokens_out += emitted
        if rem.min() > 0:
            return
        done = np.flatnonzero(rem <= 0)
        rows = done if batch.dec is None else sel[done]
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
        """Free a request's private blocks; its full prompt blocks stay cached (vLLM keeps them).
        The running batch shrank, which lifts SGLang's batch_is_full latch."""
        self.batch_full = False
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
