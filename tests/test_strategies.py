import math
from collections import Counter

import pytest
import torch
from datasets import Dataset

from persyn_hf.rewards import mix_rewards, normalize_per_prompt
from persyn_hf.select import STRATEGIES, SelectionConfig, select_teachers
from persyn_hf.teachers import TeacherSpec

NAN = float("nan")
TEACHERS = [
    TeacherSpec(name="A", model_id="org/a", family="Qwen2.5", size_b=1.5),
    TeacherSpec(name="B", model_id="org/b", family="Qwen2.5", size_b=72),
    TeacherSpec(name="C", model_id="org/c", family="Llama-3", size_b=70),
]
PROMPTS = Dataset.from_dict({"prompt_id": ["p0", "p1", "p2"], "prompt": ["x0", "x1", "x2"]})
# p0: quality A 1, B 3, C 2     learnability A -1, B -3, C -0.5
# p1: quality all 2 (constant)  learnability A -2, B -1, C -3
# p2: quality A 0, B 4, C NaN   learnability A -1, B -2, C -1
RAW = {
    "prompt_id": ["p0"] * 3 + ["p1"] * 3 + ["p2"] * 3,
    "teacher": ["A", "B", "C"] * 3,
    "quality": [1.0, 3.0, 2.0, 2.0, 2.0, 2.0, 0.0, 4.0, NAN],
    "learnability": [-1.0, -3.0, -0.5, -2.0, -1.0, -3.0, -1.0, -2.0, -1.0],
}


def nan_equal(got, want):
    return all((math.isnan(g) and math.isnan(w)) or g == pytest.approx(w) for g, w in zip(got, want))


@pytest.fixture
def scores():
    return mix_rewards(Dataset.from_dict(RAW), alpha=0.4)


def assigned(strategy, scores=None, **config):
    assignments = select_teachers(PROMPTS, scores, TEACHERS, SelectionConfig(strategy=strategy, **config))
    assert assignments.column_names == ["prompt_id", "teacher", "router_scores"]
    return dict(zip(assignments["prompt_id"], assignments["teacher"]))


def test_minmax_and_zscore_normalisation_per_prompt():
    ids = ["p", "p", "p", "q", "q", "r"]
    values = [1.0, 3.0, 2.0, 5.0, 5.0, math.inf]
    assert nan_equal(normalize_per_prompt(ids, values, "minmax"), [0.0, 1.0, 0.5, 0.5, 0.5, NAN])
    z = 1 / math.sqrt(2 / 3)  # population std of (1, 3, 2) is sqrt(2/3)
    assert nan_equal(normalize_per_prompt(ids, values, "zscore"), [-z, z, 0.0, 0.0, 0.0, NAN])
    with pytest.raises(ValueError, match=r"`normalization` must be one of \['minmax', 'zscore'\], got 'rank'"):
        normalize_per_prompt(ids, values, "rank")


def test_mix_rewards_matches_hand_computation(caplog):
    scores = mix_rewards(Dataset.from_dict(RAW), alpha=0.4)
    # p0: q (0, 1, .5), l (.8, 0, 1) -> .6q + .4l = (.32, .6, .7);  p1: q .5 each, l (.5, 1, 0) -> (.5, .7, .3)
    # p2: q (0, 1, NaN), l (1, 0, 1) -> (.4, .6, NaN)
    assert nan_equal(scores["reward"], [0.32, 0.6, 0.7, 0.5, 0.7, 0.3, 0.4, 0.6, NAN])
    assert "1 of 9 responses have no finite quality or learnability" in caplog.text
    only_quality = mix_rewards(scores, alpha=0.0)["reward"]
    assert nan_equal(only_quality, [0.0, 1.0, 0.5, 0.5, 0.5, 0.5, 0.0, 1.0, NAN])
    with pytest.raises(ValueError, match=r"`alpha` must be in \[0, 1\], got 1.5"):
        mix_rewards(scores, alpha=1.5)


def test_oracle_and_ablations_break_ties_by_teacher_order(scores):
    assert assigned("oracle", scores) == {"p0": "C", "p1": "B", "p2": "B"}
    # α = 1: learnability only; p2 ties A and C at 1.0 (C's missing quality does not matter) -> A
    assert assigned("persyn_wo_quality", scores) == {"p0": "C", "p1": "B", "p2": "A"}
    # α = 0: quality only; p1 is a three-way tie -> A
    assert assigned("persyn_wo_learnability", scores) == {"p0": "B", "p1": "A", "p2": "B"}


def test_oracle_leaves_out_prompts_without_any_reward(caplog):
    partial = mix_rewards(Dataset.from_dict({k: v[:6] for k, v in RAW.items()}))  # p2 was never scored
    assert assigned("oracle", partial) == {"p0": "C", "p1": "B"}
    assert "1 of 3 prompts have no finite `reward`: unassigned" in caplog.text


def test_strong_family_strong_and_mix(scores):
    assert assigned("strong", strong_teacher="C") == dict.fromkeys(["p0", "p1", "p2"], "C")
    assert assigned("strong", scores) == dict.fromkeys(["p0", "p1", "p2"], "B")  # mean quality A 1, B 3, C 2
    assert assigned("family_strong", student_family="Qwen2.5") == dict.fromkeys(["p0", "p1", "p2"], "B")
    assert assigned("family_strong", student_family="Llama-3") == dict.fromkeys(["p0", "p1", "p2"], "C")
    many = Dataset.from_dict({"prompt_id": list(range(600)), "prompt": ["x"] * 600})
    first = select_teachers(many, None, TEACHERS, SelectionConfig(strategy="mix", seed=1))
    again = select_teachers(many, None, TEACHERS, SelectionConfig(strategy="mix", seed=1))
    other = select_teachers(many, None, TEACHERS, SelectionConfig(strategy="mix", seed=2))
    assert first["teacher"] == again["teacher"] != other["teacher"]
    assert all(150 < count < 250 for count in Counter(first["teacher"]).values())
    assert first["router_scores"][0] == [] and first["prompt_id"][:3] == [0, 1, 2]


# one prompt: raw quality X 10, Y 8, Z 0; student loss X 4, Y 1, Z 1
CAR_SCORES = Dataset.from_dict(
    {"prompt_id": ["p0"] * 3, "teacher": ["X", "Y", "Z"], "quality": [10.0, 8.0, 0.0], "learnability": [-4.0, -1, -1]}
)
CAR_TEACHERS = [TeacherSpec(name=n, model_id=n, family="f", size_b=1) for n in "XYZ"]


def test_car_trades_quality_against_the_students_loss():
    def car(beta):
        config = SelectionConfig(strategy="car", car_beta=beta)
        return select_teachers(PROMPTS.select([0]), CAR_SCORES, CAR_TEACHERS, config)["teacher"]

    assert car(0.0) == ["X"]  # quality alone
    assert car(1.0) == ["Y"]  # CAR: X 10/(1+4) = 2, Y 8/(1+1) = 4, Z 0


def test_car_normalized_quality_is_min_max_whatever_the_normalization(caplog):
    config = SelectionConfig(strategy="car", car_quality="normalized", normalization="zscore")
    with caplog.at_level("INFO", logger="persyn_hf"):
        select_teachers(PROMPTS.select([0]), CAR_SCORES, CAR_TEACHERS, config)
    # min-max quality X 1, Y 0.8, Z 0: CAR X 1/(1+4) = 0.2, Y 0.8/(1+1) = 0.4, Z 0
    assert "CAR per teacher: {'X': 0.2, 'Y': 0.4, 'Z': 0.0}" in caplog.text


def test_errors_name_the_fix(scores):
    with pytest.raises(ValueError, match=r"Unknown `strategy` 'best'; choose one of \['persyn', 'oracle', 'strong'"):
        SelectionConfig(strategy="best")
    with pytest.raises(ValueError, match="`strategy: persyn` needs `router_repo_id`"):
        SelectionConfig(strategy="persyn")
    with pytest.raises(ValueError, match="`strategy: family_strong` needs `student_family`"):
        SelectionConfig(strategy="family_strong")
    with pytest.raises(
        ValueError, match=r"Strategy 'oracle' needs the scores dataset \(`scores`, written by `persyn-hf score`\)"
    ):
        assigned("oracle")
    with pytest.raises(
        ValueError, match=r"`strong_teacher` 'D' is not a declared teacher; choose one of \['A', 'B', 'C'\]"
    ):
        assigned("strong", strong_teacher="D")
    with pytest.raises(
        ValueError, match=r"No teacher of `student_family` 'Gemma-2'; the teachers' families: \['Llama-3', 'Qwen2.5'\]"
    ):
        assigned("family_strong", student_family="Gemma-2")
    with pytest.raises(
        ValueError, match=r"lacks column\(s\) \['learnability'\].*`learnability` comes from `persyn-hf score`"
    ):
        assigned("car", scores.remove_columns("learnability"))
    assert sorted(STRATEGIES) == sorted(
        ["persyn", "oracle", "strong", "family_strong", "mix", "car", "persyn_wo_quality", "persyn_wo_learnability"]
    )


def test_persyn_routes_with_a_saved_router(tmp_path, tiny_qwen2_path):
    from persyn_hf.router import PersynRouterModel

    torch.manual_seed(0)
    router, tokenizer = PersynRouterModel.from_backbone(tiny_qwen2_path, teachers=["A", "B", "C"])
    router.save_pretrained(tmp_path / "router")
    tokenizer.save_pretrained(tmp_path / "router")
    config = SelectionConfig(strategy="persyn", router_repo_id=str(tmp_path / "router"), batch_size=2)
    assignments = select_teachers(PROMPTS, None, TEACHERS, config)
    assert assignments["prompt_id"] == ["p0", "p1", "p2"]
    for teacher, scores in zip(assignments["teacher"], assignments["router_scores"]):
        assert len(scores) == 3 and teacher == "ABC"[scores.index(max(scores))]
    routed = assignments["teacher"][0]
    others = [t for t in TEACHERS if t.name != routed]
    with pytest.raises(ValueError, match=rf"routes to teacher\(s\) \['{routed}'\] that the teacher specs do not"):
        select_teachers(PROMPTS, None, others, config)
