"""The GPU autotuning set-up, checked without a GPU: each kernel's shared-memory pruning reads the
arguments its launch passes, drops what cannot fit, and SERVEPLAN_AUTOTUNE=first keeps one
config. (The autotuned launches themselves only run compiled; the interpreter runs one config.)"""

from __future__ import annotations

import torch
import triton

from validate.kernels import _tuning, flash_attn, gemm, gemm_persistent, gemm_splitk


def test_prune_drops_configs_that_cannot_fit_and_keeps_one_when_asked(monkeypatch):
    cfgs = [triton.Config({"B": b}, num_stages=2) for b in (512, 64, 128)]
    prune = _tuning.smem_prune(lambda c, a: c["B"] * 1024 * c["num_stages"])
    assert [c.kwargs["B"] for c in prune(cfgs, {})] == [64]
    big = [triton.Config({"B": b}, num_stages=2) for b in (4096, 2048)]
    assert [c.kwargs["B"] for c in prune(big, {})] == [2048]  # none fits: the smallest runs
    small = _tuning.smem_prune(lambda c, a: 1.0)
    assert len(small(cfgs, {})) == 3
    monkeypatch.setenv("SERVEPLAN_AUTOTUNE", "first")
    assert [c.kwargs["B"] for c in small(cfgs, {})] == [512]


def _names(configs):
    return [(c.kwargs.get("BLOCK_M"), c.kwargs.get("BLOCK_N"), c.kwargs.get("BLOCK_K"), c.num_stages)
            for c in configs]


def test_each_kernels_prune_reads_its_launch_arguments():
    """The hooks see the named arguments of a launch: these are the names the wrappers pass."""
    from triton.tools.tensor_descriptor import TensorDescriptor

    bf, f32 = torch.bfloat16, torch.float32
    a = torch.empty(256, 512, dtype=bf)
    tiled = gemm._gemm_autotuned.early_config_prune
    kept = tiled(gemm._gpu_configs(), {"a_ptr": a})
    assert 0 < len(kept) <= len(gemm._gpu_configs())
    assert len(tiled(gemm._gpu_configs(), {"a_ptr": a.float()})) < len(kept)  # fp32 tiles are twice the bytes
    desc = TensorDescriptor.from_tensor(a, [32, 32])
    pers = gemm_persistent._persistent_autotuned.early_config_prune
    kept = pers(gemm_persistent._configs(), {"a_desc": desc, "c_desc": desc})
    assert (128, 256, 128, 3) not in _names(kept)  # 3 x 48 KB + 64 KB of bf16 does not fit
    split = gemm_splitk._splitk_autotuned.early_config_prune
    assert split(gemm_splitk._configs(), {"a_ptr": a}, BLOCK_M=64)
    q = torch.empty(4, 8, 128, dtype=f32)
    fl = flash_attn._flash_autotuned.early_config_prune
    kept32 = fl(flash_attn._configs(), {"q_ptr": q}, BLOCK_D=128)
    kept16 = fl(flash_attn._configs(), {"q_ptr": q.to(bf)}, BLOCK_D=128)
    assert 0 < len(kept32) < len(kept16)


def test_the_kernel_table_runs_its_families_at_toy_sizes():
    """`validate.kernel_bench` (gpu_check's Triton-vs-reference table) at toy sizes: every family
    has a case, each case's Triton and reference agree, and the verdicts follow the targets."""
    from validate import kernel_bench as kb
    from validate.kernels import interpreting
    from validate.timing import Timer

    dev = "cpu" if interpreting() else "cuda"
    cs = kb.cases(dev, fp8=False, scale="tiny")
    assert {c.family for c in cs} == set(kb.TARGETS)
    for c in cs:
        if c.reference is not None:
            got, want = c.triton[0]().float(), c.reference[0]().float()
            if want.shape != got.shape:  # SDPA's [B, H, N, D] against the packed [B N, H, D]
                want = want.transpose(1, 2).reshape(got.shape)
            assert float((got - want).abs().max()) <= 3e-2 * float(want.abs().max()), c.label
    rows = kb.run(cs, Timer(dev, warmup=0, min_reps=1, reps=1), hbm_bw_bytes_s=1e12, log=lambda s: None)
    assert all("error" not in r for r in rows)
    for r in rows:
        op, target = kb.TARGETS[r["family"]]
        assert r["ok"] == (r["value"] >= target if op == ">=" else r["value"] <= target)
    summary = kb.summarise(rows)
    assert set(summary) == set(kb.TARGETS) and all(s["cases"] == 1 for s in summary.values())
