"""`simulate(deployment, workload, ...)`: build the cluster, run it in simpy, return metrics.

Each pool's replicas get a CostModel (cached across calls: its step-time cache is what makes
repeated simulations fast) and a KV pool sized by `costmodel.memory.memory_plan` for the pool's
resolved knobs (engine defaults fill what the deployment leaves unset).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd
import simpy

from costmodel.engine_defaults import engine_defaults
from costmodel.errors import ServePlanError
from costmodel.hardware import GiB, load_gpu
from costmodel.memory import memory_plan, require_fit
from costmodel.model import CostModel
from costmodel.specs import load_model
from sim.cluster import Cluster
from sim.deployment import Deployment, PoolConfig
from sim.dp_group import DPGroup
from sim.metrics import RunMetrics, summarise
from sim.replica import Replica, ReplicaConfig
from sim.router import Router
from sim.scheduler import POLICIES
from sim.slo import DEFAULT_SLO, SLO
from sim.spec import SpecDecoder
from sim.workload import Workload, generate_requests

_CM_CACHE: dict = {}
_CM_CACHE_MAX = 64
# CostModel caches that do not depend on the KV dtype (dense operators, MLA projections, MoE)
_SHARED_CACHES = ("_dense_cache", "_layer_cache", "_tok_cache", "_logit_cache", "_comm_cache",
                  "_mla_proj_cache", "_gemm_memo", "_moe_cache")
# parameters no cached operator time reads (the API server, the request latency, the memory
# reserve, host time and the kernel-speed scales apply outside those caches): calibrations that
# differ only in these share the caches too (a run fit's grids and rounds move them)
_NOT_OPERATOR_PARAMS = ("frontend_s", "frontend_per_token_s", "frontend_stream_s", "request_latency_s",
                        "mem_reserved_gib", "host_overhead_s", "host_per_seq_s", "prefill_time_scale",
                        "decode_time_scale")


def _operator_key(cm: CostModel) -> tuple:
    return replace(cm.eff, **dict.fromkeys(_NOT_OPERATOR_PARAMS, 0.0)), id(cm._tables)


@dataclass
class SimResult:
    metrics: RunMetrics
    requests: pd.DataFrame | None  # one row per request (keep_requests=True)
    timeline: dict | None  # per replica: time, KV fraction in use, queue length, running; busy
    steps: dict | None = None  # record_steps: replica index -> its iterations (Replica.step_log)
    # every request's prompt and output tokens, as drawn (kept without keep_requests: they are
    # what a calibration's intervals compare with the runs behind them)
    input_len: np.ndarray | None = None
    output_len: np.ndarray | None = None


def cost_model_for(pool: PoolConfig, model, calibration=None, engine: str = "vllm") -> CostModel:
    """A CostModel for one replica of `pool` under `engine`, shared across simulations with the
    same inputs."""
    overlap = engine_defaults(load_gpu(pool.gpu), engine, pool.tp, pool.pp).host_overlap
    key = (model, pool.gpu, pool.tp, pool.pp, pool.precision, pool.kv_dtype, pool.ep, pool.dp,
           overlap, id(calibration))
    hit = _CM_CACHE.get(key)
    if hit is not None and hit[1] is calibration:
        return hit[0]
    cm = CostModel(model, pool.gpu, tp=pool.tp, pp=pool.pp, precision=pool.precision,
                   kv_dtype=pool.kv_dtype, calibration=calibration,
                   ep=pool.ep, dp=pool.dp, host_overlap=overlap)
    # the same replica with another KV dtype times every non-attention operator alike, and so
    # does one whose calibration differs only in _NOT_OPERATOR_PARAMS: share those caches (the
    # planner screens both KV dtypes of every shape; a run fit replays at many such values)
    op_key = _operator_key(cm)
    for (m2, g2, tp2, pp2, prec2, _kv, ep2, dp2, ov2, _cal), (sib, _, op2) in _CM_CACHE.items():
        if (m2, g2, tp2, pp2, prec2, ep2, dp2, ov2, op2) == (key[0], key[1], key[2], key[3], key[4],
                                                             key[6], key[7], key[8], op_key):
            for name in _SHARED_CACHES:
                setattr(cm, name, getattr(sib, name))
            break
    if len(_CM_CACHE) >= _CM_CACHE_MAX:
        _CM_CACHE.pop(next(iter(_CM_CACHE)))
    _CM_CACHE[key] = (cm, calibration, op_key)
    return cm


def _replica_config(pool: PoolConfig, cm: CostModel, *, engine: str, policy: str | None,
                    watermark: float, kv_blocks: int | None, prefix_caching: bool,
                    hash_block_tokens: int, host_cache_gib: float) -> ReplicaConfig:
    d = engine_defaults(cm.gpu, engine, pool.tp, pool.pp)
    policy = policy or d.policy
    mns = pool.max_num_seqs or d.max_num_seqs
    mbt = pool.max_num_batched_tokens or d.max_num_batched_tokens
    bs = pool.block_size or d.block_size
    gmu = pool.gpu_memory_utilization or d.gpu_memory_utilization
    if kv_blocks is None:
        mem = require_fit(memory_plan(cm, gmu, mbt, mns, bs, d.static_memory_fraction), cm, bs)
        kv_blocks = mem.kv_blocks
    if not 0 <= watermark < 0.5:
        raise ServePlanError(f"watermark {watermark!r}; expected a fraction of KV blocks in [0, 0.5)")
    caching = prefix_caching and pool.enable_prefix_caching and pool.kv_budget_tokens is None
    kv_tok_bytes = cm.model.kv_elems_per_token() * cm.kv_elem_bytes  # whole replica
    entry_bytes = hash_block_tokens * kv_tok_bytes
    host_entries = int(host_cache_gib * GiB // entry_bytes) if caching and host_cache_gib > 0 else 0
    pcie = cm.gpu.pcie_bw_bytes_s * cm.num_gpus
    return ReplicaConfig(
        role=pool.role, max_num_seqs=mns, max_num_batched_tokens=mbt,
        chunk_size=min(pool.chunk_size or d.chunk_size or mbt, mbt) if d.chunk_size is None
        else pool.chunk_size or d.chunk_size, enable_chunked_prefill=pool.enable_chunked_prefill,
        batch_tokens_hard=0 if d.chunk_size is None else pool.chunk_size or d.chunk_size,
        block_size=bs, kv_blocks=int(kv_blocks), watermark_blocks=int(watermark * kv_blocks),
        kv_budget_tokens=pool.kv_budget_tokens, policy=policy, pp=pool.pp, prefix_caching=caching,
        hash_block_tokens=hash_block_tokens, host_cache_entries=host_entries,
        host_load_s_per_entry=entry_bytes / pcie,
        reserve_outputs=d.reserve_outputs and pool.role != "decode",
        overlap_lag=d.host_overlap and pool.pp == 1,
    )


def _rejecter(cfgs: dict[str, ReplicaConfig], max_len: int, q_max: int):
    """A request that could never run is rejected at arrival (it would wait forever)."""
    first = cfgs.get("prefill") or cfgs["colocated"]
    last = cfgs.get("decode") or cfgs["colocated"]

    def blocks(tokens: int, cfg: ReplicaConfig) -> int:
        if cfg.kv_budget_tokens is not None:
            tokens = min(tokens, cfg.kv_budget_tokens)
        return -(-tokens // cfg.block_size)

    def reject(prompt: int, out: int) -> bool:
        if prompt + out > max_len:
            return True
        if blocks(prompt, first) > first.kv_blocks - first.watermark_blocks:
            return True
        if not first.enable_chunked_prefill and prompt > first.max_num_batched_tokens:
            return True
        return blocks(prompt + out + q_max, last) > last.kv_blocks

    return reject


def simulate(deployment: Deployment | dict, workload: Workload, *, num_requests: int, seed: int,
             calibration=None, slo: SLO | None = None, keep_requests: bool = False,
             policy: str | None = None, watermark: float = 0.01,
             warmup_fraction: float = 0.1, cooldown_fraction: float = 0.1,
             host_cache_gib: float = 0.0, self_spec_layer_fraction: float = 0.25,
             timeline_interval_s: float | None = None, cost_models: dict | None = None,
             kv_blocks: int | None = None, record_steps: bool = False) -> SimResult:
    """Simulate `num_requests` requests of `workload` on `deployment` (a Deployment, or its
    dict as a Plan's `deployment` holds it).

    slo: targets for attainment and goodput; None uses TTFT 1 s and TPOT 0.1 s (said in notes).
    policy: the scheduler, `decode_first` (vLLM V1), `prefill_first` or `prefill_only` (SGLang);
    None: the deployment's engine's (costmodel.engine_defaults). watermark: fraction of KV blocks a new
    request may not take. host_cache_gib: host-memory prefix-cache tier per replica (0 = off).
    cost_models: {role: CostModel} to use instead of building them (tests, the planner's
    reuse); kv_blocks: KV blocks per replica instead of the memory plan's.
    keep_requests: also return the per-request frame and the timeline (every 0.25 s unless
    timeline_interval_s says otherwise). record_steps: also return every iteration of every
    replica (sim.runs.fit re-times them; implies the per-request frame).
    """
    wall0 = time.perf_counter()
    if isinstance(deployment, dict):
        deployment = Deployment.from_dict(deployment)
    elif not isinstance(deployment, Deployment):
        raise ServePlanError(f"deployment {type(deployment).__name__}; expected a Deployment or "
                             "its dict (a Plan's `deployment`)")
    if policy is not None and policy not in POLICIES:
        raise ServePlanError(f"scheduler policy {policy!r}; expected one of {', '.join(POLICIES)}")
    if isinstance(host_cache_gib, bool) or not isinstance(host_cache_gib, (int, float)) \
            or not 0 <= host_cache_gib < math.inf:
        raise ServePlanError(f"host_cache_gib={host_cache_gib!r}; expected a finite number of GiB >= 0 (0 = off)")
    notes = []
    if slo is None:
        slo = DEFAULT_SLO
        notes.append(f"no SLO given: TTFT {slo.ttft_s} s / TPOT {slo.tpot_s} s used")
    ss_req, ss_sim = np.random.SeedSequence(seed).spawn(2)
    arrays = generate_requests(workload, num_requests, np.random.default_rng(ss_req))
    rng = np.random.default_rng(ss_sim)
    model = load_model(deployment.model)
    tl_dt = timeline_interval_s or (0.25 if keep_requests else None)

    env = simpy.Environment()
    keep_requests = keep_requests or record_steps
    cluster = Cluster(env, arrays, timeline_dt=tl_dt, record_steps=record_steps,
                      closed_loop=workload.concurrency if workload.closed_loop else None)
    cfgs, pools, q_max, groups = {}, {}, 1, []
    for pool in deployment.pools:
        cm = (cost_models or {}).get(pool.role) or cost_model_for(pool, model, calibration,
                                                                  deployment.engine)
        cfg = _replica_config(pool, cm, engine=deployment.engine, policy=policy,
                              watermark=watermark, kv_blocks=kv_blocks,
                              prefix_caching=arrays.hash_ids is not None,
                              hash_block_tokens=arrays.hash_block_tokens, host_cache_gib=host_cache_gib)
        cfgs[pool.role] = cfg
        if pool.dp > 1 and (pool.pp > 1 or (pool.spec.enabled and pool.role != "prefill")):
            raise ServePlanError(f"{pool.role} pool: attention data parallelism (dp={pool.dp}) is "
                                 "simulated with pp=1 and without speculative decoding")
        reps = []
        for _ in range(pool.replicas):
            spec = None
            if pool.spec.enabled and pool.role != "prefill":
                spec = SpecDecoder(pool.spec, cm, rng, self_spec_layer_fraction)
                q_max = max(q_max, spec.k_max + 1)
            # a DP replica is dp ranks, each scheduling its own requests (sim/dp_group.py)
            ranks = [Replica(sum(len(v) for v in pools.values()) + len(reps) + i, cfg, cm, cluster, spec)
                     for i in range(pool.dp)]
            if pool.dp > 1:
                groups.append(DPGroup(ranks, cm))
            reps.extend(ranks)
        pools[pool.role] = reps
        if pool.role == "prefill":
            cluster.kv_bytes_per_token = model.kv_elems_per_token() * cm.kv_elem_bytes
            bw = deployment.kv_link_bw_bytes_s or cm.gpu.network_bw_bytes_s * cm.num_gpus / cm.dp
            for r in reps:
                cluster.links[r.idx] = {"free_at": 0.0, "latency_s": deployment.kv_link_latency_s,
                                        "bw_bytes_s": bw}
    cluster.reject_fn = _rejecter(cfgs, model.max_position, q_max)
    cluster.router = Router(deployment.router, pools.get("prefill") or pools["colocated"])
    if "decode" in pools:
        cluster.decode_router = Router("least_tokens" if deployment.router == "prefix_affinity"
                                       else deployment.router, pools["decode"])
    replicas = [r for role in ("prefill", "colocated", "decode") for r in pools.get(role, [])]
    grouped = {id(r) for g in groups for r in g.ranks}
    for r in replicas:
        if id(r) not in grouped:
            env.process(r.run())
    for g in groups:
        env.process(g.run())
    if workload.closed_loop:
        cluster.start_closed_loop()
    else:
        env.process(cluster.arrivals())
    env.run()
    cluster.close()
    if cluster.done != cluster.n:
        raise RuntimeError(f"simulation stalled: {cluster.done} of {cluster.n} requests finished or "
                           "were rejected (a scheduler bug; please report it with the seed)")
    return _result(cluster, replicas, arrays, slo, notes, wall0, keep_requests, warmup_fraction,
                   cooldown_fraction)


def _result(cl: Cluster, replicas, arrays, slo, notes, wall0, keep, warm, cool) -> SimResult:
    duration = cl._last_t
    caches = [r.cache for r in replicas if r.cache is not None]
    lookup = sum(c.lookup_tokens for c in caches)
    xfer = cl.kv_ready_s - cl.first_token_s
    xfer = xfer[np.isfinite(xfer)]
    counters = {
        "preemptions": sum(r.preemptions for r in replicas),
        "kv_peak_fraction": max(r.peak_blocks / max(r.pool.total, 1) for r in replicas),
        "utilisation": [r.busy_s / duration if duration > 0 else 0.0 for r in replicas],
        "prefix_hit_rate": sum(c.hit_tokens for c in caches) / lookup if lookup else 0.0,
        "mean_tokens_per_step": cl.spec_tokens / cl.spec_seq_steps if cl.spec_seq_steps else 1.0,
        "sim_duration_s": duration,
        "iterations": sum(r.iterations for r in replicas),
        "kv_transfer_mean_s": float(xfer.mean()) if xfer.size else 0.0,
        "mean_in_system": cl.mean_in_system(),
        "output_tokens": cl.tokens_out,
    }
    out_len = arrays.output_len
    counters["sim_wall_s"] = time.perf_counter() - wall0
    m = summarise(cl.arrival_s, cl.first_token_s, cl.finish_s, cl.first_sched_s, out_len,
                  cl.rejected, slo=slo, counters=counters, warmup_fraction=warm,
                  cooldown_fraction=cool, notes=tuple(notes))
    frame = timeline = None
    if keep:
        frame = pd.DataFrame({
            "arrival_s": cl.arrival_s, "input_len": arrays.input_len, "output_len": out_len,
            "first_scheduled_s": cl.first_sched_s, "first_token_s": cl.first_token_s,
            "kv_ready_s": cl.kv_ready_s, "finish_s": cl.finish_s, "replica": cl.replica_idx,
            "preemptions": cl.preempt_count, "prefix_hit_tokens": cl.hit_tokens,
            "rejected": cl.rejected, "finish_replica": cl.finish_replica,
        })
        frame["ttft_s"] = frame.first_token_s - frame.arrival_s
        frame["e2e_s"] = frame.finish_s - frame.arrival_s
        multi = frame.output_len > 1
        frame["tpot_s"] = np.where(multi, (frame.finish_s - frame.first_token_s)
                                   / np.maximum(frame.output_len - 1, 1), math.nan)
        timeline = {
            "replicas": [
                {"replica": r.idx, "role": r.cfg.role,
                 "time_s": [s[0] for s in r.timeline or []],
                 "kv_fraction": [s[1] for s in r.timeline or []],
                 "waiting": [s[2] for s in r.timeline or []],
                 "running": [s[3] for s in r.timeline or []]}
                for r in replicas
            ],
            "busy_fraction": counters["utilisation"],
        }
    steps = {r.idx: r.step_log for r in replicas} if cl.record_steps else None
    return SimResult(m, frame, timeline, steps, arrays.input_len, out_len)
