"""SLO targets: the defaults a simulate request falls back to, defined once (sim.slo)."""

from __future__ import annotations

import pytest

from costmodel.errors import ServePlanError
from sim.slo import DEFAULT_SLO, SLO, requested_slo


def test_a_request_naming_no_target_leaves_the_slo_to_the_simulator():
    assert requested_slo() is None
    assert requested_slo(None, None, 99.0, 0.5) is None


def test_a_missing_target_takes_its_default():
    assert requested_slo(0.5) == SLO(0.5, DEFAULT_SLO.tpot_s)
    assert requested_slo(tpot_s=0.02, percentile=99.0, attainment=0.5) == SLO(
        DEFAULT_SLO.ttft_s, 0.02, 99.0, 0.5)


def test_bad_targets_are_named():
    with pytest.raises(ServePlanError, match="expected > 0"):
        requested_slo(0.0, 0.1)
    with pytest.raises(ServePlanError, match="percentile"):
        SLO(1.0, 0.1, percentile=100.0)
