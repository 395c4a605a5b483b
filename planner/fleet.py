"""The GPU inventory a plan may use: `GPU[:COUNT][@PRICE][,GPU:COUNT...]`.

`h100:16` is sixteen H100-SXM at the preset price; `h100:8@3.10,a100:16@1.60` mixes two types
with user prices in $/GPU-hour. COUNT defaults to one node of that GPU (its preset
`gpus_per_node`). GPUs per node come from the preset: tensor parallelism is kept inside a node.
"""

from __future__ import annotations

from dataclasses import dataclass

from costmodel.errors import ServePlanError
from costmodel.hardware import HardwareSpec, load_gpu

_FORMAT = "GPU[:COUNT][@PRICE][,GPU:COUNT...] (e.g. h100:16 or h100:8@3.1,a100:16)"


@dataclass(frozen=True)
class FleetGpu:
    """`count` GPUs of one type; `spec.price_per_hour_usd` is the price in force (user or preset)."""

    spec: HardwareSpec
    count: int
    price_overridden: bool = False

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def price_per_hour_usd(self) -> float:
        return self.spec.price_per_hour_usd


@dataclass(frozen=True)
class Fleet:
    gpus: tuple[FleetGpu, ...]

    @property
    def total_gpus(self) -> int:
        return sum(g.count for g in self.gpus)

    def get(self, name: str) -> FleetGpu:
        for g in self.gpus:
            if g.name == name:
                return g
        raise KeyError(name)

    def price(self, name: str) -> float:
        return self.get(name).price_per_hour_usd

    def describe(self) -> str:
        return ",".join(f"{g.name}:{g.count}@{g.price_per_hour_usd:g}" for g in self.gpus)

    def to_dict(self) -> list[dict]:
        return [
            {"gpu": g.name, "count": g.count, "price_per_hour_usd": g.price_per_hour_usd,
             "gpus_per_node": g.spec.gpus_per_node,
             "price_source": "user" if g.price_overridden else g.spec.price_source}
            for g in self.gpus
        ]


def _parse_count(text: str, item: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise ServePlanError(f"GPU count {text!r} in {item!r}; expected an integer >= 1 in {_FORMAT}") from None
    if n < 1:
        raise ServePlanError(f"GPU count {n} in {item!r}; expected at least 1 GPU")
    return n


def _parse_price(text: str, item: str) -> float:
    try:
        p = float(text)
    except ValueError:
        raise ServePlanError(f"GPU price {text!r} in {item!r}; expected $/GPU-hour as a number, e.g. @3.10") from None
    if not p > 0 or p != p or p == float("inf"):
        raise ServePlanError(f"GPU price {text!r} in {item!r}; expected a positive $/GPU-hour")
    return p


def parse_fleet(text: str | Fleet | dict) -> Fleet:
    """Parse an inventory string (or pass a Fleet through; a dict maps GPU name -> count)."""
    if isinstance(text, Fleet):
        return text
    if isinstance(text, dict):
        text = ",".join(f"{k}:{v}" for k, v in text.items())
    if not isinstance(text, str) or not text.strip():
        raise ServePlanError(f"GPU inventory {text!r}; expected {_FORMAT}")
    entries: dict[str, FleetGpu] = {}
    for item in (s.strip() for s in text.split(",")):
        if not item:
            raise ServePlanError(f"empty item in GPU inventory {text!r}; expected {_FORMAT}")
        body, _, price = item.partition("@")
        name, _, count = body.partition(":")
        spec = load_gpu(name.strip())
        n = _parse_count(count.strip(), item) if count.strip() else spec.gpus_per_node
        overridden = bool(price.strip())
        if overridden:
            spec = spec.with_price(_parse_price(price.strip(), item))
        if spec.name in entries:
            prev = entries[spec.name]
            if overridden and prev.price_overridden and prev.price_per_hour_usd != spec.price_per_hour_usd:
                raise ServePlanError(f"GPU {spec.name} is listed twice with different prices in {text!r}")
            keep = spec if overridden else prev.spec
            entries[spec.name] = FleetGpu(keep, prev.count + n, overridden or prev.price_overridden)
        else:
            entries[spec.name] = FleetGpu(spec, n, overridden)
    return Fleet(tuple(entries.values()))
