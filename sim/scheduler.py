"""The batching policy of one replica: what the next engine iteration runs, which waiting
requests are admitted, and which running request is preempted when KV blocks run out.

The scheduler fills a token budget (`max_num_batched_tokens`) shared by decodes and prefill
chunks:
- `decode_first` (vLLM V1): running requests first, in admission order (decodes, then
  partially prefilled prompts), then waiting requests while the budget, `max_num_seqs` and the
  KV blocks (less a watermark) allow; no new request is admitted in a step that preempted.
- `prefill_first`: prompts first (running chunks, then new admissions), decodes take what is
  left of the budget (SGLang with `--enable-mixed-chunk`).
- `prefill_only` (SGLang's default): an iteration that can run prompt chunks (running ones,
  then new admissions, within the budget) runs only those; the running decodes wait for an
  iteration with no prompt to run, and then all decode together.
- `prefill_mixed` (SGLang with `--enable-mixed-chunk`): prompt chunks within the budget, and
  every running decode rides along; as SGLang's PrefillAdder does, the decodes riding along
  count against both the prompt budget and the hard chunk (`mixed_with_decode_tokens`).
A prompt advances by at most `chunk_size` tokens per iteration (Sarathi-Serve / SplitFuse).
vLLM admits a prompt when the KV blocks for it are free. SGLang (`reserve_outputs`) admits one
only when the pool also holds the output tokens it may still write (capped at 4,096), beside
what the running requests will still write, estimated as their remaining outputs times a
`new_token_ratio` that starts at 0.7, falls by about 0.001 (0.602 / 600) with each
decode-only iteration to 0.098,
returns to 0.7 whenever the engine idles, and after a preemption is reset to the running
requests' (decoded + 20 each) / (their output lengths) (`_reserve_ok`; SGLang's PrefillAdder
and `retract_decode`). Prompts admitted in the same iteration reserve their whole outputs. A
refusal latches (SGLang's `batch_is_full`): no prompt is admitted again until a running
request finishes or is preempted, the engine idles, or a prompt joins an empty running batch.
SGLang's disaggregated prefill server counts each output as one token and clears the latch every
iteration. SGLang's pool is kept in tokens, so
the unused tail of each running request's last block counts as free. Colocated and prefill
pools; what a decode pool takes in is the KV transfers' admission (`sim.cluster`). An engine
that holds no KV admits the head of the queue whatever it needs.
SGLang's overlap scheduler (`overlap_lag`) decides the next batch as soon as this one is launched,
before this one's results are in: a request that reaches the engine while a batch runs is first
seen by the decision after the next, and joins the batch after the next; an engine with nothing
to run sees it at once. (A request that finishes in a batch also rides in the next one as a
wasted decode there; the simulator does not run that row.)
When a running request needs a KV block and none is free, the most recently admitted running
request is preempted by recompute: its blocks are freed (its full prefix blocks stay in the
prefix cache) and it goes back to the head of the queue; on readmission its prompt and the
tokens it already generated are prefilled again, and that prefill samples its next token. With
pipeline micro-batches in flight, a request is never preempted for a younger one (`_stall_for`).

`Scheduler` is the deciding half of `sim.replica.Replica`, which derives from it: it reads and
updates the replica's state (the decoding-row array `D` and its `n` rows, `comp_sum`, the
`prefilling` list, the `waiting` queue, `resume`, `keys`, the block `pool` and prefix `cache`,
`cfg`, `spec`, the cluster `cl`) and frees KV through the replica's `_release`, `_held` and
`_remove_rows`. It returns a StepBatch; the replica runs the iteration and applies its result.
A base class rather than an object the replica calls, so that every read of that state costs
what it did inside one class: this is the simulator's inner loop.
"""

from __future__ import annotations

import numpy as np

from costmodel.errors import ServePlanError

# fields of the decoding-sequence array D[field, row] (one column per sequence, so each field
# is contiguous): request id, tokens computed (in the KV cache, before any budget cap), output
# tokens still to generate, KV tokens allocated (blocks x block_size, prefix-cache blocks
# included), prefix-cache blocks it shares, admission order, in a micro-batch in flight
RID, COMP, REM, ALLOC, HITB, ORDER, BUSY = range(7)
NFIELD = 7
POLICIES = ("decode_first", "prefill_first", "prefill_only", "prefill_mixed")


# SGLang's admission estimate (`_reserve_ok`): outputs counted up to CLIP_NEW_TOKENS each; the
# running requests' remaining outputs times new_token_ratio, which starts at RATIO_INIT, falls
# by RATIO_DECAY per decode-only iteration to RATIO_MIN (0.7 x 0.14, over 600 iterations) and is
# reset after a preemption to (tokens decoded + RETRACT_STEPS per request) / output lengths
CLIP_NEW_TOKENS = 4096
RATIO_INIT = 0.7
RATIO_MIN = RATIO_INIT * 0.14
RATIO_DECAY = (RATIO_INIT - RATIO_MIN) / 600
RETRACT_STEPS = 20

# a run that preempts this many times per request (plus 1000) is livelocked, not busy: healthy
# runs under tight KV preempt a few times per request
PREEMPTIONS_PER_REQUEST = 200


class Prefill:
    """A running request whose prompt (plus, after a preemption, its generated tokens) is
    still being prefilled."""

    __slots__ = ("rid", "target", "computed", "gen", "out", "held", "hitb", "keys", "pinned",
                 "order", "recompute", "busy", "host_s")

    def __init__(self, rid, target, computed, gen, out, hitb, keys, pinned, order, recompute, host_s):
        self.rid, self.target, self.computed, self.gen, self.out = rid, target, computed, gen, out
        self.held, self.hitb, self.keys, self.pinned = 0, hitb, keys, pinned
        self.order, self.recompute, self.busy, self.host_s = order, recompute, False, host_s


class StepBatch:
    """What one engine iteration runs: `n_dec` decoding sequences of `q` query tokens each
    (k + 1 with k draft tokens) over `ctx_sum` context tokens, and prompt chunks (`prefills`
    and their `chunks` of tokens)."""

    __slots__ = ("dec", "n_dec", "q", "k", "ctx_sum", "prefills", "chunks", "extra_s", "mixed")

    def __init__(self):
        self.dec = None  # positions (pp == 1: None = rows [:n_dec]) or request ids (pp > 1)
        self.n_dec, self.q, self.k, self.ctx_sum = 0, 1, 0, 0.0
        self.prefills: list[Prefill] = []
        self.chunks: list[int] = []
        self.extra_s = 0.0  # host-tier loads
        self.mixed = 0  # prefill_mixed: decodes counted against the prompt budget and chunk


class Scheduler:
    """The batching policy, as a base class of Replica (see the module docstring)."""

    def _schedule(self) -> StepBatch | None:
        batch = StepBatch()
        budget = self.cfg.max_num_batched_tokens
        if self.pending:
            self.cl.admit_transfers(self)
        preempted = False
        if self.cfg.policy == "decode_first":
            budget, preempted = self._schedule_decodes(batch, budget)
            budget, p2 = self._schedule_running_prefills(batch, budget)
            if not (preempted or p2):
                self._admit(batch, budget)
        else:
            if self.cfg.policy == "prefill_mixed" and self.n:
                # SGLang's PrefillAdder takes the decodes that will ride along out of both the
                # prefill budget and the chunk (mixed_with_decode_tokens)
                budget -= self.n
                batch.mixed = self.n
            budget, preempted = self._schedule_running_prefills(batch, budget)
            if not preempted:
                budget = self._admit(batch, budget)
            if self.cfg.policy == "prefill_first":
                budget, _ = self._schedule_decodes(batch, budget)
            elif self.cfg.policy == "prefill_mixed" or not batch.prefills:
                # every running sequence decodes (prefill_only: only when no prompt runs)
                self._schedule_decodes(batch, self.cfg.max_num_seqs * 64)
        if not batch.prefills and not batch.n_dec:
            return None
        used = self.pool.in_use()
        if used > self.peak_blocks:
            self.peak_blocks = used
        return batch

    def _decode_rows(self):
        """Rows of decoding sequences free to run (pp > 1: not in a micro-batch in flight)."""
        if self.cfg.pp == 1:
            return None
        return np.flatnonzero(self.D[BUSY, :self.n] == 0)

    def _schedule_decodes(self, batch: StepBatch, budget: int) -> tuple[int, bool]:
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
                batch.dec = None if rows is None else D[RID, rows].copy()
                batch.n_dec, batch.q, batch.k = cnt, q, k
                batch.ctx_sum = float(self.comp_sum if cap is None and rows is None
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

    def _schedule_running_prefills(self, batch: StepBatch, budget: int) -> tuple[int, bool]:
        preempted = False
        bs, cap, chunk_max = self.cfg.block_size, self.cap, self.cfg.chunk_size
        i = 0
        while i < len(self.prefilling) and budget > 0 and self._room(batch, budget) > 0:
            p = self.prefilling[i]
            if p.busy:
                i += 1
                continue
            chunk = min(p.target - p.computed, chunk_max, self._room(batch, budget))
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
                batch.prefills.append(p)
                batch.chunks.append(chunk)
                budget -= chunk
                i += 1
                continue
            if stalled:  # p waits for the micro-batches in flight; it keeps its place
                i += 1
            # else p itself was preempted: the list shrank at p's position or later
        return budget, preempted

    def _admit(self, batch: StepBatch, budget: int) -> int:
        if not self.waiting:
            return budget
        cfg, cl = self.cfg, self.cl
        bs, cap = cfg.block_size, self.cap
        while self.waiting and budget > 0 and self.num_running() < cfg.max_num_seqs \
                and self._room(batch, budget) > 0 and not self.batch_full:
            rid = self.waiting[0]
            if self.seen and self.seen.get(rid, 0.0) > self.cut:  # overlap_lag: not yet seen
                break
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
            chunk = min(left, cfg.chunk_size, self._room(batch, budget))
            if chunk < left and not cfg.enable_chunked_prefill and budget < cfg.max_num_batched_tokens:
                break
            hitb = g * self.cache.bpe if g else 0
            kvt = hit + chunk if cap is None else min(hit + chunk, cap)
            need = max(0, -(-kvt // bs) - hitb)
            pinned = keys[:g] if g else ()
            empty = cfg.reserve_outputs and not (self.n or self.prefilling or self.pool.in_use())
            if g:
                self.cache.pin(pinned)
            # SGLang checks with the request's own cached prefix locked (no longer evictable);
            # a host-tier hit is loaded into the pool, so it counts as input. An engine that
            # holds no KV admits the head of the queue whatever it needs: the rejecter already
            # refused a request the pool cannot hold, and a request whose outputs the estimate
            # overstates must not wait forever
            if cfg.reserve_outputs and not empty and not self._reserve_ok(
                    batch, target - g * cfg.hash_block_tokens, cl.output_len[rid] - gen):
                if g:
                    self.cache.unpin(pinned)
                # SGLang's batch_is_full; its prefill server clears it every iteration
                self.batch_full = cfg.role != "prefill"
                break
            if self.pool.available() - need < cfg.watermark_blocks or not self.pool.allocate(need):
                if g:
                    self.cache.unpin(pinned)
                break
            self.waiting.popleft()
            self.seen.pop(rid, None)
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
            batch.prefills.append(p)
            batch.chunks.append(chunk)
            batch.extra_s += host_s
            budget -= chunk
        return budget

    def _see_all(self) -> bool:
        """overlap_lag: the engine's loop found nothing to run, so its next pass sees every
        waiting request; True when that lets it admit one it could not see."""
        if not (self.waiting and self.cut < np.inf):
            return False
        self.cut = np.inf
        return True

    def _reserve_ok(self, batch: StepBatch, left: int, out_left: int) -> bool:
        """SGLang's PrefillAdder: a prompt with `left` tokens to prefill and `out_left` output
        tokens to come is admitted only when the free (or evictable) KV tokens exceed both, beside
        the running decodes' remaining outputs x new_token_ratio, the whole outputs of the
        prompts that finish prefilling in this iteration, and the token each decode riding along
        takes (`mixed_with_decode_tokens`; module doc). SGLang's disaggregated prefill server
        sets every request's max_new_tokens to 1, so there each output counts as one token."""
        n, clip = self.n, CLIP_NEW_TOKENS
        if self.cfg.role == "prefill":
            out_left, clip = min(out_left, 1), 1
        held = float(batch.mixed)  # decodes riding along take a token each (prefill_mixed)
        free = self.pool.available() * self.cfg.block_size
        if n:
            D = self.D
            held += self.new_token_ratio * float(np.minimum(D[REM, :n], clip).sum())
            comp = self.comp_sum if self.cap is None else self._ctx_sum(None)
            free += int(D[ALLOC, :n].sum()) - comp  # SGLang's pool has no blocks
        for p, c in zip(batch.prefills, batch.chunks, strict=True):
            if p.computed + c >= p.target:  # its last chunk: SGLang reserves all its outputs
                held += min(p.out, clip)
        return left + min(out_left, clip) < free - held

    def _decoded(self) -> None:
        """A decode-only iteration ran: SGLang lowers its estimate of the outputs to come,
        unless it preempted (its retract set the estimate instead)."""
        if self.retracted:
            self.retracted = False
        else:
            self.new_token_ratio = max(self.new_token_ratio - RATIO_DECAY, RATIO_MIN)

    def _idled(self) -> None:
        """The engine has nothing to run: SGLang starts its estimate over."""
        self.new_token_ratio = RATIO_INIT
        self.retracted = self.batch_full = False

    def _room(self, batch: StepBatch, budget: int) -> int:
        """Prompt tokens the iteration may still take: the token budget (vLLM), or under a soft
        budget (SGLang's --max-prefill-tokens, which the last prompt admitted may overrun) what
        the hard per-batch chunk (--chunked-prefill-size) leaves."""
        hard = self.cfg.batch_tokens_hard
        return budget if not hard else hard - batch.mixed - sum(batch.chunks)

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
        """The most recently admitted running request that is neither in this step's batch nor
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
        if self.cfg.reserve_outputs and not isinstance(best, Prefill) and self.n:
            # SGLang's retract_decode re-estimates the outputs to come from those still running
            n, ol = self.n, self.cl.output_len
            out = sum(ol[r] for r in self.D[RID, :n].tolist())
            decoded = out - int(self.D[REM, :n].sum())
            self.new_token_ratio = min(1.0, (decoded + RETRACT_STEPS * n) / max(out, 1))
            self.retracted = True
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
