"""Benchmark: `serveplan validate` on mixture-of-experts plans on this machine — measure the
shapes of a tiny Qwen3-MoE plan (GQA attention, tp 2 x ep 2) and a tiny DeepSeek-V3 plan (MLA,
tp 2), fit on the even-numbered shapes, report the odd-numbered ones (never fitted).

Each shape counts as the sum of its op rows (moe, and the attention side or the MLA module):
an MoE plan times no whole iteration (`validate.moe_measure`). Reported: the held-out MAPE with
the default parameters and after calibration on this device.

    .venv/bin/python benchmarks/validate_moe.py [--passes 3]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

TINY = {"num_hidden_layers": 2, "hidden_size": 64, "num_attention_heads": 4, "intermediate_size": 128,
        "moe_intermediate_size": 32, "num_experts_per_tok": 2, "vocab_size": 512,
        "max_position_embeddings": 4096}
PLANS = {
    "tiny-qwen3-moe": ({**TINY, "architectures": ["Qwen3MoeForCausalLM"], "model_type": "qwen3_moe",
                        "num_key_value_heads": 2, "head_dim": 16, "num_experts": 8},
                       {"tp": 2, "ep": 2}),
    "tiny-deepseek-v3": ({**TINY, "architectures": ["DeepseekV3ForCausalLM"], "model_type": "deepseek_v3",
                          "num_key_value_heads": 4, "n_routed_experts": 8, "n_shared_experts": 0,
                          "first_k_dense_replace": 1, "kv_lora_rank": 32, "q_lora_rank": 24,
                          "qk_rope_head_dim": 8, "qk_nope_head_dim": 16, "v_head_dim": 16,
                          "scoring_func": "sigmoid"},
                         {"tp": 2}),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--passes", type=int, default=3)
    args = ap.parse_args()
    from sim.deployment import Deployment, PoolConfig
    from validate.moe_measure import op_sums
    from validate.runner import ValidateOptions, calibrate, mape, measure_plan

    out = {}
    for name, (cfg, pool) in PLANS.items():
        d = Path(tempfile.mkdtemp())
        (d / "config.json").write_text(json.dumps({**cfg, "_name_or_path": name}))
        p = PoolConfig("colocated", "h100", max_num_seqs=16, max_num_batched_tokens=256, **pool)
        meas = measure_plan({"deployment": Deployment(str(d / "config.json"), (p,)).to_dict()},
                            ValidateOptions(workload="fixed:200,50", passes=args.passes),
                            log=lambda m: None)
        fit = [i % 2 == 0 for i in range(len(meas.results))]
        prof = calibrate(meas, fit=fit, tables=False)
        held = [(r.shape.name, op_sums(r, prof)) for r, f in zip(meas.results, fit, strict=True) if not f]
        res = {"device": meas.hardware_how,
               "fitted_shapes": [r.shape.name for r, f in zip(meas.results, fit, strict=True) if f],
               "held_out_shapes": [n for n, _ in held],
               "ops": sorted(set(meas.rows()["op"])),
               "held_out_mape_default": mape([h["predicted_default_s"] / h["measured_s"] - 1 for _, h in held]),
               "held_out_mape_calibrated": mape([h["predicted_calibrated_s"] / h["measured_s"] - 1
                                                 for _, h in held])}
        out[name] = res
        print(f"{name}: held-out MAPE {res['held_out_mape_default']:.1%} default -> "
              f"{res['held_out_mape_calibrated']:.1%} calibrated ({len(held)} shapes never fitted; "
              f"rows {', '.join(res['ops'])})", file=sys.stderr)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
