"""What the analytic screen needs to know of a workload: length samples and arrival burstiness.

The screen works on moments and empirical samples of the request lengths (tokens), not on the
request stream itself: `WorkloadShape.from_lengths(inputs, outputs, arrival_cv)` takes the same
requests the simulator will replay, so the screen and the verifying simulation see one workload.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from costmodel.errors import ServePlanError

SAMPLE = 256  # lengths kept for the empirical TTFT/TPOT distributions (sorted subsample)
# local-load levels: request-weighted quantiles of the arrival intensity, and their weights
INTENSITY_LEVELS = (0.1, 0.3, 0.5, 0.7, 0.85, 0.95)
INTENSITY_WEIGHTS = (0.2, 0.2, 0.2, 0.2, 0.1, 0.1)


@dataclass(frozen=True, eq=False)
class WorkloadShape:
    """Request lengths in tokens and the coefficient of variation of inter-arrival times."""

    input_tokens: np.ndarray  # float64 sample of prompt lengths
    output_tokens: np.ndarray  # float64 sample of generated lengths (>= 1)
    arrival_cv: float = 1.0  # 1 = Poisson; > 1 bursty (gamma, traces); 0 evenly spaced
    max_total_tokens: int = 0  # longest prompt + output seen: the KV one request may need
    arrivals: np.ndarray | None = None  # arrival times scaled to a mean rate of 1 (None: closed loop)
    _intensity_cache: dict = field(default_factory=dict, repr=False)

    def intensity(self, m: float) -> tuple[np.ndarray, np.ndarray]:
        """Local arrival intensity (relative to the mean rate) that requests meet over windows
        of about m requests: request-weighted quantiles at INTENSITY_LEVELS and their weights.

        Over a request's life the load it shares the replica with is the local rate, not the mean:
        traces are bursty on the scale of minutes, which widens the TPOT and TTFT distributions
        beyond what Poisson noise explains. Closed loops and short samples give (1, 1)."""
        w = np.asarray(INTENSITY_WEIGHTS)
        t = self.arrivals
        h = int(max(1, min(round(min(m, 1e6) / 2), 256)))
        if t is None or t.size < 4 * h + 2:
            return np.ones(len(w)), w
        cache = self._intensity_cache
        hit = cache.get(h)
        if hit is None:
            span = t[2 * h:] - t[:-2 * h]
            f = (2 * h) / np.maximum(span, 1e-12)
            hit = np.quantile(f, INTENSITY_LEVELS)
            cache[h] = hit
        return hit, w

    @property
    def input_mean(self) -> float:
        return float(self.input_tokens.mean())

    @property
    def output_mean(self) -> float:
        return float(self.output_tokens.mean())

    @classmethod
    def from_requests(cls, input_len, output_len, arrival_s=None) -> WorkloadShape:
        """From the simulator's generated requests (arrival_s None or all equal: closed loop)."""
        t = None if arrival_s is None else np.asarray(arrival_s, dtype=np.float64)
        cv = 1.0
        if t is not None and t.size > 2 and t[-1] > t[0]:
            gaps = np.diff(t)
            cv = float(gaps.std() / gaps.mean())
            t = (t - t[0]) / (t[-1] - t[0]) * (t.size - 1)  # mean rate 1
        else:
            t = None
        shape = cls.from_lengths(input_len, output_len, cv)
        object.__setattr__(shape, "arrivals", t)
        return shape

    @classmethod
    def from_lengths(cls, inputs, outputs, arrival_cv: float = 1.0) -> WorkloadShape:
        i = np.asarray(inputs, dtype=np.float64).ravel()
        o = np.asarray(outputs, dtype=np.float64).ravel()
        if i.size == 0 or i.size != o.size:
            raise ServePlanError(f"workload lengths: {i.size} inputs and {o.size} outputs; expected "
                                 "the same number (>= 1) of each")
        if (i < 1).any() or (o < 1).any():
            raise ServePlanError("workload lengths must be >= 1 token")
        longest = int((i + o).max())
        if i.size > SAMPLE:
            # evenly spaced order statistics keep the distribution (and its tail) with fewer points
            idx = np.linspace(0, i.size - 1, SAMPLE).round().astype(int)
            order = np.argsort(i + o * 1e-9, kind="stable")
            pick = order[idx]
            i, o = i[pick], o[pick]
        # 0 is evenly spaced arrivals, not "unknown"
        cv = float(arrival_cv) if arrival_cv is not None and np.isfinite(arrival_cv) else 1.0
        return cls(i, o, max(cv, 0.0), longest)

    @classmethod
    def fixed(cls, input_tokens: int, output_tokens: int, arrival_cv: float = 1.0) -> WorkloadShape:
        return cls.from_lengths([input_tokens], [output_tokens], arrival_cv)
