"""The Plan: what `planner.plan()` returns and `serveplan plan --json` prints (DESIGN.md).

JSON keys (schema "serveplan.plan", version 1):
- `deployment`: the resolved `sim.deployment.Deployment.to_dict()` (mode, pools with role, gpu,
  tp, pp, replicas, max_num_seqs, max_num_batched_tokens, chunk_size, kv_dtype,
  gpu_memory_utilization, kv_budget_tokens, spec {method, draft_model, num_speculative_tokens,
  acceptance, adaptive}, ...): `serveplan simulate --plan` reads it back.
- `predicted`: ttft_p50_s, ttft_p90_s, tpot_p50_s, tpot_p90_s, throughput_tok_s, goodput_rps,
  slo_attainment (from the verifying simulation at `simulation.rate_rps` / `concurrency` with
  `simulation.seed` and `simulation.num_requests`), gpus, cost_per_hour_usd, cost_per_mtok_usd.
- `launch`: {"vllm": [lines], "sglang": [lines], "notes": [...]}.
- `alternatives`: the next best of each mode, each with its deployment, predicted block, capacity
  and why it lost.
- `why`: what bound the winner (memory, ttft, tpot, max_num_seqs, compute, gpus, cost) and why
  it won; `search`: candidates, simulated, wall_s (and more counts); `simulation`: how to
  reproduce `predicted`; `capacity`: the verified goodput (the highest SLO-meeting load);
  `inputs`: the request echoed; `feasible` / `binding`; `uncertainty` with a calibration profile.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields

from costmodel.errors import ServePlanError
from sim.deployment import Deployment

SCHEMA = "serveplan.plan"
VERSION = 1
PREDICTED_KEYS = ("ttft_p50_s", "ttft_p90_s", "tpot_p50_s", "tpot_p90_s", "throughput_tok_s",
                  "goodput_rps", "slo_attainment", "gpus", "cost_per_hour_usd", "cost_per_mtok_usd")


@dataclass(frozen=True)
class Predicted:
    ttft_p50_s: float
    ttft_p90_s: float
    tpot_p50_s: float
    tpot_p90_s: float
    throughput_tok_s: float
    goodput_rps: float
    slo_attainment: float
    gpus: int
    cost_per_hour_usd: float
    cost_per_mtok_usd: float

    @classmethod
    def from_metrics(cls, m: dict, gpus: int, cost_per_hour_usd: float) -> Predicted:
        """From RunMetrics.to_dict(): cost per million output tokens at the simulated throughput."""
        tok_s = float(m["throughput_tok_s"])
        per_mtok = cost_per_hour_usd / (tok_s * 3600.0) * 1e6 if tok_s > 0 else math.inf
        return cls(float(m["ttft_p50_s"]), float(m["ttft_p90_s"]), float(m["tpot_p50_s"]),
                   float(m["tpot_p90_s"]), tok_s, float(m["goodput_rps"]),
                   float(m["slo_attainment"]), int(gpus), float(cost_per_hour_usd), per_mtok)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> Predicted:
        missing = [k for k in PREDICTED_KEYS if k not in d]
        if missing:
            raise ServePlanError(f"plan 'predicted' lacks {missing}; expected keys {list(PREDICTED_KEYS)}")
        vals = {k: (math.inf if d[k] is None else d[k]) for k in PREDICTED_KEYS}
        vals["gpus"] = int(vals["gpus"])
        return cls(**vals)


@dataclass(frozen=True)
class Alternative:
    mode: str
    deployment: dict
    predicted: Predicted
    capacity: dict
    why: str

    def to_dict(self) -> dict:
        return {"mode": self.mode, "deployment": self.deployment, "predicted": self.predicted.to_dict(),
                "capacity": self.capacity, "why": self.why}

    @classmethod
    def from_dict(cls, d: dict) -> Alternative:
        return cls(d["mode"], d["deployment"], Predicted.from_dict(d["predicted"]),
                   dict(d.get("capacity") or {}), str(d.get("why", "")))


@dataclass(frozen=True)
class Plan:
    deployment: dict
    predicted: Predicted
    launch: dict
    alternatives: tuple[Alternative, ...]
    why: dict
    search: dict
    simulation: dict
    capacity: dict
    inputs: dict
    feasible: bool = True
    binding: str | None = None  # the constraint that binds when not feasible
    uncertainty: dict | None = None
    notes: tuple[str, ...] = field(default_factory=tuple)

    def deployment_obj(self) -> Deployment:
        return Deployment.from_dict(self.deployment)

    def to_dict(self) -> dict:
        return {
            "schema": SCHEMA,
            "version": VERSION,
            "feasible": self.feasible,
            "binding": self.binding,
            "deployment": self.deployment,
            "predicted": self.predicted.to_dict(),
            "launch": self.launch,
            "alternatives": [a.to_dict() for a in self.alternatives],
            "why": self.why,
            "search": self.search,
            "simulation": self.simulation,
            "capacity": self.capacity,
            "inputs": self.inputs,
            "uncertainty": self.uncertainty,
            "notes": list(self.notes),
        }

    @classmethod
    def from_dict(cls, d: dict) -> Plan:
        if not isinstance(d, dict) or d.get("schema") != SCHEMA:
            raise ServePlanError(f"not a ServePlan plan (schema must be {SCHEMA!r})")
        if d.get("version") != VERSION:
            raise ServePlanError(f"plan version {d.get('version')!r}; this ServePlan reads version {VERSION}")
        need = [f.name for f in fields(cls) if f.name not in ("feasible", "binding", "uncertainty", "notes")]
        missing = [k for k in need if k not in d]
        if missing:
            raise ServePlanError(f"plan lacks {missing}")
        Deployment.from_dict(d["deployment"])  # validates the block
        return cls(
            deployment=d["deployment"], predicted=Predicted.from_dict(d["predicted"]),
            launch=d["launch"], alternatives=tuple(Alternative.from_dict(a) for a in d["alternatives"]),
            why=d["why"], search=d["search"], simulation=d["simulation"], capacity=d["capacity"],
            inputs=d["inputs"], feasible=bool(d.get("feasible", True)), binding=d.get("binding"),
            uncertainty=d.get("uncertainty"), notes=tuple(d.get("notes") or ()),
        )
