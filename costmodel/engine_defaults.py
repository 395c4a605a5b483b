"""Scheduler knobs an engine uses when the user sets none: vLLM (the default) or SGLang.

vLLM follows 0.12 (V1 engine), `EngineArgs.get_batch_defaults` for the OpenAI API server:
GPUs with at least 70 GiB that are not A100s (H100, H200, B200, MI300X) get
`max_num_batched_tokens=8192`, `max_num_seqs=1024`; every other GPU gets 2048 and 256.
Chunked prefill and prefix caching are on, KV blocks hold 16 tokens,
`gpu_memory_utilization=0.9`, and CUDA graphs are captured for batches up to
min(2 x max_num_seqs, 512) tokens (`FULL_AND_PIECEWISE`: full graphs for decode, piecewise
around attention for mixed steps; larger steps run without graphs). Its scheduler is
`decode_first` (running decodes, then prompt chunks, share one token budget). Scheduling is
synchronous (`--async-scheduling` is off by default in 0.12): the host's work of each iteration
(`host_overhead_s`, `host_per_seq_s` in costmodel/efficiencies.py) adds to the GPU's.

SGLang follows 0.5.x `ServerArgs._handle_gpu_memory_settings`: the chunked-prefill size is
2048 tokens below 35 GB of GPU memory, 4096 below 60 GB, 8192 up to 160 GB (H100, H200) and
16384 above (B200, MI300X); decode CUDA graphs up to 256 sequences at TP < 4 (512 at TP >= 4,
160 on GPUs under 60 GB); `mem_fraction_static` = (memory - reserved) / memory, reserved =
512 MiB + 1.5 x chunk MiB + 2 x graph batch MiB + TP x PP / 8 GiB, at least 10 GiB on GPUs
over 60 GB. It serves new prompts in prefill batches ahead of the running decodes: a batch
admits whole prompts while its `--max-prefill-tokens` (16384) is not used up, the last one
overrunning it, and never takes more than one chunk in all (the chunk cuts the last prompt), and
never mixed with them (`--enable-mixed-chunk` is off): the scheduler policy `prefill_only`. The
overrun is SGLang's rule with chunked prefill since its PR #25741 (merged 2026-05-20); its 0.5.x
PrefillAdder stopped a batch at a prompt, other than the first, whose tokens reached what was
left of the budget. The simulator keeps the overrun because AIConfigurator's SGLang 0.5.x runs
replay worse with the 0.5.x rule (benchmarks/RESULTS.md, 2026-12-06 afternoon and night).
Its overlap scheduler prepares the next batch while the GPU runs this one, so host time hides
under GPU time (`host_overlap`), and decides it before this one's results are in: a request
that arrives while a batch runs joins the batch after the next (sim/scheduler.py).
`max_running_requests` has no fixed default in SGLang (the KV pool bounds it); 4096 stands for
"the KV cache decides". Its
PrefillAdder admits a prompt only when the KV pool also holds the output tokens it may still
produce (up to 4,096), beside an estimate of what the running requests will still write
(`reserve_outputs`, sim/scheduler.py `_reserve_ok`); vLLM admits on the prompt's blocks alone.
"""

from __future__ import annotations

from dataclasses import dataclass

from costmodel.errors import ServePlanError
from costmodel.hardware import GiB, HardwareSpec

VLLM_VERSION = "0.12"
SGLANG_VERSION = "0.5"
ENGINES = ("vllm", "sglang")


@dataclass(frozen=True)
class EngineDefaults:
    max_num_seqs: int
    max_num_batched_tokens: int
    enable_chunked_prefill: bool = True
    enable_prefix_caching: bool = True
    block_size: int = 16
    gpu_memory_utilization: float = 0.9
    max_cudagraph_batch: int = 512
    policy: str = "decode_first"  # sim.scheduler.POLICIES
    host_overlap: bool = False  # host work runs beside the GPU's (async / overlap scheduling)
    static_memory_fraction: bool = False  # gpu_memory_utilization holds weights + KV only (SGLang)
    # SGLang: --chunked-prefill-size, a hard cap on a prefill batch's prompt tokens, beside the
    # soft max_num_batched_tokens (--max-prefill-tokens, default 16384); None: vLLM's one budget
    chunk_size: int | None = None
    # SGLang: a prompt is admitted only with room for its outputs too (sim/scheduler.py)
    reserve_outputs: bool = False


def _sglang(gpu: HardwareSpec, tp: int, pp: int) -> EngineDefaults:
    mib = gpu.hbm_bytes / 2**20
    if mib < 35 * 1024:
        chunk, graph_bs = 2048, 24 if tp < 4 else 80
    elif mib < 60 * 1024:
        chunk, graph_bs = 4096, 32 if tp < 4 else 160
    elif mib < 160 * 1024:
        chunk, graph_bs = 8192, 256 if tp < 4 else 512
    else:
        chunk, graph_bs = 16384, 512
    reserved = 512 + max(chunk, 2048) * 1.5 + graph_bs * 2 + tp * pp / 8 * 1024
    if mib > 60 * 1024:
        reserved = max(reserved, 10 * 1024)
    frac = round((mib - reserved) / mib, 3)
    return EngineDefaults(max_num_seqs=4096, max_num_batched_tokens=16384, chunk_size=chunk,
                          gpu_memory_utilization=frac, max_cudagraph_batch=graph_bs,
                          policy="prefill_only", host_overlap=True, static_memory_fraction=True,
                          reserve_outputs=True)


def engine_defaults(gpu: HardwareSpec, engine: str = "vllm", tp: int = 1, pp: int = 1) -> EngineDefaults:
    """The knobs `engine` picks on `gpu` for a replica of `tp` x `pp` GPUs."""
    if engine == "sglang":
        return _sglang(gpu, tp, pp)
    if engine != "vllm":
        raise ServePlanError(f"engine {engine!r}; expected one of {', '.join(ENGINES)}")
    if gpu.hbm_bytes >= 70 * GiB and not gpu.name.startswith("a100"):
        return EngineDefaults(max_num_seqs=1024, max_num_batched_tokens=8192, max_cudagraph_batch=512)
    return EngineDefaults(max_num_seqs=256, max_num_batched_tokens=2048, max_cudagraph_batch=512)
