"""Collectives per link type: hand-computed times, the fixed per-call cost, which link a measured
row crosses (NVLink, PCIe, the NIC), and which parameters such rows inform."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

import costmodel.roofline as rl
from costmodel.batch import Batch
from costmodel.efficiencies import Efficiencies
from costmodel.hardware import load_gpu
from costmodel.importers import COLUMNS, load_measured
from costmodel.measured import _Fixed, informed_params, predict_rows
from costmodel.model import CostModel

EFF = replace(Efficiencies(), comm_base_s=20e-6, comm_latency_s=5e-6, comm_bw_eff=0.5,
              p2p_bw_eff=0.8, net_latency_s=40e-6, net_bw_eff=0.25)


def _rows(**cols) -> pd.DataFrame:
    n = len(next(iter(cols.values())))
    base = {c: [0] * n for c in COLUMNS}
    base.update(source=["t"] * n, row_id=[f"t:{i}" for i in range(n)], gpu=["h100-sxm"] * n,
                model=[""] * n, kernel=["nccl"] * n, precision=["bf16"] * n,
                kv_dtype=["bf16"] * n)
    base.update(cols)
    return pd.DataFrame(base)[list(COLUMNS)]


def test_ring_allreduce_inside_a_node_by_hand():
    gpu = load_gpu("h100")  # NVLink 900 GB/s both ways: 450e9 B/s per direction
    msg = 64e6
    bw = 450e9 * 0.5
    ring = 7 * 5e-6 + 2 * 7 / 8 * msg / bw
    one_shot = 5e-6 * 3 + 7 / 8 * msg * 2 / bw
    assert rl.allreduce_time_s(msg, 8, gpu, EFF) == pytest.approx(20e-6 + min(ring, one_shot), rel=1e-12)


def test_allreduce_across_nodes_uses_the_network_parameters():
    gpu = load_gpu("h100")  # 8 per node, 50 GB/s network per GPU
    msg = 16e6
    bw = 50e9 * 0.25
    ring = 15 * 40e-6 + 2 * 15 / 16 * msg / bw
    one_shot = 40e-6 * 4 + 15 / 16 * msg * 2 / bw
    assert rl.allreduce_time_s(msg, 16, gpu, EFF) == pytest.approx(20e-6 + min(ring, one_shot), rel=1e-12)
    # the intra-node parameters do not touch it
    other = replace(EFF, comm_latency_s=1e-3, comm_bw_eff=0.05)
    assert rl.allreduce_time_s(msg, 16, gpu, other) == rl.allreduce_time_s(msg, 16, gpu, EFF)


def test_base_cost_is_paid_once_per_call_whatever_the_group():
    gpu = load_gpu("h100")
    for n in (2, 4, 8, 16):
        with_base = rl.allreduce_time_s(1e6, n, gpu, EFF)
        without = rl.allreduce_time_s(1e6, n, gpu, replace(EFF, comm_base_s=0.0))
        assert with_base - without == pytest.approx(20e-6, rel=1e-9)
    assert rl.allreduce_time_s(1e6, 1, gpu, EFF) == 0.0
    # a send/recv pairs two GPUs: no group synchronisation
    assert rl.p2p_time_s(1e6, 100e9, EFF) == pytest.approx(5e-6 + 1e6 / 80e9)
    assert rl.p2p_time_s(1e6, 100e9, EFF, internode=True) == pytest.approx(40e-6 + 1e6 / 25e9)


def test_send_recv_rows_by_hand():
    gpu = load_gpu("a100-80g")
    rows = _rows(op=["send_recv"] * 2, num_gpus=[2, 2], msg_bytes=[4e6] * 2,
                 kernel=["nccl", "nccl-internode"], gpu=["a100-80g"] * 2)
    got = predict_rows(rows, params={"a100-80g": EFF})
    want = [5e-6 + 4e6 / (gpu.nvlink_bw_bytes_s * 0.8),
            40e-6 + 4e6 / (gpu.network_bw_bytes_s * 0.25)]
    np.testing.assert_allclose(got, want, rtol=1e-12)
    assert rl.p2p_time_s(4e6, gpu.nvlink_bw_bytes_s, EFF) == pytest.approx(want[0], rel=1e-12)


def test_array_form_matches_the_scalar_on_both_link_types():
    gpu = load_gpu("h100")
    msg = np.random.default_rng(3).uniform(1e3, 1e9, 40)
    for n in (2, 8, 16, 32):
        inter = n > gpu.gpus_per_node
        bw = rl.link_bw_bytes_s(gpu, n)
        v = rl.collective_time_s_v("all_reduce", msg, n, bw, EFF, inter)
        s = [rl.allreduce_time_s(float(x), n, gpu, EFF) for x in msg]
        np.testing.assert_allclose(v, s, rtol=1e-12)


def test_measured_rows_pick_their_link():
    gpu = load_gpu("a100-80g")
    rows = _rows(op=["all_reduce"] * 3, num_gpus=[4, 4, 2], msg_bytes=[8e6] * 3,
                 kernel=["nccl", "nccl-pcie", "nccl-internode"], gpu=["a100-80g"] * 3)
    got = predict_rows(rows, params={"a100-80g": EFF})
    nv = 20e-6 + min(3 * 5e-6 + 1.5 * 8e6 / (gpu.nvlink_bw_bytes_s * 0.5),
                     5e-6 * 2 + 0.75 * 8e6 * 2 / (gpu.nvlink_bw_bytes_s * 0.5))
    pcie = 20e-6 + min(3 * 5e-6 + 1.5 * 8e6 / (gpu.pcie_bw_bytes_s * 0.5),
                       5e-6 * 2 + 0.75 * 8e6 * 2 / (gpu.pcie_bw_bytes_s * 0.5))
    net = 20e-6 + min(40e-6 + 8e6 / (gpu.network_bw_bytes_s * 0.25),
                      40e-6 + 0.5 * 8e6 * 2 / (gpu.network_bw_bytes_s * 0.25))
    np.testing.assert_allclose(got, [nv, pcie, net], rtol=1e-12)


def test_informed_params_follow_the_link_type():
    intra = _rows(op=["all_reduce"], num_gpus=[8], msg_bytes=[1e6])
    inter = _rows(op=["all_reduce"], num_gpus=[2], msg_bytes=[1e6], kernel=["nccl-internode"])
    assert set(informed_params(intra)) == {"comm_latency_s", "comm_bw_eff", "comm_base_s"}
    assert set(informed_params(inter)) == {"net_latency_s", "net_bw_eff", "comm_base_s"}
    p2p = _rows(op=["send_recv"], num_gpus=[2], msg_bytes=[1e6])
    assert set(informed_params(p2p)) == {"comm_latency_s", "p2p_bw_eff"}
    big = _rows(op=["all_reduce"], num_gpus=[16], msg_bytes=[1e6])  # more GPUs than a node
    assert "net_bw_eff" in informed_params(big) and "comm_bw_eff" not in informed_params(big)


def test_pipeline_send_across_nodes_costs_the_network_link():
    # 70B at TP8 x PP2 on 8-GPU nodes: the stages talk over the NIC, at the network parameters
    def send(eff):
        cm = CostModel("llama-3.1-70b", "h100", tp=8, pp=2, calibration=_Fixed(eff))
        return next(o.time_s for o in cm.step(Batch(prefill=((2048, 0),))).ops if o.name == "pp_send")

    got = send(EFF)
    assert got == pytest.approx(40e-6 + 2048 * 8192 * 2 / (50e9 * 0.25), rel=1e-9)
    assert send(replace(EFF, comm_bw_eff=0.05)) == got  # NVLink parameters do not apply
    # TP4 x PP2 fits one node: NVLink at the intra-node parameters
    cm = CostModel("llama-3.1-70b", "h100", tp=4, pp=2, calibration=_Fixed(EFF))
    t = next(o.time_s for o in cm.step(Batch(prefill=((2048, 0),))).ops if o.name == "pp_send")
    assert t == pytest.approx(5e-6 + 2048 * 8192 * 2 / (450e9 * 0.8), rel=1e-9)


def test_vidur_pairwise_nvlink_groups_of_four_cross_pcie(shared):
    f = shared / "data/profiles/vidur/network/a100_pairwise_nvlink/all_reduce.csv"
    rows = load_measured(f, "vidur")
    by_n = rows.groupby("num_gpus")["kernel"].unique().to_dict()
    assert list(by_n[2]) == ["nccl"] and list(by_n[4]) == ["nccl-pcie"]
    dgx = load_measured(shared / "data/profiles/vidur/network/a100_dgx/all_reduce.csv", "vidur")
    assert "nccl-pcie" not in set(dgx["kernel"])
    assert {"nccl", "nccl-internode"} == set(dgx["kernel"])
