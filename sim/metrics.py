"""Run metrics: latency percentiles, throughput, SLO attainment and goodput of one simulation.

Inputs are per-request columns the engine fills as requests progress (arrival, first token,
finish, in seconds of simulated time) and counters it streams during the run. Steady-state
figures use the *measured* requests: by default the first and last 10% of requests in arrival
order are left out (warm-up while queues fill, cool-down while they drain), on runs of at least
50 requests; `warmup_excluded` says what was left out. The measured window runs from the first
measured arrival to the last measured finish.

- TTFT = first token - arrival; TPOT = (finish - first token) / (output tokens - 1), for
  requests of more than one output token; E2E = finish - arrival.
- A request meets the SLO when it completed with TTFT <= ttft_s and TPOT <= tpot_s; rejected
  requests count as misses. slo_attainment = fraction of measured requests meeting the SLO.
- throughput_tok_s counts the tokens every request generated inside the measured arrival
  span (first to last measured arrival), each request's tokens spread evenly from its first
  token to its finish, per second of that span: the steady-state rate, with neither the
  ramp-up nor the drain of the last long requests in it. goodput_rps = slo_attainment x the
  offered rate of the measured requests: the rate of SLO-meeting requests. (DistServe's
  goodput, the highest rate at which attainment holds, is the planner's bisection over rates.)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from sim.slo import DEFAULT_TPOT_SLO_S, DEFAULT_TTFT_SLO_S, SLO

MIN_REQUESTS_FOR_EXCLUSION = 50


@dataclass(frozen=True)
class RunMetrics:
    ttft_mean_s: float
    ttft_p50_s: float
    ttft_p90_s: float
    ttft_p99_s: float
    tpot_mean_s: float
    tpot_p50_s: float
    tpot_p90_s: float
    tpot_p99_s: float
    e2e_mean_s: float
    e2e_p50_s: float
    e2e_p90_s: float
    e2e_p99_s: float
    throughput_tok_s: float  # output tokens per second of the measured window
    goodput_rps: float  # SLO-meeting requests per second of the measured window
    slo_attainment: float
    preemptions: int
    kv_peak_fraction: float  # highest fraction of any replica's KV blocks in use
    sim_wall_s: float
    num_requests: int
    num_completed: int
    num_rejected: int
    request_rate_rps: float  # measured arrivals per second of their arrival span
    utilisation: tuple[float, ...]  # busy fraction of each replica (prefill pool first)
    prefix_cache_hit_rate: float  # prompt tokens served from the prefix cache / prompt tokens
    mean_accepted_tokens_per_step: float  # tokens per decoding sequence per step (1 = no spec)
    warmup_excluded: str
    num_measured: int = 0
    measured_window_s: float = 0.0
    sim_duration_s: float = 0.0  # simulated seconds, first arrival to last event
    iterations: int = 0  # engine iterations over all replicas
    queue_wait_mean_s: float = 0.0  # arrival to first scheduled, measured requests
    kv_transfer_mean_s: float = 0.0  # disaggregated: prefill end to decode start
    mean_in_system: float = 0.0  # time-average number of requests in the system (whole run)
    output_tokens: int = 0  # tokens generated over the whole run (every request)
    slo_ttft_s: float = DEFAULT_TTFT_SLO_S
    slo_tpot_s: float = DEFAULT_TPOT_SLO_S
    slo_met: bool = False  # percentile TTFT and TPOT within targets and attainment reached
    notes: tuple[str, ...] = field(default_factory=tuple)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["utilisation"] = list(self.utilisation)
        d["notes"] = list(self.notes)
        return d


def _pcts(x: np.ndarray) -> tuple[float, float, float, float]:
    if x.size == 0:
        return (float("nan"),) * 4
    p = np.percentile(x, [50, 90, 99])
    return float(x.mean()), float(p[0]), float(p[1]), float(p[2])


def measured_slice(n: int, warmup_fraction: float, cooldown_fraction: float) -> tuple[int, int, str]:
    """Index range [lo, hi) of the measured requests in arrival order, and what was excluded."""
    if n < MIN_REQUESTS_FOR_EXCLUSION or (warmup_fraction <= 0 and cooldown_fraction <= 0):
        return 0, n, "none (every request is measured)"
    lo = int(n * warmup_fraction)
    hi = n - int(n * cooldown_fraction)
    return lo, hi, (f"first {lo} and last {n - hi} of {n} requests in arrival order "
                    f"(warm-up {warmup_fraction:.0%}, cool-down {cooldown_fraction:.0%})")


def _tokens_within(first_token_s: np.ndarray, finish_s: np.ndarray, output_len: np.ndarray,
                   rejected: np.ndarray, t0: float, t1: float) -> float:
    """Output tokens generated in [t0, t1], each request's spread evenly over its decode."""
    ok = np.isfinite(first_token_s) & ~rejected
    ft, fin, n = first_token_s[ok], finish_s[ok], output_len[ok].astype(float)
    fin = np.where(np.isfinite(fin), fin, t1)  # unfinished at the end: generating until t1
    dur = fin - ft
    lo, hi = np.maximum(ft, t0), np.minimum(fin, t1)
    overlap = np.clip(hi - lo, 0.0, None)
    # the first token lands at ft; the rest spread over (ft, fin]
    first_in = (ft >= t0) & (ft <= t1)
    frac = np.divide(overlap, dur, out=np.zeros_like(dur), where=dur > 0)
    return float(first_in.sum() + ((n - 1) * frac).sum())


def summarise(arrival_s: np.ndarray, first_token_s: np.ndarray, finish_s: np.ndarray,
              first_sched_s: np.ndarray, output_len: np.ndarray, rejected: np.ndarray, *,
              slo: SLO, counters: dict, warmup_fraction: float = 0.1,
              cooldown_fraction: float = 0.1, notes: tuple[str, ...] = ()) -> RunMetrics:
    """Turn per-request columns (arrival order) and run counters into RunMetrics."""
    n = arrival_s.size
    lo, hi, excluded = measured_slice(n, warmup_fraction, cooldown_fraction)
    sl = slice(lo, hi)
    arr, ft, fin, out = arrival_s[sl], first_token_s[sl], finish_s[sl], output_len[sl]
    rej = rejected[sl]
    done = np.isfinite(fin) & ~rej
    ttft = (ft - arr)[done]
    e2e = (fin - arr)[done]
    multi = done & (out > 1)
    tpot_all = np.full(arr.size, np.nan)
    tpot_all[multi] = (fin[multi] - ft[multi]) / (out[multi] - 1)
    tpot = tpot_all[multi]
    meets = done & ((ft - arr) <= slo.ttft_s) & (~multi | (tpot_all <= slo.tpot_s))
    n_meas = hi - lo
    attain = float(meets.sum() / n_meas) if n_meas else float("nan")
    t0 = float(arr.min()) if n_meas else 0.0
    t1 = float(np.nanmax(fin)) if done.any() else t0
    window = max(t1 - t0, 0.0)
    span = float(arr.max() - arr.min()) if n_meas > 1 else 0.0
    if span > 0:
        tokens_in_span = _tokens_within(first_token_s, finish_s, output_len, rejected,
                                        float(arr.min()), float(arr.max()))
        throughput = tokens_in_span / span
        goodput = attain * (n_meas - 1) / span if n_meas > 1 else float("nan")
    elif window > 0:  # one request, or all at once: the whole window
        throughput = float(out[done].sum() / window)
        goodput = float(meets.sum() / window)
    else:
        throughput = goodput = float("nan")
    tt, tp = _pcts(ttft), _pcts(tpot)
    q_ttft = float(np.percentile(ttft, slo.percentile)) if ttft.size else float("inf")
    q_tpot = float(np.percentile(tpot, slo.percentile)) if tpot.size else 0.0
    sched = first_sched_s[sl][done]
    c = counters
    return RunMetrics(
        *tt, *tp, *_pcts(e2e),
        throughput_tok_s=float(throughput),
        goodput_rps=float(goodput),
        slo_attainment=attain,
        preemptions=int(c.get("preemptions", 0)),
        kv_peak_fraction=float(c.get("kv_peak_fraction", 0.0)),
        sim_wall_s=float(c.get("sim_wall_s", 0.0)),
        num_requests=int(n),
        num_completed=int((np.isfinite(finish_s) & ~rejected).sum()),
        num_rejected=int(rejected.sum()),
        request_rate_rps=float((n_meas - 1) / span) if span > 0 else float("nan"),
        utilisation=tuple(float(u) for u in c.get("utilisation", ())),
        prefix_cache_hit_rate=float(c.get("prefix_hit_rate", 0.0)),
        mean_accepted_tokens_per_step=float(c.get("mean_tokens_per_step", 1.0)),
        warmup_excluded=excluded,
        num_measured=int(n_meas),
        measured_window_s=window,
        sim_duration_s=float(c.get("sim_duration_s", 0.0)),
        iterations=int(c.get("iterations", 0)),
        queue_wait_mean_s=float((sched - arr[done]).mean()) if sched.size else float("nan"),
        kv_transfer_mean_s=float(c.get("kv_transfer_mean_s", 0.0)),
        mean_in_system=float(c.get("mean_in_system", 0.0)),
        output_tokens=int(c.get("output_tokens", 0)),
        slo_ttft_s=slo.ttft_s,
        slo_tpot_s=slo.tpot_s,
        slo_met=bool(q_ttft <= slo.ttft_s and q_tpot <= slo.tpot_s and attain >= slo.attainment),
        notes=tuple(notes),
    )
