"""Physical bounds on fitted parameters, and what a parameter stuck at a bound means.

`PARAM_BOUNDS` (costmodel/efficiencies.py) are the widest values a calibration profile may hold.
A fit on a GPU's rows is held tighter, to what the hardware allows:
- an efficiency (`*_eff`) is a fraction of a datasheet peak: at most 1;
- a fixed time that one GPU kernel pays (launch, prologue, epilogue: `kernel_overhead_s`,
  `elem_overhead_s`, the fp8 query-quantisation kernel's `attn_fp8_kv_s` and
  `attn_decode_fp8_s`) stays under MAX_KERNEL_FIXED_S = 10 us in real seconds on that GPU
  (the parameters are seconds at REF_CLOCK_HZ, so the bound is 10 us / clock_scale); one
  attention layer's `attn_overhead_s` covers its few kernels (cache write, attention, split
  merge) and stays under 3 x that. A kernel replayed in a CUDA graph starts within a few
  microseconds of the previous one; a fixed time of 10 us or more is the host's launch path,
  which an engine's CUDA graph does not pay, or a wrong measurement.
A measured device that is not a GPU (a CPU) keeps the wide bounds: its fixed times are its own.

`bound_messages` names every fitted parameter that ends at a bound, its value and the likely
cause; the fit puts them in the profile's `messages`, and `serveplan calibrate` and `serveplan
validate` print them: no fitted constant sits silently at a bound.
"""

from __future__ import annotations

import math

from costmodel.efficiencies import PARAM_BOUNDS, clock_scale
from costmodel.hardware import HardwareSpec

MAX_KERNEL_FIXED_S = 10e-6  # real seconds: the most one kernel's fixed time can be on a GPU
# fixed-time parameter -> how many kernels it covers
KERNEL_FIXED_PARAMS = {"kernel_overhead_s": 1, "elem_overhead_s": 1, "attn_fp8_kv_s": 1,
                       "attn_decode_fp8_s": 1, "attn_overhead_s": 3}
AT_BOUND_REL = 0.01  # a value within 1% (in log space) of a bound sits at it
LOG_FLOOR = 1e-4  # a lower bound of 0 is searched down to this fraction of the upper one


def is_gpu(hw: HardwareSpec) -> bool:
    return hw.vendor != "cpu"


def fit_bounds(name: str, hw: HardwareSpec | None) -> tuple[float, float]:
    """(low, high) that a fit may move `name` in, on the device `hw` (None: PARAM_BOUNDS)."""
    lo, hi = PARAM_BOUNDS[name]
    if hw is not None and is_gpu(hw):
        if name.endswith("_eff"):
            hi = min(hi, 1.0)
        n = KERNEL_FIXED_PARAMS.get(name)
        if n is not None:
            hi = min(hi, n * MAX_KERNEL_FIXED_S / clock_scale(hw))
    return lo, hi


def search_bounds(name: str, hw: HardwareSpec | None) -> tuple[float, float]:
    """The bounds the fit searches in (log space cannot reach 0: a lower bound of 0 becomes
    LOG_FLOOR x the upper bound)."""
    lo, hi = fit_bounds(name, hw)
    return max(lo, hi * LOG_FLOOR), hi


def _cause(name: str, upper: bool, hw: HardwareSpec | None) -> str:
    gpu = hw is not None and is_gpu(hw)
    if name in KERNEL_FIXED_PARAMS and upper:
        if gpu:
            return ("no GPU kernel has a fixed time this long: the rows likely include host "
                    "launch time (timed eagerly, not inside a CUDA graph as the engine runs them)")
        return "the rows need a longer fixed time per kernel than the bounds allow"
    if name.endswith("_eff") and upper:
        peaks = "the GPU preset is not this GPU" if gpu else "the device's measured peaks are low"
        return ("the rows are faster than the roofline allows: operands found in cache (inputs "
                f"not rotated between runs), or {peaks}")
    if name.endswith("_eff"):
        return ("the rows are far slower than the roofline: a kernel far from the engine's, "
                "host time in the timings, or rows the model does not describe")
    if name.endswith("_s") and not upper:
        return "the rows do not need this fixed time (it has no effect on them)"
    return ("the model's form cannot follow these rows with this parameter inside its bounds; "
            "check the rows of the operators it describes")


def bound_messages(values: dict[str, float], fitted, hw: HardwareSpec | None,
                   gpu_name: str = "") -> list[str]:
    """One message per fitted parameter at its lower or upper fit bound on `hw`."""
    where = gpu_name or (hw.name if hw is not None else "")
    out = []
    for name in fitted:
        v = values[name]
        lo, hi = search_bounds(name, hw)
        upper = v >= hi * math.exp(-AT_BOUND_REL)
        lower = v <= lo * math.exp(AT_BOUND_REL)
        if not (upper or lower):
            continue
        shown = _fmt(name, v)
        n = KERNEL_FIXED_PARAMS.get(name)
        if n is not None and hw is not None and is_gpu(hw):
            shown += f" at the reference clock ({v * clock_scale(hw) * 1e6:.3g} us on {hw.name})"
        if upper and hi < PARAM_BOUNDS[name][1]:
            what = "its physical ceiling"
            if n is not None:
                what += f" ({n * MAX_KERNEL_FIXED_S * 1e6:.0f} us" + (f" for {n} kernels)" if n > 1 else " per kernel)")
        elif upper:
            what = f"its upper bound {_fmt(name, hi)}"
        elif PARAM_BOUNDS[name][0] == 0.0:
            what = "its lower bound (effectively 0)"
        else:
            what = f"its lower bound {_fmt(name, lo)}"
        out.append(f"{where}: fitted {name} = {shown} sits at {what}; likely cause: "
                   f"{_cause(name, upper, hw)}")
    return out


def _fmt(name: str, v: float) -> str:
    if name.endswith("_s") and v < 1e-3:
        return f"{v * 1e6:.3g} us"
    return f"{v:.4g}"
