"""A fast stand-in for replaying a run: its recorded iterations re-timed under new engine
parameters, the schedule held fixed.

One full replay (`record_steps=True`) records every iteration of every replica and every
request's arrival, first token and finish. An iteration's time splits into parts that the
engine-level parameters act on simply (`CostModel.step_parts`): prefill GPU time x
`prefill_time_scale`, decode GPU time x `decode_time_scale`, the TP all-reduces (recomputed
from `comm_*` / `net_*` for the step's message), the rest of the collectives as they were,
and host time `host_overhead_s + host_per_seq_s x sequences` (added, or overlapped when the
engine overlaps it); a change of the fixed request latency (`request_latency_s`) adds to every
TTFT (exact where the engine idles until a closed loop's requests return, as in lock-step
waves; to first order where they join a running batch: within 2% of the full replay in
tests/sim/test_runs_fit.py). Re-timing keeps each replica's idle gaps and each request's
place in the step sequence: its arrival an offset after a step's end, its first token and its
last at a step's end. TTFT and TPOT follow. Exact at the parameters it was recorded with;
near them the schedule barely moves, and `sim.runs.fit` re-records at each new estimate.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from costmodel import roofline as rl
from costmodel.efficiencies import Efficiencies
from costmodel.model import CostModel
from sim.runs.types import MeasuredRun

_Q = {"p50": 50, "p90": 90, "p99": 99}


@dataclass
class _Steps:
    """One replica's iterations as parts of their time."""

    cm: CostModel
    gap: np.ndarray  # idle time before each step, s
    first_start: float
    pre: np.ndarray  # prefill GPU time at scale 1
    dec: np.ndarray  # decode GPU time at scale 1
    other_comm: np.ndarray  # collectives other than the TP all-reduces, as recorded
    ar_msg: np.ndarray  # bytes of each TP all-reduce of the step
    n_seqs: np.ndarray

    def ends(self, eff: Efficiencies) -> np.ndarray:
        cm = self.cm
        ar = np.zeros_like(self.pre)
        if cm.tp > 1:
            inter = cm.tp > cm.gpu.gpus_per_node
            bw = rl.link_bw_bytes_s(cm.gpu, cm.tp)
            ar = 2 * cm.model.num_layers * rl.collective_time_s_v("all_reduce", self.ar_msg, cm.tp, bw,
                                                                  eff, internode=inter)
        gpu = self.pre * eff.prefill_time_scale + self.dec * eff.decode_time_scale + self.other_comm + ar
        host = eff.host_overhead_s + eff.host_per_seq_s * self.n_seqs
        dur = np.maximum(gpu, host) if cm.host_overlap else gpu + host
        return self.first_start + np.cumsum(self.gap + dur)


def _steps(cm: CostModel, log: list, base: Efficiencies) -> _Steps:
    n = len(log)
    start = np.fromiter((s[0] for s in log), float, n)
    dt = np.fromiter((s[1] for s in log), float, n)
    pre, dec, comm, msg, seqs = (np.zeros(n) for _ in range(5))
    cache: dict = {}
    h = cm.model.hidden_size
    for i, (_, _, chunks, n_dec, ctx, q) in enumerate(log):
        key = (chunks, n_dec, ctx, q)
        parts = cache.get(key)
        if parts is None:
            parts = cm.step_parts(chunks, n_dec, ctx, q)
            if len(cache) < 100_000:
                cache[key] = parts
        pre[i], dec[i], comm[i] = parts
        tokens = sum(c for c, _ in chunks) + n_dec * q
        msg[i] = tokens * h * 2
        seqs[i] = len(chunks) + n_dec
    gap = np.diff(start, prepend=start[0]) - np.concatenate([[0.0], dt[:-1]])
    st = _Steps(cm, np.maximum(gap, 0.0), float(start[0]), pre, dec, comm, msg, seqs)
    if cm.tp > 1:  # what the TP all-reduces cost when recorded, kept apart from the rest
        inter = cm.tp > cm.gpu.gpus_per_node
        ar0 = 2 * cm.model.num_layers * rl.collective_time_s_v(
            "all_reduce", msg, cm.tp, rl.link_bw_bytes_s(cm.gpu, cm.tp), base, internode=inter)
        st.other_comm = np.maximum(comm - ar0, 0.0)
    return st


class RunSurrogate:
    """The recorded replay of one run, re-timed under new parameters (module docstring)."""

    def __init__(self, run: MeasuredRun, result, cost_models: dict[int, CostModel], base: Efficiencies):
        self.run = run
        f = result.requests
        f = f[~f.rejected & np.isfinite(f.finish_s)]
        self.reps = {idx: _steps(cost_models[idx], log, base) for idx, log in result.steps.items() if log}
        self.out = f.output_len.to_numpy()
        self.first_rep = f.replica.to_numpy()
        self.fin_rep = f.finish_replica.to_numpy()
        self.k_first = np.empty(len(f), np.int64)
        self.k_fin = np.empty(len(f), np.int64)
        self.j_arr = np.empty(len(f), np.int64)
        self.off_arr = np.empty(len(f))
        base_ends = {i: s.ends(base) for i, s in self.reps.items()}
        ft, fin, arr = f.first_token_s.to_numpy(), f.finish_s.to_numpy(), f.arrival_s.to_numpy()
        for i, e in base_ends.items():
            m = self.first_rep == i
            self.k_first[m] = np.clip(np.searchsorted(e, ft[m] - 1e-12), 0, len(e) - 1)
            j = np.searchsorted(e, arr[m], side="right") - 1
            self.j_arr[m] = j
            self.off_arr[m] = arr[m] - np.where(j >= 0, e[np.maximum(j, 0)], 0.0)
            m2 = self.fin_rep == i
            self.k_fin[m2] = np.clip(np.searchsorted(e, fin[m2] - 1e-12), 0, len(e) - 1)
        # what re-timing at the recorded parameters gives, against what the replay gave: the
        # surrogate predicts ratios to the replay, so any part it leaves out cancels
        self._replay = {"ttft": f.ttft_s.to_numpy(), "tpot": f.tpot_s.to_numpy()}
        self.base_latency_s = base.request_latency_s
        self._at_base = self._latencies(base)

    def _latencies(self, eff: Efficiencies) -> dict[str, np.ndarray]:
        ttft = np.empty(len(self.out))
        dlat = eff.request_latency_s - self.base_latency_s
        first = np.empty(len(self.out))
        fin = np.empty(len(self.out))
        for i, s in self.reps.items():
            e = s.ends(eff)
            m = self.first_rep == i
            if m.any():
                j = self.j_arr[m]
                arr = np.where(j >= 0, e[np.maximum(j, 0)], 0.0) + self.off_arr[m]
                first[m] = e[self.k_first[m]]
                ttft[m] = first[m] - arr + dlat
            m2 = self.fin_rep == i
            if m2.any():
                fin[m2] = e[self.k_fin[m2]]
        multi = self.out > 1
        tpot = np.where(multi, (fin - first) / np.maximum(self.out - 1, 1), np.nan)
        return {"ttft": ttft, "tpot": tpot}

    def predict(self, eff: Efficiencies) -> dict[str, float]:
        """The run's measured keys, predicted under `eff` (seconds)."""
        lat = self._latencies(eff)
        out = {}
        for key in self.run.measured:
            metric, stat, _ = key.split("_")
            if metric not in lat:
                continue
            # scale the replay's own per-request values by the re-timed change
            with np.errstate(invalid="ignore", divide="ignore"):  # no TPOT of one-token requests
                ratio = lat[metric] / self._at_base[metric]
            vals = self._replay[metric] * np.where(np.isfinite(ratio), ratio, 1.0)
            vals = vals[np.isfinite(vals)]
            if not len(vals):  # no request of the replay has this metric (one-token outputs)
                out[key] = float("nan")
                continue
            out[key] = float(vals.mean() if stat == "mean" else np.percentile(vals, _Q[stat]))
        return out
