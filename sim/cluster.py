"""The cluster: arrivals, routing, rejections, prefill -> decode KV transfers, per-request log.

Open-loop arrivals are one simpy process that sleeps until each request's arrival time.
Closed-loop clients send their next request the moment one finishes (or is rejected).
A request is rejected (counted, never queued) when prompt + output exceeds the model's
context length, or its KV blocks cannot fit the replica's pool even when alone.

Disaggregated: a request is prefilled on a prefill replica (which samples its first token),
then a decode replica is picked; once that replica has KV blocks for the prompt (admission
waits for memory), the prompt's KV crosses the prefill replica's link, FIFO, in
latency + bytes / bandwidth; the prefill replica frees its blocks when the transfer ends and
the request joins the decode batch.

Per-request log: append-only columns, one timestamp per event (arrival, first scheduled,
first token, KV ready, finish) plus counts, written as the events happen.
"""

from __future__ import annotations

import math

import numpy as np

from sim.workload import RequestArrays


class Cluster:
    def __init__(self, env, arrays: RequestArrays, *, timeline_dt: float | None, closed_loop: int | None,
                 record_steps: bool = False):
        self.env = env
        self.arrays = arrays
        n = len(arrays)
        self.n = n
        self.input_len = arrays.input_len.tolist()
        self.output_len = arrays.output_len.tolist()
        self.arrival_s = arrays.arrival_s.copy()
        nan = np.full(n, np.nan)
        self.first_sched_s, self.first_token_s, self.finish_s, self.kv_ready_s = (
            nan.copy(), nan.copy(), nan.copy(), nan.copy())
        self.replica_idx = np.full(n, -1, np.int32)
        self.preempt_count = np.zeros(n, np.int32)
        self.hit_tokens = np.zeros(n, np.int32)
        self.rejected = np.zeros(n, bool)
        self.timeline_dt = timeline_dt
        self.record_steps = record_steps
        self.finish_replica = np.full(n, -1, np.int32)
        self.closed_loop = closed_loop
        self.next_rid = 0
        self.tokens_out = 0
        self.spec_seq_steps = 0
        self.spec_tokens = 0
        self.in_system = 0
        self.area = 0.0
        self._last_t = 0.0
        self.done = 0
        self._to_send = 0
        self._sending = False
        self.router = None  # set by the engine: pool routers
        self.decode_router = None
        self.links: dict = {}
        self.reject_fn = None

    # --- per-request hooks (called by replicas) ----------------------------------------------
    def hash_keys(self, rid: int):
        a = self.arrays
        if a.hash_ids is None:
            return None
        return a.hash_ids[a.hash_offsets[rid]:a.hash_offsets[rid + 1]].tolist()

    def on_scheduled(self, rid: int, now: float, hit: int) -> None:
        if self.first_sched_s[rid] != self.first_sched_s[rid]:  # NaN: first time
            self.first_sched_s[rid] = now
            self.hit_tokens[rid] = hit

    def on_first_token(self, rid: int, now: float) -> None:
        self.tokens_out += 1
        if self.first_token_s[rid] != self.first_token_s[rid]:
            self.first_token_s[rid] = now

    def on_preempted(self, rid: int) -> None:
        self.preempt_count[rid] += 1

    def on_finish(self, rid: int, now: float, replica) -> None:
        """`now`: when the client sees the last token (after the engine's step when the API
        server is behind with its streamed chunks; the engine has already freed the request)."""
        self.finish_s[rid] = now
        self.finish_replica[rid] = replica.idx
        late = now - self.env.now
        if late > 0.0:
            ev = self.env.timeout(late)
            ev.callbacks.append(lambda _ev, now=now: self._leave(now))
            return
        self._leave(now)

    def _leave(self, now: float) -> None:
        self.area += self.in_system * (now - self._last_t)
        self._last_t = now
        self.in_system -= 1
        self.done += 1
        if self.closed_loop:
            # iterative, not recursive: a run of rejected requests must not grow the stack
            self._to_send += 1
            if self._sending:
                return
            self._sending = True
            while self._to_send and self.next_rid < self.n:
                self._to_send -= 1
                self.dispatch(self.next_rid)
            self._to_send = 0
            self._sending = False

    # --- arrivals ----------------------------------------------------------------------------
    def arrivals(self):
        env, t = self.env, self.arrival_s
        for rid in range(self.n):
            dt = t[rid] - env.now
            if dt > 0:
                yield env.timeout(dt)
            self.dispatch(rid)

    def start_closed_loop(self) -> None:
        for _ in range(min(self.closed_loop, self.n)):
            if self.next_rid >= self.n:
                break
            self.dispatch(self.next_rid)

    def dispatch(self, rid: int) -> None:
        now = self.env.now
        self.next_rid = max(self.next_rid, rid + 1)
        self.arrival_s[rid] = now
        self.area += self.in_system * (now - self._last_t)
        self._last_t = now
        self.in_system += 1
        prompt, out = self.input_len[rid], self.output_len[rid]
        if self.reject_fn(prompt, out):
            self.rejected[rid] = True
            self._leave(now)
            return
        keys = self.hash_keys(rid) if self.router.policy == "prefix_affinity" else None
        r = self.router.pick(prompt + out, keys)
        self.replica_idx[rid] = r.idx
        r.outstanding += prompt + (1 if r.cfg.role == "prefill" else out)
        fe, lat = r.frontend_s(prompt), r.cm.eff.request_latency_s
        if fe <= 0.0 and lat <= 0.0:
            r.submit(rid)
            return
        # the request reaches the replica's API server after the fixed latency every request
        # pays; the server takes requests one at a time (parse, template, tokenise) and hands
        # each to the engine when done with it
        done = max(now + lat, r.frontend_free_at) + fe
        r.frontend_free_at = done
        ev = self.env.timeout(done - now)
        ev.callbacks.append(lambda _ev, r=r, rid=rid: r.submit(rid))

    # --- disaggregation ----------------------------------------------------------------------
    def handoff(self, src, p) -> None:
        """A prefill replica finished a prompt: queue it at a decode replica for KV memory."""
        rid = p.rid
        dst = self.decode_router.pick(self.output_len[rid] - 1)
        dst.outstanding += self.output_len[rid] - p.gen
        dst.pending.append((p, src))
        dst.wake()

    def admit_transfers(self, dst) -> None:
        """Reserve KV blocks on `dst` for queued prompts (FIFO) and start their transfers."""
        bs, cap = dst.cfg.block_size, dst.cap
        while dst.pending and dst.num_running() < dst.cfg.max_num_seqs:
            p, src = dst.pending[0]
            kvt = p.computed if cap is None else min(p.computed, cap)
            need = -(-(kvt + 1) // bs)
            if not dst.pool.allocate(need):
                return
            dst.pending.popleft()
            dst.incoming += 1
            link = self.links[src.idx]
            now = self.env.now
            start = max(now, link["free_at"])
            end = start + link["latency_s"] + self.kv_bytes_per_token * p.computed / link["bw_bytes_s"]
            link["free_at"] = end
            ev = self.env.timeout(end - now)
            ev.callbacks.append(lambda _ev, p=p, src=src, dst=dst, need=need: self._arrived(p, src, dst, need))

    def _arrived(self, p, src, dst, need: int) -> None:
        now = self.env.now
        src._release(p.held, p.pinned, p.keys, p.rid, p.computed)
        src.wake()
        dst.incoming -= 1
        self.kv_ready_s[p.rid] = now
        dst.add_decoder(p.rid, p.computed, p.gen, p.out, need, 0)
        dst.wake()

    # --- summary -----------------------------------------------------------------------------
    def close(self) -> None:
        now = self.env.now
        self.area += self.in_system * (now - self._last_t)
        self._last_t = now

    def mean_in_system(self) -> float:
        return self.area / self._last_t if self._last_t > 0 else math.nan
