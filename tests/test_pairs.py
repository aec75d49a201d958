import math

import pytest
from datasets import Dataset

from persyn_hf.pairs import pairwise_export, router_rows

TEACHERS = ["t0", "t1", "t2", "t3"]
NAN = float("nan")


def _prompts(n):
    return Dataset.from_dict({"prompt_id": [f"p{i}" for i in range(n)], "prompt": [f"question {i}" for i in range(n)]})


def _full_scores(n, teachers=TEACHERS):
    rows = [(f"p{i}", t, float((i * 7 + j * 3) % 5)) for i in range(n) for j, t in enumerate(teachers)]
    return Dataset.from_dict({k: list(v) for k, v in zip(("prompt_id", "teacher", "reward"), zip(*rows))})


def test_router_rows_order_rewards_by_teacher_list_with_nan_for_missing():
    scores = Dataset.from_dict(
        {"prompt_id": ["p1", "p1", "p0", "p2"], "teacher": ["t2", "t0", "t1", "t3"], "reward": [0.5, 0.25, 1.0, 2.0]}
    )
    rows = router_rows(scores, _prompts(3), TEACHERS)
    assert rows["prompt_id"] == ["p0", "p1", "p2"]
    assert rows["prompt"] == ["question 0", "question 1", "question 2"]
    expected = [[NAN, 1.0, NAN, NAN], [0.25, NAN, 0.5, NAN], [NAN, NAN, NAN, 2.0]]
    for got, want in zip(rows["teacher_rewards"], expected):
        assert [(math.isnan(g), g if not math.isnan(g) else 0) for g in got] == [
            (math.isnan(w), w if not math.isnan(w) else 0) for w in want
        ]


def test_router_rows_take_last_user_message_and_drop_unrewarded_prompts(caplog):
    prompts = Dataset.from_dict(
        {
            "prompt_id": ["a", "b"],
            "messages": [
                [{"role": "system", "content": "be brief"}, {"role": "user", "content": "first"}],
                [
                    {"role": "user", "content": "old"},
                    {"role": "assistant", "content": "x"},
                    {"role": "user", "content": "new"},
                ],
            ],
        }
    )
    scores = Dataset.from_dict(
        {"prompt_id": ["a", "b", "b"], "teacher": ["t0", "t0", "t1"], "reward": [float("inf"), 0.1, 0.2]}
    )
    rows = router_rows(scores, prompts, ["t0", "t1"])
    assert rows["prompt_id"] == ["b"] and rows["prompt"] == ["new"]
    assert rows["teacher_rewards"] == [[0.1, 0.2]]
    assert "1 of 3 `reward` values are missing, NaN or infinite" in caplog.text
    assert "1 prompt(s) have no finite reward" in caplog.text


def test_router_rows_errors_name_the_problem():
    scores = _full_scores(2)
    with pytest.raises(ValueError, match=r"teacher\(s\) \['t3'\] that are not in the teacher list"):
        router_rows(scores, _prompts(2), TEACHERS[:3])
    with pytest.raises(
        ValueError, match=r"1 scored prompt_id\(s\) are not in the prompts dataset \(first: \['p1'\]\)"
    ):
        router_rows(scores, _prompts(1), TEACHERS)
    with pytest.raises(ValueError, match=r"lacks column\(s\) \['reward'\].*`reward` comes from `persyn-hf score`"):
        router_rows(scores.remove_columns("reward"), _prompts(2), TEACHERS)
    with pytest.raises(ValueError, match=r"repeats 1 \(prompt_id, teacher\) value\(s\): \('p0', 't0'\)"):
        router_rows(
            Dataset.from_dict({"prompt_id": ["p0"] * 2, "teacher": ["t0"] * 2, "reward": [1.0, 2.0]}),
            _prompts(1),
            TEACHERS,
        )


def test_pairwise_export_gives_n_times_n_choose_2_pairs_with_labels():
    n_prompts = 5
    rows = router_rows(_full_scores(n_prompts), _prompts(n_prompts), TEACHERS)
    pairs = pairwise_export(rows, TEACHERS)
    assert len(pairs) == n_prompts * math.comb(len(TEACHERS), 2) == 30
    # p0 rewards: t0=0, t1=3, t2=1, t3=4  ->  b wins in (t0,t1) (t0,t2) (t0,t3) (t1,t3) (t2,t3); a wins in (t1,t2)
    p0 = pairs.filter(lambda r: r["prompt_id"] == "p0")
    assert list(zip(p0["teacher_a"], p0["teacher_b"], p0["label"])) == [
        ("t0", "t1", 1),
        ("t0", "t2", 1),
        ("t0", "t3", 1),
        ("t1", "t2", 0),
        ("t1", "t3", 1),
        ("t2", "t3", 1),
    ]


def test_pairwise_export_skips_missing_teachers():
    rows = Dataset.from_dict({"prompt_id": ["p"], "teacher_rewards": [[1.0, NAN, 0.5]]})
    pairs = pairwise_export(rows, ["a", "b", "c"])
    assert pairs.to_list() == [{"prompt_id": "p", "teacher_a": "a", "teacher_b": "c", "label": 0}]


def test_pairwise_export_holds_exactly_the_pairs_the_router_trains_on():
    from persyn_hf.router_trainer import count_pairs

    # a tie, a difference below float32 precision (a tie to the router's loss too), a missing teacher
    rewards = [[0.5, 0.5, 0.2], [0.1, 0.1 + 1e-12, 0.3], [NAN, 0.4, 0.9]]
    rows = Dataset.from_dict({"prompt_id": ["p", "q", "r"], "teacher_rewards": rewards})
    pairs = pairwise_export(rows, ["a", "b", "c"])
    assert len(pairs) == count_pairs(rewards) == 5
    assert list(zip(pairs["prompt_id"], pairs["teacher_a"], pairs["teacher_b"], pairs["label"])) == [
        ("p", "a", "c", 0), ("p", "b", "c", 0), ("q", "a", "c", 1), ("q", "b", "c", 1), ("r", "b", "c", 1),
    ]  # fmt: skip
