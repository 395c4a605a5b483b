"""Request and response bodies of the HTTP service, named by direction (pydantic).

Requests forbid unknown keys (a misspelt field is a 422 naming it) and check ranges and
enumerations here, so a bad value is a 422 naming the field and what it accepts before any
work is queued. Whatever passes is handed to the same library calls as the CLI, which check
the rest (model and GPU names, workload strings) and raise ServePlanError (also a 422).

Responses are the library's own JSON: `PlanResponse` is the Plan JSON of DESIGN.md,
`SimulateResponse` RunMetrics, `CostStepResponse` what `serveplan cost step --json` prints.
They declare the documented keys (for the OpenAPI document) and allow extra ones, so a key the
library adds later passes through unchanged: the service returns the same JSON as the CLI.
Units are in the names: `_s` seconds, `_rps` requests per second, `_tok_s` tokens per second.
"""

from __future__ import annotations

import dataclasses
from typing import Literal, get_type_hints

from pydantic import BaseModel, ConfigDict, Field, create_model, field_validator, model_validator

from sim.deployment import ROLES, PoolConfig, SpecConfig
from sim.slo import DEFAULT_TPOT_SLO_S, DEFAULT_TTFT_SLO_S

WEIGHT_PRECISIONS = ("bf16", "fp8", "int4", "fp8_block", "auto")
KV_DTYPES = ("auto", "bf16", "fp8", "int4")
MAX_SIM_REQUESTS = 200_000


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _Response(BaseModel):
    model_config = ConfigDict(extra="allow")


def _choices(value, allowed: tuple[str, ...]):
    """A comma-separated string (or list) whose every item is in `allowed`."""
    items = [value] if isinstance(value, str) else list(value)
    for item in items:
        for s in str(item).split(","):
            if s.strip().lower() not in allowed:
                raise ValueError(f"{s.strip()!r} is not one of {', '.join(allowed)} "
                                 "(a comma-separated list is accepted)")
    return value


def _one_load(rate, concurrency) -> None:
    if rate is not None and concurrency is not None:
        raise ValueError("give either rate (requests/s) or concurrency (clients), not both")


Calibration = str | dict | None
CALIBRATION_HELP = ("a calibration profile: a file name inside the service's data folder, or the "
                    "profile's JSON object itself")


# --- plan ------------------------------------------------------------------------------------
class PlanRequest(_Request):
    """The arguments of `planner.plan()` / `serveplan plan` (seconds for SLOs)."""

    model: str = Field(description="model preset (GET /v1/models) or a config.json inside the "
                       "data folder", examples=["llama-3.1-8b"])
    gpus: str = Field(description="GPU inventory GPU[:COUNT][@PRICE][,GPU:COUNT...] "
                      "(GET /v1/gpus)", examples=["h100:8"])
    workload: str = Field(description="fixed:ISL,OSL | uniform:.. | lognormal:.. | a trace short "
                          "name (azure-conv, azure-code, mooncake-conv, mooncake-synthetic, arxiv) "
                          "| trace:FILE inside the data folder", examples=["fixed:512,128"])
    rate: float | None = Field(None, gt=0, description="target requests/s (open loop)")
    concurrency: int | None = Field(None, ge=1, description="target clients (closed loop)")
    ttft_slo_s: float = Field(gt=0, description="time-to-first-token target, seconds")
    tpot_slo_s: float = Field(gt=0, description="time-per-output-token target, seconds")
    slo_percentile: float = Field(90.0, gt=0, lt=100)
    attainment: float = Field(0.9, gt=0, le=1, description="fraction of requests meeting both")
    objective: Literal["goodput", "cost"] = "goodput"
    spec_method: Literal["none", "draft", "self", "ngram"] = "none"
    draft_model: str | None = Field(None, description="draft model preset (spec_method draft)")
    spec_acceptance: float | None = Field(None, ge=0, lt=1, description="per-token acceptance")
    kv_dtype: str | list[str] = Field("auto", description="auto | bf16 | fp8 | int4 (list or "
                                      "comma-separated: the dtypes the search may use)")
    min_kv_budget: int | None = Field(None, ge=16, description="smallest per-request KV budget "
                                      "(tokens) allowed; unset = no eviction")
    precision: str | list[str] = Field("auto", description="weights: bf16 | fp8 | fp8_block | int4 | "
                                       "auto, the checkpoint's own (bf16; block fp8 or MXFP4 experts "
                                       "for DeepSeek, Kimi-K2, gpt-oss) (list or comma-separated)")
    calibration: Calibration = Field(None, description=CALIBRATION_HELP)
    exhaustive: bool = Field(False, description="simulate every configuration (slow)")
    max_gpus_per_replica: int | None = Field(None, ge=1)
    num_requests: int | None = Field(None, ge=50, le=24_000, description="requests per verifying "
                                     "simulation (default 800, more at high load)")
    seed: int = Field(0, ge=0)
    burstiness_cv: float = Field(1.0, ge=0, le=20, description="gamma inter-arrival CV; 1 = Poisson, "
                                  "0 = evenly spaced")
    top_k: int | None = Field(None, ge=1, le=64, description="allocations verified per mode")

    @field_validator("kv_dtype")
    @classmethod
    def _kv(cls, v):
        return _choices(v, KV_DTYPES)

    @field_validator("precision")
    @classmethod
    def _prec(cls, v):
        return _choices(v, WEIGHT_PRECISIONS)

    @model_validator(mode="after")
    def _load(self):
        _one_load(self.rate, self.concurrency)
        if self.spec_method == "draft" and not self.draft_model:
            raise ValueError("spec_method 'draft' needs draft_model (a model preset)")
        if self.objective == "cost" and self.rate is None and self.concurrency is None:
            raise ValueError("objective 'cost' needs a target load: rate or concurrency")
        return self


class PredictedBlock(_Response):
    ttft_p50_s: float | None
    ttft_p90_s: float | None
    tpot_p50_s: float | None
    tpot_p90_s: float | None
    throughput_tok_s: float | None
    goodput_rps: float | None
    slo_attainment: float | None
    gpus: int
    cost_per_hour_usd: float | None
    cost_per_mtok_usd: float | None


def _block(name: str, source, doc: str | None = None, **override) -> type[_Response]:
    """A response block with the fields of the dataclass `source`: names, types and defaults in
    its order, so the schema follows the library's type; `override` narrows a field's type
    (name=(type, default))."""
    hints = get_type_hints(source)
    spec = {}
    for f in dataclasses.fields(source):
        if f.name in override:
            spec[f.name] = override[f.name]
        elif f.default_factory is not dataclasses.MISSING:
            spec[f.name] = (hints[f.name], Field(default_factory=f.default_factory))
        else:
            spec[f.name] = (hints[f.name], ... if f.default is dataclasses.MISSING else f.default)
    return create_model(name, __base__=_Response, __doc__=doc, __module__=__name__, **spec)


SpecBlock = _block("SpecBlock", SpecConfig)
PoolBlock = _block(
    "PoolBlock", PoolConfig,
    """One pool of identical replicas (sim.deployment.PoolConfig); unset knobs take the
    engine defaults of the GPU.""",
    role=(Literal[ROLES], ...), spec=(SpecBlock, Field(default_factory=SpecBlock)))


class DeploymentBlock(_Response):
    """The Plan JSON's `deployment` block (what `serveplan simulate --plan` reads). As a request
    field only the keys given are passed on (types checked here, values by the simulator)."""

    model: str
    mode: Literal["colocated", "disaggregated"] = "colocated"
    router: str = "least_tokens"
    kv_link_bw_bytes_s: float | None = None
    kv_link_latency_s: float = 20e-6
    engine: Literal["vllm", "sglang"] = "vllm"
    pools: list[PoolBlock]


class AlternativeBlock(_Response):
    mode: str
    deployment: DeploymentBlock
    predicted: PredictedBlock
    capacity: dict
    why: str


class PlanResponse(_Response):
    """The Plan JSON (schema `serveplan.plan`), exactly as `serveplan plan --json` prints it.
    Header `X-ServePlan-Cache: hit|miss` says whether it came from the cache."""

    schema_: str = Field(alias="schema", examples=["serveplan.plan"])
    version: int
    feasible: bool
    binding: str | None = None
    deployment: DeploymentBlock
    predicted: PredictedBlock
    launch: dict
    alternatives: list[AlternativeBlock]
    why: dict
    search: dict
    simulation: dict
    capacity: dict
    inputs: dict
    uncertainty: dict | None = None
    notes: list[str] = []


# --- simulate --------------------------------------------------------------------------------
class SimulateRequest(_Request):
    """A deployment (or a whole Plan, whose deployment is used) under a workload."""

    deployment: DeploymentBlock | None = Field(None, description="a Plan's deployment block")
    plan: dict | None = Field(None, description="a whole Plan JSON (its deployment is simulated)")
    workload: str = Field(examples=["fixed:512,128"], description="as in PlanRequest.workload")
    rate: float | None = Field(None, gt=0, description="requests/s (open loop)")
    concurrency: int | None = Field(None, ge=1, description="clients (closed loop)")
    burstiness_cv: float = Field(1.0, ge=0, le=20, description="as in PlanRequest.burstiness_cv")
    num_requests: int = Field(1000, ge=1, le=MAX_SIM_REQUESTS)
    seed: int = Field(0, ge=0)
    ttft_slo_s: float | None = Field(None, gt=0, description=f"default {DEFAULT_TTFT_SLO_S:g} s")
    tpot_slo_s: float | None = Field(None, gt=0, description=f"default {DEFAULT_TPOT_SLO_S:g} s")
    slo_percentile: float = Field(90.0, gt=0, lt=100)
    attainment: float = Field(0.9, gt=0, le=1)
    policy: Literal["decode_first", "prefill_first", "prefill_only"] | None = Field(
        None, description="the scheduler; default: the deployment's engine's")
    host_cache_gib: float = Field(0.0, ge=0, le=4096)
    calibration: Calibration = Field(None, description=CALIBRATION_HELP)

    @model_validator(mode="after")
    def _one(self):
        _one_load(self.rate, self.concurrency)
        if (self.deployment is None) == (self.plan is None):
            raise ValueError("give exactly one of deployment (a Plan's deployment block) or plan")
        return self


class SimulateResponse(_Response):
    """RunMetrics, flat keys in seconds, as `serveplan simulate --json` prints them."""

    ttft_mean_s: float | None
    ttft_p50_s: float | None
    ttft_p90_s: float | None
    ttft_p99_s: float | None
    tpot_mean_s: float | None
    tpot_p50_s: float | None
    tpot_p90_s: float | None
    tpot_p99_s: float | None
    e2e_mean_s: float | None
    e2e_p50_s: float | None
    e2e_p90_s: float | None
    e2e_p99_s: float | None
    throughput_tok_s: float | None
    goodput_rps: float | None
    slo_attainment: float | None
    preemptions: int
    kv_peak_fraction: float | None
    sim_wall_s: float
    num_requests: int
    num_completed: int
    num_rejected: int
    utilisation: list[float]
    slo_met: bool
    notes: list[str] = []
    # with a calibration that has engine-run intervals: {"latency_interval_80": ...}, as a plan's
    uncertainty: dict | None = None


# --- cost step -------------------------------------------------------------------------------
class CostStepRequest(_Request):
    """One engine iteration, as `serveplan cost step` takes it."""

    model: str = Field(examples=["llama-3.1-70b"])
    gpu: str = Field(examples=["h100"])
    tp: int = Field(1, ge=1, le=64)
    pp: int = Field(1, ge=1, le=256)
    ep: int = Field(1, ge=1, le=1024, description="MoE: expert-parallel size (1 = none)")
    dp: int = Field(1, ge=1, le=1024, description="MoE: attention data-parallel ranks, each running the batch")
    precision: Literal["bf16", "fp8", "int4", "fp8_block", "auto"] = "bf16"
    kv_dtype: Literal["auto", "bf16", "fp8", "int4"] = "auto"
    prefill: list[str] = Field(default_factory=list, description="LEN[xN][+CACHED_PREFIX] each",
                               examples=[["2048"]])
    decode: list[str] = Field(default_factory=list, description="BATCHxCONTEXT each",
                              examples=[["64x1500"]])
    spec_k: int = Field(0, ge=0, le=16, description="verify step: k draft tokens per decode")
    gpu_memory_utilization: float = Field(0.9, ge=0.05, le=1.0)
    calibration: Calibration = Field(None, description=CALIBRATION_HELP)


class OpTime(_Response):
    name: str
    time_s: float
    count: int | float
    flops: float
    bytes: float
    comm_bytes: float


class CostStepResponse(_Response):
    model: str
    gpu: str
    tp: int
    pp: int
    ep: int = 1
    dp: int = 1
    precision: str
    kv_dtype: str
    calibrated: bool
    step_time_s: float
    stage_time_s: float
    num_tokens: int
    num_seqs: int
    ops: list[OpTime]
    memory: dict


# --- catalogues and health -------------------------------------------------------------------
class ModelInfo(BaseModel):
    name: str
    hf_id: str
    num_layers: int
    hidden_size: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    num_experts: int
    num_params: int
    max_position: int


class ModelsResponse(BaseModel):
    models: list[ModelInfo]


class GpuInfo(BaseModel):
    name: str
    vendor: str
    bf16_flops: float
    fp8_flops: float
    hbm_bytes: float
    hbm_bw_bytes_s: float
    gpus_per_node: int
    price_per_hour_usd: float
    price_source: str


class GpusResponse(BaseModel):
    gpus: list[GpuInfo]


class HealthResponse(BaseModel):
    status: Literal["ok"]
    version: str
    workers: int
    in_flight: int = Field(description="requests running or queued in the worker pool")
    max_in_flight: int
    cache_entries: int
    timeout_s: float
    data_dir: bool = Field(description="whether a data folder is configured for trace files")
