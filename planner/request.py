"""A plan request: the user's inputs, checked once, with every bad value named.

`PlanInputs.build(...)` (named apart from the service's `PlanRequest`, the HTTP body that
carries the same arguments) takes the same arguments as `planner.plan()` and the CLI; it loads the
model and fleet, parses the workload and SLO, resolves the speculative acceptance (given, or
looked up in spec_acceptance.csv-style tables), and raises ServePlanError on bad input.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from costmodel.errors import ServePlanError
from costmodel.specs import ModelSpec, load_model
from planner.fleet import Fleet, parse_fleet
from planner.screen import SLOTarget
from planner.shape import WorkloadShape
from planner.space import Constraints, SearchSpace
from planner.spec_table import lookup_acceptance
from sim.slo import SLO
from sim.workload import Workload, generate_requests, parse_workload, with_load

OBJECTIVES = ("goodput", "cost")
DEFAULT_REQUESTS = 800  # fewest requests per verifying simulation
SHAPE_REQUESTS = 4000  # requests the screen's workload shape is drawn from
SIM_LIVES = 6  # a verifying simulation spans at least this many request lives
MAX_REQUESTS = 24000


def _split(value, what: str, allowed: tuple[str, ...], auto: tuple[str, ...]) -> tuple[str, ...]:
    if value is None or value == "auto":
        return auto
    items = [value] if isinstance(value, str) else list(value)
    out = []
    for it in items:
        for s in str(it).split(","):
            s = s.strip().lower()
            if s == "auto":
                out += list(auto)
            elif s in allowed:
                out.append(s)
            else:
                raise ServePlanError(f"{what} {s!r}; expected one of {', '.join(allowed)} (or auto)")
    return tuple(dict.fromkeys(out))


def _positive(name: str, v, allow_none: bool = False) -> float | None:
    if v is None and allow_none:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
        raise ServePlanError(f"{name} {v!r}; expected a number > 0")
    return float(v)


@dataclass(frozen=True)
class PlanInputs:
    model_name: str
    model: ModelSpec
    fleet: Fleet
    workload_spec: str
    workload: Workload
    rate: float | None
    concurrency: int | None
    slo: SLO
    objective: str
    constraints: Constraints
    space: SearchSpace
    acceptance_source: str
    num_requests: int
    seed: int
    burstiness_cv: float

    @property
    def closed_loop(self) -> bool:
        return self.concurrency is not None

    @property
    def load(self) -> float | None:
        """The target load in the planner's unit: requests/s, or clients for a closed loop."""
        return float(self.concurrency) if self.concurrency is not None else self.rate

    @property
    def load_unit(self) -> str:
        return "clients" if self.closed_loop else "requests/s"

    def life_s(self) -> float:
        """A request's time in the system near the SLO boundary: the TTFT target plus its
        decode at 70% of the TPOT target (seconds)."""
        out = float(np.mean(self.workload_shape_lengths()[1]))
        return self.slo.ttft_s + max(out - 1.0, 0.0) * 0.7 * self.slo.tpot_s

    def requests_for(self, load: float) -> int:
        """Requests in a simulation at `load`: enough for SIM_LIVES request lives, so the batch
        reaches its steady state (a short run at a high rate never fills the replicas and flatters
        them), at least `num_requests`, rounded up a ladder of x1.5 steps. A function of the load
        alone: every search that probes a deployment at a load runs the same simulation."""
        if self.closed_loop:
            want = 2 * SIM_LIVES * load  # each client sends its requests one after another
        else:
            want = SIM_LIVES * load * self.life_s()
        n = float(self.num_requests)
        while n < want and n < MAX_REQUESTS:
            n *= 1.5
        return int(min(MAX_REQUESTS, math.ceil(n / 100.0) * 100))

    def workload_shape_lengths(self):
        shape = self.__dict__.get("_shape_cache")
        if shape is None:
            shape = self.workload_shape()
        return shape.input_tokens, shape.output_tokens

    @property
    def slo_target(self) -> SLOTarget:
        s = self.slo
        return SLOTarget(s.ttft_s, s.tpot_s, s.percentile, s.attainment)

    def workload_shape(self) -> WorkloadShape:
        """The verifying simulations' own requests (same seed stream as `sim.simulate`): the
        first SHAPE_REQUESTS of them, since a trace replayed in order changes along the way
        (the Azure conversation trace's first 800 prompts average 963 tokens, the next 1,800
        1,210) and the verifying runs are 800 to 24,000 requests long."""
        cached = self.__dict__.get("_shape_cache")
        if cached is not None:
            return cached
        wl = with_load(self.workload, rate=self.rate or (None if self.closed_loop else 1.0),
                       concurrency=self.concurrency)
        ss_req, _ = np.random.SeedSequence(self.seed).spawn(2)
        n = max(self.num_requests, SHAPE_REQUESTS)
        arr = generate_requests(wl, n, np.random.default_rng(ss_req))
        arrivals = None if self.closed_loop else arr.arrival_s
        shape = WorkloadShape.from_requests(arr.input_len, arr.output_len, arrivals)
        object.__setattr__(self, "_shape_cache", shape)  # frozen: cache the derived shape
        return shape

    def to_dict(self) -> dict:
        c = self.constraints
        return {
            "model": self.model_name,
            "gpus": self.fleet.to_dict(),
            "workload": self.workload_spec,
            "rate_rps": self.rate,
            "concurrency": self.concurrency,
            "burstiness_cv": self.burstiness_cv,
            "slo": {"ttft_s": self.slo.ttft_s, "tpot_s": self.slo.tpot_s,
                    "percentile": self.slo.percentile, "attainment": self.slo.attainment},
            "objective": self.objective,
            "constraints": {
                "precisions": list(c.precisions), "kv_dtypes": list(c.kv_dtypes),
                "min_kv_budget_tokens": c.min_kv_budget_tokens, "spec_method": c.spec_method,
                "draft_model": c.draft_model, "spec_acceptance": c.spec_acceptance,
                "spec_acceptance_source": self.acceptance_source,
                "max_gpus_per_replica": c.max_gpus_per_replica,
            },
            "num_requests": self.num_requests,
            "seed": self.seed,
        }

    @classmethod
    def build(cls, *, model, gpus, workload, rate=None, concurrency=None, ttft_slo_s=None,
              tpot_slo_s=None, slo_percentile=90.0, attainment=0.9, objective="goodput",
              spec_method="none", draft_model=None, spec_acceptance=None, kv_dtype="auto",
              min_kv_budget=None, precision=None, max_gpus_per_replica=None, space=None,
              num_requests=None, seed=0, burstiness_cv=1.0) -> PlanInputs:
        if ttft_slo_s is None or tpot_slo_s is None:
            raise ServePlanError("both SLOs are required: ttft_slo_s (--ttft-slo) and tpot_slo_s (--tpot-slo), in seconds")
        ttft = _positive("TTFT SLO (s)", ttft_slo_s)
        tpot = _positive("TPOT SLO (s)", tpot_slo_s)
        if not (isinstance(slo_percentile, (int, float)) and 0 < slo_percentile < 100):
            raise ServePlanError(f"SLO percentile {slo_percentile!r}; expected a number in (0, 100)")
        if not (isinstance(attainment, (int, float)) and 0 < attainment <= 1):
            raise ServePlanError(f"attainment {attainment!r}; expected a fraction in (0, 1]")
        if objective not in OBJECTIVES:
            raise ServePlanError(f"objective {objective!r}; expected one of {', '.join(OBJECTIVES)}")
        if rate is not None and concurrency is not None:
            raise ServePlanError("give either a rate (--rate) or a concurrency (--concurrency), not both")
        rate = _positive("rate (requests/s)", rate, allow_none=True)
        if concurrency is not None and (isinstance(concurrency, bool) or not isinstance(concurrency, int)
                                        or concurrency < 1):
            raise ServePlanError(f"concurrency {concurrency!r}; expected an integer >= 1")
        if objective == "cost" and rate is None and concurrency is None:
            raise ServePlanError("objective 'cost' needs a target load: --rate RPS or --concurrency N")
        n = DEFAULT_REQUESTS if num_requests is None else num_requests
        if isinstance(n, bool) or not isinstance(n, int) or n < 50:
            raise ServePlanError(f"num_requests {n!r}; expected an integer >= 50 per simulation")
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ServePlanError(f"seed {seed!r}; expected an integer >= 0")
        if space is not None and not isinstance(space, SearchSpace):
            raise ServePlanError(f"space {space!r}; expected a planner.space.SearchSpace (or None)")
        spec = load_model(model)
        fleet = parse_fleet(gpus)
        wl = parse_workload(workload, rate=rate if rate is not None else (None if concurrency else 1.0),
                            concurrency=concurrency, burstiness_cv=burstiness_cv)
        slo = SLO(ttft, tpot, float(slo_percentile), float(attainment))
        # unset: the checkpoint as published ("auto": DeepSeek's block fp8, gpt-oss's MXFP4
        # experts), which is bf16 for a bf16 checkpoint
        precisions = _split(precision, "precision", ("bf16", "fp8", "int4", "fp8_block", "auto"),
                            ("auto",) if spec.weight_dtypes else ("bf16",))
        kv_dtypes = _split(kv_dtype, "KV dtype", ("bf16", "fp8", "int4"), ("bf16", "fp8"))
        method = (spec_method or "none").lower()
        source = "no speculative decoding"
        a = 0.0
        if method != "none":
            if spec_acceptance is not None:
                if not (isinstance(spec_acceptance, (int, float)) and 0 <= spec_acceptance < 1):
                    raise ServePlanError(f"spec acceptance {spec_acceptance!r}; expected a probability in [0, 1)")
                a, source = float(spec_acceptance), "given by the user"
            else:
                acc = lookup_acceptance(method, spec.name)
                a, source = acc.a, acc.source
            if method == "draft":
                if not draft_model:
                    raise ServePlanError("spec method 'draft' needs a draft model (--draft-model)")
                load_model(draft_model)
        cons = Constraints(precisions, kv_dtypes, min_kv_budget, method, draft_model, a,
                           max_gpus_per_replica)
        return cls(str(model), spec, fleet, str(workload), wl, rate, concurrency, slo, objective,
                   cons, space or SearchSpace(), source, n, seed, float(burstiness_cv))
