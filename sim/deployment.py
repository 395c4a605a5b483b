"""What is deployed: pools of identical replicas, colocated or prefill/decode disaggregated.

This is the `deployment` block of the Plan JSON (DESIGN.md): the planner writes it, the simulator
runs it, and `serveplan simulate --plan FILE` reads it back. Unset scheduler knobs (None) take the
engine defaults of the pool's GPU (`costmodel.engine_defaults`); `resolved()` fills them in.
`read_plan(path)` and `plan_deployment(plan)` are the one way a Plan file (or a bare deployment
object) is read, by the CLI and by validate alike.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

from costmodel.engine_defaults import ENGINES, engine_defaults
from costmodel.errors import ServePlanError
from costmodel.hardware import load_gpu
from costmodel.jsonio import read_json
from costmodel.model import KV_DTYPES, PRECISIONS
from costmodel.specs import load_model

SPEC_METHODS = ("none", "draft", "self", "ngram")
ROLES = ("colocated", "prefill", "decode")
MODES = ("colocated", "disaggregated")
# most replicas in one pool: each is a simpy process with its own KV pool (~15 kB), so this
# bounds a simulation's memory; 4096 replicas is a fleet of at least 4096 GPUs
MAX_REPLICAS = 4096


@dataclass(frozen=True)
class SpecConfig:
    method: str = "none"  # none | draft | self | ngram
    draft_model: str | None = None  # preset or config.json path (method "draft")
    num_speculative_tokens: int = 0  # k; 0 with method != none means adaptive
    acceptance: float = 0.0  # per-token acceptance probability a
    adaptive: bool = False  # draft length chosen per step from recent acceptance

    def __post_init__(self):
        if self.method not in SPEC_METHODS:
            raise ServePlanError(f"spec method {self.method!r}; expected one of {', '.join(SPEC_METHODS)}")
        if not 0 <= self.num_speculative_tokens <= 16:
            raise ServePlanError(f"num_speculative_tokens={self.num_speculative_tokens}; expected 0..16")
        if not 0.0 <= self.acceptance < 1.0:
            raise ServePlanError(f"spec acceptance {self.acceptance}; expected a probability in [0, 1)")
        if self.method == "draft" and not self.draft_model:
            raise ServePlanError("spec method 'draft' needs a draft model (--draft-model)")
        if self.method == "draft":
            load_model(self.draft_model)  # an unknown name fails here, even when k = 0 disables it

    @property
    def enabled(self) -> bool:
        return self.method != "none" and (self.num_speculative_tokens > 0 or self.adaptive)

    @classmethod
    def from_flags(cls, method: str = "none", k: int = 0, acceptance: float | None = None, *,
                   draft_model: str | None = None, adaptive: bool = False) -> SpecConfig:
        """Speculative decoding as `serveplan simulate` names it: `method` none, or a method
        with its per-token `acceptance` (required); k = 0 with a method is the adaptive policy
        (k chosen per step), as is `adaptive` (up to k)."""
        if method == "none":
            return cls()
        if acceptance is None:
            raise ServePlanError(f"--spec-method {method} needs --spec-acceptance A "
                                 "(per-token acceptance probability in [0, 1))")
        # a SpecConfig with k = 0 and adaptive off would turn speculation off
        return cls(method=method, draft_model=draft_model, num_speculative_tokens=k,
                   acceptance=acceptance, adaptive=adaptive or k == 0)


@dataclass(frozen=True)
class PoolConfig:
    role: str  # colocated | prefill | decode
    gpu: str
    tp: int = 1
    pp: int = 1
    replicas: int = 1
    precision: str = "bf16"
    max_num_seqs: int | None = None
    max_num_batched_tokens: int | None = None
    chunk_size: int | None = None  # most prompt tokens of one request per iteration
    enable_chunked_prefill: bool = True
    kv_dtype: str = "auto"
    gpu_memory_utilization: float | None = None
    kv_budget_tokens: int | None = None  # per-request KV cap (eviction); None = unlimited
    block_size: int | None = None
    enable_prefix_caching: bool = True
    ep: int = 1  # MoE: expert-parallel size (experts over ep GPUs of the replica's tp x dp); 1 = none
    dp: int = 1  # MoE: attention data-parallel ranks of tp GPUs each, one scheduler each; 1 = none
    gpu_price_per_hour_usd: float | None = None  # None = the GPU preset's price
    spec: SpecConfig = field(default_factory=SpecConfig)

    def __post_init__(self):
        if self.role not in ROLES:
            raise ServePlanError(f"pool role {self.role!r}; expected one of {', '.join(ROLES)}")
        load_gpu(self.gpu)
        for name in ("tp", "pp", "replicas", "ep", "dp"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ServePlanError(f"{name}={v!r}; expected an integer >= 1")
        if self.replicas > MAX_REPLICAS:
            raise ServePlanError(f"replicas={self.replicas}; expected an integer in [1, {MAX_REPLICAS}]")
        if self.ep > 1024 or self.dp > 1024:
            raise ServePlanError(f"ep={self.ep}, dp={self.dp}; expected integers in [1, 1024]")
        if self.precision not in PRECISIONS:
            raise ServePlanError(f"precision {self.precision!r}; expected one of {', '.join(PRECISIONS)}")
        if self.kv_dtype not in KV_DTYPES:
            raise ServePlanError(f"kv_dtype {self.kv_dtype!r}; expected one of {', '.join(KV_DTYPES)}")
        for name in ("max_num_seqs", "max_num_batched_tokens", "chunk_size", "kv_budget_tokens"):
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
                raise ServePlanError(f"{name}={v!r}; expected an integer >= 1 (or unset)")
        u = self.gpu_memory_utilization
        if u is not None and not 0.05 <= u <= 1.0:
            raise ServePlanError(f"gpu_memory_utilization={u}; expected a fraction in [0.05, 1.0]")
        if self.kv_budget_tokens is not None and self.kv_budget_tokens < 16:
            raise ServePlanError(f"kv_budget_tokens={self.kv_budget_tokens}; expected >= 16 tokens")

    @property
    def replica_gpus(self) -> int:
        """GPUs of one replica: tp x pp, times the attention DP ranks."""
        return self.tp * self.pp * self.dp

    @property
    def num_gpus(self) -> int:
        return self.replica_gpus * self.replicas

    def price_per_hour_usd(self) -> float:
        p = self.gpu_price_per_hour_usd
        return (p if p is not None else load_gpu(self.gpu).price_per_hour_usd) * self.num_gpus

    def resolved(self, engine: str = "vllm") -> PoolConfig:
        """Fill unset knobs with `engine`'s defaults for this GPU."""
        gpu = load_gpu(self.gpu)
        d = engine_defaults(gpu, engine, self.tp, self.pp)
        mbt = self.max_num_batched_tokens or d.max_num_batched_tokens
        return replace(
            self,
            gpu=gpu.name,
            max_num_seqs=self.max_num_seqs or d.max_num_seqs,
            max_num_batched_tokens=mbt,
            chunk_size=self.chunk_size or d.chunk_size or mbt,
            gpu_memory_utilization=self.gpu_memory_utilization or d.gpu_memory_utilization,
            block_size=self.block_size or d.block_size,
        )

    def to_dict(self) -> dict:
        d = asdict(self)
        d["spec"] = {
            "method": self.spec.method,
            "draft_model": self.spec.draft_model,
            "num_speculative_tokens": self.spec.num_speculative_tokens,
            "acceptance": self.spec.acceptance,
            "adaptive": self.spec.adaptive,
        }
        return d

    @classmethod
    def from_dict(cls, d: dict) -> PoolConfig:
        if not isinstance(d, dict):
            raise ServePlanError(f"a pool must be an object, got {type(d).__name__}")
        known = {f.name for f in fields(cls)} | {"expert_parallel"}
        unknown = set(d) - known
        if unknown:
            raise ServePlanError(f"unknown pool keys {sorted(unknown)}; known: {sorted(known)}")
        kw = dict(d)
        if kw.pop("expert_parallel", False) and kw.get("ep", 1) == 1:  # plans written before `ep`
            kw["ep"] = kw.get("tp", 1) * kw.get("dp", 1)
        spec = kw.pop("spec", None) or {}
        if not isinstance(spec, dict):
            raise ServePlanError("pool 'spec' must be an object")
        spec_known = {f.name for f in fields(SpecConfig)}
        if set(spec) - spec_known:
            raise ServePlanError(f"unknown spec keys {sorted(set(spec) - spec_known)}; known: {sorted(spec_known)}")
        if "role" not in kw or "gpu" not in kw:
            raise ServePlanError("a pool needs 'role' and 'gpu'")
        return cls(**kw, spec=SpecConfig(**spec))


@dataclass(frozen=True)
class Deployment:
    model: str
    pools: tuple[PoolConfig, ...]
    mode: str = "colocated"
    router: str = "least_tokens"  # round_robin | least_tokens | prefix_affinity
    kv_link_bw_bytes_s: float | None = None  # prefill -> decode KV transfer; None = GPU's NIC
    kv_link_latency_s: float = 20e-6
    engine: str = "vllm"  # vllm | sglang: its scheduler policy and defaults (costmodel.engine_defaults)

    def __post_init__(self):
        load_model(self.model)
        if self.engine not in ENGINES:
            raise ServePlanError(f"engine {self.engine!r}; expected one of {', '.join(ENGINES)}")
        if self.mode not in MODES:
            raise ServePlanError(f"mode {self.mode!r}; expected one of {', '.join(MODES)}")
        if not self.pools:
            raise ServePlanError("a deployment needs at least one pool")
        roles = sorted(p.role for p in self.pools)
        if self.mode == "colocated" and roles != ["colocated"]:
            raise ServePlanError(f"a colocated deployment has one pool of role 'colocated', got {roles}")
        if self.mode == "disaggregated" and roles != ["decode", "prefill"]:
            raise ServePlanError(f"a disaggregated deployment has one 'prefill' and one 'decode' pool, got {roles}")
        bw, lat = self.kv_link_bw_bytes_s, self.kv_link_latency_s
        if bw is not None and (isinstance(bw, bool) or not isinstance(bw, (int, float))
                               or not math.isfinite(bw) or bw <= 0):
            raise ServePlanError(f"kv_link_bw_bytes_s={bw!r}; expected a number of bytes/s > 0 (or unset)")
        if isinstance(lat, bool) or not isinstance(lat, (int, float)) or not 0 <= lat < math.inf:
            raise ServePlanError(f"kv_link_latency_s={lat!r}; expected a finite number of seconds >= 0")

    @classmethod
    def colocated(cls, model: str, gpu: str, *, tp: int = 1, pp: int = 1, replicas: int = 1,
                  spec: SpecConfig | None = None, router: str = "least_tokens",
                  engine: str = "vllm", **knobs) -> Deployment:
        """One pool of `replicas` colocated replicas; `knobs` are the other PoolConfig fields
        (precision, max_num_seqs, kv_dtype, ...), None leaving an engine default."""
        pool = PoolConfig("colocated", gpu, tp=tp, pp=pp, replicas=replicas,
                          spec=spec or SpecConfig(), **knobs)
        return cls(model=model, pools=(pool,), router=router, engine=engine)

    @classmethod
    def disaggregated(cls, model: str, gpu: str, *, prefill: tuple[int, int, int] = (1, 1, 1),
                      decode: tuple[int, int, int] = (1, 1, 1), spec: SpecConfig | None = None,
                      router: str = "least_tokens", kv_link_bw_bytes_s: float | None = None,
                      engine: str = "vllm", **knobs) -> Deployment:
        """A prefill pool and a decode pool on `gpu`, each given as (tp, pp, replicas); the
        decode pool speculates (`spec`), the prefill pool does not; `knobs` as in colocated."""
        pools = tuple(PoolConfig(role, gpu, tp=tp, pp=pp, replicas=n, spec=s, **knobs)
                      for role, (tp, pp, n), s in (("prefill", prefill, SpecConfig()),
                                                   ("decode", decode, spec or SpecConfig())))
        return cls(model=model, pools=pools, mode="disaggregated", router=router,
                   kv_link_bw_bytes_s=kv_link_bw_bytes_s, engine=engine)

    @property
    def num_gpus(self) -> int:
        return sum(p.num_gpus for p in self.pools)

    def price_per_hour_usd(self) -> float:
        return sum(p.price_per_hour_usd() for p in self.pools)

    def pool(self, role: str) -> PoolConfig:
        for p in self.pools:
            if p.role == role:
                return p
        raise KeyError(role)

    def resolved(self) -> Deployment:
        return replace(self, pools=tuple(p.resolved(self.engine) for p in self.pools))

    def to_dict(self) -> dict:
        return {
            "model": self.model,
            "mode": self.mode,
            "router": self.router,
            "kv_link_bw_bytes_s": self.kv_link_bw_bytes_s,
            "kv_link_latency_s": self.kv_link_latency_s,
            "engine": self.engine,
            "pools": [p.to_dict() for p in self.pools],
        }

    @classmethod
    def from_dict(cls, d: dict) -> Deployment:
        if not isinstance(d, dict):
            raise ServePlanError(f"a deployment must be an object, got {type(d).__name__}")
        if "model" not in d or "pools" not in d:
            raise ServePlanError("a deployment needs 'model' and 'pools'")
        pools = d["pools"]
        if not isinstance(pools, list):
            raise ServePlanError("deployment 'pools' must be a list")
        return cls(
            model=d["model"],
            pools=tuple(PoolConfig.from_dict(p) for p in pools),
            mode=d.get("mode", "colocated"),
            router=d.get("router", "least_tokens"),
            kv_link_bw_bytes_s=d.get("kv_link_bw_bytes_s"),
            kv_link_latency_s=d.get("kv_link_latency_s", 20e-6),
            engine=d.get("engine", "vllm"),
        )


_NOT_A_PLAN = "a plan must be an object (a Plan JSON, or a bare deployment object)"


def read_plan(path: str | Path) -> dict:
    """A Plan JSON file (or a file holding a bare deployment object), parsed."""
    doc = read_json(path, "plan file")
    if not isinstance(doc, dict):
        raise ServePlanError(f"{path}: {_NOT_A_PLAN}, got {type(doc).__name__}")
    return doc


def plan_deployment(plan: dict | str | Path) -> Deployment:
    """The Deployment of a Plan (its "deployment" block) or of a bare deployment object: `plan`
    is the parsed JSON, or the path of its file (errors then name the file)."""
    if isinstance(plan, (str, Path)):
        doc = read_plan(plan)  # its errors name the file already
        try:
            return plan_deployment(doc)
        except ServePlanError as e:
            raise ServePlanError(f"{plan}: {e}") from None
    if not isinstance(plan, dict):
        raise ServePlanError(f"{_NOT_A_PLAN}, got {type(plan).__name__}")
    try:
        return Deployment.from_dict(plan.get("deployment", plan))
    except TypeError as e:  # a value of the wrong type where a dataclass compares it
        raise ServePlanError(f"bad deployment ({e})") from None
