"""Dataset cards and the allocation chart, on constructed figures whose rendering is known."""

import matplotlib.colors
import matplotlib.image
import pytest
import yaml
from datasets import Dataset
from huggingface_hub import DatasetCardData

from persyn_hf.cards import allocation_chart, parallel_dataset_card, personalized_dataset_card, teacher_colors
from persyn_hf.teachers import TeacherSpec

TEACHERS = [
    TeacherSpec(name="A-1B", model_id="org/A-1B", family="A", size_b=1, generation={"temperature": 0.6}),
    TeacherSpec(name="A-70B", model_id="org/A-70B", family="A", size_b=70),
    TeacherSpec(name="A-7B", model_id="org/A-7B", family="A", size_b=7),
    TeacherSpec(name="B-R1", model_id="org/B-R1", family="B", size_b=8, long_cot=True),
]
COST = {"routed_responses": 4, "gts_responses": 16, "routed_completion_tokens": 100, "gts_completion_tokens": 500}


def front_matter(card) -> tuple[dict, str]:
    _, header, body = str(card).split("---", 2)
    metadata = yaml.safe_load(header)
    DatasetCardData(**metadata)  # valid card data
    return metadata, body


def luminance(rgba) -> float:
    r, g, b = matplotlib.colors.to_rgb(rgba)
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def test_colors_share_a_family_and_darken_with_size():
    colors = teacher_colors(TEACHERS)
    assert luminance(colors["A-1B"]) > luminance(colors["A-7B"]) > luminance(colors["A-70B"])
    assert len({colors[name] for name in colors}) == 4
    blues, oranges = colors["A-7B"], colors["B-R1"]
    assert blues[2] > blues[0] and oranges[0] > oranges[2]  # family A is blue, family B orange


def test_allocation_chart_is_a_png(tmp_path):
    path = allocation_chart({"A-1B": 3, "B-R1": 1}, TEACHERS, tmp_path / "chart.png", "persyn")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # 4 teachers: max(6, 0.45 * 4 + 3) x 4.5 inches at 120 dpi.
    assert matplotlib.image.imread(path).shape == (540, 720, 4)


def test_parallel_card_reports_attempts_and_correctness():
    generations = Dataset.from_dict(
        {
            "prompt_id": ["p0", "p1", "p0", "p1"],
            "teacher": ["A-1B", "A-1B", "B-R1", "B-R1"],
            "num_samples": [4, 2, 2, 1],
            "correct": [True, False, True, True],
        }
    )
    card = parallel_dataset_card(
        repo_id="user/math",
        pretty_name="Tiny math",
        source_dataset="org/problems",
        seed=7,
        teachers=[TEACHERS[0], TEACHERS[3]],
        generations=generations,
        num_prompts=2,
        responses_note="Responses: generated.",
        subsets=[{"name": "generations", "splits": "`train`", "row": "a response"}],
        generation_parameters=True,
        rejection_sampling="4 from small teachers",
        cost={"generations": 9, "gts_generations": 12},
    )
    metadata, body = front_matter(card)
    assert metadata["pretty_name"] == "Tiny math" and metadata["size_categories"] == ["n<1K"]
    assert metadata["persyn"]["teachers"]["A-1B"] == {"responses": 2, "attempts": 6, "share_correct": 0.5}
    assert "| A-1B | [org/A-1B](https://huggingface.co/org/A-1B) | A | 1 | no | 2 | 6 | 50.0% |" in body
    assert "| B-R1 | [org/B-R1](https://huggingface.co/org/B-R1) | B | 8 | yes | 2 | 3 | 100.0% |" in body
    assert '| A-1B | {"temperature": 0.6} |' in body
    assert "2 drawn from [org/problems](https://huggingface.co/datasets/org/problems) with seed `7`" in body
    assert '"gts_generations": 12' in body and "## Rejection sampling" in body


def test_personalized_card_merges_strategies():
    first = personalized_dataset_card(
        repo_id="user/sft",
        student="/models/student",
        strategy="persyn",
        allocation={"A-1B": 3, "A-70B": 0, "A-7B": 0, "B-R1": 1},
        cost=COST,
        teachers=TEACHERS,
    )
    metadata, body = front_matter(first)
    assert "for the student `/models/student`" in body
    assert "| A-1B | A | 1 | no | 3 | 75.0% |" in body and "| B-R1 | B | 8 | yes | 1 | 25.0% |" in body
    assert "wrote\n25.0% of them, short-CoT teachers 75.0%" in body
    assert (
        "Routing asked for 4 responses where\nGenerate-then-Select needs 16" in body
        and "25.0% of the responses" in body
    )
    assert "In completion tokens: 100 against an estimated 500\n(20.0%)" in body

    metadata["configs"] = [{"config_name": "persyn", "data_files": [{"split": "train", "path": "persyn/*"}]}]
    second = personalized_dataset_card(
        repo_id="user/sft",
        student="/models/student",
        strategy="strong",
        allocation={"A-1B": 0, "A-70B": 4, "A-7B": 0, "B-R1": 0},
        cost={**COST, "routed_completion_tokens": None},
        teachers=TEACHERS,
        existing_metadata=metadata,
    )
    metadata, body = front_matter(second)
    assert list(metadata["persyn"]["strategies"]) == ["persyn", "strong"]
    assert metadata["configs"][0]["config_name"] == "persyn"  # what earlier pushes recorded is kept
    assert "## Strategy `persyn`" in body and "## Strategy `strong`" in body
    assert "| A-70B | A | 70 | no | 4 | 100.0% |" in body

    with pytest.raises(ValueError, match=r"personalized for the student '/models/student', not 'other'"):
        personalized_dataset_card(
            repo_id="user/sft", student="other", strategy="mix", allocation={"A-1B": 1}, cost=COST,
            teachers=TEACHERS, existing_metadata=metadata,
        )  # fmt: skip
