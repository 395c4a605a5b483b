"""What a run's measured latencies say the GPUs did, against their datasheet peaks.

A closed loop of c clients with fixed lengths (ISL in, OSL out) and measured mean TTFT and TPOT
keeps each request in the system for tau = TTFT + (OSL - 1) x TPOT, so it completes
X = c / tau requests/s (Little's law). Every request's prompt must be computed, and every decode
iteration must read the weights and the running sequences' KV cache. Two fractions of the
deployment's time follow, each a lower bound on what the hardware must have spent:

- compute: X x (FLOPs of one prompt's prefill) / (GPUs x peak FLOP/s at the run's precision);
- memory: iterations per second (1 / TPOT: every running sequence gains one token per
  iteration) x (weight bytes + KV bytes of the decoding sequences at their mean context) / (GPUs
  x HBM bandwidth).

An iteration that mixes prompt chunks and decodes reads the weights once and computes both,
so its time is at least the larger of the two, never their sum: a run is impossible as
described when either fraction exceeds 1 (datasheet peaks are ceilings, not estimates). Such a
run was made otherwise than its row says (a shared prompt prefix served from the prefix cache,
an fp8 KV cache, shorter outputs, a client that counted differently); it says nothing about
the model's error and is kept out of accuracy figures.
"""

from __future__ import annotations

from dataclasses import dataclass

from costmodel.batch import Batch
from costmodel.model import CostModel
from sim.runs.types import MeasuredRun


@dataclass(frozen=True)
class WorkBounds:
    requests_per_s: float  # X, the whole deployment
    compute_fraction: float  # prefill FLOPs / (GPUs x peak)
    memory_fraction: float  # weight + KV reads / (GPUs x HBM bandwidth), KV as configured
    memory_fraction_fp8_kv: float  # the same with an fp8 KV cache

    @property
    def feasible(self) -> bool:
        return max(self.compute_fraction, self.memory_fraction) <= 1.0

    def to_dict(self) -> dict:
        return {"requests_per_s": self.requests_per_s, "compute_fraction": self.compute_fraction,
                "memory_fraction": self.memory_fraction,
                "memory_fraction_fp8_kv": self.memory_fraction_fp8_kv, "feasible": self.feasible}


def _pool_cost(run: MeasuredRun, role: str, kv_dtype: str | None = None) -> tuple[CostModel, int]:
    p = run.deployment.pool(role)
    cm = CostModel(run.deployment.model, p.gpu, tp=p.tp, pp=p.pp, precision=p.precision,
                   kv_dtype=kv_dtype or p.kv_dtype)
    return cm, p.replicas


def work_bounds(run: MeasuredRun) -> WorkBounds:
    """The compute and memory fractions a fixed-length closed-loop run implies (module doc)."""
    isl, osl = run.lengths
    ttft, tpot = run.measured["ttft_mean_s"], run.measured["tpot_mean_s"]
    tau = ttft + (osl - 1) * tpot
    x = run.concurrency / tau
    dep = run.deployment
    pre_role = "prefill" if dep.mode == "disaggregated" else "colocated"
    dec_role = "decode" if dep.mode == "disaggregated" else "colocated"

    cm, reps = _pool_cost(run, pre_role)
    flops = sum(o.flops for o in cm.step(Batch(prefill=((isl, 0),))).ops)  # one GPU's share
    compute = x / reps * flops / cm.peak

    # decoding sequences per replica, at their mean context
    dec_share = (osl - 1) * tpot / tau
    mem = []
    for kv in (None, "fp8"):
        cmd, reps_d = _pool_cost(run, dec_role, kv)
        n_dec = max(1, round(run.concurrency * dec_share / reps_d))
        ctx = isl + osl / 2
        b = cmd.step(Batch(decode=(int(ctx),) * n_dec))
        read = sum(o.bytes for o in b.ops if o.name != "attn_prefill")
        mem.append(read / cmd.gpu.hbm_bw_bytes_s / tpot)
    return WorkBounds(x, compute, mem[0], mem[1])
