"""The demo report's statistics against hand computations."""

import math

import numpy as np
import pytest

from persyn_hf.demo.analysis import (
    hit_rows,
    line_chart,
    paired_difference,
    rank_correlation,
    router_baselines,
    scatter_chart,
    seed_summary,
)

NAN = math.nan


def test_seed_summary_keeps_every_seed():
    summary = seed_summary([0.5, 0.7, 0.6])
    assert summary["mean"] == pytest.approx(0.6)
    assert summary["std"] == pytest.approx(math.sqrt(((0.1) ** 2 + (0.1) ** 2) / 2))  # the sample std
    assert seed_summary([0.5])["std"] == 0.0
    assert summary["seeds"] == [0.5, 0.7, 0.6]


def test_paired_difference_resamples_seeds_and_problems():
    ours = [{"a": True, "b": True, "c": False, "d": True}, {"a": True, "b": False, "c": False, "d": True}]
    theirs = [{"a": False, "b": True, "c": False, "d": False}, {"a": False, "b": True, "c": False, "d": True}]
    # gaps per seed: (1, 0, 0, 1) and (1, -1, 0, 0); mean .25
    result = paired_difference(ours, theirs, num_resamples=4000, seed=1)
    assert result["difference"] == pytest.approx(0.25)
    assert result["num_problems"] == 4
    low, high = result["ci95"]
    assert -0.5 <= low < 0.25 < high <= 1.0  # every resampled mean lies within the gaps' range
    same = paired_difference(ours, ours)
    assert same["difference"] == 0.0 and same["ci95"] == [0.0, 0.0]
    # one problem, right on one seed only: averaged over seeds it would be a fixed 0.5; drawing the seeds gives
    # 0 (seed 1 twice), 0.5 or 1 (seed 0 twice)
    one_problem = paired_difference([{"a": True}, {"a": False}], [{"a": False}] * 2, num_resamples=4000)
    assert one_problem["difference"] == 0.5 and one_problem["ci95"] == [0.0, 1.0]


def test_hit_rows_count_strictly_higher_rewards_only():
    rewards = np.array([[0.1, 0.9, 0.5], [0.7, 0.7, NAN], [0.2, NAN, 0.1]])
    assert hit_rows(np.array([2, 0, 1]), rewards, 1).tolist() == [False, True, False]  # a tie is a hit; NaN never
    assert hit_rows(np.array([2, 0, 1]), rewards, 2).tolist() == [True, True, False]


def test_router_baselines_by_hand():
    # training prompts: teacher 1 is best twice, teacher 0 once -> the majority class is teacher 1
    train = np.array([[0.1, 0.9, 0.2], [0.8, 0.3, 0.1], [0.0, 0.6, 0.5]])
    evaluation = np.array([[0.9, 0.1, 0.5], [0.2, 0.7, NAN]])
    levels = router_baselines(train, evaluation, ks=(1, 2))
    assert levels["majority_teacher"] == 1
    assert levels["majority_hit_at_1"] == pytest.approx(0.5)  # wrong on the first prompt, right on the second
    assert levels["majority_hit_at_2"] == pytest.approx(0.5)  # teacher 1 is last of three on the first prompt
    # a random teacher among those with a reward: first prompt 1/3 (top-1) and 2/3 (top-2); second 1/2 and 2/2
    assert levels["chance_hit_at_1"] == pytest.approx((1 / 3 + 1 / 2) / 2)
    assert levels["chance_hit_at_2"] == pytest.approx((2 / 3 + 1) / 2)


def test_line_chart_is_a_png(tmp_path):
    path = line_chart(
        [0, 0.5, 1], {"acc": [0.1, 0.3, 0.2], "acc std": [0.01, 0.02, 0.0]}, tmp_path / "a.png", "t", "x", "y"
    )
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_scatter_chart_is_a_png(tmp_path):
    points = [{"x": 0.1, "y": 0.2, "label": "a", "group": "g"}, {"x": 0.3, "y": 0.1, "label": "b", "group": "h"}]
    path = scatter_chart(points, tmp_path / "s.png", "t", "x", "y")
    assert path == tmp_path / "s.png" and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_rank_correlation_by_hand():
    assert rank_correlation([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert rank_correlation([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    # ranks (1, 2, 3) against (1, 3, 2): r = 1 - 6 * (0 + 1 + 1) / (3 * 8) = 0.5
    assert rank_correlation([0.1, 0.2, 0.3], [5, 9, 7]) == pytest.approx(0.5)
