"""Dataset cards of persyn-hf's builders and the allocation bar chart of a personalized dataset.

The cards are Jinja templates in `persyn_hf/templates/` rendered with `DatasetCard.from_template`; their YAML front matter
is `DatasetCardData` plus a `persyn` block with the figures the body shows, so a card can be re-rendered (e.g.
when a new strategy joins a personalized dataset) without losing what the earlier builds recorded.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from datasets import Dataset
from huggingface_hub import DatasetCard, DatasetCardData
from huggingface_hub.errors import EntryNotFoundError, RepositoryNotFoundError

from persyn_hf.errors import OutputError
from persyn_hf.store import ArtifactStore
from persyn_hf.teachers.spec import TeacherSpec
from persyn_hf.templates import template_path

PERSYN_CITATION = """@article{zhang2025persyn,
  title   = {{Find Your Optimal Teacher: Personalized Data Synthesis via Router-Guided Multi-Teacher Distillation}},
  author  = {Zhang, Hengyuan and Yang, Shiping and Liang, Xiao and Shang, Chenming and Jiang, Yuxuan and Tao, Chaofan and Xiong, Jing and So, Hayden Kwok-Hay and Xie, Ruobing and Chang, Angel X. and Wong, Ngai},
  year    = {2025}
}"""
TAGS = ["persyn", "synthetic", "distillation"]
# One colormap per family, in order of first appearance; shades within a family grow darker with size (Fig. 9).
FAMILY_COLORMAPS = ("Blues", "Oranges", "Greens", "Reds", "Purples", "Greys", "PuRd", "BuGn", "YlOrBr", "YlGn")
SIZE_CATEGORIES = ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M"))


def size_category(num_rows: int) -> str:
    """The Hub's `size_categories` value for `num_rows` rows."""
    return next((label for bound, label in SIZE_CATEGORIES if num_rows < bound), "1M<n<10M")


def hub_link(repo_id_or_path: str, repo_type: str = "model") -> str:
    """A Markdown link to a Hub repo, or the local path in code font when it is not a repo id."""
    if Path(repo_id_or_path).exists() or repo_id_or_path.startswith((".", "/")):
        return f"`{repo_id_or_path}`"
    prefix = "datasets/" if repo_type == "dataset" else ""
    return f"[{repo_id_or_path}](https://huggingface.co/{prefix}{repo_id_or_path})"


def existing_card_metadata(store: ArtifactStore, repo_id: str) -> dict:
    """The YAML metadata of the card an artifact already has (`{}` when there is none yet)."""
    if store.hub:
        try:
            return DatasetCard.load(repo_id, repo_type="dataset").data.to_dict()
        except (RepositoryNotFoundError, EntryNotFoundError):
            return {}
    readme = Path(store.location(repo_id)) / "README.md"
    return DatasetCard.load(readme).data.to_dict() if readme.is_file() else {}


# Parallel-response datasets --------------------------------------------------------------------------------------


def teacher_statistics(generations: Dataset, teachers: Sequence[TeacherSpec]) -> list[dict]:
    """Per teacher: responses kept, samples drawn (`attempts`) and the share of kept responses that are correct."""
    responses, attempts, judged, correct = Counter(), Counter(), Counter(), Counter()
    samples = generations["num_samples"]
    verdicts = generations["correct"]
    for i, teacher in enumerate(generations["teacher"]):
        responses[teacher] += 1
        attempts[teacher] += samples[i] or 0
        if verdicts[i] is not None:
            judged[teacher] += 1
            correct[teacher] += bool(verdicts[i])
    return [
        {
            "name": spec.name,
            "model_id": spec.model_id,
            "family": spec.family,
            "size_b": spec.size_b,
            "long_cot": spec.long_cot,
            "responses": responses[spec.name],
            "attempts": attempts[spec.name],
            "share_correct": correct[spec.name] / judged[spec.name] if judged[spec.name] else None,
        }
        for spec in teachers
    ]


def parallel_dataset_card(
    *,
    repo_id: str,
    pretty_name: str,
    source_dataset: str,
    seed: int,
    teachers: Sequence[TeacherSpec],
    generations: Dataset,
    num_prompts: int,
    responses_note: str,
    subsets: list[dict],
    num_router_prompts: int | None = None,
    generation_parameters: bool = False,
    rejection_sampling: str | None = None,
    cost: dict | None = None,
) -> DatasetCard:
    """The card of a parallel-response dataset: source and seed, teachers, generation, rejection sampling, cost.

    `subsets` lists the configs as `{"name", "splits", "row"}` (what one row is).
    """
    stats = teacher_statistics(generations, teachers)
    card_data = DatasetCardData(
        pretty_name=pretty_name,
        tags=TAGS,
        task_categories=["text-generation"],
        size_categories=[size_category(len(generations))],
        source_datasets=[source_dataset],
        persyn={
            "source_dataset": source_dataset,
            "seed": seed,
            "num_prompts": num_prompts,
            "num_router_prompts": num_router_prompts,
            "teachers": {s["name"]: {k: s[k] for k in ("responses", "attempts", "share_correct")} for s in stats},
            "cost": cost,
        },
    )
    return DatasetCard.from_template(
        card_data,
        template_path=template_path("parallel_dataset_card.md"),
        repo_id=repo_id,
        pretty_name=pretty_name,
        source_dataset=source_dataset,
        seed=seed,
        num_prompts=num_prompts,
        num_router_prompts=num_router_prompts,
        responses_note=responses_note,
        teachers=stats,
        generation={spec.name: json.dumps(spec.generation) for spec in teachers} if generation_parameters else None,
        rejection_sampling=rejection_sampling,
        cost=json.dumps(cost, indent=2) if cost else None,
        subsets=subsets,
    )


# Personalized datasets -------------------------------------------------------------------------------------------


def chart_filename(strategy: str) -> str:
    """Where a strategy's allocation chart lies in the dataset repo, beside the card."""
    return f"allocation_{strategy}.png"


def teacher_colors(teachers: Sequence[TeacherSpec]) -> dict[str, tuple]:
    """One RGBA colour per teacher: a colormap per family, darker shades for larger teachers of the family."""
    from matplotlib import colormaps

    families = list(dict.fromkeys(spec.family for spec in teachers))
    colors = {}
    for index, family in enumerate(families):
        members = sorted((s for s in teachers if s.family == family), key=lambda s: (s.size_b, s.name))
        colormap = colormaps[FAMILY_COLORMAPS[index % len(FAMILY_COLORMAPS)]]
        for rank, spec in enumerate(members):
            colors[spec.name] = colormap(0.45 + 0.45 * rank / max(len(members) - 1, 1))
    return colors


def allocation_chart(
    allocation: dict[str, int], teachers: Sequence[TeacherSpec], path: str | Path, title: str
) -> Path:
    """Bar chart of the share of prompts per teacher, coloured by family (long-CoT teachers hatched); a PNG."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    total = sum(allocation.values())
    colors = teacher_colors(teachers)
    figure = Figure(figsize=(max(6.0, 0.45 * len(teachers) + 3), 4.5))
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    names = [spec.name for spec in teachers]
    shares = [100 * allocation.get(name, 0) / total for name in names]
    bars = axes.bar(range(len(names)), shares, color=[colors[name] for name in names], edgecolor="black", lw=0.5)
    for bar, spec in zip(bars, teachers):
        if spec.long_cot:
            bar.set_hatch("//")
    axes.set_xticks(range(len(names)), names, rotation=60, ha="right", fontsize=8)
    axes.set_ylabel("Share of prompts (%)")
    axes.set_title(title)
    legend = []
    for family in dict.fromkeys(spec.family for spec in teachers):
        members = sorted((s for s in teachers if s.family == family), key=lambda s: (s.size_b, s.name))
        legend.append(Patch(color=colors[members[len(members) // 2].name], label=family))
    if any(spec.long_cot for spec in teachers):
        legend.append(Patch(facecolor="white", edgecolor="black", hatch="//", label="long CoT"))
    axes.legend(handles=legend, fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    figure.tight_layout()
    figure.savefig(path, format="png", dpi=120)
    return Path(path)


def allocation_rows(allocation: dict[str, int], teachers: Sequence[TeacherSpec]) -> list[dict]:
    """The allocation table: every teacher of the pool, with its prompts and their share."""
    total = sum(allocation.values())
    return [
        {
            "teacher": spec.name,
            "family": spec.family,
            "size_b": spec.size_b,
            "long_cot": spec.long_cot,
            "count": allocation.get(spec.name, 0),
            "share": allocation.get(spec.name, 0) / total,
        }
        for spec in teachers
    ]


def personalized_dataset_card(
    *,
    repo_id: str,
    student: str,
    strategy: str,
    allocation: dict[str, int],
    cost: dict,
    teachers: Sequence[TeacherSpec],
    existing_metadata: dict | None = None,
) -> DatasetCard:
    """The card of a personalized dataset, with `strategy` added to those its existing card already describes.

    `allocation` maps each teacher to its number of prompts; `cost` holds `routed_responses`, `gts_responses`,
    `routed_completion_tokens` and `gts_completion_tokens` (the last two may be `None`).
    """
    metadata = dict(existing_metadata or {})
    persyn = dict(metadata.pop("persyn", None) or {"student": student, "teachers": {}, "strategies": {}})
    if persyn["student"] != student:
        raise OutputError(
            f"{repo_id!r} holds datasets personalized for the student {persyn['student']!r}, not {student!r}: "
            "choose another `dataset_repo_id` for this student."
        )
    persyn["teachers"] = {
        **persyn["teachers"],
        **{s.name: {"family": s.family, "size_b": s.size_b, "long_cot": s.long_cot} for s in teachers},
    }
    persyn["strategies"] = {
        **persyn["strategies"],
        strategy: {"allocation": dict(allocation), "cost": cost, "chart": chart_filename(strategy)},
    }
    known = {name: TeacherSpec(name=name, model_id=name, **info) for name, info in persyn["teachers"].items()}
    strategies = []
    for name, recorded in persyn["strategies"].items():
        pool = [known[t] for t in recorded["allocation"]]
        strategies.append(
            {
                "name": name,
                "num_examples": sum(recorded["allocation"].values()),
                "num_teachers_used": sum(1 for count in recorded["allocation"].values() if count),
                "rows": allocation_rows(recorded["allocation"], pool),
                "long_cot_share": sum(c for t, c in recorded["allocation"].items() if known[t].long_cot)
                / sum(recorded["allocation"].values()),
                "chart": recorded["chart"],
                "cost": recorded["cost"],
            }
        )
    metadata.update(
        pretty_name=metadata.get("pretty_name") or f"PerSyn dataset for {student}",
        tags=metadata.get("tags") or TAGS,
        task_categories=["text-generation"],
        size_categories=[size_category(max(s["num_examples"] for s in strategies))],
        persyn=persyn,
    )
    card_data = DatasetCardData(**metadata)
    return DatasetCard.from_template(
        card_data,
        template_path=template_path("personalized_dataset_card.md"),
        repo_id=repo_id,
        pretty_name=card_data.pretty_name,
        student=student,
        student_link=hub_link(student),
        strategies=strategies,
    )
