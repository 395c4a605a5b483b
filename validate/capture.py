"""Is a call capture-safe? Record what would be a host-to-device copy or a host sync on a GPU.

An engine replays its decode step as a CUDA graph: every kernel's launch is recorded once and
replayed without the host. A wrapper that copies host data to the device (`torch.tensor([...],
device=...)`, a table built on the host then `.to(device)`), or reads a device value on the host
(`.item()`, `.tolist()`, `.cpu()`, `float(t)`), cannot be captured, and timed eagerly it measures
the host. `serveplan validate` times every kernel inside CUDA graphs, so every wrapper on the
timed path must be capture-safe.

`host_traffic()` records, while it is active, each torch call that would move data between host
and device on a GPU, made from code outside torch and Triton (the interpreter's own copies are
not the wrapper's):
- host data turned into a tensor: `torch.tensor`, `torch.as_tensor`, `torch.asarray`,
  `torch.from_numpy` (a copy from the host whatever the device);
- a tensor factory given no device (`torch.arange(n)`, `torch.zeros(...)`): it lands on the
  host, and reaches a kernel only through a copy;
- a read of device data on the host: `.item()`, `.tolist()`, `.cpu()`, `.numpy()`, `float()`,
  `int()`, `bool()`, `.__index__()`.
It works on the CPU too (under Triton's interpreter every tensor is on the host, so a real
copy cannot be seen; the calls that would make one can). `assert_capture_safe(fn)` calls `fn`
once (caches, compilation), then records a second call and raises `CaptureSafetyError` naming
each recorded call and its line.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch.overrides import TorchFunctionMode

HOST_DATA = (torch.tensor, torch.as_tensor, torch.asarray, torch.from_numpy)
FACTORIES = (torch.arange, torch.empty, torch.zeros, torch.ones, torch.full, torch.randn,
             torch.rand, torch.randint, torch.randperm, torch.linspace, torch.eye)
READS = (torch.Tensor.item, torch.Tensor.tolist, torch.Tensor.cpu, torch.Tensor.numpy,
         torch.Tensor.__float__, torch.Tensor.__int__, torch.Tensor.__bool__,
         torch.Tensor.__index__)
_SKIP = tuple(os.path.dirname(m.__file__) + os.sep for m in (torch,)) + (os.sep + "triton" + os.sep,)


@dataclass(frozen=True)
class HostEvent:
    kind: str  # "host data" | "host tensor" | "host read"
    call: str  # e.g. "torch.arange"
    where: str  # file:line of the caller

    def __str__(self) -> str:
        return f"{self.kind}: {self.call} at {self.where}"


class CaptureSafetyError(RuntimeError):
    pass


def _caller() -> str | None:
    """file:line of the first frame outside torch and triton, or None when the call comes from
    inside them (Triton's interpreter copying its arguments, torch calling itself)."""
    f = sys._getframe(2)
    while f is not None:
        path = f.f_code.co_filename
        if __file__ == path:
            f = f.f_back
            continue
        if any(s in path for s in _SKIP):
            return None
        return f"{os.path.relpath(path)}:{f.f_lineno}"
    return None


def _name(func) -> str:
    name = getattr(func, "__name__", str(func))
    return f"Tensor.{name}" if func in READS else f"torch.{name}"


class _Recorder(TorchFunctionMode):
    def __init__(self, events: list[HostEvent]):
        super().__init__()
        self.events = events

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        kind = None
        if func in HOST_DATA:
            kind = "host data"
        elif func in FACTORIES and kwargs.get("device") is None:
            kind = "host tensor"
        elif func in READS:
            kind = "host read"
        if kind is not None:
            where = _caller()
            if where is not None:
                self.events.append(HostEvent(kind, _name(func), where))
        return func(*args, **kwargs)


@contextmanager
def host_traffic() -> Iterator[list[HostEvent]]:
    """Record the host copies and host reads of torch calls made inside the block."""
    events: list[HostEvent] = []
    with _Recorder(events):
        yield events


def assert_capture_safe(fn: Callable[[], object], name: str = "") -> None:
    """Call `fn` once, then again while recording: the repeated call must make no host copy
    and no host read (the first may build caches and compile)."""
    fn()
    with host_traffic() as events:
        fn()
    if events:
        what = name or getattr(fn, "__name__", "call")
        raise CaptureSafetyError(f"{what} is not capture-safe on a repeated call: "
                                 + "; ".join(str(e) for e in events))
