"""The CUDA-graph timer's arithmetic, on a stand-in for torch.cuda (no GPU here): calls are
captured (not run) inside `torch.cuda.graph`, a replay runs them back to back, an eager call
costs its GPU time plus the host's launch path, events read a GPU clock. A call of 2 us must
time 2 us in a graph and 2 + 50 us eagerly, and a replay that came out short (sized from the
eager estimate) is captured again with more calls."""

from __future__ import annotations

import contextlib
import types

import pytest
import torch

from validate import timing
from validate.timing import CaptureError, Timer

HOST_S = 50e-6  # an eager launch keeps the GPU waiting this long (the host's launch path)


class FakeCuda:
    def __init__(self):
        self.clock_s = 0.0
        self.capturing = None  # the graph being captured
        self.captures = []  # calls per captured graph

    def run(self, gpu_s: float):
        if self.capturing is not None:
            self.capturing.recorded.append(gpu_s)
        else:
            self.clock_s += HOST_S + gpu_s

    def module(self):
        fake = self

        class Graph:
            def __init__(self):
                self.recorded = []

            def replay(self):
                fake.clock_s += sum(self.recorded)

        class Event:
            def __init__(self, enable_timing=False):
                self.t = None

            def record(self):
                self.t = fake.clock_s

            def synchronize(self):
                pass

            def elapsed_time(self, end):
                return (end.t - self.t) * 1e3  # ms

        @contextlib.contextmanager
        def graph(g):
            fake.capturing = g
            try:
                yield
            finally:
                fake.capturing = None
                fake.captures.append(len(g.recorded))

        stream = types.SimpleNamespace(wait_stream=lambda s: None)
        return types.SimpleNamespace(
            synchronize=lambda: None, CUDAGraph=Graph, Event=Event, graph=graph,
            Stream=lambda: stream, current_stream=lambda: stream,
            stream=lambda s: contextlib.nullcontext())


@pytest.fixture
def fake(monkeypatch):
    f = FakeCuda()
    monkeypatch.setattr(torch, "cuda", f.module())
    return f


def test_a_2us_call_times_2us_in_a_graph_and_eagerly(fake):
    calls = [lambda: fake.run(2e-6), lambda: fake.run(2e-6)]
    t = Timer("cuda")
    assert t.median_s(calls) == pytest.approx(2e-6)
    # the first capture (sized from the eager estimate) replayed in 4 us: captured again with
    # enough calls for ~1 ms per replay, within the cap
    assert fake.captures[0] < fake.captures[-1] <= timing.MAX_CALLS_PER_GRAPH
    assert fake.captures[-1] * 2e-6 >= timing.GRAPH_REPLAY_S / 2
    assert t.eager_s(calls) == pytest.approx(2e-6 + HOST_S)


def test_a_long_call_is_captured_once(fake):
    fake.captures.clear()
    assert Timer("cuda").median_s([lambda: fake.run(5e-3)]) == pytest.approx(5e-3)
    assert fake.captures == [1]


def test_a_call_that_cannot_be_captured_says_so(fake):
    def host_copy():
        if fake.capturing is not None:
            raise RuntimeError("Cannot copy between CPU and CUDA tensors during CUDA graph capture\nmore")
        fake.run(1e-6)

    with pytest.raises(CaptureError, match="cannot capture in a CUDA graph: Cannot copy"):
        Timer("cuda").median_s([host_copy])
