"""Analytic screen: the SLO-constrained capacity of one replica, from the cost model, in ~10 ms.

A colocated replica at arrival rate `lam` (requests/s) runs iterations back to back: one that
starts while a prompt chunk waits carries it (with every running decode) and takes `T_p`; the
others are decode-only and take `T_d`. Prompts that arrive during one iteration share the next
(one token budget, one weight read), so a fraction `p = 1 - exp(-lam tau E[chunks])` of
iterations carry prefill, and a sequence waits `tau = p T_p + (1 - p) T_d` between steps. Little's
law gives the decode batch `B = lam * (out - 1) / g * tau` (g = (1 - a^(k+1)) / (1 - a) tokens
per speculative step; the adaptive policy's k is the one that maximises tokens per second at B,
as in `sim.spec`). `tau` and `B` are a fixed point; each step of it is one request life, and the
verifying simulation (at least 6 lives long) sees a few, so the map is iterated that often.

- TPOT of request i (the simulator's `(finish - first token) / (out - 1)`): its decode steps meet
  `M_i ~ Poisson(p (out_i - 1) / g)` prefill iterations, so
  `TPOT_i = T_d / g + M_i (T_p - T_d) / (out_i - 1)`, averaged over the workload's empirical
  output lengths.
- TTFT: the residual of the iteration in flight, a GI/G/1 wait for the prefill budget (Kingman's
  factor `(c_a^2 + c_s^2) / 2` on the Pollaczek-Khinchine mean; an atom at 0 of mass `1 - rho`
  plus an exponential tail), then the prompt's chunks, convolved with the empirical prompt lengths.
- Bursty traces: over a request's life the load it meets is the local arrival rate, not the mean,
  so the SLO fractions average the replica at a few request-weighted quantiles of the local rate
  (`WorkloadShape.intensity`); admissions that find the KV cache or the seats full miss TTFT.
- Disaggregated: a prefill pool runs prefill iterations only (its TTFT as above; the first token
  is sampled there); a decode pool runs decode iterations only, and the KV transfer delays the
  second token, so it counts in TPOT. Each pool is held to the attainment target on its metric.

The capacity is the highest rate at which the percentile of each metric meets its SLO and the
estimated attainment (TTFT fraction x TPOT fraction) meets the target, by bisection; beyond it
the first constraint that fails is the binding one: `ttft`, `tpot`, `memory` (KV cache),
`max_num_seqs` or `compute` (no steady state).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.special import pdtr

from planner.shape import WorkloadShape
from planner.timing import ReplicaTiming

MAX_ITER_S = 30.0  # no steady state when an iteration would take longer than this
KV_Z = 1.0  # KV in use is checked at mean + KV_Z standard deviations of the batch's total
# a request's TPOT averages the batch over its life, and the batch counts the arrivals of the
# life before: a triangular window two lives wide, as variable as a flat one of ~1.5 lives
INTENSITY_WINDOW_LIVES = 1.5
LOCAL_RHO_CAP = 0.95
HORIZON_MIN_LIVES = 3  # planner.request.SIM_LIVES / 2  # a local surge over the prefill budget queues like rho = 0.95


@dataclass(frozen=True)
class _State:
    """A replica at one steady local rate."""

    tau_s: float  # time between two steps of a sequence
    batch: float  # mean decode batch
    g: float  # tokens per step
    ttft_frac: float
    tpot_frac: float
    ttft_mean_s: float
    kv_hi_tokens: float
    limited: str = ""  # "memory" / "max_num_seqs" when admissions wait for KV blocks or seats


@dataclass(frozen=True)
class SLOTarget:
    ttft_s: float
    tpot_s: float
    percentile: float = 90.0  # each metric's percentile must meet its target
    attainment: float = 0.9  # fraction of requests that must meet both

    @property
    def quantile(self) -> float:
        return self.percentile / 100.0


@dataclass(frozen=True)
class Estimate:
    """The screen's view of one replica at one arrival rate (requests/s per replica)."""

    rate_rps: float
    stable: bool
    ttft_frac: float  # fraction of requests with TTFT <= SLO
    tpot_frac: float
    attainment: float
    ttft_mean_s: float
    tpot_mean_s: float
    batch: float  # mean decode batch (sequences)
    kv_frac: float  # KV cache occupancy at a high quantile of the batch
    binding: str  # "" when the SLO is met, else the first constraint that fails

    @property
    def ok(self) -> bool:
        return self.binding == ""


@dataclass(frozen=True)
class Capacity:
    rate_rps: float  # highest SLO-meeting rate per replica (0 when none)
    binding: str  # what stops a higher rate
    at: Estimate  # the estimate at that rate (or at the lowest rate when none meets the SLO)


def ttft_fraction(service_s: np.ndarray, rho: float, wait_mean_s: float, slo_s: float) -> float:
    """P(W + S <= slo) over the service sample S, W = 0 w.p. 1 - rho else Exp(wait_mean / rho)."""
    slack = slo_s - service_s
    ok = slack >= 0
    if rho <= 0 or wait_mean_s <= 0:
        return float(ok.mean())
    theta = wait_mean_s / rho
    p = np.where(ok, 1.0 - rho * np.exp(-np.maximum(slack, 0.0) / theta), 0.0)
    return float(p.mean())


class ReplicaScreen:
    """Estimates for one candidate replica on one workload shape and SLO."""

    def __init__(self, timing: ReplicaTiming, shape: WorkloadShape, slo: SLOTarget,
                 kv_transfer_s_per_token: float = 0.0, kv_transfer_fixed_s: float = 0.0,
                 horizon_requests: int | None = None):
        """horizon_requests: the length (requests) of the simulation that will check the estimate;
        None = the steady state of an endless run (see `_steady`)."""
        self.t = timing
        self.horizon = horizon_requests
        self.shape = shape
        self.slo = slo
        self.role = timing.pool.role
        inp = shape.input_tokens
        out = np.maximum(shape.output_tokens, 1.0)
        self.out_m1 = out - 1.0
        self.multi = out > 1
        self.out_m1_mean = float(self.out_m1.mean())
        self.chunks_mean = float(np.maximum(np.ceil(inp / timing.chunk_tokens), 1.0).mean())
        # a sequence's mean context over its decode, weighted by how long it stays in the batch
        # (its decode steps): long answers hold their KV longest (time average, not request mean)
        ctx = inp + out / 2.0
        if timing.pool.kv_budget_tokens:
            ctx = np.minimum(ctx, timing.pool.kv_budget_tokens)
        stay = np.maximum(self.out_m1, 1.0)
        self.ctx_mean = float((ctx * stay).sum() / stay.sum())
        self.ctx_sq_mean = float((ctx**2 * stay).sum() / stay.sum())
        self.input_mean = float(inp.mean())
        # KV transfer delays the second token: it counts in TPOT on the decode pool
        self.xfer_s = kv_transfer_fixed_s + kv_transfer_s_per_token * inp

    # --- one rate ------------------------------------------------------------------------------
    def estimate(self, lam: float) -> Estimate:
        """The steady state at lam, then a mixture over the local loads requests meet.

        Traces are bursty on the scale of minutes: over a request's life the load it shares the
        replica with is the local arrival rate (WorkloadShape.intensity), so the fractions meeting
        each SLO average the replica's state at a few request-weighted local rates. A local surge
        raises the batch in proportion for as long as it lasts; it does not get the time to feed
        back through longer lives into a larger batch (the steady state's fixed point)."""
        base = self._steady(lam)
        if base is None:
            return Estimate(lam, False, 0.0, 0.0, 0.0, math.inf, math.inf, math.inf, 1.0,
                            self._unstable_reason(lam))
        life_s = base.ttft_mean_s + self.out_m1_mean * base.tau_s / base.g
        levels, weights = self.shape.intensity(max(INTENSITY_WINDOW_LIVES * lam * life_s, 1.0))
        ttft = tpot = att = 0.0
        top = base
        for f, w in zip(levels, weights, strict=True):
            st = base if abs(f - 1.0) < 1e-9 else self._local(base, lam, f)
            ttft += w * st.ttft_frac
            tpot += w * st.tpot_frac
            att += w * st.ttft_frac * st.tpot_frac
            top = st if f >= 1.0 else top
        kv_frac = top.kv_hi_tokens / max(self.t.kv_capacity_tokens, 1)
        binding = self._slo_binding(ttft, tpot, att)
        if binding == "ttft" and top.limited:
            binding = top.limited
        return Estimate(lam, True, ttft, tpot, att, base.ttft_mean_s, base.tau_s / base.g,
                        base.batch, kv_frac, binding)

    def _unstable_reason(self, lam: float) -> str:
        """Why there is no steady state at lam: the KV cache or the seat limit, else compute."""
        t = self.t
        B = lam * self.out_m1_mean * t.decode_s(t.max_num_seqs, self.ctx_mean) / t.g_at(1.0, self.ctx_mean)
        if min(B, t.max_num_seqs) * self.ctx_mean > t.kv_capacity_tokens:
            return "memory"
        if B > t.max_num_seqs:
            return "max_num_seqs"
        return "compute"

    def _iteration(self, lam: float, tau: float, B: float):
        """(tau', g, T_d, T_p, p_pre, tok_iter) of one step of the fixed point, None if the prefill
        budget cannot keep up."""
        t = self.t
        Be = max(B, 1.0)
        g = t.g_at(Be, self.ctx_mean)
        T_d = t.decode_s(Be, self.ctx_mean)
        if self.role != "colocated":
            return T_d, g, T_d, T_d, 0.0, 0.0
        # an iteration carries prefill when a prompt (chunk) is waiting at its start; prompts
        # arriving during the same iteration share it (one token budget, one weight read)
        p_pre = -math.expm1(-lam * tau * self.chunks_mean)
        tok_iter = lam * tau * self.input_mean / max(p_pre, 1e-12)
        room = t.prefill_room(Be, self.ctx_mean)
        if tok_iter > room:
            if p_pre > 0.999:
                return None
            tok_iter = room
        T_p = t.mixed_s(Be, self.ctx_mean, tok_iter)
        if t.pp > 1:
            # pipeline parallel: prompts that arrive while the decode micro-batch is in flight
            # ride in their own micro-batch and delay it by one stage, not by the whole pipeline
            T_p = T_d + (T_p - T_d) / t.pp
        dp = t.pool.dp
        if dp > 1:
            # attention DP: every rank's MoE layers wait for a rank that prefills, so a rank's
            # iteration is a prefill one when any of the dp ranks has a prompt waiting
            p_pre = -math.expm1(-dp * lam * tau * self.chunks_mean)
        return p_pre * T_p + (1.0 - p_pre) * T_d, g, T_d, T_p, p_pre, tok_iter

    def _steady(self, lam: float) -> _State | None:
        """The replica at rate lam, or None when it has no steady state.

        Each step of the fixed point tau -> T(B(tau)) is one request life: the batch is the
        arrivals of the last life, and a longer step time lengthens the next life. Near
        saturation the batch creeps up over many lives; a finite simulation of n requests from
        an empty replica sees about 0.5 n / B lives by its middle (and the planner's simulations
        span at least six lives: HORIZON_MIN_LIVES by the middle), so with a horizon the map is
        iterated (undamped) that many times, which is what the verifying simulation measures."""
        if self.role == "prefill":
            return self._prefill_state(lam, rho_cap=1.0)
        t = self.t
        tau = t.decode_s(1.0, self.ctx_mean)
        g = t.g_at(1.0, self.ctx_mean)
        recent: list[float] = []
        for i in range(120):
            B = lam * self.out_m1_mean / g * tau
            if self.horizon and i >= max(HORIZON_MIN_LIVES, 0.5 * self.horizon / max(B, 1.0)):
                break
            it = self._iteration(lam, tau, B)
            if it is None or it[0] > MAX_ITER_S:
                return None
            new, g = it[0], it[1]
            if abs(new - tau) <= 1e-7 + 1e-5 * tau:
                tau = new
                break
            if i >= 100:
                recent.append(new)
            # damped upward steps: near saturation plain iteration overshoots
            tau = new if self.horizon else (0.5 * (tau + new) if new > tau else new)
        else:
            # an adaptive draft length switches k as the batch crosses a threshold, so the map
            # jumps and the iteration cycles; a bounded cycle is a steady state (take its worst)
            if not recent or max(recent) > 2.0 * min(recent):
                return None
            tau = max(recent)
        B = lam * self.out_m1_mean / g * tau
        if B * self.ctx_mean > self.t.kv_capacity_tokens or B > self.t.max_num_seqs:
            return None  # the mean batch does not fit: preemption or an ever-growing queue
        return self._finish(lam, tau, B, rho_cap=1.0)

    def _local(self, base: _State, lam: float, f: float) -> _State:
        """The replica while the local rate is f x lam: the batch scales with the arrivals."""
        if self.role == "prefill":
            return self._prefill_state(lam * f, rho_cap=LOCAL_RHO_CAP)
        st = self._finish(lam * f, base.tau_s, base.batch * f, rho_cap=LOCAL_RHO_CAP)
        return st if st is not None else _State(math.inf, base.batch * f, base.g, 0.0, 0.0, math.inf,
                                                base.kv_hi_tokens * f)

    def _finish(self, lam: float, tau: float, B: float, rho_cap: float) -> _State | None:
        it = self._iteration(lam, tau, B)
        if it is None:
            return None
        tau, g, T_d, T_p, p_pre, tok_iter = it
        Be = max(B, 1.0)
        kv_hi = B * self.ctx_mean + KV_Z * math.sqrt(Be * self.ctx_sq_mean)
        tpot_frac = self._tpot_fraction(T_d / g, T_p - T_d, p_pre / g)
        if self.role == "colocated":
            ttft_frac, ttft_mean = self._ttft(lam, Be, T_d, tok_iter, rho_cap)
        else:
            ttft_frac, ttft_mean = 1.0, 0.0
        # admissions wait while the KV cache (or max_num_seqs) is full; during a surge the
        # backlog builds faster than a full replica drains it, so the requests of that local load
        # miss their first-token target (the simulator's TTFT jumps to seconds there)
        limited = ""
        if kv_hi > self.t.kv_capacity_tokens:
            ttft_frac, limited = 0.0, "memory"
        elif B > self.t.max_num_seqs:
            ttft_frac, limited = 0.0, "max_num_seqs"
        return _State(tau, B, g, ttft_frac, tpot_frac, ttft_mean, kv_hi, limited)

    def _prefill_state(self, lam: float, rho_cap: float) -> _State | None:
        ttft_frac, ttft_mean = self._ttft(lam, 0.0, 0.0, 0.0, rho_cap)
        if not math.isfinite(ttft_mean):
            return None if rho_cap >= 1.0 else _State(math.inf, 0.0, 1.0, 0.0, 1.0, math.inf, 0.0)
        kv_hi = lam * ttft_mean * self.input_mean
        return _State(ttft_mean, 0.0, 1.0, ttft_frac, 1.0, ttft_mean, kv_hi)

    def _slo_binding(self, ttft_frac: float, tpot_frac: float, att: float) -> str:
        q = self.slo.quantile
        # a disaggregated pool is held to the joint target on its own metric: at the deployment's
        # goodput one pool binds while the other, rounded up to whole replicas, has slack
        target = self.slo.attainment
        if ttft_frac < q or (att < target and ttft_frac <= tpot_frac):
            return "ttft"
        if tpot_frac < q or att < target:
            return "tpot"
        return ""

    def _tpot_fraction(self, base_s: float, extra_s: float, hits_per_token: float) -> float:
        """Fraction of multi-token requests with TPOT <= SLO.

        base_s: time per output token with no prefill in the iteration; extra_s: what a prefill
        chunk adds to an iteration; hits_per_token: prefill iterations per output token."""
        m = self.out_m1[self.multi]
        if m.size == 0:
            return 1.0
        slack = self.slo.tpot_s - base_s
        if self.role == "decode":
            slack = slack - self.xfer_s[self.multi] / m
        if hits_per_token <= 0 or extra_s <= 0:
            return float((slack >= 0).mean())
        allowed = np.floor(np.maximum(slack, 0.0) * m / extra_s)
        frac = np.where(slack >= 0, pdtr(allowed, np.maximum(hits_per_token * m, 1e-12)), 0.0)
        return float(frac.mean())

    def _ttft(self, lam: float, B: float, T_d: float, tok_iter: float,
              rho_cap: float = 1.0) -> tuple[float, float]:
        """(fraction of requests with TTFT <= SLO, mean TTFT) at rate lam.

        A prompt waits out the iteration in flight, then for prefill budget (a GI/G/1 queue of
        prompt tokens served at a full budget per iteration), then runs its chunks, each in an
        iteration that also carries the other prompts' tokens (tok_iter on average)."""
        t = self.t
        inp = self.shape.input_tokens
        room = t.prefill_room(max(B, 1.0), self.ctx_mean) if self.role == "colocated" else t.mbt
        C = min(t.chunk_tokens, room)
        full = np.floor(inp / C)
        rest = inp - full * C
        T_full = t.iter_with_chunk_s(B, self.ctx_mean, C, self.role)
        T_rest = t.iter_with_chunk_s(B, self.ctx_mean, np.maximum(rest, tok_iter), self.role)
        service = full * T_full + np.where(rest > 0, T_rest, 0.0)
        # the budget as a server of prompt tokens: C tokens per full iteration
        mu_tok = C / T_full
        S_tok = inp / mu_tok
        ES = float(S_tok.mean())
        rho = lam * ES
        if rho >= rho_cap:
            if rho_cap >= 1.0:
                return 0.0, math.inf
            # a passing surge: the backlog grows for a while, it does not diverge
            rho = rho_cap
        cs2 = float(S_tok.var()) / ES**2 if ES > 0 else 0.0
        wait = (self.shape.arrival_cv**2 + cs2) / 2.0 * rho / (1.0 - rho) * ES
        resid = 0.5 * T_d
        frac = ttft_fraction(service + resid, rho, wait, self.slo.ttft_s)
        return frac, wait + float(service.mean()) + resid

    # --- capacity ------------------------------------------------------------------------------
    def capacity(self, rel_tol: float = 0.01) -> Capacity:
        """Highest SLO-meeting rate per replica, by bisection (estimates worsen with the rate)."""
        lo_e = self.estimate(1e-4)
        if not lo_e.ok:
            return Capacity(0.0, lo_e.binding, lo_e)
        hi = self.t.throughput_bound_rps(self.shape)
        hi_e = self.estimate(hi)
        while hi_e.ok:  # the bound was not an upper bound after all
            hi *= 2.0
            hi_e = self.estimate(hi)
        lo, best = 0.0, lo_e
        while hi - lo > rel_tol * hi:
            mid = 0.5 * (lo + hi)
            e = self.estimate(mid)
            if e.ok:
                lo, best = mid, e
            else:
                hi, hi_e = mid, e
        return Capacity(lo, hi_e.binding, best)

