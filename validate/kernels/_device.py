"""Where the kernels run: a CUDA GPU, or Triton's interpreter on the CPU.

`pick_device` turns the user's `--device auto|cuda|cpu` into a torch device string.
`interpreting` says whether Triton was told to interpret kernels (`TRITON_INTERPRET=1`);
it must be set before `triton` is imported, because `@triton.jit` reads it when a kernel
is decorated. Under the interpreter every tensor lives on the CPU and each program of the
launch grid runs one after another in numpy, so kernels are correct but slow.

The checks at the bottom are shared by the launch wrappers: they raise a `ValueError`
that names the bad argument and what would be accepted.

torch is imported inside the functions, so `interpreting()` works without it.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

_TRUE = {"1", "true", "yes", "on", "y"}
DEVICES = ("auto", "cuda", "cpu")


def interpreting() -> bool:
    """True when `TRITON_INTERPRET` asks Triton to run kernels in its CPU interpreter."""
    return os.environ.get("TRITON_INTERPRET", "0").strip().lower() in _TRUE


def pick_device(requested: str = "auto") -> str:
    """Resolve `auto|cuda|cpu` to `"cuda"` or `"cpu"`.

    `auto` is `"cuda"` when torch sees a CUDA GPU, else `"cpu"`. Asking for `"cuda"` on a
    machine without one raises a `ValueError` instead of failing later inside a launch.
    """
    if requested not in DEVICES:
        raise ValueError(f"device={requested!r} is not one of {', '.join(DEVICES)}")
    import torch

    has_cuda = torch.cuda.is_available()
    if requested == "cuda" and not has_cuda:
        raise ValueError(
            "device='cuda' was requested but torch sees no CUDA GPU; "
            "use --device cpu (Triton's interpreter) or --device auto"
        )
    if requested == "auto":
        return "cuda" if has_cuda else "cpu"
    return requested


def fp8_supported(device: torch.device) -> bool:
    """Whether fp8 e4m3 matmuls can run here: CUDA compute capability >= 8.9 (Ada, Hopper,
    Blackwell), or the interpreter, which converts fp8 operands to fp16 before multiplying."""
    import torch

    if device.type == "cuda":
        return torch.cuda.get_device_capability(device) >= (8, 9)
    return interpreting()


# --- input checks shared by the launch wrappers -------------------------------------------


def check_launchable(tensors: dict[str, torch.Tensor]) -> torch.device:
    """All tensors on one device that Triton can launch on; return that device.

    Compiled kernels need CUDA tensors; the interpreter takes CPU tensors (it also copies
    CUDA tensors to the host and back, which is allowed but slow).
    """
    devices = {name: t.device for name, t in tensors.items()}
    first_name, device = next(iter(devices.items()))
    for name, other in devices.items():
        if other != device:
            raise ValueError(f"{name} is on {other} but {first_name} is on {device}; "
                             "put every input on one device")
    if device.type != "cuda" and not interpreting():
        raise ValueError(
            f"{first_name} is on {device}: Triton kernels need CUDA tensors, or "
            "TRITON_INTERPRET=1 set before triton is imported to run them on the CPU"
        )
    return device


def check_dtype(name: str, t: torch.Tensor, allowed: Sequence[Any]) -> None:
    if t.dtype not in allowed:
        names = ", ".join(str(d).removeprefix("torch.") for d in allowed)
        raise ValueError(f"{name}.dtype={str(t.dtype).removeprefix('torch.')} is not one of {names}")


def check_ndim(name: str, t: torch.Tensor, ndim: int, layout: str) -> None:
    if t.dim() != ndim:
        raise ValueError(f"{name} must be {ndim}-D {layout}, got shape {tuple(t.shape)}")


def check_dim(name: str, t: torch.Tensor, axis: int, expected: int, what: str) -> None:
    if t.shape[axis] != expected:
        raise ValueError(
            f"{name}.shape[{axis}]={t.shape[axis]} does not match {what}={expected} "
            f"({name} has shape {tuple(t.shape)})"
        )


def check_inner_contiguous(name: str, t: torch.Tensor) -> None:
    """Kernels index the last axis with unit stride."""
    if t.stride(-1) != 1:
        raise ValueError(f"{name} must have a unit stride on its last axis, got strides "
                         f"{t.stride()}; pass {name}.contiguous()")


def check_out(name: str, out: torch.Tensor, shape: Sequence[int], dtype: torch.dtype,
              device: torch.device) -> None:
    """A caller-supplied output buffer must match the result exactly."""
    if tuple(out.shape) != tuple(shape):
        raise ValueError(f"{name}.shape={tuple(out.shape)} does not match the result's shape "
                         f"{tuple(shape)}")
    if out.dtype != dtype:
        raise ValueError(f"{name}.dtype={out.dtype} does not match the result's dtype {dtype}")
    if out.device != device:
        raise ValueError(f"{name} is on {out.device} but the inputs are on {device}")
    if out.numel() and out.stride(-1) != 1:
        raise ValueError(f"{name} must have a unit stride on its last axis, got strides "
                         f"{out.stride()}")
