"""Static-batch runs against Splitwise's measured Llama-2-70B on A100-80GB (perf_model_a100.csv).

Each measured configuration (TP, prompt size P, batch B, generated tokens T) is simulated as B
requests arriving together with a token budget of B x P: one prefill iteration, then T - 1
decode iterations. Splitwise's `prompt_time` is the batch's prefill; its `e2e_time` is
prefill + (T - 1) decode iterations. The simulator adds nothing of its own to these times
(test_timeline checks that it sums the cost model's iterations exactly), so the error here is
the cost model's: with the uncalibrated roofline defaults at the time of writing it measured
a MAPE of 0.28 for prefill and 0.25 for E2E over 38 configurations (TP 2 best, TP 8 worst:
there the measured decode iteration barely improves on TP 4 while the model predicts it
should). The bounds are that accuracy plus a margin; tighten them as the cost model improves.

Left out: rows with P + T beyond Llama-2's 4,096-token context (the simulator rejects them,
checked below), T > 512 (the measured E2E stops growing: generation ended early), and TP 2 at
batch 64 (prefill 8x faster than batch 32 while E2E is 9x slower: not a static batch).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from sim import Deployment, PoolConfig, parse_workload, simulate

PREFILL_MAPE_MAX = 0.35
E2E_MAPE_MAX = 0.35


def _simulate(tp, P, B, T):
    budget = max(B * P, 2048)
    dep = Deployment(model="llama-2-70b", pools=(PoolConfig(
        role="colocated", gpu="a100-80g", tp=tp, max_num_seqs=B, max_num_batched_tokens=budget,
        chunk_size=budget, gpu_memory_utilization=0.95),))
    return simulate(dep, parse_workload(f"fixed:{P},{T}", concurrency=B), num_requests=B, seed=0,
                    keep_requests=True).requests


def test_static_batches_match_splitwise(shared):
    df = pd.read_csv(shared / "data/profiles/splitwise/perf_model_a100.csv")
    df = df[df.model == "llama2-70b"]
    keys = ["tensor_parallel", "prompt_size", "batch_size", "token_size"]
    med = df.groupby(keys)[["prompt_time", "e2e_time"]].median().reset_index()
    rows = []
    for r in med.itertuples(index=False):
        tp, P, B, T = int(r.tensor_parallel), int(r.prompt_size), int(r.batch_size), int(r.token_size)
        if T > 512 or (tp == 2 and B == 64):
            continue
        f = _simulate(tp, P, B, T)
        if P + T > 4096:
            assert f.rejected.all()
            continue
        assert not f.rejected.any()
        rows.append((tp, P, B, T, f.first_token_s.max() * 1e3 / r.prompt_time - 1,
                     f.finish_s.max() * 1e3 / r.e2e_time - 1))
    err = pd.DataFrame(rows, columns=["tp", "P", "B", "T", "prefill_err", "e2e_err"])
    assert len(err) >= 30
    mape_pre = float(np.abs(err.prefill_err).mean())
    mape_e2e = float(np.abs(err.e2e_err).mean())
    print(f"\nSplitwise llama2-70b A100: prefill MAPE {mape_pre:.3f}, e2e MAPE {mape_e2e:.3f} "
          f"over {len(err)} configurations")
    assert mape_pre < PREFILL_MAPE_MAX
    assert mape_e2e < E2E_MAPE_MAX


@pytest.mark.parametrize("tp", [2, 4, 8])
def test_static_batch_prefill_scales_with_tokens(shared, tp):
    a = _simulate(tp, 512, 1, 2).first_token_s.max()
    b = _simulate(tp, 512, 8, 2).first_token_s.max()
    assert 5 < b / a < 9  # 8x the tokens, less than 8x the time (fixed costs amortised)
