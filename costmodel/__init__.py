"""Cost model: how long one engine iteration takes, and how much memory a deployment needs.

Public entry points:
- `load_model(name_or_path)` -> ModelSpec; `load_gpu(name)` -> HardwareSpec
- `CostModel(model, gpu, tp=, pp=, precision=, kv_dtype=, calibration=)`: step time of a
  batch (per-operator breakdown), memory plan, KV capacity; `costmodel.step.cost_step(...)`:
  one iteration explained (`serveplan cost step`).

Modules: specs and hardware (presets), batch, model (the operators of one iteration),
efficiencies (the free parameters and their bounds), roofline (GEMM, elementwise and collective
times) and attention; moe_kernels (fused MoE, router, shared experts, EP all-to-all), mla
(DeepSeek-style attention modules) and block_fp8 (block-scaled FP8 GEMMs); memory,
engine_defaults and arch_defaults (what an unset knob or an uncalibrated GPU gets), measured,
importers, fit, tables and calibration (published measurements -> a CalibrationProfile), and
the shared plumbing every layer uses: errors, paths (../shared), jsonio (JSON in and out).
It imports nothing else of the project.
"""

from costmodel.batch import Batch
from costmodel.hardware import GPU_PRESETS, HardwareSpec, load_gpu
from costmodel.specs import MODEL_PRESETS, ModelSpec, load_model

__all__ = [
    "Batch",
    "GPU_PRESETS",
    "HardwareSpec",
    "MODEL_PRESETS",
    "ModelSpec",
    "load_gpu",
    "load_model",
    "CostModel",
]


def __getattr__(name: str):
    # CostModel imports the table interpolators; keep `import costmodel` cheap.
    if name == "CostModel":
        from costmodel.model import CostModel

        return CostModel
    raise AttributeError(name)
