"""Workloads: how requests arrive and how long they are.

Arrivals are open-loop (Poisson, gamma with a coefficient of variation for burstiness, evenly
spaced (coefficient of variation 0: the limit of a gamma whose shape grows without bound, as
vLLM's `--burstiness inf` and aiperf's `--arrival-pattern constant` send them), or the replay of
a trace's own timestamps, optionally rescaled to a target rate) or closed-loop
(N clients, each sending its next request the moment its last one finishes, as vLLM's
`benchmark_serving --max-concurrency N --request-rate inf` does). Lengths are fixed, drawn from
a distribution, or taken from a trace (in order when the trace is replayed or drives a
closed loop, resampled with replacement under synthetic arrivals).

Workload strings (DESIGN.md): `fixed:ISL,OSL`, `uniform:LO-HI,LO-HI`, `lognormal:ISL,OSL[,SIGMA]`
(means in tokens), `trace:PATH`, or a short trace name (`azure-conv`, `azure-code`,
`mooncake-conv`, `mooncake-synthetic`, `arxiv`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from costmodel.errors import ServePlanError
from sim.traces import TRACE_NAMES, Trace, load_trace, resolve_trace_path

ARRIVALS = ("poisson", "gamma", "trace", "closed")
# most requests one simulation generates: bounded work per call (1M requests measured at
# 0.35 GB peak RSS; 2M stays under 1 GB and a few minutes)
MAX_REQUESTS = 2_000_000


@dataclass(frozen=True)
class Workload:
    name: str  # the workload string it was parsed from
    arrival: str  # poisson | gamma | trace | closed
    lengths: str  # fixed | uniform | lognormal | trace
    rate_rps: float | None = None  # open loop: target rate; None = the trace's own rate
    concurrency: int | None = None  # closed loop: number of clients
    burstiness_cv: float = 1.0  # gamma inter-arrival CV (1 = Poisson, 0 = evenly spaced)
    length_params: tuple[float, ...] = ()  # fixed (in, out); uniform (in_lo, in_hi, out_lo, out_hi);
    # lognormal (in_mean, out_mean, sigma)
    trace: Trace | None = None

    @property
    def closed_loop(self) -> bool:
        return self.arrival == "closed"

    @property
    def has_prefix_hashes(self) -> bool:
        return self.trace is not None and self.trace.hash_ids is not None


def with_load(workload: Workload, rate: float | None = None,
              concurrency: int | None = None) -> Workload:
    """The same lengths and arrival shape at another rate (or as a closed loop of N clients)."""
    if rate is None and concurrency is None:
        return workload
    if concurrency is not None:
        return replace(workload, arrival="closed", rate_rps=None, concurrency=concurrency)
    if not rate > 0:
        raise ServePlanError(f"rate {rate!r} requests/s; expected a number > 0")
    arrival = workload.arrival
    if arrival == "closed":
        arrival = "poisson" if workload.burstiness_cv == 1.0 else "gamma"
    return replace(workload, arrival=arrival, rate_rps=float(rate), concurrency=None)


@dataclass(frozen=True, eq=False)
class RequestArrays:
    """One entry per request, in arrival order. Closed-loop arrivals are all 0 (set at run time)."""

    arrival_s: np.ndarray  # float64 seconds
    input_len: np.ndarray  # int64 tokens
    output_len: np.ndarray  # int64 tokens
    hash_ids: np.ndarray | None = None  # int64 prefix-block ids, concatenated
    hash_offsets: np.ndarray | None = None  # int64 [n + 1]
    hash_block_tokens: int = 512

    def __len__(self) -> int:
        return int(self.input_len.size)

    def hashes(self, i: int) -> np.ndarray:
        assert self.hash_ids is not None and self.hash_offsets is not None
        return self.hash_ids[self.hash_offsets[i]:self.hash_offsets[i + 1]]


# --- parsing ---------------------------------------------------------------------------------
def _ints(spec: str, body: str, n: int, what: str) -> list[int]:
    try:
        vals = [int(x) for x in body.replace("-", ",").split(",")]
    except ValueError:
        vals = []
    if len(vals) != n or any(v < 1 for v in vals):
        raise ServePlanError(f"workload {spec!r}: expected {what} with whole numbers >= 1")
    return vals


def parse_workload(spec: str, *, rate: float | None = None, concurrency: int | None = None,
                   burstiness_cv: float = 1.0, arrival: str | None = None) -> Workload:
    """Parse a workload string; exactly one of `rate` (requests/s) and `concurrency` (clients),
    except the replay of a timed trace at its own rate (both None).

    `arrival` forces the arrival process (poisson | gamma | trace); by default a timed trace is
    replayed (rescaled to `rate` when given) unless `burstiness_cv` != 1 asks for gamma arrivals.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise ServePlanError(f"workload {spec!r}; expected fixed:ISL,OSL, trace:PATH or one of "
                             f"{', '.join(TRACE_NAMES)}")
    spec = spec.strip()
    if rate is not None and concurrency is not None:
        raise ServePlanError("give either a rate (--rate) or a concurrency (--concurrency), not both")
    if rate is not None and not (isinstance(rate, (int, float)) and math.isfinite(rate) and rate > 0):
        raise ServePlanError(f"rate {rate!r} requests/s; expected a number > 0")
    if concurrency is not None and (isinstance(concurrency, bool) or not isinstance(concurrency, int)
                                    or concurrency < 1):
        raise ServePlanError(f"concurrency {concurrency!r}; expected an integer >= 1")
    if not (isinstance(burstiness_cv, (int, float)) and math.isfinite(burstiness_cv)
            and 0 <= burstiness_cv <= 20):
        raise ServePlanError(f"burstiness cv {burstiness_cv!r}; expected a number in [0, 20] "
                             "(1: Poisson, 0: evenly spaced)")
    if arrival is not None and arrival not in ("poisson", "gamma", "trace"):
        raise ServePlanError(f"arrival {arrival!r}; expected poisson, gamma or trace")

    kind, _, body = spec.partition(":")
    kind_l = kind.lower()
    trace = None
    if kind_l == "fixed":
        lengths, params = "fixed", tuple(float(v) for v in _ints(spec, body, 2, "fixed:ISL,OSL"))
    elif kind_l == "uniform":
        v = _ints(spec, body, 4, "uniform:ISL_LO-ISL_HI,OSL_LO-OSL_HI")
        if v[0] > v[1] or v[2] > v[3]:
            raise ServePlanError(f"workload {spec!r}: each range must be LO-HI with LO <= HI")
        lengths, params = "uniform", tuple(float(x) for x in v)
    elif kind_l == "lognormal":
        parts = body.split(",")
        try:
            vals = [float(x) for x in parts]
        except ValueError:
            vals = []
        if len(vals) not in (2, 3) or vals[0] < 1 or vals[1] < 1 or (len(vals) == 3 and not 0 < vals[2] <= 3):
            raise ServePlanError(f"workload {spec!r}: expected lognormal:ISL_MEAN,OSL_MEAN[,SIGMA] "
                                 "with means >= 1 and 0 < SIGMA <= 3")
        lengths, params = "lognormal", (vals[0], vals[1], vals[2] if len(vals) == 3 else 0.5)
    elif kind_l == "trace" or spec.lower() in TRACE_NAMES:
        trace = load_trace(resolve_trace_path(body if kind_l == "trace" else spec))
        lengths, params = "trace", ()
    else:
        raise ServePlanError(f"workload {spec!r}; expected fixed:ISL,OSL, uniform:LO-HI,LO-HI, "
                             f"lognormal:ISL,OSL[,SIGMA], trace:PATH or one of {', '.join(TRACE_NAMES)}")

    timed = trace is not None and trace.arrival_s is not None
    if concurrency is not None:
        arr = "closed"
    elif arrival is not None:
        arr = arrival
        if arr == "trace" and not timed:
            raise ServePlanError(f"workload {spec!r} has no timestamps to replay; use a rate")
    elif timed and burstiness_cv == 1.0:
        arr = "trace"
    else:
        arr = "poisson" if burstiness_cv == 1.0 else "gamma"
    if arr in ("poisson", "gamma") and rate is None:
        raise ServePlanError(f"workload {spec!r} needs a rate (--rate RPS) or a concurrency "
                             "(--concurrency N)")
    if arr == "trace" and rate is not None and not trace.rate_rps:
        raise ServePlanError(f"trace {trace.path} spans no time, so it cannot be rescaled to a rate")
    return Workload(name=spec, arrival=arr, lengths=lengths, rate_rps=rate, concurrency=concurrency,
                    burstiness_cv=burstiness_cv, length_params=params, trace=trace)


# --- generation ------------------------------------------------------------------------------
def _trace_rows(trace: Trace, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Row index of each of n requests replayed in order, and how many times the trace wrapped."""
    i = np.arange(n, dtype=np.int64)
    return i % trace.num_requests, i // trace.num_requests


def _lengths(w: Workload, n: int, rng: np.random.Generator, rows: np.ndarray | None):
    p = w.length_params
    if w.lengths == "fixed":
        return np.full(n, int(p[0]), np.int64), np.full(n, int(p[1]), np.int64)
    if w.lengths == "uniform":
        return (rng.integers(int(p[0]), int(p[1]) + 1, n, dtype=np.int64),
                rng.integers(int(p[2]), int(p[3]) + 1, n, dtype=np.int64))
    if w.lengths == "lognormal":
        s = p[2]
        out = []
        for mean in (p[0], p[1]):
            mu = math.log(mean) - s * s / 2  # so that E[length] = mean
            out.append(np.maximum(1, np.rint(rng.lognormal(mu, s, n))).astype(np.int64))
        return out[0], out[1]
    assert w.trace is not None and rows is not None
    return w.trace.input_len[rows], w.trace.output_len[rows]


def _arrivals(w: Workload, n: int, rng: np.random.Generator, wraps: np.ndarray | None,
              rows: np.ndarray | None) -> np.ndarray:
    if w.arrival == "closed":
        return np.zeros(n)
    if w.arrival == "poisson":
        return np.cumsum(rng.exponential(1.0 / w.rate_rps, n))
    if w.arrival == "gamma":
        if w.burstiness_cv == 0.0:  # evenly spaced: the first request one gap in, as Poisson's
            return np.arange(1, n + 1, dtype=np.float64) / w.rate_rps
        shape = 1.0 / w.burstiness_cv**2
        return np.cumsum(rng.gamma(shape, 1.0 / (w.rate_rps * shape), n))
    tr = w.trace
    assert tr is not None and tr.arrival_s is not None and rows is not None and wraps is not None
    gap = tr.span_s / (tr.num_requests - 1) if tr.num_requests > 1 else 1.0
    t = tr.arrival_s[rows] + wraps * (tr.span_s + gap)  # a wrapped trace starts one mean gap later
    if w.rate_rps is not None and n > 1 and t[-1] > t[0]:
        # Rescale the replayed stretch itself to the target mean rate: the n requests span
        # (n - 1) / rate seconds and keep the trace's own burstiness. (Scaling by the whole
        # trace's rate would leave a short replay of a bursty trace above or below the rate.)
        t = (t - t[0]) * ((n - 1) / (t[-1] - t[0]) / w.rate_rps)
    elif w.rate_rps is not None:
        t = (t - t[0]) * (tr.rate_rps / w.rate_rps)
    return t


def generate_requests(workload: Workload, num_requests: int, rng: np.random.Generator) -> RequestArrays:
    """`num_requests` requests: arrival times (s), input and output lengths (tokens), and the
    prefix-block hashes when the trace has them. A trace shorter than `num_requests` wraps
    around (later passes get fresh hash ids, so wrapping invents no cache hits)."""
    if (isinstance(num_requests, bool) or not isinstance(num_requests, (int, np.integer))
            or not 1 <= num_requests <= MAX_REQUESTS):
        raise ServePlanError(f"num_requests={num_requests!r}; expected an integer in [1, {MAX_REQUESTS:_}]")
    n = int(num_requests)
    w = workload
    rows = wraps = None
    if w.trace is not None:
        if w.arrival in ("trace", "closed"):
            rows, wraps = _trace_rows(w.trace, n)
        else:
            rows = rng.integers(0, w.trace.num_requests, n)
            wraps = np.zeros(n, np.int64)
    inp, out = _lengths(w, n, rng, rows)
    t = _arrivals(w, n, rng, wraps, rows)
    hid = hoff = None
    block = 512
    tr = w.trace
    if tr is not None and tr.hash_ids is not None:
        block = tr.hash_block_tokens
        starts = tr.hash_offsets[rows]
        counts = tr.hash_offsets[rows + 1] - starts
        hoff = np.zeros(n + 1, np.int64)
        np.cumsum(counts, out=hoff[1:])
        total = int(hoff[-1])
        pos = np.arange(total, dtype=np.int64) - np.repeat(hoff[:-1], counts) + np.repeat(starts, counts)
        id_span = int(tr.hash_ids.max()) + 1 if tr.hash_ids.size else 1
        if w.arrival in ("trace", "closed"):
            shift = wraps
        else:  # resampled rows: every request is a new conversation beyond the trace's own sharing
            shift = np.zeros(n, np.int64)
        hid = tr.hash_ids[pos] + np.repeat(shift * id_span, counts)
    return RequestArrays(np.ascontiguousarray(t, np.float64), np.ascontiguousarray(inp, np.int64),
                         np.ascontiguousarray(out, np.int64), hid, hoff, block)


def length_stats(workload: Workload) -> dict:
    """Mean, p50 and p90 (and p99, max) of input and output lengths in tokens."""
    w, p = workload, workload.length_params
    stats = {}
    if w.lengths == "trace":
        assert w.trace is not None
        for key, arr in (("input", w.trace.input_len), ("output", w.trace.output_len)):
            q = np.percentile(arr, [50, 90, 99])
            stats.update({f"{key}_mean": float(arr.mean()), f"{key}_p50": float(q[0]),
                          f"{key}_p90": float(q[1]), f"{key}_p99": float(q[2]),
                          f"{key}_max": float(arr.max())})
        return stats
    for j, key in enumerate(("input", "output")):
        if w.lengths == "fixed":
            v = p[j]
            mean, q50, q90, q99, mx = v, v, v, v, v
        elif w.lengths == "uniform":
            lo, hi = p[2 * j], p[2 * j + 1]
            mean, mx = (lo + hi) / 2, hi
            q50, q90, q99 = (lo + f * (hi - lo) for f in (0.5, 0.9, 0.99))
        else:
            s = p[2]
            mu = math.log(p[j]) - s * s / 2
            mean = p[j]
            q50, q90, q99 = (math.exp(mu + s * z) for z in (0.0, 1.2815515655446004, 2.3263478740408408))
            mx = math.inf
        stats.update({f"{key}_mean": float(mean), f"{key}_p50": float(q50), f"{key}_p90": float(q90),
                      f"{key}_p99": float(q99), f"{key}_max": float(mx)})
    return stats
