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
