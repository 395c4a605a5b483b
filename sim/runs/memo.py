"""Full replays a run fit has already made, kept while that fit runs.

A run fit (`sim.runs.fit`) replays every run at each estimate it tries, and it comes back to
estimates it has replayed: the chunk-time grid starts at the values the rounds just replayed,
the first round starts at the starting values the fit replayed first, the second order of the
chunk-time fit starts where the first did and often retraces its rounds, and a refit with a
metric weighted up starts from the same values again. A replay is seeded, so a replay at the
same values is the same replay, to the bit: `replay_memo()` keeps them for one GPU's fit, and
the fit asks `plain` (the predictions, and how many requests did not fit) or `recorded` (the
surrogate of each run's recorded iterations as well) for what it needs. A recorded replay also
answers a plain request (recording changes no number; tests/sim/test_runs_memo.py), not the
other way round.

Plain results (a few numbers per run) are all kept. Recorded ones hold each run's re-timable
iterations, 0.2-0.7 MB per run on the silicon CSV's runs, so at most `RECORDED_MAX` runs' worth
are kept, the oldest dropped first. Outside `replay_memo()` nothing is kept.
"""

from __future__ import annotations

from collections import OrderedDict
from contextlib import contextmanager
from contextvars import ContextVar

RECORDED_MAX = 240  # recorded replays (runs) kept at once: about 50-170 MB


class _Memo:
    def __init__(self, recorded_max: int):
        self.plain: dict[tuple, tuple[int, dict]] = {}
        self.recorded: OrderedDict[tuple, tuple] = OrderedDict()
        self.recorded_max = recorded_max
        self.replayed = 0  # runs replayed in full (the rest came from here)


_MEMO: ContextVar[_Memo | None] = ContextVar("replay_memo", default=None)


@contextmanager
def replay_memo(recorded_max: int = RECORDED_MAX):
    """Keep the replays of the fit inside (the memo it yields counts the runs it replayed)."""
    memo = _Memo(recorded_max)
    token = _MEMO.set(memo)
    try:
        yield memo
    finally:
        _MEMO.reset(token)


def plain(runs: list, key, replay_all) -> list[tuple[int, dict]]:
    """(requests rejected, predictions) of each run at `key` (the fit's estimate);
    `replay_all(runs)` replays those not kept yet, without recording: [(SimResult, predictions)]."""
    memo = _MEMO.get()
    if memo is None:
        return [(res.metrics.num_rejected, p) for res, p in replay_all(runs)]
    keys = [(id(r), key) for r in runs]
    missing = [i for i, k in enumerate(keys) if k not in memo.plain]
    if missing:
        memo.replayed += len(missing)
        for i, (res, p) in zip(missing, replay_all([runs[i] for i in missing]), strict=True):
            memo.plain[keys[i]] = (res.metrics.num_rejected, p)
    return [memo.plain[k] for k in keys]


def recorded(runs: list, key, replay_all, surrogate) -> list[tuple[object, dict]]:
    """(surrogate, predictions) of each run at `key`; `replay_all(runs)` replays those not kept
    yet, recording their iterations, and `surrogate(run, result)` builds what is kept of one."""
    memo = _MEMO.get()
    if memo is None:
        return [(surrogate(r, res), p) for r, (res, p) in zip(runs, replay_all(runs), strict=True)]
    keys = [(id(r), key) for r in runs]
    missing = [i for i, k in enumerate(keys) if k not in memo.recorded]
    got = {}
    if missing:
        memo.replayed += len(missing)
        for i, (res, p) in zip(missing, replay_all([runs[i] for i in missing]), strict=True):
            got[keys[i]] = (surrogate(runs[i], res), p)
            memo.plain[keys[i]] = (res.metrics.num_rejected, p)
    out = []
    for k in keys:
        if k in got:
            memo.recorded[k] = got[k]
        else:
            memo.recorded.move_to_end(k)
        out.append(memo.recorded[k])
    while len(memo.recorded) > memo.recorded_max:
        memo.recorded.popitem(last=False)
    return out
