"""Engine command lines for known deployments, compared as exact strings."""

from __future__ import annotations

from planner.launch import launch_lines
from sim.deployment import Deployment, PoolConfig, SpecConfig


def test_colocated_fp8_kv_with_ngram_speculation():
    pool = PoolConfig("colocated", "h100", tp=4, replicas=2, kv_dtype="fp8",
                      spec=SpecConfig("ngram", None, 3, 0.3))
    lines = launch_lines(Deployment("llama-3.1-70b", (pool,)).resolved())
    assert lines["vllm"][1] == (
        "vllm serve meta-llama/Llama-3.1-70B-Instruct --tensor-parallel-size 4 "
        "--pipeline-parallel-size 1 --max-num-seqs 1024 --max-num-batched-tokens 8192 "
        "--enable-chunked-prefill --gpu-memory-utilization 0.9 --kv-cache-dtype fp8 "
        "--speculative-config '{\"method\":\"ngram\",\"num_speculative_tokens\":3,\"prompt_lookup_max\":4}' "
        "--port 8000")
    assert lines["sglang"][1] == (
        "python -m sglang.launch_server --model-path meta-llama/Llama-3.1-70B-Instruct --tp 4 "
        "--max-running-requests 1024 --chunked-prefill-size 8192 --max-prefill-tokens 8192 "
        "--mem-fraction-static 0.9 --kv-cache-dtype fp8_e4m3 --speculative-algorithm NGRAM "
        "--speculative-num-draft-tokens 4 --port 30000")
    assert lines["vllm"][0].startswith("# colocated pool: 2 replica(s), each on 4 x h100-sxm")


def test_disaggregated_pools_and_their_connection():
    pools = (PoolConfig("prefill", "h100", tp=2, replicas=2, max_num_batched_tokens=16384),
             PoolConfig("decode", "a100", tp=4, max_num_seqs=128, precision="fp8",
                        spec=SpecConfig("draft", "llama-3.2-1b", 4, 0.7)))
    lines = launch_lines(Deployment("llama-3.1-70b", pools, mode="disaggregated").resolved())
    v, s = lines["vllm"], lines["sglang"]
    kv = "--kv-transfer-config '{\"kv_connector\":\"NixlConnector\",\"kv_role\":\"kv_both\"}'"
    assert v[1] == ("vllm serve meta-llama/Llama-3.1-70B-Instruct --tensor-parallel-size 2 "
                    "--pipeline-parallel-size 1 --max-num-seqs 1024 --max-num-batched-tokens 16384 "
                    f"--enable-chunked-prefill --gpu-memory-utilization 0.9 {kv} --port 8100")
    assert v[3] == ("vllm serve meta-llama/Llama-3.1-70B-Instruct --tensor-parallel-size 4 "
                    "--pipeline-parallel-size 1 --max-num-seqs 128 --max-num-batched-tokens 2048 "
                    "--enable-chunked-prefill --gpu-memory-utilization 0.9 --quantization fp8 "
                    "--speculative-config '{\"model\":\"meta-llama/Llama-3.2-1B-Instruct\","
                    f"\"num_speculative_tokens\":4}}' {kv} --port 8200")
    assert "toy_proxy_server.py" in v[-1] and v[-2].startswith("# connect")
    assert s[1].endswith("--disaggregation-mode prefill --disaggregation-transfer-backend nixl --port 30000")
    assert ("--speculative-algorithm STANDALONE --speculative-draft-model-path "
            "meta-llama/Llama-3.2-1B-Instruct --speculative-num-steps 4 --speculative-eagle-topk 1 "
            "--speculative-num-draft-tokens 5") in s[3]
    assert s[-1].startswith("python -m sglang_router.launch_router --pd-disaggregation")


def test_pipeline_parallel_and_adaptive_self_speculation_notes():
    pool = PoolConfig("colocated", "h100", tp=8, pp=2, spec=SpecConfig("self", None, 0, 0.6, True))
    lines = launch_lines(Deployment("llama-3.1-405b", (pool,)).resolved())
    assert "--tensor-parallel-size 8 --pipeline-parallel-size 2" in lines["vllm"][1]
    assert "--tp 8 --pp-size 2" in lines["sglang"][1]
    assert '"method":"mtp","num_speculative_tokens":8' in lines["vllm"][1]
    assert any("adaptive" in n for n in lines["notes"])
    assert any("multi-token-prediction" in n for n in lines["notes"])
