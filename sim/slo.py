"""Latency targets: the SLO a run is judged against, and its defaults (defined here only).

`SLO(ttft_s, tpot_s, percentile=90, attainment=0.9)`: the percentile of TTFT and of TPOT must
be within their targets (seconds) and at least `attainment` of the requests must meet both.
`requested_slo(...)` is what a simulate request (CLI or HTTP) asks for when it may name neither
target. Kept apart from the metrics so that the CLI and the service schemas read the defaults
without loading numpy.
"""

from __future__ import annotations

from dataclasses import dataclass

from costmodel.errors import ServePlanError

# used when simulate(..., slo=None): interactive-chat targets
DEFAULT_TTFT_SLO_S = 1.0
DEFAULT_TPOT_SLO_S = 0.1


@dataclass(frozen=True)
class SLO:
    ttft_s: float
    tpot_s: float
    percentile: float = 90.0  # the percentile the targets apply to
    attainment: float = 0.9  # fraction of requests that must meet both targets

    def __post_init__(self):
        if not (self.ttft_s > 0 and self.tpot_s > 0):
            raise ServePlanError(f"SLO ttft={self.ttft_s!r} s, tpot={self.tpot_s!r} s; expected > 0")
        if not 0 < self.percentile < 100 or not 0 < self.attainment <= 1:
            raise ServePlanError(f"SLO percentile {self.percentile!r} / attainment {self.attainment!r}; "
                                 "expected 0 < percentile < 100 and 0 < attainment <= 1")


DEFAULT_SLO = SLO(DEFAULT_TTFT_SLO_S, DEFAULT_TPOT_SLO_S)


def requested_slo(ttft_s: float | None = None, tpot_s: float | None = None,
                  percentile: float = 90.0, attainment: float = 0.9) -> SLO | None:
    """The SLO a simulate request names (`serveplan simulate`, `POST /v1/simulate`): None when
    it names neither target (the simulator then judges against DEFAULT_SLO and says so in its
    notes), else the targets given, the missing one at its default."""
    if ttft_s is None and tpot_s is None:
        return None
    return SLO(DEFAULT_TTFT_SLO_S if ttft_s is None else ttft_s,
               DEFAULT_TPOT_SLO_S if tpot_s is None else tpot_s, percentile, attainment)
