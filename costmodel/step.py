"""One engine iteration, explained: what `serveplan cost step` prints and `POST /v1/cost/step`
returns, from one call.

`cost_step(model, gpu, tp=, pp=, precision=, kv_dtype=, prefill=[...], decode=[...], spec_k=,
gpu_memory_utilization=, calibration=)` builds the CostModel, times the batch given in the CLI's
forms (prefill `LEN[xN][+PREFIX]`, decode `BATCHxCONTEXT`; `spec_k` makes the decodes verify
steps of k + 1 tokens), and adds the memory plan of one GPU at vLLM's defaults for that GPU
(the token budget raised to the batch when the batch is larger). Returns a plain dict: the
step and stage time in seconds, the per-operator breakdown, and `memory`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from costmodel.batch import Batch
from costmodel.engine_defaults import engine_defaults
from costmodel.memory import memory_plan
from costmodel.model import CostModel


def cost_step(model, gpu, *, tp: int = 1, pp: int = 1, ep: int = 1, dp: int = 1, precision: str = "bf16",
              kv_dtype: str = "auto", prefill: Sequence[str] | None = (),
              decode: Sequence[str] | None = (), spec_k: int = 0,
              gpu_memory_utilization: float = 0.9, calibration=None) -> dict:
    """Time one iteration of the batch per operator, and the memory plan of one GPU.
    `calibration`: a CalibrationProfile or None; the result says `calibrated` only when the
    profile has parameters for this GPU (others keep their defaults). With `dp` > 1 (attention
    data parallelism, MoE) every rank runs the batch given: the MoE layers see dp times its
    tokens."""
    cm = CostModel(model, gpu, tp=tp, pp=pp, precision=precision, kv_dtype=kv_dtype,
                   calibration=calibration, ep=ep, dp=dp)
    batch = Batch.parse(list(prefill or ()) or None, list(decode or ()) or None)
    if spec_k:
        batch = replace(batch, decode_query_tokens=spec_k + 1)
    br = cm.step(batch)
    d = engine_defaults(cm.gpu)
    mem = memory_plan(cm, gpu_memory_utilization, max(d.max_num_batched_tokens, batch.num_tokens),
                      d.max_num_seqs, d.block_size)
    return {
        "model": cm.model.name,
        "gpu": cm.gpu.name,
        "tp": tp,
        "pp": pp,
        "ep": ep,
        "dp": dp,
        "precision": precision,
        "kv_dtype": cm.kv_dtype,
        "calibrated": calibration is not None and cm.gpu.name in calibration.gpus,
        **br.to_dict(),
        "memory": mem.to_dict(),
    }
