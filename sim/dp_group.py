"""A data-parallel MoE replica: `dp` attention ranks stepping together through the MoE layers.

vLLM's `--data-parallel-size N --enable-expert-parallel` and SGLang's `--enable-dp-attention`
run one scheduler per attention rank: each rank admits, batches and caches its own requests
(its own KV pool, its own `max_num_seqs` and token budget), and the router spreads requests
over the ranks as over replicas. Their forward passes are not independent: every MoE layer
exchanges tokens between all ranks (dispatch and combine), so each layer waits for the slowest
rank, and a rank with nothing to do still runs a dummy batch to take part. `DPGroup` is the
one simpy process that drives the ranks (each a `Replica`, whose scheduling and completion it
reuses): each iteration every rank schedules its batch, the group takes
`CostModel.dp_step_time_s` of all of them, and every rank's batch completes at that time.
Under SGLang's overlap scheduler each rank decides its next batch as this step starts
(`overlap_lag`, sim/scheduler.py), as a replica of its own does.
"""

from __future__ import annotations

from sim.replica import Replica

_FAST = object()  # a rank's batch is "every running sequence decodes once" (Replica's fast path)


class DPGroup:
    def __init__(self, ranks: list[Replica], cm):
        self.ranks, self.cm = ranks, cm
        self.env = ranks[0].env

    def run(self):
        env, ranks = self.env, self.ranks
        fast_ok = all(r.spec is None and r.cap is None and r.timeline is None for r in ranks)
        while True:
            # a rank whose running sequences all just decode takes Replica's fast path
            batches = [_FAST if (fast_ok and r.n and not (r.waiting or r.prefilling or r.pending)
                                 and r._fast_alloc()) else r._schedule() for r in ranks]
            if all(b is None for b in batches):
                if any([r._see_all() for r in ranks]):  # every rank's (overlap_lag)
                    continue
                idle = env.event()
                for r in ranks:  # a request reaching any rank wakes the group
                    r._idled()
                    r._idle = idle
                yield idle
                for r in ranks:
                    r._idle = None
                continue
            args, extra = [], 0.0
            for r, b in zip(ranks, batches, strict=True):
                if b is None:
                    args.append(((), 0, 0.0, 1))
                    continue
                if b is _FAST:
                    args.append(((), r.n, r.comp_sum, 1))
                    continue
                pre = [(c, min(p.computed, r.cap) if r.cap else p.computed)
                       for p, c in zip(b.prefills, b.chunks, strict=True)]
                args.append((pre, b.n_dec, b.ctx_sum, b.q))
                extra = max(extra, b.extra_s)
                if r.timeline is not None and env.now >= r._next_sample:
                    r._sample()
            dt = self.cm.dp_step_time_s(args) + extra
            for r, b, (_pre, n_dec, ctx, q) in zip(ranks, batches, args, strict=True):
                r.cut = env.now  # the next decision is made as this step starts (overlap_lag)
                if b is None:
                    continue
                if r.step_log is not None:
                    pre = () if b is _FAST else tuple((c, p.computed) for p, c in
                                                      zip(b.prefills, b.chunks, strict=True))
                    r.step_log.append((env.now, dt, pre, n_dec, ctx, q))
                r.busy_s += dt
                r.iterations += 1
            yield env.timeout(dt)
            for r, b in zip(ranks, batches, strict=True):
                if b is _FAST:
                    r._fast_complete()
                elif b is not None:
                    r._complete(b)
