"""Engine command lines for a deployment: vLLM (`vllm serve`) and SGLang (`sglang.launch_server`).

One line per pool (every replica of a pool runs the same line on its own GPUs), preceded by a
`#` comment line that says how many replicas on which GPUs; for a disaggregated deployment, the
pools are started with their KV connector and a last line starts the router that connects them.
Flags follow vLLM 0.11 / SGLang 0.5 as documented:
- vLLM: `--tensor-parallel-size`, `--pipeline-parallel-size`, `--max-num-seqs`,
  `--max-num-batched-tokens`, `--enable-chunked-prefill`, `--gpu-memory-utilization`,
  `--kv-cache-dtype fp8`, `--quantization fp8`, `--speculative-config '{json}'` (methods
  `ngram`, a draft `model`, `mtp`), and for prefill/decode disaggregation
  `--kv-transfer-config '{"kv_connector":"NixlConnector","kv_role":"kv_both"}'` behind a proxy
  that sends each request to a prefill instance and then to a decode instance.
- SGLang: `--tp`, `--pp-size`, `--max-running-requests`, `--chunked-prefill-size`,
  `--max-prefill-tokens`, `--mem-fraction-static`, `--kv-cache-dtype fp8_e4m3`,
  `--quantization fp8`, `--speculative-algorithm NGRAM|STANDALONE|NEXTN` with
  `--speculative-num-steps` / `--speculative-eagle-topk` / `--speculative-num-draft-tokens`, and
  `--disaggregation-mode prefill|decode --disaggregation-transfer-backend nixl` joined by
  `python -m sglang_router.launch_router --pd-disaggregation`.
MoE replicas (`ep`, `dp` of the pool):
- vLLM: `--data-parallel-size dp` (attention ranks of `--tensor-parallel-size` GPUs each; the
  experts form a dp x tp group) and `--enable-expert-parallel` (experts split over that group
  rather than each sliced); a replica over more GPUs than a node runs one `vllm serve` per
  node: the head with `--data-parallel-size-local --data-parallel-address
  --data-parallel-rpc-port`, the others `--headless` with `--data-parallel-start-rank`.
- SGLang: `--tp` counts all tp x dp GPUs of the replica, `--dp dp --enable-dp-attention` splits
  attention into ranks, `--ep-size ep` (with `--moe-a2a-backend deepep` under DP attention);
  across nodes `--nnodes --node-rank --dist-init-addr`, one line per node.
- A pool's `max_num_seqs` and token budget are per attention rank (what each rank's scheduler
  gets, as the simulator runs it): vLLM's flags are per DP engine and are passed as they are;
  SGLang divides `--max-running-requests` and `--chunked-prefill-size` by `--dp`, so its line
  carries dp times the per-rank values.
"""

from __future__ import annotations

import json

from costmodel.hardware import load_gpu
from costmodel.specs import load_model
from sim.deployment import Deployment, PoolConfig

VLLM_KV_TRANSFER = '{"kv_connector":"NixlConnector","kv_role":"kv_both"}'
VLLM_PROXY = ("python tests/v1/kv_connector/nixl_integration/toy_proxy_server.py --port 8000 "
              "--prefiller-hosts PREFILL_HOSTS --prefiller-ports 8100 "
              "--decoder-hosts DECODE_HOSTS --decoder-ports 8200")
SGLANG_ROUTER = ("python -m sglang_router.launch_router --pd-disaggregation "
                 "--prefill http://PREFILL_HOST:30000 --decode http://DECODE_HOST:30001 "
                 "--host 0.0.0.0 --port 8000")


def model_id(model: str) -> str:
    """The name engines load: the preset's Hugging Face id, else the given path."""
    spec = load_model(model)
    return spec.hf_id or model


def _spec_k(pool: PoolConfig) -> int:
    s = pool.spec
    return s.num_speculative_tokens or 8  # adaptive: the largest k the policy may pick


def vllm_spec_config(pool: PoolConfig) -> dict | None:
    s = pool.spec
    if not s.enabled or pool.role == "prefill":
        return None
    k = _spec_k(pool)
    if s.method == "ngram":
        return {"method": "ngram", "num_speculative_tokens": k, "prompt_lookup_max": 4}
    if s.method == "draft":
        return {"model": model_id(s.draft_model), "num_speculative_tokens": k}
    return {"method": "mtp", "num_speculative_tokens": k}


def _nodes(pool: PoolConfig) -> tuple[int, int]:
    """(nodes one replica spans, GPUs per node) for the pool's GPU."""
    per_node = load_gpu(pool.gpu).gpus_per_node
    return -(-pool.replica_gpus // per_node), per_node


def _vllm_moe(p: PoolConfig) -> list[str]:
    parts = []
    if p.dp > 1:
        parts.append(f"--data-parallel-size {p.dp}")
        nodes, per_node = _nodes(p)
        if nodes > 1:
            parts.append(f"--data-parallel-size-local {max(1, per_node // (p.tp * p.pp))} "
                         f"--data-parallel-address HEAD_IP --data-parallel-rpc-port 13345")
    if p.ep > 1:
        parts.append("--enable-expert-parallel")
    return parts


def vllm_line(model: str, pool: PoolConfig, port: int = 8000) -> str:
    p = pool
    parts = [f"vllm serve {model_id(model)}",
             f"--tensor-parallel-size {p.tp}", f"--pipeline-parallel-size {p.pp}", *_vllm_moe(p),
             f"--max-num-seqs {p.max_num_seqs}", f"--max-num-batched-tokens {p.max_num_batched_tokens}"]
    if p.enable_chunked_prefill:
        parts.append("--enable-chunked-prefill")
    parts.append(f"--gpu-memory-utilization {p.gpu_memory_utilization:g}")
    if p.kv_dtype == "fp8":
        parts.append("--kv-cache-dtype fp8")
    if p.precision == "fp8":
        parts.append("--quantization fp8")
    if not p.enable_prefix_caching:
        parts.append("--no-enable-prefix-caching")
    cfg = vllm_spec_config(p)
    if cfg is not None:
        parts.append(f"--speculative-config '{json.dumps(cfg, separators=(',', ':'))}'")
    if p.role in ("prefill", "decode"):
        parts.append(f"--kv-transfer-config '{VLLM_KV_TRANSFER}'")
    parts.append(f"--port {port}")
    return " ".join(parts)


def sglang_line(model: str, pool: PoolConfig, port: int = 30000) -> str:
    p = pool
    parts = [f"python -m sglang.launch_server --model-path {model_id(model)}", f"--tp {p.tp * p.dp}"]
    if p.pp > 1:
        parts.append(f"--pp-size {p.pp}")
    if p.dp > 1:
        parts.append(f"--dp {p.dp} --enable-dp-attention")
    if p.ep > 1:
        parts.append(f"--ep-size {p.ep}" + (" --moe-a2a-backend deepep" if p.dp > 1 else ""))
    nodes, _ = _nodes(p)
    if nodes > 1 and (p.dp > 1 or p.ep > 1):  # MoE replicas over nodes (dense multi-node lines as before)
        parts.append(f"--nnodes {nodes} --node-rank 0 --dist-init-addr HEAD_IP:5000")
    # a pool's seat and chunk limits are per attention rank; SGLang takes both for the whole
    # DP group and divides them by --dp itself (each rank's scheduler gets
    # max-running-requests // dp and chunked-prefill-size // dp; max-prefill-tokens is not divided)
    parts += [f"--max-running-requests {p.max_num_seqs * p.dp}",
              f"--chunked-prefill-size {(p.chunk_size or p.max_num_batched_tokens) * p.dp}",
              f"--max-prefill-tokens {p.max_num_batched_tokens}",
              f"--mem-fraction-static {p.gpu_memory_utilization:g}"]
    if p.kv_dtype == "fp8":
        parts.append("--kv-cache-dtype fp8_e4m3")
    if p.precision == "fp8":
        parts.append("--quantization fp8")
    s = p.spec
    if s.enabled and p.role != "prefill":
        k = _spec_k(p)
        if s.method == "ngram":
            parts.append(f"--speculative-algorithm NGRAM --speculative-num-draft-tokens {k + 1}")
        else:
            algo = "STANDALONE" if s.method == "draft" else "NEXTN"
            parts.append(f"--speculative-algorithm {algo}")
            if s.method == "draft":
                parts.append(f"--speculative-draft-model-path {model_id(s.draft_model)}")
            parts.append(f"--speculative-num-steps {k} --speculative-eagle-topk 1 "
                         f"--speculative-num-draft-tokens {k + 1}")
    if p.role in ("prefill", "decode"):
        parts.append(f"--disaggregation-mode {p.role} --disaggregation-transfer-backend nixl")
    parts.append(f"--port {port}")
    return " ".join(parts)


def _comment(pool: PoolConfig) -> str:
    moe = f", ep={pool.ep}, dp={pool.dp}" if pool.ep > 1 or pool.dp > 1 else ""
    return (f"# {pool.role} pool: {pool.replicas} replica(s), each on {pool.replica_gpus} x "
            f"{pool.gpu} (tp={pool.tp}, pp={pool.pp}{moe}); run this line once per replica")


def _other_nodes(pool: PoolConfig, vllm: str, sgl: str) -> tuple[list[str], list[str]]:
    """The lines for the other nodes of a replica that spans several."""
    nodes, per_node = _nodes(pool)
    if nodes < 2 or (pool.dp == 1 and pool.ep == 1):
        return [], []
    v, s = [], []
    local = max(1, per_node // (pool.tp * pool.pp))
    for n in range(1, nodes):
        if pool.dp > 1:
            v.append(f"# node {n} of the replica (HEAD_IP: node 0's address):")
            v.append(vllm.replace(f"vllm serve {vllm.split()[2]}", f"vllm serve {vllm.split()[2]} --headless", 1)
                     .replace("--data-parallel-rpc-port 13345", f"--data-parallel-rpc-port 13345 "
                              f"--data-parallel-start-rank {n * local}", 1))
        s.append(f"# node {n} of the replica (HEAD_IP: node 0's address):")
        s.append(sgl.replace("--node-rank 0", f"--node-rank {n}", 1))
    return v, s


def launch_lines(dep: Deployment) -> dict[str, list[str]]:
    """{"vllm": [...], "sglang": [...], "notes": [...]} for a resolved deployment."""
    vllm: list[str] = []
    sgl: list[str] = []
    notes: list[str] = []
    ports_v = {"colocated": 8000, "prefill": 8100, "decode": 8200}
    ports_s = {"colocated": 30000, "prefill": 30000, "decode": 30001}
    for pool in dep.pools:
        v_line, s_line = vllm_line(dep.model, pool, ports_v[pool.role]), sglang_line(dep.model, pool, ports_s[pool.role])
        v_more, s_more = _other_nodes(pool, v_line, s_line)
        vllm += [_comment(pool), v_line, *v_more]
        sgl += [_comment(pool), s_line, *s_more]
        s = pool.spec
        if s.enabled and pool.role != "prefill":
            if s.adaptive or not s.num_speculative_tokens:
                notes.append("adaptive draft length: the lines set the largest k (8); enable the "
                             "engine's dynamic speculation to let it pick k per batch")
            if s.method == "self":
                notes.append("self-speculation maps to the engine's MTP drafting (vLLM method 'mtp', "
                             "SGLang NEXTN): the checkpoint needs multi-token-prediction layers")
    if dep.mode == "disaggregated":
        vllm += ["# connect: one proxy in front sends each request to a prefill instance, then to "
                 "a decode instance (KV over NIXL)", VLLM_PROXY]
        sgl += ["# connect: the SGLang router pairs prefill and decode servers (KV over NIXL)",
                SGLANG_ROUTER]
    elif dep.pools[0].replicas > 1:
        vllm.append("# put a load balancer (least outstanding requests) in front of the replicas")
        sgl.append("# or start one SGLang router over the replicas: python -m sglang_router.launch_router "
                   "--worker-urls http://HOST1:30000 http://HOST2:30000 ...")
    return {"vllm": vllm, "sglang": sgl, "notes": sorted(set(notes))}
