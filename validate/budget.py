"""Fit a plan's shapes to the device that measures them: fewer layers, smaller batches.

Per-layer shapes are what make measurements transferable, so they are never changed; what
gives way is (1) the number of layers run (every layer has the same shapes: the iteration time
is counted as embedding/LM head + L x one measured layer), then (2) the batch of a shape too
large for the device's memory, or (on a CPU) too slow to time: decode batches halve first,
then the number of prompts, then the chunk (and its prefix). Each change comes with a message
saying what changed and why; a shape is never dropped and nothing raises unless one layer's
weights alone cannot fit.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from costmodel.errors import ServePlanError
from costmodel.hardware import HardwareSpec
from validate.shapes import EMBED_ROWS, GpuDims, IterationShape

GiB = 1024**3
ELEM_BYTES = 2  # bf16
MIN_CHUNK = 16


@dataclass(frozen=True)
class DeviceBudget:
    memory_bytes: float  # what one run may allocate
    layer_time_s: float | None  # CPU: the most one layer of one shape may take (estimated)
    max_layers: int  # layers worth running: one per rotation buffer, more adds nothing


def device_budget(device: str, layer_time_s: float = 0.25) -> DeviceBudget:
    """CUDA: 85% of free memory, up to 4 layers, no time limit. CPU: half the available RAM
    (at most 8 GiB), 2 layers, `layer_time_s` per layer of a shape."""
    if device == "cuda":
        import torch

        free, _ = torch.cuda.mem_get_info()
        return DeviceBudget(0.85 * free, None, 4)
    return DeviceBudget(min(0.5 * _available_ram(), 8 * GiB), layer_time_s, 2)


def _available_ram() -> float:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return float(line.split()[1]) * 1024
    except OSError:
        pass
    return 8.0 * GiB


# --- sizes and time estimates -----------------------------------------------------------------
def layer_weight_bytes(d: GpuDims) -> float:
    return d.layer_weight_elems() * ELEM_BYTES


def head_bytes(d: GpuDims, shape: IterationShape | None = None) -> float:
    n = shape.num_logits if shape is not None else 0
    return (d.hidden * d.vocab + EMBED_ROWS * d.hidden + n * d.vocab * 2) * ELEM_BYTES


def kv_bytes_per_layer(d: GpuDims, s: IterationShape) -> float:
    """The layer's K and V: packed prompt prefixes + chunks, and the decode cache (16-token
    pages), counted twice for the layout conversion while a cache is built."""
    per_tok = 2 * d.kv_heads * d.head_dim * ELEM_BYTES
    prefill = sum(c + p for c, p in s.prefill)
    ctx = s.decode_context + s.query_tokens
    decode = s.decode_batch * -(-ctx // 16) * 16
    return per_tok * (prefill + 2 * decode)


def activation_bytes(d: GpuDims, s: IterationShape) -> float:
    """Live activations of one layer (x, h, qkv, q/k after RoPE, attention out, up, act), with
    a second copy for rotating inputs."""
    T = s.num_tokens
    return 2 * T * (3 * d.hidden + 2 * d.qkv_out + d.q_dim + d.up_out + d.inter) * ELEM_BYTES


def estimate_layer_s(d: GpuDims, s: IterationShape, hw: HardwareSpec) -> float:
    """A rough roofline of one layer (half of peak FLOP/s and bandwidth): only for budgeting."""
    T = s.num_tokens
    pairs = sum(c * (p + (c + 1) / 2) for c, p in s.prefill)
    pairs += s.decode_batch * s.query_tokens * (s.attended_context + s.query_tokens)
    flops = 2 * T * d.layer_weight_elems() + 4 * d.q_heads * d.head_dim * pairs
    kv_read = (sum(c + p for c, p in s.prefill) + s.decode_batch * s.attended_context)
    nbytes = layer_weight_bytes(d) + kv_read * 2 * d.kv_heads * d.head_dim * ELEM_BYTES
    return flops / (0.5 * hw.bf16_flops) + nbytes / (0.5 * hw.hbm_bw_bytes_s)


# --- scaling ----------------------------------------------------------------------------------
def describe(s: IterationShape) -> str:
    """A name for what a shape runs: `decode 32x1152`, `prefill 4x1024`, `... + 512+2048`."""
    parts = []
    if s.prefill:
        c, p = s.prefill[0]
        n = len(s.prefill)
        parts.append(f"{n}x{c}" + (f"+{p}" if p else ""))
    if s.decode_batch:
        parts.append(f"{s.decode_batch}x{s.decode_context}"
                     + (f" k={s.query_tokens - 1}" if s.query_tokens > 1 else ""))
    return f"{s.role}/{s.kind} " + " + ".join(parts)


def _shrink(s: IterationShape) -> IterationShape | None:
    """One step smaller, or None at the smallest shape of its kind. A mixed iteration halves
    its decode batch and its chunk together, so it stays mixed."""
    smaller = s
    if s.decode_batch > 1:
        smaller = replace(smaller, decode_batch=s.decode_batch // 2)
        if s.kind != "mixed":
            return smaller
    if len(s.prefill) > 1:
        return replace(smaller, prefill=s.prefill[: len(s.prefill) // 2])
    if s.prefill and s.prefill[0][0] > MIN_CHUNK:
        c, p = s.prefill[0]
        return replace(smaller, prefill=((max(MIN_CHUNK, c // 2), p // 2),))
    return None if smaller is s else smaller


def scale_shape(d: GpuDims, s: IterationShape, hw: HardwareSpec, budget: DeviceBudget,
                layers: int, fixed_bytes: float) -> IterationShape:
    """Shrink `s` until its layers' KV and activations fit next to the weights (`fixed_bytes`)
    and (on a CPU) one layer is estimated under the time budget. Sets `note` when it changed."""
    def too_big(x: IterationShape) -> str | None:
        need = fixed_bytes + layers * kv_bytes_per_layer(d, x) + activation_bytes(d, x) \
            + head_bytes(d, x) - head_bytes(d)
        if need > budget.memory_bytes:
            return f"{need / GiB:.1f} GiB > {budget.memory_bytes / GiB:.1f} GiB memory budget"
        if budget.layer_time_s is not None and estimate_layer_s(d, x, hw) > budget.layer_time_s:
            return f"~{estimate_layer_s(d, x, hw):.2f} s per layer > {budget.layer_time_s} s time budget"
        return None

    first = reason = too_big(s)
    cur = s
    while reason is not None:
        nxt = _shrink(cur)
        if nxt is None:
            break
        cur, reason = nxt, too_big(nxt)
    if cur is s:
        return s
    still = f"; still over: {reason}" if reason else ""
    return replace(cur, name=describe(cur),
                   note=f"scaled down from {s.name} ({first}){still}")


def fit_layers(d: GpuDims, full_layers: int, budget: DeviceBudget) -> int:
    """Layers to run: at most `full_layers` and `budget.max_layers`, their weights and the LM
    head within half the memory budget; the other half is the shapes' (KV, activations).
    Batch sizes matter more than the layer count, which only averages identical layers."""
    w, head = layer_weight_bytes(d), head_bytes(d)
    if w + head > budget.memory_bytes:
        raise ServePlanError(
            f"one layer ({w / GiB:.2f} GiB) and the LM head ({head / GiB:.2f} GiB) per GPU already "
            f"exceed this device's budget of {budget.memory_bytes / GiB:.2f} GiB; run validate on a "
            "device with more memory, or a plan with a higher tp")
    n = int((0.5 * budget.memory_bytes - head) // w)
    return max(1, min(full_layers, budget.max_layers, n))


def fit_to_device(d: GpuDims, shapes: list[IterationShape], full_layers: int,
                  hw: HardwareSpec, budget: DeviceBudget) -> tuple[int, list[IterationShape], list[str]]:
    """(layers to run, the shapes as they will run, messages saying what was scaled and why)."""
    layers = fit_layers(d, full_layers, budget)
    fixed = layers * layer_weight_bytes(d) + head_bytes(d)
    out, msgs, seen = [], [], {}
    for s in (scale_shape(d, s, hw, budget, layers, fixed) for s in shapes):
        key = (s.role, s.kind, s.prefill, s.decode_batch, s.decode_context, s.query_tokens)
        if key in seen:  # two plan shapes scaled to one: measure it once
            msgs.append(f"{s.note}: the same as {seen[key]}, measured once")
            continue
        seen[key] = s.name
        out.append(s)
        if s.note:
            msgs.append(f"{s.note}: runs {s.name}")
    if layers < full_layers:
        msgs.insert(0, f"{shapes[0].model} (tp={shapes[0].tp}) has {full_layers} layers; running "
                    f"{layers} with the real per-layer shapes ({d.q_heads} query / {d.kv_heads} KV "
                    f"heads, FFN {d.inter} per GPU); an iteration counts as embedding + LM head + "
                    f"{full_layers} x one measured layer")
    return layers, out, msgs
