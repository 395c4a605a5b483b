"""How a plan differs from the runs behind a calibration's interval (costmodel.run_domain)."""

from __future__ import annotations

from costmodel.run_domain import model_name, outside, weights_dtype

DOMAIN = {"engines": ["sglang"], "models": ["qwen3-32b"], "modes": ["colocated"], "tp": [2, 4],
          "precisions": ["bf16"], "kv_dtypes": ["bf16"], "input_tokens": [1024.0, 2048.0],
          "output_tokens": [256.0, 256.0]}


def _outside(domain=DOMAIN, model="qwen3-32b", pools=(("colocated", 2, 1, False, "bf16", "auto"),),
             isl=1500.0, osl=256.0, engine="sglang"):
    return outside(domain, engine=engine, model=model, mode="colocated", pools=pools,
                   input_tokens=isl, output_tokens=osl)


def test_a_plan_like_the_runs_gets_no_line_whatever_the_model_is_called():
    assert _outside() == []
    assert _outside(model="Qwen/Qwen3-32B") == []  # the Hugging Face id of the same preset
    assert model_name("Qwen/Qwen3-32B") == "qwen3-32b" and model_name("My/Unknown-Model") == "my/unknown-model"
    assert _outside(isl=2200.0, osl=240.0) == []  # within 10% of the runs' lengths


def test_each_difference_is_one_line():
    lines = _outside(model="llama-3.1-8b", engine="vllm", isl=8000.0, osl=1000.0,
                     pools=(("prefill", 8, 1, False, "fp8", "fp8"), ("decode", 2, 4, True, "bf16", "auto")))
    assert lines == ["engine vllm; the runs: sglang", "model llama-3.1-8b; the runs: qwen3-32b",
                     "TP 8 (prefill); the runs: TP 2, 4", "precision fp8 (prefill); the runs: bf16",
                     "KV cache fp8 (prefill); the runs: bf16",
                     "PP 4 (decode); the runs: none (runs calibrate without it)",
                     "speculative decoding (decode); the runs: none (runs calibrate without it)",
                     "mean prompt 8000 tokens; the runs: 1024-2048", "mean output 1000 tokens; the runs: 256"]


def test_auto_precision_is_the_checkpoint_s_own():
    assert weights_dtype("deepseek-v3", "auto") == "fp8_block" and weights_dtype("qwen3-32b", "auto") == "bf16"
    assert weights_dtype("deepseek-v3", "bf16") == "bf16"
    fp8 = dict(DOMAIN, models=["deepseek-v3"], precisions=["fp8_block"])
    assert _outside(fp8, model="deepseek-v3", pools=(("colocated", 2, 1, False, "auto", "auto"),)) == []
