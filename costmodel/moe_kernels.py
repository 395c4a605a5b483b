"""Mixture-of-experts kernel times on one GPU: the fused-MoE grouped GEMM, the router, shared
experts, and expert-parallel dispatch / combine.

Public functions (keyword shape arguments; scalars give a float, arrays an array):

    moe_routing_stats(*, num_tokens, num_experts, topk, ep=1, routing="balanced")
        -> RoutingStats(rows, active, padded, blocks): what the busiest EP rank computes
    fused_moe_time_s(*, num_tokens, hidden, inter, topk, num_experts, gpu, eff, precision="bf16",
                     tp=1, ep=1, routing="balanced", kernel="", gated=True) -> seconds
    router_time_s(*, num_tokens, hidden, num_experts, gpu, eff) -> seconds
    shared_experts_time_s(*, num_tokens, hidden, inter, gpu, eff, num_shared=1, tp=1,
                          precision="bf16", graph=True) -> seconds
    ep_alltoall_time_s(*, num_tokens, hidden, topk, ep, gpu, eff, precision="bf16") -> seconds
        (one dispatch plus one combine)
    moe_kernel_family(precision, kernel="") -> one of FAMILIES

The fused-MoE layer (vLLM's `fused_experts` and its kernel variants) on one GPU of a layer split
`tp` ways along each expert's FFN width and `ep` ways across experts: the GPU holds
`num_experts / ep` experts of width `inter / tp`. `num_tokens` tokens each pick `topk` experts;
the GPU computes the rows routed to its own experts, as the busiest EP rank does (the one every
rank waits for):

- routing (`moe_routing_stats`): `balanced` is the deterministic spread AIConfigurator's
  collector uses (token i picks experts i + j * ceil(E / k)); `power_law_<alpha>` is its skewed
  routing (per-expert loads drawn from a power law, capped at one per token, the heaviest EP
  group on the measured rank), averaged over `_DRAWS` seeded draws: the expected rows, active
  experts and M-tile padding of the busiest rank.
- compute: both GEMMs (gate/up: hidden -> 2 x inter; down: inter -> hidden) over each active
  expert's rows padded to the kernel's M tile (`_block_m`: 16 to 128 rows by the mean rows per
  active expert), the down projection's K lengthened by `moe_<family>_k0` (a short K loop pays
  its prologue and epilogue: narrow experts under MoE TP are slower per FLOP), at
  `moe_<family>_compute_eff` of the tensor-core peak of the compute dtype
  (FP8 for fp8 / fp8_block on FP8 tensor cores; BF16 for the weight-only int4 / MXFP4 kernels,
  which dequantise in the loop).
- memory: every active expert's weights once (bytes per element by dtype, block scales
  included) plus the routed rows' activations, at `moe_<family>_mem_eff` of HBM bandwidth,
  `moe_<family>_expert_s` per active expert on the GPU (a grouped GEMM's per-problem setup), and
  `moe_<family>_block_s` per M tile of every expert's rows on all ranks (the align step pads
  each expert's rows to whole tiles and the grid walks them all, returning early on other
  ranks' experts: mid-sized batches under wide EP pay it); compute and memory blend as a
  p-norm (`moe_<family>_blend`).
- rows: work over every one of the `num_tokens x topk` routed rows, local or not (the
  align/permute, the activation, the top-k sum, and in the Triton kernel the blocks of rows
  routed to other ranks' experts, which write zeros): (`moe_<family>_row_h` x hidden +
  `moe_<family>_row_i` x inter / tp) x 2 bytes per row at HBM bandwidth. This is why EP 128 of
  Qwen3-235B at 16k tokens costs 1.7 ms when its one local expert computes 0.05 ms of work.
- fixed: `moe_<family>_overhead_s` per layer (the kernels' launches and prologues), and
  `moe_<family>_ep_s` more under expert parallelism (the expert map's remapping); clock-scaled.

Kernel families (`moe_kernel_family`, from the dtype and the kernel name vLLM reports): `triton`
(vLLM's Triton fused MoE, bf16), `triton_fp8` (the same with fp8 / block-fp8 weights and
per-token-group activation quantisation), `cutlass` (FlashInfer's CUTLASS grouped GEMM, block
fp8), `cutlass_fp8` (the same kernel family with per-tensor fp8, ModelOpt checkpoints: on
Hopper it computes whole 128-row tiles per expert at a small fraction of the FP8 peak),
`marlin` (Marlin W4A16, int4 weights), `marlin_mxfp4` (Marlin over MXFP4 weights, as vLLM's
compressed-tensors path runs them, with its own expert-parallel shim), `oai` (the OpenAI Triton MXFP4
kernel gpt-oss runs). Parameters in costmodel/efficiencies.py (`MOE_FAMILIES`), fitted on
AIConfigurator's H100 tables (costmodel/arch_defaults.py).

Router: a bf16 GEMM (tokens x hidden -> experts) and a top-k softmax kernel. Shared experts: a
dense gated MLP per token (costmodel/roofline.py GEMMs; block-fp8 in costmodel/block_fp8.py).
Dispatch / combine: each token's hidden state goes to every other EP rank that holds one of its
experts (expected distinct ranks among `topk` picks), over NVLink inside a node and over the
NIC across nodes (`HardwareSpec` link bandwidths, `comm_*` / `net_*` efficiencies).
"""

from __future__ import annotations

import hashlib
from functools import lru_cache
from typing import NamedTuple

import numpy as np

from costmodel import roofline as rl
from costmodel.efficiencies import Efficiencies, _blend, _blend_pv, clock_scale
from costmodel.errors import ServePlanError
from costmodel.hardware import HardwareSpec

PRECISIONS = ("bf16", "fp8", "fp8_block", "int4", "mxfp4")
# weight bytes per element, scales included: fp8 block 128 x 128 fp32 scales, int4 a bf16
# scale per 128, MXFP4 an 8-bit scale per 32
W_BYTES = {"bf16": 2.0, "fp8": 1.0, "fp8_block": 1.0 + 4.0 / (128 * 128), "int4": 0.5 + 2.0 / 128,
           "mxfp4": 0.5 + 1.0 / 32}
FAMILIES = ("triton", "triton_fp8", "cutlass", "cutlass_fp8", "marlin", "marlin_mxfp4", "oai")
_DEFAULT_FAMILY = {"bf16": "triton", "fp8": "cutlass_fp8", "fp8_block": "triton_fp8", "int4": "marlin",
                   "mxfp4": "oai"}
_FP8_FAMILIES = ("triton_fp8", "cutlass", "cutlass_fp8")  # W8A8 on FP8 tensor cores
_DRAWS = 16  # seeded draws averaged for power-law routing
_BLOCK_M = (16, 32, 64, 128)
_ROUTING_KEEP = 8  # inputs whose per-row routing arrays are kept (_routing_arrays)
_ROUTING_ARRAYS: dict[tuple, tuple[np.ndarray, ...]] = {}


def moe_kernel_family(precision: str, kernel: str = "") -> str:
    """The kernel family that runs a fused-MoE layer of `precision` weights; `kernel` is the
    name vLLM (or AIConfigurator's `kernel_source`) reports, "" for vLLM's default on Hopper."""
    if precision not in W_BYTES:
        raise ServePlanError(f"MoE precision {precision!r}; expected one of {', '.join(PRECISIONS)}")
    k = kernel.lower()
    if "marlin" in k:
        return "marlin_mxfp4" if precision == "mxfp4" else "marlin"
    if "oaitriton" in k or "mxfp4experts" in k:
        return "oai"
    if "cutlass" in k or "flashinfer" in k:
        return "cutlass_fp8" if precision == "fp8" else "cutlass"
    if "triton" in k:
        return "triton" if precision == "bf16" else "triton_fp8"
    return _DEFAULT_FAMILY[precision]


class RoutingStats(NamedTuple):
    rows: float  # routed rows the busiest EP rank computes
    active: float  # its experts with at least one row
    padded: tuple[float, ...]  # its rows padded to each M tile of _BLOCK_M
    blocks: tuple[float, ...]  # M tiles of every expert's rows, all ranks (each M tile of _BLOCK_M)


def _alpha(routing: str) -> float:
    if routing == "balanced":
        return 0.0
    if routing.startswith("power_law_"):
        try:
            a = float(routing[len("power_law_"):])
        except ValueError:
            a = -1.0
        if a > 0 and a != 1.0:
            return a
    raise ServePlanError(f"MoE routing {str(routing)!r}; expected 'balanced' or 'power_law_<alpha>' "
                         "(alpha > 0, not 1, e.g. power_law_1.2)")


def _stats(local: np.ndarray, everyone: np.ndarray) -> np.ndarray:
    """Per draw (a row of `local` / `everyone`): rows and active experts of the measured rank,
    its rows padded to each M tile of _BLOCK_M, then M tiles of every expert's rows (all
    ranks). Experts without rows add nothing to any of them."""
    c, g = local.astype(float), everyone.astype(float)
    return np.column_stack([c.sum(axis=1), (c > 0).sum(axis=1).astype(float)]
                           + [(np.ceil(c / b) * b).sum(axis=1) for b in _BLOCK_M]
                           + [np.ceil(g / b).sum(axis=1) for b in _BLOCK_M])


def _balanced_counts(t: int, e: int, k: int) -> np.ndarray:
    """Tokens per expert of AIConfigurator's balanced pattern (expert i + j * ceil(E / k) for
    token i; spread evenly over the first stride of experts when there are fewer tokens).

    In closed form: token i picks base_i + d (mod E) for each distinct offset d = j * stride
    mod E (a token counts once per expert: the collector one-hot-sums its picks, so offsets
    that coincide mod E count once). With t >= stride the bases are 0..t-1, which put
    t // E + (x < t % E) tokens on residue x; each offset shifts that by d."""
    stride = -(-e // k)
    offsets = sorted({(j * stride) % e for j in range(k)})
    if t >= stride:
        q, r = divmod(t, e)
        base = np.full(e, q, dtype=np.int64)
        base[:r] += 1
    else:
        base = np.bincount((np.arange(t) * stride) // t, minlength=e).astype(np.int64)
    return sum(np.roll(base, d) for d in offsets)


def _fill_rows(vals: np.ndarray, units: np.ndarray, cap: int) -> np.ndarray:
    """The collector's per-rank adjustment on every row of `vals` at once, in closed form: row i
    takes `units[i]` one at a time, each to its smallest value below `cap` (water-filling), or
    gives -`units[i]` one at a time from its largest."""
    v = vals.astype(np.int64)
    units = np.asarray(units, dtype=np.int64)
    out = v.copy()
    if v.size == 0:
        return out
    if (up := units > 0).any():
        out[up] = _fill_up(v[up], units[up], cap)
    if (down := units < 0).any():  # drain from the top: the negative of filling -v up from below
        out[down] = -_fill_up(-v[down], -units[down], 0)
    return out


def _fill_up(v: np.ndarray, units: np.ndarray, cap: int) -> np.ndarray:
    """Fill each row of `v` by its `units` (> 0) below `cap`. The level L a row fills to is the
    highest with sum(min(max(L - v, 0), room)) <= units: over the row sorted (s, prefix sums P),
    raising the first i values to s_i costs i s_i - P_(i-1); with m of those costs within
    units, L = (units + P_(m-1)) // m, at most cap. The rest goes one each to the lowest values
    still below the cap, first index first."""
    units = np.minimum(units, np.maximum(cap - v, 0).sum(axis=1))
    srt = np.sort(np.minimum(v, cap), axis=1)
    prefix = np.cumsum(srt, axis=1)
    cost = np.arange(v.shape[1]) * srt - (prefix - srt)
    m = (cost <= units[:, None]).sum(axis=1)  # >= 1: the first cost is 0
    level = np.minimum((units + prefix[np.arange(len(v)), m - 1]) // m, cap)
    out = np.maximum(v, level[:, None])
    left = units - (out - v).sum(axis=1)
    if left.any():
        key = np.where(out < cap, out, np.iinfo(np.int64).max)
        order = np.argsort(key, axis=1, kind="stable")
        take = np.arange(v.shape[1])[None, :] < left[:, None]
        rows = np.broadcast_to(np.arange(len(v))[:, None], order.shape)
        out[rows[take], order[take]] += 1
    return out


def _round_robin(n: np.ndarray, units: np.ndarray, ep: int, cap: int) -> np.ndarray:
    """Spread each draw's `units` (a row of `n` each; negative: remove) over the `ep` ranks in
    turn, each rank adding to its least loaded expert (removing from its most loaded), as the
    collector adjusts its draws."""
    q, r = np.divmod(np.abs(units), ep)
    per_rank = np.sign(units)[:, None] * (q[:, None] + (np.arange(ep)[None, :] < r[:, None]))
    return _fill_rows(n.reshape(len(n) * ep, -1), per_rank.ravel(), cap).reshape(n.shape)


def _power_law_counts(t: int, e: int, k: int, ep: int, alpha: float, rng: np.random.Generator,
                      draws: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """`draws` draws (a row each) of the collector's power-law loads on its busiest rank:
    per-expert loads from a power law (between 1 and 0.8 x tokens; 0.01 and 2 when there are
    fewer routed rows than experts), scaled to tokens x top-k, capped at one per token, the
    excess and the rounding spread over the ranks in turn; the heaviest rank is the one
    measured. Returns (its experts' loads, every expert's loads)."""
    lo, hi = (1.0, t * 0.8) if t * k > e else (0.01, 2.0)
    u = rng.random((draws, e))
    x = ((hi ** (1 - alpha) - lo ** (1 - alpha)) * u + lo ** (1 - alpha)) ** (1 / (1 - alpha))
    n = np.round(x / x.sum(axis=1, keepdims=True) * t * k).astype(np.int64)
    over = np.maximum(n - t, 0).sum(axis=1)
    n = _round_robin(np.minimum(n, t), over, ep, t)  # an expert takes a token at most once
    n = _round_robin(n, t * k - n.sum(axis=1), ep, t)
    groups = n.reshape(draws, ep, e // ep)
    return groups[np.arange(draws), groups.sum(axis=2).argmax(axis=1)], n


@lru_cache(maxsize=65536)
def _routing_stats(t: int, e: int, k: int, ep: int, routing: str) -> RoutingStats:
    nb = len(_BLOCK_M)
    if t <= 0:
        return RoutingStats(0.0, 0.0, (0.0,) * nb, (0.0,) * nb)
    alpha = _alpha(routing)
    local = e // ep
    if alpha == 0.0:
        n = _balanced_counts(t, e, k)[None, :]
        acc = _stats(n[:, :local], n)[0]
    else:
        # a fixed seed per shape: the same prediction every call (str hashes vary between runs)
        rng = np.random.default_rng([t, e, k, ep, int(alpha * 1000)])
        acc = _stats(*_power_law_counts(t, e, k, ep, alpha, rng, _DRAWS)).sum(axis=0) / _DRAWS
    return RoutingStats(float(acc[0]), float(acc[1]), tuple(float(x) for x in acc[2:2 + nb]),
                        tuple(float(x) for x in acc[2 + nb:]))


def _check(num_experts, topk, ep, tp, inter) -> None:
    """One clear error naming the first bad value (shapes may be arrays)."""
    e, k, ep_, tp_, i = np.broadcast_arrays(*(np.atleast_1d(np.asarray(x)) for x in
                                              (num_experts, topk, ep, tp, inter)))
    for j in np.flatnonzero((k > e) | (k < 1)):
        raise ServePlanError(f"MoE top-k {k[j]} with {e[j]} experts; expected 1 <= top-k <= experts")
    for j in np.flatnonzero((ep_ < 1) | (e % np.maximum(ep_, 1) != 0)):
        raise ServePlanError(f"expert-parallel size {ep_[j]} does not divide {e[j]} experts; "
                             "expected a divisor of the expert count")
    for j in np.flatnonzero((tp_ < 1) | (i % np.maximum(tp_, 1) != 0)):
        raise ServePlanError(f"MoE tensor-parallel size {tp_[j]} does not divide the expert FFN "
                             f"width {i[j]}; expected a divisor")


def moe_routing_stats(*, num_tokens: int, num_experts: int, topk: int, ep: int = 1,
                      routing: str = "balanced") -> RoutingStats:
    """Rows, active experts and padded rows of the busiest of `ep` expert-parallel ranks."""
    _check(num_experts, topk, ep, 1, 1)
    return _routing_stats(int(num_tokens), int(num_experts), int(topk), int(ep), str(routing))


def _block_m(mean_rows):
    """The M tile the kernel picks for a mean of `mean_rows` rows per active expert."""
    return np.select([mean_rows <= 16, mean_rows <= 32, mean_rows <= 64], [0, 1, 2], 3)


def _fam_params(eff: Efficiencies, fam: np.ndarray, name: str) -> np.ndarray:
    vals = {f: getattr(eff, f"moe_{f}_{name}") for f in FAMILIES}
    return np.select([fam == f for f in FAMILIES], [vals[f] for f in FAMILIES], np.nan)


_PARAMS: dict[tuple[int, str], tuple[Efficiencies, dict[str, float]]] = {}


def _family_params(eff: Efficiencies, fam: str) -> dict[str, float]:
    hit = _PARAMS.get((id(eff), fam))
    if hit is None or hit[0] is not eff:
        if len(_PARAMS) > 256:
            _PARAMS.clear()
        names = ("compute_eff", "mem_eff", "k0", "expert_s", "block_s", "row_h", "row_i",
                 "overhead_s", "blend", "ep_s")
        hit = _PARAMS[(id(eff), fam)] = (eff, {n: getattr(eff, f"moe_{fam}_{n}") for n in names})
    return hit[1]


@lru_cache(maxsize=256)
def _family(precision: str, kernel: str) -> str:
    return moe_kernel_family(precision, kernel)


def _fused_moe_scalar(t: int, h: int, i: int, k: int, e: int, tp: int, ep: int, gpu: HardwareSpec,
                      eff: Efficiencies, precision: str, routing: str, kernel: str,
                      gated: bool) -> float:
    """`fused_moe_time_s` on Python scalars (the simulator's path; a test keeps it equal)."""
    if not (1 <= k <= e and ep >= 1 and e % ep == 0 and tp >= 1 and i % tp == 0):
        _check(e, k, ep, tp, i)  # raises, naming the bad value
    f = _family(precision, kernel)
    if t <= 0:
        return 0.0
    st = _routing_stats(t, e, k, ep, routing)
    mean = st.rows / max(st.active, 1.0)
    bm = 3 if f == "cutlass_fp8" else (0 if mean <= 16 else 1 if mean <= 32 else 2 if mean <= 64 else 3)
    il = i / tp
    mats = 3.0 if gated else 2.0
    fp8 = precision in ("fp8", "fp8_block") and f in _FP8_FAMILIES and gpu.has_fp8
    peak, ab = (gpu.fp8_flops, 1.0) if fp8 else (gpu.bf16_flops, 2.0)
    par = _family_params(eff, f)
    cs = clock_scale(gpu)
    t_c = 2.0 * st.padded[bm] * h * (mats * il + par["k0"]) / (peak * par["compute_eff"])
    nbytes = st.active * mats * h * il * W_BYTES[precision] \
        + st.rows * (h * ab + (mats - 1) * il * 2.0 + il * (2.0 + ab) + h * 2.0)
    t_m = nbytes / (gpu.hbm_bw_bytes_s * par["mem_eff"]) \
        + (st.active * par["expert_s"] + st.blocks[bm] * par["block_s"]) * cs
    t_rows = t * k * 2.0 * (h * par["row_h"] + il * par["row_i"]) / gpu.hbm_bw_bytes_s
    fixed = (par["overhead_s"] + (par["ep_s"] if ep > 1 else 0.0)) * cs
    return _blend(t_c, t_m, par["blend"]) + t_rows + fixed


def _routing_arrays(t, e, k, ep, rs, prec, kern) -> tuple[np.ndarray, ...]:
    """Per row: kernel family, then the routing statistics (rows, active experts, padded rows
    and M tiles for each M tile of _BLOCK_M). A fit predicts the same rows at every step, so the
    arrays are kept for the last few inputs (keyed by their bytes) and handed out read-only."""
    digest = hashlib.blake2b(digest_size=16)
    for a in (t, e, k, ep, rs, prec, kern):
        digest.update(np.ascontiguousarray(a).tobytes())
        digest.update(str(a.dtype).encode())
    key = (len(t), digest.digest())
    if (hit := _ROUTING_ARRAYS.get(key)) is not None:
        return hit
    pairs, inv = np.unique(np.char.add(np.char.add(prec, "|"), kern), return_inverse=True)
    fam = np.array([moe_kernel_family(*pk.split("|", 1)) for pk in pairs])[inv.ravel()]
    keys = np.stack([t, e, k, ep], axis=1)
    rows, active = np.empty(len(t)), np.empty(len(t))
    padded_all = np.empty((len(t), len(_BLOCK_M)))
    blocks_all = np.empty((len(t), len(_BLOCK_M)))
    for r in np.unique(rs):
        sel = np.flatnonzero(rs == r)
        uk, ui = np.unique(keys[sel], axis=0, return_inverse=True)
        st = [_routing_stats(*map(int, key), str(r)) for key in uk]
        ui = ui.ravel()
        rows[sel] = np.array([s.rows for s in st])[ui]
        active[sel] = np.array([s.active for s in st])[ui]
        padded_all[sel] = np.array([s.padded for s in st]).reshape(len(st), len(_BLOCK_M))[ui]
        blocks_all[sel] = np.array([s.blocks for s in st]).reshape(len(st), len(_BLOCK_M))[ui]
    out = (fam, rows, active, padded_all, blocks_all)
    for a in out:
        a.setflags(write=False)
    if len(_ROUTING_ARRAYS) >= _ROUTING_KEEP:
        _ROUTING_ARRAYS.pop(next(iter(_ROUTING_ARRAYS)))  # the oldest
    _ROUTING_ARRAYS[key] = out
    return out


def fused_moe_time_s(*, num_tokens, hidden, inter, topk, num_experts, gpu: HardwareSpec,
                     eff: Efficiencies, precision="bf16", tp=1, ep=1, routing="balanced",
                     kernel="", gated=True):
    """Seconds of one fused-MoE layer on one GPU of a `tp` x `ep` split (module docstring).
    Shape arguments and `precision` / `routing` / `kernel` / `gated` may be arrays of one
    length. `gated`: gate and up projections (SiLU-and-mul); False: an up projection alone
    (squared-ReLU experts, Nemotron-3)."""
    args = (num_tokens, hidden, inter, topk, num_experts, tp, ep)
    if all(isinstance(x, (int, np.integer)) for x in args) \
            and all(isinstance(x, str) for x in (precision, routing, kernel)):
        return _fused_moe_scalar(*map(int, args), gpu, eff, str(precision), str(routing),
                                 str(kernel), bool(gated))
    scalar = np.ndim(num_tokens) == 0
    t, h, i, k, e, tp_, ep_ = (np.atleast_1d(np.asarray(x, dtype=np.int64))
                               for x in (num_tokens, hidden, inter, topk, num_experts, tp, ep))
    t, h, i, k, e, tp_, ep_ = np.broadcast_arrays(t, h, i, k, e, tp_, ep_)
    prec = np.broadcast_to(np.atleast_1d(np.asarray(precision, dtype=object)), t.shape)
    rout = np.broadcast_to(np.atleast_1d(np.asarray(routing, dtype=object)), t.shape)
    kern = np.broadcast_to(np.atleast_1d(np.asarray(kernel, dtype=object)), t.shape)
    _check(e, k, ep_, tp_, i)
    fam, rows, active, padded_all, blocks_all = _routing_arrays(t, e, k, ep_, rout.astype(str),
                                                                prec.astype(str), kern.astype(str))
    bm = _block_m(rows / np.maximum(active, 1.0))
    # FlashInfer's per-tensor fp8 CUTLASS grouped GEMM keeps 128-row tiles whatever the rows
    # per expert: its H100 rows under balanced routing step up as experts pass 128, 256, ...
    # rows (and are flat below); its block-fp8 sibling does not
    bm = np.where(fam == "cutlass_fp8", len(_BLOCK_M) - 1, bm)
    padded = padded_all[np.arange(len(t)), bm]
    blocks = blocks_all[np.arange(len(t)), bm]
    il = i / tp_
    mats = np.where(np.broadcast_to(np.atleast_1d(np.asarray(gated, dtype=bool)), t.shape), 3.0, 2.0)
    fp8 = np.isin(prec, ("fp8", "fp8_block")) & np.isin(fam, _FP8_FAMILIES) & gpu.has_fp8
    peak = np.where(fp8, gpu.fp8_flops, gpu.bf16_flops)
    wb = np.array([W_BYTES[p] for p in prec])
    ab = np.where(fp8, 1.0, 2.0)
    t_c = 2.0 * padded * h * (mats * il + _fam_params(eff, fam, "k0")) \
        / (peak * _fam_params(eff, fam, "compute_eff"))
    nbytes = active * mats * h * il * wb + rows * (h * ab + (mats - 1) * il * 2.0 + il * (2.0 + ab) + h * 2.0)
    cs = clock_scale(gpu)
    t_m = nbytes / (gpu.hbm_bw_bytes_s * _fam_params(eff, fam, "mem_eff")) \
        + (active * _fam_params(eff, fam, "expert_s") + blocks * _fam_params(eff, fam, "block_s")) * cs
    t_rows = t * k * 2.0 * (h * _fam_params(eff, fam, "row_h") + il * _fam_params(eff, fam, "row_i")) \
        / gpu.hbm_bw_bytes_s
    fixed = (_fam_params(eff, fam, "overhead_s") + np.where(ep_ > 1, _fam_params(eff, fam, "ep_s"), 0.0)) * cs
    out = np.where(t > 0, _blend_pv(t_c, t_m, _fam_params(eff, fam, "blend")) + t_rows + fixed, 0.0)
    return float(out[0]) if scalar else out


def router_time_s(*, num_tokens, hidden, num_experts, gpu: HardwareSpec, eff: Efficiencies):
    """The router: a bf16 GEMM (tokens x hidden -> expert logits) and a top-k softmax kernel
    reading the logits (fp32) and writing ids and weights."""
    if num_tokens <= 0:
        return 0.0
    g = rl.gemm_time_s(int(num_tokens), int(num_experts), int(hidden), gpu, eff, gpu.bf16_flops, 2.0)
    return g + rl.elementwise_time_s(num_tokens * num_experts * 4.0, gpu, eff)


def shared_experts_time_s(*, num_tokens, hidden, inter, gpu: HardwareSpec, eff: Efficiencies,
                          num_shared=1, tp=1, precision="bf16", graph=True):
    """Shared experts: one dense gated MLP of width `num_shared x inter / tp` on every token
    (gate/up GEMM, SiLU-and-mul, down GEMM). `graph`: inside a CUDA graph (block-fp8 only:
    outside one the op's host launch path shows, costmodel/block_fp8.py)."""
    if num_tokens <= 0 or num_shared <= 0:
        return 0.0
    width = int(num_shared * inter // tp)
    m = int(num_tokens)
    if precision == "fp8_block":
        from costmodel.block_fp8 import block_fp8_gemm_time_s as bg

        up = bg(m=m, n=2 * width, k=int(hidden), gpu=gpu, eff=eff, graph=graph)
        down = bg(m=m, n=int(hidden), k=width, gpu=gpu, eff=eff, graph=graph)
    else:
        fp8 = precision == "fp8" and gpu.has_fp8
        peak, wb, ab = (gpu.fp8_flops, 1.0, 1.0) if fp8 else (gpu.bf16_flops, W_BYTES.get(precision, 2.0), 2.0)
        up = rl.gemm_time_s(m, 2 * width, int(hidden), gpu, eff, peak, wb, ab, fp8)
        down = rl.gemm_time_s(m, int(hidden), width, gpu, eff, peak, wb, ab, fp8)
    act = rl.elementwise_time_s(m * width * 3 * 2.0, gpu, eff, "mlp_act")
    return up + act + down


def ep_alltoall_time_s(*, num_tokens, hidden, topk, ep, gpu: HardwareSpec, eff: Efficiencies,
                       precision="bf16"):
    """Dispatch (hidden states, fp8 for fp8 / fp8_block experts) plus combine (bf16 outputs) of
    `num_tokens` tokens on one EP rank to the ranks holding their `topk` experts: a token goes
    once to each distinct rank among its picks, ep (1 - (1 - 1/ep)^topk) expected, of which
    (ep - 1) / ep are remote. NVLink inside a node, the NIC across nodes."""
    if ep <= 1 or num_tokens <= 0:
        return 0.0
    ranks = ep * (1.0 - (1.0 - 1.0 / ep) ** topk)
    remote = ranks * (ep - 1) / ep
    internode = ep > gpu.gpus_per_node
    bw = gpu.network_bw_bytes_s if internode else gpu.intra_node_bw_bytes_s()
    lat, bw_eff = (eff.net_latency_s, eff.net_bw_eff) if internode else (eff.comm_latency_s, eff.comm_bw_eff)
    out = 0.0
    for elem in ((1.0 if precision in ("fp8", "fp8_block") else 2.0), 2.0):
        out += eff.comm_base_s + lat + num_tokens * remote * hidden * elem / (bw * bw_eff)
    return out
