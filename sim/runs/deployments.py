"""The deployment a benchmark run ran on, for result files that do not say.

A vLLM, SGLang or aiperf result file records the client's side only: the server's model,
GPUs, parallelism and precision are given beside it, as one of
- a `Deployment`;
- a plan file: a Plan JSON (its "deployment" block) or a bare deployment object, as
  `serveplan simulate --plan` reads it;
- an inline deployment object (`{"model": ..., "pools": [...]}`, or a Plan with a
  "deployment" key);
- a shorthand for one colocated pool: `model` and `gpu`, plus any pool field (`tp`, `pp`,
  `replicas`, `precision`, `kv_dtype`, `max_num_seqs`, `max_num_batched_tokens`, ...).

`require_fits` refuses a deployment whose weights, activations and one run's largest request
do not fit in GPU memory, with the memory plan the simulator itself uses (`sim.engine`).
"""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

from costmodel.engine_defaults import engine_defaults
from costmodel.errors import ServePlanError
from costmodel.memory import memory_plan, require_fit
from sim.deployment import Deployment, PoolConfig, plan_deployment
from sim.engine import cost_model_for

# the shorthand's keys: the model, and the fields of its one colocated pool
SHORTHAND_KEYS = ("model",) + tuple(f.name for f in fields(PoolConfig) if f.name not in ("role", "spec"))


def read_plan_deployment(path: str | Path) -> Deployment:
    """The Deployment of a plan file: a Plan JSON (its "deployment" block) or a bare deployment
    (the project's one plan-file reader, `sim.deployment.plan_deployment`)."""
    return plan_deployment(Path(path))


def _from_object(d, where: str) -> Deployment:
    if not isinstance(d, dict):
        raise ServePlanError(f"{where}: a deployment must be an object (a Plan JSON, or a bare "
                             f"deployment), got {type(d).__name__}")
    try:
        return Deployment.from_dict(d.get("deployment", d))
    except ServePlanError as e:
        raise ServePlanError(f"{where}: {e}") from None
    except TypeError as e:  # a value of the wrong type where a dataclass compares it
        raise ServePlanError(f"{where}: bad deployment ({e})") from None


def _from_shorthand(d: dict, where: str) -> Deployment:
    unknown = sorted(set(d) - set(SHORTHAND_KEYS))
    if unknown:
        raise ServePlanError(f"{where}: unknown deployment keys {unknown}; a shorthand deployment "
                             f"takes {', '.join(SHORTHAND_KEYS)}")
    if "model" not in d or "gpu" not in d:
        raise ServePlanError(f"{where}: a shorthand deployment needs 'model' and 'gpu' (or give "
                             "'pools', or a plan file)")
    kw = dict(d)
    model = kw.pop("model")
    try:
        return Deployment(model, (PoolConfig("colocated", **kw),))
    except ServePlanError as e:
        raise ServePlanError(f"{where}: {e}") from None
    except TypeError as e:
        raise ServePlanError(f"{where}: bad deployment ({e})") from None


def deployment_from(spec, base_dir: str | Path | None = None, where: str = "deployment") -> Deployment:
    """A Deployment from what a caller or a manifest gives (module doc); a plan file path is
    taken relative to `base_dir` when given."""
    if isinstance(spec, Deployment):
        return spec
    if isinstance(spec, (str, Path)):
        p = Path(spec).expanduser()
        if base_dir is not None and not p.is_absolute():
            p = Path(base_dir) / p
        return read_plan_deployment(p)
    if isinstance(spec, dict):
        if "pools" in spec or "deployment" in spec:
            return _from_object(spec, where)
        return _from_shorthand(spec, where)
    raise ServePlanError(f"{where}: {spec!r}; expected a plan file path, a deployment object "
                         "(model, pools) or a shorthand (model, gpu, tp, ...)")


def require_fits(dep: Deployment, request_tokens: int, where: str) -> None:
    """Every pool holds its weights, activations and the KV cache of one request of
    `request_tokens` (prompt + output) tokens; else a ServePlanError naming `where`."""
    for pool in dep.resolved().pools:
        cm = cost_model_for(pool, dep.model, engine=dep.engine)
        static = engine_defaults(cm.gpu, dep.engine, pool.tp, pool.pp).static_memory_fraction
        plan = memory_plan(cm, pool.gpu_memory_utilization, pool.max_num_batched_tokens,
                           pool.max_num_seqs, pool.block_size, static)
        try:
            require_fit(plan, cm, max(int(request_tokens), pool.block_size))
        except ServePlanError as e:
            raise ServePlanError(f"{where}: deployment ({pool.role} pool): {e}") from None
