"""GPU presets from datasheet facts (the figures in `../shared/data/gpus.csv`).

Bandwidths are per GPU and one direction (a "900 GB/s bidirectional" NVLink is 450e9 B/s here).
FLOP/s are dense (no sparsity). Prices are indicative on-demand or reservation rates per GPU-hour
and are meant to be overridden (`--gpu h100:16@3.10` or `HardwareSpec.with_price`).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from costmodel.errors import ServePlanError

GiB = 1024**3


# GPU architectures (HardwareSpec.arch; costmodel.arch_defaults maps them to default efficiencies)
ARCHS = ("", "ampere", "ada", "hopper", "blackwell", "cdna3")


@dataclass(frozen=True)
class HardwareSpec:
    name: str
    bf16_flops: float  # dense tensor-core FLOP/s
    fp8_flops: float  # 0 when the GPU has no FP8 tensor cores (fp8 is then weight-only)
    hbm_bytes: float
    hbm_bw_bytes_s: float
    nvlink_bw_bytes_s: float  # per GPU, one direction; 0 = no NVLink (peers talk over PCIe)
    pcie_bw_bytes_s: float  # per GPU, one direction
    network_bw_bytes_s: float  # per GPU, inter-node, one direction
    gpus_per_node: int
    price_per_hour_usd: float
    price_source: str = ""
    vendor: str = "nvidia"
    sm_count: int = 108  # streaming multiprocessors (CUs on AMD): sets GEMM wave quantisation
    gemm_row_tile: int = 0  # rows a GEMM computes at a time; 0 = GPU tiles (64, 128); a CPU: 1
    arch: str = ""  # ampere | ada | hopper | blackwell | cdna3: picks the default efficiencies

    @property
    def has_fp8(self) -> bool:
        return self.fp8_flops > 0

    def peak_flops(self, precision: str) -> float:
        """Tensor-core peak for the compute precision (fp8 falls back to bf16 without FP8)."""
        if precision == "fp8" and self.has_fp8:
            return self.fp8_flops
        return self.bf16_flops

    def intra_node_bw_bytes_s(self) -> float:
        return self.nvlink_bw_bytes_s or self.pcie_bw_bytes_s

    def with_price(self, usd_per_hour: float) -> HardwareSpec:
        if not usd_per_hour > 0:
            raise ServePlanError(f"GPU price {usd_per_hour!r} $/h; expected a positive number")
        return replace(self, price_per_hour_usd=float(usd_per_hour), price_source="user")


def _gpu(name, bf16_tf, fp8_tf, mem_gib, bw_tbs, nvlink_bidir_gbs, pcie_gbs, net_gbs, price, src,
         sms, arch, per_node=8, vendor="nvidia"):
    return HardwareSpec(
        name=name,
        bf16_flops=bf16_tf * 1e12,
        fp8_flops=fp8_tf * 1e12,
        hbm_bytes=mem_gib * GiB,
        hbm_bw_bytes_s=bw_tbs * 1e12,
        nvlink_bw_bytes_s=nvlink_bidir_gbs / 2 * 1e9,
        pcie_bw_bytes_s=pcie_gbs * 1e9,
        network_bw_bytes_s=net_gbs * 1e9,
        gpus_per_node=per_node,
        price_per_hour_usd=price,
        price_source=src,
        vendor=vendor,
        sm_count=sms,
        arch=arch,
    )


_AWS_CB = "AWS capacity-block rate, Jan 2025 (gpus.csv)"
_EST = "estimate: no verified public rate; override it"

# name, bf16 TF, fp8 TF, HBM GiB, HBM TB/s, NVLink GB/s bidir, PCIe GB/s one way,
# inter-node GB/s per GPU one way (400 Gb/s NIC per GPU on HGX H100/H200/B200, 200 on A100),
# price $/GPU-h, SM count
GPU_PRESETS: dict[str, HardwareSpec] = {
    g.name: g
    for g in [
        _gpu("a100-40g", 312, 0, 40, 1.555, 600, 32, 25, 1.844, _AWS_CB, sms=108, arch="ampere"),
        _gpu("a100-80g", 312, 0, 80, 2.039, 600, 32, 25, 2.20, _EST, sms=108, arch="ampere"),
        _gpu("h100-sxm", 989.4, 1978.9, 80, 3.35, 900, 64, 50, 4.916, _AWS_CB, sms=132, arch="hopper"),
        _gpu("h100-pcie", 756, 1513, 80, 2.0, 0, 64, 25, 3.50, _EST, sms=114, arch="hopper"),
        _gpu("h200-sxm", 989.4, 1978.9, 141, 4.8, 900, 64, 50, 5.408, _AWS_CB, sms=132, arch="hopper"),
        _gpu("b200", 2250, 4500, 180, 8.0, 1800, 64, 50, 8.00, _EST, sms=148, arch="blackwell"),
        _gpu("l40s", 362.05, 733, 48, 0.864, 0, 32, 12.5, 1.90, _EST, sms=142, arch="ada"),
        _gpu("l4", 121, 242.5, 24, 0.3, 0, 32, 12.5, 0.80, _EST, sms=58, arch="ada"),
        _gpu("a10g", 70, 0, 24, 0.6, 0, 32, 12.5, 1.006, "g5.xlarge on-demand, third-party (gpus.csv)", sms=80, arch="ampere"),
        _gpu("mi300x", 1307.4, 2614.9, 192, 5.3, 896, 64, 50, 1.80, "marketplace listings (gpus.csv), unverified", sms=304, arch="cdna3", vendor="amd"),
    ]
}

_ALIASES = {
    "a100": "a100-80g",
    "a100-80gb": "a100-80g",
    "a100-40gb": "a100-40g",
    "a100-sxm": "a100-80g",
    "a100_sxm": "a100-80g",
    "h200_sxm": "h200-sxm",
    "b200_sxm": "b200",
    "h100": "h100-sxm",
    "h100-80gb": "h100-sxm",
    "h100_sxm": "h100-sxm",
    "h200": "h200-sxm",
    "b200-sxm": "b200",
    "mi300": "mi300x",
}


# Devices measured at run time rather than read from a datasheet (`serveplan validate` on a
# machine without a GPU measures its CPU as "cpu"). A calibration profile carries their specs
# and registers them when it loads; they are kept apart from GPU_PRESETS, which lists real GPUs.
_MEASURED: dict[str, HardwareSpec] = {}


def register_measured(spec: HardwareSpec) -> HardwareSpec:
    """Make a measured device loadable by name (`load_gpu(spec.name)`); presets win on a clash."""
    key = spec.name.strip().lower()
    if key in GPU_PRESETS or key in _ALIASES:
        raise ServePlanError(f"measured device {spec.name!r} would shadow the GPU preset of that name")
    _MEASURED[key] = spec
    return spec


def load_gpu(name: str | HardwareSpec) -> HardwareSpec:
    """A preset by name or alias (`h100`, `a100`, `h200`, ...), or a registered measured device."""
    if isinstance(name, HardwareSpec):
        return name
    key = str(name).strip().lower()
    key = _ALIASES.get(key, key)
    if key in GPU_PRESETS:
        return GPU_PRESETS[key]
    if key in _MEASURED:
        return _MEASURED[key]
    known = ", ".join(sorted(GPU_PRESETS)) + " (aliases: " + ", ".join(sorted(_ALIASES)) + ")"
    hint = ("; a measured device such as 'cpu' is known once its calibration profile is loaded "
            "(--calibration FILE from `serveplan validate`)" if key == "cpu" else "")
    raise ServePlanError(f"unknown GPU {name!r}; known: {known}{hint}")
