"""What synthesis costs: generations and tokens per teacher, and the two paradigms compared (paper §2.2).

Generate then Select asks every one of n teachers to answer all N prompts: N·n generations. Route then Generate asks
all teachers only on the router's subset of S prompts, then one teacher per prompt: S·n + N. Every cost figure
persyn-hf prints (the generate stage's report, the personalized dataset's card, the demo's table) comes from here.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


def generate_then_select(num_prompts: int, num_teachers: int) -> int:
    """Generations when every teacher answers every prompt."""
    return num_prompts * num_teachers


def route_then_generate(num_prompts: int, num_teachers: int, subset_prompts: int) -> int:
    """Generations when every teacher answers the router's subset, then one teacher answers each prompt."""
    return generate_then_select(subset_prompts, num_teachers) + num_prompts


def paradigm_costs(num_prompts: int, num_teachers: int, subset_prompts: int) -> dict:
    """Both paradigms' generations for one setting, and how many times fewer Route then Generate needs."""
    gts = generate_then_select(num_prompts, num_teachers)
    rtg = route_then_generate(num_prompts, num_teachers, subset_prompts)
    return {
        "num_prompts": num_prompts,
        "num_teachers": num_teachers,
        "subset_prompts": subset_prompts,
        "generate_then_select": gts,
        "route_then_generate": rtg,
        "ratio": gts / rtg,
    }


def mean_tokens_estimate(num_prompts: int, tokens_per_teacher: dict[str, list[int]], teachers: list[str]):
    """Generate then Select's completion tokens on `num_prompts` prompts, at each teacher's mean tokens per response
    in `tokens_per_teacher`; `None` when a teacher has no token counts."""
    if not all(tokens_per_teacher.get(name) for name in teachers):
        return None
    return round(sum(num_prompts * sum(tokens_per_teacher[t]) / len(tokens_per_teacher[t]) for t in teachers))


@dataclass
class TeacherCost:
    """What one teacher spent, and what Generate-then-Select would have asked of it on the same prompts.

    `rows` of its `rows_needed` (prompt, teacher) pairs are done; `generations` counts every sample drawn.
    """

    teacher: str
    rows: int = 0
    rows_needed: int = 0
    generations: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    gts_generations: int = 0

    @property
    def gts_completion_tokens(self) -> int | None:
        """Generate-then-Select's completion tokens, at this teacher's mean tokens per generation here."""
        if not self.generations:
            return None
        return round(self.gts_generations * self.completion_tokens / self.generations)


@dataclass
class CostReport:
    """Generations and tokens per teacher, beside what Generate-then-Select (N prompts x n teachers) needs."""

    mode: str
    num_prompts: int
    teachers: list[TeacherCost]
    failures: list[Any] = field(default_factory=list)

    @property
    def generations(self) -> int:
        return sum(cost.generations for cost in self.teachers)

    @property
    def rows(self) -> int:
        return sum(cost.rows for cost in self.teachers)

    @property
    def rows_needed(self) -> int:
        return sum(cost.rows_needed for cost in self.teachers)

    @property
    def complete(self) -> bool:
        return self.rows == self.rows_needed

    @property
    def gts_generations(self) -> int:
        return sum(cost.gts_generations for cost in self.teachers)

    def to_dict(self) -> dict:
        return {
            "mode": self.mode,
            "num_prompts": self.num_prompts,
            "num_teachers": len(self.teachers),
            "rows": self.rows,
            "rows_needed": self.rows_needed,
            "complete": self.complete,
            "generations": self.generations,
            "prompt_tokens": sum(cost.prompt_tokens for cost in self.teachers),
            "completion_tokens": sum(cost.completion_tokens for cost in self.teachers),
            "gts_generations": self.gts_generations,
            "teachers": [
                {**asdict(cost), "gts_completion_tokens": cost.gts_completion_tokens} for cost in self.teachers
            ],
            "failures": [asdict(failure) for failure in self.failures],
        }

    def table(self) -> str:
        header = (
            "teacher",
            "rows done/needed",
            "generations",
            "prompt tok",
            "completion tok",
            "GtS generations",
            "GtS compl. tok",
        )
        lines = [
            (
                c.teacher,
                f"{c.rows}/{c.rows_needed}",
                c.generations,
                c.prompt_tokens,
                c.completion_tokens,
                c.gts_generations,
                "?" if c.gts_completion_tokens is None else c.gts_completion_tokens,
            )
            for c in self.teachers
        ]
        totals = self.to_dict()
        gts_tokens = [c.gts_completion_tokens for c in self.teachers]
        lines.append(
            ("total", f"{self.rows}/{self.rows_needed}", totals["generations"], totals["prompt_tokens"],
             totals["completion_tokens"], totals["gts_generations"],
             "?" if None in gts_tokens else sum(gts_tokens))
        )  # fmt: skip
        widths = [max(len(str(row[i])) for row in [header, *lines]) for i in range(len(header))]
        render = ["  ".join(str(v).rjust(w) if i else str(v).ljust(w) for i, (v, w) in enumerate(zip(row, widths)))
                  for row in [header, *lines]]  # fmt: skip
        render.insert(1, "-" * len(render[0]))
        gts = f"Generate-then-Select ({self.num_prompts} prompts x {len(self.teachers)} teachers)"
        if self.complete:
            ratio = self.gts_generations / self.generations if self.generations else float("nan")
            render.append(
                f"{self.mode}: {self.generations} generations for {self.num_prompts} prompts; {gts} needs "
                f"{self.gts_generations} ({ratio:.2f}x)."
            )
        else:
            render.append(
                f"{self.mode}: INCOMPLETE: {self.rows} of {self.rows_needed} rows done "
                f"({self.rows_needed - self.rows} undone), {self.generations} generations so far; {gts} needs "
                f"{self.gts_generations}. No ratio until the run is complete."
            )
        return "\n".join(render)

    def __str__(self) -> str:
        return self.table()
