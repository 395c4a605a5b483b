"""Scheduler knobs a current vLLM release uses when the user sets none.

Follows vLLM 0.12 (V1 engine), `EngineArgs.get_batch_defaults` for the OpenAI API server:
GPUs with at least 70 GiB that are not A100s (H100, H200, B200, MI300X) get
`max_num_batched_tokens=8192`, `max_num_seqs=1024`; every other GPU gets 2048 and 256.
Chunked prefill and prefix caching are on, KV blocks hold 16 tokens,
`gpu_memory_utilization=0.9`, and CUDA graphs are captured for batches up to
min(2 x max_num_seqs, 512) tokens (`FULL_AND_PIECEWISE`: full graphs for decode, piecewise
around attention for mixed steps; larger steps run without graphs). Scheduling is synchronous
(`--async-scheduling` is off by default in 0.12): the host's work of each iteration
(`host_overhead_s`, `host_per_seq_s` in costmodel/roofline.py) adds to the GPU's.
"""

from __future__ import annotations

from dataclasses import dataclass

from costmodel.hardware import GiB, HardwareSpec

VLLM_VERSION = "0.12"


@dataclass(frozen=True)
class EngineDefaults:
    max_num_seqs: int
    max_num_batched_tokens: int
    enable_chunked_prefill: bool = True
    enable_prefix_caching: bool = True
    block_size: int = 16
    gpu_memory_utilization: float = 0.9
    max_cudagraph_batch: int = 512


def engine_defaults(gpu: HardwareSpec) -> EngineDefaults:
    if gpu.hbm_bytes >= 70 * GiB and not gpu.name.startswith("a100"):
        return EngineDefaults(max_num_seqs=1024, max_num_batched_tokens=8192, max_cudagraph_batch=512)
    return EngineDefaults(max_num_seqs=256, max_num_batched_tokens=2048, max_cudagraph_batch=512)
