"""Replays a run fit has made, kept while it runs (sim.runs.memo): the same fit with fewer
replays, recorded replays that answer plain requests, and a bounded store of recordings."""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import replace
from types import SimpleNamespace

import pytest

import sim.runs.fit as F
from costmodel.arch_defaults import default_efficiencies
from costmodel.calibration import CalibrationProfile, GpuCalibration
from sim.runs import memo

GPU = "h100-sxm"
_REPLAY = F._replay  # the real one, before any test wraps it


def _fit(monkeypatch, runs, keep: bool):
    calls = []

    def counted(run, prof, record):
        calls.append((run.run_id, prof.gpus[GPU].params, record))
        return _REPLAY(run, prof, record)

    @contextmanager
    def nothing_kept():
        yield None

    monkeypatch.setattr(F, "_replay", counted)
    if not keep:  # the fit opens its memo through the module: nothing kept in this one
        monkeypatch.setattr(memo, "replay_memo", nothing_kept)
    (fit,) = F.fit_runs(runs, params=["frontend_stream_s", "decode_time_scale", "mem_reserved_gib"],
                        rounds=3)
    return fit, calls


def test_a_fit_that_keeps_its_replays_is_the_same_fit_with_fewer_of_them(monkeypatch, chunk_time_runs):
    # one run backs the API server up, so the fit replays the chunk-time grid in both orders,
    # its rounds, and the rounds again after the grid
    runs = chunk_time_runs(decode_time_scale=1.2)
    kept, n_kept = _fit(monkeypatch, runs, keep=True)
    every, n_every = _fit(monkeypatch, runs, keep=False)
    assert kept.params == every.params and kept.fitted == every.fitted and kept.rounds == every.rounds
    assert kept.interval == every.interval
    for a, b in zip(kept.rows, every.rows, strict=True):
        assert (a.before, a.after, a.held_out) == (b.before, b.after, b.held_out)
    assert kept.params.frontend_stream_s > 0  # a real fit: the grid and the rounds ran
    # without the memo some replays repeat one already made; with it none does
    assert len(set(n_every)) < len(n_every)
    plain_again = [c for i, c in enumerate(n_kept) if c in n_kept[:i] or (c[:2] + (True,)) in n_kept[:i]]
    assert plain_again == []
    assert len(n_kept) < len(n_every)


def test_a_recorded_replay_predicts_what_a_plain_one_does(chunk_time_runs):
    # the memo answers plain requests from recorded replays: recording must change no number
    truth = CalibrationProfile(gpus={GPU: GpuCalibration(
        replace(default_efficiencies(GPU), frontend_stream_s=60e-6, mem_reserved_gib=1.0))})
    for r in chunk_time_runs():
        res_p, plain = _REPLAY(r, truth, record=False)
        res_r, rec = _REPLAY(r, truth, record=True)
        assert plain == rec and res_p.metrics.num_rejected == res_r.metrics.num_rejected


def _fake_replays(log):
    def replay_all(runs):
        log.extend(r.name for r in runs)
        return [(SimpleNamespace(metrics=SimpleNamespace(num_rejected=0)), {"v": r.name}) for r in runs]
    return replay_all


def test_recordings_are_kept_up_to_their_bound_and_plain_results_all():
    a, b, c = (SimpleNamespace(name=n) for n in "abc")
    log = []
    with memo.replay_memo(recorded_max=2) as m:
        got = memo.recorded([a, b], 1.0, _fake_replays(log), lambda r, res: f"surrogate {r.name}")
        assert got == [("surrogate a", {"v": "a"}), ("surrogate b", {"v": "b"})]
        assert memo.plain([a, b], 1.0, _fake_replays(log)) == [(0, {"v": "a"}), (0, {"v": "b"})]
        assert log == ["a", "b"]  # the recorded replays answered the plain request
        memo.plain([c], 1.0, _fake_replays(log))
        memo.recorded([b], 1.0, _fake_replays(log), lambda r, res: 0)  # kept: b is the newest now
        memo.recorded([c], 2.0, _fake_replays(log), lambda r, res: f"surrogate {r.name}")  # drops a
        memo.recorded([a, b], 1.0, _fake_replays(log), lambda r, res: f"surrogate {r.name}")
        assert log == ["a", "b", "c", "c", "a"]
        assert m.replayed == 5 and len(m.recorded) == 2
        memo.plain([a], 1.0, _fake_replays(log))  # a plain result is never dropped
        assert log == ["a", "b", "c", "c", "a"]
    memo.plain([a], 1.0, _fake_replays(log))  # outside replay_memo nothing is kept
    assert log[-1] == "a" and len(log) == 6


@pytest.mark.parametrize("record", [False, True])
def test_outside_a_fit_every_request_replays(record):
    a = SimpleNamespace(name="a")
    log = []
    for _ in range(2):
        if record:
            memo.recorded([a], 1.0, _fake_replays(log), lambda r, res: None)
        else:
            memo.plain([a], 1.0, _fake_replays(log))
    assert log == ["a", "a"]
