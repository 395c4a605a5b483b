"""No target: a winner whose fleet-sized deployment misses the SLO at every load it was backed off
to loses to a runner-up whose deployment meets it at least at that load per GPU."""

from __future__ import annotations

from types import SimpleNamespace as NS

import planner.planning as planning


def _row(gpus: int, load: float, met: bool):
    return (NS(num_gpus=gpus), {"slo_met": met}, load, met)


def _verifier():
    return NS(expired=False)


def test_runner_up_that_carries_more_per_gpu_wins(monkeypatch):
    a, b = NS(goodput=10.0, name="a"), NS(goodput=9.0, name="b")
    rows = {"a": _row(8, 100.0, False), "b": _row(8, 120.0, True)}
    calls = []

    def fake_operate(req, opts, verifier, prices, feasible, progress=None, repair_first=True):
        calls.append(opts[0].name)
        return [rows[opts[0].name]]

    monkeypatch.setattr(planning, "operate", fake_operate)
    failed = _row(8, 108.0, False)  # the winner missed the SLO at 13.5 per GPU
    got = planning._carried_instead(NS(), [a, b], failed, _verifier(), {})
    assert got is not None and got[0] is b and got[1] == rows["b"]
    assert calls == ["a", "b"]  # in rank order; a's deployment failed too


def test_runner_up_that_carries_less_per_gpu_does_not(monkeypatch):
    b = NS(goodput=9.0, name="b")
    monkeypatch.setattr(planning, "operate",
                        lambda req, opts, *a, **k: [_row(16, 200.0, True)])  # 12.5 per GPU
    assert planning._carried_instead(NS(), [b], _row(8, 108.0, False), _verifier(), {}) is None
    # and one with no verified goodput is never tried
    monkeypatch.setattr(planning, "operate", lambda *a, **k: (_ for _ in ()).throw(AssertionError))
    assert planning._carried_instead(NS(), [NS(goodput=0.0)], _row(8, 1.0, False), _verifier(), {}) is None
