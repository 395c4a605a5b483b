"""Speculative acceptance from published tau: the truncated-geometric inversion and the lookup."""

from __future__ import annotations

import pytest

from planner.spec_table import DEFAULT_ACCEPTANCE, acceptance_from_tau, lookup_acceptance

HEADER = "method,target_model,draft,dataset_task,num_draft_tokens_or_tree,mean_accepted_tokens_tau\n"


@pytest.mark.parametrize("a, k", [(0.5, 3), (0.8, 7), (0.3, 1)])
def test_inversion_of_the_mean_tokens_per_step(a, k):
    tau = (1 - a ** (k + 1)) / (1 - a)
    assert acceptance_from_tau(tau, k) == pytest.approx(a, abs=1e-9)


def test_same_target_rows_win_and_missing_k_reads_as_five(tmp_path):
    p = tmp_path / "acc.csv"
    # k=1, tau 1.5 -> a = 0.5; k=3, tau 1.875 -> a = 0.5; other target: k=5 assumed
    p.write_text(HEADER
                 + "n-gram (vLLM),Llama-3.1-8B-Instruct,x,t,k=1 (chain),1.5\n"
                 + "n-gram (vLLM),Llama-3.1-8B-Instruct,x,t,k=3 (chain),1.875\n"
                 + "PLD,Vicuna-7B-v1.3,x,t,,1.9375\n")
    acc = lookup_acceptance("ngram", "llama-3.1-8b", p)
    assert acc.a == pytest.approx(0.5, abs=1e-3) and "llama-3.1-8b rows" in acc.source
    other = lookup_acceptance("ngram", "llama-3.1-70b", p)  # median over all rows
    assert other.a == pytest.approx(0.5, abs=1e-3) and "none for llama-3.1-70b" in other.source


def test_defaults_without_a_table(tmp_path):
    acc = lookup_acceptance("draft", "llama-3.1-8b", tmp_path / "missing.csv")
    assert acc.a == DEFAULT_ACCEPTANCE["draft"] and "default" in acc.source
