"""A run's load from what its file says: a closed loop of clients or an open loop at a rate
(`choose_load`), and the checks that the file's latencies fit that load (`check_in_flight`,
and an open loop's ceiling on its measured throughput)."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from costmodel.errors import ServePlanError
from sim.runs.types import MAX_CONCURRENCY, RATE_RANGE

if TYPE_CHECKING:
    from sim.runs.fields import RunContext

# a run with both a finite rate and a concurrency is open loop when it kept up with its rate
RATE_BOUND_FRACTION = 0.9
# Little's law check of a closed loop's latencies against its load (client_summary): the mean
# number of requests in flight, request throughput x mean latency, lies within these fractions
# of the concurrency (at most all of it; at least a twentieth over two or more waves)
IN_FLIGHT_RANGE = (0.05, 1.5)
# standard deviations of an open loop's arrival span within which its throughput may exceed
# its rate
CEILING_SIGMAS = 4.0


def open_loop_ceiling(rate: float, n: int, gap_cv: float = 1.0) -> float | None:
    """The most requests/s an honest open loop of n requests at `rate` can measure: its
    clients sleep a gap (mean 1/rate, coefficient of variation `gap_cv`) before each request
    after the first, so n requests span n - 1 gaps, whose sum may fall CEILING_SIGMAS standard
    deviations short, sqrt(n - 1) x CV gaps, and the requests' own latency only slows it.
    None below two requests (no gap to measure)."""
    if n < 2:
        return None
    gaps = n - 1
    short = gaps - CEILING_SIGMAS * max(gap_cv, 1.0) * math.sqrt(gaps)
    return math.inf if short <= 0 else rate * n / short


def choose_load(ctx: RunContext, where: str, concurrency: int | None, rate: float | None,
                throughput_rps: float | None, fields_named: str,
                peak_in_flight: float | None = None, sent: int | None = None,
                gap_cv: float = 1.0) -> tuple[int | None, float | None, str]:
    """(concurrency, rate_rps, note) of a run from what the file says (`concurrency`, `rate`,
    inf = no rate) and what the caller gives.

    A client with a finite rate and a concurrency cap ran open loop at its rate when the cap
    never bound: the most requests it had in flight (`peak_in_flight`, vLLM's and SGLang's
    `max_concurrent_requests`, counted per second of the run and so never below the true peak)
    stayed under the cap, or its measured throughput kept up with the rate (at least
    RATE_BOUND_FRACTION of it; a per-second count at the cap may overstate the true peak).
    Otherwise the cap bound, and the run was a closed loop of that many clients.

    A rate of inf with no cap (the clients' defaults) sent all `sent` requests at once: a
    closed loop of that many clients, one request each. An open loop whose throughput is above
    what `sent` requests at the rate can reach (open_loop_ceiling) was not run at that rate."""
    for name, mine, given in (("concurrency", concurrency, ctx.concurrency),
                              ("rate", rate, ctx.rate_rps)):
        if mine is not None and given is not None and not math.isclose(mine, given):
            raise ServePlanError(f"{where}: the file's {name} is {mine:g} but {given:g} was given")
    conc = concurrency if concurrency is not None else ctx.concurrency
    rate = rate if rate is not None else ctx.rate_rps
    burst = ""
    if rate is not None and not math.isfinite(rate):
        rate = None
        if conc is None and sent:
            if sent > MAX_CONCURRENCY:
                raise ServePlanError(f"{where}: {sent:,} requests sent at once (request rate inf, no "
                                     f"concurrency cap); expected at most {MAX_CONCURRENCY:,}")
            conc, burst = sent, (f"all {sent} requests sent at once (request rate inf, no concurrency "
                                 f"cap): a closed loop of {sent} clients, one request each")
    if conc is not None and (not 1 <= conc <= MAX_CONCURRENCY or conc != int(conc)):
        raise ServePlanError(f"{where}: concurrency {repr(conc)[:40]}; expected a whole number in "
                             f"[1, {MAX_CONCURRENCY:,}]")
    if rate is not None and not RATE_RANGE[0] <= rate <= RATE_RANGE[1]:
        raise ServePlanError(f"{where}: request rate {repr(rate)[:40]}; expected requests/s in "
                             f"[{RATE_RANGE[0]:g}, {RATE_RANGE[1]:g}]")
    if conc is None and rate is None:
        raise ServePlanError(f"{where}: no concurrency and no finite request rate ({fields_named}); "
                             "a run is replayed at one of them: give the concurrency or the rate it ran at")
    top = open_loop_ceiling(rate, sent, gap_cv) if rate is not None and sent else None
    if top is not None and throughput_rps is not None and throughput_rps > top:
        raise ServePlanError(f"{where}: request_throughput {throughput_rps:.4g}/s is above what "
                             f"{sent} requests at the request rate {rate:g}/s can reach ({top:.3g}/s); "
                             "the file's load fields do not describe this run")
    if conc is not None and rate is not None:
        if peak_in_flight is not None and peak_in_flight < conc:
            return None, rate, (f"open loop at {rate:g} requests/s: the concurrency cap {conc} never "
                                f"bound (at most {peak_in_flight:g} requests in flight)")
        if throughput_rps is not None and throughput_rps >= RATE_BOUND_FRACTION * rate:
            return None, rate, (f"open loop at {rate:g} requests/s: the concurrency cap {conc} never "
                                f"bound (measured {throughput_rps:.3g} requests/s)")
        why = (f"measured {throughput_rps:.3g} requests/s < {RATE_BOUND_FRACTION:g} x the rate"
               if throughput_rps is not None else "the file has no throughput to tell")
        return int(conc), None, f"closed loop of {conc} clients: the cap bound the rate {rate:g} ({why})"
    return (int(conc) if conc is not None else None), rate, burst


def check_in_flight(where: str, measured: dict, conc: int, throughput: float, completed: int,
                    total_output: float | None = None,
                    hint: str = "Are the _ms fields in milliseconds?") -> None:
    """Little's law on a closed loop of two or more waves: requests in flight on average, the
    request throughput times the mean latency (E2E, or TTFT plus the mean output's TPOTs from
    `total_output` tokens when the file has no E2E), is at most the concurrency and not a small
    fraction of it. Latencies in the wrong unit (seconds in `_ms` fields) miss this by a factor
    of a thousand."""
    e2e = measured.get("e2e_mean_s")
    if e2e is None:
        if total_output is None:
            return
        e2e = measured["ttft_mean_s"] + max(total_output / completed - 1, 0.0) * measured["tpot_mean_s"]
    held = throughput * e2e
    lo, hi = IN_FLIGHT_RANGE
    if not lo * conc <= held <= hi * conc:
        raise ServePlanError(
            f"{where}: request_throughput {throughput:.4g}/s x mean latency {e2e:.4g} s gives "
            f"{held:.3g} requests in flight on average (Little's law), against a concurrency of "
            f"{conc}; expected {lo:g}-{hi:g} x that. {hint}")
