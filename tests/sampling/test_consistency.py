"""Prefix self-consistency: agreement numbers on hand-made samples, the auto prefix-length rule."""

import math

import pandas as pd
import pytest

from upft_ray.config import ConfigError, load_config
from upft_ray.sampling.consistency import agreement_table, choose_prefix_tokens, prefix_agreement, summarize

# Four samples of one question; the answer is known by construction.
SAMPLES = [[1, 2, 3, 4], [1, 2, 3, 9], [1, 2, 7, 7], [5, 6]]


def test_agreement_on_hand_made_samples():
    t1 = prefix_agreement(SAMPLES, 1)
    assert (t1["modal_share"], t1["distinct_prefixes"], t1["pairwise_agreement"]) == (0.75, 2, 0.5)  # 3*2/(4*3)
    t3 = prefix_agreement(SAMPLES, 3)
    assert (t3["modal_share"], t3["distinct_prefixes"]) == (0.5, 3)
    assert t3["pairwise_agreement"] == pytest.approx(2 / 12)
    t4 = prefix_agreement(SAMPLES, 4)
    assert (t4["modal_share"], t4["distinct_prefixes"], t4["pairwise_agreement"]) == (0.25, 4, 0.0)
    assert math.isnan(t4["coverage"])  # ungraded


def test_coverage_and_accuracy_inside_and_outside_the_modal_prefix():
    correct = [True, True, False, False]
    t1 = prefix_agreement(SAMPLES, 1, correct)
    assert t1["coverage"] == 1.0 and t1["modal_accuracy"] == pytest.approx(2 / 3) and t1["other_accuracy"] == 0.0
    t3 = prefix_agreement(SAMPLES, 3, correct)  # modal group {[1,2,3,...] x2}: both correct
    assert t3["coverage"] == 1.0 and t3["modal_accuracy"] == 1.0 and t3["other_accuracy"] == 0.0
    assert math.isnan(prefix_agreement(SAMPLES, 2, [False] * 4)["coverage"])
    with pytest.raises(ValueError, match="3 correctness flags for 4 samples"):
        prefix_agreement(SAMPLES, 1, [True] * 3)


def test_table_and_summary_average_over_questions():
    df = pd.DataFrame({"question_id": ["a"] * 4 + ["b"] * 2,
                       "response_token_ids": SAMPLES + [[1, 1], [1, 1]]})
    table = agreement_table(df, [1, 2])
    assert len(table) == 4 and set(table["question_id"]) == {"a", "b"}
    summary = summarize(table)
    assert list(summary["prefix_tokens"]) == [1, 2] and list(summary["questions"]) == [2, 2]
    assert summary.loc[0, "modal_share"] == pytest.approx((0.75 + 1.0) / 2)


def _summary(shares):
    return pd.DataFrame({"prefix_tokens": list(shares), "modal_share": list(shares.values())})


def test_auto_rule_takes_the_longest_t_a_majority_still_shares():
    t, reason = choose_prefix_tokens(_summary({1: 0.95, 4: 0.8, 8: 0.62, 16: 0.41, 32: 0.2}), 0.5)
    assert t == 8 and "t=8" in reason and "0.62" in reason and ">= 0.5" in reason
    assert choose_prefix_tokens(_summary({8: 0.9, 16: 0.3, 4: 0.95}), 0.5)[0] == 8  # order of rows irrelevant
    t, reason = choose_prefix_tokens(_summary({2: 0.3, 4: 0.2}), 0.5)
    assert t == 2 and "shortest" in reason


def test_prefix_tokens_accepts_auto_and_nothing_else_that_is_not_a_positive_int():
    assert load_config(None, ["sample.prefix_tokens=auto"]).sample.prefix_tokens == "auto"
    assert load_config(None, ["sample.prefix_tokens=16"]).sample.prefix_tokens == 16
    with pytest.raises(ConfigError) as err:
        load_config(None, ["sample.prefix_tokens=automatic", "analyze.prefix_lengths=[0, 2]",
                           "analyze.rollout_positions=[1.5]"])
    text = str(err.value)
    assert "sample.prefix_tokens: expected int or one of ['auto'], got 'automatic'" in text
    assert "analyze.prefix_lengths" in text and "analyze.rollout_positions" in text
